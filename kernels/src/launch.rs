//! One safe launcher per kernel signature of `kernels/cuda/*.cu`, each checking the sizes its
//! kernel relies on before the launch, with a `// SAFETY:` line saying why the arguments match
//! the `.cu` signature. The kernels read and write only inside the bounds checked here.

use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use crate::clocks::STAMPS_PER_BLOCK;
use crate::gpu::Gpu;
use crate::registry::{shape, ModuleId};

/// A launch that failed, or was refused because a buffer is too small.
pub type LaunchResult = Result<(), String>;

fn config(grid: u32, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn need(what: &str, have: usize, want: usize) -> LaunchResult {
    if have < want {
        Err(format!("{what}: {have} elements, the kernel needs {want}"))
    } else {
        Ok(())
    }
}

/// Checks that `clocks` holds the stamps of every block of a `grid`-block launch.
fn check_clocks(clocks: &CudaSlice<u64>, grid: u32) -> LaunchResult {
    need("clocks", clocks.len(), grid as usize * STAMPS_PER_BLOCK)
}

/// A kernel function and the grid it is launched with, on one GPU.
pub struct Kernel<'g> {
    pub gpu: &'g Gpu,
    pub f: CudaFunction,
    pub grid: u32,
}

/// The buffers of an MMA kernel: inputs A and Bt, the output tile, one sink value per thread.
/// (The clock stamps are passed on their own: the host reads them after each timed launch.)
pub struct MmaBuffers<I, O> {
    pub a: CudaSlice<I>,
    pub bt: CudaSlice<I>,
    pub tile: CudaSlice<O>,
    pub sink: CudaSlice<O>,
}

/// Blocks to launch so that every SM is full: SMs x resident blocks per SM.
pub fn full_grid(gpu: &Gpu, f: &CudaFunction, threads: u32) -> Result<u32, String> {
    let per_sm = f
        .occupancy_max_active_blocks_per_multiprocessor(threads, 0, None)
        .map_err(|e| format!("occupancy: {e}"))?;
    Ok(gpu.sm_count * per_sm.max(1))
}

/// The four `fma.cu` kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FmaKernel {
    F64,
    F32,
    F16x2,
    Bf16x2,
}

impl FmaKernel {
    pub fn entry(self) -> &'static str {
        match self {
            FmaKernel::F64 => "fma_f64",
            FmaKernel::F32 => "fma_f32",
            FmaKernel::F16x2 => "fma_f16x2",
            FmaKernel::Bf16x2 => "fma_bf16x2",
        }
    }

    /// Values per FMA: 2 for the packed pairs.
    pub fn lanes(self) -> u32 {
        match self {
            FmaKernel::F16x2 | FmaKernel::Bf16x2 => 2,
            _ => 1,
        }
    }

    pub fn function(self, gpu: &Gpu) -> Result<CudaFunction, String> {
        gpu.function(ModuleId::Fma, self.entry())
    }
}

/// `fma_f64(double* out, double a, double b, int iters, unsigned long long* clocks)`.
pub fn fma_f64(
    k: &Kernel,
    out: &mut CudaSlice<f64>,
    a: f64,
    b: f64,
    iters: i32,
    clocks: &mut CudaSlice<u64>,
) -> LaunchResult {
    let threads = shape::FMA_THREADS;
    need("fma_f64 out", out.len(), (k.grid * threads) as usize)?;
    check_clocks(clocks, k.grid)?;
    let mut l = k.gpu.stream.launch_builder(&k.f);
    l.arg(out).arg(&a).arg(&b).arg(&iters).arg(clocks);
    // SAFETY: fma_f64(double* out, double a, double b, int iters, unsigned long long* clocks):
    // out is a device buffer of f64 with one element per thread and clocks of u64 with four per
    // block (checked above), a and b are f64, iters an i32.
    unsafe { l.launch(config(k.grid, threads)) }.map_err(|e| format!("fma_f64: {e}"))?;
    Ok(())
}

