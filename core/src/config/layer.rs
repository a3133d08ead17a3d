//! One [`Layer`] of settings per source: the config file's text and the `GPUCOST_*` environment
//! variables are parsed here (flags are built by the binary), every field optional, nothing
//! checked beyond its type; [`resolve`](super::resolve()) merges and validates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Origin};

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
    /// Path of the pod socket, or "off".
    pub pod_socket: Option<PathBuf>,
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
    #[serde(default)]
    pub http: HttpLayer,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpLayer {
    pub max_connections: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub header_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    pub hide_identities: Option<bool>,
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
    pub max_running_per_user: Option<u32>,
    pub max_running: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttributionLayer {
    pub proc_root: Option<PathBuf>,
    pub cgroup_root: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub scontrol_interval: Option<Duration>,
    pub job_map_dir: Option<PathBuf>,
    /// Path of the kubelet socket, or "off".
    pub kubelet_socket: Option<PathBuf>,
    pub kubelet_resources: Option<Vec<String>>,
    /// Path of the kubelet's device-manager checkpoint, or "off".
    pub kubelet_checkpoint: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub kubelet_interval: Option<Duration>,
    /// `auto`, `on` or `off`.
    pub kube_api: Option<String>,
    pub kube_node_name: Option<String>,
    /// `job_label=pod_label` pairs.
    pub kube_labels: Option<Vec<String>>,
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

/// How a variable's text becomes the value its key takes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EnvText {
    /// As it is: text, paths, durations (`5s`), the socket's octal mode.
    Text,
    /// A number: an integer, else a float (`0.85`, `nan`).
    Number,
    /// A list of text, comma-separated (`team,project`), each item trimmed and empty ones left
    /// out; empty text is an empty list.
    List,
    /// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case).
    Bool,
}

/// Keys settable from the environment: `GPUCOST_` + the key in upper case, dots as underscores
/// ([`env_var_for`]). Every key of `deploy/config.example.toml` but `[pricing]`'s (a test keeps
/// the two equal).
pub(super) const ENV_KEYS: &[(&str, EnvText)] = &[
    ("listen", EnvText::Text),
    ("simulate", EnvText::Text),
    ("state_dir", EnvText::Text),
    ("socket", EnvText::Text),
    ("socket_mode", EnvText::Text),
    ("pod_socket", EnvText::Text),
    ("sampling.interval", EnvText::Text),
    ("sampling.process_interval", EnvText::Text),
    ("nvml.lib", EnvText::Text),
    ("nvml.retry_interval", EnvText::Text),
    ("ledger.persist_interval", EnvText::Text),
    ("jobs.grace_period", EnvText::Text),
    ("jobs.vanish_after", EnvText::Text),
    ("jobs.export_labels", EnvText::List),
    ("jobs.max_running_per_user", EnvText::Number),
    ("jobs.max_running", EnvText::Number),
    ("attribution.proc_root", EnvText::Text),
    ("attribution.cgroup_root", EnvText::Text),
    ("attribution.scontrol_interval", EnvText::Text),
    ("attribution.job_map_dir", EnvText::Text),
    ("attribution.kubelet_socket", EnvText::Text),
    ("attribution.kubelet_resources", EnvText::List),
    ("attribution.kubelet_checkpoint", EnvText::Text),
    ("attribution.kubelet_interval", EnvText::Text),
    ("attribution.kube_api", EnvText::Text),
    ("attribution.kube_node_name", EnvText::Text),
    ("attribution.kube_labels", EnvText::List),
    ("bench.interval", EnvText::Text),
    ("bench.min_ratio", EnvText::Number),
    ("http.max_connections", EnvText::Number),
    ("http.header_timeout", EnvText::Text),
    ("http.idle_timeout", EnvText::Text),
    ("http.hide_identities", EnvText::Bool),
];

/// The `GPUCOST_*` variables gpucost or its tools read that are no setting; none of them is
/// warned about (see [`unknown_env_vars`]). A test finds every `GPUCOST_` name written in the
/// repository among these or the settings' variables.
pub const OTHER_ENV_VARS: &[&str] = &[
    // The config file (`gpucost agent`, `gpucost report`) and the log filter.
    "GPUCOST_CONFIG",
    "GPUCOST_LOG",
    // A process's job and labels, read from its environment (`gpucost run` sets the id).
    "GPUCOST_JOB_ID",
    "GPUCOST_LABELS",
    // The Python package's address of the agent's read-only TCP API (python/gpucost).
    "GPUCOST_URL",
    // `gpucost bench`'s libraries (kernels/src/gpu.rs).
    "GPUCOST_NVRTC",
    "GPUCOST_NVRTC_LIB",
    "GPUCOST_CUBLAS_LIB",
    "GPUCOST_CUBLASLT_LIB",
    // The kernels' checks and the scripts that run them (kernels/src/tools.rs, scripts/).
    "GPUCOST_NVDISASM",
    "GPUCOST_SKIP_CUDA_TOOLS",
    "GPUCOST_REGEN_PTX",
    "GPUCOST_CUDA_TOOLS_DIR",
    "GPUCOST_VALIDATION_PORT",
    // The fake NVML library (tests/fake-nvml).
    "GPUCOST_FAKE_NVML_SCENARIO",
    "GPUCOST_FAKE_NVML_START_UNIX",
];

/// Families of variables that are no setting: the fake NVML library's, and one compiler and one
/// `ptxas` per pinned CUDA toolchain (`GPUCOST_NVRTC_12_4`, `GPUCOST_PTXAS_12_2`; kernels/src/
/// registry.rs).
pub const OTHER_ENV_PREFIXES: &[&str] = &["GPUCOST_FAKE_NVML_", "GPUCOST_NVRTC_", "GPUCOST_PTXAS_"];

/// The `GPUCOST_*` names among `names` (the environment's) that gpucost does not read, sorted,
/// each with the known variable closest to it by edit distance, for a warning at start: a
/// mistyped variable would otherwise be ignored without a word.
pub fn unknown_env_vars(names: impl IntoIterator<Item = String>) -> Vec<(String, String)> {
    let settings: Vec<String> = ENV_KEYS.iter().map(|(k, _)| env_var_for(k)).collect();
    let known = || {
        settings
            .iter()
            .map(String::as_str)
            .chain(OTHER_ENV_VARS.iter().copied())
    };
    let mut unknown: Vec<(String, String)> = names
        .into_iter()
        .filter(|n| n.starts_with("GPUCOST_"))
        .filter(|n| !known().any(|k| k == n))
        .filter(|n| !OTHER_ENV_PREFIXES.iter().any(|p| n.starts_with(p)))
        .map(|n| {
            let closest = known()
                .min_by_key(|k| strsim::levenshtein(k, &n))
                .unwrap_or_default()
                .to_string();
            (n, closest)
        })
        .collect();
    unknown.sort();
    unknown
}

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
    Layer::from_file_text(&text, origin)
}

