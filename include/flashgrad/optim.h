#ifndef FLASHGRAD_OPTIM_H
#define FLASHGRAD_OPTIM_H

#include <flashgrad/params.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Optimizers ------------------------------------------------------------
 * An optimizer updates the parameters of a registry (flashgrad/params.h) from
 * their accumulated gradients. It takes the registry's entries at creation,
 * in order, holding its own reference to each tensor (entries added to the
 * registry later are not its business; the registry may be freed first).
 *
 * Parameters: float32 on the CPU or on CUDA (the fp32 master weights that bf16
 * autocast casts for its matmuls), or float64 on the CPU. bf16/f16 parameters
 * are refused (FG_ERR_DTYPE: keep fp32 master weights), f64 on CUDA too
 * (FG_ERR_UNSUPPORTED), and so are non-contiguous ones. One optimizer may mix
 * CPU and CUDA parameters.
 *
 * State lives on each parameter's device in its dtype (fp32 for f32 params),
 * allocated zeroed at creation, so it exists before the first step (loading a
 * checkpoint into it works at once, see fg_optimizer_state).
 *
 * fg_optimizer_step: one update of every parameter whose gradient is not NULL
 * (the others, and their state, are left alone), then the step count + 1. On
 * CUDA, all the parameters are updated by ONE fused multi-tensor kernel launch
 * (fp32 math); the launch does not wait for the GPU, and after the first step
 * it copies nothing to the device either (the table of tensor chunks is cached
 * on the device and re-sent only when a buffer moves, e.g. after
 * fg_clear_grad). CPU parameters are updated by plain loops in double (the
 * reference the GPU suite checks the kernels against, to ~1e-6 relative).
 * Steps run with no autograd recording (the update writes the tensors' memory).
 *
 * Weight decay (both optimizers) applies to the entries registered with
 * decay = true (layers set it for matrices), or to every entry with
 * opts.decay_all.
 *
 * AdamW (torch.optim.AdamW, amsgrad off), at step t = step count + 1:
 *   p <- p (1 - lr wd)                                   decoupled decay
 *   m <- beta1 m + (1 - beta1) g                         (torch's lerp; the same value)
 *   v <- beta2 v + (1 - beta2) g^2
 *   p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * One step count for all parameters (torch keeps one per parameter: the two
 * differ only for a parameter that had no gradient in some earlier step,
 * whose bias correction here follows the optimizer's count).
 *
 * SGD (torch.optim.SGD, dampening 0):
 *   d <- g + wd p                                        coupled L2
 *   momentum > 0:  b <- momentum b + d   (b starts at 0, so the first b is d, as in torch)
 *                  d <- nesterov ? d + momentum b : b
 *   p <- p - lr d
 *
 * Gradient accumulation: fg_backward adds into the existing gradients
 * (autograd.h), so k micro-batches make one step as
 *     fg_optimizer_zero_grad(o);
 *     for (i = 0; i < k; i++) {
 *         loss_i = <mean loss of micro-batch i>;
 *         fg_backward(fg_mul_scalar(loss_i, 1.0 / k));    // scale by 1/k
 *     }
 *     fg_clip_grad_norm(params, max_norm, &norm);         // optional
 *     fg_optimizer_step(o);
 * which gives the update of one batch k times as large whose loss is the
 * mean over all of it (equal micro-batch sizes). */
typedef struct fg_optimizer fg_optimizer;

typedef struct {
    double lr;           /* >= 0, finite */
    double momentum;     /* >= 0, finite; 0: no momentum buffer */
    bool nesterov;       /* needs momentum > 0 */
    double weight_decay; /* >= 0, finite; coupled L2 */
    bool decay_all;      /* decay every entry, not only those with decay = true */
} fg_sgd_opts;

typedef struct {
    double lr;           /* >= 0, finite */
    double beta1, beta2; /* in [0, 1) */
    double eps;          /* > 0, finite */
    double weight_decay; /* >= 0, finite; decoupled */
    bool decay_all;      /* decay every entry, not only those with decay = true */
} fg_adamw_opts;

/* torch's defaults: lr 1e-3, no momentum, no weight decay. */
fg_sgd_opts fg_sgd_defaults(void);
/* torch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01. */
fg_adamw_opts fg_adamw_defaults(void);

/* New optimizer over `params` (opts NULL: the defaults). NULL with the error
 * set on a NULL registry, a hyperparameter out of range (FG_ERR_INVALID, the
 * message names the optimizer and the field), or a parameter it cannot
 * update (see above). */
fg_optimizer *fg_sgd_new(fg_params *params, const fg_sgd_opts *opts);
fg_optimizer *fg_adamw_new(fg_params *params, const fg_adamw_opts *opts);
/* Releases the state and the references to the parameters (NULL is fine). */
void fg_optimizer_free(fg_optimizer *o);
/* "sgd" or "adamw" ("" for NULL). */
const char *fg_optimizer_name(const fg_optimizer *o);

/* One update (see above). Checks every gradient (same dtype, device and
 * shape as its parameter, contiguous) before touching anything: on such an
 * error nothing changes. FG_ERR_CUDA if a launch fails. */
fg_status fg_optimizer_step(fg_optimizer *o);
/* fg_zero_grad on every parameter (buffers kept, so the GPU table stays valid). */
fg_status fg_optimizer_zero_grad(fg_optimizer *o);

/* The learning rate the next step uses (a schedule sets it before each step).
 * set: lr >= 0 and finite, else FG_ERR_INVALID. get: NAN for NULL. */
fg_status fg_optimizer_set_lr(fg_optimizer *o, double lr);
double fg_optimizer_get_lr(const fg_optimizer *o);

/* Steps taken (0 after creation; AdamW's bias correction uses it + 1). set:
 * step >= 0; for restoring a checkpoint. get: -1 for NULL. */
int64_t fg_optimizer_step_count(const fg_optimizer *o);
fg_status fg_optimizer_set_step_count(fg_optimizer *o, int64_t step);

/* ---- State for checkpoints ---------------------------------------------------
 * Adds the optimizer's state tensors to the registry `out`, in parameter
 * order, under
 *     "optim.exp_avg.<param name>", "optim.exp_avg_sq.<param name>"   AdamW
 *     "optim.momentum.<param name>"                                   SGD, momentum > 0
 * (plain SGD has none). Each has its parameter's shape, device and dtype, and
 * decay = false. They are the optimizer's own tensors, not copies: `out`
 * takes a reference, and writing values into them (fg_copy_, a checkpoint
 * loader) restores the state; with fg_optimizer_set_step_count that is the
 * whole of it (the hyperparameters are the caller's). Fails like
 * fg_params_add (e.g. a name already in `out`); entries added before such a
 * failure stay. */
fg_status fg_optimizer_state(fg_optimizer *o, fg_params *out);

/* ---- Gradient clipping -------------------------------------------------------
 * Global L2 norm of the gradients of every entry of `params` that has one
 * (torch.nn.utils.clip_grad_norm_): norm = sqrt(sum of g^2 over all of them),
 * summed in double. When max_norm / (norm + 1e-6) < 1, every gradient is
 * multiplied in place by that factor (torch's rule); otherwise they are left
 * alone. The norm is written to *total_norm_out (may be NULL).
 * max_norm: > 0 (INFINITY: only measure the norm); NaN or <= 0 is
 * FG_ERR_INVALID. Gradients: any float dtype on the CPU, f32 on CUDA; CPU and
 * CUDA entries may be mixed.
 * A NaN or infinite norm is reported, not spread: the gradients are left
 * unscaled, *total_norm_out gets the NaN / inf, and the call returns
 * FG_ERR_INVALID naming the norm (the caller skips the step, say).
 * On CUDA: a sum-of-squares kernel per chunk and one reduction reduce to one
 * device scalar, the scale kernel reads the factor on the device, and the
 * host then reads the norm: one host sync per call (none per tensor). */
fg_status fg_clip_grad_norm(fg_params *params, double max_norm, double *total_norm_out);

/* ---- Learning-rate schedule --------------------------------------------------
 * nanoGPT's get_lr (train.py, the (it + 1) / (warmup + 1) version), a pure
 * function of the step (0-based, the step about to be taken):
 *   step < warmup_steps:   base_lr (step + 1) / (warmup_steps + 1)   (linear, never 0)
 *   step > total_steps:    min_lr
 *   otherwise:             min_lr + (base_lr - min_lr) (1 + cos(pi r)) / 2,
 *                          r = (step - warmup_steps) / (total_steps - warmup_steps)
 * so it reaches base_lr at step = warmup_steps and min_lr at total_steps.
 * (nanoGPT fails with 0 / 0 at step == warmup_steps == total_steps; this
 * returns min_lr there.) NAN with FG_ERR_INVALID for step, warmup_steps or
 * total_steps < 0. */
double fg_lr_warmup_cosine(int64_t step, double base_lr, double min_lr, int64_t warmup_steps, int64_t total_steps);

#ifdef __cplusplus
}
#endif
#endif
