/* Suite "linalg_reduce": matmul in every operand configuration (values,
 * strides, dtypes, errors, gradients) and the reductions sum / mean / max /
 * argmax (dims, keepdim, NaN, ties, gradients, errors). */
#include <stdio.h>
#include <string.h>
#include "testutil.h"
#include <flashgrad/cublas.h>

/* Reference batched product on row-major arrays: c[t] = a[t % ba] @ b[t % bb]
 * is not general enough for broadcasting, so callers pass per-batch offsets. */
static void ref_mm(const double *a, const double *b, double *c, int n, int k, int m)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            double s = 0;
            for (int p = 0; p < k; p++) s += a[i * k + p] * b[p * m + j];
            c[i * m + j] = s;
        }
}

static void fill_seq(double *v, int n, double scale, double shift)
{
    /* Deterministic, irregular, distinct-ish values. */
    for (int i = 0; i < n; i++) v[i] = scale * (double)((i * 7 + 3) % 11) + shift + 0.01 * i;
}

/* ============================== matmul ============================== */

/* fg_linear and fg_linear_gelu on the CPU (their CUDA forms are checked
 * against these in the cuda_matmul suite): values, gradients vs finite
 * differences, with and without bias, 1-d and 3-d x, errors naming the op. */
static fg_tensor *linear_fn(fg_tensor *const *in, void *ctx)
{
    int mode = *(const int *)ctx; /* bit 0: gelu, bit 1: no bias (two inputs) */
    fg_tensor *b = mode & 2 ? NULL : in[2];
    return mode & 1 ? fg_linear_gelu(in[0], in[1], b) : fg_linear(in[0], in[1], b);
}

START_TEST(test_linear_and_linear_gelu)
{
    BEGIN;
    /* x (1, 2) w (2, 2) b (2): y = [1*1 + 2*3 + 0.5, 1*2 + 2*4 - 1] = [7.5, 9] */
    fg_tensor *x = t64((const double[]){1, 2}, FG_SHAPE(1, 2)), *w = t64((const double[]){1, 2, 3, 4}, FG_SHAPE(2, 2)),
              *b = t64((const double[]){0.5, -1}, FG_SHAPE(2));
    double y[2];
    read_f64(fg_linear(x, w, b), y, 2);
    ck_assert(y[0] == 7.5 && y[1] == 9.0);
    read_f64(fg_linear_gelu(x, w, b), y, 2);
    for (int i = 0; i < 2; i++) {
        double v = i ? 9.0 : 7.5, g = 0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
        ck_assert_msg(fabs(y[i] - g) < 1e-12, "gelu(%g) = %.17g, expected %.17g", v, y[i], g);
    }
    for (int gelu = 0; gelu < 2; gelu++) {
        int with_b = gelu, no_b = gelu | 2;
        fg_tensor *in3[3] = {rand_param(gen, FG_SHAPE(2, 3, 4), -1, 1), rand_param(gen, FG_SHAPE(4, 5), -1, 1),
                             rand_param(gen, FG_SHAPE(5), -1, 1)};
        ck_gradcheck(linear_fn, &with_b, 3, in3);
        fg_tensor *in1[2] = {rand_param(gen, FG_SHAPE(4), -1, 1), in3[1]};
        ck_gradcheck(linear_fn, &no_b, 2, in1);
    }
    fg_clear_error();
    ck_assert_ptr_null(fg_linear_gelu(x, w, t64((const double[]){1, 2, 3}, FG_SHAPE(3))));
    ck_err(FG_ERR_SHAPE, "linear_gelu", "b (3,)");
    END;
}
END_TEST

START_TEST(test_matmul_2x3_3x2)
{
    BEGIN;
    fg_tensor *a = t64((double[]){1, 2, 3, 4, 5, 6}, FG_SHAPE(2, 3));
    fg_tensor *b = t64((double[]){7, 8, 9, 10, 11, 12}, FG_SHAPE(3, 2));
    fg_tensor *c = fg_matmul(a, b);
    ck_shape(c, 2, (int64_t[]){2, 2});
    ck_assert_int_eq(fg_dtype_of(c), FG_F64);
    ck_tensor_values(c, (double[]){58, 64, 139, 154}, 4, 0);
    /* And the other way round: (3,2) @ (2,3). */
    fg_tensor *d = fg_matmul(b, a);
    ck_shape(d, 2, (int64_t[]){3, 3});
    ck_tensor_values(d, (double[]){39, 54, 69, 49, 68, 87, 59, 82, 105}, 9, 0);
    END;
}
END_TEST

START_TEST(test_matmul_vector_cases)
{
    BEGIN;
    fg_tensor *a = t64((double[]){1, 2, 3, 4, 5, 6}, FG_SHAPE(2, 3));
    fg_tensor *b = t64((double[]){7, 8, 9, 10, 11, 12}, FG_SHAPE(3, 2));
    fg_tensor *v = t64((double[]){1, 2, 3}, FG_SHAPE(3));
    /* 1-d @ 2-d: a row vector, result (2,). */
    fg_tensor *vb = fg_matmul(v, b);
    ck_shape(vb, 1, (int64_t[]){2});
    ck_tensor_values(vb, (double[]){58, 64}, 2, 0);
    /* 2-d @ 1-d: a column vector, result (2,). */
    fg_tensor *av = fg_matmul(a, v);
    ck_shape(av, 1, (int64_t[]){2});
    ck_tensor_values(av, (double[]){14, 32}, 2, 0);
    /* 1-d @ 1-d: dot product, 0-d. */
    fg_tensor *vv = fg_matmul(v, t64((double[]){4, -5, 6}, FG_SHAPE(3)));
    ck_assert_int_eq(fg_ndim(vv), 0);
    ck_assert_int_eq(fg_numel(vv), 1);
    ck_close(fg_item(vv), 12, 0);
    END;
}
END_TEST

START_TEST(test_matmul_vector_with_batch)
{
    BEGIN;
    double bv[40], av[24];
    fill_seq(bv, 40, 0.5, -2);
    fill_seq(av, 24, 0.25, -1);
    const double v[4] = {1, -2, 0.5, 3};
    /* (4,) @ (2,4,5) -> (2,5). */
    fg_tensor *r = fg_matmul(t64(v, FG_SHAPE(4)), t64(bv, FG_SHAPE(2, 4, 5)));
    ck_shape(r, 2, (int64_t[]){2, 5});
    double want[10];
    for (int t = 0; t < 2; t++) ref_mm(v, bv + 20 * t, want + 5 * t, 1, 4, 5);
    ck_tensor_values(r, want, 10, 1e-12);
    /* (2,3,4) @ (4,) -> (2,3). */
    fg_tensor *s = fg_matmul(t64(av, FG_SHAPE(2, 3, 4)), t64(v, FG_SHAPE(4)));
    ck_shape(s, 2, (int64_t[]){2, 3});
    double want2[6];
    ref_mm(av, v, want2, 6, 4, 1);
    ck_tensor_values(s, want2, 6, 1e-12);
    END;
}
END_TEST

