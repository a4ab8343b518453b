// Index ops on the device: gather, index_select, scatter,
// scatter_add, index_add and topk (see k_index.h). Every kernel reads its
// operands through the fg_k_tensor strides, so strided and broadcast (stride-0)
// views need no copies.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cub/device/device_segmented_sort.cuh>
#include <stdint.h>
#include "fg_kernels.h"
#include "k_common.cuh"
#include "k_sort.cuh"

namespace {

using namespace fgk; // dtype codes, ld_index, ld_d


__host__ __device__ __forceinline__ int dtype_size(int dt) { return dt == DT_F64 || dt == DT_I64 ? 8 : dt == DT_F32 || dt == DT_I32 ? 4 : 2; }


__device__ __forceinline__ void copy_elem(void *dst, int64_t di, const void *src, int64_t si, int esz)
{
    switch (esz) {
    case 8: static_cast<uint64_t *>(dst)[di] = static_cast<const uint64_t *>(src)[si]; break;
    case 4: static_cast<uint32_t *>(dst)[di] = static_cast<const uint32_t *>(src)[si]; break;
    default: static_cast<uint16_t *>(dst)[di] = static_cast<const uint16_t *>(src)[si]; break;
    }
}

// ---- gather ----

// out and idx share a shape; a's coordinate `dim` comes from idx. A bad index
// gives a zero and is recorded as `code` with position f (pos_dim < 0) or out's
// coordinate pos_dim (index_select's 1-d index seen broadcast).
__global__ void gather_kernel(fg_k_tensor out, fg_k_tensor a, int dim, fg_k_tensor idx, int esz, int64_t *rec,
                              int code, int pos_dim)
{
    FGK_GRID_STRIDE(f, out.numel)
    {
        int64_t rem = f, oo = 0, io = 0, ao = 0, pos = f;
        for (int d = out.ndim - 1; d >= 0; d--) {
            int64_t c = rem % out.shape[d];
            rem /= out.shape[d];
            oo += c * out.stride[d];
            io += c * idx.stride[d];
            if (d != dim) ao += c * a.stride[d];
            if (d == pos_dim) pos = c;
        }
        const int64_t v = ld_index(idx.data, idx.dtype, io);
        if (v < 0 || v >= a.shape[dim]) {
            const uint64_t zero = 0;
            copy_elem(out.data, oo, &zero, 0, esz);
            record_error(rec, code, pos, v, a.shape[dim]);
            continue;
        }
        copy_elem(out.data, oo, a.data, ao + v * a.stride[dim], esz);
    }
}

int launch_gather(const fg_k_tensor &out, const fg_k_tensor &a, int dim, const fg_k_tensor &index, int64_t *rec,
                  int code, int pos_dim, cudaStream_t s)
{
    if (out.numel <= 0) return 0;
    gather_kernel<<<grid_for(out.numel), 256, 0, s>>>(out, a, dim, index, dtype_size(a.dtype), rec, code, pos_dim);
    return static_cast<int>(cudaGetLastError());
}

// ---- scatter family ----

// Position p of index: target offset in out (coordinate dim from the index)
// and source offset in src; false (recorded as `code`) for a bad index.
__device__ __forceinline__ bool scatter_offsets(int64_t p, const fg_k_tensor &out, int dim, const fg_k_tensor &idx,
                                                const fg_k_tensor &src, int64_t *t, int64_t *so, int64_t *rec,
                                                int code)
{
    int64_t rem = p, io = 0, to = 0, s = 0;
    for (int d = idx.ndim - 1; d >= 0; d--) {
        int64_t c = rem % idx.shape[d];
        rem /= idx.shape[d];
        io += c * idx.stride[d];
        s += c * src.stride[d];
        if (d != dim) to += c * out.stride[d];
    }
    const int64_t v = ld_index(idx.data, idx.dtype, io);
    *so = s;
    if (v < 0 || v >= out.shape[dim]) {
        record_error(rec, code, p, v, out.shape[dim]);
        return false;
    }
    *t = to + v * out.stride[dim];
    return true;
}

// Keys: target offsets, out.numel (sorted last, then skipped) for a bad index.
__global__ void scatter_keys_kernel(fg_k_tensor out, int dim, fg_k_tensor idx, fg_k_tensor src,
                                    unsigned long long *keys, long long *vals, int64_t *rec, int code)
{
    FGK_GRID_STRIDE(p, idx.numel)
    {
        int64_t t, so;
        if (!scatter_offsets(p, out, dim, idx, src, &t, &so, rec, code)) t = out.numel;
        keys[p] = static_cast<unsigned long long>(t);
        vals[p] = so;
    }
}

// After the stable sort by target: equal targets form runs in index order.
// SET: the last of each run writes (the CPU's last write). ADD: the first of
// each run sums the run in order onto the starting value, in double.
__global__ void scatter_sorted_kernel(fg_k_tensor out, fg_k_tensor src, const unsigned long long *keys,
                                      const long long *vals, int64_t n, bool add)
{
    FGK_GRID_STRIDE(m, n)
    {
        unsigned long long t = keys[m];
        if (t >= static_cast<unsigned long long>(out.numel)) continue; // a bad index
        if (!add) {
            if (m + 1 < n && keys[m + 1] == t) continue;
            copy_elem(out.data, static_cast<int64_t>(t), src.data, vals[m], dtype_size(out.dtype));
            continue;
        }
        if (m > 0 && keys[m - 1] == t) continue;
        double acc = ld_d(out.data, out.dtype, static_cast<int64_t>(t));
        for (int64_t q = m; q < n && keys[q] == t; q++) acc += ld_d(src.data, src.dtype, vals[q]);
        st_d(out.data, out.dtype, static_cast<int64_t>(t), acc);
    }
}

// Atomic scatter_add: one thread per index position. acc is out itself (f32,
// f64) or an f32 accumulator (bf16, f16) laid out like out.
template <typename A>
__global__ void scatter_add_atomic_kernel(A *acc, fg_k_tensor out, int dim, fg_k_tensor idx, fg_k_tensor src,
                                          int64_t *rec)
{
    FGK_GRID_STRIDE(p, idx.numel)
    {
        int64_t t, so;
        if (!scatter_offsets(p, out, dim, idx, src, &t, &so, rec, FG_K_ERR_SCATTER_ADD)) continue;
        atomicAdd(acc + t, static_cast<A>(ld_d(src.data, src.dtype, so)));
    }
}

// ---- index_add ----

// Offsets of the (outer o, inner i) corner of t around dim (coordinate dim = 0).
__device__ __forceinline__ int64_t corner_offset(int64_t o, int64_t i, const fg_k_tensor &t, int dim)
{
    int64_t off = 0;
    for (int d = t.ndim - 1; d > dim; d--) {
        int64_t c = i % t.shape[d];
        i /= t.shape[d];
        off += c * t.stride[d];
    }
    for (int d = dim - 1; d >= 0; d--) {
        int64_t c = o % t.shape[d];
        o /= t.shape[d];
        off += c * t.stride[d];
    }
    return off;
}

// Atomic index_add: one thread per src element.
template <typename A>
__global__ void index_add_atomic_kernel(A *acc, fg_k_tensor out, int dim, fg_k_tensor idx, int64_t istride,
                                        fg_k_tensor src, int64_t *rec)
{
    FGK_GRID_STRIDE(f, src.numel)
    {
        int64_t rem = f, so = 0, to = 0, j = 0;
        for (int d = src.ndim - 1; d >= 0; d--) {
            int64_t c = rem % src.shape[d];
            rem /= src.shape[d];
            so += c * src.stride[d];
            if (d != dim)
                to += c * out.stride[d];
            else
                j = c;
        }
        const int64_t v = ld_index(idx.data, idx.dtype, j * istride);
        if (v < 0 || v >= out.shape[dim]) {
            record_error(rec, FG_K_ERR_INDEX_ADD, j, v, out.shape[dim]);
            continue;
        }
        to += v * out.stride[dim];
        atomicAdd(acc + to, static_cast<A>(ld_d(src.data, src.dtype, so)));
    }
}

// Keys: the index values, dim_size (sorted last, then skipped) for a bad one.
__global__ void index_keys_kernel(fg_k_tensor idx, int64_t istride, int64_t L, int64_t dim_size,
                                  unsigned long long *keys, long long *vals, int64_t *rec)
{
    FGK_GRID_STRIDE(j, L)
    {
        int64_t v = ld_index(idx.data, idx.dtype, j * istride);
        if (v < 0 || v >= dim_size) {
            record_error(rec, FG_K_ERR_INDEX_ADD, j, v, dim_size);
            v = dim_size;
        }
        keys[j] = static_cast<unsigned long long>(v);
        vals[j] = j;
    }
}

// Deterministic index_add after the stable sort of (target, j): grid row m
// handles sorted position m; when m starts a run it adds, for each of the
// outer * inner elements e, the run's src slices in j order onto out's
// starting value, in double (the CPU's order and rounding).
__global__ void index_add_sorted_kernel(fg_k_tensor out, int dim, fg_k_tensor src, const unsigned long long *keys,
                                        const long long *vals, int64_t L, int64_t outer, int64_t inner)
{
    int64_t ne = outer * inner;
    for (int64_t m = blockIdx.y; m < L; m += gridDim.y) {
        unsigned long long t = keys[m];
        if (t >= static_cast<unsigned long long>(out.shape[dim])) break; // bad indices sort last
        if (m > 0 && keys[m - 1] == t) continue;                         // uniform across the block
        FGK_GRID_STRIDE(e, ne)
        {
            int64_t o = e / inner, i = e - o * inner;
            int64_t to = corner_offset(o, i, out, dim) + static_cast<int64_t>(t) * out.stride[dim];
            int64_t sb = corner_offset(o, i, src, dim);
            double acc = ld_d(out.data, out.dtype, to);
            for (int64_t q = m; q < L && keys[q] == t; q++) acc += ld_d(src.data, src.dtype, sb + vals[q] * src.stride[dim]);
            st_d(out.data, out.dtype, to, acc);
        }
    }
}


// ---- topk ----

// A 64-bit key whose ascending order is the CPU's order for this direction:
// largest: NaN first, then decreasing; smallest: increasing, then NaN. -0 and
// +0 compare equal (the index breaks the tie), like the CPU's comparisons.
__device__ __forceinline__ unsigned long long topk_key(double v, bool largest)
{
    if (v != v) return largest ? 0ull : ~0ull;
    if (v == 0.0) v = 0.0;
    unsigned long long u = static_cast<unsigned long long>(__double_as_longlong(v));
    unsigned long long ord = (u >> 63) ? ~u : (u | 0x8000000000000000ull); // ascending with v
    return largest ? ~ord : ord;
}

__device__ __forceinline__ int64_t row_base(int64_t row, int64_t inner, const fg_k_tensor &a, int dim)
{
    int64_t o = row / inner;
    return corner_offset(o, row - o * inner, a, dim);
}

constexpr int TOPK_MAX_SHARED = 4096;

// One block per row (grid-stride over rows): the row's (key, index) pairs are
// sorted ascending in shared memory by a bitonic network (padding sorts last),
// then the first k are written out. keys/index give a strict total order, so
// the result equals the CPU's stable sort.
__global__ void topk_bitonic_kernel(fg_k_tensor values, fg_k_tensor indices, fg_k_tensor a, int dim, int64_t k,
                                    bool largest, int64_t rows, int64_t inner, int n, int P)
{
    extern __shared__ unsigned long long smem[];
    unsigned long long *key = smem;
    uint32_t *pos = reinterpret_cast<uint32_t *>(smem + P);
    int esz = dtype_size(a.dtype);
    int64_t sd = a.stride[dim];
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        int64_t base = row_base(row, inner, a, dim);
        for (int t = threadIdx.x; t < P; t += blockDim.x) {
            if (t < n) {
                key[t] = topk_key(ld_d(a.data, a.dtype, base + t * sd), largest);
                pos[t] = static_cast<uint32_t>(t);
            } else {
                key[t] = ~0ull;
                pos[t] = 0xffffffffu;
            }
        }
        __syncthreads();
        for (int size = 2; size <= P; size <<= 1) {
            for (int stride = size >> 1; stride > 0; stride >>= 1) {
                for (int t = threadIdx.x; t < P / 2; t += blockDim.x) {
                    int i = 2 * t - (t & (stride - 1)), l = i + stride;
                    bool asc = (i & size) == 0;
                    unsigned long long ki = key[i], kl = key[l];
                    uint32_t pi = pos[i], pl = pos[l];
                    bool greater = ki > kl || (ki == kl && pi > pl);
                    if (greater == asc) {
                        key[i] = kl;
                        key[l] = ki;
                        pos[i] = pl;
                        pos[l] = pi;
                    }
                }
                __syncthreads();
            }
        }
        int64_t o = row / inner, ii = row - o * inner;
        for (int t = threadIdx.x; t < k; t += blockDim.x) {
            int64_t dst = (o * k + t) * inner + ii;
            copy_elem(values.data, dst, a.data, base + static_cast<int64_t>(pos[t]) * sd, esz);
            static_cast<int64_t *>(indices.data)[dst] = pos[t];
        }
        __syncthreads(); // the next row reuses the shared arrays
    }
}

