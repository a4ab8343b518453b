/* GPT: embeddings, pre-norm blocks, final norm, tied head; KV-cache decoding
 * and sampling. */
#include <stdio.h>
#include <stdlib.h>
#include "nn/nn_impl.h"
#include <flashgrad/gpt.h>

static const char *OP = "fg_gpt";

fg_status fg_gpt_init(fg_gpt *m, const fg_gpt_config *cfg, fg_generator *g, fg_device dev, fg_dtype dt)
{
    if (!m) return fg__err(FG_ERR_NULL, "%s: model is NULL", OP);
    memset(m, 0, sizeof *m);
    if (!cfg) return fg__err(FG_ERR_NULL, "%s: config is NULL", OP);
    if (cfg->vocab_size < 1 || cfg->block_size < 1 || cfg->n_layer < 1 || cfg->n_layer > INT32_MAX)
        return fg__err(FG_ERR_INVALID, "%s: vocab_size %lld, block_size %lld and n_layer %lld must be positive", OP,
                       (long long)cfg->vocab_size, (long long)cfg->block_size, (long long)cfg->n_layer);
    const double std = 0.02;
    const fg_nn_block_config bc = {.n_embd = cfg->n_embd,
                                   .n_head = cfg->n_head,
                                   .n_kv_head = cfg->n_kv_head,
                                   .causal = true,
                                   .bias = cfg->bias,
                                   .dropout = cfg->dropout,
                                   .norm = FG_NN_LAYERNORM,
                                   /* GPT-2: residual projections scaled by 1/sqrt(2 n_layer) (two per block) */
                                   .init = {std, std / sqrt(2.0 * (double)cfg->n_layer)}};
    const fg_nn_attention_config ac = {.n_embd = bc.n_embd, .n_head = bc.n_head, .n_kv_head = bc.n_kv_head,
                                       .dropout = bc.dropout};
    fg_status st = fg__nn_check_attention_config(OP, &ac);
    if (st != FG_OK) return st;
    if (!fg__nn_check_place(OP, dev, dt)) return fg_last_status();
    m->cfg = *cfg;
    if (!m->cfg.n_kv_head) m->cfg.n_kv_head = cfg->n_head;
    if (!(m->h = calloc((size_t)cfg->n_layer, sizeof *m->h))) {
        memset(m, 0, sizeof *m);
        return fg__err(FG_ERR_OOM, "%s: out of host memory for %lld blocks", OP, (long long)cfg->n_layer);
    }
    st = fg__nn_embedding_init_std(&m->wte, cfg->vocab_size, cfg->n_embd, std, g, dev, dt);
    if (st == FG_OK) st = fg__nn_embedding_init_std(&m->wpe, cfg->block_size, cfg->n_embd, std, g, dev, dt);
    for (int64_t i = 0; st == FG_OK && i < cfg->n_layer; i++) st = fg_nn_block_init(&m->h[i], &bc, g, dev, dt);
    if (st == FG_OK) st = fg_nn_layernorm_init(&m->ln_f, cfg->n_embd, cfg->bias, 0, dev, dt);
    if (st != FG_OK) fg_gpt_free(m);
    return st;
}

void fg_gpt_free(fg_gpt *m)
{
    if (!m) return;
    fg_nn_embedding_free(&m->wte);
    fg_nn_embedding_free(&m->wpe);
    for (int64_t i = 0; m->h && i < m->cfg.n_layer; i++) fg_nn_block_free(&m->h[i]);
    free(m->h);
    fg_nn_norm_free(&m->ln_f);
    memset(m, 0, sizeof *m);
}

