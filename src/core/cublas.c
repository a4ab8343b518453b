/* cuBLAS glue: one lazily created handle bound to fg__cuda_stream() with a
 * workspace from the caching allocator, the TF32 switch, status mapping, and
 * the batched GEMM behind fg_matmul / fg_linear on CUDA tensors.
 *
 * Row-major trick: cuBLAS is column-major, and a row-major (r, c) matrix with
 * row stride ld is the column-major (c, r) matrix with leading dimension ld,
 * i.e. its transpose. So C = A @ B (row-major) is computed as the column-major
 * C^T (m, n) = B^T (m, k) @ A^T (k, n): cuBLAS gets B first, then A, with
 * M = m, N = n, K = k, ldc = m. A transposed view (last two strides (1, ld))
 * needs no copy: it is the same buffer read with op T. */
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include "internal.h"
#include <flashgrad/cublas.h>

static atomic_bool g_allow_tf32; /* zero-initialised: off */

fg_status fg_set_allow_tf32(bool allow)
{
    atomic_store(&g_allow_tf32, allow);
    return FG_OK;
}

bool fg_allow_tf32(void) { return atomic_load(&g_allow_tf32); }

#ifdef FG_HAVE_CUDA
#include <pthread.h>
#include <cuda_runtime_api.h>
#include <cublas_v2.h>
/* cublasLt.h declares a function with () : not our warning to fix */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <cublasLt.h>
#pragma GCC diagnostic pop

/* 32 MiB: what cuBLAS recommends for Hopper; plenty for older GPUs. */
#define FG_CUBLAS_WORKSPACE ((size_t)32 << 20)

static struct {
    pthread_mutex_t mu; /* serialises configuration and launches on the one handle */
    cublasHandle_t handle;
    void *workspace;
    bool stream_bound;
    void *stream;
} g_blas = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, false, NULL};
static cublasLtHandle_t g_lt; /* created under g_blas.mu; shares g_blas's workspace (same stream) */

fg_status fg__cublas_check(const char *op, int status, const char *detail)
{
    if (status == (int)CUBLAS_STATUS_SUCCESS) return FG_OK;
    cublasStatus_t s = (cublasStatus_t)status;
    return fg__err(FG_ERR_CUDA, "%s: cuBLAS error %s (%s) in %s", op, cublasGetStatusName(s), cublasGetStatusString(s),
                   detail ? detail : "a cuBLAS call");
}

/* Called with g_blas.mu held. Creates the handle on first use and (re)binds it to
 * the framework's stream; cublasSetStream resets the workspace to cuBLAS's own,
 * so ours is set again after it. */
static fg_status blas_handle(const char *op, cublasHandle_t *out)
{
    fg_status st;
    if (!g_blas.handle) {
        cublasHandle_t h;
        if ((st = fg__cublas_check(op, cublasCreate(&h), "cublasCreate")) != FG_OK) return st;
        /* fp32 accumulation all the way: no split-K reductions in bf16/f16. */
        st = fg__cublas_check(op, cublasSetMathMode(h, CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION),
                              "cublasSetMathMode");
        if (st != FG_OK) {
            cublasDestroy(h);
            return st;
        }
        g_blas.handle = h;
        g_blas.stream_bound = false;
    }
    void *stream = fg__cuda_stream();
    if (!g_blas.stream_bound || stream != g_blas.stream) {
        st = fg__cublas_check(op, cublasSetStream(g_blas.handle, (cudaStream_t)stream), "cublasSetStream");
        if (st != FG_OK) return st;
        if (!g_blas.workspace) {
            /* Held for the life of the process, like the handle. All work runs on
             * one stream, so cuBLAS's use of it is ordered with everything else. */
            void *ws = NULL;
            if ((st = fg__cuda_malloc(&ws, FG_CUBLAS_WORKSPACE)) != FG_OK) return st;
            g_blas.workspace = ws;
        }
        st = fg__cublas_check(op, cublasSetWorkspace(g_blas.handle, g_blas.workspace, FG_CUBLAS_WORKSPACE),
                              "cublasSetWorkspace");
        if (st != FG_OK) return st;
        g_blas.stream = stream;
        g_blas.stream_bound = true;
    }
    *out = g_blas.handle;
    return FG_OK;
}

