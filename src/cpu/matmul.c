/* Batched matrix product on the CPU: each batch's operands are packed into
 * contiguous float (or double for f64) panels, then an i-p-j loop that the
 * compiler vectorises over j. */
#include <stdlib.h>
#include "cpu/cpu.h"

#define PACK(T)                                                                              \
    static void pack_##T(T *dst, const char *src, fg_dtype dt, int64_t rows, int64_t cols,    \
                         int64_t rs, int64_t cs)                                              \
    {                                                                                         \
        for (int64_t r = 0; r < rows; r++)                                                    \
            for (int64_t c = 0; c < cols; c++) dst[r * cols + c] = (T)fg__ld(src, dt, r * rs + c * cs); \
    }                                                                                         \
    static void gemm_##T(T *__restrict c, const T *__restrict a, const T *__restrict b, int64_t n, \
                         int64_t k, int64_t m)                                                \
    {                                                                                         \
        for (int64_t i = 0; i < n * m; i++) c[i] = 0;                                         \
        for (int64_t i = 0; i < n; i++)                                                       \
            for (int64_t p = 0; p < k; p++) {                                                 \
                T av = a[i * k + p];                                                          \
                const T *brow = b + p * m;                                                    \
                T *crow = c + i * m;                                                          \
                for (int64_t j = 0; j < m; j++) crow[j] += av * brow[j];                      \
            }                                                                                 \
    }
PACK(float)
PACK(double)

fg_status fg_cpu_matmul(fg_tensor *out, const fg_tensor *a, const fg_tensor *b)
{
    int nb = out->ndim - 2;
    int64_t n = out->shape[nb], m = out->shape[nb + 1], k = a->shape[nb + 1];
    int64_t batch = 1;
    for (int d = 0; d < nb; d++) batch *= out->shape[d];
    bool dbl = out->dtype == FG_F64;
    size_t es = dbl ? sizeof(double) : sizeof(float);
    void *pa = malloc((size_t)(n * k + 1) * es), *pb = malloc((size_t)(k * m + 1) * es);
    void *pc = malloc((size_t)(n * m + 1) * es);
    if (!pa || !pb || !pc) {
        free(pa);
        free(pb);
        free(pc);
        return fg__err(FG_ERR_OOM, "matmul: out of memory packing (%lld x %lld) @ (%lld x %lld) panels", (long long)n,
                       (long long)k, (long long)k, (long long)m);
    }
    const int64_t *st[3] = {a->stride, b->stride, out->stride};
    fg_iter it;
    fg__iter_init(&it, nb, out->shape, 3, st);
    const char *da = fg__data(a), *db = fg__data(b);
    char *dc = fg__data(out);
    for (int64_t t = 0; t < batch; t++, fg__iter_next(&it)) {
        const char *ab = da + it.off[0] * (int64_t)fg_dtype_size(a->dtype);
        const char *bb = db + it.off[1] * (int64_t)fg_dtype_size(b->dtype);
        if (dbl) {
            pack_double(pa, ab, a->dtype, n, k, a->stride[nb], a->stride[nb + 1]);
            pack_double(pb, bb, b->dtype, k, m, b->stride[nb], b->stride[nb + 1]);
            gemm_double(pc, pa, pb, n, k, m);
        } else {
            pack_float(pa, ab, a->dtype, n, k, a->stride[nb], a->stride[nb + 1]);
            pack_float(pb, bb, b->dtype, k, m, b->stride[nb], b->stride[nb + 1]);
            gemm_float(pc, pa, pb, n, k, m);
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < m; j++)
                fg__st(dc, out->dtype, it.off[2] + i * out->stride[nb] + j * out->stride[nb + 1],
                       dbl ? ((double *)pc)[i * m + j] : ((float *)pc)[i * m + j]);
    }
    free(pa);
    free(pb);
    free(pc);
    return FG_OK;
}
