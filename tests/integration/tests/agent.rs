//! The real `gpucost agent` binary over HTTP: on the simulated node, and on the real NVML code
//! path through the fake `libnvidia-ml.so` (normal sampling, no library, a GPU lost mid-run,
//! energy counter unsupported, counter reset), plus start-up with a bad config.

use std::process::Command;
use std::time::{Duration, Instant};

use gpucost_integration_tests::{
    agent_bin, fake_nvml_lib, fake_nvml_lib_without, promtool_check_metrics, write_scenario, Agent,
    Metrics,
};

const FAST: &[(&str, &str)] = &[
    ("GPUCOST_SAMPLING_INTERVAL", "100ms"),
    ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "100ms"),
];

fn fast_env(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    FAST.iter()
        .map(|(k, v)| (*k, v.to_string()))
        .chain(extra.iter().cloned())
        .collect()
}

fn start(args: &[&str], env: &[(&'static str, String)]) -> Agent {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Agent::start(args, &env)
}

fn samples_at_least(n: f64) -> impl Fn(&Metrics) -> bool {
    move |m| m.get("gpucost_agent_samples_total", &[]).unwrap_or(0.0) >= n
}

/// A constant node on the fake NVML library: GPU 0 carries a steady job, GPU 1 is idle and has
/// no energy counter. No ripple, so the expected values are exact.
const STEADY: &str = r#"
name = "steady"
duration_s = 3600
ripple = 0.0
driver_version = "550.54.15"
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
initial_energy_j = 5000000
[[gpu]]
model = "NVIDIA A100-SXM4-40GB"
memory_total_mib = 40960
power_limit_w = 400
idle_power_w = 50
energy_counter = false
[[job]]
name = "steady"
pid = 4242
gpus = [0]
[[job.phase]]
seconds = 3600
utilization = 0.8
power_w = 300
memory_mib = 10000
"#;

#[test]
fn simulated_demo_serves_clean_labelled_metrics() {
    let mut agent = start(&["--simulate", "demo"], &fast_env(&[]));
    let m = agent.wait_for_metrics(
        "two samples",
        Duration::from_secs(10),
        samples_at_least(2.0),
    );
    promtool_check_metrics(&m.text);

    let info = m.find("gpucost_gpu_info", &[("source", "simulated")]);
    assert_eq!(info.len(), 4, "{}", m.text);
    assert!(info
        .iter()
        .all(|s| s.labels["model"] == "NVIDIA H100 80GB HBM3"));
    assert!(
        m.samples
            .iter()
            .all(|s| s.labels.get("simulated").map(String::as_str) == Some("true")),
        "every simulated series says so"
    );
    assert_eq!(m.get("gpucost_nvml_up", &[]), Some(1.0));
    // The demo starts with the bf16 pretrain on GPUs 0 and 1 at 610 W, +-3% ripple.
    let p0 = m.gpu("gpucost_gpu_power_watts", 0).unwrap();
    assert!((590.0..=630.0).contains(&p0), "GPU 0 power {p0}");
    assert_eq!(
        m.gpu("gpucost_gpu_memory_total_bytes", 0),
        Some(81559.0 * 1048576.0)
    );
    assert_eq!(m.gpu("gpucost_gpu_compute_processes", 0), Some(3.0));

    let (status, body) = agent.get("/healthz");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["simulated"], "demo");
    let (status, body) = agent.get("/api/v1/gpus");
    assert_eq!(status, 200);
    let gpus: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(gpus["gpus"].as_array().unwrap().len(), 4);
    assert_eq!(gpus["gpus"][0]["processes"][0]["pid"], 4101);
    assert_eq!(agent.get("/api/v1/gpus/9").0, 404);
    assert_eq!(agent.get("/nope").0, 404);

    let status = agent.terminate();
    assert!(status.success(), "SIGTERM ends the agent cleanly: {status}");
    let logs = agent.logs();
    assert!(
        logs.iter().any(|l| l.contains("SIMULATED NODE")),
        "{logs:?}"
    );
    assert!(
        logs.iter().all(|l| l.contains("simulated")),
        "every log line of a simulated agent says so: {logs:#?}"
    );
}

#[test]
fn fake_nvml_normal_sampling() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "steady.toml", STEADY);
    let lib = fake_nvml_lib().display().to_string();
    let mut agent = start(
        &["--nvml-lib", &lib],
        &fast_env(&[("GPUCOST_FAKE_NVML_SCENARIO", scenario)]),
    );
    let m = agent.wait_for_metrics("samples with processes", Duration::from_secs(10), |m| {
        samples_at_least(3.0)(m) && m.gpu("gpucost_gpu_compute_processes", 0) == Some(1.0)
    });
    promtool_check_metrics(&m.text);
    assert!(m
        .samples
        .iter()
        .all(|s| !s.labels.contains_key("simulated")));
    assert_eq!(m.get("gpucost_nvml_up", &[]), Some(1.0));
    let info = m.find("gpucost_gpu_info", &[("gpu", "0")]);
    assert_eq!(info[0].labels["source"], "nvml");
    assert_eq!(info[0].labels["driver"], "550.54.15");
    assert_eq!(info[0].labels["model"], "NVIDIA H100 80GB HBM3");
    // The H100's one-second average and its instant value; the A100 (GA100) has only the
    // instant value, which is then its power (issue 14, item 11).
    assert_eq!(m.gpu("gpucost_gpu_power_watts", 0), Some(300.0));
    assert_eq!(m.gpu("gpucost_gpu_power_instant_watts", 0), Some(300.0));
    assert_eq!(m.gpu("gpucost_gpu_power_instant_watts", 1), Some(50.0));
    assert_eq!(m.gpu("gpucost_gpu_power_limit_watts", 0), Some(700.0));
    assert_eq!(m.gpu("gpucost_gpu_utilization_ratio", 0), Some(0.8));
    assert_eq!(m.gpu("gpucost_gpu_sm_clock_hertz", 0), Some(1980e6));
    assert_eq!(
        m.gpu("gpucost_gpu_memory_used_bytes", 0),
        Some((512.0 + 10000.0) * 1048576.0)
    );
    assert_eq!(m.gpu("gpucost_gpu_power_watts", 1), Some(50.0));
    assert_eq!(m.gpu("gpucost_gpu_utilization_ratio", 1), Some(0.0));
    assert_eq!(m.gpu("gpucost_gpu_compute_processes", 1), Some(0.0));
    assert_eq!(
        m.get(
            "gpucost_gpu_energy_method_info",
            &[("gpu", "0"), ("method", "counter")]
        ),
        Some(1.0)
    );
    // An idle GPU is not throttled (its gpu_idle bit is no reason); NVML's low-utilization
    // violation counter says its clocks were held low for lack of work (issue 14, item 9).
    let idle_s = |m: &Metrics| {
        m.get(
            "gpucost_gpu_throttled_seconds_total",
            &[("gpu", "1"), ("reason", "low_utilization")],
        )
        .unwrap()
    };
    assert!(idle_s(&m) > 0.0);
    assert_eq!(
        m.get(
            "gpucost_gpu_throttled_seconds_total",
            &[("gpu", "0"), ("reason", "low_utilization")]
        ),
        Some(0.0)
    );
    assert!(m
        .find(
            "gpucost_gpu_throttled_seconds_total",
            &[("reason", "gpu_idle")]
        )
        .is_empty());

    // Energy through the counter grows at the GPU's power: 300 W.
    let e0 = m.gpu("gpucost_gpu_energy_joules_total", 0).unwrap();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let m2 = agent.metrics();
    let e1 = m2.gpu("gpucost_gpu_energy_joules_total", 0).unwrap();
    let watts = (e1 - e0) / t0.elapsed().as_secs_f64();
    assert!(
        (240.0..=360.0).contains(&watts),
        "energy rate {watts} W for a 300 W GPU"
    );
    assert!(idle_s(&m2) > idle_s(&m));
    assert!(agent.terminate().success());
}

