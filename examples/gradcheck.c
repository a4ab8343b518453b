/* gradcheck: checks the analytic gradient of every op against central finite
 * differences (float64, CPU) and the float32 forward against float64, and
 * prints one line per case. The attention cases compare fg_attention's flash
 * and math backends with each other and with finite differences. Exits
 * non-zero if any case fails.
 *
 *   examples/gradcheck                 every case on the CPU
 *   examples/gradcheck --op softmax    only cases whose name contains "softmax"
 *   examples/gradcheck --op attention  only the attention cases
 *   examples/gradcheck --device cuda   also run each case in float32 on the GPU and compare
 *                                      its output and gradients with the float64 CPU result
 *                                      (attention: the flash kernels in f32 and bf16)
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <flashgrad.h>

typedef struct {
    const char *name;
    fg_gradcheck_fn fn;
    int n_inputs;
    int ndim[4];
    int64_t shape[4][4];
    double lo, hi; /* input value range (positive for log/sqrt/pow) */
} gc_case;

/* Index tensors live on the device of the case's data. */
static fg_tensor *idx_tensor(const fg_tensor *like, const int64_t *v, int64_t n)
{
    return fg_from_data(v, 1, &n, FG_I64, fg_device_of(like));
}

#define F(name) static fg_tensor *name(fg_tensor *const *x, void *ctx)
F(f_add) { return fg_add(x[0], x[1]); }
F(f_sub) { return fg_sub(x[0], x[1]); }
F(f_mul) { return fg_mul(x[0], x[1]); }
F(f_div) { return fg_div(x[0], x[1]); }
F(f_pow) { return fg_pow(x[0], x[1]); }
F(f_exp) { return fg_exp(x[0]); }
F(f_log) { return fg_log(x[0]); }
F(f_sqrt) { return fg_sqrt(x[0]); }
F(f_rsqrt) { return fg_rsqrt(x[0]); }
F(f_tanh) { return fg_tanh(x[0]); }
F(f_sigmoid) { return fg_sigmoid(x[0]); }
F(f_relu) { return fg_relu(x[0]); }
F(f_gelu_tanh) { return fg_gelu(x[0], true); }
F(f_gelu_erf) { return fg_gelu(x[0], false); }
F(f_silu) { return fg_silu(x[0]); }
F(f_matmul) { return fg_matmul(x[0], x[1]); }
F(f_sum) { return fg_sum(x[0], FG_DIMS(0, 2), true); }
F(f_mean) { return fg_mean(x[0], FG_DIMS(-1), false); }
F(f_max) { return fg_max(x[0], 1, false, NULL); }
F(f_softmax) { return fg_softmax(x[0], -1); }
F(f_log_softmax) { return fg_log_softmax(x[0], 1); }
F(f_layernorm) { return fg_layernorm(x[0], x[1], x[2], 1e-5); }
F(f_rmsnorm) { return fg_rmsnorm(x[0], x[1], 1e-6); }
F(f_cross_entropy)
{
    fg_tensor *t = idx_tensor(x[0], (const int64_t[]){2, 0, -100, 4}, 4);
    return fg_cross_entropy(x[0], t, -100, FG_REDUCE_MEAN);
}
F(f_embedding)
{
    fg_tensor *t = idx_tensor(x[0], (const int64_t[]){1, 3, 1, 0, 5}, 5);
    return fg_embedding(x[0], t);
}
F(f_gather)
{
    int64_t v[] = {0, 2, 1, 1, 0, 2};
    fg_tensor *t = fg_from_data(v, FG_SHAPE(3, 2), FG_I64, fg_device_of(x[0]));
    return fg_gather(x[0], 1, t);
}
F(f_index_select) { return fg_index_select(x[0], 0, idx_tensor(x[0], (const int64_t[]){2, 0, 2}, 3)); }
F(f_concat) { return fg_concat(3, x, 1); }
F(f_topk)
{
    fg_tensor *v = NULL;
    fg_topk(x[0], 2, -1, true, &v, NULL);
    return v;
}
F(f_views) { return fg_permute(fg_slice(fg_reshape(x[0], FG_SHAPE(2, 3, 4)), 2, 1, 4, 2), FG_DIMS(2, 0, 1)); }
F(f_mlp)
{   /* a two-layer perceptron with a GELU, as in a transformer block */
    return fg_matmul(fg_gelu(fg_add(fg_matmul(x[0], x[1]), x[2]), true), x[3]);
}
F(f_where)
{
    fg_tensor *c = fg_gt(x[0], x[1]);
    return fg_where(fg_detach(c), x[0], x[1]);
}

