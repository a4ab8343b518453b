/* Gradient clipping by global L2 norm (include/flashgrad/optim.h). CPU
 * gradients are summed on the host; CUDA ones by the multi-tensor norm
 * kernels (kernels/optim.cu), which also fold in the host's sum, decide the
 * factor and scale on the device, so the only host sync is reading the norm
 * back at the end. The chunk table is cached on the registry. */
#include <stdlib.h>
#include "internal.h"
#include "cpu/cpu_optim.h"
#include "nn/multi_tensor.h"

static const char *OP = "clip_grad_norm";

/* torch's factor: max_norm / (norm + 1e-6) when below 1 (and norm finite), else 1. */
static double clip_coef(double norm, double max_norm)
{
    const double c = max_norm / (norm + 1e-6);
    return isfinite(norm) && c < 1.0 ? c : 1.0;
}

#ifdef FG_HAVE_CUDA
/* Norm kernels over the table, then the norm and factor back to the host. */
static fg_status cuda_clip(fg__mt_table *tbl, double host_sq, double max_norm, double *norm, double *coef)
{
    const fg_k_mt_chunk *dev = NULL;
    if (fg__mt_upload(tbl, OP, &dev) != FG_OK) return fg_last_status();
    /* partials[0, n) per chunk, then {norm, coef} */
    const size_t bytes = sizeof(double) * (size_t)(tbl->n + 2);
    double *partials = NULL;
    if (fg__cuda_malloc((void **)&partials, bytes) != FG_OK) return fg_last_status();
    void *s = fg__cuda_stream();
    double res[2] = {NAN, 1.0};
    fg_status st = FG_CUDA_CALL(OP, fg_k_sq_norm(dev, tbl->n, partials, s));
    if (st == FG_OK) st = FG_CUDA_CALL(OP, fg_k_clip_coef(partials, tbl->n, host_sq, max_norm, partials + tbl->n, s));
    if (st == FG_OK) st = FG_CUDA_CALL(OP, fg_k_scale_grads(dev, tbl->n, partials + tbl->n, s));
    if (st == FG_OK) st = fg__cuda_memcpy_d2h(res, partials + tbl->n, sizeof res);
    fg__cuda_free(partials, bytes); /* one stream: later work is ordered after the kernels */
    *norm = res[0];
    *coef = res[1];
    return st;
}
#endif

fg_status fg_clip_grad_norm(fg_params *params, double max_norm, double *total_norm_out)
{
    if (total_norm_out) *total_norm_out = NAN;
    if (!params) return fg__err_null(OP, "parameter registry");
    if (!(max_norm > 0))
        return fg__err(FG_ERR_INVALID, "%s: max_norm = %g; it must be > 0 (INFINITY only measures the norm)", OP,
                       max_norm);
    const int64_t n = fg_params_count(params);
    /* Check everything before touching anything. */
    for (int64_t i = 0; i < n; i++) {
        const fg_param *e = fg_params_at(params, i);
        const fg_tensor *g = e->t->grad;
        if (!g) continue;
        if (g->device == FG_CUDA && g->dtype != FG_F32)
            return fg__err(FG_ERR_UNSUPPORTED, "%s: the gradient of '%s' is %s on cuda; the GPU kernels take f32", OP,
                           e->name, fg_dtype_name(g->dtype));
        if (!fg_is_contiguous(g) || !fg_dtype_is_float(g->dtype))
            return fg__err(FG_ERR_STATE, "%s: the gradient of '%s' is not a contiguous float tensor", OP, e->name);
    }
    double host_sq = 0.0;
    fg__mt_table *tbl = fg__params_mt_table(params);
    fg__mt_reset(tbl);
    for (int64_t i = 0; i < n; i++) {
        fg_tensor *g = fg_params_at(params, i)->t->grad;
        if (!g || g->numel == 0) continue;
        if (g->device == FG_CPU)
            host_sq += fg_cpu_sq_norm(g->dtype, fg__data(g), g->numel);
        else if (fg__mt_add(tbl, OP, NULL, fg__data(g), NULL, NULL, g->numel, false) != FG_OK)
            return fg_last_status();
    }
    double norm = sqrt(host_sq), coef = clip_coef(norm, max_norm);
    if (tbl->n > 0) {
#ifdef FG_HAVE_CUDA
        if (cuda_clip(tbl, host_sq, max_norm, &norm, &coef) != FG_OK) return fg_last_status();
#else
        return FG_CUDA_CALL(OP, 0); /* unreachable: no CUDA tensors in this build */
#endif
    }
    if (coef != 1.0)
        for (int64_t i = 0; i < n; i++) {
            fg_tensor *g = fg_params_at(params, i)->t->grad;
            if (g && g->device == FG_CPU) fg_cpu_scale(g->dtype, fg__data(g), g->numel, coef);
        }
    if (total_norm_out) *total_norm_out = norm;
    if (!isfinite(norm))
        return fg__err(FG_ERR_INVALID, "%s: the total gradient norm is %g (a gradient holds inf or NaN); gradients left unscaled",
                       OP, norm);
    return FG_OK;
}
