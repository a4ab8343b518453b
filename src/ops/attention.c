/* fg_attention: argument and sequence checks, the backend choice and the
 * flash autograd node (CPU in cpu/attention.c, CUDA in kernels/attention_*.cu;
 * saves q, k, v, out and the fp32 LSE, never the probabilities), and the flash
 * forward / backward runs on (B, H, L, D) views shared with the raw-pointer
 * API (ops/attention_raw.c). The math backend is ops/attention_math.c. See
 * include/flashgrad/attention.h for the semantics. */
#include <math.h>
#include <stdlib.h>
#include "ops/attention_impl.h"

static const char *OP = "attention";
enum { MAX_ROWS = FG_ATTN_MAX_ROWS };

/* dtypes and head dims the CUDA flash kernels take. */
static bool cuda_flash_fits(const fg_tensor *q)
{
    const int64_t D = q->shape[q->ndim - 1];
    return q->dtype != FG_F64 && D >= 1 && D <= 256;
}

static bool check_args(fg_tensor *q, fg_tensor *k, fg_tensor *v, const fg_attention_opts *o, attn_cfg *c)
{
    char s1[128], s2[128], s3[128];
    if (!q) return fg__err_null(OP, "q"), false;
    if (!k) return fg__err_null(OP, "k"), false;
    if (!v) return fg__err_null(OP, "v"), false;
    if (!fg__check_same(OP, q, k) || !fg__check_same(OP, q, v) || !fg__check_float(OP, q)) return false;
    const bool packed = o->cu_seqlens_q || o->cu_seqlens_k;
    const int nd = packed ? 3 : 4;
    if (q->ndim != nd || k->ndim != nd || v->ndim != nd) {
        fg__err(FG_ERR_DIM,
                packed ? "%s: varlen (cu_seqlens set) expects packed q (total_q, Hq, D), k and v (total_k, Hkv, D); "
                         "got q %s, k %s, v %s"
                       : "%s: expects q (B, Hq, Lq, D), k and v (B, Hkv, Lk, D); got q %s, k %s, v %s",
                OP, fg_shape_str(q, s1, sizeof s1), fg_shape_str(k, s2, sizeof s2), fg_shape_str(v, s3, sizeof s3));
        return false;
    }
    bool same_kv = true;
    for (int d = 0; d < nd; d++) same_kv &= k->shape[d] == v->shape[d];
    if (!same_kv || (!packed && k->shape[0] != q->shape[0]) || k->shape[nd - 1] != q->shape[nd - 1] ||
        k->shape[1] < 1 || q->shape[1] % k->shape[1] != 0) {
        fg__err(FG_ERR_SHAPE,
                packed ? "%s: shapes do not fit: q %s, k %s, v %s (want q (total_q, Hq, D), k = v (total_k, Hkv, D), "
                         "Hq a multiple of Hkv)"
                       : "%s: shapes do not fit: q %s, k %s, v %s (want q (B, Hq, Lq, D), k = v (B, Hkv, Lk, D), "
                         "Hq a multiple of Hkv)",
                OP, fg_shape_str(q, s1, sizeof s1), fg_shape_str(k, s2, sizeof s2), fg_shape_str(v, s3, sizeof s3));
        return false;
    }
    if (!(o->dropout_p >= 0 && o->dropout_p < 1)) {
        fg__err(FG_ERR_INVALID, "%s: dropout_p = %g is outside [0, 1)", OP, o->dropout_p);
        return false;
    }
    if (!isfinite(o->scale)) {
        fg__err(FG_ERR_INVALID, "%s: scale = %g is not finite", OP, o->scale);
        return false;
    }
    if (o->backend != FG_ATTN_AUTO && o->backend != FG_ATTN_FLASH && o->backend != FG_ATTN_MATH) {
        fg__err(FG_ERR_INVALID, "%s: unknown backend %d", OP, (int)o->backend);
        return false;
    }
    const int64_t D = q->shape[nd - 1];
    *c = (attn_cfg){0};
    c->causal = o->causal;
    c->deterministic = o->deterministic;
    c->scale = o->scale != 0 ? o->scale : 1.0 / sqrt((double)(D > 0 ? D : 1));
    c->dropout_p = o->dropout_p;
    c->gen = o->generator ? o->generator : fg_default_generator();
    c->backend = o->backend;
    if (c->backend == FG_ATTN_AUTO)
        c->backend = q->device == FG_CPU || cuda_flash_fits(q) ? FG_ATTN_FLASH : FG_ATTN_MATH;
    if (c->backend == FG_ATTN_FLASH && q->device == FG_CUDA && !cuda_flash_fits(q)) {
        fg__err(FG_ERR_UNSUPPORTED, "%s: the CUDA flash kernels take f32, bf16 or f16 with head dim 1..256; got q %s %s "
                "(use FG_ATTN_MATH or FG_ATTN_AUTO)", OP, fg_dtype_name(q->dtype), fg_shape_str(q, s1, sizeof s1));
        return false;
    }
    return true;
}

