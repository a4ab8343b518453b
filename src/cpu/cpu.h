/* CPU reference kernels: plain loops, the truth the GPU is checked against.
 * Outputs are contiguous tensors allocated by the caller; inputs may be strided.
 * Values pass through double (see fg__ld), so every dtype shares one code path. */
#ifndef FG_CPU_H
#define FG_CPU_H

#include "internal.h"

typedef enum {
    FG_BIN_ADD, FG_BIN_SUB, FG_BIN_MUL, FG_BIN_DIV, FG_BIN_POW, FG_BIN_GT, FG_BIN_EQ
} fg_binary_op;

typedef enum {
    FG_UN_NEG, FG_UN_EXP, FG_UN_LOG, FG_UN_SQRT, FG_UN_RSQRT, FG_UN_ABS, FG_UN_TANH, FG_UN_SIGMOID,
    FG_UN_RELU, FG_UN_GELU_TANH, FG_UN_GELU_ERF, FG_UN_SILU,
    FG_UN_ADD_SCALAR, FG_UN_MUL_SCALAR, FG_UN_POW_SCALAR, FG_UN_RSUB_SCALAR, FG_UN_RDIV_SCALAR
} fg_unary_op;

double fg_unary_value(fg_unary_op op, double x, double s);
/* d out / d x at x (y = op(x) given for rules that are cheaper from it). */
double fg_unary_deriv(fg_unary_op op, double x, double y, double s);

/* out = a (op) b, a and b broadcast to out's shape. */
void fg_cpu_binary(fg_binary_op op, fg_tensor *out, const fg_tensor *a, const fg_tensor *b);
void fg_cpu_unary(fg_unary_op op, fg_tensor *out, const fg_tensor *a, double s);
/* gx = gy * op'(x) */
void fg_cpu_unary_grad(fg_unary_op op, fg_tensor *gx, const fg_tensor *x, const fg_tensor *y,
                       const fg_tensor *gy, double s);
/* out = cond ? a : b (all broadcast to out). */
void fg_cpu_where(fg_tensor *out, const fg_tensor *cond, const fg_tensor *a, const fg_tensor *b);

/* out (batch, n, m) = a (batch, n, k) @ b (batch, k, m); a/b batch strides may be 0 (broadcast). */
fg_status fg_cpu_matmul(fg_tensor *out, const fg_tensor *a, const fg_tensor *b);

/* Sum of `in` over the dims where reduce[d] is true, written to out (keepdim layout, contiguous). */
fg_status fg_cpu_sum(fg_tensor *out, const fg_tensor *in, const bool *reduce);
/* Max over one dim: values and (optional) i64 indices, first index on ties; NaN wins. */
void fg_cpu_max(fg_tensor *values, fg_tensor *indices, const fg_tensor *in, int dim);

#endif
