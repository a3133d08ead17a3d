//! The job table: every job the node knows, its registration, and its running totals.
//!
//! Owned by the sampler thread (one owner; the API reaches it through messages). It turns
//! attribution results into jobs (found jobs appear, vanished ones end as `unknown`), applies
//! registrations and endings with ownership checks, adds each GPU interval's cost to the jobs
//! holding the GPU, and hands the ledger what changed. Pure: time is passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::account::cost::{cost_interval, Interval, Owner};
use crate::account::pricing::Pricing;
use crate::account::GpuEvents;
use crate::attribute::{Attribution, JobOwners, Registration};
use crate::clock::Now;
use crate::jobs::{
    Checkpoint, EndReason, GpuRecord, JobRecord, Outcome, Progress, Registered, Scheduler, Usage,
};

/// Longest accepted job id, name, label key or value, in bytes.
pub const MAX_TEXT: usize = 256;
/// Most labels on one job.
pub const MAX_LABELS: usize = 32;
/// Largest reported count (tokens, samples, steps): 2^53, the largest range in which an f64
/// holds every whole number. Counts are exported as f64 (Prometheus samples are) and multiplied
/// into model FLOPs as f64; above this they would be rounded.
pub const MAX_COUNT: u64 = 1 << 53;
/// How many times the dense BF16 peak of a job's GPU shares on this node (or, for a job holding
/// none, of the node's GPUs) a reported model FLOP rate may be. A multi-node job may report its
/// global progress on one node only, so the rate it reports there can be its whole size times the
/// peak of what it holds here: this allows a job of 1,024 nodes like this one. A rate beyond it is
/// a wrong `tokens` or `flops_per_token`, not a big job (the showed an MFU of 4.6e23).
pub const MAX_REPORTED_PEAKS: f64 = 1024.0;

/// A request to register a job (from `gpucost run`, `gpucost job start` or the API).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Chosen by the caller (a scheduler's id, or `GPUCOST_JOB_ID`); generated when absent.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The job's root process; it and its descendants belong to the job.
    #[serde(default)]
    pub pid: Option<u32>,
    /// GPUs allocated to the job (UUIDs or indices), held even while idle.
    #[serde(default)]
    pub gpus: Vec<String>,
    /// `gpucost` (default) or `slurm` (for prolog hooks).
    #[serde(default)]
    pub scheduler: Option<Scheduler>,
    /// User name to record; only root may register a job for another user.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub uid: Option<u32>,
}

/// A request to end a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndRequest {
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<i32>,
    /// Explicit outcome when no exit status is known (`failed` from an epilog that knows).
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Why a failed job failed (`time_limit`, `oom`, ...); from the exit status when absent.
    #[serde(default)]
    pub reason: Option<EndReason>,
}

/// Why a request was refused; maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Malformed or out of the allowed range: 400.
    #[error("{0}")]
    Invalid(String),
    /// Not the caller's to change: 403.
    #[error("{0}")]
    Forbidden(String),
    /// No such job on this node: 404.
    #[error("{0}")]
    NotFound(String),
    /// At odds with the job's state (it has ended, a count went backwards): 409.
    #[error("{0}")]
    Conflict(String),
    /// Well-formed, but what it claims cannot be true: a model FLOP rate far above what the
    /// hardware can do, or counts beyond what an f64 holds exactly: 422 Unprocessable Content.
    #[error("{0}")]
    Unprocessable(String),
    /// A cap on running jobs was reached: 429.
    #[error("{0}")]
    TooMany(String),
}

/// Caps on running jobs that users register, so that no user can grow the job table (and
/// `/metrics`) without bound. Root's registrations (the scheduler's hooks) are not capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLimits {
    /// Running jobs one user may have registered at a time.
    pub max_running_per_user: usize,
    /// Running jobs all users may have registered at a time.
    pub max_running: usize,
}

impl Default for JobLimits {
    fn default() -> Self {
        JobLimits {
            max_running_per_user: crate::config::defaults::MAX_RUNNING_PER_USER as usize,
            max_running: crate::config::defaults::MAX_RUNNING as usize,
        }
    }
}

