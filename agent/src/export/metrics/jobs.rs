//! Each job's series: identity (`gpucost_job_info`), totals, waste, progress and rates. Per-job
//! series carry `job_id` only; the rest joins through `gpucost_job_info`.

use gpucost_core::jobs::{JobRecord, Outcome};
use gpucost_core::report::whatif;

use super::{bool_value, Families};
use crate::snapshot::Snapshot;

/// The per-job families, in the order they are written.
pub(super) const JOB_FAMILIES: [&str; 20] = [
    "gpucost_job_info",
    "gpucost_job_gpu_seconds_total",
    "gpucost_job_energy_joules_total",
    "gpucost_job_carbon_grams_total",
    "gpucost_job_cost_total",
    "gpucost_job_idle_gpu_seconds_total",
    "gpucost_job_wasted_cost_total",
    "gpucost_job_savings_potential",
    "gpucost_job_fp32_gpu_seconds_total",
    "gpucost_job_tokens_total",
    "gpucost_job_samples_total",
    "gpucost_job_budget",
    "gpucost_job_achieved_flops",
    "gpucost_job_mfu_ratio",
    "gpucost_job_running",
    "gpucost_job_failed",
    "gpucost_job_start_time_seconds",
    "gpucost_job_end_time_seconds",
    "gpucost_job_outcome",
    // Anything render_job writes that is not listed above (a test keeps this empty).
    "",
];

