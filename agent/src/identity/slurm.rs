//! What Slurm says about how a job ended: the epilog's environment, then `scontrol show job`.
//!
//! An epilog gets `SLURM_JOB_EXIT_CODE2` (`<exit>:<signal>` of the batch script, Slurm's
//! prolog_epilog.html), but a job ended by `scancel` or its time limit reads `0:0` there (seen on
//! Slurm 22.05, issue 16), so a clean status is asked again of the controller, and so is a death
//! by a signal (whose sender the status does not tell). `scontrol show job` prints `JobState=`
//! (job_state_codes.html: COMPLETED, FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, PREEMPTED,
//! NODE_FAIL, BOOT_FAIL, DEADLINE), `Reason=` (job_reason_codes.html: TimeLimit, OutOfMemory,
//! NodeDown, NonZeroExitCode, ...) and `ExitCode=<exit>:<signal>`. While the epilog runs the job
//! carries the COMPLETING flag, and `scontrol` prints a flag instead of the base state
//! (`job_state_string` in Slurm's `slurm_protocol_defs.c`: `if (inx & JOB_COMPLETING) return
//! "COMPLETING"`), so the reason and the exit code decide then.
//!
//! The call is bounded ([`show_job`] kills `scontrol` past its timeout): a hook must never hang.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gpucost_core::jobs::{EndReason, Outcome};

/// How a job ended, as far as Slurm told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub outcome: Outcome,
    pub reason: Option<EndReason>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

/// `<exit>:<signal>` (`SLURM_JOB_EXIT_CODE2`, scontrol's `ExitCode=`).
pub fn parse_exit_pair(s: &str) -> Option<(i32, i32)> {
    let (code, sig) = s.trim().split_once(':')?;
    Some((code.trim().parse().ok()?, sig.trim().parse().ok()?))
}

/// The ending an exit status says by itself: `None` when it does not settle it (a clean `0:0`,
/// which `scancel` and time-limit kills also read, or a signal, whose sender is unknown).
pub fn from_environment(exit2: Option<&str>) -> Option<Ending> {
    let (code, sig) = parse_exit_pair(exit2?)?;
    (code != 0 && sig == 0).then_some(Ending {
        outcome: Outcome::Failed,
        reason: Some(EndReason::ExitCode),
        exit_code: Some(code),
        signal: None,
    })
}

/// The fields of `scontrol show job` that tell how a job ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShownJob {
    pub state: String,
    pub reason: String,
    pub exit: Option<(i32, i32)>,
}

/// `scontrol show job ID` (multi-line or `--oneliner`) to its state, reason and exit code;
/// `None` when there is no `JobState=` (an error message, an unknown job).
pub fn parse_show_job(text: &str) -> Option<ShownJob> {
    let mut job = ShownJob::default();
    let mut has_state = false;
    for token in text.split_whitespace() {
        let Some((k, v)) = token.split_once('=') else {
            continue;
        };
        match k {
            "JobState" => {
                job.state = v.to_string();
                has_state = true;
            }
            "Reason" => job.reason = v.to_string(),
            "ExitCode" => job.exit = parse_exit_pair(v),
            _ => {}
        }
    }
    has_state.then_some(job)
}

/// Signals a person or the scheduler sends to end a job (`scancel` sends SIGTERM, then SIGKILL
/// after `KillWait`; Ctrl-C of `srun` SIGINT): with no failure reason, the job was cancelled.
const ENDING_SIGNALS: [i32; 3] = [2, 9, 15];

