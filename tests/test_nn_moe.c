/* Suite "nn_moe": the Mixture-of-Experts layer of flashgrad/moe.h on the CPU
 * in f64. Routing, gates, load-balancing loss and capacity overflow on a hand
 * case whose router weights fix every token's experts; outputs against the
 * experts run on single tokens; gradients (top-1 and top-2, with and without
 * overflow, linear and GQA-attention routers) against finite differences
 * where the routing is locally constant (margins asserted); errors. */
#include <stdio.h>
#include "testutil.h"

#define F64 FG_F64
#define CPU FG_CPU

static double *host(const fg_tensor *t)
{
    int64_t n = fg_numel(t);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    read_f64(t, v, n);
    return v;
}

static void set_values(fg_tensor *t, const double *v)
{
    fg_tensor *s = t64(v, fg_ndim(t), fg_shape(t));
    ck_assert_int_eq(fg_copy_(t, s), FG_OK);
    fg_free(s);
}

static void scale_(fg_tensor *t, double a)
{
    bool prev = fg_set_grad_enabled(false);
    ck_assert_int_eq(fg_copy_(t, fg_mul_scalar(t, a)), FG_OK);
    fg_set_grad_enabled(prev);
}

/* The hand case: C = 2, E = 3, router W = [[2, 0, -2], [0, 2, 0]] and four
 * tokens with logits
 *   t0 (1, 0)    -> ( 2,   0,   -2  )  experts by rank 0, 1, 2
 *   t1 (0.2, 1)  -> ( 0.4, 2,   -0.4)  1, 0, 2
 *   t2 (-1, 0)   -> (-2,   0,    2  )  2, 1, 0
 *   t3 (1, 0.5)  -> ( 2,   1,   -2  )  0, 1, 2                              */
static const double HX[8] = {1, 0, 0.2, 1, -1, 0, 1, 0.5};
static const double HW[6] = {2, 0, -2, 0, 2, 0};
static const int64_t RANK[4][3] = {{0, 1, 2}, {1, 0, 2}, {2, 1, 0}, {0, 1, 2}};

static void hand_probs(double p[4][3])
{
    for (int t = 0; t < 4; t++) {
        double l[3], z = 0;
        for (int e = 0; e < 3; e++) z += exp(l[e] = HX[2 * t] * HW[e] + HX[2 * t + 1] * HW[3 + e]);
        for (int e = 0; e < 3; e++) p[t][e] = exp(l[e]) / z;
    }
}

static void init_hand(fg_nn_moe *m, fg_generator *gen, int64_t k, double cf)
{
    fg_nn_moe_config cfg = {.n_embd = 2, .n_expert = 3, .top_k = k, .expert_hidden = 5, .capacity_factor = cf,
                            .bias = true};
    ck_assert_int_eq(fg_nn_moe_init(m, &cfg, gen, CPU, F64), FG_OK);
    set_values(m->router.weight, HW);
}

/* want (4, 2) = sum over kept slots of gate * expert(x_t), experts run on single rows */
static void expected_output(fg_nn_moe *m, const double gate[4][2], const int64_t kept[4][2], int64_t k, double *want)
{
    memset(want, 0, 8 * sizeof *want);
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < k; i++) {
            if (!kept[t][i]) continue;
            fg_tensor *y = fg_nn_mlp_forward(&m->experts[RANK[t][i]], t64(HX + 2 * t, FG_SHAPE(1, 2)), false, NULL);
            double v[2];
            read_f64(y, v, 2);
            want[2 * t] += gate[t][i] * v[0], want[2 * t + 1] += gate[t][i] * v[1];
        }
}

