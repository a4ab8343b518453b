/* Linear layer: y = x @ W + b, W stored (in, out). */
#include <stdio.h>
#include "nn/nn_impl.h"

static const char *OP = "fg_nn_linear";

fg_status fg__nn_linear_init_std(fg_nn_linear *l, int64_t in, int64_t out, bool bias, double std, fg_generator *g,
                                 fg_device dev, fg_dtype dt)
{
    if (!l) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    memset(l, 0, sizeof *l);
    if (in < 1 || out < 1)
        return fg__err(FG_ERR_INVALID, "%s: in_features %lld and out_features %lld must be positive", OP,
                       (long long)in, (long long)out);
    if (!(std >= 0) || !isfinite(std)) return fg__err(FG_ERR_INVALID, "%s: init std %g", OP, std);
    if (!fg__nn_check_place(OP, dev, dt)) return fg_last_status();
    const double bound = 1.0 / sqrt((double)in);
    l->weight = std > 0 ? fg__nn_param_normal(g, std, FG_SHAPE(in, out), dev, dt)
                        : fg__nn_param_uniform(g, bound, FG_SHAPE(in, out), dev, dt);
    if (l->weight && bias)
        l->bias = std > 0 ? fg__nn_param_full(0.0, FG_SHAPE(out), dev, dt)
                          : fg__nn_param_uniform(g, bound, FG_SHAPE(out), dev, dt);
    if (!l->weight || (bias && !l->bias)) {
        fg_status st = fg_last_status();
        fg_nn_linear_free(l);
        return st;
    }
    l->in_features = in;
    l->out_features = out;
    return FG_OK;
}

fg_status fg_nn_linear_init(fg_nn_linear *l, int64_t in_features, int64_t out_features, bool bias, fg_generator *g,
                            fg_device dev, fg_dtype dt)
{
    return fg__nn_linear_init_std(l, in_features, out_features, bias, 0.0, g, dev, dt);
}

fg_tensor *fg_nn_linear_forward(const fg_nn_linear *l, fg_tensor *x)
{
    if (!l) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP), NULL;
    char name[96];
    snprintf(name, sizeof name, "%s(%lld -> %lld)", OP, (long long)l->in_features, (long long)l->out_features);
    if (!fg__nn_check_input(name, x, l->weight, 1, FG_MAX_DIMS, l->in_features)) return NULL;
    return fg_linear(x, l->weight, l->bias); /* (..., out) */
}

fg_status fg_nn_linear_params(const fg_nn_linear *l, const char *prefix, fg_params *reg)
{
    if (!l) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    if (!l->weight) return fg__err(FG_ERR_STATE, "%s: layer is not initialised (or was freed)", OP);
    fg_status st = fg__nn_add(reg, OP, prefix, "weight", l->weight, true);
    return st != FG_OK ? st : fg__nn_add(reg, OP, prefix, "bias", l->bias, false);
}

void fg_nn_linear_free(fg_nn_linear *l)
{
    if (!l) return;
    fg__nn_drop(&l->weight);
    fg__nn_drop(&l->bias);
    memset(l, 0, sizeof *l);
}
