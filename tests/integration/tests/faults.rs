//! Faults: a hung GPU, a driver upgraded under the agent, NVML released on request (SIGUSR1),
//! `kill -9` during ledger writes over and over, a full and a read-only
//! state directory, a damaged ledger and a state directory that cannot be reached at start, a
//! second agent on the same state directory or socket, a stale socket, garbage on the job socket,
//! the socket's permissions.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gpucost_integration_tests::{agent_bin, fake_nvml_lib, write_scenario, Agent, Metrics};

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

const FAST: &[(&str, &str)] = &[
    ("GPUCOST_SAMPLING_INTERVAL", "100ms"),
    ("GPUCOST_SAMPLING_PROCESS_INTERVAL", "100ms"),
];

const ONE_JOB: &str = r#"
name = "one-job"
duration_s = 3600
ripple = 0.0
speed = 10
[[gpu]]
model = "NVIDIA H100 80GB HBM3"
memory_total_mib = 81559
power_limit_w = 700
idle_power_w = 70
[[job]]
name = "train"
id = "777"
pid = 3200001
gpus = [0]
[[job.phase]]
seconds = 3600
utilization = 0.9
power_w = 500
memory_mib = 1000
"#;

fn job_cost(m: &Metrics) -> Option<f64> {
    let parts: Option<Vec<f64>> = ["gpu_time", "energy", "overhead"]
        .iter()
        .map(|c| {
            m.get(
                "gpucost_job_cost_total",
                &[("job_id", "777"), ("component", c)],
            )
        })
        .collect();
    parts.map(|p| p.iter().sum())
}

/// Two idle H100s, 10 scenario seconds per wall second; `extra` adds top-level keys or events.
fn two_gpus(extra: &str) -> String {
    let gpu = "[[gpu]]\nmodel = \"NVIDIA H100 80GB HBM3\"\nmemory_total_mib = 81559\n\
               power_limit_w = 700\nidle_power_w = 70\n";
    format!("name = \"two-gpus\"\nduration_s = 3600\nripple = 0.0\nspeed = 10\n{extra}\n{gpu}{gpu}")
}

