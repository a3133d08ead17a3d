//! The fleet-wide report (`gpucost report --prometheus URL`) against a real Prometheus scraping
//! two simulated agents: one job spans both nodes, each node has one of its own, all end within
//! seconds. Once Prometheus has scraped their final totals, the fleet report must say what the
//! two ledgers say together: each job's cost, GPU time and energy summed over its nodes (issue
//! 20, item 3). Its what-if and break-even use the same figures, and its what-if is what the
//! agents export as each job's savings levers (issue 20, item 2).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gpucost_integration_tests::{agent_bin, write_scenario, Agent, Prometheus};

const GPU: &str = r#"
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
"#;

fn job(name: &str, id: &str, pid: u32, gpus: &str, start: u32, seconds: u32, exit: i32) -> String {
    format!(
        "[[job]]\nname = \"{name}\"\nid = \"{id}\"\npid = {pid}\ngpus = {gpus}\nstart_s = {start}\n\
         exit_code = {exit}\n[[job.phase]]\nseconds = {seconds}\nutilization = 0.9\npower_w = 550\n\
         memory_mib = 20000\nprecision = \"bf16\"\n"
    )
}

fn node(name: &str, gpus: usize, jobs: &[String]) -> String {
    format!(
        "name = \"{name}\"\nduration_s = 3600\nripple = 0.0\n{}{}",
        GPU.repeat(gpus),
        jobs.concat()
    )
}

/// What a ledger says of each job: (cost, GPU-seconds, joules, wasted cost) by id.
fn ledger(state: &Path) -> Vec<(String, [f64; 4])> {
    let out = Command::new(agent_bin())
        .args(["report", "--format", "json", "--state-dir"])
        .arg(state)
        .env_remove("GPUCOST_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let f = |k: &str| j[k].as_f64().unwrap();
            (
                j["id"].as_str().unwrap().to_string(),
                [
                    f("cost_total"),
                    f("gpu_seconds"),
                    f("energy_j"),
                    f("wasted_cost"),
                ],
            )
        })
        .collect()
}

