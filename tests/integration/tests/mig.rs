//! Issue 15: MIG GPU instances billed as units of their own, through the real `gpucost agent`
//! on the real NVML code path (the fake `libnvidia-ml.so`) and on the simulated node: the
//! shipped `sim/scenarios/mig.toml` (mig-a on a busy 3g.40gb, mig-b on a busy 2g.20gb, a
//! 2g.20gb nobody uses), and a GPU switched into MIG mode while the agent runs.

use std::path::PathBuf;
use std::time::Duration;

use gpucost_integration_tests::{
    fake_nvml_lib, promtool_check_metrics, write_scenario, Agent, Metrics,
};

fn mig_scenario() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../sim/scenarios/mig.toml")
        .display()
        .to_string()
}

/// The parent H100 of `mig.toml` and its instances' UUIDs.
const PARENT: &str = "GPU-5133d5e1-5fa5-4c35-9d0e-00000000a100";
const MIG_B: &str = "MIG-5133d5e1-5fa5-4c35-9d0e-0000000a0002";

fn cost(m: &Metrics, job: &str) -> f64 {
    m.find("gpucost_job_cost_total", &[("job_id", job)])
        .iter()
        .map(|s| s.value)
        .sum()
}

fn job(m: &Metrics, name: &str, job: &str) -> f64 {
    m.get(name, &[("job_id", job)]).unwrap_or(0.0)
}

fn gpu(m: &Metrics, name: &str, gpu: &str) -> Option<f64> {
    m.get(name, &[("gpu", gpu)])
}

/// A job map naming instance 1 by its unit index (the `gpu` label) and instance 2 by its
/// `MIG-...` UUID, as a Slurm prolog writes it.
fn job_map(dir: &std::path::Path, entries: &[(&str, &str)]) -> String {
    let map = dir.join("job-map");
    std::fs::create_dir_all(&map).unwrap();
    for (gpu, job) in entries {
        std::fs::write(map.join(gpu), format!("{job}\n")).unwrap();
    }
    map.display().to_string()
}

fn env<'a>(extra: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    [
        ("GPUCOST_SAMPLING_INTERVAL", "100ms"),
        ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "100ms"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect()
}

/// What both ways of running `mig.toml` must show.
fn check_slice_billing(m: &Metrics) {
    promtool_check_metrics(&m.text);
    // The parent is billed only through its instances.
    assert!(gpu(m, "gpucost_gpu_up", "0").is_none(), "{}", m.text);
    let info = m.find("gpucost_gpu_info", &[("gpu", "1001")]);
    assert_eq!(info.len(), 1, "{}", m.text);
    let l = &info[0].labels;
    assert_eq!(l["uuid"], "MIG-5133d5e1-5fa5-4c35-9d0e-0000000a0001");
    assert_eq!(l["parent_uuid"], PARENT);
    assert_eq!(l["parent_gpu"], "0");
    assert_eq!(l["gpu_instance_id"], "1");
    assert_eq!(l["mig_profile"], "3g.40gb");
    assert_eq!(
        (l["mig_slices"].as_str(), l["parent_slices"].as_str()),
        ("3", "7")
    );
    let l3 = &m.find("gpucost_gpu_info", &[("gpu", "1003")])[0].labels;
    assert_eq!(l3["mig_profile"], "2g.20gb");

    // Cost of mig-a over cost of mig-b: their slices, 3/2.
    let (a, b) = (cost(m, "mig-a"), cost(m, "mig-b"));
    assert!(a > 0.0 && b > 0.0, "{}", m.text);
    assert!(
        (a / b - 1.5).abs() < 0.05,
        "mig-a {a} / mig-b {b} = {}",
        a / b
    );
    let (ea, eb) = (
        job(m, "gpucost_job_energy_joules_total", "mig-a"),
        job(m, "gpucost_job_energy_joules_total", "mig-b"),
    );
    assert!((ea / eb - 1.5).abs() < 0.05, "energy {ea} / {eb}");
    // The board draws 450 W: each instance its slices of it.
    let p1 = gpu(m, "gpucost_gpu_power_watts", "1001").unwrap();
    assert!((p1 - 450.0 * 3.0 / 7.0).abs() < 0.5, "{p1}");
    // Busy instances are not idle; the unused one is idle and unallocated all along.
    assert_eq!(job(m, "gpucost_job_idle_gpu_seconds_total", "mig-a"), 0.0);
    assert_eq!(
        gpu(m, "gpucost_gpu_unallocated_seconds_total", "1001"),
        Some(0.0)
    );
    assert_eq!(
        gpu(m, "gpucost_gpu_unallocated_seconds_total", "1002"),
        Some(0.0)
    );
    let unused = gpu(m, "gpucost_gpu_unallocated_seconds_total", "1003").unwrap();
    assert!(unused > 0.5, "{unused}");
    let idle = gpu(m, "gpucost_gpu_idle_seconds_total", "1003").unwrap();
    assert!(
        idle > 0.0 && idle <= unused + 1e-9,
        "{idle} idle of {unused}"
    );
    // Each instance's own memory; no utilization series (NVML has none on MIG).
    assert_eq!(
        gpu(m, "gpucost_gpu_memory_used_bytes", "1001"),
        Some(30000.0 * 1048576.0)
    );
    assert!(gpu(m, "gpucost_gpu_utilization_ratio", "1001").is_none());
    // Its peak is its slices' share of the H100's.
    let peak = |g: &str| {
        m.get(
            "gpucost_gpu_peak_flops",
            &[("gpu", g), ("precision", "bf16")],
        )
        .unwrap()
    };
    assert!((peak("1001") / peak("1002") - 1.5).abs() < 1e-9);
}

