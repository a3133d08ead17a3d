//! MIG: the GPU instances of a GPU in MIG mode, each a billing unit of its own.
//!
//! At open, a GPU whose current MIG mode is on (`nvmlDeviceGetMigMode`) is listed as its MIG
//! devices instead of as a whole: each MIG device at an index below
//! `nvmlDeviceGetMaxMigDeviceCount` (the most it can hold, one per compute slice:
//! NVIDIA/go-nvml#60; an index without one answers `NOT_FOUND`, nvml.h) is a unit with its
//! `MIG-...` UUID, its GPU instance id (`nvmlDeviceGetGpuInstanceId`), its profile (the part of
//! its name after ` MIG `, as `nvidia-smi -L` prints it: `MIG 3g.40gb Device 0`) and its
//! slices (the `N` of `Ng.`), of the parent's (the max device count). Its unit index, the
//! `gpu` label, is [`mig_unit_index`].
//!
//! A unit's reading: its own memory, from the MIG device handle (nvml.h: "Per-instance
//! information can be queried by using specific MIG device handles"); its own pipe activity,
//! from `nvmlGpmMigSampleGet` on the parent; its processes, from the parent's lists by
//! `gpuInstanceId`; and its share (`MigSlice::share_of`: slices over the parent's) of the
//! parent's energy counter, power and power limit, which NVML gives for the board only. The
//! clocks, temperature and clock-event reasons are the parent's. GPU utilization is not read:
//! "On MIG-enabled GPUs, querying device utilization rates is not currently supported"
//! (nvml.h:7075); whether the instance is idle comes from what MIG reports
//! (`account::mig_activity`).
//!
//! A GPU that switches MIG mode, or whose instances change, while the agent runs makes the
//! backend say its layout changed (`Backend::layout_changed`); the sampler then opens the
//! library again and lists the units anew. Whole GPUs are asked for their MIG mode on the
//! process cadence only (a switch needs the GPU free of processes anyway), and a GPU that does
//! not support MIG is not asked again.

use nvml_wrapper::error::{nvml_try, NvmlError};
use nvml_wrapper::{Device, Nvml};

use gpucost_core::reading::{mig_unit_index, GpuStatic, MigSlice};

/// What a billing unit is on NVML's device list.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Unit {
    /// A whole GPU at this NVML index.
    Whole { nvml_index: u32 },
    /// A MIG GPU instance: the parent's NVML index, the MIG device's index under it, and what
    /// it is.
    Mig { position: u32, slice: MigSlice },
}

/// `nvmlDeviceGetGpuInstanceId` of a MIG device handle (nvml-wrapper has no method for it).
pub(super) fn gpu_instance_id(nvml: &Nvml, mig: &Device<'_>) -> Result<u32, NvmlError> {
    let call = nvml
        .lib()
        .nvmlDeviceGetGpuInstanceId
        .as_ref()
        .map_err(|_| NvmlError::FunctionNotFound)?;
    let mut id = 0;
    // SAFETY: the handle belongs to this `Nvml` and lives as long as `mig`; `id` is a valid
    // out-pointer for the call's `unsigned int *`.
    nvml_try(unsafe { call(mig.handle(), &mut id) })?;
    Ok(id)
}

/// The GPU instance profile in a MIG device's name (`NVIDIA H100 80GB HBM3 MIG 3g.40gb` ->
/// `3g.40gb`); a compute instance's device (`MIG 1c.3g.40gb`, one of several compute instances
/// of a GPU instance) gives its GPU instance's profile.
pub(super) fn profile_of(name: &str) -> Option<&str> {
    let (_, profile) = name.rsplit_once(" MIG ")?;
    let profile = profile.trim();
    let profile = match profile.split_once("c.") {
        Some((n, rest)) if n.parse::<u32>().is_ok() => rest,
        _ => profile,
    };
    MigSlice::slices_of_profile(profile).map(|_| profile)
}

/// Whether the GPU is in MIG mode now: `Some(true/false)`, or `None` where it has no MIG (or
/// the library cannot say).
pub(super) fn mig_on(d: &Device<'_>) -> Option<bool> {
    d.mig_mode().ok().map(|m| m.current == 1)
}

