/* Helpers shared by the layers in src/nn/ (not installed). */
#ifndef FG_NN_IMPL_H
#define FG_NN_IMPL_H

#include "internal.h"

/* ---- parameters ---- */
/* Device and dtype a layer can hold parameters in (a float dtype). */
bool fg__nn_check_place(const char *layer, fg_device dev, fg_dtype dt);
/* New leaf parameters (requires_grad, owned by the caller, not by any open
 * scope). NULL with the error set on failure. */
fg_tensor *fg__nn_param_normal(fg_generator *g, double std, int ndim, const int64_t *shape, fg_device dev, fg_dtype dt);
fg_tensor *fg__nn_param_uniform(fg_generator *g, double bound, int ndim, const int64_t *shape, fg_device dev,
                                fg_dtype dt);
fg_tensor *fg__nn_param_full(double value, int ndim, const int64_t *shape, fg_device dev, fg_dtype dt);
/* fg_free(*t) and *t = NULL. */
void fg__nn_drop(fg_tensor **t);

/* Linear with an explicit init: std > 0 gives weight N(0, std) and a zero bias,
 * std == 0 PyTorch's uniform +-1/sqrt(in) for both. */
fg_status fg__nn_linear_init_std(fg_nn_linear *l, int64_t in, int64_t out, bool bias, double std, fg_generator *g,
                                 fg_device dev, fg_dtype dt);
/* Embedding with weight N(0, std). */
fg_status fg__nn_embedding_init_std(fg_nn_embedding *e, int64_t num, int64_t dim, double std, fg_generator *g,
                                    fg_device dev, fg_dtype dt);

/* ---- registry names ---- */
/* reg gets (prefix.name, t, decay); t NULL adds nothing. */
fg_status fg__nn_add(fg_params *reg, const char *layer, const char *prefix, const char *name, fg_tensor *t, bool decay);
/* buf = prefix.name (or name when prefix is NULL or ""); FG_ERR_INVALID when too long. */
fg_status fg__nn_join(char *buf, size_t n, const char *layer, const char *prefix, const char *name);
#define FG_NN_NAME_MAX 256

/* ---- forward frame ----
 * A layer's forward opens a scope for its intermediates and hands its result
 * to the caller's scope (or to the caller) on the way out: */
static inline fg_tensor *fg__nn_finish(fg_scope *s, fg_tensor *out)
{
    if (out) fg_keep(out);
    fg_scope_end(s);
    return out ? fg__adopt(out) : NULL;
}

/* x non-NULL (else keeps the first error), on the layer's device and dtype
 * (taken from `param`), ndim in [min_nd, max_nd], last dim == last (when last
 * >= 0). Errors name the layer and the shapes. */
bool fg__nn_check_input(const char *layer, const fg_tensor *x, const fg_tensor *param, int min_nd, int max_nd,
                        int64_t last);

/* Internal forwards the composite layers share. */
fg_tensor *fg__nn_dropout(fg_tensor *x, double p, bool training, fg_generator *gen); /* x itself when inactive */
fg_status fg__nn_check_attention_config(const char *layer, const fg_nn_attention_config *cfg);

#endif
