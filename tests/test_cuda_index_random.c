/* Suite "cuda_index_random": the random creators, dropout, embedding, the index
 * ops (gather, scatter, scatter_add, index_select, index_add, topk) and the
 * join ops on CUDA tensors against the CPU reference, forward and backward.
 *
 * Bit for bit: raw Philox words and everything computed from them with
 * correctly rounded operations (uniforms, randint values, dropout masks and
 * outputs) for several (seed, offset) pairs, odd sizes and an offset whose
 * low counter word wraps; every pure data movement (gather, scatter with
 * duplicates, index_select, embedding forward, topk values and indices,
 * concat/stack/split); and every accumulation in deterministic mode, which
 * sums in index order in double like the CPU (also checked bit-identical run to
 * run). Close: normals (device log/sin/cos are not correctly rounded; 1e-6) and
 * atomic accumulation in the default mode (float sums in any order: 1e-5 of
 * the largest magnitude for f32, 2 ulps for bf16/f16).
 *
 * Backward: the same expression runs on the CPU and the GPU, each seeded with
 * the same random output gradient by fg_backward_with_grad, and fg_grad of the
 * leaves are compared. Every leaf receives one gradient, so only this suite's
 * kernels (and copies/fills) run on the GPU. */
#include <stdio.h>
#include <string.h>
#include <flashgrad/deterministic.h>
#include "cudatest.h"

/* ---- helpers ---- */

static size_t host_bytes(const fg_tensor *t) { return (size_t)fg_numel(t) * fg_dtype_size(fg_dtype_of(t)); }

/* Raw element bytes of any tensor, row-major (device tensors sync). Caller frees. */
static void *raw(const fg_tensor *t)
{
    size_t n = host_bytes(t);
    void *p = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(p);
    ck_assert_msg(fg_copy_to_host(t, p, n) == FG_OK, "copy to host: %s", fg_last_error());
    return p;
}

/* a and b: same dtype and shape, identical bytes; names the first differing element. */
static void ck_bits(const fg_tensor *a, const fg_tensor *b, const char *what)
{
    ck_assert_msg(a != NULL, "%s: result is NULL: %s", what, fg_last_error());
    ck_assert_msg(b != NULL, "%s: reference is NULL: %s", what, fg_last_error());
    ck_assert_msg(fg_dtype_of(a) == fg_dtype_of(b), "%s: dtype %s vs %s", what, fg_dtype_name(fg_dtype_of(a)),
                  fg_dtype_name(fg_dtype_of(b)));
    ck_shape(a, fg_ndim(b), fg_shape(b));
    unsigned char *pa = raw(a), *pb = raw(b);
    size_t es = fg_dtype_size(fg_dtype_of(a)), n = host_bytes(a);
    if (memcmp(pa, pb, n) != 0) {
        size_t i = 0;
        while (i < n && pa[i] == pb[i]) i++;
        int64_t k = (int64_t)(i / es);
        double va = 0, vb = 0;
        double *da = malloc((size_t)fg_numel(a) * sizeof *da), *db = malloc((size_t)fg_numel(a) * sizeof *db);
        if (da && db && fg_to_f64_array(a, da, fg_numel(a)) == FG_OK && fg_to_f64_array(b, db, fg_numel(b)) == FG_OK) {
            va = da[k];
            vb = db[k];
        }
        free(da);
        free(db);
        free(pa);
        free(pb);
        ck_abort_msg("%s: element %lld differs: %.17g (device) vs %.17g (cpu)", what, (long long)k, va, vb);
    }
    free(pa);
    free(pb);
}

static fg_tensor *dev(fg_tensor *t) { return to_cuda(t, false); }

/* Random CPU tensors. */
static fg_tensor *rnd(fg_generator *g, int nd, const int64_t *shape, fg_dtype dt)
{
    fg_tensor *t = fg_randn(g, nd, shape, dt, FG_CPU);
    ck_assert_msg(t != NULL, "%s", fg_last_error());
    return t;
}
static fg_tensor *ridx(fg_generator *g, int64_t hi, int nd, const int64_t *shape, fg_dtype dt)
{
    fg_tensor *t = fg_randint(g, 0, hi, nd, shape, dt, FG_CPU);
    ck_assert_msg(t != NULL, "%s", fg_last_error());
    return t;
}
/* Leaf pair: a CPU tensor requiring grad and its CUDA copy requiring grad. */
static void leaf_pair(fg_tensor *t, fg_tensor **cpu, fg_tensor **cuda)
{
    ck_assert_int_eq(fg_set_requires_grad(t, true), FG_OK);
    *cpu = t;
    *cuda = to_cuda(t, true);
}
/* Seeds both backwards with the same random gradient of y's shape. */
static void backward_pair(fg_generator *g, fg_tensor *y, fg_tensor *yd)
{
    ck_assert_msg(y && yd, "%s", fg_last_error());
    fg_tensor *gy = rnd(g, fg_ndim(y), fg_shape(y), fg_dtype_of(y));
    ck_assert_msg(fg_backward_with_grad(y, gy) == FG_OK, "cpu backward: %s", fg_last_error());
    ck_assert_msg(fg_backward_with_grad(yd, dev(gy)) == FG_OK, "cuda backward: %s", fg_last_error());
}

/* Tolerance (relative to max |ref|) for atomics in the default mode. */
static double tol_acc(fg_dtype dt)
{
    switch (dt) {
    case FG_F64: return 1e-12;
    case FG_BF16: return 2e-2;
    case FG_F16: return 4e-3;
    default: return 1e-5;
    }
}
/* a (device) matches b (cpu) within tol * max|b| + tol |b|. */
static void ck_close_to(const fg_tensor *a, const fg_tensor *b, double tol, const char *what)
{
    int64_t n = fg_numel(b);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v), m = 0;
    ck_assert_int_eq(fg_to_f64_array(b, v, n), FG_OK);
    for (int64_t i = 0; i < n; i++) m = fabs(v[i]) > m ? fabs(v[i]) : m;
    free(v);
    ck_matches(a, b, tol * (m > 0 ? m : 1), tol, what);
}

/* FG_TEST_QUICK=1 (sanitizer runs): smaller sizes, fewer cases. */
static bool quick(void)
{
    const char *e = getenv("FG_TEST_QUICK");
    return e && *e && strcmp(e, "0") != 0;
}

static const fg_dtype float_dtypes[] = {FG_F32, FG_F64, FG_BF16, FG_F16};
static const fg_dtype index_dtypes[] = {FG_I32, FG_I64};

/* ---- random creators ---- */

static const uint64_t seeds[][2] = {
    {0, 0}, {42, 7}, {0xdeadbeefcafef00dull, 123456789}, {UINT64_MAX - 5, ((uint64_t)1 << 32) - 3}, {1, UINT64_MAX / 8}};
static const int64_t sizes[] = {1, 3, 37, 1027, 4099};
static size_t n_seeds(void) { return quick() ? 3 : sizeof seeds / sizeof *seeds; }

