//! The node's owner thread: the one place that holds mutable state.
//!
//! Each tick it runs a sampling cycle, re-attributes GPUs to jobs when fresh process lists came
//! in, adds each GPU interval's cost to its owners, persists to the ledger when due, and
//! publishes a [`Snapshot`]. Between ticks it answers [`Command`]s from the socket API. Exported
//! totals are the ledger's (what was last persisted), so a crash and restart never shows a
//! counter going backwards; without a working ledger the live totals are shown instead.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::account::cost::Interval;
use crate::account::efficiency::{flop_rate, fp32_bound, PipePeaks};
use crate::account::pricing::Pricing;
use crate::api::{user_name, Command};
use crate::attribute::job_map::read_job_map;
use crate::attribute::kubelet::PodGpu;
use crate::attribute::procfs::ProcSource;
use crate::attribute::{attribute, GpuInput};
use crate::bench::GpuBenchmark;
use crate::jobs::{GpuRecord, JobRecord};
use crate::ledger::Ledger;
use crate::record::Recorder;
use crate::sample::sampler::Sampler;
use crate::sample::sim::SimEndings;
use crate::snapshot::{Published, Snapshot};
use crate::tracker::{EndRequest, GpuRates, Tracker};

pub struct NodeConfig {
    pub interval: Duration,
    pub persist_interval: Duration,
    pub state_dir: PathBuf,
    pub job_map_dir: Option<PathBuf>,
    pub grace_s: f64,
    pub vanish_s: f64,
    pub export_labels: Vec<String>,
    pub bench_min_ratio: f64,
}

pub struct Node {
    cfg: NodeConfig,
    sampler: Sampler,
    pricing: Pricing,
    procs: Box<dyn ProcSource>,
    pods: watch::Receiver<Vec<PodGpu>>,
    tracker: Tracker,
    ledger: Option<Ledger>,
    ledger_error: Option<String>,
    next_persist: Instant,
    /// GPU UUID -> its owners and their weights, from the last attribution.
    owners: BTreeMap<String, Vec<(String, f64)>>,
    /// On a simulated node: the scenario's job endings, reported as an epilog would.
    sim_endings: Option<SimEndings>,
    /// Model name -> its pipe peaks (looked up once).
    peaks: BTreeMap<String, Option<PipePeaks>>,
    published: Published,
    export_labels: Arc<Vec<String>>,
    /// Ticks skipped because a cycle ran late.
    skipped: u64,
    /// The latest benchmark of each GPU, by UUID.
    benchmarks: Arc<BTreeMap<String, GpuBenchmark>>,
    tx: watch::Sender<Arc<Snapshot>>,
    /// `--record`: every sample, written as a replayable scenario.
    recorder: Option<Recorder>,
    recorder_error: Option<String>,
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string())
}

impl Node {
    pub fn new(
        cfg: NodeConfig,
        sampler: Sampler,
        pricing: Pricing,
        procs: Box<dyn ProcSource>,
        pods: watch::Receiver<Vec<PodGpu>>,
        tx: watch::Sender<Arc<Snapshot>>,
    ) -> Self {
        let now = unix_now();
        let host = hostname();
        let (ledger, ledger_error, jobs, gpus) = match Ledger::open(&cfg.state_dir) {
            Ok(l) => match (l.load_jobs(), l.load_gpus()) {
                (Ok(j), Ok(g)) => {
                    let running = j.iter().filter(|j| j.ended_at.is_none()).count();
                    info!(
                        "ledger {}: {} jobs ({running} still running continue), {} GPUs",
                        l.path().display(),
                        j.len(),
                        g.len()
                    );
                    (Some(l), None, j, g)
                }
                (Err(e), _) | (_, Err(e)) => {
                    warn!("cannot load the ledger: {e}; starting with empty totals and not persisting");
                    (None, Some(e.to_string()), Vec::new(), Vec::new())
                }
            },
            Err(e) => {
                warn!("ledger unavailable: {e}; totals are kept in memory only and persistence is retried");
                (None, Some(e.to_string()), Vec::new(), Vec::new())
            }
        };
        let mut ledger = ledger;
        if let Some(l) = ledger.as_mut() {
            // `gpucost report` labels money with the currency the agent counted in.
            if let Err(e) = l.set_meta("currency", &pricing.currency) {
                warn!("cannot record the currency in the ledger: {e}");
            }
        }
        let tracker = Tracker::restore(jobs, gpus, now, cfg.grace_s, cfg.vanish_s, &host);
        let export_labels = Arc::new(cfg.export_labels.clone());
        let mut node = Node {
            export_labels,
            skipped: 0,
            benchmarks: Arc::default(),
            next_persist: Instant::now() + cfg.persist_interval,
            cfg,
            sampler,
            pricing,
            procs,
            pods,
            tracker,
            ledger,
            ledger_error,
            owners: BTreeMap::new(),
            peaks: BTreeMap::new(),
            sim_endings: None,
            published: Published::default(),
            tx,
            recorder: None,
            recorder_error: None,
        };
        node.republish();
        node
    }

