//! Jobs end to end: `gpucost run` and `gpucost job` against a running agent over its socket,
//! ownership through SO_PEERCRED, and a `kill -9` of the agent mid-job.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use gpucost_integration_tests::{agent_bin, write_scenario, Agent, Metrics};

/// One GPU with a steady Slurm job (id 41871) on it, for a whole hour.
const STEADY_JOB: &str = r#"
name = "steady-job"
duration_s = 3600
ripple = 0.0
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[job]]
name = "pretrain"
id = "41871"
user = "alice"
uid = 1001
pid = 4101
gpus = [0]
[[job.phase]]
seconds = 3600
utilization = 0.9
power_w = 500
memory_mib = 10000
"#;

const FAST: &[(&str, &str)] = &[
    ("GPUCOST_SAMPLING_INTERVAL", "100ms"),
    ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "100ms"),
];

fn gpucost(args: &[&str], socket: &Path) -> Command {
    let mut c = Command::new(agent_bin());
    c.args(args)
        .env("GPUCOST_SOCKET", socket)
        .env_remove("GPUCOST_JOB_ID");
    // A hook that cannot reach the agent spools into the state directory: a temporary one.
    if let Some(dir) = socket.parent() {
        c.env("GPUCOST_STATE_DIR", dir.join("hook-state"));
    }
    c.stdin(Stdio::null());
    c
}

