/* Chunk tables of the multi-tensor kernels (kernels/k_optim.h), built on the
 * host and kept on the device between calls. Each call rebuilds the host
 * table (cheap: one record per FG_K_MT_CHUNK elements) and uploads it only
 * when it differs from what the device holds, so a training loop whose
 * parameter and gradient buffers stay put (grads are zeroed in place, the
 * caching allocator hands the same blocks back) uploads once, on its first
 * step, and then launches without any host<->device copy. Internal. */
#ifndef FG_MULTI_TENSOR_H
#define FG_MULTI_TENSOR_H

#include "internal.h"

typedef struct {
    fg_k_mt_chunk *host; /* the table being built */
    int64_t n, cap;
    fg_k_mt_chunk *sent; /* a copy of what `dev` holds */
    int64_t sent_n, sent_cap;
    void *dev; /* device copy (caching allocator), dev_bytes long */
    size_t dev_bytes;
} fg__mt_table;

/* Starts a new table (keeps the buffers). */
void fg__mt_reset(fg__mt_table *t);
/* Appends the chunks of one tensor of `numel` f32 elements (nothing for 0);
 * m / v may be NULL. */
fg_status fg__mt_add(fg__mt_table *t, const char *op, float *p, float *g, float *m, float *v, int64_t numel,
                     bool decay);
/* The device copy of the table, uploaded when it changed (a host sync then). */
fg_status fg__mt_upload(fg__mt_table *t, const char *op, const fg_k_mt_chunk **dev);
/* Frees the buffers (the struct itself is the caller's); fine on a zeroed table. */
void fg__mt_release(fg__mt_table *t);

/* The registry's own table (src/nn/params.c; for fg_clip_grad_norm), freed with it. */
fg__mt_table *fg__params_mt_table(fg_params *p);

#endif
