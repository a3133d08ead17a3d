//! Kubernetes attribution through the real binary: the fake kubelet serves the pod-resources
//! API (and writes the device-manager checkpoint with the pods' UIDs), the fake NVML library
//! lists the processes on a GPU, and a fake `/proc` puts each process in its pod's cgroup.

use std::path::Path;
use std::time::{Duration, Instant};

use fake_kubelet::{FakeKubelet, FakePod};
use gpucost::identity::procfs::write_fixture;
use gpucost_core::attribute::process::ProcInfo;
use gpucost_integration_tests::{fake_nvml_lib, write_scenario, Agent};

/// One H100 shared by two pods' processes: pod a's at 45% SM, pod b's, an MPS client, at 15%.
const SHARED: &str = r#"
name = "time-sliced"
duration_s = 600
ripple = 0.0
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[job]]
name = "train-a"
pid = 5001
gpus = [0]
[[job.phase]]
seconds = 600
utilization = 0.45
power_w = 300
memory_mib = 10000
[[job]]
name = "train-b"
pid = 6001
gpus = [0]
context = "mps"
[[job.phase]]
seconds = 600
utilization = 0.15
power_w = 150
memory_mib = 30000
"#;

const UID_A: &str = "0f9a2c4e-5b1d-4c3a-9e8f-7a6b5c4d3e2f";
const UID_B: &str = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";

fn pod(name: &str, uid: &str, device: &str) -> FakePod {
    FakePod {
        namespace: "ml".into(),
        name: name.into(),
        uid: Some(uid.into()),
        containers: vec![(
            "main".into(),
            vec![("nvidia.com/gpu".into(), vec![device.into()])],
        )],
    }
}

fn process(proc_root: &Path, pid: u32, cgroup: &str) {
    let p = ProcInfo {
        pid,
        ppid: 1,
        uid: 0,
        comm: "python3".into(),
        start_ticks: 100 + u64::from(pid),
        ..ProcInfo::default()
    };
    write_fixture(proc_root, &p, cgroup, &[]);
}

fn gpu_seconds(agent: &Agent, id: &str) -> Option<f64> {
    let (status, body) = agent.get(&format!("/api/v1/jobs/{}", id.replace('/', "%2F")));
    if status != 200 {
        return None;
    }
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    j["usage"]["gpu_seconds"].as_f64()
}

/// The two pods' GPU seconds once pod b has used a second of it, with the three pods (a, b, c)
/// holding `devices` (`{uuid}` stands for the GPU's UUID), and the kubelet's checkpoint
/// written or not; and the agent's log.
fn run_shared(devices: [&str; 3], checkpoint: bool) -> (f64, f64, Option<f64>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "shared.toml", SHARED);
    let uuid = gpucost_sim::SimulatedNode::new(gpucost_sim::Scenario::load(&scenario).unwrap())
        .uuid(0)
        .to_string();

    // Each process in its pod's cgroup: pod a under the systemd driver (cgroup v2), pod b under
    // cgroupfs (cgroup v1), as https://kubernetes.io/docs/concepts/architecture/cgroups/ and
    // the kubelet name them.
    let proc_root = dir.path().join("proc");
    let uid_a_systemd = UID_A.replace('-', "_");
    process(
        &proc_root,
        5001,
        &format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_a_systemd}.slice/cri-containerd-4c1f.scope\n"),
    );
    process(
        &proc_root,
        6001,
        &format!("12:pids:/kubepods/besteffort/pod{UID_B}/9e8d\n4:memory:/kubepods/besteffort/pod{UID_B}/9e8d\n"),
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let socket = dir.path().join("kubelet.sock");
    let checkpoint_file = dir.path().join("kubelet_internal_checkpoint");
    let device = |i: usize| devices[i].replace("{uuid}", &uuid);
    let pods = vec![
        pod("b", UID_B, &device(1)),
        pod("a", UID_A, &device(0)),
        pod("c", "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a", &device(2)),
    ];
    let fake = rt.block_on(FakeKubelet::start(&socket, pods));
    if checkpoint {
        fake.write_checkpoint_to(&checkpoint_file);
    }

    let agent = Agent::start(
        &["--nvml-lib", fake_nvml_lib().to_str().unwrap()],
        &[
            ("GPUCOST_FAKE_NVML_SCENARIO", scenario.as_str()),
            ("GPUCOST_SAMPLING_INTERVAL", "200ms"),
            ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "200ms"),
            ("GPUCOST_ATTRIBUTION_PROC_ROOT", proc_root.to_str().unwrap()),
            (
                "GPUCOST_ATTRIBUTION_KUBELET_SOCKET",
                socket.to_str().unwrap(),
            ),
            (
                "GPUCOST_ATTRIBUTION_KUBELET_CHECKPOINT",
                checkpoint_file.to_str().unwrap(),
            ),
            ("GPUCOST_ATTRIBUTION_KUBELET_INTERVAL", "200ms"),
        ],
    );

    // Wait until both pods have run a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (a, b) = loop {
        let a = gpu_seconds(&agent, "ml/a");
        let b = gpu_seconds(&agent, "ml/b");
        if let (Some(a), Some(b)) = (a, b) {
            if b > 1.0 {
                break (a, b);
            }
        }
        assert!(
            Instant::now() < deadline,
            "pods a and b not billed: a {a:?}, b {b:?}; jobs: {}\nlog:\n{}",
            agent.get("/api/v1/jobs").1,
            agent.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let c = gpu_seconds(&agent, "ml/c");
    eprintln!("{devices:?}, checkpoint {checkpoint}: GPU seconds a {a:.2}, b {b:.2}, c {c:?}");
    let logs = agent.logs();
    drop(fake);
    (a, b, c, logs)
}

