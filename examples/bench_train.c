/* bench_train: training throughput of a GPT (flashgrad/gpt.h) on the GPU, the
 * counterpart of bench/train_vs_torch.py's PyTorch runs.
 *
 *   examples/bench_train [--preset char|gpt2] [--steps N] [--warmup-steps N] [overrides]
 *
 * One step = zero_grad, forward (bf16 autocast) with the loss, backward,
 * clipping to norm 1, AdamW (the fused multi-tensor kernel): what train_gpt
 * does, without evaluation. The batches are random token ids (drawn on the
 * GPU before timing, a new one each step); throughput does not depend on the
 * data. Each step is timed with CUDA events after --warmup-steps untimed
 * ones; the median, p10 and p90 are printed, and tokens/s = B T / median.
 * A machine-readable line starting with "CSV," follows for the script.
 *
 * Presets (as bench/train_vs_torch.py):
 *   char  nanoGPT shakespeare-char: vocab 65, 6 layers, 6 heads, 384 wide,
 *         block 256, batch 64, dropout 0.2, no biases
 *   gpt2  GPT-2 124M: vocab 50304 (nanoGPT's padded 50257), 12 layers,
 *         12 heads, 768 wide, block 1024, batch 16, dropout 0, no biases
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config.h"
#include <flashgrad.h>

#ifndef FG_HAVE_CUDA
int main(void)
{
    fprintf(stderr, "bench_train: built without CUDA\n");
    return 77;
}
#else
#include <cuda_runtime_api.h>

#define CK(x)                                                                                                  \
    do {                                                                                                       \
        cudaError_t e_ = (x);                                                                                  \
        if (e_ != cudaSuccess) {                                                                               \
            fprintf(stderr, "bench_train: %s: %s\n", #x, cudaGetErrorString(e_));                              \
            exit(1);                                                                                           \
        }                                                                                                      \
    } while (0)

typedef struct {
    const char *preset;
    fg_gpt_config m;
    int64_t batch, steps, warm;
    bool autocast, deterministic;
} opts;

static bool preset(const char *name, opts *o)
{
    if (!strcmp(name, "char")) {
        o->m = (fg_gpt_config){.vocab_size = 65, .block_size = 256, .n_layer = 6, .n_head = 6, .n_embd = 384,
                               .dropout = 0.2};
        o->batch = 64;
    } else if (!strcmp(name, "gpt2")) {
        o->m = (fg_gpt_config){.vocab_size = 50304, .block_size = 1024, .n_layer = 12, .n_head = 12,
                               .n_embd = 768, .dropout = 0.0};
        o->batch = 16;
    } else {
        return false;
    }
    o->preset = name;
    return true;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_train [--preset char|gpt2] [options]\n"
               "GPT training throughput on the GPU: median step time (CUDA events) and tokens/s.\n"
               "  --preset NAME        char (nanoGPT shakespeare-char, default) or gpt2 (GPT-2 124M)\n"
               "  --steps N            timed steps (30)\n"
               "  --warmup-steps N     untimed steps first (10)\n"
               "  --layers N, --heads N, --kv-heads N, --width N, --block N, --vocab N, --batch N,\n"
               "  --dropout P, --bias  override the preset\n"
               "  --no-autocast        f32 matmuls (default bf16 autocast)\n"
               "  --nondeterministic   atomics in the embedding / attention backward (default: deterministic,\n"
               "                       as train_gpt)\n");
}

static bool num(const char *flag, const char *s, int64_t lo, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo) {
        fprintf(stderr, "bench_train: --%s: expected an integer >= %lld, got '%s'\n", flag, (long long)lo, s);
        return false;
    }
    *out = v;
    return true;
}

static int parse(int argc, char **argv, opts *o)
{
    static const struct option lo[] = {
        {"preset", 1, 0, 'p'}, {"steps", 1, 0, 's'}, {"warmup-steps", 1, 0, 'w'}, {"layers", 1, 0, 'L'},
        {"heads", 1, 0, 'H'},  {"kv-heads", 1, 0, 'K'}, {"width", 1, 0, 'C'},      {"block", 1, 0, 'T'},
        {"vocab", 1, 0, 'V'},  {"batch", 1, 0, 'B'},   {"dropout", 1, 0, 'd'},    {"bias", 0, 0, 'b'},
        {"no-autocast", 0, 0, 'a'}, {"nondeterministic", 0, 0, 'n'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    /* the preset first, so that overrides apply to it wherever they stand */
    for (int i = 1; i < argc; i++) {
        const char *p = !strcmp(argv[i], "--preset") && i + 1 < argc ? argv[i + 1]
                        : !strncmp(argv[i], "--preset=", 9)          ? argv[i] + 9
                                                                     : NULL;
        if (p && !preset(p, o)) {
            fprintf(stderr, "bench_train: --preset: expected char or gpt2, got '%s'\n", p);
            return 2;
        }
    }
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        bool ok = true;
        char *end;
        switch (c) {
        case 'p': break;
        case 's': ok = num("steps", optarg, 1, &o->steps); break;
        case 'w': ok = num("warmup-steps", optarg, 0, &o->warm); break;
        case 'L': ok = num("layers", optarg, 1, &o->m.n_layer); break;
        case 'H': ok = num("heads", optarg, 1, &o->m.n_head); break;
        case 'K': ok = num("kv-heads", optarg, 1, &o->m.n_kv_head); break;
        case 'C': ok = num("width", optarg, 1, &o->m.n_embd); break;
        case 'T': ok = num("block", optarg, 1, &o->m.block_size); break;
        case 'V': ok = num("vocab", optarg, 2, &o->m.vocab_size); break;
        case 'B': ok = num("batch", optarg, 1, &o->batch); break;
        case 'd':
            errno = 0;
            o->m.dropout = strtod(optarg, &end);
            ok = !errno && end != optarg && !*end && o->m.dropout >= 0 && o->m.dropout < 1;
            if (!ok) fprintf(stderr, "bench_train: --dropout: expected a number in [0, 1), got '%s'\n", optarg);
            break;
        case 'b': o->m.bias = true; break;
        case 'a': o->autocast = false; break;
        case 'n': o->deterministic = false; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (!ok) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "bench_train: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return -1;
}