START_TEST(test_rand_uniform_randint_bits)
{
    BEGIN;
    fg_generator *gc = fg_generator_new(0), *gd = fg_generator_new(0);
    char what[160];
    for (size_t s = 0; s < n_seeds(); s++)
        for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++) {
            int64_t n = sizes[z];
            fg_generator_set_state(gc, seeds[s][0], seeds[s][1]);
            fg_generator_set_state(gd, seeds[s][0], seeds[s][1]);
            for (int d = 0; d < 4; d++) {
                fg_dtype dt = float_dtypes[d];
                snprintf(what, sizeof what, "rand %s seed %zu n %lld", fg_dtype_name(dt), s, (long long)n);
                ck_bits(fg_rand(gd, 1, &n, dt, FG_CUDA), fg_rand(gc, 1, &n, dt, FG_CPU), what);
                snprintf(what, sizeof what, "uniform %s seed %zu n %lld", fg_dtype_name(dt), s, (long long)n);
                ck_bits(fg_uniform(gd, -3.5, 2.25, 1, &n, dt, FG_CUDA), fg_uniform(gc, -3.5, 2.25, 1, &n, dt, FG_CPU),
                        what);
                /* A range where rounding lands on hi often: the below-hi rule must match. */
                snprintf(what, sizeof what, "narrow uniform %s seed %zu n %lld", fg_dtype_name(dt), s, (long long)n);
                ck_bits(fg_uniform(gd, 1.0, 1.0 + 1e-3, 1, &n, dt, FG_CUDA),
                        fg_uniform(gc, 1.0, 1.0 + 1e-3, 1, &n, dt, FG_CPU), what);
                /* lo == hi: every value is lo. */
                ck_bits(fg_uniform(gd, 0.5, 0.5, 1, &n, dt, FG_CUDA), fg_uniform(gc, 0.5, 0.5, 1, &n, dt, FG_CPU),
                        "uniform lo == hi");
            }
            snprintf(what, sizeof what, "randint i32 seed %zu n %lld", s, (long long)n);
            ck_bits(fg_randint(gd, -1000, 7919, 1, &n, FG_I32, FG_CUDA), fg_randint(gc, -1000, 7919, 1, &n, FG_I32, FG_CPU),
                    what);
            ck_bits(fg_randint(gd, INT32_MIN, INT32_MAX, 1, &n, FG_I32, FG_CUDA),
                    fg_randint(gc, INT32_MIN, INT32_MAX, 1, &n, FG_I32, FG_CPU), "randint i32 full range");
            int64_t lo = -((int64_t)1 << 40);
            snprintf(what, sizeof what, "randint i64 seed %zu n %lld", s, (long long)n);
            ck_bits(fg_randint(gd, lo, lo + ((int64_t)1 << 32), 1, &n, FG_I64, FG_CUDA),
                    fg_randint(gc, lo, lo + ((int64_t)1 << 32), 1, &n, FG_I64, FG_CPU), what);
            ck_bits(fg_randint(gd, INT64_MAX - 3, INT64_MAX, 1, &n, FG_I64, FG_CUDA),
                    fg_randint(gc, INT64_MAX - 3, INT64_MAX, 1, &n, FG_I64, FG_CPU), "randint near INT64_MAX");
            /* An odd 3-d shape. */
            ck_bits(fg_rand(gd, FG_SHAPE(3, 1, 5), FG_F32, FG_CUDA), fg_rand(gc, FG_SHAPE(3, 1, 5), FG_F32, FG_CPU),
                    "rand 3-d");
            ck_assert_uint_eq(fg_generator_offset(gd), fg_generator_offset(gc));
            ck_assert_uint_eq(fg_generator_seed(gd), fg_generator_seed(gc));
        }
    /* Empty draws consume nothing on either device. */
    uint64_t before = fg_generator_offset(gd);
    fg_tensor *e = fg_rand(gd, FG_SHAPE(0, 3), FG_F32, FG_CUDA);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(fg_numel(e), 0);
    ck_assert_uint_eq(fg_generator_offset(gd), before);
    /* Errors leave the generator alone. */
    ck_assert_ptr_null(fg_rand(gd, FG_SHAPE(3), FG_I32, FG_CUDA));
    ck_assert_ptr_null(fg_randint(gd, 5, 5, FG_SHAPE(3), FG_I64, FG_CUDA));
    ck_assert_uint_eq(fg_generator_offset(gd), before);
    /* The default generator on the device advances like on the CPU. */
    fg_generator *dg = fg_default_generator();
    uint64_t s0 = fg_generator_seed(dg), o0 = fg_generator_offset(dg);
    fg_tensor *a = fg_rand(NULL, FG_SHAPE(9), FG_F32, FG_CUDA);
    fg_generator_set_state(dg, s0, o0);
    fg_tensor *b = fg_rand(NULL, FG_SHAPE(9), FG_F32, FG_CPU);
    ck_bits(a, b, "default generator");
    fg_generator_free(gc);
    fg_generator_free(gd);
    END;
}
END_TEST

START_TEST(test_randn_normal_close)
{
    BEGIN;
    fg_generator *gc = fg_generator_new(0), *gd = fg_generator_new(0);
    char what[160];
    for (size_t s = 0; s < n_seeds(); s++)
        for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++) {
            int64_t n = sizes[z];
            fg_generator_set_state(gc, seeds[s][0], seeds[s][1]);
            fg_generator_set_state(gd, seeds[s][0], seeds[s][1]);
            for (int d = 0; d < 4; d++) {
                fg_dtype dt = float_dtypes[d];
                /* bf16/f16: a value within 1e-15 of a rounding midpoint may round either way: one ulp. */
                double tol = dt == FG_BF16 ? 8e-3 : dt == FG_F16 ? 1e-3 : 1e-6;
                snprintf(what, sizeof what, "randn %s seed %zu n %lld", fg_dtype_name(dt), s, (long long)n);
                ck_matches(fg_randn(gd, 1, &n, dt, FG_CUDA), fg_randn(gc, 1, &n, dt, FG_CPU), tol, tol, what);
                snprintf(what, sizeof what, "normal %s seed %zu n %lld", fg_dtype_name(dt), s, (long long)n);
                ck_matches(fg_normal(gd, 2.0, 3.0, 1, &n, dt, FG_CUDA), fg_normal(gc, 2.0, 3.0, 1, &n, dt, FG_CPU),
                           tol * 4, tol, what);
            }
            ck_assert_uint_eq(fg_generator_offset(gd), fg_generator_offset(gc));
        }
    fg_generator_free(gc);
    fg_generator_free(gd);
    END;
}
END_TEST

/* ---- dropout ---- */