// Long rows: keys of every element, rows packed one after another.
__global__ void topk_keys_kernel(fg_k_tensor a, int dim, bool largest, int64_t rows, int64_t inner, int64_t n,
                                 unsigned long long *keys, int *vals, long long *offsets)
{
    FGK_GRID_STRIDE(f, rows * n)
    {
        int64_t row = f / n, t = f - row * n;
        keys[f] = topk_key(ld_d(a.data, a.dtype, row_base(row, inner, a, dim) + t * a.stride[dim]), largest);
        vals[f] = static_cast<int>(t);
        if (t == 0) offsets[row] = f;
        if (f == rows * n - 1) offsets[rows] = rows * n;
    }
}

__global__ void topk_write_kernel(fg_k_tensor values, fg_k_tensor indices, fg_k_tensor a, int dim, int64_t k,
                                  int64_t rows, int64_t inner, int64_t n, const int *sorted)
{
    int esz = dtype_size(a.dtype);
    FGK_GRID_STRIDE(f, rows * k)
    {
        int64_t row = f / k, t = f - row * k;
        int64_t o = row / inner, ii = row - o * inner;
        int64_t j = sorted[row * n + t], dst = (o * k + t) * inner + ii;
        copy_elem(values.data, dst, a.data, row_base(row, inner, a, dim) + j * a.stride[dim], esz);
        static_cast<int64_t *>(indices.data)[dst] = j;
    }
}