/// Progress a job reports: cumulative counts since it started (any subset).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    #[serde(default)]
    pub tokens: Option<u64>,
    #[serde(default)]
    pub samples: Option<u64>,
    #[serde(default)]
    pub steps: Option<u64>,
    /// Model FLOPs per token (6 x parameters for a decoder's training step, say).
    #[serde(default)]
    pub flops_per_token: Option<f64>,
    #[serde(default)]
    pub flops_per_step: Option<f64>,
    /// The job has just saved a checkpoint: were it to fail or be preempted from now on, only
    /// the cost after this report would be lost.
    #[serde(default)]
    pub checkpoint: bool,
}

/// What one GPU interval says about its owners' rates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuRates {
    /// FLOP/s from pipe activity, where the GPU has GPM and every pipe it needs was read.
    pub flop_rate: Option<f64>,
    /// The GPU has GPM, but a pipe the rate needs was unknown (a failed GPM metric): its owners'
    /// counter-based FLOP rate is unknown for the tick, rather than the rate of their other
    /// GPUs over the peak of all of them (an MFU from unknown inputs).
    pub flop_rate_unknown: bool,
    /// Dense BF16 peak of the GPU, where known.
    pub bf16_peak: Option<f64>,
}

/// A running job's FLOP rate over the last tick, and the peak of its GPU shares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct JobRate {
    /// From pipe counters; `None` where none of its GPUs has GPM.
    pub achieved_flops: Option<f64>,
    /// Sum over its GPUs of share x dense BF16 peak: MFU's denominator.
    pub peak_flops: f64,
}

#[derive(Debug, Clone)]
struct Tracked {
    /// Shared with the published snapshot until changed: [`Tracked::rec_mut`] copies it then,
    /// so an unchanged job is the same allocation from one snapshot to the next.
    rec: Arc<JobRecord>,
    rate: JobRate,
    /// A GPU it held this tick had an unknown FLOP rate ([`GpuRates::flop_rate_unknown`]).
    rate_unknown: bool,
    /// When attribution last saw the job hold a GPU (monotonic: a wall-clock step ends no job).
    last_seen: Instant,
    /// The same moment on the wall clock, for the end time of a job that vanished.
    last_seen_wall: f64,
    /// When the job ended (monotonic), for its grace period on /metrics.
    ended: Option<Instant>,
    /// When its last progress report came (monotonic), for its FLOP rate.
    progress_at: Option<Instant>,
    dirty: bool,
}

impl Tracked {
    /// The record, to change: marks the job dirty (to be persisted).
    fn rec_mut(&mut self) -> &mut JobRecord {
        self.dirty = true;
        Arc::make_mut(&mut self.rec)
    }

    fn new(rec: JobRecord, now: Now, dirty: bool) -> Self {
        Tracked {
            rec: Arc::new(rec),
            rate: JobRate::default(),
            rate_unknown: false,
            last_seen: now.mono,
            last_seen_wall: now.wall,
            ended: None,
            progress_at: None,
            dirty,
        }
    }

    fn seen(&mut self, now: Now) {
        self.last_seen = now.mono;
        self.last_seen_wall = now.wall;
    }
}

/// The per-node job table.
#[derive(Debug, Clone)]
pub struct Tracker {
    jobs: BTreeMap<String, Tracked>,
    gpus: BTreeMap<String, GpuRecord>,
    finished: BTreeMap<Outcome, u64>,
    /// Seconds a finished job stays on /metrics.
    grace_s: f64,
    /// Seconds a found job may go unseen before it is ended as `unknown`.
    vanish_s: f64,
    next_serial: u64,
    host: String,
    limits: JobLimits,
    /// Each GPU's dense BF16 peak (FLOP/s) as last accounted, by UUID: the node's peak bounds
    /// the progress a job holding no GPU may report.
    gpu_peaks: BTreeMap<String, f64>,
}

fn check_text(what: &str, s: &str) -> Result<(), RequestError> {
    if s.is_empty() || s.len() > MAX_TEXT || s.chars().any(char::is_control) {
        return Err(RequestError::Invalid(format!(
            "{what} must be 1 to {MAX_TEXT} bytes without control characters"
        )));
    }
    Ok(())
}

