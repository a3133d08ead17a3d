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
//! init/shutdown pair, `NVML_ERROR_INVALID_ARGUMENT` for a NULL out-pointer or a handle that is
//! not ours, and `NVML_ERROR_GPU_IS_LOST` for every call on a GPU the scenario has lost.
//!
//! Safety contract of all exported functions: the one nvml.h documents, i.e. every non-NULL
//! out-pointer is valid for writing the documented type (an array of `*infoCount` entries, a
//! buffer of `length` bytes), and every non-NULL input string is NUL-terminated.

#![allow(non_snake_case)]
// The safety contract is nvml.h's for every function (see above); it is not repeated on each.
#![allow(clippy::missing_safety_doc)]

pub mod abi;
mod events;
mod fields;
mod gpm;
mod product;
mod samples;
mod state;

use std::ffi::CStr;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};

use gpucost_sim::{GpuSpec, GpuState, SimProcess, SimulatedNode};

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
}

impl Gpu<'_> {
    fn spec(&self) -> &GpuSpec {
        &self.node.scenario().gpus[self.index as usize]
    }

    fn state(&self) -> GpuState {
        self.node.state(self.index, self.t)
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
        let Some(model) = library.active() else {
            return NVML_ERROR_UNINITIALIZED;
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

/// The checks of a system function: initialised, then `answer` with the node.
fn system_call(answer: impl FnOnce(&SimulatedNode) -> nvmlReturn_t) -> nvmlReturn_t {
    guarded(|| match state::lock().active() {
        Some(model) => answer(&model.node),
        None => NVML_ERROR_UNINITIALIZED,
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
        Err(problem) => {
            let _ = writeln!(std::io::stderr(), "fake-nvml: nvmlInit failed: {problem}");
            NVML_ERROR_UNKNOWN
        }
    })
}

/// Loads the scenario (first time only) and counts one init.
#[no_mangle]
pub unsafe extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    init()
}

/// As `nvmlInit_v2`; the flags (no GPUs / no attach) change nothing here.
#[no_mangle]
pub unsafe extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> nvmlReturn_t {
    init()
}

/// Undoes one init; the library stops answering when every init is undone.
#[no_mangle]
pub unsafe extern "C" fn nvmlShutdown() -> nvmlReturn_t {
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
    abi::error_string(result).as_ptr()
}

// ---------------------------------------------------------------------------------------------
// System queries

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: `put_str` checks for NULL; the caller gives `length` writable bytes.
    system_call(|node| unsafe { put_str(&node.scenario().driver_version, version, length) })
}

/// Answers before init too, like the real library.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: `put_str` checks for NULL; the caller gives `length` writable bytes.
    guarded(|| unsafe { put_str(NVML_VERSION, version, length) })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(version: *mut c_int) -> nvmlReturn_t {
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
    // SAFETY: same contract.
    unsafe { nvmlSystemGetCudaDriverVersion(version) }
}

// ---------------------------------------------------------------------------------------------
// Device handles

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(device_count: *mut c_uint) -> nvmlReturn_t {
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
    device_call(device, !utilization.is_null(), |gpu| {
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
    if deprecated_calls_only() {
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    }
    // SAFETY: same contract.
    unsafe { nvmlDeviceGetCurrentClocksThrottleReasons(device, reasons) }
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

/// The count protocol of nvml.h's running-process calls: `*info_count` is the room in `infos`
/// (`infos` may be NULL when it is 0). With too little room: `NVML_ERROR_INSUFFICIENT_SIZE` and
/// `*info_count` set to the number needed. Otherwise the entries are written and `*info_count`
/// set to their number; no process at all is a success with 0.
fn put_processes(
    processes: &[SimProcess],
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
    for (i, p) in processes.iter().enumerate() {
        let info = nvmlProcessInfo_t {
            pid: p.pid,
            usedGpuMemory: p.used_memory_bytes,
            gpuInstanceId: NO_INSTANCE,
            computeInstanceId: NO_INSTANCE,
        };
        // SAFETY: `infos` is non-NULL and has room for `room >= needed > i` entries.
        unsafe { infos.add(i).write(info) };
    }
    NVML_SUCCESS
}

/// The scenario's processes on the GPU: each job's main pid with its memory, and its worker
/// pids with none.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    device_call(device, !info_count.is_null(), |gpu| {
        put_processes(&gpu.state().processes, info_count, infos)
    })
}

/// Per-process utilization: one sample per process on the GPU, stamped now. `lastSeenTimeStamp`
/// is accepted but every call answers with the current samples (real NVML keeps a history).
/// A NULL `utilization` asks for the count, answered with INSUFFICIENT_SIZE as nvml.h says.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetProcessUtilization(
    device: nvmlDevice_t,
    utilization: *mut nvmlProcessUtilizationSample_t,
    process_samples_count: *mut c_uint,
    _last_seen_time_stamp: c_ulonglong,
) -> nvmlReturn_t {
    device_call(device, !process_samples_count.is_null(), |gpu| {
        let procs = gpu.state().processes;
        let needed = procs.len() as c_uint;
        // SAFETY: `process_samples_count` checked non-NULL by `device_call`.
        let room = unsafe { process_samples_count.read() };
        // SAFETY: as above.
        unsafe { process_samples_count.write(needed) };
        if utilization.is_null() || room < needed {
            return if needed == 0 {
                NVML_SUCCESS
            } else {
                NVML_ERROR_INSUFFICIENT_SIZE
            };
        }
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as c_ulonglong);
        for (i, p) in procs.iter().enumerate() {
            let sample = nvmlProcessUtilizationSample_t {
                pid: p.pid,
                timeStamp: now_us,
                smUtil: p.sm_util_pct,
                memUtil: p.sm_util_pct * 6 / 10,
                encUtil: 0,
                decUtil: 0,
            };
            // SAFETY: `utilization` is non-NULL with room for `room >= needed > i` samples.
            unsafe { utilization.add(i).write(sample) };
        }
        NVML_SUCCESS
    })
}

/// Simulated nodes run no graphics processes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGraphicsRunningProcesses_v3(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    device_call(device, !info_count.is_null(), |_| {
        put_processes(&[], info_count, infos)
    })
}
