/* Suite "cuda_elementwise": the elementwise and reduction families on CUDA
 * tensors against the CPU reference, forward and backward. Every case makes
 * random inputs on the CPU, copies them to the GPU, runs the same expression on
 * both and compares the results (backward: fg_grad of the leaves, after the same
 * loss on both devices). Inputs come contiguous or as views of a larger base
 * made the same way on both devices (transposed, sliced with an element offset
 * so the 16-byte path is refused, stepped), with shapes that are not multiples
 * of 4 or 8 (vector tails), broadcast shapes such as (3, 1, 129) with (5, 129),
 * 0-d tensors and 2^20 + 3 elements. Reductions cover row (warp and block per
 * row, split over blocks) and column kernels, several reduced dims at once and
 * empty reductions.
 *
 * Tolerances: |cuda - cpu| <= atol + rtol |cpu|, with atol scaled by max |cpu|
 * of the tensor compared (gradients mix values of very different sizes).
 *  - f32: the GPU computes in float (CUDA's expf/tanhf/erfcf/powf are within
 *    2-4 ulps), the CPU in double, each rounding once; emulating the kernels'
 *    formulas in float on the CPU gave at most ~1.5e-6 relative error on inputs
 *    in [-6, 6] (gelu for negative x, where the result is small) and absolute
 *    errors far under 1e-6 |max|. Forward rtol 2e-6, atol 1e-6 max|ref|. The
 *    backward chains several rounded ops (e.g. pow's b a^(b-1) go): rtol 5e-6,
 *    atol 2e-6 max|ref|. Sums accumulate in double on both sides.
 *  - f64: both sides in double; only libm differences and rearranged formulas
 *    (stable sigmoid/gelu forms, summation order): 1e-12.
 *  - bf16 / f16: both sides read the same rounded inputs and round once, but a
 *    float result can land on the other side of a rounding boundary than the
 *    double one: one ulp, at most 2^-7 (bf16) / 2^-10 (f16) relative (atol
 *    1e-5 max|ref| only for f16 subnormals). The backward rounds at every op of
 *    the chain on both sides, and later ops read values that may already differ
 *    by that ulp: two ulps, 2^-6 / 2^-9 (atol the same times max|ref|, for
 *    differences of nearly equal terms, e.g. the composite's h - mean(h)).
 *  - i32 / i64, max values and argmax indices, where/masked_fill: exact. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "cudatest.h"

#if defined(__GNUC__)
#define FG_TEST_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FG_TEST_PRINTF(a, b)
#endif

/* Library internals the bandwidth reference uses (exported, as in test_cuda_matmul). */
fg_status fg__cuda_malloc(void **p, size_t nbytes);
void fg__cuda_free(void *p, size_t nbytes);
fg_status fg__cuda_memcpy_d2d(void *dst, const void *src, size_t n);

typedef struct {
    double atol, rtol;
} tol_t;

static tol_t tol_of(fg_dtype dt, bool bwd)
{
    switch (dt) {
    case FG_F32: return bwd ? (tol_t){2e-6, 5e-6} : (tol_t){1e-6, 2e-6};
    case FG_F64: return (tol_t){1e-12, 1e-12};
    case FG_BF16: return bwd ? (tol_t){1.0 / 64, 1.0 / 64} : (tol_t){1e-5, 1.0 / 128};
    case FG_F16: return bwd ? (tol_t){1.0 / 512, 1.0 / 512} : (tol_t){1e-5, 1.0 / 1024};
    default: return (tol_t){0, 0};
    }
}

static const fg_dtype float_dtypes[] = {FG_F32, FG_F64, FG_BF16, FG_F16};
static const fg_dtype all_dtypes[] = {FG_F32, FG_F64, FG_BF16, FG_F16, FG_I32, FG_I64};
#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

static bool quick(void) { return getenv("FG_TEST_QUICK") != NULL; }
static const int64_t kLarge = (1 << 20) + 3;

static double max_abs(const fg_tensor *t)
{
    int64_t n = fg_numel(t);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(fg_to_f64_array(t, v, n), FG_OK);
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(v[i]) && fabs(v[i]) > m) m = fabs(v[i]);
    free(v);
    return m;
}

/* Failures are counted and printed, not fatal: with CK_NOFORK a failed assertion
 * ends the whole test function, and one bad case must not hide the rest of a
 * sweep. Every test ends with ck_no_failures(). */
static int g_failures;
static char g_first_failure[600];

static void soft_fail(const char *fmt, ...) FG_TEST_PRINTF(1, 2);
static void soft_fail(const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("FAIL: %s\n", msg);
    if (g_failures++ == 0) snprintf(g_first_failure, sizeof g_first_failure, "%s", msg);
}

static void ck_no_failures(void)
{
    int n = g_failures;
    g_failures = 0;
    ck_assert_msg(n == 0, "%d case(s) failed (all printed above); the first: %s", n, g_first_failure);
}

/* got: a CUDA tensor of ref's dtype and shape within atol + rtol |ref| of the CPU reference ref. */
static void ck_dev_tol(const fg_tensor *got, const fg_tensor *ref, double atol, double rtol, const char *what)
{
    if (!got || !ref) {
        soft_fail("%s: %s result is NULL: %s", what, got ? "CPU" : "CUDA", fg_last_error());
        return;
    }
    if (fg_device_of(got) != FG_CUDA) {
        soft_fail("%s: result is not on the GPU", what);
        return;
    }
    if (fg_dtype_of(got) != fg_dtype_of(ref)) {
        soft_fail("%s: dtype %s, expected %s", what, fg_dtype_name(fg_dtype_of(got)), fg_dtype_name(fg_dtype_of(ref)));
        return;
    }
    fg_compare_result r;
    if (fg_compare(got, ref, atol, rtol, &r) != FG_OK) {
        soft_fail("%s: compare failed: %s", what, fg_last_error());
        return;
    }
    if (!r.allclose)
        soft_fail("%s: %lld mismatches, max abs err %.3g at %lld, rel l2 %.3g (atol %g rtol %g)", what,
                  (long long)r.n_mismatch, r.max_abs_err, (long long)r.worst_index, r.rel_l2_err, atol, rtol);
}

