// Flash-attention backward on tensor cores (FlashAttention-2's schedule):
//  1. pre:  dsum_i = rowsum(dO_i * O_i) (fp32), 16-byte chunks.
//  2. dK/dV: a block owns a range of keys of one KV head (K and V in shared
//     memory) and walks every query block of every query head of its GQA
//     group, recomputing P^T = exp(S^T - LSE) from the saved LSE:
//       dV += P^T dO,  dP^T = V dO^T,  dS^T = P^T (dP^T - dsum),  dK += dS^T Q
//     with dK/dV in registers: no atomics, the group reduced in the block.
//     flash_bwd_dkdv2 (bf16/f16, D 64 and 128): 8 warps, 128 keys, 64 query
//     rows a step, P^T and dS^T through shared memory (D64: 4 warps and 64
//     keys, three blocks an SM); flash_bwd_dkdv (others): 4 warps of 16
//     keys, 16-32 rows a step, all in registers. Unless deterministic (and
//     except bf16/f16 D64), dQ += dS K is added there too, in fp32 atomics
//     into an accumulator that 3. converts.
//  4. dq (deterministic, and bf16/f16 D64): a block owns 64 query rows and
//     walks the key blocks like the forward, dQ += dS K in registers (two
//     products more than the atomic path, no atomics).
// Dropout multiplies P by the regenerated mask where P meets V or dO V^T.
// On Hopper (sm_90a build), bf16/f16 D64/D128 replace 2.-4. by the wgmma
// kernel of attention_bwd_wg.cu (dK/dV, and dQ through its bulk reduction
// into the accumulator, which 3. converts; deterministic: 4. for dQ).
#include "k_wgmma.cuh"

