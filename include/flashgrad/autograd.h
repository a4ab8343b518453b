#ifndef FLASHGRAD_AUTOGRAD_H
#define FLASHGRAD_AUTOGRAD_H

#include <flashgrad/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks a leaf as a parameter whose gradient fg_backward accumulates. Only
 * floating-point tensors can require grad. */
fg_status fg_set_requires_grad(fg_tensor *t, bool requires_grad);
bool fg_requires_grad(const fg_tensor *t);
/* True for tensors made by a recorded op (they have a backward node). */
bool fg_has_grad_fn(const fg_tensor *t);
/* Name of the op that produced t ("mul", "matmul", ...) or NULL for leaves. */
const char *fg_grad_fn_name(const fg_tensor *t);
/* Accumulated gradient of a leaf (borrowed; NULL before the first backward). */
fg_tensor *fg_grad(const fg_tensor *t);
/* Zeroes the gradient in place (keeps its buffer). */
fg_status fg_zero_grad(fg_tensor *t);
/* Drops the gradient buffer. */
void fg_clear_grad(fg_tensor *t);
/* Same data, no history, requires_grad off. */
fg_tensor *fg_detach(fg_tensor *t);

/* Back-propagates from `root`: with grad_root NULL root must have one element
 * (seeded with 1). Accumulates into the .grad of every leaf reached and frees
 * the graph behind root (saved tensors released). Calling it twice on the same
 * graph is an FG_ERR_STATE error. */
fg_status fg_backward(fg_tensor *root);
fg_status fg_backward_with_grad(fg_tensor *root, const fg_tensor *grad_root);

/* No-grad mode (evaluation, sampling, optimizer steps): ops record nothing.
 * fg_set_grad_enabled returns the previous setting so scopes nest. */
bool fg_set_grad_enabled(bool enabled);
bool fg_is_grad_enabled(void);

#ifdef __cplusplus
}
#endif
#endif