START_TEST(test_matmul_batched)
{
    BEGIN;
    double av[24], bv[40], want[30];
    fill_seq(av, 24, 0.5, -2);
    fill_seq(bv, 40, -0.3, 1);
    fg_tensor *c = fg_matmul(t64(av, FG_SHAPE(2, 3, 4)), t64(bv, FG_SHAPE(2, 4, 5)));
    ck_shape(c, 3, (int64_t[]){2, 3, 5});
    for (int t = 0; t < 2; t++) ref_mm(av + 12 * t, bv + 20 * t, want + 15 * t, 3, 4, 5);
    ck_tensor_values(c, want, 30, 1e-12);
    /* 4-d batch (2,2,...). */
    double a4[48], b4[32], w4[24];
    fill_seq(a4, 48, 0.2, -0.5);
    fill_seq(b4, 32, 0.7, -1);
    fg_tensor *d = fg_matmul(t64(a4, FG_SHAPE(2, 2, 3, 4)), t64(b4, FG_SHAPE(2, 2, 4, 2)));
    ck_shape(d, 4, (int64_t[]){2, 2, 3, 2});
    for (int t = 0; t < 4; t++) ref_mm(a4 + 12 * t, b4 + 8 * t, w4 + 6 * t, 3, 4, 2);
    ck_tensor_values(d, w4, 24, 1e-12);
    END;
}
END_TEST

START_TEST(test_matmul_broadcast_batch)
{
    BEGIN;
    /* (1,3,4) @ (5,4,2) -> (5,3,2): a is shared by every batch of b. */
    double av[12], bv[40], want[30];
    fill_seq(av, 12, 0.5, -1);
    fill_seq(bv, 40, 0.25, -0.5);
    fg_tensor *c = fg_matmul(t64(av, FG_SHAPE(1, 3, 4)), t64(bv, FG_SHAPE(5, 4, 2)));
    ck_shape(c, 3, (int64_t[]){5, 3, 2});
    for (int t = 0; t < 5; t++) ref_mm(av, bv + 8 * t, want + 6 * t, 3, 4, 2);
    ck_tensor_values(c, want, 30, 1e-12);
    /* (3,4) @ (2,4,5) -> (2,3,5): a 2-d operand broadcasts over b's batch. */
    double b2[40], w2[30];
    fill_seq(b2, 40, -0.5, 2);
    fg_tensor *d = fg_matmul(t64(av, FG_SHAPE(3, 4)), t64(b2, FG_SHAPE(2, 4, 5)));
    ck_shape(d, 3, (int64_t[]){2, 3, 5});
    for (int t = 0; t < 2; t++) ref_mm(av, b2 + 20 * t, w2 + 15 * t, 3, 4, 5);
    ck_tensor_values(d, w2, 30, 1e-12);
    /* (2,1,3,4) @ (3,4,2) -> (2,3,3,2): both sides broadcast. */
    double a3[24], b3[24], w3[36];
    fill_seq(a3, 24, 0.3, -1);
    fill_seq(b3, 24, 0.4, -2);
    fg_tensor *e = fg_matmul(t64(a3, FG_SHAPE(2, 1, 3, 4)), t64(b3, FG_SHAPE(3, 4, 2)));
    ck_shape(e, 4, (int64_t[]){2, 3, 3, 2});
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) ref_mm(a3 + 12 * i, b3 + 8 * j, w3 + 6 * (3 * i + j), 3, 4, 2);
    ck_tensor_values(e, w3, 36, 1e-12);
    END;
}
END_TEST

START_TEST(test_matmul_strided_operands)
{
    BEGIN;
    double av[12], bv[20];
    fill_seq(av, 12, 0.5, -1);
    fill_seq(bv, 20, -0.25, 1);
    /* a^T stored as (4,3), b^T stored as (5,4): both operands strided. */
    fg_tensor *at = fg_transpose(t64(av, FG_SHAPE(4, 3)), 0, 1);
    fg_tensor *bt = fg_transpose(t64(bv, FG_SHAPE(5, 4)), 0, 1);
    ck_assert(!fg_is_contiguous(at));
    ck_assert(!fg_is_contiguous(bt));
    fg_tensor *r = fg_matmul(at, bt);
    ck_shape(r, 2, (int64_t[]){3, 5});
    ck_same_tensor(r, fg_matmul(fg_contiguous(at), fg_contiguous(bt)), 1e-13);
    ck_same_tensor(r, fg_matmul(at, fg_contiguous(bt)), 1e-13);
    /* Hand reference: r[i][j] = sum_p av[p][i] * bv[j][p]. */
    double want[15];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) {
            double s = 0;
            for (int p = 0; p < 4; p++) s += av[p * 3 + i] * bv[j * 4 + p];
            want[i * 5 + j] = s;
        }
    ck_tensor_values(r, want, 15, 1e-12);
    /* Sliced with a step and batch-transposed 3-d operands. */
    double cv[48];
    fill_seq(cv, 48, 0.1, 0);
    fg_tensor *c3 = t64(cv, FG_SHAPE(2, 4, 6));
    fg_tensor *cs = fg_slice(c3, 2, 0, 6, 2);          /* (2,4,3), stride 2 on the last dim */
    fg_tensor *ct = fg_transpose(c3, 1, 2);              /* (2,6,4) */
    ck_same_tensor(fg_matmul(ct, cs), fg_matmul(fg_contiguous(ct), fg_contiguous(cs)), 1e-13);
    /* Expanded (stride-0) batch. */
    fg_tensor *ex = fg_expand(t64(av, FG_SHAPE(1, 3, 4)), FG_SHAPE(3, 3, 4));
    fg_tensor *bb = t64(cv, FG_SHAPE(3, 4, 4));
    ck_same_tensor(fg_matmul(ex, bb), fg_matmul(fg_contiguous(ex), bb), 1e-13);
    END;
}
END_TEST

START_TEST(test_matmul_f32_vs_f64)
{
    BEGIN;
    fg_generator *g = fg_generator_new(42);
    enum { N = 8, K = 64, M = 6 };
    fg_tensor *a32 = fg_uniform(g, -1, 1, FG_SHAPE(N, K), FG_F32, FG_CPU);
    fg_tensor *b32 = fg_uniform(g, -1, 1, FG_SHAPE(K, M), FG_F32, FG_CPU);
    fg_tensor *a64 = fg_cast(a32, FG_F64), *b64 = fg_cast(b32, FG_F64); /* the same values exactly */
    fg_tensor *c32 = fg_matmul(a32, b32), *c64 = fg_matmul(a64, b64);
    ck_assert_int_eq(fg_dtype_of(c32), FG_F32);
    /* |float dot - exact| <= gamma_K sum|a||b| with gamma_K ~ K u (u = 2^-24,
     * recursive summation), plus one rounding on store: allow (K + 2) u sum|a||b|. */
    fg_tensor *mag = fg_matmul(fg_abs(a64), fg_abs(b64));
    double v32[N * M], v64[N * M], vm[N * M];
    read_f64(c32, v32, N * M);
    read_f64(c64, v64, N * M);
    read_f64(mag, vm, N * M);
    for (int i = 0; i < N * M; i++) {
        double tol = (K + 2) * ldexp(1, -24) * vm[i];
        ck_assert_msg(fabs(v32[i] - v64[i]) <= tol, "element %d: f32 %.9g f64 %.9g tol %.3g", i, v32[i], v64[i], tol);
    }
    fg_compare_result cr;
    ck_assert_int_eq(fg_compare(c32, c64, 1e-5, 1e-5, &cr), FG_OK);
    ck_assert(cr.allclose);
    fg_generator_free(g);
    END;
}
END_TEST

/* bf16 / f16 operands are widened to float, accumulated in float and rounded
 * once to the dtype: |got - exact| <= u |exact| + (K + 2) 2^-24 sum|a||b|
 * (u = 2^-8 + 2^-23 for bf16, 2^-11 + 2^-23 for f16: see the elementwise suite). */
