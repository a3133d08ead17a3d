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
    env_layer, env_var_for, file_layer, AttributionLayer, BenchLayer, JobsLayer, Layer,
    LedgerLayer, NvmlLayer, SamplingLayer,
};
pub use resolve::resolve;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/gpucost/config.toml";
pub const DEFAULT_LISTEN: &str = "0.0.0.0:10119";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gpucost";
pub const DEFAULT_SOCKET: &str = "/run/gpucost/agent.sock";
pub const DEFAULT_KUBELET_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

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
    pub persist_interval: Duration,
    pub jobs: JobsConfig,
    pub attribution: AttributionConfig,
    pub pricing: Pricing,
    pub bench: BenchConfig,
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttributionConfig {
    pub proc_root: PathBuf,
    /// The GPU -> job mapping directory a Slurm prolog writes; unset: not used.
    pub job_map_dir: Option<PathBuf>,
    /// The kubelet pod-resources socket; unset: Kubernetes attribution is off.
    pub kubelet_socket: Option<PathBuf>,
    pub kubelet_resources: Vec<String>,
    pub kubelet_interval: Duration,
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
    File(PathBuf),
    Env(String),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "the built-in default"),
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
