//! The sampler: owns the backend and the per-GPU totals; each [`Sampler::cycle`] reads every GPU
//! (the process list on a slower cadence) and says what the interval since the last one held.
//!
//! It is driven by the node's owner thread (`crate::node`). Each GPU is read on a reader thread
//! of its own, and a cycle waits for the reads only until a deadline ([`Cadence::read_timeout`]):
//! a call on a wedged GPU can leave its caller in uninterruptible sleep for good, and it must
//! hold back neither the other GPUs' samples nor the node thread (whose heartbeat `/healthz`
//! judges). A GPU whose read misses the deadline is down until the call returns; its reader is
//! not asked again meanwhile, and it is read again as soon as it answers.
//!
//! The backend comes from a [`BackendFactory`] and time from a [`Clock`], both passed in, so
//! tests drive it with a scripted backend in virtual time. Nothing here is fatal: a missing
//! library is retried, a lost GPU is reported and re-read, a failed field is counted and logged,
//! a library on which every GPU fails for [`REOPEN_AFTER_FAILED_CYCLES`] cycles is closed and
//! opened again, and the cycle goes on. An operator may make it let go of the library
//! ([`Sampler::release`]) and take it back ([`Sampler::resume`]).
//!
//! The time a GPU is down is not measured: it earns no GPU-seconds, energy or cost, its next
//! good reading starts a new baseline, and the seconds are counted in its
//! [`GpuHealth::unmeasured_s`].

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gpucost_core::clock::Clock;
use tracing::{debug, info, warn};

use super::{Backend, BackendFactory};
use crate::snapshot::{GpuHealth, GpuSnapshot};
use gpucost_core::account::{mig_activity, GpuTotals};
use gpucost_core::reading::{Field, FieldError, GpuStatic, Reading, SampleError, Source};

/// Cycles in a row in which every GPU answered with a failure (and at least one was not lost)
/// before the library is closed and opened again: what a driver upgraded, reloaded or reset
/// under the agent needs (NVML answers `LIB_RM_VERSION_MISMATCH`, `UNINITIALIZED` or `UNKNOWN`
/// to every call of the handle it holds). Later attempts wait `nvml.retry_interval`.
pub const REOPEN_AFTER_FAILED_CYCLES: u32 = 3;

#[derive(Debug, Clone)]
pub struct Cadence {
    pub interval: Duration,
    pub process_interval: Duration,
    /// How often to try again to load NVML when it is not available.
    pub retry_interval: Duration,
    /// How long a cycle waits for each GPU's read ([`read_timeout`] of the interval), on the
    /// real clock: it bounds how long the node thread is held by a call that may never return.
    pub read_timeout: Duration,
}

/// How long a cycle waits for a GPU's read: three quarters of the sampling interval, so that the
/// other GPUs keep their cadence, but at least 0.5 s (a healthy NVML read can take a few hundred
/// milliseconds on a busy GPU) and at most 10 s.
pub fn read_timeout(interval: Duration) -> Duration {
    (interval * 3 / 4).clamp(Duration::from_millis(500), Duration::from_secs(10))
}

struct GpuSlot {
    snap: GpuSnapshot,
    last_read: Option<Instant>,
    /// When this GPU's previous cycle was, for the time it is not measured.
    last_cycle: Option<Instant>,
    /// Fields already reported as unsupported, so the log says it once.
    said_unsupported: BTreeSet<Field>,
    said_failed: BTreeSet<Field>,
    /// Whether `snap.processes` is a list read since the GPU was last down (an empty list then
    /// means nobody is on it).
    processes_known: bool,
}

impl GpuSlot {
    fn new(info: GpuStatic) -> Self {
        GpuSlot {
            snap: GpuSnapshot {
                info,
                up: true,
                reading: None,
                processes: Vec::new(),
                totals: GpuTotals::default(),
                energy_method: None,
                health: GpuHealth::default(),
            },
            last_read: None,
            last_cycle: None,
            said_unsupported: BTreeSet::new(),
            said_failed: BTreeSet::new(),
            processes_known: false,
        }
    }

    /// The GPU was not read this cycle: down, its gauges gone, its totals kept, the interval
    /// since its previous cycle unmeasured, and its next reading a new baseline.
    fn down(&mut self, now: Instant, reason: String) {
        self.snap.up = false;
        self.snap.reading = None;
        self.snap.processes.clear();
        self.processes_known = false;
        self.snap.totals.energy.interrupt();
        if let Some(prev) = self.last_cycle {
            self.snap.health.unmeasured_s += now.saturating_duration_since(prev).as_secs_f64();
        }
        self.snap.health.down_reason = Some(reason);
        // The next good reading starts its interval here: the time away is not billed.
        self.last_read = Some(now);
    }
}

/// What one GPU's read request came back with, from its reader thread.
struct Answer {
    index: u32,
    result: Result<Reading, SampleError>,
    /// When the read returned (monotonic): the moment the reading describes.
    at: Instant,
}

/// One GPU's reader thread.
struct Reader {
    /// Read requests (`with_processes`); dropped to let the thread end.
    requests: Option<Sender<bool>>,
    thread: Option<JoinHandle<()>>,
    /// The read in flight: when it was asked for and in which cycle. `None` while idle.
    asked: Option<(Instant, u64)>,
    /// Whether that read has missed its deadline (said and counted once).
    missed: bool,
}

