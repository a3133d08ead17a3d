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

use crate::abi::*;
use crate::{device_call, product, state, Gpu};

pub const NVML_FI_DEV_POWER_AVERAGE: c_uint = 185;
pub const NVML_FI_DEV_POWER_INSTANT: c_uint = 186;

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
    match field {
        NVML_FI_DEV_POWER_AVERAGE => power_average_mw(gpu).map_or(none, uint),
        NVML_FI_DEV_POWER_INSTANT => uint(power_instant_mw(gpu)),
        _ => none,
    }
}

/// The requested fields of one GPU, each with its own return code.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFieldValues(
    device: nvmlDevice_t,
    values_count: c_int,
    values: *mut nvmlFieldValue_t,
) -> nvmlReturn_t {
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
