/* Suite "nn_gpt": the GPT model of flashgrad/gpt.h on the CPU. The loss
 * gradient with respect to every parameter against finite differences (f64),
 * registry names and the exact parameter count of nanoGPT's shakespeare-char
 * model, GPT-2 init statistics, KV-cache decoding equal to the full forward,
 * greedy / top-k sampling against a reference built from full forwards, a
 * small training run with a hand-written SGD step, and the errors. */
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

static void randomize(fg_tensor *t, fg_generator *g, double lo, double hi)
{
    fg_tensor *s = fg_uniform(g, lo, hi, fg_ndim(t), fg_shape(t), fg_dtype_of(t), fg_device_of(t));
    ck_assert_int_eq(fg_copy_(t, s), FG_OK);
    fg_free(s);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* GPT-2 init is small (std 0.02): spread the parameters so that gradients and
 * attention patterns are far from trivial. Norm gains around 1. */
static void spread_params(fg_params *reg, fg_generator *g)
{
    for (int64_t i = 0; i < fg_params_count(reg); i++) {
        const fg_param *p = fg_params_at(reg, i);
        if (strstr(p->name, "ln_") && ends_with(p->name, ".weight"))
            randomize(p->t, g, 0.6, 1.4);
        else if (fg_ndim(p->t) == 1)
            randomize(p->t, g, -0.2, 0.2);
        else
            randomize(p->t, g, -0.4, 0.4);
    }
}

static fg_tensor *ids(const int64_t *v, int64_t B, int64_t T)
{
    fg_tensor *t = fg_from_data(v, FG_SHAPE(B, T), FG_I64, CPU);
    ck_assert_ptr_nonnull(t);
    return t;
}

static const fg_gpt_config TINY = {
    .vocab_size = 7, .block_size = 6, .n_layer = 2, .n_head = 2, .n_kv_head = 1, .n_embd = 8, .dropout = 0, .bias = true};

/* Exact count: wte + wpe + per layer (ln_1, c_attn, c_proj, ln_2, c_fc, c_proj) + ln_f */
static int64_t count_formula(int64_t V, int64_t T, int64_t L, int64_t C, int64_t H, int64_t Hkv, bool bias)
{
    const int64_t D = C / H, qkv = C + 2 * Hkv * D, b = bias;
    const int64_t layer = 2 * (C + b * C) + (C * qkv + b * qkv) + (C * C + b * C) + (C * 4 * C + b * 4 * C) +
                          (4 * C * C + b * C);
    return V * C + T * C + L * layer + C + b * C;
}

/* ---------------------------------------------------------------- forward, loss */

START_TEST(test_gpt_forward_loss)
{
    BEGIN;
    fg_gpt m;
    ck_assert_int_eq(fg_gpt_init(&m, &TINY, gen, CPU, F64), FG_OK);
    ck_assert_int_eq(m.cfg.n_kv_head, 1);
    fg_tensor *idx = ids((int64_t[]){1, 2, 3, 4, 5, 0, 6, 6, 2, 1}, 2, 5);
    fg_tensor *tgt = ids((int64_t[]){2, 3, 4, 5, 6, 6, -1, 2, 1, 0}, 2, 5); /* one ignored */
    fg_tensor *loss = NULL;
    fg_tensor *logits = fg_gpt_forward(&m, idx, tgt, false, NULL, &loss);
    ck_shape(logits, 3, (int64_t[]){2, 5, 7});
    ck_assert_ptr_nonnull(loss);
    ck_assert_int_eq(fg_ndim(loss), 0);
    /* mean cross-entropy over the 9 counted positions, from the logits */
    double *lg = host(logits), want = 0;
    const int64_t tv[10] = {2, 3, 4, 5, 6, 6, -1, 2, 1, 0};
    for (int r = 0; r < 10; r++) {
        if (tv[r] < 0) continue;
        double mx = -INFINITY, z = 0;
        for (int j = 0; j < 7; j++) mx = fmax(mx, lg[r * 7 + j]);
        for (int j = 0; j < 7; j++) z += exp(lg[r * 7 + j] - mx);
        want += (mx + log(z) - lg[r * 7 + tv[r]]) / 9;
    }
    ck_close(fg_item(loss), want, 1e-12);
    ck_close(fg_item(loss), log(7.0), 0.05); /* small init: close to uniform */
    free(lg);
    /* tied head: logits = ln_f(h) @ wte^T, so the head's gradient lands in wte */
    ck_assert_int_eq(fg_backward(loss), FG_OK);
    ck_assert_ptr_nonnull(fg_grad(m.wte.weight));
    /* without targets or loss pointer: logits only */
    ck_same_tensor(fg_gpt_forward(&m, idx, NULL, false, NULL, NULL), logits, 0);
    /* dropout: training changes the logits, eval does not */
    fg_gpt md;
    fg_gpt_config cd = TINY;
    cd.dropout = 0.2;
    ck_assert_int_eq(fg_gpt_init(&md, &cd, gen, CPU, F64), FG_OK);
    fg_tensor *e1 = fg_gpt_forward(&md, idx, NULL, false, gen, NULL);
    ck_same_tensor(fg_gpt_forward(&md, idx, NULL, false, gen, NULL), e1, 0);
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(fg_gpt_forward(&md, idx, NULL, true, gen, NULL), e1, 0, 0, &r), FG_OK);
    ck_assert(r.n_mismatch > 0);
    fg_gpt_free(&md);
    fg_gpt_free(&m);
    END;
}
END_TEST

