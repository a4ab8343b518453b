/* Suite "autograd": the reverse-mode engine (hand-computed gradients,
 * accumulation, detach / no-grad, error states), gradients through every view
 * and conversion, broadcasting reductions, graph lifetime, gradcheck and
 * fg_compare. */
#include <string.h>
#include "testutil.h"

#define NVALS(...) ((int64_t)(sizeof((double[]){__VA_ARGS__}) / sizeof(double)))
#define CK_VALUES(t, tol, ...) ck_tensor_values((t), (const double[]){__VA_ARGS__}, NVALS(__VA_ARGS__), (tol))
#define CK_GRAD(x, tol, ...)                       \
    do {                                           \
        ck_assert_ptr_nonnull(fg_grad(x));         \
        CK_VALUES(fg_grad(x), tol, __VA_ARGS__);   \
    } while (0)

static fg_scope *tscope;
static fg_generator *gen;
static void setup(void)
{
    fg_clear_error();
    fg_set_grad_enabled(true);
    gen = fg_generator_new(42);
    tscope = fg_scope_begin();
}
static void teardown(void)
{
    ck_assert_int_eq(fg_scope_end(tscope), FG_OK);
    fg_generator_free(gen);
}

/* An f64 parameter from values. */
static fg_tensor *param(int ndim, const int64_t *shape, const double *v)
{
    fg_tensor *t = fg_from_f64(v, ndim, shape, FG_F64, FG_CPU);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(fg_set_requires_grad(t, true), FG_OK);
    return t;
}
#define PARAM(shape_, ...) param(shape_, (const double[]){__VA_ARGS__})

static fg_tensor *pscalar(double v) { return param(0, NULL, &v); }

/* ------------------------------------------------------------ basic rules */
START_TEST(test_poly_hand_gradient)
{
    fg_tensor *x = pscalar(2.0);
    fg_tensor *y = fg_add(fg_mul(x, x), fg_mul_scalar(x, 3.0)); /* x^2 + 3x */
    ck_close(fg_item(y), 10.0, 0);
    ck_assert(fg_requires_grad(y));
    ck_assert(fg_has_grad_fn(y));
    ck_assert_ptr_null(fg_grad(x));
    ck_assert_int_eq(fg_backward(y), FG_OK);
    ck_close(fg_item(fg_grad(x)), 7.0, 1e-12);
    ck_assert_int_eq(fg_dtype_of(fg_grad(x)), FG_F64);
    ck_assert_int_eq(fg_ndim(fg_grad(x)), 0);
}
END_TEST

START_TEST(test_two_inputs)
{
    fg_tensor *x = PARAM(FG_SHAPE(3), 1, 2, 3);
    fg_tensor *y = PARAM(FG_SHAPE(3), 4, 5, 6);
    /* L = sum(x * y / (x + 1)) */
    fg_tensor *l = fg_sum_all(fg_div(fg_mul(x, y), fg_add_scalar(x, 1)));
    ck_assert_int_eq(fg_backward(l), FG_OK);
    /* dL/dx = y / (x+1)^2, dL/dy = x / (x+1) */
    CK_GRAD(x, 1e-12, 4.0 / 4, 5.0 / 9, 6.0 / 16);
    CK_GRAD(y, 1e-12, 1.0 / 2, 2.0 / 3, 3.0 / 4);
}
END_TEST

START_TEST(test_tensor_used_twice)
{
    fg_tensor *x = pscalar(2.0);
    ck_assert_int_eq(fg_backward(fg_add(x, x)), FG_OK);
    ck_close(fg_item(fg_grad(x)), 2.0, 0);
    fg_clear_grad(x);
    ck_assert_int_eq(fg_backward(fg_mul(fg_mul(x, x), x)), FG_OK); /* x^3 -> 3x^2 */
    ck_close(fg_item(fg_grad(x)), 12.0, 1e-12);
}
END_TEST

START_TEST(test_accumulate_across_backwards)
{
    fg_tensor *x = pscalar(2.0);
    ck_assert_int_eq(fg_backward(fg_mul_scalar(x, 3.0)), FG_OK);
    ck_close(fg_item(fg_grad(x)), 3.0, 0);
    fg_tensor *g1 = fg_grad(x);
    ck_assert_int_eq(fg_backward(fg_mul(x, x)), FG_OK); /* a second, separate graph */
    ck_close(fg_item(fg_grad(x)), 7.0, 1e-12);
    ck_assert_ptr_eq(fg_grad(x), g1); /* accumulated in place */
}
END_TEST

START_TEST(test_zero_grad_keeps_buffer)
{
    fg_tensor *x = PARAM(FG_SHAPE(2), 1, -1);
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul(x, x))), FG_OK);
    CK_GRAD(x, 0, 2, -2);
    fg_tensor *g = fg_grad(x);
    ck_assert_int_eq(fg_zero_grad(x), FG_OK);
    ck_assert_ptr_eq(fg_grad(x), g);
    CK_GRAD(x, 0, 0, 0);
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul_scalar(x, 5))), FG_OK);
    ck_assert_ptr_eq(fg_grad(x), g);
    CK_GRAD(x, 0, 5, 5);
    /* zero_grad before any gradient exists is fine */
    fg_tensor *y = pscalar(1);
    ck_assert_int_eq(fg_zero_grad(y), FG_OK);
    ck_assert_ptr_null(fg_grad(y));
}
END_TEST

