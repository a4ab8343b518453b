/* Suite "cuda_matmul": fg_matmul / fg_linear on CUDA (cuBLAS) against the CPU
 * float64 reference, forward and backward; TF32; autocast; error reporting; the
 * caching allocator in a training loop; OOM recovery. Exits 77 (SKIP) without a
 * GPU; runs without fork.
 *
 * Inputs are drawn uniform in [-1, 1) and rounded to the dtype under test on the
 * CPU first, so device and reference multiply the same values and the only
 * differences are the device's rounding. Tolerances (|dev - ref| <= atol + rtol |ref|,
 * results of magnitude up to ~sqrt(k)/3 ~ 4 for k <= 129):
 *   f64   1e-12 / 1e-12: double accumulation, order differences only.
 *   f32   3e-5 / 1e-5: fp32 accumulation over k <= 129 terms differs from the
 *         reference by ~sqrt(k) * 2^-24 * |partial sums| ~ 3e-6; 10x margin.
 *   bf16  2e-2 / 1e-2: fp32 accumulation, then one rounding to 8 significant
 *         bits (u = 2^-8 = 3.9e-3) -> rtol 2.5u; reductions over broadcast batch
 *         dims round each partial once more, covered by the atol.
 *   f16   3e-3 / 2e-3: as bf16 with u = 2^-11 = 4.9e-4 (4u).
 *   tf32  1e-2 / 4e-3 and rel L2 <= 4e-3: operands cut to 10 explicit mantissa
 *         bits before the products (up to 2^-10 each if truncated, so 2^-9 = 2e-3
 *         for a single product: rtol 2x that); summed over k <= 129 terms the
 *         error is ~sqrt(k) * 4e-4 * 1/3 ~ 1.5e-3 rms (atol), rel L2 ~4e-4
 *         (METHOD.md: tf32 near 3e-4). */
#include <stdio.h>
#include <string.h>
#include "cudatest.h"
#include <flashgrad/autocast.h>
#include <flashgrad/cublas.h>

/* src/core/cublas.c: the cuBLAS status mapper (internal, exported). */
fg_status fg__cublas_check(const char *op, int status, const char *detail);

/* Every test starts with TF32 off and no autocast scope open, even after a
 * failed test (CK_NOFORK: a failure longjmps out without cleaning up). */
static void reset_state(void)
{
    fg_set_allow_tf32(false);
    while (fg_autocast_end() == FG_OK) {}
    fg_clear_error();
}

typedef struct {
    double atol, rtol;
    bool tf32;
} tol_t;

static const tol_t TOL_F64 = {1e-12, 1e-12, false};
static const tol_t TOL_F32 = {3e-5, 1e-5, false};
static const tol_t TOL_BF16 = {2e-2, 1e-2, false};
static const tol_t TOL_F16 = {3e-3, 2e-3, false};
static const tol_t TOL_TF32 = {1e-2, 4e-3, true};

static void ck_close_tensor(const fg_tensor *dev, const fg_tensor *ref, tol_t t, const char *what)
{
    ck_matches(dev, ref, t.atol, t.rtol, what);
    if (t.tf32) {
        fg_compare_result r;
        ck_assert_int_eq(fg_compare(dev, ref, t.atol, t.rtol, &r), FG_OK);
        ck_assert_msg(r.rel_l2_err <= 4e-3, "%s: tf32 rel L2 %.3g > 4e-3", what, r.rel_l2_err);
    }
}

/* Operand transforms, applied identically to the device and the reference leaf. */
enum {
    T_TRANS = 1,  /* leaf stored with the last two dims swapped, used through fg_transpose */
    T_SLICE = 2,  /* leaf twice as wide, used through a step-2 slice of the last dim (copied for cuBLAS) */
    T_EXPAND = 4, /* leaf with dim -2 of size 1, used through fg_expand (stride 0: copied for cuBLAS) */
};

static void leaf_shape(int nd, const int64_t *shape, unsigned tr, int64_t *out)
{
    memcpy(out, shape, (size_t)nd * sizeof *out);
    if (tr & T_TRANS && nd >= 2) {
        out[nd - 1] = shape[nd - 2];
        out[nd - 2] = shape[nd - 1];
    }
    if (tr & T_SLICE) out[nd - 1] *= 2;
    if (tr & T_EXPAND && nd >= 2) out[nd - 2] = 1;
}

static fg_tensor *apply(fg_tensor *leaf, int nd, const int64_t *shape, unsigned tr)
{
    fg_tensor *v = leaf;
    if (tr & T_TRANS && nd >= 2) v = fg_transpose(v, -1, -2);
    if (tr & T_SLICE) v = fg_slice(v, -1, 0, fg_size(v, -1), 2);
    if (tr & T_EXPAND) v = fg_expand(v, nd, shape);
    ck_assert_msg(v != NULL, "transform: %s", fg_last_error());
    return v;
}

/* Uniform [-1, 1) values representable in dt, as an f64 CPU tensor. */
static fg_tensor *rand_in(fg_generator *g, int nd, const int64_t *shape, fg_dtype dt)
{
    fg_tensor *x = fg_uniform(g, -1.0, 1.0, nd, shape, FG_F64, FG_CPU);
    ck_assert_ptr_nonnull(x);
    if (dt != FG_F64) x = fg_to(fg_to(x, FG_CPU, dt), FG_CPU, FG_F64);
    ck_assert_ptr_nonnull(x);
    return x;
}

