//! The Xid listener: NVML event sets, waited on from a thread of their own.
//!
//! The thread has its own NVML handle (NVML counts inits) and one event set. Each GPU is
//! registered on its own, for the event types it supports among those wanted (`wanted &
//! supported`, as the Kubernetes device plugin's `health.go` does): critical Xid errors, single-
//! and double-bit ECC errors, and "GPU unavailable". Through NVML's raw calls, because
//! nvml-wrapper frees the whole set when one registration fails and has no bit for "GPU
//! unavailable".
//!
//! Nothing stops it for good:
//! - A GPU whose registration fails is left out and tried again with a backoff; the others are
//!   watched meanwhile. A registration is tried on a scratch set first, because one that answers
//!   NVML_ERROR_UNKNOWN leaves its set "in undefined state" (nvml.h).
//! - A wait that answers NVML_ERROR_GPU_IS_LOST at once, again and again while a registered GPU
//!   stays lost (nvml.h; NVIDIA's own mock does so "as a real driver after Xid 79",
//!   k8s-test-infra PR 746), does not make it spin: the lost GPU is reported, the set is made
//!   again without it, and it is registered again once it answers.
//! - Any other wait error (a persistent one returns at once, HAMi issue 2321) ends the session:
//!   the thread starts over (new handle, new set) after a backoff of 0.5 s doubling up to 60 s.
//!
//! Xid 999 is what the driver reports for an Xid it does not know (nvml.h, `nvmlEventData_t`);
//! it is passed on as 999. `Shared::up` tells `gpucost_xid_listener_up`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;
use nvml_wrapper_sys::bindings::{
    nvmlDevice_t, nvmlEventData_t, nvmlEventSet_t, nvmlEventTypeDoubleBitEccError,
    nvmlEventTypeGpuUnavailableError, nvmlEventTypeSingleBitEccError,
    nvmlEventTypeXidCriticalError, nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST,
    nvmlReturn_enum_NVML_ERROR_TIMEOUT, nvmlReturn_enum_NVML_ERROR_UNKNOWN,
    nvmlReturn_enum_NVML_SUCCESS, nvmlReturn_t, NvmlLib,
};

use gpucost_core::reading::DriverEvent;

/// How long one wait for an event may block, so the thread notices it should stop.
const EVENT_WAIT_MS: u32 = 500;

const XID: u64 = nvmlEventTypeXidCriticalError as u64;
const ECC_SINGLE_BIT: u64 = nvmlEventTypeSingleBitEccError as u64;
const ECC_DOUBLE_BIT: u64 = nvmlEventTypeDoubleBitEccError as u64;
const GPU_UNAVAILABLE: u64 = nvmlEventTypeGpuUnavailableError as u64;
/// The event types asked of every GPU, as far as it supports them.
const WANTED: u64 = XID | ECC_SINGLE_BIT | ECC_DOUBLE_BIT | GPU_UNAVAILABLE;

/// Waits before starting over after a failed session: doubling from the first to the last.
const RESTART: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(60));
/// Waits before registering a GPU again after its registration failed: doubling.
const RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// How often a lost GPU is asked whether it answers again (the sampler reads it as often).
const LOST_RETRY: Duration = Duration::from_secs(2);
/// A session that ran this long was healthy: the next restart waits the shortest time again.
const HEALTHY_FOR: Duration = Duration::from_secs(60);

const SUCCESS: nvmlReturn_t = nvmlReturn_enum_NVML_SUCCESS;
const TIMEOUT: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_TIMEOUT;
const GPU_IS_LOST: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST;
const UNKNOWN: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_UNKNOWN;

/// What the listener heard, by GPU index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Heard {
    Xid { gpu: u32, xid: u32 },
    Event { gpu: u32, event: DriverEvent },
}

/// Shared by the backend and its listener thread.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Set by the backend when it closes.
    pub stop: AtomicBool,
    /// Whether the listener waits on an event set with at least one GPU.
    pub up: AtomicBool,
}

