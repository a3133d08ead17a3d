//! Shared by the test files: where the built fake library is, and the names of its env vars.
//!
//! The tests load the cdylib through `nvml-wrapper` exactly as the agent does; they never link
//! the `nvidia_ml` rlib, so what is tested is the `.so` and its exported C symbols.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

pub const SCENARIO_ENV: &str = "GPUCOST_FAKE_NVML_SCENARIO";
pub const START_ENV: &str = "GPUCOST_FAKE_NVML_START_UNIX";

/// The fake library built for this test run.
///
/// Cargo builds the package's lib target (cdylib included) before its integration tests, but
/// only `cargo build` copies (uplifts) the cdylib to `target/<profile>/libnvidia_ml.so`; the
/// fresh one is `target/<profile>/deps/libnvidia_ml.so`, next to this test binary. That one is
/// used; failing it the uplifted one; failing both, `cargo build -p fake-nvml` is run once.
pub fn fake_lib() -> &'static PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let exe = std::env::current_exe().expect("path of the test binary");
        let deps = exe
            .parent()
            .expect("the test binary is in target/<profile>/deps");
        let profile_dir = deps.parent().expect("deps/ is in target/<profile>");
        let fresh = deps.join("libnvidia_ml.so");
        if fresh.exists() {
            return fresh;
        }
        let lib = profile_dir.join("libnvidia_ml.so");
        if !lib.exists() {
            let mut build = Command::new(env!("CARGO"));
            build.args(["build", "-p", "fake-nvml"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build -p fake-nvml");
            assert!(status.success(), "cargo build -p fake-nvml failed");
        }
        assert!(lib.exists(), "{} was not built", lib.display());
        lib
    })
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// A copy of the fake library in `dir` that does not export `symbol`, as a driver from before
/// that function existed (R535.54 has no `nvmlDeviceGetRunningProcessDetailList`). The name is
/// overwritten (its last letter becomes `_`) wherever it occurs in the file, the dynamic symbol
/// table included, so the dynamic loader no longer finds it.
pub fn fake_lib_without(dir: &std::path::Path, symbol: &str) -> PathBuf {
    let mut bytes = std::fs::read(fake_lib()).expect("read the fake library");
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
