//! `/metrics`: renders a [`Snapshot`] in the Prometheus text format through the `prometheus`
//! crate's encoder. This is the only file that knows metric names.
//!
//! Rendering reads the snapshot only; it never calls NVML. On a simulated node every series
//! carries `simulated="true"`, so demo data cannot pass for real data in any query.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::snapshot::Snapshot;
use gpucost_core::jobs::{JobRecord, Outcome};
use gpucost_core::reading::CLOCK_EVENT_REASONS;
use gpucost_core::tracker::JobRate;

/// The content type of the text format we render.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Collects metric families in the order they are first used.
struct Families {
    list: Vec<MetricFamily>,
    simulated: bool,
}

impl Families {
    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut MetricFamily {
        let pos = match self.list.iter().position(|f| f.name() == name) {
            Some(p) => p,
            None => {
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_field_type(kind);
                self.list.push(f);
                self.list.len() - 1
            }
        };
        &mut self.list[pos]
    }

    fn labels(&self, labels: &[(&str, &str)]) -> Vec<LabelPair> {
        let sim = self.simulated.then_some(("simulated", "true"));
        labels
            .iter()
            .copied()
            .chain(sim)
            .map(|(k, v)| {
                let mut p = LabelPair::default();
                p.set_name(k.to_string());
                p.set_value(v.to_string());
                p
            })
            .collect()
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut m = Metric::from_label(self.labels(labels));
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
        self.family(name, help, MetricType::GAUGE)
            .mut_metric()
            .push(m);
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut m = Metric::from_label(self.labels(labels));
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
        self.family(name, help, MetricType::COUNTER)
            .mut_metric()
            .push(m);
    }
}

/// Renders the snapshot as Prometheus text (without a cache; see [`Renderer`]).
pub fn render(snap: &Snapshot) -> String {
    let text = Renderer::default().render(snap);
    String::from_utf8(text.to_vec()).expect("the text encoder writes UTF-8")
}

/// The per-job families, in the order they are written.
const JOB_FAMILIES: [&str; 16] = [
    "gpucost_job_info",
    "gpucost_job_gpu_seconds_total",
    "gpucost_job_energy_joules_total",
    "gpucost_job_carbon_grams_total",
    "gpucost_job_cost_total",
    "gpucost_job_idle_gpu_seconds_total",
    "gpucost_job_wasted_cost_total",
    "gpucost_job_fp32_gpu_seconds_total",
    "gpucost_job_tokens_total",
    "gpucost_job_samples_total",
    "gpucost_job_budget",
    "gpucost_job_achieved_flops",
    "gpucost_job_mfu_ratio",
    "gpucost_job_running",
    "gpucost_job_failed",
    // Anything render_job writes that is not listed above (a test keeps this empty).
    "",
];

/// One job's encoded series, kept while the job's record and rate stay the same.
struct CachedJob {
    rec: Arc<JobRecord>,
    rate: Option<JobRate>,
    labels: Arc<Vec<String>>,
    /// This job's sample lines, family after family in [`JOB_FAMILIES`] order; family `k` is
    /// `text[ends[k - 1]..ends[k]]` (one allocation per job keeps the copy loop cache-friendly).
    text: String,
    ends: [usize; JOB_FAMILIES.len()],
}

impl CachedJob {
    fn family(&self, k: usize) -> &str {
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        &self.text[start..self.ends[k]]
    }
}

/// Renders snapshots, re-encoding only the jobs whose numbers changed since the last render: on
/// a node with thousands of finished jobs in their grace period, those cost a pointer comparison
/// (the tracker shares an unchanged job's record from one snapshot to the next) and a copy.
#[derive(Default)]
pub struct Renderer {
    /// The last render's jobs, in its order (the tracker's: by id).
    jobs: Vec<CachedJob>,
    /// The `# HELP`/`# TYPE` header of each of [`JOB_FAMILIES`], once seen.
    headers: [String; JOB_FAMILIES.len()],
    /// The last two outputs: the older one's buffer is written again once no scrape holds it,
    /// so a render of megabytes does not fault in fresh pages each time.
    outputs: VecDeque<Bytes>,
    /// Jobs encoded (not taken from the cache) in the last render.
    encoded: usize,
}

