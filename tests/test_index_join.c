/* Joining/splitting (concat, stack, split, chunk) and indexing (gather, scatter,
 * scatter_add, index_select, index_add, topk): hand-computed values, gradients,
 * gradchecks and error statuses. Every test runs in its own scope and checks
 * that no tensor or node outlives it. */
#include <string.h>
#include "testutil.h"

/* ---- helpers ---- */

/* Exact expected values (row-major). */
#define CKV(t, ...)                                                                  \
    do {                                                                             \
        const double e_[] = {__VA_ARGS__};                                           \
        ck_tensor_values((t), e_, (int64_t)(sizeof e_ / sizeof *e_), 1e-12);         \
    } while (0)

#define CKSHAPE(t, ...) ck_shape((t), FG_SHAPE(__VA_ARGS__))

/* A tensor op that must fail with `code`. */
#define CK_ERR(call, code)                                                                          \
    do {                                                                                            \
        fg_clear_error();                                                                           \
        fg_tensor *r_ = (call);                                                                     \
        ck_assert_msg(r_ == NULL, "%s: expected an error", #call);                                  \
        ck_assert_msg(fg_last_status() == (code), "%s: got %s (%s), expected %s", #call,            \
                      fg_status_name(fg_last_status()), fg_last_error(), fg_status_name(code));     \
    } while (0)

/* A status-returning call that must fail with `code`. */
#define CK_ERRS(call, code)                                                                         \
    do {                                                                                            \
        fg_clear_error();                                                                           \
        fg_status s_ = (call);                                                                      \
        ck_assert_msg(s_ == (code) && fg_last_status() == (code), "%s: got %s (%s), expected %s",   \
                      #call, fg_status_name(s_), fg_last_error(), fg_status_name(code));            \
    } while (0)

static fg_tensor *tf(int nd, const int64_t *shape, const double *v)
{
    fg_tensor *t = fg_from_f64(v, nd, shape, FG_F64, FG_CPU);
    ck_assert_ptr_nonnull(t);
    return t;
}

static fg_tensor *ti64(int nd, const int64_t *shape, const int64_t *v)
{
    fg_tensor *t = fg_from_data(v, nd, shape, FG_I64, FG_CPU);
    ck_assert_ptr_nonnull(t);
    return t;
}

static fg_tensor *ti32(int nd, const int64_t *shape, const int32_t *v)
{
    fg_tensor *t = fg_from_data(v, nd, shape, FG_I32, FG_CPU);
    ck_assert_ptr_nonnull(t);
    return t;
}

static fg_tensor *range(double n, int nd, const int64_t *shape)
{
    fg_tensor *t = fg_reshape(fg_arange(0, n, 1, FG_F64, FG_CPU), nd, shape);
    ck_assert_ptr_nonnull(t);
    return t;
}

/* Makes t a leaf requiring grad. */
static fg_tensor *param(fg_tensor *t)
{
    ck_assert_int_eq(fg_set_requires_grad(t, true), FG_OK);
    return t;
}

/* Backward of sum(out * w), w given row-major in out's shape. */
static void backward_weighted(fg_tensor *out, const double *w)
{
    ck_assert_ptr_nonnull(out);
    fg_tensor *wt = fg_from_f64(w, fg_ndim(out), fg_shape(out), FG_F64, FG_CPU);
    fg_tensor *loss = fg_sum_all(fg_mul(out, wt));
    ck_assert_ptr_nonnull(loss);
    ck_assert_int_eq(fg_backward(loss), FG_OK);
}

/* Same values and shape. */
static void ck_same(const fg_tensor *a, const fg_tensor *b)
{
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(a, b, 0, 0, &r), FG_OK);
    ck_assert_msg(r.allclose, "tensors differ at %lld", (long long)r.worst_index);
}

static void ck_msg_has(const char *needle)
{
    ck_assert_msg(strstr(fg_last_error(), needle) != NULL, "error \"%s\" lacks \"%s\"", fg_last_error(), needle);
}

typedef struct {
    int dim;
    fg_tensor *index;
    int k;
    bool largest;
} op_ctx;

/* ---- concat ---- */

START_TEST(concat_dim0_2d)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    fg_tensor *b = tf(FG_SHAPE(1, 3), (const double[]){7, 8, 9});
    fg_tensor *c = fg_concat(2, (fg_tensor *[]){a, b}, 0);
    CKSHAPE(c, 3, 3);
    CKV(c, 1, 2, 3, 4, 5, 6, 7, 8, 9);
    ck_assert(!fg_shares_storage(c, a));
    END;
}
END_TEST

START_TEST(concat_last_dim_with_empty)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(2, 2), (const double[]){1, 2, 3, 4});
    fg_tensor *b = tf(FG_SHAPE(2, 1), (const double[]){5, 6});
    fg_tensor *e = fg_zeros(FG_SHAPE(2, 0), FG_F64, FG_CPU);
    fg_tensor *c = fg_concat(3, (fg_tensor *[]){a, e, b}, -1);
    CKSHAPE(c, 2, 3);
    CKV(c, 1, 2, 5, 3, 4, 6);
    END;
}
END_TEST

START_TEST(concat_3d_negative_middle_dim)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(2, 1, 2), (const double[]){1, 2, 3, 4});
    fg_tensor *b = tf(FG_SHAPE(2, 2, 2), (const double[]){5, 6, 7, 8, 9, 10, 11, 12});
    fg_tensor *c = fg_concat(2, (fg_tensor *[]){a, b}, -2);
    CKSHAPE(c, 2, 3, 2);
    CKV(c, 1, 2, 5, 6, 7, 8, 3, 4, 9, 10, 11, 12);
    END;
}
END_TEST

START_TEST(concat_int_and_f32_dtypes)
{
    BEGIN;
    fg_tensor *a = ti64(FG_SHAPE(2), (const int64_t[]){1, 2});
    fg_tensor *b = ti64(FG_SHAPE(1), (const int64_t[]){3});
    fg_tensor *c = fg_concat(2, (fg_tensor *[]){a, b}, 0);
    ck_assert_int_eq(fg_dtype_of(c), FG_I64);
    CKV(c, 1, 2, 3);
    fg_tensor *x = fg_full(FG_SHAPE(1, 2), 0.5, FG_F32, FG_CPU);
    fg_tensor *y = fg_full(FG_SHAPE(1, 2), 1.5, FG_F32, FG_CPU);
    fg_tensor *z = fg_concat(2, (fg_tensor *[]){x, y}, 0);
    ck_assert_int_eq(fg_dtype_of(z), FG_F32);
    CKV(z, 0.5, 0.5, 1.5, 1.5);
    END;
}
END_TEST

START_TEST(concat_strided_equals_contiguous)
{
    BEGIN;
    fg_tensor *x = tf(FG_SHAPE(3, 2), (const double[]){1, 2, 3, 4, 5, 6});
    fg_tensor *xt = fg_transpose(x, 0, 1); /* (2, 3), strided */
    ck_assert(!fg_is_contiguous(xt));
    fg_tensor *xc = fg_contiguous(xt);
    fg_tensor *y = tf(FG_SHAPE(2, 1), (const double[]){7, 8});
    fg_tensor *s = fg_concat(2, (fg_tensor *[]){xt, y}, 1);
    fg_tensor *c = fg_concat(2, (fg_tensor *[]){xc, y}, 1);
    CKV(s, 1, 3, 5, 7, 2, 4, 6, 8);
    ck_same(s, c);
    fg_tensor *s2 = fg_concat(2, (fg_tensor *[]){xt, xt}, 0);
    CKV(s2, 1, 3, 5, 2, 4, 6, 1, 3, 5, 2, 4, 6);
    END;
}
END_TEST

START_TEST(concat_backward_values)
{
    BEGIN;
    fg_tensor *a = param(tf(FG_SHAPE(2, 2), (const double[]){1, 2, 3, 4}));
    fg_tensor *b = param(tf(FG_SHAPE(2, 1), (const double[]){5, 6}));
    fg_tensor *k = tf(FG_SHAPE(2, 1), (const double[]){0, 0}); /* constant, no grad */
    fg_tensor *c = fg_concat(3, (fg_tensor *[]){a, b, k}, 1);
    ck_assert_str_eq(fg_grad_fn_name(c), "concat");
    backward_weighted(c, (const double[]){1, 2, 3, 4, 5, 6, 7, 8});
    CKV(fg_grad(a), 1, 2, 5, 6);
    CKV(fg_grad(b), 3, 7);
    ck_assert_ptr_null(fg_grad(k));
    END;
}
END_TEST

static fg_tensor *f_concat3(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return fg_concat(3, in, 1);
}

START_TEST(concat_gradcheck_three_inputs)
{
    BEGIN;
    fg_tensor *in[3] = {rand_param(gen, FG_SHAPE(2, 1, 3), -1, 1), rand_param(gen, FG_SHAPE(2, 2, 3), -1, 1),
                        rand_param(gen, FG_SHAPE(2, 3, 3), -1, 1)};
    ck_gradcheck(f_concat3, NULL, 3, in);
    END;
}
END_TEST

