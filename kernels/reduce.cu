// CUDA kernels for the reduce family: sum/mean over any set of dims, max with
// argmax over one dim, and max's backward scatter.
//
// One plan serves every reduction: the host drops size-1 dims, splits the rest
// into kept dims (in output order, merged where they step as one) and reduced
// dims (sorted by stride, merged likewise), and picks a kernel by the memory
// layout:
//  - the reduced dims hold the smallest stride (e.g. the last, contiguous dim):
//    a row reduction, one warp per output row (short rows) or one block per row
//    (long rows), so each warp reads consecutive elements; warp-shuffle then
//    shared-memory trees combine the partial results;
//  - a kept dim is innermost: a column reduction, 32 consecutive outputs per
//    block (coalesced reads along the kept dim) x 8 slices of the reduced range,
//    combined through shared memory.
// When the outputs alone cannot fill the GPU (sum_all, or a few long rows or
// columns), sums also split the reduced range over blockIdx.y and write partial
// sums to a workspace that a second kernel adds up in a fixed order. Every
// combination order is fixed, so results are deterministic run to run.
//
// Accumulation: double for every float dtype (f32, bf16, f16 and f64), int64
// for integers. Why double for the 16/32-bit floats: (1) the CPU reference sums
// in double and rounds once, so the GPU result matches it to the last bit in
// all but rare double-rounding cases, and mean keeps its single rounding
// (sum / count is formed in double and rounded once, like src/ops/reduce.c);
// (2) float accumulation of 2^20+ terms loses ~log2(n) bits, which the
// reference would expose; (3) the cost is nil on the target: the kernels are
// bound by memory bandwidth (~3.35 TB/s on H100 = ~0.84 G f32 elements/us) while
// Hopper adds doubles at half the float rate (~30 T adds/s), so the DADD chain
// is never the bottleneck. (On consumer GPUs with 1/64-rate FP64 this would be
// worth revisiting.)
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <limits.h>
#include <algorithm>
#include <math.h>
#include <stdint.h>
#include <type_traits>
#include "fg_kernels.h"
#include "k_common.cuh"