impl Layer {
    /// Parses the text of a config file. An error names the dotted key the deserializer was at
    /// (`sampling.interval`, `jobs.export_labels[1]`), or `file` for a syntax error, and the line
    /// and column where TOML says it is.
    pub fn from_file_text(text: &str, origin: Origin) -> Result<Layer, ConfigError> {
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
            let key = match e.path().iter().next() {
                None => "file".to_string(),
                // An empty key (`"" = 1`) is named as TOML writes it.
                Some(_) => Some(e.path().to_string())
                    .filter(|k| !k.is_empty())
                    .unwrap_or_else(|| "\"\"".to_string()),
            };
            let e = e.into_inner();
            let at = e.span().map(|span| position(text, span.start));
            ConfigError {
                origin,
                key,
                problem: one_line(e.message()) + &at.unwrap_or_default(),
            }
        })
    }
}

/// A TOML message on one line ("invalid array\nexpected `]`" becomes "invalid array; expected
/// `]`"), since it ends up in the middle of a sentence.
fn one_line(message: &str) -> String {
    message.trim().lines().collect::<Vec<_>>().join("; ")
}

/// " (line L, column C)" of a byte offset into `text`, both counted from 1.
fn position(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    format!(" (line {line}, column {column})")
}

/// Reads the environment layer through `get` (the process environment in production): one
/// layer per variable set, each value typed as its key is in the file ([`EnvText`]).
pub fn env_layer(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(Origin, Layer)>, ConfigError> {
    let mut layers = Vec::new();
    for (key, kind) in ENV_KEYS {
        let var = env_var_for(key);
        let Some(text) = get(&var) else { continue };
        let origin = Origin::Env(var);
        let error = |problem: String| ConfigError {
            origin: origin.clone(),
            key: key.to_string(),
            problem,
        };
        let value = env_value(&text, *kind).map_err(error)?;
        let layer = single(key, value).map_err(|e| error(one_line(e.message())))?;
        layers.push((origin, layer));
    }
    Ok(layers)
}

/// A variable's text as the TOML value its key takes.
fn env_value(text: &str, kind: EnvText) -> Result<toml::Value, String> {
    Ok(match kind {
        EnvText::Text => toml::Value::String(text.to_string()),
        EnvText::Number => {
            let t = text.trim();
            match (t.parse::<i64>(), t.parse::<f64>()) {
                (Ok(i), _) => toml::Value::Integer(i),
                (Err(_), Ok(x)) => toml::Value::Float(x),
                (Err(_), Err(_)) => return Err(format!("{text:?} is not a number")),
            }
        }
        EnvText::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err(format!("{text:?} is not true or false")),
        },
        EnvText::List => toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_string()))
                .collect(),
        ),
    })
}

/// A layer setting only `key` (dotted: `sampling.interval`) to `value`, typed as in the file.
pub(super) fn single(key: &str, value: toml::Value) -> Result<Layer, toml::de::Error> {
    let doc = key.rsplit('.').fold(value, |inner, part| {
        toml::Value::Table(toml::Table::from_iter([(part.to_string(), inner)]))
    });
    Layer::deserialize(doc)
}
