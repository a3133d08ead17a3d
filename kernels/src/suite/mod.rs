//! `gpucost bench`: what this GPU delivers per precision today, with our own kernels (method
//! `kernel`) and with cuBLAS/cuBLASLt (method `library`), plus memory bandwidth.
//!
//! Every measurement is verified before its time counts: the tensor kernels' output tile
//! against a CPU product of random inputs, the FMA loops against their closed form, the
//! library GEMMs at sampled outputs, the memory kernels by checksum. A kernel that fails its
//! check, or cannot load, is listed in [`BenchReport::skipped`] with the reason, and the next
//! candidate for that precision (if any) is tried. Times are CUDA-event times of launches
//! sized to a target duration, after a warm-up, the median of several repeats. Results are
//! checked on inputs drawn from exact grids; the timed launches then run on random data at
//! full precision (`check::Rng::timing_values`, seeded per kernel), since the grids' short
//! numbers draw less power than real data.
//!
//! Budget ([`Pace`]): 3 s per GPU when quick, 10 s normally, counted from opening the GPU
//! (module loading, i.e. NVRTC compiles or the driver's PTX JIT, included); a measurement that
//! no longer fits is skipped ("time budget spent"). Sustained, each row keeps launching for its
//! share of the duration, and reports its median, its spread, and the clock of its last third
//! (what it settled at). Order: our kernels, memory, then libraries.

mod compute;
mod libraries;
mod memory;

use std::time::{Duration, Instant};

use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

use crate::blas::{BlasGemm, Gemmer, LtGemm};
use crate::check::{self, timing_seed, Format, Rng};
use crate::clocks::{self as clock_stamps, LaunchClock};
use crate::flops::{self, MemTraffic, MmaShape};
use crate::gpu::{self, Gpu, Origin};
use crate::launch::{self, FmaKernel, Kernel, MmaBuffers, MmaKernel};
use crate::registry::shape;
use gpucost_hw::peaks::{self, Arch};

pub use gpucost_hw::peaks::Precision;

/// How a rate was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Our own kernel (`kernels/cuda`).
    Kernel,
    /// cuBLAS / cuBLASLt GEMM.
    Library,
}

impl Method {
    /// `"kernel"` or `"library"` (the metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Kernel => "kernel",
            Method::Library => "library",
        }
    }
}

/// A memory-bandwidth test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemOp {
    Read,
    Write,
    Copy,
    Triad,
}

impl MemOp {
    pub const ALL: [MemOp; 4] = [MemOp::Read, MemOp::Write, MemOp::Copy, MemOp::Triad];

    /// `"read"`, `"write"`, `"copy"` or `"triad"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemOp::Read => "read",
            MemOp::Write => "write",
            MemOp::Copy => "copy",
            MemOp::Triad => "triad",
        }
    }

    fn traffic(self) -> MemTraffic {
        match self {
            MemOp::Read => MemTraffic::Read,
            MemOp::Write => MemTraffic::Write,
            MemOp::Copy => MemTraffic::Copy,
            MemOp::Triad => MemTraffic::Triad,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// CUDA device ordinal.
    pub device: usize,
    pub pace: Pace,
}

/// How long to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// About 3 s per GPU (the agent's periodic benchmark).
    Quick,
    /// About 10 s per GPU.
    Normal,
    /// About this long per GPU, each row holding its load long enough for the clock and power
    /// to settle.
    Sustained(Duration),
}

/// Rows a sustained run shares its duration among: our kernels (with fallbacks), the memory
/// tests, the library GEMMs and the packed-half notes, about 24.
const SUSTAINED_ROWS: f64 = 24.0;

