// Flash-attention backward for f32 with head dim 64 on Hopper's warpgroup
// tensor cores (wgmma with tf32 operands, sm_90a). Every product is split
// 3xTF32 (lo*hi + hi*lo + hi*hi), as in the mma.sync f32 kernels, for close to
// f32 accuracy.
//
// A block is one warpgroup (4 warps, 128 threads) and owns 64 keys of one KV
// head; warp w holds keys 16w..16w+15. It steps over BQ = 32 query rows at a
// time, through every query block of every head of the GQA group that sees its
// keys:
//   S^T  = K Q^T,  dP^T = V dO^T   A: K / V fragments (registers), B: Q / dO
//   P^T = exp2(S^T scale log2e - LSE), dS^T = P^T (dP^T z / (1 - p) - dsum)
//   dV += (P^T z) dO, dK += dS^T Q A: the P^T / dS^T accumulators, B: dO^T / Q^T
//   dQ^T = K^T dS^T                A: K^T fragments, B: dS; fp32 atomics into dq_acc
// tf32 operands in shared memory must be K-major (the reduction runs along a
// row), so each step stores Q and dO twice, as they are (for S^T, dP^T) and
// transposed (for dV, dK), each as tf32 hi and lo halves. The hi/lo split of
// a register operand is made as it is loaded. An accumulator holds columns
// 2t, 2t + 1 of each 8-column group where an A fragment holds k slots t, t + 4,
// so the transposed copies store query 2j of a group at slot j and 2j + 1 at
// slot j + 4 (qslot), and the accumulators pass into the next product as they
// are. dS goes to shared memory for dQ in the space of Q's first copy, which
// S^T has finished reading by then.
//
// Same masking (causal bottom-right, key padding, varlen), dropout mask
// (Dropout::quad) and results as flash_bwd_dkdv in attention_bwd.cu.
#include "k_wgmma.cuh"

namespace fgk {
namespace tf32 { // named: the compute_90 pass, which has no kernel body, would call them unused
using namespace fgk::flash;

constexpr int DP = 64, BK = 64, BQ = 32, NTH = 128;
constexpr int ST = Tile<float, DP>::ST;    // row stride of the padded K / V tiles
constexpr int TILE = BQ * DP;              // floats in one swizzled Q / dO copy or dS
// swizzled tiles: Q, dO as they are and transposed, hi and lo each (dS over Q's);
// then K, V (padded rows), lse and dsum of the step
constexpr size_t SMEM = sizeof(float) * (8 * TILE + 2 * BK * ST + 2 * BQ) + 1024;
static_assert(SMEM <= 113 * 1024, "two blocks an SM");

// Offset of (row r, column c) in a K-major tile of 32-bit elements and ROWS
// rows: panels of 32 columns (128 bytes a row), 16-byte chunks swizzled by
// the row (the 128-byte swizzle of k_wgmma.cuh, which is in bytes).
template <int ROWS> __device__ __forceinline__ int sw32(int r, int c)
{
    return (c >> 5) * ROWS * 32 + r * 32 + ((((c >> 2) & 7) ^ (r & 7)) << 2) + (c & 3);
}
// Descriptor step of k8 slice kk of such a tile (32 bytes into the row, then
// the next panel), in the descriptor's 16-byte units.
template <int ROWS> __device__ __forceinline__ constexpr uint64_t kstep(int kk)
{
    return static_cast<uint64_t>(((kk >> 2) * ROWS * 128 + (kk & 3) * 32) / 16);
}
// Where query row r of a block sits along k in the transposed copies.
__device__ __forceinline__ int qslot(int r) { return (r & ~7) | ((r & 1) << 2) | ((r & 7) >> 1); }

struct Frag { uint32_t h[4], l[4]; }; // one k8 A fragment, tf32 halves

__device__ __forceinline__ Frag split4(float a0, float a1, float a2, float a3)
{
    Frag f;
    Mma<float>::split(a0, f.h[0], f.l[0]);
    Mma<float>::split(a1, f.h[1], f.l[1]);
    Mma<float>::split(a2, f.h[2], f.l[2]);
    Mma<float>::split(a3, f.h[3], f.l[3]);
    return f;
}
// A fragment kk of rows r0.. of a padded tile (rows: the product's M; columns: k).
__device__ __forceinline__ Frag ld_rows(const float *s, int r0, int kk, int g, int t)
{
    const float *p = s + (r0 + g) * ST + kk * 8 + t;
    return split4(p[0], p[8 * ST], p[4], p[8 * ST + 4]);
}
// The same of the tile's transpose: M along its columns from c0, k along its rows.
__device__ __forceinline__ Frag ld_cols(const float *s, int c0, int kk, int g, int t)
{
    const float *p = s + (kk * 8 + t) * ST + c0 + g;
    return split4(p[0], p[8], p[4 * ST], p[4 * ST + 8]);
}
// An accumulator's 8-column group as the A fragment of the next product
// (k slot t = column 2t, slot t + 4 = column 2t + 1).
__device__ __forceinline__ Frag from_acc(const float (&c)[4]) { return split4(c[0], c[2], c[1], c[3]); }

// d (64 x N) += A B in 3xTF32, A = f, B = the hi / lo descriptors bh / bl.
template <int N> __device__ __forceinline__ void mma3(float (&d)[N / 8][4], const Frag &f, uint64_t bh, uint64_t bl)
{
    wg::rs_tf32(d, f.l, bh, 1);
    wg::rs_tf32(d, f.h, bl, 1);
    wg::rs_tf32(d, f.h, bh, 1);
}
// The same over the KK k8 slices of B, a K-major tile of ROWS rows: issued, not committed.
template <int N, int ROWS, int KK>
__device__ __forceinline__ void mma3_k(float (&d)[N / 8][4], const Frag (&f)[KK], uint64_t bh, uint64_t bl)
{
#pragma unroll
    for (int kk = 0; kk < KK; kk++) mma3<N>(d, f[kk], bh + kstep<ROWS>(kk), bl + kstep<ROWS>(kk));
}
// d = A B as one committed group, A's KK fragments from load(kk).
template <int N, int ROWS, int KK, typename L>
__device__ __forceinline__ void product(float (&d)[N / 8][4], L load, uint64_t bh, uint64_t bl)
{
    Frag f[KK];
#pragma unroll
    for (int kk = 0; kk < KK; kk++) f[kk] = load(kk);
    zero(d);
    wg::pin(d);
    wg::fence();
    mma3_k<N, ROWS>(d, f, bh, bl);
    wg::commit();
}

} // namespace tf32
} // namespace fgk

