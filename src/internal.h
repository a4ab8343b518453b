/* Internal structures and helpers shared by src/ and kernels/ glue. Not installed. */
#ifndef FG_INTERNAL_H
#define FG_INTERNAL_H

#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <flashgrad.h>
#include "config.h"
#include "fg_kernels.h"

#if defined(__GNUC__)
#define FG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FG_PRINTF(a, b)
#endif

/* ---- errors ---- */
/* Records an error (always overwrites) and returns s. */
fg_status fg__err(fg_status s, const char *fmt, ...) FG_PRINTF(2, 3);
/* For a NULL input: keeps an earlier error (the root cause) if one is set. */
fg_status fg__err_null(const char *op, const char *what);
/* Checks a dim index against ndim (negative allowed); writes the normalised dim. */
fg_status fg__norm_dim(const char *op, const fg_tensor *t, int d, int ndim_plus, int *out);

/* ---- storage and tensors ---- */
typedef struct fg_storage {
    int refcount;
    fg_device device;
    void *data;
    size_t nbytes;
    bool external; /* memory the framework does not own (fg__tensor_external): never freed here, not counted */
} fg_storage;

typedef struct fg_node fg_node;

struct fg_tensor {
    int refcount;
    fg_dtype dtype;
    fg_device device;
    int ndim;
    int64_t shape[FG_MAX_DIMS];
    int64_t stride[FG_MAX_DIMS]; /* in elements */
    int64_t offset;              /* in elements, into storage */
    int64_t numel;
    fg_storage *storage;
    bool requires_grad;
    fg_tensor *grad;   /* owned reference (leaves) */
    fg_node *grad_fn;  /* owned reference (non-leaves) */
    int out_index;     /* which output of grad_fn */
    fg_scope *scope;   /* owning scope or NULL (caller owned) */
    size_t scope_slot;
};

fg_storage *fg__storage_new(fg_device dev, size_t nbytes);
/* A storage header over memory someone else owns (host or device): releasing
 * it frees only the header, and it counts in neither fg_memory_stats'
 * storages / bytes nor the CUDA caching allocator. nbytes may be 0 (unknown). */
fg_storage *fg__storage_external(fg_device dev, void *data, size_t nbytes);
void fg__storage_unref(fg_storage *s);

/* Validates a shape (ndim 0..8, sizes >= 0, no overflow); writes numel. */
fg_status fg__check_shape(const char *op, int ndim, const int64_t *shape, int64_t *numel);
/* New contiguous tensor with fresh storage, registered in the current scope. */
fg_tensor *fg__new(const char *op, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev);
/* A tensor over external memory (an fg__storage_external: the data is never
 * freed by the framework), element (i0, i1, ...) at data + sum i_d stride[d]
 * elements. Not registered in any scope: the caller releases it with
 * fg__unref. For handing caller buffers to internal kernels (the raw attention
 * API); no autograd. NULL (error set) on OOM. */
fg_tensor *fg__tensor_external(const char *op, void *data, fg_dtype dt, fg_device dev, int ndim, const int64_t *shape,
                               const int64_t *stride);
/* New tensor viewing base's storage (no autograd), registered in the current scope. */
fg_tensor *fg__view(const fg_tensor *base, int ndim, const int64_t *shape, const int64_t *stride,
                    int64_t offset);
/* New contiguous tensor like t (shape, dtype, device). */
fg_tensor *fg__new_like(const char *op, const fg_tensor *t);
/* New tensor like t whose fresh storage is dense in t's dim order (dims sorted
 * by t's strides): an op's output for a transposed view input comes out
 * transposed the same way, so that transposing back is contiguous. Registered
 * in the current scope. */
fg_tensor *fg__new_dense_like(const char *op, const fg_tensor *t);
/* Registers a caller-owned tensor (e.g. one fg_keep moved out of an inner
 * scope) in the current scope, as if created there; NULL (t freed) on OOM. */
fg_tensor *fg__adopt(fg_tensor *t);
/* Drops one reference without touching scope membership (internal owners only). */
void fg__unref(fg_tensor *t);
void fg__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);
bool fg__same_shape(const fg_tensor *a, const fg_tensor *b);
/* Pointer to element 0 of the view. */
static inline void *fg__data(const fg_tensor *t)
{
    return (char *)t->storage->data + (size_t)t->offset * fg_dtype_size(t->dtype);
}
/* Contiguous copy (or t retained when already contiguous) without autograd. The
 * result must be released with fg__unref. */
