/* GQA cross-attention from a token sequence onto a memory sequence ("expert
 * attention"): q from the tokens (Hq heads), k and v from the memory (Hkv
 * heads), not causal, Lq != Lkv. */
#include <stdio.h>
#include "nn/nn_impl.h"
#include <flashgrad/deterministic.h>

static const char *OP = "fg_nn_expert_attention";

static fg_status fill_defaults(fg_nn_expert_attention_config *c)
{
    if (!c->d_memory) c->d_memory = c->d_query;
    if (!c->n_query_heads) c->n_query_heads = 12;
    if (!c->n_kv_heads) c->n_kv_heads = 4;
    if (!c->d_out) c->d_out = c->d_query;
    if (c->d_query < 1 || c->d_memory < 1 || c->d_out < 1 || c->n_query_heads < 1 || c->n_kv_heads < 1 ||
        c->head_dim < 0 || c->n_memory < 0)
        return fg__err(FG_ERR_INVALID,
                       "%s: d_query %lld, d_memory %lld, d_out %lld, heads %lld/%lld must be positive "
                       "(head_dim %lld, n_memory %lld not negative)",
                       OP, (long long)c->d_query, (long long)c->d_memory, (long long)c->d_out,
                       (long long)c->n_query_heads, (long long)c->n_kv_heads, (long long)c->head_dim,
                       (long long)c->n_memory);
    if (c->n_query_heads % c->n_kv_heads)
        return fg__err(FG_ERR_INVALID, "%s: n_query_heads %lld is not a multiple of n_kv_heads %lld", OP,
                       (long long)c->n_query_heads, (long long)c->n_kv_heads);
    if (!c->head_dim) {
        if (c->d_query % c->n_query_heads)
            return fg__err(FG_ERR_INVALID, "%s: d_query %lld is not a multiple of n_query_heads %lld (set head_dim)", OP,
                           (long long)c->d_query, (long long)c->n_query_heads);
        c->head_dim = c->d_query / c->n_query_heads;
    }
    if (c->backend != FG_ATTN_AUTO && c->backend != FG_ATTN_FLASH && c->backend != FG_ATTN_MATH)
        return fg__err(FG_ERR_INVALID, "%s: attention backend %d (AUTO, FLASH or MATH)", OP, (int)c->backend);
    if (!(c->dropout >= 0 && c->dropout < 1)) return fg__err(FG_ERR_INVALID, "%s: dropout %g outside [0, 1)", OP, c->dropout);
    if (!(c->init.init_std >= 0) || !(c->init.proj_init_std >= 0))
        return fg__err(FG_ERR_INVALID, "%s: init stds %g, %g", OP, c->init.init_std, c->init.proj_init_std);
    return FG_OK;
}

fg_status fg_nn_expert_attention_init(fg_nn_expert_attention *l, const fg_nn_expert_attention_config *cfg,
                                      fg_generator *g, fg_device dev, fg_dtype dt)
{
    if (!l) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    memset(l, 0, sizeof *l);
    if (!cfg) return fg__err(FG_ERR_NULL, "%s: config is NULL", OP);
    fg_nn_expert_attention_config c = *cfg;
    fg_status st = fill_defaults(&c);
    if (st != FG_OK) return st;
    const int64_t Hq = c.n_query_heads, Hkv = c.n_kv_heads, D = c.head_dim;
    const double std = c.init.init_std, pstd = c.init.proj_init_std > 0 ? c.init.proj_init_std : std;
    st = fg__nn_linear_init_std(&l->q_proj, c.d_query, Hq * D, c.bias, std, g, dev, dt);
    if (st == FG_OK) st = fg__nn_linear_init_std(&l->k_proj, c.d_memory, Hkv * D, c.bias, std, g, dev, dt);
    if (st == FG_OK) st = fg__nn_linear_init_std(&l->v_proj, c.d_memory, Hkv * D, c.bias, std, g, dev, dt);
    if (st == FG_OK) st = fg__nn_linear_init_std(&l->out_proj, Hq * D, c.d_out, c.bias, pstd, g, dev, dt);
    if (st == FG_OK && c.n_memory > 0 &&
        !(l->memory = fg__nn_param_normal(g, std > 0 ? std : 1.0, FG_SHAPE(c.n_memory, c.d_memory), dev, dt)))
        st = fg_last_status();
    if (st != FG_OK) {
        fg_nn_expert_attention_free(l);
        return st;
    }
    l->cfg = c;
    return FG_OK;
}

