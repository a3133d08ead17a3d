//! Which job holds each GPU, and with what share.
//!
//! Identity, first match wins (PRODUCT.md): explicit registration (`gpucost run`, `gpucost job
//! start`, the API; the job owns its root process and every descendant) > Kubernetes pod (kubelet
//! pod-resources) > Slurm job (the process's cgroup, or the prolog's GPU->job mapping directory)
//! > `GPUCOST_JOB_ID` in the process environment > unattributed (named after the process).
//!
//! [`attribute`] is a pure function of its inputs; the agent's `identity` module does the I/O
//! (`/proc`, the prolog's GPU -> job directory, the kubelet's gRPC API) and hands the facts in.

pub mod cgroup;
pub mod device;
pub mod pods;
pub mod process;

use std::collections::BTreeMap;

use crate::account::cost::owner_weights;
use crate::jobs::Scheduler;
use crate::reading::ProcessUse;
use process::{ancestry, ProcInfo, ProcSource};

/// How deep to follow parents when looking for a registered root (torchrun -> workers ->
/// data-loader processes is three levels; shells and launchers add a few).
const MAX_ANCESTRY: usize = 64;

/// One device held by one container. Several pods may hold one GPU (time-slicing and MPS
/// replicas, `device` lists the id forms); each is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodGpu {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// The device id as the device plugin reported it (`GPU-…`, `GPU-…::N`, `MIG-…`,
    /// `nvidiaN/giM`, ...), or the UUID of the unit it names once [`device::resolve_pods`] ran.
    pub device_id: String,
    /// The pod's UID, when the agent could learn it (the pod-resources API does not give it):
    /// what binds a process to its pod, through the pod UID in the process's cgroup.
    pub pod_uid: Option<String>,
    /// The job the pod belongs to, where the Kubernetes API said (`pods`); `None`: the pod is
    /// its own job, `namespace/pod`.
    pub job: Option<PodJob>,
}

/// The job a pod belongs to, from the Kubernetes API ([`pods::PodMeta`]): its owner's id and
/// name, and the labels the job takes from the pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodJob {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// GPU (index as text, or UUID) -> job ids.
pub type JobMap = BTreeMap<String, Vec<String>>;

/// The jobs mapped to a GPU, by index or UUID.
pub fn jobs_for<'a>(map: &'a JobMap, index: u32, uuid: &str) -> &'a [String] {
    map.get(&index.to_string())
        .or_else(|| map.get(uuid))
        .map_or(&[], Vec::as_slice)
}

/// A job registered by `gpucost run`, `gpucost job start` or the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub job_id: String,
    /// The job owns this process and all its descendants (of `uid`, when set).
    pub root_pid: Option<u32>,
    /// GPUs allocated to the job (UUIDs or indices as text), held even while idle.
    pub gpus: Vec<String>,
    /// A user's own registration claims only that user's processes, so that registering an
    /// ancestor of other users' processes (pid 1 is everyone's) claims none of them; `None`
    /// for root's registrations (the scheduler's hooks, root's `gpucost run`).
    pub uid: Option<u32>,
}

/// Job id -> the uid that owns the job, for every known job that has an owner: a process whose
/// environment names a job (`GPUCOST_JOB_ID`) joins it only when the uids match.
pub type JobOwners = BTreeMap<String, u32>;

/// One GPU's processes, as the sampler last read them.
#[derive(Debug, Clone, Copy)]
pub struct GpuInput<'a> {
    pub index: u32,
    pub uuid: &'a str,
    pub processes: &'a [ProcessUse],
}

/// What attribution learned about a job it found (not registered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub scheduler: Scheduler,
    pub name: String,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The result: per GPU (in input order), its owners and their weights (summing to 1; empty when
/// no job holds it), plus the facts of every job seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attribution {
    pub owners: Vec<Vec<(String, f64)>>,
    pub found: BTreeMap<String, Found>,
}

fn kube_job(p: &PodGpu) -> Found {
    if let Some(j) = &p.job {
        return Found {
            id: j.id.clone(),
            scheduler: Scheduler::Kubernetes,
            name: j.name.clone(),
            uid: None,
            user: None,
            labels: j.labels.clone(),
        };
    }
    Found {
        id: format!("{}/{}", p.namespace, p.pod),
        scheduler: Scheduler::Kubernetes,
        name: p.pod.clone(),
        uid: None,
        user: None,
        labels: BTreeMap::from([("namespace".to_string(), p.namespace.clone())]),
    }
}

fn slurm_job(id: &str, me: Option<&ProcInfo>) -> Found {
    Found {
        id: id.to_string(),
        scheduler: Scheduler::Slurm,
        name: format!("slurm-{id}"),
        uid: me.map(|p| p.uid),
        user: me.and_then(|p| p.user.clone()),
        labels: BTreeMap::new(),
    }
}

