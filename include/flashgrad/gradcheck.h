#ifndef FLASHGRAD_GRADCHECK_H
#define FLASHGRAD_GRADCHECK_H

#include <flashgrad/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A function of tensors for gradient checking: returns one output tensor
 * (any shape). It is called many times; it must be deterministic. */
typedef fg_tensor *(*fg_gradcheck_fn)(fg_tensor *const *inputs, void *ctx);

typedef struct {
    double eps;   /* finite-difference step (default 1e-6) */
    double atol;  /* pass when |analytic - numeric| <= atol + rtol * |numeric| */
    double rtol;  /* defaults 1e-5 and 1e-3 */
    uint64_t seed; /* for the random projection of the output (default 1234) */
    bool verbose;  /* print one line per input */
} fg_gradcheck_opts;

#define FG_GRADCHECK_MAX_INPUTS 16
typedef struct {
    int n_inputs;
    bool passed;
    double max_abs_err[FG_GRADCHECK_MAX_INPUTS]; /* per input */
    double max_rel_err[FG_GRADCHECK_MAX_INPUTS]; /* |a - n| / max(|n|, atol) */
    int64_t worst_index[FG_GRADCHECK_MAX_INPUTS]; /* flat index of the worst element */
} fg_gradcheck_result;

/* Central differences in float64 on the CPU against the analytic backward of
 * L = sum(f(inputs) * R), R a fixed random tensor, so every output element is
 * checked. Inputs must be f64 CPU tensors; those with requires_grad set are
 * checked (the others are held constant). opts may be NULL (defaults). Returns
 * FG_OK when the check ran (see result->passed), an error if it could not. */
fg_status fg_gradcheck(fg_gradcheck_fn f, void *ctx, int n_inputs, fg_tensor *const *inputs,
                       const fg_gradcheck_opts *opts, fg_gradcheck_result *result);

/* Compares two tensors of one shape, any dtypes/devices, elementwise in double. */
typedef struct {
    double max_abs_err;
    double max_rel_err;  /* |a-b| / max(|b|, tiny) */
    double rel_l2_err;   /* ||a-b|| / ||b|| */
    int64_t worst_index;
    int64_t n_mismatch;  /* elements with |a-b| > atol + rtol |b|, or NaN where the other is not */
    bool allclose;
} fg_compare_result;
fg_status fg_compare(const fg_tensor *a, const fg_tensor *b, double atol, double rtol,
                     fg_compare_result *result);

#ifdef __cplusplus
}
#endif
#endif
