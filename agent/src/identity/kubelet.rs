//! Kubernetes attribution: asks the kubelet which pod and container holds which GPU.
//!
//! Owns the client side of the kubelet pod-resources gRPC API (service `v1.PodResourcesLister`,
//! rpc `List`) over its unix socket, default `gpucost_core::config::defaults::KUBELET_SOCKET`. The messages and the client are
//! generated from the proto in `gpucost-podresources`, which the fake kubelet serves too.
//!
//! NVIDIA's device plugin registers GPUs as resource `nvidia.com/gpu` with the GPU UUID (`GPU-…`)
//! as device id, or the MIG device id (`MIG-…`) for MIG slices; with the plugin's "mixed" MIG
//! strategy the resource names are `nvidia.com/mig-<profile>`, which the caller adds to
//! `resource_names`.
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

fn gpus_from(response: ListPodResourcesResponse, resource_names: &[String]) -> Vec<PodGpu> {
    let mut out = Vec::new();
    for pod in response.pod_resources {
        for container in pod.containers {
            for devices in container.devices {
                if !resource_names.contains(&devices.resource_name) {
                    continue;
                }
                for device_id in devices.device_ids {
                    out.push(PodGpu {
                        namespace: pod.namespace.clone(),
                        pod: pod.name.clone(),
                        container: container.name.clone(),
                        device_id,
                    });
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
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
