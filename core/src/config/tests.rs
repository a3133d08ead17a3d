//! The config's tests: files, environment variables and flag layers through [`resolve`].

use std::path::Path;
use std::time::Duration;

use super::layer::ENV_KEYS;
use super::*;

fn file(text: &str) -> Result<Layer, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    file_layer(&path, true)
}

fn from_file(text: &str) -> Result<Config, ConfigError> {
    let layer = file(text)?;
    resolve(&[(Origin::File("config.toml".into()), layer)])
}

#[test]
fn the_example_config_is_valid_and_complete() {
    let c = from_file(EXAMPLE).unwrap();
    assert_eq!(c.pricing, example_pricing());
    assert_eq!(c.pricing.hourly_price("NVIDIA H100 80GB HBM3"), 4.0);
    assert_eq!(c.jobs.export_labels, ["team", "project"]);
    assert_eq!(c.socket_mode, 0o660);
}

/// Every key `deploy/config.example.toml` documents outside `[pricing]`, commented out or not,
/// with its value there: `(sampling.interval, "1s")`.
fn example_keys() -> Vec<(String, toml::Value)> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in EXAMPLE.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            section = header.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        if section.starts_with("pricing") {
            continue;
        }
        // A setting, or a commented-out one (`# simulate = "demo"`); prose is no TOML.
        let text = line.trim_start_matches('#').trim();
        let Ok(table) = toml::from_str::<toml::Table>(text) else {
            continue;
        };
        for (leaf, value) in table {
            let key = match section.as_str() {
                "" => leaf,
                s => format!("{s}.{leaf}"),
            };
            keys.push((key, value));
        }
    }
    keys
}

/// A value of the example as an environment variable writes it: text as it is, numbers as
/// digits, lists comma-separated.
fn env_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items.iter().map(env_text).collect::<Vec<_>>().join(","),
        v => v.to_string(),
    }
}

/// Issue 13, item 10: GPUCOST_JOBS_EXPORT_LABELS, GPUCOST_BENCH_MIN_RATIO and the kubelet's
/// interval and resources were silently ignored. Every key the example documents (but
/// `[pricing]`, which is read from the file only) has its variable, which reads the example's
/// value as the file does.
#[test]
fn every_documented_key_has_a_variable_read_like_the_file() {
    let keys = example_keys();
    assert!(keys.len() > 15, "{keys:?}");
    for (key, value) in &keys {
        let var = env_var_for(key);
        let text = env_text(value);
        let env = env_layer(|v| (v == var).then(|| text.clone()))
            .unwrap_or_else(|e| panic!("{var}={text:?}: {e}"));
        let file = layer::single(key, value.clone()).unwrap();
        assert_eq!(
            env,
            vec![(Origin::Env(var.clone()), file)],
            "{var}={text:?} is not read as {key} = {value}"
        );
    }
    // And no variable without a documented key.
    let documented: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    for (key, _) in ENV_KEYS {
        assert!(documented.contains(key), "{key} is not in the example");
    }
}

/// The example states every default it sets (only the labels and prices are examples), so it
/// cannot drift from [`defaults`].
#[test]
fn the_example_config_states_the_defaults() {
    let mut example = from_file(EXAMPLE).unwrap();
    let built_in = resolve(&[]).unwrap();
    example.jobs.export_labels.clear();
    example.pricing = built_in.pricing.clone();
    assert_eq!(example, built_in);
}

#[test]
fn defaults() {
    let c = resolve(&[]).unwrap();
    assert_eq!(c.listen, "0.0.0.0:10119".parse().unwrap());
    assert_eq!(c.sampling.interval, Duration::from_secs(1));
    assert_eq!(c.sampling.process_interval, Duration::from_secs(5));
    assert_eq!(c.nvml.retry_interval, Duration::from_secs(30));
    assert_eq!(c.nvml.lib, None);
    assert_eq!(c.simulate, None);
    // The interface PRODUCT.md promises.
    assert_eq!(c.state_dir, Path::new("/var/lib/gpucost"));
    assert_eq!(c.socket, Path::new("/run/gpucost/agent.sock"));
    assert_eq!(c.socket_mode, 0o660);
    assert_eq!(
        c.attribution.kubelet_socket.as_deref(),
        Some(Path::new("/var/lib/kubelet/pod-resources/kubelet.sock"))
    );
    assert_eq!(c.bench.min_ratio, 0.85);
    assert_eq!(c.jobs.vanish_after, Duration::from_secs(15));
    assert_eq!(c.jobs.max_running_per_user, 64);
    assert_eq!(c.jobs.max_running, 10_000);
    assert_eq!(c.http.max_connections, 256);
    assert_eq!(c.http.header_timeout, Duration::from_secs(10));
    assert_eq!(c.http.idle_timeout, Duration::from_secs(5));
    assert!(!c.http.hide_identities);
}

