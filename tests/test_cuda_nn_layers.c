/* Suite "cuda_nn_layers": the layers on the GPU in f32 against the CPU in f64,
 * forward and backward: a tiny GQA GPT (logits, loss, the gradient of every
 * parameter; without and with dropout, whose masks are the same on both
 * devices for the same generator state), KV-cache decoding on the GPU equal
 * to its full forward, a bf16-autocast training step, and the MoE layer
 * (linear router with top-2 and capacity, GQA expert-attention router with a
 * learned memory shared by the batch) with its routing, aux loss and
 * gradients. The two models are initialised from two generators with the same
 * seed, and the inits are checked equal (f32 rounding) before the parameters
 * are spread (on the CPU, copied to the GPU) to make the comparison sharper.
 *
 * Tolerances (f32 GPU vs f64 CPU; relative to max |reference| of each tensor):
 * forward 1e-4 and gradients 1e-3 (a few f32 GEMMs, flash attention in
 * 3xTF32, layernorm and softmax in a chain; the gradients of a 2-layer model
 * sum over B T = 32 positions).
 *
 * FG_TEST_PARITY_ON_CPU=1 runs the same comparisons with the "device" model
 * on the CPU in f32 (to check the suite itself on a machine without a GPU). */
#include <stdio.h>
#include "cudatest.h"

static fg_device DEV = FG_CUDA;

static double max_abs(const fg_tensor *t)
{
    int64_t n = fg_numel(t);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v), m = 0;
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(fg_to_f64_array(t, v, n), FG_OK);
    for (int64_t i = 0; i < n; i++) m = fabs(v[i]) > m ? fabs(v[i]) : m;
    free(v);
    return m;
}

/* got matches ref within tol relative to max |ref| (atol) and elementwise (rtol). */
static void ck_close_rel(const fg_tensor *got, const fg_tensor *ref, double tol, const char *what)
{
    ck_assert_msg(got != NULL, "%s: result is NULL: %s", what, fg_last_error());
    ck_assert_msg(ref != NULL, "%s: reference is NULL: %s", what, fg_last_error());
    const double m = max_abs(ref);
    ck_matches(got, ref, tol * (m > 0 ? m : 1.0), tol, what);
}

static void randomize(fg_tensor *t, fg_generator *g, double lo, double hi)
{
    fg_tensor *s = fg_uniform(g, lo, hi, fg_ndim(t), fg_shape(t), fg_dtype_of(t), fg_device_of(t));
    ck_assert_int_eq(fg_copy_(t, s), FG_OK);
    fg_free(s);
}

/* The two registries list the same parameters in the same order: checks the
 * names, that the inits agree, then spreads the CPU values (gains around 1,
 * biases +-0.2, matrices +-0.3) and copies them to the device side. */
static void sync_params(fg_params *rc, fg_params *rd, fg_generator *g)
{
    ck_assert_int_eq(fg_params_count(rc), fg_params_count(rd));
    for (int64_t i = 0; i < fg_params_count(rc); i++) {
        const fg_param *pc = fg_params_at(rc, i), *pd = fg_params_at(rd, i);
        ck_assert_str_eq(pc->name, pd->name);
        ck_assert_int_eq(fg_device_of(pd->t), DEV);
        ck_assert_int_eq(fg_dtype_of(pd->t), FG_F32);
        char what[300];
        snprintf(what, sizeof what, "init of %s", pc->name);
        ck_matches(pd->t, pc->t, 1e-9, 1e-6, what); /* the same draws, rounded to f32 */
        if (strstr(pc->name, "ln_") && strstr(pc->name, ".weight"))
            randomize(pc->t, g, 0.7, 1.3);
        else if (fg_ndim(pc->t) == 1)
            randomize(pc->t, g, -0.2, 0.2);
        else if (!strstr(pc->name, "memory"))
            randomize(pc->t, g, -0.3, 0.3);
        ck_assert_int_eq(fg_copy_(pd->t, pc->t), FG_OK);
    }
}

