//! Slurm's hooks end to end (issue 16): `gpucost job start|end` as a prolog and an epilog run
//! them, against the real agent over its socket, with a stand-in `scontrol` on `PATH` that
//! prints what Slurm's prints.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gpucost_integration_tests::{agent_bin, Agent};

const FAST: &[(&str, &str)] = &[
    ("GPUCOST_SAMPLING_INTERVAL", "100ms"),
    ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "100ms"),
];

/// `scontrol show job` as Slurm 22.05 prints it (the layout of the example in scontrol's man
/// page), with the fields that say how the job ended. Field meanings: job_state_codes.html
/// (`JobState`), job_reason_codes.html (`Reason`), job_exit_code.html (`ExitCode`
/// `<exit>:<signal>`).
fn scontrol_output(id: &str, state: &str, reason: &str, exit: &str) -> String {
    format!(
        "JobId={id} JobName=train.sh
   UserId=alice(1001) GroupId=alice(1001) MCS_label=N/A
   Priority=4294901758 Nice=0 Account=(null) QOS=normal
   JobState={state} Reason={reason} Dependency=(null)
   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode={exit}
   RunTime=00:01:02 TimeLimit=00:01:00 TimeMin=N/A
   SubmitTime=2026-12-03T10:00:00 EligibleTime=2026-12-03T10:00:00
   AccrueTime=2026-12-03T10:00:00
   StartTime=2026-12-03T10:00:01 EndTime=2026-12-03T10:01:03 Deadline=N/A
   Partition=gpu AllocNode:Sid=login1:4242
   ReqNodeList=(null) ExcNodeList=(null)
   NodeList=node1
   BatchHost=node1
   NumNodes=1 NumCPUs=8 NumTasks=1 CPUs/Task=8 ReqB:S:C:T=0:0:*:*
   TRES=cpu=8,mem=64G,node=1,billing=8,gres/gpu=1
   Command=/home/alice/train.sh
   WorkDir=/home/alice
   StdErr=/home/alice/slurm-{id}.out
   StdOut=/home/alice/slurm-{id}.out
   TresPerNode=gres:gpu:1
"
    )
}

/// A folder with a stand-in `scontrol`: `show job ID` prints `ID.txt` from the folder, sleeps
/// when `ID.hang` is there, and otherwise says what Slurm says of an unknown job (exit 1). Each
/// call is appended to `calls`.
struct FakeSlurm {
    dir: tempfile::TempDir,
}

impl FakeSlurm {
    fn new() -> FakeSlurm {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("scontrol");
        let d = dir.path().display();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 echo \"$*\" >> {d}/calls\n\
                 [ -e {d}/$3.hang ] && exec sleep 60\n\
                 if [ -e {d}/$3.txt ]; then cat {d}/$3.txt; exit 0; fi\n\
                 echo 'slurm_load_jobs error: Invalid job id specified' >&2\n\
                 exit 1\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeSlurm { dir }
    }

    fn job(&self, id: &str, state: &str, reason: &str, exit: &str) {
        std::fs::write(
            self.dir.path().join(format!("{id}.txt")),
            scontrol_output(id, state, reason, exit),
        )
        .unwrap();
    }

