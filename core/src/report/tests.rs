use std::collections::BTreeSet;

use super::*;
use crate::jobs::{Outcome, Progress, Scheduler, Usage};

/// A 2-GPU job: 7200 GPU-s (2 GPU-h), 3.6e6 J (1 kWh), 400 g CO2, 10 + 0.5 + 1.5 = 12 EUR,
/// 1800 idle GPU-s (25 %) costing 3 EUR.
fn job(id: &str, outcome: Outcome, labels: &[(&str, &str)]) -> JobRecord {
    let usage = Usage {
        gpu_seconds: 7200.0,
        energy_j: 3.6e6,
        carbon_g: 400.0,
        cost_gpu_time: 10.0,
        cost_energy: 0.5,
        cost_overhead: 1.5,
        idle_gpu_seconds: 1800.0,
        idle_cost: 3.0,
        ..Usage::default()
    };
    let half = Usage::from_array(usage.to_array().map(|v| v / 2.0));
    JobRecord {
        id: id.to_string(),
        name: format!("train-{id}"),
        user: "alice".to_string(),
        uid: Some(1000),
        scheduler: Scheduler::Slurm,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        started_at: 1_795_677_300.0, // 2026-11-26T07:15:00Z
        ended_at: (outcome != Outcome::Running).then_some(1_795_677_300.0 + 3600.0),
        outcome,
        exit_code: match outcome {
            Outcome::Succeeded => Some(0),
            Outcome::Failed => Some(1),
            _ => None,
        },
        signal: None,
        reason: None,
        usage,
        per_gpu: [("GPU-a".to_string(), half), ("GPU-b".to_string(), half)]
            .into_iter()
            .collect(),
        registration: None,
        progress: None,
    }
}

/// The value of column `name` among `values`.
fn get<'v>(mut values: impl Iterator<Item = (&'static str, Value<'v>)>, name: &str) -> Value<'v> {
    values
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .1
}

fn jobs_of<'r>(report: &'r Report<'_>) -> &'r [JobRow<'r>] {
    match &report.rows {
        Rows::Jobs(rows) => rows,
        Rows::Groups { .. } => panic!("grouped"),
    }
}

fn groups_of<'r>(report: &'r Report<'_>) -> &'r [GroupRow] {
    match &report.rows {
        Rows::Groups { groups, .. } => groups,
        Rows::Jobs(_) => panic!("not grouped"),
    }
}

#[test]
fn derived_numbers_by_hand() {
    // (outcome, gpu_hours, kwh, co2_kg, cost_total, idle_share, wasted_cost)
    let cases = [
        (Outcome::Succeeded, 2.0, 1.0, 0.4, 12.0, 0.25, 3.0),
        (Outcome::Running, 2.0, 1.0, 0.4, 12.0, 0.25, 3.0),
        // A failed run wastes all it cost.
        (Outcome::Failed, 2.0, 1.0, 0.4, 12.0, 0.25, 12.0),
    ];
    for (outcome, gpu_hours, kwh, co2_kg, cost_total, idle_share, wasted) in cases {
        let jobs = [job("j", outcome, &[])];
        let report = Report::new(&jobs, None).unwrap();
        let row = &jobs_of(&report)[0];
        let v = |name| get(row.values(), name);
        assert_eq!(v("gpu_hours"), Value::Real(gpu_hours), "{outcome:?}");
        assert_eq!(v("kwh"), Value::Real(kwh));
        assert_eq!(v("co2_kg"), Value::Real(co2_kg));
        assert_eq!(v("cost_total"), Value::Real(cost_total));
        assert_eq!(v("idle_share"), Value::Real(idle_share));
        assert_eq!(v("wasted_cost"), Value::Real(wasted));
        assert_eq!(v("gpus"), Value::Count(2));
        assert_eq!(v("gpu_seconds"), Value::Real(7200.0));
        assert_eq!(v("energy_j"), Value::Real(3.6e6));
        assert_eq!(v("start"), Value::Time(1_795_677_300.0));
        assert_eq!(
            get(report.total.values(), "wasted_cost"),
            Value::Real(wasted)
        );
    }
}