START_TEST(concat_errors)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    fg_tensor *b = tf(FG_SHAPE(3, 3), (const double[]){1, 2, 3, 4, 5, 6, 7, 8, 9});
    fg_tensor *f = fg_zeros(FG_SHAPE(2, 3), FG_F32, FG_CPU);
    fg_tensor *v = tf(FG_SHAPE(3), (const double[]){1, 2, 3});
    fg_tensor *s = fg_scalar(1, FG_F64, FG_CPU);
    CK_ERR(fg_concat(2, (fg_tensor *[]){a, f}, 0), FG_ERR_DTYPE);
    ck_msg_has("concat");
    CK_ERR(fg_concat(2, (fg_tensor *[]){a, b}, 1), FG_ERR_SHAPE);
    ck_msg_has("(3, 3)");
    CK_ERR(fg_concat(2, (fg_tensor *[]){a, v}, 0), FG_ERR_SHAPE);
    CK_ERR(fg_concat(2, (fg_tensor *[]){a, b}, 2), FG_ERR_DIM);
    CK_ERR(fg_concat(2, (fg_tensor *[]){a, b}, -3), FG_ERR_DIM);
    CK_ERR(fg_concat(2, (fg_tensor *[]){s, s}, 0), FG_ERR_DIM);
    CK_ERR(fg_concat(2, NULL, 0), FG_ERR_NULL);
    CK_ERR(fg_concat(2, (fg_tensor *[]){a, NULL}, 0), FG_ERR_NULL);
    CK_ERR(fg_concat(0, (fg_tensor *[]){a}, 0), FG_ERR_INVALID);
    END;
}
END_TEST

/* ---- stack ---- */

START_TEST(stack_1d_dims)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(3), (const double[]){1, 2, 3});
    fg_tensor *b = tf(FG_SHAPE(3), (const double[]){4, 5, 6});
    fg_tensor *s0 = fg_stack(2, (fg_tensor *[]){a, b}, 0);
    CKSHAPE(s0, 2, 3);
    CKV(s0, 1, 2, 3, 4, 5, 6);
    fg_tensor *s1 = fg_stack(2, (fg_tensor *[]){a, b}, 1);
    CKSHAPE(s1, 3, 2);
    CKV(s1, 1, 4, 2, 5, 3, 6);
    ck_same(fg_stack(2, (fg_tensor *[]){a, b}, -1), s1);
    ck_same(fg_stack(2, (fg_tensor *[]){a, b}, -2), s0);
    END;
}
END_TEST

START_TEST(stack_2d_middle_and_scalars)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(2, 2), (const double[]){1, 2, 3, 4});
    fg_tensor *b = tf(FG_SHAPE(2, 2), (const double[]){5, 6, 7, 8});
    fg_tensor *s = fg_stack(2, (fg_tensor *[]){a, b}, 1);
    CKSHAPE(s, 2, 2, 2);
    CKV(s, 1, 2, 5, 6, 3, 4, 7, 8);
    fg_tensor *bt = fg_transpose(b, 0, 1); /* strided input: [5, 7; 6, 8] */
    fg_tensor *st = fg_stack(2, (fg_tensor *[]){a, bt}, 2);
    CKSHAPE(st, 2, 2, 2);
    CKV(st, 1, 5, 2, 7, 3, 6, 4, 8);
    fg_tensor *x = fg_scalar(7, FG_F64, FG_CPU), *y = fg_scalar(9, FG_F64, FG_CPU);
    fg_tensor *v = fg_stack(3, (fg_tensor *[]){x, y, x}, 0);
    CKSHAPE(v, 3);
    CKV(v, 7, 9, 7);
    END;
}
END_TEST

START_TEST(stack_backward_values)
{
    BEGIN;
    fg_tensor *a = param(tf(FG_SHAPE(3), (const double[]){1, 2, 3}));
    fg_tensor *b = param(tf(FG_SHAPE(3), (const double[]){4, 5, 6}));
    fg_tensor *s = fg_stack(2, (fg_tensor *[]){a, b}, 1); /* (3, 2) */
    ck_assert_str_eq(fg_grad_fn_name(s), "stack");
    backward_weighted(s, (const double[]){1, 2, 3, 4, 5, 6});
    CKV(fg_grad(a), 1, 3, 5);
    CKV(fg_grad(b), 2, 4, 6);
    END;
}
END_TEST

static fg_tensor *f_stack(fg_tensor *const *in, void *ctx)
{
    return fg_stack(2, in, ((op_ctx *)ctx)->dim);
}

START_TEST(stack_gradcheck)
{
    BEGIN;
    fg_tensor *in[2] = {rand_param(gen, FG_SHAPE(2, 3), -1, 1), rand_param(gen, FG_SHAPE(2, 3), -1, 1)};
    op_ctx c = {.dim = 1};
    ck_gradcheck(f_stack, &c, 2, in);
    c.dim = -1;
    ck_gradcheck(f_stack, &c, 2, in);
    END;
}
END_TEST

START_TEST(stack_errors)
{
    BEGIN;
    fg_tensor *a = fg_zeros(FG_SHAPE(2, 3), FG_F64, FG_CPU);
    fg_tensor *b = fg_zeros(FG_SHAPE(3, 2), FG_F64, FG_CPU);
    fg_tensor *c = fg_zeros(FG_SHAPE(2, 3), FG_F32, FG_CPU);
    CK_ERR(fg_stack(2, (fg_tensor *[]){a, b}, 0), FG_ERR_SHAPE);
    ck_msg_has("stack");
    CK_ERR(fg_stack(2, (fg_tensor *[]){a, c}, 0), FG_ERR_DTYPE);
    CK_ERR(fg_stack(2, (fg_tensor *[]){a, a}, 3), FG_ERR_DIM);
    CK_ERR(fg_stack(2, (fg_tensor *[]){a, a}, -4), FG_ERR_DIM);
    ck_assert_ptr_nonnull(fg_stack(2, (fg_tensor *[]){a, a}, 2));
    CK_ERR(fg_stack(1, (fg_tensor *[]){NULL}, 0), FG_ERR_NULL);
    CK_ERR(fg_stack(-1, (fg_tensor *[]){a}, 0), FG_ERR_INVALID);
    END;
}
END_TEST

/* ---- split ---- */

START_TEST(split_dim0_views)
{
    BEGIN;
    fg_tensor *t = range(10, FG_SHAPE(5, 2));
    fg_tensor *p[2];
    ck_assert_int_eq(fg_split(t, 0, 2, (const int64_t[]){2, 3}, p), FG_OK);
    CKSHAPE(p[0], 2, 2);
    CKSHAPE(p[1], 3, 2);
    CKV(p[0], 0, 1, 2, 3);
    CKV(p[1], 4, 5, 6, 7, 8, 9);
    ck_assert(fg_shares_storage(p[0], t) && fg_shares_storage(p[1], t));
    END;
}
END_TEST

START_TEST(split_3d_negative_dim_with_empty_piece)
{
    BEGIN;
    fg_tensor *t = range(16, FG_SHAPE(2, 4, 2));
    fg_tensor *p[3];
    ck_assert_int_eq(fg_split(t, -2, 3, (const int64_t[]){1, 0, 3}, p), FG_OK);
    CKSHAPE(p[0], 2, 1, 2);
    CKSHAPE(p[1], 2, 0, 2);
    CKSHAPE(p[2], 2, 3, 2);
    CKV(p[0], 0, 1, 8, 9);
    ck_assert_int_eq(fg_numel(p[1]), 0);
    CKV(p[2], 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15);
    /* Last dim of a strided tensor. */
    fg_tensor *q[2];
    ck_assert_int_eq(fg_split(fg_transpose(t, 0, 2), 2, 2, (const int64_t[]){1, 1}, q), FG_OK);
    CKSHAPE(q[1], 2, 4, 1);
    CKV(q[1], 8, 10, 12, 14, 9, 11, 13, 15);
    END;
}
END_TEST

START_TEST(split_backward_values)
{
    BEGIN;
    fg_tensor *t = param(tf(FG_SHAPE(4), (const double[]){1, 2, 3, 4}));
    fg_tensor *p[2];
    ck_assert_int_eq(fg_split(t, 0, 2, (const int64_t[]){1, 3}, p), FG_OK);
    /* loss = 3 p0 + sum(p1^2): grads 3 and 2 x. */
    fg_tensor *loss = fg_add(fg_sum_all(fg_mul_scalar(p[0], 3)), fg_sum_all(fg_mul(p[1], p[1])));
    ck_assert_int_eq(fg_backward(loss), FG_OK);
    CKV(fg_grad(t), 3, 4, 6, 8);
    END;
}
END_TEST

/* Pieces whose gradients are the windows of one tensor (concat's backward
 * hands out such views) take split's no-copy path; pieces joined in another
 * order, or one piece unused, take the copying path. Both give w (times the
 * piece's use) exactly. */
