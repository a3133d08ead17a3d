//! `gpucost bench`: what this GPU delivers per precision today, with our own kernels (method
//! `kernel`) and with cuBLAS/cuBLASLt (method `library`), plus memory bandwidth.
//!
//! Every measurement is verified before its time counts: the tensor kernels' output tile
//! against a CPU product of random inputs, the FMA loops against their closed form, the
//! library GEMMs at sampled outputs, the memory kernels by checksum. A kernel that fails its
//! check, or cannot load, is listed in [`BenchReport::skipped`] with the reason, and the next
//! candidate for that precision (if any) is tried. Times are CUDA-event times of launches
//! sized to a target duration, after a warm-up, the median of several repeats.
//!
//! Budget: 3 s per GPU with `quick`, 10 s otherwise, counted from opening the GPU (module
//! loading, i.e. NVRTC compiles or the driver's PTX JIT, included); a measurement that no
//! longer fits is skipped ("time budget spent"). Order: our kernels, memory, then libraries.

use std::time::{Duration, Instant};

use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

use crate::blas::{BlasGemm, Gemmer, LtGemm};
use crate::check::{self, Format, Rng};
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
    /// About 3 s of measuring per GPU instead of about 10 s.
    pub quick: bool,
}

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
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("no usable CUDA driver: {0}")]
    NoDriver(String),
    #[error("no GPU {device}: this node has {count}")]
    NoDevice { device: usize, count: usize },
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
    let plan = Plan::new(opts.quick);
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
    if !opts.quick {
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
    repeats: u32,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        let (budget_s, launch_s, warmup_s, first_warmup_s, repeats) = if quick {
            (3.0, 0.006, 0.015, 0.15, 5)
        } else {
            (10.0, 0.025, 0.08, 0.4, 7)
        };
        Plan {
            deadline: Instant::now() + Duration::from_secs_f64(budget_s),
            budget_s,
            launch_s,
            warmup_s,
            first_warmup_s,
            warmed: std::cell::Cell::new(false),
            repeats,
        }
    }

    /// Whether one more measurement fits.
    fn fits(&self) -> bool {
        let need = self.warmup_s + f64::from(self.repeats + 2) * self.launch_s;
        Instant::now() + Duration::from_secs_f64(need) <= self.deadline
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
        mut enqueue: impl FnMut(u64) -> Result<(), String>,
    ) -> Result<(f64, u64), String> {
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
        let warm_until = Instant::now() + self.plan.warmup();
        while Instant::now() < warm_until {
            timed(units)?;
        }
        let times = (0..self.plan.repeats)
            .map(|_| timed(units))
            .collect::<Result<Vec<_>, _>>()?;
        let median = flops::median(&times).ok_or("no valid timings")?;
        Ok((median, units))
    }

    // ---------------------------------------------------------------- kernels

    fn kernels(&mut self) {
        let cc = self.gpu.cc;
        let hopper = cc == (9, 0);
        let order = [
            Precision::Bf16,
            Precision::Fp8,
            Precision::Fp16,
            Precision::Tf32,
            Precision::Int8,
            Precision::Fp32,
            Precision::Fp64,
            Precision::Fp64Tensor,
        ];
        for p in order {
            let candidates: Vec<MmaKernel> = match p {
                Precision::Fp32 | Precision::Fp64 => {
                    self.fma_kernel(p);
                    continue;
                }
                Precision::Bf16 if hopper => vec![MmaKernel::WgBf16, MmaKernel::Bf16],
                Precision::Bf16 => vec![MmaKernel::Bf16],
                Precision::Fp16 if hopper => vec![MmaKernel::WgF16, MmaKernel::F16],
                Precision::Fp16 => vec![MmaKernel::F16],
                Precision::Fp8 if hopper => vec![MmaKernel::WgFp8],
                Precision::Fp8 => vec![MmaKernel::Fp8],
                Precision::Tf32 => vec![MmaKernel::Tf32],
                Precision::Int8 => vec![MmaKernel::S8],
                Precision::Fp64Tensor => {
                    if self
                        .arch()
                        .is_some_and(|a| a.flop_per_clock_per_sm(p).is_none())
                    {
                        self.skip("fp64_tensor kernel", "this GPU has no FP64 tensor cores");
                        continue;
                    }
                    vec![MmaKernel::F64]
                }
            };
            let what = format!("{p} kernel");
            for k in candidates {
                if let Err(why) = k.module().module().availability(cc) {
                    self.skip(what.clone(), why);
                    continue;
                }
                if !self.plan.fits() {
                    self.skip(what.clone(), "time budget spent");
                    break;
                }
                match self.mma_kernel(k, p) {
                    Ok(r) => {
                        self.results.push(r);
                        break;
                    }
                    Err(why) => self.skip(format!("{what} ({})", k.entry()), why),
                }
            }
        }
    }

    fn fma_kernel(&mut self, p: Precision) {
        let what = format!("{p} kernel");
        if let Err(why) = crate::registry::ModuleId::Fma
            .module()
            .availability(self.gpu.cc)
        {
            return self.skip(what, why);
        }
        if !self.plan.fits() {
            return self.skip(what, "time budget spent");
        }
        let kernel = if p == Precision::Fp64 {
            FmaKernel::F64
        } else {
            FmaKernel::F32
        };
        match self.fma(kernel) {
            Ok((flops_per_s, median_s)) => self.results.push(KernelResult {
                precision: p,
                method: Method::Kernel,
                flops_per_s,
                median_s,
                repeats: self.plan.repeats,
            }),
            Err(why) => self.skip(format!("{what} ({})", kernel.entry()), why),
        }
    }

    /// Verifies then times one FMA kernel; (FLOP/s, median seconds per launch).
    fn fma(&self, kernel: FmaKernel) -> Result<(f64, f64), String> {
        let gpu = self.gpu;
        let f = kernel.function(gpu)?;
        let grid = launch::full_grid(gpu, &f, shape::FMA_THREADS)?;
        let k = Kernel { gpu, f, grid };
        let threads = (grid * shape::FMA_THREADS) as usize;
        let lanes = kernel.lanes();
        // a = 1, b = 1: after n steps chain j holds j + n exactly (see fma.cu).
        let want = check::fma_thread_sum(shape::FMA_CHAINS, 1.0, 1.0, flops::fma_steps(1), lanes);
        let (got, mut launch): (Vec<f64>, Enqueue) = match kernel {
            FmaKernel::F64 => {
                let mut out = alloc::<f64>(gpu, threads)?;
                launch::fma_f64(&k, &mut out, 1.0, 1.0, 1)?;
                let got = download(gpu, &out, |v| v)?;
                (
                    got,
                    Box::new(move |it| launch::fma_f64(&k, &mut out, 1.0, 1.0, it)),
                )
            }
            FmaKernel::F32 => {
                let mut out = alloc::<f32>(gpu, threads)?;
                launch::fma_f32(&k, &mut out, 1.0, 1.0, 1)?;
                let got = download(gpu, &out, f64::from)?;
                (
                    got,
                    Box::new(move |it| launch::fma_f32(&k, &mut out, 1.0, 1.0, it)),
                )
            }
            FmaKernel::F16x2 | FmaKernel::Bf16x2 => {
                let one = if kernel == FmaKernel::F16x2 {
                    u32::from(check::f16_bits(1.0))
                } else {
                    u32::from(check::bf16_bits(1.0))
                };
                let one2 = one | (one << 16);
                let mut out = alloc::<f32>(gpu, threads)?;
                launch::fma_half2(&k, &mut out, one2, one2, 1)?;
                let got = download(gpu, &out, f64::from)?;
                (
                    got,
                    Box::new(move |it| launch::fma_half2(&k, &mut out, one2, one2, it)),
                )
            }
        };
        if let Some((i, g)) = got.iter().enumerate().find(|(_, &g)| g != want) {
            return Err(format!(
                "verification failed: {} thread {i} stored {g}, the closed form gives {want}",
                kernel.entry()
            ));
        }
        let (median, iters) = self.measure(64, 1 << 24, |iters| launch(iters as i32))?;
        let work = flops::fma_launch_flops(grid, iters as u32, lanes);
        Ok((flops::rate(work, median), median))
    }

    /// Verifies then times one MMA kernel.
    fn mma_kernel(&self, which: MmaKernel, p: Precision) -> Result<KernelResult, String> {
        let gpu = self.gpu;
        let f = which.function(gpu)?;
        let grid = launch::full_grid(gpu, &f, which.threads())?;
        let k = Kernel { gpu, f, grid };
        let threads = (grid * which.threads()) as usize;
        let (m, n, kk) = which.tile();
        let format = match which {
            MmaKernel::F16 | MmaKernel::WgF16 => Format::F16,
            MmaKernel::Bf16 | MmaKernel::WgBf16 => Format::Bf16,
            MmaKernel::Tf32 => Format::F32,
            MmaKernel::S8 => Format::S8,
            MmaKernel::F64 => Format::F64,
            MmaKernel::Fp8 | MmaKernel::WgFp8 => Format::E4m3,
        };
        let mut rng = Rng::new(0x6770_7563_6f73_7400 ^ which as u64);
        let a = rng.grid_values(format, m * kk);
        let bt = rng.grid_values(format, n * kk);
        let (accumulations, mma_shape) = if which.is_wgmma() {
            let s = if which == MmaKernel::WgFp8 {
                MmaShape::M64N256K32
            } else {
                MmaShape::M64N256K16
            };
            (flops::wgmma_accumulations(1), s)
        } else {
            let s = match which {
                MmaKernel::F16 | MmaKernel::Bf16 => MmaShape::M16N8K16,
                MmaKernel::Tf32 => MmaShape::M16N8K8,
                MmaKernel::F64 => MmaShape::M8N8K4,
                _ => MmaShape::M16N8K32,
            };
            (flops::mma_accumulations(1), s)
        };
        let want = check::matmul_reference(&a, &bt, m, n, kk, accumulations as f64);

        let mut launch: Enqueue;
        let (tile, sink): (Vec<f64>, Vec<f64>);
        match which {
            MmaKernel::F64 => {
                let mut b = MmaBuffers {
                    a: upload(gpu, &to_f64(&a))?,
                    bt: upload(gpu, &to_f64(&bt))?,
                    tile: alloc::<f64>(gpu, m * n)?,
                    sink: alloc::<f64>(gpu, threads)?,
                };
                launch::mma_f64(&k, &mut b, 1)?;
                tile = download(gpu, &b.tile, |v| v)?;
                sink = download(gpu, &b.sink, |v| v)?;
                launch = Box::new(move |it| launch::mma_f64(&k, &mut b, it));
            }
            MmaKernel::S8 => {
                let mut b = MmaBuffers {
                    a: upload(gpu, &words(format, &a))?,
                    bt: upload(gpu, &words(format, &bt))?,
                    tile: alloc::<i32>(gpu, m * n)?,
                    sink: alloc::<i32>(gpu, threads)?,
                };
                launch::mma_s8(&k, &mut b, 1)?;
                tile = download(gpu, &b.tile, f64::from)?;
                sink = download(gpu, &b.sink, f64::from)?;
                launch = Box::new(move |it| launch::mma_s8(&k, &mut b, it));
            }
            _ => {
                let mut b = MmaBuffers {
                    a: upload(gpu, &words(format, &a))?,
                    bt: upload(gpu, &words(format, &bt))?,
                    tile: alloc::<f32>(gpu, m * n)?,
                    sink: alloc::<f32>(gpu, threads)?,
                };
                launch::mma_f32acc(&k, which, &mut b, 1)?;
                tile = download(gpu, &b.tile, f64::from)?;
                sink = download(gpu, &b.sink, f64::from)?;
                launch = Box::new(move |it| launch::mma_f32acc(&k, which, &mut b, it));
            }
        }
        check::compare(which.entry(), &tile, &want, check::tolerance(p), n).map_err(|e| {
            format!("verification failed: {e} (against a CPU product of random inputs)")
        })?;
        // Every block computed the same: thread t of block b stored what thread t of block 0 did.
        let per_block = which.threads() as usize;
        if let Some(i) = (per_block..sink.len()).find(|&i| sink[i] != sink[i % per_block]) {
            return Err(format!(
                "verification failed: {} block {} thread {} disagrees with block 0 ({} vs {})",
                which.entry(),
                i / per_block,
                i % per_block,
                sink[i],
                sink[i % per_block]
            ));
        }
        let (median, iters) = self.measure(16, 1 << 24, |iters| launch(iters as i32))?;
        let work = if which.is_wgmma() {
            flops::wgmma_launch_flops(grid, iters as u32, mma_shape)
        } else {
            flops::mma_launch_flops(grid, iters as u32, mma_shape)
        };
        Ok(KernelResult {
            precision: p,
            method: Method::Kernel,
            flops_per_s: flops::rate(work, median),
            median_s: median,
            repeats: self.plan.repeats,
        })
    }

    /// The packed FP16x2 / BF16x2 FMA rates, as notes (they have no `Precision`).
    fn packed_half(&mut self) {
        for kernel in [FmaKernel::F16x2, FmaKernel::Bf16x2] {
            if !self.plan.fits() {
                break;
            }
            match self.fma(kernel) {
                Ok((rate, _)) => self.notes.push(format!(
                    "{} SIMT: {:.1} TFLOP/s",
                    kernel.entry(),
                    rate / 1e12
                )),
                Err(why) => self.notes.push(format!("{}: {why}", kernel.entry())),
            }
        }
    }

    // ---------------------------------------------------------------- libraries

    /// The rate a GEMM of `p` should roughly reach, for sizing it.
    fn expected_rate(&self, p: Precision) -> f64 {
        let clock_mhz = self
            .gpu
            .ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)
            .map_or(1500, |khz| (khz / 1000) as u32);
        peaks::lookup(&self.gpu.name)
            .and_then(|s| s.peak(p))
            .or_else(|| peaks::estimate_peak(self.gpu.cc, self.gpu.sm_count, clock_mhz, p))
            .unwrap_or(50e12)
    }

    fn libraries(&mut self) {
        let libs = gpu::libraries();
        let cc = self.gpu.cc;
        let has_fp64_tensor = self
            .arch()
            .is_some_and(|a| a.flop_per_clock_per_sm(Precision::Fp64Tensor).is_some());
        for p in [
            Precision::Bf16,
            Precision::Fp8,
            Precision::Fp16,
            Precision::Tf32,
            Precision::Fp32,
            Precision::Fp64,
        ] {
            let lt = !matches!(p, Precision::Fp32 | Precision::Fp64);
            // DGEMM runs on the FP64 tensor cores where there are some.
            let label = if p == Precision::Fp64 && has_fp64_tensor {
                Precision::Fp64Tensor
            } else {
                p
            };
            let what = format!("{label} library");
            if lt && !libs.cublaslt {
                self.skip(
                    what,
                    format!(
                        "libcublasLt not found (tried {})",
                        gpu::candidates("cublasLt").join(", ")
                    ),
                );
                continue;
            }
            if !lt && !libs.cublas {
                self.skip(
                    what,
                    format!(
                        "libcublas not found (tried {})",
                        gpu::candidates("cublas").join(", ")
                    ),
                );
                continue;
            }
            if p == Precision::Fp8 && cc < (8, 9) {
                self.skip(what, "needs sm_89");
                continue;
            }
            if !self.plan.fits() {
                self.skip(what, "time budget spent");
                continue;
            }
            match self.library(p, lt) {
                Ok((flops_per_s, median_s)) => self.results.push(KernelResult {
                    precision: label,
                    method: Method::Library,
                    flops_per_s,
                    median_s,
                    repeats: self.plan.repeats,
                }),
                Err(why) => self.skip(what, why),
            }
        }
    }

    fn library(&self, p: Precision, lt: bool) -> Result<(f64, f64), String> {
        let gpu = self.gpu;
        let mut n = flops::gemm_size(self.expected_rate(p), self.plan.launch_s / 2.0);
        let bytes = |n: u64| n * n * 3 * 8;
        let (free, _) = gpu.ctx.mem_get_info().map_err(cuda("memory info"))?;
        while n > 1024 && bytes(n) > free as u64 / 2 {
            n -= 1024;
        }
        // cudarc panics where a library lacks a symbol its 12.2 bindings expect.
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            || -> Result<Box<dyn Gemmer>, String> {
                Ok(if lt {
                    Box::new(LtGemm::new(gpu, p, n)?)
                } else {
                    Box::new(BlasGemm::new(gpu, p, n)?)
                })
            },
        ))
        .map_err(|_| {
            "the library panicked (an older version than cudarc's CUDA 12.2 bindings?)".to_string()
        })?;
        let mut g = made?;
        g.call()?;
        g.verify(gpu)?;
        let (median, calls) =
            self.measure(1, 10_000, |calls| (0..calls).try_for_each(|_| g.call()))?;
        let per_call = median / calls as f64;
        let nn = g.n();
        Ok((
            flops::rate(flops::gemm_flops(nn, nn, nn), per_call),
            per_call,
        ))
    }

    // ---------------------------------------------------------------- memory

    fn memory(&mut self) {
        match self.memory_all() {
            Ok(()) => {}
            Err(why) => {
                let measured: Vec<MemOp> = self.memory.iter().map(|r| r.op).collect();
                for op in MemOp::ALL.into_iter().filter(|op| !measured.contains(op)) {
                    self.skip(format!("{} memory", op.as_str()), why.clone());
                }
            }
        }
    }

    fn memory_all(&mut self) -> Result<(), String> {
        let gpu = self.gpu;
        // Arrays: up to 1 GiB each (many times any L2), three of them at most an eighth of
        // the free memory, a multiple of 16 MiB.
        let (free, _) = gpu.ctx.mem_get_info().map_err(cuda("memory info"))?;
        let words = ((free as u64 / 24).min(1 << 30) / 4) & !((4 << 20) - 1);
        if words < 1 << 20 {
            return Err(format!("only {} MiB of GPU memory free", free >> 20));
        }
        let n16 = words / 4;
        let kernel = |entry: &str| -> Result<Kernel<'_>, String> {
            let f = gpu.function(crate::registry::ModuleId::Memory, entry)?;
            let grid = launch::memory_grid(gpu, &f, n16)?;
            Ok(Kernel { gpu, f, grid })
        };
        let k = MemKernels {
            read: kernel("mem_read")?,
            write: kernel("mem_write")?,
            copy: kernel("mem_copy")?,
            triad: kernel("mem_triad")?,
        };
        let mut sink = alloc::<u32>(gpu, (k.read.grid * shape::MEM_THREADS / 32) as usize)?;

        // Verification on ~16 MiB arrays whose length is not a multiple of the grid's stride,
        // with the timing grid.
        self.verify_memory(&k, 4 * 1_048_573, &mut sink)?;

        let mut a = alloc::<u32>(gpu, words as usize)?;
        let mut b = alloc::<u32>(gpu, words as usize)?;
        let array_bytes = words * 4;
        for op in [MemOp::Copy, MemOp::Read, MemOp::Write, MemOp::Triad] {
            if !self.plan.fits() {
                self.skip(format!("{} memory", op.as_str()), "time budget spent");
                continue;
            }
            let measured = match op {
                MemOp::Read => self.measure(1, 1000, |n| {
                    (0..n).try_for_each(|_| launch::mem_read(&k.read, &a, &mut sink))
                }),
                MemOp::Write => self.measure(1, 1000, |n| {
                    (0..n).try_for_each(|_| launch::mem_write(&k.write, &mut a, 7))
                }),
                MemOp::Copy => self.measure(1, 1000, |n| {
                    (0..n).try_for_each(|_| launch::mem_copy(&k.copy, &mut b, &a))
                }),
                MemOp::Triad => {
                    let mut c = alloc::<u32>(gpu, words as usize)?;
                    self.measure(1, 1000, |n| {
                        (0..n).try_for_each(|_| launch::mem_triad(&k.triad, &mut c, &a, &b, 2.0))
                    })
                }
            };
            match measured {
                Ok((median, launches)) => self.memory.push(MemoryResult {
                    op,
                    bytes_per_s: flops::rate(
                        flops::memory_bytes(op.traffic(), array_bytes),
                        median / launches as f64,
                    ),
                }),
                Err(why) => self.skip(format!("{} memory", op.as_str()), why),
            }
        }
        Ok(())
    }

    /// Checks read, write, copy and triad on arrays of `words` words by checksum.
    fn verify_memory(
        &self,
        k: &MemKernels,
        words: usize,
        sink: &mut CudaSlice<u32>,
    ) -> Result<(), String> {
        let gpu = self.gpu;
        let (mut x, mut y, mut z) = (
            alloc::<u32>(gpu, words)?,
            alloc::<u32>(gpu, words)?,
            alloc::<u32>(gpu, words)?,
        );
        let n = words as u64;
        let checksum = |sink: &mut CudaSlice<u32>, src: &CudaSlice<u32>| -> Result<u32, String> {
            launch::mem_read(&k.read, src, sink)?;
            let parts = gpu.stream.clone_dtoh(&*sink).map_err(cuda("copy"))?;
            Ok(parts.iter().fold(0u32, |acc, &p| acc.wrapping_add(p)))
        };
        let fail = |what: &str, got: u32, want: u32| {
            Err(format!(
                "verification failed: {what} checksum {got:#010x}, want {want:#010x}"
            ))
        };
        // fill + read: random words.
        let table: Vec<u32> = (0..16u32)
            .map(|i| i.wrapping_mul(0x9E37_79B1) ^ 0xA5A5_0F0F)
            .collect();
        launch::fill(gpu, &mut x, 11, &upload(gpu, &table)?)?;
        let want = check::word_checksum(n, |i| table[check::fill_index(i, 11)]);
        let got = checksum(sink, &x)?;
        if got != want {
            return fail("mem_read of filled words", got, want);
        }
        // copy x -> y.
        launch::mem_copy(&k.copy, &mut y, &x)?;
        let got = checksum(sink, &y)?;
        if got != want {
            return fail("mem_copy", got, want);
        }
        // write.
        launch::mem_write(&k.write, &mut y, 0xDEAD_BEEF)?;
        let got = checksum(sink, &y)?;
        let want = check::word_checksum(n, |_| 0xDEAD_BEEF);
        if got != want {
            return fail("mem_write", got, want);
        }
        // triad: z = x + 2 y on grid floats (exact).
        let grid_bits: Vec<u32> = Format::F32.grid().iter().map(|v| v.to_bits()).collect();
        let grid_d = upload(gpu, &grid_bits)?;
        launch::fill(gpu, &mut x, 21, &grid_d)?;
        launch::fill(gpu, &mut y, 22, &grid_d)?;
        launch::mem_triad(&k.triad, &mut z, &x, &y, 2.0)?;
        let got = checksum(sink, &z)?;
        let g = Format::F32.grid();
        let want = check::word_checksum(n, |i| {
            (g[check::fill_index(i, 21)] + 2.0 * g[check::fill_index(i, 22)]).to_bits()
        });
        if got != want {
            return fail("mem_triad", got, want);
        }
        Ok(())
    }
}

/// The four memory kernels with their grids.
struct MemKernels<'g> {
    read: Kernel<'g>,
    write: Kernel<'g>,
    copy: Kernel<'g>,
    triad: Kernel<'g>,
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
            quick: true,
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
        for quick in [true, false] {
            let p = Plan::new(quick);
            // Roughly 20 measurements must fit the budget.
            let per = p.warmup_s + f64::from(p.repeats + 2) * p.launch_s;
            assert!(
                p.first_warmup_s + 20.0 * per < 0.7 * p.budget_s,
                "quick={quick}: {per} s each"
            );
            assert!(p.fits());
        }
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
            quick: false,
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
            println!(
                "{:<12} {:<8} {:9.1} TFLOP/s {pct}",
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
