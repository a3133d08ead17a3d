//! How much work each benchmark does, and rates from times. Pure arithmetic, no GPU.
//!
//! Conventions: an FMA is 2 FLOP (a packed x2 FMA is 4); an MMA of shape m x n x k is
//! 2mnk FLOP (OP for INT8), a GEMM likewise; memory traffic counts the bytes each kernel must
//! move to or from DRAM (read: n, write: n, copy: 2n, triad: 3n for arrays of n bytes).

use crate::registry::shape;

/// An MMA instruction's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmaShape {
    pub m: u64,
    pub n: u64,
    pub k: u64,
}

impl MmaShape {
    pub const M16N8K16: MmaShape = MmaShape { m: 16, n: 8, k: 16 };
    pub const M16N8K8: MmaShape = MmaShape { m: 16, n: 8, k: 8 };
    pub const M16N8K32: MmaShape = MmaShape { m: 16, n: 8, k: 32 };
    pub const M8N8K4: MmaShape = MmaShape { m: 8, n: 8, k: 4 };
    pub const M64N256K16: MmaShape = MmaShape {
        m: 64,
        n: 256,
        k: 16,
    };
    pub const M64N256K32: MmaShape = MmaShape {
        m: 64,
        n: 256,
        k: 32,
    };
    pub const M64N256K8: MmaShape = MmaShape {
        m: 64,
        n: 256,
        k: 8,
    };

    /// FLOP of one instruction: 2mnk.
    pub fn flops(self) -> f64 {
        2.0 * (self.m * self.n * self.k) as f64
    }
}

/// FLOP of one launch of an `fma.cu` kernel: every thread runs [`shape::FMA_CHAINS`] chains of
/// `iters` x [`shape::FMA_UNROLL`] FMAs, each `lanes` wide (1, or 2 for packed half pairs).
pub fn fma_launch_flops(blocks: u32, iters: u32, lanes: u32) -> f64 {
    let threads = u64::from(blocks) * u64::from(shape::FMA_THREADS);
    let fmas =
        threads * u64::from(shape::FMA_CHAINS) * u64::from(shape::FMA_UNROLL) * u64::from(iters);
    2.0 * fmas as f64 * f64::from(lanes)
}

/// FMA steps each chain of an `fma.cu` kernel takes in one launch.
pub fn fma_steps(iters: u32) -> u64 {
    u64::from(iters) * u64::from(shape::FMA_UNROLL)
}

/// FLOP of one launch of an `mma.cu` / `mma_fp8.cu` / `dmma.cu` kernel: every warp issues
/// [`shape::MMA_NACC`] x [`shape::MMA_STEPS`] x `iters` instructions of `mma`.
pub fn mma_launch_flops(blocks: u32, iters: u32, mma: MmaShape) -> f64 {
    let warps = u64::from(blocks) * u64::from(shape::MMA_THREADS / 32);
    let count = warps * u64::from(shape::MMA_NACC) * u64::from(shape::MMA_STEPS) * u64::from(iters);
    count as f64 * mma.flops()
}

/// FLOP of one launch of a `wgmma.cu` kernel: every warpgroup issues [`shape::WG_STEPS`] x
/// `iters` instructions of `mma`.
pub fn wgmma_launch_flops(blocks: u32, iters: u32, mma: MmaShape) -> f64 {
    let groups = u64::from(blocks) * u64::from(shape::WG_THREADS / 128);
    (groups * u64::from(shape::WG_STEPS) * u64::from(iters)) as f64 * mma.flops()
}

/// How many times each output of an MMA kernel's tile accumulated A x B in one launch.
pub fn mma_accumulations(iters: u32) -> u64 {
    u64::from(iters) * u64::from(shape::MMA_STEPS)
}

/// Same for the wgmma kernels.
pub fn wgmma_accumulations(iters: u32) -> u64 {
    u64::from(iters) * u64::from(shape::WG_STEPS)
}

