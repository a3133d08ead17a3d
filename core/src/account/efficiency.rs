//! How well a GPU is used: FLOPs from pipe activity, MFU, and the FP32-on-tensor-cores signal.
//!
//! Pure. A pipe's FLOP rate is its activity (GPM, 0..1) times its peak rate; the peaks are the
//! node's measured ones (`gpucost bench`) where known, else the datasheet's (`gpucost-kernels`).
//! MFU is measured against the dense BF16 tensor peak: the precision large-model training runs
//! in and the figure its MFU is conventionally quoted against (PaLM's definition), so numbers are
//! comparable across jobs and with what training frameworks report.

use gpucost_hw::peaks::{lookup, Precision};

use gpucost_hw::Pipes;

/// FP32 pipe busier than this ...
const FP32_BUSY: f64 = 0.20;
/// ... while the tensor cores are idler than this: the job computes in FP32 on CUDA cores.
const TENSOR_IDLE: f64 = 0.05;

/// Peak rates (FLOP/s, OP/s for int8) of the pipes GPM reports on, for one GPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipePeaks {
    /// Dense BF16 tensor peak: the HMMA pipe's rate and MFU's denominator.
    pub bf16: f64,
    pub int8: f64,
    pub fp64_tensor: f64,
    pub fp32: f64,
    pub fp64: f64,
}

impl PipePeaks {
    /// Datasheet peaks of an NVML model name; `None` for GPUs the table does not know.
    pub fn datasheet(model: &str) -> Option<PipePeaks> {
        let spec = lookup(model)?;
        let p = |precision| spec.peak(precision).unwrap_or(0.0);
        let bf16 = p(Precision::Bf16);
        let fp32 = p(Precision::Fp32);
        if bf16 <= 0.0 || fp32 <= 0.0 {
            return None;
        }
        Some(PipePeaks {
            bf16,
            int8: p(Precision::Int8),
            fp64_tensor: p(Precision::Fp64Tensor),
            fp32,
            fp64: p(Precision::Fp64),
        })
    }

    /// These peaks with the node's own measurements where it has them (the best method of each
    /// precision): what this GPU delivers today, not what its datasheet promises.
    pub fn measured(mut self, measured: &[(Precision, f64)]) -> PipePeaks {
        for (p, v) in measured {
            if !(v.is_finite() && *v > 0.0) {
                continue;
            }
            match p {
                Precision::Bf16 => self.bf16 = *v,
                Precision::Int8 => self.int8 = *v,
                Precision::Fp64Tensor => self.fp64_tensor = *v,
                Precision::Fp32 => self.fp32 = *v,
                Precision::Fp64 => self.fp64 = *v,
                _ => {}
            }
        }
        self
    }

    /// How many times faster the tensor cores run BF16 than the CUDA cores run FP32.
    pub fn bf16_over_fp32(&self) -> f64 {
        self.bf16 / self.fp32
    }
}

/// FLOP/s a GPU achieved with this pipe activity; `None` when a pipe it depends on is unknown
/// (a failed GPM metric): an unknown pipe is not an idle one, and a rate that leaves it out
/// would be a made-up MFU. Tensor pipes count at their peak; the FP16 SIMT pipe at twice the
/// FP32 rate (packed half2 FMA).
pub fn flop_rate(p: &Pipes, peaks: &PipePeaks) -> Option<f64> {
    // HMMA is reported separately on Hopper; where the split shows nothing (FP8 shows only in
    // "any tensor") or is unknown, "any tensor" counts at the BF16 rate.
    let split = (|| Some(p.hmma_active? + p.imma_active? + p.dfma_tensor_active?))();
    let tensor = match (split, p.tensor_active) {
        (Some(s), _) if s > 0.0 => {
            p.hmma_active? * peaks.bf16
                + p.imma_active? * peaks.int8
                + p.dfma_tensor_active? * peaks.fp64_tensor
        }
        (_, Some(any)) => any * peaks.bf16,
        (_, None) => return None,
    };
    Some(
        tensor
            + p.fp16_active? * 2.0 * peaks.fp32
            + p.fp32_active? * peaks.fp32
            + p.fp64_active? * peaks.fp64,
    )
}