#[test]
fn fake_nvml_energy_unsupported_integrates_power() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "steady.toml", STEADY);
    let lib = fake_nvml_lib().display().to_string();
    let mut agent = start(
        &["--nvml-lib", &lib],
        &fast_env(&[("GPUCOST_FAKE_NVML_SCENARIO", scenario)]),
    );
    let m = agent.wait_for_metrics("samples", Duration::from_secs(10), samples_at_least(3.0));
    assert_eq!(
        m.get(
            "gpucost_gpu_energy_method_info",
            &[("gpu", "1"), ("method", "power_integration")]
        ),
        Some(1.0),
        "{}",
        m.text
    );
    let e0 = m.gpu("gpucost_gpu_energy_joules_total", 1).unwrap();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let e1 = agent
        .metrics()
        .gpu("gpucost_gpu_energy_joules_total", 1)
        .unwrap();
    let watts = (e1 - e0) / t0.elapsed().as_secs_f64();
    assert!(
        (40.0..=60.0).contains(&watts),
        "power-integrated rate {watts} W for a 50 W GPU"
    );
    agent.wait_for_log(
        "energy is integrated from power x time",
        Duration::from_secs(1),
    );
    drop(agent);
}

#[test]
fn fake_nvml_gpu_lost_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    // Scenario time runs 10x: GPU 1 is lost 1 s (wall) in and stays lost.
    let text = STEADY.replace("ripple = 0.0", "ripple = 0.0\nspeed = 10")
        + "[[event]]\nat_s = 10\ngpu = 1\nkind = \"gpu_lost\"\n";
    let scenario = write_scenario(dir.path(), "lost.toml", &text);
    let lib = fake_nvml_lib().display().to_string();
    let mut agent = start(
        &["--nvml-lib", &lib],
        &fast_env(&[("GPUCOST_FAKE_NVML_SCENARIO", scenario)]),
    );
    let before = agent.wait_for_metrics("samples", Duration::from_secs(10), samples_at_least(2.0));
    assert_eq!(
        before.gpu("gpucost_gpu_up", 1),
        Some(1.0),
        "{}",
        before.text
    );
    let e_before = before.gpu("gpucost_gpu_energy_joules_total", 1).unwrap();
    let m = agent.wait_for_metrics("GPU 1 lost", Duration::from_secs(10), |m| {
        m.gpu("gpucost_gpu_up", 1) == Some(0.0)
    });
    promtool_check_metrics(&m.text);
    // The lost GPU keeps its identity and its energy total, loses its gauges; GPU 0 goes on.
    assert_eq!(m.find("gpucost_gpu_info", &[("gpu", "1")]).len(), 1);
    assert!(m.gpu("gpucost_gpu_energy_joules_total", 1).unwrap() >= e_before);
    assert_eq!(m.gpu("gpucost_gpu_power_watts", 1), None);
    assert_eq!(m.gpu("gpucost_gpu_up", 0), Some(1.0));
    assert_eq!(m.gpu("gpucost_gpu_power_watts", 0), Some(300.0));
    let lost = agent.wait_for_metrics("lost reads counted", Duration::from_secs(5), |m| {
        m.get(
            "gpucost_agent_sample_errors_total",
            &[("gpu", "1"), ("field", "all"), ("kind", "gpu_lost")],
        )
        .unwrap_or(0.0)
            >= 2.0
    });
    assert_eq!(lost.get("gpucost_nvml_up", &[]), Some(1.0));
    agent.wait_for_log("GPU 1 (", Duration::from_secs(1));
    let warnings = agent
        .logs()
        .iter()
        .filter(|l| l.contains("cannot be read"))
        .count();
    assert_eq!(warnings, 1, "the loss is logged once, not every cycle");
    assert!(agent.terminate().success());
}

