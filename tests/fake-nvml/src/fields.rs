//! `nvmlDeviceGetFieldValues`: the fields gpucost reads in one call each cycle.
//!
//! Each field has its own return code (nvml.h: "you must check the nvmlReturn field of each
//! value for each individual status"); a field this library does not answer gets
//! `NVML_ERROR_NOT_SUPPORTED`. Line numbers below are those of nvml.h in NVIDIA/go-nvml
//! (`gen/nvml/nvml.h`, CUDA 13 numbering).
//!
//! - `NVML_FI_DEV_POWER_AVERAGE` (185): "GPU power averaged over 1 sec interval, supported on
//!   Ampere (except GA100) or newer architectures" (nvml.h:2716). The model's energy over the
//!   last wall second; `NOT_SUPPORTED` where the GPU has no average (`power_average`, by default
//!   by product: [`crate::product::has_power_average`]).
//! - `NVML_FI_DEV_POWER_INSTANT` (186): "Current GPU power, supported on all architectures"
//!   (nvml.h:2717). The model's power now.
//! - The violation-time counters, in nanoseconds (`SimulatedNode::violation_s`), where the GPU
//!   has `violation_fields`: `NVML_FI_DEV_PERF_POLICY_POWER` (74, the same field as
//!   `NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP`), `_SYNC_BOOST` (76), `_BOARD_LIMIT` (77),
//!   `_LOW_UTILIZATION` (78), `_RELIABILITY` (79) (nvml.h:2475-2480), and
//!   `NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN`, `_HW_THERM_SLOWDOWN` and
//!   `_HW_POWER_BRAKE_SLOWDOWN` (nvml.h:2845-2849): nvml.h's replacements for the counters of
//!   `nvmlDeviceGetViolationStatus` (nvml.h:7661-7675). Those three are 269-271 in the CUDA 13
//!   update 1 header and were 251-253 before; drivers from 580.82 on number them the new way,
//!   which nvml-wrapper 0.13 translates to (`detect_field_id_scheme`, `translate_field_id`), so
//!   this library answers them under the numbering of the scenario's `driver_version`.

use gpucost_sim::ViolationSeconds;

use crate::abi::*;
use crate::{device_call, product, state, Gpu};

pub const NVML_FI_DEV_POWER_AVERAGE: c_uint = 185;
pub const NVML_FI_DEV_POWER_INSTANT: c_uint = 186;
pub const NVML_FI_DEV_PERF_POLICY_POWER: c_uint = 74;
pub const NVML_FI_DEV_PERF_POLICY_SYNC_BOOST: c_uint = 76;
pub const NVML_FI_DEV_PERF_POLICY_BOARD_LIMIT: c_uint = 77;
pub const NVML_FI_DEV_PERF_POLICY_LOW_UTILIZATION: c_uint = 78;
pub const NVML_FI_DEV_PERF_POLICY_RELIABILITY: c_uint = 79;
/// `NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN`, `_HW_THERM_SLOWDOWN`,
/// `_HW_POWER_BRAKE_SLOWDOWN`: before and from the CUDA 13 update 1 renumbering.
const CLOCKS_EVENT_REASON_FIELDS_V12: [c_uint; 3] = [251, 252, 253];
const CLOCKS_EVENT_REASON_FIELDS_V13U1: [c_uint; 3] = [269, 270, 271];

/// Whether a driver version numbers fields as the CUDA 13 update 1 header does: 580.82 and
/// later (nvml-wrapper 0.13's `detect_field_id_scheme`).
fn renumbered(driver_version: &str) -> bool {
    let mut parts = driver_version.split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    major > 580 || (major == 580 && minor >= 82)
}

/// Nanoseconds of a counter.
fn ns(seconds: f64) -> c_ulonglong {
    (seconds.max(0.0) * 1e9) as c_ulonglong
}

/// The GPU's violation counters now.
pub(crate) fn violations(gpu: &Gpu<'_>) -> ViolationSeconds {
    gpu.node.violation_s(gpu.index, gpu.t)
}

/// A violation-counter field's value in nanoseconds, if `field` is one.
fn violation_field(gpu: &Gpu<'_>, field: c_uint) -> Option<Option<c_ulonglong>> {
    let v = || violations(gpu);
    let reasons = if renumbered(&gpu.node.scenario().driver_version) {
        CLOCKS_EVENT_REASON_FIELDS_V13U1
    } else {
        CLOCKS_EVENT_REASON_FIELDS_V12
    };
    let seconds = match field {
        NVML_FI_DEV_PERF_POLICY_POWER => v().power,
        NVML_FI_DEV_PERF_POLICY_SYNC_BOOST => v().sync_boost,
        NVML_FI_DEV_PERF_POLICY_BOARD_LIMIT => v().board_limit,
        NVML_FI_DEV_PERF_POLICY_LOW_UTILIZATION => v().low_utilization,
        NVML_FI_DEV_PERF_POLICY_RELIABILITY => v().reliability,
        f if f == reasons[0] => v().thermal,
        f if f == reasons[1] => v().hw_thermal,
        f if f == reasons[2] => v().hw_power_brake,
        _ => return None,
    };
    Some(gpu.spec().violation_fields.then(|| ns(seconds)))
}

