//! The C types and constants of nvml.h that the exported functions use.
//!
//! Names follow nvml.h (and the `nvml-wrapper-sys` 0.10 bindings) so the functions in `lib.rs`
//! read like their C declarations. A unit test checks these layouts against the bindings.

#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]

pub use libc::{c_char, c_int, c_uint, c_ulonglong};

/// `nvmlReturn_t`: every NVML function returns one of these codes.
pub type nvmlReturn_t = c_uint;

pub const NVML_SUCCESS: nvmlReturn_t = 0;
pub const NVML_ERROR_UNINITIALIZED: nvmlReturn_t = 1;
pub const NVML_ERROR_INVALID_ARGUMENT: nvmlReturn_t = 2;
pub const NVML_ERROR_NOT_SUPPORTED: nvmlReturn_t = 3;
pub const NVML_ERROR_NO_PERMISSION: nvmlReturn_t = 4;
pub const NVML_ERROR_NOT_FOUND: nvmlReturn_t = 6;
pub const NVML_ERROR_INSUFFICIENT_SIZE: nvmlReturn_t = 7;
pub const NVML_ERROR_TIMEOUT: nvmlReturn_t = 10;
pub const NVML_ERROR_FUNCTION_NOT_FOUND: nvmlReturn_t = 13;
pub const NVML_ERROR_GPU_IS_LOST: nvmlReturn_t = 15;
/// nvml.h: "RM detects a driver/library version mismatch" (the kernel module and the library
/// in the caller's memory are not the same release: the driver was upgraded under it).
pub const NVML_ERROR_LIB_RM_VERSION_MISMATCH: nvmlReturn_t = 18;
pub const NVML_ERROR_ARGUMENT_VERSION_MISMATCH: nvmlReturn_t = 25;
pub const NVML_ERROR_UNKNOWN: nvmlReturn_t = 999;

/// The opaque struct a device handle points to. Here it is one slot of a static table (see
/// `handles.rs`); callers never look inside.
#[repr(C)]
pub struct nvmlDevice_st {
    pub(crate) index: c_uint,
}

/// `nvmlDevice_t`, a device handle.
pub type nvmlDevice_t = *mut nvmlDevice_st;

/// `nvmlClockType_t`.
pub type nvmlClockType_t = c_uint;
pub const NVML_CLOCK_GRAPHICS: nvmlClockType_t = 0;
pub const NVML_CLOCK_SM: nvmlClockType_t = 1;
pub const NVML_CLOCK_MEM: nvmlClockType_t = 2;
pub const NVML_CLOCK_VIDEO: nvmlClockType_t = 3;

/// `nvmlTemperatureSensors_t`; NVML knows only the GPU die sensor.
pub type nvmlTemperatureSensors_t = c_uint;
pub const NVML_TEMPERATURE_GPU: nvmlTemperatureSensors_t = 0;

/// `nvmlTemperature_t` (v1), as `nvmlDeviceGetTemperatureV` fills it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlTemperature_t {
    pub version: c_uint,
    pub sensorType: nvmlTemperatureSensors_t,
    pub temperature: c_int,
}

/// `nvmlTemperature_v1`, i.e. `NVML_STRUCT_VERSION(Temperature, 1)`.
pub const nvmlTemperature_v1: c_uint =
    (std::mem::size_of::<nvmlTemperature_t>() as c_uint) | (1 << 24);

/// `NVML_VALUE_NOT_AVAILABLE` as the instance ids of a process outside MIG read.
pub const NO_INSTANCE: c_uint = 0xFFFF_FFFF;

/// `nvmlUtilization_t`, in percent.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlUtilization_t {
    pub gpu: c_uint,
    pub memory: c_uint,
}

/// `nvmlMemory_t` (v1), in bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlMemory_t {
    pub total: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

/// `nvmlMemory_v2_t`, in bytes. The caller sets `version` to [`nvmlMemory_v2`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlMemory_v2_t {
    pub version: c_uint,
    pub total: c_ulonglong,
    pub reserved: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

/// `nvmlMemory_v2`, i.e. `NVML_STRUCT_VERSION(Memory, 2)`: the struct size with the version in
/// the top byte.
pub const nvmlMemory_v2: c_uint = (std::mem::size_of::<nvmlMemory_v2_t>() as c_uint) | (2 << 24);