/// Why a measured `rate` cannot be right: above what `sm_count` SMs of `arch` can do on
/// `precision` at `max_clock_hz`, the highest clock the GPU runs (a FLOP count that claims work
/// the kernel did not do, or a timer that lost time). 1% of slack for rounding. `None` when it
/// is plausible, or when the architecture's rate is not known.
pub fn above_ceiling(
    arch: Option<gpucost_hw::peaks::Arch>,
    precision: gpucost_hw::peaks::Precision,
    sm_count: u32,
    max_clock_hz: f64,
    rate: f64,
) -> Option<String> {
    let ceiling =
        gpucost_hw::peaks::clock_normalized_peak(arch?, precision, sm_count, max_clock_hz)?;
    (rate > ceiling * 1.01).then(|| {
        format!(
            "measured {:.1} TFLOP/s, above the {:.1} TFLOP/s that {sm_count} SMs can do at {:.0} MHz, \
             the GPU's highest clock: the figure is wrong, not reported",
            rate / 1e12,
            ceiling / 1e12,
            max_clock_hz / 1e6
        )
    })
}

/// FLOP of a GEMM m x n x k: 2mnk.
pub fn gemm_flops(m: u64, n: u64, k: u64) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64
}

/// The shape of a library GEMM: D (m x n) = A (m x k) x B (k x n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GemmShape {
    pub m: u64,
    pub n: u64,
    pub k: u64,
}

impl GemmShape {
    /// The square product everyone quotes (and `reference.py` measures among its sizes).
    pub const SQUARE_8192: GemmShape = GemmShape {
        m: 8192,
        n: 8192,
        k: 8192,
    };

    /// A training job's product: the MLP up-projection of the GPT-style decoder in
    /// `shared/device/workload.py` at its defaults (batch 8 x sequence 1024 = 8192 tokens,
    /// d_model 2048 -> 4 x 2048), tokens x 4d x d.
    pub const TRAINING: GemmShape = GemmShape {
        m: 8192,
        n: 8192,
        k: 2048,
    };

    pub fn square(n: u64) -> GemmShape {
        GemmShape { m: n, n, k: n }
    }

    pub fn is_square(self) -> bool {
        self.m == self.n && self.n == self.k
    }

    pub fn flops(self) -> f64 {
        gemm_flops(self.m, self.n, self.k)
    }

    /// Bytes of A, B and D with `input` and `output` bytes per element.
    pub fn bytes(self, input: u64, output: u64) -> u64 {
        (self.m * self.k + self.k * self.n) * input + self.m * self.n * output
    }

    /// `8192^3`, or `8192x8192x2048` (m x n x k).
    pub fn label(self) -> String {
        if self.is_square() {
            format!("{}^3", self.m)
        } else {
            format!("{}x{}x{}", self.m, self.n, self.k)
        }
    }
}

/// Longest a single library call may take, seconds: a fixed shape that would take longer at
/// the rate a precision is expected to reach (FP64 on a GPU with no FP64 tensor cores) is
/// replaced by a square one sized to the plan.
pub const MAX_CALL_S: f64 = 0.1;

/// The shapes a library row of a precision is measured at, given the rate it should roughly
/// reach: 8192^3, and the training shape unless `quick` (the agent's short periodic run) or the
/// precision has no tensor-core library path (`training`); a square one of about `target_s`
/// per call instead where 8192^3 would take longer than [`MAX_CALL_S`].
pub fn library_shapes(
    expected_rate: f64,
    target_s: f64,
    quick: bool,
    training: bool,
) -> Vec<GemmShape> {
    let takes = |s: GemmShape| s.flops() / expected_rate.max(1.0);
    let mut out = Vec::new();
    if takes(GemmShape::SQUARE_8192) <= MAX_CALL_S {
        out.push(GemmShape::SQUARE_8192);
    } else {
        out.push(GemmShape::square(gemm_size(expected_rate, target_s)));
    }
    if training && !quick && takes(GemmShape::TRAINING) <= MAX_CALL_S {
        out.push(GemmShape::TRAINING);
    }
    out
}

/// The memory benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemTraffic {
    Read,
    Write,
    Copy,
    Triad,
}

