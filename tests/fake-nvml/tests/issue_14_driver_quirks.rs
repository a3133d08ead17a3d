//! Issue 14: what real drivers answer where they differ from nvml.h's declarations or from what
//! nvml-wrapper expects, as the fake library reproduces it (the scenario's `[gpu.nvml]` keys and
//! event kinds, see `sim/README.md`), seen through nvml-wrapper and the raw calls below it.
//!
//! One process, one library state: the scenario below is loaded once (see [`fixture`]) with
//! `GPUCOST_FAKE_NVML_START_UNIX` set, so the tests know the scenario clock (10 scenario seconds
//! per wall second).

mod common;

use std::collections::BTreeSet;
use std::mem;
use std::ptr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings::{
    nvmlDevice_t, nvmlEventData_t, nvmlEventSet_t, nvmlProcessDetailList_v1_t,
    nvmlProcessDetail_v1_t, nvmlProcessUtilizationSample_t,
};

use common::{fake_lib, fake_lib_without, unix_now, SCENARIO_ENV, START_ENV};

/// GPU 0: an H100 on an R535.54 driver: the `_v3` process calls write 32-byte entries, and no
///        process detail list; 20 processes (pid 1000 and workers 1001..=1019).
/// GPU 1: an H100 with a compute, a graphics, a compute+graphics and an MPS client process, and
///        every driver event type: Xid 999, a double-bit ECC error at 30 s, a single-bit one and
///        "GPU unavailable" at 31 s; waits on it fail from 45 s to 55 s.
/// GPU 2: an A100 (no process detail list, by its model) whose `_v3` calls write 16-byte entries.
/// GPU 3: an H100 with a busy job and an idle one holding memory; a utilization sample arrives
///        between a size query and the read after it.
/// GPU 4: registering it for events answers UNKNOWN. GPU 5: answers NOT_SUPPORTED.
const SCENARIO: &str = r#"
name = "issue-14"
duration_s = 3600
speed = 10
ripple = 0.0

