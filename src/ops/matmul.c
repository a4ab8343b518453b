/* Matrix products with numpy.matmul semantics and their backward. */
#include "cpu/cpu.h"

static fg_status matmul_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *a = n->saved[0], *b = n->saved[1];
    /* dA = dC B^T, dB = A^T dC, then summed over broadcast batch dims. */
    if (n->edges[0].needs_grad) gi[0] = fg__reduce_to_edge(n, 0, fg_matmul(go[0], fg_transpose(b, -1, -2)));
    if (n->edges[1].needs_grad) gi[1] = fg__reduce_to_edge(n, 1, fg_matmul(fg_transpose(a, -1, -2), go[0]));
    return FG_OK;
}

/* Both operands at least 2-d. */
static fg_tensor *matmul_nd(fg_tensor *a, fg_tensor *b)
{
    char x[128], y[128];
    int na = a->ndim, nb = b->ndim;
    if (a->shape[na - 1] != b->shape[nb - 2]) {
        fg__err(FG_ERR_SHAPE, "matmul: inner dims differ: %s @ %s", fg_shape_str(a, x, sizeof x),
                fg_shape_str(b, y, sizeof y));
        return NULL;
    }
    int nbatch;
    int64_t shape[FG_MAX_DIMS];
    if (fg__broadcast_shape("matmul (batch dims)", na - 2, a->shape, nb - 2, b->shape, &nbatch, shape) != FG_OK) {
        fg__err(FG_ERR_SHAPE, "matmul: batch dims do not broadcast: %s @ %s", fg_shape_str(a, x, sizeof x),
                fg_shape_str(b, y, sizeof y));
        return NULL;
    }
    if (nbatch + 2 > FG_MAX_DIMS) {
        fg__err(FG_ERR_DIM, "matmul: result would have more than %d dims", FG_MAX_DIMS);
        return NULL;
    }
    int nd = nbatch + 2;
    shape[nbatch] = a->shape[na - 2];
    shape[nbatch + 1] = b->shape[nb - 1];
    if (!fg__check_cpu("matmul", a)) return NULL;
    fg_tensor *out = fg__new("matmul", nd, shape, a->dtype, a->device);
    if (!out) return NULL;
    /* Views of a and b broadcast over the batch dims. */
    int64_t sa[FG_MAX_DIMS], sb[FG_MAX_DIMS], ea[FG_MAX_DIMS], eb[FG_MAX_DIMS];
    memcpy(ea, shape, sizeof ea);
    memcpy(eb, shape, sizeof eb);
    ea[nd - 1] = a->shape[na - 1];
    eb[nd - 2] = b->shape[nb - 2];
    fg__broadcast_strides(a, nd, ea, sa);
    fg__broadcast_strides(b, nd, eb, sb);
    fg_tensor av = *a, bv = *b; /* stack headers: same storage, broadcast strides */
    av.ndim = bv.ndim = nd;
    memcpy(av.shape, ea, sizeof ea);
    memcpy(bv.shape, eb, sizeof eb);
    memcpy(av.stride, sa, sizeof sa);
    memcpy(bv.stride, sb, sizeof sb);
    if (fg_cpu_matmul(out, &av, &bv) != FG_OK) {
        fg_free(out);
        return NULL;
    }
    fg_tensor *in[2] = {a, b};
    if (!fg__any_requires_grad(2, in)) return out;
    fg_node *node = fg__record("matmul", matmul_backward, 2, in, 1, &out);
    if (node && (fg__save(node, a) < 0 || fg__save(node, b) < 0)) {
        fg_free(out);
        fg__err(FG_ERR_OOM, "matmul: out of memory saving tensors for backward");
        return NULL;
    }
    return out;
}

fg_tensor *fg_matmul(fg_tensor *a, fg_tensor *b)
{
    if (!a) { fg__err_null("matmul", "a"); return NULL; }
    if (!b) { fg__err_null("matmul", "b"); return NULL; }
    if (!fg__check_same("matmul", a, b) || !fg__check_float("matmul", a)) return NULL;
    if (a->ndim == 0 || b->ndim == 0) {
        fg__err(FG_ERR_DIM, "matmul: operands must be at least 1-d (got %d-d and %d-d)", a->ndim, b->ndim);
        return NULL;
    }
    /* Checked here so the message names the shapes the caller passed (1-d included). */
    if (a->shape[a->ndim - 1] != b->shape[b->ndim >= 2 ? b->ndim - 2 : 0]) {
        char x[128], y[128];
        fg__err(FG_ERR_SHAPE, "matmul: inner dims differ: %s @ %s", fg_shape_str(a, x, sizeof x),
                fg_shape_str(b, y, sizeof y));
        return NULL;
    }
    if (a->ndim >= 2 && b->ndim >= 2) return matmul_nd(a, b);
    /* 1-d operands: a vector is a (1, k) row on the left, a (k, 1) column on the right. */
    fg_tensor *a2 = a->ndim == 1 ? fg_unsqueeze(a, 0) : a;
    fg_tensor *b2 = b->ndim == 1 ? fg_unsqueeze(b, -1) : b;
    fg_tensor *out = a2 && b2 ? matmul_nd(a2, b2) : NULL;
    fg_tensor *r = out;
    if (out && a->ndim == 1) r = fg_squeeze(r, -2);
    if (r && b->ndim == 1) {
        fg_tensor *r2 = fg_squeeze(r, -1);
        if (r != out) fg_free(r);
        r = r2;
    }
    if (r != out) fg_free(out);
    if (a2 != a) fg_free(a2);
    if (b2 != b) fg_free(b2);
    return r;
}