START_TEST(test_clear_grad)
{
    fg_tensor *x = pscalar(3.0);
    ck_assert_int_eq(fg_backward(fg_mul(x, x)), FG_OK);
    ck_close(fg_item(fg_grad(x)), 6.0, 0);
    fg_clear_grad(x);
    ck_assert_ptr_null(fg_grad(x));
    ck_assert_int_eq(fg_backward(fg_mul_scalar(x, 2)), FG_OK);
    ck_close(fg_item(fg_grad(x)), 2.0, 0); /* starts from scratch */
    fg_clear_grad(NULL);
}
END_TEST

START_TEST(test_detach_stops_gradient)
{
    fg_tensor *x = pscalar(3.0);
    fg_tensor *d = fg_detach(x);
    ck_assert(fg_shares_storage(d, x));
    ck_assert(!fg_requires_grad(d));
    ck_assert(!fg_has_grad_fn(d));
    ck_assert_int_eq(fg_backward(fg_mul(d, x)), FG_OK);
    ck_close(fg_item(fg_grad(x)), 3.0, 0); /* only the x path, not 2x */
    /* detaching a non-leaf cuts the history behind it */
    fg_clear_grad(x);
    fg_tensor *h = fg_mul(x, x);
    fg_tensor *hd = fg_detach(h);
    ck_assert(!fg_has_grad_fn(hd));
    ck_assert_int_eq(fg_backward(fg_mul(hd, x)), FG_OK);
    ck_close(fg_item(fg_grad(x)), 9.0, 0);
}
END_TEST

START_TEST(test_no_grad_mode_nests)
{
    fg_tensor *x = PARAM(FG_SHAPE(2), 1, 2);
    ck_assert(fg_is_grad_enabled());
    bool p1 = fg_set_grad_enabled(false);
    ck_assert(p1);
    ck_assert(!fg_is_grad_enabled());
    fg_tensor *y = fg_mul(x, x);
    ck_assert(!fg_has_grad_fn(y));
    ck_assert(!fg_requires_grad(y));
    ck_assert_ptr_null(fg_grad_fn_name(y));
    CK_VALUES(y, 0, 1, 4); /* still computed */
    bool p2 = fg_set_grad_enabled(false);
    ck_assert(!p2);
    ck_assert(!fg_has_grad_fn(fg_transpose(fg_reshape(x, FG_SHAPE(2, 1)), 0, 1)));
    fg_set_grad_enabled(p2);
    ck_assert(!fg_is_grad_enabled()); /* restoring the inner scope keeps it off */
    fg_set_grad_enabled(p1);
    ck_assert(fg_is_grad_enabled());
    fg_tensor *z = fg_mul(x, x);
    ck_assert(fg_has_grad_fn(z));
    ck_assert_int_eq(fg_backward(y = fg_sum_all(z)), FG_OK);
    CK_GRAD(x, 0, 2, 4);
    /* a no-grad result used in a recorded op is a constant */
    fg_set_grad_enabled(false);
    fg_tensor *c = fg_mul_scalar(x, 10);
    fg_set_grad_enabled(true);
    fg_clear_grad(x);
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul(c, x))), FG_OK);
    CK_GRAD(x, 0, 10, 20);
}
END_TEST

START_TEST(test_backward_twice_is_state_error)
{
    fg_tensor *x = pscalar(2.0);
    fg_tensor *y = fg_mul(x, x);
    ck_assert_int_eq(fg_backward(y), FG_OK);
    ck_assert_int_eq(fg_backward(y), FG_ERR_STATE);
    ck_assert_int_eq(fg_last_status(), FG_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "mul"));
    ck_close(fg_item(fg_grad(x)), 4.0, 0); /* unchanged by the failed call */
}
END_TEST

START_TEST(test_shared_subgraph_second_backward_fails)
{
    fg_tensor *x = pscalar(2.0);
    fg_tensor *a = fg_exp(x);
    fg_tensor *l1 = fg_mul_scalar(a, 2);
    fg_tensor *l2 = fg_mul_scalar(a, 3);
    ck_assert_int_eq(fg_backward(l1), FG_OK);
    ck_close(fg_item(fg_grad(x)), 2 * exp(2.0), 1e-12);
    /* the exp node was freed by the first pass */
    ck_assert_int_eq(fg_backward(l2), FG_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "exp"));
    ck_close(fg_item(fg_grad(x)), 2 * exp(2.0), 1e-12);
}
END_TEST

START_TEST(test_backward_non_scalar)
{
    fg_tensor *x = PARAM(FG_SHAPE(3), 1, 2, 3);
    fg_tensor *y = fg_mul_scalar(x, 2);
    ck_assert_int_eq(fg_backward(y), FG_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "(3,)"));
    ck_assert_ptr_null(fg_grad(x));
    /* the graph is intact: a backward with an explicit gradient still works */
    fg_clear_error();
    fg_tensor *g = fg_from_f64((const double[]){1, 2, 3}, FG_SHAPE(3), FG_F64, FG_CPU);
    ck_assert_int_eq(fg_backward_with_grad(y, g), FG_OK);
    CK_GRAD(x, 0, 2, 4, 6);
}
END_TEST

