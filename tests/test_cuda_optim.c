/* Suite "cuda_optim": the fused multi-tensor optimizer kernels and gradient
 * clipping on CUDA against the CPU reference (src/cpu/optim.c). Each case
 * builds the same f32 parameters on the CPU and on the GPU (tensors of odd
 * sizes: empty, 1 element, 4k+1, exactly one 32K-element chunk, one chunk + 1,
 * several chunks, and an unaligned start), gives both the same gradients,
 * steps both, and compares parameters and state.
 *
 * Tolerances: both sides start from the same f32 values and apply the same
 * f32-rounded scalars; the GPU computes in float (fmaf, IEEE sqrt and
 * division), the CPU in double, and both round each stored value to f32, so
 * a step differs by an ulp or two of the stored values: rtol 2e-6 (16 ulps)
 * plus atol 1e-6 max|ref| for elements near zero (cancellation in m). The
 * norm is summed in double on both sides, in different orders (positive
 * terms: at most ~n ulps apart, in practice ~sqrt(n)): 1e-11. */
#include <stdio.h>
#include "cudatest.h"

static bool quick(void) { return getenv("FG_TEST_QUICK") != NULL; }

enum { MAX_T = 12 };

typedef struct {
    int n;
    fg_params *cpu, *dev;
    fg_tensor *pc[MAX_T], *pd[MAX_T];
} pairs;

static double max_abs(const fg_tensor *t)
{
    int64_t n = fg_numel(t);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(fg_to_f64_array(t, v, n), FG_OK);
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fabs(v[i]) > m ? fabs(v[i]) : m;
    free(v);
    return m;
}

static void ck_close_rel(const fg_tensor *got, const fg_tensor *ref, double rtol, const char *what)
{
    double m = max_abs(ref);
    ck_matches(got, ref, 1e-6 * (m > 0 ? m : 1.0), rtol, what);
}

/* Parameters of the shapes below, the same f32 values on both devices;
 * every other one decays. One of them is a view starting at element 1 of a
 * larger buffer (4-byte aligned, not 16: the kernels' scalar path). */
static void make_pairs(pairs *P, fg_generator *gen)
{
    static const int64_t sizes[] = {0, 1, 3, 4, 5, 17, 1000, 4097, 32768, 32769, 100003};
    const int n = quick() ? 8 : (int)(sizeof sizes / sizeof sizes[0]);
    P->cpu = fg_params_new();
    P->dev = fg_params_new();
    P->n = 0;
    for (int i = 0; i <= n; i++) {
        fg_tensor *c;
        if (i < n) {
            c = fg_uniform(gen, -1, 1, FG_SHAPE(sizes[i]), FG_F32, FG_CPU);
        } else { /* (37, 29), its device copy made from an offset view */
            c = fg_uniform(gen, -1, 1, FG_SHAPE(37, 29), FG_F32, FG_CPU);
        }
        fg_tensor *d;
        if (i < n) {
            d = fg_to(c, FG_CUDA, FG_F32);
        } else {
            fg_tensor *big = fg_zeros(FG_SHAPE(37 * 29 + 1), FG_F32, FG_CUDA);
            fg_tensor *v = fg_narrow(big, 0, 1, 37 * 29);
            ck_assert_int_eq(fg_copy_(v, fg_flatten(c)), FG_OK);
            d = fg_view(v, FG_SHAPE(37, 29));
        }
        ck_assert_ptr_nonnull(d);
        ck_assert_int_eq(fg_set_requires_grad(c, true), FG_OK);
        ck_assert_int_eq(fg_set_requires_grad(d, true), FG_OK);
        char nm[16];
        snprintf(nm, sizeof nm, "t%d", i);
        ck_assert_int_eq(fg_params_add(P->cpu, nm, c, i % 2 == 0), FG_OK);
        ck_assert_int_eq(fg_params_add(P->dev, nm, d, i % 2 == 0), FG_OK);
        P->pc[P->n] = c;
        P->pd[P->n] = d;
        P->n++;
    }
}

static void free_pairs(pairs *P)
{
    fg_params_free(P->cpu);
    fg_params_free(P->dev);
}

