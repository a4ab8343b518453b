/* Elementwise ops: binary with broadcasting, unary, comparisons, where, masked_fill.
 * Forward and backward side by side. */
#include "cpu/cpu.h"

static const char *binary_name[] = {"add", "sub", "mul", "div", "pow", "gt", "eq"};

/* Output (broadcast shape) of a binary op, computed on a's device. */
static fg_tensor *binary_forward(fg_binary_op op, fg_tensor *a, fg_tensor *b)
{
    const char *name = binary_name[op];
    if (!a) { fg__err_null(name, "a"); return NULL; }
    if (!b) { fg__err_null(name, "b"); return NULL; }
    if (!fg__check_same(name, a, b)) return NULL;
    if (op == FG_BIN_DIV || op == FG_BIN_POW) {
        if (!fg__check_float(name, a)) return NULL;
    }
    int n;
    int64_t shape[FG_MAX_DIMS];
    if (fg__broadcast_shape(name, a->ndim, a->shape, b->ndim, b->shape, &n, shape) != FG_OK) return NULL;
    fg_tensor *out = fg__new(name, n, shape, a->dtype, a->device);
    if (!out) return NULL;
    if (a->device == FG_CPU) {
        fg_cpu_binary(op, out, a, b);
    } else if (FG_CUDA_CALL(name, fg_k_binary((int)op, fg__kt(out), fg__kt_bcast(a, n, shape), fg__kt_bcast(b, n, shape),
                                              fg__cuda_stream())) != FG_OK) {
        fg_free(out);
        return NULL;
    }
    return out;
}

static fg_status add_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    if (n->edges[0].needs_grad) gi[0] = fg__reduce_to_edge(n, 0, go[0]);
    if (n->edges[1].needs_grad) gi[1] = fg__reduce_to_edge(n, 1, go[0]);
    return FG_OK;
}

static fg_status sub_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    if (n->edges[0].needs_grad) gi[0] = fg__reduce_to_edge(n, 0, go[0]);
    if (n->edges[1].needs_grad) gi[1] = fg__reduce_to_edge(n, 1, fg_neg(go[0]));
    return FG_OK;
}

static fg_status mul_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *a = n->saved[0], *b = n->saved[1];
    if (n->edges[0].needs_grad) gi[0] = fg__reduce_to_edge(n, 0, fg_mul(go[0], b));
    if (n->edges[1].needs_grad) gi[1] = fg__reduce_to_edge(n, 1, fg_mul(go[0], a));
    return FG_OK;
}

static fg_status div_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *b = n->saved[0], *out = n->saved[1];
    if (n->edges[0].needs_grad) gi[0] = fg__reduce_to_edge(n, 0, fg_div(go[0], b));
    /* d(a/b)/db = -a/b^2 = -out/b */
    if (n->edges[1].needs_grad) gi[1] = fg__reduce_to_edge(n, 1, fg_neg(fg_div(fg_mul(go[0], out), b)));
    return FG_OK;
}

static fg_status pow_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *a = n->saved[0], *b = n->saved[1], *out = n->saved[2];
    /* d a^b / da = b a^(b-1); d a^b / db = a^b log a (defined for a > 0). */
    if (n->edges[0].needs_grad)
        gi[0] = fg__reduce_to_edge(n, 0, fg_mul(go[0], fg_mul(b, fg_pow(a, fg_add_scalar(b, -1.0)))));
    if (n->edges[1].needs_grad) gi[1] = fg__reduce_to_edge(n, 1, fg_mul(go[0], fg_mul(out, fg_log(a))));
    return FG_OK;
}

static fg_tensor *binary(fg_binary_op op, fg_tensor *a, fg_tensor *b)
{
    fg_tensor *out = binary_forward(op, a, b);
    fg_tensor *in[2] = {a, b};
    if (!out || op == FG_BIN_GT || op == FG_BIN_EQ || !fg__any_requires_grad(2, in)) return out;
    static const fg_backward_fn fns[] = {add_backward, sub_backward, mul_backward, div_backward, pow_backward};
    fg_node *node = fg__record(binary_name[op], fns[op], 2, in, 1, &out);
    if (!node) return out;
    bool ok = true;
    if (op == FG_BIN_MUL) ok = fg__save(node, a) >= 0 && fg__save(node, b) >= 0;
    if (op == FG_BIN_DIV) ok = fg__save(node, b) >= 0 && fg__save(node, out) >= 0;
    if (op == FG_BIN_POW) ok = fg__save(node, a) >= 0 && fg__save(node, b) >= 0 && fg__save(node, out) >= 0;
    if (!ok) {
        fg_free(out);
        fg__err(FG_ERR_OOM, "%s: out of memory saving tensors for backward", binary_name[op]);
        return NULL;
    }
    return out;
}

