/* Helpers the layers share: parameter creation, registry names, input checks. */
#include <stdio.h>
#include "nn/nn_impl.h"

bool fg__nn_check_place(const char *layer, fg_device dev, fg_dtype dt)
{
    if ((int)dt < 0 || dt >= FG_NUM_DTYPES || !fg_dtype_is_float(dt)) {
        fg__err(FG_ERR_DTYPE, "%s: parameters must have a floating-point dtype, got %s", layer,
                (int)dt >= 0 && dt < FG_NUM_DTYPES ? fg_dtype_name(dt) : "an invalid dtype");
        return false;
    }
    if (dev != FG_CPU && dev != FG_CUDA) {
        fg__err(FG_ERR_DEVICE, "%s: invalid device %d", layer, (int)dev);
        return false;
    }
    return true;
}

/* t made in the current scope: move it to the caller and make it a parameter. */
static fg_tensor *as_param(fg_tensor *t)
{
    if (!t) return NULL;
    fg_keep(t);
    if (fg_set_requires_grad(t, true) != FG_OK) {
        fg_free(t);
        return NULL;
    }
    return t;
}

fg_tensor *fg__nn_param_normal(fg_generator *g, double std, int ndim, const int64_t *shape, fg_device dev, fg_dtype dt)
{
    return as_param(fg_normal(g ? g : fg_default_generator(), 0.0, std, ndim, shape, dt, dev));
}

fg_tensor *fg__nn_param_uniform(fg_generator *g, double bound, int ndim, const int64_t *shape, fg_device dev,
                                fg_dtype dt)
{
    return as_param(fg_uniform(g ? g : fg_default_generator(), -bound, bound, ndim, shape, dt, dev));
}

fg_tensor *fg__nn_param_full(double value, int ndim, const int64_t *shape, fg_device dev, fg_dtype dt)
{
    return as_param(fg_full(ndim, shape, value, dt, dev));
}

void fg__nn_drop(fg_tensor **t)
{
    if (*t) fg_free(*t);
    *t = NULL;
}

fg_status fg__nn_join(char *buf, size_t n, const char *layer, const char *prefix, const char *name)
{
    int w = prefix && *prefix ? snprintf(buf, n, "%s.%s", prefix, name) : snprintf(buf, n, "%s", name);
    if (w < 0 || (size_t)w >= n)
        return fg__err(FG_ERR_INVALID, "%s: parameter name '%s.%s' is longer than %zu characters", layer,
                       prefix ? prefix : "", name, n - 1);
    return FG_OK;
}

fg_status fg__nn_add(fg_params *reg, const char *layer, const char *prefix, const char *name, fg_tensor *t, bool decay)
{
    if (!reg) return fg__err(FG_ERR_NULL, "%s: registry is NULL", layer);
    if (!t) return FG_OK;
    char full[FG_NN_NAME_MAX];
    fg_status st = fg__nn_join(full, sizeof full, layer, prefix, name);
    return st != FG_OK ? st : fg_params_add(reg, full, t, decay);
}

bool fg__nn_check_input(const char *layer, const fg_tensor *x, const fg_tensor *param, int min_nd, int max_nd,
                        int64_t last)
{
    char b[128];
    if (!x) {
        fg__err_null(layer, "input");
        return false;
    }
    if (!param) {
        fg__err(FG_ERR_STATE, "%s: layer is not initialised (or was freed)", layer);
        return false;
    }
    const int nd = fg_ndim(x);
    if (nd < min_nd || nd > max_nd) {
        if (min_nd == max_nd)
            fg__err(FG_ERR_SHAPE, "%s: input %s has %d dims, expected %d", layer, fg_shape_str(x, b, sizeof b), nd,
                    min_nd);
        else
            fg__err(FG_ERR_SHAPE, "%s: input %s has %d dims, expected %d..%d", layer, fg_shape_str(x, b, sizeof b),
                    nd, min_nd, max_nd);
        return false;
    }
    if (last >= 0 && fg_shape(x)[nd - 1] != last) {
        fg__err(FG_ERR_SHAPE, "%s: input %s, expected last dim %lld", layer, fg_shape_str(x, b, sizeof b),
                (long long)last);
        return false;
    }
    if (fg_device_of(x) != fg_device_of(param)) {
        fg__err(FG_ERR_DEVICE, "%s: input %s on %s, parameters on %s", layer, fg_shape_str(x, b, sizeof b),
                fg_device_name(fg_device_of(x)), fg_device_name(fg_device_of(param)));
        return false;
    }
    /* Under autocast the linear maps return 16-bit activations from f32
     * parameters, so only without it must the dtypes match. */
    if (fg_autocast_dtype() == FG_F32 && fg_dtype_of(x) != fg_dtype_of(param)) {
        fg__err(FG_ERR_DTYPE, "%s: input %s is %s, parameters are %s", layer, fg_shape_str(x, b, sizeof b),
                fg_dtype_name(fg_dtype_of(x)), fg_dtype_name(fg_dtype_of(param)));
        return false;
    }
    return true;
}

fg_tensor *fg__nn_dropout(fg_tensor *x, double p, bool training, fg_generator *gen)
{
    if (!x || !training || !(p > 0)) return x;
    return fg_dropout(x, p, true, gen);
}