/* A random f32 tensor on CUDA (a leaf requiring grad when asked). */
static fg_tensor *cuda_f32(fg_generator *g, int nd, const int64_t *shape, bool requires_grad)
{
    fg_tensor *t = fg_to(rand_in(g, nd, shape, FG_F32), FG_CUDA, FG_F32);
    ck_assert_msg(t != NULL, "%s", fg_last_error());
    ck_assert_int_eq(fg_set_requires_grad(t, requires_grad), FG_OK);
    return t;
}

typedef struct {
    int nda;
    int64_t sa[4];
    unsigned ta;
    int ndb;
    int64_t sb[4];
    unsigned tb;
} mm_case;

/* Forward (and backward when asked) of one product on CUDA in dtype dt against
 * the f64 CPU reference on the same values. */
static void run_case(fg_generator *g, fg_dtype dt, const mm_case *c, tol_t tol, bool backward)
{
    char what[256], x[64], y[64];
    fg_tensor *sa = fg_zeros(c->nda, c->sa, FG_F64, FG_CPU), *sb = fg_zeros(c->ndb, c->sb, FG_F64, FG_CPU);
    snprintf(what, sizeof what, "%s %s%s @ %s%s%s", fg_dtype_name(dt), fg_shape_str(sa, x, sizeof x),
             c->ta & T_TRANS ? "^T" : c->ta & T_SLICE ? "[::2]" : "", fg_shape_str(sb, y, sizeof y),
             c->tb & T_TRANS ? "^T" : c->tb & T_SLICE ? "[::2]" : c->tb & T_EXPAND ? "(expanded)" : "",
             tol.tf32 ? " tf32" : "");
    int64_t la[4], lb[4];
    leaf_shape(c->nda, c->sa, c->ta, la);
    leaf_shape(c->ndb, c->sb, c->tb, lb);
    fg_tensor *ra = rand_in(g, c->nda, la, dt), *rb = rand_in(g, c->ndb, lb, dt);
    ck_assert_int_eq(fg_set_requires_grad(ra, backward), FG_OK);
    ck_assert_int_eq(fg_set_requires_grad(rb, backward), FG_OK);
    fg_tensor *da = fg_to(fg_detach(ra), FG_CUDA, dt), *db = fg_to(fg_detach(rb), FG_CUDA, dt);
    ck_assert_msg(da && db, "%s: to cuda: %s", what, fg_last_error());
    if (backward) {
        ck_assert_int_eq(fg_set_requires_grad(da, true), FG_OK);
        ck_assert_int_eq(fg_set_requires_grad(db, true), FG_OK);
    }
    fg_set_allow_tf32(tol.tf32);
    fg_tensor *out = fg_matmul(apply(da, c->nda, c->sa, c->ta), apply(db, c->ndb, c->sb, c->tb));
    fg_tensor *ref = fg_matmul(apply(ra, c->nda, c->sa, c->ta), apply(rb, c->ndb, c->sb, c->tb));
    ck_assert_msg(out != NULL, "%s: %s", what, fg_last_error());
    ck_assert_msg(ref != NULL, "%s: reference: %s", what, fg_last_error());
    ck_assert_int_eq(fg_device_of(out), FG_CUDA);
    ck_assert_int_eq(fg_dtype_of(out), dt);
    ck_close_tensor(out, ref, tol, what);
    if (backward) {
        fg_tensor *gr = rand_in(g, fg_ndim(ref), fg_shape(ref), dt);
        fg_tensor *gd = fg_to(gr, FG_CUDA, dt);
        ck_assert_msg(fg_backward_with_grad(out, gd) == FG_OK, "%s: backward: %s", what, fg_last_error());
        ck_assert_msg(fg_backward_with_grad(ref, gr) == FG_OK, "%s: reference backward: %s", what, fg_last_error());
        char w2[300];
        snprintf(w2, sizeof w2, "%s: grad a", what);
        ck_assert_msg(fg_grad(da) != NULL, "%s missing", w2);
        ck_assert_int_eq(fg_dtype_of(fg_grad(da)), dt);
        ck_close_tensor(fg_grad(da), fg_grad(ra), tol, w2);
        snprintf(w2, sizeof w2, "%s: grad b", what);
        ck_assert_msg(fg_grad(db) != NULL, "%s missing", w2);
        ck_close_tensor(fg_grad(db), fg_grad(rb), tol, w2);
    }
    fg_set_allow_tf32(false);
}

#define C2(n0, n1, ta_, m0, m1, tb_) {2, {n0, n1}, ta_, 2, {m0, m1}, tb_}

/* Shapes whose backward needs no reduction over broadcast batch dims. */
static const mm_case plain_cases[] = {
    C2(3, 4, 0, 4, 5, 0),
    C2(1, 1, 0, 1, 1, 0),
    C2(1, 3, 0, 3, 1, 0),
    C2(3, 1, 0, 1, 3, 0),
    C2(129, 3, 0, 3, 129, 0),
    C2(3, 129, 0, 129, 1, 0),
    C2(129, 129, 0, 129, 129, 0),
    C2(5, 7, T_TRANS, 7, 3, 0),
    C2(5, 7, 0, 7, 3, T_TRANS),
    C2(5, 7, T_TRANS, 7, 3, T_TRANS),
    C2(1, 7, T_TRANS, 7, 1, T_TRANS),
    C2(4, 6, T_SLICE, 6, 3, 0),
    C2(4, 6, 0, 6, 3, T_SLICE),
    C2(3, 0, 0, 0, 5, 0), /* k = 0: zeros */
    C2(0, 4, 0, 4, 5, 0),
    {1, {4}, 0, 2, {4, 5}, 0},
    {2, {3, 4}, 0, 1, {4}, 0},
    {1, {129}, 0, 1, {129}, 0},
    {3, {2, 3, 4}, 0, 3, {2, 4, 5}, 0},
    {3, {2, 3, 4}, T_TRANS, 3, {2, 4, 5}, T_TRANS},
    {4, {2, 3, 5, 4}, 0, 4, {2, 3, 4, 6}, T_TRANS},
    {3, {2, 3, 4}, 0, 2, {4, 5}, 0},       /* shared weight: folded into one GEMM */
    {3, {2, 3, 4}, T_TRANS, 2, {4, 5}, 0}, /* shared weight, transposed batches: strided batch */
    {3, {2, 3, 4}, 0, 1, {4}, 0},
    {3, {1, 3, 4}, 0, 3, {1, 4, 2}, 0},
};

