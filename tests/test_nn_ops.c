/* nn ops: softmax, log_softmax, cross_entropy, layernorm, rmsnorm, embedding,
 * dropout. Values are checked against hand-computed numbers, gradients with
 * gradcheck (f64), low precision against f64, and error paths by status. Every
 * test runs in its own scope and checks that no tensor or node outlives it. */
#include <stdio.h>
#include <string.h>
#define FG_TEST_SEED 20240521
#include "testutil.h"

/* ---- helpers ---- */
static fg_tensor *from(const double *v, int ndim, const int64_t *shape, fg_dtype dt)
{
    fg_tensor *t = fg_from_f64(v, ndim, shape, dt, FG_CPU);
    ck_assert_ptr_nonnull(t);
    return t;
}

static fg_tensor *param(const double *v, int ndim, const int64_t *shape)
{
    fg_tensor *t = from(v, ndim, shape, FG_F64);
    ck_assert_int_eq(fg_set_requires_grad(t, true), FG_OK);
    return t;
}

/* Index tensor of dtype i32 or i64 from int64 values. */
static fg_tensor *idx(const int64_t *v, int ndim, const int64_t *shape, fg_dtype dt)
{
    fg_tensor *t = fg_from_data(v, ndim, shape, FG_I64, FG_CPU);
    ck_assert_ptr_nonnull(t);
    if (dt == FG_I32) t = fg_cast(t, FG_I32);
    ck_assert_ptr_nonnull(t);
    return t;
}

/* All values of t (row-major) into buf, which holds n. */
static void get(const fg_tensor *t, double *buf, int64_t n)
{
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(fg_numel(t), n);
    ck_assert_int_eq(fg_to_f64_array(t, buf, n), FG_OK);
}

static void ck_all_finite(const fg_tensor *t)
{
    int64_t n = fg_numel(t);
    double *v = malloc((size_t)n * sizeof *v);
    get(t, v, n);
    for (int64_t i = 0; i < n; i++) ck_assert_msg(isfinite(v[i]), "element %lld is %g", (long long)i, v[i]);
    free(v);
}

/* a and b have one shape and agree within atol + rtol |b| everywhere. */
static void ck_allclose(const fg_tensor *a, const fg_tensor *b, double atol, double rtol)
{
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(a, b, atol, rtol, &r), FG_OK);
    ck_assert_msg(r.allclose, "%lld mismatches, max abs err %.3g at %lld", (long long)r.n_mismatch, r.max_abs_err,
                  (long long)r.worst_index);
}

