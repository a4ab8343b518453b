/* Softmax and log-softmax over any dim, and the fused cross-entropy loss.
 * Forward and backward side by side. */
#include "cpu/cpu_nn.h"

/* Both rules work from the saved output y: softmax gx = y (g - sum(g y)),
 * log_softmax gx = g - exp(y) sum(g). */
static fg_status softmax_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *y = n->saved[0]; /* contiguous: the op's own output */
    if (!fg__check_cpu(n->name, go[0])) return fg_last_status();
    fg_tensor *g = fg__contig(go[0]);
    fg_tensor *gx = g ? fg__new(n->name, y->ndim, y->shape, y->dtype, y->device) : NULL;
    if (gx) fg_cpu_softmax_grad(gx, y, g, (int)n->i[0], n->i[1] != 0);
    fg__unref(g);
    gi[0] = gx;
    return gx ? FG_OK : fg_last_status();
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
    if (!fg__check_cpu(op, a)) return NULL;
    fg_tensor *ac = fg__contig(a);
    fg_tensor *out = ac ? fg__new_like(op, a) : NULL;
    if (out) fg_cpu_softmax(out, ac, r, log_out);
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
 * of the reduction (1/count for a mean, 1 otherwise). */
static fg_status cross_entropy_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *logits = n->saved[0], *targets = n->saved[1];
    if (!fg__check_cpu("cross_entropy", go[0])) return fg_last_status();
    fg_tensor *g = fg__contig(go[0]); /* 0-d (mean/sum) or (N) (none) */
    fg_tensor *gx = g ? fg__new("cross_entropy", 2, logits->shape, logits->dtype, logits->device) : NULL;
    if (gx) fg_cpu_cross_entropy_grad(gx, logits, targets, n->i[0], g, n->f[0]);
    fg__unref(g);
    gi[0] = gx;
    return gx ? FG_OK : fg_last_status();
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
    if (!fg__check_cpu(op, logits)) return NULL;
    int64_t N = logits->shape[0], C = logits->shape[1];
    fg_tensor *lc = fg__contig(logits);
    fg_tensor *tc = lc ? fg__contig(targets) : NULL;
    if (!tc) {
        fg__unref(lc);
        return NULL;
    }
    int64_t count = 0;
    int64_t bad = fg_cpu_first_out_of_range(tc, C, true, ignore_index, &count);
    fg_tensor *out = NULL;
    if (bad >= 0) {
        fg__err(FG_ERR_INDEX, "%s: target %lld at position %lld is out of range for %lld classes (logits %s, "
                              "ignore_index %lld)", op, (long long)fg__ld_index(fg__data(tc), tc->dtype, bad),
                (long long)bad, (long long)C, fg_shape_str(logits, bl, sizeof bl), (long long)ignore_index);
    } else {
        /* mean and sum give a 0-d loss, none one loss per row. */
        out = fg__new(op, reduction == FG_REDUCE_NONE ? 1 : 0, &N, logits->dtype, logits->device);
        if (out) fg_cpu_cross_entropy(out, lc, tc, ignore_index, reduction, count);
    }
    if (out && fg__any_requires_grad(1, &logits)) {
        fg_node *node = fg__record(op, cross_entropy_backward, 1, &logits, 1, &out);
        if (!node || fg__save(node, lc) < 0 || fg__save(node, tc) < 0) {
            fg_free(out);
            out = NULL;
            fg__err(FG_ERR_OOM, "%s: out of memory recording backward", op);
        } else {
            node->i[0] = ignore_index;
            /* All targets ignored: every row's gradient is zero anyway. */
            node->f[0] = reduction == FG_REDUCE_MEAN ? (count ? 1.0 / (double)count : 0.0) : 1.0;
        }
    }
    fg__unref(lc);
    fg__unref(tc);
    return out;
}
