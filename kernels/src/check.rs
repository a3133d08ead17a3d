//! Host-side references for verifying kernels before their times count: number formats, the
//! random inputs, a CPU matrix product, tolerances per precision, the FMA loops' closed form
//! and the memory kernels' checksum. Pure, no GPU.
//!
//! Inputs are random draws from small grids of values that every format holds exactly
//! (quarters in [-2, 2) for the 16/32/64-bit formats, eighths in [-1, 1) for FP8, integers in
//! [-8, 8) for INT8). Products and their FP32 sums are then exact for the sizes used, so a
//! correct kernel matches the reference to the last bit and a wrong fragment layout, a
//! dropped MMA or a wrong operand order cannot hide inside a tolerance. The tolerances per
//! precision are still those of arbitrary inputs, for the library GEMMs' rounded outputs.

use gpucost_hw::peaks::Precision;

/// Encodes `v` in a binary format with `exp_bits` exponent and `man_bits` mantissa bits
/// (IEEE-style bias, subnormals, round to nearest even, no infinities: values past the largest
/// finite saturate). Covers f16 (5, 10), bf16 (8, 7), e4m3 (4, 3; largest 448) and tf32.
pub fn encode_float(v: f32, exp_bits: u32, man_bits: u32) -> u32 {
    let sign = u32::from(v.is_sign_negative()) << (exp_bits + man_bits);
    let a = f64::from(v.abs());
    if a == 0.0 || a.is_nan() {
        return sign;
    }
    let bias = (1i32 << (exp_bits - 1)) - 1;
    let min_exp = 1 - bias;
    let e = (a.log2().floor() as i32).max(min_exp);
    // Value in units of the last mantissa place at exponent e.
    let scaled = a / 2f64.powi(e - man_bits as i32);
    let mut q = scaled.round();
    if (scaled - scaled.floor() - 0.5).abs() < f64::EPSILON && q % 2.0 == 1.0 {
        q -= 1.0; // ties to even
    }
    let mut q = q as u64;
    let mut e = e;
    if q >= 2u64 << man_bits {
        q >>= 1;
        e += 1;
    }
    let max_field = if exp_bits == 4 && man_bits == 3 {
        // e4m3: exponent field 15 is finite; only mantissa 111 there is NaN, so 448 is largest.
        (15u32, 6u64)
    } else {
        ((1u32 << exp_bits) - 2, (1u64 << man_bits) - 1)
    };
    let (field, man) = if q < 1u64 << man_bits {
        (0u32, q) // subnormal
    } else {
        ((e + bias) as u32, q - (1u64 << man_bits))
    };
    let (field, man) = if field > max_field.0 || (field == max_field.0 && man > max_field.1) {
        max_field
    } else {
        (field, man)
    };
    sign | (field << man_bits) | man as u32
}

/// Decodes a value written by [`encode_float`].
pub fn decode_float(bits: u32, exp_bits: u32, man_bits: u32) -> f64 {
    let sign = if bits >> (exp_bits + man_bits) & 1 == 1 {
        -1.0
    } else {
        1.0
    };
    let field = (bits >> man_bits) & ((1 << exp_bits) - 1);
    let man = f64::from(bits & ((1 << man_bits) - 1));
    let bias = (1i32 << (exp_bits - 1)) - 1;
    let frac = man / 2f64.powi(man_bits as i32);
    if field == 0 {
        sign * frac * 2f64.powi(1 - bias)
    } else {
        sign * (1.0 + frac) * 2f64.powi(field as i32 - bias)
    }
}

pub fn f16_bits(v: f32) -> u16 {
    encode_float(v, 5, 10) as u16
}

pub fn bf16_bits(v: f32) -> u16 {
    encode_float(v, 8, 7) as u16
}

pub fn e4m3_bits(v: f32) -> u8 {
    encode_float(v, 4, 3) as u8
}

/// Element formats of the kernels' and GEMMs' inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    F64,
    F32,
    F16,
    Bf16,
    E4m3,
    S8,
}

