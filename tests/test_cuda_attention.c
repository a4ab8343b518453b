/* GPU suite: the CUDA flash-attention kernels against the CPU flash backend in
 * f64 (itself checked against the math backend and finite differences in
 * test_attention.c): forward, LSE and all three gradients over a grid of
 * shapes, dtypes and layouts; dropout (CPU == GPU mask); deterministic mode;
 * large logits; the keep rate; varlen with key padding. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <flashgrad.h>
#include <flashgrad/attention.h>
#include <flashgrad/cuda.h>
#include "cudatest.h"

static fg_tensor *rnd(fg_generator *g, int ndim, const int64_t *shape, double scale)
{
    fg_tensor *t = fg_randn(g, ndim, shape, FG_F64, FG_CPU);
    ck_assert_ptr_nonnull(t);
    return scale != 1.0 ? fg_mul_scalar(t, scale) : t;
}

/* ||a - ref|| / ||ref|| <= tol (ref nonzero), and no NaN or infinity where ref
 * has none (fg_compare's L2 covers finite pairs only; a non-finite one is a
 * mismatch past any finite atol). */
static void ck_rel(const fg_tensor *a, const fg_tensor *ref, double tol, const char *what, int c)
{
    ck_assert_msg(a != NULL, "%s (case %d): NULL: %s", what, c, fg_last_error());
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(a, ref, DBL_MAX, 0, &r), FG_OK);
    ck_assert_msg(r.n_mismatch == 0, "%s (case %d): %lld non-finite values where the reference is finite (at %lld)",
                  what, c, (long long)r.n_mismatch, (long long)r.worst_index);
    ck_assert_msg(r.rel_l2_err <= tol, "%s (case %d): rel l2 err %.3g > %g (max abs %.3g at %lld)", what, c,
                  r.rel_l2_err, tol, r.max_abs_err, (long long)r.worst_index);
}

/* x as dtype dt, seen as (B, H, L, D) (blhd: stored (B, L, H, D) and transposed). */
static fg_tensor *as_layout(fg_tensor *x, fg_dtype dt, fg_device dev, bool blhd)
{
    fg_tensor *y = blhd ? fg_contiguous(fg_transpose(x, 1, 2)) : x;
    y = fg_to(y, dev, dt);
    return blhd ? fg_transpose(y, 1, 2) : y;
}

typedef struct {
    int64_t B, Hq, Hkv, Lq, Lk, D;
    int causal, blhd;
} shape_case;

static const shape_case CASES[] = {
    {1, 1, 1, 1, 1, 1, 0, 0},     {2, 4, 2, 13, 13, 8, 1, 0},   {1, 12, 4, 19, 23, 16, 0, 1},
    {1, 4, 1, 17, 5, 32, 1, 0},   {2, 2, 2, 1, 37, 64, 1, 1},   {1, 8, 1, 70, 130, 64, 1, 0},
    {1, 2, 2, 129, 67, 128, 0, 0}, {1, 2, 1, 65, 200, 128, 1, 1}, {1, 2, 2, 33, 47, 256, 1, 0},
    {1, 3, 3, 50, 50, 3, 0, 1},   {1, 2, 2, 40, 31, 80, 1, 0},  {1, 2, 2, 20, 20, 130, 0, 0},
    {2, 4, 4, 300, 300, 64, 1, 0}, {1, 2, 2, 257, 513, 128, 0, 0}, {1, 4, 2, 450, 700, 64, 0, 1},
};

/* tolerances on the relative l2 error: f32 runs 3xTF32 (near f32); bf16/f16
 * inputs, probabilities and dS are rounded to 8 / 11 bits */
static double tol_of(fg_dtype dt) { return dt == FG_F32 ? 2e-5 : dt == FG_F16 ? 4e-3 : 2.5e-2; }

