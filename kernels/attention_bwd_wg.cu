// Flash-attention dK/dV (and atomic-free dQ accumulation) on Hopper's
// warpgroup tensor cores (wgmma, sm_90a), bf16 / f16 with head dim 64 or 128.
//
// A block owns BK = 64 NWG keys of one KV head: NWG consumer warpgroups of 64
// keys each, with K and V in shared memory, and a producer warpgroup that
// hands most of its registers to them (setmaxnreg) and streams the query side
// (Q, dO: BQ rows; LSE in the log2 domain, dsum) of every query block of every
// head of the GQA group into an NS-stage ring (full / empty mbarriers, as the
// forward). Per query block a consumer warpgroup computes
//   S^T  = K Q^T,  dP^T = V dO^T                  (A and B from shared memory)
//   P^T  = exp2(S^T scale log2e - LSE),  dS^T = P^T (dP^T z / (1 - p) - dsum)
//   dV  += (P^T z) dO,  dK += dS^T Q               (A from registers, dO / Q MN-major)
// and, unless dq_acc is null, the block's dQ tile (BQ x D) = dS K: every
// warpgroup writes its dS^T rows to shared memory, then each computes a
// 64 x DQN piece (dS read MN-major, K MN-major) into an fp32 staging tile
// (two, alternating), which one thread adds to the fp32 accumulator with the
// copy engine's bulk reduction (cp.reduce.async.bulk): no per-element
// atomics, and the next query block overlaps the reduction. Blocks with
// neither a mask nor dropout (most of them) take a short element-wise path:
// its instructions, not the products, bounded the first version. Same masking (causal bottom-right,
// key padding, varlen), dropout mask (Dropout::quad) and results as
// flash_bwd_dkdv2 in attention_bwd.cu.
#include "k_wgmma.cuh"

namespace {
using namespace fgk;
using namespace fgk::flash;

template <typename T, int DP, int NWG, int BQ, int NS> struct WgBwdCfg {
    static constexpr int DQB = 2; // dQ staging tiles: one can be read by the reduction while the next fills
    static constexpr int NTH = 128 * (NWG + 1), BK = 64 * NWG;
    // dQ (BQ x DP): QR row groups of 64 times CG column groups of DQN, one a warpgroup
    static constexpr int QR = BQ / 64, CG = NWG / QR, DQN = DP / CG;
    static_assert(BQ % 64 == 0 && NWG % QR == 0 && DQN % 32 == 0 && DQN <= 128 && DQN != 96, "dQ split over the warpgroups");
    // registers after setmaxnreg (the producer's copy loop spills with fewer than 40)
    static constexpr int PREG = 40, CREG = (512 - PREG) / NWG / 8 * 8 > 240 ? 240 : (512 - PREG) / NWG / 8 * 8;
    static_assert(PREG >= 24 && CREG <= 256 && PREG % 8 == 0, "setmaxnreg takes 24..256 in steps of 8");
    // K, V; NS x (Q, dO); dS^T (BK, BQ); then fp32: dQ staging (BQ, DP), NS x (lse, dsum)
    static constexpr size_t TILES = sizeof(T) * (2 * BK * DP + 2 * NS * BQ * DP + BK * BQ);
    static constexpr size_t FLOATS = sizeof(float) * (DQB * BQ * DP + 2 * NS * BQ);
    static constexpr size_t SMEM = TILES + FLOATS + sizeof(uint64_t) * (2 * NS + 1) + 1024;
    static_assert(SMEM <= 227 * 1024, "shared memory of one block");
};

template <typename T, int DP, int NWG, int BQ, int NS>
__global__ void __launch_bounds__(WgBwdCfg<T, DP, NWG, BQ, NS>::NTH, 1)
    flash_bwd_wg(const fg_k_attn p, const float *dsum, float *dq_acc)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using C = WgBwdCfg<T, DP, NWG, BQ, NS>;
    constexpr int DQB = C::DQB, BK = C::BK, NC = 128 * NWG; // NC consumer threads
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Ks = wg::align1024<T>(smem_raw);                     // (BK, DP) swizzled
    T *Vs = Ks + BK * DP;                                   // (BK, DP)
    T *Qs = Vs + BK * DP;                                   // NS x (BQ, DP)
    T *dOs = Qs + NS * BQ * DP;                             // NS x (BQ, DP)
    T *dSs = dOs + NS * BQ * DP;                            // (BK, BQ): dS^T
    float *dQs0 = reinterpret_cast<float *>(dSs + BK * BQ); // DQB x (BQ, DP), chunks swizzled as dq_acc
    float *lse_s = dQs0 + DQB * BQ * DP;                    // NS x BQ, log2 domain, +inf past lq
    float *dsum_s = lse_s + NS * BQ;                        // NS x BQ
    uint64_t *full = reinterpret_cast<uint64_t *>(dsum_s + NS * BQ), *empty = full + NS, *kvbar = empty + NS;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    // a 1-D grid, the key blocks of one head consecutive: the blocks running at
    // a time share their Q / dO stream in L2, and causal starts with the key
    // blocks that most query blocks see
    const int nkb = (p.Lk + BK - 1) / BK, bhk = blockIdx.x / nkb, b = bhk / p.Hkv, hk = bhk % p.Hkv;
    const int j0 = blockIdx.x % nkb * BK;
    const Seq sq(p, b);
    if (j0 >= sq.nk) return; // a shorter sequence of a varlen batch
    const QBlocks<BQ> qb(p, sq, hk, j0); // the query blocks that see these keys