/// Bytes a memory kernel moves over arrays of `array_bytes` each.
pub fn memory_bytes(op: MemTraffic, array_bytes: u64) -> f64 {
    let arrays = match op {
        MemTraffic::Read | MemTraffic::Write => 1,
        MemTraffic::Copy => 2,
        MemTraffic::Triad => 3,
    };
    (arrays * array_bytes) as f64
}

/// `work / seconds`; 0 for a non-positive time.
pub fn rate(work: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        work / seconds
    } else {
        0.0
    }
}

/// The median of `values` (mean of the middle two for an even count); `None` when empty or
/// when any value is NaN.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// How a row's timed launches spread: the median, the 10th and 90th percentiles (linear
/// between ranks), the extremes, and how many there were.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    /// The 10-90 range relative to the median (0.02: the middle 80% within 2%).
    pub fn relative(&self) -> f64 {
        if self.median > 0.0 {
            (self.p90 - self.p10) / self.median
        } else {
            0.0
        }
    }
}

/// The spread of `values`; `None` when empty or when any value is NaN.
pub fn spread(values: &[f64]) -> Option<Spread> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let x = q * (v.len() - 1) as f64;
        let (i, f) = (x.floor() as usize, x.fract());
        if i + 1 < v.len() {
            v[i] + f * (v[i + 1] - v[i])
        } else {
            v[i]
        }
    };
    Some(Spread {
        median: median(&v)?,
        p10: at(0.1),
        p90: at(0.9),
        min: v[0],
        max: v[v.len() - 1],
        n: v.len(),
    })
}

/// How many loop iterations (or calls) make one timed launch (or batch) last about `target_s`,
/// given that `probe` of them took `probe_s`: scaled linearly, at least 1, at most `max`.
pub fn scale_to(probe: u64, probe_s: f64, target_s: f64, max: u64) -> u64 {
    if probe_s <= 0.0 || !probe_s.is_finite() {
        return probe.clamp(1, max);
    }
    let want = (probe as f64 * target_s / probe_s).round();
    (want as u64).clamp(1, max)
}

/// Rounds a GEMM size for a call of about `target_s` at `rate` FLOP/s: the cube root of
/// target x rate / 2, a multiple of 256, between 1024 and 16384.
pub fn gemm_size(rate: f64, target_s: f64) -> u64 {
    let n = (target_s * rate / 2.0).cbrt();
    let n = if n.is_finite() { n } else { 1024.0 };
    ((n / 256.0).round() as u64 * 256).clamp(1024, 16384)
}

#[cfg(test)]
mod tests {
    use gpucost_hw::peaks::{Arch, Precision};

    #[test]
    fn figures_above_the_architectures_ceiling_are_refused() {
        // H100 SXM: 132 SMs x 4096 FLOP/clk x 1980 MHz = 1070.5 TFLOP/s of BF16 at most.
        let h = Some(Arch::Hopper);
        assert_eq!(above_ceiling(h, Precision::Bf16, 132, 1980e6, 800e12), None);
        assert_eq!(
            above_ceiling(h, Precision::Bf16, 132, 1980e6, 1075e12),
            None,
            "1% slack"
        );
        let e = above_ceiling(h, Precision::Bf16, 132, 1980e6, 8.0 * 800e12).unwrap();
        assert!(e.contains("6400.0 TFLOP/s") && e.contains("1070.5"), "{e}");
        // A MIG slice has fewer SMs: its ceiling is theirs.
        assert!(above_ceiling(h, Precision::Bf16, 16, 1980e6, 200e12).is_some());
        // Unknown architecture or path: no verdict.
        assert_eq!(
            above_ceiling(None, Precision::Bf16, 132, 1980e6, 1e18),
            None
        );
        let ada = Some(Arch::Ada);
        assert_eq!(
            above_ceiling(ada, Precision::Fp64Tensor, 142, 2520e6, 1e18),
            None
        );
    }

    use super::*;

