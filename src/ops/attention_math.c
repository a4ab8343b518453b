/* The math attention backend: S = scale q k^T, masks, softmax, dropout and
 * P v with the framework's ops (cuBLAS on the GPU), autograd through them.
 * The reference every flash result is checked against; it materialises the
 * (Lq, Lk) scores. Variable-length and key-padded batches run each sequence
 * alone on slices of the inputs and join the results: the definition of what
 * those options mean. */
#include <math.h>
#include <stdlib.h>
#include "ops/attention_impl.h"

static const char *OP = "attention";

/* k or v (B, Hkv, L, D) repeated to (B, Hkv G, L, D): head h reads h / G. */
static fg_tensor *repeat_heads(fg_tensor *t, int64_t G)
{
    if (G == 1) return t;
    const int64_t B = t->shape[0], H = t->shape[1], L = t->shape[2], D = t->shape[3];
    fg_tensor *e = fg_expand(fg_unsqueeze(t, 2), FG_SHAPE(B, H, G, L, D));
    return fg_reshape(fg_contiguous(e), FG_SHAPE(B, H * G, L, D));
}

/* Host values m (row-major, of the given shape) as a tensor of dtype dt on dev: the masks and dropout factors. */
static fg_tensor *mask_of(const double *m, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev)
{
    fg_tensor *h = fg_from_f64(m, ndim, shape, dt, FG_CPU);
    return h && dev != FG_CPU ? fg_to(h, dev, dt) : h;
}

/* The dropout factors (B, Hq, Lq, Lk) of the flash kernels, materialised. */
static fg_tensor *dropout_factors(const fg_tensor *q, int64_t Lk, const fg_attn_drop *d, int64_t bh0, fg_dtype dt)
{
    const int64_t BH = q->shape[0] * q->shape[1], Lq = q->shape[2];
    double *m = malloc(sizeof(double) * (size_t)(BH * Lq * Lk + 1));
    if (!m) {
        fg__err(FG_ERR_OOM, "%s: out of memory for the dropout mask (math backend)", OP);
        return NULL;
    }
    for (int64_t bh = 0; bh < BH; bh++)
        for (int64_t i = 0; i < Lq; i++)
            for (int64_t j = 0; j < Lk; j++) m[(bh * Lq + i) * Lk + j] = fg_attn_drop_factor(d, bh0 + bh, i, j);
    fg_tensor *h = mask_of(m, FG_SHAPE(q->shape[0], q->shape[1], Lq, Lk), dt, q->device);
    free(m);
    return h;
}

/* Ends the inner scope sc, moving out (and lse) back into the caller's scope
 * as if made there; NULL and nothing kept when either is missing. */
static fg_tensor *scope_result(fg_scope *sc, fg_tensor *out, fg_tensor *lse, fg_tensor **lse_out)
{
    if (out) out = fg_keep(out);
    if (lse) lse = fg_keep(lse);
    fg_scope_end(sc);
    out = fg__adopt(out);
    lse = fg__adopt(lse);
    if (!out || (lse_out && !lse)) {
        fg_free(out);
        fg_free(lse);
        return NULL;
    }
    if (lse_out) *lse_out = lse;
    return out;
}

/* One dense problem: q (B, Hq, Lq, D), k and v (B, Hkv, Lk, D), Lk >= 1. */
static fg_tensor *math_dense(fg_tensor *q, fg_tensor *k, fg_tensor *v, const attn_cfg *c, fg_tensor **lse_out)
{
    const int64_t Lq = q->shape[2], Lk = k->shape[2], G = q->shape[1] / k->shape[1];
    fg_scope *sc = fg_scope_begin();
    if (!sc) return NULL;
    fg_tensor *kk = repeat_heads(k, G), *vv = kk ? repeat_heads(v, G) : NULL;
    fg_tensor *S = vv ? fg_mul_scalar(fg_matmul(q, fg_transpose(kk, 2, 3)), c->scale) : NULL; /* (B, Hq, Lq, Lk) */
    fg_tensor *full = NULL; /* (Lq, 1): rows that see no key */
    bool any_full = false;
    if (S && c->causal) {
        double *m = malloc(sizeof(double) * (size_t)(Lq * Lk + Lq + 1));
        if (!m) {
            fg__err(FG_ERR_OOM, "%s: out of memory for the causal mask", OP);
            S = NULL;
        } else {
            double *fr = m + Lq * Lk;
            for (int64_t i = 0; i < Lq; i++) {
                int64_t e = fg_attn_key_end(i, Lq, Lk, true);
                fr[i] = e == 0;
                any_full |= e == 0;
                /* rows with no key stay unmasked (finite softmax, zeroed after: no NaN anywhere) */
                for (int64_t j = 0; j < Lk; j++) m[i * Lk + j] = e > 0 && j >= e;
            }
            fg_tensor *mk = mask_of(m, FG_SHAPE(Lq, Lk), S->dtype, S->device);
            full = any_full ? mask_of(fr, FG_SHAPE(Lq, 1), S->dtype, S->device) : NULL;
            free(m);
            S = mk && (full || !any_full) ? fg_masked_fill(S, mk, -INFINITY) : NULL;
        }
    }
    fg_tensor *P = S ? fg_softmax(S, -1) : NULL;
    if (P && any_full) P = fg_masked_fill(P, full, 0.0);
    if (P && c->drop.threshold) P = fg_mul(P, dropout_factors(q, Lk, &c->drop, c->bh0, P->dtype));
    fg_tensor *out = P ? fg_matmul(P, vv) : NULL;
    fg_tensor *lse = NULL;
    if (out && lse_out) { /* log-sum-exp of the scores, without gradient */
        bool prev = fg_set_grad_enabled(false);
        fg_tensor *mx = fg_max(S, -1, true, NULL);
        fg_tensor *l = mx ? fg_add(fg_log(fg_sum(fg_exp(fg_sub(S, mx)), 1, (const int[]){-1}, false)),
                                   fg_squeeze(mx, -1))
                          : NULL;
        if (l && any_full) l = fg_masked_fill(l, fg_reshape(full, FG_SHAPE(Lq)), INFINITY);
        lse = l ? fg_to(l, l->device, fg__attn_lse_dtype(q)) : NULL;
        fg_set_grad_enabled(prev);
        if (!lse) out = NULL;
    }
    return scope_result(sc, out, lse, lse_out);
}

