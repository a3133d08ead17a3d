//! The fields of a reading that take more than one plain call: power, read explicitly as the
//! one-second average and the instant value through `nvmlDeviceGetFieldValues`, with the legacy
//! call as the fallback; the violation-time counters, through the same call, with the
//! deprecated `nvmlDeviceGetViolationStatus` as the fallback; and utilization, averaged over
//! the driver's samples since the last read, with `nvmlDeviceGetUtilizationRates` (its last
//! sample period) as the fallback. Where nvml.h marks a call deprecated in CUDA 13 and names its
//! replacement (`nvmlDeviceGetCurrentClocksThrottleReasons` -> `nvmlDeviceGetCurrentClocksEventReasons`,
//! nvml.h:6124; `nvmlDeviceGetTemperature` -> `nvmlDeviceGetTemperatureV`, nvml.h:5956), the
//! replacement is called where the driver exports it, and the deprecated call otherwise (a
//! driver from before the replacement, or one that answers `NVML_ERROR_FUNCTION_NOT_FOUND`).
//!
//! nvml.h (NVIDIA/go-nvml `gen/nvml/nvml.h`): `NVML_FI_DEV_POWER_AVERAGE` is "GPU power averaged
//! over 1 sec interval, supported on Ampere (except GA100) or newer architectures" (line 2716),
//! `NVML_FI_DEV_POWER_INSTANT` "Current GPU power, supported on all architectures" (2717); the
//! legacy `nvmlDeviceGetPowerUsage` "returns power averaged over 1 sec interval" on Ampere
//! (except GA100) or newer and "instantaneous power" on GA100 and older (6538-6540), so what it
//! answers is placed by the GPU's compute capability (GA100 is 8.0).
//!
//! The violation-time counters (nanoseconds each perf policy held the clocks down since the
//! driver loaded; what dcgm-exporter exports as `DCGM_FI_DEV_*_VIOLATION`): nvml.h marks
//! `nvmlDeviceGetViolationStatus` deprecated in CUDA 13 and names its replacements, field values
//! (lines 7661-7675): `NVML_FI_DEV_PERF_POLICY_POWER` (= `NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP`),
//! `_SYNC_BOOST`, `_BOARD_LIMIT`, `_LOW_UTILIZATION`, `_RELIABILITY` (2475-2480) and
//! `NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN` for the thermal policy, with the HW
//! thermal and power-brake counters beside it (2845-2849). Those are read here; a policy whose
//! field does not answer is asked of `nvmlDeviceGetViolationStatus`, where the driver still has
//! it; a reason with neither counts by its clock-event bit (`account::throttle`). The three
//! clock-event-reason fields are given in the numbering nvml-wrapper takes (before CUDA 13
//! update 1, 251-253); it renumbers them for drivers from 580.82 on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use gpucost_core::account::utilization::{interval_pct, sample_period_s};
use nvml_wrapper::enum_wrappers::device::{PerformancePolicy, Sampling, TemperatureSensor};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::error::{nvml_try, NvmlError};
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings::field_id::{
    NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN, NVML_FI_DEV_PERF_POLICY_BOARD_LIMIT,
    NVML_FI_DEV_PERF_POLICY_LOW_UTILIZATION, NVML_FI_DEV_PERF_POLICY_POWER,
    NVML_FI_DEV_PERF_POLICY_RELIABILITY, NVML_FI_DEV_PERF_POLICY_SYNC_BOOST,
    NVML_FI_DEV_POWER_AVERAGE, NVML_FI_DEV_POWER_INSTANT,
};
use nvml_wrapper_sys::bindings::{
    nvmlTemperatureSensors_enum_NVML_TEMPERATURE_GPU, nvmlTemperature_t,
};

use gpucost_core::reading::{Field, FieldError, SampleError, ThrottleReason};

/// What is remembered per GPU between reads.
#[derive(Debug, Default)]
pub(super) struct FieldState {
    /// Whether the legacy power call answers the one-second average (compute capability above
    /// 8.0); looked up the first time it is needed.
    legacy_power_is_average: Option<bool>,
    /// Reasons `nvmlDeviceGetViolationStatus` does not answer on this GPU (not supported, or
    /// the driver has no such call): not asked again.
    no_violation_status: BTreeSet<ThrottleReason>,
    utilization: UtilizationState,
    /// The replacements of deprecated calls are missing: the deprecated ones are used.
    legacy_clock_events: bool,
    legacy_temperature: bool,
}