/* The dtype's tolerance; atol scales with max(max |ref|, 1): every input is O(1), and
 * absolute rounding errors follow the size of the terms (the CPU's own gelu forms
 * cancel for negative x, so even the f64 reference is only good to ~1e-16 absolute
 * when the result is tiny). */
static void ck_dev(const fg_tensor *got, const fg_tensor *ref, bool bwd, const char *what)
{
    if (!got || !ref) {
        ck_dev_tol(got, ref, 0, 0, what);
        return;
    }
    tol_t t = tol_of(fg_dtype_of(ref), bwd);
    double m = t.atol > 0 ? max_abs(ref) : 0;
    ck_dev_tol(got, ref, t.atol * (m > 1 ? m : 1.0), t.rtol, what);
}

/* ---- inputs ---- */
typedef enum { V_UNIFORM, V_INTS, V_BIG } values_t; /* V_INTS: integer values in [lo, hi) in any dtype */
typedef enum { L_CONTIG, L_TRANSPOSE, L_SLICE, L_STEP, L_NLAYOUTS } layout_t;
static const char *layout_name[] = {"contiguous", "transposed", "sliced", "stepped"};

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Random CPU tensor. V_BIG: integers over the dtype's whole range (with its minimum
 * present), for exact wrap/saturation paths; floats fall back to V_UNIFORM. */
static fg_tensor *rnd(fg_generator *g, fg_dtype dt, values_t kind, int ndim, const int64_t *shape, double lo, double hi)
{
    fg_tensor *t = NULL;
    bool isf = fg_dtype_is_float(dt);
    if (kind == V_BIG && !isf) {
        static uint64_t seed = 12345;
        int64_t n = 1;
        for (int d = 0; d < ndim; d++) n *= shape[d];
        size_t es = fg_dtype_size(dt);
        char *buf = malloc((size_t)(n ? n : 1) * es);
        ck_assert_ptr_nonnull(buf);
        for (int64_t i = 0; i < n; i++) {
            uint64_t w = splitmix(&seed);
            if (i == 1) w = dt == FG_I32 ? 0x80000000ull : 0x8000000000000000ull; /* the minimum */
            if (dt == FG_I32) {
                int32_t v = (int32_t)(uint32_t)w;
                memcpy(buf + i * es, &v, es);
            } else {
                int64_t v = (int64_t)w;
                memcpy(buf + i * es, &v, es);
            }
        }
        t = fg_from_data(buf, ndim, shape, dt, FG_CPU);
        free(buf);
    } else if (kind == V_INTS || !isf) {
        fg_tensor *i = fg_randint(g, (int64_t)lo, (int64_t)hi, ndim, shape, FG_I64, FG_CPU);
        t = i ? fg_cast(i, dt) : NULL;
    } else {
        t = fg_uniform(g, lo, hi, ndim, shape, dt, FG_CPU);
    }
    ck_assert_msg(t != NULL, "random input: %s", fg_last_error());
    return t;
}

static fg_tensor *apply_layout(fg_tensor *t, layout_t lay, int ndim, const int64_t *shape)
{
    fg_tensor *v = t;
    if (lay == L_TRANSPOSE) v = fg_transpose(t, ndim - 2, ndim - 1);
    if (lay == L_SLICE) v = fg_narrow(t, ndim - 1, 1, shape[ndim - 1]);
    if (lay == L_STEP) v = fg_slice(t, 0, 0, 2 * shape[0], 2);
    ck_assert_msg(v != NULL, "layout %s: %s", layout_name[lay], fg_last_error());
    return v;
}

/* The same values on both devices: cpu/dev have `shape` and layout `lay`, views of
 * the leaves (which require grad when asked). */
typedef struct {
    fg_tensor *cpu, *dev, *leaf_cpu, *leaf_dev;
} pair_t;

static pair_t make_pair(fg_generator *g, fg_dtype dt, values_t kind, layout_t lay, int ndim, const int64_t *shape,
                        double lo, double hi, bool grad)
{
    if (lay == L_TRANSPOSE && ndim < 2) lay = L_CONTIG;
    if ((lay == L_SLICE || lay == L_STEP) && ndim < 1) lay = L_CONTIG;
    int64_t bs[FG_MAX_DIMS];
    memcpy(bs, shape, (size_t)ndim * sizeof *bs);
    if (lay == L_TRANSPOSE) {
        bs[ndim - 2] = shape[ndim - 1];
        bs[ndim - 1] = shape[ndim - 2];
    }
    if (lay == L_SLICE) bs[ndim - 1] += 3;
    if (lay == L_STEP) bs[0] *= 2;
    pair_t p;
    p.leaf_cpu = rnd(g, dt, kind, ndim, bs, lo, hi);
    if (grad) ck_assert_int_eq(fg_set_requires_grad(p.leaf_cpu, true), FG_OK);
    p.leaf_dev = to_cuda(p.leaf_cpu, grad);
    p.cpu = apply_layout(p.leaf_cpu, lay, ndim, shape);
    p.dev = apply_layout(p.leaf_dev, lay, ndim, shape);
    return p;
}

/* loss = sum(y * w) with w random (fixed per call, same on both devices), or plain
 * sum(y) when w_kind is 0 (then the gradient reaching y is an expanded, stride-0 one). */
static void backward_both(fg_generator *g, fg_tensor *y_cpu, fg_tensor *y_dev, bool weighted)
{
    if (!y_cpu || !y_dev) {
        soft_fail("forward for backward failed: %s", fg_last_error());
        return;
    }
    fg_tensor *lc = y_cpu, *ld = y_dev;
    if (weighted) {
        fg_tensor *w = rnd(g, fg_dtype_of(y_cpu), V_UNIFORM, fg_ndim(y_cpu), fg_shape(y_cpu), -1, 1);
        lc = fg_mul(y_cpu, w);
        ld = fg_mul(y_dev, to_cuda(w, false));
    }
    lc = fg_sum_all(lc);
    ld = fg_sum_all(ld);
    if (!lc || !ld) {
        soft_fail("loss: %s", fg_last_error());
        return;
    }
    if (fg_backward(lc) != FG_OK) soft_fail("cpu backward: %s", fg_last_error());
    if (fg_backward(ld) != FG_OK) soft_fail("cuda backward: %s", fg_last_error());
}

