/* Softmax and log-softmax over any dim, and the fused cross-entropy loss.
 * Forward and backward side by side; CPU tensors run the reference kernels of
 * cpu/softmax.c, CUDA tensors the kernels of kernels/softmax.cu. */
#include <stdlib.h>
#include "cpu/cpu_nn.h"

/* A contiguous copy of g in dtype dt on g's device (g itself when it already is
 * both), released with fg__unref; gradients normally arrive in the output's dtype. */
static fg_tensor *contig_as(const char *op, fg_tensor *g, fg_dtype dt)
{
    if (g->dtype == dt) return fg__contig(g);
    fg_tensor *c = fg__new(op, g->ndim, g->shape, dt, g->device);
    if (!c) return NULL;
    fg_keep(c);
    if (fg__copy_elements(c, g) != FG_OK) {
        fg__unref(c);
        return NULL;
    }
    return c;
}

/* The incoming gradient must be on the device of what the rule saved. */
static bool same_device(const char *op, const fg_tensor *g, fg_device dev)
{
    if (dev == FG_CPU) return fg__check_cpu(op, g);
    if (g->device == dev) return true;
    char b[128];
    fg__err(FG_ERR_DEVICE, "%s backward: gradient %s on %s, expected %s", op, fg_shape_str(g, b, sizeof b),
            fg_device_name(g->device), fg_device_name(dev));
    return false;
}

/* Both rules work from the saved output y: softmax gx = y (g - sum(g y)),
 * log_softmax gx = g - exp(y) sum(g). */
static fg_status softmax_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *y = n->saved[0]; /* contiguous: the op's own output */
    if (!same_device(n->name, go[0], y->device)) return fg_last_status();
    fg_tensor *g = y->device == FG_CPU ? fg__contig(go[0]) : contig_as(n->name, go[0], y->dtype);
    fg_tensor *gx = g ? fg__new(n->name, y->ndim, y->shape, y->dtype, y->device) : NULL;
    fg_status st = gx ? FG_OK : fg_last_status();
    if (gx && y->device == FG_CPU) {
        fg_cpu_softmax_grad(gx, y, g, (int)n->i[0], n->i[1] != 0);
    } else if (gx) {
        fg_softmax_dims d = fg_softmax_dims_of(y, (int)n->i[0]);
        (void)d; /* FG_CUDA_CALL drops the call in CPU-only builds */
        st = FG_CUDA_CALL(n->name, fg_k_softmax_bwd(fg__data(y), fg__data(g), fg__data(gx), (int)y->dtype, d.outer,
                                                    d.n, d.inner, n->i[1] != 0, fg__cuda_stream()));
    }
    fg__unref(g);
    gi[0] = st == FG_OK ? gx : NULL;
    return st;
}

static fg_tensor *softmax_impl(const char *op, fg_tensor *a, int dim, bool log_out)
{
    if (!a) { fg__err_null(op, "input"); return NULL; }
    if (!fg__check_float(op, a)) return NULL;
    int r = 0;
    /* A 0-d tensor is one row of one element and takes dim 0 or -1 (fg__norm_dim
     * currently rejects -1 there). */
    bool scalar_dim = a->ndim == 0 && (dim == 0 || dim == -1);
    if (!scalar_dim && fg__norm_dim(op, a, dim, 0, &r) != FG_OK) return NULL;
    /* Strided inputs are made contiguous first; the CUDA kernels then read the
     * (outer, n, inner) view directly, whatever the dim. */
    fg_tensor *ac = fg__contig(a);
    fg_tensor *out = ac ? fg__new_like(op, a) : NULL;
    if (out && a->device == FG_CPU) {
        fg_cpu_softmax(out, ac, r, log_out);
    } else if (out) {
        fg_softmax_dims d = fg_softmax_dims_of(ac, r);
        (void)d; /* FG_CUDA_CALL drops the call in CPU-only builds */
        if (FG_CUDA_CALL(op, fg_k_softmax_fwd(fg__data(ac), fg__data(out), (int)a->dtype, d.outer, d.n, d.inner,
                                              log_out, fg__cuda_stream())) != FG_OK) {
            fg_free(out);
            out = NULL;
        }
    }
    fg__unref(ac);
    if (!out || !fg__any_requires_grad(1, &a)) return out;
    fg_node *node = fg__record(op, softmax_backward, 1, &a, 1, &out);
    if (!node || fg__save(node, out) < 0) {
        fg_free(out);
        fg__err(FG_ERR_OOM, "%s: out of memory recording backward", op);
        return NULL;
    }
    node->i[0] = r;
    node->i[1] = log_out;
    return out;
}