/* Destroys the handle and returns the workspace (fg_cuda_shutdown). */
void fg__cublas_shutdown(void)
{
    pthread_mutex_lock(&g_blas.mu);
    if (g_blas.handle) cublasDestroy(g_blas.handle);
    if (g_lt) cublasLtDestroy(g_lt);
    g_lt = NULL;
    if (g_blas.workspace) fg__cuda_free(g_blas.workspace, FG_CUBLAS_WORKSPACE);
    g_blas.handle = NULL;
    g_blas.workspace = NULL;
    g_blas.stream_bound = false;
    pthread_mutex_unlock(&g_blas.mu);
}

/* How cuBLAS can read a row-major (r, c) matrix with strides (sr, sc): as is
 * (rows contiguous, *rowmajor, ld = row stride) or as a transposed view (columns
 * contiguous, ld = column stride). Strides of size-1 dims do not matter. False
 * when neither fits (zero or overlapping strides, both strides > 1): then the
 * operand is copied. */
static bool classify(int64_t r, int64_t c, int64_t sr, int64_t sc, bool *rowmajor, int64_t *ld)
{
    int64_t rmin = r > 1 ? r : 1, cmin = c > 1 ? c : 1;
    if ((c <= 1 || sc == 1) && (r <= 1 || sr >= cmin)) {
        *rowmajor = true;
        *ld = r <= 1 ? cmin : sr;
        return true;
    }
    if ((r <= 1 || sr == 1) && (c <= 1 || sc >= rmin)) {
        *rowmajor = false;
        *ld = c <= 1 ? rmin : sc;
        return true;
    }
    return false;
}

/* A contiguous copy of a broadcast operand view in which the broadcast (stride 0)
 * batch dims stay broadcast: the copy has size 1 there and the header written to
 * *hdr reads it with stride 0 again, so a (k, m) weight used by 64 batches is
 * copied once, not 64 times. Returns the owning tensor (fg__unref it). */
static fg_tensor *compact_copy(const char *op, const fg_tensor *v, fg_tensor *hdr)
{
    int nd = v->ndim;
    fg_tensor src = *v;
    src.numel = 1;
    for (int d = 0; d < nd; d++) {
        if (d < nd - 2 && v->stride[d] == 0) src.shape[d] = 1;
        src.numel *= src.shape[d];
    }
    fg_tensor *c = fg__new(op, nd, src.shape, v->dtype, v->device);
    if (!c) return NULL;
    fg_keep(c);
    if (fg__copy_elements(c, &src) != FG_OK) {
        fg__unref(c);
        return NULL;
    }
    *hdr = *c;
    memcpy(hdr->shape, v->shape, sizeof hdr->shape);
    for (int d = 0; d < nd - 2; d++)
        if (src.shape[d] == 1 && v->shape[d] != 1) hdr->stride[d] = 0;
    hdr->numel = v->numel;
    return c;
}

static void describe(char *buf, size_t len, const char *call, const fg_tensor *a, const fg_tensor *b, const char *ct)
{
    char x[128], y[128];
    snprintf(buf, len, "%s: %s %s @ %s, compute %s", call, fg_dtype_name(a->dtype), fg_shape_str(a, x, sizeof x),
             fg_shape_str(b, y, sizeof y), ct);
}

