// SIMT fused multiply-add throughput: FP64 DFMA, FP32 FFMA, and packed FP16x2 / BF16x2 HFMA2.
//
// Every thread runs CHAINS independent recurrences x <- fma(x, a, b), UNROLL steps per loop
// iteration, fully unrolled, so each warp always has CHAINS independent FMAs to issue and the
// loop counter costs one instruction in UNROLL * CHAINS. `a` and `b` are kernel arguments, so
// the compiler cannot fold the recurrence; the per-thread sum of the chains is stored to `out`,
// so none of it is dead code. `clocks` gets each block's cycle and nanosecond stamps (below).
//
// Closed form (what the host checks): after n = iters * UNROLL steps, chain j started at j holds
// a^n * j + b * (a^n - 1) / (a - 1), which is j + n * b for a = 1. With a = 1, b = 1 and small n
// every value is an exact small integer in every format, so the check is exact.
//
// No #include: NVRTC compiles this file alone, without the CUDA headers; the registry puts
// clocks.cuh (the clock stamps: clock_start, clock_end) in front of it. The packed half
// instructions are written in PTX for the same reason.

#if __CUDA_ARCH__ < 800
#error "fma.cu needs sm_80 or newer (fma.rn.bf16x2)"
#endif

#define CHAINS 8
#define UNROLL 32
#define THREADS 256

extern "C" __global__ void __launch_bounds__(THREADS)
fma_f64(double* __restrict__ out, double a, double b, int iters,
        unsigned long long* __restrict__ clocks) {
    clock_start(clocks);
    double x[CHAINS];
#pragma unroll
    for (int j = 0; j < CHAINS; ++j) x[j] = (double)j;
#pragma unroll 1
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
            for (int j = 0; j < CHAINS; ++j) x[j] = fma(x[j], a, b);
        }
    }
    double s = 0.0;
#pragma unroll
    for (int j = 0; j < CHAINS; ++j) s += x[j];
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
    clock_end(clocks);
}

extern "C" __global__ void __launch_bounds__(THREADS)
fma_f32(float* __restrict__ out, float a, float b, int iters,
        unsigned long long* __restrict__ clocks) {
    clock_start(clocks);
    float x[CHAINS];
#pragma unroll
    for (int j = 0; j < CHAINS; ++j) x[j] = (float)j;
#pragma unroll 1
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
            for (int j = 0; j < CHAINS; ++j) x[j] = fmaf(x[j], a, b);
        }
    }
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < CHAINS; ++j) s += x[j];
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
    clock_end(clocks);
}

// Both halves of a packed pair from one float (round to nearest even).
__device__ __forceinline__ unsigned pack_f16x2(float v) {
    unsigned r;
    asm("cvt.rn.f16x2.f32 %0, %1, %1;" : "=r"(r) : "f"(v));
    return r;
}

__device__ __forceinline__ unsigned pack_bf16x2(float v) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %1;" : "=r"(r) : "f"(v));
    return r;
}

// Sum of the two halves of a packed pair, in FP32.
__device__ __forceinline__ float sum_f16x2(unsigned v) {
    float lo, hi;
    asm("{\n\t.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\tcvt.f32.f16 %0, l;\n\tcvt.f32.f16 %1, h;\n\t}"
        : "=f"(lo), "=f"(hi) : "r"(v));
    return lo + hi;
}

// A bf16 is the upper half of an f32, so widening is a shift.
__device__ __forceinline__ float sum_bf16x2(unsigned v) {
    return __uint_as_float(v << 16) + __uint_as_float(v & 0xffff0000u);
}

// a2, b2: a and b in both halves (packed by the host). Each step is 2 FMAs (4 FLOP) per lane.
extern "C" __global__ void __launch_bounds__(THREADS)
fma_f16x2(float* __restrict__ out, unsigned a2, unsigned b2, int iters,
          unsigned long long* __restrict__ clocks) {
    clock_start(clocks);
    unsigned x[CHAINS];
#pragma unroll
    for (int j = 0; j < CHAINS; ++j) x[j] = pack_f16x2((float)j);
#pragma unroll 1
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
            for (int j = 0; j < CHAINS; ++j)
                asm("fma.rn.f16x2 %0, %0, %1, %2;" : "+r"(x[j]) : "r"(a2), "r"(b2));
        }
    }
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < CHAINS; ++j) s += sum_f16x2(x[j]);
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
    clock_end(clocks);
}

extern "C" __global__ void __launch_bounds__(THREADS)
fma_bf16x2(float* __restrict__ out, unsigned a2, unsigned b2, int iters,
           unsigned long long* __restrict__ clocks) {
    clock_start(clocks);
    unsigned x[CHAINS];
#pragma unroll
    for (int j = 0; j < CHAINS; ++j) x[j] = pack_bf16x2((float)j);
#pragma unroll 1
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
#pragma unroll
            for (int j = 0; j < CHAINS; ++j)
                asm("fma.rn.bf16x2 %0, %0, %1, %2;" : "+r"(x[j]) : "r"(a2), "r"(b2));
        }
    }
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < CHAINS; ++j) s += sum_bf16x2(x[j]);
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
    clock_end(clocks);
}
