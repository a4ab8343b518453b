/* bench_attention: flash vs math attention on the GPU, by sequence length.
 *
 *   examples/bench_attention            the grid (see below), 30 timed runs
 *   examples/bench_attention --quick    fewer lengths, 20 timed runs
 *   examples/bench_attention --math-max L   run the math backend up to length L (default 4096)
 *
 * Cases (bf16 unless named; B L = 16k tokens and H D = 2048 as in the
 * FlashAttention papers): D64 and D128, L = 512 ... 16384, causal and not;
 * GQA 32 query / 8 KV heads D128; dropout 0.1 D128; f32 D64. For each: the
 * median time of the forward and of the backward (CUDA events around each,
 * after 3 warm-up steps, random inputs), TFLOP/s with fwd = 4 B H Lq Lk D
 * (halved when causal) and bwd = 2.5 fwd, the math backend's times and the
 * speed-up, and the extra device memory of one fwd+bwd over the inputs (peak
 * of the caching allocator). Then the flash backend's extra memory at L = 16k
 * and 64k (linear in L: no L x L buffer). Lines starting "CSV," repeat the
 * numbers for bench/attention_vs_torch.py.
 *   examples/bench_attention --case B,H,L,D,causal,dropout [--dtype T] [--deterministic]
 * times one case instead (e.g. a training step's 64,6,256,64,1,0.2), in bf16
 * unless --dtype names f16 or f32.
 * Exits 2 without a usable GPU, 1 on an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "config.h"
#include <flashgrad.h>
#include <flashgrad/attention.h>
#include <flashgrad/cuda.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_attention [--quick] [--reps N] [--math-max L] [--case B,H,L,D,CAUSAL,P]\n"
               "                       [--dtype bf16|f16|f32] [--deterministic] [--help]\n"
               "  Times flashgrad's flash and math attention backends (forward, backward) on the GPU.\n"
               "  --quick       lengths 1024..4096 only, 20 timed runs\n"
               "  --reps N      timed runs per measurement (default 30, at least 20)\n"
               "  --math-max L  longest sequence for the math backend (default 4096; it stores L x L)\n"
               "  --case B,H,L,D,CAUSAL,P   only this case (CAUSAL 0/1, dropout P)\n"
               "  --dtype T                 the --case's dtype: bf16 (default), f16 or f32\n"
               "  --deterministic           the backward without atomics (dq in its own pass)\n"
               "  Exit status: 0 done, 1 error, 2 no usable GPU / built without CUDA.\n");
}

#ifndef FG_HAVE_CUDA
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
    fprintf(stderr, "bench_attention: this build of flashgrad has no CUDA backend; nothing to benchmark\n");
    return 2;
}
#else
#include <cuda_runtime_api.h>

static int g_reps = 30;
static bool g_det = false;
static const int WARM = 3;

#define CK(call)                                                                                                 \
    do {                                                                                                         \
        cudaError_t e_ = (call);                                                                                 \
        if (e_ != cudaSuccess) {                                                                                 \
            fprintf(stderr, "bench_attention: %s failed: %s (%s:%d)\n", #call, cudaGetErrorString(e_), __FILE__, \
                    __LINE__);                                                                                   \
            exit(1);                                                                                             \
        }                                                                                                        \
    } while (0)

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

typedef struct {
    const char *name;
    fg_dtype dt;
    int64_t B, Hq, Hkv, L, D;
    bool causal;
    double dropout;
} bcase;

typedef struct {
    double fwd_ms, bwd_ms, extra_mib;
    bool ok;
} result;

/* Median forward and backward times of one backend; NULL-safe on errors. */
static result run(const bcase *c, fg_attn_backend be, fg_generator *gen)
{
    result r = {0, 0, 0, false};
    fg_scope *outer = fg_scope_begin();
    fg_tensor *q = fg_randn(gen, FG_SHAPE(c->B, c->Hq, c->L, c->D), c->dt, FG_CUDA);
    fg_tensor *k = fg_randn(gen, FG_SHAPE(c->B, c->Hkv, c->L, c->D), c->dt, FG_CUDA);
    fg_tensor *v = fg_randn(gen, FG_SHAPE(c->B, c->Hkv, c->L, c->D), c->dt, FG_CUDA);
    fg_tensor *go = fg_randn(gen, FG_SHAPE(c->B, c->Hq, c->L, c->D), c->dt, FG_CUDA);
    if (!q || !k || !v || !go) {
        fprintf(stderr, "bench_attention: inputs for %s L=%lld: %s\n", c->name, (long long)c->L, fg_last_error());
        fg_scope_end(outer);
        return r;
    }
    fg_attention_opts o = {
        .causal = c->causal, .dropout_p = c->dropout, .backend = be, .generator = gen, .deterministic = g_det};
    cudaEvent_t ev[3];
    for (int i = 0; i < 3; i++) CK(cudaEventCreate(&ev[i]));
    double *tf = malloc(sizeof(double) * (size_t)g_reps), *tb = malloc(sizeof(double) * (size_t)g_reps);
    fg_cuda_memory_stats m0, m1;
    bool ok = fg_cuda_synchronize() == FG_OK;
    fg_cuda_reset_peak();
    fg_cuda_get_memory_stats(&m0);
    for (int it = 0; ok && it < WARM + g_reps; it++) {
        fg_scope *sc = fg_scope_begin();
        fg_tensor *in[3] = {fg_detach(q), fg_detach(k), fg_detach(v)}; /* fresh leaves: no grad accumulation */
        for (int i = 0; i < 3; i++) fg_set_requires_grad(in[i], true);
        CK(cudaEventRecord(ev[0], 0));
        fg_tensor *y = fg_attention(in[0], in[1], in[2], &o);
        CK(cudaEventRecord(ev[1], 0));
        ok = y && fg_backward_with_grad(y, go) == FG_OK;
        CK(cudaEventRecord(ev[2], 0));
        CK(cudaEventSynchronize(ev[2]));
        if (ok && it >= WARM) {
            float a, b;
            CK(cudaEventElapsedTime(&a, ev[0], ev[1]));
            CK(cudaEventElapsedTime(&b, ev[1], ev[2]));
            tf[it - WARM] = a;
            tb[it - WARM] = b;
        }
        fg_scope_end(sc);
    }
    fg_cuda_get_memory_stats(&m1);
    if (ok) {
        r.fwd_ms = median(tf, g_reps);
        r.bwd_ms = median(tb, g_reps);
        r.extra_mib = (double)(m1.peak_bytes - m0.in_use_bytes) / (1 << 20);
        r.ok = true;
    } else {
        fprintf(stderr, "bench_attention: %s L=%lld backend %d failed: %s\n", c->name, (long long)c->L, (int)be,
                fg_last_error());
        fg_clear_error();
    }
    free(tf);
    free(tb);
    for (int i = 0; i < 3; i++) CK(cudaEventDestroy(ev[i]));
    fg_scope_end(outer);
    fg_cuda_empty_cache();
    return r;
}

