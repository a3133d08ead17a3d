//! What the Kubernetes API says of this node's pods, and what follows from it for billing: the
//! job a pod belongs to (its owner, so that every pod of one training job is one job), the
//! labels a job takes from its pod, and how a pod (and a job of several pods) ended.
//!
//! The agent's `identity::kube_api` watches the pods and fills [`PodMeta`] from the API's
//! objects; everything here is a plain function of it.
//!
//! Sources for the rules below:
//! - Pod phases and container termination states:
//!   <https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/>.
//! - The `DisruptionTarget` condition and its reasons (`PreemptionByScheduler`,
//!   `DeletionByTaintManager`, `EvictionByEvictionAPI`, `DeletionByPodGC`,
//!   `TerminationByKubelet`):
//!   <https://kubernetes.io/docs/concepts/workloads/pods/disruptions/#pod-disruption-conditions>.
//! - A pod the kubelet evicts for node pressure ends `Failed` with reason `Evicted`:
//!   <https://kubernetes.io/docs/concepts/scheduling-eviction/node-pressure-eviction/>.
//! - A pod past its `activeDeadlineSeconds` ends `Failed` with reason `DeadlineExceeded`
//!   (`pod.spec.activeDeadlineSeconds` in the Pod API reference).
//! - Owners: `metadata.ownerReferences`, the one with `controller: true`
//!   (<https://kubernetes.io/docs/concepts/overview/working-with-objects/owners-dependents/>).

use std::collections::BTreeMap;

use super::{PodGpu, PodJob};
use crate::jobs::{EndReason, Outcome};

/// This node's pods as the API last showed them, by UID; pods deleted from the API stay a
/// while with their ending, for the jobs whose other pods end later.
pub type PodDirectory = BTreeMap<String, PodMeta>;

/// What a job takes from its pods: the config's `jobs.export_labels` and
/// `attribution.kube_labels`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodLabels {
    pub export: Vec<String>,
    pub mapping: Vec<(String, String)>,
}

/// The workload a pod belongs to: its controller (`ownerReferences[controller=true]`), or an
/// operator's label naming the resource above it (see [`PodMeta::owner`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodOwner {
    /// `Job`, `PyTorchJob`, `RayJob`, `JobSet`, `ReplicaSet`, ...
    pub kind: String,
    pub name: String,
}

/// A pod's phase (`status.phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    pub fn parse(s: &str) -> Self {
        match s {
            "Pending" => PodPhase::Pending,
            "Running" => PodPhase::Running,
            "Succeeded" => PodPhase::Succeeded,
            "Failed" => PodPhase::Failed,
            _ => PodPhase::Unknown,
        }
    }

    /// Succeeded or Failed: its containers will not run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }
}

/// How one container ended (`status.containerStatuses[].state.terminated`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerEnd {
    pub exit_code: i32,
    /// The signal, when the runtime reports one (most report only `exitCode`, 128 + signal).
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, `ContainerCannotRun`, ...
    pub reason: Option<String>,
    /// `finishedAt`, Unix seconds.
    pub finished_at: Option<i64>,
}

/// How a pod ended, or a job of several pods.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEnding {
    pub outcome: Outcome,
    /// For a failure, why (OOM, time limit, signal, exit code), where known.
    pub reason: Option<EndReason>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// When it ended (the last container's `finishedAt`, else when the agent saw it end), Unix
    /// seconds.
    pub at: f64,
}

/// One pod of this node, as the Kubernetes API last showed it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Every label of the pod (the job takes the chosen ones, [`job_labels`]).
    pub labels: BTreeMap<String, String>,
    /// The pod's controller (`ownerReferences` with `controller: true`).
    pub controller: Option<PodOwner>,
    pub phase: PodPhase,
    /// `status.reason`: `Evicted`, `DeadlineExceeded`, ...
    pub reason: Option<String>,
    /// The reason of the `DisruptionTarget` condition when its status is `True`.
    pub disruption: Option<String>,
    /// `metadata.deletionTimestamp` is set: someone deleted the pod (it may still be stopping).
    pub deleting: bool,
    /// `status.startTime`, Unix seconds.
    pub started_at: Option<i64>,
    /// Its containers that have terminated (init containers are not counted).
    pub containers: Vec<ContainerEnd>,
    /// How it ended, decided once, the first time the API showed it ended (terminal, or gone);
    /// `None` while it runs. Kept when the pod is deleted afterwards (a Job's clean-up is not a
    /// cancellation).
    pub ending: Option<PodEnding>,
}