/* Broadcast batch dims: the backward sums over them (fg_sum on CUDA). */
static const mm_case bcast_cases[] = {
    {3, {1, 3, 4}, 0, 3, {5, 4, 2}, 0},
    {2, {3, 4}, 0, 3, {2, 4, 5}, 0},
    {4, {5, 1, 3, 4}, 0, 4, {1, 2, 4, 6}, 0}, /* not one stride per operand: host loop */
    {4, {5, 1, 3, 4}, T_TRANS, 4, {1, 2, 4, 6}, T_TRANS},
    {1, {4}, 0, 3, {2, 4, 5}, 0},
};

#define NCASES(a) (int)(sizeof(a) / sizeof((a)[0]))

START_TEST(test_forward_backward_f32)
{
    BEGIN;
    for (int i = 0; i < NCASES(plain_cases); i++) run_case(gen, FG_F32, &plain_cases[i], TOL_F32, true);
    END;
}
END_TEST

START_TEST(test_forward_backward_f64)
{
    BEGIN;
    for (int i = 0; i < NCASES(plain_cases); i++) run_case(gen, FG_F64, &plain_cases[i], TOL_F64, true);
    END;
}
END_TEST

START_TEST(test_forward_backward_bf16_f16)
{
    BEGIN;
    for (int i = 0; i < NCASES(plain_cases); i++) {
        run_case(gen, FG_BF16, &plain_cases[i], TOL_BF16, true);
        run_case(gen, FG_F16, &plain_cases[i], TOL_F16, true);
    }
    END;
}
END_TEST

START_TEST(test_forward_backward_tf32)
{
    BEGIN;
    for (int i = 0; i < NCASES(plain_cases); i++) run_case(gen, FG_F32, &plain_cases[i], TOL_TF32, true);
    END;
}
END_TEST

START_TEST(test_broadcast_forward)
{
    BEGIN;
    for (int i = 0; i < NCASES(bcast_cases); i++) {
        run_case(gen, FG_F32, &bcast_cases[i], TOL_F32, false);
        run_case(gen, FG_F64, &bcast_cases[i], TOL_F64, false);
        run_case(gen, FG_BF16, &bcast_cases[i], TOL_BF16, false);
    }
    /* an expanded (stride-0 rows) operand is copied before cuBLAS */
    const mm_case ex = C2(4, 6, 0, 6, 3, T_EXPAND);
    run_case(gen, FG_F32, &ex, TOL_F32, false);
    END;
}
END_TEST

/* Needs fg_sum on CUDA tensors (the reduce kernels) for the batch reduction. */
START_TEST(test_broadcast_backward)
{
    BEGIN;
    for (int i = 0; i < NCASES(bcast_cases); i++) {
        run_case(gen, FG_F32, &bcast_cases[i], TOL_F32, true);
        run_case(gen, FG_BF16, &bcast_cases[i], TOL_BF16, true);
    }
    END;
}
END_TEST

/* TF32 must be off by default and really off: at k = 512 tf32 rounding gives
 * errors ~3e-3 rms (max ~1e-2), fp32 ~1e-5; 2e-4 separates the two. */
START_TEST(test_tf32_switch)
{
    BEGIN;
    ck_assert(!fg_allow_tf32());
    ck_assert_int_eq(fg_set_allow_tf32(true), FG_OK);
    ck_assert(fg_allow_tf32());
    ck_assert_int_eq(fg_set_allow_tf32(false), FG_OK);
    ck_assert(!fg_allow_tf32());
    fg_tensor *a = rand_in(gen, FG_SHAPE(256, 512), FG_F32), *b = rand_in(gen, FG_SHAPE(512, 256), FG_F32);
    fg_tensor *ref = fg_matmul(a, b);
    fg_tensor *da = fg_to(a, FG_CUDA, FG_F32), *db = fg_to(b, FG_CUDA, FG_F32);
    fg_tensor *off = fg_matmul(da, db);
    ck_matches(off, ref, 2e-4, 1e-5, "f32 k=512, tf32 off");
    fg_set_allow_tf32(true);
    fg_tensor *on = fg_matmul(da, db);
    fg_set_allow_tf32(false);
    fg_compare_result r_on, r_off;
    ck_assert_int_eq(fg_compare(on, ref, 5e-2, 2e-3, &r_on), FG_OK);
    ck_assert_int_eq(fg_compare(off, ref, 5e-2, 2e-3, &r_off), FG_OK);
    printf("cuda_matmul: k=512 rel L2 error vs f64: tf32 off %.3g, on %.3g\n", r_off.rel_l2_err, r_on.rel_l2_err);
    ck_assert_msg(r_on.allclose && r_on.rel_l2_err <= 2e-3, "tf32: rel l2 %.3g max abs %.3g", r_on.rel_l2_err,
                  r_on.max_abs_err);
    ck_assert_msg(r_off.rel_l2_err <= 1e-5, "f32: rel l2 %.3g", r_off.rel_l2_err);
    END;
}
END_TEST