struct TopkPlan {
    unsigned long long *kin, *kout;
    int *vin, *vout;
    long long *offsets;
    void *temp;
    size_t temp_bytes;
};

cudaError_t topk_plan(Carve &c, TopkPlan &p, int64_t rows, int64_t n, cudaStream_t s)
{
    p = TopkPlan{};
    if (n <= TOPK_MAX_SHARED) return cudaSuccess;
    size_t total = static_cast<size_t>(rows * n);
    p.kin = c.take<unsigned long long>(total);
    p.kout = c.take<unsigned long long>(total);
    p.vin = c.take<int>(total);
    p.vout = c.take<int>(total);
    p.offsets = c.take<long long>(static_cast<size_t>(rows + 1));
    cudaError_t e = cub::DeviceSegmentedSort::StableSortPairs(nullptr, p.temp_bytes, p.kin, p.kout, p.vin, p.vout,
                                                              rows * n, rows, p.offsets, p.offsets + 1, s);
    if (e != cudaSuccess) return e;
    p.temp = c.take<char>(p.temp_bytes);
    return cudaSuccess;
}

} // namespace

// ---- launchers ----

extern "C" int fg_k_gather(fg_k_tensor out, fg_k_tensor a, int dim, fg_k_tensor index, int64_t *err_rec,
                           void *stream)
{
    if (out.dtype != a.dtype || index.ndim != out.ndim) return static_cast<int>(cudaErrorInvalidValue);
    return launch_gather(out, a, dim, index, err_rec, FG_K_ERR_GATHER, -1, static_cast<cudaStream_t>(stream));
}

