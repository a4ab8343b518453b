/* CPU flash attention: the tiled online-softmax forward and the recomputing
 * backward, in plain C. This is the readable reference of the GPU kernels'
 * logic (same tiling, same statistics, same masking rules), with double
 * accumulation. Tensors are read through their strides (any layout).
 *
 * Notation per (batch b, query head h): rows i of q (Lq of them), keys j of
 * k/v (Lk), s_ij = scale q_i . k_j, visible when !causal or j <= i + Lk - Lq.
 *   forward:  m_i = max_j s_ij, l_i = sum_j exp(s_ij - m_i),
 *             o_i = sum_j exp(s_ij - m_i) v_j / l_i, LSE_i = m_i + log l_i
 *   backward: p_ij = exp(s_ij - LSE_i), D_i = dO_i . o_i,
 *             dv_j += p_ij dO_i, ds_ij = p_ij (dO_i . v_j - D_i),
 *             dq_i += scale ds_ij k_j, dk_j += scale ds_ij q_i
 * A row with no visible key: o_i = 0, LSE_i = +inf, so p = 0 and its
 * gradients are 0. With sequences (varlen, key padding) each sequence is this
 * problem alone: i and j count from its first row and key, and the keys past
 * its key length are never read (their gradients stay 0). Dropout multiplies p_ij by z_ij (0 or 1 / (1 - p),
 * regenerated from Philox words, never stored) where p meets v: o_i and dv use
 * p z, ds_ij = p_ij (z_ij dO_i . v_j - D_i); l and LSE stay undropped. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cpu/cpu_nn.h"

enum { BR = 16, BC = 16 }; /* query rows x keys per tile, as a kernel would use */

/* Element (b, h, l, d) of a 4-d tensor. */
static inline int64_t at4(const fg_tensor *t, int64_t b, int64_t h, int64_t l, int64_t d)
{
    return b * t->stride[0] + h * t->stride[1] + l * t->stride[2] + d * t->stride[3];
}

double fg_attn_drop_factor(const fg_attn_drop *d, int64_t bh, int64_t i, int64_t j)
{
    if (!d || d->threshold == 0) return 1.0;
    const uint32_t key[2] = {(uint32_t)d->seed, (uint32_t)(d->seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)((uint64_t)j >> 2), (uint32_t)i, 0x80000000u | (uint32_t)bh, (uint32_t)d->offset};
    uint32_t w[4];
    fg_philox4x32_10(ctr, key, w);
    return w[j & 3] >= d->threshold ? d->scale : 0.0;
}

/* Sequence b: its batch entry, first rows and lengths (keys: those it sees). */
typedef struct {
    int64_t tb, q0, lq, k0, lk;
} seq_t;

static int64_t n_seqs(const fg_attn_seqs *s, int64_t Bv) { return s && (s->cu_q || s->k_len) ? s->n : Bv; }

static seq_t seq_of(const fg_attn_seqs *s, int64_t b, int64_t Lv, int64_t Lkv)
{
    seq_t r = {b, 0, Lv, 0, Lkv};
    if (s && s->cu_q) {
        r.tb = 0, r.q0 = s->cu_q[b], r.lq = s->cu_q[b + 1] - r.q0;
        r.k0 = s->cu_k[b], r.lk = s->cu_k[b + 1] - r.k0;
    }
    if (s && s->k_len && s->k_len[b] < r.lk) r.lk = s->k_len[b] < 0 ? 0 : s->k_len[b];
    return r;
}