/// FP32 math on CUDA cores with the tensor cores idle: the work a mixed-precision run would do
/// `bf16_over_fp32` times faster. `None` (no verdict) when a pipe it needs is unknown: the FP32
/// pipe, and the tensor pipe when the FP32 pipe is busy (a quiet FP32 pipe is a verdict alone).
pub fn fp32_bound(p: &Pipes) -> Option<bool> {
    if p.fp32_active? < FP32_BUSY {
        return Some(false);
    }
    Some(p.tensor_active? < TENSOR_IDLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100() -> PipePeaks {
        PipePeaks::datasheet("NVIDIA H100 80GB HBM3").unwrap()
    }

    #[test]
    fn datasheet_peaks() {
        let p = h100();
        assert!((p.bf16 / 1e12 - 989.5).abs() < 1.0, "{}", p.bf16);
        assert!((p.fp32 / 1e12 - 67.0).abs() < 1.0, "{}", p.fp32);
        assert!((p.bf16_over_fp32() - 14.8).abs() < 0.1);
        assert!(PipePeaks::datasheet("Some Future GPU").is_none());
    }

    #[test]
    fn measured_peaks_replace_the_datasheet() {
        let p = h100().measured(&[
            (Precision::Bf16, 700e12),
            (Precision::Fp32, 60e12),
            (Precision::Tf32, 1.0),
        ]);
        assert_eq!((p.bf16, p.fp32), (700e12, 60e12));
        assert!((p.bf16_over_fp32() - 700.0 / 60.0).abs() < 1e-9);
        assert_eq!(p.int8, h100().int8);
    }

    #[test]
    fn flop_rates() {
        let p = h100();
        let cases = [
            (
                Pipes {
                    hmma_active: Some(0.5),
                    ..Pipes::IDLE
                },
                0.5 * p.bf16,
            ),
            (
                Pipes {
                    tensor_active: Some(0.5),
                    ..Pipes::IDLE
                },
                0.5 * p.bf16,
            ),
            (
                Pipes {
                    tensor_active: Some(0.5),
                    hmma_active: Some(0.4),
                    ..Pipes::IDLE
                },
                0.4 * p.bf16,
            ),
            (
                Pipes {
                    fp32_active: Some(0.6),
                    ..Pipes::IDLE
                },
                0.6 * p.fp32,
            ),
            (
                Pipes {
                    fp16_active: Some(0.5),
                    ..Pipes::IDLE
                },
                p.fp32,
            ),
            (
                Pipes {
                    fp64_active: Some(1.0),
                    dfma_tensor_active: Some(0.5),
                    ..Pipes::IDLE
                },
                p.fp64 + 0.5 * p.fp64_tensor,
            ),
            (Pipes::IDLE, 0.0),
        ];
        for (pipes, want) in cases {
            let got = flop_rate(&pipes, &p).expect("every pipe known");
            assert!((got - want).abs() < 1e3, "{pipes:?}");
        }
    }

    /// Issue 14, item 7: an unknown GPM value is not a zero. With the tensor metric failed and
    /// FP32 busy, the GPU looked FP32-bound and most of its cost was booked as `fp32` waste.
    #[test]
    fn issue_14_unknown_pipes_give_no_rate_and_no_verdict() {
        let k = h100();
        let fp32_busy = Pipes {
            fp32_active: Some(0.65),
            ..Pipes::IDLE
        };
        // (pipes, FLOP/s, FP32-bound)
        let cases = [
            (fp32_busy, Some(0.65 * k.fp32), Some(true)),
            (
                Pipes {
                    tensor_active: None,
                    ..fp32_busy
                },
                None,
                None,
            ),
            (
                Pipes {
                    fp32_active: None,
                    ..fp32_busy
                },
                None,
                None,
            ),
            // The split unknown, "any tensor" known: counted at the BF16 rate, as with no split.
            (
                Pipes {
                    hmma_active: None,
                    tensor_active: Some(0.5),
                    ..Pipes::IDLE
                },
                Some(0.5 * k.bf16),
                Some(false),
            ),
            // The split says BF16 work, "any tensor" unknown: the split is enough for the rate;
            // with FP32 quiet, "not FP32-bound" needs no tensor reading.
            (
                Pipes {
                    hmma_active: Some(0.4),
                    tensor_active: None,
                    ..Pipes::IDLE
                },
                Some(0.4 * k.bf16),
                Some(false),
            ),
            // The split says nothing and "any tensor" is unknown: FP8 work could hide there.
            (
                Pipes {
                    tensor_active: None,
                    ..Pipes::IDLE
                },
                None,
                Some(false),
            ),
            (Pipes::UNKNOWN, None, None),
            (Pipes::IDLE, Some(0.0), Some(false)),
        ];
        for (pipes, rate, bound) in cases {
            let got = flop_rate(&pipes, &k);
            match (got, rate) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e3, "{pipes:?}: {g} != {w}"),
                _ => assert_eq!(got, rate, "{pipes:?}"),
            }
            assert_eq!(fp32_bound(&pipes), bound, "{pipes:?}");
        }
    }

    #[test]
    fn fp32_bound_needs_busy_fp32_and_idle_tensor_cores() {
        let cases = [
            (0.65, 0.0, true),
            (0.65, 0.04, true),
            (0.65, 0.30, false),
            (0.10, 0.0, false),
            (0.0, 0.0, false),
        ];
        for (fp32, tensor, want) in cases {
            let p = Pipes {
                fp32_active: Some(fp32),
                tensor_active: Some(tensor),
                ..Pipes::IDLE
            };
            assert_eq!(fp32_bound(&p), Some(want), "fp32 {fp32} tensor {tensor}");
        }
    }
}
