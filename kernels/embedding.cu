// Embedding on the device: the row gather of the forward (also index_select's
// fast path) and the scatter-add backward, with atomics or, in deterministic
// mode, a stable radix sort of the indices followed by one ordered sum per row.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cub/device/device_radix_sort.cuh>
#include <stdint.h>
#include "fg_kernels.h"
#include "k_common.cuh"

namespace {

using namespace fgk; // dtype codes, ld_index, ld_d

// double -> float dtype as the CPU's fg__st (through float for bf16/f16).
__device__ __forceinline__ void st_f(void *p, int dt, int64_t i, double v)
{
    switch (dt) {
    case DT_F32: static_cast<float *>(p)[i] = __double2float_rn(v); break;
    case DT_F64: static_cast<double *>(p)[i] = v; break;
    case DT_BF16: static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(__double2float_rn(v)); break;
    default: static_cast<__half *>(p)[i] = __float2half_rn(__double2float_rn(v)); break;
    }
}

int grid_for(int64_t work, int threads = 256)
{
    int64_t g = (work + threads - 1) / threads;
    return static_cast<int>(g < 65535 ? (g > 0 ? g : 1) : 65535);
}

// ---- forward: row gather ----


// V: the access unit (uint4, uint2, uint32_t, uint16_t, uint8_t). All sizes and
// strides are in units of V. An index outside [0, rows) gives zeros and is
// recorded as `code` (with its position j).
template <typename V>
__global__ void gather_rows_kernel(V *out, const V *a, int64_t outer, int64_t L, int64_t inner, int64_t so, int64_t sr,
                                   const void *index, int idt, int64_t istride, int64_t rows, int64_t *rec,
                                   int code)
{
    int64_t total = outer * L * inner;
    for (int64_t f = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; f < total;
         f += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t row = f / inner, t = f - row * inner;
        int64_t o = row / L, j = row - o * L;
        int64_t r = ld_index(index, idt, j * istride);
        if (r < 0 || r >= rows) {
            out[f] = V{};
            if (t == 0) record_error(rec, code, j, r, rows);
            continue;
        }
        out[f] = a[o * so + r * sr + t];
    }
}

template <typename V>
int launch_rows(void *out, const void *a, int64_t outer, int64_t L, int64_t inner, int64_t so, int64_t sr,
                const void *index, int idt, int64_t istride, int64_t rows, int64_t *rec, int code, cudaStream_t s)
{
    gather_rows_kernel<V><<<grid_for(outer * L * inner), 256, 0, s>>>(
        static_cast<V *>(out), static_cast<const V *>(a), outer, L, inner, so, sr, index, idt, istride, rows, rec, code);
    return static_cast<int>(cudaGetLastError());
}

// Embedding forward over a table with strided columns, one thread per element.
template <typename E>
__global__ void emb_fwd_strided_kernel(E *out, const E *a, int64_t n, int64_t D, int64_t sr, int64_t sc,
                                       const void *index, int idt, int64_t rows, int64_t *rec)
{
    int64_t total = n * D;
    for (int64_t f = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; f < total;
         f += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t k = f / D, j = f - k * D;
        int64_t r = ld_index(index, idt, k);
        if (r < 0 || r >= rows) {
            out[f] = E{};
            if (j == 0) record_error(rec, FG_K_ERR_EMBEDDING, k, r, rows);
            continue;
        }
        out[f] = a[r * sr + j * sc];
    }
}

template <typename E>
int launch_strided(void *out, const void *a, int64_t n, int64_t D, int64_t sr, int64_t sc, const void *index, int idt,
                   int64_t rows, int64_t *rec, cudaStream_t s)
{
    emb_fwd_strided_kernel<E><<<grid_for(n * D), 256, 0, s>>>(static_cast<E *>(out), static_cast<const E *>(a), n, D,
                                                              sr, sc, index, idt, rows, rec);
    return static_cast<int>(cudaGetLastError());
}

// ---- backward ----

// Atomic mode: one thread per element of gy (n, D). acc is gw itself (f32, f64)
// or an f32 accumulator (bf16, f16); it starts at zero.
// Out-of-range indices (the forward recorded them and output zeros) are skipped
// here and in the sorted path, so the backward never writes out of bounds.
template <typename A>
__global__ void emb_bwd_atomic_kernel(A *acc, const void *gy, int dt, const void *index, int idt, int64_t n, int64_t D,
                                      int64_t V)
{
    int64_t total = n * D;
    for (int64_t f = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; f < total;
         f += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t k = f / D, j = f - k * D;
        int64_t r = ld_index(index, idt, k);
        if (r < 0 || r >= V) continue;
        atomicAdd(acc + r * D + j, static_cast<A>(ld_d(gy, dt, f)));
    }
}

__global__ void f32_to_dtype_kernel(void *dst, int dt, const float *src, int64_t n)
{
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        st_f(dst, dt, i, src[i]);
}

// Key V for an out-of-range index: sorted after every valid row, then skipped.
__global__ void emb_keys_kernel(unsigned long long *keys, long long *vals, const void *index, int idt, int64_t n,
                                int64_t V)
{
    for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < n;
         k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        int64_t r = ld_index(index, idt, k);
        keys[k] = static_cast<unsigned long long>(r < 0 || r >= V ? V : r);
        vals[k] = k;
    }
}