    if (threadIdx.x == 0) {
        for (int i = 0; i < NS; i++) {
            wg::bar_init(full + i, 256); // 128 cp.async arrivals + 128 after the lse / dsum stores
            wg::bar_init(empty + i, 4 * NWG);
        }
        wg::bar_init(kvbar, 128);
    }
    __syncthreads();

    if (warp >= 4 * NWG) { // producer
        wg::setmaxnreg_dec<C::PREG>();
        const int pt = threadIdx.x - NC; // 0..127
        wg::load_sw<T, BK, DP, 128>(Ks, rows_of<T>(p.k, p.k_s, b, hk, sq.k0), p.k_s[2], j0, sq.lk, pt);
        wg::load_sw<T, BK, DP, 128>(Vs, rows_of<T>(p.v, p.v_s, b, hk, sq.k0), p.v_s[2], j0, sq.lk, pt);
        wg::fence_proxy();
        wg::bar_arrive_cp(kvbar);
        for (int it = 0; it < qb.total; it++) {
            const int st = it % NS, use = it / NS, h = qb.head(it), i0 = qb.row0(it);
            if (use > 0) wg::bar_wait(empty + st, (use - 1) & 1);
            wg::load_sw<T, BQ, DP, 128>(Qs + st * BQ * DP, rows_of<T>(p.q, p.q_s, b, h, sq.q0), p.q_s[2], i0, sq.lq,
                                        pt);
            wg::load_sw<T, BQ, DP, 128>(dOs + st * BQ * DP, rows_of<T>(p.dout, p.do_s, b, h, sq.q0), p.do_s[2], i0,
                                        sq.lq, pt);
            const int64_t l0 = sq.lse0(p, b, h) + i0;
            for (int r = pt; r < BQ; r += 128) {
                const bool in = i0 + r < sq.lq;
                lse_s[st * BQ + r] = in ? p.lse[l0 + r] * LOG2E : INFINITY; // P = 0 past lq
                dsum_s[st * BQ + r] = in ? dsum[l0 + r] : 0.f;
            }
            wg::fence_proxy();
            wg::bar_arrive_cp(full + st);
            wg::bar_arrive(full + st); // releases the stores above
        }
        cp_wait<0>();
    } else { // consumers
        wg::setmaxnreg_inc<C::CREG>();
        const int wgi = warp >> 2, ct = threadIdx.x; // warpgroup, consumer thread 0..NC-1
        const int wk = wgi * 64;                     // the warpgroup's first key in the block
        const int kr = wk + (warp & 3) * 16;         // the warp's first key in the block
        const int ka = j0 + kr + g;                  // this thread's keys: ka, ka + 8
        const int qr = wgi % C::QR, dq_c0 = wgi / C::QR * C::DQN; // its dQ piece: rows 64 qr.., columns dq_c0..
        const float sl2 = p.scale * LOG2E;
        float dk[DP / 8][4], dv[DP / 8][4];
        zero(dk);
        zero(dv);
        // operand descriptors, made once: A = this warpgroup's K / V rows
        // (K-major); B = stage 0's Q / dO, K-major for S^T / dP^T, MN-major
        // for dK / dV; dQ's A = its dS rows (MN-major), B = K's columns dq_c0..
        constexpr uint64_t STAGE = BQ * DP * sizeof(T) / 16;
        const uint64_t k_a = wg::desc_k0(Ks + wk * 64), v_a = wg::desc_k0(Vs + wk * 64);
        const uint64_t q_k0 = wg::desc_k0(Qs), do_k0 = wg::desc_k0(dOs);
        const uint64_t q_mn0 = wg::desc_mn0<BQ>(Qs), do_mn0 = wg::desc_mn0<BQ>(dOs);
        const uint64_t ds_a = wg::desc_mn0<BK>(dSs + qr * BK * 64);
        const uint64_t kq_b = wg::desc_mn0<BK>(Ks + dq_c0 / 64 * BK * 64 + dq_c0 % 64);
        wg::bar_wait(kvbar, 0);
        wg::fence_proxy();

        for (int it = 0; it < qb.total; it++) {
            const int st = it % NS, h = qb.head(it), i0 = qb.row0(it), bh = b * p.Hq + h;
            const float *lse_b = lse_s + st * BQ, *dsum_b = dsum_s + st * BQ;
            wg::bar_wait(full + st, (it / NS) & 1);
            wg::fence_proxy();

            float s[BQ / 8][4], dp[BQ / 8][4];
            zero(s);
            zero(dp);
            wg::pin(s);
            wg::pin(dp);
            wg::fence();
            const uint64_t q_k = q_k0 + st * STAGE, do_k = do_k0 + st * STAGE;
#pragma unroll
            for (int kk = 0; kk < DP / 16; kk++)
                wg::mma_ss<T, BQ, 0, 0>(s, k_a + wg::k_step<BK, T>(kk), q_k + wg::k_step<BQ, T>(kk), 1);
#pragma unroll
            for (int kk = 0; kk < DP / 16; kk++)
                wg::mma_ss<T, BQ, 0, 0>(dp, v_a + wg::k_step<BK, T>(kk), do_k + wg::k_step<BQ, T>(kk), 1);
            wg::commit();
            wg::wait<0>();
            wg::pin(s);
            wg::pin(dp);

            // P^T z into s, dS^T into dp; a key is visible to query i when key < key_end(i)
            const bool edge = j0 + BK > sq.lk || (sq.causal && j0 + BK > sq.key_end(i0));
            const Dropout drop(p, bh);
            if (!edge && !drop.on) { // most blocks: every key visible, no mask
#pragma unroll
                for (int n = 0; n < BQ / 8; n++) {
                    const float2 l2 = *reinterpret_cast<const float2 *>(lse_b + n * 8 + 2 * t);
                    const float2 ds = *reinterpret_cast<const float2 *>(dsum_b + n * 8 + 2 * t);
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        s[n][e] = ex2(fmaf(s[n][e], sl2, -((e & 1) ? l2.y : l2.x)));
                        dp[n][e] = s[n][e] * (dp[n][e] - ((e & 1) ? ds.y : ds.x));
                    }
                }
            } else {
#pragma unroll
                for (int n = 0; n < BQ / 8; n++) {
                    const int qc = n * 8 + 2 * t;
                    const float2 l2 = *reinterpret_cast<const float2 *>(lse_b + qc);
                    const float2 ds = *reinterpret_cast<const float2 *>(dsum_b + qc);
                    float z[4] = {1.f, 1.f, 1.f, 1.f};
                    if (drop.on) drop.quad(i0 + qc, ka, ka + 8, z);
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int key = ka + (e < 2 ? 0 : 8), q = i0 + qc + (e & 1);
                        const bool vis = !edge || key < sq.key_end(q);
                        const float pr = vis ? ex2(s[n][e] * sl2 - ((e & 1) ? l2.y : l2.x)) : 0.f;
                        s[n][e] = pr * z[e];
                        dp[n][e] = pr * (dp[n][e] * z[e] * drop.scale - ((e & 1) ? ds.y : ds.x));
                    }
                }
            }
            uint32_t pa[BQ / 16][4], da[BQ / 16][4]; // P^T z and dS^T as A fragments
#pragma unroll
            for (int kk = 0; kk < BQ / 16; kk++) {
                const typename Mma<T>::A a = Mma<T>::from_c(s[2 * kk], s[2 * kk + 1]);
                const typename Mma<T>::A d = Mma<T>::from_c(dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    pa[kk][e] = a.x[e];
                    da[kk][e] = d.x[e];
                }
            }
            wg::pin(dv);
            wg::pin(dk);
            wg::fence();
#pragma unroll
            for (int kk = 0; kk < BQ / 16; kk++)
                wg::mma_rs<T, DP, 1>(dv, pa[kk], do_mn0 + st * STAGE + wg::mn_step<T>(kk), 1);
#pragma unroll
            for (int kk = 0; kk < BQ / 16; kk++)
                wg::mma_rs<T, DP, 1>(dk, da[kk], q_mn0 + st * STAGE + wg::mn_step<T>(kk), 1);
            wg::commit();

