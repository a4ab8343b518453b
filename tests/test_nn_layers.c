/* Suite "nn_layers": the layers of flashgrad/nn.h on the CPU in f64. Values
 * against hand computations or plain-C references, gradients of every input
 * and parameter against finite differences (fg_gradcheck perturbs the
 * layer's own parameter tensors in place), registry names, init statistics
 * and the errors bad configurations and inputs give. */
#include <stdio.h>
#include "testutil.h"

#define F64 FG_F64
#define CPU FG_CPU

/* t <- values (row-major), not recorded. */
static void set_values(fg_tensor *t, const double *v)
{
    fg_tensor *s = t64(v, fg_ndim(t), fg_shape(t));
    ck_assert_int_eq(fg_copy_(t, s), FG_OK);
    fg_free(s);
}

/* t <- uniform [lo, hi) (parameters start at ones/zeros; gradchecks want generic values). */
static void randomize(fg_tensor *t, fg_generator *g, double lo, double hi)
{
    fg_tensor *s = fg_uniform(g, lo, hi, fg_ndim(t), fg_shape(t), F64, CPU);
    ck_assert_int_eq(fg_copy_(t, s), FG_OK);
    fg_free(s);
}

static double *host(const fg_tensor *t)
{
    int64_t n = fg_numel(t);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    read_f64(t, v, n);
    return v;
}

static void ck_param(const fg_params *reg, int64_t i, const char *name, const fg_tensor *t, bool decay)
{
    const fg_param *p = fg_params_at(reg, i);
    ck_assert_ptr_nonnull(p);
    ck_assert_msg(!strcmp(p->name, name), "entry %lld is '%s', expected '%s'", (long long)i, p->name, name);
    ck_assert_ptr_eq(p->t, t);
    ck_assert_int_eq(p->decay, decay);
}

/* ---------------------------------------------------------------- Linear */

static fg_tensor *f_linear(fg_tensor *const *in, void *ctx) { return fg_nn_linear_forward(ctx, in[0]); }

START_TEST(test_linear_values_and_names)
{
    BEGIN;
    fg_nn_linear l;
    ck_assert_int_eq(fg_nn_linear_init(&l, 2, 3, true, gen, CPU, F64), FG_OK);
    ck_shape(l.weight, 2, (int64_t[]){2, 3});
    ck_shape(l.bias, 1, (int64_t[]){3});
    ck_assert(fg_requires_grad(l.weight) && fg_requires_grad(l.bias));
    /* PyTorch default init: every value inside +-1/sqrt(in) */
    double *w = host(l.weight);
    for (int i = 0; i < 6; i++) ck_assert(fabs(w[i]) <= 1 / sqrt(2.0));
    free(w);
    set_values(l.weight, (double[]){1, 2, 3, 4, 5, 6});
    set_values(l.bias, (double[]){0.5, -1, 2});
    fg_tensor *x = t64((double[]){1, -1, 2, 0.5}, FG_SHAPE(2, 2));
    fg_tensor *y = fg_nn_linear_forward(&l, x);
    ck_tensor_values(y, (double[]){-3 + 0.5, -3 - 1, -3 + 2, 4 + 0.5, 6.5 - 1, 9 + 2}, 6, 1e-12);

    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_nn_linear_params(&l, "fc", reg), FG_OK);
    ck_assert_int_eq(fg_params_count(reg), 2);
    ck_param(reg, 0, "fc.weight", l.weight, true);
    ck_param(reg, 1, "fc.bias", l.bias, false);
    fg_params_free(reg);
    reg = fg_params_new();
    ck_assert_int_eq(fg_nn_linear_params(&l, NULL, reg), FG_OK);
    ck_param(reg, 0, "weight", l.weight, true);
    fg_params_free(reg);
    fg_nn_linear_free(&l);
    fg_nn_linear_free(&l); /* twice is fine */
    END;
}
END_TEST

START_TEST(test_linear_gradcheck)
{
    BEGIN;
    for (int bias = 0; bias < 2; bias++) {
        fg_nn_linear l;
        ck_assert_int_eq(fg_nn_linear_init(&l, 4, 3, bias, gen, CPU, F64), FG_OK);
        ck_assert(bias ? l.bias != NULL : l.bias == NULL);
        fg_tensor *x = rand_param(gen, FG_SHAPE(2, 5, 4), -1, 1);
        fg_tensor *in[3] = {x, l.weight, l.bias};
        ck_gradcheck(f_linear, &l, bias ? 3 : 2, in);
        fg_nn_linear_free(&l);
    }
    END;
}
END_TEST

/* ---------------------------------------------------------------- Embedding */

static fg_tensor *f_embedding(fg_tensor *const *in, void *ctx)
{
    fg_nn_embedding *e = ctx;
    (void)in;
    fg_tensor *idx = fg_from_data((int64_t[]){3, 0, 3, 1, 4, 2}, FG_SHAPE(2, 3), FG_I64, CPU);
    return fg_nn_embedding_forward(e, idx);
}