static const gc_case cases[] = {
    {"add (broadcast)", f_add, 2, {2, 2}, {{3, 1}, {1, 4}}, -1, 1},
    {"sub (broadcast)", f_sub, 2, {3, 1}, {{2, 3, 4}, {4}}, -1, 1},
    {"mul (broadcast)", f_mul, 2, {2, 2}, {{3, 4}, {1, 4}}, -1, 1},
    {"div", f_div, 2, {2, 2}, {{3, 4}, {3, 4}}, 0.5, 2},
    {"pow", f_pow, 2, {2, 2}, {{2, 3}, {2, 3}}, 0.5, 2},
    {"exp", f_exp, 1, {2}, {{3, 4}}, -1, 1},
    {"log", f_log, 1, {2}, {{3, 4}}, 0.5, 2},
    {"sqrt", f_sqrt, 1, {2}, {{3, 4}}, 0.5, 2},
    {"rsqrt", f_rsqrt, 1, {2}, {{3, 4}}, 0.5, 2},
    {"tanh", f_tanh, 1, {2}, {{3, 4}}, -2, 2},
    {"sigmoid", f_sigmoid, 1, {2}, {{3, 4}}, -3, 3},
    {"relu", f_relu, 1, {2}, {{3, 4}}, 0.1, 1},
    {"gelu (tanh)", f_gelu_tanh, 1, {2}, {{3, 4}}, -3, 3},
    {"gelu (erf)", f_gelu_erf, 1, {2}, {{3, 4}}, -3, 3},
    {"silu", f_silu, 1, {2}, {{3, 4}}, -3, 3},
    {"matmul (batched, broadcast)", f_matmul, 2, {3, 3}, {{1, 3, 4}, {2, 4, 5}}, -1, 1},
    {"sum (dims 0,2 keepdim)", f_sum, 1, {3}, {{2, 3, 4}}, -1, 1},
    {"mean (last dim)", f_mean, 1, {3}, {{2, 3, 4}}, -1, 1},
    {"max (dim 1)", f_max, 1, {2}, {{3, 5}}, -1, 1},
    {"softmax", f_softmax, 1, {2}, {{3, 5}}, -2, 2},
    {"log_softmax", f_log_softmax, 1, {3}, {{2, 4, 3}}, -2, 2},
    {"layernorm (affine)", f_layernorm, 3, {2, 1, 1}, {{3, 6}, {6}, {6}}, -2, 2},
    {"rmsnorm", f_rmsnorm, 2, {2, 1}, {{3, 6}, {6}}, -2, 2},
    {"cross_entropy (ignore_index)", f_cross_entropy, 1, {2}, {{4, 5}}, -2, 2},
    {"embedding (repeated ids)", f_embedding, 1, {2}, {{6, 3}}, -1, 1},
    {"gather", f_gather, 1, {2}, {{3, 4}}, -1, 1},
    {"index_select", f_index_select, 1, {2}, {{3, 4}}, -1, 1},
    {"concat (3 inputs)", f_concat, 3, {2, 2, 2}, {{2, 1}, {2, 3}, {2, 2}}, -1, 1},
    {"topk values", f_topk, 1, {2}, {{3, 6}}, -1, 1},
    {"views (reshape/slice/permute)", f_views, 1, {1}, {{24}}, -1, 1},
    {"where", f_where, 2, {2, 2}, {{3, 4}, {3, 4}}, -1, 1},
    {"mlp (matmul+bias+gelu+matmul)", f_mlp, 4, {2, 2, 1, 2}, {{5, 4}, {4, 8}, {8}, {8, 3}}, -1, 1},
};

