/* bench_ops: device benchmark of flashgrad's CUDA ops.
 *
 *   examples/bench_ops           full run (64M-element tensors, 50 timed runs each)
 *   examples/bench_ops --quick   16M-element tensors, 20 timed runs each
 *
 * Every number is the median of >= 20 runs timed with CUDA events around one
 * call each, after 3 warm-up calls, on random inputs:
 *   1. device-to-device copy bandwidth (cudaMemcpyAsync of the f32 tensor's
 *      bytes, counting bytes read + written): the roofline for (2);
 *   2. add, mul, gelu, softmax, layernorm in f32 and bf16: GB/s from the fewest
 *      bytes the op must move (each input read once, the output written once),
 *      and that as % of the copy bandwidth;
 *   3. matmul TFLOP/s (2 M N K / time) for f32 with TF32 off and on, and bf16,
 *      at 4096^3 and the transformer MLP shape 16384 x 768 x 3072, through
 *      fg_matmul (allocation + dispatch included) and through cublasGemmEx
 *      called directly on the same operands in the same run, with the ratio and
 *      the relative L2 difference of the two results.
 * Ops whose CUDA kernel is not in this build print "unavailable: <message>".
 * Exits 2 without a usable GPU (or in a build without CUDA), 1 on a CUDA error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "config.h"
#include <flashgrad.h>
#include <flashgrad/cublas.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_ops [--quick] [--help]\n"
               "  Benchmarks flashgrad's CUDA ops on the current GPU: copy bandwidth (roofline),\n"
               "  elementwise/softmax/layernorm GB/s, matmul TFLOP/s vs cuBLAS called directly.\n"
               "  --quick  16M-element tensors and 20 timed runs (default: 64M elements, 50 runs)\n"
               "  Exit status: 0 done, 1 CUDA error, 2 no usable GPU / built without CUDA.\n");
}

#ifndef FG_HAVE_CUDA
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
    fprintf(stderr, "bench_ops: this build of flashgrad has no CUDA backend (configure --with-cuda); nothing to benchmark\n");
    return 2;
}
#else
#include <cuda_runtime_api.h>
#include <cublas_v2.h>

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "bench_ops: %s failed: %s (%s:%d)\n", #call, cudaGetErrorString(e_),   \
                    __FILE__, __LINE__);                                                           \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static int g_warm = 3, g_reps = 50;

typedef int (*run_fn)(void *ctx); /* 0 on success; a nonzero return leaves a message in *msg */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median milliseconds of one call of f, or -1 when a call fails. */
static double time_ms(run_fn f, void *ctx)
{
    for (int i = 0; i < g_warm; i++)
        if (f(ctx)) return -1;
    CK(cudaDeviceSynchronize());
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    double *t = malloc((size_t)g_reps * sizeof *t);
    int rc = 0;
    for (int i = 0; i < g_reps && !rc; i++) {
        CK(cudaEventRecord(e0, 0));
        rc = f(ctx);
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        t[i] = ms;
    }
    CK(cudaGetLastError());
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    double med = -1;
    if (!rc) {
        qsort(t, (size_t)g_reps, sizeof *t, cmp_double);
        med = g_reps % 2 ? t[g_reps / 2] : 0.5 * (t[g_reps / 2 - 1] + t[g_reps / 2]);
    }
    free(t);
    return med;
}

/* ---- 1. copy roofline ---- */
typedef struct {
    void *dst, *src;
    size_t bytes;
} copy_ctx;

static int run_copy(void *p)
{
    copy_ctx *c = p;
    return cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice, 0) != cudaSuccess;
}

/* ---- 2. memory-bound ops ---- */
typedef enum { OP_ADD, OP_MUL, OP_GELU, OP_SOFTMAX, OP_LAYERNORM } op_kind;
static const char *op_names[] = {"add", "mul", "gelu (tanh)", "softmax (last dim)", "layernorm (+w,b)"};

typedef struct {
    op_kind op;
    fg_tensor *x, *y, *w, *b;
} op_ctx;

static int run_op(void *p)
{
    op_ctx *c = p;
    fg_tensor *r = NULL;
    switch (c->op) {
    case OP_ADD: r = fg_add(c->x, c->y); break;
    case OP_MUL: r = fg_mul(c->x, c->y); break;
    case OP_GELU: r = fg_gelu(c->x, true); break;
    case OP_SOFTMAX: r = fg_softmax(c->x, -1); break;
    case OP_LAYERNORM: r = fg_layernorm(c->x, c->w, c->b, 1e-5); break;
    }
    if (!r) return 1;
    fg_free(r); /* back to the caching allocator: the next call reuses the block */
    return 0;
}

