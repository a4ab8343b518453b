/* Index ops (PyTorch semantics): gather, scatter, scatter_add, index_select,
 * index_add, topk. Forward and backward side by side; each backward is built
 * from the other ops (gather <-> scatter_add, index_select <-> index_add). */
#include "cpu/cpu_index.h"

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

/* Every index value inside [0, a.size(dim)); FG_ERR_INDEX naming the value otherwise. */
static bool check_range(const char *op, const fg_tensor *a, int dim, int r, const fg_tensor *index)
{
    int64_t bad;
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
static fg_status gather_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    /* Every out element came from one a element: add the grads back at those places. */
    const fg_edge *e = &n->edges[0];
    fg_tensor *z = fg_zeros(e->ndim, e->shape, go[0]->dtype, go[0]->device);
    gi[0] = z ? fg_scatter_add(z, (int)n->i[0], n->saved[0], go[0]) : NULL;
    return gi[0] ? FG_OK : fg_last_status();
}

fg_tensor *fg_gather(fg_tensor *a, int dim, fg_tensor *index)
{
    static const char *op = "gather";
    if (!a) { fg__err_null(op, "input"); return NULL; }
    int r;
    if (!check_index(op, a, index) || !index_dim(op, a, dim, &r)) return NULL;
    if (!check_index_fits(op, index, "input", a, r, false)) return NULL;
    if (!fg__check_cpu(op, a) || !check_range(op, a, dim, r, index)) return NULL;
    fg_tensor *out = fg__new(op, index->ndim, index->shape, a->dtype, a->device); /* index's shape */
    if (!out) return NULL;
    fg_cpu_gather(out, a, r, index);
    fg_tensor *in[2] = {a, NULL};
    return record(op, gather_backward, 2, in, out, r, 0, index) ? out : NULL;
}

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
            gi[0] = z ? fg_scatter(go[0], r, index, z) : NULL;
            if (!gi[0]) return fg_last_status();
        }
    }
    if (n->edges[2].needs_grad) {
        /* As PyTorch: with duplicate indices in scatter every duplicate gets the
         * gradient of the position, though only the last write reached it. */
        gi[2] = pad_to_edge(n, 2, fg_gather(go[0], r, index));
        if (!gi[2]) return fg_last_status();
    }
    return FG_OK;
}

static fg_tensor *scatter_impl(const char *op, fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src, bool add)
{
    if (!a) { fg__err_null(op, "input"); return NULL; }
    if (!src) { fg__err_null(op, "src"); return NULL; }
    int r;
    if (!check_index(op, a, index) || !index_dim(op, a, dim, &r)) return NULL;
    if (!fg__check_same(op, a, src)) return NULL;
    if (!check_index_fits(op, index, "input", a, r, false)) return NULL;
    if (!check_index_fits(op, index, "src", src, r, true)) return NULL;
    if (!fg__check_cpu(op, a) || !check_range(op, a, dim, r, index)) return NULL;
    fg_tensor *out = fg__new_like(op, a);
    if (!out) return NULL;
    if (fg__copy_elements(out, a) != FG_OK || fg_cpu_scatter(out, r, index, src, add) != FG_OK) {
        fg_free(out);
        return NULL;
    }
    fg_tensor *in[3] = {a, NULL, src};
    return record(op, scatter_backward, 3, in, out, r, add, index) ? out : NULL;
}

fg_tensor *fg_scatter(fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src)
{
    return scatter_impl("scatter", a, dim, index, src, false);
}

fg_tensor *fg_scatter_add(fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src)
{
    return scatter_impl("scatter_add", a, dim, index, src, true);
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
    gi[0] = z ? fg_index_add(z, (int)n->i[0], n->saved[0], go[0]) : NULL;
    return gi[0] ? FG_OK : fg_last_status();
}

fg_tensor *fg_index_select(fg_tensor *a, int dim, fg_tensor *index)
{
    static const char *op = "index_select";
    if (!a) { fg__err_null(op, "input"); return NULL; }
    int r;
    if (!check_index(op, a, index) || !check_index_1d(op, index) || !index_dim(op, a, dim, &r)) return NULL;
    if (!fg__check_cpu(op, a) || !check_range(op, a, dim, r, index)) return NULL;
    int64_t shape[FG_MAX_DIMS]; /* a's shape with dim of length numel(index) */
    memcpy(shape, a->shape, sizeof shape);
    shape[r] = index->numel;
    fg_tensor *out = fg__new(op, a->ndim, shape, a->dtype, a->device);
    if (!out) return NULL;
    fg_cpu_index_select(out, a, r, index);
    fg_tensor *in[2] = {a, NULL};
    return record(op, index_select_backward, 2, in, out, r, 0, index) ? out : NULL;
}

static fg_status index_add_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    if (n->edges[0].needs_grad) gi[0] = go[0];
    if (n->edges[2].needs_grad) {
        gi[2] = fg_index_select(go[0], (int)n->i[0], n->saved[0]);
        if (!gi[2]) return fg_last_status();
    }
    return FG_OK;
}

fg_tensor *fg_index_add(fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src)
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
    if (!fg__check_cpu(op, a) || !check_range(op, a, dim, r, index)) return NULL;
    fg_tensor *out = fg__new_like(op, a);
    if (!out) return NULL;
    if (fg__copy_elements(out, a) != FG_OK || fg_cpu_index_add(out, r, index, src) != FG_OK) {
        fg_free(out);
        return NULL;
    }
    fg_tensor *in[3] = {a, NULL, src};
    return record(op, index_add_backward, 3, in, out, r, 0, index) ? out : NULL;
}

/* ---- topk ---- */
static fg_status topk_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    /* The k picked elements get their grads; the others none (indices are distinct). */
    const fg_edge *e = &n->edges[0];
    fg_tensor *z = fg_zeros(e->ndim, e->shape, go[0]->dtype, go[0]->device);
    gi[0] = z ? fg_scatter(z, (int)n->i[0], n->saved[0], go[0]) : NULL;
    return gi[0] ? FG_OK : fg_last_status();
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
    if (!fg__check_cpu(op, a)) return fg_last_status();
    int64_t shape[FG_MAX_DIMS]; /* a's shape with dim of size k */
    memcpy(shape, a->shape, sizeof shape);
    shape[r] = k;
    fg_tensor *v = fg__new(op, a->ndim, shape, a->dtype, a->device);
    fg_tensor *ix = v ? fg__new(op, a->ndim, shape, FG_I64, a->device) : NULL;
    if (!ix || fg_cpu_topk(v, ix, a, r, k, largest) != FG_OK) {
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