/// Issue 15: two pods time-slicing one GPU (NVIDIA's device plugin hands them replicas
/// `<uuid>::0` and `<uuid>::1`; a third pod holds `<uuid>::2` and runs nothing) are each billed
/// for their own processes' share: pod a 45 / 60, pod b (its process an MPS client) 15 / 60,
/// pod c nothing. Before, the first pod listed took the whole GPU and the others never matched.
#[test]
fn issue_15_pods_time_slicing_a_gpu_are_split_by_their_own_processes() {
    let (a, b, c, _) = run_shared(["{uuid}::0", "{uuid}::1", "{uuid}::2"], true);
    // 3 to 1, within what the two reads' skew allows.
    let ratio = a / b;
    assert!(
        (2.6..=3.4).contains(&ratio),
        "a {a} s, b {b} s: ratio {ratio}"
    );
    // The idle replica's pod pays nothing while the others compute.
    assert_eq!(c.unwrap_or(0.0), 0.0);
}

/// GKE's device plugin names a shared GPU `nvidiaN/vgpuK` (dcgm-exporter's `kubernetes.go`
/// maps the same form): the replicas of GPU 0 are its, split as NVIDIA's replicas are.
#[test]
fn issue_15_gke_shared_gpu_ids_name_their_gpu() {
    let (a, b, _, _) = run_shared(["nvidia0/vgpu0", "nvidia0/vgpu1", "nvidia0/vgpu2"], true);
    let ratio = a / b;
    assert!(
        (2.6..=3.4).contains(&ratio),
        "a {a} s, b {b} s: ratio {ratio}"
    );
}

/// Without the kubelet's checkpoint the pods' UIDs are unknown: the agent says so once, and the
/// processes on the shared GPU are split evenly between the three pods that hold it.
#[test]
fn issue_15_without_the_checkpoint_a_shared_gpu_is_split_evenly() {
    let (a, b, c, logs) = run_shared(["{uuid}::0", "{uuid}::1", "{uuid}::2"], false);
    let ratio = a / b;
    assert!(
        (0.8..=1.25).contains(&ratio),
        "a {a} s, b {b} s: ratio {ratio}"
    );
    assert!(c.unwrap_or(0.0) > 0.5 * b, "c {c:?}, b {b}");
    let said: Vec<_> = logs
        .iter()
        .filter(|l| l.contains("kubelet checkpoint") && l.contains("No such file"))
        .collect();
    assert_eq!(said.len(), 1, "{logs:#?}");
}

const NODE: &str = "gpu-node-1";