START_TEST(test_matmul_lowp_vs_f64)
{
    BEGIN;
    fg_generator *g = fg_generator_new(43);
    enum { N = 5, K = 32, M = 7 };
    const fg_dtype dts[2] = {FG_BF16, FG_F16};
    const double us[2] = {ldexp(1, -8) + ldexp(1, -23), ldexp(1, -11) + ldexp(1, -23)};
    for (int d = 0; d < 2; d++) {
        fg_tensor *a = fg_uniform(g, -1, 1, FG_SHAPE(2, N, K), dts[d], FG_CPU);
        fg_tensor *b = fg_uniform(g, -1, 1, FG_SHAPE(K, M), dts[d], FG_CPU);
        fg_tensor *c = fg_matmul(a, b);
        ck_assert_int_eq(fg_dtype_of(c), dts[d]);
        ck_shape(c, 3, (int64_t[]){2, N, M});
        fg_tensor *a64 = fg_cast(a, FG_F64), *b64 = fg_cast(b, FG_F64);
        fg_tensor *ref = fg_matmul(a64, b64), *mag = fg_matmul(fg_abs(a64), fg_abs(b64));
        double vc[2 * N * M], vr[2 * N * M], vm[2 * N * M];
        read_f64(c, vc, 2 * N * M);
        read_f64(ref, vr, 2 * N * M);
        read_f64(mag, vm, 2 * N * M);
        for (int i = 0; i < 2 * N * M; i++) {
            double tol = us[d] * fabs(vr[i]) + (K + 2) * ldexp(1, -24) * vm[i];
            ck_assert_msg(fabs(vc[i] - vr[i]) <= tol, "%s element %d: %.8g vs %.8g (tol %.3g)", fg_dtype_name(dts[d]),
                          i, vc[i], vr[i], tol);
        }
    }
    fg_generator_free(g);
    END;
}
END_TEST

START_TEST(test_matmul_zero_sizes)
{
    BEGIN;
    /* k = 0: an empty sum, all zeros. */
    fg_tensor *c = fg_matmul(fg_empty(FG_SHAPE(2, 0), FG_F64, FG_CPU), fg_empty(FG_SHAPE(0, 3), FG_F64, FG_CPU));
    ck_shape(c, 2, (int64_t[]){2, 3});
    ck_tensor_values(c, (double[]){0, 0, 0, 0, 0, 0}, 6, 0);
    fg_tensor *cb = fg_matmul(fg_empty(FG_SHAPE(2, 2, 0), FG_F32, FG_CPU), fg_empty(FG_SHAPE(2, 0, 2), FG_F32, FG_CPU));
    ck_shape(cb, 3, (int64_t[]){2, 2, 2});
    ck_tensor_values(cb, (double[]){0, 0, 0, 0, 0, 0, 0, 0}, 8, 0);
    /* Empty 1-d dot product: 0. */
    fg_tensor *d = fg_matmul(fg_empty(FG_SHAPE(0), FG_F64, FG_CPU), fg_empty(FG_SHAPE(0), FG_F64, FG_CPU));
    ck_assert_int_eq(fg_ndim(d), 0);
    ck_close(fg_item(d), 0, 0);
    END;
}
END_TEST

START_TEST(test_matmul_empty_rows_cols)
{
    BEGIN;
    /* n = 0 or m = 0: empty results of the right shape. */
    fg_tensor *e = fg_matmul(fg_zeros(FG_SHAPE(0, 3), FG_F64, FG_CPU), fg_ones(FG_SHAPE(3, 2), FG_F64, FG_CPU));
    ck_shape(e, 2, (int64_t[]){0, 2});
    fg_tensor *f = fg_matmul(fg_ones(FG_SHAPE(2, 3), FG_F64, FG_CPU), fg_zeros(FG_SHAPE(3, 0), FG_F64, FG_CPU));
    ck_shape(f, 2, (int64_t[]){2, 0});
    /* Backward through an empty product: dB = A^T @ dC is a k = 0 product, all zeros. */
    fg_tensor *b = p64((double[]){1, 2, 3, 4, 5, 6}, FG_SHAPE(3, 2));
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_matmul(fg_zeros(FG_SHAPE(0, 3), FG_F64, FG_CPU), b))), FG_OK);
    ck_shape(fg_grad(b), 2, (int64_t[]){3, 2});
    ck_tensor_values(fg_grad(b), (double[]){0, 0, 0, 0, 0, 0}, 6, 0);
    END;
}
END_TEST

START_TEST(test_matmul_errors)
{
    BEGIN;
    fg_tensor *a23 = fg_ones(FG_SHAPE(2, 3), FG_F64, FG_CPU), *a45 = fg_ones(FG_SHAPE(4, 5), FG_F64, FG_CPU);
    ck_assert_ptr_null(fg_matmul(a23, a45));
    ck_err(FG_ERR_SHAPE, "(2, 3)", "(4, 5)");
    ck_assert(strstr(fg_last_error(), "matmul"));
    /* A vector operand: the message names the shapes the caller passed. */
    fg_clear_error();
    ck_assert_ptr_null(fg_matmul(fg_ones(FG_SHAPE(3), FG_F64, FG_CPU), a45));
    ck_err(FG_ERR_SHAPE, "(3,)", "(4, 5)");
    fg_clear_error();
    ck_assert_ptr_null(fg_matmul(a23, fg_ones(FG_SHAPE(4), FG_F64, FG_CPU)));
    ck_err(FG_ERR_SHAPE, "(2, 3)", "(4,)");
    fg_clear_error();
    ck_assert_ptr_null(fg_matmul(fg_ones(FG_SHAPE(3), FG_F64, FG_CPU), fg_ones(FG_SHAPE(4), FG_F64, FG_CPU)));
    ck_err(FG_ERR_SHAPE, "(3,)", "(4,)");
    /* Batch dims that do not broadcast: both full shapes in the message. */
    fg_clear_error();
    ck_assert_ptr_null(fg_matmul(fg_ones(FG_SHAPE(2, 3, 4), FG_F64, FG_CPU), fg_ones(FG_SHAPE(3, 4, 5), FG_F64, FG_CPU)));
    ck_err(FG_ERR_SHAPE, "(2, 3, 4)", "(3, 4, 5)");
    END;
}
END_TEST

START_TEST(test_matmul_dim_dtype_null_errors)
{
    BEGIN;
    /* 0-d operands. */
    fg_tensor *s = fg_scalar(2, FG_F64, FG_CPU), *a23 = fg_ones(FG_SHAPE(2, 3), FG_F64, FG_CPU);
    fg_clear_error();
    ck_assert_ptr_null(fg_matmul(s, a23));
    ck_err(FG_ERR_DIM, "matmul", NULL);
    fg_clear_error();
    ck_assert_ptr_null(fg_matmul(a23, s));
    ck_err(FG_ERR_DIM, "matmul", NULL);
    /* dtype mismatch, integer operands, NULL. */
    fg_clear_error();
    ck_assert_ptr_null(fg_matmul(a23, fg_ones(FG_SHAPE(3, 2), FG_F32, FG_CPU)));
    ck_err(FG_ERR_DTYPE, "f64", "f32");
    fg_clear_error();
    ck_assert_ptr_null(fg_matmul(fg_ones(FG_SHAPE(2, 3), FG_I64, FG_CPU), fg_ones(FG_SHAPE(3, 2), FG_I64, FG_CPU)));
    ck_err(FG_ERR_DTYPE, "matmul", NULL);
    fg_clear_error();
    ck_assert_ptr_null(fg_matmul(NULL, a23));
    ck_err(FG_ERR_NULL, "matmul", NULL);
    fg_clear_error();
    ck_assert_ptr_null(fg_matmul(a23, NULL));
    ck_err(FG_ERR_NULL, "matmul", NULL);
    END;
}
END_TEST

