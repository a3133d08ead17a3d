//! `/metrics`: renders a [`Snapshot`] in the Prometheus text format through the `prometheus`
//! crate's encoder. This module is the only place that knows metric names: the node's series in
//! [`node`], each job's in [`jobs`], the HTTP server's in [`http`], the rendering and its per-job
//! cache here.
//!
//! Rendering reads the snapshot only; it never calls NVML. On a simulated node every series
//! carries `simulated="true"`, so demo data cannot pass for real data in any query.

mod http;
mod jobs;
mod node;

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

use std::sync::Arc;

use bytes::Bytes;

use super::buffers::Outputs;
use crate::snapshot::{Snapshot, WhatIfPrices};
use gpucost_core::jobs::{JobRecord, Outcome};
use gpucost_core::tracker::JobRate;
pub use http::{render_http, HttpStats};
use jobs::{render_job, JOB_FAMILIES};
use node::node_families;

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

/// One job's encoded series, kept while the job's record and rate, the exported labels and the
/// prices of its savings levers stay the same.
struct CachedJob {
    rec: Arc<JobRecord>,
    rate: Option<JobRate>,
    labels: Arc<Vec<String>>,
    /// The prices its savings levers were figured with.
    what_if: Arc<WhatIfPrices>,
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
    outputs: Outputs,
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
                        && Arc::ptr_eq(&c.what_if, &snap.what_if)
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
        let mut out = self.outputs.buffer();
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
        self.outputs.keep(out)
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
        for family in &f.list {
            let k = family_slot(family.name());
            let (header, samples) = encode_family(family);
            if self.headers[k].is_empty() {
                self.headers[k] = header;
            }
            by_family[k].push_str(&samples);
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
            what_if: snap.what_if.clone(),
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

/// One family encoded on its own: its `# HELP`/`# TYPE` header and its sample lines. The
/// encoder writes the header first and escapes label values, so every sample is one line after
/// the header's lines (the only lines that start with `#`).
fn encode_family(family: &MetricFamily) -> (String, String) {
    let text = encode(std::slice::from_ref(family));
    let header_len: usize = text
        .split_inclusive('\n')
        .take_while(|l| l.starts_with('#'))
        .map(str::len)
        .sum();
    let (header, samples) = text.split_at(header_len);
    (header.to_string(), samples.to_string())
}

pub(super) fn bool_value(b: bool) -> f64 {
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
            reason: None,
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

    /// The node's prices, one value for every snapshot (as the node keeps them).
    fn prices() -> Arc<WhatIfPrices> {
        static PRICES: std::sync::OnceLock<Arc<WhatIfPrices>> = std::sync::OnceLock::new();
        PRICES
            .get_or_init(|| {
                Arc::new(WhatIfPrices {
                    pricing: gpucost_core::config::example_pricing(),
                    ..WhatIfPrices::default()
                })
            })
            .clone()
    }

    fn snapshot(jobs: Vec<Arc<JobRecord>>, labels: &Arc<Vec<String>>) -> Snapshot {
        let mut s = Snapshot::empty(Source::Nvml, None);
        s.what_if = prices();
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
        // New prices (a GPU appeared): every job's savings are figured again.
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        r.render(&snapshot(jobs.clone(), &labels));
        let mut snap = snapshot(jobs.clone(), &labels);
        assert_eq!(r.render(&snap), render(&snap).as_bytes());
        assert_eq!(r.encoded, 0, "the same prices: nothing encoded");
        snap.what_if = Arc::new(WhatIfPrices::clone(&prices()));
        assert_eq!(r.render(&snap), render(&snap).as_bytes());
        assert_eq!(r.encoded, 5, "new prices: every job encoded");
        assert_eq!(r.render(&snap), render(&snap).as_bytes());
        assert_eq!(r.encoded, 0);
        // Every family render_job writes has its own slot.
        let mut full = job(1, Outcome::Failed);
        full.progress = Some(gpucost_core::jobs::Progress {
            tokens: 5,
            flop_rate: Some(1.0),
            ..Default::default()
        });
        full.outcome = Outcome::Running;
        // Not what a running job has, but every family is written once here.
        full.ended_at = Some(2.0);
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
        // A running job has its start time and no end time.
        assert!(
            text.contains("gpucost_job_start_time_seconds{job_id=\"job-1\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("gpucost_job_end_time_seconds{"), "{text}");
    }

    /// Issue 16: one outcome series per job with its failure reason, and the waste of a
    /// preempted run under its own reason, the reasons adding up to the job's wasted cost.
    #[test]
    fn issue_16_each_job_has_one_outcome_series_and_its_waste_by_reason() {
        use gpucost_core::jobs::EndReason;
        let labels = Arc::new(Vec::new());
        let mut timeout = job(1, Outcome::Failed);
        timeout.reason = Some(EndReason::TimeLimit);
        timeout.usage.idle_cost = 0.125;
        let mut preempted = job(2, Outcome::Preempted);
        preempted.usage.idle_cost = 0.25;
        let cancelled = job(3, Outcome::Cancelled);
        let text = render(&snapshot(
            shared([job(0, Outcome::Running), timeout, preempted, cancelled]),
            &labels,
        ));
        for line in [
            r#"gpucost_job_outcome{job_id="job-0",outcome="running",reason=""} 1"#,
            r#"gpucost_job_outcome{job_id="job-1",outcome="failed",reason="time_limit"} 1"#,
            r#"gpucost_job_outcome{job_id="job-2",outcome="preempted",reason=""} 1"#,
            r#"gpucost_job_outcome{job_id="job-3",outcome="cancelled",reason=""} 1"#,
            // job-1 cost 0.5 in all: 0.125 idle, the rest lost to the failure.
            r#"gpucost_job_wasted_cost_total{job_id="job-1",reason="idle"} 0.125"#,
            r#"gpucost_job_wasted_cost_total{job_id="job-1",reason="failed"} 0.375"#,
            r#"gpucost_job_wasted_cost_total{job_id="job-1",reason="preempted"} 0"#,
            r#"gpucost_job_wasted_cost_total{job_id="job-2",reason="idle"} 0.25"#,
            r#"gpucost_job_wasted_cost_total{job_id="job-2",reason="preempted"} 0.75"#,
            r#"gpucost_job_wasted_cost_total{job_id="job-2",reason="failed"} 0"#,
            // A cancelled run is no failure: only its idle time is waste.
            r#"gpucost_job_wasted_cost_total{job_id="job-3",reason="failed"} 0"#,
            r#"gpucost_job_wasted_cost_total{job_id="job-3",reason="preempted"} 0"#,
            r#"gpucost_job_failed{job_id="job-1"} 1"#,
            r#"gpucost_job_failed{job_id="job-2"} 0"#,
            r#"gpucost_job_failed{job_id="job-3"} 0"#,
        ] {
            assert!(
                text.contains(line),
                "{line} in
{text}"
            );
        }
        assert_eq!(text.matches("gpucost_job_outcome{").count(), 4);
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