/// One job's series (identity, totals, rates), in the order the families are rendered.
pub(super) fn render_job(f: &mut Families, snap: &Snapshot, j: &JobRecord) {
    let id = [("job_id", j.id.as_str())];
    let mut info: Vec<(&str, &str)> = vec![
        ("job_id", &j.id),
        ("name", &j.name),
        ("user", &j.user),
        ("scheduler", j.scheduler.as_str()),
    ];
    for k in snap.export_labels.iter() {
        info.push((k, j.labels.get(k).map_or("", String::as_str)));
    }
    f.gauge(
        "gpucost_job_info",
        "One series per known job with its identity; 1.",
        &info,
        1.0,
    );
    let u = &j.usage;
    f.counter(
        "gpucost_job_gpu_seconds_total",
        "GPU-seconds the job held (shares of shared GPUs).",
        &id,
        u.gpu_seconds,
    );
    f.counter(
        "gpucost_job_energy_joules_total",
        "Energy of the job's GPU share.",
        &id,
        u.energy_j,
    );
    f.counter(
        "gpucost_job_carbon_grams_total",
        "CO2e of the job's energy at the configured PUE and grid intensity.",
        &id,
        u.carbon_g,
    );
    for (component, v) in [
        ("gpu_time", u.cost_gpu_time),
        ("energy", u.cost_energy),
        ("overhead", u.cost_overhead),
    ] {
        f.counter(
            "gpucost_job_cost_total",
            "Cost of the job by component, in the pricing currency.",
            &[("job_id", &j.id), ("component", component)],
            v,
        );
    }
    f.counter(
        "gpucost_job_idle_gpu_seconds_total",
        "GPU-seconds the job held while the GPU was idle.",
        &id,
        u.idle_gpu_seconds,
    );
    // The reasons add up to `JobRecord::wasted_cost`, no part of the cost under two of them:
    // a failed or preempted run's cost since its last checkpoint (its whole cost without one)
    // is split into its idle part, its FP32 part and the rest, under the outcome's name.
    let w = j.waste();
    let lost = |o: Outcome| if j.outcome == o { w.lost } else { 0.0 };
    for (reason, v) in [
        ("idle", w.idle),
        ("fp32", w.fp32),
        ("failed", lost(Outcome::Failed)),
        ("preempted", lost(Outcome::Preempted)),
    ] {
        f.counter(
            "gpucost_job_wasted_cost_total",
            "Cost that bought nothing: idle = held while idle; fp32 = what mixed precision would have saved of FP32-bound time; failed, preempted = the rest of what a failed or preempted run cost since its last checkpoint (since its start without one). A cancelled run is not a failure.",
            &[("job_id", &j.id), ("reason", reason)],
            v,
        );
    }
    // What each lever would have saved, as `gpucost report --what-if` figures it (the same
    // function, the same prices); a lever whose inputs are unknown has no series.
    let prices = &snap.what_if;
    let what_if = whatif::what_if(j, &prices.model_of, &prices.pricing, &prices.opts);
    for (lever, saving) in what_if.savings() {
        f.gauge(
            "gpucost_job_savings_potential",
            "What each lever would have saved of the job's cost so far, in the pricing currency (negative where it would have cost more), as `gpucost report --what-if` figures it: spot, reserved = its GPU time at that rate (spot with a tenth done again); off_peak = its energy at the cheapest tariff; bf16 = its FP32-bound time at the measured BF16 speedup; no_idle = without its idle GPU time; checkpoint = a failed or preempted run's cost lost since its last checkpoint. Absent where a lever's inputs are unknown (no such rate, no pipe activity measured, an unknown outcome).",
            &[("job_id", &j.id), ("lever", lever.as_str())],
            saving,
        );
    }
    f.counter(
        "gpucost_job_fp32_gpu_seconds_total",
        "GPU-seconds the job spent FP32-bound: FP32 pipe busy, tensor cores idle.",
        &id,
        u.fp32_seconds,
    );
    if let Some(p) = j.progress.as_ref() {
        f.counter(
            "gpucost_job_tokens_total",
            "Tokens the job reported processing.",
            &id,
            p.tokens as f64,
        );
        f.counter(
            "gpucost_job_samples_total",
            "Samples the job reported processing.",
            &id,
            p.samples as f64,
        );
    }
    // A job labelled budget=AMOUNT (in the pricing currency) gets its budget exported, for
    // the over-budget alert.
    if let Some(budget) = j.labels.get("budget").and_then(|b| b.parse::<f64>().ok()) {
        if budget.is_finite() && budget >= 0.0 {
            f.gauge(
                "gpucost_job_budget",
                "The job's budget, from its `budget` label, in the pricing currency.",
                &id,
                budget,
            );
        }
    }
    let rate = snap.job_rates.get(&j.id);
    let peak = rate.map_or(0.0, |r| r.peak_flops);
    let reported = j.progress.as_ref().and_then(|p| p.flop_rate);
    let live = j.outcome == Outcome::Running;
    for (source, achieved) in [
        ("counters", rate.and_then(|r| r.achieved_flops)),
        ("reported", reported),
    ] {
        let Some(achieved) = achieved.filter(|_| live) else {
            continue;
        };
        let labels = [("job_id", j.id.as_str()), ("source", source)];
        f.gauge(
            "gpucost_job_achieved_flops",
            "FLOP/s the job achieves: from pipe activity x SMs x FLOP per clock per SM x the SM clock (counters) or from the progress it reports (reported).",
            &labels,
            achieved,
        );
        if peak > 0.0 {
            f.gauge(
                "gpucost_job_mfu_ratio",
                "Achieved FLOP/s over the dense BF16 peak of the job's GPU shares.",
                &labels,
                achieved / peak,
            );
        }
    }
    f.gauge(
        "gpucost_job_running",
        "1 while the job runs.",
        &id,
        bool_value(j.outcome == Outcome::Running),
    );
    f.gauge(
        "gpucost_job_failed",
        "1 when the job ended failed.",
        &id,
        bool_value(j.outcome == Outcome::Failed),
    );
    // When the job ran, so that a dashboard can open at the job's own time range and a query
    // can find a job that ended long before the range it looks at ends (issue 17).
    f.gauge(
        "gpucost_job_start_time_seconds",
        "When the job started, in seconds since the Unix epoch.",
        &id,
        j.started_at,
    );
    if let Some(ended) = j.ended_at {
        f.gauge(
            "gpucost_job_end_time_seconds",
            "When the job ended, in seconds since the Unix epoch; absent while it runs.",
            &id,
            ended,
        );
    }
    f.gauge(
        "gpucost_job_outcome",
        "1 for the job's current outcome (running, succeeded, failed, cancelled, preempted, unknown); reason = why it failed (exit_code, signal, time_limit, oom, node_fail), empty when unknown or not failed.",
        &[
            ("job_id", j.id.as_str()),
            ("outcome", j.outcome.as_str()),
            ("reason", j.reason.map_or("", |r| r.as_str())),
        ],
        1.0,
    );
}
