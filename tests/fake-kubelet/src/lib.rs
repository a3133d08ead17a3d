//! A fake kubelet: serves the pod-resources gRPC API (`v1.PodResourcesLister/List`) on a unix
//! socket, answering with whatever pods the test (or the JSON file given to the binary) set.
//! Only `List` is implemented; other methods answer `UNIMPLEMENTED`, as an old kubelet would.
//!
//! The message structs below are this crate's own copy of the upstream messages (it depends on
//! nothing from the agent, so the agent's client tests prove the two copies are wire-compatible).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::Deserialize;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::body::Body;
use tonic::codegen::{http, Service};

/// Wire messages, copied by hand from upstream kubernetes
/// `staging/src/k8s.io/kubelet/pkg/apis/podresources/v1/api.proto` (package `v1`). Only what
/// `List` needs; fields this fake never fills (`memory`, `dynamic_resources`) are left out.
pub mod pb {
    /// `message ListPodResourcesRequest {}`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListPodResourcesRequest {}

    /// `message ListPodResourcesResponse`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListPodResourcesResponse {
        #[prost(message, repeated, tag = "1")]
        pub pod_resources: Vec<PodResources>,
    }

    /// `message PodResources`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodResources {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub namespace: String,
        #[prost(message, repeated, tag = "3")]
        pub containers: Vec<ContainerResources>,
    }

    /// `message ContainerResources` (upstream also has `memory = 4`, `dynamic_resources = 5`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerResources {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, repeated, tag = "2")]
        pub devices: Vec<ContainerDevices>,
        #[prost(int64, repeated, tag = "3")]
        pub cpu_ids: Vec<i64>,
    }

    /// `message ContainerDevices`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerDevices {
        #[prost(string, tag = "1")]
        pub resource_name: String,
        #[prost(string, repeated, tag = "2")]
        pub device_ids: Vec<String>,
        #[prost(message, optional, tag = "3")]
        pub topology: Option<TopologyInfo>,
    }

    /// `message TopologyInfo`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TopologyInfo {
        #[prost(message, repeated, tag = "1")]
        pub nodes: Vec<NumaNode>,
    }

    /// `message NUMANode`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NumaNode {
        #[prost(int64, tag = "1")]
        pub id: i64,
    }
}

/// gRPC path of the one method served.
pub const LIST_PATH: &str = "/v1.PodResourcesLister/List";

/// A container's devices: `(resource name, [device id])`, e.g. `("nvidia.com/gpu", ["GPU-…"])`.
pub type Devices = Vec<(String, Vec<String>)>;

/// One pod as the fake reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePod {
    pub namespace: String,
    pub name: String,
    /// `(container name, its devices)`.
    pub containers: Vec<(String, Devices)>,
}

/// Parses the pods file of the binary (shape in README.md):
/// `[{"namespace", "name", "containers": [{"name", "devices": {resource: [device id]}}]}]`.
pub fn pods_from_json(text: &str) -> Result<Vec<FakePod>, serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pod {
        namespace: String,
        name: String,
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
            containers: p
                .containers
                .into_iter()
                .map(|c| (c.name, c.devices.into_iter().collect()))
                .collect(),
        })
        .collect())
}

impl FakePod {
    fn to_pb(&self) -> pb::PodResources {
        pb::PodResources {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            containers: self
                .containers
                .iter()
                .map(|(container, resources)| pb::ContainerResources {
                    name: container.clone(),
                    devices: resources
                        .iter()
                        .map(|(resource, ids)| pb::ContainerDevices {
                            resource_name: resource.clone(),
                            device_ids: ids.clone(),
                            // A real kubelet fills this in when the device plugin reports NUMA
                            // affinity (NVIDIA's does); the client must not trip over it.
                            topology: Some(pb::TopologyInfo {
                                nodes: vec![pb::NumaNode { id: 0 }],
                            }),
                        })
                        .collect(),
                    cpu_ids: Vec::new(),
                })
                .collect(),
        }
    }
}

fn response_for(pods: &[FakePod]) -> pb::ListPodResourcesResponse {
    pb::ListPodResourcesResponse {
        pod_resources: pods.iter().map(FakePod::to_pb).collect(),
    }
}

/// What `List` answers: the pods, or an error status.
type Shared = Arc<Mutex<Result<pb::ListPodResourcesResponse, tonic::Status>>>;

/// A running fake kubelet. Dropping it stops the server and removes the socket file.
pub struct FakeKubelet {
    socket: PathBuf,
    answer: Shared,
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
        let svc = PodResourcesServer {
            answer: answer.clone(),
        };
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
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Changes what the next `List` calls answer.
    pub fn set_pods(&self, pods: Vec<FakePod>) {
        *self.answer.lock().unwrap() = Ok(response_for(&pods));
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

/// The hand-written equivalent of what tonic-build generates for a service with one unary
/// method: routes by path, answers everything else with `UNIMPLEMENTED`.
#[derive(Clone)]
struct PodResourcesServer {
    answer: Shared,
}

/// The `List` method as a unary service.
struct ListSvc(Shared);

impl tonic::server::UnaryService<pb::ListPodResourcesRequest> for ListSvc {
    type Response = pb::ListPodResourcesResponse;
    type Future = Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, _request: tonic::Request<pb::ListPodResourcesRequest>) -> Self::Future {
        ready(self.0.lock().unwrap().clone().map(tonic::Response::new))
    }
}

impl Service<http::Request<Body>> for PodResourcesServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() == LIST_PATH {
            let svc = ListSvc(self.answer.clone());
            Box::pin(async move {
                let codec = tonic_prost::ProstCodec::<
                    pb::ListPodResourcesResponse,
                    pb::ListPodResourcesRequest,
                >::default();
                Ok(tonic::server::Grpc::new(codec).unary(svc, req).await)
            })
        } else {
            Box::pin(async move {
                Ok(tonic::Status::unimplemented(format!(
                    "fake-kubelet does not implement {}",
                    req.uri().path()
                ))
                .into_http())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pod(ns: &str, name: &str, gpus: &[&str]) -> FakePod {
        FakePod {
            namespace: ns.into(),
            name: name.into(),
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

    async fn call(
        socket: &Path,
        path: &'static str,
    ) -> Result<pb::ListPodResourcesResponse, tonic::Status> {
        let socket = socket.to_path_buf();
        let channel = tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let codec = tonic_prost::ProstCodec::<
            pb::ListPodResourcesRequest,
            pb::ListPodResourcesResponse,
        >::default();
        grpc.unary(
            tonic::Request::new(pb::ListPodResourcesRequest {}),
            http::uri::PathAndQuery::from_static(path),
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
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let _fake = FakeKubelet::start(&socket, vec![]).await;
        let err = call(&socket, "/v1.PodResourcesLister/Get")
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
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
                {"namespace": "ml", "name": "idle"}]"#,
        )
        .unwrap();
        assert_eq!(
            pods,
            [
                pod("ml", "train-0", &["GPU-a", "GPU-b"]).with_container("sidecar"),
                FakePod {
                    namespace: "ml".into(),
                    name: "idle".into(),
                    containers: vec![]
                },
            ]
        );
        assert!(pods_from_json(r#"[{"namespace": "ml", "nam": "x"}]"#).is_err());
    }
}
