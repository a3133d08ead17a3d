//! The NVML backend: the real driver library through `nvml-wrapper`.
//!
//! Opening loads `libnvidia-ml.so.1` (or the configured path) with dlopen, so a node without the
//! driver gets an error here, never a crash. Each field is read on its own: a GPU that does not
//! support one field still reports the others.
//!
//! Reads of different GPUs run at once, each on its GPU's reader thread (see the sampler): what
//! a read keeps between calls (the GPM sample, the newest process-utilization timestamp) is
//! behind a lock of that GPU's own, so a call stuck on one GPU holds no other. Dropping the
//! backend closes every NVML handle it opened, the Xid listener's too, so a closed backend lets
//! a driver upgrade, a GPU reset or a MIG change go ahead and a new one loads the library anew.

use std::ffi::OsString;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nvml_wrapper::enum_wrappers::device::Clock;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

mod fields;
mod gpm;
mod mig;
mod processes;
mod xid;

use super::Backend;
use gpm::GpmState;
use gpucost_core::reading::{
    DriverEvent, Field, FieldError, GpuStatic, MigSlice, Reading, SampleError, Source,
};
use mig::Unit;

/// The library NVML's own loader looks for.
pub const DEFAULT_LIB: &str = "libnvidia-ml.so.1";

/// How long closing the backend waits for the Xid listener to let go of its NVML handle (its
/// event wait times out every 500 ms).
const LISTENER_STOP_WAIT: Duration = Duration::from_secs(2);

pub struct NvmlBackend {
    nvml: Nvml,
    driver: Option<String>,
    /// Xids and other driver events from the listener thread, by GPU index.
    heard: Option<Mutex<Receiver<xid::Heard>>>,
    /// Driver events taken from `heard` while looking for Xids, until `take_driver_events`.
    driver_events: Mutex<Vec<(u32, DriverEvent)>>,
    /// The listener's stop flag and health.
    listener: Arc<xid::Shared>,
    /// Disconnected when the listener thread has ended (and closed its NVML handle).
    listener_done: Option<Mutex<Receiver<()>>>,
    /// What each GPU's reads keep between calls, each behind its GPU's own lock. The map's lock
    /// is held only to find or add an entry, never during an NVML call.
    memo: Mutex<BTreeMap<u32, Arc<Mutex<GpuMemo>>>>,
    /// What each unit index of `gpus` is: a whole GPU or a MIG instance (`mig.rs`).
    units: BTreeMap<u32, Unit>,
    /// Set when a GPU switched MIG mode or its instances changed since `gpus`.
    layout_changed: AtomicBool,
    /// GPUs (NVML indices) in MIG mode with no GPU instance when listed: listed whole, and
    /// listed anew once an instance appears (not at every check of their mode).
    mig_without_instances: std::collections::BTreeSet<u32>,
}

/// What a read keeps of its GPU for the next one.
#[derive(Default)]
struct GpuMemo {
    /// What the process readings keep between reads (the newest utilization sample seen, which
    /// calls the driver answers, how much room they needed): only this GPU's entry.
    processes: processes::ProcessState,
    gpm: GpmState,
    /// What the field reads remember between reads (`fields.rs`).
    fields: fields::FieldState,
    /// The enforced power limit and when it was read: a setting, not a reading, so it is read
    /// again only every [`STATIC_FACTS_EVERY`] (an operator's `nvidia-smi -pl` shows within it).
    power_limit: Option<(Instant, Option<u32>)>,
    /// Whether the GPU has MIG at all (`nvmlDeviceGetMigMode` answers): a GPU without it is
    /// not asked for its mode again.
    has_mig: Option<bool>,
}

/// How often facts that change only when someone changes a setting are read again.
const STATIC_FACTS_EVERY: Duration = Duration::from_secs(60);

impl NvmlBackend {
    /// GPU `index`'s memo, added on its first read.
    fn memo(&self, index: u32) -> Arc<Mutex<GpuMemo>> {
        self.memo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(index)
            .or_default()
            .clone()
    }
}

