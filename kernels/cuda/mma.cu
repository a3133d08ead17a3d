// Tensor-core throughput with warp-level `mma.sync`: FP16, BF16, TF32 and INT8 (sm_80+), and
// FP64 DMMA (sm_80+; the A100/H100 FP64 tensor path).
//
// Each warp loads one A fragment and NACC B fragments from global memory once, keeps them in
// registers, and then issues STEPS x NACC `mma.sync` per loop iteration into NACC independent
// accumulators (a 16 x 8*NACC output tile; 8 x 8*NACC for DMMA), fully unrolled. With NACC
// independent accumulators per warp and 8 warps per block, the tensor pipe always has work
// queued while earlier MMAs are in flight.
//
// Inputs (all kernels but mma_f64): `a_words` is A, 16 x K row-major, and `bt_words` is B
// stored column-major (Bt, 8*NACC x K row-major), both as 32-bit words: a row of A or Bt is
// always 8 words (K = 16 halves, 8 TF32 values or 32 bytes). The fragment layouts are the
// PTX ISA's for mma.m16n8k16 (.f16/.bf16), m16n8k8 (.tf32) and m16n8k32 (.s8): in each, lane
// (g = lane/4, t = lane%4) holds A words (g, t), (g+8, t), (g, t+4), (g+8, t+4) and, for
// accumulator j, Bt words (8j+g, t) and (8j+g, t+4); C/D element (g, 2t+c) and (g+8, 2t+c).
//
// Outputs: block 0 warp 0 stores its D tile (row-major, 16 x 8*NACC) to `tile` so that the host
// can check it against a CPU reference; every thread stores the sum of its accumulators to
// `sink`, so that no warp's work is dead and the host can check that all warps agree.
// After `iters` iterations D = iters * STEPS * (A x B). `clocks` gets each block's cycle and
// nanosecond stamps (below).
//
// No #include: NVRTC compiles this file alone, without the CUDA headers; the registry puts
// clocks.cuh (the clock stamps: clock_start, clock_end) in front of it.

#if __CUDA_ARCH__ < 800
#error "mma.cu needs sm_80 or newer (mma.sync bf16/tf32, DMMA)"
#endif

#define NACC 8
#define STEPS 16
#define THREADS 256
#define TILE_N (8 * NACC)

__device__ __forceinline__ void mma_f16(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma_tf32(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void mma_s8(int (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// The 16 x 8*NACC kernels share everything but the instruction and the accumulator type.
// A and Bt rows are 8 words each in every format here: 16 halves (f16/bf16, k16), 8 TF32
// values (k8) or 32 bytes (s8, k32).
#define MMA_KERNEL(NAME, ACC_T, MMA)                                                         \
    extern "C" __global__ void __launch_bounds__(THREADS)                                   \
    NAME(const unsigned* __restrict__ a_words, const unsigned* __restrict__ bt_words,        \
         ACC_T* __restrict__ tile, ACC_T* __restrict__ sink, int iters,                      \
         unsigned long long* __restrict__ clocks) {                                          \
        clock_start(clocks);                                                                 \
        const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;                      \
        const unsigned a[4] = {a_words[g * 8 + t], a_words[(g + 8) * 8 + t],                 \
                               a_words[g * 8 + t + 4], a_words[(g + 8) * 8 + t + 4]};       \
        unsigned b[NACC][2];                                                                 \
        ACC_T c[NACC][4];                                                                    \
        _Pragma("unroll") for (int j = 0; j < NACC; ++j) {                                   \
            b[j][0] = bt_words[(8 * j + g) * 8 + t];                                         \
            b[j][1] = bt_words[(8 * j + g) * 8 + t + 4];                                     \
            c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0;                                       \
        }                                                                                    \
        _Pragma("unroll 1") for (int i = 0; i < iters; ++i) {                             \
            _Pragma("unroll") for (int s = 0; s < STEPS; ++s) {                              \
                _Pragma("unroll") for (int j = 0; j < NACC; ++j) MMA(c[j], a, b[j]);         \
            }                                                                                \
        }                                                                                    \
        ACC_T sum = 0;                                                                       \
        _Pragma("unroll") for (int j = 0; j < NACC; ++j) {                                   \
            sum += c[j][0] + c[j][1] + c[j][2] + c[j][3];                                    \
        }                                                                                    \
        sink[blockIdx.x * blockDim.x + threadIdx.x] = sum;                                   \
        if (blockIdx.x == 0 && threadIdx.x < 32) {                                           \
            _Pragma("unroll") for (int j = 0; j < NACC; ++j) {                               \
                tile[g * TILE_N + 8 * j + 2 * t] = c[j][0];                                  \
                tile[g * TILE_N + 8 * j + 2 * t + 1] = c[j][1];                              \
                tile[(g + 8) * TILE_N + 8 * j + 2 * t] = c[j][2];                            \
                tile[(g + 8) * TILE_N + 8 * j + 2 * t + 1] = c[j][3];                        \
            }                                                                                \
        }                                                                                    \
        clock_end(clocks);                                                                   \
    }

MMA_KERNEL(mma_f16, float, mma_f16)
MMA_KERNEL(mma_bf16, float, mma_bf16)
MMA_KERNEL(mma_tf32, float, mma_tf32)
MMA_KERNEL(mma_s8, int, mma_s8)

// FP64 DMMA, mma.m8n8k4: A is 8 x 4 row-major and Bt 8*NACC x 4 row-major, as doubles; lane
// (g, t) holds A(g, t) and, for accumulator j, Bt(8j+g, t); C/D elements (g, 2t) and (g, 2t+1).
// `tile` is 8 x 8*NACC row-major.
__device__ __forceinline__ void mma_f64_884(double (&c)[2], double a, double b) {
    asm volatile("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%0,%1}, {%2}, {%3}, {%0,%1};\n"
                 : "+d"(c[0]), "+d"(c[1])
                 : "d"(a), "d"(b));
}

extern "C" __global__ void __launch_bounds__(THREADS)
mma_f64(const double* __restrict__ a_in, const double* __restrict__ bt_in,
        double* __restrict__ tile, double* __restrict__ sink, int iters,
        unsigned long long* __restrict__ clocks) {
    clock_start(clocks);
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const double a = a_in[g * 4 + t];
    double b[NACC];
    double c[NACC][2];
#pragma unroll
    for (int j = 0; j < NACC; ++j) {
        b[j] = bt_in[(8 * j + g) * 4 + t];
        c[j][0] = c[j][1] = 0.0;
    }
#pragma unroll 1
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int s = 0; s < STEPS; ++s) {
#pragma unroll
            for (int j = 0; j < NACC; ++j) mma_f64_884(c[j], a, b[j]);
        }
    }
    double sum = 0.0;
#pragma unroll
    for (int j = 0; j < NACC; ++j) sum += c[j][0] + c[j][1];
    sink[blockIdx.x * blockDim.x + threadIdx.x] = sum;
    if (blockIdx.x == 0 && threadIdx.x < 32) {
#pragma unroll
        for (int j = 0; j < NACC; ++j) {
            tile[g * TILE_N + 8 * j + 2 * t] = c[j][0];
            tile[g * TILE_N + 8 * j + 2 * t + 1] = c[j][1];
        }
    }
    clock_end(clocks);
}