START_TEST(test_dropout_bits)
{
    BEGIN;
    fg_generator *gc = fg_generator_new(0), *gd = fg_generator_new(0);
    const double ps[] = {0.1, 0.3, 0.5, 0.9, 1.0};
    char what[160];
    for (size_t s = 0; s < n_seeds(); s++)
        for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++)
            for (int d = 0; d < 4; d++) {
                int64_t n = sizes[z];
                fg_dtype dt = float_dtypes[d];
                double p = ps[(s + z + (size_t)d) % 5];
                fg_generator_set_state(gc, seeds[s][0], seeds[s][1]);
                fg_generator_set_state(gd, seeds[s][0], seeds[s][1]);
                /* Ones show the mask itself; random values the scaled product. */
                fg_tensor *one = fg_ones(1, &n, dt, FG_CPU), *x = rnd(gen, 1, &n, dt);
                snprintf(what, sizeof what, "dropout mask %s p %g seed %zu n %lld", fg_dtype_name(dt), p, s,
                         (long long)n);
                ck_bits(fg_dropout(dev(one), p, true, gd), fg_dropout(one, p, true, gc), what);
                snprintf(what, sizeof what, "dropout %s p %g seed %zu n %lld", fg_dtype_name(dt), p, s, (long long)n);
                ck_bits(fg_dropout(dev(x), p, true, gd), fg_dropout(x, p, true, gc), what);
                ck_assert_uint_eq(fg_generator_offset(gd), fg_generator_offset(gc));
            }
    /* A strided input (transposed), an odd offset view (unaligned for the vector path), and eval mode. */
    fg_generator_set_state(gc, 5, 11);
    fg_generator_set_state(gd, 5, 11);
    fg_tensor *x = rnd(gen, FG_SHAPE(33, 17), FG_F32);
    fg_tensor *xt = fg_transpose(x, 0, 1), *xtd = fg_transpose(dev(x), 0, 1);
    ck_bits(fg_dropout(xtd, 0.4, true, gd), fg_dropout(xt, 0.4, true, gc), "dropout strided");
    fg_tensor *xn = fg_narrow(fg_flatten(x), 0, 1, 500), *xnd = fg_narrow(fg_flatten(dev(x)), 0, 1, 500);
    ck_bits(fg_dropout(xnd, 0.4, true, gd), fg_dropout(xn, 0.4, true, gc), "dropout offset view");
    ck_bits(fg_dropout(dev(x), 0.4, false, gd), x, "dropout eval");
    ck_assert_uint_eq(fg_generator_offset(gd), fg_generator_offset(gc));
    /* Backward: the mask regenerated from (seed, offset) on the gradient. */
    for (int d = 0; d < 4; d++) {
        fg_tensor *a, *ad;
        leaf_pair(rnd(gen, FG_SHAPE(7, 129), float_dtypes[d]), &a, &ad);
        fg_generator_set_state(gc, 99, 1000);
        fg_generator_set_state(gd, 99, 1000);
        backward_pair(gen, fg_dropout(a, 0.35, true, gc), fg_dropout(ad, 0.35, true, gd));
        ck_bits(fg_grad(ad), fg_grad(a), "dropout backward");
    }
    fg_generator_free(gc);
    fg_generator_free(gd);
    END;
}
END_TEST

START_TEST(test_dropout_rate)
{
    BEGIN;
    const int64_t n = (int64_t)1 << (quick() ? 16 : 22);
    const double ps[] = {0.1, 0.5, 0.75};
    float *v = malloc((size_t)n * sizeof *v);
    ck_assert_ptr_nonnull(v);
    fg_tensor *one = fg_ones(1, &n, FG_F32, FG_CUDA);
    for (int k = 0; k < 3; k++) {
        double p = ps[k];
        fg_tensor *y = fg_dropout(one, p, true, gen);
        ck_assert_msg(y != NULL, "%s", fg_last_error());
        ck_assert_int_eq(fg_to_f32_array(y, v, n), FG_OK);
        int64_t kept = 0, other = 0;
        float scale = (float)(1.0 / (1.0 - p));
        for (int64_t i = 0; i < n; i++) {
            other += v[i] != 0.0f && v[i] != scale;
            kept += v[i] != 0.0f;
        }
        ck_assert_int_eq(other, 0);
        double mean = (double)n * (1 - p), sigma = sqrt((double)n * p * (1 - p));
        ck_assert_msg(fabs((double)kept - mean) <= 5 * sigma, "p %g: kept %lld of %lld, expected %.0f +- %.0f", p,
                      (long long)kept, (long long)n, mean, 5 * sigma);
    }
    /* p = 1 drops everything. */
    fg_tensor *z = fg_dropout(one, 1.0, true, gen);
    ck_assert_int_eq(fg_to_f32_array(z, v, n), FG_OK);
    int64_t nonzero = 0;
    for (int64_t i = 0; i < n; i++) nonzero += v[i] != 0.0f;
    ck_assert_int_eq(nonzero, 0);
    free(v);
    END;
}
END_TEST

/* ---- embedding ---- */

