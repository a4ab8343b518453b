// CUDA kernels of the softmax family (launchers declared in k_nn.h): softmax
// and log_softmax forward/backward over one dim, and cross-entropy fused with
// the log-softmax (forward with a deterministic reduction, and backward).
//
// Layout. The host passes contiguous tensors seen as (outer, n, inner); a row
// is the n elements (o, ., i), `inner` apart (cross-entropy: inner = 1).
// A row is handled by a group of G lanes (G = 1..32, a power of two, inside
// one warp; several rows per block) or by a whole block:
//  - inner == 1 (the last dim): rows are contiguous. When every base pointer
//    is 16-byte aligned, all rows of all operands share one misalignment, so
//    lanes move 16-byte chunks (LDG/STG.128) between the row's first 16-byte
//    boundary and its last whole chunk, and single elements at the two ends
//    (any n, e.g. a vocabulary of 50257). Otherwise single elements (still
//    coalesced). Rows of up to 512 chunks take a group of about chunks/4
//    lanes; longer rows a block of 128..1024 threads.
//  - inner >= 32: one thread per row (G = 1): neighbouring threads read
//    neighbouring columns, so every access is coalesced.
//  - 1 < inner < 32: groups/blocks as for the last dim, strided scalar loads.
// Contiguous rows of whole 16-byte chunks with up to 8 chunks per lane (4 for
// bf16/f16 and in the backward; f32 rows up to 16384 elements, bf16 16384) are
// register-resident (softmax_*_reg): each element is read once and written
// once. Other rows stream: statistics take one read pass: each lane keeps a running (max, sum of
// exp(x - max)) (online softmax: the sum is rescaled when the max grows),
// merged across lanes with xor shuffles and across warps through shared
// memory, always in the same order, so results are deterministic. The write
// pass re-reads the row (from L1/L2 at these row sizes). A NaN anywhere in a
// row makes the whole row NaN and -inf logits give exactly 0, as on the CPU.
// Accumulation in float for f32/bf16/f16 and in double for f64.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include "fg_kernels.h"
#include "k_common.cuh"