impl Drop for NvmlBackend {
    fn drop(&mut self) {
        self.listener.stop.store(true, Ordering::Relaxed);
        let memo = std::mem::take(self.memo.get_mut().unwrap_or_else(PoisonError::into_inner));
        for (_, m) in memo {
            // Nothing else holds it once the backend is dropped (readers hold the backend).
            if let Ok(m) = Arc::try_unwrap(m) {
                m.into_inner()
                    .unwrap_or_else(PoisonError::into_inner)
                    .gpm
                    .free(&self.nvml);
            }
        }
        // The listener's handle is closed too before the caller opens NVML again: a library
        // still initialised in the process is the old one after a driver upgrade.
        if let Some(done) = self.listener_done.take() {
            let done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
            if let Err(mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(LISTENER_STOP_WAIT) {
                tracing::warn!(
                    "the Xid listener has not stopped after {} s; its NVML handle closes when it does",
                    LISTENER_STOP_WAIT.as_secs()
                );
            }
        }
    }
}

/// Opens NVML from a library path (or the loader's default).
pub struct NvmlFactory {
    lib: Option<std::path::PathBuf>,
}

impl NvmlFactory {
    pub fn new(lib: Option<std::path::PathBuf>) -> Self {
        NvmlFactory { lib }
    }
}

impl super::BackendFactory for NvmlFactory {
    fn source(&self) -> Source {
        Source::Nvml
    }
    fn library(&self) -> &'static str {
        "NVML"
    }
    fn unavailable_hint(&self) -> String {
        let tried = self
            .lib
            .as_ref()
            .map_or_else(|| DEFAULT_LIB.to_string(), |p| p.display().to_string());
        format!(
            "tried {tried}; point --nvml-lib (or nvml.lib in the config) at libnvidia-ml.so.1 if \
             it lives elsewhere"
        )
    }
    fn open(&mut self) -> Result<Box<dyn Backend>, SampleError> {
        NvmlBackend::open(self.lib.as_deref()).map(|b| Box::new(b) as Box<dyn Backend>)
    }
}

impl NvmlBackend {
    /// Loads and initialises NVML from `lib` (a path, or a name the dynamic loader resolves).
    pub fn open(lib: Option<&std::path::Path>) -> Result<Self, SampleError> {
        let path: OsString = lib.map_or_else(|| DEFAULT_LIB.into(), |p| p.as_os_str().into());
        let nvml = Nvml::builder()
            .lib_path(&path)
            .init()
            .map_err(|e| SampleError::Unavailable(describe_open_error(&e)))?;
        let driver = nvml.sys_driver_version().ok();
        let listener = Arc::new(xid::Shared::default());
        let (tx, rx) = mpsc::channel();
        let shared = listener.clone();
        let listener_path = path.clone();
        let span = tracing::Span::current();
        let (done_tx, done) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gpucost-xid".into())
            .spawn(move || {
                let _e = span.enter();
                // Dropped when the thread ends: the sign that the listener's handle is closed.
                let _done = done_tx;
                xid::listen(&listener_path, &tx, &shared)
            })
            .map_err(|e| tracing::warn!("cannot start the Xid listener thread: {e}"))
            .ok();
        Ok(NvmlBackend {
            nvml,
            driver,
            heard: thread.as_ref().map(|_| Mutex::new(rx)),
            driver_events: Mutex::default(),
            listener,
            listener_done: thread.map(|_| Mutex::new(done)),
            memo: Mutex::default(),
            units: BTreeMap::new(),
            layout_changed: AtomicBool::new(false),
            mig_without_instances: Default::default(),
        })
    }
}

fn describe_open_error(e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(inner) => format!("cannot load the library: {inner}"),
        NvmlError::DriverNotLoaded => "the NVIDIA kernel driver is not loaded".to_string(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".to_string(),
        NvmlError::LibRmVersionMismatch => "the NVML library and the loaded NVIDIA kernel module \
            are different releases (a driver upgrade not finished: the new module loads on a \
            driver reload or reboot)"
            .to_string(),
        other => format!("NVML initialisation failed: {other}"),
    }
}

/// The GPU's CUDA compute capability, where NVML reports it.
fn compute_capability(d: &nvml_wrapper::Device<'_>) -> Option<(u32, u32)> {
    let c = d.cuda_compute_capability().ok()?;
    Some((u32::try_from(c.major).ok()?, u32::try_from(c.minor).ok()?))
}

/// A whole GPU's SMs: NVML has no call for them, but reports its CUDA cores (FP32 lanes), a
/// whole number of SMs of its architecture. `None` for an architecture without per-SM rates
/// here, or a count that does not divide.
fn sms(d: &nvml_wrapper::Device<'_>, cc: Option<(u32, u32)>) -> Option<u32> {
    let arch = gpucost_hw::Arch::from_compute_capability(cc?)?;
    arch.sms_of_cuda_cores(d.num_cores().ok()?)
}