/* ---- matmul gradchecks: one loop index per shape configuration ---- */
typedef struct {
    int na;
    int64_t sa[4];
    int nb;
    int64_t sb[4];
    bool ta, tb; /* operand given transposed (last two dims) */
} mm_case;
static const mm_case mm_cases[] = {
    {2, {2, 3}, 2, {3, 2}, false, false},           /* 2-d */
    {1, {3}, 2, {3, 4}, false, false},              /* 1-d @ 2-d */
    {2, {4, 3}, 1, {3}, false, false},              /* 2-d @ 1-d */
    {1, {5}, 1, {5}, false, false},                 /* 1-d @ 1-d */
    {3, {2, 3, 4}, 3, {2, 4, 5}, false, false},     /* batched */
    {3, {1, 3, 4}, 3, {5, 4, 2}, false, false},     /* broadcast batch: a's grad summed over 5 */
    {2, {3, 4}, 3, {2, 4, 5}, false, false},        /* 2-d @ 3-d: a's grad summed over the batch */
    {3, {2, 3, 4}, 2, {4, 2}, false, false},        /* 3-d @ 2-d */
    {1, {4}, 3, {2, 4, 3}, false, false},           /* 1-d @ 3-d */
    {3, {2, 3, 4}, 1, {4}, false, false},           /* 3-d @ 1-d */
    {4, {2, 1, 3, 4}, 3, {3, 4, 2}, false, false},  /* both broadcast */
    {2, {4, 3}, 2, {5, 4}, true, true},             /* transposed (strided) operands */
    {3, {2, 4, 3}, 3, {1, 4, 2}, true, false},      /* transposed batched a, broadcast b */
};
#define N_MM_CASES ((int)(sizeof mm_cases / sizeof *mm_cases))

static fg_tensor *gc_matmul(fg_tensor *const *x, void *ctx)
{
    const mm_case *c = ctx;
    fg_tensor *a = c->ta ? fg_transpose(x[0], -1, -2) : x[0];
    fg_tensor *b = c->tb ? fg_transpose(x[1], -1, -2) : x[1];
    return fg_matmul(a, b);
}

START_TEST(test_gradcheck_matmul)
{
    BEGIN;
    const mm_case *c = &mm_cases[_i];
    fg_generator *g = fg_generator_new(1000 + (uint64_t)_i);
    fg_tensor *in[2] = {rand_param(g, c->na, c->sa, -1, 1), rand_param(g, c->nb, c->sb, -1, 1)};
    ck_gradcheck(gc_matmul, (void *)c, 2, in);
    /* Gradients have the shapes of the operands, broadcast batch dims reduced away. */
    ck_shape(fg_grad(in[0]), c->na, c->sa);
    ck_shape(fg_grad(in[1]), c->nb, c->sb);
    fg_generator_free(g);
    END;
}
END_TEST

/* d sum(A @ B) / dA[i][p] = sum_j B[p][j]; with A (1,2,2) shared over 3 batches
 * of B it is 3 times that, summed over the batch. */
START_TEST(test_matmul_grad_values)
{
    BEGIN;
    fg_tensor *a = p64((double[]){1, 2, 3, 4}, FG_SHAPE(1, 2, 2));
    fg_tensor *b = p64((double[]){1, 0, 0, 1, 2, 0, 0, 2, 1, 1, 1, 1}, FG_SHAPE(3, 2, 2));
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_matmul(a, b))), FG_OK);
    ck_shape(fg_grad(a), 3, (int64_t[]){1, 2, 2});
    /* row sums of B over batches: p=0: 1+2+2 = 5, p=1: 1+2+2 = 5 */
    ck_tensor_values(fg_grad(a), (double[]){5, 5, 5, 5}, 4, 0);
    /* dB[t][p][j] = sum_i A[i][p]: column sums of A = 4, 6 */
    ck_tensor_values(fg_grad(b), (double[]){4, 4, 6, 6, 4, 4, 6, 6, 4, 4, 6, 6}, 12, 0);
    ck_assert_str_eq(fg_grad_fn_name(fg_matmul(a, b)), "matmul");
    END;
}
END_TEST

/* ============================= reductions ============================ */

static fg_tensor *arange24(fg_dtype dt)
{
    fg_tensor *r = fg_reshape(fg_arange(0, 24, 1, dt, FG_CPU), FG_SHAPE(2, 3, 4));
    ck_assert_ptr_nonnull(r);
    return r;
}

START_TEST(test_sum_single_dims)
{
    BEGIN;
    fg_tensor *x = arange24(FG_F64); /* x[b][j][k] = 12b + 4j + k */
    fg_tensor *s0 = fg_sum(x, FG_DIMS(0), false);
    ck_shape(s0, 2, (int64_t[]){3, 4});
    double w0[12];
    for (int i = 0; i < 12; i++) w0[i] = 2 * i + 12;
    ck_tensor_values(s0, w0, 12, 0);
    fg_tensor *s1 = fg_sum(x, FG_DIMS(1), false);
    ck_shape(s1, 2, (int64_t[]){2, 4});
    ck_tensor_values(s1, (double[]){12, 15, 18, 21, 48, 51, 54, 57}, 8, 0);
    fg_tensor *s2 = fg_sum(x, FG_DIMS(2), false);
    ck_shape(s2, 2, (int64_t[]){2, 3});
    ck_tensor_values(s2, (double[]){6, 22, 38, 54, 70, 86}, 6, 0);
    /* keepdim = true keeps a size-1 dim in place. */
    fg_tensor *k0 = fg_sum(x, FG_DIMS(0), true), *k1 = fg_sum(x, FG_DIMS(1), true), *k2 = fg_sum(x, FG_DIMS(2), true);
    ck_shape(k0, 3, (int64_t[]){1, 3, 4});
    ck_shape(k1, 3, (int64_t[]){2, 1, 4});
    ck_shape(k2, 3, (int64_t[]){2, 3, 1});
    ck_tensor_values(k1, (double[]){12, 15, 18, 21, 48, 51, 54, 57}, 8, 0);
    ck_tensor_values(k2, (double[]){6, 22, 38, 54, 70, 86}, 6, 0);
    END;
}
END_TEST

START_TEST(test_sum_multi_and_negative_dims)
{
    BEGIN;
    fg_tensor *x = arange24(FG_F64);
    fg_tensor *s02 = fg_sum(x, FG_DIMS(0, 2), false);
    ck_shape(s02, 1, (int64_t[]){3});
    ck_tensor_values(s02, (double[]){60, 92, 124}, 3, 0);
    fg_tensor *s01 = fg_sum(x, FG_DIMS(0, 1), true);
    ck_shape(s01, 3, (int64_t[]){1, 1, 4});
    ck_tensor_values(s01, (double[]){60, 66, 72, 78}, 4, 0);
    /* Negative dims, any order: {-1, -3} is {0, 2}. */
    ck_same_tensor(fg_sum(x, FG_DIMS(-1, -3), false), s02, 0);
    ck_same_tensor(fg_sum(x, FG_DIMS(2, 0), false), s02, 0);
    ck_same_tensor(fg_sum(x, FG_DIMS(-1), false), fg_sum(x, FG_DIMS(2), false), 0);
    ck_same_tensor(fg_sum(x, FG_DIMS(-2), true), fg_sum(x, FG_DIMS(1), true), 0);
    /* All three dims listed equals sum_all (but keeps (1,1,1) with keepdim). */
    fg_tensor *s012 = fg_sum(x, FG_DIMS(0, 1, 2), true);
    ck_shape(s012, 3, (int64_t[]){1, 1, 1});
    ck_close(fg_item(s012), 276, 0);
    fg_tensor *s012n = fg_sum(x, FG_DIMS(0, 1, 2), false);
    ck_assert_int_eq(fg_ndim(s012n), 0);
    ck_close(fg_item(s012n), 276, 0);
    END;
}
END_TEST