START_TEST(test_embedding)
{
    BEGIN;
    fg_nn_embedding e;
    ck_assert_int_eq(fg_nn_embedding_init(&e, 5, 3, gen, CPU, F64), FG_OK);
    ck_shape(e.weight, 2, (int64_t[]){5, 3});
    double *w = host(e.weight);
    fg_tensor *idx = fg_from_data((int64_t[]){4, 1}, FG_SHAPE(2), FG_I64, CPU);
    fg_tensor *y = fg_nn_embedding_forward(&e, idx);
    ck_shape(y, 2, (int64_t[]){2, 3});
    ck_tensor_values(y, (double[]){w[12], w[13], w[14], w[3], w[4], w[5]}, 6, 0);
    free(w);
    fg_tensor *in[1] = {e.weight};
    ck_gradcheck(f_embedding, &e, 1, in); /* id 3 twice: its row's gradient accumulates */

    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_nn_embedding_params(&e, "wte", reg), FG_OK);
    ck_param(reg, 0, "wte.weight", e.weight, false);
    fg_params_free(reg);

    fg_clear_error();
    ck_assert_ptr_null(fg_nn_embedding_forward(&e, fg_from_data((int64_t[]){5}, FG_SHAPE(1), FG_I64, CPU)));
    ck_err(FG_ERR_INDEX, NULL, NULL);
    ck_assert_ptr_null(fg_nn_embedding_forward(&e, fg_zeros(FG_SHAPE(2), F64, CPU)));
    ck_err(FG_ERR_DTYPE, "fg_nn_embedding(5, 3)", "(2,)");
    fg_nn_embedding_free(&e);
    END;
}
END_TEST

/* ---------------------------------------------------------------- norms */

static fg_tensor *f_norm(fg_tensor *const *in, void *ctx) { return fg_nn_norm_forward(ctx, in[0]); }

START_TEST(test_norms)
{
    BEGIN;
    fg_nn_norm ln, rms;
    ck_assert_int_eq(fg_nn_layernorm_init(&ln, 4, true, 0, CPU, F64), FG_OK);
    ck_assert_int_eq(fg_nn_rmsnorm_init(&rms, 4, 1e-6, CPU, F64), FG_OK);
    ck_assert(ln.eps == 1e-5 && rms.eps == 1e-6 && rms.bias == NULL);
    ck_tensor_values(ln.weight, (double[]){1, 1, 1, 1}, 4, 0);
    ck_tensor_values(ln.bias, (double[]){0, 0, 0, 0}, 4, 0);
    /* x = (1, 2, 3, 4): mean 2.5, var 1.25 */
    fg_tensor *x = t64((double[]){1, 2, 3, 4}, FG_SHAPE(1, 4));
    const double r = 1 / sqrt(1.25 + 1e-5), q = 1 / sqrt(7.5 + 1e-6);
    ck_tensor_values(fg_nn_norm_forward(&ln, x), (double[]){-1.5 * r, -0.5 * r, 0.5 * r, 1.5 * r}, 4, 1e-12);
    ck_tensor_values(fg_nn_norm_forward(&rms, x), (double[]){q, 2 * q, 3 * q, 4 * q}, 4, 1e-12);

    randomize(ln.weight, gen, 0.5, 1.5);
    randomize(ln.bias, gen, -0.5, 0.5);
    randomize(rms.weight, gen, 0.5, 1.5);
    fg_tensor *xr = rand_param(gen, FG_SHAPE(3, 2, 4), -2, 2);
    ck_gradcheck(f_norm, &ln, 3, (fg_tensor *[]){xr, ln.weight, ln.bias});
    ck_gradcheck(f_norm, &rms, 2, (fg_tensor *[]){xr, rms.weight});

    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_nn_norm_params(&ln, "ln_f", reg), FG_OK);
    ck_assert_int_eq(fg_nn_norm_params(&rms, "norm", reg), FG_OK);
    ck_assert_int_eq(fg_params_count(reg), 3);
    ck_param(reg, 0, "ln_f.weight", ln.weight, false);
    ck_param(reg, 1, "ln_f.bias", ln.bias, false);
    ck_param(reg, 2, "norm.weight", rms.weight, false);
    fg_params_free(reg);

    fg_nn_norm nb;
    ck_assert_int_eq(fg_nn_layernorm_init(&nb, 4, false, 0, CPU, F64), FG_OK);
    ck_assert_ptr_null(nb.bias);
    fg_nn_norm_free(&nb);
    fg_clear_error();
    ck_assert_ptr_null(fg_nn_norm_forward(&ln, fg_zeros(FG_SHAPE(2, 3), F64, CPU)));
    ck_err(FG_ERR_SHAPE, "fg_nn_layernorm(4)", "(2, 3)");
    ck_assert_ptr_null(fg_nn_norm_forward(&ln, fg_zeros(FG_SHAPE(2, 4), FG_F32, CPU)));
    ck_err(FG_ERR_DTYPE, "f32", "f64");
    fg_nn_norm_free(&ln);
    fg_nn_norm_free(&rms);
    END;
}
END_TEST

/* ---------------------------------------------------------------- dropout */

