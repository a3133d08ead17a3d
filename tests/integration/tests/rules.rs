//! The Prometheus rules in `deploy/prometheus/`: `promtool check rules` and `promtool test rules`
//! pass, every alert is named `Gpucost...` and has a severity, a summary and a description, every
//! recording rule is named `gpucost:...`, and every alert has a test case where it fires and one
//! where it stays quiet.
//!
//! promtool must be installed (scripts/test.sh installs it: Debian package `prometheus`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const SEVERITIES: &[&str] = &["critical", "warning", "info"];
/// Where every alert's `runbook_url` points: its section of deploy/prometheus/README.md.
const RUNBOOKS: &str = "https://github.com/gpucost/gpucost/blob/main/deploy/prometheus/README.md";

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/prometheus")
        .canonicalize()
        .expect("deploy/prometheus exists")
}

/// The `*.yml` files directly in `dir`, sorted.
fn yml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.yml in {}", dir.display());
    files
}

fn promtool(args: &[&str], files: &[PathBuf]) {
    let root = rules_dir().join("../..");
    let out = Command::new("promtool")
        .args(args)
        .args(files)
        .current_dir(&root)
        .output()
        .expect("promtool not found: run scripts/test.sh, which installs it (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    let dir = rules_dir();
    promtool(&["check", "rules"], &yml_files(&dir));
    promtool(&["test", "rules"], &yml_files(&dir.join("tests")));
}

/// One rule of a rules file, read with a line scan (the files are plain block-style YAML).
#[derive(Debug, Default)]
struct Rule {
    /// `alert` or `record`.
    kind: String,
    name: String,
    labels: BTreeMap<String, String>,
    /// Annotation names, with whether they have a non-empty value.
    annotations: BTreeMap<String, bool>,
    /// The values of the annotations written on one line (not block scalars).
    inline_annotations: BTreeMap<String, String>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(v)
        .to_string()
}

/// Reads the rules of a Prometheus rules file: each `- alert:` / `- record:` item, with the
/// entries of its `labels:` and `annotations:` maps.
fn parse_rules(text: &str) -> Vec<Rule> {
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        let item = t
            .strip_prefix("- alert:")
            .map(|n| ("alert", n))
            .or_else(|| t.strip_prefix("- record:").map(|n| ("record", n)));
        let Some((kind, name)) = item else {
            i += 1;
            continue;
        };
        let key_indent = indent(line) + 2;
        let mut rule = Rule {
            kind: kind.to_string(),
            name: unquote(name),
            ..Rule::default()
        };
        i += 1;
        // The rule's keys sit at key_indent; it ends at the first line indented less.
        while i < lines.len() {
            let line = lines[i];
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                i += 1;
                continue;
            }
            if indent(line) < key_indent {
                break;
            }
            let t = line.trim();
            let map = (indent(line) == key_indent)
                .then(|| t.strip_suffix(':'))
                .flatten()
                .filter(|k| *k == "labels" || *k == "annotations");
            i += 1;
            let Some(map) = map else { continue };
            // The map's entries are the lines indented one level deeper; a block scalar
            // (`key: >-`, `key: |`) continues on lines indented deeper still.
            let mut entry_indent = None;
            let mut last: Option<String> = None;
            while i < lines.len() {
                let line = lines[i];
                if line.trim().is_empty() {
                    i += 1;
                    continue;
                }
                if indent(line) <= key_indent {
                    break;
                }
                let ei = *entry_indent.get_or_insert(indent(line));
                if indent(line) == ei {
                    let (k, v) = line.trim().split_once(':').unwrap_or((line.trim(), ""));
                    let v = unquote(v);
                    let block = matches!(v.as_str(), ">" | ">-" | "|" | "|-");
                    if map == "labels" {
                        rule.labels.insert(k.to_string(), v);
                    } else {
                        rule.annotations
                            .insert(k.to_string(), !block && !v.is_empty());
                        if !block {
                            rule.inline_annotations.insert(k.to_string(), v);
                        }
                    }
                    last = Some(k.to_string());
                } else if let (Some(k), true) = (&last, map == "annotations") {
                    // A continuation line of a block scalar: the value is not empty.
                    rule.annotations.insert(k.clone(), true);
                }
                i += 1;
            }
        }
        rules.push(rule);
    }
    rules
}