START_TEST(test_backward_with_grad)
{
    fg_tensor *x = PARAM(FG_SHAPE(2, 2), 1, 2, 3, 4);
    fg_tensor *y = fg_mul(x, x);
    fg_tensor *bad = fg_ones(FG_SHAPE(4), FG_F64, FG_CPU);
    ck_assert_int_eq(fg_backward_with_grad(y, bad), FG_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "(4,)"));
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "(2, 2)"));
    fg_clear_error();
    ck_assert_int_eq(fg_backward_with_grad(y, NULL), FG_ERR_NULL);
    fg_clear_error();
    /* a gradient of another dtype and layout is converted */
    fg_tensor *g = fg_transpose(fg_from_f64((const double[]){1, 10, 100, 1000}, FG_SHAPE(2, 2), FG_F32, FG_CPU), 0, 1);
    ck_assert_int_eq(fg_backward_with_grad(y, g), FG_OK);
    CK_GRAD(x, 1e-9, 2 * 1 * 1, 2 * 2 * 100, 2 * 3 * 10, 2 * 4 * 1000);
}
END_TEST

START_TEST(test_backward_without_requires_grad)
{
    fg_tensor *x = fg_ones(FG_SHAPE(1), FG_F64, FG_CPU);
    fg_tensor *y = fg_mul(x, x);
    ck_assert(!fg_requires_grad(y));
    ck_assert_int_eq(fg_backward(y), FG_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "does not require grad"));
    ck_assert_int_eq(fg_backward(NULL), FG_ERR_STATE); /* the first error is kept */
    fg_clear_error();
    ck_assert_int_eq(fg_backward(NULL), FG_ERR_NULL);
}
END_TEST

START_TEST(test_backward_on_leaf)
{
    fg_tensor *x = pscalar(5.0);
    ck_assert_int_eq(fg_backward(x), FG_OK);
    ck_close(fg_item(fg_grad(x)), 1.0, 0);
    ck_assert_int_eq(fg_backward(x), FG_OK); /* a leaf has no graph to free */
    ck_close(fg_item(fg_grad(x)), 2.0, 0);
}
END_TEST

START_TEST(test_set_requires_grad_errors)
{
    fg_tensor *i = fg_ones(FG_SHAPE(3), FG_I32, FG_CPU);
    ck_assert_int_eq(fg_set_requires_grad(i, true), FG_ERR_DTYPE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "i32"));
    ck_assert(!fg_requires_grad(i));
    ck_assert_int_eq(fg_set_requires_grad(i, false), FG_OK); /* turning it off is always fine */
    fg_tensor *l = fg_ones(FG_SHAPE(3), FG_I64, FG_CPU);
    ck_assert_int_eq(fg_set_requires_grad(l, true), FG_ERR_DTYPE);
    fg_tensor *x = PARAM(FG_SHAPE(1), 1);
    fg_tensor *y = fg_exp(x);
    ck_assert_int_eq(fg_set_requires_grad(y, true), FG_ERR_STATE);
    ck_assert_int_eq(fg_set_requires_grad(y, false), FG_ERR_STATE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "exp"));
    ck_assert(fg_requires_grad(y));
    fg_clear_error();
    ck_assert_int_eq(fg_set_requires_grad(NULL, true), FG_ERR_NULL);
    /* every float dtype can require grad */
    for (int d = FG_F32; d <= FG_F16; d++)
        ck_assert_int_eq(fg_set_requires_grad(fg_zeros(FG_SHAPE(1), (fg_dtype)d, FG_CPU), true), FG_OK);
    /* turning it off on a leaf stops recording */
    ck_assert_int_eq(fg_set_requires_grad(x, false), FG_OK);
    ck_assert(!fg_has_grad_fn(fg_exp(x)));
}
END_TEST

START_TEST(test_no_grad_to_unused_input)
{
    fg_tensor *x = pscalar(1.5), *y = pscalar(2.5);
    fg_tensor *c = fg_scalar(4, FG_F64, FG_CPU);
    ck_assert_int_eq(fg_backward(fg_mul(x, c)), FG_OK);
    ck_close(fg_item(fg_grad(x)), 4, 0);
    ck_assert_ptr_null(fg_grad(y));
    ck_assert_ptr_null(fg_grad(c));
}
END_TEST

START_TEST(test_partial_view_gradient_values)
{
    fg_tensor *x = PARAM(FG_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    /* sum of x[:, 1:] * 2 -> gradient 2 in columns 1..2, 0 in column 0 */
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul_scalar(fg_narrow(x, 1, 1, 2), 2))), FG_OK);
    CK_GRAD(x, 0, 0, 2, 2, 0, 2, 2);
    fg_clear_grad(x);
    /* a stepped slice of the transpose: x^T[0:3:2] = rows 0 and 2 of x^T = columns 0 and 2 of x */
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_slice(fg_transpose(x, 0, 1), 0, 0, 3, 2))), FG_OK);
    CK_GRAD(x, 0, 1, 0, 1, 1, 0, 1);
    fg_clear_grad(x);
    /* expand (2,3) -> (4,2,3): each element used 4 times */
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_expand(x, FG_SHAPE(4, 2, 3)))), FG_OK);
    CK_GRAD(x, 0, 4, 4, 4, 4, 4, 4);
}
END_TEST

START_TEST(test_sum_mean_gradients)
{
    fg_tensor *x = PARAM(FG_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    /* mean over dim 1 then weight rows: L = 1*mean(row0) + 10*mean(row1) */
    fg_tensor *m = fg_mean(x, FG_DIMS(1), false);
    fg_tensor *w = fg_from_f64((const double[]){1, 10}, FG_SHAPE(2), FG_F64, FG_CPU);
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul(m, w))), FG_OK);
    CK_GRAD(x, 1e-12, 1.0 / 3, 1.0 / 3, 1.0 / 3, 10.0 / 3, 10.0 / 3, 10.0 / 3);
    fg_clear_grad(x);
    ck_assert_int_eq(fg_backward(fg_mean_all(x)), FG_OK);
    CK_GRAD(x, 1e-12, 1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6);
}
END_TEST

