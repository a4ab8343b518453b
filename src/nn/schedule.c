/* Learning-rate schedules (include/flashgrad/optim.h). */
#include "internal.h"

/* nanoGPT's get_lr, term for term (the same operations in the same order, so
 * the same doubles as Python's). */
double fg_lr_warmup_cosine(int64_t step, double base_lr, double min_lr, int64_t warmup_steps, int64_t total_steps)
{
    if (step < 0 || warmup_steps < 0 || total_steps < 0) {
        fg__err(FG_ERR_INVALID, "lr_warmup_cosine: step %lld, warmup_steps %lld, total_steps %lld; none may be negative",
                (long long)step, (long long)warmup_steps, (long long)total_steps);
        return NAN;
    }
    if (step < warmup_steps) return base_lr * (double)(step + 1) / (double)(warmup_steps + 1);
    if (step > total_steps) return min_lr;
    if (total_steps == warmup_steps) return min_lr; /* step == warmup == total: 0 / 0 in nanoGPT */
    const double decay_ratio = (double)(step - warmup_steps) / (double)(total_steps - warmup_steps);
    const double coeff = 0.5 * (1.0 + cos(M_PI * decay_ratio));
    return min_lr + coeff * (base_lr - min_lr);
}
