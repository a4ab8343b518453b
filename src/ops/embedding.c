/* Embedding lookup: rows of a (V, D) table picked by an index tensor of any
 * shape. The backward scatter-adds the output gradient into a zero (V, D). */
#include <stdatomic.h>
#include <flashgrad/deterministic.h>
#include "cpu/cpu_nn.h"

/* ---- deterministic mode (include/flashgrad/deterministic.h) ---- */
static atomic_bool g_deterministic = false;

void fg_set_deterministic(bool on) { atomic_store(&g_deterministic, on); }
bool fg_deterministic(void) { return atomic_load(&g_deterministic); }

/* ---- CUDA paths (only in CUDA builds: a device tensor cannot exist in others) ---- */

/* out (n, D) contiguous = weight rows at the n contiguous indices ic. No host
 * sync: an index outside [0, V) gives a zero row and is recorded in the device
 * error record, reported as FG_ERR_INDEX at the next synchronising call
 * (fg__cuda_check_error_record). */
static fg_status cuda_embedding(fg_tensor *out, const fg_tensor *weight, const fg_tensor *ic)
{
#ifndef FG_HAVE_CUDA
    return FG_CUDA_CALL("embedding", 0);
#else
    int64_t n = ic->numel, V = weight->shape[0], D = weight->shape[1];
    int64_t *rec = fg__cuda_error_record();
    if (!rec) return fg_last_status();
    int es = (int)fg_dtype_size(weight->dtype);
    if (weight->stride[1] == 1 || D == 1) /* whole rows: vectorised copies */
        return FG_CUDA_CALL("embedding", fg_k_gather_rows(fg__data(out), fg__data(weight), es, 1, n, D, 0,
                                                          weight->stride[0], fg__data(ic), (int)ic->dtype, 1, V, rec,
                                                          FG_K_ERR_EMBEDDING, fg__cuda_stream()));
    /* Strided columns: one element per thread. */
    return FG_CUDA_CALL("embedding", fg_k_embedding_fwd_strided(fg__data(out), fg__data(weight), es, n, D,
                                                                weight->stride[0], weight->stride[1], fg__data(ic),
                                                                (int)ic->dtype, V, rec, fg__cuda_stream()));
#endif
}

/* gw (V, D) = scatter-add of g's rows at the indices: atomics, or sorted and
 * summed in index order in deterministic mode (bit-identical to the CPU). */
static fg_status cuda_embedding_grad(fg_tensor *gw, const fg_tensor *ic, const fg_tensor *g)
{
#ifndef FG_HAVE_CUDA
    return FG_CUDA_CALL("embedding backward", 0);
#else
    static const char *op = "embedding backward";
    int64_t V = gw->shape[0], D = gw->shape[1], n = ic->numel;
    bool det = fg_deterministic();
    size_t bytes = 0;
    void *scratch = NULL;
    fg_status st = FG_CUDA_CALL(op, fg_k_embedding_backward_scratch(det, (int)gw->dtype, n, V, D, &bytes));
    if (st == FG_OK && bytes) st = fg__cuda_malloc(&scratch, bytes);
    if (st != FG_OK) return st;
    st = FG_CUDA_CALL(op, fg_k_embedding_backward(fg__data(gw), (int)gw->dtype, V, D, fg__data(ic), (int)ic->dtype, n,
                                                  fg__data(g), det, scratch, bytes, fg__cuda_stream()));
    if (scratch) fg__cuda_free(scratch, bytes);
    return st;
#endif
}

/* saved[0]: the contiguous indices. */
static fg_status embedding_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_edge *e = &n->edges[0];
    fg_tensor *g = fg__contig(go[0]); /* (*indices.shape, D) */
    fg_tensor *gw = g ? fg__new("embedding", 2, e->shape, e->dtype, e->device) : NULL; /* (V, D) */
    fg_status st = !gw                       ? fg_last_status()
                   : gw->device == FG_CUDA ? cuda_embedding_grad(gw, n->saved[0], g)
                                           : fg_cpu_embedding_grad(gw, n->saved[0], g);
    fg__unref(g);
    if (st != FG_OK && gw) {
        fg_free(gw);
        gw = NULL;
    }
    gi[0] = gw;
    return st;
}

fg_tensor *fg_embedding(fg_tensor *weight, fg_tensor *indices)
{
    static const char *op = "embedding";
    char bw[128], bi[128];
    if (!weight) { fg__err_null(op, "weight"); return NULL; }
    if (!indices) { fg__err_null(op, "indices"); return NULL; }
    if (!fg__check_float(op, weight) || !fg__check_index_dtype(op, indices)) return NULL;
    if (weight->ndim != 2) {
        fg__err(FG_ERR_SHAPE, "%s: weight must be 2-d (V, D), got %s", op, fg_shape_str(weight, bw, sizeof bw));
        return NULL;
    }
    if (indices->ndim + 1 > FG_MAX_DIMS) {
        fg__err(FG_ERR_DIM, "%s: indices %s have %d dims; the result would exceed %d", op,
                fg_shape_str(indices, bi, sizeof bi), indices->ndim, FG_MAX_DIMS);
        return NULL;
    }
    if (weight->device != indices->device) {
        fg__err(FG_ERR_DEVICE, "%s: weight %s on %s but indices %s on %s", op, fg_shape_str(weight, bw, sizeof bw),
                fg_device_name(weight->device), fg_shape_str(indices, bi, sizeof bi), fg_device_name(indices->device));
        return NULL;
    }
    int64_t V = weight->shape[0];
    fg_tensor *ic = fg__contig(indices);
    if (!ic) return NULL;
    /* Out-of-range indices. On the CPU: FG_ERR_INDEX now. On CUDA, checking here
     * would cost a host sync per call, so the kernel does it: a bad index gives
     * a zero output row (the backward skips it) and is recorded on the device;
     * the next synchronising call (fg_cuda_synchronize, or any copy to the host)
     * fails with FG_ERR_INDEX naming the op, the flat position and the value. */
    int64_t bad = ic->device == FG_CUDA ? -1 : fg_cpu_first_out_of_range(ic, V, false, 0, NULL);
    if (bad >= 0) {
        int64_t value = fg__ld_index(fg__data(ic), ic->dtype, bad);
        fg__err(FG_ERR_INDEX, "%s: index %lld at flat position %lld of indices %s is out of range for weight %s "
                              "(%lld rows)", op, (long long)value, (long long)bad,
                fg_shape_str(indices, bi, sizeof bi), fg_shape_str(weight, bw, sizeof bw), (long long)V);
        fg__unref(ic);
        return NULL;
    }
    int64_t shape[FG_MAX_DIMS]; /* (*indices.shape, D) */
    memcpy(shape, indices->shape, (size_t)indices->ndim * sizeof *shape);
    shape[indices->ndim] = weight->shape[1];
    fg_tensor *out = fg__new(op, indices->ndim + 1, shape, weight->dtype, weight->device);
    if (out && weight->device == FG_CUDA) {
        if (cuda_embedding(out, weight, ic) != FG_OK) {
            fg_free(out);
            out = NULL;
        }
    } else if (out) {
        fg_cpu_embedding(out, weight, ic);
    }
    if (out && fg__any_requires_grad(1, &weight)) {
        fg_node *node = fg__record(op, embedding_backward, 1, &weight, 1, &out);
        if (!node || fg__save(node, ic) < 0) {
            fg_free(out);
            out = NULL;
            fg__err(FG_ERR_OOM, "%s: out of memory recording backward", op);
        }
    }
    fg__unref(ic);
    return out;
}