static void ck_grads(fg_params *rc, fg_params *rd, double tol)
{
    for (int64_t i = 0; i < fg_params_count(rc); i++) {
        const fg_param *pc = fg_params_at(rc, i), *pd = fg_params_at(rd, i);
        char what[300];
        snprintf(what, sizeof what, "grad of %s", pc->name);
        ck_assert_msg(fg_grad(pc->t) && fg_grad(pd->t), "%s missing", what);
        ck_close_rel(fg_grad(pd->t), fg_grad(pc->t), tol, what);
    }
}

/* ---------------------------------------------------------------- GPT */

static const fg_gpt_config CFG = {.vocab_size = 11, .block_size = 16, .n_layer = 2, .n_head = 4, .n_kv_head = 2,
                                  .n_embd = 32, .dropout = 0.0, .bias = true};

typedef struct {
    fg_gpt c, d;
    fg_params *rc, *rd;
} gpt_pair;

static void gpt_pair_init(gpt_pair *p, const fg_gpt_config *cfg, fg_generator *spread)
{
    fg_generator *g1 = fg_generator_new(1234), *g2 = fg_generator_new(1234);
    ck_assert_int_eq(fg_gpt_init(&p->c, cfg, g1, FG_CPU, FG_F64), FG_OK);
    ck_assert_msg(fg_gpt_init(&p->d, cfg, g2, DEV, FG_F32) == FG_OK, "gpt on device: %s", fg_last_error());
    p->rc = fg_params_new(), p->rd = fg_params_new();
    ck_assert_int_eq(fg_gpt_params(&p->c, NULL, p->rc), FG_OK);
    ck_assert_int_eq(fg_gpt_params(&p->d, NULL, p->rd), FG_OK);
    sync_params(p->rc, p->rd, spread);
    fg_generator_free(g1), fg_generator_free(g2);
}

static void gpt_pair_free(gpt_pair *p)
{
    fg_params_free(p->rc), fg_params_free(p->rd);
    fg_gpt_free(&p->c), fg_gpt_free(&p->d);
}

static void gpt_parity(fg_generator *gen, double dropout)
{
    fg_gpt_config cfg = CFG;
    cfg.dropout = dropout;
    gpt_pair p;
    gpt_pair_init(&p, &cfg, gen);
    fg_tensor *idx = fg_randint(gen, 0, cfg.vocab_size, FG_SHAPE(2, 16), FG_I64, FG_CPU);
    fg_tensor *tgt = fg_randint(gen, 0, cfg.vocab_size, FG_SHAPE(2, 16), FG_I64, FG_CPU);
    fg_generator *d1 = fg_generator_new(99), *d2 = fg_generator_new(99); /* dropout streams in the same state */
    fg_tensor *lc = NULL, *ld = NULL;
    const bool training = dropout > 0;
    fg_tensor *yc = fg_gpt_forward(&p.c, idx, tgt, training, d1, &lc);
    fg_tensor *yd = fg_gpt_forward(&p.d, fg_to(idx, DEV, FG_I64), fg_to(tgt, DEV, FG_I64), training, d2, &ld);
    ck_assert_msg(yd && ld, "gpt forward on device: %s", fg_last_error());
    ck_assert_int_eq(fg_device_of(yd), DEV);
    ck_close_rel(yd, yc, 1e-4, "gpt logits");
    ck_close(fg_item(ld), fg_item(lc), 1e-5 * fmax(1.0, fabs(fg_item(lc))));
    ck_assert_int_eq(fg_generator_offset(d1), fg_generator_offset(d2));
    ck_assert_int_eq(fg_backward(lc), FG_OK);
    ck_assert_msg(fg_backward(ld) == FG_OK, "gpt backward on device: %s", fg_last_error());
    ck_grads(p.rc, p.rd, 1e-3);
    fg_generator_free(d1), fg_generator_free(d2);
    gpt_pair_free(&p);
}

START_TEST(test_gpt_parity)
{
    BEGIN;
    gpt_parity(gen, 0.0);
    END;
}
END_TEST

START_TEST(test_gpt_parity_dropout)
{
    BEGIN;
    gpt_parity(gen, 0.1); /* embedding, attention-probability and residual dropout: same masks on both devices */
    END;
}
END_TEST

