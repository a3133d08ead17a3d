//! Efficiency, waste and failure signals end to end, on the built-in demo scenario run 40 times
//! faster: an FP32-only job, an allocated-but-idle notebook, a run that fails, Xid errors, MFU
//! from pipe activity, and a job that reports its own progress (tokens).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gpucost_integration_tests::{agent_bin, post_unix, write_scenario, Agent, Metrics};

const SPEED: f64 = 40.0;

fn demo_fast(dir: &std::path::Path) -> String {
    let demo = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sim/scenarios/demo.toml"
    ))
    .unwrap();
    assert!(demo.contains("speed = 1.0"), "the demo sets its speed");
    write_scenario(
        dir,
        "demo-fast.toml",
        &demo.replace("speed = 1.0", &format!("speed = {SPEED}")),
    )
}

fn get(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.get(name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{}", m.text))
}

#[test]
fn demo_signals_on_metrics_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = demo_fast(dir.path());
    let agent = Agent::start(
        &["--simulate", &scenario],
        &[
            ("GPUCOST_SAMPLING_INTERVAL", "100ms"),
            ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "100ms"),
        ],
    );
    let started = Instant::now();
    let scenario_s = || started.elapsed().as_secs_f64() * SPEED;

    // Early: the bf16 pretrain (Slurm job 41871) runs on GPUs 0-1 with its tensor cores busy, and
    // the FP32 ResNet (GPU 3, from 10 s) leaves them idle.
    let m = agent.wait_for_metrics("pipe activity and rates", Duration::from_secs(10), |m| {
        m.get(
            "gpucost_job_mfu_ratio",
            &[("job_id", "41871"), ("source", "counters")],
        )
        .is_some()
            && m.get(
                "gpucost_job_fp32_gpu_seconds_total",
                &[("job_id", "unattributed:6101")],
            )
            .unwrap_or(0.0)
                > 0.0
    });
    assert!(scenario_s() < 290.0, "still in the FP32 job's run");
    let mfu = get(
        &m,
        "gpucost_job_mfu_ratio",
        &[("job_id", "41871"), ("source", "counters")],
    );
    assert!((0.40..0.65).contains(&mfu), "bf16 pretrain MFU {mfu}");
    let tensor = get(
        &m,
        "gpucost_gpu_pipe_active_ratio",
        &[("gpu", "0"), ("pipe", "tensor")],
    );
    assert!(tensor > 0.4, "tensor activity {tensor}");
    assert_eq!(
        get(
            &m,
            "gpucost_gpu_pipe_active_ratio",
            &[("gpu", "3"), ("pipe", "tensor")]
        ),
        0.0
    );
    assert!(
        get(
            &m,
            "gpucost_gpu_pipe_active_ratio",
            &[("gpu", "3"), ("pipe", "fp32")]
        ) > 0.2
    );
    assert!(
        get(
            &m,
            "gpucost_job_wasted_cost_total",
            &[("job_id", "unattributed:6101"), ("reason", "fp32")]
        ) > 0.0
    );
    assert_eq!(
        get(
            &m,
            "gpucost_job_fp32_gpu_seconds_total",
            &[("job_id", "41871")]
        ),
        0.0
    );
    assert!(
        get(
            &m,
            "gpucost_gpu_peak_flops",
            &[("gpu", "0"), ("precision", "bf16")]
        ) > 9e14
    );

    // A job that reports progress: registered by `gpucost run`, reporting tokens as it goes.
    let mut run = Command::new(agent_bin())
        .args(["run", "--name", "tok", "--", "sleep", "4"])
        .env("GPUCOST_SOCKET", &agent.socket)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let (_, body) = agent.get("/api/v1/jobs");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(j) = v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "tok")
        {
            break j["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    let url = format!("/api/v1/jobs/{id}/progress");
    let (status, body) = post_unix(
        &agent.socket,
        &url,
        r#"{"tokens": 100000, "flops_per_token": 6e9}"#,
    );
    assert_eq!(status, 200, "{body}");
    std::thread::sleep(Duration::from_millis(500));
    let (status, _) = post_unix(&agent.socket, &url, r#"{"tokens": 1100000}"#);
    assert_eq!(status, 200);
    let (status, body) = post_unix(&agent.socket, &url, r#"{"tokens": 5}"#);
    assert_eq!(status, 409, "tokens never go back: {body}");
    let (status, _) = post_unix(&agent.socket, &url, r#"{"tokens": "many"}"#);
    assert_eq!(status, 400);
    let m = agent.wait_for_metrics("reported progress", Duration::from_secs(5), |m| {
        m.get("gpucost_job_tokens_total", &[("job_id", &id)]) == Some(1_100_000.0)
    });
    let reported = get(
        &m,
        "gpucost_job_achieved_flops",
        &[("job_id", &id), ("source", "reported")],
    );
    // 1e6 tokens x 6e9 FLOPs in about half a second.
    assert!(
        (4e15..1.5e16).contains(&reported),
        "reported FLOP/s {reported}"
    );
    assert!(run.wait().unwrap().success());

    // Later: the notebook on GPU 2 holds its GPU idle from 220 s, the fine-tune on GPU 3 fails at
    // 525 s, with Xid 13 on GPU 2 at 400 s and Xid 79 on GPU 3 at 525 s.
    let m = agent.wait_for_metrics("the failed run", Duration::from_secs(25), |m| {
        m.get("gpucost_job_failed", &[("job_id", "unattributed:6201")]) == Some(1.0)
    });
    assert!(
        get(
            &m,
            "gpucost_job_idle_gpu_seconds_total",
            &[("job_id", "unattributed:5201")]
        ) > 0.0
    );
    assert!(
        get(
            &m,
            "gpucost_job_wasted_cost_total",
            &[("job_id", "unattributed:5201"), ("reason", "idle")]
        ) > 0.0
    );
    let failed: f64 = ["idle", "fp32", "failed"]
        .iter()
        .map(|r| {
            get(
                &m,
                "gpucost_job_wasted_cost_total",
                &[("job_id", "unattributed:6201"), ("reason", r)],
            )
        })
        .sum();
    let cost: f64 = ["gpu_time", "energy", "overhead"]
        .iter()
        .map(|c| {
            get(
                &m,
                "gpucost_job_cost_total",
                &[("job_id", "unattributed:6201"), ("component", c)],
            )
        })
        .sum();
    assert!(
        cost > 0.0 && (failed - cost).abs() < 1e-9 * cost,
        "a failed run's whole cost is waste: {failed} vs {cost}"
    );
    assert!(get(&m, "gpucost_jobs_finished_total", &[("outcome", "failed")]) >= 1.0);
    assert_eq!(
        get(
            &m,
            "gpucost_gpu_xid_errors_total",
            &[("gpu", "2"), ("xid", "13")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "gpucost_gpu_xid_errors_total",
            &[("gpu", "3"), ("xid", "79")]
        ),
        1.0
    );
    assert!(
        get(
            &m,
            "gpucost_gpu_throttled_seconds_total",
            &[("gpu", "2"), ("reason", "gpu_idle")]
        ) > 0.0
    );

    // The report shows what a million tokens cost.
    let out = Command::new(agent_bin())
        .args(["report", "--state-dir"])
        .arg(&agent.state_dir)
        .args(["--job", &id])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("/1M TOKENS") && table.contains("1100000"),
        "{table}"
    );
    let out = Command::new(agent_bin())
        .args(["report", "--format", "json", "--state-dir"])
        .arg(&agent.state_dir)
        .args(["--job", &id])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (_, body) = agent.get(&format!("/api/v1/jobs/{id}"));
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    // (The job holds no GPU of the busy demo node, so its cost is whatever little it is; the
    // end-to-end test has a token job that pays for a GPU.)
    let api_per_m = api["cost_per_million_tokens"].as_f64().unwrap();
    let api_cost = api["cost_total"].as_f64().unwrap();
    assert!(
        (api_per_m - api_cost / 1.1).abs() <= 1e-9 * api_cost.max(1e-12),
        "{api}"
    );
    assert!(api["joules_per_token"].as_f64().is_some(), "{api}");
    let job = &doc["jobs"][0];
    let per_m = job["cost_per_million_tokens"].as_f64().unwrap();
    let want = job["cost_total"].as_f64().unwrap() / 1.1;
    assert!(
        (per_m - want).abs() <= 1e-9 * want.max(1e-12),
        "{per_m} vs {want}"
    );
}
