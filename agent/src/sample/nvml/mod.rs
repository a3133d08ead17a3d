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
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nvml_wrapper::enum_wrappers::device::Clock;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

mod fields;
mod gpm;
mod processes;
mod xid;

use super::Backend;
use gpm::GpmState;
use gpucost_core::reading::{
    DriverEvent, Field, FieldError, GpuStatic, Reading, SampleError, Source,
};

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
            gpus.push(GpuStatic {
                index,
                uuid,
                model,
                mig: None,
            });
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

    fn read(&self, index: u32, with_processes: bool) -> Result<Reading, SampleError> {
        let d = match self.nvml.device_by_index(index) {
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
        let power_limit_mw = match memo.power_limit {
            Some((at, limit)) if at.elapsed() < STATIC_FACTS_EVERY => limit,
            _ => {
                let before = e.len();
                let limit = field(d.enforced_power_limit(), Field::PowerLimit, e)?;
                // A failed read is tried again next cycle; a value or NOT_SUPPORTED is kept.
                let failed = e[before..]
                    .iter()
                    .any(|(_, err)| matches!(err, FieldError::Failed(_)));
                if !failed {
                    memo.power_limit = Some((Instant::now(), limit));
                }
                limit
            }
        };
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
        r.pipes = gpm::read_pipes(&self.nvml, &d, index, &mut memo.gpm, e)?;
        if with_processes {
            r.processes =
                processes::read_processes(self.nvml.lib(), &d, index, &mut memo.processes, e)?;
        }
        r.field_errors = errs;
        Ok(r)
    }
}