/* ---- sequences (varlen, key padding) ---- */
void fg__attn_seqs_free(attn_seqs *s)
{
    free(s->cu_q); /* one block holds the three arrays */
    *s = (attn_seqs){0};
}

bool fg__attn_seqs_alloc(const char *op, attn_seqs *s, int64_t n)
{
    s->n = n;
    s->cu_q = malloc(sizeof(int64_t) * (size_t)(3 * n + 2));
    if (!s->cu_q) return fg__err(FG_ERR_OOM, "%s: out of memory for %lld sequence lengths", op, (long long)n), false;
    s->cu_k = s->cu_q + n + 1;
    s->k_len = s->padded ? s->cu_k + n + 1 : NULL;
    return true;
}

/* The n entries of a 1-d i32/i64 tensor t (any device) into out. */
static bool read_lengths(fg_tensor *t, const char *name, int64_t n, int64_t *out)
{
    char b[128];
    if ((t->dtype != FG_I32 && t->dtype != FG_I64) || t->ndim != 1 || t->shape[0] != n) {
        fg__err(FG_ERR_SHAPE, "%s: %s must be a 1-d i32 or i64 tensor of %lld entries; got %s %s", OP, name,
                (long long)n, fg_dtype_name(t->dtype), fg_shape_str(t, b, sizeof b));
        return false;
    }
    fg_tensor *x = t->device == FG_CPU ? NULL : fg_to(t, FG_CPU, FG_I64);
    fg_tensor *h = t->device == FG_CPU ? fg__contig(t) : x ? fg__contig(x) : NULL;
    fg_free(x);
    if (!h) return false;
    for (int64_t i = 0; i < n; i++) out[i] = fg__ld_index(fg__data(h), h->dtype, i);
    fg__unref(h);
    return true;
}

/* cu (n + 1 offsets) must run from 0 to total without decreasing; total_what
 * names the total in the message ("the packed tensor has"). */
static bool check_offsets(const char *op, const char *name, const int64_t *cu, int64_t n, int64_t total,
                          const char *total_what)
{
    if (cu[0] != 0) return fg__err(FG_ERR_INVALID, "%s: %s[0] = %lld; offsets start at 0", op, name, (long long)cu[0]), false;
    for (int64_t b = 0; b < n; b++)
        if (cu[b + 1] < cu[b]) {
            fg__err(FG_ERR_INVALID, "%s: %s[%lld] = %lld is below %s[%lld] = %lld (offsets never decrease)", op, name,
                    (long long)(b + 1), (long long)cu[b + 1], name, (long long)b, (long long)cu[b]);
            return false;
        }
    if (cu[n] != total) {
        fg__err(FG_ERR_INVALID, "%s: %s[%lld] = %lld but %s %lld rows", op, name, (long long)n, (long long)cu[n],
                total_what, (long long)total);
        return false;
    }
    return true;
}

bool fg__attn_check_seqs(const char *op, attn_seqs *s, int64_t total_q, int64_t total_k, const char *const total_what[2])
{
    const int64_t n = s->n;
    if (s->varlen) {
        if (!check_offsets(op, "cu_seqlens_q", s->cu_q, n, total_q, total_what[0]) ||
            !check_offsets(op, "cu_seqlens_k", s->cu_k, n, total_k, total_what[1]))
            return false;
        if (total_q > INT32_MAX || total_k > INT32_MAX) {
            fg__err(FG_ERR_UNSUPPORTED, "%s: varlen totals beyond 2^31 - 1 rows (q %lld, k %lld)", op,
                    (long long)total_q, (long long)total_k);
            return false;
        }
    }
    if (s->padded)
        for (int64_t b = 0; b < n; b++) {
            const int64_t nk = s->cu_k[b + 1] - s->cu_k[b];
            if (s->k_len[b] < 0 || s->k_len[b] > nk) {
                fg__err(FG_ERR_INVALID, "%s: key_lengths[%lld] = %lld is outside [0, %lld], the keys of sequence %lld",
                        op, (long long)b, (long long)s->k_len[b], (long long)nk, (long long)b);
                return false;
            }
        }
    s->max_q = s->max_k = 0;
    for (int64_t b = 0; b < n; b++) {
        const int64_t lq = s->cu_q[b + 1] - s->cu_q[b], nk = s->cu_k[b + 1] - s->cu_k[b];
        if (lq > s->max_q) s->max_q = lq;
        if (nk > s->max_k) s->max_k = nk;
    }
    return true;
}