bool fg_cpu_flash_fwd(const fg_tensor *q, const fg_tensor *k, const fg_tensor *v, fg_tensor *o, fg_tensor *lse,
                      double scale, bool causal, const fg_attn_drop *drop, const fg_attn_seqs *seqs)
{
    const int64_t Hq = q->shape[1], Lv = q->shape[2], D = q->shape[3];
    const int64_t Hkv = k->shape[1], G = Hq / Hkv, nseq = n_seqs(seqs, q->shape[0]);
    const void *qp = fg__data(q), *kp = fg__data(k), *vp = fg__data(v);
    void *op = fg__data(o);
    double *acc = malloc(sizeof(double) * (size_t)(BR * (D > 0 ? D : 1))); /* (BR, D) */
    if (!acc) return false;
    double s[BR][BC], m[BR], l[BR];
    for (int64_t b = 0; b < nseq; b++) {
        const seq_t sq = seq_of(seqs, b, Lv, k->shape[2]);
        const int64_t tb = sq.tb, Lq = sq.lq, Lk = sq.lk;
        for (int64_t h = 0; h < Hq; h++) {
            const int64_t hk = h / G;
            /* rows i and keys j below are the sequence's own; tensor rows q0 + i, k0 + j */
#define Q(i, d) fg__ld(qp, q->dtype, at4(q, tb, h, sq.q0 + (i), d))
#define K(j, d) fg__ld(kp, k->dtype, at4(k, tb, hk, sq.k0 + (j), d))
#define V(j, d) fg__ld(vp, v->dtype, at4(v, tb, hk, sq.k0 + (j), d))
            for (int64_t i0 = 0; i0 < Lq; i0 += BR) {
                const int64_t nr = Lq - i0 < BR ? Lq - i0 : BR;
                for (int64_t r = 0; r < nr; r++) m[r] = -INFINITY, l[r] = 0;
                memset(acc, 0, sizeof(double) * (size_t)(BR * D));
                const int64_t jend = fg_attn_key_end(i0 + nr - 1, Lq, Lk, causal); /* the last row sees the most */
                for (int64_t j0 = 0; j0 < jend; j0 += BC) {
                    const int64_t nc = jend - j0 < BC ? jend - j0 : BC;
                    for (int64_t r = 0; r < nr; r++) {
                        const int64_t i = i0 + r, e = fg_attn_key_end(i, Lq, Lk, causal);
                        double mb = -INFINITY;
                        for (int64_t c = 0; c < nc; c++) {
                            const int64_t j = j0 + c;
                            double dot = 0;
                            if (j < e)
                                for (int64_t d = 0; d < D; d++) dot += Q(i, d) * K(j, d);
                            s[r][c] = j < e ? scale * dot : -INFINITY;
                            if (s[r][c] > mb) mb = s[r][c];
                        }
                        if (mb == -INFINITY) continue; /* nothing visible in this tile */
                        /* online softmax: rescale what was summed against the old max */
                        const double mn = mb > m[r] ? mb : m[r], alpha = exp(m[r] - mn); /* exp(-inf) = 0 */
                        l[r] *= alpha;
                        for (int64_t d = 0; d < D; d++) acc[r * D + d] *= alpha;
                        for (int64_t c = 0; c < nc; c++) {
                            if (s[r][c] == -INFINITY) continue;
                            const double p = exp(s[r][c] - mn);
                            l[r] += p; /* the sum of the undropped probabilities */
                            const double pz = p * fg_attn_drop_factor(drop, b * Hq + h, i, j0 + c);
                            for (int64_t d = 0; d < D; d++) acc[r * D + d] += pz * V(j0 + c, d);
                        }
                        m[r] = mn;
                    }
                }
                for (int64_t r = 0; r < nr; r++) {
                    const int64_t i = i0 + r;
                    const bool seen = l[r] > 0;
                    for (int64_t d = 0; d < D; d++)
                        fg__st(op, o->dtype, at4(o, tb, h, sq.q0 + i, d), seen ? acc[r * D + d] / l[r] : 0.0);
                    fg__st(fg__data(lse), lse->dtype, (tb * Hq + h) * Lv + sq.q0 + i, seen ? m[r] + log(l[r]) : INFINITY);
                }
            }
        }
    }
    free(acc);
    return true;
}

/* Rounds the fp64 accumulator a (a contiguous (Bv, H, L, D) block) into t. */
static void store_grad(fg_tensor *t, const double *a)
{
    const int64_t *n = t->shape;
    int64_t x = 0;
    for (int64_t b = 0; b < n[0]; b++)
        for (int64_t h = 0; h < n[1]; h++)
            for (int64_t i = 0; i < n[2]; i++)
                for (int64_t d = 0; d < n[3]; d++) fg__st(fg__data(t), t->dtype, at4(t, b, h, i, d), a[x++]);
}

