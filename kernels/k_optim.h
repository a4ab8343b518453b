/* Launchers of kernels/optim.cu: multi-tensor optimizer updates and gradient
 * clipping (see fg_kernels.h for the conventions).
 *
 * Multi-tensor form: the host cuts every tensor into chunks of at most
 * FG_K_MT_CHUNK elements and hands the kernels one device array of chunk
 * records; one block works on one chunk, so one launch covers all the
 * parameters of a model whatever their number and sizes. Every pointer is a
 * contiguous f32 device array at the chunk's first element (p, g, m, v of one
 * chunk cover the same element range of their tensors). */
#ifndef FG_K_OPTIM_H
#define FG_K_OPTIM_H

#ifdef __cplusplus
extern "C" {
#endif

#define FG_K_MT_CHUNK 32768 /* elements per chunk: ~1 block per 128 KiB of a tensor */

typedef struct {
    float *p;      /* parameter (updated in place); unused by the norm kernels */
    float *g;      /* gradient (read; scaled in place by fg_k_scale_grads) */
    float *m;      /* AdamW exp_avg, SGD momentum buffer; NULL when unused */
    float *v;      /* AdamW exp_avg_sq; NULL when unused */
    int64_t n;     /* elements in the chunk, 1..FG_K_MT_CHUNK */
    int32_t decay; /* 1: weight decay applies to this tensor */
    int32_t pad_;  /* keeps the record 48 bytes, zeroed (the host compares tables bytewise) */
} fg_k_mt_chunk;

/* Per-step AdamW scalars, computed on the host in double (torch.optim.AdamW):
 *   p <- p * decay_mul                         (decay chunks only; decay_mul = 1 - lr wd)
 *   m <- beta1 m + one_minus_beta1 g
 *   v <- beta2 v + one_minus_beta2 g^2
 *   p <- p - step_size m / (sqrt(v) / bc2_sqrt + eps)
 * step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t), t the step (>= 1). */
typedef struct {
    float beta1, one_minus_beta1, beta2, one_minus_beta2, eps, step_size, bc2_sqrt, decay_mul;
} fg_k_adamw_hyper;

/* Per-step SGD scalars (torch.optim.SGD, dampening 0):
 *   d <- g + weight_decay p                    (decay chunks only)
 *   momentum > 0: m <- momentum m + d; d <- nesterov ? d + momentum m : m
 *   p <- p - lr d */
typedef struct {
    float lr, momentum, weight_decay;
    int32_t nesterov;
} fg_k_sgd_hyper;

/* One launch over n_chunks records at `chunks` (a device array). Chunks with
 * fp32 math; records of m / v must be non-NULL (AdamW) or m non-NULL when
 * momentum > 0 (SGD). n_chunks 0: nothing. */
int fg_k_adamw(const fg_k_mt_chunk *chunks, int64_t n_chunks, fg_k_adamw_hyper h, void *stream);
int fg_k_sgd(const fg_k_mt_chunk *chunks, int64_t n_chunks, fg_k_sgd_hyper h, void *stream);

/* Gradient clipping by global L2 norm, without a host round trip:
 * fg_k_sq_norm: partials[c] = sum over chunk c of g^2 (accumulated in double,
 *   so f32 gradients up to ~1e38 neither overflow nor lose the small ones);
 * fg_k_clip_coef: one block sums partials[0..n) in a fixed order (the same bits
 *   run to run) plus host_sq (the squares of gradients that live on the host),
 *   and writes out[0] = norm = sqrt(total), out[1] = coef: max_norm / (norm +
 *   1e-6) when that is < 1 and norm is finite, else 1 (torch's clip_coef; a
 *   NaN / inf norm leaves the gradients alone);
 * fg_k_scale_grads: g <- g * (float)coef[1] on every chunk (nothing when it is 1). */
int fg_k_sq_norm(const fg_k_mt_chunk *chunks, int64_t n_chunks, double *partials, void *stream);
int fg_k_clip_coef(const double *partials, int64_t n, double host_sq, double max_norm, double *out, void *stream);
int fg_k_scale_grads(const fg_k_mt_chunk *chunks, int64_t n_chunks, const double *out, void *stream);

#ifdef __cplusplus
}
#endif
#endif
