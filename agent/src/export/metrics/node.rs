//! The node's own series: the agent's health, each GPU's readings and totals, benchmarks, and
//! the node-level job counters.

use gpucost_core::jobs::Outcome;
use gpucost_core::reading::ThrottleReason;
use prometheus::proto::MetricFamily;

use super::{bool_value, Families};
use crate::snapshot::Snapshot;

/// Every family but the per-job ones.
pub(super) fn node_families(snap: &Snapshot) -> Vec<MetricFamily> {
    let mut f = Families {
        list: Vec::new(),
        simulated: snap.simulated.is_some(),
    };
    f.gauge(
        "gpucost_build_info",
        "gpucost build; always 1.",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    f.gauge(
        "gpucost_nvml_up",
        "1 when the GPU library (NVML, or the simulated node) is loaded and answering; 0 while it \
         is missing, released on request, or failing on every GPU.",
        &[],
        bool_value(snap.backend_up),
    );
    f.gauge(
        "gpucost_nvml_paused",
        "1 while an operator has the agent let go of the GPU library (SIGUSR1, until SIGUSR2): \
         nothing is measured meanwhile.",
        &[],
        bool_value(snap.backend_paused),
    );
    f.counter(
        "gpucost_agent_nvml_reopens_total",
        "Times the GPU library was closed and opened again because every GPU failed, since the \
         agent started.",
        &[],
        snap.backend_reopens as f64,
    );
    f.gauge(
        "gpucost_xid_listener_up",
        "1 while the listener for Xid errors and other driver events waits for them on the GPUs; \
         0 while it restarts after a failure, while no GPU could be registered, or while the GPU \
         library is down (Xids would be missed).",
        &[],
        bool_value(snap.xid_listener_up),
    );
    f.gauge(
        "gpucost_agent_sample_duration_seconds",
        "Wall time of the last sampling cycle.",
        &[],
        snap.sample_duration_s,
    );
    f.counter(
        "gpucost_agent_samples_total",
        "Sampling cycles run since the agent started.",
        &[],
        snap.samples_total as f64,
    );
    f.counter(
        "gpucost_agent_skipped_samples_total",
        "Sampling ticks skipped because a cycle ran late (a slow or hung NVML call).",
        &[],
        snap.skipped_samples as f64,
    );
    f.counter(
        "gpucost_agent_late_requests_total",
        "Socket requests dropped unanswered because they waited past their caller's deadline.",
        &[],
        snap.late_requests as f64,
    );
    for (gpu, field, kind, n) in &snap.sample_errors {
        f.counter(
            "gpucost_agent_sample_errors_total",
            "Failed reads; field is \"all\" when the whole GPU could not be read, kind \
             \"timeout\" for a read that missed its deadline.",
            &[("gpu", &gpu.to_string()), ("field", field), ("kind", kind)],
            *n as f64,
        );
    }
    for (gpu, event, n) in &snap.driver_events {
        f.counter(
            "gpucost_gpu_driver_events_total",
            "Driver events other than Xids the event listener heard (ecc_single_bit, \
             ecc_double_bit, gpu_unavailable, gpu_lost), since the agent started.",
            &[("gpu", &gpu.to_string()), ("event", event)],
            *n as f64,
        );
    }
    let driver = snap.driver.as_deref().unwrap_or("unknown");
    for g in &snap.gpus {
        let idx = g.info.index.to_string();
        let gpu = [("gpu", idx.as_str())];
        let v = g.view(snap.source, &snap.published);
        let mut info = vec![
            ("gpu", idx.as_str()),
            ("uuid", g.info.uuid.as_str()),
            ("model", g.info.model.as_str()),
            ("driver", driver),
            ("source", snap.source.as_str()),
        ];
        // A MIG instance says what it is a slice of (issue 15); a whole GPU has none of these.
        let mig_labels = g.info.mig.as_ref().map(|m| {
            [
                m.parent_index.to_string(),
                m.gpu_instance_id.to_string(),
                m.slices.to_string(),
                m.parent_slices.to_string(),
            ]
        });
        if let (Some(m), Some([parent_gpu, gi, slices, parent_slices])) =
            (g.info.mig.as_ref(), mig_labels.as_ref())
        {
            info.extend([
                ("parent_gpu", parent_gpu.as_str()),
                ("parent_uuid", m.parent_uuid.as_str()),
                ("gpu_instance_id", gi.as_str()),
                ("mig_profile", m.profile.as_str()),
                ("mig_slices", slices.as_str()),
                ("parent_slices", parent_slices.as_str()),
            ]);
        }
        f.gauge(
            "gpucost_gpu_info",
            "One series per GPU (a MIG instance is one: parent_gpu, parent_uuid, \
             gpu_instance_id, mig_profile, mig_slices and parent_slices say of what) with its \
             identity; 1.",
            &info,
            1.0,
        );
        f.gauge(
            "gpucost_gpu_up",
            "1 when the GPU answered the last sample, 0 while it is lost or unreadable.",
            &gpu,
            bool_value(g.up),
        );
        let rec = snap.published.gpus.get(&g.info.uuid);
        let usage = rec.map(|r| r.usage).unwrap_or_default();
        f.counter(
            "gpucost_gpu_energy_joules_total",
            "Energy used by the GPU, as persisted in the ledger; never decreases, also across restarts.",
            &gpu,
            v.energy_joules_total,
        );
        f.counter(
            "gpucost_gpu_cost_total",
            "Cost of the GPU (GPU time, energy, overhead), allocated or not, in the pricing currency.",
            &gpu,
            usage.total_cost(),
        );
        f.counter(
            "gpucost_gpu_idle_seconds_total",
            "Seconds the GPU spent below the idle utilization threshold.",
            &gpu,
            usage.idle_gpu_seconds,
        );
        f.counter(
            "gpucost_gpu_unallocated_seconds_total",
            "Seconds the GPU was held by no job.",
            &gpu,
            rec.map_or(0.0, |r| r.unallocated_seconds),
        );
        if let Some(m) = v.energy_method {
            f.gauge(
                "gpucost_gpu_energy_method_info",
                "How the GPU's energy is measured now: counter (NVML energy counter) or \
                 power_integration (power x time); 1.",
                &[("gpu", &idx), ("method", m.as_str())],
                1.0,
            );
        }
        f.counter(
            "gpucost_gpu_unmeasured_seconds_total",
            "Seconds the GPU was not measured (lost, failing, stuck in a call, or the library \
             closed or released), since the agent started; no time, energy or cost is counted \
             for them.",
            &gpu,
            g.health.unmeasured_s,
        );
        f.counter(
            "gpucost_gpu_energy_resets_total",
            "Times the GPU's energy counter went backwards or jumped (driver reload, wrap), since the agent started.",
            &gpu,
            g.totals.energy.counter_resets() as f64,
        );
        // Like the other totals, as last persisted: they continue across restarts.
        let events = rec.map(|r| &r.events);
        for reason in ThrottleReason::ALL {
            f.counter(
                "gpucost_gpu_throttled_seconds_total",
                "Seconds the GPU's clocks were held down, by reason: NVML's violation-time counters where the GPU has one for the reason, else the clock-event reason bit at each sample. An idle GPU is not counted; low_utilization is clocks lowered for lack of work, not a limit on it. As persisted in the ledger; never decreases, also across restarts.",
                &[("gpu", &idx), ("reason", reason.as_str())],
                events.map_or(0.0, |e| e.throttled_s[reason.index()]),
            );
        }
        for (xid, n) in events.map(|e| &e.xids).into_iter().flatten() {
            f.counter(
                "gpucost_gpu_xid_errors_total",
                "Xid errors the driver reported for the GPU, by code, as persisted in the ledger; never decreases, also across restarts.",
                &[("gpu", &idx), ("xid", &xid.to_string())],
                *n as f64,
            );
        }
        let gauges = [
            (
                "gpucost_gpu_power_watts",
                "Board power averaged over the last second (NVML_FI_DEV_POWER_AVERAGE); on GPUs \
                 without that average (GA100 and older: A100, V100) the instantaneous power.",
                v.power_watts,
            ),
            (
                "gpucost_gpu_power_instant_watts",
                "Board power at the moment of the sample (NVML_FI_DEV_POWER_INSTANT), where the \
                 GPU reports it.",
                v.power_instant_watts,
            ),
            (
                "gpucost_gpu_power_limit_watts",
                "Enforced power limit.",
                v.power_limit_watts,
            ),
            (
                "gpucost_gpu_utilization_ratio",
                "Share of the time since the previous sample in which a kernel ran (0..1): the driver's utilization samples over the interval, or where it has none its last sample period (1/6 s to 1 s by product).",
                v.utilization_ratio,
            ),
            (
                "gpucost_gpu_memory_used_bytes",
                "GPU memory in use.",
                v.memory_used_bytes.map(|b| b as f64),
            ),
            (
                "gpucost_gpu_memory_total_bytes",
                "GPU memory installed.",
                v.memory_total_bytes.map(|b| b as f64),
            ),
            (
                "gpucost_gpu_sm_clock_hertz",
                "Current SM clock.",
                v.sm_clock_hertz,
            ),
            (
                "gpucost_gpu_temperature_celsius",
                "GPU core temperature.",
                v.temperature_celsius.map(f64::from),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                f.gauge(name, help, &gpu, value);
            }
        }
        if let Some(pipes) = g.reading.as_ref().and_then(|r| r.pipes) {
            // A pipe whose GPM metric failed is unknown: no series, rather than a zero.
            for (pipe, v) in pipes.labelled() {
                let Some(v) = v else { continue };
                f.gauge(
                    "gpucost_gpu_pipe_active_ratio",
                    "Share of the last interval each pipe was busy (NVML GPM; Hopper and newer); absent for a pipe whose metric failed.",
                    &[("gpu", &idx), ("pipe", pipe)],
                    v,
                );
            }
        }
        if let Some(spec) = gpucost_hw::peaks::lookup(&g.info.model) {
            for precision in gpucost_hw::peaks::Precision::ALL {
                if let Some(peak) = spec.peak(precision) {
                    f.gauge(
                        "gpucost_gpu_peak_flops",
                        "Datasheet dense peak of the GPU model per precision (FLOP/s; OP/s for int8); of a MIG instance, its slices' share of it.",
                        &[("gpu", &idx), ("precision", precision.as_str())],
                        peak * g.info.share(),
                    );
                }
            }
        }
        if let Some(b) = snap.benchmarks.get(&g.info.uuid) {
            for (precision, method, flops) in &b.flops {
                f.gauge(
                    "gpucost_gpu_benchmark_flops",
                    "FLOP/s (OP/s for int8) the GPU delivered in its latest benchmark: our kernels (kernel) or the vendor library (library).",
                    &[("gpu", &idx), ("precision", precision.as_str()), ("method", method)],
                    *flops,
                );
            }
            for (op, bps) in &b.memory {
                f.gauge(
                    "gpucost_gpu_benchmark_bandwidth_bytes_per_second",
                    "Memory bandwidth the GPU delivered in its latest benchmark.",
                    &[("gpu", &idx), ("op", op)],
                    *bps,
                );
            }
            let ratios = gpucost_core::benchmark::ratios(&g.info.model, b);
            for (precision, r) in &ratios {
                f.gauge(
                    "gpucost_gpu_benchmark_ratio",
                    "The latest benchmark over the datasheet peak, per precision (best method).",
                    &[("gpu", &idx), ("precision", precision.as_str())],
                    *r,
                );
            }
            f.gauge(
                "gpucost_gpu_benchmark_below_expectation",
                "1 when the GPU's FP32 benchmark is below bench.min_ratio of its datasheet peak.",
                &gpu,
                bool_value(gpucost_core::benchmark::below_expectation(
                    &ratios,
                    snap.bench_min_ratio,
                )),
            );
            f.gauge(
                "gpucost_gpu_benchmark_timestamp_seconds",
                "When the latest benchmark ran (unix time).",
                &gpu,
                b.taken_at,
            );
        }
        if g.up {
            f.gauge(
                "gpucost_gpu_compute_processes",
                "Processes using the GPU (compute and graphics contexts, MPS clients) at the last process sample.",
                &gpu,
                g.processes.len() as f64,
            );
        }
    }
    render_jobs(&mut f, snap);
    f.list
}

fn render_jobs(f: &mut Families, snap: &Snapshot) {
    f.gauge(
        "gpucost_pricing_info",
        "The currency of every cost metric and the market whose GPU prices apply; 1.",
        &[("currency", &snap.currency), ("market", snap.market)],
        1.0,
    );
    f.gauge(
        "gpucost_ledger_up",
        "1 when the last write to the ledger succeeded.",
        &[],
        bool_value(snap.ledger_error.is_none()),
    );
    for outcome in Outcome::ALL.into_iter().filter(|o| *o != Outcome::Running) {
        f.counter(
            "gpucost_jobs_finished_total",
            "Jobs that ended on this node, by outcome.",
            &[("outcome", outcome.as_str())],
            snap.published.finished.get(&outcome).copied().unwrap_or(0) as f64,
        );
    }
}