START_TEST(test_embedding_forward)
{
    BEGIN;
    const int64_t Ds[] = {1, 3, 64, 130};
    for (int d = 0; d < 4; d++)
        for (int k = 0; k < 4; k++)
            for (int it = 0; it < 2; it++) {
                fg_dtype dt = float_dtypes[d];
                int64_t V = 37, D = Ds[k];
                fg_tensor *w = rnd(gen, FG_SHAPE(V, D), dt);
                fg_tensor *idx = ridx(gen, V, FG_SHAPE(5, 7), index_dtypes[it]); /* repeats likely */
                fg_tensor *wd = dev(w), *idxd = dev(idx);
                ck_bits(fg_embedding(wd, idxd), fg_embedding(w, idx), "embedding");
                /* Strided weight: columns of a transposed (D, V) table, and a row window of a wider table. */
                fg_tensor *wt = rnd(gen, FG_SHAPE(D, V), dt);
                ck_bits(fg_embedding(fg_transpose(dev(wt), 0, 1), idxd), fg_embedding(fg_transpose(wt, 0, 1), idx),
                        "embedding transposed weight");
                fg_tensor *ww = rnd(gen, FG_SHAPE(V, D + 5), dt);
                ck_bits(fg_embedding(fg_narrow(dev(ww), 1, 3, D), idxd), fg_embedding(fg_narrow(ww, 1, 3, D), idx),
                        "embedding row window");
                /* Strided indices and a 0-d index. */
                ck_bits(fg_embedding(wd, fg_transpose(idxd, 0, 1)), fg_embedding(w, fg_transpose(idx, 0, 1)),
                        "embedding strided indices");
                fg_tensor *i0 = fg_full(0, NULL, 36, index_dtypes[it], FG_CPU);
                ck_bits(fg_embedding(wd, dev(i0)), fg_embedding(w, i0), "embedding 0-d index");
            }
    /* Out of range on the device: no host sync in the op. The output row is zeros,
     * and the next synchronising call reports FG_ERR_INDEX naming the position
     * and the value, once (the record resets). */
    fg_tensor *wc = rnd(gen, FG_SHAPE(4, 3), FG_F32), *w = dev(wc);
    float wv[12], ov[12];
    ck_assert_int_eq(fg_copy_to_host(wc, wv, sizeof wv), FG_OK);
    int64_t bad[] = {0, 3, 4, 1};
    fg_tensor *bi = dev(fg_from_data(bad, FG_SHAPE(4), FG_I64, FG_CPU));
    fg_clear_error();
    fg_tensor *o = fg_embedding(w, bi);
    ck_assert_msg(o != NULL, "%s", fg_last_error());
    ck_assert_int_eq(fg_cuda_synchronize(), FG_ERR_INDEX);
    ck_err(FG_ERR_INDEX, "embedding: index 4", "position 2");
    ck_assert_int_eq(fg_cuda_synchronize(), FG_OK);
    ck_assert_int_eq(fg_copy_to_host(o, ov, sizeof ov), FG_OK);
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 3; j++)
            ck_assert(ov[k * 3 + j] == (k == 2 ? 0.0f : wv[bad[k] * 3 + j]));
    /* A copy to the host surfaces it too (here of the op's own output). */
    int32_t neg[] = {0, -1};
    fg_clear_error();
    o = fg_embedding(w, dev(fg_from_data(neg, FG_SHAPE(2), FG_I32, FG_CPU)));
    ck_assert_msg(o != NULL, "%s", fg_last_error());
    ck_assert_int_eq(fg_copy_to_host(o, ov, 6 * sizeof *ov), FG_ERR_INDEX);
    ck_err(FG_ERR_INDEX, "index -1", "position 1");
    ck_assert_int_eq(fg_copy_to_host(o, ov, 6 * sizeof *ov), FG_OK); /* reported once */
    for (int j = 0; j < 3; j++) ck_assert(ov[j] == wv[j] && ov[3 + j] == 0.0f);
    /* The strided-column table path: the same. */
    fg_tensor *wtc = rnd(gen, FG_SHAPE(3, 4), FG_F32);
    o = fg_embedding(fg_transpose(dev(wtc), 0, 1), bi);
    ck_assert_msg(o != NULL, "%s", fg_last_error());
    ck_assert_int_eq(fg_cuda_synchronize(), FG_ERR_INDEX);
    ck_err(FG_ERR_INDEX, "index 4", "position 2");
    ck_assert_int_eq(fg_copy_to_host(o, ov, sizeof ov), FG_OK);
    for (int j = 0; j < 3; j++) ck_assert(ov[2 * 3 + j] == 0.0f);
    /* The backward skips the bad row (never writes out of bounds), both modes. */
    for (int det = 0; det < 2; det++) {
        fg_set_deterministic(det);
        fg_tensor *wg = dev(wc);
        ck_assert_int_eq(fg_set_requires_grad(wg, true), FG_OK);
        o = fg_embedding(wg, bi);
        ck_assert_msg(o != NULL, "%s", fg_last_error());
        ck_assert_int_eq(fg_backward_with_grad(o, fg_ones(FG_SHAPE(4, 3), FG_F32, FG_CUDA)), FG_OK);
        ck_assert_int_eq(fg_cuda_synchronize(), FG_ERR_INDEX);
        float gv[12];
        ck_assert_int_eq(fg_copy_to_host(fg_grad(wg), gv, sizeof gv), FG_OK);
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 3; j++) ck_assert(gv[r * 3 + j] == (r == 0 || r == 1 || r == 3 ? 1.0f : 0.0f));
        fg_set_deterministic(false);
    }
    /* A valid call afterwards works. */
    int64_t good[] = {3, 0, 2};
    fg_tensor *gi = fg_from_data(good, FG_SHAPE(3), FG_I64, FG_CPU);
    ck_bits(fg_embedding(w, dev(gi)), fg_embedding(wc, gi), "embedding after a bad call");
    ck_assert_int_eq(fg_cuda_synchronize(), FG_OK);
    /* The CPU still fails at once. */
    fg_clear_error();
    ck_assert_ptr_null(fg_embedding(wc, fg_from_data(bad, FG_SHAPE(4), FG_I64, FG_CPU)));
    ck_err(FG_ERR_INDEX, "index 4", "position 2");
    END;
}
END_TEST

static void embedding_backward_case(fg_generator *g, fg_dtype dt, fg_dtype it, int64_t V, int64_t D, int64_t n,
                                    bool det)
{
    fg_set_deterministic(det);
    fg_tensor *w, *wd;
    leaf_pair(rnd(g, FG_SHAPE(V, D), dt), &w, &wd);
    fg_tensor *idx = ridx(g, V, FG_SHAPE(n / 4, 4), it);
    backward_pair(g, fg_embedding(w, idx), fg_embedding(wd, dev(idx)));
    char what[160];
    snprintf(what, sizeof what, "embedding backward %s %s V %lld D %lld n %lld %s", fg_dtype_name(dt),
             fg_dtype_name(it), (long long)V, (long long)D, (long long)n, det ? "deterministic" : "atomic");
    if (det)
        ck_bits(fg_grad(wd), fg_grad(w), what);
    else
        ck_close_to(fg_grad(wd), fg_grad(w), tol_acc(dt), what);
    fg_set_deterministic(false);
}

START_TEST(test_embedding_backward)
{
    BEGIN;
    for (int d = 0; d < 4; d++)
        for (int it = 0; it < 2; it++)
            for (int det = 0; det < 2; det++) {
                embedding_backward_case(gen, float_dtypes[d], index_dtypes[it], 37, 33, 64, det);
                /* Heavy repetition: 4096 tokens over 13 rows. */
                embedding_backward_case(gen, float_dtypes[d], index_dtypes[it], 13, 130, 4096, det);
                /* Indices never touching most rows (zeros there). */
                embedding_backward_case(gen, float_dtypes[d], index_dtypes[it], 1000, 7, 8, det);
            }
    END;
}
END_TEST

/* Deterministic mode: two runs give identical bits (here with heavy contention). */
START_TEST(test_deterministic_repeatable)
{
    BEGIN;
    ck_assert(!fg_deterministic());
    fg_set_deterministic(true);
    ck_assert(fg_deterministic());
    const int64_t V = 100, D = 64, n = (int64_t)1 << (quick() ? 12 : 16);
    fg_tensor *w = to_cuda(rnd(gen, FG_SHAPE(V, D), FG_F32), true);
    fg_tensor *idx = dev(ridx(gen, V, FG_SHAPE(n), FG_I64));
    fg_tensor *gy = dev(rnd(gen, FG_SHAPE(n, D), FG_F32));
    fg_tensor *g1 = NULL;
    for (int run = 0; run < 2; run++) {
        fg_clear_grad(w); /* a fresh gradient each run (accumulating would need fg_add) */
        ck_assert_int_eq(fg_backward_with_grad(fg_embedding(w, idx), gy), FG_OK);
        if (run == 0)
            g1 = fg_clone(fg_grad(w));
        else
            ck_bits(fg_grad(w), g1, "embedding backward run to run");
    }
    /* scatter_add and index_add (and so gather/index_select backward). */
    fg_tensor *a = dev(rnd(gen, FG_SHAPE(64, 50), FG_F32));
    fg_tensor *src = dev(rnd(gen, FG_SHAPE(64, 4000), FG_F32));
    fg_tensor *sidx = dev(ridx(gen, 50, FG_SHAPE(64, 4000), FG_I64));
    ck_bits(fg_scatter_add(a, 1, sidx, src), fg_scatter_add(a, 1, sidx, src), "scatter_add run to run");
    fg_tensor *src2 = dev(rnd(gen, FG_SHAPE(5000, 50), FG_F32));
    fg_tensor *iidx = dev(ridx(gen, 64, FG_SHAPE(5000), FG_I32));
    ck_bits(fg_index_add(a, 0, iidx, src2), fg_index_add(a, 0, iidx, src2), "index_add run to run");
    fg_set_deterministic(false);
    END;
}
END_TEST

/* ---- gather / scatter / scatter_add ---- */

