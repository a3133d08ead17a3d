//! How well a GPU is used: FLOPs from pipe activity, MFU, and the FP32-on-tensor-cores signal.
//!
//! Pure. A pipe's FLOP rate is its activity (GPM, the share of cycles it was busy, 0..1) times
//! what the unit's SMs do on it per cycle at the clock they ran at: SMs x FLOP/clk/SM x SM
//! clock ([`interval_peaks`]; issue 18, item 6). A benchmarked or datasheet rate of the whole
//! GPU would be wrong twice over: at another clock than the job's, and for a MIG instance at
//! the board's SM count. Where the architecture, the SMs or the clock are unknown, the
//! datasheet's peaks (times a MIG instance's share) stand in, and [`PipeBasis`] says so.
//!
//! The FP32-bound speedup is the node's measured BF16 over FP32 (`gpucost bench`) where known,
//! else the datasheet's. MFU is measured against the dense BF16 tensor peak: the precision
//! large-model training runs in and the figure its MFU is conventionally quoted against
//! (PaLM's definition), so numbers are comparable across jobs and with what training
//! frameworks report.

use gpucost_hw::peaks::{lookup, sm_peak, Arch, Precision};

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

    /// What `sm_count` SMs of the GPU named `model` (architecture `arch`) do on each pipe at SM
    /// clock `sm_clock_hz` (see [`sm_peak`]); `None` where the architecture has no BF16 or
    /// FP32 path. Paths it lacks (FP64 tensor cores outside GA100, Hopper and Blackwell) are 0:
    /// GPM shows no activity on a pipe that does not exist.
    pub fn at_clock(model: &str, arch: Arch, sm_count: u32, sm_clock_hz: f64) -> Option<PipePeaks> {
        let p = |precision| sm_peak(model, arch, precision, sm_count, sm_clock_hz);
        let (bf16, fp32) = (p(Precision::Bf16)?, p(Precision::Fp32)?);
        Some(PipePeaks {
            bf16,
            int8: p(Precision::Int8).unwrap_or(0.0),
            fp64_tensor: p(Precision::Fp64Tensor).unwrap_or(0.0),
            fp32,
            fp64: p(Precision::Fp64).unwrap_or(0.0),
        })
    }

    /// Every rate times `f` (a MIG instance's share of the board).
    pub fn scaled(self, f: f64) -> PipePeaks {
        PipePeaks {
            bf16: self.bf16 * f,
            int8: self.int8 * f,
            fp64_tensor: self.fp64_tensor * f,
            fp32: self.fp32 * f,
            fp64: self.fp64 * f,
        }
    }
}

/// What is known of a billing unit's SMs over one interval, to price its pipe activity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitSms<'a> {
    /// The NVML product name (of the parent, for a MIG instance).
    pub model: &'a str,
    pub compute_capability: Option<(u32, u32)>,
    /// The unit's SMs as the driver reports them (a MIG instance's own).
    pub sm_count: Option<u32>,
    /// A MIG instance: the datasheet's SM count (the board's) is not its own.
    pub mig: bool,
    /// The unit's share of the board (1 for a whole GPU): the datasheet fallback's scale.
    pub share: f64,
    /// The SM clock over the interval, Hz.
    pub sm_clock_hz: Option<f64>,
}

/// Where an interval's pipe rates came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeBasis {
    /// SMs x FLOP/clk/SM x the interval's SM clock.
    SmClock,
    /// The datasheet's dense peaks (times a MIG instance's share), at the clock the datasheet
    /// assumes; the reason is why the clock-based rates could not be had.
    Datasheet(&'static str),
}

impl PipeBasis {
    /// How the rates were obtained, in words (for the log).
    pub fn describe(self) -> String {
        match self {
            PipeBasis::SmClock => "SMs x FLOP per clock per SM x the SM clock read in each \
                                   interval"
                .to_string(),
            PipeBasis::Datasheet(why) => format!(
                "the datasheet's peaks at the clock the datasheet assumes (times a MIG \
                 instance's share), since {why}"
            ),
        }
    }
}

