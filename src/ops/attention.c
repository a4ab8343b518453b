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
    bool causal, deterministic;
    double scale, dropout_p;
    fg_attn_backend backend;
    fg_generator *gen;
    fg_attn_drop drop; /* threshold 0: no dropout; drawn by the forward */
} attn_cfg;

/* dtypes and head dims the CUDA flash kernels take. */
static bool cuda_flash_fits(const fg_tensor *q)
{
    return q->dtype != FG_F64 && q->shape[3] >= 1 && q->shape[3] <= 256;
}

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
    if (!isfinite(o.scale)) {
        fg__err(FG_ERR_INVALID, "%s: scale = %g is not finite", OP, o.scale);
        return false;
    }
    if (o.backend != FG_ATTN_AUTO && o.backend != FG_ATTN_FLASH && o.backend != FG_ATTN_MATH) {
        fg__err(FG_ERR_INVALID, "%s: unknown backend %d", OP, (int)o.backend);
        return false;
    }
    c->causal = o.causal;
    c->deterministic = o.deterministic;
    c->scale = o.scale != 0 ? o.scale : 1.0 / sqrt((double)(q->shape[3] > 0 ? q->shape[3] : 1));
    c->dropout_p = o.dropout_p;
    c->gen = o.generator ? o.generator : fg_default_generator();
    c->drop = (fg_attn_drop){0};
    c->backend = o.backend;
    if (c->backend == FG_ATTN_AUTO)
        c->backend = q->device == FG_CPU || cuda_flash_fits(q) ? FG_ATTN_FLASH : FG_ATTN_MATH;
    if (c->backend == FG_ATTN_FLASH && q->device == FG_CUDA && !cuda_flash_fits(q)) {
        fg__err(FG_ERR_UNSUPPORTED, "%s: the CUDA flash kernels take f32, bf16 or f16 with head dim 1..256; got q %s %s "
                "(use FG_ATTN_MATH or FG_ATTN_AUTO)", OP, fg_dtype_name(q->dtype), fg_shape_str(q, s1, sizeof s1));
        return false;
    }
    if (q->device == FG_CUDA && c->backend == FG_ATTN_FLASH &&
        (q->shape[2] > 65535 * 64 || k->shape[2] > 65535 * 64 || q->shape[0] * q->shape[1] > INT32_MAX)) {
        fg__err(FG_ERR_UNSUPPORTED, "%s: sizes beyond the CUDA kernels' grid: q %s, k %s (at most 4194240 rows)", OP,
                fg_shape_str(q, s1, sizeof s1), fg_shape_str(k, s2, sizeof s2));
        return false;
    }
    return true;
}

/* LSE in fp32, or fp64 for f64 inputs (the precision of their reference). */
static fg_dtype lse_dtype(const fg_tensor *q) { return q->dtype == FG_F64 ? FG_F64 : FG_F32; }

/* ---- flash ---- */
/* The CUDA kernels' view of (q, k, v, o): d contiguous, batch/head/row strides. */
static void set_strides(int64_t s[3], const fg_tensor *t) { s[0] = t->stride[0], s[1] = t->stride[1], s[2] = t->stride[2]; }

static bool aligned16(const fg_tensor *t)
{
    const size_t es = fg_dtype_size(t->dtype);
    if ((uintptr_t)fg__data(t) % 16) return false;
    for (int d = 0; d < 3; d++)
        if (t->shape[d] > 1 && (size_t)t->stride[d] * es % 16) return false;
    return true;
}

static fg_k_attn kernel_args(const fg_tensor *q, const fg_tensor *k, const fg_tensor *v, const fg_tensor *o,
                             double scale, bool causal, const fg_attn_drop *drop)
{
    fg_k_attn p = {0};
    p.q = fg__data(q), p.k = fg__data(k), p.v = fg__data(v), p.o = fg__data(o);
    set_strides(p.q_s, q), set_strides(p.k_s, k), set_strides(p.v_s, v), set_strides(p.o_s, o);
    p.B = (int)q->shape[0], p.Hq = (int)q->shape[1], p.Lq = (int)q->shape[2], p.D = (int)q->shape[3];
    p.Hkv = (int)k->shape[1], p.Lk = (int)k->shape[2];
    p.scale = (float)scale;
    p.causal = causal;
    p.drop_threshold = drop->threshold;
    p.drop_scale = (float)drop->scale;
    p.seed = drop->seed, p.rng_offset = drop->offset;
    p.vec = aligned16(q) && aligned16(k) && aligned16(v) && aligned16(o);
    return p;
}