fg_status fg__cuda_matmul(const char *op, fg_tensor *out, const fg_tensor *a0, const fg_tensor *b0, bool accumulate)
{
    const int nd = out->ndim, nb = nd - 2;
    const int64_t n = out->shape[nb], m = out->shape[nb + 1], k = a0->shape[nb + 1];
    fg_dtype dt = out->dtype;
    if (a0->dtype != dt || b0->dtype != dt || a0->device != FG_CUDA || b0->device != FG_CUDA ||
        out->device != FG_CUDA) {
        return fg__err(FG_ERR_DTYPE, "%s: cuBLAS product needs operands and result of one dtype on cuda (got %s @ %s -> %s)",
                       op, fg_dtype_name(a0->dtype), fg_dtype_name(b0->dtype), fg_dtype_name(dt));
    }
    cudaDataType_t ctype;
    cublasComputeType_t compute;
    const char *compute_name;
    switch (dt) {
    case FG_F32:
        ctype = CUDA_R_32F;
        if (fg_allow_tf32()) {
            compute = CUBLAS_COMPUTE_32F_FAST_TF32;
            compute_name = "32F_FAST_TF32";
        } else {
            compute = CUBLAS_COMPUTE_32F;
            compute_name = "32F";
        }
        break;
    case FG_F64: ctype = CUDA_R_64F; compute = CUBLAS_COMPUTE_64F; compute_name = "64F"; break;
    case FG_BF16: ctype = CUDA_R_16BF; compute = CUBLAS_COMPUTE_32F; compute_name = "32F"; break;
    case FG_F16: ctype = CUDA_R_16F; compute = CUBLAS_COMPUTE_32F; compute_name = "32F"; break;
    default:
        return fg__err(FG_ERR_DTYPE, "%s: no cuBLAS product for %s (float dtypes only)", op, fg_dtype_name(dt));
    }
    if (out->numel == 0) return FG_OK;
    if (k == 0) return accumulate ? FG_OK : fg__cuda_fill(fg__data(out), dt, out->numel, 0.0);
    if (!fg_is_contiguous(out)) return fg__err(FG_ERR_INVALID, "%s: cuBLAS result must be contiguous", op);

    /* Operands cuBLAS cannot read in place (e.g. an expanded row with stride 0,
     * or a permuted view with no unit stride) are copied, batch broadcast kept. */
    fg_tensor ah = *a0, bh = *b0, *acopy = NULL, *bcopy = NULL;
    bool a_rm, b_rm;
    int64_t lda, ldb;
    if (!classify(n, k, ah.stride[nb], ah.stride[nb + 1], &a_rm, &lda)) {
        if (!(acopy = compact_copy(op, a0, &ah))) return fg_last_status();
        classify(n, k, ah.stride[nb], ah.stride[nb + 1], &a_rm, &lda);
    }
    if (!classify(k, m, bh.stride[nb], bh.stride[nb + 1], &b_rm, &ldb)) {
        if (!(bcopy = compact_copy(op, b0, &bh))) {
            if (acopy) fg__unref(acopy);
            return fg_last_status();
        }
        classify(k, m, bh.stride[nb], bh.stride[nb + 1], &b_rm, &ldb);
    }

    /* Batch dims: drop size-1 dims, then collapse the innermost run of dims in
     * which both operands advance by one stride each (stride 0 for a broadcast
     * operand) into one strided-batched call. Batch broadcasting that a single
     * stride per operand cannot express, e.g. (5, 1, n, k) @ (1, 3, k, m), is
     * handled by a host loop over the leading (outer) batch dims, one
     * strided-batched call each: no operand is ever expanded in memory. */
    int q = 0;
    int64_t D[FG_MAX_DIMS], sa[FG_MAX_DIMS], sb[FG_MAX_DIMS];
    for (int d = 0; d < nb; d++) {
        if (out->shape[d] == 1) continue;
        D[q] = out->shape[d];
        sa[q] = ah.stride[d];
        sb[q] = bh.stride[d];
        q++;
    }
    int p = q > 0 ? q - 1 : 0; /* first collapsed dim */
    while (p > 0 && sa[p - 1] == sa[p] * D[p] && sb[p - 1] == sb[p] * D[p]) p--;
    /* Strides of the collapsed run are those of its last dim. */
    int64_t inner = 1, Sa = q ? sa[q - 1] : 0, Sb = q ? sb[q - 1] : 0, outer = 1;
    for (int d = p; d < q; d++) inner *= D[d];
    for (int d = 0; d < p; d++) outer *= D[d];
    int64_t rows = n; /* rows of A per call */

    /* One big GEMM instead of a batch when B is shared (stride 0) and A's batches
     * are consecutive row blocks of one row-major matrix (x (B, T, in) @ w). */
    if (p == 0 && inner > 1 && Sb == 0 && a_rm) {
        int64_t rs = n > 1 ? lda : Sa;
        if (Sa == n * rs && rs >= (k > 1 ? k : 1)) {
            rows = n * inner;
            lda = rs;
            inner = 1;
        }
    }

    char detail[400];
    fg_status st = FG_OK;
    if (m > INT_MAX || rows > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX || inner > INT_MAX) {
        describe(detail, sizeof detail, "cublasGemmStridedBatchedEx", a0, b0, compute_name);
        st = fg__err(FG_ERR_UNSUPPORTED, "%s: a size or stride exceeds cuBLAS's 32-bit limit (%s)", op, detail);
        goto done;
    }

    pthread_mutex_lock(&g_blas.mu);
    cublasHandle_t h;
    st = blas_handle(op, &h);
    if (st == FG_OK) {
        const float one_f = 1.0f, zero_f = 0.0f;
        const double one_d = 1.0, zero_d = 0.0;
        const void *alpha = dt == FG_F64 ? (const void *)&one_d : (const void *)&one_f;
        const void *beta = dt == FG_F64 ? (accumulate ? (const void *)&one_d : (const void *)&zero_d)
                                        : (accumulate ? (const void *)&one_f : (const void *)&zero_f);
        size_t es = fg_dtype_size(dt);
        const char *abase = fg__data(&ah), *bbase = fg__data(&bh);
        char *cbase = fg__data(out);
        int64_t idx[FG_MAX_DIMS] = {0};
        for (int64_t o = 0; o < outer && st == FG_OK; o++) {
            int64_t offa = 0, offb = 0;
            for (int d = 0; d < p; d++) {
                offa += idx[d] * sa[d];
                offb += idx[d] * sb[d];
            }
            cublasStatus_t s = cublasGemmStridedBatchedEx(
                h, b_rm ? CUBLAS_OP_N : CUBLAS_OP_T, a_rm ? CUBLAS_OP_N : CUBLAS_OP_T, (int)m, (int)rows, (int)k, alpha,
                bbase + offb * (int64_t)es, ctype, (int)ldb, (long long)Sb, abase + offa * (int64_t)es, ctype,
                (int)lda, (long long)Sa, beta, cbase + o * inner * n * m * (int64_t)es, ctype, (int)m,
                (long long)(n * m), (int)inner, compute, CUBLAS_GEMM_DEFAULT);
            if (s != CUBLAS_STATUS_SUCCESS) {
                describe(detail, sizeof detail, "cublasGemmStridedBatchedEx", a0, b0, compute_name);
                st = fg__cublas_check(op, (int)s, detail);
            }
            for (int d = p - 1; d >= 0; d--) {
                if (++idx[d] < D[d]) break;
                idx[d] = 0;
            }
        }
    }
    pthread_mutex_unlock(&g_blas.mu);
done:
    if (acopy) fg__unref(acopy);
    if (bcopy) fg__unref(bcopy);
    return st;
}