extern "C" int fg_k_index_select(fg_k_tensor out, fg_k_tensor a, int dim, fg_k_tensor index, int64_t *err_rec,
                                 void *stream)
{
    if (out.numel <= 0) return 0;
    if (out.dtype != a.dtype) return static_cast<int>(cudaErrorInvalidValue);
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    int64_t L = index.numel, istride = index.ndim == 1 ? index.stride[0] : 0;
    // Fast path: the dims after dim form one contiguous block, the dims before
    // it one uniformly strided run (size-1 dims ignored).
    bool rows = true;
    int64_t inner = 1, outer = 1, so = 0, prev_stride = -1, prev_size = 1;
    for (int d = a.ndim - 1; d > dim; d--) {
        if (a.shape[d] == 1) continue;
        if (a.stride[d] != inner) rows = false;
        inner *= a.shape[d];
    }
    for (int d = dim - 1; d >= 0 && rows; d--) {
        if (a.shape[d] == 1) continue;
        if (prev_stride < 0)
            so = a.stride[d];
        else if (a.stride[d] != prev_stride * prev_size)
            rows = false;
        prev_stride = a.stride[d];
        prev_size = a.shape[d];
        outer *= a.shape[d];
    }
    if (rows)
        return fg_k_gather_rows(out.data, a.data, dtype_size(a.dtype), outer, L, inner, so, a.stride[dim], index.data,
                                index.dtype, istride, a.shape[dim], err_rec, FG_K_ERR_INDEX_SELECT, stream);
    // General path: the index read as broadcast to out's shape.
    fg_k_tensor ix = out;
    ix.data = index.data;
    ix.dtype = index.dtype;
    for (int d = 0; d < FG_K_MAX_DIMS; d++) ix.stride[d] = d == dim ? istride : 0;
    return launch_gather(out, a, dim, ix, err_rec, FG_K_ERR_INDEX_SELECT, dim, s);
}

