/* CPU reference of the optimizer updates (src/cpu/cpu_optim.h). One loop body
 * per update, instantiated for float and double storage; the math is in
 * double. For f32 the per-step scalars are rounded to float first, since the
 * GPU kernels receive them as float: both sides then apply the same numbers
 * and differ only by the rounding of the arithmetic (an ulp or two a step). */
#include "cpu/cpu_optim.h"

static double scal(fg_dtype dt, double x) { return dt == FG_F32 ? (double)(float)x : x; }

#define ADAMW_LOOP(T)                                                              \
    do {                                                                           \
        T *P = p, *M = m, *V = v;                                                  \
        const T *G = g;                                                            \
        for (int64_t i = 0; i < n; i++) {                                          \
            const double gi = G[i];                                                \
            double pi = P[i];                                                      \
            if (decay) pi *= dmul;                                                 \
            const double mi = (T)(b1 * M[i] + omb1 * gi); /* the stored values */  \
            const double vi = (T)(b2 * V[i] + omb2 * gi * gi);                     \
            P[i] = (T)(pi - step * mi / (sqrt(vi) / bc2s + eps));                  \
            M[i] = (T)mi;                                                          \
            V[i] = (T)vi;                                                          \
        }                                                                          \
    } while (0)

void fg_cpu_adamw(fg_dtype dt, void *p, const void *g, void *m, void *v, int64_t n, bool decay,
                  const fg_cpu_adamw_hyper *h)
{
    const double b1 = scal(dt, h->beta1), omb1 = scal(dt, 1.0 - h->beta1), b2 = scal(dt, h->beta2),
                 omb2 = scal(dt, 1.0 - h->beta2), eps = scal(dt, h->eps), step = scal(dt, h->step_size),
                 bc2s = scal(dt, h->bc2_sqrt), dmul = scal(dt, h->decay_mul);
    if (dt == FG_F32)
        ADAMW_LOOP(float);
    else
        ADAMW_LOOP(double);
}

#define SGD_LOOP(T)                                                                \
    do {                                                                           \
        T *P = p, *M = m;                                                          \
        const T *G = g;                                                            \
        for (int64_t i = 0; i < n; i++) {                                          \
            double d = decay ? G[i] + wd * P[i] : G[i];                            \
            if (mom) {                                                             \
                const double mi = (T)(mu * M[i] + d); /* the stored buffer */      \
                M[i] = (T)mi;                                                      \
                d = h->nesterov ? d + mu * mi : mi;                                \
            }                                                                      \
            P[i] = (T)(P[i] - lr * d);                                             \
        }                                                                          \
    } while (0)

void fg_cpu_sgd(fg_dtype dt, void *p, const void *g, void *m, int64_t n, bool decay, const fg_cpu_sgd_hyper *h)
{
    const double lr = scal(dt, h->lr), mu = scal(dt, h->momentum), wd = scal(dt, h->weight_decay);
    const bool mom = h->momentum != 0.0;
    if (dt == FG_F32)
        SGD_LOOP(float);
    else
        SGD_LOOP(double);
}

double fg_cpu_sq_norm(fg_dtype dt, const void *g, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double x = fg__ld(g, dt, i);
        s += x * x;
    }
    return s;
}

void fg_cpu_scale(fg_dtype dt, void *g, int64_t n, double coef)
{
    const double c = dt == FG_F64 ? coef : (double)(float)coef;
    for (int64_t i = 0; i < n; i++) fg__st(g, dt, i, fg__ld(g, dt, i) * c);
}
