//! The node's owner thread: the one place that holds mutable state.
//!
//! Each tick it runs a sampling cycle, re-attributes GPUs to jobs when fresh process lists came
//! in, adds each GPU interval's cost to its owners, persists to the [`Store`] when due, and
//! publishes a [`Snapshot`]. Between ticks it answers [`Message`]s from the socket API and the
//! benchmark thread. Exported totals are the store's (what was last persisted), so a crash and
//! restart never shows a counter going backwards; without a working store the live totals are
//! shown instead. A store whose history cannot be loaded is never written to: the node counts in
//! memory, loads again at each persist, and adds what it counted to the history once it loads.
//!
//! Everything it depends on comes in: the sampler (with its backend factory), the store, the
//! process source, the pods, the hostname and the [`Clock`]. [`Node::run`] is the thread's
//! loop; tests call [`Node::tick`], [`Node::schedule`] and [`Node::handle`] in virtual time.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpucost_core::clock::{Clock, Now};
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use crate::api::spool;
use crate::identity::job_map::read_job_map;
use crate::identity::slurm::{job_cgroup, JobCgroup};
use crate::identity::user_name;
use crate::record::Recorder;
use crate::sample::sampler::Sampler;
use crate::sample::sim::SimEndings;
use crate::snapshot::{Published, Snapshot, WhatIfPrices};
use gpucost_core::account::cost::Interval;
use gpucost_core::account::efficiency::{
    flop_rate, fp32_bound, priced, rates_per_clock, PipeBasis, PipePeaks, UnitSms,
};
use gpucost_core::account::pricing::Pricing;
use gpucost_core::account::GpuEvents;
use gpucost_core::attribute::device::{
    resolve_gpu_names, resolve_job_map, resolve_pods, JobMapUnits,
};
use gpucost_core::attribute::pods::{finished_jobs, with_jobs, PodDirectory, PodLabels};
use gpucost_core::attribute::process::{ancestry, ProcSource};
use gpucost_core::attribute::JobMap;
use gpucost_core::attribute::PodGpu;
use gpucost_core::attribute::{attribute, check_claim, GpuInput};
use gpucost_core::benchmark::GpuBenchmark;
use gpucost_core::jobs::{GpuRecord, JobRecord, Outcome, Scheduler};
use gpucost_core::report::whatif;
use gpucost_core::tracker::{
    EndRequest, GpuRates, JobLimits, ProgressRequest, RegisterRequest, RequestError, Tracker,
};

/// How far up from a caller to look for a process of a job (attribution's own limit).
const MAX_CALLER_ANCESTRY: usize = 64;

/// Messages to the node thread, the owner of the job table. A request carries the moment its
/// caller stops waiting (monotonic): past it, the node drops it unanswered rather than apply it
/// late.
#[derive(Debug)]
pub enum Message {
    Register {
        req: RegisterRequest,
        uid: u32,
        deadline: Instant,
        reply: oneshot::Sender<Result<JobRecord, RequestError>>,
    },
    End {
        id: String,
        req: EndRequest,
        uid: u32,
        deadline: Instant,
        reply: oneshot::Sender<Result<JobRecord, RequestError>>,
    },
    Progress {
        id: String,
        req: ProgressRequest,
        uid: u32,
        deadline: Instant,
        reply: oneshot::Sender<Result<JobRecord, RequestError>>,
    },
    /// Progress for the job that process `pid` belongs to (`Node::job_of_process`): from the
    /// pod socket (`uid` `None`: belonging is the caller's only right), or `POST
    /// /api/v1/progress` on the job socket (`uid` `Some`: the job must also be that user's).
    CallerProgress {
        pid: u32,
        uid: Option<u32>,
        req: ProgressRequest,
        deadline: Instant,
        reply: oneshot::Sender<Result<JobRecord, RequestError>>,
    },
    /// A benchmark of a GPU finished (from the benchmark thread).
    Benchmark { uuid: String, result: GpuBenchmark },
    /// The Slurm controller says job `id`, which this node has running with no end reported,
    /// is over (from the controller thread): `req` is how it ended, `why` what it said.
    ControllerEnded {
        id: String,
        req: EndRequest,
        why: String,
    },
    /// Persist now (SIGHUP).
    Persist,
    /// Let go of the GPU library until [`Message::ResumeNvml`] (SIGUSR1): a driver upgrade, a
    /// GPU reset or a MIG change waits for every NVML client to close its handles.
    ReleaseNvml,
    /// Take the GPU library back (SIGUSR2).
    ResumeNvml,
    /// Stop the node thread (its senders being dropped does the same).
    Shutdown,
}

/// Durable state as the node thread uses it: the SQLite ledger on a node
/// (`crate::ledger::LedgerStore`), memory in tests. A store that cannot be opened, read or
/// written is retried at the next call; errors are for the log and `/metrics`.
///
/// Its history comes first: the node calls `set_meta` and `persist` only after a `load`
/// succeeded, and a store may refuse them before (the ledger's history is never written over).
pub trait Store: Send {
    /// Where it lives, for log lines.
    fn location(&self) -> String;
    /// The jobs and GPUs as last persisted: the history every later write continues.
    fn load(&mut self) -> Result<(Vec<JobRecord>, Vec<GpuRecord>), String>;
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), String>;
    /// Writes the changed jobs and every GPU, all or nothing.
    fn persist(&mut self, jobs: &[&JobRecord], gpus: &[GpuRecord]) -> Result<(), String>;
}

pub struct NodeConfig {
    pub interval: Duration,
    pub persist_interval: Duration,
    /// Where the prolog's GPU -> job files are, if anywhere.
    pub job_map_dir: Option<PathBuf>,
    /// The cgroup file system, where a Slurm job whose epilog never came is seen gone; `None`:
    /// not looked at.
    pub cgroup_root: Option<PathBuf>,
    /// Where hooks leave what they could not tell the agent (`<state_dir>/spool`); `None`: no
    /// spool.
    pub spool_dir: Option<PathBuf>,
    /// The node's name, in the ids of jobs registered without one.
    pub hostname: String,
    /// Caps on users' running registrations.
    pub limits: JobLimits,
    pub grace_s: f64,
    pub vanish_s: f64,
    pub export_labels: Vec<String>,
    pub bench_min_ratio: f64,
    /// The labels a pod's job takes from it (`jobs.export_labels`, `attribution.kube_labels`).
    pub pod_labels: PodLabels,
}

