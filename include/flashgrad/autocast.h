#ifndef FLASHGRAD_AUTOCAST_H
#define FLASHGRAD_AUTOCAST_H

#include <flashgrad/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Mixed-precision scope (thread-local, nestable, like torch.autocast on CUDA).
 * While a bf16/f16 scope is the innermost one, fg_matmul and fg_linear on CUDA
 * tensors of float32 (or the other 16-bit type) cast their operands to that
 * dtype with the differentiable fg_cast and return a result of that dtype: the
 * float32 leaves stay float32 and receive float32 gradients. f64 operands and
 * CPU tensors are never cast. Other ops are not affected.
 *   fg_autocast_begin(FG_BF16); ... fg_autocast_end();
 * dt must be FG_BF16, FG_F16, or FG_F32 (which turns autocast off inside an
 * outer scope). Each begin needs one end on the same thread. Backward rules run
 * with autocast off, so fg_backward inside a scope is safe. */
fg_status fg_autocast_begin(fg_dtype dt);
/* FG_ERR_STATE without an open scope. */
fg_status fg_autocast_end(void);
/* The dtype of the innermost scope; FG_F32 when none is open (autocast off). */
fg_dtype fg_autocast_dtype(void);

#ifdef __cplusplus
}
#endif
#endif