/// Issue 14, item 4: one of two GPUs hangs (every NVML call on it blocks, as on a wedged GPU
/// whose callers sleep in the driver). The other keeps its samples, /metrics stays fast,
/// /healthz stays 200 and names the stale GPU, and the hung GPU is down until its call returns,
/// then read again.
#[test]
fn issue_14_one_hung_gpu_stalls_neither_the_other_nor_liveness() {
    let dir = tempfile::tempdir().unwrap();
    // At 10x, every call on GPU 0 blocks from 1 s to 4 s (wall) after start.
    let text = two_gpus("[[event]]\nat_s = 10\ngpu = 0\nkind = \"hang\"\nseconds = 30\n");
    let scenario = write_scenario(dir.path(), "hang.toml", &text);
    let lib = fake_nvml_lib().display().to_string();
    let start = format!("{:.6}", unix_now());
    let agent = Agent::start(
        &["--nvml-lib", &lib],
        &[
            FAST[0],
            FAST[1],
            ("GPUCOST_FAKE_NVML_SCENARIO", &scenario),
            ("GPUCOST_FAKE_NVML_START_UNIX", &start),
        ],
    );
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(1800));
    let before = agent.metrics();
    let samples = |m: &Metrics| m.get("gpucost_agent_samples_total", &[]).unwrap();
    let errors_1 = |m: &Metrics| {
        m.find("gpucost_agent_sample_errors_total", &[("gpu", "1")])
            .len()
    };
    // Inside the hang: scrapes answer at once, /healthz stays 200 naming GPU 0, and GPU 1 is
    // read every cycle.
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(3500) {
        let t = Instant::now();
        let (status, _) = agent.get("/metrics");
        assert_eq!(status, 200);
        slowest = slowest.max(t.elapsed());
        let (status, body) = agent.get("/healthz");
        assert_eq!(status, 200, "one stuck GPU is no reason to restart: {body}");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(health["nvml_up"], true, "{body}");
        let stale = health["stale_gpus"].as_array().unwrap();
        assert_eq!(stale.len(), 1, "{body}");
        assert_eq!(stale[0]["gpu"], 0, "{body}");
        assert!(
            stale[0]["reason"]
                .as_str()
                .unwrap()
                .contains("has not returned"),
            "{body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = agent.metrics();
    assert!(
        samples(&during) - samples(&before) >= 10.0,
        "sampling goes on while GPU 0 hangs ({} -> {})",
        samples(&before),
        samples(&during)
    );
    assert_eq!(during.gpu("gpucost_gpu_up", 0), Some(0.0));
    assert_eq!(during.gpu("gpucost_gpu_up", 1), Some(1.0));
    assert!(during.gpu("gpucost_gpu_power_watts", 1).is_some());
    assert!(during.gpu("gpucost_gpu_power_watts", 0).is_none());
    assert_eq!(errors_1(&during), 0, "GPU 1 never failed: {}", during.text);
    assert_eq!(
        during.get(
            "gpucost_agent_sample_errors_total",
            &[("gpu", "0"), ("field", "all"), ("kind", "timeout")]
        ),
        Some(1.0),
        "the read that missed its deadline, counted once"
    );
    assert!(
        slowest < Duration::from_millis(100),
        "slowest scrape during the hang: {slowest:?}"
    );
    // Only the first cycle of the hang waited for it (at most 0.5 s of 100 ms ticks).
    let skipped = during
        .get("gpucost_agent_skipped_samples_total", &[])
        .unwrap_or(0.0);
    assert!(skipped <= 7.0, "{skipped} samples skipped");
    let m = agent.wait_for_metrics(
        "GPU 0 to answer again after the hang",
        Duration::from_secs(10),
        |m| m.gpu("gpucost_gpu_up", 0) == Some(1.0),
    );
    assert!(m.gpu("gpucost_gpu_unmeasured_seconds_total", 0).unwrap() > 1.0);
    assert_eq!(m.gpu("gpucost_gpu_unmeasured_seconds_total", 1), Some(0.0));
    let logs = agent.logs();
    assert!(logs.iter().any(|l| l.contains("a read has not returned")));
    assert!(logs
        .iter()
        .any(|l| l.contains("GPU 0") && l.contains("answers again")));
}

/// Issue 14, item 5: the driver is upgraded under the agent (from then on every call of the
/// NVML it holds answers LIB_RM_VERSION_MISMATCH). Every GPU fails; after a few cycles the agent
/// closes NVML (the Xid listener's handle too) and opens it again, and sampling resumes.
#[test]
fn issue_14_nvml_is_reopened_after_a_driver_upgrade_under_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    // The upgrade comes 2 s (wall) after start.
    let scenario = write_scenario(
        dir.path(),
        "upgrade.toml",
        &two_gpus("driver_upgrade_at_s = 20"),
    );
    let lib = fake_nvml_lib().display().to_string();
    // A shared start, so the timeline (and the upgrade) survives the library being reloaded.
    let start = format!("{:.6}", unix_now());
    let agent = Agent::start(
        &["--nvml-lib", &lib],
        &[
            FAST[0],
            FAST[1],
            ("GPUCOST_NVML_RETRY_INTERVAL", "200ms"),
            ("GPUCOST_FAKE_NVML_SCENARIO", &scenario),
            ("GPUCOST_FAKE_NVML_START_UNIX", &start),
        ],
    );
    let m = agent.wait_for_metrics("the re-open", Duration::from_secs(15), |m| {
        m.get("gpucost_agent_nvml_reopens_total", &[]) == Some(1.0)
            && m.get("gpucost_nvml_up", &[]) == Some(1.0)
            && m.gpu("gpucost_gpu_up", 0) == Some(1.0)
            && m.gpu("gpucost_gpu_up", 1) == Some(1.0)
    });
    for gpu in ["0", "1"] {
        let failed = m
            .get(
                "gpucost_agent_sample_errors_total",
                &[("gpu", gpu), ("field", "all"), ("kind", "failed")],
            )
            .unwrap_or(0.0);
        assert!(failed >= 3.0, "GPU {gpu} failed {failed} times");
    }
    let logs = agent.logs();
    let said = |what: &str| logs.iter().filter(|l| l.contains(what)).count();
    assert_eq!(said("cycles in a row"), 1, "{logs:#?}");
    assert!(
        logs.iter()
            .any(|l| l.contains("cycles in a row") && l.contains("version mismatch")),
        "{logs:#?}"
    );
    assert_eq!(said("GPU library up"), 2, "{logs:#?}");
    // Sampling goes on with the new library.
    let samples = m.get("gpucost_agent_samples_total", &[]).unwrap();
    let later = agent.wait_for_metrics("more samples", Duration::from_secs(5), |m| {
        m.get("gpucost_agent_samples_total", &[]).unwrap() >= samples + 5.0
    });
    assert_eq!(later.gpu("gpucost_gpu_up", 0), Some(1.0));
    assert_eq!(
        later.get("gpucost_agent_nvml_reopens_total", &[]),
        Some(1.0)
    );
}