START_TEST(test_sum_all_mean_all)
{
    BEGIN;
    fg_tensor *x = arange24(FG_F64);
    fg_tensor *s = fg_sum_all(x), *m = fg_mean_all(x);
    ck_assert_int_eq(fg_ndim(s), 0);
    ck_assert_int_eq(fg_ndim(m), 0);
    ck_close(fg_item(s), 276, 0);
    ck_close(fg_item(m), 11.5, 0);
    /* 0-d input. */
    fg_tensor *z = fg_scalar(-2.5, FG_F64, FG_CPU);
    ck_close(fg_item(fg_sum_all(z)), -2.5, 0);
    ck_close(fg_item(fg_mean_all(z)), -2.5, 0);
    /* Empty: sum is 0, mean is NaN (0/0). */
    fg_tensor *e = fg_zeros(FG_SHAPE(2, 0), FG_F64, FG_CPU);
    ck_close(fg_item(fg_sum_all(e)), 0, 0);
    ck_assert(isnan(fg_item(fg_mean_all(e))));
    fg_tensor *se = fg_sum(e, FG_DIMS(1), false);
    ck_shape(se, 1, (int64_t[]){2});
    ck_tensor_values(se, (double[]){0, 0}, 2, 0);
    /* f32: accumulated in double, so 0.1 * 1000 sums to 100 within one f32 rounding. */
    fg_tensor *f = fg_full(FG_SHAPE(1000), 0.1, FG_F32, FG_CPU);
    ck_assert_int_eq(fg_dtype_of(fg_sum_all(f)), FG_F32);
    ck_close(fg_item(fg_sum_all(f)), 1000 * (double)0.1f, 100 * ldexp(1, -23));
    END;
}
END_TEST

START_TEST(test_mean_dims)
{
    BEGIN;
    fg_tensor *x = arange24(FG_F64);
    fg_tensor *m1 = fg_mean(x, FG_DIMS(1), false);
    ck_shape(m1, 2, (int64_t[]){2, 4});
    ck_tensor_values(m1, (double[]){4, 5, 6, 7, 16, 17, 18, 19}, 8, 1e-14);
    fg_tensor *m02 = fg_mean(x, FG_DIMS(0, -1), true);
    ck_shape(m02, 3, (int64_t[]){1, 3, 1});
    ck_tensor_values(m02, (double[]){7.5, 11.5, 15.5}, 3, 1e-14);
    fg_tensor *m2 = fg_mean(x, FG_DIMS(-1), false);
    ck_tensor_values(m2, (double[]){1.5, 5.5, 9.5, 13.5, 17.5, 21.5}, 6, 1e-14);
    /* f32 mean keeps f32. */
    fg_tensor *mf = fg_mean(fg_cast(x, FG_F32), FG_DIMS(0), false);
    ck_assert_int_eq(fg_dtype_of(mf), FG_F32);
    double w[12];
    for (int i = 0; i < 12; i++) w[i] = i + 6;
    ck_tensor_values(mf, w, 12, 0);
    END;
}
END_TEST

START_TEST(test_sum_integer)
{
    BEGIN;
    fg_tensor *x = arange24(FG_I64);
    fg_tensor *s = fg_sum(x, FG_DIMS(2), false);
    ck_assert_int_eq(fg_dtype_of(s), FG_I64);
    int64_t out[6];
    ck_assert_int_eq(fg_copy_to_host(s, out, sizeof out), FG_OK);
    const int64_t want[6] = {6, 22, 38, 54, 70, 86};
    for (int i = 0; i < 6; i++) ck_assert_int_eq(out[i], want[i]);
    fg_tensor *sa = fg_sum_all(x);
    ck_assert_int_eq(fg_dtype_of(sa), FG_I64);
    int64_t total;
    ck_assert_int_eq(fg_copy_to_host(sa, &total, sizeof total), FG_OK);
    ck_assert_int_eq(total, 276);
    int32_t iv[] = {-5, 7, 100000, -3};
    fg_tensor *i32 = fg_from_data(iv, FG_SHAPE(2, 2), FG_I32, FG_CPU);
    fg_tensor *si = fg_sum(i32, FG_DIMS(0), false);
    ck_assert_int_eq(fg_dtype_of(si), FG_I32);
    ck_tensor_values(si, (double[]){99995, 4}, 2, 0);
    /* mean of integers is not defined (no integer division). */
    fg_clear_error();
    ck_assert_ptr_null(fg_mean(x, FG_DIMS(0), false));
    ck_err(FG_ERR_DTYPE, "mean", NULL);
    END;
}
END_TEST

/* Low-precision sum / mean: accumulated in double and rounded once on store,
 * so each result is within one rounding (unit roundoff u = 2^-p for a p-bit
 * significand, plus 2^-23 for bf16/f16's double -> float -> half store) of the
 * exact mean of the stored inputs. Counts of 3 make 1/count inexact, which
 * catches a sum rounded to the dtype before being scaled (two roundings). */
START_TEST(test_sum_mean_lowp_single_rounding)
{
    BEGIN;
    const fg_dtype dts[3] = {FG_F32, FG_BF16, FG_F16};
    const double us[3] = {ldexp(1, -24), ldexp(1, -8) + ldexp(1, -23), ldexp(1, -11) + ldexp(1, -23)};
    fg_generator *g = fg_generator_new(77);
    for (int k = 0; k < 3; k++) {
        fg_tensor *x = fg_uniform(g, 0.5, 2, FG_SHAPE(64, 3), dts[k], FG_CPU);
        double xv[192], mv[64], sv[64];
        read_f64(x, xv, 192);
        read_f64(fg_mean(x, FG_DIMS(1), false), mv, 64);
        read_f64(fg_sum(x, FG_DIMS(-1), false), sv, 64);
        for (int i = 0; i < 64; i++) {
            double s = xv[3 * i] + xv[3 * i + 1] + xv[3 * i + 2]; /* exact in double */
            ck_assert_msg(fabs(sv[i] - s) <= us[k] * s, "%s sum row %d: %.10g vs %.10g", fg_dtype_name(dts[k]), i,
                          sv[i], s);
            ck_assert_msg(fabs(mv[i] - s / 3) <= us[k] * (s / 3) * (1 + 1e-15),
                          "%s mean row %d: %.10g vs %.10g (rel %.3g > u %.3g)", fg_dtype_name(dts[k]), i, mv[i],
                          s / 3, fabs(mv[i] - s / 3) / (s / 3), us[k]);
        }
    }
    /* A bf16 case found by search: rounding the sum first gives 1.1015625, the
     * correctly rounded mean is 1.109375. */
    fg_tensor *b = fg_from_f64((double[]){1.640625, 0.50390625, 1.171875}, FG_SHAPE(3), FG_BF16, FG_CPU);
    ck_close(fg_item(fg_mean_all(b)), 1.109375, 0);
    fg_generator_free(g);
    END;
}
END_TEST

