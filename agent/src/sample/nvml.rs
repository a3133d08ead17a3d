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
use std::time::{Duration, Instant};

use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::gpm_metrics_get;
use nvml_wrapper::{GpmSample, Nvml};
use nvml_wrapper_sys::bindings::nvmlGpmSample_t;

use super::Backend;
use gpucost_core::reading::{
    Field, FieldError, GpuStatic, Pipes, ProcessUse, Reading, SampleError, Source,
};

/// GPM samples must be at least this far apart (NVML's rule) to give a metric.
const GPM_MIN_GAP: Duration = Duration::from_millis(100);

/// The GPM metrics read each interval, in the order [`pipes_from`] expects.
const GPM_METRICS: [GpmMetricId; 10] = [
    GpmMetricId::SmUtil,
    GpmMetricId::SmOccupancy,
    GpmMetricId::AnyTensorUtil,
    GpmMetricId::HmmaTensorUtil,
    GpmMetricId::ImmaTensorUtil,
    GpmMetricId::DfmaTensorUtil,
    GpmMetricId::Fp16Util,
    GpmMetricId::Fp32Util,
    GpmMetricId::Fp64Util,
    GpmMetricId::DramBwUtil,
];

/// A GPM sample kept between reads, as NVML's raw handle (the wrapper's `GpmSample` borrows the
/// `Nvml` that this backend owns, so it cannot be stored beside it).
struct HeldSample(nvmlGpmSample_t);

// SAFETY: a GPM sample is a heap object NVML allocated for us; only the sampler thread that owns
// the backend ever touches it, one call at a time.
unsafe impl Send for HeldSample {}

/// Per GPU: whether GPM works, and the last sample with its time.
#[derive(Default)]
struct GpmState {
    supported: Option<bool>,
    last: Option<(HeldSample, Instant)>,
}

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
}

impl Drop for NvmlBackend {
    fn drop(&mut self) {
        self.stop_listener.store(true, Ordering::Relaxed);
        for (_, state) in std::mem::take(&mut self.gpm) {
            if let Some((h, _)) = state.last {
                // SAFETY: the handle came from `GpmSample::into_handle` on this `Nvml` and is
                // freed exactly once, here (dropping the wrapper frees it).
                drop(unsafe { GpmSample::from_handle(&self.nvml, h.0) });
            }
        }
    }
}

/// GPM metric values (percent) in [`GPM_METRICS`] order -> ratios.
fn pipes_from(values: &[Option<f64>]) -> Pipes {
    let v = |i: usize| {
        values
            .get(i)
            .copied()
            .flatten()
            .map_or(0.0, |p| (p / 100.0).clamp(0.0, 1.0))
    };
    Pipes {
        sm_active: v(0),
        sm_occupancy: v(1),
        tensor_active: v(2),
        hmma_active: v(3),
        imma_active: v(4),
        dfma_tensor_active: v(5),
        fp16_active: v(6),
        fp32_active: v(7),
        fp64_active: v(8),
        dram_active: v(9),
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
                listen_for_xids(&listener_path, &tx, &stop)
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
        })
    }
}

/// How long one wait for an event may block, so the thread notices it should stop.
const EVENT_WAIT_MS: u32 = 500;

