//! What is read from a GPU, as plain types: what is read once ([`GpuStatic`]) and each tick
//! ([`Reading`]). NVML answers `NotSupported` often, so every field of a reading is an `Option`,
//! and a field that failed says why in [`Reading::field_errors`]. Units are NVML's own and sit
//! in the names. The agent's `sample` module fills these from NVML or the simulated node.

use std::collections::BTreeMap;
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
    /// Set when this billing unit is a MIG GPU instance (its `uuid` is then the `MIG-…` id);
    /// `None` for a whole GPU.
    pub mig: Option<MigSlice>,
    /// CUDA compute capability `(major, minor)`, where the driver reports it.
    pub compute_capability: Option<(u32, u32)>,
    /// Streaming multiprocessors of this unit as the driver reports them: a whole GPU's (from
    /// its CUDA cores), a MIG instance's own (its attributes). `None` where it cannot say.
    pub sm_count: Option<u32>,
}

/// A MIG GPU instance: a slice of a physical GPU that is billed as a unit of its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigSlice {
    /// The physical GPU's NVML index and UUID.
    pub parent_index: u32,
    pub parent_uuid: String,
    /// NVML's GPU instance id (`gpuInstanceId` in the parent's process list).
    pub gpu_instance_id: u32,
    /// The profile's name, such as `3g.40gb`.
    pub profile: String,
    /// Compute slices this instance holds (the 3 of `3g.40gb`) and the parent has in all (7 on
    /// A100, H100 and H200).
    pub slices: u32,
    pub parent_slices: u32,
}

/// The first `gpu` label (and [`GpuStatic::index`]) of MIG instances: GPU instance `g` of the
/// GPU at NVML index `p` is unit `MIG_INDEX_BASE * (p + 1) + g` (GPU 0's instance 1 is `1001`,
/// GPU 3's instance 13 is `4013`). Unique beside NVML's indices (a node has fewer than 1000
/// GPUs and a GPU fewer than 1000 GPU instances), the same whenever the instance exists, and a
/// number like the indices, so job map files and registrations name it as they name a GPU.
pub const MIG_INDEX_BASE: u32 = 1000;

impl MigSlice {
    /// The unit index ([`GpuStatic::index`], the `gpu` label) of this GPU instance.
    pub fn unit_index(&self) -> u32 {
        mig_unit_index(self.parent_index, self.gpu_instance_id)
    }

    /// The share of the physical GPU this instance is billed for: its slices over the parent's
    /// (3/7 for a `3g.40gb` on an H100). Its hourly price, energy and power are this share of
    /// the parent's.
    pub fn share(&self) -> f64 {
        if self.parent_slices == 0 {
            return 1.0;
        }
        (f64::from(self.slices) / f64::from(self.parent_slices)).clamp(0.0, 1.0)
    }

    /// The instance's share of a parent's counter or power value (energy in mJ, power in mW):
    /// `value x slices / parent_slices`, rounded down, so a counter's share never goes
    /// backwards while the counter goes forwards.
    pub fn share_of(&self, value: u64) -> u64 {
        let (s, n) = (
            u128::from(self.slices),
            u128::from(self.parent_slices.max(1)),
        );
        (u128::from(value) * s.min(n) / n) as u64
    }

    /// The parent's value that [`MigSlice::share_of`] turned into `share`, at most: the
    /// largest `v` with `share_of(v) == share`. As a baseline for the parent's counter it
    /// never counts energy twice (it errs by less than `parent_slices / slices` mJ low).
    pub fn parent_value_at_most(&self, share: u64) -> u64 {
        let (s, n) = (
            u128::from(self.slices.max(1)),
            u128::from(self.parent_slices.max(1)),
        );
        let v = ((u128::from(share) + 1) * n).saturating_sub(1) / s;
        v.min(u128::from(u64::MAX)) as u64
    }