/* i64 reductions must not round through double: 2^60 + 1 is not a double. */
START_TEST(test_reduce_int64_exact)
{
    BEGIN;
    const int64_t p = (int64_t)1 << 60;
    int64_t v[] = {p + 1, 1, -3, p, p + 3, 2};
    fg_tensor *x = fg_from_data(v, FG_SHAPE(2, 3), FG_I64, FG_CPU);
    int64_t out[3];
    ck_assert_int_eq(fg_copy_to_host(fg_sum(x, FG_DIMS(1), false), out, 2 * sizeof *out), FG_OK);
    ck_assert_int_eq(out[0], p - 1);
    ck_assert_int_eq(out[1], 2 * p + 5);
    ck_assert_int_eq(fg_copy_to_host(fg_sum(x, FG_DIMS(0), true), out, 3 * sizeof *out), FG_OK);
    ck_assert_int_eq(out[0], 2 * p + 1);
    ck_assert_int_eq(out[1], p + 4);
    ck_assert_int_eq(out[2], -1);
    int64_t total;
    ck_assert_int_eq(fg_copy_to_host(fg_sum_all(x), &total, sizeof total), FG_OK);
    ck_assert_int_eq(total, 3 * p + 4);
    /* max: p + 3 beats p and p + 1 (all the same double 2^60). */
    fg_tensor *ix = NULL;
    ck_assert_int_eq(fg_copy_to_host(fg_max(x, 1, false, &ix), out, 2 * sizeof *out), FG_OK);
    ck_assert_int_eq(out[0], p + 1);
    ck_assert_int_eq(out[1], p + 3);
    ck_assert_int_eq(fg_copy_to_host(ix, out, 2 * sizeof *out), FG_OK);
    ck_assert_int_eq(out[0], 0);
    ck_assert_int_eq(out[1], 1);
    ck_assert_int_eq(fg_copy_to_host(fg_max_all(x), &total, sizeof total), FG_OK);
    ck_assert_int_eq(total, p + 3);
    ck_assert_int_eq((int64_t)fg_item(fg_argmax(fg_reshape(x, FG_SHAPE(6)), 0, false)), 4);
    END;
}
END_TEST

START_TEST(test_sum_strided_input)
{
    BEGIN;
    fg_tensor *x = arange24(FG_F64);
    fg_tensor *p = fg_permute(x, 3, (const int[]){2, 0, 1}); /* (4,2,3) */
    ck_assert(!fg_is_contiguous(p));
    fg_tensor *pc = fg_contiguous(p);
    for (int d = 0; d < 3; d++) {
        ck_same_tensor(fg_sum(p, 1, &d, false), fg_sum(pc, 1, &d, false), 0);
        ck_same_tensor(fg_mean(p, 1, &d, true), fg_mean(pc, 1, &d, true), 1e-15);
    }
    ck_same_tensor(fg_sum(p, FG_DIMS(0, 2), false), fg_sum(pc, FG_DIMS(0, 2), false), 0);
    /* Sum of permuted dim 0 (= x's dim 2). */
    ck_tensor_values(fg_sum(p, FG_DIMS(0), false), (double[]){6, 22, 38, 54, 70, 86}, 6, 0);
    /* Sliced with a step and expanded. */
    fg_tensor *s = fg_slice(x, 2, 1, 4, 2); /* k = 1, 3 */
    ck_tensor_values(fg_sum(s, FG_DIMS(2), false), (double[]){4, 12, 20, 28, 36, 44}, 6, 0);
    fg_tensor *e = fg_expand(fg_reshape(fg_arange(1, 4, 1, FG_F64, FG_CPU), FG_SHAPE(3, 1)), FG_SHAPE(3, 5));
    ck_tensor_values(fg_sum(e, FG_DIMS(1), false), (double[]){5, 10, 15}, 3, 0);
    ck_tensor_values(fg_sum(e, FG_DIMS(0), false), (double[]){6, 6, 6, 6, 6}, 5, 0);
    END;
}
END_TEST

START_TEST(test_max_dims_indices_ties)
{
    BEGIN;
    fg_tensor *x = t64((double[]){1, 5, 5, 2, 3, -1, 3, 0, -2, -7, -1, -3}, FG_SHAPE(3, 4));
    fg_tensor *ix = NULL;
    fg_tensor *m1 = fg_max(x, 1, false, &ix);
    ck_shape(m1, 1, (int64_t[]){3});
    ck_tensor_values(m1, (double[]){5, 3, -1}, 3, 0);
    ck_assert_ptr_nonnull(ix);
    ck_assert_int_eq(fg_dtype_of(ix), FG_I64);
    ck_shape(ix, 1, (int64_t[]){3});
    int64_t iv[4];
    ck_assert_int_eq(fg_copy_to_host(ix, iv, 3 * sizeof *iv), FG_OK);
    ck_assert_int_eq(iv[0], 1); /* 5 at 1 and 2: first wins */
    ck_assert_int_eq(iv[1], 0); /* 3 at 0 and 2 */
    ck_assert_int_eq(iv[2], 2);
    fg_tensor *m0 = fg_max(x, 0, false, &ix);
    ck_tensor_values(m0, (double[]){3, 5, 5, 2}, 4, 0);
    ck_assert_int_eq(fg_copy_to_host(ix, iv, sizeof iv), FG_OK);
    ck_assert_int_eq(iv[0], 1);
    ck_assert_int_eq(iv[1], 0);
    ck_assert_int_eq(iv[2], 0);
    ck_assert_int_eq(iv[3], 0);
    /* keepdim and negative dims. */
    fg_tensor *mk = fg_max(x, -1, true, &ix);
    ck_shape(mk, 2, (int64_t[]){3, 1});
    ck_shape(ix, 2, (int64_t[]){3, 1});
    ck_tensor_values(mk, (double[]){5, 3, -1}, 3, 0);
    ck_tensor_values(ix, (double[]){1, 0, 2}, 3, 0);
    fg_tensor *mk0 = fg_max(x, -2, true, NULL);
    ck_shape(mk0, 2, (int64_t[]){1, 4});
    ck_tensor_values(mk0, (double[]){3, 5, 5, 2}, 4, 0);
    /* All -inf: the value is -inf and the index 0. */
    fg_tensor *ninf = t64((double[]){-INFINITY, -INFINITY}, FG_SHAPE(2));
    fg_tensor *mn = fg_max(ninf, 0, false, &ix);
    ck_assert(isinf(fg_item(mn)) && fg_item(mn) < 0);
    ck_close(fg_item(ix), 0, 0);
    END;
}
END_TEST

/* Max over the middle dim of a 3-d tensor, plain and strided. */
START_TEST(test_max_3d_middle_and_strided)
{
    BEGIN;
    double v[24];
    for (int i = 0; i < 24; i++) v[i] = (double)((i * 7) % 24) - 10; /* distinct */
    fg_tensor *x = t64(v, FG_SHAPE(2, 3, 4));
    fg_tensor *ix = NULL;
    fg_tensor *m = fg_max(x, 1, false, &ix);
    ck_shape(m, 2, (int64_t[]){2, 4});
    double wv[8], wi[8];
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 4; k++) {
            int best = 0;
            for (int j = 1; j < 3; j++)
                if (v[b * 12 + j * 4 + k] > v[b * 12 + best * 4 + k]) best = j;
            wv[b * 4 + k] = v[b * 12 + best * 4 + k];
            wi[b * 4 + k] = best;
        }
    ck_tensor_values(m, wv, 8, 0);
    ck_tensor_values(ix, wi, 8, 0);
    /* The same through a transposed view: max over dim 2 of (2,4,3). */
    fg_tensor *t = fg_transpose(x, 1, 2);
    fg_tensor *it = NULL;
    ck_same_tensor(fg_max(t, 2, false, &it), m, 0);
    ck_same_tensor(it, ix, 0);
    ck_same_tensor(fg_max(t, 0, true, NULL), fg_max(fg_contiguous(t), 0, true, NULL), 0);
    END;
}
END_TEST