/// What the utilization average keeps between reads.
#[derive(Debug, Default)]
struct UtilizationState {
    /// False once the driver said it keeps no utilization samples for this GPU (MIG, nvml.h).
    unsupported: bool,
    /// The newest sample's timestamp: NVML's `lastSeenTimeStamp` for the next read.
    last_seen_us: Option<u64>,
    /// Where the last average stopped, on the samples' clock.
    from_us: Option<u64>,
    /// The driver's sample period as the samples show it.
    period_s: Option<f64>,
    last_read: Option<Instant>,
}

/// The fields read in the one `nvmlDeviceGetFieldValues` call of each read.
pub(super) const FIELDS: [u32; 10] = [
    NVML_FI_DEV_POWER_AVERAGE,
    NVML_FI_DEV_POWER_INSTANT,
    NVML_FI_DEV_PERF_POLICY_POWER,
    NVML_FI_DEV_PERF_POLICY_SYNC_BOOST,
    NVML_FI_DEV_PERF_POLICY_BOARD_LIMIT,
    NVML_FI_DEV_PERF_POLICY_LOW_UTILIZATION,
    NVML_FI_DEV_PERF_POLICY_RELIABILITY,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN,
    NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN,
];

/// Each violation counter: its field, its reason, and its policy in the deprecated call.
const VIOLATIONS: [(u32, ThrottleReason, Option<PerformancePolicy>); 8] = [
    (
        NVML_FI_DEV_PERF_POLICY_POWER,
        ThrottleReason::SwPowerCap,
        Some(PerformancePolicy::Power),
    ),
    (
        NVML_FI_DEV_PERF_POLICY_SYNC_BOOST,
        ThrottleReason::SyncBoost,
        Some(PerformancePolicy::SyncBoost),
    ),
    (
        NVML_FI_DEV_PERF_POLICY_BOARD_LIMIT,
        ThrottleReason::BoardLimit,
        Some(PerformancePolicy::BoardLimit),
    ),
    (
        NVML_FI_DEV_PERF_POLICY_LOW_UTILIZATION,
        ThrottleReason::LowUtilization,
        Some(PerformancePolicy::LowUtilization),
    ),
    (
        NVML_FI_DEV_PERF_POLICY_RELIABILITY,
        ThrottleReason::Reliability,
        Some(PerformancePolicy::Reliability),
    ),
    (
        NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN,
        ThrottleReason::SwThermalSlowdown,
        Some(PerformancePolicy::Thermal),
    ),
    (
        NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN,
        ThrottleReason::HwThermalSlowdown,
        None,
    ),
    (
        NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN,
        ThrottleReason::HwPowerBrakeSlowdown,
        None,
    ),
];

/// What the field-values call answered: each field's value in [`FIELDS`] order, `None` where it
/// did not answer (its own return code, or the whole call failed: a driver without the call).
pub(super) type FieldValues = Vec<Option<u64>>;

/// One `nvmlDeviceGetFieldValues` call for [`FIELDS`]. A lost GPU aborts the reading.
pub(super) fn read_fields(d: &Device<'_>) -> Result<FieldValues, SampleError> {
    let ids: Vec<FieldId> = FIELDS.iter().map(|f| FieldId(*f)).collect();
    let values = match d.field_values_for(&ids) {
        Ok(v) => v,
        Err(NvmlError::GpuLost) => return Err(lost("field values")),
        Err(_) => return Ok(vec![None; FIELDS.len()]),
    };
    let mut out = vec![None; FIELDS.len()];
    for (slot, v) in out.iter_mut().zip(values) {
        let value = v.and_then(|s| s.value);
        if matches!(value, Err(NvmlError::GpuLost)) {
            return Err(lost("field values"));
        }
        *slot = match value {
            Ok(SampleValue::U32(x)) => Some(u64::from(x)),
            Ok(SampleValue::U64(x)) => Some(x),
            Ok(SampleValue::I64(x)) => u64::try_from(x).ok(),
            Ok(SampleValue::F64(x)) if x.is_finite() && x >= 0.0 => Some(x as u64),
            _ => None,
        };
    }
    Ok(out)
}

/// A field's value, by its id.
pub(super) fn field(values: &FieldValues, id: u32) -> Option<u64> {
    let i = FIELDS.iter().position(|f| *f == id)?;
    values.get(i).copied().flatten()
}

fn lost(what: &str) -> SampleError {
    SampleError::GpuLost(format!("while reading {what}"))
}