static void check_hand(fg_generator *gen, int64_t k, double cf, const int64_t kept[4][2], const int64_t load[3],
                       int64_t cap, int64_t dropped)
{
    fg_nn_moe m;
    init_hand(&m, gen, k, cf);
    fg_tensor *x = t64(HX, FG_SHAPE(1, 4, 2)); /* (B, T, C) */
    fg_nn_moe_output o;
    fg_tensor *y = fg_nn_moe_forward(&m, x, false, NULL, &o);
    ck_shape(y, 3, (int64_t[]){1, 4, 2});
    double p[4][3], gate[4][2], want[8];
    hand_probs(p);
    ck_tensor_values(o.probs, (double[]){p[0][0], p[0][1], p[0][2], p[1][0], p[1][1], p[1][2], p[2][0], p[2][1],
                                         p[2][2], p[3][0], p[3][1], p[3][2]},
                     12, 1e-14);
    /* chosen experts, best first */
    int64_t ch[8];
    ck_assert_int_eq(fg_copy_to_host(o.experts, ch, (size_t)(4 * k) * sizeof *ch), FG_OK);
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < k; i++) ck_assert_int_eq(ch[t * k + i], RANK[t][i]);
    /* gates: top-1 the probability itself, top-2 renormalised over the pair */
    for (int t = 0; t < 4; t++) {
        const double a = p[t][RANK[t][0]], b = p[t][RANK[t][1]];
        gate[t][0] = k == 1 ? a : a / (a + b);
        gate[t][1] = b / (a + b);
    }
    double gv[8];
    read_f64(o.gates, gv, 4 * k);
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < k; i++) ck_close(gv[t * k + i], gate[t][i], 1e-14);
    /* aux = E sum_e f_e P_e: first choices 0, 1, 2, 0 -> f = (1/2, 1/4, 1/4) */
    const double f[3] = {0.5, 0.25, 0.25};
    double aux = 0;
    for (int e = 0; e < 3; e++) aux += f[e] * (p[0][e] + p[1][e] + p[2][e] + p[3][e]) / 4;
    ck_close(fg_item(o.aux_loss), 3 * aux, 1e-14);
    /* capacity, kept slots, statistics */
    int64_t kv[8];
    ck_assert_int_eq(fg_copy_to_host(o.kept, kv, (size_t)(4 * k) * sizeof *kv), FG_OK);
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < k; i++) ck_assert_msg(kv[t * k + i] == kept[t][i], "slot (%d, %d) kept %lld", t, i, (long long)kv[t * k + i]);
    ck_assert_int_eq(m.capacity, cap);
    ck_assert_int_eq(m.n_dropped, dropped);
    ck_assert_int_eq(m.n_tokens, 4);
    const int64_t top1[3] = {2, 1, 1};
    for (int e = 0; e < 3; e++) {
        ck_assert_int_eq(m.load[e], load[e]);
        ck_assert_int_eq(m.top1[e], top1[e]);
    }
    /* outputs: kept slots only; a token with every slot dropped gets 0 (x + y = x) */
    expected_output(&m, gate, kept, k, want);
    ck_tensor_values(y, want, 8, 1e-14);
    /* the same tokens as (N, C) */
    ck_same_tensor(fg_nn_moe_forward(&m, t64(HX, FG_SHAPE(4, 2)), false, NULL, NULL), fg_reshape(y, FG_SHAPE(4, 2)), 0);
    fg_nn_moe_free(&m);
}

START_TEST(test_moe_hand_routing)
{
    BEGIN;
    const int64_t all1[4][2] = {{1, 0}, {1, 0}, {1, 0}, {1, 0}}, all2[4][2] = {{1, 1}, {1, 1}, {1, 1}, {1, 1}};
    check_hand(gen, 1, 0, all1, (int64_t[]){2, 1, 1}, 4, 0); /* no limit: capacity N */
    check_hand(gen, 2, 0, all2, (int64_t[]){3, 4, 1}, 4, 0);
    check_hand(gen, 2, 2.0, all2, (int64_t[]){3, 4, 1}, 4, 0); /* ceil(2 * 4 * 2 / 3) = 6, capped at N */
    END;
}
END_TEST

