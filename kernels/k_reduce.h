/* Launchers of kernels/reduce*.cu (see fg_kernels.h for the conventions). */
#ifndef FG_K_REDUCE_H
#define FG_K_REDUCE_H

#ifdef __cplusplus
extern "C" {
#endif

/* Bit d of reduce_mask set: dim d of `in` is reduced. Outputs are contiguous in
 * the keepdim layout (in's shape with reduced dims of size 1). */

/* Bytes of device scratch fg_k_sum needs for this reduction (0: none). Host
 * only; the answer depends on the device's SM count, so ask right before the call. */
int64_t fg_k_sum_workspace(fg_k_tensor in, unsigned reduce_mask);

/* out = (sum of in over the masked dims) / divisor, rounded once to out's dtype
 * (divisor 1 for sum, the count for mean). out and in share one dtype.
 * Accumulates in double for f32/f64/bf16/f16 (as the CPU reference does) and
 * in int64 for i32/i64 (i64 wraps, i32 saturates on store). Deterministic: the
 * same input gives the same bits. workspace: fg_k_sum_workspace bytes. */
int fg_k_sum(fg_k_tensor out, fg_k_tensor in, unsigned reduce_mask, double divisor, void *workspace, void *stream);

/* values (in's dtype) and, when indices is not NULL, i64 indices along `dim`
 * (0 <= dim < in.ndim, in.shape[dim] > 0): first index on ties, and a NaN
 * wins (the first NaN), as fg_cpu_max. */
int fg_k_max(fg_k_tensor values, int64_t *indices, fg_k_tensor in, int dim, void *stream);

/* Scatter of max's gradient: gx (contiguous, in's shape, already zeroed)
 * [.., indices[k], ..] = g[k] along dim, g (any strides) and indices in the
 * keepdim layout; gx and g share one dtype. */
int fg_k_max_backward(fg_k_tensor gx, fg_k_tensor g, const int64_t *indices, int dim, void *stream);

#ifdef __cplusplus
}
#endif
#endif