#[test]
fn fake_nvml_counter_reset_never_decreases() {
    let dir = tempfile::tempdir().unwrap();
    // At 10x, GPU 0's counter restarts from zero 1 s (wall) in.
    let text = STEADY.replace("ripple = 0.0", "ripple = 0.0\nspeed = 10")
        + "[[event]]\nat_s = 10\ngpu = 0\nkind = \"energy_reset\"\n";
    let scenario = write_scenario(dir.path(), "reset.toml", &text);
    let lib = fake_nvml_lib().display().to_string();
    let mut agent = start(
        &["--nvml-lib", &lib],
        &fast_env(&[("GPUCOST_FAKE_NVML_SCENARIO", scenario)]),
    );
    let mut last = 0.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let rate_after;
    loop {
        let m = agent.metrics();
        let e = m.gpu("gpucost_gpu_energy_joules_total", 0).unwrap_or(0.0);
        assert!(e >= last, "energy went backwards: {last} -> {e}");
        last = e;
        if m.gpu("gpucost_gpu_energy_resets_total", 0) == Some(1.0) {
            // After the reset the counter is used again, at the GPU's 300 W.
            let t0 = Instant::now();
            std::thread::sleep(Duration::from_millis(800));
            let e1 = agent
                .metrics()
                .gpu("gpucost_gpu_energy_joules_total", 0)
                .unwrap();
            assert!(e1 >= e);
            rate_after = (e1 - e) / t0.elapsed().as_secs_f64();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no counter reset seen; last scrape:\n{}",
            m.text
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(
        (240.0..=360.0).contains(&rate_after),
        "rate after the reset {rate_after} W"
    );
    let m = agent.metrics();
    assert_eq!(
        m.gpu("gpucost_gpu_energy_resets_total", 0),
        Some(1.0),
        "one reset, one count"
    );
    assert_eq!(
        m.get(
            "gpucost_gpu_energy_method_info",
            &[("gpu", "0"), ("method", "counter")]
        ),
        Some(1.0)
    );
    agent.wait_for_log("energy counter went backwards", Duration::from_secs(1));
    assert!(agent.terminate().success());
}

#[test]
fn no_library_keeps_serving_and_retries_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "steady.toml", STEADY);
    let later = dir.path().join("lib").join("libnvidia-ml.so.1");
    let later_s = later.display().to_string();
    let mut agent = start(
        &["--nvml-lib", &later_s],
        &fast_env(&[
            ("GPUCOST_FAKE_NVML_SCENARIO", scenario),
            ("GPUCOST_NVML_RETRY_INTERVAL", "300ms".into()),
        ]),
    );
    let m = agent.wait_for_metrics("samples", Duration::from_secs(10), samples_at_least(2.0));
    promtool_check_metrics(&m.text);
    assert_eq!(m.get("gpucost_nvml_up", &[]), Some(0.0));
    assert!(m.find("gpucost_gpu_info", &[]).is_empty());
    let line = agent.wait_for_log("NVML unavailable", Duration::from_secs(1));
    assert!(
        line.contains(&later_s) && line.contains("--nvml-lib"),
        "{line}"
    );
    let (status, body) = agent.get("/healthz");
    assert_eq!(
        status, 200,
        "the agent itself is healthy without a GPU library: {body}"
    );
    assert!(body.contains("\"nvml_up\":false"), "{body}");
    // Retries stay quiet in the log: the same failure is said once.
    std::thread::sleep(Duration::from_millis(700));
    let said = agent
        .logs()
        .iter()
        .filter(|l| l.contains("NVML unavailable"))
        .count();
    assert_eq!(said, 1);

    // The driver shows up (installed late, or a mount appears): the agent picks it up.
    std::fs::create_dir_all(later.parent().unwrap()).unwrap();
    std::fs::copy(fake_nvml_lib(), &later).unwrap();
    let m = agent.wait_for_metrics("NVML up", Duration::from_secs(10), |m| {
        m.get("gpucost_nvml_up", &[]) == Some(1.0) && m.gpu("gpucost_gpu_power_watts", 0).is_some()
    });
    assert_eq!(m.find("gpucost_gpu_info", &[]).len(), 2);
    assert!(agent.terminate().success());
}

#[test]
fn default_library_missing_says_what_it_tried() {
    // No --nvml-lib and no driver on a CI machine: the dynamic loader's name is reported.
    // (On a machine with a driver this test would see NVML up, so it asserts only one way.)
    let mut agent = start(
        &[],
        &fast_env(&[("LD_LIBRARY_PATH", "/nonexistent".into())]),
    );
    let m = agent.wait_for_metrics("samples", Duration::from_secs(10), samples_at_least(1.0));
    if m.get("gpucost_nvml_up", &[]) == Some(0.0) {
        let line = agent.wait_for_log("NVML unavailable", Duration::from_secs(1));
        assert!(line.contains("libnvidia-ml.so.1"), "{line}");
    }
    assert!(agent.terminate().success());
}

/// Issue 13, item 10: a mistyped `GPUCOST_*` variable was ignored without a word. The agent
/// starts anyway and says, in one line, which variable it does not know and which known one is
/// closest; variables it or its tools read that are no setting are not named.
#[test]
fn a_mistyped_variable_is_named_with_the_closest_known_one() {
    // Put together with concat!, so that the config's test that every GPUCOST_ name in the
    // repository is known does not find it.
    let typo = concat!("GPUCOST_SAMPLING_INTERVAL", "L");
    let known = [
        "GPUCOST_JOB_ID",
        "GPUCOST_LABELS",
        "GPUCOST_FAKE_NVML_SCENARIO",
        "GPUCOST_NVRTC_12_4",
        "GPUCOST_PTXAS_12_2",
        "GPUCOST_NVDISASM",
        "GPUCOST_BENCH_MIN_RATIO",
    ];
    let mut env = vec![(typo, "1s")];
    env.extend(known.iter().map(|k| (*k, "0.5")));
    let mut agent = Agent::start(&["--simulate", "demo"], &env);
    let line = agent.wait_for_log(typo, Duration::from_secs(1));
    assert!(
        line.contains("WARN") && line.contains("did you mean GPUCOST_SAMPLING_INTERVAL?"),
        "{line}"
    );
    let logs = agent.logs();
    assert_eq!(logs.iter().filter(|l| l.contains(typo)).count(), 1);
    for k in known {
        assert!(
            !logs.iter().any(|l| l.contains(&format!("variable {k} "))),
            "{k} is known: {logs:#?}"
        );
    }
    assert!(agent.terminate().success());
}

#[test]
fn bad_config_stops_start_up_with_exit_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[sampling]\ninterval = \"0s\"\n").unwrap();
    let out = Command::new(agent_bin())
        .args(["agent", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("sampling.interval") && err.contains("out of range"),
        "{err}"
    );

    let out = Command::new(agent_bin())
        .args(["agent", "--simulate", "demo"])
        .env("GPUCOST_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GPUCOST_LISTEN") && err.contains("listen"),
        "{err}"
    );

    let bad = dir.path().join("bad-scenario.toml");
    std::fs::write(&bad, "name = \"x\"\nduration_s = 10\n").unwrap();
    let out = Command::new(agent_bin())
        .args(["agent", "--listen", "127.0.0.1:0", "--simulate"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad-scenario.toml") && err.contains("at least one [[gpu]]"),
        "{err}"
    );
}

