//! Issue 15: a GPU in MIG mode, through the real `nvml-wrapper`: its MIG devices with their
//! UUIDs, GPU instance ids, names and memory; the parent's process list tagged with each
//! process's `gpuInstanceId`; the calls nvml.h says are "not currently supported" on MIG
//! answering `NOT_SUPPORTED`; per-instance GPM activity; and a GPU switched into and out of MIG
//! mode while the library is loaded.
//!
//! A separate test file (so a separate process): the library keeps the scenario it loaded.
//! Each case runs in a child process with `GPUCOST_FAKE_NVML_START_UNIX` set so that the whole
//! case falls well inside one stretch of the timeline (minutes of margin), and the switch case
//! waits for the scenario clock to pass the switch, so no result depends on how fast the
//! machine is.

mod common;

use std::process::Command;
use std::time::Duration;

use nvml_wrapper::enum_wrappers::device::Sampling;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::gpm_metrics_get;
use nvml_wrapper::Nvml;

use common::{fake_lib, unix_now, SCENARIO_ENV, START_ENV};

/// Which case a child process runs.
const CASE_ENV: &str = "FAKE_NVML_MIG_CASE";

/// GPU 0: an H100 in MIG mode from the start, `3g.40gb` (instance 1, job pid 7001 at 95 %),
/// `2g.20gb` (instance 2, pid 7002, holding memory, idle) and a `1g.10gb` (instance 5) nobody
/// uses. GPU 1: an H100 that is switched into MIG mode at 2000 s and out of it at 4000 s.
/// GPU 2: an L40S, which has no MIG.
const SCENARIO: &str = r#"
name = "issue-15-mig"
duration_s = 6000
ripple = 0.0