static bool parse_seqs(fg_tensor *q, fg_tensor *k, const fg_attention_opts *o, attn_seqs *s)
{
    *s = (attn_seqs){0};
    s->varlen = o->cu_seqlens_q || o->cu_seqlens_k;
    s->padded = o->key_lengths != NULL;
    if (!s->varlen && !s->padded) return true;
    if (s->varlen && (!o->cu_seqlens_q || !o->cu_seqlens_k)) {
        fg__err(FG_ERR_INVALID, "%s: varlen needs both cu_seqlens_q and cu_seqlens_k; %s is NULL", OP,
                o->cu_seqlens_q ? "cu_seqlens_k" : "cu_seqlens_q");
        return false;
    }
    const fg_tensor *cq = o->cu_seqlens_q;
    const int64_t n = s->varlen ? (cq->ndim == 1 ? cq->shape[0] : 0) - 1 : q->shape[0];
    if (n < 0) {
        char b[128];
        fg__err(FG_ERR_SHAPE, "%s: cu_seqlens_q must be 1-d with B + 1 >= 1 entries; got %s", OP, fg_shape_str(cq, b, sizeof b));
        return false;
    }
    if (!fg__attn_seqs_alloc(OP, s, n)) return false;
    if (s->varlen) {
        if (!read_lengths(o->cu_seqlens_q, "cu_seqlens_q", n + 1, s->cu_q) ||
            !read_lengths(o->cu_seqlens_k, "cu_seqlens_k", n + 1, s->cu_k))
            goto fail;
    } else { /* dense: the offsets only give the lengths */
        for (int64_t b = 0; b <= n; b++) s->cu_q[b] = b * q->shape[2], s->cu_k[b] = b * k->shape[2];
    }
    if (s->padded && !read_lengths(o->key_lengths, "key_lengths", n, s->k_len)) goto fail;
    static const char *const totals[2] = {"the packed tensor has", "the packed tensor has"};
    if (!fg__attn_check_seqs(OP, s, q->shape[0], k->shape[0], totals)) goto fail;
    if ((o->max_seqlen_q > 0 && o->max_seqlen_q < s->max_q) || (o->max_seqlen_k > 0 && o->max_seqlen_k < s->max_k)) {
        fg__err(FG_ERR_INVALID, "%s: max_seqlen_q = %lld / max_seqlen_k = %lld, but sequences reach %lld / %lld", OP,
                (long long)o->max_seqlen_q, (long long)o->max_seqlen_k, (long long)s->max_q, (long long)s->max_k);
        goto fail;
    }
    return true;
fail:
    fg__attn_seqs_free(s);
    return false;
}

/* The sequence table of a call: an i32 tensor on the data's device holding
 * cu_q and cu_k (n + 1 each) when varlen, then k_len (n) when padded. */
static fg_tensor *seq_tensor(const attn_seqs *s, fg_device dev)
{
    const int64_t len = (s->varlen ? 2 * (s->n + 1) : 0) + (s->padded ? s->n : 0);
    int32_t *h = malloc(sizeof(int32_t) * (size_t)(len + 1));
    if (!h) return fg__err(FG_ERR_OOM, "%s: out of memory for the sequence table", OP), NULL;
    int64_t x = 0;
    if (s->varlen)
        for (int64_t b = 0; b < 2 * (s->n + 1); b++) h[x++] = (int32_t)s->cu_q[b]; /* cu_k follows cu_q */
    if (s->padded)
        for (int64_t b = 0; b < s->n; b++) h[x++] = (int32_t)s->k_len[b];
    fg_tensor *t = fg__new(OP, 1, &len, FG_I32, dev);
    if (t && dev == FG_CPU) memcpy(fg__data(t), h, sizeof(int32_t) * (size_t)len);
    if (t && dev == FG_CUDA && fg__cuda_memcpy_h2d(fg__data(t), h, sizeof(int32_t) * (size_t)len) != FG_OK) {
        fg_free(t);
        t = NULL;
    }
    free(h);
    return t;
}

