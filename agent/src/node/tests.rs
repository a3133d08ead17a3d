//! The node thread in virtual time: a scripted GPU library, an in-memory store and a manual
//! clock, driven tick by tick the way `Node::run` drives it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpucost_core::attribute::pods::PodLabels;
use gpucost_core::attribute::process::{ProcInfo, ProcSource};
use gpucost_core::clock::{Clock, ManualClock};
use gpucost_core::jobs::{GpuRecord, JobRecord, Outcome};
use gpucost_core::reading::{ProcessUse, Source};
use gpucost_core::tracker::{EndRequest, RegisterRequest};
use tokio::sync::{oneshot, watch};

use super::*;
use crate::sample::sampler::Cadence;
use crate::sample::scripted::{Script, Scripted};

const SECOND: Duration = Duration::from_secs(1);
/// How long a cycle waits for a read (real time: only a read a test makes hang waits it out).
const READ_TIMEOUT: Duration = Duration::from_millis(300);
const T0: f64 = 1_780_000_000.0;

/// What the store holds, shared with the test.
#[derive(Debug, Default)]
struct Stored {
    jobs: BTreeMap<String, JobRecord>,
    gpus: BTreeMap<String, GpuRecord>,
    meta: BTreeMap<String, String>,
    /// Every call fails while set (a full disk, a vanished directory).
    failing: bool,
    /// Loading fails while set, writing would not (a damaged file, a state directory that
    /// cannot be read yet): the node must not write before it has loaded.
    unreadable: bool,
    loads: u32,
    writes: u32,
}

#[derive(Clone, Default)]
struct MemStore(Arc<Mutex<Stored>>);

impl MemStore {
    fn get(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.0.lock().unwrap()
    }
}

impl Store for MemStore {
    fn location(&self) -> String {
        "memory".into()
    }
    fn load(&mut self) -> Result<(Vec<JobRecord>, Vec<GpuRecord>), String> {
        let mut s = self.get();
        s.loads += 1;
        if s.failing {
            return Err("cannot open (scripted)".into());
        }
        if s.unreadable {
            return Err("cannot read its history (scripted)".into());
        }
        Ok((
            s.jobs.values().cloned().collect(),
            s.gpus.values().cloned().collect(),
        ))
    }
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), String> {
        self.get().meta.insert(key.into(), value.into());
        Ok(())
    }
    fn persist(&mut self, jobs: &[&JobRecord], gpus: &[GpuRecord]) -> Result<(), String> {
        let mut s = self.get();
        if s.failing {
            return Err("disk full (scripted)".into());
        }
        for j in jobs {
            s.jobs.insert(j.id.clone(), (*j).clone());
        }
        for g in gpus {
            s.gpus.insert(g.uuid.clone(), g.clone());
        }
        s.writes += 1;
        Ok(())
    }
}

/// Processes the test puts on the node.
#[derive(Clone, Default)]
struct Procs(Arc<Mutex<BTreeMap<u32, ProcInfo>>>);

impl ProcSource for Procs {
    fn info(&self, pid: u32) -> Option<ProcInfo> {
        self.0.lock().unwrap().get(&pid).cloned()
    }
}

struct Rig {
    clock: Arc<ManualClock>,
    gpus: Scripted,
    store: MemStore,
    procs: Procs,
    node: Node,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// What the kubelet says (the agent's poller sends the same).
    pods: watch::Sender<Vec<PodGpu>>,
    /// What the Kubernetes API says (the agent's pod watcher sends the same).
    kube_pods: watch::Sender<Arc<PodDirectory>>,
    /// When the next tick is planned (as `Node::run` keeps it).
    next: Instant,
}

struct Setup {
    script: Script,
    store: MemStore,
    clock: Arc<ManualClock>,
    grace_s: f64,
    vanish_s: f64,
    /// How often process lists are read (`sampling.process_interval`).
    process_interval: Duration,
    cgroup_root: Option<std::path::PathBuf>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            script: Script::h100s(2),
            store: MemStore::default(),
            clock: Arc::new(ManualClock::new(T0)),
            grace_s: 60.0,
            vanish_s: 10.0,
            process_interval: SECOND,
            cgroup_root: None,
        }
    }
}

impl Rig {
    fn new() -> Rig {
        Rig::with(Setup::default())
    }

    fn with(s: Setup) -> Rig {
        let clock = s.clock;
        let gpus = Scripted::new(s.script, clock.clone());
        let procs = Procs::default();
        let (tx, snapshots) = watch::channel(Arc::new(Snapshot::empty(Source::Nvml, None)));
        let (pods_tx, pods) = watch::channel(Vec::new());
        let (kube_tx, kube_pods) = watch::channel(Arc::default());
        let cadence = Cadence {
            interval: SECOND,
            process_interval: s.process_interval,
            retry_interval: 5 * SECOND,
            read_timeout: READ_TIMEOUT,
        };
        let node = Node::new(NodeParts {
            cfg: NodeConfig {
                interval: SECOND,
                persist_interval: 5 * SECOND,
                job_map_dir: None,
                cgroup_root: s.cgroup_root,
                spool_dir: None,
                hostname: "node1".into(),
                limits: JobLimits::default(),
                grace_s: s.grace_s,
                vanish_s: s.vanish_s,
                export_labels: Vec::new(),
                bench_min_ratio: 0.85,
                pod_labels: PodLabels {
                    export: vec!["team".into()],
                    mapping: vec![("project".into(), "app.kubernetes.io/part-of".into())],
                },
            },
            sampler: Sampler::new(Box::new(gpus.clone()), cadence, clock.clone()),
            pricing: gpucost_core::config::example_pricing(),
            procs: Box::new(procs.clone()),
            pods,
            kube_pods,
            store: Box::new(s.store.clone()),
            clock: clock.clone(),
            tx,
        });
        let next = clock.mono();
        Rig {
            clock,
            gpus,
            store: s.store,
            procs,
            node,
            snapshots,
            pods: pods_tx,
            kube_pods: kube_tx,
            next,
        }
    }

    /// One turn of `Node::run`: a tick, then time passes until the next one is due.
    fn step(&mut self) {
        self.node.tick();
        self.next = self.node.schedule(self.next);
        let wait = self.next.saturating_duration_since(self.clock.mono());
        self.gpus.advance(wait);
    }

    fn steps(&mut self, n: usize) {
        for _ in 0..n {
            self.step();
        }
    }