/// What a user (not root) may not put in a registration: another user's identity, GPUs (an
/// allocation is the scheduler's to declare: a user's job pays for the GPUs its processes use),
/// another scheduler's name, or no process at all (a user's job is the process tree it names).
fn check_user_registration(req: &RegisterRequest, caller_uid: u32) -> Result<(), RequestError> {
    let refuse = |why: &str| Err(RequestError::Forbidden(why.to_string()));
    if req.uid.is_some_and(|u| u != caller_uid) || req.user.is_some() {
        return refuse("only root may register a job for another user");
    }
    if !req.gpus.is_empty() {
        return refuse(
            "gpus: only root (a scheduler's prolog) may allocate GPUs to a job; a user's job \
             is billed for the GPUs its processes use",
        );
    }
    if req.scheduler.is_some_and(|s| s != Scheduler::Gpucost) {
        return refuse("scheduler: only root (a scheduler's hook) may register a scheduler's job");
    }
    if req.pid.is_none() {
        return Err(RequestError::Invalid(
            "pid: a user's registration names the job's root process (gpucost run sends its own)"
                .into(),
        ));
    }
    Ok(())
}

impl Tracker {
    /// An empty table.
    pub fn new(grace_s: f64, vanish_s: f64, host: &str) -> Self {
        Tracker {
            jobs: BTreeMap::new(),
            gpus: BTreeMap::new(),
            finished: BTreeMap::new(),
            grace_s,
            vanish_s,
            next_serial: 0,
            host: host.to_string(),
            limits: JobLimits::default(),
            gpu_peaks: BTreeMap::new(),
        }
    }

    /// A table restored from the ledger's jobs and GPUs. Jobs still running when the agent
    /// stopped continue under their ids; finished ones stay for what is left of their grace
    /// period, as far as the wall clock tells (the monotonic clock does not survive a restart).
    pub fn restore(
        jobs: Vec<JobRecord>,
        gpus: Vec<GpuRecord>,
        now: Now,
        grace_s: f64,
        vanish_s: f64,
        host: &str,
    ) -> Self {
        let mut t = Tracker::new(grace_s, vanish_s, host);
        t.merge_history(jobs, gpus, now);
        t
    }

    /// Folds in the ledger's history (`jobs`, `gpus`) on top of what the table counted itself.
    /// On an empty table this is [`Tracker::restore`]; on a table that counted from nothing while
    /// the ledger could not be read, it adds the two, so that nothing exported goes down:
    ///
    /// - a job in both is one job that ran on: its usage (in total and per GPU) is the sum, its
    ///   start the earlier one, the rest (outcome, labels, registration, progress) what the
    ///   table knows, which is newer, filled in from the ledger where the table has nothing; it
    ///   is marked to be persisted;
    /// - a job only in the ledger comes back as `restore` brings it: running, or finished and
    ///   within its grace period, or only counted;
    /// - a GPU's totals (usage, unallocated seconds, throttled seconds, Xids) are summed;
    /// - finished jobs counted add up.
    pub fn merge_history(&mut self, jobs: Vec<JobRecord>, gpus: Vec<GpuRecord>, now: Now) {
        for rec in jobs {
            if rec.outcome != Outcome::Running {
                *self.finished.entry(rec.outcome).or_default() += 1;
            }
            let Some(t) = self.jobs.get_mut(&rec.id) else {
                self.restore_job(rec, now);
                continue;
            };
            let m = t.rec_mut();
            m.usage.add(&rec.usage);
            for (uuid, u) in &rec.per_gpu {
                m.per_gpu.entry(uuid.clone()).or_default().add(u);
            }
            // f64::min keeps the other value when one is NaN (a start the ledger lost).
            m.started_at = m.started_at.min(rec.started_at);
            for (k, v) in rec.labels {
                m.labels.entry(k).or_insert(v);
            }
            if m.uid.is_none() {
                m.uid = rec.uid;
                m.user = rec.user;
            }
            m.registration = m.registration.take().or(rec.registration);
            m.progress = m.progress.take().or(rec.progress);
        }
        for g in gpus {
            match self.gpus.get_mut(&g.uuid) {
                Some(m) => {
                    m.usage.add(&g.usage);
                    m.unallocated_seconds += g.unallocated_seconds;
                    m.events.add(&g.events);
                }
                None => {
                    self.gpus.insert(g.uuid.clone(), g);
                }
            }
        }
    }

    /// A job from the ledger that the table does not have: kept if running or within its grace
    /// period (as far as the wall clock tells), not marked to be persisted.
    fn restore_job(&mut self, rec: JobRecord, now: Now) {
        let grace_s = self.grace_s;
        let in_grace = rec.ended_at.is_none_or(|e| now.wall - e < grace_s);
        if in_grace {
            let ago = rec.ended_at.map(|e| (now.wall - e).clamp(0.0, grace_s));
            let mut tracked = Tracked::new(rec, now, false);
            tracked.ended = ago.map(|a| {
                now.mono
                    .checked_sub(Duration::from_secs_f64(a))
                    .unwrap_or(now.mono)
            });
            self.jobs.insert(tracked.rec.id.clone(), tracked);
        }
    }

