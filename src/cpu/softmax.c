/* Softmax, log-softmax and cross-entropy on the CPU. Every row is shifted by
 * its max before exp, so logits of any magnitude give finite results; sums
 * accumulate in double. */
#include "cpu/cpu_nn.h"

fg_softmax_dims fg_softmax_dims_of(const fg_tensor *t, int dim)
{
    fg_softmax_dims s = {1, 1, 1};
    if (t->ndim == 0) return s; /* a scalar is one row of one element */
    for (int d = 0; d < dim; d++) s.outer *= t->shape[d];
    s.n = t->shape[dim];
    for (int d = dim + 1; d < t->ndim; d++) s.inner *= t->shape[d];
    return s;
}

/* max and sum(exp(x - max)) of row (o, ., i) of a (outer, n, inner) block. */
static void row_stats(const char *p, fg_dtype dt, int64_t base, int64_t n, int64_t step, double *max, double *sum)
{
    double m = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        double x = fg__ld(p, dt, base + j * step);
        if (x > m || isnan(x)) m = x; /* NaN wins so it propagates to the whole row */
    }
    double s = 0;
    for (int64_t j = 0; j < n; j++) s += exp(fg__ld(p, dt, base + j * step) - m);
    *max = m;
    *sum = s;
}

void fg_cpu_softmax(fg_tensor *out, const fg_tensor *in, int dim, bool log_out)
{
    fg_softmax_dims s = fg_softmax_dims_of(in, dim);
    const char *pi = fg__data(in);
    char *po = fg__data(out);
    for (int64_t o = 0; o < s.outer; o++)
        for (int64_t i = 0; i < s.inner; i++) {
            int64_t base = o * s.n * s.inner + i;
            double m, sum;
            row_stats(pi, in->dtype, base, s.n, s.inner, &m, &sum);
            double ls = log_out ? log(sum) : 0; /* log(sum) once per row */
            for (int64_t j = 0; j < s.n; j++) {
                int64_t k = base + j * s.inner;
                double z = fg__ld(pi, in->dtype, k) - m;
                fg__st(po, out->dtype, k, log_out ? z - ls : exp(z) / sum);
            }
        }
}

void fg_cpu_softmax_grad(fg_tensor *gx, const fg_tensor *y, const fg_tensor *gy, int dim, bool log_out)
{
    fg_softmax_dims s = fg_softmax_dims_of(y, dim);
    const char *py = fg__data(y), *pg = fg__data(gy);
    char *px = fg__data(gx);
    for (int64_t o = 0; o < s.outer; o++)
        for (int64_t i = 0; i < s.inner; i++) {
            int64_t base = o * s.n * s.inner + i;
            /* softmax needs sum(g y); log_softmax needs sum(g). */
            double acc = 0;
            for (int64_t j = 0; j < s.n; j++) {
                int64_t k = base + j * s.inner;
                double g = fg__ld(pg, gy->dtype, k);
                acc += log_out ? g : g * fg__ld(py, y->dtype, k);
            }
            for (int64_t j = 0; j < s.n; j++) {
                int64_t k = base + j * s.inner;
                double g = fg__ld(pg, gy->dtype, k), yv = fg__ld(py, y->dtype, k);
                fg__st(px, gx->dtype, k, log_out ? g - exp(yv) * acc : yv * (g - acc));
            }
        }
}

int64_t fg_cpu_first_out_of_range(const fg_tensor *idx, int64_t n, bool skip_ignored, int64_t ignore,
                                  int64_t *n_valid)
{
    const void *p = fg__data(idx);
    int64_t valid = 0;
    for (int64_t k = 0; k < idx->numel; k++) {
        int64_t v = fg__ld_index(p, idx->dtype, k);
        if (skip_ignored && v == ignore) continue;
        if (v < 0 || v >= n) return k;
        valid++;
    }
    if (n_valid) *n_valid = valid;
    return -1;
}

void fg_cpu_cross_entropy(fg_tensor *out, const fg_tensor *logits, const fg_tensor *targets, int64_t ignore_index,
                          fg_reduction reduction, int64_t n_valid)
{
    int64_t N = logits->shape[0], C = logits->shape[1];
    const char *pl = fg__data(logits), *pt = fg__data(targets);
    char *po = fg__data(out);
    double total = 0;
    for (int64_t r = 0; r < N; r++) {
        int64_t t = fg__ld_index(pt, targets->dtype, r);
        double loss = 0;
        if (t != ignore_index) {
            double m, sum;
            row_stats(pl, logits->dtype, r * C, C, 1, &m, &sum);
            /* -log softmax_t = logsumexp - x_t = (m - x_t) + log(sum) */
            loss = (m - fg__ld(pl, logits->dtype, r * C + t)) + log(sum);
        }
        if (reduction == FG_REDUCE_NONE)
            fg__st(po, out->dtype, r, loss);
        else
            total += loss;
    }
    if (reduction == FG_REDUCE_MEAN) total = n_valid ? total / (double)n_valid : 0.0;
    if (reduction != FG_REDUCE_NONE) fg__st(po, out->dtype, 0, total);
}

void fg_cpu_cross_entropy_grad(fg_tensor *gx, const fg_tensor *logits, const fg_tensor *targets,
                               int64_t ignore_index, const fg_tensor *gy, double factor)
{
    int64_t N = logits->shape[0], C = logits->shape[1];
    const char *pl = fg__data(logits), *pt = fg__data(targets), *pg = fg__data(gy);
    char *px = fg__data(gx);
    for (int64_t r = 0; r < N; r++) {
        int64_t t = fg__ld_index(pt, targets->dtype, r);
        if (t == ignore_index) {
            for (int64_t j = 0; j < C; j++) fg__st(px, gx->dtype, r * C + j, 0.0);
            continue;
        }
        double s = factor * fg__ld(pg, gy->dtype, gy->ndim == 0 ? 0 : r);
        double m, sum;
        row_stats(pl, logits->dtype, r * C, C, 1, &m, &sum);
        for (int64_t j = 0; j < C; j++) {
            double p = exp(fg__ld(pl, logits->dtype, r * C + j) - m) / sum;
            fg__st(px, gx->dtype, r * C + j, s * (p - (j == t ? 1.0 : 0.0)));
        }
    }
}