#[test]
fn fake_nvml_gpm_pipes_and_xid_events() {
    let dir = tempfile::tempdir().unwrap();
    // GPU 0: bf16 training; GPU 1: FP32 training that falls off the bus with Xid 79 at 1 s (wall).
    let text = r#"
name = "gpm"
duration_s = 3600
speed = 10
ripple = 0.0
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[job]]
name = "bf16"
pid = 3100001
gpus = [0]
[[job.phase]]
seconds = 3600
utilization = 1.0
power_w = 600
memory_mib = 1000
precision = "bf16"
[[job]]
name = "fp32"
pid = 3100002
gpus = [1]
[[job.phase]]
seconds = 3600
utilization = 1.0
power_w = 400
memory_mib = 1000
precision = "fp32"
[[event]]
at_s = 10
gpu = 1
kind = "xid"
xid = 79
[[event]]
at_s = 10
gpu = 1
kind = "gpu_lost"
"#;
    let scenario = write_scenario(dir.path(), "gpm.toml", text);
    let lib = fake_nvml_lib().display().to_string();
    let mut agent = start(
        &["--nvml-lib", &lib],
        &fast_env(&[("GPUCOST_FAKE_NVML_SCENARIO", scenario)]),
    );
    let m = agent.wait_for_metrics("pipe activity", Duration::from_secs(10), |m| {
        m.get(
            "gpucost_gpu_pipe_active_ratio",
            &[("gpu", "0"), ("pipe", "hmma")],
        )
        .is_some()
            && m.get(
                "gpucost_gpu_pipe_active_ratio",
                &[("gpu", "1"), ("pipe", "fp32")],
            )
            .is_some()
    });
    promtool_check_metrics(&m.text);
    let pipe = |g: &str, p: &str| {
        m.get("gpucost_gpu_pipe_active_ratio", &[("gpu", g), ("pipe", p)])
            .unwrap()
    };
    assert!(
        (pipe("0", "hmma") - 0.55).abs() < 0.02,
        "hmma {}",
        pipe("0", "hmma")
    );
    assert_eq!(pipe("1", "tensor"), 0.0);
    assert!(pipe("1", "fp32") > 0.5);
    let mfu = m
        .get(
            "gpucost_job_mfu_ratio",
            &[("job_id", "unattributed:3100001"), ("source", "counters")],
        )
        .unwrap();
    assert!((0.5..0.65).contains(&mfu), "MFU {mfu}");
    // The Xid arrives through NVML's event set even though the GPU is lost at that moment.
    let m = agent.wait_for_metrics("Xid 79 on GPU 1", Duration::from_secs(10), |m| {
        m.get(
            "gpucost_gpu_xid_errors_total",
            &[("gpu", "1"), ("xid", "79")],
        ) == Some(1.0)
    });
    assert_eq!(m.gpu("gpucost_gpu_up", 1), Some(0.0));
    assert!(
        m.get(
            "gpucost_job_wasted_cost_total",
            &[("job_id", "unattributed:3100002"), ("reason", "fp32")]
        )
        .unwrap()
            > 0.0
    );
    agent.wait_for_log("Xid 79", Duration::from_secs(1));
    assert!(agent.terminate().success());
}

#[test]
fn issue_13_throttled_seconds_and_xids_continue_after_kill_9() {
    // They lived only in memory and restarted from zero with the agent; now they are kept in the
    // ledger with the GPU's other totals. At 10x, the fake library reports Xid 79 on GPU 0 0.5 s
    // (wall) after it loads, so each agent process sees one; GPU 1 idles throughout, its clocks
    // held low for low utilization.
    let dir = tempfile::tempdir().unwrap();
    let text = STEADY.replace("ripple = 0.0", "ripple = 0.0\nspeed = 10")
        + "[[event]]\nat_s = 5\ngpu = 0\nkind = \"xid\"\nxid = 79\n";
    let scenario = write_scenario(dir.path(), "xid.toml", &text);
    let lib = fake_nvml_lib().display().to_string();
    let env = fast_env(&[("GPUCOST_FAKE_NVML_SCENARIO", scenario)]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let xids = |m: &Metrics| {
        m.get(
            "gpucost_gpu_xid_errors_total",
            &[("gpu", "0"), ("xid", "79")],
        )
        .unwrap_or(0.0)
    };
    let idle_s = |m: &Metrics| {
        m.get(
            "gpucost_gpu_throttled_seconds_total",
            &[("gpu", "1"), ("reason", "low_utilization")],
        )
        .unwrap_or(0.0)
    };

    let mut first = Agent::start_in(dir.path(), &["--nvml-lib", &lib], &env);
    let m = first.wait_for_metrics("Xid 79 and idle time", Duration::from_secs(10), |m| {
        xids(m) == 1.0 && idle_s(m) >= 0.5
    });
    // /metrics shows what is in the ledger: a kill -9 loses none of it.
    let (mut last_xids, mut last_idle) = (xids(&m), idle_s(&m));
    first.kill9();

    let mut again = Agent::start_in(dir.path(), &["--nvml-lib", &lib], &env);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = again.metrics();
        let (x, idle) = (xids(&m), idle_s(&m));
        assert!(
            x >= last_xids && idle >= last_idle,
            "a counter went back: Xids {last_xids} -> {x}, idle seconds {last_idle} -> {idle}"
        );
        (last_xids, last_idle) = (x, idle);
        // The second process's own Xid 79 comes on top of the first's.
        if x == 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second Xid never came; last scrape:\n{}",
            m.text
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(again.terminate().success());
}

/// Issue 14, items 1 to 3: the process lists real drivers give.
///
/// GPU 0: an R535.54 driver, whose `_v3` calls write 32-byte entries, with 20 processes (one job
///        of 20 pids), so nvml-wrapper read phantom pids 0 and 4294967295 past the first.
/// GPU 1: a busy job and an idle one holding 40 GB; a utilization sample arrives between a size
///        query and the read after it.
/// GPU 2: a graphics process, a compute+graphics one and an MPS client; nothing computes alone.
const ISSUE_14_PROCESSES: &str = r#"
name = "issue-14-processes"
duration_s = 3600
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
process_utilization_race = true
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[job]]
name = "many"
pid = 3140000
worker_pids = [3140001, 3140002, 3140003, 3140004, 3140005, 3140006, 3140007, 3140008, 3140009, 3140010, 3140011, 3140012, 3140013, 3140014, 3140015, 3140016, 3140017, 3140018, 3140019]
gpus = [0]
[[job.phase]]
seconds = 3600
utilization = 0.9
power_w = 600
memory_mib = 30000
[[job]]
name = "busy"
pid = 3140101
gpus = [1]
[[job.phase]]
seconds = 3600
utilization = 0.8
power_w = 500
memory_mib = 1000
[[job]]
name = "idle"
pid = 3140102
gpus = [1]
[[job.phase]]
seconds = 3600
utilization = 0.0
power_w = 80
memory_mib = 40000
[[job]]
name = "render"
pid = 3140201
gpus = [2]
context = "graphics"
[[job.phase]]
seconds = 3600
utilization = 0.3
power_w = 200
memory_mib = 2000
[[job]]
name = "viz"
pid = 3140202
gpus = [2]
context = "compute_graphics"
[[job.phase]]
seconds = 3600
utilization = 0.2
power_w = 150
memory_mib = 3000
[[job]]
name = "mps-client"
pid = 3140203
gpus = [2]
context = "mps"
[[job.phase]]
seconds = 3600
utilization = 0.1
power_w = 100
memory_mib = 4000
"#;

