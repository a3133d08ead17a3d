//! Which billing unit (a whole GPU or a MIG GPU instance) a Kubernetes device id names, and
//! which GPUs a registration's or a job map's names (UUIDs or NVML indices) are.
//!
//! Device plugins hand pods ids of several forms (the forms dcgm-exporter's `kubernetes.go`
//! maps too):
//!
//! - `GPU-<uuid>`: a whole GPU (NVIDIA's device plugin).
//! - `GPU-<uuid>::N`: replica N of a GPU shared by time-slicing or MPS; the plugin's
//!   `sharing.timeSlicing.replicas` makes N+1 devices of one GPU, handed to different pods
//!   (NVIDIA k8s-device-plugin README, "Shared Access to GPUs").
//! - `MIG-<uuid>` and `MIG-<uuid>::N`: a MIG device (R470 and later drivers), alone or shared.
//! - `MIG-GPU-<parent uuid>/<gi>/<ci>`: a MIG device as drivers before R470 named it.
//! - `nvidiaN`, `nvidiaN/vgpuK`, `nvidiaN/giM`, `nvidiaN/giM/vgpuK`: Google's GKE device
//!   plugin, by the GPU's device node `/dev/nvidiaN`, its GPU instance M, and K for a shared
//!   replica. N is the device node's minor number, read here as NVML's index: the agent does
//!   not read minor numbers yet, and both follow the PCI bus order on common nodes.
//!
//! Pure string work over the GPUs the sampler knows ([`GpuStatic`]).

use std::collections::BTreeMap;

use crate::reading::GpuStatic;

use super::{JobMap, PodGpu};

/// The id without a sharing replica's suffix: `GPU-x::3` -> `GPU-x`, `nvidia0/vgpu2` ->
/// `nvidia0`. Anything else is returned as it is.
pub fn without_replica(device_id: &str) -> &str {
    if let Some((base, n)) = device_id.rsplit_once("::") {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            return base;
        }
    }
    if let Some((base, n)) = device_id.rsplit_once("/vgpu") {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            return base;
        }
    }
    device_id
}

/// The billing unit `device_id` names among `units`, or `None` when it names none of them (a
/// GPU this agent does not see, a whole GPU that is now split into MIG instances, a form not
/// known here).
pub fn unit_of<'a>(device_id: &str, units: &'a [GpuStatic]) -> Option<&'a GpuStatic> {
    let id = without_replica(device_id);
    if let Some(old_mig) = id.strip_prefix("MIG-GPU-") {
        // MIG-GPU-<parent uuid>/<gi>/<ci>
        let mut parts = old_mig.split('/');
        let parent = format!("GPU-{}", parts.next()?);
        let gi: u32 = parts.next()?.parse().ok()?;
        return units.iter().find(|u| {
            u.mig
                .as_ref()
                .is_some_and(|m| m.parent_uuid == parent && m.gpu_instance_id == gi)
        });
    }
    if let Some(gke) = id.strip_prefix("nvidia") {
        let (minor, gi) = match gke.split_once("/gi") {
            Some((minor, gi)) => (minor, Some(gi.parse::<u32>().ok()?)),
            None => (gke, None),
        };
        let minor: u32 = minor.parse().ok()?;
        return units.iter().find(|u| match (&u.mig, gi) {
            (None, None) => u.index == minor,
            (Some(m), Some(gi)) => m.parent_index == minor && m.gpu_instance_id == gi,
            _ => false,
        });
    }
    units.iter().find(|u| u.uuid == id)
}

/// The pods' devices with each id that names a unit in `units` replaced by that unit's UUID,
/// so that attribution matches them to the GPU it reads; other ids are kept as they are.
pub fn resolve_pods(pods: &[PodGpu], units: &[GpuStatic]) -> Vec<PodGpu> {
    pods.iter()
        .map(|p| match unit_of(&p.device_id, units) {
            Some(u) => PodGpu {
                device_id: u.uuid.clone(),
                ..p.clone()
            },
            None => p.clone(),
        })
        .collect()
}

/// A registration's GPU names resolved to UUIDs ([`resolve_gpu_names`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedGpus {
    /// The UUIDs of the billing units named, in order, each once.
    pub uuids: Vec<String>,
    /// The names that were indices, with the UUIDs they were taken to mean.
    pub from_indices: Vec<(String, Vec<String>)>,
}