START_TEST(test_gather)
{
    BEGIN;
    for (int d = 0; d < 4; d++)
        for (int it = 0; it < 2; it++) {
            fg_dtype dt = float_dtypes[d];
            fg_tensor *a = rnd(gen, FG_SHAPE(4, 5, 6), dt), *ad = dev(a);
            for (int dim = 0; dim < 3; dim++) {
                int64_t ishape[3] = {3, 4, 5};
                ishape[dim] = 9; /* longer than a along dim: repeats */
                fg_tensor *idx = ridx(gen, fg_shape(a)[dim], 3, ishape, index_dtypes[it]);
                ck_bits(fg_gather(ad, dim, dev(idx)), fg_gather(a, dim, idx), "gather");
                ck_bits(fg_gather(ad, dim - 3, dev(idx)), fg_gather(a, dim - 3, idx), "gather negative dim");
            }
            /* Strided input (permuted) and strided index (transposed). */
            fg_tensor *ap = fg_permute(a, 3, (const int[]){2, 0, 1}), *apd = fg_permute(ad, 3, (const int[]){2, 0, 1});
            fg_tensor *ib = ridx(gen, 4, FG_SHAPE(3, 7, 6), index_dtypes[it]);
            fg_tensor *it_ = fg_transpose(ib, 0, 2), *itd = fg_transpose(dev(ib), 0, 2); /* (6, 7, 3) */
            ck_bits(fg_gather(apd, 1, itd), fg_gather(ap, 1, it_), "gather strided");
        }
    /* Integer data. */
    fg_tensor *ai = ridx(gen, 1000000, FG_SHAPE(6, 9), FG_I64), *ii = ridx(gen, 9, FG_SHAPE(6, 20), FG_I32);
    ck_bits(fg_gather(dev(ai), 1, dev(ii)), fg_gather(ai, 1, ii), "gather i64");
    /* Backward (scatter_add of the gradient), both modes. */
    for (int det = 0; det < 2; det++)
        for (int d = 0; d < 4; d++) {
            fg_set_deterministic(det);
            fg_tensor *a, *ad;
            leaf_pair(rnd(gen, FG_SHAPE(6, 5, 7), float_dtypes[d]), &a, &ad);
            fg_tensor *idx = ridx(gen, 5, FG_SHAPE(6, 40, 3), FG_I64);
            backward_pair(gen, fg_gather(a, 1, idx), fg_gather(ad, 1, dev(idx)));
            if (det)
                ck_bits(fg_grad(ad), fg_grad(a), "gather backward deterministic");
            else
                ck_close_to(fg_grad(ad), fg_grad(a), tol_acc(float_dtypes[d]), "gather backward");
            fg_set_deterministic(false);
        }
    END;
}
END_TEST

START_TEST(test_scatter)
{
    BEGIN;
    for (int d = 0; d < 4; d++)
        for (int it = 0; it < 2; it++)
            for (int dim = 0; dim < 3; dim++) {
                fg_dtype dt = float_dtypes[d];
                fg_tensor *a = rnd(gen, FG_SHAPE(4, 5, 6), dt), *ad = dev(a);
                int64_t ishape[3] = {3, 4, 5}, sshape[3] = {4, 5, 6};
                ishape[dim] = 11; /* more positions than a has along dim: duplicates */
                sshape[dim] = 12; /* src larger than the index */
                fg_tensor *idx = ridx(gen, fg_shape(a)[dim], 3, ishape, index_dtypes[it]);
                fg_tensor *src = rnd(gen, 3, sshape, dt), *srcd = dev(src), *idxd = dev(idx);
                ck_bits(fg_scatter(ad, dim, idxd, srcd), fg_scatter(a, dim, idx, src), "scatter (last write wins)");
                fg_set_deterministic(true);
                ck_bits(fg_scatter_add(ad, dim, idxd, srcd), fg_scatter_add(a, dim, idx, src),
                        "scatter_add deterministic");
                fg_set_deterministic(false);
                ck_close_to(fg_scatter_add(ad, dim, idxd, srcd), fg_scatter_add(a, dim, idx, src), tol_acc(dt),
                            "scatter_add atomic");
            }
    /* Strided a, index and src. */
    fg_tensor *a = rnd(gen, FG_SHAPE(6, 5, 4), FG_F32), *ad = dev(a);
    fg_tensor *at = fg_transpose(a, 0, 2), *atd = fg_transpose(ad, 0, 2); /* (4, 5, 6) */
    fg_tensor *ib = ridx(gen, 5, FG_SHAPE(5, 9, 3), FG_I32);
    fg_tensor *it_ = fg_transpose(ib, 0, 2), *itd = fg_transpose(dev(ib), 0, 2); /* (3, 9, 5) */
    fg_tensor *sb = rnd(gen, FG_SHAPE(6, 9, 4), FG_F32);
    fg_tensor *st = fg_transpose(sb, 0, 2), *std_ = fg_transpose(dev(sb), 0, 2); /* (4, 9, 6) */
    ck_bits(fg_scatter(atd, 1, itd, std_), fg_scatter(at, 1, it_, st), "scatter strided");
    fg_set_deterministic(true);
    ck_bits(fg_scatter_add(atd, 1, itd, std_), fg_scatter_add(at, 1, it_, st), "scatter_add strided");
    fg_set_deterministic(false);
    ck_close_to(fg_scatter_add(atd, 1, itd, std_), fg_scatter_add(at, 1, it_, st), 1e-5, "scatter_add strided atomic");
    /* Integer data: exact in both modes (always the ordered path). */
    fg_tensor *ai = ridx(gen, 1000, FG_SHAPE(5, 8), FG_I64), *si = ridx(gen, 1000, FG_SHAPE(5, 30), FG_I64);
    fg_tensor *ii = ridx(gen, 8, FG_SHAPE(5, 30), FG_I64);
    ck_bits(fg_scatter_add(dev(ai), 1, dev(ii), dev(si)), fg_scatter_add(ai, 1, ii, si), "scatter_add i64");
    ck_bits(fg_scatter(dev(ai), 1, dev(ii), dev(si)), fg_scatter(ai, 1, ii, si), "scatter i64");
    fg_tensor *ai32 = fg_cast(ai, FG_I32), *si32 = fg_cast(si, FG_I32);
    ck_bits(fg_scatter_add(dev(ai32), 1, dev(ii), dev(si32)), fg_scatter_add(ai32, 1, ii, si32), "scatter_add i32");
    /* Backward of scatter and scatter_add: grads of a and src. */
    for (int add = 0; add < 2; add++)
        for (int d = 0; d < 4; d++) {
            fg_tensor *x, *xd, *s, *sd;
            leaf_pair(rnd(gen, FG_SHAPE(5, 6, 7), float_dtypes[d]), &x, &xd);
            leaf_pair(rnd(gen, FG_SHAPE(5, 14, 7), float_dtypes[d]), &s, &sd);
            fg_tensor *idx = ridx(gen, 6, FG_SHAPE(4, 13, 6), FG_I64), *idxd = dev(idx);
            if (add)
                backward_pair(gen, fg_scatter_add(x, 1, idx, s), fg_scatter_add(xd, 1, idxd, sd));
            else
                backward_pair(gen, fg_scatter(x, 1, idx, s), fg_scatter(xd, 1, idxd, sd));
            ck_bits(fg_grad(xd), fg_grad(x), add ? "scatter_add backward a" : "scatter backward a");
            ck_bits(fg_grad(sd), fg_grad(s), add ? "scatter_add backward src" : "scatter backward src");
        }
    END;
}
END_TEST