/// The Xid listener: its own NVML handle (NVML counts inits), an event set for critical Xid
/// errors on every GPU that supports them, and a blocking wait loop, on its own thread because
/// the wait blocks. Sends (GPU UUID, Xid) until `stop` is set. Says once what it cannot do.
fn listen_for_xids(lib: &OsString, tx: &mpsc::Sender<(String, u32)>, stop: &AtomicBool) {
    use nvml_wrapper::bitmasks::event::EventTypes;
    use nvml_wrapper::enums::event::XidError;
    let nvml = match Nvml::builder().lib_path(lib).init() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("Xid events unavailable: NVML init for the listener failed: {e}");
            return;
        }
    };
    let Ok(mut set) = nvml.create_event_set() else {
        tracing::info!("Xid events unavailable: this driver cannot create event sets");
        return;
    };
    let count = nvml.device_count().unwrap_or(0);
    let mut watched = 0;
    // An event names its GPU by handle; a GPU that has just fallen off the bus (Xid 79) no longer
    // answers `uuid()`, so the UUIDs are read now, while every GPU answers.
    let mut uuid_of: BTreeMap<usize, String> = BTreeMap::new();
    for i in 0..count {
        let Ok(d) = nvml.device_by_index(i) else {
            continue;
        };
        if let Ok(u) = d.uuid() {
            // SAFETY: the raw handle is only compared as a number, never dereferenced.
            uuid_of.insert(unsafe { d.handle() } as usize, u);
        }
        let supported = d
            .supported_event_types()
            .is_ok_and(|t| t.contains(EventTypes::CRITICAL_XID_ERROR));
        if !supported {
            continue;
        }
        set = match d.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(s) => {
                watched += 1;
                s
            }
            Err(e) => {
                tracing::info!("Xid events unavailable: registering GPU {i} failed: {e}");
                return;
            }
        };
    }
    if watched == 0 {
        tracing::info!("Xid events unavailable: no GPU supports critical Xid events");
        return;
    }
    tracing::debug!("listening for Xid errors on {watched} GPU(s)");
    while !stop.load(Ordering::Relaxed) {
        match set.wait(EVENT_WAIT_MS) {
            Ok(ev) => {
                let xid = match ev.event_data {
                    Some(XidError::Value(v)) => u32::try_from(v).unwrap_or(u32::MAX),
                    _ => continue,
                };
                // SAFETY: as above, a number to look up.
                let handle = unsafe { ev.device.handle() } as usize;
                let Some(uuid) = uuid_of.get(&handle).cloned() else {
                    continue;
                };
                if tx.send((uuid, xid)).is_err() {
                    return;
                }
            }
            Err(NvmlError::Timeout) => {}
            // A GPU that falls off the bus may report GPU_IS_LOST here; keep listening.
            Err(NvmlError::GpuLost) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                tracing::warn!("Xid listener stopped: waiting for events failed: {e}");
                return;
            }
        }
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
        let mut r = Reading {
            energy_mj: field(d.total_energy_consumption(), Field::Energy, e)?,
            power_mw: field(d.power_usage(), Field::Power, e)?,
            power_limit_mw: field(d.enforced_power_limit(), Field::PowerLimit, e)?,
            utilization_pct: field(d.utilization_rates(), Field::Utilization, e)?.map(|u| u.gpu),
            memory_used_bytes: memory.as_ref().map(|m| m.used),
            memory_total_bytes: memory.as_ref().map(|m| m.total),
            sm_clock_mhz: field(d.clock_info(Clock::SM), Field::SmClock, e)?,
            temperature_c: field(d.temperature(TemperatureSensor::Gpu), Field::Temperature, e)?,
            clock_event_reasons: field(d.current_throttle_reasons(), Field::ClockEvents, e)?
                .map(|r| r.bits()),
            processes: None,
            pipes: None,
            field_errors: Vec::new(),
        };
        // GPM: a new sample each read; the metrics cover the time since the previous one.
        let gpm = self.gpm.entry(index).or_default();
        if gpm.supported.is_none() {
            let ok = matches!(d.gpm_support(), Ok(true));
            if !ok {
                e.push((Field::Pipes, FieldError::NotSupported));
            }
            gpm.supported = Some(ok);
        }
        if gpm.supported == Some(true) {
            match d.gpm_sample() {
                Ok(new) => {
                    let now = Instant::now();
                    match gpm.last.take() {
                        Some((old, at)) if now.duration_since(at) >= GPM_MIN_GAP => {
                            // SAFETY: `old` came from `into_handle` on this `Nvml`; rebuilding the
                            // wrapper hands ownership back, and it is freed when dropped below.
                            let old = unsafe { GpmSample::from_handle(&self.nvml, old.0) };
                            match gpm_metrics_get(&self.nvml, &old, &new, &GPM_METRICS) {
                                Ok(results) => {
                                    let values: Vec<Option<f64>> = results
                                        .iter()
                                        .map(|r| r.as_ref().ok().map(|m| m.value))
                                        .collect();
                                    r.pipes = Some(pipes_from(&values));
                                }
                                Err(NvmlError::GpuLost) => {
                                    return Err(SampleError::GpuLost("while reading GPM".into()))
                                }
                                Err(err) => {
                                    e.push((Field::Pipes, FieldError::Failed(err.to_string())))
                                }
                            }
                            gpm.last = Some((HeldSample(new.into_handle()), now));
                        }
                        // Too soon after the last sample: keep that one, drop the new one.
                        Some(kept) => gpm.last = Some(kept),
                        None => gpm.last = Some((HeldSample(new.into_handle()), now)),
                    }
                }
                Err(NvmlError::GpuLost) => {
                    return Err(SampleError::GpuLost("while sampling GPM".into()))
                }
                Err(err) => e.push((Field::Pipes, FieldError::Failed(err.to_string()))),
            }
        }
        if with_processes {
            let procs = field(d.running_compute_processes(), Field::Processes, e)?;
            let since = self.last_util_sample.get(&index).copied();
            let samples = if procs.as_ref().is_some_and(|p| !p.is_empty()) {
                field(
                    d.process_utilization_stats(since),
                    Field::ProcessUtilization,
                    e,
                )?
                .unwrap_or_default()
            } else {
                Vec::new()
            };
            if let Some(newest) = samples.iter().map(|s| s.timestamp).max() {
                self.last_util_sample.insert(index, newest);
            }
            // NVML may return several samples per process: average them.
            let mut sm: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
            for s in &samples {
                let e = sm.entry(s.pid).or_default();
                e.0 += u64::from(s.sm_util);
                e.1 += 1;
            }
            r.processes = procs.map(|ps| {
                ps.into_iter()
                    .map(|p| ProcessUse {
                        pid: p.pid,
                        used_memory_bytes: match p.used_gpu_memory {
                            UsedGpuMemory::Used(b) => Some(b),
                            UsedGpuMemory::Unavailable => None,
                        },
                        sm_util_pct: sm.get(&p.pid).map(|(sum, n)| (sum / n) as u32),
                    })
                    .collect()
            });
        }
        r.field_errors = errs;
        Ok(r)
    }
}