#[test]
fn issue_14_process_lists_as_real_drivers_give_them() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "processes.toml", ISSUE_14_PROCESSES);
    // The library as a current driver ships it, and as R535.54 did: without the detail list.
    let old = fake_nvml_lib_without(dir.path(), "nvmlDeviceGetRunningProcessDetailList");
    for lib in [fake_nvml_lib().to_path_buf(), old] {
        let lib = lib.display().to_string();
        // Process lists every 500 ms: each read then finds new utilization samples (the driver
        // takes them every 1/6 s).
        let env = [
            ("GPUCOST_SAMPLING_INTERVAL", "100ms".to_string()),
            ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "500ms".to_string()),
            ("GPUCOST_FAKE_NVML_SCENARIO", scenario.clone()),
        ];
        let mut agent = start(&["--nvml-lib", &lib], &env);
        let processes = |m: &Metrics, gpu| m.gpu("gpucost_gpu_compute_processes", gpu);
        let job = |pid: u32| format!("unattributed:{pid}");
        // Jobs are published once the ledger has them: wait for one that every version finds.
        let m = agent.wait_for_metrics("process lists and jobs", Duration::from_secs(10), |m| {
            processes(m, 0).is_some()
                && processes(m, 1).is_some()
                && processes(m, 2).is_some()
                && m.get("gpucost_job_info", &[("job_id", &job(3140101))])
                    .is_some()
        });
        promtool_check_metrics(&m.text);
        // Item 1: twenty real processes, no phantom pid.
        assert_eq!(processes(&m, 0), Some(20.0), "{lib}");
        for pid in 3140000..3140020 {
            assert!(
                m.get("gpucost_job_info", &[("job_id", &job(pid))])
                    .is_some(),
                "{lib}: pid {pid} missing\n{}",
                m.text
            );
        }
        for phantom in [0, u32::MAX] {
            assert!(
                m.find("gpucost_job_info", &[("job_id", &job(phantom))])
                    .is_empty(),
                "{lib}: phantom job {phantom}"
            );
        }
        // Item 3: graphics contexts and MPS clients are users of the GPU too.
        assert_eq!(processes(&m, 2), Some(3.0), "{lib}");
        for pid in [3140201, 3140202, 3140203] {
            assert!(
                m.get("gpucost_job_info", &[("job_id", &job(pid))])
                    .is_some(),
                "{lib}: pid {pid} missing"
            );
        }
        // Item 2: the idle job holding 40 GB gets none of the GPU while the other computes,
        // and the per-process utilization never failed (a quiet window is no error, and the
        // sample that arrives between the calls fits).
        assert_eq!(processes(&m, 1), Some(2.0), "{lib}");
        let seconds = |m: &Metrics, pid| {
            m.get("gpucost_job_gpu_seconds_total", &[("job_id", &job(pid))])
                .unwrap_or(0.0)
        };
        let m = agent.wait_for_metrics("GPU seconds", Duration::from_secs(10), |m| {
            seconds(m, 3140101) >= 1.0
        });
        assert_eq!(seconds(&m, 3140102), 0.0, "{lib}:\n{}", m.text);
        let errors: Vec<_> = m
            .find("gpucost_agent_sample_errors_total", &[])
            .into_iter()
            .filter(|s| s.labels["field"].starts_with("process"))
            .collect();
        assert!(errors.is_empty(), "{lib}: {errors:?}");
        assert!(agent.terminate().success());
    }
}

/// Issue 14, item 8: the Xid listener survives what real drivers do, at 10 scenario seconds
/// per wall second.
///
/// GPU 0: registering it for events fails with UNKNOWN (its set "in undefined state").
/// GPU 1: supports ECC and "GPU unavailable" events too; Xid 999 (an Xid the driver does not
///        know) and a double-bit ECC error at 1 s (wall); waits fail at once with UNKNOWN from
///        2 s to 3 s; Xid 31 at 4 s, after the listener started over.
/// GPU 2: falls off the bus with Xid 79 at 1.5 s (waits then answer GPU_IS_LOST at once), is
///        back at 5 s; Xid 94 at 8 s, after it was registered again.
const ISSUE_14_EVENTS: &str = r#"
name = "issue-14-events"
duration_s = 3600
speed = 10
ripple = 0.0
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
events = ["xid", "ecc_single_bit", "ecc_double_bit", "gpu_unavailable"]
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[event]]
at_s = 10
gpu = 1
kind = "xid"
xid = 999
[[event]]
at_s = 10
gpu = 1
kind = "ecc_double_bit"
[[event]]
at_s = 20
gpu = 1
kind = "event_wait_error"
seconds = 10
[[event]]
at_s = 40
gpu = 1
kind = "xid"
xid = 31
[[event]]
at_s = 15
gpu = 2
kind = "xid"
xid = 79
[[event]]
at_s = 15
gpu = 2
kind = "gpu_lost"
[[event]]
at_s = 50
gpu = 2
kind = "gpu_recovered"
[[event]]
at_s = 80
gpu = 2
kind = "xid"
xid = 94
"#;