            if (dq_acc) {
                // dS^T rows of this warp into the shared tile, as the 16-bit pairs of da
#pragma unroll
                for (int kk = 0; kk < BQ / 16; kk++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int r = kr + g + ((e & 1) ? 8 : 0), c = kk * 16 + ((e & 2) ? 8 : 0) + 2 * t;
                        *reinterpret_cast<uint32_t *>(dSs + wg::sw_off<BK>(r, c)) = da[kk][e];
                    }
                wg::fence_proxy();
                float *dQs = dQs0 + (it % DQB) * BQ * DP;
                if (ct == 0) wg::bulk_wait_read<DQB - 1>(); // the reduction before is done with dQs
                wg::bar_named(1, NC);                 // every warpgroup's dS^T is in
                float dq[C::DQN / 8][4];
                zero(dq);
                wg::pin(dq);
                wg::fence();
#pragma unroll
                for (int kk = 0; kk < BK / 16; kk++)
                    wg::mma_ss<T, C::DQN, 1, 1>(dq, ds_a + wg::mn_step<T>(kk), kq_b + wg::mn_step<T>(kk), 1);
                wg::commit();
                wg::wait<1>(); // dV, dK done: the stage can go
                wg::warp_release(empty + st);
                wg::wait<0>();
                wg::pin(dq);
                // into the staging tile laid out as dq_acc rows grow0.. (dq_acc_index)
                const int64_t grow0 = sq.lse0(p, b, h) + i0;
                const int rr = qr * 64 + (warp & 3) * 16 + g, x = static_cast<int>((grow0 + rr) & 7);
#pragma unroll
                for (int n = 0; n < C::DQN / 8; n++) {
                    const int c = dq_col(dq_c0 + n * 8 + 2 * t, x);
                    *reinterpret_cast<float2 *>(dQs + rr * DP + c) = make_float2(dq[n][0], dq[n][1]);
                    *reinterpret_cast<float2 *>(dQs + (rr + 8) * DP + c) = make_float2(dq[n][2], dq[n][3]);
                }
                wg::fence_proxy();
                wg::bar_named(1, NC); // the staging tile is complete
                if (ct == 0) {
                    const int rows = min(BQ, sq.lq - i0);
                    wg::bulk_add_f32(dq_acc + grow0 * DP, dQs, static_cast<uint32_t>(rows * DP * sizeof(float)));
                    wg::bulk_commit();
                }
            } else {
                wg::wait<0>();
                wg::warp_release(empty + st);
            }
            wg::pin(dv);
            wg::pin(dk);
        }
        if (ct == 0) wg::bulk_wait<0>();
        wg::bar_named(1, NC); // every dQ product has read Ks (staged through below)

        // dK (times scale) and dV (times 1 / (1 - p)) through this warp's rows of Ks / Vs
        const float vs = p.drop_threshold ? p.drop_scale : 1.f;
        wg::store_acc_sw<T, DP, BK>(dk, p.scale, p.scale, Ks, kr, rows_of<T>(p.dk, p.dk_s, b, hk, sq.k0), p.dk_s[2],
                                    j0 + kr, sq.nk);
        wg::store_acc_sw<T, DP, BK>(dv, vs, vs, Vs, kr, rows_of<T>(p.dv, p.dv_s, b, hk, sq.k0), p.dv_s[2], j0 + kr,
                                    sq.nk);
    }
