//! Xid events: event sets, registration and the blocking wait.
//!
//! The scenario's `xid` events are the only events simulated GPUs raise (event type
//! `nvmlEventTypeXidCriticalError`). An event set remembers, per registered GPU, up to which
//! scenario time it has delivered Xids; a wait hands out the earliest Xid not yet delivered
//! (each exactly once, every repetition of the timeline included) as soon as scenario time
//! reaches it, or times out. A lost GPU still delivers its Xids (Xid 79 comes with the loss).
//!
//! Event-set handles point to heap tokens kept in [`SETS`]; a freed or foreign handle gives
//! `NVML_ERROR_INVALID_ARGUMENT`. A wait sleeps without holding any lock, so other threads keep
//! calling the library meanwhile.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use gpucost_sim::SimulatedNode;

use crate::abi::*;
use crate::{device_call, guarded, put, state};

/// The event types simulated GPUs support.
const SUPPORTED_EVENTS: c_ulonglong = nvmlEventTypeXidCriticalError;

/// How often a wait looks at the clock again.
const POLL: Duration = Duration::from_millis(5);

/// Where delivery stands on one registered GPU: every Xid at or before `after` was delivered
/// (or came before the registration), and so were the first `taken` of those after it.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    after: f64,
    taken: usize,
}

/// A live event set: its heap token (whose address is the handle) and its registered GPUs.
struct EventSet {
    _token: Box<nvmlEventSet_st>,
    gpus: BTreeMap<u32, Cursor>,
}

/// Live event sets by handle address. Lock order: the library lock (`state::lock`) first.
static SETS: Mutex<BTreeMap<usize, EventSet>> = Mutex::new(BTreeMap::new());

fn sets() -> MutexGuard<'static, BTreeMap<usize, EventSet>> {
    SETS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A GPU's Xids in a window, as (scenario time, Xid), in order.
type Xids = Vec<(f64, u32)>;

impl EventSet {
    /// Takes the earliest undelivered Xid up to scenario time `now`, as (GPU, Xid), marking it
    /// delivered. Ties go to the lower GPU index.
    fn take_next(&mut self, node: &SimulatedNode, now: f64) -> Option<(u32, u32)> {
        // The earliest undelivered Xid so far: its time, its GPU, and that GPU's pending Xids.
        let mut best: Option<(f64, u32, Xids)> = None;
        for (gpu, cursor) in &mut self.gpus {
            let pending = node.xids_between(*gpu, cursor.after, now);
            match pending.get(cursor.taken) {
                Some(&(at, _)) if best.as_ref().is_none_or(|b| at < b.0) => {
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
        let cursor = self.gpus.get_mut(&gpu).expect("a registered GPU");
        let (at, xid) = pending[cursor.taken];
        cursor.taken += 1;
        // Once no undelivered Xid shares this moment, the cursor can move past it.
        if pending.get(cursor.taken).is_none_or(|next| next.0 > at) {
            *cursor = Cursor {
                after: at,
                taken: 0,
            };
        }
        Some((gpu, xid))
    }
}

/// A new, empty event set (heap-allocated; free it with `nvmlEventSetFree`).
#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) -> nvmlReturn_t {
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
    guarded(|| match sets().remove(&(set as usize)) {
        Some(_) => NVML_SUCCESS,
        None => NVML_ERROR_INVALID_ARGUMENT,
    })
}

/// Critical Xid errors only.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSupportedEventTypes(
    device: nvmlDevice_t,
    event_types: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: checked non-NULL by `device_call`.
    device_call(device, !event_types.is_null(), |_| unsafe {
        put(event_types, SUPPORTED_EVENTS)
    })
}

/// Adds the GPU's Xid events from now on to the set. `NVML_ERROR_NOT_SUPPORTED` when
/// `event_types` asks for anything but Xid errors (nvml-wrapper then frees the set).
/// Registering a GPU again keeps what it has delivered.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceRegisterEvents(
    device: nvmlDevice_t,
    event_types: c_ulonglong,
    set: nvmlEventSet_t,
) -> nvmlReturn_t {
    device_call(device, !set.is_null(), |gpu| {
        let mut sets = sets();
        let Some(entry) = sets.get_mut(&(set as usize)) else {
            return NVML_ERROR_INVALID_ARGUMENT;
        };
        if event_types & !SUPPORTED_EVENTS != 0 {
            return NVML_ERROR_NOT_SUPPORTED;
        }
        if event_types & nvmlEventTypeXidCriticalError != 0 {
            entry.gpus.entry(gpu.index).or_insert(Cursor {
                after: gpu.t,
                taken: 0,
            });
        }
        NVML_SUCCESS
    })
}

/// Waits up to `timeoutms` for the next Xid on a GPU of the set and delivers it;
/// `NVML_ERROR_TIMEOUT` when none comes.
#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    set: nvmlEventSet_t,
    data: *mut nvmlEventData_t,
    timeoutms: c_uint,
) -> nvmlReturn_t {
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
                if let Some((gpu, xid)) = entry.take_next(&model.node, model.now()) {
                    let event = nvmlEventData_t {
                        device: state::handle(gpu),
                        eventType: nvmlEventTypeXidCriticalError,
                        eventData: xid.into(),
                        gpuInstanceId: NO_INSTANCE,
                        computeInstanceId: NO_INSTANCE,
                    };
                    // SAFETY: checked non-NULL above; valid for writing by the NVML contract.
                    return unsafe { put(data, event) };
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
    // SAFETY: same contract.
    unsafe { nvmlEventSetWait_v2(set, data, timeoutms) }
}