/* ---- index_select / index_add ---- */

START_TEST(test_index_select)
{
    BEGIN;
    for (int d = 0; d < 4; d++)
        for (int it = 0; it < 2; it++)
            for (int dim = 0; dim < 3; dim++) {
                fg_dtype dt = float_dtypes[d];
                fg_tensor *a = rnd(gen, FG_SHAPE(6, 7, 5), dt), *ad = dev(a);
                fg_tensor *idx = ridx(gen, fg_shape(a)[dim], FG_SHAPE(11), index_dtypes[it]), *idxd = dev(idx);
                ck_bits(fg_index_select(ad, dim, idxd), fg_index_select(a, dim, idx), "index_select");
                /* Strided (general path) and a strided index. */
                fg_tensor *ap = fg_permute(a, 3, (const int[]){1, 2, 0}), *apd = fg_permute(ad, 3, (const int[]){1, 2, 0});
                fg_tensor *i2 = ridx(gen, fg_shape(ap)[dim], FG_SHAPE(22), index_dtypes[it]);
                fg_tensor *is = fg_slice(i2, 0, 1, 22, 2), *isd = fg_slice(dev(i2), 0, 1, 22, 2);
                ck_bits(fg_index_select(apd, dim, isd), fg_index_select(ap, dim, is), "index_select strided");
                /* Narrowed along another dim (row path with an outer stride, or the
                 * general path) and a 0-d index. */
                int nd = (dim + 1) % 3;
                fg_tensor *an = fg_narrow(a, nd, 1, 3), *and_ = fg_narrow(ad, nd, 1, 3);
                ck_bits(fg_index_select(and_, dim, idxd), fg_index_select(an, dim, idx), "index_select narrowed");
                fg_tensor *i0 = fg_full(0, NULL, 2, index_dtypes[it], FG_CPU);
                ck_bits(fg_index_select(ad, dim, dev(i0)), fg_index_select(a, dim, i0), "index_select 0-d");
            }
    /* Unaligned rows: an f16 table of odd row length viewed from element 1. */
    fg_tensor *h = rnd(gen, FG_SHAPE(9 * 7 + 1), FG_F16);
    fg_tensor *hv = fg_view(fg_narrow(h, 0, 1, 63), FG_SHAPE(9, 7));
    fg_tensor *hvd = fg_view(fg_narrow(dev(h), 0, 1, 63), FG_SHAPE(9, 7));
    fg_tensor *ix = ridx(gen, 9, FG_SHAPE(20), FG_I64);
    ck_bits(fg_index_select(hvd, 0, dev(ix)), fg_index_select(hv, 0, ix), "index_select unaligned");
    /* Backward (index_add of the gradient). */
    for (int det = 0; det < 2; det++)
        for (int d = 0; d < 4; d++) {
            fg_set_deterministic(det);
            fg_tensor *a, *ad;
            leaf_pair(rnd(gen, FG_SHAPE(6, 7, 5), float_dtypes[d]), &a, &ad);
            fg_tensor *idx = ridx(gen, 7, FG_SHAPE(50), FG_I32);
            backward_pair(gen, fg_index_select(a, 1, idx), fg_index_select(ad, 1, dev(idx)));
            if (det)
                ck_bits(fg_grad(ad), fg_grad(a), "index_select backward deterministic");
            else
                ck_close_to(fg_grad(ad), fg_grad(a), tol_acc(float_dtypes[d]), "index_select backward");
            fg_set_deterministic(false);
        }
    END;
}
END_TEST

/* A bad index on the device: the op returns (no host sync), skips that element
 * (a zero for gathers, the target left alone for scatters and adds) and the
 * next synchronising call reports FG_ERR_INDEX naming the op, value and
 * position, once. The rest of the result is right. */
static void ck_bad_index(fg_tensor *got, const double *want, int64_t n, const char *op, const char *value,
                         const char *pos)
{
    ck_assert_msg(got != NULL, "%s: %s", op, fg_last_error());
    ck_assert_int_eq(fg_cuda_synchronize(), FG_ERR_INDEX);
    ck_err(FG_ERR_INDEX, op, value);
    ck_assert_msg(strstr(fg_last_error(), pos) != NULL, "%s: %s", pos, fg_last_error());
    ck_assert_int_eq(fg_cuda_synchronize(), FG_OK); /* reported once */
    double v[16];
    ck_assert(n <= 16 && fg_numel(got) == n);
    read_f64(got, v, n);
    for (int64_t k = 0; k < n; k++)
        ck_assert_msg(v[k] == want[k], "%s element %lld: %g, expected %g", op, (long long)k, v[k], want[k]);
}