#else
    (void)p, (void)dsum, (void)dq_acc; // built for another target: never launched (fg_wgmma_usable)
#endif
}

template <typename T, int DP, int NWG, int BQ, int NS>
cudaError_t launch(const fg_k_attn &p, const float *dsum, float *dq_acc, cudaStream_t st)
{
    using C = WgBwdCfg<T, DP, NWG, BQ, NS>;
    static const cudaError_t attr = allow_smem(flash_bwd_wg<T, DP, NWG, BQ, NS>, C::SMEM);
    if (attr != cudaSuccess) return attr;
    const int64_t blocks = static_cast<int64_t>(p.B) * p.Hkv * ((p.Lk + C::BK - 1) / C::BK);
    if (blocks > INT32_MAX) return cudaErrorInvalidConfiguration;
    flash_bwd_wg<T, DP, NWG, BQ, NS><<<static_cast<unsigned>(blocks), C::NTH, C::SMEM, st>>>(p, dsum, dq_acc);
    return cudaGetLastError();
}

// Two consumer warpgroups (128 keys a block), two stages, 64 query rows a
// step, two dQ staging tiles. On an H100 at L 4096 (bf16, B L 16k, H D 2048,
// bwd TFLOP/s): D128 396 non-causal / 344 causal, D64 320 / 269. Measured
// within the run-to-run spread (1-2%): one dQ staging tile, three stages; 128
// query rows a step for D64 was no faster and its consumers spill. The steps
// that got here are in bench/results.
template <typename T> cudaError_t dispatch(const fg_k_attn &p, const float *dsum, float *dq_acc, cudaStream_t st)
{
    return p.D == 64 ? launch<T, 64, 2, 64, 2>(p, dsum, dq_acc, st) : launch<T, 128, 2, 64, 2>(p, dsum, dq_acc, st);
}
} // namespace

bool fg_k_flash_bwd_wg(const fg_k_attn &p, int dtype, const float *dsum, float *dq_acc, cudaStream_t st,
                       cudaError_t *err)
{
    if ((dtype != DT_BF16 && dtype != DT_F16) || (p.D != 64 && p.D != 128) || !p.vec || !fg_wgmma_usable())
        return false;
    if (dq_acc && (*err = cudaMemsetAsync(dq_acc, 0, sizeof(float) * static_cast<size_t>(p.lse_n) * p.D, st)) !=
                      cudaSuccess)
        return true;
    *err = dtype == DT_BF16 ? dispatch<bf16>(p, dsum, dq_acc, st) : dispatch<f16>(p, dsum, dq_acc, st);
    return true;
}