    fn snap(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// The job as the node knows it now.
    fn job(&self, id: &str) -> Option<JobRecord> {
        self.node.tracker.get(id).cloned()
    }

    /// The job as /metrics shows it (as last persisted).
    fn exported(&self, id: &str) -> Option<JobRecord> {
        self.snap()
            .published
            .jobs
            .iter()
            .find(|j| j.id == id)
            .map(|j| j.as_ref().clone())
    }

    /// A process of uid 1001 holding `gpu`, in job `job_id` (its environment says so).
    fn put_process(&self, pid: u32, gpu: usize, job_id: &str) {
        self.procs.0.lock().unwrap().insert(
            pid,
            ProcInfo {
                pid,
                ppid: 1,
                uid: 1001,
                user: Some("alice".into()),
                comm: "python".into(),
                env_job_id: Some(job_id.into()),
                ..ProcInfo::default()
            },
        );
        let mut s = self.gpus.script();
        s.gpus[gpu].processes.push(ProcessUse {
            pid,
            used_memory_bytes: Some(1 << 30),
            sm_util_pct: None,
        });
        s.gpus[gpu].utilization_pct = 90;
        s.gpus[gpu].power_w = 500.0;
    }

    fn remove_processes(&self) {
        self.procs.0.lock().unwrap().clear();
        for g in &mut self.gpus.script().gpus {
            g.processes.clear();
            g.utilization_pct = 0;
            g.power_w = 100.0;
        }
    }

    /// A prolog (root) registers job `id` for `uid`, with GPU 0.
    fn register(&mut self, id: &str, uid: u32) -> Result<JobRecord, String> {
        self.register_gpus(id, uid, &["0"])
    }

    /// A prolog (root) registers job `id` for `uid`, with `gpus` (indices or UUIDs).
    fn register_gpus(&mut self, id: &str, uid: u32, gpus: &[&str]) -> Result<JobRecord, String> {
        let (reply, rx) = oneshot::channel();
        self.node.handle(Message::Register {
            deadline: far_future(),
            req: RegisterRequest {
                id: Some(id.into()),
                gpus: gpus.iter().map(|g| g.to_string()).collect(),
                uid: Some(uid),
                ..RegisterRequest::default()
            },
            uid: 0,
            reply,
        });
        rx.blocking_recv().unwrap().map_err(|e| e.to_string())
    }

    fn end(&mut self, id: &str, code: i32) -> Result<JobRecord, String> {
        let (reply, rx) = oneshot::channel();
        self.node.handle(Message::End {
            deadline: far_future(),
            id: id.into(),
            req: EndRequest {
                exit_code: Some(code),
                ..EndRequest::default()
            },
            uid: 0,
            reply,
        });
        rx.blocking_recv().unwrap().map_err(|e| e.to_string())
    }
}

#[test]
fn a_missing_library_is_retried_at_its_interval_and_sampling_starts_when_it_loads() {
    let mut script = Script::h100s(1);
    script.failing_opens = 2;
    let mut rig = Rig::with(Setup {
        script,
        ..Setup::default()
    });
    rig.step();
    let s = rig.snap();
    assert!(!s.backend_up);
    assert!(s
        .backend_error
        .as_deref()
        .unwrap()
        .contains("not loaded yet"));
    assert!(s.gpus.is_empty());
    // Retried every 5 s, not every tick.
    rig.steps(4);
    assert_eq!(rig.gpus.script().opens, 1);
    rig.step();
    assert_eq!(rig.gpus.script().opens, 2);
    rig.steps(5);
    assert_eq!(rig.gpus.script().opens, 3);
    let s = rig.snap();
    assert!(s.backend_up && s.backend_error.is_none());
    assert_eq!(s.gpus.len(), 1);
    // Sampling works from then on: energy accrues at 100 W.
    rig.steps(3);
    let e = rig.snap().gpus[0].totals.energy.total_j();
    assert!((e - 300.0).abs() < 1e-6, "energy {e}");
}

#[test]
fn a_lost_gpu_keeps_its_totals_is_retried_every_tick_and_the_others_go_on() {
    let mut rig = Rig::new();
    rig.steps(3);
    let before = rig.snap().gpus[1].totals.energy.total_j();
    rig.gpus.script().gpus[1].lost = true;
    rig.steps(4);
    let s = rig.snap();
    assert!(!s.gpus[1].up);
    assert_eq!(s.gpus[1].totals.energy.total_j(), before);
    assert!(s.gpus[0].up && s.gpus[0].totals.energy.total_j() > before);
    let lost = s
        .sample_errors
        .iter()
        .find(|e| e.0 == 1 && e.2 == "gpu_lost")
        .map(|e| e.3);
    assert_eq!(lost, Some(4), "each tick retries it: {:?}", s.sample_errors);
    // Back on the bus: it counts again, its total from where it was, its counter from a new
    // baseline (the time it was away is not measured).
    rig.gpus.script().gpus[1].lost = false;
    rig.steps(2);
    let s = rig.snap();
    assert!(s.gpus[1].up);
    assert!(s.gpus[1].totals.energy.total_j() > before);
}

/// Issue 14, item 6: the energy counter keeps counting while a GPU cannot be read; the delta it
/// shows when the GPU answers again covers the outage, is kept, and goes to whoever holds the GPU
/// in the interval that closes the outage (here the same job: processes are read every tick).
#[test]
fn issue_14_energy_used_during_an_outage_is_billed_to_the_interval_that_closes_it() {
    let mut rig = Rig::new();
    rig.gpus.script().gpus[0].power_limit_w = Some(700.0);
    rig.put_process(100, 0, "train-1");
    rig.steps(3);
    let job_before = rig.job("train-1").unwrap().usage.energy_j;
    let gpu_before = rig.snap().gpus[0].totals.energy.total_j();
    rig.gpus.script().gpus[0].lost = true;
    rig.steps(5);
    rig.gpus.script().gpus[0].lost = false;
    rig.steps(1);
    let s = rig.snap();
    assert!(s.gpus[0].up);
    // Six seconds at 500 W since the last good reading: 3000 J, not one cycle's 500 J.
    let gpu = s.gpus[0].totals.energy.total_j() - gpu_before;
    assert!((gpu - 3000.0).abs() < 1e-6, "GPU energy {gpu} J");
    assert_eq!(s.gpus[0].totals.energy.counter_resets(), 0);
    let job = rig.job("train-1").unwrap().usage.energy_j - job_before;
    assert!((job - 3000.0).abs() < 1e-6, "job energy {job} J");
}

#[test]
fn a_slow_cycle_skips_the_missed_ticks_and_counts_them() {
    let mut rig = Rig::new();
    rig.steps(2);
    // Two GPUs whose reads each take 1.75 s of the scripted clock, within the real deadline:
    // the tick takes 3.5 s of a 1 s interval.
    rig.gpus.script().read_takes = Duration::from_millis(1750);
    let before = rig.snap().samples_total;
    rig.step();
    rig.gpus.script().read_takes = Duration::ZERO;
    let s = rig.snap();
    assert_eq!(s.skipped_samples, 3, "ticks at +1, +2 and +3 s were missed");
    assert_eq!(s.samples_total, before + 1);
    // The next tick comes one interval after the late one ended, not in a burst.
    let t = rig.clock.mono();
    rig.step();
    assert_eq!(rig.clock.mono() - t, SECOND);
    assert_eq!(rig.snap().skipped_samples, 3);
}

#[test]
fn totals_are_persisted_every_interval_and_the_exported_ones_are_the_persisted_ones() {
    let mut rig = Rig::new();
    rig.put_process(100, 0, "train-1");
    rig.steps(3);
    // Not persisted yet: /metrics shows the job only once the store has it.
    assert_eq!(rig.store.get().writes, 0);
    assert!(rig.exported("train-1").is_none());
    rig.steps(3);
    assert_eq!(rig.store.get().writes, 1);
    let j = rig
        .exported("train-1")
        .expect("exported after the first persist");
    assert_eq!(
        j.usage.gpu_seconds,
        rig.store.get().jobs["train-1"].usage.gpu_seconds
    );
    assert!(j.usage.gpu_seconds > 0.0);
    // The store fails: the totals shown stay at what it holds, and the error is shown.
    rig.store.get().failing = true;
    rig.steps(10);
    let s = rig.snap();
    assert_eq!(
        s.ledger_error.as_deref(),
        Some("disk full (scripted)"),
        "the error is exported"
    );
    assert_eq!(
        rig.exported("train-1").unwrap().usage.gpu_seconds,
        j.usage.gpu_seconds
    );
    // It recovers: everything that accrued meanwhile is written, nothing lost.
    rig.store.get().failing = false;
    rig.steps(5);
    let s = rig.snap();
    assert!(s.ledger_error.is_none());
    let now = rig.exported("train-1").unwrap().usage.gpu_seconds;
    assert!(
        (now - 20.0).abs() < 1e-9,
        "20 s held, 20 GPU-seconds: {now}"
    );
    assert_eq!(rig.store.get().jobs["train-1"].usage.gpu_seconds, now);
}

#[test]
fn without_a_store_the_live_totals_are_shown_and_persisting_starts_when_it_works() {
    let store = MemStore::default();
    store.get().failing = true;
    let mut rig = Rig::with(Setup {
        store,
        ..Setup::default()
    });
    rig.put_process(100, 0, "train-1");
    rig.steps(2);
    // Nothing durable to stay consistent with: the live figures.
    assert!(rig.exported("train-1").unwrap().usage.gpu_seconds > 0.0);
    rig.store.get().failing = false;
    rig.steps(5);
    assert!(rig.store.get().writes > 0);
    assert!(rig.store.get().jobs.contains_key("train-1"));
}

#[test]
fn a_restart_resumes_from_the_store_and_no_counter_goes_back() {
    let mut rig = Rig::new();
    rig.put_process(100, 0, "train-1");
    rig.steps(12);
    rig.node.shutdown();
    let (gpu_s, energy) = {
        let s = rig.store.get();
        (
            s.jobs["train-1"].usage.gpu_seconds,
            s.gpus["GPU-0"].usage.energy_j,
        )
    };
    // The first reading opens the first interval: 11 intervals of 1 s.
    assert!((gpu_s - 11.0).abs() < 1e-9, "{gpu_s}");
    // A new agent on the same store, 30 s later.
    rig.clock.advance(30 * SECOND);
    let mut again = Rig::with(Setup {
        store: rig.store.clone(),
        clock: rig.clock.clone(),
        ..Setup::default()
    });
    let j = again.job("train-1").expect("loaded at start");
    assert_eq!(j.usage.gpu_seconds, gpu_s);
    assert_eq!(j.outcome, Outcome::Running);
    again.put_process(100, 0, "train-1");
    again.steps(6);
    assert!(again.job("train-1").unwrap().usage.gpu_seconds > gpu_s);
    assert!(again.store.get().gpus["GPU-0"].usage.energy_j > energy);
}

#[test]
fn a_found_job_that_vanishes_ends_unknown_after_the_vanish_time_and_leaves_after_its_grace() {
    let mut rig = Rig::new();
    rig.put_process(100, 0, "sweep-7");
    rig.steps(6);
    assert_eq!(rig.job("sweep-7").unwrap().outcome, Outcome::Running);
    rig.remove_processes();
    // Unseen for less than the vanish time (10 s): still running.
    rig.steps(9);
    assert_eq!(rig.job("sweep-7").unwrap().outcome, Outcome::Running);
    rig.steps(6);
    let j = rig.job("sweep-7").unwrap();
    assert_eq!(j.outcome, Outcome::Unknown);
    // It ended when it was last seen.
    assert!((j.ended_at.unwrap() - (T0 + 5.0)).abs() <= 1.0, "{j:?}");
    assert_eq!(rig.snap().published.finished[&Outcome::Unknown], 1);
    // On /metrics for the grace period (60 s), then only in the store.
    rig.steps(40);
    assert!(rig.job("sweep-7").is_some());
    rig.steps(30);
    assert!(rig.job("sweep-7").is_none());
    assert_eq!(rig.store.get().jobs["sweep-7"].outcome, Outcome::Unknown);
    assert_eq!(rig.snap().published.finished[&Outcome::Unknown], 1);
}

#[test]
fn a_wall_clock_step_ends_no_job_and_cuts_no_grace_period() {
    let mut rig = Rig::new();
    rig.put_process(100, 0, "sweep-7");
    rig.register("reg-1", 1001).unwrap();
    rig.steps(6);
    rig.end("reg-1", 0).unwrap();
    // NTP steps the wall clock an hour forward while the sweep's process is briefly off the
    // GPU (between two of its runs): 2 s unseen is not 10 s unseen.
    rig.clock.step_wall(3600.0);
    rig.remove_processes();
    rig.steps(2);
    assert_eq!(rig.job("sweep-7").unwrap().outcome, Outcome::Running);
    rig.put_process(100, 0, "sweep-7");
    // A persist (and grace-period expiry) comes by: the ended job keeps its 60 s of grace.
    rig.steps(5);
    assert!(rig.job("reg-1").is_some());
    // Two hours back: a job that really vanished still ends 10 s later, not two hours later.
    rig.clock.step_wall(-7200.0);
    rig.remove_processes();
    rig.steps(9);
    assert_eq!(rig.job("sweep-7").unwrap().outcome, Outcome::Running);
    rig.steps(2);
    let j = rig.job("sweep-7").unwrap();
    assert_eq!(j.outcome, Outcome::Unknown, "{j:?}");
    // It is not kept past its grace either: 60 s on the monotonic clock (and the next persist).
    rig.steps(66);
    assert!(rig.job("reg-1").is_none() && rig.job("sweep-7").is_none());
}

#[test]
fn registrations_and_endings_are_persisted_at_once() {
    let mut rig = Rig::new();
    rig.steps(1);
    let j = rig.register("reg-1", 1001).unwrap();
    assert_eq!(j.started_at, T0 + 1.0);
    assert_eq!(rig.store.get().writes, 1);
    assert!(rig.job("reg-1").is_some());
    // Another user may not end it; its owner may.
    let (reply, rx) = oneshot::channel();
    rig.node.handle(Message::End {
        deadline: far_future(),
        id: "reg-1".into(),
        req: EndRequest::default(),
        uid: 1002,
        reply,
    });
    assert!(rx.blocking_recv().unwrap().is_err());
    let ended = rig.end("reg-1", 3).unwrap();
    assert_eq!(ended.outcome, Outcome::Failed);
    assert_eq!(rig.store.get().jobs["reg-1"].outcome, Outcome::Failed);
    assert_eq!(rig.store.get().meta["currency"], "USD");
}

#[test]
fn issue_16_ownership_is_recomputed_at_once_on_every_registration_and_end() {
    // Issue 16, item 5: with process lists read every 5 s (the default), five back-to-back
    // 7 s jobs on one GPU were billed 3, 6, 3, 3, 6 GPU-s, the rest "unallocated", because a
    // registration counted only from the next process sample. Each is billed its 7 s now.
    let mut rig = Rig::with(Setup {
        process_interval: 5 * SECOND,
        ..Setup::default()
    });
    rig.steps(2);
    for i in 0..5 {
        let id = format!("sweep-{i}");
        rig.register(&id, 1001).unwrap();
        rig.steps(7);
        rig.end(&id, 0).unwrap();
    }
    rig.steps(3);
    for i in 0..5 {
        let j = rig.job(&format!("sweep-{i}")).unwrap();
        assert!(
            (j.usage.gpu_seconds - 7.0).abs() < 1e-6,
            "sweep-{i}: {} GPU-s",
            j.usage.gpu_seconds
        );
    }
    // The GPU's only unallocated time: 1 s before the first job (the first read is the
    // baseline), none between jobs, 3 s after the last.
    let g = rig.node.tracker.gpus().find(|g| g.uuid == "GPU-0").unwrap();
    assert!(
        (g.unallocated_seconds - 4.0).abs() < 1e-6,
        "{}",
        g.unallocated_seconds
    );
}

#[test]
fn issue_16_a_found_job_ended_just_after_its_process_exited_stays_ended() {
    // The process of a job found through its environment exits; its epilog ends the job
    // before the next process sample. Attributing again at once from the last sample (which
    // still lists the process) must not bring the job back to life.
    let mut rig = Rig::new();
    rig.put_process(4242, 0, "found-1");
    rig.steps(2);
    assert_eq!(rig.job("found-1").unwrap().outcome, Outcome::Running);
    // It exits (the GPU no longer lists it; /proc, read later, may still have it).
    rig.gpus.script().gpus[0].processes.clear();
    let ended = rig.end("found-1", 1).unwrap();
    assert_eq!(ended.outcome, Outcome::Failed);
    assert_eq!(rig.job("found-1").unwrap().outcome, Outcome::Failed);
    rig.steps(3);
    assert_eq!(rig.job("found-1").unwrap().outcome, Outcome::Failed);
    assert!(rig.job("unattributed:4242").is_none());
}

#[test]
fn xid_events_are_counted_on_their_gpu() {
    let mut rig = Rig::new();
    rig.steps(1);
    rig.gpus.script().xids = vec![(1, 79), (1, 79), (0, 13)];
    rig.steps(1);
    let s = rig.snap();
    assert_eq!(s.gpus[1].totals.events.xids[&79], 2);
    assert_eq!(s.gpus[0].totals.events.xids[&13], 1);
}

#[test]
fn issue_13_throttled_seconds_and_xids_are_persisted_and_continue_after_a_restart() {
    let mut rig = Rig::new();
    // GPU 1 is power-capped (sw_power_cap, bit 0x4) from the start.
    rig.gpus.script().gpus[1].clock_event_reasons = 0x4;
    rig.steps(1);
    rig.gpus.script().xids = vec![(1, 79), (1, 79), (0, 13)];
    rig.steps(10);
    let capped =
        |s: &Snapshot| s.published.gpus["GPU-1"].events.throttled_by_reason()["sw_power_cap"];
    let xids = |s: &Snapshot, uuid: &str| s.published.gpus[uuid].events.xids.clone();
    let s = rig.snap();
    // Exported as persisted (at 5 s and 10 s), like the other totals.
    assert_eq!(capped(&s), 10.0);
    assert_eq!(xids(&s, "GPU-1"), BTreeMap::from([(79, 2)]));
    assert_eq!(xids(&s, "GPU-0"), BTreeMap::from([(13, 1)]));
    rig.node.shutdown();
    let stored = rig.store.get().gpus["GPU-1"].events.clone();
    assert_eq!(stored.xids, BTreeMap::from([(79, 2)]));

    // A new agent on the same store: the counters go on from there, never lower.
    let mut again = Rig::with(Setup {
        store: rig.store.clone(),
        clock: rig.clock.clone(),
        ..Setup::default()
    });
    again.gpus.script().gpus[1].clock_event_reasons = 0x4;
    again.step();
    let s = again.snap();
    assert_eq!(capped(&s), stored.throttled_by_reason()["sw_power_cap"]);
    assert_eq!(xids(&s, "GPU-1"), stored.xids);
    again.gpus.script().xids = vec![(1, 79)];
    let mut last = capped(&again.snap());
    for _ in 0..10 {
        again.step();
        let now = capped(&again.snap());
        assert!(now >= last, "{last} -> {now}");
        last = now;
    }
    assert!(last > 10.0, "{last}");
    assert_eq!(xids(&again.snap(), "GPU-1"), BTreeMap::from([(79, 3)]));
    assert_eq!(again.store.get().gpus["GPU-1"].events.xids[&79], 3);
}

/// Asserts that no counter exported `before` is lower `after`: every job's and GPU's totals, and
/// the finished jobs.
fn never_lower(before: &Published, after: &Published) {
    for b in before.jobs.iter() {
        let Some(a) = after.jobs.iter().find(|a| a.id == b.id) else {
            continue;
        };
        for f in &gpucost_core::jobs::Usage::FIELDS {
            assert!(
                (f.get)(&a.usage) >= (f.get)(&b.usage),
                "job {} {} went back: {} -> {}",
                b.id,
                f.name,
                (f.get)(&b.usage),
                (f.get)(&a.usage)
            );
        }
    }
    for (uuid, b) in before.gpus.iter() {
        let a = &after.gpus[uuid];
        for f in &gpucost_core::jobs::Usage::FIELDS {
            assert!((f.get)(&a.usage) >= (f.get)(&b.usage), "{uuid} {}", f.name);
        }
        assert!(a.unallocated_seconds >= b.unallocated_seconds, "{uuid}");
        for (x, n) in &b.events.xids {
            assert!(a.events.xids[x] >= *n, "{uuid} Xid {x}");
        }
    }
    for (o, n) in &before.finished {
        assert!(after.finished[o] >= *n, "finished {o:?}");
    }
}

/// What an earlier agent left in the store (issue 13's figures): job train-1, still running,
/// with 40 GPU-s and 24,451 J on GPU-0; a job that finished long ago; GPU-0's totals.
fn history(s: &mut Stored) {
    let usage = gpucost_core::jobs::Usage {
        gpu_seconds: 40.0,
        energy_j: 24_451.0,
        ..Default::default()
    };
    let job = |id: &str, started_at: f64, outcome: Outcome| JobRecord {
        id: id.into(),
        name: id.into(),
        user: "alice".into(),
        uid: Some(1001),
        scheduler: gpucost_core::jobs::Scheduler::Env,
        labels: BTreeMap::new(),
        started_at,
        ended_at: (outcome != Outcome::Running).then_some(started_at + 60.0),
        outcome,
        exit_code: None,
        signal: None,
        reason: None,
        usage,
        per_gpu: BTreeMap::from([("GPU-0".to_string(), usage)]),
        registration: None,
        progress: None,
    };
    s.jobs.insert(
        "train-1".into(),
        job("train-1", T0 - 3600.0, Outcome::Running),
    );
    s.jobs.insert(
        "done-1".into(),
        job("done-1", T0 - 86_400.0, Outcome::Succeeded),
    );
    let mut events = gpucost_core::account::GpuEvents::default();
    events.xids.insert(79, 1);
    s.gpus.insert(
        "GPU-0".into(),
        GpuRecord {
            uuid: "GPU-0".into(),
            index: 0,
            model: "NVIDIA H100 80GB HBM3".into(),
            usage: gpucost_core::jobs::Usage {
                gpu_seconds: 50_000.0,
                energy_j: 5_000_000.0,
                ..Default::default()
            },
            unallocated_seconds: 49_000.0,
            events,
        },
    );
}

#[test]
fn issue_13_a_ledger_that_cannot_be_loaded_is_never_written_and_is_merged_once_it_loads() {
    let store = MemStore::default();
    history(&mut store.get());
    store.get().unreadable = true;
    let mut rig = Rig::with(Setup {
        store,
        ..Setup::default()
    });
    rig.put_process(100, 0, "train-1");
    let mut before = rig.snap().published.clone();
    let mut step = |rig: &mut Rig| {
        rig.step();
        let now = rig.snap().published.clone();
        never_lower(&before, &now);
        before = now;
    };
    for _ in 0..16 {
        step(&mut rig);
    }
    // Counted in memory and shown, the reason exported; the store tried again at each persist
    // (5, 10 and 15 s) and never written.
    {
        let s = rig.store.get();
        assert_eq!(
            s.writes, 0,
            "a ledger whose history was not read is never written"
        );
        assert_eq!(s.loads, 4, "at start, then every persist interval");
        assert_eq!(s.jobs["train-1"].usage.gpu_seconds, 40.0);
        assert!(!s.meta.contains_key("currency"));
    }
    let snap = rig.snap();
    assert_eq!(
        snap.ledger_error.as_deref(),
        Some("cannot read its history (scripted)")
    );
    let live = rig.exported("train-1").unwrap();
    assert_eq!(live.usage.gpu_seconds, 15.0, "15 intervals of 1 s");

    // It can be read: at the next persist (20 s) the history comes back under what was counted.
    rig.store.get().unreadable = false;
    for _ in 0..5 {
        step(&mut rig);
    }
    let s = rig.store.get();
    assert_eq!(s.loads, 5);
    assert_eq!(s.writes, 1);
    let j = &s.jobs["train-1"];
    assert_eq!(j.usage.gpu_seconds, 40.0 + 20.0);
    assert_eq!(j.usage.energy_j, 24_451.0 + 20.0 * 500.0);
    assert_eq!(j.per_gpu["GPU-0"].gpu_seconds, 60.0);
    assert_eq!(j.started_at, T0 - 3600.0, "the earliest start");
    let g = &s.gpus["GPU-0"];
    assert_eq!(g.usage.gpu_seconds, 50_000.0 + 20.0);
    assert_eq!(g.events.xids[&79], 1);
    assert_eq!(s.meta["currency"], "USD");
    drop(s);
    let snap = rig.snap();
    assert!(snap.ledger_error.is_none());
    assert_eq!(rig.exported("train-1").unwrap().usage.gpu_seconds, 60.0);
    assert_eq!(snap.published.finished[&Outcome::Succeeded], 1);
}

#[test]
fn issue_13_a_ledger_never_loaded_is_not_written_at_shutdown_either() {
    let store = MemStore::default();
    history(&mut store.get());
    store.get().unreadable = true;
    let mut rig = Rig::with(Setup {
        store,
        ..Setup::default()
    });
    rig.steps(2);
    // A registration and an ending are persisted at once, usually: here each tries to load.
    rig.register("reg-1", 1001).unwrap();
    rig.end("reg-1", 0).unwrap();
    rig.node.shutdown();
    let s = rig.store.get();
    assert_eq!(s.writes, 0);
    assert_eq!(
        s.loads, 4,
        "at start, at the registration, the ending and the shutdown"
    );
    assert!(!s.jobs.contains_key("reg-1"));
    assert_eq!(s.jobs["train-1"].usage.gpu_seconds, 40.0);
}

/// A deadline no test reaches.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// Issue 13: a stream of requests between samples must not make a stuck sampler look alive:
/// the snapshot's time is the last sample's.
#[test]
fn requests_do_not_refresh_the_time_of_the_last_sample() {
    let mut rig = Rig::new();
    rig.steps(2);
    let sampled = rig.snap().taken_at.unwrap();
    rig.clock.advance(SECOND / 2);
    rig.register("reg-1", 1001).unwrap();
    let s = rig.snap();
    assert!(
        s.published.jobs.iter().any(|j| j.id == "reg-1"),
        "published"
    );
    assert_eq!(s.taken_at, Some(sampled), "still the last sample's time");
}

/// Issue 13: a request whose caller stopped waiting is dropped, not applied late.
#[test]
fn a_request_past_its_deadline_is_dropped_unanswered() {
    let mut rig = Rig::new();
    rig.steps(1);
    let (reply, rx) = oneshot::channel();
    let deadline = rig.clock.mono();
    rig.clock.advance(SECOND);
    rig.node.handle(Message::Register {
        req: RegisterRequest {
            id: Some("late".into()),
            uid: Some(1001),
            ..RegisterRequest::default()
        },
        uid: 0,
        deadline,
        reply,
    });
    assert!(rx.blocking_recv().is_err(), "no answer");
    assert!(rig.job("late").is_none());
    assert_eq!(rig.store.get().writes, 0, "nothing to persist");
    rig.step();
    assert_eq!(rig.snap().late_requests, 1);
}

/// Issue 14, item 4: one GPU whose reads never return (a wedged GPU, its caller in D state)
/// stalls neither the other GPU's samples and bill nor the node's heartbeat (the snapshot's
/// time, which /healthz and the watchdog judge); the GPU is down and reported as stale.
#[test]
fn issue_14_a_hung_gpu_stalls_neither_the_other_gpus_nor_the_node_heartbeat() {
    let mut rig = Rig::new();
    rig.put_process(100, 1, "train-1");
    rig.steps(3);
    let before = rig.job("train-1").unwrap().usage.gpu_seconds;
    let energy0 = rig.snap().gpus[0].totals.energy.total_j();
    rig.gpus.hang(0, true);
    for _ in 0..6 {
        let t = rig.clock.mono();
        rig.step();
        let s = rig.snap();
        assert!(
            s.fresh(rig.clock.mono(), 3 * SECOND),
            "a fresh heartbeat every tick"
        );
        assert_eq!(s.taken_at, Some(t));
    }
    let s = rig.snap();
    assert_eq!(
        s.skipped_samples, 0,
        "the node thread was never held past a tick"
    );
    assert_eq!(rig.job("train-1").unwrap().usage.gpu_seconds, before + 6.0);
    assert!(s.gpus[1].up);
    assert!(!s.gpus[0].up);
    assert_eq!(s.gpus[0].totals.energy.total_j(), energy0);
    let stale: Vec<u32> = s.stale_gpus().map(|g| g.info.index).collect();
    assert_eq!(stale, [0]);
    assert!(s.backend_up, "the library works: one GPU is stuck");
    rig.gpus.hang(0, false);
}

/// Issue 14, item 13: SIGUSR1 makes the agent let go of NVML (every handle closed) and nothing
/// is billed while it is released; the node keeps its heartbeat and its jobs (no job vanishes
/// for want of process lists); SIGUSR2 takes NVML back and billing continues.
#[test]
fn issue_14_sigusr1_releases_nvml_nothing_is_billed_until_sigusr2() {
    let mut rig = Rig::new();
    rig.put_process(100, 0, "train-1");
    rig.steps(3);
    let before = rig.job("train-1").unwrap().usage;
    rig.node.handle(Message::ReleaseNvml);
    assert_eq!(rig.gpus.script().open_handles, 0, "no NVML handle held");
    let s = rig.snap();
    assert!(s.backend_paused && !s.backend_up);
    assert!(s.backend_error.as_deref().unwrap().contains("SIGUSR1"));
    // Longer than jobs.vanish_after (10 s here).
    rig.steps(20);
    let s = rig.snap();
    assert!(s.fresh(rig.clock.mono(), 3 * SECOND));
    assert!(s
        .gpus
        .iter()
        .all(|g| !g.up && g.health.unmeasured_s == 20.0));
    let during = rig.job("train-1").unwrap();
    assert_eq!(during.outcome, Outcome::Running);
    assert_eq!(during.usage, before, "nothing billed while released");
    assert_eq!(rig.gpus.script().opens, 1);

    rig.node.handle(Message::ReleaseNvml);
    assert_eq!(
        rig.gpus.script().opens,
        1,
        "a second SIGUSR1 changes nothing"
    );
    rig.node.handle(Message::ResumeNvml);
    rig.steps(3);
    let s = rig.snap();
    assert!(s.backend_up && !s.backend_paused);
    assert_eq!(rig.gpus.script().open_handles, 1);
    let after = rig.job("train-1").unwrap();
    assert_eq!(after.outcome, Outcome::Running);
    assert_eq!(after.usage.gpu_seconds, before.gpu_seconds + 3.0);
}

/// Issue 19: progress from a caller whose uid means nothing (a pod) goes to the job its process
/// belongs to, found from its pid by the rules that bill it, whatever job it names.
#[test]
fn issue_19_a_callers_job_is_found_from_its_process() {
    let mut rig = Rig::new();
    let proc = |pid, ppid, uid, slurm: Option<&str>| ProcInfo {
        pid,
        ppid,
        uid,
        comm: "python".into(),
        slurm_job: slurm.map(str::to_string),
        ..ProcInfo::default()
    };
    // Alice's training process on GPU 0 (its environment names her job), and its child, which
    // runs as a uid the node does not know (a container's).
    rig.put_process(500, 0, "alice-run");
    let put = |p: ProcInfo| {
        rig.procs.0.lock().unwrap().insert(p.pid, p);
    };
    put(proc(501, 500, 4242, None));
    // A job registered by root for process 600, which uses no GPU; 601 is below it.
    put(proc(600, 1, 1002, None));
    put(proc(601, 600, 1002, None));
    // A Slurm job's process that uses no GPU, and a process of no job at all.
    put(proc(700, 1, 1003, Some("55")));
    put(proc(800, 1, 1004, None));
    rig.steps(2);
    let (reply, rx) = oneshot::channel();
    rig.node.handle(Message::Register {
        deadline: far_future(),
        req: RegisterRequest {
            id: Some("reg-run".into()),
            pid: Some(600),
            uid: Some(1002),
            ..RegisterRequest::default()
        },
        uid: 0,
        reply,
    });
    rx.blocking_recv().unwrap().unwrap();

    for (pid, want) in [
        (500, Ok("alice-run")),
        (501, Ok("alice-run")),
        (600, Ok("reg-run")),
        (601, Ok("reg-run")),
        (700, Ok("55")),
        (800, Err("belongs to no job")),
        (999, Err("cannot be read")),
    ] {
        let got = rig.node.job_of_process(pid).map_err(|e| e.to_string());
        match (want, got) {
            (Ok(w), Ok(g)) => assert_eq!(g, w, "pid {pid}"),
            (Err(w), Err(g)) => assert!(g.contains(w), "pid {pid}: {g}"),
            (w, g) => panic!("pid {pid}: wanted {w:?}, got {g:?}"),
        }
    }

    let progress = |rig: &mut Rig, pid, uid, tokens| {
        let (reply, rx) = oneshot::channel();
        rig.node.handle(Message::CallerProgress {
            pid,
            uid,
            req: ProgressRequest {
                tokens: Some(tokens),
                ..ProgressRequest::default()
            },
            deadline: far_future(),
            reply,
        });
        rx.blocking_recv().unwrap().map_err(|e| e.to_string())
    };
    // The pod socket: belonging is enough.
    let j = progress(&mut rig, 501, None, 100).unwrap();
    assert_eq!(j.id, "alice-run");
    assert_eq!(rig.job("alice-run").unwrap().progress.unwrap().tokens, 100);
    // The job socket's `POST /api/v1/progress`: the job must also be the caller's.
    let refused = progress(&mut rig, 501, Some(4242), 200).unwrap_err();
    assert!(refused.contains("another user"), "{refused}");
    assert_eq!(
        progress(&mut rig, 500, Some(1001), 300).unwrap().id,
        "alice-run"
    );
    assert!(progress(&mut rig, 800, None, 1).is_err());
}

/// Issue 15, item 3: a registration's GPU index is resolved to the GPU's UUID once. When NVML
/// numbers the GPUs otherwise later (here after a reopen: a GPU replaced, a driver reloaded),
/// the job keeps the GPU it was given, and the GPU now at its old index stays unallocated.
#[test]
fn issue_15_a_registered_gpu_index_is_resolved_to_its_uuid_once() {
    let mut rig = Rig::new();
    rig.steps(1);
    let j = rig.register_gpus("held", 1001, &["1"]).unwrap();
    assert_eq!(j.registration.unwrap().gpus, ["GPU-1"]);
    rig.steps(2);
    let unallocated = |rig: &Rig, uuid: &str| {
        rig.node
            .tracker
            .gpus()
            .find(|g| g.uuid == uuid)
            .map_or(0.0, |g| g.unallocated_seconds)
    };
    let held = rig.job("held").unwrap().usage.gpu_seconds;
    let free0 = unallocated(&rig, "GPU-0");
    assert_eq!(unallocated(&rig, "GPU-1"), 0.0);

    rig.node.handle(Message::ReleaseNvml);
    {
        let mut s = rig.gpus.script();
        s.gpus.swap(0, 1);
        s.gpus[0].info.index = 0;
        s.gpus[1].info.index = 1;
    }
    rig.node.handle(Message::ResumeNvml);
    rig.steps(3);
    assert_eq!(
        rig.snap().gpus[0].info.uuid,
        "GPU-1",
        "NVML's order changed"
    );
    // Held idle: one GPU's time, GPU-1's; GPU-0, now index 1, went on unallocated.
    assert_eq!(rig.job("held").unwrap().usage.gpu_seconds, held + 3.0);
    assert_eq!(unallocated(&rig, "GPU-1"), 0.0);
    assert_eq!(unallocated(&rig, "GPU-0"), free0 + 3.0);
}

/// A registration naming a GPU the node does not have is refused with the GPUs it has.
#[test]
fn issue_15_a_registration_of_an_unknown_gpu_names_the_ones_there_are() {
    let mut rig = Rig::new();
    rig.steps(1);
    let err = rig.register_gpus("x", 1001, &["GPU-0", "5"]).unwrap_err();
    assert!(
        err.contains("no GPU \"5\"") && err.contains("0 (GPU-0), 1 (GPU-1)"),
        "{err}"
    );
    assert!(rig.job("x").is_none());
}

/// Issue 15, item 3: a job-map file named by index (a Slurm prolog's `SLURM_JOB_GPUS`) is
/// resolved to its GPU's UUID when it appears: when NVML numbers the GPUs otherwise later, the
/// job keeps holding the GPU it was given, idle, and the GPU now at that index is not its.
#[test]
fn issue_15_a_job_map_index_is_resolved_to_its_uuid_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::new();
    rig.node.cfg.job_map_dir = Some(dir.path().to_path_buf());
    rig.steps(1);
    std::fs::write(dir.path().join("1"), "41871\n").unwrap();
    rig.steps(2);
    let held = rig.job("41871").expect("the mapped job").usage.gpu_seconds;
    assert!(held > 0.0);