/* m (B, L, d) or (L, d) projected by p to (B, H, L, D) heads, B taken from the query. */
static fg_tensor *heads(const fg_nn_linear *p, fg_tensor *m, int64_t B, int64_t H, int64_t D)
{
    fg_tensor *y = fg_linear(m, p->weight, p->bias); /* (B, L, H D) or (L, H D) */
    if (!y) return NULL;
    const int64_t L = fg_size(y, -2);
    if (fg_ndim(y) == 2) /* memory shared by the batch: a stride-0 batch dim, the backward sums over it */
        y = fg_expand(fg_reshape(y, FG_SHAPE(1, L, H, D)), FG_SHAPE(B, L, H, D));
    else
        y = fg_reshape(y, FG_SHAPE(B, L, H, D));
    return fg_transpose(y, 1, 2); /* (B, H, L, D) */
}

fg_tensor *fg_nn_expert_attention_forward(const fg_nn_expert_attention *l, fg_tensor *query, fg_tensor *memory,
                                          bool training, fg_generator *gen)
{
    if (!l) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP), NULL;
    const fg_nn_expert_attention_config *c = &l->cfg;
    char name[160], b[128], b2[128];
    snprintf(name, sizeof name, "%s(Hq=%lld, Hkv=%lld, D=%lld)", OP, (long long)c->n_query_heads,
             (long long)c->n_kv_heads, (long long)c->head_dim);
    if (!fg__nn_check_input(name, query, l->q_proj.weight, 3, 3, c->d_query)) return NULL;
    const int64_t B = fg_size(query, 0), Lq = fg_size(query, 1);
    if (!memory) {
        if (!l->memory) {
            fg__err(FG_ERR_NULL, "%s: no memory given and the layer has no learned memory (n_memory 0)", name);
            return NULL;
        }
        memory = l->memory;
    } else {
        if (!fg__nn_check_input(name, memory, l->k_proj.weight, 2, 3, c->d_memory)) return NULL;
        if (fg_ndim(memory) == 3 && fg_size(memory, 0) != B)
            return fg__err(FG_ERR_SHAPE, "%s: memory %s and query %s have different batch sizes", name,
                           fg_shape_str(memory, b, sizeof b), fg_shape_str(query, b2, sizeof b2)), NULL;
    }
    if (fg_size(memory, -2) < 1)
        return fg__err(FG_ERR_SHAPE, "%s: memory %s has no rows", name, fg_shape_str(memory, b, sizeof b)), NULL;
    fg_scope *s = fg_scope_begin();
    if (!s) return NULL;
    const int64_t Hq = c->n_query_heads, Hkv = c->n_kv_heads, D = c->head_dim;
    fg_tensor *q = heads(&l->q_proj, query, B, Hq, D); /* (B, Hq, Lq, D) */
    fg_tensor *k = heads(&l->k_proj, memory, B, Hkv, D); /* (B, Hkv, Lkv, D) */
    fg_tensor *v = heads(&l->v_proj, memory, B, Hkv, D); /* (B, Hkv, Lkv, D) */
    fg_attention_opts o = {.causal = false,
                           .dropout_p = training ? c->dropout : 0.0,
                           .backend = c->backend,
                           .generator = gen,
                           .deterministic = fg_deterministic()};
    fg_tensor *y = fg_attention(q, k, v, &o);                                  /* (B, Hq, Lq, D) */
    y = fg_reshape(fg_transpose(y, 1, 2), FG_SHAPE(B, Lq, Hq * D));            /* (B, Lq, Hq D) */
    return fg__nn_finish(s, fg_linear(y, l->out_proj.weight, l->out_proj.bias)); /* (B, Lq, d_out) */
}

fg_status fg_nn_expert_attention_params(const fg_nn_expert_attention *l, const char *prefix, fg_params *reg)
{
    if (!l) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    const fg_nn_linear *lin[4] = {&l->q_proj, &l->k_proj, &l->v_proj, &l->out_proj};
    const char *names[4] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    char p[FG_NN_NAME_MAX];
    fg_status st = FG_OK;
    for (int i = 0; st == FG_OK && i < 4; i++) {
        st = fg__nn_join(p, sizeof p, OP, prefix, names[i]);
        if (st == FG_OK) st = fg_nn_linear_params(lin[i], p, reg);
    }
    return st != FG_OK ? st : fg__nn_add(reg, OP, prefix, "memory", l->memory, false);
}

void fg_nn_expert_attention_free(fg_nn_expert_attention *l)
{
    if (!l) return;
    fg_nn_linear_free(&l->q_proj);
    fg_nn_linear_free(&l->k_proj);
    fg_nn_linear_free(&l->v_proj);
    fg_nn_linear_free(&l->out_proj);
    fg__nn_drop(&l->memory);
    memset(l, 0, sizeof *l);
}