#[derive(Debug, Clone)]
pub struct KernelResult {
    pub precision: Precision,
    pub method: Method,
    /// Achieved rate, FLOP/s (OP/s for INT8).
    pub flops_per_s: f64,
    /// Median seconds of one timed launch (kernel) or call (library).
    pub median_s: f64,
    /// Timed repeats the median is over.
    pub repeats: u32,
    /// The SM clock our kernel's timed launches ran at, measured by its own blocks (the median
    /// launch; see [`crate::clocks`]). `None` for library rows, whose kernels are not ours, and
    /// where the stamps gave no clock ([`KernelResult::clock_note`] says why).
    pub sm_clock: Option<LaunchClock>,
    pub clock_note: Option<String>,
    /// When this row's measuring ran (its warm-up and timed launches): what NVML saw of the GPU
    /// then (power, throttle reasons) belongs to this row.
    pub window: (Instant, Instant),
    /// The spread of the timed launches' rates, FLOP/s.
    pub spread: Option<flops::Spread>,
    /// What the row settled at: the last third of its timed launches (their median clock from
    /// our kernel's stamps, and when they ran).
    pub settled_clock: Option<LaunchClock>,
    pub settled_window: (Instant, Instant),
    /// A library row's GEMM shape: what a training job's products are delivered at, where our
    /// kernels' rows are the ceiling.
    pub shape: Option<flops::GemmShape>,
}

#[derive(Debug, Clone)]
pub struct MemoryResult {
    pub op: MemOp,
    /// Bytes moved to and from device memory per second (copy counts read + write).
    pub bytes_per_s: f64,
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub device: usize,
    pub name: String,
    pub compute_capability: (u32, u32),
    pub sm_count: u32,
    pub results: Vec<KernelResult>,
    pub memory: Vec<MemoryResult>,
    /// What was not measured, and why: e.g. ("fp8 kernel", "needs sm_89").
    pub skipped: Vec<(String, String)>,
    /// Wall time of the whole run, seconds.
    pub elapsed_s: f64,
    /// The pace it ran at.
    pub pace: Pace,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("no usable CUDA driver: {0}")]
    NoDriver(String),
    #[error("no GPU {device}: this node has {count}")]
    NoDevice { device: usize, count: usize },
    /// The GPU asked for (by UUID) is no CUDA device this process sees.
    #[error("{0}")]
    NoMatch(crate::devices::NoMatch),
    #[error("CUDA error: {0}")]
    Cuda(String),
    #[error("verification failed: {0}")]
    Verification(String),
}

/// The number of CUDA devices. `Err(NoDriver)` when libcuda cannot be loaded or initialized;
/// the message says which names were tried.
pub fn device_count() -> Result<usize, BenchError> {
    if !gpu::driver_present() {
        return Err(BenchError::NoDriver(format!(
            "libcuda could not be loaded (tried {}); is the NVIDIA driver installed?",
            gpu::candidates("cuda").join(", ")
        )));
    }
    let count = std::panic::catch_unwind(cudarc::driver::CudaContext::device_count)
        .map_err(|_| BenchError::NoDriver("libcuda is present but unusable".into()))?;
    match count {
        Ok(n) => Ok(n.max(0) as usize),
        Err(e) if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE => Ok(0),
        Err(e) => Err(BenchError::NoDriver(format!(
            "libcuda is present but cuInit failed: {e}"
        ))),
    }
}

/// The CUDA ordinal of the GPU NVML names `wanted` (see [`crate::devices`]).
pub fn ordinal_of(wanted: &crate::devices::Wanted<'_>) -> Result<usize, BenchError> {
    let count = device_count()?;
    crate::devices::find_ordinal(wanted, &crate::devices::cuda_devices(count))
        .map_err(BenchError::NoMatch)
}

/// Benchmarks one GPU.
pub fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    run_with_notes(opts).map(|(report, _)| report)
}