/// The listener thread's body: sessions, started over after failures, until `stop`.
pub(super) fn listen(lib: &OsStr, tx: &Sender<Heard>, shared: &Shared) {
    let mut restart = Backoff::new(RESTART);
    // GPUs reported lost and not back since, so that each loss is reported once; and the GPU
    // registration failures already said at warn level.
    let mut lost = BTreeSet::new();
    let mut said_gpus = BTreeSet::new();
    let mut said: Option<String> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let began = Instant::now();
        let end = session(lib, tx, shared, &mut lost, &mut said_gpus, said.is_some());
        shared.up.store(false, Ordering::Relaxed);
        match end {
            End::Stopped => return,
            End::Unavailable(why) => {
                tracing::info!("Xid events unavailable: {why} (gpucost_xid_listener_up 0)");
                while !shared.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(EVENT_WAIT_MS.into()));
                }
                return;
            }
            End::Failed(why) => {
                if began.elapsed() >= HEALTHY_FOR {
                    restart.reset();
                    said = None;
                }
                let delay = restart.next();
                if said.as_deref() != Some(why.as_str()) {
                    tracing::warn!(
                        "Xid listener: {why}; starting over in {} (gpucost_xid_listener_up 0 \
                         meanwhile, said once)",
                        humantime::format_duration(delay)
                    );
                    said = Some(why);
                } else {
                    tracing::debug!("Xid listener: {why}; starting over in {delay:?}");
                }
                sleep_unless_stopped(delay, &shared.stop);
            }
        }
    }
}

/// How a session ended.
enum End {
    /// Asked to stop, or nobody listens any more.
    Stopped,
    /// Something failed; start over after a backoff.
    Failed(String),
    /// Nothing to wait for on this node; starting over would not change that.
    Unavailable(String),
}

/// One NVML handle, one event set, and the wait loop.
fn session(
    lib: &OsStr,
    tx: &Sender<Heard>,
    shared: &Shared,
    lost: &mut BTreeSet<u32>,
    said_gpus: &mut BTreeSet<(u32, String)>,
    recovering: bool,
) -> End {
    let nvml = match Nvml::builder().lib_path(lib).init() {
        Ok(n) => n,
        Err(e) => return End::Failed(format!("NVML init failed: {e}")),
    };
    let Some(calls) = Calls::of(nvml.lib()) else {
        return End::Unavailable("this NVML library has no event calls".into());
    };
    let count = match nvml.device_count() {
        Ok(n) => n,
        Err(e) => return End::Failed(format!("cannot count GPUs: {e}")),
    };
    if count == 0 {
        return End::Unavailable("no GPU".into());
    }
    let mut set = match EventSet::create(&calls) {
        Ok(s) => s,
        Err(code) => return End::Failed(format!("cannot create an event set: {}", text(code))),
    };
    let mut gpus: Vec<Gpu> = (0..count).map(Gpu::new).collect();
    let mut was_up = false;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return End::Stopped;
        }
        let now = Instant::now();
        for g in gpus.iter_mut().filter(|g| g.due(now)) {
            if let Err(why) = g.register(&nvml, &calls, &set, now, said_gpus) {
                return End::Failed(why);
            }
            let gone = match g.watch {
                Watch::Lost { .. } => report_lost(tx, lost, g.index),
                Watch::Registered => {
                    if lost.remove(&g.index) {
                        tracing::info!(
                            gpu = g.index,
                            "GPU {} answers again; its driver events are watched again",
                            g.index
                        );
                    }
                    false
                }
                _ => false,
            };
            if gone {
                return End::Stopped;
            }
        }
        if gpus.iter().all(|g| matches!(g.watch, Watch::Unsupported)) {
            return End::Unavailable(
                "no GPU supports the event types (Xid, ECC, unavailable)".into(),
            );
        }
        let watched = gpus.iter().filter(|g| g.watch == Watch::Registered).count();
        shared.up.store(watched > 0, Ordering::Relaxed);
        if watched > 0 && !was_up {
            if recovering {
                tracing::info!("Xid listener up again: watching {watched} GPU(s)");
            } else {
                tracing::debug!("Xid listener: watching {watched} GPU(s)");
            }
            was_up = true;
        }
        match set.wait(EVENT_WAIT_MS) {
            Ok(data) => {
                if let Some(heard) = heard(&gpus, &data) {
                    if send(tx, heard) {
                        return End::Stopped;
                    }
                }
            }
            Err(TIMEOUT) => {}
            Err(GPU_IS_LOST) => {
                // Which registered GPU is gone: it no longer answers.
                let now = Instant::now();
                let mut found = false;
                for g in gpus.iter_mut().filter(|g| g.watch == Watch::Registered) {
                    if g.handle
                        .is_some_and(|h| calls.supported(h) == Err(GPU_IS_LOST))
                    {
                        g.watch = Watch::Lost {
                            at: now + LOST_RETRY,
                        };
                        found = true;
                        tracing::warn!(
                            gpu = g.index,
                            "GPU {}: lost; its driver events are watched again when it answers",
                            g.index
                        );
                        if report_lost(tx, lost, g.index) {
                            return End::Stopped;
                        }
                    }
                }
                if !found {
                    return End::Failed(
                        "waiting for events answered GPU_IS_LOST, but every GPU answers".into(),
                    );
                }
                // NVML cannot take a GPU out of a set: a new set, with the others.
                set = match EventSet::create(&calls) {
                    Ok(s) => s,
                    Err(code) => {
                        return End::Failed(format!("cannot create an event set: {}", text(code)))
                    }
                };
                for g in gpus.iter_mut().filter(|g| g.watch == Watch::Registered) {
                    g.watch = Watch::Due;
                }
            }
            Err(code) => return End::Failed(format!("waiting for events failed: {}", text(code))),
        }
    }
}