/// `nvmlProcessInfo_t` as the `_v3` running-process calls fill it (the `v2` struct layout).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlProcessInfo_t {
    pub pid: c_uint,
    pub usedGpuMemory: c_ulonglong,
    pub gpuInstanceId: c_uint,
    pub computeInstanceId: c_uint,
}

/// `nvmlProcessDetail_v1_t`: one entry of `nvmlDeviceGetRunningProcessDetailList`, and the
/// layout R535.54 drivers wrote from the `_v3` running-process calls (`nvmlProcessInfo_v3_t`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlProcessDetail_v1_t {
    pub pid: c_uint,
    pub usedGpuMemory: c_ulonglong,
    pub gpuInstanceId: c_uint,
    pub computeInstanceId: c_uint,
    pub usedGpuCcProtectedMemory: c_ulonglong,
}

/// `nvmlProcessDetailList_v1_t`, the request and answer of
/// `nvmlDeviceGetRunningProcessDetailList`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlProcessDetailList_v1_t {
    pub version: c_uint,
    pub mode: c_uint,
    pub numProcArrayEntries: c_uint,
    pub procArray: *mut nvmlProcessDetail_v1_t,
}

/// `nvmlProcessDetailList_v1`, i.e. `NVML_STRUCT_VERSION(ProcessDetailList, 1)`.
pub const nvmlProcessDetailList_v1: c_uint =
    (std::mem::size_of::<nvmlProcessDetailList_v1_t>() as c_uint) | (1 << 24);

/// `nvmlProcessMode_t`: which processes `nvmlDeviceGetRunningProcessDetailList` lists.
pub const NVML_PROCESS_MODE_COMPUTE: c_uint = 0;
pub const NVML_PROCESS_MODE_GRAPHICS: c_uint = 1;
pub const NVML_PROCESS_MODE_MPS: c_uint = 2;

/// `NVML_VALUE_NOT_AVAILABLE` as an `unsigned long long`.
pub const VALUE_NOT_AVAILABLE_ULL: c_ulonglong = u64::MAX;

/// `nvmlProcessUtilizationSample_t` as `nvmlDeviceGetProcessUtilization` fills it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlProcessUtilizationSample_t {
    pub pid: c_uint,
    /// Microseconds since the epoch.
    pub timeStamp: c_ulonglong,
    pub smUtil: c_uint,
    pub memUtil: c_uint,
    pub encUtil: c_uint,
    pub decUtil: c_uint,
}

/// `nvmlValueType_t`: which member of an [`nvmlValue_t`] holds the value.
pub type nvmlValueType_t = c_uint;
pub const NVML_VALUE_TYPE_UNSIGNED_INT: nvmlValueType_t = 1;
pub const NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: nvmlValueType_t = 3;

/// `nvmlValue_t`: a sample's or a field's value, by its [`nvmlValueType_t`].
#[repr(C)]
#[derive(Clone, Copy)]
pub union nvmlValue_t {
    pub dVal: f64,
    pub siVal: c_int,
    pub uiVal: c_uint,
    pub ulVal: libc::c_ulong,
    pub ullVal: c_ulonglong,
    pub sllVal: libc::c_longlong,
    pub usVal: libc::c_ushort,
}

/// `nvmlSample_t`: one sample of `nvmlDeviceGetSamples`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct nvmlSample_t {
    /// CPU timestamp in microseconds (on the driver's clock, not the unix epoch).
    pub timeStamp: c_ulonglong,
    pub sampleValue: nvmlValue_t,
}

/// `nvmlSamplingType_t`: which buffer `nvmlDeviceGetSamples` reads.
pub type nvmlSamplingType_t = c_uint;
pub const NVML_GPU_UTILIZATION_SAMPLES: nvmlSamplingType_t = 1;