/// The units of the GPU at NVML index `index` in MIG mode: one per MIG device. Empty when
/// none can be listed (the caller then lists the GPU as a whole).
pub(super) fn instances(
    nvml: &Nvml,
    index: u32,
    parent_uuid: &str,
    model: &str,
    compute_capability: Option<(u32, u32)>,
    d: &Device<'_>,
) -> Vec<(GpuStatic, Unit)> {
    let max = match d.mig_device_count() {
        Ok(n) if n > 0 => n,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for position in 0..max {
        let m = match d.mig_device_by_index(position) {
            Ok(m) => m,
            // No MIG device at this index (nvml.h: NOT_FOUND); others may follow.
            Err(_) => continue,
        };
        let (Ok(uuid), Ok(gi), Ok(name)) = (m.uuid(), gpu_instance_id(nvml, &m), m.name()) else {
            tracing::warn!(
                gpu = index,
                "GPU {index}: MIG device {position} cannot be read (UUID, GPU instance id or \
                 name); it is not billed until the GPU is listed again"
            );
            continue;
        };
        let Some(profile) = profile_of(&name) else {
            tracing::warn!(
                gpu = index,
                "GPU {index}: MIG device {position} is named {name:?}, with no profile such as \
                 \"3g.40gb\" in it; it is not billed"
            );
            continue;
        };
        // A GPU instance split into several compute instances has a MIG device for each: the
        // GPU instance is the unit (its processes are those with its gpuInstanceId), under its
        // first device's UUID.
        if out.iter().any(|(g, _): &(GpuStatic, Unit)| {
            g.mig.as_ref().is_some_and(|m| m.gpu_instance_id == gi)
        }) {
            tracing::info!(
                gpu = index,
                "GPU {index}: GPU instance {gi} has several compute instances; it is billed as one \
                 unit, under its first MIG device's UUID"
            );
            continue;
        }
        let slices = MigSlice::slices_of_profile(profile).unwrap_or(1);
        let slice = MigSlice {
            parent_index: index,
            parent_uuid: parent_uuid.to_string(),
            gpu_instance_id: gi,
            profile: profile.to_string(),
            slices,
            parent_slices: max,
        };
        out.push((
            GpuStatic {
                index: mig_unit_index(index, gi),
                uuid,
                model: model.to_string(),
                mig: Some(slice.clone()),
                compute_capability,
                // The instance's own SMs (`nvmlDeviceGetAttributes_v2` answers for MIG device
                // handles only): a 1g slice of an H100 has 16 of the board's 132, not 1/7.
                sm_count: m
                    .attributes()
                    .ok()
                    .map(|a| a.multiprocessor_count)
                    .filter(|n| *n > 0),
            },
            Unit::Mig { position, slice },
        ));
    }
    let held: u32 = out
        .iter()
        .filter_map(|(g, _)| g.mig.as_ref().map(|m| m.slices))
        .sum();
    if !out.is_empty() && held < max {
        tracing::info!(
            gpu = index,
            "GPU {index} is in MIG mode with {} instance(s) holding {held} of its {max} slices; \
             the {} slice(s) in no GPU instance are billed to nobody until an instance is \
             created on them",
            out.len(),
            max - held
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_15_the_profile_is_read_from_the_mig_device_name() {
        assert_eq!(
            profile_of("NVIDIA H100 80GB HBM3 MIG 3g.40gb"),
            Some("3g.40gb")
        );
        assert_eq!(
            profile_of("NVIDIA A100-SXM4-40GB MIG 1g.5gb+me"),
            Some("1g.5gb+me")
        );
        assert_eq!(profile_of("NVIDIA H100 80GB HBM3"), None);
        // A compute instance of a GPU instance: the GPU instance's profile.
        assert_eq!(
            profile_of("NVIDIA A100-SXM4-40GB MIG 1c.3g.20gb"),
            Some("3g.20gb")
        );
        assert_eq!(profile_of("NVIDIA H100 MIG broken"), None);
    }
}
