//! GPM (GPU Performance Monitoring): pipe activity between two samples, as on Hopper and newer.
//!
//! A sample records its GPU, its scenario time and the model's pipe-seconds up to that time
//! (`SimulatedNode::pipe_seconds`), like the hardware counters a real sample snapshots. A metric between
//! two samples is the difference divided by the time between them: the exact average activity
//! over that window, in percent. A pipe the model does not know over the window (the scenario's
//! `gpm_unknown_pipes`, or an unknown value in a recording) answers that metric alone with
//! `NVML_ERROR_NOT_SUPPORTED`: nvml.h gives each metric its own return code
//! (`nvmlGpmMetric_t.nvmlReturn`, "If this is nonzero, then value is not valid").
//!
//! Sample handles point to heap tokens kept in [`SAMPLES`]; a handle is looked up by address
//! before use, so a freed or foreign handle gives `NVML_ERROR_INVALID_ARGUMENT`, never a crash.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::ptr::{addr_of, addr_of_mut};
use std::sync::{Mutex, MutexGuard, PoisonError};

use gpucost_sim::{PipeSeconds, Pipes};

use crate::abi::*;
use crate::{device_call, guarded, put, state};

/// What a filled sample holds.
#[derive(Debug, Clone, Copy)]
struct Record {
    gpu: u32,
    /// The MIG GPU instance of an `nvmlGpmMigSampleGet` sample.
    instance: Option<u32>,
    /// Scenario time of the sample.
    t: f64,
    /// Pipe-seconds from scenario time 0 to `t`.
    integral: PipeSeconds,
}

/// A live sample: its heap token (whose address is the handle) and, once filled, its record.
struct Slot {
    _token: Box<nvmlGpmSample_st>,
    record: Option<Record>,
}

/// Live samples by handle address. Lock order: the library lock (`state::lock`) first.
static SAMPLES: Mutex<BTreeMap<usize, Slot>> = Mutex::new(BTreeMap::new());

fn samples() -> MutexGuard<'static, BTreeMap<usize, Slot>> {
    SAMPLES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads one pipe of the model (`None`: unknown).
type PipeOf = fn(&Pipes) -> Option<f64>;

/// A metric this library answers: which pipe, and the names NVML gives with it.
struct Metric {
    pipe: PipeOf,
    short_name: &'static CStr,
    long_name: &'static CStr,
}

const PERCENT: &CStr = c"%";

/// The metrics simulated GPUs report; every other id answers `NVML_ERROR_NOT_SUPPORTED`.
fn metric(id: nvmlGpmMetricId_t) -> Option<Metric> {
    let (pipe, short_name, long_name): (PipeOf, &'static CStr, &'static CStr) = match id {
        NVML_GPM_METRIC_GRAPHICS_UTIL => (|p| p.sm_active, c"gr_util", c"Graphics utilization"),
        NVML_GPM_METRIC_SM_UTIL => (|p| p.sm_active, c"sm_util", c"SM utilization"),
        NVML_GPM_METRIC_SM_OCCUPANCY => (|p| p.sm_occupancy, c"sm_occupancy", c"SM occupancy"),
        NVML_GPM_METRIC_INTEGER_UTIL => (|_| Some(0.0), c"integer_util", c"Integer utilization"),
        NVML_GPM_METRIC_ANY_TENSOR_UTIL => (
            |p| p.tensor_active,
            c"any_tensor_util",
            c"Any tensor utilization",
        ),
        NVML_GPM_METRIC_DFMA_TENSOR_UTIL => (
            |p| p.dfma_tensor_active,
            c"dfma_tensor_util",
            c"DFMA tensor utilization",
        ),
        NVML_GPM_METRIC_HMMA_TENSOR_UTIL => (
            |p| p.hmma_active,
            c"hmma_tensor_util",
            c"HMMA tensor utilization",
        ),
        NVML_GPM_METRIC_IMMA_TENSOR_UTIL => (
            |p| p.imma_active,
            c"imma_tensor_util",
            c"IMMA tensor utilization",
        ),
        NVML_GPM_METRIC_DRAM_BW_UTIL => (
            |p| p.dram_active,
            c"dram_bw_util",
            c"DRAM bandwidth utilization",
        ),
        NVML_GPM_METRIC_FP64_UTIL => (|p| p.fp64_active, c"fp64_util", c"FP64 utilization"),
        NVML_GPM_METRIC_FP32_UTIL => (|p| p.fp32_active, c"fp32_util", c"FP32 utilization"),
        NVML_GPM_METRIC_FP16_UTIL => (|p| p.fp16_active, c"fp16_util", c"FP16 utilization"),
        _ => return None,
    };
    Some(Metric {
        pipe,
        short_name,
        long_name,
    })
}