/* --------------------------------------------- gradients through views */
static fg_tensor *sq(fg_tensor *t) { return fg_mul(t, t); }

static fg_tensor *gc_reshape(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return sq(fg_reshape(in[0], FG_SHAPE(3, -1)));
}
static fg_tensor *gc_view(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return fg_mul(fg_view(in[0], FG_SHAPE(6)), fg_reshape(in[0], FG_SHAPE(6)));
}
static fg_tensor *gc_reshape_copy(fg_tensor *const *in, void *ctx)
{
    (void)ctx; /* the transposed input forces the copying path */
    return sq(fg_reshape(fg_transpose(in[0], 0, 1), FG_SHAPE(-1)));
}
static fg_tensor *gc_transpose(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return fg_mul(fg_transpose(in[0], 0, 1), in[1]);
}
static fg_tensor *gc_permute(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return sq(fg_permute(in[0], FG_DIMS(2, 0, 1)));
}
static fg_tensor *gc_slice(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return sq(fg_slice(fg_slice(in[0], 1, -5, 7, 2), 0, 1, 3, 1));
}
static fg_tensor *gc_narrow(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return fg_exp(fg_narrow(in[0], -1, 1, 2));
}
static fg_tensor *gc_expand(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return fg_mul(fg_expand(in[0], FG_SHAPE(2, 3, 4)), in[1]);
}
static fg_tensor *gc_squeeze(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return sq(fg_unsqueeze(fg_squeeze(in[0], 1), 0));
}
static fg_tensor *gc_flatten(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return sq(fg_flatten(fg_permute(in[0], FG_DIMS(1, 0, 2))));
}
static fg_tensor *gc_contiguous(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    fg_tensor *t = fg_transpose(in[0], 0, 1);
    return fg_mul(fg_contiguous(t), fg_contiguous(fg_contiguous(t)));
}
static fg_tensor *gc_clone(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return fg_mul(fg_clone(in[0]), in[0]);
}
static fg_tensor *gc_to(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return sq(fg_to(fg_cast(in[0], FG_F64), FG_CPU, FG_F64));
}
static fg_tensor *gc_view_chain(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    fg_tensor *v = fg_reshape(fg_transpose(fg_slice(in[0], 0, 0, 4, 2), 0, 1), FG_SHAPE(3, 2, 1));
    return fg_tanh(fg_expand(v, FG_SHAPE(3, 2, 5)));
}

static void run_gc(fg_gradcheck_fn f, int n, const int64_t (*shapes)[FG_MAX_DIMS], const int *ndims)
{
    fg_tensor *in[4];
    for (int i = 0; i < n; i++) in[i] = rand_param(gen, ndims[i], shapes[i], -1.5, 1.5);
    ck_gradcheck(f, NULL, n, in);
}
#define GC1(f, ...)                                                             \
    do {                                                                        \
        const int64_t sh_[1][FG_MAX_DIMS] = {{__VA_ARGS__}};                    \
        const int nd_[1] = {NVALS(__VA_ARGS__)};                                \
        run_gc(f, 1, sh_, nd_);                                                 \
    } while (0)

START_TEST(test_grad_reshape)
{
    GC1(gc_reshape, 2, 3);
    GC1(gc_view, 2, 3);
    GC1(gc_reshape_copy, 3, 4);
    GC1(gc_flatten, 2, 3, 2);
}
END_TEST

START_TEST(test_grad_transpose_permute)
{
    const int64_t sh[2][FG_MAX_DIMS] = {{3, 2}, {2, 3}};
    run_gc(gc_transpose, 2, sh, (const int[]){2, 2});
    GC1(gc_permute, 2, 3, 4);
}
END_TEST

START_TEST(test_grad_slice_narrow)
{
    GC1(gc_slice, 4, 9);
    GC1(gc_narrow, 3, 4);
}
END_TEST

START_TEST(test_grad_expand)
{
    const int64_t sh[2][FG_MAX_DIMS] = {{3, 1}, {2, 3, 4}};
    run_gc(gc_expand, 2, sh, (const int[]){2, 3});
    GC1(gc_view_chain, 4, 3);
}
END_TEST

START_TEST(test_grad_squeeze_unsqueeze)
{
    GC1(gc_squeeze, 2, 1, 3);
}
END_TEST

START_TEST(test_grad_contiguous_clone_to)
{
    GC1(gc_contiguous, 3, 2);
    GC1(gc_clone, 5);
    GC1(gc_to, 2, 2);
}
END_TEST

START_TEST(test_grad_through_cast)
{
    fg_tensor *x = PARAM(FG_SHAPE(3), 0.5, -1.25, 2);
    fg_tensor *y = fg_cast(x, FG_F32);
    ck_assert_str_eq(fg_grad_fn_name(y), "to");
    fg_tensor *l = fg_sum_all(fg_mul(y, y));
    ck_assert_int_eq(fg_dtype_of(l), FG_F32);
    ck_assert_int_eq(fg_backward(l), FG_OK);
    ck_assert_int_eq(fg_dtype_of(fg_grad(x)), FG_F64);
    CK_GRAD(x, 0, 1, -2.5, 4);
    /* bf16 round trip too (values exact in bf16) */
    fg_clear_grad(x);
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul_scalar(fg_to(x, FG_CPU, FG_BF16), 3))), FG_OK);
    CK_GRAD(x, 0, 3, 3, 3);
    /* a cast to an integer dtype carries no gradient */
    fg_tensor *i = fg_cast(x, FG_I32);
    ck_assert(!fg_has_grad_fn(i));
    ck_assert(!fg_requires_grad(i));
}
END_TEST

