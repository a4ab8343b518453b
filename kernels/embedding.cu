// Embedding on the device: the row gather of the forward (also index_select's
// fast path) and the scatter-add backward, with atomics or, in deterministic
// mode, a stable radix sort of the indices followed by one ordered sum per row.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include "fg_kernels.h"
#include "k_common.cuh"
#include "k_sort.cuh"

namespace {

using namespace fgk; // dtype codes, ld_index, ld_d

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
    FGK_GRID_STRIDE(f, total) {
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
    FGK_GRID_STRIDE(f, total) {
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
    FGK_GRID_STRIDE(f, total) {
        int64_t k = f / D, j = f - k * D;
        int64_t r = ld_index(index, idt, k);
        if (r < 0 || r >= V) continue;
        atomicAdd(acc + r * D + j, static_cast<A>(ld_d(gy, dt, f)));
    }
}

// Key V for an out-of-range index: sorted after every valid row, then skipped.
__global__ void emb_keys_kernel(unsigned long long *keys, long long *vals, const void *index, int idt, int64_t n,
                                int64_t V)
{
    FGK_GRID_STRIDE(k, n) {
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
        FGK_GRID_STRIDE(j, D) {
            double acc = 0.0;
            for (int64_t q = m; q < n && keys[q] == r; q++) acc += ld_d(gy, dt, vals[q] * D + j);
            st_d(gw, dt, static_cast<int64_t>(r) * D + j, acc);
        }
    }
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
    SortPlan p;
    cudaError_t e = sort_plan(c, p, deterministic != 0, n, V, is_half(dtype) ? V * D : 0, nullptr);
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
    SortPlan p;
    e = sort_plan(c, p, deterministic != 0, n, V, is_half(dtype) ? V * D : 0, s);
    if (e != cudaSuccess) return static_cast<int>(e);
    if (c.used > scratch_bytes || (c.used > 0 && !scratch)) return static_cast<int>(cudaErrorInvalidValue);
    if (deterministic) {
        emb_keys_kernel<<<grid_for(n), 256, 0, s>>>(p.kin, p.vin, index, index_dtype, n, V);
        if ((e = cudaGetLastError()) != cudaSuccess) return static_cast<int>(e);
        // A stable sort: equal rows keep their positions in increasing order.
        e = sort_pairs(p, n, V, s);
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
        from_f32_kernel<<<grid_for(V * D), 256, 0, s>>>(gw, dtype, p.acc, V * D);
    }
    return static_cast<int>(cudaGetLastError());
}
