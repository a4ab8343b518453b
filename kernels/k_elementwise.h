/* Launchers of kernels/elementwise*.cu (see fg_kernels.h for the conventions). */
#ifndef FG_K_ELEMENTWISE_H
#define FG_K_ELEMENTWISE_H

#ifdef __cplusplus
extern "C" {
#endif

/* Every launcher here writes `out` (any strides; the ops pass a fresh contiguous
 * tensor) from inputs that are already read as broadcast to out's shape
 * (fg__kt_bcast: same ndim and shape as out, stride 0 on broadcast dims).
 * Float dtypes f32/bf16/f16 compute in float, f64 in double; integer dtypes
 * compute exactly in int64 (i64 wraps like the CPU's two's complement paths,
 * i32 saturates on store like fg__st). An (op, dtype) pair the CPU reference
 * does not define for integers returns cudaErrorInvalidValue, as does a dtype
 * or shape mismatch. */

/* out = a (op) b; op is an fg_binary_op code (add sub mul div pow gt eq); a, b
 * and out share one dtype (gt/eq write 1/0 in it). Integers: add sub mul gt eq. */
int fg_k_binary(int op, fg_k_tensor out, fg_k_tensor a, fg_k_tensor b, void *stream);

/* out = op(a, s); op is an fg_unary_op code (scalar forms use s); a and out share
 * one dtype. Integers: neg abs relu. */
int fg_k_unary(int op, fg_k_tensor out, fg_k_tensor a, double s, void *stream);

/* gx = gy * op'(.), with the derivative formulas of fg_unary_deriv: exp tanh
 * sigmoid sqrt rsqrt read only y (the forward output), the rest only x (neg and
 * the add/mul/rsub scalar forms read neither). gx, x, y, gy: one dtype, one shape;
 * float dtypes only. */
int fg_k_unary_grad(int op, fg_k_tensor gx, fg_k_tensor x, fg_k_tensor y, fg_k_tensor gy, double s,
                    void *stream);

/* out = cond != 0 ? a : b (NaN counts as true); cond of any dtype; a, b and out
 * share one dtype; values are moved bit for bit. */
int fg_k_where(fg_k_tensor out, fg_k_tensor cond, fg_k_tensor a, fg_k_tensor b, void *stream);

#ifdef __cplusplus
}
#endif
#endif
