/* Reductions on the CPU: sums accumulate in double (int64 exactly); max keeps the first index. */
#include <stdlib.h>
#include "cpu/cpu.h"

fg_status fg_cpu_sum(fg_tensor *out, const fg_tensor *in, const bool *reduce)
{
    /* Read the input in its own order; the output offset ignores reduced dims. */
    int64_t ost[FG_MAX_DIMS];
    for (int d = 0; d < in->ndim; d++) ost[d] = reduce[d] ? 0 : out->stride[d];
    double *acc = calloc((size_t)(out->numel ? out->numel : 1), sizeof *acc);
    if (!acc) return fg__err(FG_ERR_OOM, "sum: out of memory for %lld accumulators", (long long)out->numel);
    const int64_t *st[2] = {in->stride, ost};
    fg_iter it;
    fg__iter_init(&it, in->ndim, in->shape, 2, st);
    const char *p = fg__data(in);
    char *o = fg__data(out);
    if (in->dtype == FG_I64 && out->dtype == FG_I64) {
        /* Exact (wrapping) int64 sums: doubles lose bits past 2^53. Same size as acc. */
        uint64_t *iacc = (uint64_t *)acc;
        for (int64_t i = 0; i < in->numel; i++, fg__iter_next(&it))
            iacc[it.off[1]] += (uint64_t)((const int64_t *)p)[it.off[0]];
        for (int64_t i = 0; i < out->numel; i++) ((int64_t *)o)[i] = (int64_t)iacc[i];
        free(acc);
        return FG_OK;
    }
    for (int64_t i = 0; i < in->numel; i++, fg__iter_next(&it)) acc[it.off[1]] += fg__ld(p, in->dtype, it.off[0]);
    for (int64_t i = 0; i < out->numel; i++) fg__st(o, out->dtype, i, acc[i]);
    free(acc);
    return FG_OK;
}

void fg_cpu_max(fg_tensor *values, fg_tensor *indices, const fg_tensor *in, int dim)
{
    /* values/indices are contiguous with in's shape minus `dim` (keepdim layout). */
    int64_t outer = 1, inner = 1, n = in->shape[dim];
    for (int d = 0; d < dim; d++) outer *= in->shape[d];
    for (int d = dim + 1; d < in->ndim; d++) inner *= in->shape[d];
    const char *p = fg__data(in);
    char *v = fg__data(values);
    int64_t *ix = indices ? fg__data(indices) : NULL;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            /* Offset of element (o, j, i) via in's strides. */
            int64_t rem = o, base = 0;
            for (int d = dim - 1; d >= 0; d--) {
                base += (rem % in->shape[d]) * in->stride[d];
                rem /= in->shape[d];
            }
            rem = i;
            for (int d = in->ndim - 1; d > dim; d--) {
                base += (rem % in->shape[d]) * in->stride[d];
                rem /= in->shape[d];
            }
            int64_t bi = 0;
            if (in->dtype == FG_I64 && values->dtype == FG_I64 && n > 0) { /* exact: no trip through double */
                const int64_t *q = (const int64_t *)p;
                for (int64_t j = 1; j < n; j++)
                    if (q[base + j * in->stride[dim]] > q[base + bi * in->stride[dim]]) bi = j;
                ((int64_t *)v)[o * inner + i] = q[base + bi * in->stride[dim]];
                if (ix) ix[o * inner + i] = bi;
                continue;
            }
            double best = -INFINITY;
            for (int64_t j = 0; j < n; j++) {
                double x = fg__ld(p, in->dtype, base + j * in->stride[dim]);
                if (isnan(x)) {
                    best = x;
                    bi = j;
                    break;
                }
                if (x > best || j == 0) {
                    best = x;
                    bi = j;
                }
            }
            fg__st(v, values->dtype, o * inner + i, best);
            if (ix) ix[o * inner + i] = bi;
        }
}
