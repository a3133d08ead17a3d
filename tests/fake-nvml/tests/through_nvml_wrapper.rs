//! The fake library, loaded by the real `nvml-wrapper`, reads what the simulated node says.
//!
//! All tests share one process, so one library state and one scenario: it is loaded once (see
//! [`fixture`]) with `GPUCOST_FAKE_NVML_START_UNIX` set, so the tests know the scenario clock
//! and can compare each reading with the model at the moments just before and after it.

mod common;

use std::ffi::{c_char, CStr};
use std::mem;
use std::ptr;
use std::sync::OnceLock;
use std::time::Duration;

use gpucost_sim::{reason, GpuState, Scenario, SimulatedNode};
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};

use common::{fake_lib, unix_now, SCENARIO_ENV, START_ENV};

/// 50 scenario seconds per wall second; no ripple, so readings are constant within a phase.
///
/// GPU 0: an H100 running one job (pid 4101 with 40000 MiB, worker 4102 with none).
/// GPU 1: an idle A100 whose energy counter is not supported.
/// GPU 2: an L40S lost from the start.
/// GPU 3: an H100 that falls off the bus at 25 s, half a wall second in.
const SCENARIO: &str = r#"
name = "fake-nvml-test"
duration_s = 3600
speed = 50
ripple = 0.0
driver_version = "550.90.07"

[[gpu]]
model = "NVIDIA H100 80GB HBM3"
uuid = "GPU-fa4e0000-0000-4000-8000-000000000000"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
max_sm_clock_mhz = 1980
initial_energy_j = 5000

[[gpu]]
model = "NVIDIA A100-SXM4-40GB"
memory_total_mib = 40960
power_limit_w = 400
idle_power_w = 50
max_sm_clock_mhz = 1410
idle_sm_clock_mhz = 210
energy_counter = false

[[gpu]]
model = "NVIDIA L40S"
memory_total_mib = 46068
power_limit_w = 350
idle_power_w = 35

[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70

[[job]]
name = "train"
pid = 4101
worker_pids = [4102]
gpus = [0]
[[job.phase]]
seconds = 3600
utilization = 0.9
power_w = 600
memory_mib = 40000

[[event]]
at_s = 0
gpu = 2
kind = "gpu_lost"

[[event]]
at_s = 25
gpu = 3
kind = "gpu_lost"
"#;

const SPEED: f64 = 50.0;
const MIB: u64 = 1024 * 1024;

// Return codes, for the calls made below the wrapper.
const NVML_SUCCESS: u32 = 0;
const NVML_ERROR_INVALID_ARGUMENT: u32 = 2;
const NVML_ERROR_INSUFFICIENT_SIZE: u32 = 7;
const NVML_ERROR_ARGUMENT_VERSION_MISMATCH: u32 = 25;

struct Fixture {
    nvml: Nvml,
    node: SimulatedNode,
    /// Unix time of scenario time 0.
    start_unix: f64,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Scenario time now, on the library's clock.
    fn now(&self) -> f64 {
        (unix_now() - self.start_unix) * SPEED
    }

    /// Runs `read` and returns its result with the model's state just before and just after.
    fn bracket<T>(&self, gpu: u32, read: impl FnOnce() -> T) -> (T, GpuState, GpuState) {
        let before = self.node.state(gpu, self.now());
        let value = read();
        let after = self.node.state(gpu, self.now());
        (value, before, after)
    }

    fn device(&self, index: u32) -> Device<'_> {
        self.nvml.device_by_index(index).expect("device_by_index")
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fake-nvml-test.toml");
        std::fs::write(&path, SCENARIO).expect("write scenario");
        let start_unix = unix_now();
        // Only this function sets the environment, once, before the library reads it.
        std::env::set_var(SCENARIO_ENV, &path);
        std::env::set_var(START_ENV, format!("{start_unix:.6}"));
        let nvml = Nvml::builder()
            .lib_path(fake_lib().as_os_str())
            .init()
            .expect("init the fake NVML");
        let node =
            SimulatedNode::new(Scenario::load(path.to_str().unwrap()).expect("load scenario"));
        Fixture {
            nvml,
            node,
            start_unix,
            _dir: dir,
        }
    })
}

/// `value` lies between `a` and `b` (in either order), widened by `slack`.
fn between(value: f64, a: f64, b: f64, slack: f64) -> bool {
    value >= a.min(b) - slack && value <= a.max(b) + slack
}