static fg_tensor *linear_fn(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return fg_linear(in[0], in[1], in[2]);
}

START_TEST(test_linear)
{
    BEGIN;
    /* the shared backward, checked against finite differences on the CPU */
    fg_tensor *in[3] = {rand_param(gen, FG_SHAPE(2, 3, 4), -1, 1), rand_param(gen, FG_SHAPE(4, 5), -1, 1),
                        rand_param(gen, FG_SHAPE(5), -1, 1)};
    ck_gradcheck(linear_fn, NULL, 3, in);
    fg_tensor *in1[3] = {rand_param(gen, FG_SHAPE(4), -1, 1), in[1], in[2]};
    ck_gradcheck(linear_fn, NULL, 3, in1);
    /* CUDA (bias written first, product accumulated by cuBLAS) against the CPU */
    const fg_dtype dts[2] = {FG_F32, FG_BF16};
    const int64_t xs[3][3] = {{2, 3, 8}, {8, 0, 0}, {7, 8, 0}};
    const int xnd[3] = {3, 1, 2};
    for (int t = 0; t < 2; t++)
        for (int s = 0; s < 3; s++) {
            fg_dtype dt = dts[t];
            tol_t tol = dt == FG_F32 ? TOL_F32 : TOL_BF16;
            fg_tensor *x = rand_in(gen, xnd[s], xs[s], dt), *w = rand_in(gen, FG_SHAPE(8, 5), dt),
                      *b = rand_in(gen, FG_SHAPE(5), dt);
            fg_tensor *dx = fg_to(x, FG_CUDA, dt), *dw = fg_to(w, FG_CUDA, dt), *dbias = fg_to(b, FG_CUDA, dt);
            fg_tensor *leaves[6] = {x, w, b, dx, dw, dbias};
            for (int i = 0; i < 6; i++) ck_assert_int_eq(fg_set_requires_grad(leaves[i], true), FG_OK);
            fg_tensor *yd = fg_linear(dx, dw, dbias), *yr = fg_linear(x, w, b);
            ck_assert_msg(yd != NULL, "linear cuda: %s", fg_last_error());
            ck_assert_str_eq(fg_grad_fn_name(yd), "linear");
            ck_close_tensor(yd, yr, tol, "linear forward");
            fg_tensor *gr = rand_in(gen, fg_ndim(yr), fg_shape(yr), dt);
            ck_assert_int_eq(fg_backward_with_grad(yr, gr), FG_OK);
            ck_assert_msg(fg_backward_with_grad(yd, fg_to(gr, FG_CUDA, dt)) == FG_OK, "linear backward: %s",
                          fg_last_error());
            ck_close_tensor(fg_grad(dx), fg_grad(x), tol, "linear grad x");
            ck_close_tensor(fg_grad(dw), fg_grad(w), tol, "linear grad w");
            ck_close_tensor(fg_grad(dbias), fg_grad(b), tol, "linear grad b");
        }
    /* a transposed (non-contiguous) x: its backward flattens a copy */
    {
        fg_tensor *xl = rand_in(gen, FG_SHAPE(8, 7), FG_F32), *wl = rand_in(gen, FG_SHAPE(8, 5), FG_F32),
                  *bl = rand_in(gen, FG_SHAPE(5), FG_F32);
        fg_tensor *dxl = fg_to(xl, FG_CUDA, FG_F32), *dwl = fg_to(wl, FG_CUDA, FG_F32), *dbl = fg_to(bl, FG_CUDA, FG_F32);
        fg_tensor *lv[6] = {xl, wl, bl, dxl, dwl, dbl};
        for (int i = 0; i < 6; i++) ck_assert_int_eq(fg_set_requires_grad(lv[i], true), FG_OK);
        fg_tensor *yr = fg_linear(fg_transpose(xl, 0, 1), wl, bl);
        fg_tensor *yd = fg_linear(fg_transpose(dxl, 0, 1), dwl, dbl);
        ck_assert_msg(yd != NULL, "linear x^T: %s", fg_last_error());
        ck_close_tensor(yd, yr, TOL_F32, "linear x^T forward");
        fg_tensor *gr = rand_in(gen, FG_SHAPE(7, 5), FG_F32);
        ck_assert_int_eq(fg_backward_with_grad(yr, gr), FG_OK);
        ck_assert_msg(fg_backward_with_grad(yd, fg_to(gr, FG_CUDA, FG_F32)) == FG_OK, "linear x^T backward: %s",
                      fg_last_error());
        ck_close_tensor(fg_grad(dxl), fg_grad(xl), TOL_F32, "linear x^T grad x");
        ck_close_tensor(fg_grad(dwl), fg_grad(wl), TOL_F32, "linear x^T grad w");
        ck_close_tensor(fg_grad(dbl), fg_grad(bl), TOL_F32, "linear x^T grad b");
    }
    /* no bias: a plain matmul; shape errors name the shapes */
    fg_tensor *x = fg_to(rand_in(gen, FG_SHAPE(3, 4), FG_F32), FG_CUDA, FG_F32);
    fg_tensor *w = fg_to(rand_in(gen, FG_SHAPE(4, 2), FG_F32), FG_CUDA, FG_F32);
    ck_assert_int_eq(fg_set_requires_grad(w, true), FG_OK);
    fg_tensor *y = fg_linear(x, w, NULL);
    ck_assert_msg(y != NULL, "%s", fg_last_error());
    ck_assert_str_eq(fg_grad_fn_name(y), "matmul");
    ck_assert_ptr_null(fg_linear(x, w, fg_zeros(FG_SHAPE(3), FG_F32, FG_CUDA)));
    ck_err(FG_ERR_SHAPE, "linear", "b (3,)");
    END;
}
END_TEST