#[test]
fn issue_14_the_xid_listener_survives_registration_and_wait_failures() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "events.toml", ISSUE_14_EVENTS);
    let lib = fake_nvml_lib().display().to_string();
    let mut agent = start(
        &["--nvml-lib", &lib],
        &fast_env(&[("GPUCOST_FAKE_NVML_SCENARIO", scenario)]),
    );
    let up = |m: &Metrics| m.get("gpucost_xid_listener_up", &[]);
    let xids = |m: &Metrics, gpu: &str, xid: &str| {
        m.get(
            "gpucost_gpu_xid_errors_total",
            &[("gpu", gpu), ("xid", xid)],
        )
        .unwrap_or(0.0)
    };
    let event = |m: &Metrics, gpu: &str, event: &str| {
        m.get(
            "gpucost_gpu_driver_events_total",
            &[("gpu", gpu), ("event", event)],
        )
        .unwrap_or(0.0)
    };
    // One GPU that cannot be registered leaves the others watched.
    let m = agent.wait_for_metrics("the listener up", Duration::from_secs(5), |m| {
        up(m) == Some(1.0)
    });
    promtool_check_metrics(&m.text);
    // Xid 999 is counted as such, and the ECC error as a driver event.
    agent.wait_for_metrics("Xid 999 and the ECC error", Duration::from_secs(5), |m| {
        xids(m, "1", "999") == 1.0 && event(m, "1", "ecc_double_bit") == 1.0
    });
    // The lost GPU's Xid 79 comes, then its loss; the wait answering GPU_IS_LOST again and
    // again makes no spin and stops nothing.
    agent.wait_for_metrics("Xid 79 and the loss", Duration::from_secs(5), |m| {
        xids(m, "2", "79") == 1.0 && event(m, "2", "gpu_lost") == 1.0
    });
    // The failing waits take the listener down, and it starts over.
    agent.wait_for_metrics("the listener down", Duration::from_secs(5), |m| {
        up(m) == Some(0.0)
    });
    let m = agent.wait_for_metrics("Xid 31 after the restart", Duration::from_secs(10), |m| {
        up(m) == Some(1.0) && xids(m, "1", "31") == 1.0
    });
    assert_eq!(event(&m, "2", "gpu_lost"), 1.0, "one loss, counted once");
    // The GPU that came back is watched again.
    let m = agent.wait_for_metrics(
        "Xid 94 after the GPU came back",
        Duration::from_secs(10),
        |m| xids(m, "2", "94") == 1.0,
    );
    promtool_check_metrics(&m.text);
    assert_eq!(xids(&m, "1", "999"), 1.0);
    assert_eq!(event(&m, "1", "ecc_double_bit"), 1.0);
    agent.wait_for_log("starting over", Duration::from_secs(1));
    assert!(agent.terminate().success());
}

#[test]
fn bench_without_a_gpu_says_so_in_one_line_and_fails() {
    for args in [
        &["bench"][..],
        &["bench", "--json", "--quick"],
        &["bench", "--gpu", "0"],
    ] {
        let out = Command::new(agent_bin())
            .args(args)
            .env("LD_LIBRARY_PATH", "/nonexistent")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("no GPU to benchmark") && err.contains("libcuda"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
}

/// Three FP32 jobs on H100s through the fake NVML library: GPU 0's tensor metrics fail, GPU 1
/// reads every pipe, GPU 2 answers NO_PERMISSION to GPM (profiling restricted to admins).
const PIPES: &str = r#"
name = "pipes"
duration_s = 3600
ripple = 0.0
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
gpm_unknown_pipes = ["tensor_active", "hmma_active"]
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
gpm_no_permission = true
[[job]]
name = "unknown-tensor"
pid = 3100001
gpus = [0]
[[job.phase]]
seconds = 3600
utilization = 0.9
power_w = 400
memory_mib = 1000
precision = "fp32"
[[job]]
name = "known"
pid = 3100002
gpus = [1]
[[job.phase]]
seconds = 3600
utilization = 0.9
power_w = 400
memory_mib = 1000
precision = "fp32"
[[job]]
name = "denied"
pid = 3100003
gpus = [2]
[[job.phase]]
seconds = 3600
utilization = 0.9
power_w = 400
memory_mib = 1000
precision = "fp32"
"#;

/// Issue 14, item 7: an unknown GPM value is not a zero. A failed tensor metric next to a busy
/// FP32 pipe made the GPU "FP32-bound" and most of its cost `fp32` waste; now that pipe is not
/// exported, and no MFU and no FP32 verdict come from it. NO_PERMISSION answers are said once,
/// with the fix, and GPM is left alone after a few.
#[test]
fn issue_14_unknown_gpm_pipes_give_no_waste_verdict_and_no_permission_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "pipes.toml", PIPES);
    let lib = fake_nvml_lib().display().to_string();
    let mut agent = start(
        &["--nvml-lib", &lib],
        &fast_env(&[
            ("GPUCOST_FAKE_NVML_SCENARIO", scenario),
            ("GPUCOST_LEDGER_PERSIST_INTERVAL", "100ms".into()),
        ]),
    );
    let fp32_waste = |m: &Metrics, pid: &str| {
        m.get(
            "gpucost_job_wasted_cost_total",
            &[
                ("job_id", &format!("unattributed:{pid}")),
                ("reason", "fp32"),
            ],
        )
    };
    // (A GPM read less than 100 ms after the last one has no pipes: wait for one that has.)
    let read = |m: &Metrics, gpu: &str| {
        m.get(
            "gpucost_gpu_pipe_active_ratio",
            &[("gpu", gpu), ("pipe", "fp32")],
        )
        .is_some()
    };
    let m = agent.wait_for_metrics(
        "FP32 waste counted on the GPU that reads every pipe, and 20 samples",
        Duration::from_secs(20),
        |m| {
            fp32_waste(m, "3100002").unwrap_or(0.0) > 0.0
                && samples_at_least(20.0)(m)
                && read(m, "0")
                && read(m, "1")
        },
    );
    promtool_check_metrics(&m.text);
    let pipe = |gpu: &str, pipe: &str| {
        m.get(
            "gpucost_gpu_pipe_active_ratio",
            &[("gpu", gpu), ("pipe", pipe)],
        )
    };
    // GPU 0: the failed metrics are absent, the others read.
    assert_eq!(pipe("0", "tensor"), None);
    assert_eq!(pipe("0", "hmma"), None);
    let fp32 = pipe("0", "fp32").expect("FP32 is read");
    assert!((fp32 - 0.9 * 0.65).abs() < 1e-3, "FP32 pipe {fp32}");
    assert_eq!(pipe("1", "tensor"), Some(0.0));
    // No verdict and no MFU from the unknown tensor pipe; the control GPU has both.
    assert_eq!(fp32_waste(&m, "3100001").unwrap_or(0.0), 0.0);
    let mfu = |pid: &str| {
        m.get(
            "gpucost_job_mfu_ratio",
            &[
                ("job_id", &format!("unattributed:{pid}")),
                ("source", "counters"),
            ],
        )
    };
    assert_eq!(mfu("3100001"), None);
    assert!(mfu("3100002").unwrap() > 0.0);
    // GPU 2: no pipes, three NO_PERMISSION answers counted, then GPM is left alone.
    assert!(m
        .find("gpucost_gpu_pipe_active_ratio", &[("gpu", "2")])
        .is_empty());
    assert_eq!(
        m.get(
            "gpucost_agent_sample_errors_total",
            &[("gpu", "2"), ("field", "pipe_activity"), ("kind", "failed")]
        ),
        Some(3.0)
    );
    assert_eq!(fp32_waste(&m, "3100003").unwrap_or(0.0), 0.0);
    let fix = agent
        .logs()
        .iter()
        .filter(|l| l.contains("NVreg_RestrictProfilingToAdminUsers=0"))
        .count();
    assert_eq!(fix, 1, "said once, with the fix: {:#?}", agent.logs());
    assert!(agent.terminate().success());
}