bool fg_cpu_flash_bwd(const fg_tensor *q, const fg_tensor *k, const fg_tensor *v, const fg_tensor *o,
                      const fg_tensor *lse, const fg_tensor *dout, fg_tensor *dq, fg_tensor *dk, fg_tensor *dv,
                      double scale, bool causal, const fg_attn_drop *drop, const fg_attn_seqs *seqs)
{
    const int64_t Bv = q->shape[0], Hq = q->shape[1], Lv = q->shape[2], D = q->shape[3];
    const int64_t Hkv = k->shape[1], Lkv = k->shape[2], G = Hq / Hkv, nseq = n_seqs(seqs, Bv);
    const void *qp = fg__data(q), *kp = fg__data(k), *vp = fg__data(v), *opp = fg__data(o), *gp = fg__data(dout);
    /* fp64 accumulators in tensor coordinates: dq per query head, dk/dv per kv head (summed over its group) */
    double *aq = calloc((size_t)(Bv * Hq * Lv * D) + 1, sizeof(double));
    double *ak = calloc((size_t)(Bv * Hkv * Lkv * D) + 1, sizeof(double));
    double *av = calloc((size_t)(Bv * Hkv * Lkv * D) + 1, sizeof(double));
    double *Dr = calloc((size_t)Lv + 1, sizeof(double));
    if (!aq || !ak || !av || !Dr) {
        free(aq), free(ak), free(av), free(Dr);
        return false;
    }
    for (int64_t b = 0; b < nseq; b++) {
        const seq_t sq = seq_of(seqs, b, Lv, Lkv);
        const int64_t tb = sq.tb, Lq = sq.lq, Lk = sq.lk;
        for (int64_t h = 0; h < Hq; h++) {
            const int64_t hk = h / G;
            const int64_t L0 = (tb * Hq + h) * Lv + sq.q0;
#define L(i) fg__ld(fg__data(lse), lse->dtype, L0 + (i))
#define DO(i, d) fg__ld(gp, dout->dtype, at4(dout, tb, h, sq.q0 + (i), d))
            for (int64_t i = 0; i < Lq; i++) { /* preprocess: D_i = dO_i . o_i */
                double t = 0;
                for (int64_t d = 0; d < D; d++) t += DO(i, d) * fg__ld(opp, o->dtype, at4(o, tb, h, sq.q0 + i, d));
                Dr[i] = t;
            }
            double *gq = aq + ((tb * Hq + h) * Lv + sq.q0) * D, *gk = ak + ((tb * Hkv + hk) * Lkv + sq.k0) * D,
                   *gv = av + ((tb * Hkv + hk) * Lkv + sq.k0) * D;
            /* key tiles outer (a kernel block owns dk/dv of its tile), query tiles inner */
            for (int64_t j0 = 0; j0 < Lk; j0 += BC) {
                const int64_t nc = Lk - j0 < BC ? Lk - j0 : BC;
                for (int64_t i0 = 0; i0 < Lq; i0 += BR) {
                    const int64_t nr = Lq - i0 < BR ? Lq - i0 : BR;
                    if (fg_attn_key_end(i0 + nr - 1, Lq, Lk, causal) <= j0) continue; /* tile fully masked */
                    for (int64_t r = 0; r < nr; r++) {
                        const int64_t i = i0 + r, e = fg_attn_key_end(i, Lq, Lk, causal);
                        if (L(i) == INFINITY) continue; /* row sees no key: p = 0 */
                        for (int64_t c = 0; c < nc && j0 + c < e; c++) {
                            const int64_t j = j0 + c;
                            double dot = 0, dp = 0;
                            for (int64_t d = 0; d < D; d++) {
                                dot += Q(i, d) * K(j, d);
                                dp += DO(i, d) * V(j, d);
                            }
                            const double p = exp(scale * dot - L(i)); /* recomputed, never stored */
                            const double z = fg_attn_drop_factor(drop, b * Hq + h, i, j); /* regenerated */
                            const double ds = p * (dp * z - Dr[i]);
                            for (int64_t d = 0; d < D; d++) {
                                gv[j * D + d] += p * z * DO(i, d);
                                gk[j * D + d] += scale * ds * Q(i, d);
                                gq[i * D + d] += scale * ds * K(j, d);
                            }
                        }
                    }
                }
            }
        }
    }
#undef L
#undef DO
#undef Q
#undef K
#undef V
    /* round once into the outputs */
    store_grad(dq, aq);
    store_grad(dk, ak);
    store_grad(dv, av);
    free(aq), free(ak), free(av), free(Dr);
    return true;
}
