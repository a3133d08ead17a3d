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
pub const NVML_ERROR_NOT_FOUND: nvmlReturn_t = 6;
pub const NVML_ERROR_INSUFFICIENT_SIZE: nvmlReturn_t = 7;
pub const NVML_ERROR_GPU_IS_LOST: nvmlReturn_t = 15;
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
    }

    #[test]
    fn constants_match_the_bindings() {
        assert_eq!(nvmlMemory_v2, 0x0200_0028);
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
    }
}