#[test]
fn devices_and_their_fixed_facts() {
    let f = fixture();
    let nvml = &f.nvml;
    assert_eq!(nvml.device_count().unwrap(), 4);
    assert_eq!(nvml.sys_driver_version().unwrap(), "550.90.07");
    assert_eq!(nvml.sys_nvml_version().unwrap(), "12.550.90");
    assert_eq!(nvml.sys_cuda_driver_version().unwrap(), 12040);
    assert!(matches!(
        nvml.device_by_index(4),
        Err(NvmlError::InvalidArg)
    ));

    // (GPU 2 is lost from the start and GPU 3 soon after; see `lost_gpus_answer_gpu_lost`.)
    for (i, name) in [(0, "NVIDIA H100 80GB HBM3"), (1, "NVIDIA A100-SXM4-40GB")] {
        let d = f.device(i);
        assert_eq!(d.index().unwrap(), i);
        assert_eq!(d.name().unwrap(), name);
        assert_eq!(d.uuid().unwrap(), f.node.uuid(i));
        let by_uuid = nvml.device_by_uuid(f.node.uuid(i)).unwrap();
        // SAFETY: only compared, never dereferenced.
        assert_eq!(unsafe { by_uuid.handle() }, unsafe { d.handle() });
    }
    assert_eq!(
        f.device(0).uuid().unwrap(),
        "GPU-fa4e0000-0000-4000-8000-000000000000"
    );
    assert!(matches!(
        nvml.device_by_uuid("GPU-not-there"),
        Err(NvmlError::NotFound)
    ));

    let h100 = f.device(0);
    let a100 = f.device(1);
    assert_eq!(h100.enforced_power_limit().unwrap(), 700_000);
    assert_eq!(h100.power_management_limit().unwrap(), 700_000);
    assert_eq!(a100.enforced_power_limit().unwrap(), 400_000);
    assert_eq!(h100.max_clock_info(Clock::SM).unwrap(), 1980);
    assert_eq!(a100.max_clock_info(Clock::SM).unwrap(), 1410);
    assert_eq!(a100.max_clock_info(Clock::Graphics).unwrap(), 1410);
    assert_eq!(h100.memory_info().unwrap().total, 81559 * MIB);
    let cc = h100.cuda_compute_capability().unwrap();
    assert_eq!((cc.major, cc.minor), (9, 0));
    let cc = a100.cuda_compute_capability().unwrap();
    assert_eq!((cc.major, cc.minor), (8, 0));
    assert_eq!(h100.num_cores().unwrap(), 16896);
    assert_eq!(a100.num_cores().unwrap(), 6912);

    let pci = h100.pci_info().unwrap();
    assert_eq!(pci.bus_id, "00000000:18:00.0");
    assert_eq!(pci.bus, 0x18);
    assert_eq!(pci.pci_device_id, 0x2330_10DE);
    assert_eq!(a100.pci_info().unwrap().bus_id, "00000000:19:00.0");
}

