//! Peak compute rates: the datasheet table, per-SM per-clock rates, clock-normalized peaks.
//!
//! Every figure is DENSE (no 2:4 structured sparsity). NVIDIA datasheets print most tensor
//! figures with sparsity (marked with an asterisk); the table holds half of those, written as
//! `sparse(x)` so each entry can be read against its datasheet.
//!
//! Two kinds of peak:
//! - the datasheet peak ([`GpuSpec::peak`]): what NVIDIA publishes, at the clock it assumes;
//! - the clock-normalized peak ([`clock_normalized_peak`]): SMs x FLOP/clk/SM x the SM clock
//!   the GPU actually ran at. Dividing achieved FLOP/s by it separates "the kernel is slow" from
//!   "the GPU was throttled".
//!
//! On Hopper and Blackwell the published TF32/FP16/BF16/FP8/INT8 figures assume a lower SM
//! clock than the FP64/FP32 ones (the H100 whitepaper lists 1830 MHz for tensor work on the SXM5
//! part against a 1980 MHz boost clock); [`GpuSpec::tensor_clock_mhz`] records it.
//!
//! Units: FLOP/s (OP/s for [`Precision::Int8`]), Hz or MHz as named, bytes/s.

use std::fmt;
use std::str::FromStr;

/// A numeric format together with the hardware path that runs it.
///
/// `Fp64` and `Fp32` are the SIMT (CUDA core) FMA paths; `Fp64Tensor` is the FP64 tensor-core
/// (DMMA) path; `Tf32`, `Fp16`, `Bf16`, `Fp8` and `Int8` are tensor-core MMA paths (FP32
/// accumulate for the floating-point ones, INT32 for INT8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Precision {
    Fp64,
    Fp64Tensor,
    Fp32,
    Tf32,
    Fp16,
    Bf16,
    Fp8,
    Int8,
}

impl Precision {
    /// Every precision, in declaration order.
    pub const ALL: [Precision; 8] = [
        Precision::Fp64,
        Precision::Fp64Tensor,
        Precision::Fp32,
        Precision::Tf32,
        Precision::Fp16,
        Precision::Bf16,
        Precision::Fp8,
        Precision::Int8,
    ];

    /// Stable lower-case name used in metrics labels, config and JSON (e.g. `"fp64_tensor"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp64 => "fp64",
            Precision::Fp64Tensor => "fp64_tensor",
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
            Precision::Fp8 => "fp8",
            Precision::Int8 => "int8",
        }
    }

    /// True for the low-precision tensor paths whose datasheet figures assume
    /// [`GpuSpec::tensor_clock_mhz`] rather than [`GpuSpec::boost_clock_mhz`].
    pub fn is_low_precision_tensor(self) -> bool {
        matches!(
            self,
            Precision::Tf32 | Precision::Fp16 | Precision::Bf16 | Precision::Fp8 | Precision::Int8
        )
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A precision name that [`Precision::from_str`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision {0:?} (expected one of fp64, fp64_tensor, fp32, tf32, fp16, bf16, fp8, int8)")]
pub struct ParsePrecisionError(pub String);

impl FromStr for Precision {
    type Err = ParsePrecisionError;

    /// Parses the [`Precision::as_str`] names, ignoring case and accepting `-` for `_`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Precision::ALL
            .into_iter()
            .find(|p| p.as_str() == norm)
            .ok_or_else(|| ParsePrecisionError(s.to_string()))
    }
}

/// GPU architecture, at the granularity where per-SM throughput differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Ampere GA100 (A100, A30), compute capability 8.0.
    AmpereGa100,
    /// Ampere GA10x (A10, A40, RTX A6000), compute capability 8.6.
    AmpereGa10x,
    /// Ada Lovelace (L4, L40, L40S), compute capability 8.9.
    Ada,
    /// Hopper GH100 (H100, H200, GH200), compute capability 9.0.
    Hopper,
    /// Blackwell GB100 (B200), compute capability 10.0.
    Blackwell,
    /// Blackwell GB20x (RTX 50 series, RTX PRO Blackwell), compute capability 12.0: a
    /// different SM from GB100 (no FP64 tensor cores, FP64 at 1/64 of FP32).
    BlackwellGb20x,
}

impl Arch {
    /// The architecture for a CUDA compute capability `(major, minor)`; `None` where this crate
    /// has no per-SM rates (including sm_103 Blackwell Ultra, whose rates differ, and sm_121).
    pub fn from_compute_capability(cc: (u32, u32)) -> Option<Arch> {
        match cc {
            (8, 0) => Some(Arch::AmpereGa100),
            (8, 6) => Some(Arch::AmpereGa10x),
            (8, 9) => Some(Arch::Ada),
            (9, 0) => Some(Arch::Hopper),
            (10, 0) => Some(Arch::Blackwell),
            (12, 0) => Some(Arch::BlackwellGb20x),
            _ => None,
        }
    }

    /// The compute capability `(major, minor)` of this architecture.
    pub fn compute_capability(self) -> (u32, u32) {
        match self {
            Arch::AmpereGa100 => (8, 0),
            Arch::AmpereGa10x => (8, 6),
            Arch::Ada => (8, 9),
            Arch::Hopper => (9, 0),
            Arch::Blackwell => (10, 0),
            Arch::BlackwellGb20x => (12, 0),
        }
    }

