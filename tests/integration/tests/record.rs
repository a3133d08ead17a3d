//! `gpucost agent --record`: a run read through the real NVML adapter (the fake library) is
//! written as a scenario, and the simulated node replays it to the same accounting: the job's
//! energy, GPU time, idle and FP32-bound time, its failure, and the Xid error. The run is real
//! time (the fake library's clock); the replay runs the node `--simulate FILE` builds, in
//! virtual time.

use std::process::Command;
use std::time::{Duration, Instant};

use gpucost::identity::procfs::write_fixture;
use gpucost_core::attribute::process::ProcInfo;
use gpucost_integration_tests::virtual_node::{config, VirtualNode};
use gpucost_integration_tests::{agent_bin, fake_nvml_lib, write_scenario, Agent};

/// One H100; a training job (fp32, then bf16, then idle with its memory held) that fails, and an
/// Xid 13 during its bf16 phase.
const RUN: &str = r#"
name = "record-me"
duration_s = 8
ripple = 0.0
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[job]]
name = "train"
pid = 4242
gpus = [0]
start_s = 0.5
exit_code = 1
[[job.phase]]
seconds = 2
utilization = 0.97
power_w = 420
memory_mib = 30000
precision = "fp32"
[[job.phase]]
seconds = 2
utilization = 0.99
power_w = 610
memory_mib = 30000
precision = "bf16"
[[job.phase]]
seconds = 1.5
utilization = 0
power_w = 95
memory_mib = 30000
precision = "idle"
[[event]]
at_s = 3.5
gpu = 0
kind = "xid"
xid = 13
"#;

const ENV: [(&str, &str); 2] = [
    ("GPUCOST_SAMPLING_INTERVAL", "200ms"),
    ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "200ms"),
];

