/* Index ops (PyTorch semantics): gather, scatter, scatter_add, index_select,
 * index_add, topk. Forward and backward side by side; each backward is built
 * from the other ops (gather <-> scatter_add, index_select <-> index_add). */
#include <flashgrad/deterministic.h>
#include "cpu/cpu_index.h"

/* ---- CUDA helpers ---- */

/* The helpers below only exist in CUDA builds (a device tensor cannot exist
 * in the others). Launch scratch comes from the caching allocator and is
 * released right after the launch is queued: all work is ordered on one stream. */
#ifdef FG_HAVE_CUDA
/* query_err: what the *_scratch query returned (it has written *bytes). */
static fg_status scratch_alloc(const char *op, int query_err, const size_t *bytes, void **p)
{
    *p = NULL;
    fg_status st = FG_CUDA_CALL(op, query_err);
    if (st != FG_OK || *bytes == 0) return st;
    return fg__cuda_malloc(p, *bytes);
}
#endif

/* The device error record the index kernels report bad indices to (see
 * fg_kernels.h): they never make the host sync for a range check. */
static int64_t *cuda_rec(void) { return (int64_t *)fg__cuda_error_record(); }

/* ---- shared argument checks ---- */

/* index: non-NULL, i32/i64, on a's device. */
static bool check_index(const char *op, const fg_tensor *a, const fg_tensor *index)
{
    if (!index) {
        fg__err_null(op, "index");
        return false;
    }
    if (!fg__check_index_dtype(op, index)) return false;
    if (index->device != a->device) {
        char b[128];
        fg__err(FG_ERR_DEVICE, "%s: index %s on %s, input on %s", op, fg_shape_str(index, b, sizeof b),
                fg_device_name(index->device), fg_device_name(a->device));
        return false;
    }
    return true;
}

/* Normalises dim for an index op; 0-d inputs have no dim to index. */
static bool index_dim(const char *op, const fg_tensor *a, int dim, int *r)
{
    if (a->ndim == 0) {
        fg__err(FG_ERR_DIM, "%s: a 0-d input has no dim %d", op, dim);
        return false;
    }
    return fg__norm_dim(op, a, dim, 0, r) == FG_OK;
}

/* Every index value inside [0, a.size(dim)); FG_ERR_INDEX naming the value
 * otherwise. On the device the kernels check as they read (a bad index is
 * skipped and reported at the next synchronisation), and the error record must
 * be there for them. */
static bool check_range(const char *op, const fg_tensor *a, int dim, int r, const fg_tensor *index)
{
    int64_t bad = 0;
    if (index->device == FG_CUDA) return cuda_rec() != NULL;
    if (fg_cpu_index_in_range(index, a->shape[r], &bad)) return true;
    char b[128];
    fg__err(FG_ERR_INDEX, "%s: index %lld out of range for dim %d of size %lld (input %s)", op, (long long)bad, dim,
            (long long)a->shape[r], fg_shape_str(a, b, sizeof b));
    return false;
}

/* gather/scatter shape rule: index has a's ndim and index.size(d) <= limit.size(d),
 * for every d when all_dims, else for d != r. */
static bool check_index_fits(const char *op, const fg_tensor *index, const char *what, const fg_tensor *limit, int r,
                             bool all_dims)
{
    char b1[128], b2[128];
    if (index->ndim != limit->ndim) {
        fg__err(FG_ERR_SHAPE, "%s: index %s must have as many dims as %s %s", op, fg_shape_str(index, b1, sizeof b1),
                what, fg_shape_str(limit, b2, sizeof b2));
        return false;
    }
    for (int d = 0; d < index->ndim; d++)
        if ((all_dims || d != r) && index->shape[d] > limit->shape[d]) {
            fg__err(FG_ERR_SHAPE, "%s: index %s is larger than %s %s at dim %d", op, fg_shape_str(index, b1, sizeof b1),
                    what, fg_shape_str(limit, b2, sizeof b2), d);
            return false;
        }
    return true;
}