/// Resolves GPU names, once, to the UUIDs of the billing units they name among `units`:
///
/// - a UUID (`GPU-…`, `MIG-…`, any case) or a unique prefix of one (`GPU-8ab4`, as
///   `CUDA_VISIBLE_DEVICES` takes them), or any form [`unit_of`] knows;
/// - a UUID of a GPU in MIG mode, or its index: all of its MIG instances;
/// - an index: the agent's `gpu` label (NVML's index; a MIG instance's own label names it alone). Indices from elsewhere need not be NVML's
///   (`from_indices` says which were taken as such, for the caller to warn): Slurm's follow the
///   order of `gres.conf`, and `CUDA_VISIBLE_DEVICES` counts from 0 the GPUs a job sees.
///
/// A name that matches no unit is an error naming it and what the node has.
pub fn resolve_gpu_names(names: &[String], units: &[GpuStatic]) -> Result<ResolvedGpus, String> {
    let mut out = ResolvedGpus::default();
    for name in names {
        let n = name.trim();
        let found: Vec<&GpuStatic> = if let Ok(index) = n.parse::<u32>() {
            units
                .iter()
                .filter(|u| {
                    u.index == index || u.mig.as_ref().is_some_and(|m| m.parent_index == index)
                })
                .collect()
        } else if let Some(u) = unit_of(n, units) {
            vec![u]
        } else {
            let lower = n.to_ascii_lowercase();
            let of_parent: Vec<&GpuStatic> = units
                .iter()
                .filter(|u| {
                    u.mig
                        .as_ref()
                        .is_some_and(|m| m.parent_uuid.eq_ignore_ascii_case(n))
                })
                .collect();
            let by_prefix: Vec<&GpuStatic> = units
                .iter()
                .filter(|u| u.uuid.to_ascii_lowercase().starts_with(&lower))
                .collect();
            if !of_parent.is_empty() {
                of_parent
            } else if by_prefix.len() == 1
                && (lower.starts_with("gpu-") || lower.starts_with("mig-"))
                && lower.len() > "gpu-".len()
            {
                by_prefix
            } else {
                Vec::new()
            }
        };
        if found.is_empty() {
            let have: Vec<String> = units
                .iter()
                .map(|u| format!("{} ({})", u.index, u.uuid))
                .collect();
            return Err(format!(
                "gpus: no GPU {name:?} on this node (NVML's indices or UUIDs: {})",
                have.join(", ")
            ));
        }
        let uuids: Vec<String> = found.iter().map(|u| u.uuid.clone()).collect();
        if n.parse::<u32>().is_ok() {
            out.from_indices.push((n.to_string(), uuids.clone()));
        }
        for u in uuids {
            if !out.uuids.contains(&u) {
                out.uuids.push(u);
            }
        }
    }
    Ok(out)
}

/// What a job-map entry (`file name` -> jobs) was resolved to, kept while the entry stays.
pub type JobMapUnits = BTreeMap<(String, Vec<String>), Vec<String>>;

