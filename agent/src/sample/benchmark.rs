//! Measuring what a GPU delivers: the kernel suite of `gpucost-kernels` (CUDA driver API, NVRTC
//! or shipped PTX), run while the GPU's SM clock, power and temperature are watched, so every
//! figure can be related to the datasheet and to the clock the GPU really held.
//!
//! Who watches depends on who runs it: `gpucost bench` reads NVML itself ([`watch_nvml`]); the
//! agent's benchmark thread reads the node's snapshots ([`watch_snapshots`]), so the agent
//! keeps one NVML handle, the sampler's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpucost_core::reading::ThrottleReason;
use gpucost_hw::peaks::{lookup, sm_peak, Arch, Precision};
use gpucost_kernels::suite::{self, BenchOptions, BenchReport, Method, Pace};
use tokio::sync::watch;

use super::nvml::NvmlBackend;
use super::Backend;
use crate::snapshot::Snapshot;

/// How often a watcher looks at the GPU while a benchmark runs: often enough that each row's
/// quarter of a second of measuring holds several readings.
const WATCH_EVERY: Duration = Duration::from_millis(25);

/// Clock, power and temperature while a benchmark ran (means of the busy samples), and every
/// sample, for the rows to take theirs from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    pub sm_clock_hz: Option<f64>,
    pub power_w: Option<f64>,
    pub temperature_c: Option<f64>,
    pub samples: Vec<Sample>,
}

/// One look at the GPU while the benchmark ran.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: Instant,
    pub sm_clock_hz: Option<f64>,
    /// Board power now where the GPU reports it (a one-second average would mix rows), else
    /// the average.
    pub power_w: Option<f64>,
    pub temperature_c: Option<f64>,
    /// NVML's clock-event reason bits.
    pub clock_event_reasons: Option<u64>,
    pub busy: bool,
}

impl Sample {
    fn of(at: Instant, r: &gpucost_core::reading::Reading) -> Sample {
        Sample {
            at,
            sm_clock_hz: r.sm_clock_mhz.map(|m| f64::from(m) * 1e6),
            power_w: r
                .power_instant_mw
                .or(r.power_mw())
                .map(|m| f64::from(m) / 1e3),
            temperature_c: r.temperature_c.map(f64::from),
            clock_event_reasons: r.clock_event_reasons,
            busy: r.utilization_pct.is_some_and(|u| u > 50.0),
        }
    }
}

/// Where a row's SM clock came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSource {
    /// Our kernel's own blocks: `%clock64` cycles over `%globaltimer` nanoseconds.
    Kernel,
    /// NVML's readings while the row was measured (library rows, whose kernels are not ours).
    Nvml,
}

impl ClockSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ClockSource::Kernel => "kernel",
            ClockSource::Nvml => "nvml",
        }
    }
}

/// One precision's figures with their context.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub precision: Precision,
    pub method: Method,
    pub flops_per_s: f64,
    /// Share of the datasheet dense peak.
    pub of_datasheet: Option<f64>,
    /// Share of the device's SMs x FLOP/clock/SM x this row's own SM clock.
    pub of_clock_normalized: Option<f64>,
    /// The SM clock this row ran at, Hz, and where it came from.
    pub sm_clock_hz: Option<f64>,
    pub clock_source: Option<ClockSource>,
    /// Why the kernel's own clock is missing, where it is.
    pub clock_note: Option<String>,
    /// Mean board power while this row was measured, W.
    pub power_w: Option<f64>,
    /// Clock-event (throttle) reasons NVML reported while this row was measured (`gpu_idle`
    /// left out: it is not a limit).
    pub throttle: Vec<&'static str>,
    /// The timed launches' rates: how many, their 10th and 90th percentiles, FLOP/s.
    pub launches: u32,
    pub p10_flops_per_s: Option<f64>,
    pub p90_flops_per_s: Option<f64>,
    /// What the row settled at (its last third of launches): SM clock (the kernel's own, else
    /// NVML's) and power.
    pub settled_clock_hz: Option<f64>,
    pub settled_power_w: Option<f64>,
    /// A library row's GEMM shape (the delivered rate); `None` for our kernels (the ceiling).
    pub shape: Option<gpucost_kernels::flops::GemmShape>,
}