    rig.node.handle(Message::ReleaseNvml);
    {
        let mut s = rig.gpus.script();
        s.gpus.swap(0, 1);
        s.gpus[0].info.index = 0;
        s.gpus[1].info.index = 1;
    }
    rig.node.handle(Message::ResumeNvml);
    rig.steps(3);
    assert_eq!(
        rig.snap().gpus[0].info.uuid,
        "GPU-1",
        "NVML's order changed"
    );
    let unallocated = |uuid: &str| {
        rig.node
            .tracker
            .gpus()
            .find(|g| g.uuid == uuid)
            .map_or(0.0, |g| g.unallocated_seconds)
    };
    assert_eq!(rig.job("41871").unwrap().usage.gpu_seconds, held + 3.0);
    assert_eq!(unallocated("GPU-1"), 0.0, "still the job's");
    assert!(
        unallocated("GPU-0") >= 3.0,
        "GPU-0, now index 1, is nobody's"
    );
}

/// Issue 15: two pods time-slicing GPU 0 (replicas `GPU-0::0`, `GPU-0::1`), each process bound
/// to its pod by the pod UID in its cgroup: each pod pays its own processes' share, and
/// progress from a pod's process (the pod socket) goes to that pod, not to the first listed.
#[test]
fn issue_15_pods_sharing_a_gpu_are_billed_and_credited_apart() {
    let mut rig = Rig::new();
    let pod = |name: &str, replica: u32, uid: &str| PodGpu {
        namespace: "ml".into(),
        pod: name.into(),
        container: "main".into(),
        device_id: format!("GPU-0::{replica}"),
        pod_uid: Some(uid.into()),
        job: None,
    };
    rig.pods
        .send(vec![pod("a", 0, "uid-a"), pod("b", 1, "uid-b")])
        .unwrap();
    for (pid, uid, sm) in [(700, "uid-a", 30), (800, "uid-b", 10)] {
        rig.procs.0.lock().unwrap().insert(
            pid,
            ProcInfo {
                pid,
                ppid: 1,
                comm: "python".into(),
                pod_uid: Some(uid.into()),
                ..ProcInfo::default()
            },
        );
        let mut s = rig.gpus.script();
        s.gpus[0].processes.push(ProcessUse {
            pid,
            used_memory_bytes: Some(1 << 30),
            sm_util_pct: Some(sm),
        });
        s.gpus[0].utilization_pct = 40;
    }
    rig.steps(4);
    let a = rig.job("ml/a").unwrap().usage.gpu_seconds;
    let b = rig.job("ml/b").unwrap().usage.gpu_seconds;
    assert!(b > 0.0 && (a / b - 3.0).abs() < 1e-9, "a {a}, b {b}");

    let (reply, rx) = oneshot::channel();
    rig.node.handle(Message::CallerProgress {
        pid: 800,
        uid: None,
        req: ProgressRequest {
            tokens: Some(1000),
            ..ProgressRequest::default()
        },
        deadline: far_future(),
        reply,
    });
    assert_eq!(rx.blocking_recv().unwrap().unwrap().id, "ml/b");
}