/// Operators that put the name of the resource above the pod's controller on the pod itself.
/// A pod of a RayJob is owned by its RayCluster, a pod of a JobSet by one of its Jobs; the label
/// names the training job. KubeRay labels what a RayJob (or RayService) creates
/// `ray.io/originated-from-crd` = its kind and `ray.io/originated-from-cr-name` = its name
/// (KubeRay's `utils/constant.go`); JobSet labels its pods `jobset.sigs.k8s.io/jobset-name`
/// (JobSet's API reference).
///
/// Anyone who may create pods in a namespace may write these labels, so a label counts only on
/// a pod whose controller is what that operator creates (a RayCluster, a Job), and a kind only
/// when it is one the operator has: a bare pod cannot join another team's job by a label.
const OPERATOR_LABELS: [OperatorLabel; 2] = [
    OperatorLabel {
        controller: "RayCluster",
        kind: KindFrom::Label("ray.io/originated-from-crd", &["RayJob", "RayService"]),
        name: "ray.io/originated-from-cr-name",
    },
    OperatorLabel {
        controller: "Job",
        kind: KindFrom::Fixed("JobSet"),
        name: "jobset.sigs.k8s.io/jobset-name",
    },
];

struct OperatorLabel {
    /// The kind of the pod's controller the operator creates.
    controller: &'static str,
    kind: KindFrom,
    /// The label holding the top resource's name.
    name: &'static str,
}