START_TEST(split_backward_tiled_and_not)
{
    BEGIN;
    const int64_t sizes[3] = {2, 3, 1};
    for (int order = 0; order < 3; order++) {
        fg_tensor *t = param(fg_arange(0, 24, 1, FG_F64, FG_CPU));
        fg_tensor *x = fg_reshape(t, FG_SHAPE(4, 6));
        fg_tensor *w = fg_arange(1, 25, 1, FG_F64, FG_CPU); /* weights 1..24 */
        fg_tensor *p[3];
        ck_assert_int_eq(fg_split(x, 1, 3, sizes, p), FG_OK);
        fg_tensor *joined = order == 0   ? fg_concat(3, (fg_tensor *[]){p[0], p[1], p[2]}, 1)  /* tiled */
                            : order == 1 ? fg_concat(3, (fg_tensor *[]){p[2], p[0], p[1]}, 1) /* permuted */
                                         : fg_concat(2, (fg_tensor *[]){p[0], p[1]}, 1);      /* p[2] unused */
        const int64_t cols = order == 2 ? 5 : 6;
        fg_tensor *wj = fg_reshape(fg_narrow(w, 0, 0, 4 * cols), FG_SHAPE(4, cols));
        ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul(joined, wj))), FG_OK);
        double g[24];
        ck_assert_int_eq(fg_to_f64_array(fg_grad(t), g, 24), FG_OK);
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 6; c++) {
                /* column c of x sits at column pos of joined */
                int pos = c;
                if (order == 1) pos = c == 5 ? 0 : c + 1;
                const double want = order == 2 && c == 5 ? 0 : (double)(r * cols + pos + 1);
                ck_assert_msg(g[r * 6 + c] == want, "order %d: grad[%d][%d] = %g, want %g", order, r, c,
                              g[r * 6 + c], want);
            }
    }
    END;
}
END_TEST

static fg_tensor *f_split(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    fg_tensor *p[3];
    if (fg_split(in[0], 0, 3, (const int64_t[]){2, 1, 2}, p) != FG_OK) return NULL;
    return fg_add(fg_mul(p[0], p[2]), p[1]); /* (2,3) * (2,3) + (1,3) */
}

START_TEST(split_gradcheck)
{
    BEGIN;
    fg_tensor *in[1] = {rand_param(gen, FG_SHAPE(5, 3), -1, 1)};
    ck_gradcheck(f_split, NULL, 1, in);
    END;
}
END_TEST

START_TEST(split_errors)
{
    BEGIN;
    fg_tensor *t = fg_zeros(FG_SHAPE(5, 2), FG_F64, FG_CPU);
    fg_tensor *p[2] = {t, t};
    CK_ERRS(fg_split(t, 0, 2, (const int64_t[]){2, 2}, p), FG_ERR_INVALID);
    ck_msg_has("sum to 4");
    ck_assert_ptr_null(p[0]);
    ck_assert_ptr_null(p[1]);
    CK_ERRS(fg_split(t, 0, 2, (const int64_t[]){-1, 6}, p), FG_ERR_INVALID);
    CK_ERRS(fg_split(t, 1, 2, (const int64_t[]){2, 1}, p), FG_ERR_INVALID);
    CK_ERRS(fg_split(t, 2, 2, (const int64_t[]){2, 3}, p), FG_ERR_DIM);
    CK_ERRS(fg_split(t, 0, 0, (const int64_t[]){5}, p), FG_ERR_INVALID);
    CK_ERRS(fg_split(t, 0, 2, NULL, p), FG_ERR_NULL);
    CK_ERRS(fg_split(t, 0, 2, (const int64_t[]){2, 3}, NULL), FG_ERR_NULL);
    CK_ERRS(fg_split(NULL, 0, 2, (const int64_t[]){2, 3}, p), FG_ERR_NULL);
    CK_ERRS(fg_split(fg_scalar(1, FG_F64, FG_CPU), 0, 1, (const int64_t[]){1}, p), FG_ERR_DIM);
    END;
}
END_TEST

/* ---- chunk ---- */

START_TEST(chunk_even)
{
    BEGIN;
    fg_tensor *t = range(6, FG_SHAPE(6));
    fg_tensor *p[3];
    ck_assert_int_eq(fg_chunk(t, 0, 3, p), FG_OK);
    CKV(p[0], 0, 1);
    CKV(p[1], 2, 3);
    CKV(p[2], 4, 5);
    END;
}
END_TEST

START_TEST(chunk_uneven_last_dim)
{
    BEGIN;
    fg_tensor *t = range(10, FG_SHAPE(2, 5));
    fg_tensor *p[3];
    ck_assert_int_eq(fg_chunk(t, -1, 3, p), FG_OK); /* ceil(5/3) = 2: sizes 2, 2, 1 */
    CKSHAPE(p[0], 2, 2);
    CKSHAPE(p[2], 2, 1);
    CKV(p[0], 0, 1, 5, 6);
    CKV(p[1], 2, 3, 7, 8);
    CKV(p[2], 4, 9);
    fg_tensor *q[2];
    ck_assert_int_eq(fg_chunk(t, 0, 2, q), FG_OK);
    CKV(q[1], 5, 6, 7, 8, 9);
    END;
}
END_TEST

START_TEST(chunk_fewer_nonempty_than_n)
{
    BEGIN;
    fg_tensor *t = range(5, FG_SHAPE(5));
    fg_tensor *p[4];
    ck_assert_int_eq(fg_chunk(t, 0, 4, p), FG_OK); /* 2, 2, 1, then an empty view */
    CKV(p[0], 0, 1);
    CKV(p[1], 2, 3);
    CKV(p[2], 4);
    CKSHAPE(p[3], 0);
    fg_tensor *u = range(6, FG_SHAPE(6));
    fg_tensor *q[4];
    ck_assert_int_eq(fg_chunk(u, 0, 4, q), FG_OK); /* 2, 2, 2, 0 */
    CKV(q[2], 4, 5);
    CKSHAPE(q[3], 0);
    fg_tensor *w = range(2, FG_SHAPE(2));
    fg_tensor *r[5];
    ck_assert_int_eq(fg_chunk(w, 0, 5, r), FG_OK); /* 1, 1, 0, 0, 0 */
    CKV(r[1], 1);
    for (int i = 2; i < 5; i++) CKSHAPE(r[i], 0);
    END;
}
END_TEST

static fg_tensor *f_chunk(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    fg_tensor *p[3];
    if (fg_chunk(in[0], -1, 3, p) != FG_OK) return NULL; /* (2,3) (2,3) (2,1) */
    return fg_add(fg_mul(p[0], p[1]), p[2]);
}

START_TEST(chunk_gradcheck)
{
    BEGIN;
    fg_tensor *in[1] = {rand_param(gen, FG_SHAPE(2, 7), -1, 1)};
    ck_gradcheck(f_chunk, NULL, 1, in);
    END;
}
END_TEST

START_TEST(chunk_errors)
{
    BEGIN;
    fg_tensor *t = fg_zeros(FG_SHAPE(4, 2), FG_F64, FG_CPU);
    fg_tensor *p[2];
    CK_ERRS(fg_chunk(t, 0, 0, p), FG_ERR_INVALID);
    CK_ERRS(fg_chunk(t, -3, 2, p), FG_ERR_DIM);
    CK_ERRS(fg_chunk(NULL, 0, 2, p), FG_ERR_NULL);
    CK_ERRS(fg_chunk(t, 0, 2, NULL), FG_ERR_NULL);
    CK_ERRS(fg_chunk(fg_scalar(1, FG_F64, FG_CPU), 0, 2, p), FG_ERR_DIM);
    END;
}
END_TEST

/* ---- gather ---- */

START_TEST(gather_dim0_i64)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(3, 2), (const double[]){1, 2, 3, 4, 5, 6});
    fg_tensor *ix = ti64(FG_SHAPE(2, 2), (const int64_t[]){2, 0, 1, 2});
    fg_tensor *g = fg_gather(a, 0, ix);
    CKSHAPE(g, 2, 2);
    CKV(g, 5, 2, 3, 6); /* a[2][0], a[0][1], a[1][0], a[2][1] */
    END;
}
END_TEST

START_TEST(gather_dim1_i32_wider_index)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    /* index.size(dim) may exceed input.size(dim); other dims may be smaller. */
    fg_tensor *ix = ti32(FG_SHAPE(2, 4), (const int32_t[]){2, 2, 0, 1, 0, 1, 1, 0});
    fg_tensor *g = fg_gather(a, 1, ix);
    CKSHAPE(g, 2, 4);
    CKV(g, 3, 3, 1, 2, 4, 5, 5, 4);
    fg_tensor *ix1 = ti32(FG_SHAPE(1, 2), (const int32_t[]){2, 0});
    CKV(fg_gather(a, -1, ix1), 3, 1);
    END;
}
END_TEST