impl Renderer {
    pub fn render(&mut self, snap: &Snapshot) -> Bytes {
        let mut old = std::mem::take(&mut self.jobs).into_iter().peekable();
        let mut cached = Vec::with_capacity(snap.published.jobs.len());
        let mut present = [false; JOB_FAMILIES.len()];
        self.encoded = 0;
        for j in snap.published.jobs.iter() {
            // A finished job's rate is not rendered, so it cannot make it change.
            let rate = if j.outcome == Outcome::Running {
                snap.job_rates.get(&j.id).copied()
            } else {
                None
            };
            // Both lists are in id order; out of order, a job is only encoded again.
            while old.peek().is_some_and(|c| c.rec.id < j.id) {
                old.next();
            }
            let entry = match old.next_if(|c| c.rec.id == j.id) {
                Some(mut c)
                    if c.rate == rate
                        && Arc::ptr_eq(&c.labels, &snap.export_labels)
                        && (Arc::ptr_eq(&c.rec, j) || c.rec == *j) =>
                {
                    c.rec = j.clone();
                    c
                }
                _ => {
                    self.encoded += 1;
                    self.encode_job(snap, j, rate)
                }
            };
            for (k, p) in present.iter_mut().enumerate() {
                *p |= !entry.family(k).is_empty();
            }
            cached.push(entry);
        }
        let size: usize = cached.iter().map(|c| c.text.len()).sum();
        let mut out = self.buffer();
        out.extend_from_slice(encode(&node_families(snap)).as_bytes());
        out.reserve(size + 4096);
        for (k, header) in self.headers.iter().enumerate() {
            if !present[k] {
                continue;
            }
            out.extend_from_slice(header.as_bytes());
            for c in &cached {
                out.extend_from_slice(c.family(k).as_bytes());
            }
        }
        self.jobs = cached;
        let out = out.freeze();
        self.outputs.push_back(out.clone());
        out
    }

    /// An empty buffer: the oldest output's, if no one holds it any more.
    fn buffer(&mut self) -> BytesMut {
        while self.outputs.len() > 1 {
            let oldest = self.outputs.pop_front().expect("two outputs kept");
            if let Ok(mut b) = oldest.try_into_mut() {
                b.clear();
                return b;
            }
        }
        BytesMut::new()
    }

    fn encode_job(
        &mut self,
        snap: &Snapshot,
        j: &Arc<JobRecord>,
        rate: Option<JobRate>,
    ) -> CachedJob {
        let mut f = Families {
            list: Vec::new(),
            simulated: snap.simulated.is_some(),
        };
        render_job(&mut f, snap, j);
        let mut by_family: [String; JOB_FAMILIES.len()] = Default::default();
        for (name, header, text) in sections(&encode(&f.list)) {
            let k = family_slot(&name);
            if self.headers[k].is_empty() {
                self.headers[k] = header;
            }
            by_family[k].push_str(&text);
        }
        let mut text = String::with_capacity(by_family.iter().map(String::len).sum());
        let mut ends = [0; JOB_FAMILIES.len()];
        for (k, part) in by_family.iter().enumerate() {
            text.push_str(part);
            ends[k] = text.len();
        }
        CachedJob {
            rec: j.clone(),
            rate,
            labels: snap.export_labels.clone(),
            text,
            ends,
        }
    }
}

/// The slot of a per-job family in [`JOB_FAMILIES`] (the last one for an unlisted family).
fn family_slot(name: &str) -> usize {
    JOB_FAMILIES
        .iter()
        .position(|f| *f == name)
        .unwrap_or(JOB_FAMILIES.len() - 1)
}

fn encode(families: &[MetricFamily]) -> String {
    let mut out = Vec::with_capacity(8192);
    TextEncoder::new()
        .encode(families, &mut out)
        .expect("families built here are well-formed");
    String::from_utf8(out).expect("the text encoder writes UTF-8")
}

/// Splits encoded text into (family name, header lines, sample lines) per family. Label values
/// are escaped by the encoder, so every sample is one line.
fn sections(text: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default().to_string();
            out.push((name, line.to_string(), String::new()));
        } else if line.starts_with("# ") {
            if let Some(last) = out.last_mut() {
                last.1.push_str(line);
            }
        } else if let Some(last) = out.last_mut() {
            last.2.push_str(line);
        }
    }
    out
}