/// At 10x, repeating every wall second: GPU 0's job sits at its power cap 20% of each second,
/// GPU 1 idles on a driver whose violation counters come only from the deprecated call, GPU 2
/// sits at its cap all the time with no violation counter at all (the bits count).
const THROTTLE: &str = r#"
name = "throttle"
duration_s = 10
repeat = true
speed = 10
ripple = 0.0
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
violation_fields = false
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
violation_fields = false
violation_status = false
[[job]]
name = "bursts"
pid = 3200001
gpus = [0]
[[job.phase]]
seconds = 2
utilization = 1.0
power_w = 700
memory_mib = 1000
[[job.phase]]
seconds = 8
utilization = 1.0
power_w = 300
memory_mib = 1000
[[job]]
name = "capped"
pid = 3200002
gpus = [2]
[[job.phase]]
seconds = 10
utilization = 1.0
power_w = 700
memory_mib = 1000
"#;

/// Issue 14, item 9: throttle seconds come from NVML's violation counters where the GPU has
/// them. Sampled once a second, a power cap held 200 ms of every second was a coin toss for
/// the clock-event bits (0 or the whole second); the counters give 20%. An idle GPU's clocks
/// are held low for low utilization, never "gpu_idle" throttling; the deprecated call stands in
/// for missing fields, and the bits for missing counters.
#[test]
fn issue_14_throttle_seconds_come_from_the_violation_counters() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "throttle.toml", THROTTLE);
    let lib = fake_nvml_lib().display().to_string();
    let mut agent = start(
        &["--nvml-lib", &lib],
        &[
            ("GPUCOST_SAMPLING_INTERVAL", "1s".to_string()),
            ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "1s".to_string()),
            ("GPUCOST_LEDGER_PERSIST_INTERVAL", "100ms".to_string()),
            ("GPUCOST_FAKE_NVML_SCENARIO", scenario),
        ],
    );
    let held = |m: &Metrics, pid: &str| {
        m.get(
            "gpucost_job_gpu_seconds_total",
            &[("job_id", &format!("unattributed:{pid}"))],
        )
        .unwrap_or(0.0)
    };
    let m = agent.wait_for_metrics(
        "five seconds of the bursty job",
        Duration::from_secs(20),
        |m| held(m, "3200001") >= 5.0,
    );
    promtool_check_metrics(&m.text);
    let throttled = |gpu: &str, reason: &str| {
        m.get(
            "gpucost_gpu_throttled_seconds_total",
            &[("gpu", gpu), ("reason", reason)],
        )
        .unwrap()
    };
    let share = throttled("0", "sw_power_cap") / held(&m, "3200001");
    assert!(
        (0.12..=0.28).contains(&share),
        "power cap {share} of the time"
    );
    assert_eq!(throttled("0", "low_utilization"), 0.0);
    // GPU 1, idle: through the deprecated call, all of its time.
    let idle = m.gpu("gpucost_gpu_unallocated_seconds_total", 1).unwrap();
    let low = throttled("1", "low_utilization");
    assert!(
        idle > 3.0 && (low / idle - 1.0).abs() < 0.1,
        "{low} of {idle} s"
    );
    assert_eq!(throttled("1", "sw_power_cap"), 0.0);
    // GPU 2: no counter, the bit at each sample.
    let capped = throttled("2", "sw_power_cap") / held(&m, "3200002");
    assert!((capped - 1.0).abs() < 0.05, "capped {capped} of the time");
    assert!(m
        .find(
            "gpucost_gpu_throttled_seconds_total",
            &[("reason", "gpu_idle")]
        )
        .is_empty());
    assert!(agent.terminate().success());
}

/// At 10x: GPU 0's job is busy for one 0.2 s utilization period of the driver and idle for the
/// next, over and over; the agent reads once a second (five periods).
fn bursty_scenario() -> String {
    let mut text = String::from(
        r#"
name = "bursty"
duration_s = 3600
speed = 10
ripple = 0.0
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
utilization_period_s = 0.2
[[job]]
name = "bursty"
pid = 3300001
gpus = [0]
"#,
    );
    for _ in 0..900 {
        for utilization in [1.0, 0.0] {
            text.push_str(&format!(
                "[[job.phase]]\nseconds = 2\nutilization = {utilization}\npower_w = 400\nmemory_mib = 1000\n"
            ));
        }
    }
    text
}

/// Issue 14, item 10: utilization is the driver's samples averaged over each interval. The
/// last period alone (nvmlDeviceGetUtilizationRates) is all or nothing for this job, so reads
/// a whole number of periods apart made it idle half of its time, or never; averaged, it is
/// about half busy in every interval, and never idle.
#[test]
fn issue_14_bursty_utilization_is_averaged_over_each_interval() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "bursty.toml", &bursty_scenario());
    let lib = fake_nvml_lib().display().to_string();
    let mut agent = start(
        &["--nvml-lib", &lib],
        &[
            ("GPUCOST_SAMPLING_INTERVAL", "1s".to_string()),
            ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "1s".to_string()),
            ("GPUCOST_LEDGER_PERSIST_INTERVAL", "100ms".to_string()),
            ("GPUCOST_FAKE_NVML_SCENARIO", scenario),
        ],
    );
    let id = [("job_id", "unattributed:3300001")];
    let seen = std::cell::RefCell::new(Vec::new());
    let m = agent.wait_for_metrics("five seconds of the job", Duration::from_secs(20), |m| {
        let u = m.gpu("gpucost_gpu_utilization_ratio", 0);
        if u.is_some() && seen.borrow().last() != u.as_ref() {
            seen.borrow_mut().extend(u);
        }
        m.get("gpucost_job_gpu_seconds_total", &id).unwrap_or(0.0) >= 5.0
    });
    let seen = seen.into_inner();
    let held = m.get("gpucost_job_gpu_seconds_total", &id).unwrap();
    let idle = m.get("gpucost_job_idle_gpu_seconds_total", &id).unwrap();
    assert_eq!(idle, 0.0, "idle {idle} of {held} s");
    // After the first reading, every interval is about half busy.
    let later: Vec<f64> = seen.iter().copied().skip(2).collect();
    assert!(
        later.iter().all(|u| (0.3..=0.7).contains(u)),
        "utilization per interval: {seen:?}"
    );
    assert!(agent.terminate().success());
}