/// What a unit's pipe rates per clock depend on: its UUID, compute capability, SMs, and
/// whether it is a MIG instance.
type UnitKey = (String, Option<(u32, u32)>, Option<u32>, bool);

pub struct Node {
    cfg: NodeConfig,
    sampler: Sampler,
    pricing: Pricing,
    procs: Box<dyn ProcSource>,
    pods: watch::Receiver<Vec<PodGpu>>,
    /// This node's pods as the Kubernetes API shows them (empty when it is not watched).
    kube_pods: watch::Receiver<Arc<PodDirectory>>,
    tracker: Tracker,
    store: Box<dyn Store>,
    /// Whether the store's history has been read (and added to the totals). Until then nothing
    /// is written to it: it is read again at each persist instead.
    loaded: bool,
    /// Whether the store holds what is exported: loaded, or written since.
    durable: bool,
    /// Each GPU's throttled seconds and Xids as the store had them: the sampler counts from
    /// zero when the agent starts, so what is persisted is this plus the sampler's count.
    /// Empty until the history is loaded.
    events_loaded: BTreeMap<String, GpuEvents>,
    ledger_error: Option<String>,
    clock: Arc<dyn Clock>,
    next_persist: Instant,
    /// GPU UUID -> its owners and their weights, from the last attribution.
    owners: BTreeMap<String, Vec<(String, f64)>>,
    /// On a simulated node: the scenario's job endings, reported as an epilog would.
    sim_endings: Option<SimEndings>,
    /// Model name -> its pipe peaks (looked up once).
    peaks: BTreeMap<String, Option<PipePeaks>>,
    /// Each unit's pipe rates per clock cycle (UUID, compute capability, SMs: what they
    /// depend on), found once.
    per_clock: BTreeMap<UnitKey, Result<PipePeaks, &'static str>>,
    /// GPU UUID -> how its pipe activity was last priced (`None`: it could not be), to say so
    /// in the log when it changes; and each (GPU, basis) said at info or warn level once.
    pipe_basis: BTreeMap<String, Option<PipeBasis>>,
    pipe_basis_said: BTreeSet<(String, String)>,
    published: Published,
    export_labels: Arc<Vec<String>>,
    /// The prices and GPU models each job's savings levers are exported with.
    what_if: Arc<WhatIfPrices>,
    /// Ticks skipped because a cycle ran late.
    skipped: u64,
    /// Requests dropped because they waited past their deadline.
    late_requests: u64,
    /// Whether the agent has warned that registrations' GPU indices are taken as NVML's.
    warned_gpu_indices: bool,
    /// What each job-map entry was resolved to when it appeared.
    job_map_seen: JobMapUnits,
    /// The latest benchmark of each GPU, by UUID.
    benchmarks: Arc<BTreeMap<String, GpuBenchmark>>,
    tx: watch::Sender<Arc<Snapshot>>,
    /// `--record`: every sample, written as a replayable scenario.
    recorder: Option<Recorder>,
    recorder_error: Option<String>,
    /// Running Slurm registrations whose cgroup this agent has seen (a cgroup seen and then
    /// gone means the job is over, whether or not its epilog said so).
    cgroups_seen: BTreeSet<String>,
    /// When this agent started (wall clock): a registration older than that whose cgroup is not
    /// there ended while the agent was away.
    started_wall: f64,
    /// When the spool is read next (at the first tick, then every persist interval).
    next_spool: Instant,
    /// The last problem with the spool folder, said once.
    spool_error: Option<String>,
}

/// What a node is made of; everything it talks to is passed in.
pub struct NodeParts {
    pub cfg: NodeConfig,
    pub sampler: Sampler,
    pub pricing: Pricing,
    pub procs: Box<dyn ProcSource>,
    pub pods: watch::Receiver<Vec<PodGpu>>,
    pub kube_pods: watch::Receiver<Arc<PodDirectory>>,
    pub store: Box<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub tx: watch::Sender<Arc<Snapshot>>,
}