START_TEST(gather_3d_middle_and_last)
{
    BEGIN;
    fg_tensor *a = range(12, FG_SHAPE(2, 3, 2)); /* a[b][i][k] = 6b + 2i + k */
    fg_tensor *ix = ti64(FG_SHAPE(2, 2, 1), (const int64_t[]){2, 0, 1, 1});
    fg_tensor *g = fg_gather(a, -2, ix);
    CKSHAPE(g, 2, 2, 1);
    CKV(g, 4, 0, 8, 8);
    fg_tensor *ix2 = ti32(FG_SHAPE(1, 2, 2), (const int32_t[]){1, 0, 1, 1});
    CKV(fg_gather(a, 2, ix2), 1, 0, 3, 3);
    fg_tensor *ix0 = ti64(FG_SHAPE(1, 1, 2), (const int64_t[]){1, 0});
    CKV(fg_gather(a, 0, ix0), 6, 1);
    END;
}
END_TEST

START_TEST(gather_strided_and_int_data)
{
    BEGIN;
    fg_tensor *x = tf(FG_SHAPE(3, 2), (const double[]){1, 2, 3, 4, 5, 6});
    fg_tensor *at = fg_transpose(x, 0, 1); /* [1 3 5; 2 4 6] */
    fg_tensor *ix = ti64(FG_SHAPE(2, 2), (const int64_t[]){2, 0, 1, 1});
    fg_tensor *g = fg_gather(at, 1, ix);
    CKV(g, 5, 1, 4, 4);
    ck_same(g, fg_gather(fg_contiguous(at), 1, ix));
    /* A transposed index reads the same as its contiguous copy. */
    fg_tensor *ixt = fg_transpose(ix, 0, 1); /* [2 1; 0 1] */
    ck_same(fg_gather(at, 1, ixt), fg_gather(at, 1, fg_contiguous(ixt)));
    CKV(fg_gather(at, 1, ixt), 5, 3, 2, 4);
    fg_tensor *vi = ti64(FG_SHAPE(3), (const int64_t[]){10, 20, 30});
    fg_tensor *gi = fg_gather(vi, 0, ti64(FG_SHAPE(3), (const int64_t[]){2, 2, 0}));
    ck_assert_int_eq(fg_dtype_of(gi), FG_I64);
    CKV(gi, 30, 30, 10);
    END;
}
END_TEST

START_TEST(gather_backward_values)
{
    BEGIN;
    fg_tensor *a = param(tf(FG_SHAPE(3), (const double[]){1, 2, 3}));
    fg_tensor *g = fg_gather(a, 0, ti64(FG_SHAPE(4), (const int64_t[]){0, 2, 0, 0}));
    ck_assert_str_eq(fg_grad_fn_name(g), "gather");
    backward_weighted(g, (const double[]){1, 2, 3, 4});
    CKV(fg_grad(a), 8, 0, 2);
    END;
}
END_TEST

static fg_tensor *f_gather(fg_tensor *const *in, void *ctx)
{
    op_ctx *c = ctx;
    return fg_gather(in[0], c->dim, c->index);
}

START_TEST(gather_gradcheck)
{
    BEGIN;
    fg_tensor *in[1] = {rand_param(gen, FG_SHAPE(2, 3, 4), -1, 1)};
    op_ctx c = {.dim = 1, .index = ti64(FG_SHAPE(2, 4, 3), (const int64_t[]){0, 1, 2, 2, 2, 2, 1, 0, 1, 0, 0, 0,
                                                                               2, 1, 0, 1, 1, 1, 0, 2, 2, 2, 0, 1})};
    ck_gradcheck(f_gather, &c, 1, in);
    c.dim = -1;
    c.index = ti32(FG_SHAPE(1, 2, 5), (const int32_t[]){3, 3, 0, 1, 2, 0, 0, 0, 3, 1});
    ck_gradcheck(f_gather, &c, 1, in);
    END;
}
END_TEST

START_TEST(gather_errors)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(3, 2), (const double[]){1, 2, 3, 4, 5, 6});
    fg_tensor *fix = tf(FG_SHAPE(2, 2), (const double[]){0, 1, 1, 0});
    CK_ERR(fg_gather(a, 0, fix), FG_ERR_DTYPE);
    ck_msg_has("gather");
    CK_ERR(fg_gather(a, 0, ti64(FG_SHAPE(2, 2), (const int64_t[]){0, 1, 3, 0})), FG_ERR_INDEX);
    ck_assert_str_eq(fg_last_error(), "gather: index 3 out of range for dim 0 of size 3 (input (3, 2))");
    CK_ERR(fg_gather(a, 1, ti32(FG_SHAPE(1, 2), (const int32_t[]){0, -1})), FG_ERR_INDEX);
    ck_msg_has("index -1");
    CK_ERR(fg_gather(a, 0, ti64(FG_SHAPE(2), (const int64_t[]){0, 1})), FG_ERR_SHAPE);
    CK_ERR(fg_gather(a, 0, ti64(FG_SHAPE(1, 3), (const int64_t[]){0, 1, 2})), FG_ERR_SHAPE);
    CK_ERR(fg_gather(a, 2, ti64(FG_SHAPE(1, 1), (const int64_t[]){0})), FG_ERR_DIM);
    CK_ERR(fg_gather(a, -3, ti64(FG_SHAPE(1, 1), (const int64_t[]){0})), FG_ERR_DIM);
    CK_ERR(fg_gather(NULL, 0, fix), FG_ERR_NULL);
    CK_ERR(fg_gather(a, 0, NULL), FG_ERR_NULL);
    CK_ERR(fg_gather(fg_scalar(1, FG_F64, FG_CPU), 0, ti64(0, NULL, (const int64_t[]){0})), FG_ERR_DIM);
    END;
}
END_TEST

/* ---- scatter ---- */

START_TEST(scatter_dim0)
{
    BEGIN;
    fg_tensor *a = fg_zeros(FG_SHAPE(3, 3), FG_F64, FG_CPU);
    fg_tensor *ix = ti64(FG_SHAPE(2, 3), (const int64_t[]){0, 1, 2, 2, 0, 1});
    fg_tensor *src = tf(FG_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    fg_tensor *s = fg_scatter(a, 0, ix, src);
    CKSHAPE(s, 3, 3);
    CKV(s, 1, 5, 0, 0, 2, 6, 4, 0, 3);
    CKV(a, 0, 0, 0, 0, 0, 0, 0, 0, 0); /* input untouched */
    END;
}
END_TEST

START_TEST(scatter_duplicates_last_write_wins)
{
    BEGIN;
    fg_tensor *a = fg_full(FG_SHAPE(2, 4), 9, FG_F64, FG_CPU);
    fg_tensor *ix = ti32(FG_SHAPE(2, 3), (const int32_t[]){1, 1, 3, 0, 0, 0});
    fg_tensor *src = tf(FG_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    CKV(fg_scatter(a, 1, ix, src), 9, 2, 9, 3, 6, 9, 9, 9);
    END;
}
END_TEST

START_TEST(scatter_3d_last_dim_larger_src)
{
    BEGIN;
    fg_tensor *a = fg_full(FG_SHAPE(2, 2, 3), -1, FG_F64, FG_CPU);
    fg_tensor *ix = ti64(FG_SHAPE(2, 2, 1), (const int64_t[]){2, 0, 1, 2});
    fg_tensor *src = range(8, FG_SHAPE(2, 2, 2)); /* 4b + 2i + k; only src[..., 0] is used */
    fg_tensor *s = fg_scatter(a, -1, ix, src);
    CKV(s, -1, -1, 0, 2, -1, -1, -1, 4, -1, -1, -1, 6);
    /* Strided a and src give the contiguous result. */
    fg_tensor *at = fg_transpose(fg_full(FG_SHAPE(3, 2, 2), -1, FG_F64, FG_CPU), 0, 2);
    fg_tensor *st = fg_transpose(fg_contiguous(fg_transpose(src, 0, 1)), 0, 1);
    ck_assert(!fg_is_contiguous(at) && !fg_is_contiguous(st));
    ck_same(fg_scatter(at, 2, ix, st), s);
    END;
}
END_TEST

START_TEST(scatter_backward_values)
{
    BEGIN;
    fg_tensor *a = param(tf(FG_SHAPE(3), (const double[]){1, 2, 3}));
    fg_tensor *src = param(tf(FG_SHAPE(2), (const double[]){7, 8}));
    fg_tensor *s = fg_scatter(a, 0, ti64(FG_SHAPE(2), (const int64_t[]){2, 0}), src);
    CKV(s, 8, 2, 7);
    backward_weighted(s, (const double[]){1, 2, 3});
    CKV(fg_grad(a), 0, 2, 0);
    CKV(fg_grad(src), 3, 1);
    END;
}
END_TEST

static fg_tensor *f_scatter(fg_tensor *const *in, void *ctx)
{
    op_ctx *c = ctx;
    return fg_scatter(in[0], c->dim, c->index, in[1]);
}

START_TEST(scatter_gradcheck_a_and_src)
{
    BEGIN;
    /* Distinct positions per column, index narrower than src (src gets zero grad outside). */
    fg_tensor *in[2] = {rand_param(gen, FG_SHAPE(3, 4), -1, 1), rand_param(gen, FG_SHAPE(2, 4), -1, 1)};
    op_ctx c = {.dim = 0, .index = ti64(FG_SHAPE(2, 3), (const int64_t[]){0, 2, 1, 2, 1, 0})};
    ck_gradcheck(f_scatter, &c, 2, in);
    fg_tensor *in3[2] = {rand_param(gen, FG_SHAPE(2, 2, 3), -1, 1), rand_param(gen, FG_SHAPE(2, 2, 2), -1, 1)};
    c.dim = -1;
    c.index = ti32(FG_SHAPE(2, 2, 2), (const int32_t[]){0, 2, 1, 0, 2, 1, 0, 1});
    ck_gradcheck(f_scatter, &c, 2, in3);
    END;
}
END_TEST

START_TEST(scatter_errors)
{
    BEGIN;
    fg_tensor *a = fg_zeros(FG_SHAPE(3, 2), FG_F64, FG_CPU);
    fg_tensor *src = fg_ones(FG_SHAPE(2, 2), FG_F64, FG_CPU);
    fg_tensor *ix = ti64(FG_SHAPE(2, 2), (const int64_t[]){0, 1, 2, 0});
    ck_assert_ptr_nonnull(fg_scatter(a, 0, ix, src));
    CK_ERR(fg_scatter(a, 0, ti64(FG_SHAPE(2, 2), (const int64_t[]){0, 1, 3, 0}), src), FG_ERR_INDEX);
    ck_assert_str_eq(fg_last_error(), "scatter: index 3 out of range for dim 0 of size 3 (input (3, 2))");
    CK_ERR(fg_scatter(a, 1, ti32(FG_SHAPE(1, 1), (const int32_t[]){-2}), src), FG_ERR_INDEX);
    CK_ERR(fg_scatter(a, 0, ix, fg_ones(FG_SHAPE(2, 2), FG_F32, FG_CPU)), FG_ERR_DTYPE);
    CK_ERR(fg_scatter(a, 0, fg_zeros(FG_SHAPE(2, 2), FG_F32, FG_CPU), src), FG_ERR_DTYPE);
    CK_ERR(fg_scatter(a, 0, ti64(FG_SHAPE(3, 2), (const int64_t[]){0, 0, 0, 0, 0, 0}), src), FG_ERR_SHAPE);
    ck_msg_has("src");
    CK_ERR(fg_scatter(a, 0, ti64(FG_SHAPE(1, 3), (const int64_t[]){0, 0, 0}), fg_ones(FG_SHAPE(2, 3), FG_F64, FG_CPU)),
           FG_ERR_SHAPE);
    CK_ERR(fg_scatter(a, 0, ti64(FG_SHAPE(2), (const int64_t[]){0, 0}), src), FG_ERR_SHAPE);
    CK_ERR(fg_scatter(a, 2, ix, src), FG_ERR_DIM);
    CK_ERR(fg_scatter(a, 0, ix, NULL), FG_ERR_NULL);
    CK_ERR(fg_scatter(NULL, 0, ix, src), FG_ERR_NULL);
    END;
}
END_TEST

/* ---- scatter_add ---- */

START_TEST(scatter_add_duplicates_accumulate)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(4), (const double[]){1, 2, 3, 4});
    fg_tensor *ix = ti64(FG_SHAPE(5), (const int64_t[]){0, 2, 0, 0, 3});
    fg_tensor *src = tf(FG_SHAPE(5), (const double[]){10, 20, 30, 40, 50});
    CKV(fg_scatter_add(a, 0, ix, src), 81, 2, 23, 54);
    END;
}
END_TEST