fg_tensor *fg__contig(const fg_tensor *t);
/* Copies src into dst elementwise (same numel; any strides/dtypes; CPU or CUDA). */
fg_status fg__copy_elements(fg_tensor *dst, const fg_tensor *src);
/* Shape of the numpy broadcast of a and b. */
fg_status fg__broadcast_shape(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                              int *nout, int64_t *out);
/* Strides that read t as if broadcast to (ndim, shape): 0 on broadcast dims. */
void fg__broadcast_strides(const fg_tensor *t, int ndim, const int64_t *shape, int64_t *stride);

/* Common argument checks; each sets the error and returns false on failure. */
bool fg__check_float(const char *op, const fg_tensor *t);
bool fg__check_same(const char *op, const fg_tensor *a, const fg_tensor *b); /* device + dtype */
bool fg__check_index_dtype(const char *op, const fg_tensor *idx);
/* CPU-only ops (until the CUDA backend has the kernel): error for device tensors. */
bool fg__check_cpu(const char *op, const fg_tensor *t);

/* ---- element load/store as double (the CPU reference works in double and
 * rounds once on store, so bf16/f16 get fp32-or-better accumulation). ---- */
static inline double fg__ld(const void *p, fg_dtype dt, int64_t i)
{
    switch (dt) {
    case FG_F32: return ((const float *)p)[i];
    case FG_F64: return ((const double *)p)[i];
    case FG_BF16: return fg_bf16_to_float(((const uint16_t *)p)[i]);
    case FG_F16: return fg_f16_to_float(((const uint16_t *)p)[i]);
    case FG_I32: return ((const int32_t *)p)[i];
    case FG_I64: return (double)((const int64_t *)p)[i];
    default: return NAN;
    }
}
static inline void fg__st(void *p, fg_dtype dt, int64_t i, double v)
{
    switch (dt) {
    case FG_F32: ((float *)p)[i] = (float)v; break;
    case FG_F64: ((double *)p)[i] = v; break;
    case FG_BF16: ((uint16_t *)p)[i] = fg_float_to_bf16((float)v); break;
    case FG_F16: ((uint16_t *)p)[i] = fg_float_to_f16((float)v); break;
    /* Float -> int conversion out of range is undefined in C: saturate (NaN -> 0). */
    case FG_I32: ((int32_t *)p)[i] = v != v ? 0 : v >= 2147483647.0 ? INT32_MAX : v <= -2147483648.0 ? INT32_MIN : (int32_t)v; break;
    case FG_I64: ((int64_t *)p)[i] = v != v ? 0 : v >= 9223372036854775807.0 ? INT64_MAX : v <= -9223372036854775808.0 ? INT64_MIN : (int64_t)v; break;
    default: break;
    }
}
/* Index values are read exactly (no trip through double). */
static inline int64_t fg__ld_index(const void *p, fg_dtype dt, int64_t i)
{
    return dt == FG_I32 ? ((const int32_t *)p)[i] : ((const int64_t *)p)[i];
}

/* ---- N-d strided iteration over up to 4 operands ---- */
typedef struct {
    int ndim, nops;
    int64_t shape[FG_MAX_DIMS];
    int64_t idx[FG_MAX_DIMS];
    int64_t stride[4][FG_MAX_DIMS];
    int64_t off[4]; /* current element offset of each operand */
} fg_iter;
/* strides[k] is operand k's stride array (ndim entries). */
void fg__iter_init(fg_iter *it, int ndim, const int64_t *shape, int nops, const int64_t *const *strides);
static inline void fg__iter_next(fg_iter *it)
{
    for (int d = it->ndim - 1; d >= 0; d--) {
        it->idx[d]++;
        for (int k = 0; k < it->nops; k++) it->off[k] += it->stride[k][d];
        if (it->idx[d] < it->shape[d]) return;
        for (int k = 0; k < it->nops; k++) it->off[k] -= it->stride[k][d] * it->shape[d];
        it->idx[d] = 0;
    }
}

/* ---- autograd ---- */
/* Where an input's gradient goes: into the node that made it, or into a leaf. */
typedef struct {
    fg_node *node;  /* owned reference, or NULL */
    int out_index;
    fg_tensor *leaf; /* owned reference, or NULL */
    /* The input's metadata, for backward rules that need its shape. */
    int ndim;
    int64_t shape[FG_MAX_DIMS];
    fg_dtype dtype;
    fg_device device;
    bool needs_grad;
} fg_edge;