START_TEST(test_index_ops_bad_index)
{
    BEGIN;
    double av[12]; /* a (3, 4) = 1..12 */
    for (int k = 0; k < 12; k++) av[k] = k + 1;
    fg_tensor *a = dev(fg_from_f64(av, FG_SHAPE(3, 4), FG_F32, FG_CPU));
    fg_clear_error();
    /* gather along dim 1, index (3, 2) */
    int64_t gi[] = {0, 5, 1, 2, 0, 3};
    const double gw[] = {1, 0, 6, 7, 9, 12};
    ck_bad_index(fg_gather(a, 1, dev(fg_from_data(gi, FG_SHAPE(3, 2), FG_I64, FG_CPU))), gw, 6, "gather: index 5",
                 "of size 4", "position 1");
    /* index_select: whole rows (the vectorised path), then a transposed input (the general path) */
    int32_t si[] = {2, 7, 0};
    const double sw[] = {9, 10, 11, 12, 0, 0, 0, 0, 1, 2, 3, 4};
    fg_tensor *sidx = dev(fg_from_data(si, FG_SHAPE(3), FG_I32, FG_CPU));
    ck_bad_index(fg_index_select(a, 0, sidx), sw, 12, "index_select: index 7", "of size 3", "position 1");
    int64_t ti[] = {1, 9};
    const double tw[] = {2, 6, 10, 0, 0, 0}; /* (2, 3): a^T[idx[k], i] = a[i, idx[k]] */
    ck_bad_index(fg_index_select(fg_transpose(a, 0, 1), 0, dev(fg_from_data(ti, FG_SHAPE(2), FG_I64, FG_CPU))), tw, 6,
                 "index_select: index 9", "of size 4", "position 1");
    /* scatter / scatter_add along dim 0 with index (1, 4): column 1's target is bad */
    int64_t ci[] = {0, 3, 2, 1};
    const double srcv[] = {-1, -2, -3, -4};
    fg_tensor *cidx = dev(fg_from_data(ci, FG_SHAPE(1, 4), FG_I64, FG_CPU));
    fg_tensor *src = dev(fg_from_f64(srcv, FG_SHAPE(1, 4), FG_F32, FG_CPU));
    const double cw[] = {-1, 2, 3, 4, 5, 6, 7, -4, 9, 10, -3, 12};
    ck_bad_index(fg_scatter(a, 0, cidx, src), cw, 12, "scatter: index 3", "of size 3", "position 1");
    const double caw[] = {0, 2, 3, 4, 5, 6, 7, 4, 9, 10, 8, 12};
    for (int det = 0; det < 2; det++) {
        fg_set_deterministic(det);
        ck_bad_index(fg_scatter_add(a, 0, cidx, src), caw, 12, "scatter_add: index 3", "of size 3", "position 1");
    }
    /* index_add along dim 0 of ones at rows {1, 5}: f32 and bf16 (its f32 accumulator), both modes */
    int64_t ii[] = {1, 5};
    fg_tensor *iidx = dev(fg_from_data(ii, FG_SHAPE(2), FG_I64, FG_CPU));
    const double iw[] = {1, 2, 3, 4, 6, 7, 8, 9, 9, 10, 11, 12};
    for (int det = 0; det < 2; det++)
        for (int h = 0; h < 2; h++) {
            fg_dtype dt = h ? FG_BF16 : FG_F32;
            fg_set_deterministic(det);
            ck_bad_index(fg_index_add(fg_to(a, FG_CUDA, dt), 0, iidx, fg_ones(FG_SHAPE(2, 4), dt, FG_CUDA)), iw, 12,
                         "index_add: index 5", "of size 3", "position 1");
        }
    fg_set_deterministic(false);
    /* The backward of gather (a scatter_add) never writes out of bounds either. */
    fg_tensor *ag = dev(fg_from_f64(av, FG_SHAPE(3, 4), FG_F32, FG_CPU));
    ck_assert_int_eq(fg_set_requires_grad(ag, true), FG_OK);
    fg_tensor *o = fg_gather(ag, 1, dev(fg_from_data(gi, FG_SHAPE(3, 2), FG_I64, FG_CPU)));
    ck_assert_int_eq(fg_backward_with_grad(o, fg_ones(FG_SHAPE(3, 2), FG_F32, FG_CUDA)), FG_OK);
    ck_assert_int_eq(fg_cuda_synchronize(), FG_ERR_INDEX);
    const double gg[] = {1, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1};
    double gv[12];
    read_f64(fg_grad(ag), gv, 12);
    for (int k = 0; k < 12; k++) ck_assert_msg(gv[k] == gg[k], "gather backward element %d: %g", k, gv[k]);
    /* The CPU still fails at once. */
    fg_clear_error();
    ck_assert_ptr_null(fg_gather(fg_from_f64(av, FG_SHAPE(3, 4), FG_F32, FG_CPU), 1,
                                 fg_from_data(gi, FG_SHAPE(3, 2), FG_I64, FG_CPU)));
    ck_err(FG_ERR_INDEX, "gather: index 5", NULL);
    ck_assert_int_eq(fg_cuda_synchronize(), FG_OK);
    END;
}
END_TEST

START_TEST(test_index_add)
{
    BEGIN;
    for (int d = 0; d < 4; d++)
        for (int it = 0; it < 2; it++)
            for (int dim = 0; dim < 3; dim++) {
                fg_dtype dt = float_dtypes[d];
                fg_tensor *a = rnd(gen, FG_SHAPE(6, 7, 5), dt), *ad = dev(a);
                int64_t sshape[3] = {6, 7, 5};
                sshape[dim] = 23;
                fg_tensor *src = rnd(gen, 3, sshape, dt), *srcd = dev(src);
                fg_tensor *idx = ridx(gen, fg_shape(a)[dim], FG_SHAPE(23), index_dtypes[it]), *idxd = dev(idx);
                fg_set_deterministic(true);
                ck_bits(fg_index_add(ad, dim, idxd, srcd), fg_index_add(a, dim, idx, src), "index_add deterministic");
                fg_set_deterministic(false);
                ck_close_to(fg_index_add(ad, dim, idxd, srcd), fg_index_add(a, dim, idx, src), tol_acc(dt),
                            "index_add atomic");
                /* Strided src and a. */
                fg_tensor *st = fg_contiguous(fg_transpose(src, 0, 2)), *std_ = dev(st);
                fg_tensor *sv = fg_transpose(st, 0, 2), *svd = fg_transpose(std_, 0, 2);
                fg_tensor *at = fg_transpose(fg_contiguous(fg_transpose(a, 0, 1)), 0, 1);
                fg_tensor *atd = fg_transpose(dev(fg_contiguous(fg_transpose(a, 0, 1))), 0, 1);
                fg_set_deterministic(true);
                ck_bits(fg_index_add(atd, dim, idxd, svd), fg_index_add(at, dim, idx, sv), "index_add strided");
                fg_set_deterministic(false);
            }
    /* 0-d index, integer data. */
    fg_tensor *a = ridx(gen, 100, FG_SHAPE(4, 3), FG_I32), *s = ridx(gen, 100, FG_SHAPE(1, 3), FG_I32);
    fg_tensor *i0 = fg_full(0, NULL, 2, FG_I64, FG_CPU);
    ck_bits(fg_index_add(dev(a), 0, dev(i0), dev(s)), fg_index_add(a, 0, i0, s), "index_add 0-d index i32");
    /* Backward: a gets the gradient, src its index_select. */
    for (int d = 0; d < 4; d++) {
        fg_tensor *x, *xd, *sr, *srd;
        leaf_pair(rnd(gen, FG_SHAPE(5, 8, 3), float_dtypes[d]), &x, &xd);
        leaf_pair(rnd(gen, FG_SHAPE(5, 19, 3), float_dtypes[d]), &sr, &srd);
        fg_tensor *idx = ridx(gen, 8, FG_SHAPE(19), FG_I64);
        backward_pair(gen, fg_index_add(x, 1, idx, sr), fg_index_add(xd, 1, dev(idx), srd));
        ck_bits(fg_grad(xd), fg_grad(x), "index_add backward a");
        ck_bits(fg_grad(srd), fg_grad(sr), "index_add backward src");
    }
    END;
}
END_TEST

/* ---- topk ---- */

static void topk_case(fg_tensor *a, int k, int dim, bool largest, const char *what)
{
    fg_tensor *v, *i, *vd, *id;
    ck_assert_msg(fg_topk(a, k, dim, largest, &v, &i) == FG_OK, "%s cpu: %s", what, fg_last_error());
    ck_assert_msg(fg_topk(dev(a), k, dim, largest, &vd, &id) == FG_OK, "%s cuda: %s", what, fg_last_error());
    char w[200];
    snprintf(w, sizeof w, "%s values (k %d dim %d %s)", what, k, dim, largest ? "largest" : "smallest");
    ck_bits(vd, v, w);
    snprintf(w, sizeof w, "%s indices (k %d dim %d %s)", what, k, dim, largest ? "largest" : "smallest");
    ck_bits(id, i, w);
}