/* A view whose last dim is contiguous (the kernels' requirement), or a contiguous copy. */
static fg_tensor *d_contig(fg_tensor *t)
{
    if (t->stride[3] == 1 || t->shape[3] <= 1) return fg_retain(t);
    return fg__contig(t);
}

/* saved: q, k, v, out, lse (q, k, v with a contiguous last dim); f[0] scale,
 * f[1] dropout scale; i[0] causal, i[1] seed, i[2] RNG offset, i[3] dropout
 * threshold, i[4] deterministic */
static fg_status flash_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *q = n->saved[0], *k = n->saved[1], *v = n->saved[2], *o = n->saved[3], *lse = n->saved[4];
    const fg_attn_drop drop = {(uint64_t)n->i[1], (uint64_t)n->i[2], (uint32_t)n->i[3], n->f[1]};
    fg_tensor *dq = fg__new(OP, 4, q->shape, q->dtype, q->device);
    fg_tensor *dk = dq ? fg__new(OP, 4, k->shape, k->dtype, k->device) : NULL;
    fg_tensor *dv = dk ? fg__new(OP, 4, v->shape, v->dtype, v->device) : NULL;
    if (!dv) goto fail;
    if (q->device == FG_CPU) {
        if (!fg_cpu_flash_bwd(q, k, v, o, lse, go[0], dq, dk, dv, n->f[0], n->i[0] != 0, &drop)) {
            fg__err(FG_ERR_OOM, "%s backward: out of memory for the fp64 accumulators", OP);
            goto fail;
        }
    } else if (q->numel == 0 || k->numel == 0) { /* nothing to launch: zero gradients */
        if (fg__cuda_fill(fg__data(dq), dq->dtype, dq->numel, 0) != FG_OK ||
            fg__cuda_fill(fg__data(dk), dk->dtype, dk->numel, 0) != FG_OK ||
            fg__cuda_fill(fg__data(dv), dv->dtype, dv->numel, 0) != FG_OK)
            goto fail;
    } else {
        fg_tensor *g = d_contig(go[0]);
        if (!g) goto fail;
        fg_k_attn p = kernel_args(q, k, v, o, n->f[0], n->i[0] != 0, &drop);
        p.dout = fg__data(g), p.dq = fg__data(dq), p.dk = fg__data(dk), p.dv = fg__data(dv);
        p.lse = fg__data(lse);
        set_strides(p.do_s, g), set_strides(p.dq_s, dq), set_strides(p.dk_s, dk), set_strides(p.dv_s, dv);
        p.vec = p.vec && aligned16(g) && aligned16(dq) && aligned16(dk);
        const int det = n->i[4] != 0;
#ifdef FG_HAVE_CUDA
        const size_t bytes = fg_k_flash_bwd_scratch(&p, det);
#else
        const size_t bytes = 0; /* unreachable: no CUDA tensor exists in this build */
#endif
        void *scratch = NULL;
        fg_status st = fg__cuda_malloc(&scratch, bytes);
        if (st == FG_OK) st = FG_CUDA_CALL(OP, fg_k_flash_bwd(&p, (int)q->dtype, det, scratch, bytes, fg__cuda_stream()));
        if (scratch) fg__cuda_free(scratch, bytes);
        fg__unref(g);
        if (st != FG_OK) goto fail;
    }
    gi[0] = dq;
    gi[1] = dk;
    gi[2] = dv;
    return FG_OK;
fail:
    fg_free(dq);
    fg_free(dk);
    fg_free(dv);
    return fg_last_status();
}

static fg_status flash_run(fg_tensor *q, fg_tensor *k, fg_tensor *v, fg_tensor *out, fg_tensor *lse, const attn_cfg *c)
{
    if (q->device == FG_CPU) {
        if (!fg_cpu_flash_fwd(q, k, v, out, lse, c->scale, c->causal, &c->drop))
            return fg__err(FG_ERR_OOM, "%s: out of memory for a tile accumulator", OP);
        return FG_OK;
    }
    fg_k_attn p = kernel_args(q, k, v, out, c->scale, c->causal, &c->drop);
    p.lse = fg__data(lse);
    return FG_CUDA_CALL(OP, fg_k_flash_fwd(&p, (int)q->dtype, fg__cuda_stream()));
}

/* Draws the dropout stream of one call: (seed, offset) from the generator. */
static void draw_dropout(attn_cfg *c)
{
    const double t = floor(c->dropout_p * 4294967296.0);
    if (c->dropout_p == 0 || t < 1) return; /* p below 2^-32 drops nothing */
    c->drop.threshold = (uint32_t)t;
    c->drop.scale = 1.0 / (1.0 - c->dropout_p);
    c->drop.seed = fg_generator_seed(c->gen);
    c->drop.offset = fg_generator_advance(c->gen, 4);
}