#[test]
fn readings_follow_the_model() {
    let f = fixture();
    let busy = f.device(0);
    let idle = f.device(1);

    for (gpu, device) in [(0, &busy), (1, &idle)] {
        let (mw, before, after) = f.bracket(gpu, || device.power_usage().unwrap());
        assert!(
            between(
                mw as f64,
                before.power_w * 1000.0,
                after.power_w * 1000.0,
                1.0
            ),
            "gpu {gpu}: {mw} mW, model {} .. {} W",
            before.power_w,
            after.power_w
        );

        let (util, before, after) = f.bracket(gpu, || device.utilization_rates().unwrap());
        assert!(between(
            util.gpu as f64,
            before.utilization * 100.0,
            after.utilization * 100.0,
            0.5
        ));
        assert_eq!(util.memory, (util.gpu as f64 * 0.6).round() as u32);

        let (mem, before, after) = f.bracket(gpu, || device.memory_info().unwrap());
        assert!(between(
            mem.used as f64,
            before.memory_used_bytes as f64,
            after.memory_used_bytes as f64,
            0.0
        ));
        assert_eq!(mem.free + mem.used + mem.reserved, mem.total);

        let (clock, before, after) = f.bracket(gpu, || device.clock_info(Clock::SM).unwrap());
        assert!(between(
            clock as f64,
            before.sm_clock_mhz as f64,
            after.sm_clock_mhz as f64,
            0.0
        ));
        assert_eq!(device.clock_info(Clock::Memory).unwrap(), 2619);
        assert_eq!(device.clock_info(Clock::Video).unwrap(), 1755);

        let (temp, before, after) =
            f.bracket(gpu, || device.temperature(TemperatureSensor::Gpu).unwrap());
        assert!(between(
            temp as f64,
            before.temperature_c,
            after.temperature_c,
            0.5
        ));

        let (reasons, before, after) =
            f.bracket(gpu, || device.current_throttle_reasons().unwrap());
        assert!(
            reasons.bits() == before.throttle_reasons || reasons.bits() == after.throttle_reasons
        );
    }

    // The busy GPU, in numbers.
    assert_eq!(busy.power_usage().unwrap(), 600_000);
    assert_eq!(busy.utilization_rates().unwrap().gpu, 90);
    assert_eq!(busy.memory_info().unwrap().used, (512 + 40000) * MIB);
    assert_eq!(busy.clock_info(Clock::SM).unwrap(), 1980);
    assert_eq!(busy.clock_info(Clock::Graphics).unwrap(), 1980);
    assert!(!busy
        .current_throttle_reasons()
        .unwrap()
        .contains(ThrottleReasons::GPU_IDLE));
    let mut procs = busy.running_compute_processes().unwrap();
    procs.sort_by_key(|p| p.pid);
    assert_eq!(busy.running_compute_processes_count().unwrap(), 2);
    assert_eq!(procs.len(), 2);
    assert_eq!(procs[0].pid, 4101);
    assert_eq!(procs[0].used_gpu_memory, UsedGpuMemory::Used(40000 * MIB));
    assert_eq!(procs[0].gpu_instance_id, None);
    assert_eq!(procs[0].compute_instance_id, None);
    assert_eq!(procs[1].pid, 4102);
    assert_eq!(procs[1].used_gpu_memory, UsedGpuMemory::Used(0));
    assert!(busy.running_graphics_processes().unwrap().is_empty());
    // Per-process utilization: the driver's buffer of samples, only for busy processes (the
    // idle worker 4102 has none), oldest first, each stamped with its CPU time in microseconds.
    let util = busy.process_utilization_stats(None).unwrap();
    let phase = f.node.state(0, f.now()).processes;
    assert!(phase[0].sm_util_pct > 0);
    assert!(util.len() >= 2, "{util:?}");
    assert!(util
        .iter()
        .all(|u| u.pid == 4101 && u.sm_util == phase[0].sm_util_pct));
    assert!(util.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    let newest = util.last().unwrap().timestamp;
    assert!(newest as f64 <= unix_now() * 1e6 && newest as f64 > (unix_now() - 1.0) * 1e6);
    // Asking again since the newest sample seen: nothing newer yet is NOT_FOUND, not an empty
    // success; the samples taken since come later.
    match busy.process_utilization_stats(newest) {
        Err(NvmlError::NotFound) => {}
        Ok(newer) => assert!(newer.iter().all(|u| u.timestamp > newest), "{newer:?}"),
        Err(e) => panic!("{e}"),
    }
    std::thread::sleep(Duration::from_millis(400));
    let newer = busy.process_utilization_stats(newest).unwrap();
    assert!(!newer.is_empty() && newer.iter().all(|u| u.timestamp > newest));

    // The idle GPU, in numbers.
    assert_eq!(idle.power_usage().unwrap(), 50_000);
    assert_eq!(idle.utilization_rates().unwrap().gpu, 0);
    assert_eq!(idle.memory_info().unwrap().used, 512 * MIB);
    assert_eq!(idle.clock_info(Clock::SM).unwrap(), 210);
    assert_eq!(idle.temperature(TemperatureSensor::Gpu).unwrap(), 32);
    let reasons = idle.current_throttle_reasons().unwrap();
    assert_eq!(reasons, ThrottleReasons::GPU_IDLE);
    assert_eq!(reasons.bits(), reason::GPU_IDLE);
    assert!(idle.running_compute_processes().unwrap().is_empty());
    // No sample at all: NVML_ERROR_NOT_FOUND, which nvml-wrapper passes on as an error.
    assert!(matches!(
        idle.process_utilization_stats(None),
        Err(NvmlError::NotFound)
    ));
    assert_eq!(idle.running_compute_processes_count().unwrap(), 0);
}

#[test]
fn energy_counter_counts_and_matches_the_model() {
    let f = fixture();
    let busy = f.device(0);
    let model_mj = |t: f64| f.node.energy_j(0, t) * 1000.0;

    let t0 = f.now();
    let e0 = busy.total_energy_consumption().unwrap();
    let t1 = f.now();
    std::thread::sleep(Duration::from_millis(200));
    let t2 = f.now();
    let e1 = busy.total_energy_consumption().unwrap();
    let t3 = f.now();

    assert!(e0 >= 5_000_000, "the counter starts at initial_energy_j");
    assert!(
        between(e0 as f64, model_mj(t0), model_mj(t1), 1.0),
        "{e0} mJ"
    );
    assert!(
        between(e1 as f64, model_mj(t2), model_mj(t3), 1.0),
        "{e1} mJ"
    );
    // The growth over the sleep is the model's, whatever the model's time base.
    let grown = (e1 - e0) as f64;
    assert!(
        between(
            grown,
            model_mj(t2) - model_mj(t1),
            model_mj(t3) - model_mj(t0),
            2.0
        ),
        "{grown} mJ in {}..{} scenario s",
        t2 - t1,
        t3 - t0
    );
    // And at least 600 W for the wall time between the reads (the counter never runs slow).
    let wall_s = (t2 - t1) / SPEED;
    assert!(
        grown >= 600.0 * wall_s * 1000.0 - 2.0,
        "{grown} mJ in {wall_s} s"
    );

    assert!(matches!(
        f.device(1).total_energy_consumption(),
        Err(NvmlError::NotSupported)
    ));
}

#[test]
fn lost_gpus_answer_gpu_lost() {
    let f = fixture();
    // Lost from the start: the handle is still given out, every call on it fails.
    let lost = f.device(2);
    assert!(matches!(lost.name(), Err(NvmlError::GpuLost)));
    assert!(matches!(lost.uuid(), Err(NvmlError::GpuLost)));
    assert!(matches!(lost.index(), Err(NvmlError::GpuLost)));
    assert!(matches!(lost.power_usage(), Err(NvmlError::GpuLost)));
    assert!(matches!(
        lost.total_energy_consumption(),
        Err(NvmlError::GpuLost)
    ));
    assert!(matches!(lost.memory_info(), Err(NvmlError::GpuLost)));
    assert!(matches!(lost.utilization_rates(), Err(NvmlError::GpuLost)));
    assert!(matches!(
        lost.running_compute_processes(),
        Err(NvmlError::GpuLost)
    ));
    assert!(matches!(
        lost.temperature(TemperatureSensor::Gpu),
        Err(NvmlError::GpuLost)
    ));
    // The other GPUs are not affected.
    assert_eq!(f.nvml.device_count().unwrap(), 4);
    assert!(f.device(0).power_usage().is_ok());

    // GPU 3 falls off the bus at scenario time 25 s.
    let gpu3 = f.device(3);
    let (before, power, after) = (f.now(), gpu3.power_usage(), f.now());
    if after < 25.0 {
        assert_eq!(power.unwrap(), 70_000, "present before 25 s");
    } else if before >= 25.0 {
        assert!(matches!(power, Err(NvmlError::GpuLost)));
    }
    while f.now() < 26.0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(gpu3.power_usage(), Err(NvmlError::GpuLost)));
    assert!(matches!(gpu3.name(), Err(NvmlError::GpuLost)));
    assert!(f.nvml.device_by_index(3).is_ok());
}

