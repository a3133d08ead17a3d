//! What each GPU delivers, as the agent knows it: benchmarks measured by `gpucost bench`'s kernels
//! (at start and every `bench.interval`, only on a GPU nobody uses), or on a simulated node the
//! scenario's figures. Pure: results in, expectations out.

use gpucost_hw::peaks::{lookup, Precision};

/// One GPU's latest benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuBenchmark {
    /// (precision, method, FLOP/s).
    pub flops: Vec<(Precision, &'static str, f64)>,
    /// (memory op, bytes/s).
    pub memory: Vec<(&'static str, f64)>,
    /// Unix seconds.
    pub taken_at: f64,
    pub simulated: bool,
}

/// The precision whose measurement decides "below expectation": the FP32 FMA loop reaches
/// 95% or more of the clock-normalized peak on a healthy GPU, so a shortfall is the GPU, not the
/// kernel (tensor-core kernels' share of peak varies by architecture).
pub const HEALTH_PRECISION: Precision = Precision::Fp32;

/// A simulated node's benchmark: the datasheet peaks times the scenario's efficiency.
pub fn simulated(model: &str, efficiency: f64, taken_at: f64) -> Option<GpuBenchmark> {
    let spec = lookup(model)?;
    let flops = Precision::ALL
        .into_iter()
        .filter_map(|p| spec.peak(p).map(|peak| (p, "kernel", peak * efficiency)))
        .collect();
    let bw = spec.mem_bandwidth_bytes_per_s * efficiency;
    Some(GpuBenchmark {
        flops,
        memory: vec![("copy", bw), ("triad", bw)],
        taken_at,
        simulated: true,
    })
}

/// Per precision, the best measured rate (any method).
pub fn best(b: &GpuBenchmark) -> Vec<(Precision, f64)> {
    Precision::ALL
        .into_iter()
        .filter_map(|p| {
            b.flops
                .iter()
                .filter(|(q, _, _)| *q == p)
                .map(|(_, _, f)| *f)
                .reduce(f64::max)
                .map(|f| (p, f))
        })
        .collect()
}

/// Per precision, the rate a job is delivered, for the mixed-precision speedup (issue 18,
/// item 5): where FP32 was measured by the library (its GEMMs are what frameworks run), each
/// precision's library rate (its best rate where the library did not measure it); else, with
/// nothing delivered to compare against, the best rate of each, as [`best`].
pub fn delivered(b: &GpuBenchmark) -> Vec<(Precision, f64)> {
    let library = |p: Precision| {
        b.flops
            .iter()
            .filter(|(q, m, _)| *q == p && *m == "library")
            .map(|(_, _, f)| *f)
            .reduce(f64::max)
    };
    if library(Precision::Fp32).is_none() {
        return best(b);
    }
    best(b)
        .into_iter()
        .map(|(p, f)| (p, library(p).unwrap_or(f)))
        .collect()
}

/// Per precision, the best measured rate over the datasheet peak.
pub fn ratios(model: &str, b: &GpuBenchmark) -> Vec<(Precision, f64)> {
    let Some(spec) = lookup(model) else {
        return Vec::new();
    };
    Precision::ALL
        .into_iter()
        .filter_map(|p| {
            let peak = spec.peak(p)?;
            let best = b
                .flops
                .iter()
                .filter(|(q, _, _)| *q == p)
                .map(|(_, _, f)| *f)
                .reduce(f64::max)?;
            Some((p, best / peak))
        })
        .collect()
}

/// Whether the GPU measured below `min_ratio` of what it should deliver.
pub fn below_expectation(ratios: &[(Precision, f64)], min_ratio: f64) -> bool {
    ratios
        .iter()
        .any(|(p, r)| *p == HEALTH_PRECISION && *r < min_ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H100: &str = "NVIDIA H100 80GB HBM3";

    #[test]
    fn simulated_benchmarks_follow_the_datasheet() {
        let b = simulated(H100, 0.9, 1.0).unwrap();
        let r = ratios(H100, &b);
        assert_eq!(r.len(), b.flops.len());
        assert!(r.iter().all(|(_, x)| (x - 0.9).abs() < 1e-12));
        assert!(!below_expectation(&r, 0.85));
        let slow = simulated(H100, 0.5, 1.0).unwrap();
        assert!(below_expectation(&ratios(H100, &slow), 0.85));
        assert!(simulated("Unknown GPU", 0.9, 1.0).is_none());
    }

    /// Issue 18, item 5: the speedup compares what the libraries deliver, not our kernels'
    /// ceilings, wherever FP32 has a library rate.
    #[test]
    fn issue_18_delivered_rates_prefer_the_library() {
        let mut b = GpuBenchmark {
            flops: vec![
                (Precision::Bf16, "kernel", 9e14),
                (Precision::Bf16, "library", 7e14),
                (Precision::Fp32, "kernel", 6.5e13),
                (Precision::Fp8, "kernel", 1.5e15),
            ],
            memory: vec![],
            taken_at: 0.0,
            simulated: false,
        };
        // No FP32 library rate: nothing delivered to compare against; the best rates.
        assert_eq!(delivered(&b), best(&b));
        b.flops.push((Precision::Fp32, "library", 5e13));
        let d = delivered(&b);
        let get = |p| d.iter().find(|(q, _)| *q == p).map(|(_, f)| *f);
        assert_eq!(get(Precision::Bf16), Some(7e14));
        assert_eq!(get(Precision::Fp32), Some(5e13));
        // FP8 has no library rate: its kernel's stands.
        assert_eq!(get(Precision::Fp8), Some(1.5e15));
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn the_best_method_counts() {
        let b = GpuBenchmark {
            flops: vec![
                (Precision::Bf16, "kernel", 5e14),
                (Precision::Bf16, "library", 7e14),
                (Precision::Fp32, "kernel", 6.5e13),
            ],
            memory: vec![],
            taken_at: 0.0,
            simulated: false,
        };
        let r = ratios(H100, &b);
        let bf16 = r.iter().find(|(p, _)| *p == Precision::Bf16).unwrap().1;
        assert!((bf16 - 7e14 / 989.5e12).abs() < 1e-3, "{bf16}");
        assert_eq!(r.len(), 2);
    }
}