/* ---- cuBLASLt: linear layers with a fused bias / GELU epilogue ----
 * Column-major view as above: out^T (N, rows) = w^T (N, K) @ x^T (K, rows);
 * the bias runs along out^T's rows (N), as cuBLASLt's bias vector does. */

static cudaDataType_t lt_type(fg_dtype dt)
{
    return dt == FG_BF16 ? CUDA_R_16BF : dt == FG_F16 ? CUDA_R_16F : CUDA_R_32F;
}

fg_status fg__cuda_linear_lt(const char *op, fg_tensor *out, const fg_tensor *x, const fg_tensor *w,
                             const fg_tensor *b, bool gelu, fg_tensor *pre)
{
    const int64_t rows = x->shape[0], K = x->shape[1], N = w->shape[1];
    bool w_rowmajor;
    int64_t ldw;
    if ((out->dtype != FG_F32 && out->dtype != FG_BF16 && out->dtype != FG_F16) || rows < 1 || K < 1 || N < 1 ||
        x->stride[1] != 1 || x->stride[0] < K || (b && b->stride[0] != 1) ||
        !classify(K, N, w->stride[0], w->stride[1], &w_rowmajor, &ldw))
        return FG_ERR_UNSUPPORTED;
    cudaDataType_t t = lt_type(out->dtype);
    cublasComputeType_t ct =
        out->dtype == FG_F32 && fg_allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cublasLtEpilogue_t epi = b ? (gelu ? (pre ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS)
                                       : CUBLASLT_EPILOGUE_BIAS)
                               : (gelu ? (pre ? CUBLASLT_EPILOGUE_GELU_AUX : CUBLASLT_EPILOGUE_GELU)
                                       : CUBLASLT_EPILOGUE_DEFAULT);
    cublasOperation_t opa = w_rowmajor ? CUBLAS_OP_N : CUBLAS_OP_T;
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    const void *bias = b ? fg__data(b) : NULL;
    void *aux = pre ? fg__data(pre) : NULL;
    int64_t aux_ld = N;
    uint64_t ws_bytes = FG_CUBLAS_WORKSPACE;
    int found = 0;
    const float alpha = 1.0f, beta = 0.0f;
    char detail[192];
    snprintf(detail, sizeof detail, "cublasLtMatmul (%lld x %lld x %lld, %s%s%s)", (long long)rows, (long long)K,
             (long long)N, fg_dtype_name(out->dtype), b ? ", bias" : "", gelu ? ", gelu" : "");
    pthread_mutex_lock(&g_blas.mu);
    cublasHandle_t h;
    fg_status st = blas_handle(op, &h); /* the stream binding and the workspace */
    if (st == FG_OK && !g_lt) st = fg__cublas_check(op, cublasLtCreate(&g_lt), "cublasLtCreate");
    int s = CUBLAS_STATUS_SUCCESS;
#define LT(call)                                          \
    do {                                                  \
        if (s == CUBLAS_STATUS_SUCCESS) s = (int)(call); \
    } while (0)
    if (st == FG_OK) {
        LT(cublasLtMatmulDescCreate(&desc, ct, CUDA_R_32F));
        LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
        LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        if (bias) LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        if (aux) {
            LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
            LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld));
        }
        /* A = w: stored (N, K) (row-major w) or (K, N) (a transposed view), B = x (K, rows), C = D = out (N, rows). */
        LT(cublasLtMatrixLayoutCreate(&la, t, w_rowmajor ? (uint64_t)N : (uint64_t)K,
                                      w_rowmajor ? (uint64_t)K : (uint64_t)N, ldw));
        LT(cublasLtMatrixLayoutCreate(&lb, t, (uint64_t)K, (uint64_t)rows, x->stride[0]));
        LT(cublasLtMatrixLayoutCreate(&lc, t, (uint64_t)N, (uint64_t)rows, N));
        LT(cublasLtMatmulPreferenceCreate(&pref));
        LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                sizeof ws_bytes));
        LT(cublasLtMatmulAlgoGetHeuristic(g_lt, desc, la, lb, lc, lc, pref, 1, &res, &found));
        if (s == CUBLAS_STATUS_SUCCESS && found > 0)
            s = (int)cublasLtMatmul(g_lt, desc, &alpha, fg__data(w), la, fg__data(x), lb, &beta,
                                    fg__data(out), lc, fg__data(out), lc, &res.algo, g_blas.workspace,
                                    FG_CUBLAS_WORKSPACE, (cudaStream_t)fg__cuda_stream());
    }