/// The pipe rates to price one interval's activity with (issue 18, item 6): SMs x FLOP per
/// clock per SM x the interval's SM clock ([`rates_per_clock`] then [`priced`]). Where the
/// architecture, the SMs or the clock are unknown, the datasheet's peaks times the unit's share
/// stand in, and the basis says why. `None` when neither can be had (a GPU the table does not
/// know, of an unknown architecture): no FLOPs, rather than a made-up rate.
pub fn interval_peaks(u: &UnitSms<'_>) -> Option<(PipePeaks, PipeBasis)> {
    priced(
        rates_per_clock(u),
        u.sm_clock_hz,
        PipePeaks::datasheet(u.model),
        u.share,
    )
}

/// What all of a unit's SMs do on each pipe per clock cycle (FLOP per Hz), which depends only
/// on what the unit is: found once per unit. The architecture comes from the compute
/// capability (else the datasheet table's entry for the model); the SMs from the driver (else,
/// for a whole GPU, the table's). An error says why there are none.
pub fn rates_per_clock(u: &UnitSms<'_>) -> Result<PipePeaks, &'static str> {
    let spec = lookup(u.model);
    let arch = u
        .compute_capability
        .and_then(Arch::from_compute_capability)
        .or(spec.map(|s| s.arch))
        .ok_or("its architecture is unknown (compute capability not read or not in the table)")?;
    let sms = match (u.sm_count, u.mig) {
        (Some(n), _) if n > 0 => n,
        (_, false) => spec.map(|s| s.sm_count).ok_or("its SM count is unknown")?,
        (_, true) => return Err("the driver did not report the MIG instance's SMs"),
    };
    PipePeaks::at_clock(u.model, arch, sms, 1.0)
        .ok_or("its architecture has no BF16 or FP32 rate here")
}

/// One interval's pipe rates from the unit's [`rates_per_clock`] and its SM clock over the
/// interval; the `datasheet` peaks times `share` where either is missing.
pub fn priced(
    per_clock: Result<PipePeaks, &'static str>,
    sm_clock_hz: Option<f64>,
    datasheet: Option<PipePeaks>,
    share: f64,
) -> Option<(PipePeaks, PipeBasis)> {
    let clock = sm_clock_hz.filter(|c| c.is_finite() && *c > 0.0);
    let why = match (per_clock, clock) {
        (Ok(k), Some(clk)) => return Some((k.scaled(clk), PipeBasis::SmClock)),
        (Err(why), _) => why,
        (Ok(_), None) => "its SM clock was not read",
    };
    datasheet.map(|d| (d.scaled(share), PipeBasis::Datasheet(why)))
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

    fn unit(
        model: &str,
        cc: Option<(u32, u32)>,
        sms: Option<u32>,
        mhz: Option<f64>,
    ) -> UnitSms<'_> {
        UnitSms {
            model,
            compute_capability: cc,
            sm_count: sms,
            mig: false,
            share: 1.0,
            sm_clock_hz: mhz.map(|m| m * 1e6),
        }
    }

    /// Issue 18, item 6: a job's FLOP/s is its pipe activity x SMs x FLOP/clk/SM x the clock
    /// its GPU ran at, not x the rate of the whole GPU at some other clock.
    #[test]
    fn issue_18_job_flops_follow_the_sm_clock() {
        let model = "NVIDIA H100 80GB HBM3";
        let busy = Pipes {
            hmma_active: Some(0.5),
            fp32_active: Some(0.1),
            ..Pipes::IDLE
        };
        let rate = |mhz| {
            let (k, basis) =
                interval_peaks(&unit(model, Some((9, 0)), Some(132), Some(mhz))).unwrap();
            assert_eq!(basis, PipeBasis::SmClock);
            flop_rate(&busy, &k).unwrap()
        };
        // 0.5 x 132 x 4096 x f + 0.1 x 132 x 256 x f.
        let per_hz = 0.5 * 132.0 * 4096.0 + 0.1 * 132.0 * 256.0;
        assert!(
            (rate(1980.0) - per_hz * 1980e6).abs() < 1.0,
            "{}",
            rate(1980.0)
        );
        assert!(
            (rate(1500.0) - per_hz * 1500e6).abs() < 1.0,
            "{}",
            rate(1500.0)
        );
        assert!((rate(1500.0) / rate(1980.0) - 1500.0 / 1980.0).abs() < 1e-12);
        // At 1980 MHz the tensor pipe does more than the datasheet's figure (which assumes
        // 1830 MHz): 8% more.
        let k = interval_peaks(&unit(model, Some((9, 0)), Some(132), Some(1980.0)))
            .unwrap()
            .0;
        assert!(
            (k.bf16 / h100().bf16 - 1980.0 / 1830.0).abs() < 0.002,
            "{}",
            k.bf16
        );
        // A MIG instance with its own 16 SMs: a sixteenth-and-a-bit of the board, not 1/7.
        let mig = UnitSms {
            mig: true,
            share: 1.0 / 7.0,
            ..unit(model, Some((9, 0)), Some(16), Some(1980.0))
        };
        let (k, basis) = interval_peaks(&mig).unwrap();
        assert_eq!(basis, PipeBasis::SmClock);
        assert_eq!(k.bf16, 16.0 * 4096.0 * 1980e6);
        // A whole GPU whose SM count was not read: the table's, for the same product.
        let (k, basis) = interval_peaks(&unit(model, Some((9, 0)), None, Some(1500.0))).unwrap();
        assert_eq!(basis, PipeBasis::SmClock);
        assert_eq!(k.bf16, 132.0 * 4096.0 * 1500e6);
        // A GPU the table does not know, of a known architecture: from the driver's figures.
        let (k, _) =
            interval_peaks(&unit("NVIDIA L20", Some((8, 9)), Some(92), Some(2000.0))).unwrap();
        assert_eq!((k.bf16, k.fp64_tensor), (92.0 * 1024.0 * 2000e6, 0.0));
    }

    /// The fallback says what it is: the datasheet's peaks times the unit's share, and why.
    #[test]
    fn issue_18_fallback_to_the_datasheet_says_why() {
        let model = "NVIDIA H100 80GB HBM3";
        let cases = [
            (unit(model, Some((9, 0)), Some(132), None), "SM clock"),
            (
                UnitSms {
                    mig: true,
                    share: 3.0 / 7.0,
                    ..unit(model, Some((9, 0)), None, Some(1980.0))
                },
                "MIG instance's SMs",
            ),
        ];
        for (u, why) in cases {
            let (k, basis) = interval_peaks(&u).unwrap();
            match basis {
                PipeBasis::Datasheet(w) => assert!(w.contains(why), "{w}"),
                other => panic!("{other:?}"),
            }
            assert!(basis.describe().contains("datasheet"));
            assert!((k.bf16 - h100().bf16 * u.share).abs() < 1.0);
        }
        // Unknown architecture (compute capability 7.5, not in the table): the datasheet
        // where the model is known...
        let (_, basis) =
            interval_peaks(&unit(model, Some((7, 5)), Some(132), Some(1980.0))).unwrap();
        assert_eq!(
            basis,
            PipeBasis::SmClock,
            "the table knows the H100's architecture"
        );
        // ... and nothing, not a zero, where neither is.
        assert_eq!(
            interval_peaks(&unit("Tesla T4", Some((7, 5)), Some(40), Some(1590.0))),
            None
        );
        assert_eq!(
            interval_peaks(&unit("Some Future GPU", None, Some(200), Some(2e3))),
            None
        );
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