/// `/api/v1/gpus` says what each instance is.
fn check_api(agent: &Agent) {
    let (status, body) = agent.get("/api/v1/gpus");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let gpus = v["gpus"].as_array().unwrap();
    let mig: Vec<_> = gpus
        .iter()
        .map(|g| {
            (
                g["index"].as_u64().unwrap(),
                g["mig"]["profile"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        mig,
        [(1001, "3g.40gb"), (1002, "2g.20gb"), (1003, "2g.20gb")]
    );
    assert_eq!(gpus[0]["mig"]["parent_uuid"], PARENT);
    assert_eq!(gpus[0]["mig"]["slices"], 3);
}

fn billed_long_enough(m: &Metrics) -> bool {
    job(m, "gpucost_job_gpu_seconds_total", "mig-b") > 2.0
        && m.get("gpucost_gpu_unallocated_seconds_total", &[("gpu", "1003")])
            .is_some_and(|s| s > 2.0)
}

#[test]
fn issue_15_mig_slices_billed_through_fake_nvml() {
    let dir = tempfile::tempdir().unwrap();
    let map = job_map(dir.path(), &[("1001", "mig-a"), (MIG_B, "mig-b")]);
    let lib = fake_nvml_lib().display().to_string();
    let scenario = mig_scenario();
    let mut agent = Agent::start(
        &["--nvml-lib", &lib],
        &env(&[
            ("GPUCOST_FAKE_NVML_SCENARIO", &scenario),
            ("GPUCOST_ATTRIBUTION_JOB_MAP_DIR", &map),
        ]),
    );
    let m = agent.wait_for_metrics(
        "mig-a and mig-b billed",
        Duration::from_secs(30),
        billed_long_enough,
    );
    check_slice_billing(&m);
    check_api(&agent);
    assert!(agent.terminate().success());
}

#[test]
fn issue_15_mig_slices_billed_on_the_simulated_node() {
    let scenario = mig_scenario();
    let mut agent = Agent::start(&["--simulate", &scenario], &env(&[]));
    let m = agent.wait_for_metrics(
        "mig-a and mig-b billed",
        Duration::from_secs(30),
        billed_long_enough,
    );
    check_slice_billing(&m);
    assert!(agent.terminate().success());
}

/// GPU 0 runs job `whole` as a whole GPU until 1000 s, when it is switched into MIG mode with a
/// 3g.40gb (instance 1, job mig-a) and a 4g.40gb (instance 2, job mig-b); the board draws
/// 450 W throughout. The agent starts at 996 s.
const SWITCH: &str = r#"
name = "mig-switch"
duration_s = 2000
ripple = 0.0
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
uuid = "GPU-5133d5e1-5fa5-4c35-9d0e-00000000b100"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
initial_energy_j = 1000000
[[gpu.mig_instance]]
profile = "3g.40gb"
[[gpu.mig_instance]]
profile = "4g.40gb"
[[event]]
at_s = 1000
gpu = 0
kind = "mig_enable"
[[job]]
name = "whole"
pid = 62000
gpus = [0]
[[job.phase]]
seconds = 1000
utilization = 0.9
power_w = 450
memory_mib = 20000
precision = "bf16"
[[job]]
name = "mig-a"
pid = 62001
gpus = [0]
gpu_instance = 1
start_s = 1000
[[job.phase]]
seconds = 1000
utilization = 0.9
power_w = 250
memory_mib = 20000
precision = "bf16"
[[job]]
name = "mig-b"
pid = 62002
gpus = [0]
gpu_instance = 2
start_s = 1000
[[job.phase]]
seconds = 1000
utilization = 0.9
power_w = 270
memory_mib = 20000
precision = "bf16"
"#;

#[test]
fn issue_15_a_gpu_switched_into_mig_mode_while_the_agent_runs() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "switch.toml", SWITCH);
    let map = job_map(
        dir.path(),
        &[("0", "whole"), ("1001", "mig-a"), ("1002", "mig-b")],
    );
    let lib = fake_nvml_lib().display().to_string();
    let start = format!("{}", unix_now_s() - 996.0);
    let mut agent = Agent::start(
        &["--nvml-lib", &lib],
        &env(&[
            ("GPUCOST_FAKE_NVML_SCENARIO", &scenario),
            ("GPUCOST_FAKE_NVML_START_UNIX", &start),
            ("GPUCOST_ATTRIBUTION_JOB_MAP_DIR", &map),
        ]),
    );
    let before = agent.wait_for_metrics("the whole GPU billed", Duration::from_secs(20), |m| {
        job(m, "gpucost_job_gpu_seconds_total", "whole") > 0.5
    });
    assert!(gpu(&before, "gpucost_gpu_up", "0").is_some());
    let m = agent.wait_for_metrics(
        "the instances billed after the switch",
        Duration::from_secs(30),
        |m| job(m, "gpucost_job_gpu_seconds_total", "mig-b") > 3.0,
    );
    promtool_check_metrics(&m.text);
    let parents: Vec<_> = m
        .find("gpucost_gpu_info", &[])
        .iter()
        .map(|s| {
            (
                s.labels["gpu"].clone(),
                s.labels.get("parent_uuid").cloned(),
                s.labels.get("mig_profile").cloned(),
            )
        })
        .collect();
    let parent = Some("GPU-5133d5e1-5fa5-4c35-9d0e-00000000b100".to_string());
    assert_eq!(
        parents,
        [
            ("1001".into(), parent.clone(), Some("3g.40gb".into())),
            ("1002".into(), parent, Some("4g.40gb".into()))
        ]
    );
    // The instances' slices: 3/7 and 4/7 of the board's money and energy.
    let (a, b) = (cost(&m, "mig-a"), cost(&m, "mig-b"));
    assert!((a / b - 0.75).abs() < 0.05, "{a} / {b}");
    // Nothing lost or counted twice across the switch: the jobs' energy over the time the
    // board was measured is the board's constant 450 W. Before the switch the whole GPU's
    // time, after it the instances' (each instance is measured over the same time).
    let energy: f64 = ["whole", "mig-a", "mig-b"]
        .iter()
        .map(|j| job(&m, "gpucost_job_energy_joules_total", j))
        .sum();
    let seconds = job(&m, "gpucost_job_gpu_seconds_total", "whole")
        + (job(&m, "gpucost_job_gpu_seconds_total", "mig-a")
            + job(&m, "gpucost_job_gpu_seconds_total", "mig-b"))
            / 2.0;
    let watts = energy / seconds;
    assert!(
        (watts - 450.0).abs() < 450.0 * 0.03,
        "{energy} J over {seconds} s: {watts} W"
    );
    // The whole GPU's job keeps what it was billed.
    assert!(job(&m, "gpucost_job_energy_joules_total", "whole") > 0.0);
    let logs = agent.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("is now in MIG mode with GPU instances")),
        "{logs:#?}"
    );
    assert!(agent.terminate().success());
}