/* Records `out` as the result of `fn` on inputs (node->i[0] = dim, i[1] = flag,
 * saved[0] = index); false (out freed) on OOM. */
static bool record(const char *op, fg_backward_fn fn, int n, fg_tensor *const *in, fg_tensor *out, int r,
                   int64_t flag, const fg_tensor *index)
{
    if (!fg__any_requires_grad(n, in)) return true;
    fg_node *node = fg__record(op, fn, n, in, 1, &out);
    if (!node) {
        if (fg_last_status() != FG_ERR_OOM) return true;
        fg_free(out);
        return false;
    }
    node->i[0] = r;
    node->i[1] = flag;
    if (index && fg__save(node, index) < 0) {
        fg_free(out);
        fg__err(FG_ERR_OOM, "%s: out of memory saving tensors for backward", op);
        return false;
    }
    return true;
}

/* Gradient g (index-shaped) padded with zeros to the edge's shape: src may be
 * larger than the index, and its elements outside the index get no gradient. */
static fg_tensor *pad_to_edge(fg_node *n, int e, fg_tensor *g)
{
    if (!g) return NULL;
    const fg_edge *ed = &n->edges[e];
    if (g->ndim == ed->ndim && memcmp(g->shape, ed->shape, (size_t)ed->ndim * sizeof *ed->shape) == 0) return g;
    fg_tensor *z = fg_zeros(ed->ndim, ed->shape, g->dtype, g->device);
    fg_tensor *win = z ? fg__view(z, g->ndim, g->shape, z->stride, 0) : NULL; /* leading corner of z */
    if (!win || fg__copy_elements(win, g) != FG_OK) return NULL;
    return z;
}

/* ---- gather ---- */
/* The backward rules call the ops through these *_impl forms with
 * check = false: their index was range-checked by the forward. */
static fg_tensor *scatter_impl(const char *op, fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src, bool add,
                               bool check);
static fg_tensor *gather_impl(fg_tensor *a, int dim, fg_tensor *index, bool check);
static fg_tensor *index_select_impl(fg_tensor *a, int dim, fg_tensor *index, bool check);
static fg_tensor *index_add_impl(fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src, bool check);

static fg_status gather_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    /* Every out element came from one a element: add the grads back at those places. */
    const fg_edge *e = &n->edges[0];
    fg_tensor *z = fg_zeros(e->ndim, e->shape, go[0]->dtype, go[0]->device);
    gi[0] = z ? scatter_impl("scatter_add", z, (int)n->i[0], n->saved[0], go[0], true, false) : NULL;
    return gi[0] ? FG_OK : fg_last_status();
}

static fg_tensor *gather_impl(fg_tensor *a, int dim, fg_tensor *index, bool check)
{
    static const char *op = "gather";
    if (!a) { fg__err_null(op, "input"); return NULL; }
    int r;
    if (!check_index(op, a, index) || !index_dim(op, a, dim, &r)) return NULL;
    if (!check_index_fits(op, index, "input", a, r, false)) return NULL;
    if (check && !check_range(op, a, dim, r, index)) return NULL;
    fg_tensor *out = fg__new(op, index->ndim, index->shape, a->dtype, a->device); /* index's shape */
    if (!out) return NULL;
    if (a->device == FG_CUDA) {
        if (FG_CUDA_CALL(op, fg_k_gather(fg__kt(out), fg__kt(a), r, fg__kt(index), cuda_rec(), fg__cuda_stream())) != FG_OK) {
            fg_free(out);
            return NULL;
        }
    } else {
        fg_cpu_gather(out, a, r, index);
    }
    fg_tensor *in[2] = {a, NULL};
    return record(op, gather_backward, 2, in, out, r, 0, index) ? out : NULL;
}

fg_tensor *fg_gather(fg_tensor *a, int dim, fg_tensor *index) { return gather_impl(a, dim, index, true); }

