/* Suite "attention" (CPU): fg_attention's flash backend (tiled online softmax,
 * recomputing backward) against the math backend (materialised scores), and
 * the math backend against finite differences, on a grid of shapes: tiny and
 * prime lengths, Lq < Lk and Lq > Lk, causal on/off, GQA ratios 1, 2, 4, 8 and
 * 12:4, head dims 1..256, both layouts; rows that see no key; large logits;
 * dtypes; errors. In f64 the two backends agree to rounding (1e-12). */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "testutil.h"
#include <flashgrad/attention.h>

/* A (B, H, L, D) leaf (f64 values in [-1, 1) times mag, stored as dt); with
 * blhd the storage is (B, L, H, D) and the result its transposed view. *leaf
 * gets the tensor that holds the gradient. */
static fg_tensor *rnd4(fg_generator *g, int64_t B, int64_t H, int64_t L, int64_t D, bool blhd, double mag,
                       fg_dtype dt, fg_tensor **leaf)
{
    fg_tensor *base = blhd ? fg_uniform(g, -mag, mag, FG_SHAPE(B, L, H, D), FG_F64, FG_CPU)
                           : fg_uniform(g, -mag, mag, FG_SHAPE(B, H, L, D), FG_F64, FG_CPU);
    ck_assert_ptr_nonnull(base);
    if (dt != FG_F64) base = fg_contiguous(fg_to(base, FG_CPU, dt));
    ck_assert_int_eq(fg_set_requires_grad(base, true), FG_OK);
    *leaf = base;
    return blhd ? fg_transpose(base, 1, 2) : base;
}

typedef struct {
    int64_t B, Hq, Hkv, Lq, Lk, D;
    bool causal, blhd;
} acase;

static void ck_attn_close(const fg_tensor *a, const fg_tensor *b, double atol, double rtol, const char *what,
                     const acase *c)
{
    fg_compare_result r;
    ck_assert_msg(a && b, "%s: %s", what, fg_last_error());
    ck_assert_int_eq(fg_compare(a, b, atol, rtol, &r), FG_OK);
    ck_assert_msg(r.allclose && r.n_mismatch == 0,
                  "%s (B %lld Hq %lld Hkv %lld Lq %lld Lk %lld D %lld causal %d blhd %d): max abs err %.3g, rel L2 %.3g",
                  what, (long long)c->B, (long long)c->Hq, (long long)c->Hkv, (long long)c->Lq, (long long)c->Lk,
                  (long long)c->D, c->causal, c->blhd, r.max_abs_err, r.rel_l2_err);
}

/* flash vs math: out, LSE, and the three gradients for a random dO. */
static void compare_backends(fg_generator *g, const acase *c, fg_dtype dt, double tol)
{
    fg_tensor *ql, *kl, *vl;
    fg_tensor *q = rnd4(g, c->B, c->Hq, c->Lq, c->D, c->blhd, 1.0, dt, &ql);
    fg_tensor *k = rnd4(g, c->B, c->Hkv, c->Lk, c->D, c->blhd, 1.0, dt, &kl);
    fg_tensor *v = rnd4(g, c->B, c->Hkv, c->Lk, c->D, c->blhd, 1.0, dt, &vl);
    fg_tensor *dout = fg_uniform(g, -1, 1, FG_SHAPE(c->B, c->Hq, c->Lq, c->D), dt, FG_CPU);
    fg_tensor *out[2], *lse[2], *grads[2][3];
    for (int m = 0; m < 2; m++) {
        if (m == 1 && c->blhd) { /* fresh views: the first backward freed the transposes' graph */
            q = fg_transpose(ql, 1, 2);
            k = fg_transpose(kl, 1, 2);
            v = fg_transpose(vl, 1, 2);
        }
        fg_attention_opts o = {.causal = c->causal, .backend = m ? FG_ATTN_MATH : FG_ATTN_FLASH};
        out[m] = fg_attention_lse(q, k, v, &o, &lse[m]);
        ck_assert_msg(out[m] != NULL, "%s: %s", m ? "math" : "flash", fg_last_error());
        ck_assert_msg(fg_backward_with_grad(out[m], dout) == FG_OK, "%s backward: %s", m ? "math" : "flash", fg_last_error());
        fg_tensor *leaves[3] = {ql, kl, vl};
        for (int i = 0; i < 3; i++) {
            grads[m][i] = fg_clone(fg_grad(leaves[i]));
            ck_assert_int_eq(fg_zero_grad(leaves[i]), FG_OK);
        }
    }
    ck_attn_close(out[0], out[1], tol, tol, "out", c);
    /* f64: LSE in f64; f32: fp32 LSE; bf16: the math backend's scores are bf16 */
    ck_attn_close(lse[0], lse[1], dt == FG_F64 ? tol : dt == FG_F32 ? 1e-5 : 5e-2, dt == FG_F32 ? 1e-6 : tol, "lse", c);
    ck_attn_close(grads[0][0], grads[1][0], tol, tol, "dq", c);
    ck_attn_close(grads[0][1], grads[1][1], tol, tol, "dk", c);
    ck_attn_close(grads[0][2], grads[1][2], tol, tol, "dv", c);
}