/// How the job ended, from what `scontrol` showed.
pub fn ending_of(job: &ShownJob) -> Ending {
    let (code, sig) = job.exit.unwrap_or((0, 0));
    let status = (job.exit.map(|_| code), (sig != 0).then_some(sig));
    let ending = |outcome, reason| Ending {
        outcome,
        reason,
        exit_code: status.0,
        signal: status.1,
    };
    use EndReason::*;
    match job.state.as_str() {
        "COMPLETED" => return ending(Outcome::Succeeded, None),
        "CANCELLED" => return ending(Outcome::Cancelled, None),
        "PREEMPTED" => return ending(Outcome::Preempted, None),
        "TIMEOUT" | "DEADLINE" => return ending(Outcome::Failed, Some(TimeLimit)),
        "OUT_OF_MEMORY" => return ending(Outcome::Failed, Some(Oom)),
        "NODE_FAIL" | "BOOT_FAIL" => return ending(Outcome::Failed, Some(NodeFail)),
        "FAILED" => {
            let r = EndReason::from_exit(status.0, status.1).unwrap_or(ExitCode);
            return ending(Outcome::Failed, Some(r));
        }
        // COMPLETING (the epilog runs) and the other flags: the reason and the status decide.
        _ => {}
    }
    match job.reason.as_str() {
        "TimeLimit" | "DeadLine" => return ending(Outcome::Failed, Some(TimeLimit)),
        "OutOfMemory" => return ending(Outcome::Failed, Some(Oom)),
        "NodeDown" => return ending(Outcome::Failed, Some(NodeFail)),
        r if r.contains("Preempt") => return ending(Outcome::Preempted, None),
        _ => {}
    }
    match (code, sig) {
        (0, 0) if job.exit.is_some() => ending(Outcome::Succeeded, None),
        (_, s) if ENDING_SIGNALS.contains(&s) => ending(Outcome::Cancelled, None),
        (_, s) if s != 0 => ending(Outcome::Failed, Some(Signal)),
        (c, _) if c != 0 => ending(Outcome::Failed, Some(ExitCode)),
        _ => ending(Outcome::Unknown, None),
    }
}

/// Where `scontrol` is: on `PATH`, else where Slurm is usually installed (an epilog runs with no
/// search path set, prolog_epilog.html).
pub fn find_scontrol() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/bin",
                "/usr/local/bin",
                "/opt/slurm/bin",
                "/usr/local/slurm/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|d| d.join("scontrol"))
        .find(|p| p.is_file())
}

/// Runs `scontrol show job ID`, killed past `timeout`; its output, or why there is none.
pub fn show_job(scontrol: &Path, id: &str, timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(scontrol)
        .args(["show", "job", id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", scontrol.display()))?;
    let started = Instant::now();
    // The output is small (a few hundred bytes): it fits the pipe, so waiting first is safe.
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} show job {id} timed out after {timeout:?}",
                    scontrol.display()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for {}: {e}", scontrol.display())),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() {
        return Err(format!(
            "{} show job {id}: {status}: {}",
            scontrol.display(),
            err.trim()
        ));
    }
    Ok(out)
}

/// Job states that end a job for good; a job shown in one of them has run all its epilogs
/// (while they run it shows COMPLETING).
const TERMINAL: [&str; 9] = [
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
];

/// What the controller says of a job this node still has running: `Some` when it is over
/// (shown in a final state, or no longer known: slurmctld forgets a finished job after
/// `MinJobAge`, 300 s by default), with its ending and why; `None` while it runs, or when the
/// controller could not be asked (it says nothing then).
pub fn controller_says(scontrol: &Path, id: &str, timeout: Duration) -> Option<(Ending, String)> {
    match show_job(scontrol, id, timeout) {
        Ok(text) => {
            let job = parse_show_job(&text)?;
            TERMINAL.contains(&job.state.as_str()).then(|| {
                let why = format!("slurmctld shows it {}", job.state);
                (ending_of(&job), why)
            })
        }
        Err(e) if e.contains("Invalid job id") => Some((
            Ending {
                outcome: Outcome::Unknown,
                reason: None,
                exit_code: None,
                signal: None,
            },
            "slurmctld no longer knows it".to_string(),
        )),
        Err(_) => None,
    }
}

/// Whether a Slurm job's cgroup is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCgroup {
    /// No Slurm cgroup tree under the root at all (no Slurm, or not its cgroup plugins): says
    /// nothing about the job.
    NoSlurmTree,
    Present,
    Absent,
}