namespace {
using namespace fgk;
using namespace fgk::flash;
using namespace fgk::tf32;

__global__ void __launch_bounds__(NTH, 2) flash_bwd_tf32(const fg_k_attn p, const float *dsum, float *dq_acc)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(16) unsigned char smem_raw[];
    float *Qk = wg::align1024<float>(smem_raw); // 2 x (BQ, DP): hi, lo; later dS (BQ, BK) hi, lo
    float *dOk = Qk + 2 * TILE;                 // 2 x (BQ, DP)
    float *Qt = dOk + 2 * TILE;                 // 2 x (DP, BQ), queries at qslot
    float *dOt = Qt + 2 * TILE;                 // 2 x (DP, BQ)
    float *Ks = dOt + 2 * TILE;                 // (BK, DP) padded rows
    float *Vs = Ks + BK * ST;                   // (BK, DP)
    float *lse_s = Vs + BK * ST;                // BQ, log2 domain, +inf past lq
    float *dsum_s = lse_s + BQ;                 // BQ

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    // key blocks of one head consecutive, as attention_bwd_wg.cu
    const int nkb = (p.Lk + BK - 1) / BK, bhk = blockIdx.x / nkb, b = bhk / p.Hkv, hk = bhk % p.Hkv;
    const int j0 = blockIdx.x % nkb * BK;
    const Seq sq(p, b);
    if (j0 >= sq.nk) return; // a shorter sequence of a varlen batch
    const QBlocks<BQ> qb(p, sq, hk, j0); // the query blocks that see these keys

    load_tile<float, BK, DP, NTH>(Ks, rows_of<float>(p.k, p.k_s, b, hk, sq.k0), p.k_s[2], j0, sq.lk, p.D, true);
    load_tile<float, BK, DP, NTH>(Vs, rows_of<float>(p.v, p.v_s, b, hk, sq.k0), p.v_s[2], j0, sq.lk, p.D, true);
    cp_commit();