static const acase grid[] = {
    {1, 1, 1, 1, 1, 1, false, false},  {1, 1, 1, 1, 1, 1, true, false},    {2, 2, 2, 5, 7, 3, false, false},
    {2, 2, 2, 5, 7, 3, true, true},    {1, 4, 2, 13, 13, 8, true, false},  {1, 4, 1, 17, 5, 16, true, false},
    {2, 8, 2, 3, 29, 5, true, true},   {1, 12, 4, 19, 23, 7, false, true}, {1, 8, 1, 33, 31, 4, true, true},
    {1, 2, 2, 40, 40, 64, true, false}, {1, 1, 1, 3, 1, 256, false, false}, {1, 2, 1, 1, 37, 9, true, false},
    {1, 3, 3, 37, 1, 2, true, true},
};

START_TEST(test_flash_matches_math_f64)
{
    BEGIN;
    for (size_t i = 0; i < sizeof grid / sizeof *grid; i++) compare_backends(gen, &grid[i], FG_F64, 1e-12);
    END;
}
END_TEST

/* Lower precision: both backends accumulate in double on the CPU, so they differ
 * only by the rounding of their outputs (f32 ~1e-7, bf16 ~4e-3 relative). */
START_TEST(test_flash_matches_math_f32_bf16)
{
    BEGIN;
    for (size_t i = 2; i < 8; i++) {
        compare_backends(gen, &grid[i], FG_F32, 2e-6);
        compare_backends(gen, &grid[i], FG_BF16, 3e-2);
    }
    END;
}
END_TEST

typedef struct {
    fg_attention_opts o;
    int64_t G; /* unused by the fn; documents the case */
} gc_ctx;

static fg_tensor *attn_fn(fg_tensor *const *in, void *ctx)
{
    return fg_attention(in[0], in[1], in[2], &((gc_ctx *)ctx)->o);
}

START_TEST(test_gradcheck_both_backends)
{
    BEGIN;
    /* (B, Hq, Lq, D) = (1, 4, 5, 3), Hkv 2, Lk 4; causal with Lq > Lk leaves a row with no key */
    for (int causal = 0; causal < 2; causal++)
        for (int be = 1; be <= 2; be++) {
            fg_tensor *in[3] = {rand_param(gen, FG_SHAPE(1, 4, 5, 3), -1, 1), rand_param(gen, FG_SHAPE(1, 2, 4, 3), -1, 1),
                                rand_param(gen, FG_SHAPE(1, 2, 4, 3), -1, 1)};
            gc_ctx c = {.o = {.causal = causal, .scale = 0.7, .backend = (fg_attn_backend)be}, .G = 2};
            ck_gradcheck(attn_fn, &c, 3, in);
        }
    END;
}
END_TEST

/* Dropout: gi carries a generator whose state is reset before every call, so
 * finite differences see one fixed mask. */
typedef struct {
    fg_attention_opts o;
    uint64_t seed, offset;
} drop_ctx;

static fg_tensor *attn_drop_fn(fg_tensor *const *in, void *ctx)
{
    drop_ctx *c = ctx;
    fg_generator_set_state(c->o.generator, c->seed, c->offset);
    return fg_attention(in[0], in[1], in[2], &c->o);
}

