//! MIG (Multi-Instance GPU): a GPU in MIG mode, its GPU instances as MIG device handles, and the
//! calls that answer differently on it.
//!
//! What the real library does, and where that is said (`nvml.h:N` is line N of NVIDIA/go-nvml's
//! `gen/nvml/nvml.h` at commit 2f9e261):
//! - `nvmlDeviceGetMigMode` gives the current and pending mode (nvml.h:12783-12803); here both
//!   are the scenario's mode at the moment of the call (`mig`, `mig_enable`, `mig_disable`), on
//!   the products that have MIG (A100, A30, H100, H200, GH200, B200), `NOT_SUPPORTED` on others.
//! - `nvmlDeviceGetMaxMigDeviceCount` "Returns zero if MIG is not supported or enabled"
//!   (nvml.h:13400); it is the most MIG devices the GPU can hold, not how many exist
//!   (NVIDIA/go-nvml#60): here the GPU's `mig_slices` (one per 1g slice).
//! - `nvmlDeviceGetMigDeviceHandleByIndex` gives the MIG device at an index below that count, or
//!   `NOT_FOUND` "if no valid MIG device was found at index" (nvml.h:13416-13440). A MIG handle is
//!   invalid once its instance is gone (nvml.h:13418-13423): here every call on it answers
//!   `INVALID_ARGUMENT` while the GPU is out of MIG mode.
//! - GPU instances are created and destroyed while the GPU stays in MIG mode (the scenario's
//!   `created_at_s`, `destroyed_at_s`): an index whose instance is gone answers `NOT_FOUND`,
//!   and its old handle `INVALID_ARGUMENT`; the other instances keep their indices.
//! - On a MIG device handle: its `MIG-...` UUID, its name (the parent's with ` MIG <profile>`,
//!   the form `nvidia-smi -L` prints, e.g. hashicorp/nomad-device-nvidia PR 53), its own memory
//!   (nvml.h:6678-6680: "Per-instance information can be queried by using specific MIG device
//!   handles"), `nvmlDeviceGetGpuInstanceId`, `nvmlDeviceGetComputeInstanceId` (one compute
//!   instance, id 0, spanning each GPU instance), `nvmlDeviceGetDeviceHandleFromMigDeviceHandle`.
//!   Other calls on it answer `INVALID_ARGUMENT`.
//! - On the parent in MIG mode: GPU utilization "is not currently supported" (nvml.h:7075), nor
//!   are utilization samples (nvml.h:7609-7610) or process utilization (nvml.h:8512): all
//!   `NOT_SUPPORTED`. Its process lists hold every instance's processes, each entry with its
//!   `gpuInstanceId` and `computeInstanceId` (nvml.h:7378-7380: aggregate information on the
//!   device handle). Power and the energy counter stay the whole board's.

use gpucost_sim::MigInstanceSpec;

use crate::abi::*;
use crate::{guarded, put, put_str, state, Gpu};

/// The products with MIG: Ampere A100 and A30, Hopper, Blackwell B200.
const MIG_PRODUCTS: [&str; 6] = ["A100", "A30", "H100", "H200", "GH200", "B200"];

fn mig_capable(model: &str) -> bool {
    MIG_PRODUCTS.iter().any(|p| model.contains(p))
}

/// One MIG device of a GPU in MIG mode, as a call on its handle sees it.
pub(crate) struct MigDevice<'a> {
    pub(crate) gpu: &'a Gpu<'a>,
    pub(crate) spec: &'a MigInstanceSpec,
    /// Its GPU instance id.
    pub(crate) gi: u32,
}

/// The checks of a call on a MIG device handle: initialised, a MIG handle of ours whose GPU is
/// present, in MIG mode and has that instance, the arguments. Then `answer`.
pub(crate) fn mig_call(
    device: nvmlDevice_t,
    args_ok: bool,
    answer: impl FnOnce(&MigDevice<'_>) -> nvmlReturn_t,
) -> nvmlReturn_t {
    guarded(|| {
        let library = state::lock();
        let model = match library.check() {
            Ok(m) => m,
            Err(code) => return code,
        };
        let Some((index, k)) = state::mig_of(device).filter(|(i, _)| *i < model.node.gpu_count())
        else {
            return NVML_ERROR_INVALID_ARGUMENT;
        };
        let t = model.now();
        if !model.node.is_present(index, t) {
            return NVML_ERROR_GPU_IS_LOST;
        }
        let gpu = Gpu {
            node: &model.node,
            index,
            t,
            unix: state::unix_now(),
        };
        let spec = gpu.spec();
        let (Some(m), true) = (
            spec.mig_instances.get(k),
            gpu.node.mig_instance_exists(index, k, t),
        ) else {
            return NVML_ERROR_INVALID_ARGUMENT;
        };
        if !args_ok {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        let gi = spec.mig_instance_ids()[k];
        answer(&MigDevice {
            gpu: &gpu,
            spec: m,
            gi,
        })
    })
}

impl MigDevice<'_> {
    pub(crate) fn uuid(&self) -> String {
        self.gpu
            .node
            .mig_uuid(self.gpu.index, self.gi)
            .unwrap_or_default()
    }

    pub(crate) fn name(&self) -> String {
        format!("{} MIG {}", self.gpu.spec().model, self.spec.profile)
    }

    /// (total, used) bytes of the instance's own memory.
    pub(crate) fn memory_bytes(&self) -> (u64, u64) {
        self.gpu
            .node
            .mig_instance_state(self.gpu.index, self.gi, self.gpu.t)
            .map_or((0, 0), |s| (s.memory_total_bytes, s.memory_used_bytes))
    }
}

/// The current and pending MIG mode (`NVML_DEVICE_MIG_ENABLE` = 1, `_DISABLE` = 0).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: nvmlDevice_t,
    current_mode: *mut c_uint,
    pending_mode: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetMigMode");
    crate::device_call(
        device,
        !current_mode.is_null() && !pending_mode.is_null(),
        |gpu| {
            if !mig_capable(&gpu.spec().model) {
                return NVML_ERROR_NOT_SUPPORTED;
            }
            let mode = c_uint::from(gpu.mig_on());
            // SAFETY: both checked non-NULL by `device_call`.
            unsafe {
                put(current_mode, mode);
                put(pending_mode, mode)
            }
        },
    )
}

