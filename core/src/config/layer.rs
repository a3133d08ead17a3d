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