/* Asserts the call returned NULL with status `st`. */
#define ck_fails(expr, st)                                                                            \
    do {                                                                                              \
        fg_clear_error();                                                                             \
        fg_tensor *r_ = (expr);                                                                       \
        ck_assert_msg(r_ == NULL, "%s succeeded, expected %s", #expr, fg_status_name(st));            \
        ck_assert_msg(fg_last_status() == (st), "%s: got %s (%s), expected %s", #expr,                \
                      fg_status_name(fg_last_status()), fg_last_error(), fg_status_name(st));         \
    } while (0)

/* Unit roundoff (half an ulp, relative) of the storage formats. The CPU kernels
 * load every dtype into double, do the same double arithmetic as the f64 path
 * and round once on store, so from the same (already rounded) inputs a f32/bf16
 * output is the f64 output rounded: |err| <= u |y|. bf16 stores go through f32
 * (a double rounding, u + 2^-24), hence the tests allow 2u. */
#define U_F32 5.9604644775390625e-08 /* 2^-24 */
#define U_BF16 3.90625e-03           /* 2^-8 */

/* x in `dt`, and the f64 reference made from exactly the same (rounded) values. */
static void rounded_pair(fg_generator *g, int ndim, const int64_t *shape, double lo, double hi, fg_dtype dt,
                         fg_tensor **x_lp, fg_tensor **x_64)
{
    fg_tensor *x = fg_uniform(g, lo, hi, ndim, shape, FG_F64, FG_CPU);
    *x_lp = fg_cast(x, dt);
    *x_64 = fg_cast(*x_lp, FG_F64); /* exact: f64 holds every f32/bf16 value */
    ck_assert_ptr_nonnull(*x_64);
}

/* ---- gradcheck functions ---- */
static fg_tensor *gc_softmax(fg_tensor *const *x, void *ctx) { return fg_softmax(x[0], *(int *)ctx); }
static fg_tensor *gc_log_softmax(fg_tensor *const *x, void *ctx) { return fg_log_softmax(x[0], *(int *)ctx); }

typedef struct {
    fg_tensor *targets;
    int64_t ignore;
    fg_reduction red;
} ce_ctx;
static fg_tensor *gc_ce(fg_tensor *const *x, void *ctx)
{
    ce_ctx *c = ctx;
    return fg_cross_entropy(x[0], c->targets, c->ignore, c->red);
}

/* which: bit 0 weight present (x[1]), bit 1 bias present (next input). */
static fg_tensor *gc_layernorm(fg_tensor *const *x, void *ctx)
{
    int which = *(int *)ctx;
    fg_tensor *w = (which & 1) ? x[1] : NULL;
    fg_tensor *b = (which & 2) ? x[(which & 1) ? 2 : 1] : NULL;
    return fg_layernorm(x[0], w, b, 1e-5);
}
static fg_tensor *gc_rmsnorm(fg_tensor *const *x, void *ctx)
{
    return fg_rmsnorm(x[0], *(int *)ctx ? x[1] : NULL, 1e-6);
}
static fg_tensor *gc_embedding(fg_tensor *const *x, void *ctx) { return fg_embedding(x[0], ctx); }
/* The weight is stored transposed (D, V): exercises the strided-row path. */
static fg_tensor *gc_embedding_t(fg_tensor *const *x, void *ctx) { return fg_embedding(fg_transpose(x[0], 0, 1), ctx); }

typedef struct {
    fg_generator *g;
    double p;
} do_ctx;
static fg_tensor *gc_dropout(fg_tensor *const *x, void *ctx)
{
    do_ctx *c = ctx;
    fg_generator_set_state(c->g, 99, 7); /* same mask on every call */
    return fg_dropout(x[0], c->p, true, c->g);
}

/* ======================================================================== */
/* softmax / log_softmax                                                    */
/* ======================================================================== */

START_TEST(softmax_hand_values)
{
    BEGIN;
    fg_tensor *x = from((const double[]){1, 2, 3}, FG_SHAPE(3), FG_F64);
    fg_tensor *y = fg_softmax(x, 0);
    ck_shape(y, 1, (const int64_t[]){3});
    ck_tensor_values(y, (const double[]){0.0900305732, 0.2447284711, 0.6652409558}, 3, 1e-9);
    ck_assert_str_eq(fg_grad_fn_name(y) ? fg_grad_fn_name(y) : "none", "none"); /* no parameter: no node */
    END;
}
END_TEST

START_TEST(log_softmax_hand_values)
{
    BEGIN;
    fg_tensor *x = from((const double[]){1, 2, 3}, FG_SHAPE(3), FG_F64);
    /* logsumexp(1, 2, 3) = 3.4076059644 */
    ck_tensor_values(fg_log_softmax(x, -1), (const double[]){-2.4076059644, -1.4076059644, -0.4076059644}, 3, 1e-9);
    END;
}
END_TEST

START_TEST(softmax_rows_sum_to_one)
{
    BEGIN;
    fg_tensor *x = fg_uniform(gen, -5, 5, FG_SHAPE(6, 9), FG_F64, FG_CPU);
    fg_tensor *y = fg_softmax(x, 1);
    double v[54];
    get(y, v, 54);
    for (int r = 0; r < 6; r++) {
        double s = 0;
        for (int j = 0; j < 9; j++) {
            ck_assert(v[r * 9 + j] > 0 && v[r * 9 + j] < 1);
            s += v[r * 9 + j];
        }
        ck_close(s, 1.0, 1e-12);
    }
    /* exp(log_softmax) is the softmax */
    ck_allclose(fg_exp(fg_log_softmax(x, 1)), y, 1e-15, 1e-12);
    END;
}
END_TEST

START_TEST(softmax_large_logits_stable)
{
    BEGIN;
    /* Shift invariance: logits near +-1000 overflow exp() unless shifted by the row max. */
    fg_tensor *big = from((const double[]){1001, 1002, 1003, -1001, -1002, -1003}, FG_SHAPE(2, 3), FG_F64);
    fg_tensor *y = fg_softmax(big, 1), *ly = fg_log_softmax(big, 1);
    ck_all_finite(y);
    ck_all_finite(ly);
    ck_tensor_values(y, (const double[]){0.0900305732, 0.2447284711, 0.6652409558, 0.6652409558, 0.2447284711,
                                         0.0900305732}, 6, 1e-9);
    ck_tensor_values(ly, (const double[]){-2.4076059644, -1.4076059644, -0.4076059644, -0.4076059644,
                                          -1.4076059644, -2.4076059644}, 6, 1e-9);
    /* f32 too (its exp overflows past 88); the logits are exact in f32, so only the
     * output rounding differs from f64: <= 2u relative. */
    fg_tensor *y32 = fg_softmax(fg_cast(big, FG_F32), 1);
    ck_all_finite(y32);
    ck_allclose(y32, y, 1e-7, 2 * U_F32);
    END;
}
END_TEST

START_TEST(softmax_dim0_hand_values)
{
    BEGIN;
    fg_tensor *x = from((const double[]){1, 2, 3, 3, 2, 1}, FG_SHAPE(2, 3), FG_F64);
    /* columns (1, 3), (2, 2), (3, 1): softmax(1, 3) = (1, e^2) / (1 + e^2) */
    ck_tensor_values(fg_softmax(x, 0),
                     (const double[]){0.1192029220, 0.5, 0.8807970780, 0.8807970780, 0.5, 0.1192029220}, 6, 1e-9);
    ck_tensor_values(fg_log_softmax(x, -2),
                     (const double[]){-2.1269280110, -0.6931471806, -0.1269280110, -0.1269280110, -0.6931471806,
                                      -2.1269280110}, 6, 1e-9);
    END;
}
END_TEST

START_TEST(softmax_middle_dim_3d)
{
    BEGIN;
    fg_tensor *x = fg_uniform(gen, -3, 3, FG_SHAPE(2, 3, 4), FG_F64, FG_CPU);
    double v[24], y[24], ly[24];
    get(x, v, 24);
    get(fg_softmax(x, 1), y, 24);
    get(fg_log_softmax(x, -2), ly, 24);
    for (int a = 0; a < 2; a++)
        for (int c = 0; c < 4; c++) {
            double s = 0;
            for (int b = 0; b < 3; b++) s += exp(v[a * 12 + b * 4 + c]);
            for (int b = 0; b < 3; b++) {
                int k = a * 12 + b * 4 + c;
                ck_close(y[k], exp(v[k]) / s, 1e-14);
                ck_close(ly[k], v[k] - log(s), 1e-14);
            }
        }
    END;
}
END_TEST

START_TEST(softmax_strided_input_matches_contiguous)
{
    BEGIN;
    fg_tensor *x = fg_uniform(gen, -4, 4, FG_SHAPE(3, 5), FG_F64, FG_CPU);
    fg_tensor *xt = fg_transpose(x, 0, 1); /* (5, 3), not contiguous */
    ck_assert(!fg_is_contiguous(xt));
    fg_tensor *xc = fg_contiguous(xt);
    for (int d = 0; d < 2; d++) {
        ck_allclose(fg_softmax(xt, d), fg_softmax(xc, d), 0, 0);
        ck_allclose(fg_log_softmax(xt, d), fg_log_softmax(xc, d), 0, 0);
    }
    /* a strided slice of a 3-d tensor, over its middle dim */
    fg_tensor *x3 = fg_uniform(gen, -4, 4, FG_SHAPE(4, 6, 5), FG_F64, FG_CPU);
    fg_tensor *s = fg_slice(fg_permute(x3, 3, (const int[]){2, 0, 1}), 2, 1, 6, 2); /* (5, 4, 3) */
    ck_allclose(fg_softmax(s, 1), fg_softmax(fg_contiguous(s), 1), 0, 0);
    END;
}
END_TEST

START_TEST(softmax_scalar_and_empty)
{
    BEGIN;
    fg_tensor *s = fg_scalar(7.5, FG_F64, FG_CPU);
    ck_close(fg_item(fg_softmax(s, 0)), 1.0, 0);
    ck_close(fg_item(fg_log_softmax(s, -1)), 0.0, 0);
    fg_tensor *e = fg_zeros(FG_SHAPE(0, 4), FG_F64, FG_CPU);
    ck_shape(fg_softmax(e, 1), 2, (const int64_t[]){0, 4});
    END;
}
END_TEST

START_TEST(softmax_gradcheck)
{
    BEGIN;
    fg_tensor *a = rand_param(gen, FG_SHAPE(3, 5), -2, 2);
    int dim = -1;
    ck_gradcheck(gc_softmax, &dim, 1, &a);
    fg_tensor *b = rand_param(gen, FG_SHAPE(2, 3, 4), -2, 2);
    for (dim = 0; dim < 3; dim++) ck_gradcheck(gc_softmax, &dim, 1, &b);
    END;
}
END_TEST

START_TEST(log_softmax_gradcheck)
{
    BEGIN;
    fg_tensor *a = rand_param(gen, FG_SHAPE(4, 3), -2, 2);
    int dim = 1;
    ck_gradcheck(gc_log_softmax, &dim, 1, &a);
    fg_tensor *b = rand_param(gen, FG_SHAPE(2, 3, 4), -2, 2);
    for (dim = -3; dim < 0; dim++) ck_gradcheck(gc_log_softmax, &dim, 1, &b);
    END;
}
END_TEST

START_TEST(softmax_backward_values)
{
    BEGIN;
    /* sum(softmax(x)) == 1 whatever x: its gradient is exactly zero. */
    fg_tensor *x = param((const double[]){1, 2, 3}, FG_SHAPE(3));
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_softmax(x, 0))), FG_OK);
    ck_tensor_values(fg_grad(x), (const double[]){0, 0, 0}, 3, 1e-15);
    ck_assert_str_eq(fg_grad_fn_name(fg_softmax(x, 0)), "softmax");
    /* d/dx_k sum_j log_softmax_j = 1 - n softmax_k */
    fg_tensor *z = param((const double[]){1, 2, 3}, FG_SHAPE(3));
    fg_tensor *lz = fg_log_softmax(z, 0);
    ck_assert_str_eq(fg_grad_fn_name(lz), "log_softmax");
    ck_assert_int_eq(fg_backward(fg_sum_all(lz)), FG_OK);
    ck_tensor_values(fg_grad(z), (const double[]){1 - 3 * 0.0900305732, 1 - 3 * 0.2447284711, 1 - 3 * 0.6652409558},
                     3, 1e-9);
    END;
}
END_TEST

START_TEST(softmax_no_grad_mode)
{
    BEGIN;
    fg_tensor *x = rand_param(gen, FG_SHAPE(2, 3), -1, 1);
    bool prev = fg_set_grad_enabled(false);
    fg_tensor *y = fg_softmax(x, 1);
    fg_set_grad_enabled(prev);
    ck_assert(!fg_has_grad_fn(y));
    ck_assert(!fg_requires_grad(y));
    END;
}
END_TEST

START_TEST(softmax_low_precision_matches_f64)
{
    BEGIN;
    fg_dtype dts[2] = {FG_F32, FG_BF16};
    double u[2] = {U_F32, U_BF16};
    for (int k = 0; k < 2; k++) {
        fg_tensor *xl, *x64;
        rounded_pair(gen, FG_SHAPE(4, 7), -6, 6, dts[k], &xl, &x64);
        /* same inputs, same double math, rounded on store: <= 2u relative (see U_BF16) */
        fg_tensor *y = fg_softmax(xl, 1), *ly = fg_log_softmax(xl, 1);
        ck_assert_int_eq(fg_dtype_of(y), dts[k]);
        ck_allclose(y, fg_softmax(x64, 1), 1e-30, 2 * u[k]);
        ck_allclose(ly, fg_log_softmax(x64, 1), 1e-30, 2 * u[k]);
    }
    END;
}
END_TEST