    fn hang(&self, id: &str) {
        std::fs::write(self.dir.path().join(format!("{id}.hang")), "").unwrap();
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default()
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// `gpucost ARGS` with a Slurm hook's environment (`SLURM_JOB_ID` and what `env` adds) and the
/// fake `scontrol` first on `PATH`.
fn hook(args: &[&str], socket: &Path, slurm: &FakeSlurm, env: &[(&str, &str)]) -> Output {
    let path = format!(
        "{}:{}",
        slurm.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new(agent_bin());
    c.args(args)
        .env("GPUCOST_SOCKET", socket)
        .env("PATH", path)
        // A hook that cannot reach the agent spools here unless --state-dir says where.
        .env("GPUCOST_STATE_DIR", slurm.path().join("hook-state"))
        .env_remove("GPUCOST_JOB_ID")
        .env_remove("SLURM_JOB_EXIT_CODE2")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn prolog(agent: &Agent, slurm: &FakeSlurm, id: &str, gpus: &str) {
    let out = hook(
        &["job", "start"],
        &agent.socket,
        slurm,
        &[
            ("SLURM_JOB_ID", id),
            ("SLURM_JOB_USER", "alice"),
            ("SLURM_JOB_UID", "1001"),
            ("SLURM_JOB_GPUS", gpus),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("registered"), "{err}");
}

fn epilog(agent: &Agent, slurm: &FakeSlurm, id: &str, exit2: &str) -> String {
    let out = hook(
        &["job", "end"],
        &agent.socket,
        slurm,
        &[("SLURM_JOB_ID", id), ("SLURM_JOB_EXIT_CODE2", exit2)],
    );
    assert_eq!(out.status.code(), Some(0), "an epilog never fails");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn job_json(agent: &Agent, id: &str) -> serde_json::Value {
    let (status, body) = agent.get(&format!("/api/v1/jobs/{id}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn issue_16_the_epilog_finds_each_outcome_from_the_environment_then_scontrol() {
    let slurm = FakeSlurm::new();
    let agent = Agent::start(&["--simulate", "demo"], FAST);
    // (job, SLURM_JOB_EXIT_CODE2, what scontrol shows (state, reason, exit), outcome, reason)
    let cases = [
        // scancel: the environment reads 0:0 (issue 16), scontrol knows.
        (
            "201",
            "0:0",
            Some(("CANCELLED", "None", "0:15")),
            "cancelled",
            "",
        ),
        // Killed at its time limit, asked while the epilog runs (COMPLETING).
        (
            "202",
            "0:0",
            Some(("COMPLETING", "TimeLimit", "0:15")),
            "failed",
            "time_limit",
        ),
        (
            "203",
            "0:9",
            Some(("OUT_OF_MEMORY", "OutOfMemory", "0:125")),
            "failed",
            "oom",
        ),
        (
            "204",
            "0:0",
            Some(("PREEMPTED", "None", "0:15")),
            "preempted",
            "",
        ),
        (
            "205",
            "0:0",
            Some(("NODE_FAIL", "NodeDown", "0:0")),
            "failed",
            "node_fail",
        ),
        (
            "206",
            "0:0",
            Some(("COMPLETED", "None", "0:0")),
            "succeeded",
            "",
        ),
        // A plain non-zero exit settles it without asking the controller.
        ("207", "3:0", None, "failed", "exit_code"),
        // scontrol does not know the job: a 0:0 is not taken for a success.
        ("208", "0:0", None, "unknown", ""),
    ];
    for (id, exit2, shown, outcome, reason) in cases {
        if let Some((state, why, exit)) = shown {
            slurm.job(id, state, why, exit);
        }
        prolog(&agent, &slurm, id, "0");
        let err = epilog(&agent, &slurm, id, exit2);
        assert!(err.contains(&format!("ended ({outcome})")), "{id}: {err}");
        // (The hook has its answer before the TCP API's next snapshot.)
        let j = wait_outcome(&agent, id, outcome);
        assert_eq!(j["reason"].as_str().unwrap_or(""), reason, "{id}: {j}");
        if id == "208" {
            assert!(
                err.contains("warning") && err.contains("Invalid job id"),
                "{err}"
            );
        }
    }
    assert!(!slurm.calls().contains("207"), "{}", slurm.calls());
    assert!(slurm.calls().contains("show job 201"), "{}", slurm.calls());
    let j = job_json(&agent, "207");
    assert_eq!(j["exit_code"], 3);
    let m = agent.metrics();
    assert_eq!(
        m.get(
            "gpucost_job_outcome",
            &[
                ("job_id", "202"),
                ("outcome", "failed"),
                ("reason", "time_limit")
            ]
        ),
        Some(1.0)
    );
    // A user's scancel is no failure for the alert.
    assert_eq!(m.get("gpucost_job_failed", &[("job_id", "201")]), Some(0.0));
    assert_eq!(m.get("gpucost_job_failed", &[("job_id", "202")]), Some(1.0));
    for (outcome, n) in [("cancelled", 1.0), ("preempted", 1.0), ("failed", 4.0)] {
        assert_eq!(
            m.get("gpucost_jobs_finished_total", &[("outcome", outcome)]),
            Some(n),
            "{outcome}"
        );
    }
}

#[test]
fn issue_16_a_controller_that_does_not_answer_holds_the_epilog_for_a_bounded_time() {
    let slurm = FakeSlurm::new();
    slurm.hang("301");
    let agent = Agent::start(&["--simulate", "demo"], FAST);
    prolog(&agent, &slurm, "301", "0");
    let started = Instant::now();
    let err = epilog(&agent, &slurm, "301", "0:0");
    let took = started.elapsed();
    // `job end` gives scontrol 5 s; scontrol itself would sleep 60 s.
    assert!(took < Duration::from_secs(40), "{took:?}");
    assert!(err.contains("timed out"), "{err}");
    wait_outcome(&agent, "301", "unknown");
}

/// The agent's `gpucost_agent_samples_total` now.
fn samples(agent: &Agent) -> f64 {
    agent
        .metrics()
        .get("gpucost_agent_samples_total", &[])
        .unwrap_or(0.0)
}

/// Waits until the agent has finished `n` more sampling cycles (each reads the processes and
/// looks at the cgroups with `FAST`).
fn wait_cycles(agent: &Agent, n: u32) {
    let from = samples(agent);
    let deadline = Instant::now() + Duration::from_secs(20);
    while samples(agent) < from + f64::from(n) {
        assert!(Instant::now() < deadline, "the agent stopped sampling");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The job once its outcome is `outcome` (a hook has its answer before the TCP API's next
/// snapshot, which may not have the job yet).
fn wait_outcome(agent: &Agent, id: &str, outcome: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = agent.get(&format!("/api/v1/jobs/{id}"));
        if status == 200 {
            let j: serde_json::Value = serde_json::from_str(&body).unwrap();
            if j["outcome"] == outcome {
                return j;
            }
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not end {outcome}: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn issue_16_a_slurm_job_whose_cgroup_is_gone_ends_though_its_epilog_never_came() {
    let slurm = FakeSlurm::new();
    let dir = tempfile::tempdir().unwrap();
    let cgroups = dir.path().join("cgroup");
    // cgroup v2 (Slurm's cgroup/v2 plugin): system.slice/slurmstepd.scope/job_ID/step_0/...
    let v2 = cgroups.join("system.slice/slurmstepd.scope/job_401/step_0/user/task_0");
    // cgroup v1 (cgroup/v1): CONTROLLER/slurm_NODE/uid_UID/job_ID/step_...
    let v1 = cgroups.join("freezer/slurm_node1/uid_1001/job_402/step_batch");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::create_dir_all(&v1).unwrap();
    let root = cgroups.to_str().unwrap();
    let env = [FAST[0], FAST[1], ("GPUCOST_ATTRIBUTION_CGROUP_ROOT", root)];
    let mut agent = Agent::start_in(dir.path(), &["--simulate", "demo"], &env);
    prolog(&agent, &slurm, "401", "0");
    prolog(&agent, &slurm, "402", "1");
    // 403 has no cgroup yet (no step started, a site without PrologFlags=Contain): it is not
    // taken for gone.
    prolog(&agent, &slurm, "403", "2");
    wait_cycles(&agent, 3);
    std::fs::remove_dir_all(cgroups.join("system.slice/slurmstepd.scope/job_401")).unwrap();
    std::fs::remove_dir_all(cgroups.join("freezer/slurm_node1/uid_1001/job_402")).unwrap();
    for id in ["401", "402"] {
        let j = wait_outcome(&agent, id, "unknown");
        assert!(j["ended_at"].as_f64().is_some(), "{j}");
    }
    agent.wait_for_log("its cgroup under", Duration::from_secs(5));
    wait_cycles(&agent, 3);
    assert_eq!(job_json(&agent, "403")["outcome"], "running");
    // The epilog that comes late changes nothing, and the agent says so.
    epilog(&agent, &slurm, "401", "0:0");
    assert_eq!(job_json(&agent, "401")["outcome"], "unknown");
    agent.wait_for_log("an ending of job 401 was refused", Duration::from_secs(5));

    // The agent restarts; meanwhile 403 ran and ended, and its epilog found no agent. Registered
    // before the agent started and without a cgroup now, it is over.
    agent.terminate();
    let agent = Agent::start_in(dir.path(), &["--simulate", "demo"], &env);
    wait_outcome(&agent, "403", "unknown");
}

#[test]
fn issue_16_a_new_job_on_a_ghosts_gpus_ends_the_ghost() {
    let slurm = FakeSlurm::new();
    let mut agent = Agent::start(&["--simulate", "demo"], FAST);
    // GPU 3 of the demo node runs nothing of its own.
    prolog(&agent, &slurm, "501", "3");
    // 501's epilog never reached the agent; Slurm gives GPU 3 to 502 (by UUID this time).
    let (_, body) = agent.get("/api/v1/gpus");
    let gpus: serde_json::Value = serde_json::from_str(&body).unwrap();
    let uuid = gpus["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["index"] == 3)
        .and_then(|g| g["uuid"].as_str())
        .unwrap()
        .to_string();
    prolog(&agent, &slurm, "502", &uuid);
    wait_outcome(&agent, "501", "unknown");
    wait_outcome(&agent, "502", "running");
    // A job on another GPU is left alone.
    prolog(&agent, &slurm, "503", "2");
    prolog(&agent, &slurm, "504", "1");
    wait_outcome(&agent, "503", "running");
    agent.wait_for_log(
        "ended as unknown: job 502 was registered",
        Duration::from_secs(5),
    );
    // The ghost is billed nothing more; 502 holds GPU 3.
    let gpu_s = |id: &str| {
        agent
            .metrics()
            .get("gpucost_job_gpu_seconds_total", &[("job_id", id)])
            .unwrap_or(0.0)
    };
    wait_cycles(&agent, 3);
    let (ghost, new) = (gpu_s("501"), gpu_s("502"));
    wait_cycles(&agent, 5);
    assert_eq!(gpu_s("501"), ghost, "an ended job is billed nothing more");
    assert!(gpu_s("502") > new);
}

fn spooled_files(state_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state_dir.join("spool"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn issue_16_hooks_that_cannot_reach_the_agent_are_spooled_and_replayed_at_their_time() {
    let slurm = FakeSlurm::new();
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start_in(dir.path(), &["--simulate", "demo"], FAST);
    let state = agent.state_dir.clone();
    let socket = agent.socket.clone();
    prolog(&agent, &slurm, "601", "3");
    // The agent restarts while 601 ends and 602 starts.
    agent.terminate();
    let state_flag = state.to_str().unwrap();
    let before_end = gpucost_core::clock::unix_now();
    let out = hook(
        &["job", "end", "--state-dir", state_flag],
        &socket,
        &slurm,
        &[("SLURM_JOB_ID", "601"), ("SLURM_JOB_EXIT_CODE2", "2:0")],
    );
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not reachable") && err.contains("kept in"),
        "{err}"
    );
    let out = hook(
        &["job", "start", "--state-dir", state_flag],
        &socket,
        &slurm,
        &[
            ("SLURM_JOB_ID", "602"),
            ("SLURM_JOB_USER", "alice"),
            ("SLURM_JOB_UID", "1001"),
            ("SLURM_JOB_GPUS", "2"),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let after_start = gpucost_core::clock::unix_now();
    assert_eq!(spooled_files(&state).len(), 2);
    std::thread::sleep(Duration::from_millis(200));
    let agent = Agent::start_in(dir.path(), &["--simulate", "demo"], FAST);
    let j = wait_outcome(&agent, "601", "failed");
    assert_eq!(
        (j["exit_code"].as_i64(), j["reason"].as_str()),
        (Some(2), Some("exit_code"))
    );
    // It ended when its epilog ran, not when the agent came back.
    let ended = j["ended_at"].as_f64().unwrap();
    assert!(
        before_end <= ended && ended <= after_start,
        "{ended} {before_end} {after_start}"
    );
    let j = wait_outcome(&agent, "602", "running");
    let started = j["started_at"].as_f64().unwrap();
    assert!(before_end <= started && started <= after_start, "{started}");
    assert_eq!(j["user"], "alice");
    assert_eq!(j["scheduler"], "slurm");
    assert!(
        spooled_files(&state).is_empty(),
        "{:?}",
        spooled_files(&state)
    );
}

#[test]
fn issue_16_an_agent_that_does_not_answer_is_a_timeout_and_the_hook_is_spooled() {
    // A socket that accepts and never answers: an agent hung at that moment.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hung.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let slurm = FakeSlurm::new();
    let state = dir.path().join("state");
    let started = Instant::now();
    let out = hook(
        &["job", "end", "--state-dir", state.to_str().unwrap()],
        &socket,
        &slurm,
        &[("SLURM_JOB_ID", "701"), ("SLURM_JOB_EXIT_CODE2", "1:0")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    // Bounded by the client's 3 s timeout (a wide margin for a loaded machine), not by the
    // agent, which never answers.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?} {err}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        err.contains("timed out") && err.contains("kept in"),
        "{err}"
    );
    assert_eq!(spooled_files(&state).len(), 1);
    // `gpucost run` says so too, and runs the command.
    let out = Command::new(agent_bin())
        .args(["run", "--", "sh", "-c", "exit 4"])
        .env("GPUCOST_SOCKET", &socket)
        .env_remove("GPUCOST_JOB_ID")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("timed out") && err.contains("untracked"),
        "{err}"
    );
}

#[test]
fn issue_16_a_job_id_reused_after_a_controller_reset_is_a_new_job_and_the_old_keeps_its_record() {
    let slurm = FakeSlurm::new();
    slurm.job("801", "COMPLETED", "None", "0:0");
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start_in(dir.path(), &["--simulate", "demo"], FAST);
    prolog(&agent, &slurm, "801", "3");
    wait_cycles(&agent, 2);
    epilog(&agent, &slurm, "801", "0:0");
    let first = wait_outcome(&agent, "801", "succeeded");
    let started = first["started_at"].as_f64().unwrap();
    // The agent restarts (the first 801 is now only in the ledger), then slurmctld, its state
    // reset, hands out 801 again.
    agent.terminate();
    let agent = Agent::start_in(dir.path(), &["--simulate", "demo"], FAST);
    prolog(&agent, &slurm, "801", "3");
    wait_outcome(&agent, "801", "running");
    wait_cycles(&agent, 3);
    let out = Command::new(agent_bin())
        .args(["report", "--format", "json", "--state-dir"])
        .arg(&agent.state_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = doc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["job_id"].as_str().or(j["id"].as_str()))
        .filter(|id| id.starts_with("801"))
        .collect();
    let kept = format!("801@{}", started as i64);
    assert!(
        ids.contains(&"801") && ids.contains(&kept.as_str()),
        "{ids:?}"
    );
}

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn issue_16_the_shipped_prolog_and_epilog_wrappers_register_and_end_a_job_and_never_fail() {
    let slurm = FakeSlurm::new();
    slurm.job("901", "CANCELLED", "None", "0:15");
    let agent = Agent::start(&["--simulate", "demo"], FAST);
    // As slurmd runs them: no arguments, a bare environment with the job's variables.
    let run = |script: &str, socket: &Path, env: &[(&str, &str)]| {
        let mut c = Command::new("/bin/sh");
        c.arg(repo().join("deploy/slurm").join(script))
            .env_clear()
            .env("GPUCOST", agent_bin())
            .env("GPUCOST_SOCKET", socket)
            .env("GPUCOST_STATE_DIR", slurm.path().join("hook-state"))
            .env("SLURM_JOB_ID", "901")
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = run(
        "gpucost-prolog.sh",
        &agent.socket,
        &[
            ("SLURM_JOB_USER", "alice"),
            ("SLURM_JOB_UID", "1001"),
            ("SLURM_JOB_GPUS", "3"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let j = wait_outcome(&agent, "901", "running");
    assert_eq!(
        (j["user"].as_str(), j["scheduler"].as_str()),
        (Some("alice"), Some("slurm"))
    );
    // The epilog sets its own PATH; the stand-in scontrol is reached through /usr/local/bin in
    // a real install, here through the PATH it keeps in front.
    let out = {
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(format!(
                "sed 's|^PATH=\"|PATH=\"{}:|' {} | sh",
                slurm.path().display(),
                repo().join("deploy/slurm/gpucost-epilog.sh").display()
            ))
            .env_clear()
            .env("GPUCOST", agent_bin())
            .env("GPUCOST_SOCKET", &agent.socket)
            .env("SLURM_JOB_ID", "901")
            .env("SLURM_JOB_EXIT_CODE2", "0:0")
            .stdin(Stdio::null());
        c.output().unwrap()
    };
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    wait_outcome(&agent, "901", "cancelled");
    // Without an agent, and without gpucost at all, the hooks still exit 0.
    let none = slurm.path().join("none.sock");
    for script in ["gpucost-prolog.sh", "gpucost-epilog.sh"] {
        assert_eq!(run(script, &none, &[]).status.code(), Some(0), "{script}");
        let out = Command::new("/bin/sh")
            .arg(repo().join("deploy/slurm").join(script))
            .env_clear()
            .env("GPUCOST", "/nonexistent/gpucost")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{script}");
    }
}

#[test]
fn issue_16_the_unit_starts_before_slurmd() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/gpucost.service")).unwrap();
    assert!(
        unit.lines().any(|l| l.trim() == "Before=slurmd.service"),
        "jobs started at boot must find the agent listening"
    );
}

#[test]
fn issue_16_a_job_the_controller_shows_finished_or_no_longer_knows_ends_as_it_says() {
    let slurm = FakeSlurm::new();
    for id in ["1001", "1003"] {
        slurm.job(id, "RUNNING", "None", "0:0");
    }
    // The agent finds scontrol on its PATH, and asks every 200 ms here (5 min by default).
    let path = format!(
        "{}:{}",
        slurm.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [
        FAST[0],
        FAST[1],
        ("PATH", path.as_str()),
        ("GPUCOST_ATTRIBUTION_SCONTROL_INTERVAL", "200ms"),
    ];
    let mut agent = Agent::start(&["--simulate", "demo"], &env);
    agent.wait_for_log("asking", Duration::from_secs(5));
    prolog(&agent, &slurm, "1001", "1");
    prolog(&agent, &slurm, "1003", "3");
    // 1001 finished (its epilog never reached the agent); slurmctld still shows it.
    slurm.job("1001", "TIMEOUT", "TimeLimit", "0:15");
    let j = wait_outcome(&agent, "1001", "failed");
    assert_eq!(j["reason"], "time_limit");
    // 1002 is long gone: slurmctld has forgotten it (MinJobAge).
    prolog(&agent, &slurm, "1002", "2");
    wait_outcome(&agent, "1002", "unknown");
    agent.wait_for_log("slurmctld no longer knows it", Duration::from_secs(5));
    // 1003 runs on.
    let asked = slurm.calls().matches("show job 1003").count();
    let deadline = Instant::now() + Duration::from_secs(20);
    while slurm.calls().matches("show job 1003").count() < asked + 2 {
        assert!(Instant::now() < deadline, "the agent stopped asking");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(job_json(&agent, "1003")["outcome"], "running");
}
