/* Embedding lookup and its scatter-add backward on the CPU. */
#include <stdlib.h>
#include "cpu/cpu_nn.h"

void fg_cpu_embedding(fg_tensor *out, const fg_tensor *weight, const fg_tensor *idx)
{
    int64_t D = weight->shape[1];
    size_t es = fg_dtype_size(weight->dtype);
    const char *pw = fg__data(weight);
    char *po = fg__data(out);
    const void *pi = fg__data(idx);
    for (int64_t k = 0; k < idx->numel; k++) {
        int64_t row = fg__ld_index(pi, idx->dtype, k);
        if (weight->stride[1] == 1) { /* rows are contiguous: copy them whole */
            memcpy(po + (size_t)(k * D) * es, pw + (size_t)(row * weight->stride[0]) * es, (size_t)D * es);
            continue;
        }
        for (int64_t j = 0; j < D; j++) {
            double v = fg__ld(pw, weight->dtype, row * weight->stride[0] + j * weight->stride[1]);
            fg__st(po, out->dtype, k * D + j, v);
        }
    }
}

fg_status fg_cpu_embedding_grad(fg_tensor *gw, const fg_tensor *idx, const fg_tensor *gy)
{
    int64_t D = gw->shape[1];
    double *acc = calloc((size_t)(gw->numel ? gw->numel : 1), sizeof *acc);
    if (!acc)
        return fg__err(FG_ERR_OOM, "embedding backward: out of memory for %lld accumulators", (long long)gw->numel);
    const void *pi = fg__data(idx);
    const char *pg = fg__data(gy);
    /* One pass in index order: repeated indices add up in a fixed order. */
    for (int64_t k = 0; k < idx->numel; k++) {
        int64_t row = fg__ld_index(pi, idx->dtype, k);
        for (int64_t j = 0; j < D; j++) acc[row * D + j] += fg__ld(pg, gy->dtype, k * D + j);
    }
    char *po = fg__data(gw);
    for (int64_t i = 0; i < gw->numel; i++) fg__st(po, gw->dtype, i, acc[i]);
    free(acc);
    return FG_OK;
}