START_TEST(softmax_errors)
{
    BEGIN;
    fg_tensor *x = fg_zeros(FG_SHAPE(2, 3), FG_F64, FG_CPU);
    ck_fails(fg_softmax(NULL, 0), FG_ERR_NULL);
    ck_fails(fg_log_softmax(NULL, 0), FG_ERR_NULL);
    ck_fails(fg_softmax(x, 2), FG_ERR_DIM);
    ck_fails(fg_log_softmax(x, -3), FG_ERR_DIM);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "log_softmax"));
    ck_fails(fg_softmax(fg_zeros(FG_SHAPE(3), FG_I32, FG_CPU), 0), FG_ERR_DTYPE);
    ck_fails(fg_log_softmax(fg_zeros(FG_SHAPE(3), FG_I64, FG_CPU), 0), FG_ERR_DTYPE);
    END;
}
END_TEST

/* ======================================================================== */
/* cross_entropy                                                            */
/* ======================================================================== */

START_TEST(ce_hand_value)
{
    BEGIN;
    fg_tensor *logits = from((const double[]){1, 2, 3}, FG_SHAPE(1, 3), FG_F64);
    fg_tensor *t = idx((const int64_t[]){2}, FG_SHAPE(1), FG_I64);
    fg_tensor *mean = fg_cross_entropy(logits, t, -100, FG_REDUCE_MEAN);
    ck_assert_int_eq(fg_ndim(mean), 0);
    ck_close(fg_item(mean), 0.4076059644, 1e-9);
    ck_close(fg_item(fg_cross_entropy(logits, t, -100, FG_REDUCE_SUM)), 0.4076059644, 1e-9);
    fg_tensor *none = fg_cross_entropy(logits, t, -100, FG_REDUCE_NONE);
    ck_shape(none, 1, (const int64_t[]){1});
    ck_tensor_values(none, (const double[]){0.4076059644}, 1, 1e-9);
    END;
}
END_TEST

START_TEST(ce_reductions_two_rows)
{
    BEGIN;
    fg_tensor *logits = from((const double[]){1, 2, 3, 1, 2, 3}, FG_SHAPE(2, 3), FG_F64);
    fg_dtype dts[2] = {FG_I64, FG_I32};
    for (int k = 0; k < 2; k++) {
        fg_tensor *t = idx((const int64_t[]){2, 0}, FG_SHAPE(2), dts[k]);
        /* -log softmax: 0.4076059644 for class 2, 2.4076059644 for class 0 */
        ck_close(fg_item(fg_cross_entropy(logits, t, -100, FG_REDUCE_MEAN)), 1.4076059644, 1e-9);
        ck_close(fg_item(fg_cross_entropy(logits, t, -100, FG_REDUCE_SUM)), 2.8152119288, 1e-9);
        ck_tensor_values(fg_cross_entropy(logits, t, -100, FG_REDUCE_NONE),
                         (const double[]){0.4076059644, 2.4076059644}, 2, 1e-9);
    }
    END;
}
END_TEST

START_TEST(ce_matches_log_softmax_nll)
{
    BEGIN;
    fg_tensor *logits = fg_uniform(gen, -3, 3, FG_SHAPE(5, 4), FG_F64, FG_CPU);
    int64_t tv[5] = {3, 0, 1, 1, 2};
    fg_tensor *t = idx(tv, FG_SHAPE(5), FG_I64);
    double lp[20], none[5];
    get(fg_log_softmax(logits, 1), lp, 20);
    get(fg_cross_entropy(logits, t, -1, FG_REDUCE_NONE), none, 5);
    double s = 0;
    for (int r = 0; r < 5; r++) {
        ck_close(none[r], -lp[r * 4 + tv[r]], 1e-13);
        s += none[r];
    }
    ck_close(fg_item(fg_cross_entropy(logits, t, -1, FG_REDUCE_MEAN)), s / 5, 1e-13);
    END;
}
END_TEST

START_TEST(ce_ignore_index)
{
    BEGIN;
    fg_tensor *logits = from((const double[]){1, 2, 3, 5, -1, 0}, FG_SHAPE(2, 3), FG_F64);
    fg_tensor *t = idx((const int64_t[]){2, -100}, FG_SHAPE(2), FG_I64);
    /* The ignored row adds nothing and is not counted in the mean. */
    ck_close(fg_item(fg_cross_entropy(logits, t, -100, FG_REDUCE_MEAN)), 0.4076059644, 1e-9);
    ck_close(fg_item(fg_cross_entropy(logits, t, -100, FG_REDUCE_SUM)), 0.4076059644, 1e-9);
    ck_tensor_values(fg_cross_entropy(logits, t, -100, FG_REDUCE_NONE), (const double[]){0.4076059644, 0}, 2, 1e-9);
    /* ignore_index may be a valid class id: that class is then skipped. */
    fg_tensor *t2 = idx((const int64_t[]){2, 0}, FG_SHAPE(2), FG_I32);
    ck_close(fg_item(fg_cross_entropy(logits, t2, 0, FG_REDUCE_MEAN)), 0.4076059644, 1e-9);
    END;
}
END_TEST

START_TEST(ce_all_ignored_mean_is_zero)
{
    BEGIN;
    fg_tensor *logits = rand_param(gen, FG_SHAPE(3, 4), -2, 2);
    fg_tensor *t = idx((const int64_t[]){-1, -1, -1}, FG_SHAPE(3), FG_I64);
    fg_tensor *loss = fg_cross_entropy(logits, t, -1, FG_REDUCE_MEAN);
    ck_close(fg_item(loss), 0.0, 0);
    ck_assert_int_eq(fg_backward(loss), FG_OK);
    double g[12];
    get(fg_grad(logits), g, 12);
    for (int i = 0; i < 12; i++) ck_close(g[i], 0.0, 0);
    ck_close(fg_item(fg_cross_entropy(logits, t, -1, FG_REDUCE_SUM)), 0.0, 0);
    /* N = 0 as well */
    fg_tensor *l0 = fg_zeros(FG_SHAPE(0, 4), FG_F64, FG_CPU);
    fg_tensor *t0 = fg_zeros(FG_SHAPE(0), FG_I64, FG_CPU);
    ck_close(fg_item(fg_cross_entropy(l0, t0, -100, FG_REDUCE_MEAN)), 0.0, 0);
    END;
}
END_TEST

START_TEST(ce_backward_values)
{
    BEGIN;
    fg_tensor *logits = param((const double[]){1, 2, 3, 0, 0, 0}, FG_SHAPE(2, 3));
    fg_tensor *t = idx((const int64_t[]){2, -100}, FG_SHAPE(2), FG_I64);
    fg_tensor *loss = fg_cross_entropy(logits, t, -100, FG_REDUCE_MEAN);
    ck_assert_str_eq(fg_grad_fn_name(loss), "cross_entropy");
    ck_assert_int_eq(fg_backward(loss), FG_OK);
    /* softmax - onehot over the one counted row; the ignored row gets zeros */
    ck_tensor_values(fg_grad(logits), (const double[]){0.0900305732, 0.2447284711, 0.6652409558 - 1, 0, 0, 0}, 6,
                     1e-9);
    /* sum: scale 1 per row; a weighted none: scale g_i per row */
    fg_tensor *l2 = param((const double[]){1, 2, 3, 1, 2, 3}, FG_SHAPE(2, 3));
    fg_tensor *t2 = idx((const int64_t[]){2, 0}, FG_SHAPE(2), FG_I32);
    fg_tensor *none = fg_cross_entropy(l2, t2, -100, FG_REDUCE_NONE);
    ck_assert_int_eq(fg_backward_with_grad(none, from((const double[]){2, -1}, FG_SHAPE(2), FG_F64)), FG_OK);
    ck_tensor_values(fg_grad(l2),
                     (const double[]){2 * 0.0900305732, 2 * 0.2447284711, 2 * (0.6652409558 - 1),
                                      -(0.0900305732 - 1), -0.2447284711, -0.6652409558},
                     6, 1e-9);
    END;
}
END_TEST