START_TEST(test_dropout)
{
    BEGIN;
    fg_nn_dropout d;
    ck_assert_int_eq(fg_nn_dropout_init(&d, 0.5), FG_OK);
    fg_tensor *x = fg_ones(FG_SHAPE(1000), F64, CPU);
    fg_tensor *y = fg_nn_dropout_forward(&d, x, false, gen); /* eval: identity (a copy) */
    ck_assert_ptr_ne(y, x);
    ck_same_tensor(y, x, 0);
    const uint64_t off = fg_generator_offset(gen);
    y = fg_nn_dropout_forward(&d, x, true, gen);
    ck_assert(fg_generator_offset(gen) > off);
    double *v = host(y);
    int zeros = 0;
    for (int i = 0; i < 1000; i++) {
        ck_assert(v[i] == 0 || v[i] == 2);
        zeros += v[i] == 0;
    }
    ck_assert(zeros > 400 && zeros < 600);
    free(v);
    /* same (seed, offset): same mask */
    fg_generator_set_state(gen, FG_TEST_SEED, off);
    ck_same_tensor(fg_nn_dropout_forward(&d, x, true, gen), y, 0);
    ck_assert_int_eq(fg_nn_dropout_init(&d, 0), FG_OK);
    ck_same_tensor(fg_nn_dropout_forward(&d, x, true, gen), x, 0);
    ck_assert_int_eq(fg_nn_dropout_init(&d, 1.0), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "fg_nn_dropout", "1");
    ck_assert_int_eq(fg_nn_dropout_init(&d, -0.1), FG_ERR_INVALID);
    END;
}
END_TEST

/* ---------------------------------------------------------------- MLP */

static fg_tensor *f_mlp(fg_tensor *const *in, void *ctx) { return fg_nn_mlp_forward(ctx, in[0], false, NULL); }

START_TEST(test_mlp)
{
    BEGIN;
    fg_nn_mlp m;
    ck_assert_int_eq(fg_nn_mlp_init(&m, 3, 0, true, 0.0, NULL, gen, CPU, F64), FG_OK);
    ck_shape(m.c_fc.weight, 2, (int64_t[]){3, 12});
    ck_shape(m.c_proj.weight, 2, (int64_t[]){12, 3});
    fg_tensor *x = rand_param(gen, FG_SHAPE(2, 2, 3), -1, 1);
    /* gelu (tanh form) between the two maps */
    fg_tensor *want = fg_add(fg_matmul(fg_gelu(fg_add(fg_matmul(x, m.c_fc.weight), m.c_fc.bias), true), m.c_proj.weight),
                             m.c_proj.bias);
    ck_same_tensor(fg_nn_mlp_forward(&m, x, true, gen), want, 1e-12); /* dropout 0: training changes nothing */
    ck_gradcheck(f_mlp, &m, 5, (fg_tensor *[]){x, m.c_fc.weight, m.c_fc.bias, m.c_proj.weight, m.c_proj.bias});

    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_nn_mlp_params(&m, "h.0.mlp", reg), FG_OK);
    ck_assert_int_eq(fg_params_count(reg), 4);
    ck_param(reg, 0, "h.0.mlp.c_fc.weight", m.c_fc.weight, true);
    ck_param(reg, 1, "h.0.mlp.c_fc.bias", m.c_fc.bias, false);
    ck_param(reg, 2, "h.0.mlp.c_proj.weight", m.c_proj.weight, true);
    ck_param(reg, 3, "h.0.mlp.c_proj.bias", m.c_proj.bias, false);
    fg_params_free(reg);
    fg_nn_mlp_free(&m);

    /* GPT-2 init: N(0, std) weights, zero biases, the projection at proj std */
    const fg_nn_init init = {.init_std = 0.02, .proj_init_std = 0.005};
    ck_assert_int_eq(fg_nn_mlp_init(&m, 64, 128, true, 0.1, &init, gen, CPU, F64), FG_OK);
    double *w = host(m.c_fc.weight), *p = host(m.c_proj.weight), *b = host(m.c_fc.bias);
    double sw = 0, sp = 0;
    for (int i = 0; i < 64 * 128; i++) sw += w[i] * w[i], sp += p[i] * p[i];
    ck_close(sqrt(sw / (64 * 128)), 0.02, 0.02 * 0.05);
    ck_close(sqrt(sp / (64 * 128)), 0.005, 0.005 * 0.05);
    for (int i = 0; i < 128; i++) ck_assert(b[i] == 0);
    free(w), free(p), free(b);
    /* dropout in training only */
    fg_tensor *x2 = fg_randn(gen, FG_SHAPE(4, 64), F64, CPU);
    ck_same_tensor(fg_nn_mlp_forward(&m, x2, false, gen), fg_nn_mlp_forward(&m, x2, false, gen), 0);
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(fg_nn_mlp_forward(&m, x2, true, gen), fg_nn_mlp_forward(&m, x2, false, gen), 0, 0, &r),
                     FG_OK);
    ck_assert(r.n_mismatch > 0);
    fg_nn_mlp_free(&m);

    ck_assert_int_eq(fg_nn_mlp_init(&m, 3, 0, true, 1.5, NULL, gen, CPU, F64), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "fg_nn_mlp", "dropout");
    ck_assert_ptr_null(m.c_fc.weight);
    END;
}
END_TEST