START_TEST(scatter_add_2d_i32_and_f32)
{
    BEGIN;
    fg_tensor *a = fg_zeros(FG_SHAPE(2, 3), FG_F64, FG_CPU);
    fg_tensor *ix = ti32(FG_SHAPE(2, 2), (const int32_t[]){2, 2, 0, 1});
    fg_tensor *src = tf(FG_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    CKV(fg_scatter_add(a, 1, ix, src), 0, 0, 3, 4, 5, 0);
    CKV(fg_scatter_add(a, 0, ti64(FG_SHAPE(2, 3), (const int64_t[]){1, 1, 0, 1, 0, 0}), src), 0, 5, 9, 5, 2, 0);
    fg_tensor *af = fg_zeros(FG_SHAPE(1, 2), FG_F32, FG_CPU);
    fg_tensor *sf = fg_full(FG_SHAPE(1, 4), 0.25, FG_F32, FG_CPU);
    fg_tensor *r = fg_scatter_add(af, -1, ti64(FG_SHAPE(1, 4), (const int64_t[]){1, 1, 1, 0}), sf);
    ck_assert_int_eq(fg_dtype_of(r), FG_F32);
    CKV(r, 0.25, 0.75);
    END;
}
END_TEST

START_TEST(scatter_add_3d_middle)
{
    BEGIN;
    fg_tensor *a = fg_zeros(FG_SHAPE(2, 2, 2), FG_F64, FG_CPU);
    fg_tensor *ix = ti64(FG_SHAPE(2, 3, 2), (const int64_t[]){0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1});
    fg_tensor *src = range(12, FG_SHAPE(2, 3, 2)); /* 6b + 2i + k */
    /* out[b][index[b][i][k]][k] += src[b][i][k]:
     * b=0: out[0][0] = 0 + 4, out[0][1] = 5, out[1][0] = 2, out[1][1] = 1 + 3
     * b=1: out[0][0] = 0, out[0][1] = 9, out[1][0] = 6 + 8 + 10, out[1][1] = 7 + 11 */
    CKV(fg_scatter_add(a, 1, ix, src), 4, 5, 2, 4, 0, 9, 24, 18);
    END;
}
END_TEST

START_TEST(scatter_add_backward_values)
{
    BEGIN;
    fg_tensor *a = param(tf(FG_SHAPE(2), (const double[]){1, 2}));
    fg_tensor *src = param(tf(FG_SHAPE(3), (const double[]){3, 4, 5}));
    fg_tensor *s = fg_scatter_add(a, 0, ti64(FG_SHAPE(3), (const int64_t[]){1, 1, 0}), src);
    CKV(s, 6, 9);
    ck_assert_str_eq(fg_grad_fn_name(s), "scatter_add");
    backward_weighted(s, (const double[]){5, 7});
    CKV(fg_grad(a), 5, 7);
    CKV(fg_grad(src), 7, 7, 5);
    END;
}
END_TEST

static fg_tensor *f_scatter_add(fg_tensor *const *in, void *ctx)
{
    op_ctx *c = ctx;
    return fg_scatter_add(in[0], c->dim, c->index, in[1]);
}

START_TEST(scatter_add_gradcheck)
{
    BEGIN;
    fg_tensor *in[2] = {rand_param(gen, FG_SHAPE(3, 4), -1, 1), rand_param(gen, FG_SHAPE(3, 5), -1, 1)};
    op_ctx c = {.dim = 1, .index = ti64(FG_SHAPE(2, 5), (const int64_t[]){0, 0, 3, 3, 3, 1, 2, 1, 0, 1})};
    ck_gradcheck(f_scatter_add, &c, 2, in);
    END;
}
END_TEST

START_TEST(scatter_add_errors)
{
    BEGIN;
    fg_tensor *a = fg_zeros(FG_SHAPE(2, 3), FG_F64, FG_CPU);
    fg_tensor *src = fg_ones(FG_SHAPE(2, 3), FG_F64, FG_CPU);
    CK_ERR(fg_scatter_add(a, 1, ti64(FG_SHAPE(1, 1), (const int64_t[]){3}), src), FG_ERR_INDEX);
    ck_msg_has("scatter_add: index 3");
    CK_ERR(fg_scatter_add(a, 1, ti64(FG_SHAPE(1, 1), (const int64_t[]){-1}), src), FG_ERR_INDEX);
    CK_ERR(fg_scatter_add(a, 0, ti64(FG_SHAPE(2, 4), (const int64_t[]){0, 0, 0, 0, 0, 0, 0, 0}), src), FG_ERR_SHAPE);
    CK_ERR(fg_scatter_add(a, 0, fg_zeros(FG_SHAPE(1, 1), FG_F64, FG_CPU), src), FG_ERR_DTYPE);
    CK_ERR(fg_scatter_add(a, -3, ti64(FG_SHAPE(1, 1), (const int64_t[]){0}), src), FG_ERR_DIM);
    CK_ERR(fg_scatter_add(a, 0, NULL, src), FG_ERR_NULL);
    END;
}
END_TEST

/* ---- index_select ---- */

START_TEST(index_select_dim0_repeats)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(3, 2), (const double[]){1, 2, 3, 4, 5, 6});
    fg_tensor *s = fg_index_select(a, 0, ti64(FG_SHAPE(3), (const int64_t[]){2, 0, 2}));
    CKSHAPE(s, 3, 2);
    CKV(s, 5, 6, 1, 2, 5, 6);
    END;
}
END_TEST

