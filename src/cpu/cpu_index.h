/* CPU kernels for the index ops (gather, scatter, index_select, index_add, topk).
 * Same conventions as cpu.h: outputs are contiguous tensors allocated by the
 * caller, inputs may be strided, values pass through double. Index tensors are
 * i32/i64 and have been range-checked by the op before a kernel runs. */
#ifndef FG_CPU_INDEX_H
#define FG_CPU_INDEX_H

#include "cpu/cpu.h"

/* True when every value of `index` lies in [0, size); otherwise writes the first
 * offending value to *bad and returns false. */
bool fg_cpu_index_in_range(const fg_tensor *index, int64_t size, int64_t *bad);

/* out (index's shape) = a[..., index[...], ...] along dim (index same ndim as a). */
void fg_cpu_gather(fg_tensor *out, const fg_tensor *a, int dim, const fg_tensor *index);
/* out[..., index[p], ...] = src[p] along dim for every position p of index, in
 * row-major order (duplicates: last write wins); accumulate adds instead, in
 * double with one rounding per element. out holds the starting values. */
fg_status fg_cpu_scatter(fg_tensor *out, int dim, const fg_tensor *index, const fg_tensor *src, bool accumulate);
/* out[..., j, ...] = a[..., index[j], ...] along dim; index is 0-d or 1-d. */
void fg_cpu_index_select(fg_tensor *out, const fg_tensor *a, int dim, const fg_tensor *index);
/* out[..., index[j], ...] += src[..., j, ...] along dim (double accumulation). */
fg_status fg_cpu_index_add(fg_tensor *out, int dim, const fg_tensor *index, const fg_tensor *src);
/* The k largest (or smallest) of each slice along dim, sorted; ties keep the
 * lower index first, NaN counts as larger than every number. values (dtype of
 * a) and indices (i64) have a's shape with dim of size k. */
fg_status fg_cpu_topk(fg_tensor *values, fg_tensor *indices, const fg_tensor *a, int dim, int64_t k, bool largest);

#endif