    // This thread's share of a step's Q / dO: rows 8j + lane % 8, columns
    // 4 (4 warp + lane / 8).., j = 0..3 (a warp reads 8 rows x 64 bytes a j).
    const int cq = 4 * (4 * warp + (lane >> 3));
    float4 nq[4], ndo[4];
    float nl = INFINITY, nd = 0.f;
    auto fetch = [&](int it) {
        const int h = qb.head(it), i0 = qb.row0(it);
        const float *qg = rows_of<float>(p.q, p.q_s, b, h, sq.q0) + cq;
        const float *dog = rows_of<float>(p.dout, p.do_s, b, h, sq.q0) + cq;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int row = i0 + 8 * j + (lane & 7);
            const bool in = row < sq.lq;
            nq[j] = in ? *reinterpret_cast<const float4 *>(qg + row * p.q_s[2]) : make_float4(0.f, 0.f, 0.f, 0.f);
            ndo[j] = in ? *reinterpret_cast<const float4 *>(dog + row * p.do_s[2]) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
        if (threadIdx.x < BQ) {
            const bool in = i0 + static_cast<int>(threadIdx.x) < sq.lq;
            const int64_t l = sq.lse0(p, b, h) + i0 + threadIdx.x;
            nl = in ? p.lse[l] * LOG2E : INFINITY; // P = 0 past lq
            nd = in ? dsum[l] : 0.f;
        }
    };
    // the fetched rows into the swizzled copies, split
    auto put = [&](const float4 (&v)[4], float *k_hi, float *t_hi) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int r = 8 * j + (lane & 7), qs = qslot(r);
            uint4 h, l;
            Mma<float>::split(v[j].x, h.x, l.x);
            Mma<float>::split(v[j].y, h.y, l.y);
            Mma<float>::split(v[j].z, h.z, l.z);
            Mma<float>::split(v[j].w, h.w, l.w);
            *reinterpret_cast<uint4 *>(k_hi + sw32<BQ>(r, cq)) = h;
            *reinterpret_cast<uint4 *>(k_hi + TILE + sw32<BQ>(r, cq)) = l;
            uint32_t *th = reinterpret_cast<uint32_t *>(t_hi), *tl = th + TILE;
            th[sw32<DP>(cq, qs)] = h.x, tl[sw32<DP>(cq, qs)] = l.x;
            th[sw32<DP>(cq + 1, qs)] = h.y, tl[sw32<DP>(cq + 1, qs)] = l.y;
            th[sw32<DP>(cq + 2, qs)] = h.z, tl[sw32<DP>(cq + 2, qs)] = l.z;
            th[sw32<DP>(cq + 3, qs)] = h.w, tl[sw32<DP>(cq + 3, qs)] = l.w;
        }
    };
    if (qb.total > 0) fetch(0);

    const int wk = warp * 16, ka = j0 + wk + g; // this thread's keys: ka, ka + 8
    const float sl2 = p.scale * LOG2E;
    float dk[DP / 8][4], dv[DP / 8][4];
    zero(dk);
    zero(dv);
    const uint64_t qk_h = wg::desc_k0(Qk), qk_l = wg::desc_k0(Qk + TILE);
    const uint64_t dok_h = wg::desc_k0(dOk), dok_l = wg::desc_k0(dOk + TILE);
    const uint64_t qt_h = wg::desc_k0(Qt), qt_l = wg::desc_k0(Qt + TILE);
    const uint64_t dot_h = wg::desc_k0(dOt), dot_l = wg::desc_k0(dOt + TILE);
    cp_wait<0>();

    for (int it = 0; it < qb.total; it++) {
        const int h = qb.head(it), i0 = qb.row0(it), bh = b * p.Hq + h;
        __syncthreads(); // the step before is done with every tile (and K / V are in)
        put(nq, Qk, Qt);
        put(ndo, dOk, dOt);
        if (threadIdx.x < BQ) lse_s[threadIdx.x] = nl, dsum_s[threadIdx.x] = nd;
        if (it + 1 < qb.total) fetch(it + 1); // lands during this step's products
        wg::fence_proxy();
        __syncthreads();

        // S^T (keys x queries), then dP^T while P^T is computed
        float s[BQ / 8][4], dp[BQ / 8][4];
        product<BQ, BQ, DP / 8>(s, [&](int kk) { return ld_rows(Ks, wk, kk, g, t); }, qk_h, qk_l);
        wg::wait<0>();
        wg::pin(s);
        product<BQ, BQ, DP / 8>(dp, [&](int kk) { return ld_rows(Vs, wk, kk, g, t); }, dok_h, dok_l);
        // P^T (before the dropout mask); a key is visible to query i when key < key_end(i)
        const bool edge = j0 + BK > sq.lk || (sq.causal && j0 + BK > sq.key_end(i0));
#pragma unroll
        for (int n = 0; n < BQ / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int q = n * 8 + 2 * t + (e & 1), key = ka + (e < 2 ? 0 : 8);
                const float l2 = lse_s[q];
                if (!edge)
                    s[n][e] = ex2(fmaf(s[n][e], sl2, -l2));
                else
                    s[n][e] = key < sq.key_end(i0 + q) ? ex2(s[n][e] * sl2 - l2) : 0.f;
            }
        wg::wait<0>();
        wg::pin(dp);
        // dS^T into dp, P^T z into s
        const Dropout drop(p, bh);
#pragma unroll
        for (int n = 0; n < BQ / 8; n++) {
            float z[4] = {1.f, 1.f, 1.f, 1.f};
            if (drop.on) drop.quad(i0 + n * 8 + 2 * t, ka, ka + 8, z);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float ds = dsum_s[n * 8 + 2 * t + (e & 1)];
                dp[n][e] = drop.on ? s[n][e] * (dp[n][e] * z[e] * drop.scale - ds) : s[n][e] * (dp[n][e] - ds);
                s[n][e] *= z[e];
            }
        }
        Frag pa[BQ / 8], da[BQ / 8];