START_TEST(ce_gradcheck_reductions)
{
    BEGIN;
    fg_tensor *logits = rand_param(gen, FG_SHAPE(4, 5), -2, 2);
    ce_ctx c = {idx((const int64_t[]){4, 0, 2, 2}, FG_SHAPE(4), FG_I64), -100, FG_REDUCE_MEAN};
    ck_gradcheck(gc_ce, &c, 1, &logits);
    c.red = FG_REDUCE_SUM;
    ck_gradcheck(gc_ce, &c, 1, &logits);
    c.red = FG_REDUCE_NONE;
    ck_gradcheck(gc_ce, &c, 1, &logits);
    END;
}
END_TEST

START_TEST(ce_gradcheck_ignore_index)
{
    BEGIN;
    fg_tensor *logits = rand_param(gen, FG_SHAPE(5, 3), -2, 2);
    ce_ctx c = {idx((const int64_t[]){1, -100, 0, -100, 2}, FG_SHAPE(5), FG_I32), -100, FG_REDUCE_MEAN};
    for (int r = 0; r < 3; r++) {
        c.red = (fg_reduction)r;
        ck_gradcheck(gc_ce, &c, 1, &logits);
    }
    END;
}
END_TEST

START_TEST(ce_large_logits_and_strided)
{
    BEGIN;
    fg_tensor *big = from((const double[]){1001, 1002, 1003}, FG_SHAPE(1, 3), FG_F64);
    fg_tensor *t = idx((const int64_t[]){2}, FG_SHAPE(1), FG_I64);
    ck_close(fg_item(fg_cross_entropy(big, t, -100, FG_REDUCE_MEAN)), 0.4076059644, 1e-9);
    ck_close(fg_item(fg_cross_entropy(fg_cast(big, FG_F32), t, -100, FG_REDUCE_MEAN)), 0.4076059644, 1e-6);
    /* transposed (N, C) view gives the same losses as its contiguous copy */
    fg_tensor *cn = fg_uniform(gen, -3, 3, FG_SHAPE(4, 6), FG_F64, FG_CPU); /* (C, N) */
    fg_tensor *lt = fg_transpose(cn, 0, 1);
    fg_tensor *tt = idx((const int64_t[]){0, 3, 1, 2, 3, 0}, FG_SHAPE(6), FG_I64);
    ck_allclose(fg_cross_entropy(lt, tt, -100, FG_REDUCE_NONE),
                fg_cross_entropy(fg_contiguous(lt), tt, -100, FG_REDUCE_NONE), 0, 0);
    /* strided targets too */
    fg_tensor *t12 = idx((const int64_t[]){0, 9, 3, 9, 1, 9, 2, 9, 3, 9, 0, 9}, FG_SHAPE(12), FG_I64);
    fg_tensor *t2 = fg_slice(t12, 0, 0, 12, 2); /* (0, 3, 1, 2, 3, 0), stride 2 */
    ck_allclose(fg_cross_entropy(lt, t2, -100, FG_REDUCE_NONE), fg_cross_entropy(lt, tt, -100, FG_REDUCE_NONE), 0, 0);
    END;
}
END_TEST

START_TEST(ce_low_precision_matches_f64)
{
    BEGIN;
    fg_tensor *t = idx((const int64_t[]){0, 6, 3, -100, 5}, FG_SHAPE(5), FG_I64);
    fg_dtype dts[2] = {FG_F32, FG_BF16};
    double u[2] = {U_F32, U_BF16};
    for (int k = 0; k < 2; k++) {
        fg_tensor *xl, *x64;
        rounded_pair(gen, FG_SHAPE(5, 7), -4, 4, dts[k], &xl, &x64);
        /* same logits, same double math, the loss rounded on store: <= 2u relative */
        for (int r = 0; r < 3; r++) {
            fg_tensor *l = fg_cross_entropy(xl, t, -100, (fg_reduction)r);
            ck_assert_int_eq(fg_dtype_of(l), dts[k]);
            ck_allclose(l, fg_cross_entropy(x64, t, -100, (fg_reduction)r), 1e-30, 2 * u[k]);
        }
    }
    END;
}
END_TEST

START_TEST(ce_errors)
{
    BEGIN;
    fg_tensor *logits = fg_zeros(FG_SHAPE(3, 4), FG_F64, FG_CPU);
    fg_tensor *t = idx((const int64_t[]){0, 1, 2}, FG_SHAPE(3), FG_I64);
    /* a target equal to C, not ignore_index */
    ck_fails(fg_cross_entropy(logits, idx((const int64_t[]){0, 4, 1}, FG_SHAPE(3), FG_I64), -100, FG_REDUCE_MEAN),
             FG_ERR_INDEX);
    ck_assert_msg(strstr(fg_last_error(), "position 1") && strstr(fg_last_error(), "target 4"), "message: %s",
                  fg_last_error());
    /* negative and not the ignore_index */
    ck_fails(fg_cross_entropy(logits, idx((const int64_t[]){0, 1, -5}, FG_SHAPE(3), FG_I32), -100, FG_REDUCE_SUM),
             FG_ERR_INDEX);
    ck_assert_msg(strstr(fg_last_error(), "position 2") && strstr(fg_last_error(), "-5"), "message: %s",
                  fg_last_error());
    /* wrong target dtype */
    ck_fails(fg_cross_entropy(logits, fg_zeros(FG_SHAPE(3), FG_F64, FG_CPU), -100, FG_REDUCE_MEAN), FG_ERR_DTYPE);
    /* integer logits */
    ck_fails(fg_cross_entropy(fg_zeros(FG_SHAPE(3, 4), FG_I64, FG_CPU), t, -100, FG_REDUCE_MEAN), FG_ERR_DTYPE);
    /* shapes */
    ck_fails(fg_cross_entropy(logits, idx((const int64_t[]){0, 1}, FG_SHAPE(2), FG_I64), -100, FG_REDUCE_MEAN),
             FG_ERR_SHAPE);
    ck_fails(fg_cross_entropy(logits, idx((const int64_t[]){0, 1, 2}, FG_SHAPE(3, 1), FG_I64), -100, FG_REDUCE_MEAN),
             FG_ERR_SHAPE);
    ck_fails(fg_cross_entropy(fg_zeros(FG_SHAPE(4), FG_F64, FG_CPU), t, -100, FG_REDUCE_MEAN), FG_ERR_SHAPE);
    ck_fails(fg_cross_entropy(fg_zeros(FG_SHAPE(3, 4, 1), FG_F64, FG_CPU), t, -100, FG_REDUCE_MEAN), FG_ERR_SHAPE);
    /* reduction and NULLs */
    ck_fails(fg_cross_entropy(logits, t, -100, (fg_reduction)7), FG_ERR_INVALID);
    ck_fails(fg_cross_entropy(NULL, t, -100, FG_REDUCE_MEAN), FG_ERR_NULL);
    ck_fails(fg_cross_entropy(logits, NULL, -100, FG_REDUCE_MEAN), FG_ERR_NULL);
    END;
}
END_TEST

/* ======================================================================== */
/* layernorm / rmsnorm                                                      */
/* ======================================================================== */

