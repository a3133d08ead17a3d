//! The client commands: `gpucost run`, `gpucost job`, `gpucost report`.

pub mod bench;
pub mod job;
pub mod report;
pub mod run;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use gpucost_core::config::{defaults, env_var_for};

/// The socket to use: the flag, else `GPUCOST_SOCKET`, else the node's agent's
/// ([`defaults::SOCKET`]), else, for a user who is not root and where there is no node agent,
/// the user's own agent's ([`user_paths`]).
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(env_var_for("socket")).map(PathBuf::from))
        .unwrap_or_else(|| {
            let system = PathBuf::from(defaults::SOCKET);
            match current_user_paths() {
                Some(u) if !system.exists() && u.socket.exists() => u.socket,
                _ => system,
            }
        })
}

/// Where an agent run by a user who is not root keeps its state and its socket when nothing
/// says where: the system paths are root's (`/var/lib/gpucost`, `/run/gpucost`), so the XDG
/// base directories' places for a user's state and runtime files are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPaths {
    /// `$XDG_STATE_HOME/gpucost`, else `$HOME/.local/state/gpucost`.
    pub state_dir: PathBuf,
    /// `$XDG_RUNTIME_DIR/gpucost.sock`, else `agent.sock` in the state directory.
    pub socket: PathBuf,
}

/// [`UserPaths`] for effective uid `euid`; `None` for root, or when neither `XDG_STATE_HOME`
/// nor `HOME` says where the user's files go.
pub fn user_paths(euid: u32, env: impl Fn(&str) -> Option<OsString>) -> Option<UserPaths> {
    if euid == 0 {
        return None;
    }
    // The XDG base directory specification: a relative path in these variables is invalid and
    // is to be ignored.
    let absolute = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    let state_dir = match absolute("XDG_STATE_HOME") {
        Some(p) => p.join("gpucost"),
        None => absolute("HOME")?.join(".local/state/gpucost"),
    };
    let socket = match absolute("XDG_RUNTIME_DIR") {
        Some(p) => p.join("gpucost.sock"),
        None => state_dir.join("agent.sock"),
    };
    Some(UserPaths { state_dir, socket })
}

/// [`user_paths`] of this process.
pub fn current_user_paths() -> Option<UserPaths> {
    // SAFETY: geteuid has no preconditions.
    user_paths(unsafe { libc::geteuid() }, |v| std::env::var_os(v))
}

/// The ledger `gpucost report` reads when nothing names one: the node agent's, else (not
/// root, no node agent's ledger) the user's own agent's.
pub fn report_state_dir() -> Option<PathBuf> {
    let system = Path::new(defaults::STATE_DIR);
    match current_user_paths() {
        Some(u) if !system.join("ledger.db").exists() && u.state_dir.join("ledger.db").exists() => {
            Some(u.state_dir)
        }
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn user_paths_follow_the_xdg_base_directories() {
        let all = [
            ("XDG_STATE_HOME", "/home/ada/.state"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("HOME", "/home/ada"),
        ];
        assert_eq!(
            user_paths(0, env(&all)),
            None,
            "root keeps the system paths"
        );
        let u = user_paths(1000, env(&all)).unwrap();
        assert_eq!(u.state_dir, Path::new("/home/ada/.state/gpucost"));
        assert_eq!(u.socket, Path::new("/run/user/1000/gpucost.sock"));
        // Unset or relative (which the specification says to ignore): the fallbacks.
        let home = [("HOME", "/home/ada"), ("XDG_STATE_HOME", "state")];
        let u = user_paths(1000, env(&home)).unwrap();
        assert_eq!(u.state_dir, Path::new("/home/ada/.local/state/gpucost"));
        assert_eq!(
            u.socket,
            Path::new("/home/ada/.local/state/gpucost/agent.sock")
        );
        assert_eq!(user_paths(1000, env(&[])), None);
    }
}