static fg_tensor *flash_forward(fg_tensor *q0, fg_tensor *k0, fg_tensor *v0, attn_cfg *c, fg_tensor **lse_out)
{
    const int64_t *qs = q0->shape;
    fg_tensor *q = q0, *k = k0, *v = v0, *out = NULL, *lse = NULL;
    if (q0->device == FG_CUDA) { /* the kernels want the head dim contiguous */
        q = d_contig(q0), k = q ? d_contig(k0) : NULL, v = k ? d_contig(v0) : NULL;
        if (!v) goto fail;
    }
    out = fg__new(OP, 4, qs, q->dtype, q->device);
    lse = out ? fg__new(OP, 3, qs, lse_dtype(q), q->device) : NULL; /* (B, Hq, Lq) */
    if (!lse) goto fail;
    draw_dropout(c);
    if (flash_run(q, k, v, out, lse, c) != FG_OK) goto fail;
    fg_tensor *in[3] = {q0, k0, v0};
    if (fg__any_requires_grad(3, in)) {
        fg_node *node = fg__record(OP, flash_backward, 3, in, 1, &out);
        if (!node) goto fail;
        node->f[0] = c->scale;
        node->f[1] = c->drop.scale;
        node->i[0] = c->causal;
        node->i[1] = (int64_t)c->drop.seed;
        node->i[2] = (int64_t)c->drop.offset;
        node->i[3] = c->drop.threshold;
        node->i[4] = c->deterministic;
        if (fg__save(node, q) < 0 || fg__save(node, k) < 0 || fg__save(node, v) < 0 || fg__save(node, out) < 0 ||
            fg__save(node, lse) < 0) {
            fg__err(FG_ERR_OOM, "%s: out of memory saving tensors for backward", OP);
            goto fail;
        }
    }
    if (q0->device == FG_CUDA) fg__unref(q), fg__unref(k), fg__unref(v);
    if (lse_out)
        *lse_out = lse;
    else
        fg_free(lse);
    return out;
fail:
    if (q0->device == FG_CUDA) fg__unref(q), fg__unref(k), fg__unref(v); /* NULLs allowed */
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

/* Host values m (row-major, of the given shape) as a tensor of dtype dt on dev: the masks and dropout factors. */
static fg_tensor *mask_of(const double *m, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev)
{
    fg_tensor *h = fg_from_f64(m, ndim, shape, dt, FG_CPU);
    return h && dev != FG_CPU ? fg_to(h, dev, dt) : h;
}

/* The dropout factors (B, Hq, Lq, Lk) of the flash kernels, materialised. */
static fg_tensor *dropout_factors(const fg_tensor *q, int64_t Lk, const fg_attn_drop *d, fg_dtype dt)
{
    const int64_t BH = q->shape[0] * q->shape[1], Lq = q->shape[2];
    double *m = malloc(sizeof(double) * (size_t)(BH * Lq * Lk + 1));
    if (!m) {
        fg__err(FG_ERR_OOM, "%s: out of memory for the dropout mask (math backend)", OP);
        return NULL;
    }
    for (int64_t bh = 0; bh < BH; bh++)
        for (int64_t i = 0; i < Lq; i++)
            for (int64_t j = 0; j < Lk; j++) m[(bh * Lq + i) * Lk + j] = fg_attn_drop_factor(d, bh, i, j);
    fg_tensor *h = mask_of(m, FG_SHAPE(q->shape[0], q->shape[1], Lq, Lk), dt, q->device);
    free(m);
    return h;
}

static fg_tensor *math_forward(fg_tensor *q, fg_tensor *k, fg_tensor *v, attn_cfg *c, fg_tensor **lse_out)
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
    draw_dropout(c);
    if (P && c->drop.threshold) P = fg_mul(P, dropout_factors(q, Lk, &c->drop, P->dtype));
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
    if (c.backend == FG_ATTN_FLASH || (empty && (q->device == FG_CPU || cuda_flash_fits(q))))
        return flash_forward(q, k, v, &c, lse);
    return math_forward(q, k, v, &c, lse);
}

fg_tensor *fg_attention(fg_tensor *q, fg_tensor *k, fg_tensor *v, const fg_attention_opts *opts)
{
    return fg_attention_lse(q, k, v, opts, NULL);
}
