//! The vendor libraries' GEMMs (cuBLAS, cuBLASLt) per precision: what a training job's
//! matrix products get, verified at sampled outputs.

use super::*;
use crate::flops::GemmShape;

impl Bench<'_> {
    /// The rate a GEMM of `p` should roughly reach, for sizing it.
    pub(super) fn expected_rate(&self, p: Precision) -> f64 {
        let clock_mhz = self
            .gpu
            .ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)
            .map_or(1500, |khz| (khz / 1000) as u32);
        peaks::lookup(&self.gpu.name)
            .and_then(|s| s.peak(p))
            .or_else(|| {
                let g = &self.gpu;
                peaks::estimate_peak(&g.name, g.cc, g.sm_count, clock_mhz, p)
            })
            .unwrap_or(50e12)
    }

    pub(super) fn libraries(&mut self) {
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
            if let Some(why) = library_unavailable(p, cc) {
                self.skip(what, why);
                continue;
            }
            // The delivered rates: 8192^3, and a training job's shape, where one call fits.
            let target_s = self.plan.launch_s / 2.0;
            let shapes =
                flops::library_shapes(self.expected_rate(p), target_s, self.plan.quick(), lt);
            for shape in shapes {
                let what = format!("{label} library {}", shape.label());
                if !self.plan.fits() {
                    self.skip(what, "time budget spent");
                    continue;
                }
                match self.library(p, lt, shape) {
                    Ok((flops_per_s, work, m)) => {
                        // Seconds per call, not per batch of calls.
                        let per_call = m.median_s / m.units as f64;
                        let mut r = m.result(label, Method::Library, flops_per_s, work);
                        r.median_s = per_call;
                        r.shape = Some(shape);
                        self.results.push(r)
                    }
                    Err(why) => self.skip(what, why),
                }
            }
        }
    }

    /// Verifies then times one library GEMM of `shape`: (FLOP/s, FLOP per timed batch of calls,
    /// the measurement).
    fn library(
        &self,
        p: Precision,
        lt: bool,
        shape: GemmShape,
    ) -> Result<(f64, f64, Measured), String> {
        let gpu = self.gpu;
        let (free, _) = gpu.ctx.mem_get_info().map_err(cuda("memory info"))?;
        let need = shape.bytes(8, 8);
        if need > free as u64 / 2 {
            return Err(format!(
                "{} MiB of GPU memory free; {} needs up to {} MiB",
                free >> 20,
                shape.label(),
                need >> 20
            ));
        }
        // cudarc panics where a library lacks a symbol its 12.2 bindings expect.
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            || -> Result<Box<dyn Gemmer>, String> {
                Ok(if lt {
                    Box::new(LtGemm::new(gpu, p, shape)?)
                } else {
                    Box::new(BlasGemm::new(gpu, p, shape.n)?)
                })
            },
        ))
        .map_err(|_| {
            "the library panicked (an older version than cudarc's CUDA 12.2 bindings?)".to_string()
        })?;
        let mut g = made?;
        g.call()?;
        g.verify(gpu)?;
        // Checked on the grid's values; timed on random ones.
        g.randomize(gpu, timing_seed(&format!("{p} library {}", shape.label())))?;
        // The library's kernels stamp no clock: NVML's readings in the window stand in.
        let m = self.measure_clocked(
            1,
            10_000,
            |calls| (0..calls).try_for_each(|_| g.call()),
            || Err(String::new()),
        )?;
        let work = g.shape().flops() * m.units as f64;
        Ok((flops::rate(work, m.median_s), work, m))
    }
}

/// Why a library row of `p` means nothing on a GPU of compute capability `cc`: below sm_80
/// (V100, T4) cuBLAS runs a TF32 request as plain FP32 and has no BF16 tensor path, so such a
/// row would report FP32 work under another name.
fn library_unavailable(p: Precision, cc: (u32, u32)) -> Option<&'static str> {
    match p {
        Precision::Fp8 if cc < (8, 9) => Some("needs sm_89"),
        Precision::Tf32 | Precision::Bf16 if cc < (8, 0) => {
            Some("needs sm_80 (below it the library runs plain FP32)")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_rows_below_their_architecture_are_skipped() {
        // V100 and T4: no TF32 or BF16 tensor path.
        for cc in [(7, 0), (7, 5)] {
            assert!(library_unavailable(Precision::Tf32, cc).is_some());
            assert!(library_unavailable(Precision::Bf16, cc).is_some());
            assert!(library_unavailable(Precision::Fp8, cc).is_some());
            assert_eq!(library_unavailable(Precision::Fp16, cc), None);
            assert_eq!(library_unavailable(Precision::Fp32, cc), None);
        }
        assert_eq!(library_unavailable(Precision::Tf32, (8, 0)), None);
        assert!(library_unavailable(Precision::Fp8, (8, 6)).is_some());
        assert_eq!(library_unavailable(Precision::Fp8, (9, 0)), None);
    }
}
