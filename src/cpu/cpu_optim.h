/* CPU reference of the optimizer updates and gradient-norm helpers (plain
 * loops, the truth kernels/optim.cu is checked against). Arrays are
 * contiguous, of dtype dt: f32 or f64 for the updates (state in the same
 * dtype), any float dtype for the norm helpers. Math in double; each stored
 * value is rounded once to dt and the rounded value is what later steps read,
 * as on the GPU. */
#ifndef FG_CPU_OPTIM_H
#define FG_CPU_OPTIM_H

#include "internal.h"

/* Scalars of one AdamW step (see fg_k_adamw_hyper): decay_mul = 1 - lr wd,
 * step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t). */
typedef struct {
    double beta1, beta2, eps, step_size, bc2_sqrt, decay_mul;
} fg_cpu_adamw_hyper;

typedef struct {
    double lr, momentum, weight_decay;
    bool nesterov;
} fg_cpu_sgd_hyper;

/* p, m, v updated in place from g (n elements; torch.optim.AdamW). */
void fg_cpu_adamw(fg_dtype dt, void *p, const void *g, void *m, void *v, int64_t n, bool decay,
                  const fg_cpu_adamw_hyper *h);
/* p and (momentum > 0) m updated in place from g (torch.optim.SGD, dampening 0). */
void fg_cpu_sgd(fg_dtype dt, void *p, const void *g, void *m, int64_t n, bool decay, const fg_cpu_sgd_hyper *h);
/* Sum of g^2 in double. */
double fg_cpu_sq_norm(fg_dtype dt, const void *g, int64_t n);
/* g <- g * coef (coef rounded to f32 first for f32/bf16/f16, as the GPU does). */
void fg_cpu_scale(fg_dtype dt, void *g, int64_t n, double coef);

#endif