/// Sends what was heard; true when nobody listens any more (the backend is gone).
fn send(tx: &Sender<Heard>, heard: Heard) -> bool {
    tx.send(heard).is_err()
}

/// Reports GPU `gpu` lost, once per loss (`lost`: the GPUs reported and not back since); true
/// when nobody listens any more.
fn report_lost(tx: &Sender<Heard>, lost: &mut BTreeSet<u32>, gpu: u32) -> bool {
    lost.insert(gpu)
        && send(
            tx,
            Heard::Event {
                gpu,
                event: DriverEvent::GpuLost,
            },
        )
}

/// What an event says, for a GPU of ours.
fn heard(gpus: &[Gpu], data: &nvmlEventData_t) -> Option<Heard> {
    let Some(gpu) = gpus
        .iter()
        .find(|g| g.handle == Some(data.device))
        .map(|g| g.index)
    else {
        tracing::debug!("an event for a device that is not one of ours");
        return None;
    };
    let t = data.eventType;
    if t & XID != 0 {
        // 999: an Xid the driver does not know, kept as such.
        let xid = u32::try_from(data.eventData).unwrap_or(u32::MAX);
        Some(Heard::Xid { gpu, xid })
    } else if t & ECC_DOUBLE_BIT != 0 {
        Some(Heard::Event {
            gpu,
            event: DriverEvent::EccDoubleBit,
        })
    } else if t & ECC_SINGLE_BIT != 0 {
        Some(Heard::Event {
            gpu,
            event: DriverEvent::EccSingleBit,
        })
    } else if t & GPU_UNAVAILABLE != 0 {
        Some(Heard::Event {
            gpu,
            event: DriverEvent::GpuUnavailable,
        })
    } else {
        None
    }
}

/// Where watching one GPU stands.
#[derive(Debug, Clone, PartialEq)]
enum Watch {
    /// To be registered now.
    Due,
    /// In the event set.
    Registered,
    /// It supports none of the wanted event types.
    Unsupported,
    /// Its registration failed; tried again at `at`.
    Retry { at: Instant, backoff: Backoff },
    /// It does not answer; asked again at `at`.
    Lost { at: Instant },
}

/// One GPU of the session.
struct Gpu {
    index: u32,
    /// Its handle, once NVML gave one.
    handle: Option<nvmlDevice_t>,
    watch: Watch,
}

impl Gpu {
    fn new(index: u32) -> Gpu {
        Gpu {
            index,
            handle: None,
            watch: Watch::Due,
        }
    }

    fn due(&self, now: Instant) -> bool {
        match &self.watch {
            Watch::Due => true,
            Watch::Retry { at, .. } | Watch::Lost { at, .. } => now >= *at,
            Watch::Registered | Watch::Unsupported => false,
        }
    }

    /// The next try after a failure, `why`, said at warn level the first time.
    fn failed(&mut self, now: Instant, why: String, said: &mut BTreeSet<(u32, String)>) {
        let mut backoff = match &self.watch {
            Watch::Retry { backoff, .. } => backoff.clone(),
            _ => Backoff::new(RETRY),
        };
        let delay = backoff.next();
        if said.insert((self.index, why.clone())) {
            tracing::warn!(gpu = self.index, "GPU {}: {why}; its driver events are not watched, tried again with a backoff (said once)", self.index);
        } else {
            tracing::debug!(
                gpu = self.index,
                "GPU {}: {why}; tried again in {delay:?}",
                self.index
            );
        }
        self.watch = Watch::Retry {
            at: now + delay,
            backoff,
        };
    }