fn matches_gpu(names: &[String], index: u32, uuid: &str) -> bool {
    names.iter().any(|g| g == uuid || *g == index.to_string())
}

/// Whether user `uid` may name process `pid` as the root of a job: the process is the user's,
/// and no process using a GPU (`gpu_pids`) below it is someone else's. (A registration claims
/// its root's descendants; pid 1 is everyone's ancestor.) `Err` says why not.
pub fn check_claim(
    procs: &dyn ProcSource,
    pid: u32,
    uid: u32,
    gpu_pids: &[u32],
) -> Result<(), String> {
    let Some(p) = procs.info(pid) else {
        return Err(format!("pid {pid}: no such process"));
    };
    if p.uid != uid {
        return Err(format!(
            "pid {pid}: the process belongs to uid {}, not to the caller (uid {uid})",
            p.uid
        ));
    }
    for &g in gpu_pids {
        let chain = ancestry(procs, g, MAX_ANCESTRY);
        let theirs = chain.first().is_some_and(|c| c.uid != uid);
        if theirs && chain.iter().skip(1).any(|a| a.pid == pid) {
            return Err(format!(
                "pid {pid}: the process is an ancestor of process {g}, which uses a GPU and \
                 belongs to another user"
            ));
        }
    }
    Ok(())
}

/// Decides the owners of every GPU.
pub fn attribute(
    gpus: &[GpuInput<'_>],
    procs: &dyn ProcSource,
    registered: &[Registration],
    owners: &JobOwners,
    pods: &[PodGpu],
    job_map: &JobMap,
) -> Attribution {
    let mut out = Attribution::default();
    for g in gpus {
        let holders = holders(pods, g.uuid);
        let mapped = jobs_for(job_map, g.index, g.uuid);
        // job id -> (SM utilization, memory) of its processes on this GPU; `None` where NVML
        // could not tell for one of them.
        let mut claims: BTreeMap<String, Share> = BTreeMap::new();
        for proc_use in g.processes {
            let chain = ancestry(procs, proc_use.pid, MAX_ANCESTRY);
            let job = identify(proc_use.pid, &chain, registered, &holders, mapped, |id| {
                owners
                    .get(id)
                    .copied()
                    .or_else(|| out.found.get(id).and_then(|f| f.uid))
            });
            let ids = match job {
                Identity::Registered(id) => vec![id],
                Identity::Found(f) => vec![found(&mut out, f)],
                Identity::Pods(pods) => pods.into_iter().map(|f| found(&mut out, f)).collect(),
            };
            // A process that several pods could own is split evenly between them.
            let n = ids.len() as u64;
            for id in ids {
                let share = claims.entry(id).or_insert(Share::ZERO);
                share.sm = share
                    .sm
                    .zip(proc_use.sm_util_pct)
                    .map(|(a, b)| a + f64::from(b) / n as f64);
                share.mem = share
                    .mem
                    .zip(proc_use.used_memory_bytes)
                    .map(|(a, b)| a + b / n);
            }
        }
        if claims.is_empty() {
            // Nobody computes on it; it may still be allocated (and so idle at someone's cost).
            for r in registered
                .iter()
                .filter(|r| matches_gpu(&r.gpus, g.index, g.uuid))
            {
                claims.insert(r.job_id.clone(), Share::UNKNOWN);
            }
            if claims.is_empty() {
                if !holders.is_empty() {
                    // Every pod that holds the GPU (time-slicing replicas) holds it idle.
                    for p in &holders {
                        let f = kube_job(p);
                        claims.insert(f.id.clone(), Share::UNKNOWN);
                        out.found.entry(f.id.clone()).or_insert(f);
                    }
                } else {
                    for id in mapped {
                        claims.insert(id.clone(), Share::UNKNOWN);
                        out.found
                            .entry(id.clone())
                            .or_insert_with(|| slurm_job(id, None));
                    }
                }
            }
        }
        let shares: Vec<(String, Option<f64>, Option<u64>)> = claims
            .into_iter()
            .map(|(id, s)| (id, s.sm, s.mem))
            .collect();
        out.owners.push(if shares.is_empty() {
            Vec::new()
        } else {
            owner_weights(&shares)
        });
    }
    out
}

/// Records a found job's facts (the first seen wins) and returns its id.
fn found(out: &mut Attribution, f: Found) -> String {
    let id = f.id.clone();
    out.found.entry(id.clone()).or_insert(f);
    id
}

/// The pods that hold the GPU `uuid` (any of its replicas), one entry per pod (a pod's
/// containers are one job), with the pod's UID where any of its entries knows it.
fn holders<'a>(pods: &'a [PodGpu], uuid: &str) -> Vec<&'a PodGpu> {
    let mut out: Vec<&PodGpu> = Vec::new();
    for p in pods
        .iter()
        .filter(|p| device::without_replica(&p.device_id) == uuid)
    {
        match out
            .iter_mut()
            .find(|h| h.namespace == p.namespace && h.pod == p.pod)
        {
            Some(h) if h.pod_uid.is_none() && p.pod_uid.is_some() => *h = p,
            Some(_) => {}
            None => out.push(p),
        }
    }
    out
}