    #[test]
    fn mma_shapes() {
        assert_eq!(MmaShape::M16N8K16.flops(), 4096.0);
        assert_eq!(MmaShape::M16N8K8.flops(), 2048.0);
        assert_eq!(MmaShape::M16N8K32.flops(), 8192.0);
        assert_eq!(MmaShape::M8N8K4.flops(), 512.0);
        assert_eq!(MmaShape::M64N256K16.flops(), 524_288.0);
        assert_eq!(MmaShape::M64N256K32.flops(), 1_048_576.0);
    }

    #[test]
    fn fma_counts() {
        // One block of 256 threads, 8 chains, 32 steps, one iteration: 65536 FMAs.
        assert_eq!(fma_launch_flops(1, 1, 1), 2.0 * 65536.0);
        assert_eq!(fma_launch_flops(1, 1, 2), 4.0 * 65536.0);
        assert_eq!(
            fma_launch_flops(132, 1000, 1),
            132.0 * 1000.0 * 2.0 * 65536.0
        );
        assert_eq!(fma_steps(3), 96);
    }

    #[test]
    fn mma_counts() {
        // 8 warps x 8 accumulators x 16 steps = 1024 mma per block per iteration.
        assert_eq!(mma_launch_flops(1, 1, MmaShape::M16N8K16), 1024.0 * 4096.0);
        assert_eq!(
            mma_launch_flops(10, 7, MmaShape::M16N8K32),
            70.0 * 1024.0 * 8192.0
        );
        // 3 warpgroups x 16 steps per block per iteration.
        assert_eq!(
            wgmma_launch_flops(1, 1, MmaShape::M64N256K16),
            48.0 * 524_288.0
        );
        assert_eq!(mma_accumulations(2), 32);
        assert_eq!(wgmma_accumulations(1), 16);
    }

    /// A full H100 SXM at 1.83 GHz doing wgmma bf16: the count x clock reproduces its peak.
    #[test]
    fn wgmma_count_matches_hopper_peak_at_one_instruction_per_128_clocks() {
        // One m64n256k16 per warpgroup-slot per 128 clocks keeps an SM's tensor cores busy
        // (4096 FLOP/clk/SM); 132 SMs x 4096 x 1.83e9 = 989 TFLOP/s.
        let per_sm_per_clk = MmaShape::M64N256K16.flops() / 128.0;
        assert_eq!(per_sm_per_clk, 4096.0);
        let peak = 132.0 * per_sm_per_clk * 1.83e9;
        assert!((peak / 989.4e12 - 1.0).abs() < 1e-3, "{peak}");
    }

    /// `dmma.cu` counts each m16n8k16 on f64 as 2 x 16 x 8 x 16 FLOP, the same shape as the
    /// FP16 one: a full H100 SXM issuing one per SM every 16 clocks at its 1980 MHz FP64 clock
    /// does the datasheet's 67 TFLOP/s of FP64 tensor work.
    #[test]
    fn dmma_count_matches_hopper_fp64_tensor_peak() {
        let per_sm_per_clk = MmaShape::M16N8K16.flops() / 16.0;
        assert_eq!(
            Some(per_sm_per_clk),
            Arch::Hopper.flop_per_clock_per_sm(Precision::Fp64Tensor)
        );
        let peak = 132.0 * per_sm_per_clk * 1.98e9;
        assert!((peak / 67e12 - 1.0).abs() < 0.01, "{peak}");
        // One launch of 132 blocks, one iteration: 8 warps x 8 accumulators x 16 steps each.
        assert_eq!(
            mma_launch_flops(132, 1, MmaShape::M16N8K16),
            132.0 * 1024.0 * 4096.0
        );
        // Four times the m8n8k4's work per instruction.
        assert_eq!(MmaShape::M16N8K16.flops(), 8.0 * MmaShape::M8N8K4.flops());
    }

