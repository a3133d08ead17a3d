//! Configuration: the TOML file, then `GPUCOST_*` environment variables, then flags, merged and
//! validated into one [`Config`] before anything starts.
//!
//! Every error names where the bad value came from (the file, the variable or the flag), the
//! key, and what is wrong with it. The default file (`/etc/gpucost/config.toml`) may be absent;
//! a file named with `--config` or `GPUCOST_CONFIG` must exist.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::account::pricing::{self, Pricing};

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

/// One layer of settings, every field optional; the file, the environment and the flags each
/// produce one.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub listen: Option<String>,
    pub simulate: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    /// Octal text, e.g. "0660".
    pub socket_mode: Option<String>,
    #[serde(default)]
    pub sampling: SamplingLayer,
    #[serde(default)]
    pub nvml: NvmlLayer,
    #[serde(default)]
    pub ledger: LedgerLayer,
    #[serde(default)]
    pub jobs: JobsLayer,
    #[serde(default)]
    pub attribution: AttributionLayer,
    /// Validated by `account::pricing`; only read from the file.
    pub pricing: Option<toml::Value>,
    #[serde(default)]
    pub bench: BenchLayer,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BenchLayer {
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    pub min_ratio: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LedgerLayer {
    #[serde(default, with = "humantime_serde")]
    pub persist_interval: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobsLayer {
    #[serde(default, with = "humantime_serde")]
    pub grace_period: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub vanish_after: Option<Duration>,
    pub export_labels: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttributionLayer {
    pub proc_root: Option<PathBuf>,
    pub job_map_dir: Option<PathBuf>,
    /// Path of the kubelet socket, or "off".
    pub kubelet_socket: Option<PathBuf>,
    pub kubelet_resources: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    pub kubelet_interval: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SamplingLayer {
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub process_interval: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NvmlLayer {
    pub lib: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub retry_interval: Option<Duration>,
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
pub const EXAMPLE: &str = include_str!("../../deploy/config.example.toml");

/// The `[pricing]` of the example config (the simulated node's prices when none are set).
pub fn example_pricing() -> Pricing {
    let doc: toml::Table = toml::from_str(EXAMPLE).expect("the example config is valid TOML");
    pricing::from_toml_value(&doc["pricing"]).expect("the example pricing is valid")
}

/// Keys settable from the environment: `GPUCOST_` + the key in upper case, dots as underscores.
const ENV_KEYS: &[&str] = &[
    "listen",
    "simulate",
    "state_dir",
    "socket",
    "socket_mode",
    "sampling.interval",
    "sampling.process_interval",
    "nvml.lib",
    "nvml.retry_interval",
    "ledger.persist_interval",
    "jobs.grace_period",
    "jobs.vanish_after",
    "attribution.proc_root",
    "attribution.job_map_dir",
    "attribution.kubelet_socket",
    "bench.interval",
];

pub fn env_var_for(key: &str) -> String {
    format!("GPUCOST_{}", key.replace('.', "_").to_uppercase())
}

/// Reads the config file layer. `explicit` is true when the user named the file, in which case
/// it must exist.
pub fn file_layer(path: &Path, explicit: bool) -> Result<Layer, ConfigError> {
    let origin = Origin::File(path.to_path_buf());
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(Layer::default())
        }
        Err(e) => {
            return Err(ConfigError {
                origin,
                key: "file".into(),
                problem: format!("cannot read it: {e}"),
            })
        }
    };
    toml::from_str(&text).map_err(|e| ConfigError {
        origin,
        key: toml_error_key(&e, &text),
        problem: e.message().to_string().trim().to_string() + &toml_error_position(&e, &text),
    })
}

/// The dotted key a TOML error points at, found from the error's position in the text: the key
/// on that line, under the last `[table]` header above it.
fn toml_error_key(e: &toml::de::Error, text: &str) -> String {
    let Some(span) = e.span() else {
        return "file".into();
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if line.starts_with('[') {
        return line
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string();
    }
    let key = match line.split_once('=') {
        Some((k, _)) => k.trim().trim_matches('"').to_string(),
        None => return "file".into(),
    };
    match table {
        Some(t) => format!("{t}.{key}"),
        None => key,
    }
}

fn toml_error_position(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

/// Reads the environment layer through `get` (the process environment in production).
pub fn env_layer(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(Origin, Layer)>, ConfigError> {
    let mut layers = Vec::new();
    for key in ENV_KEYS {
        let var = env_var_for(key);
        let Some(value) = get(&var) else { continue };
        let origin = Origin::Env(var);
        let (table, leaf) = match key.split_once('.') {
            Some((t, l)) => (Some(t), l),
            None => (None, *key),
        };
        let mut leaf_table = toml::Table::new();
        leaf_table.insert(leaf.to_string(), toml::Value::String(value));
        let doc = match table {
            Some(t) => {
                let mut outer = toml::Table::new();
                outer.insert(t.to_string(), toml::Value::Table(leaf_table));
                outer
            }
            None => leaf_table,
        };
        let layer: Layer = doc.try_into().map_err(|e: toml::de::Error| ConfigError {
            origin: origin.clone(),
            key: key.to_string(),
            problem: e.message().trim().to_string(),
        })?;
        layers.push((origin, layer));
    }
    Ok(layers)
}

/// Picks the value of the highest-priority layer that sets it (layers are lowest first).
fn pick<T: Clone>(
    layers: &[(Origin, Layer)],
    get: impl Fn(&Layer) -> Option<T>,
    default: Option<T>,
) -> (Option<T>, Origin) {
    for (origin, layer) in layers.iter().rev() {
        if let Some(v) = get(layer) {
            return (Some(v), origin.clone());
        }
    }
    (default, Origin::Default)
}

/// Merges layers (lowest priority first: file, environment, flags) and validates the result.
pub fn resolve(layers: &[(Origin, Layer)]) -> Result<Config, ConfigError> {
    let err = |origin: Origin, key: &str, problem: String| ConfigError {
        origin,
        key: key.to_string(),
        problem,
    };

    let (listen, origin) = pick(
        layers,
        |l| l.listen.clone(),
        Some(DEFAULT_LISTEN.to_string()),
    );
    let listen_text = listen.unwrap_or_default();
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        err(
            origin,
            "listen",
            format!("{listen_text:?} is not an address:port such as 0.0.0.0:10119 or [::1]:10119"),
        )
    })?;

    let in_range =
        |key: &str, (v, origin): (Option<Duration>, Origin), min: Duration, max: Duration| {
            let v = v.expect("every duration has a default");
            if v < min || v > max {
                return Err(err(
                    origin,
                    key,
                    format!(
                        "{} is out of range: allowed {} to {}",
                        humantime::format_duration(v),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                ));
            }
            Ok(v)
        };
    let interval = in_range(
        "sampling.interval",
        pick(
            layers,
            |l| l.sampling.interval,
            Some(Duration::from_secs(1)),
        ),
        Duration::from_millis(10),
        Duration::from_secs(3600),
    )?;
    let (pi, pi_origin) = pick(
        layers,
        |l| l.sampling.process_interval,
        Some(Duration::from_secs(5).max(interval)),
    );
    let process_interval = in_range(
        "sampling.process_interval",
        (pi, pi_origin.clone()),
        Duration::from_millis(10),
        Duration::from_secs(3600),
    )?;
    if process_interval < interval {
        return Err(err(
            pi_origin,
            "sampling.process_interval",
            format!(
                "{} is shorter than sampling.interval ({}); processes cannot be read more often \
                 than the GPUs",
                humantime::format_duration(process_interval),
                humantime::format_duration(interval)
            ),
        ));
    }
    let retry_interval = in_range(
        "nvml.retry_interval",
        pick(
            layers,
            |l| l.nvml.retry_interval,
            Some(Duration::from_secs(30)),
        ),
        Duration::from_millis(100),
        Duration::from_secs(86_400),
    )?;

    let (lib, lib_origin) = pick(layers, |l| l.nvml.lib.clone(), None);
    if let Some(p) = &lib {
        if p.as_os_str().is_empty() {
            return Err(err(lib_origin, "nvml.lib", "is empty".into()));
        }
    }
    let (simulate, sim_origin) = pick(layers, |l| l.simulate.clone(), None);
    if let Some(s) = &simulate {
        if s.trim().is_empty() {
            return Err(err(
                sim_origin,
                "simulate",
                "is empty; use `demo` or the path of a scenario file".into(),
            ));
        }
    }
    let persist_interval = in_range(
        "ledger.persist_interval",
        pick(
            layers,
            |l| l.ledger.persist_interval,
            Some(Duration::from_secs(5)),
        ),
        Duration::from_millis(10),
        Duration::from_secs(3600),
    )?;
    let grace_period = in_range(
        "jobs.grace_period",
        pick(
            layers,
            |l| l.jobs.grace_period,
            Some(Duration::from_secs(600)),
        ),
        Duration::ZERO,
        Duration::from_secs(7 * 86_400),
    )?;
    let vanish_after = in_range(
        "jobs.vanish_after",
        pick(
            layers,
            |l| l.jobs.vanish_after,
            Some((process_interval * 3).max(Duration::from_secs(15))),
        ),
        Duration::ZERO,
        Duration::from_secs(86_400),
    )?;
    let (export_labels, labels_origin) =
        pick(layers, |l| l.jobs.export_labels.clone(), Some(Vec::new()));
    let export_labels = export_labels.unwrap_or_default();
    for k in &export_labels {
        let ok = !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && !k.starts_with("__")
            && !crate::jobs::RESERVED_LABELS.contains(&k.as_str());
        if !ok {
            return Err(err(
                labels_origin,
                "jobs.export_labels",
                format!("{k:?} cannot be a label of gpucost_job_info (letters, digits and _, not starting with a digit or __, and none of {:?})", crate::jobs::RESERVED_LABELS),
            ));
        }
    }
    let (mode_text, mode_origin) =
        pick(layers, |l| l.socket_mode.clone(), Some("0660".to_string()));
    let mode_text = mode_text.unwrap_or_default();
    let socket_mode = u32::from_str_radix(mode_text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            err(
                mode_origin,
                "socket_mode",
                format!("{mode_text:?} is not an octal file mode such as \"0660\""),
            )
        })?;
    let (kubelet_socket, _) = pick(layers, |l| l.attribution.kubelet_socket.clone(), None);
    let kubelet_socket = match kubelet_socket {
        Some(p) if p.as_os_str() == "off" => None,
        Some(p) => Some(p),
        None => Some(PathBuf::from(DEFAULT_KUBELET_SOCKET)),
    };
    let kubelet_interval = in_range(
        "attribution.kubelet_interval",
        pick(
            layers,
            |l| l.attribution.kubelet_interval,
            Some(Duration::from_secs(10)),
        ),
        Duration::from_millis(100),
        Duration::from_secs(3600),
    )?;
    let (pricing_value, pricing_origin) = pick(layers, |l| l.pricing.clone(), None);
    let pricing = match pricing_value {
        Some(v) => {
            pricing::from_toml_value(&v).map_err(|e| err(pricing_origin, &e.key, e.problem))?
        }
        // A demo with no prices would show no money: it takes the example config's prices.
        None if simulate.is_some() => example_pricing(),
        None => Pricing::default(),
    };
    let bench_interval = in_range(
        "bench.interval",
        pick(
            layers,
            |l| l.bench.interval,
            Some(Duration::from_secs(86_400)),
        ),
        Duration::ZERO,
        Duration::from_secs(365 * 86_400),
    )?;
    let (min_ratio, mr_origin) = pick(layers, |l| l.bench.min_ratio, Some(0.85));
    let min_ratio = min_ratio.unwrap_or(0.85);
    if !(0.0..=1.0).contains(&min_ratio) {
        return Err(err(
            mr_origin,
            "bench.min_ratio",
            format!("must be in [0, 1], got {min_ratio}"),
        ));
    }
    Ok(Config {
        bench: BenchConfig {
            interval: bench_interval,
            min_ratio,
        },
        listen,
        sampling: Sampling {
            interval,
            process_interval,
        },
        nvml: NvmlConfig {
            lib,
            retry_interval,
        },
        simulate,
        state_dir: pick(
            layers,
            |l| l.state_dir.clone(),
            Some(DEFAULT_STATE_DIR.into()),
        )
        .0
        .unwrap_or_default(),
        socket: pick(layers, |l| l.socket.clone(), Some(DEFAULT_SOCKET.into()))
            .0
            .unwrap_or_default(),
        socket_mode,
        persist_interval,
        jobs: JobsConfig {
            grace_period,
            vanish_after,
            export_labels,
        },
        attribution: AttributionConfig {
            proc_root: pick(
                layers,
                |l| l.attribution.proc_root.clone(),
                Some("/proc".into()),
            )
            .0
            .unwrap_or_default(),
            job_map_dir: pick(layers, |l| l.attribution.job_map_dir.clone(), None).0,
            kubelet_socket,
            kubelet_resources: pick(
                layers,
                |l| l.attribution.kubelet_resources.clone(),
                Some(vec!["nvidia.com/gpu".to_string()]),
            )
            .0
            .unwrap_or_default(),
            kubelet_interval,
        },
        pricing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Layer, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        file_layer(&path, true)
    }

    fn from_file(text: &str) -> Result<Config, ConfigError> {
        let layer = file(text)?;
        resolve(&[(Origin::File("config.toml".into()), layer)])
    }

    #[test]
    fn the_example_config_is_valid_and_complete() {
        let c = from_file(EXAMPLE).unwrap();
        assert_eq!(c.pricing, example_pricing());
        assert_eq!(c.pricing.hourly_price("NVIDIA H100 80GB HBM3"), 4.0);
        assert_eq!(c.jobs.export_labels, ["team", "project"]);
        assert_eq!(c.socket_mode, 0o660);
        // Every key a layer accepts appears in the example (commented out or not).
        for key in ENV_KEYS {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                EXAMPLE.contains(&format!("{leaf} =")),
                "{key} is not documented in the example"
            );
        }
    }

    #[test]
    fn defaults() {
        let c = resolve(&[]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:10119".parse().unwrap());
        assert_eq!(c.sampling.interval, Duration::from_secs(1));
        assert_eq!(c.sampling.process_interval, Duration::from_secs(5));
        assert_eq!(c.nvml.retry_interval, Duration::from_secs(30));
        assert_eq!(c.nvml.lib, None);
        assert_eq!(c.simulate, None);
    }

    #[test]
    fn full_file() {
        let c = from_file(
            r#"
listen = "127.0.0.1:9999"
simulate = "demo"
[sampling]
interval = "500ms"
process_interval = "10s"
[nvml]
lib = "/opt/nvidia/libnvidia-ml.so.1"
retry_interval = "1m"
"#,
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(c.sampling.interval, Duration::from_millis(500));
        assert_eq!(c.sampling.process_interval, Duration::from_secs(10));
        assert_eq!(c.nvml.lib, Some("/opt/nvidia/libnvidia-ml.so.1".into()));
        assert_eq!(c.nvml.retry_interval, Duration::from_secs(60));
        assert_eq!(c.simulate.as_deref(), Some("demo"));
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let file = Layer {
            listen: Some("127.0.0.1:1".into()),
            sampling: SamplingLayer {
                interval: Some(Duration::from_secs(2)),
                process_interval: Some(Duration::from_secs(20)),
            },
            ..Layer::default()
        };
        let env = env_layer(|v| match v {
            "GPUCOST_LISTEN" => Some("127.0.0.1:2".into()),
            "GPUCOST_SAMPLING_INTERVAL" => Some("3s".into()),
            _ => None,
        })
        .unwrap();
        let flags = Layer {
            listen: Some("127.0.0.1:3".into()),
            ..Layer::default()
        };
        let mut layers = vec![(Origin::File("f".into()), file)];
        layers.extend(env);
        layers.push((Origin::Flag("listen"), flags));
        let c = resolve(&layers).unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.sampling.interval, Duration::from_secs(3));
        assert_eq!(c.sampling.process_interval, Duration::from_secs(20));
    }

    /// (file text, expected pieces of the message)
    #[test]
    fn bad_files_name_file_key_and_problem() {
        let cases: &[(&str, &[&str])] = &[
            ("listen = 10119", &["config.toml", "listen", "invalid type"]),
            (
                "listen = \"localhost\"",
                &["config.toml", "listen", "not an address:port"],
            ),
            (
                "[sampling]\ninterval = \"fast\"",
                &["config.toml", "sampling.interval", "line 2"],
            ),
            (
                "[sampling]\ninterval = \"0s\"",
                &["sampling.interval", "out of range"],
            ),
            (
                "[sampling]\ninterval = \"10s\"\nprocess_interval = \"1s\"",
                &[
                    "sampling.process_interval",
                    "shorter than sampling.interval",
                ],
            ),
            (
                "[sampling]\nintervall = \"1s\"",
                &["sampling.intervall", "unknown field"],
            ),
            ("colour = \"red\"", &["colour", "unknown field"]),
            ("listen = [", &["config.toml", "line 1"]),
            (
                "[nvml]\nretry_interval = \"1ms\"",
                &["nvml.retry_interval", "out of range"],
            ),
            ("simulate = \"  \"", &["simulate", "is empty"]),
        ];
        for (text, want) in cases {
            let msg = from_file(text).unwrap_err().to_string();
            for w in *want {
                assert!(msg.contains(w), "{text:?}: expected {w:?} in {msg:?}");
            }
        }
    }

    #[test]
    fn bad_env_names_the_variable() {
        let msg = env_layer(|v| (v == "GPUCOST_SAMPLING_INTERVAL").then(|| "soon".into()))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("GPUCOST_SAMPLING_INTERVAL"), "{msg}");
        assert!(msg.contains("sampling.interval"), "{msg}");
    }

    #[test]
    fn missing_default_file_is_fine_but_named_file_is_not() {
        let p = Path::new("/nonexistent/gpucost.toml");
        assert_eq!(file_layer(p, false).unwrap(), Layer::default());
        let msg = file_layer(p, true).unwrap_err().to_string();
        assert!(
            msg.contains("/nonexistent/gpucost.toml") && msg.contains("cannot read"),
            "{msg}"
        );
    }

    /// Mutation fuzzing of the example config: any value replaced by junk gives a config or an
    /// error naming its key, never a panic.
    #[test]
    fn fuzzed_configs_give_a_config_or_a_named_error() {
        let junk = [
            "-1",
            "0",
            "1e308",
            "-1e308",
            "nan",
            "inf",
            "\"\"",
            "\"x\"",
            "[]",
            "[1, \"a\"]",
            "{}",
            "true",
            "\"-5s\"",
            "\"10000h\"",
            "\"0.5\"",
            "\"+99:99\"",
            "\"25:00\"",
            "999999999999",
            "\"\\u0000\"",
            "\"../../etc\"",
            "\"H100\"",
            "-0.0001",
            "3",
            "\"on_prem\"",
            "[\"mon\", \"funday\"]",
        ];
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        let values: Vec<usize> = (0..lines.len())
            .filter(|i| !lines[*i].trim_start().starts_with('#') && lines[*i].contains(" = "))
            .collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut ok, mut bad) = (0, 0);
        for _ in 0..3000 {
            let mut doc: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            for _ in 0..(1 + next() % 3) {
                let i = values[(next() % values.len() as u64) as usize];
                let key = doc[i].split(" = ").next().unwrap().to_string();
                doc[i] = format!("{key} = {}", junk[(next() % junk.len() as u64) as usize]);
            }
            let text = doc.join("\n");
            let layer = toml::from_str::<Layer>(&text);
            let result = match layer {
                Ok(l) => resolve(&[(Origin::File("fuzz.toml".into()), l)]).map(|_| ()),
                Err(_) => from_file(&text).map(|_| ()),
            };
            match result {
                Ok(()) => ok += 1,
                Err(e) => {
                    bad += 1;
                    let msg = e.to_string();
                    assert!(
                        msg.contains("fuzz.toml") || msg.contains("config.toml"),
                        "{msg}"
                    );
                    assert!(!e.key.is_empty() && !e.problem.is_empty(), "{msg}");
                }
            }
        }
        assert!(ok > 0 && bad > 1000, "ok {ok}, refused {bad}");
    }
}