impl Reader {
    fn spawn(
        index: u32,
        backend: Arc<dyn Backend>,
        clock: Arc<dyn Clock>,
        answers: Sender<Answer>,
    ) -> std::io::Result<Self> {
        let (requests, rx) = mpsc::channel::<bool>();
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name(format!("gpucost-gpu{index}"))
            .spawn(move || {
                let _e = span.enter();
                while let Ok(with_processes) = rx.recv() {
                    let result =
                        catch_unwind(AssertUnwindSafe(|| backend.read(index, with_processes)))
                            .unwrap_or_else(|_| {
                                Err(SampleError::Failed(
                                    "the read panicked (a bug: please report it)".into(),
                                ))
                            });
                    let at = clock.mono();
                    if answers.send(Answer { index, result, at }).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Reader {
            requests: Some(requests),
            thread: Some(thread),
            asked: None,
            missed: false,
        })
    }

    /// Asks for a read; false when the thread is gone.
    fn ask(&mut self, with_processes: bool, now: Instant, cycle: u64) -> bool {
        let sent = self
            .requests
            .as_ref()
            .is_some_and(|r| r.send(with_processes).is_ok());
        if sent {
            self.asked = Some((now, cycle));
            self.missed = false;
        }
        sent
    }
}

/// An open backend, shared with one reader thread per GPU.
struct Open {
    backend: Arc<dyn Backend>,
    readers: BTreeMap<u32, Reader>,
    answers: Receiver<Answer>,
}

/// What became of a GPU's read this cycle.
enum Outcome {
    /// Its answer, with the moment the read returned.
    Answered(Box<Answer>),
    /// Its read has not returned since `since`; `first` in the cycle whose deadline it missed.
    Stuck { since: Instant, first: bool },
    /// Its reader thread is gone.
    NoReader,
}

/// What [`Sampler::release`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// GPUs whose reads are stuck in a call: the library stays loaded until they return.
    pub stuck: Vec<u32>,
    /// Whether the library was open (false: it was not loaded, or already released).
    pub was_open: bool,
}

/// What the opening thread brings back: the backend with its GPUs, or why not.
type Opened = Result<(Box<dyn Backend>, Vec<GpuStatic>), OpenError>;

enum OpenError {
    /// The library could not be loaded or initialised.
    Load(SampleError),
    /// It loaded but cannot list the GPUs.
    List(SampleError),
    /// The thread could not be started, or ended without an answer.
    Thread(String),
}

/// A library being opened on a thread of its own: `nvmlInit` and the device list can block on
/// a wedged GPU like any read, and must not hold the node thread either.
struct Opening {
    /// When it started (the node's clock).
    since: Instant,
    /// Whether a cycle has waited its deadline for it already (later ones only look).
    waited: bool,
    result: Receiver<Opened>,
}

/// What the factory says of itself, kept so that a factory busy opening is never waited for.
struct About {
    source: Source,
    library: &'static str,
    simulated: Option<String>,
    hint: String,
}

pub struct Sampler {
    factory: Arc<Mutex<Box<dyn BackendFactory>>>,
    about: About,
    cadence: Cadence,
    clock: Arc<dyn Clock>,
    open: Option<Open>,
    opening: Option<Opening>,
    next_open: Instant,
    open_error: Option<String>,
    /// Why the library is released, while an operator has it released.
    released: Option<String>,
    /// Cycles in a row in which every GPU failed, and the first failure of the last one.
    failed_cycles: u32,
    last_failure: Option<String>,
    /// Not before this may the library be re-opened again because every GPU fails.
    next_reopen: Instant,
    reopens: u64,
    driver: Option<String>,
    gpus: Vec<GpuSlot>,
    /// GPUs that disappeared from the device list, kept by UUID (totals and health) in case
    /// they return.
    retired: BTreeMap<String, GpuSlot>,
    next_processes: Instant,
    samples_total: u64,
    errors: BTreeMap<(u32, &'static str, &'static str), u64>,
    /// (gpu, driver event) -> count since the agent started.
    driver_events: BTreeMap<(u32, &'static str), u64>,
}

/// What one GPU did over the interval that a cycle closed.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    /// Seconds since the previous reading (0 for the first).
    pub dt: f64,
    pub energy_j: f64,
    pub utilization: Option<f64>,
    /// Pipe activity over the interval, where the GPU has GPM.
    pub pipes: Option<gpucost_core::reading::Pipes>,
    /// The share of a physical GPU the unit is (`GpuStatic::share`): 1, or a MIG instance's
    /// slices over its parent's.
    pub slice_share: f64,
    /// A MIG instance (its SMs are not the board's).
    pub mig: bool,
    /// The unit's compute capability and SMs, as the driver reported them when it opened.
    pub compute_capability: Option<(u32, u32)>,
    pub sm_count: Option<u32>,
    /// The SM clock over the interval, MHz: the mean of the clocks read at its two ends, or the
    /// one read at its end where the other is unknown. NVML reads the clock at an instant, so
    /// this is the best the two readings say of the interval between them.
    pub sm_clock_mhz: Option<f64>,
}

/// The SM clock over an interval from the clocks read at its start and end, MHz.
pub fn interval_clock_mhz(start: Option<u32>, end: Option<u32>) -> Option<f64> {
    match (start, end) {
        (Some(a), Some(b)) => Some((f64::from(a) + f64::from(b)) / 2.0),
        (_, b) => b.map(f64::from),
    }
}

/// The result of a cycle.
#[derive(Debug, Clone, Default)]
pub struct CycleResult {
    /// GPUs read successfully, with their interval.
    pub ticks: Vec<Tick>,
    /// Whether process lists were read this cycle (attribution runs then).
    pub processes_read: bool,
    pub duration: Duration,
}

impl Sampler {
    pub fn new(factory: Box<dyn BackendFactory>, cadence: Cadence, clock: Arc<dyn Clock>) -> Self {
        let now = clock.mono();
        let about = About {
            source: factory.source(),
            library: factory.library(),
            simulated: factory.simulated().map(str::to_string),
            hint: factory.unavailable_hint(),
        };
        Sampler {
            factory: Arc::new(Mutex::new(factory)),
            about,
            cadence,
            clock,
            open: None,
            opening: None,
            next_open: now,
            open_error: None,
            released: None,
            failed_cycles: 0,
            last_failure: None,
            next_reopen: now,
            reopens: 0,
            driver: None,
            gpus: Vec::new(),
            retired: BTreeMap::new(),
            next_processes: now,
            samples_total: 0,
            errors: BTreeMap::new(),
            driver_events: BTreeMap::new(),
        }
    }

    pub fn source(&self) -> Source {
        self.about.source
    }

    /// Starts opening the library on a thread of its own.
    fn start_open(&mut self, now: Instant) {
        let (tx, result) = mpsc::channel();
        let factory = self.factory.clone();
        let span = tracing::Span::current();
        let spawned = std::thread::Builder::new()
            .name("gpucost-open".into())
            .spawn(move || {
                let _e = span.enter();
                let mut factory = factory.lock().unwrap_or_else(PoisonError::into_inner);
                let opened = match factory.open() {
                    Err(e) => Err(OpenError::Load(e)),
                    Ok(mut backend) => match backend.gpus() {
                        Ok(gpus) => Ok((backend, gpus)),
                        Err(e) => Err(OpenError::List(e)),
                    },
                };
                // A sampler gone meanwhile drops what was opened (and closes it) here.
                let _ = tx.send(opened);
            });
        match spawned {
            Ok(_) => {
                self.opening = Some(Opening {
                    since: now,
                    waited: false,
                    result,
                });
            }
            Err(e) => self.opened(
                Err(OpenError::Thread(format!(
                    "cannot start a thread to open it: {e}"
                ))),
                now,
            ),
        }
    }