/* ------------------------------------------------------- broadcasting */
static fg_tensor *gc_bcast_add(fg_tensor *const *in, void *ctx) { (void)ctx; return sq(fg_add(in[0], in[1])); }
static fg_tensor *gc_bcast_mul(fg_tensor *const *in, void *ctx) { (void)ctx; return fg_mul(in[0], in[1]); }
static fg_tensor *gc_bcast_div(fg_tensor *const *in, void *ctx) { (void)ctx; return fg_div(in[0], fg_add_scalar(in[1], 3)); }
static fg_tensor *gc_bcast_sub(fg_tensor *const *in, void *ctx) { (void)ctx; return sq(fg_sub(in[0], in[1])); }

START_TEST(test_broadcast_gradient_values)
{
    fg_tensor *a = PARAM(FG_SHAPE(3, 1), 1, 2, 3);
    fg_tensor *b = PARAM(FG_SHAPE(1, 4), 10, 20, 30, 40);
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_add(a, b))), FG_OK);
    ck_shape(fg_grad(a), 2, (const int64_t[]){3, 1});
    ck_shape(fg_grad(b), 2, (const int64_t[]){1, 4});
    CK_GRAD(a, 0, 4, 4, 4);
    CK_GRAD(b, 0, 3, 3, 3, 3);
    fg_clear_grad(a);
    fg_clear_grad(b);
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul(a, b))), FG_OK);
    CK_GRAD(a, 0, 100, 100, 100);
    CK_GRAD(b, 0, 6, 6, 6, 6);
    /* a 0-d parameter against a matrix */
    fg_tensor *s = pscalar(2);
    fg_tensor *m = fg_from_f64((const double[]){1, 2, 3, 4, 5, 6}, FG_SHAPE(2, 3), FG_F64, FG_CPU);
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul(m, s))), FG_OK);
    ck_assert_int_eq(fg_ndim(fg_grad(s)), 0);
    ck_close(fg_item(fg_grad(s)), 21, 0);
    /* a leading-dim broadcast (3,) against (2, 3) with subtraction */
    fg_tensor *v = PARAM(FG_SHAPE(3), 0, 0, 0);
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_sub(m, v))), FG_OK);
    CK_GRAD(v, 0, -2, -2, -2);
}
END_TEST

START_TEST(test_broadcast_gradcheck)
{
    const int64_t s1[2][FG_MAX_DIMS] = {{3, 1}, {1, 4}};
    run_gc(gc_bcast_add, 2, s1, (const int[]){2, 2});
    const int64_t s2[2][FG_MAX_DIMS] = {{2, 1, 3}, {4, 1}};
    run_gc(gc_bcast_mul, 2, s2, (const int[]){3, 2});
    const int64_t s3[2][FG_MAX_DIMS] = {{2, 3}, {3}};
    run_gc(gc_bcast_div, 2, s3, (const int[]){2, 1});
    const int64_t s4[2][FG_MAX_DIMS] = {{4}, {0}};
    run_gc(gc_bcast_sub, 2, s4, (const int[]){1, 0});
}
END_TEST

/* ------------------------------------------------------- graph shapes */
START_TEST(test_diamond)
{
    fg_tensor *x = PARAM(FG_SHAPE(2), 1.5, -2);
    fg_tensor *a = fg_mul_scalar(x, 2), *b = fg_mul_scalar(x, 3);
    fg_tensor *y = fg_sum_all(fg_mul(a, b)); /* 6 x^2 -> 12 x */
    ck_assert_int_eq(fg_backward(y), FG_OK);
    CK_GRAD(x, 1e-12, 18, -24);
    /* a wider diamond: four paths through shared intermediates */
    fg_clear_grad(x);
    fg_tensor *e = fg_exp(x);
    fg_tensor *top = fg_add(fg_mul(e, x), fg_mul(e, e)); /* x e^x + e^2x */
    ck_assert_int_eq(fg_backward(fg_sum_all(top)), FG_OK);
    double g0 = exp(1.5) * 2.5 + 2 * exp(3.0), g1 = exp(-2.0) * -1 + 2 * exp(-4.0);
    CK_GRAD(x, 1e-10, g0, g1);
}
END_TEST

START_TEST(test_deep_chain)
{
    fg_memory_stats m0, m1;
    fg_get_memory_stats(&m0);
    fg_scope *s = fg_scope_begin();
    fg_tensor *x = pscalar(1.0);
    fg_tensor *c = fg_scalar(1.001, FG_F64, FG_CPU);
    fg_tensor *y = x;
    for (int i = 0; i < 1000; i++) y = (i % 2) ? fg_mul(y, c) : fg_add_scalar(fg_mul(y, c), 0.0);
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(fg_backward(y), FG_OK);
    ck_close(fg_item(fg_grad(x)), pow(1.001, 1000), 1e-9);
    ck_close(fg_item(y), pow(1.001, 1000), 1e-9);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_nodes, m0.live_nodes);
    ck_assert_int_eq(m1.live_tensors, m0.live_tensors);
}
END_TEST

