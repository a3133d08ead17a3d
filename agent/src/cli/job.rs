//! `gpucost job start|end`: scheduler hooks (Slurm prolog and epilog).
//!
//! They read the `SLURM_*` environment, tell the agent, and always exit 0: a failing prolog
//! drains the node, so any problem is a warning on stderr, never a failure.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::run::url_escape;
use crate::api::client::post;

pub struct StartArgs {
    pub id: Option<String>,
    pub name: Option<String>,
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub gpus: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub socket: PathBuf,
}

pub struct EndArgs {
    pub id: Option<String>,
    pub exit_code: Option<i32>,
    pub outcome: Option<String>,
    pub socket: PathBuf,
}

const TIMEOUT: Duration = Duration::from_secs(3);

fn env(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The job id: the flag, else the scheduler's environment.
fn job_id(flag: Option<String>) -> Option<String> {
    flag.or_else(|| env("SLURM_JOB_ID"))
        .or_else(|| env("GPUCOST_JOB_ID"))
}

/// GPUs from the flag (UUIDs or NVML's indices), else the job's allocation (SLURM_JOB_GPUS in
/// the prolog), else the environment ([`super::run::job_gpus`]: UUIDs in CUDA_VISIBLE_DEVICES,
/// SLURM_STEP_GPUS in steps, CUDA_VISIBLE_DEVICES's indices outside Slurm).
fn gpus(flag: Option<String>) -> Vec<String> {
    if let Some(f) = flag.or_else(|| env("SLURM_JOB_GPUS")) {
        return f
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
    }
    let found = super::run::job_gpus(env);
    if let Some(note) = &found.note {
        eprintln!("gpucost: note: {note}");
    }
    found.gpus
}

/// Registers the job; always returns 0.
pub fn start(a: StartArgs) -> i32 {
    let Some(id) = job_id(a.id) else {
        eprintln!("gpucost: warning: job start: no job id (pass --id, or run from a Slurm prolog with SLURM_JOB_ID set); nothing registered");
        return 0;
    };
    let mut body = json!({
        "id": id,
        "scheduler": if env("SLURM_JOB_ID").is_some() { "slurm" } else { "gpucost" },
        "labels": a.labels,
        "gpus": gpus(a.gpus),
    });
    if let Some(n) = a.name.or_else(|| env("SLURM_JOB_NAME")) {
        body["name"] = json!(n);
    }
    // A prolog runs as root on behalf of the job's user.
    if let Some(u) = a.user.or_else(|| env("SLURM_JOB_USER")) {
        body["user"] = json!(u);
    }
    if let Some(uid) = a
        .uid
        .or_else(|| env("SLURM_JOB_UID").and_then(|u| u.parse().ok()))
    {
        body["uid"] = json!(uid);
    }
    match post(&a.socket, "/api/v1/jobs", &body, TIMEOUT) {
        Ok(_) => eprintln!("gpucost: job {id} registered"),
        Err(e) => eprintln!("gpucost: warning: job start {id}: {e}"),
    }
    0
}

/// Ends the job; always returns 0.
pub fn end(a: EndArgs) -> i32 {
    let Some(id) = job_id(a.id) else {
        eprintln!("gpucost: warning: job end: no job id (pass --id, or run from a Slurm epilog with SLURM_JOB_ID set)");
        return 0;
    };
    let mut body = json!({});
    if let Some(code) = a.exit_code {
        body["exit_code"] = json!(code);
    }
    if let Some(o) = a.outcome {
        body["outcome"] = json!(o);
    }
    let url = format!("/api/v1/jobs/{}/end", url_escape(&id));
    match post(&a.socket, &url, &body, TIMEOUT) {
        Ok(j) => eprintln!(
            "gpucost: job {id} ended ({})",
            j["outcome"].as_str().unwrap_or("?")
        ),
        Err(e) => eprintln!("gpucost: warning: job end {id}: {e}"),
    }
    0
}