/* The same random gradient on both sides (scaled per tensor, 1e-3 .. 10);
 * with skip >= 0, tensor `skip` has none this step. */
static void set_grads(pairs *P, fg_generator *gen, int skip)
{
    for (int i = 0; i < P->n; i++) {
        if (i == skip) {
            fg_clear_grad(P->pc[i]);
            fg_clear_grad(P->pd[i]);
            continue;
        }
        const double scale = pow(10.0, (i % 5) - 3);
        fg_tensor *g = fg_uniform(gen, -scale, scale, fg_ndim(P->pc[i]), fg_shape(P->pc[i]), FG_F32, FG_CPU);
        fg_tensor *gd = fg_to(g, FG_CUDA, FG_F32);
        if (fg_grad(P->pc[i])) fg_zero_grad(P->pc[i]);
        if (fg_grad(P->pd[i])) fg_zero_grad(P->pd[i]);
        ck_assert_int_eq(fg_backward_with_grad(P->pc[i], g), FG_OK);
        ck_assert_msg(fg_backward_with_grad(P->pd[i], gd) == FG_OK, "%s", fg_last_error());
    }
}

static void compare_all(pairs *P, fg_optimizer *oc, fg_optimizer *od, const char *what, int step)
{
    char buf[96];
    for (int i = 0; i < P->n; i++) {
        snprintf(buf, sizeof buf, "%s step %d param t%d", what, step, i);
        ck_close_rel(P->pd[i], P->pc[i], 2e-6, buf);
    }
    fg_params *sc = fg_params_new(), *sd = fg_params_new();
    ck_assert_int_eq(fg_optimizer_state(oc, sc), FG_OK);
    ck_assert_int_eq(fg_optimizer_state(od, sd), FG_OK);
    ck_assert_int_eq(fg_params_count(sc), fg_params_count(sd));
    for (int64_t k = 0; k < fg_params_count(sc); k++) {
        const fg_param *c = fg_params_at(sc, k), *d = fg_params_at(sd, k);
        ck_assert_str_eq(c->name, d->name);
        ck_assert_int_eq(fg_device_of(d->t), FG_CUDA);
        snprintf(buf, sizeof buf, "%s step %d %s", what, step, c->name);
        ck_close_rel(d->t, c->t, 2e-6, buf);
    }
    fg_params_free(sc);
    fg_params_free(sd);
}

START_TEST(adamw_matches_cpu)
{
    BEGIN;
    pairs P;
    make_pairs(&P, gen);
    fg_adamw_opts o = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    fg_optimizer *oc = fg_adamw_new(P.cpu, &o), *od = fg_adamw_new(P.dev, &o);
    ck_assert_ptr_nonnull(oc);
    ck_assert_msg(od != NULL, "%s", fg_last_error());
    for (int step = 1; step <= 6; step++) {
        fg_scope *s = fg_scope_begin();
        const double lr = fg_lr_warmup_cosine(step - 1, 1e-2, 1e-3, 2, 6);
        ck_assert_int_eq(fg_optimizer_set_lr(oc, lr), FG_OK);
        ck_assert_int_eq(fg_optimizer_set_lr(od, lr), FG_OK);
        set_grads(&P, gen, step == 3 ? 5 : -1); /* a skipped tensor: the table changes and back */
        ck_assert_int_eq(fg_optimizer_step(oc), FG_OK);
        ck_assert_msg(fg_optimizer_step(od) == FG_OK, "%s", fg_last_error());
        compare_all(&P, oc, od, "adamw", step);
        ck_assert_int_eq(fg_scope_end(s), FG_OK);
    }
    fg_optimizer_free(oc);
    fg_optimizer_free(od);
    free_pairs(&P);
    END;
}
END_TEST

