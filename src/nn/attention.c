/* Multi-head self-attention on fg_attention (MHA / GQA / MQA) and its KV cache
 * for incremental decoding. */
#include <stdio.h>
#include "nn/nn_impl.h"
#include <flashgrad/deterministic.h>

static const char *OP = "fg_nn_attention";

fg_status fg__nn_check_attention_config(const char *layer, const fg_nn_attention_config *c)
{
    if (!c) return fg__err(FG_ERR_NULL, "%s: config is NULL", layer);
    const int64_t kv = c->n_kv_head ? c->n_kv_head : c->n_head;
    if (c->n_embd < 1 || c->n_head < 1 || kv < 1)
        return fg__err(FG_ERR_INVALID, "%s: n_embd %lld, n_head %lld and n_kv_head %lld must be positive", layer,
                       (long long)c->n_embd, (long long)c->n_head, (long long)kv);
    if (c->n_embd % c->n_head)
        return fg__err(FG_ERR_INVALID, "%s: n_embd %lld is not a multiple of n_head %lld", layer,
                       (long long)c->n_embd, (long long)c->n_head);
    if (c->n_head % kv)
        return fg__err(FG_ERR_INVALID, "%s: n_head %lld is not a multiple of n_kv_head %lld", layer,
                       (long long)c->n_head, (long long)kv);
    if (!(c->dropout >= 0 && c->dropout < 1))
        return fg__err(FG_ERR_INVALID, "%s: dropout %g outside [0, 1)", layer, c->dropout);
    if (!(c->init.init_std >= 0) || !(c->init.proj_init_std >= 0))
        return fg__err(FG_ERR_INVALID, "%s: init stds %g, %g", layer, c->init.init_std, c->init.proj_init_std);
    return FG_OK;
}

fg_status fg_nn_attention_init(fg_nn_attention *a, const fg_nn_attention_config *cfg, fg_generator *g, fg_device dev,
                               fg_dtype dt)
{
    if (!a) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    memset(a, 0, sizeof *a);
    fg_status st = fg__nn_check_attention_config(OP, cfg);
    if (st != FG_OK) return st;
    a->cfg = *cfg;
    if (!a->cfg.n_kv_head) a->cfg.n_kv_head = cfg->n_head;
    const int64_t C = cfg->n_embd, H = cfg->n_head, Hkv = a->cfg.n_kv_head, D = C / H;
    const double std = cfg->init.init_std, pstd = cfg->init.proj_init_std > 0 ? cfg->init.proj_init_std : std;
    st = fg__nn_linear_init_std(&a->c_attn, C, (H + 2 * Hkv) * D, cfg->bias, std, g, dev, dt);
    if (st == FG_OK) st = fg__nn_linear_init_std(&a->c_proj, H * D, C, cfg->bias, pstd, g, dev, dt);
    if (st != FG_OK) {
        fg_nn_attention_free(a);
        return st;
    }
    a->head_dim = D;
    return FG_OK;
}

static const char *layer_name(const fg_nn_attention *a, char *buf, size_t n)
{
    snprintf(buf, n, "%s(C=%lld, H=%lld, Hkv=%lld)", OP, (long long)a->cfg.n_embd, (long long)a->cfg.n_head,
             (long long)a->cfg.n_kv_head);
    return buf;
}

/* x (B, T, C) -> q (B, H, T, D), k and v (B, Hkv, T, D): strided views of one
 * (B, T, (H + 2 Hkv) D) projection (fg_attention takes any strides). */