START_TEST(test_deep_chain_freed_without_backward)
{
    /* Intermediates released early: only the node chain holds the graph, and
     * freeing the root must not recurse once per node. */
    const int n = getenv("FG_TEST_QUICK") ? 20000 : 200000;
    fg_memory_stats m0, m1;
    fg_get_memory_stats(&m0);
    fg_scope *s = fg_scope_begin();
    fg_tensor *x = pscalar(0.5);
    fg_tensor *y = x;
    for (int i = 0; i < n; i++) {
        fg_tensor *next = fg_tanh(y);
        if (y != x) fg_free(y);
        y = next;
    }
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_nodes, m0.live_nodes + n);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_nodes, m0.live_nodes);
    ck_assert_int_eq(m1.live_tensors, m0.live_tensors);
    ck_assert_int_eq(m1.live_bytes[FG_CPU], m0.live_bytes[FG_CPU]);
}
END_TEST

START_TEST(test_deep_chain_backward_after_scope)
{
    /* the same long chain, back-propagated after its scope ended */
    const int n = getenv("FG_TEST_QUICK") ? 20000 : 200000;
    fg_tensor *x = pscalar(0.5);
    fg_scope *s = fg_scope_begin();
    fg_tensor *y = x;
    for (int i = 0; i < n; i++) y = fg_mul_scalar(y, 1.0);
    fg_keep(y);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    ck_assert_int_eq(fg_backward(y), FG_OK);
    ck_close(fg_item(fg_grad(x)), 1.0, 0);
    fg_free(y);
}
END_TEST

START_TEST(test_grad_fn_names)
{
    fg_tensor *x = PARAM(FG_SHAPE(2, 2), 1, 2, 3, 4);
    ck_assert_ptr_null(fg_grad_fn_name(x));
    ck_assert_ptr_null(fg_grad_fn_name(NULL));
    ck_assert_str_eq(fg_grad_fn_name(fg_mul(x, x)), "mul");
    ck_assert_str_eq(fg_grad_fn_name(fg_add(x, x)), "add");
    ck_assert_str_eq(fg_grad_fn_name(fg_sub(x, x)), "sub");
    ck_assert_str_eq(fg_grad_fn_name(fg_div(x, x)), "div");
    ck_assert_str_eq(fg_grad_fn_name(fg_exp(x)), "exp");
    ck_assert_str_eq(fg_grad_fn_name(fg_add_scalar(x, 1)), "add_scalar");
    ck_assert_str_eq(fg_grad_fn_name(fg_matmul(x, x)), "matmul");
    ck_assert_str_eq(fg_grad_fn_name(fg_sum_all(x)), "sum");
    ck_assert_str_eq(fg_grad_fn_name(fg_mean(x, FG_DIMS(0), true)), "mean");
    ck_assert_str_eq(fg_grad_fn_name(fg_reshape(x, FG_SHAPE(4))), "reshape");
    ck_assert_str_eq(fg_grad_fn_name(fg_view(x, FG_SHAPE(4))), "view");
    ck_assert_str_eq(fg_grad_fn_name(fg_transpose(x, 0, 1)), "permute");
    ck_assert_str_eq(fg_grad_fn_name(fg_slice(x, 0, 0, 1, 1)), "slice");
    ck_assert_str_eq(fg_grad_fn_name(fg_expand(x, FG_SHAPE(3, 2, 2))), "expand");
    ck_assert_str_eq(fg_grad_fn_name(fg_clone(x)), "clone");
    ck_assert_str_eq(fg_grad_fn_name(fg_contiguous(x)), "contiguous");
    ck_assert_str_eq(fg_grad_fn_name(fg_cast(x, FG_F32)), "to");
    ck_assert_ptr_null(fg_grad_fn_name(fg_detach(fg_exp(x))));
}
END_TEST

START_TEST(test_graph_freed_after_backward)
{
    fg_tensor *x = PARAM(FG_SHAPE(4), 1, 2, 3, 4);
    fg_memory_stats m0, m1;
    fg_get_memory_stats(&m0);
    fg_scope *s = fg_scope_begin();
    fg_tensor *loss = fg_sum_all(fg_exp(fg_mul(x, x)));
    fg_keep(loss);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_nodes, m0.live_nodes + 3); /* mul, exp, sum still pending */
    ck_assert_int_gt(m1.live_tensors, m0.live_tensors + 1); /* saved tensors held by the nodes */
    ck_assert_int_eq(fg_backward(loss), FG_OK);
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_nodes, m0.live_nodes + 1); /* only the node loss itself points to */
    ck_assert_int_eq(m1.live_tensors, m0.live_tensors + 2); /* loss and x.grad */
    ck_assert_int_eq(m1.live_bytes[FG_CPU], m0.live_bytes[FG_CPU] + 8 + 4 * 8);
    fg_free(loss);
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_nodes, m0.live_nodes);
    ck_assert_int_eq(m1.live_tensors, m0.live_tensors + 1);
    fg_clear_grad(x);
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_tensors, m0.live_tensors);
    ck_assert_int_eq(m1.live_bytes[FG_CPU], m0.live_bytes[FG_CPU]);
}
END_TEST

