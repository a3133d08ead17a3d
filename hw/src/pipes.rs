//! Pipe activity: how busy each part of a GPU was over an interval, as Hopper's GPM (GPU
//! Performance Monitoring) reports it. One definition for every reader: the NVML backend fills
//! it from GPM metrics, the simulated node computes it from its scenario, the recorder writes it
//! and the accounting turns it into FLOPs.

/// How busy each pipe of a GPU is, as ratios 0..1 (GPM reports the same in percent).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Pipes {
    /// Share of time the SMs had at least one warp (GPM `SM_UTIL`, also `GRAPHICS_UTIL`).
    pub sm_active: f64,
    /// Resident warps as a share of the maximum (GPM `SM_OCCUPANCY`).
    pub sm_occupancy: f64,
    /// Any tensor-core instruction (GPM `ANY_TENSOR_UTIL`): at least each of the three below
    /// (FP8 counts here only).
    pub tensor_active: f64,
    /// Half-precision tensor MMAs: FP16, BF16, TF32 (GPM `HMMA_TENSOR_UTIL`).
    pub hmma_active: f64,
    /// Integer tensor MMAs: INT8 (GPM `IMMA_TENSOR_UTIL`).
    pub imma_active: f64,
    /// FP64 tensor MMAs (GPM `DFMA_TENSOR_UTIL`).
    pub dfma_tensor_active: f64,
    /// The FP16/BF16 pipe outside the tensor cores (GPM `FP16_UTIL`).
    pub fp16_active: f64,
    /// The FP32 pipe (GPM `FP32_UTIL`).
    pub fp32_active: f64,
    /// The FP64 pipe (GPM `FP64_UTIL`).
    pub fp64_active: f64,
    /// Share of the peak DRAM bandwidth in use (GPM `DRAM_BW_UTIL`).
    pub dram_active: f64,
}

impl Pipes {
    /// Every pipe through `f`.
    pub fn map(self, f: impl Fn(f64) -> f64) -> Pipes {
        self.zip(Pipes::default(), |a, _| f(a))
    }

    /// Pipe by pipe, `f(self, other)`.
    pub fn zip(self, o: Pipes, f: impl Fn(f64, f64) -> f64) -> Pipes {
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

    /// Each pipe with its exported `pipe` label.
    pub fn labelled(&self) -> [(&'static str, f64); 10] {
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