/* The kernels' view of the sequences in table t (seq_tensor; NULL when dense without padding). */
static attn_seq_arg seq_arg_of(bool varlen, bool padded, int64_t n, int64_t max_q, int64_t max_k, const fg_tensor *t)
{
    const int32_t *p = t ? (const int32_t *)fg__data(t) : NULL;
    attn_seq_arg a = {varlen, padded, n, max_q, max_k, NULL, NULL, NULL};
    if (varlen) a.cu_q = p, a.cu_k = p + n + 1;
    if (padded) a.k_len = p + (varlen ? 2 * (n + 1) : 0);
    return a;
}

static fg_attn_seqs cpu_seqs(const attn_seq_arg *a)
{
    fg_attn_seqs r = {a->n, a->cu_q, a->cu_k, a->k_len};
    return r;
}

/* The (B, H, L, D) view the kernels take of a tensor: itself, or of a packed
 * (total, H, D) one the batch of one (1, H, total, D). No autograd. */
static fg_tensor *view4(const fg_tensor *t, bool packed)
{
    if (!packed) return fg__view(t, 4, t->shape, t->stride, t->offset);
    const int64_t sh[4] = {1, t->shape[1], t->shape[0], t->shape[2]}, st[4] = {0, t->stride[1], t->stride[0], t->stride[2]};
    return fg__view(t, 4, sh, st, t->offset);
}

/* ---- flash ---- */
/* The CUDA kernels' view of (q, k, v, o): d contiguous, batch/head/row strides. */
static void set_strides(int64_t s[3], const fg_tensor *t) { s[0] = t->stride[0], s[1] = t->stride[1], s[2] = t->stride[2]; }

/* The kernels' 16-byte copies: element 0 16-byte aligned and every stride of
 * a dim that is stepped (size > 1) a multiple of 16 bytes. */
static bool aligned16(const fg_tensor *t)
{
    const size_t es = fg_dtype_size(t->dtype);
    if ((uintptr_t)fg__data(t) % 16) return false;
    for (int d = 0; d < 3; d++)
        if (t->shape[d] > 1 && (size_t)t->stride[d] * es % 16) return false;
    return true;
}

/* q, k, v, o are the (B, H, L, D) views. */
static fg_k_attn kernel_args(const fg_tensor *q, const fg_tensor *k, const fg_tensor *v, const fg_tensor *o,
                             const attn_cfg *c, const attn_seq_arg *sa)
{
    fg_k_attn p = {0};
    p.q = fg__data(q), p.k = fg__data(k), p.v = fg__data(v), p.o = fg__data(o);
    set_strides(p.q_s, q), set_strides(p.k_s, k), set_strides(p.v_s, v), set_strides(p.o_s, o);
    p.B = (int)q->shape[0], p.Hq = (int)q->shape[1], p.Lq = (int)q->shape[2], p.D = (int)q->shape[3];
    p.Hkv = (int)k->shape[1], p.Lk = (int)k->shape[2];
    p.lse_s[0] = q->shape[1] * q->shape[2], p.lse_s[1] = q->shape[2]; /* (B, Hq, L): (Hq, total) when packed */
    p.lse_n = q->shape[0] * q->shape[1] * q->shape[2];
    if (sa->varlen || sa->padded) {
        p.B = (int)sa->n, p.Lq = (int)sa->max_q, p.Lk = (int)sa->max_k;
        if (sa->varlen) p.lse_s[0] = 0;
        p.cu_q = sa->cu_q, p.cu_k = sa->cu_k, p.k_len = sa->k_len;
    }
    p.scale = (float)c->scale;
    p.causal = c->causal;
    p.drop_threshold = c->drop.threshold;
    p.drop_scale = (float)c->drop.scale;
    p.seed = c->drop.seed, p.rng_offset = c->drop.offset;
    p.vec = aligned16(q) && aligned16(k) && aligned16(v) && aligned16(o);
    return p;
}