/// Whether job `id` has a cgroup under `root` (`/sys/fs/cgroup`), where Slurm's cgroup plugins
/// put one for each job (cgroup.html, cgroup_v2.html): cgroup v2
/// `system.slice/[NODE_]slurmstepd.scope/job_ID`, cgroup v1
/// `CONTROLLER/slurm[_NODE]/uid_UID/job_ID`. A few directory reads.
pub fn job_cgroup(root: &Path, id: &str) -> JobCgroup {
    let names = [format!("job_{id}"), format!("job{id}")];
    let has_job = |dir: &Path| names.iter().any(|n| dir.join(n).is_dir());
    let subdirs = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    let name_of = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let is_slurm_root = |p: &Path| {
        let n = name_of(p);
        n == "slurm" || n.starts_with("slurm_")
    };
    let mut tree = false;
    // cgroup v2: the scope slurmstepd makes under system.slice.
    for scope in subdirs(&root.join("system.slice")) {
        if name_of(&scope).contains("slurmstepd") {
            tree = true;
            if has_job(&scope) {
                return JobCgroup::Present;
            }
        }
    }
    // cgroup v1: each controller's slurm[_NODE]/uid_UID/ (or a root that is one controller).
    let controllers = std::iter::once(root.to_path_buf()).chain(subdirs(root));
    for c in controllers {
        for slurm in subdirs(&c).into_iter().filter(|p| is_slurm_root(p)) {
            tree = true;
            if has_job(&slurm) {
                return JobCgroup::Present;
            }
            for uid in subdirs(&slurm) {
                if name_of(&uid).starts_with("uid_") && has_job(&uid) {
                    return JobCgroup::Present;
                }
            }
        }
    }
    if tree {
        JobCgroup::Absent
    } else {
        JobCgroup::NoSlurmTree
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `scontrol show job` (Slurm 22.05), from scontrol's man page example with
    /// the fields that matter here replaced.
    fn shown(state: &str, reason: &str, exit: &str) -> String {
        format!(
            "JobId=4812 JobName=train\n   UserId=alice(1001) GroupId=alice(1001) MCS_label=N/A\n   \
             Priority=4294901757 Nice=0 Account=(null) QOS=normal\n   \
             JobState={state} Reason={reason} Dependency=(null)\n   \
             Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode={exit}\n   \
             RunTime=00:01:00 TimeLimit=00:01:00 TimeMin=N/A\n"
        )
    }

    #[test]
    fn issue_16_endings_from_scontrol() {
        use EndReason::*;
        use Outcome::*;
        let cases = [
            ("COMPLETED", "None", "0:0", Succeeded, None),
            ("CANCELLED", "None", "0:15", Cancelled, None),
            ("PREEMPTED", "None", "0:15", Preempted, None),
            ("TIMEOUT", "TimeLimit", "0:15", Failed, Some(TimeLimit)),
            ("DEADLINE", "DeadLine", "0:15", Failed, Some(TimeLimit)),
            ("OUT_OF_MEMORY", "OutOfMemory", "0:125", Failed, Some(Oom)),
            ("NODE_FAIL", "NodeDown", "0:0", Failed, Some(NodeFail)),
            ("BOOT_FAIL", "NodeDown", "0:0", Failed, Some(NodeFail)),
            ("FAILED", "NonZeroExitCode", "3:0", Failed, Some(ExitCode)),
            (
                "FAILED",
                "RaisedSignal:11(Segmentation_fault)",
                "0:11",
                Failed,
                Some(Signal),
            ),
            // While the epilog runs: COMPLETING, and the reason and status decide.
            ("COMPLETING", "TimeLimit", "0:15", Failed, Some(TimeLimit)),
            ("COMPLETING", "OutOfMemory", "0:9", Failed, Some(Oom)),
            ("COMPLETING", "NodeDown", "0:0", Failed, Some(NodeFail)),
            ("COMPLETING", "None", "0:0", Succeeded, None),
            ("COMPLETING", "None", "0:15", Cancelled, None),
            ("COMPLETING", "None", "0:9", Cancelled, None),
            ("COMPLETING", "None", "0:11", Failed, Some(Signal)),
            (
                "COMPLETING",
                "NonZeroExitCode",
                "2:0",
                Failed,
                Some(ExitCode),
            ),
        ];
        for (state, reason, exit, outcome, why) in cases {
            let job = parse_show_job(&shown(state, reason, exit)).unwrap();
            assert_eq!(job.state, state);
            let e = ending_of(&job);
            assert_eq!(
                (e.outcome, e.reason),
                (outcome, why),
                "{state} {reason} {exit}"
            );
        }
        let e = ending_of(&parse_show_job(&shown("FAILED", "None", "3:0")).unwrap());
        assert_eq!((e.exit_code, e.signal), (Some(3), None));
        let e = ending_of(&parse_show_job(&shown("CANCELLED", "None", "0:15")).unwrap());
        assert_eq!((e.exit_code, e.signal), (Some(0), Some(15)));
        // The one-line form parses the same.
        let one = shown("TIMEOUT", "TimeLimit", "0:15").replace('\n', " ");
        assert_eq!(
            ending_of(&parse_show_job(&one).unwrap()).reason,
            Some(TimeLimit)
        );
        // What scontrol says of a job it does not know is no job.
        assert_eq!(
            parse_show_job("slurm_load_jobs error: Invalid job id specified"),
            None
        );
    }

    #[test]
    fn issue_16_a_jobs_cgroup_in_v1_and_v2_trees() {
        let v2 = tempfile::tempdir().unwrap();
        let scope = v2.path().join("system.slice/slurmstepd.scope");
        std::fs::create_dir_all(scope.join("job_41871/step_0/user/task_0")).unwrap();
        std::fs::create_dir_all(v2.path().join("user.slice/user-1001.slice")).unwrap();
        assert_eq!(job_cgroup(v2.path(), "41871"), JobCgroup::Present);
        assert_eq!(job_cgroup(v2.path(), "41872"), JobCgroup::Absent);
        // A node-named scope (multiple slurmd), as cgroup.rs parses too.
        let named = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(
            named
                .path()
                .join("system.slice/node1_slurmstepd.scope/job_7"),
        )
        .unwrap();
        assert_eq!(job_cgroup(named.path(), "7"), JobCgroup::Present);

        let v1 = tempfile::tempdir().unwrap();
        for c in ["freezer", "devices", "memory"] {
            std::fs::create_dir_all(
                v1.path()
                    .join(c)
                    .join("slurm_node1/uid_1001/job_300/step_0"),
            )
            .unwrap();
        }
        std::fs::create_dir_all(v1.path().join("cpu,cpuacct/user.slice")).unwrap();
        assert_eq!(job_cgroup(v1.path(), "300"), JobCgroup::Present);
        assert_eq!(job_cgroup(v1.path(), "301"), JobCgroup::Absent);
        let plain = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(plain.path().join("devices/slurm/uid_0/job_5/step_batch")).unwrap();
        assert_eq!(job_cgroup(plain.path(), "5"), JobCgroup::Present);

        // No Slurm tree at all: nothing is said about any job.
        let none = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(none.path().join("system.slice/sshd.service")).unwrap();
        assert_eq!(job_cgroup(none.path(), "5"), JobCgroup::NoSlurmTree);
        assert_eq!(
            job_cgroup(Path::new("/nonexistent-cgroup-root"), "5"),
            JobCgroup::NoSlurmTree
        );
    }

    #[test]
    fn the_environment_settles_only_a_plain_non_zero_exit() {
        let e = from_environment(Some("3:0")).unwrap();
        assert_eq!(
            (e.outcome, e.reason, e.exit_code),
            (Outcome::Failed, Some(EndReason::ExitCode), Some(3))
        );
        for unsettled in [Some("0:0"), Some("0:15"), Some("0:9"), Some("junk"), None] {
            assert_eq!(from_environment(unsettled), None, "{unsettled:?}");
        }
    }
}