START_TEST(test_gpt_kv_cache_device)
{
    BEGIN;
    gpt_pair p;
    gpt_pair_init(&p, &CFG, gen);
    fg_tensor *idx = fg_to(fg_randint(gen, 0, CFG.vocab_size, FG_SHAPE(3, 16), FG_I64, FG_CPU), DEV, FG_I64);
    fg_tensor *full = fg_gpt_forward(&p.d, idx, NULL, false, NULL, NULL); /* (3, 16, V) */
    ck_assert_msg(full != NULL, "%s", fg_last_error());
    fg_gpt_cache c;
    ck_assert_int_eq(fg_gpt_cache_init(&c, &p.d, 3, 0), FG_OK);
    ck_assert_int_eq(fg_device_of(c.layer[0].k), DEV);
    const int64_t chunk[5] = {5, 1, 1, 4, 5};
    for (int k = 0, t = 0; k < 5; t += (int)chunk[k], k++) {
        fg_tensor *lg = fg_gpt_forward_cached(&p.d, &c, fg_contiguous(fg_narrow(idx, 1, t, chunk[k])));
        char what[64];
        snprintf(what, sizeof what, "cached logits at %d..%d", t, t + (int)chunk[k]);
        ck_close_rel(lg, fg_contiguous(fg_narrow(full, 1, t, chunk[k])), 1e-4, what);
    }
    fg_gpt_cache_free(&c);
    /* greedy sampling runs on the device and returns device ids */
    fg_tensor *out = fg_gpt_generate(&p.d, fg_narrow(idx, 1, 0, 2), 20, 0.0, 0, gen);
    ck_assert_msg(out != NULL, "%s", fg_last_error());
    ck_assert_int_eq(fg_device_of(out), DEV);
    ck_assert_int_eq(fg_size(out, 1), 22);
    gpt_pair_free(&p);
    END;
}
END_TEST

START_TEST(test_gpt_autocast_bf16)
{
    BEGIN;
    if (DEV != FG_CUDA) { /* autocast only applies to CUDA tensors */
        END;
        return;
    }
    gpt_pair p;
    gpt_pair_init(&p, &CFG, gen);
    fg_tensor *idx = fg_to(fg_randint(gen, 0, CFG.vocab_size, FG_SHAPE(2, 16), FG_I64, FG_CPU), DEV, FG_I64);
    fg_tensor *tgt = fg_to(fg_randint(gen, 0, CFG.vocab_size, FG_SHAPE(2, 16), FG_I64, FG_CPU), DEV, FG_I64);
    fg_tensor *l32 = NULL, *l16 = NULL;
    ck_assert_ptr_nonnull(fg_gpt_forward(&p.d, idx, tgt, false, NULL, &l32));
    ck_assert_int_eq(fg_autocast_begin(FG_BF16), FG_OK);
    fg_tensor *y = fg_gpt_forward(&p.d, idx, tgt, false, NULL, &l16);
    ck_assert_msg(y && l16, "gpt under bf16 autocast: %s", fg_last_error());
    ck_assert_int_eq(fg_dtype_of(y), FG_F32); /* logits for the loss and sampling in f32 */
    ck_assert_msg(fg_backward(l16) == FG_OK, "backward under autocast: %s", fg_last_error());
    ck_assert_int_eq(fg_autocast_end(), FG_OK);
    ck_close(fg_item(l16), fg_item(l32), 3e-2 * fabs(fg_item(l32)));
    for (int64_t i = 0; i < fg_params_count(p.rd); i++) {
        fg_tensor *gr = fg_grad(fg_params_at(p.rd, i)->t);
        ck_assert_msg(gr && fg_dtype_of(gr) == FG_F32, "%s: f32 gradient", fg_params_at(p.rd, i)->name);
        ck_assert(isfinite(max_abs(gr)));
    }
    gpt_pair_free(&p);
    END;
}
END_TEST

/* A training step's forward and backward on the GPU never wait for it (the
 * position embeddings are a view of wpe, not an uploaded index tensor). */