/// Every family but the per-job ones.
fn node_families(snap: &Snapshot) -> Vec<MetricFamily> {
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
        "1 when the GPU library (NVML, or the simulated node) is loaded and answering.",
        &[],
        bool_value(snap.backend_up),
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
    for (gpu, field, kind, n) in &snap.sample_errors {
        f.counter(
            "gpucost_agent_sample_errors_total",
            "Failed reads; field is \"all\" when the whole GPU could not be read.",
            &[("gpu", &gpu.to_string()), ("field", field), ("kind", kind)],
            *n as f64,
        );
    }
    let driver = snap.driver.as_deref().unwrap_or("unknown");
    for g in &snap.gpus {
        let idx = g.info.index.to_string();
        let gpu = [("gpu", idx.as_str())];
        let v = g.view(snap.source, &snap.published);
        f.gauge(
            "gpucost_gpu_info",
            "One series per GPU with its identity; 1.",
            &[
                ("gpu", &idx),
                ("uuid", &g.info.uuid),
                ("model", &g.info.model),
                ("driver", driver),
                ("source", snap.source.as_str()),
            ],
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
            "gpucost_gpu_energy_resets_total",
            "Times the GPU's energy counter went backwards or jumped (driver reload, wrap).",
            &gpu,
            g.totals.energy.counter_resets() as f64,
        );
        for (i, (_, reason)) in CLOCK_EVENT_REASONS.iter().enumerate() {
            f.counter(
                "gpucost_gpu_throttled_seconds_total",
                "Seconds with each clock-event (throttle) reason active.",
                &[("gpu", &idx), ("reason", reason)],
                g.totals.throttled_s[i],
            );
        }
        for (xid, n) in &g.totals.xids {
            f.counter(
                "gpucost_gpu_xid_errors_total",
                "Xid errors the driver reported for the GPU, by code.",
                &[("gpu", &idx), ("xid", &xid.to_string())],
                *n as f64,
            );
        }
        let gauges = [
            (
                "gpucost_gpu_power_watts",
                "Board power draw.",
                v.power_watts,
            ),
            (
                "gpucost_gpu_power_limit_watts",
                "Enforced power limit.",
                v.power_limit_watts,
            ),
            (
                "gpucost_gpu_utilization_ratio",
                "Share of the last sample period in which a kernel was running (0..1).",
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
            for (pipe, v) in pipes.labelled() {
                f.gauge(
                    "gpucost_gpu_pipe_active_ratio",
                    "Share of the last interval each pipe was busy (NVML GPM; Hopper and newer).",
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
                        "Datasheet dense peak of the GPU model per precision (FLOP/s; OP/s for int8).",
                        &[("gpu", &idx), ("precision", precision.as_str())],
                        peak,
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
                "Compute processes running on the GPU at the last process sample.",
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
    for outcome in [Outcome::Succeeded, Outcome::Failed, Outcome::Unknown] {
        f.counter(
            "gpucost_jobs_finished_total",
            "Jobs that ended on this node, by outcome.",
            &[("outcome", outcome.as_str())],
            snap.published.finished.get(&outcome).copied().unwrap_or(0) as f64,
        );
    }
}

/// One job's series (identity, totals, rates), in the order the families are rendered.
fn render_job(f: &mut Families, snap: &Snapshot, j: &JobRecord) {
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
    // The reasons add up: a failed run's whole cost is wasted, split so that no part of it
    // is counted under two reasons.
    let failed_rest = if j.outcome == Outcome::Failed {
        (u.total_cost() - u.idle_cost - u.fp32_saving).max(0.0)
    } else {
        0.0
    };
    for (reason, v) in [
        ("idle", u.idle_cost),
        ("fp32", u.fp32_saving),
        ("failed", failed_rest),
    ] {
        f.counter(
            "gpucost_job_wasted_cost_total",
            "Cost that bought nothing: idle = held while idle; fp32 = what mixed precision would have saved of FP32-bound time; failed = the rest of a failed run's cost (together a failed run's whole cost).",
            &[("job_id", &j.id), ("reason", reason)],
            v,
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
            "FLOP/s the job achieves: from pipe activity x peaks (counters) or from the progress it reports (reported).",
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
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::snapshot::Published;
    use gpucost_core::jobs::{Scheduler, Usage};
    use gpucost_core::reading::Source;

    fn job(i: usize, outcome: Outcome) -> JobRecord {
        JobRecord {
            id: format!("job-{i}"),
            name: format!("n{i}"),
            user: "alice".into(),
            uid: Some(1001),
            scheduler: Scheduler::Slurm,
            labels: BTreeMap::from([
                ("team".to_string(), format!("t{i}")),
                ("budget".into(), "5".into()),
            ]),
            started_at: 1.0,
            ended_at: None,
            outcome,
            exit_code: None,
            signal: None,
            usage: Usage {
                gpu_seconds: i as f64,
                cost_gpu_time: 0.5 * i as f64,
                ..Usage::default()
            },
            per_gpu: BTreeMap::new(),
            registration: None,
            progress: None,
        }
    }

    fn snapshot(jobs: Vec<Arc<JobRecord>>, labels: &Arc<Vec<String>>) -> Snapshot {
        let mut s = Snapshot::empty(Source::Nvml, None);
        s.published = Published {
            jobs: Arc::new(jobs),
            ..Published::default()
        };
        s.export_labels = labels.clone();
        s.job_rates = Arc::new(BTreeMap::from([(
            "job-1".to_string(),
            JobRate {
                achieved_flops: Some(1e14),
                peak_flops: 1e15,
            },
        )]));
        s
    }

    fn shared(jobs: impl IntoIterator<Item = JobRecord>) -> Vec<Arc<JobRecord>> {
        jobs.into_iter().map(Arc::new).collect()
    }

    /// The cached renderer writes exactly what a fresh rendering writes, as jobs change, come
    /// and go, and encodes only the jobs that changed.
    #[test]
    fn cached_rendering_equals_a_fresh_one() {
        let labels = Arc::new(vec!["team".to_string()]);
        let mut r = Renderer::default();
        let mut jobs = shared((0..5).map(|i| job(i, Outcome::Running)));
        let mut before: Vec<JobRecord> = Vec::new();
        for step in 0..4 {
            // In id order, as the tracker publishes them.
            jobs.sort_by(|a, b| a.id.cmp(&b.id));
            let snap = snapshot(jobs.clone(), &labels);
            let fresh = render(&snap);
            assert_eq!(r.render(&snap), fresh.as_bytes(), "step {step}");
            let changed = jobs.iter().filter(|j| !before.contains(j)).count();
            assert_eq!(r.encoded, changed, "step {step}: only changed jobs encoded");
            assert_eq!(r.render(&snap), fresh.as_bytes(), "step {step}, all cached");
            assert_eq!(r.encoded, 0, "step {step}, all cached");
            assert_eq!(fresh.matches("# TYPE gpucost_job_info gauge").count(), 1);
            before = jobs.iter().map(|j| j.as_ref().clone()).collect();
            Arc::make_mut(&mut jobs[1]).usage.cost_energy += 1.0;
            // A new record with the same numbers is not encoded again.
            Arc::make_mut(&mut jobs[2]).outcome = Outcome::Failed;
            jobs.remove(0);
            jobs.push(Arc::new(job(10 + step, Outcome::Running)));
        }
        assert_eq!(r.jobs.len(), 5, "gone jobs leave the cache");
        // Every family render_job writes has its own slot.
        let mut full = job(1, Outcome::Failed);
        full.progress = Some(gpucost_core::jobs::Progress {
            tokens: 5,
            flop_rate: Some(1.0),
            ..Default::default()
        });
        full.outcome = Outcome::Running;
        let mut r = Renderer::default();
        r.render(&snapshot(shared([full]), &labels));
        let last = JOB_FAMILIES.len() - 1;
        assert!(
            r.headers[last].is_empty(),
            "unlisted family: {}",
            r.headers[last]
        );
        assert!(
            r.headers[..last].iter().all(|h| !h.is_empty()),
            "{:?}",
            r.headers
        );
        let first = shared((0..3).map(|i| job(i, Outcome::Running)));
        let text = render(&snapshot(first, &labels));
        assert!(
            text.contains("gpucost_job_mfu_ratio{job_id=\"job-1\",source=\"counters\"} 0.1"),
            "{text}"
        );
    }

    /// A render writes into the buffer of the output before last once no one holds it.
    #[test]
    fn output_buffers_are_reused_once_released() {
        let labels = Arc::new(vec!["team".to_string()]);
        let snap = snapshot(shared((0..50).map(|i| job(i, Outcome::Running))), &labels);
        let mut r = Renderer::default();
        let first = r.render(&snap);
        let at = first.as_ptr();
        drop(first);
        let held = r.render(&snap);
        assert_eq!(
            r.render(&snap).as_ptr(),
            at,
            "the released buffer is written again"
        );
        // The second output is still held (a slow scrape): the next render leaves it alone.
        let fourth = r.render(&snap);
        assert_ne!(fourth.as_ptr(), held.as_ptr());
        assert_eq!(fourth, held);
    }
}