static void run_case(fg_generator *gen, const shape_case *s, fg_dtype dt, bool det, double drop, int ci)
{
    fg_tensor *q = rnd(gen, FG_SHAPE(s->B, s->Hq, s->Lq, s->D), 1.0);
    fg_tensor *k = rnd(gen, FG_SHAPE(s->B, s->Hkv, s->Lk, s->D), 1.0);
    fg_tensor *v = rnd(gen, FG_SHAPE(s->B, s->Hkv, s->Lk, s->D), 1.0);
    fg_tensor *go = rnd(gen, FG_SHAPE(s->B, s->Hq, s->Lq, s->D), 1.0);
    /* the reference sees the same rounded values */
    fg_tensor *qr = fg_to(fg_to(q, FG_CPU, dt), FG_CPU, FG_F64), *kr = fg_to(fg_to(k, FG_CPU, dt), FG_CPU, FG_F64),
              *vr = fg_to(fg_to(v, FG_CPU, dt), FG_CPU, FG_F64), *gr = fg_to(fg_to(go, FG_CPU, dt), FG_CPU, FG_F64);
    fg_set_requires_grad(qr, true), fg_set_requires_grad(kr, true), fg_set_requires_grad(vr, true);
    fg_tensor *qd = as_layout(qr, dt, FG_CUDA, s->blhd), *kd = as_layout(kr, dt, FG_CUDA, s->blhd),
              *vd = as_layout(vr, dt, FG_CUDA, s->blhd);
    ck_assert_msg(qd && kd && vd, "inputs: %s", fg_last_error());
    qd = fg_detach(qd), kd = fg_detach(kd), vd = fg_detach(vd);
    fg_set_requires_grad(qd, true), fg_set_requires_grad(kd, true), fg_set_requires_grad(vd, true);

    fg_generator *g1 = fg_generator_new(7), *g2 = fg_generator_new(7);
    fg_attention_opts o = {.causal = s->causal, .backend = FG_ATTN_FLASH, .deterministic = det, .dropout_p = drop,
                           .generator = g1};
    fg_tensor *lr, *ld;
    fg_tensor *yr = fg_attention_lse(qr, kr, vr, &o, &lr);
    o.generator = g2;
    fg_tensor *yd = fg_attention_lse(qd, kd, vd, &o, &ld);
    fg_generator_free(g1), fg_generator_free(g2);
    ck_assert_msg(yr && yd, "forward (case %d, %s): %s", ci, fg_dtype_name(dt), fg_last_error());
    const double tol = tol_of(dt);
    ck_rel(yd, yr, tol, "out", ci);
    /* LSE: fp32 in every dtype; its error is that of the scores */
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(ld, lr, dt == FG_F32 ? 1e-4 : 5e-2, dt == FG_F32 ? 1e-5 : 1e-2, &r), FG_OK);
    ck_assert_msg(r.allclose, "lse (case %d, %s): max abs err %.3g", ci, fg_dtype_name(dt), r.max_abs_err);
    ck_assert_int_eq(fg_backward_with_grad(yr, gr), FG_OK);
    ck_assert_msg(fg_backward_with_grad(yd, fg_to(gr, FG_CUDA, dt)) == FG_OK, "backward (case %d): %s", ci,
                  fg_last_error());
    ck_assert_msg(fg_cuda_synchronize() == FG_OK, "sync (case %d): %s", ci, fg_last_error());
    ck_rel(fg_grad(qd), fg_grad(qr), 2 * tol, "dq", ci);
    ck_rel(fg_grad(kd), fg_grad(kr), 2 * tol, "dk", ci);
    ck_rel(fg_grad(vd), fg_grad(vr), 2 * tol, "dv", ci);
}

START_TEST(test_flash_grid)
{
    BEGIN;
    static const fg_dtype dts[] = {FG_F32, FG_BF16, FG_F16};
    for (size_t d = 0; d < 3; d++)
        for (size_t c = 0; c < sizeof CASES / sizeof *CASES; c++) {
            fg_scope *sc = fg_scope_begin();
            run_case(gen, &CASES[c], dts[d], (c + d) % 2 == 0, 0.0, (int)c);
            fg_scope_end(sc);
        }
    END;
}
END_TEST

