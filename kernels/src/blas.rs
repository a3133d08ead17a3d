//! The library reference: cuBLASLt GEMMs (BF16, FP16, TF32, FP8 e4m3) and cuBLAS SGEMM/DGEMM,
//! what frameworks actually run, beside our kernels: the rate a training job's matrix products
//! are delivered at. m x n x k (cuBLASLt; cuBLAS square), "TN" column-major (A transposed, as
//! FP8 requires): A is stored k x m, B k x n, D m x n, so that row i of op(A) and column j of B
//! are contiguous. Inputs come from the `fill_*` kernels, so the host can
//! recompute any output from the fill hash without copying the inputs back.

use std::ffi::c_void;

use cudarc::cublas::{self, CudaBlas, Gemm, GemmConfig};
use cudarc::cublaslt::{result as lt, sys as lts};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

use crate::check::{self, Format};
use crate::flops::GemmShape;
use crate::gpu::Gpu;
use crate::launch::{self, FillElem};
use gpucost_hw::peaks::Precision;

const SEED_A: u32 = 0x5EED_000A;
const SEED_B: u32 = 0x5EED_000B;

/// A GEMM set up on the GPU, ready to be called repeatedly.
pub trait Gemmer {
    /// One call (asynchronous, on the GPU's stream).
    fn call(&mut self) -> Result<(), String>;
    /// The product's shape.
    fn shape(&self) -> GemmShape;
    /// Checks a few outputs against the host's recomputation. Call after one `call`.
    fn verify(&mut self, gpu: &Gpu) -> Result<(), String>;
    /// Fills A and B with random values at full precision to time on (after `verify`: the
    /// outputs are no longer checkable).
    fn randomize(&mut self, gpu: &Gpu, seed: u64) -> Result<(), String>;
}

/// Element formats of a library GEMM: inputs, output, and the precision it measures.
#[derive(Debug, Clone, Copy)]
struct Formats {
    input: Format,
    output: Format,
}

fn formats(p: Precision) -> Option<Formats> {
    let (input, output) = match p {
        Precision::Bf16 => (Format::Bf16, Format::Bf16),
        Precision::Fp16 => (Format::F16, Format::F16),
        Precision::Tf32 | Precision::Fp32 => (Format::F32, Format::F32),
        Precision::Fp8 => (Format::E4m3, Format::Bf16),
        Precision::Fp64 | Precision::Fp64Tensor => (Format::F64, Format::F64),
        Precision::Int8 => return None,
    };
    Some(Formats { input, output })
}

/// Raw device buffers of one element size.
enum Buf {
    B8(CudaSlice<u8>),
    B16(CudaSlice<u16>),
    B32(CudaSlice<u32>),
    B64(CudaSlice<u64>),
}

impl Buf {
    fn alloc(gpu: &Gpu, format: Format, len: usize) -> Result<Buf, String> {
        let s = &gpu.stream;
        let e = |e: cudarc::driver::DriverError| format!("allocating {len} x {format:?}: {e}");
        Ok(match format.bytes() {
            1 => Buf::B8(s.alloc_zeros(len).map_err(e)?),
            2 => Buf::B16(s.alloc_zeros(len).map_err(e)?),
            4 => Buf::B32(s.alloc_zeros(len).map_err(e)?),
            _ => Buf::B64(s.alloc_zeros(len).map_err(e)?),
        })
    }

    /// Fills with random values of `format`'s grid (see [`check::fill_value`]).
    fn fill(&mut self, gpu: &Gpu, format: Format, seed: u32) -> Result<(), String> {
        let bits: Vec<u64> = format.grid().iter().map(|&v| format.bits(v)).collect();
        self.fill_bits(gpu, seed, bits)
    }

    /// Fills with 16 random values at full precision, placed at random (to time on).
    fn fill_random(&mut self, gpu: &Gpu, format: Format, seed: u64) -> Result<(), String> {
        let mut rng = check::Rng::new(seed);
        let bits: Vec<u64> = if format == Format::F64 {
            rng.timing_f64(16).iter().map(|v| v.to_bits()).collect()
        } else {
            let v = rng.timing_values(format, 16);
            v.iter().map(|&x| format.bits(x)).collect()
        };
        self.fill_bits(gpu, seed as u32, bits)
    }