    /// Dense FLOP (OP for INT8) per clock per SM on `precision`'s path; `None` where the
    /// architecture has no such path (FP8 before Ada, FP64 tensor cores outside GA100/Hopper/
    /// Blackwell).
    pub fn flop_per_clock_per_sm(self, precision: Precision) -> Option<f64> {
        // An FMA counts as 2 FLOP; 0 = no such path. Columns follow `Precision::ALL`:
        // [fp64, fp64_tensor, fp32, tf32, fp16, bf16, fp8, int8]
        let rates: [u32; 8] = match self {
            // 32 FP64 + 64 FP32 FMA units per SM; 4 tensor cores x 256 FP16 FMA/clk
            // (TF32 at half, INT8 at twice that), FP64 DMMA at 2x the FP64 FMA rate.
            Arch::AmpereGa100 => [64, 128, 128, 1024, 2048, 2048, 0, 4096],
            // 2 FP64 units (1/64 of FP32) + 128 FP32 lanes per SM; 4 tensor cores x 128 FP16
            // FMA/clk. No FP64 tensor path, no FP8.
            Arch::AmpereGa10x => [4, 0, 256, 512, 1024, 1024, 0, 2048],
            // As GA10x, plus FP8 at twice the FP16 rate.
            Arch::Ada => [4, 0, 256, 512, 1024, 1024, 2048, 2048],
            // 64 FP64 + 128 FP32 FMA units per SM; tensor cores twice GA100 clock-for-clock
            // (4 x 512 FP16 FMA/clk), FP8 twice FP16.
            Arch::Hopper => [128, 256, 256, 2048, 4096, 4096, 8192, 8192],
            // Tensor cores twice Hopper per SM; FP64 tensor no faster than FP64 FMA.
            Arch::Blackwell => [128, 128, 256, 4096, 8192, 8192, 16384, 16384],
            // 128 FP32 lanes, FP64 at 1/64; tensor cores as Ada per clock for FP16/BF16 with
            // FP16 accumulate (RTX 5090: 170 SMs x 1024 x 2407 MHz = 419 TFLOP/s dense, the
            // GeForce RTX Blackwell whitepaper's FP16 figure). No FP64 tensor path.
            Arch::BlackwellGb20x => [4, 0, 256, 512, 1024, 1024, 2048, 2048],
        };
        let r = rates[precision as usize];
        (r != 0).then_some(f64::from(r))
    }

    /// FP32 lanes (NVML's "CUDA cores") per SM: half the FP32 FLOP per clock per SM.
    pub fn fp32_lanes_per_sm(self) -> u32 {
        // Every architecture here has an FP32 path.
        self.flop_per_clock_per_sm(Precision::Fp32)
            .map_or(0, |r| r as u32 / 2)
    }

    /// The SMs of a GPU that NVML says has `cuda_cores` (`nvmlDeviceGetNumGpuCores`: FP32
    /// lanes): `None` unless they divide into whole SMs of this architecture.
    pub fn sms_of_cuda_cores(self, cuda_cores: u32) -> Option<u32> {
        let lanes = self.fp32_lanes_per_sm();
        (lanes > 0 && cuda_cores > 0 && cuda_cores % lanes == 0).then(|| cuda_cores / lanes)
    }
}

/// FLOP (OP for INT8) per clock per SM that a product, by its NVML name, runs `precision` at on
/// architecture `arch`: the architecture's rate, halved for the FP32-accumulate tensor paths of
/// GeForce parts (see [`estimate_peak`]). `None` where the architecture has no such path.
pub fn product_flop_per_clock_per_sm(
    nvml_name: &str,
    arch: Arch,
    precision: Precision,
) -> Option<f64> {
    let rate = arch.flop_per_clock_per_sm(precision)?;
    let halved = is_geforce(nvml_name)
        && matches!(
            precision,
            Precision::Tf32 | Precision::Fp16 | Precision::Bf16 | Precision::Fp8
        );
    Some(if halved { rate / 2.0 } else { rate })
}

/// What `sm_count` SMs of the GPU named `nvml_name` (architecture `arch`) do on `precision` at
/// SM clock `sm_clock_hz`, FLOP/s (OP/s for INT8): SMs x the product's FLOP/clk/SM
/// ([`product_flop_per_clock_per_sm`]) x clock. For a path the datasheet table marks capped
/// (H800's FP64, the H20) it is the datasheet figure scaled by the SMs and the clock instead,
/// since the architecture's rate would overstate it. Pass the SMs the work had: a MIG
/// instance's own.
pub fn sm_peak(
    nvml_name: &str,
    arch: Arch,
    precision: Precision,
    sm_count: u32,
    sm_clock_hz: f64,
) -> Option<f64> {
    if let Some(spec) =
        lookup(nvml_name).filter(|s| s.arch == arch && s.capped.contains(&precision))
    {
        let sms = f64::from(sm_count) / f64::from(spec.sm_count.max(1));
        return spec
            .peak(precision)
            .map(|p| p * sms * sm_clock_hz / spec.datasheet_clock_hz(precision));
    }
    let rate = product_flop_per_clock_per_sm(nvml_name, arch, precision)?;
    Some(f64::from(sm_count) * rate * sm_clock_hz)
}

impl From<&GpuSpec> for Arch {
    fn from(spec: &GpuSpec) -> Arch {
        spec.arch
    }
}

/// Dense peak rate per precision, FLOP/s (OP/s for INT8); `None` where the GPU has no such path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peaks {
    pub fp64: Option<f64>,
    pub fp64_tensor: Option<f64>,
    pub fp32: Option<f64>,
    pub tf32: Option<f64>,
    pub fp16: Option<f64>,
    pub bf16: Option<f64>,
    pub fp8: Option<f64>,
    pub int8: Option<f64>,
}

impl Peaks {
    /// The peak for `precision`, FLOP/s (OP/s for INT8).
    pub fn get(&self, precision: Precision) -> Option<f64> {
        match precision {
            Precision::Fp64 => self.fp64,
            Precision::Fp64Tensor => self.fp64_tensor,
            Precision::Fp32 => self.fp32,
            Precision::Tf32 => self.tf32,
            Precision::Fp16 => self.fp16,
            Precision::Bf16 => self.bf16,
            Precision::Fp8 => self.fp8,
            Precision::Int8 => self.int8,
        }
    }
}

/// One GPU model as its datasheet describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSpec {
    /// Short human name, e.g. `"H100 SXM5 80GB"`.
    pub name: &'static str,
    /// NVML product names this entry matches (see [`lookup`] for how).
    pub nvml_names: &'static [&'static str],
    pub arch: Arch,
    /// Streaming multiprocessors enabled on this product.
    pub sm_count: u32,
    /// Boost SM clock, MHz, that the FP64/FP32 datasheet figures assume.
    pub boost_clock_mhz: u32,
    /// SM clock, MHz, that the TF32/FP16/BF16/FP8/INT8 tensor figures assume: equal to
    /// `boost_clock_mhz` before Hopper, lower from Hopper on.
    pub tensor_clock_mhz: u32,
    /// Peak DRAM (HBM/GDDR) bandwidth, bytes/s.
    pub mem_bandwidth_bytes_per_s: f64,
    /// Dense datasheet peaks.
    pub peaks: Peaks,
    /// Paths this product runs below its architecture's per-SM rate (the export-control
    /// Hopper parts: H800's FP64, every path of the H20). For these the datasheet figure,
    /// scaled by the clock, is the clock-normalized peak; SMs x rate x clock would overstate it.
    pub capped: &'static [Precision],
}