impl Format {
    pub fn bytes(self) -> usize {
        match self {
            Format::F64 => 8,
            Format::F32 => 4,
            Format::F16 | Format::Bf16 => 2,
            Format::E4m3 | Format::S8 => 1,
        }
    }

    /// The 16 values random inputs are drawn from.
    pub fn grid(self) -> [f32; 16] {
        let mut g = [0.0f32; 16];
        for (i, v) in g.iter_mut().enumerate() {
            let k = i as f32 - 8.0;
            *v = match self {
                Format::F64 | Format::F32 | Format::F16 | Format::Bf16 => k / 4.0,
                Format::E4m3 => k / 8.0,
                Format::S8 => k,
            };
        }
        g
    }

    /// The bit pattern of `v` in this format (low bytes of the u64).
    pub fn bits(self, v: f32) -> u64 {
        match self {
            Format::F64 => f64::from(v).to_bits(),
            Format::F32 => u64::from(v.to_bits()),
            Format::F16 => u64::from(f16_bits(v)),
            Format::Bf16 => u64::from(bf16_bits(v)),
            Format::E4m3 => u64::from(e4m3_bits(v)),
            Format::S8 => u64::from(v as i8 as u8),
        }
    }

    /// `values` packed little-endian in this format.
    pub fn pack(self, values: &[f32]) -> Vec<u8> {
        let n = self.bytes();
        values
            .iter()
            .flat_map(|&v| self.bits(v).to_le_bytes().into_iter().take(n))
            .collect()
    }
}

/// A small deterministic PRNG (splitmix64) for the random inputs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` random values from `format`'s grid.
    pub fn grid_values(&mut self, format: Format, n: usize) -> Vec<f32> {
        let grid = format.grid();
        (0..n)
            .map(|_| grid[(self.next_u64() >> 60) as usize])
            .collect()
    }

    /// A uniform value in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` random values to time with: uniform over the format's working range at its full
    /// precision ([-1, 1) for the floating-point formats, [-2, 2) for e4m3, every s8), so the
    /// tensor cores and the FMA units toggle the bits real data toggles. The grid's values,
    /// short exact numbers whose low mantissa bits are all zero, are for checking results
    /// only: a kernel timed on them draws less power, and so may hold a higher clock, than on
    /// real data.
    pub fn timing_values(&mut self, format: Format, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u = self.unit();
                match format {
                    Format::E4m3 => (4.0 * u - 2.0) as f32,
                    Format::S8 => ((256.0 * u).floor() - 128.0) as f32,
                    _ => (2.0 * u - 1.0) as f32,
                }
            })
            .collect()
    }
}

impl Rng {
    /// `n` random doubles in [-1, 1) at their full 53 bits (the f32 values of
    /// [`Rng::timing_values`] would leave the low half of each mantissa zero).
    pub fn timing_f64(&mut self, n: usize) -> Vec<f64> {
        // A random sign on a 53-bit magnitude: 2u - 1 would be a multiple of 2^-52, leaving
        // the last bit of every value in [0.5, 1) zero.
        (0..n)
            .map(|_| {
                let m = self.unit();
                if self.next_u64() & 1 == 1 {
                    -m
                } else {
                    m
                }
            })
            .collect()
    }
}

/// The seed of the data `what` (a kernel's entry point, a library row) is timed on: fixed per
/// name, so that every run times the same data and a figure can be reproduced, and different
/// from one kernel to the next.
pub fn timing_seed(what: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in what.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ 0x7469_6d69_6e67_0000
}

/// The index the `fill_*` kernels (memory.cu) use for element `i`: the same hash.
pub fn fill_index(i: u64, seed: u32) -> usize {
    let mut h = (i as u32) ^ seed;
    h = h.wrapping_mul(0x9E37_79B1);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    (h & 15) as usize
}

/// The value the `fill_*` kernels write at element `i` with `format`'s grid as table.
pub fn fill_value(format: Format, i: u64, seed: u32) -> f32 {
    format.grid()[fill_index(i, seed)]
}

