/* Index kernels on the CPU: gather/scatter walk the index tensor with fg_iter,
 * reading the other operands through strides whose `dim` entry is zeroed and
 * adding index * stride[dim] by hand. */
#include <stdlib.h>
#include "cpu/cpu_index.h"

/* Value j of a 0-d or 1-d index tensor. */
static inline int64_t index_at(const fg_tensor *index, int64_t j)
{
    int64_t off = index->ndim == 0 ? 0 : j * index->stride[0];
    return fg__ld_index(fg__data(index), index->dtype, off);
}

/* t's strides with the `dim` entry zeroed (the index supplies that coordinate). */
static void strides_without(const fg_tensor *t, int dim, int64_t *out)
{
    memcpy(out, t->stride, (size_t)t->ndim * sizeof *out);
    out[dim] = 0;
}

bool fg_cpu_index_in_range(const fg_tensor *index, int64_t size, int64_t *bad)
{
    const int64_t *st[1] = {index->stride};
    fg_iter it;
    fg__iter_init(&it, index->ndim, index->shape, 1, st);
    const void *p = fg__data(index);
    for (int64_t i = 0; i < index->numel; i++, fg__iter_next(&it)) {
        int64_t v = fg__ld_index(p, index->dtype, it.off[0]);
        if (v < 0 || v >= size) {
            *bad = v;
            return false;
        }
    }
    return true;
}

void fg_cpu_gather(fg_tensor *out, const fg_tensor *a, int dim, const fg_tensor *index)
{
    int64_t sa[FG_MAX_DIMS];
    strides_without(a, dim, sa);
    const int64_t *st[3] = {out->stride, index->stride, sa};
    fg_iter it;
    fg__iter_init(&it, index->ndim, index->shape, 3, st);
    char *po = fg__data(out);
    const char *pa = fg__data(a), *pi = fg__data(index);
    for (int64_t i = 0; i < index->numel; i++, fg__iter_next(&it)) {
        int64_t j = fg__ld_index(pi, index->dtype, it.off[1]);
        fg__st(po, out->dtype, it.off[0], fg__ld(pa, a->dtype, it.off[2] + j * a->stride[dim]));
    }
}

fg_status fg_cpu_scatter(fg_tensor *out, int dim, const fg_tensor *index, const fg_tensor *src, bool accumulate)
{
    int64_t so[FG_MAX_DIMS];
    strides_without(out, dim, so);
    const int64_t *st[3] = {index->stride, src->stride, so};
    fg_iter it;
    fg__iter_init(&it, index->ndim, index->shape, 3, st);
    char *po = fg__data(out);
    const char *ps = fg__data(src), *pi = fg__data(index);
    if (!accumulate) {
        /* Row-major walk over the index: a later duplicate overwrites an earlier one. */
        for (int64_t i = 0; i < index->numel; i++, fg__iter_next(&it)) {
            int64_t j = fg__ld_index(pi, index->dtype, it.off[0]);
            fg__st(po, out->dtype, it.off[2] + j * out->stride[dim], fg__ld(ps, src->dtype, it.off[1]));
        }
        return FG_OK;
    }
    /* Sums in double and rounds once, so bf16/f16 duplicates do not lose bits per add. */
    double *acc = malloc((size_t)(out->numel ? out->numel : 1) * sizeof *acc);
    if (!acc) return fg__err(FG_ERR_OOM, "scatter_add: out of memory for %lld accumulators", (long long)out->numel);
    for (int64_t i = 0; i < out->numel; i++) acc[i] = fg__ld(po, out->dtype, i);
    for (int64_t i = 0; i < index->numel; i++, fg__iter_next(&it)) {
        int64_t j = fg__ld_index(pi, index->dtype, it.off[0]);
        acc[it.off[2] + j * out->stride[dim]] += fg__ld(ps, src->dtype, it.off[1]);
    }
    for (int64_t i = 0; i < out->numel; i++) fg__st(po, out->dtype, i, acc[i]);
    free(acc);
    return FG_OK;
}

