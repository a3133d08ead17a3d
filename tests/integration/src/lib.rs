//! Test harness: builds and starts the real `gpucost` binary, scrapes it over HTTP, parses the
//! Prometheus text it serves, and checks it with `promtool`.
//!
//! The binaries are built once per test process with the same cargo and profile as the tests,
//! so `cargo test --workspace` needs no other step.

pub mod virtual_node;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `target/<profile>`, the folder holding the test's own build outputs.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Builds `gpucost` and the fake NVML library once, returns their paths.
pub fn binaries() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = target_dir();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "gpucost", "-p", "fake-nvml"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build of gpucost and fake-nvml failed"
        );
        let agent = dir.join("gpucost");
        let lib = dir.join("libnvidia_ml.so");
        assert!(agent.exists(), "{} missing after build", agent.display());
        assert!(lib.exists(), "{} missing after build", lib.display());
        (agent, lib)
    })
}

pub fn agent_bin() -> &'static Path {
    &binaries().0
}

pub fn fake_nvml_lib() -> &'static Path {
    &binaries().1
}

/// A copy of the fake NVML library in `dir` that does not export `symbol`, as a driver from
/// before that function existed (R535.54 has no `nvmlDeviceGetRunningProcessDetailList`). The
/// name is overwritten (its last letter becomes `_`) wherever it occurs in the file, the dynamic
/// symbol table included, so the dynamic loader no longer finds it.
pub fn fake_nvml_lib_without(dir: &Path, symbol: &str) -> PathBuf {
    let mut bytes = std::fs::read(fake_nvml_lib()).expect("read the fake library");
    let name = symbol.as_bytes();
    let mut renamed = 0;
    let mut i = 0;
    while i + name.len() <= bytes.len() {
        if &bytes[i..i + name.len()] == name {
            bytes[i + name.len() - 1] = b'_';
            renamed += 1;
            i += name.len();
        } else {
            i += 1;
        }
    }
    assert!(renamed > 0, "{symbol} is not in the fake library");
    let path = dir.join(format!("libnvidia_ml-without-{symbol}.so"));
    std::fs::write(&path, bytes).expect("write the copy");
    path
}

/// A running `gpucost agent`, killed when dropped.
pub struct Agent {
    child: Option<Child>,
    pub addr: String,
    /// The agent's state directory (the ledger) and sockets.
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub pod_socket: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
    _own_dir: Option<tempfile::TempDir>,
}

