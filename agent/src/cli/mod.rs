//! The client commands: `gpucost run`, `gpucost job`, `gpucost report`.

pub mod bench;
pub mod job;
pub mod report;
pub mod run;

use std::path::PathBuf;

use gpucost_core::config::{defaults, env_var_for};

/// The socket to use: the flag, else `GPUCOST_SOCKET`, else the default.
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(env_var_for("socket")).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(defaults::SOCKET))
}

/// The state directory a hook spools into: `--state-dir`, else `GPUCOST_STATE_DIR`, else the
/// default (the hooks do not read the config file: a broken one must not break a prolog).
pub fn hook_state_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(env_var_for("state_dir")).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(defaults::STATE_DIR))
}

/// The config file to read: `--config`, else `GPUCOST_CONFIG`, else the default path; and
/// whether it was asked for (a missing file asked for is an error, the default may be absent).
pub fn config_path(flag: Option<PathBuf>) -> (PathBuf, bool) {
    match flag.or_else(|| std::env::var_os(env_var_for("config")).map(PathBuf::from)) {
        Some(p) => (p, true),
        None => (PathBuf::from(defaults::CONFIG_PATH), false),
    }
}

/// Parses `k=v` labels given on the command line.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("label {s:?} is not KEY=VALUE")),
    }
}