/// For each `alertname` of the `alert_rule_test`s in a test file, whether a case expects it to
/// fire (a non-empty `exp_alerts` list) and whether one expects it quiet (`exp_alerts: []`).
fn parse_alert_tests(text: &str, cases: &mut BTreeMap<String, (bool, bool)>) {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut current: Option<String> = None;
    for (i, t) in lines.iter().enumerate() {
        if let Some(name) = t
            .strip_prefix("alertname:")
            .or(t.strip_prefix("- alertname:"))
        {
            current = Some(unquote(name));
        } else if let Some(rest) = t.strip_prefix("exp_alerts:") {
            let name = current
                .take()
                .unwrap_or_else(|| panic!("exp_alerts without an alertname at line {}", i + 1));
            let entry = cases.entry(name).or_default();
            match rest.trim() {
                "[]" => entry.1 = true,
                "" => {
                    let next = lines[i + 1..]
                        .iter()
                        .find(|l| !l.is_empty() && !l.starts_with('#'));
                    assert!(
                        next.is_some_and(|l| l.starts_with("- exp_labels:")),
                        "exp_alerts at line {} is neither [] nor a list of alerts",
                        i + 1
                    );
                    entry.0 = true;
                }
                other => panic!("unexpected exp_alerts value {other:?} at line {}", i + 1),
            }
        }
    }
}