/// A pod as the API server serves it (`kubectl get pod -o json`, trimmed), running on `node`.
fn api_pod(name: &str, uid: &str, node: &str, owner: Option<(&str, &str)>) -> serde_json::Value {
    let owners: Vec<serde_json::Value> = owner
        .map(|(kind, owner)| {
            serde_json::json!({
                "apiVersion": "batch/v1",
                "kind": kind,
                "name": owner,
                "uid": "9d8c7b6a-5f4e-4d3c-2b1a-0f9e8d7c6b5a",
                "controller": true,
                "blockOwnerDeletion": true
            })
        })
        .into_iter()
        .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": uid,
            "creationTimestamp": "2026-12-03T09:00:00Z",
            "labels": {"app.kubernetes.io/team": "nlp", "sweep": "lr-3e-4"},
            "ownerReferences": owners
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}}}]
        },
        "status": {
            "phase": "Running",
            "startTime": "2026-12-03T09:00:01Z",
            "containerStatuses": [{
                "name": "main", "ready": true, "restartCount": 0, "started": true,
                "image": "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
                "imageID": "docker.io/pytorch/pytorch@sha256:0f1e2d3c",
                "containerID": "containerd://4c1f",
                "state": {"running": {"startedAt": "2026-12-03T09:00:02Z"}}
            }]
        }
    })
}

/// The pod as it ended: its phase, and its container `terminated` with `exit_code` and
/// `reason`.
fn ended(
    mut pod: serde_json::Value,
    phase: &str,
    exit_code: i32,
    reason: &str,
) -> serde_json::Value {
    pod["status"]["phase"] = phase.into();
    pod["status"]["containerStatuses"][0]["ready"] = false.into();
    pod["status"]["containerStatuses"][0]["state"] = serde_json::json!({"terminated": {
        "exitCode": exit_code, "reason": reason,
        "startedAt": "2026-12-03T09:00:02Z", "finishedAt": "2026-12-03T09:41:07Z",
        "containerID": "containerd://4c1f"
    }});
    pod
}

fn job_json(agent: &Agent, id: &str) -> Option<serde_json::Value> {
    let (status, body) = agent.get(&format!("/api/v1/jobs/{}", id.replace('/', "%2F")));
    (status == 200).then(|| serde_json::from_str(&body).unwrap())
}

