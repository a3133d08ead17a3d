//! `gpucost job start|end`: scheduler hooks (Slurm prolog and epilog).
//!
//! They read the `SLURM_*` environment, tell the agent, and always exit 0: a failing prolog
//! drains the node, so any problem is a warning on stderr, never a failure. `job end` in an
//! epilog finds how the job ended itself (`identity::slurm`: the environment, then a bounded
//! `scontrol show job`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gpucost_core::clock::unix_now;
use gpucost_core::jobs::{EndReason, Outcome, Scheduler};
use gpucost_core::tracker::{EndRequest, RegisterRequest};

use super::run::url_escape;
use crate::api::client::{post, ClientError};
use crate::api::spool;
use crate::identity::slurm;

pub struct StartArgs {
    pub id: Option<String>,
    pub name: Option<String>,
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub gpus: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub socket: PathBuf,
    /// Where the spool is (`<state_dir>/spool`), for a request the agent did not get.
    pub state_dir: PathBuf,
}

pub struct EndArgs {
    pub id: Option<String>,
    pub exit_code: Option<i32>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
}

const TIMEOUT: Duration = Duration::from_secs(3);
/// How long `job end` waits for `scontrol show job` (a controller that does not answer must not
/// hold the epilog).
const SCONTROL_TIMEOUT: Duration = Duration::from_secs(5);

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
    let scheduler = if env("SLURM_JOB_ID").is_some() {
        Scheduler::Slurm
    } else {
        Scheduler::Gpucost
    };
    let req = RegisterRequest {
        id: Some(id.clone()),
        name: a.name.or_else(|| env("SLURM_JOB_NAME")),
        labels: a.labels,
        gpus: gpus(a.gpus),
        scheduler: Some(scheduler),
        // A prolog runs as root on behalf of the job's user.
        user: a.user.or_else(|| env("SLURM_JOB_USER")),
        uid: a
            .uid
            .or_else(|| env("SLURM_JOB_UID").and_then(|u| u.parse().ok())),
        pid: None,
    };
    let body = serde_json::to_value(&req).unwrap_or_default();
    match post(&a.socket, "/api/v1/jobs", &body, TIMEOUT) {
        Ok(_) => eprintln!("gpucost: job {id} registered"),
        Err(e) => {
            let spooled = e.not_delivered().then(|| spool::Spooled::Register {
                at: unix_now(),
                req,
            });
            warn_and_spool("start", &id, &e, spooled, &a.state_dir);
        }
    }
    0
}

/// Says why the agent did not take a hook's request, and keeps the request in the spool when
/// it did not get it (the agent applies it when it is back), if this user may write there.
fn warn_and_spool(
    what: &str,
    id: &str,
    e: &ClientError,
    spooled: Option<spool::Spooled>,
    state_dir: &Path,
) {
    let Some(s) = spooled else {
        eprintln!("gpucost: warning: job {what} {id}: {e}");
        return;
    };
    let dir = state_dir.join(spool::DIR);
    match spool::write(&dir, &s) {
        Ok(path) => eprintln!(
            "gpucost: warning: job {what} {id}: {e}; kept in {} for the agent to apply when it \
             is back",
            path.display()
        ),
        Err(err) => eprintln!(
            "gpucost: warning: job {what} {id}: {e}; and it cannot be kept in {} ({err}): the \
             agent will not know",
            dir.display()
        ),
    }
}

/// How a Slurm job ended, in its epilog: the environment when it settles it, else `scontrol`
/// (bounded), else what the environment's status allows (`unknown` for a `0:0`, which a
/// cancelled or timed-out job also reads). Problems are warnings.
fn slurm_ending(id: &str) -> slurm::Ending {
    let exit2 = env("SLURM_JOB_EXIT_CODE2");
    if let Some(e) = slurm::from_environment(exit2.as_deref()) {
        return e;
    }
    let shown = match slurm::find_scontrol() {
        Some(p) => slurm::show_job(&p, id, SCONTROL_TIMEOUT).and_then(|text| {
            slurm::parse_show_job(&text)
                .ok_or_else(|| format!("no JobState in what scontrol said: {}", text.trim()))
        }),
        None => {
            Err("scontrol not found on PATH or in /usr/bin, /usr/local/bin, /opt/slurm/bin".into())
        }
    };
    match shown {
        Ok(job) => slurm::ending_of(&job),
        Err(why) => {
            let pair = exit2.as_deref().and_then(slurm::parse_exit_pair);
            let (outcome, reason, signal) = match pair {
                Some((_, s)) if s != 0 => (Outcome::Failed, Some(EndReason::Signal), Some(s)),
                _ => (Outcome::Unknown, None, None),
            };
            eprintln!(
                "gpucost: warning: job end {id}: cannot ask Slurm how it ended ({why}); \
                 SLURM_JOB_EXIT_CODE2={}: recorded as {}",
                exit2.as_deref().unwrap_or("(unset)"),
                outcome.as_str()
            );
            slurm::Ending {
                outcome,
                reason,
                exit_code: pair.map(|(c, _)| c),
                signal,
            }
        }
    }
}

/// Ends the job; always returns 0.
pub fn end(a: EndArgs) -> i32 {
    let Some(id) = job_id(a.id) else {
        eprintln!("gpucost: warning: job end: no job id (pass --id, or run from a Slurm epilog with SLURM_JOB_ID set)");
        return 0;
    };
    let explicit = a.exit_code.is_some() || a.outcome.is_some() || a.reason.is_some();
    let mut req = EndRequest::default();
    if explicit {
        req.exit_code = a.exit_code;
        if let Some(o) = a.outcome.as_deref() {
            req.outcome = Outcome::parse(o).filter(|o| *o != Outcome::Running);
            if req.outcome.is_none() {
                eprintln!("gpucost: warning: job end {id}: --outcome {o:?} is none of succeeded, failed, cancelled, preempted, unknown; left out");
            }
        }
        if let Some(r) = a.reason.as_deref() {
            req.reason = EndReason::parse(r);
            if req.reason.is_none() {
                eprintln!("gpucost: warning: job end {id}: --reason {r:?} is none of exit_code, signal, time_limit, oom, node_fail; left out");
            }
        }
    } else if env("SLURM_JOB_ID").is_some() {
        let e = slurm_ending(&id);
        req = EndRequest {
            exit_code: e.exit_code,
            signal: e.signal,
            outcome: Some(e.outcome),
            reason: e.reason,
        };
    }
    let body = serde_json::to_value(&req).unwrap_or_default();
    let url = format!("/api/v1/jobs/{}/end", url_escape(&id));
    match post(&a.socket, &url, &body, TIMEOUT) {
        Ok(j) => eprintln!(
            "gpucost: job {id} ended ({})",
            j["outcome"].as_str().unwrap_or("?")
        ),
        Err(e) => {
            let spooled = e.not_delivered().then(|| spool::Spooled::End {
                at: unix_now(),
                id: id.clone(),
                req,
            });
            warn_and_spool("end", &id, &e, spooled, &a.state_dir);
        }
    }
    0
}