/// Whether the process maps the (fake) NVML library: it does while it holds a handle, since
/// nvml-wrapper closes the library with the last `Nvml`.
fn maps_nvml(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .contains("libnvidia_ml.so")
}

/// Issue 14, item 13: SIGUSR1 makes the agent let go of NVML (its handles, the Xid listener's
/// too: the library is unloaded from the process) until SIGUSR2; meanwhile nothing is measured,
/// every GPU is down, gpucost_nvml_up is 0 and gpucost_nvml_paused 1, and /healthz stays 200.
#[test]
fn issue_14_sigusr1_lets_go_of_nvml_until_sigusr2() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "two.toml", &two_gpus(""));
    let lib = fake_nvml_lib().display().to_string();
    let start = format!("{:.6}", unix_now());
    let agent = Agent::start(
        &["--nvml-lib", &lib],
        &[
            FAST[0],
            FAST[1],
            ("GPUCOST_FAKE_NVML_SCENARIO", &scenario),
            ("GPUCOST_FAKE_NVML_START_UNIX", &start),
        ],
    );
    let pid = agent.pid().unwrap();
    assert!(maps_nvml(pid));
    // SAFETY: kill(2) with the pid of our child and a valid signal number.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0);
    let m = agent.wait_for_metrics("NVML released", Duration::from_secs(5), |m| {
        m.get("gpucost_nvml_paused", &[]) == Some(1.0)
    });
    assert_eq!(m.get("gpucost_nvml_up", &[]), Some(0.0));
    let deadline = Instant::now() + Duration::from_secs(5);
    while maps_nvml(pid) {
        assert!(Instant::now() < deadline, "NVML still loaded after SIGUSR1");
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = agent
        .logs()
        .into_iter()
        .find(|l| l.contains("SIGUSR1"))
        .expect("the release is logged");
    assert!(
        line.contains("holds no NVML handle") && line.contains("kill -USR2"),
        "{line}"
    );
    let energy = |m: &Metrics, gpu| m.gpu("gpucost_gpu_energy_joules_total", gpu).unwrap();
    let held = agent.metrics();
    std::thread::sleep(Duration::from_millis(1000));
    let m = agent.metrics();
    for gpu in 0..2 {
        assert_eq!(m.gpu("gpucost_gpu_up", gpu), Some(0.0));
        assert_eq!(energy(&m, gpu), energy(&held, gpu), "nothing measured");
        assert!(m.gpu("gpucost_gpu_unmeasured_seconds_total", gpu).unwrap() >= 0.9);
    }
    let (status, body) = agent.get("/healthz");
    assert_eq!(status, 200, "released is no reason to restart: {body}");
    assert!(body.contains("\"nvml_paused\":true"), "{body}");

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR2) }, 0);
    let m = agent.wait_for_metrics("NVML taken back", Duration::from_secs(5), |m| {
        m.get("gpucost_nvml_up", &[]) == Some(1.0) && m.gpu("gpucost_gpu_up", 1) == Some(1.0)
    });
    assert_eq!(m.get("gpucost_nvml_paused", &[]), Some(0.0));
    assert!(maps_nvml(pid));
    agent.wait_for_metrics("energy counted again", Duration::from_secs(5), |m| {
        energy(m, 0) > energy(&held, 0)
    });
}