fn fleet_report(prom: &Prometheus, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(agent_bin())
        .args(["report", "--prometheus", &format!("http://{}", prom.addr)])
        .args(args)
        .env_remove("GPUCOST_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_fleet_report_from_prometheus_equals_the_ledgers_summed() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("GPUCOST_SAMPLING_INTERVAL", "200ms"),
        ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "200ms"),
        ("GPUCOST_LEDGER_PERSIST_INTERVAL", "500ms"),
        ("GPUCOST_JOBS_EXPORT_LABELS", "team"),
    ];
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a_scn = node(
        "node-a",
        2,
        &[
            job("multi", "multi-7", 3500001, "[0]", 0, 4, 0),
            job("solo-a", "5150", 3500002, "[1]", 0, 3, 1),
        ],
    );
    let b_scn = node(
        "node-b",
        3,
        &[
            job("multi", "multi-7", 3600001, "[0, 1]", 0, 4, 0),
            job("solo-b", "5151", 3600002, "[2]", 1, 3, 0),
        ],
    );
    let a_scn = write_scenario(&a_dir, "a.toml", &a_scn);
    let b_scn = write_scenario(&b_dir, "b.toml", &b_scn);
    let a = Agent::start_in(&a_dir, &["--simulate", &a_scn], &env);
    let b = Agent::start_in(&b_dir, &["--simulate", &b_scn], &env);
    let prom = Prometheus::start(
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gpucost\n    \
             static_configs:\n      - targets: ['{}', '{}']\n",
            a.addr, b.addr
        ),
        &[],
    );

    // Every job ended, persisted, and scraped after that: the series hold final totals.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = prom.query("sum(gpucost_job_running)");
        let ended = prom.query("count(count by (job_id) (gpucost_job_running == 0))");
        let n = |v: &[serde_json::Value]| {
            v.first()
                .and_then(|s| s["value"][1].as_str())
                .and_then(|x| x.parse::<f64>().ok())
        };
        if n(&running) == Some(0.0) && n(&ended) == Some(3.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the jobs never ended in Prometheus"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(2500));

    let mut want: std::collections::BTreeMap<String, [f64; 4]> = Default::default();
    for (id, v) in ledger(&a.state_dir).into_iter().chain(ledger(&b.state_dir)) {
        let w = want.entry(id).or_default();
        for (w, v) in w.iter_mut().zip(v) {
            *w += v;
        }
    }
    assert_eq!(want.len(), 3, "{want:?}");

    let (code, json, err) = fleet_report(&prom, &["--format", "json", "--since", "1h"]);
    assert_eq!(code, Some(0), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let jobs = doc["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3, "{json}");
    for j in jobs {
        let id = j["id"].as_str().unwrap();
        let w = want[id];
        let keys = ["cost_total", "gpu_seconds", "energy_j", "wasted_cost"];
        for (i, key) in keys.iter().enumerate() {
            let got = j[*key].as_f64().unwrap();
            assert!(
                (got - w[i]).abs() <= 0.01 * w[i],
                "{id} {key}: fleet {got}, ledgers {}",
                w[i]
            );
        }
    }
    // The multi-node job is one row, with its three GPUs' time from both nodes, and its name
    // (the simulated scheduler's: a scenario job with an id is a Slurm job).
    let multi = jobs.iter().find(|j| j["id"] == "multi-7").unwrap();
    assert_eq!(multi["name"], "slurm-multi-7");
    assert_eq!(multi["scheduler"], "slurm");
    // Its start and end are the agents' (gpucost_job_start_time_seconds, ..._end_...), not the
    // window's.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = multi["started_at"].as_f64().unwrap();
    assert!(now - started < 120.0, "{multi}");
    assert!(multi["ended_at"].as_f64().unwrap() > started, "{multi}");
    assert_eq!(multi["outcome"], "succeeded");
    // The failed run is failed, its whole cost lost (it reported no checkpoint).
    let failed = jobs.iter().find(|j| j["id"] == "5150").unwrap();
    assert_eq!(failed["outcome"], "failed");
    assert!(failed["wasted_cost"].as_f64().unwrap() > 0.0, "{failed}");
    assert!(
        multi["gpu_seconds"].as_f64().unwrap() > 3.0 * 3.0,
        "{multi}"
    );
    assert_eq!(doc["currency"], "USD");

    // The same window's what-if and break-even, priced with a config (the agents' prices live
    // in their ledgers): five H100s in all.
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/config.example.toml"
    );
    let (code, text, err) = fleet_report(
        &prom,
        &[
            "--since",
            "1h",
            "--what-if",
            "--breakeven",
            "--config",
            config,
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        text.contains("What if") && text.contains("multi-7"),
        "{text}"
    );
    assert!(text.contains("NVIDIA H100 80GB HBM3: 5 GPU(s)"), "{text}");
    // Issue 20: its figures are what the agents export, lever by lever
    // (gpucost_job_savings_potential, summed over each job's nodes; the example config holds the
    // prices the simulated agents count with). Every lever is known: spot and reserved rates are
    // configured, the agents measured these BF16 runs' pipes, every outcome is known.
    let (code, json, err) = fleet_report(
        &prom,
        &[
            "--since",
            "1h",
            "--what-if",
            "--format",
            "json",
            "--config",
            config,
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rows = doc["what_if"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{json}");
    for row in rows {
        let id = row["id"].as_str().unwrap();
        let actual = row["actual"].as_f64().unwrap();
        assert!(actual > 0.0, "{row}");
        for lever in [
            "spot",
            "reserved",
            "off_peak",
            "bf16",
            "no_idle",
            "checkpoint",
        ] {
            let with = row[lever]
                .as_f64()
                .unwrap_or_else(|| panic!("{id}: {lever} unknown in {row}"));
            let exported = prom.query(&format!(
                r#"sum(last_over_time(gpucost_job_savings_potential{{job_id="{id}", lever="{lever}"}}[5m]))"#
            ));
            let exported: f64 = exported
                .first()
                .and_then(|s| s["value"][1].as_str())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{id}: no {lever} series: {exported:?}"));
            assert!(
                (actual - with - exported).abs() <= 0.01 * actual,
                "{id} {lever}: the report saves {}, the agents export {exported}",
                actual - with
            );
        }
    }
    // The failed run would have saved what it lost (its waste as `failed`) with a checkpoint,
    // the others nothing; spot saves on every run.
    let row = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap();
    let saving = |id: &str, lever: &str| {
        row(id)["actual"].as_f64().unwrap() - row(id)[lever].as_f64().unwrap()
    };
    let lost: f64 = prom.query(
        r#"sum(last_over_time(gpucost_job_wasted_cost_total{job_id="5150", reason="failed"}[5m]))"#,
    )[0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(lost > 0.0);
    assert!(
        (saving("5150", "checkpoint") - lost).abs() <= 0.01 * lost,
        "lost {lost}: {}",
        row("5150")
    );
    assert_eq!(saving("multi-7", "checkpoint"), 0.0);
    assert!(saving("multi-7", "spot") > 0.0);
    let (code, _, err) = fleet_report(&prom, &["--job", "no-such-job"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no-such-job"), "{err}");
    // A Prometheus that is not there is a clear error, not a hang.
    let out = Command::new(agent_bin())
        .args(["report", "--prometheus", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Prometheus at 127.0.0.1:9"));
}
