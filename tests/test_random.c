/* Suite "random": Philox4x32-10 known answers, generator offsets and
 * reproducibility, distribution statistics, argument errors, and the exact
 * word layout of every draw (what a CUDA implementation must reproduce). */
#include <string.h>
#include "testutil.h"

static fg_scope *tscope;
static void setup(void)
{
    fg_clear_error();
    tscope = fg_scope_begin();
}
static void teardown(void)
{
    ck_assert_int_eq(fg_scope_end(tscope), FG_OK);
}

static void philox_kat(const uint32_t ctr[4], const uint32_t key[2], const uint32_t expect[4])
{
    uint32_t out[4];
    fg_philox4x32_10(ctr, key, out);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(out[i] == expect[i], "word %d = %08x, expected %08x", i, out[i], expect[i]);
}

/* Word w of the draw that starts at counter block `offset` (see random.h). */
static uint32_t word_at(uint64_t seed, uint64_t offset, uint64_t w)
{
    uint64_t block = offset + w / 4;
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), 0, 0};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t out[4];
    fg_philox4x32_10(ctr, key, out);
    return out[w % 4];
}

/* curand_uniform in float arithmetic: (0, 1]. */
static float curand_uniform_ref(uint32_t x)
{
    volatile float f = (float)x;
    volatile float p = f * 0x1p-32f;
    return p + 0x1p-33f;
}

static double *values(const fg_tensor *t)
{
    int64_t n = fg_numel(t);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(fg_to_f64_array(t, v, n), FG_OK);
    return v;
}

static void moments(const double *v, int64_t n, double *mean, double *std)
{
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) s += v[i];
    *mean = s / (double)n;
    for (int64_t i = 0; i < n; i++) s2 += (v[i] - *mean) * (v[i] - *mean);
    *std = sqrt(s2 / (double)(n - 1));
}

