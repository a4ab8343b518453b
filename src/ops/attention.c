/* fg_attention: argument checks, the backend choice, the flash autograd node
 * (CPU kernels in cpu/attention.c; saves q, k, v, out and the fp32 LSE, never
 * the probabilities) and the math backend composed of framework ops (the
 * reference: scores and probabilities materialised, autograd through the ops).
 * See include/flashgrad/attention.h for the semantics. */
#include <math.h>
#include <stdlib.h>
#include <flashgrad/attention.h>
#include "cpu/cpu_nn.h"

static const char *OP = "attention";

typedef struct {
    bool causal;
    double scale;
    fg_attn_backend backend;
} attn_cfg;

static bool check_args(fg_tensor *q, fg_tensor *k, fg_tensor *v, const fg_attention_opts *opts, attn_cfg *c)
{
    char s1[128], s2[128], s3[128];
    if (!q) return fg__err_null(OP, "q"), false;
    if (!k) return fg__err_null(OP, "k"), false;
    if (!v) return fg__err_null(OP, "v"), false;
    if (!fg__check_same(OP, q, k) || !fg__check_same(OP, q, v) || !fg__check_float(OP, q)) return false;
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4) {
        fg__err(FG_ERR_DIM, "%s: expects q (B, Hq, Lq, D), k and v (B, Hkv, Lk, D); got q %s, k %s, v %s", OP,
                fg_shape_str(q, s1, sizeof s1), fg_shape_str(k, s2, sizeof s2), fg_shape_str(v, s3, sizeof s3));
        return false;
    }
    bool same_kv = true;
    for (int d = 0; d < 4; d++) same_kv &= k->shape[d] == v->shape[d];
    if (!same_kv || k->shape[0] != q->shape[0] || k->shape[3] != q->shape[3] || k->shape[1] < 1 ||
        q->shape[1] % k->shape[1] != 0) {
        fg__err(FG_ERR_SHAPE,
                "%s: shapes do not fit: q %s, k %s, v %s (want q (B, Hq, Lq, D), k = v (B, Hkv, Lk, D), "
                "Hq a multiple of Hkv)",
                OP, fg_shape_str(q, s1, sizeof s1), fg_shape_str(k, s2, sizeof s2), fg_shape_str(v, s3, sizeof s3));
        return false;
    }
    fg_attention_opts o = opts ? *opts : (fg_attention_opts){0};
    if (!(o.dropout_p >= 0 && o.dropout_p < 1)) {
        fg__err(FG_ERR_INVALID, "%s: dropout_p = %g is outside [0, 1)", OP, o.dropout_p);
        return false;
    }
    if (o.dropout_p != 0) {
        fg__err(FG_ERR_UNSUPPORTED, "%s: dropout (p = %g) is not implemented yet; use dropout_p = 0", OP, o.dropout_p);
        return false;
    }
    if (!isfinite(o.scale)) {
        fg__err(FG_ERR_INVALID, "%s: scale = %g is not finite", OP, o.scale);
        return false;
    }
    if (o.backend != FG_ATTN_AUTO && o.backend != FG_ATTN_FLASH && o.backend != FG_ATTN_MATH) {
        fg__err(FG_ERR_INVALID, "%s: unknown backend %d", OP, (int)o.backend);
        return false;
    }
    c->causal = o.causal;
    c->scale = o.scale != 0 ? o.scale : 1.0 / sqrt((double)(q->shape[3] > 0 ? q->shape[3] : 1));
    c->backend = o.backend;
    if (c->backend == FG_ATTN_AUTO) c->backend = q->device == FG_CPU ? FG_ATTN_FLASH : FG_ATTN_MATH;
    if (c->backend == FG_ATTN_FLASH && q->device != FG_CPU) {
        fg__err(FG_ERR_UNSUPPORTED, "%s: the flash backend has no CUDA kernels yet (q %s on cuda); use "
                "FG_ATTN_MATH or FG_ATTN_AUTO", OP, fg_shape_str(q, s1, sizeof s1));
        return false;
    }
    return true;
}

/* LSE in fp32, or fp64 for f64 inputs (the precision of their reference). */
static fg_dtype lse_dtype(const fg_tensor *q) { return q->dtype == FG_F64 ? FG_F64 : FG_F32; }

/* ---- flash ---- */
/* saved: q, k, v, out, lse; f[0] scale, i[0] causal */
static fg_status flash_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *q = n->saved[0], *k = n->saved[1], *v = n->saved[2], *o = n->saved[3], *lse = n->saved[4];
    fg_tensor *dq = fg__new(OP, 4, q->shape, q->dtype, q->device);
    fg_tensor *dk = dq ? fg__new(OP, 4, k->shape, k->dtype, k->device) : NULL;
    fg_tensor *dv = dk ? fg__new(OP, 4, v->shape, v->dtype, v->device) : NULL;
    if (!dv) return fg_last_status();
    if (!fg_cpu_flash_bwd(q, k, v, o, lse, go[0], dq, dk, dv, n->f[0], n->i[0] != 0))
        return fg__err(FG_ERR_OOM, "%s backward: out of memory for the fp64 accumulators", OP);
    gi[0] = dq;
    gi[1] = dk;
    gi[2] = dv;
    return FG_OK;
}