    /// Takes the opening thread's answer, waiting for it until the read deadline in the first
    /// cycle after it started, only looking in later ones.
    fn poll_open(&mut self, now: Instant) {
        let Some(op) = self.opening.as_mut() else {
            return;
        };
        let answer = if op.waited {
            op.result
                .try_recv()
                .map_err(|e| e == TryRecvError::Disconnected)
        } else {
            op.waited = true;
            op.result
                .recv_timeout(self.cadence.read_timeout)
                .map_err(|e| e == RecvTimeoutError::Disconnected)
        };
        let since = op.since;
        match answer {
            Ok(opened) => {
                self.opening = None;
                if self.released.is_some() {
                    // Released while it was opening: closed again at once.
                    drop(opened);
                    return;
                }
                self.opened(opened, now);
            }
            Err(true) => {
                self.opening = None;
                let e = OpenError::Thread("its opening thread ended without an answer".into());
                self.opened(Err(e), now);
            }
            Err(false) => {
                let secs = now.saturating_duration_since(since).as_secs_f64();
                let msg = format!(
                    "opening it has not returned for {secs:.1} s (a GPU stuck in the driver?)"
                );
                if self
                    .open_error
                    .as_deref()
                    .is_none_or(|e| !e.starts_with("opening it"))
                {
                    warn!(
                        "{}: {msg}; the agent goes on without it and takes it once it is open",
                        self.about.library
                    );
                }
                self.open_error = Some(msg);
            }
        }
    }