#[test]
fn kill_9_during_ledger_writes_many_times() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "one.toml", ONE_JOB);
    let env = [
        FAST[0],
        FAST[1],
        ("GPUCOST_LEDGER_PERSIST_INTERVAL", "10ms"),
    ];
    let mut shown = 0.0;
    for round in 0..12 {
        let mut agent = Agent::start_in(dir.path(), &["--simulate", &scenario], &env);
        let first = agent.metrics();
        let resumed = job_cost(&first).unwrap_or(0.0);
        assert!(
            resumed >= shown * (1.0 - 1e-12),
            "round {round}: counter went back {shown} -> {resumed}"
        );
        // Let it write for a while (persisting every 10 ms), read what it shows, kill it.
        std::thread::sleep(Duration::from_millis(150 + 37 * round as u64 % 200));
        shown = job_cost(&agent.metrics()).unwrap_or(shown);
        agent.kill9();
        // The database opens and reads after every crash.
        let out = Command::new(agent_bin())
            .args(["report", "--format", "json", "--job", "777", "--state-dir"])
            .arg(dir.path().join("state"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let in_ledger = doc["jobs"][0]["cost_total"].as_f64().unwrap();
        // (The report sums the components in its own order: allow for rounding.)
        assert!(
            in_ledger >= shown * (1.0 - 1e-12),
            "round {round}: the ledger has less ({in_ledger}) than was shown ({shown})"
        );
    }
    assert!(shown > 0.0);
}

/// A small tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root with CAP_SYS_ADMIN (CI has it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    /// Remounts with `opt` (`ro` or `rw`); `ro` needs no file open for writing on it.
    fn remount(&self, opt: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn ledger_up(m: &Metrics) -> Option<f64> {
    m.get("gpucost_ledger_up", &[])
}

#[test]
fn a_full_state_dir_is_reported_and_persistence_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "one.toml", ONE_JOB);
    let fs = Tmpfs::mount(&dir.path().join("state"), "2m");
    let agent = Agent::start_in(
        dir.path(),
        &["--simulate", &scenario],
        &[
            FAST[0],
            FAST[1],
            ("GPUCOST_LEDGER_PERSIST_INTERVAL", "50ms"),
        ],
    );
    agent.wait_for_metrics("the ledger writing", Duration::from_secs(10), |m| {
        ledger_up(m) == Some(1.0) && job_cost(m).is_some()
    });

    // Full: fill the file system.
    let filler = fs.0.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "count=64"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    let m = agent.wait_for_metrics("a failed write reported", Duration::from_secs(10), |m| {
        ledger_up(m) == Some(0.0)
    });
    let frozen = job_cost(&m).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = agent.get("/metrics");
    assert_eq!(status, 200, "metrics keep being served");
    assert!(
        agent
            .logs()
            .iter()
            .any(|l| l.contains("cannot persist to the ledger")),
        "{:#?}",
        agent.logs()
    );
    std::fs::remove_file(&filler).unwrap();
    let m = agent.wait_for_metrics("persistence to resume", Duration::from_secs(10), |m| {
        ledger_up(m) == Some(1.0)
    });
    assert!(
        job_cost(&m).unwrap() > frozen,
        "the totals caught up: nothing was lost while the disk was full"
    );

    drop(agent);
}

#[test]
fn a_read_only_state_dir_at_start_is_reported_and_persistence_begins_when_writable() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "one.toml", ONE_JOB);
    let fs = Tmpfs::mount(&dir.path().join("state"), "2m");
    fs.remount("ro");
    let agent = Agent::start_in(
        dir.path(),
        &["--simulate", &scenario],
        &[
            FAST[0],
            FAST[1],
            ("GPUCOST_LEDGER_PERSIST_INTERVAL", "50ms"),
        ],
    );
    let m = agent.wait_for_metrics("the job counted in memory", Duration::from_secs(10), |m| {
        job_cost(m).is_some_and(|c| c > 0.0)
    });
    assert_eq!(ledger_up(&m), Some(0.0), "the ledger cannot be written");
    assert!(
        agent
            .logs()
            .iter()
            .any(|l| l.contains("cannot load the ledger")),
        "{:#?}",
        agent.logs()
    );
    fs.remount("rw");
    let m = agent.wait_for_metrics("persistence to begin", Duration::from_secs(10), |m| {
        ledger_up(m) == Some(1.0)
    });
    let shown = job_cost(&m).unwrap();
    drop(agent);
    let out = Command::new(agent_bin())
        .args(["report", "--format", "json", "--job", "777", "--state-dir"])
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let in_ledger = doc["jobs"][0]["cost_total"].as_f64().unwrap();
    assert!(
        in_ledger >= shown * (1.0 - 1e-12),
        "what was counted before the ledger opened is kept: {in_ledger} vs {shown}"
    );
}