    fn went_lost(&mut self, now: Instant) {
        self.watch = Watch::Lost {
            at: now + LOST_RETRY,
        };
    }

    /// Registers the GPU in `set` for the wanted event types it supports. Err when `set` is
    /// broken (the session must start over).
    fn register(
        &mut self,
        nvml: &Nvml,
        calls: &Calls<'_>,
        set: &EventSet<'_>,
        now: Instant,
        said: &mut BTreeSet<(u32, String)>,
    ) -> Result<(), String> {
        let handle = match self.handle {
            Some(h) => h,
            None => match nvml.device_by_index(self.index) {
                // SAFETY: the raw handle is only passed back to this library while `nvml` lives.
                Ok(d) => *self.handle.insert(unsafe { d.handle() }),
                Err(NvmlError::GpuLost) => {
                    self.went_lost(now);
                    return Ok(());
                }
                Err(e) => {
                    self.failed(now, format!("no handle: {e}"), said);
                    return Ok(());
                }
            },
        };
        let mask = match calls.supported(handle) {
            Ok(supported) => WANTED & supported,
            Err(GPU_IS_LOST) => {
                self.went_lost(now);
                return Ok(());
            }
            Err(code) => {
                self.failed(
                    now,
                    format!("cannot read its event types: {}", text(code)),
                    said,
                );
                return Ok(());
            }
        };
        if mask == 0 {
            tracing::info!(
                gpu = self.index,
                "GPU {}: supports none of the event types watched (Xid, ECC, unavailable)",
                self.index
            );
            self.watch = Watch::Unsupported;
            return Ok(());
        }
        // A scratch set first: a registration that answers UNKNOWN leaves its set undefined.
        let scratch = match EventSet::create(calls) {
            Ok(s) => s,
            Err(code) => return Err(format!("cannot create an event set: {}", text(code))),
        };
        match scratch.register(handle, mask) {
            SUCCESS => {}
            GPU_IS_LOST => {
                self.went_lost(now);
                return Ok(());
            }
            code => {
                self.failed(
                    now,
                    format!("registering for events failed: {}", text(code)),
                    said,
                );
                return Ok(());
            }
        }
        drop(scratch);
        match set.register(handle, mask) {
            SUCCESS => self.watch = Watch::Registered,
            GPU_IS_LOST => self.went_lost(now),
            UNKNOWN => {
                return Err(format!(
                    "registering GPU {} for events failed: {} (the event set is undefined)",
                    self.index,
                    text(UNKNOWN)
                ))
            }
            code => self.failed(
                now,
                format!("registering for events failed: {}", text(code)),
                said,
            ),
        }
        Ok(())
    }
}

/// A doubling wait, from a first to a last.
#[derive(Debug, Clone, PartialEq)]
struct Backoff {
    next: Duration,
    first: Duration,
    last: Duration,
}

impl Backoff {
    fn new((first, last): (Duration, Duration)) -> Backoff {
        Backoff {
            next: first,
            first,
            last,
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.last);
        d
    }

    fn reset(&mut self) {
        self.next = self.first;
    }
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let end = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

fn text(code: nvmlReturn_t) -> String {
    NvmlError::from(code).to_string()
}

/// NVML's event calls, checked present once (the bindings' fields are `Result`s: a library
/// without one is a value here, never a panic), for as long as the library is loaded (`'n`).
struct Calls<'n> {
    create: unsafe extern "C" fn(*mut nvmlEventSet_t) -> nvmlReturn_t,
    free: unsafe extern "C" fn(nvmlEventSet_t) -> nvmlReturn_t,
    register: unsafe extern "C" fn(nvmlDevice_t, u64, nvmlEventSet_t) -> nvmlReturn_t,
    supported: unsafe extern "C" fn(nvmlDevice_t, *mut u64) -> nvmlReturn_t,
    wait: unsafe extern "C" fn(nvmlEventSet_t, *mut nvmlEventData_t, u32) -> nvmlReturn_t,
    _lib: PhantomData<&'n NvmlLib>,
}