namespace {
using namespace fgk;
using namespace fgk::flash;

constexpr int ROWS = 64; // rows per block of the two row-wise passes (grid: B Hq x Lq / ROWS)

// dsum (laid out like lse) = rowsum(dO * O) in fp32: a row is LPR lanes (the
// power of two >= its 16-byte chunks, at most 32), each reading whole chunks.
template <typename T> __global__ void __launch_bounds__(NT) flash_bwd_pre(const fg_k_attn p, float *dsum)
{
    constexpr int CH = 16 / sizeof(T);
    const int b = blockIdx.x / p.Hq, h = blockIdx.x % p.Hq, lane = threadIdx.x & 31;
    const Seq sq(p, b);
    const T *o = rows_of<T>(p.o, p.o_s, b, h, sq.q0), *d = rows_of<T>(p.dout, p.do_s, b, h, sq.q0);
    const int chunks = (p.D + CH - 1) / CH;
    int lpr = 1;
    while (lpr < chunks && lpr < 32) lpr <<= 1;
    const int rpw = 32 / lpr, li = lane % lpr, end = min(sq.lq, (blockIdx.y + 1) * ROWS);
    for (int i0 = blockIdx.y * ROWS + (threadIdx.x >> 5) * rpw; i0 < end; i0 += (NT / 32) * rpw) { // warp-uniform
        const int i = i0 + lane / lpr;
        float acc = 0.f;
        if (i < end) {
            const T *orow = o + i * p.o_s[2], *drow = d + i * p.do_s[2];
            for (int c = li; c < chunks; c += lpr) {
                const int e0 = c * CH;
                if (p.vec && e0 + CH <= p.D) {
                    const uint4 x = *reinterpret_cast<const uint4 *>(orow + e0);
                    const uint4 y = *reinterpret_cast<const uint4 *>(drow + e0);
                    const T *xs = reinterpret_cast<const T *>(&x), *ys = reinterpret_cast<const T *>(&y);
#pragma unroll
                    for (int k = 0; k < CH; k++) acc += to_acc(xs[k]) * to_acc(ys[k]);
                } else {
                    for (int e = e0; e < min(e0 + CH, p.D); e++) acc += to_acc(orow[e]) * to_acc(drow[e]);
                }
            }
        }
        for (int off = lpr / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (li == 0 && i < end) dsum[sq.lse0(p, b, h) + i] = acc;
    }
}

// dq = scale * acc, from the fp32 accumulator (rows laid out like lse, times
// D; SWZ: chunks swizzled as the wgmma kernel writes them, dq_acc_index).
template <typename T, bool SWZ>
__global__ void __launch_bounds__(NT) flash_bwd_dq_convert(const fg_k_attn p, const float *acc)
{
    const int b = blockIdx.x / p.Hq, h = blockIdx.x % p.Hq, i0 = blockIdx.y * ROWS;
    const Seq sq(p, b);
    const int n = (min(sq.lq, i0 + ROWS) - i0) * p.D;
    T *dq = rows_of<T>(p.dq, p.dq_s, b, h, sq.q0 + i0);
    const int64_t r0 = sq.lse0(p, b, h) + i0;
    for (int idx = threadIdx.x; idx < n; idx += NT) {
        const int r = idx / p.D, d = idx % p.D;
        const float v = SWZ ? acc[dq_acc_index(r0 + r, d, p.D)] : acc[r0 * p.D + idx];
        put(dq[r * p.dq_s[2] + d], v * p.scale);
    }
}

// The query side a dK/dV block walks: every query block (BQ rows) of every
// head of the key head's GQA group that can see the block's keys [j0, j0 + BK),
// double-buffered in shared memory: Q, dO, the LSE (log2 domain; +inf past
// lq, so P = 0 there) and dsum. Step it is head head(it), rows from row0(it).
template <typename T, int BQ, int DP, int NTH> struct QStream : QBlocks<BQ> {
    const fg_k_attn &p;
    const Seq &sq;
    const float *dsum;
    T *Qs, *dOs;
    float *lse_s, *dsum_s;
    int b;

    __device__ __forceinline__ QStream(const fg_k_attn &p_, const Seq &sq_, int b_, int hk_, int j0, const float *dsum_, T *Qs_, T *dOs_, float *lse_, float *dsum_s_)
        : QBlocks<BQ>(p_, sq_, hk_, j0), p(p_), sq(sq_), dsum(dsum_), Qs(Qs_), dOs(dOs_), lse_s(lse_), dsum_s(dsum_s_),
          b(b_)
    {
        if (this->total > 0) issue(0, 0);
        cp_commit();
    }
    __device__ __forceinline__ void issue(int it, int buf) const
    {
        constexpr int ST = Tile<T, DP>::ST;
        const int h = this->head(it), i0 = this->row0(it);
        const int64_t l0 = sq.lse0(p, b, h);
        load_tile<T, BQ, DP, NTH>(Qs + buf * BQ * ST, rows_of<T>(p.q, p.q_s, b, h, sq.q0), p.q_s[2], i0, sq.lq, p.D,
                                  p.vec);
        load_tile<T, BQ, DP, NTH>(dOs + buf * BQ * ST, rows_of<T>(p.dout, p.do_s, b, h, sq.q0), p.do_s[2], i0, sq.lq,
                                  p.D, p.vec);
        for (int r = threadIdx.x; r < BQ; r += NTH) {
            const bool in = i0 + r < sq.lq;
            lse_s[buf * BQ + r] = in ? p.lse[l0 + i0 + r] * LOG2E : INFINITY;
            dsum_s[buf * BQ + r] = in ? dsum[l0 + i0 + r] : 0.f;
        }
    }
    // Prefetches step it + 1, waits for step it (block-wide) and returns its buffer.
    __device__ __forceinline__ int wait(int it) const
    {
        const int buf = it & 1;
        if (it + 1 < this->total) {
            issue(it + 1, buf ^ 1);
            cp_commit();
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        return buf;
    }
};

template <typename T, int DP> struct KvCfg {
    // f32, and head dims other than 64 / 128 (bf16/f16 D64 / D128 take
    // flash_bwd_dkdv2): 4 warps of 16 keys. 32 keys a warp (MT 2) was slower
    // for bf16 D64 on an H200 (255 registers, 8 warps an SM against 12).
    static constexpr int MT = 1; // 16-key tiles per warp
    static constexpr int NW = 4, NTH = 32 * NW;
    static constexpr int BK = 16 * MT * NW;                    // keys per block
    static constexpr int BQ = DP * sizeof(T) <= 512 ? 32 : 16; // query rows per step
    static constexpr int ST = Tile<T, DP>::ST;
    static constexpr int DSST = BQ + Tile<T, DP>::CH; // row stride of dS^T (BK, BQ)
    static constexpr int WR = BQ / 16;                // dQ: warps over rows x columns
    static constexpr int WC = NW / WR < DP / 16 ? NW / WR : DP / 16;
    static constexpr int NCOL = DP / WC; // dQ columns per warp (warps past WR WC sit the product out)
    // f32: Q and dO split into tf32 halves once a step, the lo halves beside
    // them (D256's would not fit)
    static constexpr bool PS = sizeof(T) == 4 && DP <= 128;
    static constexpr size_t SMEM =
        sizeof(T) * (ST * (2 * BK + 4 * BQ) + BK * DSST) + sizeof(float) * (4 * BQ + (PS ? 2 * BQ * ST : 0));
};

template <typename T, int DP, bool ATOMIC_DQ>
__global__ void __launch_bounds__(KvCfg<T, DP>::NTH) flash_bwd_dkdv(const fg_k_attn p, const float *dsum, float *dq_acc)
{
    using M = Mma<T>;
    using C = KvCfg<T, DP>;
    constexpr int MT = C::MT, BK = C::BK, BQ = C::BQ, ST = C::ST, DSST = C::DSST, NTH = C::NTH;
    constexpr bool PS = C::PS;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Ks = reinterpret_cast<T *>(smem_raw); // (BK, DP)
    T *Vs = Ks + BK * ST;                    // (BK, DP)
    T *Qs = Vs + BK * ST;                    // 2 x (BQ, DP)
    T *dOs = Qs + 2 * BQ * ST;               // 2 x (BQ, DP)
    T *dSs = dOs + 2 * BQ * ST;              // (BK, BQ): dS^T for the dQ product
    float *lse_s = reinterpret_cast<float *>(dSs + BK * DSST); // 2 x BQ, log2 domain
    float *dsum_s = lse_s + 2 * BQ;                            // 2 x BQ
    float *Qlo = dsum_s + 2 * BQ, *dOlo = Qlo + BQ * ST;       // PS: (BQ, DP) each

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int bhk = blockIdx.x, b = bhk / p.Hkv, hk = bhk % p.Hkv;
    const int j0 = (gridDim.y - 1 - blockIdx.y) * BK;
    const Seq sq(p, b);
    if (j0 >= sq.nk) return; // a shorter sequence of a varlen batch
    const T *kg = rows_of<T>(p.k, p.k_s, b, hk, sq.k0), *vg = rows_of<T>(p.v, p.v_s, b, hk, sq.k0);
    load_tile<T, BK, DP, NTH>(Ks, kg, p.k_s[2], j0, sq.lk, p.D, p.vec); // padded keys read as zeros
    load_tile<T, BK, DP, NTH>(Vs, vg, p.v_s[2], j0, sq.lk, p.D, p.vec);

    const QStream<T, BQ, DP, NTH> qs(p, sq, b, hk, j0, dsum, Qs, dOs, lse_s, dsum_s);

    const int wk = warp * 16 * MT; // the warp's first key in the block
    const float sl2 = p.scale * LOG2E;
    float dk[MT][DP / 8][4], dv[MT][DP / 8][4];
#pragma unroll
    for (int m = 0; m < MT; m++) {
        zero(dk[m]);
        zero(dv[m]);
    }

    for (int it = 0; it < qs.total; it++) {
        const int buf = qs.wait(it);
        const int h = qs.head(it), i0 = qs.row0(it), bh = b * p.Hq + h;
        T *Qb = Qs + buf * BQ * ST, *dOb = dOs + buf * BQ * ST;
        const float *lse_b = lse_s + buf * BQ, *dsum_b = dsum_s + buf * BQ;
        const Dropout drop(p, bh);
        // the B operands: with PS each element is split once here instead of once per warp and product
        if constexpr (PS) {
            split_tile<BQ, DP, NTH>(Qb, Qlo);
            split_tile<BQ, DP, NTH>(dOb, dOlo);
            __syncthreads();
        }
        const auto Qsrc = b_source<PS>(Qb, Qlo), dOsrc = b_source<PS>(dOb, dOlo);

        // S^T = K Q^T (16 MT keys x BQ queries per warp)
        float st[MT][BQ / 8][4], dp[MT][BQ / 8][4];
#pragma unroll
        for (int m = 0; m < MT; m++) {
            zero(st[m]);
            zero(dp[m]);
        }
        mma_ss<T, MT, DP / 16, BQ / 16>(st, Ks, ST, wk, Qsrc, ST);
        // P^T; a key is visible to query i when key < key_end(i)
        const bool edge = j0 + BK > sq.lk || (sq.causal && j0 + BK > sq.key_end(i0));
        float pd[MT][BQ / 8][4];
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int n = 0; n < BQ / 8; n++) {
                const int ka = j0 + wk + 16 * m + g;
                // z (0/1) rides in dp until dP is computed; 1 / (1 - p) is applied to dV at the end
                if (drop.on)
                    drop.quad(i0 + n * 8 + 2 * t, ka, ka + 8, dp[m][n]);
                else
                    dp[m][n][0] = dp[m][n][1] = dp[m][n][2] = dp[m][n][3] = 1.f;
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int qc = n * 8 + 2 * t + (e & 1), key = ka + (e < 2 ? 0 : 8);
                    const bool vis = !edge || key < sq.key_end(i0 + qc);
                    st[m][n][e] = vis ? ex2(st[m][n][e] * sl2 - lse_b[qc]) : 0.f;
                    pd[m][n][e] = st[m][n][e] * dp[m][n][e];
                }
            }
        // dV += (P z)^T dO
        mma_rs<T, MT, BQ / 16, DP / 16>(dv, pd, dOsrc, ST);
        // dP^T = V dO^T; dS^T = P^T (dP^T z - dsum), into pd
        float dpv[MT][BQ / 8][4];
#pragma unroll
        for (int m = 0; m < MT; m++) zero(dpv[m]);
        mma_ss<T, MT, DP / 16, BQ / 16>(dpv, Vs, ST, wk, dOsrc, ST);
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int n = 0; n < BQ / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    pd[m][n][e] =
                        st[m][n][e] * (dpv[m][n][e] * dp[m][n][e] * drop.scale - dsum_b[n * 8 + 2 * t + (e & 1)]);
        mma_rs<T, MT, BQ / 16, DP / 16>(dk, pd, Qsrc, ST); // dK += dS^T Q
        if constexpr (ATOMIC_DQ) {
            // dQ (BQ x DP) += dS K: dS^T through shared memory, then fp32 atomics
#pragma unroll
            for (int m = 0; m < MT; m++)
#pragma unroll
                for (int n = 0; n < BQ / 8; n++) st_cfrag(dSs, DSST, wk + 16 * m, n * 8, pd[m][n]);
            __syncthreads();
            const int wr = warp % C::WR, wc = warp / C::WR;
            if (wc < C::WC) {
                float dq[C::NCOL / 8][4];
                zero(dq);
#pragma unroll
                for (int kk = 0; kk < BK / 16; kk++) {
                    typename M::A a;
                    M::ldAt(a, dSs, DSST, wr * 16, kk * 16);
#pragma unroll
                    for (int nn = 0; nn < C::NCOL / 16; nn++) {
                        typename M::B b0, b1;
                        M::ldB2t(b0, b1, Ks, ST, wc * C::NCOL + nn * 16, kk * 16);
                        M::mma(dq[2 * nn], a, b0);
                        M::mma(dq[2 * nn + 1], a, b1);
                    }
                }
                const int qa = i0 + wr * 16 + g;
                float *dst = dq_acc + (sq.lse0(p, b, h) + qa) * p.D;
#pragma unroll
                for (int n = 0; n < C::NCOL / 8; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int d = wc * C::NCOL + n * 8 + 2 * t + (e & 1), row = e < 2 ? 0 : 8;
                        if (qa + row < sq.lq && d < p.D) atomicAdd(dst + row * p.D + d, dq[n][e]);
                    }
            }
        }
        __syncthreads(); // the next prefetch overwrites this buffer
    }
    cp_wait<0>();
    __syncthreads();

    // dK (times scale) and dV (times 1 / (1 - p)) staged through this warp's rows of Ks / Vs
    const float vs = p.drop_threshold ? p.drop_scale : 1.f;
#pragma unroll
    for (int m = 0; m < MT; m++) {
        store_acc16<T, DP>(dk[m], p.scale, p.scale, Ks + (wk + 16 * m) * ST, rows_of<T>(p.dk, p.dk_s, b, hk, sq.k0),
                           p.dk_s[2], j0 + wk + 16 * m, sq.nk, p.D, p.vec);
        store_acc16<T, DP>(dv[m], vs, vs, Vs + (wk + 16 * m) * ST, rows_of<T>(p.dv, p.dv_s, b, hk, sq.k0), p.dv_s[2],
                           j0 + wk + 16 * m, sq.nk, p.D, p.vec);
    }
}

// dK/dV for bf16/f16 D 64 and 128, FlashAttention-2's backward layout: a
// block of 8 warps owns 128 keys and steps over 64 query rows at a time. The
// score side splits the 128 x 64 tile 4 x 2 over the warps (32 keys x 32
// queries: each fragment read feeds two products) and leaves P^T z and dS^T in
// shared memory; the gradient side splits dK and dV 4 x 2 (32 keys x D / 2
// dims a warp), so the accumulators fit beside the score tiles.
// WK warps along the keys (32 keys each) times 2 along the queries / dims: WK 4
// is 8 warps and 128 keys, one block an SM; WK 2 (D64) is 4 warps and 64 keys,
// two blocks an SM: more, smaller blocks for short sequences.
template <typename T, int DP, int WK = 4> struct Kv2Cfg {
    static constexpr int NTH = 64 * WK, BK = 32 * WK, BQ = 64, DW = DP / 2;
    static constexpr int ST = Tile<T, DP>::ST;
    static constexpr int PST = BQ + Tile<T, DP>::CH; // row stride of P^T / dS^T (BK, BQ)
    static constexpr size_t SMEM = sizeof(T) * (ST * (2 * BK + 4 * BQ) + 2 * BK * PST) + sizeof(float) * 4 * BQ;
};

template <typename T, int DP, bool ATOMIC_DQ, int WK>
__global__ void __launch_bounds__(64 * WK) flash_bwd_dkdv2(const fg_k_attn p, const float *dsum, float *dq_acc)
{
    using M = Mma<T>;
    using C = Kv2Cfg<T, DP, WK>;
    constexpr int BK = C::BK, BQ = C::BQ, DW = C::DW, ST = C::ST, PST = C::PST, NTH = C::NTH;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Ks = reinterpret_cast<T *>(smem_raw); // (BK, DP)
    T *Vs = Ks + BK * ST;                    // (BK, DP)
    T *Qs = Vs + BK * ST;                    // 2 x (BQ, DP)
    T *dOs = Qs + 2 * BQ * ST;               // 2 x (BQ, DP)
    T *Ps = dOs + 2 * BQ * ST;               // (BK, BQ): P^T z
    T *dSs = Ps + BK * PST;                  // (BK, BQ): dS^T
    float *lse_s = reinterpret_cast<float *>(dSs + BK * PST); // 2 x BQ, log2 domain
    float *dsum_s = lse_s + 2 * BQ;                           // 2 x BQ

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int bhk = blockIdx.x, b = bhk / p.Hkv, hk = bhk % p.Hkv;
    const int j0 = (gridDim.y - 1 - blockIdx.y) * BK;
    const Seq sq(p, b);
    if (j0 >= sq.nk) return; // a shorter sequence of a varlen batch
    const T *kg = rows_of<T>(p.k, p.k_s, b, hk, sq.k0), *vg = rows_of<T>(p.v, p.v_s, b, hk, sq.k0);
    load_tile<T, BK, DP, NTH>(Ks, kg, p.k_s[2], j0, sq.lk, p.D, p.vec); // padded keys read as zeros
    load_tile<T, BK, DP, NTH>(Vs, vg, p.v_s[2], j0, sq.lk, p.D, p.vec);

    const QStream<T, BQ, DP, NTH> qs(p, sq, b, hk, j0, dsum, Qs, dOs, lse_s, dsum_s);

    const int wk = (warp % WK) * 32; // the warp's 32 keys (both sides)
    const int wq = (warp / WK) * 32; // its 32 queries on the score side
    const int wd = (warp / WK) * DW; // its dims on the gradient side
    const float sl2 = p.scale * LOG2E;
    float dk[2][DW / 8][4], dv[2][DW / 8][4];
#pragma unroll
    for (int m = 0; m < 2; m++) {
        zero(dk[m]);
        zero(dv[m]);
    }

    for (int it = 0; it < qs.total; it++) {
        const int buf = qs.wait(it);
        const int h = qs.head(it), i0 = qs.row0(it), bh = b * p.Hq + h;
        const T *Qb = Qs + buf * BQ * ST, *dOb = dOs + buf * BQ * ST;
        const float *lse_b = lse_s + buf * BQ, *dsum_b = dsum_s + buf * BQ;
        const Dropout drop(p, bh);

        // S^T = K Q^T and dP^T = V dO^T (32 keys x 32 queries a warp)
        float st[2][4][4], dp[2][4][4];
#pragma unroll
        for (int m = 0; m < 2; m++) {
            zero(st[m]);
            zero(dp[m]);
        }
        mma_ss<T, 2, DP / 16, 2>(st, Ks, ST, wk, Qb + wq * ST, ST);
        mma_ss<T, 2, DP / 16, 2>(dp, Vs, ST, wk, dOb + wq * ST, ST);
        // P^T z and dS^T = P^T (dP^T z / (1 - p) - dsum) into shared memory
        const bool edge = j0 + BK > sq.lk || (sq.causal && j0 + BK > sq.key_end(i0));
#pragma unroll
        for (int m = 0; m < 2; m++)
#pragma unroll
            for (int n = 0; n < 4; n++) {
                const int ka = j0 + wk + 16 * m + g;
                float z[4] = {1.f, 1.f, 1.f, 1.f};
                if (drop.on) drop.quad(i0 + wq + n * 8 + 2 * t, ka, ka + 8, z);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int qc = wq + n * 8 + 2 * t + (e & 1), key = ka + (e < 2 ? 0 : 8);
                    const bool vis = !edge || key < sq.key_end(i0 + qc);
                    const float pr = vis ? ex2(st[m][n][e] * sl2 - lse_b[qc]) : 0.f;
                    st[m][n][e] = pr * z[e];
                    dp[m][n][e] = pr * (dp[m][n][e] * z[e] * drop.scale - dsum_b[qc]);
                }
                st_cfrag(Ps, PST, wk + 16 * m, wq + n * 8, st[m][n]);
                st_cfrag(dSs, PST, wk + 16 * m, wq + n * 8, dp[m][n]);
            }
        __syncthreads();
        // dV += (P z)^T dO, dK += dS^T Q (32 keys x D / 2 a warp, k over the 64 queries)
        mma_ss_bt<T, 2, BQ / 16, DW / 16>(dv, Ps, PST, wk, dOb, ST, wd);
        mma_ss_bt<T, 2, BQ / 16, DW / 16>(dk, dSs, PST, wk, Qb, ST, wd);
        if constexpr (ATOMIC_DQ) {
            // dQ (BQ x DP) += dS K in fp32 atomics: 16 queries x D / 2 a warp a pass
#pragma unroll
            for (int qr = (warp % WK) * 16; qr < BQ; qr += WK * 16) {
                float dq[DW / 8][4];
                zero(dq);
#pragma unroll
                for (int kk = 0; kk < BK / 16; kk++) {
                    typename M::A a;
                    M::ldAt(a, dSs, PST, qr, kk * 16);
#pragma unroll
                    for (int nn = 0; nn < DW / 16; nn++) {
                        typename M::B b0, b1;
                        M::ldB2t(b0, b1, Ks, ST, wd + nn * 16, kk * 16);
                        M::mma(dq[2 * nn], a, b0);
                        M::mma(dq[2 * nn + 1], a, b1);
                    }
                }
                const int qa = i0 + qr + g;
                float *dst = dq_acc + (sq.lse0(p, b, h) + qa) * p.D;
#pragma unroll
                for (int n = 0; n < DW / 8; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int d = wd + n * 8 + 2 * t + (e & 1), row = e < 2 ? 0 : 8;
                        if (qa + row < sq.lq && d < p.D) atomicAdd(dst + row * p.D + d, dq[n][e]);
                    }
            }
        }
        __syncthreads(); // the next step overwrites P^T, dS^T and this buffer
    }
    cp_wait<0>();