/// [`run`], plus notes for people checking the kernels: where each module came from (NVRTC or
/// shipped PTX, and why NVRTC was not used) and the packed-half SIMT rates, which have no
/// [`Precision`] of their own (`Precision::Fp16`/`Bf16` name the tensor-core paths).
pub fn run_with_notes(opts: &BenchOptions) -> Result<(BenchReport, Vec<String>), BenchError> {
    let started = Instant::now();
    let count = device_count()?;
    if opts.device >= count {
        return Err(BenchError::NoDevice {
            device: opts.device,
            count,
        });
    }
    // The budget covers everything from here: opening the GPU, loading the modules (NVRTC
    // compiles, driver JIT) and measuring.
    let plan = Plan::new(opts.pace);
    let gpu = Gpu::open(opts.device)
        .map_err(|e| BenchError::Cuda(format!("opening GPU {}: {e}", opts.device)))?;
    // Load every module that can run here up front, so that no measurement's warm-up is
    // spent compiling. Failures are reported where a module is used.
    for id in crate::registry::ModuleId::ALL {
        if id.module().availability(gpu.cc).is_ok() {
            let _ = gpu.module(id);
        }
    }
    let mut b = Bench {
        gpu: &gpu,
        plan,
        results: Vec::new(),
        memory: Vec::new(),
        skipped: Vec::new(),
        notes: Vec::new(),
    };
    b.kernels();
    b.memory();
    b.libraries();
    if opts.pace != Pace::Quick {
        b.packed_half();
    }
    b.notes.extend(gpu::libraries().problems.iter().cloned());
    for (module, origin) in gpu.origins() {
        b.notes.push(match origin {
            Origin::Nvrtc(ma, mi) => format!("module {module}: compiled by NVRTC {ma}.{mi}"),
            Origin::Shipped(t, None) => format!("module {module}: shipped {t} PTX"),
            Origin::Shipped(t, Some(why)) => {
                format!("module {module}: shipped {t} PTX (NVRTC not used: {why})")
            }
        });
    }
    let mut results = b.results;
    results.sort_by_key(|r| (r.precision, r.method as u8));
    let report = BenchReport {
        device: opts.device,
        name: gpu.name.clone(),
        compute_capability: gpu.cc,
        sm_count: gpu.sm_count,
        results,
        memory: b.memory,
        skipped: b.skipped,
        elapsed_s: started.elapsed().as_secs_f64(),
        pace: opts.pace,
    };
    Ok((report, b.notes))
}

/// How long to measure.
struct Plan {
    deadline: Instant,
    /// Seconds from the start of the run to the deadline.
    #[cfg_attr(not(test), allow(dead_code))]
    budget_s: f64,
    /// Target duration of one timed launch or batch, seconds.
    launch_s: f64,
    /// Warm-up before each measurement, seconds; the first one gets `first_warmup_s`, long
    /// enough for the clocks to ramp up from idle.
    warmup_s: f64,
    first_warmup_s: f64,
    warmed: std::cell::Cell<bool>,
    /// Timed launches per measurement, at least.
    repeats: u32,
    /// Sustained: each measurement's timed launches go on for this long, seconds.
    hold_s: f64,
    pace: Pace,
}

impl Plan {
    fn new(pace: Pace) -> Plan {
        let (budget_s, launch_s, warmup_s, first_warmup_s, repeats, hold_s) = match pace {
            Pace::Quick => (3.0, 0.006, 0.015, 0.15, 5, 0.0),
            Pace::Normal => (10.0, 0.025, 0.08, 0.4, 7, 0.0),
            Pace::Sustained(d) => {
                // Each row's share of the duration; the budget adds the time the GPU takes to
                // open, load its modules and check every kernel.
                let d = d.as_secs_f64();
                let hold = d / SUSTAINED_ROWS;
                (d * 1.1 + 10.0, 0.025, hold / 5.0, 2.0, 7, hold)
            }
        };
        Plan {
            deadline: Instant::now() + Duration::from_secs_f64(budget_s),
            budget_s,
            launch_s,
            warmup_s,
            first_warmup_s,
            warmed: std::cell::Cell::new(false),
            repeats,
            hold_s,
            pace,
        }
    }

    /// The agent's short periodic run.
    fn quick(&self) -> bool {
        self.pace == Pace::Quick
    }

    /// Seconds one more measurement needs.
    fn need_s(&self) -> f64 {
        self.warmup_s + (f64::from(self.repeats + 2) * self.launch_s).max(self.hold_s)
    }

    /// Whether one more measurement fits.
    fn fits(&self) -> bool {
        Instant::now() + Duration::from_secs_f64(self.need_s()) <= self.deadline
    }

    /// Whether the timed launches of a measurement are done: `n` of them taken, `held_s`
    /// seconds since they began.
    fn done(&self, n: u32, held_s: f64) -> bool {
        n >= self.repeats && held_s >= self.hold_s
    }

