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
    // Every key a layer accepts appears in the example (commented out or not).
    for key in ENV_KEYS {
        let leaf = key.rsplit('.').next().unwrap();
        assert!(
            EXAMPLE.contains(&format!("{leaf} =")),
            "{key} is not documented in the example"
        );
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

/// Mutation fuzzing of the example config: any value replaced by junk gives a config or an
/// error naming its key, never a panic.
#[test]
fn fuzzed_configs_give_a_config_or_a_named_error() {
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
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut ok, mut bad) = (0, 0);
    for _ in 0..3000 {
        let mut doc: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        for _ in 0..(1 + next() % 3) {
            let i = values[(next() % values.len() as u64) as usize];
            let key = doc[i].split(" = ").next().unwrap().to_string();
            doc[i] = format!("{key} = {}", junk[(next() % junk.len() as u64) as usize]);
        }
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
    assert!(ok > 0 && bad > 1000, "ok {ok}, refused {bad}");
}