/* ---------------------------------------------------------------- attention */

/* Plain-C reference of the attention layer on x (B, T, C). */
static void ref_attention(const fg_nn_attention *a, const double *x, int64_t B, int64_t T, double *out)
{
    const int64_t C = a->cfg.n_embd, H = a->cfg.n_head, Hkv = a->cfg.n_kv_head, D = a->head_dim;
    const int64_t W = (H + 2 * Hkv) * D;
    double *w = host(a->c_attn.weight), *bw = a->c_attn.bias ? host(a->c_attn.bias) : NULL;
    double *pw = host(a->c_proj.weight), *pb = a->c_proj.bias ? host(a->c_proj.bias) : NULL;
    double *qkv = calloc((size_t)(B * T * W), sizeof *qkv), *y = calloc((size_t)(B * T * H * D), sizeof *y);
    for (int64_t r = 0; r < B * T; r++)
        for (int64_t j = 0; j < W; j++) {
            double s = bw ? bw[j] : 0;
            for (int64_t c = 0; c < C; c++) s += x[r * C + c] * w[c * W + j];
            qkv[r * W + j] = s;
        }
    double *p = malloc((size_t)T * sizeof *p);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t g = h / (H / Hkv);
            for (int64_t i = 0; i < T; i++) {
                const int64_t nk = a->cfg.causal ? i + 1 : T;
                double m = -INFINITY, z = 0;
                for (int64_t j = 0; j < nk; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < D; d++)
                        s += qkv[(b * T + i) * W + h * D + d] * qkv[(b * T + j) * W + H * D + g * D + d];
                    p[j] = s / sqrt((double)D);
                    m = fmax(m, p[j]);
                }
                for (int64_t j = 0; j < nk; j++) z += (p[j] = exp(p[j] - m));
                for (int64_t d = 0; d < D; d++) {
                    double s = 0;
                    for (int64_t j = 0; j < nk; j++) s += p[j] / z * qkv[(b * T + j) * W + (H + Hkv) * D + g * D + d];
                    y[(b * T + i) * H * D + h * D + d] = s;
                }
            }
        }
    for (int64_t r = 0; r < B * T; r++)
        for (int64_t c = 0; c < C; c++) {
            double s = pb ? pb[c] : 0;
            for (int64_t j = 0; j < H * D; j++) s += y[r * H * D + j] * pw[j * C + c];
            out[r * C + c] = s;
        }
    free(w), free(bw), free(pw), free(pb), free(qkv), free(y), free(p);
}

static fg_tensor *f_attn(fg_tensor *const *in, void *ctx) { return fg_nn_attention_forward(ctx, in[0], false, NULL); }

static void check_attention(fg_generator *gen, int64_t C, int64_t H, int64_t Hkv, bool causal, bool bias)
{
    fg_nn_attention a;
    fg_nn_attention_config cfg = {.n_embd = C, .n_head = H, .n_kv_head = Hkv, .causal = causal, .bias = bias};
    ck_assert_int_eq(fg_nn_attention_init(&a, &cfg, gen, CPU, F64), FG_OK);
    const int64_t D = C / H, kv = Hkv ? Hkv : H;
    ck_assert_int_eq(a.head_dim, D);
    ck_assert_int_eq(a.cfg.n_kv_head, kv);
    ck_shape(a.c_attn.weight, 2, (int64_t[]){C, (H + 2 * kv) * D});
    ck_shape(a.c_proj.weight, 2, (int64_t[]){C, C});
    const int64_t B = 2, T = 5;
    fg_tensor *x = rand_param(gen, FG_SHAPE(B, T, C), -1, 1);
    double *xv = host(x), *want = malloc((size_t)(B * T * C) * sizeof *want);
    ref_attention(&a, xv, B, T, want);
    fg_tensor *y = fg_nn_attention_forward(&a, x, false, NULL);
    ck_shape(y, 3, (int64_t[]){B, T, C});
    ck_tensor_values(y, want, B * T * C, 1e-12);
    free(xv), free(want);
    fg_tensor *in[5] = {x, a.c_attn.weight, a.c_proj.weight, a.c_attn.bias, a.c_proj.bias};
    ck_gradcheck(f_attn, &a, bias ? 5 : 3, in);
    fg_nn_attention_free(&a);
}

START_TEST(test_attention_layer)
{
    BEGIN;
    check_attention(gen, 8, 2, 0, true, true);   /* MHA, causal */
    check_attention(gen, 8, 2, 0, false, false); /* MHA, bidirectional, no bias */
    check_attention(gen, 12, 4, 2, true, true);  /* GQA 4q/2kv */
    check_attention(gen, 12, 6, 1, true, false); /* MQA */
    END;
}
END_TEST

