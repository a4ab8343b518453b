/* Embedding layer: a (num_embeddings, dim) table read by index. */
#include <stdio.h>
#include "nn/nn_impl.h"

static const char *OP = "fg_nn_embedding";

fg_status fg__nn_embedding_init_std(fg_nn_embedding *e, int64_t num, int64_t dim, double std, fg_generator *g,
                                    fg_device dev, fg_dtype dt)
{
    if (!e) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    memset(e, 0, sizeof *e);
    if (num < 1 || dim < 1)
        return fg__err(FG_ERR_INVALID, "%s: num_embeddings %lld and dim %lld must be positive", OP, (long long)num,
                       (long long)dim);
    if (!(std >= 0) || !isfinite(std)) return fg__err(FG_ERR_INVALID, "%s: init std %g", OP, std);
    if (!fg__nn_check_place(OP, dev, dt)) return fg_last_status();
    if (!(e->weight = fg__nn_param_normal(g, std, FG_SHAPE(num, dim), dev, dt))) return fg_last_status();
    e->num_embeddings = num;
    e->dim = dim;
    return FG_OK;
}

fg_status fg_nn_embedding_init(fg_nn_embedding *e, int64_t num_embeddings, int64_t dim, fg_generator *g, fg_device dev,
                               fg_dtype dt)
{
    return fg__nn_embedding_init_std(e, num_embeddings, dim, 1.0, g, dev, dt);
}

fg_tensor *fg_nn_embedding_forward(const fg_nn_embedding *e, fg_tensor *idx)
{
    if (!e) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP), NULL;
    char name[96], b[128];
    snprintf(name, sizeof name, "%s(%lld, %lld)", OP, (long long)e->num_embeddings, (long long)e->dim);
    if (!idx) return fg__err_null(name, "indices"), NULL;
    if (!e->weight) return fg__err(FG_ERR_STATE, "%s: layer is not initialised (or was freed)", name), NULL;
    if (fg_dtype_of(idx) != FG_I32 && fg_dtype_of(idx) != FG_I64)
        return fg__err(FG_ERR_DTYPE, "%s: indices %s are %s, expected i32 or i64", name,
                       fg_shape_str(idx, b, sizeof b), fg_dtype_name(fg_dtype_of(idx))), NULL;
    if (fg_device_of(idx) != fg_device_of(e->weight))
        return fg__err(FG_ERR_DEVICE, "%s: indices %s on %s, table on %s", name, fg_shape_str(idx, b, sizeof b),
                       fg_device_name(fg_device_of(idx)), fg_device_name(fg_device_of(e->weight))), NULL;
    if (fg_ndim(idx) >= FG_MAX_DIMS)
        return fg__err(FG_ERR_SHAPE, "%s: indices %s leave no room for the embedding dim", name,
                       fg_shape_str(idx, b, sizeof b)), NULL;
    return fg_embedding(e->weight, idx); /* (*idx.shape, dim); bad ids are FG_ERR_INDEX from the op */
}

fg_status fg_nn_embedding_params(const fg_nn_embedding *e, const char *prefix, fg_params *reg)
{
    if (!e) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    if (!e->weight) return fg__err(FG_ERR_STATE, "%s: layer is not initialised (or was freed)", OP);
    return fg__nn_add(reg, OP, prefix, "weight", e->weight, false);
}

void fg_nn_embedding_free(fg_nn_embedding *e)
{
    if (!e) return;
    fg__nn_drop(&e->weight);
    memset(e, 0, sizeof *e);
}
