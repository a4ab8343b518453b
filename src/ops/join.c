/* Joining (concat, stack) and splitting (split, chunk). concat and stack copy
 * each input into its window of one output, so they need no kernel of their own
 * and run wherever fg__copy_elements does; their backward hands each input a
 * view of the gradient. split and chunk return views of their input that
 * share one autograd node, whose backward writes the pieces' gradients into one
 * tensor. */
#include <stdlib.h>
#include <string.h>
#include "cpu/cpu.h"

/* ---- concat / stack ---- */

/* The window of `whole` (output or its gradient) that input i of the node
 * occupies: along dim from `start` for concat; at position `start` with dim
 * dropped for stack. */
static fg_tensor *window(const fg_tensor *whole, int dim, int64_t start, bool stack, int ndim, const int64_t *shape)
{
    int64_t st[FG_MAX_DIMS];
    for (int d = 0, k = 0; d < whole->ndim; d++)
        if (!stack || d != dim) st[k++] = whole->stride[d];
    return fg__view(whole, ndim, shape, st, whole->offset + start * whole->stride[dim]);
}

static fg_status join_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    int dim = (int)n->i[0];
    bool stack = n->i[1] != 0;
    int64_t start = 0;
    for (int i = 0; i < n->n_inputs; i++) {
        const fg_edge *e = &n->edges[i];
        if (e->needs_grad) {
            gi[i] = window(go[0], dim, start, stack, e->ndim, e->shape);
            if (!gi[i]) return fg_last_status();
        }
        start += stack ? 1 : e->shape[dim];
    }
    return FG_OK;
}

static fg_tensor *join(const char *op, int n, fg_tensor *const *ts, int dim, bool stack)
{
    if (!ts) { fg__err_null(op, "tensor list"); return NULL; }
    if (n < 1) {
        fg__err(FG_ERR_INVALID, "%s: needs at least one tensor, got n = %d", op, n);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!ts[i]) {
            char what[32];
            snprintf(what, sizeof what, "tensor %d", i);
            fg__err_null(op, what);
            return NULL;
        }
    const fg_tensor *t0 = ts[0];
    char b0[128], b1[128];
    if (!stack && t0->ndim == 0) {
        fg__err(FG_ERR_DIM, "concat: 0-d tensors cannot be concatenated (unsqueeze them or use fg_stack)");
        return NULL;
    }
    if (stack && t0->ndim >= FG_MAX_DIMS) {
        fg__err(FG_ERR_DIM, "stack: inputs %s already have the maximum %d dims", fg_shape_str(t0, b0, sizeof b0),
                FG_MAX_DIMS);
        return NULL;
    }
    int r;
    if (fg__norm_dim(op, t0, dim, stack ? 1 : 0, &r) != FG_OK) return NULL;
    /* Same dtype/device everywhere; same shape, except along dim for concat. */
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const fg_tensor *t = ts[i];
        if (!fg__check_same(op, t0, t)) return NULL;
        bool ok = t->ndim == t0->ndim;
        for (int d = 0; ok && d < t->ndim; d++) ok = t->shape[d] == t0->shape[d] || (!stack && d == r);
        if (!ok) {
            if (stack)
                fg__err(FG_ERR_SHAPE, "stack: tensor %d has shape %s but tensor 0 has %s (all must match)", i,
                        fg_shape_str(t, b1, sizeof b1), fg_shape_str(t0, b0, sizeof b0));
            else
                fg__err(FG_ERR_SHAPE, "concat: tensor %d has shape %s but tensor 0 has %s (only dim %d may differ)", i,
                        fg_shape_str(t, b1, sizeof b1), fg_shape_str(t0, b0, sizeof b0), dim);
            return NULL;
        }
        total += stack ? 1 : t->shape[r];
    }
    int64_t shape[FG_MAX_DIMS]; /* t0's shape with dim of size `total` (inserted for stack) */
    int nd = stack ? t0->ndim + 1 : t0->ndim;
    for (int d = 0; d < nd; d++) shape[d] = d == r ? total : t0->shape[stack && d > r ? d - 1 : d];
    fg_tensor *out = fg__new(op, nd, shape, t0->dtype, t0->device);
    if (!out) return NULL;
    int64_t start = 0;
    for (int i = 0; i < n; i++) {
        fg_tensor *w = window(out, r, start, stack, ts[i]->ndim, ts[i]->shape);
        fg_status s = w ? fg__copy_elements(w, ts[i]) : fg_last_status();
        fg_free(w);
        if (s != FG_OK) {
            fg_free(out);
            return NULL;
        }
        start += stack ? 1 : ts[i]->shape[r];
    }
    if (!fg__any_requires_grad(n, ts)) return out;
    fg_node *node = fg__record(op, join_backward, n, ts, 1, &out);
    if (node) {
        node->i[0] = r;
        node->i[1] = stack;
    } else if (fg_last_status() == FG_ERR_OOM) {
        fg_free(out);
        return NULL;
    }
    return out;
}