fg_tensor *fg_add(fg_tensor *a, fg_tensor *b) { return binary(FG_BIN_ADD, a, b); }
fg_tensor *fg_sub(fg_tensor *a, fg_tensor *b) { return binary(FG_BIN_SUB, a, b); }
fg_tensor *fg_mul(fg_tensor *a, fg_tensor *b) { return binary(FG_BIN_MUL, a, b); }
fg_tensor *fg_div(fg_tensor *a, fg_tensor *b) { return binary(FG_BIN_DIV, a, b); }
fg_tensor *fg_pow(fg_tensor *a, fg_tensor *b) { return binary(FG_BIN_POW, a, b); }
fg_tensor *fg_gt(fg_tensor *a, fg_tensor *b) { return binary(FG_BIN_GT, a, b); }
fg_tensor *fg_eq(fg_tensor *a, fg_tensor *b) { return binary(FG_BIN_EQ, a, b); }

/* ---- unary ---- */
static const char *unary_name[] = {"neg", "exp", "log", "sqrt", "rsqrt", "abs", "tanh", "sigmoid", "relu",
                                   "gelu", "gelu", "silu", "add_scalar", "mul_scalar", "pow_scalar",
                                   "rsub_scalar", "rdiv_scalar"};

/* Rules that need only the output save y (exp, tanh, sigmoid, sqrt, rsqrt); others save x. */
static bool uses_output(fg_unary_op op)
{
    return op == FG_UN_EXP || op == FG_UN_TANH || op == FG_UN_SIGMOID || op == FG_UN_SQRT || op == FG_UN_RSQRT;
}

static fg_status unary_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_unary_op op = (fg_unary_op)n->i[0];
    double s = n->f[0];
    if (op == FG_UN_NEG || op == FG_UN_ADD_SCALAR || op == FG_UN_MUL_SCALAR || op == FG_UN_RSUB_SCALAR) {
        double k = op == FG_UN_ADD_SCALAR ? 1.0 : op == FG_UN_MUL_SCALAR ? s : -1.0;
        /* Gradients may be borrowed: everything lives until the engine's scope ends. */
        gi[0] = k == 1.0 ? go[0] : fg_mul_scalar(go[0], k);
        return gi[0] ? FG_OK : fg_last_status();
    }
    fg_tensor *xy = n->saved[0];
    fg_tensor *gx = fg__new(unary_name[op], xy->ndim, xy->shape, go[0]->dtype, go[0]->device);
    if (!gx) return fg_last_status();
    if (gx->device == FG_CPU) {
        fg_cpu_unary_grad(op, gx, xy, xy, go[0], s);
    } else {
        /* The kernel reads only the tensor the derivative needs (x or y: xy is the one saved). */
        fg_status st = FG_CUDA_CALL(unary_name[op], fg_k_unary_grad((int)op, fg__kt(gx), fg__kt(xy), fg__kt(xy),
                                                                    fg__kt(go[0]), s, fg__cuda_stream()));
        if (st != FG_OK) return st;
    }
    gi[0] = gx;
    return FG_OK;
}

static fg_tensor *unary(fg_unary_op op, fg_tensor *a, double s)
{
    const char *name = unary_name[op];
    if (!a) { fg__err_null(name, "input"); return NULL; }
    bool keeps_int = op == FG_UN_NEG || op == FG_UN_ABS || op == FG_UN_RELU;
    if (!keeps_int && !fg__check_float(name, a)) return NULL;
    fg_tensor *out = fg__new_like(name, a);
    if (!out) return NULL;
    if (a->device == FG_CPU) {
        fg_cpu_unary(op, out, a, s);
    } else if (FG_CUDA_CALL(name, fg_k_unary((int)op, fg__kt(out), fg__kt(a), s, fg__cuda_stream())) != FG_OK) {
        fg_free(out);
        return NULL;
    }
    return fg__record_unary(op, s, a, out);
}

fg_tensor *fg__record_unary(int op_, double s, fg_tensor *a, fg_tensor *out)
{
    fg_unary_op op = (fg_unary_op)op_;
    const char *name = unary_name[op];
    if (!fg__any_requires_grad(1, &a)) return out;
    fg_node *node = fg__record(name, unary_backward, 1, &a, 1, &out);
    if (!node) return out;
    node->i[0] = op;
    node->f[0] = s;
    bool needs_saved = !(op == FG_UN_NEG || op == FG_UN_ADD_SCALAR || op == FG_UN_MUL_SCALAR || op == FG_UN_RSUB_SCALAR);
    if (needs_saved && fg__save(node, uses_output(op) ? out : a) < 0) {
        fg_free(out);
        fg__err(FG_ERR_OOM, "%s: out of memory saving tensors for backward", name);
        return NULL;
    }
    return out;
}