/// Whether the GPU reports a one-second power average: the scenario's `power_average`, else by
/// product.
pub(crate) fn has_power_average(gpu: &Gpu<'_>) -> bool {
    let spec = gpu.spec();
    spec.power_average
        .unwrap_or_else(|| product::has_power_average(&spec.model))
}

/// The one-second power average in milliwatts, where the GPU has one.
pub(crate) fn power_average_mw(gpu: &Gpu<'_>) -> Option<c_uint> {
    has_power_average(gpu)
        .then(|| (gpu.node.power_average_w(gpu.index, gpu.t) * 1000.0).round() as c_uint)
}

/// The power now, in milliwatts.
pub(crate) fn power_instant_mw(gpu: &Gpu<'_>) -> c_uint {
    (gpu.state().power_w * 1000.0).round() as c_uint
}

/// One field's answer: its return code and, on success, its type and value.
fn answer(gpu: &Gpu<'_>, field: c_uint) -> (nvmlReturn_t, nvmlValueType_t, nvmlValue_t) {
    let uint = |v: c_uint| {
        (
            NVML_SUCCESS,
            NVML_VALUE_TYPE_UNSIGNED_INT,
            nvmlValue_t { uiVal: v },
        )
    };
    let none = (
        NVML_ERROR_NOT_SUPPORTED,
        NVML_VALUE_TYPE_UNSIGNED_INT,
        nvmlValue_t { ullVal: 0 },
    );
    let ull = |v: c_ulonglong| {
        (
            NVML_SUCCESS,
            NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
            nvmlValue_t { ullVal: v },
        )
    };
    match field {
        NVML_FI_DEV_POWER_AVERAGE => power_average_mw(gpu).map_or(none, uint),
        NVML_FI_DEV_POWER_INSTANT => uint(power_instant_mw(gpu)),
        _ => match violation_field(gpu, field) {
            Some(Some(v)) => ull(v),
            _ => none,
        },
    }
}

/// The deprecated per-policy violation counter (nvml.h:7661-7675: replaced by field values in
/// CUDA 13, "will be removed in CUDA 14.0"): nanoseconds, with the CPU time in microseconds.
/// `NOT_SUPPORTED` where the GPU has no `violation_status`, and for the two totals;
/// `INVALID_ARGUMENT` for a policy nvml.h does not define.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetViolationStatus(
    device: nvmlDevice_t,
    perf_policy_type: nvmlPerfPolicyType_t,
    viol_time: *mut nvmlViolationTime_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetViolationStatus");
    let known = perf_policy_type <= NVML_PERF_POLICY_RELIABILITY
        || perf_policy_type == NVML_PERF_POLICY_TOTAL_APP_CLOCKS
        || perf_policy_type == NVML_PERF_POLICY_TOTAL_BASE_CLOCKS;
    device_call(device, !viol_time.is_null() && known, |gpu| {
        if !gpu.spec().violation_status {
            return NVML_ERROR_NOT_SUPPORTED;
        }
        let v = violations(gpu);
        let seconds = match perf_policy_type {
            NVML_PERF_POLICY_POWER => v.power,
            NVML_PERF_POLICY_THERMAL => v.thermal,
            NVML_PERF_POLICY_SYNC_BOOST => v.sync_boost,
            NVML_PERF_POLICY_BOARD_LIMIT => v.board_limit,
            NVML_PERF_POLICY_LOW_UTILIZATION => v.low_utilization,
            NVML_PERF_POLICY_RELIABILITY => v.reliability,
            _ => return NVML_ERROR_NOT_SUPPORTED,
        };
        let answer = nvmlViolationTime_t {
            referenceTime: (state::unix_now() * 1e6) as c_ulonglong,
            violationTime: ns(seconds),
        };
        // SAFETY: checked non-NULL by `device_call`.
        unsafe { crate::put(viol_time, answer) }
    })
}

/// The requested fields of one GPU, each with its own return code.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFieldValues(
    device: nvmlDevice_t,
    values_count: c_int,
    values: *mut nvmlFieldValue_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetFieldValues");
    device_call(device, !values.is_null() && values_count >= 0, |gpu| {
        let now_us = (state::unix_now() * 1e6) as libc::c_longlong;
        for i in 0..values_count as usize {
            // SAFETY: `values` is non-NULL (checked) and holds `values_count` entries by the
            // NVML contract.
            let entry = unsafe { &mut *values.add(i) };
            let (code, value_type, value) = answer(gpu, entry.fieldId);
            entry.timestamp = now_us;
            entry.latencyUsec = 0;
            entry.valueType = value_type;
            entry.nvmlReturn = code;
            entry.value = value;
        }
        NVML_SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_renumbered_from_driver_580_82() {
        for (version, new) in [
            ("550.90.07", false),
            ("580.65.06", false),
            ("580.82.07", true),
            ("590.44.01", true),
            ("unknown", false),
        ] {
            assert_eq!(renumbered(version), new, "{version}");
        }
    }
}