/// The same switch on the simulated node, 200 times faster: the units are listed anew there
/// too, and the jobs' energy over the board's measured time is its 450 W.
#[test]
fn issue_15_a_simulated_gpu_switched_into_mig_mode() {
    let dir = tempfile::tempdir().unwrap();
    let text = SWITCH
        .replace("ripple = 0.0", "ripple = 0.0\nspeed = 200")
        .replace("name = \"whole\"", "name = \"whole\"\nid = \"whole\"")
        .replace("name = \"mig-a\"", "name = \"mig-a\"\nid = \"mig-a\"")
        .replace("name = \"mig-b\"", "name = \"mig-b\"\nid = \"mig-b\"");
    let scenario = write_scenario(dir.path(), "switch.toml", &text);
    let mut agent = Agent::start(&["--simulate", &scenario], &env(&[]));
    let m = agent.wait_for_metrics(
        "the instances billed after the switch",
        Duration::from_secs(30),
        |m| job(m, "gpucost_job_gpu_seconds_total", "mig-b") > 1.0,
    );
    promtool_check_metrics(&m.text);
    assert!(gpu(&m, "gpucost_gpu_up", "0").is_none(), "{}", m.text);
    assert_eq!(gpu(&m, "gpucost_gpu_up", "1001"), Some(1.0));
    assert!(job(&m, "gpucost_job_gpu_seconds_total", "whole") > 1.0);
    let (a, b) = (cost(&m, "mig-a"), cost(&m, "mig-b"));
    assert!((a / b - 0.75).abs() < 0.05, "{a} / {b}");
    assert!(agent.terminate().success());
}

