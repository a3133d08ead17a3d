//! Driver events: event sets, registration and the blocking wait.
//!
//! Simulated GPUs raise the scenario's `xid` events (`nvmlEventTypeXidCriticalError`, the Xid in
//! the event data; 999 where the driver does not know the Xid, as nvml.h's `nvmlEventData_t`
//! says), and its `ecc_single_bit`, `ecc_double_bit` and `gpu_unavailable` events (data 0), each
//! only on a GPU whose `nvml.events` lists its type. An event set remembers, per registered GPU,
//! the types registered and up to which scenario time it has delivered events; a wait hands out
//! the earliest event not yet delivered (each exactly once, every repetition of the timeline
//! included) as soon as scenario time reaches it, or times out.
//!
//! The failures real drivers give: a wait on a set with a lost GPU delivers that GPU's pending
//! events (Xid 79 comes with the loss), then answers NVML_ERROR_GPU_IS_LOST at once, every time,
//! while the GPU stays lost (nvml.h lists it for `nvmlEventSetWait_v2`; NVIDIA's own mock NVML
//! does the same "as a real driver after Xid 79", k8s-test-infra PR 746). During a scenario
//! `event_wait_error`, a wait answers NVML_ERROR_UNKNOWN at once (a persistent wait error that
//! returns without blocking, HAMi issue 2321). A GPU with `nvml.register_events_error` fails its
//! registration: NOT_SUPPORTED leaves the set usable, UNKNOWN leaves it "in undefined state"
//! (nvml.h): here every later wait and registration on it answers NVML_ERROR_UNKNOWN until it is
//! freed.
//!
//! Event-set handles point to heap tokens kept in [`SETS`]; a freed or foreign handle gives
//! `NVML_ERROR_INVALID_ARGUMENT`. A wait sleeps without holding any lock, so other threads keep
//! calling the library meanwhile.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use gpucost_sim::{DriverEventKind, EventKind, GpuSpec, RegisterEventsError, SimulatedNode};

use crate::abi::*;
use crate::{device_call, guarded, put, state};

/// The `nvmlEventType*` bit of an event type.
fn event_bit(kind: DriverEventKind) -> c_ulonglong {
    match kind {
        DriverEventKind::Xid => nvmlEventTypeXidCriticalError,
        DriverEventKind::EccSingleBit => nvmlEventTypeSingleBitEccError,
        DriverEventKind::EccDoubleBit => nvmlEventTypeDoubleBitEccError,
        DriverEventKind::GpuUnavailable => nvmlEventTypeGpuUnavailableError,
    }
}

/// The event types a GPU supports, as a `nvmlEventType*` mask.
fn supported(spec: &GpuSpec) -> c_ulonglong {
    spec.nvml
        .events
        .iter()
        .map(|k| event_bit(*k))
        .fold(0, |a, b| a | b)
}

/// How often a wait looks at the clock again.
const POLL: Duration = Duration::from_millis(5);

/// Where delivery stands on one registered GPU: every Xid at or before `after` was delivered
/// (or came before the registration), and so were the first `taken` of those after it.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    after: f64,
    taken: usize,
}

/// One GPU registered in a set: its event types (a mask) and how far delivery has come.
#[derive(Debug, Clone, Copy)]
struct Registered {
    mask: c_ulonglong,
    cursor: Cursor,
}

/// A live event set: its heap token (whose address is the handle) and its registered GPUs.
struct EventSet {
    _token: Box<nvmlEventSet_st>,
    gpus: BTreeMap<u32, Registered>,
    /// A registration answered NVML_ERROR_UNKNOWN: the set is "in undefined state".
    broken: bool,
}

/// Live event sets by handle address. Lock order: the library lock (`state::lock`) first.
static SETS: Mutex<BTreeMap<usize, EventSet>> = Mutex::new(BTreeMap::new());

