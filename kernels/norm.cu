// CUDA kernels of layer norm and RMS norm over the last dim (launchers
// declared in k_nn.h), forward and backward.
//
// Rows are contiguous (rows, D). As in softmax.cu, a row is handled by a group
// of G lanes (1..32, a power of two, inside one warp; several rows per block)
// for rows of up to 512 chunks, else by a block of 128..1024 threads; a chunk
// is 16 bytes (LDG/STG.128) when every pointer is 16-byte aligned and D is a
// multiple of V = 16 / sizeof(T), else one element. Reductions are xor
// shuffles plus shared memory in a fixed order (deterministic, every lane gets
// the result). Rows of whole chunks with up to 8 chunks per lane (4 in the
// backward, which holds x and gy) are register-resident (ln_*_reg): x is read
// from memory once. Statistics are two-pass (mean, then the centred sum of squares:
// no cancellation for rows with a large mean) over the row, which the later
// passes re-read from L1/L2. Accumulation in float for f32/bf16/f16 and in
// double for f64; mean and rstd are saved in that accumulation type.
//
// dweight/dbias are column sums over rows, reduced without atomics: a grid of
// (32-column tiles) x (row chunks) writes per-chunk partial sums to scratch,
// then a second kernel adds each column's partials in chunk order.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include "fg_kernels.h"
#include "k_common.cuh"