#[test]
fn what_a_job_that_has_not_ended_or_reported_lacks() {
    let mut j = job("r", Outcome::Running, &[]);
    j.uid = None;
    let row = JobRow::new(&j);
    for name in [
        "end",
        "ended_at",
        "uid",
        "exit_code",
        "signal",
        "reason",
        "tokens",
        "cost_per_million_tokens",
        "joules_per_token",
    ] {
        assert_eq!(get(row.values(), name), Value::Missing, "{name}");
    }
}

#[test]
fn tokens_give_cost_and_energy_per_token() {
    let mut j = job("t", Outcome::Succeeded, &[]);
    j.progress = Some(Progress {
        tokens: 2_000_000,
        ..Progress::default()
    });
    let row = JobRow::new(&j);
    assert_eq!(row.tokens(), Some(2_000_000));
    // 12 EUR for 2M tokens; 3.6e6 J for 2M tokens.
    assert_eq!(row.cost_per_million_tokens(), Some(6.0));
    assert_eq!(row.joules_per_token(), Some(1.8));
    assert_eq!(get(row.values(), "tokens"), Value::Count(2_000_000));
    // Zero tokens reported is no report.
    j.progress = Some(Progress::default());
    assert_eq!(JobRow::new(&j).tokens(), None);
}

#[test]
fn idle_share_is_zero_without_gpu_seconds() {
    let mut j = job("j", Outcome::Succeeded, &[]);
    j.usage = Usage::default();
    j.per_gpu.clear();
    let jobs = [j];
    let report = Report::new(&jobs, None).unwrap();
    let row = &jobs_of(&report)[0];
    assert_eq!(row.figures.idle_share(), 0.0);
    assert_eq!(row.gpus(), 0);
    assert_eq!(report.total.figures.idle_share(), 0.0);
}

#[test]
fn totals_sum_the_jobs() {
    let mut running = job("r", Outcome::Running, &[("team", "nlp")]);
    running.uid = None;
    let jobs = [job("s", Outcome::Succeeded, &[]), running];
    let t = Report::new(&jobs, None).unwrap().total;
    assert_eq!((t.jobs, t.failed), (2, 0));
    assert_eq!(t.figures.gpu_hours(), 4.0);
    assert_eq!(t.figures.kwh(), 2.0);
    assert_eq!(t.figures.usage.cost_gpu_time, 20.0);
    assert_eq!(t.figures.cost_total(), 24.0);
    assert_eq!(t.figures.co2_kg(), 0.8);
    assert_eq!(t.figures.wasted_cost, 6.0);
}

#[test]
fn group_by_must_be_label_and_a_key() {
    assert_eq!(parse_group_by("label:team").unwrap(), "team");
    assert_eq!(parse_group_by("label:a:b").unwrap(), "a:b");
    let jobs = [job("1", Outcome::Succeeded, &[])];
    for bad in ["team", "label:", "label: ", "user", "Label:team", ""] {
        let err = Report::new(&jobs, Some(bad)).unwrap_err();
        assert!(matches!(err, ReportError::BadGroupBy(_)), "{bad}");
        assert!(err.to_string().contains("label:KEY"), "{err}");
    }
}

#[test]
fn empty_input() {
    for group_by in [None, Some("label:team")] {
        let report = Report::new(&[], group_by).unwrap();
        assert!(report.is_empty());
        assert_eq!(report.total, Totals::default());
    }
}

fn grouped_jobs() -> Vec<JobRecord> {
    let mut cheap = job("c", Outcome::Succeeded, &[("team", "vision")]);
    cheap.usage.cost_gpu_time = 1.0; // total 3.0
    vec![
        job("a", Outcome::Succeeded, &[("team", "nlp")]),
        job("b", Outcome::Failed, &[("team", "nlp"), ("proj", "x")]),
        cheap,
        job("d", Outcome::Unknown, &[("proj", "y")]),
    ]
}

