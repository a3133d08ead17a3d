//! End to end with a real Prometheus: two agents on two simulated nodes (one job spans both),
//! scraped every second, with the project's recording and alert rules loaded. Checks that
//! Prometheus's sum of a job's cost across nodes equals the two ledgers' totals, that the alerts
//! this scenario should fire are firing and the others are not, and that every panel query of
//! every dashboard returns data. Node A keeps an ended job on /metrics for 5 s only
//! (`jobs.grace_period`), so a job that fails there early in the run has left /metrics long
//! before the queries are made: the dashboards' range panels and the Job dashboard must still
//! count it (issue 17).
//!
//! The alert rules are loaded with every `for:` set to 0s (the scenario lasts seconds, not the
//! rules' minutes); their timing is covered by `promtool test rules`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gpucost_integration_tests::{
    agent_bin, http_get, post_unix, write_scenario, Agent, Prometheus,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const GPU: &str = r#"
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
"#;

fn node_a() -> String {
    format!(
        r#"name = "node-a"
duration_s = 3600
ripple = 0.0
{GPU}{GPU}{GPU}
[[job]]
name = "multi"
id = "multi-7"
pid = 3300001
gpus = [0]
[[job.phase]]
seconds = 10
utilization = 0.95
power_w = 600
memory_mib = 30000
precision = "bf16"
[[job]]
name = "crash"
id = "4242"
pid = 3300002
gpus = [1]
exit_code = 1
[[job.phase]]
seconds = 6
utilization = 0.9
power_w = 500
memory_mib = 20000
precision = "bf16"
[[job]]
name = "steady"
id = "9000"
pid = 3300003
gpus = [1]
start_s = 7
[[job.phase]]
seconds = 3000
utilization = 0.9
power_w = 550
memory_mib = 20000
precision = "bf16"
[[event]]
at_s = 2
gpu = 1
kind = "xid"
xid = 13
"#
    )
}

fn node_b() -> String {
    format!(
        r#"name = "node-b"
duration_s = 3600
ripple = 0.0
{GPU}{GPU}{GPU}
[[job]]
name = "multi"
id = "multi-7"
pid = 3400001
gpus = [0, 1]
[[job.phase]]
seconds = 10
utilization = 0.95
power_w = 600
memory_mib = 30000
precision = "bf16"
[[job]]
name = "fp32"
id = "9001"
pid = 3400002
gpus = [0]
start_s = 11
[[job.phase]]
seconds = 3000
utilization = 0.99
power_w = 420
memory_mib = 20000
precision = "fp32"
"#
    )
}

/// The rule files with every `for:` at 0s.
fn rules() -> Vec<(String, String)> {
    let dir = repo().join("deploy/prometheus");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yml") {
            let text = std::fs::read_to_string(&p).unwrap();
            let fast: String = text
                .lines()
                .map(|l| match l.find("for:") {
                    Some(i) if l[..i].trim().is_empty() => format!("{}for: 0s", &l[..i]),
                    _ => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n");
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), fast));
        }
    }
    assert!(out.len() >= 2, "the rule files are in deploy/prometheus");
    out
}

/// Every panel query of every dashboard, with the template variables filled in.
fn panel_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("dashboards")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let title = d["title"].as_str().unwrap_or("").to_string();
        for panel in d["panels"].as_array().unwrap() {
            for t in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = t["expr"].as_str() else {
                    continue;
                };
                let expr = expr
                    .replace("$__rate_interval", "30s")
                    .replace("$__interval", "5s")
                    .replace("$__range", "5m")
                    .replace("$label", "team")
                    .replace("$node", ".*")
                    .replace("$gpu", ".*")
                    .replace("$job_id", ".*")
                    .replace("$user", ".*")
                    .replace("$currency", ".*")
                    .replace("$cluster", ".*")
                    .replace("$team", ".*")
                    .replace("$sweep", ".*")
                    .replace("$namespace", ".*");
                // `"$1"`: a label_replace's replacement, not a variable.
                assert!(
                    !expr.replace("\"$1\"", "").contains('$'),
                    "unfilled variable in {title} / {}: {expr}",
                    panel["title"]
                );
                out.push((
                    format!("{title} / {}", panel["title"].as_str().unwrap_or("")),
                    expr,
                ));
            }
        }
    }
    assert!(out.len() > 30, "the dashboards are in dashboards/");
    out
}