extern "C" int fg_k_scatter_scratch(int mode, int dtype, int64_t n_index, int64_t out_numel, size_t *bytes)
{
    if (mode == FG_K_SCATTER_ADD && is_int(dtype)) mode = FG_K_SCATTER_ADD_DET;
    Carve c{nullptr, 0};
    SortPlan p;
    cudaError_t e = sort_plan(c, p, mode != FG_K_SCATTER_ADD, n_index, out_numel,
                              mode == FG_K_SCATTER_ADD && is_half(dtype) ? out_numel : 0, nullptr);
    *bytes = c.used;
    return static_cast<int>(e);
}

extern "C" int fg_k_scatter(fg_k_tensor out, int dim, fg_k_tensor index, fg_k_tensor src, int mode, void *scratch,
                            size_t scratch_bytes, int64_t *err_rec, void *stream)
{
    if (index.numel <= 0) return 0;
    if (out.dtype != src.dtype || index.ndim != out.ndim || src.ndim != out.ndim)
        return static_cast<int>(cudaErrorInvalidValue);
    const int code = mode == FG_K_SCATTER_SET ? FG_K_ERR_SCATTER : FG_K_ERR_SCATTER_ADD;
    if (mode == FG_K_SCATTER_ADD && is_int(out.dtype)) mode = FG_K_SCATTER_ADD_DET;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    bool sorted = mode != FG_K_SCATTER_ADD;
    int64_t n = index.numel;
    Carve c{static_cast<char *>(scratch), 0};
    SortPlan p;
    cudaError_t e = sort_plan(c, p, sorted, n, out.numel, !sorted && is_half(out.dtype) ? out.numel : 0, s);
    if (e != cudaSuccess) return static_cast<int>(e);
    if (c.used > scratch_bytes || (c.used > 0 && !scratch)) return static_cast<int>(cudaErrorInvalidValue);
    if (sorted) {
        scatter_keys_kernel<<<grid_for(n), 256, 0, s>>>(out, dim, index, src, p.kin, p.vin, err_rec, code);
        if ((e = cudaGetLastError()) != cudaSuccess) return static_cast<int>(e);
        // Stable: equal targets keep their row-major index order.
        e = sort_pairs(p, n, out.numel, s);
        if (e != cudaSuccess) return static_cast<int>(e);
        scatter_sorted_kernel<<<grid_for(n), 256, 0, s>>>(out, src, p.kout, p.vout, n, mode == FG_K_SCATTER_ADD_DET);
    } else if (out.dtype == DT_F32) {
        scatter_add_atomic_kernel<float><<<grid_for(n), 256, 0, s>>>(static_cast<float *>(out.data), out, dim, index, src,
                                                                          err_rec);
    } else if (out.dtype == DT_F64) {
        scatter_add_atomic_kernel<double><<<grid_for(n), 256, 0, s>>>(static_cast<double *>(out.data), out, dim, index,
                                                                       src, err_rec);
    } else {
        to_f32_kernel<<<grid_for(out.numel), 256, 0, s>>>(p.acc, out.data, out.dtype, out.numel);
        scatter_add_atomic_kernel<float><<<grid_for(n), 256, 0, s>>>(p.acc, out, dim, index, src, err_rec);
        from_f32_kernel<<<grid_for(out.numel), 256, 0, s>>>(out.data, out.dtype, p.acc, out.numel);
    }
    return static_cast<int>(cudaGetLastError());
}