/// Job 777's total cost in the ledger of `state`, through `gpucost report`.
fn ledger_job_cost(state: &Path) -> f64 {
    let out = Command::new(agent_bin())
        .args(["report", "--format", "json", "--job", "777", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["jobs"][0]["cost_total"].as_f64().unwrap()
}

/// Runs an agent on `dir` until its ledger holds job 777, stops it, and returns the job's cost
/// in the ledger.
fn write_history(dir: &Path, scenario: &str) -> f64 {
    let mut agent = Agent::start_in(dir, &["--simulate", scenario], FAST);
    agent.wait_for_metrics("the job persisted", Duration::from_secs(10), |m| {
        ledger_up(m) == Some(1.0) && job_cost(m).is_some_and(|c| c > 0.0)
    });
    assert!(agent.terminate().success());
    ledger_job_cost(&dir.join("state"))
}

/// Scrapes `agent` until `done`, asserting on the way that job 777's cost never goes down.
fn cost_never_lower_until(
    agent: &Agent,
    what: &str,
    mut last: f64,
    done: impl Fn(&Metrics) -> bool,
) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = agent.metrics();
        let cost = job_cost(&m).unwrap_or(0.0);
        assert!(cost >= last, "the job's cost went back: {last} -> {cost}");
        last = cost;
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last scrape:\n{}\nlog:\n{}",
            m.text,
            agent.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

#[test]
fn issue_13_a_damaged_ledger_is_moved_aside_untouched_and_a_new_one_begins() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "one.toml", ONE_JOB);
    assert!(write_history(dir.path(), &scenario) > 0.0);
    let state = dir.path().join("state");
    let path = state.join("ledger.db");
    // Every page but the first (4 KiB: the header and the schema) overwritten with garbage, as a
    // failing disk would: SQLite reads the schema, then finds the tables malformed.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8192);
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(&path, &bytes).unwrap();

    let mut agent = Agent::start_in(dir.path(), &["--simulate", &scenario], FAST);
    let line = agent.wait_for_log("IS DAMAGED AND WAS MOVED ASIDE", Duration::from_secs(5));
    let aside: Vec<PathBuf> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("ledger.db.corrupt-")
                && !name.ends_with("-wal")
                && !name.ends_with("-shm")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(
        line.contains(&path.display().to_string())
            && line.contains(&aside[0].display().to_string())
            && line.contains("ERROR"),
        "an error naming both files: {line}"
    );
    assert_eq!(
        std::fs::read(&aside[0]).unwrap(),
        bytes,
        "the damaged ledger is kept as it was"
    );
    // A new ledger, written to as usual.
    agent.wait_for_metrics("the new ledger written", Duration::from_secs(10), |m| {
        ledger_up(m) == Some(1.0) && job_cost(m).is_some_and(|c| c > 0.0)
    });
    assert!(agent.terminate().success());
    assert!(ledger_job_cost(&state) > 0.0);
    assert_eq!(std::fs::read(&aside[0]).unwrap(), bytes);
}

#[test]
fn issue_13_a_ledger_from_a_newer_gpucost_is_neither_moved_nor_written() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "one.toml", ONE_JOB);
    write_history(dir.path(), &scenario);
    let state = dir.path().join("state");
    let path = state.join("ledger.db");
    // The "user version" of the database header, 4 bytes big-endian at offset 60
    // (https://www.sqlite.org/fileformat.html), is the ledger's schema version: one from far ahead.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[60..64].copy_from_slice(&99u32.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let mut agent = Agent::start_in(dir.path(), &["--simulate", &scenario], FAST);
    let m = agent.wait_for_metrics("the job counted in memory", Duration::from_secs(10), |m| {
        job_cost(m).is_some_and(|c| c > 0.0)
    });
    assert_eq!(ledger_up(&m), Some(0.0));
    let (_, body) = agent.get("/healthz");
    assert!(body.contains("newer gpucost"), "{body}");
    // Several persist intervals (100 ms) go by; then the agent stops, which persists once more.
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.terminate().success());
    assert!(agent.logs().iter().any(|l| l.contains("schema version 99")));
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "left as it was");
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("corrupt")), "{names:?}");
}