namespace {

using fgk::aligned16;
using fgk::AccOf;
using fgk::Add;
using fgk::ldw;
using fgk::put;
using fgk::stw;
using fgk::to_acc;
using fgk::reduce;
using fgk::shfl;
using fgk::Plan;
using fgk::RegPlan;
using fgk::RegRow;
using fgk::Rows;
using fgk::plan_reg_rows;
using fgk::plan_rows;
using fgk::sm_count;

template <class A> struct Pair {
    A a, b;
};
struct AddPair {
    template <class A> __device__ __forceinline__ Pair<A> operator()(Pair<A> x, Pair<A> y) const
    {
        return {x.a + y.a, x.b + y.b};
    }
};

template <class A> __device__ __forceinline__ Pair<A> shfl(Pair<A> v, int o) { return {shfl(v.a, o), shfl(v.b, o)}; }

// ---- forward ----
template <class T, int V, bool BLOCK>
__global__ void __launch_bounds__(BLOCK ? 1024 : 256, BLOCK ? 1 : sizeof(T) == 8 ? 2 : 4)
    ln_fwd_kernel(const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ b, T *__restrict__ y,
                  typename AccOf<T>::type *__restrict__ mean, typename AccOf<T>::type *__restrict__ rstd,
                  int64_t rows, int64_t D, double eps, bool rms, int G)
{
    using A = typename AccOf<T>::type;
    __shared__ A sh[32];
    const Rows<BLOCK> g(G);
    const int64_t nc = D / V;
    for (int64_t r0 = g.first(); r0 < rows; r0 += g.stride()) {
        const int64_t r = r0 + g.sub;
        const bool ok = r < rows;
        const int64_t cnt = ok ? nc : 0;
        const T *xr = x + (ok ? r * D : 0);
        A mu = 0;
        if (!rms) {
            A s = 0;
#pragma unroll 2
            for (int64_t c = g.lane; c < cnt; c += g.size) {
                A v[V];
                ldw<V>(xr, c * V, 1, v);
#pragma unroll
                for (int k = 0; k < V; k++) s += v[k];
            }
            s = reduce<BLOCK>(s, G, sh, Add(), A(0));
            mu = D ? s / static_cast<A>(D) : A(0);
        }
        A q = 0;
#pragma unroll 2
        for (int64_t c = g.lane; c < cnt; c += g.size) {
            A v[V];
            ldw<V>(xr, c * V, 1, v);
#pragma unroll
            for (int k = 0; k < V; k++) q += (v[k] - mu) * (v[k] - mu);
        }
        q = reduce<BLOCK>(q, G, sh, Add(), A(0));
        const A var = D ? q / static_cast<A>(D) : A(0);
        const A rs = A(1) / sqrt(var + static_cast<A>(eps));
        if (ok && g.lane == 0) {
            if (mean) mean[r] = mu;
            rstd[r] = rs;
        }
        for (int64_t c = g.lane; c < cnt; c += g.size) {
            A v[V], wv[V], bv[V];
            ldw<V>(xr, c * V, 1, v);
            if (w) ldw<V>(w, c * V, 1, wv);
            if (b) ldw<V>(b, c * V, 1, bv);
#pragma unroll
            for (int k = 0; k < V; k++) v[k] = (v[k] - mu) * rs * (w ? wv[k] : A(1)) + (b ? bv[k] : A(0));
            stw<V>(y + r * D, c * V, 1, v);
        }
    }
}

// ---- backward: gx per row ----
// With xh = (x - mean) rstd and dxh = gy w:
//   layernorm gx = rstd (dxh - mean(dxh) - xh mean(dxh xh))
//   rmsnorm   gx = rstd (dxh - xh mean(dxh xh))
template <class T, int V, bool BLOCK>
__global__ void __launch_bounds__(BLOCK ? 1024 : 256, BLOCK ? 1 : sizeof(T) == 8 ? 2 : 4)
    ln_bwd_dx_kernel(const T *__restrict__ x, const T *__restrict__ w,
                     const typename AccOf<T>::type *__restrict__ mean,
                     const typename AccOf<T>::type *__restrict__ rstd, const T *__restrict__ gy, T *__restrict__ gx,
                     int64_t rows, int64_t D, bool rms, int G)
{
    using A = typename AccOf<T>::type;
    __shared__ Pair<A> sh[32];
    const Rows<BLOCK> g(G);
    const int64_t nc = D / V;
    for (int64_t r0 = g.first(); r0 < rows; r0 += g.stride()) {
        const int64_t r = r0 + g.sub;
        const bool ok = r < rows;
        const int64_t cnt = ok ? nc : 0;
        const T *xr = x + (ok ? r * D : 0), *gr = gy + (ok ? r * D : 0);
        const A mu = ok && mean ? mean[r] : A(0), rs = ok ? rstd[r] : A(0);
        Pair<A> s = {A(0), A(0)};
#pragma unroll 2
        for (int64_t c = g.lane; c < cnt; c += g.size) {
            A v[V], gv[V], wv[V];
            ldw<V>(xr, c * V, 1, v);
            ldw<V>(gr, c * V, 1, gv);
            if (w) ldw<V>(w, c * V, 1, wv);
#pragma unroll
            for (int k = 0; k < V; k++) {
                const A dxh = gv[k] * (w ? wv[k] : A(1));
                s.a += dxh;
                s.b += dxh * ((v[k] - mu) * rs);
            }
        }
        s = reduce<BLOCK>(s, G, sh, AddPair(), Pair<A>{A(0), A(0)});
        const A m1 = rms ? A(0) : s.a / static_cast<A>(D), m2 = s.b / static_cast<A>(D);
        for (int64_t c = g.lane; c < cnt; c += g.size) {
            A v[V], gv[V], wv[V];
            ldw<V>(xr, c * V, 1, v);
            ldw<V>(gr, c * V, 1, gv);
            if (w) ldw<V>(w, c * V, 1, wv);
#pragma unroll
            for (int k = 0; k < V; k++) {
                const A dxh = gv[k] * (w ? wv[k] : A(1));
                v[k] = rs * (dxh - m1 - (v[k] - mu) * rs * m2);
            }
            stw<V>(gx + r * D, c * V, 1, v);
        }
    }
}

// ---- register-resident rows (D a multiple of V, up to 8 chunks per lane) ----
// The forward reads x once: mean, centred sum of squares and the output all
// come from registers; the backward reads x and gy once each.
template <class T, int CPT, bool BLOCK>
__global__ void __launch_bounds__(BLOCK ? 512 : 256, BLOCK ? 1 : 2)
    ln_fwd_reg(const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ b, T *__restrict__ y,
               typename AccOf<T>::type *__restrict__ mean, typename AccOf<T>::type *__restrict__ rstd, int64_t rows,
               int64_t D, double eps, bool rms, int G)
{
    using A = typename AccOf<T>::type;
    constexpr int V = RegRow<T, CPT>::V;
    __shared__ A sh[32];
    const Rows<BLOCK> g(G);
    for (int64_t r0 = g.first(); r0 < rows; r0 += g.stride()) {
        const int64_t r = r0 + g.sub;
        const bool ok = r < rows;
        RegRow<T, CPT> row(ok ? D / V : 0, g.lane, g.size);
        row.load(x + (ok ? r * D : 0));
        A mu = 0;
        if (!rms) {
            A s = 0;
#pragma unroll
            for (int k = 0; k < CPT; k++)
                if (row.has(k))
#pragma unroll
                    for (int e = 0; e < V; e++) s += row.template get<A>(k, e);
            mu = reduce<BLOCK>(s, G, sh, Add(), A(0)) / static_cast<A>(D);
        }
        A q = 0;
#pragma unroll
        for (int k = 0; k < CPT; k++)
            if (row.has(k))
#pragma unroll
                for (int e = 0; e < V; e++) {
                    const A d = row.template get<A>(k, e) - mu;
                    q += d * d;
                }
        const A var = reduce<BLOCK>(q, G, sh, Add(), A(0)) / static_cast<A>(D);
        const A rs = A(1) / sqrt(var + static_cast<A>(eps));
        if (ok && g.lane == 0) {
            if (mean) mean[r] = mu;
            rstd[r] = rs;
        }
#pragma unroll
        for (int k = 0; k < CPT; k++)
            if (row.has(k)) {
                const int64_t j = row.at(k) * V;
                A v[V], wv[V], bv[V];
                if (w) ldw<V>(w, j, 1, wv);
                if (b) ldw<V>(b, j, 1, bv);
#pragma unroll
                for (int e = 0; e < V; e++)
                    v[e] = (row.template get<A>(k, e) - mu) * rs * (w ? wv[e] : A(1)) + (b ? bv[e] : A(0));
                stw<V>(y + r * D, j, 1, v);
            }
    }
}

template <class T, int CPT, bool BLOCK>
__global__ void __launch_bounds__(BLOCK ? 512 : 256, BLOCK ? 1 : 2)
    ln_bwd_dx_reg(const T *__restrict__ x, const T *__restrict__ w, const typename AccOf<T>::type *__restrict__ mean,
                  const typename AccOf<T>::type *__restrict__ rstd, const T *__restrict__ gy, T *__restrict__ gx,
                  int64_t rows, int64_t D, bool rms, int G)
{
    using A = typename AccOf<T>::type;
    constexpr int V = RegRow<T, CPT>::V;
    __shared__ Pair<A> sh[32];
    const Rows<BLOCK> g(G);
    for (int64_t r0 = g.first(); r0 < rows; r0 += g.stride()) {
        const int64_t r = r0 + g.sub;
        const bool ok = r < rows;
        const int64_t off = ok ? r * D : 0;
        RegRow<T, CPT> xr(ok ? D / V : 0, g.lane, g.size), gr(ok ? D / V : 0, g.lane, g.size);
        xr.load(x + off);
        gr.load(gy + off);
        const A mu = ok && mean ? mean[r] : A(0), rs = ok ? rstd[r] : A(0);
        Pair<A> s = {A(0), A(0)};
#pragma unroll
        for (int k = 0; k < CPT; k++)
            if (xr.has(k)) {
                A wv[V];
                if (w) ldw<V>(w, xr.at(k) * V, 1, wv);
#pragma unroll
                for (int e = 0; e < V; e++) {
                    const A dxh = gr.template get<A>(k, e) * (w ? wv[e] : A(1));
                    s.a += dxh;
                    s.b += dxh * ((xr.template get<A>(k, e) - mu) * rs);
                }
            }
        s = reduce<BLOCK>(s, G, sh, AddPair(), Pair<A>{A(0), A(0)});
        const A m1 = rms ? A(0) : s.a / static_cast<A>(D), m2 = s.b / static_cast<A>(D);
#pragma unroll
        for (int k = 0; k < CPT; k++)
            if (xr.has(k)) {
                const int64_t j = xr.at(k) * V;
                A v[V], wv[V];
                if (w) ldw<V>(w, j, 1, wv);
#pragma unroll
                for (int e = 0; e < V; e++) {
                    const A dxh = gr.template get<A>(k, e) * (w ? wv[e] : A(1));
                    v[e] = rs * (dxh - m1 - (xr.template get<A>(k, e) - mu) * rs * m2);
                }
                stw<V>(gx + off, j, 1, v);
            }
    }
}

// ---- backward: dweight = sum_r gy xh, dbias = sum_r gy ----
constexpr int kColTile = 32, kRowLanes = 8;

// Block (32, 8): column tile blockIdx.x, rows [blockIdx.y rpc, +rpc) split over
// threadIdx.y; the 8 partial sums of a column are added in order in shared
// memory and written to pw/pb[blockIdx.y][col].
template <class T>
__global__ void __launch_bounds__(kColTile *kRowLanes)
    ln_bwd_params_partial(const T *__restrict__ x, const T *__restrict__ gy,
                          const typename AccOf<T>::type *__restrict__ mean,
                          const typename AccOf<T>::type *__restrict__ rstd, int64_t rows, int64_t D, int64_t rpc,
                          typename AccOf<T>::type *__restrict__ pw, typename AccOf<T>::type *__restrict__ pb)
{
    using A = typename AccOf<T>::type;
    __shared__ A shw[kRowLanes][kColTile], shb[kRowLanes][kColTile];
    const int64_t col = static_cast<int64_t>(blockIdx.x) * kColTile + threadIdx.x;
    const int64_t begin = static_cast<int64_t>(blockIdx.y) * rpc, end = begin + rpc < rows ? begin + rpc : rows;
    A aw = 0, ab = 0;
    if (col < D) {
#pragma unroll 4
        for (int64_t r = begin + threadIdx.y; r < end; r += kRowLanes) {
            const A gv = to_acc(gy[r * D + col]);
            if (pw) aw += gv * ((to_acc(x[r * D + col]) - (mean ? mean[r] : A(0))) * rstd[r]);
            ab += gv;
        }
    }
    shw[threadIdx.y][threadIdx.x] = aw;
    shb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && col < D) {
        A sw = 0, sb = 0;
#pragma unroll
        for (int k = 0; k < kRowLanes; k++) {
            sw += shw[k][threadIdx.x];
            sb += shb[k][threadIdx.x];
        }
        if (pw) pw[static_cast<int64_t>(blockIdx.y) * D + col] = sw;
        if (pb) pb[static_cast<int64_t>(blockIdx.y) * D + col] = sb;
    }
}