/// GPU 0 stays in MIG mode while its 4g.40gb (instance 2) is destroyed at 1000 s and two
/// 2g.20gb (instances 3 and 4) are created in its slices; the 3g.40gb (instance 1, job mig-a)
/// runs throughout. The agent starts at 996 s.
const REPARTITION: &str = r#"
name = "mig-repartition"
duration_s = 2000
ripple = 0.0
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
mig = true
[[gpu.mig_instance]]
profile = "3g.40gb"
[[gpu.mig_instance]]
profile = "4g.40gb"
destroyed_at_s = 1000
[[gpu.mig_instance]]
profile = "2g.20gb"
created_at_s = 1000
[[gpu.mig_instance]]
profile = "2g.20gb"
created_at_s = 1000
[[job]]
name = "mig-a"
pid = 63001
gpus = [0]
gpu_instance = 1
[[job.phase]]
seconds = 2000
utilization = 0.9
power_w = 300
memory_mib = 20000
precision = "bf16"
[[job]]
name = "mig-c"
pid = 63003
gpus = [0]
gpu_instance = 3
start_s = 1000
[[job.phase]]
seconds = 1000
utilization = 0.9
power_w = 200
memory_mib = 10000
precision = "bf16"
"#;

#[test]
fn issue_15_mig_instances_created_and_destroyed_while_the_agent_runs() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "repartition.toml", REPARTITION);
    let map = job_map(dir.path(), &[("1001", "mig-a"), ("1003", "mig-c")]);
    let lib = fake_nvml_lib().display().to_string();
    let start = format!("{}", unix_now_s() - 996.0);
    let mut agent = Agent::start(
        &["--nvml-lib", &lib],
        &env(&[
            ("GPUCOST_FAKE_NVML_SCENARIO", &scenario),
            ("GPUCOST_FAKE_NVML_START_UNIX", &start),
            ("GPUCOST_ATTRIBUTION_JOB_MAP_DIR", &map),
        ]),
    );
    let units = |m: &Metrics| -> Vec<String> {
        m.find("gpucost_gpu_info", &[])
            .iter()
            .map(|s| s.labels["gpu"].clone())
            .collect()
    };
    let before = agent.wait_for_metrics("the GPU listed", Duration::from_secs(20), |m| {
        !units(m).is_empty()
    });
    assert_eq!(units(&before), ["1001", "1002"]);
    let m = agent.wait_for_metrics("mig-c billed", Duration::from_secs(30), |m| {
        job(m, "gpucost_job_gpu_seconds_total", "mig-c") > 2.0
    });
    assert_eq!(units(&m), ["1001", "1003", "1004"]);
    // mig-a's instance was never listed anew: it kept being billed throughout.
    let a = job(&m, "gpucost_job_gpu_seconds_total", "mig-a");
    let c = job(&m, "gpucost_job_gpu_seconds_total", "mig-c");
    assert!(a > c + 2.0, "mig-a {a} s, mig-c {c} s");
    assert!(gpu(&m, "gpucost_gpu_unallocated_seconds_total", "1004").unwrap() > 1.0);
    assert!(agent
        .logs()
        .iter()
        .any(|l| l.contains("a GPU instance was created") || l.contains("is gone")));
    assert!(agent.terminate().success());
}