static void ck_grads(const pair_t *p, const char *what)
{
    fg_tensor *gc = fg_grad(p->leaf_cpu), *gd = fg_grad(p->leaf_dev);
    if (!gc || !gd) {
        soft_fail("%s: no %s gradient", what, gc ? "CUDA" : "CPU");
        return;
    }
    char w[300];
    snprintf(w, sizeof w, "%s (grad)", what);
    ck_dev(gd, gc, true, w);
}

/* ---- binary ops ---- */
typedef fg_tensor *(*bin_fn)(fg_tensor *, fg_tensor *);
static const struct {
    const char *name;
    bin_fn f;
    bool ints, grad;
    values_t kind;
    double alo, ahi, blo, bhi;
} bin_ops[] = {
    {"add", fg_add, true, true, V_UNIFORM, -2, 2, -2, 2},
    {"sub", fg_sub, true, true, V_UNIFORM, -2, 2, -2, 2},
    {"mul", fg_mul, true, true, V_UNIFORM, -2, 2, -2, 2},
    {"div", fg_div, false, true, V_UNIFORM, -2, 2, 0.5, 2},
    {"pow", fg_pow, false, true, V_UNIFORM, 0.5, 2, -2, 2},
    {"gt", fg_gt, true, false, V_INTS, -2, 3, -2, 3}, /* integer values: ties and equal pairs */
    {"eq", fg_eq, true, false, V_INTS, -2, 3, -2, 3},
};

static const struct {
    int na;
    int64_t sa[4];
    int nb;
    int64_t sb[4];
} bin_shapes[] = {
    {2, {7, 13}, 2, {7, 13}},
    {3, {3, 1, 129}, 2, {5, 129}},
    {0, {0}, 2, {4, 9}},
    {2, {6, 1}, 0, {0}},
    {0, {0}, 0, {0}},
    {1, {1037}, 1, {1037}},
    {2, {1, 1}, 3, {2, 3, 1}},
};

static void run_binary(fg_generator *gen, int o, fg_dtype dt, int na, const int64_t *sa, int nb, const int64_t *sb,
                       layout_t la, layout_t lb, const char *tag)
{
    values_t kind = fg_dtype_is_float(dt) ? bin_ops[o].kind : (bin_ops[o].kind == V_INTS ? V_INTS : V_BIG);
    pair_t a = make_pair(gen, dt, kind, la, na, sa, bin_ops[o].alo, bin_ops[o].ahi, false);
    pair_t b = make_pair(gen, dt, kind, lb, nb, sb, bin_ops[o].blo, bin_ops[o].bhi, false);
    char what[256];
    snprintf(what, sizeof what, "%s %s %s (%s, %s)", bin_ops[o].name, fg_dtype_name(dt), tag, layout_name[la],
             layout_name[lb]);
    ck_dev(bin_ops[o].f(a.dev, b.dev), bin_ops[o].f(a.cpu, b.cpu), false, what);
}

START_TEST(test_binary_forward)
{
    BEGIN;
    for (int di = 0; di < NELEM(all_dtypes); di++)
        for (int o = 0; o < NELEM(bin_ops); o++) {
            fg_dtype dt = all_dtypes[di];
            if (!fg_dtype_is_float(dt) && !bin_ops[o].ints) continue;
            for (int s = 0; s < NELEM(bin_shapes); s++)
                for (int lay = 0; lay < L_NLAYOUTS; lay++) {
                    fg_scope *sc = fg_scope_begin();
                    char tag[64];
                    snprintf(tag, sizeof tag, "shape case %d", s);
                    run_binary(gen, o, dt, bin_shapes[s].na, bin_shapes[s].sa, bin_shapes[s].nb, bin_shapes[s].sb,
                               (layout_t)lay, (layout_t)((lay + 1) % L_NLAYOUTS), tag);
                    fg_scope_end(sc);
                }
            fg_scope *sc = fg_scope_begin();
            int64_t n = quick() ? 100003 : kLarge;
            run_binary(gen, o, dt, 1, &n, 1, &n, L_CONTIG, L_CONTIG, "large");
            run_binary(gen, o, dt, 1, &n, 1, &n, L_SLICE, L_CONTIG, "large, offset");
            fg_scope_end(sc);
        }
    END;
    ck_no_failures();
}
END_TEST

START_TEST(test_binary_backward)
{
    BEGIN;
    for (int di = 0; di < NELEM(float_dtypes); di++)
        for (int o = 0; o < NELEM(bin_ops); o++) {
            if (!bin_ops[o].grad) continue;
            fg_dtype dt = float_dtypes[di];
            for (int s = 0; s < NELEM(bin_shapes); s++)
                for (int lay = 0; lay < 2; lay++) {
                    fg_scope *sc = fg_scope_begin();
                    layout_t la = lay ? L_TRANSPOSE : L_CONTIG, lb = lay ? L_SLICE : L_CONTIG;
                    pair_t a = make_pair(gen, dt, V_UNIFORM, la, bin_shapes[s].na, bin_shapes[s].sa, bin_ops[o].alo,
                                         bin_ops[o].ahi, true);
                    pair_t b = make_pair(gen, dt, V_UNIFORM, lb, bin_shapes[s].nb, bin_shapes[s].sb, bin_ops[o].blo,
                                         bin_ops[o].bhi, true);
                    backward_both(gen, bin_ops[o].f(a.cpu, b.cpu), bin_ops[o].f(a.dev, b.dev), s % 2 == 0);
                    char what[256];
                    snprintf(what, sizeof what, "%s %s shape case %d layout %d: a", bin_ops[o].name, fg_dtype_name(dt), s, lay);
                    ck_grads(&a, what);
                    what[strlen(what) - 1] = 'b';
                    ck_grads(&b, what);
                    fg_scope_end(sc);
                }
        }
    END;
    ck_no_failures();
}
END_TEST