/* The GPU regenerates the CPU's mask: with f32 a different mask would be far
 * outside the tolerance (10% of the terms change). */
START_TEST(test_flash_dropout)
{
    BEGIN;
    for (size_t c = 1; c < sizeof CASES / sizeof *CASES; c += 2) {
        fg_scope *sc = fg_scope_begin();
        run_case(gen, &CASES[c], FG_F32, c % 4 == 1, 0.17, (int)c);
        run_case(gen, &CASES[c], FG_BF16, false, 0.1, (int)c);
        fg_scope_end(sc);
    }
    /* keep rate: q = 0 gives p_ij = 1 / Lk, v = 1 gives o_i = mean_j z_ij */
    const int64_t B = 2, H = 4, L = 1024, D = 64;
    const double p = 0.1;
    fg_tensor *q = fg_zeros(FG_SHAPE(B, H, L, D), FG_BF16, FG_CUDA), *v = fg_ones(FG_SHAPE(B, H, L, D), FG_BF16, FG_CUDA);
    fg_attention_opts o = {.dropout_p = p, .generator = gen};
    fg_tensor *y = fg_attention(q, q, v, &o);
    fg_tensor *m = fg_mean_all(fg_to(y, FG_CPU, FG_F64));
    double keep;
    read_f64(m, &keep, 1);
    keep *= 1 - p;
    /* 8M Bernoulli draws: sd of the rate about 1e-4 */
    ck_assert_msg(fabs(keep - (1 - p)) < 1e-3, "keep rate %.5f, want %.5f", keep, 1 - p);
    /* two calls draw different masks */
    fg_tensor *y2 = fg_attention(q, q, v, &o);
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(y2, y, 0, 0, &r), FG_OK);
    ck_assert_msg(r.n_mismatch > 0, "two dropout calls gave the same output");
    END;
}
END_TEST

START_TEST(test_flash_deterministic)
{
    BEGIN;
    const int64_t B = 2, Hq = 8, Hkv = 2, L = 333, D = 128;
    fg_tensor *q = fg_to(rnd(gen, FG_SHAPE(B, Hq, L, D), 1.0), FG_CUDA, FG_BF16);
    fg_tensor *k = fg_to(rnd(gen, FG_SHAPE(B, Hkv, L, D), 1.0), FG_CUDA, FG_BF16);
    fg_tensor *v = fg_to(rnd(gen, FG_SHAPE(B, Hkv, L, D), 1.0), FG_CUDA, FG_BF16);
    fg_tensor *g = fg_to(rnd(gen, FG_SHAPE(B, Hq, L, D), 1.0), FG_CUDA, FG_BF16);
    fg_tensor *grads[2][3];
    for (int run = 0; run < 2; run++) {
        fg_tensor *in[3] = {fg_detach(q), fg_detach(k), fg_detach(v)};
        for (int i = 0; i < 3; i++) fg_set_requires_grad(in[i], true);
        fg_attention_opts o = {.causal = true, .deterministic = true, .dropout_p = 0.1, .generator = gen};
        fg_generator_set_state(gen, 11, 5);
        ck_assert_int_eq(fg_backward_with_grad(fg_attention(in[0], in[1], in[2], &o), g), FG_OK);
        for (int i = 0; i < 3; i++) grads[run][i] = fg_grad(in[i]);
    }
    fg_compare_result r;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(fg_compare(grads[0][i], grads[1][i], 0, 0, &r), FG_OK);
        ck_assert_msg(r.n_mismatch == 0, "deterministic grad %d differs run to run (%lld elements)", i,
                      (long long)r.n_mismatch);
    }
    END;
}
END_TEST

/* Logits scaled x1000: finite results matching the f64 reference (f32 scores
 * carry about 1e-3 absolute error at that size, hence the tolerance). */
