//! Pipe activity: how busy each part of a GPU is, as Hopper's GPM (GPU Performance Monitoring)
//! reports it.
//!
//! Each job phase puts a load on its GPUs that follows its `precision` tag and its utilization
//! (the table in `sim/README.md`, [`coefficients`] here), unless the phase sets a pipe
//! explicitly. Phases sharing a GPU add up, each pipe capped at 1. Pipe activity has no ripple:
//! it is constant within a phase, so averages over any window are exact.

use crate::scenario::PhaseSpec;
pub use gpucost_hw::Pipes;

/// SM activity per point of utilization, for every busy precision.
const SM_ACTIVE_PER_UTIL: f64 = 0.95;
/// SM occupancy per point of utilization, for every busy precision.
const SM_OCCUPANCY_PER_UTIL: f64 = 0.6;

/// Pipe activity per point of utilization (a phase at utilization `u` loads each pipe
/// `u x coefficient`), by precision tag (case-insensitive). `idle` loads nothing, whatever its
/// utilization; an absent or unknown tag loads the SMs only.
pub fn coefficients(precision: Option<&str>) -> Pipes {
    let tag = precision.map(|p| p.trim().to_ascii_lowercase());
    let sm = Pipes {
        sm_active: Some(SM_ACTIVE_PER_UTIL),
        sm_occupancy: Some(SM_OCCUPANCY_PER_UTIL),
        ..Pipes::IDLE
    };
    match tag.as_deref() {
        Some("idle") => Pipes::IDLE,
        Some("bf16" | "fp16") => Pipes {
            tensor_active: Some(0.55),
            hmma_active: Some(0.55),
            fp16_active: Some(0.10),
            fp32_active: Some(0.10),
            dram_active: Some(0.45),
            ..sm
        },
        Some("tf32") => Pipes {
            tensor_active: Some(0.45),
            hmma_active: Some(0.45),
            fp32_active: Some(0.15),
            dram_active: Some(0.50),
            ..sm
        },
        Some("fp8") => Pipes {
            tensor_active: Some(0.50),
            fp16_active: Some(0.10),
            fp32_active: Some(0.08),
            dram_active: Some(0.40),
            ..sm
        },
        Some("int8") => Pipes {
            tensor_active: Some(0.50),
            imma_active: Some(0.50),
            fp32_active: Some(0.05),
            dram_active: Some(0.40),
            ..sm
        },
        Some("fp32") => Pipes {
            fp32_active: Some(0.65),
            dram_active: Some(0.50),
            ..sm
        },
        Some("fp64") => Pipes {
            tensor_active: Some(0.50),
            dfma_tensor_active: Some(0.50),
            fp64_active: Some(0.60),
            dram_active: Some(0.40),
            ..sm
        },
        _ => sm,
    }
}

impl PhaseSpec {
    /// The pipe activity this phase puts on each of its GPUs (before other jobs on the same GPU
    /// are added): the precision table times `utilization`, then the phase's explicit values.
    ///
    /// An explicit `sm_active` also sets occupancy (`sm_active x 0.6 / 0.95`); an explicit
    /// `tensor_active` keeps the precision's split into HMMA/IMMA/DFMA (all HMMA where the
    /// precision has no tensor work, none for FP8).
    pub fn pipes(&self) -> Pipes {
        let coef = coefficients(self.precision.as_deref());
        // The table knows every pipe.
        let k = |pipe: Option<f64>| pipe.unwrap_or(0.0);
        let mut p = coef.scaled(self.utilization);
        if let Some(sm) = self.sm_active {
            p.sm_active = Some(sm);
            p.sm_occupancy = Some(sm * SM_OCCUPANCY_PER_UTIL / SM_ACTIVE_PER_UTIL);
        }
        if let Some(tensor) = self.tensor_active {
            let any = k(coef.tensor_active);
            let (hmma, imma, dfma) = if any > 0.0 {
                (
                    k(coef.hmma_active) / any,
                    k(coef.imma_active) / any,
                    k(coef.dfma_tensor_active) / any,
                )
            } else {
                (1.0, 0.0, 0.0)
            };
            p.tensor_active = Some(tensor);
            p.hmma_active = Some(tensor * hmma);
            p.imma_active = Some(tensor * imma);
            p.dfma_tensor_active = Some(tensor * dfma);
        }
        for (explicit, pipe) in [
            (self.fp16_active, &mut p.fp16_active),
            (self.fp32_active, &mut p.fp32_active),
            (self.fp64_active, &mut p.fp64_active),
            (self.dram_active, &mut p.dram_active),
        ] {
            if let Some(v) = explicit {
                *pipe = Some(v);
            }
        }
        p
    }
}

/// Pipe activity summed over time: for each pipe, its activity integrated over the seconds it
/// was known, and the seconds it was unknown (a GPM metric that failed, a gap in a recording).
/// What a GPM sample snapshots; two of them give the average between them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipeSeconds {
    /// Activity x seconds, over the known seconds of each pipe.
    pub value: Pipes,
    /// Seconds each pipe was unknown.
    pub unknown: Pipes,
}

impl PipeSeconds {
    pub const ZERO: PipeSeconds = PipeSeconds {
        value: Pipes::IDLE,
        unknown: Pipes::IDLE,
    };

    /// `pipes` held for `seconds`.
    pub fn of(pipes: Pipes, seconds: f64) -> PipeSeconds {
        PipeSeconds {
            value: pipes.or_zero().scaled(seconds),
            unknown: pipes.unknown_mask().scaled(seconds),
        }
    }

    pub fn plus(self, o: PipeSeconds) -> PipeSeconds {
        PipeSeconds {
            value: self.value.plus(o.value),
            unknown: self.unknown.plus(o.unknown),
        }
    }

    pub fn minus(self, o: PipeSeconds) -> PipeSeconds {
        PipeSeconds {
            value: self.value.minus(o.value),
            unknown: self.unknown.minus(o.unknown),
        }
    }

    pub fn scaled(self, k: f64) -> PipeSeconds {
        PipeSeconds {
            value: self.value.scaled(k),
            unknown: self.unknown.scaled(k),
        }
    }

    /// The average activity over `seconds` (this being the sum over them): each pipe capped to
    /// [0, 1], and unknown where it was unknown for any part of them.
    pub fn mean_over(self, seconds: f64) -> Pipes {
        // Sums of floats: a pipe known throughout has 0 unknown seconds up to rounding.
        let unknown = self.unknown.map(|u| if u > 1e-9 { u } else { 0.0 });
        self.value
            .scaled(1.0 / seconds)
            .capped()
            .unknown_where(unknown)
    }
}
