//! What attribution needs to know about a process: its parent, owner, command, Slurm job and
//! pod (from its cgroup) and the `GPUCOST_JOB_ID` / `GPUCOST_LABELS` in its environment; and the
//! parsers of the `/proc` files those facts come from. The files are read by the agent (`identity::procfs`, with an
//! injectable root); nothing here does I/O.

use std::collections::BTreeMap;

/// A process as attribution sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// The user name, when the source knows it (the simulated node does; `/proc` gives a uid).
    pub user: Option<String>,
    /// Short command name (`comm`).
    pub comm: String,
    /// Start time in clock ticks since boot: with the pid, it identifies the process even after
    /// pid reuse.
    pub start_ticks: u64,
    pub slurm_job: Option<String>,
    /// The UID of the Kubernetes pod whose cgroup holds the process (`cgroup::pod_uid`).
    pub pod_uid: Option<String>,
    pub env_job_id: Option<String>,
    pub env_labels: BTreeMap<String, String>,
}

/// Where process facts come from: the real `/proc`, or the simulated node's job list.
pub trait ProcSource: Send {
    fn info(&self, pid: u32) -> Option<ProcInfo>;
}

/// `(comm, ppid, starttime)` from `/proc/PID/stat`. The command is in parentheses and may itself
/// contain spaces and parentheses, so the fields after it are found from the last `)`.
pub fn parse_stat(stat: &str) -> Option<(String, u32, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After comm: state(0) ppid(1) ... starttime is field 22 of the line, index 19 here.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((comm, ppid, start))
}

/// `GPUCOST_JOB_ID` and `GPUCOST_LABELS` (`k=v,k2=v2`) from a NUL-separated environment.
pub fn parse_environ(environ: &[u8]) -> (Option<String>, BTreeMap<String, String>) {
    let mut id = None;
    let mut labels = BTreeMap::new();
    for var in environ.split(|b| *b == 0) {
        let var = String::from_utf8_lossy(var);
        if let Some(v) = var.strip_prefix("GPUCOST_JOB_ID=") {
            let v = v.trim();
            if !v.is_empty() {
                id = Some(v.to_string());
            }
        } else if let Some(v) = var.strip_prefix("GPUCOST_LABELS=") {
            labels = parse_labels(v);
        }
    }
    (id, labels)
}

/// `k=v,k2=v2` into a map; pairs without `=` or with an empty key are skipped.
pub fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// The chain of parents of `pid` (itself first), at most `limit` long, stopping at pid 1 or a
/// process that cannot be read.
pub fn ancestry(src: &dyn ProcSource, pid: u32, limit: usize) -> Vec<ProcInfo> {
    let mut chain = Vec::new();
    let mut next = pid;
    while chain.len() < limit && next > 0 {
        let Some(info) = src.info(next) else { break };
        next = if info.ppid == info.pid { 0 } else { info.ppid };
        let done = info.pid == 1;
        chain.push(info);
        if done {
            break;
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_names() {
        let s = "4242 (python3 (worker) x) S 4100 4242 4242 0 -1 4194560 1 0 0 0 5 6 0 0 20 0 3 0 98765 100 10";
        assert_eq!(
            parse_stat(s),
            Some(("python3 (worker) x".into(), 4100, 98765))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn environ_and_labels() {
        let env = b"PATH=/bin\0GPUCOST_JOB_ID= sweep-7 \0GPUCOST_LABELS=team=nlp,lr=3e-4,bad,=x\0";
        let (id, labels) = parse_environ(env);
        assert_eq!(id.as_deref(), Some("sweep-7"));
        assert_eq!(labels.len(), 2);
        assert_eq!(labels["team"], "nlp");
        assert_eq!(labels["lr"], "3e-4");
        assert_eq!(parse_environ(b"GPUCOST_JOB_ID=\0"), (None, BTreeMap::new()));
    }
}