START_TEST(sgd_matches_cpu)
{
    BEGIN;
    const fg_sgd_opts cases[3] = {
        {.lr = 0.05},
        {.lr = 0.05, .momentum = 0.9, .weight_decay = 0.01},
        {.lr = 0.05, .momentum = 0.8, .nesterov = true, .weight_decay = 0.1, .decay_all = true},
    };
    for (int c = 0; c < 3; c++) {
        pairs P;
        make_pairs(&P, gen);
        fg_optimizer *oc = fg_sgd_new(P.cpu, &cases[c]), *od = fg_sgd_new(P.dev, &cases[c]);
        ck_assert_msg(oc && od, "%s", fg_last_error());
        for (int step = 1; step <= 4; step++) {
            fg_scope *s = fg_scope_begin();
            set_grads(&P, gen, step == 2 ? 1 : -1);
            ck_assert_int_eq(fg_optimizer_step(oc), FG_OK);
            ck_assert_msg(fg_optimizer_step(od) == FG_OK, "%s", fg_last_error());
            compare_all(&P, oc, od, c == 0 ? "sgd" : c == 1 ? "sgd momentum" : "sgd nesterov", step);
            ck_assert_int_eq(fg_scope_end(s), FG_OK);
        }
        fg_optimizer_free(oc);
        fg_optimizer_free(od);
        free_pairs(&P);
    }
    END;
}
END_TEST

/* After the first step the chunk table is on the device: a step with
 * gradients already there neither waits for the GPU nor copies anything. */
START_TEST(step_does_not_sync)
{
    BEGIN;
    pairs P;
    make_pairs(&P, gen);
    fg_optimizer *od = fg_adamw_new(P.dev, NULL);
    set_grads(&P, gen, -1);
    ck_assert_int_eq(fg_optimizer_step(od), FG_OK);
    fg_cuda_memory_stats m0, m1;
    ck_assert_int_eq(fg_cuda_get_memory_stats(&m0), FG_OK);
    for (int k = 0; k < 5; k++) ck_assert_int_eq(fg_optimizer_step(od), FG_OK);
    ck_assert_int_eq(fg_optimizer_zero_grad(od), FG_OK);
    ck_assert_int_eq(fg_optimizer_step(od), FG_OK);
    ck_assert_int_eq(fg_cuda_get_memory_stats(&m1), FG_OK);
    ck_assert_int_eq(m1.n_host_syncs, m0.n_host_syncs);
    ck_assert_int_eq(m1.n_cuda_malloc, m0.n_cuda_malloc);
    ck_assert_int_eq(fg_cuda_synchronize(), FG_OK);
    fg_optimizer_free(od);
    free_pairs(&P);
    END;
}
END_TEST

/* One optimizer over CPU and CUDA parameters == the same on the CPU alone. */
START_TEST(mixed_devices)
{
    BEGIN;
    fg_params *rc = fg_params_new(), *rm = fg_params_new();
    fg_tensor *pc[2], *pm[2];
    for (int i = 0; i < 2; i++) {
        pc[i] = fg_uniform(gen, -1, 1, FG_SHAPE(i ? 7 : 300), FG_F32, FG_CPU);
        pm[i] = i ? fg_clone(pc[i]) : fg_to(pc[i], FG_CUDA, FG_F32);
        fg_set_requires_grad(pc[i], true), fg_set_requires_grad(pm[i], true);
        fg_params_add(rc, i ? "b" : "w", pc[i], !i), fg_params_add(rm, i ? "b" : "w", pm[i], !i);
    }
    fg_optimizer *oc = fg_adamw_new(rc, NULL), *om = fg_adamw_new(rm, NULL);
    for (int step = 0; step < 3; step++) {
        fg_scope *s = fg_scope_begin();
        for (int i = 0; i < 2; i++) {
            fg_tensor *g = fg_randn(gen, FG_SHAPE(i ? 7 : 300), FG_F32, FG_CPU);
            fg_zero_grad(pc[i]), fg_zero_grad(pm[i]);
            ck_assert_int_eq(fg_backward_with_grad(pc[i], g), FG_OK);
            ck_assert_int_eq(fg_backward_with_grad(pm[i], fg_to(g, fg_device_of(pm[i]), FG_F32)), FG_OK);
        }
        double nc, nm;
        ck_assert_int_eq(fg_clip_grad_norm(rc, 5.0, &nc), FG_OK);
        ck_assert_int_eq(fg_clip_grad_norm(rm, 5.0, &nm), FG_OK);
        ck_close(nm, nc, 1e-11 * nc);
        ck_assert_int_eq(fg_optimizer_step(oc), FG_OK);
        ck_assert_int_eq(fg_optimizer_step(om), FG_OK);
        for (int i = 0; i < 2; i++) ck_close_rel(pm[i], pc[i], 2e-6, i ? "mixed b (cpu)" : "mixed w (cuda)");
        ck_assert_int_eq(fg_scope_end(s), FG_OK);
    }
    fg_optimizer_free(oc), fg_optimizer_free(om);
    fg_params_free(rc), fg_params_free(rm);
    END;
}
END_TEST