/* Backward arguments: w = q k v o dO dq dk dv views, lse may be NULL (sizing only). */
static fg_k_attn kernel_args_bwd(fg_tensor *const *w, const fg_tensor *lse, const attn_cfg *c, const attn_seq_arg *sa)
{
    fg_k_attn p = kernel_args(w[0], w[1], w[2], w[3], c, sa);
    p.dout = fg__data(w[4]), p.dq = fg__data(w[5]), p.dk = fg__data(w[6]), p.dv = fg__data(w[7]);
    p.lse = lse ? fg__data(lse) : NULL;
    set_strides(p.do_s, w[4]), set_strides(p.dq_s, w[5]), set_strides(p.dk_s, w[6]), set_strides(p.dv_s, w[7]);
    p.vec = p.vec && aligned16(w[4]) && aligned16(w[5]) && aligned16(w[6]) && aligned16(w[7]);
    return p;
}

/* Device scratch of the CUDA backward: the kernels' (fg_k_flash_bwd_scratch),
 * and at least one element (the zero the empty case copies from). */
static size_t bwd_scratch(const fg_k_attn *p, bool det)
{
#ifdef FG_HAVE_CUDA
    const size_t b = fg_k_flash_bwd_scratch(p, det);
#else
    const size_t b = 0; /* no CUDA data exists in this build */
    (void)p, (void)det;
#endif
    return b < 16 ? 16 : b;
}

size_t fg__attn_flash_bwd_scratch(fg_tensor *const *w, const attn_cfg *c, const attn_seq_arg *sa)
{
    if (w[0]->device == FG_CPU) return 0;
    const fg_k_attn p = kernel_args_bwd(w, NULL, c, sa);
    return bwd_scratch(&p, c->deterministic);
}

/* t = 0 through its strides on `stream`, copying the element at zero. */
static fg_status zero_fill(const char *op, const fg_tensor *t, const void *zero, void *stream)
{
    static const int64_t z[FG_MAX_DIMS] = {0};
    (void)z, (void)zero;
    if (t->numel == 0) return FG_OK;
    return FG_CUDA_CALL(op, fg_k_copy_strided(fg__data(t), (int)t->dtype, t->stride, zero, (int)t->dtype, z, t->ndim,
                                              t->shape, t->numel, stream));
}

fg_status fg__attn_flash_bwd(const char *op, fg_tensor *const *w, const fg_tensor *lse, const attn_cfg *c,
                             const attn_seq_arg *sa, void *stream, void *workspace, size_t workspace_bytes)
{
    if (w[0]->device == FG_CPU) {
        const fg_attn_seqs cs = cpu_seqs(sa);
        if (!fg_cpu_flash_bwd(w[0], w[1], w[2], w[3], lse, w[4], w[5], w[6], w[7], c->scale, c->causal, &c->drop, &cs))
            return fg__err(FG_ERR_OOM, "%s backward: out of memory for the fp64 accumulators", op);
        return FG_OK;
    }
    const fg_k_attn p = kernel_args_bwd(w, lse, c, sa);
    const size_t bytes = bwd_scratch(&p, c->deterministic);
    /* No rows or no keys: the kernels launch nothing and the gradients are zeros. */
    const bool empty = p.B == 0 || p.Hq == 0 || p.Lq == 0 || p.Lk == 0;
    /* Scratch from the caching allocator is ordered on the framework's stream:
     * a caller's stream joins it around the use. */
    void *fw = fg__cuda_stream(), *scratch = workspace;
    const bool own = workspace == NULL, foreign = stream != fw;
    if (!own && workspace_bytes < bytes)
        return fg__err(FG_ERR_INVALID, "%s backward: the workspace holds %zu bytes, %zu needed", op, workspace_bytes, bytes);
    fg_status st = own ? fg__cuda_malloc(&scratch, bytes) : FG_OK;
    if (st == FG_OK && own && foreign) st = fg__cuda_stream_wait(stream, fw);
    if (st == FG_OK && empty) {
        st = FG_CUDA_CALL(op, fg_k_fill(scratch, (int)w[5]->dtype, 1, 0.0, stream));
        for (int i = 5; i < 8 && st == FG_OK; i++) st = zero_fill(op, w[i], scratch, stream);
    } else if (st == FG_OK) {
        st = FG_CUDA_CALL(op, fg_k_flash_bwd(&p, (int)w[0]->dtype, c->deterministic, scratch, bytes, stream));
    }
    if (own && scratch) {
        if (foreign && fg__cuda_stream_wait(fw, stream) != FG_OK) fg__cuda_stream_sync(stream); /* before reuse */
        fg__cuda_free(scratch, bytes);
    }
    return st;
}