START_TEST(test_moe_capacity_overflow)
{
    BEGIN;
    /* top-1, capacity ceil(0.75 * 4 / 3) = 1: t3 (second token of expert 0) overflows and passes through */
    const int64_t k1[4][2] = {{1, 0}, {1, 0}, {1, 0}, {0, 0}};
    check_hand(gen, 1, 0.75, k1, (int64_t[]){1, 1, 1}, 1, 1);
    /* top-2, capacity ceil(0.75 * 8 / 3) = 2. First choices: e0 {t0, t3}, e1 {t1}, e2 {t2};
     * then second choices in token order: t0 -> e1 kept (e1 full), t1 -> e0 dropped,
     * t2 -> e1 dropped, t3 -> e1 dropped. */
    const int64_t k2[4][2] = {{1, 1}, {1, 0}, {1, 0}, {1, 0}};
    check_hand(gen, 2, 0.75, k2, (int64_t[]){2, 2, 1}, 2, 3);
    /* a zero router: every probability 1/E, ties pick expert 0, aux = E * 1 * (1/E) = 1 */
    fg_nn_moe m;
    init_hand(&m, gen, 1, 0.75);
    set_values(m.router.weight, (double[]){0, 0, 0, 0, 0, 0});
    fg_nn_moe_output o;
    fg_tensor *x = t64(HX, FG_SHAPE(4, 2));
    fg_tensor *y = fg_nn_moe_forward(&m, x, false, NULL, &o);
    ck_close(fg_item(o.aux_loss), 1.0, 1e-15);
    ck_assert(m.load[0] == 1 && m.load[1] == 0 && m.n_dropped == 3);
    double v[8];
    read_f64(y, v, 8);
    for (int i = 2; i < 8; i++) ck_assert(v[i] == 0);
    /* residual pass-through of the dropped tokens (below) */
    double r[8];
    read_f64(fg_add(x, y), r, 8);
    for (int i = 2; i < 8; i++) ck_assert(r[i] == HX[i]);
    fg_nn_moe_free(&m);
    /* capacity = ceil(1.1 * 25 * 2 / 5) = 11 exactly (in doubles the product is 11.000000000000002) */
    fg_nn_moe_config c5 = {.n_embd = 2, .n_expert = 5, .top_k = 2, .expert_hidden = 2, .capacity_factor = 1.1};
    ck_assert_int_eq(fg_nn_moe_init(&m, &c5, gen, CPU, F64), FG_OK);
    ck_assert_ptr_nonnull(fg_nn_moe_forward(&m, fg_randn(gen, FG_SHAPE(25, 2), F64, CPU), false, NULL, NULL));
    ck_assert_int_eq(m.capacity, 11);
    int64_t total = m.n_dropped;
    for (int e = 0; e < 5; e++) total += m.load[e], ck_assert(m.load[e] <= 11);
    ck_assert_int_eq(total, 50);
    fg_nn_moe_free(&m);
    END;
}
END_TEST

/* ---------------------------------------------------------------- gradients */

static fg_tensor *f_moe(fg_tensor *const *in, void *ctx)
{
    fg_nn_moe_output o;
    fg_tensor *y = fg_nn_moe_forward(ctx, in[0], false, NULL, &o);
    fg_tensor *parts[2] = {fg_reshape(y, FG_SHAPE(-1)), fg_reshape(o.aux_loss, FG_SHAPE(1))};
    return fg_concat(2, parts, 0); /* the output and the aux loss, both checked */
}

/* The routing must not flip under finite-difference steps: the probability
 * gaps that decide the top-k must be well above the perturbations. */
static bool margins_ok(fg_nn_moe *m, fg_tensor *x)
{
    fg_nn_moe_output o;
    ck_assert_ptr_nonnull(fg_nn_moe_forward(m, x, false, NULL, &o));
    const int64_t E = m->cfg.n_expert, k = m->cfg.top_k, N = fg_size(o.probs, 0);
    double *p = host(o.probs);
    bool ok = true;
    for (int64_t t = 0; t < N; t++) {
        double s[8];
        memcpy(s, p + t * E, (size_t)E * sizeof *s);
        for (int64_t i = 0; i < E; i++) /* sort descending */
            for (int64_t j = i + 1; j < E; j++)
                if (s[j] > s[i]) {
                    double tmp = s[i];
                    s[i] = s[j], s[j] = tmp;
                }
        for (int64_t i = 0; i < k && i + 1 < E; i++) ok = ok && s[i] - s[i + 1] > 1e-3;
    }
    free(p);
    return ok;
}

/* Random x (B, T, C) requiring grad, redrawn until the routing margins hold. */
static fg_tensor *well_separated_input(fg_nn_moe *m, fg_generator *gen, int64_t B, int64_t T)
{
    for (int tries = 0; tries < 50; tries++) {
        fg_tensor *x = rand_param(gen, FG_SHAPE(B, T, m->cfg.n_embd), -1, 1);
        if (margins_ok(m, x)) return x;
        fg_free(x);
    }
    ck_abort_msg("no input with well-separated routing in 50 draws");
    return NULL;
}