fg_tensor *fg_softmax(fg_tensor *a, int dim) { return softmax_impl("softmax", a, dim, false); }
fg_tensor *fg_log_softmax(fg_tensor *a, int dim) { return softmax_impl("log_softmax", a, dim, true); }

/* ---- cross-entropy ---- */
/* saved: logits (N, C) and targets (N), both contiguous; the softmax is
 * recomputed rather than stored. i[0] = ignore_index, f[0] = the per-row scale
 * of the reduction (1/count for a mean, 1 otherwise).
 * CUDA: the count of a mean stays on the device (reading it would sync), so
 * saved[2] is that count (an i64 0-d CUDA tensor) when i[1] (its slot) >= 0 and
 * the kernel takes 1/count from it; f[0] is then unused. */
enum { CE_IGNORE, CE_COUNT_SLOT };

static fg_status cross_entropy_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    static const char *op = "cross_entropy";
    fg_tensor *logits = n->saved[0], *targets = n->saved[1];
    if (!same_device(op, go[0], logits->device)) return fg_last_status();
    /* 0-d (mean/sum) or (N) (none) */
    fg_tensor *g = logits->device == FG_CPU ? fg__contig(go[0]) : contig_as(op, go[0], logits->dtype);
    fg_tensor *gx = g ? fg__new(op, 2, logits->shape, logits->dtype, logits->device) : NULL;
    fg_status st = gx ? FG_OK : fg_last_status();
    if (gx && logits->device == FG_CPU) {
        fg_cpu_cross_entropy_grad(gx, logits, targets, n->i[CE_IGNORE], g, n->f[0]);
    } else if (gx) {
        const fg_tensor *count = n->i[CE_COUNT_SLOT] >= 0 ? n->saved[n->i[CE_COUNT_SLOT]] : NULL;
        (void)count; /* FG_CUDA_CALL drops the call in CPU-only builds */
        st = FG_CUDA_CALL(op, fg_k_cross_entropy_bwd(fg__data(logits), (int)logits->dtype, fg__data(targets),
                                                     (int)targets->dtype, logits->shape[0], logits->shape[1],
                                                     n->i[CE_IGNORE], fg__data(g), g->ndim != 0,
                                                     count ? fg__data(count) : NULL, fg__data(gx),
                                                     fg__cuda_stream()));
    }
    fg__unref(g);
    gi[0] = st == FG_OK ? gx : NULL;
    return st;
}

static void bad_target_error(const char *op, const fg_tensor *logits, int64_t target, int64_t pos,
                             int64_t ignore_index)
{
    char bl[128];
    fg__err(FG_ERR_INDEX, "%s: target %lld at position %lld is out of range for %lld classes (logits %s, "
                          "ignore_index %lld)", op, (long long)target, (long long)pos, (long long)logits->shape[1],
            fg_shape_str(logits, bl, sizeof bl), (long long)ignore_index);
}

/* Out-of-range targets on CUDA. Finding them in the op would mean reading
 * device memory back, a host sync per call, so the forward kernel does it: such
 * a row is skipped exactly like an ignored one (loss 0, not counted in a mean,
 * zero gradient; never read out of bounds) and recorded in the device error
 * record. The next synchronising call (fg_cuda_synchronize, or any copy to the
 * host) then fails with FG_ERR_INDEX naming the op, the position and the target
 * (fg__cuda_check_error_record). Valid input gives the CPU's results.
 *
 * The CUDA forward: out as on the CPU; *count_out (mean only) the device count
 * of counted rows, for the backward. NULL on error. */
static fg_tensor *cross_entropy_cuda(const char *op, fg_tensor *lc, fg_tensor *tc, int64_t ignore_index,
                                     fg_reduction reduction, fg_tensor **count_out)
{
    int64_t N = lc->shape[0], C = lc->shape[1];
    (void)C; /* FG_CUDA_CALL drops the call in CPU-only builds */
    int mode = reduction == FG_REDUCE_NONE ? FG_K_CE_NONE : reduction == FG_REDUCE_SUM ? FG_K_CE_SUM : FG_K_CE_MEAN;
    fg_tensor *out = fg__new(op, reduction == FG_REDUCE_NONE ? 1 : 0, &N, lc->dtype, lc->device);
#ifdef FG_HAVE_CUDA
    int64_t nscratch = mode != FG_K_CE_NONE ? fg_k_cross_entropy_scratch(N) : 0;
#else
    int64_t nscratch = 0; /* unreachable: no CUDA tensor exists in this build */
#endif
    fg_tensor *rows = out && nscratch ? fg__new(op, 1, &nscratch, FG_F64, lc->device) : NULL;
    fg_tensor *count = out && mode == FG_K_CE_MEAN ? fg__new(op, 0, NULL, FG_I64, lc->device) : NULL;
    int64_t *rec = out ? fg__cuda_error_record() : NULL;
    fg_status st = !out || (mode != FG_K_CE_NONE && !rows) || (mode == FG_K_CE_MEAN && !count) || !rec
                       ? fg_last_status()
                       : FG_OK;
    if (st == FG_OK)
        st = FG_CUDA_CALL(op, fg_k_cross_entropy_fwd(fg__data(lc), (int)lc->dtype, fg__data(tc), (int)tc->dtype, N, C,
                                                     ignore_index, mode, fg__data(out),
                                                     rows ? fg__data(rows) : NULL, count ? fg__data(count) : NULL,
                                                     rec, fg__cuda_stream()));
    fg_free(rows);
    if (st != FG_OK) {
        fg_free(count);
        fg_free(out);
        return NULL;
    }
    *count_out = count;
    return out;
}

