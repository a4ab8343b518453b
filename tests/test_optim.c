/* Suite "optim": the parameter registry (flashgrad/params.h) and the
 * optimisation stack (flashgrad/optim.h) on the CPU: AdamW and SGD against
 * hand-computed steps and an independent reimplementation, the decay flag,
 * checkpoint state, gradient clipping, the nanoGPT learning-rate schedule,
 * gradient accumulation, a small training run, and the error paths. Every
 * test runs in the BEGIN/END frame (no tensor or graph node outlives it). */
#include <stdio.h>
#include "testutil.h"

/* p's gradient set to exactly `g` (as fg_backward would leave it). */
static void set_grad(fg_tensor *p, const double *g)
{
    fg_tensor *gt = fg_from_f64(g, fg_ndim(p), fg_shape(p), fg_dtype_of(p), FG_CPU);
    ck_assert_ptr_nonnull(gt);
    if (fg_grad(p)) ck_assert_int_eq(fg_zero_grad(p), FG_OK);
    ck_assert_msg(fg_backward_with_grad(p, gt) == FG_OK, "set_grad: %s", fg_last_error());
}

/* A parameter (leaf requiring grad) of dtype dt with the given values. */
static fg_tensor *param(const double *v, int ndim, const int64_t *shape, fg_dtype dt)
{
    fg_tensor *t = fg_from_f64(v, ndim, shape, dt, FG_CPU);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(fg_set_requires_grad(t, true), FG_OK);
    return t;
}

static double val(const fg_tensor *t, int64_t i)
{
    int64_t n = fg_numel(t);
    double v[64];
    ck_assert(n <= 64);
    ck_assert_int_eq(fg_to_f64_array(t, v, n), FG_OK);
    return v[i];
}

/* ===================================================================== registry */

START_TEST(params_basics)
{
    BEGIN;
    fg_params *reg = fg_params_new();
    ck_assert_ptr_nonnull(reg);
    ck_assert_int_eq(fg_params_count(reg), 0);
    ck_assert_int_eq(fg_params_numel(reg), 0);
    /* a tensor made in an inner scope stays alive through the registry's reference */
    fg_scope *s = fg_scope_begin();
    fg_tensor *w = fg_full(FG_SHAPE(2, 3), 1.5, FG_F32, FG_CPU);
    fg_tensor *b = fg_zeros(FG_SHAPE(3), FG_F32, FG_CPU);
    fg_tensor *e = fg_zeros(FG_SHAPE(0, 4), FG_F64, FG_CPU);
    ck_assert_int_eq(fg_params_add(reg, "layer.w", w, true), FG_OK);
    ck_assert_int_eq(fg_params_add(reg, "layer.b", b, false), FG_OK);
    ck_assert_int_eq(fg_params_add(reg, "empty", e, true), FG_OK);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    ck_assert_int_eq(fg_params_count(reg), 3);
    ck_assert_int_eq(fg_params_numel(reg), 9);
    const fg_param *p0 = fg_params_at(reg, 0), *p1 = fg_params_at(reg, 1), *p2 = fg_params_at(reg, 2);
    ck_assert_str_eq(p0->name, "layer.w");
    ck_assert_str_eq(p1->name, "layer.b");
    ck_assert_str_eq(p2->name, "empty");
    ck_assert(p0->decay && !p1->decay && p2->decay);
    ck_assert_ptr_eq(p0->t, w);
    ck_close(fg_item(fg_sum_all(p0->t)), 9.0, 0); /* still alive after its scope ended */
    ck_assert_ptr_eq(fg_params_find(reg, "layer.b"), p1);
    fg_clear_error();
    ck_assert_ptr_null(fg_params_find(reg, "layer"));
    ck_assert_ptr_null(fg_params_find(reg, NULL));
    ck_assert_int_eq(fg_last_status(), FG_OK); /* not found is not an error */
    ck_assert_ptr_null(fg_params_at(reg, 3));
    ck_err(FG_ERR_INDEX, "params", "entry 3 of 3");
    ck_assert_ptr_null(fg_params_at(reg, -1));
    ck_err(FG_ERR_INDEX, "params", NULL);
    /* many entries, owned by the test's scope while registered (fg_params_free
     * must drop only its own reference: END checks none is left), and the
     * array grows past its first capacity */
    for (int i = 0; i < 40; i++) {
        char nm[32];
        snprintf(nm, sizeof nm, "extra.%d", i);
        ck_assert_int_eq(fg_params_add(reg, nm, fg_ones(FG_SHAPE(i + 1), FG_F32, FG_CPU), false), FG_OK);
    }
    ck_assert_int_eq(fg_params_count(reg), 43);
    ck_assert_int_eq(fg_params_numel(reg), 9 + 40 * 41 / 2);
    ck_assert_str_eq(fg_params_find(reg, "extra.39")->name, "extra.39");
    ck_assert_int_eq(fg_numel(fg_params_find(reg, "extra.39")->t), 40);
    fg_params_free(reg);
    fg_params_free(NULL);
    ck_assert_int_eq(fg_params_count(NULL), 0);
    ck_assert_int_eq(fg_params_numel(NULL), 0);
    END;
}
END_TEST

