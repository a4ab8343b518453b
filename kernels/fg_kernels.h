/* extern "C" launchers of the CUDA kernels (kernels/ *.cu files), the one
 * internal header through which host C code reaches them. Each launcher
 * enqueues work on `stream` (a cudaStream_t passed as void *) and returns the
 * cudaError_t of the launch as int (0 = success); the caller maps it with
 * fg__cuda_check. Pointers are device pointers at element 0; strides and sizes
 * are in elements; dtype codes are fg_dtype values. The per-family sections
 * live in kernels/k_<family>.h, all included here. */
#ifndef FG_KERNELS_H
#define FG_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FG_K_MAX_DIMS 8

/* A strided view as the kernels see it (no ownership). For broadcast inputs
 * the host passes the view expanded to the output's shape (stride 0 dims). */
typedef struct {
    void *data;
    int dtype;
    int ndim;
    int64_t numel;
    int64_t shape[FG_K_MAX_DIMS];
    int64_t stride[FG_K_MAX_DIMS];
} fg_k_tensor;

/* The device-side sticky error record (owned by src/core/cuda.c,
 * fg__cuda_error_record): 4 int64 {code, position, value, limit}, code 0 = no
 * error. A kernel that meets a bad index claims it with atomicCAS(&rec[0], 0,
 * code); only the winner then writes position, value and limit, so the record
 * keeps the first error until the host reads and resets it at a sync point. */
#define FG_K_ERR_EMBEDDING 1     /* value: the index, limit: the table's rows */
#define FG_K_ERR_CROSS_ENTROPY 2 /* value: the target, limit: the classes */
/* index ops (kernels/index.cu): value: the index, limit: the size of the indexed
 * dim, position: row-major in the index tensor */
#define FG_K_ERR_GATHER 3
#define FG_K_ERR_SCATTER 4
#define FG_K_ERR_SCATTER_ADD 5
#define FG_K_ERR_INDEX_SELECT 6
#define FG_K_ERR_INDEX_ADD 7

int fg_k_fill(void *dst, int dtype, int64_t n, double value, void *stream);
int fg_k_copy_strided(void *dst, int dst_dtype, const int64_t *dst_stride, const void *src, int src_dtype,
                      const int64_t *src_stride, int ndim, const int64_t *shape, int64_t numel, void *stream);

#ifdef __cplusplus
}
#endif

#include "k_elementwise.h"
#include "k_reduce.h"
#include "k_nn.h"
#include "k_index.h"
#include "k_random.h"
#include "k_attention.h"
#include "k_optim.h"

#endif