static void gradcheck_moe(fg_generator *gen, int64_t k, double cf, bool expect_drops)
{
    fg_nn_moe m;
    fg_nn_moe_config cfg = {.n_embd = 4, .n_expert = 3, .top_k = k, .expert_hidden = 6, .capacity_factor = cf,
                            .bias = true};
    ck_assert_int_eq(fg_nn_moe_init(&m, &cfg, gen, CPU, F64), FG_OK);
    scale_(m.router.weight, 6.0); /* spread the router's probabilities */
    fg_tensor *x = well_separated_input(&m, gen, 2, 3);
    ck_assert(expect_drops ? m.n_dropped > 0 : m.n_dropped == 0);
    fg_tensor *in[14] = {x, m.router.weight};
    for (int e = 0; e < 3; e++) {
        in[2 + 4 * e] = m.experts[e].c_fc.weight, in[3 + 4 * e] = m.experts[e].c_fc.bias;
        in[4 + 4 * e] = m.experts[e].c_proj.weight, in[5 + 4 * e] = m.experts[e].c_proj.bias;
    }
    ck_gradcheck(f_moe, &m, 14, in);
    fg_nn_moe_free(&m);
}

START_TEST(test_moe_gradcheck)
{
    BEGIN;
    gradcheck_moe(gen, 1, 0, false);
    gradcheck_moe(gen, 2, 0, false);
    gradcheck_moe(gen, 1, 0.5, true); /* capacity ceil(0.5 * 6 / 3) = 1 */
    gradcheck_moe(gen, 2, 0.5, true); /* capacity 2 */
    END;
}
END_TEST

START_TEST(test_moe_attention_router)
{
    BEGIN;
    /* GQA expert attention as the router: 12 query heads over 4 KV heads, memory = 3 expert embeddings */
    fg_nn_moe m;
    fg_nn_moe_config cfg = {.n_embd = 12, .n_expert = 3, .top_k = 2, .expert_hidden = 4,
                            .router = FG_MOE_ROUTER_ATTENTION};
    ck_assert_int_eq(fg_nn_moe_init(&m, &cfg, gen, CPU, F64), FG_OK);
    ck_assert(m.router.weight == NULL && m.router_attn.memory != NULL);
    ck_assert(m.router_attn.cfg.n_query_heads == 12 && m.router_attn.cfg.n_kv_heads == 4);
    ck_shape(m.router_attn.memory, 2, (int64_t[]){3, 12});
    ck_shape(m.router_attn.out_proj.weight, 2, (int64_t[]){12, 3});
    scale_(m.router_attn.out_proj.weight, 8.0);
    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_nn_moe_params(&m, "moe", reg), FG_OK);
    ck_assert_int_eq(fg_params_count(reg), 5 + 3 * 2);
    ck_assert_str_eq(fg_params_at(reg, 0)->name, "moe.router_attn.q_proj.weight");
    ck_assert_str_eq(fg_params_at(reg, 4)->name, "moe.router_attn.memory");
    ck_assert_str_eq(fg_params_at(reg, 5)->name, "moe.experts.0.c_fc.weight");
    ck_assert_str_eq(fg_params_at(reg, 10)->name, "moe.experts.2.c_proj.weight");
    fg_tensor *x = well_separated_input(&m, gen, 2, 5);
    /* the router's logits are the expert attention's output */
    fg_nn_moe_output o;
    ck_assert_ptr_nonnull(fg_nn_moe_forward(&m, x, false, NULL, &o));
    fg_tensor *lg = fg_nn_expert_attention_forward(&m.router_attn, x, NULL, false, NULL);
    ck_same_tensor(o.probs, fg_softmax(fg_reshape(lg, FG_SHAPE(10, 3)), -1), 1e-15);
    fg_tensor *in[12] = {x};
    for (int i = 0; i < 11; i++) in[i + 1] = fg_params_at(reg, i)->t;
    ck_gradcheck(f_moe, &m, 12, in);
    fg_params_free(reg);
    fg_nn_moe_free(&m);
    END;
}
END_TEST

/* Autograd nodes a forward of the layer leaves alive (its graph). */
static int64_t graph_nodes(fg_nn_moe *m, fg_tensor *x, fg_nn_moe_output *o, fg_tensor **y)
{
    fg_memory_stats a, b;
    fg_get_memory_stats(&a);
    *y = fg_nn_moe_forward(m, x, false, NULL, o);
    ck_assert_ptr_nonnull(*y);
    fg_get_memory_stats(&b);
    return b.live_nodes - a.live_nodes;
}

