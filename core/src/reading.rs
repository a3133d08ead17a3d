//! What is read from a GPU, as plain types: what is read once ([`GpuStatic`]) and each tick
//! ([`Reading`]). NVML answers `NotSupported` often, so every field of a reading is an `Option`,
//! and a field that failed says why in [`Reading::field_errors`]. Units are NVML's own and sit
//! in the names. The agent's `sample` module fills these from NVML or the simulated node.

use std::fmt;

/// Where readings come from; exported as the `source` label of `gpucost_gpu_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Nvml,
    Simulated,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Nvml => "nvml",
            Source::Simulated => "simulated",
        }
    }
}

/// What is read about a GPU once, when the backend opens.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GpuStatic {
    /// NVML's device index, the `gpu` label.
    pub index: u32,
    pub uuid: String,
    pub model: String,
}

/// A process using a GPU, as NVML lists running compute processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ProcessUse {
    pub pid: u32,
    /// GPU memory the process holds; `None` where NVML cannot tell (some MIG and WSL setups).
    pub used_memory_bytes: Option<u64>,
    /// Percent of the last sample period the process had work on the SMs (NVML's per-process
    /// utilization); `None` where the GPU does not report it.
    pub sm_util_pct: Option<u32>,
}

/// The fields of a [`Reading`], to say which one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Energy,
    Power,
    PowerLimit,
    Utilization,
    Memory,
    SmClock,
    Temperature,
    ClockEvents,
    Processes,
    ProcessUtilization,
    /// Hopper GPM pipe activity.
    Pipes,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Energy => "energy",
            Field::Power => "power",
            Field::PowerLimit => "power_limit",
            Field::Utilization => "utilization",
            Field::Memory => "memory",
            Field::SmClock => "sm_clock",
            Field::Temperature => "temperature",
            Field::ClockEvents => "clock_events",
            Field::Processes => "processes",
            Field::ProcessUtilization => "process_utilization",
            Field::Pipes => "pipe_activity",
        }
    }
}

/// Why a single field is missing from a reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldError {
    /// The GPU or driver does not offer this field; not an error, said once in the log.
    NotSupported,
    /// The call failed; counted and logged.
    Failed(String),
}

/// One tick's worth of dynamic values from one GPU, in NVML's units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// NVML's total-energy counter since the driver loaded, in millijoules.
    pub energy_mj: Option<u64>,
    /// Board power averaged over the last second (`NVML_FI_DEV_POWER_AVERAGE`; Ampere except
    /// GA100, and newer), or what the legacy `nvmlDeviceGetPowerUsage` reports on those GPUs.
    pub power_average_mw: Option<u32>,
    /// Board power now (`NVML_FI_DEV_POWER_INSTANT`, all architectures), or what the legacy
    /// `nvmlDeviceGetPowerUsage` reports on GA100 and older.
    pub power_instant_mw: Option<u32>,
    pub power_limit_mw: Option<u32>,
    /// Percent of the last sample period in which a kernel ran.
    pub utilization_pct: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub sm_clock_mhz: Option<u32>,
    pub temperature_c: Option<u32>,
    /// NVML clock-event (throttle) reason bits.
    pub clock_event_reasons: Option<u64>,
    /// Only filled on the slower process cadence.
    pub processes: Option<Vec<ProcessUse>>,
    /// Pipe activity over the interval since the previous GPM sample (Hopper and newer).
    pub pipes: Option<Pipes>,
    pub field_errors: Vec<(Field, FieldError)>,
}

impl Reading {
    /// The power to show and to integrate: the one-second average where the GPU has one (it
    /// smooths what a single instant would pick out of a load that changes within the second),
    /// else the instantaneous value.
    pub fn power_mw(&self) -> Option<u32> {
        self.power_average_mw.or(self.power_instant_mw)
    }
}

/// How busy each part of the GPU was over an interval (NVML GPM metrics), one definition for
/// the whole project.
pub use gpucost_hw::Pipes;

/// Why a backend could not be opened or a GPU could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    /// The library could not be loaded or initialised (no driver, wrong path, no permission).
    #[error("{0}")]
    Unavailable(String),
    /// The GPU fell off the bus or stopped answering (NVML_ERROR_GPU_IS_LOST).
    #[error("GPU is lost: {0}")]
    GpuLost(String),
    #[error("{0}")]
    Failed(String),
}

/// clock-event reason bits, in nvml.h order, with their exported names.
pub const CLOCK_EVENT_REASONS: [(u64, &str); 9] = [
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