/// Issue 16, item 6: what the Kubernetes API says of the pods. Two workers of one PyTorchJob
/// (a GPU each) are one job, named after it, with the pod's labels; it ends when both pods
/// have, as the first failure says (an OOM kill), at the last pod's end.
#[test]
fn issue_16_a_pytorchjobs_pods_are_one_job_that_ends_as_the_api_says() {
    use gpucost_core::attribute::pods::{ContainerEnd, PodMeta, PodOwner, PodPhase};
    use gpucost_core::jobs::EndReason;
    let mut rig = Rig::new();
    let device = |name: &str, gpu: &str| PodGpu {
        namespace: "ml".into(),
        pod: name.into(),
        container: "pytorch".into(),
        device_id: gpu.into(),
        // The checkpoint is not read here: the UIDs come from the API.
        pod_uid: None,
        job: None,
    };
    rig.pods
        .send(vec![
            device("bert-worker-0", "GPU-0"),
            device("bert-worker-1", "GPU-1"),
        ])
        .unwrap();
    let meta = |name: &str| PodMeta {
        namespace: "ml".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: BTreeMap::from([
            ("team".to_string(), "nlp".to_string()),
            (
                "app.kubernetes.io/part-of".to_string(),
                "bert-ft".to_string(),
            ),
            (
                "training.kubeflow.org/replica-type".to_string(),
                "worker".to_string(),
            ),
        ]),
        controller: Some(PodOwner {
            kind: "PyTorchJob".into(),
            name: "bert".into(),
        }),
        phase: PodPhase::Running,
        reason: None,
        disruption: None,
        deleting: false,
        started_at: Some(T0 as i64 - 60),
        containers: Vec::new(),
        ending: None,
    };
    let send = |rig: &Rig, pods: Vec<PodMeta>| {
        rig.kube_pods
            .send(Arc::new(
                pods.into_iter().map(|m| (m.uid.clone(), m)).collect(),
            ))
            .unwrap();
    };
    send(&rig, vec![meta("bert-worker-0"), meta("bert-worker-1")]);
    for (pid, pod, gpu) in [(700, "bert-worker-0", 0), (800, "bert-worker-1", 1)] {
        rig.procs.0.lock().unwrap().insert(
            pid,
            ProcInfo {
                pid,
                ppid: 1,
                comm: "python".into(),
                pod_uid: Some(format!("uid-{pod}")),
                ..ProcInfo::default()
            },
        );
        let mut s = rig.gpus.script();
        s.gpus[gpu].processes.push(ProcessUse {
            pid,
            used_memory_bytes: Some(1 << 30),
            sm_util_pct: Some(50),
        });
        s.gpus[gpu].utilization_pct = 50;
    }
    rig.steps(5);
    let j = rig
        .job("ml/pytorchjob/bert")
        .expect("one job for both pods");
    assert!(rig.job("ml/bert-worker-0").is_none());
    assert_eq!(j.name, "bert");
    assert_eq!(j.per_gpu.len(), 2, "both pods' GPUs");
    assert_eq!(
        (
            j.labels["namespace"].as_str(),
            j.labels["team"].as_str(),
            j.labels["project"].as_str()
        ),
        ("ml", "nlp", "bert-ft")
    );
    assert!(!j.labels.contains_key("training.kubeflow.org/replica-type"));

    // Worker 0 is OOM-killed; worker 1 still runs: the job runs.
    let oom_at = rig.clock.wall() as i64 - 2;
    let mut w0 = meta("bert-worker-0");
    w0.phase = PodPhase::Failed;
    w0.containers = vec![ContainerEnd {
        exit_code: 137,
        signal: None,
        reason: Some("OOMKilled".into()),
        finished_at: Some(oom_at),
    }];
    w0.ending = w0.ending_now(false, rig.clock.wall());
    send(&rig, vec![w0.clone(), meta("bert-worker-1")]);
    rig.steps(2);
    assert_eq!(
        rig.job("ml/pytorchjob/bert").unwrap().outcome,
        Outcome::Running
    );
    // The operator stops worker 1 (SIGTERM, exit 143): the job failed, for the OOM kill.
    let last_at = rig.clock.wall() as i64 - 1;
    let mut w1 = meta("bert-worker-1");
    w1.phase = PodPhase::Failed;
    w1.containers = vec![ContainerEnd {
        exit_code: 143,
        signal: None,
        reason: Some("Error".into()),
        finished_at: Some(last_at),
    }];
    w1.ending = w1.ending_now(false, rig.clock.wall());
    send(&rig, vec![w0, w1]);
    rig.step();
    let j = rig.job("ml/pytorchjob/bert").unwrap();
    assert_eq!(
        (j.outcome, j.reason, j.exit_code),
        (Outcome::Failed, Some(EndReason::Oom), Some(137))
    );
    assert_eq!(j.ended_at, Some(last_at as f64));
}