/* ---- scatter / scatter_add ---- */
static fg_status scatter_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    int r = (int)n->i[0];
    bool add = n->i[1] != 0;
    fg_tensor *index = n->saved[0];
    if (n->edges[0].needs_grad) {
        if (add) {
            gi[0] = go[0];
        } else {
            /* Overwritten elements of a do not reach the output. */
            fg_tensor *z = fg_zeros(index->ndim, index->shape, go[0]->dtype, go[0]->device);
            gi[0] = z ? scatter_impl("scatter", go[0], r, index, z, false, false) : NULL;
            if (!gi[0]) return fg_last_status();
        }
    }
    if (n->edges[2].needs_grad) {
        /* As PyTorch: with duplicate indices in scatter every duplicate gets the
         * gradient of the position, though only the last write reached it. */
        gi[2] = pad_to_edge(n, 2, gather_impl(go[0], r, index, false));
        if (!gi[2]) return fg_last_status();
    }
    return FG_OK;
}

/* out (contiguous, holding a's values) scattered into on the device: scatter
 * always resolves duplicates like the CPU; scatter_add uses atomics unless
 * deterministic mode is on. */
static fg_status cuda_scatter(const char *op, fg_tensor *out, int r, const fg_tensor *index, const fg_tensor *src,
                              bool add)
{
#ifndef FG_HAVE_CUDA
    return FG_CUDA_CALL(op, 0);
#else
    int mode = !add ? FG_K_SCATTER_SET : fg_deterministic() ? FG_K_SCATTER_ADD_DET : FG_K_SCATTER_ADD;
    size_t bytes = 0;
    void *scratch;
    int q = fg_k_scatter_scratch(mode, (int)out->dtype, index->numel, out->numel, &bytes);
    fg_status st = scratch_alloc(op, q, &bytes, &scratch);
    if (st != FG_OK) return st;
    st = FG_CUDA_CALL(op, fg_k_scatter(fg__kt(out), r, fg__kt(index), fg__kt(src), mode, scratch, bytes, cuda_rec(),
                                       fg__cuda_stream()));
    if (scratch) fg__cuda_free(scratch, bytes);
    return st;
#endif
}

static fg_tensor *scatter_impl(const char *op, fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src, bool add,
                               bool check)
{
    if (!a) { fg__err_null(op, "input"); return NULL; }
    if (!src) { fg__err_null(op, "src"); return NULL; }
    int r;
    if (!check_index(op, a, index) || !index_dim(op, a, dim, &r)) return NULL;
    if (!fg__check_same(op, a, src)) return NULL;
    if (!check_index_fits(op, index, "input", a, r, false)) return NULL;
    if (!check_index_fits(op, index, "src", src, r, true)) return NULL;
    if (check && !check_range(op, a, dim, r, index)) return NULL;
    fg_tensor *out = fg__new_like(op, a);
    if (!out) return NULL;
    fg_status st = fg__copy_elements(out, a);
    if (st == FG_OK)
        st = a->device == FG_CUDA ? cuda_scatter(op, out, r, index, src, add) : fg_cpu_scatter(out, r, index, src, add);
    if (st != FG_OK) {
        fg_free(out);
        return NULL;
    }
    fg_tensor *in[3] = {a, NULL, src};
    return record(op, scatter_backward, 3, in, out, r, add, index) ? out : NULL;
}

fg_tensor *fg_scatter(fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src)
{
    return scatter_impl("scatter", a, dim, index, src, false, true);
}

fg_tensor *fg_scatter_add(fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src)
{
    return scatter_impl("scatter_add", a, dim, index, src, true, true);
}

/* ---- index_select / index_add ---- */

/* index_select/index_add take a 0-d (one position) or 1-d index. */
static bool check_index_1d(const char *op, const fg_tensor *index)
{
    if (index->ndim <= 1) return true;
    char b[128];
    fg__err(FG_ERR_SHAPE, "%s: index must be 0-d or 1-d, got %s", op, fg_shape_str(index, b, sizeof b));
    return false;
}

