//! The pods of this node through the Kubernetes API (kube-rs): their owners, labels and how
//! they ended, for `gpucost_core::attribute::pods`.
//!
//! One list and then a watch of `pods` with the field selector `spec.nodeName=<node>` (the
//! kubelet's own filter; the API server indexes it), so the agent reads only its node's pods
//! and needs no more than get, list and watch on pods (`deploy/kubernetes/base/rbac.yaml`).
//! A watch that ends (the server's timeout) continues from the last resource version; one the
//! server no longer has (410 Gone, <https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes>)
//! starts over with a list. Each change is sent to the node as a whole [`PodDirectory`].
//!
//! The ending of a pod is decided the first time the API shows it ended (terminal, or
//! deleted), and kept: a Job's clean-up deleting a failed pod later does not make it
//! cancelled. Pods deleted from the API stay in the directory for [`RETAIN_GONE`], so that a
//! job whose other pods end later still sees how they ended.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use gpucost_core::attribute::pods::{ContainerEnd, PodDirectory, PodMeta, PodOwner, PodPhase};
use gpucost_core::clock::Clock;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long a pod deleted from the API is kept for its job's ending.
pub const RETAIN_GONE: Duration = Duration::from_secs(600);
/// The server ends each watch after this long (it is told to); the next one continues.
const WATCH_TIMEOUT_S: u32 = 290;
/// Waits after a failed list or watch, doubling up to the last.
const BACKOFF: [Duration; 6] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// What a pod of the API is, for billing. Fields the API leaves out are unknown.
pub fn pod_meta(pod: &Pod) -> Option<PodMeta> {
    let m = &pod.metadata;
    let (namespace, name, uid) = (m.namespace.clone()?, m.name.clone()?, m.uid.clone()?);
    let controller = m
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| PodOwner {
            kind: o.kind.clone(),
            name: o.name.clone(),
        });
    let status = pod.status.as_ref();
    let phase = status
        .and_then(|s| s.phase.as_deref())
        .map_or(PodPhase::Unknown, PodPhase::parse);
    let disruption = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_default());
    let containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .map(|t| ContainerEnd {
            exit_code: t.exit_code,
            signal: t.signal,
            reason: t.reason.clone(),
            finished_at: t.finished_at.as_ref().map(|f| f.0.as_second()),
        })
        .collect();
    Some(PodMeta {
        namespace,
        name,
        uid,
        labels: m.labels.clone().unwrap_or_default(),
        controller,
        phase,
        reason: status.and_then(|s| s.reason.clone()),
        disruption,
        deleting: m.deletion_timestamp.is_some(),
        started_at: status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_second()),
        containers,
        ending: None,
    })
}

/// The directory the watcher keeps: the pods, and when each deleted one went.
#[derive(Debug, Default)]
pub struct Pods {
    pods: PodDirectory,
    gone_at: BTreeMap<String, f64>,
}

impl Pods {
    /// The API shows `meta` now (added or changed): its ending is decided when it first shows
    /// one, and kept.
    pub fn update(&mut self, mut meta: PodMeta, now: f64) {
        meta.ending = match self.pods.get(&meta.uid).and_then(|p| p.ending.clone()) {
            Some(e) => Some(e),
            None => meta.ending_now(false, now),
        };
        self.gone_at.remove(&meta.uid);
        self.pods.insert(meta.uid.clone(), meta);
    }

    /// The pod `uid` is no longer in the API (deleted, or missing from a new list); `last` is
    /// how it was last shown, where known.
    pub fn gone(&mut self, uid: &str, last: Option<PodMeta>, now: f64) {
        if let Some(m) = last {
            self.update(m, now);
        }
        if let Some(p) = self.pods.get_mut(uid) {
            if p.ending.is_none() {
                p.ending = p.ending_now(true, now);
            }
            self.gone_at.entry(uid.to_string()).or_insert(now);
        }
    }

    /// A new list: what it shows replaces what was known; the pods it lacks are gone.
    pub fn relist(&mut self, listed: Vec<PodMeta>, now: f64) {
        let missing: Vec<String> = self
            .pods
            .keys()
            .filter(|uid| !listed.iter().any(|m| &m.uid == *uid))
            .cloned()
            .collect();
        for m in listed {
            self.update(m, now);
        }
        for uid in missing {
            self.gone(&uid, None, now);
        }
    }

    /// Forgets the pods gone longer than `retain`.
    pub fn prune(&mut self, retain: Duration, now: f64) {
        let old: Vec<String> = self
            .gone_at
            .iter()
            .filter(|(_, at)| now - **at > retain.as_secs_f64())
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in old {
            self.gone_at.remove(&uid);
            self.pods.remove(&uid);
        }
    }

    pub fn directory(&self) -> Arc<PodDirectory> {
        Arc::new(self.pods.clone())
    }
}