START_TEST(params_errors)
{
    BEGIN;
    fg_params *reg = fg_params_new();
    fg_tensor *w = fg_zeros(FG_SHAPE(2), FG_F32, FG_CPU);
    ck_assert_int_eq(fg_params_add(reg, "w", w, true), FG_OK);
    fg_clear_error();
    ck_assert_int_eq(fg_params_add(NULL, "x", w, true), FG_ERR_NULL);
    ck_err(FG_ERR_NULL, "params", "registry");
    fg_clear_error();
    ck_assert_int_eq(fg_params_add(reg, NULL, w, true), FG_ERR_NULL);
    ck_err(FG_ERR_NULL, "params", "name");
    fg_clear_error();
    ck_assert_int_eq(fg_params_add(reg, "x", NULL, true), FG_ERR_NULL);
    ck_err(FG_ERR_NULL, "params", "x");
    ck_assert_int_eq(fg_params_add(reg, "", fg_zeros(FG_SHAPE(1), FG_F32, FG_CPU), true), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "params", "empty");
    ck_assert_int_eq(fg_params_add(reg, "w", fg_zeros(FG_SHAPE(1), FG_F32, FG_CPU), true), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "'w'", "twice");
    /* tied weights: one tensor, one name */
    ck_assert_int_eq(fg_params_add(reg, "w_tied", w, true), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "'w_tied'", "'w'");
    ck_assert_int_eq(fg_params_add(reg, "idx", fg_zeros(FG_SHAPE(2), FG_I64, FG_CPU), false), FG_ERR_DTYPE);
    ck_err(FG_ERR_DTYPE, "'idx'", "i64");
    /* a computed tensor is not a parameter: backward never fills its .grad */
    fg_tensor *leaf = fg_ones(FG_SHAPE(2), FG_F32, FG_CPU);
    fg_set_requires_grad(leaf, true);
    ck_assert_int_eq(fg_params_add(reg, "y", fg_mul_scalar(leaf, 2.0), false), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "'y'", "not a leaf");
    /* a NULL tensor from a failed op keeps the op's error (the root cause) */
    fg_clear_error();
    ck_assert_int_eq(fg_params_add(reg, "z", fg_reshape(w, FG_SHAPE(3)), false), FG_ERR_SHAPE);
    ck_err(FG_ERR_SHAPE, "reshape", NULL);
    ck_assert_int_eq(fg_params_count(reg), 1); /* nothing was added by the failures */
    fg_clear_error();
    ck_assert_int_eq(fg_params_zero_grad(NULL), FG_ERR_NULL);
    ck_err(FG_ERR_NULL, "params", "registry");
    fg_params_free(reg);
    END;
}
END_TEST

START_TEST(params_zero_grad)
{
    BEGIN;
    fg_params *reg = fg_params_new();
    fg_tensor *a = param((const double[]){1, 2}, FG_SHAPE(2), FG_F64);
    fg_tensor *b = param((const double[]){3}, FG_SHAPE(1), FG_F32);
    fg_tensor *c = param((const double[]){5}, FG_SHAPE(1), FG_F32); /* never gets a grad */
    ck_assert_int_eq(fg_params_add(reg, "a", a, true), FG_OK);
    ck_assert_int_eq(fg_params_add(reg, "b", b, false), FG_OK);
    ck_assert_int_eq(fg_params_add(reg, "c", c, false), FG_OK);
    fg_tensor *loss = fg_add(fg_sum_all(fg_mul(a, a)), fg_cast(fg_mul_scalar(fg_sum_all(b), 3.0), FG_F64));
    ck_assert_int_eq(fg_backward(loss), FG_OK);
    ck_tensor_values(fg_grad(a), (const double[]){2, 4}, 2, 0);
    ck_tensor_values(fg_grad(b), (const double[]){3}, 1, 0);
    fg_tensor *ga = fg_grad(a);
    ck_assert_int_eq(fg_params_zero_grad(reg), FG_OK);
    ck_tensor_values(fg_grad(a), (const double[]){0, 0}, 2, 0);
    ck_tensor_values(fg_grad(b), (const double[]){0}, 1, 0);
    ck_assert_ptr_eq(fg_grad(a), ga); /* buffer kept */
    ck_assert_ptr_null(fg_grad(c));
    fg_params_free(reg);
    END;
}
END_TEST

/* ===================================================================== AdamW */

/* Step 1 of AdamW by hand: m = (1 - b1) g, v = (1 - b2) g^2, so the bias-corrected
 * m_hat = g, sqrt(v_hat) = |g| and p1 = p (1 - lr wd) - lr g / (|g| + eps). */
START_TEST(adamw_first_step_by_hand)
{
    BEGIN;
    const fg_dtype dts[2] = {FG_F64, FG_F32};
    for (int k = 0; k < 2; k++) {
        fg_params *reg = fg_params_new();
        fg_tensor *p = param((const double[]){1.0, -2.0, 0.5, 3.0}, FG_SHAPE(2, 2), dts[k]);
        ck_assert_int_eq(fg_params_add(reg, "p", p, true), FG_OK);
        fg_adamw_opts o = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1};
        fg_optimizer *opt = fg_adamw_new(reg, &o);
        ck_assert_ptr_nonnull(opt);
        ck_assert_str_eq(fg_optimizer_name(opt), "adamw");
        ck_assert_int_eq(fg_optimizer_step_count(opt), 0);
        set_grad(p, (const double[]){0.1, -0.3, 2.0, 0.0});
        ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
        ck_assert_int_eq(fg_optimizer_step_count(opt), 1);
        const double want[4] = {
            0.99 - 0.1 * 0.1 / (0.1 + 1e-8),    /* 0.8900000100 */
            -1.98 + 0.1 * 0.3 / (0.3 + 1e-8),   /* -1.8800000033 */
            0.495 - 0.1 * 2.0 / (2.0 + 1e-8),   /* 0.3950000005 */
            2.97,                               /* g = 0: only the decay */
        };
        const double tol = dts[k] == FG_F64 ? 1e-15 : 2e-7;
        ck_tensor_values(p, want, 4, tol);
        fg_params *st = fg_params_new();
        ck_assert_int_eq(fg_optimizer_state(opt, st), FG_OK);
        ck_tensor_values(fg_params_find(st, "optim.exp_avg.p")->t, (const double[]){0.01, -0.03, 0.2, 0}, 4,
                         tol * 0.1);
        ck_tensor_values(fg_params_find(st, "optim.exp_avg_sq.p")->t, (const double[]){1e-5, 9e-5, 0.004, 0}, 4,
                         tol * 0.01);
        fg_params_free(st);
        fg_optimizer_free(opt);
        fg_params_free(reg);
    }
    END;
}
END_TEST

/* Two steps on one element, the second by hand from the formula:
 * m2 = 0.9 m1 + 0.1 g2, v2 = 0.999 v1 + 0.001 g2^2, bias corrections 1 - 0.9^2 = 0.19
 * and 1 - 0.999^2 = 0.001999. No decay (decay = false in the registry). */
