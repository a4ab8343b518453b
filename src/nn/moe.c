/* Mixture-of-Experts layer: router -> softmax -> top-k -> capacity-limited
 * dispatch to expert MLPs -> gated combine, plus the Switch load-balancing
 * loss. The routing decision is made on the host. */
#include <stdio.h>
#include <stdlib.h>
#include "nn/nn_impl.h"
#include <flashgrad/moe.h>

static const char *OP = "fg_nn_moe";

static fg_status check_config(const fg_nn_moe_config *c)
{
    if (!c) return fg__err(FG_ERR_NULL, "%s: config is NULL", OP);
    if (c->n_embd < 1 || c->n_expert < 1 || c->n_expert > INT32_MAX)
        return fg__err(FG_ERR_INVALID, "%s: n_embd %lld and n_expert %lld must be positive", OP, (long long)c->n_embd,
                       (long long)c->n_expert);
    if (c->top_k != 1 && c->top_k != 2)
        return fg__err(FG_ERR_INVALID, "%s: top_k %lld (1 or 2)", OP, (long long)c->top_k);
    if (c->top_k > c->n_expert)
        return fg__err(FG_ERR_INVALID, "%s: top_k %lld > n_expert %lld", OP, (long long)c->top_k,
                       (long long)c->n_expert);
    if (!isfinite(c->capacity_factor))
        return fg__err(FG_ERR_INVALID, "%s: capacity_factor %g (finite; <= 0 for no limit)", OP, c->capacity_factor);
    if (c->router != FG_MOE_ROUTER_LINEAR && c->router != FG_MOE_ROUTER_ATTENTION)
        return fg__err(FG_ERR_INVALID, "%s: router kind %d", OP, (int)c->router);
    if (c->expert_hidden < 0 || c->router_memory < 0)
        return fg__err(FG_ERR_INVALID, "%s: expert_hidden %lld, router_memory %lld", OP, (long long)c->expert_hidden,
                       (long long)c->router_memory);
    return FG_OK;
}

fg_status fg_nn_moe_init(fg_nn_moe *m, const fg_nn_moe_config *cfg, fg_generator *g, fg_device dev, fg_dtype dt)
{
    if (!m) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    memset(m, 0, sizeof *m);
    fg_status st = check_config(cfg);
    if (st != FG_OK) return st;
    if (!fg__nn_check_place(OP, dev, dt)) return fg_last_status();
    const int64_t C = cfg->n_embd, E = cfg->n_expert;
    m->experts = calloc((size_t)E, sizeof *m->experts);
    m->load = calloc((size_t)E, sizeof *m->load);
    m->top1 = calloc((size_t)E, sizeof *m->top1);
    if (!m->experts || !m->load || !m->top1) {
        fg_nn_moe_free(m);
        return fg__err(FG_ERR_OOM, "%s: out of host memory for %lld experts", OP, (long long)E);
    }
    m->cfg = *cfg;
    /* Draw order: router, then experts 0..E-1 (the registry order). */
    if (cfg->router == FG_MOE_ROUTER_LINEAR) {
        st = fg__nn_linear_init_std(&m->router, C, E, false, cfg->init.init_std, g, dev, dt);
    } else {
        const fg_nn_expert_attention_config ac = {.d_query = C,
                                                  .n_query_heads = cfg->router_q_heads,
                                                  .n_kv_heads = cfg->router_kv_heads,
                                                  .d_out = E,
                                                  .n_memory = cfg->router_memory ? cfg->router_memory : E,
                                                  .bias = false,
                                                  .backend = cfg->router_backend,
                                                  .init = {cfg->init.init_std, 0}};
        st = fg_nn_expert_attention_init(&m->router_attn, &ac, g, dev, dt);
    }
    for (int64_t e = 0; st == FG_OK && e < E; e++)
        st = fg_nn_mlp_init(&m->experts[e], C, cfg->expert_hidden, cfg->bias, cfg->dropout, &cfg->init, g, dev, dt);
    if (st != FG_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", fg_last_error());
        fg_nn_moe_free(m);
        return fg__err(st, "%s: %s", OP, msg); /* the inner layer's message, under this layer's name */
    }
    return FG_OK;
}

void fg_nn_moe_free(fg_nn_moe *m)
{
    if (!m) return;
    fg_nn_linear_free(&m->router);
    fg_nn_expert_attention_free(&m->router_attn);
    for (int64_t e = 0; m->experts && e < m->cfg.n_expert; e++) fg_nn_mlp_free(&m->experts[e]);
    free(m->experts);
    free(m->load);
    free(m->top1);
    memset(m, 0, sizeof *m);
}

/* Host routing: choice (N, k) expert ids -> kept flags, per-expert slot lists.
 * order[off[e] .. off[e+1]) are the flat slots (t k + i) expert e processes,
 * in priority order. Fills m's statistics. */
