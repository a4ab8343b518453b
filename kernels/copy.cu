// Fill and strided copy/convert between any two dtypes on the device.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include "fg_kernels.h"
#include "k_common.cuh"

namespace {

using fgk::grid_for;
using fgk::ld_d;
using fgk::st_d;

struct Layout {
    int ndim;
    int64_t shape[FG_K_MAX_DIMS];
    int64_t dst_stride[FG_K_MAX_DIMS];
    int64_t src_stride[FG_K_MAX_DIMS];
};

__global__ void fill_kernel(void *dst, int dt, int64_t n, double value)
{
    FGK_GRID_STRIDE(i, n) st_d(dst, dt, i, value);
}

// Integer copies go through int64 directly so large i64 values stay exact.
__global__ void copy_kernel(void *dst, int ddt, const void *src, int sdt, Layout l, int64_t n)
{
    FGK_GRID_STRIDE(i, n) {
        int64_t rem = i, doff = 0, soff = 0;
        for (int d = l.ndim - 1; d >= 0; d--) {
            int64_t c = rem % l.shape[d];
            rem /= l.shape[d];
            doff += c * l.dst_stride[d];
            soff += c * l.src_stride[d];
        }
        if (ddt == 5 && sdt == 5)
            static_cast<int64_t *>(dst)[doff] = static_cast<const int64_t *>(src)[soff];
        else
            st_d(dst, ddt, doff, ld_d(src, sdt, soff));
    }
}

} // namespace

extern "C" int fg_k_fill(void *dst, int dtype, int64_t n, double value, void *stream)
{
    if (n <= 0) return 0;
    fill_kernel<<<grid_for(n), 256, 0, static_cast<cudaStream_t>(stream)>>>(dst, dtype, n, value);
    return static_cast<int>(cudaGetLastError());
}

extern "C" int fg_k_copy_strided(void *dst, int dst_dtype, const int64_t *dst_stride, const void *src, int src_dtype,
                                 const int64_t *src_stride, int ndim, const int64_t *shape, int64_t numel, void *stream)
{
    if (numel <= 0) return 0;
    if (ndim > FG_K_MAX_DIMS) return static_cast<int>(cudaErrorInvalidValue);
    Layout l;
    l.ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        l.shape[d] = shape[d];
        l.dst_stride[d] = dst_stride[d];
        l.src_stride[d] = src_stride[d];
    }
    copy_kernel<<<grid_for(numel), 256, 0, static_cast<cudaStream_t>(stream)>>>(dst, dst_dtype, src, src_dtype, l, numel);
    return static_cast<int>(cudaGetLastError());
}