/* ---- 3. matmul ---- */
typedef struct {
    fg_tensor *a, *b; /* (M, K), (K, N) row-major, for fg_matmul */
    int64_t M, K, N;
    fg_tensor *keep;  /* fg_matmul's last result (for the comparison) */
    /* direct cuBLAS on private copies of the same operands */
    cublasHandle_t h;
    void *da, *db, *dc;
    cudaDataType_t type;
    cublasComputeType_t compute;
    cublasStatus_t st;
} mm_ctx;

static int run_fg_matmul(void *p)
{
    mm_ctx *c = p;
    if (c->keep) fg_free(c->keep);
    c->keep = fg_matmul(c->a, c->b);
    return c->keep == NULL;
}

static int run_cublas(void *p)
{
    mm_ctx *c = p;
    const float one = 1.0f, zero = 0.0f;
    /* row-major C (M, N) = A (M, K) B (K, N), as column-major C^T = B^T A^T */
    c->st = cublasGemmEx(c->h, CUBLAS_OP_N, CUBLAS_OP_N, (int)c->N, (int)c->M, (int)c->K, &one, c->db, c->type,
                         (int)c->N, c->da, c->type, (int)c->K, &zero, c->dc, c->type, (int)c->N, c->compute,
                         CUBLAS_GEMM_DEFAULT);
    return c->st != CUBLAS_STATUS_SUCCESS;
}