/* f32 forward vs f64 forward on the same values: the precision of the float path. */
static double forward_f32_error(const gc_case *c, fg_tensor *const *in64)
{
    fg_scope *s = fg_scope_begin();
    fg_tensor *in32[4];
    for (int i = 0; i < c->n_inputs; i++) in32[i] = fg_cast(fg_detach(in64[i]), FG_F32);
    bool prev = fg_set_grad_enabled(false);
    fg_tensor *a = c->fn(in32, NULL), *b = c->fn(in64, NULL);
    fg_set_grad_enabled(prev);
    fg_compare_result r = {0};
    double err = (a && b && fg_compare(a, b, 0, 0, &r) == FG_OK) ? r.rel_l2_err : INFINITY;
    fg_scope_end(s);
    return err;
}

/* The case in float32 on the GPU against float64 on the CPU: relative L2 error
 * of the output (*fwd) and the worst over the inputs' gradients (*bwd), for
 * the same random output gradient. */
static fg_status cuda_vs_cpu(const gc_case *c, fg_tensor *const *in64, fg_generator *g, double *fwd, double *bwd)
{
    fg_scope *s = fg_scope_begin();
    fg_tensor *cpu[4], *gpu[4];
    fg_status st = FG_OK;
    for (int i = 0; i < c->n_inputs && st == FG_OK; i++) {
        cpu[i] = fg_clone(fg_detach(in64[i]));
        gpu[i] = fg_to(fg_detach(in64[i]), FG_CUDA, FG_F32);
        if (!cpu[i] || !gpu[i] || fg_set_requires_grad(cpu[i], true) || fg_set_requires_grad(gpu[i], true))
            st = fg_last_status();
    }
    fg_tensor *oc = st == FG_OK ? c->fn(cpu, NULL) : NULL, *og = oc ? c->fn(gpu, NULL) : NULL;
    fg_tensor *r = og ? fg_randn(g, fg_ndim(oc), fg_shape(oc), FG_F64, FG_CPU) : NULL;
    fg_tensor *rg = r ? fg_to(r, FG_CUDA, FG_F32) : NULL;
    if (!rg || fg_backward_with_grad(oc, r) != FG_OK || fg_backward_with_grad(og, rg) != FG_OK)
        st = fg_last_status() != FG_OK ? fg_last_status() : FG_ERR_STATE;
    fg_compare_result cr;
    *fwd = *bwd = INFINITY;
    if (st == FG_OK && (st = fg_compare(og, oc, 0, 0, &cr)) == FG_OK) *fwd = cr.rel_l2_err;
    for (int i = 0; i < c->n_inputs && st == FG_OK; i++) {
        if (i == 0) *bwd = 0;
        if ((st = fg_compare(fg_grad(gpu[i]), fg_grad(cpu[i]), 0, 0, &cr)) == FG_OK && cr.rel_l2_err > *bwd)
            *bwd = cr.rel_l2_err;
    }
    fg_scope_end(s);
    return st;
}

/* ---- attention --------------------------------------------------------------
 * fg_attention's two backends on the same inputs: FLASH (tiled online softmax,
 * backward recomputing the probabilities from the saved LSE) and MATH
 * (materialised scores and probabilities, autograd through the framework's
 * ops). In float64 on the CPU they must agree to rounding, and each must match
 * central differences; with --device cuda the FLASH kernels run in f32 (3xTF32)
 * and bf16 and are compared with the CPU float64 result. */
typedef struct {
    const char *name; /* contains "attention" so --op attention selects the section */
    int64_t B, Hq, Hkv, Lq, Lk, D;
    bool causal;
    bool blhd;        /* leaves stored (B, L, H, D), passed as fg_transpose(x, 1, 2) views */
    double scale;     /* 0: 1 / sqrt(D) */
    double dropout_p; /* 0: none */
    bool padded;      /* key padding: batch entry b keeps its first key_len[b] keys */
    int64_t key_len[4];
} attn_case;