static fg_tensor *flash_forward(fg_tensor *q, fg_tensor *k, fg_tensor *v, const attn_cfg *c, fg_tensor **lse_out)
{
    const int64_t *qs = q->shape;
    fg_tensor *out = fg__new(OP, 4, qs, q->dtype, q->device);
    fg_tensor *lse = out ? fg__new(OP, 3, qs, lse_dtype(q), q->device) : NULL; /* (B, Hq, Lq) */
    if (!lse) goto fail;
    if (!fg_cpu_flash_fwd(q, k, v, out, lse, c->scale, c->causal)) {
        fg__err(FG_ERR_OOM, "%s: out of memory for a tile accumulator", OP);
        goto fail;
    }
    fg_tensor *in[3] = {q, k, v};
    if (fg__any_requires_grad(3, in)) {
        fg_node *node = fg__record(OP, flash_backward, 3, in, 1, &out);
        if (!node) goto fail;
        node->f[0] = c->scale;
        node->i[0] = c->causal;
        if (fg__save(node, q) < 0 || fg__save(node, k) < 0 || fg__save(node, v) < 0 || fg__save(node, out) < 0 ||
            fg__save(node, lse) < 0) {
            fg__err(FG_ERR_OOM, "%s: out of memory saving tensors for backward", OP);
            goto fail;
        }
    }
    if (lse_out)
        *lse_out = lse;
    else
        fg_free(lse);
    return out;
fail:
    fg_free(lse);
    fg_free(out);
    return NULL;
}

/* ---- math ---- */
/* k or v (B, Hkv, L, D) repeated to (B, Hkv G, L, D): head h reads h / G. */
static fg_tensor *repeat_heads(fg_tensor *t, int64_t G)
{
    if (G == 1) return t;
    const int64_t B = t->shape[0], H = t->shape[1], L = t->shape[2], D = t->shape[3];
    fg_tensor *e = fg_expand(fg_unsqueeze(t, 2), FG_SHAPE(B, H, G, L, D));
    return fg_reshape(fg_contiguous(e), FG_SHAPE(B, H * G, L, D));
}

/* A (rows, cols) 0/1 mask in dtype dt on dev. */
static fg_tensor *mask_of(const double *m, int64_t rows, int64_t cols, fg_dtype dt, fg_device dev)
{
    fg_tensor *h = fg_from_f64(m, FG_SHAPE(rows, cols), dt, FG_CPU);
    return h && dev != FG_CPU ? fg_to(h, dev, dt) : h;
}

static fg_tensor *math_forward(fg_tensor *q, fg_tensor *k, fg_tensor *v, const attn_cfg *c, fg_tensor **lse_out)
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
            fg_tensor *mk = mask_of(m, Lq, Lk, S->dtype, S->device);
            full = any_full ? mask_of(fr, Lq, 1, S->dtype, S->device) : NULL;
            free(m);
            S = mk && (full || !any_full) ? fg_masked_fill(S, mk, -INFINITY) : NULL;
        }
    }
    fg_tensor *P = S ? fg_softmax(S, -1) : NULL;
    if (P && any_full) P = fg_masked_fill(P, full, 0.0);
    fg_tensor *out = P ? fg_matmul(P, vv) : NULL;
    fg_tensor *lse = NULL;
    if (out && lse_out) { /* log-sum-exp of the scores, without gradient */
        bool prev = fg_set_grad_enabled(false);
        fg_tensor *mx = fg_max(S, -1, true, NULL);
        fg_tensor *l = mx ? fg_add(fg_log(fg_sum(fg_exp(fg_sub(S, mx)), 1, (const int[]){-1}, false)),
                                   fg_squeeze(mx, -1))
                          : NULL;
        if (l && any_full) l = fg_masked_fill(l, fg_reshape(full, FG_SHAPE(Lq)), INFINITY);
        lse = l ? fg_to(l, l->device, lse_dtype(q)) : NULL;
        fg_set_grad_enabled(prev);
        if (!lse) out = NULL;
    }
    if (out) out = fg_keep(out);
    if (lse) lse = fg_keep(lse);
    fg_scope_end(sc);
    /* back into the caller's scope, as if made there */
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

fg_tensor *fg_attention_lse(fg_tensor *q, fg_tensor *k, fg_tensor *v, const fg_attention_opts *opts, fg_tensor **lse)
{
    attn_cfg c;
    if (lse) *lse = NULL;
    if (!check_args(q, k, v, opts, &c)) return NULL;
    /* Degenerate sizes (no keys, no rows, D = 0) take the flash rules on the CPU. */
    bool empty = k->shape[2] == 0 || q->shape[2] == 0 || q->shape[3] == 0 || q->shape[0] == 0;
    if (c.backend == FG_ATTN_FLASH || (empty && q->device == FG_CPU)) return flash_forward(q, k, v, &c, lse);
    return math_forward(q, k, v, &c, lse);
}

fg_tensor *fg_attention(fg_tensor *q, fg_tensor *k, fg_tensor *v, const fg_attention_opts *opts)
{
    return fg_attention_lse(q, k, v, opts, NULL);
}