/// Power as (one-second average, instant), in milliwatts: from the fields, and from the legacy
/// call where neither answers.
pub(super) fn read_power(
    d: &Device<'_>,
    st: &mut FieldState,
    values: &FieldValues,
    e: &mut Vec<(Field, FieldError)>,
) -> Result<(Option<u32>, Option<u32>), SampleError> {
    let mw = |id| field(values, id).map(|v| v.min(u64::from(u32::MAX)) as u32);
    let (average, instant) = (mw(NVML_FI_DEV_POWER_AVERAGE), mw(NVML_FI_DEV_POWER_INSTANT));
    if average.is_some() || instant.is_some() {
        return Ok((average, instant));
    }
    let legacy = match d.power_usage() {
        Ok(mw) => mw,
        Err(NvmlError::GpuLost) => return Err(lost("power")),
        Err(NvmlError::NotSupported) => {
            e.push((Field::Power, FieldError::NotSupported));
            return Ok((None, None));
        }
        Err(err) => {
            e.push((Field::Power, FieldError::Failed(err.to_string())));
            return Ok((None, None));
        }
    };
    let is_average = *st.legacy_power_is_average.get_or_insert_with(|| {
        // Unknown: taken as the older side (instant), as for GA100.
        d.cuda_compute_capability()
            .is_ok_and(|c| (c.major, c.minor) > (8, 0))
    });
    Ok(if is_average {
        (Some(legacy), None)
    } else {
        (None, Some(legacy))
    })
}

