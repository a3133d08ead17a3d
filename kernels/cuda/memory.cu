// Device-memory bandwidth: read, write, copy and triad (a = b + s * c), with 16-byte accesses
// (uint4 / float4) in grid-stride loops, four independent accesses per thread in flight per
// loop iteration, so that enough bytes are outstanding to cover DRAM latency. Plus the fill
// kernels that lay out the inputs of the library GEMMs and of these checks.
//
// Checksum (what the host checks): `mem_read` adds up (word ^ word_index) over the 32-bit
// words it reads, wrapping at 2^32; the index keeps a copy or a fill that lands words in the
// wrong place from passing. Each warp stores its partial sum to `sink[global warp id]`.
//
// No #include: NVRTC compiles this file alone, without the CUDA headers.

#if __CUDA_ARCH__ < 800
#error "memory.cu is built for sm_80 or newer"
#endif

#define THREADS 256
#define U64 unsigned long long

__device__ __forceinline__ unsigned mix(uint4 v, U64 i) {
    const unsigned w = (unsigned)(i * 4);
    return (v.x ^ w) + (v.y ^ (w + 1)) + (v.z ^ (w + 2)) + (v.w ^ (w + 3));
}

// n16: length in 16-byte elements.
extern "C" __global__ void __launch_bounds__(THREADS)
mem_read(const uint4* __restrict__ src, U64 n16, unsigned* __restrict__ sink) {
    const U64 stride = (U64)gridDim.x * blockDim.x;
    U64 i = (U64)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned acc = 0;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        const uint4 v0 = src[i], v1 = src[i + stride], v2 = src[i + 2 * stride],
                    v3 = src[i + 3 * stride];
        acc += mix(v0, i) + mix(v1, i + stride) + mix(v2, i + 2 * stride) + mix(v3, i + 3 * stride);
    }
    for (; i < n16; i += stride) acc += mix(src[i], i);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) sink[(blockIdx.x * blockDim.x + threadIdx.x) >> 5] = acc;
}

extern "C" __global__ void __launch_bounds__(THREADS)
mem_write(uint4* __restrict__ dst, U64 n16, unsigned value) {
    const U64 stride = (U64)gridDim.x * blockDim.x;
    U64 i = (U64)blockIdx.x * blockDim.x + threadIdx.x;
    const uint4 v = make_uint4(value, value, value, value);
    for (; i + 3 * stride < n16; i += 4 * stride) {
        dst[i] = v;
        dst[i + stride] = v;
        dst[i + 2 * stride] = v;
        dst[i + 3 * stride] = v;
    }
    for (; i < n16; i += stride) dst[i] = v;
}

extern "C" __global__ void __launch_bounds__(THREADS)
mem_copy(uint4* __restrict__ dst, const uint4* __restrict__ src, U64 n16) {
    const U64 stride = (U64)gridDim.x * blockDim.x;
    U64 i = (U64)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        const uint4 v0 = src[i], v1 = src[i + stride], v2 = src[i + 2 * stride],
                    v3 = src[i + 3 * stride];
        dst[i] = v0;
        dst[i + stride] = v1;
        dst[i + 2 * stride] = v2;
        dst[i + 3 * stride] = v3;
    }
    for (; i < n16; i += stride) dst[i] = src[i];
}

__device__ __forceinline__ float4 triad4(float4 b, float4 c, float s) {
    return make_float4(fmaf(s, c.x, b.x), fmaf(s, c.y, b.y), fmaf(s, c.z, b.z), fmaf(s, c.w, b.w));
}

// a = b + s * c, element-wise on floats; n16: length of each array in 16-byte elements.
extern "C" __global__ void __launch_bounds__(THREADS)
mem_triad(float4* __restrict__ a, const float4* __restrict__ b, const float4* __restrict__ c,
          float s, U64 n16) {
    const U64 stride = (U64)gridDim.x * blockDim.x;
    U64 i = (U64)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        const float4 b0 = b[i], b1 = b[i + stride], b2 = b[i + 2 * stride], b3 = b[i + 3 * stride];
        const float4 c0 = c[i], c1 = c[i + stride], c2 = c[i + 2 * stride], c3 = c[i + 3 * stride];
        a[i] = triad4(b0, c0, s);
        a[i + stride] = triad4(b1, c1, s);
        a[i + 2 * stride] = triad4(b2, c2, s);
        a[i + 3 * stride] = triad4(b3, c3, s);
    }
    for (; i < n16; i += stride) a[i] = triad4(b[i], c[i], s);
}

// Fill kernels: element i = table[hash(i, seed) % 16], for 1-, 2-, 4- and 8-byte elements.
// The host computes the same function (kernels/src/check.rs) to build its reference without
// copying the inputs back.
__device__ __forceinline__ unsigned fill_hash(U64 i, unsigned seed) {
    unsigned h = (unsigned)i ^ seed;
    h *= 0x9E3779B1u;
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    return h & 15u;
}

#define FILL_KERNEL(NAME, T)                                                                  \
    extern "C" __global__ void __launch_bounds__(THREADS)                                    \
    NAME(T* __restrict__ dst, U64 n, unsigned seed, const T* __restrict__ table) {           \
        const U64 stride = (U64)gridDim.x * blockDim.x;                                       \
        for (U64 i = (U64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)          \
            dst[i] = table[fill_hash(i, seed)];                                               \
    }

FILL_KERNEL(fill_b8, unsigned char)
FILL_KERNEL(fill_b16, unsigned short)
FILL_KERNEL(fill_b32, unsigned)
FILL_KERNEL(fill_b64, U64)