/// `fma_f32(float* out, float a, float b, int iters, unsigned long long* clocks)`.
pub fn fma_f32(
    k: &Kernel,
    out: &mut CudaSlice<f32>,
    a: f32,
    b: f32,
    iters: i32,
    clocks: &mut CudaSlice<u64>,
) -> LaunchResult {
    let threads = shape::FMA_THREADS;
    need("fma_f32 out", out.len(), (k.grid * threads) as usize)?;
    check_clocks(clocks, k.grid)?;
    let mut l = k.gpu.stream.launch_builder(&k.f);
    l.arg(out).arg(&a).arg(&b).arg(&iters).arg(clocks);
    // SAFETY: fma_f32(float* out, float a, float b, int iters, unsigned long long* clocks):
    // out is a device buffer of f32 with one element per thread and clocks of u64 with four per
    // block (checked above), a and b are f32, iters an i32.
    unsafe { l.launch(config(k.grid, threads)) }.map_err(|e| format!("fma_f32: {e}"))?;
    Ok(())
}

/// `fma_f16x2` / `fma_bf16x2(float* out, unsigned a2, unsigned b2, int iters, unsigned long
/// long* clocks)`: `a2`, `b2` hold a and b in both 16-bit halves.
pub fn fma_half2(
    k: &Kernel,
    out: &mut CudaSlice<f32>,
    a2: u32,
    b2: u32,
    iters: i32,
    clocks: &mut CudaSlice<u64>,
) -> LaunchResult {
    let threads = shape::FMA_THREADS;
    need("fma_half2 out", out.len(), (k.grid * threads) as usize)?;
    check_clocks(clocks, k.grid)?;
    let mut l = k.gpu.stream.launch_builder(&k.f);
    l.arg(out).arg(&a2).arg(&b2).arg(&iters).arg(clocks);
    // SAFETY: fma_f16x2/fma_bf16x2(float* out, unsigned a2, unsigned b2, int iters, unsigned
    // long long* clocks): out is a device buffer of f32 with one element per thread and clocks
    // of u64 with four per block (checked above), a2 and b2 are u32, iters an i32.
    unsafe { l.launch(config(k.grid, threads)) }.map_err(|e| format!("fma_half2: {e}"))?;
    Ok(())
}

/// The MMA kernels of `mma.cu`, `mma_fp8.cu`, `dmma.cu` and `wgmma.cu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmaKernel {
    F16,
    Bf16,
    Tf32,
    S8,
    F64,
    Fp8,
    /// Hopper's FP64 m16n8k16 (`dmma.cu`).
    F64K16,
    WgBf16,
    WgF16,
    WgFp8,
    WgTf32,
    WgS8,
}

impl MmaKernel {
    pub fn module(self) -> ModuleId {
        match self {
            MmaKernel::F16 | MmaKernel::Bf16 | MmaKernel::Tf32 | MmaKernel::S8 | MmaKernel::F64 => {
                ModuleId::Mma
            }
            MmaKernel::Fp8 => ModuleId::MmaFp8,
            MmaKernel::F64K16 => ModuleId::Dmma,
            MmaKernel::WgBf16
            | MmaKernel::WgF16
            | MmaKernel::WgFp8
            | MmaKernel::WgTf32
            | MmaKernel::WgS8 => ModuleId::Wgmma,
        }
    }

    pub fn entry(self) -> &'static str {
        match self {
            MmaKernel::F16 => "mma_f16",
            MmaKernel::Bf16 => "mma_bf16",
            MmaKernel::Tf32 => "mma_tf32",
            MmaKernel::S8 => "mma_s8",
            MmaKernel::F64 => "mma_f64",
            MmaKernel::Fp8 => "mma_fp8",
            MmaKernel::F64K16 => "dmma_f64",
            MmaKernel::WgBf16 => "wgmma_bf16",
            MmaKernel::WgF16 => "wgmma_f16",
            MmaKernel::WgFp8 => "wgmma_fp8",
            MmaKernel::WgTf32 => "wgmma_tf32",
            MmaKernel::WgS8 => "wgmma_s8",
        }
    }

    pub fn is_wgmma(self) -> bool {
        self.module() == ModuleId::Wgmma
    }

    pub fn threads(self) -> u32 {
        if self.is_wgmma() {
            shape::WG_THREADS
        } else {
            shape::MMA_THREADS
        }
    }

    /// The output tile's (rows, columns) and the inputs' K.
    pub fn tile(self) -> (usize, usize, usize) {
        let n = (8 * shape::MMA_NACC) as usize;
        let wn = shape::WG_TILE_N as usize;
        match self {
            MmaKernel::F16 | MmaKernel::Bf16 => (16, n, 16),
            MmaKernel::Tf32 => (16, n, 8),
            MmaKernel::S8 | MmaKernel::Fp8 => (16, n, 32),
            MmaKernel::F64 => (8, n, 4),
            MmaKernel::F64K16 => (16, n, 16),
            MmaKernel::WgBf16 | MmaKernel::WgF16 => (shape::WG_TILE_M as usize, wn, 16),
            MmaKernel::WgFp8 | MmaKernel::WgS8 => (shape::WG_TILE_M as usize, wn, 32),
            MmaKernel::WgTf32 => (shape::WG_TILE_M as usize, wn, 8),
        }
    }

    pub fn function(self, gpu: &Gpu) -> Result<CudaFunction, String> {
        gpu.function(self.module(), self.entry())
    }
}