static fg_tensor *linear_gelu_fn(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return fg_linear_gelu(in[0], in[1], in[2]);
}

/* gelu(x @ w + b): on CUDA one cuBLASLt GEMM with the GELU epilogue (which
 * also writes the pre-activation the backward reads), against the CPU's
 * fg_gelu(fg_linear(...), true). Sizes with N % 8 == 0 take the fused kernel;
 * N = 5 and a transposed x take the fallback; both must agree with the CPU. */
START_TEST(test_linear_gelu)
{
    BEGIN;
    fg_tensor *in[3] = {rand_param(gen, FG_SHAPE(2, 3, 4), -1, 1), rand_param(gen, FG_SHAPE(4, 5), -1, 1),
                        rand_param(gen, FG_SHAPE(5), -1, 1)};
    ck_gradcheck(linear_gelu_fn, NULL, 3, in);
    /* the CPU form is exactly gelu(linear) */
    ck_same_tensor(fg_linear_gelu(in[0], in[1], in[2]), fg_gelu(fg_linear(in[0], in[1], in[2]), true), 0.0);
    const fg_dtype dts[2] = {FG_F32, FG_BF16};
    const int64_t xs[3][3] = {{2, 3, 32}, {32, 0, 0}, {40, 32, 0}};
    const int xnd[3] = {3, 1, 2};
    const int64_t ns[2] = {16, 5};
    for (int t = 0; t < 2; t++)
        for (int s = 0; s < 3; s++)
            for (int ni = 0; ni < 2; ni++)
                for (int v = 0; v < 4; v++) { /* v: bit 0 bias, bit 1 w transposed */
                    fg_dtype dt = dts[t];
                    tol_t tol = dt == FG_F32 ? TOL_F32 : TOL_BF16;
                    int64_t N = ns[ni];
                    fg_tensor *x = rand_in(gen, xnd[s], xs[s], dt);
                    fg_tensor *w = v & 2 ? fg_transpose(rand_in(gen, FG_SHAPE(N, 32), dt), 0, 1)
                                         : rand_in(gen, FG_SHAPE(32, N), dt);
                    fg_tensor *b = v & 1 ? rand_in(gen, FG_SHAPE(N), dt) : NULL;
                    fg_tensor *dx = fg_to(x, FG_CUDA, dt), *dw = fg_to(w, FG_CUDA, dt);
                    fg_tensor *dbias = b ? fg_to(b, FG_CUDA, dt) : NULL;
                    if (v & 2) dw = fg_transpose(fg_contiguous(fg_transpose(dw, 0, 1)), 0, 1);
                    char what[96];
                    snprintf(what, sizeof what, "linear_gelu %s x%dd N %lld %s%s", fg_dtype_name(dt), xnd[s],
                             (long long)N, b ? "bias" : "no bias", v & 2 ? " w^T" : "");
                    /* inference: no pre-activation kept */
                    bool prev = fg_set_grad_enabled(false);
                    ck_close_tensor(fg_linear_gelu(dx, dw, dbias), fg_linear_gelu(x, w, b), tol, what);
                    fg_set_grad_enabled(prev);
                    fg_tensor *leaves[6] = {x, w, b, dx, dw, dbias};
                    for (int i = 0; i < 6; i++)
                        if (leaves[i]) ck_assert_int_eq(fg_set_requires_grad(leaves[i], true), FG_OK);
                    fg_tensor *yd = fg_linear_gelu(dx, dw, dbias), *yr = fg_linear_gelu(x, w, b);
                    ck_assert_msg(yd != NULL, "%s: %s", what, fg_last_error());
                    ck_assert_str_eq(fg_grad_fn_name(yd), "gelu");
                    ck_close_tensor(yd, yr, tol, what);
                    fg_tensor *gr = rand_in(gen, fg_ndim(yr), fg_shape(yr), dt);
                    ck_assert_int_eq(fg_backward_with_grad(yr, gr), FG_OK);
                    ck_assert_msg(fg_backward_with_grad(yd, fg_to(gr, FG_CUDA, dt)) == FG_OK, "%s backward: %s", what,
                                  fg_last_error());
                    ck_close_tensor(fg_grad(dx), fg_grad(x), tol, "linear_gelu grad x");
                    ck_close_tensor(fg_grad(dw), fg_grad(w), tol, "linear_gelu grad w");
                    if (b) ck_close_tensor(fg_grad(dbias), fg_grad(b), tol, "linear_gelu grad b");
                }
    /* a transposed x (the fallback) and autocast to bf16 */
    fg_tensor *xl = rand_in(gen, FG_SHAPE(32, 24), FG_F32), *wl = rand_in(gen, FG_SHAPE(32, 16), FG_F32),
              *bl = rand_in(gen, FG_SHAPE(16), FG_F32);
    fg_tensor *dxl = fg_to(xl, FG_CUDA, FG_F32), *dwl = fg_to(wl, FG_CUDA, FG_F32), *dbl = fg_to(bl, FG_CUDA, FG_F32);
    ck_close_tensor(fg_linear_gelu(fg_transpose(dxl, 0, 1), dwl, dbl), fg_linear_gelu(fg_transpose(xl, 0, 1), wl, bl),
                    TOL_F32, "linear_gelu x^T");
    ck_assert_int_eq(fg_autocast_begin(FG_BF16), FG_OK);
    fg_tensor *ya = fg_linear_gelu(fg_transpose(dxl, 0, 1), dwl, dbl);
    fg_autocast_end();
    ck_assert_msg(ya && fg_dtype_of(ya) == FG_BF16, "autocast: %s", fg_last_error());
    ck_close_tensor(ya, fg_linear_gelu(fg_transpose(xl, 0, 1), wl, bl), TOL_BF16, "linear_gelu autocast");
    /* errors name the op */
    ck_assert_ptr_null(fg_linear_gelu(dxl, dwl, fg_zeros(FG_SHAPE(3), FG_F32, FG_CUDA)));
    ck_err(FG_ERR_SHAPE, "linear_gelu", "b (3,)");
    END;
}
END_TEST