fg_status fg__attn_flash_fwd(const char *op, fg_tensor *const *w, fg_tensor *lse, const attn_cfg *c,
                             const attn_seq_arg *sa, void *stream)
{
    if (w[0]->device == FG_CPU) {
        const fg_attn_seqs cs = cpu_seqs(sa);
        if (!fg_cpu_flash_fwd(w[0], w[1], w[2], w[3], lse, c->scale, c->causal, &c->drop, &cs))
            return fg__err(FG_ERR_OOM, "%s: out of memory for a tile accumulator", op);
        return FG_OK;
    }
    fg_k_attn p = kernel_args(w[0], w[1], w[2], w[3], c, sa);
    p.lse = fg__data(lse);
    (void)p; /* unused without CUDA */
    return FG_CUDA_CALL(op, fg_k_flash_fwd(&p, (int)w[0]->dtype, stream));
}

/* A view whose last dim is contiguous (the kernels' requirement), or a contiguous copy. */
static fg_tensor *d_contig(fg_tensor *t)
{
    const int d = t->ndim - 1;
    if (t->stride[d] == 1 || t->shape[d] <= 1) return fg_retain(t);
    return fg__contig(t);
}

/* An output or gradient laid out like the input it belongs to: for q / k / v
 * that are (B, H, L, D) views of a (B, L, H D) projection, the out and the
 * gradients are (B, L, H, D) in memory, so merging heads after the forward and
 * the projection's gradient before it are views, not copies. Contiguous when
 * that layout would not keep the head dim contiguous (e.g. an expanded input). */
static fg_tensor *like_input(const fg_tensor *t)
{
    fg_tensor *r = fg__new_dense_like(OP, t);
    if (r && r->ndim > 0 && r->shape[r->ndim - 1] > 1 && r->stride[r->ndim - 1] != 1) {
        fg_free(r);
        r = fg__new(OP, t->ndim, t->shape, t->dtype, t->device);
    }
    return r;
}

/* When q, k and v are head windows of one (B, L, S) buffer (the fused qkv
 * projection, split and viewed as heads), their gradients become the same
 * windows of one fresh (B, L, S) buffer: split's backward then hands that
 * buffer on whole instead of copying three pieces into it (join.c). False
 * (nothing made) for any other layout, and on allocation failure (the caller's
 * path reports it). */
static bool shared_grads(const fg_tensor *q, const fg_tensor *k, const fg_tensor *v, fg_tensor **dq, fg_tensor **dk,
                         fg_tensor **dv)
{
    const fg_tensor *t[3] = {q, k, v};
    if (q->ndim != 4) return false;
    const int64_t B = q->shape[0], L = q->shape[2], D = q->shape[3], S = q->stride[2];
    int64_t lo = q->offset;
    for (int i = 0; i < 3; i++) {
        const fg_tensor *x = t[i];
        if (x->ndim != 4 || x->storage != q->storage || x->shape[0] != B || x->shape[2] != L || x->shape[3] != D ||
            x->stride[0] != L * S || x->stride[1] != D || x->stride[2] != S || x->stride[3] != 1)
            return false;
        lo = x->offset < lo ? x->offset : lo;
    }
    int64_t covered = 0;
    for (int i = 0; i < 3; i++) { /* each window inside a row of S, none overlapping */
        const int64_t a = t[i]->offset - lo, w = t[i]->shape[1] * D;
        if (a + w > S) return false;
        for (int j = 0; j < i; j++) {
            const int64_t b = t[j]->offset - lo;
            if (a < b + t[j]->shape[1] * D && b < a + w) return false;
        }
        covered += w;
    }
    fg_tensor *buf = fg__new(OP, 3, (const int64_t[]){B, L, S}, q->dtype, q->device); /* (B, L, S) */
    if (!buf || (covered < S && fg_zero_(buf) != FG_OK)) {
        fg_free(buf);
        fg_clear_error();
        return false;
    }
    fg_tensor **out[3] = {dq, dk, dv};
    for (int i = 0; i < 3; i++)
        if (!(*out[i] = fg__view(buf, 4, t[i]->shape, t[i]->stride, t[i]->offset - lo))) {
            for (int j = 0; j < i; j++) fg_free(*out[j]), *out[j] = NULL;
            fg_free(buf);
            fg_clear_error();
            return false;
        }
    fg_free(buf); /* the views hold the storage */
    return true;
}