#pragma unroll
        for (int n = 0; n < BQ / 8; n++) {
            pa[n] = from_acc(s[n]);
            da[n] = from_acc(dp[n]);
        }
        wg::pin(dv);
        wg::pin(dk);
        wg::fence();
        mma3_k<DP, DP>(dv, pa, dot_h, dot_l);
        mma3_k<DP, DP>(dk, da, qt_h, qt_l);
        wg::commit();

        if (dq_acc) {
            __syncthreads(); // every warp is past S^T: Q's first copy is free for dS
            // dS (queries x keys) from the split dS^T fragments: slot x of group n is query 8n + 2(x % 4) + x / 4
            uint32_t *dsh = reinterpret_cast<uint32_t *>(Qk), *dsl = dsh + TILE;
#pragma unroll
            for (int n = 0; n < BQ / 8; n++)
#pragma unroll
                for (int x = 0; x < 4; x++) {
                    const int q = n * 8 + 2 * t + (x >> 1), key = wk + g + ((x & 1) ? 8 : 0);
                    dsh[sw32<BQ>(q, key)] = da[n].h[x];
                    dsl[sw32<BQ>(q, key)] = da[n].l[x];
                }
            wg::fence_proxy();
            __syncthreads();
            wg::wait<0>(); // dV, dK
            wg::pin(dv);
            wg::pin(dk);
            // dQ^T (dims x queries): this warp's dims 16 warp..
            float dqt[BQ / 8][4];
            product<BQ, BQ, BK / 8>(dqt, [&](int kk) { return ld_cols(Ks, wk, kk, g, t); }, qk_h, qk_l); // dS over Q's copy
            wg::wait<0>();
            wg::pin(dqt);
            float *dst = dq_acc + (sq.lse0(p, b, h) + i0) * DP + wk + g;
#pragma unroll
            for (int n = 0; n < BQ / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int q = n * 8 + 2 * t + (e & 1);
                    if (i0 + q < sq.lq) atomicAdd(dst + q * DP + (e < 2 ? 0 : 8), dqt[n][e]);
                }
        } else {
            wg::wait<0>();
            wg::pin(dv);
            wg::pin(dk);
        }
    }
    __syncthreads(); // every warp is done with K / V

    // dK (times scale) and dV (times 1 / (1 - p)) staged through this warp's rows of Ks / Vs
    const float vs = p.drop_threshold ? p.drop_scale : 1.f;
    store_acc16<float, DP>(dk, p.scale, p.scale, Ks + wk * ST, rows_of<float>(p.dk, p.dk_s, b, hk, sq.k0), p.dk_s[2],
                           j0 + wk, sq.nk, p.D, p.vec);
    store_acc16<float, DP>(dv, vs, vs, Vs + wk * ST, rows_of<float>(p.dv, p.dv_s, b, hk, sq.k0), p.dv_s[2], j0 + wk,
                           sq.nk, p.D, p.vec);
#else
    (void)p, (void)dsum, (void)dq_acc; // built for another target: never launched (fg_wgmma_usable)
#endif
}
} // namespace

bool fg_k_flash_bwd_tf32(const fg_k_attn &p, const float *dsum, float *dq_acc, cudaStream_t st, cudaError_t *err)
{
    if (p.D != DP || !p.vec || !fg_wgmma_usable()) return false;
    static const cudaError_t attr = allow_smem(flash_bwd_tf32, SMEM);
    if ((*err = attr) != cudaSuccess) return true;
    const int64_t blocks = static_cast<int64_t>(p.B) * p.Hkv * ((p.Lk + BK - 1) / BK);
    if (blocks > INT32_MAX) {
        *err = cudaErrorInvalidConfiguration;
        return true;
    }
    if (dq_acc && (*err = cudaMemsetAsync(dq_acc, 0, sizeof(float) * static_cast<size_t>(p.lse_n) * DP, st)) !=
                      cudaSuccess)
        return true;
    flash_bwd_tf32<<<static_cast<unsigned>(blocks), NTH, SMEM, st>>>(p, dsum, dq_acc);
    *err = cudaGetLastError();
    return true;
}