#[test]
fn every_alert_is_labelled_annotated_and_tested() {
    let dir = rules_dir();
    let alerts_text = std::fs::read_to_string(dir.join("gpucost-alerts.yml")).unwrap();
    let rules = parse_rules(&alerts_text);
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let alerts: Vec<&Rule> = rules.iter().filter(|r| r.kind == "alert").collect();
    assert!(
        alerts.len() >= 10,
        "only {} alerts found in gpucost-alerts.yml",
        alerts.len()
    );

    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for a in &alerts {
        if !names.insert(a.name.clone()) {
            problems.push(format!("{}: defined twice", a.name));
        }
        if !a.name.starts_with("Gpucost") {
            problems.push(format!("{}: name does not start with Gpucost", a.name));
        }
        match a.labels.get("severity") {
            Some(s) if SEVERITIES.contains(&s.as_str()) => {}
            Some(s) => problems.push(format!(
                "{}: severity {s:?} is not one of {SEVERITIES:?}",
                a.name
            )),
            None => problems.push(format!("{}: no severity label", a.name)),
        }
        for key in ["summary", "description"] {
            if a.annotations.get(key) != Some(&true) {
                problems.push(format!("{}: no {key} annotation (or an empty one)", a.name));
            }
        }
        // The runbook: the alert's own section of deploy/prometheus/README.md.
        let anchor = format!("{RUNBOOKS}#{}", a.name.to_lowercase());
        match a.inline_annotations.get("runbook_url") {
            Some(url) if *url == anchor => {}
            other => problems.push(format!(
                "{}: runbook_url is {other:?}, want {anchor:?}",
                a.name
            )),
        }
        if !readme
            .lines()
            .any(|l| l.trim() == format!("### {}", a.name))
        {
            problems.push(format!(
                "{}: no `### {}` section in deploy/prometheus/README.md for its runbook_url",
                a.name, a.name
            ));
        }
    }

    // Recording rules: the gpucost: prefix, and each checked by a promql_expr_test.
    let recording_text = std::fs::read_to_string(dir.join("gpucost-recording.yml")).unwrap();
    let records: Vec<Rule> = parse_rules(&recording_text);
    assert!(!records.is_empty(), "no recording rules found");
    let tests: Vec<(PathBuf, String)> = yml_files(&dir.join("tests"))
        .into_iter()
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .collect();
    for r in &records {
        if r.kind != "record" || !r.name.starts_with("gpucost:") {
            problems.push(format!(
                "recording rule {}: not a `record: gpucost:...`",
                r.name
            ));
        }
        let tested = tests.iter().any(|(_, t)| {
            t.lines().any(|l| {
                l.trim()
                    .strip_prefix("- expr:")
                    .or(l.trim().strip_prefix("expr:"))
                    .is_some_and(|e| {
                        e.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                            .any(|w| w == r.name)
                    })
            })
        });
        if !tested {
            problems.push(format!("recording rule {}: no promql_expr_test", r.name));
        }
    }

    // Alerts: each has a case that fires and one that stays quiet; tests name no unknown alert.
    let mut cases = BTreeMap::new();
    for (_, t) in &tests {
        parse_alert_tests(t, &mut cases);
    }
    for name in &names {
        match cases.get(name) {
            None => problems.push(format!("{name}: not in any test file's alert_rule_test")),
            Some((fires, quiet)) => {
                if !fires {
                    problems.push(format!("{name}: no test case where it fires"));
                }
                if !quiet {
                    problems.push(format!(
                        "{name}: no test case where it stays quiet (exp_alerts: [])"
                    ));
                }
            }
        }
    }
    for name in cases.keys() {
        if !names.contains(name) {
            problems.push(format!(
                "tests name alert {name}, which gpucost-alerts.yml does not define"
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "deploy/prometheus:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_line_scan_reads_what_it_should() {
    let rules = parse_rules(
        r#"
groups:
  - name: g
    rules:
      - record: gpucost:x:rate5m
        expr: sum(rate(x[5m]))
      - alert: GpucostA
        expr: up == 0
        for: 5m
        labels:
          severity: warning
          team: infra
        annotations:
          summary: "A on {{ $labels.instance }}"
          description: >-
            Something
            long.
      - alert: GpucostB
        expr: up == 0
        annotations:
          summary: ""
          description: >-
"#,
    );
    assert_eq!(rules.len(), 3);
    assert_eq!(
        (rules[0].kind.as_str(), rules[0].name.as_str()),
        ("record", "gpucost:x:rate5m")
    );
    let a = &rules[1];
    assert_eq!(a.name, "GpucostA");
    assert_eq!(
        a.labels.get("severity").map(String::as_str),
        Some("warning")
    );
    assert_eq!(a.labels.get("team").map(String::as_str), Some("infra"));
    assert_eq!(a.annotations.get("summary"), Some(&true));
    assert_eq!(a.annotations.get("description"), Some(&true));
    assert_eq!(
        a.inline_annotations.get("summary").map(String::as_str),
        Some("A on {{ $labels.instance }}")
    );
    assert!(!a.inline_annotations.contains_key("description"));
    let b = &rules[2];
    assert!(b.labels.is_empty());
    assert_eq!(b.annotations.get("summary"), Some(&false));
    assert_eq!(b.annotations.get("description"), Some(&false));

    let mut cases = BTreeMap::new();
    parse_alert_tests(
        r#"
    alert_rule_test:
      - eval_time: 1m
        alertname: GpucostA
        exp_alerts: []
      - eval_time: 9m
        alertname: GpucostA
        exp_alerts:
          - exp_labels:
              severity: warning
      - eval_time: 9m
        alertname: GpucostB
        exp_alerts: []
"#,
        &mut cases,
    );
    assert_eq!(cases.get("GpucostA"), Some(&(true, true)));
    assert_eq!(cases.get("GpucostB"), Some(&(false, true)));
}

// --- Dashboards over long ranges -------------------------------------------------------------

/// A panel query of a dashboard in `dashboards/`, found by the panel's title and the target's
/// refId, with the dashboard variables filled in as Grafana would for `vars` (every variable
/// used must be given).
fn panel_query(file: &str, title: &str, ref_id: &str, vars: &[(&str, &str)]) -> String {
    let path = rules_dir().join("../../dashboards").join(file);
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // "annotation:NAME" is the query of the dashboard's annotation NAME.
    let mut expr = if let Some(name) = title.strip_prefix("annotation:") {
        d["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{file}: no annotation {name:?}"))["expr"]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        let panel = d["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("{file}: no panel titled {title:?}"));
        let target = panel["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["refId"] == ref_id)
            .unwrap_or_else(|| panic!("{file} / {title}: no target {ref_id}"));
        target["expr"].as_str().unwrap().to_string()
    };
    // Longest names first, so that `$__range` does not eat into `$__range_s`.
    let mut vars = vars.to_vec();
    vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    for (k, v) in vars {
        expr = expr
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    // `"$1"`: a label_replace's replacement, not a variable.
    assert!(
        !expr.replace("\"$1\"", "").contains('$'),
        "{file} / {title} / {ref_id}: a variable left unfilled: {expr}"
    );
    expr
}

/// Series as two agents export them over three hours (one sample a minute): job A of team nlp
/// runs on node1 from 0 to 60 min, fails there after costing 60 USD (all of it wasted as
/// `failed`, 30 min of its 60 GPU-minutes idle), and leaves /metrics at 65 min (jobs.grace_period
/// 5 min); job B of team vision runs on node2 from 60 min on and has cost 18 USD at 180 min.
/// Their savings levers: A would have saved 30 on spot, 15 without idle time and 40 with a
/// checkpoint (its pipes were not measured: no bf16); B 12 on spot and 6 in BF16 by 180 min. The
/// case of issue 17: a range that ends long after a job left /metrics. Node1's GPU 1 is a MIG
/// instance of its GPU 0; job C fails at 90 min on an agent that exports no gpucost_job_outcome;
/// job P is preempted at 110 min. (Start and end times are
/// real Unix times, 1764780000 for 0 min, while promtool's clock starts at 0.)
const LONG_RANGE_SERIES: &str = r#"
      - series: 'gpucost_pricing_info{job="gpucost", instance="node1:10119", currency="USD", market="on_demand"}'
        values: '1x180'
      - series: 'gpucost_pricing_info{job="gpucost", instance="node2:10119", currency="USD", market="on_demand"}'
        values: '1x180'
      - series: 'gpucost_gpu_info{job="gpucost", instance="node1:10119", gpu="0", uuid="GPU-a", model="NVIDIA H100 80GB HBM3", driver="550.54", source="nvml", parent_uuid="", gpu_instance_id="", mig_profile=""}'
        values: '1x180'
      - series: 'gpucost_gpu_info{job="gpucost", instance="node2:10119", gpu="0", uuid="GPU-b", model="NVIDIA H100 80GB HBM3", driver="550.54", source="nvml", parent_uuid="", gpu_instance_id="", mig_profile=""}'
        values: '1x180'
      - series: 'gpucost_gpu_info{job="gpucost", instance="node1:10119", gpu="1", uuid="MIG-c", model="NVIDIA H100 80GB HBM3", driver="550.54", source="nvml", parent_uuid="GPU-a", gpu_instance_id="3", mig_profile="1g.10gb"}'
        values: '1x180'
      - series: 'gpucost_job_failed{job="gpucost", instance="node2:10119", job_id="C"}'
        values: '_x80 0x9 1x5 stale'
      - series: 'gpucost_job_running{job="gpucost", instance="node2:10119", job_id="C"}'
        values: '_x80 1x9 0x5 stale'
      - series: 'gpucost_job_running{job="gpucost", instance="node2:10119", job_id="P"}'
        values: '_x100 1x9 0x5 stale'
      - series: 'gpucost_job_failed{job="gpucost", instance="node2:10119", job_id="P"}'
        values: '_x100 0x15 stale'
      - series: 'gpucost_job_outcome{job="gpucost", instance="node2:10119", job_id="P", outcome="preempted", reason="time_limit"}'
        values: '_x110 1x5 stale'
      - series: 'gpucost_job_info{job="gpucost", instance="node1:10119", job_id="A", name="pretrain", user="alice", scheduler="slurm", team="nlp"}'
        values: '1x65 stale'
      - series: 'gpucost_job_cost_total{job="gpucost", instance="node1:10119", job_id="A", component="gpu_time"}'
        values: '0+1x60 60x5 stale'
      - series: 'gpucost_job_wasted_cost_total{job="gpucost", instance="node1:10119", job_id="A", reason="failed"}'
        values: '0x59 60x6 stale'
      - series: 'gpucost_job_wasted_cost_total{job="gpucost", instance="node1:10119", job_id="A", reason="idle"}'
        values: '0x65 stale'
      - series: 'gpucost_job_gpu_seconds_total{job="gpucost", instance="node1:10119", job_id="A"}'
        values: '0+60x60 3600x5 stale'
      - series: 'gpucost_job_idle_gpu_seconds_total{job="gpucost", instance="node1:10119", job_id="A"}'
        values: '0+30x60 1800x5 stale'
      - series: 'gpucost_job_energy_joules_total{job="gpucost", instance="node1:10119", job_id="A"}'
        values: '0+36000x60 2160000x5 stale'
      - series: 'gpucost_job_carbon_grams_total{job="gpucost", instance="node1:10119", job_id="A"}'
        values: '0+4x60 240x5 stale'
      - series: 'gpucost_job_running{job="gpucost", instance="node1:10119", job_id="A"}'
        values: '1x59 0x6 stale'
      - series: 'gpucost_job_failed{job="gpucost", instance="node1:10119", job_id="A"}'
        values: '0x59 1x6 stale'
      - series: 'gpucost_job_outcome{job="gpucost", instance="node1:10119", job_id="A", outcome="running", reason=""}'
        values: '1x59 stale'
      - series: 'gpucost_job_outcome{job="gpucost", instance="node1:10119", job_id="A", outcome="failed", reason="exit_code"}'
        values: '_x60 1x5 stale'
      - series: 'gpucost_job_start_time_seconds{job="gpucost", instance="node1:10119", job_id="A"}'
        values: '1764780000x65 stale'
      - series: 'gpucost_job_end_time_seconds{job="gpucost", instance="node1:10119", job_id="A"}'
        values: '_x60 1764783600x5 stale'
      - series: 'gpucost_job_info{job="gpucost", instance="node2:10119", job_id="B", name="sweep-3", user="bob", scheduler="slurm", team="vision"}'
        values: '_x60 1x120'
      - series: 'gpucost_job_cost_total{job="gpucost", instance="node2:10119", job_id="B", component="gpu_time"}'
        values: '_x60 0+0.15x120'
      - series: 'gpucost_job_wasted_cost_total{job="gpucost", instance="node2:10119", job_id="B", reason="failed"}'
        values: '_x60 0x120'
      - series: 'gpucost_job_wasted_cost_total{job="gpucost", instance="node2:10119", job_id="B", reason="idle"}'
        values: '_x60 0x120'
      - series: 'gpucost_job_gpu_seconds_total{job="gpucost", instance="node2:10119", job_id="B"}'
        values: '_x60 0+60x120'
      - series: 'gpucost_job_idle_gpu_seconds_total{job="gpucost", instance="node2:10119", job_id="B"}'
        values: '_x60 0x120'
      - series: 'gpucost_job_energy_joules_total{job="gpucost", instance="node2:10119", job_id="B"}'
        values: '_x60 0+36000x120'
      - series: 'gpucost_job_carbon_grams_total{job="gpucost", instance="node2:10119", job_id="B"}'
        values: '_x60 0+4x120'
      - series: 'gpucost_job_running{job="gpucost", instance="node2:10119", job_id="B"}'
        values: '_x60 1x120'
      - series: 'gpucost_job_failed{job="gpucost", instance="node2:10119", job_id="B"}'
        values: '_x60 0x120'
      - series: 'gpucost_job_start_time_seconds{job="gpucost", instance="node2:10119", job_id="B"}'
        values: '_x60 1764783600x120'
      - series: 'gpucost_job_savings_potential{job="gpucost", instance="node1:10119", job_id="A", lever="spot"}'
        values: '0+0.5x60 30x5 stale'
      - series: 'gpucost_job_savings_potential{job="gpucost", instance="node1:10119", job_id="A", lever="no_idle"}'
        values: '0+0.25x60 15x5 stale'
      - series: 'gpucost_job_savings_potential{job="gpucost", instance="node1:10119", job_id="A", lever="checkpoint"}'
        values: '0x59 40x6 stale'
      - series: 'gpucost_job_savings_potential{job="gpucost", instance="node2:10119", job_id="B", lever="spot"}'
        values: '_x60 0+0.1x120'
      - series: 'gpucost_job_savings_potential{job="gpucost", instance="node2:10119", job_id="B", lever="bf16"}'
        values: '_x60 0+0.05x120'
      - series: 'gpucost_job_savings_potential{job="gpucost", instance="node2:10119", job_id="B", lever="no_idle"}'
        values: '_x60 0x120'
      - series: 'gpucost_job_savings_potential{job="gpucost", instance="node2:10119", job_id="B", lever="checkpoint"}'
        values: '_x60 0x120'
"#;

/// One check: the panel's query, rounded to `step` (`increase` extrapolates a series that ends
/// inside the range by half a scrape interval), evaluated at `at` with the variables `vars`,
/// gives exactly `want` (label set, value).
struct PanelCheck<'a> {
    file: &'a str,
    title: &'a str,
    ref_id: &'a str,
    vars: &'a [(&'a str, &'a str)],
    at: &'a str,
    step: f64,
    want: &'a [(&'a str, f64)],
}

/// Runs `promtool test rules` on `series` with one `promql_expr_test` per check.
fn promtool_panel_checks(series: &str, checks: &[PanelCheck]) {
    let mut tests = String::new();
    for c in checks {
        let expr = panel_query(c.file, c.title, c.ref_id, c.vars);
        tests.push_str(&format!(
            "      # {} / {} / {}\n      - expr: {}\n        eval_time: {}\n        exp_samples:\n",
            c.file,
            c.title,
            c.ref_id,
            serde_json::to_string(&format!("round({expr}, {})", c.step)).unwrap(),
            c.at
        ));
        for (labels, value) in c.want {
            tests.push_str(&format!(
                "          - labels: '{labels}'\n            value: {value}\n"
            ));
        }
    }
    let file = format!(
        "evaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:{series}    promql_expr_test:\n{tests}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("panels.yml");
    std::fs::write(&path, &file).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&path)
        .output()
        .expect("promtool not found: run scripts/test.sh, which installs it (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool test rules on the panels' queries failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

const FLEET_VARS: &[(&str, &str)] = &[
    ("__range", "3h"),
    ("__rate_interval", "4m"),
    ("__interval", "1m"),
    ("node", ".*"),
    ("user", ".*"),
    ("currency", "USD"),
    ("label", "team"),
    ("cluster", ".*"),
    ("namespace", ".*"),
    ("sweep", ".*"),
    ("team", ".*"),
];

/// Issue 17, item 1: every "in range" panel of the fleet dashboard counts every job that had
/// cost in the range, also one that left /metrics two hours before the range ends.
#[test]
fn fleet_range_panels_count_jobs_that_ended_long_before_the_range_ends() {
    let fleet = |title, ref_id, step, want| PanelCheck {
        file: "gpucost-fleet.json",
        title,
        ref_id,
        vars: FLEET_VARS,
        at: "180m",
        step,
        want,
    };
    let a = r#"{job_id="A", name="pretrain", user="alice", team="nlp"}"#;
    let b = r#"{job_id="B", name="sweep-3", user="bob", team="vision"}"#;
    promtool_panel_checks(
        LONG_RANGE_SERIES,
        &[
            fleet(
                "Top jobs by cost in range ($currency)",
                "A",
                1.0,
                &[(a, 60.0), (b, 18.0)],
            ),
            fleet(
                "Top jobs by cost in range ($currency)",
                "B",
                1.0,
                &[(a, 60.0), (b, 0.0)],
            ),
            fleet(
                "Top jobs by cost in range ($currency)",
                "C",
                0.1,
                &[(a, 1.0), (b, 2.0)],
            ),
            fleet(
                "Cost by $label in range ($currency)",
                "A",
                1.0,
                &[(r#"{team="nlp"}"#, 60.0), (r#"{team="vision"}"#, 18.0)],
            ),
            fleet(
                "Waste in range by reason ($currency)",
                "A",
                1.0,
                &[(r#"{reason="failed"}"#, 60.0), (r#"{reason="idle"}"#, 0.0)],
            ),
            fleet("Waste share", "A", 0.01, &[("{}", 0.77)]),
            fleet(
                "Idle GPU-hours held by jobs in range",
                "A",
                0.1,
                &[("{}", 0.5)],
            ),
            fleet(
                "Energy by $label in range",
                "A",
                0.1,
                &[(r#"{team="nlp"}"#, 0.6), (r#"{team="vision"}"#, 1.2)],
            ),
            fleet(
                "CO2e by $label in range",
                "A",
                0.01,
                &[(r#"{team="nlp"}"#, 0.24), (r#"{team="vision"}"#, 0.48)],
            ),
            fleet("Job CO2e in range", "A", 0.01, &[("{}", 0.72)]),
            // Filtered by team: only nlp's job.
            PanelCheck {
                vars: &[
                    ("__range", "3h"),
                    ("node", ".*"),
                    ("user", ".*"),
                    ("currency", "USD"),
                    ("label", "team"),
                    ("cluster", ".*"),
                    ("namespace", ".*"),
                    ("sweep", ".*"),
                    ("team", "nlp"),
                ],
                ..fleet(
                    "Cost by $label in range ($currency)",
                    "A",
                    1.0,
                    &[(r#"{team="nlp"}"#, 60.0)],
                )
            },
            // Failed and preempted runs, from gpucost_job_outcome, else gpucost_job_failed.
            PanelCheck {
                at: "62m",
                ..fleet(
                    "annotation:Failed and preempted runs",
                    "",
                    1.0,
                    &[(r#"{job_id="A", outcome="failed", reason="exit_code"}"#, 1.0)],
                )
            },
            PanelCheck {
                at: "92m",
                ..fleet(
                    "annotation:Failed and preempted runs",
                    "",
                    1.0,
                    &[(r#"{job_id="C", outcome="failed"}"#, 1.0)],
                )
            },
            // The job's own time range (a minute either side, in ms) for the link to the job
            // dashboard; a running job's ends at the range's end.
            fleet(
                "Top jobs by cost in range ($currency)",
                "D",
                1.0,
                &[(a, 1764779940000.0), (b, 1764783540000.0)],
            ),
            fleet(
                "Top jobs by cost in range ($currency)",
                "E",
                1.0,
                &[(a, 1764783660000.0), (b, 10800000.0)],
            ),
        ],
    );
}

/// Issue 20, item 2: the fleet dashboard's Savings row, what each lever would have saved by lever
/// and by team, counts a job that left /metrics long before the range ends, only what a job's
/// levers grew by within the range, and leaves a lever no agent could price out (never a 0).
#[test]
fn issue_20_savings_row_by_lever_and_team() {
    let by_lever = "Savings potential by lever, last 30 days ($currency)";
    let by_team = "Savings potential by $label, last 30 days ($currency)";
    let fleet = |title, ref_id, want| PanelCheck {
        file: "gpucost-fleet.json",
        title,
        ref_id,
        vars: FLEET_VARS,
        at: "180m",
        step: 0.01,
        want,
    };
    let (nlp, vision) = (r#"{team="nlp"}"#, r#"{team="vision"}"#);
    // From 30 min on: A's levers less what they were at 30 min (15 on spot, 7.5 idle).
    let from_30m: &[(&str, &str)] = &[
        ("__range", "150m"),
        ("node", ".*"),
        ("user", ".*"),
        ("currency", "USD"),
        ("label", "team"),
        ("cluster", ".*"),
        ("namespace", ".*"),
        ("sweep", ".*"),
        ("team", ".*"),
    ];
    promtool_panel_checks(
        LONG_RANGE_SERIES,
        &[
            fleet(
                by_lever,
                "A",
                &[
                    (r#"{lever="spot"}"#, 42.0),
                    (r#"{lever="checkpoint"}"#, 40.0),
                    (r#"{lever="no_idle"}"#, 15.0),
                    (r#"{lever="bf16"}"#, 6.0),
                ],
            ),
            PanelCheck {
                vars: from_30m,
                ..fleet(
                    by_lever,
                    "A",
                    &[
                        (r#"{lever="spot"}"#, 27.0),
                        (r#"{lever="checkpoint"}"#, 40.0),
                        (r#"{lever="no_idle"}"#, 7.5),
                        (r#"{lever="bf16"}"#, 6.0),
                    ],
                )
            },
            // By team: spot (A), bf16 (D: nlp has none), no_idle (E), checkpoint (F).
            fleet(by_team, "A", &[(nlp, 30.0), (vision, 12.0)]),
            fleet(by_team, "B", &[]),
            fleet(by_team, "D", &[(vision, 6.0)]),
            fleet(by_team, "E", &[(nlp, 15.0), (vision, 0.0)]),
            fleet(by_team, "F", &[(nlp, 40.0), (vision, 0.0)]),
            // Another currency: nothing.
            PanelCheck {
                vars: &[
                    ("__range", "3h"),
                    ("node", ".*"),
                    ("user", ".*"),
                    ("currency", "EUR"),
                    ("label", "team"),
                    ("cluster", ".*"),
                    ("namespace", ".*"),
                    ("sweep", ".*"),
                    ("team", ".*"),
                ],
                ..fleet(by_lever, "A", &[])
            },
        ],
    );
}

/// Issue 15 on the dashboards: a MIG instance is listed with its physical GPU's UUID, which for a
/// whole GPU is its own (the table sorts by it, so instances sit under their GPU).
#[test]
fn gpu_table_puts_mig_instances_under_their_physical_gpu() {
    let vars: &[(&str, &str)] = &[("cluster", ".*"), ("node", "node1.*"), ("gpu", ".*")];
    promtool_panel_checks(
        LONG_RANGE_SERIES,
        &[PanelCheck {
            file: "gpucost-gpu-health.json",
            title: "GPUs",
            ref_id: "A",
            vars,
            at: "180m",
            step: 1.0,
            want: &[
                (
                    r#"{job="gpucost", instance="node1:10119", gpu="0", uuid="GPU-a", model="NVIDIA H100 80GB HBM3", driver="550.54", source="nvml", parent_uuid="GPU-a"}"#,
                    1.0,
                ),
                (
                    r#"{job="gpucost", instance="node1:10119", gpu="1", uuid="MIG-c", model="NVIDIA H100 80GB HBM3", driver="550.54", source="nvml", parent_uuid="GPU-a", gpu_instance_id="3", mig_profile="1g.10gb"}"#,
                    1.0,
                ),
            ],
        }],
    );
}

const JOB_VARS: &[(&str, &str)] = &[
    ("__range", "3h"),
    ("__rate_interval", "4m"),
    ("__interval", "1m"),
    ("node", ".*"),
    ("user", ".*"),
    ("currency", "USD"),
    ("job_id", "A"),
    ("cluster", ".*"),
];

/// Issue 17, item 2: "what did this run cost?" after the run ended and left /metrics: every
/// figure of the job dashboard, two hours after the job ended.
#[test]
fn job_dashboard_figures_stay_correct_after_the_job_left_metrics() {
    let job = |title, step, want| PanelCheck {
        file: "gpucost-job.json",
        title,
        ref_id: "A",
        vars: JOB_VARS,
        at: "180m",
        step,
        want,
    };
    promtool_panel_checks(
        LONG_RANGE_SERIES,
        &[
            // 2: failed (the value mapping).
            job("State", 1.0, &[(r#"{job_id="A"}"#, 2.0)]),
            job("Cost so far ($currency)", 0.01, &[("{}", 60.0)]),
            job("Wasted so far ($currency)", 0.01, &[("{}", 60.0)]),
            job("GPU-hours", 0.01, &[("{}", 1.0)]),
            job(
                "Cost by component ($currency)",
                0.01,
                &[(r#"{component="gpu_time"}"#, 60.0)],
            ),
            job(
                "Waste by reason ($currency)",
                0.01,
                &[(r#"{reason="failed"}"#, 60.0), (r#"{reason="idle"}"#, 0.0)],
            ),
            job("Energy so far", 0.01, &[("{}", 0.6)]),
            job("CO2e so far", 0.01, &[("{}", 0.24)]),
            job("Idle GPU-hours", 0.01, &[("{}", 0.5)]),
            // 4: preempted; C failed on an agent without gpucost_job_outcome: 2.
            PanelCheck {
                vars: &[("__range", "3h"), ("cluster", ".*"), ("job_id", "P|C")],
                ..job(
                    "State",
                    1.0,
                    &[(r#"{job_id="P"}"#, 4.0), (r#"{job_id="C"}"#, 2.0)],
                )
            },
            job("Started", 1.0, &[("{}", 1764780000000.0)]),
            job("Ended", 1.0, &[("{}", 1764783600000.0)]),
            job("Duration", 1.0, &[("{}", 3600.0)]),
            job(
                "Job",
                1.0,
                &[(
                    r#"{job="gpucost", instance="node1:10119", job_id="A", name="pretrain", user="alice", scheduler="slurm", team="nlp"}"#,
                    1.0,
                )],
            ),
        ],
    );
}