START_TEST(adamw_second_step_by_hand)
{
    BEGIN;
    fg_params *reg = fg_params_new();
    fg_tensor *p = param((const double[]){0.5}, FG_SHAPE(1), FG_F64);
    ck_assert_int_eq(fg_params_add(reg, "p", p, false), FG_OK);
    fg_adamw_opts o = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6, .weight_decay = 0.5};
    fg_optimizer *opt = fg_adamw_new(reg, &o);
    set_grad(p, (const double[]){2.0});
    ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
    const double p1 = 0.5 - 0.01 * 2.0 / (2.0 + 1e-6);
    ck_close(val(p, 0), p1, 1e-16);
    set_grad(p, (const double[]){-1.0});
    ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
    const double m2 = 0.9 * 0.2 + 0.1 * -1.0;       /* 0.08 */
    const double v2 = 0.999 * 0.004 + 0.001 * 1.0;  /* 0.004996 */
    const double p2 = p1 - 0.01 / 0.19 * m2 / (sqrt(v2) / sqrt(0.001999) + 1e-6);
    ck_close(val(p, 0), p2, 1e-15);
    ck_close(val(p, 0), 0.4873366363, 1e-10); /* the same, as a number */
    fg_optimizer_free(opt);
    fg_params_free(reg);
    END;
}
END_TEST

/* An independent AdamW in the form of torch's documentation (bias-corrected
 * m_hat, v_hat; eps added to sqrt(v_hat)), in double. */
typedef struct {
    double lr, b1, b2, eps, wd;
} ref_adamw;
static void ref_adamw_step(const ref_adamw *h, int t, bool decay, double *p, const double *g, double *m, double *v,
                           int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (decay) p[i] -= h->lr * h->wd * p[i];
        m[i] = h->b1 * m[i] + (1 - h->b1) * g[i];
        v[i] = h->b2 * v[i] + (1 - h->b2) * g[i] * g[i];
        const double mhat = m[i] / (1 - pow(h->b1, t)), vhat = v[i] / (1 - pow(h->b2, t));
        p[i] -= h->lr * mhat / (sqrt(vhat) + h->eps);
    }
}

/* Several tensors and steps, a new learning rate each step, random gradients
 * and one tensor without a gradient in some steps. */
START_TEST(adamw_steps_vs_reference)
{
    BEGIN;
    const fg_dtype dts[2] = {FG_F64, FG_F32};
    for (int k = 0; k < 2; k++) {
        enum { NT = 4, STEPS = 6 };
        const int64_t sizes[NT] = {7, 1, 33, 0};
        const bool decay[NT] = {true, false, true, true};
        fg_params *reg = fg_params_new();
        fg_tensor *p[NT];
        double rp[NT][40], rm[NT][40] = {{0}}, rv[NT][40] = {{0}}, g[40];
        for (int i = 0; i < NT; i++) {
            fg_tensor *init = fg_uniform(gen, -1, 1, FG_SHAPE(sizes[i]), FG_F64, FG_CPU);
            read_f64(init, rp[i], sizes[i]);
            p[i] = fg_to(init, FG_CPU, dts[k]);
            if (dts[k] == FG_F32) read_f64(p[i], rp[i], sizes[i]); /* start from the same rounded values */
            fg_set_requires_grad(p[i], true);
            char nm[16];
            snprintf(nm, sizeof nm, "t%d", i);
            ck_assert_int_eq(fg_params_add(reg, nm, p[i], decay[i]), FG_OK);
        }
        ref_adamw h = {.lr = 0.02, .b1 = 0.8, .b2 = 0.95, .eps = 1e-6, .wd = 0.3};
        fg_adamw_opts o = {.lr = h.lr, .beta1 = h.b1, .beta2 = h.b2, .eps = h.eps, .weight_decay = h.wd};
        fg_optimizer *opt = fg_adamw_new(reg, &o);
        ck_assert_ptr_nonnull(opt);
        for (int t = 1; t <= STEPS; t++) {
            h.lr = 0.02 / t;
            ck_assert_int_eq(fg_optimizer_set_lr(opt, h.lr), FG_OK);
            ck_close(fg_optimizer_get_lr(opt), h.lr, 0);
            for (int i = 0; i < NT; i++) {
                if (i == 1 && t % 2 == 0) { /* no gradient this step: skipped entirely */
                    fg_clear_grad(p[i]);
                    continue;
                }
                fg_tensor *gt = fg_uniform(gen, -2, 2, FG_SHAPE(sizes[i]), dts[k], FG_CPU);
                read_f64(gt, g, sizes[i]);
                set_grad(p[i], g);
                ref_adamw_step(&h, t, decay[i], rp[i], g, rm[i], rv[i], sizes[i]);
            }
            ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
            /* f32: state and parameters rounded each step (errors of a few ulps of 1) */
            const double tol = dts[k] == FG_F64 ? 1e-13 : 2e-6;
            for (int i = 0; i < NT; i++) ck_tensor_values(p[i], rp[i], sizes[i], tol);
        }
        ck_assert_int_eq(fg_optimizer_step_count(opt), STEPS);
        fg_optimizer_free(opt);
        fg_params_free(reg);
    }
    END;
}
END_TEST

/* g = 0: AdamW's moment update is 0 / (0 + eps) = 0, so only the decoupled
 * decay moves the parameters, on the decay entries (all with decay_all). SGD
 * likewise: d = wd p. */
START_TEST(decay_flag)
{
    BEGIN;
    for (int all = 0; all < 2; all++) {
        fg_params *reg = fg_params_new();
        fg_tensor *w = param((const double[]){2.0, -4.0}, FG_SHAPE(2), FG_F64);
        fg_tensor *b = param((const double[]){1.0}, FG_SHAPE(1), FG_F64);
        ck_assert_int_eq(fg_params_add(reg, "w", w, true), FG_OK);
        ck_assert_int_eq(fg_params_add(reg, "b", b, false), FG_OK);
        fg_adamw_opts o = fg_adamw_defaults();
        o.lr = 0.1, o.weight_decay = 0.2, o.decay_all = all;
        fg_optimizer *opt = fg_adamw_new(reg, &o);
        set_grad(w, (const double[]){0, 0});
        set_grad(b, (const double[]){0});
        ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
        ck_tensor_values(w, (const double[]){2.0 * 0.98, -4.0 * 0.98}, 2, 1e-15);
        ck_tensor_values(b, (const double[]){all ? 0.98 : 1.0}, 1, 1e-15);
        fg_optimizer_free(opt);

        fg_sgd_opts so = {.lr = 0.1, .weight_decay = 0.5, .decay_all = all};
        opt = fg_sgd_new(reg, &so);
        set_grad(w, (const double[]){1, 1});
        set_grad(b, (const double[]){1});
        ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
        /* w: d = 1 + 0.5 w */
        ck_tensor_values(w, (const double[]){1.96 - 0.1 * (1 + 0.5 * 1.96), -3.92 - 0.1 * (1 - 0.5 * 3.92)}, 2, 1e-15);
        ck_tensor_values(b, (const double[]){all ? 0.98 - 0.1 * (1 + 0.5 * 0.98) : 0.9}, 1, 1e-15);
        fg_optimizer_free(opt);
        fg_params_free(reg);
    }
    END;
}
END_TEST