    /// Issue 18, item 5: the library rows' shapes.
    #[test]
    fn issue_18_library_shapes() {
        let (sq, tr) = (GemmShape::SQUARE_8192, GemmShape::TRAINING);
        assert_eq!(sq.flops(), 2.0 * 8192f64.powi(3));
        assert_eq!(tr.flops(), 2.0 * 8192.0 * 8192.0 * 2048.0);
        assert_eq!(
            (sq.label(), tr.label()),
            ("8192^3".into(), "8192x8192x2048".into())
        );
        // BF16 in and out: 3 x 128 MiB; FP8 in, BF16 out for the training shape.
        assert_eq!(sq.bytes(2, 2), 3 * (128 << 20));
        assert_eq!(tr.bytes(1, 2), 2 * (16 << 20) + (128 << 20));
        // An H100's BF16 (~1 PFLOP/s): both fixed shapes.
        assert_eq!(library_shapes(989e12, 0.0125, false, true), vec![sq, tr]);
        // The agent's quick run: 8192^3 only.
        assert_eq!(library_shapes(989e12, 0.003, true, true), vec![sq]);
        // FP32 and FP64 GEMMs have no training row.
        assert_eq!(library_shapes(60e12, 0.0125, false, false), vec![sq]);
        // FP64 on an L4 (~0.5 TFLOP/s): 8192^3 would take 2 s a call; a square sized to the
        // plan instead.
        let l4 = library_shapes(0.5e12, 0.0125, false, true);
        assert_eq!(l4, vec![GemmShape::square(gemm_size(0.5e12, 0.0125))]);
        assert!(l4[0].flops() / 0.5e12 <= MAX_CALL_S);
    }

    #[test]
    fn gemm_and_memory() {
        assert_eq!(gemm_flops(8192, 8192, 8192), 2.0 * 8192f64.powi(3));
        assert_eq!(memory_bytes(MemTraffic::Read, 100), 100.0);
        assert_eq!(memory_bytes(MemTraffic::Write, 100), 100.0);
        assert_eq!(memory_bytes(MemTraffic::Copy, 100), 200.0);
        assert_eq!(memory_bytes(MemTraffic::Triad, 100), 300.0);
    }

    #[test]
    fn rates_and_medians() {
        assert_eq!(rate(1e12, 0.5), 2e12);
        assert_eq!(rate(1.0, 0.0), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    /// Issue 18, item 4: the sustained mode's median and spread.
    #[test]
    fn issue_18_spreads() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        let s = spread(&v).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (5.5, 1.0, 10.0, 10));
        assert!(
            (s.p10 - 1.9).abs() < 1e-12 && (s.p90 - 9.1).abs() < 1e-12,
            "{s:?}"
        );
        assert!((s.relative() - 7.2 / 5.5).abs() < 1e-12);
        // Order does not matter; one value is its own spread.
        let mut r = v.clone();
        r.reverse();
        assert_eq!(spread(&r), Some(s));
        let one = spread(&[3.0]).unwrap();
        assert_eq!(
            (one.p10, one.median, one.p90, one.relative()),
            (3.0, 3.0, 3.0, 0.0)
        );
        // A steady row whose slowest 15% of launches are 1% slower: a 1% spread.
        let mut steady = vec![100.0; 17];
        steady.extend([99.0, 99.0, 99.0]);
        let s = spread(&steady).unwrap();
        assert_eq!((s.median, s.p10, s.p90), (100.0, 99.0, 100.0));
        assert!((s.relative() - 0.01).abs() < 1e-12, "{s:?}");
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn scaling() {
        assert_eq!(scale_to(10, 0.001, 0.02, 1_000_000), 200);
        assert_eq!(scale_to(10, 1.0, 0.02, 1_000_000), 1);
        assert_eq!(scale_to(10, 0.0, 0.02, 1_000_000), 10);
        assert_eq!(scale_to(10, 1e-9, 1.0, 5000), 5000);
        // 1 PFLOP/s for 20 ms: cbrt(1e13) = 21544 -> capped at 16384.
        assert_eq!(gemm_size(1e15, 0.02), 16384);
        // 0.5 TFLOP/s for 20 ms: cbrt(5e9) = 1710 -> 1792.
        assert_eq!(gemm_size(0.5e12, 0.02), 1792);
        assert_eq!(gemm_size(1e9, 0.02), 1024);
        assert_eq!(gemm_size(f64::NAN, 0.02), 1024);
    }
}