    /// Fills with `bits` (16 values' bit patterns) by the fill hash.
    fn fill_bits(&mut self, gpu: &Gpu, seed: u32, bits: Vec<u64>) -> Result<(), String> {
        fn go<T: FillElem>(
            gpu: &Gpu,
            dst: &mut CudaSlice<T>,
            seed: u32,
            table: Vec<T>,
        ) -> Result<(), String> {
            let table = gpu
                .stream
                .clone_htod(&table)
                .map_err(|e| format!("fill table: {e}"))?;
            launch::fill(gpu, dst, seed, &table)
        }
        match self {
            Buf::B8(d) => go(gpu, d, seed, bits.iter().map(|&b| b as u8).collect()),
            Buf::B16(d) => go(gpu, d, seed, bits.iter().map(|&b| b as u16).collect()),
            Buf::B32(d) => go(gpu, d, seed, bits.iter().map(|&b| b as u32).collect()),
            Buf::B64(d) => go(gpu, d, seed, bits),
        }
    }

    fn ptr(&self, gpu: &Gpu) -> u64 {
        // The pointers are used on the same stream the buffers were made on, so the sync
        // guards have nothing to order.
        match self {
            Buf::B8(d) => d.device_ptr(&gpu.stream).0,
            Buf::B16(d) => d.device_ptr(&gpu.stream).0,
            Buf::B32(d) => d.device_ptr(&gpu.stream).0,
            Buf::B64(d) => d.device_ptr(&gpu.stream).0,
        }
    }

    /// Element `i` as a number in `format`.
    fn read(&self, gpu: &Gpu, format: Format, i: usize) -> Result<f64, String> {
        let e = |e: cudarc::driver::DriverError| format!("reading D: {e}");
        let bits = match self {
            Buf::B8(d) => u64::from(gpu.stream.clone_dtoh(&d.slice(i..i + 1)).map_err(e)?[0]),
            Buf::B16(d) => u64::from(gpu.stream.clone_dtoh(&d.slice(i..i + 1)).map_err(e)?[0]),
            Buf::B32(d) => u64::from(gpu.stream.clone_dtoh(&d.slice(i..i + 1)).map_err(e)?[0]),
            Buf::B64(d) => gpu.stream.clone_dtoh(&d.slice(i..i + 1)).map_err(e)?[0],
        };
        Ok(match format {
            Format::F64 => f64::from_bits(bits),
            Format::F32 => f64::from(f32::from_bits(bits as u32)),
            Format::F16 => check::decode_float(bits as u32, 5, 10),
            Format::Bf16 => check::decode_float(bits as u32, 8, 7),
            Format::E4m3 => check::decode_float(bits as u32, 4, 3),
            Format::S8 => f64::from(bits as u8 as i8),
        })
    }
}

/// The outputs (i, j) of an m x n D the host checks: corners, the middle, and a few more.
fn probes(m: u64, n: u64) -> Vec<(u64, u64)> {
    let (lm, ln) = (m - 1, n - 1);
    vec![
        (0, 0),
        (0, ln),
        (lm, 0),
        (lm, ln),
        (m / 2, n / 3),
        (m / 3, n / 2),
        (1 % m, 7 % n),
    ]
}

/// Checks D(i, j) at [`probes`] against the host's product of the filled inputs.
fn verify_probes(
    gpu: &Gpu,
    what: &str,
    shape: GemmShape,
    f: Formats,
    p: Precision,
    d: &Buf,
) -> Result<(), String> {
    gpu.stream
        .synchronize()
        .map_err(|e| format!("{what}: {e}"))?;
    let GemmShape { m, n, k } = shape;
    for (i, j) in probes(m, n) {
        // op(A)(i, q) = A_stored[i * k + q]; B(q, j) = B_stored[j * k + q]; D(i, j) at j * m + i.
        let (mut want, mut abs) = (0.0f64, 0.0f64);
        for q in 0..k {
            let a = f64::from(check::fill_value(f.input, i * k + q, SEED_A));
            let b = f64::from(check::fill_value(f.input, j * k + q, SEED_B));
            want += a * b;
            abs += (a * b).abs();
        }
        let got = d.read(gpu, f.output, (j * m + i) as usize)?;
        let allowed = check::tolerance(p) * abs + 1e-6;
        if (got - want).abs() > allowed || got.is_nan() {
            return Err(format!(
                "{what}: D({i}, {j}) is {got}, want {want} (tolerance {allowed:.3e})"
            ));
        }
    }
    Ok(())
}