START_TEST(index_select_last_dim_i32)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(2, 3), (const double[]){1, 2, 3, 4, 5, 6});
    fg_tensor *s = fg_index_select(a, -1, ti32(FG_SHAPE(2), (const int32_t[]){2, 0}));
    CKSHAPE(s, 2, 2);
    CKV(s, 3, 1, 6, 4);
    fg_tensor *one = fg_index_select(a, 1, ti64(0, NULL, (const int64_t[]){1})); /* 0-d index */
    CKSHAPE(one, 2, 1);
    CKV(one, 2, 5);
    fg_tensor *none = fg_index_select(a, 1, ti64(FG_SHAPE(0), (const int64_t[]){0}));
    CKSHAPE(none, 2, 0);
    END;
}
END_TEST

START_TEST(index_select_3d_middle_strided)
{
    BEGIN;
    fg_tensor *a = range(12, FG_SHAPE(2, 3, 2));
    fg_tensor *ix = ti64(FG_SHAPE(2), (const int64_t[]){2, 1});
    fg_tensor *s = fg_index_select(a, 1, ix);
    CKSHAPE(s, 2, 2, 2);
    CKV(s, 4, 5, 2, 3, 10, 11, 8, 9);
    /* Strided input and a stepped (strided) index give the same values. */
    fg_tensor *at = fg_permute(fg_contiguous(fg_permute(a, FG_DIMS(2, 1, 0))), FG_DIMS(2, 1, 0));
    ck_assert(!fg_is_contiguous(at));
    fg_tensor *wide = ti64(FG_SHAPE(4), (const int64_t[]){2, 7, 1, 7});
    fg_tensor *stepped = fg_slice(wide, 0, 0, 4, 2);
    ck_assert(!fg_is_contiguous(stepped));
    ck_same(fg_index_select(at, 1, stepped), s);
    END;
}
END_TEST

START_TEST(index_select_backward_values)
{
    BEGIN;
    fg_tensor *a = param(tf(FG_SHAPE(3), (const double[]){1, 2, 3}));
    fg_tensor *s = fg_index_select(a, 0, ti64(FG_SHAPE(3), (const int64_t[]){2, 2, 0}));
    CKV(s, 3, 3, 1);
    backward_weighted(s, (const double[]){1, 2, 3});
    CKV(fg_grad(a), 3, 0, 3);
    END;
}
END_TEST

static fg_tensor *f_index_select(fg_tensor *const *in, void *ctx)
{
    op_ctx *c = ctx;
    return fg_index_select(in[0], c->dim, c->index);
}

START_TEST(index_select_gradcheck_repeats)
{
    BEGIN;
    fg_tensor *in[1] = {rand_param(gen, FG_SHAPE(3, 4), -1, 1)};
    op_ctx c = {.dim = 1, .index = ti64(FG_SHAPE(5), (const int64_t[]){2, 0, 2, 3, 2})};
    ck_gradcheck(f_index_select, &c, 1, in);
    c.dim = 0;
    c.index = ti32(FG_SHAPE(4), (const int32_t[]){1, 1, 0, 1});
    ck_gradcheck(f_index_select, &c, 1, in);
    END;
}
END_TEST

START_TEST(index_select_errors)
{
    BEGIN;
    fg_tensor *a = fg_zeros(FG_SHAPE(2, 3), FG_F64, FG_CPU);
    CK_ERR(fg_index_select(a, 0, ti64(FG_SHAPE(1, 1), (const int64_t[]){0})), FG_ERR_SHAPE);
    CK_ERR(fg_index_select(a, 1, ti64(FG_SHAPE(2), (const int64_t[]){0, 3})), FG_ERR_INDEX);
    ck_assert_str_eq(fg_last_error(), "index_select: index 3 out of range for dim 1 of size 3 (input (2, 3))");
    CK_ERR(fg_index_select(a, 0, ti32(FG_SHAPE(1), (const int32_t[]){-1})), FG_ERR_INDEX);
    CK_ERR(fg_index_select(a, 0, fg_zeros(FG_SHAPE(1), FG_F32, FG_CPU)), FG_ERR_DTYPE);
    CK_ERR(fg_index_select(a, 2, ti64(FG_SHAPE(1), (const int64_t[]){0})), FG_ERR_DIM);
    CK_ERR(fg_index_select(NULL, 0, ti64(FG_SHAPE(1), (const int64_t[]){0})), FG_ERR_NULL);
    END;
}
END_TEST

/* ---- index_add ---- */

START_TEST(index_add_dim0_duplicates)
{
    BEGIN;
    fg_tensor *a = fg_ones(FG_SHAPE(3, 2), FG_F64, FG_CPU);
    fg_tensor *src = tf(FG_SHAPE(3, 2), (const double[]){1, 2, 3, 4, 5, 6});
    fg_tensor *s = fg_index_add(a, 0, ti64(FG_SHAPE(3), (const int64_t[]){0, 2, 0}), src);
    CKV(s, 7, 9, 1, 1, 4, 5);
    CKV(a, 1, 1, 1, 1, 1, 1);
    END;
}
END_TEST

START_TEST(index_add_last_dim_i32_3d)
{
    BEGIN;
    fg_tensor *a = fg_zeros(FG_SHAPE(2, 3), FG_F64, FG_CPU);
    fg_tensor *src = tf(FG_SHAPE(2, 2), (const double[]){1, 2, 3, 4});
    CKV(fg_index_add(a, -1, ti32(FG_SHAPE(2), (const int32_t[]){2, 2}), src), 0, 0, 3, 0, 0, 7);
    fg_tensor *b = fg_zeros(FG_SHAPE(2, 2, 2), FG_F64, FG_CPU);
    fg_tensor *s3 = range(8, FG_SHAPE(2, 2, 2));
    /* dim 1, index [1, 1]: b[:, 1, :] = s3[:, 0, :] + s3[:, 1, :] */
    CKV(fg_index_add(b, 1, ti64(FG_SHAPE(2), (const int64_t[]){1, 1}), s3), 0, 0, 2, 4, 0, 0, 10, 12);
    /* strided src */
    fg_tensor *srct = fg_transpose(tf(FG_SHAPE(2, 2), (const double[]){1, 3, 2, 4}), 0, 1);
    CKV(fg_index_add(a, 1, ti64(FG_SHAPE(2), (const int64_t[]){0, 1}), srct), 1, 2, 0, 3, 4, 0);
    END;
}
END_TEST

START_TEST(index_add_backward_values)
{
    BEGIN;
    fg_tensor *a = param(tf(FG_SHAPE(3), (const double[]){1, 2, 3}));
    fg_tensor *src = param(tf(FG_SHAPE(2), (const double[]){10, 20}));
    fg_tensor *s = fg_index_add(a, 0, ti64(FG_SHAPE(2), (const int64_t[]){1, 1}), src);
    CKV(s, 1, 32, 3);
    backward_weighted(s, (const double[]){1, 2, 3});
    CKV(fg_grad(a), 1, 2, 3);
    CKV(fg_grad(src), 2, 2);
    END;
}
END_TEST

static fg_tensor *f_index_add(fg_tensor *const *in, void *ctx)
{
    op_ctx *c = ctx;
    return fg_index_add(in[0], c->dim, c->index, in[1]);
}

START_TEST(index_add_gradcheck)
{
    BEGIN;
    fg_tensor *in[2] = {rand_param(gen, FG_SHAPE(4, 3), -1, 1), rand_param(gen, FG_SHAPE(3, 3), -1, 1)};
    op_ctx c = {.dim = 0, .index = ti64(FG_SHAPE(3), (const int64_t[]){1, 3, 1})};
    ck_gradcheck(f_index_add, &c, 2, in);
    END;
}
END_TEST

START_TEST(index_add_errors)
{
    BEGIN;
    fg_tensor *a = fg_zeros(FG_SHAPE(3, 2), FG_F64, FG_CPU);
    fg_tensor *ix = ti64(FG_SHAPE(2), (const int64_t[]){0, 2});
    CK_ERR(fg_index_add(a, 0, ix, fg_ones(FG_SHAPE(3, 2), FG_F64, FG_CPU)), FG_ERR_SHAPE);
    ck_msg_has("index_add");
    CK_ERR(fg_index_add(a, 0, ix, fg_ones(FG_SHAPE(2, 3), FG_F64, FG_CPU)), FG_ERR_SHAPE);
    CK_ERR(fg_index_add(a, 0, ix, fg_ones(FG_SHAPE(2), FG_F64, FG_CPU)), FG_ERR_SHAPE);
    CK_ERR(fg_index_add(a, 0, ti64(FG_SHAPE(2), (const int64_t[]){0, 3}), fg_ones(FG_SHAPE(2, 2), FG_F64, FG_CPU)),
           FG_ERR_INDEX);
    CK_ERR(fg_index_add(a, 0, ti64(FG_SHAPE(2), (const int64_t[]){-1, 0}), fg_ones(FG_SHAPE(2, 2), FG_F64, FG_CPU)),
           FG_ERR_INDEX);
    CK_ERR(fg_index_add(a, 0, ix, fg_ones(FG_SHAPE(2, 2), FG_F32, FG_CPU)), FG_ERR_DTYPE);
    CK_ERR(fg_index_add(a, 0, ix, NULL), FG_ERR_NULL);
    CK_ERR(fg_index_add(a, 1, ti64(FG_SHAPE(1, 2), (const int64_t[]){0, 1}), a), FG_ERR_SHAPE);
    END;
}
END_TEST