/// `nvmlFieldValue_t`: one field of an `nvmlDeviceGetFieldValues` call; the caller sets
/// `fieldId` (and `scopeId`), the library the rest.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct nvmlFieldValue_t {
    pub fieldId: c_uint,
    pub scopeId: c_uint,
    /// CPU timestamp of the value, microseconds since 1970.
    pub timestamp: libc::c_longlong,
    pub latencyUsec: libc::c_longlong,
    pub valueType: nvmlValueType_t,
    pub nvmlReturn: nvmlReturn_t,
    pub value: nvmlValue_t,
}

/// `nvmlPerfPolicyType_t`: the violation-time counters of `nvmlDeviceGetViolationStatus`.
pub type nvmlPerfPolicyType_t = c_uint;
pub const NVML_PERF_POLICY_POWER: nvmlPerfPolicyType_t = 0;
pub const NVML_PERF_POLICY_THERMAL: nvmlPerfPolicyType_t = 1;
pub const NVML_PERF_POLICY_SYNC_BOOST: nvmlPerfPolicyType_t = 2;
pub const NVML_PERF_POLICY_BOARD_LIMIT: nvmlPerfPolicyType_t = 3;
pub const NVML_PERF_POLICY_LOW_UTILIZATION: nvmlPerfPolicyType_t = 4;
pub const NVML_PERF_POLICY_RELIABILITY: nvmlPerfPolicyType_t = 5;
pub const NVML_PERF_POLICY_TOTAL_APP_CLOCKS: nvmlPerfPolicyType_t = 10;
pub const NVML_PERF_POLICY_TOTAL_BASE_CLOCKS: nvmlPerfPolicyType_t = 11;

/// `nvmlViolationTime_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlViolationTime_t {
    /// CPU timestamp in microseconds.
    pub referenceTime: c_ulonglong,
    /// Nanoseconds.
    pub violationTime: c_ulonglong,
}

/// `nvmlPciInfo_t` as `nvmlDeviceGetPciInfo_v3` fills it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlPciInfo_t {
    pub busIdLegacy: [c_char; 16],
    pub domain: c_uint,
    pub bus: c_uint,
    pub device: c_uint,
    pub pciDeviceId: c_uint,
    pub pciSubSystemId: c_uint,
    pub busId: [c_char; 32],
}

/// `nvmlGpmSample_st`: what a GPM sample handle points to. Opaque to callers; here a heap
/// token whose address names the sample (see `gpm.rs`).
#[repr(C)]
pub struct nvmlGpmSample_st {
    pub(crate) _token: u8,
}

/// `nvmlGpmSample_t`, a GPM sample handle.
pub type nvmlGpmSample_t = *mut nvmlGpmSample_st;

/// `nvmlGpmMetricId_t`.
pub type nvmlGpmMetricId_t = c_uint;
pub const NVML_GPM_METRIC_GRAPHICS_UTIL: nvmlGpmMetricId_t = 1;
pub const NVML_GPM_METRIC_SM_UTIL: nvmlGpmMetricId_t = 2;
pub const NVML_GPM_METRIC_SM_OCCUPANCY: nvmlGpmMetricId_t = 3;
pub const NVML_GPM_METRIC_INTEGER_UTIL: nvmlGpmMetricId_t = 4;
pub const NVML_GPM_METRIC_ANY_TENSOR_UTIL: nvmlGpmMetricId_t = 5;
pub const NVML_GPM_METRIC_DFMA_TENSOR_UTIL: nvmlGpmMetricId_t = 6;
pub const NVML_GPM_METRIC_HMMA_TENSOR_UTIL: nvmlGpmMetricId_t = 7;
pub const NVML_GPM_METRIC_IMMA_TENSOR_UTIL: nvmlGpmMetricId_t = 9;
pub const NVML_GPM_METRIC_DRAM_BW_UTIL: nvmlGpmMetricId_t = 10;
pub const NVML_GPM_METRIC_FP64_UTIL: nvmlGpmMetricId_t = 11;
pub const NVML_GPM_METRIC_FP32_UTIL: nvmlGpmMetricId_t = 12;
pub const NVML_GPM_METRIC_FP16_UTIL: nvmlGpmMetricId_t = 13;
/// `NVML_GPM_METRIC_MAX`: the length of `nvmlGpmMetricsGet_t::metrics`.
pub const NVML_GPM_METRIC_MAX: usize = 210;