/* ===================================================================== SGD */

START_TEST(sgd_by_hand)
{
    BEGIN;
    const double g1[2] = {0.5, 1.0}, g2[2] = {1.0, -2.0};
    /* plain: p - lr g */
    {
        fg_params *reg = fg_params_new();
        fg_tensor *p = param((const double[]){1, -1}, FG_SHAPE(2), FG_F32);
        fg_params_add(reg, "p", p, true);
        fg_optimizer *opt = fg_sgd_new(reg, &(fg_sgd_opts){.lr = 0.1});
        ck_assert_str_eq(fg_optimizer_name(opt), "sgd");
        set_grad(p, g1);
        ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
        ck_tensor_values(p, (const double[]){0.95, -1.1}, 2, 1e-7);
        fg_params *st = fg_params_new();
        ck_assert_int_eq(fg_optimizer_state(opt, st), FG_OK);
        ck_assert_int_eq(fg_params_count(st), 0); /* no momentum: no state */
        fg_params_free(st);
        fg_optimizer_free(opt);
        fg_params_free(reg);
    }
    /* momentum 0.9: b1 = g1, p1 = p - 0.1 g1 = (0.95, -1.1);
     * b2 = 0.9 b1 + g2 = (1.45, -1.1), p2 = p1 - 0.1 b2 = (0.805, -0.99).
     * Nesterov: d1 = g1 + 0.9 g1 = (0.95, 1.9), p1 = (0.905, -1.19);
     * d2 = g2 + 0.9 b2 = (2.305, -2.99), p2 = (0.6745, -0.891). */
    const double want[2][2][2] = {{{0.95, -1.1}, {0.805, -0.99}}, {{0.905, -1.19}, {0.6745, -0.891}}};
    for (int nest = 0; nest < 2; nest++) {
        fg_params *reg = fg_params_new();
        fg_tensor *p = param((const double[]){1, -1}, FG_SHAPE(2), FG_F64);
        fg_params_add(reg, "p", p, true);
        fg_sgd_opts so = {.lr = 0.1, .momentum = 0.9, .nesterov = nest};
        fg_optimizer *opt = fg_sgd_new(reg, &so);
        ck_assert_ptr_nonnull(opt);
        set_grad(p, g1);
        ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
        ck_tensor_values(p, want[nest][0], 2, 1e-15);
        set_grad(p, g2);
        ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
        ck_tensor_values(p, want[nest][1], 2, 1e-15);
        fg_params *st = fg_params_new();
        ck_assert_int_eq(fg_optimizer_state(opt, st), FG_OK);
        ck_assert_int_eq(fg_params_count(st), 1);
        ck_assert_str_eq(fg_params_at(st, 0)->name, "optim.momentum.p");
        ck_tensor_values(fg_params_at(st, 0)->t, (const double[]){1.45, -1.1}, 2, 1e-15);
        fg_params_free(st);
        fg_optimizer_free(opt);
        fg_params_free(reg);
    }
    END;
}
END_TEST

/* ===================================================================== state */

/* A checkpoint round trip through the state registry: a second optimizer gets
 * the first one's state values (and step count) and the parameters', and from
 * there both make the same steps. */
START_TEST(state_restore)
{
    BEGIN;
    fg_params *r1 = fg_params_new(), *r2 = fg_params_new();
    fg_tensor *w1 = param((const double[]){0.3, -0.7, 1.1}, FG_SHAPE(3), FG_F32);
    fg_tensor *b1 = param((const double[]){0.2}, FG_SHAPE(1), FG_F32);
    fg_tensor *w2 = param((const double[]){0, 0, 0}, FG_SHAPE(3), FG_F32);
    fg_tensor *b2 = param((const double[]){0}, FG_SHAPE(1), FG_F32);
    fg_params_add(r1, "w", w1, true), fg_params_add(r1, "b", b1, false);
    fg_params_add(r2, "w", w2, true), fg_params_add(r2, "b", b2, false);
    fg_adamw_opts o = {.lr = 0.05, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1};
    fg_optimizer *o1 = fg_adamw_new(r1, &o), *o2 = fg_adamw_new(r2, &o);
    /* the state exists before any step, under the documented names, in parameter order */
    fg_params *s1 = fg_params_new(), *s2 = fg_params_new();
    ck_assert_int_eq(fg_optimizer_state(o1, s1), FG_OK);
    ck_assert_int_eq(fg_optimizer_state(o2, s2), FG_OK);
    const char *names[4] = {"optim.exp_avg.w", "optim.exp_avg_sq.w", "optim.exp_avg.b", "optim.exp_avg_sq.b"};
    ck_assert_int_eq(fg_params_count(s1), 4);
    for (int i = 0; i < 4; i++) {
        const fg_param *e = fg_params_at(s1, i);
        ck_assert_str_eq(e->name, names[i]);
        ck_assert(!e->decay);
        ck_assert_int_eq(fg_dtype_of(e->t), FG_F32);
        ck_assert_int_eq(fg_numel(e->t), i < 2 ? 3 : 1);
    }
    /* asking twice into the same registry: the names are taken */
    ck_assert_int_eq(fg_optimizer_state(o1, s1), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "optim.exp_avg.w", "twice");
    for (int t = 0; t < 3; t++) {
        set_grad(w1, (const double[]){0.1 * t + 0.1, -0.2, 0.05});
        set_grad(b1, (const double[]){-0.3});
        ck_assert_int_eq(fg_optimizer_step(o1), FG_OK);
    }
    /* restore into o2: parameters, state values, step count */
    ck_assert_int_eq(fg_copy_(w2, w1), FG_OK);
    ck_assert_int_eq(fg_copy_(b2, b1), FG_OK);
    for (int i = 0; i < 4; i++) ck_assert_int_eq(fg_copy_(fg_params_at(s2, i)->t, fg_params_at(s1, i)->t), FG_OK);
    ck_assert_int_eq(fg_optimizer_set_step_count(o2, fg_optimizer_step_count(o1)), FG_OK);
    ck_assert_int_eq(fg_optimizer_step_count(o2), 3);
    set_grad(w1, (const double[]){0.5, 0.5, -0.5});
    set_grad(b1, (const double[]){1.0});
    set_grad(w2, (const double[]){0.5, 0.5, -0.5});
    set_grad(b2, (const double[]){1.0});
    ck_assert_int_eq(fg_optimizer_step(o1), FG_OK);
    ck_assert_int_eq(fg_optimizer_step(o2), FG_OK);
    ck_same_tensor(w2, w1, 0);
    ck_same_tensor(b2, b1, 0);
    /* with the step count left at 0 the bias correction differs: the count is part of the state */
    ck_assert_int_eq(fg_optimizer_set_step_count(o2, 0), FG_OK);
    ck_assert_int_eq(fg_optimizer_step(o2), FG_OK);
    ck_assert_int_eq(fg_optimizer_step(o1), FG_OK);
    ck_assert(fabs(val(w2, 0) - val(w1, 0)) > 1e-4);
    fg_params_free(s1), fg_params_free(s2);
    fg_optimizer_free(o1), fg_optimizer_free(o2);
    fg_params_free(r1), fg_params_free(r2);
    END;
}
END_TEST

