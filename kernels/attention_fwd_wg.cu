// Flash-attention forward on Hopper's warpgroup tensor cores (wgmma, sm_90a),
// bf16 / f16 with head dim 64 or 128. A block owns BR = 64 NWG query rows:
// NWG consumer warpgroups (64 rows each) and a producer warpgroup, which
// hands most of its registers to the consumers (setmaxnreg) and streams Q and
// the key/value blocks (BC keys) into an NS-stage ring of shared memory with
// cp.async. Each stage has two mbarriers (full: its copies have landed;
// empty: every consumer warp is done with it), so the warpgroups run at their
// own pace rather than in lockstep and one's softmax overlaps another's
// products. S = Q K^T takes Q and K from shared memory, O += P V takes P from
// registers and V from shared memory (read MN-major: V needs no transpose).
// Tiles are 128-byte swizzled (k_wgmma.cuh). Same masking, online softmax,
// dropout and outputs as flash_fwd (attention_fwd.cu).
#include "k_wgmma.cuh"

#include <cstdlib>

namespace {
using namespace fgk;
using namespace fgk::flash;

template <typename T, int DP, int NWG, int BC, int NS> struct WgFwdCfg {
    static constexpr int NTH = 128 * (NWG + 1), BR = 64 * NWG;
    // registers a thread after setmaxnreg: a warp scheduler holds one producer
    // warp and NWG consumer warps in its 512 registers a lane (56: the
    // producer's copy loop spills with fewer)
    static constexpr int PREG = 56, CREG = (512 - PREG) / NWG / 8 * 8 > 240 ? 240 : (512 - PREG) / NWG / 8 * 8;
    static constexpr size_t TILES = sizeof(T) * DP * (BR + 2 * NS * BC); // Q, NS x (K, V)
    // + the barriers; + 1024 to align the swizzle atoms
    static constexpr size_t SMEM = TILES + sizeof(uint64_t) * (2 * NS + 1) + 1024;
    static_assert(PREG >= 24 && CREG <= 256 && PREG % 8 == 0, "setmaxnreg takes 24..256 in steps of 8");
    static_assert(SMEM <= 227 * 1024, "shared memory of one block");
};

template <typename T, int DP, int NWG, int BC, int NS>
__global__ void __launch_bounds__(WgFwdCfg<T, DP, NWG, BC, NS>::NTH, 1) flash_fwd_wg(const fg_k_attn p)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using C = WgFwdCfg<T, DP, NWG, BC, NS>;
    constexpr int BR = C::BR;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = wg::align1024<T>(smem_raw); // (BR, DP) swizzled
    T *Ks = Qs + BR * DP;               // NS x (BC, DP)
    T *Vs = Ks + NS * BC * DP;          // NS x (BC, DP)
    uint64_t *full = reinterpret_cast<uint64_t *>(Vs + NS * BC * DP), *empty = full + NS, *qbar = empty + NS;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int bh = blockIdx.x, b = bh / p.Hq, h = bh % p.Hq, hk = h / (p.Hq / p.Hkv);
    const int i0 = (gridDim.y - 1 - blockIdx.y) * BR; // the longest causal rows first
    const Seq sq(p, b);
    if (i0 >= sq.lq) return;
    const int jend = max(0, sq.key_end(min(i0 + BR, sq.lq) - 1));
    const int nkb = (jend + BC - 1) / BC;
    if (threadIdx.x == 0) {
        for (int i = 0; i < NS; i++) {
            wg::bar_init(full + i, 128);
            wg::bar_init(empty + i, 4 * NWG);
        }
        wg::bar_init(qbar, 128);
    }
    __syncthreads();