/// The most MIG devices the GPU can hold: its `mig_slices` in MIG mode, else 0.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxMigDeviceCount(
    device: nvmlDevice_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetMaxMigDeviceCount");
    crate::device_call(device, !count.is_null(), |gpu| {
        let n = if gpu.mig_on() && mig_capable(&gpu.spec().model) {
            gpu.spec().mig_slices
        } else {
            0
        };
        // SAFETY: checked non-NULL by `device_call`.
        unsafe { put(count, n) }
    })
}

/// The handle of the GPU's `index`-th MIG device.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: nvmlDevice_t,
    index: c_uint,
    mig_device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetMigDeviceHandleByIndex");
    crate::device_call(device, !mig_device.is_null(), |gpu| {
        if !mig_capable(&gpu.spec().model) {
            return NVML_ERROR_NOT_SUPPORTED;
        }
        let max = if gpu.mig_on() {
            gpu.spec().mig_slices
        } else {
            0
        };
        if index >= max {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        if !gpu
            .node
            .mig_instance_exists(gpu.index, index as usize, gpu.t)
        {
            return NVML_ERROR_NOT_FOUND;
        }
        // SAFETY: checked non-NULL by `device_call`.
        unsafe { put(mig_device, state::mig_handle(gpu.index, index as usize)) }
    })
}

/// Whether a handle is a MIG device's: 1 for ours, 0 for a GPU's.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceIsMigDeviceHandle(
    device: nvmlDevice_t,
    is_mig: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceIsMigDeviceHandle");
    if state::mig_of(device).is_some() {
        // SAFETY: checked non-NULL by `mig_call`.
        return mig_call(device, !is_mig.is_null(), |_| unsafe { put(is_mig, 1) });
    }
    // SAFETY: checked non-NULL by `device_call`.
    crate::device_call(device, !is_mig.is_null(), |_| unsafe { put(is_mig, 0) })
}

/// The GPU instance id of a MIG device; `NOT_SUPPORTED` on a GPU's handle.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceId(
    device: nvmlDevice_t,
    id: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetGpuInstanceId");
    if state::mig_of(device).is_none() {
        return crate::device_call(device, !id.is_null(), |_| NVML_ERROR_NOT_SUPPORTED);
    }
    // SAFETY: checked non-NULL by `mig_call`.
    mig_call(device, !id.is_null(), |m| unsafe { put(id, m.gi) })
}

/// The compute instance id of a MIG device: 0, the one compute instance spanning it.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeInstanceId(
    device: nvmlDevice_t,
    id: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetComputeInstanceId");
    if state::mig_of(device).is_none() {
        return crate::device_call(device, !id.is_null(), |_| NVML_ERROR_NOT_SUPPORTED);
    }
    // SAFETY: checked non-NULL by `mig_call`.
    mig_call(device, !id.is_null(), |_| unsafe { put(id, 0) })
}

/// The parent GPU's handle of a MIG device.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetDeviceHandleFromMigDeviceHandle(
    mig_device: nvmlDevice_t,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetDeviceHandleFromMigDeviceHandle");
    mig_call(mig_device, !device.is_null(), |m| {
        // SAFETY: checked non-NULL by `mig_call`.
        unsafe { put(device, state::handle(m.gpu.index)) }
    })
}

/// `nvmlDeviceGetUUID` on a MIG device handle.
pub(crate) fn mig_uuid(device: nvmlDevice_t, uuid: *mut c_char, length: c_uint) -> nvmlReturn_t {
    // SAFETY: non-NULL as checked; the caller gives `length` writable bytes.
    mig_call(device, !uuid.is_null(), |m| unsafe {
        put_str(&m.uuid(), uuid, length)
    })
}

/// `nvmlDeviceGetName` on a MIG device handle.
pub(crate) fn mig_name(device: nvmlDevice_t, name: *mut c_char, length: c_uint) -> nvmlReturn_t {
    // SAFETY: non-NULL as checked; the caller gives `length` writable bytes.
    mig_call(device, !name.is_null(), |m| unsafe {
        put_str(&m.name(), name, length)
    })
}