/// Whether the GPU supports GPM: the scenario's `gpm`, by default Hopper and newer.
#[no_mangle]
pub unsafe extern "C" fn nvmlGpmQueryDeviceSupport(
    device: nvmlDevice_t,
    gpm_support: *mut nvmlGpmSupport_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlGpmQueryDeviceSupport");
    device_call(device, !gpm_support.is_null(), |gpu| {
        // SAFETY: non-NULL (checked by `device_call`), valid for an `nvmlGpmSupport_t`.
        let version = unsafe { addr_of!((*gpm_support).version).read() };
        if version != NVML_GPM_SUPPORT_VERSION {
            return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
        }
        let supported = c_uint::from(gpu.node.gpm_supported(gpu.index));
        // SAFETY: as above.
        unsafe { put(addr_of_mut!((*gpm_support).isSupportedDevice), supported) }
    })
}

/// GPM streaming is not simulated.
#[no_mangle]
pub unsafe extern "C" fn nvmlGpmQueryIfStreamingEnabled(
    device: nvmlDevice_t,
    state: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlGpmQueryIfStreamingEnabled");
    device_call(device, !state.is_null(), |_| NVML_ERROR_NOT_SUPPORTED)
}

/// GPM streaming is not simulated.
#[no_mangle]
pub unsafe extern "C" fn nvmlGpmSetStreamingEnabled(
    device: nvmlDevice_t,
    _state: c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlGpmSetStreamingEnabled");
    device_call(device, true, |_| NVML_ERROR_NOT_SUPPORTED)
}