/* ---- topk ---- */

START_TEST(topk_largest_ties)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(2, 5), (const double[]){3, 1, 3, 2, 3, 0, 5, 5, -1, 2});
    fg_tensor *v, *ix;
    ck_assert_int_eq(fg_topk(a, 3, 1, true, &v, &ix), FG_OK);
    CKSHAPE(v, 2, 3);
    CKSHAPE(ix, 2, 3);
    ck_assert_int_eq(fg_dtype_of(ix), FG_I64);
    CKV(v, 3, 3, 3, 5, 5, 2);
    CKV(ix, 0, 2, 4, 1, 2, 4);
    END;
}
END_TEST

START_TEST(topk_smallest_ties)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(2, 5), (const double[]){3, 1, 3, 2, 3, 0, 5, 5, -1, 2});
    fg_tensor *v, *ix;
    ck_assert_int_eq(fg_topk(a, 3, -1, false, &v, &ix), FG_OK);
    CKV(v, 1, 2, 3, -1, 0, 2);
    CKV(ix, 1, 3, 0, 3, 0, 4);
    fg_tensor *b = tf(FG_SHAPE(4), (const double[]){2, 1, 1, 2});
    ck_assert_int_eq(fg_topk(b, 3, 0, false, &v, &ix), FG_OK);
    CKV(v, 1, 1, 2);
    CKV(ix, 1, 2, 0);
    END;
}
END_TEST

START_TEST(topk_dim0_3d)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(3, 2, 2), (const double[]){5, 0, 2, 7, 1, 9, 2, 3, 4, 4, 8, 1});
    fg_tensor *v, *ix;
    ck_assert_int_eq(fg_topk(a, 2, -3, true, &v, &ix), FG_OK);
    CKSHAPE(v, 2, 2, 2);
    CKV(v, 5, 9, 8, 7, 4, 4, 2, 3);
    CKV(ix, 0, 1, 2, 0, 2, 2, 0, 1);
    /* middle dim, smallest, k 1 */
    ck_assert_int_eq(fg_topk(a, 1, 1, false, &v, &ix), FG_OK);
    CKSHAPE(v, 3, 1, 2);
    CKV(v, 2, 0, 1, 3, 4, 1);
    CKV(ix, 1, 0, 0, 1, 0, 1);
    END;
}
END_TEST

START_TEST(topk_k0_and_k_size)
{
    BEGIN;
    fg_tensor *a = tf(FG_SHAPE(2, 3), (const double[]){3, 1, 2, 4, 6, 5});
    fg_tensor *v, *ix;
    ck_assert_int_eq(fg_topk(a, 0, 1, true, &v, &ix), FG_OK);
    CKSHAPE(v, 2, 0);
    CKSHAPE(ix, 2, 0);
    ck_assert_int_eq(fg_topk(a, 3, 1, true, &v, &ix), FG_OK);
    CKV(v, 3, 2, 1, 6, 5, 4);
    CKV(ix, 0, 2, 1, 1, 2, 0);
    ck_assert_int_eq(fg_topk(a, 3, 1, false, &v, &ix), FG_OK);
    CKV(v, 1, 2, 3, 4, 5, 6);
    CKV(ix, 1, 2, 0, 0, 2, 1);
    ck_assert_int_eq(fg_topk(a, 2, 0, true, &v, &ix), FG_OK); /* k = size along dim 0 */
    CKV(v, 4, 6, 5, 3, 1, 2);
    CKV(ix, 1, 1, 1, 0, 0, 0);
    END;
}
END_TEST

START_TEST(topk_strided_nan_and_null_outputs)
{
    BEGIN;
    fg_tensor *x = tf(FG_SHAPE(3, 2), (const double[]){1, 6, 3, 4, 2, 5});
    fg_tensor *xt = fg_transpose(x, 0, 1); /* [1 3 2; 6 4 5] */
    fg_tensor *v, *ix, *vc, *ixc;
    ck_assert_int_eq(fg_topk(xt, 2, 1, true, &v, &ix), FG_OK);
    ck_assert_int_eq(fg_topk(fg_contiguous(xt), 2, 1, true, &vc, &ixc), FG_OK);
    CKV(v, 3, 2, 6, 5);
    ck_same(v, vc);
    ck_same(ix, ixc);
    /* Optional outputs. */
    ck_assert_int_eq(fg_topk(xt, 1, 1, false, NULL, &ix), FG_OK);
    CKV(ix, 0, 1);
    ck_assert_int_eq(fg_topk(xt, 1, 1, false, &v, NULL), FG_OK);
    CKV(v, 1, 4);
    ck_assert_int_eq(fg_topk(xt, 1, 1, false, NULL, NULL), FG_OK);
    /* NaN ranks above every number (as in PyTorch). */
    fg_tensor *n = tf(FG_SHAPE(3), (const double[]){1, NAN, 3});
    ck_assert_int_eq(fg_topk(n, 2, 0, true, &v, &ix), FG_OK);
    CKV(v, NAN, 3);
    CKV(ix, 1, 2);
    ck_assert_int_eq(fg_topk(n, 2, 0, false, &v, &ix), FG_OK);
    CKV(v, 1, 3);
    END;
}
END_TEST

START_TEST(topk_backward_values)
{
    BEGIN;
    fg_tensor *a = param(tf(FG_SHAPE(4), (const double[]){1, 5, 3, 4}));
    fg_tensor *v, *ix;
    ck_assert_int_eq(fg_topk(a, 2, 0, true, &v, &ix), FG_OK);
    ck_assert_str_eq(fg_grad_fn_name(v), "topk");
    ck_assert(!fg_requires_grad(ix));
    backward_weighted(v, (const double[]){10, 20});
    CKV(fg_grad(a), 0, 10, 0, 20);
    END;
}
END_TEST

static fg_tensor *f_topk(fg_tensor *const *in, void *ctx)
{
    op_ctx *c = ctx;
    fg_tensor *v;
    return fg_topk(in[0], c->k, c->dim, c->largest, &v, NULL) == FG_OK ? v : NULL;
}

START_TEST(topk_gradcheck)
{
    BEGIN;
    fg_tensor *in[1] = {rand_param(gen, FG_SHAPE(3, 5, 2), -1, 1)};
    op_ctx c = {.dim = 1, .k = 3, .largest = true};
    ck_gradcheck(f_topk, &c, 1, in);
    c.largest = false;
    c.dim = -1;
    c.k = 1;
    ck_gradcheck(f_topk, &c, 1, in);
    END;
}
END_TEST

START_TEST(topk_errors)
{
    BEGIN;
    fg_tensor *a = fg_zeros(FG_SHAPE(2, 5), FG_F64, FG_CPU);
    fg_tensor *v = a, *ix = a;
    CK_ERRS(fg_topk(a, 6, 1, true, &v, &ix), FG_ERR_INVALID);
    ck_assert_str_eq(fg_last_error(), "topk: k = 6 out of range for dim 1 of size 5 (input (2, 5))");
    ck_assert_ptr_null(v);
    ck_assert_ptr_null(ix);
    CK_ERRS(fg_topk(a, 3, 0, true, &v, &ix), FG_ERR_INVALID);
    CK_ERRS(fg_topk(a, -1, 1, true, &v, &ix), FG_ERR_INVALID);
    CK_ERRS(fg_topk(a, 1, 2, true, &v, &ix), FG_ERR_DIM);
    CK_ERRS(fg_topk(a, 1, -3, true, &v, &ix), FG_ERR_DIM);
    CK_ERRS(fg_topk(NULL, 1, 0, true, &v, &ix), FG_ERR_NULL);
    CK_ERRS(fg_topk(fg_scalar(1, FG_F64, FG_CPU), 1, 0, true, &v, &ix), FG_ERR_DIM);
    END;
}
END_TEST

/* ---- combined ---- */

START_TEST(concat_same_tensor_twice)
{
    BEGIN;
    fg_tensor *a = param(tf(FG_SHAPE(2), (const double[]){1, 2}));
    fg_tensor *c = fg_concat(3, (fg_tensor *[]){a, a, a}, 0);
    CKV(c, 1, 2, 1, 2, 1, 2);
    backward_weighted(c, (const double[]){1, 2, 3, 4, 5, 6});
    CKV(fg_grad(a), 9, 12);
    END;
}
END_TEST

/* No scope open: every result is the caller's, and freeing them (errors
 * included) must leave no tensor or node alive. */
