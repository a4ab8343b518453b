/* Gradient checking by central differences, and tensor comparison. */
#include <float.h>
#include <stdlib.h>
#include "internal.h"

static int64_t flat_to_offset(const fg_tensor *t, int64_t j)
{
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (j % t->shape[d]) * t->stride[d];
        j /= t->shape[d];
    }
    return off;
}

/* sum(out * R) in double, no graph. */
static fg_status projected(fg_gradcheck_fn f, void *ctx, fg_tensor *const *inputs, const double *r, int64_t n,
                           double *value)
{
    fg_scope *s = fg_scope_begin();
    if (!s) return fg_last_status();
    fg_tensor *out = f(inputs, ctx);
    fg_status st = FG_OK;
    double *v = NULL;
    if (!out) {
        st = fg_last_status() != FG_OK ? fg_last_status() : fg__err(FG_ERR_STATE, "gradcheck: function returned NULL");
    } else if (out->numel != n) {
        st = fg__err(FG_ERR_STATE, "gradcheck: output size changed between calls (%lld vs %lld)",
                     (long long)out->numel, (long long)n);
    } else if (!(v = malloc((size_t)(n ? n : 1) * sizeof *v))) {
        st = fg__err(FG_ERR_OOM, "gradcheck: out of memory");
    } else if ((st = fg_to_f64_array(out, v, n)) == FG_OK) {
        double acc = 0;
        for (int64_t i = 0; i < n; i++) acc += v[i] * r[i];
        *value = acc;
    }
    free(v);
    fg_scope_end(s);
    return st;
}

fg_status fg_gradcheck(fg_gradcheck_fn f, void *ctx, int n_inputs, fg_tensor *const *inputs,
                       const fg_gradcheck_opts *opts, fg_gradcheck_result *res)
{
    static const char *op = "fg_gradcheck";
    if (!f) return fg__err_null(op, "function");
    if (!inputs) return fg__err_null(op, "inputs");
    if (!res) return fg__err_null(op, "result");
    if (n_inputs < 1 || n_inputs > FG_GRADCHECK_MAX_INPUTS)
        return fg__err(FG_ERR_INVALID, "%s: %d inputs (1..%d supported)", op, n_inputs, FG_GRADCHECK_MAX_INPUTS);
    fg_gradcheck_opts o = {.eps = 1e-6, .atol = 1e-5, .rtol = 1e-3, .seed = 1234, .verbose = false};
    if (opts) {
        o = *opts;
        if (o.eps <= 0) o.eps = 1e-6;
        if (o.atol <= 0 && o.rtol <= 0) { o.atol = 1e-5; o.rtol = 1e-3; }
    }
    memset(res, 0, sizeof *res);
    res->n_inputs = n_inputs;
    for (int i = 0; i < n_inputs; i++) {
        if (!inputs[i]) return fg__err_null(op, "input");
        if (inputs[i]->dtype != FG_F64 || inputs[i]->device != FG_CPU) {
            char b[128];
            return fg__err(FG_ERR_DTYPE, "%s: input %d is %s %s on %s; finite differences need f64 CPU inputs", op, i,
                           fg_dtype_name(inputs[i]->dtype), fg_shape_str(inputs[i], b, sizeof b),
                           fg_device_name(inputs[i]->device));
        }
        if (inputs[i]->grad_fn)
            return fg__err(FG_ERR_INVALID, "%s: input %d is not a leaf (made by '%s')", op, i, inputs[i]->grad_fn->name);
    }

    /* Analytic gradients of L = sum(f(x) * R). */
    fg_generator *g = fg_generator_new(o.seed);
    if (!g) return fg_last_status();
    fg_status st = FG_OK;
    double *r = NULL;
    int64_t n_out = 0;
    fg_scope *s = fg_scope_begin();
    if (!s) {
        fg_generator_free(g);
        return fg_last_status();
    }
    for (int i = 0; i < n_inputs; i++) fg_clear_grad(inputs[i]);
    bool prev = fg_set_grad_enabled(true);
    fg_tensor *out = f(inputs, ctx);
    if (!out) {
        st = fg_last_status() != FG_OK ? fg_last_status() : fg__err(FG_ERR_STATE, "%s: function returned NULL", op);
    } else {
        n_out = out->numel;
        fg_tensor *rt = fg_randn(g, out->ndim, out->shape, out->dtype, out->device);
        fg_tensor *loss = fg_sum_all(fg_mul(out, rt));
        r = malloc((size_t)(n_out ? n_out : 1) * sizeof *r);
        if (!r) st = fg__err(FG_ERR_OOM, "%s: out of memory", op);
        else if (!loss) st = fg_last_status();
        else if ((st = fg_to_f64_array(rt, r, n_out)) == FG_OK && fg_requires_grad(loss))
            st = fg_backward(loss);
    }
    fg_set_grad_enabled(prev);
    fg_scope_end(s);
    fg_generator_free(g);

    /* Numeric gradients, one element at a time. */
    bool passed = st == FG_OK;
    prev = fg_set_grad_enabled(false);
    for (int i = 0; i < n_inputs && st == FG_OK; i++) {
        fg_tensor *x = inputs[i];
        if (!x->requires_grad) continue;
        double *ga = calloc((size_t)(x->numel ? x->numel : 1), sizeof *ga);
        if (!ga) {
            st = fg__err(FG_ERR_OOM, "%s: out of memory", op);
            break;
        }
        if (x->grad) st = fg_to_f64_array(x->grad, ga, x->numel); /* no grad reached x: analytic 0 */
        double *data = fg__data(x);
        for (int64_t j = 0; j < x->numel && st == FG_OK; j++) {
            int64_t off = flat_to_offset(x, j);
            double orig = data[off], lp = 0, lm = 0;
            data[off] = orig + o.eps;
            st = projected(f, ctx, inputs, r, n_out, &lp);
            data[off] = orig - o.eps;
            if (st == FG_OK) st = projected(f, ctx, inputs, r, n_out, &lm);
            data[off] = orig;
            double num = (lp - lm) / (2 * o.eps), err = fabs(ga[j] - num);
            /* Relative to the gradient's size, floored at atol so entries that are
             * zero analytically and numerically do not read as huge ratios. */
            double rel = err / fmax(fabs(num), o.atol);
            if (err > res->max_abs_err[i]) {
                res->max_abs_err[i] = err;
                res->worst_index[i] = j;
            }
            if (rel > res->max_rel_err[i]) res->max_rel_err[i] = rel;
            if (!(err <= o.atol + o.rtol * fabs(num))) passed = false;
        }
        if (o.verbose)
            fprintf(stderr, "gradcheck input %d: max abs err %.3g, max rel err %.3g (worst element %lld)\n", i,
                    res->max_abs_err[i], res->max_rel_err[i], (long long)res->worst_index[i]);
        free(ga);
    }
    fg_set_grad_enabled(prev);
    free(r);
    res->passed = passed && st == FG_OK;
    return st;
}