/// Where nvml.h deprecates a call in CUDA 13, the agent calls the replacement where the driver
/// has it and the deprecated call where it does not: the same readings either way, no errors.
#[test]
fn replacements_of_deprecated_calls_and_their_fallbacks_read_the_same() {
    for deprecated_only in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let text = STEADY.replace(
            "ripple = 0.0",
            &format!("ripple = 0.0\ndeprecated_calls_only = {deprecated_only}"),
        );
        let scenario = write_scenario(dir.path(), "steady.toml", &text);
        let lib = fake_nvml_lib().display().to_string();
        let mut agent = start(
            &["--nvml-lib", &lib],
            &fast_env(&[("GPUCOST_FAKE_NVML_SCENARIO", scenario)]),
        );
        let m = agent.wait_for_metrics("samples", Duration::from_secs(10), samples_at_least(3.0));
        // 70 W idle to 700 W adds 42 °C to 32 °C: 300 W is 47 °C.
        assert_eq!(m.gpu("gpucost_gpu_temperature_celsius", 0), Some(47.0));
        assert_eq!(m.gpu("gpucost_gpu_temperature_celsius", 1), Some(32.0));
        assert!(
            m.find("gpucost_agent_sample_errors_total", &[]).is_empty(),
            "deprecated calls only: {deprecated_only}\n{}",
            m.text
        );
        assert!(agent.terminate().success());
    }
}

/// Issue 14, item 6: a GPU that cannot be read for two seconds comes back with an energy
/// counter that kept counting; its delta covers the outage, and is kept rather than taken for a
/// reset (the interval that closes the outage is one 100 ms cycle long).
#[test]
fn issue_14_energy_used_during_an_outage_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let text = STEADY.replace("power_w = 300", "power_w = 600")
        + "[[event]]\nat_s = 2\ngpu = 0\nkind = \"gpu_lost\"\n\
           [[event]]\nat_s = 4\ngpu = 0\nkind = \"gpu_recovered\"\n";
    let scenario = write_scenario(dir.path(), "outage.toml", &text);
    let lib = fake_nvml_lib().display().to_string();
    let mut agent = start(
        &["--nvml-lib", &lib],
        &fast_env(&[
            ("GPUCOST_FAKE_NVML_SCENARIO", scenario),
            ("GPUCOST_LEDGER_PERSIST_INTERVAL", "100ms".into()),
        ]),
    );
    let energy = |m: &Metrics| m.gpu("gpucost_gpu_energy_joules_total", 0).unwrap_or(0.0);
    let before = agent.wait_for_metrics("energy counted", Duration::from_secs(10), |m| {
        energy(m) > 0.0 && m.gpu("gpucost_gpu_up", 0) == Some(1.0)
    });
    let (e0, t0) = (energy(&before), Instant::now());
    agent.wait_for_metrics("GPU 0 lost", Duration::from_secs(10), |m| {
        m.gpu("gpucost_gpu_up", 0) == Some(0.0)
    });
    let after = agent.wait_for_metrics("GPU 0 back", Duration::from_secs(10), |m| {
        m.gpu("gpucost_gpu_up", 0) == Some(1.0) && energy(m) > e0
    });
    std::thread::sleep(Duration::from_millis(500));
    let end = agent.metrics();
    let watts = (energy(&end) - e0) / t0.elapsed().as_secs_f64();
    assert!(
        (540.0..=660.0).contains(&watts),
        "{watts} W over the outage for a 600 W GPU"
    );
    assert_eq!(
        after.gpu("gpucost_gpu_energy_resets_total", 0),
        Some(0.0),
        "the outage is no reset"
    );
    assert!(agent.terminate().success());
}

/// Issue 14, item 12: what a sampling cycle asks of the driver, counted by the fake library
/// (`GPUCOST_FAKE_NVML_CALLS`). Per GPU and cycle: a handle, memory, one batch of field values
/// (power, violation counters), energy, the utilization samples (count and fetch), SM clock,
/// temperature, clock-event reasons, a GPM sample into a reused buffer and its metrics; the
/// power limit once a minute, GPM buffers allocated once. Process lists come on their own
/// cadence and the Xid listener on its own thread; neither is counted here.
#[test]
fn a_sampling_cycle_makes_at_most_eleven_nvml_calls_per_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "steady.toml", STEADY);
    let calls = dir.path().join("calls.txt");
    let lib = fake_nvml_lib().display().to_string();
    let mut agent = start(
        &["--nvml-lib", &lib],
        &fast_env(&[
            ("GPUCOST_FAKE_NVML_SCENARIO", scenario),
            ("GPUCOST_FAKE_NVML_CALLS", calls.display().to_string()),
        ]),
    );
    let m = agent.wait_for_metrics(
        "some samples",
        Duration::from_secs(10),
        samples_at_least(20.0),
    );
    let gpus = m.find("gpucost_gpu_info", &[]).len() as f64;
    assert!(agent.terminate().success());
    // The cycles the counts cover: the last scrape's and the few until the agent stopped.
    let cycles = m.get("gpucost_agent_samples_total", &[]).unwrap();
    let text = std::fs::read_to_string(&calls).unwrap();
    let count = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map_or(0.0, |n| n.parse::<f64>().unwrap())
    };
    let per_cycle = [
        "nvmlDeviceGetHandleByIndex_v2",
        "nvmlDeviceGetMemoryInfo_v2",
        "nvmlDeviceGetFieldValues",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetViolationStatus",
        "nvmlDeviceGetSamples",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetClockInfo",
        "nvmlDeviceGetTemperatureV",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetCurrentClocksThrottleReasons",
        "nvmlGpmSampleAlloc",
        "nvmlGpmSampleGet",
        "nvmlGpmMetricsGet",
        "nvmlGpmSampleFree",
    ];
    let total: f64 = per_cycle.iter().map(|n| count(n)).sum();
    let rate = total / (gpus * cycles);
    eprintln!(
        "{total} calls over {cycles} cycles and {gpus} GPUs: {rate:.2} per GPU per cycle\n{text}"
    );
    // A cycle or two may run between the scrape and the stop: a little slack for those.
    assert!(
        rate <= 11.0 * (cycles + 3.0) / cycles,
        "{rate:.2} calls per GPU per cycle"
    );
    assert!(
        count("nvmlGpmSampleAlloc") <= 2.0 * gpus,
        "GPM buffers are reused"
    );
    assert!(
        count("nvmlDeviceGetEnforcedPowerLimit") <= gpus,
        "the limit is read once a minute"
    );
}