/// Issue 16, item 6: a bare pod deleted by its user is cancelled, one preempted by the
/// scheduler preempted; without the API (nothing sent) a pod's job is its own, as before.
#[test]
fn issue_16_a_deleted_pod_is_cancelled_and_a_preempted_one_preempted() {
    use gpucost_core::attribute::pods::{PodMeta, PodPhase};
    for (disruption, outcome) in [
        (None, Outcome::Cancelled),
        (Some("PreemptionByScheduler"), Outcome::Preempted),
    ] {
        let mut rig = Rig::new();
        rig.pods
            .send(vec![PodGpu {
                namespace: "ml".into(),
                pod: "notebook".into(),
                container: "main".into(),
                device_id: "GPU-0".into(),
                pod_uid: None,
                job: None,
            }])
            .unwrap();
        rig.steps(3);
        assert_eq!(
            rig.job("ml/notebook").unwrap().outcome,
            Outcome::Running,
            "known from the kubelet alone"
        );
        let mut m = PodMeta {
            namespace: "ml".into(),
            name: "notebook".into(),
            uid: "uid-nb".into(),
            labels: BTreeMap::new(),
            controller: None,
            phase: PodPhase::Failed,
            reason: None,
            disruption: disruption.map(str::to_string),
            deleting: true,
            started_at: Some(T0 as i64),
            containers: Vec::new(),
            ending: None,
        };
        m.ending = m.ending_now(true, rig.clock.wall());
        rig.kube_pods
            .send(Arc::new(BTreeMap::from([(m.uid.clone(), m)])))
            .unwrap();
        rig.step();
        let j = rig.job("ml/notebook").unwrap();
        assert_eq!((j.outcome, j.reason), (outcome, None), "{disruption:?}");
    }
}

