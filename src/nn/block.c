/* Pre-norm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x)). */
#include <stdio.h>
#include "nn/nn_impl.h"

static const char *OP = "fg_nn_block";

fg_status fg_nn_block_init(fg_nn_block *b, const fg_nn_block_config *cfg, fg_generator *g, fg_device dev, fg_dtype dt)
{
    if (!b) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    memset(b, 0, sizeof *b);
    if (!cfg) return fg__err(FG_ERR_NULL, "%s: config is NULL", OP);
    if (cfg->norm != FG_NN_LAYERNORM && cfg->norm != FG_NN_RMSNORM)
        return fg__err(FG_ERR_INVALID, "%s: norm kind %d", OP, (int)cfg->norm);
    const fg_nn_attention_config ac = {.n_embd = cfg->n_embd,
                                       .n_head = cfg->n_head,
                                       .n_kv_head = cfg->n_kv_head,
                                       .causal = cfg->causal,
                                       .bias = cfg->bias,
                                       .dropout = cfg->dropout,
                                       .init = cfg->init};
    fg_status st = fg__nn_check_attention_config(OP, &ac);
    if (st != FG_OK) return st;
    /* Draw order (ln_1, attn, ln_2, mlp) is the registry order: norms draw nothing. */
    st = cfg->norm == FG_NN_RMSNORM ? fg_nn_rmsnorm_init(&b->ln_1, cfg->n_embd, 0, dev, dt)
                                    : fg_nn_layernorm_init(&b->ln_1, cfg->n_embd, cfg->bias, 0, dev, dt);
    if (st == FG_OK) st = fg_nn_attention_init(&b->attn, &ac, g, dev, dt);
    if (st == FG_OK)
        st = cfg->norm == FG_NN_RMSNORM ? fg_nn_rmsnorm_init(&b->ln_2, cfg->n_embd, 0, dev, dt)
                                        : fg_nn_layernorm_init(&b->ln_2, cfg->n_embd, cfg->bias, 0, dev, dt);
    if (st == FG_OK)
        st = fg_nn_mlp_init(&b->mlp, cfg->n_embd, cfg->mlp_hidden, cfg->bias, cfg->dropout, &cfg->init, g, dev, dt);
    if (st != FG_OK) fg_nn_block_free(b);
    return st;
}

/* x + f, f cast to x's dtype (under autocast the branches come back in 16 bits;
 * the residual stream stays in the parameters' dtype). */
static fg_tensor *residual(fg_tensor *x, fg_tensor *f)
{
    if (f && fg_dtype_of(f) != fg_dtype_of(x)) f = fg_cast(f, fg_dtype_of(x));
    return fg_add(x, f);
}

static fg_tensor *forward(const fg_nn_block *b, fg_tensor *x, bool training, fg_generator *gen, fg_nn_kv_cache *c)
{
    if (!b) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP), NULL;
    char name[96];
    snprintf(name, sizeof name, "%s(C=%lld)", OP, (long long)b->attn.cfg.n_embd);
    if (!fg__nn_check_input(name, x, b->attn.c_attn.weight, 3, 3, b->attn.cfg.n_embd)) return NULL;
    fg_scope *s = fg_scope_begin();
    if (!s) return NULL;
    fg_tensor *h = fg_nn_norm_forward(&b->ln_1, x);                                          /* (B, T, C) */
    h = c ? fg_nn_attention_forward_cached(&b->attn, h, c) : fg_nn_attention_forward(&b->attn, h, training, gen);
    fg_tensor *x1 = h ? residual(x, h) : NULL;                                               /* (B, T, C) */
    fg_tensor *m = fg_nn_mlp_forward(&b->mlp, fg_nn_norm_forward(&b->ln_2, x1), c ? false : training, gen);
    return fg__nn_finish(s, m ? residual(x1, m) : NULL);                                    /* (B, T, C) */
}

fg_tensor *fg_nn_block_forward(const fg_nn_block *b, fg_tensor *x, bool training, fg_generator *gen)
{
    return forward(b, x, training, gen, NULL);
}

fg_tensor *fg_nn_block_forward_cached(const fg_nn_block *b, fg_tensor *x, fg_nn_kv_cache *c)
{
    if (!c) return fg__err(FG_ERR_NULL, "%s: KV cache is NULL", OP), NULL;
    const bool prev = fg_set_grad_enabled(false);
    fg_tensor *y = forward(b, x, false, NULL, c);
    fg_set_grad_enabled(prev);
    return y;
}

fg_status fg_nn_block_params(const fg_nn_block *b, const char *prefix, fg_params *reg)
{
    if (!b) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    char p[FG_NN_NAME_MAX];
    fg_status st = fg__nn_join(p, sizeof p, OP, prefix, "ln_1");
    if (st == FG_OK) st = fg_nn_norm_params(&b->ln_1, p, reg);
    if (st == FG_OK) st = fg__nn_join(p, sizeof p, OP, prefix, "attn");
    if (st == FG_OK) st = fg_nn_attention_params(&b->attn, p, reg);
    if (st == FG_OK) st = fg__nn_join(p, sizeof p, OP, prefix, "ln_2");
    if (st == FG_OK) st = fg_nn_norm_params(&b->ln_2, p, reg);
    if (st == FG_OK) st = fg__nn_join(p, sizeof p, OP, prefix, "mlp");
    return st != FG_OK ? st : fg_nn_mlp_params(&b->mlp, p, reg);
}

void fg_nn_block_free(fg_nn_block *b)
{
    if (!b) return;
    fg_nn_norm_free(&b->ln_1);
    fg_nn_attention_free(&b->attn);
    fg_nn_norm_free(&b->ln_2);
    fg_nn_mlp_free(&b->mlp);
    memset(b, 0, sizeof *b);
}