/* The optimizer keeps its own references: the registry may go first. */
START_TEST(optimizer_outlives_registry)
{
    BEGIN;
    fg_params *reg = fg_params_new();
    fg_tensor *p = param((const double[]){1, 2}, FG_SHAPE(2), FG_F32);
    fg_params_add(reg, "p", p, true);
    fg_optimizer *opt = fg_sgd_new(reg, NULL); /* defaults: lr 1e-3 */
    ck_close(fg_optimizer_get_lr(opt), 1e-3, 0);
    fg_params_free(reg);
    set_grad(p, (const double[]){10, 20});
    ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
    ck_tensor_values(p, (const double[]){0.99, 1.98}, 2, 1e-7);
    /* zero_grad through the optimizer; a step without gradients changes nothing but the count */
    ck_assert_int_eq(fg_optimizer_zero_grad(opt), FG_OK);
    ck_tensor_values(fg_grad(p), (const double[]){0, 0}, 2, 0);
    fg_clear_grad(p);
    ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
    ck_tensor_values(p, (const double[]){0.99, 1.98}, 2, 1e-7);
    ck_assert_int_eq(fg_optimizer_step_count(opt), 2);
    fg_optimizer_free(opt);
    /* an empty registry is fine */
    fg_params *empty = fg_params_new();
    opt = fg_adamw_new(empty, NULL);
    ck_assert_ptr_nonnull(opt);
    ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
    fg_optimizer_free(opt);
    fg_params_free(empty);
    END;
}
END_TEST

/* ===================================================================== clipping */

START_TEST(clip_grad_norm_values)
{
    BEGIN;
    fg_params *reg = fg_params_new();
    fg_tensor *a = param((const double[]){0, 0}, FG_SHAPE(2), FG_F32);
    fg_tensor *b = param((const double[]){0}, FG_SHAPE(1, 1), FG_F64);
    fg_tensor *c = param((const double[]){0}, FG_SHAPE(1), FG_F32); /* no gradient: not counted */
    fg_params_add(reg, "a", a, true), fg_params_add(reg, "b", b, true), fg_params_add(reg, "c", c, true);
    double norm = -1;
    /* |(3, 4, 12)| = 13 */
    set_grad(a, (const double[]){3, 4});
    set_grad(b, (const double[]){12});
    ck_assert_int_eq(fg_clip_grad_norm(reg, 26.0, &norm), FG_OK);
    ck_close(norm, 13.0, 1e-12);
    ck_tensor_values(fg_grad(a), (const double[]){3, 4}, 2, 0); /* below max_norm: untouched */
    ck_tensor_values(fg_grad(b), (const double[]){12}, 1, 0);
    ck_assert_int_eq(fg_clip_grad_norm(reg, INFINITY, &norm), FG_OK); /* measure only */
    ck_close(norm, 13.0, 1e-12);
    ck_tensor_values(fg_grad(b), (const double[]){12}, 1, 0);
    /* above: scaled by max_norm / (norm + 1e-6) */
    ck_assert_int_eq(fg_clip_grad_norm(reg, 6.5, &norm), FG_OK);
    ck_close(norm, 13.0, 1e-12);
    const double cf = 6.5 / (13.0 + 1e-6);
    ck_tensor_values(fg_grad(a), (const double[]){3 * cf, 4 * cf}, 2, 1e-6);
    ck_tensor_values(fg_grad(b), (const double[]){12 * cf}, 1, 1e-14);
    ck_assert_int_eq(fg_clip_grad_norm(reg, 1e9, &norm), FG_OK);
    ck_close(norm, 6.5, 1e-5); /* the clipped norm */
    ck_assert_int_eq(fg_clip_grad_norm(reg, 1.0, NULL), FG_OK); /* norm pointer optional */
    ck_assert_int_eq(fg_clip_grad_norm(reg, INFINITY, &norm), FG_OK);
    ck_close(norm, 1.0, 1e-6);
    /* f32 squares that would overflow in float are summed in double */
    set_grad(a, (const double[]){3e30, 4e30});
    fg_clear_grad(b);
    ck_assert_int_eq(fg_clip_grad_norm(reg, 1.0, &norm), FG_OK);
    ck_close(norm / 5e30, 1.0, 1e-6);
    ck_tensor_values(fg_grad(a), (const double[]){0.6, 0.8}, 2, 1e-6);
    /* no gradients at all: norm 0 */
    fg_clear_grad(a);
    ck_assert_int_eq(fg_clip_grad_norm(reg, 1.0, &norm), FG_OK);
    ck_close(norm, 0.0, 0);
    fg_params_free(reg);
    END;
}
END_TEST

START_TEST(clip_grad_norm_nonfinite)
{
    BEGIN;
    fg_params *reg = fg_params_new();
    fg_tensor *a = param((const double[]){0, 0}, FG_SHAPE(2), FG_F32);
    fg_tensor *b = param((const double[]){0}, FG_SHAPE(1), FG_F64);
    fg_params_add(reg, "a", a, true), fg_params_add(reg, "b", b, true);
    const double bad[2] = {NAN, INFINITY};
    for (int k = 0; k < 2; k++) {
        set_grad(a, (const double[]){3, 4});
        set_grad(b, (const double[]){bad[k]});
        double norm = 0;
        fg_clear_error();
        ck_assert_int_eq(fg_clip_grad_norm(reg, 1.0, &norm), FG_ERR_INVALID);
        ck_err(FG_ERR_INVALID, "clip_grad_norm", k ? "inf" : "nan");
        ck_assert(k ? isinf(norm) : isnan(norm));
        ck_tensor_values(fg_grad(a), (const double[]){3, 4}, 2, 0); /* left unscaled */
    }
    fg_params_free(reg);
    END;
}
END_TEST

