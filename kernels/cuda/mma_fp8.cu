// Tensor-core throughput with warp-level `mma.sync` on FP8 (e4m3 x e4m3 -> f32), sm_89+.
//
// The same loop as mma.cu (which explains the structure, the fragment layouts and the outputs)
// with mma.m16n8k32.e4m3: A is 16 x 32 bytes and Bt 8*NACC x 32 bytes, 8 words a row, laid out
// as for .s8. It lives in its own file because `mma` on .e4m3 needs PTX ISA 8.4 (CUDA 12.4),
// while the other modules are built with CUDA 12.2 (PTX ISA 8.2) so that R535 drivers load
// them; this module's PTX needs an R550 or newer driver.
//
// No #include: NVRTC compiles this file alone, without the CUDA headers; the registry puts
// clocks.cuh (the clock stamps: clock_start, clock_end) in front of it.

#if __CUDA_ARCH__ < 890
#error "mma_fp8.cu needs sm_89 or newer (mma.sync on e4m3)"
#endif

#define NACC 8
#define STEPS 16
#define THREADS 256
#define TILE_N (8 * NACC)

__device__ __forceinline__ void mma_e4m3(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

extern "C" __global__ void __launch_bounds__(THREADS)
mma_fp8(const unsigned* __restrict__ a_words, const unsigned* __restrict__ bt_words,
        float* __restrict__ tile, float* __restrict__ sink, int iters,
        unsigned long long* __restrict__ clocks) {
    clock_start(clocks);
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const unsigned a[4] = {a_words[g * 8 + t], a_words[(g + 8) * 8 + t],
                           a_words[g * 8 + t + 4], a_words[(g + 8) * 8 + t + 4]};
    unsigned b[NACC][2];
    float c[NACC][4];
#pragma unroll
    for (int j = 0; j < NACC; ++j) {
        b[j][0] = bt_words[(8 * j + g) * 8 + t];
        b[j][1] = bt_words[(8 * j + g) * 8 + t + 4];
        c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.0f;
    }
#pragma unroll 1
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int s = 0; s < STEPS; ++s) {
#pragma unroll
            for (int j = 0; j < NACC; ++j) mma_e4m3(c[j], a, b[j]);
        }
    }
    float sum = 0.0f;
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