/// Checks the buffers of an MMA kernel: A and Bt hold the tile's inputs (in `unit`-byte
/// elements), tile one output tile and sink one value per thread.
fn check_mma(
    which: MmaKernel,
    grid: u32,
    unit: usize,
    a: usize,
    bt: usize,
    tile: usize,
    sink: usize,
) -> LaunchResult {
    let (m, n, kk) = which.tile();
    let elem = match which {
        MmaKernel::F16 | MmaKernel::Bf16 | MmaKernel::WgBf16 | MmaKernel::WgF16 => 2,
        MmaKernel::Tf32 | MmaKernel::WgTf32 => 4,
        MmaKernel::F64 | MmaKernel::F64K16 => 8,
        MmaKernel::S8 | MmaKernel::Fp8 | MmaKernel::WgFp8 | MmaKernel::WgS8 => 1,
    };
    need("A", a * unit, m * kk * elem)?;
    need("Bt", bt * unit, n * kk * elem)?;
    need("tile", tile, m * n)?;
    need("sink", sink, (grid * which.threads()) as usize)
}

/// `mma_f16`, `mma_bf16`, `mma_tf32`, `mma_fp8`, `wgmma_*`(const unsigned* a_words, const
/// unsigned* bt_words, float* tile, float* sink, int iters, unsigned long long* clocks).
pub fn mma_f32acc(
    k: &Kernel,
    which: MmaKernel,
    b: &mut MmaBuffers<u32, f32>,
    iters: i32,
    clocks: &mut CudaSlice<u64>,
) -> LaunchResult {
    if matches!(
        which,
        MmaKernel::S8 | MmaKernel::WgS8 | MmaKernel::F64 | MmaKernel::F64K16
    ) {
        return Err(format!("{} does not accumulate in f32", which.entry()));
    }
    check_mma(
        which,
        k.grid,
        4,
        b.a.len(),
        b.bt.len(),
        b.tile.len(),
        b.sink.len(),
    )?;
    check_clocks(clocks, k.grid)?;
    let mut l = k.gpu.stream.launch_builder(&k.f);
    l.arg(&b.a)
        .arg(&b.bt)
        .arg(&mut b.tile)
        .arg(&mut b.sink)
        .arg(&iters)
        .arg(clocks);
    // SAFETY: (const unsigned* a_words, const unsigned* bt_words, float* tile, float* sink,
    // int iters, unsigned long long* clocks): A and Bt are u32 buffers holding the tile's
    // inputs, tile holds one f32 output tile, sink one f32 per thread and clocks four u64 per
    // block (all checked above), iters is an i32.
    unsafe { l.launch(config(k.grid, which.threads())) }
        .map_err(|e| format!("{}: {e}", which.entry()))?;
    Ok(())
}

