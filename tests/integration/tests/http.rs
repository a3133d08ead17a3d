//! The TCP port against clients that misbehave, through the real binary over real TCP (issue 13):
//! a flood of idle connections under systemd's default limit of open files, a slowloris client,
//! an idle keep-alive connection, many concurrent GETs of a large job list, and what the port
//! shows of each job with and without `http.hide_identities`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpucost_integration_tests::{post_unix, Agent, Metrics};

/// Starts the demo with `config` (the text of a config file) and extra arguments.
fn start_with_config(dir: &Path, config: &str) -> Agent {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.display().to_string();
    Agent::start(&["--simulate", "demo", "--config", &path], &[])
}

/// GET over a fresh connection, giving up after `timeout`: (status, body), or what went wrong.
fn try_get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read after {} bytes: {e}", raw.len()))?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, raw[end + 4..].to_vec()))
}

/// Lowers the soft limit of open files of process `pid`, keeping its hard limit.
fn set_soft_nofile(pid: u32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) with a null new limit only reads the process's limit into `old`.
    let got = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(got, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit(2) on a child we started, with a valid limit and no old-limit output.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// A line of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Whether the other end has closed `s` (a read returns end of file or an error at once).
fn closed_by_peer(mut s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    let closed = match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

fn closed_total(m: &Metrics, reason: &str) -> f64 {
    m.get(
        "gpucost_http_connections_closed_total",
        &[("reason", reason)],
    )
    .unwrap_or_else(|| panic!("no gpucost_http_connections_closed_total{{reason={reason:?}}}"))
}

/// Issue 13, item 5: 1,100 idle connections from one network client made /metrics time out and
/// the job socket fail, under the soft limit of 1,024 open files that systemd gives a service
/// unless its unit sets LimitNOFILE= (systemd.exec(5), "Process Properties"; the default comes
/// from DefaultLimitNOFILE= in systemd-system.conf(5)). The agent here runs under that limit with
/// the default `http.max_connections`: new connections push out the quietest idle ones, so the
/// agent never holds more than the cap, and /metrics and the socket answer at once.
#[test]
fn issue_13_idle_connections_leave_metrics_and_the_socket_working() {
    let agent = Agent::start(&["--simulate", "demo"], &[]);
    let pid = agent.pid().unwrap();
    set_soft_nofile(pid, 1024);
    let addr: SocketAddr = agent.addr.parse().unwrap();
    let t = Instant::now();
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..1100 {
        // Long enough for a SYN dropped while the kernel's accept queue was full to be sent
        // again (after 1 s).
        match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            Ok(s) => idle.push(s),
            Err(_) => refused += 1,
        }
    }
    let opened_in = t.elapsed();
    // Give the agent a moment to accept what the kernel queued.
    std::thread::sleep(Duration::from_millis(300));

    let t = Instant::now();
    let metrics = try_get(&agent.addr, "/metrics", Duration::from_secs(5));
    let metrics_took = t.elapsed();
    let t = Instant::now();
    let socket = std::thread::spawn({
        let socket = agent.socket.clone();
        move || post_unix(&socket, "/api/v1/jobs", r#"{"name": "during-the-flood"}"#)
    });
    let registered = socket.join();
    let register_took = t.elapsed();
    let fds = open_fds(pid);
    let still_open = idle.iter().filter(|s| !closed_by_peer(s)).count();
    eprintln!(
        "{} idle connections opened in {opened_in:?} ({refused} not); /metrics: {:?} in \
         {metrics_took:?}; socket registration: {} in {register_took:?}; the agent holds {fds} \
         open files; {still_open} of the idle connections still open",
        idle.len(),
        metrics.as_ref().map(|(s, b)| (s, b.len())),
        match &registered {
            Ok((status, _)) => status.to_string(),
            Err(_) => "failed".to_string(),
        },
    );
    let (status, _) = metrics.expect("/metrics answers during the flood");
    assert_eq!(status, 200);
    assert!(
        metrics_took < Duration::from_secs(2),
        "/metrics took {metrics_took:?}"
    );
    let (status, body) = registered.expect("the socket answers during the flood");
    assert_eq!(status, 201, "{body}");

    let m = agent.metrics();
    eprintln!(
        "{}",
        m.text
            .lines()
            .filter(|l| l.starts_with("gpucost_http_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let cap = 256.0;
    let open = m.get("gpucost_http_connections", &[]).unwrap();
    assert!(open <= cap, "{open} connections open");
    assert!(
        closed_total(&m, "evicted") >= idle.len() as f64 - cap,
        "{}",
        m.text
    );
    assert!(still_open <= cap as usize, "{still_open} still open");
    assert!(fds < 1024, "{fds} open files");
    // The cap kept the agent within its limit of open files: no accept failed for want of one.
    assert_eq!(
        m.get("gpucost_http_accept_errors_total", &[("error", "EMFILE")]),
        Some(0.0)
    );
}

/// Issue 13, item 5: a client that sends its headers one byte a second is cut off once
/// `http.header_timeout` has passed since it connected (hyper's `header_read_timeout`).
#[test]
fn issue_13_a_slowloris_client_is_cut_off_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_with_config(
        dir.path(),
        "[http]\nheader_timeout = \"2s\"\nidle_timeout = \"2s\"\n",
    );
    let mut s = TcpStream::connect(&agent.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let head = b"GET /metrics HTTP/1.1\r\nHost: gpucost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let t = Instant::now();
    let mut sent = 0;
    let cut_after = loop {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "still open after {sent} bytes in {:?}",
            t.elapsed()
        );
        if s.write_all(&head[sent % head.len()..][..1]).is_err() {
            break t.elapsed();
        }
        sent += 1;
        // The read timeout paces the bytes: one a second.
        let mut b = [0u8; 256];
        match s.read(&mut b) {
            Ok(0) => break t.elapsed(),
            Ok(n) => panic!("an answer to half a request: {:?}", &b[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break t.elapsed(),
        }
    };
    eprintln!("slowloris: cut off after {sent} bytes, {cut_after:?}");
    assert!(
        cut_after >= Duration::from_millis(1900) && cut_after < Duration::from_millis(3500),
        "cut off after {cut_after:?}"
    );
    let m = agent.metrics();
    assert_eq!(closed_total(&m, "header_timeout"), 1.0, "{}", m.text);
    assert_eq!(closed_total(&m, "idle_timeout"), 0.0);
}

/// Issue 13, item 5: a keep-alive connection that sends no next request is closed after
/// `http.idle_timeout`, and so is a connection that never sends anything; a connection in use
/// stays open.
#[test]
fn issue_13_an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_with_config(
        dir.path(),
        "[http]\nheader_timeout = \"6s\"\nidle_timeout = \"1s\"\n",
    );
    let silent = TcpStream::connect(&agent.addr).unwrap();
    let silent_since = Instant::now();
    let mut s = TcpStream::connect(&agent.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Three requests, half a second apart, on one connection: it stays open while in use.
    let mut answered = Instant::now();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        write!(s, "GET /healthz HTTP/1.1\r\nHost: gpucost\r\n\r\n").unwrap();
        let body = read_response(&mut s);
        answered = Instant::now();
        assert!(body.contains("\"status\""), "{body}");
    }
    let mut b = [0u8; 16];
    let got = s.read(&mut b);
    let idle_for = answered.elapsed();
    let silent_for = silent_since.elapsed();
    eprintln!("keep-alive connection closed {idle_for:?} after its last answer");
    assert!(matches!(got, Ok(0)), "{got:?}");
    assert!(
        idle_for >= Duration::from_millis(900) && idle_for < Duration::from_millis(3000),
        "closed {idle_for:?} after the last answer"
    );
    assert!(closed_by_peer(&silent), "open after {silent_for:?}");
    let m = agent.metrics();
    assert_eq!(closed_total(&m, "idle_timeout"), 2.0, "{}", m.text);
    assert_eq!(closed_total(&m, "header_timeout"), 0.0);
}

/// Reads one HTTP/1.1 response with a Content-Length from a keep-alive connection.
fn read_response(s: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = s.read(&mut b).unwrap();
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= len {
                return body.to_string();
            }
        }
    }
}

/// Registers `n` jobs with 32 labels of 200 bytes each over the socket.
fn register_jobs(agent: &Agent, n: usize) {
    let labels: Vec<String> = (0..32)
        .map(|k| format!("\"label_{k:02}\": \"{}\"", "x".repeat(200)))
        .collect();
    let labels = labels.join(", ");
    for i in 0..n {
        let body = format!(r#"{{"id": "big-{i:05}", "name": "big-{i}", "labels": {{{labels}}}}}"#);
        let (status, said) = post_unix(&agent.socket, "/api/v1/jobs", &body);
        assert_eq!(status, 201, "{said}");
    }
}

/// Issue 13, item 4: the job list was rendered for each request (26.5 MB and 2 s each on a
/// large node; RSS 1.48 GB with 16 concurrent GETs). 16 clients GET a job list of about 8 MB
/// four times each: the agent's RSS stays within a few copies of the list, and every answer is
/// the list (200) or "busy" (503).
#[test]
fn issue_13_concurrent_job_lists_keep_memory_bounded() {
    let agent = Agent::start(&["--simulate", "demo"], &[]);
    let pid = agent.pid().unwrap();
    register_jobs(&agent, 1000);
    // Wait until a snapshot holds them all, without rendering the list before measuring.
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.get("/api/v1/jobs/big-00999").0 != 200 {
        assert!(Instant::now() < deadline, "the jobs did not all appear");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = status_kib(pid, "VmRSS");
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new(before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let rss = status_kib(pid, "VmRSS");
                let mut p = peak.lock().unwrap();
                *p = (*p).max(rss);
                drop(p);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let t = Instant::now();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let addr = agent.addr.clone();
            std::thread::spawn(move || {
                (0..4)
                    .map(|_| {
                        let (status, body) =
                            try_get(&addr, "/api/v1/jobs", Duration::from_secs(60)).unwrap();
                        if status == 200 {
                            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            assert!(v["jobs"].as_array().unwrap().len() >= 1000);
                        } else {
                            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            assert!(v["error"].as_str().unwrap().contains("busy"), "{v}");
                        }
                        status
                    })
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = *peak.lock().unwrap();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let size = try_get(&agent.addr, "/api/v1/jobs", Duration::from_secs(20))
        .unwrap()
        .1
        .len();
    eprintln!(
        "job list {:.1} MB; 64 GETs from 16 clients in {took:?}: {ok} x 200, {} x 503; \
         RSS {:.0} MB before, {:.0} MB at the peak (+{:.0} MB)",
        size as f64 / 1e6,
        statuses.len() - ok,
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak - before) as f64 / 1024.0
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(ok > 0, "{statuses:?}");
    let growth = (peak - before) * 1024;
    assert!(
        growth < 4 * size as u64,
        "RSS grew by {:.0} MB for a list of {:.1} MB",
        growth as f64 / 1e6,
        size as f64 / 1e6
    );
}

/// Issue 13, item 10: the TCP port showed every job's user, uid, pid and labels to any network
/// client. With `http.hide_identities = true` the JSON API leaves them out (and the pids of the
/// processes on each GPU); off, the default, it shows them as before. `/metrics` is the same
/// either way: `gpucost_job_info` carries user, name and the exported labels for dashboards.
#[test]
fn issue_13_hide_identities_leaves_who_runs_what_out_of_the_json_api() {
    let pid = std::process::id();
    for hide in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let agent = start_with_config(
            dir.path(),
            &format!("[jobs]\nexport_labels = [\"team\"]\n[http]\nhide_identities = {hide}\n"),
        );
        let body = format!(
            r#"{{"id": "secret-1", "name": "finetune", "labels": {{"team": "vision", "project": "x"}}, "pid": {pid}, "gpus": ["0"]}}"#
        );
        let (status, said) = post_unix(&agent.socket, "/api/v1/jobs", &body);
        assert_eq!(status, 201, "{said}");
        let deadline = Instant::now() + Duration::from_secs(10);
        let list = loop {
            let (status, body) = agent.get("/api/v1/jobs");
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|j| j["id"] == "secret-1")
            {
                break v;
            }
            assert!(Instant::now() < deadline, "the job did not appear: {body}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let (status, one) = agent.get("/api/v1/jobs/secret-1");
        assert_eq!(status, 200, "{one}");
        let one: serde_json::Value = serde_json::from_str(&one).unwrap();
        let in_list = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == "secret-1")
            .unwrap()
            .clone();
        for (what, j) in [("/api/v1/jobs/secret-1", &one), ("/api/v1/jobs", &in_list)] {
            assert_eq!(j["name"], "finetune", "{what}: {j}");
            // GPU "0", resolved to its UUID when the job registered (issue 15).
            let gpus = j["registration"]["gpus"].as_array().unwrap();
            assert!(
                gpus.len() == 1 && gpus[0].as_str().unwrap().starts_with("GPU-"),
                "{what}: {j}"
            );
            assert!(j["cost_total"].is_number(), "{what}: {j}");
            if hide {
                for key in ["user", "uid", "labels"] {
                    assert!(j.get(key).is_none(), "{what} shows {key}: {j}");
                }
                assert!(j["registration"].get("pid").is_none(), "{what}: {j}");
            } else {
                assert_eq!(j["user"], "root", "{what}: {j}");
                assert_eq!(j["uid"], 0, "{what}: {j}");
                assert_eq!(j["labels"]["team"], "vision", "{what}: {j}");
                assert_eq!(j["registration"]["pid"], pid, "{what}: {j}");
            }
        }
        // Every job of the list, the scenario's own included.
        let users = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j.get("user").is_some())
            .count();
        assert_eq!(users == 0, hide, "{list}");

        let (status, gpus) = agent.get("/api/v1/gpus");
        assert_eq!(status, 200);
        let gpus: serde_json::Value = serde_json::from_str(&gpus).unwrap();
        let processes: Vec<&serde_json::Value> = gpus["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["processes"].as_array().unwrap())
            .collect();
        assert!(!processes.is_empty(), "the demo runs processes: {gpus}");
        assert!(
            processes.iter().all(|p| p.get("pid").is_some() != hide),
            "{processes:?}"
        );

        let m = agent.metrics();
        let info = m.find("gpucost_job_info", &[("job_id", "secret-1")]);
        assert_eq!(info.len(), 1, "{}", m.text);
        assert_eq!(info[0].labels["user"], "root");
        assert_eq!(info[0].labels["name"], "finetune");
        assert_eq!(info[0].labels["team"], "vision");
    }
}
