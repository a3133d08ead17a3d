//! Our own kernels per precision: the FMA loops (CUDA cores), the `mma.sync` and `wgmma`
//! tensor kernels, and packed half-precision FMA, each verified before it is timed.

use super::*;

impl Bench<'_> {
    pub(super) fn kernels(&mut self) {
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
                Precision::Tf32 if hopper => vec![MmaKernel::WgTf32, MmaKernel::Tf32],
                Precision::Tf32 => vec![MmaKernel::Tf32],
                Precision::Int8 if hopper => vec![MmaKernel::WgS8, MmaKernel::S8],
                Precision::Int8 => vec![MmaKernel::S8],
                Precision::Fp64Tensor => {
                    // Only where the architecture is known to have them: elsewhere (sm_12x
                    // before it had an entry, or a future one) DMMA may run, emulated, at the
                    // FP64 rate and be reported as tensor work.
                    if self
                        .arch()
                        .is_none_or(|a| a.flop_per_clock_per_sm(p).is_none())
                    {
                        self.skip(
                            "fp64_tensor kernel",
                            "this GPU has no FP64 tensor cores (or its architecture is unknown)",
                        );
                        continue;
                    }
                    // Hopper's m16n8k16 first: eight times the work per instruction of the
                    // m8n8k4 the Ampere path uses.
                    if hopper {
                        vec![MmaKernel::F64K16, MmaKernel::F64]
                    } else {
                        vec![MmaKernel::F64]
                    }
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
        match self
            .fma(kernel)
            .and_then(|(rate, work, m)| self.plausible(p, rate).map(|()| (rate, work, m)))
        {
            Ok((flops_per_s, work, m)) => {
                self.results
                    .push(m.result(p, Method::Kernel, flops_per_s, work))
            }
            Err(why) => self.skip(format!("{what} ({})", kernel.entry()), why),
        }
    }

    /// Verifies then times one FMA kernel; (FLOP/s, FLOP per timed launch, the measurement).
    ///
    /// Checked with a = 1, b = 1 (exact small integers); timed with a = -1 and a random b, so
    /// each chain flips between j and b - j at every step, toggling sign and mantissa bits,
    /// bounded in every format (a = 1 would overflow FP16 in the long timed launches, and
    /// |a| < 1 would settle on a fixed point whose bits no longer change).
    fn fma(&self, kernel: FmaKernel) -> Result<(f64, f64, Measured), String> {
        let gpu = self.gpu;
        let f = kernel.function(gpu)?;
        let grid = launch::full_grid(gpu, &f, shape::FMA_THREADS)?;
        let k = Kernel { gpu, f, grid };
        let threads = (grid * shape::FMA_THREADS) as usize;
        let lanes = kernel.lanes();
        let stamps = Stamps::new(gpu, grid)?;
        let clocks = &stamps;
        // a = 1, b = 1: after n steps chain j holds j + n exactly (see fma.cu).
        let want = check::fma_thread_sum(shape::FMA_CHAINS, 1.0, 1.0, flops::fma_steps(1), lanes);
        let mut rng = Rng::new(timing_seed(kernel.entry()));
        let rb = rng.timing_values(Format::F32, 2);
        let (got, mut launch): (Vec<f64>, Enqueue) = match kernel {
            FmaKernel::F64 => {
                let rb64 = rng.timing_f64(1)[0];
                let mut out = alloc::<f64>(gpu, threads)?;
                launch::fma_f64(&k, &mut out, 1.0, 1.0, 1, &mut clocks.buf.borrow_mut())?;
                let got = download(gpu, &out, |v| v)?;
                (
                    got,
                    Box::new(move |it| {
                        let mut c = clocks.buf.borrow_mut();
                        launch::fma_f64(&k, &mut out, -1.0, rb64, it, &mut c)
                    }),
                )
            }
            FmaKernel::F32 => {
                let mut out = alloc::<f32>(gpu, threads)?;
                launch::fma_f32(&k, &mut out, 1.0, 1.0, 1, &mut clocks.buf.borrow_mut())?;
                let got = download(gpu, &out, f64::from)?;
                (
                    got,
                    Box::new(move |it| {
                        let mut c = clocks.buf.borrow_mut();
                        launch::fma_f32(&k, &mut out, -1.0, rb[0], it, &mut c)
                    }),
                )
            }
            FmaKernel::F16x2 | FmaKernel::Bf16x2 => {
                let one = if kernel == FmaKernel::F16x2 {
                    u32::from(check::f16_bits(1.0))
                } else {
                    u32::from(check::bf16_bits(1.0))
                };
                let one2 = one | (one << 16);
                let half = |v: f32| {
                    u32::from(if kernel == FmaKernel::F16x2 {
                        check::f16_bits(v)
                    } else {
                        check::bf16_bits(v)
                    })
                };
                let (minus2, b2) = (
                    half(-1.0) | (half(-1.0) << 16),
                    half(rb[0]) | (half(rb[1]) << 16),
                );
                let mut out = alloc::<f32>(gpu, threads)?;
                launch::fma_half2(&k, &mut out, one2, one2, 1, &mut clocks.buf.borrow_mut())?;
                let got = download(gpu, &out, f64::from)?;
                (
                    got,
                    Box::new(move |it| {
                        let mut c = clocks.buf.borrow_mut();
                        launch::fma_half2(&k, &mut out, minus2, b2, it, &mut c)
                    }),
                )
            }
        };
        if let Some((i, g)) = got.iter().enumerate().find(|(_, &g)| g != want) {
            return Err(format!(
                "verification failed: {} thread {i} stored {g}, the closed form gives {want}",
                kernel.entry()
            ));
        }
        let m =
            self.measure_clocked(64, 1 << 24, |iters| launch(iters as i32), || clocks.read())?;
        let work = flops::fma_launch_flops(grid, m.units as u32, lanes);
        Ok((flops::rate(work, m.median_s), work, m))
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
            MmaKernel::Tf32 | MmaKernel::WgTf32 => Format::F32,
            MmaKernel::S8 | MmaKernel::WgS8 => Format::S8,
            MmaKernel::F64 | MmaKernel::F64K16 => Format::F64,
            MmaKernel::Fp8 | MmaKernel::WgFp8 => Format::E4m3,
        };
        let mut rng = Rng::new(0x6770_7563_6f73_7400 ^ which as u64);
        let a = rng.grid_values(format, m * kk);
        let bt = rng.grid_values(format, n * kk);
        let (accumulations, mma_shape) = if which.is_wgmma() {
            let s = match which {
                MmaKernel::WgFp8 | MmaKernel::WgS8 => MmaShape::M64N256K32,
                MmaKernel::WgTf32 => MmaShape::M64N256K8,
                _ => MmaShape::M64N256K16,
            };
            (flops::wgmma_accumulations(1), s)
        } else {
            let s = match which {
                MmaKernel::F16 | MmaKernel::Bf16 | MmaKernel::F64K16 => MmaShape::M16N8K16,
                MmaKernel::Tf32 => MmaShape::M16N8K8,
                MmaKernel::F64 => MmaShape::M8N8K4,
                _ => MmaShape::M16N8K32,
            };
            (flops::mma_accumulations(1), s)
        };
        let want = check::matmul_reference(&a, &bt, m, n, kk, accumulations as f64);

        let stamps = Stamps::new(gpu, grid)?;
        let clocks = &stamps;
        // Checked on the grid's values; timed on random ones, once the check has been made.
        let mut timing = Rng::new(timing_seed(which.entry()));
        let mut launch: Enqueue;
        let (tile, sink): (Vec<f64>, Vec<f64>);
        match which {
            MmaKernel::F64 | MmaKernel::F64K16 => {
                let mut b = MmaBuffers {
                    a: upload(gpu, &to_f64(&a))?,
                    bt: upload(gpu, &to_f64(&bt))?,
                    tile: alloc::<f64>(gpu, m * n)?,
                    sink: alloc::<f64>(gpu, threads)?,
                };
                launch::mma_f64(&k, which, &mut b, 1, &mut clocks.buf.borrow_mut())?;
                tile = download(gpu, &b.tile, |v| v)?;
                sink = download(gpu, &b.sink, |v| v)?;
                b.a = upload(gpu, &timing.timing_f64(m * kk))?;
                b.bt = upload(gpu, &timing.timing_f64(n * kk))?;
                launch = Box::new(move |it| {
                    launch::mma_f64(&k, which, &mut b, it, &mut clocks.buf.borrow_mut())
                });
            }
            MmaKernel::S8 | MmaKernel::WgS8 => {
                let mut b = MmaBuffers {
                    a: upload(gpu, &words(format, &a))?,
                    bt: upload(gpu, &words(format, &bt))?,
                    tile: alloc::<i32>(gpu, m * n)?,
                    sink: alloc::<i32>(gpu, threads)?,
                };
                launch::mma_s8(&k, which, &mut b, 1, &mut clocks.buf.borrow_mut())?;
                tile = download(gpu, &b.tile, f64::from)?;
                sink = download(gpu, &b.sink, f64::from)?;
                b.a = upload(gpu, &words(format, &timing.timing_values(format, m * kk)))?;
                b.bt = upload(gpu, &words(format, &timing.timing_values(format, n * kk)))?;
                launch = Box::new(move |it| {
                    launch::mma_s8(&k, which, &mut b, it, &mut clocks.buf.borrow_mut())
                });
            }
            _ => {
                let mut b = MmaBuffers {
                    a: upload(gpu, &words(format, &a))?,
                    bt: upload(gpu, &words(format, &bt))?,
                    tile: alloc::<f32>(gpu, m * n)?,
                    sink: alloc::<f32>(gpu, threads)?,
                };
                launch::mma_f32acc(&k, which, &mut b, 1, &mut clocks.buf.borrow_mut())?;
                tile = download(gpu, &b.tile, f64::from)?;
                sink = download(gpu, &b.sink, f64::from)?;
                b.a = upload(gpu, &words(format, &timing.timing_values(format, m * kk)))?;
                b.bt = upload(gpu, &words(format, &timing.timing_values(format, n * kk)))?;
                launch = Box::new(move |it| {
                    launch::mma_f32acc(&k, which, &mut b, it, &mut clocks.buf.borrow_mut())
                });
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
        let m =
            self.measure_clocked(16, 1 << 24, |iters| launch(iters as i32), || clocks.read())?;
        let work = if which.is_wgmma() {
            flops::wgmma_launch_flops(grid, m.units as u32, mma_shape)
        } else {
            flops::mma_launch_flops(grid, m.units as u32, mma_shape)
        };
        let rate = flops::rate(work, m.median_s);
        self.plausible(p, rate)?;
        Ok(m.result(p, Method::Kernel, rate, work))
    }

    /// Refuses a rate above what the GPU's SMs can do on `p` at its highest clock.
    fn plausible(&self, p: Precision, rate: f64) -> Result<(), String> {
        let max_clock_khz = self
            .gpu
            .ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)
            .map_err(|e| format!("cannot read the GPU's clock to check the figure: {e}"))?;
        match flops::above_ceiling(
            self.arch(),
            p,
            self.gpu.sm_count,
            f64::from(max_clock_khz) * 1e3,
            rate,
        ) {
            Some(why) => Err(format!("verification failed: {why}")),
            None => Ok(()),
        }
    }

    /// The packed FP16x2 / BF16x2 FMA rates, as notes (they have no `Precision`).
    pub(super) fn packed_half(&mut self) {
        for kernel in [FmaKernel::F16x2, FmaKernel::Bf16x2] {
            if !self.plan.fits() {
                break;
            }
            match self.fma(kernel) {
                Ok((rate, _, m)) => self.notes.push(format!(
                    "{} SIMT: {:.1} TFLOP/s{}",
                    kernel.entry(),
                    rate / 1e12,
                    m.sm_clock
                        .map_or(String::new(), |c| format!(" at {:.0} MHz", c.hz / 1e6))
                )),
                Err(why) => self.notes.push(format!("{}: {why}", kernel.entry())),
            }
        }
    }
}

/// The clock stamps of a kernel's blocks: the buffer its launches write (shared by the
/// launching closure and the reader, one at a time) and the grid it is sized for.
struct Stamps<'g> {
    gpu: &'g Gpu,
    buf: std::cell::RefCell<CudaSlice<u64>>,
    grid: u32,
}

impl<'g> Stamps<'g> {
    fn new(gpu: &'g Gpu, grid: u32) -> Result<Stamps<'g>, String> {
        let len = grid as usize * clock_stamps::STAMPS_PER_BLOCK;
        Ok(Stamps {
            gpu,
            buf: std::cell::RefCell::new(alloc::<u64>(gpu, len)?),
            grid,
        })
    }

    /// The clock of the launch that wrote the stamps last (its stream synchronized first).
    fn read(&self) -> Result<LaunchClock, String> {
        let stamps = self
            .gpu
            .stream
            .clone_dtoh(&*self.buf.borrow())
            .map_err(cuda("copy clock stamps"))?;
        clock_stamps::launch_clock(&stamps, self.grid as usize)
    }
}