/* ---------------------------------------------------------------- gradcheck */

typedef struct {
    fg_gpt *m;
    fg_tensor *idx, *tgt;
} gpt_ctx;

static fg_tensor *f_gpt_loss(fg_tensor *const *in, void *ctx)
{
    (void)in; /* the inputs are the model's own parameters, perturbed in place */
    gpt_ctx *c = ctx;
    fg_tensor *loss = NULL;
    fg_gpt_forward(c->m, c->idx, c->tgt, false, NULL, &loss);
    return loss;
}

START_TEST(test_gpt_gradcheck)
{
    BEGIN;
    fg_gpt m;
    ck_assert_int_eq(fg_gpt_init(&m, &TINY, gen, CPU, F64), FG_OK);
    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_gpt_params(&m, NULL, reg), FG_OK);
    spread_params(reg, gen);
    gpt_ctx c = {&m, ids((int64_t[]){1, 2, 3, 4, 5, 0, 6, 6, 2, 1}, 2, 5),
                 ids((int64_t[]){2, 3, 4, 5, 6, 6, 0, 2, 1, 0}, 2, 5)};
    const int64_t n = fg_params_count(reg);
    ck_assert_int_eq(n, 2 + 2 * 12 + 2);
    /* gradcheck takes up to 16 inputs: every parameter, in groups */
    for (int64_t i0 = 0; i0 < n; i0 += 14) {
        fg_tensor *in[14];
        int k = 0;
        for (int64_t i = i0; i < n && k < 14; i++) in[k++] = fg_params_at(reg, i)->t;
        ck_gradcheck(f_gpt_loss, &c, k, in);
    }
    fg_params_free(reg);
    fg_gpt_free(&m);
    END;
}
END_TEST

/* ---------------------------------------------------------------- registry, count, init */

