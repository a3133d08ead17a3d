//! A driver upgraded under a running client (`driver_upgrade_at_s`): every call of the library
//! the client holds answers `NVML_ERROR_LIB_RM_VERSION_MISMATCH`, a second init while it is
//! still open too, and only an init after every earlier one was shut down works again.
//!
//! What it reproduces: nvml.h's `NVML_ERROR_LIB_RM_VERSION_MISMATCH` ("RM detects a
//! driver/library version mismatch"), reported as "Failed to initialize NVML: Driver/library
//! version mismatch" once a driver update replaced the library or the kernel module under
//! running processes (NVIDIA/ubuntu-packaging-nvidia-driver#3,
//! oddmario/NVIDIA-Ubuntu-Driver-Guide#4).
//!
//! A test file of its own (so a process of its own): the library reads the environment at its
//! first init and keeps what it loaded.

mod common;

use std::time::Duration;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

use common::{fake_lib, unix_now, SCENARIO_ENV, START_ENV};

/// 10 scenario seconds per wall second: the upgrade comes 0.3 s (wall) after the start.
const SCENARIO: &str = r#"
name = "driver-upgrade"
duration_s = 3600
speed = 10
driver_upgrade_at_s = 3
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
"#;

fn init() -> Result<Nvml, NvmlError> {
    Nvml::builder().lib_path(fake_lib().as_os_str()).init()
}

fn mismatch<T: std::fmt::Debug>(r: Result<T, NvmlError>) -> bool {
    matches!(r, Err(NvmlError::LibRmVersionMismatch))
}

#[test]
fn after_a_driver_upgrade_every_call_answers_version_mismatch_until_nvml_is_loaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upgrade.toml");
    std::fs::write(&path, SCENARIO).unwrap();
    // The only test in this process: nothing else reads the environment meanwhile. A shared
    // start keeps the timeline if the library is unloaded and loaded again below.
    std::env::set_var(SCENARIO_ENV, &path);
    std::env::set_var(START_ENV, format!("{:.6}", unix_now()));

    let first = init().expect("init before the upgrade");
    let xid_listener = init().expect("a second handle, as the agent's Xid listener holds");
    assert!(first.device_by_index(0).unwrap().power_usage().is_ok());

    std::thread::sleep(Duration::from_millis(450));
    // Every call of the library held since before the upgrade, device and system alike.
    assert!(mismatch(first.device_count()));
    assert!(mismatch(first.sys_driver_version()));
    assert!(mismatch(first.device_by_index(0)));
    assert!(mismatch(xid_listener.device_count()));
    // Initialising again while a handle is open does not help: the process still holds the
    // library it loaded before the upgrade.
    assert!(mismatch(init().map(|_| ())));
    drop(first);
    assert!(mismatch(init().map(|_| ())), "one handle is still open");
    drop(xid_listener);

    // Every handle shut down: the next init loads the library as installed now.
    let again = init().expect("init after every handle was shut down");
    assert!(again.device_by_index(0).unwrap().power_usage().is_ok());
    assert!(again.device_count().is_ok());
}
