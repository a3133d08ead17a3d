//! Kubernetes attribution: asks the kubelet which pod and container holds which GPU.
//!
//! Owns the client side of the kubelet pod-resources gRPC API (service `v1.PodResourcesLister`,
//! rpc `List`) over its unix socket, default `gpucost_core::config::defaults::KUBELET_SOCKET`. The messages and the client are
//! generated from the proto in `gpucost-podresources`, which the fake kubelet serves too.
//!
//! NVIDIA's device plugin registers GPUs as resource `nvidia.com/gpu` with the GPU UUID (`GPU-…`)
//! as device id, or the MIG device id (`MIG-…`) for MIG slices; time-slicing or MPS replicas as
//! `<id>::N`, under `nvidia.com/gpu.shared` with its `renameByDefault`; with its "mixed" MIG
//! strategy the resource names are `nvidia.com/mig-<profile>`. The default `resource_names`
//! has all three (`nvidia.com/mig-*`, a prefix).
//!
//! Several pods may hold one GPU: NVIDIA's plugin shares a GPU by time-slicing or MPS as
//! replicas `<uuid>::N`, GKE's as `nvidiaN/vgpuK`; every holder is kept
//! (`gpucost_core::attribute::device` resolves the ids). What binds a process to one of them is
//! the pod UID in the process's cgroup, and the pod-resources API names pods by namespace and
//! name only. The UIDs come from the kubelet's device-manager checkpoint ([`read_checkpoint`],
//! default `gpucost_core::config::defaults::KUBELET_CHECKPOINT`), which records each allocation
//! with the pod's UID, container and device ids: [`add_pod_uids`] joins the two on (container,
//! resource, device id), which identifies one allocation (a device or replica is allocated to
//! one container at a time). Without the checkpoint the pods have no UID and attribution splits
//! a shared GPU's processes evenly between its pods.
//!
//! Each [`list_gpus`] call opens a fresh connection (the socket is local and polled every few
//! seconds, so there is no channel to keep healthy across kubelet restarts). GPUs handed out
//! through Dynamic Resource Allocation arrive in `dynamic_resources` as CDI devices and are not
//! read here yet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpucost_podresources::v1::pod_resources_lister_client::PodResourcesListerClient;
use gpucost_podresources::v1::{ListPodResourcesRequest, ListPodResourcesResponse};
use tonic::transport::Endpoint;

/// The kubelet's own client allows 16 MiB responses (`podresources.DefaultMaxMsgSize`); a node
/// with many pods goes past tonic's 4 MiB default.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

pub use gpucost_core::attribute::PodGpu;

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// No socket, nobody listening, or the HTTP/2 handshake failed.
    #[error("cannot connect to the kubelet pod-resources socket {}: {reason}", path.display())]
    Connect { path: PathBuf, reason: String },
    /// The kubelet answered with a gRPC error.
    #[error(
        "kubelet pod-resources List on {} failed: {:?}: {}",
        path.display(),
        status.code(),
        status.message()
    )]
    Rpc {
        path: PathBuf,
        status: Box<tonic::Status>,
    },
    /// Connect plus the call took longer than the timeout.
    #[error("kubelet pod-resources socket {} did not answer within {timeout:?}", path.display())]
    Timeout { path: PathBuf, timeout: Duration },
}

/// Every device whose resource name is in `resource_names` (normally `nvidia.com/gpu`, NVIDIA's device plugin's) with the
/// pod and container that hold it, sorted, without duplicates. The whole exchange (connect and
/// call) is bounded by `timeout`. A missing socket is [`KubeletError::Connect`] naming the path.
pub async fn list_gpus(
    socket: &Path,
    resource_names: &[String],
    timeout: Duration,
) -> Result<Vec<PodGpu>, KubeletError> {
    let response = tokio::time::timeout(timeout, list(socket))
        .await
        .map_err(|_| KubeletError::Timeout {
            path: socket.to_path_buf(),
            timeout,
        })??;
    Ok(gpus_from(response, resource_names))
}