#[test]
fn issue_13_a_state_dir_unreachable_at_start_is_loaded_once_reachable_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), "one.toml", ONE_JOB);
    // A history, in a state directory the next agent cannot reach yet.
    let elsewhere = dir.path().join("elsewhere");
    let history = write_history(&elsewhere, &scenario);
    // Its state directory's parent is a regular file (ENOTDIR). A directory made read-only or
    // unreadable with chmod would not do: the tests run as root, which file modes do not stop;
    // a read-only mount would, but needs CAP_SYS_ADMIN (see the read-only test above).
    let here = dir.path().join("here");
    std::fs::write(&here, "a regular file, not a directory").unwrap();
    let mut agent = Agent::start_in(&here, &["--simulate", &scenario], FAST);
    let m = agent.wait_for_metrics("the job counted in memory", Duration::from_secs(10), |m| {
        job_cost(m).is_some_and(|c| c > 0.0)
    });
    assert_eq!(ledger_up(&m), Some(0.0));
    let line = agent.wait_for_log("cannot load the ledger", Duration::from_secs(1));
    assert!(
        line.contains("nothing is written to the ledger before its history is loaded"),
        "{line}"
    );
    let (status, body) = agent.get("/healthz");
    assert_eq!(status, 200);
    assert!(
        body.contains(&here.join("state").display().to_string())
            && body.contains("Not a directory"),
        "the reason: {body}"
    );

    // The directory becomes reachable, with the history in it.
    let before = job_cost(&agent.metrics()).unwrap();
    std::fs::remove_file(&here).unwrap();
    std::fs::rename(&elsewhere, &here).unwrap();
    let m = cost_never_lower_until(&agent, "the ledger loaded and written", before, |m| {
        ledger_up(m) == Some(1.0)
    });
    let shown = job_cost(&m).unwrap();
    assert!(
        shown >= history + before * (1.0 - 1e-9),
        "the ledger's history ({history}) plus what was counted meanwhile ({before}): {shown}"
    );
    agent.wait_for_log("loaded at last", Duration::from_secs(1));
    drop(agent);
    let in_ledger = ledger_job_cost(&here.join("state"));
    assert!(
        in_ledger >= shown * (1.0 - 1e-12),
        "the ledger has at least what was shown: {in_ledger} vs {shown}"
    );
}

/// Starts `gpucost agent` on `state` and `socket` (on the simulated demo) and waits for it to
/// exit, at most 20 s: its exit code and standard error.
fn agent_exit(state: &Path, socket: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(agent_bin())
        .args(["agent", "--simulate", "demo", "--listen", "127.0.0.1:0"])
        .arg("--state-dir")
        .arg(state)
        .arg("--socket")
        .arg(socket)
        .env("GPUCOST_ATTRIBUTION_KUBELET_SOCKET", "off")
        .env_remove("GPUCOST_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the second agent kept running:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The socket's inode, and whether a registration over it works.
fn socket_works(agent: &Agent, id: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let (status, body) = gpucost_integration_tests::post_unix(
        &agent.socket,
        "/api/v1/jobs",
        &format!(r#"{{"id": "{id}"}}"#),
    );
    assert_eq!(status, 201, "{body}");
    std::fs::metadata(&agent.socket).unwrap().ino()
}

#[test]
fn issue_13_a_second_agent_on_the_same_state_dir_exits_2_and_the_first_keeps_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let first = Agent::start_in(dir.path(), &["--simulate", "demo"], FAST);
    let ino = socket_works(&first, "before");
    // The same state directory, and the same socket as well (the same config started twice).
    let (code, err) = agent_exit(&first.state_dir, &first.socket);
    assert_eq!(code, Some(2), "{err}");
    let pid = first.pid().unwrap();
    assert!(
        err.contains(&first.state_dir.display().to_string())
            && err.contains(&format!("pid {pid}"))
            && err.contains("another gpucost agent"),
        "names the state directory and the other agent's pid: {err}"
    );
    // The first goes on, on its own socket (the same file) and ledger.
    assert_eq!(socket_works(&first, "after"), ino);
    first.wait_for_metrics(
        "the first agent writing its ledger",
        Duration::from_secs(10),
        |m| {
            ledger_up(m) == Some(1.0) && m.get("gpucost_job_info", &[("job_id", "after")]).is_some()
        },
    );
}

#[test]
fn issue_13_a_second_agent_on_the_same_socket_exits_2_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let first = Agent::start_in(dir.path(), &["--simulate", "demo"], FAST);
    let ino = socket_works(&first, "before");
    let (code, err) = agent_exit(&dir.path().join("other-state"), &first.socket);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&first.socket.display().to_string()) && err.contains("answers"),
        "names the socket: {err}"
    );
    assert_eq!(socket_works(&first, "after"), ino);
}