/// The prolog's GPU -> jobs map with each GPU name resolved to its UUIDs
/// ([`resolve_gpu_names`]), each entry once: `seen` keeps what an entry (its file name and
/// jobs) was resolved to when it first appeared, so a GPU named by index stays the GPU it was
/// when the prolog wrote it, however NVML numbers the GPUs later (a GPU that fell off the bus
/// renumbers the rest). Entries that are gone are forgotten. A name that names no GPU now is
/// kept as it is (matched later by index or UUID, as before) and tried again next time.
/// Returns the map and the index names resolved for the first time (for the caller to say so).
pub fn resolve_job_map(
    map: &JobMap,
    units: &[GpuStatic],
    seen: &mut JobMapUnits,
) -> (JobMap, Vec<(String, Vec<String>)>) {
    seen.retain(|(name, jobs), _| map.get(name) == Some(jobs));
    let mut out = JobMap::new();
    let mut new_indices = Vec::new();
    for (name, jobs) in map {
        let key = (name.clone(), jobs.clone());
        let uuids = match seen.get(&key) {
            Some(u) => u.clone(),
            None => match resolve_gpu_names(std::slice::from_ref(name), units) {
                Ok(r) => {
                    new_indices.extend(r.from_indices);
                    seen.insert(key, r.uuids.clone());
                    r.uuids
                }
                Err(_) => vec![name.clone()],
            },
        };
        for u in uuids {
            let held = out.entry(u).or_default();
            for j in jobs {
                if !held.contains(j) {
                    held.push(j.clone());
                }
            }
        }
    }
    (out, new_indices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::MigSlice;

    const GPU0: &str = "GPU-8ab4c2d0-1e3f-4a5b-9c8d-7e6f5a4b3c2d";
    const GPU1: &str = "GPU-1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b";
    const MIG_A: &str = "MIG-3f1e2d4c-5b6a-5789-8a7b-6c5d4e3f2a1b";
    const MIG_B: &str = "MIG-9e8d7c6b-5a49-5382-9a1b-2c3d4e5f6a7b";

    fn whole(index: u32, uuid: &str) -> GpuStatic {
        GpuStatic {
            index,
            uuid: uuid.into(),
            model: "NVIDIA H100 80GB HBM3".into(),
            mig: None,
            compute_capability: None,
            sm_count: None,
        }
    }

    fn slice(uuid: &str, parent_index: u32, parent: &str, gi: u32, profile: &str) -> GpuStatic {
        let slices = profile[..1].parse().unwrap();
        GpuStatic {
            index: parent_index,
            uuid: uuid.into(),
            model: "NVIDIA H100 80GB HBM3".into(),
            mig: Some(MigSlice {
                parent_index,
                parent_uuid: parent.into(),
                gpu_instance_id: gi,
                profile: profile.into(),
                slices,
                parent_slices: 7,
            }),
            compute_capability: None,
            sm_count: None,
        }
    }

    /// GPU 0 whole; GPU 1 in MIG mode with a 3g.40gb (GPU instance 1) and a 2g.20gb (GPU
    /// instance 5).
    fn units() -> Vec<GpuStatic> {
        vec![
            whole(0, GPU0),
            slice(MIG_A, 1, GPU1, 1, "3g.40gb"),
            slice(MIG_B, 1, GPU1, 5, "2g.20gb"),
        ]
    }

    #[test]
    fn every_form_names_its_unit() {
        let units = units();
        let cases = [
            (GPU0.to_string(), Some(GPU0)),
            (format!("{GPU0}::0"), Some(GPU0)),
            (format!("{GPU0}::13"), Some(GPU0)),
            (MIG_A.to_string(), Some(MIG_A)),
            (format!("{MIG_B}::2"), Some(MIG_B)),
            // Before R470: MIG-GPU-<parent>/<gi>/<ci>.
            (format!("MIG-{GPU1}/5/0"), Some(MIG_B)),
            // GKE.
            ("nvidia0".to_string(), Some(GPU0)),
            ("nvidia0/vgpu3".to_string(), Some(GPU0)),
            ("nvidia1/gi1".to_string(), Some(MIG_A)),
            ("nvidia1/gi5/vgpu0".to_string(), Some(MIG_B)),
            // A whole GPU that is split into instances is no unit any more; GKE's whole-GPU id
            // of a MIG GPU neither.
            (GPU1.to_string(), None),
            ("nvidia1".to_string(), None),
            // No such GPU, instance or form.
            ("nvidia7".to_string(), None),
            ("nvidia1/gi2".to_string(), None),
            (format!("MIG-{GPU1}/2/0"), None),
            (format!("{GPU0}::"), None),
            (format!("{GPU0}::x"), None),
            ("nvidiaX".to_string(), None),
            ("".to_string(), None),
        ];
        for (id, want) in cases {
            let got = unit_of(&id, &units).map(|u| u.uuid.as_str());
            assert_eq!(got, want, "{id}");
        }
    }

    /// Issue 15, item 3: a registration's GPUs are resolved to UUIDs once, whatever form names
    /// them; indices are NVML's and said to be.
    #[test]
    fn registration_names_resolve_to_uuids() {
        let units = units();
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = resolve_gpu_names(&names(&["0", &GPU0.to_uppercase()]), &units).unwrap();
        assert_eq!(got.uuids, [GPU0], "one GPU named twice is held once");
        assert_eq!(
            got.from_indices,
            [("0".to_string(), vec![GPU0.to_string()])]
        );
        // A GPU in MIG mode, by index or by UUID: its instances.
        for name in ["1", GPU1] {
            let got = resolve_gpu_names(&names(&[name]), &units).unwrap();
            assert_eq!(got.uuids, [MIG_A, MIG_B], "{name}");
        }
        // A MIG instance by its own `gpu` label.
        let mut labelled = units.clone();
        labelled[2].index = 2005;
        let got = resolve_gpu_names(&names(&["2005"]), &labelled).unwrap();
        assert_eq!(got.uuids, [MIG_B]);
        // MIG devices, a unique UUID prefix (CUDA_VISIBLE_DEVICES=GPU-8ab4).
        let got = resolve_gpu_names(&names(&[MIG_B, "GPU-8ab4"]), &units).unwrap();
        assert_eq!(got.uuids, [MIG_B, GPU0]);
        assert!(got.from_indices.is_empty());
        // Nothing on this node, or a prefix too short to tell.
        for bad in ["7", "GPU-ffff", "GPU-", "MIG-", "x"] {
            let err = resolve_gpu_names(&names(&[bad]), &units).unwrap_err();
            assert!(
                err.contains(&format!("no GPU {bad:?}")) && err.contains(GPU0),
                "{err}"
            );
        }
    }

    /// A job-map file named by index is resolved when it appears and keeps its GPU when NVML
    /// numbers the GPUs otherwise; a file written anew is resolved anew.
    #[test]
    fn job_map_entries_are_resolved_once() {
        let map = |entries: &[(&str, &str)]| -> JobMap {
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect()
        };
        let two = vec![whole(0, GPU0), whole(1, GPU1)];
        let mut seen = JobMapUnits::new();
        let (got, new) = resolve_job_map(&map(&[("1", "41871"), (GPU0, "7")]), &two, &mut seen);
        assert_eq!(got, map(&[(GPU1, "41871"), (GPU0, "7")]));
        assert_eq!(new, [("1".to_string(), vec![GPU1.to_string()])]);
        // GPU 0 fell off the bus: NVML's index 0 is now GPU1. Job 41871 keeps GPU1.
        let renumbered = vec![whole(0, GPU1)];
        let (got, new) = resolve_job_map(&map(&[("1", "41871")]), &renumbered, &mut seen);
        assert_eq!(got, map(&[(GPU1, "41871")]));
        assert!(new.is_empty());
        // A new job's file "0": resolved now, to the GPU at index 0 now.
        let (got, _) = resolve_job_map(&map(&[("0", "41900")]), &renumbered, &mut seen);
        assert_eq!(got, map(&[(GPU1, "41900")]));
        assert_eq!(seen.len(), 1, "gone entries are forgotten");
        // A name that names no GPU yet stays as written.
        let (got, _) = resolve_job_map(&map(&[("5", "9")]), &renumbered, &mut seen);
        assert_eq!(got, map(&[("5", "9")]));
    }

    #[test]
    fn replica_suffixes() {
        assert_eq!(without_replica("GPU-a::3"), "GPU-a");
        assert_eq!(without_replica("MIG-b::0"), "MIG-b");
        assert_eq!(without_replica("nvidia2/gi1/vgpu4"), "nvidia2/gi1");
        assert_eq!(without_replica("GPU-a"), "GPU-a");
        assert_eq!(without_replica("GPU-a::"), "GPU-a::");
    }

    #[test]
    fn resolved_pods_name_their_units_and_keep_the_rest() {
        let pod = |name: &str, id: &str| PodGpu {
            namespace: "ml".into(),
            pod: name.into(),
            container: "main".into(),
            device_id: id.into(),
            pod_uid: None,
            job: None,
        };
        let pods = [
            pod("a", &format!("{GPU0}::1")),
            pod("b", "nvidia1/gi5/vgpu1"),
            pod("c", "GPU-elsewhere"),
        ];
        let got: Vec<String> = resolve_pods(&pods, &units())
            .into_iter()
            .map(|p| p.device_id)
            .collect();
        assert_eq!(got, [GPU0, MIG_B, "GPU-elsewhere"]);
    }
}