    // dK (times scale) and dV (times 1 / (1 - p)) straight from the fragments
    const float vs = p.drop_threshold ? p.drop_scale : 1.f;
    T *dkg = rows_of<T>(p.dk, p.dk_s, b, hk, sq.k0), *dvg = rows_of<T>(p.dv, p.dv_s, b, hk, sq.k0);
#pragma unroll
    for (int m = 0; m < 2; m++) {
        store_frag<T, DW / 8>(dk[m], p.scale, dkg, p.dk_s[2], j0 + wk + 16 * m, wd, sq.nk, p.D);
        store_frag<T, DW / 8>(dv[m], vs, dvg, p.dv_s[2], j0 + wk + 16 * m, wd, sq.nk, p.D);
    }
}

template <typename T, int DP> struct QCfg {
    static constexpr int BR = 64; // query rows per block
    static constexpr int BC = DP * sizeof(T) <= 256 ? 64 : DP * sizeof(T) <= 512 ? 32 : 16;
    static constexpr int ST = Tile<T, DP>::ST;
    static constexpr size_t SMEM = sizeof(T) * ST * (2 * BR + 4 * BC); // Q, dO, 2 x K, 2 x V
};

template <typename T, int DP> __global__ void __launch_bounds__(NT) flash_bwd_dq(const fg_k_attn p, const float *dsum)
{
    using C = QCfg<T, DP>;
    constexpr int BR = C::BR, BC = C::BC, ST = C::ST;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = reinterpret_cast<T *>(smem_raw); // (BR, DP)
    T *dOs = Qs + BR * ST;                   // (BR, DP)
    T *Ks = dOs + BR * ST;                   // 2 x (BC, DP)
    T *Vs = Ks + 2 * BC * ST;                // 2 x (BC, DP)

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int bh = blockIdx.x, b = bh / p.Hq, h = bh % p.Hq, hk = h / (p.Hq / p.Hkv);
    const int i0 = (gridDim.y - 1 - blockIdx.y) * BR;
    const Seq sq(p, b);
    if (i0 >= sq.lq) return;
    const T *kg = rows_of<T>(p.k, p.k_s, b, hk, sq.k0), *vg = rows_of<T>(p.v, p.v_s, b, hk, sq.k0);
    const int jend = max(0, sq.key_end(min(i0 + BR, sq.lq) - 1));
    const int nkb = (jend + BC - 1) / BC;
    load_tile<T, BR, DP>(Qs, rows_of<T>(p.q, p.q_s, b, h, sq.q0), p.q_s[2], i0, sq.lq, p.D, p.vec);
    load_tile<T, BR, DP>(dOs, rows_of<T>(p.dout, p.do_s, b, h, sq.q0), p.do_s[2], i0, sq.lq, p.D, p.vec);
    if (nkb > 0) {
        load_tile<T, BC, DP>(Ks, kg, p.k_s[2], 0, sq.lk, p.D, p.vec);
        load_tile<T, BC, DP>(Vs, vg, p.v_s[2], 0, sq.lk, p.D, p.vec);
    }
    cp_commit();

    const int ra = i0 + warp * 16 + g, rb = ra + 8;
    const int ea = sq.key_end(ra), eb = sq.key_end(rb), ew = sq.key_end(i0 + warp * 16);
    const int64_t rowa = sq.lse0(p, b, h) + ra;
    const float sl2 = p.scale * LOG2E;
    const float lse2[2] = {ra < sq.lq ? p.lse[rowa] * LOG2E : INFINITY, rb < sq.lq ? p.lse[rowa + 8] * LOG2E : INFINITY};
    const float ds[2] = {ra < sq.lq ? dsum[rowa] : 0.f, rb < sq.lq ? dsum[rowa + 8] : 0.f};
    const Dropout drop(p, bh);
    float dq[DP / 8][4];
    zero(dq);

    for (int jb = 0; jb < nkb; jb++) {
        const int buf = kv_step<T, BC, DP>(Ks, Vs, kg, vg, p, sq.lk, jb, nkb), j0 = jb * BC;
        const T *Kb = Ks + buf * BC * ST, *Vb = Vs + buf * BC * ST;
        float s[BC / 8][4], dp[BC / 8][4];
        zero(s);
        zero(dp);
        mma_ss<T, DP / 16, BC / 16>(s, Qs, ST, warp * 16, Kb, ST);   // S = Q K^T
        mma_ss<T, DP / 16, BC / 16>(dp, dOs, ST, warp * 16, Vb, ST); // dP = dO V^T
        // dS = P (dP z - dsum), P = exp2(S scale log2e - LSE log2e)
        const bool edge = j0 + BC > min(ew, sq.lk);
#pragma unroll
        for (int n = 0; n < BC / 8; n++) {
            const int col = j0 + n * 8 + 2 * t;
            float2 za = make_float2(1.f, 1.f), zb = za;
            if (drop.on) drop.pair2(ra, rb, col, za, zb);
            const float z[4] = {za.x * drop.scale, za.y * drop.scale, zb.x * drop.scale, zb.y * drop.scale};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1;
                const bool vis = !edge || col + (e & 1) < (r ? eb : ea);
                const float pr = vis ? ex2(s[n][e] * sl2 - lse2[r]) : 0.f;
                s[n][e] = pr * (dp[n][e] * z[e] - ds[r]);
            }
        }
        mma_rs<T, BC / 16, DP / 16>(dq, s, Kb, ST); // dQ += dS K
        __syncthreads();
    }
    cp_wait<0>();    // no key block leaves the Q copy in flight,
    __syncthreads(); // and other threads' rows of it land where dQ is staged
    store_acc16<T, DP>(dq, p.scale, p.scale, Qs + warp * 16 * ST, // this warp's rows only
                       rows_of<T>(p.dq, p.dq_s, b, h, sq.q0), p.dq_s[2], i0 + warp * 16, sq.lq, p.D, p.vec);
}

