#ifndef FLASHGRAD_TENSOR_H
#define FLASHGRAD_TENSOR_H

#include <stdio.h>
#include <flashgrad/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Ownership -------------------------------------------------------------
 * Tensors are reference counted. A tensor created while a scope is open belongs
 * to the innermost scope and is released when that scope ends; one created with
 * no scope open belongs to the caller, who releases it with fg_free. Each
 * reference is released once: the scope's by scope end or by one fg_free, each
 * fg_retain's by one more fg_free, in any order. fg_keep
 * moves a tensor out of its scope to the caller (e.g. a loss to print after the
 * step), fg_free on a scope-owned tensor releases it early. Autograd nodes keep
 * what they save alive on their own, so scope end never breaks a pending graph. */
fg_scope *fg_scope_begin(void);
/* Ends `s`, which must be the innermost open scope. */
fg_status fg_scope_end(fg_scope *s);
fg_tensor *fg_keep(fg_tensor *t);
fg_tensor *fg_retain(fg_tensor *t);
void fg_free(fg_tensor *t);

/* ---- Creation ------------------------------------------------------------- */
fg_tensor *fg_empty(int ndim, const int64_t *shape, fg_dtype dt, fg_device dev);
fg_tensor *fg_zeros(int ndim, const int64_t *shape, fg_dtype dt, fg_device dev);
fg_tensor *fg_ones(int ndim, const int64_t *shape, fg_dtype dt, fg_device dev);
fg_tensor *fg_full(int ndim, const int64_t *shape, double value, fg_dtype dt, fg_device dev);
fg_tensor *fg_scalar(double value, fg_dtype dt, fg_device dev); /* 0-d tensor */
/* [start, end) in steps of `step` (as numpy.arange). */
fg_tensor *fg_arange(double start, double end, double step, fg_dtype dt, fg_device dev);
/* Copies `data` (contiguous, row-major, elements of dtype `dt`). */
fg_tensor *fg_from_data(const void *data, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev);
/* Like fg_from_data but converts from double / float host arrays. */
fg_tensor *fg_from_f64(const double *data, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev);
fg_tensor *fg_from_f32(const float *data, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev);
/* Zeros / ones with the shape, dtype and device of `like`. */
fg_tensor *fg_zeros_like(const fg_tensor *like);
fg_tensor *fg_ones_like(const fg_tensor *like);

/* ---- Reading data --------------------------------------------------------- */
/* Copies the elements in row-major order into `dst` in the tensor's own dtype.
 * Works for any strides and either device (a device tensor syncs here). */
fg_status fg_copy_to_host(const fg_tensor *t, void *dst, size_t dst_bytes);
/* Same, converting every element to double / float. */
fg_status fg_to_f64_array(const fg_tensor *t, double *dst, int64_t n);
fg_status fg_to_f32_array(const fg_tensor *t, float *dst, int64_t n);
/* Value of a one-element tensor (NAN and an error otherwise). */
double fg_item(const fg_tensor *t);
/* Element at a multi-index (NAN and an error if out of range). */
double fg_get(const fg_tensor *t, const int64_t *index);

/* Address of element 0 of t: host memory for a CPU tensor, device memory for a
 * CUDA one. Element (i0, i1, ...) is at index sum_d i_d fg_strides(t)[d] (in
 * elements of fg_dtype_of(t)) from it. For handing t's data to code outside
 * the framework (e.g. fg_attention_raw_forward); valid while t lives. Device
 * work on t may still be queued on the framework's stream (fg_cuda_synchronize
 * waits for it). NULL (error set) for a NULL tensor. */
void *fg_data_ptr(const fg_tensor *t);

/* ---- Properties ----------------------------------------------------------- */
int fg_ndim(const fg_tensor *t);
/* Size of dim `d`; negative d counts from the end. -1 and an error if invalid. */
int64_t fg_size(const fg_tensor *t, int d);
const int64_t *fg_shape(const fg_tensor *t);
const int64_t *fg_strides(const fg_tensor *t);
int64_t fg_numel(const fg_tensor *t);
fg_dtype fg_dtype_of(const fg_tensor *t);
fg_device fg_device_of(const fg_tensor *t);
bool fg_is_contiguous(const fg_tensor *t);
/* True when a and b view the same storage. */
bool fg_shares_storage(const fg_tensor *a, const fg_tensor *b);
/* Writes "(2, 3, 4)" into buf; returns buf. */
char *fg_shape_str(const fg_tensor *t, char *buf, size_t len);
/* Debug print: shape, dtype, device, grad flag, and up to `max_elems` values. */
void fg_print(const fg_tensor *t, FILE *f);

/* ---- Views (share storage; differentiable) -------------------------------- */
/* One dim may be -1 (inferred). Copies only when the strides do not allow a view. */
fg_tensor *fg_reshape(fg_tensor *t, int ndim, const int64_t *shape);
/* Like reshape but fails instead of copying when a view is impossible. */
fg_tensor *fg_view(fg_tensor *t, int ndim, const int64_t *shape);
fg_tensor *fg_transpose(fg_tensor *t, int d0, int d1);
fg_tensor *fg_permute(fg_tensor *t, int ndim, const int *dims);
/* Elements [start, start+length) of dim `d`. */
fg_tensor *fg_narrow(fg_tensor *t, int d, int64_t start, int64_t length);
/* Python-style slice start:end:step (step > 0; negative start/end count from the end). */
fg_tensor *fg_slice(fg_tensor *t, int d, int64_t start, int64_t end, int64_t step);
/* Broadcast to `shape` (size-1 dims and new leading dims get stride 0). -1 keeps a size. */
fg_tensor *fg_expand(fg_tensor *t, int ndim, const int64_t *shape);
fg_tensor *fg_squeeze(fg_tensor *t, int d);
fg_tensor *fg_unsqueeze(fg_tensor *t, int d);
fg_tensor *fg_flatten(fg_tensor *t);
/* A contiguous tensor with the same values: a new view of t's storage when t is
 * already contiguous, else a copy (differentiable either way). */
fg_tensor *fg_contiguous(fg_tensor *t);
/* An independent copy (differentiable). */
fg_tensor *fg_clone(fg_tensor *t);

/* ---- Conversion ----------------------------------------------------------- */
/* Differentiable cast / device move; returns a new tensor (a copy even when nothing changes). */
fg_tensor *fg_to(fg_tensor *t, fg_device dev, fg_dtype dt);
fg_tensor *fg_cast(fg_tensor *t, fg_dtype dt);

/* ---- In-place (not recorded by autograd) ---------------------------------- */
/* dst <- src (broadcast src to dst's shape, any dtypes/devices). */
fg_status fg_copy_(fg_tensor *dst, const fg_tensor *src);
fg_status fg_fill_(fg_tensor *t, double value);
fg_status fg_zero_(fg_tensor *t);

/* ---- Memory accounting ---------------------------------------------------- */
typedef struct {
    int64_t live_tensors;      /* tensor objects alive (views included) */
    int64_t live_storages;     /* storage blocks alive */
    int64_t live_bytes[2];     /* storage bytes alive, per device */
    int64_t peak_bytes[2];
    int64_t live_nodes;        /* autograd graph nodes alive */
} fg_memory_stats;
void fg_get_memory_stats(fg_memory_stats *out);

#ifdef __cplusplus
}
#endif
#endif
