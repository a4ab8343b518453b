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

// Any dtype from double, as the CPU's fg__st: rounds once (through float for bf16/f16), saturates integers (NaN -> 0).
__device__ __forceinline__ void st_d(void *p, int dt, int64_t i, double v)
{
    switch (dt) {
    case DT_F32: static_cast<float *>(p)[i] = __double2float_rn(v); break;
    case DT_F64: static_cast<double *>(p)[i] = v; break;
    case DT_BF16: static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(__double2float_rn(v)); break;
    case DT_F16: static_cast<__half *>(p)[i] = __float2half_rn(__double2float_rn(v)); break;
    case DT_I32:
        static_cast<int32_t *>(p)[i] = v != v ? 0 : v >= 2147483647.0 ? INT32_MAX : v <= -2147483648.0 ? INT32_MIN
                                                                                                          : static_cast<int32_t>(v);
        break;
    default:
        static_cast<int64_t *>(p)[i] = v != v ? 0 : v >= 9223372036854775807.0 ? INT64_MAX
                                                 : v <= -9223372036854775808.0 ? INT64_MIN
                                                                               : static_cast<int64_t>(v);
        break;
    }
}

// Claims the device error record (fg_kernels.h; rec may be NULL) for the first
// bad index seen; only the winner of the atomicCAS on the code writes the details.
__device__ __forceinline__ void record_error(int64_t *rec, int64_t code, int64_t pos, int64_t value, int64_t limit)
{
    if (!rec) return;
    unsigned long long *c = reinterpret_cast<unsigned long long *>(rec);
    if (atomicCAS(c, 0ull, static_cast<unsigned long long>(code)) == 0ull) {
        rec[1] = pos;
        rec[2] = value;
        rec[3] = limit;
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

// Two floats rounded to a bf16 / f16 pair, as the bits of one 32-bit word.
template <class T> __device__ __forceinline__ uint32_t pack2(float a, float b)
{
    union {
        __nv_bfloat162 bh;
        __half2 hh;
        uint32_t u;
    } w;
    if constexpr (sizeof(T) == 2 && __is_same(T, bf16))
        w.bh = __floats2bfloat162_rn(a, b);
    else
        w.hh = __floats2half2_rn(a, b);
    return w.u;
}

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
        // One 16-byte store, stated in PTX: without it the compiler may split
        // the chunk into 4-byte stores in some unrolled paths (and 2-byte
        // elements are packed in pairs first).
        union {
            Chunk<T, W> ch;
            uint32_t w[4];
        } pk;
        if constexpr (sizeof(T) == 2 && W == 8) {
#pragma unroll
            for (int k = 0; k < 4; k++) pk.w[k] = pack2<T>(in[2 * k], in[2 * k + 1]);
        } else {
#pragma unroll
            for (int k = 0; k < W; k++) put(pk.ch.v[k], in[k]);
        }
        static_assert(sizeof(Chunk<T, W>) == 16, "16-byte chunks");
        asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p + j), "r"(pk.w[0]), "r"(pk.w[1]),
                     "r"(pk.w[2]), "r"(pk.w[3])
                     : "memory");
    }
}

struct Add {
    template <class V> __device__ __forceinline__ V operator()(V a, V b) const { return a + b; }
};

// ---- rows of the row kernels (softmax, norms) ----
// Which rows a thread works on. Groups of G lanes (or the block) take
// consecutive rows; the block advances by a grid stride, uniformly, so every
// lane reaches every shuffle and barrier: lanes past the last row see an
// empty row and store nothing.
template <bool BLOCK> struct Rows {
    int lane, size;
    int64_t sub, per_block;
    __device__ __forceinline__ explicit Rows(int G)
    {
        size = BLOCK ? static_cast<int>(blockDim.x) : G;
        lane = BLOCK ? static_cast<int>(threadIdx.x) : static_cast<int>(threadIdx.x) & (G - 1);
        per_block = BLOCK ? 1 : static_cast<int64_t>(blockDim.x / G);
        sub = BLOCK ? 0 : static_cast<int64_t>(threadIdx.x / G);
    }
    __device__ __forceinline__ int64_t first() const { return static_cast<int64_t>(blockIdx.x) * per_block; }
    __device__ __forceinline__ int64_t stride() const { return static_cast<int64_t>(gridDim.x) * per_block; }
};