START_TEST(clip_grad_norm_errors)
{
    BEGIN;
    fg_params *reg = fg_params_new();
    double norm = 7;
    fg_clear_error();
    ck_assert_int_eq(fg_clip_grad_norm(NULL, 1.0, &norm), FG_ERR_NULL);
    ck_err(FG_ERR_NULL, "clip_grad_norm", "registry");
    ck_assert(isnan(norm));
    const double bad[3] = {0.0, -1.0, NAN};
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(fg_clip_grad_norm(reg, bad[k], &norm), FG_ERR_INVALID);
        ck_err(FG_ERR_INVALID, "clip_grad_norm", "max_norm");
    }
    /* bf16 gradients are clipped on the CPU */
    fg_tensor *h = fg_from_f64((const double[]){6, 8}, FG_SHAPE(2), FG_BF16, FG_CPU);
    fg_set_requires_grad(h, true);
    fg_params_add(reg, "h", h, false);
    set_grad(h, (const double[]){6, 8});
    ck_assert_int_eq(fg_clip_grad_norm(reg, 5.0, &norm), FG_OK);
    ck_close(norm, 10.0, 0);
    ck_tensor_values(fg_grad(h), (const double[]){3, 4}, 2, 0.02);
    fg_params_free(reg);
    END;
}
END_TEST

/* ===================================================================== schedule */

/* Values of nanoGPT's get_lr (Python, train.py) for its shakespeare-char
 * settings (lr 1e-3, min_lr 1e-4, warmup 100, lr_decay_iters 5000), printed
 * with repr: the function must return the same doubles. */
START_TEST(lr_schedule_matches_nanogpt)
{
    BEGIN;
    static const struct {
        int64_t it;
        double lr;
    } py[] = {{0, 9.900990099009901e-06},    {1, 1.9801980198019803e-05}, {50, 0.000504950495049505},
              {99, 0.0009900990099009901},   {100, 0.001},                {101, 0.000999999907510999},
              {1234, 0.0008862110040286674}, {2550, 0.00055},             {4999, 0.00010000009248900101},
              {5000, 0.0001},                {5001, 0.0001},              {9999, 0.0001}};
    for (size_t i = 0; i < sizeof py / sizeof py[0]; i++) {
        double lr = fg_lr_warmup_cosine(py[i].it, 1e-3, 1e-4, 100, 5000);
        ck_assert_msg(lr == py[i].lr, "step %lld: %.17g, nanoGPT %.17g", (long long)py[i].it, lr, py[i].lr);
    }
    /* shape: rises to base_lr, then never increases, ends at min_lr */
    double prev = 0;
    for (int64_t s = 0; s <= 120; s++) {
        double lr = fg_lr_warmup_cosine(s, 1.0, 0.1, 20, 100);
        if (s <= 20) ck_assert(lr > prev && lr <= 1.0);
        else ck_assert(lr <= prev && lr >= 0.1);
        prev = lr;
    }
    ck_close(fg_lr_warmup_cosine(60, 1.0, 0.1, 20, 100), 0.55, 1e-15); /* half way: the mean */
    /* edges: no warmup; warmup == total; warmup > total */
    ck_assert(fg_lr_warmup_cosine(0, 2.0, 0.5, 0, 10) == 2.0);
    ck_assert(fg_lr_warmup_cosine(10, 2.0, 0.5, 0, 10) == 0.5);
    ck_assert(fg_lr_warmup_cosine(9, 2.0, 0.5, 10, 10) == 2.0 * 10 / 11);
    ck_assert(fg_lr_warmup_cosine(10, 2.0, 0.5, 10, 10) == 0.5);
    ck_assert(fg_lr_warmup_cosine(12, 2.0, 0.5, 20, 10) == 2.0 * 13 / 21);
    ck_assert(fg_lr_warmup_cosine(20, 2.0, 0.5, 20, 10) == 0.5);
    fg_clear_error();
    ck_assert(isnan(fg_lr_warmup_cosine(-1, 1.0, 0.1, 10, 100)));
    ck_err(FG_ERR_INVALID, "lr_warmup_cosine", "negative");
    ck_assert(isnan(fg_lr_warmup_cosine(0, 1.0, 0.1, -1, 100)));
    ck_assert(isnan(fg_lr_warmup_cosine(0, 1.0, 0.1, 10, -5)));
    END;
}
END_TEST

/* ===================================================================== accumulation */

/* loss = mean((x w + b - y)^2) over the rows [r0, r0 + n) */
static fg_tensor *mse_rows(fg_tensor *x, fg_tensor *y, fg_tensor *w, fg_tensor *b, int64_t r0, int64_t n)
{
    fg_tensor *xs = fg_narrow(x, 0, r0, n), *ys = fg_narrow(y, 0, r0, n);
    fg_tensor *d = fg_sub(fg_add(fg_matmul(xs, w), b), ys);
    return fg_mean_all(fg_mul(d, d));
}

/* k micro-batches with the loss scaled by 1/k, one step == one step on the
 * whole batch (AdamW and SGD with momentum, several steps). */