// dK/dV (and the atomic dQ): the split kernel for bf16/f16 D 64 and 128, else flash_bwd_dkdv.
template <typename T, int DP> constexpr bool use_split() { return sizeof(T) == 2 && (DP == 64 || DP == 128); }

// One dK/dV kernel with its config KC: a block per (batch, KV head) x KC::BK keys.
template <typename KC, auto KERNEL>
cudaError_t launch_kv(const fg_k_attn &p, float *dsum, float *dq_acc, cudaStream_t st)
{
    static const cudaError_t a = allow_smem(KERNEL, KC::SMEM);
    if (a != cudaSuccess) return a;
    const dim3 grid(static_cast<unsigned>(p.B * p.Hkv), static_cast<unsigned>((p.Lk + KC::BK - 1) / KC::BK));
    KERNEL<<<grid, KC::NTH, KC::SMEM, st>>>(p, dsum, dq_acc);
    return cudaGetLastError();
}

template <typename T, int DP, bool ATOMIC>
cudaError_t launch_dkdv(const fg_k_attn &p, float *dsum, float *dq_acc, cudaStream_t st)
{
    if constexpr (use_split<T, DP>() && DP == 64 && !ATOMIC) // 4-warp blocks, three an SM (167 registers)
        return launch_kv<Kv2Cfg<T, DP, 2>, flash_bwd_dkdv2<T, DP, ATOMIC, 2>>(p, dsum, dq_acc, st);
    else if constexpr (use_split<T, DP>())
        return launch_kv<Kv2Cfg<T, DP, 4>, flash_bwd_dkdv2<T, DP, ATOMIC, 4>>(p, dsum, dq_acc, st);
    else
        return launch_kv<KvCfg<T, DP>, flash_bwd_dkdv<T, DP, ATOMIC>>(p, dsum, dq_acc, st);
}

