// Flash-attention forward on tensor cores (FlashAttention-2's schedule with
// mma.sync): a block of 4 warps owns 128 query rows (32 per warp, so each K / V
// fragment read from shared memory feeds two products; 64 rows for D > 128;
// Q in shared memory), streams key/value blocks through double-buffered shared memory
// (cp.async), keeps the scores, the online-softmax statistics (max m, sum l,
// in the log2 domain) and the output accumulator in registers, and writes O
// and LSE = (m + log2 l) ln 2 (+inf for a row that sees no key) at the end.
// src/cpu/attention.c is the same algorithm in plain C. On Hopper, bf16 / f16
// with D 64 or 128 take the wgmma kernel of attention_fwd_wg.cu instead.
#include "k_wgmma.cuh"

namespace {
using namespace fgk;
using namespace fgk::flash;

template <typename T, int DP> struct FwdCfg {
    static constexpr int MT = DP <= 128 ? 2 : 1;                    // 16-row tiles per warp
    static constexpr int BR = 64 * MT;                              // query rows per block
    static constexpr int BC = DP * sizeof(T) <= 256 ? 64 : 32;      // keys per block
    static constexpr int ST = Tile<T, DP>::ST;
    static constexpr size_t SMEM = sizeof(T) * ST * (BR + 4 * BC); // Q, 2 x K, 2 x V
};

template <typename T, int DP> __global__ void __launch_bounds__(NT) flash_fwd(const fg_k_attn p)
{
    using C = FwdCfg<T, DP>;
    constexpr int MT = C::MT, BR = C::BR, BC = C::BC, ST = C::ST;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = reinterpret_cast<T *>(smem_raw); // (BR, DP)
    T *Ks = Qs + BR * ST;                    // 2 x (BC, DP)
    T *Vs = Ks + 2 * BC * ST;                // 2 x (BC, DP)

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int bh = blockIdx.x, b = bh / p.Hq, h = bh % p.Hq, hk = h / (p.Hq / p.Hkv);
    const int i0 = (gridDim.y - 1 - blockIdx.y) * BR; // the longest causal rows first
    const Seq sq(p, b);
    if (i0 >= sq.lq) return; // a shorter sequence of a varlen batch
    const T *qg = rows_of<T>(p.q, p.q_s, b, h, sq.q0);
    const T *kg = rows_of<T>(p.k, p.k_s, b, hk, sq.k0);
    const T *vg = rows_of<T>(p.v, p.v_s, b, hk, sq.k0);

    const int jend = max(0, sq.key_end(min(i0 + BR, sq.lq) - 1)); // what the block's last row sees
    const int nkb = (jend + BC - 1) / BC;
    load_tile<T, BR, DP>(Qs, qg, p.q_s[2], i0, sq.lq, p.D, p.vec);
    if (nkb > 0) {
        load_tile<T, BC, DP>(Ks, kg, p.k_s[2], 0, sq.lk, p.D, p.vec);
        load_tile<T, BC, DP>(Vs, vg, p.v_s[2], 0, sq.lk, p.D, p.vec);
    }
    cp_commit();

    const int w0 = i0 + warp * 16 * MT; // the warp's first row
    int row[MT][2], end[MT][2];         // this thread's rows (g and g + 8 of each tile) and their key bounds
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            row[m][r] = w0 + 16 * m + 8 * r + g;
            end[m][r] = sq.key_end(row[m][r]);
        }
    const int ew = sq.key_end(w0); // the warp's smallest bound
    const float sl2 = p.scale * LOG2E;
    const Dropout drop(p, bh);
    float m_[MT][2], l[MT][2];
    float acc[MT][DP / 8][4];
#pragma unroll
    for (int m = 0; m < MT; m++) {
        m_[m][0] = m_[m][1] = -INFINITY;
        l[m][0] = l[m][1] = 0.f;
        zero(acc[m]);
    }