namespace {

using fgk::TypeTag;
using fgk::dispatch_dtype;

using bf16 = __nv_bfloat16;
using f16 = __half;
using i64 = long long; // the shuffle intrinsics' 64-bit integer type

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;

int invalid() { return static_cast<int>(cudaErrorInvalidValue); }

// ---- element access ----
// Comparison type for max (exact for every dtype) and accumulator for sum.
template <typename T> struct Cmp { using type = float; };
template <> struct Cmp<double> { using type = double; };
template <> struct Cmp<int32_t> { using type = i64; };
template <> struct Cmp<int64_t> { using type = i64; };
template <typename T> struct Acc { using type = double; };
template <> struct Acc<int32_t> { using type = i64; };
template <> struct Acc<int64_t> { using type = i64; };

__device__ __forceinline__ float to_c(float v) { return v; }
__device__ __forceinline__ double to_c(double v) { return v; }
__device__ __forceinline__ float to_c(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_c(f16 v) { return __half2float(v); }
__device__ __forceinline__ i64 to_c(int32_t v) { return v; }
__device__ __forceinline__ i64 to_c(int64_t v) { return v; }

// Stores a double the way fg__st does (bf16/f16 through float; integers saturate, NaN -> 0).
template <typename T> __device__ __forceinline__ T store_double(double v)
{
    if constexpr (std::is_same<T, float>::value) return static_cast<float>(v);
    else if constexpr (std::is_same<T, double>::value) return v;
    else if constexpr (std::is_same<T, bf16>::value) return __float2bfloat16_rn(static_cast<float>(v));
    else if constexpr (std::is_same<T, f16>::value) return __float2half_rn(static_cast<float>(v));
    else if constexpr (std::is_same<T, int32_t>::value)
        return v != v ? 0 : v >= 2147483647.0 ? INT32_MAX : v <= -2147483648.0 ? INT32_MIN : static_cast<int32_t>(v);
    else
        return v != v ? 0
               : v >= 9223372036854775807.0  ? INT64_MAX
               : v <= -9223372036854775808.0 ? INT64_MIN
                                              : static_cast<int64_t>(v);
}
// Exact integer stores: i64 as is, i32 saturating (the CPU sums i32 in double, exact below 2^53).
template <typename T> __device__ __forceinline__ T store_int(i64 v)
{
    if constexpr (std::is_same<T, int32_t>::value)
        return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : static_cast<int32_t>(v);
    else return static_cast<T>(v);
}
template <typename T> __device__ __forceinline__ T from_cmp(typename Cmp<T>::type v)
{
    if constexpr (std::is_integral<T>::value) return static_cast<T>(v);
    else return store_double<T>(static_cast<double>(v)); // exact: v is an element of T
}

// ---- geometry ----
struct RGeo {
    int nk, nr;
    i64 ks[FG_K_MAX_DIMS], kst[FG_K_MAX_DIMS]; // kept dims, outer to inner (output order)
    i64 rs[FG_K_MAX_DIMS], rst[FG_K_MAX_DIMS]; // reduced dims, largest stride first
    i64 R;                                     // reduced elements per output
};

__device__ __forceinline__ i64 kept_offset(const RGeo &g, i64 o)
{
    i64 off = 0;
    for (int d = g.nk - 1; d >= 0; d--) {
        i64 q = o / g.ks[d];
        off += (o - q * g.ks[d]) * g.kst[d];
        o = q;
    }
    return off;
}

// SIMPLE: at most one reduced dim (rst[0] is 0 when there is none).
template <bool SIMPLE> __device__ __forceinline__ i64 red_offset(const RGeo &g, i64 r)
{
    if constexpr (SIMPLE) {
        return r * g.rst[0];
    } else {
        i64 off = 0;
        for (int d = g.nr - 1; d >= 0; d--) {
            i64 q = r / g.rs[d];
            off += (r - q * g.rs[d]) * g.rst[d];
            r = q;
        }
        return off;
    }
}

// ---- reduction policies ----
template <typename T> struct SumRed {
    using A = typename Acc<T>::type;
    T *out;
    A *ws;
    double divisor;
    __device__ __forceinline__ A init() const { return A(0); }
    __device__ __forceinline__ A combine(A a, A b) const
    {
        if constexpr (std::is_integral<A>::value) return static_cast<A>(static_cast<unsigned long long>(a) + static_cast<unsigned long long>(b));
        else return a + b;
    }
    __device__ __forceinline__ A step(A a, T x, i64) const { return combine(a, static_cast<A>(to_c(x))); }
    __device__ __forceinline__ A shfl_down(A a, int off) const { return __shfl_down_sync(kFull, a, off); }
    __device__ __forceinline__ void write(i64 o, A a) const
    {
        if constexpr (std::is_integral<A>::value) {
            out[o] = divisor == 1.0 ? store_int<T>(a) : store_double<T>(static_cast<double>(a) / divisor);
        } else {
            out[o] = store_double<T>(divisor == 1.0 ? a : a / divisor); // one rounding, as the CPU's mean
        }
    }
    __device__ __forceinline__ void write_partial(i64 i, A a) const { ws[i] = a; }
};

template <typename C> __device__ __forceinline__ bool is_nan(C v)
{
    if constexpr (std::is_integral<C>::value) {
        (void)v;
        return false;
    } else {
        return v != v;
    }
}
template <typename C> __device__ __forceinline__ C lowest()
{
    if constexpr (std::is_integral<C>::value) return LLONG_MIN;
    else return -C(INFINITY);
}

template <typename T> struct MaxPair {
    typename Cmp<T>::type v;
    i64 i;
};
template <typename T> struct MaxRed {
    using C = typename Cmp<T>::type;
    using A = MaxPair<T>;
    T *out;
    int64_t *idx;
    __device__ __forceinline__ A init() const { return A{lowest<C>(), LLONG_MAX}; }
    // The better of two candidates: NaN beats everything, then the larger value,
    // then the smaller index. A total order, so any combination tree gives the
    // CPU's answer (the first NaN, else the first maximum).
    __device__ __forceinline__ A combine(A a, A b) const
    {
        bool an = is_nan(a.v), bn = is_nan(b.v);
        bool take_b = (an || bn) ? (an && bn ? b.i < a.i : bn) : (b.v > a.v || (b.v == a.v && b.i < a.i));
        return take_b ? b : a;
    }
    __device__ __forceinline__ A step(A a, T x, i64 r) const { return combine(a, A{to_c(x), r}); }
    __device__ __forceinline__ A shfl_down(A a, int off) const
    {
        return A{__shfl_down_sync(kFull, a.v, off), __shfl_down_sync(kFull, a.i, off)};
    }
    __device__ __forceinline__ void write(i64 o, A a) const
    {
        out[o] = from_cmp<T>(a.v);
        if (idx) idx[o] = a.i;
    }
    __device__ __forceinline__ void write_partial(i64, A) const {} // max never splits
};

template <typename Red, typename A> __device__ __forceinline__ A warp_reduce(const Red &red, A a)
{
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) a = red.combine(a, red.shfl_down(a, off));
    return a; // valid in lane 0
}

// Whole-block reduction of one value per thread; the result is valid in thread 0.
template <typename Red, typename A> __device__ __forceinline__ A block_reduce(const Red &red, A a, A *sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    a = warp_reduce(red, a);
    if (lane == 0) sh[warp] = a;
    __syncthreads();
    if (warp == 0) {
        a = lane < kWarps ? sh[lane] : red.init();
        a = warp_reduce(red, a);
    }
    __syncthreads(); // sh is reused by the next row
    return a;
}

// ---- kernels ----
// One warp per output row.
template <typename T, typename Red, bool SIMPLE>
__global__ void __launch_bounds__(kThreads) red_rows_warp(RGeo g, i64 O, const T *__restrict__ in, Red red)
{
    const int lane = threadIdx.x & 31;
    const i64 nwarps = (static_cast<i64>(gridDim.x) * blockDim.x) >> 5;
    for (i64 o = (static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; o < O; o += nwarps) {
        const T *p = in + kept_offset(g, o);
        auto a = red.init();
#pragma unroll 4
        for (i64 r = lane; r < g.R; r += 32) a = red.step(a, p[red_offset<SIMPLE>(g, r)], r);
        a = warp_reduce(red, a);
        if (lane == 0) red.write(o, a);
    }
}

// One block per (output row, chunk of the row); gridDim.y chunks.
template <typename T, typename Red, bool SIMPLE>
__global__ void __launch_bounds__(kThreads) red_rows_block(RGeo g, i64 O, i64 chunk, const T *__restrict__ in, Red red)
{
    using A = decltype(red.init());
    __shared__ A sh[kWarps];
    const i64 r0 = static_cast<i64>(blockIdx.y) * chunk;
    const i64 r1 = r0 + chunk < g.R ? r0 + chunk : g.R;
    for (i64 o = blockIdx.x; o < O; o += gridDim.x) {
        const T *p = in + kept_offset(g, o);
        A a = red.init();
#pragma unroll 4
        for (i64 r = r0 + threadIdx.x; r < r1; r += kThreads) a = red.step(a, p[red_offset<SIMPLE>(g, r)], r);
        a = block_reduce(red, a, sh);
        if (threadIdx.x == 0) {
            if (gridDim.y == 1) red.write(o, a);
            else red.write_partial(o * gridDim.y + blockIdx.y, a);
        }
    }
}

// Block (32, 8): 32 consecutive outputs x 8 slices of the reduced range (of chunk blockIdx.y).
template <typename T, typename Red, bool SIMPLE>
__global__ void __launch_bounds__(kThreads) red_cols(RGeo g, i64 O, i64 chunk, const T *__restrict__ in, Red red)
{
    using A = decltype(red.init());
    __shared__ A sh[kWarps][33];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const i64 r0 = static_cast<i64>(blockIdx.y) * chunk;
    const i64 r1 = r0 + chunk < g.R ? r0 + chunk : g.R;
    for (i64 ob = static_cast<i64>(blockIdx.x) * 32; ob < O; ob += static_cast<i64>(gridDim.x) * 32) {
        const i64 o = ob + tx;
        A a = red.init();
        if (o < O) {
            const T *p = in + kept_offset(g, o);
#pragma unroll 4
            for (i64 r = r0 + ty; r < r1; r += kWarps) a = red.step(a, p[red_offset<SIMPLE>(g, r)], r);
        }
        sh[ty][tx] = a;
        __syncthreads();
        if (ty == 0 && o < O) {
            for (int k = 1; k < kWarps; k++) a = red.combine(a, sh[k][tx]);
            if (gridDim.y == 1) red.write(o, a);
            else red.write_partial(o * gridDim.y + blockIdx.y, a);
        }
        __syncthreads();
    }
}

// Adds each output's partial sums in chunk order.
template <typename T> __global__ void __launch_bounds__(kThreads) sum_finalize(i64 O, int splits, SumRed<T> red)
{
    const i64 step = static_cast<i64>(gridDim.x) * blockDim.x;
    for (i64 o = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; o < O; o += step) {
        auto a = red.init();
        for (int s = 0; s < splits; s++) a = red.combine(a, red.ws[o * splits + s]);
        red.write(o, a);
    }
}

struct ScatterGeo {
    int ndim;
    i64 shape[FG_K_MAX_DIMS], stride[FG_K_MAX_DIMS]; // g's keepdim shape and strides
};
// gx[(o * n + idx[k]) * inner + i] = g[k], k = o * inner + i; values moved bit for bit.
template <typename V>
__global__ void __launch_bounds__(kThreads)
    max_scatter(i64 count, ScatterGeo sg, const V *__restrict__ g, const int64_t *__restrict__ idx, V *__restrict__ gx,
                i64 n, i64 inner)
{
    const i64 step = static_cast<i64>(gridDim.x) * blockDim.x;
    for (i64 k = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; k < count; k += step) {
        i64 rem = k, off = 0;
        for (int d = sg.ndim - 1; d >= 0; d--) {
            i64 q = rem / sg.shape[d];
            off += (rem - q * sg.shape[d]) * sg.stride[d];
            rem = q;
        }
        const i64 o = k / inner, i = k - o * inner, j = idx[k];
        if (j >= 0 && j < n) gx[(o * n + j) * inner + i] = g[off];
    }
}

// ---- host: planning and launching ----
enum Kind { ROW_WARP, ROW_BLOCK, COLS };
struct Plan {
    RGeo g;
    i64 O;
    Kind kind;
    int splits;
    i64 chunk;
    bool simple;
};

i64 cdiv(i64 a, i64 b) { return (a + b - 1) / b; }
i64 iabs(i64 v) { return v < 0 ? -v : v; }

bool make_plan(const fg_k_tensor &in, unsigned mask, bool allow_split, Plan &p)
{
    if (in.ndim < 0 || in.ndim > FG_K_MAX_DIMS) return false;
    RGeo &g = p.g;
    g.nk = g.nr = 0;
    i64 O = 1, R = 1;
    for (int d = 0; d < in.ndim; d++) {
        const i64 size = in.shape[d], st = in.stride[d];
        const bool red = (mask >> d) & 1u;
        if (red) R *= size;
        else O *= size;
        if (size == 1) continue;
        if (red) {
            g.rs[g.nr] = size;
            g.rst[g.nr++] = st;
        } else if (g.nk > 0 && g.kst[g.nk - 1] == st * size) {
            g.ks[g.nk - 1] *= size;
            g.kst[g.nk - 1] = st;
        } else {
            g.ks[g.nk] = size;
            g.kst[g.nk++] = st;
        }
    }
    // Reduced dims: any order sums the same set; largest stride first, then merge.
    for (int i = 1; i < g.nr; i++)
        for (int j = i; j > 0 && iabs(g.rst[j - 1]) < iabs(g.rst[j]); j--) {
            i64 ts = g.rs[j], tt = g.rst[j];
            g.rs[j] = g.rs[j - 1];
            g.rst[j] = g.rst[j - 1];
            g.rs[j - 1] = ts;
            g.rst[j - 1] = tt;
        }
    int nr = 0;
    for (int i = 0; i < g.nr; i++) {
        if (nr > 0 && g.rst[nr - 1] == g.rst[i] * g.rs[i]) {
            g.rs[nr - 1] *= g.rs[i];
            g.rst[nr - 1] = g.rst[i];
        } else {
            g.rs[nr] = g.rs[i];
            g.rst[nr++] = g.rst[i];
        }
    }
    g.nr = nr;
    if (g.nr == 0) {
        g.rs[0] = 1;
        g.rst[0] = 0;
    }
    g.R = R;
    p.O = O;
    p.simple = g.nr <= 1;
    p.splits = 1;
    p.chunk = R > 0 ? R : 1;

    p.kind = COLS;
    if (O <= 0) return true; // nothing to write (and no division by O below)
    const i64 target = static_cast<i64>(fgk::sm_count()) * (2048 / kThreads); // blocks in one full wave
    const bool row = g.nr > 0 && (g.nk == 0 || (iabs(g.rst[g.nr - 1]) < iabs(g.kst[g.nk - 1]) && R >= 32));
    i64 splits = 1;
    if (row && R <= 1024) {
        p.kind = ROW_WARP;
    } else if (row) {
        p.kind = ROW_BLOCK;
        if (allow_split && O < target) splits = std::min(cdiv(target, O), cdiv(R, 4096)); // >= 16 loads a thread
    } else {
        p.kind = COLS;
        const i64 cblocks = cdiv(O, 32);
        if (allow_split && cblocks < target) splits = std::min(cdiv(target, cblocks), cdiv(R, 128)); // >= 16 a thread
    }
    if (splits > 1) {
        p.chunk = cdiv(R, splits);
        p.splits = static_cast<int>(cdiv(R, p.chunk));
    }
    return true;
}

template <typename T, typename Red, bool SIMPLE> int launch_plan(const Plan &p, const T *in, const Red &red, cudaStream_t st)
{
    const i64 cap = i64(1) << 20;
    switch (p.kind) {
    case ROW_WARP: {
        i64 blocks = std::min(cdiv(p.O, kWarps), static_cast<i64>(fgk::sm_count()) * (2048 / kThreads));
        red_rows_warp<T, Red, SIMPLE><<<static_cast<unsigned>(blocks), kThreads, 0, st>>>(p.g, p.O, in, red);
        break;
    }
    case ROW_BLOCK: {
        dim3 grid(static_cast<unsigned>(std::min(p.O, cap)), static_cast<unsigned>(p.splits));
        red_rows_block<T, Red, SIMPLE><<<grid, kThreads, 0, st>>>(p.g, p.O, p.chunk, in, red);
        break;
    }
    default: {
        dim3 grid(static_cast<unsigned>(std::min(cdiv(p.O, 32), cap)), static_cast<unsigned>(p.splits));
        red_cols<T, Red, SIMPLE><<<grid, dim3(32, kWarps), 0, st>>>(p.g, p.O, p.chunk, in, red);
        break;
    }
    }
    return static_cast<int>(cudaGetLastError());
}

template <typename T, typename Red> int launch_any(const Plan &p, const T *in, const Red &red, cudaStream_t st)
{
    return p.simple ? launch_plan<T, Red, true>(p, in, red, st) : launch_plan<T, Red, false>(p, in, red, st);
}

} // namespace

extern "C" int64_t fg_k_sum_workspace(fg_k_tensor in, unsigned reduce_mask)
{
    Plan p;
    if (!make_plan(in, reduce_mask, true, p) || p.splits <= 1 || p.O <= 0) return 0;
    return p.O * p.splits * 8; // one 8-byte accumulator (double or int64) per output and chunk
}

extern "C" int fg_k_sum(fg_k_tensor out, fg_k_tensor in, unsigned reduce_mask, double divisor, void *workspace,
                        void *stream)
{
    if (out.dtype != in.dtype) return invalid();
    Plan p;
    if (!make_plan(in, reduce_mask, true, p)) return invalid();
    if (p.O <= 0) return 0;
    if (p.splits > 1 && !workspace) return invalid();
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    return dispatch_dtype(in.dtype, [&](auto tag) -> int {
        using T = typename decltype(tag)::type;
        using A = typename Acc<T>::type;
        SumRed<T> red{static_cast<T *>(out.data), static_cast<A *>(workspace), divisor};
        int e = launch_any(p, static_cast<const T *>(in.data), red, st);
        if (e != 0 || p.splits <= 1) return e;
        i64 blocks = std::min(cdiv(p.O, kThreads), static_cast<i64>(fgk::sm_count()) * (2048 / kThreads));
        sum_finalize<T><<<static_cast<unsigned>(blocks), kThreads, 0, st>>>(p.O, p.splits, red);
        return static_cast<int>(cudaGetLastError());
    });
}

extern "C" int fg_k_max(fg_k_tensor values, int64_t *indices, fg_k_tensor in, int dim, void *stream)
{
    if (values.dtype != in.dtype || dim < 0 || dim >= in.ndim || in.shape[dim] <= 0) return invalid();
    Plan p;
    if (!make_plan(in, 1u << dim, false, p)) return invalid();
    if (p.O <= 0) return 0;
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    return dispatch_dtype(in.dtype, [&](auto tag) -> int {
        using T = typename decltype(tag)::type;
        MaxRed<T> red{static_cast<T *>(values.data), indices};
        return launch_any(p, static_cast<const T *>(in.data), red, st);
    });
}

extern "C" int fg_k_max_backward(fg_k_tensor gx, fg_k_tensor g, const int64_t *indices, int dim, void *stream)
{
    if (gx.dtype != g.dtype || g.ndim != gx.ndim || dim < 0 || dim >= gx.ndim || g.ndim > FG_K_MAX_DIMS) return invalid();
    ScatterGeo sg;
    sg.ndim = g.ndim;
    i64 count = 1, inner = 1;
    for (int d = 0; d < g.ndim; d++) {
        if (g.shape[d] != (d == dim ? 1 : gx.shape[d])) return invalid();
        sg.shape[d] = g.shape[d];
        sg.stride[d] = g.stride[d];
        count *= g.shape[d];
        if (d > dim) inner *= gx.shape[d];
    }
    if (count <= 0) return 0;
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    unsigned blocks = static_cast<unsigned>(std::min(cdiv(count, kThreads), static_cast<i64>(fgk::sm_count()) * (2048 / kThreads)));
    const i64 n = gx.shape[dim];
    switch (gx.dtype) {
    case 1:
    case 5:
        max_scatter<uint64_t><<<blocks, kThreads, 0, st>>>(count, sg, static_cast<const uint64_t *>(g.data), indices,
                                                           static_cast<uint64_t *>(gx.data), n, inner);
        break;
    case 0:
    case 4:
        max_scatter<uint32_t><<<blocks, kThreads, 0, st>>>(count, sg, static_cast<const uint32_t *>(g.data), indices,
                                                           static_cast<uint32_t *>(gx.data), n, inner);
        break;
    case 2:
    case 3:
        max_scatter<uint16_t><<<blocks, kThreads, 0, st>>>(count, sg, static_cast<const uint16_t *>(g.data), indices,
                                                           static_cast<uint16_t *>(gx.data), n, inner);
        break;
    default: return invalid();
    }
    return static_cast<int>(cudaGetLastError());
}