impl<'n> Calls<'n> {
    fn of(lib: &'n NvmlLib) -> Option<Calls<'n>> {
        Some(Calls {
            create: *lib.nvmlEventSetCreate.as_ref().ok()?,
            free: *lib.nvmlEventSetFree.as_ref().ok()?,
            register: *lib.nvmlDeviceRegisterEvents.as_ref().ok()?,
            supported: *lib.nvmlDeviceGetSupportedEventTypes.as_ref().ok()?,
            wait: *lib.nvmlEventSetWait_v2.as_ref().ok()?,
            _lib: PhantomData,
        })
    }

    /// The event types the GPU supports, as an `nvmlEventType*` mask.
    fn supported(&self, device: nvmlDevice_t) -> Result<u64, nvmlReturn_t> {
        let mut types = 0;
        // SAFETY: `device` is a handle of this library; `types` is a valid out-pointer for the
        // `unsigned long long` the call writes.
        match unsafe { (self.supported)(device, &mut types) } {
            SUCCESS => Ok(types),
            code => Err(code),
        }
    }
}

/// A raw NVML event set, freed when dropped.
struct EventSet<'c> {
    calls: &'c Calls<'c>,
    handle: nvmlEventSet_t,
}

impl<'c> EventSet<'c> {
    fn create(calls: &'c Calls<'c>) -> Result<EventSet<'c>, nvmlReturn_t> {
        let mut handle = std::ptr::null_mut();
        // SAFETY: `handle` is a valid out-pointer for the set handle the call writes.
        match unsafe { (calls.create)(&mut handle) } {
            SUCCESS => Ok(EventSet { calls, handle }),
            code => Err(code),
        }
    }

    fn register(&self, device: nvmlDevice_t, mask: u64) -> nvmlReturn_t {
        // SAFETY: a live set and a device handle of this library.
        unsafe { (self.calls.register)(device, mask, self.handle) }
    }

    fn wait(&self, timeout_ms: u32) -> Result<nvmlEventData_t, nvmlReturn_t> {
        // SAFETY: all-zero is a valid `nvmlEventData_t` (a NULL device handle, no event).
        let mut data: nvmlEventData_t = unsafe { std::mem::zeroed() };
        // SAFETY: a live set, and a valid out-pointer for the one event the call writes.
        match unsafe { (self.calls.wait)(self.handle, &mut data, timeout_ms) } {
            SUCCESS => Ok(data),
            code => Err(code),
        }
    }
}

impl Drop for EventSet<'_> {
    fn drop(&mut self) {
        // SAFETY: the set is ours, live, and freed exactly once, here.
        unsafe { (self.calls.free)(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_last_and_resets() {
        let mut b = Backoff::new(RESTART);
        let waits: Vec<u64> = (0..10).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
        );
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(500));
    }

    #[test]
    fn events_are_read_by_type_and_xid_999_is_kept() {
        let mut a = 0u8;
        let mut b = 0u8;
        let handle_a: nvmlDevice_t = std::ptr::addr_of_mut!(a).cast();
        let handle_b: nvmlDevice_t = std::ptr::addr_of_mut!(b).cast();
        let gpus = [
            Gpu {
                index: 0,
                handle: Some(handle_a),
                watch: Watch::Registered,
            },
            Gpu {
                index: 3,
                handle: Some(handle_b),
                watch: Watch::Registered,
            },
        ];
        let event = |device, t, d| nvmlEventData_t {
            device,
            eventType: t,
            eventData: d,
            gpuInstanceId: u32::MAX,
            computeInstanceId: u32::MAX,
        };
        assert_eq!(
            heard(&gpus, &event(handle_b, XID, 999)),
            Some(Heard::Xid { gpu: 3, xid: 999 })
        );
        assert_eq!(
            heard(&gpus, &event(handle_a, XID, 79)),
            Some(Heard::Xid { gpu: 0, xid: 79 })
        );
        for (t, e) in [
            (ECC_SINGLE_BIT, DriverEvent::EccSingleBit),
            (ECC_DOUBLE_BIT, DriverEvent::EccDoubleBit),
            (GPU_UNAVAILABLE, DriverEvent::GpuUnavailable),
        ] {
            assert_eq!(
                heard(&gpus, &event(handle_a, t, 0)),
                Some(Heard::Event { gpu: 0, event: e })
            );
        }
        assert_eq!(heard(&gpus, &event(std::ptr::null_mut(), XID, 13)), None);
        // A P-state change was not asked for.
        assert_eq!(heard(&gpus, &event(handle_a, 0x4, 0)), None);
    }
}