template <typename T, int DP> cudaError_t launch_dq(const fg_k_attn &p, float *dsum, cudaStream_t st)
{
    using QC = QCfg<T, DP>;
    static const cudaError_t a = allow_smem(flash_bwd_dq<T, DP>, QC::SMEM);
    if (a != cudaSuccess) return a;
    const dim3 qgrid(static_cast<unsigned>(p.B * p.Hq), static_cast<unsigned>((p.Lq + QC::BR - 1) / QC::BR));
    flash_bwd_dq<T, DP><<<qgrid, NT, QC::SMEM, st>>>(p, dsum);
    return cudaGetLastError();
}

template <typename T, int DP>
cudaError_t launch_bwd(const fg_k_attn &p, int dtype, bool det, float *dsum, float *dq_acc, cudaStream_t st)
{
    const dim3 rgrid(static_cast<unsigned>(p.B * p.Hq), static_cast<unsigned>((p.Lq + ROWS - 1) / ROWS));
    flash_bwd_pre<T><<<rgrid, NT, 0, st>>>(p, dsum);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    // Hopper: the wgmma dK/dV kernels (bf16/f16 D64/D128; f32 D64 on tf32),
    // which also reduce dQ into the accumulator unless deterministic (then
    // flash_bwd_dq runs); the bf16/f16 one swizzles its rows (dq_acc_index).
    constexpr bool WG16 = use_split<T, DP>(), WG32 = sizeof(T) == 4 && DP == 64;
    if constexpr (WG16 || WG32) {
        float *acc = det ? nullptr : dq_acc;
        cudaError_t we = cudaSuccess;
        if (WG16 ? fg_k_flash_bwd_wg(p, dtype, dsum, acc, st, &we) : fg_k_flash_bwd_tf32(p, dsum, acc, st, &we)) {
            if (we != cudaSuccess) return we;
            if (det) return launch_dq<T, DP>(p, dsum, st);
            flash_bwd_dq_convert<T, WG16><<<rgrid, NT, 0, st>>>(p, dq_acc);
            return cudaGetLastError();
        }
    }
    // bf16/f16 D64 always takes dq in its own pass: with the small dK/dV blocks
    // that beats the atomic dq on an H200 at every length measured (1k-8k:
    // 95-138 against 76-117 TFLOP/s, bench/results)
    if (det || (use_split<T, DP>() && DP == 64)) {
        if ((e = launch_dkdv<T, DP, false>(p, dsum, nullptr, st)) != cudaSuccess) return e;
        return launch_dq<T, DP>(p, dsum, st);
    }
    if ((e = cudaMemsetAsync(dq_acc, 0, sizeof(float) * static_cast<size_t>(p.lse_n) * p.D, st)) != cudaSuccess)
        return e;
    if ((e = launch_dkdv<T, DP, true>(p, dsum, dq_acc, st)) != cudaSuccess) return e;
    flash_bwd_dq_convert<T, false><<<rgrid, NT, 0, st>>>(p, dq_acc);
    return cudaGetLastError();
}

