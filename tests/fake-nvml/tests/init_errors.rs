//! Init without a usable scenario fails with `NVML_ERROR_UNKNOWN` and one line on stderr that
//! names the problem; after as many shutdowns as inits the library answers UNINITIALIZED.
//!
//! A separate test file (so a separate process) from `through_nvml_wrapper.rs`, since the
//! library reads the environment at its first successful init and keeps what it loaded.

mod common;

use std::process::Command;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

use common::{fake_lib, SCENARIO_ENV, START_ENV};

/// Set in the child processes of `init_fails_and_names_the_problem`.
const CHILD_ENV: &str = "FAKE_NVML_TEST_CHILD";

fn init() -> Result<Nvml, NvmlError> {
    Nvml::builder().lib_path(fake_lib().as_os_str()).init()
}

/// Each case runs in a child process (this test binary, filtered to this test) with its own
/// environment, so the library starts fresh and its stderr line can be read.
#[test]
fn init_fails_and_names_the_problem() {
    if std::env::var_os(CHILD_ENV).is_some() {
        match init() {
            Ok(_) => panic!("init succeeded"),
            Err(e) => assert!(matches!(e, NvmlError::Unknown), "{e:?}"),
        }
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let not_toml = dir.path().join("not-toml.toml");
    std::fs::write(&not_toml, "name = = \"x\"\n").unwrap();
    let bad_gpu = dir.path().join("bad-gpu.toml");
    std::fs::write(
        &bad_gpu,
        r#"
name = "bad"
duration_s = 10
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[job]]
name = "j"
pid = 1
gpus = [7]
[[job.phase]]
seconds = 5
utilization = 1.0
power_w = 500
memory_mib = 100
"#,
    )
    .unwrap();
    let missing = dir.path().join("missing.toml");
    let (not_toml, bad_gpu, missing) = (
        not_toml.to_str().unwrap(),
        bad_gpu.to_str().unwrap(),
        missing.to_str().unwrap(),
    );

    let cases: [(Option<&str>, Option<&str>, &[&str]); 5] = [
        (None, None, &["GPUCOST_FAKE_NVML_SCENARIO is not set"]),
        (Some(" "), None, &["GPUCOST_FAKE_NVML_SCENARIO is empty"]),
        (
            Some(missing),
            None,
            &["cannot read scenario file", "missing.toml"],
        ),
        (Some(not_toml), None, &["not-toml.toml", "TOML parse error"]),
        (
            Some(bad_gpu),
            None,
            &["bad-gpu.toml", "job 'j': gpus: GPU 7 does not exist"],
        ),
    ];
    let start_case: (Option<&str>, Option<&str>, &[&str]) = (
        Some("demo"),
        Some("yesterday"),
        &["GPUCOST_FAKE_NVML_START_UNIX=\"yesterday\" is not a number of unix seconds"],
    );

    for (scenario, start, wanted) in cases.iter().chain([&start_case]) {
        let mut child = Command::new(std::env::current_exe().unwrap());
        child
            .args(["--exact", "init_fails_and_names_the_problem", "--nocapture"])
            .env(CHILD_ENV, "1")
            .env_remove(SCENARIO_ENV)
            .env_remove(START_ENV);
        if let Some(s) = scenario {
            child.env(SCENARIO_ENV, s);
        }
        if let Some(s) = start {
            child.env(START_ENV, s);
        }
        let out = child.output().expect("run the child test");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "case {scenario:?}: the child failed:\n{stderr}"
        );
        let lines: Vec<_> = stderr
            .lines()
            .filter(|l| l.starts_with("fake-nvml:"))
            .collect();
        assert_eq!(lines.len(), 1, "case {scenario:?}: one line, got {lines:?}");
        for w in *wanted {
            assert!(
                lines[0].contains(w),
                "case {scenario:?}: {w:?} not in {lines:?}"
            );
        }
    }
}

/// A failed init leaves nothing behind (the next one reads the environment again); shutdowns
/// undo inits one for one, and with none left every call answers UNINITIALIZED.
#[test]
fn init_can_be_retried_and_shutdown_balances_init() {
    std::env::remove_var(SCENARIO_ENV);
    std::env::remove_var(START_ENV);
    assert!(matches!(init(), Err(NvmlError::Unknown)));

    std::env::set_var(SCENARIO_ENV, "demo");
    let nvml = init().expect("init with the demo scenario");
    assert_eq!(nvml.device_count().unwrap(), 4);
    let gpu0 = nvml.device_by_index(0).unwrap();
    assert_eq!(gpu0.name().unwrap(), "NVIDIA H100 80GB HBM3");
    // Scenario time runs from this init at the demo's speed (1): the pretrain job is running.
    let pids: Vec<u32> = gpu0
        .running_compute_processes()
        .unwrap()
        .iter()
        .map(|p| p.pid)
        .collect();
    assert_eq!(pids, [4101, 4102, 4103]);

    // SAFETY (raw calls): no arguments; the symbols are the library's.
    let lib = nvml.lib();
    assert_eq!(unsafe { lib.nvmlShutdown() }, 0);
    assert!(matches!(nvml.device_count(), Err(NvmlError::Uninitialized)));
    assert!(matches!(
        nvml.device_by_index(0),
        Err(NvmlError::Uninitialized)
    ));
    assert!(matches!(gpu0.name(), Err(NvmlError::Uninitialized)));
    assert!(matches!(
        nvml.sys_driver_version(),
        Err(NvmlError::Uninitialized)
    ));
    assert_eq!(nvml.sys_nvml_version().unwrap(), "12.550.90");
    assert_eq!(unsafe { lib.nvmlShutdown() }, 1, "UNINITIALIZED");

    // Init again: the environment no longer matters, the loaded scenario is kept.
    std::env::remove_var(SCENARIO_ENV);
    assert_eq!(unsafe { lib.nvmlInit_v2() }, 0);
    assert_eq!(nvml.device_count().unwrap(), 4);
    assert_eq!(gpu0.index().unwrap(), 0);
    drop(nvml); // nvmlShutdown, balancing the raw init above.
}