/* idx: (B, T) ids on the model's device, 1 <= T <= limit. */
static bool check_ids(const char *what, const fg_gpt *m, const fg_tensor *idx, int64_t limit)
{
    char b[128];
    if (!idx) return fg__err_null(OP, what), false;
    if (!m->wte.weight) return fg__err(FG_ERR_STATE, "%s: model is not initialised (or was freed)", OP), false;
    if (fg_dtype_of(idx) != FG_I32 && fg_dtype_of(idx) != FG_I64)
        return fg__err(FG_ERR_DTYPE, "%s: %s %s are %s, expected i32 or i64", OP, what, fg_shape_str(idx, b, sizeof b),
                       fg_dtype_name(fg_dtype_of(idx))), false;
    if (fg_ndim(idx) != 2 || fg_size(idx, 0) < 1 || fg_size(idx, 1) < 1 || fg_size(idx, 1) > limit)
        return fg__err(FG_ERR_SHAPE, "%s: %s %s, expected (B, T) with 1 <= T <= %lld", OP, what,
                       fg_shape_str(idx, b, sizeof b), (long long)limit), false;
    if (fg_device_of(idx) != fg_device_of(m->wte.weight))
        return fg__err(FG_ERR_DEVICE, "%s: %s %s on %s, model on %s", OP, what, fg_shape_str(idx, b, sizeof b),
                       fg_device_name(fg_device_of(idx)), fg_device_name(fg_device_of(m->wte.weight))), false;
    return true;
}

/* tok + pos embeddings of idx (B, T) at positions pos0.. : (B, T, C) */
static fg_tensor *embed(const fg_gpt *m, fg_tensor *idx, int64_t pos0)
{
    /* positions pos0.. are rows pos0.. of wpe: a view, no index tensor to upload (no host sync on the GPU) */
    fg_tensor *pe = fg_narrow(m->wpe.weight, 0, pos0, fg_size(idx, 1));  /* (T, C) */
    return fg_add(fg_nn_embedding_forward(&m->wte, idx), pe);            /* (B, T, C) */
}

/* ln_f, then the tied head: x @ wte^T, (B, T, V) in the parameters' dtype */
static fg_tensor *head(const fg_gpt *m, fg_tensor *x)
{
    fg_tensor *w = m->wte.weight;
    fg_tensor *logits = fg_linear(fg_nn_norm_forward(&m->ln_f, x), fg_transpose(w, 0, 1), NULL);
    /* under autocast the product comes back in 16 bits: the loss and sampling read f32 */
    if (logits && fg_dtype_of(logits) != fg_dtype_of(w)) logits = fg_cast(logits, fg_dtype_of(w));
    return logits;
}

fg_tensor *fg_gpt_forward(const fg_gpt *m, fg_tensor *idx, fg_tensor *targets, bool training, fg_generator *gen,
                          fg_tensor **loss)
{
    if (loss) *loss = NULL;
    if (!m) return fg__err(FG_ERR_NULL, "%s: model is NULL", OP), NULL;
    if (!check_ids("idx", m, idx, m->cfg.block_size)) return NULL;
    char b[128], b2[128];
    if (targets && loss) {
        if (!check_ids("targets", m, targets, m->cfg.block_size)) return NULL;
        if (fg_size(targets, 0) != fg_size(idx, 0) || fg_size(targets, 1) != fg_size(idx, 1))
            return fg__err(FG_ERR_SHAPE, "%s: targets %s do not match idx %s", OP, fg_shape_str(targets, b, sizeof b),
                           fg_shape_str(idx, b2, sizeof b2)), NULL;
    }
    fg_scope *s = fg_scope_begin();
    if (!s) return NULL;
    const int64_t B = fg_size(idx, 0), T = fg_size(idx, 1), V = m->cfg.vocab_size;
    fg_tensor *x = fg__nn_dropout(embed(m, idx, 0), m->cfg.dropout, training, gen); /* (B, T, C) */
    for (int64_t i = 0; i < m->cfg.n_layer; i++) x = fg_nn_block_forward(&m->h[i], x, training, gen);
    fg_tensor *logits = x ? head(m, x) : NULL; /* (B, T, V) */
    if (logits && targets && loss) {
        /* nanoGPT: mean over the (B T) positions, -1 ignored */
        fg_tensor *l = fg_cross_entropy(fg_reshape(logits, FG_SHAPE(B * T, V)), fg_reshape(targets, FG_SHAPE(B * T)),
                                        -1, FG_REDUCE_MEAN);
        if (!l) logits = NULL;
        else *loss = fg_keep(l);
    }
    fg_tensor *out = fg__nn_finish(s, logits);
    if (!out && loss && *loss) fg_free(*loss), *loss = NULL;
    if (loss && *loss && !(*loss = fg__adopt(*loss)) && out) fg_free(out), out = NULL;
    return out;
}