static fg_status index_select_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    /* Repeated indices pick one row several times: their grads add up. */
    const fg_edge *e = &n->edges[0];
    fg_tensor *z = fg_zeros(e->ndim, e->shape, go[0]->dtype, go[0]->device);
    gi[0] = z ? index_add_impl(z, (int)n->i[0], n->saved[0], go[0], false) : NULL;
    return gi[0] ? FG_OK : fg_last_status();
}

static fg_tensor *index_select_impl(fg_tensor *a, int dim, fg_tensor *index, bool check)
{
    static const char *op = "index_select";
    if (!a) { fg__err_null(op, "input"); return NULL; }
    int r;
    if (!check_index(op, a, index) || !check_index_1d(op, index) || !index_dim(op, a, dim, &r)) return NULL;
    if (check && !check_range(op, a, dim, r, index)) return NULL;
    int64_t shape[FG_MAX_DIMS]; /* a's shape with dim of length numel(index) */
    memcpy(shape, a->shape, sizeof shape);
    shape[r] = index->numel;
    fg_tensor *out = fg__new(op, a->ndim, shape, a->dtype, a->device);
    if (!out) return NULL;
    if (a->device == FG_CUDA) {
        if (FG_CUDA_CALL(op, fg_k_index_select(fg__kt(out), fg__kt(a), r, fg__kt(index), cuda_rec(),
                                               fg__cuda_stream())) != FG_OK) {
            fg_free(out);
            return NULL;
        }
    } else {
        fg_cpu_index_select(out, a, r, index);
    }
    fg_tensor *in[2] = {a, NULL};
    return record(op, index_select_backward, 2, in, out, r, 0, index) ? out : NULL;
}

fg_tensor *fg_index_select(fg_tensor *a, int dim, fg_tensor *index) { return index_select_impl(a, dim, index, true); }

static fg_status index_add_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    if (n->edges[0].needs_grad) gi[0] = go[0];
    if (n->edges[2].needs_grad) {
        gi[2] = index_select_impl(go[0], (int)n->i[0], n->saved[0], false);
        if (!gi[2]) return fg_last_status();
    }
    return FG_OK;
}

/* out (contiguous, holding a's values) += src at index along r on the device:
 * atomics unless deterministic mode is on. */
static fg_status cuda_index_add(const char *op, fg_tensor *out, int r, const fg_tensor *index, const fg_tensor *src)
{
#ifndef FG_HAVE_CUDA
    return FG_CUDA_CALL(op, 0);
#else
    bool det = fg_deterministic();
    size_t bytes = 0;
    void *scratch;
    int q = fg_k_index_add_scratch(det, (int)out->dtype, index->numel, out->shape[r], out->numel, &bytes);
    fg_status st = scratch_alloc(op, q, &bytes, &scratch);
    if (st != FG_OK) return st;
    st = FG_CUDA_CALL(op, fg_k_index_add(fg__kt(out), r, fg__kt(index), fg__kt(src), det, scratch, bytes,
                                         cuda_rec(), fg__cuda_stream()));
    if (scratch) fg__cuda_free(scratch, bytes);
    return st;
#endif
}

static fg_tensor *index_add_impl(fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src, bool check)
{
    static const char *op = "index_add";
    if (!a) { fg__err_null(op, "input"); return NULL; }
    if (!src) { fg__err_null(op, "src"); return NULL; }
    int r;
    if (!check_index(op, a, index) || !check_index_1d(op, index) || !index_dim(op, a, dim, &r)) return NULL;
    if (!fg__check_same(op, a, src)) return NULL;
    /* src: a's shape with dim of length numel(index). */
    bool fits = src->ndim == a->ndim;
    for (int d = 0; fits && d < a->ndim; d++) fits = src->shape[d] == (d == r ? index->numel : a->shape[d]);
    if (!fits) {
        char b1[128], b2[128], b3[128];
        fg__err(FG_ERR_SHAPE, "index_add: src %s must match input %s except at dim %d, where it needs the index "
                              "length (index %s)", fg_shape_str(src, b1, sizeof b1), fg_shape_str(a, b2, sizeof b2),
                dim, fg_shape_str(index, b3, sizeof b3));
        return NULL;
    }
    if (check && !check_range(op, a, dim, r, index)) return NULL;
    fg_tensor *out = fg__new_like(op, a);
    if (!out) return NULL;
    fg_status st = fg__copy_elements(out, a);
    if (st == FG_OK)
        st = a->device == FG_CUDA ? cuda_index_add(op, out, r, index, src) : fg_cpu_index_add(out, r, index, src);
    if (st != FG_OK) {
        fg_free(out);
        return NULL;
    }
    fg_tensor *in[3] = {a, NULL, src};
    return record(op, index_add_backward, 3, in, out, r, 0, index) ? out : NULL;
}