void fg_cpu_index_select(fg_tensor *out, const fg_tensor *a, int dim, const fg_tensor *index)
{
    int64_t sa[FG_MAX_DIMS];
    strides_without(a, dim, sa);
    const int64_t *st[2] = {out->stride, sa};
    fg_iter it;
    fg__iter_init(&it, out->ndim, out->shape, 2, st);
    char *po = fg__data(out);
    const char *pa = fg__data(a);
    for (int64_t i = 0; i < out->numel; i++, fg__iter_next(&it)) {
        int64_t j = index_at(index, it.idx[dim]);
        fg__st(po, out->dtype, it.off[0], fg__ld(pa, a->dtype, it.off[1] + j * a->stride[dim]));
    }
}

fg_status fg_cpu_index_add(fg_tensor *out, int dim, const fg_tensor *index, const fg_tensor *src)
{
    int64_t so[FG_MAX_DIMS];
    strides_without(out, dim, so);
    const int64_t *st[2] = {src->stride, so};
    fg_iter it;
    fg__iter_init(&it, src->ndim, src->shape, 2, st);
    char *po = fg__data(out);
    const char *ps = fg__data(src);
    double *acc = malloc((size_t)(out->numel ? out->numel : 1) * sizeof *acc);
    if (!acc) return fg__err(FG_ERR_OOM, "index_add: out of memory for %lld accumulators", (long long)out->numel);
    for (int64_t i = 0; i < out->numel; i++) acc[i] = fg__ld(po, out->dtype, i);
    for (int64_t i = 0; i < src->numel; i++, fg__iter_next(&it)) {
        int64_t j = index_at(index, it.idx[dim]);
        acc[it.off[1] + j * out->stride[dim]] += fg__ld(ps, src->dtype, it.off[0]);
    }
    for (int64_t i = 0; i < out->numel; i++) fg__st(po, out->dtype, i, acc[i]);
    free(acc);
    return FG_OK;
}

/* ---- topk: sort (value, index) pairs of each slice ---- */
typedef struct {
    double v;
    int64_t i;
} topk_pair;

/* Full order used by qsort: the index breaks ties, so the result is the stable one. */
static int cmp_largest(const void *pa, const void *pb)
{
    const topk_pair *a = pa, *b = pb;
    bool na = isnan(a->v), nb = isnan(b->v);
    if (na != nb) return na ? -1 : 1; /* NaN first */
    if (!na && a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static int cmp_smallest(const void *pa, const void *pb)
{
    const topk_pair *a = pa, *b = pb;
    bool na = isnan(a->v), nb = isnan(b->v);
    if (na != nb) return na ? 1 : -1; /* NaN last */
    if (!na && a->v != b->v) return a->v < b->v ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

fg_status fg_cpu_topk(fg_tensor *values, fg_tensor *indices, const fg_tensor *a, int dim, int64_t k, bool largest)
{
    int64_t outer = 1, inner = 1, n = a->shape[dim];
    for (int d = 0; d < dim; d++) outer *= a->shape[d];
    for (int d = dim + 1; d < a->ndim; d++) inner *= a->shape[d];
    if (k == 0 || outer * inner == 0) return FG_OK;
    topk_pair *buf = malloc((size_t)n * sizeof *buf);
    if (!buf) return fg__err(FG_ERR_OOM, "topk: out of memory sorting %lld elements", (long long)n);
    const char *p = fg__data(a);
    char *v = fg__data(values);
    int64_t *ix = fg__data(indices);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            /* Offset of element (o, 0, i) via a's strides. */
            int64_t rem = o, base = 0;
            for (int d = dim - 1; d >= 0; d--) {
                base += (rem % a->shape[d]) * a->stride[d];
                rem /= a->shape[d];
            }
            rem = i;
            for (int d = a->ndim - 1; d > dim; d--) {
                base += (rem % a->shape[d]) * a->stride[d];
                rem /= a->shape[d];
            }
            for (int64_t j = 0; j < n; j++) {
                buf[j].v = fg__ld(p, a->dtype, base + j * a->stride[dim]);
                buf[j].i = j;
            }
            qsort(buf, (size_t)n, sizeof *buf, largest ? cmp_largest : cmp_smallest);
            for (int64_t j = 0; j < k; j++) {
                int64_t dst = (o * k + j) * inner + i;
                fg__st(v, values->dtype, dst, buf[j].v);
                ix[dst] = buf[j].i;
            }
        }
    free(buf);
    return FG_OK;
}