    /// Sets the GPU's throttled seconds and Xids (counted by the sampler, plus what the ledger
    /// had); false when the table has no such GPU yet (it appears with its first interval).
    pub fn set_gpu_events(&mut self, uuid: &str, events: GpuEvents) -> bool {
        match self.gpus.get_mut(uuid) {
            Some(g) => {
                g.events = events;
                true
            }
            None => false,
        }
    }

    pub fn get(&self, id: &str) -> Option<&JobRecord> {
        self.jobs.get(id).map(|t| t.rec.as_ref())
    }

    pub fn jobs(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.values().map(|t| t.rec.as_ref())
    }

    /// The jobs as shared records: an unchanged job is the same allocation as last time.
    pub fn shared_jobs(&self) -> impl Iterator<Item = &Arc<JobRecord>> {
        self.jobs.values().map(|t| &t.rec)
    }

    pub fn gpus(&self) -> impl Iterator<Item = &GpuRecord> {
        self.gpus.values()
    }

    /// Jobs finished so far (also those that left the table), by outcome.
    pub fn finished_counts(&self) -> &BTreeMap<Outcome, u64> {
        &self.finished
    }

    /// The caps on users' running registrations.
    pub fn set_limits(&mut self, limits: JobLimits) {
        self.limits = limits;
    }

    /// Registrations of running jobs, for attribution.
    pub fn registrations(&self) -> Vec<Registration> {
        self.jobs
            .values()
            .filter(|t| t.rec.outcome == Outcome::Running)
            .filter_map(|t| {
                t.rec.registration.as_ref().map(|r| Registration {
                    job_id: t.rec.id.clone(),
                    root_pid: r.pid,
                    gpus: r.gpus.clone(),
                    uid: if r.by_root {
                        None
                    } else {
                        t.rec.uid.filter(|u| *u != 0)
                    },
                })
            })
            .collect()
    }

    /// The owner of every job that has one, for attribution (an environment's job id joins a
    /// job only when the uids match).
    pub fn owners(&self) -> JobOwners {
        self.jobs
            .iter()
            .filter_map(|(id, t)| t.rec.uid.map(|u| (id.clone(), u)))
            .collect()
    }

    /// Running jobs that users (not root) registered: all of them, and `uid`'s.
    fn users_running(&self, uid: u32) -> (usize, usize) {
        self.jobs
            .values()
            .filter(|t| t.rec.outcome == Outcome::Running)
            .filter(|t| t.rec.registration.as_ref().is_some_and(|r| !r.by_root))
            .fold((0, 0), |(all, mine), t| {
                (all + 1, mine + usize::from(t.rec.uid == Some(uid)))
            })
    }

    fn new_id(&mut self, now: Now) -> String {
        self.next_serial += 1;
        format!("{}-{}-{}", self.host, now.wall as u64, self.next_serial)
    }

