/* Shared frame for the GPU suites: skip (exit 77) without a GPU, run without
 * fork (CUDA is not fork-safe), and compare CUDA results with the CPU reference. */
#ifndef FG_CUDATEST_H
#define FG_CUDATEST_H

#include <stdio.h>
#include "testutil.h"

/* Asserts a (any device) matches b (CPU reference) within atol + rtol |b|,
 * naming the worst element. */
static inline void ck_matches(const fg_tensor *a, const fg_tensor *b, double atol, double rtol, const char *what)
{
    ck_assert_msg(a != NULL, "%s: result is NULL: %s", what, fg_last_error());
    ck_assert_msg(b != NULL, "%s: reference is NULL: %s", what, fg_last_error());
    fg_compare_result r;
    ck_assert_msg(fg_compare(a, b, atol, rtol, &r) == FG_OK, "%s: compare failed: %s", what, fg_last_error());
    ck_assert_msg(r.allclose, "%s: %lld mismatches, max abs err %.3g at %lld, rel l2 %.3g (atol %g rtol %g)", what,
                  (long long)r.n_mismatch, r.max_abs_err, (long long)r.worst_index, r.rel_l2_err, atol, rtol);
}

/* Copy of a CPU tensor on the GPU (same dtype), requiring grad when asked. */
static inline fg_tensor *to_cuda(fg_tensor *t, bool requires_grad)
{
    fg_tensor *d = fg_to(fg_detach(t), FG_CUDA, fg_dtype_of(t));
    ck_assert_msg(d != NULL, "to cuda: %s", fg_last_error());
    if (requires_grad) ck_assert_int_eq(fg_set_requires_grad(d, true), FG_OK);
    return d;
}

/* main for a GPU suite: 77 (automake SKIP) without a usable GPU. */
#define FG_CUDA_TEST_MAIN(make_suite, name)                                          \
    int main(void)                                                                   \
    {                                                                                \
        char desc_[256];                                                             \
        if (!fg_cuda_available()) {                                                  \
            printf("%s: GPU suite skipped (%s)\n", name,                             \
                   fg_cuda_device_description(desc_, sizeof desc_));                 \
            return 77;                                                               \
        }                                                                            \
        printf("%s: running on %s\n", name, fg_cuda_device_description(desc_, sizeof desc_)); \
        SRunner *sr = srunner_create(make_suite());                                  \
        srunner_set_fork_status(sr, CK_NOFORK);                                      \
        srunner_run_all(sr, CK_NORMAL);                                              \
        int failed = srunner_ntests_failed(sr);                                      \
        srunner_free(sr);                                                            \
        return failed ? 1 : 0;                                                       \
    }

#endif