START_TEST(test_autocast)
{
    BEGIN;
    ck_assert_int_eq(fg_autocast_dtype(), FG_F32);
    ck_assert_int_eq(fg_autocast_end(), FG_ERR_STATE);
    ck_assert_int_eq(fg_autocast_begin(FG_I32), FG_ERR_DTYPE);
    ck_assert_int_eq(fg_autocast_begin(FG_F64), FG_ERR_DTYPE);

    fg_tensor *ra = rand_in(gen, FG_SHAPE(8, 32), FG_F32), *rb = rand_in(gen, FG_SHAPE(32, 16), FG_F32);
    ck_assert_int_eq(fg_set_requires_grad(ra, true), FG_OK);
    ck_assert_int_eq(fg_set_requires_grad(rb, true), FG_OK);
    fg_tensor *a = to_cuda(fg_to(ra, FG_CPU, FG_F32), true), *b = to_cuda(fg_to(rb, FG_CPU, FG_F32), true);
    ck_assert_int_eq(fg_dtype_of(a), FG_F32);

    ck_assert_int_eq(fg_autocast_begin(FG_BF16), FG_OK);
    ck_assert_int_eq(fg_autocast_dtype(), FG_BF16);
    fg_tensor *y = fg_matmul(a, b);
    ck_assert_msg(y != NULL, "%s", fg_last_error());
    ck_assert_int_eq(fg_dtype_of(y), FG_BF16);
    ck_assert_int_eq(fg_device_of(y), FG_CUDA);
    /* CPU tensors and f64 are never cast */
    ck_assert_int_eq(fg_dtype_of(fg_matmul(fg_to(ra, FG_CPU, FG_F32), fg_to(rb, FG_CPU, FG_F32))), FG_F32);
    ck_assert_int_eq(fg_dtype_of(fg_matmul(fg_to(ra, FG_CUDA, FG_F64), fg_to(rb, FG_CUDA, FG_F64))), FG_F64);
    /* nested: f32 turns it off inside, f16 switches dtype */
    ck_assert_int_eq(fg_autocast_begin(FG_F32), FG_OK);
    ck_assert_int_eq(fg_dtype_of(fg_matmul(a, b)), FG_F32);
    ck_assert_int_eq(fg_autocast_begin(FG_F16), FG_OK);
    ck_assert_int_eq(fg_dtype_of(fg_matmul(a, b)), FG_F16);
    ck_assert_int_eq(fg_autocast_end(), FG_OK);
    ck_assert_int_eq(fg_autocast_end(), FG_OK);
    ck_assert_int_eq(fg_autocast_dtype(), FG_BF16);
    ck_assert_int_eq(fg_autocast_end(), FG_OK);
    ck_assert_int_eq(fg_autocast_dtype(), FG_F32);

    /* f32 gradients of the f32 leaves, close to the f32 CPU reference within bf16 tolerance:
     * operands rounded to bf16 (u = 3.9e-3) and the bf16 result rounded once more;
     * contraction lengths 16 and 8 -> errors ~5e-3 max, rel L2 ~3e-3. */
    fg_tensor *g = rand_in(gen, FG_SHAPE(8, 16), FG_BF16);
    ck_assert_int_eq(fg_backward_with_grad(y, fg_to(g, FG_CUDA, FG_BF16)), FG_OK);
    fg_tensor *yr = fg_matmul(ra, rb);
    ck_assert_int_eq(fg_backward_with_grad(yr, g), FG_OK);
    ck_matches(y, yr, 3e-2, 2e-2, "autocast forward");
    ck_assert_ptr_nonnull(fg_grad(a));
    ck_assert_int_eq(fg_dtype_of(fg_grad(a)), FG_F32);
    ck_assert_int_eq(fg_dtype_of(fg_grad(b)), FG_F32);
    ck_assert_int_eq(fg_device_of(fg_grad(a)), FG_CUDA);
    const char *names[2] = {"autocast grad a", "autocast grad b"};
    fg_tensor *dev[2] = {a, b}, *cpu[2] = {ra, rb};
    for (int i = 0; i < 2; i++) {
        fg_compare_result r;
        ck_matches(fg_grad(dev[i]), fg_grad(cpu[i]), 3e-2, 2e-2, names[i]);
        ck_assert_int_eq(fg_compare(fg_grad(dev[i]), fg_grad(cpu[i]), 3e-2, 2e-2, &r), FG_OK);
        ck_assert_msg(r.rel_l2_err <= 1e-2, "%s: rel L2 %.3g", names[i], r.rel_l2_err);
    }

    /* a graph recorded in f32 and back-propagated inside an autocast scope keeps f32 (backward
     * runs with autocast off) */
    /* (cleared, not zeroed: a fresh gradient is a copy, no elementwise add needed) */
    fg_clear_grad(a);
    fg_clear_grad(b);
    fg_tensor *y32 = fg_matmul(a, b);
    ck_assert_int_eq(fg_autocast_begin(FG_BF16), FG_OK);
    fg_status st = fg_backward_with_grad(y32, fg_to(g, FG_CUDA, FG_F32));
    ck_assert_int_eq(fg_autocast_end(), FG_OK);
    ck_assert_msg(st == FG_OK, "backward inside autocast: %s", fg_last_error());
    ck_assert_int_eq(fg_dtype_of(fg_grad(a)), FG_F32);

    /* linear under autocast: x, w, b cast, bf16 result, f32 grads */
    fg_clear_grad(a);
    fg_clear_grad(b);
    fg_tensor *bias = cuda_f32(gen, FG_SHAPE(16), true);
    ck_assert_int_eq(fg_autocast_begin(FG_BF16), FG_OK);
    fg_tensor *yl = fg_linear(a, b, bias);
    ck_assert_int_eq(fg_autocast_end(), FG_OK);
    ck_assert_msg(yl != NULL, "%s", fg_last_error());
    ck_assert_int_eq(fg_dtype_of(yl), FG_BF16);
    ck_assert_int_eq(fg_backward_with_grad(yl, fg_to(g, FG_CUDA, FG_BF16)), FG_OK);
    ck_assert_int_eq(fg_dtype_of(fg_grad(bias)), FG_F32);
    END;
}
END_TEST