/* ---- unary ops ---- */
static fg_tensor *gelu_tanh(fg_tensor *t) { return fg_gelu(t, true); }
static fg_tensor *gelu_erf(fg_tensor *t) { return fg_gelu(t, false); }
static const struct {
    const char *name;
    fg_tensor *(*f)(fg_tensor *);
    fg_tensor *(*fs)(fg_tensor *, double);
    double s, lo, hi;
    bool ints;
} un_ops[] = {
    {"neg", fg_neg, NULL, 0, -4, 4, true},
    {"exp", fg_exp, NULL, 0, -4, 4, false},
    {"log", fg_log, NULL, 0, 0.05, 5, false},
    {"sqrt", fg_sqrt, NULL, 0, 0.05, 5, false},
    {"rsqrt", fg_rsqrt, NULL, 0, 0.05, 5, false},
    {"abs", fg_abs, NULL, 0, -4, 4, true},
    {"tanh", fg_tanh, NULL, 0, -6, 6, false},
    {"sigmoid", fg_sigmoid, NULL, 0, -8, 8, false},
    {"relu", fg_relu, NULL, 0, -4, 4, true},
    {"gelu_tanh", gelu_tanh, NULL, 0, -6, 6, false},
    {"gelu_erf", gelu_erf, NULL, 0, -6, 6, false},
    {"silu", fg_silu, NULL, 0, -8, 8, false},
    {"add_scalar", NULL, fg_add_scalar, 0.75, -4, 4, false},
    {"mul_scalar", NULL, fg_mul_scalar, -1.5, -4, 4, false},
    {"pow_scalar 2.5", NULL, fg_pow_scalar, 2.5, 0.1, 3, false},
    {"pow_scalar 3", NULL, fg_pow_scalar, 3.0, -2, 2, false},
    {"pow_scalar 0", NULL, fg_pow_scalar, 0.0, -2, 2, false},
    {"rsub_scalar", NULL, fg_rsub_scalar, 2.0, -4, 4, false},
    {"rdiv_scalar", NULL, fg_rdiv_scalar, 1.5, 0.25, 4, false},
};
static fg_tensor *un_apply(int o, fg_tensor *t) { return un_ops[o].f ? un_ops[o].f(t) : un_ops[o].fs(t, un_ops[o].s); }

static const struct {
    int ndim;
    int64_t shape[4];
} un_shapes[] = {{2, {7, 13}}, {0, {0}}, {1, {1037}}, {3, {3, 5, 129}}, {1, {8}}, {1, {5}}};

START_TEST(test_unary_forward)
{
    BEGIN;
    for (int di = 0; di < NELEM(all_dtypes); di++)
        for (int o = 0; o < NELEM(un_ops); o++) {
            fg_dtype dt = all_dtypes[di];
            bool isf = fg_dtype_is_float(dt);
            if (!isf && !un_ops[o].ints) continue;
            for (int s = 0; s <= NELEM(un_shapes); s++)
                for (int lay = 0; lay < L_NLAYOUTS; lay++) {
                    if (s == NELEM(un_shapes) && lay > L_SLICE) continue;
                    fg_scope *sc = fg_scope_begin();
                    int64_t big = quick() ? 100003 : kLarge;
                    int nd = s < NELEM(un_shapes) ? un_shapes[s].ndim : 1;
                    const int64_t *sh = s < NELEM(un_shapes) ? un_shapes[s].shape : &big;
                    pair_t a = make_pair(gen, dt, isf ? V_UNIFORM : V_BIG, (layout_t)lay, nd, sh, un_ops[o].lo,
                                         un_ops[o].hi, false);
                    char what[256];
                    snprintf(what, sizeof what, "%s %s shape case %d %s", un_ops[o].name, fg_dtype_name(dt), s,
                             layout_name[lay]);
                    ck_dev(un_apply(o, a.dev), un_apply(o, a.cpu), false, what);
                    fg_scope_end(sc);
                }
        }
    END;
    ck_no_failures();
}
END_TEST

START_TEST(test_unary_backward)
{
    BEGIN;
    for (int di = 0; di < NELEM(float_dtypes); di++)
        for (int o = 0; o < NELEM(un_ops); o++)
            for (int s = 0; s < NELEM(un_shapes); s++)
                for (int lay = 0; lay < 2; lay++) {
                    fg_dtype dt = float_dtypes[di];
                    fg_scope *sc = fg_scope_begin();
                    pair_t a = make_pair(gen, dt, V_UNIFORM, lay ? L_TRANSPOSE : L_CONTIG, un_shapes[s].ndim,
                                         un_shapes[s].shape, un_ops[o].lo, un_ops[o].hi, true);
                    /* lay 0: plain sum, so the gradient reaching the op is expanded (stride 0). */
                    backward_both(gen, un_apply(o, a.cpu), un_apply(o, a.dev), lay == 1);
                    char what[256];
                    snprintf(what, sizeof what, "%s %s shape case %d layout %d", un_ops[o].name, fg_dtype_name(dt), s, lay);
                    ck_grads(&a, what);
                    fg_scope_end(sc);
                }
    END;
    ck_no_failures();
}
END_TEST

/* Integer paths at the extremes: i64 beyond 2^53 (exact, wrapping) and i32 saturation. */
START_TEST(test_integer_extremes)
{
    BEGIN;
    const int64_t big[] = {INT64_MIN, INT64_MAX, -1, 1, (int64_t)1 << 53 | 1, -((int64_t)1 << 62) - 3, 0, 7};
    const int64_t rev[] = {-1, 1, INT64_MIN, INT64_MAX, 3, (int64_t)1 << 62, 0, 7};
    fg_tensor *a = fg_from_data(big, FG_SHAPE(8), FG_I64, FG_CPU), *b = fg_from_data(rev, FG_SHAPE(8), FG_I64, FG_CPU);
    fg_tensor *ad = to_cuda(a, false), *bd = to_cuda(b, false);
    for (int o = 0; o < NELEM(bin_ops); o++)
        if (bin_ops[o].ints) ck_dev(bin_ops[o].f(ad, bd), bin_ops[o].f(a, b), false, bin_ops[o].name);
    ck_dev(fg_neg(ad), fg_neg(a), false, "neg i64");
    ck_dev(fg_abs(ad), fg_abs(a), false, "abs i64");
    ck_dev(fg_relu(ad), fg_relu(a), false, "relu i64");
    ck_dev(fg_sum_all(ad), fg_sum_all(a), false, "sum i64 (wraps)");
    const int32_t v32[] = {INT32_MIN, INT32_MAX, -1, 1, 65536, -65536, 0, 46341};
    const int32_t w32[] = {-1, 1, INT32_MIN, INT32_MAX, 65536, 65536, 0, 46341};
    fg_tensor *c = fg_from_data(v32, FG_SHAPE(8), FG_I32, FG_CPU), *e = fg_from_data(w32, FG_SHAPE(8), FG_I32, FG_CPU);
    fg_tensor *cd = to_cuda(c, false), *ed = to_cuda(e, false);
    for (int o = 0; o < NELEM(bin_ops); o++)
        if (bin_ops[o].ints) ck_dev(bin_ops[o].f(cd, ed), bin_ops[o].f(c, e), false, bin_ops[o].name);
    ck_dev(fg_neg(cd), fg_neg(c), false, "neg i32 (saturates)");
    ck_dev(fg_abs(cd), fg_abs(c), false, "abs i32 (saturates)");
    ck_dev(fg_sum_all(cd), fg_sum_all(c), false, "sum i32");
    /* Integer ops the CPU rejects are rejected on the GPU too, before any kernel. */
    ck_assert_ptr_null(fg_exp(cd));
    ck_err(FG_ERR_DTYPE, "exp", NULL);
    END;
    ck_no_failures();
}
END_TEST