/// CPU reference of `times` x (A x B) for A `m x k` row-major and Bt (B column-major) `n x k`
/// row-major: (value, sum of |a*b| terms) for each of the m x n outputs, row-major.
pub fn matmul_reference(
    a: &[f32],
    bt: &[f32],
    m: usize,
    n: usize,
    k: usize,
    times: f64,
) -> Vec<(f64, f64)> {
    assert_eq!(a.len(), m * k);
    assert_eq!(bt.len(), n * k);
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut abs) = (0.0f64, 0.0f64);
            for p in 0..k {
                let t = f64::from(a[i * k + p]) * f64::from(bt[j * k + p]);
                s += t;
                abs += t.abs();
            }
            out.push((s * times, abs * times));
        }
    }
    out
}

/// Relative tolerance per precision, against the sum of |a*b| terms: the rounding of inputs
/// and outputs in that format (FP8 outputs are BF16 in the library GEMMs).
pub fn tolerance(p: Precision) -> f64 {
    match p {
        Precision::Fp64 | Precision::Fp64Tensor => 1e-12,
        Precision::Fp32 => 1e-5,
        Precision::Tf32 => 2e-3,
        Precision::Fp16 => 2e-3,
        Precision::Bf16 | Precision::Fp8 => 1.6e-2,
        Precision::Int8 => 0.0,
    }
}

/// Compares `got` with a [`matmul_reference`]: the first mismatch, described, or `Ok`.
pub fn compare(
    what: &str,
    got: &[f64],
    want: &[(f64, f64)],
    tol: f64,
    cols: usize,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} outputs, want {}",
            got.len(),
            want.len()
        ));
    }
    for (i, (&g, &(w, abs))) in got.iter().zip(want).enumerate() {
        let allowed = tol * abs + 1e-9;
        if (g - w).abs() > allowed || g.is_nan() {
            return Err(format!(
                "{what}: output ({}, {}) is {g}, want {w} (tolerance {allowed:.3e})",
                i / cols,
                i % cols
            ));
        }
    }
    Ok(())
}

/// The closed form of the FMA loops: x_n for x_{i+1} = a * x_i + b from x_0.
pub fn fma_closed_form(x0: f64, a: f64, b: f64, n: u64) -> f64 {
    if a == 1.0 {
        x0 + n as f64 * b
    } else {
        let an = a.powf(n as f64);
        an * x0 + b * (an - 1.0) / (a - 1.0)
    }
}

/// What every thread of an `fma.cu` kernel stores: the sum over its chains (chain j starts at
/// j) after `n` steps, with `lanes` values per chain (2 for the packed pairs).
pub fn fma_thread_sum(chains: u32, a: f64, b: f64, n: u64, lanes: u32) -> f64 {
    (0..chains)
        .map(|j| fma_closed_form(f64::from(j), a, b, n) * f64::from(lanes))
        .sum()
}

/// The memory checksum: the wrapping sum of (word ^ index) over 32-bit words, as `mem_read`
/// computes it.
pub fn word_checksum(words: u64, word: impl Fn(u64) -> u32) -> u32 {
    (0..words).fold(0u32, |acc, i| acc.wrapping_add(word(i) ^ (i as u32)))
}

#[cfg(test)]
mod tests {