fg_tensor *fg_concat(int n, fg_tensor *const *ts, int dim) { return join("concat", n, ts, dim, false); }
fg_tensor *fg_stack(int n, fg_tensor *const *ts, int dim) { return join("stack", n, ts, dim, true); }

/* ---- split / chunk ---- */

/* When the pieces' gradients already are the windows of one contiguous tensor
 * of the input's shape (an op that wrote them into one buffer, as attention's
 * backward does for a fused qkv projection), that tensor as a view; else NULL. */
static fg_tensor *tiled_whole(const fg_node *n, fg_tensor *const *go, int r)
{
    const fg_edge *e = &n->edges[0];
    int64_t cs[FG_MAX_DIMS], start = 0;
    fg__contiguous_strides(e->ndim, e->shape, cs);
    for (int k = 0; k < n->n_outputs; k++) {
        const fg_tensor *g = go[k];
        if (g->storage != go[0]->storage || g->dtype != go[0]->dtype || g->ndim != e->ndim ||
            g->offset != go[0]->offset + start * cs[r])
            return NULL;
        for (int d = 0; d < e->ndim; d++)
            if (g->shape[d] > 1 && g->stride[d] != cs[d]) return NULL;
        start += n->i[1 + k];
    }
    const int64_t end = go[0]->offset + (e->ndim ? cs[0] * e->shape[0] : 1); /* in elements */
    if ((size_t)end * fg_dtype_size(go[0]->dtype) > go[0]->storage->nbytes) return NULL; /* 0: unknown size */
    return fg__view(go[0], e->ndim, e->shape, cs, go[0]->offset);
}

/* split's backward: the pieces' gradients copied into their windows of one
 * gradient of the input (one copy each; no zero fill, no additions). i[0] dim,
 * i[1 + k] size of piece k. */
static fg_status split_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_edge *e = &n->edges[0];
    const int r = (int)n->i[0];
    if ((gi[0] = tiled_whole(n, go, r))) return FG_OK;
    fg_tensor *g = fg__new("split", e->ndim, e->shape, go[0]->dtype, go[0]->device);
    if (!g) return fg_last_status();
    int64_t start = 0;
    for (int k = 0; k < n->n_outputs; k++) {
        fg_tensor *w = window(g, r, start, false, go[k]->ndim, go[k]->shape);
        fg_status st = w ? fg__copy_elements(w, go[k]) : fg_last_status();
        fg_free(w);
        if (st != FG_OK) return st;
        start += n->i[1 + k];
    }
    gi[0] = g;
    return FG_OK;
}

/* Writes n narrow views of t along dim r with the given sizes (already checked);
 * on failure frees the ones made and leaves out[] all NULL. With gradients they
 * share one node (split_backward) while the sizes fit in its parameters. */