// Column j: the partials of chunks 0, 1, ... in order.
template <class T>
__global__ void __launch_bounds__(256)
    ln_bwd_params_final(const typename AccOf<T>::type *__restrict__ pw, const typename AccOf<T>::type *__restrict__ pb,
                        int64_t chunks, int64_t D, T *__restrict__ gw, T *__restrict__ gb)
{
    using A = typename AccOf<T>::type;
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < D;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        A sw = 0, sb = 0;
        for (int64_t k = 0; k < chunks; k++) {
            if (gw) sw += pw[k * D + j];
            if (gb) sb += pb[k * D + j];
        }
        if (gw) put(gw[j], sw);
        if (gb) put(gb[j], sb);
    }
}

// Row chunks of the column-sum grid: about 4 blocks per SM in all, each chunk >= 8 rows.
struct ParamPlan {
    int64_t tiles, chunks, rpc;
};
ParamPlan plan_params(int64_t rows, int64_t D)
{
    ParamPlan p;
    p.tiles = (D + kColTile - 1) / kColTile;
    const int64_t target = 4 * static_cast<int64_t>(sm_count());
    int64_t chunks = (target + p.tiles - 1) / (p.tiles > 0 ? p.tiles : 1);
    const int64_t max_chunks = (rows + kRowLanes - 1) / kRowLanes;
    if (chunks > max_chunks) chunks = max_chunks;
    if (chunks > 65535) chunks = 65535;
    if (chunks < 1) chunks = 1;
    p.rpc = rows > 0 ? (rows + chunks - 1) / chunks : 1;
    p.chunks = rows > 0 ? (rows + p.rpc - 1) / p.rpc : 1;
    return p;
}