static const attn_case attn_cases[] = {
    /* name, B, Hq, Hkv, Lq, Lk, D, causal, blhd, scale, dropout_p, padded, key_len */
    {"attention plain", 2, 2, 2, 6, 6, 4, false, false, 0, 0, false, {0}},
    {"attention causal Lq<Lk", 1, 2, 2, 4, 9, 5, true, false, 0, 0, false, {0}},
    {"attention causal Lq>Lk", 2, 2, 2, 9, 4, 3, true, false, 0, 0, false, {0}}, /* rows 0..4 see no key */
    {"attention GQA 4q/2kv causal", 1, 4, 2, 6, 7, 4, true, false, 0, 0, false, {0}},
    {"attention MQA 4q/1kv", 2, 4, 1, 5, 8, 3, false, false, 0, 0, false, {0}},
    {"attention scale 0.35", 1, 2, 2, 7, 5, 6, false, false, 0.35, 0, false, {0}},
    {"attention odd D=7 MQA causal", 1, 2, 1, 5, 6, 7, true, false, 0, 0, false, {0}},
    {"attention D=8 Lq=1 causal", 2, 2, 2, 1, 9, 8, true, false, 0, 0, false, {0}}, /* decoding: row 0 sees every key */
    {"attention BLHD layout", 2, 2, 2, 6, 5, 4, false, true, 0, 0, false, {0}},
    {"attention BLHD GQA causal Lq>Lk", 1, 4, 2, 7, 4, 5, true, true, 0, 0, false, {0}},
    {"attention dropout 0.3", 2, 2, 2, 6, 7, 4, false, false, 0, 0.3, false, {0}},
    {"attention dropout GQA causal BLHD", 1, 4, 2, 7, 5, 3, true, true, 0.5, 0.3, false, {0}},
    {"attention key padding GQA causal", 3, 4, 2, 5, 7, 4, true, false, 0, 0, true, {7, 3, 0}},
    {"attention key padding dropout BLHD", 2, 2, 1, 6, 6, 3, false, true, 0, 0.3, true, {2, 5}},
};

/* The dropout mask depends only on (seed, offset) and the element's (b, h, i, j):
 * every call draws from a fresh generator with this seed, so flash, math, the
 * GPU and every finite-difference evaluation see the identical mask. */
#define ATTN_DROP_SEED 0xd2095eedULL
#define ATTN_NAME_W 34 /* width of the case column */

/* Tolerances. f64 CPU flash vs math: both compute in double, so they differ by
 * rounding only (atol = rtol = 1e-12). GPU vs the CPU float64 result, relative
 * L2 error: f32 runs 3xTF32, close to f32 precision (about 1e-7 for out and
 * 3e-7 for the gradients at these sizes; plain TF32 would be about 1e-3);
 * bf16 rounds the output, the probabilities and dS to 8 bits (unit roundoff
 * 3.9e-3; about 2e-3 for out and 5e-3 for the gradients). */
#define ATTN_F64_TOL 1e-12
#define ATTN_F32_TOL_OUT 1e-5
#define ATTN_F32_TOL_GRAD 2e-5
#define ATTN_BF16_TOL_OUT 1e-2
#define ATTN_BF16_TOL_GRAD 2e-2

typedef struct {
    const attn_case *c;
    fg_attn_backend backend;
} attn_ctx;

static fg_tensor *attn_fn(fg_tensor *const *x, void *ctx)
{
    const attn_ctx *a = ctx;
    const attn_case *c = a->c;
    fg_generator *g = NULL;
    if (c->dropout_p > 0 && !(g = fg_generator_new(ATTN_DROP_SEED))) return NULL; /* never the default generator */
    fg_tensor *q = x[0], *k = x[1], *v = x[2];
    if (c->blhd) {
        q = fg_transpose(q, 1, 2);
        k = fg_transpose(k, 1, 2);
        v = fg_transpose(v, 1, 2);
    }
    fg_attention_opts o = {.causal = c->causal, .scale = c->scale, .dropout_p = c->dropout_p,
                           .backend = a->backend, .generator = g};
    if (c->padded) {
        double kl[4];
        for (int64_t b = 0; b < c->B; b++) kl[b] = (double)c->key_len[b];
        o.key_lengths = fg_from_f64(kl, 1, &c->B, FG_I64, fg_device_of(q));
        if (!o.key_lengths) {
            fg_generator_free(g);
            return NULL;
        }
    }
    fg_tensor *out = fg_attention(q, k, v, &o);
    fg_free(o.key_lengths);
    fg_generator_free(g); /* the op keeps the drawn (seed, offset), not the generator */
    return out;
}

static fg_status attn_status(void)
{
    fg_status st = fg_last_status();
    return st != FG_OK ? st : FG_ERR_STATE;
}