/// One panel query of a dashboard, by panel title and refId, with `vars` filled in.
fn panel_query(file: &str, title: &str, ref_id: &str, vars: &[(&str, &str)]) -> String {
    let p = repo().join("dashboards").join(file);
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let panel = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("{file}: no panel {title:?}"));
    let t = panel["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["refId"] == ref_id)
        .unwrap_or_else(|| panic!("{file} / {title}: no target {ref_id}"));
    let mut expr = t["expr"].as_str().unwrap().to_string();
    let mut vars = vars.to_vec();
    vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    for (k, v) in vars {
        expr = expr.replace(&format!("${k}"), v);
    }
    assert!(!expr.contains('$'), "{file} / {title}: {expr}");
    expr
}

/// The value of the one sample of `r`.
fn value(r: &[serde_json::Value]) -> f64 {
    assert_eq!(r.len(), 1, "{r:?}");
    r[0]["value"][1].as_str().unwrap().parse().unwrap()
}

fn ledger_job(state: &Path, job: &str) -> serde_json::Value {
    let out = Command::new(agent_bin())
        .args(["report", "--format", "json", "--job", job, "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["jobs"][0].clone()
}

fn ledger_cost(state: &Path, job: &str) -> f64 {
    let out = Command::new(agent_bin())
        .args(["report", "--format", "json", "--job", job, "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["jobs"][0]["cost_total"].as_f64().unwrap()
}

#[test]
fn two_nodes_one_job_rules_and_dashboards_with_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("GPUCOST_SAMPLING_INTERVAL", "200ms"),
        ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "200ms"),
        ("GPUCOST_JOBS_EXPORT_LABELS", "team"),
    ];
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a_scn = write_scenario(&a_dir, "a.toml", &node_a());
    let b_scn = write_scenario(&b_dir, "b.toml", &node_b());
    let mut a_env = env.to_vec();
    a_env.push(("GPUCOST_JOBS_GRACE_PERIOD", "5s"));
    let a = Agent::start_in(&a_dir, &["--simulate", &a_scn], &a_env);
    let b = Agent::start_in(&b_dir, &["--simulate", &b_scn], &env);
    let started = Instant::now();

    let files = rules();
    let rule_names: Vec<String> = files.iter().map(|(n, _)| format!("  - {n}\n")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}scrape_configs:\n  - job_name: gpucost\n    static_configs:\n      - targets: ['{}', '{}']\n",
        rule_names.concat(),
        a.addr,
        b.addr
    );
    let extra: Vec<(&str, String)> = files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let prom = Prometheus::start(&config, &extra);
    let deadline = Instant::now() + Duration::from_secs(15);
    while prom.query("gpucost_build_info").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped both agents"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A job on node A's third GPU that fails after 4 s, while Prometheus scrapes: it leaves
    // /metrics 5 s later, long before the queries below.
    let mut early = Command::new(agent_bin())
        .args([
            "run",
            "--name",
            "early-fail",
            "--label",
            "team=vision",
            "--",
            "sh",
            "-c",
            "sleep 4; exit 3",
        ])
        .env("GPUCOST_SOCKET", &a.socket)
        // Its own id: the two agents share this machine's host name, so the ids they generate
        // for registered jobs could be the same (tok's, on node B).
        .env("GPUCOST_JOB_ID", "early-fail")
        .env("CUDA_VISIBLE_DEVICES", "2")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    // A registered job on node B with a team, a tiny budget, a GPU and reported progress.
    let mut run = Command::new(agent_bin())
        .args([
            "run",
            "--name",
            "tok",
            "--label",
            "team=nlp",
            "--label",
            "budget=0.000001",
            "--",
            "sleep",
            "6",
        ])
        .env("GPUCOST_SOCKET", &b.socket)
        // It holds node B's third GPU, idle: that costs money against its budget.
        .env("CUDA_VISIBLE_DEVICES", "2")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let tok = loop {
        let (_, body) = b.get("/api/v1/jobs");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(j) = v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "tok")
        {
            break j["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "tok never registered");
        std::thread::sleep(Duration::from_millis(50));
    };
    let url = format!("/api/v1/jobs/{tok}/progress");
    for (i, tokens) in [100_000u64, 400_000, 900_000].iter().enumerate() {
        let body = if i == 0 {
            format!(r#"{{"tokens": {tokens}, "flops_per_token": 6e9}}"#)
        } else {
            format!(r#"{{"tokens": {tokens}}}"#)
        };
        assert_eq!(post_unix(&b.socket, &url, &body).0, 200);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let deadline_after_tokens = Instant::now() + Duration::from_secs(3);

    // multi-7 ends at 10 s on both nodes; give Prometheus a few scrapes after that.
    while started.elapsed() < Duration::from_secs(16) || Instant::now() < deadline_after_tokens {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(run.wait().unwrap().success());
    assert_eq!(early.wait().unwrap().code(), Some(3));
    let early_id = "early-fail".to_string();

    // 1. A job's cost summed across nodes by Prometheus equals the ledgers' totals.
    // Node A's share has left its /metrics (2 s grace): the last value each node exported.
    let r = prom
        .query(r#"sum by (job_id) (last_over_time(gpucost_job_cost_total{job_id="multi-7"}[5m]))"#);
    assert_eq!(r.len(), 1, "{r:?}");
    let in_prometheus: f64 = r[0]["value"][1].as_str().unwrap().parse().unwrap();
    let in_ledgers = ledger_cost(&a.state_dir, "multi-7") + ledger_cost(&b.state_dir, "multi-7");
    assert!(in_ledgers > 0.0);
    eprintln!("multi-7: Prometheus sum {in_prometheus} vs ledgers {in_ledgers}");
    assert!(
        (in_prometheus - in_ledgers).abs() <= 0.01 * in_ledgers,
        "Prometheus {in_prometheus} vs ledgers {in_ledgers}"
    );
    let instances =
        prom.query(r#"count by (job_id) (last_over_time(gpucost_job_info{job_id="multi-7"}[5m]))"#);
    assert_eq!(
        instances[0]["value"][1], "2",
        "the job is exported by both nodes"
    );

    // 2. Alerts: these fire, those stay quiet.
    let alerts = prom.alerts();
    let firing = |name: &str, label: Option<(&str, &str)>| {
        alerts.iter().any(|(n, state, labels)| {
            n == name && state == "firing" && label.is_none_or(|(k, v)| labels[k] == v)
        })
    };
    for (name, label) in [
        ("GpucostGPUXidError", Some(("xid", "13"))),
        ("GpucostJobOverBudget", Some(("job_id", tok.as_str()))),
        ("GpucostJobFP32OnTensorCores", Some(("job_id", "9001"))),
    ] {
        assert!(
            firing(name, label),
            "{name} {label:?} should fire; alerts: {alerts:#?}"
        );
    }
    for name in [
        "GpucostAgentDown",
        "GpucostNVMLDown",
        "GpucostLedgerNotWritable",
        "GpucostGPULost",
        "GpucostGPUBelowBenchmark",
        "GpucostGPUXidErrorCritical",
        "GpucostGPUThrottled",
    ] {
        assert!(
            !alerts.iter().any(|(n, _, _)| n == name),
            "{name} should be quiet; alerts: {alerts:#?}"
        );
    }
    assert!(
        !firing("GpucostJobFailed", Some(("job_id", "multi-7"))),
        "multi-7 succeeded"
    );
    // 4242 and early-fail failed after seconds on one GPU: not worth a page (5 minutes or a
    // GPU-hour).
    assert!(
        !alerts.iter().any(|(n, _, _)| n == "GpucostJobFailed"),
        "a 6 s failure pages no one; alerts: {alerts:#?}"
    );

    // The token job paid for its idle GPU: what a million tokens cost, in the agent's API.
    let (_, body) = b.get(&format!("/api/v1/jobs/{tok}"));
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();

    // Its over-budget alert as Alertmanager gets it: routable by team, with its runbook and a
    // link to the Job dashboard from a minute before the job started.
    let (_, raw) = http_get(&prom.addr, "/api/v1/alerts");
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let over = raw["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            a["labels"]["alertname"] == "GpucostJobOverBudget"
                && a["labels"]["job_id"] == tok.as_str()
        })
        .unwrap_or_else(|| panic!("no GpucostJobOverBudget for {tok}: {raw}"));
    assert_eq!(over["labels"]["team"], "nlp", "{over}");
    assert!(
        over["annotations"]["runbook_url"]
            .as_str()
            .unwrap()
            .ends_with("deploy/prometheus/README.md#gpucostjoboverbudget"),
        "{over}"
    );
    let link = over["annotations"]["dashboard"].as_str().unwrap();
    let from: f64 = link
        .strip_prefix(&format!(
            "/d/gpucost-job/gpucost-job?var-job_id={tok}&from="
        ))
        .and_then(|r| r.strip_suffix("&to=now"))
        .unwrap_or_else(|| panic!("dashboard link {link}"))
        .parse()
        .unwrap();
    let started_ms = job["started_at"].as_f64().unwrap() * 1000.0;
    assert!(
        (from - (started_ms - 60_000.0)).abs() <= 1.0,
        "{link} vs start {started_ms}"
    );
    let per_m = job["cost_per_million_tokens"].as_f64().unwrap();
    assert!(per_m > 0.0, "{job}");
    assert!(
        (per_m - job["cost_total"].as_f64().unwrap() / 0.9).abs() <= 1e-9 * per_m,
        "{job}"
    );

    // 3. The failed job early-fail left node A's /metrics seconds ago (5 s grace): the
    // dashboards still answer what it cost.
    let deadline = Instant::now() + Duration::from_secs(10);
    let info = format!(r#"gpucost_job_info{{job_id="{early_id}"}}"#);
    while !prom.query(&info).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{early_id} never left /metrics: {:?} {:?}",
            a.get(&format!("/api/v1/jobs/{early_id}")),
            prom.query(&info)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let crash = ledger_job(&a.state_dir, &early_id);
    let crash_cost = crash["cost_total"].as_f64().unwrap();
    assert!(crash_cost > 0.0, "{crash}");
    let fleet_vars: &[(&str, &str)] = &[
        ("__range", "5m"),
        ("node", ".*"),
        ("user", ".*"),
        ("currency", ".*"),
        ("label", "team"),
        ("cluster", ".*"),
        ("team", ".*"),
        ("sweep", ".*"),
        ("namespace", ".*"),
    ];
    let top = prom.query(&panel_query(
        "gpucost-fleet.json",
        "Top jobs by cost in range ($currency)",
        "A",
        fleet_vars,
    ));
    let in_top = top
        .iter()
        .find(|s| s["metric"]["job_id"] == early_id.as_str())
        .unwrap_or_else(|| panic!("{early_id} not among the top jobs: {top:#?}"));
    let top_cost: f64 = in_top["value"][1].as_str().unwrap().parse().unwrap();
    // increase() counts from the first scrape and extrapolates by half a scrape at most: some
    // of it, never more than the ledger's total.
    eprintln!("early-fail: top jobs {top_cost} vs ledger {crash_cost}");
    assert!(
        top_cost > 0.0 && top_cost <= 1.1 * crash_cost,
        "top jobs {top_cost} vs ledger {crash_cost}"
    );
    // Its waste (all of it: it held an idle GPU, then failed) in the same table.
    let wasted = prom.query(&panel_query(
        "gpucost-fleet.json",
        "Top jobs by cost in range ($currency)",
        "B",
        fleet_vars,
    ));
    let wasted = wasted
        .iter()
        .find(|s| s["metric"]["job_id"] == early_id.as_str())
        .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap());
    assert!(
        wasted.is_some_and(|w| w > 0.0 && w <= 1.1 * crash_cost),
        "{early_id}'s waste in the top jobs: {wasted:?} (cost {crash_cost})"
    );
    let job_vars: &[(&str, &str)] = &[
        ("__range", "5m"),
        ("job_id", early_id.as_str()),
        ("node", ".*"),
        ("user", ".*"),
        ("currency", ".*"),
        ("cluster", ".*"),
    ];
    let job_panel =
        |title: &str| value(&prom.query(&panel_query("gpucost-job.json", title, "A", job_vars)));
    // The last value it exported: exactly what the ledger holds.
    let so_far = job_panel("Cost so far ($currency)");
    eprintln!("early-fail: cost so far {so_far} vs ledger {crash_cost}");
    assert!(
        (so_far - crash_cost).abs() <= 1e-6 * crash_cost.max(1.0),
        "cost so far {so_far} vs ledger {crash_cost}"
    );
    assert_eq!(job_panel("State"), 2.0, "failed");
    let started = job_panel("Started");
    let ended = job_panel("Ended");
    // In ms, as Grafana's dateTime units and the `from`/`to` of a link take them.
    assert!((started - crash["started_at"].as_f64().unwrap() * 1000.0).abs() < 1.0);
    assert!((ended - crash["ended_at"].as_f64().unwrap() * 1000.0).abs() < 1.0);
    assert!(
        (job_panel("Duration") - (ended - started) / 1000.0).abs() < 1e-6,
        "duration"
    );

    // 4. Every dashboard panel's query returns data.
    let empty: Vec<String> = panel_queries()
        .into_iter()
        .filter(|(_, expr)| prom.query(expr).is_empty())
        .map(|(panel, expr)| format!("{panel}: {expr}"))
        .collect();
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
}