START_TEST(test_saved_tensors_survive_scope)
{
    fg_tensor *x = PARAM(FG_SHAPE(2), 1, 2);
    fg_tensor *w = PARAM(FG_SHAPE(2, 2), 1, 2, 3, 4);
    fg_scope *s = fg_scope_begin();
    fg_tensor *e = fg_exp(x);                       /* saves its output */
    fg_tensor *h = fg_matmul(w, fg_mul(e, x));      /* saves w and x e^x */
    fg_tensor *loss = fg_sum_all(fg_tanh(fg_mul_scalar(h, 0.01)));
    fg_keep(loss);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);       /* every intermediate's scope reference is gone */
    double lv = fg_item(loss);
    ck_assert_int_eq(fg_backward(loss), FG_OK);
    /* reference: u = x e^x, h = w u, L = sum tanh(0.01 h) */
    double u[2] = {1 * exp(1.0), 2 * exp(2.0)}, W[4] = {1, 2, 3, 4}, hv[2], dh[2];
    double L = 0;
    for (int i = 0; i < 2; i++) {
        hv[i] = W[2 * i] * u[0] + W[2 * i + 1] * u[1];
        L += tanh(0.01 * hv[i]);
        dh[i] = 0.01 * (1 - tanh(0.01 * hv[i]) * tanh(0.01 * hv[i]));
    }
    ck_close(lv, L, 1e-12);
    double du[2] = {dh[0] * W[0] + dh[1] * W[2], dh[0] * W[1] + dh[1] * W[3]};
    CK_GRAD(x, 1e-12, du[0] * exp(1.0) * 2, du[1] * exp(2.0) * 3);
    CK_GRAD(w, 1e-12, dh[0] * u[0], dh[0] * u[1], dh[1] * u[0], dh[1] * u[1]);
    fg_free(loss);
}
END_TEST

/* ----------------------------------------------------- gradcheck itself */
static fg_tensor *gc_exp(fg_tensor *const *in, void *ctx) { (void)ctx; return fg_exp(in[0]); }

START_TEST(test_gradcheck_passes_and_fails)
{
    fg_tensor *x = rand_param(gen, FG_SHAPE(2, 3), -1, 1);
    fg_gradcheck_result r;
    ck_assert_int_eq(fg_gradcheck(gc_exp, NULL, 1, &x, NULL, &r), FG_OK);
    ck_assert(r.passed);
    ck_assert_int_eq(r.n_inputs, 1);
    ck_assert_double_lt(r.max_abs_err[0], 1e-6);
    /* an absurd step: central differences of exp are off by sinh(1) - 1 = 17.5% */
    fg_gradcheck_opts o = {.eps = 1.0, .atol = 1e-6, .rtol = 1e-3, .seed = 3};
    ck_assert_int_eq(fg_gradcheck(gc_exp, NULL, 1, &x, &o, &r), FG_OK);
    ck_assert(!r.passed);
    ck_assert_double_gt(r.max_abs_err[0], 1e-3);
    ck_assert_double_gt(r.max_rel_err[0], 0.1);
    ck_assert_double_lt(r.max_rel_err[0], 0.2);
    ck_assert_int_ge(r.worst_index[0], 0);
    ck_assert_int_lt(r.worst_index[0], 6);
    /* the input's values are restored after the perturbations */
    double before[6], after[6];
    ck_assert_int_eq(fg_to_f64_array(x, before, 6), FG_OK);
    ck_assert_int_eq(fg_gradcheck(gc_exp, NULL, 1, &x, &o, &r), FG_OK);
    ck_assert_int_eq(fg_to_f64_array(x, after, 6), FG_OK);
    ck_assert(memcmp(before, after, sizeof before) == 0);
}
END_TEST

START_TEST(test_gradcheck_rejects_bad_inputs)
{
    fg_tensor *x32 = fg_uniform(gen, -1, 1, FG_SHAPE(3), FG_F32, FG_CPU);
    fg_set_requires_grad(x32, true);
    fg_gradcheck_result r;
    ck_assert_int_eq(fg_gradcheck(gc_exp, NULL, 1, &x32, NULL, &r), FG_ERR_DTYPE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "f32"));
    fg_tensor *x = rand_param(gen, FG_SHAPE(3), -1, 1);
    fg_tensor *nonleaf = fg_exp(x);
    ck_assert_int_eq(fg_gradcheck(gc_exp, NULL, 1, &nonleaf, NULL, &r), FG_ERR_INVALID);
    ck_assert_int_eq(fg_gradcheck(gc_exp, NULL, 0, &x, NULL, &r), FG_ERR_INVALID);
    fg_clear_error();
    ck_assert_int_eq(fg_gradcheck(NULL, NULL, 1, &x, NULL, &r), FG_ERR_NULL);
    fg_clear_error();
    ck_assert_int_eq(fg_gradcheck(gc_exp, NULL, 1, &x, NULL, NULL), FG_ERR_NULL);
}
END_TEST

/* ------------------------------------------------------------- compare */
START_TEST(test_compare_values)
{
    fg_tensor *a = fg_from_f64((const double[]){1, 2, 3, 4}, FG_SHAPE(4), FG_F64, FG_CPU);
    fg_tensor *b = fg_from_f64((const double[]){1, 2, 3.5, 4}, FG_SHAPE(4), FG_F32, FG_CPU);
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(a, b, 0.1, 0, &r), FG_OK);
    ck_close(r.max_abs_err, 0.5, 1e-12);
    ck_close(r.max_rel_err, 0.5 / 3.5, 1e-12);
    ck_close(r.rel_l2_err, 0.5 / sqrt(1 + 4 + 12.25 + 16), 1e-12);
    ck_assert_int_eq(r.worst_index, 2);
    ck_assert_int_eq(r.n_mismatch, 1);
    ck_assert(!r.allclose);
    ck_assert_int_eq(fg_compare(a, b, 0, 0.15, &r), FG_OK); /* 0.5 <= 0.15 * 3.5 */
    ck_assert_int_eq(r.n_mismatch, 0);
    ck_assert(r.allclose);
    ck_assert_int_eq(fg_compare(a, a, 0, 0, &r), FG_OK);
    ck_assert(r.allclose);
    ck_assert(r.max_abs_err == 0 && r.rel_l2_err == 0);
    /* strided operands compare in logical order */
    fg_tensor *m = fg_from_f64((const double[]){1, 2, 3, 4}, FG_SHAPE(2, 2), FG_F64, FG_CPU);
    fg_tensor *mt = fg_from_f64((const double[]){1, 3, 2, 4}, FG_SHAPE(2, 2), FG_BF16, FG_CPU);
    ck_assert_int_eq(fg_compare(fg_transpose(m, 0, 1), mt, 0, 0, &r), FG_OK);
    ck_assert(r.allclose);
    ck_assert_int_eq(fg_compare(m, a, 0, 0, &r), FG_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "(2, 2)"));
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "(4,)"));
}
END_TEST