/* grad_outputs[i]: gradient w.r.t. output i (never NULL: zeros are filled in).
 * The rule writes grad_inputs[i] for each input whose edge needs_grad (NULL
 * for "no gradient"). Tensors it creates are owned by the engine's scope. */
typedef fg_status (*fg_backward_fn)(fg_node *node, fg_tensor *const *grad_outputs,
                                    fg_tensor **grad_inputs);

struct fg_node {
    int refcount;
    const char *name;
    fg_backward_fn backward;
    uint64_t seq; /* creation order: inputs' nodes always have a smaller seq */
    int n_inputs;
    fg_edge *edges;
    int n_saved;
    fg_tensor **saved; /* detached aliases (no history), owned */
    int n_outputs;
    int *out_ndim; /* output metadata, for zero gradients of unused outputs */
    int64_t (*out_shape)[FG_MAX_DIMS];
    fg_dtype out_dtype;
    fg_device out_device;
    /* Op parameters. */
    double f[4];
    int64_t i[FG_MAX_DIMS * 2];
    void *ctx;
    void (*ctx_free)(void *);
    bool released;
    /* Engine scratch. */
    fg_tensor **grad_acc;
    uint64_t mark;
};

/* True when grad mode is on and some input requires grad. */
bool fg__any_requires_grad(int n, fg_tensor *const *inputs);
/* Creates a node for `outputs` (which must be fresh results of the op) and
 * attaches it; n_inputs may include NULL entries (no gradient). Returns NULL
 * and sets the error on allocation failure. */
fg_node *fg__record(const char *name, fg_backward_fn fn, int n_inputs, fg_tensor *const *inputs,
                    int n_outputs, fg_tensor *const *outputs);
/* Saves a detached alias of t in the node; returns its slot. */
int fg__save(fg_node *node, const fg_tensor *t);
/* Sums a broadcast gradient back to the shape of edge `i` (a new tensor or g retained). */
fg_tensor *fg__reduce_to_edge(fg_node *node, int i, fg_tensor *g);
void fg__node_unref(fg_node *n);

/* Ops the backward rules use that are not public. */
fg_tensor *fg__sum_to_shape(fg_tensor *g, int ndim, const int64_t *shape);

/* ---- CUDA glue (src/core/cuda.c) ---- */
/* The caching allocator: nbytes must be the size the block was allocated with. */
fg_status fg__cuda_malloc(void **p, size_t nbytes);
void fg__cuda_free(void *p, size_t nbytes);
/* The stream all device work goes to (a cudaStream_t). */
void *fg__cuda_stream(void);
/* Makes `waiter` wait, on the device (no host sync), for the work queued on
 * `stream` so far (a recorded event); nothing when they are the same stream.
 * For work on a caller's stream that touches framework memory (the caching
 * allocator assumes one stream). */
fg_status fg__cuda_stream_wait(void *waiter, void *stream);
/* Blocks the host until `stream` is idle (counts as a host sync). */
fg_status fg__cuda_stream_sync(void *stream);
/* Maps a launcher's return code (cudaError_t as int) to a status + message. */
fg_status fg__cuda_check(const char *op, int err);
/* The device-side sticky error record of the training-path index ops
 * (embedding, cross_entropy): 4 int64 {code, position, value, limit}, code
 * FG_K_ERR_* (kernels/fg_kernels.h), 0 = no error. Kernels record the first bad
 * index there instead of the op syncing to check; the host reads it back at
 * the next point that synchronises anyway (fg_cuda_synchronize, any device->host
 * copy).
 * fg__cuda_error_record: the device pointer, allocated and zeroed on first use
 * (never freed before fg_cuda_shutdown); NULL on failure, with the error set.
 * fg__cuda_check_error_record: reads the record (a sync); when it holds an
 * error, resets it and returns FG_ERR_INDEX with a message naming the op, the
 * position and the value. FG_OK when the record was never allocated. */
void *fg__cuda_error_record(void);
fg_status fg__cuda_check_error_record(void);
/* FG_CUDA_CALL(op, launcher(...)): the launcher only exists in CUDA builds, so
 * CPU-only builds compile the call away (a device tensor cannot exist there). */