/// `mma_s8`, `wgmma_s8`(const unsigned* a_words, const unsigned* bt_words, int* tile, int*
/// sink, int iters, unsigned long long* clocks).
pub fn mma_s8(
    k: &Kernel,
    which: MmaKernel,
    b: &mut MmaBuffers<u32, i32>,
    iters: i32,
    clocks: &mut CudaSlice<u64>,
) -> LaunchResult {
    if !matches!(which, MmaKernel::S8 | MmaKernel::WgS8) {
        return Err(format!("{} does not accumulate in s32", which.entry()));
    }
    check_mma(
        which,
        k.grid,
        4,
        b.a.len(),
        b.bt.len(),
        b.tile.len(),
        b.sink.len(),
    )?;
    check_clocks(clocks, k.grid)?;
    let mut l = k.gpu.stream.launch_builder(&k.f);
    l.arg(&b.a)
        .arg(&b.bt)
        .arg(&mut b.tile)
        .arg(&mut b.sink)
        .arg(&iters)
        .arg(clocks);
    // SAFETY: mma_s8(const unsigned*, const unsigned*, int* tile, int* sink, int iters,
    // unsigned long long* clocks): A and Bt are u32 buffers holding the s8 inputs, tile one i32
    // tile, sink one i32 per thread and clocks four u64 per block (checked above), iters an i32.
    unsafe { l.launch(config(k.grid, which.threads())) }
        .map_err(|e| format!("{}: {e}", which.entry()))?;
    Ok(())
}

/// `mma_f64`, `dmma_f64`(const double* a, const double* bt, double* tile, double* sink, int
/// iters, unsigned long long* clocks).
pub fn mma_f64(
    k: &Kernel,
    which: MmaKernel,
    b: &mut MmaBuffers<f64, f64>,
    iters: i32,
    clocks: &mut CudaSlice<u64>,
) -> LaunchResult {
    if !matches!(which, MmaKernel::F64 | MmaKernel::F64K16) {
        return Err(format!("{} does not take f64 inputs", which.entry()));
    }
    check_mma(
        which,
        k.grid,
        8,
        b.a.len(),
        b.bt.len(),
        b.tile.len(),
        b.sink.len(),
    )?;
    check_clocks(clocks, k.grid)?;
    let mut l = k.gpu.stream.launch_builder(&k.f);
    l.arg(&b.a)
        .arg(&b.bt)
        .arg(&mut b.tile)
        .arg(&mut b.sink)
        .arg(&iters)
        .arg(clocks);
    // SAFETY: mma_f64/dmma_f64(const double*, const double*, double* tile, double* sink, int
    // iters, unsigned long long* clocks): A and Bt are f64 buffers of the tile's inputs (sized
    // for `which`'s tile), tile one f64 tile, sink one f64 per thread and clocks four u64 per
    // block (checked above), iters an i32.
    unsafe { l.launch(config(k.grid, which.threads())) }
        .map_err(|e| format!("{}: {e}", which.entry()))?;
    Ok(())
}

/// Launch geometry of the memory kernels: a full grid, at most one thread per 16-byte element.
pub fn memory_grid(gpu: &Gpu, f: &CudaFunction, n16: u64) -> Result<u32, String> {
    let threads = u64::from(shape::MEM_THREADS);
    let full = u64::from(full_grid(gpu, f, shape::MEM_THREADS)?);
    Ok(full.min(n16.div_ceil(threads)).max(1) as u32)
}

/// Length in 16-byte elements of a word buffer (rounded down).
fn n16(words: &CudaSlice<u32>) -> u64 {
    words.len() as u64 / 4
}

/// `mem_read(const uint4* src, unsigned long long n16, unsigned* sink)`: sink gets one checksum
/// per warp.
pub fn mem_read(k: &Kernel, src: &CudaSlice<u32>, sink: &mut CudaSlice<u32>) -> LaunchResult {
    let n = n16(src);
    need(
        "mem_read sink",
        sink.len(),
        (k.grid * shape::MEM_THREADS / 32) as usize,
    )?;
    let mut l = k.gpu.stream.launch_builder(&k.f);
    l.arg(src).arg(&n).arg(sink);
    // SAFETY: mem_read(const uint4* src, unsigned long long n16, unsigned* sink): src is a
    // 16-byte-aligned device allocation of at least n16 * 16 bytes (n16 = words / 4), sink
    // holds one u32 per warp (checked above).
    unsafe { l.launch(config(k.grid, shape::MEM_THREADS)) }
        .map_err(|e| format!("mem_read: {e}"))?;
    Ok(())
}