// Deterministic mode, after the stable sort of (row, position) pairs: block row
// m of the grid handles sorted position m; when m starts a run of equal rows it
// sums the run's gradient rows in position order (the CPU's order), in double,
// and stores once. Rows nobody picked were zeroed before.
__global__ void emb_bwd_sorted_kernel(void *gw, int dt, const void *gy, const unsigned long long *keys,
                                      const long long *vals, int64_t n, int64_t D, int64_t V)
{
    for (int64_t m = blockIdx.y; m < n; m += gridDim.y) {
        unsigned long long r = keys[m];
        if (r >= static_cast<unsigned long long>(V)) break; // out-of-range keys sort last
        if (m > 0 && keys[m - 1] == r) continue; // not the start of a run (uniform across the block)
        for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < D;
             j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
            double acc = 0.0;
            for (int64_t q = m; q < n && keys[q] == r; q++) acc += ld_d(gy, dt, vals[q] * D + j);
            st_f(gw, dt, static_cast<int64_t>(r) * D + j, acc);
        }
    }
}

// Scratch layout (each piece 256-byte aligned); with base == nullptr it only
// measures.
struct Carve {
    char *base;
    size_t used;
    template <typename T> T *take(size_t count)
    {
        size_t off = (used + 255) & ~static_cast<size_t>(255);
        used = off + count * sizeof(T);
        return base ? reinterpret_cast<T *>(base + off) : nullptr;
    }
};

int bits_for(int64_t v) // bits needed for values in [0, v)
{
    int b = 1;
    while (b < 63 && (static_cast<int64_t>(1) << b) < v) b++;
    return b;
}

struct EmbPlan {
    unsigned long long *kin, *kout;
    long long *vin, *vout;
    float *acc;
    void *temp;
    size_t temp_bytes;
};

// Carves the scratch for the given arguments (measure only when base is null).
cudaError_t emb_plan(Carve &c, EmbPlan &p, bool det, int dtype, int64_t n, int64_t V, int64_t D, cudaStream_t s)
{
    p = EmbPlan{};
    if (det) {
        p.kin = c.take<unsigned long long>(static_cast<size_t>(n));
        p.kout = c.take<unsigned long long>(static_cast<size_t>(n));
        p.vin = c.take<long long>(static_cast<size_t>(n));
        p.vout = c.take<long long>(static_cast<size_t>(n));
        cudaError_t e = cub::DeviceRadixSort::SortPairs(nullptr, p.temp_bytes, p.kin, p.kout, p.vin, p.vout, n, 0,
                                                        bits_for(V + 1), s);
        if (e != cudaSuccess) return e;
        p.temp = c.take<char>(p.temp_bytes);
    } else if (dtype == DT_BF16 || dtype == DT_F16) {
        p.acc = c.take<float>(static_cast<size_t>(V * D));
    }
    return cudaSuccess;
}

} // namespace

extern "C" int fg_k_gather_rows(void *out, const void *a, int elem_size, int64_t outer, int64_t L, int64_t inner,
                                int64_t a_outer_stride, int64_t a_row_stride, const void *index, int index_dtype,
                                int64_t index_stride, int64_t rows, int64_t *err_rec, int err_code, void *stream)
{
    if (outer <= 0 || L <= 0 || inner <= 0) return 0;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    // The widest unit that divides every byte offset and both base addresses.
    uint64_t es = static_cast<uint64_t>(elem_size);
    uint64_t m = reinterpret_cast<uintptr_t>(out) | reinterpret_cast<uintptr_t>(a) | (static_cast<uint64_t>(inner) * es) |
                 (static_cast<uint64_t>(a_outer_stride) * es) | (static_cast<uint64_t>(a_row_stride) * es);
    // (at least elem_size: every term is a multiple of it for aligned tensors)
    int64_t b = m % 16 == 0 ? 16 : m % 8 == 0 ? 8 : m % 4 == 0 ? 4 : m % 2 == 0 ? 2 : 1;
    int64_t in_u = inner * elem_size / b, so = a_outer_stride * elem_size / b, sr = a_row_stride * elem_size / b;
    switch (b) {
    case 16: return launch_rows<uint4>(out, a, outer, L, in_u, so, sr, index, index_dtype, index_stride, rows, err_rec, err_code, s);
    case 8: return launch_rows<uint2>(out, a, outer, L, in_u, so, sr, index, index_dtype, index_stride, rows, err_rec, err_code, s);
    case 4: return launch_rows<uint32_t>(out, a, outer, L, in_u, so, sr, index, index_dtype, index_stride, rows, err_rec, err_code, s);
    case 2: return launch_rows<uint16_t>(out, a, outer, L, in_u, so, sr, index, index_dtype, index_stride, rows, err_rec, err_code, s);
    default: return launch_rows<uint8_t>(out, a, outer, L, in_u, so, sr, index, index_dtype, index_stride, rows, err_rec, err_code, s);
    }
}

