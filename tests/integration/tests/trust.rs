//! Issue 13: nobody can game the bill through the unix socket. Each case is what a hostile local
//! user tried on a node whose socket every user may use (`socket_mode = "0666"`), done the same
//! way: a process of another uid posting to the real socket of the real binary. Every refusal is
//! a JSON error with the reason, and changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gpucost::identity::procfs::write_fixture;
use gpucost_core::attribute::process::ProcInfo;
use gpucost_integration_tests::{agent_bin, fake_nvml_lib, write_scenario, Agent};

/// POSTs `body` to `path` on the agent's socket as `uid`; (status, JSON body).
fn post_as(agent: &Agent, uid: u32, path: &str, body: &str) -> (u16, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_socket-post"))
        .arg(&agent.socket)
        .arg(path)
        .arg(body)
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run socket-post");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let (status, body) = text.split_once('\n').expect("status line");
    let json = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status.parse().unwrap(), json)
}

fn must_run_as_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test switches uids and must run as root (CI does)"
    );
}

fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A `sleep` owned by `uid`, killed when dropped.
struct Sleeper(Child);

impl Sleeper {
    fn start(uid: u32) -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("60")
                .uid(uid)
                .gid(uid)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn jobs(agent: &Agent) -> Vec<serde_json::Value> {
    let (_, body) = agent.get("/api/v1/jobs");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["jobs"].as_array().unwrap().clone()
}

#[test]
fn hostile_registrations_are_refused_with_the_reason() {
    must_run_as_root();
    let dir = open_dir();
    let agent = Agent::start_in(
        dir.path(),
        &["--simulate", "demo"],
        &[("GPUCOST_SOCKET_MODE", "0666")],
    );
    let mallory = 1002;
    let alices = Sleeper::start(1001);
    let own = Sleeper::start(mallory);
    let cases: Vec<(String, u16, &str)> = vec![
        // pid 1 is everyone's ancestor: registering it took over the whole node's billing.
        (r#"{"id":"x","pid":1}"#.into(), 403, "belongs to uid 0"),
        (
            format!(r#"{{"id":"x","pid":{}}}"#, alices.pid()),
            403,
            "belongs to uid 1001",
        ),
        (r#"{"id":"x","pid":0}"#.into(), 400, "pid 0"),
        (
            format!(
                r#"{{"id":"x","pid":{},"gpus":["0","1","2","3"]}}"#,
                own.pid()
            ),
            403,
            "gpus: only root",
        ),
        (
            format!(r#"{{"id":"x","pid":{},"scheduler":"slurm"}}"#, own.pid()),
            403,
            "scheduler: only root",
        ),
        (r#"{"id":"x"}"#.into(), 400, "pid: a user's registration"),
        (
            format!(r#"{{"id":"x","pid":{},"uid":1001}}"#, own.pid()),
            403,
            "another user",
        ),
    ];
    for (body, status, why) in &cases {
        let (got, json) = post_as(&agent, mallory, "/api/v1/jobs", body);
        let err = json["error"].as_str().unwrap_or_default();
        assert_eq!(got, *status, "{body}: {json}");
        assert!(err.contains(why), "{body}: {err}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !jobs(&agent).iter().any(|j| j["id"] == "x"),
        "no refusal registered anything"
    );
    // Root's GPUs must exist.
    let (got, json) = post_as(&agent, 0, "/api/v1/jobs", r#"{"id":"r","gpus":["7"]}"#);
    assert_eq!(got, 400, "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("no GPU \"7\""),
        "{json}"
    );
    // What a user may do: register their own process.
    let (got, json) = post_as(
        &agent,
        mallory,
        "/api/v1/jobs",
        &format!(r#"{{"id":"mine","pid":{}}}"#, own.pid()),
    );
    assert_eq!(got, 201, "{json}");
    assert_eq!(json["uid"], mallory);
}

#[test]
fn a_squatted_slurm_job_id_takes_roots_identity() {
    must_run_as_root();
    let dir = open_dir();
    let agent = Agent::start_in(
        dir.path(),
        &["--simulate", "demo"],
        &[("GPUCOST_SOCKET_MODE", "0666")],
    );
    let own = Sleeper::start(1002);
    // Mallory registers job 77 before its prolog does, with her own name and labels.
    let (got, json) = post_as(
        &agent,
        1002,
        "/api/v1/jobs",
        &format!(
            r#"{{"id":"77","pid":{},"name":"free compute","labels":{{"team":"mallory"}}}}"#,
            own.pid()
        ),
    );
    assert_eq!(got, 201, "{json}");
    // The prolog (root) registers job 77 for alice.
    let out = Command::new(agent_bin())
        .args([
            "job", "start", "--id", "77", "--uid", "1001", "--user", "alice", "--name", "llama",
            "--label", "team=nlp",
        ])
        .env("GPUCOST_SOCKET", &agent.socket)
        .env("SLURM_JOB_ID", "77")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let j = loop {
        let j = jobs(&agent).into_iter().find(|j| j["id"] == "77").unwrap();
        if j["user"] == "alice" || Instant::now() > deadline {
            break j;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (&j["name"], &j["user"], &j["uid"], &j["scheduler"]),
        (
            &serde_json::json!("llama"),
            &serde_json::json!("alice"),
            &serde_json::json!(1001),
            &serde_json::json!("slurm")
        ),
        "{j}"
    );
    assert_eq!(j["labels"], serde_json::json!({"team": "nlp"}), "{j}");
    // And mallory can no longer end it.
    let (got, _) = post_as(&agent, 1002, "/api/v1/jobs/77/end", r#"{"exit_code":0}"#);
    assert_eq!(got, 403);
}

/// One GPU, on which the fake NVML library shows two processes: 4242 (mallory's, whose
/// environment names alice's job) and 4343 (alice's own, in the same job).
const TWO_PROCESSES: &str = r#"
name = "env-job-ids"
duration_s = 3600
ripple = 0.0
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[job]]
name = "mallory"
pid = 4242
gpus = [0]
[[job.phase]]
seconds = 3600
utilization = 0.5
power_w = 400
memory_mib = 10000
[[job]]
name = "alice"
pid = 4343
gpus = [0]
[[job.phase]]
seconds = 3600
utilization = 0.5
power_w = 400
memory_mib = 10000
"#;

/// A process of `uid` in a fake `/proc` tree, with `GPUCOST_JOB_ID=job` in its environment.
fn fake_process(root: &Path, pid: u32, uid: u32, job: &str) {
    let p = ProcInfo {
        pid,
        ppid: 1,
        uid,
        comm: "python3".into(),
        start_ticks: 777,
        ..ProcInfo::default()
    };
    write_fixture(
        root,
        &p,
        "0::/user.slice\n",
        &[&format!("GPUCOST_JOB_ID={job}")],
    );
}

#[test]
fn an_environment_job_id_does_not_bill_another_users_job() {
    let dir = open_dir();
    let scenario = write_scenario(dir.path(), "two.toml", TWO_PROCESSES);
    let proc_root = dir.path().join("proc");
    fake_process(&proc_root, 4242, 1002, "alice-run");
    fake_process(&proc_root, 4343, 1001, "alice-run");
    let agent = Agent::start_in(
        dir.path(),
        &["--nvml-lib", fake_nvml_lib().to_str().unwrap()],
        &[
            ("GPUCOST_FAKE_NVML_SCENARIO", scenario.as_str()),
            ("GPUCOST_ATTRIBUTION_PROC_ROOT", proc_root.to_str().unwrap()),
            ("GPUCOST_SAMPLING_INTERVAL", "100ms"),
            ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "100ms"),
        ],
    );
    // Alice's job, registered by root for her (as a prolog would).
    let out = Command::new(agent_bin())
        .args(["job", "start", "--id", "alice-run", "--uid", "1001"])
        .env("GPUCOST_SOCKET", &agent.socket)
        .env_remove("SLURM_JOB_ID")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let all = jobs(&agent);
    let gpu_s = |id: &str| {
        all.iter()
            .find(|j| j["id"] == id)
            .map(|j| j["usage"]["gpu_seconds"].as_f64().unwrap())
    };
    let alice = gpu_s("alice-run").expect("alice's job");
    let mallory = gpu_s("unattributed:4242").expect("mallory's process on its own");
    // Half the GPU each (equal memory): alice's job pays only for her own process.
    assert!(alice > 0.2 && mallory > 0.2, "{all:?}");
    assert!(
        (alice / mallory - 1.0).abs() < 0.35,
        "alice {alice}, mallory {mallory}"
    );
}

/// Issue 13: eight clients of one user registering in a loop froze sampling for 17 s while
/// /healthz said ok. Now the user's registrations stop at the per-user cap (429), requests wait
/// for the gaps between samples, and the samples keep their cadence.
#[test]
fn a_flood_of_registrations_does_not_stop_sampling() {
    must_run_as_root();
    let dir = open_dir();
    let agent = Agent::start_in(
        dir.path(),
        &["--simulate", "demo"],
        &[
            ("GPUCOST_SOCKET_MODE", "0666"),
            ("GPUCOST_SAMPLING_INTERVAL", "100ms"),
            ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "100ms"),
        ],
    );
    let own = Sleeper::start(1002);
    let samples = |a: &Agent| {
        a.metrics()
            .get("gpucost_agent_samples_total", &[])
            .unwrap_or(0.0)
    };
    let before = samples(&agent);
    let started = Instant::now();
    let seconds = 4.0;
    let body = format!(r#"{{"id":"flood-{{n}}-%","pid":{}}}"#, own.pid());
    let flooders: Vec<_> = (0..8)
        .map(|k| {
            Command::new(env!("CARGO_BIN_EXE_socket-post"))
                .args(["--flood", &seconds.to_string()])
                .arg(&agent.socket)
                .arg("/api/v1/jobs")
                .arg(body.replace('%', &k.to_string()))
                .uid(1002)
                .gid(1002)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // /healthz stays honest (and answers) throughout.
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        let (status, body) = agent.get("/healthz");
        assert_eq!(status, 200, "{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut answers: std::collections::BTreeMap<u16, u64> = Default::default();
    for f in flooders {
        let out = f.wait_with_output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let (status, n) = line.split_once(' ').unwrap();
            *answers.entry(status.parse().unwrap()).or_default() += n.parse::<u64>().unwrap();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let took = samples(&agent) - before;
    eprintln!("answers {answers:?}; {took} samples in {elapsed:.1} s at 100 ms");
    assert_eq!(
        answers.get(&201),
        Some(&64),
        "the per-user cap: {answers:?}"
    );
    assert!(answers.get(&429).copied().unwrap_or(0) > 100, "{answers:?}");
    assert!(
        took >= 0.6 * elapsed / 0.1,
        "{took} samples in {elapsed:.1} s: sampling was held back"
    );
    let theirs = jobs(&agent)
        .iter()
        .filter(|j| j["uid"] == 1002 && j["outcome"] == "running")
        .count();
    assert_eq!(theirs, 64);
}

/// Issue 13: SIGHUP (a closed terminal, an admin's reload habit) ended the agent without its
/// final persist. Now it persists and goes on.
#[test]
fn sighup_persists_and_the_agent_goes_on() {
    let dir = open_dir();
    let mut agent = Agent::start_in(
        dir.path(),
        &["--simulate", "demo"],
        &[
            // Nothing is persisted on the clock during the test: only the SIGHUP does it.
            ("GPUCOST_LEDGER_PERSIST_INTERVAL", "1h"),
            ("GPUCOST_SAMPLING_INTERVAL", "100ms"),
            ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "100ms"),
        ],
    );
    std::thread::sleep(Duration::from_millis(800));
    let state_dir = agent.state_dir.clone();
    let report = || {
        let out = Command::new(agent_bin())
            .args(["report", "--format", "json", "--state-dir"])
            .arg(&state_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["jobs"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(report(), 0, "nothing persisted yet");
    let pid = agent.pid().unwrap();
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    agent.wait_for_log("SIGHUP: persisting", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    while report() == 0 {
        assert!(Instant::now() < deadline, "SIGHUP persisted nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(agent.get("/healthz").0, 200, "still running");
    assert_eq!(agent.pid(), Some(pid));
}