/* ------------------------------------------------------------- Philox KAT */
START_TEST(test_philox_kat_zero)
{
    philox_kat((const uint32_t[]){0, 0, 0, 0}, (const uint32_t[]){0, 0},
               (const uint32_t[]){0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
}
END_TEST

START_TEST(test_philox_kat_ones)
{
    philox_kat((const uint32_t[]){0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
               (const uint32_t[]){0xffffffff, 0xffffffff},
               (const uint32_t[]){0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
}
END_TEST

START_TEST(test_philox_kat_pi)
{
    philox_kat((const uint32_t[]){0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
               (const uint32_t[]){0xa4093822, 0x299f31d0},
               (const uint32_t[]){0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}
END_TEST

/* ------------------------------------------------------------ generators */
START_TEST(test_generator_state)
{
    fg_generator *g = fg_generator_new(0x123456789abcdefULL);
    ck_assert_ptr_nonnull(g);
    ck_assert_uint_eq(fg_generator_seed(g), 0x123456789abcdefULL);
    ck_assert_uint_eq(fg_generator_offset(g), 0);
    ck_assert_uint_eq(fg_generator_advance(g, 10), 0); /* 10 words: 3 blocks */
    ck_assert_uint_eq(fg_generator_offset(g), 3);
    ck_assert_uint_eq(fg_generator_advance(g, 4), 3);
    ck_assert_uint_eq(fg_generator_offset(g), 4);
    ck_assert_uint_eq(fg_generator_advance(g, 1), 4);
    ck_assert_uint_eq(fg_generator_offset(g), 5);
    ck_assert_uint_eq(fg_generator_advance(g, 0), 5);
    ck_assert_uint_eq(fg_generator_offset(g), 5);
    fg_generator_set_state(g, 7, (1ULL << 40) + 1);
    ck_assert_uint_eq(fg_generator_seed(g), 7);
    ck_assert_uint_eq(fg_generator_offset(g), (1ULL << 40) + 1);
    fg_generator_free(g);
    fg_generator_free(NULL);
    ck_assert_uint_eq(fg_generator_seed(fg_default_generator()), 0x5eed);
}
END_TEST

START_TEST(test_draws_advance_offset)
{
    fg_generator *g = fg_generator_new(1);
    struct { int kind; int64_t n; uint64_t blocks; } cases[] = {
        {0, 10, 3}, {0, 4, 1}, {0, 1, 1}, {0, 0, 0}, /* rand: one word per element */
        {1, 5, 2}, {1, 3, 1}, {1, 8, 2}, {1, 9, 3},  /* randn: words rounded up to pairs */
        {2, 9, 3}, {3, 17, 5},                        /* randint, uniform */
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        uint64_t before = fg_generator_offset(g);
        int64_t n = cases[k].n;
        fg_tensor *t = cases[k].kind == 0   ? fg_rand(g, 1, &n, FG_F32, FG_CPU)
                       : cases[k].kind == 1 ? fg_randn(g, 1, &n, FG_F64, FG_CPU)
                       : cases[k].kind == 2 ? fg_randint(g, 0, 10, 1, &n, FG_I64, FG_CPU)
                                            : fg_uniform(g, -1, 1, 1, &n, FG_BF16, FG_CPU);
        ck_assert_ptr_nonnull(t);
        ck_assert_int_eq(fg_numel(t), n);
        ck_assert_msg(fg_generator_offset(g) - before == cases[k].blocks, "case %zu advanced %llu blocks", k,
                      (unsigned long long)(fg_generator_offset(g) - before));
    }
    fg_generator_free(g);
}
END_TEST

START_TEST(test_reproducible)
{
    fg_generator *g1 = fg_generator_new(99), *g2 = fg_generator_new(99);
    fg_tensor *a = fg_randn(g1, FG_SHAPE(3, 7), FG_F64, FG_CPU);
    fg_tensor *b = fg_randn(g2, FG_SHAPE(3, 7), FG_F64, FG_CPU);
    double *va = values(a), *vb = values(b);
    ck_assert(memcmp(va, vb, 21 * sizeof(double)) == 0);
    /* the next draw continues the stream: different numbers */
    const uint64_t oc = fg_generator_offset(g1);
    ck_assert_uint_eq(oc, 6); /* 21 normals = 22 words = 6 blocks */
    fg_tensor *c = fg_randn(g1, FG_SHAPE(3, 7), FG_F64, FG_CPU);
    double *vc = values(c);
    int same = 0;
    for (int i = 0; i < 21; i++) same += va[i] == vc[i];
    ck_assert_int_eq(same, 0);
    /* rewinding to (seed, offset) reproduces it */
    fg_generator_set_state(g2, 99, oc);
    fg_tensor *d = fg_randn(g2, FG_SHAPE(3, 7), FG_F64, FG_CPU);
    double *vd = values(d);
    ck_assert(memcmp(vc, vd, 21 * sizeof(double)) == 0);
    /* an f32 draw from the same state is the f64 draw rounded */
    fg_generator_set_state(g2, 99, 0);
    fg_tensor *f = fg_randn(g2, FG_SHAPE(21), FG_F32, FG_CPU);
    float vf[21];
    ck_assert_int_eq(fg_copy_to_host(f, vf, sizeof vf), FG_OK);
    for (int i = 0; i < 21; i++) ck_assert(vf[i] == (float)va[i]);
    free(va);
    free(vb);
    free(vc);
    free(vd);
    fg_generator_free(g1);
    fg_generator_free(g2);
}
END_TEST

START_TEST(test_different_seeds_differ)
{
    fg_generator *g1 = fg_generator_new(1), *g2 = fg_generator_new(2);
    fg_tensor *a = fg_rand(g1, FG_SHAPE(1000), FG_F64, FG_CPU);
    fg_tensor *b = fg_rand(g2, FG_SHAPE(1000), FG_F64, FG_CPU);
    double *va = values(a), *vb = values(b);
    int same = 0;
    for (int i = 0; i < 1000; i++) same += va[i] == vb[i];
    ck_assert_int_le(same, 1);
    /* seeds that differ only in the high 32 bits differ too */
    fg_generator_set_state(g1, 1ULL << 32, 0);
    fg_generator_set_state(g2, 2ULL << 32, 0);
    fg_tensor *c = fg_randint(g1, 0, 1 << 30, FG_SHAPE(100), FG_I64, FG_CPU);
    fg_tensor *d = fg_randint(g2, 0, 1 << 30, FG_SHAPE(100), FG_I64, FG_CPU);
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(c, d, 0, 0, &r), FG_OK);
    ck_assert_int_ge(r.n_mismatch, 98);
    free(va);
    free(vb);
    fg_generator_free(g1);
    fg_generator_free(g2);
}
END_TEST

/* ---------------------------------------------------------- distributions */
START_TEST(test_rand_unit_interval)
{
    const int64_t n = 100000;
    fg_generator *g = fg_generator_new(2024);
    fg_tensor *t = fg_rand(g, 1, &n, FG_F64, FG_CPU);
    ck_assert_int_eq(fg_dtype_of(t), FG_F64);
    double *v = values(t), mean, std;
    double lo = 1, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        ck_assert(v[i] >= 0.0 && v[i] < 1.0);
        lo = fmin(lo, v[i]);
        hi = fmax(hi, v[i]);
    }
    moments(v, n, &mean, &std);
    ck_assert_msg(fabs(mean - 0.5) < 5 * sqrt(1.0 / 12 / n), "mean %g", mean);
    ck_assert_msg(fabs(std - sqrt(1.0 / 12)) < 0.005, "std %g", std);
    ck_assert_double_lt(lo, 1e-3);
    ck_assert_double_gt(hi, 1 - 1e-3);
    /* uniform in every tenth: a coarse histogram */
    int hist[10] = {0};
    for (int64_t i = 0; i < n; i++) hist[(int)(v[i] * 10)]++;
    for (int b = 0; b < 10; b++) ck_assert_msg(abs(hist[b] - 10000) < 5 * 95, "bin %d: %d", b, hist[b]);
    free(v);
    fg_generator_free(g);
}
END_TEST

START_TEST(test_rand_low_precision_stays_below_one)
{
    /* [0, 1) must hold after rounding to the stored dtype too */
    const int64_t n = 100000;
    fg_generator *g = fg_generator_new(5);
    for (int d = FG_F32; d <= FG_F16; d++) {
        fg_tensor *t = fg_rand(g, 1, &n, (fg_dtype)d, FG_CPU);
        double *v = values(t);
        int64_t bad = 0;
        double mean = 0;
        for (int64_t i = 0; i < n; i++) {
            bad += !(v[i] >= 0.0 && v[i] < 1.0);
            mean += v[i];
        }
        ck_assert_msg(bad == 0, "%s: %lld of %lld values outside [0, 1)", fg_dtype_name((fg_dtype)d),
                      (long long)bad, (long long)n);
        ck_assert_double_lt(fabs(mean / n - 0.5), 0.01);
        free(v);
    }
    fg_tensor *u = fg_uniform(g, -2, 2, 1, &n, FG_BF16, FG_CPU);
    double *v = values(u);
    for (int64_t i = 0; i < n; i++) ck_assert(v[i] >= -2.0 && v[i] < 2.0);
    free(v);
    fg_generator_free(g);
}
END_TEST

START_TEST(test_randn_moments)
{
    const int64_t n = 100001; /* odd: the last Box-Muller pair is half used */
    fg_generator *g = fg_generator_new(77);
    fg_tensor *t = fg_randn(g, 1, &n, FG_F64, FG_CPU);
    double *v = values(t), mean, std;
    moments(v, n, &mean, &std);
    ck_assert_msg(fabs(mean) < 5 / sqrt((double)n), "mean %g", mean);
    ck_assert_msg(fabs(std - 1) < 0.01, "std %g", std);
    int64_t within1 = 0, beyond4 = 0;
    for (int64_t i = 0; i < n; i++) {
        ck_assert(isfinite(v[i]));
        within1 += fabs(v[i]) < 1;
        beyond4 += fabs(v[i]) > 4;
    }
    ck_assert_double_lt(fabs((double)within1 / n - 0.6827), 0.01);
    ck_assert_int_lt(beyond4, 30); /* expected ~6 */
    free(v);
    fg_generator_free(g);
}
END_TEST

START_TEST(test_uniform_range)
{
    const int64_t n = 50000;
    fg_generator *g = fg_generator_new(8);
    fg_tensor *t = fg_uniform(g, -3, 5, 1, &n, FG_F32, FG_CPU);
    ck_assert_int_eq(fg_dtype_of(t), FG_F32);
    double *v = values(t), mean, std;
    for (int64_t i = 0; i < n; i++) ck_assert(v[i] >= -3 && v[i] < 5);
    moments(v, n, &mean, &std);
    ck_assert_msg(fabs(mean - 1) < 5 * 8 / sqrt(12.0 * n), "mean %g", mean);
    ck_assert_msg(fabs(std - 8 / sqrt(12.0)) < 0.03, "std %g", std);
    free(v);
    /* a degenerate range is the constant */
    fg_tensor *c = fg_uniform(g, 2.5, 2.5, FG_SHAPE(4), FG_F64, FG_CPU);
    ck_tensor_values(c, (const double[]){2.5, 2.5, 2.5, 2.5}, 4, 0);
    fg_generator_free(g);
}
END_TEST

START_TEST(test_normal_mean_std)
{
    const int64_t n = 50000;
    fg_generator *g = fg_generator_new(9);
    fg_tensor *t = fg_normal(g, 10, 0.5, 1, &n, FG_F64, FG_CPU);
    double *v = values(t), mean, std;
    moments(v, n, &mean, &std);
    ck_assert_msg(fabs(mean - 10) < 5 * 0.5 / sqrt((double)n), "mean %g", mean);
    ck_assert_msg(fabs(std - 0.5) < 0.01, "std %g", std);
    free(v);
    /* normal(m, s) is m + s * randn from the same state */
    fg_generator_set_state(g, 9, 0);
    fg_tensor *z = fg_randn(g, 1, &n, FG_F64, FG_CPU);
    double *vz = values(z), *vt = values(t);
    for (int64_t i = 0; i < n; i += 997) ck_close(vt[i], 10 + 0.5 * vz[i], 1e-12);
    free(vz);
    free(vt);
    fg_tensor *zero = fg_normal(g, -1, 0, FG_SHAPE(3), FG_F64, FG_CPU);
    ck_tensor_values(zero, (const double[]){-1, -1, -1}, 3, 0);
    fg_generator_free(g);
}
END_TEST

START_TEST(test_randint_range_and_dtype)
{
    const int64_t n = 20000;
    fg_generator *g = fg_generator_new(10);
    for (int d = FG_I32; d <= FG_I64; d++) {
        fg_tensor *t = fg_randint(g, -5, 7, 1, &n, (fg_dtype)d, FG_CPU);
        ck_assert_int_eq(fg_dtype_of(t), d);
        double *v = values(t);
        int count[12] = {0};
        for (int64_t i = 0; i < n; i++) {
            ck_assert(v[i] >= -5 && v[i] < 7 && v[i] == floor(v[i]));
            count[(int)v[i] + 5]++;
        }
        for (int k = 0; k < 12; k++) ck_assert_msg(abs(count[k] - (int)(n / 12)) < 5 * 40, "value %d: %d", k - 5, count[k]);
        free(v);
    }
    /* single-value range */
    fg_tensor *one = fg_randint(g, 3, 4, FG_SHAPE(5), FG_I32, FG_CPU);
    ck_tensor_values(one, (const double[]){3, 3, 3, 3, 3}, 5, 0);
    fg_generator_free(g);
}
END_TEST

START_TEST(test_randint_wide_ranges)
{
    fg_generator *g = fg_generator_new(11);
    /* the full 2^32 span is accepted (random.h: hi - lo <= 2^32) */
    fg_tensor *full = fg_randint(g, INT32_MIN, (int64_t)INT32_MAX + 1, FG_SHAPE(64), FG_I32, FG_CPU);
    ck_assert_msg(full != NULL, "%s", fg_last_error());
    fg_tensor *wide = fg_randint(g, 0, 1LL << 32, FG_SHAPE(64), FG_I64, FG_CPU);
    ck_assert_msg(wide != NULL, "%s", fg_last_error());
    ck_assert_ptr_null(fg_randint(g, 0, (1LL << 32) + 1, FG_SHAPE(4), FG_I64, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
    fg_clear_error();
    /* values far from 0 stay exact (no trip through double) */
    const int64_t lo = (1LL << 62) + 1;
    fg_generator_set_state(g, 11, 100);
    fg_tensor *big = fg_randint(g, lo, lo + 1000, FG_SHAPE(16), FG_I64, FG_CPU);
    ck_assert_ptr_nonnull(big);
    int64_t v[16];
    ck_assert_int_eq(fg_copy_to_host(big, v, sizeof v), FG_OK);
    for (int i = 0; i < 16; i++)
        ck_assert_msg(v[i] == lo + (int64_t)(word_at(11, 100, (uint64_t)i) % 1000), "element %d: %lld", i,
                      (long long)v[i]);
    /* an i32 draw whose range does not fit i32 is refused */
    ck_assert_ptr_nonnull(fg_randint(g, 0, 1LL << 31, FG_SHAPE(4), FG_I32, FG_CPU)); /* [0, 2^31) fits */
    ck_assert_ptr_null(fg_randint(g, 0, (1LL << 31) + 1, FG_SHAPE(4), FG_I32, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
    ck_assert_ptr_null(fg_randint(g, INT32_MIN - 1LL, 0, FG_SHAPE(4), FG_I32, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
    fg_generator_free(g);
}
END_TEST

START_TEST(test_invalid_args)
{
    fg_generator *g = fg_generator_new(12);
    ck_assert_ptr_null(fg_uniform(g, 1, 0, FG_SHAPE(2), FG_F32, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "fg_uniform"));
    ck_assert_ptr_null(fg_uniform(g, NAN, 1, FG_SHAPE(2), FG_F32, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
    ck_assert_ptr_null(fg_uniform(g, 0, INFINITY, FG_SHAPE(2), FG_F32, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
    ck_assert_ptr_null(fg_normal(g, 0, -1, FG_SHAPE(2), FG_F32, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "fg_normal"));
    ck_assert_ptr_null(fg_normal(g, NAN, 1, FG_SHAPE(2), FG_F32, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
    ck_assert_ptr_null(fg_randint(g, 5, 5, FG_SHAPE(2), FG_I64, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
    ck_assert_ptr_null(fg_randint(g, 5, -5, FG_SHAPE(2), FG_I64, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
    ck_assert_ptr_null(fg_randint(g, INT64_MIN, INT64_MAX, FG_SHAPE(2), FG_I64, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
    ck_assert_ptr_null(fg_rand(g, FG_SHAPE(2), FG_I32, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_DTYPE);
    ck_assert_ptr_null(fg_randn(g, FG_SHAPE(2), FG_I64, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_DTYPE);
    ck_assert_ptr_null(fg_randint(g, 0, 3, FG_SHAPE(2), FG_F32, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_DTYPE);
    ck_assert_ptr_null(fg_rand(g, FG_SHAPE(2, -1), FG_F32, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_SHAPE);
    ck_assert_ptr_null(fg_rand(g, 9, (const int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}, FG_F32, FG_CPU));
    ck_assert_int_eq(fg_last_status(), FG_ERR_DIM);
    if (!fg_cuda_available()) {
        ck_assert_ptr_null(fg_rand(g, FG_SHAPE(2), FG_F32, FG_CUDA));
        ck_assert_int_eq(fg_last_status(), FG_ERR_DEVICE);
    }
    /* failed draws consume nothing */
    ck_assert_uint_eq(fg_generator_offset(g), 0);
    fg_generator_free(g);
}
END_TEST

/* ------------------------------------------------------- exact layouts */
START_TEST(test_rand_bit_layout)
{
    const uint64_t seed = 0x0123456789abcdefULL, off = (1ULL << 32) - 2; /* the counter crosses 2^32 */
    fg_generator *g = fg_generator_new(seed);
    fg_generator_set_state(g, seed, off);
    const int64_t n = 37;
    fg_tensor *t = fg_rand(g, 1, &n, FG_F64, FG_CPU);
    double v[37];
    ck_assert_int_eq(fg_copy_to_host(t, v, sizeof v), FG_OK);
    for (int64_t i = 0; i < n; i++) {
        uint32_t w = word_at(seed, off, (uint64_t)i);
        double expect = 1.0 - (double)curand_uniform_ref(w);
        ck_assert_msg(v[i] == expect, "element %lld = %.17g, expected %.17g", (long long)i, v[i], expect);
        /* and the real-number formula, up to float rounding */
        ck_assert_double_le(fabs(v[i] - (1.0 - ((double)w * 0x1p-32 + 0x1p-33))), 0x1p-24);
    }
    /* the NULL generator is the default one */
    fg_generator *d = fg_default_generator();
    uint64_t s0 = fg_generator_seed(d), o0 = fg_generator_offset(d);
    fg_tensor *u = fg_rand(NULL, FG_SHAPE(6), FG_F64, FG_CPU);
    ck_assert_uint_eq(fg_generator_offset(d), o0 + 2);
    ck_close(fg_get(u, (const int64_t[]){5}), 1.0 - (double)curand_uniform_ref(word_at(s0, o0, 5)), 0);
    fg_generator_free(g);
}
END_TEST

START_TEST(test_uniform_and_randint_layout)
{
    fg_generator *g = fg_generator_new(31337);
    fg_generator_set_state(g, 31337, 12);
    fg_tensor *u = fg_uniform(g, -2, 6, FG_SHAPE(9), FG_F64, FG_CPU);
    fg_tensor *r = fg_randint(g, -100, 100, FG_SHAPE(9), FG_I64, FG_CPU); /* starts at block 15 */
    double vu[9];
    int64_t vr[9];
    ck_assert_int_eq(fg_copy_to_host(u, vu, sizeof vu), FG_OK);
    ck_assert_int_eq(fg_copy_to_host(r, vr, sizeof vr), FG_OK);
    for (int i = 0; i < 9; i++) {
        double ur = 1.0 - (double)curand_uniform_ref(word_at(31337, 12, (uint64_t)i));
        ck_close(vu[i], -2 + 8 * ur, 1e-15);
        ck_assert_int_eq(vr[i], -100 + (int64_t)(word_at(31337, 15, (uint64_t)i) % 200));
    }
    fg_generator_free(g);
}
END_TEST

START_TEST(test_randn_layout)
{
    fg_generator *g = fg_generator_new(4);
    fg_generator_set_state(g, 4, 3);
    fg_tensor *t = fg_normal(g, 1.5, 2, FG_SHAPE(7), FG_F64, FG_CPU);
    double v[7];
    ck_assert_int_eq(fg_copy_to_host(t, v, sizeof v), FG_OK);
    for (int i = 0; i < 7; i += 2) {
        double u = curand_uniform_ref(word_at(4, 3, (uint64_t)i));
        double w = curand_uniform_ref(word_at(4, 3, (uint64_t)i + 1));
        double rr = sqrt(-2 * log(u)), th = 2 * M_PI * w;
        ck_close(v[i], 1.5 + 2 * rr * sin(th), 1e-12);
        if (i + 1 < 7) ck_close(v[i + 1], 1.5 + 2 * rr * cos(th), 1e-12);
    }
    ck_assert_uint_eq(fg_generator_offset(g), 5);
    fg_generator_free(g);
}
END_TEST

static Suite *random_suite(void)
{
    Suite *s = suite_create("random");
    TCase *c = tcase_create("philox");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, test_philox_kat_zero);
    tcase_add_test(c, test_philox_kat_ones);
    tcase_add_test(c, test_philox_kat_pi);
    tcase_add_test(c, test_generator_state);
    tcase_add_test(c, test_draws_advance_offset);
    tcase_add_test(c, test_reproducible);
    tcase_add_test(c, test_different_seeds_differ);
    suite_add_tcase(s, c);

    c = tcase_create("distributions");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_set_timeout(c, 60);
    tcase_add_test(c, test_rand_unit_interval);
    tcase_add_test(c, test_rand_low_precision_stays_below_one);
    tcase_add_test(c, test_randn_moments);
    tcase_add_test(c, test_uniform_range);
    tcase_add_test(c, test_normal_mean_std);
    tcase_add_test(c, test_randint_range_and_dtype);
    tcase_add_test(c, test_randint_wide_ranges);
    tcase_add_test(c, test_invalid_args);
    suite_add_tcase(s, c);

    c = tcase_create("layout");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, test_rand_bit_layout);
    tcase_add_test(c, test_uniform_and_randint_layout);
    tcase_add_test(c, test_randn_layout);
    suite_add_tcase(s, c);
    return s;
}

FG_TEST_MAIN(random_suite)