/// Issue 18, item 6: a job's FLOP/s from pipe activity is priced at what its GPU's SMs do per
/// clock at the clock they ran at: the same activity at 1500 MHz is 1500/1980 of that at
/// 1980 MHz, and a GPU whose clock is not read falls back to the datasheet's peaks.
#[test]
fn issue_18_job_flops_follow_the_clock_of_their_gpu() {
    use gpucost_core::reading::Pipes;
    let mut script = Script::h100s(3);
    for g in &mut script.gpus {
        g.info.compute_capability = Some((9, 0));
        g.info.sm_count = Some(132);
        g.pipes = Some(Pipes {
            tensor_active: Some(0.5),
            hmma_active: Some(0.5),
            ..Pipes::IDLE
        });
    }
    script.gpus[0].sm_clock_mhz = Some(1980);
    script.gpus[1].sm_clock_mhz = Some(1500);
    script.gpus[2].sm_clock_mhz = None;
    let mut rig = Rig::with(Setup {
        script,
        ..Setup::default()
    });
    rig.put_process(100, 0, "fast");
    rig.put_process(101, 1, "slow");
    rig.put_process(102, 2, "unclocked");
    rig.steps(4);
    let rates = rig.snap().job_rates.clone();
    let flops = |id: &str| {
        rates
            .get(id)
            .and_then(|r| r.achieved_flops)
            .unwrap_or_else(|| panic!("{id}: no rate in {rates:?}"))
    };
    let per_mhz = 0.5 * 132.0 * 4096.0 * 1e6;
    let (fast, slow) = (flops("fast"), flops("slow"));
    assert!((fast / (per_mhz * 1980.0) - 1.0).abs() < 1e-9, "{fast}");
    assert!((slow / (per_mhz * 1500.0) - 1.0).abs() < 1e-9, "{slow}");
    // The datasheet's dense BF16 peak of an H100 SXM (at the 1830 MHz it assumes).
    let sheet = gpucost_hw::lookup("NVIDIA H100 80GB HBM3")
        .and_then(|s| s.peak(gpucost_hw::Precision::Bf16))
        .unwrap();
    let unclocked = flops("unclocked");
    assert!(
        (unclocked / (0.5 * sheet) - 1.0).abs() < 1e-9,
        "{unclocked}"
    );
    // MFU stays against the datasheet peak: at 1980 MHz the same activity scores higher.
    assert!(fast / rates["fast"].peak_flops > 0.5 * 1980.0 / 1830.0 - 0.001);
}
