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

/// Keys settable from the environment: `GPUCOST_` + the key in upper case, dots as underscores.
pub(super) const ENV_KEYS: &[&str] = &[
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
    "http.header_timeout",
    "http.idle_timeout",
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

/// Reads the environment layer through `get` (the process environment in production).
pub fn env_layer(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(Origin, Layer)>, ConfigError> {
    let mut layers = Vec::new();
    for key in ENV_KEYS {
        let var = env_var_for(key);
        let Some(value) = get(&var) else { continue };
        let origin = Origin::Env(var);
        let layer = single(key, toml::Value::String(value)).map_err(|e| ConfigError {
            origin: origin.clone(),
            key: key.to_string(),
            problem: one_line(e.message()),
        })?;
        layers.push((origin, layer));
    }
    Ok(layers)
}

/// A layer setting only `key` (dotted: `sampling.interval`) to `value`, typed as in the file.
pub(super) fn single(key: &str, value: toml::Value) -> Result<Layer, toml::de::Error> {
    let doc = key.rsplit('.').fold(value, |inner, part| {
        toml::Value::Table(toml::Table::from_iter([(part.to_string(), inner)]))
    });
    Layer::deserialize(doc)
}