typedef struct {
    fg_tensor *out, *grad[3]; /* grad in the leaves' layout */
} attn_result;

/* One forward + backward on copies of the leaves converted to (dev, dt), with
 * upstream gradient w (converted the same way): the gradient of sum(out * w). */
static fg_status attn_run(const attn_case *c, fg_attn_backend be, fg_tensor *const *leaves, fg_tensor *w,
                          fg_device dev, fg_dtype dt, attn_result *r)
{
    fg_tensor *x[3];
    for (int i = 0; i < 3; i++) {
        x[i] = fg_to(fg_detach(leaves[i]), dev, dt);
        if (!x[i] || fg_set_requires_grad(x[i], true) != FG_OK) return attn_status();
    }
    attn_ctx a = {c, be};
    fg_tensor *wd = fg_to(w, dev, dt);
    r->out = wd ? attn_fn(x, &a) : NULL;
    if (!r->out || fg_backward_with_grad(r->out, wd) != FG_OK) return attn_status();
    for (int i = 0; i < 3; i++)
        if (!(r->grad[i] = fg_grad(x[i]))) return attn_status();
    return FG_OK;
}

/* Values that must not be there: any NaN or infinity in out, dq, dk, dv, and
 * (causal with Lq > Lk) any non-zero output or dq in the rows i < Lq - Lk,
 * which see no key. out is (B, Hq, Lq, D); dq is in the leaf layout. */
static fg_status attn_bad_values(const attn_case *c, const attn_result *r, int64_t *bad)
{
    const int64_t no_key = c->causal && c->Lq > c->Lk ? c->Lq - c->Lk : 0;
    const fg_tensor *t[4] = {r->out, r->grad[0], r->grad[1], r->grad[2]};
    *bad = 0;
    for (int n = 0; n < 4; n++) {
        int64_t N = fg_numel(t[n]);
        double *x = malloc((size_t)(N > 0 ? N : 1) * sizeof *x);
        if (!x) return FG_ERR_OOM;
        fg_status st = fg_to_f64_array(t[n], x, N);
        /* row i of element j: out and (B, H, L, D) dq: (j / D) % Lq; (B, L, H, D) dq: (j / (Hq D)) % Lq */
        const int64_t row_div = n == 1 && c->blhd ? c->Hq * c->D : c->D;
        for (int64_t j = 0; j < N && st == FG_OK; j++)
            if (!isfinite(x[j]) || (n < 2 && (j / row_div) % c->Lq < no_key && x[j] != 0)) ++*bad;
        free(x);
        if (st != FG_OK) return st;
    }
    return FG_OK;
}

/* Worst relative L2 error of out (*out_err) and over dq, dk, dv (*grad_err) of
 * a against ref; INFINITY when a has a NaN or infinity where ref has none
 * (the L2 sums cover finite pairs only). */
static fg_status attn_rel_errors(const attn_result *a, const attn_result *ref, double *out_err, double *grad_err)
{
    fg_compare_result cr;
    *out_err = *grad_err = INFINITY;
    for (int n = 0; n < 4; n++) {
        fg_status st = fg_compare(n ? a->grad[n - 1] : a->out, n ? ref->grad[n - 1] : ref->out, 0, 0, &cr);
        if (st != FG_OK) return st;
        double e = isfinite(cr.max_abs_err) ? cr.rel_l2_err : INFINITY;
        if (n == 0) {
            *out_err = e;
            *grad_err = 0;
        } else if (!(e <= *grad_err)) {
            *grad_err = e;
        }
    }
    return FG_OK;
}

/* The FLASH kernels on the GPU in dtype dt against the CPU float64 FLASH result
 * on the same values (for bf16 the inputs and w are rounded to bf16 first, and
 * the reference sees the rounded values, so only the kernels' error is
 * measured). *ok is cleared on errors above (tol_out, tol_grad) and on bad
 * values (attn_bad_values), which are added to *bad. */
