/* Layer norm and RMS norm over the last dim, forward and backward side by side.
 * CPU tensors run the reference kernels of cpu/norm.c, CUDA tensors the kernels
 * of kernels/norm.cu. */
#include "cpu/cpu_nn.h"

/* Node layout. Inputs: x, weight, bias (layernorm) or x, weight (rmsnorm), NULL
 * where absent. saved: the contiguous x, then the weight (when given; needed
 * for dx), the row mean (layernorm only) and the row rstd: f64 on the CPU; on
 * CUDA in the kernels' accumulation type (f32 for f32/bf16/f16 input, f64 for
 * f64), on the device.
 * i[0] = rms, i[1..3] = saved slots of weight, mean, rstd (-1: none). */
enum { N_RMS, N_W, N_MEAN, N_RSTD };

/* A contiguous copy of t in dtype dt (t itself when it already is both; NULL
 * stays NULL), released with fg__unref. */
static fg_tensor *contig_as(const char *op, fg_tensor *t, fg_dtype dt, bool *failed)
{
    if (!t) return NULL;
    fg_tensor *c = NULL;
    if (t->dtype == dt) {
        c = fg__contig(t);
    } else if ((c = fg__new(op, t->ndim, t->shape, dt, t->device))) {
        fg_keep(c);
        if (fg__copy_elements(c, t) != FG_OK) {
            fg__unref(c);
            c = NULL;
        }
    }
    if (!c) *failed = true;
    return c;
}

static fg_status cuda_norm_backward(fg_node *n, fg_tensor *x, fg_tensor *w, fg_tensor *mean, fg_tensor *rstd,
                                    fg_tensor *g, fg_tensor *gx, fg_tensor *gw, fg_tensor *gb, bool rms)
{
    int64_t D = x->shape[x->ndim - 1], rows = rstd->numel;
    (void)D, (void)rows; /* FG_CUDA_CALL drops the call in CPU-only builds */
    bool failed = false;
    fg_tensor *wc = contig_as(n->name, w, x->dtype, &failed);
    fg_tensor *scratch = NULL;
#ifdef FG_HAVE_CUDA
    int64_t bytes = (gw || gb) ? fg_k_layernorm_bwd_scratch((int)x->dtype, rows, D) : 0;
#else
    int64_t bytes = 0; /* unreachable: no CUDA tensor exists in this build */
#endif
    if (!failed && bytes > 0) {
        int64_t words = (bytes + 7) / 8;
        scratch = fg__new(n->name, 1, &words, FG_F64, x->device);
        failed = !scratch;
    }
    fg_status st = failed ? fg_last_status()
                          : FG_CUDA_CALL(n->name, fg_k_layernorm_bwd(fg__data(x), wc ? fg__data(wc) : NULL,
                                                                     mean ? fg__data(mean) : NULL, fg__data(rstd),
                                                                     fg__data(g), gx ? fg__data(gx) : NULL,
                                                                     gw ? fg__data(gw) : NULL, gb ? fg__data(gb) : NULL,
                                                                     (int)x->dtype, rows, D, rms,
                                                                     scratch ? fg__data(scratch) : NULL,
                                                                     fg__cuda_stream()));
    fg_free(scratch);
    fg__unref(wc);
    return st;
}

static fg_status norm_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    bool rms = n->i[N_RMS] != 0;
    fg_tensor *x = n->saved[0];
    fg_tensor *w = n->i[N_W] >= 0 ? n->saved[n->i[N_W]] : NULL;
    fg_tensor *mean = n->i[N_MEAN] >= 0 ? n->saved[n->i[N_MEAN]] : NULL;
    fg_tensor *rstd = n->saved[n->i[N_RSTD]];
    if (x->device == FG_CPU ? !fg__check_cpu(n->name, go[0]) : go[0]->device != x->device) {
        if (x->device != FG_CPU) {
            char b[128];
            fg__err(FG_ERR_DEVICE, "%s backward: gradient %s on %s, expected %s", n->name,
                    fg_shape_str(go[0], b, sizeof b), fg_device_name(go[0]->device), fg_device_name(x->device));
        }
        return fg_last_status();
    }
    int64_t D = x->shape[x->ndim - 1];
    bool failed = false;
    fg_tensor *g = x->device == FG_CPU ? fg__contig(go[0]) : contig_as(n->name, go[0], x->dtype, &failed);
    if (!g) return fg_last_status();
    bool want_w = n->n_inputs > 1 && n->edges[1].needs_grad, want_b = n->n_inputs > 2 && n->edges[2].needs_grad;
    fg_tensor *gx = n->edges[0].needs_grad ? fg__new(n->name, x->ndim, x->shape, x->dtype, x->device) : NULL;
    fg_tensor *gw = want_w ? fg__new(n->name, 1, &D, n->edges[1].dtype, n->edges[1].device) : NULL;
    fg_tensor *gb = want_b ? fg__new(n->name, 1, &D, n->edges[2].dtype, n->edges[2].device) : NULL;
    fg_status st = FG_OK;
    if ((n->edges[0].needs_grad && !gx) || (want_w && !gw) || (want_b && !gb))
        st = fg_last_status();
    else if (x->device == FG_CPU)
        st = fg_cpu_layernorm_grad(gx, gw, gb, x, w, mean, rstd, g, rms);
    else
        st = cuda_norm_backward(n, x, w, mean, rstd, g, gx, gw, gb, rms);
    fg__unref(g);
    gi[0] = gx;
    if (n->n_inputs > 1) gi[1] = gw;
    if (n->n_inputs > 2) gi[2] = gb;
    return st;
}