START_TEST(test_errors)
{
    BEGIN;
    /* integer matmul: a dtype error from the argument checks, before any cuBLAS call */
    fg_tensor *ia = fg_zeros(FG_SHAPE(2, 3), FG_I32, FG_CUDA), *ib = fg_zeros(FG_SHAPE(3, 2), FG_I32, FG_CUDA);
    ck_assert_ptr_nonnull(ia);
    ck_assert_ptr_null(fg_matmul(ia, ib));
    ck_err(FG_ERR_DTYPE, "matmul", "i32");
    /* mixed dtypes without autocast */
    fg_tensor *fa = fg_zeros(FG_SHAPE(2, 3), FG_F32, FG_CUDA), *hb = fg_zeros(FG_SHAPE(3, 2), FG_BF16, FG_CUDA);
    ck_assert_ptr_null(fg_matmul(fa, hb));
    ck_err(FG_ERR_DTYPE, "matmul", NULL);
    /* mixed devices */
    ck_assert_ptr_null(fg_matmul(fa, fg_zeros(FG_SHAPE(3, 2), FG_F32, FG_CPU)));
    ck_err(FG_ERR_DEVICE, "matmul", NULL);
    /* shapes */
    ck_assert_ptr_null(fg_matmul(fa, fa));
    ck_err(FG_ERR_SHAPE, "(2, 3) @ (2, 3)", NULL);
    /* the cuBLAS status mapping: FG_ERR_CUDA, the status name, op and shapes in the message */
    fg_clear_error();
    ck_assert_int_eq(fg__cublas_check("matmul", 0, "x"), FG_OK);
    ck_assert_int_eq(fg__cublas_check("matmul", 15 /* CUBLAS_STATUS_NOT_SUPPORTED */,
                                      "cublasGemmStridedBatchedEx: bf16 (2, 3) @ (3, 4), compute 32F"),
                     FG_ERR_CUDA);
    ck_err(FG_ERR_CUDA, "CUBLAS_STATUS_NOT_SUPPORTED", "bf16 (2, 3) @ (3, 4)");
    ck_err(FG_ERR_CUDA, "matmul", NULL);
    ck_assert_int_eq(fg__cublas_check("matmul", 13 /* CUBLAS_STATUS_EXECUTION_FAILED */, "gemm"), FG_ERR_CUDA);
    ck_err(FG_ERR_CUDA, "CUBLAS_STATUS_EXECUTION_FAILED", NULL);
    /* the handle still works afterwards */
    fg_clear_error();
    fg_tensor *ok = fg_matmul(fa, fg_zeros(FG_SHAPE(3, 2), FG_F32, FG_CUDA));
    ck_assert_msg(ok != NULL, "%s", fg_last_error());
    END;
}
END_TEST

/* One SGD step of a tiny MLP on CUDA: loss = sum(relu(x @ w1 + b1) @ w2).
 * Returns the loss when read_loss (one host sync), else NAN. */
static double mlp_step(fg_tensor *x, fg_tensor *const *params, int np, bool read_loss)
{
    fg_scope *s = fg_scope_begin();
    fg_tensor *h = fg_relu(fg_add(fg_matmul(x, params[0]), params[1]));
    fg_tensor *loss = fg_sum_all(fg_matmul(h, params[2]));
    ck_assert_msg(loss != NULL, "mlp forward: %s", fg_last_error());
    double v = read_loss ? fg_item(loss) : NAN;
    ck_assert_msg(fg_backward(loss) == FG_OK, "mlp backward: %s", fg_last_error());
    bool prev = fg_set_grad_enabled(false);
    for (int i = 0; i < np; i++) {
        fg_tensor *upd = fg_sub(params[i], fg_mul_scalar(fg_grad(params[i]), 1e-3));
        ck_assert_msg(upd != NULL, "sgd: %s", fg_last_error());
        ck_assert_int_eq(fg_copy_(params[i], upd), FG_OK);
        ck_assert_int_eq(fg_zero_grad(params[i]), FG_OK);
    }
    fg_set_grad_enabled(prev);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    return v;
}