START_TEST(test_gpt_step_no_host_sync)
{
    BEGIN;
    if (DEV != FG_CUDA) {
        END;
        return;
    }
    gpt_pair p;
    gpt_pair_init(&p, &CFG, gen);
    fg_tensor *idx = fg_to(fg_randint(gen, 0, CFG.vocab_size, FG_SHAPE(2, 16), FG_I64, FG_CPU), DEV, FG_I64);
    fg_tensor *tgt = fg_to(fg_randint(gen, 0, CFG.vocab_size, FG_SHAPE(2, 16), FG_I64, FG_CPU), DEV, FG_I64);
    fg_cuda_memory_stats a, b;
    ck_assert_int_eq(fg_cuda_get_memory_stats(&a), FG_OK);
    fg_tensor *loss = NULL;
    ck_assert_ptr_nonnull(fg_gpt_forward(&p.d, idx, tgt, true, gen, &loss));
    ck_assert_int_eq(fg_backward(loss), FG_OK);
    ck_assert_int_eq(fg_cuda_get_memory_stats(&b), FG_OK);
    ck_assert_int_eq(b.n_host_syncs, a.n_host_syncs);
    ck_assert(isfinite(fg_item(loss)));
    gpt_pair_free(&p);
    END;
}
END_TEST

/* ---------------------------------------------------------------- MoE */

/* Largest gap failure over the tokens' top-k decision (f64 probabilities). */
static bool routing_separated(const fg_tensor *probs, int64_t k)
{
    const int64_t N = fg_size(probs, 0), E = fg_size(probs, 1);
    double *p = malloc((size_t)(N * E) * sizeof *p);
    ck_assert_int_eq(fg_to_f64_array(probs, p, N * E), FG_OK);
    bool ok = true;
    for (int64_t t = 0; t < N; t++)
        for (int64_t r = 0; r < k; r++) { /* the r-th largest beats the (r+1)-th by 1e-3 */
            double a = -1, b = -1;
            for (int64_t e = 0; e < E; e++) {
                int64_t above = 0;
                for (int64_t f = 0; f < E; f++) above += p[t * E + f] > p[t * E + e];
                if (above == r) a = p[t * E + e];
                if (above == r + 1) b = p[t * E + e];
            }
            ok = ok && a - b > 1e-3;
        }
    free(p);
    return ok;
}