#[test]
fn full_file() {
    let c = from_file(
        r#"
listen = "127.0.0.1:9999"
simulate = "demo"
[sampling]
interval = "500ms"
process_interval = "10s"
[nvml]
lib = "/opt/nvidia/libnvidia-ml.so.1"
retry_interval = "1m"
"#,
    )
    .unwrap();
    assert_eq!(c.listen, "127.0.0.1:9999".parse().unwrap());
    assert_eq!(c.sampling.interval, Duration::from_millis(500));
    assert_eq!(c.sampling.process_interval, Duration::from_secs(10));
    assert_eq!(c.nvml.lib, Some("/opt/nvidia/libnvidia-ml.so.1".into()));
    assert_eq!(c.nvml.retry_interval, Duration::from_secs(60));
    assert_eq!(c.simulate.as_deref(), Some("demo"));
}

#[test]
fn flags_beat_env_beat_file() {
    let file = Layer {
        listen: Some("127.0.0.1:1".into()),
        sampling: SamplingLayer {
            interval: Some(Duration::from_secs(2)),
            process_interval: Some(Duration::from_secs(20)),
        },
        ..Layer::default()
    };
    let env = env_layer(|v| match v {
        "GPUCOST_LISTEN" => Some("127.0.0.1:2".into()),
        "GPUCOST_SAMPLING_INTERVAL" => Some("3s".into()),
        _ => None,
    })
    .unwrap();
    let flags = Layer {
        listen: Some("127.0.0.1:3".into()),
        ..Layer::default()
    };
    let mut layers = vec![(Origin::File("f".into()), file)];
    layers.extend(env);
    layers.push((Origin::Flag("listen"), flags));
    let c = resolve(&layers).unwrap();
    assert_eq!(c.listen.port(), 3);
    assert_eq!(c.sampling.interval, Duration::from_secs(3));
    assert_eq!(c.sampling.process_interval, Duration::from_secs(20));
}

/// (file text, expected pieces of the message)
#[test]
fn bad_files_name_file_key_and_problem() {
    let cases: &[(&str, &[&str])] = &[
        ("listen = 10119", &["config.toml", "listen", "invalid type"]),
        (
            "listen = \"localhost\"",
            &["config.toml", "listen", "not an address:port"],
        ),
        (
            "[sampling]\ninterval = \"fast\"",
            &["config.toml", "sampling.interval", "line 2, column 12"],
        ),
        // The key is the deserializer's path, not the text of the line: an inline table, a
        // dotted key and an element of a list spread over lines are each named in full.
        (
            "sampling = { interval = \"fast\" }",
            &["sampling.interval: invalid value", "line 1, column 25"],
        ),
        (
            "sampling.interval = 5",
            &["sampling.interval: invalid type: integer `5`"],
        ),
        (
            "[jobs]\nexport_labels = [\n  \"team\",\n  1,\n]",
            &["jobs.export_labels[1]: invalid type", "line 4, column 3"],
        ),
        (
            "[sampling]\ninterval = \"0s\"",
            &["sampling.interval", "out of range"],
        ),
        (
            "[sampling]\ninterval = \"10s\"\nprocess_interval = \"1s\"",
            &[
                "sampling.process_interval",
                "shorter than sampling.interval",
            ],
        ),
        (
            "[sampling]\nintervall = \"1s\"",
            &["sampling.intervall", "unknown field"],
        ),
        ("colour = \"red\"", &["colour", "unknown field"]),
        (
            "listen = [",
            &[
                "config.toml",
                "file: invalid array; expected `]`",
                "line 1, column 11",
            ],
        ),
        (
            "[nvml]\nretry_interval = \"1ms\"",
            &["nvml.retry_interval", "out of range"],
        ),
        ("simulate = \"  \"", &["simulate", "is empty"]),
    ];
    for (text, want) in cases {
        let msg = from_file(text).unwrap_err().to_string();
        for w in *want {
            assert!(msg.contains(w), "{text:?}: expected {w:?} in {msg:?}");
        }
    }
}