/* ---- where / masked_fill ---- */
START_TEST(test_where_masked_fill)
{
    BEGIN;
    static const fg_dtype cond_dtypes[] = {FG_F32, FG_I64, FG_BF16, FG_I32, FG_F64, FG_F16};
    for (int di = 0; di < NELEM(all_dtypes); di++)
        for (int ci = 0; ci < NELEM(cond_dtypes); ci++) {
            fg_dtype dt = all_dtypes[di], ct = cond_dtypes[ci];
            /* Integers within +-2^53: the CPU's where rounds values through double
             * (fg__ld/fg__st), the GPU moves them bit for bit. */
            values_t kind = fg_dtype_is_float(dt) ? V_UNIFORM : V_INTS;
            double range = fg_dtype_is_float(dt) ? 3 : 1e9;
            for (int s = 0; s < 3; s++) {
                fg_scope *sc = fg_scope_begin();
                /* 0: (3,1,129) cond, (5,129) a, 0-d b; 1: all (7,13) strided; 2: large contiguous */
                int64_t n = quick() ? 100003 : kLarge;
                int nc = s == 0 ? 3 : s == 1 ? 2 : 1, na = s == 0 ? 2 : s == 1 ? 2 : 1, nb = s == 0 ? 0 : s == 1 ? 2 : 1;
                const int64_t *shc = s == 0 ? (const int64_t[]){3, 1, 129} : s == 1 ? (const int64_t[]){7, 13} : &n;
                const int64_t *sha = s == 0 ? (const int64_t[]){5, 129} : s == 1 ? (const int64_t[]){7, 13} : &n;
                const int64_t *shb = s == 1 ? (const int64_t[]){7, 13} : &n;
                pair_t c = make_pair(gen, ct, V_INTS, s == 1 ? L_TRANSPOSE : L_CONTIG, nc, shc, -1, 2, false);
                pair_t a = make_pair(gen, dt, kind, s == 1 ? L_SLICE : L_CONTIG, na, sha, -range, range, false);
                pair_t b = make_pair(gen, dt, kind, s == 1 ? L_STEP : L_CONTIG, nb, shb, -range, range, false);
                char what[128];
                snprintf(what, sizeof what, "where %s cond %s case %d", fg_dtype_name(dt), fg_dtype_name(ct), s);
                ck_dev(fg_where(c.dev, a.dev, b.dev), fg_where(c.cpu, a.cpu, b.cpu), false, what);
                fg_scope_end(sc);
            }
        }
    /* NaN conditions count as true. */
    const double cv[] = {0, NAN, 1, -0.0, NAN, 2};
    fg_tensor *c = fg_from_f64(cv, FG_SHAPE(6), FG_F32, FG_CPU);
    fg_tensor *a = fg_arange(1, 7, 1, FG_F32, FG_CPU), *b = fg_full(FG_SHAPE(6), -1, FG_F32, FG_CPU);
    ck_dev(fg_where(to_cuda(c, false), to_cuda(a, false), to_cuda(b, false)), fg_where(c, a, b), false, "where NaN cond");
    /* masked_fill: mask (1, 13) on (7, 13), -inf / 5 fill. */
    for (int di = 0; di < NELEM(all_dtypes); di++) {
        fg_dtype dt = all_dtypes[di];
        bool isf = fg_dtype_is_float(dt);
        pair_t x = make_pair(gen, dt, isf ? V_UNIFORM : V_INTS, L_TRANSPOSE, 2, (const int64_t[]){7, 13}, isf ? -3 : -1e9,
                             isf ? 3 : 1e9, false);
        pair_t m = make_pair(gen, FG_I32, V_INTS, L_CONTIG, 2, (const int64_t[]){1, 13}, 0, 2, false);
        double v = isf ? -INFINITY : 5;
        ck_dev(fg_masked_fill(x.dev, m.dev, v), fg_masked_fill(x.cpu, m.cpu, v), false, fg_dtype_name(dt));
    }
    END;
    ck_no_failures();
}
END_TEST

START_TEST(test_where_masked_fill_backward)
{
    BEGIN;
    for (int di = 0; di < NELEM(float_dtypes); di++) {
        fg_dtype dt = float_dtypes[di];
        fg_scope *sc = fg_scope_begin();
        pair_t c = make_pair(gen, FG_I64, V_INTS, L_CONTIG, 3, (const int64_t[]){3, 1, 129}, 0, 2, false);
        pair_t a = make_pair(gen, dt, V_UNIFORM, L_TRANSPOSE, 2, (const int64_t[]){5, 129}, -2, 2, true);
        pair_t b = make_pair(gen, dt, V_UNIFORM, L_CONTIG, 3, (const int64_t[]){3, 5, 1}, -2, 2, true);
        backward_both(gen, fg_where(c.cpu, a.cpu, b.cpu), fg_where(c.dev, a.dev, b.dev), true);
        ck_grads(&a, "where a");
        ck_grads(&b, "where b");
        pair_t x = make_pair(gen, dt, V_UNIFORM, L_SLICE, 2, (const int64_t[]){7, 13}, -2, 2, true);
        pair_t m = make_pair(gen, FG_F32, V_INTS, L_CONTIG, 1, (const int64_t[]){13}, 0, 2, false);
        backward_both(gen, fg_masked_fill(x.cpu, m.cpu, 0.5), fg_masked_fill(x.dev, m.dev, 0.5), true);
        ck_grads(&x, "masked_fill");
        fg_scope_end(sc);
    }
    END;
    ck_no_failures();
}
END_TEST

