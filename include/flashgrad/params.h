#ifndef FLASHGRAD_PARAMS_H
#define FLASHGRAD_PARAMS_H

#include <flashgrad/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The parameter registry: an ordered list of named leaf tensors, the one
 * thing layers, optimizers and checkpoints agree on. Layers add their
 * parameters under dotted names ("blocks.0.attn.wq.weight"); optimizers keep
 * their state per entry, in registry order; checkpoints save and load by name.
 *
 * Each entry holds a reference to its tensor (fg_retain; released by
 * fg_params_free), so the tensor outlives any scope it was made in. A tensor
 * may be registered once (tied weights: register the shared tensor under one
 * name). decay: AdamW's decoupled weight decay applies to the entry; layers
 * set it for matrices, not for biases, norms or embeddings. */
typedef struct {
    const char *name;
    fg_tensor *t;
    bool decay;
} fg_param;

typedef struct fg_params fg_params;

fg_params *fg_params_new(void);
/* Releases the entries' references and the registry (NULL is fine). */
void fg_params_free(fg_params *p);
/* Appends (name, t); errors: NULL arguments, an empty or duplicate name, a
 * tensor already registered, a non-float tensor, a tensor that is not a leaf
 * (the output of a recorded op: fg_backward never fills its gradient). */
fg_status fg_params_add(fg_params *p, const char *name, fg_tensor *t, bool decay);
int64_t fg_params_count(const fg_params *p);
/* Entry i (0 <= i < count), NULL (error set) outside. */
const fg_param *fg_params_at(const fg_params *p, int64_t i);
/* The entry named `name`, NULL (no error) when there is none. */
const fg_param *fg_params_find(const fg_params *p, const char *name);
/* Total elements of all entries. */
int64_t fg_params_numel(const fg_params *p);
/* fg_zero_grad on every entry. */
fg_status fg_params_zero_grad(fg_params *p);

#ifdef __cplusplus
}
#endif
#endif
