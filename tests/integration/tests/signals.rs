//! Efficiency, waste and failure signals on the built-in demo scenario, in virtual time (the
//! node `gpucost agent --simulate demo` runs, driven tick by tick): an FP32-only job, an
//! allocated-but-idle notebook, a run that fails, Xid errors, MFU from pipe activity, and a job
//! that reports its own progress (tokens); then `gpucost report` on the ledger it wrote.

use std::process::Command;
use std::time::Duration;

use gpucost_core::tracker::{ProgressRequest, RegisterRequest};
use gpucost_integration_tests::virtual_node::{config, VirtualNode};
use gpucost_integration_tests::{agent_bin, Metrics};

fn get(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.get(name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{}", m.text))
}

#[test]
fn demo_signals_on_metrics_and_report() {
    let demo = gpucost_sim::Scenario::load("demo").unwrap();
    let mut node = VirtualNode::simulate(&demo, &config(|_| {}));

    // Early: the bf16 pretrain (Slurm job 41871) runs on GPUs 0-1 with its tensor cores busy, and
    // the FP32 ResNet (GPU 3, from 10 s) leaves them idle.
    node.run_until(60.0);
    let m = node.metrics();
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

    // A job of uid 1000 that reports progress (registered for it by root, as a prolog would),
    // tokens as it goes.
    let id = node
        .register(
            RegisterRequest {
                name: Some("tok".into()),
                uid: Some(1000),
                ..RegisterRequest::default()
            },
            0,
        )
        .unwrap()
        .id;
    let report = |tokens, flops_per_token| ProgressRequest {
        tokens: Some(tokens),
        flops_per_token,
        ..ProgressRequest::default()
    };
    node.progress(&id, report(100_000, Some(6e9)), 1000)
        .unwrap();
    node.wait(Duration::from_millis(500));
    node.progress(&id, report(1_100_000, None), 1000).unwrap();
    let e = node.progress(&id, report(5, None), 1000).unwrap_err();
    assert!(e.contains("went backwards"), "tokens never go back: {e}");
    assert!(
        node.progress(&id, report(6, None), 1001).is_err(),
        "only its owner reports"
    );
    let m = node.metrics();
    assert_eq!(
        get(&m, "gpucost_job_tokens_total", &[("job_id", &id)]),
        1_100_000.0
    );
    let reported = get(
        &m,
        "gpucost_job_achieved_flops",
        &[("job_id", &id), ("source", "reported")],
    );
    // 1e6 tokens x 6e9 FLOPs in half a second.
    assert!(
        (reported / 1.2e16 - 1.0).abs() < 1e-9,
        "reported FLOP/s {reported}"
    );

    // Later: the notebook on GPU 2 holds its GPU idle from 220 s, the fine-tune on GPU 3 fails at
    // 525 s, with Xid 13 on GPU 2 at 400 s and Xid 79 on GPU 3 at 525 s.
    node.run_until(560.0);
    let m = node.metrics();
    assert_eq!(
        m.get("gpucost_job_failed", &[("job_id", "unattributed:6201")]),
        Some(1.0)
    );
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
    // The notebook's idle GPU ran at low clocks for lack of work (NVML's low-utilization
    // violation counter), which is not throttling by the idle bit (issue 14, item 9).
    assert!(
        get(
            &m,
            "gpucost_gpu_throttled_seconds_total",
            &[("gpu", "2"), ("reason", "low_utilization")]
        ) > 0.0
    );
    assert!(m
        .find(
            "gpucost_gpu_throttled_seconds_total",
            &[("reason", "gpu_idle")]
        )
        .is_empty());

    // The report shows what a million tokens cost.
    node.stop();
    let out = Command::new(agent_bin())
        .args(["report", "--state-dir"])
        .arg(node.state_dir.path())
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
        .arg(node.state_dir.path())
        .args(["--job", &id])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let api = node.job_json(&id).unwrap();
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
