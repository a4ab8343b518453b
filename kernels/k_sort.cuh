// Host and device helpers shared by the accumulating index kernels
// (kernels/index.cu: scatter_add, index_add; kernels/embedding.cu: embedding
// backward): the launch scratch layout, the stable radix sort of (key, value)
// pairs behind the deterministic paths, and the f32 accumulator used by the
// atomic paths for bf16/f16. CUDA C++ only.
#ifndef FG_K_SORT_CUH
#define FG_K_SORT_CUH

#include <cub/device/device_radix_sort.cuh>
#include "k_common.cuh"

namespace fgk {

// Scratch layout (each piece 256-byte aligned); with base == nullptr it only measures.
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

inline int bits_for(int64_t v) // bits needed for values in [0, v)
{
    int b = 1;
    while (b < 63 && (static_cast<int64_t>(1) << b) < v) b++;
    return b;
}

inline bool is_int(int dt) { return dt == DT_I32 || dt == DT_I64; }
inline bool is_half(int dt) { return dt == DT_BF16 || dt == DT_F16; }

struct SortPlan {
    unsigned long long *kin, *kout;
    long long *vin, *vout;
    float *acc;
    void *temp;
    size_t temp_bytes;
};

// Scratch for a sort of n (key <= key_limit, value) pairs (key_limit itself
// marks a bad index: it sorts last), or else for an f32 accumulator of acc_n
// elements (none when 0).
inline cudaError_t sort_plan(Carve &c, SortPlan &p, bool sorted, int64_t n, int64_t key_limit, int64_t acc_n,
                             cudaStream_t s)
{
    p = SortPlan{};
    if (sorted) {
        p.kin = c.take<unsigned long long>(static_cast<size_t>(n));
        p.kout = c.take<unsigned long long>(static_cast<size_t>(n));
        p.vin = c.take<long long>(static_cast<size_t>(n));
        p.vout = c.take<long long>(static_cast<size_t>(n));
        cudaError_t e = cub::DeviceRadixSort::SortPairs(nullptr, p.temp_bytes, p.kin, p.kout, p.vin, p.vout, n, 0,
                                                        bits_for(key_limit + 1), s);
        if (e != cudaSuccess) return e;
        p.temp = c.take<char>(p.temp_bytes);
    } else if (acc_n > 0) {
        p.acc = c.take<float>(static_cast<size_t>(acc_n));
    }
    return cudaSuccess;
}

// The stable sort of (kin, vin) into (kout, vout) planned by sort_plan: equal
// keys keep their values' order.
inline cudaError_t sort_pairs(const SortPlan &p, int64_t n, int64_t key_limit, cudaStream_t s)
{
    size_t temp_bytes = p.temp_bytes;
    return cub::DeviceRadixSort::SortPairs(p.temp, temp_bytes, p.kin, p.kout, p.vin, p.vout, n, 0,
                                           bits_for(key_limit + 1), s);
}

// The f32 accumulator <-> a contiguous bf16/f16 tensor (static: one copy per
// translation unit that includes this header).
static __global__ void to_f32_kernel(float *dst, const void *src, int dt, int64_t n)
{
    FGK_GRID_STRIDE(i, n) dst[i] = static_cast<float>(ld_d(src, dt, i));
}
static __global__ void from_f32_kernel(void *dst, int dt, const float *src, int64_t n)
{
    FGK_GRID_STRIDE(i, n) st_d(dst, dt, i, src[i]);
}

} // namespace fgk

#endif
