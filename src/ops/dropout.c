/* Dropout with a counter-based mask: element i is dropped when word i of the
 * Philox draw at (seed, offset) is below p * 2^32. The node keeps only (seed,
 * offset) and regenerates the mask in the backward, so no mask is stored. */
#include "cpu/cpu_nn.h"

/* out (contiguous) = dropout of the contiguous in, on in's device. The CUDA
 * kernel regenerates the CPU's mask bit for bit (kernels/random.cu). */
static fg_status run_dropout(fg_tensor *out, const fg_tensor *in, uint64_t seed, uint64_t base, uint32_t threshold,
                             bool drop_all, double scale)
{
    if (in->device == FG_CUDA)
        return FG_CUDA_CALL("dropout", fg_k_dropout(fg__data(out), fg__data(in), (int)in->dtype, in->numel, seed, base,
                                                    threshold, drop_all, scale, fg__cuda_stream()));
    fg_cpu_dropout(out, in, seed, base, threshold, drop_all, scale);
    return FG_OK;
}

/* i[0] = seed, i[1] = base offset (4-word blocks), i[2] = threshold,
 * i[3] = drop_all; f[0] = scale 1/(1-p). The backward is the same masking
 * applied to the gradient. */
static fg_status dropout_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_tensor *g = fg__contig(go[0]);
    fg_tensor *gx = g ? fg__new_like("dropout", g) : NULL;
    if (gx && run_dropout(gx, g, (uint64_t)n->i[0], (uint64_t)n->i[1], (uint32_t)n->i[2], n->i[3] != 0, n->f[0]) !=
                  FG_OK) {
        fg_free(gx);
        gx = NULL;
    }
    fg__unref(g);
    gi[0] = gx;
    return gx ? FG_OK : fg_last_status();
}

fg_tensor *fg_dropout(fg_tensor *x, double p, bool training, fg_generator *gen)
{
    static const char *op = "dropout";
    if (!x) { fg__err_null(op, "input"); return NULL; }
    if (!(p >= 0.0 && p <= 1.0)) { /* also rejects NaN */
        fg__err(FG_ERR_INVALID, "%s: p must be in [0, 1], got %g", op, p);
        return NULL;
    }
    if (!fg__check_float(op, x)) return NULL;
    /* Nothing to drop: a differentiable copy, and no random numbers consumed. */
    if (!training || p == 0.0) return fg_clone(x);
    if (!gen) gen = fg_default_generator();
    bool drop_all = p >= 1.0; /* p * 2^32 does not fit 32 bits */
    uint32_t threshold = drop_all ? UINT32_MAX : (uint32_t)floor(p * 4294967296.0);
    double scale = drop_all ? 0.0 : 1.0 / (1.0 - p);
    fg_tensor *xc = fg__contig(x);
    fg_tensor *out = xc ? fg__new_like(op, x) : NULL;
    if (!out) {
        fg__unref(xc);
        return NULL;
    }
    /* Reserve the words only once the op cannot fail on allocation. */
    uint64_t seed = fg_generator_seed(gen), base = fg_generator_advance(gen, (uint64_t)x->numel);
    fg_status st = run_dropout(out, xc, seed, base, threshold, drop_all, scale);
    fg__unref(xc);
    if (st != FG_OK) {
        fg_free(out);
        return NULL;
    }
    if (!fg__any_requires_grad(1, &x)) return out;
    fg_node *node = fg__record(op, dropout_backward, 1, &x, 1, &out);
    if (!node) {
        fg_free(out);
        return NULL;
    }
    node->i[0] = (int64_t)seed;
    node->i[1] = (int64_t)base;
    node->i[2] = threshold;
    node->i[3] = drop_all;
    node->f[0] = scale;
    return out;
}
