// Fill and strided copy/convert between any two dtypes on the device.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include "fg_kernels.h"

namespace {

// Matches fg_dtype's order: f32, f64, bf16, f16, i32, i64.
__device__ __forceinline__ double load_as_double(const void *p, int dt, int64_t i)
{
    switch (dt) {
    case 0: return static_cast<const float *>(p)[i];
    case 1: return static_cast<const double *>(p)[i];
    case 2: return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
    case 3: return __half2float(static_cast<const __half *>(p)[i]);
    case 4: return static_cast<const int32_t *>(p)[i];
    default: return static_cast<double>(static_cast<const int64_t *>(p)[i]);
    }
}

__device__ __forceinline__ void store_from_double(void *p, int dt, int64_t i, double v)
{
    switch (dt) {
    case 0: static_cast<float *>(p)[i] = static_cast<float>(v); break;
    case 1: static_cast<double *>(p)[i] = v; break;
    case 2: static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(static_cast<float>(v)); break;
    case 3: static_cast<__half *>(p)[i] = __float2half_rn(static_cast<float>(v)); break;
    case 4: static_cast<int32_t *>(p)[i] = static_cast<int32_t>(v); break;
    default: static_cast<int64_t *>(p)[i] = static_cast<int64_t>(v); break;
    }
}

struct Layout {
    int ndim;
    int64_t shape[FG_K_MAX_DIMS];
    int64_t dst_stride[FG_K_MAX_DIMS];
    int64_t src_stride[FG_K_MAX_DIMS];
};

__global__ void fill_kernel(void *dst, int dt, int64_t n, double value)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        store_from_double(dst, dt, i, value);
}

// Integer copies go through int64 directly so large i64 values stay exact.
__global__ void copy_kernel(void *dst, int ddt, const void *src, int sdt, Layout l, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
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
            store_from_double(dst, ddt, doff, load_as_double(src, sdt, soff));
    }
}

int grid_for(int64_t n)
{
    int64_t g = (n + 255) / 256;
    return static_cast<int>(g < 65535 ? (g > 0 ? g : 1) : 65535);
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
