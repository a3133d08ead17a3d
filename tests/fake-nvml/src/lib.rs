//! A fake `libnvidia-ml.so` that answers NVML calls from the simulated node of `gpucost-sim`.
//!
//! Built as `target/<profile>/libnvidia_ml.so`, it lets the real `nvml-wrapper` crate (and so the
//! gpucost agent's NVML backend) run in CI without a GPU: load it with
//! `Nvml::builder().lib_path(path).init()` after setting `GPUCOST_FAKE_NVML_SCENARIO` to a
//! scenario file or `demo`. Scenario time runs from the first successful init since the library
//! was loaded (or from `GPUCOST_FAKE_NVML_START_UNIX`) at the scenario's `speed`. See README.md
//! for the list of functions; GPM pipe metrics are in `gpm.rs`, Xid events in `events.rs`.
//!
//! Every exported function has the C signature of nvml.h, never unwinds across the FFI boundary
//! (a panic becomes `NVML_ERROR_UNKNOWN`), answers `NVML_ERROR_UNINITIALIZED` outside an
//! init/shutdown pair, `NVML_ERROR_LIB_RM_VERSION_MISMATCH` after the scenario's driver upgrade
//! until the library is initialised anew, `NVML_ERROR_INVALID_ARGUMENT` for a NULL out-pointer or
//! a handle that is not ours, and `NVML_ERROR_GPU_IS_LOST` for every call on a GPU the scenario
//! has lost.
//!
//! Safety contract of all exported functions: the one nvml.h documents, i.e. every non-NULL
//! out-pointer is valid for writing the documented type (an array of `*infoCount` entries, a
//! buffer of `length` bytes), and every non-NULL input string is NUL-terminated.

#![allow(non_snake_case)]
// The safety contract is nvml.h's for every function (see above); it is not repeated on each.
#![allow(clippy::missing_safety_doc)]

pub mod abi;
mod calls;
mod events;
mod fields;
mod gpm;
mod mig;
mod product;
mod samples;
mod state;

use std::ffi::CStr;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};

use gpucost_sim::{Context, GpuSpec, GpuState, SimProcess, SimulatedNode};

use abi::*;
pub use state::{MAX_GPUS, SCENARIO_ENV, START_ENV};

/// What `nvmlSystemGetNVMLVersion` reports.
pub const NVML_VERSION: &str = "12.550.90";
/// What `nvmlSystemGetCudaDriverVersion(_v2)` reports: CUDA 12.4, as with driver 550.
pub const CUDA_DRIVER_VERSION: c_int = 12040;
/// Memory clock in MHz (HBM3 on an H100 SXM), current and max.
pub const MEMORY_CLOCK_MHZ: c_uint = 2619;
/// Video clock in MHz, current and max.
pub const VIDEO_CLOCK_MHZ: c_uint = 1755;
/// Memory-controller utilization reported per point of GPU utilization.
pub(crate) const MEMORY_UTIL_PER_GPU_UTIL: f64 = 0.6;

const MIB: u64 = 1024 * 1024;

/// Runs an export's body, turning a panic into `NVML_ERROR_UNKNOWN` instead of unwinding into C.
fn guarded(body: impl FnOnce() -> nvmlReturn_t) -> nvmlReturn_t {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(NVML_ERROR_UNKNOWN)
}

/// The GPU a device function answers about, at the moment of the call.
struct Gpu<'a> {
    node: &'a SimulatedNode,
    index: u32,
    /// Scenario time of the call.
    t: f64,
    /// Unix time of the call, in seconds (what NVML's CPU timestamps count).
    unix: f64,
}

impl Gpu<'_> {
    fn spec(&self) -> &GpuSpec {
        &self.node.scenario().gpus[self.index as usize]
    }

    fn state(&self) -> GpuState {
        self.node.state(self.index, self.t)
    }

    /// Whether the GPU is in MIG mode at the moment of the call.
    fn mig_on(&self) -> bool {
        self.node.mig_on(self.index, self.t)
    }
}