START_TEST(test_gpt_registry_count_init)
{
    BEGIN;
    /* nanoGPT shakespeare-char: 6 layers, 6 heads, 384 wide, vocab 65, block 256, no bias */
    const fg_gpt_config cfg = {.vocab_size = 65, .block_size = 256, .n_layer = 6, .n_head = 6, .n_embd = 384};
    fg_gpt m;
    ck_assert_int_eq(fg_gpt_init(&m, &cfg, gen, CPU, FG_F32), FG_OK);
    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_gpt_params(&m, NULL, reg), FG_OK);
    ck_assert_int_eq(fg_params_count(reg), 2 + 6 * 6 + 1);
    ck_assert_int_eq(fg_params_numel(reg), 10745088);
    ck_assert_int_eq(fg_params_numel(reg), count_formula(65, 256, 6, 384, 6, 6, false));
    ck_assert_int_eq(fg_gpt_num_params(&m, false), 10745088);
    ck_assert_int_eq(fg_gpt_num_params(&m, true), 10646784); /* nanoGPT prints "10.65M" */
    const char *names[] = {"transformer.wte.weight",          "transformer.wpe.weight",
                           "transformer.h.0.ln_1.weight",     "transformer.h.0.attn.c_attn.weight",
                           "transformer.h.0.attn.c_proj.weight", "transformer.h.0.ln_2.weight",
                           "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight"};
    for (int i = 0; i < 8; i++) ck_assert_str_eq(fg_params_at(reg, i)->name, names[i]);
    ck_assert_str_eq(fg_params_at(reg, 37)->name, "transformer.h.5.mlp.c_proj.weight");
    ck_assert_str_eq(fg_params_at(reg, 38)->name, "transformer.ln_f.weight");
    ck_assert_ptr_null(fg_params_find(reg, "lm_head.weight")); /* tied to wte */
    int decay = 0;
    for (int64_t i = 0; i < fg_params_count(reg); i++) {
        const fg_param *p = fg_params_at(reg, i);
        ck_assert(fg_requires_grad(p->t) && fg_dtype_of(p->t) == FG_F32);
        decay += p->decay;
        ck_assert_int_eq(p->decay, strstr(p->name, "c_") != NULL); /* linear weights only */
    }
    ck_assert_int_eq(decay, 4 * 6);

    /* GPT-2 init statistics: std 0.02, residual projections 0.02 / sqrt(2 n_layer) */
    const char *kinds[] = {"attn.c_attn.weight", "mlp.c_fc.weight", "attn.c_proj.weight", "mlp.c_proj.weight",
                           "wte.weight", "wpe.weight"};
    const double want[] = {0.02, 0.02, 0.02 / sqrt(12.0), 0.02 / sqrt(12.0), 0.02, 0.02};
    for (int k = 0; k < 6; k++) {
        double s1 = 0, s2 = 0;
        int64_t cnt = 0;
        for (int64_t i = 0; i < fg_params_count(reg); i++) {
            const fg_param *p = fg_params_at(reg, i);
            if (!ends_with(p->name, kinds[k])) continue;
            double *v = host(p->t);
            for (int64_t j = 0; j < fg_numel(p->t); j++) s1 += v[j], s2 += v[j] * v[j];
            cnt += fg_numel(p->t);
            free(v);
        }
        const double mean = s1 / cnt, sd = sqrt(s2 / cnt - mean * mean);
        ck_assert_msg(fabs(sd / want[k] - 1) < 0.02, "%s: std %.6f, expected %.6f", kinds[k], sd, want[k]);
        ck_assert_msg(fabs(mean) < 4 * want[k] / sqrt((double)cnt), "%s: mean %.3g", kinds[k], mean);
    }
    double *lnw = host(m.h[3].ln_2.weight);
    for (int j = 0; j < 384; j++) ck_assert(lnw[j] == 1);
    free(lnw);
    fg_params_free(reg);
    fg_gpt_free(&m);

    /* bias and GQA: the formula, zero biases, names with a prefix */
    const fg_gpt_config cb = {.vocab_size = 50, .block_size = 16, .n_layer = 3, .n_head = 4, .n_kv_head = 2,
                              .n_embd = 32, .bias = true};
    ck_assert_int_eq(fg_gpt_init(&m, &cb, gen, CPU, FG_F32), FG_OK);
    reg = fg_params_new();
    ck_assert_int_eq(fg_gpt_params(&m, "model", reg), FG_OK);
    ck_assert_int_eq(fg_params_count(reg), 2 + 3 * 12 + 2);
    ck_assert_int_eq(fg_params_numel(reg), count_formula(50, 16, 3, 32, 4, 2, true));
    ck_assert_str_eq(fg_params_at(reg, 0)->name, "model.transformer.wte.weight");
    ck_assert_str_eq(fg_params_at(reg, 3)->name, "model.transformer.h.0.ln_1.bias");
    ck_assert_str_eq(fg_params_at(reg, 39)->name, "model.transformer.ln_f.bias");
    ck_shape(m.h[0].attn.c_attn.weight, 2, (int64_t[]){32, 32 + 2 * 2 * 8});
    for (int64_t i = 0; i < fg_params_count(reg); i++) {
        const fg_param *p = fg_params_at(reg, i);
        if (!ends_with(p->name, ".bias")) continue;
        double *v = host(p->t);
        for (int64_t j = 0; j < fg_numel(p->t); j++) ck_assert(v[j] == 0);
        free(v);
    }
    fg_params_free(reg);
    /* same seed, same parameters */
    fg_gpt m2;
    fg_generator *g2 = fg_generator_new(7), *g3 = fg_generator_new(7);
    ck_assert_int_eq(fg_gpt_init(&m2, &cb, g2, CPU, F64), FG_OK);
    fg_gpt m3;
    ck_assert_int_eq(fg_gpt_init(&m3, &cb, g3, CPU, FG_F32), FG_OK);
    ck_same_tensor(m3.h[2].mlp.c_proj.weight, m2.h[2].mlp.c_proj.weight, 1e-8); /* f32 rounding of the same draws */
    fg_gpt_free(&m2), fg_gpt_free(&m3);
    fg_generator_free(g2), fg_generator_free(g3);
    fg_gpt_free(&m);
    END;
}
END_TEST

