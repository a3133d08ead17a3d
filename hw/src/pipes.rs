//! Pipe activity: how busy each part of a GPU was over an interval, as Hopper's GPM (GPU
//! Performance Monitoring) reports it. One definition for every reader: the NVML backend fills
//! it from GPM metrics, the simulated node computes it from its scenario, the recorder writes it
//! and the accounting turns it into FLOPs.
//!
//! Each pipe is an `Option`: GPM answers each metric with its own return code (nvml.h's
//! `nvmlGpmMetric_t.nvmlReturn`: "If this is nonzero, then value is not valid"), so one pipe can
//! be unknown while the others are read. An unknown pipe is `None`, never a zero: a zero tensor
//! pipe next to a busy FP32 pipe is a verdict ("FP32-bound"), an unknown one is not.

/// How busy each pipe of a GPU is, as ratios 0..1 (GPM reports the same in percent); `None`
/// where that pipe's activity is unknown.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Pipes {
    /// Share of time the SMs had at least one warp (GPM `SM_UTIL`, also `GRAPHICS_UTIL`).
    pub sm_active: Option<f64>,
    /// Resident warps as a share of the maximum (GPM `SM_OCCUPANCY`).
    pub sm_occupancy: Option<f64>,
    /// Any tensor-core instruction (GPM `ANY_TENSOR_UTIL`): at least each of the three below
    /// (FP8 counts here only).
    pub tensor_active: Option<f64>,
    /// Half-precision tensor MMAs: FP16, BF16, TF32 (GPM `HMMA_TENSOR_UTIL`).
    pub hmma_active: Option<f64>,
    /// Integer tensor MMAs: INT8 (GPM `IMMA_TENSOR_UTIL`).
    pub imma_active: Option<f64>,
    /// FP64 tensor MMAs (GPM `DFMA_TENSOR_UTIL`).
    pub dfma_tensor_active: Option<f64>,
    /// The FP16/BF16 pipe outside the tensor cores (GPM `FP16_UTIL`).
    pub fp16_active: Option<f64>,
    /// The FP32 pipe (GPM `FP32_UTIL`).
    pub fp32_active: Option<f64>,
    /// The FP64 pipe (GPM `FP64_UTIL`).
    pub fp64_active: Option<f64>,
    /// Share of the peak DRAM bandwidth in use (GPM `DRAM_BW_UTIL`).
    pub dram_active: Option<f64>,
}

impl Pipes {
    /// Every pipe known, and idle.
    pub const IDLE: Pipes = Pipes::all(Some(0.0));

    /// No pipe known.
    pub const UNKNOWN: Pipes = Pipes::all(None);

    const fn all(v: Option<f64>) -> Pipes {
        Pipes {
            sm_active: v,
            sm_occupancy: v,
            tensor_active: v,
            hmma_active: v,
            imma_active: v,
            dfma_tensor_active: v,
            fp16_active: v,
            fp32_active: v,
            fp64_active: v,
            dram_active: v,
        }
    }

    /// Every known pipe through `f`; unknown ones stay unknown.
    pub fn map(self, f: impl Fn(f64) -> f64) -> Pipes {
        self.zip(Pipes::IDLE, |a, _| f(a))
    }

    /// Pipe by pipe, `f(self, other)`; unknown where either is unknown.
    pub fn zip(self, o: Pipes, f: impl Fn(f64, f64) -> f64) -> Pipes {
        self.zip_option(o, |a, b| Some(f(a?, b?)))
    }

    /// Every pipe times `k`.
    pub fn scaled(self, k: f64) -> Pipes {
        self.map(|a| a * k)
    }

    /// Pipe by pipe, `self + other`.
    pub fn plus(self, other: Pipes) -> Pipes {
        self.zip(other, |a, b| a + b)
    }

    /// Pipe by pipe, `self - other`.
    pub fn minus(self, other: Pipes) -> Pipes {
        self.zip(other, |a, b| a - b)
    }

    /// Every pipe clamped to [0, 1].
    pub fn capped(self) -> Pipes {
        self.map(|a| a.clamp(0.0, 1.0))
    }