static int cmp_f(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int fail(const char *what)
{
    fprintf(stderr, "bench_train: %s: %s\n", what, fg_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    opts o = {.steps = 30, .warm = 10, .autocast = true, .deterministic = true};
    preset("char", &o);
    int rc = parse(argc, argv, &o);
    if (rc >= 0) return rc;
    if (!fg_cuda_available()) {
        fprintf(stderr, "bench_train: no CUDA device\n");
        return 77;
    }
    fg_set_deterministic(o.deterministic);
    const int64_t B = o.batch, T = o.m.block_size, tok = B * T;
    fg_generator *g = fg_generator_new(1337);
    fg_gpt model = {0};
    fg_params *reg = fg_params_new();
    fg_optimizer *opt = NULL;
    fg_tensor *data = NULL; /* (n_batches, B, T + 1) random ids on the GPU */
    float *ms = calloc((size_t)o.steps, sizeof *ms);
    cudaEvent_t ev[2];
    CK(cudaEventCreate(&ev[0]));
    CK(cudaEventCreate(&ev[1]));
    rc = 1;
    if (!g || !reg || !ms) {
        fprintf(stderr, "bench_train: out of memory\n");
        goto done;
    }
    if (fg_gpt_init(&model, &o.m, g, FG_CUDA, FG_F32) != FG_OK) { rc = fail("model"); goto done; }
    if (fg_gpt_params(&model, "", reg) != FG_OK) { rc = fail("params"); goto done; }
    const fg_adamw_opts ao = {.lr = 6e-4, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    if (!(opt = fg_adamw_new(reg, &ao))) { rc = fail("adamw"); goto done; }
    const int64_t nb = o.warm + o.steps < 64 ? o.warm + o.steps : 64;
    if (!(data = fg_randint(g, 0, o.m.vocab_size, FG_SHAPE(nb, B, T + 1), FG_I64, FG_CUDA))) {
        rc = fail("data");
        goto done;
    }
    char desc[256];
    printf("bench_train: %s, %s\n", o.preset, fg_cuda_device_description(desc, sizeof desc));
    printf("  model: vocab %lld, %lld layers, %lld heads (%lld kv), width %lld, block %lld, dropout %g, bias %s: "
           "%.2fM parameters\n",
           (long long)o.m.vocab_size, (long long)o.m.n_layer, (long long)o.m.n_head,
           (long long)(o.m.n_kv_head ? o.m.n_kv_head : o.m.n_head), (long long)o.m.n_embd, (long long)T,
           o.m.dropout, o.m.bias ? "yes" : "no", (double)fg_gpt_num_params(&model, false) / 1e6);
    printf("  step: batch %lld x %lld tokens, %s, AdamW, clip 1.0, %s kernels; %lld warm-up + %lld timed steps\n",
           (long long)B, (long long)T, o.autocast ? "bf16 autocast" : "f32", o.deterministic ? "deterministic"
           : "nondeterministic", (long long)o.warm, (long long)o.steps);
    fflush(stdout);
    fg_cuda_reset_peak();
    double loss0 = NAN, loss1 = NAN;
    for (int64_t it = 0; it < o.warm + o.steps; it++) {
        fg_scope *s = fg_scope_begin();
        CK(cudaEventRecord(ev[0], 0));
        fg_status st = fg_optimizer_zero_grad(opt);
        fg_tensor *row = fg_squeeze(fg_narrow(data, 0, it % nb, 1), 0);                          /* (B, T + 1) */
        fg_tensor *x = fg_contiguous(fg_narrow(row, 1, 0, T)), *y = fg_contiguous(fg_narrow(row, 1, 1, T)); /* (B, T) */
        fg_tensor *loss = NULL;
        if (st == FG_OK && o.autocast) st = fg_autocast_begin(FG_BF16);
        if (st == FG_OK) {
            fg_gpt_forward(&model, x, y, true, g, &loss);
            if (o.autocast) fg_autocast_end();
            st = loss ? fg_backward(loss) : fg_last_status();
        }
        double norm;
        if (st == FG_OK) st = fg_clip_grad_norm(reg, 1.0, &norm);
        if (st == FG_OK) st = fg_optimizer_step(opt);
        CK(cudaEventRecord(ev[1], 0));
        CK(cudaEventSynchronize(ev[1]));
        if (st == FG_OK && it == 0) loss0 = fg_item(loss);
        if (st == FG_OK && it == o.warm + o.steps - 1) loss1 = fg_item(loss);
        fg_scope_end(s);
        if (st != FG_OK) { rc = fail("step"); goto done; }
        if (it >= o.warm) CK(cudaEventElapsedTime(&ms[it - o.warm], ev[0], ev[1]));
    }
    fg_cuda_memory_stats mem;
    fg_cuda_get_memory_stats(&mem);
    qsort(ms, (size_t)o.steps, sizeof *ms, cmp_f);
    const double med = ms[o.steps / 2], p10 = ms[o.steps / 10], p90 = ms[(o.steps * 9) / 10];
    printf("  loss %.3f at the first step, %.3f at the last (random tokens: ln(vocab) = %.3f)\n", loss0, loss1,
           log((double)o.m.vocab_size));
    printf("  step time: median %.2f ms (p10 %.2f, p90 %.2f); %.0f tokens/s; peak GPU memory %.0f MiB\n", med,
           p10, p90, (double)tok / med * 1e3, (double)mem.peak_bytes / (1 << 20));
    printf("CSV,flashgrad,%s,%lld,%lld,%.4f,%.4f,%.4f,%.1f,%.1f\n", o.preset, (long long)B, (long long)T, med, p10,
           p90, (double)tok / med * 1e3, (double)mem.peak_bytes / (1 << 20));
    rc = isfinite(loss1) ? 0 : 1;
    if (rc) fprintf(stderr, "bench_train: the loss is not finite\n");
done:
    fg_optimizer_free(opt);
    fg_params_free(reg);
    fg_gpt_free(&model);
    fg_free(data);
    fg_generator_free(g);
    free(ms);
    cudaEventDestroy(ev[0]);
    cudaEventDestroy(ev[1]);
    return rc;
}
#endif