extern "C" int fg_k_embedding_fwd_strided(void *out, const void *a, int elem_size, int64_t n, int64_t D,
                                          int64_t a_row_stride, int64_t a_col_stride, const void *index,
                                          int index_dtype, int64_t rows, int64_t *err_rec, void *stream)
{
    if (n <= 0 || D <= 0) return 0;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    switch (elem_size) {
    case 8: return launch_strided<uint64_t>(out, a, n, D, a_row_stride, a_col_stride, index, index_dtype, rows, err_rec, s);
    case 4: return launch_strided<uint32_t>(out, a, n, D, a_row_stride, a_col_stride, index, index_dtype, rows, err_rec, s);
    case 2: return launch_strided<uint16_t>(out, a, n, D, a_row_stride, a_col_stride, index, index_dtype, rows, err_rec, s);
    case 1: return launch_strided<uint8_t>(out, a, n, D, a_row_stride, a_col_stride, index, index_dtype, rows, err_rec, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
    }
}

extern "C" int fg_k_embedding_backward_scratch(int deterministic, int dtype, int64_t n, int64_t V, int64_t D,
                                               size_t *bytes)
{
    Carve c{nullptr, 0};
    EmbPlan p;
    cudaError_t e = emb_plan(c, p, deterministic != 0, dtype, n, V, D, nullptr);
    *bytes = c.used;
    return static_cast<int>(e);
}

extern "C" int fg_k_embedding_backward(void *gw, int dtype, int64_t V, int64_t D, const void *index, int index_dtype,
                                       int64_t n, const void *gy, int deterministic, void *scratch,
                                       size_t scratch_bytes, void *stream)
{
    if (V <= 0 || D <= 0) return 0;
    if (dtype < DT_F32 || dtype > DT_F16) return static_cast<int>(cudaErrorInvalidValue);
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    size_t es = dtype == DT_F64 ? 8 : dtype == DT_F32 ? 4 : 2;
    cudaError_t e = cudaMemsetAsync(gw, 0, static_cast<size_t>(V * D) * es, s);
    if (e != cudaSuccess || n <= 0) return static_cast<int>(e);
    Carve c{static_cast<char *>(scratch), 0};
    EmbPlan p;
    e = emb_plan(c, p, deterministic != 0, dtype, n, V, D, s);
    if (e != cudaSuccess) return static_cast<int>(e);
    if (c.used > scratch_bytes || (c.used > 0 && !scratch)) return static_cast<int>(cudaErrorInvalidValue);
    if (deterministic) {
        emb_keys_kernel<<<grid_for(n), 256, 0, s>>>(p.kin, p.vin, index, index_dtype, n, V);
        if ((e = cudaGetLastError()) != cudaSuccess) return static_cast<int>(e);
        // A stable sort: equal rows keep their positions in increasing order.
        e = cub::DeviceRadixSort::SortPairs(p.temp, p.temp_bytes, p.kin, p.kout, p.vin, p.vout, n, 0, bits_for(V + 1), s);
        if (e != cudaSuccess) return static_cast<int>(e);
        dim3 grid(static_cast<unsigned>(grid_for(D, 128)), static_cast<unsigned>(n < 65535 ? n : 65535));
        emb_bwd_sorted_kernel<<<grid, 128, 0, s>>>(gw, dtype, gy, p.kout, p.vout, n, D, V);
        return static_cast<int>(cudaGetLastError());
    }
    if (dtype == DT_F32) {
        emb_bwd_atomic_kernel<float><<<grid_for(n * D), 256, 0, s>>>(static_cast<float *>(gw), gy, dtype, index,
                                                                     index_dtype, n, D, V);
    } else if (dtype == DT_F64) {
        emb_bwd_atomic_kernel<double><<<grid_for(n * D), 256, 0, s>>>(static_cast<double *>(gw), gy, dtype, index,
                                                                      index_dtype, n, D, V);
    } else {
        e = cudaMemsetAsync(p.acc, 0, static_cast<size_t>(V * D) * sizeof(float), s);
        if (e != cudaSuccess) return static_cast<int>(e);
        emb_bwd_atomic_kernel<float><<<grid_for(n * D), 256, 0, s>>>(p.acc, gy, dtype, index, index_dtype, n, D, V);
        if ((e = cudaGetLastError()) != cudaSuccess) return static_cast<int>(e);
        f32_to_dtype_kernel<<<grid_for(V * D), 256, 0, s>>>(gw, dtype, p.acc, V * D);
    }
    return static_cast<int>(cudaGetLastError());
}