    /// The known pipes, with 0 for each unknown one: for sums over time that keep track of
    /// which pipes were unknown apart (the simulated node's integrals).
    pub fn or_zero(self) -> Pipes {
        self.zip_option(self, |a, _| Some(a.unwrap_or(0.0)))
    }

    /// 1 for each unknown pipe, 0 for each known one (known itself, so that it sums).
    pub fn unknown_mask(self) -> Pipes {
        self.zip_option(self, |a, _| Some(if a.is_some() { 0.0 } else { 1.0 }))
    }

    /// These pipes, made unknown wherever `unknown` (a sum of [`Pipes::unknown_mask`]s) is not
    /// zero: an average over a window is known only where no part of the window was unknown.
    pub fn unknown_where(self, unknown: Pipes) -> Pipes {
        self.zip_option(unknown, |a, u| match u {
            Some(u) if u <= 0.0 => a,
            _ => None,
        })
    }

    fn zip_option(self, o: Pipes, f: impl Fn(Option<f64>, Option<f64>) -> Option<f64>) -> Pipes {
        Pipes {
            sm_active: f(self.sm_active, o.sm_active),
            sm_occupancy: f(self.sm_occupancy, o.sm_occupancy),
            tensor_active: f(self.tensor_active, o.tensor_active),
            hmma_active: f(self.hmma_active, o.hmma_active),
            imma_active: f(self.imma_active, o.imma_active),
            dfma_tensor_active: f(self.dfma_tensor_active, o.dfma_tensor_active),
            fp16_active: f(self.fp16_active, o.fp16_active),
            fp32_active: f(self.fp32_active, o.fp32_active),
            fp64_active: f(self.fp64_active, o.fp64_active),
            dram_active: f(self.dram_active, o.dram_active),
        }
    }

    /// Whether every pipe is known.
    pub fn all_known(&self) -> bool {
        self.labelled().iter().all(|(_, v)| v.is_some())
    }

    /// Each pipe with its exported `pipe` label.
    pub fn labelled(&self) -> [(&'static str, Option<f64>); 10] {
        [
            ("tensor", self.tensor_active),
            ("hmma", self.hmma_active),
            ("imma", self.imma_active),
            ("dfma", self.dfma_tensor_active),
            ("fp16", self.fp16_active),
            ("fp32", self.fp32_active),
            ("fp64", self.fp64_active),
            ("sm", self.sm_active),
            ("sm_occupancy", self.sm_occupancy),
            ("dram", self.dram_active),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_pipes_stay_unknown_through_arithmetic() {
        let a = Pipes {
            fp32_active: Some(0.6),
            tensor_active: None,
            ..Pipes::IDLE
        };
        let b = Pipes {
            fp32_active: Some(0.2),
            ..Pipes::IDLE
        };
        let sum = a.plus(b).scaled(0.5);
        assert_eq!(sum.fp32_active, Some(0.4));
        assert_eq!(sum.tensor_active, None);
        assert_eq!(sum.sm_active, Some(0.0));
        assert!(!sum.all_known() && b.all_known());
        assert_eq!(Pipes::UNKNOWN.capped(), Pipes::UNKNOWN);
    }

    #[test]
    fn integrals_keep_the_unknown_seconds_apart() {
        // 2 s with the tensor pipe unknown, then 2 s with it known at 0.5.
        let s1 = Pipes {
            tensor_active: None,
            fp32_active: Some(0.4),
            ..Pipes::IDLE
        };
        let s2 = Pipes {
            tensor_active: Some(0.5),
            fp32_active: Some(0.4),
            ..Pipes::IDLE
        };
        let value = s1.or_zero().scaled(2.0).plus(s2.or_zero().scaled(2.0));
        let unknown = s1
            .unknown_mask()
            .scaled(2.0)
            .plus(s2.unknown_mask().scaled(2.0));
        let mean = value.scaled(0.25).unknown_where(unknown);
        assert_eq!(mean.fp32_active, Some(0.4));
        assert_eq!(mean.tensor_active, None);
        // Over the known part alone, the tensor pipe is known.
        let known = s2.or_zero().unknown_where(s2.unknown_mask());
        assert_eq!(known.tensor_active, Some(0.5));
    }
}