START_TEST(test_max_nan)
{
    BEGIN;
    fg_tensor *x = t64((double[]){1, NAN, 3, NAN, 4, 2, 0, 1}, FG_SHAPE(2, 4));
    fg_tensor *ix = NULL;
    fg_tensor *m = fg_max(x, 1, false, &ix);
    double v[2];
    read_f64(m, v, 2);
    ck_assert(isnan(v[0])); /* NaN propagates */
    ck_assert_double_eq(v[1], 4);
    int64_t iv[2];
    ck_assert_int_eq(fg_copy_to_host(ix, iv, sizeof iv), FG_OK);
    ck_assert_int_eq(iv[0], 1); /* the first NaN */
    ck_assert_int_eq(iv[1], 0);
    ck_assert(isnan(fg_item(fg_max_all(x))));
    ck_assert_int_eq((int)fg_item(fg_argmax(t64((double[]){5, 1, NAN}, FG_SHAPE(3)), 0, false)), 2);
    /* NaN first in the row. */
    fg_tensor *y = t64((double[]){NAN, 9}, FG_SHAPE(2));
    ck_assert(isnan(fg_item(fg_max(y, 0, false, NULL))));
    END;
}
END_TEST

START_TEST(test_max_all)
{
    BEGIN;
    fg_tensor *x = t64((double[]){1, 5, 5, 2, 3, -1, 7, 0, -2, -7, 7, -3}, FG_SHAPE(3, 4));
    fg_tensor *ma = fg_max_all(x);
    ck_assert_int_eq(fg_ndim(ma), 0);
    ck_close(fg_item(ma), 7, 0);
    ck_close(fg_item(fg_max_all(fg_scalar(-4, FG_F64, FG_CPU))), -4, 0);
    END;
}
END_TEST

START_TEST(test_argmax)
{
    BEGIN;
    fg_tensor *x = t64((double[]){1, 5, 5, 2, 3, -1, 7, 0, -2, -7, 7, -3}, FG_SHAPE(3, 4));
    fg_tensor *am = fg_argmax(x, 1, false);
    ck_assert_int_eq(fg_dtype_of(am), FG_I64);
    ck_shape(am, 1, (int64_t[]){3});
    ck_tensor_values(am, (double[]){1, 2, 2}, 3, 0);
    fg_tensor *amk = fg_argmax(x, 0, true);
    ck_shape(amk, 2, (int64_t[]){1, 4});
    ck_tensor_values(amk, (double[]){1, 0, 1, 0}, 4, 0); /* col 2: 7 at rows 1 and 2 -> 1 */
    ck_tensor_values(fg_argmax(x, -1, true), (double[]){1, 2, 2}, 3, 0);
    /* argmax never records a graph. */
    fg_tensor *p = p64((double[]){1, 3, 2}, FG_SHAPE(3));
    fg_tensor *ap = fg_argmax(p, 0, false);
    ck_assert(!fg_requires_grad(ap));
    ck_close(fg_item(ap), 1, 0);
    /* Integer max keeps the dtype, exactly. */
    int64_t iv[] = {4, -9, 12, 12};
    fg_tensor *ti = fg_from_data(iv, FG_SHAPE(2, 2), FG_I64, FG_CPU);
    fg_tensor *ixi = NULL;
    fg_tensor *mi = fg_max(ti, 1, false, &ixi);
    ck_assert_int_eq(fg_dtype_of(mi), FG_I64);
    ck_tensor_values(mi, (double[]){4, 12}, 2, 0);
    ck_tensor_values(ixi, (double[]){0, 0}, 2, 0);
    END;
}
END_TEST

/* ---- reduction gradchecks ---- */
enum { R_SUM, R_MEAN, R_MAX, R_SUM_ALL, R_MEAN_ALL, R_MAX_ALL };
typedef struct {
    int kind;
    int ndims;
    int dims[3];
    bool keepdim;
} red_case;
static const red_case red_cases[] = {
    {R_SUM, 1, {1}, false},     {R_SUM, 1, {0}, true},       {R_SUM, 2, {0, 2}, false},
    {R_SUM, 2, {-1, -2}, true}, {R_MEAN, 1, {2}, false},     {R_MEAN, 2, {0, 2}, false},
    {R_MEAN, 2, {1, -1}, true}, {R_MEAN, 3, {0, 1, 2}, false}, {R_MAX, 1, {1}, false},
    {R_MAX, 1, {-1}, true},     {R_MAX, 1, {0}, false},      {R_SUM_ALL, 0, {0}, false},
    {R_MEAN_ALL, 0, {0}, false}, {R_MAX_ALL, 0, {0}, false},
};
#define N_RED_CASES ((int)(sizeof red_cases / sizeof *red_cases))

static fg_tensor *reduce_apply(const red_case *c, fg_tensor *x)
{
    switch (c->kind) {
    case R_SUM: return fg_sum(x, c->ndims, c->dims, c->keepdim);
    case R_MEAN: return fg_mean(x, c->ndims, c->dims, c->keepdim);
    case R_MAX: return fg_max(x, c->dims[0], c->keepdim, NULL);
    case R_SUM_ALL: return fg_sum_all(x);
    case R_MEAN_ALL: return fg_mean_all(x);
    case R_MAX_ALL: return fg_max_all(x);
    }
    return NULL;
}
/* Squared first so the reduction's incoming gradient is not trivially uniform. */
static fg_tensor *gc_reduce(fg_tensor *const *x, void *ctx)
{
    fg_tensor *r = reduce_apply(ctx, x[0]);
    return fg_mul(r, r);
}

START_TEST(test_gradcheck_reduce)
{
    BEGIN;
    const red_case *c = &red_cases[_i];
    /* Distinct, well separated values (gaps >= 0.25 >> eps) keep max differentiable. */
    double v[24];
    for (int i = 0; i < 24; i++) v[i] = 0.25 * (double)((i * 7) % 24) - 3 + 0.01 * i;
    fg_tensor *in[1] = {p64(v, FG_SHAPE(2, 3, 4))};
    ck_gradcheck(gc_reduce, (void *)c, 1, in);
    ck_shape(fg_grad(in[0]), 3, (int64_t[]){2, 3, 4});
    END;
}
END_TEST

/* Gradient values by hand. */
START_TEST(test_reduce_grad_values)
{
    BEGIN;
    fg_tensor *x = p64((double[]){1, 5, 5, 2, 3, -1, 3, 0}, FG_SHAPE(2, 4));
    /* sum: ones; mean over dim 1: 1/4 each. */
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_mean(x, FG_DIMS(1), false))), FG_OK);
    ck_tensor_values(fg_grad(x), (double[]){0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25}, 8, 0);
    fg_clear_grad(x);
    /* mean_all over 8 elements. */
    ck_assert_int_eq(fg_backward(fg_mean_all(x)), FG_OK);
    ck_tensor_values(fg_grad(x), (double[]){0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125}, 8, 0);
    fg_clear_grad(x);
    /* max: the gradient goes to the (first) arg max only, even on ties. */
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_max(x, 1, false, NULL))), FG_OK);
    ck_tensor_values(fg_grad(x), (double[]){0, 1, 0, 0, 1, 0, 0, 0}, 8, 0);
    fg_clear_grad(x);
    /* keepdim max with a weighted upstream gradient. */
    fg_tensor *m = fg_max(x, 0, true, NULL);
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul(m, t64((double[]){1, 2, 3, 4}, FG_SHAPE(1, 4))))), FG_OK);
    ck_tensor_values(fg_grad(x), (double[]){0, 2, 3, 4, 1, 0, 0, 0}, 8, 0);
    fg_clear_grad(x);
    /* max_all. */
    ck_assert_int_eq(fg_backward(fg_max_all(x)), FG_OK);
    ck_tensor_values(fg_grad(x), (double[]){0, 1, 0, 0, 0, 0, 0, 0}, 8, 0);
    END;
}
END_TEST