/* ---------------------------------------------------------------- KV cache */

START_TEST(test_gpt_kv_cache)
{
    BEGIN;
    for (int gqa = 0; gqa < 2; gqa++) {
        fg_gpt_config cfg = TINY;
        cfg.n_kv_head = gqa ? 1 : 0;
        cfg.block_size = 8;
        fg_gpt m;
        ck_assert_int_eq(fg_gpt_init(&m, &cfg, gen, CPU, F64), FG_OK);
        fg_params *reg = fg_params_new();
        ck_assert_int_eq(fg_gpt_params(&m, NULL, reg), FG_OK);
        spread_params(reg, gen);
        fg_params_free(reg);
        const int64_t B = 2, T = 8, V = 7;
        fg_tensor *idx = fg_randint(gen, 0, V, FG_SHAPE(B, T), FG_I64, CPU);
        fg_tensor *full = fg_gpt_forward(&m, idx, NULL, false, NULL, NULL); /* (B, T, V) */
        /* one token at a time */
        fg_gpt_cache c;
        ck_assert_int_eq(fg_gpt_cache_init(&c, &m, B, 0), FG_OK);
        ck_assert_int_eq(c.max_len, 8);
        for (int64_t t = 0; t < T; t++) {
            fg_tensor *lg = fg_gpt_forward_cached(&m, &c, fg_narrow(idx, 1, t, 1)); /* (B, 1, V) */
            ck_shape(lg, 3, (int64_t[]){B, 1, V});
            ck_assert(!fg_requires_grad(lg));
            ck_same_tensor(lg, fg_contiguous(fg_narrow(full, 1, t, 1)), 1e-10);
            ck_assert_int_eq(c.len, t + 1);
        }
        /* full cache: one more position is an error, the cache unchanged */
        fg_clear_error();
        ck_assert_ptr_null(fg_gpt_forward_cached(&m, &c, fg_narrow(idx, 1, 0, 1)));
        ck_err(FG_ERR_INVALID, "do not fit the cache", "8 of 8");
        ck_assert_int_eq(c.len, 8);
        /* reset, then chunks: 3 (prefill), 1, 2, 2 */
        fg_gpt_cache_reset(&c);
        const int64_t chunk[4] = {3, 1, 2, 2};
        for (int k = 0, t = 0; k < 4; t += (int)chunk[k], k++) {
            fg_tensor *lg = fg_gpt_forward_cached(&m, &c, fg_contiguous(fg_narrow(idx, 1, t, chunk[k])));
            ck_same_tensor(lg, fg_contiguous(fg_narrow(full, 1, t, chunk[k])), 1e-10);
        }
        /* a shorter cache than block_size */
        fg_gpt_cache c2;
        ck_assert_int_eq(fg_gpt_cache_init(&c2, &m, B, 4), FG_OK);
        ck_same_tensor(fg_gpt_forward_cached(&m, &c2, fg_contiguous(fg_narrow(idx, 1, 0, 4))),
                       fg_contiguous(fg_narrow(full, 1, 0, 4)), 1e-10);
        fg_gpt_cache_free(&c2);
        fg_clear_error();
        ck_assert_int_eq(fg_gpt_cache_init(&c2, &m, B, 9), FG_ERR_INVALID); /* beyond wpe */
        ck_assert_ptr_null(c2.layer);
        /* batch mismatch */
        fg_gpt_cache_reset(&c);
        ck_assert_ptr_null(fg_gpt_forward_cached(&m, &c, fg_zeros(FG_SHAPE(3, 1), FG_I64, CPU)));
        ck_err(FG_ERR_SHAPE, "batch 3", "cache batch 2");
        fg_gpt_cache_free(&c);
        fg_gpt_cache_free(&c); /* twice is fine */
        fg_gpt_free(&m);
    }
    /* a non-causal attention layer has no cache semantics */
    fg_nn_attention a;
    fg_nn_attention_config ac = {.n_embd = 4, .n_head = 2, .causal = false};
    ck_assert_int_eq(fg_nn_attention_init(&a, &ac, gen, CPU, F64), FG_OK);
    fg_nn_kv_cache kc;
    ck_assert_int_eq(fg_nn_kv_cache_init(&kc, &a, 1, 4), FG_OK);
    fg_clear_error();
    ck_assert_ptr_null(fg_nn_attention_forward_cached(&a, fg_zeros(FG_SHAPE(1, 1, 4), F64, CPU), &kc));
    ck_err(FG_ERR_INVALID, "causal", NULL);
    fg_nn_kv_cache_free(&kc);
    fg_nn_attention_free(&a);
    END;
}
END_TEST

