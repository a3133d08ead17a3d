//! A fake kubelet: serves the pod-resources gRPC API (service `v1.PodResourcesLister`) on a unix
//! socket, answering `List` with whatever pods the test (or the JSON file given to the binary)
//! set. `Get` and `GetAllocatableResources` answer `UNIMPLEMENTED`, as from a kubelet older than
//! those methods (gRPC's answer to a method the server does not know).
//!
//! The server and its messages are generated from the proto in `gpucost-podresources`, the same
//! one the agent's client is generated from; that crate checks the proto against the wire format.
//!
//! The pod-resources API names pods by namespace and name only; their UIDs (which processes'
//! cgroups carry) are in the kubelet's device-manager checkpoint,
//! `/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint`, which the fake writes too
//! ([`FakeKubelet::write_checkpoint_to`]) in the kubelet's format (`checkpoint.go` of the
//! kubelet's devicemanager: `{"Data": {"PodDeviceEntries": [{"PodUID", "ContainerName",
//! "ResourceName", "DeviceIDs": {NUMA node: [id]}, "AllocResp"}], "RegisteredDevices": {resource:
//! [id]}}, "Checksum": n}`, the per-NUMA `DeviceIDs` of Kubernetes 1.20 and later).
//!
//! [`api`] is a fake Kubernetes API server for the pods' side: their owners, labels and how
//! they ended, listed and watched as the real server serves them.

pub mod api;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gpucost_podresources::v1::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use gpucost_podresources::v1::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices,
    ContainerResources, GetPodResourcesRequest, GetPodResourcesResponse, ListPodResourcesRequest,
    ListPodResourcesResponse, NumaNode, PodResources, TopologyInfo,
};
use serde::Deserialize;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;

/// A container's devices: `(resource name, [device id])`, e.g. `("nvidia.com/gpu", ["GPU-…"])`.
pub type Devices = Vec<(String, Vec<String>)>;

/// One pod as the fake reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePod {
    pub namespace: String,
    pub name: String,
    /// The pod's UID: in the checkpoint only (the pod-resources API does not carry it); a pod
    /// without one is missing from the checkpoint.
    pub uid: Option<String>,
    /// `(container name, its devices)`.
    pub containers: Vec<(String, Devices)>,
}

/// Parses the pods file of the binary (shape in README.md):
/// `[{"namespace", "name", "uid", "containers": [{"name", "devices": {resource: [device id]}}]}]`
/// (`uid` optional).
pub fn pods_from_json(text: &str) -> Result<Vec<FakePod>, serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pod {
        namespace: String,
        name: String,
        #[serde(default)]
        uid: Option<String>,
        #[serde(default)]
        containers: Vec<Container>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Container {
        name: String,
        #[serde(default)]
        devices: BTreeMap<String, Vec<String>>,
    }
    let pods: Vec<Pod> = serde_json::from_str(text)?;
    Ok(pods
        .into_iter()
        .map(|p| FakePod {
            namespace: p.namespace,
            name: p.name,
            uid: p.uid,
            containers: p
                .containers
                .into_iter()
                .map(|c| (c.name, c.devices.into_iter().collect()))
                .collect(),
        })
        .collect())
}

