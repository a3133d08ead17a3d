//! Recorded runs replayed: every `tests/fixtures/traces/NAME.toml` (written by
//! `gpucost agent --record` during `scripts/gpu-validation.sh`) is replayed by the node that
//! `gpucost agent --simulate` runs, in virtual time at the recording's own sampling interval,
//! and must reach what the live agent measured (NAME.json): the job's energy, GPU, idle and
//! FP32-bound time, its outcome, its MFU per phase, and the workload's own MFU where it reported
//! one. A run recorded on a real GPU thereby stays part of every CI run. (That the binary
//! replays a recording is `record.rs`'s test.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpucost_integration_tests::virtual_node::{config, VirtualNode};
use gpucost_sim::Scenario;

fn fixtures() -> Vec<(PathBuf, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/traces");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let meta = p.with_extension("json");
            let text = std::fs::read_to_string(&meta).unwrap_or_else(|e| {
                panic!("{}: {e} (every trace needs its .json)", meta.display())
            });
            (p, serde_json::from_str(&text).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

struct Replayed {
    usage: serde_json::Value,
    outcome: String,
    /// (scenario seconds, the job's MFU from counters) at each sample.
    mfu: Vec<(f64, f64)>,
    /// The recording's sampling interval, which the replay samples at too.
    interval_s: f64,
}

fn replay(trace: &Path, job: &str) -> Replayed {
    let scenario = Scenario::load(trace.to_str().unwrap()).unwrap();
    assert_eq!(scenario.speed, 1.0, "a recording replays at speed 1");
    let t = &scenario.gpus[0]
        .trace
        .as_ref()
        .expect("a recorded trace")
        .t_s;
    let interval_s = t[1] - t[0];
    let interval = Duration::from_secs_f64(interval_s);
    let cfg = config(|c| {
        c.sampling.interval = interval;
        c.sampling.process_interval = interval;
        c.persist_interval = interval;
    });
    let mut node = VirtualNode::simulate(&scenario, &cfg);
    let mut mfu = Vec::new();
    let mut t = 0.0;
    while t <= scenario.duration_s + 5.0 {
        node.run_until(t);
        if let Some(v) = node.metrics().get(
            "gpucost_job_mfu_ratio",
            &[("job_id", job), ("source", "counters")],
        ) {
            mfu.push((t, v));
        }
        if let Some(j) = node.job_json(job).filter(|j| j["outcome"] != "running") {
            return Replayed {
                usage: j["usage"].clone(),
                outcome: j["outcome"].as_str().unwrap().to_string(),
                mfu,
                interval_s,
            };
        }
        t += interval_s;
    }
    panic!("job {job} did not end by {t} s: {:?}", node.job_json(job));
}

#[test]
fn recorded_runs_replay_to_what_the_live_agent_measured() {
    let all = fixtures();
    assert!(!all.is_empty(), "no trace fixtures");
    for (trace, meta) in all {
        let name = trace.file_stem().unwrap().to_string_lossy().into_owned();
        let live = &meta["job"];
        let id = live["id"].as_str().unwrap();
        let r = replay(&trace, id);
        eprintln!(
            "{name} (replayed at its {} s samples): live {}\nreplayed {}",
            r.interval_s, live["usage"], r.usage
        );
        assert_eq!(r.outcome, live["outcome"].as_str().unwrap(), "{name}");
        let (a, b) = (f(&live["usage"], "energy_j"), f(&r.usage, "energy_j"));
        assert!(
            (b / a - 1.0).abs() <= 0.01,
            "{name}: energy live {a} J, replayed {b} J"
        );
        // A job's ends fall on samples: one sample at each end.
        let slack = 2.0 * r.interval_s;
        for field in ["gpu_seconds", "idle_gpu_seconds", "fp32_seconds"] {
            let (a, b) = (f(&live["usage"], field), f(&r.usage, field));
            assert!(
                (a - b).abs() <= slack,
                "{name}: {field} live {a}, replayed {b}"
            );
        }
        for p in meta["phases"].as_array().unwrap() {
            let phase = p["phase"].as_str().unwrap();
            let (a, b) = (f(p, "start_s"), f(p, "end_s"));
            if phase == "fp32" {
                let fp32 = f(&r.usage, "fp32_seconds");
                assert!(
                    fp32 >= 0.8 * (b - a),
                    "{name}: {fp32} s FP32-bound in a {} s fp32 phase",
                    b - a
                );
            }
            // The MFU inside the phase (away from its ends).
            let inside: Vec<f64> = r
                .mfu
                .iter()
                .filter(|(t, _)| *t >= a + 2.0 && *t <= b - 1.0)
                .map(|(_, v)| *v)
                .collect();
            if inside.is_empty() {
                continue;
            }
            let got = inside.iter().sum::<f64>() / inside.len() as f64;
            eprintln!(
                "{name} {phase}: MFU {got} over {} polls in [{a}, {b}]",
                inside.len()
            );
            if let Some(live_mfu) = p["agent_mfu"].as_f64() {
                assert!(
                    (got - live_mfu).abs() <= 0.02,
                    "{name} {phase}: MFU replayed {got}, live {live_mfu}"
                );
            }
            if let Some(truth) = p["mfu"].as_f64() {
                assert!(
                    (got - truth).abs() <= 0.05,
                    "{name} {phase}: MFU replayed {got}, the workload's {truth}"
                );
            }
        }
    }
}