#[test]
fn group_by_label_sums() {
    let jobs = grouped_jobs();
    let report = Report::new(&jobs, Some("label:team")).unwrap();
    assert!(matches!(&report.rows, Rows::Groups { by, .. } if by == "label:team"));
    let groups = groups_of(&report);
    // (group, jobs, failed, gpu_hours, kwh, cost_gpu_time, cost_total, co2_kg, wasted_cost)
    let want = [
        ("nlp", 2, 1, 4.0, 2.0, 20.0, 24.0, 0.8, 3.0 + 12.0),
        ("(none)", 1, 0, 2.0, 1.0, 10.0, 12.0, 0.4, 3.0),
        ("vision", 1, 0, 2.0, 1.0, 1.0, 3.0, 0.4, 3.0),
    ];
    assert_eq!(groups.len(), want.len());
    for (g, (name, jobs, failed, gpu_h, kwh, gpu_time, total, co2, wasted)) in
        groups.iter().zip(want)
    {
        let (t, f) = (&g.totals, &g.totals.figures);
        assert_eq!(g.group, name);
        assert_eq!((t.jobs, t.failed), (jobs, failed), "{name}");
        assert_eq!(f.gpu_hours(), gpu_h, "{name}");
        assert_eq!(f.kwh(), kwh, "{name}");
        assert_eq!(f.usage.cost_gpu_time, gpu_time, "{name}");
        assert_eq!(f.usage.cost_energy, 0.5 * jobs as f64, "{name}");
        assert_eq!(f.usage.cost_overhead, 1.5 * jobs as f64, "{name}");
        assert_eq!(f.cost_total(), total, "{name}");
        assert_eq!(f.co2_kg(), co2, "{name}");
        assert_eq!(f.wasted_cost, wasted, "{name}");
        assert_eq!(get(g.values(), "group"), Value::Text(name));
    }
    let t = &report.total;
    assert_eq!((t.jobs, t.failed), (4, 1));
    assert_eq!(t.figures.gpu_hours(), 8.0);
    assert_eq!(t.figures.cost_total(), 39.0);
    assert_eq!(t.figures.wasted_cost, 21.0);
}

#[test]
fn column_names_are_unique_and_the_rows_give_them_in_order() {
    let j = job("j", Outcome::Succeeded, &[("team", "nlp")]);
    let row = JobRow::new(&j);
    let g = GroupRow {
        group: "nlp".to_string(),
        totals: Totals::over([&j]),
    };
    let sets: [(Vec<&str>, Vec<&str>); 3] = [
        (
            JobRow::column_names().collect(),
            row.values().map(|(n, _)| n).collect(),
        ),
        (
            Totals::column_names().collect(),
            g.totals.values().map(|(n, _)| n).collect(),
        ),
        (
            GroupRow::column_names().collect(),
            g.values().map(|(n, _)| n).collect(),
        ),
    ];
    for (names, from_values) in sets {
        assert_eq!(names, from_values);
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }
    assert_eq!(JobRow::column_names().count(), 33);
    // The figures of the total are job columns too: the TOTAL row of a per-job CSV lines up.
    let job_columns: BTreeSet<&str> = JobRow::column_names().collect();
    for c in columns::FIGURES {
        assert!(job_columns.contains(c.name), "{}", c.name);
    }
}

#[test]
fn issue_16_a_failed_jobs_reason_is_a_column() {
    let mut j = job("t", Outcome::Failed, &[]);
    j.reason = Some(crate::jobs::EndReason::TimeLimit);
    let row = JobRow::new(&j);
    assert_eq!(get(row.values(), "outcome"), Value::Text("failed"));
    assert_eq!(get(row.values(), "reason"), Value::Text("time_limit"));
}