extern "C" int fg_k_index_add_scratch(int deterministic, int dtype, int64_t index_len, int64_t dim_size,
                                      int64_t out_numel, size_t *bytes)
{
    bool sorted = deterministic || is_int(dtype);
    Carve c{nullptr, 0};
    SortPlan p;
    cudaError_t e = sort_plan(c, p, sorted, index_len, dim_size, !sorted && is_half(dtype) ? out_numel : 0, nullptr);
    *bytes = c.used;
    return static_cast<int>(e);
}

extern "C" int fg_k_index_add(fg_k_tensor out, int dim, fg_k_tensor index, fg_k_tensor src, int deterministic,
                              void *scratch, size_t scratch_bytes, int64_t *err_rec, void *stream)
{
    if (src.numel <= 0) return 0;
    if (out.dtype != src.dtype || src.ndim != out.ndim) return static_cast<int>(cudaErrorInvalidValue);
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    bool sorted = deterministic || is_int(out.dtype);
    int64_t L = index.numel, istride = index.ndim == 1 ? index.stride[0] : 0;
    Carve c{static_cast<char *>(scratch), 0};
    SortPlan p;
    cudaError_t e = sort_plan(c, p, sorted, L, out.shape[dim], !sorted && is_half(out.dtype) ? out.numel : 0, s);
    if (e != cudaSuccess) return static_cast<int>(e);
    if (c.used > scratch_bytes || (c.used > 0 && !scratch)) return static_cast<int>(cudaErrorInvalidValue);
    if (sorted) {
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < dim; d++) outer *= src.shape[d];
        for (int d = dim + 1; d < src.ndim; d++) inner *= src.shape[d];
        index_keys_kernel<<<grid_for(L), 256, 0, s>>>(index, istride, L, out.shape[dim], p.kin, p.vin, err_rec);
        if ((e = cudaGetLastError()) != cudaSuccess) return static_cast<int>(e);
        e = sort_pairs(p, L, out.shape[dim], s);
        if (e != cudaSuccess) return static_cast<int>(e);
        dim3 grid(static_cast<unsigned>(grid_for(outer * inner, 128)), static_cast<unsigned>(L < 65535 ? L : 65535));
        index_add_sorted_kernel<<<grid, 128, 0, s>>>(out, dim, src, p.kout, p.vout, L, outer, inner);
    } else if (out.dtype == DT_F32) {
        index_add_atomic_kernel<float><<<grid_for(src.numel), 256, 0, s>>>(static_cast<float *>(out.data), out, dim,
                                                                           index, istride, src, err_rec);
    } else if (out.dtype == DT_F64) {
        index_add_atomic_kernel<double><<<grid_for(src.numel), 256, 0, s>>>(static_cast<double *>(out.data), out, dim,
                                                                            index, istride, src, err_rec);
    } else {
        to_f32_kernel<<<grid_for(out.numel), 256, 0, s>>>(p.acc, out.data, out.dtype, out.numel);
        index_add_atomic_kernel<float><<<grid_for(src.numel), 256, 0, s>>>(p.acc, out, dim, index, istride, src,
                                                                             err_rec);
        from_f32_kernel<<<grid_for(out.numel), 256, 0, s>>>(out.data, out.dtype, p.acc, out.numel);
    }
    return static_cast<int>(cudaGetLastError());
}