// A lane's share of a contiguous, 16-byte aligned row of nc 16-byte chunks,
// held in registers (chunks lane, lane + size, ...; CPT of them at most): the
// row is read from memory once, and the statistics and output passes work
// from registers. Chunks stay in the storage type (half the registers for
// bf16) and are widened when used.
template <class T, int CPT> struct RegRow {
    static constexpr int V = 16 / static_cast<int>(sizeof(T));
    Chunk<T, V> c[CPT];
    int64_t nc;
    int lane, size;
    __device__ __forceinline__ RegRow(int64_t nc_, int lane_, int size_) : nc(nc_), lane(lane_), size(size_) {}
    __device__ __forceinline__ int64_t at(int k) const { return lane + static_cast<int64_t>(k) * size; }
    __device__ __forceinline__ bool has(int k) const { return at(k) < nc; }
    __device__ __forceinline__ void load(const T *__restrict__ row)
    {
#pragma unroll
        for (int k = 0; k < CPT; k++)
            if (has(k)) c[k] = reinterpret_cast<const Chunk<T, V> *>(row)[at(k)];
    }
    template <class A> __device__ __forceinline__ A get(int k, int e) const { return static_cast<A>(to_acc(c[k].v[e])); }
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
// Blocks for a grid-stride loop over `work` items (at most 65535: the loop does the rest).
inline int grid_for(int64_t work, int threads = 256)
{
    int64_t g = (work + threads - 1) / threads;
    return static_cast<int>(g < 65535 ? (g > 0 ? g : 1) : 65535);
}

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

// Register-resident rows (RegRow) with at most max_cpt (4 or 8) chunks per
// lane: a group of G lanes (about max_cpt / 2 chunks each) for rows of up to
// 32 max_cpt chunks, else a block of 64..512 threads (so a thread may use 128
// registers); cpt = chunks per lane, a power of two. ok is false for longer
// rows, which take the streaming kernels.
struct RegPlan {
    bool ok, block;
    int G, threads, cpt;
    unsigned grid;
};
inline RegPlan plan_reg_rows(int64_t rows, int64_t nc, int max_cpt)
{
    RegPlan p = {false, false, 1, 256, 1, 1};
    if (nc <= 0 || rows <= 0) return p;
    int64_t lanes;
    if (nc <= 32 * static_cast<int64_t>(max_cpt)) {
        p.G = pow2_at_least((nc + max_cpt / 2 - 1) / (max_cpt / 2));
        if (p.G > 32) p.G = 32;
        lanes = p.G;
    } else {
        p.block = true;
        p.G = 32;
        p.threads = pow2_at_least((nc + max_cpt - 1) / max_cpt);
        p.threads = p.threads < 64 ? 64 : p.threads > 512 ? 512 : p.threads;
        lanes = p.threads;
    }
    p.cpt = pow2_at_least((nc + lanes - 1) / lanes);
    p.ok = p.cpt <= max_cpt;
    // One block per row (group of rows): the scheduler starts a block as soon
    // as one ends, which overlaps rows better than a grid-stride loop (that
    // loop only serves grids over 2^30 blocks).
    const int64_t per_block = p.block ? 1 : p.threads / p.G, blocks = (rows + per_block - 1) / per_block;
    const int64_t cap = static_cast<int64_t>(1) << 30;
    p.grid = static_cast<unsigned>(blocks < cap ? blocks : cap);
    return p;
}

} // namespace fgk

// for (int64_t i = first index of this thread; i < n; i += all threads of the grid)
#define FGK_GRID_STRIDE(i, n)                                                                      \
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n);      \
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// KERNEL<T, V, BLOCK> with V = 16 / sizeof(T) (16-byte chunks) when vec, else 1.
#define FG_LAUNCH_ROWS(KERNEL, T, vec, p, stream, ...)                                                    \
    do {                                                                                                  \
        constexpr int V_ = 16 / static_cast<int>(sizeof(T));                                              \
        if (vec && p.block) KERNEL<T, V_, true><<<p.grid, p.threads, 0, stream>>>(__VA_ARGS__);           \
        else if (vec) KERNEL<T, V_, false><<<p.grid, p.threads, 0, stream>>>(__VA_ARGS__);                \
        else if (p.block) KERNEL<T, 1, true><<<p.grid, p.threads, 0, stream>>>(__VA_ARGS__);              \
        else KERNEL<T, 1, false><<<p.grid, p.threads, 0, stream>>>(__VA_ARGS__);                          \
    } while (0)

// KERNEL<T, CPT, BLOCK> for a RegPlan p (p.ok) made with max_cpt = MAXC; only
// CPT <= MAXC is instantiated (inside the launcher templates).
#define FG_LAUNCH_REG(KERNEL, MAXC, T, p, stream, ...)                                                     \
    do {                                                                                                   \
        switch (p.cpt * (p.block ? 1 : -1)) {                                                              \
        case 1: KERNEL<T, 1, true><<<p.grid, p.threads, 0, stream>>>(__VA_ARGS__); break;                  \
        case 2: KERNEL<T, 2, true><<<p.grid, p.threads, 0, stream>>>(__VA_ARGS__); break;                  \
        case 4: KERNEL<T, 4, true><<<p.grid, p.threads, 0, stream>>>(__VA_ARGS__); break;                  \
        case -1: KERNEL<T, 1, false><<<p.grid, p.threads, 0, stream>>>(__VA_ARGS__); break;                \
        case -2: KERNEL<T, 2, false><<<p.grid, p.threads, 0, stream>>>(__VA_ARGS__); break;                \
        case -4: KERNEL<T, 4, false><<<p.grid, p.threads, 0, stream>>>(__VA_ARGS__); break;                \
        case 8:                                                                                            \
            if constexpr (MAXC >= 8) KERNEL<T, 8, true><<<p.grid, p.threads, 0, stream>>>(__VA_ARGS__);    \
            break;                                                                                         \
        default:                                                                                           \
            if constexpr (MAXC >= 8) KERNEL<T, 8, false><<<p.grid, p.threads, 0, stream>>>(__VA_ARGS__);   \
            break;                                                                                         \
        }                                                                                                  \
    } while (0)

// Returns F<T>(...) for the floating dtype code (f32, f64, bf16, f16).
#define FG_DISPATCH_FLOAT(dtype, F, ...)                    \
    switch (dtype) {                                        \
    case 0: return F<float>(__VA_ARGS__);                   \
    case 1: return F<double>(__VA_ARGS__);                  \
    case 2: return F<__nv_bfloat16>(__VA_ARGS__);           \
    case 3: return F<__half>(__VA_ARGS__);                  \
    default: return static_cast<int>(cudaErrorInvalidValue); \
    }

#endif