enum KindFrom {
    /// The kind is this label's value, one of these.
    Label(&'static str, &'static [&'static str]),
    Fixed(&'static str),
}

impl PodMeta {
    /// The workload the pod belongs to: an operator's label naming the top resource
    /// ([`OPERATOR_LABELS`]), else its controller. `None` for a bare pod.
    pub fn owner(&self) -> Option<PodOwner> {
        let controller = self.controller.as_ref()?;
        for op in &OPERATOR_LABELS {
            if controller.kind != op.controller {
                continue;
            }
            let Some(name) = self.labels.get(op.name).filter(|n| !n.is_empty()) else {
                continue;
            };
            let kind = match op.kind {
                KindFrom::Label(label, kinds) => {
                    match self
                        .labels
                        .get(label)
                        .filter(|k| kinds.contains(&k.as_str()))
                    {
                        Some(k) => k.as_str(),
                        None => continue,
                    }
                }
                KindFrom::Fixed(k) => k,
            };
            return Some(PodOwner {
                kind: kind.to_string(),
                name: name.clone(),
            });
        }
        Some(controller.clone())
    }

    /// The id of the job the pod belongs to: `namespace/kind/name` of its owner (lower-case
    /// kind: `ml/job/train-llama`, `ml/pytorchjob/bert`), so that every pod of one training
    /// job is one job; `namespace/pod` for a bare pod, as without the API.
    pub fn job_id(&self) -> String {
        match self.owner() {
            Some(o) => format!(
                "{}/{}/{}",
                self.namespace,
                o.kind.to_ascii_lowercase(),
                o.name
            ),
            None => format!("{}/{}", self.namespace, self.name),
        }
    }

    /// The job's name: its owner's name, or the pod's.
    pub fn job_name(&self) -> String {
        self.owner().map_or_else(|| self.name.clone(), |o| o.name)
    }

    /// How the pod ended, from what the API shows now, if it has: terminal (Succeeded,
    /// Failed), or `gone` (deleted from the API; `now` is then its end). A pod the API shows
    /// being deleted ended because someone deleted it: cancelled, unless a disruption
    /// (preemption, eviction, a taint, the node's shutdown) is why. `None` while it runs.
    pub fn ending_now(&self, gone: bool, now: f64) -> Option<PodEnding> {
        if !self.phase.is_terminal() && !gone {
            return None;
        }
        let last = self.containers.iter().filter_map(|c| c.finished_at).max();
        let at = last.map_or(now, |t| t as f64);
        let end = |outcome, reason, exit_code, signal| PodEnding {
            outcome,
            reason,
            exit_code,
            signal,
            at,
        };
        if let Some(d) = &self.disruption {
            return Some(match d.as_str() {
                // The node is gone (its pods are garbage-collected): the work is lost.
                "DeletionByPodGC" => end(Outcome::Failed, Some(EndReason::NodeFail), None, None),
                // Preempted by the scheduler, evicted through the API (a drain), deleted by a
                // NoExecute taint, or stopped by the kubelet (node pressure, a node shutdown):
                // ended by the cluster, not by its user, and its work is lost.
                _ => end(Outcome::Preempted, None, None, None),
            });
        }
        match self.reason.as_deref() {
            Some("Evicted") | Some("Preempting") => {
                return Some(end(Outcome::Preempted, None, None, None))
            }
            Some("DeadlineExceeded") => {
                return Some(end(Outcome::Failed, Some(EndReason::TimeLimit), None, None))
            }
            _ => {}
        }
        if self.deleting {
            return Some(end(Outcome::Cancelled, None, None, None));
        }
        if self.phase == PodPhase::Succeeded {
            return Some(end(Outcome::Succeeded, None, Some(0), None));
        }
        // Failed, or gone while it ran: the container that failed first says why.
        let mut failed: Vec<&ContainerEnd> = self
            .containers
            .iter()
            .filter(|c| c.exit_code != 0 || c.reason.as_deref() == Some("OOMKilled"))
            .collect();
        failed.sort_by_key(|c| c.finished_at.unwrap_or(i64::MAX));
        match failed.first() {
            Some(c) => {
                let signal = c.signal.filter(|s| *s > 0).or_else(|| {
                    // The runtimes' convention for a process killed by signal N: 128 + N.
                    (129..=128 + 64)
                        .contains(&c.exit_code)
                        .then(|| c.exit_code - 128)
                });
                let reason = if c.reason.as_deref() == Some("OOMKilled") {
                    Some(EndReason::Oom)
                } else {
                    EndReason::from_exit(Some(c.exit_code), signal)
                };
                Some(end(Outcome::Failed, reason, Some(c.exit_code), signal))
            }
            None if self.phase == PodPhase::Failed => Some(end(Outcome::Failed, None, None, None)),
            // Gone from the API while it ran, with no deletion seen and no container ended:
            // nobody said how it ended.
            None => Some(end(Outcome::Unknown, None, None, None)),
        }
    }
}

/// A job's labels from its pod: `namespace`, each of `export` (the config's
/// `jobs.export_labels`) that the pod has under the same name, and each mapping `(job label,
/// pod label)` (`attribution.kube_labels`, which wins).
pub fn job_labels(
    pod: &PodMeta,
    export: &[String],
    mapping: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::from([("namespace".to_string(), pod.namespace.clone())]);
    for k in export {
        if let Some(v) = pod.labels.get(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    for (job_label, pod_label) in mapping {
        if let Some(v) = pod.labels.get(pod_label) {
            out.insert(job_label.clone(), v.clone());
        }
    }
    out
}

/// The kubelet's pod devices joined with what the API knows of each pod (by UID, else by
/// namespace and name): each device's pod gets its job ([`PodJob`]) and its UID; the devices of
/// pods that have ended are dropped (an ended pod holds nothing, even while the kubelet still
/// lists it). A pod the API does not know (yet) is kept as it is: its own job.
pub fn with_jobs(pods: &[PodGpu], dir: &PodDirectory, labels: &PodLabels) -> Vec<PodGpu> {
    pods.iter()
        .filter_map(|p| {
            let meta = match &p.pod_uid {
                Some(uid) => dir.get(uid),
                None => dir
                    .values()
                    .filter(|m| m.namespace == p.namespace && m.name == p.pod)
                    // A pod re-created under its name (a StatefulSet's): the one that runs.
                    .min_by_key(|m| (m.ending.is_some(), std::cmp::Reverse(m.started_at))),
            };
            let Some(m) = meta else {
                return Some(p.clone());
            };
            if m.ending.is_some() || m.phase.is_terminal() {
                return None;
            }
            Some(PodGpu {
                pod_uid: Some(m.uid.clone()),
                job: Some(PodJob {
                    id: m.job_id(),
                    name: m.job_name(),
                    labels: job_labels(m, &labels.export, &labels.mapping),
                }),
                ..p.clone()
            })
        })
        .collect()
}

/// The jobs among `running` (ids of running jobs found through Kubernetes) whose pods have all
/// ended, with how each ended ([`job_ending`]).
pub fn finished_jobs<'a>(
    dir: &PodDirectory,
    running: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, PodEnding)> {
    let mut by_job: BTreeMap<String, Vec<&PodMeta>> = BTreeMap::new();
    for m in dir.values() {
        by_job.entry(m.job_id()).or_default().push(m);
    }
    running
        .into_iter()
        .filter_map(|id| {
            let pods = by_job.get(id)?;
            job_ending(pods).map(|e| (id.to_string(), e))
        })
        .collect()
}

/// How a job of several pods ended, once none of them runs: only the pods of its last attempt
/// count (those that ended at or after the latest start among them, so a Job's failed pod
/// that was retried successfully does not fail it). Among them a preemption wins (the others
/// fail because of it), then the failure that came first, then a cancellation; succeeded
/// when all succeeded. `None` while any pod runs or none has ended.
pub fn job_ending(pods: &[&PodMeta]) -> Option<PodEnding> {
    let endings: Vec<(&PodMeta, &PodEnding)> = pods
        .iter()
        .map(|p| p.ending.as_ref().map(|e| (*p, e)))
        .collect::<Option<_>>()?;
    let last_start = endings
        .iter()
        .filter_map(|(p, _)| p.started_at)
        .max()
        .map_or(f64::NEG_INFINITY, |t| t as f64);
    let mut last: Vec<&PodEnding> = endings
        .iter()
        .filter(|(_, e)| e.at >= last_start)
        .map(|(_, e)| *e)
        .collect();
    if last.is_empty() {
        // Clocks that disagree: every pod counts.
        last = endings.iter().map(|(_, e)| *e).collect();
    }
    last.sort_by(|a, b| a.at.total_cmp(&b.at));
    let at = last.iter().map(|e| e.at).fold(f64::NEG_INFINITY, f64::max);
    let first_of = |o: Outcome| last.iter().find(|e| e.outcome == o).copied();
    let chosen = first_of(Outcome::Preempted)
        .or_else(|| first_of(Outcome::Failed))
        .or_else(|| first_of(Outcome::Cancelled))
        .or_else(|| first_of(Outcome::Unknown))
        .or_else(|| first_of(Outcome::Succeeded))?;
    Some(PodEnding {
        at,
        ..chosen.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> PodMeta {
        PodMeta {
            namespace: "ml".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: BTreeMap::new(),
            controller: None,
            phase: PodPhase::Running,
            reason: None,
            disruption: None,
            deleting: false,
            started_at: Some(1_000),
            containers: Vec::new(),
            ending: None,
        }
    }

    fn exited(code: i32, reason: &str, at: i64) -> ContainerEnd {
        ContainerEnd {
            exit_code: code,
            signal: None,
            reason: Some(reason.into()),
            finished_at: Some(at),
        }
    }

    #[test]
    fn a_pod_of_a_job_is_the_job_and_a_bare_pod_is_itself() {
        let mut p = pod("train-llama-x7k2p");
        assert_eq!(p.job_id(), "ml/train-llama-x7k2p");
        assert_eq!(p.job_name(), "train-llama-x7k2p");
        p.controller = Some(PodOwner {
            kind: "Job".into(),
            name: "train-llama".into(),
        });
        assert_eq!(p.job_id(), "ml/job/train-llama");
        assert_eq!(p.job_name(), "train-llama");
        p.controller = Some(PodOwner {
            kind: "PyTorchJob".into(),
            name: "bert".into(),
        });
        assert_eq!(p.job_id(), "ml/pytorchjob/bert");
    }

    #[test]
    fn an_operators_label_names_the_training_job_above_the_controller() {
        // A RayJob's worker: owned by the RayCluster, labelled with the RayJob.
        let mut p = pod("rj-raycluster-abc-worker-gpu-xk2");
        p.controller = Some(PodOwner {
            kind: "RayCluster".into(),
            name: "rj-raycluster-abc".into(),
        });
        p.labels
            .insert("ray.io/originated-from-crd".into(), "RayJob".into());
        p.labels
            .insert("ray.io/originated-from-cr-name".into(), "rj".into());
        assert_eq!(p.job_id(), "ml/rayjob/rj");
        // Without the kind label, the controller.
        p.labels.remove("ray.io/originated-from-crd");
        assert_eq!(p.job_id(), "ml/raycluster/rj-raycluster-abc");
        // A JobSet's pod, owned by one of the JobSet's Jobs.
        let mut j = pod("js-workers-0-0-abc");
        j.controller = Some(PodOwner {
            kind: "Job".into(),
            name: "js-workers-0".into(),
        });
        j.labels
            .insert("jobset.sigs.k8s.io/jobset-name".into(), "js".into());
        assert_eq!(j.job_id(), "ml/jobset/js");
    }

    /// Anyone who may create pods may label them: a label joins a pod to another job only
    /// where the operator that writes it made the pod's controller, and only with a kind that
    /// operator has.
    #[test]
    fn an_operators_label_on_a_pod_it_did_not_make_is_ignored() {
        let mut bare = pod("sneaky");
        bare.labels
            .insert("jobset.sigs.k8s.io/jobset-name".into(), "their-run".into());
        bare.labels
            .insert("ray.io/originated-from-crd".into(), "RayJob".into());
        bare.labels.insert(
            "ray.io/originated-from-cr-name".into(),
            "their-rayjob".into(),
        );
        assert_eq!(bare.job_id(), "ml/sneaky", "a bare pod stays its own job");
        let mut deployed = bare.clone();
        deployed.controller = Some(PodOwner {
            kind: "ReplicaSet".into(),
            name: "web-7d9f".into(),
        });
        assert_eq!(deployed.job_id(), "ml/replicaset/web-7d9f");
        let mut odd_kind = pod("w");
        odd_kind.controller = Some(PodOwner {
            kind: "RayCluster".into(),
            name: "rc".into(),
        });
        odd_kind
            .labels
            .insert("ray.io/originated-from-crd".into(), "Job".into());
        odd_kind
            .labels
            .insert("ray.io/originated-from-cr-name".into(), "x".into());
        assert_eq!(odd_kind.job_id(), "ml/raycluster/rc");
    }

    #[test]
    fn labels_by_name_and_by_mapping() {
        let mut p = pod("a");
        p.labels.insert("team".into(), "nlp".into());
        p.labels
            .insert("app.kubernetes.io/part-of".into(), "llama".into());
        p.labels.insert("other".into(), "x".into());
        let l = job_labels(
            &p,
            &["team".into(), "project".into()],
            &[("project".into(), "app.kubernetes.io/part-of".into())],
        );
        assert_eq!(
            l,
            BTreeMap::from([
                ("namespace".to_string(), "ml".to_string()),
                ("team".to_string(), "nlp".to_string()),
                ("project".to_string(), "llama".to_string()),
            ])
        );
        // The mapping wins over a label of the same name.
        let l = job_labels(
            &p,
            &["team".into()],
            &[("team".into(), "app.kubernetes.io/part-of".into())],
        );
        assert_eq!(l["team"], "llama");
    }

    #[test]
    fn a_running_pod_has_not_ended() {
        let p = pod("a");
        assert_eq!(p.ending_now(false, 2_000.0), None);
        let mut deleting = pod("a");
        deleting.deleting = true;
        assert_eq!(deleting.ending_now(false, 2_000.0), None, "still stopping");
    }

    #[test]
    fn outcomes_of_one_pod() {
        let end = |p: &PodMeta| p.ending_now(false, 9_999.0).unwrap();

        let mut ok = pod("a");
        ok.phase = PodPhase::Succeeded;
        ok.containers = vec![exited(0, "Completed", 2_000)];
        let e = end(&ok);
        assert_eq!(
            (e.outcome, e.reason, e.exit_code, e.at),
            (Outcome::Succeeded, None, Some(0), 2_000.0)
        );

        let mut oom = pod("a");
        oom.phase = PodPhase::Failed;
        oom.containers = vec![
            exited(0, "Completed", 1_900),
            exited(137, "OOMKilled", 2_000),
        ];
        let e = end(&oom);
        assert_eq!(
            (e.outcome, e.reason, e.exit_code),
            (Outcome::Failed, Some(EndReason::Oom), Some(137))
        );

        let mut error = pod("a");
        error.phase = PodPhase::Failed;
        error.containers = vec![exited(1, "Error", 2_000)];
        let e = end(&error);
        assert_eq!(
            (e.outcome, e.reason, e.exit_code, e.signal),
            (Outcome::Failed, Some(EndReason::ExitCode), Some(1), None)
        );

        // 128 + 6: SIGABRT (a CUDA assertion, a NCCL abort).
        let mut abort = pod("a");
        abort.phase = PodPhase::Failed;
        abort.containers = vec![exited(134, "Error", 2_000)];
        let e = end(&abort);
        assert_eq!(
            (e.outcome, e.reason, e.signal),
            (Outcome::Failed, Some(EndReason::Signal), Some(6))
        );

        let mut deadline = pod("a");
        deadline.phase = PodPhase::Failed;
        deadline.reason = Some("DeadlineExceeded".into());
        assert_eq!(
            end(&deadline).reason,
            Some(EndReason::TimeLimit),
            "activeDeadlineSeconds"
        );

        let mut evicted = pod("a");
        evicted.phase = PodPhase::Failed;
        evicted.reason = Some("Evicted".into());
        assert_eq!(end(&evicted).outcome, Outcome::Preempted);
    }

    #[test]
    fn a_disruption_is_a_preemption_and_a_deletion_a_cancellation() {
        // Preempted by the scheduler: the kubelet kills it (exit 143 after SIGTERM), the
        // condition says why.
        let mut p = pod("a");
        p.phase = PodPhase::Failed;
        p.deleting = true;
        p.disruption = Some("PreemptionByScheduler".into());
        p.containers = vec![exited(143, "Error", 2_000)];
        let e = p.ending_now(false, 3_000.0).unwrap();
        assert_eq!((e.outcome, e.reason), (Outcome::Preempted, None));

        p.disruption = Some("DeletionByPodGC".into());
        let e = p.ending_now(false, 3_000.0).unwrap();
        assert_eq!(
            (e.outcome, e.reason),
            (Outcome::Failed, Some(EndReason::NodeFail))
        );

        // `kubectl delete pod`: SIGTERM, exit 143, no disruption: the user ended it.
        p.disruption = None;
        let e = p.ending_now(false, 3_000.0).unwrap();
        assert_eq!((e.outcome, e.at), (Outcome::Cancelled, 2_000.0));

        // Gone from the API while it ran with no word: unknown, at the moment it went.
        let gone = pod("b");
        let e = gone.ending_now(true, 3_000.0).unwrap();
        assert_eq!((e.outcome, e.at), (Outcome::Unknown, 3_000.0));
    }

    fn ended(name: &str, started: i64, outcome: Outcome, at: f64) -> PodMeta {
        let mut p = pod(name);
        p.started_at = Some(started);
        p.ending = Some(PodEnding {
            outcome,
            reason: (outcome == Outcome::Failed).then_some(EndReason::ExitCode),
            exit_code: None,
            signal: None,
            at,
        });
        p
    }

    fn device(ns: &str, name: &str, uid: Option<&str>) -> PodGpu {
        PodGpu {
            namespace: ns.into(),
            pod: name.into(),
            container: "main".into(),
            device_id: "GPU-0".into(),
            pod_uid: uid.map(str::to_string),
            job: None,
        }
    }

    #[test]
    fn the_kubelets_devices_take_their_pods_jobs() {
        let mut a = pod("train-0");
        a.controller = Some(PodOwner {
            kind: "PyTorchJob".into(),
            name: "bert".into(),
        });
        a.labels.insert("team".into(), "nlp".into());
        let mut done = pod("eval");
        done.phase = PodPhase::Succeeded;
        let mut old = pod("train-0");
        old.uid = "uid-old".into();
        old.started_at = Some(10);
        old.ending = Some(PodEnding {
            outcome: Outcome::Failed,
            reason: None,
            exit_code: Some(1),
            signal: None,
            at: 20.0,
        });
        let dir: PodDirectory = [a, done, old]
            .into_iter()
            .map(|m| (m.uid.clone(), m))
            .collect();
        let labels = PodLabels {
            export: vec!["team".into()],
            mapping: Vec::new(),
        };
        let out = with_jobs(
            &[
                device("ml", "train-0", None),
                device("ml", "eval", Some("uid-eval")),
                device("ml", "unknown-yet", None),
            ],
            &dir,
            &labels,
        );
        assert_eq!(out.len(), 2, "the ended pod holds nothing: {out:?}");
        assert_eq!(
            out[0].pod_uid.as_deref(),
            Some("uid-train-0"),
            "the one running"
        );
        let job = out[0].job.as_ref().unwrap();
        assert_eq!(
            (
                job.id.as_str(),
                job.name.as_str(),
                job.labels["team"].as_str()
            ),
            ("ml/pytorchjob/bert", "bert", "nlp")
        );
        assert_eq!(out[1].job, None, "not in the API yet: its own job");
    }

    #[test]
    fn jobs_end_when_all_their_pods_have() {
        let owned = |name: &str, ending: Option<Outcome>| {
            let mut p = pod(name);
            p.controller = Some(PodOwner {
                kind: "Job".into(),
                name: "j".into(),
            });
            p.ending = ending.map(|outcome| PodEnding {
                outcome,
                reason: None,
                exit_code: None,
                signal: None,
                at: 2_000.0,
            });
            p
        };
        let mut dir: PodDirectory = [owned("j-0", Some(Outcome::Succeeded)), owned("j-1", None)]
            .into_iter()
            .map(|m| (m.uid.clone(), m))
            .collect();
        let mut bare = pod("solo");
        bare.ending = owned("x", Some(Outcome::Cancelled)).ending;
        dir.insert(bare.uid.clone(), bare);
        let running = ["ml/job/j", "ml/solo", "ml/other"];
        let done = finished_jobs(&dir, running);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].0.as_str(), done[0].1.outcome),
            ("ml/solo", Outcome::Cancelled)
        );
        dir.get_mut("uid-j-1").unwrap().ending = owned("x", Some(Outcome::Succeeded)).ending;
        let done = finished_jobs(&dir, running);
        assert_eq!(done.len(), 2);
        assert_eq!(
            (done[0].0.as_str(), done[0].1.outcome),
            ("ml/job/j", Outcome::Succeeded)
        );
    }

    #[test]
    fn a_job_of_several_pods() {
        let running = pod("w2");
        let a = ended("w0", 1_000, Outcome::Succeeded, 2_000.0);
        let b = ended("w1", 1_001, Outcome::Succeeded, 2_010.0);
        assert_eq!(job_ending(&[&a, &b, &running]), None, "one still runs");
        let e = job_ending(&[&a, &b]).unwrap();
        assert_eq!((e.outcome, e.at), (Outcome::Succeeded, 2_010.0));

        // One worker preempted, the others fail for it: preempted.
        let p = ended("w1", 1_001, Outcome::Preempted, 2_005.0);
        let f = ended("w2", 1_001, Outcome::Failed, 2_006.0);
        assert_eq!(
            job_ending(&[&a, &p, &f]).unwrap().outcome,
            Outcome::Preempted
        );
        // A cancelled worker and a failed one: failed.
        let c = ended("w1", 1_001, Outcome::Cancelled, 2_005.0);
        assert_eq!(job_ending(&[&c, &f]).unwrap().outcome, Outcome::Failed);

        // A Job's first pod failed, its retry (started after) succeeded: succeeded.
        let first = ended("try0", 1_000, Outcome::Failed, 1_500.0);
        let retry = ended("try1", 1_510, Outcome::Succeeded, 3_000.0);
        let e = job_ending(&[&first, &retry]).unwrap();
        assert_eq!((e.outcome, e.at), (Outcome::Succeeded, 3_000.0));
        assert_eq!(job_ending(&[]), None);
    }
}