/// Turns one field's result into a value, noting why it is missing. A lost GPU aborts the whole
/// reading: nothing else on it will answer.
fn field<T>(
    result: Result<T, NvmlError>,
    which: Field,
    errors: &mut Vec<(Field, FieldError)>,
) -> Result<Option<T>, SampleError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(NvmlError::GpuLost) => Err(SampleError::GpuLost(format!("while reading {which}"))),
        Err(NvmlError::NotSupported) => {
            errors.push((which, FieldError::NotSupported));
            Ok(None)
        }
        Err(e) => {
            errors.push((which, FieldError::Failed(e.to_string())));
            Ok(None)
        }
    }
}

impl Backend for NvmlBackend {
    fn source(&self) -> Source {
        Source::Nvml
    }

    fn driver_version(&self) -> Option<String> {
        self.driver.clone()
    }

    fn gpus(&mut self) -> Result<Vec<GpuStatic>, SampleError> {
        let count = self
            .nvml
            .device_count()
            .map_err(|e| SampleError::Failed(format!("cannot count GPUs: {e}")))?;
        let mut gpus = Vec::with_capacity(count as usize);
        self.units.clear();
        self.mig_without_instances.clear();
        self.layout_changed.store(false, Ordering::Relaxed);
        for index in 0..count {
            // A GPU that is already lost at start still gets a slot, so it is reported.
            let device = self.nvml.device_by_index(index);
            let (uuid, model) = match &device {
                Ok(d) => (
                    d.uuid().unwrap_or_else(|_| format!("unknown-{index}")),
                    d.name().unwrap_or_else(|_| "unknown".to_string()),
                ),
                Err(_) => (format!("unknown-{index}"), "unknown".to_string()),
            };
            let compute_capability = device.as_ref().ok().and_then(compute_capability);
            // A GPU in MIG mode is billed as its GPU instances (`mig.rs`).
            let instances = match &device {
                Ok(d) if mig::mig_on(d) == Some(true) => {
                    let found =
                        mig::instances(&self.nvml, index, &uuid, &model, compute_capability, d);
                    if found.is_empty() {
                        self.mig_without_instances.insert(index);
                    }
                    found
                }
                _ => Vec::new(),
            };
            if instances.is_empty() {
                self.units.insert(index, Unit::Whole { nvml_index: index });
                let sm_count = device
                    .as_ref()
                    .ok()
                    .and_then(|d| sms(d, compute_capability));
                gpus.push(GpuStatic {
                    index,
                    uuid,
                    model,
                    mig: None,
                    compute_capability,
                    sm_count,
                });
                continue;
            }
            for (info, unit) in instances {
                self.units.insert(info.index, unit);
                gpus.push(info);
            }
        }
        Ok(gpus)
    }

    fn take_xids(&self) -> Vec<(u32, u32)> {
        let Some(rx) = &self.heard else {
            return Vec::new();
        };
        let mut xids = Vec::new();
        let mut events = self
            .driver_events
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for heard in rx.lock().unwrap_or_else(PoisonError::into_inner).try_iter() {
            match heard {
                xid::Heard::Xid { gpu, xid } => xids.push((gpu, xid)),
                xid::Heard::Event { gpu, event } => events.push((gpu, event)),
            }
        }
        xids
    }

