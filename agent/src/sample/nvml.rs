//! The NVML backend: the real driver library through `nvml-wrapper`.
//!
//! Opening loads `libnvidia-ml.so.1` (or the configured path) with dlopen, so a node without the
//! driver gets an error here, never a crash. Each field is read on its own: a GPU that does not
//! support one field still reports the others.

use std::ffi::OsString;

use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

use super::{Backend, Field, FieldError, GpuStatic, ProcessUse, Reading, SampleError, Source};

/// The library NVML's own loader looks for.
pub const DEFAULT_LIB: &str = "libnvidia-ml.so.1";

pub struct NvmlBackend {
    nvml: Nvml,
    driver: Option<String>,
    /// Per GPU, the newest per-process utilization sample seen (NVML timestamps, microseconds),
    /// so each read asks only for samples since then.
    last_util_sample: std::collections::BTreeMap<u32, u64>,
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
        Ok(NvmlBackend {
            nvml,
            driver,
            last_util_sample: Default::default(),
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
            gpus.push(GpuStatic { index, uuid, model });
        }
        Ok(gpus)
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
            xids: Vec::new(),
            field_errors: Vec::new(),
        };
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
