//! GPUs named by UUID end to end (issue 15, item 3): the hooks and `gpucost run` send the GPUs
//! of a job as UUIDs where the environment has them, the agent resolves indices to UUIDs once
//! when a job registers (and says, once, that it takes them as NVML's), and a GPU is held by
//! its UUID from then on.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use gpucost_integration_tests::{agent_bin, write_scenario, Agent};

/// Two idle H100s.
const TWO_GPUS: &str = r#"
name = "two"
duration_s = 3600
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
"#;

fn gpucost(args: &[&str], socket: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(agent_bin());
    c.args(args)
        .env("GPUCOST_SOCKET", socket)
        .env_remove("GPUCOST_JOB_ID")
        .env_remove("CUDA_VISIBLE_DEVICES")
        .env_remove("NVIDIA_VISIBLE_DEVICES")
        .env_remove("SLURM_JOB_ID")
        .env_remove("SLURM_JOB_GPUS")
        .env_remove("SLURM_STEP_GPUS")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let out = c.output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    out
}

fn registered_gpus(agent: &Agent, id: &str) -> serde_json::Value {
    let (status, body) = agent.get(&format!("/api/v1/jobs/{id}"));
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    j["registration"]["gpus"].clone()
}

#[test]
fn issue_15_jobs_hold_their_gpus_by_uuid() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "only root allocates GPUs to a job; this test must run as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "two.toml", TWO_GPUS);
    let node = gpucost_sim::SimulatedNode::new(gpucost_sim::Scenario::load(&scenario).unwrap());
    let (uuid0, uuid1) = (node.uuid(0).to_string(), node.uuid(1).to_string());
    let mut agent = Agent::start(&["--simulate", &scenario], &[]);
    let socket = agent.socket.clone();

    // A prolog's Slurm indices: taken as NVML's, resolved once, and said so (once).
    gpucost(
        &["job", "start", "--id", "1"],
        &socket,
        &[("SLURM_JOB_GPUS", "1")],
    );
    assert_eq!(registered_gpus(&agent, "1"), serde_json::json!([uuid1]));
    gpucost(&["job", "start", "--id", "2", "--gpus", "0"], &socket, &[]);
    assert_eq!(registered_gpus(&agent, "2"), serde_json::json!([uuid0]));
    agent.wait_for_log("GPU indices taken as NVML's", Duration::from_secs(5));
    let warned = agent
        .logs()
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("GPU indices taken as NVML's"))
        .count();
    assert_eq!(warned, 1, "{:#?}", agent.logs());

    // A UUID in any case is the GPU itself (unique prefixes too: core's unit tests; the
    // simulated UUIDs differ only in their last digits).
    let upper = uuid1.to_uppercase();
    let out = gpucost(
        &["job", "start", "--id", "3", "--gpus", &upper],
        &socket,
        &[],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("registered"),
        "{upper}: {out:?}"
    );
    assert_eq!(registered_gpus(&agent, "3"), serde_json::json!([uuid1]));

    // `gpucost run` inside a Slurm job whose devices are constrained: CUDA_VISIBLE_DEVICES=0 is
    // the job's first GPU, not the node's: not declared, and the user is told why.
    let out = gpucost(
        &["run", "--name", "in-slurm", "--", "true"],
        &socket,
        &[("SLURM_JOB_ID", "77"), ("CUDA_VISIBLE_DEVICES", "0")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CUDA_VISIBLE_DEVICES=0 counts from 0"),
        "{err}"
    );
    // `gpucost run` with UUIDs in CUDA_VISIBLE_DEVICES declares them.
    let out = gpucost(
        &[
            "run",
            "--name",
            "by-uuid",
            "--",
            "sh",
            "-c",
            "echo $GPUCOST_JOB_ID",
        ],
        &socket,
        &[
            ("GPUCOST_JOB_ID", "by-uuid-1"),
            ("CUDA_VISIBLE_DEVICES", &uuid0),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "by-uuid-1");
    assert_eq!(
        registered_gpus(&agent, "by-uuid-1"),
        serde_json::json!([uuid0])
    );
}