    /// Compute slices of a profile name `<N>g.<memory>gb` (`3g.40gb` -> 3), as NVML names MIG
    /// profiles (`nvidia-smi mig -lgip`).
    pub fn slices_of_profile(profile: &str) -> Option<u32> {
        let (g, rest) = profile.split_once("g.")?;
        rest.contains("gb").then_some(())?;
        g.parse::<u32>().ok().filter(|n| *n > 0)
    }
}

/// The unit index of GPU instance `gpu_instance_id` of the GPU at NVML index `parent_index`
/// (see [`MIG_INDEX_BASE`]).
pub fn mig_unit_index(parent_index: u32, gpu_instance_id: u32) -> u32 {
    MIG_INDEX_BASE
        .saturating_mul(parent_index.saturating_add(1))
        .saturating_add(gpu_instance_id)
}

/// The NVML index of the physical GPU a unit index stands for: the index itself for a whole
/// GPU, the parent's for a MIG instance (see [`MIG_INDEX_BASE`]).
pub fn physical_index(unit_index: u32) -> u32 {
    if unit_index >= MIG_INDEX_BASE {
        unit_index / MIG_INDEX_BASE - 1
    } else {
        unit_index
    }
}

impl GpuStatic {
    /// The share of a physical GPU this unit is billed for: 1 for a whole GPU,
    /// [`MigSlice::share`] for a MIG instance.
    pub fn share(&self) -> f64 {
        self.mig.as_ref().map_or(1.0, MigSlice::share)
    }
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
    /// Percent of the time since the previous reading in which a kernel ran: the driver's
    /// utilization samples over the interval (`account::utilization`), or where it has none
    /// (unsupported, as on MIG; or none since the last reading, as while the GPU is idle) its
    /// last sample period, 1/6 s to 1 s by product.
    pub utilization_pct: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub sm_clock_mhz: Option<u32>,
    pub temperature_c: Option<u32>,
    /// NVML clock-event (throttle) reason bits, as they are at the moment of the reading.
    pub clock_event_reasons: Option<u64>,
    /// NVML's violation-time counters: nanoseconds the clocks were held down for each reason
    /// since the driver loaded (the perf-policy and clock-event-reason field values, or the
    /// deprecated `nvmlDeviceGetViolationStatus`). A reason is absent where the GPU has no
    /// counter for it; its bit is the fallback then.
    pub violation_ns: BTreeMap<ThrottleReason, u64>,
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

/// A driver event other than an Xid, as the NVML event listener reports it for a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DriverEvent {
    /// A corrected (single-bit) ECC error (`nvmlEventTypeSingleBitEccError`).
    EccSingleBit,
    /// An uncorrected (double-bit) ECC error (`nvmlEventTypeDoubleBitEccError`).
    EccDoubleBit,
    /// The driver reported the GPU unavailable (`nvmlEventTypeGpuUnavailableError`).
    GpuUnavailable,
    /// A wait for events answered `NVML_ERROR_GPU_IS_LOST`, and this GPU no longer answers: it
    /// fell off the bus (once per loss).
    GpuLost,
}

impl DriverEvent {
    /// The exported `event` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverEvent::EccSingleBit => "ecc_single_bit",
            DriverEvent::EccDoubleBit => "ecc_double_bit",
            DriverEvent::GpuUnavailable => "gpu_unavailable",
            DriverEvent::GpuLost => "gpu_lost",
        }
    }

    /// What happened, for the log.
    pub fn describe(self) -> &'static str {
        match self {
            DriverEvent::EccSingleBit => "a corrected (single-bit) ECC error",
            DriverEvent::EccDoubleBit => "an uncorrected (double-bit) ECC error",
            DriverEvent::GpuUnavailable => "the GPU is unavailable",
            DriverEvent::GpuLost => "the GPU is lost (fell off the bus)",
        }
    }
}