async fn list(socket: &Path) -> Result<ListPodResourcesResponse, KubeletError> {
    let connect_err = |reason: String| KubeletError::Connect {
        path: socket.to_path_buf(),
        reason,
    };
    let path = socket.to_path_buf();
    // The URI is required by the HTTP/2 client but never resolved: the connector dials the socket.
    let mut channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| connect_err(error_chain(&e)))?;
    // Waited for here, so that a connection that is not ready is a Connect error naming its
    // cause; the generated client would turn it into an UNKNOWN status.
    tower::ServiceExt::ready(&mut channel)
        .await
        .map_err(|e| connect_err(error_chain(&e)))?;
    PodResourcesListerClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .list(ListPodResourcesRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| KubeletError::Rpc {
            path: socket.to_path_buf(),
            status: Box::new(status),
        })
}

/// tonic's transport error says only "transport error"; the cause (e.g. "No such file or
/// directory") is further down the chain, sometimes twice.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if text != "transport error" && !parts.contains(&text) {
            parts.push(text);
        }
        next = err.source();
    }
    if parts.is_empty() {
        return e.to_string();
    }
    parts.join(": ")
}

/// Whether `name` is one of `resource_names`, where a name ending in `*` is a prefix
/// (`nvidia.com/mig-*`: every MIG profile of the "mixed" strategy).
fn is_gpu_resource(name: &str, resource_names: &[String]) -> bool {
    resource_names.iter().any(|r| match r.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => r == name,
    })
}

fn gpus_from(response: ListPodResourcesResponse, resource_names: &[String]) -> Vec<PodGpu> {
    let mut out = Vec::new();
    for pod in response.pod_resources {
        for container in pod.containers {
            for devices in container.devices {
                if !is_gpu_resource(&devices.resource_name, resource_names) {
                    continue;
                }
                for device_id in devices.device_ids {
                    out.push(PodGpu {
                        namespace: pod.namespace.clone(),
                        pod: pod.name.clone(),
                        container: container.name.clone(),
                        device_id,
                        pod_uid: None,
                        job: None,
                    });
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One device allocation the kubelet's device manager recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub pod_uid: String,
    pub container: String,
    pub resource: String,
    pub device_ids: Vec<String>,
}

/// Reads the kubelet's device-manager checkpoint (`kubelet_internal_checkpoint`, JSON written by
/// the kubelet's `devicemanager/checkpoint`): its `Data.PodDeviceEntries`, whose `DeviceIDs` are
/// a list (Kubernetes before 1.20) or lists by NUMA node. The checksum is not checked: it is
/// computed over the kubelet's Go representation, and a torn file fails to parse anyway (the
/// kubelet replaces it through a rename). An error names the file and what is wrong.
pub fn read_checkpoint(path: &Path) -> Result<Vec<Allocation>, String> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(rename = "Data")]
        data: Data,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        #[serde(rename = "PodDeviceEntries", default)]
        entries: Option<Vec<Entry>>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "PodUID")]
        pod_uid: String,
        #[serde(rename = "ContainerName")]
        container: String,
        #[serde(rename = "ResourceName")]
        resource: String,
        #[serde(rename = "DeviceIDs")]
        device_ids: Option<DeviceIds>,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum DeviceIds {
        List(Vec<String>),
        PerNuma(std::collections::BTreeMap<String, Option<Vec<String>>>),
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the kubelet checkpoint {}: {e}", path.display()))?;
    let file: File = serde_json::from_str(&text).map_err(|e| {
        format!(
            "the kubelet checkpoint {} is not a device-manager checkpoint: {e}",
            path.display()
        )
    })?;
    Ok(file
        .data
        .entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| Allocation {
            pod_uid: e.pod_uid,
            container: e.container,
            resource: e.resource,
            device_ids: match e.device_ids {
                None => Vec::new(),
                Some(DeviceIds::List(ids)) => ids,
                Some(DeviceIds::PerNuma(numa)) => numa.into_values().flatten().flatten().collect(),
            },
        })
        .collect())
}

