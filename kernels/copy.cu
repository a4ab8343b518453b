// Fill and strided copy/convert between any two dtypes on the device.
//
// These run on every view materialisation, autocast cast and gradient zeroing,
// so the common cases get their own kernels: dims are collapsed on the host
// (size-1 dims dropped, dims merged where both layouts are contiguous across
// them); a contiguous same-dtype copy is a memcpy; copies between the same
// element size and between f32 / bf16 / f16 are typed kernels that move up to
// 16 bytes a thread along the innermost dim, with 32-bit index arithmetic when
// the sizes allow. Everything else (f64 and integer conversions) takes the
// generic kernel, which converts through double like the CPU's fg__ld / fg__st.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <math.h>
#include <string.h>
#include "fg_kernels.h"
#include "k_common.cuh"

namespace {

using fgk::bf16;
using fgk::f16;
using fgk::grid_for;
using fgk::ld_d;
using fgk::st_d;
using fgk::DT_BF16;
using fgk::DT_F16;
using fgk::DT_F32;
using fgk::DT_I64;

struct Layout {
    int ndim;
    int64_t shape[FG_K_MAX_DIMS];
    int64_t dst_stride[FG_K_MAX_DIMS];
    int64_t src_stride[FG_K_MAX_DIMS];
};

template <typename T, int V> struct alignas(sizeof(T) * V) Vec {
    T v[V];
};

// ---- conversions: float-like types go through float, which equals the trip
// through double that fg__ld / fg__st take (every value of these types is a float)
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(f16 x) { return __half2float(x); }
template <typename D> __device__ __forceinline__ D from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ f16 from_f<f16>(float x) { return __float2half_rn(x); }

template <typename S, typename D> struct Cvt {
    __device__ __forceinline__ static D run(S x) { return from_f<D>(to_f(x)); }
};
template <typename T> struct Cvt<T, T> { // same element size: the bits
    __device__ __forceinline__ static T run(T x) { return x; }
};

// ---- fill ---------------------------------------------------------------------------
template <typename T, int V> __global__ void fill_vec(T *dst, int64_t n, T value)
{
    const int64_t nv = n / V;
    Vec<T, V> w;
#pragma unroll
    for (int j = 0; j < V; j++) w.v[j] = value;
    FGK_GRID_STRIDE(i, nv) reinterpret_cast<Vec<T, V> *>(dst)[i] = w;
    FGK_GRID_STRIDE(i, n - nv * V) dst[nv * V + i] = value;
}

__global__ void fill_kernel(void *dst, int dt, int64_t n, double value)
{
    FGK_GRID_STRIDE(i, n) st_d(dst, dt, i, value);
}

template <typename T> int fill_typed(void *dst, int64_t n, T value, cudaStream_t s)
{
    constexpr int V = 16 / sizeof(T);
    if (reinterpret_cast<uintptr_t>(dst) % 16 == 0)
        fill_vec<T, V><<<grid_for((n + V - 1) / V), 256, 0, s>>>(static_cast<T *>(dst), n, value);
    else
        fill_vec<T, 1><<<grid_for(n), 256, 0, s>>>(static_cast<T *>(dst), n, value);
    return static_cast<int>(cudaGetLastError());
}

// ---- typed strided copy ---------------------------------------------------------------
// Thread i moves V consecutive elements of the innermost dim (whose stride is 1
// on both sides when V > 1). I: the index type, uint32_t when every offset fits.
template <typename S, typename D, int V, typename I>
__global__ void copy_typed(D *__restrict__ dst, const S *__restrict__ src, Layout l, I nvec)
{
    for (I i = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; i < nvec;
         i += static_cast<I>(gridDim.x) * blockDim.x) {
        I rem = i, doff = 0, soff = 0;
        for (int d = l.ndim - 1; d >= 0; d--) {
            const I n = static_cast<I>(d == l.ndim - 1 ? l.shape[d] / V : l.shape[d]);
            const I c = rem % n;
            rem /= n;
            const I k = d == l.ndim - 1 ? c * V : c;
            doff += k * static_cast<I>(l.dst_stride[d]);
            soff += k * static_cast<I>(l.src_stride[d]);
        }
        if (V == 1) {
            dst[doff] = Cvt<S, D>::run(src[soff]);
        } else {
            const Vec<S, V> a = *reinterpret_cast<const Vec<S, V> *>(src + soff);
            Vec<D, V> b;
#pragma unroll
            for (int j = 0; j < V; j++) b.v[j] = Cvt<S, D>::run(a.v[j]);
            *reinterpret_cast<Vec<D, V> *>(dst + doff) = b;
        }
    }
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
        if (ddt == DT_I64 && sdt == DT_I64)
            static_cast<int64_t *>(dst)[doff] = static_cast<const int64_t *>(src)[soff];
        else
            st_d(dst, ddt, doff, ld_d(src, sdt, soff));
    }
}

// Largest offset either side reaches (strides are >= 0 for copies' targets and sources).
bool fits_u32(const Layout &l)
{
    int64_t hi_d = 0, hi_s = 0, n = 1;
    for (int d = 0; d < l.ndim; d++) {
        if (l.dst_stride[d] < 0 || l.src_stride[d] < 0) return false;
        hi_d += (l.shape[d] - 1) * l.dst_stride[d];
        hi_s += (l.shape[d] - 1) * l.src_stride[d];
        n *= l.shape[d];
    }
    const int64_t lim = INT64_C(1) << 31;
    return n < lim && hi_d + 16 < lim && hi_s + 16 < lim;
}