START_TEST(grad_accumulation_equals_big_batch)
{
    BEGIN;
    enum { N = 12, D = 3, K = 4 };
    fg_tensor *x = fg_randn(gen, FG_SHAPE(N, D), FG_F64, FG_CPU);
    fg_tensor *y = fg_randn(gen, FG_SHAPE(N, 1), FG_F64, FG_CPU);
    fg_tensor *w0 = fg_randn(gen, FG_SHAPE(D, 1), FG_F64, FG_CPU);
    for (int kind = 0; kind < 2; kind++) {
        fg_tensor *wa = fg_clone(w0), *wb = fg_clone(w0);
        fg_tensor *ba = fg_zeros(FG_SHAPE(1), FG_F64, FG_CPU), *bb = fg_zeros(FG_SHAPE(1), FG_F64, FG_CPU);
        fg_set_requires_grad(wa, true), fg_set_requires_grad(wb, true);
        fg_set_requires_grad(ba, true), fg_set_requires_grad(bb, true);
        fg_params *ra = fg_params_new(), *rb = fg_params_new();
        fg_params_add(ra, "w", wa, true), fg_params_add(ra, "b", ba, false);
        fg_params_add(rb, "w", wb, true), fg_params_add(rb, "b", bb, false);
        fg_adamw_opts ao = {.lr = 0.05, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1};
        fg_sgd_opts so = {.lr = 0.05, .momentum = 0.9, .weight_decay = 0.01};
        fg_optimizer *oa = kind ? fg_sgd_new(ra, &so) : fg_adamw_new(ra, &ao);
        fg_optimizer *ob = kind ? fg_sgd_new(rb, &so) : fg_adamw_new(rb, &ao);
        for (int step = 0; step < 3; step++) {
            fg_scope *s = fg_scope_begin();
            ck_assert_int_eq(fg_optimizer_zero_grad(oa), FG_OK);
            ck_assert_int_eq(fg_backward(mse_rows(x, y, wa, ba, 0, N)), FG_OK);
            ck_assert_int_eq(fg_optimizer_step(oa), FG_OK);
            ck_assert_int_eq(fg_optimizer_zero_grad(ob), FG_OK);
            for (int k = 0; k < K; k++)
                ck_assert_int_eq(fg_backward(fg_mul_scalar(mse_rows(x, y, wb, bb, k * (N / K), N / K), 1.0 / K)), FG_OK);
            ck_same_tensor(fg_grad(wb), fg_grad(wa), 1e-14);
            ck_assert_int_eq(fg_optimizer_step(ob), FG_OK);
            ck_assert_int_eq(fg_scope_end(s), FG_OK);
            ck_same_tensor(wb, wa, 1e-13);
            ck_same_tensor(bb, ba, 1e-13);
        }
        fg_optimizer_free(oa), fg_optimizer_free(ob);
        fg_params_free(ra), fg_params_free(rb);
    }
    END;
}
END_TEST

/* ===================================================================== training */

/* A 2-layer tanh MLP (4 -> 16 -> 1) fits a smooth function of 4 inputs on the
 * CPU in f32: AdamW, warmup + cosine schedule, clipping at 1. */
START_TEST(tiny_training_run)
{
    BEGIN;
    enum { N = 64, D = 4, H = 16 };
    fg_tensor *x = fg_randn(gen, FG_SHAPE(N, D), FG_F32, FG_CPU);
    fg_tensor *a = fg_from_f64((const double[]){0.8, -0.5, 0.3, 1.0}, FG_SHAPE(D, 1), FG_F32, FG_CPU);
    fg_tensor *y = fg_add_scalar(fg_tanh(fg_matmul(x, a)), 0.2); /* (N, 1) */
    fg_params *reg = fg_params_new();
    fg_tensor *w1 = fg_mul_scalar(fg_randn(gen, FG_SHAPE(D, H), FG_F32, FG_CPU), 0.5);
    fg_tensor *b1 = fg_zeros(FG_SHAPE(H), FG_F32, FG_CPU);
    fg_tensor *w2 = fg_mul_scalar(fg_randn(gen, FG_SHAPE(H, 1), FG_F32, FG_CPU), 0.3);
    fg_tensor *b2 = fg_zeros(FG_SHAPE(1), FG_F32, FG_CPU);
    fg_tensor *ps[4] = {w1, b1, w2, b2};
    const char *names[4] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
    for (int i = 0; i < 4; i++) {
        fg_set_requires_grad(ps[i], true);
        ck_assert_int_eq(fg_params_add(reg, names[i], ps[i], i % 2 == 0), FG_OK);
    }
    fg_adamw_opts o = fg_adamw_defaults();
    o.weight_decay = 0.01;
    fg_optimizer *opt = fg_adamw_new(reg, &o);
    ck_assert_ptr_nonnull(opt);
    const int steps = 400;
    double first = 0, last = 0, norm = 0;
    fg_memory_stats m0, m1;
    for (int step = 0; step < steps; step++) {
        if (step == 10) fg_get_memory_stats(&m0);
        fg_scope *s = fg_scope_begin();
        ck_assert_int_eq(fg_optimizer_set_lr(opt, fg_lr_warmup_cosine(step, 2e-2, 2e-3, 20, steps)), FG_OK);
        fg_tensor *h = fg_tanh(fg_add(fg_matmul(x, w1), b1));
        fg_tensor *d = fg_sub(fg_add(fg_matmul(h, w2), b2), y);
        fg_tensor *loss = fg_mean_all(fg_mul(d, d));
        ck_assert_msg(loss != NULL, "%s", fg_last_error());
        const double l = fg_item(loss);
        if (step == 0) first = l;
        last = l;
        ck_assert_int_eq(fg_optimizer_zero_grad(opt), FG_OK);
        ck_assert_int_eq(fg_backward(loss), FG_OK);
        ck_assert_int_eq(fg_clip_grad_norm(reg, 1.0, &norm), FG_OK);
        ck_assert_int_eq(fg_optimizer_step(opt), FG_OK);
        ck_assert_int_eq(fg_scope_end(s), FG_OK);
    }
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_tensors, m0.live_tensors); /* flat memory across steps */
    ck_assert_msg(first > 0.2, "initial loss %g", first);
    ck_assert_msg(last < 5e-3, "loss %g -> %g after %d steps", first, last, steps);
    if (getenv("FG_TEST_VERBOSE")) printf("tiny_training_run: loss %g -> %g, last grad norm %g\n", first, last, norm);
    fg_optimizer_free(opt);
    fg_params_free(reg);
    END;
}
END_TEST

/* ===================================================================== errors */