/* ---- sum / mean ---- */
static const struct {
    int ndim;
    int64_t shape[4];
    int ndims; /* 0: every dim */
    int dims[4];
} red_cases[] = {
    {2, {7, 13}, 1, {0}},        {2, {7, 13}, 1, {1}},         {2, {7, 13}, 2, {0, 1}},     {2, {7, 13}, 0, {0}},
    {3, {3, 5, 129}, 1, {1}},    {3, {3, 5, 129}, 2, {0, 2}},  {3, {3, 5, 129}, 1, {-1}},   {3, {3, 5, 129}, 2, {0, 1}},
    {4, {4, 6, 5, 7}, 2, {0, 2}}, {4, {4, 6, 5, 7}, 2, {1, 3}}, {4, {4, 6, 5, 7}, 3, {0, 1, 3}},
    {0, {0}, 0, {0}},            {1, {1}, 1, {0}},             {2, {3, 1}, 1, {1}},
    {2, {3, 10007}, 1, {1}},     /* long rows: block per row, split over blocks */
    {2, {10007, 3}, 1, {0}},     /* long columns, split */
    {2, {300, 257}, 1, {0}},     {2, {257, 300}, 1, {1}},      {2, {40, 2000}, 1, {1}},
    {2, {0, 5}, 1, {0}},         /* empty reduction: sum 0, mean NaN */
    {2, {5, 0}, 1, {0}},         /* empty output */
};

static fg_tensor *do_sum(bool mean, fg_tensor *t, int c, bool keepdim)
{
    return mean ? fg_mean(t, red_cases[c].ndims, red_cases[c].dims, keepdim)
                : fg_sum(t, red_cases[c].ndims, red_cases[c].dims, keepdim);
}

START_TEST(test_sum_mean_forward)
{
    BEGIN;
    for (int di = 0; di < NELEM(all_dtypes); di++)
        for (int mean = 0; mean < 2; mean++) {
            fg_dtype dt = all_dtypes[di];
            bool isf = fg_dtype_is_float(dt);
            if (mean && !isf) continue;
            for (int c = 0; c < NELEM(red_cases); c++)
                for (int lay = 0; lay < L_NLAYOUTS; lay++) {
                    if (red_cases[c].shape[0] == 0 && lay == L_STEP) continue;
                    fg_scope *sc = fg_scope_begin();
                    pair_t a = make_pair(gen, dt, isf ? V_UNIFORM : V_BIG, (layout_t)lay, red_cases[c].ndim,
                                         red_cases[c].shape, -2, 2, false);
                    char what[128];
                    snprintf(what, sizeof what, "%s %s case %d %s", mean ? "mean" : "sum", fg_dtype_name(dt), c,
                             layout_name[lay]);
                    bool keep = (c + lay) % 2;
                    ck_dev(do_sum(mean, a.dev, c, keep), do_sum(mean, a.cpu, c, keep), false, what);
                    fg_scope_end(sc);
                }
            /* large: sum_all (split rows), and a big column reduction */
            fg_scope *sc = fg_scope_begin();
            int64_t n = quick() ? 100003 : kLarge;
            pair_t a = make_pair(gen, dt, isf ? V_UNIFORM : V_BIG, L_CONTIG, 1, &n, -2, 2, false);
            ck_dev(mean ? fg_mean_all(a.dev) : fg_sum_all(a.dev), mean ? fg_mean_all(a.cpu) : fg_sum_all(a.cpu), false,
                   "large all");
            pair_t b = make_pair(gen, dt, isf ? V_UNIFORM : V_BIG, L_SLICE, 2, (const int64_t[]){1027, quick() ? 97 : 1021},
                                 -2, 2, false);
            ck_dev(do_sum(mean, b.dev, 0, false), do_sum(mean, b.cpu, 0, false), false, "large columns");
            ck_dev(do_sum(mean, b.dev, 1, true), do_sum(mean, b.cpu, 1, true), false, "large rows");
            fg_scope_end(sc);
        }
    END;
    ck_no_failures();
}
END_TEST

START_TEST(test_sum_mean_backward)
{
    BEGIN;
    for (int di = 0; di < NELEM(float_dtypes); di++)
        for (int mean = 0; mean < 2; mean++)
            for (int c = 0; c < NELEM(red_cases); c++) {
                fg_dtype dt = float_dtypes[di];
                int64_t numel = 1;
                for (int d = 0; d < red_cases[c].ndim; d++) numel *= red_cases[c].shape[d];
                if (numel == 0) continue;
                fg_scope *sc = fg_scope_begin();
                layout_t lay = (layout_t)(c % 3);
                pair_t a = make_pair(gen, dt, V_UNIFORM, lay, red_cases[c].ndim, red_cases[c].shape, -2, 2, true);
                bool keep = c % 2;
                backward_both(gen, do_sum(mean, a.cpu, c, keep), do_sum(mean, a.dev, c, keep), true);
                char what[128];
                snprintf(what, sizeof what, "%s %s case %d", mean ? "mean" : "sum", fg_dtype_name(dt), c);
                ck_grads(&a, what);
                fg_scope_end(sc);
            }
    END;
    ck_no_failures();
}
END_TEST

/* ---- max / argmax ---- */
static const struct {
    int ndim;
    int64_t shape[4];
    int dim;
} max_cases[] = {
    {2, {7, 13}, 0},   {2, {7, 13}, 1},   {2, {7, 13}, -1},   {3, {3, 5, 129}, 0}, {3, {3, 5, 129}, 1},
    {3, {3, 5, 129}, 2}, {1, {1037}, 0},  {2, {4096, 3}, 0},  {2, {3, 5000}, 1},   {2, {700, 40}, 1},
    {2, {9, 1}, 1},    {1, {1}, 0},
};