START_TEST(layernorm_hand_values)
{
    BEGIN;
    fg_tensor *x = from((const double[]){1, 2, 3, 4}, FG_SHAPE(1, 4), FG_F64);
    /* mean 2.5, biased var 1.25: (x - 2.5) / sqrt(1.25) */
    ck_tensor_values(fg_layernorm(x, NULL, NULL, 0.0),
                     (const double[]){-1.3416407865, -0.4472135955, 0.4472135955, 1.3416407865}, 4, 1e-9);
    /* eps enters under the root: 1.5 / sqrt(1.25 + 0.01) */
    ck_close(fg_item(fg_narrow(fg_flatten(fg_layernorm(x, NULL, NULL, 0.01)), 0, 3, 1)), 1.5 / sqrt(1.26), 1e-12);
    fg_tensor *w = from((const double[]){2, 2, 0.5, 1}, FG_SHAPE(4), FG_F64);
    fg_tensor *b = from((const double[]){0, 1, -1, 0.5}, FG_SHAPE(4), FG_F64);
    ck_tensor_values(fg_layernorm(x, w, b, 0.0),
                     (const double[]){-2.6832815730, 0.1055728090, -0.7763932023, 1.8416407865}, 4, 1e-9);
    ck_tensor_values(fg_layernorm(x, w, NULL, 0.0),
                     (const double[]){-2.6832815730, -0.8944271910, 0.2236067977, 1.3416407865}, 4, 1e-9);
    ck_tensor_values(fg_layernorm(x, NULL, b, 0.0),
                     (const double[]){-1.3416407865, 0.5527864045, -0.5527864045, 1.8416407865}, 4, 1e-9);
    END;
}
END_TEST

START_TEST(layernorm_row_statistics)
{
    BEGIN;
    /* rows with a large common offset: the two-pass variance stays accurate */
    fg_tensor *x = fg_add_scalar(fg_uniform(gen, -1, 1, FG_SHAPE(3, 4, 16), FG_F64, FG_CPU), 1e4);
    fg_tensor *y = fg_layernorm(x, NULL, NULL, 0.0);
    ck_shape(y, 3, (const int64_t[]){3, 4, 16});
    double v[192];
    get(y, v, 192);
    for (int r = 0; r < 12; r++) {
        double m = 0, q = 0;
        for (int j = 0; j < 16; j++) m += v[r * 16 + j];
        m /= 16;
        for (int j = 0; j < 16; j++) q += (v[r * 16 + j] - m) * (v[r * 16 + j] - m);
        ck_close(m, 0.0, 1e-10);
        ck_close(q / 16, 1.0, 1e-8);
    }
    END;
}
END_TEST

START_TEST(layernorm_strided_input)
{
    BEGIN;
    fg_tensor *x = fg_uniform(gen, -2, 2, FG_SHAPE(5, 2, 3), FG_F64, FG_CPU);
    fg_tensor *xt = fg_permute(x, 3, (const int[]){1, 2, 0}); /* (2, 3, 5), last dim strided */
    ck_assert(!fg_is_contiguous(xt));
    fg_tensor *w = fg_slice(fg_uniform(gen, 0.5, 1.5, FG_SHAPE(10), FG_F64, FG_CPU), 0, 0, 10, 2); /* strided (5) */
    fg_tensor *b = fg_uniform(gen, -1, 1, FG_SHAPE(5), FG_F64, FG_CPU);
    ck_allclose(fg_layernorm(xt, w, b, 1e-5), fg_layernorm(fg_contiguous(xt), fg_contiguous(w), b, 1e-5), 0, 0);
    ck_allclose(fg_rmsnorm(xt, w, 1e-5), fg_rmsnorm(fg_contiguous(xt), fg_contiguous(w), 1e-5), 0, 0);
    END;
}
END_TEST

START_TEST(layernorm_gradcheck_plain)
{
    BEGIN;
    fg_tensor *x = rand_param(gen, FG_SHAPE(3, 5), -2, 2);
    int which = 0;
    ck_gradcheck(gc_layernorm, &which, 1, &x);
    fg_tensor *x3 = rand_param(gen, FG_SHAPE(2, 2, 4), -2, 2);
    ck_gradcheck(gc_layernorm, &which, 1, &x3);
    END;
}
END_TEST

START_TEST(layernorm_gradcheck_weight_bias)
{
    BEGIN;
    fg_tensor *in[3] = {rand_param(gen, FG_SHAPE(2, 3, 4), -2, 2), rand_param(gen, FG_SHAPE(4), 0.5, 1.5),
                        rand_param(gen, FG_SHAPE(4), -1, 1)};
    int which = 3;
    ck_gradcheck(gc_layernorm, &which, 3, in);
    which = 1; /* weight only */
    ck_gradcheck(gc_layernorm, &which, 2, in);
    which = 2; /* bias only: x, bias */
    fg_tensor *xb[2] = {in[0], in[2]};
    ck_gradcheck(gc_layernorm, &which, 2, xb);
    /* only the parameters require grad (x held constant) */
    fg_set_requires_grad(in[0], false);
    which = 3;
    ck_gradcheck(gc_layernorm, &which, 3, in);
    END;
}
END_TEST

START_TEST(layernorm_backward_values)
{
    BEGIN;
    fg_tensor *x = param((const double[]){1, 2, 3, 4, -1, 0, 5, 2}, FG_SHAPE(2, 4));
    fg_tensor *w = param((const double[]){1, 1, 1, 1}, FG_SHAPE(4));
    fg_tensor *b = param((const double[]){0, 0, 0, 0}, FG_SHAPE(4));
    fg_tensor *y = fg_layernorm(x, w, b, 0.0);
    ck_assert_str_eq(fg_grad_fn_name(y), "layernorm");
    ck_assert_int_eq(fg_backward(fg_sum_all(y)), FG_OK);
    /* Each row of xhat sums to 0 whatever x: d sum(y) / dx = 0 (w = 1). */
    ck_tensor_values(fg_grad(x), (const double[]){0, 0, 0, 0, 0, 0, 0, 0}, 8, 1e-12);
    /* d/db = number of rows; d/dw = column sums of xhat. Row 2 is (-1, 0, 5, 2):
     * mean 1.5, var 5.25. */
    ck_tensor_values(fg_grad(b), (const double[]){2, 2, 2, 2}, 4, 0);
    double s2 = sqrt(5.25);
    ck_tensor_values(fg_grad(w),
                     (const double[]){-1.3416407865 + (-2.5 / s2), -0.4472135955 + (-1.5 / s2),
                                      0.4472135955 + (3.5 / s2), 1.3416407865 + (0.5 / s2)},
                     4, 1e-9);
    END;
}
END_TEST

START_TEST(rmsnorm_hand_values)
{
    BEGIN;
    fg_tensor *x = from((const double[]){1, 2, 3, 4}, FG_SHAPE(4), FG_F64);
    /* mean(x^2) = 7.5: x / sqrt(7.5) */
    ck_tensor_values(fg_rmsnorm(x, NULL, 0.0), (const double[]){0.3651483717, 0.7302967433, 1.0954451150, 1.4605934867},
                     4, 1e-9);
    fg_tensor *w = from((const double[]){1, 0.5, 2, -1}, FG_SHAPE(4), FG_F64);
    ck_tensor_values(fg_rmsnorm(x, w, 0.0), (const double[]){0.3651483717, 0.3651483717, 2.1908902300, -1.4605934867},
                     4, 1e-9);
    ck_close(fg_item(fg_narrow(fg_rmsnorm(x, NULL, 0.5), 0, 0, 1)), 1 / sqrt(8.0), 1e-12);
    /* an all-zero row with eps = 0 is 0 * inf: NaN, as in PyTorch; eps > 0 gives 0 */
    fg_tensor *z = fg_zeros(FG_SHAPE(1, 3), FG_F64, FG_CPU);
    ck_tensor_values(fg_rmsnorm(z, NULL, 1e-6), (const double[]){0, 0, 0}, 3, 0);
    END;
}
END_TEST

START_TEST(rmsnorm_gradcheck)
{
    BEGIN;
    fg_tensor *in[2] = {rand_param(gen, FG_SHAPE(3, 2, 5), -2, 2), rand_param(gen, FG_SHAPE(5), -1.5, 1.5)};
    int with_w = 1;
    ck_gradcheck(gc_rmsnorm, &with_w, 2, in);
    with_w = 0;
    ck_gradcheck(gc_rmsnorm, &with_w, 1, in);
    fg_tensor *p = fg_rmsnorm(in[0], in[1], 1e-6);
    ck_assert_str_eq(fg_grad_fn_name(p), "rmsnorm");
    END;
}
END_TEST