/// What NVML's samples in `window` say of one row: (SM clock Hz, power W, throttle reasons).
/// Means over the samples in it; `None` where it holds none with the field.
pub fn row_conditions(
    samples: &[Sample],
    window: (Instant, Instant),
) -> (Option<f64>, Option<f64>, Vec<&'static str>) {
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= window.0 && s.at <= window.1)
        .collect();
    let mean = |f: &dyn Fn(&Sample) -> Option<f64>| {
        let v: Vec<f64> = inside.iter().filter_map(|s| f(s)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let bits = inside
        .iter()
        .filter_map(|s| s.clock_event_reasons)
        .fold(0u64, |a, b| a | b);
    let throttle = ThrottleReason::ALL
        .into_iter()
        .filter(|r| r.bit().is_some_and(|b| bits & b != 0))
        .map(ThrottleReason::as_str)
        .collect();
    (mean(&|s| s.sm_clock_hz), mean(&|s| s.power_w), throttle)
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
    /// bf16, fp16, fp8, tf32 over fp32, as delivered (see [`speedups`]).
    pub speedups: Vec<(Precision, f64)>,
    pub speedup_basis: SpeedupBasis,
    /// Memory ops as (op, bytes/s, share of the datasheet bandwidth).
    pub memory: Vec<(&'static str, f64, Option<f64>)>,
}

/// What the mixed-precision speedups compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeedupBasis {
    /// The libraries' GEMMs at 8192^3 (or the square shape both were measured at): the rates a
    /// training job gets.
    Delivered,
    /// Our kernels' rates, where the libraries could not be measured: ceilings, which overstate
    /// what a job would gain.
    Ceiling,
}

impl SpeedupBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            SpeedupBasis::Delivered => "delivered",
            SpeedupBasis::Ceiling => "ceiling",
        }
    }
}

/// The mixed-precision speedups over FP32 (issue 18, item 5): each precision's delivered rate
/// (its library GEMM at the same square shape as FP32's SGEMM) over FP32's. Where FP32 has no
/// library row, our kernels' rates stand in, and the basis says so.
pub fn speedups(rows: &[Row]) -> (Vec<(Precision, f64)>, SpeedupBasis) {
    let targets = [
        Precision::Bf16,
        Precision::Fp16,
        Precision::Fp8,
        Precision::Tf32,
    ];
    let rate = |p: Precision, pick: &dyn Fn(&Row) -> bool| {
        rows.iter()
            .filter(|r| r.precision == p && pick(r))
            .map(|r| r.flops_per_s)
            .reduce(f64::max)
    };
    let fp32_shape = rows
        .iter()
        .find(|r| r.precision == Precision::Fp32 && r.method == Method::Library)
        .and_then(|r| r.shape);
    if let Some(shape) = fp32_shape {
        let same = |r: &Row| r.method == Method::Library && r.shape == Some(shape);
        if let Some(fp32) = rate(Precision::Fp32, &same).filter(|v| *v > 0.0) {
            let out = targets
                .into_iter()
                .filter_map(|p| rate(p, &same).map(|v| (p, v / fp32)))
                .collect();
            return (out, SpeedupBasis::Delivered);
        }
    }
    let kernel = |r: &Row| r.method == Method::Kernel;
    let out = match rate(Precision::Fp32, &kernel).filter(|v| *v > 0.0) {
        Some(fp32) => targets
            .into_iter()
            .filter_map(|p| rate(p, &kernel).map(|v| (p, v / fp32)))
            .collect(),
        None => Vec::new(),
    };
    (out, SpeedupBasis::Ceiling)
}