START_TEST(test_topk)
{
    BEGIN;
    const int64_t ns[] = {1, 2, 33, 1000, 4096, 5000, 9000};
    for (size_t z = 0; z < sizeof ns / sizeof *ns - (quick() ? 1 : 0); z++)
        for (int d = 0; d < 4; d++) {
            int64_t n = ns[z];
            fg_dtype dt = float_dtypes[d];
            int64_t rows = n > 4096 ? 3 : 7;
            /* Many ties: small integers as floats; and distinct values. */
            fg_tensor *t = fg_cast(ridx(gen, 9, FG_SHAPE(rows, n), FG_I64), dt);
            fg_tensor *r = rnd(gen, FG_SHAPE(rows, n), dt);
            for (int largest = 0; largest < 2; largest++) {
                int ks[] = {1, (int)(n < 5 ? n : 5), (int)n};
                for (int q = 0; q < 3; q++) {
                    topk_case(t, ks[q], 1, largest, "topk ties");
                    topk_case(r, ks[q], -1, largest, "topk");
                }
            }
        }
    /* NaN (largest first / smallest last), inf, -0 and +0 (equal: index order). */
    double v[] = {1, NAN, -INFINITY, 0.0, -0.0, 3, NAN, INFINITY, 3, -0.0, 2, 1};
    fg_tensor *a = fg_from_f64(v, FG_SHAPE(2, 6), FG_F32, FG_CPU);
    for (int largest = 0; largest < 2; largest++)
        for (int k = 0; k <= 6; k++) topk_case(a, k, 1, largest, "topk special");
    fg_tensor *a64 = fg_from_f64(v, FG_SHAPE(12), FG_F64, FG_CPU);
    topk_case(a64, 12, 0, true, "topk special f64");
    topk_case(a64, 12, 0, false, "topk special f64");
    /* Other dims (strided rows), a transposed input, long strided rows, integers. */
    fg_tensor *b = rnd(gen, FG_SHAPE(4, 300, 3), FG_F32);
    topk_case(b, 7, 1, true, "topk middle dim");
    topk_case(b, 2, 0, false, "topk dim 0");
    topk_case(fg_transpose(rnd(gen, FG_SHAPE(50, 6), FG_BF16), 0, 1), 10, 1, true, "topk transposed");
    topk_case(rnd(gen, FG_SHAPE(2, 5000, 2), FG_F32), 17, 1, true, "topk long strided");
    topk_case(ridx(gen, 50, FG_SHAPE(3, 100), FG_I32), 20, 1, true, "topk i32");
    topk_case(ridx(gen, 50, FG_SHAPE(3, 6000), FG_I64), 20, 1, false, "topk long i64");
    /* Backward: scatter of the gradient at the picked indices. */
    for (int d = 0; d < 4; d++) {
        fg_tensor *x, *xd, *vv, *vd;
        leaf_pair(rnd(gen, FG_SHAPE(5, 40, 3), float_dtypes[d]), &x, &xd);
        ck_assert_int_eq(fg_topk(x, 6, 1, true, &vv, NULL), FG_OK);
        ck_assert_int_eq(fg_topk(xd, 6, 1, true, &vd, NULL), FG_OK);
        backward_pair(gen, vv, vd);
        ck_bits(fg_grad(xd), fg_grad(x), "topk backward");
    }
    END;
}
END_TEST

/* ---- concat / stack / split / chunk (copies through fg__copy_elements) ---- */

START_TEST(test_join)
{
    BEGIN;
    for (int d = 0; d < 4; d++) {
        fg_dtype dt = float_dtypes[d];
        fg_tensor *x = rnd(gen, FG_SHAPE(3, 4, 5), dt), *y = rnd(gen, FG_SHAPE(3, 2, 5), dt);
        fg_tensor *zb = rnd(gen, FG_SHAPE(5, 7, 3), dt);
        fg_tensor *z = fg_permute(zb, 3, (const int[]){2, 1, 0}), *zd = fg_permute(dev(zb), 3, (const int[]){2, 1, 0});
        fg_tensor *cat[3] = {x, y, z}, *catd[3] = {dev(x), dev(y), zd}; /* (3, 4|2|7, 5) */
        ck_bits(fg_concat(3, catd, 1), fg_concat(3, cat, 1), "concat");
        fg_tensor *w = rnd(gen, FG_SHAPE(3, 4, 5), dt);
        fg_tensor *wt = fg_transpose(fg_contiguous(fg_transpose(w, 0, 2)), 0, 2);
        fg_tensor *st[3] = {x, wt, x}, *std_[3] = {catd[0], fg_transpose(dev(fg_contiguous(fg_transpose(w, 0, 2))), 0, 2),
                                                    catd[0]};
        for (int dim = -4; dim < 4; dim++) ck_bits(fg_stack(3, std_, dim), fg_stack(3, st, dim), "stack");
        fg_tensor *parts[3], *partsd[3];
        ck_assert_int_eq(fg_split(z, 1, 3, (const int64_t[]){2, 4, 1}, parts), FG_OK);
        ck_assert_int_eq(fg_split(zd, 1, 3, (const int64_t[]){2, 4, 1}, partsd), FG_OK);
        for (int k = 0; k < 3; k++) ck_bits(partsd[k], parts[k], "split");
        ck_assert_int_eq(fg_chunk(z, 2, 2, parts), FG_OK);
        ck_assert_int_eq(fg_chunk(zd, 2, 2, partsd), FG_OK);
        for (int k = 0; k < 2; k++) ck_bits(partsd[k], parts[k], "chunk");
        /* Backward of concat and stack: each input gets its window of the gradient. */
        fg_tensor *p, *pd, *q, *qd;
        leaf_pair(rnd(gen, FG_SHAPE(2, 3, 4), dt), &p, &pd);
        leaf_pair(rnd(gen, FG_SHAPE(2, 5, 4), dt), &q, &qd);
        backward_pair(gen, fg_concat(2, (fg_tensor *[]){p, q}, 1), fg_concat(2, (fg_tensor *[]){pd, qd}, 1));
        ck_bits(fg_grad(pd), fg_grad(p), "concat backward");
        ck_bits(fg_grad(qd), fg_grad(q), "concat backward");
        fg_tensor *r, *rd, *s, *sd;
        leaf_pair(rnd(gen, FG_SHAPE(3, 4), dt), &r, &rd);
        leaf_pair(rnd(gen, FG_SHAPE(3, 4), dt), &s, &sd);
        backward_pair(gen, fg_stack(2, (fg_tensor *[]){r, s}, 2), fg_stack(2, (fg_tensor *[]){rd, sd}, 2));
        ck_bits(fg_grad(rd), fg_grad(r), "stack backward");
        ck_bits(fg_grad(sd), fg_grad(s), "stack backward");
    }
    END;
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("cuda_index_random");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_rand_uniform_randint_bits);
    tcase_add_test(tc, test_randn_normal_close);
    tcase_add_test(tc, test_dropout_bits);
    tcase_add_test(tc, test_dropout_rate);
    tcase_add_test(tc, test_embedding_forward);
    tcase_add_test(tc, test_embedding_backward);
    tcase_add_test(tc, test_deterministic_repeatable);
    tcase_add_test(tc, test_gather);
    tcase_add_test(tc, test_scatter);
    tcase_add_test(tc, test_index_select);
    tcase_add_test(tc, test_index_add);
    tcase_add_test(tc, test_index_ops_bad_index);
    tcase_add_test(tc, test_topk);
    tcase_add_test(tc, test_join);
    suite_add_tcase(s, tc);
    return s;
}

FG_CUDA_TEST_MAIN(make_suite, "cuda_index_random")