#ifdef FG_HAVE_CUDA
#define FG_CUDA_CALL(op, expr) fg__cuda_check((op), (expr))
#else
#define FG_CUDA_CALL(op, expr) fg__err(FG_ERR_DEVICE, "%s: this build has no CUDA backend", (op))
#endif
/* The kernel-side descriptor of a tensor, optionally read as broadcast to
 * (ndim, shape) (stride 0 on broadcast dims). */
static inline fg_k_tensor fg__kt(const fg_tensor *t)
{
    fg_k_tensor k;
    k.data = (char *)t->storage->data + (size_t)t->offset * fg_dtype_size(t->dtype);
    k.dtype = (int)t->dtype;
    k.ndim = t->ndim;
    k.numel = t->numel;
    for (int d = 0; d < FG_K_MAX_DIMS; d++) {
        k.shape[d] = d < t->ndim ? t->shape[d] : 1;
        k.stride[d] = d < t->ndim ? t->stride[d] : 0;
    }
    return k;
}
static inline fg_k_tensor fg__kt_bcast(const fg_tensor *t, int ndim, const int64_t *shape)
{
    fg_k_tensor k = fg__kt(t);
    int64_t st[FG_MAX_DIMS];
    fg__broadcast_strides(t, ndim, shape, st);
    k.ndim = ndim;
    k.numel = 1;
    for (int d = 0; d < FG_K_MAX_DIMS; d++) {
        k.shape[d] = d < ndim ? shape[d] : 1;
        k.stride[d] = d < ndim ? st[d] : 0;
        if (d < ndim) k.numel *= shape[d];
    }
    return k;
}
fg_status fg__cuda_memcpy_h2d(void *dst, const void *src, size_t n);
fg_status fg__cuda_memcpy_d2h(void *dst, const void *src, size_t n);
fg_status fg__cuda_memcpy_d2d(void *dst, const void *src, size_t n);
fg_status fg__cuda_fill(void *p, fg_dtype dt, int64_t n, double value);
/* dst <- src elementwise through both stride sets, converting dtypes (pointers at element 0). */
fg_status fg__cuda_copy_strided(void *dst, fg_dtype dst_dt, const int64_t *dst_stride, const void *src,
                                fg_dtype src_dt, const int64_t *src_stride, int ndim, const int64_t *shape);

/* ---- cuBLAS (src/core/cublas.c) ----
 * out: contiguous (..., n, m); a (..., n, k), b (..., k, m): views already
 * broadcast to out's batch dims (stride 0 on broadcast dims), all three of one
 * float dtype on CUDA. accumulate: out += a @ b (beta = 1) instead of out = a @ b. */
fg_status fg__cuda_matmul(const char *op, fg_tensor *out, const fg_tensor *a, const fg_tensor *b, bool accumulate);
/* Maps a cublasStatus_t (as int) to FG_OK or FG_ERR_CUDA with a message naming
 * the op, the cuBLAS status name and `detail` (the call and the shapes). */
fg_status fg__cublas_check(const char *op, int status, const char *detail);
void fg__cublas_shutdown(void);
/* cuBLASLt with a fused epilogue: out (rows, N) contiguous = act(x @ w + b) for
 * x (rows, K) with unit column stride, w (K, N) with either stride 1, b (N)
 * contiguous or NULL; act = GELU (tanh form) when gelu, and then pre (rows, N)
 * contiguous, when non-NULL, receives x @ w + b. FG_ERR_UNSUPPORTED (no error
 * message set) when cuBLASLt has no kernel for this case: the caller falls back. */
/* Records the autograd node of unary op `op` (a src/cpu/cpu.h fg_unary_op,
 * scalar s) for an output computed elsewhere (e.g. a fused epilogue): out = op(a).
 * Returns out, or NULL (out freed) when saving fails. */
fg_tensor *fg__record_unary(int op, double s, fg_tensor *a, fg_tensor *out);
fg_status fg__cuda_linear_lt(const char *op, fg_tensor *out, const fg_tensor *x, const fg_tensor *w,
                             const fg_tensor *b, bool gelu, fg_tensor *pre);

/* Thread-local state shared by core files. */
uint64_t fg__next_seq(void);
void fg__stats_tensor(int delta);
void fg__stats_node(int delta);
void fg__stats_storage(fg_device dev, int64_t bytes, int delta);

#endif