    /// Issue 18, item 4: timing data is random at full precision, seeded per kernel.
    #[test]
    fn issue_18_timing_data_is_random_and_seeded_per_kernel() {
        assert_eq!(timing_seed("mma_bf16"), timing_seed("mma_bf16"));
        assert_ne!(timing_seed("mma_bf16"), timing_seed("mma_f16"));
        assert_ne!(timing_seed("wgmma_bf16"), timing_seed("mma_bf16"));
        let draw = |seed| Rng::new(seed).timing_values(Format::Bf16, 4096);
        assert_eq!(draw(timing_seed("x")), draw(timing_seed("x")));
        assert_ne!(draw(timing_seed("x")), draw(timing_seed("y")));
        let d = Rng::new(timing_seed("f64")).timing_f64(4096);
        assert!(d.iter().all(|x| (-1.0..1.0).contains(x)));
        let odd = d.iter().filter(|x| x.to_bits() & 1 == 1).count();
        assert!(
            odd > 4096 / 4,
            "{odd} doubles with the last mantissa bit set"
        );
        for format in [
            Format::F32,
            Format::F16,
            Format::Bf16,
            Format::E4m3,
            Format::S8,
        ] {
            let v = Rng::new(timing_seed("t")).timing_values(format, 4096);
            let grid = format.grid();
            let off_grid = v.iter().filter(|x| !grid.contains(x)).count();
            let (lo, hi) = match format {
                Format::E4m3 => (-2.0, 2.0),
                Format::S8 => (-128.0, 128.0),
                _ => (-1.0, 1.0),
            };
            assert!(v.iter().all(|x| (lo..hi).contains(x)), "{format:?}");
            // Almost none of them on the grid (s8's grid is 16 of its 256 values).
            assert!(
                off_grid > 4096 * 9 / 10,
                "{format:?}: {off_grid} off the grid"
            );
            // The packed bits are as varied as the values: low mantissa bits set.
            let packed = format.pack(&v);
            let low_bits_set = packed.iter().filter(|b| *b & 1 == 1).count();
            assert!(
                low_bits_set > packed.len() / 4,
                "{format:?}: {low_bits_set} of {} bytes odd",
                packed.len()
            );
            // NaN is no timing value: e4m3's S.1111.111 patterns never come up.
            if format == Format::E4m3 {
                assert!(packed.iter().all(|b| b & 0x7F != 0x7F));
            }
        }
    }

    use super::*;

    #[test]
    fn f16_encoding() {
        assert_eq!(f16_bits(1.0), 0x3C00);
        assert_eq!(f16_bits(-2.0), 0xC000);
        assert_eq!(f16_bits(0.25), 0x3400);
        assert_eq!(f16_bits(-1.75), 0xBF00);
        assert_eq!(f16_bits(0.0), 0);
        assert_eq!(f16_bits(65504.0), 0x7BFF);
        assert_eq!(f16_bits(1e6), 0x7BFF); // saturates
        assert_eq!(f16_bits(2f32.powi(-24)), 0x0001); // smallest subnormal
                                                      // Ties to even: 1 + 2^-11 lies between 1 and 1 + 2^-10.
        assert_eq!(f16_bits(1.0 + 2f32.powi(-11)), 0x3C00);
        assert_eq!(f16_bits(1.0 + 3.0 * 2f32.powi(-11)), 0x3C02);
    }

