/* gradcheck: checks the analytic gradient of every op against central finite
 * differences (float64, CPU) and the float32 forward against float64, and
 * prints one line per case. Exits non-zero if any case fails.
 *
 *   examples/gradcheck                 every case on the CPU
 *   examples/gradcheck --op softmax    only cases whose name contains "softmax"
 *   examples/gradcheck --device cuda   also run each case in float32 on the GPU and compare
 *                                      its output and gradients with the float64 CPU result
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

static void usage(FILE *f)
{
    fprintf(f, "usage: gradcheck [--op SUBSTRING] [--device cpu|cuda] [--seed N] [--verbose] [--help]\n"
               "Checks every op's backward against central finite differences in float64 on the CPU.\n");
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

    printf("flashgrad gradcheck: analytic vs central differences (f64, eps 1e-6), f32 forward vs f64\n");
    printf("%-32s %12s %12s %12s", "case", "max abs err", "max rel err", "f32 rel err");
    if (cuda) printf(" %12s %12s", "cuda fwd", "cuda grad");
    printf("  result\n");
    fg_generator *g = fg_generator_new(seed);
    int n_run = 0, n_fail = 0;
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
    fg_generator_free(g);
    if (n_run == 0) {
        fprintf(stderr, "gradcheck: no case matches '%s'\n", filter ? filter : "");
        return 2;
    }
    printf("%d passed, %d failed\n", n_run - n_fail, n_fail);
    return n_fail ? 1 : 0;
}
