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