/// A cuBLASLt matmul, its descriptors kept for repeated calls.
pub struct LtGemm {
    precision: Precision,
    formats: Formats,
    shape: GemmShape,
    handle: lts::cublasLtHandle_t,
    desc: lts::cublasLtMatmulDesc_t,
    layouts: [lts::cublasLtMatrixLayout_t; 3],
    algo: lts::cublasLtMatmulAlgo_t,
    a: Buf,
    b: Buf,
    d: Buf,
    workspace: CudaSlice<u8>,
    stream: lts::cudaStream_t,
    a_ptr: u64,
    b_ptr: u64,
    d_ptr: u64,
    ws_ptr: u64,
}

impl LtGemm {
    /// Sets up a cuBLASLt GEMM of `shape` for `p` (BF16, FP16, TF32 or FP8).
    pub fn new(gpu: &Gpu, p: Precision, shape: GemmShape) -> Result<LtGemm, String> {
        let GemmShape { m, n, k } = shape;
        use lts::cudaDataType_t as T;
        let f = formats(p).ok_or("no cuBLASLt GEMM for this precision")?;
        let (ab, dt, compute) = match p {
            Precision::Bf16 => (
                T::CUDA_R_16BF,
                T::CUDA_R_16BF,
                lts::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
            Precision::Fp16 => (
                T::CUDA_R_16F,
                T::CUDA_R_16F,
                lts::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
            Precision::Tf32 => (
                T::CUDA_R_32F,
                T::CUDA_R_32F,
                lts::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
            ),
            Precision::Fp8 => (
                T::CUDA_R_8F_E4M3,
                T::CUDA_R_16BF,
                lts::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
            _ => return Err(format!("no cuBLASLt GEMM for {p}")),
        };
        let e =
            |what: &'static str| move |err: lt::CublasError| format!("cuBLASLt {what}: {err:?}");
        let handle = lt::create_handle().map_err(e("create"))?;
        // From here on, Drop releases what was created.
        let mut g = LtGemm {
            precision: p,
            formats: f,
            shape,
            handle,
            desc: std::ptr::null_mut(),
            layouts: [std::ptr::null_mut(); 3],
            // SAFETY: cublasLtMatmulAlgo_t is plain data (an array of u64); zero is a valid value
            // that the heuristic below overwrites.
            algo: unsafe { std::mem::zeroed() },
            a: Buf::alloc(gpu, f.input, (k * m) as usize)?,
            b: Buf::alloc(gpu, f.input, (k * n) as usize)?,
            d: Buf::alloc(gpu, f.output, (m * n) as usize)?,
            workspace: gpu
                .stream
                .alloc_zeros::<u8>(32 << 20)
                .map_err(|err| format!("cuBLASLt workspace: {err}"))?,
            stream: gpu.stream.cu_stream() as lts::cudaStream_t,
            a_ptr: 0,
            b_ptr: 0,
            d_ptr: 0,
            ws_ptr: 0,
        };
        g.a.fill(gpu, f.input, SEED_A)?;
        g.b.fill(gpu, f.input, SEED_B)?;
        g.a_ptr = g.a.ptr(gpu);
        g.b_ptr = g.b.ptr(gpu);
        g.d_ptr = g.d.ptr(gpu);
        g.ws_ptr = g.workspace.device_ptr_mut(&gpu.stream).0;

        g.desc = lt::create_matmul_desc(compute, T::CUDA_R_32F).map_err(e("matmul desc"))?;
        let (trans_a, trans_b): (i32, i32) = (1, 0); // CUBLAS_OP_T, CUBLAS_OP_N
                                                     // SAFETY: the attribute buffers are i32s, the size the TRANSA/TRANSB attributes take.
        unsafe {
            lt::set_matmul_desc_attribute(
                g.desc,
                lts::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                (&trans_a as *const i32).cast(),
                4,
            )
            .map_err(e("TRANSA"))?;
            lt::set_matmul_desc_attribute(
                g.desc,
                lts::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
                (&trans_b as *const i32).cast(),
                4,
            )
            .map_err(e("TRANSB"))?;
        }
        // Column-major: A stored k x m (lda k, used transposed), B k x n (ldb k), D m x n.
        g.layouts[0] = lt::create_matrix_layout(ab, k, m, k as i64).map_err(e("layout A"))?;
        g.layouts[1] = lt::create_matrix_layout(ab, k, n, k as i64).map_err(e("layout B"))?;
        g.layouts[2] = lt::create_matrix_layout(dt, m, n, m as i64).map_err(e("layout D"))?;
        let pref = lt::create_matmul_pref().map_err(e("preference"))?;
        let ws = g.workspace.len();
        // SAFETY: the workspace-size attribute takes a u64 (size_t); the handles are live.
        let heuristic = unsafe {
            let r = lt::set_matmul_pref_attribute(
                pref,
                lts::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&ws as *const usize).cast(),
                std::mem::size_of::<usize>(),
            )
            .and_then(|()| {
                lt::get_matmul_algo_heuristic(
                    g.handle,
                    g.desc,
                    g.layouts[0],
                    g.layouts[1],
                    g.layouts[2],
                    g.layouts[2],
                    pref,
                )
            });
            let _ = lt::destroy_matmul_pref(pref);
            r.map_err(e("no algorithm for this GEMM"))?
        };
        g.algo = heuristic.algo;
        Ok(g)
    }
}

impl Gemmer for LtGemm {
    fn call(&mut self) -> Result<(), String> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: descriptors, layouts and algo were created for exactly these buffers (A k x m,
        // B k x n, D m x n) of these types; the pointers are live device allocations owned by self (D doubles as C,
        // with beta = 0); alpha/beta are f32, the scale type; the workspace is the size the
        // heuristic was told.
        unsafe {
            lt::matmul(
                self.handle,
                self.desc,
                (&alpha as *const f32).cast(),
                (&beta as *const f32).cast(),
                self.a_ptr as *const c_void,
                self.layouts[0],
                self.b_ptr as *const c_void,
                self.layouts[1],
                self.d_ptr as *const c_void,
                self.layouts[2],
                self.d_ptr as *mut c_void,
                self.layouts[2],
                &self.algo,
                self.ws_ptr as *mut c_void,
                self.workspace.len(),
                self.stream,
            )
        }
        .map_err(|err| format!("cublasLtMatmul ({}): {err:?}", self.precision))
    }

    fn shape(&self) -> GemmShape {
        self.shape
    }

    fn verify(&mut self, gpu: &Gpu) -> Result<(), String> {
        let what = format!("cuBLASLt {} GEMM {}", self.precision, self.shape.label());
        verify_probes(
            gpu,
            &what,
            self.shape,
            self.formats,
            self.precision,
            &self.d,
        )
    }

    fn randomize(&mut self, gpu: &Gpu, seed: u64) -> Result<(), String> {
        self.a.fill_random(gpu, self.formats.input, seed)?;
        self.b.fill_random(gpu, self.formats.input, seed ^ 0xB)
    }
}

impl Drop for LtGemm {
    fn drop(&mut self) {
        // SAFETY: each handle was created by cuBLASLt and is destroyed once; null ones were
        // never created. Errors at teardown are ignored.
        unsafe {
            for l in self.layouts {
                if !l.is_null() {
                    let _ = lt::destroy_matrix_layout(l);
                }
            }
            if !self.desc.is_null() {
                let _ = lt::destroy_matmul_desc(self.desc);
            }
            let _ = lt::destroy_handle(self.handle);
        }
    }
}

/// cuBLAS SGEMM (FP32, no TF32: cuBLAS's default math mode) or DGEMM.
pub struct BlasGemm {
    precision: Precision,
    formats: Formats,
    n: u64,
    blas: CudaBlas,
    a: Buf,
    b: Buf,
    d: Buf,
}

impl BlasGemm {
    pub fn new(gpu: &Gpu, p: Precision, n: u64) -> Result<BlasGemm, String> {
        let f = match p {
            Precision::Fp32 | Precision::Fp64 | Precision::Fp64Tensor => {
                formats(p).expect("listed")
            }
            _ => return Err(format!("no cuBLAS GEMM for {p}")),
        };
        let blas =
            CudaBlas::new(gpu.stream.clone()).map_err(|e| format!("cuBLAS create: {e:?}"))?;
        let mut g = BlasGemm {
            precision: p,
            formats: f,
            n,
            blas,
            a: Buf::alloc(gpu, f.input, (n * n) as usize)?,
            b: Buf::alloc(gpu, f.input, (n * n) as usize)?,
            d: Buf::alloc(gpu, f.output, (n * n) as usize)?,
        };
        g.a.fill(gpu, f.input, SEED_A)?;
        g.b.fill(gpu, f.input, SEED_B)?;
        Ok(g)
    }
}

impl Gemmer for BlasGemm {
    fn call(&mut self) -> Result<(), String> {
        let n = self.n as i32;
        let (t, op_n) = (
            cublas::sys::cublasOperation_t::CUBLAS_OP_T,
            cublas::sys::cublasOperation_t::CUBLAS_OP_N,
        );
        let r = match (&self.a, &self.b, &mut self.d) {
            (Buf::B32(a), Buf::B32(b), Buf::B32(d)) => {
                let cfg = GemmConfig {
                    transa: t,
                    transb: op_n,
                    m: n,
                    n,
                    k: n,
                    alpha: 1.0f32,
                    lda: n,
                    ldb: n,
                    beta: 0.0f32,
                    ldc: n,
                };
                // SAFETY: the buffers are n x n f32 bit patterns (transmuted views of the same
                // length), matching lda = ldb = ldc = n.
                unsafe {
                    let (a, b) = (
                        a.transmute::<f32>(a.len()).ok_or("view")?,
                        b.transmute::<f32>(b.len()).ok_or("view")?,
                    );
                    let len = d.len();
                    let mut d = d.transmute_mut::<f32>(len).ok_or("view")?;
                    self.blas.gemm(cfg, &a, &b, &mut d)
                }
            }
            (Buf::B64(a), Buf::B64(b), Buf::B64(d)) => {
                let cfg = GemmConfig {
                    transa: t,
                    transb: op_n,
                    m: n,
                    n,
                    k: n,
                    alpha: 1.0f64,
                    lda: n,
                    ldb: n,
                    beta: 0.0f64,
                    ldc: n,
                };
                // SAFETY: the buffers are n x n f64 bit patterns, matching lda = ldb = ldc = n.
                unsafe {
                    let (a, b) = (
                        a.transmute::<f64>(a.len()).ok_or("view")?,
                        b.transmute::<f64>(b.len()).ok_or("view")?,
                    );
                    let len = d.len();
                    let mut d = d.transmute_mut::<f64>(len).ok_or("view")?;
                    self.blas.gemm(cfg, &a, &b, &mut d)
                }
            }
            _ => return Err("cuBLAS GEMM: buffers of the wrong width".into()),
        };
        r.map_err(|e| format!("cuBLAS {} GEMM: {e:?}", self.precision))
    }

    fn shape(&self) -> GemmShape {
        GemmShape::square(self.n)
    }

    fn verify(&mut self, gpu: &Gpu) -> Result<(), String> {
        let what = format!("cuBLAS {} GEMM {}", self.precision, self.shape().label());
        verify_probes(
            gpu,
            &what,
            self.shape(),
            self.formats,
            self.precision,
            &self.d,
        )
    }

    fn randomize(&mut self, gpu: &Gpu, seed: u64) -> Result<(), String> {
        self.a.fill_random(gpu, self.formats.input, seed)?;
        self.b.fill_random(gpu, self.formats.input, seed ^ 0xB)
    }
}