START_TEST(test_attention_names_dropout_errors)
{
    BEGIN;
    fg_nn_attention a;
    fg_nn_attention_config cfg = {.n_embd = 8, .n_head = 4, .n_kv_head = 2, .causal = true, .bias = true, .dropout = 0.3};
    ck_assert_int_eq(fg_nn_attention_init(&a, &cfg, gen, CPU, F64), FG_OK);
    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_nn_attention_params(&a, "h.1.attn", reg), FG_OK);
    ck_assert_int_eq(fg_params_count(reg), 4);
    ck_param(reg, 0, "h.1.attn.c_attn.weight", a.c_attn.weight, true);
    ck_param(reg, 1, "h.1.attn.c_attn.bias", a.c_attn.bias, false);
    ck_param(reg, 2, "h.1.attn.c_proj.weight", a.c_proj.weight, true);
    ck_param(reg, 3, "h.1.attn.c_proj.bias", a.c_proj.bias, false);
    ck_assert_int_eq(fg_params_numel(reg), 8 * 16 + 16 + 64 + 8);
    ck_assert_int_eq(fg_nn_attention_params(&a, "h.1.attn", reg), FG_ERR_INVALID); /* twice: duplicate names */
    fg_params_free(reg);

    /* dropout only when training; reproducible from the generator state */
    fg_tensor *x = fg_randn(gen, FG_SHAPE(2, 6, 8), F64, CPU);
    fg_tensor *e1 = fg_nn_attention_forward(&a, x, false, gen), *e2 = fg_nn_attention_forward(&a, x, false, gen);
    ck_same_tensor(e1, e2, 0);
    const uint64_t off = fg_generator_offset(gen);
    fg_tensor *t1 = fg_nn_attention_forward(&a, x, true, gen);
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(t1, e1, 0, 0, &r), FG_OK);
    ck_assert(r.n_mismatch > 0);
    fg_generator_set_state(gen, FG_TEST_SEED, off);
    ck_same_tensor(fg_nn_attention_forward(&a, x, true, gen), t1, 0);

    fg_clear_error();
    ck_assert_ptr_null(fg_nn_attention_forward(&a, fg_zeros(FG_SHAPE(2, 6, 7), F64, CPU), false, NULL));
    ck_err(FG_ERR_SHAPE, "fg_nn_attention(C=8, H=4, Hkv=2)", "(2, 6, 7)");
    ck_assert_ptr_null(fg_nn_attention_forward(&a, fg_zeros(FG_SHAPE(6, 8), F64, CPU), false, NULL));
    ck_err(FG_ERR_SHAPE, "fg_nn_attention", "2 dims");
    fg_clear_error(); /* a NULL input keeps an earlier error (the root cause) */
    ck_assert_ptr_null(fg_nn_attention_forward(&a, NULL, false, NULL));
    ck_err(FG_ERR_NULL, "fg_nn_attention", "input");
    fg_nn_attention_free(&a);
    fg_clear_error();
    ck_assert_ptr_null(fg_nn_attention_forward(&a, x, false, NULL)); /* freed */
    ck_err(FG_ERR_STATE, "not initialised", NULL);

    const fg_nn_attention_config bad[] = {
        {.n_embd = 10, .n_head = 4},                  /* C % H */
        {.n_embd = 8, .n_head = 4, .n_kv_head = 3},   /* H % Hkv */
        {.n_embd = 8, .n_head = 0},                   /* no heads */
        {.n_embd = 8, .n_head = 2, .dropout = 1.0},   /* dropout range */
        {.n_embd = 8, .n_head = 2, .init = {.init_std = -1}},
    };
    const char *needle[] = {"not a multiple of n_head", "not a multiple of n_kv_head", "positive", "dropout", "init"};
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(fg_nn_attention_init(&a, &bad[i], gen, CPU, F64), FG_ERR_INVALID);
        ck_err(FG_ERR_INVALID, "fg_nn_attention", needle[i]);
        ck_assert_ptr_null(a.c_attn.weight);
    }
    ck_assert_int_eq(fg_nn_attention_init(&a, &cfg, gen, CPU, FG_I64), FG_ERR_DTYPE);
    ck_assert_int_eq(fg_nn_attention_init(&a, NULL, gen, CPU, F64), FG_ERR_NULL);
    END;
}
END_TEST

/* ---------------------------------------------------------------- block */

static fg_tensor *f_block(fg_tensor *const *in, void *ctx) { return fg_nn_block_forward(ctx, in[0], false, NULL); }