static void moe_parity(fg_generator *gen, const fg_nn_moe_config *cfg)
{
    fg_nn_moe mc, md;
    fg_generator *g1 = fg_generator_new(77), *g2 = fg_generator_new(77);
    ck_assert_int_eq(fg_nn_moe_init(&mc, cfg, g1, FG_CPU, FG_F64), FG_OK);
    ck_assert_msg(fg_nn_moe_init(&md, cfg, g2, DEV, FG_F32) == FG_OK, "moe on device: %s", fg_last_error());
    fg_params *rc = fg_params_new(), *rd = fg_params_new();
    ck_assert_int_eq(fg_nn_moe_params(&mc, "moe", rc), FG_OK);
    ck_assert_int_eq(fg_nn_moe_params(&md, "moe", rd), FG_OK);
    sync_params(rc, rd, gen);
    /* inputs whose routing is well separated, so f32 rounding cannot flip it */
    fg_tensor *x = NULL;
    fg_nn_moe_output oc, od;
    for (int tries = 0; tries < 50 && !x; tries++) {
        x = fg_uniform(gen, -1, 1, FG_SHAPE(2, 8, cfg->n_embd), FG_F64, FG_CPU);
        ck_assert_ptr_nonnull(fg_nn_moe_forward(&mc, x, false, NULL, &oc));
        if (!routing_separated(oc.probs, cfg->top_k)) x = NULL;
    }
    ck_assert_msg(x != NULL, "no input with well-separated routing");
    ck_assert_int_eq(fg_set_requires_grad(x, true), FG_OK);
    fg_tensor *xd = fg_to(fg_detach(x), DEV, FG_F32);
    ck_assert_int_eq(fg_set_requires_grad(xd, true), FG_OK);
    fg_tensor *yc = fg_nn_moe_forward(&mc, x, false, NULL, &oc);
    fg_tensor *yd = fg_nn_moe_forward(&md, xd, false, NULL, &od);
    ck_assert_msg(yd != NULL, "moe forward on device: %s", fg_last_error());
    ck_same_tensor(od.experts, oc.experts, 0);
    ck_same_tensor(od.kept, oc.kept, 0);
    for (int64_t e = 0; e < cfg->n_expert; e++) ck_assert_int_eq(md.load[e], mc.load[e]);
    ck_assert_int_eq(md.n_dropped, mc.n_dropped);
    ck_close_rel(od.probs, oc.probs, 1e-4, "moe probs");
    ck_close_rel(od.gates, oc.gates, 1e-4, "moe gates");
    ck_close_rel(yd, yc, 1e-4, "moe output");
    ck_close(fg_item(od.aux_loss), fg_item(oc.aux_loss), 1e-5);
    /* L = sum(y R) + aux on both sides */
    fg_tensor *r = fg_randn(gen, fg_ndim(yc), fg_shape(yc), FG_F64, FG_CPU);
    fg_tensor *lc = fg_add(fg_sum_all(fg_mul(yc, r)), oc.aux_loss);
    fg_tensor *ld = fg_add(fg_sum_all(fg_mul(yd, fg_to(r, DEV, FG_F32))), od.aux_loss);
    ck_assert_int_eq(fg_backward(lc), FG_OK);
    ck_assert_msg(fg_backward(ld) == FG_OK, "moe backward on device: %s", fg_last_error());
    ck_close_rel(fg_grad(xd), fg_grad(x), 1e-3, "moe grad of x");
    for (int64_t i = 0; i < fg_params_count(rc); i++) {
        const fg_param *pc = fg_params_at(rc, i), *pd = fg_params_at(rd, i);
        if (!fg_grad(pc->t)) { /* an expert that got no tokens */
            ck_assert_ptr_null(fg_grad(pd->t));
            continue;
        }
        char what[300];
        snprintf(what, sizeof what, "grad of %s", pc->name);
        ck_close_rel(fg_grad(pd->t), fg_grad(pc->t), 1e-3, what);
    }
    fg_params_free(rc), fg_params_free(rd);
    fg_nn_moe_free(&mc), fg_nn_moe_free(&md);
    fg_generator_free(g1), fg_generator_free(g2);
}

START_TEST(test_moe_parity_linear_top2)
{
    BEGIN;
    const fg_nn_moe_config cfg = {.n_embd = 16, .n_expert = 4, .top_k = 2, .expert_hidden = 24,
                                  .capacity_factor = 1.0, .bias = true};
    moe_parity(gen, &cfg);
    END;
}
END_TEST

START_TEST(test_moe_parity_attention_router)
{
    BEGIN;
    /* GQA 12 query heads / 4 KV heads over a learned memory of 6 expert embeddings shared by the batch */
    const fg_nn_moe_config cfg = {.n_embd = 24, .n_expert = 6, .top_k = 1, .expert_hidden = 32,
                                  .capacity_factor = 1.5, .router = FG_MOE_ROUTER_ATTENTION};
    moe_parity(gen, &cfg);
    END;
}
END_TEST

static Suite *mk(void)
{
    Suite *s = suite_create("cuda_nn_layers");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_gpt_parity);
    tcase_add_test(tc, test_gpt_parity_dropout);
    tcase_add_test(tc, test_gpt_kv_cache_device);
    tcase_add_test(tc, test_gpt_autocast_bf16);
    tcase_add_test(tc, test_gpt_step_no_host_sync);
    tcase_add_test(tc, test_moe_parity_linear_top2);
    tcase_add_test(tc, test_moe_parity_attention_router);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    char desc[256];
    if (getenv("FG_TEST_PARITY_ON_CPU")) {
        DEV = FG_CPU;
        printf("cuda_nn_layers: FG_TEST_PARITY_ON_CPU: the device side runs on the CPU in f32\n");
    } else if (!fg_cuda_available()) {
        printf("cuda_nn_layers: GPU suite skipped (%s)\n", fg_cuda_device_description(desc, sizeof desc));
        return 77;
    } else {
        printf("cuda_nn_layers: running on %s\n", fg_cuda_device_description(desc, sizeof desc));
    }
    SRunner *sr = srunner_create(mk());
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