/* Sequence b alone: out (1, Hq, lq, D) and its LSE (1, Hq, lq). */
static fg_tensor *math_seq(fg_tensor *q4, fg_tensor *k4, fg_tensor *v4, attn_cfg *c, const attn_seqs *s, int64_t b,
                           fg_tensor **lse)
{
    int64_t lq, nk, lk;
    fg__attn_seq_lens(s, b, &lq, &nk, &lk);
    const int64_t tb = s->varlen ? 0 : b, q0 = s->varlen ? s->cu_q[b] : 0, k0 = s->varlen ? s->cu_k[b] : 0;
    fg_tensor *qb = fg_narrow(fg_narrow(q4, 0, tb, 1), 2, q0, lq);
    if (lk == 0) { /* no key: zeros (and zero gradients), LSE +inf */
        if (lse) *lse = fg_full(FG_SHAPE(1, q4->shape[1], lq), INFINITY, fg__attn_lse_dtype(q4), q4->device);
        return fg_mul_scalar(qb, 0.0);
    }
    fg_tensor *kb = fg_narrow(fg_narrow(k4, 0, tb, 1), 2, k0, lk);
    fg_tensor *vb = fg_narrow(fg_narrow(v4, 0, tb, 1), 2, k0, lk);
    if (!qb || !kb || !vb) return NULL;
    c->bh0 = b * q4->shape[1];
    return math_dense(qb, kb, vb, c, lse);
}

fg_tensor *fg__attn_math(fg_tensor *q, fg_tensor *k, fg_tensor *v, attn_cfg *c, const attn_seqs *s,
                         fg_tensor **lse_out)
{
    c->bh0 = 0;
    if (!s->varlen && !s->padded) return math_dense(q, k, v, c, lse_out);
    fg_scope *sc = fg_scope_begin();
    if (!sc) return NULL;
    /* packed (total, H, D) -> (1, H, total, D) views, with autograd */
    fg_tensor *q4 = s->varlen ? fg_transpose(fg_unsqueeze(q, 0), 1, 2) : q;
    fg_tensor *k4 = s->varlen ? fg_transpose(fg_unsqueeze(k, 0), 1, 2) : k;
    fg_tensor *v4 = s->varlen ? fg_transpose(fg_unsqueeze(v, 0), 1, 2) : v;
    fg_tensor **outs = calloc((size_t)(2 * s->n + 1), sizeof(fg_tensor *)), **lses = outs + s->n;
    int64_t m = 0; /* pieces: sequences with rows */
    bool ok = q4 && k4 && v4 && outs;
    for (int64_t b = 0; ok && b < s->n; b++) {
        if (s->cu_q[b + 1] == s->cu_q[b]) continue;
        outs[m] = math_seq(q4, k4, v4, c, s, b, lse_out ? &lses[m] : NULL);
        ok = outs[m] && (!lse_out || lses[m]);
        m++;
    }
    fg_tensor *out = NULL, *lse = NULL;
    if (ok && m > 0) {
        const int dim = s->varlen ? 2 : 0;
        out = fg_concat((int)m, outs, dim);
        if (s->varlen) out = fg_contiguous(fg_squeeze(fg_transpose(out, 1, 2), 0)); /* (total_q, Hq, D) */
        if (out && lse_out) {
            lse = fg_concat((int)m, lses, dim);
            if (s->varlen) lse = fg_squeeze(lse, 0); /* (Hq, total_q) */
            if (lse) lse = fg_contiguous(lse);
        }
    } else if (ok) { /* varlen with no rows at all */
        out = fg_zeros(FG_SHAPE(0, q->shape[1], q->shape[2]), q->dtype, q->device);
        if (lse_out) lse = fg_zeros(FG_SHAPE(q->shape[1], 0), fg__attn_lse_dtype(q), q->device);
    }
    free(outs);
    return scope_result(sc, out, lse, lse_out);
}