/// What the wrapper does not reach: the C-level argument checks and the count protocol.
#[test]
fn c_level_contract() {
    let f = fixture();
    let lib = f.nvml.lib();
    let busy = f.device(0);
    // SAFETY: all calls below follow nvml.h: out-pointers are valid for their type, string
    // buffers are as long as the length passed, and the handle comes from the library.
    unsafe {
        let h = busy.handle();

        // Strings: the caller's length is respected, the NUL included.
        let name = "NVIDIA H100 80GB HBM3";
        let mut buf = [0x55 as c_char; 64];
        assert_eq!(
            lib.nvmlDeviceGetName(h, buf.as_mut_ptr(), name.len() as u32),
            NVML_ERROR_INSUFFICIENT_SIZE
        );
        assert_eq!(buf[0], 0x55, "nothing written when it does not fit");
        assert_eq!(
            lib.nvmlDeviceGetName(h, buf.as_mut_ptr(), name.len() as u32 + 1),
            NVML_SUCCESS
        );
        assert_eq!(CStr::from_ptr(buf.as_ptr()).to_str().unwrap(), name);
        assert_eq!(buf[name.len() + 1], 0x55, "nothing written past the NUL");
        assert_eq!(
            lib.nvmlSystemGetDriverVersion(buf.as_mut_ptr(), 4),
            NVML_ERROR_INSUFFICIENT_SIZE
        );
        assert_eq!(
            lib.nvmlDeviceGetUUID(h, ptr::null_mut(), 96),
            NVML_ERROR_INVALID_ARGUMENT
        );

        // NULL out-pointers and handles that are not the library's.
        assert_eq!(
            lib.nvmlDeviceGetPowerUsage(h, ptr::null_mut()),
            NVML_ERROR_INVALID_ARGUMENT
        );
        assert_eq!(
            lib.nvmlDeviceGetCount_v2(ptr::null_mut()),
            NVML_ERROR_INVALID_ARGUMENT
        );
        let mut power = 0;
        assert_eq!(
            lib.nvmlDeviceGetPowerUsage(ptr::null_mut(), &mut power),
            NVML_ERROR_INVALID_ARGUMENT
        );
        let mut bogus = 0u64;
        assert_eq!(
            lib.nvmlDeviceGetPowerUsage(ptr::addr_of_mut!(bogus).cast(), &mut power),
            NVML_ERROR_INVALID_ARGUMENT
        );
        let mut clock = 0;
        assert_eq!(
            lib.nvmlDeviceGetClockInfo(h, 7, &mut clock),
            NVML_ERROR_INVALID_ARGUMENT
        );
        let mut temp = 0;
        assert_eq!(
            lib.nvmlDeviceGetTemperature(h, 1, &mut temp),
            NVML_ERROR_INVALID_ARGUMENT
        );

        // Handles are stable.
        let mut again = mem::zeroed();
        assert_eq!(
            lib.nvmlDeviceGetHandleByIndex_v2(0, &mut again),
            NVML_SUCCESS
        );
        assert_eq!(again, h);

        // Memory v2 checks the struct version; v1 agrees with v2.
        let mut v2 = mem::zeroed();
        assert_eq!(
            lib.nvmlDeviceGetMemoryInfo_v2(h, &mut v2),
            NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        );
        let mut v1 = mem::zeroed();
        assert_eq!(lib.nvmlDeviceGetMemoryInfo(h, &mut v1), NVML_SUCCESS);
        let info = busy.memory_info().unwrap();
        assert_eq!(
            (v1.total, v1.used, v1.free),
            (info.total, info.used, info.free)
        );
        assert_eq!(info.version, 0x0200_0028);

        // The running-process count protocol of nvml.h.
        let mut count = 0;
        assert_eq!(
            lib.nvmlDeviceGetComputeRunningProcesses_v3(h, &mut count, ptr::null_mut()),
            NVML_ERROR_INSUFFICIENT_SIZE
        );
        assert_eq!(count, 2);
        let mut infos = vec![mem::zeroed(); 3];
        count = 1;
        assert_eq!(
            lib.nvmlDeviceGetComputeRunningProcesses_v3(h, &mut count, infos.as_mut_ptr()),
            NVML_ERROR_INSUFFICIENT_SIZE
        );
        assert_eq!(count, 2);
        count = 3;
        assert_eq!(
            lib.nvmlDeviceGetComputeRunningProcesses_v3(h, &mut count, infos.as_mut_ptr()),
            NVML_SUCCESS
        );
        assert_eq!(count, 2);
        assert_eq!(infos[0].pid, 4101);
        assert_eq!(infos[0].gpuInstanceId, 0xFFFF_FFFF);
        count = 3;
        assert_eq!(
            lib.nvmlDeviceGetComputeRunningProcesses_v3(h, &mut count, ptr::null_mut()),
            NVML_ERROR_INVALID_ARGUMENT
        );
        assert_eq!(
            lib.nvmlDeviceGetComputeRunningProcesses_v3(h, ptr::null_mut(), infos.as_mut_ptr()),
            NVML_ERROR_INVALID_ARGUMENT
        );
        count = 0;
        assert_eq!(
            lib.nvmlDeviceGetGraphicsRunningProcesses_v3(h, &mut count, ptr::null_mut()),
            NVML_SUCCESS
        );
        assert_eq!(count, 0);

        // The newer name of the throttle-reasons call answers the same.
        let (mut old, mut new) = (0, 0);
        assert_eq!(
            lib.nvmlDeviceGetCurrentClocksThrottleReasons(h, &mut old),
            NVML_SUCCESS
        );
        assert_eq!(
            lib.nvmlDeviceGetCurrentClocksEventReasons(h, &mut new),
            NVML_SUCCESS
        );
        assert_eq!(old, new);

        let text = CStr::from_ptr(lib.nvmlErrorString(15));
        assert_eq!(text.to_str().unwrap(), "GPU is lost");
        let text = CStr::from_ptr(lib.nvmlErrorString(12345));
        assert_eq!(text.to_str().unwrap(), "Unknown Error");
    }
}

/// A second `Nvml` (as a second component of one process would make) counts one more init;
/// dropping it undoes only that one.
#[test]
fn inits_are_counted() {
    let f = fixture();
    {
        let second = Nvml::builder()
            .lib_path(fake_lib().as_os_str())
            .init()
            .expect("a second init");
        assert_eq!(second.device_count().unwrap(), 4);
    }
    assert_eq!(f.nvml.device_count().unwrap(), 4);
    assert!(f.device(0).power_usage().is_ok());
}