/// `NVML_GPM_METRICS_GET_VERSION`: what the caller puts in `nvmlGpmMetricsGet_t::version`.
pub const NVML_GPM_METRICS_GET_VERSION: c_uint = 1;
/// `NVML_GPM_SUPPORT_VERSION`: what the caller puts in `nvmlGpmSupport_t::version`.
pub const NVML_GPM_SUPPORT_VERSION: c_uint = 1;

/// The names and unit NVML gives with a metric (static strings; the caller must not free them).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlGpmMetricInfo_t {
    pub shortName: *mut c_char,
    pub longName: *mut c_char,
    pub unit: *mut c_char,
}

/// `nvmlGpmMetric_t`: the caller sets `metricId`; NVML fills the rest.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlGpmMetric_t {
    pub metricId: c_uint,
    pub nvmlReturn: nvmlReturn_t,
    pub value: f64,
    pub metricInfo: nvmlGpmMetricInfo_t,
}

/// `nvmlGpmMetricsGet_t`: the request and answer of `nvmlGpmMetricsGet`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlGpmMetricsGet_t {
    pub version: c_uint,
    pub numMetrics: c_uint,
    pub sample1: nvmlGpmSample_t,
    pub sample2: nvmlGpmSample_t,
    pub metrics: [nvmlGpmMetric_t; NVML_GPM_METRIC_MAX],
}

/// `nvmlGpmSupport_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlGpmSupport_t {
    pub version: c_uint,
    pub isSupportedDevice: c_uint,
}

/// `nvmlEventSet_st`: what an event-set handle points to; a heap token (see `events.rs`).
#[repr(C)]
pub struct nvmlEventSet_st {
    pub(crate) _token: u8,
}

/// `nvmlEventSet_t`, an event-set handle.
pub type nvmlEventSet_t = *mut nvmlEventSet_st;

/// `nvmlEventTypeSingleBitEccError`.
pub const nvmlEventTypeSingleBitEccError: c_ulonglong = 0x1;
/// `nvmlEventTypeDoubleBitEccError`.
pub const nvmlEventTypeDoubleBitEccError: c_ulonglong = 0x2;
/// `nvmlEventTypeXidCriticalError`.
pub const nvmlEventTypeXidCriticalError: c_ulonglong = 0x8;
/// `nvmlEventTypeGpuUnavailableError`.
pub const nvmlEventTypeGpuUnavailableError: c_ulonglong = 0x4000;

/// `nvmlEventData_t`, one delivered event.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlEventData_t {
    pub device: nvmlDevice_t,
    pub eventType: c_ulonglong,
    pub eventData: c_ulonglong,
    pub gpuInstanceId: c_uint,
    pub computeInstanceId: c_uint,
}

/// The text `nvmlErrorString` gives for a return code, as nvml.h's documentation words it.
pub fn error_string(code: nvmlReturn_t) -> &'static std::ffi::CStr {
    match code {
        0 => c"Success",
        1 => c"Uninitialized",
        2 => c"Invalid Argument",
        3 => c"Not Supported",
        4 => c"Insufficient Permissions",
        5 => c"Already Initialized",
        6 => c"Not Found",
        7 => c"Insufficient Size",
        8 => c"Insufficient External Power",
        9 => c"Driver Not Loaded",
        10 => c"Timeout",
        11 => c"Interrupt request issue",
        12 => c"NVML Shared Library Not Found",
        13 => c"Function Not Found",
        14 => c"Corrupted infoROM",
        15 => c"GPU is lost",
        16 => c"GPU requires restart",
        17 => c"The operating system has blocked the request.",
        18 => c"RM has detected an NVML/RM version mismatch.",
        19 => c"In use by another client",
        20 => c"Insufficient Memory",
        21 => c"No data",
        22 => c"The requested vgpu operation is not available on target device, because ECC is enabled",
        23 => c"Ran out of critical resources, other than memory",
        24 => c"The requested frequency is not supported",
        25 => c"The provided version is invalid/unsupported",
        26 => c"The requested functionality has been deprecated",
        27 => c"The system is not ready for the request",
        28 => c"The GPU was not found",
        29 => c"The requested operation is in an invalid state",
        _ => c"Unknown Error",
    }
}