    /// The warm-up for the next measurement.
    fn warmup(&self) -> Duration {
        let first = !self.warmed.replace(true);
        Duration::from_secs_f64(if first {
            self.first_warmup_s
        } else {
            self.warmup_s
        })
    }
}

/// Why a measurement did not happen: (what, why).
type Skip = (String, String);

/// What [`Bench::measure_clocked`] found.
struct Measured {
    /// Median seconds of one timed launch of `units`.
    median_s: f64,
    units: u64,
    /// Seconds of each timed launch.
    times: Vec<f64>,
    sm_clock: Option<LaunchClock>,
    clock_note: Option<String>,
    window: (Instant, Instant),
    settled_clock: Option<LaunchClock>,
    settled_window: (Instant, Instant),
}

impl Measured {
    /// The spread of the launches' rates, each doing `work` FLOP.
    fn spread(&self, work: f64) -> Option<flops::Spread> {
        let rates: Vec<f64> = self.times.iter().map(|&t| flops::rate(work, t)).collect();
        flops::spread(&rates)
    }

    /// The row of a precision measured this way, at `rate` with `work` FLOP per launch.
    fn result(self, precision: Precision, method: Method, rate: f64, work: f64) -> KernelResult {
        KernelResult {
            precision,
            method,
            flops_per_s: rate,
            median_s: self.median_s,
            repeats: self.times.len() as u32,
            spread: self.spread(work),
            sm_clock: self.sm_clock,
            clock_note: self.clock_note,
            window: self.window,
            settled_clock: self.settled_clock,
            settled_window: self.settled_window,
            shape: None,
        }
    }
}

struct Bench<'g> {
    gpu: &'g Gpu,
    plan: Plan,
    results: Vec<KernelResult>,
    memory: Vec<MemoryResult>,
    skipped: Vec<Skip>,
    notes: Vec<String>,
}

fn cuda<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

impl Bench<'_> {
    fn skip(&mut self, what: impl Into<String>, why: impl Into<String>) {
        self.skipped.push((what.into(), why.into()));
    }

    fn arch(&self) -> Option<Arch> {
        Arch::from_compute_capability(self.gpu.cc)
    }

    /// Times `enqueue(units)` (which queues work of `units` iterations or calls): first sizes
    /// `units` so that it takes about the plan's launch time, warms up, then returns the median
    /// of the timed repeats and the `units` used.
    fn measure(
        &self,
        probe: u64,
        max: u64,
        enqueue: impl FnMut(u64) -> Result<(), String>,
    ) -> Result<(f64, u64), String> {
        self.measure_clocked(probe, max, enqueue, || Err(String::new()))
            .map(|m| (m.median_s, m.units))
    }

    /// [`Bench::measure`] for our kernels: after each timed launch (outside its timing),
    /// `read_clock` reads the clock the launch's blocks stamped.
    fn measure_clocked(
        &self,
        probe: u64,
        max: u64,
        mut enqueue: impl FnMut(u64) -> Result<(), String>,
        mut read_clock: impl FnMut() -> Result<LaunchClock, String>,
    ) -> Result<Measured, String> {
        let ctx = &self.gpu.ctx;
        let stream = &self.gpu.stream;
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = ctx.new_event(timing).map_err(cuda("event"))?;
        let end = ctx.new_event(timing).map_err(cuda("event"))?;
        let mut timed = |units: u64| -> Result<f64, String> {
            start.record(stream).map_err(cuda("event record"))?;
            enqueue(units)?;
            end.record(stream).map_err(cuda("event record"))?;
            let ms = start.elapsed_ms(&end).map_err(cuda("event time"))?;
            Ok(f64::from(ms) / 1e3)
        };
        timed(probe)?;
        let t = timed(probe)?;
        let units = flops::scale_to(probe, t, self.plan.launch_s, max);
        let began = Instant::now();
        let warm_until = began + self.plan.warmup();
        while Instant::now() < warm_until {
            timed(units)?;
        }
        // Each timed launch: (when it was queued, seconds, its clock).
        let mut launches: Vec<(Instant, f64, Option<LaunchClock>)> = Vec::new();
        let mut clock_note = None;
        let timed_from = Instant::now();
        while !self
            .plan
            .done(launches.len() as u32, timed_from.elapsed().as_secs_f64())
        {
            let at = Instant::now();
            let t = timed(units)?;
            let clock = match read_clock() {
                Ok(c) => Some(c),
                Err(why) => {
                    clock_note = Some(why);
                    None
                }
            };
            launches.push((at, t, clock));
        }
        let ended = Instant::now();
        let times: Vec<f64> = launches.iter().map(|l| l.1).collect();
        let median = flops::median(&times).ok_or("no valid timings")?;
        let clocks: Vec<LaunchClock> = launches.iter().filter_map(|l| l.2).collect();
        let sm_clock = clock_stamps::median_launch(&clocks);
        // The last third of the launches: what the row settled at.
        let last = &launches[launches.len() - launches.len().div_ceil(3)..];
        let settled: Vec<LaunchClock> = last.iter().filter_map(|l| l.2).collect();
        Ok(Measured {
            median_s: median,
            units,
            times,
            sm_clock,
            clock_note: clock_note.filter(|_| sm_clock.is_none()),
            window: (began, ended),
            settled_clock: clock_stamps::median_launch(&settled),
            settled_window: (last[0].0, ended),
        })
    }
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// Packs values in `format` into little-endian 32-bit words.
fn words(format: Format, values: &[f32]) -> Vec<u32> {
    format
        .pack(values)
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect()
}