static fg_status attn_cuda(const attn_case *c, fg_tensor *const *leaves, fg_tensor *w, const attn_result *ref64,
                           fg_dtype dt, double tol_out, double tol_grad, double *out_err, double *grad_err,
                           int64_t *bad, bool *ok)
{
    fg_tensor *in[3] = {leaves[0], leaves[1], leaves[2]}, *wr = w;
    attn_result ref = *ref64, gpu;
    fg_status st = FG_OK;
    *out_err = *grad_err = INFINITY;
    if (dt != FG_F32) {
        for (int i = 0; i < 3 && st == FG_OK; i++)
            if (!(in[i] = fg_to(fg_to(fg_detach(leaves[i]), FG_CPU, dt), FG_CPU, FG_F64))) st = attn_status();
        if (st == FG_OK && !(wr = fg_to(fg_to(w, FG_CPU, dt), FG_CPU, FG_F64))) st = attn_status();
        if (st == FG_OK) st = attn_run(c, FG_ATTN_FLASH, in, wr, FG_CPU, FG_F64, &ref);
    }
    if (st == FG_OK) st = attn_run(c, FG_ATTN_FLASH, in, wr, FG_CUDA, dt, &gpu);
    if (st == FG_OK) st = fg_cuda_synchronize();
    if (st == FG_OK) st = attn_rel_errors(&gpu, &ref, out_err, grad_err);
    int64_t nbad = 0;
    if (st == FG_OK) st = attn_bad_values(c, &gpu, &nbad);
    *bad += nbad;
    *ok = *ok && st == FG_OK && nbad == 0 && *out_err <= tol_out && *grad_err <= tol_grad;
    return st;
}