fn job_json(agent: &Agent, id: &str) -> serde_json::Value {
    let (status, body) = agent.get(&format!("/api/v1/jobs/{id}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_job(
    agent: &Agent,
    id: &str,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = agent.get(&format!("/api/v1/jobs/{id}"));
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if cond(&v) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "job {id}: timed out waiting for {what}; last: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_passes_the_exit_code_and_a_failure_is_recorded() {
    let agent = Agent::start(&["--simulate", "demo"], FAST);
    let out = gpucost(
        &[
            "run",
            "--name",
            "exit3",
            "--label",
            "team=nlp",
            "--",
            "sh",
            "-c",
            "echo $GPUCOST_JOB_ID; exit 3",
        ],
        &agent.socket,
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        !id.is_empty(),
        "the command sees its job id in GPUCOST_JOB_ID"
    );
    let j = wait_job(&agent, &id, "outcome", |j| j["outcome"] != "running");
    assert_eq!(j["outcome"], "failed");
    assert_eq!(j["exit_code"], 3);
    assert_eq!(j["name"], "exit3");
    assert_eq!(j["labels"]["team"], "nlp");
    assert_eq!(j["user"], "root");
    let m = agent.wait_for_metrics(
        "the failed job counted",
        Duration::from_secs(5),
        |m: &Metrics| m.get("gpucost_jobs_finished_total", &[("outcome", "failed")]) == Some(1.0),
    );
    assert_eq!(m.get("gpucost_job_failed", &[("job_id", &id)]), Some(1.0));
    assert_eq!(m.get("gpucost_job_running", &[("job_id", &id)]), Some(0.0));

    // A command that succeeds.
    let out = gpucost(&["run", "--", "true"], &agent.socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    agent.wait_for_metrics(
        "the good job counted",
        Duration::from_secs(5),
        |m: &Metrics| {
            m.get("gpucost_jobs_finished_total", &[("outcome", "succeeded")]) == Some(1.0)
        },
    );
    // A command that does not exist: 127, like a shell.
    let out = gpucost(&["run", "--", "/nonexistent/cmd"], &agent.socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
}

#[test]
fn sigterm_to_run_reaches_the_command() {
    let agent = Agent::start(&["--simulate", "demo"], FAST);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("got-term");
    let script = format!(
        "trap 'echo term > {}; exit 7' TERM; echo started; while true; do sleep 0.05; done",
        marker.display()
    );
    let mut child = gpucost(
        &["run", "--name", "trap", "--", "sh", "-c", &script],
        &agent.socket,
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    // Wait until the job is registered and the shell runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let (_, body) = agent.get("/api/v1/jobs");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(j) = v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "trap")
        {
            break j["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "job never registered");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(7),
        "gpucost run exits with the command's code"
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        "term",
        "the command got SIGTERM"
    );
    let j = wait_job(&agent, &id, "outcome", |j| j["outcome"] != "running");
    assert_eq!(
        (j["outcome"].as_str(), j["exit_code"].as_i64()),
        (Some("failed"), Some(7))
    );
}

#[test]
fn run_without_an_agent_warns_and_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = gpucost(
        &["run", "--", "sh", "-c", "echo ran; exit 5"],
        &dir.path().join("none.sock"),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ran");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("warning").count(), 1, "one warning: {err}");
    assert!(
        err.contains("not reachable") && err.contains("untracked"),
        "{err}"
    );
    // Scheduler hooks never fail, even with no agent and no job id.
    for args in [
        &["job", "start", "--id", "1"][..],
        &["job", "end", "--id", "1"],
        &["job", "start"],
    ] {
        let out = gpucost(args, &dir.path().join("none.sock"))
            .env_remove("SLURM_JOB_ID")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
    }
    // What had a job id was kept for the agent (issue 16): one start, one end.
    let spooled = std::fs::read_dir(dir.path().join("hook-state/spool"))
        .unwrap()
        .count();
    assert_eq!(spooled, 2);
}

fn as_user(mut c: Command, uid: u32) -> Output {
    c.uid(uid).gid(uid);
    c.output().unwrap()
}

#[test]
fn another_users_uid_cannot_end_a_job() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test switches uids and must run as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = Agent::start_in(
        dir.path(),
        &["--simulate", "demo"],
        &[FAST[0], FAST[1], ("GPUCOST_SOCKET_MODE", "0666")],
    );
    // A prolog (root) registers job 900 for uid 1001 with GPU 1.
    let out = gpucost(
        &[
            "job", "start", "--id", "900", "--uid", "1001", "--user", "alice", "--gpus", "1",
        ],
        &agent.socket,
    )
    .output()
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("registered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another user tries to end it, and to register over it: refused, nothing changes.
    let out = as_user(
        gpucost(
            &["job", "end", "--id", "900", "--exit-code", "0"],
            &agent.socket,
        ),
        1002,
    );
    assert_eq!(out.status.code(), Some(0), "hooks never fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403") && err.contains("another user"), "{err}");
    let out = as_user(
        gpucost(
            &["job", "start", "--id", "900", "--label", "team=x"],
            &agent.socket,
        ),
        1002,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    let j = job_json(&agent, "900");
    assert_eq!(j["outcome"], "running");
    assert!(j["labels"].get("team").is_none());
    // Its owner may.
    let out = as_user(
        gpucost(
            &["job", "end", "--id", "900", "--exit-code", "0"],
            &agent.socket,
        ),
        1001,
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ended (succeeded)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing over TCP mutates.
    let (status, _) = post_tcp(&agent.addr, "/api/v1/jobs", "{}");
    assert_eq!(status, 405);
}

fn post_tcp(addr: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "POST {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out)
}

#[test]
fn kill_9_mid_job_then_restart_resumes_without_going_back() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "steady.toml", STEADY_JOB);
    let cost = |m: &Metrics| {
        m.get(
            "gpucost_job_cost_total",
            &[("job_id", "41871"), ("component", "gpu_time")],
        )
    };
    let mut agent = Agent::start_in(dir.path(), &["--simulate", &scenario], FAST);
    let before = agent.wait_for_metrics("the job costing money", Duration::from_secs(10), |m| {
        cost(m).is_some_and(|c| c > 0.0)
    });
    std::thread::sleep(Duration::from_millis(700));
    let last = cost(&agent.metrics()).unwrap();
    assert!(last > cost(&before).unwrap());
    agent.kill9();

    let again = Agent::start_in(dir.path(), &["--simulate", &scenario], FAST);
    let first = again.metrics();
    let resumed = cost(&first).expect("the job is back under its id right after the restart");
    // The exported total is what was persisted, never less than what was shown before: a crash
    // loses only what accrued after the last persist (here 100 ms), which was never shown.
    assert!(resumed >= last, "counter went back: {last} -> {resumed}");
    let j = job_json(&again, "41871");
    assert_eq!(j["outcome"], "running");
    assert_eq!(j["scheduler"], "slurm");
    assert_eq!(j["user"], "alice");
    let m = again.wait_for_metrics("the job to keep costing", Duration::from_secs(5), |m| {
        cost(m).unwrap() > resumed
    });
    assert_eq!(m.find("gpucost_job_info", &[("job_id", "41871")]).len(), 1);
    // The GPU's energy counter continues too.
    assert!(m.gpu("gpucost_gpu_energy_joules_total", 0).unwrap() > 0.0);
}

#[test]
fn report_reads_the_agents_ledger() {
    let mut agent = Agent::start(&["--simulate", "demo"], FAST);
    for (team, code) in [("nlp", "0"), ("nlp", "2"), ("vision", "0")] {
        let label = format!("team={team}");
        let out = gpucost(
            &[
                "run",
                "--label",
                &label,
                "--",
                "sh",
                "-c",
                &format!("sleep 0.3; exit {code}"),
            ],
            &agent.socket,
        )
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(code.parse().unwrap()));
    }
    // The demo's own jobs (Slurm job 41871 and the bare processes) are found by attribution.
    agent.wait_for_metrics(
        "demo jobs and three endings persisted",
        Duration::from_secs(10),
        |m: &Metrics| {
            m.get("gpucost_jobs_finished_total", &[("outcome", "succeeded")]) == Some(2.0)
                && m.find("gpucost_job_info", &[("job_id", "41871")]).len() == 1
        },
    );
    let state = agent.state_dir.display().to_string();
    let report = |args: &[&str]| {
        let out = Command::new(agent_bin())
            .args(["report", "--state-dir", &state])
            .args(args)
            .env_remove("GPUCOST_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, table, err) = report(&[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        table.contains("41871") && table.contains("TOTAL") && table.contains("failed"),
        "{table}"
    );

    let (code, json, _) = report(&["--format", "json", "--group-by", "label:team"]);
    assert_eq!(code, Some(0));
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let groups = doc["groups"].as_array().unwrap();
    let nlp = groups
        .iter()
        .find(|g| g["group"] == "nlp")
        .expect("an nlp group");
    assert_eq!(nlp["jobs"], 2);
    assert_eq!(nlp["failed"], 1);
    assert!(
        groups.iter().any(|g| g["group"] == "(none)"),
        "the demo's jobs have no team label"
    );

    let (code, csv, _) = report(&["--format", "csv", "--job", "41871"]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id,"), "{csv}");
    assert!(lines[1].starts_with("41871,"), "{csv}");

    // The two break-even reports below must read the same ledger: a running agent adds GPU
    // time between them (it persists every 100 ms here), so it is stopped first (its last
    // persist on SIGTERM).
    assert!(agent.terminate().success());
    // The demo's GPUs are H100s priced in the example config: break-even is computable.
    let (code, be, err) = report(&[
        "--breakeven",
        "--config",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/config.example.toml"
        ),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        be.contains("Break-even, extrapolated to a month from")
            && be.contains("NVIDIA H100 80GB HBM3: 4 GPU(s)"),
        "{be}"
    );
    // A newcomer's report needs no config: the agent recorded the prices it counted with in
    // the ledger (issue 20: this failed with "no entry matches GPU model").
    let (code, recorded, err) = report(&["--breakeven"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(recorded, be);

    // What if: every lever of every job, priced with the agent's prices (the example's H100
    // has spot and reserved rates; the demo's GPUs have pipe activity).
    let (code, json, err) = report(&["--what-if", "--format", "json"]);
    assert_eq!(code, Some(0), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let total = &doc["what_if"]["total"];
    let actual = total["actual"].as_f64().unwrap();
    assert!(actual > 0.0, "{json}");
    for lever in ["spot", "reserved", "off_peak", "no_idle"] {
        let v = total[lever]
            .as_f64()
            .unwrap_or_else(|| panic!("{lever}: {json}"));
        assert!(
            v > 0.0 && v <= actual * 1.1 + 1e-9,
            "{lever} {v} vs {actual}"
        );
    }
    assert!(
        total["reserved"].as_f64().unwrap() < actual,
        "reserved is cheaper: {json}"
    );
    let (code, table, err) = report(&["--what-if", "--group-by", "label:team"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        table.contains("What if") && table.contains("RESERVED"),
        "{table}"
    );
    let (code, _, err) = report(&["--what-if", "--spot-rerun", "2"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("share from 0 to 1"), "{err}");

    // `gpucost report | head`: the reader is gone before the report is written. It ends
    // quietly (it panicked with "failed printing to stdout: Broken pipe").
    let mut child = Command::new(agent_bin())
        .args(["report", "--state-dir", &state])
        .env_remove("GPUCOST_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let (code, _, err) = report(&["--job", "no-such-job"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no-such-job"), "{err}");
    let (code, _, err) = report(&["--format", "xml"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("table, json or csv"), "{err}");
    let (code, _, err) = report(&["--group-by", "team"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("label:KEY"), "{err}");
    let missing = Command::new(agent_bin())
        .args(["report", "--state-dir", "/nonexistent/state"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/state"));
}

/// Issue 13, item 10: `gpucost report --format csv` wrote job data as it came, so a job named
/// `=cmd|' /C calc'!A0` was a formula to the spreadsheet that opened the report. Cells that start
/// like a formula get a `'` in front; numbers, and the JSON report, are as they were.
#[test]
fn issue_13_report_csv_cells_that_start_like_a_formula_get_an_apostrophe() {
    let agent = Agent::start(&["--simulate", "demo"], FAST);
    let out = gpucost(
        &[
            "run",
            "--name",
            "=cmd|' /C calc'!A0",
            "--label",
            "team=+SUM(1)",
            "--",
            "true",
        ],
        &agent.socket,
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    // Root (a prolog) registers a job for a user, with an id and a user of its choosing.
    for args in [
        &[
            "job",
            "start",
            "--id=-2+3",
            "--name",
            "@x",
            "--user",
            "=user",
            "--uid",
            "1001",
        ][..],
        &["job", "end", "--id=-2+3", "--exit-code", "0"],
    ] {
        let out = gpucost(args, &agent.socket).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("registered") || err.contains("ended"), "{err}");
    }
    agent.wait_for_metrics(
        "both endings persisted",
        Duration::from_secs(10),
        |m: &Metrics| {
            m.get("gpucost_jobs_finished_total", &[("outcome", "succeeded")]) == Some(2.0)
        },
    );
    let report = |args: &[&str]| {
        let out = Command::new(agent_bin())
            .args(["report", "--state-dir"])
            .arg(&agent.state_dir)
            .args(args)
            .env_remove("GPUCOST_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let csv = report(&["--format", "csv"]);
    assert!(
        csv.lines()
            .any(|l| l.contains(",'=cmd|' /C calc'!A0,root,0,gpucost,")
                && l.contains(",\"{\"\"team\"\":\"\"+SUM(1)\"\"}\",")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("'-2+3,'@x,'=user,1001,gpucost,")),
        "{csv}"
    );
    let csv = report(&["--format", "csv", "--group-by", "label:team"]);
    assert!(csv.lines().any(|l| l.starts_with("'+SUM(1),1,0,")), "{csv}");
    let json = report(&["--format", "json", "--job=-2+3"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["jobs"][0]["name"], "@x", "{json}");
}

#[test]
fn a_shared_gpu_is_split_by_per_process_sm_utilization_through_nvml() {
    // Two processes share GPU 0 through the real NVML code path (fake library): SM utilization
    // 60% and 20%, so the cost splits 3:1, although the second holds three times the memory.
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
name = "shared"
duration_s = 3600
ripple = 0.0
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[job]]
name = "big"
pid = 3000001
gpus = [0]
[[job.phase]]
seconds = 3600
utilization = 0.6
power_w = 400
memory_mib = 1000
[[job]]
name = "small"
pid = 3000002
gpus = [0]
[[job.phase]]
seconds = 3600
utilization = 0.2
power_w = 200
memory_mib = 3000
"#;
    let scenario = write_scenario(dir.path(), "shared.toml", text);
    let lib = gpucost_integration_tests::fake_nvml_lib()
        .display()
        .to_string();
    let agent = Agent::start(
        &["--nvml-lib", &lib],
        &[FAST[0], FAST[1], ("GPUCOST_FAKE_NVML_SCENARIO", &scenario)],
    );
    let secs = |m: &Metrics, id: &str| m.get("gpucost_job_gpu_seconds_total", &[("job_id", id)]);
    let m = agent.wait_for_metrics("both jobs accounted", Duration::from_secs(10), |m| {
        secs(m, "unattributed:3000001").unwrap_or(0.0) > 0.5
            && secs(m, "unattributed:3000002").unwrap_or(0.0) > 0.0
    });
    let big = secs(&m, "unattributed:3000001").unwrap();
    let small = secs(&m, "unattributed:3000002").unwrap();
    assert!((big / small - 3.0).abs() < 1e-6, "shares {big} : {small}");
    let gpu = m.gpu("gpucost_gpu_cost_total", 0).unwrap();
    let jobs: f64 = ["unattributed:3000001", "unattributed:3000002"]
        .iter()
        .map(|id| {
            ["gpu_time", "energy", "overhead"]
                .iter()
                .map(|c| {
                    m.get(
                        "gpucost_job_cost_total",
                        &[("job_id", id), ("component", c)],
                    )
                    .unwrap()
                })
                .sum::<f64>()
        })
        .sum();
    assert!(
        (gpu - jobs).abs() < 1e-9 * gpu.max(1.0),
        "GPU {gpu} vs jobs {jobs}: no cost lost or counted twice"
    );
}

/// The quick start as a user who is not root: with nothing naming a state directory or a
/// socket, the agent keeps its ledger in `$XDG_STATE_HOME/gpucost` (here `$HOME/.local/state`)
/// and its socket at `$XDG_RUNTIME_DIR/gpucost.sock`, says so once, and `gpucost run` and
/// `gpucost report` of that user find them (issue 20: it warned that it could not open
/// `/var/lib/gpucost` and `/run/gpucost/agent.sock`, and nothing said what to do).
#[test]
fn a_user_who_is_not_root_gets_their_own_state_and_socket() {
    let uid = 1002;
    let home = tempfile::tempdir().unwrap();
    let runtime = home.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    for d in [home.path(), &runtime] {
        std::os::unix::fs::chown(d, Some(uid), Some(uid)).unwrap();
    }
    let port = gpucost_integration_tests::free_port();
    let addr = format!("127.0.0.1:{port}");
    let user_env = |c: &mut Command| {
        c.env_clear()
            .env("HOME", home.path())
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .uid(uid)
            .gid(uid);
    };
    let mut agent = Command::new(agent_bin());
    agent.args(["agent", "--simulate", "demo", "--listen", &addr]);
    user_env(&mut agent);
    agent.env("GPUCOST_SAMPLING_INTERVAL", "100ms");
    let log = home.path().join("agent.log");
    let mut agent = agent
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let state = home.path().join(".local/state/gpucost");
    let socket = runtime.join("gpucost.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(socket.exists() && state.join("ledger.db").exists()) {
        assert!(
            Instant::now() < deadline,
            "no ledger in {} or socket {}:\n{}",
            state.display(),
            socket.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("not running as root") && text.contains(&socket.display().to_string()),
        "{text}"
    );
    assert!(!text.contains("/var/lib/gpucost"), "{text}");

    // `gpucost run` of that user reaches it (where no node agent's socket exists).
    if !Path::new("/run/gpucost/agent.sock").exists() {
        let mut run = Command::new(agent_bin());
        run.args(["run", "--name", "mine", "--", "true"]);
        user_env(&mut run);
        let out = run.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(!err.contains("warning"), "{err}");
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    agent.wait().unwrap();

    // `gpucost report` of that user reads that ledger (where no node agent's ledger exists).
    if !Path::new("/var/lib/gpucost/ledger.db").exists() {
        let mut report = Command::new(agent_bin());
        report.arg("report");
        user_env(&mut report);
        let out = report.output().unwrap();
        let table = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(table.contains("41871") && table.contains("mine"), "{table}");
    }
}