START_TEST(test_dropout)
{
    BEGIN;
    /* flash == math with the same mask (f64), GQA, causal, Lq != Lk */
    fg_tensor *q = rand_param(gen, FG_SHAPE(2, 4, 9, 5), -1, 1), *k = rand_param(gen, FG_SHAPE(2, 2, 11, 5), -1, 1);
    fg_tensor *v = rand_param(gen, FG_SHAPE(2, 2, 11, 5), -1, 1);
    for (int causal = 0; causal < 2; causal++) {
        fg_tensor *y[2], *g[2][3];
        for (int m = 0; m < 2; m++) {
            fg_attention_opts o = {.causal = causal, .dropout_p = 0.3, .generator = gen,
                                   .backend = m ? FG_ATTN_MATH : FG_ATTN_FLASH};
            fg_generator_set_state(gen, 99, 1234);
            y[m] = fg_attention(q, k, v, &o);
            ck_assert_int_eq(fg_generator_offset(gen), 1235); /* one Philox block reserved per call */
            fg_tensor *in[3] = {q, k, v};
            ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul(y[m], y[m]))), FG_OK);
            for (int i = 0; i < 3; i++) {
                g[m][i] = fg_clone(fg_grad(in[i]));
                fg_zero_grad(in[i]);
            }
        }
        ck_same_tensor(y[0], y[1], 1e-12);
        for (int i = 0; i < 3; i++) ck_same_tensor(g[0][i], g[1][i], 1e-12);
    }
    /* finite differences through both backends with a fixed mask */
    fg_generator *dg = fg_generator_new(5);
    for (int be = 1; be <= 2; be++) {
        fg_tensor *in[3] = {rand_param(gen, FG_SHAPE(1, 2, 5, 3), -1, 1), rand_param(gen, FG_SHAPE(1, 1, 6, 3), -1, 1),
                            rand_param(gen, FG_SHAPE(1, 1, 6, 3), -1, 1)};
        drop_ctx c = {.o = {.causal = be == 2, .dropout_p = 0.4, .generator = dg, .backend = (fg_attn_backend)be},
                      .seed = 3, .offset = 77};
        ck_gradcheck(attn_drop_fn, &c, 3, in);
    }
    fg_generator_free(dg);
    /* keep rate: uniform probabilities over ones give the kept fraction / (1 - p) */
    const double p = 0.25;
    fg_tensor *z = fg_zeros(FG_SHAPE(1, 2, 300, 4), FG_F64, FG_CPU), *one = fg_ones(FG_SHAPE(1, 2, 300, 4), FG_F64, FG_CPU);
    fg_attention_opts o = {.dropout_p = p, .generator = gen};
    double keep;
    read_f64(fg_mean_all(fg_attention(z, z, one, &o)), &keep, 1);
    keep *= 1 - p; /* 180000 draws: sd about 1e-3 */
    ck_assert_msg(fabs(keep - (1 - p)) < 5e-3, "keep rate %.4f, want %.4f", keep, 1 - p);
    END;
}
END_TEST