START_TEST(clip_matches_cpu)
{
    BEGIN;
    pairs P;
    make_pairs(&P, gen);
    set_grads(&P, gen, 2);
    double nc = 0, nd = 0;
    /* measure only, then clip hard, then a no-op above the (new) norm */
    ck_assert_int_eq(fg_clip_grad_norm(P.cpu, INFINITY, &nc), FG_OK);
    ck_assert_msg(fg_clip_grad_norm(P.dev, INFINITY, &nd) == FG_OK, "%s", fg_last_error());
    ck_close(nd, nc, 1e-11 * nc);
    ck_assert(nc > 1.0);
    const double maxes[3] = {0.5, 0.25, 1e3};
    for (int k = 0; k < 3; k++) {
        fg_cuda_memory_stats m0, m1;
        ck_assert_int_eq(fg_cuda_get_memory_stats(&m0), FG_OK);
        ck_assert_int_eq(fg_clip_grad_norm(P.cpu, maxes[k], &nc), FG_OK);
        ck_assert_int_eq(fg_clip_grad_norm(P.dev, maxes[k], &nd), FG_OK);
        ck_assert_int_eq(fg_cuda_get_memory_stats(&m1), FG_OK);
        ck_assert_int_eq(m1.n_host_syncs - m0.n_host_syncs, 1); /* reading the norm; the table is cached */
        ck_close(nd, nc, 1e-11 * nc);
        for (int i = 0; i < P.n; i++) {
            if (!fg_grad(P.pc[i])) continue;
            char buf[64];
            snprintf(buf, sizeof buf, "clip %g grad t%d", maxes[k], i);
            ck_close_rel(fg_grad(P.pd[i]), fg_grad(P.pc[i]), 1e-6, buf);
        }
    }
    ck_close(nc, 0.25, 1e-6); /* the last call measured the clipped gradients */
    /* a NaN on the device: reported, nothing scaled */
    fg_tensor *g5 = fg_grad(P.pd[5]);
    fg_tensor *before = fg_clone(g5);
    fg_tensor *hole = fg_narrow(fg_flatten(fg_grad(P.pd[6])), 0, 3, 1); /* element 3 of t6's gradient */
    ck_assert_int_eq(fg_copy_(hole, fg_full(FG_SHAPE(1), NAN, FG_F32, FG_CPU)), FG_OK);
    fg_clear_error();
    ck_assert_int_eq(fg_clip_grad_norm(P.dev, 1e-3, &nd), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "clip_grad_norm", "nan");
    ck_assert(isnan(nd));
    ck_matches(g5, before, 0, 0, "grad left unscaled after a NaN norm");
    free_pairs(&P);
    END;
}
END_TEST

START_TEST(cuda_errors)
{
    BEGIN;
    fg_params *r = fg_params_new();
    fg_tensor *d64 = fg_zeros(FG_SHAPE(3), FG_F64, FG_CUDA);
    fg_set_requires_grad(d64, true);
    fg_params_add(r, "w64", d64, true);
    ck_assert_ptr_null(fg_adamw_new(r, NULL));
    ck_err(FG_ERR_UNSUPPORTED, "'w64'", "f32");
    ck_assert_int_eq(fg_backward_with_grad(d64, fg_ones(FG_SHAPE(3), FG_F64, FG_CUDA)), FG_OK);
    ck_assert_int_eq(fg_clip_grad_norm(r, 1.0, NULL), FG_ERR_UNSUPPORTED);
    ck_err(FG_ERR_UNSUPPORTED, "'w64'", "f64");
    fg_params_free(r);
    r = fg_params_new();
    fg_tensor *hb = fg_zeros(FG_SHAPE(3), FG_BF16, FG_CUDA);
    fg_params_add(r, "wb", hb, true);
    ck_assert_ptr_null(fg_sgd_new(r, NULL));
    ck_err(FG_ERR_DTYPE, "'wb'", "bf16");
    fg_params_free(r);
    END;
}
END_TEST