START_TEST(test_compare_nan_inf)
{
    fg_tensor *a = fg_from_f64((const double[]){1, NAN, INFINITY, 2, NAN, 5}, FG_SHAPE(6), FG_F64, FG_CPU);
    fg_tensor *b = fg_from_f64((const double[]){1, NAN, INFINITY, 2, 3, 5}, FG_SHAPE(6), FG_F64, FG_CPU);
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(a, b, 1e-6, 1e-6, &r), FG_OK);
    ck_assert_int_eq(r.n_mismatch, 1); /* only NaN vs 3; NaN/NaN and inf/inf match */
    ck_assert(!r.allclose);
    ck_assert(isinf(r.max_abs_err));
    ck_assert_int_eq(r.worst_index, 4);
    ck_assert(isfinite(r.rel_l2_err));
    ck_assert(r.rel_l2_err == 0); /* the finite pairs agree exactly */
    /* only matching specials: allclose */
    fg_tensor *c = fg_from_f64((const double[]){NAN, -INFINITY, 0}, FG_SHAPE(3), FG_F64, FG_CPU);
    ck_assert_int_eq(fg_compare(c, c, 0, 0, &r), FG_OK);
    ck_assert_int_eq(r.n_mismatch, 0);
    ck_assert(r.allclose);
    ck_assert(r.max_abs_err == 0);
    /* opposite infinities and a value against inf mismatch */
    fg_tensor *d = fg_from_f64((const double[]){NAN, INFINITY, 0}, FG_SHAPE(3), FG_F64, FG_CPU);
    ck_assert_int_eq(fg_compare(c, d, 0, 0, &r), FG_OK);
    ck_assert_int_eq(r.n_mismatch, 1);
    fg_tensor *e = fg_from_f64((const double[]){NAN, -INFINITY, INFINITY}, FG_SHAPE(3), FG_F64, FG_CPU);
    ck_assert_int_eq(fg_compare(c, e, 1e30, 0, &r), FG_OK);
    ck_assert_int_eq(r.n_mismatch, 1);
}
END_TEST

static Suite *autograd_suite(void)
{
    Suite *s = suite_create("autograd");
    TCase *c = tcase_create("engine");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, test_poly_hand_gradient);
    tcase_add_test(c, test_two_inputs);
    tcase_add_test(c, test_tensor_used_twice);
    tcase_add_test(c, test_accumulate_across_backwards);
    tcase_add_test(c, test_zero_grad_keeps_buffer);
    tcase_add_test(c, test_clear_grad);
    tcase_add_test(c, test_detach_stops_gradient);
    tcase_add_test(c, test_no_grad_mode_nests);
    tcase_add_test(c, test_backward_twice_is_state_error);
    tcase_add_test(c, test_shared_subgraph_second_backward_fails);
    tcase_add_test(c, test_backward_non_scalar);
    tcase_add_test(c, test_backward_with_grad);
    tcase_add_test(c, test_backward_without_requires_grad);
    tcase_add_test(c, test_backward_on_leaf);
    tcase_add_test(c, test_set_requires_grad_errors);
    tcase_add_test(c, test_no_grad_to_unused_input);
    tcase_add_test(c, test_partial_view_gradient_values);
    tcase_add_test(c, test_sum_mean_gradients);
    suite_add_tcase(s, c);

    c = tcase_create("views");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, test_grad_reshape);
    tcase_add_test(c, test_grad_transpose_permute);
    tcase_add_test(c, test_grad_slice_narrow);
    tcase_add_test(c, test_grad_expand);
    tcase_add_test(c, test_grad_squeeze_unsqueeze);
    tcase_add_test(c, test_grad_contiguous_clone_to);
    tcase_add_test(c, test_grad_through_cast);
    tcase_add_test(c, test_broadcast_gradient_values);
    tcase_add_test(c, test_broadcast_gradcheck);
    suite_add_tcase(s, c);

    c = tcase_create("graph");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_set_timeout(c, 60);
    tcase_add_test(c, test_diamond);
    tcase_add_test(c, test_deep_chain);
    tcase_add_test(c, test_deep_chain_freed_without_backward);
    tcase_add_test(c, test_deep_chain_backward_after_scope);
    tcase_add_test(c, test_grad_fn_names);
    tcase_add_test(c, test_graph_freed_after_backward);
    tcase_add_test(c, test_saved_tensors_survive_scope);
    suite_add_tcase(s, c);

    c = tcase_create("checking");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, test_gradcheck_passes_and_fails);
    tcase_add_test(c, test_gradcheck_rejects_bad_inputs);
    tcase_add_test(c, test_compare_values);
    tcase_add_test(c, test_compare_nan_inf);
    suite_add_tcase(s, c);
    return s;
}

FG_TEST_MAIN(autograd_suite)