/// `mem_write(uint4* dst, unsigned long long n16, unsigned value)`.
pub fn mem_write(k: &Kernel, dst: &mut CudaSlice<u32>, value: u32) -> LaunchResult {
    let n = n16(dst);
    let mut l = k.gpu.stream.launch_builder(&k.f);
    l.arg(dst).arg(&n).arg(&value);
    // SAFETY: mem_write(uint4* dst, unsigned long long n16, unsigned value): dst is a
    // 16-byte-aligned device allocation of at least n16 * 16 bytes, value a u32.
    unsafe { l.launch(config(k.grid, shape::MEM_THREADS)) }
        .map_err(|e| format!("mem_write: {e}"))?;
    Ok(())
}

/// `mem_copy(uint4* dst, const uint4* src, unsigned long long n16)`.
pub fn mem_copy(k: &Kernel, dst: &mut CudaSlice<u32>, src: &CudaSlice<u32>) -> LaunchResult {
    let n = n16(src).min(n16(dst));
    let mut l = k.gpu.stream.launch_builder(&k.f);
    l.arg(dst).arg(src).arg(&n);
    // SAFETY: mem_copy(uint4* dst, const uint4* src, unsigned long long n16): both are
    // 16-byte-aligned device allocations of at least n16 * 16 bytes (n16 is the smaller).
    unsafe { l.launch(config(k.grid, shape::MEM_THREADS)) }
        .map_err(|e| format!("mem_copy: {e}"))?;
    Ok(())
}

/// `mem_triad(float4* a, const float4* b, const float4* c, float s, unsigned long long n16)`,
/// on buffers of f32 bit patterns.
pub fn mem_triad(
    k: &Kernel,
    a: &mut CudaSlice<u32>,
    b: &CudaSlice<u32>,
    c: &CudaSlice<u32>,
    s: f32,
) -> LaunchResult {
    let n = n16(a).min(n16(b)).min(n16(c));
    let mut l = k.gpu.stream.launch_builder(&k.f);
    l.arg(a).arg(b).arg(c).arg(&s).arg(&n);
    // SAFETY: mem_triad(float4* a, const float4* b, const float4* c, float s,
    // unsigned long long n16): a, b and c are 16-byte-aligned device allocations of 32-bit
    // words (read as f32) of at least n16 * 16 bytes each (n16 is the smallest), s an f32.
    unsafe { l.launch(config(k.grid, shape::MEM_THREADS)) }
        .map_err(|e| format!("mem_triad: {e}"))?;
    Ok(())
}

/// Element types of the `fill_b*` kernels.
pub trait FillElem: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + Copy {
    const ENTRY: &'static str;
}
impl FillElem for u8 {
    const ENTRY: &'static str = "fill_b8";
}
impl FillElem for u16 {
    const ENTRY: &'static str = "fill_b16";
}
impl FillElem for u32 {
    const ENTRY: &'static str = "fill_b32";
}
impl FillElem for u64 {
    const ENTRY: &'static str = "fill_b64";
}

/// `fill_b{8,16,32,64}(T* dst, unsigned long long n, unsigned seed, const T* table)`:
/// dst[i] = table[hash(i, seed) % 16] for every element of `dst`.
pub fn fill<T: FillElem>(
    gpu: &Gpu,
    dst: &mut CudaSlice<T>,
    seed: u32,
    table: &CudaSlice<T>,
) -> LaunchResult {
    need(T::ENTRY, table.len(), 16)?;
    let f = gpu.function(ModuleId::Memory, T::ENTRY)?;
    let n = dst.len() as u64;
    let grid = memory_grid(gpu, &f, n.div_ceil(16).max(1))?;
    let mut l = gpu.stream.launch_builder(&f);
    l.arg(dst).arg(&n).arg(&seed).arg(table);
    // SAFETY: fill_bN(T* dst, unsigned long long n, unsigned seed, const T* table): dst has n
    // elements of T, table 16 (checked above), T is the kernel's element type by FillElem.
    unsafe { l.launch(config(grid, shape::MEM_THREADS)) }
        .map_err(|e| format!("{}: {e}", T::ENTRY))?;
    Ok(())
}
