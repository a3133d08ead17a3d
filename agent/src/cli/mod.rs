//! The client commands: `gpucost run`, `gpucost job`, `gpucost report`.

pub mod bench;
pub mod job;
pub mod report;
pub mod run;

use std::path::PathBuf;

/// Default path of the agent's socket.
pub const DEFAULT_SOCKET: &str = "/run/gpucost/agent.sock";

/// The socket to use: the flag, else `GPUCOST_SOCKET`, else the default.
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("GPUCOST_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// Parses `k=v` labels given on the command line.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("label {s:?} is not KEY=VALUE")),
    }
}