#[test]
fn bad_env_names_the_variable() {
    let msg = env_layer(|v| (v == "GPUCOST_SAMPLING_INTERVAL").then(|| "soon".into()))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("GPUCOST_SAMPLING_INTERVAL"), "{msg}");
    assert!(msg.contains("sampling.interval"), "{msg}");
}

#[test]
fn missing_default_file_is_fine_but_named_file_is_not() {
    let p = Path::new("/nonexistent/gpucost.toml");
    assert_eq!(file_layer(p, false).unwrap(), Layer::default());
    let msg = file_layer(p, true).unwrap_err().to_string();
    assert!(
        msg.contains("/nonexistent/gpucost.toml") && msg.contains("cannot read"),
        "{msg}"
    );
}

/// Mutations of the example config: any value replaced by junk gives a config or an error
/// naming its key, never a panic.
#[test]
fn junk_in_any_value_gives_a_config_or_a_named_error() {
    let junk = [
        "-1",
        "0",
        "1e308",
        "-1e308",
        "nan",
        "inf",
        "\"\"",
        "\"x\"",
        "[]",
        "[1, \"a\"]",
        "{}",
        "true",
        "\"-5s\"",
        "\"10000h\"",
        "\"0.5\"",
        "\"+99:99\"",
        "\"25:00\"",
        "999999999999",
        "\"\\u0000\"",
        "\"../../etc\"",
        "\"H100\"",
        "-0.0001",
        "3",
        "\"on_prem\"",
        "[\"mon\", \"funday\"]",
    ];
    let lines: Vec<&str> = EXAMPLE.lines().collect();
    let values: Vec<usize> = (0..lines.len())
        .filter(|i| !lines[*i].trim_start().starts_with('#') && lines[*i].contains(" = "))
        .collect();
    // Every value of the example, replaced by every junk value in turn: each key meets each
    // kind of bad input once (`cargo fuzz run config` explores further, in CI too).
    let (mut ok, mut bad) = (0, 0);
    for &i in &values {
        for j in junk {
            let mut doc: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            let key = doc[i].split(" = ").next().unwrap().to_string();
            doc[i] = format!("{key} = {j}");
            let text = doc.join("\n");
            let layer = toml::from_str::<Layer>(&text);
            let result = match layer {
                Ok(l) => resolve(&[(Origin::File("fuzz.toml".into()), l)]).map(|_| ()),
                Err(_) => from_file(&text).map(|_| ()),
            };
            match result {
                Ok(()) => ok += 1,
                Err(e) => {
                    bad += 1;
                    let msg = e.to_string();
                    assert!(
                        msg.contains("fuzz.toml") || msg.contains("config.toml"),
                        "{msg}"
                    );
                    assert!(!e.key.is_empty() && !e.problem.is_empty(), "{msg}");
                }
            }
        }
    }
    assert!(ok > 0 && bad > values.len() * 10, "ok {ok}, refused {bad}");
}