/* ---------------------------------------------------------------- sampling */

/* Greedy continuation from full forwards over the last block_size tokens (nanoGPT's sample). */
static void greedy_reference(const fg_gpt *m, int64_t *toks, int64_t T0, int64_t n)
{
    const int64_t bs = m->cfg.block_size, V = m->cfg.vocab_size;
    for (int64_t t = T0; t < T0 + n; t++) {
        fg_scope *s = fg_scope_begin();
        const int64_t start = t > bs ? t - bs : 0;
        fg_tensor *lg = fg_gpt_forward((fg_gpt *)m, ids(toks + start, 1, t - start), NULL, false, NULL, NULL);
        double *v = host(lg);
        int64_t best = 0;
        for (int64_t j = 1; j < V; j++)
            if (v[(t - start - 1) * V + j] > v[(t - start - 1) * V + best]) best = j;
        toks[t] = best;
        free(v);
        fg_scope_end(s);
    }
}

START_TEST(test_gpt_generate)
{
    BEGIN;
    fg_gpt m;
    ck_assert_int_eq(fg_gpt_init(&m, &TINY, gen, CPU, F64), FG_OK);
    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_gpt_params(&m, NULL, reg), FG_OK);
    spread_params(reg, gen);
    fg_params_free(reg);
    /* greedy past block_size (6): 3 prompt + 9 new tokens */
    int64_t want[12] = {3, 1, 4};
    greedy_reference(&m, want, 3, 9);
    fg_tensor *out = fg_gpt_generate(&m, ids(want, 1, 3), 9, 0.0, 0, gen);
    ck_shape(out, 2, (int64_t[]){1, 12});
    ck_assert_int_eq(fg_dtype_of(out), FG_I64);
    int64_t got[12];
    ck_assert_int_eq(fg_copy_to_host(out, got, sizeof got), FG_OK);
    for (int i = 0; i < 12; i++) ck_assert_msg(got[i] == want[i], "token %d: %lld, expected %lld", i, (long long)got[i],
                                               (long long)want[i]);
    /* top_k = 1 at any temperature is greedy; a prompt longer than block_size is cropped */
    int64_t want2[10] = {0, 1, 2, 3, 4, 5, 6, 0};
    greedy_reference(&m, want2, 8, 2);
    out = fg_gpt_generate(&m, ids(want2, 1, 8), 2, 1.5, 1, gen);
    ck_assert_int_eq(fg_copy_to_host(out, got, 10 * sizeof *got), FG_OK);
    for (int i = 0; i < 10; i++) ck_assert(got[i] == want2[i]);
    /* sampling: reproducible from the generator state, batch rows independent, tokens in range */
    fg_tensor *prompt = ids((int64_t[]){1, 2, 5, 5}, 2, 2);
    const uint64_t off = fg_generator_offset(gen);
    fg_tensor *s1 = fg_gpt_generate(&m, prompt, 10, 1.0, 0, gen);
    ck_assert(fg_generator_offset(gen) > off);
    fg_generator_set_state(gen, FG_TEST_SEED, off);
    ck_same_tensor(fg_gpt_generate(&m, prompt, 10, 1.0, 0, gen), s1, 0);
    int64_t sv[24];
    ck_assert_int_eq(fg_copy_to_host(s1, sv, sizeof sv), FG_OK);
    for (int i = 0; i < 24; i++) ck_assert(sv[i] >= 0 && sv[i] < 7);
    ck_assert(sv[0] == 1 && sv[1] == 2 && sv[12] == 5 && sv[13] == 5);
    /* top_k = 2: each sampled token is one of the two largest logits of the reference forward */
    fg_tensor *s2 = fg_gpt_generate(&m, prompt, 4, 2.0, 2, gen);
    int64_t tv[12];
    ck_assert_int_eq(fg_copy_to_host(s2, tv, sizeof tv), FG_OK);
    for (int b = 0; b < 2; b++)
        for (int t = 2; t < 6; t++) {
            fg_tensor *lg = fg_gpt_forward(&m, ids(tv + b * 6, 1, t), NULL, false, NULL, NULL);
            double *v = host(lg), *row = v + (t - 1) * 7, x = row[tv[b * 6 + t]];
            int above = 0;
            for (int j = 0; j < 7; j++) above += row[j] > x;
            ck_assert_msg(above < 2, "row %d step %d: token %lld is not in the top 2", b, t, (long long)tv[b * 6 + t]);
            free(v);
        }
    /* zero new tokens: the prompt */
    ck_same_tensor(fg_gpt_generate(&m, prompt, 0, 1.0, 0, gen), prompt, 0);
    fg_clear_error();
    ck_assert_ptr_null(fg_gpt_generate(&m, ids((int64_t[]){1, 9}, 1, 2), 3, 1.0, 0, gen));
    ck_err(FG_ERR_INDEX, "prompt token 1 is 9", NULL);
    ck_assert_ptr_null(fg_gpt_generate(&m, prompt, -1, 1.0, 0, gen));
    ck_err(FG_ERR_INVALID, "max_new_tokens", NULL);
    fg_gpt_free(&m);
    END;
}
END_TEST