static void free_all(int n, fg_tensor **t)
{
    for (int i = 0; i < n; i++) fg_free(t[i]);
}

/* saved: q, k, v, out, lse (q, k, v with a contiguous last dim) and the
 * sequence table when there is one; f[0] scale, f[1] dropout scale; i[0]
 * causal, i[1] seed, i[2] RNG offset, i[3] dropout threshold, i[4]
 * deterministic, i[5] varlen, i[6] key padding, i[7] sequences, i[8] / i[9]
 * longest query / key range */
static fg_status flash_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *q = n->saved[0], *k = n->saved[1], *v = n->saved[2], *o = n->saved[3], *lse = n->saved[4];
    attn_cfg c = {.causal = n->i[0] != 0, .deterministic = n->i[4] != 0, .scale = n->f[0]};
    c.drop = (fg_attn_drop){(uint64_t)n->i[1], (uint64_t)n->i[2], (uint32_t)n->i[3], n->f[1]};
    const attn_seq_arg sa = seq_arg_of(n->i[5] != 0, n->i[6] != 0, n->i[7], n->i[8], n->i[9], n->n_saved > 5 ? n->saved[5] : NULL);
    fg_tensor *dq = NULL, *dk = NULL, *dv = NULL;
    if (!shared_grads(q, k, v, &dq, &dk, &dv)) {
        dq = like_input(q);
        dk = dq ? like_input(k) : NULL;
        dv = dk ? like_input(v) : NULL;
    }
    fg_tensor *g = dv ? (q->device == FG_CUDA ? d_contig(go[0]) : fg_retain(go[0])) : NULL;
    /* (B, H, L, D) views: q k v o dO dq dk dv */
    fg_tensor *w[8] = {NULL};
    fg_tensor *src[8] = {q, k, v, o, g, dq, dk, dv};
    bool ok = g != NULL;
    for (int i = 0; ok && i < 8; i++) ok = (w[i] = view4(src[i], sa.varlen)) != NULL;
    if (!ok || fg__attn_flash_bwd(OP, w, lse, &c, &sa, fg__cuda_stream(), NULL, 0) != FG_OK) goto fail;
    free_all(8, w);
    fg__unref(g);
    gi[0] = dq;
    gi[1] = dk;
    gi[2] = dv;
    return FG_OK;
fail:
    free_all(8, w);
    fg__unref(g);
    fg_free(dq);
    fg_free(dk);
    fg_free(dv);
    return fg_last_status();
}

fg_attn_drop fg__attn_drop_of(double p, uint64_t seed, uint64_t offset)
{
    const double t = floor(p * 4294967296.0);
    if (!(p > 0) || t < 1) return (fg_attn_drop){0}; /* p below 2^-32 drops nothing */
    return (fg_attn_drop){seed, offset, (uint32_t)t, 1.0 / (1.0 - p)};
}

void fg__attn_draw_dropout(attn_cfg *c)
{
    c->drop = fg__attn_drop_of(c->dropout_p, 0, 0);
    if (c->drop.threshold == 0) return;
    c->drop.seed = fg_generator_seed(c->gen);
    c->drop.offset = fg_generator_advance(c->gen, 4);
}