template <typename S, typename D> int launch_typed(void *dst, const void *src, const Layout &l, int64_t numel,
                                                   cudaStream_t s)
{
    constexpr int V = 16 / (sizeof(S) > sizeof(D) ? sizeof(S) : sizeof(D));
    const int in = l.ndim - 1;
    const bool vec = l.ndim > 0 && l.dst_stride[in] == 1 && l.src_stride[in] == 1 && l.shape[in] % V == 0 &&
                     reinterpret_cast<uintptr_t>(dst) % (V * sizeof(D)) == 0 &&
                     reinterpret_cast<uintptr_t>(src) % (V * sizeof(S)) == 0 && [&] {
                         for (int d = 0; d < in; d++)
                             if (l.dst_stride[d] % V || l.src_stride[d] % V) return false;
                         return true;
                     }();
    D *dp = static_cast<D *>(dst);
    const S *sp = static_cast<const S *>(src);
    const bool small = fits_u32(l);
    if (vec && small)
        copy_typed<S, D, V, uint32_t><<<grid_for(numel / V), 256, 0, s>>>(dp, sp, l, static_cast<uint32_t>(numel / V));
    else if (vec)
        copy_typed<S, D, V, int64_t><<<grid_for(numel / V), 256, 0, s>>>(dp, sp, l, numel / V);
    else if (small)
        copy_typed<S, D, 1, uint32_t><<<grid_for(numel), 256, 0, s>>>(dp, sp, l, static_cast<uint32_t>(numel));
    else
        copy_typed<S, D, 1, int64_t><<<grid_for(numel), 256, 0, s>>>(dp, sp, l, numel);
    return static_cast<int>(cudaGetLastError());
}

int elem_size(int dt)
{
    return fgk::dispatch_dtype(dt, [](auto tag) { return static_cast<int>(sizeof(typename decltype(tag)::type)); });
}

// Calls f(TypeTag<T>{}) for T in float / bf16 / f16, or returns -1 for other dtypes.
template <typename F> int dispatch_float(int dt, F &&f)
{
    switch (dt) {
    case DT_F32: return f(fgk::TypeTag<float>{});
    case DT_BF16: return f(fgk::TypeTag<bf16>{});
    case DT_F16: return f(fgk::TypeTag<f16>{});
    default: return -1;
    }
}

} // namespace

extern "C" int fg_k_fill(void *dst, int dtype, int64_t n, double value, void *stream)
{
    if (n <= 0) return 0;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (value == 0.0 && !signbit(value)) // +0 is all-zero bytes in every dtype
        return static_cast<int>(cudaMemsetAsync(dst, 0, static_cast<size_t>(n) * elem_size(dtype), s));
    switch (dtype) {
    case DT_F32: return fill_typed<float>(dst, n, static_cast<float>(value), s);
    case DT_BF16: return fill_typed<bf16>(dst, n, __float2bfloat16_rn(static_cast<float>(value)), s);
    case DT_F16: return fill_typed<f16>(dst, n, __float2half_rn(static_cast<float>(value)), s);
    default: break; // f64 and the saturating integer conversions: through st_d
    }
    fill_kernel<<<grid_for(n), 256, 0, s>>>(dst, dtype, n, value);
    return static_cast<int>(cudaGetLastError());
}

extern "C" int fg_k_copy_strided(void *dst, int dst_dtype, const int64_t *dst_stride, const void *src, int src_dtype,
                                 const int64_t *src_stride, int ndim, const int64_t *shape, int64_t numel, void *stream)
{
    if (numel <= 0) return 0;
    if (ndim > FG_K_MAX_DIMS) return static_cast<int>(cudaErrorInvalidValue);
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    // collapse: drop size-1 dims, merge a dim into the next inner one when both
    // layouts step over it contiguously
    Layout l;
    l.ndim = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1) continue;
        if (l.ndim > 0) {
            const int p = l.ndim - 1;
            if (l.dst_stride[p] == dst_stride[d] * shape[d] && l.src_stride[p] == src_stride[d] * shape[d]) {
                l.shape[p] *= shape[d];
                l.dst_stride[p] = dst_stride[d];
                l.src_stride[p] = src_stride[d];
                continue;
            }
        }
        l.shape[l.ndim] = shape[d];
        l.dst_stride[l.ndim] = dst_stride[d];
        l.src_stride[l.ndim] = src_stride[d];
        l.ndim++;
    }
    if (l.ndim == 0) { // one element
        l.ndim = 1;
        l.shape[0] = 1;
        l.dst_stride[0] = l.src_stride[0] = 1;
    }
    const bool contiguous = l.ndim == 1 && l.dst_stride[0] == 1 && l.src_stride[0] == 1;
    if (dst_dtype == src_dtype) {
        const int es = elem_size(dst_dtype);
        if (contiguous) return static_cast<int>(cudaMemcpyAsync(dst, src, static_cast<size_t>(numel) * es,
                                                                cudaMemcpyDeviceToDevice, s));
        switch (es) {
        case 2: return launch_typed<uint16_t, uint16_t>(dst, src, l, numel, s);
        case 4: return launch_typed<uint32_t, uint32_t>(dst, src, l, numel, s);
        default: return launch_typed<uint64_t, uint64_t>(dst, src, l, numel, s);
        }
    }
    const int rc = dispatch_float(src_dtype, [&](auto st) {
        using S = typename decltype(st)::type;
        return dispatch_float(dst_dtype, [&](auto dt) {
            using D = typename decltype(dt)::type;
            return launch_typed<S, D>(dst, src, l, numel, s);
        });
    });
    if (rc >= 0) return rc;
    copy_kernel<<<grid_for(numel), 256, 0, s>>>(dst, dst_dtype, src, src_dtype, l, numel);
    return static_cast<int>(cudaGetLastError());
}