#[cfg(test)]
mod tests {
    //! The structs above must be laid out exactly like the bindings nvml-wrapper passes in.
    use super::*;
    use nvml_wrapper_sys::bindings as sys;
    use std::mem::{align_of, offset_of, size_of};

    macro_rules! same_layout {
        ($ours:ty, $theirs:ty, [$($field:ident),*]) => {
            assert_eq!(size_of::<$ours>(), size_of::<$theirs>(), stringify!($ours));
            assert_eq!(align_of::<$ours>(), align_of::<$theirs>(), stringify!($ours));
            $(assert_eq!(
                offset_of!($ours, $field),
                offset_of!($theirs, $field),
                concat!(stringify!($ours), ".", stringify!($field))
            );)*
        };
    }

    #[test]
    fn structs_match_the_bindings() {
        same_layout!(
            nvmlTemperature_t,
            sys::nvmlTemperature_t,
            [version, sensorType, temperature]
        );
        same_layout!(
            nvmlViolationTime_t,
            sys::nvmlViolationTime_t,
            [referenceTime, violationTime]
        );
        same_layout!(nvmlValue_t, sys::nvmlValue_t, [dVal, uiVal, ullVal]);
        same_layout!(nvmlSample_t, sys::nvmlSample_t, [timeStamp, sampleValue]);
        same_layout!(
            nvmlFieldValue_t,
            sys::nvmlFieldValue_t,
            [
                fieldId,
                scopeId,
                timestamp,
                latencyUsec,
                valueType,
                nvmlReturn,
                value
            ]
        );
        same_layout!(nvmlUtilization_t, sys::nvmlUtilization_t, [gpu, memory]);
        same_layout!(nvmlMemory_t, sys::nvmlMemory_t, [total, free, used]);
        same_layout!(
            nvmlMemory_v2_t,
            sys::nvmlMemory_v2_t,
            [version, total, reserved, free, used]
        );
        same_layout!(
            nvmlProcessInfo_t,
            sys::nvmlProcessInfo_t,
            [pid, usedGpuMemory, gpuInstanceId, computeInstanceId]
        );
        same_layout!(
            nvmlProcessDetail_v1_t,
            sys::nvmlProcessDetail_v1_t,
            [
                pid,
                usedGpuMemory,
                gpuInstanceId,
                computeInstanceId,
                usedGpuCcProtectedMemory
            ]
        );
        same_layout!(
            nvmlProcessDetailList_v1_t,
            sys::nvmlProcessDetailList_v1_t,
            [version, mode, numProcArrayEntries, procArray]
        );
        same_layout!(
            nvmlProcessUtilizationSample_t,
            sys::nvmlProcessUtilizationSample_t,
            [pid, timeStamp, smUtil, memUtil, encUtil, decUtil]
        );
        same_layout!(
            nvmlPciInfo_t,
            sys::nvmlPciInfo_t,
            [
                busIdLegacy,
                domain,
                bus,
                device,
                pciDeviceId,
                pciSubSystemId,
                busId
            ]
        );
        same_layout!(
            nvmlGpmMetricInfo_t,
            sys::nvmlGpmMetric_t__bindgen_ty_1,
            [shortName, longName, unit]
        );
        same_layout!(
            nvmlGpmMetric_t,
            sys::nvmlGpmMetric_t,
            [metricId, nvmlReturn, value, metricInfo]
        );
        same_layout!(
            nvmlGpmMetricsGet_t,
            sys::nvmlGpmMetricsGet_t,
            [version, numMetrics, sample1, sample2, metrics]
        );
        same_layout!(
            nvmlGpmSupport_t,
            sys::nvmlGpmSupport_t,
            [version, isSupportedDevice]
        );
        same_layout!(
            nvmlEventData_t,
            sys::nvmlEventData_t,
            [
                device,
                eventType,
                eventData,
                gpuInstanceId,
                computeInstanceId
            ]
        );
    }

