/* Shared helpers for the Check suites. */
#ifndef FG_TESTUTIL_H
#define FG_TESTUTIL_H

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <flashgrad.h>

/* Asserts |a - b| <= tol with a message naming both values. */
#define ck_close(a, b, tol)                                                                   \
    do {                                                                                      \
        double ck_a_ = (a), ck_b_ = (b);                                                      \
        ck_assert_msg(fabs(ck_a_ - ck_b_) <= (tol), "%s = %.10g, expected %.10g (tol %g)", #a, \
                      ck_a_, ck_b_, (double)(tol));                                           \
    } while (0)

/* Asserts a tensor's values equal `expected` (row-major) within tol. */
static inline void ck_tensor_values(const fg_tensor *t, const double *expected, int64_t n, double tol)
{
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(fg_numel(t), n);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    ck_assert_int_eq(fg_to_f64_array(t, v, n), FG_OK);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs(v[i] - expected[i]) <= tol || (isnan(v[i]) && isnan(expected[i])),
                      "element %lld = %.10g, expected %.10g", (long long)i, v[i], expected[i]);
    free(v);
}

static inline void ck_shape(const fg_tensor *t, int ndim, const int64_t *shape)
{
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(fg_ndim(t), ndim);
    for (int i = 0; i < ndim; i++) ck_assert_int_eq(fg_shape(t)[i], shape[i]);
}

/* Runs gradcheck on f64 CPU inputs and asserts it passed. */
static inline void ck_gradcheck(fg_gradcheck_fn f, void *ctx, int n, fg_tensor *const *inputs)
{
    fg_gradcheck_result r;
    fg_gradcheck_opts o = {.eps = 1e-6, .atol = 1e-6, .rtol = 1e-4, .seed = 7, .verbose = false};
    fg_status st = fg_gradcheck(f, ctx, n, inputs, &o, &r);
    ck_assert_msg(st == FG_OK, "gradcheck could not run: %s", fg_last_error());
    for (int i = 0; i < n; i++)
        ck_assert_msg(r.passed, "gradcheck failed: input %d max abs err %.3g rel %.3g", i, r.max_abs_err[i],
                      r.max_rel_err[i]);
}

/* Random f64 CPU tensor requiring grad, values in [lo, hi). */
static inline fg_tensor *rand_param(fg_generator *g, int ndim, const int64_t *shape, double lo, double hi)
{
    fg_tensor *t = fg_uniform(g, lo, hi, ndim, shape, FG_F64, FG_CPU);
    ck_assert_ptr_nonnull(t);
    fg_set_requires_grad(t, true);
    return t;
}

/* Per-test frame: a scope for everything the test makes, a generator `gen`
 * (seed FG_TEST_SEED), and at the end a check that no tensor or autograd node
 * outlived the test. */
#ifndef FG_TEST_SEED
#define FG_TEST_SEED 42
#endif
#define BEGIN                                                   \
    fg_memory_stats ms0_;                                       \
    fg_get_memory_stats(&ms0_);                                 \
    fg_scope *scope_ = fg_scope_begin();                        \
    ck_assert_ptr_nonnull(scope_);                              \
    fg_generator *gen = fg_generator_new(FG_TEST_SEED);         \
    ck_assert_ptr_nonnull(gen);                                 \
    (void)gen;                                                  \
    fg_clear_error()

#define END                                                     \
    do {                                                        \
        fg_generator_free(gen);                                 \
        ck_assert_int_eq(fg_scope_end(scope_), FG_OK);          \
        fg_memory_stats ms1_;                                   \
        fg_get_memory_stats(&ms1_);                             \
        ck_assert_int_eq(ms1_.live_tensors, ms0_.live_tensors); \
        ck_assert_int_eq(ms1_.live_nodes, ms0_.live_nodes);     \
    } while (0)

static inline fg_tensor *t64(const double *d, int ndim, const int64_t *shape)
{
    fg_tensor *t = fg_from_f64(d, ndim, shape, FG_F64, FG_CPU);
    ck_assert_msg(t != NULL, "fg_from_f64: %s", fg_last_error());
    return t;
}

/* f64 leaf requiring grad with the given values. */
static inline fg_tensor *p64(const double *d, int ndim, const int64_t *shape)
{
    fg_tensor *t = t64(d, ndim, shape);
    ck_assert_int_eq(fg_set_requires_grad(t, true), FG_OK);
    return t;
}

static inline void read_f64(const fg_tensor *t, double *v, int64_t n)
{
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(fg_numel(t), n);
    ck_assert_int_eq(fg_to_f64_array(t, v, n), FG_OK);
}

/* The last error has status `want` and its message contains both needles (either may be NULL). */
static inline void ck_err(fg_status want, const char *needle1, const char *needle2)
{
    ck_assert_msg(fg_last_status() == want, "status %s, expected %s (%s)", fg_status_name(fg_last_status()),
                  fg_status_name(want), fg_last_error());
    if (needle1)
        ck_assert_msg(strstr(fg_last_error(), needle1), "message '%s' lacks '%s'", fg_last_error(), needle1);
    if (needle2)
        ck_assert_msg(strstr(fg_last_error(), needle2), "message '%s' lacks '%s'", fg_last_error(), needle2);
}

/* a and b: same shape, and equal values within tol. */
static inline void ck_same_tensor(const fg_tensor *a, const fg_tensor *b, double tol)
{
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_shape(a, fg_ndim(b), fg_shape(b));
    int64_t n = fg_numel(b);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    ck_assert_int_eq(fg_to_f64_array(b, v, n), FG_OK);
    ck_tensor_values(a, v, n, tol);
    free(v);
}

/* Standard main: one suite, automake exit codes. */
#define FG_TEST_MAIN(make_suite)                                                  \
    int main(void)                                                                \
    {                                                                             \
        SRunner *sr = srunner_create(make_suite());                               \
        srunner_run_all(sr, CK_NORMAL);                                           \
        int failed = srunner_ntests_failed(sr);                                   \
        srunner_free(sr);                                                         \
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;                              \
    }

#endif