START_TEST(norm_low_precision_matches_f64)
{
    BEGIN;
    fg_dtype dts[2] = {FG_F32, FG_BF16};
    double u[2] = {U_F32, U_BF16};
    for (int k = 0; k < 2; k++) {
        fg_tensor *xl, *x64, *wl, *w64, *bl, *b64;
        rounded_pair(gen, FG_SHAPE(6, 32), -3, 3, dts[k], &xl, &x64);
        rounded_pair(gen, FG_SHAPE(32), 0.5, 1.5, dts[k], &wl, &w64);
        rounded_pair(gen, FG_SHAPE(32), -0.5, 0.5, dts[k], &bl, &b64);
        /* Statistics and the affine map in double from the same rounded inputs,
         * rounded on store: <= 2u relative, even where the bias nearly cancels y
         * (the rounding is relative to the final value). */
        ck_allclose(fg_layernorm(xl, wl, bl, 1e-5), fg_layernorm(x64, w64, b64, 1e-5), 1e-30, 2 * u[k]);
        ck_allclose(fg_rmsnorm(xl, wl, 1e-6), fg_rmsnorm(x64, w64, 1e-6), 1e-30, 2 * u[k]);
        /* The x gradient comes back in x's dtype. The upstream gradient (xl, via
         * mul) is exact in both paths and the rule works in double with f64 row
         * statistics, so the same 2u bound holds. */
        fg_tensor *xp = fg_detach(xl), *xp64 = fg_detach(x64);
        fg_set_requires_grad(xp, true);
        fg_set_requires_grad(xp64, true);
        ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul(fg_layernorm(xp, wl, bl, 1e-5), xl))), FG_OK);
        ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul(fg_layernorm(xp64, w64, b64, 1e-5), x64))), FG_OK);
        ck_assert_int_eq(fg_dtype_of(fg_grad(xp)), dts[k]);
        ck_allclose(fg_grad(xp), fg_grad(xp64), 1e-30, 2 * u[k]);
    }
    END;
}
END_TEST

START_TEST(norm_errors)
{
    BEGIN;
    fg_tensor *x = fg_zeros(FG_SHAPE(2, 4), FG_F64, FG_CPU);
    fg_tensor *w5 = fg_ones(FG_SHAPE(5), FG_F64, FG_CPU);
    ck_fails(fg_layernorm(x, w5, NULL, 1e-5), FG_ERR_SHAPE);
    ck_assert_msg(strstr(fg_last_error(), "weight (5,)") && strstr(fg_last_error(), "last dim 4") &&
                      strstr(fg_last_error(), "(2, 4)"),
                  "message: %s", fg_last_error());
    ck_fails(fg_layernorm(x, NULL, w5, 1e-5), FG_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "bias"));
    ck_fails(fg_rmsnorm(x, w5, 1e-5), FG_ERR_SHAPE);
    ck_fails(fg_layernorm(x, fg_ones(FG_SHAPE(1, 4), FG_F64, FG_CPU), NULL, 1e-5), FG_ERR_SHAPE); /* not 1-d */
    ck_fails(fg_layernorm(x, fg_ones(FG_SHAPE(4), FG_F32, FG_CPU), NULL, 1e-5), FG_ERR_DTYPE);
    ck_fails(fg_layernorm(fg_zeros(FG_SHAPE(2, 4), FG_I32, FG_CPU), NULL, NULL, 1e-5), FG_ERR_DTYPE);
    ck_fails(fg_layernorm(fg_scalar(1, FG_F64, FG_CPU), NULL, NULL, 1e-5), FG_ERR_DIM);
    ck_fails(fg_layernorm(x, NULL, NULL, -1e-5), FG_ERR_INVALID);
    ck_fails(fg_rmsnorm(x, NULL, NAN), FG_ERR_INVALID);
    ck_fails(fg_layernorm(NULL, NULL, NULL, 1e-5), FG_ERR_NULL);
    ck_fails(fg_rmsnorm(NULL, NULL, 1e-5), FG_ERR_NULL);
    END;
}
END_TEST

/* ======================================================================== */
/* embedding                                                                */
/* ======================================================================== */

START_TEST(embedding_values)
{
    BEGIN;
    fg_tensor *w = fg_reshape(fg_arange(0, 12, 1, FG_F64, FG_CPU), FG_SHAPE(4, 3)); /* row r = 3r, 3r+1, 3r+2 */
    fg_tensor *ix = idx((const int64_t[]){0, 2, 3, 3}, FG_SHAPE(2, 2), FG_I64);
    fg_tensor *e = fg_embedding(w, ix);
    ck_shape(e, 3, (const int64_t[]){2, 2, 3});
    ck_tensor_values(e, (const double[]){0, 1, 2, 6, 7, 8, 9, 10, 11, 9, 10, 11}, 12, 0);
    /* i32 indices and a 0-d index */
    ck_allclose(fg_embedding(w, idx((const int64_t[]){0, 2, 3, 3}, FG_SHAPE(2, 2), FG_I32)), e, 0, 0);
    fg_tensor *one = fg_embedding(w, fg_cast(fg_scalar(1, FG_I64, FG_CPU), FG_I32));
    ck_shape(one, 1, (const int64_t[]){3});
    ck_tensor_values(one, (const double[]){3, 4, 5}, 3, 0);
    /* bf16 rows are copied bit for bit */
    ck_tensor_values(fg_embedding(fg_cast(w, FG_BF16), ix),
                     (const double[]){0, 1, 2, 6, 7, 8, 9, 10, 11, 9, 10, 11}, 12, 0);
    END;
}
END_TEST

START_TEST(embedding_strided)
{
    BEGIN;
    fg_tensor *wt = fg_uniform(gen, -1, 1, FG_SHAPE(3, 5), FG_F64, FG_CPU); /* (D, V) */
    fg_tensor *w = fg_transpose(wt, 0, 1);                                   /* (V, D), rows strided */
    fg_tensor *ix = fg_slice(idx((const int64_t[]){4, 0, 1, 0, 1, 0, 4, 0}, FG_SHAPE(8), FG_I64), 0, 0, 8, 2);
    ck_allclose(fg_embedding(w, ix), fg_embedding(fg_contiguous(w), fg_contiguous(ix)), 0, 0);
    END;
}
END_TEST

START_TEST(embedding_grad_repeated_indices)
{
    BEGIN;
    fg_tensor *w = rand_param(gen, FG_SHAPE(5, 2), -1, 1);
    fg_tensor *ix = idx((const int64_t[]){1, 3, 1, 1}, FG_SHAPE(2, 2), FG_I32);
    fg_tensor *e = fg_embedding(w, ix);
    ck_assert_str_eq(fg_grad_fn_name(e), "embedding");
    /* d sum(e * c) / dw[r] = sum of c over the positions that picked row r */
    fg_tensor *c = from((const double[]){1, 10, 100, 1000, 2, 20, 3, 30}, FG_SHAPE(2, 2, 2), FG_F64);
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul(e, c))), FG_OK);
    ck_tensor_values(fg_grad(w), (const double[]){0, 0, 1 + 2 + 3, 10 + 20 + 30, 0, 0, 100, 1000, 0, 0}, 10, 0);
    END;
}
END_TEST

START_TEST(embedding_gradcheck)
{
    BEGIN;
    fg_tensor *w = rand_param(gen, FG_SHAPE(6, 3), -1, 1);
    fg_tensor *ix = idx((const int64_t[]){5, 0, 5, 2, 2, 2}, FG_SHAPE(3, 2), FG_I64);
    ck_gradcheck(gc_embedding, ix, 1, &w);
    fg_tensor *wt = rand_param(gen, FG_SHAPE(3, 6), -1, 1);
    ck_gradcheck(gc_embedding_t, ix, 1, &wt);
    END;
}
END_TEST