fg_status fg_gpt_params(const fg_gpt *m, const char *prefix, fg_params *reg)
{
    if (!m) return fg__err(FG_ERR_NULL, "%s: model is NULL", OP);
    if (!m->wte.weight) return fg__err(FG_ERR_STATE, "%s: model is not initialised (or was freed)", OP);
    char p[FG_NN_NAME_MAX], q[FG_NN_NAME_MAX];
    fg_status st = fg__nn_join(p, sizeof p, OP, prefix, "transformer.wte");
    if (st == FG_OK) st = fg_nn_embedding_params(&m->wte, p, reg);
    if (st == FG_OK) st = fg__nn_join(p, sizeof p, OP, prefix, "transformer.wpe");
    if (st == FG_OK) st = fg_nn_embedding_params(&m->wpe, p, reg);
    for (int64_t i = 0; st == FG_OK && i < m->cfg.n_layer; i++) {
        snprintf(q, sizeof q, "transformer.h.%lld", (long long)i);
        st = fg__nn_join(p, sizeof p, OP, prefix, q);
        if (st == FG_OK) st = fg_nn_block_params(&m->h[i], p, reg);
    }
    if (st == FG_OK) st = fg__nn_join(p, sizeof p, OP, prefix, "transformer.ln_f");
    return st != FG_OK ? st : fg_nn_norm_params(&m->ln_f, p, reg);
}

int64_t fg_gpt_num_params(const fg_gpt *m, bool non_embedding)
{
    if (!m || !m->wte.weight) return -1;
    fg_params *reg = fg_params_new();
    int64_t n = reg && fg_gpt_params(m, NULL, reg) == FG_OK ? fg_params_numel(reg) : -1;
    fg_params_free(reg);
    return n >= 0 && non_embedding ? n - fg_numel(m->wpe.weight) : n;
}

/* ---- KV cache ---- */

fg_status fg_gpt_cache_init(fg_gpt_cache *c, const fg_gpt *m, int64_t batch, int64_t max_len)
{
    if (!c) return fg__err(FG_ERR_NULL, "%s: cache is NULL", OP);
    memset(c, 0, sizeof *c);
    if (!m) return fg__err(FG_ERR_NULL, "%s: model is NULL", OP);
    if (!m->wte.weight) return fg__err(FG_ERR_STATE, "%s: model is not initialised (or was freed)", OP);
    if (max_len == 0) max_len = m->cfg.block_size;
    if (max_len < 1 || max_len > m->cfg.block_size || batch < 1)
        return fg__err(FG_ERR_INVALID, "%s: cache of batch %lld, max_len %lld (1..block_size %lld)", OP,
                       (long long)batch, (long long)max_len, (long long)m->cfg.block_size);
    if (!(c->layer = calloc((size_t)m->cfg.n_layer, sizeof *c->layer)))
        return fg__err(FG_ERR_OOM, "%s: out of host memory for the cache", OP);
    c->n_layer = m->cfg.n_layer;
    for (int64_t i = 0; i < c->n_layer; i++) {
        fg_status st = fg_nn_kv_cache_init(&c->layer[i], &m->h[i].attn, batch, max_len);
        if (st != FG_OK) {
            fg_gpt_cache_free(c);
            return st;
        }
    }
    c->batch = batch;
    c->max_len = max_len;
    return FG_OK;
}

void fg_gpt_cache_reset(fg_gpt_cache *c)
{
    if (!c) return;
    for (int64_t i = 0; i < c->n_layer; i++) fg_nn_kv_cache_reset(&c->layer[i]);
    c->len = 0;
}

void fg_gpt_cache_free(fg_gpt_cache *c)
{
    if (!c) return;
    for (int64_t i = 0; c->layer && i < c->n_layer; i++) fg_nn_kv_cache_free(&c->layer[i]);
    free(c->layer);
    memset(c, 0, sizeof *c);
}