    if (warp >= 4 * NWG) { // producer
        wg::setmaxnreg_dec<C::PREG>();
        const int pt = threadIdx.x - 128 * NWG; // 0..127
        const T *kg = rows_of<T>(p.k, p.k_s, b, hk, sq.k0), *vg = rows_of<T>(p.v, p.v_s, b, hk, sq.k0);
        wg::load_sw<T, BR, DP, 128>(Qs, rows_of<T>(p.q, p.q_s, b, h, sq.q0), p.q_s[2], i0, sq.lq, pt);
        wg::fence_proxy();
        wg::bar_arrive_cp(qbar);
        for (int jb = 0; jb < nkb; jb++) {
            const int st = jb % NS, use = jb / NS;
            if (use > 0) wg::bar_wait(empty + st, (use - 1) & 1);
            wg::load_sw<T, BC, DP, 128>(Ks + st * BC * DP, kg, p.k_s[2], jb * BC, sq.lk, pt);
            wg::load_sw<T, BC, DP, 128>(Vs + st * BC * DP, vg, p.v_s[2], jb * BC, sq.lk, pt);
            wg::fence_proxy();
            wg::bar_arrive_cp(full + st);
        }
        cp_wait<0>();
    } else { // consumers
        wg::setmaxnreg_inc<C::CREG>();
        const int wgr = (warp >> 2) * 64;          // the warpgroup's first row in the block
        const int w0 = i0 + wgr + (warp & 3) * 16; // the warp's first row
        const int row[2] = {w0 + g, w0 + g + 8}, end[2] = {sq.key_end(row[0]), sq.key_end(row[1])};
        const int ew = sq.key_end(w0);
        const float sl2 = p.scale * LOG2E;
        const Dropout drop(p, bh);
        float m_[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
        float acc[DP / 8][4];
        zero(acc);
        uint32_t pa[BC / 16][4]; // P as the A operand of P V
        wg::bar_wait(qbar, 0);
        wg::fence_proxy(); // the copies landed through the generic proxy, wgmma reads through the async one

        auto issue_s = [&](float (&s)[BC / 8][4], int st) {
            const T *Kb = Ks + st * BC * DP;
#pragma unroll
            for (int kk = 0; kk < DP / 16; kk++)
                wg::mma_ss<T, BC, 0, 0>(s, wg::desc_k<BR>(Qs, wgr, kk), wg::desc_k<BC>(Kb, 0, kk), kk > 0);
        };
        auto issue_pv = [&](int st) {
            const T *Vb = Vs + st * BC * DP;
#pragma unroll
            for (int kk = 0; kk < BC / 16; kk++) wg::mma_rs<T, DP, 1>(acc, pa[kk], wg::desc_mn<BC>(Vb, kk), 1);
        };

        for (int jb = 0; jb < nkb; jb++) {
            const int st = jb % NS;
            wg::bar_wait(full + st, (jb / NS) & 1);
            wg::fence_proxy();
            float s[BC / 8][4], alpha[2];
            zero(s);
            wg::pin(s);
            wg::fence();
            issue_s(s, st);
            wg::commit();
            wg::wait<0>();
            wg::pin(s);
            softmax_step(s, m_, l, alpha, jb * BC, jb * BC + BC > min(ew, sq.lk), end, sl2);
            drop_out(s, drop, row[0], row[1], jb * BC);
            rescale(acc, alpha);
#pragma unroll
            for (int kk = 0; kk < BC / 16; kk++) {
                const typename Mma<T>::A a = Mma<T>::from_c(s[2 * kk], s[2 * kk + 1]);
#pragma unroll
                for (int e = 0; e < 4; e++) pa[kk][e] = a.x[e];
            }
            wg::pin(acc);
            wg::fence();
            issue_pv(st);
            wg::commit();
            wg::wait<0>();
            wg::pin(acc);
            wg::warp_release(empty + st);
        }
        float *lse = p.lse + sq.lse0(p, b, h);
        float inv[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            l[r] = quad_sum(l[r]);
            inv[r] = l[r] > 0.f ? drop.scale / l[r] : 0.f;
            if (t == 0 && row[r] < sq.lq) lse[row[r]] = l[r] > 0.f ? (m_[r] + __log2f(l[r])) * LN2 : INFINITY;
        }
        // O through the warp's own rows of Q (its warpgroup's products are done)
        wg::store_acc_sw<T, DP, BR>(acc, inv[0], inv[1], Qs, w0 - i0, rows_of<T>(p.o, p.o_s, b, h, sq.q0), p.o_s[2], w0,
                                    sq.lq);
    }
#else
    (void)p; // built for another target: never launched (fg_wgmma_usable)
#endif
}

template <typename T, int DP, int NWG, int BC, int NS> cudaError_t launch(const fg_k_attn &p, cudaStream_t st)
{
    using C = WgFwdCfg<T, DP, NWG, BC, NS>;
    static const cudaError_t attr = allow_smem(flash_fwd_wg<T, DP, NWG, BC, NS>, C::SMEM);
    if (attr != cudaSuccess) return attr;
    const dim3 grid(static_cast<unsigned>(p.B * p.Hq), static_cast<unsigned>((p.Lq + C::BR - 1) / C::BR));
    flash_fwd_wg<T, DP, NWG, BC, NS><<<grid, C::NTH, C::SMEM, st>>>(p);
    return cudaGetLastError();
}

// 3 consumer warpgroups (192 rows), 3 stages; 64-key blocks for D128, 128 for
// D64. On an H200 at L 4096 (bf16, B L 16k, H D 2048, non-causal): 391 TFLOP/s
// for D128 and 318 for D64. Measured slower: two warpgroups (D128: 311), 64-key
// blocks (D64: 305), and issuing S_j+1 before P_j V_j in a warpgroup (FA3's
// overlap; D128: 381), as three warpgroups already overlap one another.
template <typename T> cudaError_t dispatch(const fg_k_attn &p, cudaStream_t st)
{
    return p.D == 64 ? launch<T, 64, 3, 128, 3>(p, st) : launch<T, 128, 3, 64, 3>(p, st);
}
} // namespace

bool fg_wgmma_usable()
{
#ifdef FG_WGMMA
    static const bool off = [] {
        const char *e = getenv("FG_ATTN_NO_WGMMA");
        return e && *e && *e != '0';
    }();
    int dev = 0, major = 0, minor = 0;
    if (off || cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
        return false;
    return major == 9 && minor == 0;
#else
    return false;
#endif
}

bool fg_k_flash_fwd_wg(const fg_k_attn &p, int dtype, cudaStream_t st, cudaError_t *err)
{
    if ((dtype != DT_BF16 && dtype != DT_F16) || (p.D != 64 && p.D != 128) || !p.vec || !fg_wgmma_usable())
        return false;
    *err = dtype == DT_BF16 ? dispatch<bf16>(p, st) : dispatch<f16>(p, st);
    return true;
}