fg_status fg_compare(const fg_tensor *a, const fg_tensor *b, double atol, double rtol, fg_compare_result *res)
{
    if (!a) return fg__err_null("fg_compare", "a");
    if (!b) return fg__err_null("fg_compare", "b");
    if (!res) return fg__err_null("fg_compare", "result");
    if (!fg__same_shape(a, b)) {
        char x[128], y[128];
        return fg__err(FG_ERR_SHAPE, "fg_compare: shapes differ: %s vs %s", fg_shape_str(a, x, sizeof x),
                       fg_shape_str(b, y, sizeof y));
    }
    memset(res, 0, sizeof *res);
    int64_t n = a->numel;
    double *va = malloc((size_t)(n ? n : 1) * sizeof *va), *vb = malloc((size_t)(n ? n : 1) * sizeof *vb);
    fg_status st = (!va || !vb) ? fg__err(FG_ERR_OOM, "fg_compare: out of memory") : FG_OK;
    if (st == FG_OK) st = fg_to_f64_array(a, va, n);
    if (st == FG_OK) st = fg_to_f64_array(b, vb, n);
    if (st == FG_OK) {
        double num = 0, den = 0;
        for (int64_t i = 0; i < n; i++) {
            double d = fabs(va[i] - vb[i]);
            bool nan_mismatch = isnan(va[i]) != isnan(vb[i]);
            bool both_nan = isnan(va[i]) && isnan(vb[i]);
            bool same_inf = isinf(va[i]) && va[i] == vb[i];
            if (both_nan || same_inf) d = 0;
            if (nan_mismatch || (isinf(va[i]) != isinf(vb[i]))) d = INFINITY;
            double rel = d / fmax(fabs(vb[i]), DBL_MIN);
            if (d > res->max_abs_err || (isnan(d) && !isnan(res->max_abs_err))) {
                res->max_abs_err = d;
                res->worst_index = i;
            }
            if (rel > res->max_rel_err) res->max_rel_err = rel;
            /* NaN against NaN and an infinity against the same infinity match. */
            if (!both_nan && !same_inf && !(d <= atol + rtol * fabs(vb[i]))) res->n_mismatch++;
            if (isfinite(va[i]) && isfinite(vb[i])) { /* the L2 norms cover the finite pairs */
                num += d * d;
                den += vb[i] * vb[i];
            }
        }
        res->rel_l2_err = den > 0 ? sqrt(num / den) : sqrt(num);
        res->allclose = res->n_mismatch == 0;
    }
    free(va);
    free(vb);
    return st;
}