fn sets() -> MutexGuard<'static, BTreeMap<usize, EventSet>> {
    SETS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A GPU's events in a window, as (scenario time, kind, Xid or 0), in order.
type Events = Vec<(f64, EventKind, u32)>;

impl EventSet {
    /// Takes the earliest undelivered event up to scenario time `now`, as (GPU, event type
    /// bit, event data), marking it delivered. Ties go to the lower GPU index.
    fn take_next(&mut self, node: &SimulatedNode, now: f64) -> Option<(u32, c_ulonglong, u32)> {
        // The earliest undelivered event so far: its time, its GPU, and that GPU's pending ones.
        let mut best: Option<(f64, u32, Events)> = None;
        for (gpu, reg) in &mut self.gpus {
            let mask = reg.mask;
            let cursor = &mut reg.cursor;
            let pending = node.events_between(*gpu, cursor.after, now, |kind| {
                kind.driver_event()
                    .is_some_and(|d| event_bit(d) & mask != 0)
            });
            match pending.get(cursor.taken) {
                Some(&(at, _, _)) if best.as_ref().is_none_or(|b| at < b.0) => {
                    best = Some((at, *gpu, pending));
                }
                Some(_) => {}
                // Everything up to now is delivered: move on, so later waits look at little.
                None => {
                    *cursor = Cursor {
                        after: cursor.after.max(now),
                        taken: 0,
                    }
                }
            }
        }
        let (_, gpu, pending) = best?;
        let cursor = &mut self.gpus.get_mut(&gpu).expect("a registered GPU").cursor;
        let (at, kind, data) = pending[cursor.taken];
        cursor.taken += 1;
        // Once no undelivered event shares this moment, the cursor can move past it.
        if pending.get(cursor.taken).is_none_or(|next| next.0 > at) {
            *cursor = Cursor {
                after: at,
                taken: 0,
            };
        }
        let bit = kind.driver_event().map_or(0, event_bit);
        Some((gpu, bit, data))
    }
}

/// A new, empty event set (heap-allocated; free it with `nvmlEventSetFree`).
#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) -> nvmlReturn_t {
    crate::calls::count("nvmlEventSetCreate");
    guarded(|| {
        let library = state::lock();
        if library.active().is_none() {
            return NVML_ERROR_UNINITIALIZED;
        }
        if set.is_null() {
            return NVML_ERROR_INVALID_ARGUMENT;
        }
        let token = Box::new(nvmlEventSet_st { _token: 0 });
        let handle: nvmlEventSet_t = std::ptr::from_ref(&*token).cast_mut();
        sets().insert(
            handle as usize,
            EventSet {
                _token: token,
                gpus: BTreeMap::new(),
                broken: false,
            },
        );
        // SAFETY: checked non-NULL above; valid for writing a handle by the NVML contract.
        unsafe { put(set, handle) }
    })
}

/// Frees an event set. Works with or without an init (so nothing leaks after a shutdown); a
/// handle that is not a live set gives `NVML_ERROR_INVALID_ARGUMENT`.
#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetFree(set: nvmlEventSet_t) -> nvmlReturn_t {
    crate::calls::count("nvmlEventSetFree");
    guarded(|| match sets().remove(&(set as usize)) {
        Some(_) => NVML_SUCCESS,
        None => NVML_ERROR_INVALID_ARGUMENT,
    })
}

/// The scenario's `nvml.events` of the GPU (critical Xid errors by default).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSupportedEventTypes(
    device: nvmlDevice_t,
    event_types: *mut c_ulonglong,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceGetSupportedEventTypes");
    // SAFETY: checked non-NULL by `device_call`.
    device_call(device, !event_types.is_null(), |gpu| unsafe {
        put(event_types, supported(gpu.spec()))
    })
}