static void check_max(fg_generator *gen, fg_dtype dt, values_t kind, double lo, double hi, int ndim,
                      const int64_t *shape, int dim, layout_t lay, const char *tag)
{
    fg_scope *sc = fg_scope_begin();
    pair_t a = make_pair(gen, dt, kind, lay, ndim, shape, lo, hi, false);
    char what[160];
    for (int keep = 0; keep < 2; keep++) {
        fg_tensor *ic = NULL, *id = NULL;
        fg_tensor *vc = fg_max(a.cpu, dim, keep, &ic), *vd = fg_max(a.dev, dim, keep, &id);
        snprintf(what, sizeof what, "max %s %s dim %d %s keep %d: values", fg_dtype_name(dt), tag, dim, layout_name[lay], keep);
        ck_dev(vd, vc, false, what);
        ck_dev_tol(vd, vc, 0, 0, what); /* a selected element: exact */
        snprintf(what, sizeof what, "max %s %s dim %d %s keep %d: indices", fg_dtype_name(dt), tag, dim, layout_name[lay], keep);
        ck_dev(id, ic, false, what);
        ck_dev(fg_argmax(a.dev, dim, keep), fg_argmax(a.cpu, dim, keep), false, "argmax");
    }
    fg_scope_end(sc);
}

START_TEST(test_max_argmax_forward)
{
    BEGIN;
    for (int di = 0; di < NELEM(all_dtypes); di++) {
        fg_dtype dt = all_dtypes[di];
        for (int c = 0; c < NELEM(max_cases); c++)
            for (int lay = 0; lay < L_NLAYOUTS; lay++) {
                /* integer values in a small range: many ties (first index wins) */
                check_max(gen, dt, V_INTS, -3, 4, max_cases[c].ndim, max_cases[c].shape, max_cases[c].dim,
                          (layout_t)lay, "ties");
                if (lay == 0)
                    check_max(gen, dt, fg_dtype_is_float(dt) ? V_UNIFORM : V_BIG, -3, 3, max_cases[c].ndim,
                              max_cases[c].shape, max_cases[c].dim, L_CONTIG, "random");
            }
        int64_t n = quick() ? 100003 : kLarge;
        check_max(gen, dt, fg_dtype_is_float(dt) ? V_UNIFORM : V_BIG, -3, 3, 1, &n, 0, L_CONTIG, "large");
        fg_scope *sc = fg_scope_begin();
        fg_tensor *x = rnd(gen, dt, V_INTS, 1, &n, -1000, 1000);
        ck_dev(fg_max_all(to_cuda(x, false)), fg_max_all(x), false, "max_all");
        fg_scope_end(sc);
    }
    /* NaN wins (the first one), -inf rows, all-equal rows. */
    const double v[] = {1, NAN, 3, NAN, -INFINITY, -INFINITY, -INFINITY, -INFINITY, 2, 2, 2, 2,
                        -INFINITY, 5, NAN, 5, 0, -0.0, 0, -1, 7, INFINITY, 7, INFINITY};
    for (int di = 0; di < NELEM(float_dtypes); di++) {
        fg_tensor *x = fg_from_f64(v, FG_SHAPE(6, 4), float_dtypes[di], FG_CPU);
        fg_tensor *xd = to_cuda(x, false), *xt = fg_transpose(x, 0, 1), *xdt = fg_transpose(xd, 0, 1);
        for (int d = 0; d < 2; d++) {
            ck_dev(fg_argmax(xd, d, false), fg_argmax(x, d, false), false, "argmax NaN/inf");
            ck_dev(fg_max(xd, d, true, NULL), fg_max(x, d, true, NULL), false, "max NaN/inf");
            ck_dev(fg_argmax(xdt, d, true), fg_argmax(xt, d, true), false, "argmax NaN/inf transposed");
        }
        /* the CPU semantics, spelled out: row 0 -> the first NaN, row 2 (all equal) -> 0, row 3 -> the NaN */
        fg_tensor *am = fg_argmax(xd, 1, false);
        ck_assert_int_eq((int64_t)fg_get(am, (const int64_t[]){0}), 1);
        ck_assert_int_eq((int64_t)fg_get(am, (const int64_t[]){1}), 0);
        ck_assert_int_eq((int64_t)fg_get(am, (const int64_t[]){2}), 0);
        ck_assert_int_eq((int64_t)fg_get(am, (const int64_t[]){3}), 2);
    }
    END;
    ck_no_failures();
}
END_TEST

START_TEST(test_max_backward)
{
    BEGIN;
    for (int di = 0; di < NELEM(float_dtypes); di++)
        for (int c = 0; c < NELEM(max_cases); c++)
            for (int lay = 0; lay < 2; lay++) {
                fg_dtype dt = float_dtypes[di];
                fg_scope *sc = fg_scope_begin();
                pair_t a = make_pair(gen, dt, lay ? V_INTS : V_UNIFORM, lay ? L_TRANSPOSE : L_CONTIG, max_cases[c].ndim,
                                     max_cases[c].shape, -3, 4, true);
                bool keep = (c + lay) % 2;
                backward_both(gen, fg_max(a.cpu, max_cases[c].dim, keep, NULL), fg_max(a.dev, max_cases[c].dim, keep, NULL),
                              lay == 1);
                char what[128];
                snprintf(what, sizeof what, "max %s case %d layout %d", fg_dtype_name(dt), c, lay);
                ck_grads(&a, what);
                fg_scope_end(sc);
            }
    END;
    ck_no_failures();
}
END_TEST

/* A small network-like expression end to end (several families in one graph). */
START_TEST(test_composite_backward)
{
    BEGIN;
    for (int di = 0; di < NELEM(float_dtypes); di++) {
        fg_dtype dt = float_dtypes[di];
        pair_t x = make_pair(gen, dt, V_UNIFORM, L_CONTIG, 2, (const int64_t[]){16, 33}, -2, 2, true);
        pair_t b = make_pair(gen, dt, V_UNIFORM, L_CONTIG, 1, (const int64_t[]){33}, -1, 1, true);
        fg_tensor *y[2];
        for (int k = 0; k < 2; k++) {
            fg_tensor *xx = k ? x.dev : x.cpu, *bb = k ? b.dev : b.cpu;
            fg_tensor *h = fg_gelu(fg_add(xx, bb), true);
            fg_tensor *m = fg_mean(h, FG_DIMS(1), true);
            fg_tensor *z = fg_mul(fg_sub(h, m), fg_sigmoid(xx));
            y[k] = fg_add(fg_max(z, 0, false, NULL), fg_sum(fg_exp(fg_mul_scalar(z, 0.25)), FG_DIMS(0), false));
        }
        backward_both(gen, y[0], y[1], true);
        ck_grads(&x, "composite x");
        ck_grads(&b, "composite b");
    }
    END;
    ck_no_failures();
}
END_TEST