#[test]
fn issue_13_a_stale_socket_is_replaced_and_a_socket_not_ours_is_not_removed() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let mut killed = Agent::start_in(dir.path(), &["--simulate", "demo"], FAST);
    killed.kill9();
    // What a kill -9 leaves: the socket file, nobody behind it (and the lock, released).
    assert!(killed.socket.exists());
    let mut agent = Agent::start_in(dir.path(), &["--simulate", "demo"], FAST);
    socket_works(&agent, "after-the-crash");

    // Someone else's socket now sits at the path: the agent's shutdown leaves it there.
    std::fs::rename(&agent.socket, dir.path().join("moved.sock")).unwrap();
    let other = std::os::unix::net::UnixListener::bind(&agent.socket).unwrap();
    let other_ino = std::fs::metadata(&agent.socket).unwrap().ino();
    assert!(agent.terminate().success());
    assert_eq!(
        std::fs::metadata(&agent.socket).map(|m| m.ino()).ok(),
        Some(other_ino),
        "another's socket is not removed"
    );
    assert!(agent
        .logs()
        .iter()
        .any(|l| l.contains("is no longer this agent's")));
    drop(other);
}

#[test]
fn garbage_on_the_socket_gets_4xx_and_changes_nothing() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let agent = Agent::start(&["--simulate", "demo"], FAST);
    let mode = std::fs::metadata(&agent.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660, "the socket is 0660 by default");
    // A deterministic stream of odd requests.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let ids = [
        "",
        "..%2F..%2Fetc",
        "%00",
        "a%20b",
        &"x".repeat(2000),
        "%FF%FE",
        "41871",
    ];
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"[]".to_vec(),
        b"null".to_vec(),
        b"{\"id\": 5}".to_vec(),
        b"{\"labels\": {\"a\": 1}}".to_vec(),
        b"{\"pid\": -1}".to_vec(),
        b"{\"tokens\": 1e400}".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        vec![b'a'; 200_000],
        format!("{{\"id\": \"{}\"}}", "y".repeat(100_000)).into_bytes(),
        b"{\"id\": \"ok\", \"unknown_field\": true}".to_vec(),
    ];
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..300 {
        let id = ids[(next() % ids.len() as u64) as usize];
        let path = match next() % 4 {
            0 => "/api/v1/jobs".to_string(),
            1 => format!("/api/v1/jobs/{id}/end"),
            2 => format!("/api/v1/jobs/{id}/progress"),
            _ => format!("/api/v1/{id}"),
        };
        let method = ["POST", "GET", "PUT", "DELETE"][(next() % 4) as usize];
        let body = &bodies[(next() % bodies.len() as u64) as usize];
        let mut s = UnixStream::connect(&agent.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!("{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
        let _ = s
            .write_all(head.as_bytes())
            .and_then(|()| s.write_all(body));
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        *statuses.entry(status).or_insert(0) += 1;
        assert!(
            (200..500).contains(&status) && status != 0,
            "{method} {path} with {} bytes: {status}: {text}",
            body.len()
        );
        if status >= 400 {
            assert!(text.contains("\"error\""), "a JSON error: {text}");
        }
    }
    assert!(statuses.keys().any(|s| *s >= 400), "{statuses:?}");
    // Still alive and well, and bounded.
    let (status, _) = agent.get("/healthz");
    assert_eq!(status, 200);
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", agent_pid(&agent)))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(rss_kib < 100 * 1024, "RSS after the garbage: {rss_kib} KiB");
}

fn agent_pid(agent: &Agent) -> u32 {
    agent.pid().expect("running")
}