template <class T>
int ln_fwd_t(const void *x, const void *w, const void *b, void *y, void *mean, void *rstd, int64_t rows, int64_t D,
             double eps, bool rms, cudaStream_t s)
{
    using A = typename AccOf<T>::type;
    const bool vec = D % (16 / sizeof(T)) == 0 && aligned16(x) && aligned16(y) && (!w || aligned16(w)) &&
                     (!b || aligned16(b));
    if (vec) {
        const RegPlan rp = plan_reg_rows(rows, D / (int64_t)(16 / sizeof(T)), 8);
        if (rp.ok) {
            FG_LAUNCH_REG(ln_fwd_reg, 8, T, rp, s, static_cast<const T *>(x), static_cast<const T *>(w),
                          static_cast<const T *>(b), static_cast<T *>(y), rms ? nullptr : static_cast<A *>(mean),
                          static_cast<A *>(rstd), rows, D, eps, rms, rp.G);
            return static_cast<int>(cudaGetLastError());
        }
    }
    const Plan p = plan_rows(rows, vec ? D / (int64_t)(16 / sizeof(T)) : D, 1);
    FG_LAUNCH_ROWS(ln_fwd_kernel, T, vec, p, s, static_cast<const T *>(x), static_cast<const T *>(w),
                   static_cast<const T *>(b), static_cast<T *>(y), rms ? nullptr : static_cast<A *>(mean),
                   static_cast<A *>(rstd), rows, D, eps, rms, p.G);
    return static_cast<int>(cudaGetLastError());
}