/// Relates the raw results to the datasheet and to each row's own clock, on the SMs the
/// device reports (a MIG instance's, not the board's). Pure.
pub fn analyse(report: BenchReport, conditions: Conditions) -> GpuBench {
    let spec = lookup(&report.name);
    let arch = Arch::from_compute_capability(report.compute_capability).or(spec.map(|s| s.arch));
    let rows: Vec<Row> = report
        .results
        .iter()
        .map(|r| {
            let (nvml_clock, power_w, throttle) = row_conditions(&conditions.samples, r.window);
            let (sm_clock_hz, clock_source) = match (r.sm_clock, nvml_clock) {
                (Some(c), _) => (Some(c.hz), Some(ClockSource::Kernel)),
                (None, Some(hz)) => (Some(hz), Some(ClockSource::Nvml)),
                (None, None) => (None, None),
            };
            let ceiling = arch
                .zip(sm_clock_hz)
                .and_then(|(a, clk)| sm_peak(&report.name, a, r.precision, report.sm_count, clk));
            let (settled_nvml_clock, settled_power_w, _) =
                row_conditions(&conditions.samples, r.settled_window);
            Row {
                shape: r.shape,
                launches: r.repeats,
                p10_flops_per_s: r.spread.map(|s| s.p10),
                p90_flops_per_s: r.spread.map(|s| s.p90),
                settled_clock_hz: r.settled_clock.map(|c| c.hz).or(settled_nvml_clock),
                settled_power_w,
                precision: r.precision,
                method: r.method,
                flops_per_s: r.flops_per_s,
                of_datasheet: spec
                    .and_then(|s| s.peak(r.precision))
                    .map(|p| r.flops_per_s / p),
                of_clock_normalized: ceiling.map(|p| r.flops_per_s / p),
                sm_clock_hz,
                clock_source,
                clock_note: r.clock_note.clone(),
                power_w,
                throttle,
            }
        })
        .collect();
    let (speedups, speedup_basis) = speedups(&rows);
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
        speedup_basis,
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
    pace: Pace,
    watch: impl FnOnce(&AtomicBool) -> Conditions + Send + 'static,
) -> Result<GpuBench, suite::BenchError> {
    let ordinal = suite::ordinal_of(&gpucost_kernels::devices::Wanted { uuid, pci: None })?;
    let mut b = bench_gpu(ordinal, pace, watch)?;
    b.nvml = Some((index, uuid.to_string()));
    Ok(b)
}

/// Runs the benchmark on CUDA device `device` while `watch` (on its own thread, until told to
/// stop) sees what the GPU's clock, power and temperature were.
pub fn bench_gpu(
    device: usize,
    pace: Pace,
    watch: impl FnOnce(&AtomicBool) -> Conditions + Send + 'static,
) -> Result<GpuBench, suite::BenchError> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let watcher = std::thread::spawn(move || watch(&flag));
    let result = suite::run(&BenchOptions { device, pace });
    stop.store(true, Ordering::Relaxed);
    let conditions = watcher.join().unwrap_or_default();
    result.map(|r| analyse(r, conditions))
}

/// The samples taken while a benchmark ran.
#[derive(Default)]
struct Samples(Vec<Sample>);

impl Samples {
    fn add(&mut self, at: Instant, r: &gpucost_core::reading::Reading) {
        self.0.push(Sample::of(at, r));
    }

