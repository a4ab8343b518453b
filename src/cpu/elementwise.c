/* Elementwise CPU kernels and the scalar derivative table the backward uses. */
#include "cpu/cpu.h"

#define SQRT_2_OVER_PI 0.7978845608028654
#define INV_SQRT_2 0.7071067811865476
#define INV_SQRT_2PI 0.3989422804014327

double fg_unary_value(fg_unary_op op, double x, double s)
{
    switch (op) {
    case FG_UN_NEG: return -x;
    case FG_UN_EXP: return exp(x);
    case FG_UN_LOG: return log(x);
    case FG_UN_SQRT: return sqrt(x);
    case FG_UN_RSQRT: return 1.0 / sqrt(x);
    case FG_UN_ABS: return fabs(x);
    case FG_UN_TANH: return tanh(x);
    case FG_UN_SIGMOID: return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
    case FG_UN_RELU: return x > 0 ? x : 0.0;
    case FG_UN_GELU_TANH: return 0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
    case FG_UN_GELU_ERF: return 0.5 * x * (1.0 + erf(x * INV_SQRT_2));
    case FG_UN_SILU: return x * fg_unary_value(FG_UN_SIGMOID, x, 0);
    case FG_UN_ADD_SCALAR: return x + s;
    case FG_UN_MUL_SCALAR: return x * s;
    case FG_UN_POW_SCALAR: return pow(x, s);
    case FG_UN_RSUB_SCALAR: return s - x;
    case FG_UN_RDIV_SCALAR: return s / x;
    }
    return NAN;
}