static fg_status narrow_pieces(const char *op, fg_tensor *t, int r, int n, const int64_t *sizes, fg_tensor **out)
{
    const bool one_node = fg__any_requires_grad(1, &t) && n < FG_MAX_DIMS * 2;
    int64_t start = 0;
    for (int i = 0; i < n; i++) {
        if (one_node) {
            int64_t sh[FG_MAX_DIMS];
            memcpy(sh, t->shape, sizeof sh);
            sh[r] = sizes[i];
            out[i] = fg__view(t, t->ndim, sh, t->stride, t->offset + start * t->stride[r]);
        } else {
            out[i] = fg_narrow(t, r, start, sizes[i]);
        }
        if (!out[i]) goto fail;
        start += sizes[i];
    }
    if (one_node) {
        fg_node *node = fg__record(op, split_backward, 1, &t, n, out);
        if (!node) goto fail;
        node->i[0] = r;
        for (int i = 0; i < n; i++) node->i[1 + i] = sizes[i];
    }
    return FG_OK;
fail:
    for (int j = 0; j < n; j++) {
        fg_free(out[j]);
        out[j] = NULL;
    }
    return fg_last_status();
}

/* Common checks of split and chunk: t, out, n >= 1, a dim t has. */
static fg_status split_args(const char *op, fg_tensor *t, int dim, int n, fg_tensor **out, int *r)
{
    if (!t) return fg__err_null(op, "input");
    if (!out) return fg__err_null(op, "out");
    if (n < 1) return fg__err(FG_ERR_INVALID, "%s: needs n >= 1 pieces, got %d", op, n);
    for (int i = 0; i < n; i++) out[i] = NULL;
    if (t->ndim == 0) return fg__err(FG_ERR_DIM, "%s: a 0-d tensor has no dim %d to split", op, dim);
    return fg__norm_dim(op, t, dim, 0, r);
}

/* Bad sizes (negative, or not summing to the dim's size) are FG_ERR_INVALID:
 * they are argument values out of their domain, like topk's k. */
fg_status fg_split(fg_tensor *t, int dim, int n, const int64_t *sizes, fg_tensor **out)
{
    int r;
    fg_status s = split_args("split", t, dim, n, out, &r);
    if (s != FG_OK) return s;
    if (!sizes) return fg__err_null("split", "sizes");
    char b[128];
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
        if (sizes[i] < 0)
            return fg__err(FG_ERR_INVALID, "split: size %lld of piece %d is negative (input %s)", (long long)sizes[i], i,
                           fg_shape_str(t, b, sizeof b));
        if (__builtin_add_overflow(sum, sizes[i], &sum)) sum = INT64_MAX;
    }
    if (sum != t->shape[r])
        return fg__err(FG_ERR_INVALID, "split: sizes sum to %lld but dim %d of %s has size %lld", (long long)sum, dim,
                       fg_shape_str(t, b, sizeof b), (long long)t->shape[r]);
    return narrow_pieces("split", t, r, n, sizes, out);
}

/* torch.chunk: pieces of ceil(size / n), the last one smaller. torch returns
 * fewer than n chunks when the ceil division runs out of elements early (size 5
 * into 4 gives 2, 2, 1); since this API always writes n tensors, the missing
 * ones are empty views (size 0 along dim, starting at the end of the dim), e.g.
 * sizes 2, 2, 1, 0. An empty dim gives n empty views. */
fg_status fg_chunk(fg_tensor *t, int dim, int n, fg_tensor **out)
{
    int r;
    fg_status s = split_args("chunk", t, dim, n, out, &r);
    if (s != FG_OK) return s;
    int64_t size = t->shape[r], piece = (size + n - 1) / n;
    int64_t *sizes = malloc((size_t)n * sizeof *sizes);
    if (!sizes) return fg__err(FG_ERR_OOM, "chunk: out of memory for %d sizes", n);
    for (int i = 0; i < n; i++) {
        int64_t rest = size - (int64_t)i * piece;
        sizes[i] = rest <= 0 ? 0 : rest < piece ? rest : piece;
    }
    s = narrow_pieces("chunk", t, r, n, sizes, out);
    free(sizes);
    return s;
}