template <class T>
int ln_bwd_t(const void *x, const void *w, const void *mean, const void *rstd, const void *gy, void *gx, void *gw,
             void *gb, int64_t rows, int64_t D, bool rms, void *scratch, cudaStream_t s)
{
    using A = typename AccOf<T>::type;
    const A *mp = rms ? nullptr : static_cast<const A *>(mean), *rp = static_cast<const A *>(rstd);
    if (gx && rows > 0 && D > 0) {
        const bool vec = D % (16 / sizeof(T)) == 0 && aligned16(x) && aligned16(gy) && aligned16(gx) &&
                         (!w || aligned16(w));
        const RegPlan reg = vec ? plan_reg_rows(rows, D / (int64_t)(16 / sizeof(T)), 4) : RegPlan{};
        if (reg.ok) {
            FG_LAUNCH_REG(ln_bwd_dx_reg, 4, T, reg, s, static_cast<const T *>(x), static_cast<const T *>(w), mp, rp,
                          static_cast<const T *>(gy), static_cast<T *>(gx), rows, D, rms, reg.G);
        } else {
            const Plan p = plan_rows(rows, vec ? D / (int64_t)(16 / sizeof(T)) : D, 1);
            FG_LAUNCH_ROWS(ln_bwd_dx_kernel, T, vec, p, s, static_cast<const T *>(x), static_cast<const T *>(w), mp,
                           rp, static_cast<const T *>(gy), static_cast<T *>(gx), rows, D, rms, p.G);
        }
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return static_cast<int>(e);
    }
    if ((gw || gb) && D > 0) {
        if (!scratch) return static_cast<int>(cudaErrorInvalidValue);
        const ParamPlan pp = plan_params(rows, D);
        A *pw = static_cast<A *>(scratch), *pb = pw + pp.chunks * D;
        ln_bwd_params_partial<T><<<dim3(static_cast<unsigned>(pp.tiles), static_cast<unsigned>(pp.chunks)),
                                   dim3(kColTile, kRowLanes), 0, s>>>(static_cast<const T *>(x),
                                                                      static_cast<const T *>(gy), mp, rp, rows, D,
                                                                      pp.rpc, gw ? pw : nullptr, gb ? pb : nullptr);
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return static_cast<int>(e);
        const int64_t blocks = (D + 255) / 256, cap = 4 * static_cast<int64_t>(sm_count());
        ln_bwd_params_final<T><<<static_cast<unsigned>(blocks < cap ? blocks : cap), 256, 0, s>>>(
            pw, pb, pp.chunks, D, static_cast<T *>(gw), static_cast<T *>(gb));
    }
    return static_cast<int>(cudaGetLastError());
}

template <class T> int64_t ln_scratch_t(int64_t rows, int64_t D)
{
    const ParamPlan pp = plan_params(rows, D);
    return 2 * pp.chunks * D * static_cast<int64_t>(sizeof(typename AccOf<T>::type));
}

} // namespace

extern "C" int fg_k_layernorm_fwd(const void *x, const void *w, const void *b, void *y, void *mean, void *rstd,
                                  int dtype, int64_t rows, int64_t D, double eps, int rms, void *stream)
{
    if (rows <= 0) return 0;
    FG_DISPATCH_FLOAT(dtype, ln_fwd_t, x, w, b, y, mean, rstd, rows, D, eps, rms != 0,
                      static_cast<cudaStream_t>(stream))
}

extern "C" int64_t fg_k_layernorm_bwd_scratch(int dtype, int64_t rows, int64_t D)
{
    if (D <= 0) return 0;
    return dtype == 1 ? ln_scratch_t<double>(rows, D) : ln_scratch_t<float>(rows, D);
}

extern "C" int fg_k_layernorm_bwd(const void *x, const void *w, const void *mean, const void *rstd, const void *gy,
                                  void *gx, void *gw, void *gb, int dtype, int64_t rows, int64_t D, int rms,
                                  void *scratch, void *stream)
{
    FG_DISPATCH_FLOAT(dtype, ln_bwd_t, x, w, mean, rstd, gy, gx, gw, gb, rows, D, rms != 0, scratch,
                      static_cast<cudaStream_t>(stream))
}
