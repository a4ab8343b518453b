#ifndef FLASHGRAD_ATTENTION_H
#define FLASHGRAD_ATTENTION_H

#include <flashgrad/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Scaled dot-product attention, softmax(scale q k^T [+ causal mask]) v, as an
 * autograd op.
 *
 * Shapes: q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, D) -> out
 * (B, Hq, Lq, D). The (B, L, H, D) layout is the same call on transposed
 * views (fg_transpose(x, 1, 2)): only strides differ. Hq % Hkv == 0: query
 * head h reads key/value head h / (Hq / Hkv) (GQA; Hkv = 1 is MQA).
 *
 * Causal with Lq != Lk is aligned bottom-right: query row i sees keys
 * j <= i + Lk - Lq. A row that sees no key outputs zeros, has LSE = +inf and
 * gets zero gradients (never NaN).
 *
 * Backends: FLASH tiles the keys with an online softmax and saves only q, k,
 * v, out and the log-sum-exp per row (fp32); its backward recomputes the
 * probabilities block by block (memory linear in L). MATH materialises the
 * (Lq, Lk) scores and probabilities with the framework's ops: the reference.
 * AUTO picks FLASH where it is built (the CPU, for now) and MATH otherwise.
 * The CUDA flash kernels are not built yet: FLASH on a CUDA tensor returns
 * FG_ERR_UNSUPPORTED, AUTO runs MATH (cuBLAS). Dropout is not implemented yet
 * (dropout_p != 0 is FG_ERR_UNSUPPORTED). */
typedef enum { FG_ATTN_AUTO = 0, FG_ATTN_FLASH, FG_ATTN_MATH } fg_attn_backend;

typedef struct {
    bool causal;
    double scale;      /* 0: 1 / sqrt(D) */
    double dropout_p;  /* must be 0 for now */
    fg_attn_backend backend;
} fg_attention_opts;

/* opts may be NULL (non-causal, default scale, AUTO). */
fg_tensor *fg_attention(fg_tensor *q, fg_tensor *k, fg_tensor *v, const fg_attention_opts *opts);
/* The same, also returning the per-row log-sum-exp of the scaled scores,
 * (B, Hq, Lq) on q's device, f32 (f64 for f64 inputs; +inf for rows that see
 * no key), in *lse
 * (owned like any new tensor; no gradient). */
fg_tensor *fg_attention_lse(fg_tensor *q, fg_tensor *k, fg_tensor *v, const fg_attention_opts *opts, fg_tensor **lse);

#ifdef __cplusplus
}
#endif
#endif