START_TEST(test_reduce_errors)
{
    BEGIN;
    fg_tensor *x = arange24(FG_F64);
    /* dim out of range */
    ck_assert_ptr_null(fg_sum(x, FG_DIMS(3), false));
    ck_err(FG_ERR_DIM, "sum", "3");
    fg_clear_error();
    ck_assert_ptr_null(fg_sum(x, FG_DIMS(-4), false));
    ck_err(FG_ERR_DIM, "sum", "-4");
    fg_clear_error();
    ck_assert_ptr_null(fg_mean(x, FG_DIMS(0, 5), true));
    ck_err(FG_ERR_DIM, "mean", NULL);
    fg_clear_error();
    ck_assert_ptr_null(fg_max(x, 3, false, NULL));
    ck_err(FG_ERR_DIM, "max", NULL);
    fg_clear_error();
    ck_assert_ptr_null(fg_max(x, -4, false, NULL));
    ck_err(FG_ERR_DIM, "max", NULL);
    fg_clear_error();
    ck_assert_ptr_null(fg_argmax(x, 7, false));
    ck_err(FG_ERR_DIM, NULL, NULL);
    /* repeated dim, directly and through a negative alias */
    fg_clear_error();
    ck_assert_ptr_null(fg_sum(x, FG_DIMS(1, 1), false));
    ck_err(FG_ERR_DIM, "sum", "twice");
    fg_clear_error();
    ck_assert_ptr_null(fg_mean(x, FG_DIMS(2, -1), false));
    ck_err(FG_ERR_DIM, "mean", NULL);
    /* dims on a 0-d tensor */
    fg_clear_error();
    ck_assert_ptr_null(fg_sum(fg_scalar(1, FG_F64, FG_CPU), FG_DIMS(0), false));
    ck_err(FG_ERR_DIM, "sum", NULL);
    fg_clear_error();
    ck_assert_ptr_null(fg_max(fg_scalar(1, FG_F64, FG_CPU), 0, false, NULL));
    ck_err(FG_ERR_DIM, "max", NULL);
    /* negative dim count */
    fg_clear_error();
    ck_assert_ptr_null(fg_sum(x, -1, (const int[]){0}, false));
    ck_err(FG_ERR_INVALID, "sum", NULL);
    END;
}
END_TEST

START_TEST(test_reduce_empty_and_null_errors)
{
    BEGIN;
    /* max over an empty dim, and of an empty tensor */
    fg_tensor *e = fg_zeros(FG_SHAPE(3, 0), FG_F64, FG_CPU);
    fg_tensor *ix = (fg_tensor *)1;
    ck_assert_ptr_null(fg_max(e, 1, false, &ix));
    ck_assert_ptr_null(ix); /* indices output cleared on failure */
    ck_err(FG_ERR_SHAPE, "max", "(3, 0)");
    fg_clear_error();
    ck_assert_ptr_null(fg_argmax(e, 1, true));
    ck_err(FG_ERR_SHAPE, "max", NULL);
    fg_clear_error();
    ck_assert_ptr_null(fg_max_all(e));
    ck_err(FG_ERR_SHAPE, "max", NULL);
    /* max over the non-empty dim of (3,0) is fine: shape (0,) */
    fg_clear_error();
    fg_tensor *ok = fg_max(e, 0, false, NULL);
    ck_shape(ok, 1, (int64_t[]){0});
    /* NULL inputs */
    fg_clear_error();
    ck_assert_ptr_null(fg_sum(NULL, FG_DIMS(0), false));
    ck_err(FG_ERR_NULL, "sum", NULL);
    fg_clear_error();
    ck_assert_ptr_null(fg_mean_all(NULL));
    ck_err(FG_ERR_NULL, "mean", NULL);
    fg_clear_error();
    ck_assert_ptr_null(fg_max(NULL, 0, false, NULL));
    ck_err(FG_ERR_NULL, "max", NULL);
    fg_clear_error();
    ck_assert_ptr_null(fg_max_all(NULL));
    ck_err(FG_ERR_NULL, "max", NULL);
    END;
}
END_TEST

static Suite *linalg_reduce_suite(void)
{
    Suite *s = suite_create("linalg_reduce");
    TCase *mm = tcase_create("matmul");
    tcase_add_test(mm, test_matmul_2x3_3x2);
    tcase_add_test(mm, test_linear_and_linear_gelu);
    tcase_add_test(mm, test_matmul_vector_cases);
    tcase_add_test(mm, test_matmul_vector_with_batch);
    tcase_add_test(mm, test_matmul_batched);
    tcase_add_test(mm, test_matmul_broadcast_batch);
    tcase_add_test(mm, test_matmul_strided_operands);
    tcase_add_test(mm, test_matmul_f32_vs_f64);
    tcase_add_test(mm, test_matmul_zero_sizes);
    tcase_add_test(mm, test_matmul_empty_rows_cols);
    tcase_add_test(mm, test_matmul_lowp_vs_f64);
    tcase_add_test(mm, test_matmul_errors);
    tcase_add_test(mm, test_matmul_dim_dtype_null_errors);
    tcase_add_test(mm, test_matmul_grad_values);
    suite_add_tcase(s, mm);

    TCase *mg = tcase_create("matmul_gradcheck");
    tcase_set_timeout(mg, 60);
    tcase_add_loop_test(mg, test_gradcheck_matmul, 0, N_MM_CASES);
    suite_add_tcase(s, mg);

    TCase *rd = tcase_create("reduce");
    tcase_add_test(rd, test_sum_single_dims);
    tcase_add_test(rd, test_sum_multi_and_negative_dims);
    tcase_add_test(rd, test_sum_all_mean_all);
    tcase_add_test(rd, test_mean_dims);
    tcase_add_test(rd, test_sum_integer);
    tcase_add_test(rd, test_reduce_int64_exact);
    tcase_add_test(rd, test_sum_mean_lowp_single_rounding);
    tcase_add_test(rd, test_sum_strided_input);
    tcase_add_test(rd, test_max_dims_indices_ties);
    tcase_add_test(rd, test_max_3d_middle_and_strided);
    tcase_add_test(rd, test_max_nan);
    tcase_add_test(rd, test_max_all);
    tcase_add_test(rd, test_argmax);
    tcase_add_test(rd, test_reduce_grad_values);
    tcase_add_test(rd, test_reduce_errors);
    tcase_add_test(rd, test_reduce_empty_and_null_errors);
    suite_add_tcase(s, rd);

    TCase *rg = tcase_create("reduce_gradcheck");
    tcase_set_timeout(rg, 60);
    tcase_add_loop_test(rg, test_gradcheck_reduce, 0, N_RED_CASES);
    suite_add_tcase(s, rg);
    return s;
}

FG_TEST_MAIN(linalg_reduce_suite)