/* ---------------------------------------------------------------- training */

START_TEST(test_gpt_train_sgd)
{
    BEGIN;
    /* next token = (token + 1) mod 8 along a cyclic sequence with random starts */
    const fg_gpt_config cfg = {.vocab_size = 8, .block_size = 8, .n_layer = 1, .n_head = 2, .n_embd = 16, .bias = true};
    fg_gpt m;
    ck_assert_int_eq(fg_gpt_init(&m, &cfg, gen, CPU, FG_F32), FG_OK);
    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_gpt_params(&m, NULL, reg), FG_OK);
    const int64_t B = 8, T = 8;
    double first = 0, last = 0;
    fg_memory_stats ms_a, ms_b;
    for (int step = 0; step < 200; step++) {
        if (step == 20) fg_get_memory_stats(&ms_a);
        fg_scope *s = fg_scope_begin();
        int64_t x[64], y[64];
        for (int64_t b = 0; b < B; b++) {
            const int64_t s0 = (step * 5 + b * 3) % 8;
            for (int64_t t = 0; t < T; t++) x[b * T + t] = (s0 + t) % 8, y[b * T + t] = (s0 + t + 1) % 8;
        }
        fg_tensor *loss = NULL;
        fg_gpt_forward(&m, ids(x, B, T), ids(y, B, T), true, gen, &loss);
        ck_assert_msg(loss != NULL, "%s", fg_last_error());
        const double l = fg_item(loss);
        if (step == 0) first = l;
        last = l;
        ck_assert_int_eq(fg_backward(loss), FG_OK);
        /* hand-written SGD over the registry */
        bool prev = fg_set_grad_enabled(false);
        for (int64_t i = 0; i < fg_params_count(reg); i++) {
            fg_tensor *p = fg_params_at(reg, i)->t;
            ck_assert_int_eq(fg_copy_(p, fg_sub(p, fg_mul_scalar(fg_grad(p), 0.5))), FG_OK);
        }
        fg_set_grad_enabled(prev);
        ck_assert_int_eq(fg_params_zero_grad(reg), FG_OK);
        fg_scope_end(s);
    }
    fg_get_memory_stats(&ms_b);
    ck_assert_int_eq(ms_b.live_tensors, ms_a.live_tensors); /* flat memory across steps */
    ck_close(first, log(8.0), 0.1);
    ck_assert_msg(last < 0.1, "loss %.4f -> %.4f after 200 SGD steps", first, last);
    fg_params_free(reg);
    fg_gpt_free(&m);
    END;
}
END_TEST

/* ---------------------------------------------------------------- errors */

