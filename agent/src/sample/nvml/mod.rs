//! The NVML backend: the real driver library through `nvml-wrapper`.
//!
//! Opening loads `libnvidia-ml.so.1` (or the configured path) with dlopen, so a node without the
//! driver gets an error here, never a crash. Each field is read on its own: a GPU that does not
//! support one field still reports the others.

use std::ffi::OsString;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;

use nvml_wrapper::enum_wrappers::device::Clock;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

mod fields;
mod gpm;
mod processes;
mod xid;

use super::Backend;
use gpm::GpmState;
use gpucost_core::reading::{Field, FieldError, GpuStatic, Reading, SampleError, Source};

/// The library NVML's own loader looks for.
pub const DEFAULT_LIB: &str = "libnvidia-ml.so.1";

pub struct NvmlBackend {
    nvml: Nvml,
    driver: Option<String>,
    /// Xid events from the listener thread, by GPU UUID, and the UUID of each index.
    xids: Option<Receiver<(String, u32)>>,
    /// GPU UUID -> index, to place the listener's events.
    indices: BTreeMap<String, u32>,
    stop_listener: Arc<AtomicBool>,
    /// Per GPU, the newest per-process utilization sample seen (NVML timestamps, microseconds),
    /// so each read asks only for samples since then.
    last_util_sample: BTreeMap<u32, u64>,
    gpm: BTreeMap<u32, GpmState>,
    /// Per GPU, what the field reads remember between reads (`fields.rs`).
    fields: BTreeMap<u32, fields::FieldState>,
}

impl Drop for NvmlBackend {
    fn drop(&mut self) {
        self.stop_listener.store(true, Ordering::Relaxed);
        for (_, state) in std::mem::take(&mut self.gpm) {
            state.free(&self.nvml);
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
        let stop_listener = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let stop = stop_listener.clone();
        let listener_path = path.clone();
        let span = tracing::Span::current();
        let xids = std::thread::Builder::new()
            .name("gpucost-xid".into())
            .spawn(move || {
                let _e = span.enter();
                xid::listen_for_xids(&listener_path, &tx, &stop)
            })
            .map_err(|e| tracing::warn!("cannot start the Xid listener thread: {e}"))
            .ok()
            .map(|_| rx);
        Ok(NvmlBackend {
            nvml,
            driver,
            xids,
            indices: BTreeMap::new(),
            stop_listener,
            last_util_sample: Default::default(),
            gpm: Default::default(),
            fields: Default::default(),
        })
    }
}

fn describe_open_error(e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(inner) => format!("cannot load the library: {inner}"),
        NvmlError::DriverNotLoaded => "the NVIDIA kernel driver is not loaded".to_string(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".to_string(),
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
            self.indices.insert(uuid.clone(), index);
            gpus.push(GpuStatic { index, uuid, model });
        }
        Ok(gpus)
    }

    fn take_xids(&mut self) -> Vec<(u32, u32)> {
        let Some(rx) = &self.xids else {
            return Vec::new();
        };
        rx.try_iter()
            .filter_map(|(uuid, xid)| self.indices.get(&uuid).map(|i| (*i, xid)))
            .collect()
    }

    fn read(&mut self, index: u32, with_processes: bool) -> Result<Reading, SampleError> {
        let d = match self.nvml.device_by_index(index) {
            Ok(d) => d,
            Err(NvmlError::GpuLost) => return Err(SampleError::GpuLost("no handle".into())),
            Err(e) => return Err(SampleError::Failed(format!("no handle: {e}"))),
        };
        let mut errs = Vec::new();
        let e = &mut errs;
        let memory = field(d.memory_info(), Field::Memory, e)?;
        let st = self.fields.entry(index).or_default();
        let values = fields::read_fields(&d)?;
        let (power_average_mw, power_instant_mw) = fields::read_power(&d, st, &values, e)?;
        let violation_ns = fields::read_violations(&d, st, &values)?;
        let mut r = Reading {
            energy_mj: field(d.total_energy_consumption(), Field::Energy, e)?,
            power_average_mw,
            power_instant_mw,
            power_limit_mw: field(d.enforced_power_limit(), Field::PowerLimit, e)?,
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
        let gpm = self.gpm.entry(index).or_default();
        r.pipes = gpm::read_pipes(&self.nvml, &d, index, gpm, e)?;
        if with_processes {
            r.processes = processes::read_processes(&d, index, &mut self.last_util_sample, e)?;
        }
        r.field_errors = errs;
        Ok(r)
    }
}