static double fwd_flops(const bcase *c)
{
    return 4.0 * (double)c->B * (double)c->Hq * (double)c->L * (double)c->L * (double)c->D * (c->causal ? 0.5 : 1.0);
}

static void bench_case(const bcase *c, int64_t math_max, fg_generator *gen)
{
    result f = run(c, FG_ATTN_FLASH, gen);
    result m = {0, 0, 0, false};
    if (c->L <= math_max) m = run(c, FG_ATTN_MATH, gen);
    const double F = fwd_flops(c);
    if (!f.ok) return;
    char mf[32] = "-", mb[32] = "-", sp[32] = "-", mm[32] = "-";
    if (m.ok) {
        snprintf(mf, sizeof mf, "%.3f", m.fwd_ms);
        snprintf(mb, sizeof mb, "%.3f", m.bwd_ms);
        snprintf(sp, sizeof sp, "%.1fx", (m.fwd_ms + m.bwd_ms) / (f.fwd_ms + f.bwd_ms));
        snprintf(mm, sizeof mm, "%.0f", m.extra_mib);
    }
    printf("%-14s %6lld %3lld %3lld/%-3lld %4lld %-6s | %8.3f %6.1f %8.3f %6.1f %8.0f | %8s %8s %9s %6s\n", c->name,
           (long long)c->L, (long long)c->B, (long long)c->Hq, (long long)c->Hkv, (long long)c->D,
           c->causal ? "causal" : "full", f.fwd_ms, F / f.fwd_ms * 1e-9, f.bwd_ms, 2.5 * F / f.bwd_ms * 1e-9,
           f.extra_mib, mf, mb, mm, sp);
    printf("CSV,%s,%s,%lld,%lld,%lld,%lld,%lld,%d,%g,%.5f,%.5f,%.1f\n", c->name, fg_dtype_name(c->dt), (long long)c->B,
           (long long)c->Hq, (long long)c->Hkv, (long long)c->L, (long long)c->D, c->causal, c->dropout, f.fwd_ms,
           f.bwd_ms, f.extra_mib);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    bool quick = false, one = false;
    int64_t math_max = 4096;
    bcase only = {"case", FG_BF16, 0, 0, 0, 0, 0, false, 0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--quick")) {
            quick = true;
            g_reps = 20;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            g_reps = atoi(argv[++i]);
            if (g_reps < 20) g_reps = 20;
        } else if (!strcmp(argv[i], "--math-max") && i + 1 < argc) {
            math_max = atoll(argv[++i]);
        } else if (!strcmp(argv[i], "--deterministic")) {
            g_det = true;
        } else if (!strcmp(argv[i], "--case") && i + 1 < argc) {
            long long b, h, l, d;
            int causal;
            double p;
            if (sscanf(argv[++i], "%lld,%lld,%lld,%lld,%d,%lf", &b, &h, &l, &d, &causal, &p) != 6 || b < 1 || h < 1 ||
                l < 1 || d < 1 || p < 0 || p >= 1) {
                fprintf(stderr, "bench_attention: --case: expected B,H,L,D,CAUSAL,P, got '%s'\n", argv[i]);
                return 1;
            }
            only = (bcase){"case", only.dt, b, h, h, l, d, causal != 0, p};
            one = true;
        } else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            static const fg_dtype dts[] = {FG_BF16, FG_F16, FG_F32};
            const char *n = argv[++i];
            size_t k = 0;
            while (k < 3 && strcmp(n, fg_dtype_name(dts[k]))) k++;
            if (k == 3) {
                fprintf(stderr, "bench_attention: --dtype: expected bf16, f16 or f32, got '%s'\n", n);
                return 1;
            }
            only.dt = dts[k];
        } else {
            fprintf(stderr, "bench_attention: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 1;
        }
    }
    char desc[256];
    if (!fg_cuda_available()) {
        fprintf(stderr, "bench_attention: no usable GPU (%s)\n", fg_cuda_device_description(desc, sizeof desc));
        return 2;
    }
    fg_generator *gen = fg_generator_new(1234);
    printf("bench_attention on %s: median of %d runs after %d warm-up, CUDA events; TFLOP/s: fwd 4BHL^2D "
           "(causal /2), bwd 2.5x fwd\n",
           fg_cuda_device_description(desc, sizeof desc), g_reps, WARM);
    printf("%-14s %6s %3s %7s %4s %-6s | %8s %6s %8s %6s %8s | %8s %8s %9s %6s\n", "case", "L", "B", "Hq/Hkv", "D", "mask",
           "fwd ms", "TF/s", "bwd ms", "TF/s", "xtra MiB", "math fwd", "math bwd", "math MiB", "speed");
    if (one) {
        bench_case(&only, math_max, gen);
        fg_generator_free(gen);
        return 0;
    }
    static const int64_t Ls[] = {512, 1024, 2048, 4096, 8192, 16384};
    for (int d = 0; d < 2; d++)
        for (int causal = 0; causal < 2; causal++)
            for (size_t i = 0; i < sizeof Ls / sizeof *Ls; i++) {
                const int64_t L = Ls[i], D = d ? 128 : 64;
                if (quick && (L < 1024 || L > 4096)) continue;
                bcase c = {d ? "bf16-d128" : "bf16-d64", FG_BF16, 16384 / L, 2048 / D, 2048 / D, L, D, causal, 0};
                bench_case(&c, math_max, gen);
            }
    const bcase extra[] = {
        {"gqa32/8-d128", FG_BF16, 4, 32, 8, 4096, 128, true, 0},
        {"dropout-d128", FG_BF16, 4, 16, 16, 4096, 128, false, 0.1},
        {"f32-d64", FG_F32, 8, 32, 32, 2048, 64, false, 0},
    };
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) bench_case(&extra[i], math_max, gen);
    /* memory: flash fwd+bwd extra over the inputs at 16k and 64k */
    if (!quick) {
        const int64_t Lm[] = {16384, 65536};
        for (int i = 0; i < 2; i++) {
            bcase c = {"mem-d128", FG_BF16, 1, 16, 16, Lm[i], 128, true, 0};
            int saved = g_reps;
            g_reps = 20;
            bench_case(&c, 0, gen);
            g_reps = saved;
        }
    }
    fg_generator_free(gen);
    return 0;
}
#endif