static fg_tensor *norm_impl(const char *op, fg_tensor *x, fg_tensor *weight, fg_tensor *bias, double eps, bool rms)
{
    char bx[128], bp[128];
    if (!x) { fg__err_null(op, "input"); return NULL; }
    if (!fg__check_float(op, x)) return NULL;
    if (x->ndim == 0) {
        fg__err(FG_ERR_DIM, "%s: input must have at least 1 dim (it normalises over the last), got a 0-d tensor", op);
        return NULL;
    }
    if (!(eps >= 0.0) || !isfinite(eps)) {
        fg__err(FG_ERR_INVALID, "%s: eps must be finite and >= 0, got %g", op, eps);
        return NULL;
    }
    int64_t D = x->shape[x->ndim - 1];
    fg_tensor *params[2] = {weight, bias};
    static const char *pname[2] = {"weight", "bias"};
    for (int k = 0; k < 2; k++) {
        fg_tensor *p = params[k];
        if (!p) continue;
        if (!fg__check_same(op, x, p)) return NULL;
        if (p->ndim != 1 || p->shape[0] != D) {
            fg__err(FG_ERR_SHAPE, "%s: %s %s does not match last dim %lld of input %s", op, pname[k],
                    fg_shape_str(p, bp, sizeof bp), (long long)D, fg_shape_str(x, bx, sizeof bx));
            return NULL;
        }
    }
    int64_t rows = 1; /* the product of the leading dims (also right when D == 0) */
    for (int d = 0; d < x->ndim - 1; d++) rows *= x->shape[d];

    bool cuda = x->device != FG_CPU;
    /* The saved row statistics: f64 on the CPU, the kernels' accumulation type on CUDA. */
    fg_dtype stat_dt = cuda && x->dtype != FG_F64 ? FG_F32 : FG_F64;
    fg_tensor *xc = fg__contig(x);
    fg_tensor *out = xc ? fg__new_like(op, x) : NULL;
    fg_tensor *mean = out && !rms ? fg__new(op, 1, &rows, stat_dt, x->device) : NULL; /* (rows) */
    fg_tensor *rstd = out && (rms || mean) ? fg__new(op, 1, &rows, stat_dt, x->device) : NULL;
    if (!rstd) {
        fg__unref(xc);
        fg_free(out);
        fg_free(mean);
        return NULL;
    }
    if (!cuda) {
        fg_cpu_layernorm(out, mean, rstd, xc, weight, bias, eps, rms);
    } else {
        /* weight/bias may be strided views: the kernels read them contiguous. */
        bool failed = false;
        fg_tensor *wc = contig_as(op, weight, x->dtype, &failed), *bc = contig_as(op, bias, x->dtype, &failed);
        fg_status st = failed ? fg_last_status()
                              : FG_CUDA_CALL(op, fg_k_layernorm_fwd(fg__data(xc), wc ? fg__data(wc) : NULL,
                                                                    bc ? fg__data(bc) : NULL, fg__data(out),
                                                                    mean ? fg__data(mean) : NULL, fg__data(rstd),
                                                                    (int)x->dtype, rows, D, eps, rms,
                                                                    fg__cuda_stream()));
        fg__unref(wc);
        fg__unref(bc);
        if (st != FG_OK) {
            fg__unref(xc);
            fg_free(out);
            fg_free(mean);
            fg_free(rstd);
            return NULL;
        }
    }

    fg_tensor *in[3] = {x, weight, bias};
    int n_in = rms ? 2 : 3;
    if (fg__any_requires_grad(n_in, in)) {
        fg_node *node = fg__record(op, norm_backward, n_in, in, 1, &out);
        bool ok = node && fg__save(node, xc) == 0;
        if (ok) {
            node->i[N_RMS] = rms;
            node->i[N_W] = weight ? fg__save(node, weight) : -1;
            node->i[N_MEAN] = mean ? fg__save(node, mean) : -1;
            node->i[N_RSTD] = fg__save(node, rstd);
            ok = (!weight || node->i[N_W] >= 0) && (!mean || node->i[N_MEAN] >= 0) && node->i[N_RSTD] >= 0;
        }
        if (!ok) {
            fg_free(out);
            out = NULL;
            fg__err(FG_ERR_OOM, "%s: out of memory recording backward", op);
        }
    }
    /* The node holds its own aliases of what it saved. */
    fg__unref(xc);
    fg_free(mean);
    fg_free(rstd);
    return out;
}

fg_tensor *fg_layernorm(fg_tensor *x, fg_tensor *weight, fg_tensor *bias, double eps)
{
    return norm_impl("layernorm", x, weight, bias, eps, false);
}

fg_tensor *fg_rmsnorm(fg_tensor *x, fg_tensor *weight, double eps)
{
    return norm_impl("rmsnorm", x, weight, NULL, eps, true);
}
