//! The driver's utilization sample buffer: `nvmlDeviceGetSamples` with
//! `NVML_GPU_UTILIZATION_SAMPLES`, and `nvmlDeviceGetUtilizationRates`, which answers its newest
//! period.
//!
//! What the real buffer does, and where that is said:
//! - One sample per period, each "percent of time during which one or more kernels was
//!   executing on the GPU" (nvml.h:619) over the period, which is "between 1 second and 1/6
//!   second, depending on the product" (nvml.h:243): here the GPU's `utilization_period_s` of
//!   wall time, each sample the model's utilization averaged over its period.
//! - Nothing is recorded while the GPU sits idle with nothing on it: the buffer "runs dry
//!   whenever the GPU sits idle", and the call answers `NVML_ERROR_NOT_FOUND`
//!   (polarsignals/gpu-metrics-agent#37, on a GPU with no workload; nvml.h:7626, NOT_FOUND "if
//!   sample entries are not found"). A period in which a job's process held the GPU is
//!   recorded, at 0% if no kernel ran.
//! - Timestamps are microseconds on the driver's clock, "typically CLOCK_BOOTTIME, not the Unix
//!   epoch" (polarsignals/gpu-metrics-agent#36): here as if the node had booted a day before the
//!   scenario started.
//! - `lastSeenTimeStamp` returns only newer samples; a NULL `samples` asks for the count; a
//!   buffer of `*sampleCount` entries gets the oldest that fit, and `*sampleCount` says how many
//!   (nvml.h:7597-7603).
//! - `NVML_ERROR_NOT_SUPPORTED` where the GPU keeps no samples (`utilization_samples = false`;
//!   nvml.h:7609: not supported on MIG-enabled GPUs) and for the other sample types, which this
//!   library does not keep.
//!
//! The real buffer's size is not documented; this one keeps the newest [`BUFFER`] samples.

use crate::abi::*;
use crate::{device_call, put, Gpu};

/// Samples kept.
const BUFFER: u64 = 1000;
/// The driver's clock at scenario time 0, in microseconds: a node up for a day.
const BOOT_US: u64 = 86_400 * 1_000_000;
/// Points of the model averaged over each period.
const POINTS: u32 = 8;

/// The GPU's sample period in wall seconds.
fn period_s(gpu: &Gpu<'_>) -> f64 {
    gpu.spec().utilization_period_s()
}

/// The timestamp of sample `k` (the period ending `k` periods after the start).
fn timestamp(gpu: &Gpu<'_>, k: u64) -> u64 {
    BOOT_US + (k as f64 * period_s(gpu) * 1e6).round() as u64
}

/// The model's utilization (0..1) averaged over period `k`, `None` when the GPU sat idle with
/// nothing on it (or was lost) throughout: no sample.
fn period_value(gpu: &Gpu<'_>, k: u64) -> Option<f64> {
    let speed = gpu.node.scenario().speed;
    let (p, end) = (period_s(gpu), k as f64 * period_s(gpu));
    if !gpu.node.is_present(gpu.index, end * speed) {
        return None;
    }
    let points: Vec<f64> = (0..POINTS)
        .map(|i| (end - p + (f64::from(i) + 0.5) * p / f64::from(POINTS)) * speed)
        .collect();
    let values: Vec<f64> = points
        .iter()
        .map(|t| gpu.node.utilization(gpu.index, *t))
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let held = points.iter().any(|t| gpu.node.has_processes(gpu.index, *t));
    (mean > 0.0 || held).then_some(mean)
}

/// The last complete period now.
fn newest_period(gpu: &Gpu<'_>) -> u64 {
    let wall = gpu.t / gpu.node.scenario().speed;
    (wall / period_s(gpu)).floor().max(0.0) as u64
}

/// The buffer's samples newer than `last_seen`, oldest first, as (timestamp, percent).
fn samples_since(gpu: &Gpu<'_>, last_seen: u64) -> Vec<(u64, c_uint)> {
    let newest = newest_period(gpu);
    let oldest = newest.saturating_sub(BUFFER - 1).max(1);
    // The first period whose timestamp is past `last_seen`.
    let mut k = if last_seen < BOOT_US {
        oldest
    } else {
        ((((last_seen - BOOT_US) as f64) / (period_s(gpu) * 1e6)).floor() as u64).max(oldest)
    };
    while k <= newest && timestamp(gpu, k) <= last_seen {
        k += 1;
    }
    (k..=newest)
        .filter_map(|k| {
            period_value(gpu, k).map(|v| (timestamp(gpu, k), (v * 100.0).round() as c_uint))
        })
        .collect()
}

/// GPU utilization in percent over the driver's last sample period (0 for an idle one; the
/// utilization now before the first period ends); memory utilization a fixed share of it.
pub(crate) fn utilization_rates(gpu: &Gpu<'_>) -> nvmlUtilization_t {
    let newest = newest_period(gpu);
    let ratio = if newest == 0 {
        gpu.node.utilization(gpu.index, gpu.t)
    } else {
        period_value(gpu, newest).unwrap_or(0.0)
    };
    let percent = (ratio * 100.0).round();
    nvmlUtilization_t {
        gpu: percent as c_uint,
        memory: (percent * crate::MEMORY_UTIL_PER_GPU_UTIL).round() as c_uint,
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSamples(
    device: nvmlDevice_t,
    sample_type: nvmlSamplingType_t,
    last_seen_time_stamp: c_ulonglong,
    sample_val_type: *mut nvmlValueType_t,
    sample_count: *mut c_uint,
    samples: *mut nvmlSample_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetSamples");
    device_call(
        device,
        !sample_count.is_null() && !sample_val_type.is_null(),
        |gpu| {
            // nvml.h:7609-7610: on MIG-enabled GPUs this "is not currently supported".
            if sample_type != NVML_GPU_UTILIZATION_SAMPLES
                || !gpu.spec().utilization_samples
                || gpu.mig_on()
            {
                return NVML_ERROR_NOT_SUPPORTED;
            }
            // SAFETY: both checked non-NULL by `device_call`.
            unsafe { put(sample_val_type, NVML_VALUE_TYPE_UNSIGNED_INT) };
            // SAFETY: as above; the caller's in/out count.
            let room = unsafe { sample_count.read() };
            if !samples.is_null() && room == 0 {
                return NVML_ERROR_INVALID_ARGUMENT;
            }
            let found = samples_since(gpu, last_seen_time_stamp);
            if found.is_empty() {
                // SAFETY: as above.
                unsafe { sample_count.write(0) };
                return NVML_ERROR_NOT_FOUND;
            }
            if samples.is_null() {
                // SAFETY: as above.
                return unsafe { put(sample_count, found.len() as c_uint) };
            }
            let n = found.len().min(room as usize);
            for (i, (at, pct)) in found.iter().take(n).enumerate() {
                let sample = nvmlSample_t {
                    timeStamp: *at,
                    sampleValue: nvmlValue_t { uiVal: *pct },
                };
                // SAFETY: `samples` is non-NULL with room for `room >= n > i` entries.
                unsafe { samples.add(i).write(sample) };
            }
            // SAFETY: as above.
            unsafe { put(sample_count, n as c_uint) }
        },
    )
}
