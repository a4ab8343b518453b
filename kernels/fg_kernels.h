/* extern "C" launchers of the CUDA kernels (kernels/ *.cu files). Each returns a
 * cudaError_t value as int (0 = success) after checking the launch. Pointers are
 * device pointers at element 0; strides and sizes are in elements. dtype codes
 * are fg_dtype values. */
#ifndef FG_KERNELS_H
#define FG_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FG_K_MAX_DIMS 8

int fg_k_fill(void *dst, int dtype, int64_t n, double value, void *stream);
int fg_k_copy_strided(void *dst, int dst_dtype, const int64_t *dst_stride, const void *src, int src_dtype,
                      const int64_t *src_stride, int ndim, const int64_t *shape, int64_t numel, void *stream);

#ifdef __cplusplus
}
#endif
#endif