    /// The driver events `take_xids` found beside the Xids (the sampler calls it first).
    fn take_driver_events(&self) -> Vec<(u32, DriverEvent)> {
        std::mem::take(
            &mut *self
                .driver_events
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn xid_listener_up(&self) -> bool {
        self.listener.up.load(Ordering::Relaxed)
    }

    fn layout_changed(&self) -> bool {
        self.layout_changed.load(Ordering::Relaxed)
    }

    fn read(&self, index: u32, with_processes: bool) -> Result<Reading, SampleError> {
        match self.units.get(&index) {
            Some(Unit::Mig { position, slice }) => {
                self.read_mig(index, *position, slice, with_processes)
            }
            Some(Unit::Whole { nvml_index }) => self.read_whole(index, *nvml_index, with_processes),
            None => self.read_whole(index, index, with_processes),
        }
    }
}

impl NvmlBackend {
    /// Reads the whole GPU at NVML index `nvml_index`, billing unit `index`.
    fn read_whole(
        &self,
        index: u32,
        nvml_index: u32,
        with_processes: bool,
    ) -> Result<Reading, SampleError> {
        let d = match self.nvml.device_by_index(nvml_index) {
            Ok(d) => d,
            Err(NvmlError::GpuLost) => return Err(SampleError::GpuLost("no handle".into())),
            Err(e) => return Err(SampleError::Failed(format!("no handle: {e}"))),
        };
        let mut errs = Vec::new();
        let e = &mut errs;
        let memory = field(d.memory_info(), Field::Memory, e)?;
        let memo = self.memo(index);
        let mut memo = memo.lock().unwrap_or_else(PoisonError::into_inner);
        let memo = &mut *memo;
        // A failed read is tried again next cycle; a value or NOT_SUPPORTED is kept.
        let power_limit_mw = Self::power_limit(memo, &d, e)?;
        let st = &mut memo.fields;
        let values = fields::read_fields(&d)?;
        let (power_average_mw, power_instant_mw) = fields::read_power(&d, st, &values, e)?;
        let violation_ns = fields::read_violations(&d, st, &values)?;
        let mut r = Reading {
            energy_mj: field(d.total_energy_consumption(), Field::Energy, e)?,
            power_average_mw,
            power_instant_mw,
            power_limit_mw,
            utilization_pct: fields::read_utilization(&d, st, e)?,
            memory_used_bytes: memory.as_ref().map(|m| m.used),
            memory_total_bytes: memory.as_ref().map(|m| m.total),
            sm_clock_mhz: field(d.clock_info(Clock::SM), Field::SmClock, e)?,
            temperature_c: fields::read_temperature(&self.nvml, &d, st, e)?,
            clock_event_reasons: fields::read_clock_events(&self.nvml, &d, st, e)?,
            violation_ns,
            processes: None,
            pipes: None,
            field_errors: Vec::new(),
        };
        // GPM: a new sample each read; the metrics cover the time since the previous one.
        r.pipes = gpm::read_pipes(&self.nvml, &d, index, None, &mut memo.gpm, e)?;
        if with_processes {
            r.processes = processes::read_processes(
                self.nvml.lib(),
                &d,
                index,
                None,
                &mut memo.processes,
                e,
            )?;
            // A GPU switched into MIG mode is listed again as its instances (one in MIG mode
            // without any, once it has one).
            if memo.has_mig != Some(false) {
                let listed_in_mig = self.mig_without_instances.contains(&nvml_index);
                match mig::mig_on(&d) {
                    None => memo.has_mig = Some(false),
                    Some(on) => {
                        memo.has_mig = Some(true);
                        let has_instance = || {
                            let max = d.mig_device_count().unwrap_or(0);
                            (0..max).any(|k| d.mig_device_by_index(k).is_ok())
                        };
                        let changed = if listed_in_mig {
                            !on || has_instance()
                        } else {
                            on
                        };
                        if changed && on {
                            tracing::info!(
                                gpu = index,
                                "GPU {index} is now in MIG mode with GPU instances: they are \
                                 listed and billed from now on"
                            );
                        } else if changed {
                            tracing::info!(
                                gpu = index,
                                "GPU {index} is out of MIG mode: billed as a whole GPU again"
                            );
                        }
                        if changed {
                            self.layout_changed.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        r.field_errors = errs;
        Ok(r)
    }

    /// The power limit, read again only every [`STATIC_FACTS_EVERY`].
    fn power_limit(
        memo: &mut GpuMemo,
        d: &nvml_wrapper::Device<'_>,
        e: &mut Vec<(Field, FieldError)>,
    ) -> Result<Option<u32>, SampleError> {
        Ok(match memo.power_limit {
            Some((at, limit)) if at.elapsed() < STATIC_FACTS_EVERY => limit,
            _ => {
                let before = e.len();
                let limit = field(d.enforced_power_limit(), Field::PowerLimit, e)?;
                let failed = e[before..]
                    .iter()
                    .any(|(_, err)| matches!(err, FieldError::Failed(_)));
                if !failed {
                    memo.power_limit = Some((Instant::now(), limit));
                }
                limit
            }
        })
    }

    /// Whether the parent of `slice` has a MIG device at an index no unit was listed at (an
    /// instance created since). Asked by the parent's first unit only, on the process cadence.
    fn mig_instance_created(
        &self,
        parent: &nvml_wrapper::Device<'_>,
        position: u32,
        slice: &MigSlice,
    ) -> bool {
        let known: Vec<u32> = self
            .units
            .values()
            .filter_map(|u| match u {
                Unit::Mig { position, slice: s } if s.parent_index == slice.parent_index => {
                    Some(*position)
                }
                _ => None,
            })
            .collect();
        if known.iter().min() != Some(&position) {
            return false;
        }
        (0..slice.parent_slices)
            .filter(|p| !known.contains(p))
            .any(|p| parent.mig_device_by_index(p).is_ok())
    }

    /// Reads MIG instance `slice`, billing unit `index`, the MIG device at `position` under
    /// its parent (`mig.rs` says what comes from where).
    fn read_mig(
        &self,
        index: u32,
        position: u32,
        slice: &MigSlice,
        with_processes: bool,
    ) -> Result<Reading, SampleError> {
        let gi = slice.gpu_instance_id;
        let parent = match self.nvml.device_by_index(slice.parent_index) {
            Ok(d) => d,
            Err(NvmlError::GpuLost) => return Err(SampleError::GpuLost("no handle".into())),
            Err(e) => return Err(SampleError::Failed(format!("no handle: {e}"))),
        };
        let gone = |why: String| {
            self.layout_changed.store(true, Ordering::Relaxed);
            tracing::info!(
                gpu = index,
                "GPU {} instance {gi} ({}) is gone ({why}); the GPU's units are listed again",
                slice.parent_index,
                slice.profile
            );
            SampleError::Failed(format!("MIG instance {gi} is gone: {why}"))
        };
        let m = match parent.mig_device_by_index(position) {
            Ok(m) => m,
            Err(NvmlError::GpuLost) => return Err(SampleError::GpuLost("no MIG handle".into())),
            Err(e) => return Err(gone(e.to_string())),
        };
        if with_processes {
            // Another instance at this index (re-partitioned), or none: list again.
            match mig::gpu_instance_id(&self.nvml, &m) {
                Ok(id) if id == gi => {}
                Ok(id) => return Err(gone(format!("GPU instance {id} is in its place"))),
                Err(NvmlError::GpuLost) => {
                    return Err(SampleError::GpuLost(
                        "while reading its GPU instance".into(),
                    ))
                }
                Err(e) => return Err(gone(e.to_string())),
            }
            if self.mig_instance_created(&parent, position, slice) {
                tracing::info!(
                    gpu = index,
                    "GPU {}: a GPU instance was created; the GPU's units are listed again",
                    slice.parent_index
                );
                self.layout_changed.store(true, Ordering::Relaxed);
            }
        }
        let mut errs = Vec::new();
        let e = &mut errs;
        let memory = field(m.memory_info(), Field::Memory, e)?;
        let memo = self.memo(index);
        let mut memo = memo.lock().unwrap_or_else(PoisonError::into_inner);
        let memo = &mut *memo;
        let share_mw = |mw: u32| slice.share_of(u64::from(mw)) as u32;
        let power_limit_mw = Self::power_limit(memo, &parent, e)?.map(share_mw);
        let st = &mut memo.fields;
        let values = fields::read_fields(&parent)?;
        let (power_average_mw, power_instant_mw) = fields::read_power(&parent, st, &values, e)?;
        let violation_ns = fields::read_violations(&parent, st, &values)?;
        let energy_mj = field(parent.total_energy_consumption(), Field::Energy, e)?;
        // Not a failure: NVML does not report it on MIG (nvml.h:7075); said once.
        e.push((Field::Utilization, FieldError::NotSupported));
        let mut r = Reading {
            energy_mj: energy_mj.map(|mj| slice.share_of(mj)),
            power_average_mw: power_average_mw.map(share_mw),
            power_instant_mw: power_instant_mw.map(share_mw),
            power_limit_mw,
            utilization_pct: None,
            memory_used_bytes: memory.as_ref().map(|m| m.used),
            memory_total_bytes: memory.as_ref().map(|m| m.total),
            sm_clock_mhz: field(parent.clock_info(Clock::SM), Field::SmClock, e)?,
            temperature_c: fields::read_temperature(&self.nvml, &parent, st, e)?,
            clock_event_reasons: fields::read_clock_events(&self.nvml, &parent, st, e)?,
            violation_ns,
            processes: None,
            pipes: None,
            field_errors: Vec::new(),
        };
        r.pipes = gpm::read_pipes(&self.nvml, &parent, index, Some(gi), &mut memo.gpm, e)?;
        if with_processes {
            r.processes = processes::read_processes(
                self.nvml.lib(),
                &parent,
                index,
                Some(gi),
                &mut memo.processes,
                e,
            )?;
        }
        r.field_errors = errs;
        Ok(r)
    }
}