/* A private device copy of a device tensor's (contiguous) elements. */
static void *device_copy(const fg_tensor *t)
{
    size_t bytes = (size_t)fg_numel(t) * fg_dtype_size(fg_dtype_of(t));
    void *host = malloc(bytes), *dev = NULL;
    if (!host || fg_copy_to_host(t, host, bytes) != FG_OK) {
        fprintf(stderr, "bench_ops: reading operands back: %s\n", fg_last_error());
        exit(1);
    }
    CK(cudaMalloc(&dev, bytes));
    CK(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    free(host);
    return dev;
}

static double elem(const void *p, fg_dtype dt, size_t i)
{
    return dt == FG_BF16 ? fg_bf16_to_float(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* ||fg - cublas|| / ||cublas|| over the whole result; NAN when either has a non-finite value. */
static double rel_l2(const fg_tensor *r, const void *dc, fg_dtype dt, size_t n)
{
    size_t es = fg_dtype_size(dt);
    void *x = malloc(n * es), *y = malloc(n * es);
    if (!x || !y || fg_copy_to_host(r, x, n * es) != FG_OK) {
        free(x);
        free(y);
        return NAN;
    }
    CK(cudaMemcpy(y, dc, n * es, cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    bool finite = true;
    for (size_t i = 0; i < n; i++) {
        double u = elem(x, dt, i), v = elem(y, dt, i);
        finite &= isfinite(u) && isfinite(v);
        num += (u - v) * (u - v);
        den += v * v;
    }
    free(x);
    free(y);
    return finite ? sqrt(num / (den > 0 ? den : 1)) : NAN;
}

static fg_tensor *dev_randn(fg_generator *g, int64_t rows, int64_t cols, fg_dtype dt)
{
    fg_tensor *h = fg_randn(g, FG_SHAPE(rows, cols), FG_F32, FG_CPU);
    fg_tensor *d = h ? fg_to(h, FG_CUDA, dt) : NULL;
    fg_free(h);
    if (!d) {
        fprintf(stderr, "bench_ops: making a (%lld, %lld) %s input: %s\n", (long long)rows, (long long)cols,
                fg_dtype_name(dt), fg_last_error());
        exit(1);
    }
    return d;
}

typedef struct {
    fg_tensor *x, *w, *b;
    int mode; /* LIN_* */
} lin_ctx;
enum { LIN_FUSED, LIN_SPLIT, LIN_GELU_FUSED, LIN_GELU_SPLIT, LIN_MODES };
static const char *lin_names[] = {"fg_linear", "fg_matmul + fg_add", "fg_linear_gelu", "fg_linear + fg_gelu"};

static int run_linear(void *p)
{
    lin_ctx *c = p;
    fg_tensor *r = NULL, *m;
    switch (c->mode) {
    case LIN_FUSED: r = fg_linear(c->x, c->w, c->b); break;
    case LIN_SPLIT:
        m = fg_matmul(c->x, c->w);
        r = m ? fg_add(m, c->b) : NULL;
        fg_free(m);
        break;
    case LIN_GELU_FUSED: r = fg_linear_gelu(c->x, c->w, c->b); break;
    default:
        m = fg_linear(c->x, c->w, c->b);
        r = m ? fg_gelu(m, true) : NULL;
        fg_free(m);
        break;
    }
    if (!r) return 1;
    fg_free(r);
    return 0;
}

static void bench_matmul(fg_generator *g, cublasHandle_t h, int64_t M, int64_t K, int64_t N, fg_dtype dt, bool tf32)
{
    char label[64], mode[32];
    snprintf(label, sizeof label, "%lldx%lldx%lld", (long long)M, (long long)K, (long long)N);
    snprintf(mode, sizeof mode, "%s", dt == FG_BF16 ? "bf16, fp32 acc" : tf32 ? "f32, TF32 on" : "f32, TF32 off");
    fg_scope *s = fg_scope_begin();
    mm_ctx c = {.M = M, .K = K, .N = N, .h = h};
    c.a = dev_randn(g, M, K, dt);
    c.b = dev_randn(g, K, N, dt);
    c.da = device_copy(c.a);
    c.db = device_copy(c.b);
    CK(cudaMalloc(&c.dc, (size_t)(M * N) * fg_dtype_size(dt)));
    c.type = dt == FG_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    c.compute = dt == FG_F32 && tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    fg_set_allow_tf32(tf32);
    double flop = 2.0 * (double)M * (double)N * (double)K;
    double t_fg = time_ms(run_fg_matmul, &c);
    char fg_err[256] = "";
    if (t_fg < 0) snprintf(fg_err, sizeof fg_err, "%s", fg_last_error());
    double t_cb = time_ms(run_cublas, &c);
    fg_set_allow_tf32(false);
    if (t_cb < 0) {
        printf("%-18s %-15s cublasGemmEx failed: %s\n", label, mode, cublasGetStatusName(c.st));
    } else if (t_fg < 0) {
        printf("%-18s %-15s fg_matmul unavailable: %s | cublasGemmEx %8.3f ms %7.1f TFLOP/s\n", label, mode, fg_err,
               t_cb, flop / t_cb * 1e-9);
    } else {
        double d = rel_l2(c.keep, c.dc, dt, (size_t)(M * N));
        printf("%-18s %-15s %8.3f %9.1f   %8.3f %9.1f   %6.3f   %.1e\n", label, mode, t_fg, flop / t_fg * 1e-9, t_cb,
               flop / t_cb * 1e-9, t_cb / t_fg, d);
    }
    fflush(stdout);
    cudaFree(c.da);
    cudaFree(c.db);
    cudaFree(c.dc);
    fg_clear_error();
    fg_scope_end(s);
}

int main(int argc, char **argv)
{
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--quick")) {
            quick = true;
        } else {
            fprintf(stderr, "bench_ops: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    char desc[256];
    if (!fg_cuda_available()) {
        fprintf(stderr, "bench_ops: no usable CUDA device (%s); nothing to benchmark\n",
                fg_cuda_device_description(desc, sizeof desc));
        return 2;
    }
    g_reps = quick ? 20 : 50;
    const int64_t n = quick ? (int64_t)16 << 20 : (int64_t)64 << 20, cols = 4096;
    printf("bench_ops on %s%s: median of %d runs after %d warm-up, CUDA events\n",
           fg_cuda_device_description(desc, sizeof desc), quick ? " (--quick)" : "", g_reps, g_warm);

    /* 1. roofline */
    copy_ctx cc = {.bytes = (size_t)n * 4};
    CK(cudaMalloc(&cc.src, cc.bytes));
    CK(cudaMalloc(&cc.dst, cc.bytes));
    CK(cudaMemset(cc.src, 0x3c, cc.bytes));
    double t_copy = time_ms(run_copy, &cc);
    double bw_copy = 2.0 * (double)cc.bytes / t_copy * 1e-6; /* GB/s, read + write */
    CK(cudaFree(cc.src));
    CK(cudaFree(cc.dst));
    printf("\n== memory-bound ops: %lld elements as (%lld, %lld); GB/s = (inputs read + output written) / time\n",
           (long long)n, (long long)(n / cols), (long long)cols);
    printf("%-20s %-5s %9s %9s %7s\n", "op", "dtype", "ms", "GB/s", "%copy");
    printf("%-20s %-5s %9.3f %9.1f %7.1f\n", "copy d2d (roofline)", "f32", t_copy, bw_copy, 100.0);
    fflush(stdout);

    /* 2. memory-bound ops */
    fg_generator *g = fg_generator_new(1234);
    const fg_dtype dts[2] = {FG_F32, FG_BF16};
    for (int di = 0; di < 2; di++) {
        fg_scope *s = fg_scope_begin();
        fg_dtype dt = dts[di];
        op_ctx c = {0};
        c.x = dev_randn(g, n / cols, cols, dt);
        c.y = dev_randn(g, n / cols, cols, dt);
        c.w = fg_to(fg_uniform(g, 0.5, 1.5, FG_SHAPE(cols), FG_F32, FG_CPU), FG_CUDA, dt);
        c.b = fg_to(fg_uniform(g, -0.5, 0.5, FG_SHAPE(cols), FG_F32, FG_CPU), FG_CUDA, dt);
        for (int op = OP_ADD; op <= OP_LAYERNORM; op++) {
            c.op = (op_kind)op;
            int n_in = op == OP_ADD || op == OP_MUL ? 2 : 1;
            double bytes = (double)(n_in + 1) * (double)n * (double)fg_dtype_size(dt);
            fg_clear_error();
            double t = time_ms(run_op, &c);
            if (t < 0)
                printf("%-20s %-5s unavailable: %s\n", op_names[op], fg_dtype_name(dt), fg_last_error());
            else
                printf("%-20s %-5s %9.3f %9.1f %7.1f\n", op_names[op], fg_dtype_name(dt), t, bytes / t * 1e-6,
                       100.0 * (bytes / t * 1e-6) / bw_copy);
            fflush(stdout);
        }
        fg_scope_end(s);
    }

    /* 3. matmul */
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "bench_ops: cublasCreate failed\n");
        return 1;
    }
    /* the library's settings: fp32 accumulation, no reduced-precision split-K reductions */
    cublasSetMathMode(h, (cublasMath_t)(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION));
    printf("\n== matmul (M x K x N): fg_matmul (incl. allocation + dispatch) vs cublasGemmEx on the same operands\n");
    printf("%-18s %-15s %8s %9s   %8s %9s   %6s   %s\n", "shape", "dtype", "fg ms", "TFLOP/s", "cuBLAS", "TFLOP/s",
           "ratio", "rel L2 fg vs cuBLAS");
    const int64_t shapes[2][3] = {{4096, 4096, 4096}, {16384, 768, 3072}};
    for (int si = 0; si < 2; si++) {
        const int64_t *sh = shapes[si];
        bench_matmul(g, h, sh[0], sh[1], sh[2], FG_F32, false);
        bench_matmul(g, h, sh[0], sh[1], sh[2], FG_F32, true);
        bench_matmul(g, h, sh[0], sh[1], sh[2], FG_BF16, false);
    }
    cublasDestroy(h);

    /* fused epilogues (cuBLASLt): fg_linear vs fg_matmul + fg_add, fg_linear_gelu vs fg_linear + fg_gelu */
    {
        fg_scope *s = fg_scope_begin();
        lin_ctx lc = {.x = dev_randn(g, 16384, 768, FG_BF16), .w = dev_randn(g, 768, 3072, FG_BF16),
                      .b = dev_randn(g, 1, 3072, FG_BF16)};
        lc.b = fg_reshape(lc.b, FG_SHAPE(3072));
        double flop = 2.0 * 16384 * 768 * 3072;
        printf("\n== linear 16384x768x3072 bf16, bias (3072); forward, no autograd\n");
        for (int mode = 0; mode < LIN_MODES; mode++) {
            lc.mode = mode;
            fg_clear_error();
            double t = time_ms(run_linear, &lc);
            if (t < 0)
                printf("%-24s unavailable: %s\n", lin_names[mode], fg_last_error());
            else
                printf("%-24s %8.3f ms %7.1f TFLOP/s\n", lin_names[mode], t, flop / t * 1e-9);
        }
        fg_scope_end(s);
    }
    fg_generator_free(g);
    printf("\nratio = cuBLAS time / fg_matmul time (1.0: no overhead)\n");
    return 0;
}
#endif