START_TEST(test_flash_large_logits)
{
    BEGIN;
    const int64_t B = 1, H = 2, L = 77, D = 64;
    fg_tensor *q = fg_to(rnd(gen, FG_SHAPE(B, H, L, D), 1.0), FG_CPU, FG_F32);
    fg_tensor *k = fg_to(rnd(gen, FG_SHAPE(B, H, L, D), 1.0), FG_CPU, FG_F32);
    fg_tensor *v = fg_to(rnd(gen, FG_SHAPE(B, H, L, D), 1.0), FG_CPU, FG_F32);
    fg_attention_opts o = {.causal = true, .scale = 1000.0 / 8.0, .backend = FG_ATTN_FLASH};
    fg_tensor *yr = fg_attention(fg_to(q, FG_CPU, FG_F64), fg_to(k, FG_CPU, FG_F64), fg_to(v, FG_CPU, FG_F64), &o);
    fg_tensor *yd = fg_attention(fg_to(q, FG_CUDA, FG_F32), fg_to(k, FG_CUDA, FG_F32), fg_to(v, FG_CUDA, FG_F32), &o);
    ck_rel(yd, yr, 5e-3, "large logits out", 0);
    fg_tensor *yb = fg_attention(fg_to(q, FG_CUDA, FG_BF16), fg_to(k, FG_CUDA, FG_BF16), fg_to(v, FG_CUDA, FG_BF16), &o);
    double *hv = malloc(sizeof(double) * (size_t)(B * H * L * D));
    read_f64(yb, hv, B * H * L * D);
    for (int64_t i = 0; i < B * H * L * D; i++) ck_assert_msg(isfinite(hv[i]), "bf16 large logits: non-finite at %lld", (long long)i);
    free(hv);
    END;
}
END_TEST

/* varlen + key padding on the GPU against the CPU flash backend in f64 on the
 * same rounded values: sequences of every kind (empty, one row, several
 * tiles, keys cut by key_lengths to 0, 1 or a few), padded keys holding NaN
 * (never read: a read would spread NaN), the sequence tables on the GPU. */