[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[gpu.nvml]
process_info_v3_bytes = 32
process_detail_list = false

[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[gpu.nvml]
events = ["xid", "ecc_single_bit", "ecc_double_bit", "gpu_unavailable"]

[[gpu]]
model = "NVIDIA A100-SXM4-80GB"
memory_total_mib = 81920
power_limit_w = 400
idle_power_w = 50
[gpu.nvml]
process_info_v3_bytes = 16

[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[gpu.nvml]
process_utilization_race = true

[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[gpu.nvml]
register_events_error = "unknown"

[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[gpu.nvml]
register_events_error = "not_supported"

[[job]]
name = "many"
pid = 1000
worker_pids = [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1015, 1016, 1017, 1018, 1019]
gpus = [0]
[[job.phase]]
seconds = 3600
utilization = 0.9
power_w = 600
memory_mib = 30000

[[job]]
name = "compute"
pid = 2001
gpus = [1]
[[job.phase]]
seconds = 3600
utilization = 0.5
power_w = 300
memory_mib = 1000

[[job]]
name = "render"
pid = 2002
gpus = [1]
context = "graphics"
[[job.phase]]
seconds = 3600
utilization = 0.2
power_w = 150
memory_mib = 2000

[[job]]
name = "viz"
pid = 2003
gpus = [1]
context = "compute_graphics"
[[job.phase]]
seconds = 3600
utilization = 0.1
power_w = 100
memory_mib = 3000

[[job]]
name = "mps-client"
pid = 2004
gpus = [1]
context = "mps"
[[job.phase]]
seconds = 3600
utilization = 0.1
power_w = 100
memory_mib = 4000

[[job]]
name = "v1"
pid = 3000
worker_pids = [3001, 3002]
gpus = [2]
[[job.phase]]
seconds = 3600
utilization = 0.5
power_w = 300
memory_mib = 5000

[[job]]
name = "busy"
pid = 4001
gpus = [3]
[[job.phase]]
seconds = 3600
utilization = 0.8
power_w = 500
memory_mib = 1000

[[job]]
name = "idle-holding-memory"
pid = 4002
gpus = [3]
[[job.phase]]
seconds = 3600
utilization = 0.0
power_w = 80
memory_mib = 40000

[[event]]
at_s = 30
gpu = 1
kind = "xid"
xid = 999

[[event]]
at_s = 30
gpu = 1
kind = "ecc_double_bit"

[[event]]
at_s = 31
gpu = 1
kind = "ecc_single_bit"

[[event]]
at_s = 31
gpu = 1
kind = "gpu_unavailable"

[[event]]
at_s = 45
gpu = 1
kind = "event_wait_error"
seconds = 10
"#;

const SPEED: f64 = 10.0;
const MIB: u64 = 1024 * 1024;

const NVML_SUCCESS: u32 = 0;
const NVML_ERROR_INVALID_ARGUMENT: u32 = 2;
const NVML_ERROR_NOT_SUPPORTED: u32 = 3;
const NVML_ERROR_NOT_FOUND: u32 = 6;
const NVML_ERROR_INSUFFICIENT_SIZE: u32 = 7;
const NVML_ERROR_TIMEOUT: u32 = 10;
const NVML_ERROR_UNKNOWN: u32 = 999;

/// `nvmlProcessDetailList_v1`: the struct's size with version 1 in the top byte.
const DETAIL_LIST_V1: u32 = mem::size_of::<nvmlProcessDetailList_v1_t>() as u32 | 1 << 24;

/// What a caller fills its buffers with, to see which bytes the library wrote.
const SENTINEL: u8 = 0xA5;

struct Fixture {
    nvml: Nvml,
    start_unix: f64,
    dir: tempfile::TempDir,
}

impl Fixture {
    /// Scenario time now, on the library's clock.
    fn now(&self) -> f64 {
        (unix_now() - self.start_unix) * SPEED
    }

    fn wait_until(&self, t: f64) {
        while self.now() < t {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn device(&self, index: u32) -> Device<'_> {
        self.nvml.device_by_index(index).expect("device_by_index")
    }

    fn handle(&self, index: u32) -> nvmlDevice_t {
        // SAFETY: a handle of the library, passed back to it.
        unsafe { self.device(index).handle() }
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("issue-14.toml");
        std::fs::write(&path, SCENARIO).expect("write scenario");
        let start_unix = unix_now();
        // Only this function sets the environment, once, before the library reads it.
        std::env::set_var(SCENARIO_ENV, &path);
        std::env::set_var(START_ENV, format!("{start_unix:.6}"));
        let nvml = Nvml::builder()
            .lib_path(fake_lib().as_os_str())
            .init()
            .expect("init the fake NVML");
        Fixture {
            nvml,
            start_unix,
            dir,
        }
    })
}

/// A `_v3` running-process call with room for `promised` entries of the declared 24 bytes, in a
/// buffer of `buffer_entries` x 32 bytes filled with [`SENTINEL`]: (return code, count, bytes).
fn raw_compute_processes(
    f: &Fixture,
    gpu: u32,
    promised: u32,
    buffer_entries: usize,
) -> (u32, u32, Vec<u8>) {
    let mut buf = vec![u64::from_ne_bytes([SENTINEL; 8]); buffer_entries * 4];
    let mut count = promised;
    // SAFETY: the buffer holds `buffer_entries` x 32 bytes, 8-aligned; every call below promises
    // no more than `buffer_entries` x 32 / 24 entries of 24 bytes.
    let ret = unsafe {
        f.nvml.lib().nvmlDeviceGetComputeRunningProcesses_v3(
            f.handle(gpu),
            &mut count,
            buf.as_mut_ptr().cast(),
        )
    };
    let bytes = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    (ret, count, bytes)
}

/// The pids of `count` entries of `stride` bytes.
fn pids(bytes: &[u8], count: u32, stride: usize) -> Vec<u32> {
    (0..count as usize)
        .map(|i| u32::from_ne_bytes(bytes[i * stride..i * stride + 4].try_into().unwrap()))
        .collect()
}

/// Where the library stopped writing: one past the last byte that is not the sentinel.
fn written(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|b| *b != SENTINEL)
        .map_or(0, |i| i + 1)
}

#[test]
fn issue_14_r535_32_byte_entries_give_nvml_wrapper_phantom_pids() {
    let f = fixture();
    let r535 = f.device(0);
    // nvml-wrapper sizes for 20 + 5 entries of 24 bytes and reads them 24 bytes apart: after
    // the first, its pids are the middle of other fields (nvitop issue 88, go-nvml issue 75).
    assert_eq!(r535.running_compute_processes_count().unwrap(), 20);
    let seen: Vec<u32> = r535
        .running_compute_processes()
        .unwrap()
        .iter()
        .map(|p| p.pid)
        .collect();
    assert_eq!(seen.len(), 20);
    assert_eq!(seen[0], 1000);
    assert_eq!(seen[1], 0, "the protected-memory field of entry 0");
    assert_eq!(seen[2], u32::MAX, "the GPU instance id of entry 1");
    let real: BTreeSet<u32> = (1000..1020).collect();
    assert!(
        seen.iter().filter(|p| real.contains(p)).count() < 10,
        "{seen:?}"
    );

    // A buffer with room for 32-byte entries shows what the driver wrote: 20 x 32 bytes.
    let (ret, count, bytes) = raw_compute_processes(f, 0, 27, 27);
    assert_eq!((ret, count), (NVML_SUCCESS, 20));
    assert_eq!(written(&bytes), 20 * 32);
    assert_eq!(pids(&bytes, 20, 32), (1000..1020).collect::<Vec<_>>());
    let memory = u64::from_ne_bytes(bytes[8..16].try_into().unwrap());
    assert_eq!(memory, 30000 * MIB);

    // Promising exactly 20 entries (480 bytes): the real driver writes 640 bytes, past the
    // buffer; the fake stops at 15 whole entries but answers the full count, as the driver does.
    let (ret, count, bytes) = raw_compute_processes(f, 0, 20, 27);
    assert_eq!((ret, count), (NVML_SUCCESS, 20));
    assert_eq!(written(&bytes), 15 * 32);

    // No process detail list on this driver.
    let mut list = nvmlProcessDetailList_v1_t {
        version: DETAIL_LIST_V1,
        mode: 0,
        numProcArrayEntries: 0,
        procArray: ptr::null_mut(),
    };
    // SAFETY: a valid struct with no array, as the count query of nvml.h.
    let ret = unsafe {
        f.nvml
            .lib()
            .nvmlDeviceGetRunningProcessDetailList(f.handle(0), &mut list)
    };
    assert_eq!(ret, NVML_ERROR_NOT_SUPPORTED);

    // A GPU whose driver writes 16-byte (v1) entries (nvitop PR 226's report).
    let (ret, count, bytes) = raw_compute_processes(f, 2, 8, 8);
    assert_eq!((ret, count), (NVML_SUCCESS, 3));
    assert_eq!(written(&bytes), 3 * 16);
    assert_eq!(pids(&bytes, 3, 16), [3000, 3001, 3002]);
}

/// A library from before `nvmlDeviceGetRunningProcessDetailList` (R535.54): the symbol is not
/// there at all, and the bindings say so instead of failing to load.
#[test]
fn issue_14_a_library_without_the_process_detail_list() {
    let f = fixture();
    let old = fake_lib_without(f.dir.path(), "nvmlDeviceGetRunningProcessDetailList");
    let nvml = Nvml::builder()
        .lib_path(old.as_os_str())
        .init()
        .expect("init the copy");
    assert!(nvml.lib().nvmlDeviceGetRunningProcessDetailList.is_err());
    assert!(nvml.lib().nvmlDeviceGetComputeRunningProcesses_v3.is_ok());
    assert!(f.nvml.lib().nvmlDeviceGetRunningProcessDetailList.is_ok());
    assert_eq!(nvml.device_count().unwrap(), 6);
}

/// The processes of one detail-list mode, with room for 8: (pid, memory) sorted by pid.
fn detail_list(f: &Fixture, gpu: u32, mode: u32) -> (u32, Vec<(u32, u64)>) {
    let mut entries = vec![
        nvmlProcessDetail_v1_t {
            pid: 0,
            usedGpuMemory: 0,
            gpuInstanceId: 0,
            computeInstanceId: 0,
            usedGpuCcProtectedMemory: 0,
        };
        8
    ];
    let mut list = nvmlProcessDetailList_v1_t {
        version: DETAIL_LIST_V1,
        mode,
        numProcArrayEntries: 8,
        procArray: entries.as_mut_ptr(),
    };
    // SAFETY: the array holds the 8 entries the list promises.
    let ret = unsafe {
        f.nvml
            .lib()
            .nvmlDeviceGetRunningProcessDetailList(f.handle(gpu), &mut list)
    };
    let mut got: Vec<(u32, u64)> = entries[..list.numProcArrayEntries.min(8) as usize]
        .iter()
        .map(|e| (e.pid, e.usedGpuMemory))
        .collect();
    got.sort();
    (ret, got)
}

#[test]
fn issue_14_graphics_and_mps_processes_are_in_their_own_lists() {
    let f = fixture();
    let d = f.device(1);
    let listed = |procs: Vec<nvml_wrapper::struct_wrappers::device::ProcessInfo>| {
        let mut v: Vec<(u32, UsedGpuMemory)> = procs
            .into_iter()
            .map(|p| (p.pid, p.used_gpu_memory))
            .collect();
        v.sort_by_key(|p| p.0);
        v
    };
    let mib = |n: u64| UsedGpuMemory::Used(n * MIB);
    assert_eq!(
        listed(d.running_compute_processes().unwrap()),
        [(2001, mib(1000)), (2003, mib(3000))]
    );
    assert_eq!(
        listed(d.running_graphics_processes().unwrap()),
        [(2002, mib(2000)), (2003, mib(3000))]
    );
    assert_eq!(
        listed(d.mps_running_compute_processes().unwrap()),
        [(2004, mib(4000))]
    );

    // The detail list gives the same per mode (0 compute, 1 graphics, 2 MPS).
    let m = |n: u64| n * MIB;
    assert_eq!(
        detail_list(f, 1, 0),
        (NVML_SUCCESS, vec![(2001, m(1000)), (2003, m(3000))])
    );
    assert_eq!(
        detail_list(f, 1, 1),
        (NVML_SUCCESS, vec![(2002, m(2000)), (2003, m(3000))])
    );
    assert_eq!(detail_list(f, 1, 2), (NVML_SUCCESS, vec![(2004, m(4000))]));
    assert_eq!(detail_list(f, 1, 7).0, NVML_ERROR_INVALID_ARGUMENT);
    // Not on an A100 ("For Hopper or newer fully supported devices").
    assert_eq!(detail_list(f, 2, 0).0, NVML_ERROR_NOT_SUPPORTED);

    // The count protocol, and the struct version.
    let mut list = nvmlProcessDetailList_v1_t {
        version: DETAIL_LIST_V1,
        mode: 1,
        numProcArrayEntries: 0,
        procArray: ptr::null_mut(),
    };
    let lib = f.nvml.lib();
    // SAFETY: a valid struct; no array is promised.
    unsafe {
        assert_eq!(
            lib.nvmlDeviceGetRunningProcessDetailList(f.handle(1), &mut list),
            NVML_ERROR_INSUFFICIENT_SIZE
        );
        assert_eq!(list.numProcArrayEntries, 2);
        list.version = 1;
        list.numProcArrayEntries = 0;
        assert_eq!(
            lib.nvmlDeviceGetRunningProcessDetailList(f.handle(1), &mut list),
            NVML_ERROR_INVALID_ARGUMENT
        );
    }
}

/// `nvmlDeviceGetProcessUtilization` with room for `room` samples.
fn raw_utilization(
    f: &Fixture,
    gpu: u32,
    room: u32,
    since: u64,
) -> (u32, Vec<nvmlProcessUtilizationSample_t>) {
    let zero = nvmlProcessUtilizationSample_t {
        pid: 0,
        timeStamp: 0,
        smUtil: 0,
        memUtil: 0,
        encUtil: 0,
        decUtil: 0,
    };
    let mut samples = vec![zero; room as usize];
    let mut count = room;
    // SAFETY: the buffer holds `room` samples.
    let ret = unsafe {
        f.nvml.lib().nvmlDeviceGetProcessUtilization(
            f.handle(gpu),
            samples.as_mut_ptr(),
            &mut count,
            since,
        )
    };
    samples.truncate(count.min(room) as usize);
    (ret, samples)
}

#[test]
fn issue_14_process_utilization_is_a_history_of_busy_processes() {
    let f = fixture();
    let d = f.device(3);
    // A sample arrives between nvml-wrapper's size query and its read of exactly that size.
    assert!(matches!(
        d.process_utilization_stats(None),
        Err(NvmlError::InsufficientSize(_))
    ));
    // A padded buffer gets every sample: only the busy process has any; the idle one, holding
    // 40 GB, is in the process list and in no sample.
    let (ret, samples) = raw_utilization(f, 3, 256, 0);
    assert_eq!(ret, NVML_SUCCESS);
    assert!(samples.len() >= 2);
    assert!(samples.iter().all(|s| s.pid == 4001 && s.smUtil == 80));
    let procs = d.running_compute_processes().unwrap();
    assert!(procs.iter().any(|p| p.pid == 4002));

    // Nothing newer than the newest seen: NOT_FOUND. Later, only what is newer.
    let newest = samples.iter().map(|s| s.timeStamp).max().unwrap();
    let (ret, newer) = raw_utilization(f, 3, 256, newest);
    assert!(
        ret == NVML_ERROR_NOT_FOUND || (ret == NVML_SUCCESS && newer[0].timeStamp > newest),
        "{ret} {newer:?}"
    );
    std::thread::sleep(Duration::from_millis(400));
    let (ret, newer) = raw_utilization(f, 3, 256, newest);
    assert_eq!(ret, NVML_SUCCESS);
    assert!(!newer.is_empty() && newer.iter().all(|s| s.timeStamp > newest));
    // Far in the future: nothing.
    assert_eq!(
        raw_utilization(f, 3, 256, u64::MAX / 2).0,
        NVML_ERROR_NOT_FOUND
    );
    // Too small a buffer: INSUFFICIENT_SIZE with the count needed.
    assert_eq!(raw_utilization(f, 3, 1, 0).0, NVML_ERROR_INSUFFICIENT_SIZE);
}

/// An event set made and used through the raw calls, freed when dropped.
struct RawSet<'a> {
    nvml: &'a Nvml,
    set: nvmlEventSet_t,
}

impl<'a> RawSet<'a> {
    fn new(nvml: &'a Nvml) -> Self {
        let mut set = ptr::null_mut();
        // SAFETY: an out-pointer for the handle.
        assert_eq!(
            unsafe { nvml.lib().nvmlEventSetCreate(&mut set) },
            NVML_SUCCESS
        );
        RawSet { nvml, set }
    }

    fn register(&self, device: nvmlDevice_t, types: u64) -> u32 {
        // SAFETY: a handle and a set of this library.
        unsafe {
            self.nvml
                .lib()
                .nvmlDeviceRegisterEvents(device, types, self.set)
        }
    }

    fn wait(&self, ms: u32) -> (u32, nvmlEventData_t) {
        // SAFETY: all-zero is a valid `nvmlEventData_t` (a NULL device handle).
        let mut data: nvmlEventData_t = unsafe { mem::zeroed() };
        // SAFETY: a set of this library and an out-pointer for one event.
        let ret = unsafe { self.nvml.lib().nvmlEventSetWait_v2(self.set, &mut data, ms) };
        (ret, data)
    }
}

impl Drop for RawSet<'_> {
    fn drop(&mut self) {
        // SAFETY: the set is ours and freed once.
        unsafe { self.nvml.lib().nvmlEventSetFree(self.set) };
    }
}

#[test]
fn issue_14_event_registration_and_wait_failures() {
    let f = fixture();
    let all = 0x1 | 0x2 | 0x8 | 0x4000;
    let mut supported = 0;
    // SAFETY: an out-pointer for the mask.
    let ret = unsafe {
        f.nvml
            .lib()
            .nvmlDeviceGetSupportedEventTypes(f.handle(1), &mut supported)
    };
    assert_eq!((ret, supported), (NVML_SUCCESS, all));
    // nvml-wrapper's bit flags have no "GPU unavailable" type: it drops the bit.
    let wrapped = f.device(1).supported_event_types().unwrap();
    assert_eq!(
        wrapped,
        EventTypes::CRITICAL_XID_ERROR
            | EventTypes::SINGLE_BIT_ECC_ERROR
            | EventTypes::DOUBLE_BIT_ECC_ERROR
    );
    assert!(f.now() < 25.0, "registered too late: a very slow machine?");

    // NOT_SUPPORTED from one GPU leaves the set usable for the others (nvml.h); nvml-wrapper
    // frees the set it was given instead.
    let set = RawSet::new(&f.nvml);
    assert_eq!(set.register(f.handle(5), 0x8), NVML_ERROR_NOT_SUPPORTED);
    assert_eq!(set.register(f.handle(1), all), NVML_SUCCESS);
    let err = f
        .device(5)
        .register_events(
            EventTypes::CRITICAL_XID_ERROR,
            f.nvml.create_event_set().unwrap(),
        )
        .unwrap_err();
    assert!(matches!(err.error, NvmlError::NotSupported));
    // A wrapper set on GPU 1 for Xids only.
    let wrapper_set = f
        .device(1)
        .register_events(
            EventTypes::CRITICAL_XID_ERROR,
            f.nvml.create_event_set().unwrap(),
        )
        .unwrap();

    // UNKNOWN from one GPU leaves its set "in undefined state": nothing works on it after.
    let broken = RawSet::new(&f.nvml);
    assert_eq!(broken.register(f.handle(4), 0x8), NVML_ERROR_UNKNOWN);
    assert_eq!(broken.register(f.handle(1), 0x8), NVML_ERROR_UNKNOWN);
    assert_eq!(broken.wait(0).0, NVML_ERROR_UNKNOWN);
    drop(broken);

    // At 30 s: Xid 999 (an Xid the driver does not know) and a double-bit ECC error; at 31 s a
    // single-bit one and "GPU unavailable"; each with its type and data.
    let mut got = Vec::new();
    while got.len() < 4 {
        let (ret, ev) = set.wait(5_000);
        assert_eq!(ret, NVML_SUCCESS, "after {got:?}");
        assert_eq!(ev.device, f.handle(1));
        got.push((ev.eventType, ev.eventData));
    }
    assert_eq!(got, [(0x8, 999), (0x2, 0), (0x1, 0), (0x4000, 0)]);
    // nvml-wrapper turns Xid 999 into `XidError::Unknown`.
    let ev = wrapper_set.wait(1_000).unwrap();
    assert_eq!(ev.event_data, Some(XidError::Unknown));

    // From 45 s to 55 s every wait fails at once with UNKNOWN (the set is not broken: it works
    // again after).
    f.wait_until(46.0);
    let started = Instant::now();
    assert_eq!(set.wait(2_000).0, NVML_ERROR_UNKNOWN);
    assert_eq!(set.wait(2_000).0, NVML_ERROR_UNKNOWN);
    assert!(started.elapsed() < Duration::from_millis(500));
    f.wait_until(56.0);
    assert_eq!(set.wait(10).0, NVML_ERROR_TIMEOUT);
}
