/* Embedding lookup: rows of a (V, D) table picked by an index tensor of any
 * shape. The backward scatter-adds the output gradient into a zero (V, D). */
#include "cpu/cpu_nn.h"

/* saved[0]: the contiguous indices. */
static fg_status embedding_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_edge *e = &n->edges[0];
    if (!fg__check_cpu("embedding", go[0])) return fg_last_status();
    fg_tensor *g = fg__contig(go[0]); /* (*indices.shape, D) */
    fg_tensor *gw = g ? fg__new("embedding", 2, e->shape, e->dtype, e->device) : NULL; /* (V, D) */
    fg_status st = gw ? fg_cpu_embedding_grad(gw, n->saved[0], g) : fg_last_status();
    fg__unref(g);
    gi[0] = gw;
    return st;
}

fg_tensor *fg_embedding(fg_tensor *weight, fg_tensor *indices)
{
    static const char *op = "embedding";
    char bw[128], bi[128];
    if (!weight) { fg__err_null(op, "weight"); return NULL; }
    if (!indices) { fg__err_null(op, "indices"); return NULL; }
    if (!fg__check_float(op, weight) || !fg__check_index_dtype(op, indices)) return NULL;
    if (weight->ndim != 2) {
        fg__err(FG_ERR_SHAPE, "%s: weight must be 2-d (V, D), got %s", op, fg_shape_str(weight, bw, sizeof bw));
        return NULL;
    }
    if (indices->ndim + 1 > FG_MAX_DIMS) {
        fg__err(FG_ERR_DIM, "%s: indices %s have %d dims; the result would exceed %d", op,
                fg_shape_str(indices, bi, sizeof bi), indices->ndim, FG_MAX_DIMS);
        return NULL;
    }
    if (weight->device != indices->device) {
        fg__err(FG_ERR_DEVICE, "%s: weight %s on %s but indices %s on %s", op, fg_shape_str(weight, bw, sizeof bw),
                fg_device_name(weight->device), fg_shape_str(indices, bi, sizeof bi), fg_device_name(indices->device));
        return NULL;
    }
    if (!fg__check_cpu(op, weight)) return NULL;
    int64_t V = weight->shape[0];
    fg_tensor *ic = fg__contig(indices);
    if (!ic) return NULL;
    int64_t bad = fg_cpu_first_out_of_range(ic, V, false, 0, NULL);
    if (bad >= 0) {
        fg__err(FG_ERR_INDEX, "%s: index %lld at flat position %lld of indices %s is out of range for weight %s "
                              "(%lld rows)", op, (long long)fg__ld_index(fg__data(ic), ic->dtype, bad), (long long)bad,
                fg_shape_str(indices, bi, sizeof bi), fg_shape_str(weight, bw, sizeof bw), (long long)V);
        fg__unref(ic);
        return NULL;
    }
    int64_t shape[FG_MAX_DIMS]; /* (*indices.shape, D) */
    memcpy(shape, indices->shape, (size_t)indices->ndim * sizeof *shape);
    shape[indices->ndim] = weight->shape[1];
    fg_tensor *out = fg__new(op, indices->ndim + 1, shape, weight->dtype, weight->device);
    if (out) fg_cpu_embedding(out, weight, ic);
    if (out && fg__any_requires_grad(1, &weight)) {
        fg_node *node = fg__record(op, embedding_backward, 1, &weight, 1, &out);
        if (!node || fg__save(node, ic) < 0) {
            fg_free(out);
            out = NULL;
            fg__err(FG_ERR_OOM, "%s: out of memory recording backward", op);
        }
    }
    fg__unref(ic);
    return out;
}
