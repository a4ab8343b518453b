// Device-side helpers shared by the kernel families (CUDA C++ only; included
// by kernels/*.cu, never by host C code).
#ifndef FG_K_COMMON_CUH
#define FG_K_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace fgk {

using bf16 = __nv_bfloat16;
using f16 = __half;

// fg_dtype codes, in fg_dtype's order.
enum { DT_F32 = 0, DT_F64 = 1, DT_BF16 = 2, DT_F16 = 3, DT_I32 = 4, DT_I64 = 5 };

template <typename T> struct TypeTag { using type = T; };

// Calls f(TypeTag<T>{}) for the element type of dtype code dt.
template <typename F> inline int dispatch_dtype(int dt, F &&f)
{
    switch (dt) {
    case DT_F32: return f(TypeTag<float>{});
    case DT_F64: return f(TypeTag<double>{});
    case DT_BF16: return f(TypeTag<bf16>{});
    case DT_F16: return f(TypeTag<f16>{});
    case DT_I32: return f(TypeTag<int32_t>{});
    case DT_I64: return f(TypeTag<int64_t>{});
    default: return static_cast<int>(cudaErrorInvalidValue);
    }
}

__device__ __forceinline__ int64_t ld_index(const void *p, int dt, int64_t i)
{
    return dt == DT_I32 ? static_cast<const int32_t *>(p)[i] : static_cast<const int64_t *>(p)[i];
}

// The CPU's fg__ld: any dtype as double.
__device__ __forceinline__ double ld_d(const void *p, int dt, int64_t i)
{
    switch (dt) {
    case DT_F32: return static_cast<const float *>(p)[i];
    case DT_F64: return static_cast<const double *>(p)[i];
    case DT_BF16: return __bfloat162float(static_cast<const bf16 *>(p)[i]);
    case DT_F16: return __half2float(static_cast<const f16 *>(p)[i]);
    case DT_I32: return static_cast<const int32_t *>(p)[i];
    default: return static_cast<double>(static_cast<const int64_t *>(p)[i]);
    }
}

// ---- element access for the row kernels ----
// Accumulator type: float for f32/bf16/f16 storage, double for f64.
template <class T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_acc(f16 v) { return __half2float(v); }

// Round once to the storage type (from double: through float for bf16/f16, like fg__st).
__device__ __forceinline__ void put(float &d, float v) { d = v; }
__device__ __forceinline__ void put(bf16 &d, float v) { d = __float2bfloat16_rn(v); }
__device__ __forceinline__ void put(f16 &d, float v) { d = __float2half_rn(v); }
__device__ __forceinline__ void put(double &d, double v) { d = v; }
__device__ __forceinline__ void put(float &d, double v) { d = static_cast<float>(v); }
__device__ __forceinline__ void put(bf16 &d, double v) { d = __float2bfloat16_rn(static_cast<float>(v)); }
__device__ __forceinline__ void put(f16 &d, double v) { d = __float2half_rn(static_cast<float>(v)); }

template <class T, int V> struct __align__(sizeof(T) * V) Chunk { T v[V]; };

// Elements [j, j + W) of a row: W > 1 only where p + j is 16-byte aligned and
// the row contiguous (step 1); W == 1 reads the single element p[j step].
template <int W, class T, class A>
__device__ __forceinline__ void ldw(const T *__restrict__ p, int64_t j, int64_t step, A (&out)[W])
{
    if constexpr (W == 1) {
        out[0] = to_acc(p[j * step]);
    } else {
        const Chunk<T, W> ch = *reinterpret_cast<const Chunk<T, W> *>(p + j);
#pragma unroll
        for (int k = 0; k < W; k++) out[k] = to_acc(ch.v[k]);
    }
}
template <int W, class T, class A>
__device__ __forceinline__ void stw(T *__restrict__ p, int64_t j, int64_t step, const A (&in)[W])
{
    if constexpr (W == 1) {
        put(p[j * step], in[0]);
    } else {
        Chunk<T, W> ch;
#pragma unroll
        for (int k = 0; k < W; k++) put(ch.v[k], in[k]);
        *reinterpret_cast<Chunk<T, W> *>(p + j) = ch;
    }
}

struct Add {
    template <class V> __device__ __forceinline__ V operator()(V a, V b) const { return a + b; }
};

// ---- warp and block reductions (fixed order: deterministic) ----
__device__ __forceinline__ float shfl(float v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
__device__ __forceinline__ double shfl(double v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
__device__ __forceinline__ long long shfl(long long v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }

// Over aligned groups of `width` lanes (a power of two <= 32); all 32 lanes must
// call. Values of other types need a shfl overload found by argument lookup.
template <class V, class Op> __device__ __forceinline__ V warp_reduce(V v, int width, Op op)
{
    for (int o = width >> 1; o > 0; o >>= 1) v = op(v, shfl(v, o));
    return v;
}
// Over the whole block (blockDim.x a multiple of 32); sh holds 32 values; id is
// the identity of op. Every thread gets the result, in a fixed order.
template <class V, class Op> __device__ __forceinline__ V block_reduce(V v, V *sh, Op op, V id)
{
    v = warp_reduce(v, 32, op);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads(); // sh may still be read by an earlier reduction
    if (lane == 0) sh[w] = v;
    __syncthreads();
    return warp_reduce(lane < nw ? sh[lane] : id, 32, op);
}

// A row handled by a group of G lanes (BLOCK false) or by the whole block.
template <bool BLOCK, class V, class Op> __device__ __forceinline__ V reduce(V v, int G, V *sh, Op op, V id)
{
    if constexpr (BLOCK)
        return block_reduce(v, sh, op, id);
    else
        return warp_reduce(v, G, op);
}

// ---- launch planning (host) ----
inline int sm_count()
{
    static const int n = [] {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
            cudaGetLastError();
            v = 0;
        }
        return v > 0 ? v : 132;
    }();
    return n;
}

inline int pow2_at_least(int64_t v)
{
    int p = 1;
    while (p < v && p < 1024) p <<= 1;
    return p;
}

inline bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Row kernels (softmax, norms): rows of `chunks` loads each, elements `inner`
// apart. A group of lanes inside a warp (about 4 loads per lane, fewer shuffle
// steps for short rows) or, for long rows, a block (about 8 loads per thread).
struct Plan {
    bool block;
    int G, threads;
    unsigned grid;
};
inline Plan plan_rows(int64_t rows, int64_t chunks, int64_t inner)
{
    Plan p;
    const int64_t cap = static_cast<int64_t>(sm_count()) * 16; // enough blocks to fill the GPU; the loop does the rest
    if (chunks > 512 && !(inner >= 32 && chunks <= 4096)) {
        p.block = true;
        p.G = 32;
        p.threads = pow2_at_least((chunks + 7) / 8);
        p.threads = p.threads < 128 ? 128 : p.threads > 1024 ? 1024 : p.threads;
        p.grid = static_cast<unsigned>(rows < cap ? rows : cap);
        return p;
    }
    p.block = false;
    p.G = 1;
    if (inner < 32)
        while (p.G < 32 && p.G * 2 * 4 <= chunks) p.G *= 2;
    p.threads = 256;
    const int64_t per_block = 256 / p.G, blocks = (rows + per_block - 1) / per_block;
    p.grid = static_cast<unsigned>(blocks < cap ? (blocks > 0 ? blocks : 1) : cap);
    return p;
}

} // namespace fgk

#endif
