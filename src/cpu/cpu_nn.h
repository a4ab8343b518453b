/* CPU kernels of the nn ops: softmax family and cross-entropy (cpu/softmax.c),
 * layer/RMS norm, embedding and dropout (cpu/norm.c). Same conventions as
 * cpu.h (outputs contiguous and allocated by the caller, math in double), with
 * one simplification: unless a comment says otherwise, inputs must be
 * contiguous too (the ops pass fg__contig copies), so a row is a plain run of
 * elements. */
#ifndef FG_CPU_NN_H
#define FG_CPU_NN_H

#include "cpu/cpu.h"

/* ---- softmax / log-softmax ---- */
/* A contiguous tensor seen as (outer, n, inner), reducing over n = shape[dim]. */
typedef struct {
    int64_t outer, n, inner;
} fg_softmax_dims;
fg_softmax_dims fg_softmax_dims_of(const fg_tensor *t, int dim);

/* out = softmax(in) or log_softmax(in) over `dim` (max-shifted: no overflow). */
void fg_cpu_softmax(fg_tensor *out, const fg_tensor *in, int dim, bool log_out);
/* From the forward output y: softmax gx = y (gy - sum(gy y)); log_softmax
 * gx = gy - exp(y) sum(gy). */
void fg_cpu_softmax_grad(fg_tensor *gx, const fg_tensor *y, const fg_tensor *gy, int dim, bool log_out);

/* ---- cross-entropy ---- */
/* First flat position of `idx` (i32/i64) whose value is outside [0, n), skipping
 * values equal to `ignore` when skip_ignored; -1 when all are fine. *n_valid
 * (optional) receives the count of non-skipped entries. */
int64_t fg_cpu_first_out_of_range(const fg_tensor *idx, int64_t n, bool skip_ignored, int64_t ignore,
                                  int64_t *n_valid);
/* logits (N, C), targets (N) already range-checked. out is 0-d (MEAN: sum over
 * the n_valid counted rows / n_valid, 0 when none; SUM) or (N) for NONE (0 on
 * ignored rows). */
void fg_cpu_cross_entropy(fg_tensor *out, const fg_tensor *logits, const fg_tensor *targets, int64_t ignore_index,
                          fg_reduction reduction, int64_t n_valid);
/* gx (N, C) = s_i (softmax(logits_i) - onehot(t_i)), s_i = factor * gy[i] when
 * gy is (N), factor * gy[0] when gy is 0-d; zero rows where t_i == ignore_index. */
void fg_cpu_cross_entropy_grad(fg_tensor *gx, const fg_tensor *logits, const fg_tensor *targets,
                               int64_t ignore_index, const fg_tensor *gy, double factor);

/* ---- layer norm / RMS norm over the last dim ---- */
/* x (rows, D) in any leading shape; w and b are 1-d (D) and may be NULL or
 * strided. mean and rstd are f64 (rows) tensors written here (mean unused and
 * may be NULL when rms). LayerNorm: y = (x - mean) rstd w + b with
 * rstd = 1/sqrt(var + eps) (biased var); RMSNorm: y = x rstd w with
 * rstd = 1/sqrt(mean(x^2) + eps). */
void fg_cpu_layernorm(fg_tensor *out, fg_tensor *mean, fg_tensor *rstd, const fg_tensor *x, const fg_tensor *w,
                      const fg_tensor *b, double eps, bool rms);
/* Gradients for whichever of gx (like x), gw, gb ((D), contiguous) are non-NULL.
 * w may be NULL (weight of ones). */
fg_status fg_cpu_layernorm_grad(fg_tensor *gx, fg_tensor *gw, fg_tensor *gb, const fg_tensor *x,
                                const fg_tensor *w, const fg_tensor *mean, const fg_tensor *rstd,
                                const fg_tensor *gy, bool rms);

/* ---- embedding ---- */
/* out (*idx.shape, D) = rows of weight (V, D; may be strided) picked by idx
 * (already range-checked). */
void fg_cpu_embedding(fg_tensor *out, const fg_tensor *weight, const fg_tensor *idx);
/* gw (V, D) = scatter-add of the rows of gy (*idx.shape, D) at idx, in double,
 * in index order (deterministic). */
fg_status fg_cpu_embedding_grad(fg_tensor *gw, const fg_tensor *idx, const fg_tensor *gy);

/* ---- dropout ---- */
/* out = keep_i ? in_i * scale : 0 where word i of the Philox draw at block
 * `base` (key = seed) is >= threshold; drop_all drops everything (p = 1). The
 * backward is the same call on the gradient. */
void fg_cpu_dropout(fg_tensor *out, const fg_tensor *in, uint64_t seed, uint64_t base, uint32_t threshold,
                    bool drop_all, double scale);

/* ---- flash attention (cpu/attention.c) ----
 * q (Bv, Hq, Lv, D), k and v (Bv, Hkv, Lkv, D), o like q: any strides (the
 * packed varlen layout is a (1, H, total, D) view); lse contiguous, f32 (f64
 * for f64 inputs), element (b, h, i) at (b Hq + h) Lv + i. The backward writes
 * dq, dk, dv (views like q, k, v). False when scratch memory cannot be
 * allocated. */
/* Sequences of a problem (see kernels/k_attention.h): NULL or n = 0 with no
 * arrays is dense (batch entry b, all rows). cu_q / cu_k (n + 1 each) pack
 * the sequences along the row dim of a batch of one; k_len (n) keeps the
 * first k_len[b] keys of sequence b. */
typedef struct {
    int64_t n;
    const int32_t *cu_q, *cu_k, *k_len;
} fg_attn_seqs;
/* End (exclusive) of the keys query row i may see, clipped to [0, Lk]:
 * causal attention aligned bottom-right (row i sees j <= i + Lk - Lq). */
static inline int64_t fg_attn_key_end(int64_t i, int64_t Lq, int64_t Lk, bool causal)
{
    if (!causal) return Lk;
    int64_t e = i + Lk - Lq + 1;
    return e < 0 ? 0 : e > Lk ? Lk : e;
}
/* Attention dropout: element (row i, key j) of head bh = b Hq + h is kept when
 * word j % 4 of philox(ctr = {j / 4, i, 2^31 | bh, lo(offset)}, key = seed) is
 * >= threshold (threshold 0: no dropout), and kept values are scaled by
 * `scale` = 1 / (1 - p). The CUDA kernels draw the same words (k_flash.cuh). */
typedef struct {
    uint64_t seed, offset;
    uint32_t threshold;
    double scale;
} fg_attn_drop;
/* The factor (0 or scale; 1 without dropout) of element (bh, i, j). */
double fg_attn_drop_factor(const fg_attn_drop *d, int64_t bh, int64_t i, int64_t j);
bool fg_cpu_flash_fwd(const fg_tensor *q, const fg_tensor *k, const fg_tensor *v, fg_tensor *o, fg_tensor *lse,
                      double scale, bool causal, const fg_attn_drop *drop, const fg_attn_seqs *seqs);
bool fg_cpu_flash_bwd(const fg_tensor *q, const fg_tensor *k, const fg_tensor *v, const fg_tensor *o,
                      const fg_tensor *lse, const fg_tensor *dout, fg_tensor *dq, fg_tensor *dk, fg_tensor *dv,
                      double scale, bool causal, const fg_attn_drop *drop, const fg_attn_seqs *seqs);

#endif