    /// Takes an opened backend into use (a reader per GPU), or says why there is none.
    fn opened(&mut self, opened: Opened, now: Instant) {
        let library = self.about.library;
        let (backend, gpus) = match opened {
            Ok(o) => o,
            Err(OpenError::Load(e)) => {
                let msg = e.to_string();
                if self.open_error.as_deref() != Some(msg.as_str()) {
                    warn!(
                        "{library} unavailable ({msg}); {}. No GPU metrics until it loads \
                         (gpucost_nvml_up 0); retrying every {}",
                        self.about.hint,
                        humantime::format_duration(self.cadence.retry_interval)
                    );
                } else {
                    debug!("{library} still unavailable: {msg}");
                }
                self.open_error = Some(msg);
                self.next_open = now + self.cadence.retry_interval;
                return;
            }
            Err(OpenError::List(e)) => {
                warn!("GPU library loaded but cannot list GPUs: {e}; retrying");
                self.open_error = Some(e.to_string());
                self.next_open = now + self.cadence.retry_interval;
                return;
            }
            Err(OpenError::Thread(msg)) => {
                warn!("{library}: {msg}; retrying");
                self.open_error = Some(msg);
                self.next_open = now + self.cadence.retry_interval;
                return;
            }
        };
        let backend: Arc<dyn Backend> = Arc::from(backend);
        let (tx, answers) = mpsc::channel();
        let mut readers = BTreeMap::new();
        for g in &gpus {
            match Reader::spawn(g.index, backend.clone(), self.clock.clone(), tx.clone()) {
                Ok(r) => {
                    readers.insert(g.index, r);
                }
                Err(e) => {
                    let msg = format!("cannot start a reader thread for GPU {}: {e}", g.index);
                    warn!("{msg}; retrying");
                    close_readers(readers);
                    self.open_error = Some(msg);
                    self.next_open = now + self.cadence.retry_interval;
                    return;
                }
            }
        }
        self.driver = backend.driver_version();
        info!(
            source = backend.source().as_str(),
            driver = self.driver.as_deref().unwrap_or("unknown"),
            "GPU library up: {} GPU(s): {}",
            gpus.len(),
            gpus.iter()
                .map(|g| format!("{} {} ({})", g.index, g.model, g.uuid))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // Keep what we knew of each GPU (by UUID), so a re-open never resets a counter.
        let physical = physical_baselines(&self.gpus);
        let previous: BTreeSet<String> =
            self.gpus.iter().map(|s| s.snap.info.uuid.clone()).collect();
        for slot in self.gpus.drain(..) {
            self.retired.insert(slot.snap.info.uuid.clone(), slot);
        }
        self.gpus = gpus
            .into_iter()
            .map(|info| {
                let mut slot = match self.retired.remove(&info.uuid) {
                    Some(mut slot) => {
                        slot.snap.info = info;
                        slot
                    }
                    None => GpuSlot::new(info),
                };
                // A unit that was not measured until now on a GPU that was (a GPU switched
                // into or out of MIG mode, an instance created) continues from the GPU's last
                // measurement.
                if !previous.contains(&slot.snap.info.uuid) {
                    continue_from(&mut slot, &physical);
                }
                slot
            })
            .collect();
        self.open_error = None;
        self.open = Some(Open {
            backend,
            readers,
            answers,
        });
        self.next_processes = now;
    }

    /// Closes the library: each reader is told to stop and, unless it is stuck in a call,
    /// joined; the backend (NVML's handles, the Xid listener's included) goes with the last of
    /// them. The GPUs whose reads are stuck, which keep the library loaded until they return.
    fn close(&mut self) -> Vec<u32> {
        let Some(mut open) = self.open.take() else {
            return Vec::new();
        };
        // Answers already in: those readers are idle, not stuck.
        while let Ok(a) = open.answers.try_recv() {
            if let Some(r) = open.readers.get_mut(&a.index) {
                r.asked = None;
            }
        }
        let stuck: Vec<u32> = open
            .readers
            .iter()
            .filter(|(_, r)| r.asked.is_some())
            .map(|(i, _)| *i)
            .collect();
        close_readers(open.readers);
        stuck
    }

    fn count_error(&mut self, gpu: u32, field: &'static str, kind: &'static str) {
        *self.errors.entry((gpu, field, kind)).or_default() += 1;
    }

    /// Asks every idle reader for a read and waits for the answers until the deadline. Answers
    /// to reads that missed an earlier deadline are taken as this cycle's.
    ///
    /// The deadline is on the real clock, not the node's [`Clock`]: it bounds how long the node
    /// thread is held by calls that may never return, and a thread asleep in the driver knows
    /// no virtual time. Tests in virtual time make a read hang ([`Backend`] calls that block)
    /// rather than take virtual time past the deadline, and what the readings mean (their
    /// moments, the intervals) stays on the node's clock.
    fn read_all(&mut self, now: Instant, with_processes: bool) -> BTreeMap<u32, Outcome> {
        let cycle = self.samples_total;
        let deadline = std::time::Instant::now() + self.cadence.read_timeout;
        let mut got = BTreeMap::new();
        let Some(open) = self.open.as_mut() else {
            return got;
        };
        while let Ok(a) = open.answers.try_recv() {
            if let Some(r) = open.readers.get_mut(&a.index) {
                if let Some((since, _)) = r.asked.take() {
                    info!(
                        gpu = a.index,
                        "GPU {}: the read that missed its deadline returned after {:.1} s",
                        a.index,
                        now.saturating_duration_since(since).as_secs_f64()
                    );
                }
            }
            got.insert(a.index, Outcome::Answered(Box::new(a)));
        }
        let mut waiting = 0;
        for (index, r) in open.readers.iter_mut() {
            if r.asked.is_some() || got.contains_key(index) {
                continue;
            }
            if r.ask(with_processes, now, cycle) {
                waiting += 1;
            } else {
                got.insert(*index, Outcome::NoReader);
            }
        }
        while waiting > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match open.answers.recv_timeout(left) {
                Ok(a) => {
                    if let Some(r) = open.readers.get_mut(&a.index) {
                        if r.asked.take().is_some_and(|(_, c)| c == cycle) {
                            waiting -= 1;
                        }
                    }
                    got.insert(a.index, Outcome::Answered(Box::new(a)));
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        for (index, r) in open.readers.iter_mut() {
            if let Some((since, _)) = r.asked {
                got.insert(
                    *index,
                    Outcome::Stuck {
                        since,
                        first: !std::mem::replace(&mut r.missed, true),
                    },
                );
            }
        }
        got
    }

    /// One sampling cycle: read every GPU and fold the readings into the totals.
    pub fn cycle(&mut self) -> CycleResult {
        let now = self.clock.mono();
        let mut result = CycleResult::default();
        if self.released.is_none()
            && self.open.is_none()
            && self.opening.is_none()
            && now >= self.next_open
        {
            self.start_open(now);
        }
        self.poll_open(now);
        if self.open.is_none() {
            // Released, or not loaded (again): every GPU we know of is down, its time unmeasured.
            let reason = match (&self.released, &self.open_error) {
                (Some(why), _) => format!("NVML released ({why})"),
                (None, Some(e)) => format!("NVML not open: {e}"),
                (None, None) => "NVML not open".to_string(),
            };
            for slot in &mut self.gpus {
                slot.down(now, reason.clone());
                slot.last_cycle = Some(now);
            }
            self.samples_total += 1;
            result.duration = self.clock.mono().saturating_duration_since(now);
            return result;
        }
        let with_processes = now >= self.next_processes;
        result.processes_read = with_processes;
        if with_processes {
            self.next_processes = now + self.cadence.process_interval;
        }
        let mut outcomes = self.read_all(now, with_processes);
        let mut failures = Vec::new();
        // Whether every GPU answered with a failure, and one of them not a lost GPU.
        let mut all_failed = !self.gpus.is_empty();
        let mut any_not_lost = false;
        let mut first_failure = None;
        let timeout = self.cadence.read_timeout;
        for slot in &mut self.gpus {
            let index = slot.snap.info.index;
            let outcome = outcomes.remove(&index).unwrap_or(Outcome::NoReader);
            let (answer, at) = match outcome {
                Outcome::Answered(a) => match (a.result, a.at) {
                    (Ok(r), at) => match every_field_failed(&r) {
                        Some(msg) => (
                            Err(SampleError::Failed(format!("every field failed ({msg})"))),
                            at,
                        ),
                        None => (Ok(r), at),
                    },
                    (Err(e), at) => (Err(e), at),
                },
                Outcome::Stuck { since, first } => {
                    all_failed = false;
                    if first {
                        warn!(gpu = index, "GPU {index} ({}): a read has not returned after {}; it is down (gpucost_gpu_up 0) and its totals are kept while the other GPUs go on. The driver may be stuck on this GPU; it is read again once the call returns", slot.snap.info.uuid, humantime::format_duration(timeout));
                        failures.push((index, "all", "timeout"));
                    }
                    let secs = now.saturating_duration_since(since).as_secs_f64();
                    slot.down(
                        now,
                        format!("a read has not returned for {secs:.1} s (stuck in the driver?)"),
                    );
                    slot.last_cycle = Some(now);
                    continue;
                }
                Outcome::NoReader => (
                    Err(SampleError::Failed("its reader thread is gone".into())),
                    now,
                ),
            };
            match answer {
                Ok(mut r) => {
                    all_failed = false;
                    if !slot.snap.up {
                        info!(
                            gpu = index,
                            "GPU {index} ({}) answers again", slot.snap.info.uuid
                        );
                        slot.snap.up = true;
                    }
                    slot.snap.health.down_reason = None;
                    slot.snap.health.last_reading_at = Some(at);
                    // The reading's own moment: a late answer (a read that missed an earlier
                    // deadline) describes the time its call returned.
                    let dt = slot
                        .last_read
                        .map_or(0.0, |t| at.saturating_duration_since(t).as_secs_f64());
                    for (field, err) in std::mem::take(&mut r.field_errors) {
                        match err {
                            FieldError::NotSupported => {
                                if slot.said_unsupported.insert(field) {
                                    info!(
                                        gpu = index,
                                        "GPU {index}: {field} is not supported; {}",
                                        unsupported_note(field)
                                    );
                                }
                            }
                            FieldError::Failed(msg) => {
                                if slot.said_failed.insert(field) {
                                    warn!(gpu = index, "GPU {index}: reading {field} failed: {msg} (counted in gpucost_agent_sample_errors_total; said once)");
                                }
                                failures.push((index, field.as_str(), "failed"));
                            }
                        }
                    }
                    let step = slot.snap.totals.apply(&r, dt, at);
                    if step.counter_reset {
                        warn!(gpu = index, "GPU {index}: energy counter went backwards or jumped (driver reload or wrap); this interval uses power x time, the total keeps counting up");
                    }
                    slot.snap.energy_method = Some(step.method);
                    if let Some(ps) = r.processes.take() {
                        slot.snap.processes = ps;
                        slot.processes_known = true;
                    }
                    // NVML reports no utilization on MIG: an instance is busy or idle by what
                    // MIG does report (`account::mig_activity`).
                    let utilization = match (&slot.snap.info.mig, r.utilization_pct) {
                        (Some(_), None) => mig_activity(
                            r.pipes.as_ref(),
                            slot.processes_known.then_some(slot.snap.processes.len()),
                        ),
                        (_, pct) => pct.map(|p| p / 100.0),
                    };
                    result.ticks.push(Tick {
                        index,
                        uuid: slot.snap.info.uuid.clone(),
                        model: slot.snap.info.model.clone(),
                        dt,
                        energy_j: step.delta_j,
                        utilization,
                        pipes: r.pipes,
                        slice_share: slot.snap.info.share(),
                        mig: slot.snap.info.mig.is_some(),
                        compute_capability: slot.snap.info.compute_capability,
                        sm_count: slot.snap.info.sm_count,
                        sm_clock_mhz: interval_clock_mhz(
                            slot.snap.reading.as_ref().and_then(|p| p.sm_clock_mhz),
                            r.sm_clock_mhz,
                        ),
                    });
                    slot.snap.reading = Some(r);
                    slot.last_read = Some(at.max(slot.last_read.unwrap_or(at)));
                }
                Err(e) => {
                    if slot.snap.up {
                        warn!(gpu = index, "GPU {index} ({}) cannot be read: {e}; its totals are kept and it is retried every cycle", slot.snap.info.uuid);
                    }
                    let kind = match e {
                        SampleError::GpuLost(_) => "gpu_lost",
                        _ => {
                            any_not_lost = true;
                            "failed"
                        }
                    };
                    first_failure.get_or_insert_with(|| format!("GPU {index}: {e}"));
                    slot.down(now, e.to_string());
                    failures.push((index, "all", kind));
                }
            }
            slot.last_cycle = Some(now);
        }
        if let Some(open) = &self.open {
            for (gpu, xid) in open.backend.take_xids() {
                warn!(gpu, xid, "GPU {gpu}: Xid {xid} reported by the driver");
                // A GPU in MIG mode is its instances: its first one counts the GPU's Xids.
                let slot = match self.gpus.iter().position(|s| s.snap.info.index == gpu) {
                    Some(i) => Some(i),
                    None => self.gpus.iter().position(|s| {
                        s.snap
                            .info
                            .mig
                            .as_ref()
                            .is_some_and(|m| m.parent_index == gpu)
                    }),
                };
                if let Some(i) = slot {
                    self.gpus[i].snap.totals.add_xid(xid);
                }
            }
            for (gpu, event) in open.backend.take_driver_events() {
                warn!(
                    gpu,
                    event = event.as_str(),
                    "GPU {gpu}: the driver reports {}",
                    event.describe()
                );
                *self.driver_events.entry((gpu, event.as_str())).or_default() += 1;
            }
        }
        for (gpu, field, kind) in failures {
            self.count_error(gpu, field, kind);
        }
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.backend.layout_changed())
        {
            info!(
                "{}: a GPU switched MIG mode or its MIG instances changed: opening it again to \
                 list the GPUs and their instances anew",
                self.about.library
            );
            let stuck = self.close();
            if !stuck.is_empty() {
                warn!(
                    "{} stays loaded until the stuck reads of GPU(s) {stuck:?} return",
                    self.about.library
                );
            }
            self.failed_cycles = 0;
            self.next_open = now;
        }
        self.samples_total += 1;
        self.after_failures(now, all_failed && any_not_lost, first_failure);
        result.duration = self.clock.mono().saturating_duration_since(now);
        result
    }

    /// Counts the cycles in a row in which every GPU failed, and re-opens the library after
    /// [`REOPEN_AFTER_FAILED_CYCLES`] of them.
    fn after_failures(&mut self, now: Instant, all_failed: bool, first: Option<String>) {
        if !all_failed {
            if self.failed_cycles > 0 {
                debug!("a GPU answers again: the library works");
            }
            self.failed_cycles = 0;
            self.last_failure = None;
            return;
        }
        self.failed_cycles += 1;
        self.last_failure = first;
        if self.failed_cycles < REOPEN_AFTER_FAILED_CYCLES || now < self.next_reopen {
            return;
        }
        let library = self.about.library;
        warn!(
            "every GPU failed {} cycles in a row ({}): closing {library} and opening it again, \
             as a driver upgraded, reloaded or reset under the agent requires \
             (gpucost_nvml_up 0 until it answers; gpucost_agent_nvml_reopens_total counts this)",
            self.failed_cycles,
            self.last_failure.as_deref().unwrap_or("no reason given")
        );
        let stuck = self.close();
        if !stuck.is_empty() {
            warn!("{library} stays loaded until the stuck reads of GPU(s) {stuck:?} return");
        }
        self.reopens += 1;
        self.next_reopen = now + self.cadence.retry_interval;
        self.failed_cycles = 0;
        // Opened again at the next cycle.
        self.next_open = now;
    }

    /// Lets go of the GPU library (an operator's request, `why` for the log and `/healthz`):
    /// the readers stop, the backend and its handles close, and nothing is read or measured
    /// until [`Sampler::resume`]. Reads stuck in a call keep the library loaded until they
    /// return.
    pub fn release(&mut self, why: &str) -> Released {
        let was_open = self.open.is_some();
        let stuck = self.close();
        self.released = Some(why.to_string());
        self.failed_cycles = 0;
        Released { stuck, was_open }
    }

    /// Takes the library back after [`Sampler::release`]: it is opened at the next cycle.
    /// False when it was not released.
    pub fn resume(&mut self) -> bool {
        if self.released.take().is_none() {
            return false;
        }
        self.next_open = self.clock.mono();
        self.open_error = None;
        true
    }

    /// Why the library is released, while it is.
    pub fn released(&self) -> Option<&str> {
        self.released.as_deref()
    }

    pub fn gpus(&self) -> impl Iterator<Item = &GpuSnapshot> {
        self.gpus.iter().map(|s| &s.snap)
    }

    /// Whether the library is open and answering: not while it is released, not loaded, or
    /// failing on every GPU.
    pub fn backend_up(&self) -> bool {
        self.open.is_some() && self.failed_cycles == 0
    }

    /// Whether the backend's listener for Xids and other driver events is waiting for them.
    pub fn xid_listener_up(&self) -> bool {
        self.open
            .as_ref()
            .is_some_and(|o| o.backend.xid_listener_up())
    }

    /// (gpu, driver event) -> count since the agent started.
    pub fn driver_events(&self) -> Vec<(u32, &'static str, u64)> {
        self.driver_events
            .iter()
            .map(|(&(g, e), &n)| (g, e, n))
            .collect()
    }

    /// Why the library is not up, when it is not.
    pub fn backend_error(&self) -> Option<String> {
        if let Some(why) = &self.released {
            return Some(format!("released on request ({why})"));
        }
        if self.failed_cycles > 0 {
            return Some(format!(
                "every GPU failed in the last {} cycle(s) ({}); re-opened after {REOPEN_AFTER_FAILED_CYCLES}",
                self.failed_cycles,
                self.last_failure.as_deref().unwrap_or("no reason given")
            ));
        }
        self.open_error.clone()
    }

    /// Times the library was closed and opened again because every GPU failed.
    pub fn reopens(&self) -> u64 {
        self.reopens
    }

    pub fn driver(&self) -> Option<&str> {
        self.driver.as_deref()
    }

    pub fn samples_total(&self) -> u64 {
        self.samples_total
    }

    /// (gpu, field, kind) -> count of failed reads.
    pub fn errors(&self) -> Vec<(u32, &'static str, &'static str, u64)> {
        self.errors
            .iter()
            .map(|(&(g, f, k), &n)| (g, f, k, n))
            .collect()
    }

    /// What the backend is, for log lines ("NVML").
    pub fn library(&self) -> &'static str {
        self.about.library
    }

    /// The scenario name when the node is simulated.
    pub fn simulated(&self) -> Option<&str> {
        self.about.simulated.as_deref()
    }
}

/// The last energy measurement of each physical GPU (by its UUID) among `slots`: its counter
/// (a MIG instance's share turned back into the parent's counter, never above it), when that was
/// read, and the slot's `last_read`; the newest where several units of one GPU have one.
fn physical_baselines(slots: &[GpuSlot]) -> BTreeMap<String, (u64, Instant, Option<Instant>)> {
    let mut out: BTreeMap<String, (u64, Instant, Option<Instant>)> = BTreeMap::new();
    for slot in slots {
        let Some((counter, at)) = slot.snap.totals.energy.baseline() else {
            continue;
        };
        let (gpu, raw) = match &slot.snap.info.mig {
            Some(m) => (m.parent_uuid.clone(), m.parent_value_at_most(counter)),
            None => (slot.snap.info.uuid.clone(), counter),
        };
        if out.get(&gpu).is_none_or(|(_, t, _)| *t < at) {
            out.insert(gpu, (raw, at, slot.last_read));
        }
    }
    out
}

/// Starts `slot`'s energy and time from its physical GPU's last measurement, where there is one:
/// the GPU's counter (a MIG instance: its share of it) as the baseline of its first delta.
fn continue_from(slot: &mut GpuSlot, physical: &BTreeMap<String, (u64, Instant, Option<Instant>)>) {
    let info = &slot.snap.info;
    let gpu = info.mig.as_ref().map_or(&info.uuid, |m| &m.parent_uuid);
    let Some((raw, at, last_read)) = physical.get(gpu) else {
        return;
    };
    let counter = info.mig.as_ref().map_or(*raw, |m| m.share_of(*raw));
    slot.snap.totals.energy.rebase(counter, *at);
    slot.last_read = *last_read;
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.close();
    }
}

/// Tells each reader to stop and joins those not stuck in a call (a stuck one ends by itself
/// once its call returns, dropping its share of the backend).
fn close_readers(readers: BTreeMap<u32, Reader>) {
    for (_, mut r) in readers {
        r.requests.take();
        if r.asked.is_none() {
            if let Some(t) = r.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Why a reading holds nothing at all, when every field it tried failed (NVML answering
/// `UNKNOWN`, `UNINITIALIZED` or `LIB_RM_VERSION_MISMATCH` to each call): such a GPU is down,
/// not up with no values. The first failure's message.
fn every_field_failed(r: &Reading) -> Option<String> {
    let first = r.field_errors.iter().find_map(|(f, e)| match e {
        FieldError::Failed(msg) => Some(format!("{f}: {msg}")),
        FieldError::NotSupported => None,
    })?;
    let bare = Reading {
        field_errors: Vec::new(),
        ..r.clone()
    };
    (bare == Reading::default()).then_some(first)
}

fn unsupported_note(field: Field) -> &'static str {
    match field {
        Field::Energy => "energy is integrated from power x time instead",
        _ => "it is left out of the metrics",
    }
}
#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use gpucost_core::clock::ManualClock;

    use super::*;
    use crate::sample::scripted::{Script, Scripted};

    /// How long a cycle waits for a read here. Real time (a stuck call holds a real thread):
    /// the scripted reads that answer do so in microseconds, and a test pays this once per read
    /// that it makes hang.
    const READ_TIMEOUT: Duration = Duration::from_millis(300);

    fn sampler(script: Script) -> (Sampler, Scripted) {
        let clock = Arc::new(ManualClock::new(1000.0));
        let gpus = Scripted::new(script, clock.clone());
        let cadence = Cadence {
            interval: Duration::from_secs(1),
            process_interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(10),
            read_timeout: READ_TIMEOUT,
        };
        (Sampler::new(Box::new(gpus.clone()), cadence, clock), gpus)
    }

    fn energies(s: &Sampler) -> Vec<f64> {
        s.gpus().map(|g| g.totals.energy.total_j()).collect()
    }

    /// Issue 18, item 6: the clock of an interval is what its two readings say of it.
    #[test]
    fn issue_18_an_intervals_clock_is_the_mean_of_its_ends() {
        assert_eq!(interval_clock_mhz(Some(1500), Some(1980)), Some(1740.0));
        assert_eq!(interval_clock_mhz(None, Some(1980)), Some(1980.0));
        // The end's clock unknown: no clock, rather than one from before the interval.
        assert_eq!(interval_clock_mhz(Some(1500), None), None);
    }

    /// Issue 15: an Xid of a GPU in MIG mode (reported for the physical GPU) is counted once, by
    /// its first instance.
    #[test]
    fn issue_15_an_xid_of_a_gpu_in_mig_mode_is_kept() {
        use gpucost_core::reading::MigSlice;
        let mut script = Script::h100s(1);
        script.boards = vec![script.gpus[0].clone()];
        let mut units = Vec::new();
        for gi in [1, 2] {
            let mut g = script.gpus[0].clone();
            g.info = GpuStatic {
                index: 1000 + gi,
                uuid: format!("MIG-{gi}"),
                model: g.info.model.clone(),
                mig: Some(MigSlice {
                    parent_index: 0,
                    parent_uuid: "GPU-0".into(),
                    gpu_instance_id: gi,
                    profile: "3g.40gb".into(),
                    slices: 3,
                    parent_slices: 7,
                }),
                compute_capability: None,
                sm_count: None,
            };
            units.push(g);
        }
        script.gpus = units;
        let (mut s, gpus) = sampler(script);
        s.cycle();
        gpus.script().xids.push((0, 79));
        s.cycle();
        let xids: Vec<u64> = s
            .gpus()
            .map(|g| g.totals.events.xids.values().sum())
            .collect();
        assert_eq!(xids, [1, 0]);
    }

    /// Issue 15: a GPU switched into MIG mode and back while the agent runs. Each switch makes
    /// the library open again; the units that appear continue from the GPU's last reading, so
    /// the energy of every interval is counted once: the units' energy together is the board's
    /// counter, and their time, each weighted by its share of the GPU, is the time that passed.
    #[test]
    fn issue_15_energy_is_neither_lost_nor_counted_twice_across_mig_switches() {
        use gpucost_core::reading::MigSlice;
        let mut script = Script::h100s(1);
        script.gpus[0].power_w = 700.0;
        script.gpus[0].processes = vec![];
        let (mut s, gpus) = sampler(script);
        let template = gpus.script().gpus[0].clone();
        let instance = |gi: u32, slices: u32| {
            let mut g = template.clone();
            g.info = GpuStatic {
                index: 1000 + gi,
                uuid: format!("MIG-{gi}"),
                model: g.info.model.clone(),
                mig: Some(MigSlice {
                    parent_index: 0,
                    parent_uuid: "GPU-0".into(),
                    gpu_instance_id: gi,
                    profile: format!("{slices}g.40gb"),
                    slices,
                    parent_slices: 7,
                }),
                compute_capability: None,
                sm_count: None,
            };
            g
        };
        let (mut energy, mut share_seconds) = (0.0, 0.0);
        let mut cycle = |s: &mut Sampler| {
            let c = s.cycle();
            for t in &c.ticks {
                energy += t.energy_j;
                share_seconds += t.dt * t.slice_share;
            }
            c.ticks.iter().map(|t| t.index).collect::<Vec<_>>()
        };
        let board = |gpus: &Scripted| {
            let s = gpus.script();
            s.gpus
                .iter()
                .chain(&s.boards)
                .find(|g| g.info.uuid == "GPU-0")
                .unwrap()
                .energy_mj
        };
        let start = board(&gpus);
        assert_eq!(cycle(&mut s), [0]);
        gpus.advance(Duration::from_secs(1));
        assert_eq!(cycle(&mut s), [0]);
        // The GPU goes into MIG mode (3g + 4g): the agent notices at its next read of it...
        gpus.advance(Duration::from_secs(1));
        gpus.script().layout_changed = true;
        assert_eq!(cycle(&mut s), [0]);
        {
            let mut sc = gpus.script();
            let whole = sc.gpus.remove(0);
            sc.boards.push(whole);
            sc.layout_changed = false;
        }
        let (a, b) = (instance(1, 3), instance(2, 4));
        gpus.script().gpus = vec![a, b];
        // ... and lists its instances at the next cycle, which continue from its last reading.
        for _ in 0..3 {
            gpus.advance(Duration::from_secs(1));
            assert_eq!(cycle(&mut s), [1001, 1002]);
        }
        // Out of MIG mode again.
        gpus.advance(Duration::from_secs(1));
        gpus.script().layout_changed = true;
        assert_eq!(cycle(&mut s), [1001, 1002]);
        {
            let mut sc = gpus.script();
            let whole = sc.boards.remove(0);
            sc.gpus = vec![whole];
            sc.layout_changed = false;
        }
        for _ in 0..2 {
            gpus.advance(Duration::from_secs(1));
            assert_eq!(cycle(&mut s), [0]);
        }
        // 8 s at 700 W, every interval counted once (within the mJ the shares round away).
        let counted = (board(&gpus) - start) as f64 / 1000.0;
        assert_eq!(counted, 5600.0);
        assert!((energy - counted).abs() < 0.05, "{energy} J of {counted} J");
        assert!((share_seconds - 8.0).abs() < 1e-9, "{share_seconds} s");
    }

    #[test]
    fn process_lists_are_read_on_their_own_slower_cadence() {
        let (mut s, gpus) = sampler(Script::h100s(1));
        let mut read = Vec::new();
        for _ in 0..11 {
            read.push(s.cycle().processes_read);
            gpus.advance(Duration::from_secs(1));
        }
        assert_eq!(
            read,
            [true, false, false, false, false, true, false, false, false, false, true]
        );
    }

    #[test]
    fn each_interval_is_the_time_since_the_last_reading_with_its_energy() {
        let (mut s, gpus) = sampler(Script::h100s(2));
        let first = s.cycle();
        assert!(first.ticks.iter().all(|t| t.dt == 0.0 && t.energy_j == 0.0));
        gpus.script().gpus[1].power_w = 400.0;
        gpus.advance(Duration::from_millis(2500));
        let c = s.cycle();
        let by_gpu: Vec<(f64, f64)> = c.ticks.iter().map(|t| (t.dt, t.energy_j)).collect();
        assert_eq!(by_gpu, [(2.5, 250.0), (2.5, 1000.0)]);
        assert_eq!(s.samples_total(), 2);
    }

    /// Issue 14, item 4: a read that never returns (a wedged GPU) holds back neither the other
    /// GPUs' samples nor the cycle; the stuck GPU is down with its totals kept, is not asked
    /// again while its call is stuck, and is read again once the call returns.
    #[test]
    fn issue_14_a_read_that_never_returns_holds_back_neither_the_other_gpus_nor_the_cycle() {
        let (mut s, gpus) = sampler(Script::h100s(2));
        s.cycle();
        gpus.advance(Duration::from_secs(1));
        s.cycle();
        let before = energies(&s);
        assert_eq!(before, [100.0, 100.0]);
        gpus.hang(0, true);
        gpus.script().gpus[1].power_w = 300.0;
        for second in 1..=5 {
            gpus.advance(Duration::from_secs(1));
            let started = std::time::Instant::now();
            let c = s.cycle();
            // Only the cycle whose deadline the read misses waits for it.
            if second > 1 {
                assert!(started.elapsed() < READ_TIMEOUT, "cycle {second} waited");
            }
            assert_eq!(c.ticks.len(), 1, "GPU 1 keeps its samples");
            assert_eq!((c.ticks[0].index, c.ticks[0].dt), (1, 1.0));
            assert_eq!(c.ticks[0].energy_j, 300.0);
        }
        let g0 = s.gpus().next().unwrap();
        assert!(!g0.up && g0.reading.is_none());
        assert!(g0
            .health
            .down_reason
            .as_deref()
            .unwrap()
            .contains("has not returned"));
        assert_eq!(g0.totals.energy.total_j(), before[0], "totals kept");
        assert_eq!(g0.health.unmeasured_s, 5.0);
        assert_eq!(energies(&s)[1], before[1] + 1500.0);
        assert_eq!(
            gpus.script().gpus[0].reads,
            3,
            "not asked again while stuck"
        );
        let timeouts: Vec<_> = s
            .errors()
            .into_iter()
            .filter(|e| e.2 == "timeout")
            .collect();
        assert_eq!(
            timeouts,
            [(0, "all", "timeout", 1)],
            "counted once per read"
        );
        assert!(s.backend_up(), "one stuck GPU is not a broken library");

        // The call returns: its answer is taken at the next cycle as a reading of the moment it
        // returned (here: the clock stands still until it is in), and the GPU is read every
        // cycle again. The energy it used while away is in its counter, judged against the time
        // since the last good reading, and kept (issue 14, item 6).
        gpus.hang(0, false);
        let waiting = std::time::Instant::now();
        while !s.cycle().ticks.iter().any(|t| t.index == 0) {
            assert!(waiting.elapsed() < Duration::from_secs(5), "no answer");
        }
        let g0 = s.gpus().next().unwrap();
        assert!(g0.up && g0.health.down_reason.is_none());
        // 100 W for the 5 s it was away.
        assert_eq!(g0.totals.energy.total_j(), before[0] + 500.0);
        gpus.advance(Duration::from_secs(1));
        let c = s.cycle();
        assert_eq!((c.ticks[0].index, c.ticks[0].dt), (0, 1.0));
        assert_eq!(gpus.script().gpus[0].reads, 4);
        assert_eq!(energies(&s)[0], before[0] + 600.0);
        assert_eq!(s.gpus().next().unwrap().health.unmeasured_s, 5.0);
    }

    /// Issue 14, item 4: a GPU on which every field fails is down, not up with no values.
    #[test]
    fn issue_14_a_gpu_whose_every_field_fails_is_down() {
        let (mut s, gpus) = sampler(Script::h100s(2));
        s.cycle();
        gpus.script().gpus[0].fields_fail = Some("Unknown Error".into());
        gpus.advance(Duration::from_secs(1));
        let c = s.cycle();
        assert_eq!(c.ticks.iter().map(|t| t.index).collect::<Vec<_>>(), [1]);
        let g0 = s.gpus().next().unwrap();
        assert!(!g0.up);
        assert!(
            g0.health
                .down_reason
                .as_deref()
                .unwrap()
                .contains("every field failed"),
            "{:?}",
            g0.health.down_reason
        );
        assert!(s.errors().contains(&(0, "all", "failed", 1)));
        assert!(s.backend_up(), "the other GPU answers");
        gpus.script().gpus[0].fields_fail = None;
        gpus.advance(Duration::from_secs(1));
        s.cycle();
        assert!(s.gpus().next().unwrap().up);
    }

    /// Issue 14, item 5: a library on which every GPU fails (a driver upgraded under it) is
    /// down, and is closed and opened again after REOPEN_AFTER_FAILED_CYCLES cycles; later
    /// attempts wait the retry interval. The totals continue.
    #[test]
    fn issue_14_nvml_is_opened_again_when_every_gpu_fails_for_some_cycles() {
        let (mut s, gpus) = sampler(Script::h100s(2));
        s.cycle();
        gpus.advance(Duration::from_secs(1));
        s.cycle();
        let before = energies(&s);
        gpus.upgrade_driver();
        for n in 1..REOPEN_AFTER_FAILED_CYCLES {
            gpus.advance(Duration::from_secs(1));
            assert!(s.cycle().ticks.is_empty());
            assert!(!s.backend_up(), "cycle {n}: every GPU fails");
            assert!(s.backend_error().unwrap().contains("version mismatch"));
            assert_eq!(gpus.script().opens, 1);
        }
        gpus.advance(Duration::from_secs(1));
        s.cycle();
        {
            let sc = gpus.script();
            assert_eq!((sc.opens, sc.open_handles), (1, 0), "closed");
        }
        assert_eq!(s.reopens(), 1);
        gpus.advance(Duration::from_secs(1));
        let c = s.cycle();
        {
            let sc = gpus.script();
            assert_eq!(
                (sc.opens, sc.open_handles),
                (2, 1),
                "opened again at the next cycle"
            );
        }
        assert_eq!(c.ticks.len(), 2);
        assert!(s.backend_up() && s.backend_error().is_none());
        let after = energies(&s);
        assert!(
            after[0] > before[0] && after[1] > before[1],
            "{after:?} {before:?}"
        );

        // The new library fails as well: the next attempt waits the retry interval (10 s).
        gpus.upgrade_driver();
        for _ in 0..12 {
            gpus.advance(Duration::from_secs(1));
            s.cycle();
        }
        assert_eq!(gpus.script().opens, 3);
        assert_eq!(s.reopens(), 2);
    }

    /// All GPUs lost is a per-GPU matter (a re-open brings none back): no re-open.
    #[test]
    fn every_gpu_lost_is_no_reason_to_reopen() {
        let (mut s, gpus) = sampler(Script::h100s(2));
        s.cycle();
        for g in &mut gpus.script().gpus {
            g.lost = true;
        }
        for _ in 0..5 {
            gpus.advance(Duration::from_secs(1));
            s.cycle();
        }
        assert_eq!(gpus.script().opens, 1);
        assert!(s.backend_up());
    }

    /// Issue 14, item 13: released, the library is closed (no handle held) and nothing is read
    /// or measured; taken back, it is opened again and the totals continue from where they were.
    #[test]
    fn issue_14_a_released_library_is_closed_and_nothing_is_measured_until_it_is_taken_back() {
        let (mut s, gpus) = sampler(Script::h100s(2));
        s.cycle();
        gpus.advance(Duration::from_secs(1));
        s.cycle();
        let before = energies(&s);
        let r = s.release("SIGUSR1");
        assert_eq!(
            r,
            Released {
                stuck: vec![],
                was_open: true
            }
        );
        assert_eq!(gpus.script().open_handles, 0);
        let reads = gpus.script().gpus[0].reads;
        for _ in 0..10 {
            gpus.advance(Duration::from_secs(1));
            let c = s.cycle();
            assert!(c.ticks.is_empty() && !c.processes_read);
        }
        assert_eq!(gpus.script().opens, 1, "not opened while released");
        assert_eq!(gpus.script().gpus[0].reads, reads);
        assert!(!s.backend_up());
        assert!(s
            .backend_error()
            .unwrap()
            .contains("released on request (SIGUSR1)"));
        for g in s.gpus() {
            assert!(!g.up);
            assert_eq!(g.health.unmeasured_s, 10.0);
        }
        assert_eq!(energies(&s), before, "nothing measured while released");

        assert!(s.resume());
        assert!(!s.resume(), "already taken back");
        gpus.advance(Duration::from_secs(1));
        let c = s.cycle();
        assert_eq!(gpus.script().open_handles, 1);
        assert_eq!(c.ticks.len(), 2);
        assert!(c.ticks.iter().all(|t| t.dt == 1.0), "{:?}", c.ticks);
        assert!(s.backend_up());
        // Nothing was read while released, but the energy the GPUs used meanwhile is in their
        // counters (the driver was not reloaded) and is kept when sampling resumes, like a GPU
        // outage's (issue 14, item 6): 100 W over the 11 s since the last reading. The time
        // itself stays unmeasured.
        let after = energies(&s);
        assert_eq!(after, [before[0] + 1100.0, before[1] + 1100.0]);
        assert!(s.gpus().all(|g| g.up && g.health.unmeasured_s == 10.0));
    }

    /// A read stuck in a call keeps the library loaded after a release, and says which GPU.
    #[test]
    fn a_release_with_a_stuck_read_says_which_gpu_keeps_the_library_loaded() {
        let (mut s, gpus) = sampler(Script::h100s(2));
        s.cycle();
        gpus.hang(1, true);
        gpus.advance(Duration::from_secs(1));
        s.cycle();
        let r = s.release("test");
        assert_eq!(r.stuck, [1]);
        assert_eq!(gpus.script().open_handles, 1, "held by the stuck reader");
        gpus.hang(1, false);
        let start = std::time::Instant::now();
        while gpus.script().open_handles > 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "never closed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Issue 14, item 4: opening the library (nvmlInit, the device list) can block on a wedged
    /// GPU like a read: the cycle goes on without it, waits for it once, and takes it once open.
    #[test]
    fn issue_14_an_open_that_never_returns_does_not_hold_the_cycle() {
        let (mut s, gpus) = sampler(Script::h100s(2));
        gpus.hang_open(true);
        s.cycle();
        assert!(!s.backend_up());
        let e = s.backend_error().unwrap();
        assert!(e.contains("opening it has not returned"), "{e}");
        for _ in 0..3 {
            gpus.advance(Duration::from_secs(1));
            let started = std::time::Instant::now();
            assert!(s.cycle().ticks.is_empty());
            assert!(started.elapsed() < READ_TIMEOUT, "waited again");
        }
        assert!(s.backend_error().unwrap().contains("for 3.0 s"));
        gpus.hang_open(false);
        let waiting = std::time::Instant::now();
        while s.cycle().ticks.len() < 2 {
            assert!(waiting.elapsed() < Duration::from_secs(5), "never opened");
        }
        assert!(s.backend_up());
        assert_eq!(gpus.script().opens, 1);
    }
}
