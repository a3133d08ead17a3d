//! The Xid listener: NVML event sets, waited on from a thread of their own.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

/// How long one wait for an event may block, so the thread notices it should stop.
const EVENT_WAIT_MS: u32 = 500;

/// The Xid listener: its own NVML handle (NVML counts inits), an event set for critical Xid
/// errors on every GPU that supports them, and a blocking wait loop, on its own thread because
/// the wait blocks. Sends (GPU UUID, Xid) until `stop` is set. Says once what it cannot do.
pub(super) fn listen_for_xids(lib: &OsString, tx: &mpsc::Sender<(String, u32)>, stop: &AtomicBool) {
    use nvml_wrapper::bitmasks::event::EventTypes;
    use nvml_wrapper::enums::event::XidError;
    let nvml = match Nvml::builder().lib_path(lib).init() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("Xid events unavailable: NVML init for the listener failed: {e}");
            return;
        }
    };
    let Ok(mut set) = nvml.create_event_set() else {
        tracing::info!("Xid events unavailable: this driver cannot create event sets");
        return;
    };
    let count = nvml.device_count().unwrap_or(0);
    let mut watched = 0;
    // An event names its GPU by handle; a GPU that has just fallen off the bus (Xid 79) no longer
    // answers `uuid()`, so the UUIDs are read now, while every GPU answers.
    let mut uuid_of: BTreeMap<usize, String> = BTreeMap::new();
    for i in 0..count {
        let Ok(d) = nvml.device_by_index(i) else {
            continue;
        };
        if let Ok(u) = d.uuid() {
            // SAFETY: the raw handle is only compared as a number, never dereferenced.
            uuid_of.insert(unsafe { d.handle() } as usize, u);
        }
        let supported = d
            .supported_event_types()
            .is_ok_and(|t| t.contains(EventTypes::CRITICAL_XID_ERROR));
        if !supported {
            continue;
        }
        set = match d.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(s) => {
                watched += 1;
                s
            }
            Err(e) => {
                tracing::info!("Xid events unavailable: registering GPU {i} failed: {e}");
                return;
            }
        };
    }
    if watched == 0 {
        tracing::info!("Xid events unavailable: no GPU supports critical Xid events");
        return;
    }
    tracing::debug!("listening for Xid errors on {watched} GPU(s)");
    while !stop.load(Ordering::Relaxed) {
        match set.wait(EVENT_WAIT_MS) {
            Ok(ev) => {
                let xid = match ev.event_data {
                    Some(XidError::Value(v)) => u32::try_from(v).unwrap_or(u32::MAX),
                    _ => continue,
                };
                // SAFETY: as above, a number to look up.
                let handle = unsafe { ev.device.handle() } as usize;
                let Some(uuid) = uuid_of.get(&handle).cloned() else {
                    continue;
                };
                if tx.send((uuid, xid)).is_err() {
                    return;
                }
            }
            Err(NvmlError::Timeout) => {}
            // A GPU that falls off the bus may report GPU_IS_LOST here; keep listening.
            Err(NvmlError::GpuLost) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                tracing::warn!("Xid listener stopped: waiting for events failed: {e}");
                return;
            }
        }
    }
}