START_TEST(test_block)
{
    BEGIN;
    for (int rms = 0; rms < 2; rms++) {
        fg_nn_block b;
        fg_nn_block_config cfg = {.n_embd = 8, .n_head = 4, .n_kv_head = rms ? 2 : 0, .causal = true, .bias = !rms,
                                  .norm = rms ? FG_NN_RMSNORM : FG_NN_LAYERNORM, .mlp_hidden = 12};
        ck_assert_int_eq(fg_nn_block_init(&b, &cfg, gen, CPU, F64), FG_OK);
        fg_params *reg = fg_params_new();
        ck_assert_int_eq(fg_nn_block_params(&b, "h.0", reg), FG_OK);
        const int64_t n = fg_params_count(reg);
        ck_assert_int_eq(n, rms ? 6 : 12);
        ck_assert_str_eq(fg_params_at(reg, 0)->name, "h.0.ln_1.weight");
        ck_assert_str_eq(fg_params_at(reg, n - 1)->name, rms ? "h.0.mlp.c_proj.weight" : "h.0.mlp.c_proj.bias");
        /* norms start at ones/zeros: move them off for a generic check */
        randomize(b.ln_1.weight, gen, 0.5, 1.5), randomize(b.ln_2.weight, gen, 0.5, 1.5);
        if (b.ln_1.bias) randomize(b.ln_1.bias, gen, -0.3, 0.3), randomize(b.ln_2.bias, gen, -0.3, 0.3);
        fg_tensor *x = rand_param(gen, FG_SHAPE(2, 4, 8), -1, 1);
        /* value: x + attn(ln_1(x)), then + mlp(ln_2(.)) */
        fg_tensor *x1 = fg_add(x, fg_nn_attention_forward(&b.attn, fg_nn_norm_forward(&b.ln_1, x), false, NULL));
        fg_tensor *want = fg_add(x1, fg_nn_mlp_forward(&b.mlp, fg_nn_norm_forward(&b.ln_2, x1), false, NULL));
        ck_same_tensor(fg_nn_block_forward(&b, x, false, NULL), want, 1e-12);
        fg_tensor *in[16] = {x};
        for (int64_t i = 0; i < n; i++) in[i + 1] = fg_params_at(reg, i)->t;
        ck_gradcheck(f_block, &b, (int)n + 1, in);
        fg_params_free(reg);
        fg_nn_block_free(&b);
    }
    fg_nn_block b;
    fg_nn_block_config bad = {.n_embd = 8, .n_head = 3};
    ck_assert_int_eq(fg_nn_block_init(&b, &bad, gen, CPU, F64), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "fg_nn_block", "n_head 3");
    END;
}
END_TEST

/* ---------------------------------------------------------------- expert attention */

/* y (rows, out) = x (rows, in) @ w + b */
static void ref_linear(const fg_nn_linear *l, const double *x, int64_t rows, double *y)
{
    double *w = host(l->weight), *b = l->bias ? host(l->bias) : NULL;
    const int64_t in = l->in_features, out = l->out_features;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < out; j++) {
            double acc = b ? b[j] : 0;
            for (int64_t i = 0; i < in; i++) acc += x[r * in + i] * w[i * out + j];
            y[r * out + j] = acc;
        }
    free(w), free(b);
}

/* Plain-C cross-attention: query (B, Lq, dq), memory (B or 1, Lkv, dm). */
static void ref_expert_attention(const fg_nn_expert_attention *l, const double *query, const double *mem, int64_t B,
                                 int64_t Lq, int64_t Lkv, bool shared, double *out)
{
    const int64_t Hq = l->cfg.n_query_heads, Hkv = l->cfg.n_kv_heads, D = l->cfg.head_dim;
    const int64_t Bm = shared ? 1 : B;
    double *q = malloc((size_t)(B * Lq * Hq * D) * sizeof *q), *k = malloc((size_t)(Bm * Lkv * Hkv * D) * sizeof *k);
    double *v = malloc((size_t)(Bm * Lkv * Hkv * D) * sizeof *v), *y = malloc((size_t)(B * Lq * Hq * D) * sizeof *y);
    double *p = malloc((size_t)Lkv * sizeof *p);
    ref_linear(&l->q_proj, query, B * Lq, q);
    ref_linear(&l->k_proj, mem, Bm * Lkv, k);
    ref_linear(&l->v_proj, mem, Bm * Lkv, v);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++)
            for (int64_t i = 0; i < Lq; i++) {
                const int64_t g = h / (Hq / Hkv), bm = shared ? 0 : b;
                double mx = -INFINITY, z = 0;
                for (int64_t j = 0; j < Lkv; j++) {
                    double sc = 0;
                    for (int64_t d = 0; d < D; d++)
                        sc += q[((b * Lq + i) * Hq + h) * D + d] * k[((bm * Lkv + j) * Hkv + g) * D + d];
                    p[j] = sc / sqrt((double)D);
                    mx = fmax(mx, p[j]);
                }
                for (int64_t j = 0; j < Lkv; j++) z += (p[j] = exp(p[j] - mx));
                for (int64_t d = 0; d < D; d++) {
                    double acc = 0;
                    for (int64_t j = 0; j < Lkv; j++) acc += p[j] / z * v[((bm * Lkv + j) * Hkv + g) * D + d];
                    y[((b * Lq + i) * Hq + h) * D + d] = acc;
                }
            }
    ref_linear(&l->out_proj, y, B * Lq, out);
    free(q), free(k), free(v), free(y), free(p);
}

typedef struct {
    fg_nn_expert_attention *l;
    bool with_memory;
} xattn_ctx;

static fg_tensor *f_xattn(fg_tensor *const *in, void *ctx)
{
    xattn_ctx *c = ctx;
    return fg_nn_expert_attention_forward(c->l, in[0], c->with_memory ? in[1] : NULL, false, NULL);
}