START_TEST(test_gpt_errors)
{
    BEGIN;
    fg_gpt m;
    const struct {
        fg_gpt_config c;
        const char *needle;
    } bad[] = {
        {{.vocab_size = 0, .block_size = 4, .n_layer = 1, .n_head = 1, .n_embd = 4}, "vocab_size 0"},
        {{.vocab_size = 5, .block_size = 4, .n_layer = 0, .n_head = 1, .n_embd = 4}, "n_layer 0"},
        {{.vocab_size = 5, .block_size = 4, .n_layer = 1, .n_head = 3, .n_embd = 4}, "n_embd 4 is not a multiple of n_head 3"},
        {{.vocab_size = 5, .block_size = 4, .n_layer = 1, .n_head = 4, .n_kv_head = 3, .n_embd = 4},
         "n_head 4 is not a multiple of n_kv_head 3"},
        {{.vocab_size = 5, .block_size = 4, .n_layer = 1, .n_head = 2, .n_embd = 4, .dropout = -0.5}, "dropout"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ck_assert_int_eq(fg_gpt_init(&m, &bad[i].c, gen, CPU, F64), FG_ERR_INVALID);
        ck_err(FG_ERR_INVALID, "fg_gpt", bad[i].needle);
        ck_assert_ptr_null(m.h);
    }
    ck_assert_int_eq(fg_gpt_init(&m, &TINY, gen, CPU, FG_I32), FG_ERR_DTYPE);
    ck_assert_int_eq(fg_gpt_init(&m, NULL, gen, CPU, F64), FG_ERR_NULL);
    ck_assert_int_eq(fg_gpt_num_params(&m, false), -1);

    ck_assert_int_eq(fg_gpt_init(&m, &TINY, gen, CPU, F64), FG_OK);
    fg_tensor *loss = NULL;
    fg_clear_error();
    ck_assert_ptr_null(fg_gpt_forward(&m, fg_zeros(FG_SHAPE(1, 7), FG_I64, CPU), NULL, false, NULL, NULL));
    ck_err(FG_ERR_SHAPE, "(1, 7)", "T <= 6");
    ck_assert_ptr_null(fg_gpt_forward(&m, fg_zeros(FG_SHAPE(2, 3), F64, CPU), NULL, false, NULL, NULL));
    ck_err(FG_ERR_DTYPE, "idx", "f64");
    ck_assert_ptr_null(fg_gpt_forward(&m, fg_zeros(FG_SHAPE(6), FG_I64, CPU), NULL, false, NULL, NULL));
    ck_err(FG_ERR_SHAPE, "(B, T)", NULL);
    ck_assert_ptr_null(
        fg_gpt_forward(&m, fg_zeros(FG_SHAPE(2, 3), FG_I64, CPU), fg_zeros(FG_SHAPE(2, 4), FG_I64, CPU), false, NULL, &loss));
    ck_err(FG_ERR_SHAPE, "targets (2, 4) do not match idx (2, 3)", NULL);
    ck_assert_ptr_null(loss);
    ck_assert_ptr_null(fg_gpt_forward(&m, ids((int64_t[]){1, 7}, 1, 2), NULL, false, NULL, NULL));
    ck_err(FG_ERR_INDEX, NULL, NULL);
    ck_assert_ptr_null(
        fg_gpt_forward(&m, ids((int64_t[]){1, 2}, 1, 2), ids((int64_t[]){1, 8}, 1, 2), false, NULL, &loss));
    ck_err(FG_ERR_INDEX, NULL, NULL);
    ck_assert_ptr_null(loss);
    fg_gpt_free(&m);
    fg_clear_error();
    ck_assert_ptr_null(fg_gpt_forward(&m, ids((int64_t[]){1, 2}, 1, 2), NULL, false, NULL, NULL));
    ck_err(FG_ERR_STATE, "not initialised", NULL);
    fg_gpt_free(&m);
    END;
}
END_TEST

static Suite *nn_gpt_suite(void)
{
    Suite *s = suite_create("nn_gpt");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_gpt_forward_loss);
    tcase_add_test(tc, test_gpt_gradcheck);
    tcase_add_test(tc, test_gpt_registry_count_init);
    tcase_add_test(tc, test_gpt_kv_cache);
    tcase_add_test(tc, test_gpt_generate);
    tcase_add_test(tc, test_gpt_train_sgd);
    tcase_add_test(tc, test_gpt_errors);
    suite_add_tcase(s, tc);
    return s;
}

FG_TEST_MAIN(nn_gpt_suite)