/// The checks every device function makes, in order: initialised, a handle of ours, its
/// arguments (`args_ok`: out-pointers non-NULL, enums in range), the GPU present. Then `answer`.
fn device_call(
    device: nvmlDevice_t,
    args_ok: bool,
    answer: impl FnOnce(&Gpu<'_>) -> nvmlReturn_t,
) -> nvmlReturn_t {
    // A GPU in a scenario `hang` blocks its caller (not the library) until the hang is over.
    if let Some(wait) = guarded_wait(device) {
        std::thread::sleep(wait);
    }
    guarded(|| {
        let library = state::lock();
        let model = match library.check() {
            Ok(m) => m,
            Err(code) => return code,
        };
        let Some(index) = state::index_of(device).filter(|i| *i < model.node.gpu_count()) else {
            return NVML_ERROR_INVALID_ARGUMENT;
        };
        if !args_ok {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        let t = model.now();
        if !model.node.is_present(index, t) {
            return NVML_ERROR_GPU_IS_LOST;
        }
        answer(&Gpu {
            node: &model.node,
            index,
            t,
            unix: state::unix_now(),
        })
    })
}

/// How long a call on `device` must block for a scenario hang, if it must.
fn guarded_wait(device: nvmlDevice_t) -> Option<std::time::Duration> {
    catch_unwind(AssertUnwindSafe(|| {
        let library = state::lock();
        let model = library.active()?;
        let index = state::index_of(device)?;
        let t = model.now();
        let end = model.node.hang_end(index, t)?;
        let wall = (end - t) / model.node.scenario().speed;
        Some(std::time::Duration::from_secs_f64(wall.max(0.0)))
    }))
    .ok()
    .flatten()
}

/// The checks of a system function: initialised (and not outdated by a driver upgrade), then
/// `answer` with the node.
fn system_call(answer: impl FnOnce(&SimulatedNode) -> nvmlReturn_t) -> nvmlReturn_t {
    guarded(|| match state::lock().check() {
        Ok(model) => answer(&model.node),
        Err(code) => code,
    })
}

/// Writes an out-parameter and reports success.
///
/// # Safety
/// `out` is non-NULL (checked by the caller) and valid for writing a `T`.
unsafe fn put<T>(out: *mut T, value: T) -> nvmlReturn_t {
    // SAFETY: non-NULL as checked by the caller, valid for writes by the NVML contract.
    unsafe { out.write(value) };
    NVML_SUCCESS
}

/// Copies `text` and a terminating NUL into the caller's buffer of `length` bytes;
/// `NVML_ERROR_INSUFFICIENT_SIZE` (and nothing written) when it does not fit.
///
/// # Safety
/// A non-NULL `buf` is valid for writing `length` bytes.
unsafe fn put_str(text: &str, buf: *mut c_char, length: c_uint) -> nvmlReturn_t {
    if buf.is_null() {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    let bytes = text.as_bytes();
    if bytes.len() >= length as usize {
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    // SAFETY: `buf` is non-NULL and valid for `length` bytes; we write `bytes.len() + 1` of
    // them, which is at most `length`, from a separate Rust string.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, bytes.len());
        buf.add(bytes.len()).write(0);
    }
    NVML_SUCCESS
}

/// Copies `text` into a fixed-size C char array, NUL-padded (and truncated to leave one NUL).
fn c_array<const N: usize>(text: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (o, b) in out.iter_mut().zip(text.bytes().take(N - 1)) {
        *o = b as c_char;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Init and shutdown

fn init() -> nvmlReturn_t {
    guarded(|| match state::lock().init() {
        Ok(()) => NVML_SUCCESS,
        Err(state::InitError::Scenario(problem)) => {
            let _ = writeln!(std::io::stderr(), "fake-nvml: nvmlInit failed: {problem}");
            NVML_ERROR_UNKNOWN
        }
        Err(state::InitError::VersionMismatch) => NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    })
}

/// Loads the scenario (first time only) and counts one init. After the scenario's
/// `driver_upgrade_at_s`, an init while another is still open answers
/// `NVML_ERROR_LIB_RM_VERSION_MISMATCH` (the process still holds the old library).
#[no_mangle]
pub unsafe extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    crate::calls::count("nvmlInit_v2");
    init()
}

/// As `nvmlInit_v2`; the flags (no GPUs / no attach) change nothing here.
#[no_mangle]
pub unsafe extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> nvmlReturn_t {
    crate::calls::count("nvmlInitWithFlags");
    init()
}

/// Undoes one init; the library stops answering when every init is undone.
#[no_mangle]
pub unsafe extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    crate::calls::count("nvmlShutdown");
    calls::write();
    guarded(|| {
        if state::lock().shutdown() {
            NVML_SUCCESS
        } else {
            NVML_ERROR_UNINITIALIZED
        }
    })
}

/// A static, NUL-terminated description of a return code.
#[no_mangle]
pub unsafe extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    crate::calls::count("nvmlErrorString");
    abi::error_string(result).as_ptr()
}

// ---------------------------------------------------------------------------------------------
// System queries

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlSystemGetDriverVersion");
    // SAFETY: `put_str` checks for NULL; the caller gives `length` writable bytes.
    system_call(|node| unsafe { put_str(&node.scenario().driver_version, version, length) })
}

/// Answers before init too, like the real library.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlSystemGetNVMLVersion");
    // SAFETY: `put_str` checks for NULL; the caller gives `length` writable bytes.
    guarded(|| unsafe { put_str(NVML_VERSION, version, length) })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(version: *mut c_int) -> nvmlReturn_t {
    crate::calls::count("nvmlSystemGetCudaDriverVersion");
    system_call(|_| {
        if version.is_null() {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: checked non-NULL just above.
        unsafe { put(version, CUDA_DRIVER_VERSION) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(version: *mut c_int) -> nvmlReturn_t {
    crate::calls::count("nvmlSystemGetCudaDriverVersion_v2");
    // SAFETY: same contract.
    unsafe { nvmlSystemGetCudaDriverVersion(version) }
}

// ---------------------------------------------------------------------------------------------
// Device handles

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(device_count: *mut c_uint) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetCount_v2");
    system_call(|node| {
        if device_count.is_null() {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: checked non-NULL just above.
        unsafe { put(device_count, node.gpu_count()) }
    })
}

/// The handle of GPU `index`; handles are stable for the life of the process. A lost GPU still
/// has a handle (every call on it answers `NVML_ERROR_GPU_IS_LOST`).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetHandleByIndex_v2");
    system_call(|node| {
        if device.is_null() || index >= node.gpu_count() {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: checked non-NULL just above.
        unsafe { put(device, state::handle(index)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(
    uuid: *const c_char,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetHandleByUUID");
    system_call(|node| {
        if uuid.is_null() || device.is_null() {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: non-NULL, and NUL-terminated by the NVML contract.
        let wanted = unsafe { CStr::from_ptr(uuid) };
        match (0..node.gpu_count()).find(|i| node.uuid(*i).as_bytes() == wanted.to_bytes()) {
            // SAFETY: `device` checked non-NULL above.
            Some(index) => unsafe { put(device, state::handle(index)) },
            None => NVML_ERROR_NOT_FOUND,
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetIndex(
    device: nvmlDevice_t,
    index: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetIndex");
    // SAFETY (all `put`s in device calls): `device_call` checked the pointer is non-NULL.
    device_call(device, !index.is_null(), |gpu| unsafe {
        put(index, gpu.index)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: nvmlDevice_t,
    uuid: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetUUID");
    if state::mig_of(device).is_some() {
        return mig::mig_uuid(device, uuid, length);
    }
    // SAFETY: non-NULL as checked; the caller gives `length` writable bytes.
    device_call(device, !uuid.is_null(), |gpu| unsafe {
        put_str(gpu.node.uuid(gpu.index), uuid, length)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: nvmlDevice_t,
    name: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetName");
    if state::mig_of(device).is_some() {
        return mig::mig_name(device, name, length);
    }
    // SAFETY: non-NULL as checked; the caller gives `length` writable bytes.
    device_call(device, !name.is_null(), |gpu| unsafe {
        put_str(&gpu.spec().model, name, length)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(
    device: nvmlDevice_t,
    pci: *mut nvmlPciInfo_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetPciInfo_v3");
    device_call(device, !pci.is_null(), |gpu| {
        let bus = gpu.index + 0x18;
        let info = nvmlPciInfo_t {
            busIdLegacy: c_array(&format!("0000:{bus:02X}:00.0")),
            domain: 0,
            bus,
            device: 0,
            pciDeviceId: product::pci_device_id(&gpu.spec().model),
            pciSubSystemId: 0x16C1_10DE,
            busId: c_array(&format!("00000000:{bus:02X}:00.0")),
        };
        // SAFETY: checked non-NULL by `device_call`.
        unsafe { put(pci, info) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(
    device: nvmlDevice_t,
    major: *mut c_int,
    minor: *mut c_int,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetCudaComputeCapability");
    device_call(device, !major.is_null() && !minor.is_null(), |gpu| {
        let (ma, mi) = product::compute_capability(&gpu.spec().model);
        // SAFETY: both checked non-NULL by `device_call`.
        unsafe {
            put(major, ma);
            put(minor, mi)
        }
    })
}

/// CUDA cores of known products; `NVML_ERROR_NOT_SUPPORTED` for others.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNumGpuCores(
    device: nvmlDevice_t,
    num_cores: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetNumGpuCores");
    device_call(device, !num_cores.is_null(), |gpu| {
        match product::cuda_cores(&gpu.spec().model) {
            // SAFETY: checked non-NULL by `device_call`.
            Some(cores) => unsafe { put(num_cores, cores) },
            None => NVML_ERROR_NOT_SUPPORTED,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Power and energy

/// Board power in milliwatts: "On Ampere (except GA100) or newer GPUs, the API returns power
/// averaged over 1 sec interval. On GA100 and older architectures, instantaneous power is
/// returned" (nvml.h:6538-6540). Which one follows the GPU's `power_average`.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(
    device: nvmlDevice_t,
    power: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetPowerUsage");
    device_call(device, !power.is_null(), |gpu| {
        let mw = fields::power_average_mw(gpu).unwrap_or_else(|| fields::power_instant_mw(gpu));
        // SAFETY: checked non-NULL by `device_call`.
        unsafe { put(power, mw) }
    })
}

/// Millijoules since the driver loaded (or since the scenario's last `energy_reset`);
/// `NVML_ERROR_NOT_SUPPORTED` where the scenario has `energy_counter = false`.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTotalEnergyConsumption(
    device: nvmlDevice_t,
    energy: *mut c_ulonglong,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetTotalEnergyConsumption");
    device_call(device, !energy.is_null(), |gpu| {
        match gpu.state().energy_mj {
            // SAFETY: checked non-NULL by `device_call`.
            Some(mj) => unsafe { put(energy, mj) },
            None => NVML_ERROR_NOT_SUPPORTED,
        }
    })
}

fn power_limit_mw(gpu: &Gpu<'_>) -> c_uint {
    (gpu.spec().power_limit_w * 1000.0).round() as c_uint
}

/// The scenario's `power_limit_w`, in milliwatts.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetEnforcedPowerLimit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetEnforcedPowerLimit");
    // SAFETY: checked non-NULL by `device_call`.
    device_call(device, !limit.is_null(), |gpu| unsafe {
        put(limit, power_limit_mw(gpu))
    })
}

/// The scenario's `power_limit_w`, in milliwatts.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetPowerManagementLimit");
    // SAFETY: checked non-NULL by `device_call`.
    device_call(device, !limit.is_null(), |gpu| unsafe {
        put(limit, power_limit_mw(gpu))
    })
}

// ---------------------------------------------------------------------------------------------
// Utilization, memory, clocks, temperature, throttling

/// GPU utilization in percent over the driver's last sample period only ("Percent of time
/// over the past sample period", nvml.h:246; see `samples.rs`); memory utilization a fixed
/// share of it.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: nvmlDevice_t,
    utilization: *mut nvmlUtilization_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetUtilizationRates");
    device_call(device, !utilization.is_null(), |gpu| {
        // nvml.h:7075: "On MIG-enabled GPUs, querying device utilization rates is not currently
        // supported."
        if gpu.mig_on() {
            return NVML_ERROR_NOT_SUPPORTED;
        }
        // SAFETY: checked non-NULL by `device_call`.
        unsafe { put(utilization, samples::utilization_rates(gpu)) }
    })
}

/// (total, used) in bytes; `used` includes what the driver holds, as `nvmlMemory_t` counts it.
fn memory_bytes(gpu: &Gpu<'_>) -> (u64, u64) {
    let total = gpu.spec().memory_total_mib * MIB;
    (total, gpu.state().memory_used_bytes.min(total))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetMemoryInfo");
    if state::mig_of(device).is_some() {
        return mig::mig_call(device, !memory.is_null(), |m| {
            let (total, used) = m.memory_bytes();
            let info = nvmlMemory_t {
                total,
                free: total - used,
                used,
            };
            // SAFETY: checked non-NULL by `mig_call`.
            unsafe { put(memory, info) }
        });
    }
    device_call(device, !memory.is_null(), |gpu| {
        let (total, used) = memory_bytes(gpu);
        let info = nvmlMemory_t {
            total,
            free: total - used,
            used,
        };
        // SAFETY: checked non-NULL by `device_call`.
        unsafe { put(memory, info) }
    })
}

/// The caller must set `memory->version` to `nvmlMemory_v2`
/// (`NVML_ERROR_ARGUMENT_VERSION_MISMATCH` otherwise). `reserved` is 0: the model counts the
/// driver's share in `used`, so v1 and v2 agree.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetMemoryInfo_v2");
    let mig_memory = state::mig_of(device).is_some();
    let answer = |total: u64, used: u64| {
        // SAFETY: checked non-NULL by the caller; the caller owns an initialised struct.
        let version = unsafe { (*memory).version };
        if version != nvmlMemory_v2 {
            return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
        }
        let info = nvmlMemory_v2_t {
            version,
            total,
            reserved: 0,
            free: total - used,
            used,
        };
        // SAFETY: checked non-NULL by the caller.
        unsafe { put(memory, info) }
    };
    if mig_memory {
        return mig::mig_call(device, !memory.is_null(), |m| {
            let (total, used) = m.memory_bytes();
            answer(total, used)
        });
    }
    device_call(device, !memory.is_null(), |gpu| {
        // SAFETY: checked non-NULL by `device_call`; the caller owns an initialised struct.
        let version = unsafe { (*memory).version };
        if version != nvmlMemory_v2 {
            return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
        }
        let (total, used) = memory_bytes(gpu);
        let info = nvmlMemory_v2_t {
            version,
            total,
            reserved: 0,
            free: total - used,
            used,
        };
        // SAFETY: checked non-NULL by `device_call`.
        unsafe { put(memory, info) }
    })
}

/// Current clocks in MHz: SM and graphics follow the model, memory and video are fixed.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    device: nvmlDevice_t,
    clock_type: nvmlClockType_t,
    clock: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetClockInfo");
    device_call(
        device,
        !clock.is_null() && clock_type <= NVML_CLOCK_VIDEO,
        |gpu| {
            let mhz = match clock_type {
                NVML_CLOCK_GRAPHICS | NVML_CLOCK_SM => gpu.state().sm_clock_mhz,
                NVML_CLOCK_MEM => MEMORY_CLOCK_MHZ,
                _ => VIDEO_CLOCK_MHZ,
            };
            // SAFETY: checked non-NULL by `device_call`.
            unsafe { put(clock, mhz) }
        },
    )
}

/// Max clocks in MHz: SM and graphics are the scenario's `max_sm_clock_mhz`.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxClockInfo(
    device: nvmlDevice_t,
    clock_type: nvmlClockType_t,
    clock: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetMaxClockInfo");
    device_call(
        device,
        !clock.is_null() && clock_type <= NVML_CLOCK_VIDEO,
        |gpu| {
            let mhz = match clock_type {
                NVML_CLOCK_GRAPHICS | NVML_CLOCK_SM => gpu.spec().max_sm_clock_mhz,
                NVML_CLOCK_MEM => MEMORY_CLOCK_MHZ,
                _ => VIDEO_CLOCK_MHZ,
            };
            // SAFETY: checked non-NULL by `device_call`.
            unsafe { put(clock, mhz) }
        },
    )
}

/// GPU die temperature in whole degrees Celsius.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: nvmlDevice_t,
    sensor_type: nvmlTemperatureSensors_t,
    temp: *mut c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetTemperature");
    device_call(
        device,
        !temp.is_null() && sensor_type == NVML_TEMPERATURE_GPU,
        |gpu| {
            let celsius = gpu.state().temperature_c.round().max(0.0) as c_uint;
            // SAFETY: checked non-NULL by `device_call`.
            unsafe { put(temp, celsius) }
        },
    )
}

/// Clock-event (throttle) reason bits; the symbol nvml-wrapper 0.13 calls.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksThrottleReasons(
    device: nvmlDevice_t,
    reasons: *mut c_ulonglong,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetCurrentClocksThrottleReasons");
    clock_event_reasons(device, reasons)
}

/// The reason bits, for both names of the call (counted once, under the name called).
fn clock_event_reasons(device: nvmlDevice_t, reasons: *mut c_ulonglong) -> nvmlReturn_t {
    device_call(device, !reasons.is_null(), |gpu| {
        // SAFETY: checked non-NULL by `device_call`.
        unsafe { put(reasons, gpu.state().throttle_reasons) }
    })
}

/// The newer name of `nvmlDeviceGetCurrentClocksThrottleReasons` (NVML 12.2+), its replacement
/// in CUDA 13 (nvml.h:6124). `NVML_ERROR_FUNCTION_NOT_FOUND` ("Local version of NVML doesn't
/// implement this function", nvml.h) with the scenario's `deprecated_calls_only`.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksEventReasons(
    device: nvmlDevice_t,
    reasons: *mut c_ulonglong,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetCurrentClocksEventReasons");
    if deprecated_calls_only() {
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    }
    clock_event_reasons(device, reasons)
}

/// Whether the scenario wants the replacements of deprecated calls missing.
fn deprecated_calls_only() -> bool {
    guarded_flag(|model| model.node.scenario().deprecated_calls_only)
}

/// A flag of the loaded model (false when none is loaded), never unwinding.
fn guarded_flag(flag: impl FnOnce(&state::Model) -> bool) -> bool {
    catch_unwind(AssertUnwindSafe(|| {
        state::lock().active().is_some_and(flag)
    }))
    .unwrap_or(false)
}

/// GPU die temperature in whole degrees Celsius, the replacement of `nvmlDeviceGetTemperature`
/// in CUDA 13 (nvml.h:5956, 6015): the caller sets `version` to `nvmlTemperature_v1`
/// (`NVML_ERROR_ARGUMENT_VERSION_MISMATCH` otherwise) and `sensorType`.
/// `NVML_ERROR_FUNCTION_NOT_FOUND` with the scenario's `deprecated_calls_only`.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperatureV(
    device: nvmlDevice_t,
    temperature: *mut nvmlTemperature_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetTemperatureV");
    if deprecated_calls_only() {
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    }
    device_call(device, !temperature.is_null(), |gpu| {
        // SAFETY: non-NULL (checked by `device_call`); the caller owns an initialised struct.
        let asked = unsafe { temperature.read() };
        if asked.version != nvmlTemperature_v1 {
            return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
        }
        if asked.sensorType != NVML_TEMPERATURE_GPU {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        let answer = nvmlTemperature_t {
            temperature: gpu.state().temperature_c.round() as c_int,
            ..asked
        };
        // SAFETY: as above.
        unsafe { put(temperature, answer) }
    })
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Which of NVML's process lists a call reads.
#[derive(Debug, Clone, Copy)]
enum List {
    Compute,
    Graphics,
    Mps,
}

impl List {
    fn shows(self, context: Context) -> bool {
        match self {
            List::Compute => context.compute(),
            List::Graphics => context.graphics(),
            List::Mps => context.mps(),
        }
    }
}

/// The scenario's processes on the GPU that `list` shows: each job's main pid with its memory
/// and its worker pids with none, in the lists their job's `context` puts them.
fn listed(gpu: &Gpu<'_>, list: List) -> Vec<SimProcess> {
    let mut processes = gpu.state().processes;
    processes.retain(|p| list.shows(p.context));
    processes
}

/// One process as the first `bytes` bytes of an `nvmlProcessDetail_v1_t` (alias
/// `nvmlProcessInfo_v3_t`): 16 bytes are `nvmlProcessInfo_v1_t`, 24 `nvmlProcessInfo_v2_t`, 32
/// the whole struct. Padding is zero. Outside MIG the instance ids are `NVML_VALUE_NOT_AVAILABLE`;
/// in MIG mode they are the process's GPU instance and compute instance (0). No memory is
/// confidential-compute protected.
fn process_entry(p: &SimProcess, bytes: usize) -> Vec<u8> {
    let (gi, ci) = instance_ids(p);
    let mut entry = [0u8; 32];
    entry[0..4].copy_from_slice(&p.pid.to_ne_bytes());
    entry[8..16].copy_from_slice(&p.used_memory_bytes.to_ne_bytes());
    entry[16..20].copy_from_slice(&gi.to_ne_bytes());
    entry[20..24].copy_from_slice(&ci.to_ne_bytes());
    entry[..bytes].to_vec()
}

/// A process's `gpuInstanceId` and `computeInstanceId`: its MIG instance and compute instance 0
/// in MIG mode, else `NVML_VALUE_NOT_AVAILABLE` for both.
fn instance_ids(p: &SimProcess) -> (c_uint, c_uint) {
    p.gpu_instance
        .map_or((NO_INSTANCE, NO_INSTANCE), |gi| (gi, 0))
}

/// The count protocol of nvml.h's running-process calls: `*info_count` is the room in `infos`
/// (`infos` may be NULL when it is 0). With too little room: `NVML_ERROR_INSUFFICIENT_SIZE` and
/// `*info_count` set to the number needed. Otherwise the entries are written and `*info_count`
/// set to their number; no process at all is a success with 0.
///
/// Each entry is `entry_bytes` long: 24, the `nvmlProcessInfo_t` (v2) that nvml.h declares, or
/// the scenario's `nvml.process_info_v3_bytes`. R535.54 drivers (CUDA 12.2) wrote 32-byte
/// `nvmlProcessInfo_v3_t` entries from the `_v3` calls without a version bump (nvitop PR 79 and
/// issue 88, go-nvml issue 75, pynvml PR 48); one driver was reported writing 16-byte v1 entries
/// (nvitop PR 226). Such a driver writes all of its entries, past the end of a buffer sized for
/// 24-byte ones; this library stops at the caller's `*info_count` x 24 bytes, writing only the
/// whole entries that fit, so that a test process is never corrupted. It still answers the full
/// count, as the driver does.
fn put_processes(
    processes: &[SimProcess],
    entry_bytes: usize,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    let needed = processes.len() as c_uint;
    // SAFETY: `info_count` checked non-NULL by `device_call`; it is the caller's in/out count.
    let room = unsafe { info_count.read() };
    // SAFETY: as above.
    unsafe { info_count.write(needed) };
    if room < needed {
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    if needed > 0 && infos.is_null() {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    let buffer_bytes = room as usize * std::mem::size_of::<nvmlProcessInfo_t>();
    for (i, p) in processes.iter().enumerate() {
        if (i + 1) * entry_bytes > buffer_bytes {
            break;
        }
        let entry = process_entry(p, entry_bytes);
        // SAFETY: `infos` is non-NULL and valid for `room` entries of 24 bytes (the NVML
        // contract); bytes `i * entry_bytes .. (i + 1) * entry_bytes` lie within them.
        unsafe {
            std::ptr::copy_nonoverlapping(
                entry.as_ptr(),
                infos.cast::<u8>().add(i * entry_bytes),
                entry_bytes,
            )
        };
    }
    NVML_SUCCESS
}

/// A `_v3` running-process call: the processes `list` shows, in entries of the GPU's
/// `nvml.process_info_v3_bytes`.
fn running_processes(
    device: nvmlDevice_t,
    list: List,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    device_call(device, !info_count.is_null(), |gpu| {
        let entry_bytes = gpu.spec().nvml.process_info_v3_bytes as usize;
        put_processes(&listed(gpu, list), entry_bytes, info_count, infos)
    })
}

/// Processes with a compute context: each job's main pid with its memory, and its worker pids
/// with none (jobs whose `context` includes compute).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetComputeRunningProcesses_v3");
    running_processes(device, List::Compute, info_count, infos)
}

/// Processes with a graphics context (jobs with `context = "graphics"` or
/// `"compute_graphics"`).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGraphicsRunningProcesses_v3(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetGraphicsRunningProcesses_v3");
    running_processes(device, List::Graphics, info_count, infos)
}

/// MPS clients (jobs with `context = "mps"`). The MPS server itself is not simulated.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMPSComputeRunningProcesses_v3(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetMPSComputeRunningProcesses_v3");
    running_processes(device, List::Mps, info_count, infos)
}

/// The processes of one mode in `nvmlProcessDetail_v1_t` entries (32 bytes, as declared), with
/// the count protocol of the other process calls on `plist->numProcArrayEntries`. The caller
/// sets `plist->version` to `nvmlProcessDetailList_v1` and `plist->mode` to a
/// `nvmlProcessMode_t` (NVML_ERROR_INVALID_ARGUMENT otherwise). NVML_ERROR_NOT_SUPPORTED on a
/// GPU whose scenario says so; by default on GPUs older than Hopper (nvml.h: "For Hopper or
/// newer fully supported devices").
///
/// Drivers before this call existed (R535.54 among them) do not export the symbol at all; a
/// test makes such a library by renaming this export in a copy of the file.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetRunningProcessDetailList(
    device: nvmlDevice_t,
    plist: *mut nvmlProcessDetailList_v1_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetRunningProcessDetailList");
    device_call(device, !plist.is_null(), |gpu| {
        if !gpu.spec().process_detail_list() {
            return NVML_ERROR_NOT_SUPPORTED;
        }
        // SAFETY: checked non-NULL by `device_call`; the caller owns an initialised struct.
        let request = unsafe { plist.read() };
        if request.version != nvmlProcessDetailList_v1 {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        let list = match request.mode {
            NVML_PROCESS_MODE_COMPUTE => List::Compute,
            NVML_PROCESS_MODE_GRAPHICS => List::Graphics,
            NVML_PROCESS_MODE_MPS => List::Mps,
            _ => return NVML_ERROR_INVALID_ARGUMENT,
        };
        let processes = listed(gpu, list);
        let needed = processes.len() as c_uint;
        let room = request.numProcArrayEntries;
        // SAFETY: checked non-NULL; the caller's struct, written in place.
        unsafe { (*plist).numProcArrayEntries = needed };
        if room < needed {
            return NVML_ERROR_INSUFFICIENT_SIZE;
        }
        if needed > 0 && request.procArray.is_null() {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        for (i, p) in processes.iter().enumerate() {
            let (gi, ci) = instance_ids(p);
            let entry = nvmlProcessDetail_v1_t {
                pid: p.pid,
                usedGpuMemory: p.used_memory_bytes,
                gpuInstanceId: gi,
                computeInstanceId: ci,
                usedGpuCcProtectedMemory: 0,
            };
            // SAFETY: `procArray` is non-NULL with room for `room >= needed > i` entries.
            unsafe { request.procArray.add(i).write(entry) };
        }
        NVML_SUCCESS
    })
}

/// How often the simulated driver takes a per-process utilization sample, in microseconds of
/// CPU time: every 1/6 s, the shortest sample period nvml.h gives for utilization.
pub const PROCESS_SAMPLE_PERIOD_US: u64 = 166_667;
/// How many sample periods the driver's buffer holds (what `lastSeenTimeStamp = 0` returns).
pub const PROCESS_SAMPLE_DEPTH: u64 = 20;

/// The per-process utilization samples the driver holds that are newer than `since_us` and no
/// newer than `until_us` (unix microseconds): one per process with non-zero SM utilization per
/// sample period (nvml.h: "One utilization sample structure is returned per process running,
/// that had some non-zero utilization during the last sample period"), oldest first. Samples
/// are taken on a fixed grid of CPU time; a sample from before the scenario began reads the GPU
/// as it was at time 0, so a buffer is full from the first call on, as on a running node.
fn process_samples(
    gpu: &Gpu<'_>,
    since_us: u64,
    until_us: u64,
) -> Vec<nvmlProcessUtilizationSample_t> {
    let speed = gpu.node.scenario().speed;
    let last = until_us / PROCESS_SAMPLE_PERIOD_US;
    let first = (since_us / PROCESS_SAMPLE_PERIOD_US + 1)
        .max(last.saturating_sub(PROCESS_SAMPLE_DEPTH - 1));
    let mut out = Vec::new();
    for k in first..=last {
        let stamp = k * PROCESS_SAMPLE_PERIOD_US;
        // The scenario time of the sample, from the call's own scenario and CPU times.
        let t = gpu.t - (gpu.unix - stamp as f64 / 1e6) * speed;
        if !gpu.node.is_present(gpu.index, t) {
            continue;
        }
        for p in gpu.node.state(gpu.index, t).processes {
            if p.sm_util_pct == 0 {
                continue;
            }
            out.push(nvmlProcessUtilizationSample_t {
                pid: p.pid,
                timeStamp: stamp,
                smUtil: p.sm_util_pct,
                memUtil: p.sm_util_pct * 6 / 10,
                encUtil: 0,
                decUtil: 0,
            });
        }
    }
    out
}

/// Per-process utilization since `lastSeenTimeStamp` (0: everything the buffer holds), with
/// the count protocol of nvml.h: a NULL `utilization` asks for the count (answered with
/// NVML_ERROR_INSUFFICIENT_SIZE), too little room is NVML_ERROR_INSUFFICIENT_SIZE with the count
/// needed, and nothing newer than `lastSeenTimeStamp` is NVML_ERROR_NOT_FOUND (nvml.h: "If no
/// valid sample entries are found since the lastSeenTimeStamp, NVML_ERROR_NOT_FOUND is
/// returned"). Only busy processes have samples.
///
/// With the scenario's `nvml.process_utilization_race`, the newest sample is taken between a
/// count query and the read after it: the count leaves it out, so a buffer of exactly that size
/// is too small for the read (the race the count protocol allows; nvml.h: the count "may differ
/// from a previously read value").
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetProcessUtilization(
    device: nvmlDevice_t,
    utilization: *mut nvmlProcessUtilizationSample_t,
    process_samples_count: *mut c_uint,
    last_seen_time_stamp: c_ulonglong,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetProcessUtilization");
    device_call(device, !process_samples_count.is_null(), |gpu| {
        // nvml.h:8512: "On MIG-enabled GPUs, querying process utilization is not currently
        // supported."
        if gpu.mig_on() {
            return NVML_ERROR_NOT_SUPPORTED;
        }
        let now_us = (gpu.unix * 1e6) as u64;
        let mut samples = process_samples(gpu, last_seen_time_stamp, now_us);
        if utilization.is_null() && gpu.spec().nvml.process_utilization_race {
            // The newest sample is not taken yet when the count is asked for.
            let newest = samples.iter().map(|s| s.timeStamp).max().unwrap_or(0);
            samples.retain(|s| s.timeStamp < newest);
        }
        if samples.is_empty() {
            return NVML_ERROR_NOT_FOUND;
        }
        let needed = samples.len() as c_uint;
        // SAFETY: `process_samples_count` checked non-NULL by `device_call`.
        let room = unsafe { process_samples_count.read() };
        // SAFETY: as above.
        unsafe { process_samples_count.write(needed) };
        if utilization.is_null() || room < needed {
            return NVML_ERROR_INSUFFICIENT_SIZE;
        }
        for (i, sample) in samples.into_iter().enumerate() {
            // SAFETY: `utilization` is non-NULL with room for `room >= needed > i` samples.
            unsafe { utilization.add(i).write(sample) };
        }
        NVML_SUCCESS
    })
}