/// Queues one timed unit of work (the argument: loop iterations or calls).
type Enqueue<'a> = Box<dyn FnMut(i32) -> Result<(), String> + 'a>;

fn alloc<T: DeviceRepr + ValidAsZeroBits>(gpu: &Gpu, len: usize) -> Result<CudaSlice<T>, String> {
    gpu.stream.alloc_zeros::<T>(len).map_err(cuda("alloc"))
}

fn upload<T: DeviceRepr>(gpu: &Gpu, v: &[T]) -> Result<CudaSlice<T>, String> {
    gpu.stream.clone_htod(v).map_err(cuda("upload"))
}

fn download<T: DeviceRepr + Copy>(
    gpu: &Gpu,
    d: &CudaSlice<T>,
    f: impl Fn(T) -> f64,
) -> Result<Vec<f64>, String> {
    Ok(gpu
        .stream
        .clone_dtoh(d)
        .map_err(cuda("copy"))?
        .into_iter()
        .map(f)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In CI there is no libcuda: both entry points return `NoDriver`, naming what they tried,
    /// and nothing panics. (On a machine with a driver, `device_count` answers instead.)
    #[test]
    fn no_driver_is_an_error_not_a_panic() {
        if gpu::driver_present() {
            assert!(device_count().is_ok());
            return;
        }
        match device_count() {
            Err(BenchError::NoDriver(msg)) => {
                assert!(msg.contains("libcuda.so"), "{msg}");
                assert!(BenchError::NoDriver(msg)
                    .to_string()
                    .starts_with("no usable CUDA driver"));
            }
            other => panic!("want NoDriver, got {other:?}"),
        }
        let r = run(&BenchOptions {
            device: 0,
            pace: Pace::Quick,
        });
        assert!(matches!(r, Err(BenchError::NoDriver(_))), "{r:?}");
    }

    #[test]
    fn names() {
        assert_eq!(Method::Kernel.as_str(), "kernel");
        assert_eq!(Method::Library.as_str(), "library");
        let names: Vec<&str> = MemOp::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(names, ["read", "write", "copy", "triad"]);
        let e = BenchError::NoDevice {
            device: 3,
            count: 2,
        };
        assert_eq!(e.to_string(), "no GPU 3: this node has 2");
    }

    #[test]
    fn words_pack_little_endian() {
        assert_eq!(words(Format::Bf16, &[1.0, -2.0]), vec![0xC000_3F80]);
        assert_eq!(words(Format::S8, &[1.0, 2.0, 3.0, -1.0]), vec![0xFF03_0201]);
        assert_eq!(words(Format::E4m3, &[1.0]), vec![0x38]);
    }

    #[test]
    fn plans_fit_their_budgets() {
        for pace in [Pace::Quick, Pace::Normal] {
            let p = Plan::new(pace);
            // Roughly 20 measurements must fit the budget.
            let per = p.need_s();
            assert!(
                p.first_warmup_s + 20.0 * per < 0.7 * p.budget_s,
                "{pace:?}: {per} s each"
            );
            assert!(p.fits());
            // A measurement is its repeats, however short.
            assert!(!p.done(p.repeats - 1, 100.0) && p.done(p.repeats, 0.0));
        }
    }

    /// Issue 18, item 4: a sustained run shares its duration among its rows, each holding its
    /// load for its share (not just a few launches), and all of them fit.
    #[test]
    fn issue_18_sustained_plans_hold_each_row() {
        let p = Plan::new(Pace::Sustained(Duration::from_secs(60)));
        assert!((p.hold_s - 2.5).abs() < 1e-9, "{}", p.hold_s);
        assert!(!p.done(1000, 2.0), "2 s of a 2.5 s hold");
        assert!(!p.done(3, 10.0), "too few launches");
        assert!(p.done(7, 2.5));
        // Every row's share, with its warm-up, fits the budget with the first warm-up.
        assert!(p.first_warmup_s + SUSTAINED_ROWS * p.need_s() <= p.budget_s);
        // And the budget is about the duration asked for, not ten times it.
        assert!(p.budget_s < 60.0 * 1.5 + 10.0);
        let short = Plan::new(Pace::Sustained(Duration::from_secs(12)));
        assert!(short.hold_s < p.hold_s && short.fits());
    }

    /// The whole benchmark on a real GPU: every kernel that can run here must pass its check.
    /// Needs a GPU, so it is ignored in CI and runs in the device check
    /// (`cargo test -p gpucost-kernels --release -- --ignored --nocapture`, or the compiled test
    /// binary with `--ignored`).
    #[test]
    #[ignore = "needs a GPU: runs in the device check, not in CI"]
    fn bench_on_a_real_gpu() {
        let (report, notes) = run_with_notes(&BenchOptions {
            device: 0,
            pace: Pace::Normal,
        })
        .expect("bench");
        println!(
            "{} (sm_{}{}, {} SMs) in {:.1} s",
            report.name,
            report.compute_capability.0,
            report.compute_capability.1,
            report.sm_count,
            report.elapsed_s
        );
        let spec = peaks::lookup(&report.name);
        for r in &report.results {
            let peak = spec.and_then(|s| s.peak(r.precision));
            let pct = peak.map_or(String::new(), |pk| {
                format!("{:5.1}% of datasheet", 100.0 * r.flops_per_s / pk)
            });
            let clock = r.sm_clock.map_or_else(
                || r.clock_note.clone().unwrap_or_default(),
                |c| {
                    format!(
                        " at {:.0} MHz (blocks {:.0}-{:.0})",
                        c.hz / 1e6,
                        c.min_hz / 1e6,
                        c.max_hz / 1e6
                    )
                },
            );
            println!(
                "{:<12} {:<8} {:9.1} TFLOP/s {pct}{clock}",
                r.precision.as_str(),
                r.method.as_str(),
                r.flops_per_s / 1e12
            );
        }
        for m in &report.memory {
            println!(
                "{:<12} memory   {:9.3} TB/s",
                m.op.as_str(),
                m.bytes_per_s / 1e12
            );
        }
        for (what, why) in &report.skipped {
            println!("skipped {what}: {why}");
        }
        for n in &notes {
            println!("note: {n}");
        }
        let failed: Vec<_> = report
            .skipped
            .iter()
            .filter(|(_, why)| why.contains("verification"))
            .collect();
        assert!(failed.is_empty(), "{failed:?}");
        // Every row of our kernels has the clock its own blocks measured.
        for r in report.results.iter().filter(|r| r.method == Method::Kernel) {
            assert!(
                r.sm_clock.is_some(),
                "{} kernel: {:?}",
                r.precision,
                r.clock_note
            );
        }
        assert!(report
            .results
            .iter()
            .any(|r| r.precision == Precision::Fp32));
        assert!(report
            .results
            .iter()
            .any(|r| r.precision == Precision::Bf16 && r.method == Method::Kernel));
        assert_eq!(report.memory.len(), 4);
    }
}