/* One attention case: prints its line, returns whether it passed. */
static bool attn_check(const attn_case *c, fg_generator *g, bool cuda, bool verbose, uint64_t seed)
{
    fg_scope *s = fg_scope_begin();
    const int64_t Lh[3][2] = {{c->Lq, c->Hq}, {c->Lk, c->Hkv}, {c->Lk, c->Hkv}};
    const double mag[3] = {2, 2, 1}; /* q, k in [-2, 2): logits of order 1, a softmax far from uniform */
    fg_tensor *leaf[3];
    fg_status st = FG_OK;
    for (int i = 0; i < 3 && st == FG_OK; i++) {
        int64_t L = Lh[i][0], H = Lh[i][1];
        leaf[i] = c->blhd ? fg_uniform(g, -mag[i], mag[i], FG_SHAPE(c->B, L, H, c->D), FG_F64, FG_CPU)
                          : fg_uniform(g, -mag[i], mag[i], FG_SHAPE(c->B, H, L, c->D), FG_F64, FG_CPU);
        if (!leaf[i] || fg_set_requires_grad(leaf[i], true) != FG_OK) st = attn_status();
    }
    /* the upstream gradient: L = sum(out * w), w fixed and random */
    fg_tensor *w = st == FG_OK ? fg_uniform(g, -1, 1, FG_SHAPE(c->B, c->Hq, c->Lq, c->D), FG_F64, FG_CPU) : NULL;
    if (st == FG_OK && !w) st = attn_status();

    /* flash vs math, float64 on the CPU */
    attn_result res[2];
    int64_t bad[2] = {0, 0};
    for (int m = 0; m < 2 && st == FG_OK; m++) {
        st = attn_run(c, m ? FG_ATTN_MATH : FG_ATTN_FLASH, leaf, w, FG_CPU, FG_F64, &res[m]);
        if (st == FG_OK) st = attn_bad_values(c, &res[m], &bad[m]);
    }
    double out_diff = INFINITY, grad_diff = INFINITY;
    bool agree = true;
    for (int n = 0; n < 4 && st == FG_OK; n++) {
        fg_compare_result cr;
        st = fg_compare(n ? res[0].grad[n - 1] : res[0].out, n ? res[1].grad[n - 1] : res[1].out, ATTN_F64_TOL,
                        ATTN_F64_TOL, &cr);
        if (st != FG_OK) break;
        agree = agree && cr.allclose;
        if (n == 0) {
            out_diff = cr.max_abs_err;
            grad_diff = 0;
        } else if (!(cr.max_abs_err <= grad_diff)) {
            grad_diff = cr.max_abs_err;
        }
    }

    /* each backend vs central differences */
    double fd_err[2] = {INFINITY, INFINITY};
    bool fd_ok = true;
    for (int m = 0; m < 2 && st == FG_OK; m++) {
        attn_ctx a = {c, m ? FG_ATTN_MATH : FG_ATTN_FLASH};
        fg_gradcheck_opts o = {.eps = 1e-6, .atol = 1e-6, .rtol = 1e-4, .seed = seed, .verbose = verbose};
        fg_gradcheck_result r;
        st = fg_gradcheck(attn_fn, &a, 3, leaf, &o, &r);
        if (st != FG_OK) break;
        fd_err[m] = 0;
        for (int i = 0; i < 3; i++)
            if (!(r.max_abs_err[i] <= fd_err[m])) fd_err[m] = r.max_abs_err[i];
        fd_ok = fd_ok && r.passed;
    }
    bool ok = st == FG_OK && agree && fd_ok && bad[0] == 0 && bad[1] == 0;

    /* the FLASH kernels on the GPU vs the CPU float64 flash result */
    double cerr[2][2] = {{INFINITY, INFINITY}, {INFINITY, INFINITY}};
    int64_t bad_gpu = 0;
    if (cuda && st == FG_OK)
        st = attn_cuda(c, leaf, w, &res[0], FG_F32, ATTN_F32_TOL_OUT, ATTN_F32_TOL_GRAD, &cerr[0][0], &cerr[0][1],
                       &bad_gpu, &ok);
    if (cuda && st == FG_OK)
        st = attn_cuda(c, leaf, w, &res[0], FG_BF16, ATTN_BF16_TOL_OUT, ATTN_BF16_TOL_GRAD, &cerr[1][0], &cerr[1][1],
                       &bad_gpu, &ok);
    ok = ok && st == FG_OK;

    if (st != FG_OK) {
        printf("%-*s  error: %s\n", ATTN_NAME_W, c->name, fg_last_error());
    } else {
        printf("%-*s %12.3g %12.3g %12.3g %12.3g", ATTN_NAME_W, c->name, out_diff, grad_diff, fd_err[0], fd_err[1]);
        if (cuda) printf(" %12.3g %12.3g %12.3g %12.3g", cerr[0][0], cerr[0][1], cerr[1][0], cerr[1][1]);
        printf("  %s", ok ? "ok" : "FAIL");
        if (bad[0] || bad[1] || bad_gpu) {
            printf(" (NaN/inf, or non-zero in rows with no key: flash %lld, math %lld", (long long)bad[0],
                   (long long)bad[1]);
            if (cuda) printf(", cuda %lld", (long long)bad_gpu);
            printf(")");
        }
        printf("\n");
    }
    fg_clear_error();
    fg_scope_end(s);
    return ok;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: gradcheck [--op SUBSTRING] [--device cpu|cuda] [--seed N] [--verbose] [--help]\n"
               "Checks every op's backward against central finite differences in float64 on the CPU,\n"
               "and attention's flash backend against its math backend (--op attention).\n");
}

