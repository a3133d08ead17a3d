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
        sm_active: SM_ACTIVE_PER_UTIL,
        sm_occupancy: SM_OCCUPANCY_PER_UTIL,
        ..Pipes::default()
    };
    match tag.as_deref() {
        Some("idle") => Pipes::default(),
        Some("bf16" | "fp16") => Pipes {
            tensor_active: 0.55,
            hmma_active: 0.55,
            fp16_active: 0.10,
            fp32_active: 0.10,
            dram_active: 0.45,
            ..sm
        },
        Some("tf32") => Pipes {
            tensor_active: 0.45,
            hmma_active: 0.45,
            fp32_active: 0.15,
            dram_active: 0.50,
            ..sm
        },
        Some("fp8") => Pipes {
            tensor_active: 0.50,
            fp16_active: 0.10,
            fp32_active: 0.08,
            dram_active: 0.40,
            ..sm
        },
        Some("int8") => Pipes {
            tensor_active: 0.50,
            imma_active: 0.50,
            fp32_active: 0.05,
            dram_active: 0.40,
            ..sm
        },
        Some("fp32") => Pipes {
            fp32_active: 0.65,
            dram_active: 0.50,
            ..sm
        },
        Some("fp64") => Pipes {
            tensor_active: 0.50,
            dfma_tensor_active: 0.50,
            fp64_active: 0.60,
            dram_active: 0.40,
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
        let mut p = coef.scaled(self.utilization);
        if let Some(sm) = self.sm_active {
            p.sm_active = sm;
            p.sm_occupancy = sm * SM_OCCUPANCY_PER_UTIL / SM_ACTIVE_PER_UTIL;
        }
        if let Some(tensor) = self.tensor_active {
            let (hmma, imma, dfma) = if coef.tensor_active > 0.0 {
                (
                    coef.hmma_active / coef.tensor_active,
                    coef.imma_active / coef.tensor_active,
                    coef.dfma_tensor_active / coef.tensor_active,
                )
            } else {
                (1.0, 0.0, 0.0)
            };
            p.tensor_active = tensor;
            p.hmma_active = tensor * hmma;
            p.imma_active = tensor * imma;
            p.dfma_tensor_active = tensor * dfma;
        }
        for (explicit, pipe) in [
            (self.fp16_active, &mut p.fp16_active),
            (self.fp32_active, &mut p.fp32_active),
            (self.fp64_active, &mut p.fp64_active),
            (self.dram_active, &mut p.dram_active),
        ] {
            if let Some(v) = explicit {
                *pipe = v;
            }
        }
        p
    }
}
