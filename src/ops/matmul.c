/* Matrix products with numpy.matmul semantics, the fused linear layer, their
 * backward, and the autocast hook. CPU tensors run the reference kernel
 * (src/cpu/matmul.c); CUDA tensors run cuBLAS (src/core/cublas.c). */
#include "cpu/cpu.h"
#include <flashgrad/autocast.h>
#include <flashgrad/cublas.h>

/* The dtype autocast casts these operands to, or FG_F32 when it does not apply:
 * no scope open, an operand not on CUDA, an f64/integer operand, or all
 * operands already of the autocast dtype. NULL entries are skipped. */
static fg_dtype autocast_target(int n, fg_tensor *const *t)
{
    fg_dtype ac = fg_autocast_dtype();
    if (ac == FG_F32) return FG_F32;
    bool differ = false;
    for (int i = 0; i < n; i++) {
        if (!t[i]) continue;
        fg_dtype dt = t[i]->dtype;
        if (t[i]->device != FG_CUDA || (dt != FG_F32 && dt != FG_BF16 && dt != FG_F16)) return FG_F32;
        differ |= dt != ac;
    }
    return differ ? ac : FG_F32;
}

/* t as a (rows, cols) matrix: a view, of a contiguous copy when t's strides do
 * not allow one (fg_reshape cannot copy between non-contiguous CUDA layouts). */
static fg_tensor *as_matrix(fg_tensor *t, int64_t rows, int64_t cols)
{
    if (t && !fg_is_contiguous(t)) t = fg_contiguous(t);
    return fg_reshape(t, FG_SHAPE(rows, cols));
}

/* Gradient of b for (..., n, k) @ (k, m) where b is 2-d and a carries every batch
 * dim: one (k, N) @ (N, m) product over the flattened batch instead of a batched
 * (..., k, m) product summed afterwards (no batch-sized temporary, no reduction). */
static fg_tensor *shared_weight_grad(fg_tensor *a, fg_tensor *g)
{
    int64_t k = a->shape[a->ndim - 1], m = g->shape[g->ndim - 1];
    int64_t rows = 1;
    for (int d = 0; d < a->ndim - 1; d++) rows *= a->shape[d];
    fg_tensor *a2 = as_matrix(a, rows, k);
    fg_tensor *g2 = as_matrix(g, rows, m);
    return fg_matmul(fg_transpose(a2, 0, 1), g2);
}