/// A sample of one MIG GPU instance of a GPU in MIG mode: its jobs' pipe-seconds, relative to
/// the instance ("Read a sample of GPM metrics ... for a MIG GPU Instance", nvml.h:13925-13943).
/// `NOT_SUPPORTED` on a GPU without GPM or out of MIG mode, `INVALID_ARGUMENT` for a GPU
/// instance id the GPU does not have ("if the device or GPU instance ID is invalid", as
/// nvml-wrapper documents the call).
#[no_mangle]
pub unsafe extern "C" fn nvmlGpmMigSampleGet(
    device: nvmlDevice_t,
    gpu_instance_id: c_uint,
    gpm_sample: nvmlGpmSample_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlGpmMigSampleGet");
    device_call(device, !gpm_sample.is_null(), |gpu| {
        let mut samples = samples();
        let Some(slot) = samples.get_mut(&(gpm_sample as usize)) else {
            return NVML_ERROR_INVALID_ARGUMENT;
        };
        if !gpu.node.gpm_supported(gpu.index) || !gpu.mig_on() {
            return NVML_ERROR_NOT_SUPPORTED;
        }
        let exists = gpu
            .spec()
            .mig_instance(gpu_instance_id)
            .is_some_and(|(k, _)| gpu.node.mig_instance_exists(gpu.index, k, gpu.t));
        if !exists {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        if gpu.spec().gpm_no_permission {
            return NVML_ERROR_NO_PERMISSION;
        }
        slot.record = Some(Record {
            gpu: gpu.index,
            instance: Some(gpu_instance_id),
            t: gpu.t,
            integral: gpu.node.mig_pipe_seconds(gpu.index, gpu_instance_id, gpu.t),
        });
        NVML_SUCCESS
    })
}

/// A new, empty sample (heap-allocated; free it with `nvmlGpmSampleFree`).
#[no_mangle]
pub unsafe extern "C" fn nvmlGpmSampleAlloc(gpm_sample: *mut nvmlGpmSample_t) -> nvmlReturn_t {
    crate::calls::count("nvmlGpmSampleAlloc");
    guarded(|| {
        let library = state::lock();
        if library.active().is_none() {
            return NVML_ERROR_UNINITIALIZED;
        }
        if gpm_sample.is_null() {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        let token = Box::new(nvmlGpmSample_st { _token: 0 });
        let handle: nvmlGpmSample_t = std::ptr::from_ref(&*token).cast_mut();
        samples().insert(
            handle as usize,
            Slot {
                _token: token,
                record: None,
            },
        );
        // SAFETY: checked non-NULL above; valid for writing a handle by the NVML contract.
        unsafe { put(gpm_sample, handle) }
    })
}

/// Frees a sample. Works with or without an init (so nothing leaks after a shutdown); a handle
/// that is not a live sample gives `NVML_ERROR_INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn nvmlGpmSampleFree(gpm_sample: nvmlGpmSample_t) -> nvmlReturn_t {
    crate::calls::count("nvmlGpmSampleFree");
    guarded(|| match samples().remove(&(gpm_sample as usize)) {
        Some(_) => NVML_SUCCESS,
        None => NVML_ERROR_INVALID_ARGUMENT,
    })
}

/// Fills a sample with the GPU's pipe counters now. `NVML_ERROR_NOT_SUPPORTED` on a GPU
/// without GPM; `NVML_ERROR_NO_PERMISSION` on one with `gpm_no_permission` (NVML's answer to a
/// non-root caller's counter queries where profiling is restricted to administrators,
/// `NVreg_RestrictProfilingToAdminUsers=1`: gpuopenanalytics/pynvml#19,
/// NVIDIA/gpu-operator#1158).
#[no_mangle]
pub unsafe extern "C" fn nvmlGpmSampleGet(
    device: nvmlDevice_t,
    gpm_sample: nvmlGpmSample_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlGpmSampleGet");
    device_call(device, !gpm_sample.is_null(), |gpu| {
        let mut samples = samples();
        let Some(slot) = samples.get_mut(&(gpm_sample as usize)) else {
            return NVML_ERROR_INVALID_ARGUMENT;
        };
        if !gpu.node.gpm_supported(gpu.index) {
            return NVML_ERROR_NOT_SUPPORTED;
        }
        if gpu.spec().gpm_no_permission {
            return NVML_ERROR_NO_PERMISSION;
        }
        slot.record = Some(Record {
            gpu: gpu.index,
            instance: None,
            t: gpu.t,
            integral: gpu.node.pipe_seconds(gpu.index, gpu.t),
        });
        NVML_SUCCESS
    })
}

/// The requested metrics between `sample1` and `sample2` (taken in that order on one GPU), each
/// in percent (0..100) with its own return code: `NVML_ERROR_NOT_SUPPORTED` for a metric not
/// simulated.
#[no_mangle]
pub unsafe extern "C" fn nvmlGpmMetricsGet(metrics_get: *mut nvmlGpmMetricsGet_t) -> nvmlReturn_t {
    crate::calls::count("nvmlGpmMetricsGet");
    guarded(|| {
        let library = state::lock();
        let Some(model) = library.active() else {
            return NVML_ERROR_UNINITIALIZED;
        };
        if metrics_get.is_null() {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        let req = metrics_get;
        // SAFETY: `req` is non-NULL and points to an `nvmlGpmMetricsGet_t` by the NVML contract.
        // Only the header and the first `numMetrics` entries are read or written (a caller built
        // against an older nvml.h may have a shorter `metrics` array).
        let (version, count, s1, s2) = unsafe {
            (
                addr_of!((*req).version).read(),
                addr_of!((*req).numMetrics).read() as usize,
                addr_of!((*req).sample1).read(),
                addr_of!((*req).sample2).read(),
            )
        };
        if version != NVML_GPM_METRICS_GET_VERSION {
            return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
        }
        if count > NVML_GPM_METRIC_MAX {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        let (r1, r2) = {
            let samples = samples();
            let record = |s: nvmlGpmSample_t| samples.get(&(s as usize)).and_then(|s| s.record);
            match (record(s1), record(s2)) {
                (Some(r1), Some(r2)) => (r1, r2),
                _ => return NVML_ERROR_INVALID_ARGUMENT,
            }
        };
        if r1.gpu != r2.gpu || r1.instance != r2.instance || r2.t < r1.t {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        let node = &model.node;
        if !node.gpm_supported(r1.gpu) {
            return NVML_ERROR_NOT_SUPPORTED;
        }
        if !node.is_present(r1.gpu, model.now()) {
            return NVML_ERROR_GPU_IS_LOST;
        }
        let dt = r2.t - r1.t;
        // Two samples at the same moment: the activity at that moment.
        let window = if dt > 0.0 {
            r2.integral.minus(r1.integral).mean_over(dt)
        } else if let Some(gi) = r1.instance {
            node.mig_instance_state(r1.gpu, gi, r1.t)
                .map_or(Pipes::IDLE, |s| s.pipes)
        } else {
            node.pipes_between(r1.gpu, r1.t, r1.t)
        };
        // SAFETY: `req` is non-NULL and valid (see above); only the field's address is taken.
        let first = unsafe { addr_of_mut!((*req).metrics) }.cast::<nvmlGpmMetric_t>();
        for i in 0..count {
            // SAFETY: `i < numMetrics <= NVML_GPM_METRIC_MAX` entries of the caller's array.
            let entry = unsafe { first.add(i) };
            // SAFETY: as above.
            let id = unsafe { addr_of!((*entry).metricId).read() };
            let (code, value, info) = match metric(id) {
                Some(m) => {
                    let info = nvmlGpmMetricInfo_t {
                        shortName: m.short_name.as_ptr().cast_mut(),
                        longName: m.long_name.as_ptr().cast_mut(),
                        unit: PERCENT.as_ptr().cast_mut(),
                    };
                    match (m.pipe)(&window) {
                        Some(ratio) => (NVML_SUCCESS, ratio.clamp(0.0, 1.0) * 100.0, info),
                        None => (NVML_ERROR_NOT_SUPPORTED, 0.0, info),
                    }
                }
                None => (
                    NVML_ERROR_NOT_SUPPORTED,
                    0.0,
                    nvmlGpmMetricInfo_t {
                        shortName: std::ptr::null_mut(),
                        longName: std::ptr::null_mut(),
                        unit: std::ptr::null_mut(),
                    },
                ),
            };
            // SAFETY: as above; the fields are plain data.
            unsafe {
                addr_of_mut!((*entry).nvmlReturn).write(code);
                addr_of_mut!((*entry).value).write(value);
                addr_of_mut!((*entry).metricInfo).write(info);
            }
        }
        NVML_SUCCESS
    })
}
