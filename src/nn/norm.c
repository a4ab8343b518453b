/* LayerNorm and RMSNorm over the last dim (gain ones, bias zeros at init). */
#include <stdio.h>
#include "nn/nn_impl.h"

static const char *OP = "fg_nn_norm";

static fg_status norm_init(fg_nn_norm *n, fg_nn_norm_kind kind, int64_t dim, bool bias, double eps, fg_device dev,
                           fg_dtype dt)
{
    const char *op = kind == FG_NN_RMSNORM ? "fg_nn_rmsnorm" : "fg_nn_layernorm";
    if (!n) return fg__err(FG_ERR_NULL, "%s: layer is NULL", op);
    memset(n, 0, sizeof *n);
    if (dim < 1) return fg__err(FG_ERR_INVALID, "%s: dim %lld must be positive", op, (long long)dim);
    if (!(eps >= 0) || !isfinite(eps)) return fg__err(FG_ERR_INVALID, "%s: eps %g", op, eps);
    if (!fg__nn_check_place(op, dev, dt)) return fg_last_status();
    n->weight = fg__nn_param_full(1.0, FG_SHAPE(dim), dev, dt);
    if (n->weight && bias) n->bias = fg__nn_param_full(0.0, FG_SHAPE(dim), dev, dt);
    if (!n->weight || (bias && !n->bias)) {
        fg_status st = fg_last_status();
        fg_nn_norm_free(n);
        return st;
    }
    n->kind = kind;
    n->dim = dim;
    n->eps = eps > 0 ? eps : 1e-5;
    return FG_OK;
}

fg_status fg_nn_layernorm_init(fg_nn_norm *n, int64_t dim, bool bias, double eps, fg_device dev, fg_dtype dt)
{
    return norm_init(n, FG_NN_LAYERNORM, dim, bias, eps, dev, dt);
}

fg_status fg_nn_rmsnorm_init(fg_nn_norm *n, int64_t dim, double eps, fg_device dev, fg_dtype dt)
{
    return norm_init(n, FG_NN_RMSNORM, dim, false, eps, dev, dt);
}

fg_tensor *fg_nn_norm_forward(const fg_nn_norm *n, fg_tensor *x)
{
    if (!n) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP), NULL;
    char name[64];
    snprintf(name, sizeof name, "%s(%lld)", n->kind == FG_NN_RMSNORM ? "fg_nn_rmsnorm" : "fg_nn_layernorm",
             (long long)n->dim);
    if (!fg__nn_check_input(name, x, n->weight, 1, FG_MAX_DIMS, n->dim)) return NULL;
    /* (..., dim) */
    return n->kind == FG_NN_RMSNORM ? fg_rmsnorm(x, n->weight, n->eps) : fg_layernorm(x, n->weight, n->bias, n->eps);
}

fg_status fg_nn_norm_params(const fg_nn_norm *n, const char *prefix, fg_params *reg)
{
    if (!n) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    if (!n->weight) return fg__err(FG_ERR_STATE, "%s: layer is not initialised (or was freed)", OP);
    fg_status st = fg__nn_add(reg, OP, prefix, "weight", n->weight, false);
    return st != FG_OK ? st : fg__nn_add(reg, OP, prefix, "bias", n->bias, false);
}

void fg_nn_norm_free(fg_nn_norm *n)
{
    if (!n) return;
    fg__nn_drop(&n->weight);
    fg__nn_drop(&n->bias);
    memset(n, 0, sizeof *n);
}