/// The violation-time counters, in nanoseconds by reason: from the fields, and for a policy
/// whose field did not answer, from `nvmlDeviceGetViolationStatus` while it answers.
pub(super) fn read_violations(
    d: &Device<'_>,
    st: &mut FieldState,
    values: &FieldValues,
) -> Result<BTreeMap<ThrottleReason, u64>, SampleError> {
    let mut out = BTreeMap::new();
    for (id, reason, policy) in VIOLATIONS {
        if let Some(ns) = field(values, id) {
            out.insert(reason, ns);
            continue;
        }
        let Some(policy) = policy.filter(|_| !st.no_violation_status.contains(&reason)) else {
            continue;
        };
        match d.violation_status(policy) {
            Ok(v) => {
                out.insert(reason, v.violation_time);
            }
            Err(NvmlError::GpuLost) => return Err(lost("violation status")),
            // Not supported, or gone from the driver (removed in CUDA 14, nvml.h): the bit
            // counts instead, without asking again. A passing failure is asked again.
            Err(
                NvmlError::NotSupported
                | NvmlError::FailedToLoadSymbol(_)
                | NvmlError::FunctionNotFound
                | NvmlError::InvalidArg,
            ) => {
                st.no_violation_status.insert(reason);
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

/// Percent of the time since the last read in which a kernel ran: the driver's utilization
/// samples since then, averaged (`account::utilization`); where there are none (not supported;
/// or none since the last read, the buffer running dry while the GPU is idle:
/// polarsignals/gpu-metrics-agent#37), the driver's last sample period.
pub(super) fn read_utilization(
    d: &Device<'_>,
    st: &mut FieldState,
    e: &mut Vec<(Field, FieldError)>,
) -> Result<Option<f64>, SampleError> {
    let u = &mut st.utilization;
    let now = Instant::now();
    let elapsed_s = u
        .last_read
        .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
    u.last_read = Some(now);
    if !u.unsupported {
        match d.samples(Sampling::GpuUtilization, u.last_seen_us.unwrap_or(0)) {
            Ok(found) => {
                let mut samples: Vec<(u64, f64)> = found
                    .iter()
                    .filter(|s| u.last_seen_us.is_none_or(|seen| s.timestamp > seen))
                    .filter_map(|s| {
                        let pct = match s.value {
                            SampleValue::U32(v) => f64::from(v),
                            SampleValue::U64(v) => v as f64,
                            SampleValue::I64(v) => v as f64,
                            SampleValue::F64(v) => v,
                        };
                        pct.is_finite().then_some((s.timestamp, pct))
                    })
                    .collect();
                samples.sort_by_key(|(t, _)| *t);
                if let Some(&(newest, _)) = samples.last() {
                    u.period_s = sample_period_s(&samples, u.period_s);
                    // The first samples come with the whole buffer: only those of the interval
                    // (judged back from the newest) are its own.
                    if u.last_seen_us.is_none() {
                        let since = newest.saturating_sub((elapsed_s * 1e6) as u64);
                        let keep = samples.partition_point(|(t, _)| *t <= since);
                        samples.drain(..keep.min(samples.len() - 1));
                    }
                    u.last_seen_us = Some(newest);
                    if let Some((pct, to)) =
                        interval_pct(&samples, u.from_us, elapsed_s, u.period_s)
                    {
                        u.from_us = Some(to);
                        return Ok(Some(pct));
                    }
                }
            }
            Err(NvmlError::GpuLost) => return Err(lost("utilization samples")),
            // No sample since the last read (nvml.h: NOT_FOUND "if sample entries are not found").
            Err(NvmlError::NotFound) => {}
            Err(NvmlError::NotSupported | NvmlError::FailedToLoadSymbol(_)) => {
                u.unsupported = true;
            }
            Err(_) => {}
        }
    }
    let rates = match d.utilization_rates() {
        Ok(r) => Some(f64::from(r.gpu)),
        Err(NvmlError::GpuLost) => return Err(lost("utilization")),
        Err(NvmlError::NotSupported) => {
            e.push((Field::Utilization, FieldError::NotSupported));
            None
        }
        Err(err) => {
            e.push((Field::Utilization, FieldError::Failed(err.to_string())));
            None
        }
    };
    Ok(rates)
}

/// A replacement call's answer: `None` when the driver does not implement it (the deprecated
/// call is used from then on).
fn replacement(code: u32, legacy: &mut bool) -> Option<Result<(), NvmlError>> {
    match nvml_try(code) {
        Err(NvmlError::FunctionNotFound) => {
            *legacy = true;
            None
        }
        other => Some(other),
    }
}

/// The clock-event (throttle) reason bits: `nvmlDeviceGetCurrentClocksEventReasons` where the
/// driver has it, else the deprecated `nvmlDeviceGetCurrentClocksThrottleReasons`.
pub(super) fn read_clock_events(
    nvml: &Nvml,
    d: &Device<'_>,
    st: &mut FieldState,
    e: &mut Vec<(Field, FieldError)>,
) -> Result<Option<u64>, SampleError> {
    if !st.legacy_clock_events {
        match nvml.lib().nvmlDeviceGetCurrentClocksEventReasons.as_ref() {
            Ok(call) => {
                let mut bits: u64 = 0;
                // SAFETY: the handle belongs to this `Nvml` and lives as long as `d`; `bits` is
                // a valid out-pointer for the call's `unsigned long long *`.
                let code = unsafe { call(d.handle(), &mut bits) };
                if let Some(result) = replacement(code, &mut st.legacy_clock_events) {
                    return super::field(result.map(|()| bits), Field::ClockEvents, e);
                }
            }
            Err(_) => st.legacy_clock_events = true,
        }
    }
    super::field(
        d.current_throttle_reasons().map(|r| r.bits()),
        Field::ClockEvents,
        e,
    )
}

/// The GPU's temperature in °C: `nvmlDeviceGetTemperatureV` where the driver has it, else the
/// deprecated `nvmlDeviceGetTemperature`.
pub(super) fn read_temperature(
    nvml: &Nvml,
    d: &Device<'_>,
    st: &mut FieldState,
    e: &mut Vec<(Field, FieldError)>,
) -> Result<Option<u32>, SampleError> {
    if !st.legacy_temperature {
        match nvml.lib().nvmlDeviceGetTemperatureV.as_ref() {
            Ok(call) => {
                let mut t = nvmlTemperature_t {
                    // nvml.h: nvmlTemperature_v1 = NVML_STRUCT_VERSION(Temperature, 1), the
                    // struct's size with the version in the top byte.
                    version: std::mem::size_of::<nvmlTemperature_t>() as u32 | (1 << 24),
                    sensorType: nvmlTemperatureSensors_enum_NVML_TEMPERATURE_GPU,
                    temperature: 0,
                };
                // SAFETY: the handle belongs to this `Nvml` and lives as long as `d`; `t` is a
                // valid, versioned `nvmlTemperature_t` for the call to fill.
                let code = unsafe { call(d.handle(), &mut t) };
                if let Some(result) = replacement(code, &mut st.legacy_temperature) {
                    let celsius = result.map(|()| t.temperature.max(0) as u32);
                    return super::field(celsius, Field::Temperature, e);
                }
            }
            Err(_) => st.legacy_temperature = true,
        }
    }
    super::field(d.temperature(TemperatureSensor::Gpu), Field::Temperature, e)
}