static fg_status matmul_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *a = n->saved[0], *b = n->saved[1];
    /* Backward products run in the dtype of the saved operands (autocast off). */
    fg_status st = fg_autocast_begin(FG_F32);
    if (st != FG_OK) return st;
    /* dA = dC B^T, dB = A^T dC, then summed over broadcast batch dims. */
    if (n->edges[0].needs_grad) gi[0] = fg__reduce_to_edge(n, 0, fg_matmul(go[0], fg_transpose(b, -1, -2)));
    if (n->edges[1].needs_grad) {
        if (n->edges[1].ndim == 2 && b->ndim == 2 && a->ndim > 2)
            gi[1] = shared_weight_grad(a, go[0]);
        else
            gi[1] = fg__reduce_to_edge(n, 1, fg_matmul(fg_transpose(a, -1, -2), go[0]));
    }
    fg_autocast_end();
    for (int i = 0; i < 2; i++)
        if (n->edges[i].needs_grad && !gi[i]) return fg_last_status() != FG_OK ? fg_last_status() : FG_ERR_STATE;
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
    fg_status st = a->device == FG_CUDA ? fg__cuda_matmul("matmul", out, &av, &bv, false) : fg_cpu_matmul(out, &av, &bv);
    if (st != FG_OK) {
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

/* Casts each operand that is not of dtype ac (differentiably); NULL stays NULL. */
static void autocast_operands(fg_dtype ac, int n, fg_tensor *const *in, fg_tensor **out)
{
    for (int i = 0; i < n; i++) out[i] = in[i] && in[i]->dtype != ac ? fg_cast(in[i], ac) : in[i];
}

static void free_casts(int n, fg_tensor *const *in, fg_tensor **cast)
{
    for (int i = 0; i < n; i++)
        if (cast[i] != in[i]) fg_free(cast[i]);
}

fg_tensor *fg_matmul(fg_tensor *a, fg_tensor *b)
{
    if (!a) { fg__err_null("matmul", "a"); return NULL; }
    if (!b) { fg__err_null("matmul", "b"); return NULL; }
    fg_tensor *ops[2] = {a, b};
    fg_dtype ac = autocast_target(2, ops);
    if (ac != FG_F32) {
        /* Autocast: differentiable casts (the f32 leaves get f32 gradients), then
         * the product in the low-precision dtype with autocast suspended. */
        fg_tensor *c[2];
        if (fg_autocast_begin(FG_F32) != FG_OK) return NULL;
        autocast_operands(ac, 2, ops, c);
        fg_tensor *r = c[0] && c[1] ? fg_matmul(c[0], c[1]) : NULL;
        fg_autocast_end();
        free_casts(2, ops, c);
        return r;
    }
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

/* ---- linear: y = x @ w + b ---- */

static fg_status linear_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *x = n->saved[0], *w = n->saved[1], *g = go[0];
    int64_t in = w->shape[0], out = w->shape[1], rows = 1;
    for (int d = 0; d < x->ndim - 1; d++) rows *= x->shape[d];
    fg_status st = fg_autocast_begin(FG_F32);
    if (st != FG_OK) return st;
    if (n->edges[0].needs_grad) gi[0] = fg_matmul(g, fg_transpose(w, 0, 1)); /* (..., out) @ (out, in) */
    fg_tensor *g2 = n->edges[1].needs_grad || n->edges[2].needs_grad ? as_matrix(g, rows, out) : NULL;
    if (n->edges[1].needs_grad) /* (in, N) @ (N, out) over the flattened batch */
        gi[1] = fg_matmul(fg_transpose(as_matrix(x, rows, in), 0, 1), g2);
    if (n->edges[2].needs_grad) /* ones(N) @ (N, out): the column sums as one product (fp32 accumulation) */
        gi[2] = fg_matmul(fg_ones(FG_SHAPE(rows), g->dtype, g->device), g2);
    fg_autocast_end();
    for (int i = 0; i < 3; i++)
        if (n->edges[i].needs_grad && !gi[i]) return fg_last_status() != FG_OK ? fg_last_status() : FG_ERR_STATE;
    return FG_OK;
}

/* x (..., in) as a (rows, in) matrix header with unit column stride (for
 * cuBLASLt), when its layout allows: 1-d, 2-d with rows of unit stride, or
 * contiguous. */
static bool rows_view(const fg_tensor *x, int64_t rows, fg_tensor *xv)
{
    int nd = x->ndim;
    int64_t in = x->shape[nd - 1];
    bool ok = nd == 1 ? x->stride[0] == 1 || in == 1 : nd == 2 ? x->stride[1] == 1 || in == 1 : fg_is_contiguous(x);
    if (!ok) return false;
    *xv = *x;
    xv->ndim = 2;
    xv->shape[0] = rows;
    xv->shape[1] = in;
    xv->stride[0] = nd == 2 && rows > 1 ? x->stride[0] : in;
    xv->stride[1] = 1;
    return xv->stride[0] >= in;
}

/* out (..., out_f) contiguous as a (rows, out_f) matrix header. */
static fg_tensor matrix_of(const fg_tensor *out, int64_t rows, int64_t out_f)
{
    fg_tensor o2 = *out;
    o2.ndim = 2;
    o2.shape[0] = rows;
    o2.shape[1] = out_f;
    o2.stride[0] = out_f;
    o2.stride[1] = 1;
    return o2;
}

/* On CUDA: one cuBLASLt GEMM with the bias epilogue when x's layout allows.
 * Otherwise two cuBLAS calls and no elementwise kernel: the bias is broadcast
 * into the result as the rank-1 product ones(rows, 1) @ b(1, out) (exact: 1 * b
 * in fp32), then x @ w is accumulated onto it (beta = 1), rounded once. */
static fg_tensor *linear_cuda(fg_tensor *x, fg_tensor *w, fg_tensor *b, int nd, const int64_t *shape)
{
    int64_t out_f = w->shape[1], rows = 1;
    for (int d = 0; d < nd - 1; d++) rows *= shape[d];
    fg_tensor *out = fg__new("linear", nd, shape, x->dtype, x->device);
    if (!out) return NULL;
    fg_tensor xv, o2 = matrix_of(out, rows, out_f);
    if (rows > 0 && rows_view(x, rows, &xv)) {
        fg_status st = fg__cuda_linear_lt("linear", &o2, &xv, w, b, false, NULL);
        if (st == FG_OK) return out;
        if (st != FG_ERR_UNSUPPORTED) {
            fg_free(out);
            return NULL;
        }
    }
    fg_tensor *ones = fg__new("linear", FG_SHAPE(rows, 1), x->dtype, x->device);
    if (!ones) goto fail;
    if (rows > 0 && fg__cuda_fill(fg__data(ones), ones->dtype, rows, 1.0) != FG_OK) goto fail;
    /* b as a (1, out) row */
    fg_tensor b2 = *b;
    b2.ndim = 2;
    b2.shape[0] = 1;
    b2.shape[1] = out_f;
    b2.stride[0] = out_f * b->stride[0];
    b2.stride[1] = b->stride[0];
    if (fg__cuda_matmul("linear (bias)", &o2, ones, &b2, false) != FG_OK) goto fail;
    /* x as (rows, in) when its strides allow (else its own batched layout), w broadcast over x's batch dims */
    fg_tensor xh = *x, wh = *w;
    if (nd == 1) { /* x (in) -> (1, in) */
        xh.ndim = 2;
        xh.shape[0] = 1;
        xh.shape[1] = x->shape[0];
        xh.stride[1] = x->stride[0];
        xh.stride[0] = x->shape[0] * x->stride[0];
    }
    int pd = nd >= 2 ? nd : 2;
    fg_tensor oh = nd >= 2 ? *out : o2;
    wh.ndim = pd;
    for (int d = 0; d < pd - 2; d++) {
        wh.shape[d] = shape[d];
        wh.stride[d] = 0;
    }
    wh.shape[pd - 2] = w->shape[0];
    wh.shape[pd - 1] = w->shape[1];
    wh.stride[pd - 2] = w->stride[0];
    wh.stride[pd - 1] = w->stride[1];
    if (fg__cuda_matmul("linear", &oh, &xh, &wh, true) != FG_OK) goto fail;
    fg_free(ones);
    return out;
fail:
    fg_free(ones);
    fg_free(out);
    return NULL;
}

/* Shared argument checks of fg_linear and fg_linear_gelu. */
static bool linear_args(const char *op, fg_tensor *x, fg_tensor *w, fg_tensor *b)
{
    char s1[128], s2[128], s3[128];
    if (!fg__check_same(op, x, w) || (b && !fg__check_same(op, x, b)) || !fg__check_float(op, x)) return false;
    if (w->ndim != 2 || x->ndim < 1 || (b && b->ndim != 1)) {
        fg__err(FG_ERR_DIM, "%s: expects x (..., in), w (in, out) and b (out); got x %s, w %s, b %s", op,
                fg_shape_str(x, s1, sizeof s1), fg_shape_str(w, s2, sizeof s2), b ? fg_shape_str(b, s3, sizeof s3) : "NULL");
        return false;
    }
    if (x->shape[x->ndim - 1] != w->shape[0] || (b && b->shape[0] != w->shape[1])) {
        fg__err(FG_ERR_SHAPE, "%s: sizes do not fit: x %s, w %s, b %s (want x (..., in), w (in, out), b (out))", op,
                fg_shape_str(x, s1, sizeof s1), fg_shape_str(w, s2, sizeof s2), b ? fg_shape_str(b, s3, sizeof s3) : "NULL");
        return false;
    }
    return true;
}

/* The linear node for out = x @ w + b (saves x and w). Returns out, or NULL (out freed). */
static fg_tensor *record_linear(fg_tensor *x, fg_tensor *w, fg_tensor *b, fg_tensor *out)
{
    fg_tensor *in[3] = {x, w, b};
    if (!fg__any_requires_grad(3, in)) return out;
    fg_node *node = fg__record("linear", linear_backward, 3, in, 1, &out);
    if (node && (fg__save(node, x) < 0 || fg__save(node, w) < 0)) {
        fg_free(out);
        fg__err(FG_ERR_OOM, "linear: out of memory saving tensors for backward");
        return NULL;
    }
    return out;
}

/* f (fg_linear or fg_linear_gelu) on x, w, b (ops) cast to autocast dtype ac,
 * inside an f32 autocast scope so that f does not cast again. */
static fg_tensor *linear_autocast(fg_tensor *(*f)(fg_tensor *, fg_tensor *, fg_tensor *), fg_dtype ac,
                                  fg_tensor *const *ops)
{
    fg_tensor *c[3];
    if (fg_autocast_begin(FG_F32) != FG_OK) return NULL;
    autocast_operands(ac, 3, ops, c);
    fg_tensor *r = c[0] && c[1] && (c[2] || !ops[2]) ? f(c[0], c[1], c[2]) : NULL;
    fg_autocast_end();
    free_casts(3, ops, c);
    return r;
}

fg_tensor *fg_linear(fg_tensor *x, fg_tensor *w, fg_tensor *b)
{
    if (!x) { fg__err_null("linear", "x"); return NULL; }
    if (!w) { fg__err_null("linear", "w"); return NULL; }
    fg_tensor *ops[3] = {x, w, b};
    fg_dtype ac = autocast_target(3, ops);
    if (ac != FG_F32) return linear_autocast(fg_linear, ac, ops);
    if (!linear_args("linear", x, w, b)) return NULL;
    if (!b) return fg_matmul(x, w);
    int nd = x->ndim;
    int64_t shape[FG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[nd - 1] = w->shape[1];
    fg_tensor *out;
    if (x->device == FG_CUDA) {
        out = linear_cuda(x, w, b, nd, shape);
    } else {
        /* CPU reference: matmul then add, unrecorded; the node below is the same on both devices. */
        bool prev = fg_set_grad_enabled(false);
        fg_tensor *p = fg_matmul(x, w);
        out = p ? fg_add(p, b) : NULL;
        fg_free(p);
        fg_set_grad_enabled(prev);
    }
    if (!out) return NULL;
    return record_linear(x, w, b, out);
}

fg_tensor *fg_linear_gelu(fg_tensor *x, fg_tensor *w, fg_tensor *b)
{
    static const char *op = "linear_gelu";
    if (!x) { fg__err_null(op, "x"); return NULL; }
    if (!w) { fg__err_null(op, "w"); return NULL; }
    fg_tensor *ops[3] = {x, w, b};
    fg_dtype ac = autocast_target(3, ops);
    if (ac != FG_F32) return linear_autocast(fg_linear_gelu, ac, ops);
    if (!linear_args(op, x, w, b)) return NULL;
    int nd = x->ndim;
    int64_t shape[FG_MAX_DIMS], rows = 1, out_f = w->shape[1];
    memcpy(shape, x->shape, sizeof shape);
    shape[nd - 1] = out_f;
    for (int d = 0; d < nd - 1; d++) rows *= shape[d];
    fg_tensor xv;
    if (x->device == FG_CUDA && rows > 0 && rows_view(x, rows, &xv)) {
        /* One cuBLASLt GEMM: GELU(x @ w + b) into out and, for the backward,
         * the pre-activation into pre (the GELU node's saved input). */
        bool grad = fg__any_requires_grad(3, ops);
        fg_tensor *out = fg__new(op, nd, shape, x->dtype, x->device);
        fg_tensor *pre = out && grad ? fg__new(op, nd, shape, x->dtype, x->device) : NULL;
        if (!out || (grad && !pre)) goto fail;
        fg_tensor o2 = matrix_of(out, rows, out_f), p2 = pre ? matrix_of(pre, rows, out_f) : o2;
        fg_status st = fg__cuda_linear_lt(op, &o2, &xv, w, b, true, pre ? &p2 : NULL);
        if (st == FG_OK) {
            if (!pre) return out;
            if (!record_linear(x, w, b, pre)) {
                pre = NULL;
                goto fail;
            }
            fg_tensor *r = fg__record_unary(FG_UN_GELU_TANH, 0, pre, out);
            fg_free(pre); /* the GELU node keeps it */
            return r;
        }
        if (st != FG_ERR_UNSUPPORTED) goto fail;
        fg_free(pre);
        fg_free(out);
        goto composite;
    fail:
        fg_free(pre);
        fg_free(out);
        return NULL;
    }
composite:; /* CPU (the reference), or a case cuBLASLt does not take */
    fg_tensor *pre = fg_linear(x, w, b);
    fg_tensor *out = pre ? fg_gelu(pre, true) : NULL;
    fg_free(pre);
    return out;
}
