//! The layering the crate boundaries promise (ARCHITECTURE.md): the pure core and the GPU facts
//! build without an async runtime, HTTP, SQLite, gRPC, NVML or CUDA, so a wrong import fails to
//! build instead of waiting for a reviewer. Checked on the resolved dependency tree.

use std::process::Command;

/// Crates that do I/O or talk to hardware, which the pure crates must not pull in.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "hyper",
    "axum",
    "tower",
    "rusqlite",
    "libsqlite3-sys",
    "tonic",
    "prost",
    "nvml-wrapper",
    "nvml-wrapper-sys",
    "cudarc",
    "libloading",
    "prometheus",
    "gpucost",
    "gpucost-kernels",
    "gpucost-sim",
];

/// The normal (not dev, not build) dependencies of `package`, as `name` lines.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_pure_crates_depend_on_no_io_or_hardware_crate() {
    for package in ["gpucost-core", "gpucost-hw"] {
        let deps = dependencies(package);
        assert!(deps.iter().any(|d| d == package), "{package}: {deps:?}");
        let bad: Vec<&String> = deps
            .iter()
            .filter(|d| FORBIDDEN.contains(&d.as_str()))
            .collect();
        assert!(bad.is_empty(), "{package} depends on {bad:?}");
    }
    // The GPU facts are below the core, the simulated node and the kernels.
    let hw = dependencies("gpucost-hw");
    assert!(!hw.iter().any(|d| d == "gpucost-core"), "{hw:?}");
}