static fg_status route(fg_nn_moe *m, const int64_t *choice, int64_t N, int64_t *kept, int64_t *order, int64_t *off)
{
    const int64_t E = m->cfg.n_expert, k = m->cfg.top_k;
    const double cf = m->cfg.capacity_factor;
    int64_t cap = N; /* an expert appears at most once per token */
    if (cf > 0) {
        /* the slack keeps exact products (1.25 * 8 * 2 / 4 = 5) from rounding up to 6 */
        const double c = ceil(cf * (double)N * (double)k / (double)E * (1 - 1e-12));
        cap = c < (double)N ? (int64_t)c : N;
    }
    int64_t *fill = calloc((size_t)E, sizeof *fill);
    if (!fill) return fg__err(FG_ERR_OOM, "%s: out of host memory", OP);
    memset(m->load, 0, (size_t)E * sizeof *m->load);
    memset(m->top1, 0, (size_t)E * sizeof *m->top1);
    m->n_dropped = 0;
    for (int64_t i = 0; i < k; i++) /* priority: all first choices, then all second choices */
        for (int64_t t = 0; t < N; t++) {
            const int64_t e = choice[t * k + i];
            if (i == 0) m->top1[e]++;
            kept[t * k + i] = m->load[e] < cap;
            if (kept[t * k + i])
                m->load[e]++;
            else
                m->n_dropped++;
        }
    off[0] = 0;
    for (int64_t e = 0; e < E; e++) off[e + 1] = off[e] + m->load[e];
    for (int64_t i = 0; i < k; i++)
        for (int64_t t = 0; t < N; t++)
            if (kept[t * k + i]) {
                const int64_t e = choice[t * k + i];
                order[off[e] + fill[e]++] = t * k + i;
            }
    free(fill);
    m->n_tokens = N;
    m->capacity = cap;
    return FG_OK;
}

/* The dispatch: y (N, C) = sum over kept slots of gate * expert(x). */
static fg_tensor *dispatch(const fg_nn_moe *m, fg_tensor *x2, fg_tensor *gates, const int64_t *order,
                           const int64_t *off, bool training, fg_generator *gen)
{
    const int64_t N = fg_size(x2, 0), C = fg_size(x2, 1), E = m->cfg.n_expert, k = m->cfg.top_k, M = off[E];
    const fg_device dev = fg_device_of(x2);
    if (M == 0) return fg_zeros(FG_SHAPE(N, C), fg_dtype_of(x2), dev); /* every slot dropped */
    int64_t *tok = malloc((size_t)M * sizeof *tok);
    fg_tensor **ys = calloc((size_t)E, sizeof *ys);
    if (!tok || !ys) {
        free(tok), free(ys);
        return fg__err(FG_ERR_OOM, "%s: out of host memory", OP), NULL;
    }
    for (int64_t j = 0; j < M; j++) tok[j] = order[j] / k;
    fg_tensor *tok_t = fg_from_data(tok, FG_SHAPE(M), FG_I64, dev);    /* (M) token of each slot */
    fg_tensor *slot_t = fg_from_data(order, FG_SHAPE(M), FG_I64, dev); /* (M) flat slot t k + i */
    fg_tensor *xs = fg_index_select(x2, 0, tok_t);                     /* (M, C) rows, expert-major */
    int n = 0;
    for (int64_t e = 0; xs && e < E; e++) {
        if (off[e + 1] == off[e]) continue; /* no tokens: the expert is not run (no gradient) */
        fg_tensor *ye = fg_nn_mlp_forward(&m->experts[e], fg_narrow(xs, 0, off[e], off[e + 1] - off[e]), training, gen);
        if (!ye) break;
        ys[n++] = ye; /* (n_e, C) */
    }
    fg_tensor *y = fg_concat(n, ys, 0); /* (M, C) */
    fg_tensor *g = fg_reshape(fg_index_select(fg_reshape(gates, FG_SHAPE(N * k)), 0, slot_t), FG_SHAPE(M, 1));
    if (y && g && fg_dtype_of(g) != fg_dtype_of(y)) g = fg_cast(g, fg_dtype_of(y)); /* autocast: experts in 16 bits */
    fg_tensor *contrib = fg_mul(y, g);                                                /* (M, C) */
    fg_tensor *out = contrib ? fg_zeros(FG_SHAPE(N, C), fg_dtype_of(contrib), dev) : NULL;
    out = fg_index_add(out, 0, tok_t, contrib); /* (N, C): a token's kept slots add up */
    free(tok), free(ys);
    return out;
}