fg_tensor *fg_index_add(fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src)
{
    return index_add_impl(a, dim, index, src, true);
}

/* ---- topk ---- */
static fg_status topk_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    /* The k picked elements get their grads; the others none (indices are distinct). */
    const fg_edge *e = &n->edges[0];
    fg_tensor *z = fg_zeros(e->ndim, e->shape, go[0]->dtype, go[0]->device);
    gi[0] = z ? scatter_impl("scatter", z, (int)n->i[0], n->saved[0], go[0], false, false) : NULL;
    return gi[0] ? FG_OK : fg_last_status();
}

static fg_status cuda_topk(const char *op, fg_tensor *v, fg_tensor *ix, const fg_tensor *a, int r, int64_t k,
                           bool largest)
{
#ifndef FG_HAVE_CUDA
    return FG_CUDA_CALL(op, 0);
#else
    int64_t n = a->shape[r], rows = n ? a->numel / n : 0;
    size_t bytes = 0;
    void *scratch;
    int q = fg_k_topk_scratch(rows, n, &bytes);
    fg_status st = scratch_alloc(op, q, &bytes, &scratch);
    if (st != FG_OK) return st;
    st = FG_CUDA_CALL(op, fg_k_topk(fg__kt(v), fg__kt(ix), fg__kt(a), r, k, largest, scratch, bytes,
                                    fg__cuda_stream()));
    if (scratch) fg__cuda_free(scratch, bytes);
    return st;
#endif
}

fg_status fg_topk(fg_tensor *a, int k, int dim, bool largest, fg_tensor **values, fg_tensor **indices)
{
    static const char *op = "topk";
    if (values) *values = NULL;
    if (indices) *indices = NULL;
    if (!a) return fg__err_null(op, "input");
    int r;
    if (!index_dim(op, a, dim, &r)) return fg_last_status();
    char b[128];
    if (k < 0 || k > a->shape[r])
        return fg__err(FG_ERR_INVALID, "topk: k = %d out of range for dim %d of size %lld (input %s)", k, dim,
                       (long long)a->shape[r], fg_shape_str(a, b, sizeof b));
    if (a->device == FG_CUDA && a->shape[r] > INT32_MAX)
        return fg__err(FG_ERR_UNSUPPORTED, "topk: dim %d of size %lld is too long for the CUDA kernel (at most 2^31 - 1)",
                       dim, (long long)a->shape[r]);
    int64_t shape[FG_MAX_DIMS]; /* a's shape with dim of size k */
    memcpy(shape, a->shape, sizeof shape);
    shape[r] = k;
    fg_tensor *v = fg__new(op, a->ndim, shape, a->dtype, a->device);
    fg_tensor *ix = v ? fg__new(op, a->ndim, shape, FG_I64, a->device) : NULL;
    if (!ix || (a->device == FG_CUDA ? cuda_topk(op, v, ix, a, r, k, largest) : fg_cpu_topk(v, ix, a, r, k, largest)) !=
                   FG_OK) {
        fg_free(v);
        fg_free(ix);
        return fg_last_status();
    }
    /* Only values carries a gradient; the node saves the indices. */
    if (!record(op, topk_backward, 1, &a, v, r, 0, ix)) {
        fg_free(ix);
        return fg_last_status();
    }
    if (values)
        *values = v;
    else
        fg_free(v);
    if (indices)
        *indices = ix;
    else
        fg_free(ix);
    return FG_OK;
}