    /// Registers a job for the caller `uid` (from the socket's peer credentials).
    pub fn register(
        &mut self,
        req: RegisterRequest,
        caller_uid: u32,
        caller_user: &str,
        now: Now,
    ) -> Result<JobRecord, RequestError> {
        let is_root = caller_uid == 0;
        if !is_root {
            if let Some(id) = req.id.as_deref() {
                if self
                    .jobs
                    .get(id)
                    .and_then(|t| t.rec.uid)
                    .is_some_and(|u| u != caller_uid)
                {
                    return Err(RequestError::Forbidden(format!(
                        "job {id} belongs to another user"
                    )));
                }
            }
            check_user_registration(&req, caller_uid)?;
        }
        if req.pid == Some(0) {
            return Err(RequestError::Invalid("pid 0 is not a process".into()));
        }
        if let Some(id) = &req.id {
            check_text("job id", id)?;
        }
        if let Some(n) = &req.name {
            check_text("name", n)?;
        }
        if let Some(u) = &req.user {
            check_text("user", u)?;
        }
        if req.labels.len() > MAX_LABELS {
            return Err(RequestError::Invalid(format!(
                "at most {MAX_LABELS} labels"
            )));
        }
        for (k, v) in &req.labels {
            check_text("label key", k)?;
            if v.len() > MAX_TEXT || v.chars().any(char::is_control) {
                return Err(RequestError::Invalid(format!(
                    "label {k}: value too long or has control characters"
                )));
            }
            if !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                return Err(RequestError::Invalid(format!(
                    "label key {k:?}: use letters, digits, _ - ."
                )));
            }
        }
        if req.gpus.len() > 64 || req.gpus.iter().any(|g| g.is_empty() || g.len() > 128) {
            return Err(RequestError::Invalid(
                "gpus: at most 64 GPU UUIDs or indices".into(),
            ));
        }
        let uid = req.uid.unwrap_or(caller_uid);
        let user = req.user.clone().unwrap_or_else(|| caller_user.to_string());
        let id = match req.id.clone() {
            Some(id) => id,
            None => self.new_id(now),
        };
        let labels = req.labels.clone();
        let reg = Registered {
            pid: req.pid,
            gpus: req.gpus.clone(),
            by_root: is_root,
        };
        if let Some(existing) = self.jobs.get_mut(&id) {
            if existing.rec.uid.is_some_and(|u| u != caller_uid) && !is_root {
                return Err(RequestError::Forbidden(format!(
                    "job {id} belongs to another user"
                )));
            }
            // Root (a scheduler's hook) registering the id of a job that ended before now: a new
            // job with a reused id (Slurm's ids start again after a controller reset; a requeued
            // job runs again). The earlier run keeps its record under `ID@START`; the new one
            // takes the id. A registration from before the end (a spooled prolog replayed late)
            // is the same run, and refused.
            let new_run = is_root && existing.rec.ended_at.is_some_and(|e| now.wall >= e);
            if existing.rec.outcome != Outcome::Running && !new_run {
                return Err(RequestError::Conflict(format!(
                    "job {id} has already ended"
                )));
            }
        }
        if self
            .jobs
            .get(&id)
            .is_some_and(|t| t.rec.outcome != Outcome::Running)
        {
            if let Some(mut old) = self.jobs.remove(&id) {
                let renamed = JobRecord::earlier_run_id(&id, old.rec.started_at);
                old.rec_mut().id = renamed.clone();
                self.jobs.insert(renamed, old);
            }
        }
        if let Some(existing) = self.jobs.get_mut(&id) {
            // A known job (found by attribution, or a repeated prolog): it becomes registered.
            existing.seen(now);
            // Root's word is final: a job id that a user registered first (squatting the id a
            // scheduler is about to use) takes root's name, labels, owner and scheduler. Its cost
            // so far stays with the job, since exported counters never go back.
            let squatted = is_root && existing.rec.uid.is_some_and(|u| u != uid);
            let rec = existing.rec_mut();
            if squatted {
                rec.labels = labels;
                rec.name = req.name.unwrap_or_else(|| id.clone());
                rec.scheduler = req.scheduler.unwrap_or(Scheduler::Gpucost);
            } else {
                rec.labels.extend(labels);
                if let Some(n) = req.name {
                    rec.name = n;
                }
                if let Some(s) = req.scheduler.filter(|_| is_root) {
                    rec.scheduler = s;
                }
            }
            rec.uid = Some(uid);
            rec.user = user;
            rec.registration = Some(reg);
            return Ok(rec.clone());
        }
        if !is_root {
            let (all, mine) = self.users_running(caller_uid);
            let JobLimits {
                max_running_per_user: per_user,
                max_running: per_node,
            } = self.limits;
            if mine >= per_user {
                return Err(RequestError::TooMany(format!(
                    "uid {caller_uid} has {mine} running jobs registered, the most one user may \
                     (jobs.max_running_per_user = {per_user}); end some first"
                )));
            }
            if all >= per_node {
                return Err(RequestError::TooMany(format!(
                    "{all} running jobs registered by users on this node, the most allowed \
                     (jobs.max_running = {per_node})"
                )));
            }
        }
        let rec = JobRecord {
            id: id.clone(),
            name: req.name.unwrap_or_else(|| id.clone()),
            user,
            uid: Some(uid),
            scheduler: req.scheduler.unwrap_or(Scheduler::Gpucost),
            labels,
            started_at: now.wall,
            ended_at: None,
            outcome: Outcome::Running,
            exit_code: None,
            signal: None,
            reason: None,
            usage: Usage::default(),
            per_gpu: BTreeMap::new(),
            registration: Some(reg),
            progress: None,
        };
        self.jobs.insert(id, Tracked::new(rec.clone(), now, true));
        Ok(rec)
    }

    /// The running job `id`, if `caller_uid` may change it (its owner, or root).
    fn running_job_of(&mut self, id: &str, caller_uid: u32) -> Result<&mut Tracked, RequestError> {
        let t = self
            .jobs
            .get_mut(id)
            .ok_or_else(|| RequestError::NotFound(format!("no job {id:?} on this node")))?;
        if caller_uid != 0 && t.rec.uid != Some(caller_uid) {
            return Err(RequestError::Forbidden(format!(
                "job {id} belongs to another user"
            )));
        }
        if t.rec.outcome != Outcome::Running {
            return Err(RequestError::Conflict(format!(
                "job {id} has already ended ({})",
                t.rec.outcome.as_str()
            )));
        }
        Ok(t)
    }

    /// Ends a job on behalf of `caller_uid`.
    pub fn end(
        &mut self,
        id: &str,
        req: EndRequest,
        caller_uid: u32,
        now: Now,
    ) -> Result<JobRecord, RequestError> {
        let t = self.running_job_of(id, caller_uid)?;
        let outcome = match req.outcome {
            Some(Outcome::Running) => {
                return Err(RequestError::Invalid(
                    "outcome must be succeeded, failed, cancelled, preempted or unknown".into(),
                ))
            }
            Some(o) => o,
            None if req.reason.is_some() => Outcome::Failed,
            None => Outcome::from_exit(req.exit_code, req.signal),
        };
        let reason = match (outcome, req.reason) {
            (Outcome::Failed, Some(r)) => Some(r),
            (Outcome::Failed, None) => EndReason::from_exit(req.exit_code, req.signal),
            (o, Some(r)) => {
                return Err(RequestError::Invalid(format!(
                    "reason {:?}: only a failed job has a reason (the outcome is {})",
                    r.as_str(),
                    o.as_str()
                )))
            }
            (_, None) => None,
        };
        t.ended = Some(now.mono);
        let rec = t.rec_mut();
        rec.outcome = outcome;
        rec.exit_code = req.exit_code;
        rec.signal = req.signal;
        rec.reason = reason;
        rec.ended_at = Some(now.wall);
        let rec = rec.clone();
        *self.finished.entry(outcome).or_default() += 1;
        Ok(rec)
    }

    /// Folds in an attribution: found jobs appear, jobs seen again are kept alive, found jobs
    /// unseen for longer than the vanish time end as `unknown`, and so do registered jobs whose
    /// root process is gone (`alive(pid)` false) with no ending reported.
    pub fn observe(
        &mut self,
        att: &Attribution,
        alive: impl Fn(u32) -> bool,
        user_of: impl Fn(u32) -> String,
        now: Now,
    ) {
        let seen: BTreeSet<&str> = att
            .owners
            .iter()
            .flatten()
            .map(|(id, _)| id.as_str())
            .collect();
        for (id, f) in &att.found {
            if let Some(t) = self.jobs.get_mut(id) {
                // A found job seen again after it ended (a repeating scenario, a reused
                // GPUCOST_JOB_ID, a recycled pid) runs again under its id: its totals continue,
                // so no exported counter goes back.
                if t.rec.outcome != Outcome::Running && t.rec.registration.is_none() {
                    t.seen(now);
                    t.ended = None;
                    let rec = t.rec_mut();
                    rec.outcome = Outcome::Running;
                    rec.ended_at = None;
                    rec.exit_code = None;
                    rec.signal = None;
                    rec.reason = None;
                }
                continue;
            }
            let rec = JobRecord {
                id: id.clone(),
                name: f.name.clone(),
                user: f
                    .user
                    .clone()
                    .unwrap_or_else(|| f.uid.map_or_else(|| "unknown".to_string(), &user_of)),
                uid: f.uid,
                scheduler: f.scheduler,
                labels: f.labels.clone(),
                started_at: now.wall,
                ended_at: None,
                outcome: Outcome::Running,
                exit_code: None,
                signal: None,
                reason: None,
                usage: Usage::default(),
                per_gpu: BTreeMap::new(),
                registration: None,
                progress: None,
            };
            self.jobs.insert(id.clone(), Tracked::new(rec, now, true));
        }
        let mut ended = Vec::new();
        for (id, t) in self.jobs.iter_mut() {
            if t.rec.outcome != Outcome::Running {
                continue;
            }
            if seen.contains(id.as_str()) {
                t.seen(now);
            }
            let unseen = now.since(t.last_seen) >= self.vanish_s;
            let gone = match &t.rec.registration {
                // A registered job ends when told; if its root process died without a word,
                // after the vanish time, it ended in an unknown way.
                Some(r) => r.pid.is_some_and(|p| !alive(p)) && unseen,
                None => unseen,
            };
            if gone {
                let ended_at = t.last_seen_wall.max(t.rec.started_at);
                t.ended = Some(t.last_seen);
                let rec = t.rec_mut();
                rec.outcome = Outcome::Unknown;
                rec.ended_at = Some(ended_at);
                ended.push(Outcome::Unknown);
            }
        }
        for o in ended {
            *self.finished.entry(o).or_default() += 1;
        }
    }

    /// Adds one GPU interval's cost to the GPU and to its owners.
    pub fn account(
        &mut self,
        pricing: &Pricing,
        gpu: (&str, u32, &str),
        owners: &[(String, f64)],
        iv: &Interval<'_>,
        rates: GpuRates,
    ) {
        let (uuid, index, model) = gpu;
        let running: Vec<Owner<'_>> = owners
            .iter()
            .filter(|(id, _)| {
                self.jobs
                    .get(id)
                    .is_some_and(|t| t.rec.outcome == Outcome::Running)
            })
            .map(|(id, w)| Owner {
                key: id,
                weight: *w,
            })
            .collect();
        let c = cost_interval(pricing, iv, &running);
        let g = self
            .gpus
            .entry(uuid.to_string())
            .or_insert_with(|| GpuRecord {
                uuid: uuid.to_string(),
                index,
                model: model.to_string(),
                usage: Usage::default(),
                unallocated_seconds: 0.0,
                events: GpuEvents::default(),
            });
        g.index = index;
        g.usage.add(&c.gpu);
        g.unallocated_seconds += c.unallocated_seconds;
        if let Some(peak) = rates.bf16_peak {
            match self.gpu_peaks.get_mut(uuid) {
                Some(p) => *p = peak,
                None => {
                    self.gpu_peaks.insert(uuid.to_string(), peak);
                }
            }
        }
        for (id, u) in c.per_owner {
            if let Some(t) = self.jobs.get_mut(&id) {
                let rec = t.rec_mut();
                rec.usage.add(&u);
                rec.per_gpu.entry(uuid.to_string()).or_default().add(&u);
                // The owner's share of the GPU this tick, for its FLOP rate and peak.
                let w = u.gpu_seconds / iv.dt;
                if let Some(peak) = rates.bf16_peak {
                    t.rate.peak_flops += w * peak;
                }
                if let Some(fr) = rates.flop_rate {
                    *t.rate.achieved_flops.get_or_insert(0.0) += w * fr;
                }
                t.rate_unknown |= rates.flop_rate_unknown;
            }
        }
    }

    /// Starts a tick: the per-job rates are rebuilt from this tick's intervals.
    pub fn begin_tick(&mut self) {
        for t in self.jobs.values_mut() {
            t.rate = JobRate::default();
            t.rate_unknown = false;
        }
    }

    /// Running jobs' rates over the last tick.
    pub fn rates(&self) -> BTreeMap<String, JobRate> {
        self.jobs
            .iter()
            .filter(|(_, t)| t.rec.outcome == Outcome::Running && t.rate.peak_flops > 0.0)
            .map(|(id, t)| {
                let mut rate = t.rate;
                if t.rate_unknown {
                    rate.achieved_flops = None;
                }
                (id.clone(), rate)
            })
            .collect()
    }

    /// Records progress a job reports (cumulative counts); the caller must own the job.
    ///
    /// Refused as [`RequestError::Unprocessable`]: a count above [`MAX_COUNT`], model FLOPs that
    /// are no longer a finite number, and a model FLOP rate since the last report above
    /// [`MAX_REPORTED_PEAKS`] times the dense BF16 peak of the job's GPU shares in the last tick
    /// (of the node's GPUs where it held none; no bound while no GPU's peak is known).
    pub fn progress(
        &mut self,
        id: &str,
        req: ProgressRequest,
        caller_uid: u32,
        now: Now,
    ) -> Result<JobRecord, RequestError> {
        let node_peak: f64 = self.gpu_peaks.values().sum();
        let t = self.running_job_of(id, caller_uid)?;
        for (what, v) in [
            ("flops_per_token", req.flops_per_token),
            ("flops_per_step", req.flops_per_step),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0 && v < 1e21)) {
                return Err(RequestError::Invalid(format!(
                    "{what} must be a positive number of FLOPs"
                )));
            }
        }
        for (what, n) in [
            ("tokens", req.tokens),
            ("samples", req.samples),
            ("steps", req.steps),
        ] {
            if let Some(n) = n.filter(|n| *n > MAX_COUNT) {
                return Err(RequestError::Unprocessable(format!(
                    "{what} {n} is more than 2^53 ({MAX_COUNT}): counts are kept as f64, which \
                     holds no larger whole number exactly"
                )));
            }
        }
        let old = t.rec.progress.clone().unwrap_or_default();
        let next = |what: &str, new: Option<u64>, old: u64| match new {
            Some(n) if n < old => Err(RequestError::Conflict(format!(
                "{what} went backwards ({old} -> {n}): report totals since the job started"
            ))),
            Some(n) => Ok(n),
            None => Ok(old),
        };
        let tokens = next("tokens", req.tokens, old.tokens)?;
        let samples = next("samples", req.samples, old.samples)?;
        let steps = next("steps", req.steps, old.steps)?;
        let flops_per_token = req.flops_per_token.or(old.flops_per_token);
        let flops_per_step = req.flops_per_step.or(old.flops_per_step);
        // Model FLOPs: per token when known, else per step.
        let added = match (flops_per_token, flops_per_step) {
            (Some(f), _) => (tokens - old.tokens) as f64 * f,
            (None, Some(f)) => (steps - old.steps) as f64 * f,
            (None, None) => 0.0,
        };
        let model_flop = old.model_flop + added;
        if !model_flop.is_finite() {
            return Err(RequestError::Unprocessable(format!(
                "the job's model FLOPs would be {model_flop} ({} + {added:e}), not a finite number",
                old.model_flop
            )));
        }
        // Seconds since the last report: monotonic, or by the wall clock for the first report
        // after a restart (the monotonic clock does not survive one).
        let dt = match t.progress_at {
            Some(at) => now.since(at),
            None => now.wall - old.updated_at,
        };
        let flop_rate = if old.updated_at > 0.0 && dt > 0.0 && added > 0.0 {
            let rate = added / dt;
            let (peak, whose) = if t.rate.peak_flops > 0.0 {
                (t.rate.peak_flops, "the job's GPUs")
            } else {
                (node_peak, "this node's GPUs")
            };
            if peak > 0.0 && rate > MAX_REPORTED_PEAKS * peak {
                let none = if t.rate.peak_flops > 0.0 {
                    ""
                } else {
                    "; the job holds none"
                };
                return Err(RequestError::Unprocessable(format!(
                    "a model FLOP rate of {rate:.3e} FLOP/s since the last report is more than \
                     {MAX_REPORTED_PEAKS} times the dense BF16 peak of {whose} ({peak:.3e} \
                     FLOP/s{none}), more than a job of {MAX_REPORTED_PEAKS} such nodes could do: \
                     check the counts and flops_per_token or flops_per_step"
                )));
            }
            Some(rate)
        } else {
            old.flop_rate
        };
        t.progress_at = Some(now.mono);
        let rec = t.rec_mut();
        let checkpoint = if req.checkpoint {
            Some(Checkpoint::of(&rec.usage, now.wall))
        } else {
            old.checkpoint
        };
        rec.progress = Some(Progress {
            tokens,
            samples,
            steps,
            flops_per_token,
            flops_per_step,
            model_flop,
            flop_rate,
            updated_at: now.wall,
            checkpoint,
        });
        Ok(rec.clone())
    }

    /// Jobs changed since the last [`Tracker::mark_clean`].
    pub fn dirty(&self) -> Vec<&JobRecord> {
        self.jobs
            .values()
            .filter(|t| t.dirty)
            .map(|t| t.rec.as_ref())
            .collect()
    }

    pub fn mark_clean(&mut self) {
        for t in self.jobs.values_mut() {
            t.dirty = false;
        }
    }

    /// Drops finished jobs whose grace period is over (once persisted).
    pub fn expire(&mut self, now: Now) {
        let grace = self.grace_s;
        self.jobs
            .retain(|_, t| t.dirty || t.ended.is_none_or(|e| now.since(e) < grace));
    }
}

#[cfg(test)]
mod tests;