fg_tensor *fg_nn_moe_forward(fg_nn_moe *m, fg_tensor *x, bool training, fg_generator *gen, fg_nn_moe_output *res)
{
    if (res) memset(res, 0, sizeof *res);
    if (!m) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP), NULL;
    const int64_t C = m->cfg.n_embd, E = m->cfg.n_expert, k = m->cfg.top_k;
    char name[96];
    snprintf(name, sizeof name, "%s(C=%lld, E=%lld, k=%lld)", OP, (long long)C, (long long)E, (long long)k);
    const fg_tensor *w = m->experts ? m->experts[0].c_fc.weight : NULL;
    if (!fg__nn_check_input(name, x, w, 2, 3, C)) return NULL;
    const int64_t N = fg_numel(x) / C;
    if (N < 1) return fg__err(FG_ERR_SHAPE, "%s: no tokens", name), NULL;
    fg_scope *s = fg_scope_begin();
    if (!s) return NULL;
    fg_tensor *x2 = fg_reshape(x, FG_SHAPE(N, C)); /* (N, C) */
    fg_tensor *logits = m->cfg.router == FG_MOE_ROUTER_LINEAR
                            ? fg_linear(x2, m->router.weight, NULL)
                            : fg_reshape(fg_nn_expert_attention_forward(&m->router_attn, fg_reshape(x, FG_SHAPE(-1, fg_size(x, -2), C)),
                                                                        NULL, training, gen),
                                         FG_SHAPE(N, E)); /* (N, E) */
    if (logits && fg_dtype_of(logits) != fg_dtype_of(x)) logits = fg_cast(logits, fg_dtype_of(x)); /* softmax in f32 */
    fg_tensor *probs = fg_softmax(logits, -1); /* (N, E) */
    fg_tensor *vals = NULL, *idx = NULL, *gates = NULL, *out = NULL, *aux = NULL;
    if (probs && fg_topk(probs, (int)k, -1, true, &vals, &idx) == FG_OK) /* (N, k) best first */
        gates = k == 1 ? vals : fg_div(vals, fg_sum(vals, FG_DIMS(-1), true)); /* (N, k) */
    int64_t *choice = malloc((size_t)(N * k) * sizeof *choice), *kept = malloc((size_t)(N * k) * sizeof *kept);
    int64_t *order = malloc((size_t)(N * k) * sizeof *order), *off = malloc((size_t)(E + 1) * sizeof *off);
    fg_status st = choice && kept && order && off ? FG_OK : fg__err(FG_ERR_OOM, "%s: out of host memory", name);
    if (st == FG_OK) st = gates ? fg_copy_to_host(idx, choice, (size_t)(N * k) * sizeof *choice) : fg_last_status();
    if (st == FG_OK) st = route(m, choice, N, kept, order, off);
    if (st == FG_OK) {
        out = dispatch(m, x2, gates, order, off, training, gen); /* (N, C) */
        if (out && fg_dtype_of(out) != fg_dtype_of(x)) out = fg_cast(out, fg_dtype_of(x));
        out = fg_reshape(out, fg_ndim(x), fg_shape(x));
        /* Switch load balancing: E sum_e f_e P_e, f from the first choices (constant) */
        double *f = malloc((size_t)E * sizeof *f);
        if (f) {
            for (int64_t e = 0; e < E; e++) f[e] = (double)m->top1[e] / (double)N;
            fg_tensor *ft = fg_from_f64(f, FG_SHAPE(E), fg_dtype_of(probs), fg_device_of(probs));
            aux = fg_mul_scalar(fg_sum_all(fg_mul(fg_mean(probs, FG_DIMS(0), false), ft)), (double)E); /* 0-d */
            free(f);
        } else {
            fg__err(FG_ERR_OOM, "%s: out of host memory", name);
        }
        if (!aux) out = NULL;
    }
    if (out && res) {
        const fg_device dev = fg_device_of(x);
        res->aux_loss = fg_keep(aux);
        res->probs = fg_keep(probs);
        res->gates = fg_keep(gates);
        res->experts = fg_keep(idx);
        res->kept = fg_keep(fg_from_data(kept, FG_SHAPE(N, k), FG_I64, dev));
        if (!res->kept) out = NULL;
    }
    free(choice), free(kept), free(order), free(off);
    out = fg__nn_finish(s, out);
    if (res) { /* hand the extra outputs to the caller's scope, or release them on failure */
        fg_tensor **o[5] = {&res->aux_loss, &res->probs, &res->gates, &res->experts, &res->kept};
        for (int i = 0; i < 5; i++) {
            if (!*o[i]) continue;
            if (!out) fg_free(*o[i]), *o[i] = NULL;
            else if (!(*o[i] = fg__adopt(*o[i]))) fg_free(out), out = NULL;
        }
    }
    return out;
}

fg_status fg_nn_moe_params(const fg_nn_moe *m, const char *prefix, fg_params *reg)
{
    if (!m) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    if (!m->experts) return fg__err(FG_ERR_STATE, "%s: layer is not initialised (or was freed)", OP);
    char p[FG_NN_NAME_MAX], q[64];
    fg_status st = fg__nn_join(p, sizeof p, OP, prefix, m->cfg.router == FG_MOE_ROUTER_LINEAR ? "router" : "router_attn");
    if (st == FG_OK)
        st = m->cfg.router == FG_MOE_ROUTER_LINEAR ? fg_nn_linear_params(&m->router, p, reg)
                                                  : fg_nn_expert_attention_params(&m->router_attn, p, reg);
    for (int64_t e = 0; st == FG_OK && e < m->cfg.n_expert; e++) {
        snprintf(q, sizeof q, "experts.%lld", (long long)e);
        st = fg__nn_join(p, sizeof p, OP, prefix, q);
        if (st == FG_OK) st = fg_nn_mlp_params(&m->experts[e], p, reg);
    }
    return st;
}