/* loss = sum(y * r) + aux; returns the gradients of x and of every parameter (copies). */
static void backend_grads(fg_nn_moe *m, fg_params *reg, fg_tensor *x, fg_tensor *r, fg_tensor **grads,
                          int64_t *nodes)
{
    fg_nn_moe_output o;
    fg_tensor *y;
    *nodes = graph_nodes(m, x, &o, &y);
    ck_assert_int_eq(fg_backward(fg_add(fg_sum_all(fg_mul(y, r)), o.aux_loss)), FG_OK);
    grads[0] = fg_clone(fg_grad(x));
    fg_zero_grad(x);
    for (int64_t i = 0; i < fg_params_count(reg); i++) {
        fg_tensor *t = fg_params_at(reg, i)->t;
        grads[i + 1] = fg_grad(t) ? fg_clone(fg_grad(t)) : fg_zeros_like(t);
    }
    ck_assert_int_eq(fg_params_zero_grad(reg), FG_OK);
}

START_TEST(test_moe_router_backend)
{
    BEGIN;
    /* The attention router's backend can be pinned (router_backend) and switched between forwards
     * (router_attn.cfg.backend): FLASH and MATH give the same output and gradients, and the math
     * backend's forward leaves its materialised graph (more autograd nodes) -- the option reaches
     * fg_attention. */
    fg_nn_moe m;
    fg_nn_moe_config cfg = {.n_embd = 12, .n_expert = 3, .top_k = 2, .expert_hidden = 4, .capacity_factor = 1.0,
                            .bias = true, .router = FG_MOE_ROUTER_ATTENTION, .router_memory = 5,
                            .router_backend = FG_ATTN_FLASH};
    ck_assert_int_eq(fg_nn_moe_init(&m, &cfg, gen, CPU, F64), FG_OK);
    ck_assert_int_eq(m.router_attn.cfg.backend, FG_ATTN_FLASH);
    scale_(m.router_attn.out_proj.weight, 8.0);
    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_nn_moe_params(&m, "moe", reg), FG_OK);
    const int64_t n = fg_params_count(reg) + 1;
    fg_tensor *x = well_separated_input(&m, gen, 2, 7);
    fg_tensor *r = fg_randn(gen, FG_SHAPE(2, 7, 12), F64, CPU);
    fg_tensor *g_flash[32], *g_math[32];
    ck_assert_int_le(n, 32);
    int64_t nodes_flash, nodes_math;
    backend_grads(&m, reg, x, r, g_flash, &nodes_flash);
    m.router_attn.cfg.backend = FG_ATTN_MATH;
    backend_grads(&m, reg, x, r, g_math, &nodes_math);
    ck_assert_int_gt(nodes_math, nodes_flash);
    for (int64_t i = 0; i < n; i++) ck_same_tensor(g_flash[i], g_math[i], 1e-12);
    /* an unknown backend: refused at init, and by fg_attention when set afterwards */
    m.router_attn.cfg.backend = (fg_attn_backend)7;
    fg_clear_error();
    ck_assert_ptr_null(fg_nn_moe_forward(&m, x, false, NULL, NULL));
    ck_err(FG_ERR_INVALID, "backend 7", NULL);
    fg_params_free(reg);
    fg_nn_moe_free(&m);
    fg_nn_moe_config bad = cfg;
    bad.router_backend = (fg_attn_backend)7;
    ck_assert_int_eq(fg_nn_moe_init(&m, &bad, gen, CPU, F64), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "fg_nn_moe", "attention backend 7");
    ck_assert_ptr_null(m.experts);
    END;
}
END_TEST