double fg_unary_deriv(fg_unary_op op, double x, double y, double s)
{
    switch (op) {
    case FG_UN_NEG: return -1.0;
    case FG_UN_EXP: return y;
    case FG_UN_LOG: return 1.0 / x;
    case FG_UN_SQRT: return 0.5 / y;
    case FG_UN_RSQRT: return -0.5 * y * y * y;
    case FG_UN_ABS: return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0;
    case FG_UN_TANH: return 1.0 - y * y;
    case FG_UN_SIGMOID: return y * (1.0 - y);
    case FG_UN_RELU: return x > 0 ? 1.0 : 0.0;
    case FG_UN_GELU_TANH: {
        double u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
        double t = tanh(u);
        double du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du;
    }
    case FG_UN_GELU_ERF: return 0.5 * (1.0 + erf(x * INV_SQRT_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x);
    case FG_UN_SILU: {
        double sg = fg_unary_value(FG_UN_SIGMOID, x, 0);
        return sg * (1.0 + x * (1.0 - sg));
    }
    case FG_UN_ADD_SCALAR: return 1.0;
    case FG_UN_MUL_SCALAR: return s;
    case FG_UN_POW_SCALAR: return s == 0 ? 0.0 : s * pow(x, s - 1.0);
    case FG_UN_RSUB_SCALAR: return -1.0;
    case FG_UN_RDIV_SCALAR: return -s / (x * x);
    }
    return NAN;
}

static inline double binary_value(fg_binary_op op, double a, double b)
{
    switch (op) {
    case FG_BIN_ADD: return a + b;
    case FG_BIN_SUB: return a - b;
    case FG_BIN_MUL: return a * b;
    case FG_BIN_DIV: return a / b;
    case FG_BIN_POW: return pow(a, b);
    case FG_BIN_GT: return a > b ? 1.0 : 0.0;
    case FG_BIN_EQ: return a == b ? 1.0 : 0.0;
    }
    return NAN;
}

void fg_cpu_binary(fg_binary_op op, fg_tensor *out, const fg_tensor *a, const fg_tensor *b)
{
    int64_t sa[FG_MAX_DIMS], sb[FG_MAX_DIMS];
    fg__broadcast_strides(a, out->ndim, out->shape, sa);
    fg__broadcast_strides(b, out->ndim, out->shape, sb);
    const int64_t *st[3] = {out->stride, sa, sb};
    fg_iter it;
    fg__iter_init(&it, out->ndim, out->shape, 3, st);
    char *po = fg__data(out);
    const char *pa = fg__data(a), *pb = fg__data(b);
    /* Integer adds, multiplies and comparisons stay exact in int64 (doubles lose
     * bits past 2^53); arithmetic wraps (two's complement) instead of overflowing. */
    bool int64_exact = out->dtype == FG_I64 && op != FG_BIN_DIV && op != FG_BIN_POW;
    for (int64_t i = 0; i < out->numel; i++, fg__iter_next(&it)) {
        if (int64_exact) {
            int64_t x = ((const int64_t *)pa)[it.off[1]], y = ((const int64_t *)pb)[it.off[2]];
            uint64_t ux = (uint64_t)x, uy = (uint64_t)y;
            ((int64_t *)po)[it.off[0]] = op == FG_BIN_ADD ? (int64_t)(ux + uy)
                                         : op == FG_BIN_SUB ? (int64_t)(ux - uy)
                                         : op == FG_BIN_MUL ? (int64_t)(ux * uy)
                                         : op == FG_BIN_GT  ? (x > y)
                                                            : (x == y);
            continue;
        }
        double x = fg__ld(pa, a->dtype, it.off[1]), y = fg__ld(pb, b->dtype, it.off[2]);
        fg__st(po, out->dtype, it.off[0], binary_value(op, x, y));
    }
}

void fg_cpu_unary(fg_unary_op op, fg_tensor *out, const fg_tensor *a, double s)
{
    const int64_t *st[2] = {out->stride, a->stride};
    fg_iter it;
    fg__iter_init(&it, out->ndim, out->shape, 2, st);
    char *po = fg__data(out);
    const char *pa = fg__data(a);
    /* neg / abs / relu keep i64 and must not round through double. */
    bool int64_exact = out->dtype == FG_I64 && a->dtype == FG_I64 &&
                       (op == FG_UN_NEG || op == FG_UN_ABS || op == FG_UN_RELU);
    for (int64_t i = 0; i < out->numel; i++, fg__iter_next(&it)) {
        if (int64_exact) {
            int64_t x = ((const int64_t *)pa)[it.off[1]];
            uint64_t neg = 0 - (uint64_t)x; /* wraps for INT64_MIN as two's complement does */
            ((int64_t *)po)[it.off[0]] = op == FG_UN_NEG ? (int64_t)neg
                                         : op == FG_UN_ABS ? (x < 0 ? (int64_t)neg : x)
                                                           : (x > 0 ? x : 0);
            continue;
        }
        fg__st(po, out->dtype, it.off[0], fg_unary_value(op, fg__ld(pa, a->dtype, it.off[1]), s));
    }
}

void fg_cpu_unary_grad(fg_unary_op op, fg_tensor *gx, const fg_tensor *x, const fg_tensor *y, const fg_tensor *gy,
                       double s)
{
    const int64_t *st[4] = {gx->stride, x->stride, y->stride, gy->stride};
    fg_iter it;
    fg__iter_init(&it, gx->ndim, gx->shape, 4, st);
    char *pg = fg__data(gx);
    const char *px = fg__data(x), *py = fg__data(y), *pgy = fg__data(gy);
    for (int64_t i = 0; i < gx->numel; i++, fg__iter_next(&it)) {
        double xv = fg__ld(px, x->dtype, it.off[1]), yv = fg__ld(py, y->dtype, it.off[2]);
        fg__st(pg, gx->dtype, it.off[0], fg__ld(pgy, gy->dtype, it.off[3]) * fg_unary_deriv(op, xv, yv, s));
    }
}

void fg_cpu_where(fg_tensor *out, const fg_tensor *cond, const fg_tensor *a, const fg_tensor *b)
{
    int64_t sc[FG_MAX_DIMS], sa[FG_MAX_DIMS], sb[FG_MAX_DIMS];
    fg__broadcast_strides(cond, out->ndim, out->shape, sc);
    fg__broadcast_strides(a, out->ndim, out->shape, sa);
    fg__broadcast_strides(b, out->ndim, out->shape, sb);
    const int64_t *st[4] = {out->stride, sc, sa, sb};
    fg_iter it;
    fg__iter_init(&it, out->ndim, out->shape, 4, st);
    char *po = fg__data(out);
    const char *pc = fg__data(cond), *pa = fg__data(a), *pb = fg__data(b);
    for (int64_t i = 0; i < out->numel; i++, fg__iter_next(&it)) {
        bool c = fg__ld(pc, cond->dtype, it.off[1]) != 0.0;
        /* a, b and out share a dtype (the op checks it): move the bits, so i64
         * beyond 2^53 and NaN payloads pass unchanged. */
        size_t es = fg_dtype_size(out->dtype);
        memcpy(po + (size_t)it.off[0] * es, c ? pa + (size_t)it.off[2] * es : pb + (size_t)it.off[3] * es, es);
    }
}
