// FP64 tensor-core throughput on Hopper with `mma.sync` m16n8k16 (DMMA.16x8x16): eight times the
// work per instruction of the m8n8k4 DMMA in mma.cu, which Ampere also runs. sm_90a only here
// (the instruction needs sm_90; the module ships for Hopper's target like wgmma.cu, and on
// Blackwell the FP64 tensor path runs no faster than FP64 FMA).
//
// The loop is mma.cu's: each warp loads one A fragment and NACC B fragments once, keeps them in
// registers, and issues STEPS x NACC `mma.sync` per loop iteration into NACC independent
// accumulators (a 16 x 8*NACC output tile), fully unrolled.
//
// Inputs: A is 16 x 16 row-major and Bt (B stored column-major) 8*NACC x 16 row-major, as
// doubles. The fragment layouts are the PTX ISA's for mma.m16n8k16 .f64: lane (g = lane/4,
// t = lane%4) holds A(g + 8*(i%2), t + 4*(i/2)) in a[i] (i < 8) and, for accumulator j,
// Bt(8j+g, t + 4*i) in b[j][i] (i < 4); C/D element (g + 8*(i/2), 2t + i%2) in c[j][i].
//
// Outputs: block 0 warp 0 stores its D tile (row-major, 16 x 8*NACC) to `tile`; every thread
// stores the sum of its accumulators to `sink`; `clocks` gets each block's cycle and nanosecond
// stamps (below). After `iters` iterations D = iters * STEPS * (A x B).
//
// No #include: NVRTC compiles this file alone, without the CUDA headers; the registry puts
// clocks.cuh (the clock stamps: clock_start, clock_end) in front of it.

#if !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "dmma.cu needs the sm_90a target (compute_90a): mma.m16n8k16 on f64 is Hopper's"
#endif

#define NACC 8
#define STEPS 16
#define THREADS 256
#define TILE_N (8 * NACC)

__device__ __forceinline__ void mma_f64_16816(double (&c)[4], const double (&a)[8],
                                              const double (&b)[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f64.f64.f64.f64 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7,%8,%9,%10,%11}, {%12,%13,%14,%15}, {%0,%1,%2,%3};\n"
        : "+d"(c[0]), "+d"(c[1]), "+d"(c[2]), "+d"(c[3])
        : "d"(a[0]), "d"(a[1]), "d"(a[2]), "d"(a[3]), "d"(a[4]), "d"(a[5]), "d"(a[6]), "d"(a[7]),
          "d"(b[0]), "d"(b[1]), "d"(b[2]), "d"(b[3]));
}

extern "C" __global__ void __launch_bounds__(THREADS)
dmma_f64(const double* __restrict__ a_in, const double* __restrict__ bt_in,
         double* __restrict__ tile, double* __restrict__ sink, int iters,
         unsigned long long* __restrict__ clocks) {
    clock_start(clocks);
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    double a[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) a[i] = a_in[(g + 8 * (i & 1)) * 16 + t + 4 * (i >> 1)];
    double b[NACC][4];
    double c[NACC][4];
#pragma unroll
    for (int j = 0; j < NACC; ++j) {
#pragma unroll
        for (int i = 0; i < 4; ++i) b[j][i] = bt_in[(8 * j + g) * 16 + t + 4 * i];
        c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.0;
    }
#pragma unroll 1
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int s = 0; s < STEPS; ++s) {
#pragma unroll
            for (int j = 0; j < NACC; ++j) mma_f64_16816(c[j], a, b[j]);
        }
    }
    double sum = 0.0;
#pragma unroll
    for (int j = 0; j < NACC; ++j) sum += c[j][0] + c[j][1] + c[j][2] + c[j][3];
    sink[blockIdx.x * blockDim.x + threadIdx.x] = sum;
    if (blockIdx.x == 0 && threadIdx.x < 32) {
#pragma unroll
        for (int j = 0; j < NACC; ++j) {
            tile[g * TILE_N + 8 * j + 2 * t] = c[j][0];
            tile[g * TILE_N + 8 * j + 2 * t + 1] = c[j][1];
            tile[(g + 8) * TILE_N + 8 * j + 2 * t] = c[j][2];
            tile[(g + 8) * TILE_N + 8 * j + 2 * t + 1] = c[j][3];
        }
    }
    clock_end(clocks);
}
