/* Reductions: sum, mean, max, argmax and their backward. */
#include "cpu/cpu.h"

/* Parses a dim list into a reduce mask; ndims == 0 means every dim. */
static bool reduce_mask(const char *op, const fg_tensor *a, int ndims, const int *dims, bool *mask, int64_t *count)
{
    memset(mask, 0, FG_MAX_DIMS * sizeof *mask);
    if (ndims < 0 || (ndims > 0 && !dims)) {
        fg__err(FG_ERR_INVALID, "%s: invalid dim list (%d dims)", op, ndims);
        return false;
    }
    for (int i = 0; i < ndims; i++) {
        int r;
        if (a->ndim == 0 || fg__norm_dim(op, a, dims[i], 0, &r) != FG_OK) {
            if (a->ndim == 0) fg__err(FG_ERR_DIM, "%s: a 0-d tensor has no dim %d", op, dims[i]);
            return false;
        }
        if (mask[r]) {
            fg__err(FG_ERR_DIM, "%s: dim %d listed twice", op, dims[i]);
            return false;
        }
        mask[r] = true;
    }
    if (ndims == 0)
        for (int d = 0; d < a->ndim; d++) mask[d] = true;
    *count = 1;
    for (int d = 0; d < a->ndim; d++)
        if (mask[d]) *count *= a->shape[d];
    return true;
}

/* out = sum of a over the masked dims / divisor on the device, rounded once (the
 * kernel accumulates in double, int64 for integers). */
static fg_status cuda_sum(const char *op, fg_tensor *out, const fg_tensor *a, const bool *mask, double divisor)
{
#ifdef FG_HAVE_CUDA
    unsigned m = 0;
    for (int d = 0; d < a->ndim; d++)
        if (mask[d]) m |= 1u << d;
    int64_t ws_bytes = fg_k_sum_workspace(fg__kt(a), m);
    void *ws = NULL;
    if (ws_bytes > 0 && fg__cuda_malloc(&ws, (size_t)ws_bytes) != FG_OK) return fg_last_status();
    fg_status st = FG_CUDA_CALL(op, fg_k_sum(fg__kt(out), fg__kt(a), m, divisor, ws, fg__cuda_stream()));
    /* All device work is on one stream: the allocator may hand the block out again at once. */
    if (ws) fg__cuda_free(ws, (size_t)ws_bytes);
    return st;
#else
    (void)out, (void)a, (void)mask, (void)divisor;
    return FG_CUDA_CALL(op, 0);
#endif
}

static fg_status cpu_sum(const char *op, fg_tensor *out, const fg_tensor *a, const bool *mask, bool mean,
                         int64_t count)
{
    /* mean: sum into f64 and scale there, so the result is rounded to the dtype once. */
    fg_tensor *acc = mean && a->dtype != FG_F64 ? fg__new(op, a->ndim, out->shape, FG_F64, a->device) : out;
    if (!acc || fg_cpu_sum(acc, a, mask) != FG_OK) {
        if (acc && acc != out) fg_free(acc);
        return fg_last_status();
    }
    if (mean) {
        const double *src = fg__data(acc);
        char *p = fg__data(out);
        for (int64_t i = 0; i < out->numel; i++) fg__st(p, out->dtype, i, src[i] / (double)count);
        if (acc != out) fg_free(acc);
    }
    return FG_OK;
}

static fg_status sum_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_edge *e = &n->edges[0];
    int64_t ks[FG_MAX_DIMS];
    for (int d = 0; d < e->ndim; d++) ks[d] = n->i[d] ? 1 : e->shape[d];
    fg_tensor *g = fg_reshape(go[0], e->ndim, ks);
    if (g && n->f[0] != 1.0) g = fg_mul_scalar(g, n->f[0]); /* mean: 1/count */
    gi[0] = g ? fg_expand(g, e->ndim, e->shape) : NULL;
    return gi[0] ? FG_OK : fg_last_status();
}

static fg_tensor *sum_impl(const char *op, fg_tensor *a, int ndims, const int *dims, bool keepdim, bool mean)
{
    if (!a) { fg__err_null(op, "input"); return NULL; }
    bool mask[FG_MAX_DIMS];
    int64_t count;
    if (!reduce_mask(op, a, ndims, dims, mask, &count)) return NULL;
    if (mean && !fg__check_float(op, a)) return NULL;
    int64_t ks[FG_MAX_DIMS], os[FG_MAX_DIMS];
    int on = 0;
    for (int d = 0; d < a->ndim; d++) {
        ks[d] = mask[d] ? 1 : a->shape[d];
        if (!mask[d] || keepdim) os[on++] = ks[d];
    }
    fg_tensor *out = fg__new(op, a->ndim, ks, a->dtype, a->device);
    if (!out) return NULL;
    double scale = mean ? (count ? 1.0 / (double)count : NAN) : 1.0;
    /* The kernel divides by the count in double and rounds once, like the CPU path. */
    fg_status rs = a->device == FG_CPU ? cpu_sum(op, out, a, mask, mean, count)
                                       : cuda_sum(op, out, a, mask, mean ? (double)count : 1.0);
    if (rs != FG_OK) {
        fg_free(out);
        return NULL;
    }
    if (!keepdim) { /* drop the reduced dims: a view of the contiguous result */
        int64_t st[FG_MAX_DIMS];
        fg__contiguous_strides(on, os, st);
        fg_tensor *v = fg__view(out, on, os, st, 0);
        fg_free(out);
        out = v;
        if (!out) return NULL;
    }
    if (!fg__any_requires_grad(1, &a)) return out;
    fg_node *node = fg__record(op, sum_backward, 1, &a, 1, &out);
    if (node) {
        for (int d = 0; d < a->ndim; d++) node->i[d] = mask[d];
        node->f[0] = scale;
    }
    return out;
}

