#ifndef FLASHGRAD_OPS_H
#define FLASHGRAD_OPS_H

#include <flashgrad/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every op: returns a new tensor (owned as described in tensor.h) or NULL with
 * the error set; accepts strided inputs; records a backward node when grad mode
 * is on and an input requires grad. Binary ops broadcast numpy-style, and need
 * both inputs on one device with one dtype. Dims may be negative. */

/* ---- Elementwise binary (broadcasting) ---- */
fg_tensor *fg_add(fg_tensor *a, fg_tensor *b);
fg_tensor *fg_sub(fg_tensor *a, fg_tensor *b);
fg_tensor *fg_mul(fg_tensor *a, fg_tensor *b);
fg_tensor *fg_div(fg_tensor *a, fg_tensor *b);
/* a ** b elementwise (a > 0 where b is not an integer, as in C's pow). */
fg_tensor *fg_pow(fg_tensor *a, fg_tensor *b);
/* With a scalar operand. */
fg_tensor *fg_add_scalar(fg_tensor *a, double s);
fg_tensor *fg_mul_scalar(fg_tensor *a, double s);
fg_tensor *fg_pow_scalar(fg_tensor *a, double exponent);
/* s - a and s / a. */
fg_tensor *fg_rsub_scalar(fg_tensor *a, double s);
fg_tensor *fg_rdiv_scalar(fg_tensor *a, double s);

/* ---- Elementwise unary ---- */
fg_tensor *fg_neg(fg_tensor *a);
fg_tensor *fg_exp(fg_tensor *a);
fg_tensor *fg_log(fg_tensor *a);
fg_tensor *fg_sqrt(fg_tensor *a);
fg_tensor *fg_rsqrt(fg_tensor *a);
fg_tensor *fg_abs(fg_tensor *a);
fg_tensor *fg_tanh(fg_tensor *a);
fg_tensor *fg_sigmoid(fg_tensor *a);
fg_tensor *fg_relu(fg_tensor *a);
/* approximate = true: 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))); false: 0.5x(1+erf(x/sqrt2)). */
fg_tensor *fg_gelu(fg_tensor *a, bool approximate);
fg_tensor *fg_silu(fg_tensor *a);

/* ---- Comparison / selection (no gradient to the mask) ---- */
/* 1/0 masks with the dtype of a. */
fg_tensor *fg_gt(fg_tensor *a, fg_tensor *b);
fg_tensor *fg_eq(fg_tensor *a, fg_tensor *b);
/* cond ? a : b, broadcasting all three; cond nonzero means true. */
fg_tensor *fg_where(fg_tensor *cond, fg_tensor *a, fg_tensor *b);
/* a with `value` where mask is nonzero (mask broadcasts to a). */
fg_tensor *fg_masked_fill(fg_tensor *a, fg_tensor *mask, double value);

/* ---- Matrix products ---- */
/* (..., n, k) @ (..., k, m) -> (..., n, m) with broadcast batch dims; 1-d
 * operands act as a row / column vector as in numpy.matmul. */
fg_tensor *fg_matmul(fg_tensor *a, fg_tensor *b);

/* ---- Reductions ---- */
fg_tensor *fg_sum(fg_tensor *a, int ndims, const int *dims, bool keepdim);
fg_tensor *fg_mean(fg_tensor *a, int ndims, const int *dims, bool keepdim);
fg_tensor *fg_sum_all(fg_tensor *a);  /* 0-d */
fg_tensor *fg_mean_all(fg_tensor *a); /* 0-d */
/* Max over one dim; *indices (optional) receives i64 argmax (first on ties). */
fg_tensor *fg_max(fg_tensor *a, int dim, bool keepdim, fg_tensor **indices);
fg_tensor *fg_max_all(fg_tensor *a);
/* i64 argmax over `dim`. */
fg_tensor *fg_argmax(fg_tensor *a, int dim, bool keepdim);

/* ---- Normalisation and softmax ---- */
fg_tensor *fg_softmax(fg_tensor *a, int dim);
fg_tensor *fg_log_softmax(fg_tensor *a, int dim);
/* Over the last dim; weight/bias (last-dim sized) may be NULL. */
fg_tensor *fg_layernorm(fg_tensor *x, fg_tensor *weight, fg_tensor *bias, double eps);
fg_tensor *fg_rmsnorm(fg_tensor *x, fg_tensor *weight, double eps);

/* ---- Losses ---- */
typedef enum { FG_REDUCE_MEAN = 0, FG_REDUCE_SUM, FG_REDUCE_NONE } fg_reduction;
/* logits (N, C), targets (N) of i32/i64 class ids. Fused log_softmax + NLL;
 * targets equal to ignore_index contribute nothing and are excluded from the
 * mean (a mean over zero targets is 0). Any other out-of-range target is an error. */
fg_tensor *fg_cross_entropy(fg_tensor *logits, fg_tensor *targets, int64_t ignore_index,
                            fg_reduction reduction);

/* ---- Embedding / dropout ---- */
/* weight (V, D), indices of any shape (i32/i64) -> (*indices.shape, D). */
fg_tensor *fg_embedding(fg_tensor *weight, fg_tensor *indices);
/* Zeroes each element with probability p and scales the rest by 1/(1-p). The
 * mask comes from the generator (NULL: the default one): element i is dropped
 * when word i of the draw is below p * 2^32, so the mask is reproducible from
 * (seed, offset). training = false returns a copy of x. */
fg_tensor *fg_dropout(fg_tensor *x, double p, bool training, fg_generator *gen);

/* ---- Joining and splitting ---- */
fg_tensor *fg_concat(int n, fg_tensor *const *ts, int dim);
fg_tensor *fg_stack(int n, fg_tensor *const *ts, int dim);
/* Splits dim into pieces of the given sizes (summing to its size); writes n views. */
fg_status fg_split(fg_tensor *t, int dim, int n, const int64_t *sizes, fg_tensor **out);
/* n equal chunks (the last one smaller when it does not divide). */
fg_status fg_chunk(fg_tensor *t, int dim, int n, fg_tensor **out);

/* ---- Indexing ---- */
/* out[i][j] = a[index[i][j]][j] (dim 0), index same ndim as a, i32/i64. */
fg_tensor *fg_gather(fg_tensor *a, int dim, fg_tensor *index);
/* Copy of a with src written at index along dim (duplicates: last write wins). */
fg_tensor *fg_scatter(fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src);
/* Copy of a with src added at index along dim (duplicates accumulate). */
fg_tensor *fg_scatter_add(fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src);
/* Rows of a picked by a 1-d index along dim. */
fg_tensor *fg_index_select(fg_tensor *a, int dim, fg_tensor *index);
/* Copy of a with slices of src added at the positions of a 1-d index along dim. */
fg_tensor *fg_index_add(fg_tensor *a, int dim, fg_tensor *index, fg_tensor *src);
/* k largest (or smallest) along dim, sorted; values differentiable, indices i64. */
fg_status fg_topk(fg_tensor *a, int k, int dim, bool largest, fg_tensor **values,
                  fg_tensor **indices);

#ifdef __cplusplus
}
#endif
#endif
