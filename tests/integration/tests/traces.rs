//! Recorded runs replayed: every `tests/fixtures/traces/NAME.toml` (written by
//! `gpucost agent --record` during `scripts/gpu-validation.sh`) is run with `--simulate`, faster
//! than it was recorded, and the agent must reach what the live agent measured (NAME.json): the
//! job's energy, GPU, idle and FP32-bound time, its outcome, its MFU per phase, and the workload's
//! own MFU where it reported one. A run recorded on a real GPU thereby stays part of every CI run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gpucost_integration_tests::{write_scenario, Agent};

/// Wall seconds a replay may take.
const REPLAY_WALL_S: f64 = 25.0;
/// The replaying agent's sampling interval (wall seconds).
const INTERVAL_S: f64 = 0.05;

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
    /// (scenario seconds, the job's MFU from counters) at each poll.
    mfu: Vec<(f64, f64)>,
    speed: f64,
}

fn replay(trace: &Path, job: &str, dir: &Path) -> Replayed {
    let text = std::fs::read_to_string(trace).unwrap();
    let duration = text
        .lines()
        .find_map(|l| l.strip_prefix("duration_s = "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("duration_s");
    assert!(
        text.contains("\nspeed = 1.0\n"),
        "a recording replays at speed 1"
    );
    let speed = (duration / REPLAY_WALL_S).ceil().max(1.0);
    let fast = write_scenario(
        dir,
        "replay.toml",
        &text.replace("\nspeed = 1.0\n", &format!("\nspeed = {speed}\n")),
    );
    let interval = format!("{}ms", (INTERVAL_S * 1000.0) as u64);
    let started = Instant::now();
    let mut agent = Agent::start(
        &["--simulate", &fast],
        &[
            ("GPUCOST_SAMPLING_INTERVAL", &interval),
            ("GPUCOST_SAMPLING_PROCESS_INTERVAL", &interval),
            ("GPUCOST_LEDGER_PERSIST_INTERVAL", "40ms"),
        ],
    );
    // Scenario time starts when the simulated backend opens, which the agent logs.
    let opened = log_time(&agent.wait_for_log("GPU library up", Duration::from_secs(5)));
    let deadline = started + Duration::from_secs_f64(duration / speed + 15.0);
    let mut mfu = Vec::new();
    loop {
        let t = (unix_now() - opened) * speed;
        let (status, body) = agent.get(&format!("/api/v1/jobs/{job}"));
        if status == 200 {
            let j: serde_json::Value = serde_json::from_str(&body).unwrap();
            if j["outcome"] != "running" {
                return Replayed {
                    usage: j["usage"].clone(),
                    outcome: j["outcome"].as_str().unwrap().to_string(),
                    mfu,
                    speed,
                };
            }
        }
        if let Some(v) = agent.metrics().get(
            "gpucost_job_mfu_ratio",
            &[("job_id", job), ("source", "counters")],
        ) {
            mfu.push((t, v));
        }
        assert!(Instant::now() < deadline, "job {job} did not end: {body}");
        std::thread::sleep(Duration::from_millis(40));
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The unix time of a log line (`2026-11-26T09:53:13.740489Z  INFO ...`).
fn log_time(line: &str) -> f64 {
    let stamp = line.split_whitespace().next().expect("a timestamp");
    let (date, time) = stamp
        .trim_end_matches('Z')
        .split_once('T')
        .expect("date T time");
    let d: Vec<i64> = date.split('-').map(|v| v.parse().unwrap()).collect();
    let t: Vec<f64> = time.split(':').map(|v| v.parse().unwrap()).collect();
    // Days since 1970-01-01 of a proleptic Gregorian date.
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]
}

#[test]
fn log_times_are_unix_times() {
    let t = log_time("2026-11-26T09:53:13.740489Z  INFO gpucost: x");
    assert!((t - 1_795_686_793.740_489).abs() < 1e-3, "{t}");
    assert_eq!(log_time("1970-01-01T00:00:00Z x"), 0.0);
    assert_eq!(log_time("2000-03-01T00:00:00Z x"), 951_868_800.0);
}

#[test]
fn recorded_runs_replay_to_what_the_live_agent_measured() {
    let all = fixtures();
    assert!(!all.is_empty(), "no trace fixtures");
    for (trace, meta) in all {
        let name = trace.file_stem().unwrap().to_string_lossy().into_owned();
        let dir = tempfile::tempdir().unwrap();
        let live = &meta["job"];
        let id = live["id"].as_str().unwrap();
        let r = replay(&trace, id, dir.path());
        let s = r.speed;
        eprintln!("{name} (replayed at speed {s}): live {}\nreplayed x speed: energy {:.0} J, gpu {:.2} s, idle {:.2} s, fp32 {:.2} s",
            live["usage"], f(&r.usage, "energy_j") * s, f(&r.usage, "gpu_seconds") * s,
            f(&r.usage, "idle_gpu_seconds") * s, f(&r.usage, "fp32_seconds") * s);
        assert_eq!(r.outcome, live["outcome"].as_str().unwrap(), "{name}");
        // Energy accrues per wall second in a faster replay, times per wall second too.
        let (a, b) = (f(&live["usage"], "energy_j"), f(&r.usage, "energy_j") * s);
        assert!(
            (b / a - 1.0).abs() <= 0.01,
            "{name}: energy live {a} J, replayed {b} J"
        );
        // A job's ends fall on samples: one replay sample and one recorded one at each end.
        let slack = 2.0 * (INTERVAL_S * s + 0.25);
        for field in ["gpu_seconds", "idle_gpu_seconds", "fp32_seconds"] {
            let (a, b) = (f(&live["usage"], field), f(&r.usage, field) * s);
            assert!(
                (a - b).abs() <= slack,
                "{name}: {field} live {a}, replayed {b}"
            );
        }
        for p in meta["phases"].as_array().unwrap() {
            let phase = p["phase"].as_str().unwrap();
            let (a, b) = (f(p, "start_s"), f(p, "end_s"));
            if phase == "fp32" {
                let fp32 = f(&r.usage, "fp32_seconds") * s;
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