fn wait_for_outcome(agent: &Agent, id: &str, outcome: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = agent.get(&format!("/api/v1/jobs/{id}"));
        if status == 200 {
            let j: serde_json::Value = serde_json::from_str(&body).unwrap();
            if j["outcome"] == outcome {
                return j;
            }
        }
        assert!(Instant::now() < deadline, "job {id} not {outcome}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn usage(j: &serde_json::Value, field: &str) -> f64 {
    j["usage"][field]
        .as_f64()
        .unwrap_or_else(|| panic!("no usage.{field} in {j}"))
}

#[test]
fn a_recorded_run_replays_to_the_same_accounting() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "run.toml", RUN);
    let recording = dir.path().join("recorded.toml");
    let recording = recording.to_str().unwrap();

    // The run: the real NVML adapter on the fake library. Its process (pid 4242) sits in Slurm
    // job 4711's cgroup in a fake /proc, owned by this test's user, who ends the job as a Slurm
    // epilog would.
    let proc_root = dir.path().join("proc");
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let p = ProcInfo {
        pid: 4242,
        ppid: 1,
        uid,
        comm: "python3".into(),
        start_ticks: 777,
        ..ProcInfo::default()
    };
    write_fixture(
        &proc_root,
        &p,
        "0::/system.slice/slurmstepd.scope/job_4711/step_0\n",
        &[],
    );
    let mut env = ENV.to_vec();
    env.push(("GPUCOST_FAKE_NVML_SCENARIO", scenario.as_str()));
    env.push(("GPUCOST_ATTRIBUTION_PROC_ROOT", proc_root.to_str().unwrap()));
    let mut live = Agent::start(
        &[
            "--nvml-lib",
            fake_nvml_lib().to_str().unwrap(),
            "--record",
            recording,
        ],
        &env,
    );
    let started = Instant::now();
    let hook = |args: &[&str]| {
        let out = Command::new(agent_bin())
            .args(["job"])
            .args(args)
            .arg("--socket")
            .arg(&live.socket)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    // The job's process exits (status 1) at 6 s.
    std::thread::sleep(Duration::from_secs_f64(6.1).saturating_sub(started.elapsed()));
    hook(&["end", "--id", "4711", "--exit-code", "1"]);
    let ran = wait_for_outcome(&live, "4711", "failed", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(800));
    let xids_live = live.metrics().get(
        "gpucost_gpu_xid_errors_total",
        &[("gpu", "0"), ("xid", "13")],
    );
    assert!(live.terminate().success());

    let text = std::fs::read_to_string(recording).unwrap();
    assert!(text.contains("[gpu.trace]"), "{text}");
    assert!(text.contains("from NVML"), "{text}");
    let samples = text
        .lines()
        .find(|l| l.starts_with("t_s = "))
        .map(|l| l.matches(',').count() + 1)
        .unwrap();
    assert!(
        (25..=50).contains(&samples),
        "{samples} samples in ~7 s at 200 ms"
    );

    // The replay: the recording as a simulated node, sampled as the live agent was.
    let scenario = gpucost_sim::Scenario::load(recording).unwrap();
    let every = Duration::from_millis(200);
    let mut replay = VirtualNode::simulate(
        &scenario,
        &config(|c| {
            c.sampling.interval = every;
            c.sampling.process_interval = every;
        }),
    );
    replay.run_until(scenario.duration_s + 6.0);
    let replayed = replay.job_json("4711").expect("the job, replayed");
    assert_eq!(replayed["outcome"], "failed");
    let xids_replay = replay.metrics().get(
        "gpucost_gpu_xid_errors_total",
        &[("gpu", "0"), ("xid", "13")],
    );
    eprintln!("live:   {}\nreplay: {}", ran["usage"], replayed["usage"]);

    // Within what two sampling intervals at the job's power allow: the replay attributes the
    // job from its first process sample and ends it at the recorded end.
    let slack_s = 0.45;
    for field in ["gpu_seconds", "idle_gpu_seconds", "fp32_seconds"] {
        let (a, b) = (usage(&ran, field), usage(&replayed, field));
        assert!((a - b).abs() <= slack_s, "{field}: live {a}, replay {b}");
    }
    assert!(usage(&ran, "fp32_seconds") > 1.5, "{}", ran["usage"]);
    assert!(usage(&ran, "idle_gpu_seconds") > 1.0, "{}", ran["usage"]);
    let (a, b) = (usage(&ran, "energy_j"), usage(&replayed, "energy_j"));
    assert!(a > 2000.0, "live job energy {a}");
    assert!(
        (a - b).abs() <= slack_s * 610.0,
        "energy: live {a} J, replay {b} J"
    );
    assert_eq!(xids_live, Some(1.0));
    assert_eq!(xids_replay, xids_live);

    // The fake NVML library replays a recording too: in the fp32 phase (1-2.5 s) the GPU draws
    // the recorded ~420 W (the instant value; the one-second average lags at the phase's start).
    let replay_nvml = Agent::start(
        &["--nvml-lib", fake_nvml_lib().to_str().unwrap()],
        &[ENV[0], ENV[1], ("GPUCOST_FAKE_NVML_SCENARIO", recording)],
    );
    let m = replay_nvml.wait_for_metrics("the fp32 phase", Duration::from_secs(10), |m| {
        m.get(
            "gpucost_gpu_pipe_active_ratio",
            &[("gpu", "0"), ("pipe", "fp32")],
        )
        .unwrap_or(0.0)
            > 0.5
    });
    let watts = m.gpu("gpucost_gpu_power_instant_watts", 0).unwrap();
    assert!((400.0..440.0).contains(&watts), "{watts} W");
}

#[test]
fn an_unwritable_recording_is_refused_at_start() {
    let out = Command::new(agent_bin())
        .args([
            "agent",
            "--simulate",
            "demo",
            "--record",
            "/nonexistent-dir/rec.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--record") && err.contains("/nonexistent-dir/rec.toml"),
        "{err}"
    );
}