impl FakePod {
    fn to_pb(&self) -> PodResources {
        PodResources {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            containers: self
                .containers
                .iter()
                .map(|(container, resources)| ContainerResources {
                    name: container.clone(),
                    devices: resources
                        .iter()
                        .map(|(resource, ids)| ContainerDevices {
                            resource_name: resource.clone(),
                            device_ids: ids.clone(),
                            // A real kubelet fills this in when the device plugin reports NUMA
                            // affinity (NVIDIA's does); the client must not trip over it.
                            topology: Some(TopologyInfo {
                                nodes: vec![NumaNode { id: 0 }],
                            }),
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        }
    }
}

/// The kubelet's device-manager checkpoint for `pods`, as JSON text.
pub fn checkpoint_json(pods: &[FakePod]) -> String {
    let mut entries = Vec::new();
    let mut registered: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in pods {
        for (container, devices) in &p.containers {
            for (resource, ids) in devices {
                registered
                    .entry(resource)
                    .or_default()
                    .extend(ids.iter().map(String::as_str));
                let Some(uid) = &p.uid else { continue };
                entries.push(serde_json::json!({
                    "PodUID": uid,
                    "ContainerName": container,
                    "ResourceName": resource,
                    "DeviceIDs": {"0": ids},
                    // The device plugin's Allocate response, protobuf bytes (base64 in JSON).
                    "AllocResp": "",
                }));
            }
        }
    }
    serde_json::json!({
        "Data": {"PodDeviceEntries": entries, "RegisteredDevices": registered},
        // The kubelet checks an FNV-32a sum of its Go dump of Data; readers other than the
        // kubelet do not.
        "Checksum": 0,
    })
    .to_string()
}

fn response_for(pods: &[FakePod]) -> ListPodResourcesResponse {
    ListPodResourcesResponse {
        pod_resources: pods.iter().map(FakePod::to_pb).collect(),
    }
}

/// What `List` answers: the pods, or an error status.
type Shared = Arc<Mutex<Result<ListPodResourcesResponse, tonic::Status>>>;

/// A running fake kubelet. Dropping it stops the server and removes the socket file.
pub struct FakeKubelet {
    socket: PathBuf,
    answer: Shared,
    /// Where the checkpoint is written, and the pods it was last written for.
    checkpoint: Mutex<(Option<PathBuf>, Vec<FakePod>)>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeKubelet {
    /// Binds `socket` (replacing a stale file there) and serves `pods` until dropped.
    /// Must be called inside a tokio runtime. Panics if the socket cannot be bound: it is a
    /// test helper.
    pub async fn start(socket: &Path, pods: Vec<FakePod>) -> FakeKubelet {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)
            .unwrap_or_else(|e| panic!("fake-kubelet: cannot bind {}: {e}", socket.display()));
        let answer: Shared = Arc::new(Mutex::new(Ok(response_for(&pods))));
        let (stop, stopped) = oneshot::channel::<()>();
        let svc = PodResourcesListerServer::new(Lister {
            answer: answer.clone(),
        });
        let task = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(svc, UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = result {
                eprintln!("fake-kubelet: server error: {e}");
            }
        });
        FakeKubelet {
            socket: socket.to_path_buf(),
            answer,
            checkpoint: Mutex::new((None, pods)),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Changes what the next `List` calls answer (and the checkpoint, when one is written).
    pub fn set_pods(&self, pods: Vec<FakePod>) {
        *self.answer.lock().unwrap() = Ok(response_for(&pods));
        let mut checkpoint = self.checkpoint.lock().unwrap();
        checkpoint.1 = pods;
        if let Some(path) = &checkpoint.0 {
            write_checkpoint(path, &checkpoint.1);
        }
    }

    /// Writes the device-manager checkpoint of the pods to `path` now and after each
    /// [`Self::set_pods`], as the kubelet keeps it (replaced whole, through a rename).
    pub fn write_checkpoint_to(&self, path: &Path) {
        let mut checkpoint = self.checkpoint.lock().unwrap();
        write_checkpoint(path, &checkpoint.1);
        checkpoint.0 = Some(path.to_path_buf());
    }

    /// Makes the next `List` calls fail with `status`, until the next [`Self::set_pods`].
    pub fn fail_with(&self, status: tonic::Status) {
        *self.answer.lock().unwrap() = Err(status);
    }

    /// The socket path served.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops serving and waits until the server task has finished (open connections are sent
    /// GOAWAY and drained).
    pub async fn shutdown(mut self) {
        self.stop_now();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn stop_now(&mut self) {
        // Remove the file first, so that new connections fail at once with "not found".
        let _ = std::fs::remove_file(&self.socket);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn write_checkpoint(path: &Path, pods: &[FakePod]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, checkpoint_json(pods))
        .and_then(|()| std::fs::rename(&tmp, path))
        .unwrap_or_else(|e| panic!("fake-kubelet: cannot write {}: {e}", path.display()));
}

/// `List` answers what [`FakeKubelet::set_pods`] or [`FakeKubelet::fail_with`] last set.
struct Lister {
    answer: Shared,
}

#[tonic::async_trait]
impl PodResourcesLister for Lister {
    async fn list(
        &self,
        _request: tonic::Request<ListPodResourcesRequest>,
    ) -> Result<tonic::Response<ListPodResourcesResponse>, tonic::Status> {
        self.answer
            .lock()
            .unwrap()
            .clone()
            .map(tonic::Response::new)
    }

    async fn get_allocatable_resources(
        &self,
        _request: tonic::Request<AllocatableResourcesRequest>,
    ) -> Result<tonic::Response<AllocatableResourcesResponse>, tonic::Status> {
        Err(not_served("GetAllocatableResources"))
    }

    async fn get(
        &self,
        _request: tonic::Request<GetPodResourcesRequest>,
    ) -> Result<tonic::Response<GetPodResourcesResponse>, tonic::Status> {
        Err(not_served("Get"))
    }
}

fn not_served(method: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!(
        "fake-kubelet does not implement v1.PodResourcesLister/{method}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pod(ns: &str, name: &str, gpus: &[&str]) -> FakePod {
        FakePod {
            namespace: ns.into(),
            name: name.into(),
            uid: None,
            containers: vec![(
                "trainer".into(),
                vec![(
                    "nvidia.com/gpu".into(),
                    gpus.iter().map(|s| s.to_string()).collect(),
                )],
            )],
        }
    }

    impl FakePod {
        fn with_container(mut self, name: &str) -> Self {
            self.containers.push((name.into(), vec![]));
            self
        }
    }

    /// The gRPC path of `List`, written out as upstream names it (package `v1`), rather than
    /// taken from the generated client.
    const LIST_PATH: &str = "/v1.PodResourcesLister/List";

    async fn channel(socket: &Path) -> tonic::transport::Channel {
        let socket = socket.to_path_buf();
        tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .expect("connect")
    }

    /// A `List` request sent to `path`.
    async fn call(
        socket: &Path,
        path: &'static str,
    ) -> Result<ListPodResourcesResponse, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(channel(socket).await);
        grpc.ready().await.expect("ready");
        let codec =
            tonic_prost::ProstCodec::<ListPodResourcesRequest, ListPodResourcesResponse>::default();
        grpc.unary(
            tonic::Request::new(ListPodResourcesRequest {}),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await
        .map(tonic::Response::into_inner)
    }

    #[tokio::test]
    async fn serves_pods_and_follows_set_pods() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let fake = FakeKubelet::start(&socket, vec![pod("ns", "a", &["GPU-1"])]).await;

        let got = call(&socket, LIST_PATH).await.unwrap();
        assert_eq!(got.pod_resources.len(), 1);
        assert_eq!(got.pod_resources[0].name, "a");
        assert_eq!(
            got.pod_resources[0].containers[0].devices[0].device_ids,
            ["GPU-1"]
        );

        fake.set_pods(vec![pod("ns", "b", &["GPU-2"]), pod("ns", "c", &[])]);
        let got = call(&socket, LIST_PATH).await.unwrap();
        let names: Vec<_> = got.pod_resources.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["b", "c"]);

        fake.fail_with(tonic::Status::unavailable("kubelet restarting"));
        let err = call(&socket, LIST_PATH).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn other_methods_are_unimplemented() {
        use gpucost_podresources::v1::pod_resources_lister_client::PodResourcesListerClient;

        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let _fake = FakeKubelet::start(&socket, vec![pod("ns", "a", &["GPU-1"])]).await;
        let mut client = PodResourcesListerClient::new(channel(&socket).await);

        let err = client
            .get(GetPodResourcesRequest {
                pod_name: "a".into(),
                pod_namespace: "ns".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
        assert!(err.message().contains("Get"), "{err:?}");

        let err = client
            .get_allocatable_resources(AllocatableResourcesRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);

        // A method the API does not have at all.
        let err = call(&socket, "/v1.PodResourcesLister/Watch")
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
    }

    /// Time-slicing replicas of one GPU in two pods; the checkpoint gives each pod's UID with
    /// its devices, in the kubelet's layout.
    #[tokio::test]
    async fn serves_shared_devices_and_writes_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let checkpoint = dir.path().join("kubelet_internal_checkpoint");
        let mut a = pod("ml", "a", &["GPU-1::0"]);
        a.uid = Some("uid-a".into());
        let mut b = pod("ml", "b", &["GPU-1::1", "GPU-1::2"]);
        b.uid = Some("uid-b".into());
        let fake = FakeKubelet::start(&socket, vec![a.clone(), b]).await;
        fake.write_checkpoint_to(&checkpoint);

        let got = call(&socket, LIST_PATH).await.unwrap();
        assert_eq!(
            got.pod_resources[1].containers[0].devices[0].device_ids,
            ["GPU-1::1", "GPU-1::2"]
        );
        let text = std::fs::read_to_string(&checkpoint).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let entries = v["Data"]["PodDeviceEntries"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1]["PodUID"], "uid-b");
        assert_eq!(entries[1]["ContainerName"], "trainer");
        assert_eq!(entries[1]["ResourceName"], "nvidia.com/gpu");
        assert_eq!(
            entries[1]["DeviceIDs"]["0"],
            serde_json::json!(["GPU-1::1", "GPU-1::2"])
        );
        assert_eq!(
            v["Data"]["RegisteredDevices"]["nvidia.com/gpu"],
            serde_json::json!(["GPU-1::0", "GPU-1::1", "GPU-1::2"])
        );

        // The checkpoint follows the pods.
        fake.set_pods(vec![a]);
        let text = std::fs::read_to_string(&checkpoint).unwrap();
        assert!(!text.contains("uid-b"), "{text}");
    }

    #[tokio::test]
    async fn shutdown_removes_the_socket_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let fake = FakeKubelet::start(&socket, vec![]).await;
        assert!(socket.exists());
        tokio::time::timeout(Duration::from_secs(5), fake.shutdown())
            .await
            .expect("shutdown finishes");
        assert!(!socket.exists());
    }

    #[test]
    fn json_shape() {
        let pods = pods_from_json(
            r#"[{"namespace": "ml", "name": "train-0", "containers": [
                   {"name": "trainer", "devices": {"nvidia.com/gpu": ["GPU-a", "GPU-b"]}},
                   {"name": "sidecar"}]},
                {"namespace": "ml", "name": "idle", "uid": "u-1"}]"#,
        )
        .unwrap();
        assert_eq!(
            pods,
            [
                pod("ml", "train-0", &["GPU-a", "GPU-b"]).with_container("sidecar"),
                FakePod {
                    namespace: "ml".into(),
                    name: "idle".into(),
                    uid: Some("u-1".into()),
                    containers: vec![]
                },
            ]
        );
        assert!(pods_from_json(r#"[{"namespace": "ml", "nam": "x"}]"#).is_err());
    }
}