    #[test]
    fn constants_match_the_bindings() {
        assert_eq!(nvmlMemory_v2, 0x0200_0028);
        for (ours, theirs) in [
            (
                NVML_PERF_POLICY_POWER,
                sys::nvmlPerfPolicyType_enum_NVML_PERF_POLICY_POWER,
            ),
            (
                NVML_PERF_POLICY_THERMAL,
                sys::nvmlPerfPolicyType_enum_NVML_PERF_POLICY_THERMAL,
            ),
            (
                NVML_PERF_POLICY_SYNC_BOOST,
                sys::nvmlPerfPolicyType_enum_NVML_PERF_POLICY_SYNC_BOOST,
            ),
            (
                NVML_PERF_POLICY_BOARD_LIMIT,
                sys::nvmlPerfPolicyType_enum_NVML_PERF_POLICY_BOARD_LIMIT,
            ),
            (
                NVML_PERF_POLICY_LOW_UTILIZATION,
                sys::nvmlPerfPolicyType_enum_NVML_PERF_POLICY_LOW_UTILIZATION,
            ),
            (
                NVML_PERF_POLICY_RELIABILITY,
                sys::nvmlPerfPolicyType_enum_NVML_PERF_POLICY_RELIABILITY,
            ),
            (
                NVML_PERF_POLICY_TOTAL_APP_CLOCKS,
                sys::nvmlPerfPolicyType_enum_NVML_PERF_POLICY_TOTAL_APP_CLOCKS,
            ),
            (
                NVML_PERF_POLICY_TOTAL_BASE_CLOCKS,
                sys::nvmlPerfPolicyType_enum_NVML_PERF_POLICY_TOTAL_BASE_CLOCKS,
            ),
        ] {
            assert_eq!(ours, theirs);
        }
        assert_eq!(
            NVML_VALUE_TYPE_UNSIGNED_INT,
            sys::nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT
        );
        assert_eq!(
            NVML_GPU_UTILIZATION_SAMPLES,
            sys::nvmlSamplingType_enum_NVML_GPU_UTILIZATION_SAMPLES
        );
        assert_eq!(
            NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
            sys::nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
        );
        let codes = [
            (NVML_SUCCESS, sys::nvmlReturn_enum_NVML_SUCCESS),
            (
                NVML_ERROR_UNINITIALIZED,
                sys::nvmlReturn_enum_NVML_ERROR_UNINITIALIZED,
            ),
            (
                NVML_ERROR_INVALID_ARGUMENT,
                sys::nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
            ),
            (
                NVML_ERROR_NOT_SUPPORTED,
                sys::nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED,
            ),
            (
                NVML_ERROR_NO_PERMISSION,
                sys::nvmlReturn_enum_NVML_ERROR_NO_PERMISSION,
            ),
            (
                NVML_ERROR_NOT_FOUND,
                sys::nvmlReturn_enum_NVML_ERROR_NOT_FOUND,
            ),
            (
                NVML_ERROR_INSUFFICIENT_SIZE,
                sys::nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE,
            ),
            (
                NVML_ERROR_GPU_IS_LOST,
                sys::nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST,
            ),
            (
                NVML_ERROR_LIB_RM_VERSION_MISMATCH,
                sys::nvmlReturn_enum_NVML_ERROR_LIB_RM_VERSION_MISMATCH,
            ),
            (
                NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
                sys::nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
            ),
            (NVML_ERROR_UNKNOWN, sys::nvmlReturn_enum_NVML_ERROR_UNKNOWN),
        ];
        for (ours, theirs) in codes {
            assert_eq!(ours, theirs);
        }
        assert_eq!(
            NVML_CLOCK_GRAPHICS,
            sys::nvmlClockType_enum_NVML_CLOCK_GRAPHICS
        );
        assert_eq!(NVML_CLOCK_SM, sys::nvmlClockType_enum_NVML_CLOCK_SM);
        assert_eq!(NVML_CLOCK_MEM, sys::nvmlClockType_enum_NVML_CLOCK_MEM);
        assert_eq!(NVML_CLOCK_VIDEO, sys::nvmlClockType_enum_NVML_CLOCK_VIDEO);
        assert_eq!(
            NVML_TEMPERATURE_GPU,
            sys::nvmlTemperatureSensors_enum_NVML_TEMPERATURE_GPU
        );
        assert_eq!(NVML_ERROR_TIMEOUT, sys::nvmlReturn_enum_NVML_ERROR_TIMEOUT);
        assert_eq!(
            NVML_ERROR_FUNCTION_NOT_FOUND,
            sys::nvmlReturn_enum_NVML_ERROR_FUNCTION_NOT_FOUND
        );
        assert_eq!(nvmlTemperature_v1, 0x0100_000C);
        assert_eq!(
            NVML_GPM_METRIC_MAX,
            sys::nvmlGpmMetricId_t_NVML_GPM_METRIC_MAX as usize
        );
        assert_eq!(
            NVML_GPM_METRICS_GET_VERSION,
            sys::NVML_GPM_METRICS_GET_VERSION
        );
        assert_eq!(NVML_GPM_SUPPORT_VERSION, sys::NVML_GPM_SUPPORT_VERSION);
        for (ours, theirs) in [
            (
                nvmlEventTypeXidCriticalError,
                sys::nvmlEventTypeXidCriticalError,
            ),
            (
                nvmlEventTypeSingleBitEccError,
                sys::nvmlEventTypeSingleBitEccError,
            ),
            (
                nvmlEventTypeDoubleBitEccError,
                sys::nvmlEventTypeDoubleBitEccError,
            ),
            (
                nvmlEventTypeGpuUnavailableError,
                sys::nvmlEventTypeGpuUnavailableError,
            ),
        ] {
            assert_eq!(ours, u64::from(theirs));
        }
        // NVML_STRUCT_VERSION(ProcessDetailList, 1): 24 bytes, version 1.
        assert_eq!(nvmlProcessDetailList_v1, 0x0100_0018);
        let metrics = [
            (
                NVML_GPM_METRIC_GRAPHICS_UTIL,
                sys::nvmlGpmMetricId_t_NVML_GPM_METRIC_GRAPHICS_UTIL,
            ),
            (
                NVML_GPM_METRIC_SM_UTIL,
                sys::nvmlGpmMetricId_t_NVML_GPM_METRIC_SM_UTIL,
            ),
            (
                NVML_GPM_METRIC_SM_OCCUPANCY,
                sys::nvmlGpmMetricId_t_NVML_GPM_METRIC_SM_OCCUPANCY,
            ),
            (
                NVML_GPM_METRIC_INTEGER_UTIL,
                sys::nvmlGpmMetricId_t_NVML_GPM_METRIC_INTEGER_UTIL,
            ),
            (
                NVML_GPM_METRIC_ANY_TENSOR_UTIL,
                sys::nvmlGpmMetricId_t_NVML_GPM_METRIC_ANY_TENSOR_UTIL,
            ),
            (
                NVML_GPM_METRIC_DFMA_TENSOR_UTIL,
                sys::nvmlGpmMetricId_t_NVML_GPM_METRIC_DFMA_TENSOR_UTIL,
            ),
            (
                NVML_GPM_METRIC_HMMA_TENSOR_UTIL,
                sys::nvmlGpmMetricId_t_NVML_GPM_METRIC_HMMA_TENSOR_UTIL,
            ),
            (
                NVML_GPM_METRIC_IMMA_TENSOR_UTIL,
                sys::nvmlGpmMetricId_t_NVML_GPM_METRIC_IMMA_TENSOR_UTIL,
            ),
            (
                NVML_GPM_METRIC_DRAM_BW_UTIL,
                sys::nvmlGpmMetricId_t_NVML_GPM_METRIC_DRAM_BW_UTIL,
            ),
            (
                NVML_GPM_METRIC_FP64_UTIL,
                sys::nvmlGpmMetricId_t_NVML_GPM_METRIC_FP64_UTIL,
            ),
            (
                NVML_GPM_METRIC_FP32_UTIL,
                sys::nvmlGpmMetricId_t_NVML_GPM_METRIC_FP32_UTIL,
            ),
            (
                NVML_GPM_METRIC_FP16_UTIL,
                sys::nvmlGpmMetricId_t_NVML_GPM_METRIC_FP16_UTIL,
            ),
        ];
        for (ours, theirs) in metrics {
            assert_eq!(ours, theirs);
        }
    }
}