/* A 2-layer MLP on the GPU under bf16 autocast (f32 master weights, f32
 * gradients): AdamW + clipping + schedule bring the loss down. */
START_TEST(training_run_autocast)
{
    BEGIN;
    enum { N = 256, D = 16, H = 64 };
    fg_tensor *x = fg_randn(gen, FG_SHAPE(N, D), FG_F32, FG_CUDA);
    fg_tensor *a = fg_mul_scalar(fg_randn(gen, FG_SHAPE(D, 1), FG_F32, FG_CUDA), 0.3);
    fg_tensor *y = fg_tanh(fg_matmul(x, a));
    fg_params *reg = fg_params_new();
    fg_tensor *w1 = fg_mul_scalar(fg_randn(gen, FG_SHAPE(D, H), FG_F32, FG_CUDA), 0.25);
    fg_tensor *b1 = fg_zeros(FG_SHAPE(H), FG_F32, FG_CUDA);
    fg_tensor *w2 = fg_mul_scalar(fg_randn(gen, FG_SHAPE(H, 1), FG_F32, FG_CUDA), 0.1);
    fg_tensor *ps[3] = {w1, b1, w2};
    for (int i = 0; i < 3; i++) {
        fg_set_requires_grad(ps[i], true);
        fg_params_add(reg, i == 0 ? "w1" : i == 1 ? "b1" : "w2", ps[i], i != 1);
    }
    fg_optimizer *opt = fg_adamw_new(reg, NULL);
    const int steps = 300;
    double first = 0, last = 0;
    for (int step = 0; step < steps; step++) {
        fg_scope *s = fg_scope_begin();
        fg_optimizer_set_lr(opt, fg_lr_warmup_cosine(step, 1e-2, 1e-3, 10, steps));
        ck_assert_int_eq(fg_autocast_begin(FG_BF16), FG_OK);
        fg_tensor *h = fg_tanh(fg_add(fg_cast(fg_matmul(x, w1), FG_F32), b1));
        fg_tensor *d = fg_sub(fg_cast(fg_matmul(h, w2), FG_F32), y);
        ck_assert_int_eq(fg_autocast_end(), FG_OK);
        fg_tensor *loss = fg_mean_all(fg_mul(d, d));
        ck_assert_msg(loss != NULL, "%s", fg_last_error());
        ck_assert_int_eq(fg_optimizer_zero_grad(opt), FG_OK);
        ck_assert_int_eq(fg_backward(loss), FG_OK);
        ck_assert_int_eq(fg_dtype_of(fg_grad(w1)), FG_F32);
        ck_assert_int_eq(fg_clip_grad_norm(reg, 1.0, NULL), FG_OK);
        ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
        if (step == 0) first = fg_item(loss);
        if (step == steps - 1) last = fg_item(loss);
        ck_assert_int_eq(fg_scope_end(s), FG_OK);
    }
    printf("cuda_optim training_run_autocast: loss %g -> %g\n", first, last);
    ck_assert_msg(last < 0.1 * first && last < 2e-2, "loss %g -> %g", first, last);
    fg_optimizer_free(opt);
    fg_params_free(reg);
    END;
}
END_TEST

static Suite *mk(void)
{
    Suite *s = suite_create("cuda_optim");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, adamw_matches_cpu);
    tcase_add_test(tc, sgd_matches_cpu);
    tcase_add_test(tc, step_does_not_sync);
    tcase_add_test(tc, mixed_devices);
    tcase_add_test(tc, clip_matches_cpu);
    tcase_add_test(tc, cuda_errors);
    tcase_add_test(tc, training_run_autocast);
    suite_add_tcase(s, tc);
    return s;
}

FG_CUDA_TEST_MAIN(mk, "cuda_optim")