    for (int jb = 0; jb < nkb; jb++) {
        const int buf = kv_step<T, BC, DP>(Ks, Vs, kg, vg, p, sq.lk, jb, nkb), j0 = jb * BC;
        const T *Kb = Ks + buf * BC * ST, *Vb = Vs + buf * BC * ST;

        // S = Q K^T (16 MT x BC per warp)
        float s[MT][BC / 8][4];
#pragma unroll
        for (int m = 0; m < MT; m++) zero(s[m]);
        mma_ss<T, MT, DP / 16, BC / 16>(s, Qs, ST, w0 - i0, Kb, ST);
        // mask keys past lk or the causal bound; online softmax
        const bool edge = j0 + BC > min(ew, sq.lk);
#pragma unroll
        for (int m = 0; m < MT; m++) {
            float alpha[2];
            softmax_step(s[m], m_[m], l[m], alpha, j0, edge, end[m], sl2);
            rescale(acc[m], alpha);
            drop_out(s[m], drop, row[m][0], row[m][1], j0);
        }
        mma_rs<T, MT, BC / 16, DP / 16>(acc, s, Vb, ST); // O += P V
        __syncthreads(); // the next prefetch overwrites this buffer
    }
    cp_wait<0>(); // nkb == 0 leaves the Q copy in flight,
    __syncthreads(); // and other threads' rows of it land where the epilogue stages O

    float *lse = p.lse + sq.lse0(p, b, h);
#pragma unroll
    for (int m = 0; m < MT; m++) {
        float inv[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            l[m][r] = quad_sum(l[m][r]);
            inv[r] = l[m][r] > 0.f ? drop.scale / l[m][r] : 0.f;
            if (t == 0 && row[m][r] < sq.lq)
                lse[row[m][r]] = l[m][r] > 0.f ? (m_[m][r] + __log2f(l[m][r])) * LN2 : INFINITY;
        }
        // O through this warp's own rows of Qs, then 16-byte stores
        store_acc16<T, DP>(acc[m], inv[0], inv[1], Qs + (w0 - i0 + 16 * m) * ST, rows_of<T>(p.o, p.o_s, b, h, sq.q0),
                           p.o_s[2], w0 + 16 * m, sq.lq, p.D, p.vec);
    }
}

template <typename T, int DP> cudaError_t launch_fwd(const fg_k_attn &p, cudaStream_t st)
{
    using C = FwdCfg<T, DP>;
    static const cudaError_t attr = allow_smem(flash_fwd<T, DP>, C::SMEM);
    if (attr != cudaSuccess) return attr;
    const dim3 grid(static_cast<unsigned>(p.B * p.Hq), static_cast<unsigned>((p.Lq + C::BR - 1) / C::BR));
    flash_fwd<T, DP><<<grid, NT, C::SMEM, st>>>(p);
    return cudaGetLastError();
}

template <typename T> cudaError_t fwd_dispatch(const fg_k_attn &p, cudaStream_t st)
{
    switch (padded_dim(p.D)) {
    case 32: return launch_fwd<T, 32>(p, st);
    case 64: return launch_fwd<T, 64>(p, st);
    case 128: return launch_fwd<T, 128>(p, st);
    default: return launch_fwd<T, 256>(p, st);
    }
}
} // namespace

extern "C" int fg_k_flash_fwd(const fg_k_attn *p0, int dtype, void *stream)
{
    fg_k_attn p;
    if (!normalize(p0, &p)) return static_cast<int>(cudaErrorInvalidValue);
    if (p.B == 0 || p.Hq == 0 || p.Lq == 0) return 0;
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    cudaError_t err;
    if (fg_k_flash_fwd_wg(p, dtype, st, &err)) return static_cast<int>(err);
    switch (dtype) {
    case DT_F32: return static_cast<int>(fwd_dispatch<float>(p, st));
    case DT_BF16: return static_cast<int>(fwd_dispatch<bf16>(p, st));
    case DT_F16: return static_cast<int>(fwd_dispatch<f16>(p, st));
    default: return static_cast<int>(cudaErrorInvalidValue);
    }
}