/// The pods among `holders` that own a process in pod `uid` (from its cgroup; `None` when the
/// process is in no pod's cgroup or its cgroup could not be read):
///
/// - the pod with that UID, when one holds the GPU;
/// - none, when the process is in a pod and every holder's UID is known and differs: it is
///   another pod's process (one that sees every GPU, say) and no holder pays for it;
/// - otherwise the holders it may belong to (those whose UID is unknown, or all when the
///   process's pod is unknown): one when the GPU is not shared, as before sharing was modelled,
///   or several, between which its use is split evenly.
fn pod_owners<'a>(uid: Option<&str>, holders: &[&'a PodGpu]) -> Vec<&'a PodGpu> {
    if let Some(uid) = uid {
        if let Some(p) = holders.iter().find(|p| p.pod_uid.as_deref() == Some(uid)) {
            return vec![p];
        }
        return holders
            .iter()
            .filter(|p| p.pod_uid.is_none())
            .copied()
            .collect();
    }
    holders.to_vec()
}

/// What a job's processes use of one GPU, for its share of the cost.
#[derive(Debug, Clone, Copy)]
struct Share {
    sm: Option<f64>,
    mem: Option<u64>,
}

impl Share {
    const ZERO: Share = Share {
        sm: Some(0.0),
        mem: Some(0),
    };
    const UNKNOWN: Share = Share {
        sm: None,
        mem: None,
    };
}

enum Identity {
    Registered(String),
    Found(Found),
    /// Pods that hold the GPU, one or several (see [`pod_owners`]).
    Pods(Vec<Found>),
}

fn identify(
    pid: u32,
    chain: &[ProcInfo],
    registered: &[Registration],
    holders: &[&PodGpu],
    mapped: &[String],
    owner_of: impl Fn(&str) -> Option<u32>,
) -> Identity {
    let me = chain.first();
    let uid = me.map(|p| p.uid);
    // 1. Registration: the process or an ancestor is a registered root (a user's registration
    //    claims only that user's processes).
    for p in chain {
        if let Some(r) = registered
            .iter()
            .find(|r| r.root_pid == Some(p.pid) && r.uid.is_none_or(|u| Some(u) == uid))
        {
            return Identity::Registered(r.job_id.clone());
        }
    }
    let user = me.and_then(|p| p.user.clone());
    // 2. Kubernetes: the pod that holds this GPU and whose cgroup holds the process (MPS
    //    clients too: they are their pods' processes, listed by NVML like any other).
    let pods = pod_owners(me.and_then(|p| p.pod_uid.as_deref()), holders);
    if !pods.is_empty() {
        return Identity::Pods(pods.into_iter().map(kube_job).collect());
    }
    // 3. Slurm: the process's cgroup, else the prolog's mapping when it names one job.
    if let Some(id) = me.and_then(|p| p.slurm_job.as_deref()) {
        return Identity::Found(slurm_job(id, me));
    }
    if let [id] = mapped {
        return Identity::Found(slurm_job(id, me));
    }
    // 4. The environment, when the job it names is this process's user's (or nobody's yet):
    //    anyone can set GPUCOST_JOB_ID to another user's job id.
    if let Some(p) = me {
        if let Some(id) = p
            .env_job_id
            .as_ref()
            .filter(|id| owner_of(id).is_none_or(|o| o == p.uid))
        {
            return Identity::Found(Found {
                id: id.clone(),
                scheduler: Scheduler::Env,
                name: p
                    .env_labels
                    .get("name")
                    .cloned()
                    .unwrap_or_else(|| p.comm.clone()),
                uid,
                user,
                labels: p.env_labels.clone(),
            });
        }
    }
    // 5. Nothing said who it is: the process itself, so its cost is still visible.
    let name = me.map_or_else(|| format!("pid {pid}"), |p| p.comm.clone());
    Identity::Found(Found {
        id: format!("unattributed:{pid}"),
        scheduler: Scheduler::Unattributed,
        name,
        uid,
        user,
        labels: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests;