    /// Reports the simulated scenario's job endings (exit codes) as a scheduler would.
    pub fn with_sim_endings(mut self, endings: SimEndings) -> Self {
        self.sim_endings = Some(endings);
        self
    }

    /// Records every sample (`--record`).
    pub fn with_recorder(mut self, r: Recorder) -> Self {
        self.recorder = Some(r);
        self
    }

    /// Writes the recording so far (when `all_done`, or when a periodic rewrite is due); a
    /// failure is said once and retried next time.
    fn write_recording(&mut self, all_done: bool) {
        let Some(r) = self.recorder.as_mut() else {
            return;
        };
        if !all_done && !r.due(Instant::now()) {
            return;
        }
        let tracker = &self.tracker;
        match r.write(|id| tracker.get(id), &self.benchmarks) {
            Ok(()) => self.recorder_error = None,
            Err(e) => {
                let msg = format!("{e:#}");
                if self.recorder_error.as_deref() != Some(msg.as_str()) {
                    warn!("cannot write the recording {}: {msg}", r.path().display());
                }
                self.recorder_error = Some(msg);
            }
        }
    }

    /// Starts with these benchmarks (a simulated node's, from its scenario).
    pub fn with_benchmarks(mut self, b: BTreeMap<String, GpuBenchmark>) -> Self {
        self.benchmarks = Arc::new(b);
        self
    }