START_TEST(test_rows_without_keys)
{
    BEGIN;
    /* causal, Lq 5, Lk 2: rows 0..2 see no key (bottom-right alignment), rows 3, 4 see 1 and 2 keys */
    for (int be = 1; be <= 2; be++) {
        fg_tensor *ql, *kl, *vl;
        fg_tensor *q = rnd4(gen, 1, 2, 5, 4, false, 1.0, FG_F64, &ql), *k = rnd4(gen, 1, 2, 2, 4, false, 1.0, FG_F64, &kl),
                  *v = rnd4(gen, 1, 2, 2, 4, false, 1.0, FG_F64, &vl);
        fg_attention_opts o = {.causal = true, .backend = (fg_attn_backend)be};
        fg_tensor *lse;
        fg_tensor *out = fg_attention_lse(q, k, v, &o, &lse);
        ck_assert_msg(out != NULL, "%s", fg_last_error());
        double ov[40], lv[10], vv[16], gq[40], gk[16];
        read_f64(out, ov, 40);
        read_f64(lse, lv, 10);
        read_f64(v, vv, 16);
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < 5; i++) {
                ck_assert_msg((i < 3) == isinf(lv[h * 5 + i]), "lse[%d][%d] = %g", h, i, lv[h * 5 + i]);
                for (int d = 0; d < 4; d++) {
                    double x = ov[(h * 5 + i) * 4 + d];
                    if (i < 3) ck_assert_msg(x == 0.0, "row %d sees no key but out = %g", i, x);
                    /* row 3 sees key 0 only: out = v[0] exactly (weight 1) */
                    if (i == 3) ck_assert_msg(fabs(x - vv[(h * 2) * 4 + d]) < 1e-15, "row 3: %g", x);
                }
            }
        ck_assert_int_eq(fg_backward_with_grad(out, fg_ones(FG_SHAPE(1, 2, 5, 4), FG_F64, FG_CPU)), FG_OK);
        read_f64(fg_grad(ql), gq, 40);
        read_f64(fg_grad(kl), gk, 16);
        for (int n = 0; n < 40; n++) {
            ck_assert(isfinite(gq[n]));
            if ((n / 4) % 5 < 4) ck_assert_msg(gq[n] == 0.0, "dq of a row with <= 1 key: %g", gq[n]);
        }
        for (int n = 0; n < 16; n++) ck_assert(isfinite(gk[n]));
    }
    /* no keys at all, and no query rows */
    fg_tensor *ql, *kl, *vl;
    fg_tensor *q = rnd4(gen, 1, 1, 3, 2, false, 1.0, FG_F64, &ql), *k = rnd4(gen, 1, 1, 0, 2, false, 1.0, FG_F64, &kl),
              *v = rnd4(gen, 1, 1, 0, 2, false, 1.0, FG_F64, &vl);
    fg_tensor *out = fg_attention(q, k, v, NULL);
    double ov[6];
    read_f64(out, ov, 6);
    for (int n = 0; n < 6; n++) ck_assert(ov[n] == 0.0);
    ck_assert_int_eq(fg_backward_with_grad(out, fg_ones(FG_SHAPE(1, 1, 3, 2), FG_F64, FG_CPU)), FG_OK);
    ck_assert_int_eq(fg_numel(fg_attention(fg_narrow(q, 2, 0, 0), k, v, NULL)), 0);
    END;
}
END_TEST

START_TEST(test_large_logits)
{
    BEGIN;
    /* scores of order 1e3..1e5: the online softmax must not overflow */
    for (int causal = 0; causal < 2; causal++) {
        acase c = {1, 2, 1, 21, 18, 8, causal, false};
        fg_tensor *ql, *kl, *vl;
        fg_tensor *q = rnd4(gen, 1, 2, 21, 8, false, 1000.0, FG_F32, &ql), *k = rnd4(gen, 1, 1, 18, 8, false, 30.0, FG_F32, &kl),
                  *v = rnd4(gen, 1, 1, 18, 8, false, 1.0, FG_F32, &vl);
        fg_tensor *o[2];
        for (int m = 0; m < 2; m++) {
            fg_attention_opts op = {.causal = causal, .backend = m ? FG_ATTN_MATH : FG_ATTN_FLASH};
            o[m] = fg_attention(q, k, v, &op);
            ck_assert_int_eq(fg_backward_with_grad(o[m], fg_ones(FG_SHAPE(1, 2, 21, 8), FG_F32, FG_CPU)), FG_OK);
            double gv[1000];
            read_f64(fg_grad(ql), gv, fg_numel(ql));
            for (int64_t n = 0; n < fg_numel(ql); n++) ck_assert_msg(isfinite(gv[n]), "dq[%lld] = %g", (long long)n, gv[n]);
            fg_zero_grad(ql), fg_zero_grad(kl), fg_zero_grad(vl);
        }
        ck_attn_close(o[0], o[1], 1e-5, 1e-5, "large logits out", &c);
    }
    END;
}
END_TEST