START_TEST(test_moe_names_dropout_errors)
{
    BEGIN;
    fg_nn_moe m;
    fg_nn_moe_config cfg = {.n_embd = 4, .n_expert = 2, .top_k = 1, .dropout = 0.5, .bias = true};
    ck_assert_int_eq(fg_nn_moe_init(&m, &cfg, gen, CPU, F64), FG_OK);
    ck_shape(m.experts[1].c_fc.weight, 2, (int64_t[]){4, 16});
    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_nn_moe_params(&m, "h.0.moe", reg), FG_OK);
    ck_assert_int_eq(fg_params_count(reg), 1 + 2 * 4);
    const char *names[] = {"h.0.moe.router.weight", "h.0.moe.experts.0.c_fc.weight", "h.0.moe.experts.0.c_fc.bias",
                           "h.0.moe.experts.0.c_proj.weight", "h.0.moe.experts.0.c_proj.bias",
                           "h.0.moe.experts.1.c_fc.weight"};
    for (int i = 0; i < 6; i++) ck_assert_str_eq(fg_params_at(reg, i)->name, names[i]);
    ck_assert(fg_params_at(reg, 0)->decay && fg_params_at(reg, 1)->decay && !fg_params_at(reg, 2)->decay);
    fg_params_free(reg);
    /* dropout in the experts, when training */
    fg_tensor *x = fg_randn(gen, FG_SHAPE(3, 4), F64, CPU);
    fg_tensor *e = fg_nn_moe_forward(&m, x, false, gen, NULL);
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(fg_nn_moe_forward(&m, x, true, gen, NULL), e, 0, 0, &r), FG_OK);
    ck_assert(r.n_mismatch > 0);
    /* bad inputs */
    fg_clear_error();
    ck_assert_ptr_null(fg_nn_moe_forward(&m, fg_zeros(FG_SHAPE(3, 5), F64, CPU), false, NULL, NULL));
    ck_err(FG_ERR_SHAPE, "fg_nn_moe(C=4, E=2, k=1)", "(3, 5)");
    ck_assert_ptr_null(fg_nn_moe_forward(&m, fg_zeros(FG_SHAPE(1, 1, 3, 4), F64, CPU), false, NULL, NULL));
    ck_err(FG_ERR_SHAPE, "4 dims", NULL);
    ck_assert_ptr_null(fg_nn_moe_forward(&m, fg_zeros(FG_SHAPE(0, 4), F64, CPU), false, NULL, NULL));
    ck_err(FG_ERR_SHAPE, "no tokens", NULL);
    fg_nn_moe_free(&m);
    fg_clear_error();
    ck_assert_ptr_null(fg_nn_moe_forward(&m, x, false, NULL, NULL));
    ck_err(FG_ERR_STATE, "not initialised", NULL);

    const struct {
        fg_nn_moe_config c;
        const char *needle;
    } bad[] = {
        {{.n_embd = 4, .n_expert = 4, .top_k = 3}, "top_k 3 (1 or 2)"},
        {{.n_embd = 4, .n_expert = 4, .top_k = 0}, "top_k 0"},
        {{.n_embd = 4, .n_expert = 1, .top_k = 2}, "top_k 2 > n_expert 1"},
        {{.n_embd = 4, .n_expert = 0, .top_k = 1}, "n_expert 0"},
        {{.n_embd = 4, .n_expert = 2, .top_k = 1, .capacity_factor = NAN}, "capacity_factor"},
        {{.n_embd = 4, .n_expert = 2, .top_k = 1, .dropout = 1}, "dropout"},
        {{.n_embd = 10, .n_expert = 2, .top_k = 1, .router = FG_MOE_ROUTER_ATTENTION}, "n_query_heads 12"},
        {{.n_embd = 8, .n_expert = 2, .top_k = 1, .router = FG_MOE_ROUTER_ATTENTION, .router_q_heads = 4,
          .router_kv_heads = 3},
         "not a multiple of n_kv_heads 3"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(fg_nn_moe_init(&m, &bad[i].c, gen, CPU, F64), FG_ERR_INVALID);
        ck_err(FG_ERR_INVALID, "fg_nn_moe", bad[i].needle);
        ck_assert_ptr_null(m.experts);
    }
    END;
}
END_TEST

static Suite *nn_moe_suite(void)
{
    Suite *s = suite_create("nn_moe");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_moe_hand_routing);
    tcase_add_test(tc, test_moe_capacity_overflow);
    tcase_add_test(tc, test_moe_gradcheck);
    tcase_add_test(tc, test_moe_attention_router);
    tcase_add_test(tc, test_moe_router_backend);
    tcase_add_test(tc, test_moe_names_dropout_errors);
    suite_add_tcase(s, tc);
    return s;
}

FG_TEST_MAIN(nn_moe_suite)
