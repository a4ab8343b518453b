/* Shared by the attention op (ops/attention.c: arguments, sequences, the flash
 * node and runs), its math backend (ops/attention_math.c) and the raw-pointer
 * API (ops/attention_raw.c). Not installed. */
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

enum { FG_ATTN_MAX_ROWS = 65535 * 64 }; /* rows per sequence the CUDA grids reach */

/* s->cu_q, cu_k (n + 1 each) and, when s->padded, k_len (n) in one block for
 * n sequences (s->padded set before); false (error set) on OOM. */
bool fg__attn_seqs_alloc(const char *op, attn_seqs *s, int64_t n);
void fg__attn_seqs_free(attn_seqs *s);
/* Checks the host tables of s: when varlen, offsets from 0 to total_q /
 * total_k without decreasing (total_what[0 / 1] names each total in the
 * message: "the packed tensor has") and totals within int32; when padded, each
 * key length in [0, keys of its sequence]. Sets max_q and max_k. false with
 * the error (naming op) set otherwise. */
bool fg__attn_check_seqs(const char *op, attn_seqs *s, int64_t total_q, int64_t total_k, const char *const total_what[2]);

/* Queries, keys owned and keys seen of sequence b. */
static inline void fg__attn_seq_lens(const attn_seqs *s, int64_t b, int64_t *lq, int64_t *nk, int64_t *lk)
{
    *lq = s->cu_q[b + 1] - s->cu_q[b];
    *nk = s->cu_k[b + 1] - s->cu_k[b];
    *lk = s->k_len && s->k_len[b] < *nk ? s->k_len[b] : *nk;
}

/* LSE in fp32, or fp64 for f64 inputs (the precision of their reference). */
static inline fg_dtype fg__attn_lse_dtype(const fg_tensor *q) { return q->dtype == FG_F64 ? FG_F64 : FG_F32; }

/* The dropout of probability p (in [0, 1)) with the stream (seed, offset):
 * threshold floor(p 2^32), scale 1 / (1 - p); all zero (no dropout) when
 * p < 2^-32. */
fg_attn_drop fg__attn_drop_of(double p, uint64_t seed, uint64_t offset);
/* Reserves the dropout stream of one call in c->drop (nothing when p = 0). */
void fg__attn_draw_dropout(attn_cfg *c);

/* How the flash runs see the sequences: their extents and the int32 tables
 * on the data's device (NULL when absent). Dense without key padding:
 * varlen = padded = false (n, max_q, max_k unused). */
typedef struct {
    bool varlen, padded;
    int64_t n, max_q, max_k;
    const int32_t *cu_q, *cu_k, *k_len;
} attn_seq_arg;

/* The flash backend on (B, H, L, D) views (packed varlen: (1, H, total, D),
 * batch stride 0), CPU (cpu/attention.c) or CUDA (the kernels, launched on
 * `stream`). Uses c->scale, c->causal, c->drop, c->deterministic.
 * Forward: w = {q, k, v, out}; writes out and lse (contiguous, (B, Hq, Lq) or
 * (Hq, total_q); f32, f64 for f64 data on the CPU). */
fg_status fg__attn_flash_fwd(const char *op, fg_tensor *const *w, fg_tensor *lse, const attn_cfg *c,
                             const attn_seq_arg *sa, void *stream);
/* Backward: w = {q, k, v, out, dout, dq, dk, dv}; writes dq, dk, dv (zeros
 * where no query / key exists). CUDA scratch: `workspace` of
 * workspace_bytes >= fg__attn_flash_bwd_scratch(...) bytes, or NULL: from the
 * caching allocator, joined with `stream` when that is not the framework's. */
fg_status fg__attn_flash_bwd(const char *op, fg_tensor *const *w, const fg_tensor *lse, const attn_cfg *c,
                             const attn_seq_arg *sa, void *stream, void *workspace, size_t workspace_bytes);
/* Device scratch bytes of that backward (0 on the CPU); reads no data. */
size_t fg__attn_flash_bwd_scratch(fg_tensor *const *w, const attn_cfg *c, const attn_seq_arg *sa);

/* The math backend: scores and probabilities materialised with framework
 * ops (autograd through them). q, k, v as the caller passed them (packed
 * when s->varlen); c->drop already drawn. */
fg_tensor *fg__attn_math(fg_tensor *q, fg_tensor *k, fg_tensor *v, attn_cfg *c, const attn_seqs *s,
                         fg_tensor **lse_out);

#endif