/// Where a bad value is put in a [`check`].
#[derive(Clone, Copy)]
enum Source {
    /// The config file, the value as TOML text.
    File,
    /// The key's `GPUCOST_*` variable, the value as its text.
    Env,
    /// The flag of that name, the value as given on the command line.
    Flag(&'static str),
}
use Source::{Env, File, Flag};

/// Sets `key` to `value` in `source` alone and checks that the config is refused with an error
/// naming that source and that key (or an element of it: `key[0]`), whose problem contains
/// `problem`.
fn check(source: Source, key: &str, value: &str, problem: &str) {
    let case = match source {
        File => format!("file: {key} = {value}"),
        Env => format!("{} = {value:?}", env_var_for(key)),
        Flag(name) => format!("--{name} {value:?}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let result = match source {
        File => {
            let text = match key.rsplit_once('.') {
                Some((table, leaf)) => format!("[{table}]\n{leaf} = {value}\n"),
                None => format!("{key} = {value}\n"),
            };
            std::fs::write(&path, text).unwrap();
            file_layer(&path, true).and_then(|l| resolve(&[(Origin::File(path.clone()), l)]))
        }
        Env => {
            let var = env_var_for(key);
            env_layer(|v| (v == var).then(|| value.to_string())).and_then(|l| resolve(&l))
        }
        Flag(name) => {
            let layer = layer::single(key, toml::Value::String(value.into())).unwrap();
            resolve(&[(Origin::Flag(name), layer)])
        }
    };
    let e = match result {
        Ok(_) => panic!("{case}: accepted"),
        Err(e) => e,
    };
    let origin = match source {
        File => Origin::File(path),
        Env => Origin::Env(env_var_for(key)),
        Flag(name) => Origin::Flag(name),
    };
    assert_eq!(e.origin, origin, "{case}: {e}");
    assert!(
        e.key == key || e.key.starts_with(&format!("{key}[")),
        "{case}: key {:?} in {e}",
        e.key
    );
    assert!(
        e.problem.contains(problem),
        "{case}: expected {problem:?} in {e}"
    );
}

#[test]
fn bad_listen_and_socket_name_source_and_key() {
    check(File, "listen", "10119", "invalid type: integer `10119`");
    check(File, "listen", "\"localhost\"", "not an address:port");
    check(Env, "listen", "localhost", "not an address:port");
    check(
        Flag("listen"),
        "listen",
        "0.0.0.0:99999",
        "not an address:port",
    );
    check(File, "state_dir", "true", "invalid type: boolean");
    check(File, "socket", "5", "invalid type: integer");
    check(File, "socket_mode", "660", "invalid type: integer");
    check(File, "socket_mode", "\"0999\"", "not an octal file mode");
    check(Env, "socket_mode", "01000", "not an octal file mode");
    check(Env, "socket_mode", "rw-rw----", "not an octal file mode");
    check(File, "pod_socket", "\"\"", "no socket file path");
    check(
        Env,
        "pod_socket",
        "/run/gpucost/pod.sock",
        "in the folder of the job socket",
    );
}

/// Issue 19: the pod socket is off unless set, and lives in a folder of its own.
#[test]
fn the_pod_socket_is_off_by_default_and_apart_from_the_job_socket() {
    assert_eq!(resolve(&[]).unwrap().pod_socket, None);
    let on = |text: &str| {
        let layer = layer::single("pod_socket", toml::Value::String(text.into())).unwrap();
        resolve(&[(Origin::File("c.toml".into()), layer)]).map(|c| c.pod_socket)
    };
    assert_eq!(
        on(defaults::POD_SOCKET_EXAMPLE).unwrap(),
        Some(defaults::POD_SOCKET_EXAMPLE.into())
    );
    assert_eq!(on("off").unwrap(), None);
    assert!(on("/run/gpucost/pods.sock").is_err());
}

#[test]
fn bad_simulate_names_source_and_key() {
    check(File, "simulate", "1", "invalid type: integer");
    check(File, "simulate", "\"\"", "is empty");
    check(Env, "simulate", " ", "is empty");
    check(Flag("simulate"), "simulate", "", "is empty");
}

#[test]
fn bad_sampling_names_source_and_key() {
    check(File, "sampling.interval", "1", "invalid type: integer");
    check(File, "sampling.interval", "\"fast\"", "expected a duration");
    check(File, "sampling.interval", "\"0s\"", "out of range");
    check(File, "sampling.interval", "\"2h\"", "out of range");
    check(Env, "sampling.interval", "soon", "expected a duration");
    check(Env, "sampling.interval", "9ms", "out of range");
    check(
        File,
        "sampling.process_interval",
        "[]",
        "invalid type: sequence",
    );
    check(File, "sampling.process_interval", "\"1ms\"", "out of range");
    check(Env, "sampling.process_interval", "61m", "out of range");
    // Shorter than the sampling interval's default (1s), which is no layer's fault.
    check(
        Env,
        "sampling.process_interval",
        "500ms",
        "shorter than sampling.interval",
    );
}

#[test]
fn bad_nvml_names_source_and_key() {
    check(File, "nvml.lib", "3", "invalid type: integer");
    check(File, "nvml.lib", "\"\"", "is empty");
    check(Env, "nvml.lib", "", "is empty");
    check(Flag("nvml-lib"), "nvml.lib", "", "is empty");
    check(File, "nvml.retry_interval", "30", "invalid type: integer");
    check(File, "nvml.retry_interval", "\"1ms\"", "out of range");
    check(Env, "nvml.retry_interval", "often", "expected a duration");
    check(Env, "nvml.retry_interval", "2days", "out of range");
}

#[test]
fn bad_ledger_names_source_and_key() {
    check(
        File,
        "ledger.persist_interval",
        "5",
        "invalid type: integer",
    );
    check(File, "ledger.persist_interval", "\"2h\"", "out of range");
    check(Env, "ledger.persist_interval", "-1s", "expected a duration");
    check(Env, "ledger.persist_interval", "5ms", "out of range");
}

#[test]
fn bad_jobs_names_source_and_key() {
    check(File, "jobs.grace_period", "600", "invalid type: integer");
    check(File, "jobs.grace_period", "\"8days\"", "out of range");
    check(Env, "jobs.grace_period", "8days", "out of range");
    check(
        Env,
        "jobs.grace_period",
        "10 minutes please",
        "expected a duration",
    );
    check(File, "jobs.vanish_after", "\"2days\"", "out of range");
    check(Env, "jobs.vanish_after", "25h", "out of range");
    // Issue 13, item 10: "0s" ended every found job at once. At least one process interval
    // (5 s by default), so that a job is missed by one process read before it ends.
    check(
        File,
        "jobs.vanish_after",
        "\"0s\"",
        "shorter than sampling.process_interval (5s)",
    );
    check(
        Env,
        "jobs.vanish_after",
        "4s",
        "shorter than sampling.process_interval (5s)",
    );
    check(
        File,
        "jobs.export_labels",
        "\"team\"",
        "invalid type: string",
    );
    check(File, "jobs.export_labels", "[1]", "invalid type: integer");
    check(File, "jobs.export_labels", "[\"job\"]", "cannot be a label");
    check(
        File,
        "jobs.export_labels",
        "[\"2team\"]",
        "cannot be a label",
    );
    check(File, "jobs.export_labels", "[\"__x\"]", "cannot be a label");
    check(Env, "jobs.export_labels", "team,job", "cannot be a label");
    // Issue 13, item 4: the caps on running registered jobs.
    for key in ["jobs.max_running_per_user", "jobs.max_running"] {
        check(File, key, "0", "must be 1 to 1000000, got 0");
        check(File, key, "1000001", "must be 1 to 1000000");
        check(File, key, "-1", "invalid value: integer `-1`");
        check(File, key, "1.5", "invalid type: floating point");
        check(File, key, "\"64\"", "invalid type: string");
        check(Env, key, "lots", "\"lots\" is not a number");
        check(Env, key, "0", "must be 1 to 1000000");
        check(Env, key, "-3", "invalid value");
        check(Env, key, "2.5", "invalid type: floating point");
    }
}

#[test]
fn job_caps_from_file_and_env() {
    let c = from_file("[jobs]\nmax_running_per_user = 8\nmax_running = 100\n").unwrap();
    assert_eq!((c.jobs.max_running_per_user, c.jobs.max_running), (8, 100));
    let env = env_layer(|v| match v {
        "GPUCOST_JOBS_MAX_RUNNING_PER_USER" => Some("2".into()),
        "GPUCOST_JOBS_MAX_RUNNING" => Some(" 1000000 ".into()),
        _ => None,
    })
    .unwrap();
    let c = resolve(&env).unwrap();
    assert_eq!(
        (c.jobs.max_running_per_user, c.jobs.max_running),
        (2, 1_000_000)
    );
}

#[test]
fn bad_attribution_names_source_and_key() {
    // Its environment variables and the file's paths take any text, so only the file's types
    // and the interval's range can be wrong.
    check(File, "attribution.proc_root", "1", "invalid type: integer");
    check(
        File,
        "attribution.job_map_dir",
        "false",
        "invalid type: boolean",
    );
    check(
        File,
        "attribution.kubelet_socket",
        "{}",
        "invalid type: map",
    );
    check(
        File,
        "attribution.kubelet_resources",
        "\"nvidia.com/gpu\"",
        "invalid type",
    );
    check(
        File,
        "attribution.kubelet_interval",
        "10",
        "invalid type: integer",
    );
    check(
        File,
        "attribution.kubelet_interval",
        "\"1ms\"",
        "out of range",
    );
    check(
        File,
        "attribution.kubelet_interval",
        "\"2h\"",
        "out of range",
    );
    check(
        Env,
        "attribution.kubelet_interval",
        "often",
        "expected a duration",
    );
    check(Env, "attribution.kubelet_interval", "1ms", "out of range");
}

#[test]
fn bad_bench_names_source_and_key() {
    check(File, "bench.interval", "86400", "invalid type: integer");
    check(File, "bench.interval", "\"400days\"", "out of range");
    check(Env, "bench.interval", "400days", "out of range");
    check(Env, "bench.interval", "weekly", "expected a duration");
    check(File, "bench.min_ratio", "\"high\"", "invalid type: string");
    check(File, "bench.min_ratio", "1.5", "must be in [0, 1]");
    check(File, "bench.min_ratio", "-0.1", "must be in [0, 1]");
    check(File, "bench.min_ratio", "nan", "must be in [0, 1]");
    check(Env, "bench.min_ratio", "high", "\"high\" is not a number");
    check(Env, "bench.min_ratio", "85%", "is not a number");
    check(Env, "bench.min_ratio", "1.5", "must be in [0, 1]");
    check(Env, "bench.min_ratio", "nan", "must be in [0, 1]");
}

/// `jobs.vanish_after` may be as short as the process interval, whatever sets it.
#[test]
fn vanish_after_is_at_least_one_process_interval() {
    let text = |vanish: &str| {
        format!("[sampling]\nprocess_interval = \"10s\"\n[jobs]\nvanish_after = \"{vanish}\"\n")
    };
    let c = from_file(&text("10s")).unwrap();
    assert_eq!(c.jobs.vanish_after, Duration::from_secs(10));
    let e = from_file(&text("9s")).unwrap_err();
    assert_eq!(e.key, "jobs.vanish_after");
    assert!(e.problem.contains("(10s)"), "{e}");
    // The default follows a long process interval.
    let c = from_file("[sampling]\nprocess_interval = \"1h\"\n").unwrap();
    assert_eq!(c.jobs.vanish_after, Duration::from_secs(3 * 3600));
}

/// Lists from the environment: comma-separated, items trimmed, empty ones left out, so that
/// empty text turns a list off.
#[test]
fn env_lists_are_comma_separated() {
    let read = |var: &str, text: &str| {
        let layers = env_layer(|v| (v == var).then(|| text.to_string())).unwrap();
        resolve(&layers).unwrap()
    };
    let c = read("GPUCOST_JOBS_EXPORT_LABELS", " team, project ,");
    assert_eq!(c.jobs.export_labels, ["team", "project"]);
    let c = read("GPUCOST_JOBS_EXPORT_LABELS", "");
    assert!(c.jobs.export_labels.is_empty());
    let c = read(
        "GPUCOST_ATTRIBUTION_KUBELET_RESOURCES",
        "nvidia.com/gpu,nvidia.com/mig-1g.10gb",
    );
    assert_eq!(
        c.attribution.kubelet_resources,
        ["nvidia.com/gpu", "nvidia.com/mig-1g.10gb"]
    );
    let c = read("GPUCOST_BENCH_MIN_RATIO", "0.7");
    assert_eq!(c.bench.min_ratio, 0.7);
    let c = read("GPUCOST_BENCH_MIN_RATIO", "1");
    assert_eq!(c.bench.min_ratio, 1.0);
}

#[test]
fn bad_http_names_source_and_key() {
    check(File, "http.max_connections", "0", "out of range");
    check(File, "http.max_connections", "100000", "out of range");
    check(
        File,
        "http.max_connections",
        "-1",
        "invalid value: integer `-1`",
    );
    check(
        File,
        "http.max_connections",
        "\"256\"",
        "invalid type: string",
    );
    check(File, "http.header_timeout", "10", "invalid type: integer");
    check(File, "http.header_timeout", "\"10ms\"", "out of range");
    check(Env, "http.header_timeout", "2h", "out of range");
    check(Env, "http.idle_timeout", "soon", "expected a duration");
    check(File, "http.idle_timeout", "\"0s\"", "out of range");
    // Longer than the header timeout's default (10s).
    check(
        Env,
        "http.idle_timeout",
        "11s",
        "longer than http.header_timeout",
    );
    check(
        File,
        "http.hide_identities",
        "\"yes\"",
        "invalid type: string",
    );
}

#[test]
fn http_from_file_and_env() {
    let file = file(
        "[http]\nmax_connections = 8\nheader_timeout = \"2s\"\nidle_timeout = \"2s\"\nhide_identities = true\n",
    )
    .unwrap();
    let env = env_layer(|v| (v == "GPUCOST_HTTP_IDLE_TIMEOUT").then(|| "1500ms".into())).unwrap();
    let mut layers = vec![(Origin::File("f.toml".into()), file)];
    layers.extend(env);
    let c = resolve(&layers).unwrap();
    assert_eq!(
        c.http,
        HttpConfig {
            max_connections: 8,
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_millis(1500),
            hide_identities: true,
        }
    );
}

#[test]
fn bad_pricing_names_source_and_key() {
    // [pricing] is read from the file only, and checked by account::pricing (whose own tests
    // hold its messages; these only check that they reach the user with the file and the key).
    check(File, "pricing", "3", "table");
    check(File, "pricing.currency", "\"usd\"", "\"usd\"");
    check(File, "pricing.currency", "840", "invalid type: integer");
    check(File, "pricing.pue", "0.5", "0.5");
    check(File, "pricing.market", "\"cheap\"", "cheap");
}

/// A bad value is the fault of the layer that set it, even over a good one below, and is no
/// fault at all under a good one above.
#[test]
fn the_winning_layer_is_the_one_named() {
    let file = layer::single("sampling.interval", toml::Value::String("2s".into())).unwrap();
    let env = env_layer(|v| (v == "GPUCOST_SAMPLING_INTERVAL").then(|| "0s".into())).unwrap();
    let mut layers = vec![(Origin::File("f.toml".into()), file)];
    layers.extend(env);
    let e = resolve(&layers).unwrap_err();
    assert_eq!(e.origin, Origin::Env("GPUCOST_SAMPLING_INTERVAL".into()));
    assert_eq!(e.key, "sampling.interval");

    let flags = layer::single("listen", toml::Value::String("127.0.0.1:1".into())).unwrap();
    let bad_env = env_layer(|v| (v == "GPUCOST_LISTEN").then(|| "nowhere".into())).unwrap();
    let mut layers = bad_env;
    layers.push((Origin::Flag("listen"), flags));
    assert_eq!(resolve(&layers).unwrap().listen.port(), 1);
}

/// Found by `cargo fuzz run config`: an empty key (`"" = ...`) gave an error with an empty key.
#[test]
fn an_empty_key_is_named() {
    for text in ["\"\"=\"=\"", "\"\"=0\t", "[sampling]\n\"\" = 1\n"] {
        let e = Layer::from_file_text(text, Origin::File("x.toml".into())).unwrap_err();
        assert!(!e.key.is_empty() && !e.problem.is_empty(), "{text:?}: {e}");
    }
}

/// Issue 13, item 10: a mistyped `GPUCOST_*` variable was ignored without a word. Those that
/// are no setting and nothing else gpucost reads are named, each with the closest known one.
#[test]
fn unknown_variables_are_named_with_the_closest_known_one() {
    // The mistyped names are put together with concat!, so that the search of the repository
    // below does not find them.
    let names = [
        concat!("GPUCOST_SAMPLING_INTERVAL", "L"),
        concat!("GPUCOST_JOBS_EXPORT_", "LABEL"),
        concat!("GPUCOST_SOCKET", "MODE"),
        concat!("GPUCOST_JOB_ID", "S"),
        "GPUCOST_",
        // Known: settings, and what the agent, `gpucost run`, the kernels' checks and the fake
        // NVML library read.
        "GPUCOST_SAMPLING_INTERVAL",
        "GPUCOST_JOBS_MAX_RUNNING",
        "GPUCOST_CONFIG",
        "GPUCOST_LOG",
        "GPUCOST_JOB_ID",
        "GPUCOST_LABELS",
        "GPUCOST_SOCKET",
        "GPUCOST_FAKE_NVML_SCENARIO",
        "GPUCOST_FAKE_NVML_START_UNIX",
        "GPUCOST_NVRTC",
        "GPUCOST_NVRTC_LIB",
        "GPUCOST_NVRTC_12_4",
        "GPUCOST_PTXAS_12_2",
        "GPUCOST_NVDISASM",
        "GPUCOST_CUBLAS_LIB",
        "GPUCOST_CUBLASLT_LIB",
        "GPUCOST_SKIP_CUDA_TOOLS",
        "GPUCOST_REGEN_PTX",
        // Not ours at all.
        "PATH",
        "gpucost_listen",
        "XGPUCOST_LISTEN",
    ];
    let unknown = unknown_env_vars(names.iter().map(|n| n.to_string()));
    let want = [
        ("GPUCOST_", "GPUCOST_LOG"),
        (names[1], "GPUCOST_JOBS_EXPORT_LABELS"),
        (names[3], "GPUCOST_JOB_ID"),
        (names[0], "GPUCOST_SAMPLING_INTERVAL"),
        (names[2], "GPUCOST_SOCKET_MODE"),
    ];
    let got: Vec<(&str, &str)> = unknown
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    assert_eq!(got, want);
}

/// Every `GPUCOST_*` name written anywhere in the repository is one gpucost knows, so that none
/// is warned about; a new one must be added to [`OTHER_ENV_VARS`] (or be a setting).
#[test]
fn every_gpucost_variable_in_the_repository_is_known() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = std::collections::BTreeSet::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                // Not what git ignores (build outputs, fuzzing's inputs) nor the generated PTX.
                let skip = ["target", "corpus", "artifacts", "coverage", "ptx"];
                if !name.starts_with('.') && !skip.contains(&name.as_str()) {
                    dirs.push(path);
                }
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for (i, _) in text.match_indices("GPUCOST_") {
                let var: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                // `GPUCOST_` alone (a prefix in prose or code), or a family (`GPUCOST_*`).
                if var.len() > "GPUCOST_".len() && !var.ends_with('_') {
                    names.insert(var);
                }
            }
        }
    }
    assert!(names.contains("GPUCOST_FAKE_NVML_SCENARIO"), "{names:?}");
    let unknown = unknown_env_vars(names.iter().cloned());
    assert!(unknown.is_empty(), "{unknown:?}");
}

