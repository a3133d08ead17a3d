//! How many times each NVML function was called, for measuring what the agent asks of a driver
//! per cycle (docs/performance.md). With `GPUCOST_FAKE_NVML_CALLS=FILE`, the counts since the
//! library was loaded are written to FILE (one `name count` line each, by name) at every
//! `nvmlShutdown`, which the agent calls when it closes NVML (on its way out, too).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Where the counts go, when set.
pub const CALLS_ENV: &str = "GPUCOST_FAKE_NVML_CALLS";

static COUNTS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// One call of `name`.
pub fn count(name: &'static str) {
    *COUNTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(name)
        .or_default() += 1;
}

/// Writes the counts to the file `GPUCOST_FAKE_NVML_CALLS` names, if it is set. A failure is
/// no NVML error: the counts are only a measurement.
pub fn write() {
    let Some(path) = std::env::var_os(CALLS_ENV) else {
        return;
    };
    let text: String = COUNTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(name, n)| format!("{name} {n}\n"))
        .collect();
    let _ = std::fs::write(path, text);
}