    /// Runs ticks and answers commands until shutdown; persists once more on the way out.
    pub fn run(mut self, inbox: Receiver<Command>) {
        let mut next = Instant::now();
        'outer: loop {
            self.tick();
            next += self.cfg.interval;
            let now = Instant::now();
            if next < now {
                // A slow cycle (a hung NVML call): skip the missed ticks instead of bursting,
                // and count them.
                let late = now.duration_since(next).as_secs_f64();
                let missed = (late / self.cfg.interval.as_secs_f64()).floor() as u64 + 1;
                self.skipped += missed;
                if missed > 1 {
                    warn!(
                        "a sampling cycle took {:.1} s: {missed} sample(s) skipped (a slow or hung NVML call); /metrics kept serving the last sample",
                        late + self.cfg.interval.as_secs_f64()
                    );
                }
                next = now + self.cfg.interval;
                self.publish(None);
            }
            loop {
                let wait = next.saturating_duration_since(Instant::now());
                match inbox.recv_timeout(wait) {
                    Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => break 'outer,
                    Ok(cmd) => self.handle(cmd),
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
        }
        self.persist();
        self.write_recording(true);
        debug!("node loop stopped");
    }

    fn handle(&mut self, cmd: Command) {
        let now = unix_now();
        match cmd {
            Command::Register { req, uid, reply } => {
                let r = self.tracker.register(req, uid, &user_name(uid), now);
                if let Ok(j) = &r {
                    info!(job_id = %j.id, user = %j.user, "job registered: {}", j.name);
                }
                let _ = reply.send(r);
            }
            Command::End {
                id,
                req,
                uid,
                reply,
            } => {
                let r = self.tracker.end(&id, req, uid, now);
                if let Ok(j) = &r {
                    info!(job_id = %j.id, outcome = j.outcome.as_str(), "job ended");
                }
                let _ = reply.send(r);
            }
            Command::Progress {
                id,
                req,
                uid,
                reply,
            } => {
                let _ = reply.send(self.tracker.progress(&id, req, uid, now));
            }
            Command::Benchmark { uuid, result } => {
                Arc::make_mut(&mut self.benchmarks).insert(uuid, result);
            }
            Command::Shutdown => {}
        }
        // Endings and registrations are persisted at once: they are rare and matter.
        self.persist();
        self.publish(None);
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let unix = unix_now();
        let cycle = self.sampler.cycle(now);
        self.tracker.begin_tick();
        if cycle.processes_read {
            self.attribute(unix);
        }
        if let Some(endings) = self.sim_endings.as_mut() {
            for (id, code) in endings.take() {
                let req = EndRequest {
                    exit_code: Some(code),
                    ..EndRequest::default()
                };
                // A job the agent never saw (it ran between two process samples) is no error.
                if let Ok(j) = self.tracker.end(&id, req, 0, unix) {
                    info!(job_id = %j.id, outcome = j.outcome.as_str(), "simulated scheduler: job ended with exit code {code}");
                }
            }
        }
        for t in &cycle.ticks {
            if t.dt <= 0.0 {
                continue;
            }
            let owners = self.owners.get(&t.uuid).cloned().unwrap_or_default();
            // This GPU's measured peaks where it has been benchmarked, else the datasheet's.
            let datasheet = *self
                .peaks
                .entry(t.model.clone())
                .or_insert_with(|| PipePeaks::datasheet(&t.model));
            let peaks = datasheet.map(|d| match self.benchmarks.get(&t.uuid) {
                Some(b) => d.measured(&crate::bench::best(b)),
                None => d,
            });
            let (flop, fp32_bound_speedup) = match (t.pipes.as_ref(), peaks.as_ref()) {
                (Some(p), Some(k)) => (
                    flop_rate(p, k) * t.dt,
                    fp32_bound(p).then(|| k.bf16_over_fp32()),
                ),
                _ => (0.0, None),
            };
            let iv = Interval {
                t0: unix - t.dt,
                dt: t.dt,
                energy_j: t.energy_j,
                utilization: t.utilization,
                model: &t.model,
                flop,
                fp32_bound_speedup,
            };
            let rates = GpuRates {
                flop_rate: t.pipes.is_some().then_some(flop / t.dt),
                // MFU is against the datasheet peak (the usual convention), not the measured one.
                bf16_peak: datasheet.map(|k| k.bf16),
            };
            let gpu = (t.uuid.as_str(), t.index, t.model.as_str());
            self.tracker
                .account(&self.pricing, gpu, &owners, &iv, rates);
        }
        if let Some(r) = self.recorder.as_mut() {
            let gpus: Vec<_> = self.sampler.gpus().collect();
            r.observe(
                now,
                &cycle.ticks,
                &gpus,
                &self.owners,
                self.sampler.driver(),
            );
        }
        if now >= self.next_persist {
            self.next_persist = now + self.cfg.persist_interval;
            self.persist();
            self.write_recording(false);
            self.tracker.expire(unix);
        }
        self.publish(Some(cycle.duration));
    }

    fn attribute(&mut self, unix: f64) {
        let gpus: Vec<_> = self.sampler.gpus().filter(|g| g.up).collect();
        // The agent's own benchmark runs on idle GPUs; it is nobody's job.
        let own = std::process::id();
        let processes: Vec<Vec<crate::sample::ProcessUse>> = gpus
            .iter()
            .map(|g| {
                g.processes
                    .iter()
                    .filter(|p| p.pid != own)
                    .copied()
                    .collect()
            })
            .collect();
        let inputs: Vec<GpuInput<'_>> = gpus
            .iter()
            .zip(&processes)
            .map(|(g, p)| GpuInput {
                index: g.info.index,
                uuid: &g.info.uuid,
                processes: p,
            })
            .collect();
        let job_map = self
            .cfg
            .job_map_dir
            .as_deref()
            .map(read_job_map)
            .unwrap_or_default();
        let pods = self.pods.borrow().clone();
        let regs = self.tracker.registrations();
        let att = attribute(&inputs, self.procs.as_ref(), &regs, &pods, &job_map);
        self.owners = gpus
            .iter()
            .zip(&att.owners)
            .map(|(g, o)| (g.info.uuid.clone(), o.clone()))
            .collect();
        let procs = self.procs.as_ref();
        self.tracker
            .observe(&att, |pid| procs.info(pid).is_some(), user_name, unix);
    }

    /// Writes what changed; on success the persisted state becomes what is exported.
    fn persist(&mut self) {
        if self.ledger.is_none() {
            match Ledger::open(&self.cfg.state_dir) {
                Ok(l) => {
                    info!("ledger {} available again; persisting", l.path().display());
                    self.ledger = Some(l);
                    self.ledger_error = None;
                }
                Err(e) => {
                    let msg = e.to_string();
                    if self.ledger_error.as_deref() != Some(msg.as_str()) {
                        warn!("ledger unavailable: {msg}; retrying");
                    }
                    self.ledger_error = Some(msg);
                    return;
                }
            }
        }
        let Some(ledger) = self.ledger.as_mut() else {
            return;
        };
        let dirty: Vec<&JobRecord> = self.tracker.dirty();
        let gpus: Vec<GpuRecord> = self.tracker.gpus().cloned().collect();
        match ledger.persist(&dirty, &gpus) {
            Ok(_) => {
                if self.ledger_error.take().is_some() {
                    info!("ledger writes work again");
                }
                self.tracker.mark_clean();
                self.republish();
            }
            Err(e) => {
                let msg = e.to_string();
                if self.ledger_error.as_deref() != Some(msg.as_str()) {
                    warn!("cannot persist to the ledger: {msg}; metrics keep being served, retrying every {}", humantime::format_duration(self.cfg.persist_interval));
                }
                self.ledger_error = Some(msg);
            }
        }
    }

    /// Takes the tracker's current totals as the exported ones.
    fn republish(&mut self) {
        self.published = Published {
            jobs: Arc::new(self.tracker.shared_jobs().cloned().collect()),
            gpus: Arc::new(
                self.tracker
                    .gpus()
                    .map(|g| (g.uuid.clone(), g.clone()))
                    .collect(),
            ),
            finished: self.tracker.finished_counts().clone(),
        };
    }

    fn publish(&mut self, duration: Option<Duration>) {
        if self.ledger.is_none() {
            // Nothing durable to stay consistent with: show the live totals.
            self.republish();
        }
        let prev = self.tx.borrow().clone();
        let s = &self.sampler;
        let snapshot = Snapshot {
            taken_at: Some(SystemTime::now()),
            simulated: s.simulated().map(str::to_string),
            source: s.source(),
            backend_up: s.backend_up(),
            backend_error: s.open_error().map(str::to_string),
            driver: s.driver().map(str::to_string),
            gpus: s.gpus().cloned().collect(),
            sample_duration_s: duration.map_or(prev.sample_duration_s, |d| d.as_secs_f64()),
            samples_total: s.samples_total(),
            sample_errors: s.errors(),
            published: self.published.clone(),
            ledger_error: self.ledger_error.clone(),
            currency: self.pricing.currency.clone(),
            market: self.pricing.market.as_str(),
            export_labels: self.export_labels.clone(),
            job_rates: Arc::new(self.tracker.rates()),
            skipped_samples: self.skipped,
            benchmarks: self.benchmarks.clone(),
            bench_min_ratio: self.cfg.bench_min_ratio,
        };
        let _ = self.tx.send(Arc::new(snapshot));
    }
}