/// Issue 16, item 6: the Kubernetes API switch, the node's name and the label mapping.
#[test]
fn kube_api_settings_from_file_and_env_and_their_errors() {
    let c = from_file(
        "[attribution]\nkube_api = \"off\"\nkube_node_name = \"gpu-7\"\n\
         kube_labels = [\"team=app.kubernetes.io/team\", \"project = example.com/project\"]\n",
    )
    .unwrap();
    assert_eq!(c.attribution.kube_api, super::KubeApi::Off);
    assert_eq!(c.attribution.kube_node_name.as_deref(), Some("gpu-7"));
    assert_eq!(
        c.attribution.kube_labels,
        [
            ("team".to_string(), "app.kubernetes.io/team".to_string()),
            ("project".to_string(), "example.com/project".to_string()),
        ]
    );
    check(
        File,
        "attribution.kube_api",
        "\"yes\"",
        "must be auto, on or off",
    );
    check(
        Env,
        "attribution.kube_api",
        "true",
        "must be auto, on or off",
    );
    check(
        File,
        "attribution.kube_node_name",
        "\"\"",
        "is not a node name",
    );
    check(
        Env,
        "attribution.kube_node_name",
        "gpu 7",
        "is not a node name",
    );
    check(
        File,
        "attribution.kube_labels",
        "[\"app.kubernetes.io/team\"]",
        "must be JOB_LABEL=POD_LABEL",
    );
    check(
        File,
        "attribution.kube_labels",
        "[\"job_id=app.kubernetes.io/team\"]",
        "cannot be a label",
    );
    check(
        Env,
        "attribution.kube_labels",
        "team=-bad",
        "is not a Kubernetes label key",
    );
    check(
        Env,
        "attribution.kube_labels",
        "team=Example.com/team",
        "is not a Kubernetes label key",
    );
    check(
        File,
        "attribution.kube_labels",
        "[\"team=a/b/c\"]",
        "is not a Kubernetes label key",
    );
}