START_TEST(test_expert_attention)
{
    BEGIN;
    /* defaults: 12 query heads, 4 KV heads; learned memory of 3 slots (Lkv 3 != Lq 5) */
    fg_nn_expert_attention l;
    fg_nn_expert_attention_config cfg = {.d_query = 24, .n_memory = 3, .bias = true};
    ck_assert_int_eq(fg_nn_expert_attention_init(&l, &cfg, gen, CPU, F64), FG_OK);
    ck_assert(l.cfg.n_query_heads == 12 && l.cfg.n_kv_heads == 4 && l.cfg.head_dim == 2 && l.cfg.d_out == 24);
    ck_shape(l.q_proj.weight, 2, (int64_t[]){24, 24});
    ck_shape(l.k_proj.weight, 2, (int64_t[]){24, 8});
    ck_shape(l.memory, 2, (int64_t[]){3, 24});
    fg_tensor *x = rand_param(gen, FG_SHAPE(2, 5, 24), -1, 1);
    double *xv = host(x), *mv = host(l.memory), *want = malloc(2 * 5 * 24 * sizeof *want);
    ref_expert_attention(&l, xv, mv, 2, 5, 3, true, want);
    fg_tensor *y = fg_nn_expert_attention_forward(&l, x, NULL, false, NULL);
    ck_shape(y, 3, (int64_t[]){2, 5, 24});
    ck_tensor_values(y, want, 2 * 5 * 24, 1e-12);
    free(xv), free(mv), free(want);
    xattn_ctx c = {&l, false};
    ck_gradcheck(f_xattn, &c, 10,
                 (fg_tensor *[]){x, l.memory, l.q_proj.weight, l.q_proj.bias, l.k_proj.weight, l.k_proj.bias,
                                 l.v_proj.weight, l.v_proj.bias, l.out_proj.weight, l.out_proj.bias});
    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_nn_expert_attention_params(&l, "router_attn", reg), FG_OK);
    ck_assert_int_eq(fg_params_count(reg), 9);
    ck_param(reg, 0, "router_attn.q_proj.weight", l.q_proj.weight, true);
    ck_param(reg, 6, "router_attn.out_proj.weight", l.out_proj.weight, true);
    ck_param(reg, 8, "router_attn.memory", l.memory, false);
    fg_params_free(reg);
    fg_nn_expert_attention_free(&l);

    /* a memory sequence given per batch row (Lkv 7), other widths, 6q/2kv, head_dim 3 */
    cfg = (fg_nn_expert_attention_config){.d_query = 4, .d_memory = 5, .n_query_heads = 6, .n_kv_heads = 2,
                                          .head_dim = 3, .d_out = 2};
    ck_assert_int_eq(fg_nn_expert_attention_init(&l, &cfg, gen, CPU, F64), FG_OK);
    ck_assert_ptr_null(l.memory);
    x = rand_param(gen, FG_SHAPE(2, 4, 4), -1, 1);
    for (int shared = 0; shared < 2; shared++) {
        fg_tensor *mem = shared ? rand_param(gen, FG_SHAPE(7, 5), -1, 1) : rand_param(gen, FG_SHAPE(2, 7, 5), -1, 1);
        double *q = host(x), *m = host(mem), *w = malloc(2 * 4 * 2 * sizeof *w);
        ref_expert_attention(&l, q, m, 2, 4, 7, shared, w);
        ck_tensor_values(fg_nn_expert_attention_forward(&l, x, mem, false, NULL), w, 16, 1e-12);
        free(q), free(m), free(w);
        c = (xattn_ctx){&l, true};
        ck_gradcheck(f_xattn, &c, 4, (fg_tensor *[]){x, mem, l.k_proj.weight, l.out_proj.weight});
    }
    fg_clear_error();
    ck_assert_ptr_null(fg_nn_expert_attention_forward(&l, x, NULL, false, NULL));
    ck_err(FG_ERR_NULL, "no memory", NULL);
    ck_assert_ptr_null(fg_nn_expert_attention_forward(&l, x, fg_zeros(FG_SHAPE(3, 7, 5), F64, CPU), false, NULL));
    ck_err(FG_ERR_SHAPE, "different batch sizes", NULL);
    ck_assert_ptr_null(fg_nn_expert_attention_forward(&l, x, fg_zeros(FG_SHAPE(7, 4), F64, CPU), false, NULL));
    ck_err(FG_ERR_SHAPE, "expected last dim 5", NULL);
    fg_nn_expert_attention_free(&l);

    cfg = (fg_nn_expert_attention_config){.d_query = 20}; /* 20 % 12 */
    ck_assert_int_eq(fg_nn_expert_attention_init(&l, &cfg, gen, CPU, F64), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "not a multiple of n_query_heads 12", NULL);
    cfg = (fg_nn_expert_attention_config){.d_query = 24, .n_kv_heads = 5};
    ck_assert_int_eq(fg_nn_expert_attention_init(&l, &cfg, gen, CPU, F64), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "n_query_heads 12 is not a multiple of n_kv_heads 5", NULL);
    END;
}
END_TEST

/* ---------------------------------------------------------------- NULL arguments */