    /// The run's conditions: means over the samples taken while the GPU computed (idle clocks
    /// would drag the mean down), and every sample.
    fn means(self) -> Conditions {
        let mean = |f: &dyn Fn(&Sample) -> Option<f64>| {
            let v: Vec<f64> = self.0.iter().filter(|s| s.busy).filter_map(f).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        Conditions {
            sm_clock_hz: mean(&|s| s.sm_clock_hz),
            power_w: mean(&|s| s.power_w),
            temperature_c: mean(&|s| s.temperature_c),
            samples: self.0,
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
                samples.add(Instant::now(), &r);
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
                if let Some((at, r)) = snap.taken_at.zip(
                    snap.gpus
                        .iter()
                        .find(|g| g.info.uuid == uuid)
                        .and_then(|g| g.reading.as_ref()),
                ) {
                    samples.add(at, r);
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

    /// Each row measured in its own quarter second from `t0`, in this order.
    fn report_at(t0: Instant) -> BenchReport {
        let slot = std::cell::Cell::new(0u32);
        let k = |precision, method, tflops: f64, kernel_mhz: Option<f64>| {
            let n = slot.replace(slot.get() + 1);
            let from = t0 + Duration::from_millis(250 * u64::from(n));
            KernelResult {
                precision,
                method,
                flops_per_s: tflops * 1e12,
                median_s: 0.01,
                repeats: 5,
                sm_clock: kernel_mhz.map(|m| gpucost_kernels::clocks::LaunchClock {
                    hz: m * 1e6,
                    min_hz: m * 1e6,
                    max_hz: m * 1e6,
                    blocks: 132,
                }),
                clock_note: None,
                window: (from, from + Duration::from_millis(200)),
                spread: gpucost_kernels::flops::spread(&[tflops * 0.98e12, tflops * 1e12]),
                settled_clock: None,
                settled_window: (
                    from + Duration::from_millis(130),
                    from + Duration::from_millis(200),
                ),
                shape: None,
            }
        };
        BenchReport {
            device: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: (9, 0),
            sm_count: 132,
            results: vec![
                k(Precision::Fp32, Method::Kernel, 63.0, Some(1980.0)),
                k(Precision::Bf16, Method::Kernel, 900.0, Some(1755.0)),
                k(Precision::Bf16, Method::Library, 750.0, None),
                k(Precision::Fp8, Method::Library, 1400.0, None),
            ],
            memory: vec![MemoryResult {
                op: MemOp::Copy,
                bytes_per_s: 3.0e12,
            }],
            skipped: vec![("tf32 kernel".into(), "verification failed".into())],
            elapsed_s: 9.5,
            pace: Pace::Normal,
        }
    }

    fn report() -> BenchReport {
        report_at(Instant::now())
    }

    fn sample(at: Instant, mhz: f64, watts: f64, reasons: u64) -> Sample {
        Sample {
            at,
            sm_clock_hz: Some(mhz * 1e6),
            power_w: Some(watts),
            temperature_c: Some(60.0),
            clock_event_reasons: Some(reasons),
            busy: true,
        }
    }

    /// Issue 18, item 2: each row has its own clock (its kernel's stamps, or NVML's readings in
    /// its window for a library row), its power and its throttle reasons, and its
    /// clock-normalized share uses the SMs the device reports.
    #[test]
    fn issue_18_each_row_has_its_own_clock_power_and_throttle_reasons() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let samples = vec![
            // The FP32 kernel's window (0-200 ms): NVML says 1410 MHz, the kernel 1980.
            sample(ms(50), 1410.0, 500.0, 0x1),
            sample(ms(150), 1410.0, 520.0, 0),
            // The BF16 library's (500-700 ms): power-capped, 1600 then 1700 MHz.
            sample(ms(550), 1600.0, 690.0, 0x4),
            sample(ms(650), 1700.0, 700.0, 0x4 | 0x1),
            // The FP8 library's (750-950 ms): nothing sampled.
        ];
        let mut report = report_at(t0);
        let b = analyse(
            report.clone(),
            Conditions {
                samples: samples.clone(),
                ..Conditions::default()
            },
        );
        let row = |b: &GpuBench, p, m| {
            b.rows
                .iter()
                .find(|r| r.precision == p && r.method == m)
                .unwrap()
                .clone()
        };
        let fp32 = row(&b, Precision::Fp32, Method::Kernel);
        assert_eq!(
            (fp32.sm_clock_hz, fp32.clock_source),
            (Some(1.98e9), Some(ClockSource::Kernel))
        );
        assert_eq!(fp32.power_w, Some(510.0));
        assert!(fp32.throttle.is_empty(), "gpu_idle is not throttling");
        let norm = 132.0 * 256.0 * 1.98e9;
        assert!((fp32.of_clock_normalized.unwrap() - 63e12 / norm).abs() < 1e-9);
        let lib = row(&b, Precision::Bf16, Method::Library);
        assert_eq!(lib.clock_source, Some(ClockSource::Nvml));
        assert!((lib.sm_clock_hz.unwrap() - 1.65e9).abs() < 1.0);
        assert_eq!(
            (lib.power_w, lib.throttle.clone()),
            (Some(695.0), vec!["sw_power_cap"])
        );
        let norm = 132.0 * 4096.0 * 1.65e9;
        assert!((lib.of_clock_normalized.unwrap() - 750e12 / norm).abs() < 1e-9);
        // Settled: the last third of the window (130-200 ms after each row's start): the
        // library row's second sample only.
        assert_eq!(
            (lib.settled_power_w, lib.settled_clock_hz),
            (Some(700.0), Some(1.7e9))
        );
        assert_eq!(fp32.settled_power_w, Some(520.0));
        // Launches at 735 and 750 TFLOP/s: p10 736.5, p90 748.5.
        assert!((lib.p10_flops_per_s.unwrap() - 736.5e12).abs() < 1e3);
        assert!((lib.p90_flops_per_s.unwrap() - 748.5e12).abs() < 1e3);
        let fp8 = row(&b, Precision::Fp8, Method::Library);
        assert_eq!(
            (fp8.sm_clock_hz, fp8.of_clock_normalized, fp8.power_w),
            (None, None, None)
        );
        // A MIG instance of 16 SMs: its rows are against 16 SMs, not the board's 132.
        report.sm_count = 16;
        let b = analyse(
            report,
            Conditions {
                samples,
                ..Conditions::default()
            },
        );
        let fp32 = row(&b, Precision::Fp32, Method::Kernel);
        let norm = 16.0 * 256.0 * 1.98e9;
        assert!((fp32.of_clock_normalized.unwrap() - 63e12 / norm).abs() < 1e-9);
        let table = crate::cli::bench::to_table(&b);
        assert!(table.contains("1980 kernel"), "{table}");
        assert!(!table.contains("SETTLED"), "{table}");
        let json = crate::cli::bench::to_json(&b);
        assert_eq!(json["results"][0]["sm_clock_source"], "kernel");
        assert_eq!(json["results"][2]["throttle_reasons"][0], "sw_power_cap");
        assert_eq!(json["results"][2]["settled_power_w"], 700.0);
        assert_eq!(json["sustained_s"], serde_json::Value::Null);
        // Sustained: the table shows what each row settled at.
        let mut sustained = b.clone();
        sustained.report.pace = Pace::Sustained(Duration::from_secs(60));
        let table = crate::cli::bench::to_table(&sustained);
        assert!(
            table.contains("SETTLED") && table.contains("1700 MHz 700 W"),
            "{table}"
        );
        assert!(table.contains("sustained 1m"), "{table}");
        assert_eq!(crate::cli::bench::to_json(&sustained)["sustained_s"], 60.0);
    }

    #[test]
    fn analysis_relates_results_to_the_datasheet_and_the_clock() {
        let b = analyse(
            report(),
            Conditions {
                sm_clock_hz: Some(1.98e9),
                power_w: Some(690.0),
                temperature_c: Some(61.0),
                samples: Vec::new(),
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
        // No FP32 library row: the speedups compare our kernels (ceilings), and say so; FP8,
        // measured by a library only, is not set against a kernel's FP32.
        assert_eq!(b.speedup_basis, SpeedupBasis::Ceiling);
        let bf16 = b
            .speedups
            .iter()
            .find(|(p, _)| *p == Precision::Bf16)
            .unwrap()
            .1;
        assert!((bf16 - 900.0 / 63.0).abs() < 1e-9);
        assert!(
            b.speedups
                .iter()
                .all(|(p, _)| *p != Precision::Tf32 && *p != Precision::Fp8),
            "{:?}",
            b.speedups
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

    /// Issue 18, item 5: the speedups are delivered rates: the libraries' GEMMs at the same
    /// square shape, not our kernels' ceilings and not another shape.
    #[test]
    fn issue_18_speedups_use_delivered_rates() {
        use gpucost_kernels::flops::GemmShape;
        let mut report = report();
        let lib = |p, tflops: f64, shape| {
            let mut r = report.results[2].clone();
            r.precision = p;
            r.flops_per_s = tflops * 1e12;
            r.shape = Some(shape);
            r
        };
        let (sq, tr) = (GemmShape::SQUARE_8192, GemmShape::TRAINING);
        report.results.extend([
            lib(Precision::Fp32, 50.0, sq),
            lib(Precision::Tf32, 400.0, sq),
            lib(Precision::Bf16, 800.0, tr),
        ]);
        // The BF16 library row of the report (750) is at 8192^3.
        for r in report.results.iter_mut() {
            if r.method == Method::Library && r.shape.is_none() {
                r.shape = Some(sq);
            }
        }
        let b = analyse(report, Conditions::default());
        assert_eq!(b.speedup_basis, SpeedupBasis::Delivered);
        let get = |p| b.speedups.iter().find(|(q, _)| *q == p).map(|(_, v)| *v);
        // 750 / 50, not the kernel's 900 / 63 nor the training shape's 800 / 50.
        assert!((get(Precision::Bf16).unwrap() - 15.0).abs() < 1e-9);
        assert!((get(Precision::Tf32).unwrap() - 8.0).abs() < 1e-9);
        assert!((get(Precision::Fp8).unwrap() - 28.0).abs() < 1e-9);
        assert_eq!(get(Precision::Fp16), None);
        let json = crate::cli::bench::to_json(&b);
        assert_eq!(json["speedup_basis"], "delivered");
        let rows = json["results"].as_array().unwrap();
        assert!(rows
            .iter()
            .any(|r| r["role"] == "delivered" && r["shape"]["k"] == 2048));
        assert!(rows
            .iter()
            .any(|r| r["role"] == "ceiling" && r["shape"].is_null()));
        let table = crate::cli::bench::to_table(&b);
        assert!(
            table.contains("8192x8192x2048") && table.contains("(delivered"),
            "{table}"
        );
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
        // 1900 and 1700 MHz while busy, each once; the idle 300 MHz sample is left out of the
        // mean, but kept with the others for the rows.
        assert_eq!(c.sm_clock_hz, Some(1.8e9));
        assert_eq!(c.samples.len(), 3);
    }
}