/// Gives each pod's device the UID of the pod the checkpoint allocated it to, matching the
/// container and device id (an allocation recorded for several UIDs, a checkpoint not yet up to
/// date, gives none). A device listed for two pods with one container name is given to neither:
/// `List` can still report the devices of a pod that has finished after they were allocated
/// again (kubernetes/kubernetes#119423), and the checkpoint cannot tell which of the two is the
/// live one.
pub fn add_pod_uids(pods: &mut [PodGpu], allocations: &[Allocation]) {
    let listed_twice = |p: &PodGpu, all: &[PodGpu]| {
        all.iter().any(|o| {
            o.device_id == p.device_id
                && o.container == p.container
                && (o.namespace != p.namespace || o.pod != p.pod)
        })
    };
    let twice: Vec<bool> = pods.iter().map(|p| listed_twice(p, pods)).collect();
    for (p, twice) in pods.iter_mut().zip(twice) {
        if twice {
            p.pod_uid = None;
            continue;
        }
        let mut uids = allocations
            .iter()
            .filter(|a| a.container == p.container && a.device_ids.contains(&p.device_id))
            .map(|a| a.pod_uid.as_str());
        let first = uids.next();
        p.pod_uid = first
            .filter(|u| uids.all(|other| other == *u))
            .map(str::to_string);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fake_kubelet::{FakeKubelet, FakePod};
    use std::time::Instant;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn gpu_names() -> Vec<String> {
        gpucost_core::config::defaults::KUBELET_RESOURCES
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    /// A container's devices: `[(resource name, [device id])]`.
    type Devices<'a> = &'a [(&'a str, &'a [&'a str])];

    fn pod(ns: &str, name: &str, containers: &[(&str, Devices<'_>)]) -> FakePod {
        FakePod {
            namespace: ns.into(),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            containers: containers
                .iter()
                .map(|(c, res)| {
                    let res = res
                        .iter()
                        .map(|(r, ids)| {
                            (r.to_string(), ids.iter().map(|s| s.to_string()).collect())
                        })
                        .collect();
                    (c.to_string(), res)
                })
                .collect(),
        }
    }

    fn held(ns: &str, pod: &str, container: &str, device: &str) -> PodGpu {
        PodGpu {
            namespace: ns.into(),
            pod: pod.into(),
            container: container.into(),
            device_id: device.into(),
            pod_uid: None,
            job: None,
        }
    }

    fn two_pods() -> Vec<FakePod> {
        vec![
            pod(
                "ml",
                "train-0",
                &[("trainer", &[("nvidia.com/gpu", &["GPU-bbbb", "GPU-aaaa"])])],
            ),
            pod(
                "default",
                "notebook",
                &[
                    ("sidecar", &[]),
                    (
                        "jupyter",
                        &[
                            ("example.com/foo", &["foo-1"]),
                            ("nvidia.com/gpu", &["GPU-cccc"]),
                        ],
                    ),
                ],
            ),
        ]
    }

    #[tokio::test]
    async fn lists_gpu_assignments_and_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let fake = FakeKubelet::start(&socket, two_pods()).await;

        let got = list_gpus(&socket, &gpu_names(), TIMEOUT).await.unwrap();
        assert_eq!(
            got,
            [
                held("default", "notebook", "jupyter", "GPU-cccc"),
                held("ml", "train-0", "trainer", "GPU-aaaa"),
                held("ml", "train-0", "trainer", "GPU-bbbb"),
            ]
        );

        // MIG devices of the "mixed" strategy and renamed shared replicas, by the defaults.
        fake.set_pods(vec![pod(
            "ml",
            "mixed",
            &[(
                "trainer",
                &[
                    ("nvidia.com/mig-3g.40gb", &["MIG-eeee"]),
                    ("nvidia.com/gpu.shared", &["GPU-ffff::2"]),
                    ("nvidia.com/migration", &["not-a-gpu"]),
                ],
            )],
        )]);
        let got = list_gpus(&socket, &gpu_names(), TIMEOUT).await.unwrap();
        let ids: Vec<&str> = got.iter().map(|p| p.device_id.as_str()).collect();
        assert_eq!(ids, ["GPU-ffff::2", "MIG-eeee"]);
        fake.set_pods(two_pods());

        // Other resource names are there when asked for.
        let foo = list_gpus(&socket, &["example.com/foo".to_string()], TIMEOUT)
            .await
            .unwrap();
        assert_eq!(foo, [held("default", "notebook", "jupyter", "foo-1")]);

        fake.set_pods(vec![pod(
            "ml",
            "train-1",
            &[("trainer", &[("nvidia.com/gpu", &["MIG-dddd"])])],
        )]);
        let got = list_gpus(&socket, &gpu_names(), TIMEOUT).await.unwrap();
        assert_eq!(got, [held("ml", "train-1", "trainer", "MIG-dddd")]);

        fake.set_pods(vec![]);
        assert!(list_gpus(&socket, &gpu_names(), TIMEOUT)
            .await
            .unwrap()
            .is_empty());
    }

    /// Issue 15: two pods time-slicing one GPU (replicas `::N`), a third on a shared MIG device;
    /// each keeps its devices, and the checkpoint the fake kubelet writes gives their UIDs.
    #[tokio::test]
    async fn shared_devices_are_kept_and_joined_to_their_pod_uids() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let checkpoint = dir.path().join("kubelet_internal_checkpoint");
        let mut pods = vec![
            pod("ml", "a", &[("main", &[("nvidia.com/gpu", &["GPU-1::0"])])]),
            pod("ml", "b", &[("main", &[("nvidia.com/gpu", &["GPU-1::1"])])]),
            pod("ml", "c", &[("main", &[("nvidia.com/gpu", &["MIG-2::3"])])]),
        ];
        pods[2].uid = None;
        let fake = FakeKubelet::start(&socket, pods).await;
        fake.write_checkpoint_to(&checkpoint);

        let mut got = list_gpus(&socket, &gpu_names(), TIMEOUT).await.unwrap();
        let allocations = read_checkpoint(&checkpoint).unwrap();
        add_pod_uids(&mut got, &allocations);
        let uid = |p: &PodGpu| (p.pod.clone(), p.device_id.clone(), p.pod_uid.clone());
        assert_eq!(
            got.iter().map(uid).collect::<Vec<_>>(),
            [
                ("a".into(), "GPU-1::0".into(), Some("uid-a".into())),
                ("b".into(), "GPU-1::1".into(), Some("uid-b".into())),
                // Not in the checkpoint.
                ("c".into(), "MIG-2::3".into(), None),
            ]
        );
    }

    /// The checkpoint as Kubernetes before 1.20 wrote it (`DeviceIDs` a plain list), entries in
    /// conflict, and files that are not a checkpoint.
    #[test]
    fn checkpoint_forms_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet_internal_checkpoint");
        std::fs::write(
            &path,
            r#"{"Data":{"PodDeviceEntries":[
                {"PodUID":"u1","ContainerName":"main","ResourceName":"nvidia.com/gpu","DeviceIDs":["GPU-1::0"],"AllocResp":""},
                {"PodUID":"u2","ContainerName":"main","ResourceName":"nvidia.com/gpu","DeviceIDs":["GPU-1::1"],"AllocResp":""},
                {"PodUID":"u3","ContainerName":"main","ResourceName":"nvidia.com/gpu","DeviceIDs":["GPU-1::1"],"AllocResp":""}],
                "RegisteredDevices":{"nvidia.com/gpu":["GPU-1::0","GPU-1::1"]}},"Checksum":1}"#,
        )
        .unwrap();
        let allocations = read_checkpoint(&path).unwrap();
        assert_eq!(allocations[0].device_ids, ["GPU-1::0"]);
        let mut pods = vec![
            held("ml", "a", "main", "GPU-1::0"),
            held("ml", "b", "main", "GPU-1::1"),
            held("ml", "x", "other", "GPU-1::0"),
        ];
        add_pod_uids(&mut pods, &allocations);
        let uids: Vec<_> = pods.iter().map(|p| p.pod_uid.as_deref()).collect();
        assert_eq!(uids, [Some("u1"), None, None]);

        // A finished pod still listed with a replica given since to another pod
        // (kubernetes/kubernetes#119423): neither is given the UID the checkpoint has for it.
        let mut pods = vec![
            held("ml", "done", "main", "GPU-1::0"),
            held("ml", "new", "main", "GPU-1::0"),
        ];
        add_pod_uids(&mut pods, &allocations);
        assert!(pods.iter().all(|p| p.pod_uid.is_none()), "{pods:?}");

        // A kubelet with no allocations writes null for the entries.
        std::fs::write(
            &path,
            r#"{"Data":{"PodDeviceEntries":null,"RegisteredDevices":null},"Checksum":1}"#,
        )
        .unwrap();
        assert!(read_checkpoint(&path).unwrap().is_empty());

        std::fs::write(&path, r#"{"Data":{"PodDeviceEnt"#).unwrap();
        let err = read_checkpoint(&path).unwrap_err();
        assert!(
            err.contains("not a device-manager checkpoint") && err.contains(path.to_str().unwrap()),
            "{err}"
        );
        let missing = dir.path().join("missing");
        let err = read_checkpoint(&missing).unwrap_err();
        assert!(
            err.contains("No such file") && err.contains("missing"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn missing_socket_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("pod-resources").join("kubelet.sock");
        let err = list_gpus(&socket, &gpu_names(), TIMEOUT).await.unwrap_err();
        assert!(matches!(err, KubeletError::Connect { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&socket.display().to_string()), "{msg}");
        assert!(msg.contains("No such file"), "{msg}");
    }

    #[tokio::test]
    async fn stopped_server_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let fake = FakeKubelet::start(&socket, two_pods()).await;
        assert_eq!(
            list_gpus(&socket, &gpu_names(), TIMEOUT)
                .await
                .unwrap()
                .len(),
            3
        );
        drop(fake);
        let started = Instant::now();
        let err = list_gpus(&socket, &gpu_names(), TIMEOUT).await.unwrap_err();
        assert!(matches!(err, KubeletError::Connect { .. }), "{err:?}");
        assert!(started.elapsed() < TIMEOUT);

        // A stale socket file nobody listens on (kubelet died): refused, at once.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        assert!(socket.exists());
        let err = list_gpus(&socket, &gpu_names(), TIMEOUT).await.unwrap_err();
        assert!(matches!(err, KubeletError::Connect { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        // Accepts connections and never answers (a wedged kubelet).
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let hold = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                conns.push(conn);
            }
        });
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let err = list_gpus(&socket, &gpu_names(), timeout).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, KubeletError::Timeout { .. }), "{err:?}");
        assert!(took >= timeout && took < timeout * 5, "{took:?}");
        assert!(err.to_string().contains(&socket.display().to_string()));
        hold.abort();
    }

    #[tokio::test]
    async fn error_status_is_an_rpc_error() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let fake = FakeKubelet::start(&socket, two_pods()).await;
        fake.fail_with(tonic::Status::unavailable("kubelet restarting"));
        let err = list_gpus(&socket, &gpu_names(), TIMEOUT).await.unwrap_err();
        match &err {
            KubeletError::Rpc { status, .. } => {
                assert_eq!(status.code(), tonic::Code::Unavailable)
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("kubelet restarting") && msg.contains(&socket.display().to_string()),
            "{msg}"
        );
    }
}
