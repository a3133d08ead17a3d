//! Jobs with round numbers for the renderers' tests.

use serde_json::Value;

use super::{render, Format, ReportOptions};
use gpucost_core::jobs::{JobRecord, Outcome, Scheduler, Usage};

pub(super) fn opts(format: Format, group_by: Option<&str>) -> ReportOptions {
    ReportOptions {
        format,
        group_by: group_by.map(str::to_string),
        currency: "EUR".to_string(),
    }
}

/// A 2-GPU job that ran from 2026-11-26T07:15:00Z for an hour (unless still running): 7200
/// GPU-s (2 GPU-h), 3.6e6 J (1 kWh), 400 g CO2, 10 + 0.5 + 1.5 = 12 EUR, 1800 idle GPU-s (25 %)
/// costing 3 EUR.
pub(super) fn job(id: &str, outcome: Outcome, labels: &[(&str, &str)]) -> JobRecord {
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
        started_at: 1_795_677_300.0,
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

/// Four jobs: a and b (failed) of team nlp, c of team vision costing 3 EUR, d of no team; b
/// and d have a `proj` label.
pub(super) fn grouped_jobs() -> Vec<JobRecord> {
    let mut cheap = job("c", Outcome::Succeeded, &[("team", "vision")]);
    cheap.usage.cost_gpu_time = 1.0; // total 3.0
    vec![
        job("a", Outcome::Succeeded, &[("team", "nlp")]),
        job("b", Outcome::Failed, &[("team", "nlp"), ("proj", "x")]),
        cheap,
        job("d", Outcome::Unknown, &[("proj", "y")]),
    ]
}

pub(super) fn render_json(jobs: &[JobRecord], group_by: Option<&str>) -> Value {
    serde_json::from_str(&render(jobs, &opts(Format::Json, group_by)).unwrap()).unwrap()
}
