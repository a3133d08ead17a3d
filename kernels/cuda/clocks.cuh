// The clock stamps of the compute kernels: the registry puts this text in front of each of
// fma.cu, mma.cu, mma_fp8.cu, wgmma.cu and dmma.cu (NVRTC compiles each alone, with no
// include path), so the stamps are written once.
//
// The clock this launch ran at, measured by the SMs themselves: thread 0 of each block stores
// %clock64 (the SM's cycle counter) and %globaltimer (nanoseconds) when the block starts, and
// again once all its threads are done, in clocks[4 * block + {0, 1, 2, 3}] = cycles at start,
// cycles at end, ns at start, ns at end. The host divides cycles by nanoseconds. The start is
// stored at once, so nothing stays live in registers across the timed loop.
__device__ __forceinline__ unsigned long long sm_cycles() {
    unsigned long long c;
    asm volatile("mov.u64 %0, %%clock64;" : "=l"(c));
    return c;
}

__device__ __forceinline__ unsigned long long global_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ void clock_start(unsigned long long* __restrict__ clocks) {
    if (threadIdx.x == 0) {
        clocks[4 * blockIdx.x] = sm_cycles();
        clocks[4 * blockIdx.x + 2] = global_ns();
    }
}

__device__ __forceinline__ void clock_end(unsigned long long* __restrict__ clocks) {
    __syncthreads();
    if (threadIdx.x == 0) {
        clocks[4 * blockIdx.x + 1] = sm_cycles();
        clocks[4 * blockIdx.x + 3] = global_ns();
    }
}