/// Why a GPU's clocks were held below what it could run at: the clock-event (throttle) reason
/// bits of nvml.h and NVML's violation-time counters (perf policies), under one name each. The
/// name is the `reason` label and the key of the ledger's JSON (`GpuRecord::events`), so it
/// never changes.
///
/// The `gpu_idle` bit ("Nothing is running on the GPU and the clocks are dropping to Idle
/// state", nvml.h) is not a reason: a GPU at rest is not throttled ([`GPU_IDLE_BIT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleReason {
    /// Bit 0x2, deprecated: "No longer used".
    ApplicationsClocksSetting,
    /// Bit 0x4; violation counter `NVML_PERF_POLICY_POWER`.
    SwPowerCap,
    /// Bit 0x8 (temperature, power brake or fast-trigger protection).
    HwSlowdown,
    /// Bit 0x10; violation counter `NVML_PERF_POLICY_SYNC_BOOST`.
    SyncBoost,
    /// Bit 0x20; violation counter `NVML_PERF_POLICY_THERMAL`
    /// (`NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN`).
    SwThermalSlowdown,
    /// Bit 0x40; counter `NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN`.
    HwThermalSlowdown,
    /// Bit 0x80; counter `NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN`.
    HwPowerBrakeSlowdown,
    /// Bit 0x100.
    DisplayClockSetting,
    /// Violation counter `NVML_PERF_POLICY_BOARD_LIMIT`; no bit.
    BoardLimit,
    /// Violation counter `NVML_PERF_POLICY_LOW_UTILIZATION`: clocks held low because the GPU
    /// had little to do, not a limit on work; no bit.
    LowUtilization,
    /// Violation counter `NVML_PERF_POLICY_RELIABILITY` (the board's reliability limit); no bit.
    Reliability,
}

/// The clock-event reason bit of an idle GPU, which is not throttling.
pub const GPU_IDLE_BIT: u64 = 0x1;

impl ThrottleReason {
    pub const ALL: [ThrottleReason; 11] = [
        ThrottleReason::ApplicationsClocksSetting,
        ThrottleReason::SwPowerCap,
        ThrottleReason::HwSlowdown,
        ThrottleReason::SyncBoost,
        ThrottleReason::SwThermalSlowdown,
        ThrottleReason::HwThermalSlowdown,
        ThrottleReason::HwPowerBrakeSlowdown,
        ThrottleReason::DisplayClockSetting,
        ThrottleReason::BoardLimit,
        ThrottleReason::LowUtilization,
        ThrottleReason::Reliability,
    ];