START_TEST(embedding_errors)
{
    BEGIN;
    fg_tensor *w = fg_zeros(FG_SHAPE(4, 3), FG_F64, FG_CPU);
    ck_fails(fg_embedding(w, idx((const int64_t[]){0, 4}, FG_SHAPE(2), FG_I64)), FG_ERR_INDEX);
    ck_assert_msg(strstr(fg_last_error(), "index 4") && strstr(fg_last_error(), "position 1"), "message: %s",
                  fg_last_error());
    ck_fails(fg_embedding(w, idx((const int64_t[]){-1}, FG_SHAPE(1), FG_I32)), FG_ERR_INDEX);
    ck_fails(fg_embedding(w, fg_zeros(FG_SHAPE(2), FG_F32, FG_CPU)), FG_ERR_DTYPE);
    ck_fails(fg_embedding(fg_zeros(FG_SHAPE(4, 3), FG_I64, FG_CPU), idx((const int64_t[]){0}, FG_SHAPE(1), FG_I64)),
             FG_ERR_DTYPE);
    ck_fails(fg_embedding(fg_zeros(FG_SHAPE(4), FG_F64, FG_CPU), idx((const int64_t[]){0}, FG_SHAPE(1), FG_I64)),
             FG_ERR_SHAPE);
    ck_fails(fg_embedding(NULL, idx((const int64_t[]){0}, FG_SHAPE(1), FG_I64)), FG_ERR_NULL);
    ck_fails(fg_embedding(w, NULL), FG_ERR_NULL);
    /* 8-d indices would make a 9-d result */
    ck_fails(fg_embedding(w, fg_zeros(FG_SHAPE(1, 1, 1, 1, 1, 1, 1, 1), FG_I64, FG_CPU)), FG_ERR_DIM);
    END;
}
END_TEST

/* ======================================================================== */
/* dropout                                                                  */
/* ======================================================================== */

/* The documented mask: element i is dropped when word i % 4 of
 * philox(ctr = base + i / 4, key = seed) is below floor(p * 2^32). */
static bool expected_drop(uint64_t seed, uint64_t base, int64_t i, double p)
{
    uint64_t blk = base + (uint64_t)i / 4;
    uint32_t ctr[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), 0, 0}, key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t out[4];
    fg_philox4x32_10(ctr, key, out);
    return p >= 1.0 || out[i % 4] < (uint32_t)floor(p * 4294967296.0);
}

START_TEST(dropout_keep_rate)
{
    BEGIN;
    const int64_t n = 100000;
    const double p = 0.3;
    fg_tensor *y = fg_dropout(fg_ones(FG_SHAPE(n), FG_F32, FG_CPU), p, true, gen);
    float *v = malloc((size_t)n * sizeof *v);
    ck_assert_int_eq(fg_to_f32_array(y, v, n), FG_OK);
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++) kept += v[i] != 0.0f;
    free(v);
    /* kept ~ Binomial(n, 1 - p): within 5 sigma of the mean */
    double sigma = sqrt((double)n * p * (1 - p));
    ck_assert_msg(fabs((double)kept - (double)n * (1 - p)) < 5 * sigma, "kept %lld of %lld (expected %.0f +- %.0f)",
                  (long long)kept, (long long)n, n * (1 - p), 5 * sigma);
    END;
}
END_TEST

START_TEST(dropout_scaling_exact)
{
    BEGIN;
    const double p = 0.25;
    fg_tensor *x = fg_uniform(gen, 1, 2, FG_SHAPE(1000), FG_F64, FG_CPU);
    double xv[1000], yv[1000];
    get(x, xv, 1000);
    get(fg_dropout(x, p, true, gen), yv, 1000);
    int dropped = 0;
    for (int i = 0; i < 1000; i++) {
        if (yv[i] == 0.0) {
            dropped++;
            continue;
        }
        ck_assert_msg(yv[i] == xv[i] * (1.0 / (1.0 - p)), "element %d: %.17g vs %.17g", i, yv[i], xv[i] / (1 - p));
    }
    ck_assert(dropped > 150 && dropped < 350); /* 250 expected, sigma 13.7 */
    END;
}
END_TEST

START_TEST(dropout_mask_follows_philox_layout)
{
    BEGIN;
    const int64_t n = 1003; /* not a multiple of 4: the last block is partial */
    const double ps[3] = {0.1, 0.5, 0.9};
    fg_generator_set_state(gen, 0x123456789abcdefULL, (1ULL << 32) - 100); /* the counter crosses 2^32 */
    for (int k = 0; k < 3; k++) {
        uint64_t seed = fg_generator_seed(gen), base = fg_generator_offset(gen);
        fg_tensor *y = fg_dropout(fg_ones(FG_SHAPE(n), FG_F64, FG_CPU), ps[k], true, gen);
        ck_assert_int_eq(fg_generator_offset(gen), base + (n + 3) / 4); /* ceil(n / 4) blocks reserved */
        double v[1003];
        get(y, v, n);
        for (int64_t i = 0; i < n; i++)
            ck_assert_msg((v[i] == 0.0) == expected_drop(seed, base, i, ps[k]), "p %g element %lld", ps[k],
                          (long long)i);
    }
    END;
}
END_TEST

START_TEST(dropout_same_state_same_mask)
{
    BEGIN;
    fg_tensor *x = fg_uniform(gen, 1, 2, FG_SHAPE(37, 11), FG_F64, FG_CPU);
    fg_generator_set_state(gen, 5, 1000);
    fg_tensor *a = fg_dropout(x, 0.5, true, gen);
    fg_generator_set_state(gen, 5, 1000);
    fg_tensor *b = fg_dropout(x, 0.5, true, gen);
    ck_allclose(a, b, 0, 0);
    /* the next call continues the stream: a different mask */
    fg_tensor *c = fg_dropout(x, 0.5, true, gen);
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(c, a, 0, 0, &r), FG_OK);
    ck_assert(r.n_mismatch > 50);
    /* the mask does not depend on the dtype: f32 and bf16 drop the same elements */
    fg_generator_set_state(gen, 5, 1000);
    fg_tensor *a32 = fg_dropout(fg_cast(x, FG_F32), 0.5, true, gen);
    fg_generator_set_state(gen, 5, 1000);
    fg_tensor *a16 = fg_dropout(fg_cast(x, FG_BF16), 0.5, true, gen);
    double va[407], v32[407], v16[407];
    get(a, va, 407);
    get(a32, v32, 407);
    get(a16, v16, 407);
    for (int i = 0; i < 407; i++) {
        ck_assert((va[i] == 0) == (v32[i] == 0) && (va[i] == 0) == (v16[i] == 0));
        /* kept: the cast's rounding of x, times 2 (exact): <= 2u relative */
        ck_close(v32[i], va[i], 2 * U_F32 * fabs(va[i]));
        ck_close(v16[i], va[i], 2 * U_BF16 * fabs(va[i]));
    }
    END;
}
END_TEST

START_TEST(dropout_backward_uses_forward_mask)
{
    BEGIN;
    const double p = 0.4;
    fg_tensor *x = fg_uniform(gen, 1, 2, FG_SHAPE(20, 25), FG_F64, FG_CPU);
    fg_set_requires_grad(x, true);
    fg_tensor *y = fg_dropout(x, p, true, gen);
    ck_assert_str_eq(fg_grad_fn_name(y), "dropout");
    /* Draws between forward and backward must not change the mask it replays. */
    fg_tensor *other = fg_dropout(fg_ones(FG_SHAPE(64), FG_F64, FG_CPU), 0.5, true, gen);
    ck_assert_ptr_nonnull(other);
    ck_assert_int_eq(fg_backward(fg_sum_all(y)), FG_OK);
    double xv[500], yv[500], gv[500];
    get(x, xv, 500);
    get(y, yv, 500);
    get(fg_grad(x), gv, 500);
    for (int i = 0; i < 500; i++) {
        /* grad = out / x: the scale where kept, 0 where dropped */
        ck_assert_msg(gv[i] == (yv[i] == 0.0 ? 0.0 : 1.0 / (1.0 - p)), "element %d grad %g out %g", i, gv[i], yv[i]);
        ck_close(gv[i], yv[i] / xv[i], 1e-15);
    }
    END;
}
END_TEST

