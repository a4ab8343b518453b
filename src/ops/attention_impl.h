/* Shared by the attention op (ops/attention.c: arguments, sequences, the flash
 * node) and its math backend (ops/attention_math.c). Not installed. */
#ifndef FG_OPS_ATTENTION_IMPL_H
#define FG_OPS_ATTENTION_IMPL_H

#include <flashgrad/attention.h>
#include "cpu/cpu_nn.h"

typedef struct {
    bool causal, deterministic;
    double scale, dropout_p;
    fg_attn_backend backend;
    fg_generator *gen;
    fg_attn_drop drop; /* threshold 0: no dropout; drawn once per call */
    int64_t bh0;       /* dropout head index of batch entry 0 (the math backend runs sequence b alone: b Hq) */
} attn_cfg;

/* The sequences of a call, checked, on the host. Dense without key padding:
 * varlen = padded = false and no arrays. */
typedef struct {
    bool varlen, padded;
    int64_t n;                    /* sequences */
    int64_t *cu_q, *cu_k, *k_len; /* n + 1, n + 1, n entries; NULL when absent */
    int64_t max_q, max_k;         /* longest sequence, longest key range (before padding) */
} attn_seqs;

/* Queries, keys owned and keys seen of sequence b. */
static inline void fg__attn_seq_lens(const attn_seqs *s, int64_t b, int64_t *lq, int64_t *nk, int64_t *lk)
{
    *lq = s->cu_q[b + 1] - s->cu_q[b];
    *nk = s->cu_k[b + 1] - s->cu_k[b];
    *lk = s->k_len && s->k_len[b] < *nk ? s->k_len[b] : *nk;
}

/* LSE in fp32, or fp64 for f64 inputs (the precision of their reference). */
static inline fg_dtype fg__attn_lse_dtype(const fg_tensor *q) { return q->dtype == FG_F64 ? FG_F64 : FG_F32; }

/* Reserves the dropout stream of one call in c->drop (nothing when p = 0). */
void fg__attn_draw_dropout(attn_cfg *c);

/* The math backend: scores and probabilities materialised with framework
 * ops (autograd through them). q, k, v as the caller passed them (packed
 * when s->varlen); c->drop already drawn. */
fg_tensor *fg__attn_math(fg_tensor *q, fg_tensor *k, fg_tensor *v, attn_cfg *c, const attn_seqs *s,
                         fg_tensor **lse_out);

#endif