    #[test]
    fn bf16_and_e4m3_encoding() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        assert_eq!(bf16_bits(-0.25), 0xBE80);
        assert_eq!(bf16_bits(3.0), (3.0f32.to_bits() >> 16) as u16);
        assert_eq!(e4m3_bits(1.0), 0x38);
        assert_eq!(e4m3_bits(-1.0), 0xB8);
        assert_eq!(e4m3_bits(0.875), 0x36);
        assert_eq!(e4m3_bits(448.0), 0x7E);
        assert_eq!(e4m3_bits(1000.0), 0x7E); // saturates below the NaN pattern
        assert_eq!(e4m3_bits(2f32.powi(-9)), 0x01); // smallest subnormal
    }

    #[test]
    fn grids_are_exact_in_their_formats() {
        for (f, e, m) in [
            (Format::F16, 5, 10),
            (Format::Bf16, 8, 7),
            (Format::E4m3, 4, 3),
        ] {
            for v in f.grid() {
                let back = decode_float(f.bits(v) as u32, e, m);
                assert_eq!(back, f64::from(v), "{f:?} {v}");
            }
        }
        assert_eq!(Format::S8.bits(-8.0), 0xF8);
        assert_eq!(Format::F32.pack(&[1.0]), 1.0f32.to_le_bytes().to_vec());
        assert_eq!(
            Format::Bf16.pack(&[1.0, -2.0]),
            vec![0x80, 0x3F, 0x00, 0xC0]
        );
    }

    #[test]
    fn rng_draws_from_the_grid() {
        let mut r = Rng::new(7);
        let v = r.grid_values(Format::E4m3, 1000);
        let grid = Format::E4m3.grid();
        assert!(v.iter().all(|x| grid.contains(x)));
        // All 16 values show up.
        for g in grid {
            assert!(v.contains(&g), "{g}");
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn fill_hash_is_the_kernels() {
        // Values computed by hand from memory.cu's fill_hash for seed 0 and 1.
        let h = |i: u32, seed: u32| {
            let mut h = i ^ seed;
            h = h.wrapping_mul(0x9E3779B1);
            h ^= h >> 16;
            h = h.wrapping_mul(0x85EBCA6B);
            h ^= h >> 13;
            (h & 15) as usize
        };
        for i in 0..1000u64 {
            assert_eq!(fill_index(i, 0), h(i as u32, 0));
            assert_eq!(fill_index(i, 12345), h(i as u32, 12345));
        }
        let counts = (0..16000u64).fold([0; 16], |mut c, i| {
            c[fill_index(i, 3)] += 1;
            c
        });
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn matmul_reference_small() {
        // A = [[1, 2]], B = [[3], [4]] (Bt = [[3, 4]]): 11, twice.
        let r = matmul_reference(&[1.0, 2.0], &[3.0, 4.0], 1, 1, 2, 2.0);
        assert_eq!(r, vec![(22.0, 22.0)]);
        let r = matmul_reference(&[1.0, -2.0], &[3.0, 4.0], 1, 1, 2, 1.0);
        assert_eq!(r, vec![(-5.0, 11.0)]);
        assert!(compare("x", &[-5.0], &r, 0.0, 1).is_ok());
        let err = compare("x", &[-5.5], &r, 0.01, 1).unwrap_err();
        assert!(err.contains("(0, 0)") && err.contains("-5.5"), "{err}");
        assert!(compare("x", &[f64::NAN], &r, 1.0, 1).is_err());
        assert!(compare("x", &[], &r, 1.0, 1).is_err());
    }

    #[test]
    fn closed_forms() {
        assert_eq!(fma_closed_form(3.0, 1.0, 1.0, 32), 35.0);
        // a = 2, b = 1 from 0: 0, 1, 3, 7, 15 -> 2^n - 1.
        assert_eq!(fma_closed_form(0.0, 2.0, 1.0, 4), 15.0);
        let mut x = 1.5f64;
        for _ in 0..10 {
            x = 0.5 * x + 0.25;
        }
        assert!((fma_closed_form(1.5, 0.5, 0.25, 10) - x).abs() < 1e-12);
        // 8 chains from 0..7, 32 steps of +1: sum (j + 32) = 28 + 256.
        assert_eq!(fma_thread_sum(8, 1.0, 1.0, 32, 1), 284.0);
        assert_eq!(fma_thread_sum(8, 1.0, 1.0, 32, 2), 568.0);
    }

    #[test]
    fn checksum() {
        assert_eq!(word_checksum(4, |_| 0), 6); // 0 ^ 0 + 0 ^ 1 + 0 ^ 2 + 0 ^ 3
        assert_eq!(word_checksum(2, |i| i as u32), 0);
        assert_eq!(word_checksum(1, |_| u32::MAX), u32::MAX);
        assert_eq!(
            word_checksum(2, |_| u32::MAX),
            (u32::MAX).wrapping_add(u32::MAX ^ 1)
        );
    }

    #[test]
    fn tolerances_cover_one_rounding() {
        // A bf16 output rounds at 2^-9 relative; f16 at 2^-11.
        assert!(tolerance(Precision::Bf16) > 2f64.powi(-9));
        assert!(tolerance(Precision::Fp16) > 2f64.powi(-11));
        assert_eq!(tolerance(Precision::Int8), 0.0);
    }
}