fg_tensor *fg_cross_entropy(fg_tensor *logits, fg_tensor *targets, int64_t ignore_index, fg_reduction reduction)
{
    static const char *op = "cross_entropy";
    char bl[128], bt[128];
    if (!logits) { fg__err_null(op, "logits"); return NULL; }
    if (!targets) { fg__err_null(op, "targets"); return NULL; }
    if (reduction != FG_REDUCE_MEAN && reduction != FG_REDUCE_SUM && reduction != FG_REDUCE_NONE) {
        fg__err(FG_ERR_INVALID, "%s: invalid reduction %d (use FG_REDUCE_MEAN, FG_REDUCE_SUM or FG_REDUCE_NONE)", op,
                (int)reduction);
        return NULL;
    }
    if (!fg__check_float(op, logits) || !fg__check_index_dtype(op, targets)) return NULL;
    if (logits->ndim != 2) {
        fg__err(FG_ERR_SHAPE, "%s: logits must be 2-d (N, C), got %s", op, fg_shape_str(logits, bl, sizeof bl));
        return NULL;
    }
    if (targets->ndim != 1 || targets->shape[0] != logits->shape[0]) {
        fg__err(FG_ERR_SHAPE, "%s: targets %s do not match logits %s (need (N) targets for (N, C) logits)", op,
                fg_shape_str(targets, bt, sizeof bt), fg_shape_str(logits, bl, sizeof bl));
        return NULL;
    }
    if (targets->device != logits->device) {
        fg__err(FG_ERR_DEVICE, "%s: logits %s on %s but targets %s on %s", op, fg_shape_str(logits, bl, sizeof bl),
                fg_device_name(logits->device), fg_shape_str(targets, bt, sizeof bt), fg_device_name(targets->device));
        return NULL;
    }
    int64_t N = logits->shape[0], C = logits->shape[1];
    fg_tensor *lc = fg__contig(logits);
    fg_tensor *tc = lc ? fg__contig(targets) : NULL;
    if (!tc) {
        fg__unref(lc);
        return NULL;
    }
    int64_t count = 0;
    fg_tensor *out = NULL, *dcount = NULL; /* dcount: the CUDA mean's device count */
    if (logits->device != FG_CPU) {
        out = cross_entropy_cuda(op, lc, tc, ignore_index, reduction, &dcount);
    } else {
        int64_t bad = fg_cpu_first_out_of_range(tc, C, true, ignore_index, &count);
        if (bad >= 0) {
            bad_target_error(op, logits, fg__ld_index(fg__data(tc), tc->dtype, bad), bad, ignore_index);
        } else {
            /* mean and sum give a 0-d loss, none one loss per row. */
            out = fg__new(op, reduction == FG_REDUCE_NONE ? 1 : 0, &N, logits->dtype, logits->device);
            if (out) fg_cpu_cross_entropy(out, lc, tc, ignore_index, reduction, count);
        }
    }
    if (out && fg__any_requires_grad(1, &logits)) {
        fg_node *node = fg__record(op, cross_entropy_backward, 1, &logits, 1, &out);
        int slot = -1;
        if (!node || fg__save(node, lc) < 0 || fg__save(node, tc) < 0 ||
            (dcount && (slot = fg__save(node, dcount)) < 0)) {
            fg_free(out);
            out = NULL;
            fg__err(FG_ERR_OOM, "%s: out of memory recording backward", op);
        } else {
            node->i[CE_IGNORE] = ignore_index;
            node->i[CE_COUNT_SLOT] = slot;
            /* All targets ignored: every row's gradient is zero anyway. */
            node->f[0] = reduction == FG_REDUCE_MEAN ? (count ? 1.0 / (double)count : 0.0) : 1.0;
        }
    }
    fg_free(dcount);
    fg__unref(lc);
    fg__unref(tc);
    return out;
}