fg_tensor *fg_gpt_forward_cached(const fg_gpt *m, fg_gpt_cache *c, fg_tensor *idx)
{
    if (!m) return fg__err(FG_ERR_NULL, "%s: model is NULL", OP), NULL;
    if (!c || !c->layer) return fg__err(FG_ERR_NULL, "%s: cache is NULL or not initialised", OP), NULL;
    if (c->n_layer != m->cfg.n_layer)
        return fg__err(FG_ERR_INVALID, "%s: cache of %lld layers for a model of %lld", OP, (long long)c->n_layer,
                       (long long)m->cfg.n_layer), NULL;
    if (!check_ids("idx", m, idx, INT64_MAX)) return NULL;
    if (fg_size(idx, 1) > c->max_len - c->len)
        return fg__err(FG_ERR_INVALID, "%s: %lld new positions do not fit the cache (%lld of %lld used)", OP,
                       (long long)fg_size(idx, 1), (long long)c->len, (long long)c->max_len), NULL;
    const bool prev = fg_set_grad_enabled(false);
    fg_scope *s = fg_scope_begin();
    fg_tensor *x = s ? embed(m, idx, c->len) : NULL; /* (B, Tn, C) at positions len.. */
    for (int64_t i = 0; i < m->cfg.n_layer; i++) x = fg_nn_block_forward_cached(&m->h[i], x, &c->layer[i]);
    fg_tensor *logits = x ? head(m, x) : NULL; /* (B, Tn, V) */
    /* every layer appended Tn positions, or the call failed part way: then the
     * cache is inconsistent and is emptied (the caller re-feeds the prefix). */
    if (logits)
        c->len += fg_size(idx, 1);
    else
        fg_gpt_cache_reset(c);
    fg_tensor *out = s ? fg__nn_finish(s, logits) : NULL;
    fg_set_grad_enabled(prev);
    return out;
}

/* ---- sampling ---- */