static fg_tensor *flash_forward(fg_tensor *q0, fg_tensor *k0, fg_tensor *v0, const attn_cfg *c, const attn_seqs *s,
                                fg_tensor **lse_out)
{
    fg_tensor *q = q0, *k = k0, *v = v0, *out = NULL, *lse = NULL, *seqt = NULL;
    fg_tensor *w[4] = {NULL}; /* (B, H, L, D) views of q k v out */
    if (q0->device == FG_CUDA) { /* the kernels want the head dim contiguous */
        q = d_contig(q0), k = q ? d_contig(k0) : NULL, v = k ? d_contig(v0) : NULL;
        if (!v) goto fail;
    }
    out = like_input(q);
    /* LSE (B, Hq, Lq), or (Hq, total_q) when packed */
    lse = !out ? NULL
          : s->varlen ? fg__new(OP, 2, (const int64_t[]){q->shape[1], q->shape[0]}, fg__attn_lse_dtype(q), q->device)
                      : fg__new(OP, 3, q->shape, fg__attn_lse_dtype(q), q->device);
    if (!lse) goto fail;
    if ((s->varlen || s->padded) && !(seqt = seq_tensor(s, q->device))) goto fail;
    fg_tensor *src[4] = {q, k, v, out};
    for (int i = 0; i < 4; i++)
        if (!(w[i] = view4(src[i], s->varlen))) goto fail;
    const attn_seq_arg sa = seq_arg_of(s->varlen, s->padded, s->n, s->max_q, s->max_k, seqt);
    if (fg__attn_flash_fwd(OP, w, lse, c, &sa, fg__cuda_stream()) != FG_OK) goto fail;
    fg_tensor *in[3] = {q0, k0, v0};
    if (fg__any_requires_grad(3, in)) {
        fg_node *node = fg__record(OP, flash_backward, 3, in, 1, &out);
        if (!node) goto fail;
        node->f[0] = c->scale;
        node->f[1] = c->drop.scale;
        const int64_t iv[10] = {c->causal,   (int64_t)c->drop.seed, (int64_t)c->drop.offset, c->drop.threshold,
                                c->deterministic, s->varlen, s->padded, s->n, s->max_q, s->max_k};
        memcpy(node->i, iv, sizeof iv);
        if (fg__save(node, q) < 0 || fg__save(node, k) < 0 || fg__save(node, v) < 0 || fg__save(node, out) < 0 ||
            fg__save(node, lse) < 0 || (seqt && fg__save(node, seqt) < 0)) {
            fg__err(FG_ERR_OOM, "%s: out of memory saving tensors for backward", OP);
            goto fail;
        }
    }
    free_all(4, w);
    fg_free(seqt);
    if (q0->device == FG_CUDA) fg__unref(q), fg__unref(k), fg__unref(v);
    if (lse_out)
        *lse_out = lse;
    else
        fg_free(lse);
    return out;
fail:
    free_all(4, w);
    fg_free(seqt);
    if (q0->device == FG_CUDA) fg__unref(q), fg__unref(k), fg__unref(v); /* NULLs allowed */
    fg_free(lse);
    fg_free(out);
    return NULL;
}

fg_tensor *fg_attention_lse(fg_tensor *q, fg_tensor *k, fg_tensor *v, const fg_attention_opts *opts, fg_tensor **lse)
{
    const fg_attention_opts o = opts ? *opts : (fg_attention_opts){0};
    attn_cfg c;
    attn_seqs s;
    char s1[128], s2[128];
    if (lse) *lse = NULL;
    if (!check_args(q, k, v, &o, &c) || !parse_seqs(q, k, &o, &s)) return NULL;
    const int64_t mq = s.varlen || s.padded ? s.max_q : q->shape[2], mk = s.varlen || s.padded ? s.max_k : k->shape[2];
    if (q->device == FG_CUDA && c.backend == FG_ATTN_FLASH && (mq > MAX_ROWS || mk > MAX_ROWS || q->shape[1] > INT32_MAX ||
                                                              (s.varlen ? s.n : q->shape[0]) * q->shape[1] > INT32_MAX)) {
        fg__err(FG_ERR_UNSUPPORTED, "%s: sizes beyond the CUDA kernels' grid: q %s, k %s (at most %d rows a sequence)",
                OP, fg_shape_str(q, s1, sizeof s1), fg_shape_str(k, s2, sizeof s2), MAX_ROWS);
        fg__attn_seqs_free(&s);
        return NULL;
    }
    fg__attn_draw_dropout(&c);
    /* Degenerate sizes (no keys, no rows, D = 0) take the flash rules where the flash path runs. */
    const bool empty = q->numel == 0 || k->numel == 0;
    fg_tensor *out = c.backend == FG_ATTN_FLASH || (empty && (q->device == FG_CPU || cuda_flash_fits(q)))
                         ? flash_forward(q, k, v, &c, &s, lse)
                         : fg__attn_math(q, k, v, &c, &s, lse);
    fg__attn_seqs_free(&s);
    return out;
}

fg_tensor *fg_attention(fg_tensor *q, fg_tensor *k, fg_tensor *v, const fg_attention_opts *opts)
{
    return fg_attention_lse(q, k, v, opts, NULL);
}
