//! Configuration: the TOML file, then `GPUCOST_*` environment variables, then flags, merged and
//! validated into one [`Config`] before anything starts.
//!
//! Every error names where the bad value came from (the file, the variable or the flag), the
//! key, and what is wrong with it. The default file (`/etc/gpucost/config.toml`) may be absent;
//! a file named with `--config` or `GPUCOST_CONFIG` must exist.
//!
//! `layer.rs` reads the file and the environment into [`Layer`]s (every setting optional);
//! `resolve.rs` merges the layers, highest priority last, and checks each section
//! ([`resolve()`]).

mod layer;
mod resolve;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::account::pricing::{self, Pricing};

pub use layer::{
    env_layer, env_var_for, file_layer, unknown_env_vars, AttributionLayer, BenchLayer, HttpLayer,
    JobsLayer, Layer, LedgerLayer, NvmlLayer, SamplingLayer, OTHER_ENV_PREFIXES, OTHER_ENV_VARS,
};
pub use resolve::resolve;

/// Every built-in default, each defined once: [`resolve()`] uses these, and so should anything
/// else that needs to know a default (a flag's help, a client looking for the agent's socket).
/// `deploy/config.example.toml` states them too, and a test checks that it agrees.
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::time::Duration;

    /// The config file read when neither `--config` nor `GPUCOST_CONFIG` names one; it may be
    /// absent.
    pub const CONFIG_PATH: &str = "/etc/gpucost/config.toml";
    /// The port of `/metrics` and the read-only API.
    pub const PORT: u16 = 10119;
    /// `listen`: every IPv4 address, on [`PORT`].
    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT));
    /// `state_dir`: where the ledger lives.
    pub const STATE_DIR: &str = "/var/lib/gpucost";
    /// `socket`: the unix socket for job registration, also where `gpucost run` and
    /// `gpucost job` look for the agent.
    pub const SOCKET: &str = "/run/gpucost/agent.sock";
    /// `socket_mode`: root and the socket's group may connect.
    pub const SOCKET_MODE: u32 = 0o660;
    /// Where `pod_socket` is usually put (it is off unless set): a folder of its own, which
    /// pods mount.
    pub const POD_SOCKET_EXAMPLE: &str = "/run/gpucost/pods/agent.sock";
    /// `sampling.interval`: how often every GPU is read.
    pub const SAMPLING_INTERVAL: Duration = Duration::from_secs(1);
    /// `sampling.process_interval`, unless `sampling.interval` is longer: see
    /// [`process_interval`].
    pub const PROCESS_INTERVAL: Duration = Duration::from_secs(5);
    /// `nvml.retry_interval`: how often a failed NVML load is tried again.
    pub const NVML_RETRY_INTERVAL: Duration = Duration::from_secs(30);
    /// `ledger.persist_interval`: how often changed totals are written to the ledger.
    pub const PERSIST_INTERVAL: Duration = Duration::from_secs(5);
    /// `jobs.grace_period`: how long a finished job stays on `/metrics`.
    pub const GRACE_PERIOD: Duration = Duration::from_secs(600);
    /// `jobs.vanish_after` is this many process intervals (see [`vanish_after`]) ...
    pub const VANISH_AFTER_PROCESS_INTERVALS: u32 = 3;
    /// ... and at least this long.
    pub const VANISH_AFTER_MIN: Duration = Duration::from_secs(15);
    /// `jobs.max_running_per_user`: running registered jobs one user may have on a node.
    pub const MAX_RUNNING_PER_USER: u32 = 64;
    /// `jobs.max_running`: running registered jobs on a node, all users together.
    pub const MAX_RUNNING: u32 = 10_000;
    /// `attribution.proc_root`.
    pub const PROC_ROOT: &str = "/proc";
    /// `attribution.cgroup_root`.
    pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
    /// `attribution.scontrol_interval`: a node asks its controller about each job this often
    /// (a thousand nodes of eight jobs: 27 calls a second to slurmctld).
    pub const SCONTROL_INTERVAL: Duration = Duration::from_secs(300);
    /// `attribution.kubelet_socket`: the kubelet's pod-resources socket.
    pub const KUBELET_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
    /// `attribution.kubelet_resources`: the resource names NVIDIA's device plugin registers GPUs
    /// under: whole GPUs and their time-slicing or MPS replicas (`nvidia.com/gpu`, or
    /// `nvidia.com/gpu.shared` with the plugin's `renameByDefault`), and MIG devices with its
    /// "mixed" strategy (`nvidia.com/mig-<profile>`). A name ending in `*` is a prefix.
    pub const KUBELET_RESOURCES: &[&str] = &[
        "nvidia.com/gpu",
        "nvidia.com/gpu.shared",
        "nvidia.com/mig-*",
    ];
    /// `attribution.kubelet_checkpoint`: the kubelet's device-manager checkpoint, where the
    /// UIDs of the pods that hold devices are.
    pub const KUBELET_CHECKPOINT: &str =
        "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint";
    /// `attribution.kubelet_interval`: how often the kubelet is asked.
    pub const KUBELET_INTERVAL: Duration = Duration::from_secs(10);
    /// `bench.interval`: how often each idle GPU is benchmarked.
    pub const BENCH_INTERVAL: Duration = Duration::from_secs(86_400);
    /// `bench.min_ratio`: the share of its datasheet peak below which a GPU is flagged.
    pub const BENCH_MIN_RATIO: f64 = 0.85;
    /// `http.max_connections`: TCP connections open at once. A node has a few Prometheus
    /// servers and the odd curl as clients; 256 leaves most of systemd's default soft limit of
    /// 1,024 open files to the job socket, the ledger and the GPUs.
    pub const HTTP_MAX_CONNECTIONS: usize = 256;
    /// `http.header_timeout`: how long a request's line and headers may take to arrive, from
    /// the moment the connection waits for them (its opening, or the end of the previous
    /// response).
    pub const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// `http.idle_timeout`: how long a connection may stay silent while no request of its own
    /// is being answered.
    pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
    /// `http.hide_identities`: off, so the JSON API shows what it always has.
    pub const HTTP_HIDE_IDENTITIES: bool = false;

    /// The default `sampling.process_interval` for a given `sampling.interval`: processes are
    /// never read more often than the GPUs.
    pub fn process_interval(sampling_interval: Duration) -> Duration {
        PROCESS_INTERVAL.max(sampling_interval)
    }

    /// The default `jobs.vanish_after` for a given `sampling.process_interval`: long enough that
    /// a job is seen missing in a few process reads in a row before it is ended.
    pub fn vanish_after(process_interval: Duration) -> Duration {
        (process_interval * VANISH_AFTER_PROCESS_INTERVALS).max(VANISH_AFTER_MIN)
    }
}