[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
mig = true
[[gpu.mig_instance]]
profile = "3g.40gb"
uuid = "MIG-aaaaaaaa-0000-4000-8000-000000000001"
[[gpu.mig_instance]]
profile = "2g.20gb"
[[gpu.mig_instance]]
profile = "1g.10gb"
gpu_instance_id = 5

[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[gpu.mig_instance]]
profile = "7g.80gb"

[[gpu]]
model = "NVIDIA L40S"
memory_total_mib = 46068
power_limit_w = 350
idle_power_w = 35

[[job]]
name = "a"
pid = 7001
gpus = [0]
gpu_instance = 1
[[job.phase]]
seconds = 6000
utilization = 0.95
power_w = 400
memory_mib = 30000
precision = "bf16"

[[job]]
name = "b"
pid = 7002
gpus = [0]
gpu_instance = 2
[[job.phase]]
seconds = 6000
utilization = 0.0
power_w = 70
memory_mib = 10000
precision = "idle"

[[event]]
at_s = 2000
gpu = 1
kind = "mig_enable"

[[event]]
at_s = 4000
gpu = 1
kind = "mig_disable"
"#;

fn init() -> Nvml {
    Nvml::builder()
        .lib_path(fake_lib().as_os_str())
        .init()
        .expect("init the fake library")
}

/// Runs `case` in a child process whose scenario clock reads `at_s` at its start.
fn run_child(case: &str, at_s: f64) {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("mig.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([case, "--exact", "--nocapture", "--test-threads=1"])
        .env(CASE_ENV, case)
        .env(SCENARIO_ENV, &scenario)
        .env(START_ENV, format!("{}", unix_now() - at_s))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{case}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_child(case: &str) -> bool {
    std::env::var(CASE_ENV).as_deref() == Ok(case)
}

#[test]
fn issue_15_mig_devices_through_nvml_wrapper() {
    let case = "issue_15_mig_devices_through_nvml_wrapper";
    if !is_child(case) {
        return run_child(case, 1000.0);
    }
    let nvml = init();
    let gpu = nvml.device_by_index(0).unwrap();
    let mode = gpu.mig_mode().unwrap();
    assert_eq!((mode.current, mode.pending), (1, 1));
    // The most MIG devices it can hold (one per slice), not how many exist (go-nvml#60).
    assert_eq!(gpu.mig_device_count().unwrap(), 7);
    let mut seen = Vec::new();
    for k in 0..7 {
        match gpu.mig_device_by_index(k) {
            Ok(m) => {
                assert!(m.mig_is_mig_device_handle().unwrap());
                let parent = m.mig_parent_device().unwrap();
                assert_eq!(parent.uuid().unwrap(), gpu.uuid().unwrap());
                let mem = m.memory_info().unwrap();
                seen.push((m.uuid().unwrap(), m.name().unwrap(), mem.total, mem.used));
            }
            Err(e) => assert!(matches!(e, NvmlError::NotFound), "index {k}: {e:?}"),
        }
    }
    let gib = 1u64 << 30;
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].0, "MIG-aaaaaaaa-0000-4000-8000-000000000001");
    assert!(seen[1].0.starts_with("MIG-") && seen[1].0 != seen[2].0);
    assert_eq!(seen[0].1, "NVIDIA H100 80GB HBM3 MIG 3g.40gb");
    assert_eq!(seen[2].1, "NVIDIA H100 80GB HBM3 MIG 1g.10gb");
    // Each instance's own memory: its size, and what its jobs hold.
    assert_eq!((seen[0].2, seen[0].3), (40 * gib, 30000 << 20));
    assert_eq!((seen[1].2, seen[1].3), (20 * gib, 10000 << 20));
    assert_eq!((seen[2].2, seen[2].3), (10 * gib, 0));
    // GPU instance ids through the raw call (nvml-wrapper has no method for it).
    let gi_of = |k: u32| {
        let m = gpu.mig_device_by_index(k).unwrap();
        let call = nvml.lib().nvmlDeviceGetGpuInstanceId.as_ref().unwrap();
        let ci_call = nvml.lib().nvmlDeviceGetComputeInstanceId.as_ref().unwrap();
        let (mut gi, mut ci) = (99, 99);
        // SAFETY: a live MIG handle of this library; valid out-pointers.
        unsafe {
            assert_eq!(call(m.handle(), &mut gi), 0);
            assert_eq!(ci_call(m.handle(), &mut ci), 0);
        }
        (gi, ci)
    };
    assert_eq!([gi_of(0), gi_of(1), gi_of(2)], [(1, 0), (2, 0), (5, 0)]);

    // The parent's list holds every instance's processes, each with its instance ids.
    let mut procs: Vec<_> = gpu
        .running_compute_processes()
        .unwrap()
        .into_iter()
        .map(|p| (p.pid, p.gpu_instance_id, p.compute_instance_id))
        .collect();
    procs.sort();
    assert_eq!(procs, [(7001, Some(1), Some(0)), (7002, Some(2), Some(0))]);

    // nvml.h: "not currently supported" on MIG-enabled GPUs.
    assert!(matches!(
        gpu.utilization_rates(),
        Err(NvmlError::NotSupported)
    ));
    assert!(matches!(
        gpu.process_utilization_stats(0),
        Err(NvmlError::NotSupported)
    ));
    assert!(matches!(
        gpu.samples(Sampling::GpuUtilization, None),
        Err(NvmlError::NotSupported)
    ));

    // Per-instance GPM: instance 1 at 95 % utilization in bf16 (SM active 0.95 x 0.95), the
    // idle and the unused instances at 0, an instance the GPU lacks refused.
    let sm = |gi: u32| {
        let s1 = gpu.gpm_mig_sample(gi).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        let s2 = gpu.gpm_mig_sample(gi).unwrap();
        let r = gpm_metrics_get(&nvml, &s1, &s2, &[GpmMetricId::SmUtil]).unwrap();
        r[0].as_ref().unwrap().value
    };
    assert!((sm(1) - 90.25).abs() < 1e-6, "{}", sm(1));
    assert_eq!(sm(2), 0.0);
    assert_eq!(sm(5), 0.0);
    assert!(matches!(gpu.gpm_mig_sample(3), Err(NvmlError::InvalidArg)));

    // GPU 1 is not in MIG mode yet: no MIG devices, and utilization is read as usual.
    let whole = nvml.device_by_index(1).unwrap();
    assert_eq!(whole.mig_mode().unwrap().current, 0);
    assert_eq!(whole.mig_device_count().unwrap(), 0);
    assert!(whole.utilization_rates().is_ok());
    // An L40S has no MIG.
    let l40s = nvml.device_by_index(2).unwrap();
    assert!(matches!(l40s.mig_mode(), Err(NvmlError::NotSupported)));
    assert_eq!(l40s.mig_device_count().unwrap(), 0);
}

/// GPU 1 goes into MIG mode at 2000 s (scenario time) while the library stays loaded: the
/// child starts at 1990 s and waits for the clock to pass 2000 s.
#[test]
fn issue_15_mig_mode_switches_while_the_library_is_loaded() {
    let case = "issue_15_mig_mode_switches_while_the_library_is_loaded";
    if !is_child(case) {
        run_child(case, 1990.0);
        return;
    }
    let nvml = init();
    let d = nvml.device_by_index(1).unwrap();
    assert_eq!(d.mig_mode().unwrap().current, 0, "before the switch");
    // Wait for the scenario clock (1 s per second) to pass 2000 s.
    let mut on = false;
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(100));
        if d.mig_mode().unwrap().current == 1 {
            on = true;
            break;
        }
    }
    assert!(on, "MIG mode never came on");
    let m = d.mig_device_by_index(0).unwrap();
    assert!(m.uuid().unwrap().starts_with("MIG-"));
    assert_eq!(m.name().unwrap(), "NVIDIA H100 80GB HBM3 MIG 7g.80gb");
    assert!(matches!(
        d.utilization_rates(),
        Err(NvmlError::NotSupported)
    ));
}

/// GPU 1 leaves MIG mode at 4000 s: a MIG handle taken before is invalid after (nvml.h: a MIG
/// device handle "would remain invalid" once its instance is destroyed).

#[test]
fn issue_15_a_mig_handle_is_invalid_once_mig_mode_is_off() {
    let case = "issue_15_a_mig_handle_is_invalid_once_mig_mode_is_off";
    if !is_child(case) {
        run_child(case, 3995.0);
        return;
    }
    let nvml = init();
    let d = nvml.device_by_index(1).unwrap();
    assert_eq!(d.mig_mode().unwrap().current, 1, "before the switch back");
    let m = d.mig_device_by_index(0).unwrap();
    assert!(m.uuid().is_ok());
    let mut off = false;
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(100));
        if d.mig_mode().unwrap().current == 0 {
            off = true;
            break;
        }
    }
    assert!(off, "MIG mode never went off");
    assert!(matches!(m.uuid(), Err(NvmlError::InvalidArg)));
    assert!(matches!(
        d.mig_device_by_index(0),
        Err(NvmlError::InvalidArg)
    ));
    assert!(d.utilization_rates().is_ok());
}