namespace {

using fgk::aligned16;
using fgk::record_error;
using fgk::AccOf;
using fgk::Add;
using fgk::ldw;
using fgk::put;
using fgk::stw;
using fgk::to_acc;
using fgk::block_reduce;
using fgk::reduce;
using fgk::shfl;
using fgk::Plan;
using fgk::RegPlan;
using fgk::RegRow;
using fgk::Rows;
using fgk::plan_reg_rows;
using fgk::plan_rows;

__device__ __forceinline__ float fexp(float x) { return expf(x); }
__device__ __forceinline__ double fexp(double x) { return exp(x); }
__device__ __forceinline__ float flog(float x) { return logf(x); }
__device__ __forceinline__ double flog(double x) { return log(x); }

template <int W> struct Width {
    static constexpr int value = W;
};

// Calls f(Width<W>(), j) for this lane's share of a row of n elements at
// `row`: with V == 1 single elements j = lane, lane + size, ...; with V > 1
// (contiguous rows) V-element chunks from the row's first 16-byte boundary
// to its last whole chunk, and single elements for the head before it and
// the tail after it (fewer than 2V in all).
template <int V, class T, class F>
__device__ __forceinline__ void for_row(const T *row, int64_t n, int lane, int size, F &&f)
{
    if constexpr (V == 1) {
#pragma unroll 2
        for (int64_t j = lane; j < n; j += size) f(Width<1>(), j);
    } else {
        int64_t head = static_cast<int64_t>(((16 - (reinterpret_cast<uintptr_t>(row) & 15)) & 15) / sizeof(T));
        if (head > n) head = n;
        const int64_t nb = (n - head) / V, tail = head + nb * V, edge = n - nb * V;
#pragma unroll 4
        for (int64_t c = lane; c < nb; c += size) f(Width<V>(), head + c * V);
        for (int64_t e = lane; e < edge; e += size) f(Width<1>(), e < head ? e : tail + (e - head));
    }
}

// ---- reductions: xor butterflies (every lane ends with the same value) ----
template <class A> struct MaxSum {
    A m, s;
};
// max that lets a NaN win, so it spreads to the whole row (as on the CPU).
template <class A> __device__ __forceinline__ A nanmax(A a, A b) { return (b > a || b != b) ? b : a; }
// Factor taking a sum relative to max m to one relative to max `to` >= m.
template <class A> __device__ __forceinline__ A rescale(A m, A to) { return m == to ? A(1) : fexp(m - to); }

struct Merge {
    template <class A> __device__ __forceinline__ MaxSum<A> operator()(MaxSum<A> a, MaxSum<A> b) const
    {
        const A m = nanmax(a.m, b.m);
        return {m, a.s * rescale(a.m, m) + b.s * rescale(b.m, m)};
    }
};

template <class A> __device__ __forceinline__ MaxSum<A> shfl(MaxSum<A> v, int o)
{
    return {shfl(v.m, o), shfl(v.s, o)};
}

// Row r of the (outer, n, inner) view starts at (r / inner) n inner + r % inner.
__device__ __forceinline__ int64_t row_base(int64_t r, int64_t n, int64_t inner)
{
    return inner == 1 ? r * n : (r / inner) * n * inner + r % inner;
}

// Running (max, sum exp(x - max)) of a thread's part of a row, then of the whole row.
template <int V, bool BLOCK, class T, class A>
__device__ __forceinline__ MaxSum<A> row_max_sum(const T *__restrict__ xr, int64_t n, int64_t step,
                                                 const Rows<BLOCK> &g, int G, MaxSum<A> *sh)
{
    MaxSum<A> st = {A(-INFINITY), A(0)};
    for_row<V>(xr, n, g.lane, g.size, [&](auto w, int64_t j) {
        constexpr int W = decltype(w)::value;
        A v[W];
        ldw<W>(xr, j, step, v);
        A cm = v[0];
#pragma unroll
        for (int k = 1; k < W; k++) cm = nanmax(cm, v[k]);
        // Rescale only when the max grows (or a NaN shows up: the comparison is
        // then false and the NaN spreads through m and s).
        if (!(cm <= st.m)) {
            const A m = nanmax(st.m, cm);
            st.s *= rescale(st.m, m);
            st.m = m;
        }
#pragma unroll
        for (int k = 0; k < W; k++) st.s += v[k] == A(-INFINITY) ? A(0) : fexp(v[k] - st.m);
    });
    return reduce<BLOCK>(st, G, sh, Merge(), MaxSum<A>{A(-INFINITY), A(0)});
}

// ---- softmax / log_softmax ----
template <class T, int V, bool BLOCK>
__global__ void __launch_bounds__(BLOCK ? 1024 : 256, BLOCK ? 1 : sizeof(T) == 8 ? 2 : 4)
    softmax_fwd_kernel(const T *__restrict__ x, T *__restrict__ y, int64_t rows, int64_t n, int64_t inner, int G,
                       bool log_out)
{
    using A = typename AccOf<T>::type;
    __shared__ MaxSum<A> sh[32];
    const Rows<BLOCK> g(G);
    for (int64_t r0 = g.first(); r0 < rows; r0 += g.stride()) {
        const int64_t r = r0 + g.sub;
        const int64_t cnt = r < rows ? n : 0;
        const int64_t base = r < rows ? row_base(r, n, inner) : 0;
        const T *xr = x + base;
        T *yr = y + base;
        const MaxSum<A> st = row_max_sum<V>(xr, cnt, inner, g, G, sh);
        const A inv = A(1) / st.s, ls = flog(st.s);
        for_row<V>(xr, cnt, g.lane, g.size, [&](auto w, int64_t j) {
            constexpr int W = decltype(w)::value;
            A v[W];
            ldw<W>(xr, j, inner, v);
#pragma unroll
            for (int k = 0; k < W; k++) v[k] = log_out ? (v[k] - st.m) - ls : fexp(v[k] - st.m) * inv;
            stw<W>(yr, j, inner, v);
        });
    }
}

template <class T, int V, bool BLOCK>
__global__ void __launch_bounds__(BLOCK ? 1024 : 256, BLOCK ? 1 : sizeof(T) == 8 ? 2 : 4)
    softmax_bwd_kernel(const T *__restrict__ y, const T *__restrict__ gy, T *__restrict__ gx, int64_t rows, int64_t n,
                       int64_t inner, int G, bool log_out)
{
    using A = typename AccOf<T>::type;
    __shared__ A sh[32];
    const Rows<BLOCK> g(G);
    for (int64_t r0 = g.first(); r0 < rows; r0 += g.stride()) {
        const int64_t r = r0 + g.sub;
        const int64_t cnt = r < rows ? n : 0;
        const int64_t base = r < rows ? row_base(r, n, inner) : 0;
        const T *yr = y + base, *gr = gy + base;
        T *xr = gx + base;
        // softmax needs sum(gy y), log_softmax sum(gy)
        A acc = 0;
        for_row<V>(yr, cnt, g.lane, g.size, [&](auto w, int64_t j) {
            constexpr int W = decltype(w)::value;
            A gv[W], yv[W];
            ldw<W>(gr, j, inner, gv);
            if (log_out) {
#pragma unroll
                for (int k = 0; k < W; k++) acc += gv[k];
            } else {
                ldw<W>(yr, j, inner, yv);
#pragma unroll
                for (int k = 0; k < W; k++) acc += gv[k] * yv[k];
            }
        });
        acc = reduce<BLOCK>(acc, G, sh, Add(), A(0));
        for_row<V>(yr, cnt, g.lane, g.size, [&](auto w, int64_t j) {
            constexpr int W = decltype(w)::value;
            A gv[W], yv[W];
            ldw<W>(gr, j, inner, gv);
            ldw<W>(yr, j, inner, yv);
#pragma unroll
            for (int k = 0; k < W; k++) gv[k] = log_out ? gv[k] - fexp(yv[k]) * acc : yv[k] * (gv[k] - acc);
            stw<W>(xr, j, inner, gv);
        });
    }
}

// ---- softmax / log_softmax, register-resident rows ----
// Contiguous rows of nc whole 16-byte chunks (every row 16-byte aligned) of up
// to 8 chunks per lane: one read of the row, one write, few instructions per
// element (bf16 rows are bound by them, not by memory). Each lane takes its own
// max m (fmax: a NaN is ignored here but makes the sum, hence the whole row,
// NaN) and sum of exp(x - m) (m = 0 when the lane saw only -inf: exp(-inf) =
// 0), then one (max, sum) merge across the row gives (M, S); the output pass
// recomputes exp(x - M) / S or (x - M) - log S. bf16/f16 rows use the hardware
// exp2 (its error, ~1e-6 relative, is far below their rounding).
template <class T> __device__ __forceinline__ float row_exp(float x)
{
    if constexpr (sizeof(T) == 2)
        return __expf(x);
    else
        return expf(x);
}
template <class T> __device__ __forceinline__ double row_exp(double x) { return exp(x); }
__device__ __forceinline__ float fmax_(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double fmax_(double a, double b) { return fmax(a, b); }

template <class T, int CPT, bool BLOCK>
__global__ void __launch_bounds__(BLOCK ? 512 : 256, BLOCK ? 1 : 2)
    softmax_fwd_reg(const T *__restrict__ x, T *__restrict__ y, int64_t rows, int64_t nc, int G, bool log_out)
{
    using A = typename AccOf<T>::type;
    constexpr int V = RegRow<T, CPT>::V;
    __shared__ MaxSum<A> sh[32];
    const Rows<BLOCK> g(G);
    for (int64_t r0 = g.first(); r0 < rows; r0 += g.stride()) {
        const int64_t r = r0 + g.sub;
        const int64_t off = r < rows ? r * nc * V : 0;
        RegRow<T, CPT> row(r < rows ? nc : 0, g.lane, g.size);
        row.load(x + off);
        A m = A(-INFINITY), s = A(0);
#pragma unroll
        for (int k = 0; k < CPT; k++)
            if (row.has(k))
#pragma unroll
                for (int e = 0; e < V; e++) m = fmax_(m, row.template get<A>(k, e));
        const A mz = m == A(-INFINITY) ? A(0) : m;
#pragma unroll
        for (int k = 0; k < CPT; k++)
            if (row.has(k))
#pragma unroll
                for (int e = 0; e < V; e++) s += row_exp<T>(row.template get<A>(k, e) - mz);
        const MaxSum<A> st = reduce<BLOCK>(MaxSum<A>{m, s}, G, sh, Merge(), MaxSum<A>{A(-INFINITY), A(0)});
        const A inv = A(1) / st.s, ls = flog(st.s), Mz = st.m == A(-INFINITY) ? A(0) : st.m;
#pragma unroll
        for (int k = 0; k < CPT; k++)
            if (row.has(k)) {
                A v[V];
#pragma unroll
                for (int e = 0; e < V; e++) {
                    const A xv = row.template get<A>(k, e);
                    v[e] = log_out ? (xv - st.m) - ls : row_exp<T>(xv - Mz) * inv;
                }
                stw<V>(y + off, row.at(k) * V, 1, v);
            }
    }
}

template <class T, int CPT, bool BLOCK>
__global__ void __launch_bounds__(BLOCK ? 512 : 256, BLOCK ? 1 : 2)
    softmax_bwd_reg(const T *__restrict__ y, const T *__restrict__ gy, T *__restrict__ gx, int64_t rows, int64_t nc,
                    int G, bool log_out)
{
    using A = typename AccOf<T>::type;
    constexpr int V = RegRow<T, CPT>::V;
    __shared__ A sh[32];
    const Rows<BLOCK> g(G);
    for (int64_t r0 = g.first(); r0 < rows; r0 += g.stride()) {
        const int64_t r = r0 + g.sub;
        const int64_t off = r < rows ? r * nc * V : 0;
        RegRow<T, CPT> yr(r < rows ? nc : 0, g.lane, g.size), gr(r < rows ? nc : 0, g.lane, g.size);
        yr.load(y + off);
        gr.load(gy + off);
        // softmax needs sum(gy y), log_softmax sum(gy)
        A acc = 0;
#pragma unroll
        for (int k = 0; k < CPT; k++)
            if (yr.has(k))
#pragma unroll
                for (int e = 0; e < V; e++)
                    acc += log_out ? gr.template get<A>(k, e) : gr.template get<A>(k, e) * yr.template get<A>(k, e);
        acc = reduce<BLOCK>(acc, G, sh, Add(), A(0));
#pragma unroll
        for (int k = 0; k < CPT; k++)
            if (yr.has(k)) {
                A v[V];
#pragma unroll
                for (int e = 0; e < V; e++) {
                    const A yv = yr.template get<A>(k, e), gv = gr.template get<A>(k, e);
                    v[e] = log_out ? gv - fexp(yv) * acc : yv * (gv - acc);
                }
                stw<V>(gx + off, yr.at(k) * V, 1, v);
            }
    }
}

// ---- cross-entropy ----
__device__ __forceinline__ bool counted(int64_t t, int64_t ignore, int64_t C) { return t != ignore && t >= 0 && t < C; }


// Per-row loss (m - x_t) + log(sum): into out_rows (NONE) or row_loss (SUM/MEAN).
// A target neither ignore nor in [0, C) is skipped like an ignored one and
// recorded in err_rec (when non-null).
template <class T, int V, bool BLOCK>
__global__ void __launch_bounds__(BLOCK ? 1024 : 256, BLOCK ? 1 : sizeof(T) == 8 ? 2 : 4)
    ce_fwd_kernel(const T *__restrict__ logits, const void *__restrict__ tgt, int tdt, int64_t N, int64_t C,
                  int64_t ignore, T *__restrict__ out_rows, double *__restrict__ row_loss,
                  int64_t *err_rec, int G)
{
    using A = typename AccOf<T>::type;
    __shared__ MaxSum<A> sh[32];
    const Rows<BLOCK> g(G);
    for (int64_t r0 = g.first(); r0 < N; r0 += g.stride()) {
        const int64_t r = r0 + g.sub;
        const bool ok = r < N;
        const int64_t t = ok ? fgk::ld_index(tgt, tdt, r) : ignore;
        const bool valid = ok && counted(t, ignore, C);
        if (err_rec && ok && !valid && t != ignore && g.lane == 0)
            record_error(err_rec, FG_K_ERR_CROSS_ENTROPY, r, t, C);
        const T *xr = logits + (ok ? r * C : 0);
        const MaxSum<A> st = row_max_sum<V>(xr, valid ? C : 0, 1, g, G, sh);
        if (ok && g.lane == 0) {
            const A loss = valid ? (st.m - to_acc(xr[t])) + flog(st.s) : A(0);
            if (out_rows)
                put(out_rows[r], loss);
            else
                row_loss[r] = static_cast<double>(loss);
        }
    }
}

// SUM/MEAN in two fixed-order stages (no atomics): block b sums the counted
// rows of [b rpb, (b + 1) rpb) in double and counts them; then one block adds
// the kCeParts partials.
constexpr int kCeParts = 256;
__global__ void __launch_bounds__(256)
    ce_partial_kernel(const double *__restrict__ row_loss, const void *__restrict__ tgt, int tdt, int64_t N,
                      int64_t C, int64_t ignore, int64_t rpb, double *__restrict__ part_sum,
                      long long *__restrict__ part_cnt)
{
    __shared__ double shd[32];
    __shared__ long long shc[32];
    const int64_t begin = static_cast<int64_t>(blockIdx.x) * rpb, end = begin + rpb < N ? begin + rpb : N;
    double tot = 0;
    long long cnt = 0;
    for (int64_t r = begin + threadIdx.x; r < end; r += blockDim.x)
        if (counted(fgk::ld_index(tgt, tdt, r), ignore, C)) {
            tot += row_loss[r];
            cnt++;
        }
    tot = block_reduce(tot, shd, Add(), 0.0);
    cnt = block_reduce(cnt, shc, Add(), 0LL);
    if (threadIdx.x == 0) {
        part_sum[blockIdx.x] = tot;
        part_cnt[blockIdx.x] = cnt;
    }
}

template <class T>
__global__ void __launch_bounds__(kCeParts)
    ce_final_kernel(const double *__restrict__ part_sum, const long long *__restrict__ part_cnt, int parts, bool mean,
                    T *__restrict__ out, int64_t *__restrict__ count)
{
    __shared__ double shd[32];
    __shared__ long long shc[32];
    const bool mine = static_cast<int>(threadIdx.x) < parts;
    const double tot = block_reduce(mine ? part_sum[threadIdx.x] : 0.0, shd, Add(), 0.0);
    const long long cnt = block_reduce(mine ? part_cnt[threadIdx.x] : 0LL, shc, Add(), 0LL);
    if (threadIdx.x == 0) {
        put(*out, mean ? (cnt ? tot / static_cast<double>(cnt) : 0.0) : tot);
        if (count) *count = cnt;
    }
}

template <class T, int V, bool BLOCK>
__global__ void __launch_bounds__(BLOCK ? 1024 : 256, BLOCK ? 1 : sizeof(T) == 8 ? 2 : 4)
    ce_bwd_kernel(const T *__restrict__ logits, const void *__restrict__ tgt, int tdt, int64_t N, int64_t C,
                  int64_t ignore, const T *__restrict__ gy, bool gy_per_row, const int64_t *__restrict__ count,
                  T *__restrict__ gx, int G)
{
    using A = typename AccOf<T>::type;
    __shared__ MaxSum<A> sh[32];
    const Rows<BLOCK> g(G);
    A factor = A(1);
    if (count) {
        const int64_t k = *count;
        factor = k > 0 ? A(1) / static_cast<A>(k) : A(0);
    }
    for (int64_t r0 = g.first(); r0 < N; r0 += g.stride()) {
        const int64_t r = r0 + g.sub;
        const bool ok = r < N;
        const int64_t t = ok ? fgk::ld_index(tgt, tdt, r) : ignore;
        const bool valid = ok && counted(t, ignore, C);
        const T *xr = logits + (ok ? r * C : 0);
        T *gr = gx + (ok ? r * C : 0);
        const MaxSum<A> st = row_max_sum<V>(xr, valid ? C : 0, 1, g, G, sh);
        const A sc = valid ? factor * to_acc(gy[gy_per_row ? r : 0]) : A(0), inv = A(1) / st.s;
        for_row<V>(xr, ok ? C : 0, g.lane, g.size, [&](auto w, int64_t j) {
            constexpr int W = decltype(w)::value;
            A v[W];
            if (valid) {
                ldw<W>(xr, j, 1, v);
#pragma unroll
                for (int k = 0; k < W; k++) v[k] = sc * (fexp(v[k] - st.m) * inv - (j + k == t ? A(1) : A(0)));
            } else {
#pragma unroll
                for (int k = 0; k < W; k++) v[k] = A(0);
            }
            stw<W>(gr, j, 1, v);
        });
    }
}

// Loads per row: 16-byte chunks plus up to two partial ends when vec.
template <class T> int64_t row_chunks(int64_t n, bool vec)
{
    constexpr int64_t V = 16 / sizeof(T);
    return vec ? (n + V - 1) / V + 1 : n;
}

template <class T>
int softmax_fwd_t(const void *x, void *y, int64_t outer, int64_t n, int64_t inner, bool log_out, cudaStream_t s)
{
    const int64_t rows = outer * inner;
    const bool vec = inner == 1 && aligned16(x) && aligned16(y);
    constexpr int64_t V = 16 / sizeof(T);
    if (vec && n % V == 0) {
        // 2-byte rows hold the raw chunks and their exps as floats: 4 chunks a lane
        constexpr int MAXC = sizeof(T) == 2 ? 4 : 8;
        const RegPlan rp = plan_reg_rows(rows, n / V, MAXC);
        if (rp.ok) {
            FG_LAUNCH_REG(softmax_fwd_reg, MAXC, T, rp, s, static_cast<const T *>(x), static_cast<T *>(y), rows, n / V,
                          rp.G, log_out);
            return static_cast<int>(cudaGetLastError());
        }
    }
    const Plan p = plan_rows(rows, row_chunks<T>(n, vec), inner);
    FG_LAUNCH_ROWS(softmax_fwd_kernel, T, vec, p, s, static_cast<const T *>(x), static_cast<T *>(y), rows, n, inner,
                   p.G, log_out);
    return static_cast<int>(cudaGetLastError());
}

template <class T>
int softmax_bwd_t(const void *y, const void *gy, void *gx, int64_t outer, int64_t n, int64_t inner, bool log_out,
                  cudaStream_t s)
{
    const int64_t rows = outer * inner;
    const bool vec = inner == 1 && aligned16(y) && aligned16(gy) && aligned16(gx);
    constexpr int64_t V = 16 / sizeof(T);
    if (vec && n % V == 0) {
        const RegPlan rp = plan_reg_rows(rows, n / V, 4);
        if (rp.ok) {
            FG_LAUNCH_REG(softmax_bwd_reg, 4, T, rp, s, static_cast<const T *>(y), static_cast<const T *>(gy),
                          static_cast<T *>(gx), rows, n / V, rp.G, log_out);
            return static_cast<int>(cudaGetLastError());
        }
    }
    const Plan p = plan_rows(rows, row_chunks<T>(n, vec), inner);
    FG_LAUNCH_ROWS(softmax_bwd_kernel, T, vec, p, s, static_cast<const T *>(y), static_cast<const T *>(gy),
                   static_cast<T *>(gx), rows, n, inner, p.G, log_out);
    return static_cast<int>(cudaGetLastError());
}

template <class T>
int ce_fwd_t(const void *logits, const void *tgt, int tdt, int64_t N, int64_t C, int64_t ignore, int reduction,
             void *out, double *scratch, int64_t *count, int64_t *err_rec, cudaStream_t s)
{
    if (N > 0) {
        const bool vec = aligned16(logits);
        const Plan p = plan_rows(N, row_chunks<T>(C, vec), 1);
        T *rows_out = reduction == FG_K_CE_NONE ? static_cast<T *>(out) : nullptr;
        FG_LAUNCH_ROWS(ce_fwd_kernel, T, vec, p, s, static_cast<const T *>(logits), tgt, tdt, N, C, ignore, rows_out,
                       scratch, err_rec, p.G);
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return static_cast<int>(e);
    }
    if (reduction != FG_K_CE_NONE) {
        // scratch: N row losses, then kCeParts partial sums and kCeParts counts
        double *part_sum = scratch + N;
        long long *part_cnt = reinterpret_cast<long long *>(part_sum + kCeParts);
        const int64_t rpb = N > 0 ? (N + kCeParts - 1) / kCeParts : 1;
        const int parts = static_cast<int>(N > 0 ? (N + rpb - 1) / rpb : 1);
        ce_partial_kernel<<<parts, 256, 0, s>>>(scratch, tgt, tdt, N, C, ignore, rpb, part_sum, part_cnt);
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return static_cast<int>(e);
        ce_final_kernel<T><<<1, kCeParts, 0, s>>>(part_sum, part_cnt, parts, reduction == FG_K_CE_MEAN,
                                                  static_cast<T *>(out), count);
    }
    return static_cast<int>(cudaGetLastError());
}

template <class T>
int ce_bwd_t(const void *logits, const void *tgt, int tdt, int64_t N, int64_t C, int64_t ignore, const void *gy,
             bool gy_per_row, const int64_t *count, void *gx, cudaStream_t s)
{
    const bool vec = aligned16(logits) && aligned16(gx);
    const Plan p = plan_rows(N, row_chunks<T>(C, vec), 1);
    FG_LAUNCH_ROWS(ce_bwd_kernel, T, vec, p, s, static_cast<const T *>(logits), tgt, tdt, N, C, ignore,
                   static_cast<const T *>(gy), gy_per_row, count, static_cast<T *>(gx), p.G);
    return static_cast<int>(cudaGetLastError());
}

} // namespace

extern "C" int fg_k_softmax_fwd(const void *x, void *y, int dtype, int64_t outer, int64_t n, int64_t inner,
                                int log_out, void *stream)
{
    if (outer <= 0 || n <= 0 || inner <= 0) return 0;
    FG_DISPATCH_FLOAT(dtype, softmax_fwd_t, x, y, outer, n, inner, log_out != 0, static_cast<cudaStream_t>(stream))
}

extern "C" int fg_k_softmax_bwd(const void *y, const void *gy, void *gx, int dtype, int64_t outer, int64_t n,
                                int64_t inner, int log_out, void *stream)
{
    if (outer <= 0 || n <= 0 || inner <= 0) return 0;
    FG_DISPATCH_FLOAT(dtype, softmax_bwd_t, y, gy, gx, outer, n, inner, log_out != 0,
                      static_cast<cudaStream_t>(stream))
}

extern "C" int64_t fg_k_cross_entropy_scratch(int64_t N) { return (N > 0 ? N : 0) + 2 * kCeParts; }

extern "C" int fg_k_cross_entropy_fwd(const void *logits, int dtype, const void *targets, int target_dtype, int64_t N,
                                      int64_t C, int64_t ignore_index, int reduction, void *out, double *scratch,
                                      int64_t *count, int64_t *err_rec, void *stream)
{
    if (target_dtype != 4 && target_dtype != 5) return static_cast<int>(cudaErrorInvalidValue);
    if (reduction != FG_K_CE_NONE && !scratch) return static_cast<int>(cudaErrorInvalidValue);
    if (reduction == FG_K_CE_NONE && N <= 0) return 0;
    FG_DISPATCH_FLOAT(dtype, ce_fwd_t, logits, targets, target_dtype, N, C, ignore_index, reduction, out, scratch,
                      count, err_rec, static_cast<cudaStream_t>(stream))
}

extern "C" int fg_k_cross_entropy_bwd(const void *logits, int dtype, const void *targets, int target_dtype, int64_t N,
                                      int64_t C, int64_t ignore_index, const void *gy, int gy_per_row,
                                      const int64_t *count, void *gx, void *stream)
{
    if (target_dtype != 4 && target_dtype != 5) return static_cast<int>(cudaErrorInvalidValue);
    if (N <= 0 || C <= 0) return 0;
    FG_DISPATCH_FLOAT(dtype, ce_bwd_t, logits, targets, target_dtype, N, C, ignore_index, gy, gy_per_row != 0, count,
                      gx, static_cast<cudaStream_t>(stream))
}