static int cmp_desc(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* One token from logits l[V] (overwritten): greedy, or temperature + top-k + softmax with u in (0, 1]. */
static int64_t sample_row(double *l, int64_t V, double temperature, int64_t top_k, double u, double *scratch)
{
    int64_t best = 0;
    for (int64_t j = 1; j < V; j++)
        if (l[j] > l[best]) best = j;
    if (!(temperature > 0)) return best;
    for (int64_t j = 0; j < V; j++) l[j] /= temperature;
    double thr = -INFINITY;
    if (top_k > 0 && top_k < V) {
        memcpy(scratch, l, (size_t)V * sizeof *l);
        qsort(scratch, (size_t)V, sizeof *scratch, cmp_desc);
        thr = scratch[top_k - 1]; /* as nanoGPT: values below the k-th largest are dropped */
    }
    const double mx = l[best];
    double z = 0;
    for (int64_t j = 0; j < V; j++) z += (l[j] = l[j] < thr ? 0.0 : exp(l[j] - mx));
    double acc = 0, target = u * z;
    int64_t last = best;
    for (int64_t j = 0; j < V; j++) {
        if (l[j] <= 0) continue;
        last = j;
        if ((acc += l[j]) >= target) return j;
    }
    return last; /* rounding: u * z above the accumulated sum */
}

/* Feeds tokens [start, start + len) of every row of toks (B, stride) and
 * writes the last position's logits to last (B, V). */
static fg_status feed(const fg_gpt *m, fg_gpt_cache *c, const int64_t *toks, int64_t B, int64_t stride, int64_t start,
                      int64_t len, double *last)
{
    fg_scope *s = fg_scope_begin();
    if (!s) return fg_last_status();
    int64_t *buf = malloc((size_t)(B * len) * sizeof *buf);
    fg_status st = buf ? FG_OK : fg__err(FG_ERR_OOM, "%s: out of host memory", OP);
    if (st == FG_OK) {
        for (int64_t b = 0; b < B; b++) memcpy(buf + b * len, toks + b * stride + start, (size_t)len * sizeof *buf);
        fg_tensor *idx = fg_from_data(buf, FG_SHAPE(B, len), FG_I64, fg_device_of(m->wte.weight));
        fg_tensor *lg = idx ? fg_gpt_forward_cached(m, c, idx) : NULL; /* (B, len, V) */
        fg_tensor *lastv = lg ? fg_narrow(lg, 1, len - 1, 1) : NULL;   /* (B, 1, V) */
        st = lastv ? fg_to_f64_array(lastv, last, B * m->cfg.vocab_size) : fg_last_status();
    }
    free(buf);
    fg_scope_end(s);
    return st;
}

fg_tensor *fg_gpt_generate(const fg_gpt *m, fg_tensor *idx, int64_t max_new_tokens, double temperature, int64_t top_k,
                           fg_generator *gen)
{
    if (!m) return fg__err(FG_ERR_NULL, "%s: model is NULL", OP), NULL;
    if (!check_ids("idx", m, idx, INT64_MAX)) return NULL;
    if (max_new_tokens < 0) return fg__err(FG_ERR_INVALID, "%s: max_new_tokens %lld", OP, (long long)max_new_tokens), NULL;
    if (!gen) gen = fg_default_generator();
    const int64_t B = fg_size(idx, 0), T0 = fg_size(idx, 1), V = m->cfg.vocab_size, bs = m->cfg.block_size;
    const int64_t total = T0 + max_new_tokens;
    int64_t *toks = malloc((size_t)(B * total) * sizeof *toks);
    double *last = malloc((size_t)(B * V) * sizeof *last), *scratch = malloc((size_t)V * sizeof *scratch);
    const bool prev = fg_set_grad_enabled(false);
    fg_gpt_cache c = {0};
    fg_tensor *out = NULL;
    fg_status st = toks && last && scratch ? FG_OK : fg__err(FG_ERR_OOM, "%s: out of host memory", OP);
    fg_scope *s = st == FG_OK ? fg_scope_begin() : NULL;
    if (st == FG_OK && !s) st = fg_last_status();
    if (st == FG_OK) { /* the prompt, as i64 on the host, into rows of length total */
        fg_tensor *h = fg_to(fg_detach(idx), FG_CPU, FG_I64);
        int64_t *p = malloc((size_t)(B * T0) * sizeof *p);
        st = !p ? fg__err(FG_ERR_OOM, "%s: out of host memory", OP)
             : h ? fg_copy_to_host(h, p, (size_t)(B * T0) * sizeof *p)
                 : fg_last_status();
        for (int64_t b = 0; st == FG_OK && b < B; b++) memcpy(toks + b * total, p + b * T0, (size_t)T0 * sizeof *p);
        free(p);
        if (st == FG_OK) {
            for (int64_t i = 0; i < B * T0; i++)
                if (toks[i / T0 * total + i % T0] < 0 || toks[i / T0 * total + i % T0] >= V) {
                    st = fg__err(FG_ERR_INDEX, "%s: prompt token %lld is %lld, outside [0, %lld)", OP, (long long)i,
                                 (long long)toks[i / T0 * total + i % T0], (long long)V);
                    break;
                }
        }
    }
    if (st == FG_OK) st = fg_gpt_cache_init(&c, m, B, bs);
    int64_t cur = T0;
    if (st == FG_OK && max_new_tokens > 0) {
        const int64_t start = T0 > bs ? T0 - bs : 0;
        st = feed(m, &c, toks, B, total, start, T0 - start, last);
    }
    for (int64_t step = 0; st == FG_OK && step < max_new_tokens; step++) {
        double *u = malloc((size_t)B * sizeof *u);
        fg_scope *s2 = fg_scope_begin();
        fg_tensor *ut = s2 && u ? fg_rand(gen, FG_SHAPE(B), FG_F64, FG_CPU) : NULL; /* one draw per row */
        st = !u ? fg__err(FG_ERR_OOM, "%s: out of host memory", OP) : ut ? fg_to_f64_array(ut, u, B) : fg_last_status();
        if (s2) fg_scope_end(s2);
        for (int64_t b = 0; st == FG_OK && b < B; b++)
            toks[b * total + cur] = sample_row(last + b * V, V, temperature, top_k, u[b], scratch);
        free(u);
        if (st != FG_OK) break;
        cur++;
        if (step + 1 == max_new_tokens) break;
        if (c.len < bs) {
            st = feed(m, &c, toks, B, total, cur - 1, 1, last); /* one new position */
        } else {                                                 /* full: the last block_size tokens again */
            fg_gpt_cache_reset(&c);
            st = feed(m, &c, toks, B, total, cur - bs, bs, last);
        }
    }
    if (s) fg_scope_end(s);
    if (st == FG_OK) out = fg_from_data(toks, FG_SHAPE(B, total), FG_I64, fg_device_of(m->wte.weight));
    fg_gpt_cache_free(&c);
    fg_set_grad_enabled(prev);
    free(toks), free(last), free(scratch);
    return out;
}
