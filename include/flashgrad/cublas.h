#ifndef FLASHGRAD_CUBLAS_H
#define FLASHGRAD_CUBLAS_H

#include <flashgrad/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Matrix products on CUDA tensors run through cuBLAS with float32 accumulation
 * for f32, bf16 and f16 (float64 for f64). TF32 lets float32 products use the
 * tensor cores with operands rounded to 10 mantissa bits (about 3e-4 relative
 * error instead of 1e-6, several times faster). Off by default; process-wide
 * (all threads), read at each product. Has no effect on CPU tensors or on other
 * dtypes. Always returns FG_OK. */
fg_status fg_set_allow_tf32(bool allow);
bool fg_allow_tf32(void);

/* y = x @ w + b: x (..., in), w (in, out) 2-d, b (out) 1-d or NULL. On CUDA one
 * cuBLASLt GEMM with the bias epilogue (or, for layouts it does not take, the
 * bias written first and the product accumulated onto it by cuBLAS, beta = 1);
 * on the CPU it is fg_add(fg_matmul(x, w), b). Differentiable in x, w and b; under autocast
 * (flashgrad/autocast.h) all three are cast like fg_matmul's operands. */
fg_tensor *fg_linear(fg_tensor *x, fg_tensor *w, fg_tensor *b);

/* y = gelu(x @ w + b) with the tanh form of GELU (fg_gelu(., true)), the MLP's
 * first layer. On CUDA one cuBLASLt GEMM with the GELU (+ bias) epilogue; with
 * autograd the same GEMM also writes the pre-activation, which the backward
 * uses (nothing is recomputed). Falls back to fg_linear + fg_gelu for layouts
 * cuBLASLt does not take, and on the CPU. Same arguments as fg_linear. */
fg_tensor *fg_linear_gelu(fg_tensor *x, fg_tensor *w, fg_tensor *b);

#ifdef __cplusplus
}
#endif
#endif