/// The validated configuration of `gpucost agent`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub sampling: Sampling,
    pub nvml: NvmlConfig,
    /// `demo` or a scenario file: run on a simulated node instead of NVML.
    pub simulate: Option<String>,
    /// Where the ledger lives.
    pub state_dir: PathBuf,
    /// The unix socket for job registration (mutations).
    pub socket: PathBuf,
    pub socket_mode: u32,
    /// The socket for pods (progress of the caller's own job only), in a folder without the
    /// job socket; `None`: off.
    pub pod_socket: Option<PathBuf>,
    pub persist_interval: Duration,
    pub jobs: JobsConfig,
    pub attribution: AttributionConfig,
    pub pricing: Pricing,
    pub bench: BenchConfig,
    pub http: HttpConfig,
}

/// The TCP port's limits (`[http]`) and what its JSON API shows.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// TCP connections open at once; beyond it a new connection replaces the quietest one.
    pub max_connections: usize,
    /// A request's line and headers must arrive within this of the connection waiting for them.
    pub header_timeout: Duration,
    /// A connection silent this long, with no request of its own being answered, is closed.
    /// Not longer than `header_timeout`.
    pub idle_timeout: Duration,
    /// Leave user, uid, pids and labels out of the JSON API.
    pub hide_identities: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    /// Benchmark each GPU at start and this often (only while no process uses it); zero: never.
    pub interval: Duration,
    /// A GPU measuring below this share of its expected rate is flagged.
    pub min_ratio: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobsConfig {
    /// How long a finished job stays on /metrics.
    pub grace_period: Duration,
    /// How long a job found by attribution may go unseen before it ends as `unknown`.
    pub vanish_after: Duration,
    /// Job labels exported on `gpucost_job_info` (as `label_KEY`).
    pub export_labels: Vec<String>,
    /// Most running registered jobs of one user on this node; a registration past it is refused
    /// (429). Root (the scheduler's hooks) is not capped per user.
    pub max_running_per_user: u32,
    /// Most running registered jobs on this node, all users (root too) together; a registration
    /// past it is refused (429).
    pub max_running: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttributionConfig {
    pub proc_root: PathBuf,
    /// The cgroup file system, where a Slurm job whose epilog was lost is seen gone.
    pub cgroup_root: PathBuf,
    /// How often to ask `scontrol` about Slurm jobs with no end reported; zero: never.
    pub scontrol_interval: Duration,
    /// The GPU -> job mapping directory a Slurm prolog writes; unset: not used.
    pub job_map_dir: Option<PathBuf>,
    /// The kubelet pod-resources socket; unset: Kubernetes attribution is off.
    pub kubelet_socket: Option<PathBuf>,
    pub kubelet_resources: Vec<String>,
    /// The kubelet's device-manager checkpoint (pod UIDs, for pods sharing a GPU); unset: not
    /// read.
    pub kubelet_checkpoint: Option<PathBuf>,
    pub kubelet_interval: Duration,
    /// Whether to watch this node's pods through the Kubernetes API.
    pub kube_api: KubeApi,
    /// The node whose pods are watched; unset: `$NODE_NAME` (the DaemonSet sets it from
    /// `spec.nodeName`), else the host name.
    pub kube_node_name: Option<String>,
    /// (job label, pod label): a job takes its pod's label under another name.
    pub kube_labels: Vec<(String, String)>,
}

/// `attribution.kube_api`: whether the agent watches its node's pods through the Kubernetes
/// API (their owners, labels and how they ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeApi {
    /// In a cluster (a pod with a service account: `KUBERNETES_SERVICE_HOST` is set), yes.
    Auto,
    /// Yes: the in-cluster service account, else the kubeconfig (`KUBECONFIG`, `~/.kube/config`).
    On,
    Off,
}