static fg_status project_qkv(const fg_nn_attention *a, fg_tensor *x, fg_tensor **q, fg_tensor **k, fg_tensor **v)
{
    const int64_t B = fg_size(x, 0), T = fg_size(x, 1), H = a->cfg.n_head, Hkv = a->cfg.n_kv_head, D = a->head_dim;
    fg_tensor *qkv = fg_linear(x, a->c_attn.weight, a->c_attn.bias); /* (B, T, (H + 2 Hkv) D) */
    fg_tensor *part[3] = {NULL};
    const int64_t sizes[3] = {H * D, Hkv * D, Hkv * D};
    fg_status st = qkv ? fg_split(qkv, 2, 3, sizes, part) : fg_last_status();
    if (st != FG_OK) return st;
    *q = fg_transpose(fg_reshape(part[0], FG_SHAPE(B, T, H, D)), 1, 2);   /* (B, H, T, D) */
    *k = fg_transpose(fg_reshape(part[1], FG_SHAPE(B, T, Hkv, D)), 1, 2); /* (B, Hkv, T, D) */
    *v = fg_transpose(fg_reshape(part[2], FG_SHAPE(B, T, Hkv, D)), 1, 2); /* (B, Hkv, T, D) */
    return *q && *k && *v ? FG_OK : fg_last_status();
}

/* y (B, H, T, D) -> c_proj over the concatenated heads, (B, T, C) */
static fg_tensor *merge_heads(const fg_nn_attention *a, fg_tensor *y)
{
    const int64_t B = fg_size(y, 0), T = fg_size(y, 2);
    fg_tensor *m = fg_reshape(fg_transpose(y, 1, 2), FG_SHAPE(B, T, a->cfg.n_head * a->head_dim)); /* (B, T, H D) */
    return fg_linear(m, a->c_proj.weight, a->c_proj.bias);                                      /* (B, T, C) */
}

fg_tensor *fg_nn_attention_forward(const fg_nn_attention *a, fg_tensor *x, bool training, fg_generator *gen)
{
    if (!a) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP), NULL;
    char name[128];
    if (!fg__nn_check_input(layer_name(a, name, sizeof name), x, a->c_attn.weight, 3, 3, a->cfg.n_embd)) return NULL;
    fg_scope *s = fg_scope_begin();
    if (!s) return NULL;
    fg_tensor *q, *k, *v, *y = NULL;
    if (project_qkv(a, x, &q, &k, &v) == FG_OK) {
        /* deterministic mode (flashgrad/deterministic.h) also picks the attention backward without atomics */
        fg_attention_opts o = {.causal = a->cfg.causal, .dropout_p = training ? a->cfg.dropout : 0.0, .generator = gen,
                               .deterministic = fg_deterministic()};
        y = merge_heads(a, fg_attention(q, k, v, &o)); /* (B, T, C) */
    }
    return fg__nn_finish(s, fg__nn_dropout(y, a->cfg.dropout, training, gen));
}

fg_status fg_nn_attention_params(const fg_nn_attention *a, const char *prefix, fg_params *reg)
{
    if (!a) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    char p[FG_NN_NAME_MAX];
    fg_status st = fg__nn_join(p, sizeof p, OP, prefix, "c_attn");
    if (st == FG_OK) st = fg_nn_linear_params(&a->c_attn, p, reg);
    if (st == FG_OK) st = fg__nn_join(p, sizeof p, OP, prefix, "c_proj");
    return st != FG_OK ? st : fg_nn_linear_params(&a->c_proj, p, reg);
}

void fg_nn_attention_free(fg_nn_attention *a)
{
    if (!a) return;
    fg_nn_linear_free(&a->c_attn);
    fg_nn_linear_free(&a->c_proj);
    memset(a, 0, sizeof *a);
}

/* ---- KV cache ---- */

fg_status fg_nn_kv_cache_init(fg_nn_kv_cache *c, const fg_nn_attention *a, int64_t batch, int64_t max_len)
{
    static const char *op = "fg_nn_kv_cache";
    if (!c) return fg__err(FG_ERR_NULL, "%s: cache is NULL", op);
    memset(c, 0, sizeof *c);
    if (!a) return fg__err(FG_ERR_NULL, "%s: layer is NULL", op);
    if (!a->c_attn.weight) return fg__err(FG_ERR_STATE, "%s: layer is not initialised (or was freed)", op);
    if (batch < 1 || max_len < 1)
        return fg__err(FG_ERR_INVALID, "%s: batch %lld and max_len %lld must be positive", op, (long long)batch,
                       (long long)max_len);
    const fg_tensor *w = a->c_attn.weight;
    const int64_t Hkv = a->cfg.n_kv_head, D = a->head_dim;
    c->k = fg_keep(fg_zeros(FG_SHAPE(batch, Hkv, max_len, D), fg_dtype_of(w), fg_device_of(w))); /* (B, Hkv, max, D) */
    c->v = c->k ? fg_keep(fg_zeros(FG_SHAPE(batch, Hkv, max_len, D), fg_dtype_of(w), fg_device_of(w))) : NULL;
    if (!c->v) {
        fg_status st = fg_last_status();
        fg_nn_kv_cache_free(c);
        return st;
    }
    c->batch = batch;
    c->max_len = max_len;
    return FG_OK;
}