START_TEST(test_scale_and_defaults)
{
    BEGIN;
    fg_tensor *ql, *kl, *vl;
    fg_tensor *q = rnd4(gen, 1, 2, 6, 16, false, 1.0, FG_F64, &ql), *k = rnd4(gen, 1, 2, 6, 16, false, 1.0, FG_F64, &kl),
              *v = rnd4(gen, 1, 2, 6, 16, false, 1.0, FG_F64, &vl);
    /* NULL opts = non-causal, scale 1/sqrt(16) = 0.25; scale s on q == scale 1 on s q */
    fg_attention_opts quarter = {.scale = 0.25}, one = {.scale = 1.0};
    ck_same_tensor(fg_attention(q, k, v, NULL), fg_attention(q, k, v, &quarter), 0.0);
    ck_same_tensor(fg_attention(q, k, v, &quarter), fg_attention(fg_mul_scalar(q, 0.25), k, v, &one), 1e-14);
    /* one key: the output is v (softmax of one score is 1) */
    fg_tensor *k1 = fg_narrow(k, 2, 0, 1), *v1 = fg_narrow(v, 2, 0, 1);
    ck_same_tensor(fg_attention(q, k1, v1, NULL), fg_expand(v1, FG_SHAPE(1, 2, 6, 16)), 1e-15);
    END;
}
END_TEST

START_TEST(test_errors)
{
    BEGIN;
    fg_tensor *q = fg_zeros(FG_SHAPE(1, 4, 5, 8), FG_F32, FG_CPU), *k = fg_zeros(FG_SHAPE(1, 2, 6, 8), FG_F32, FG_CPU);
    fg_tensor *k3 = fg_zeros(FG_SHAPE(1, 3, 6, 8), FG_F32, FG_CPU);
    ck_assert_ptr_null(fg_attention(NULL, k, k, NULL));
    ck_err(FG_ERR_NULL, "attention", "q");
    ck_assert_ptr_null(fg_attention(q, k3, k3, NULL));
    ck_err(FG_ERR_SHAPE, "attention", "(1, 3, 6, 8)");
    ck_assert_ptr_null(fg_attention(q, k, fg_zeros(FG_SHAPE(1, 2, 7, 8), FG_F32, FG_CPU), NULL));
    ck_err(FG_ERR_SHAPE, "attention", "(1, 2, 7, 8)");
    ck_assert_ptr_null(fg_attention(q, fg_zeros(FG_SHAPE(1, 2, 6, 4), FG_F32, FG_CPU), fg_zeros(FG_SHAPE(1, 2, 6, 4), FG_F32, FG_CPU), NULL));
    ck_err(FG_ERR_SHAPE, "attention", NULL);
    ck_assert_ptr_null(fg_attention(fg_zeros(FG_SHAPE(4, 5, 8), FG_F32, FG_CPU), k, k, NULL));
    ck_err(FG_ERR_DIM, "attention", "(4, 5, 8)");
    ck_assert_ptr_null(fg_attention(q, fg_to(k, FG_CPU, FG_F64), k, NULL));
    ck_assert(fg_last_status() == FG_ERR_DTYPE);
    fg_attention_opts o = {.dropout_p = 1.0};
    ck_assert_ptr_null(fg_attention(q, k, k, &o));
    ck_err(FG_ERR_INVALID, "dropout_p", NULL);
    o = (fg_attention_opts){.dropout_p = 1.5};
    ck_assert_ptr_null(fg_attention(q, k, k, &o));
    ck_err(FG_ERR_INVALID, "dropout_p", NULL);
    o = (fg_attention_opts){.scale = NAN};
    ck_assert_ptr_null(fg_attention(q, k, k, &o));
    ck_err(FG_ERR_INVALID, "scale", NULL);
    o = (fg_attention_opts){.backend = (fg_attn_backend)7};
    ck_assert_ptr_null(fg_attention(q, k, k, &o));
    ck_err(FG_ERR_INVALID, "backend", NULL);
    ck_assert_ptr_null(fg_attention(fg_zeros(FG_SHAPE(1, 4, 5, 8), FG_I32, FG_CPU), k, k, NULL));
    END;
}
END_TEST

static Suite *attention_suite(void)
{
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("attention");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_flash_matches_math_f64);
    tcase_add_test(tc, test_flash_matches_math_f32_bf16);
    tcase_add_test(tc, test_gradcheck_both_backends);
    tcase_add_test(tc, test_rows_without_keys);
    tcase_add_test(tc, test_dropout);
    tcase_add_test(tc, test_large_logits);
    tcase_add_test(tc, test_scale_and_defaults);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    return s;
}

FG_TEST_MAIN(attention_suite)