impl KubeApi {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(KubeApi::Auto),
            "on" => Some(KubeApi::On),
            "off" => Some(KubeApi::Off),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub interval: Duration,
    /// Process lists are slower to read than the rest, so they are read less often.
    pub process_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NvmlConfig {
    /// Path of libnvidia-ml; `None` lets the dynamic loader find `libnvidia-ml.so.1`.
    pub lib: Option<PathBuf>,
    pub retry_interval: Duration,
}

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Default,
    /// The per-user places of an agent not run as root (state and socket).
    UserDefault,
    File(PathBuf),
    Env(String),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "the built-in default"),
            Origin::UserDefault => write!(f, "the default for a user who is not root"),
            Origin::File(p) => write!(f, "config file {}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(name) => write!(f, "flag --{name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid configuration in {origin}: {key}: {problem}")]
pub struct ConfigError {
    pub origin: Origin,
    /// The key (`sampling.interval`), or "file" for problems with the file as a whole.
    pub key: String,
    pub problem: String,
}

/// The documented example config, shipped in the binary.
pub const EXAMPLE: &str = include_str!("../../../deploy/config.example.toml");

/// The `[pricing]` of the example config (the simulated node's prices when none are set).
pub fn example_pricing() -> Pricing {
    let doc: toml::Table = toml::from_str(EXAMPLE).expect("the example config is valid TOML");
    pricing::from_toml_value(&doc["pricing"]).expect("the example pricing is valid")
}