impl GpuSpec {
    /// Dense datasheet peak for `precision`, FLOP/s (OP/s for INT8).
    pub fn peak(&self, precision: Precision) -> Option<f64> {
        self.peaks.get(precision)
    }

    /// The SM clock, Hz, that the datasheet peak for `precision` assumes.
    pub fn datasheet_clock_hz(&self, precision: Precision) -> f64 {
        let mhz = if precision.is_low_precision_tensor() {
            self.tensor_clock_mhz
        } else {
            self.boost_clock_mhz
        };
        f64::from(mhz) * 1e6
    }

    /// What this GPU (all its SMs) can do on `precision` at SM clock `sm_clock_hz`, FLOP/s.
    pub fn clock_normalized_peak(&self, precision: Precision, sm_clock_hz: f64) -> Option<f64> {
        if self.capped.contains(&precision) {
            return self
                .peak(precision)
                .map(|p| p * sm_clock_hz / self.datasheet_clock_hz(precision));
        }
        clock_normalized_peak(self, precision, self.sm_count, sm_clock_hz)
    }
}

/// What `sm_count` SMs of an architecture can do on `precision` at SM clock `sm_clock_hz`:
/// SMs x FLOP/clk/SM x clock, FLOP/s (OP/s for INT8). Pass the SM count the work actually had
/// (a MIG slice has fewer SMs than the whole GPU). `None` where the architecture has no such
/// path.
pub fn clock_normalized_peak(
    arch: impl Into<Arch>,
    precision: Precision,
    sm_count: u32,
    sm_clock_hz: f64,
) -> Option<f64> {
    let rate = arch.into().flop_per_clock_per_sm(precision)?;
    Some(f64::from(sm_count) * rate * sm_clock_hz)
}

/// Peak estimate, FLOP/s (OP/s for INT8), for a GPU the table does not know, from its NVML
/// product name, compute capability, SM count and maximum SM clock (MHz, as NVML reports it).
/// It assumes the tensor paths run at the maximum clock, so on Hopper and Blackwell it sits
/// 5-10% above the figure NVIDIA would publish. GeForce parts (see [`is_geforce`]) run the
/// tensor paths with FP32 accumulate (TF32, FP16, BF16, FP8: what the kernels and a training
/// job use) at half the rate of the professional part with the same SM: the RTX 4090 does 165
/// TFLOP/s of FP16 with FP32 accumulate, not the 330 of FP16 accumulate (Ada whitepaper,
/// appendix table; RTX 3090: 71 of 142 in the Ampere GA102 whitepaper); INT8 is not halved.
/// `None` for an unknown architecture or a path it lacks.
pub fn estimate_peak(
    nvml_name: &str,
    compute_capability: (u32, u32),
    sm_count: u32,
    max_sm_clock_mhz: u32,
    precision: Precision,
) -> Option<f64> {
    let arch = Arch::from_compute_capability(compute_capability)?;
    let rate = product_flop_per_clock_per_sm(nvml_name, arch, precision)?;
    Some(f64::from(sm_count) * rate * f64::from(max_sm_clock_mhz) * 1e6)
}

/// A consumer (GeForce or TITAN) part, by its NVML product name, e.g. "NVIDIA GeForce RTX 4090".
pub fn is_geforce(nvml_name: &str) -> bool {
    tokens(nvml_name).any(|t| t == "geforce" || t == "titan")
}

/// The table entry for an NVML product name (`nvmlDeviceGetName`), or `None`.
///
/// Names are compared as sets of tokens (split on anything not a letter or digit, case-folded,
/// the vendor word "nvidia" dropped): an entry matches when all tokens of one of its
/// `nvml_names` occur in the name, and the match with the most tokens wins. Whole tokens keep
/// "L40S" from matching "L4" and "A100" from matching "A10"; most-tokens-wins sends
/// "NVIDIA H200 NVL" to the NVL entry rather than the H200 SXM one.
pub fn lookup(nvml_name: &str) -> Option<&'static GpuSpec> {
    let name: Vec<String> = tokens(nvml_name).collect();
    let mut best: Option<(usize, &'static GpuSpec)> = None;
    for spec in GPUS {
        for pattern in spec.nvml_names {
            let pat: Vec<String> = tokens(pattern).collect();
            let matches = !pat.is_empty() && pat.iter().all(|t| name.contains(t));
            if matches && best.is_none_or(|(n, _)| pat.len() > n) {
                best = Some((pat.len(), spec));
            }
        }
    }
    best.map(|(_, spec)| spec)
}

fn tokens(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .filter(|t| t != "nvidia")
}

const T: f64 = 1e12;

/// A dense datasheet figure in TFLOP/s (TOPS).
const fn dense(tflops: f64) -> Option<f64> {
    Some(tflops * T)
}

/// A datasheet figure printed with sparsity (the asterisked ones), TFLOP/s: stored as half.
const fn sparse(tflops: f64) -> Option<f64> {
    Some(tflops / 2.0 * T)
}

// NVIDIA A100 Tensor Core GPU datasheet (same for SXM4 and PCIe, 40 and 80 GB).
const A100: Peaks = Peaks {
    fp64: dense(9.7),
    fp64_tensor: dense(19.5),
    fp32: dense(19.5),
    tf32: sparse(312.0),
    fp16: sparse(624.0),
    bf16: sparse(624.0),
    fp8: None,
    int8: sparse(1248.0),
};

// NVIDIA H100 Tensor Core GPU datasheet, SXM column; the H200 and GH200 datasheets print the
// same compute figures.
const H100_SXM: Peaks = Peaks {
    fp64: dense(34.0),
    fp64_tensor: dense(67.0),
    fp32: dense(67.0),
    tf32: sparse(989.0),
    fp16: sparse(1979.0),
    bf16: sparse(1979.0),
    fp8: sparse(3958.0),
    int8: sparse(3958.0),
};

// NVIDIA H100 Tensor Core GPU datasheet, NVL column (per GPU); the H200 NVL column matches.
const H100_NVL: Peaks = Peaks {
    fp64: dense(30.0),
    fp64_tensor: dense(60.0),
    fp32: dense(60.0),
    tf32: sparse(835.0),
    fp16: sparse(1671.0),
    bf16: sparse(1671.0),
    fp8: sparse(3341.0),
    int8: sparse(3341.0),
};