impl Node {
    pub fn new(parts: NodeParts) -> Self {
        let NodeParts {
            cfg,
            sampler,
            pricing,
            procs,
            pods,
            kube_pods,
            store,
            clock,
            tx,
        } = parts;
        let now = clock.now();
        let mut tracker = Tracker::new(cfg.grace_s, cfg.vanish_s, &cfg.hostname);
        tracker.set_limits(cfg.limits);
        let export_labels = Arc::new(cfg.export_labels.clone());
        let what_if = Arc::new(WhatIfPrices {
            pricing: pricing.clone(),
            ..WhatIfPrices::default()
        });
        let mut node = Node {
            export_labels,
            what_if,
            skipped: 0,
            late_requests: 0,
            warned_gpu_indices: false,
            job_map_seen: JobMapUnits::new(),
            benchmarks: Arc::default(),
            next_persist: now.mono + cfg.persist_interval,
            cfg,
            sampler,
            pricing,
            procs,
            pods,
            kube_pods,
            tracker,
            store,
            loaded: false,
            durable: false,
            events_loaded: BTreeMap::new(),
            clock,
            ledger_error: None,
            owners: BTreeMap::new(),
            peaks: BTreeMap::new(),
            per_clock: BTreeMap::new(),
            pipe_basis: BTreeMap::new(),
            pipe_basis_said: BTreeSet::new(),
            sim_endings: None,
            published: Published::default(),
            tx,
            recorder: None,
            recorder_error: None,
            cgroups_seen: BTreeSet::new(),
            started_wall: now.wall,
            next_spool: now.mono,
            spool_error: None,
        };
        // Loaded now, the store holds exactly what is exported; loaded later, only once the
        // merged totals are written.
        node.durable = node.load_history();
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
        if !all_done && !r.due(self.clock.mono()) {
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

    /// Runs ticks and answers messages until shutdown; persists once more on the way out.
    ///
    /// Messages are answered only between ticks, and a burst of them only until the next tick is
    /// due: however many requests arrive, the samples keep their cadence (the rest wait in the
    /// bounded inbox, whose senders answer 503 when it is full). What a burst changed is persisted
    /// and published once, not once per message.
    pub fn run(mut self, inbox: Receiver<Message>) {
        let mut next = self.clock.mono();
        'outer: loop {
            self.tick();
            next = self.schedule(next);
            loop {
                let wait = next.saturating_duration_since(self.clock.mono());
                if wait.is_zero() {
                    break;
                }
                let mut changed = match inbox.recv_timeout(wait) {
                    Ok(Message::Shutdown) | Err(RecvTimeoutError::Disconnected) => break 'outer,
                    Ok(msg) => self.answer(msg),
                    Err(RecvTimeoutError::Timeout) => break,
                };
                let mut stop = false;
                while self.clock.mono() < next {
                    match inbox.try_recv() {
                        Ok(Message::Shutdown) | Err(TryRecvError::Disconnected) => {
                            stop = true;
                            break;
                        }
                        Ok(msg) => changed |= self.answer(msg),
                        Err(TryRecvError::Empty) => break,
                    }
                }
                if changed {
                    self.settle();
                }
                if stop {
                    break 'outer;
                }
            }
        }
        self.shutdown();
    }

    /// When the tick after the one planned for `planned` is due. A cycle that ran past one or
    /// more ticks (a hung NVML call) skips them instead of bursting, and counts them.
    pub fn schedule(&mut self, planned: Instant) -> Instant {
        let next = planned + self.cfg.interval;
        let now = self.clock.mono();
        if next >= now {
            return next;
        }
        let late = now.duration_since(next).as_secs_f64();
        let missed = (late / self.cfg.interval.as_secs_f64()).floor() as u64 + 1;
        self.skipped += missed;
        if missed > 1 {
            warn!(
                "a sampling cycle took {:.1} s: {missed} sample(s) skipped (a slow or hung NVML call); /metrics kept serving the last sample",
                late + self.cfg.interval.as_secs_f64()
            );
        }
        self.publish(None);
        now + self.cfg.interval
    }

    /// The way out: persists and writes the recording once more.
    pub fn shutdown(&mut self) {
        self.persist();
        self.write_recording(true);
        debug!("node loop stopped");
    }

    /// Answers one message from the socket API or the benchmark thread, and persists and
    /// publishes what it changed.
    pub fn handle(&mut self, msg: Message) {
        if self.answer(msg) {
            self.settle();
        }
    }

    /// Registrations, endings and progress are persisted soon (at the end of the burst they came
    /// in, not at the next persist interval): they are rare and matter.
    fn settle(&mut self) {
        self.persist();
        self.publish(None);
    }

    /// Answers one message; whether it changed anything.
    fn answer(&mut self, msg: Message) -> bool {
        let now = self.clock.now();
        let late = match &msg {
            Message::Register { deadline, .. }
            | Message::End { deadline, .. }
            | Message::Progress { deadline, .. }
            | Message::CallerProgress { deadline, .. } => now.mono > *deadline,
            Message::Benchmark { .. }
            | Message::ControllerEnded { .. }
            | Message::Persist
            | Message::ReleaseNvml
            | Message::ResumeNvml
            | Message::Shutdown => false,
        };
        if late {
            // Its caller has given up (and was told the agent did not answer in time): doing it
            // now would change the job table behind their back.
            self.late_requests += 1;
            debug!("a request that waited past its deadline was dropped");
            return false;
        }
        match msg {
            Message::Register {
                mut req,
                uid,
                reply,
                ..
            } => {
                // The GPUs as the job holds them (UUIDs), for the registrations they displace.
                let mut gpus = Vec::new();
                let r = self
                    .check_registration(&req, uid)
                    .and_then(|()| self.resolve_gpus(&mut req))
                    .and_then(|()| {
                        gpus = req.gpus.clone();
                        self.tracker.register(req, uid, &user_name(uid), now)
                    });
                if let Ok(j) = &r {
                    info!(job_id = %j.id, user = %j.user, "job registered: {}", j.name);
                    if uid == 0 {
                        self.end_displaced(&j.id, &gpus, now);
                    }
                    self.reattribute(now);
                }
                let changed = r.is_ok();
                let _ = reply.send(r);
                changed
            }
            Message::End {
                id,
                req,
                uid,
                reply,
                ..
            } => {
                let r = self.tracker.end(&id, req, uid, now);
                match &r {
                    Ok(j) => {
                        info!(job_id = %j.id, outcome = j.outcome.as_str(), "job ended");
                        self.reattribute(now);
                    }
                    // A hook's ending that changed nothing (a job this agent never heard of,
                    // one already ended as a ghost) is worth a line: a job may be misbilled.
                    Err(e) => warn!(job_id = %id, uid, "an ending of job {id} was refused: {e}"),
                }
                let changed = r.is_ok();
                let _ = reply.send(r);
                changed
            }
            Message::Progress {
                id,
                req,
                uid,
                reply,
                ..
            } => {
                let r = self.tracker.progress(&id, req, uid, now);
                let changed = r.is_ok();
                let _ = reply.send(r);
                changed
            }
            Message::CallerProgress {
                pid,
                uid,
                req,
                reply,
                ..
            } => {
                let r = self.job_of_process(pid).and_then(|id| {
                    // Root's right (0) where belonging is the only one asked for.
                    self.tracker.progress(&id, req, uid.unwrap_or(0), now)
                });
                let changed = r.is_ok();
                let _ = reply.send(r);
                changed
            }
            Message::Benchmark { uuid, result } => {
                Arc::make_mut(&mut self.benchmarks).insert(uuid, result);
                true
            }
            Message::ControllerEnded { id, req, why } => {
                let ended = self.end_lost_as(&id, req, &why, now);
                if ended {
                    self.reattribute(now);
                }
                ended
            }
            Message::Persist => {
                info!("SIGHUP: persisting the totals now; the configuration is read only at start (restart the agent to apply a change)");
                true
            }
            Message::ReleaseNvml => {
                self.release_nvml();
                true
            }
            Message::ResumeNvml => {
                if self.sampler.resume() {
                    info!("SIGUSR2: taking {} back; sampling resumes at the next tick, each GPU from a new baseline", self.sampler.library());
                } else {
                    info!(
                        "SIGUSR2: {} was not released; nothing to do",
                        self.sampler.library()
                    );
                }
                true
            }
            Message::Shutdown => false,
        }
    }

    /// Lets go of the GPU library (SIGUSR1) and says what that means for the bill.
    fn release_nvml(&mut self) {
        let library = self.sampler.library();
        if self.sampler.released().is_some() {
            info!("SIGUSR1: {library} is already released; SIGUSR2 takes it back");
            return;
        }
        let r = self.sampler.release("SIGUSR1");
        let held = if r.stuck.is_empty() {
            "the agent holds no NVML handle now, so a driver upgrade, `nvidia-smi --gpu-reset` or a \
             MIG change may go ahead"
                .to_string()
        } else {
            format!(
                "but reads of GPU(s) {:?} are stuck in the driver: {library} stays loaded until they \
                 return",
                r.stuck
            )
        };
        warn!(
            "SIGUSR1: {library} released on request ({}); {held}. Nothing is measured until \
             SIGUSR2 (`kill -USR2 {}`): no GPU time, energy or cost is counted meanwhile, every GPU \
             shows gpucost_gpu_up 0 and the time in gpucost_gpu_unmeasured_seconds_total, and \
             gpucost_nvml_up is 0 with gpucost_nvml_paused 1",
            if r.was_open { "it was open" } else { "it was not loaded" },
            std::process::id()
        );
    }

    /// What the job table cannot check alone: that a user's job root is the user's process and
    /// claims nobody else's (from `/proc` and the GPUs' process lists), and that root's GPUs exist.
    fn check_registration(&self, req: &RegisterRequest, uid: u32) -> Result<(), RequestError> {
        // (pid 0 is refused by the job table, as for root.)
        if let (Some(pid), true) = (req.pid.filter(|p| *p != 0), uid != 0) {
            let gpu_pids: Vec<u32> = self
                .sampler
                .gpus()
                .flat_map(|g| g.processes.iter().map(|p| p.pid))
                .collect();
            check_claim(self.procs.as_ref(), pid, uid, &gpu_pids)
                .map_err(RequestError::Forbidden)?;
        }
        Ok(())
    }

    /// Resolves a registration's GPUs to UUIDs, once (`resolve_gpu_names`): the job holds the
    /// GPUs it was given even if NVML numbers them otherwise later. Indices are taken as NVML's;
    /// the first time, the agent warns that a scheduler's may not be. With no GPU known yet (NVML
    /// not open) the names are kept and matched as they are, by index or UUID.
    fn resolve_gpus(&mut self, req: &mut RegisterRequest) -> Result<(), RequestError> {
        let units = self.units();
        if units.is_empty() || req.gpus.is_empty() {
            return Ok(());
        }
        let resolved = resolve_gpu_names(&req.gpus, &units).map_err(RequestError::Invalid)?;
        if !resolved.from_indices.is_empty() {
            let job = format!("job {}", req.id.as_deref().unwrap_or("(new)"));
            self.note_gpu_indices(&job, &resolved.from_indices);
        }
        req.gpus = resolved.uuids;
        Ok(())
    }

    /// The job process `pid` belongs to, by the rules that bill it, applied from the process up:
    ///
    /// 1. the process, or its nearest ancestor, is on one of this node's GPUs (at the last
    ///    process sample): the job attribution gives that process there (registration > pod >
    ///    Slurm > `GPUCOST_JOB_ID` of the same user > the process itself, `unattributed:PID`),
    ///    so its progress goes where its cost goes;
    /// 2. else a running registered job whose root is the process or an ancestor (a user's
    ///    registration only for that user's processes);
    /// 3. else the Slurm job of the process's cgroup.
    ///
    /// A process of none of these (a pod's helper that is not below a GPU process, say) is
    /// refused: nothing it could name would be trusted. The pid comes from the kernel
    /// (SO_PEERCRED) at connection time; a caller that exits and whose pid is reused before its
    /// request is read would be taken for the new process, a window of microseconds in which
    /// the reuse cannot be chosen.
    fn job_of_process(&self, pid: u32) -> Result<String, RequestError> {
        let procs = self.procs.as_ref();
        let chain = ancestry(procs, pid, MAX_CALLER_ANCESTRY);
        let Some(me) = chain.first() else {
            return Err(RequestError::Forbidden(format!(
                "process {pid} cannot be read: the agent must see the node's processes \
                 (hostPID in Kubernetes)"
            )));
        };
        let regs = self.tracker.registrations();
        let gpus: Vec<_> = self.sampler.gpus().filter(|g| g.up).collect();
        for p in &chain {
            for g in &gpus {
                let Some(on_gpu) = g.processes.iter().find(|u| u.pid == p.pid) else {
                    continue;
                };
                let one = [*on_gpu];
                let input = GpuInput {
                    index: g.info.index,
                    uuid: &g.info.uuid,
                    processes: &one,
                };
                let job_map = self.job_map_now();
                let pods = self.resolved_pods();
                let att = attribute(
                    &[input],
                    procs,
                    &regs,
                    &self.tracker.owners(),
                    &pods,
                    &job_map,
                );
                if let Some((id, _)) = att.owners.first().and_then(|o| o.first()) {
                    return Ok(id.clone());
                }
            }
        }
        for p in &chain {
            if let Some(r) = regs
                .iter()
                .find(|r| r.root_pid == Some(p.pid) && r.uid.is_none_or(|u| u == me.uid))
            {
                return Ok(r.job_id.clone());
            }
        }
        if let Some(id) = &me.slurm_job {
            return Ok(id.clone());
        }
        Err(RequestError::Forbidden(format!(
            "process {pid} belongs to no job on this node: neither it nor an ancestor is on a GPU \
             (as of the last process sample) or the root of a registered job, and it is in no \
             Slurm job; report from the training process, after it has used its GPU"
        )))
    }

    /// One sampling cycle: sample, attribute, account, persist when due, publish.
    pub fn tick(&mut self) {
        // The moment the readings are taken, as the sampler sees it (a cycle may take a while).
        let now = self.clock.now();
        let unix = now.wall;
        let cycle = self.sampler.cycle();
        self.tracker.begin_tick();
        // Before the cgroups are looked at: a spooled end says how a job ended, which a gone
        // cgroup cannot.
        if now.mono >= self.next_spool {
            self.next_spool = now.mono + self.cfg.persist_interval;
            self.replay_spool(now);
        }
        if cycle.processes_read {
            self.attribute(now);
            if self.end_jobs_without_cgroup(now) {
                self.attribute(now);
            }
        }
        if self.end_finished_pods(now) {
            self.reattribute(now);
        }
        if let Some(endings) = self.sim_endings.as_mut() {
            for (id, code) in endings.take() {
                let req = EndRequest {
                    exit_code: Some(code),
                    ..EndRequest::default()
                };
                // A job the agent never saw (it ran between two process samples) is no error.
                if let Ok(j) = self.tracker.end(&id, req, 0, now) {
                    info!(job_id = %j.id, outcome = j.outcome.as_str(), "simulated scheduler: job ended with exit code {code}");
                }
            }
        }
        for t in &cycle.ticks {
            if t.dt <= 0.0 {
                continue;
            }
            let owners = self.owners.get(&t.uuid).cloned().unwrap_or_default();
            // This GPU's measured rates where it has been benchmarked (what the libraries
            // deliver, where they were measured), else the datasheet's: the speedup an
            // FP32-bound job would see in BF16.
            let datasheet = *self
                .peaks
                .entry(t.model.clone())
                .or_insert_with(|| PipePeaks::datasheet(&t.model));
            let peaks = datasheet.map(|d| match self.benchmarks.get(&t.uuid) {
                Some(b) => d.measured(&gpucost_core::benchmark::delivered(b)),
                None => d,
            });
            // What the pipes did is priced at what this unit's SMs do per clock at the clock
            // they ran at in this interval (a MIG instance: its own SMs), not at a whole GPU's
            // benchmarked or datasheet rate.
            let priced = t.pipes.as_ref().map(|_| {
                let key = (t.uuid.clone(), t.compute_capability, t.sm_count, t.mig);
                let per_clock = *self.per_clock.entry(key).or_insert_with(|| {
                    rates_per_clock(&UnitSms {
                        model: &t.model,
                        compute_capability: t.compute_capability,
                        sm_count: t.sm_count,
                        mig: t.mig,
                        share: t.slice_share,
                        sm_clock_hz: None,
                    })
                });
                priced(
                    per_clock,
                    t.sm_clock_mhz.map(|m| m * 1e6),
                    datasheet,
                    t.slice_share,
                )
            });
            if let Some(priced) = &priced {
                self.note_pipe_basis(t, priced.map(|(_, b)| b));
            }
            // No FLOPs and no FP32 verdict from pipes that are unknown (a failed GPM metric).
            let flop = match (t.pipes.as_ref(), priced.flatten()) {
                (Some(p), Some((k, _))) => flop_rate(p, &k).map(|rate| rate * t.dt),
                _ => None,
            };
            let fp32_bound_speedup = match (t.pipes.as_ref(), peaks.as_ref()) {
                (Some(p), Some(k)) => (fp32_bound(p) == Some(true)).then(|| k.bf16_over_fp32()),
                _ => None,
            };
            let iv = Interval {
                t0: unix - t.dt,
                dt: t.dt,
                // After an outage this holds the energy used while the GPU could not be read
                // (`EnergyMeter::update` says why it is billed here, to these owners).
                energy_j: t.energy_j,
                utilization: t.utilization,
                model: &t.model,
                // A MIG instance's pipe activity is of its own slices, and so are the rates
                // it was priced at (its SMs, or the datasheet's times its share).
                flop: flop.unwrap_or(0.0),
                fp32_bound_speedup,
                slice_share: t.slice_share,
            };
            let rates = GpuRates {
                flop_rate: flop.map(|f| f / t.dt),
                // Pipes that were read but could not be priced (a failed GPM metric, or a GPU
                // of unknown architecture the table does not hold): unknown, not 0.
                flop_rate_unknown: t.pipes.is_some() && flop.is_none(),
                // MFU is against the datasheet peak (the usual convention), not the measured one.
                bf16_peak: datasheet.map(|k| k.bf16 * t.slice_share),
            };
            let gpu = (t.uuid.as_str(), t.index, t.model.as_str());
            self.tracker
                .account(&self.pricing, gpu, &owners, &iv, rates);
        }
        if let Some(r) = self.recorder.as_mut() {
            let gpus: Vec<_> = self.sampler.gpus().collect();
            r.observe(
                now.mono,
                &cycle.ticks,
                &gpus,
                &self.owners,
                self.sampler.driver(),
            );
        }
        if now.mono >= self.next_persist {
            self.next_persist = now.mono + self.cfg.persist_interval;
            self.persist();
            self.write_recording(false);
            self.tracker.expire(now);
        }
        self.publish(Some(cycle.duration));
    }

    /// Says in the log how a GPU's pipe activity is priced, when that changes (`None`: it
    /// cannot be, and its jobs have no FLOP rate from counters): the first time each way, at
    /// info or warn level; later changes at debug level.
    fn note_pipe_basis(&mut self, t: &crate::sample::sampler::Tick, basis: Option<PipeBasis>) {
        let before = self.pipe_basis.insert(t.uuid.clone(), basis);
        if before == Some(basis) {
            return;
        }
        let (index, model) = (t.index, &t.model);
        // A clock that fails to read now and then would otherwise flip it back and forth.
        if !self
            .pipe_basis_said
            .insert((t.uuid.clone(), format!("{basis:?}")))
        {
            debug!(
                gpu = index,
                "GPU {index}: pipe activity priced by {basis:?}"
            );
            return;
        }
        match basis {
            Some(PipeBasis::SmClock) => info!(
                gpu = index,
                "GPU {index} ({model}): FLOP/s from pipe activity x {}",
                PipeBasis::SmClock.describe()
            ),
            Some(b @ PipeBasis::Datasheet(_)) => warn!(
                gpu = index,
                "GPU {index} ({model}): FLOP/s from pipe activity x {}; the figures are at the \
                 datasheet's clock, not at the clock the GPU ran at",
                b.describe()
            ),
            None => warn!(
                gpu = index,
                "GPU {index} ({model}): its pipe activity cannot be turned into FLOP/s: neither \
                 its architecture's per-SM rates nor its datasheet are known; its jobs have no \
                 FLOP rate or MFU from counters"
            ),
        }
    }

    /// The prolog's job map, each entry's GPU resolved to its UUID when the entry first appears
    /// (`resolve_job_map`), so a GPU named by index stays the GPU it was then.
    fn job_map(&mut self) -> JobMap {
        let Some(dir) = self.cfg.job_map_dir.as_deref() else {
            return JobMap::new();
        };
        let raw = read_job_map(dir);
        let units = self.units();
        let (map, new) = resolve_job_map(&raw, &units, &mut self.job_map_seen);
        if !new.is_empty() {
            self.note_gpu_indices("the job map", &new);
        }
        map
    }

    /// [`Self::job_map`] as it would be now, remembering nothing (for a caller's request).
    fn job_map_now(&self) -> JobMap {
        let Some(dir) = self.cfg.job_map_dir.as_deref() else {
            return JobMap::new();
        };
        let mut seen = self.job_map_seen.clone();
        resolve_job_map(&read_job_map(dir), &self.units(), &mut seen).0
    }

    /// Every billing unit the sampler knows.
    fn units(&self) -> Vec<gpucost_core::reading::GpuStatic> {
        self.sampler.gpus().map(|g| g.info.clone()).collect()
    }

    /// Says that GPU indices (`taken`: index -> UUIDs) from `whose` were taken as NVML's: a
    /// warning the first time, then at info level.
    fn note_gpu_indices(&mut self, whose: &str, taken: &[(String, Vec<String>)]) {
        let taken: Vec<String> = taken
            .iter()
            .map(|(i, uuids)| format!("{i} = {}", uuids.join(" + ")))
            .collect();
        if self.warned_gpu_indices {
            info!("{whose}: GPU indices taken as NVML's: {}", taken.join(", "));
            return;
        }
        self.warned_gpu_indices = true;
        warn!(
            "{whose}: GPU indices taken as NVML's (the gpu label): {}. A scheduler's indices may \
             differ: Slurm's follow the order of gres.conf, and CUDA_VISIBLE_DEVICES counts from \
             0 the GPUs a job sees (inside a job whose devices are constrained) and follows \
             CUDA_DEVICE_ORDER; name GPUs by UUID to be sure (gpucost job start --gpus GPU-..., \
             job-map files named GPU-...). Said once; later ones at info level",
            taken.join(", ")
        );
    }

    /// The kubelet's latest pods, each device id resolved to the GPU or MIG instance it names
    /// (time-slicing replicas, MIG and GKE ids: `gpucost_core::attribute::device`).
    fn resolved_pods(&self) -> Vec<PodGpu> {
        let pods = with_jobs(
            &self.pods.borrow(),
            &self.kube_pods.borrow(),
            &self.cfg.pod_labels,
        );
        resolve_pods(&pods, &self.units())
    }

    /// Running jobs found through Kubernetes whose pods have all ended, as the Kubernetes API
    /// says (PRODUCT.md's outcomes "from the pod's termination state"), end as their pods did,
    /// when they did. Whether any ended.
    fn end_finished_pods(&mut self, now: Now) -> bool {
        let dir = self.kube_pods.borrow().clone();
        if dir.is_empty() {
            return false;
        }
        let running: Vec<(String, f64)> = self
            .tracker
            .jobs()
            .filter(|j| {
                j.outcome == Outcome::Running
                    && j.scheduler == Scheduler::Kubernetes
                    && j.registration.is_none()
            })
            .map(|j| (j.id.clone(), j.started_at))
            .collect();
        let done = finished_jobs(&dir, running.iter().map(|(id, _)| id.as_str()));
        let mut ended = false;
        for (id, e) in done {
            let started = running
                .iter()
                .find(|(j, _)| *j == id)
                .map_or(now.wall, |(_, s)| *s);
            let req = EndRequest {
                exit_code: e.exit_code,
                signal: e.signal,
                outcome: Some(e.outcome),
                reason: e.reason,
            };
            // As of when its pods ended, never before the agent saw it start nor after now.
            let at = Now {
                wall: e.at.clamp(started, now.wall.max(started)),
                mono: now.mono,
            };
            if let Ok(j) = self.tracker.end(&id, req, 0, at) {
                ended = true;
                info!(
                    job_id = %j.id,
                    outcome = j.outcome.as_str(),
                    reason = j.reason.map(|r| r.as_str()),
                    "Kubernetes job {} ended: {}",
                    j.id,
                    j.outcome.as_str()
                );
            }
        }
        ended
    }

    /// The GPUs named (indices or UUIDs) as UUIDs, where the node knows them.
    fn gpu_uuids(&self, names: &[String]) -> BTreeSet<String> {
        names
            .iter()
            .map(|n| {
                self.sampler
                    .gpus()
                    .find(|g| g.info.uuid == *n || g.info.index.to_string() == *n)
                    .map_or_else(|| n.clone(), |g| g.info.uuid.clone())
            })
            .collect()
    }

    /// Root registered job `id` with `gpus`: a running registration of another job that holds
    /// any of them with no process to follow (a scheduler's allocation, such as a Slurm
    /// prolog's) is a job whose end never reached the agent (its epilog ran while the agent was
    /// restarting or hung, issue 16): the scheduler has given its GPUs to the new job. It ends
    /// as `unknown` now, instead of sharing the new job's GPUs for ever.
    fn end_displaced(&mut self, id: &str, gpus: &[String], now: Now) {
        if gpus.is_empty() {
            return;
        }
        let new = self.gpu_uuids(gpus);
        let displaced: Vec<(String, Vec<String>)> = self
            .tracker
            .jobs()
            .filter(|j| j.id != id && j.outcome == Outcome::Running)
            .filter_map(|j| {
                let r = j.registration.as_ref()?;
                (r.by_root && r.pid.is_none() && !r.gpus.is_empty())
                    .then(|| (j.id.clone(), r.gpus.clone()))
            })
            .filter(|(_, g)| !self.gpu_uuids(g).is_disjoint(&new))
            .collect();
        for (old, _) in displaced {
            self.end_lost(
                &old,
                &format!("job {id} was registered on its GPU(s) {gpus:?}"),
                now,
            );
        }
    }

    /// Ends a job whose end the agent was never told, as `unknown`, and says why.
    fn end_lost(&mut self, id: &str, why: &str, now: Now) {
        let req = EndRequest {
            outcome: Some(Outcome::Unknown),
            ..EndRequest::default()
        };
        self.end_lost_as(id, req, why, now);
    }

    /// Ends a running job whose end the agent was never told as `req` says, and says why;
    /// whether it ended.
    fn end_lost_as(&mut self, id: &str, req: EndRequest, why: &str, now: Now) -> bool {
        match self.tracker.end(id, req, 0, now) {
            Ok(j) => {
                warn!(
                    job_id = %id,
                    outcome = j.outcome.as_str(),
                    "job {id} ended as {}: {why}, and no end was reported for it (a lost epilog)",
                    j.outcome.as_str()
                );
                true
            }
            Err(_) => false,
        }
    }

    /// Running Slurm registrations without a process (every prolog's) whose cgroup is gone:
    /// the job is over even though no epilog said so. Gone means seen by this agent and then
    /// missing, or missing for a job registered before this agent started (it ended while the
    /// agent was away). A node without a Slurm cgroup tree says nothing. Whether any ended.
    fn end_jobs_without_cgroup(&mut self, now: Now) -> bool {
        let Some(root) = self.cfg.cgroup_root.clone() else {
            return false;
        };
        let jobs: Vec<(String, f64)> = self
            .tracker
            .jobs()
            .filter(|j| j.outcome == Outcome::Running && j.scheduler == Scheduler::Slurm)
            .filter(|j| j.registration.as_ref().is_some_and(|r| r.pid.is_none()))
            .map(|j| (j.id.clone(), j.started_at))
            .collect();
        self.cgroups_seen
            .retain(|id| jobs.iter().any(|(j, _)| j == id));
        let mut ended = false;
        for (id, started_at) in jobs {
            match job_cgroup(&root, &id) {
                JobCgroup::NoSlurmTree => return ended,
                JobCgroup::Present => {
                    self.cgroups_seen.insert(id);
                }
                JobCgroup::Absent => {
                    if self.cgroups_seen.remove(&id) || started_at < self.started_wall {
                        let why = format!("its cgroup under {} is gone", root.display());
                        self.end_lost(&id, &why, now);
                        ended = true;
                    }
                }
            }
        }
        ended
    }

    /// Applies what hooks spooled while the agent was unreachable, in the order they ran, each
    /// at the moment it ran (a job starts and ends when its hooks did, not when the agent
    /// heard), with root's rights (`api::spool` trusts only root's files); each file is removed
    /// once applied or refused.
    fn replay_spool(&mut self, now: Now) {
        let Some(dir) = self.cfg.spool_dir.clone() else {
            return;
        };
        let entries = match spool::read(&dir) {
            Ok(e) => {
                self.spool_error = None;
                e
            }
            Err(why) => {
                if self.spool_error.as_deref() != Some(why.as_str()) {
                    warn!("{why}");
                }
                self.spool_error = Some(why);
                return;
            }
        };
        let mut changed = false;
        for (path, entry) in entries {
            match entry {
                Err(why) => warn!(
                    "spooled request {} cannot be applied ({why}); removed",
                    path.display()
                ),
                Ok(s) => {
                    let at = Now {
                        wall: s.at(),
                        mono: now.mono,
                    };
                    let (what, id, r) = match s {
                        spool::Spooled::Register { mut req, .. } => {
                            let id = req.id.clone().unwrap_or_default();
                            let mut gpus = Vec::new();
                            let r = self
                                .check_registration(&req, 0)
                                .and_then(|()| self.resolve_gpus(&mut req))
                                .and_then(|()| {
                                    gpus = req.gpus.clone();
                                    self.tracker.register(req, 0, &user_name(0), at)
                                });
                            if r.is_ok() {
                                self.end_displaced(&id, &gpus, now);
                            }
                            ("start", id, r)
                        }
                        spool::Spooled::End { id, req, .. } => {
                            let r = self.tracker.end(&id, req, 0, at);
                            ("end", id, r)
                        }
                    };
                    match r {
                        Ok(j) => {
                            changed = true;
                            info!(
                                job_id = %id,
                                outcome = j.outcome.as_str(),
                                "job {what} from the spool applied, as of {} (unix), when the hook ran and the agent could not be reached",
                                at.wall
                            );
                        }
                        Err(e) => {
                            warn!(job_id = %id, "the spooled job {what} of job {id} was refused: {e}")
                        }
                    }
                }
            }
            if let Err(e) = std::fs::remove_file(&path) {
                warn!("cannot remove the spooled request {}: {e}", path.display());
            }
        }
        if changed {
            self.reattribute(now);
        }
    }

    /// Who holds each GPU, again at once after a registration or an ending, from the process
    /// lists of the last sample: a job is billed from the interval it was registered in, not
    /// from the next process sample (`process_interval` apart; issue 16 saw five 7 s jobs
    /// billed 3 to 6 GPU-s each), and an ended job's GPUs go to whoever holds them now.
    ///
    /// Only the owners change: which jobs are found and which vanished is for a fresh process
    /// sample to say (from the last one, a job found through its processes that has just been
    /// ended would be seen again, and run again).
    fn reattribute(&mut self, _now: Now) {
        if self.sampler.gpus().next().is_some() {
            self.attribute_owners();
        }
    }

    /// Who holds each GPU, from the last process sample; the jobs found and seen go to the
    /// job table.
    fn attribute(&mut self, now: Now) {
        let att = self.attribute_owners();
        let procs = self.procs.as_ref();
        self.tracker
            .observe(&att, |pid| procs.info(pid).is_some(), user_name, now);
    }

    /// Sets who holds each GPU, from the last process sample, and returns the attribution.
    fn attribute_owners(&mut self) -> gpucost_core::attribute::Attribution {
        let job_map = self.job_map();
        let gpus: Vec<_> = self.sampler.gpus().filter(|g| g.up).collect();
        // The agent's own benchmark runs on idle GPUs; it is nobody's job.
        let own = std::process::id();
        let processes: Vec<Vec<gpucost_core::reading::ProcessUse>> = gpus
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
        let pods = self.resolved_pods();
        let regs = self.tracker.registrations();
        let owners = self.tracker.owners();
        let att = attribute(
            &inputs,
            self.procs.as_ref(),
            &regs,
            &owners,
            &pods,
            &job_map,
        );
        self.owners = gpus
            .iter()
            .zip(&att.owners)
            .map(|(g, o)| (g.info.uuid.clone(), o.clone()))
            .collect();
        att
    }

    /// Reads the store's history, once, and adds it to the totals: at start, and, while it
    /// cannot be read, again before each persist; until then nothing is written to the store
    /// (its history would be overwritten). The totals counted in memory meanwhile come on top
    /// of the history ([`Tracker::merge_history`]), so nothing exported goes down. Whether the
    /// history is loaded.
    fn load_history(&mut self) -> bool {
        if self.loaded {
            return true;
        }
        let (jobs, gpus) = match self.store.load() {
            Ok(history) => history,
            Err(e) => {
                if self.ledger_error.as_deref() != Some(e.as_str()) {
                    warn!(
                        "cannot load the ledger {}: {e}. Counting in memory from zero; nothing is \
                         written to the ledger before its history is loaded, which is tried again \
                         every {} (gpucost_ledger_up 0)",
                        self.store.location(),
                        humantime::format_duration(self.cfg.persist_interval)
                    );
                }
                self.ledger_error = Some(e);
                return false;
            }
        };
        let running = jobs.iter().filter(|j| j.ended_at.is_none()).count();
        let (n_jobs, n_gpus) = (jobs.len(), gpus.len());
        if self.ledger_error.take().is_some() {
            info!(
                "ledger {} loaded at last: {n_jobs} jobs ({running} running), {n_gpus} GPUs; what was counted in memory meanwhile is added to them",
                self.store.location()
            );
        } else {
            info!(
                "ledger {}: {n_jobs} jobs ({running} still running continue), {n_gpus} GPUs",
                self.store.location()
            );
        }
        // The tracker's GPU events are the sampler's count so far (`persist` brings them up to
        // date first); the ledger's come on top, there and in what the sampler's count adds to.
        for g in &gpus {
            self.events_loaded
                .entry(g.uuid.clone())
                .or_default()
                .add(&g.events);
        }
        self.tracker.merge_history(jobs, gpus, self.clock.now());
        self.loaded = true;
        // `gpucost report` labels money with the currency the agent counted in.
        if let Err(e) = self.store.set_meta("currency", &self.pricing.currency) {
            warn!("cannot record the currency in the ledger: {e}");
        }
        // And its prices: a report run without the agent's config prices with the same ones.
        let source = self.pricing.source.as_ref().map(toml::to_string);
        if let Some(Ok(text)) = source {
            if let Err(e) = self.store.set_meta("pricing", &text) {
                warn!("cannot record the prices in the ledger: {e}");
            }
        }
        true
    }

    /// Writes what changed; on success the persisted state becomes what is exported.
    fn persist(&mut self) {
        self.count_gpu_events();
        if !self.load_history() {
            return;
        }
        let dirty: Vec<&JobRecord> = self.tracker.dirty();
        let gpus: Vec<GpuRecord> = self.tracker.gpus().cloned().collect();
        match self.store.persist(&dirty, &gpus) {
            Ok(()) => {
                if self.ledger_error.take().is_some() {
                    info!("ledger {} writes work again", self.store.location());
                }
                self.durable = true;
                self.tracker.mark_clean();
                self.republish();
            }
            Err(msg) => {
                if self.ledger_error.as_deref() != Some(msg.as_str()) {
                    warn!("cannot persist to the ledger: {msg}; metrics keep being served, retrying every {}", humantime::format_duration(self.cfg.persist_interval));
                }
                self.ledger_error = Some(msg);
            }
        }
    }

    /// Brings each GPU's throttled seconds and Xids in the totals up to date: what the store
    /// had plus what the sampler counted since the agent started.
    fn count_gpu_events(&mut self) {
        for g in self.sampler.gpus() {
            let mut events = self
                .events_loaded
                .get(&g.info.uuid)
                .cloned()
                .unwrap_or_default();
            events.add(&g.totals.events);
            self.tracker.set_gpu_events(&g.info.uuid, events);
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
        // A new value only when a GPU came or changed model: the renderer re-encodes every job
        // when it changes.
        let model_of = whatif::models_by_uuid(self.published.gpus.values());
        if model_of != self.what_if.model_of {
            Arc::make_mut(&mut self.what_if).model_of = model_of;
        }
    }

    fn publish(&mut self, duration: Option<Duration>) {
        if !self.durable {
            // Nothing durable to stay consistent with: show the live totals.
            self.republish();
        }
        let prev = self.tx.borrow().clone();
        let s = &self.sampler;
        let snapshot = Snapshot {
            // The time of the last sample, not of this publication: /healthz and the watchdog
            // judge the sampler by it, and a stream of requests must not make a stuck sampler
            // look alive.
            taken_at: match duration {
                Some(_) => Some(self.clock.mono()),
                None => prev.taken_at,
            },
            simulated: s.simulated().map(str::to_string),
            source: s.source(),
            backend_up: s.backend_up(),
            backend_error: s.backend_error(),
            backend_paused: s.released().is_some(),
            backend_reopens: s.reopens(),
            xid_listener_up: s.xid_listener_up(),
            driver_events: s.driver_events(),
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
            what_if: self.what_if.clone(),
            skipped_samples: self.skipped,
            late_requests: self.late_requests,
            benchmarks: self.benchmarks.clone(),
            bench_min_ratio: self.cfg.bench_min_ratio,
        };
        let _ = self.tx.send(Arc::new(snapshot));
    }
}
