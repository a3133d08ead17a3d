//! The processes on a GPU, with the memory each holds and its share of the SMs.

use std::collections::BTreeMap;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Device;

use super::field;
use gpucost_core::reading::{Field, FieldError, ProcessUse, SampleError};

/// The compute processes on GPU `index`, with their SM utilization since the newest sample seen
/// before (`last_util_sample`, NVML timestamps in microseconds, by GPU).
pub(super) fn read_processes(
    d: &Device<'_>,
    index: u32,
    last_util_sample: &mut BTreeMap<u32, u64>,
    e: &mut Vec<(Field, FieldError)>,
) -> Result<Option<Vec<ProcessUse>>, SampleError> {
    let procs = field(d.running_compute_processes(), Field::Processes, e)?;
    let since = last_util_sample.get(&index).copied();
    let samples = if procs.as_ref().is_some_and(|p| !p.is_empty()) {
        field(
            d.process_utilization_stats(since),
            Field::ProcessUtilization,
            e,
        )?
        .unwrap_or_default()
    } else {
        Vec::new()
    };
    if let Some(newest) = samples.iter().map(|s| s.timestamp).max() {
        last_util_sample.insert(index, newest);
    }
    // NVML may return several samples per process: average them.
    let mut sm: BTreeMap<u32, (u64, u64)> = Default::default();
    for s in &samples {
        let e = sm.entry(s.pid).or_default();
        e.0 += u64::from(s.sm_util);
        e.1 += 1;
    }
    Ok(procs.map(|ps| {
        ps.into_iter()
            .map(|p| ProcessUse {
                pid: p.pid,
                used_memory_bytes: match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b),
                    UsedGpuMemory::Unavailable => None,
                },
                sm_util_pct: sm.get(&p.pid).map(|(sum, n)| (sum / n) as u32),
            })
            .collect()
    }))
}
