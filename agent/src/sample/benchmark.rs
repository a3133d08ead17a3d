//! Measuring what a GPU delivers: the kernel suite of `gpucost-kernels` (CUDA driver API, NVRTC
//! or shipped PTX), run while the GPU's SM clock, power and temperature are watched, so every
//! figure can be related to the datasheet and to the clock the GPU really held.
//!
//! Who watches depends on who runs it: `gpucost bench` reads NVML itself ([`watch_nvml`]); the
//! agent's benchmark thread reads the node's snapshots ([`watch_snapshots`]), so the agent
//! keeps one NVML handle, the sampler's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gpucost_hw::peaks::{lookup, Precision};
use gpucost_kernels::suite::{self, BenchOptions, BenchReport, Method};
use tokio::sync::watch;

use super::nvml::NvmlBackend;
use super::Backend;
use crate::snapshot::Snapshot;

/// How often a watcher looks at the GPU while a benchmark runs.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Clock, power and temperature while a benchmark ran (means of samples every 100 ms).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Conditions {
    pub sm_clock_hz: Option<f64>,
    pub power_w: Option<f64>,
    pub temperature_c: Option<f64>,
}

/// One precision's figures with their context.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub precision: Precision,
    pub method: Method,
    pub flops_per_s: f64,
    /// Share of the datasheet dense peak.
    pub of_datasheet: Option<f64>,
    /// Share of SMs x FLOP/clock/SM x the measured SM clock.
    pub of_clock_normalized: Option<f64>,
}

/// The benchmark of one GPU with its context.
#[derive(Debug, Clone)]
pub struct GpuBench {
    /// The GPU as NVML names it (its index, the `gpu` label, and UUID), when the benchmark was
    /// asked for by UUID; `report.device` is the CUDA ordinal it was found at.
    pub nvml: Option<(u32, String)>,
    pub report: BenchReport,
    pub conditions: Conditions,
    pub rows: Vec<Row>,
    /// bf16, fp8, tf32 (kernel or library, whichever is faster) over fp32.
    pub speedups: Vec<(Precision, f64)>,
    /// Memory ops as (op, bytes/s, share of the datasheet bandwidth).
    pub memory: Vec<(&'static str, f64, Option<f64>)>,
}

/// Relates the raw results to the datasheet and the clock. Pure.
pub fn analyse(report: BenchReport, conditions: Conditions) -> GpuBench {
    let spec = lookup(&report.name);
    let rows: Vec<Row> = report
        .results
        .iter()
        .map(|r| Row {
            precision: r.precision,
            method: r.method,
            flops_per_s: r.flops_per_s,
            of_datasheet: spec
                .and_then(|s| s.peak(r.precision))
                .map(|p| r.flops_per_s / p),
            of_clock_normalized: spec
                .zip(conditions.sm_clock_hz)
                .and_then(|(s, clk)| s.clock_normalized_peak(r.precision, clk))
                .map(|p| r.flops_per_s / p),
        })
        .collect();
    let best = |p: Precision| {
        rows.iter()
            .filter(|r| r.precision == p)
            .map(|r| r.flops_per_s)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    let speedups = match best(Precision::Fp32) {
        Some(fp32) if fp32 > 0.0 => [Precision::Bf16, Precision::Fp8, Precision::Tf32]
            .into_iter()
            .filter_map(|p| best(p).map(|v| (p, v / fp32)))
            .collect(),
        _ => Vec::new(),
    };
    let memory = report
        .memory
        .iter()
        .map(|m| {
            (
                m.op.as_str(),
                m.bytes_per_s,
                spec.map(|s| m.bytes_per_s / s.mem_bandwidth_bytes_per_s),
            )
        })
        .collect();
    GpuBench {
        nvml: None,
        report,
        conditions,
        rows,
        speedups,
        memory,
    }
}

/// Runs the benchmark on the CUDA device that is NVML's GPU `index` with UUID `uuid` (found by
/// its UUID, never by the index: `gpucost_kernels::devices`), while `watch` sees what the GPU's
/// clock, power and temperature were. A GPU that CUDA does not see is
/// `BenchError::NoMatch`, and nothing runs.
pub fn bench_nvml_gpu(
    index: u32,
    uuid: &str,
    quick: bool,
    watch: impl FnOnce(&AtomicBool) -> Conditions + Send + 'static,
) -> Result<GpuBench, suite::BenchError> {
    let ordinal = suite::ordinal_of(&gpucost_kernels::devices::Wanted { uuid, pci: None })?;
    let mut b = bench_gpu(ordinal, quick, watch)?;
    b.nvml = Some((index, uuid.to_string()));
    Ok(b)
}

/// Runs the benchmark on CUDA device `device` while `watch` (on its own thread, until told to
/// stop) sees what the GPU's clock, power and temperature were.
pub fn bench_gpu(
    device: usize,
    quick: bool,
    watch: impl FnOnce(&AtomicBool) -> Conditions + Send + 'static,
) -> Result<GpuBench, suite::BenchError> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let watcher = std::thread::spawn(move || watch(&flag));
    let result = suite::run(&BenchOptions { device, quick });
    stop.store(true, Ordering::Relaxed);
    let conditions = watcher.join().unwrap_or_default();
    result.map(|r| analyse(r, conditions))
}

/// Clock, power and temperature samples, kept only while the GPU computes (idle clocks would
/// drag the mean down).
#[derive(Default)]
struct Samples {
    clock_hz: Vec<f64>,
    power_w: Vec<f64>,
    temperature_c: Vec<f64>,
}

impl Samples {
    fn add(&mut self, r: &gpucost_core::reading::Reading) {
        if r.utilization_pct.is_some_and(|u| u > 50.0) {
            self.clock_hz
                .extend(r.sm_clock_mhz.map(|m| f64::from(m) * 1e6));
            self.power_w
                .extend(r.power_mw().map(|m| f64::from(m) / 1e3));
            self.temperature_c.extend(r.temperature_c.map(f64::from));
        }
    }