START_TEST(optimizer_errors)
{
    BEGIN;
    fg_params *reg = fg_params_new();
    fg_tensor *w = param((const double[]){1, 2}, FG_SHAPE(2), FG_F32);
    fg_params_add(reg, "w", w, true);
    fg_clear_error();
    ck_assert_ptr_null(fg_adamw_new(NULL, NULL));
    ck_err(FG_ERR_NULL, "adamw", "registry");
    fg_clear_error();
    ck_assert_ptr_null(fg_sgd_new(NULL, NULL));
    ck_err(FG_ERR_NULL, "sgd", "registry");
    /* AdamW hyperparameters: the message names the optimizer and the field */
    static const struct {
        fg_adamw_opts o;
        const char *field;
    } ab[] = {
        {{.lr = -1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8}, "lr"},
        {{.lr = NAN, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8}, "lr"},
        {{.lr = INFINITY, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8}, "lr"},
        {{.lr = 1e-3, .beta1 = 1.0, .beta2 = 0.999, .eps = 1e-8}, "beta1"},
        {{.lr = 1e-3, .beta1 = -0.1, .beta2 = 0.999, .eps = 1e-8}, "beta1"},
        {{.lr = 1e-3, .beta1 = 0.9, .beta2 = 1.5, .eps = 1e-8}, "beta2"},
        {{.lr = 1e-3, .beta1 = 0.9, .beta2 = NAN, .eps = 1e-8}, "beta2"},
        {{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 0}, "eps"},
        {{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = -1e-8}, "eps"},
        {{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = -0.1}, "weight_decay"},
    };
    for (size_t i = 0; i < sizeof ab / sizeof ab[0]; i++) {
        ck_assert_ptr_null(fg_adamw_new(reg, &ab[i].o));
        ck_err(FG_ERR_INVALID, "adamw", ab[i].field);
    }
    static const struct {
        fg_sgd_opts o;
        const char *field;
    } sb[] = {
        {{.lr = -1}, "lr"},
        {{.lr = 0.1, .momentum = -0.5}, "momentum"},
        {{.lr = 0.1, .weight_decay = NAN}, "weight_decay"},
        {{.lr = 0.1, .nesterov = true}, "nesterov"},
    };
    for (size_t i = 0; i < sizeof sb / sizeof sb[0]; i++) {
        ck_assert_ptr_null(fg_sgd_new(reg, &sb[i].o));
        ck_err(FG_ERR_INVALID, "sgd", sb[i].field);
    }
    /* lr 0 and betas 0 are valid */
    fg_optimizer *opt = fg_adamw_new(reg, &(fg_adamw_opts){.lr = 0, .beta1 = 0, .beta2 = 0, .eps = 1e-8});
    ck_assert_ptr_nonnull(opt);
    ck_assert_int_eq(fg_optimizer_set_lr(opt, -0.5), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "adamw", "lr");
    ck_assert_int_eq(fg_optimizer_set_lr(opt, NAN), FG_ERR_INVALID);
    ck_close(fg_optimizer_get_lr(opt), 0, 0); /* unchanged */
    ck_assert_int_eq(fg_optimizer_set_step_count(opt, -1), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "adamw", "step count");
    ck_assert_int_eq(fg_optimizer_step_count(opt), 0);
    fg_clear_error();
    ck_assert_int_eq(fg_optimizer_state(opt, NULL), FG_ERR_NULL);
    ck_err(FG_ERR_NULL, "adamw", "state registry");
    fg_optimizer_free(opt);
    /* NULL optimizer */
    fg_clear_error();
    ck_assert_int_eq(fg_optimizer_step(NULL), FG_ERR_NULL);
    ck_err(FG_ERR_NULL, "optimizer", NULL);
    fg_clear_error();
    ck_assert_int_eq(fg_optimizer_zero_grad(NULL), FG_ERR_NULL);
    fg_clear_error();
    ck_assert_int_eq(fg_optimizer_set_lr(NULL, 0.1), FG_ERR_NULL);
    fg_clear_error();
    ck_assert_int_eq(fg_optimizer_set_step_count(NULL, 1), FG_ERR_NULL);
    fg_clear_error();
    ck_assert_int_eq(fg_optimizer_state(NULL, reg), FG_ERR_NULL);
    ck_assert(isnan(fg_optimizer_get_lr(NULL)));
    ck_assert_int_eq(fg_optimizer_step_count(NULL), -1);
    ck_assert_str_eq(fg_optimizer_name(NULL), "");
    fg_optimizer_free(NULL);
    /* parameters the optimizer cannot update: bf16 / f16, non-contiguous */
    fg_params *r2 = fg_params_new();
    fg_tensor *hb = fg_zeros(FG_SHAPE(2, 2), FG_BF16, FG_CPU);
    fg_params_add(r2, "w", fg_zeros(FG_SHAPE(3), FG_F32, FG_CPU), true);
    fg_params_add(r2, "half.w", hb, true);
    ck_assert_ptr_null(fg_adamw_new(r2, NULL));
    ck_err(FG_ERR_DTYPE, "'half.w'", "bf16");
    ck_assert_ptr_null(fg_sgd_new(r2, NULL));
    ck_err(FG_ERR_DTYPE, "sgd", "'half.w'");
    fg_params_free(r2);
    r2 = fg_params_new();
    fg_tensor *t = fg_transpose(fg_zeros(FG_SHAPE(2, 3), FG_F32, FG_CPU), 0, 1);
    fg_params_add(r2, "wt", t, true);
    ck_assert_ptr_null(fg_adamw_new(r2, NULL));
    ck_err(FG_ERR_UNSUPPORTED, "'wt'", "contiguous");
    fg_params_free(r2);
    fg_params_free(reg);
    END;
}
END_TEST

static Suite *mk(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("params");
    tcase_add_test(tc, params_basics);
    tcase_add_test(tc, params_errors);
    tcase_add_test(tc, params_zero_grad);
    suite_add_tcase(s, tc);

    tc = tcase_create("optimizers");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, adamw_first_step_by_hand);
    tcase_add_test(tc, adamw_second_step_by_hand);
    tcase_add_test(tc, adamw_steps_vs_reference);
    tcase_add_test(tc, decay_flag);
    tcase_add_test(tc, sgd_by_hand);
    tcase_add_test(tc, state_restore);
    tcase_add_test(tc, optimizer_outlives_registry);
    tcase_add_test(tc, optimizer_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("clip_schedule");
    tcase_add_test(tc, clip_grad_norm_values);
    tcase_add_test(tc, clip_grad_norm_nonfinite);
    tcase_add_test(tc, clip_grad_norm_errors);
    tcase_add_test(tc, lr_schedule_matches_nanogpt);
    suite_add_tcase(s, tc);

    tc = tcase_create("training");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, grad_accumulation_equals_big_batch);
    tcase_add_test(tc, tiny_training_run);
    suite_add_tcase(s, tc);
    return s;
}

FG_TEST_MAIN(mk)