void fg_nn_kv_cache_reset(fg_nn_kv_cache *c)
{
    if (c) c->len = 0;
}

void fg_nn_kv_cache_free(fg_nn_kv_cache *c)
{
    if (!c) return;
    fg__nn_drop(&c->k);
    fg__nn_drop(&c->v);
    memset(c, 0, sizeof *c);
}

fg_tensor *fg_nn_attention_forward_cached(const fg_nn_attention *a, fg_tensor *x, fg_nn_kv_cache *c)
{
    if (!a) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP), NULL;
    char name[128], b[128];
    layer_name(a, name, sizeof name);
    if (!fg__nn_check_input(name, x, a->c_attn.weight, 3, 3, a->cfg.n_embd)) return NULL;
    if (!c || !c->k) return fg__err(FG_ERR_NULL, "%s: KV cache is NULL or not initialised", name), NULL;
    if (!a->cfg.causal)
        return fg__err(FG_ERR_INVALID, "%s: a KV cache needs a causal layer (each position attends to earlier ones)",
                       name), NULL;
    const int64_t B = fg_size(x, 0), Tn = fg_size(x, 1);
    if (fg_size(c->k, 1) != a->cfg.n_kv_head || fg_size(c->k, 3) != a->head_dim ||
        fg_device_of(c->k) != fg_device_of(x))
        return fg__err(FG_ERR_SHAPE, "%s: cache %s on %s does not fit this layer (Hkv %lld, D %lld)", name,
                       fg_shape_str(c->k, b, sizeof b), fg_device_name(fg_device_of(c->k)),
                       (long long)a->cfg.n_kv_head, (long long)a->head_dim), NULL;
    if (B != c->batch)
        return fg__err(FG_ERR_SHAPE, "%s: input %s has batch %lld, cache batch %lld", name,
                       fg_shape_str(x, b, sizeof b), (long long)B, (long long)c->batch), NULL;
    if (Tn > c->max_len - c->len)
        return fg__err(FG_ERR_INVALID, "%s: %lld new positions do not fit the cache (%lld of %lld used)", name,
                       (long long)Tn, (long long)c->len, (long long)c->max_len), NULL;
    const bool prev = fg_set_grad_enabled(false); /* inference: the cache writes are not recorded */
    fg_scope *s = fg_scope_begin();
    fg_tensor *q, *k, *v, *y = NULL;
    if (s && project_qkv(a, x, &q, &k, &v) == FG_OK && fg_copy_(fg_narrow(c->k, 2, c->len, Tn), k) == FG_OK &&
        fg_copy_(fg_narrow(c->v, 2, c->len, Tn), v) == FG_OK) {
        const int64_t L = c->len + Tn;
        /* Causal with Lq = Tn < Lk = L is aligned bottom-right: new row i sees keys 0..len + i. */
        fg_attention_opts o = {.causal = true};
        if (fg_dtype_of(q) != fg_dtype_of(c->k)) q = fg_cast(q, fg_dtype_of(c->k)); /* autocast: cache keeps its dtype */
        y = merge_heads(a, fg_attention(q, fg_narrow(c->k, 2, 0, L), fg_narrow(c->v, 2, 0, L), &o)); /* (B, Tn, C) */
        if (y) c->len = L;
    }
    fg_tensor *out = s ? fg__nn_finish(s, y) : NULL;
    fg_set_grad_enabled(prev);
    return out;
}