    /// The `reason` label and ledger key.
    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleReason::ApplicationsClocksSetting => "applications_clocks_setting",
            ThrottleReason::SwPowerCap => "sw_power_cap",
            ThrottleReason::HwSlowdown => "hw_slowdown",
            ThrottleReason::SyncBoost => "sync_boost",
            ThrottleReason::SwThermalSlowdown => "sw_thermal_slowdown",
            ThrottleReason::HwThermalSlowdown => "hw_thermal_slowdown",
            ThrottleReason::HwPowerBrakeSlowdown => "hw_power_brake_slowdown",
            ThrottleReason::DisplayClockSetting => "display_clock_setting",
            ThrottleReason::BoardLimit => "board_limit",
            ThrottleReason::LowUtilization => "low_utilization",
            ThrottleReason::Reliability => "reliability",
        }
    }

    /// The reason of a name; `None` for a name this build does not know.
    pub fn from_name(name: &str) -> Option<ThrottleReason> {
        ThrottleReason::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Its clock-event reason bit (nvml.h `nvmlClocksEventReason*`), where it has one.
    pub fn bit(self) -> Option<u64> {
        match self {
            ThrottleReason::ApplicationsClocksSetting => Some(0x2),
            ThrottleReason::SwPowerCap => Some(0x4),
            ThrottleReason::HwSlowdown => Some(0x8),
            ThrottleReason::SyncBoost => Some(0x10),
            ThrottleReason::SwThermalSlowdown => Some(0x20),
            ThrottleReason::HwThermalSlowdown => Some(0x40),
            ThrottleReason::HwPowerBrakeSlowdown => Some(0x80),
            ThrottleReason::DisplayClockSetting => Some(0x100),
            ThrottleReason::BoardLimit
            | ThrottleReason::LowUtilization
            | ThrottleReason::Reliability => None,
        }
    }

    /// Its position in [`ThrottleReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(slices: u32) -> MigSlice {
        MigSlice {
            parent_index: 2,
            parent_uuid: "GPU-p".into(),
            gpu_instance_id: 5,
            profile: format!("{slices}g.10gb"),
            slices,
            parent_slices: 7,
        }
    }

    #[test]
    fn issue_15_a_mig_instance_is_its_slices_of_the_parent() {
        let a = slice(3);
        assert_eq!(a.share(), 3.0 / 7.0);
        assert_eq!(a.unit_index(), 3005);
        // The shares of a fully partitioned GPU add up to the parent, never more.
        let parts = [slice(3), slice(2), slice(2)];
        let parent_mj: u64 = 123_456_789;
        let sum: u64 = parts.iter().map(|p| p.share_of(parent_mj)).sum();
        assert!(sum <= parent_mj && parent_mj - sum < 7, "{sum}");
        // A counter's share never goes backwards while the counter goes forwards.
        let mut last = 0;
        for mj in (0..10_000u64).step_by(3) {
            let now = a.share_of(mj);
            assert!(now >= last);
            last = now;
        }
        assert_eq!(a.share_of(u64::MAX), (u128::from(u64::MAX) * 3 / 7) as u64);
        // Back from a share to the parent's counter: the largest value with that share.
        for mj in [0u64, 1, 2, 3, 6, 7, 1000, 123_456_789] {
            let back = a.parent_value_at_most(a.share_of(mj));
            assert!(
                back >= mj && a.share_of(back) == a.share_of(mj),
                "{mj} -> {back}"
            );
            assert_ne!(a.share_of(back + 1), a.share_of(mj), "{mj} -> {back}");
        }
        let whole = GpuStatic {
            index: 0,
            uuid: "GPU-x".into(),
            model: "m".into(),
            mig: None,
            compute_capability: None,
            sm_count: None,
        };
        assert_eq!(whole.share(), 1.0);
        for (p, n) in [
            ("3g.40gb", Some(3)),
            ("1g.10gb+me", Some(1)),
            ("7g.80gb", Some(7)),
        ] {
            assert_eq!(MigSlice::slices_of_profile(p), n, "{p}");
        }
        for p in ["", "3g", "g.40gb", "0g.5gb", "MIG 3g"] {
            assert_eq!(MigSlice::slices_of_profile(p), None, "{p}");
        }
        // Unique beside NVML indices and stable: GPU 0's instance 1 is 1001.
        assert_eq!(mig_unit_index(0, 1), 1001);
        assert_ne!(mig_unit_index(0, 13), mig_unit_index(1, 13));
        assert_eq!(physical_index(mig_unit_index(3, 13)), 3);
        assert_eq!(physical_index(7), 7);
    }

    #[test]
    fn throttle_reasons_keep_their_names_and_bits() {
        for (i, r) in ThrottleReason::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(ThrottleReason::from_name(r.as_str()), Some(r));
            assert_ne!(r.bit(), Some(GPU_IDLE_BIT));
        }
        // The names the ledger holds (issue 13) are unchanged; gpu_idle is no reason.
        for name in [
            "applications_clocks_setting",
            "sw_power_cap",
            "hw_slowdown",
            "sync_boost",
            "sw_thermal_slowdown",
            "hw_thermal_slowdown",
            "hw_power_brake_slowdown",
            "display_clock_setting",
        ] {
            assert!(ThrottleReason::from_name(name).is_some(), "{name}");
        }
        assert_eq!(ThrottleReason::from_name("gpu_idle"), None);
    }
}