#undef LT
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (desc) cublasLtMatmulDescDestroy(desc);
    pthread_mutex_unlock(&g_blas.mu);
    if (st != FG_OK) return st;
    /* No kernel for this case (or a shape the heuristic rejects): the caller falls back. */
    if ((s == CUBLAS_STATUS_SUCCESS && found == 0) || s == CUBLAS_STATUS_NOT_SUPPORTED) return FG_ERR_UNSUPPORTED;
    if (s != CUBLAS_STATUS_SUCCESS) return fg__cublas_check(op, s, detail);
    return fg__cuda_check(op, (int)cudaGetLastError());
}

#else /* !FG_HAVE_CUDA */

void fg__cublas_shutdown(void) {}

fg_status fg__cublas_check(const char *op, int status, const char *detail)
{
    if (status == 0) return FG_OK;
    return fg__err(FG_ERR_DEVICE, "%s: this build of flashgrad has no CUDA backend (cuBLAS status %d in %s)", op, status,
                   detail ? detail : "a cuBLAS call");
}

fg_status fg__cuda_matmul(const char *op, fg_tensor *out, const fg_tensor *a, const fg_tensor *b, bool accumulate)
{
    return fg__err(FG_ERR_DEVICE, "%s: this build of flashgrad has no CUDA backend (configure --with-cuda)", op);
}

fg_status fg__cuda_linear_lt(const char *op, fg_tensor *out, const fg_tensor *x, const fg_tensor *w,
                             const fg_tensor *b, bool gelu, fg_tensor *pre)
{
    (void)out, (void)x, (void)w, (void)b, (void)gelu, (void)pre;
    return fg__err(FG_ERR_DEVICE, "%s: this build of flashgrad has no CUDA backend (configure --with-cuda)", op);
}
#endif