/// Adds the GPU's events of `event_types` from now on to the set. `NVML_ERROR_NOT_SUPPORTED`
/// (and nothing registered) when `event_types` asks for a type the GPU does not support
/// (nvml-wrapper then frees the set), or when the scenario's `nvml.register_events_error` says
/// so; `NVML_ERROR_UNKNOWN`, which leaves the set broken, where it says `unknown`. Registering
/// a GPU again adds the types and keeps what it has delivered.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceRegisterEvents(
    device: nvmlDevice_t,
    event_types: c_ulonglong,
    set: nvmlEventSet_t,
) -> nvmlReturn_t {
    crate::calls::count("nvmlDeviceRegisterEvents");
    device_call(device, !set.is_null(), |gpu| {
        let mut sets = sets();
        let Some(entry) = sets.get_mut(&(set as usize)) else {
            return NVML_ERROR_INVALID_ARGUMENT;
        };
        if entry.broken {
            return NVML_ERROR_UNKNOWN;
        }
        match gpu.spec().nvml.register_events_error {
            Some(RegisterEventsError::NotSupported) => return NVML_ERROR_NOT_SUPPORTED,
            Some(RegisterEventsError::Unknown) => {
                entry.broken = true;
                return NVML_ERROR_UNKNOWN;
            }
            None => {}
        }
        if event_types & !supported(gpu.spec()) != 0 {
            return NVML_ERROR_NOT_SUPPORTED;
        }
        if event_types != 0 {
            entry
                .gpus
                .entry(gpu.index)
                .or_insert(Registered {
                    mask: 0,
                    cursor: Cursor {
                        after: gpu.t,
                        taken: 0,
                    },
                })
                .mask |= event_types;
        }
        NVML_SUCCESS
    })
}

/// Waits up to `timeoutms` for the next event on a GPU of the set and delivers it;
/// `NVML_ERROR_TIMEOUT` when none comes. Answers at once with NVML_ERROR_UNKNOWN on a broken
/// set or during an `event_wait_error` of one of its GPUs, and with NVML_ERROR_GPU_IS_LOST when
/// one of its GPUs is lost and has nothing left to deliver.
#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    set: nvmlEventSet_t,
    data: *mut nvmlEventData_t,
    timeoutms: c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlEventSetWait_v2");
    guarded(|| {
        let deadline = Instant::now() + Duration::from_millis(timeoutms.into());
        loop {
            {
                let library = state::lock();
                let Some(model) = library.active() else {
                    return NVML_ERROR_UNINITIALIZED;
                };
                if data.is_null() {
                    return NVML_ERROR_INVALID_ARGUMENT;
                }
                let mut sets = sets();
                let Some(entry) = sets.get_mut(&(set as usize)) else {
                    return NVML_ERROR_INVALID_ARGUMENT;
                };
                let now = model.now();
                let node = &model.node;
                if entry.broken || entry.gpus.keys().any(|g| node.event_wait_fails(*g, now)) {
                    return NVML_ERROR_UNKNOWN;
                }
                if let Some((gpu, bit, xid)) = entry.take_next(node, now) {
                    let event = nvmlEventData_t {
                        device: state::handle(gpu),
                        eventType: bit,
                        eventData: xid.into(),
                        gpuInstanceId: NO_INSTANCE,
                        computeInstanceId: NO_INSTANCE,
                    };
                    // SAFETY: checked non-NULL above; valid for writing by the NVML contract.
                    return unsafe { put(data, event) };
                }
                if entry.gpus.keys().any(|g| !node.is_present(*g, now)) {
                    return NVML_ERROR_GPU_IS_LOST;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return NVML_ERROR_TIMEOUT;
            }
            std::thread::sleep(left.min(POLL));
        }
    })
}

/// The first version of the wait, with the same answers.
#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetWait(
    set: nvmlEventSet_t,
    data: *mut nvmlEventData_t,
    timeoutms: c_uint,
) -> nvmlReturn_t {
    crate::calls::count("nvmlEventSetWait");
    // SAFETY: same contract.
    unsafe { nvmlEventSetWait_v2(set, data, timeoutms) }
}