template <typename T>
cudaError_t bwd_dispatch(const fg_k_attn &p, int dtype, bool det, float *dsum, float *dq_acc, cudaStream_t st)
{
    switch (padded_dim(p.D)) {
    case 32: return launch_bwd<T, 32>(p, dtype, det, dsum, dq_acc, st);
    case 64: return launch_bwd<T, 64>(p, dtype, det, dsum, dq_acc, st);
    case 128: return launch_bwd<T, 128>(p, dtype, det, dsum, dq_acc, st);
    default: return launch_bwd<T, 256>(p, dtype, det, dsum, dq_acc, st);
    }
}

size_t dsum_bytes(const fg_k_attn &p)
{
    const size_t n = sizeof(float) * static_cast<size_t>(p.lse_n);
    return (n + 255) / 256 * 256;
}
} // namespace

extern "C" size_t fg_k_flash_bwd_scratch(const fg_k_attn *p0, int deterministic)
{
    fg_k_attn p;
    if (!normalize(p0, &p)) return 0;
    return dsum_bytes(p) + (deterministic ? 0 : sizeof(float) * static_cast<size_t>(p.lse_n) * p.D);
}

extern "C" int fg_k_flash_bwd(const fg_k_attn *p0, int dtype, int deterministic, void *scratch, size_t scratch_bytes,
                              void *stream)
{
    fg_k_attn p;
    if (!normalize(p0, &p) || scratch_bytes < fg_k_flash_bwd_scratch(&p, deterministic))
        return static_cast<int>(cudaErrorInvalidValue);
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    // Nothing to launch when no key exists: the caller zero-fills dq, dk and dv.
    if (p.B == 0 || p.Hq == 0 || p.Lk == 0 || p.Lq == 0) return 0;
    float *dsum = static_cast<float *>(scratch);
    float *dq_acc = reinterpret_cast<float *>(static_cast<char *>(scratch) + dsum_bytes(p));
    const bool det = deterministic != 0;
    switch (dtype) {
    case DT_F32: return static_cast<int>(bwd_dispatch<float>(p, dtype, det, dsum, dq_acc, st));
    case DT_BF16: return static_cast<int>(bwd_dispatch<bf16>(p, dtype, det, dsum, dq_acc, st));
    case DT_F16: return static_cast<int>(bwd_dispatch<f16>(p, dtype, det, dsum, dq_acc, st));
    default: return static_cast<int>(cudaErrorInvalidValue);
    }
}