extern "C" int fg_k_topk_scratch(int64_t rows, int64_t n, size_t *bytes)
{
    Carve c{nullptr, 0};
    TopkPlan p;
    cudaError_t e = topk_plan(c, p, rows, n, nullptr);
    *bytes = c.used;
    return static_cast<int>(e);
}

extern "C" int fg_k_topk(fg_k_tensor values, fg_k_tensor indices, fg_k_tensor a, int dim, int64_t k, int largest,
                         void *scratch, size_t scratch_bytes, void *stream)
{
    int64_t n = a.shape[dim], rows = n > 0 ? a.numel / n : 0, inner = 1;
    for (int d = dim + 1; d < a.ndim; d++) inner *= a.shape[d];
    if (k <= 0 || rows <= 0) return 0;
    if (values.dtype != a.dtype || indices.dtype != DT_I64 || k > n || n > INT32_MAX)
        return static_cast<int>(cudaErrorInvalidValue);
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (n <= TOPK_MAX_SHARED) {
        int P = 1;
        while (P < n) P <<= 1;
        int threads = P / 2 < 32 ? 32 : P / 2 > 512 ? 512 : P / 2;
        size_t smem = static_cast<size_t>(P) * (sizeof(unsigned long long) + sizeof(uint32_t));
        int grid = static_cast<int>(rows < 65535 ? rows : 65535);
        topk_bitonic_kernel<<<grid, threads, smem, s>>>(values, indices, a, dim, k, largest != 0, rows, inner,
                                                        static_cast<int>(n), P);
        return static_cast<int>(cudaGetLastError());
    }
    Carve c{static_cast<char *>(scratch), 0};
    TopkPlan p;
    cudaError_t e = topk_plan(c, p, rows, n, s);
    if (e != cudaSuccess) return static_cast<int>(e);
    if (c.used > scratch_bytes || (c.used > 0 && !scratch)) return static_cast<int>(cudaErrorInvalidValue);
    topk_keys_kernel<<<grid_for(rows * n), 256, 0, s>>>(a, dim, largest != 0, rows, inner, n, p.kin, p.vin, p.offsets);
    if ((e = cudaGetLastError()) != cudaSuccess) return static_cast<int>(e);
    e = cub::DeviceSegmentedSort::StableSortPairs(p.temp, p.temp_bytes, p.kin, p.kout, p.vin, p.vout, rows * n, rows,
                                                  p.offsets, p.offsets + 1, s);
    if (e != cudaSuccess) return static_cast<int>(e);
    topk_write_kernel<<<grid_for(rows * k), 256, 0, s>>>(values, indices, a, dim, k, rows, inner, n, p.vout);
    return static_cast<int>(cudaGetLastError());
}