/* ---- bandwidth (FG_TEST_BENCH=1): the vector path against a device-to-device copy ---- */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef fg_tensor *(*bench_fn)(fg_tensor *, fg_tensor *);
static fg_tensor *b_add(fg_tensor *a, fg_tensor *b) { return fg_add(a, b); }
static fg_tensor *b_exp(fg_tensor *a, fg_tensor *b) { (void)b; return fg_exp(a); }
static fg_tensor *b_gelu(fg_tensor *a, fg_tensor *b) { (void)b; return fg_gelu(a, true); }
static fg_tensor *b_sum_rows(fg_tensor *a, fg_tensor *b) { (void)b; return fg_sum(a, FG_DIMS(1), false); }
static fg_tensor *b_sum_cols(fg_tensor *a, fg_tensor *b) { (void)b; return fg_sum(a, FG_DIMS(0), false); }
static fg_tensor *b_sum_all(fg_tensor *a, fg_tensor *b) { (void)b; return fg_sum_all(a); }
static fg_tensor *b_max_rows(fg_tensor *a, fg_tensor *b) { (void)b; return fg_max(a, 1, false, NULL); }
static fg_tensor *b_where(fg_tensor *a, fg_tensor *b) { return fg_where(a, a, b); }

static double median7(double *t)
{
    for (int i = 0; i < 7; i++)
        for (int j = i + 1; j < 7; j++)
            if (t[j] < t[i]) {
                double x = t[i];
                t[i] = t[j];
                t[j] = x;
            }
    return t[3];
}

/* Median seconds per call over 7 batches of 10. */
static double time_op(bench_fn f, fg_tensor *a, fg_tensor *b)
{
    double t[7];
    fg_free(f(a, b)); /* warm-up */
    fg_cuda_synchronize();
    for (int r = 0; r < 7; r++) {
        double t0 = now_s();
        for (int i = 0; i < 10; i++) fg_free(f(a, b));
        fg_cuda_synchronize();
        t[r] = (now_s() - t0) / 10;
    }
    return median7(t);
}

START_TEST(test_bandwidth)
{
    const char *bench = getenv("FG_TEST_BENCH");
    if (!bench || !*bench || strcmp(bench, "0") == 0) return;
    BEGIN;
    const int64_t rows = 8192, cols = 8192, n = rows * cols; /* 2^26 elements */
    double copy_gbs = 0;
    {
        void *a = NULL, *b = NULL;
        size_t bytes = (size_t)n * 4;
        if (fg__cuda_malloc(&a, bytes) == FG_OK && fg__cuda_malloc(&b, bytes) == FG_OK) {
            fg__cuda_memcpy_d2d(b, a, bytes); /* warm-up */
            fg_cuda_synchronize();
            double t[7];
            for (int r = 0; r < 7; r++) {
                double t0 = now_s();
                for (int i = 0; i < 10; i++) fg__cuda_memcpy_d2d(b, a, bytes);
                fg_cuda_synchronize();
                t[r] = (now_s() - t0) / 10;
            }
            copy_gbs = 2.0 * bytes / median7(t) / 1e9;
        }
        fg__cuda_free(a, bytes);
        fg__cuda_free(b, bytes);
    }
    printf("bench: device-to-device copy %.0f GB/s (read + write)\n", copy_gbs);
    static const struct {
        const char *name;
        bench_fn f;
        int reads; /* tensors read, each n elements */
    } cases[] = {
        {"add", b_add, 2}, {"exp", b_exp, 1}, {"gelu_tanh", b_gelu, 1}, {"where", b_where, 2},
        {"sum dim 1 (rows)", b_sum_rows, 1}, {"sum dim 0 (columns)", b_sum_cols, 1}, {"sum_all", b_sum_all, 1},
        {"max dim 1", b_max_rows, 1},
    };
    const fg_dtype dts[] = {FG_F32, FG_BF16};
    for (int di = 0; di < 2; di++) {
        fg_scope *sc = fg_scope_begin();
        fg_tensor *a = fg_randn(gen, FG_SHAPE(rows, cols), dts[di], FG_CUDA);
        fg_tensor *b = fg_randn(gen, FG_SHAPE(rows, cols), dts[di], FG_CUDA);
        ck_assert_msg(a && b, "%s", fg_last_error());
        for (int c = 0; c < NELEM(cases); c++) {
            double t = time_op(cases[c].f, a, b);
            bool reduce = c >= 4;
            double bytes = (double)n * fg_dtype_size(dts[di]) * (cases[c].reads + (reduce ? 0 : 1));
            double gbs = bytes / t / 1e9;
            printf("bench: %-20s %-4s %8.1f us %7.0f GB/s (%.0f%% of copy)\n", cases[c].name, fg_dtype_name(dts[di]),
                   t * 1e6, gbs, copy_gbs > 0 ? 100 * gbs / copy_gbs : 0.0);
        }
        fg_scope_end(sc);
    }
    END;
    ck_no_failures();
}
END_TEST

/* Line-buffered stdout: results and bench lines reach a pipe or log even if the
 * process dies later (e.g. in a driver teardown at exit). */
__attribute__((constructor)) static void line_buffered_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

static Suite *mk(void)
{
    Suite *s = suite_create("cuda_elementwise");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_binary_forward);
    tcase_add_test(tc, test_binary_backward);
    tcase_add_test(tc, test_unary_forward);
    tcase_add_test(tc, test_unary_backward);
    tcase_add_test(tc, test_integer_extremes);
    tcase_add_test(tc, test_where_masked_fill);
    tcase_add_test(tc, test_where_masked_fill_backward);
    tcase_add_test(tc, test_sum_mean_forward);
    tcase_add_test(tc, test_sum_mean_backward);
    tcase_add_test(tc, test_max_argmax_forward);
    tcase_add_test(tc, test_max_backward);
    tcase_add_test(tc, test_composite_backward);
    tcase_add_test(tc, test_bandwidth);
    suite_add_tcase(s, tc);
    return s;
}

FG_CUDA_TEST_MAIN(mk, "cuda_elementwise")