START_TEST(dropout_gradcheck)
{
    BEGIN;
    fg_tensor *x = rand_param(gen, FG_SHAPE(6, 7), -2, 2);
    do_ctx c = {gen, 0.35};
    ck_gradcheck(gc_dropout, &c, 1, &x);
    c.p = 0.8;
    ck_gradcheck(gc_dropout, &c, 1, &x);
    END;
}
END_TEST

START_TEST(dropout_eval_and_p_zero_copy)
{
    BEGIN;
    fg_tensor *x = rand_param(gen, FG_SHAPE(3, 4), -2, 2);
    uint64_t off = fg_generator_offset(gen);
    fg_tensor *e = fg_dropout(x, 0.5, false, gen);
    fg_tensor *z = fg_dropout(x, 0.0, true, gen);
    ck_assert_int_eq(fg_generator_offset(gen), off); /* no random numbers used */
    ck_allclose(e, x, 0, 0);
    ck_allclose(z, x, 0, 0);
    ck_assert(!fg_shares_storage(e, x)); /* a copy, not a view */
    ck_assert(fg_requires_grad(e));      /* still differentiable */
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_add(e, z))), FG_OK);
    double g[12];
    get(fg_grad(x), g, 12);
    for (int i = 0; i < 12; i++) ck_close(g[i], 2.0, 0);
    END;
}
END_TEST

START_TEST(dropout_p_one_and_default_generator)
{
    BEGIN;
    fg_tensor *x = rand_param(gen, FG_SHAPE(10), -2, 2);
    fg_tensor *y = fg_dropout(x, 1.0, true, gen);
    ck_tensor_values(y, (const double[]){0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 10, 0); /* zeros, not 0 * inf = NaN */
    ck_assert_int_eq(fg_backward(fg_sum_all(y)), FG_OK);
    ck_tensor_values(fg_grad(x), (const double[]){0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 10, 0);
    /* NULL uses the default generator and advances it by ceil(n / 4) blocks */
    fg_generator *d = fg_default_generator();
    uint64_t seed = fg_generator_seed(d), base = fg_generator_offset(d);
    double v[10];
    get(fg_dropout(fg_ones(FG_SHAPE(10), FG_F64, FG_CPU), 0.5, true, NULL), v, 10);
    ck_assert_int_eq(fg_generator_offset(d), base + 3);
    for (int i = 0; i < 10; i++) ck_assert((v[i] == 0) == expected_drop(seed, base, i, 0.5));
    END;
}
END_TEST

START_TEST(dropout_errors)
{
    BEGIN;
    fg_tensor *x = fg_ones(FG_SHAPE(4), FG_F64, FG_CPU);
    ck_fails(fg_dropout(x, -0.1, true, gen), FG_ERR_INVALID);
    ck_fails(fg_dropout(x, 1.5, true, gen), FG_ERR_INVALID);
    ck_fails(fg_dropout(x, NAN, true, gen), FG_ERR_INVALID);
    ck_fails(fg_dropout(x, 2.0, false, gen), FG_ERR_INVALID); /* checked in eval mode too */
    ck_fails(fg_dropout(NULL, 0.5, true, gen), FG_ERR_NULL);
    ck_fails(fg_dropout(fg_ones(FG_SHAPE(4), FG_I32, FG_CPU), 0.5, true, gen), FG_ERR_DTYPE);
    END;
}
END_TEST

/* ======================================================================== */
/* composition                                                              */
/* ======================================================================== */

typedef struct {
    fg_tensor *ids, *targets;
} tiny_ctx;
static fg_tensor *gc_tiny(fg_tensor *const *x, void *ctx)
{
    tiny_ctx *c = ctx;
    fg_tensor *h = fg_layernorm(fg_embedding(x[0], c->ids), x[1], x[2], 1e-5); /* (N, D) */
    fg_tensor *logits = fg_matmul(fg_dropout(h, 0.0, true, NULL), x[3]);     /* (N, V) */
    return fg_cross_entropy(logits, c->targets, -100, FG_REDUCE_MEAN);
}

START_TEST(tiny_model_gradcheck)
{
    BEGIN;
    /* embedding -> layernorm -> projection -> cross-entropy, every parameter checked at once */
    fg_tensor *in[4] = {rand_param(gen, FG_SHAPE(5, 4), -1, 1), rand_param(gen, FG_SHAPE(4), 0.5, 1.5),
                        rand_param(gen, FG_SHAPE(4), -0.5, 0.5), rand_param(gen, FG_SHAPE(4, 5), -1, 1)};
    tiny_ctx c = {idx((const int64_t[]){3, 1, 3, 0, 4, 2}, FG_SHAPE(6), FG_I64),
                  idx((const int64_t[]){1, 2, -100, 0, 4, 4}, FG_SHAPE(6), FG_I32)};
    ck_gradcheck(gc_tiny, &c, 4, in);
    END;
}
END_TEST

static Suite *nn_ops_suite(void)
{
    Suite *s = suite_create("nn_ops");
    TCase *tc = tcase_create("softmax");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, softmax_hand_values);
    tcase_add_test(tc, log_softmax_hand_values);
    tcase_add_test(tc, softmax_rows_sum_to_one);
    tcase_add_test(tc, softmax_large_logits_stable);
    tcase_add_test(tc, softmax_dim0_hand_values);
    tcase_add_test(tc, softmax_middle_dim_3d);
    tcase_add_test(tc, softmax_strided_input_matches_contiguous);
    tcase_add_test(tc, softmax_scalar_and_empty);
    tcase_add_test(tc, softmax_gradcheck);
    tcase_add_test(tc, log_softmax_gradcheck);
    tcase_add_test(tc, softmax_backward_values);
    tcase_add_test(tc, softmax_no_grad_mode);
    tcase_add_test(tc, softmax_low_precision_matches_f64);
    tcase_add_test(tc, softmax_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("cross_entropy");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, ce_hand_value);
    tcase_add_test(tc, ce_reductions_two_rows);
    tcase_add_test(tc, ce_matches_log_softmax_nll);
    tcase_add_test(tc, ce_ignore_index);
    tcase_add_test(tc, ce_all_ignored_mean_is_zero);
    tcase_add_test(tc, ce_backward_values);
    tcase_add_test(tc, ce_gradcheck_reductions);
    tcase_add_test(tc, ce_gradcheck_ignore_index);
    tcase_add_test(tc, ce_large_logits_and_strided);
    tcase_add_test(tc, ce_low_precision_matches_f64);
    tcase_add_test(tc, ce_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("norm");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, layernorm_hand_values);
    tcase_add_test(tc, layernorm_row_statistics);
    tcase_add_test(tc, layernorm_strided_input);
    tcase_add_test(tc, layernorm_gradcheck_plain);
    tcase_add_test(tc, layernorm_gradcheck_weight_bias);
    tcase_add_test(tc, layernorm_backward_values);
    tcase_add_test(tc, rmsnorm_hand_values);
    tcase_add_test(tc, rmsnorm_gradcheck);
    tcase_add_test(tc, norm_low_precision_matches_f64);
    tcase_add_test(tc, norm_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("embedding");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, embedding_values);
    tcase_add_test(tc, embedding_strided);
    tcase_add_test(tc, embedding_grad_repeated_indices);
    tcase_add_test(tc, embedding_gradcheck);
    tcase_add_test(tc, embedding_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("dropout");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, dropout_keep_rate);
    tcase_add_test(tc, dropout_scaling_exact);
    tcase_add_test(tc, dropout_mask_follows_philox_layout);
    tcase_add_test(tc, dropout_same_state_same_mask);
    tcase_add_test(tc, dropout_backward_uses_forward_mask);
    tcase_add_test(tc, dropout_gradcheck);
    tcase_add_test(tc, dropout_eval_and_p_zero_copy);
    tcase_add_test(tc, dropout_p_one_and_default_generator);
    tcase_add_test(tc, dropout_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("composition");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, tiny_model_gradcheck);
    suite_add_tcase(s, tc);
    return s;
}

FG_TEST_MAIN(nn_ops_suite)
