/* Layer/RMS norm on the CPU. Row statistics and every accumulation are in
 * double; the result is rounded once on store. */
#include <stdlib.h>
#include "cpu/cpu_nn.h"

/* Element j of a 1-d (possibly strided) parameter, or `dflt` when absent. */
static inline double param_at(const fg_tensor *p, int64_t j, double dflt)
{
    return p ? fg__ld(fg__data(p), p->dtype, j * p->stride[0]) : dflt;
}

void fg_cpu_layernorm(fg_tensor *out, fg_tensor *mean, fg_tensor *rstd, const fg_tensor *x, const fg_tensor *w,
                      const fg_tensor *b, double eps, bool rms)
{
    int64_t D = x->shape[x->ndim - 1], rows = rstd->numel;
    const char *px = fg__data(x);
    char *po = fg__data(out);
    double *pm = rms ? NULL : fg__data(mean), *pr = fg__data(rstd);
    for (int64_t r = 0; r < rows; r++) {
        const int64_t base = r * D;
        double mu = 0, var = 0;
        if (!rms) {
            for (int64_t j = 0; j < D; j++) mu += fg__ld(px, x->dtype, base + j);
            mu = D ? mu / (double)D : 0.0;
        }
        /* Two passes (centre first): no cancellation for rows with a large mean. */
        for (int64_t j = 0; j < D; j++) {
            double c = fg__ld(px, x->dtype, base + j) - mu;
            var += c * c;
        }
        var = D ? var / (double)D : 0.0;
        double rs = 1.0 / sqrt(var + eps);
        if (pm) pm[r] = mu;
        pr[r] = rs;
        for (int64_t j = 0; j < D; j++) {
            double y = (fg__ld(px, x->dtype, base + j) - mu) * rs * param_at(w, j, 1.0) + param_at(b, j, 0.0);
            fg__st(po, out->dtype, base + j, y);
        }
    }
}

fg_status fg_cpu_layernorm_grad(fg_tensor *gx, fg_tensor *gw, fg_tensor *gb, const fg_tensor *x,
                                const fg_tensor *w, const fg_tensor *mean, const fg_tensor *rstd,
                                const fg_tensor *gy, bool rms)
{
    int64_t D = x->shape[x->ndim - 1], rows = rstd->numel;
    double *aw = gw ? calloc((size_t)(D ? D : 1), sizeof *aw) : NULL;
    double *ab = gb ? calloc((size_t)(D ? D : 1), sizeof *ab) : NULL;
    if ((gw && !aw) || (gb && !ab)) {
        free(aw);
        free(ab);
        return fg__err(FG_ERR_OOM, "%s backward: out of memory for %lld accumulators", rms ? "rmsnorm" : "layernorm",
                       (long long)D);
    }
    const char *px = fg__data(x), *pg = fg__data(gy);
    const double *pm = rms ? NULL : fg__data(mean), *pr = fg__data(rstd);
    char *pgx = gx ? fg__data(gx) : NULL;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t base = r * D;
        double mu = pm ? pm[r] : 0.0, rs = pr[r];
        if (gx) {
            /* With xh = (x - mu) rstd and dxh = gy w:
             *   layernorm gx = rstd (dxh - mean(dxh) - xh mean(dxh xh))
             *   rmsnorm   gx = rstd (dxh - xh mean(dxh xh))  (no mean to subtract) */
            double s1 = 0, s2 = 0;
            for (int64_t j = 0; j < D; j++) {
                double xh = (fg__ld(px, x->dtype, base + j) - mu) * rs;
                double dxh = fg__ld(pg, gy->dtype, base + j) * param_at(w, j, 1.0);
                s1 += dxh;
                s2 += dxh * xh;
            }
            double m1 = rms ? 0.0 : s1 / (double)D, m2 = s2 / (double)D;
            for (int64_t j = 0; j < D; j++) {
                double xh = (fg__ld(px, x->dtype, base + j) - mu) * rs;
                double dxh = fg__ld(pg, gy->dtype, base + j) * param_at(w, j, 1.0);
                fg__st(pgx, gx->dtype, base + j, rs * (dxh - m1 - xh * m2));
            }
        }
        for (int64_t j = 0; j < D && (aw || ab); j++) {
            double g = fg__ld(pg, gy->dtype, base + j);
            if (aw) aw[j] += g * (fg__ld(px, x->dtype, base + j) - mu) * rs;
            if (ab) ab[j] += g;
        }
    }
    for (int64_t j = 0; j < D; j++) {
        if (aw) fg__st(fg__data(gw), gw->dtype, j, aw[j]);
        if (ab) fg__st(fg__data(gb), gb->dtype, j, ab[j]);
    }
    free(aw);
    free(ab);
    return FG_OK;
}