fg_tensor *fg_sum(fg_tensor *a, int ndims, const int *dims, bool keepdim) { return sum_impl("sum", a, ndims, dims, keepdim, false); }
fg_tensor *fg_mean(fg_tensor *a, int ndims, const int *dims, bool keepdim) { return sum_impl("mean", a, ndims, dims, keepdim, true); }
fg_tensor *fg_sum_all(fg_tensor *a) { return sum_impl("sum", a, 0, NULL, false, false); }
fg_tensor *fg_mean_all(fg_tensor *a) { return sum_impl("mean", a, 0, NULL, false, true); }

fg_tensor *fg__sum_to_shape(fg_tensor *g, int ndim, const int64_t *shape)
{
    if (!g) return NULL;
    if (g->ndim == ndim && memcmp(g->shape, shape, (size_t)ndim * sizeof *shape) == 0) return g;
    int dims[FG_MAX_DIMS], nd = 0, lead = g->ndim - ndim;
    for (int d = 0; d < g->ndim; d++)
        if (d < lead || (shape[d - lead] == 1 && g->shape[d] != 1)) dims[nd++] = d;
    fg_tensor *s = nd ? fg_sum(g, nd, dims, true) : g;
    return s ? fg_reshape(s, ndim, shape) : NULL;
}

/* ---- max ---- */
static fg_status max_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_edge *e = &n->edges[0];
    fg_tensor *idx = n->saved[0]; /* contiguous, keepdim layout */
    int dim = (int)n->i[0];
    fg_tensor *gx = fg_zeros(e->ndim, e->shape, go[0]->dtype, go[0]->device);
    if (gx && gx->device != FG_CPU) {
        /* The kernel reads go[0] through its strides. */
        fg_status st = FG_CUDA_CALL("max backward", fg_k_max_backward(fg__kt(gx), fg__kt(go[0]), fg__data(idx), dim,
                                                                      fg__cuda_stream()));
        if (st != FG_OK) return st;
        gi[0] = gx;
        return FG_OK;
    }
    fg_tensor *g = gx ? fg__contig(go[0]) : NULL;
    if (!g) return fg_last_status();
    int64_t inner = 1;
    for (int d = dim + 1; d < e->ndim; d++) inner *= e->shape[d];
    const int64_t *ix = fg__data(idx);
    char *px = fg__data(gx);
    const char *pg = fg__data(g);
    for (int64_t k = 0; k < idx->numel; k++) {
        int64_t o = k / inner, i = k % inner;
        fg__st(px, gx->dtype, (o * e->shape[dim] + ix[k]) * inner + i, fg__ld(pg, g->dtype, k));
    }
    fg__unref(g);
    gi[0] = gx;
    return FG_OK;
}

fg_tensor *fg_max(fg_tensor *a, int dim, bool keepdim, fg_tensor **indices)
{
    if (indices) *indices = NULL;
    if (!a) { fg__err_null("max", "input"); return NULL; }
    int r;
    char b[128];
    if (a->ndim == 0) {
        fg__err(FG_ERR_DIM, "max: a 0-d tensor has no dim %d (use fg_max_all)", dim);
        return NULL;
    }
    if (fg__norm_dim("max", a, dim, 0, &r) != FG_OK) return NULL;
    if (a->shape[r] == 0) {
        fg__err(FG_ERR_SHAPE, "max: dim %d of %s is empty", dim, fg_shape_str(a, b, sizeof b));
        return NULL;
    }
    int64_t ks[FG_MAX_DIMS];
    memcpy(ks, a->shape, sizeof ks);
    ks[r] = 1;
    fg_tensor *v = fg__new("max", a->ndim, ks, a->dtype, a->device);
    fg_tensor *ix = v ? fg__new("max", a->ndim, ks, FG_I64, a->device) : NULL;
    if (!ix) {
        fg_free(v);
        return NULL;
    }
    if (a->device == FG_CPU) {
        fg_cpu_max(v, ix, a, r);
    } else if (FG_CUDA_CALL("max", fg_k_max(fg__kt(v), fg__data(ix), fg__kt(a), r, fg__cuda_stream())) != FG_OK) {
        fg_free(v);
        fg_free(ix);
        return NULL;
    }
    if (fg__any_requires_grad(1, &a)) {
        fg_node *node = fg__record("max", max_backward, 1, &a, 1, &v);
        if (node) {
            node->i[0] = r;
            if (fg__save(node, ix) < 0) {
                fg_free(v);
                fg_free(ix);
                fg__err(FG_ERR_OOM, "max: out of memory recording backward");
                return NULL;
            }
        }
    }
    if (!keepdim) {
        fg_tensor *sv = fg_squeeze(v, r), *si = fg_squeeze(ix, r);
        fg_free(v);
        fg_free(ix);
        v = sv;
        ix = si;
    }
    if (indices)
        *indices = ix;
    else
        fg_free(ix);
    return v;
}

fg_tensor *fg_max_all(fg_tensor *a)
{
    if (!a) { fg__err_null("max", "input"); return NULL; }
    if (a->numel == 0) {
        fg__err(FG_ERR_SHAPE, "max: empty tensor has no maximum");
        return NULL;
    }
    fg_tensor *f = fg_reshape(a, 1, (const int64_t[]){-1});
    fg_tensor *m = f ? fg_max(f, 0, false, NULL) : NULL;
    fg_free(f);
    return m;
}

fg_tensor *fg_argmax(fg_tensor *a, int dim, bool keepdim)
{
    fg_tensor *ix = NULL;
    bool prev = fg_set_grad_enabled(false);
    fg_tensor *v = fg_max(a, dim, keepdim, &ix);
    fg_set_grad_enabled(prev);
    fg_free(v);
    return ix;
}