START_TEST(test_null_arguments)
{
    BEGIN;
    fg_tensor *x = fg_zeros(FG_SHAPE(1, 2, 4), F64, CPU);
    fg_params *reg = fg_params_new();
    ck_assert_int_eq(fg_nn_linear_init(NULL, 2, 2, true, gen, CPU, F64), FG_ERR_NULL);
    ck_assert_int_eq(fg_nn_embedding_init(NULL, 2, 2, gen, CPU, F64), FG_ERR_NULL);
    ck_assert_int_eq(fg_nn_layernorm_init(NULL, 2, true, 0, CPU, F64), FG_ERR_NULL);
    ck_assert_int_eq(fg_nn_rmsnorm_init(NULL, 2, 0, CPU, F64), FG_ERR_NULL);
    ck_assert_int_eq(fg_nn_dropout_init(NULL, 0.1), FG_ERR_NULL);
    ck_assert_int_eq(fg_nn_mlp_init(NULL, 2, 0, true, 0, NULL, gen, CPU, F64), FG_ERR_NULL);
    ck_assert_int_eq(fg_nn_block_init(NULL, NULL, gen, CPU, F64), FG_ERR_NULL);
    ck_assert_int_eq(fg_nn_expert_attention_init(NULL, NULL, gen, CPU, F64), FG_ERR_NULL);
    fg_clear_error();
    ck_assert_ptr_null(fg_nn_linear_forward(NULL, x));
    ck_assert_ptr_null(fg_nn_embedding_forward(NULL, x));
    ck_assert_ptr_null(fg_nn_norm_forward(NULL, x));
    ck_assert_ptr_null(fg_nn_dropout_forward(NULL, x, true, gen));
    ck_assert_ptr_null(fg_nn_mlp_forward(NULL, x, true, gen));
    ck_assert_ptr_null(fg_nn_attention_forward(NULL, x, true, gen));
    ck_assert_ptr_null(fg_nn_attention_forward_cached(NULL, x, NULL));
    ck_assert_ptr_null(fg_nn_block_forward(NULL, x, true, gen));
    ck_assert_ptr_null(fg_nn_block_forward_cached(NULL, x, NULL));
    ck_assert_ptr_null(fg_nn_expert_attention_forward(NULL, x, NULL, true, gen));
    ck_assert_int_eq(fg_nn_linear_params(NULL, "a", reg), FG_ERR_NULL);
    ck_assert_int_eq(fg_nn_block_params(NULL, "a", reg), FG_ERR_NULL);
    fg_nn_linear_free(NULL), fg_nn_embedding_free(NULL), fg_nn_norm_free(NULL), fg_nn_mlp_free(NULL);
    fg_nn_attention_free(NULL), fg_nn_block_free(NULL), fg_nn_expert_attention_free(NULL), fg_nn_kv_cache_free(NULL);
    /* a NULL registry, an over-long prefix */
    fg_nn_linear l;
    ck_assert_int_eq(fg_nn_linear_init(&l, 2, 2, false, gen, CPU, F64), FG_OK);
    ck_assert_int_eq(fg_nn_linear_params(&l, "p", NULL), FG_ERR_NULL);
    char longp[400];
    memset(longp, 'a', sizeof longp - 1), longp[sizeof longp - 1] = 0;
    ck_assert_int_eq(fg_nn_linear_params(&l, longp, reg), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "longer than", NULL);
    ck_assert_int_eq(fg_params_count(reg), 0);
    /* an uninitialised (zeroed) layer */
    fg_nn_linear z = {0};
    fg_clear_error();
    ck_assert_ptr_null(fg_nn_linear_forward(&z, x));
    ck_err(FG_ERR_STATE, "not initialised", NULL);
    ck_assert_int_eq(fg_nn_linear_params(&z, "z", reg), FG_ERR_STATE);
    /* bad sizes and dtypes */
    ck_assert_int_eq(fg_nn_linear_init(&z, 0, 2, false, gen, CPU, F64), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "fg_nn_linear", "positive");
    fg_nn_embedding e;
    ck_assert_int_eq(fg_nn_embedding_init(&e, 3, -1, gen, CPU, F64), FG_ERR_INVALID);
    ck_assert_ptr_null(e.weight);
    ck_assert_int_eq(fg_nn_linear_init(&z, 2, 2, false, gen, CPU, FG_I32), FG_ERR_DTYPE);
    ck_err(FG_ERR_DTYPE, "floating-point", "i32");
    ck_assert_int_eq(fg_nn_linear_init(&z, 2, 2, false, gen, (fg_device)7, F64), FG_ERR_DEVICE);
    fg_nn_linear_free(&l);
    fg_params_free(reg);
    END;
}
END_TEST

static Suite *nn_layers_suite(void)
{
    Suite *s = suite_create("nn_layers");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_linear_values_and_names);
    tcase_add_test(tc, test_linear_gradcheck);
    tcase_add_test(tc, test_embedding);
    tcase_add_test(tc, test_norms);
    tcase_add_test(tc, test_dropout);
    tcase_add_test(tc, test_mlp);
    tcase_add_test(tc, test_attention_layer);
    tcase_add_test(tc, test_attention_names_dropout_errors);
    tcase_add_test(tc, test_block);
    tcase_add_test(tc, test_expert_attention);
    tcase_add_test(tc, test_null_arguments);
    suite_add_tcase(s, tc);
    return s;
}

FG_TEST_MAIN(nn_layers_suite)