fg_tensor *fg_neg(fg_tensor *a) { return unary(FG_UN_NEG, a, 0); }
fg_tensor *fg_exp(fg_tensor *a) { return unary(FG_UN_EXP, a, 0); }
fg_tensor *fg_log(fg_tensor *a) { return unary(FG_UN_LOG, a, 0); }
fg_tensor *fg_sqrt(fg_tensor *a) { return unary(FG_UN_SQRT, a, 0); }
fg_tensor *fg_rsqrt(fg_tensor *a) { return unary(FG_UN_RSQRT, a, 0); }
fg_tensor *fg_abs(fg_tensor *a) { return unary(FG_UN_ABS, a, 0); }
fg_tensor *fg_tanh(fg_tensor *a) { return unary(FG_UN_TANH, a, 0); }
fg_tensor *fg_sigmoid(fg_tensor *a) { return unary(FG_UN_SIGMOID, a, 0); }
fg_tensor *fg_relu(fg_tensor *a) { return unary(FG_UN_RELU, a, 0); }
fg_tensor *fg_gelu(fg_tensor *a, bool approximate) { return unary(approximate ? FG_UN_GELU_TANH : FG_UN_GELU_ERF, a, 0); }
fg_tensor *fg_silu(fg_tensor *a) { return unary(FG_UN_SILU, a, 0); }
fg_tensor *fg_add_scalar(fg_tensor *a, double s) { return unary(FG_UN_ADD_SCALAR, a, s); }
fg_tensor *fg_mul_scalar(fg_tensor *a, double s) { return unary(FG_UN_MUL_SCALAR, a, s); }
fg_tensor *fg_pow_scalar(fg_tensor *a, double e) { return unary(FG_UN_POW_SCALAR, a, e); }
fg_tensor *fg_rsub_scalar(fg_tensor *a, double s) { return unary(FG_UN_RSUB_SCALAR, a, s); }
fg_tensor *fg_rdiv_scalar(fg_tensor *a, double s) { return unary(FG_UN_RDIV_SCALAR, a, s); }

/* ---- where / masked_fill ---- */
static fg_status where_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *cond = n->saved[0];
    fg_tensor *zero = fg_zeros(0, NULL, go[0]->dtype, go[0]->device);
    if (!zero) return fg_last_status();
    if (n->edges[1].needs_grad) gi[1] = fg__reduce_to_edge(n, 1, fg_where(cond, go[0], zero));
    if (n->edges[2].needs_grad) gi[2] = fg__reduce_to_edge(n, 2, fg_where(cond, zero, go[0]));
    return FG_OK;
}

fg_tensor *fg_where(fg_tensor *cond, fg_tensor *a, fg_tensor *b)
{
    static const char *name = "where";
    if (!cond) { fg__err_null(name, "cond"); return NULL; }
    if (!a) { fg__err_null(name, "a"); return NULL; }
    if (!b) { fg__err_null(name, "b"); return NULL; }
    if (!fg__check_same(name, a, b)) return NULL;
    if (cond->device != a->device) {
        fg__err(FG_ERR_DEVICE, "where: cond on %s, values on %s", fg_device_name(cond->device), fg_device_name(a->device));
        return NULL;
    }
    int n1, n2;
    int64_t s1[FG_MAX_DIMS], s2[FG_MAX_DIMS];
    if (fg__broadcast_shape(name, a->ndim, a->shape, b->ndim, b->shape, &n1, s1) != FG_OK) return NULL;
    if (fg__broadcast_shape(name, cond->ndim, cond->shape, n1, s1, &n2, s2) != FG_OK) return NULL;
    fg_tensor *out = fg__new(name, n2, s2, a->dtype, a->device);
    if (!out) return NULL;
    if (a->device == FG_CPU) {
        fg_cpu_where(out, cond, a, b);
    } else if (FG_CUDA_CALL(name, fg_k_where(fg__kt(out), fg__kt_bcast(cond, n2, s2), fg__kt_bcast(a, n2, s2),
                                             fg__kt_bcast(b, n2, s2), fg__cuda_stream())) != FG_OK) {
        fg_free(out);
        return NULL;
    }
    fg_tensor *in[3] = {NULL, a, b};
    if (!fg__any_requires_grad(3, in)) return out;
    fg_node *node = fg__record(name, where_backward, 3, in, 1, &out);
    if (node && fg__save(node, cond) < 0) {
        fg_free(out);
        fg__err(FG_ERR_OOM, "where: out of memory saving tensors for backward");
        return NULL;
    }
    return out;
}

fg_tensor *fg_masked_fill(fg_tensor *a, fg_tensor *mask, double value)
{
    if (!a) { fg__err_null("masked_fill", "a"); return NULL; }
    if (!mask) { fg__err_null("masked_fill", "mask"); return NULL; }
    int n;
    int64_t shape[FG_MAX_DIMS];
    if (fg__broadcast_shape("masked_fill", mask->ndim, mask->shape, a->ndim, a->shape, &n, shape) != FG_OK) return NULL;
    if (n != a->ndim || memcmp(shape, a->shape, (size_t)n * sizeof *shape) != 0) {
        char x[128], y[128];
        fg__err(FG_ERR_SHAPE, "masked_fill: mask %s does not broadcast to input %s", fg_shape_str(mask, x, sizeof x),
                fg_shape_str(a, y, sizeof y));
        return NULL;
    }
    fg_tensor *fill = fg_full(0, NULL, value, a->dtype, a->device);
    if (!fill) return NULL;
    fg_tensor *out = fg_where(mask, fill, a);
    fg_free(fill);
    return out;
}