/// The built-in datasheet table.
pub static GPUS: &[GpuSpec] = &[
    // NVIDIA A100 Tensor Core GPU datasheet; NVIDIA A100 Tensor Core GPU Architecture
    // whitepaper (108 SMs, 1410 MHz).
    GpuSpec {
        name: "A100 SXM4 40GB",
        nvml_names: &["NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM-40GB"],
        arch: Arch::AmpereGa100,
        sm_count: 108,
        boost_clock_mhz: 1410,
        tensor_clock_mhz: 1410,
        mem_bandwidth_bytes_per_s: 1555e9,
        peaks: A100,
        capped: &[],
    },
    // NVIDIA A100 Tensor Core GPU datasheet (80GB SXM column).
    GpuSpec {
        name: "A100 SXM4 80GB",
        nvml_names: &["NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM-80GB"],
        arch: Arch::AmpereGa100,
        sm_count: 108,
        boost_clock_mhz: 1410,
        tensor_clock_mhz: 1410,
        mem_bandwidth_bytes_per_s: 2039e9,
        peaks: A100,
        capped: &[],
    },
    // NVIDIA A100 Tensor Core GPU datasheet (40GB PCIe).
    GpuSpec {
        name: "A100 PCIe 40GB",
        nvml_names: &["NVIDIA A100-PCIE-40GB"],
        arch: Arch::AmpereGa100,
        sm_count: 108,
        boost_clock_mhz: 1410,
        tensor_clock_mhz: 1410,
        mem_bandwidth_bytes_per_s: 1555e9,
        peaks: A100,
        capped: &[],
    },
    // NVIDIA A100 Tensor Core GPU datasheet (80GB PCIe column).
    GpuSpec {
        name: "A100 PCIe 80GB",
        nvml_names: &["NVIDIA A100 80GB PCIe", "NVIDIA A100-PCIE-80GB"],
        arch: Arch::AmpereGa100,
        sm_count: 108,
        boost_clock_mhz: 1410,
        tensor_clock_mhz: 1410,
        mem_bandwidth_bytes_per_s: 1935e9,
        peaks: A100,
        capped: &[],
    },
    // NVIDIA H100 Tensor Core GPU datasheet (SXM column); NVIDIA H100 Tensor Core GPU
    // Architecture whitepaper (132 SMs, 1980 MHz boost, 1830 MHz for tensor figures).
    GpuSpec {
        name: "H100 SXM5 80GB",
        nvml_names: &["NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB"],
        arch: Arch::Hopper,
        sm_count: 132,
        boost_clock_mhz: 1980,
        tensor_clock_mhz: 1830,
        mem_bandwidth_bytes_per_s: 3.35e12,
        peaks: H100_SXM,
        capped: &[],
    },
    // NVIDIA H100 Tensor Core GPU datasheet (PCIe column, 80GB HBM2e); H100 whitepaper
    // (114 SMs, 1755 MHz boost, 1620 MHz for tensor figures).
    GpuSpec {
        name: "H100 PCIe 80GB",
        nvml_names: &["NVIDIA H100 PCIe"],
        arch: Arch::Hopper,
        sm_count: 114,
        boost_clock_mhz: 1755,
        tensor_clock_mhz: 1620,
        mem_bandwidth_bytes_per_s: 2.0e12,
        peaks: Peaks {
            fp64: dense(26.0),
            fp64_tensor: dense(51.0),
            fp32: dense(51.0),
            tf32: sparse(756.0),
            fp16: sparse(1513.0),
            bf16: sparse(1513.0),
            fp8: sparse(3026.0),
            int8: sparse(3026.0),
        },
        capped: &[],
    },
    // NVIDIA H100 Tensor Core GPU datasheet (NVL column, per GPU, 94GB). 132 SMs at a
    // 1785 MHz boost; the tensor clock is derived from the datasheet figures.
    GpuSpec {
        name: "H100 NVL 94GB",
        nvml_names: &["NVIDIA H100 NVL"],
        arch: Arch::Hopper,
        sm_count: 132,
        boost_clock_mhz: 1785,
        tensor_clock_mhz: 1545,
        mem_bandwidth_bytes_per_s: 3.9e12,
        peaks: H100_NVL,
        capped: &[],
    },
    // NVIDIA H200 Tensor Core GPU datasheet (SXM column, 141GB HBM3e); GH100 as in H100 SXM5.
    GpuSpec {
        name: "H200 SXM 141GB",
        nvml_names: &["NVIDIA H200"],
        arch: Arch::Hopper,
        sm_count: 132,
        boost_clock_mhz: 1980,
        tensor_clock_mhz: 1830,
        mem_bandwidth_bytes_per_s: 4.8e12,
        peaks: H100_SXM,
        capped: &[],
    },
    // NVIDIA H200 Tensor Core GPU datasheet (NVL column). Listed so that "NVIDIA H200 NVL" is
    // not taken for the SXM part.
    GpuSpec {
        name: "H200 NVL 141GB",
        nvml_names: &["NVIDIA H200 NVL"],
        arch: Arch::Hopper,
        sm_count: 132,
        boost_clock_mhz: 1785,
        tensor_clock_mhz: 1545,
        mem_bandwidth_bytes_per_s: 4.8e12,
        peaks: H100_NVL,
        capped: &[],
    },
    // NVIDIA GH200 Grace Hopper Superchip datasheet (96GB HBM3 GPU memory version).
    GpuSpec {
        name: "GH200 96GB HBM3",
        nvml_names: &["NVIDIA GH200 480GB"],
        arch: Arch::Hopper,
        sm_count: 132,
        boost_clock_mhz: 1980,
        tensor_clock_mhz: 1830,
        mem_bandwidth_bytes_per_s: 4.0e12,
        peaks: H100_SXM,
        capped: &[],
    },
    // NVIDIA GH200 Grace Hopper Superchip datasheet (144GB HBM3e version).
    GpuSpec {
        name: "GH200 144GB HBM3e",
        nvml_names: &["NVIDIA GH200 144G HBM3e"],
        arch: Arch::Hopper,
        sm_count: 132,
        boost_clock_mhz: 1980,
        tensor_clock_mhz: 1830,
        mem_bandwidth_bytes_per_s: 4.9e12,
        peaks: H100_SXM,
        capped: &[],
    },
    // NVIDIA L40S GPU datasheet (142 SMs, 2520 MHz boost). FP64 is not on the datasheet:
    // derived at Ada's 1/64 FP32 rate. Dense BF16/FP16 is half the printed sparse 733 (the
    // datasheet's own dense column says 362.05, which SMs x rate x clock does not reproduce).
    GpuSpec {
        name: "L40S",
        nvml_names: &["NVIDIA L40S"],
        arch: Arch::Ada,
        sm_count: 142,
        boost_clock_mhz: 2520,
        tensor_clock_mhz: 2520,
        mem_bandwidth_bytes_per_s: 864e9,
        peaks: Peaks {
            fp64: dense(1.43),
            fp64_tensor: None,
            fp32: dense(91.6),
            tf32: sparse(366.0),
            fp16: sparse(733.0),
            bf16: sparse(733.0),
            fp8: sparse(1466.0),
            int8: sparse(1466.0),
        },
        capped: &[],
    },
    // NVIDIA L4 Tensor Core GPU datasheet (58 SMs, 2040 MHz boost). FP64 derived (1/64 FP32).
    GpuSpec {
        name: "L4",
        nvml_names: &["NVIDIA L4"],
        arch: Arch::Ada,
        sm_count: 58,
        boost_clock_mhz: 2040,
        tensor_clock_mhz: 2040,
        mem_bandwidth_bytes_per_s: 300e9,
        peaks: Peaks {
            fp64: dense(0.47),
            fp64_tensor: None,
            fp32: dense(30.3),
            tf32: sparse(120.0),
            fp16: sparse(242.0),
            bf16: sparse(242.0),
            fp8: sparse(485.0),
            int8: sparse(485.0),
        },
        capped: &[],
    },
    // NVIDIA A10 Tensor Core GPU datasheet (72 SMs, 1695 MHz boost). FP64 is not on the
    // datasheet: derived at GA10x's 1/64 FP32 rate.
    GpuSpec {
        name: "A10",
        nvml_names: &["NVIDIA A10"],
        arch: Arch::AmpereGa10x,
        sm_count: 72,
        boost_clock_mhz: 1695,
        tensor_clock_mhz: 1695,
        mem_bandwidth_bytes_per_s: 600e9,
        peaks: Peaks {
            fp64: dense(0.49),
            fp64_tensor: None,
            fp32: dense(31.2),
            tf32: sparse(125.0),
            fp16: sparse(250.0),
            bf16: sparse(250.0),
            fp8: None,
            int8: sparse(500.0),
        },
        capped: &[],
    },
    // NVIDIA Blackwell datasheet (HGX B200 column, per GPU, 180GB HBM3e, 1000 W); 148 SMs.
    // Clocks are derived from the datasheet figures (FP32/FP64 ~1965 MHz, tensor ~1856 MHz).
    GpuSpec {
        name: "B200 180GB",
        nvml_names: &["NVIDIA B200"],
        arch: Arch::Blackwell,
        sm_count: 148,
        boost_clock_mhz: 1965,
        tensor_clock_mhz: 1856,
        mem_bandwidth_bytes_per_s: 7.7e12,
        peaks: Peaks {
            fp64: dense(37.0),
            fp64_tensor: dense(37.0),
            fp32: dense(75.0),
            tf32: sparse(2200.0),
            fp16: sparse(4500.0),
            bf16: sparse(4500.0),
            fp8: sparse(9000.0),
            int8: sparse(9000.0),
        },
        capped: &[],
    },
    // NVIDIA H800 Tensor Core GPU datasheet (SXM column): the H100 SXM5 with FP64 and FP64
    // tensor capped at 1 TFLOP/s; every other figure as the H100's.
    GpuSpec {
        name: "H800 SXM5 80GB",
        nvml_names: &["NVIDIA H800"],
        arch: Arch::Hopper,
        sm_count: 132,
        boost_clock_mhz: 1980,
        tensor_clock_mhz: 1830,
        mem_bandwidth_bytes_per_s: 3.35e12,
        peaks: Peaks {
            fp64: dense(1.0),
            fp64_tensor: dense(1.0),
            ..H100_SXM
        },
        capped: &[Precision::Fp64, Precision::Fp64Tensor],
    },
    // NVIDIA H800 Tensor Core GPU datasheet (PCIe column): the H100 PCIe with FP64 and FP64
    // tensor capped at 0.8 TFLOP/s.
    GpuSpec {
        name: "H800 PCIe 80GB",
        nvml_names: &["NVIDIA H800 PCIe"],
        arch: Arch::Hopper,
        sm_count: 114,
        boost_clock_mhz: 1755,
        tensor_clock_mhz: 1620,
        mem_bandwidth_bytes_per_s: 2.0e12,
        peaks: Peaks {
            fp64: dense(0.8),
            fp64_tensor: dense(0.8),
            fp32: dense(51.0),
            tf32: sparse(756.0),
            fp16: sparse(1513.0),
            bf16: sparse(1513.0),
            fp8: sparse(3026.0),
            int8: sparse(3026.0),
        },
        capped: &[Precision::Fp64, Precision::Fp64Tensor],
    },
    // NVIDIA H20 (96GB HBM3, 4.0 TB/s, 400 W): NVIDIA publishes no datasheet; these are the
    // dense figures of its product brief as the press reported them (FP8/INT8 296, BF16/FP16
    // 148, TF32 74, FP32 44, FP64 1 TFLOP/s). 78 SMs as its CUDA device query reports; every
    // path but FP32 runs far below Hopper's per-SM rate, so every path is taken as published
    // (capped), and the clock its figures assume as GH100's boost clock (not published).
    GpuSpec {
        name: "H20 96GB",
        nvml_names: &["NVIDIA H20"],
        arch: Arch::Hopper,
        sm_count: 78,
        boost_clock_mhz: 1980,
        tensor_clock_mhz: 1980,
        mem_bandwidth_bytes_per_s: 4.0e12,
        peaks: Peaks {
            fp64: dense(1.0),
            fp64_tensor: dense(1.0),
            fp32: dense(44.0),
            tf32: dense(74.0),
            fp16: dense(148.0),
            bf16: dense(148.0),
            fp8: dense(296.0),
            int8: dense(296.0),
        },
        capped: &Precision::ALL,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> &'static GpuSpec {
        GPUS.iter().find(|s| s.name == name).expect(name)
    }

    fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
        let rel = (got - want).abs() / want;
        assert!(
            rel <= tol,
            "{what}: got {got:.4e}, want {want:.4e} ({:.2}% off)",
            rel * 100.0
        );
    }

    #[test]
    fn lookup_real_nvml_names() {
        let cases = [
            ("NVIDIA A100-SXM4-40GB", "A100 SXM4 40GB"),
            ("NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB"),
            ("NVIDIA A100-PCIE-40GB", "A100 PCIe 40GB"),
            ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB"),
            ("NVIDIA H100 80GB HBM3", "H100 SXM5 80GB"),
            ("NVIDIA H100 PCIe", "H100 PCIe 80GB"),
            ("NVIDIA H100 NVL", "H100 NVL 94GB"),
            ("NVIDIA H200", "H200 SXM 141GB"),
            ("NVIDIA H200 NVL", "H200 NVL 141GB"),
            ("NVIDIA GH200 480GB", "GH200 96GB HBM3"),
            ("NVIDIA GH200 144G HBM3e", "GH200 144GB HBM3e"),
            ("NVIDIA L40S", "L40S"),
            ("NVIDIA L4", "L4"),
            ("NVIDIA A10", "A10"),
            ("NVIDIA B200", "B200 180GB"),
            // Case and spacing do not matter.
            ("nvidia  l40s", "L40S"),
            (" NVIDIA A100-SXM4-80GB ", "A100 SXM4 80GB"),
        ];
        for (nvml, want) in cases {
            let got = lookup(nvml).map(|s| s.name);
            assert_eq!(got, Some(want), "lookup({nvml:?})");
        }
    }

    #[test]
    fn lookup_does_not_confuse_prefixes() {
        // L40S is not an L4; A100 is not an A10 (and the reverse).
        assert_eq!(lookup("NVIDIA L40S").unwrap().name, "L40S");
        assert_eq!(lookup("NVIDIA L4").unwrap().name, "L4");
        assert_eq!(lookup("NVIDIA A10").unwrap().name, "A10");
        assert_ne!(lookup("NVIDIA A100-PCIE-40GB").unwrap().name, "A10");
        // Near names the table does not hold.
        for nvml in [
            "NVIDIA L40",
            "NVIDIA A10G",
            "NVIDIA A100",
            "NVIDIA H100",
            "NVIDIA GB200",
            "Tesla V100-SXM2-16GB",
            "NVIDIA",
            "",
        ] {
            assert_eq!(lookup(nvml).map(|s| s.name), None, "lookup({nvml:?})");
        }
    }

    #[test]
    fn every_pattern_finds_its_own_entry() {
        for s in GPUS {
            for nvml in s.nvml_names {
                assert_eq!(
                    lookup(nvml).map(|x| x.name),
                    Some(s.name),
                    "pattern {nvml:?}"
                );
            }
        }
    }

    #[test]
    fn table_invariants() {
        for (i, s) in GPUS.iter().enumerate() {
            assert!(
                GPUS[..i].iter().all(|o| o.name != s.name),
                "duplicate {}",
                s.name
            );
            assert!(!s.nvml_names.is_empty(), "{}", s.name);
            assert!(s.tensor_clock_mhz <= s.boost_clock_mhz, "{}", s.name);
            assert!(s.mem_bandwidth_bytes_per_s > 1e11, "{}", s.name);
            for p in Precision::ALL {
                if let Some(v) = s.peak(p) {
                    assert!(v.is_finite() && v > 0.0, "{} {p}", s.name);
                }
            }
        }
    }

    #[test]
    fn dense_not_sparse() {
        let t = 1e12;
        let cases = [
            ("H100 SXM5 80GB", Precision::Bf16, 989.0 * t),
            ("H100 SXM5 80GB", Precision::Fp16, 989.0 * t),
            ("H100 SXM5 80GB", Precision::Fp8, 1979.0 * t),
            ("H100 SXM5 80GB", Precision::Tf32, 494.0 * t),
            ("H100 SXM5 80GB", Precision::Fp32, 67.0 * t),
            ("H100 PCIe 80GB", Precision::Bf16, 756.0 * t),
            ("A100 SXM4 80GB", Precision::Bf16, 312.0 * t),
            ("A100 SXM4 80GB", Precision::Tf32, 156.0 * t),
            ("A100 SXM4 80GB", Precision::Fp32, 19.5 * t),
            ("A100 SXM4 80GB", Precision::Fp64, 9.7 * t),
            ("A100 PCIe 40GB", Precision::Int8, 624.0 * t),
            ("L40S", Precision::Bf16, 366.0 * t),
            ("L4", Precision::Fp8, 242.0 * t),
            ("A10", Precision::Bf16, 125.0 * t),
            ("B200 180GB", Precision::Bf16, 2250.0 * t),
            ("B200 180GB", Precision::Fp8, 4500.0 * t),
        ];
        for (name, p, want) in cases {
            let got = spec(name).peak(p).unwrap();
            assert_close(got, want, 0.005, &format!("{name} {p}"));
        }
        // Paths a GPU does not have.
        assert_eq!(spec("A100 SXM4 80GB").peak(Precision::Fp8), None);
        assert_eq!(spec("A10").peak(Precision::Fp8), None);
        assert_eq!(spec("L4").peak(Precision::Fp64Tensor), None);
    }

    /// SMs x per-SM rate x the clock the datasheet assumes must reproduce every datasheet
    /// figure, and a GPU has a datasheet figure exactly where its architecture has the path.
    /// 2.5%: datasheets round (B200 TF32 is printed as 2.2 PFLOP/s sparse where the same
    /// arithmetic that gives its exact BF16/FP8 figures yields 2.25).
    #[test]
    fn datasheet_matches_per_sm_rates() {
        for s in GPUS {
            for p in Precision::ALL {
                let rate = s.arch.flop_per_clock_per_sm(p);
                assert_eq!(
                    s.peak(p).is_some(),
                    rate.is_some(),
                    "{} {p}: path mismatch",
                    s.name
                );
                if let (Some(sheet), Some(rate)) = (s.peak(p), rate) {
                    let derived = f64::from(s.sm_count) * rate * s.datasheet_clock_hz(p);
                    if s.capped.contains(&p) {
                        // A capped path runs below the architecture's rate. The H20's FP32
                        // figure (44 TFLOP/s) is the exception that cannot be reconciled: 78
                        // SMs would need a 2.2 GHz clock for it, so it is taken as published.
                        let known = (s.name, p) == ("H20 96GB", Precision::Fp32);
                        assert!(derived > sheet * 1.1 || known, "{} {p}: not capped", s.name);
                    } else {
                        assert_close(derived, sheet, 0.025, &format!("{} {p}", s.name));
                    }
                }
            }
        }
    }

    #[test]
    fn clock_normalization_arithmetic() {
        let h100 = spec("H100 SXM5 80GB");
        // 132 SMs x 4096 FLOP/clk x 1.5 GHz.
        let got = h100.clock_normalized_peak(Precision::Bf16, 1.5e9).unwrap();
        assert_eq!(got, 132.0 * 4096.0 * 1.5e9);
        // Same through the free function, by spec or by architecture, and for a MIG slice.
        assert_eq!(
            clock_normalized_peak(h100, Precision::Bf16, 132, 1.5e9),
            Some(got)
        );
        assert_eq!(
            clock_normalized_peak(Arch::Hopper, Precision::Bf16, 132, 1.5e9),
            Some(got)
        );
        let slice = clock_normalized_peak(h100, Precision::Bf16, 16, 1.5e9).unwrap();
        assert_close(slice, got * 16.0 / 132.0, 1e-12, "MIG slice");
        // Linear in clock; at the datasheet clock it is the datasheet figure.
        let half = h100.clock_normalized_peak(Precision::Bf16, 0.75e9).unwrap();
        assert_close(half * 2.0, got, 1e-12, "linear");
        let at_sheet = h100
            .clock_normalized_peak(Precision::Bf16, h100.datasheet_clock_hz(Precision::Bf16))
            .unwrap();
        assert_close(
            at_sheet,
            h100.peak(Precision::Bf16).unwrap(),
            0.001,
            "H100 at 1830 MHz",
        );
        // A100 FP32 at 1410 MHz: 108 x 128 x 1.41e9.
        let a100 = spec("A100 SXM4 40GB");
        let fp32 = a100.clock_normalized_peak(Precision::Fp32, 1.41e9).unwrap();
        assert_close(fp32, 19.49e12, 0.001, "A100 fp32");
        // No path, no peak.
        assert_eq!(a100.clock_normalized_peak(Precision::Fp8, 1.41e9), None);
        assert_eq!(
            clock_normalized_peak(Arch::Ada, Precision::Fp64Tensor, 142, 2.5e9),
            None
        );
    }

    #[test]
    fn estimate_for_unknown_gpus() {
        // A100 from its compute capability alone reproduces the datasheet.
        let bf16 = estimate_peak("NVIDIA A100-SXM4-80GB", (8, 0), 108, 1410, Precision::Bf16);
        assert_close(bf16.unwrap(), 312e12, 0.005, "A100 bf16 estimate");
        // Hopper at its max clock: above the datasheet's 1830 MHz tensor figure.
        let fp8 = estimate_peak("NVIDIA H100 80GB HBM3", (9, 0), 132, 1980, Precision::Fp8);
        assert_eq!(fp8, Some(132.0 * 8192.0 * 1980e6));
        assert!(fp8.unwrap() > spec("H100 SXM5 80GB").peak(Precision::Fp8).unwrap());
        // Unknown architectures and missing paths.
        assert_eq!(
            estimate_peak("Tesla T4", (7, 5), 40, 1590, Precision::Fp16),
            None
        );
        assert_eq!(
            estimate_peak("NVIDIA B300", (10, 3), 160, 2000, Precision::Bf16),
            None
        );
        assert_eq!(
            estimate_peak("NVIDIA A40", (8, 6), 84, 1740, Precision::Fp8),
            None
        );
    }

    /// GeForce parts run FP32-accumulate tensor paths at half the professional rate: the
    /// figures of NVIDIA's whitepapers (dense, FP32 accumulate), at their boost clocks.
    #[test]
    fn geforce_tensor_rates_are_half() {
        let t = 1e12;
        let cases = [
            // Ada whitepaper, appendix: RTX 4090, 128 SMs, 2520 MHz.
            (
                "NVIDIA GeForce RTX 4090",
                (8, 9),
                128,
                2520,
                Precision::Fp16,
                165.2 * t,
            ),
            (
                "NVIDIA GeForce RTX 4090",
                (8, 9),
                128,
                2520,
                Precision::Bf16,
                165.2 * t,
            ),
            (
                "NVIDIA GeForce RTX 4090",
                (8, 9),
                128,
                2520,
                Precision::Tf32,
                82.6 * t,
            ),
            (
                "NVIDIA GeForce RTX 4090",
                (8, 9),
                128,
                2520,
                Precision::Fp8,
                330.3 * t,
            ),
            (
                "NVIDIA GeForce RTX 4090",
                (8, 9),
                128,
                2520,
                Precision::Int8,
                660.6 * t,
            ),
            (
                "NVIDIA GeForce RTX 4090",
                (8, 9),
                128,
                2520,
                Precision::Fp32,
                82.6 * t,
            ),
            // Ampere GA102 whitepaper: RTX 3090, 82 SMs, 1695 MHz.
            (
                "NVIDIA GeForce RTX 3090",
                (8, 6),
                82,
                1695,
                Precision::Fp16,
                71.0 * t,
            ),
            (
                "NVIDIA GeForce RTX 3090",
                (8, 6),
                82,
                1695,
                Precision::Tf32,
                35.6 * t,
            ),
            (
                "NVIDIA GeForce RTX 3090",
                (8, 6),
                82,
                1695,
                Precision::Int8,
                284.0 * t,
            ),
            // RTX Blackwell whitepaper: RTX 5090, 170 SMs, 2407 MHz (sm_120).
            (
                "NVIDIA GeForce RTX 5090",
                (12, 0),
                170,
                2407,
                Precision::Fp16,
                209.5 * t,
            ),
            (
                "NVIDIA GeForce RTX 5090",
                (12, 0),
                170,
                2407,
                Precision::Fp32,
                104.8 * t,
            ),
            // The professional Ada part with the same SM runs them at the full rate.
            (
                "NVIDIA RTX 6000 Ada Generation",
                (8, 9),
                142,
                2505,
                Precision::Fp16,
                364.2 * t,
            ),
        ];
        for (name, cc, sms, mhz, p, want) in cases {
            let got = estimate_peak(name, cc, sms, mhz, p).unwrap();
            assert_close(got, want, 0.01, &format!("{name} {p}"));
        }
        assert!(is_geforce("NVIDIA GeForce RTX 4090"));
        assert!(is_geforce("NVIDIA TITAN RTX"));
        assert!(!is_geforce("NVIDIA L40S"));
        // sm_120 has no FP64 tensor path: the FP64 tensor kernel is skipped there.
        let gb20x = Arch::from_compute_capability((12, 0)).unwrap();
        assert_eq!(gb20x.flop_per_clock_per_sm(Precision::Fp64Tensor), None);
    }

    /// The export-control Hopper parts: their capped paths never take Hopper's per-SM rate.
    #[test]
    fn capped_parts() {
        assert_eq!(lookup("NVIDIA H800").unwrap().name, "H800 SXM5 80GB");
        assert_eq!(
            lookup("NVIDIA H800 80GB HBM3").unwrap().name,
            "H800 SXM5 80GB"
        );
        assert_eq!(lookup("NVIDIA H800 PCIe").unwrap().name, "H800 PCIe 80GB");
        assert_eq!(lookup("NVIDIA H20").unwrap().name, "H20 96GB");
        let h800 = spec("H800 SXM5 80GB");
        assert_eq!(h800.peak(Precision::Fp64), Some(1e12));
        assert_eq!(
            h800.peak(Precision::Bf16),
            spec("H100 SXM5 80GB").peak(Precision::Bf16)
        );
        // At the datasheet's clock the capped figure, not 132 SMs x 128 x clock (33.8 TF).
        let fp64 = h800.clock_normalized_peak(Precision::Fp64, 1980e6).unwrap();
        assert_close(fp64, 1e12, 1e-9, "H800 fp64");
        // Throttled to half the clock: half of it.
        let fp64 = h800.clock_normalized_peak(Precision::Fp64, 990e6).unwrap();
        assert_close(fp64, 0.5e12, 1e-9, "H800 fp64 at 990 MHz");
        // Uncapped paths keep SMs x rate x clock.
        let bf16 = h800.clock_normalized_peak(Precision::Bf16, 1830e6).unwrap();
        assert_eq!(bf16, 132.0 * 4096.0 * 1830e6);
        let h20 = spec("H20 96GB");
        let bf16 = h20.clock_normalized_peak(Precision::Bf16, 1980e6).unwrap();
        assert_close(bf16, 148e12, 1e-9, "H20 bf16");
    }

    /// NVML's CUDA cores give the SMs: every table entry whose core count NVIDIA publishes.
    #[test]
    fn sms_from_cuda_cores() {
        let cases = [
            (Arch::Hopper, 16896, Some(132)),     // H100 SXM5, H200
            (Arch::Hopper, 14592, Some(114)),     // H100 PCIe
            (Arch::AmpereGa100, 6912, Some(108)), // A100
            (Arch::Ada, 18176, Some(142)),        // L40S
            (Arch::Ada, 7424, Some(58)),          // L4
            (Arch::AmpereGa10x, 9216, Some(72)),  // A10
            // Not whole SMs, or nothing: no SM count rather than a wrong one.
            (Arch::Hopper, 16900, None),
            (Arch::Hopper, 0, None),
        ];
        for (arch, cores, want) in cases {
            assert_eq!(arch.sms_of_cuda_cores(cores), want, "{arch:?} {cores}");
        }
    }

    /// Issue 18, item 6: a GPU's rate follows the SMs it has and the clock it runs at.
    #[test]
    fn issue_18_sm_peaks_follow_sms_and_clock() {
        let h100 = "NVIDIA H100 80GB HBM3";
        let at = |mhz: f64| sm_peak(h100, Arch::Hopper, Precision::Bf16, 132, mhz * 1e6).unwrap();
        assert_eq!(at(1980.0), 132.0 * 4096.0 * 1980e6);
        assert_eq!(at(1500.0), 132.0 * 4096.0 * 1500e6);
        assert_close(
            at(1500.0) / at(1980.0),
            1500.0 / 1980.0,
            1e-12,
            "clock ratio",
        );
        // A MIG instance with 16 SMs: 16 of them, not a share of the board's 132.
        let slice = sm_peak(h100, Arch::Hopper, Precision::Bf16, 16, 1980e6).unwrap();
        assert_eq!(slice, 16.0 * 4096.0 * 1980e6);
        // GeForce FP32-accumulate tensor paths at half the rate; FP32 and INT8 not halved.
        let rtx = "NVIDIA GeForce RTX 4090";
        assert_eq!(
            sm_peak(rtx, Arch::Ada, Precision::Bf16, 128, 2520e6),
            Some(128.0 * 512.0 * 2520e6)
        );
        assert_eq!(
            sm_peak(rtx, Arch::Ada, Precision::Int8, 128, 2520e6),
            Some(128.0 * 2048.0 * 2520e6)
        );
        // A capped path scales the datasheet figure: H800's FP64 at half its clock on half its
        // SMs is a quarter of 1 TFLOP/s, not 66 SMs x 128 x 990 MHz.
        let fp64 = sm_peak("NVIDIA H800", Arch::Hopper, Precision::Fp64, 66, 990e6).unwrap();
        assert_close(fp64, 0.25e12, 1e-9, "H800 fp64");
        // No such path.
        assert_eq!(
            sm_peak("NVIDIA L4", Arch::Ada, Precision::Fp64Tensor, 58, 2e9),
            None
        );
    }

    #[test]
    fn arch_compute_capability_round_trip() {
        for arch in [
            Arch::AmpereGa100,
            Arch::AmpereGa10x,
            Arch::Ada,
            Arch::Hopper,
            Arch::Blackwell,
            Arch::BlackwellGb20x,
        ] {
            assert_eq!(
                Arch::from_compute_capability(arch.compute_capability()),
                Some(arch)
            );
        }
        assert_eq!(Arch::from_compute_capability((12, 1)), None);
    }

    #[test]
    fn precision_names() {
        for p in Precision::ALL {
            assert_eq!(p.as_str().parse::<Precision>(), Ok(p));
            assert_eq!(p.to_string(), p.as_str());
        }
        assert_eq!("BF16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!(
            "fp64-tensor".parse::<Precision>(),
            Ok(Precision::Fp64Tensor)
        );
        let err = "fp4".parse::<Precision>().unwrap_err();
        assert_eq!(err, ParsePrecisionError("fp4".into()));
        assert!(err.to_string().contains("\"fp4\""));
        // Index order used by the per-SM rate table.
        for (i, p) in Precision::ALL.into_iter().enumerate() {
            assert_eq!(p as usize, i);
        }
    }
}