static void run_varlen(fg_generator *gen, int64_t D, fg_dtype dt, bool causal, bool det, double drop, int ci)
{
    enum { N = 6 };
    const int64_t lq[N] = {0, 100, 1, 257, 64, 33}, nk[N] = {5, 130, 0, 300, 64, 20}, kl[N] = {5, 77, 0, 300, 1, 0};
    const int64_t Hq = 4, Hkv = 2;
    double cq[N + 1] = {0}, ckk[N + 1] = {0}, kld[N];
    for (int b = 0; b < N; b++) cq[b + 1] = cq[b] + (double)lq[b], ckk[b + 1] = ckk[b] + (double)nk[b], kld[b] = (double)kl[b];
    const int64_t tq = (int64_t)cq[N], tk = (int64_t)ckk[N];
    fg_tensor *q = fg_to(fg_to(rnd(gen, FG_SHAPE(tq, Hq, D), 1.0), FG_CPU, dt), FG_CPU, FG_F64);
    fg_tensor *go = fg_to(fg_to(rnd(gen, FG_SHAPE(tq, Hq, D), 1.0), FG_CPU, dt), FG_CPU, FG_F64);
    fg_tensor *kv[2];
    for (int t = 0; t < 2; t++) { /* NaN in the padded keys */
        double *h = malloc(sizeof(double) * (size_t)(tk * Hkv * D));
        read_f64(fg_to(fg_to(rnd(gen, FG_SHAPE(tk, Hkv, D), 1.0), FG_CPU, dt), FG_CPU, FG_F64), h, tk * Hkv * D);
        for (int b = 0; b < N; b++)
            for (int64_t j = kl[b]; j < nk[b]; j++)
                for (int64_t x = 0; x < Hkv * D; x++) h[((int64_t)ckk[b] + j) * Hkv * D + x] = NAN;
        kv[t] = fg_from_f64(h, FG_SHAPE(tk, Hkv, D), FG_F64, FG_CPU);
        free(h);
    }
    fg_tensor *in[2][3] = {{q, kv[0], kv[1]}, {fg_to(q, FG_CUDA, dt), fg_to(kv[0], FG_CUDA, dt), fg_to(kv[1], FG_CUDA, dt)}};
    fg_tensor *y[2], *l[2];
    for (int m = 0; m < 2; m++) {
        const fg_device dev = m ? FG_CUDA : FG_CPU;
        for (int i = 0; i < 3; i++) fg_set_requires_grad(in[m][i], true);
        fg_generator *g = fg_generator_new(3);
        fg_attention_opts o = {.causal = causal, .backend = FG_ATTN_FLASH, .deterministic = det, .dropout_p = drop,
                               .generator = g,
                               .cu_seqlens_q = fg_from_f64(cq, FG_SHAPE(N + 1), FG_I32, dev),
                               .cu_seqlens_k = fg_from_f64(ckk, FG_SHAPE(N + 1), FG_I32, dev),
                               .key_lengths = fg_from_f64(kld, FG_SHAPE(N), FG_I64, dev)};
        y[m] = fg_attention_lse(in[m][0], in[m][1], in[m][2], &o, &l[m]);
        fg_generator_free(g);
        ck_assert_msg(y[m] != NULL, "varlen forward (%s, %s): %s", m ? "cuda" : "cpu", fg_dtype_name(dt), fg_last_error());
        ck_assert_msg(fg_backward_with_grad(y[m], m ? fg_to(go, FG_CUDA, dt) : go) == FG_OK, "varlen backward: %s",
                      fg_last_error());
    }
    ck_assert_msg(fg_cuda_synchronize() == FG_OK, "sync: %s", fg_last_error());
    const double tol = tol_of(dt);
    ck_rel(y[1], y[0], tol, "varlen out", ci);
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(l[1], l[0], dt == FG_F32 ? 1e-4 : 5e-2, dt == FG_F32 ? 1e-5 : 1e-2, &r), FG_OK);
    ck_assert_msg(r.allclose, "varlen lse (case %d, %s): max abs err %.3g", ci, fg_dtype_name(dt), r.max_abs_err);
    static const char *names[3] = {"varlen dq", "varlen dk", "varlen dv"};
    for (int i = 0; i < 3; i++) {
        ck_rel(fg_grad(in[1][i]), fg_grad(in[0][i]), 2 * tol, names[i], ci);
        if (i == 0) continue;
        fg_compare_result z; /* padded keys: exactly zero */
        fg_tensor *gd = fg_to(fg_grad(in[1][i]), FG_CPU, FG_F64);
        for (int b = 0; b < N; b++) {
            fg_tensor *pad = fg_narrow(gd, 0, (int64_t)ckk[b] + kl[b], nk[b] - kl[b]);
            ck_assert_int_eq(fg_compare(pad, fg_zeros_like(pad), 0, 0, &z), FG_OK);
            ck_assert_msg(z.n_mismatch == 0, "%s of padded keys of sequence %d not zero", names[i], b);
        }
    }
}

START_TEST(test_flash_varlen)
{
    BEGIN;
    static const int64_t dims[] = {64, 128, 40};
    int ci = 0;
    for (int d = 0; d < 3; d++)
        for (int causal = 0; causal < 2; causal++) {
            fg_scope *sc = fg_scope_begin();
            run_varlen(gen, dims[d], FG_F32, causal, (ci & 1) != 0, ci == 3 ? 0.2 : 0.0, ci);
            run_varlen(gen, dims[d], FG_BF16, causal, (ci & 2) != 0, 0.0, ci);
            fg_scope_end(sc);
            ci++;
        }
    END;
}
END_TEST

static Suite *mk(void)
{
    Suite *s = suite_create("cuda_attention");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_flash_grid);
    tcase_add_test(tc, test_flash_dropout);
    tcase_add_test(tc, test_flash_deterministic);
    tcase_add_test(tc, test_flash_large_logits);
    tcase_add_test(tc, test_flash_varlen);
    suite_add_tcase(s, tc);
    return s;
}

FG_CUDA_TEST_MAIN(mk, "cuda_attention")