START_TEST(caller_owned_results_leave_nothing_behind)
{
    fg_memory_stats m0, m1;
    fg_get_memory_stats(&m0);
    fg_tensor *a = fg_from_f64((const double[]){4, 1, 3, 2, 6, 5}, FG_SHAPE(2, 3), FG_F64, FG_CPU);
    fg_tensor *ix = fg_from_data((const int64_t[]){2, 0, 1, 1}, FG_SHAPE(2, 2), FG_I64, FG_CPU);
    fg_tensor *ix1 = fg_from_data((const int64_t[]){1, 0, 1}, FG_SHAPE(3), FG_I64, FG_CPU);
    fg_tensor *bad = fg_from_data((const int64_t[]){9}, FG_SHAPE(1), FG_I64, FG_CPU);
    ck_assert_int_eq(fg_set_requires_grad(a, true), FG_OK);
    fg_tensor *c = fg_concat(2, (fg_tensor *[]){a, a}, 1);           /* (2, 6) */
    fg_tensor *st = fg_stack(2, (fg_tensor *[]){a, a}, 0);           /* (2, 2, 3) */
    fg_tensor *g = fg_gather(c, 1, ix);                              /* (2, 2) */
    fg_tensor *sc = fg_scatter(a, 1, ix, g);                         /* (2, 3) */
    fg_tensor *sa = fg_scatter_add(sc, 1, ix, g);                    /* (2, 3) */
    fg_tensor *is = fg_index_select(sa, 0, ix1);                     /* (3, 3) */
    fg_tensor *ia = fg_index_add(is, 0, ix1, is);                    /* (3, 3) */
    fg_tensor *v = NULL, *vi = NULL, *none = NULL, *p[3] = {NULL}, *q[2] = {NULL};
    ck_assert_int_eq(fg_topk(ia, 2, 1, true, &v, &vi), FG_OK);       /* (3, 2) */
    ck_assert_int_eq(fg_chunk(v, 0, 3, p), FG_OK);
    ck_assert_int_eq(fg_split(st, 1, 2, (const int64_t[]){1, 1}, q), FG_OK);
    ck_assert_ptr_null(fg_gather(a, 1, bad));
    ck_assert_ptr_null(fg_index_add(a, 0, bad, a));
    ck_assert_ptr_null(fg_concat(2, (fg_tensor *[]){a, ix}, 0));
    ck_assert_int_eq(fg_topk(a, 4, 1, true, &none, NULL), FG_ERR_INVALID);
    ck_assert_ptr_null(none);
    fg_tensor *s1 = fg_sum_all(v), *s2 = fg_sum_all(q[1]), *loss = fg_add(s1, s2);
    ck_assert_int_eq(fg_backward(loss), FG_OK);
    ck_assert_ptr_nonnull(fg_grad(a));
    fg_tensor *all[] = {a, ix, ix1, bad, c, st, g, sc, sa, is, ia, vi, v, p[0], p[1], p[2], q[0], q[1], s1, s2, loss};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) fg_free(all[i]);
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_tensors, m0.live_tensors);
    ck_assert_int_eq(m1.live_nodes, m0.live_nodes);
    ck_assert_int_eq(m1.live_storages, m0.live_storages);
}
END_TEST

START_TEST(no_grad_mode_records_nothing)
{
    BEGIN;
    fg_tensor *a = param(tf(FG_SHAPE(2, 2), (const double[]){1, 2, 3, 4}));
    bool prev = fg_set_grad_enabled(false);
    fg_tensor *c = fg_concat(2, (fg_tensor *[]){a, a}, 0);
    fg_tensor *g = fg_gather(a, 0, ti64(FG_SHAPE(1, 2), (const int64_t[]){1, 0}));
    fg_tensor *v;
    ck_assert_int_eq(fg_topk(a, 1, 1, true, &v, NULL), FG_OK);
    fg_set_grad_enabled(prev);
    ck_assert(!fg_has_grad_fn(c) && !fg_has_grad_fn(g) && !fg_has_grad_fn(v));
    CKV(g, 3, 2);
    CKV(v, 2, 4);
    END;
}
END_TEST

START_TEST(chain_of_index_ops_backward)
{
    BEGIN;
    /* loss = sum(w * index_select(concat(a, b), 0, [2, 0])) with a (1, 2), b (2, 2). */
    fg_tensor *a = param(tf(FG_SHAPE(1, 2), (const double[]){1, 2}));
    fg_tensor *b = param(tf(FG_SHAPE(2, 2), (const double[]){3, 4, 5, 6}));
    fg_tensor *c = fg_concat(2, (fg_tensor *[]){a, b}, 0);
    fg_tensor *s = fg_index_select(c, 0, ti64(FG_SHAPE(2), (const int64_t[]){2, 0}));
    CKV(s, 5, 6, 1, 2);
    backward_weighted(s, (const double[]){1, 2, 3, 4});
    CKV(fg_grad(a), 3, 4);
    CKV(fg_grad(b), 0, 0, 1, 2);
    END;
}
END_TEST

static Suite *index_join_suite(void)
{
    Suite *s = suite_create("index_join");
    TCase *tj = tcase_create("join");
    tcase_set_timeout(tj, 60);
    tcase_add_test(tj, concat_dim0_2d);
    tcase_add_test(tj, concat_last_dim_with_empty);
    tcase_add_test(tj, concat_3d_negative_middle_dim);
    tcase_add_test(tj, concat_int_and_f32_dtypes);
    tcase_add_test(tj, concat_strided_equals_contiguous);
    tcase_add_test(tj, concat_backward_values);
    tcase_add_test(tj, concat_gradcheck_three_inputs);
    tcase_add_test(tj, concat_errors);
    tcase_add_test(tj, stack_1d_dims);
    tcase_add_test(tj, stack_2d_middle_and_scalars);
    tcase_add_test(tj, stack_backward_values);
    tcase_add_test(tj, stack_gradcheck);
    tcase_add_test(tj, stack_errors);
    tcase_add_test(tj, split_dim0_views);
    tcase_add_test(tj, split_3d_negative_dim_with_empty_piece);
    tcase_add_test(tj, split_backward_values);
    tcase_add_test(tj, split_gradcheck);
    tcase_add_test(tj, split_errors);
    tcase_add_test(tj, chunk_even);
    tcase_add_test(tj, chunk_uneven_last_dim);
    tcase_add_test(tj, chunk_fewer_nonempty_than_n);
    tcase_add_test(tj, chunk_gradcheck);
    tcase_add_test(tj, chunk_errors);
    suite_add_tcase(s, tj);

    TCase *ti = tcase_create("index");
    tcase_set_timeout(ti, 60);
    tcase_add_test(ti, gather_dim0_i64);
    tcase_add_test(ti, gather_dim1_i32_wider_index);
    tcase_add_test(ti, gather_3d_middle_and_last);
    tcase_add_test(ti, gather_strided_and_int_data);
    tcase_add_test(ti, gather_backward_values);
    tcase_add_test(ti, gather_gradcheck);
    tcase_add_test(ti, gather_errors);
    tcase_add_test(ti, scatter_dim0);
    tcase_add_test(ti, scatter_duplicates_last_write_wins);
    tcase_add_test(ti, scatter_3d_last_dim_larger_src);
    tcase_add_test(ti, scatter_backward_values);
    tcase_add_test(ti, scatter_gradcheck_a_and_src);
    tcase_add_test(ti, scatter_errors);
    tcase_add_test(ti, scatter_add_duplicates_accumulate);
    tcase_add_test(ti, scatter_add_2d_i32_and_f32);
    tcase_add_test(ti, scatter_add_3d_middle);
    tcase_add_test(ti, scatter_add_backward_values);
    tcase_add_test(ti, scatter_add_gradcheck);
    tcase_add_test(ti, scatter_add_errors);
    tcase_add_test(ti, index_select_dim0_repeats);
    tcase_add_test(ti, index_select_last_dim_i32);
    tcase_add_test(ti, index_select_3d_middle_strided);
    tcase_add_test(ti, index_select_backward_values);
    tcase_add_test(ti, index_select_gradcheck_repeats);
    tcase_add_test(ti, index_select_errors);
    tcase_add_test(ti, index_add_dim0_duplicates);
    tcase_add_test(ti, index_add_last_dim_i32_3d);
    tcase_add_test(ti, index_add_backward_values);
    tcase_add_test(ti, index_add_gradcheck);
    tcase_add_test(ti, index_add_errors);
    tcase_add_test(ti, topk_largest_ties);
    tcase_add_test(ti, topk_smallest_ties);
    tcase_add_test(ti, topk_dim0_3d);
    tcase_add_test(ti, topk_k0_and_k_size);
    tcase_add_test(ti, topk_strided_nan_and_null_outputs);
    tcase_add_test(ti, topk_backward_values);
    tcase_add_test(ti, topk_gradcheck);
    tcase_add_test(ti, topk_errors);
    tcase_add_test(ti, no_grad_mode_records_nothing);
    tcase_add_test(ti, chain_of_index_ops_backward);
    tcase_add_test(ti, concat_same_tensor_twice);
    tcase_add_test(ti, split_backward_tiled_and_not);
    tcase_add_test(ti, caller_owned_results_leave_nothing_behind);
    suite_add_tcase(s, ti);
    return s;
}

FG_TEST_MAIN(index_join_suite)