int main(int argc, char **argv)
{
    const char *filter = NULL, *device = "cpu";
    unsigned long seed = 42;
    bool verbose = false;
    static const struct option opts[] = {{"op", required_argument, 0, 'o'},   {"device", required_argument, 0, 'd'},
                                         {"seed", required_argument, 0, 's'}, {"verbose", no_argument, 0, 'v'},
                                         {"help", no_argument, 0, 'h'},       {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "o:d:s:vh", opts, NULL)) != -1) {
        switch (ch) {
        case 'o': filter = optarg; break;
        case 'd': device = optarg; break;
        case 's': seed = strtoul(optarg, NULL, 10); break;
        case 'v': verbose = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (strcmp(device, "cpu") != 0 && strcmp(device, "cuda") != 0) {
        fprintf(stderr, "gradcheck: unknown device '%s' (cpu or cuda)\n", device);
        return 2;
    }
    if (strcmp(device, "cuda") == 0) {
        char desc[256];
        if (!fg_cuda_available()) {
            fprintf(stderr, "gradcheck: --device cuda: %s\n", fg_cuda_device_description(desc, sizeof desc));
            return 2;
        }
        fprintf(stderr, "gradcheck: --device cuda: also comparing float32 on %s with float64 on the CPU\n",
                fg_cuda_device_description(desc, sizeof desc));
    }
    bool cuda = strcmp(device, "cuda") == 0;

    size_t n_ops = 0, n_attn = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) n_ops += !filter || strstr(cases[k].name, filter);
    for (size_t k = 0; k < sizeof attn_cases / sizeof attn_cases[0]; k++)
        n_attn += !filter || strstr(attn_cases[k].name, filter);
    if (n_ops + n_attn == 0) {
        fprintf(stderr, "gradcheck: no case matches '%s'\n", filter ? filter : "");
        return 2;
    }
    fg_generator *g = fg_generator_new(seed);
    if (!g) {
        fprintf(stderr, "gradcheck: %s\n", fg_last_error());
        return 1;
    }
    int n_run = 0, n_fail = 0;
    if (n_ops) {
        printf("flashgrad gradcheck: analytic vs central differences (f64, eps 1e-6), f32 forward vs f64\n");
        printf("%-32s %12s %12s %12s", "case", "max abs err", "max rel err", "f32 rel err");
        if (cuda) printf(" %12s %12s", "cuda fwd", "cuda grad");
        printf("  result\n");
    }
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const gc_case *c = &cases[k];
        if (filter && !strstr(c->name, filter)) continue;
        fg_scope *s = fg_scope_begin();
        fg_tensor *in[4];
        for (int i = 0; i < c->n_inputs; i++) {
            in[i] = fg_uniform(g, c->lo, c->hi, c->ndim[i], c->shape[i], FG_F64, FG_CPU);
            fg_set_requires_grad(in[i], true);
        }
        fg_gradcheck_opts o = {.eps = 1e-6, .atol = 1e-6, .rtol = 1e-4, .seed = seed, .verbose = verbose};
        fg_gradcheck_result r;
        fg_status st = fg_gradcheck(c->fn, NULL, c->n_inputs, in, &o, &r);
        double abs_err = 0, rel_err = 0;
        for (int i = 0; i < c->n_inputs; i++) {
            if (r.max_abs_err[i] > abs_err) abs_err = r.max_abs_err[i];
            if (r.max_rel_err[i] > rel_err) rel_err = r.max_rel_err[i];
        }
        double f32_err = st == FG_OK ? forward_f32_error(c, in) : INFINITY;
        /* float32 keeps ~7 digits; a relative L2 error above 1e-5 means a precision bug. */
        bool ok = st == FG_OK && r.passed && f32_err < 1e-5;
        double cf = 0, cb = 0;
        if (cuda && st == FG_OK) {
            st = cuda_vs_cpu(c, in, g, &cf, &cb);
            ok = ok && st == FG_OK && cf < 1e-5 && cb < 1e-5;
        }
        n_run++;
        n_fail += !ok;
        if (st != FG_OK) {
            printf("%-32s  error: %s\n", c->name, fg_last_error());
        } else {
            printf("%-32s %12.3g %12.3g %12.3g", c->name, abs_err, rel_err, f32_err);
            if (cuda) printf(" %12.3g %12.3g", cf, cb);
            printf("  %s\n", ok ? "ok" : "FAIL");
        }
        fg_clear_error();
        fg_scope_end(s);
    }
    if (n_attn) {
        printf("%sattention, f64 on the CPU: flash vs math backend (max abs diff of out, of dq/dk/dv), each backend's\n"
               "gradient vs central differences (max abs err)",
               n_ops ? "\n" : "");
        if (cuda) printf("; cuda flash in f32 and bf16 vs CPU f64 (rel L2 err)");
        printf("\n%-*s %12s %12s %12s %12s", ATTN_NAME_W, "case", "out fl-math", "grad fl-math", "flash vs fd", "math vs fd");
        if (cuda) printf(" %12s %12s %12s %12s", "f32 out", "f32 grad", "bf16 out", "bf16 grad");
        printf("  result\n");
    }
    for (size_t k = 0; k < sizeof attn_cases / sizeof attn_cases[0]; k++) {
        const attn_case *c = &attn_cases[k];
        if (filter && !strstr(c->name, filter)) continue;
        n_run++;
        n_fail += !attn_check(c, g, cuda, verbose, seed);
    }
    fg_generator_free(g);
    printf("%d passed, %d failed\n", n_run - n_fail, n_fail);
    return n_fail ? 1 : 0;
}
