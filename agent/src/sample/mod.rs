//! Reading the GPUs, and nothing else.
//!
//! A [`Backend`] is the narrow seam to the hardware: NVML through `nvml-wrapper`
//! ([`nvml::NvmlBackend`]) or the simulated node ([`sim::SimBackend`]). It answers what is
//! read once and what is read each tick, as the plain types of `gpucost_core::reading`.
//!
//! The [`sampler`] drives a backend for the node's owner thread, each GPU's reads on a reader
//! thread of its own; nothing else in the agent calls a backend.

pub mod benchmark;
pub mod nvml;
pub mod sampler;
#[cfg(test)]
pub mod scripted;
pub mod sim;

use gpucost_core::reading::{DriverEvent, GpuStatic, Reading, SampleError, Source};

/// The seam to the hardware. Only the sampler calls it: `gpus` once after opening, then `read`
/// from each GPU's reader thread and `take_xids` from the node thread. Calls may block (NVML
/// does), and a call on a wedged GPU may never return (its caller sleeps uninterruptibly in the
/// driver), so reads of different GPUs run at the same time and must not wait for each other:
/// whatever a read keeps between calls is per GPU.
pub trait Backend: Send + Sync {
    fn source(&self) -> Source;
    /// The driver version, when known.
    fn driver_version(&self) -> Option<String>;
    /// Static facts about every GPU, read once after opening, before any `read`.
    fn gpus(&mut self) -> Result<Vec<GpuStatic>, SampleError>;
    /// Reads one GPU; `with_processes` asks for the (slower) process list too. Called for
    /// different GPUs at once (never twice at once for one GPU).
    fn read(&self, index: u32, with_processes: bool) -> Result<Reading, SampleError>;
    /// Xid errors the driver reported since the last call, as (GPU index, Xid), in order. Apart
    /// from `read`, because a GPU that just fell off the bus (Xid 79) cannot be read.
    fn take_xids(&self) -> Vec<(u32, u32)>;
    /// Driver events other than Xids (ECC errors, a GPU unavailable or lost) since the last
    /// call, as (GPU index, event), in order.
    fn take_driver_events(&self) -> Vec<(u32, DriverEvent)> {
        Vec::new()
    }
    /// Whether the listener for Xids and other driver events is waiting for them (NVML: its
    /// thread waits on an event set with at least one GPU). A backend without one says true.
    fn xid_listener_up(&self) -> bool {
        true
    }
    /// Whether the units `gpus` listed are no longer what the hardware has: a GPU switched
    /// MIG mode, or its MIG instances changed. The sampler then opens the backend again and
    /// lists them anew.
    fn layout_changed(&self) -> bool {
        false
    }
}

/// Opens a [`Backend`], and again after it failed: the sampler holds one and retries it, so the
/// agent starts (and keeps serving) without a GPU library. Tests pass a scripted one.
pub trait BackendFactory: Send {
    fn source(&self) -> Source;
    /// The scenario's name on a simulated node.
    fn simulated(&self) -> Option<&str> {
        None
    }
    /// What is opened, for log lines ("NVML").
    fn library(&self) -> &'static str;
    /// What was tried and how to fix it, for the log line when opening fails.
    fn unavailable_hint(&self) -> String;
    fn open(&mut self) -> Result<Box<dyn Backend>, SampleError>;
}