    fn means(&self) -> Conditions {
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        Conditions {
            sm_clock_hz: mean(&self.clock_hz),
            power_w: mean(&self.power_w),
            temperature_c: mean(&self.temperature_c),
        }
    }
}

/// Watches GPU `index` through NVML (`gpucost bench`, where no agent samples the GPU).
pub fn watch_nvml(
    index: u32,
    lib: Option<std::path::PathBuf>,
) -> impl FnOnce(&AtomicBool) -> Conditions + Send + 'static {
    move |stop| {
        let Ok(nvml) = NvmlBackend::open(lib.as_deref()) else {
            return Conditions::default();
        };
        let mut samples = Samples::default();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(r) = nvml.read(index, false) {
                samples.add(&r);
            }
            std::thread::sleep(WATCH_EVERY);
        }
        samples.means()
    }
}

/// Watches GPU `uuid` in the node's snapshots (the agent's benchmark thread): each new sample
/// the sampler publishes counts once.
pub fn watch_snapshots(
    uuid: String,
    snapshots: watch::Receiver<Arc<Snapshot>>,
) -> impl FnOnce(&AtomicBool) -> Conditions + Send + 'static {
    move |stop| {
        let mut samples = Samples::default();
        let mut last = None;
        while !stop.load(Ordering::Relaxed) {
            let snap = snapshots.borrow().clone();
            if snap.taken_at != last {
                last = snap.taken_at;
                if let Some(r) = snap
                    .gpus
                    .iter()
                    .find(|g| g.info.uuid == uuid)
                    .and_then(|g| g.reading.as_ref())
                {
                    samples.add(r);
                }
            }
            std::thread::sleep(WATCH_EVERY);
        }
        samples.means()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpucost_kernels::suite::{KernelResult, MemOp, MemoryResult};

    fn report() -> BenchReport {
        let k = |precision, method, tflops: f64| KernelResult {
            precision,
            method,
            flops_per_s: tflops * 1e12,
            median_s: 0.01,
            repeats: 5,
        };
        BenchReport {
            device: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: (9, 0),
            sm_count: 132,
            results: vec![
                k(Precision::Fp32, Method::Kernel, 63.0),
                k(Precision::Bf16, Method::Kernel, 900.0),
                k(Precision::Bf16, Method::Library, 750.0),
                k(Precision::Fp8, Method::Library, 1400.0),
            ],
            memory: vec![MemoryResult {
                op: MemOp::Copy,
                bytes_per_s: 3.0e12,
            }],
            skipped: vec![("tf32 kernel".into(), "verification failed".into())],
            elapsed_s: 9.5,
        }
    }

    #[test]
    fn analysis_relates_results_to_the_datasheet_and_the_clock() {
        let b = analyse(
            report(),
            Conditions {
                sm_clock_hz: Some(1.98e9),
                power_w: Some(690.0),
                temperature_c: Some(61.0),
            },
        );
        let row = |p, m| {
            b.rows
                .iter()
                .find(|r| r.precision == p && r.method == m)
                .unwrap()
        };
        // FP32: 63 of 67 TFLOP/s; at 1980 MHz the clock-normalized peak is 132 x 256 x 1.98e9.
        let fp32 = row(Precision::Fp32, Method::Kernel);
        assert!((fp32.of_datasheet.unwrap() - 63.0 / 67.0).abs() < 0.01);
        let norm = 132.0 * 256.0 * 1.98e9;
        assert!((fp32.of_clock_normalized.unwrap() - 63e12 / norm).abs() < 1e-9);
        // Speedups over FP32 use the best method of each precision.
        let bf16 = b
            .speedups
            .iter()
            .find(|(p, _)| *p == Precision::Bf16)
            .unwrap()
            .1;
        assert!((bf16 - 900.0 / 63.0).abs() < 1e-9);
        let fp8 = b
            .speedups
            .iter()
            .find(|(p, _)| *p == Precision::Fp8)
            .unwrap()
            .1;
        assert!((fp8 - 1400.0 / 63.0).abs() < 1e-9);
        assert!(
            b.speedups.iter().all(|(p, _)| *p != Precision::Tf32),
            "no tf32 result, no tf32 speedup"
        );
        assert!((b.memory[0].2.unwrap() - 3.0 / 3.35).abs() < 0.01);
        let table = crate::cli::bench::to_table(&b);
        assert!(
            table.contains("1980 MHz") && table.contains("skipped tf32 kernel"),
            "{table}"
        );
        let json = crate::cli::bench::to_json(&b);
        assert_eq!(json["results"].as_array().unwrap().len(), 4);
        assert_eq!(json["compute_capability"], "9.0");
    }

    #[test]
    fn the_snapshot_watcher_counts_each_busy_sample_once() {
        use gpucost_core::reading::{GpuStatic, Reading, Source};
        let (tx, rx) = watch::channel(Arc::new(Snapshot::empty(Source::Nvml, None)));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let w = std::thread::spawn(move || watch_snapshots("GPU-1".into(), rx)(&flag));
        let start = std::time::Instant::now();
        for (clock, util) in [(1900, 99), (1700, 99), (300, 0)] {
            let mut s = Snapshot::empty(Source::Nvml, None);
            s.taken_at = Some(start + Duration::from_secs(clock));
            s.gpus.push(crate::snapshot::GpuSnapshot {
                info: GpuStatic {
                    index: 1,
                    uuid: "GPU-1".into(),
                    model: "NVIDIA H100 80GB HBM3".into(),
                    mig: None,
                    compute_capability: None,
                    sm_count: None,
                },
                up: true,
                reading: Some(Reading {
                    sm_clock_mhz: Some(clock as u32),
                    utilization_pct: Some(f64::from(util)),
                    ..Reading::default()
                }),
                processes: Vec::new(),
                totals: Default::default(),
                energy_method: None,
                health: Default::default(),
            });
            tx.send(Arc::new(s)).unwrap();
            // Long enough for the watcher to look more than once at the same sample.
            std::thread::sleep(WATCH_EVERY * 3);
        }
        stop.store(true, Ordering::Relaxed);
        let c = w.join().unwrap();
        // 1900 and 1700 MHz while busy, each once; the idle 300 MHz sample is left out.
        assert_eq!(c.sm_clock_hz, Some(1.8e9));
    }
}
