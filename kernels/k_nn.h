/* Launchers of kernels/nn*.cu (see fg_kernels.h for the conventions). */
#ifndef FG_K_NN_H
#define FG_K_NN_H

#ifdef __cplusplus
extern "C" {
#endif

/* ---- softmax family (kernels/softmax.cu) ----
 * Float dtypes only (f32, f64, bf16, f16); every tensor contiguous and of one
 * dtype. Accumulation in float for f32/bf16/f16, in double for f64. */

/* y = softmax(x) or log_softmax(x) (log_out != 0) of a contiguous tensor seen as
 * (outer, n, inner), over n. y has x's shape. */
int fg_k_softmax_fwd(const void *x, void *y, int dtype, int64_t outer, int64_t n, int64_t inner, int log_out,
                     void *stream);
/* From the forward output y and its gradient gy: softmax gx = y (gy - sum(gy y)),
 * log_softmax gx = gy - exp(y) sum(gy). */
int fg_k_softmax_bwd(const void *y, const void *gy, void *gx, int dtype, int64_t outer, int64_t n, int64_t inner,
                     int log_out, void *stream);

/* Reductions of the cross-entropy launchers. */
#define FG_K_CE_NONE 0
#define FG_K_CE_SUM 1
#define FG_K_CE_MEAN 2
/* Cross-entropy of logits (N, C) against targets (N) (target_dtype i32 or i64).
 * A row counts when its target t != ignore_index and 0 <= t < C; other rows
 * (ignored, or out of range) contribute 0 and are not counted.
 *  - NONE: out (N) of the logits dtype gets each row's loss (0 on skipped rows);
 *    scratch may be NULL.
 *  - SUM / MEAN: out is one element; scratch holds fg_k_cross_entropy_scratch(N)
 *    doubles. The row losses are summed in double in a fixed order, in two
 *    stages without atomics (deterministic). MEAN divides by the count of
 *    counted rows (0 when none). count (one int64, may be NULL) receives that
 *    count, for the backward.
 * err_rec (the error record, see fg_kernels.h; may be NULL): a row whose target
 * is neither ignore_index nor in [0, C) is skipped as above and recorded as
 * FG_K_ERR_CROSS_ENTROPY {row, target, C} unless the record already holds an
 * error. */
int64_t fg_k_cross_entropy_scratch(int64_t N);
int fg_k_cross_entropy_fwd(const void *logits, int dtype, const void *targets, int target_dtype, int64_t N,
                           int64_t C, int64_t ignore_index, int reduction, void *out, double *scratch,
                           int64_t *count, int64_t *err_rec, void *stream);
/* gx (N, C) = s_r (softmax(logits_r) - onehot(t_r)) on counted rows, 0 on the
 * others, with s_r = gy[r] (gy_per_row) or gy[0], times 1/count[0] when count
 * is non-NULL (a mean; 0 when count[0] == 0). gy has the logits dtype. */
int fg_k_cross_entropy_bwd(const void *logits, int dtype, const void *targets, int target_dtype, int64_t N,
                           int64_t C, int64_t ignore_index, const void *gy, int gy_per_row, const int64_t *count,
                           void *gx, void *stream);

/* ---- layer norm / RMS norm over the last dim (kernels/norm.cu) ----
 * x, y, gy, gx: contiguous (rows, D); w, b: contiguous (D) or NULL (weight of
 * ones, no bias); all of `dtype`. mean and rstd are (rows) arrays of the
 * accumulation type: float for f32/bf16/f16, double for f64 (mean is unused and
 * may be NULL when rms). */
int fg_k_layernorm_fwd(const void *x, const void *w, const void *b, void *y, void *mean, void *rstd, int dtype,
                       int64_t rows, int64_t D, double eps, int rms, void *stream);
/* Bytes of device scratch fg_k_layernorm_bwd needs for the weight/bias column sums. */
int64_t fg_k_layernorm_bwd_scratch(int dtype, int64_t rows, int64_t D);
/* Whichever of gx (rows, D), gw (D), gb (D) are non-NULL. gw/gb are column sums
 * over rows, reduced deterministically: per-block partials into `scratch`
 * (fg_k_layernorm_bwd_scratch bytes; may be NULL when gw and gb are), then a
 * second kernel sums the partials in a fixed order. */
int fg_k_layernorm_bwd(const void *x, const void *w, const void *mean, const void *rstd, const void *gy, void *gx,
                       void *gw, void *gb, int dtype, int64_t rows, int64_t D, int rms, void *scratch,
                       void *stream);

#ifdef __cplusplus
}
#endif
#endif