fn wait_for_job(
    agent: &Agent,
    id: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(j) = job_json(agent, id).filter(|j| ok(j)) {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {id}: {what}; it is {:?}; jobs: {}\nlog:\n{}",
            job_json(agent, id),
            agent.get("/api/v1/jobs").1,
            agent.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 16, item 6: with the Kubernetes API (a fake API server serving real pod JSON, listed
/// and watched with the node's field selector), a pod of a Job is the Job's job, with its
/// namespace and the labels chosen; the pods' UIDs come from the API (no kubelet checkpoint
/// here), so pods time-slicing a GPU are still billed apart; an OOM-killed pod's job fails for
/// it, a deleted pod's job is cancelled, and a watch the server expired is listed again.
#[test]
fn issue_16_pods_from_the_api_have_owners_labels_and_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "shared.toml", SHARED);
    let uuid = gpucost_sim::SimulatedNode::new(gpucost_sim::Scenario::load(&scenario).unwrap())
        .uuid(0)
        .to_string();
    let proc_root = dir.path().join("proc");
    process(
        &proc_root,
        5001,
        &format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/cri-containerd-4c1f.scope\n",
            UID_A.replace('-', "_")
        ),
    );
    process(
        &proc_root,
        6001,
        &format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/cri-containerd-9e8d.scope\n",
            UID_B.replace('-', "_")
        ),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let socket = dir.path().join("kubelet.sock");
    let kubelet_pod = |name: &str, replica: u32| FakePod {
        namespace: "ml".into(),
        name: name.into(),
        uid: None,
        containers: vec![(
            "main".into(),
            vec![("nvidia.com/gpu".into(), vec![format!("{uuid}::{replica}")])],
        )],
    };
    let _kubelet = rt.block_on(FakeKubelet::start(
        &socket,
        vec![kubelet_pod("train-x7k2p", 0), kubelet_pod("notebook", 1)],
    ));
    let train = api_pod("train-x7k2p", UID_A, NODE, Some(("Job", "train")));
    let notebook = api_pod("notebook", UID_B, NODE, None);
    let elsewhere = api_pod(
        "other",
        "1a2b3c4d-0000-4000-8000-000000000001",
        "gpu-node-2",
        None,
    );
    let api = rt.block_on(fake_kubelet::api::FakeApiServer::start(vec![
        train.clone(),
        notebook.clone(),
        elsewhere,
    ]));
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();

    let agent = Agent::start(
        &["--nvml-lib", fake_nvml_lib().to_str().unwrap()],
        &[
            ("GPUCOST_FAKE_NVML_SCENARIO", scenario.as_str()),
            ("GPUCOST_SAMPLING_INTERVAL", "200ms"),
            ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "200ms"),
            ("GPUCOST_ATTRIBUTION_PROC_ROOT", proc_root.to_str().unwrap()),
            (
                "GPUCOST_ATTRIBUTION_KUBELET_SOCKET",
                socket.to_str().unwrap(),
            ),
            ("GPUCOST_ATTRIBUTION_KUBELET_CHECKPOINT", "off"),
            ("GPUCOST_ATTRIBUTION_KUBELET_INTERVAL", "200ms"),
            ("GPUCOST_ATTRIBUTION_KUBE_API", "on"),
            (
                "GPUCOST_ATTRIBUTION_KUBE_LABELS",
                "team=app.kubernetes.io/team",
            ),
            ("GPUCOST_JOBS_EXPORT_LABELS", "team,sweep,namespace"),
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("NODE_NAME", NODE),
        ],
    );

    let j = wait_for_job(&agent, "ml/job/train", "billed as its Job", |j| {
        j["usage"]["gpu_seconds"].as_f64() > Some(1.0)
    });
    assert_eq!(j["name"], "train");
    assert_eq!(j["scheduler"], "kubernetes");
    assert_eq!(j["labels"]["namespace"], "ml");
    assert_eq!(
        j["labels"]["team"], "nlp",
        "mapped from app.kubernetes.io/team"
    );
    assert_eq!(
        j["labels"]["sweep"], "lr-3e-4",
        "an export label taken by its name"
    );
    let a = j["usage"]["gpu_seconds"].as_f64().unwrap();
    let b = wait_for_job(&agent, "ml/notebook", "billed", |j| {
        j["usage"]["gpu_seconds"].as_f64() > Some(0.2)
    })["usage"]["gpu_seconds"]
        .as_f64()
        .unwrap();
    // 45% to 15% of SM: the UIDs from the API bind each process to its pod.
    assert!(
        (2.0..=4.5).contains(&(a / b)),
        "train {a} s, notebook {b} s"
    );
    assert!(
        job_json(&agent, "ml/train-x7k2p").is_none(),
        "the pod is not a job of its own"
    );
    assert!(job_json(&agent, "ml/other").is_none());

    // The server forgets its history: the agent lists again and goes on watching.
    api.expire();
    let deadline = Instant::now() + Duration::from_secs(20);
    while api
        .requests()
        .iter()
        .filter(|r| !r.contains("watch"))
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no new list after 410: {:?}",
            api.requests()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The trainer is OOM-killed: its Job's job failed, for that reason.
    api.apply(ended(train, "Failed", 137, "OOMKilled"));
    let j = wait_for_job(&agent, "ml/job/train", "failed", |j| {
        j["outcome"] == "failed"
    });
    assert_eq!(
        (j["reason"].as_str(), j["exit_code"].as_i64()),
        (Some("oom"), Some(137))
    );

    // The notebook is deleted by its user (kubectl delete: SIGTERM, exit 143): cancelled.
    let mut deleting = notebook;
    deleting["metadata"]["deletionTimestamp"] = "2026-12-03T09:50:00Z".into();
    api.apply(deleting.clone());
    api.delete(ended(deleting, "Failed", 143, "Error"));
    let j = wait_for_job(&agent, "ml/notebook", "cancelled", |j| {
        j["outcome"] == "cancelled"
    });
    assert!(j["reason"].is_null(), "{j}");

    let metrics = agent.get("/metrics").1;
    assert!(
        metrics.lines().any(|l| l.starts_with("gpucost_job_info{")
            && l.contains("job_id=\"ml/job/train\"")
            && l.contains("team=\"nlp\"")
            && l.contains("namespace=\"ml\"")),
        "{metrics}"
    );
    // Only this node's pods were ever asked for.
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.contains("fieldSelector=spec.nodeName%3Dgpu-node-1")),
        "{requests:?}"
    );
}