/// GPU 0 is in MIG mode with no GPU instance until one is created at 1000 s: it is billed whole
/// meanwhile, without being listed anew at every check of its mode, and as its instance after.
#[test]
fn issue_15_a_gpu_in_mig_mode_without_instances_until_one_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
name = "mig-empty"
duration_s = 2000
ripple = 0.0
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
mig = true
[[gpu.mig_instance]]
profile = "7g.80gb"
created_at_s = 1000
"#;
    let scenario = write_scenario(dir.path(), "empty.toml", text);
    let lib = fake_nvml_lib().display().to_string();
    let start = format!("{}", unix_now_s() - 997.0);
    let mut agent = Agent::start(
        &["--nvml-lib", &lib],
        &env(&[
            ("GPUCOST_FAKE_NVML_SCENARIO", &scenario),
            ("GPUCOST_FAKE_NVML_START_UNIX", &start),
        ]),
    );
    let reopens = |agent: &Agent| {
        agent
            .logs()
            .iter()
            .filter(|l| l.contains("opening it again to list"))
            .count()
    };
    let before = agent.wait_for_metrics("the whole GPU", Duration::from_secs(20), |m| {
        gpu(m, "gpucost_gpu_unallocated_seconds_total", "0").is_some_and(|s| s > 1.0)
    });
    assert!(gpu(&before, "gpucost_gpu_up", "1001").is_none());
    assert_eq!(reopens(&agent), 0, "{:#?}", agent.logs());
    let after = agent.wait_for_metrics("its instance", Duration::from_secs(20), |m| {
        gpu(m, "gpucost_gpu_up", "1001").is_some()
    });
    assert!(gpu(&after, "gpucost_gpu_up", "0").is_none());
    assert_eq!(reopens(&agent), 1, "{:#?}", agent.logs());
    assert!(agent.terminate().success());
}

/// The kubelet path: pods handed the instances' `MIG-...` ids by the device plugin (served by
/// the fake kubelet's binary) are the instances' jobs, billed by their slices; the unused
/// instance is unallocated.
#[test]
fn issue_15_mig_slices_billed_to_the_pods_holding_them() {
    let dir = tempfile::tempdir().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", "fake-kubelet"])
        .status()
        .unwrap();
    assert!(built.success());
    let kubelet_bin = gpucost_integration_tests::target_dir().join("fake-kubelet");
    let socket = dir.path().join("kubelet.sock");
    let pods = dir.path().join("pods.json");
    std::fs::write(
        &pods,
        r#"[
  {"namespace": "ml", "name": "mig-a", "containers": [
    {"name": "train", "devices": {"nvidia.com/gpu": ["MIG-5133d5e1-5fa5-4c35-9d0e-0000000a0001"]}}]},
  {"namespace": "ml", "name": "mig-b", "containers": [
    {"name": "train", "devices": {"nvidia.com/mig-2g.20gb": ["MIG-5133d5e1-5fa5-4c35-9d0e-0000000a0002"]}}]}
]"#,
    )
    .unwrap();
    let mut kubelet = std::process::Command::new(&kubelet_bin)
        .arg("--socket")
        .arg(&socket)
        .arg("--pods")
        .arg(&pods)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let lib = fake_nvml_lib().display().to_string();
    let scenario = mig_scenario();
    let socket_text = socket.display().to_string();
    let mut agent = Agent::start(
        &["--nvml-lib", &lib],
        &env(&[
            ("GPUCOST_FAKE_NVML_SCENARIO", &scenario),
            ("GPUCOST_ATTRIBUTION_KUBELET_SOCKET", &socket_text),
            (
                "GPUCOST_ATTRIBUTION_KUBELET_RESOURCES",
                "nvidia.com/gpu,nvidia.com/mig-2g.20gb",
            ),
            ("GPUCOST_ATTRIBUTION_KUBELET_INTERVAL", "100ms"),
        ]),
    );
    let m = agent.wait_for_metrics("the pods billed", Duration::from_secs(30), |m| {
        job(m, "gpucost_job_gpu_seconds_total", "ml/mig-b") > 2.0
    });
    let (a, b) = (cost(&m, "ml/mig-a"), cost(&m, "ml/mig-b"));
    assert!((a / b - 1.5).abs() < 0.05, "ml/mig-a {a} / ml/mig-b {b}");
    assert_eq!(
        gpu(&m, "gpucost_gpu_unallocated_seconds_total", "1001"),
        Some(0.0)
    );
    assert!(gpu(&m, "gpucost_gpu_unallocated_seconds_total", "1003").unwrap() > 1.0);
    assert!(agent.terminate().success());
    let _ = kubelet.kill();
    let _ = kubelet.wait();
}

fn unix_now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