START_TEST(test_allocator_steady_training_loop)
{
    BEGIN;
    fg_tensor *x = cuda_f32(gen, FG_SHAPE(64, 16), false);
    fg_tensor *p[3] = {cuda_f32(gen, FG_SHAPE(16, 32), true), cuda_f32(gen, FG_SHAPE(32), true),
                       cuda_f32(gen, FG_SHAPE(32, 4), true)};
    /* Two warm-up steps: the first backward creates the gradient buffers, the
     * second is the first with the steady pattern (in-place accumulation). */
    double l0 = mlp_step(x, p, 3, true);
    mlp_step(x, p, 3, true);
    ck_assert_int_eq(fg_cuda_synchronize(), FG_OK);
    fg_cuda_memory_stats m0, m1;
    ck_assert_int_eq(fg_cuda_get_memory_stats(&m0), FG_OK);
    double l = 0;
    for (int i = 0; i < 20; i++) l = mlp_step(x, p, 3, true);
    ck_assert_int_eq(fg_cuda_get_memory_stats(&m1), FG_OK);
    /* No host sync inside a step: the only waits are the 20 loss reads. Then
     * 20 steps that read nothing back: none at all. */
    fg_cuda_memory_stats m2;
    for (int i = 0; i < 20; i++) mlp_step(x, p, 3, false);
    ck_assert_int_eq(fg_cuda_get_memory_stats(&m2), FG_OK);
    printf("cuda_matmul: MLP loss %.4f -> %.4f; cudaMalloc calls %lld -> %lld over 20 steps, cache hits +%lld, "
           "host syncs +%lld (20 loss reads), then +%lld over 20 steps without reads\n",
           l0, l, (long long)m0.n_cuda_malloc, (long long)m1.n_cuda_malloc,
           (long long)(m1.n_cache_hits - m0.n_cache_hits), (long long)(m1.n_host_syncs - m0.n_host_syncs),
           (long long)(m2.n_host_syncs - m1.n_host_syncs));
    ck_assert_int_eq(m1.n_host_syncs - m0.n_host_syncs, 20);
    ck_assert_int_eq(m2.n_host_syncs, m1.n_host_syncs);
    const char *nc = getenv("FG_CUDA_NO_CACHE");
    if (nc && *nc && strcmp(nc, "0") != 0) {
        /* Caching off (sanitizer runs): every step allocates for real. */
        ck_assert(m1.n_cuda_malloc > m0.n_cuda_malloc);
    } else {
        ck_assert_msg(m1.n_cuda_malloc == m0.n_cuda_malloc && m2.n_cuda_malloc == m0.n_cuda_malloc,
                      "cudaMalloc calls grew from %lld to %lld, then %lld", (long long)m0.n_cuda_malloc,
                      (long long)m1.n_cuda_malloc, (long long)m2.n_cuda_malloc);
        ck_assert(m1.n_cache_hits > m0.n_cache_hits);
    }
    ck_assert(l < l0);
    END;
}
END_TEST

START_TEST(test_oom_recovers)
{
    BEGIN;
    fg_tensor *huge = fg_empty(FG_SHAPE((int64_t)1 << 38), FG_F32, FG_CUDA); /* 1 TiB */
    ck_assert_ptr_null(huge);
    ck_err(FG_ERR_OOM, "out of memory", NULL);
    printf("cuda_matmul: 1 TiB allocation: %s\n", fg_last_error());
    fg_clear_error();
    fg_tensor *a = rand_in(gen, FG_SHAPE(64, 48), FG_F32), *b = rand_in(gen, FG_SHAPE(48, 40), FG_F32);
    fg_tensor *c = fg_matmul(fg_to(a, FG_CUDA, FG_F32), fg_to(b, FG_CUDA, FG_F32));
    ck_assert_msg(c != NULL, "after OOM: %s", fg_last_error());
    ck_matches(c, fg_matmul(a, b), TOL_F32.atol, TOL_F32.rtol, "matmul after OOM");
    fg_tensor *big = fg_empty(FG_SHAPE((int64_t)64 << 20), FG_F32, FG_CUDA); /* 256 MiB */
    ck_assert_msg(big != NULL, "allocation after OOM: %s", fg_last_error());
    ck_assert_int_eq(fg_fill_(big, 1.5), FG_OK);
    ck_close(fg_get(big, (const int64_t[]){(64 << 20) - 1}), 1.5, 0);
    END;
}
END_TEST

static Suite *mk(void)
{
    Suite *s = suite_create("cuda_matmul");
    TCase *tc = tcase_create("matmul");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, reset_state, reset_state);
    tcase_add_test(tc, test_forward_backward_f32);
    tcase_add_test(tc, test_forward_backward_f64);
    tcase_add_test(tc, test_forward_backward_bf16_f16);
    tcase_add_test(tc, test_forward_backward_tf32);
    tcase_add_test(tc, test_broadcast_forward);
    tcase_add_test(tc, test_broadcast_backward);
    tcase_add_test(tc, test_tf32_switch);
    tcase_add_test(tc, test_linear);
    tcase_add_test(tc, test_linear_gelu);
    tcase_add_test(tc, test_autocast);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_allocator_steady_training_loop);
    tcase_add_test(tc, test_oom_recovers);
    suite_add_tcase(s, tc);
    return s;
}

FG_CUDA_TEST_MAIN(mk, "cuda_matmul")