/// Where the watcher gets its facts.
pub struct KubeWatch {
    pub client: kube::Client,
    /// The node whose pods are watched (`spec.nodeName`).
    pub node: String,
    pub clock: Arc<dyn Clock>,
}

/// Watches the node's pods until `shutdown`, sending the directory at each change. Failures
/// are said once each (and when they stop) and retried with a backoff.
pub async fn watch_pods(
    w: KubeWatch,
    tx: watch::Sender<Arc<PodDirectory>>,
    shutdown: CancellationToken,
) {
    let api: Api<Pod> = Api::all(w.client.clone());
    let selector = format!("spec.nodeName={}", w.node);
    let mut pods = Pods::default();
    let mut said: Option<String> = None;
    let mut failures = 0usize;
    loop {
        let result = tokio::select! {
            r = list_and_watch(&api, &selector, &w, &mut pods, &tx, &mut said) => r,
            () = shutdown.cancelled() => return,
        };
        let wait = match result {
            Ok(()) => {
                failures = 0;
                Duration::ZERO
            }
            Err(e) => {
                let msg = describe(&e, &w.node);
                if said.as_deref() != Some(msg.as_str()) {
                    warn!("{msg}; pods' owners, labels and outcomes unknown until it works (attribution.kube_api = \"off\" stops trying)");
                }
                said = Some(msg);
                failures += 1;
                BACKOFF[(failures - 1).min(BACKOFF.len() - 1)]
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// One list, then watches from its resource version until one fails; `Ok` when the server no
/// longer has that version (a new list is due).
async fn list_and_watch(
    api: &Api<Pod>,
    selector: &str,
    w: &KubeWatch,
    pods: &mut Pods,
    tx: &watch::Sender<Arc<PodDirectory>>,
    said: &mut Option<String>,
) -> Result<(), kube::Error> {
    let list = api.list(&ListParams::default().fields(selector)).await?;
    let now = w.clock.now().wall;
    let n = list.items.len();
    pods.relist(list.items.iter().filter_map(pod_meta).collect(), now);
    pods.prune(RETAIN_GONE, now);
    let _ = tx.send(pods.directory());
    if said.take().is_some() {
        info!(
            "Kubernetes API: watching the pods of node {} again ({n} now)",
            w.node
        );
    } else {
        info!(
            "Kubernetes API: watching the pods of node {} ({n} now)",
            w.node
        );
    }
    let mut version = list.metadata.resource_version.unwrap_or_default();
    loop {
        let params = WatchParams::default()
            .fields(selector)
            .timeout(WATCH_TIMEOUT_S)
            .disable_bookmarks();
        let mut events = api.watch(&params, &version).await?.boxed();
        while let Some(event) = events.try_next().await? {
            let now = w.clock.now().wall;
            match event {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    note_version(&mut version, &p);
                    if let Some(m) = pod_meta(&p) {
                        pods.update(m, now);
                    }
                }
                WatchEvent::Deleted(p) => {
                    note_version(&mut version, &p);
                    if let Some(m) = pod_meta(&p) {
                        pods.gone(&m.uid.clone(), Some(m), now);
                    }
                }
                WatchEvent::Bookmark(b) => {
                    version = b.metadata.resource_version;
                    continue;
                }
                // The version is too old: the events since cannot be had; list again.
                WatchEvent::Error(s) if s.code == 410 => {
                    debug!(
                        "Kubernetes API: watch of node {} expired ({}); listing again",
                        w.node, s.message
                    );
                    return Ok(());
                }
                WatchEvent::Error(s) => return Err(kube::Error::Api(s)),
            }
            pods.prune(RETAIN_GONE, now);
            let _ = tx.send(pods.directory());
        }
    }
}

fn note_version(version: &mut String, p: &Pod) {
    if let Some(v) = &p.metadata.resource_version {
        version.clone_from(v);
    }
}

/// A failure in words an operator can act on.
fn describe(e: &kube::Error, node: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => format!(
            "Kubernetes API: may not list the pods of node {node} ({} {}: {}); the service \
             account needs get, list and watch on pods (deploy/kubernetes/base/rbac.yaml)",
            s.code, s.reason, s.message
        ),
        kube::Error::Api(s) => format!(
            "Kubernetes API: listing the pods of node {node} failed ({} {}: {})",
            s.code, s.reason, s.message
        ),
        other => format!(
            "Kubernetes API: cannot reach the API server: {}",
            chain(other)
        ),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        let t = s.to_string();
        // Wrapping errors repeat their source's text: say each thing once.
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        next = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpucost_core::jobs::{EndReason, Outcome};

    /// A pod as the API server serves it (`kubectl get pod -o json`), trimmed to what the
    /// agent reads plus enough of the rest to show it is ignored.
    fn api_pod(phase: &str, extra_status: serde_json::Value) -> Pod {
        let mut status = serde_json::json!({
            "phase": phase,
            "hostIP": "10.0.3.17",
            "podIP": "10.244.1.9",
            "qosClass": "Burstable",
            "startTime": "2026-11-30T09:00:00Z",
        });
        status
            .as_object_mut()
            .unwrap()
            .extend(extra_status.as_object().unwrap().clone());
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "train-llama-x7k2p",
                "namespace": "ml",
                "uid": "6b0c3c1e-2f7a-4b8e-9d3c-1a2b3c4d5e6f",
                "resourceVersion": "48213",
                "creationTimestamp": "2026-11-30T08:59:58Z",
                "labels": {
                    "batch.kubernetes.io/job-name": "train-llama",
                    "app.kubernetes.io/team": "nlp"
                },
                "ownerReferences": [{
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": "train-llama",
                    "uid": "0d1e2f3a-4b5c-4d6e-8f9a-0b1c2d3e4f5a",
                    "controller": true,
                    "blockOwnerDeletion": true
                }]
            },
            "spec": {
                "nodeName": "gpu-node-1",
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"}]
            },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_pods_owner_labels_and_oom_kill_from_its_json() {
        let pod = api_pod(
            "Failed",
            serde_json::json!({
                "containerStatuses": [{
                    "name": "main",
                    "image": "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
                    "imageID": "docker.io/pytorch/pytorch@sha256:0f1e",
                    "containerID": "containerd://4c1f",
                    "ready": false,
                    "restartCount": 0,
                    "started": false,
                    "state": {"terminated": {
                        "exitCode": 137,
                        "reason": "OOMKilled",
                        "startedAt": "2026-11-30T09:00:02Z",
                        "finishedAt": "2026-11-30T09:41:07Z",
                        "containerID": "containerd://4c1f"
                    }}
                }]
            }),
        );
        let m = pod_meta(&pod).unwrap();
        assert_eq!(m.job_id(), "ml/job/train-llama");
        assert_eq!(m.labels["app.kubernetes.io/team"], "nlp");
        assert_eq!(m.started_at, Some(1_796_029_200));
        let e = m.ending_now(false, 0.0).unwrap();
        assert_eq!(
            (e.outcome, e.reason, e.exit_code, e.at),
            (
                Outcome::Failed,
                Some(EndReason::Oom),
                Some(137),
                1_796_031_667.0
            )
        );
    }

    #[test]
    fn a_preempted_pods_condition() {
        let pod = api_pod(
            "Failed",
            serde_json::json!({
                "conditions": [
                    {"type": "Ready", "status": "False", "lastTransitionTime": "2026-11-30T09:20:00Z"},
                    {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                     "message": "preempted by pod 1f2e on node gpu-node-1",
                     "lastTransitionTime": "2026-11-30T09:19:58Z"}
                ]
            }),
        );
        let m = pod_meta(&pod).unwrap();
        assert_eq!(m.disruption.as_deref(), Some("PreemptionByScheduler"));
        assert_eq!(
            m.ending_now(false, 5.0).unwrap().outcome,
            Outcome::Preempted
        );
    }

    fn meta(uid: &str, phase: PodPhase) -> PodMeta {
        let mut m = pod_meta(&api_pod("Running", serde_json::json!({}))).unwrap();
        m.uid = uid.into();
        m.phase = phase;
        m
    }

    #[test]
    fn an_ending_is_decided_once_and_gone_pods_are_kept_a_while() {
        let mut pods = Pods::default();
        pods.update(meta("a", PodPhase::Running), 100.0);
        let mut failed = meta("a", PodPhase::Failed);
        failed.containers = vec![ContainerEnd {
            exit_code: 1,
            signal: None,
            reason: Some("Error".into()),
            finished_at: None,
        }];
        pods.update(failed.clone(), 200.0);
        // The Job controller deletes it later: still failed, at 200.
        let mut deleted = failed;
        deleted.deleting = true;
        pods.gone("a", Some(deleted), 300.0);
        let e = pods.directory()["a"].ending.clone().unwrap();
        assert_eq!((e.outcome, e.at), (Outcome::Failed, 200.0));

        // A list without pod b: b is gone, without a word of how it ended.
        pods.update(meta("b", PodPhase::Running), 100.0);
        pods.relist(vec![meta("c", PodPhase::Running)], 400.0);
        let d = pods.directory();
        assert_eq!(d["b"].ending.as_ref().unwrap().outcome, Outcome::Unknown);
        assert!(d["c"].ending.is_none());
        pods.prune(RETAIN_GONE, 400.0 + 599.0);
        assert!(pods.directory().contains_key("b"));
        pods.prune(RETAIN_GONE, 400.0 + 601.0);
        let d = pods.directory();
        assert!(!d.contains_key("b") && !d.contains_key("a"));
        assert!(d.contains_key("c"), "listed pods stay");
    }
}