impl Agent {
    /// Starts `gpucost agent ARGS` on a free loopback port, with its state and socket in a fresh
    /// temporary directory and extra environment variables, and waits until it listens.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut a = Agent::start_in(dir.path(), args, env);
        a._own_dir = Some(dir);
        a
    }

    /// Like [`Agent::start`], with the state and socket in `dir` (kept by the caller, so that an
    /// agent can be restarted on the same ledger).
    pub fn start_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let state_dir = dir.join("state");
        let socket = dir.join("agent.sock");
        // In the temporary directory too, never where a config names it (deploy/kubernetes's).
        let pod_socket = dir.join("pods").join("agent.sock");
        let mut cmd = Command::new(agent_bin());
        cmd.arg("agent")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--socket")
            .arg(&socket)
            .env("GPUCOST_ATTRIBUTION_KUBELET_SOCKET", "off")
            .env("GPUCOST_LEDGER_PERSIST_INTERVAL", "100ms")
            .env("GPUCOST_POD_SOCKET", &pod_socket)
            .args(args)
            .env_remove("GPUCOST_CONFIG")
            .env("GPUCOST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn gpucost");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut agent = Agent {
            child: Some(child),
            addr: String::new(),
            state_dir,
            socket,
            pod_socket,
            logs,
            _own_dir: None,
        };
        let line = agent.wait_for_log("listening on http://", Duration::from_secs(20));
        let start = line.find("http://").unwrap() + "http://".len();
        let rest = &line[start..];
        agent.addr = rest[..rest.find(' ').unwrap_or(rest.len())].to_string();
        // /metrics answers 503 until the first sample.
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent.get("/metrics").0 != 200 {
            assert!(Instant::now() < deadline, "no first sample within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    /// The agent's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.logs().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "agent exited ({status}) before logging {needle:?}; its log:\n{}",
                    self.logs().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {timeout:?}; log:\n{}",
                self.logs().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET `path`, returning (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.addr, path)
    }

    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "/metrics answered {status}: {body}");
        Metrics::parse(&body)
    }

    /// Scrapes until `cond` holds, returning that scrape.
    pub fn wait_for_metrics(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if cond(&m) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last scrape:\n{}\nlog:\n{}",
                m.text,
                self.logs().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the agent with SIGKILL (no chance to persist) and waits for it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("agent still running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent still running");
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                // Let the log reader drain.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agent did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// POSTs JSON to the agent's unix socket; returns (status, body).
pub fn post_unix(socket: &Path, path: &str, body: &str) -> (u16, String) {
    use std::os::unix::net::UnixStream;
    let mut s =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

/// A real Prometheus server (Debian's `prometheus` package) on a free loopback port, with its
/// data in a temporary directory; killed when dropped.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

/// A free loopback port (bound and released; good enough for a test server started right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML; rule files may be given relative to its folder,
    /// which also holds `extra_files`) and waits until it is ready.
    pub fn start(config: &str, extra_files: &[(&str, String)]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        for (name, text) in extra_files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .current_dir(dir.path())
            .arg("--config.file=prometheus.yml")
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("prometheus not found: run scripts/test.sh, which installs it (Debian package prometheus)");
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(&p.addr).is_ok() && http_get(&p.addr, "/-/ready").0 == 200 {
                return p;
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An instant query; returns the `data.result` array.
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let (status, body) = http_get(
            &self.addr,
            &format!("/api/v1/query?query={}", url_encode(expr)),
        );
        assert_eq!(status, 200, "query {expr}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "query {expr}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The alerts Prometheus has, as (name, state, labels).
    pub fn alerts(&self) -> Vec<(String, String, serde_json::Value)> {
        let (status, body) = http_get(&self.addr, "/api/v1/alerts");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                    a["state"].as_str().unwrap_or("").to_string(),
                    a["labels"].clone(),
                )
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A minimal HTTP/1.0 GET over loopback (no client library needed for that).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses the subset of the text format gpucost writes (no escapes inside label values
    /// other than `\"` and `\\`, no timestamps).
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => (name.to_string(), parse_labels(rest.trim_end_matches('}'))),
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    /// All samples of `name` whose labels include `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the one sample of `name` with `labels`, if there is exactly one.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.find(name, labels).as_slice() {
            [one] => Some(one.value),
            [] => None,
            many => panic!("{} samples of {name} {labels:?}: {many:?}", many.len()),
        }
    }

    pub fn gpu(&self, name: &str, gpu: u32) -> Option<f64> {
        self.get(name, &[("gpu", &gpu.to_string())])
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        rest = after[end..].trim_start_matches(',');
    }
    out
}

/// Runs `promtool check metrics` on a scrape; panics with its complaints unless it prints
/// nothing and exits 0. promtool must be installed (scripts/test.sh installs it).
pub fn promtool_check_metrics(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: run scripts/test.sh, which installs it (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}: {said}",
        out.status
    );
}

/// Writes a scenario file into `dir` and returns its path as a string.
pub fn write_scenario(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() {
        let m = Metrics::parse(
            "# HELP a x\n# TYPE a gauge\na 1\nb{gpu=\"0\",model=\"H \\\"100\\\"\"} 2.5\nc{x=\"a,b\"} 3\n",
        );
        assert_eq!(m.get("a", &[]), Some(1.0));
        assert_eq!(m.get("b", &[("gpu", "0")]), Some(2.5));
        assert_eq!(m.find("b", &[])[0].labels["model"], "H \"100\"");
        assert_eq!(m.get("c", &[("x", "a,b")]), Some(3.0));
        assert_eq!(m.get("b", &[("gpu", "1")]), None);
    }
}
