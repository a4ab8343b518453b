// Random numbers on the device: dropout masks and the fg_rand/uniform/randn/
// normal/randint creators, all from cuRAND's Philox4x32-10 block function with
// the CPU's counter layout (see k_random.h and src/core/rng.c).
//
// Bit equality with the CPU is claimed for the raw words and for what is
// computed from them with correctly rounded operations only: dropout masks and
// outputs, randint values, uniform values. Those computations use the explicit
// round-to-nearest intrinsics (__fmul_rn, __dadd_rn, ...) so that nvcc cannot
// contract them into FMAs, which the CPU (ISO C, no contraction) does not do.
// Normals use the CPU's Box-Muller in double, but the device log/sin/cos are not
// correctly rounded: normals agree with the CPU to about 1e-15 relative in
// double (and are almost always identical once rounded to f32), not bit for bit.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <curand_philox4x32_x.h>
#include <stdint.h>
#include "fg_kernels.h"
#include "k_common.cuh"

namespace {

using namespace fgk; // dtype codes

// Words 0..3 of philox(block `blk`, key `seed`): the CPU's philox_block.
__device__ __forceinline__ uint4 philox_block(uint64_t seed, uint64_t blk)
{
    uint4 c = make_uint4(static_cast<uint32_t>(blk), static_cast<uint32_t>(blk >> 32), 0u, 0u);
    uint2 k = make_uint2(static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    return curand_Philox4x32_10(c, k);
}

__device__ __forceinline__ uint32_t word_of(const uint4 &w, int i)
{
    return i == 0 ? w.x : i == 1 ? w.y : i == 2 ? w.z : w.w;
}

// The CPU's u32_to_uniform (cuRAND's curand_uniform): (float)x * 2^-32 + 2^-33 in
// float, each step rounded separately (no FMA).
__device__ __forceinline__ float u32_to_uniform(uint32_t x)
{
    return __fadd_rn(__fmul_rn(__uint2float_rn(x), 2.3283064e-10f), 2.3283064e-10f / 2.0f);
}

// double -> float dtype as the CPU's fg__st: through float for bf16/f16.
__device__ __forceinline__ void store_f(void *p, int dt, int64_t i, double v)
{
    switch (dt) {
    case DT_F32: static_cast<float *>(p)[i] = __double2float_rn(v); break;
    case DT_F64: static_cast<double *>(p)[i] = v; break;
    case DT_BF16: static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(__double2float_rn(v)); break;
    default: static_cast<__half *>(p)[i] = __float2half_rn(__double2float_rn(v)); break;
    }
}

// ---- dropout ----

// Element i keeps its value times scale (product in double, one rounding) or
// becomes an explicit 0 (x * 0 would turn inf into NaN), like fg_cpu_dropout.
template <typename T> __device__ __forceinline__ double to_d(T v) { return static_cast<double>(v); }
template <> __device__ __forceinline__ double to_d<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ double to_d<__half>(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_d(double v);
template <> __device__ __forceinline__ float from_d<float>(double v) { return __double2float_rn(v); }
template <> __device__ __forceinline__ double from_d<double>(double v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_d<__nv_bfloat16>(double v)
{
    return __float2bfloat16_rn(__double2float_rn(v));
}
template <> __device__ __forceinline__ __half from_d<__half>(double v) { return __float2half_rn(__double2float_rn(v)); }

template <typename T> struct alignas(4 * sizeof(T)) Vec4 {
    T v[4];
};

// One thread per 4-element group (one Philox block). vec: in and out are
// aligned for whole-group vector accesses.
template <typename T>
__global__ void dropout_kernel(T *out, const T *in, int64_t n, uint64_t seed, uint64_t base, uint32_t threshold,
                               bool drop_all, double scale, bool vec)
{
    int64_t groups = (n + 3) / 4;
    FGK_GRID_STRIDE(g, groups) {
        uint4 w = philox_block(seed, base + static_cast<uint64_t>(g));
        uint32_t ws[4] = {w.x, w.y, w.z, w.w};
        int64_t i0 = g * 4;
        if (vec && i0 + 4 <= n) {
            Vec4<T> x = reinterpret_cast<const Vec4<T> *>(in)[g], y;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                bool keep = !drop_all && ws[k] >= threshold;
                y.v[k] = keep ? from_d<T>(__dmul_rn(to_d(x.v[k]), scale)) : from_d<T>(0.0);
            }
            reinterpret_cast<Vec4<T> *>(out)[g] = y;
        } else {
#pragma unroll
            for (int k = 0; k < 4; k++) {
                int64_t i = i0 + k;
                if (i >= n) break;
                bool keep = !drop_all && ws[k] >= threshold;
                out[i] = keep ? from_d<T>(__dmul_rn(to_d(in[i]), scale)) : from_d<T>(0.0);
            }
        }
    }
}

template <typename T>
int launch_dropout(void *out, const void *in, int64_t n, uint64_t seed, uint64_t base, uint32_t threshold,
                   bool drop_all, double scale, cudaStream_t s)
{
    const size_t al = 4 * sizeof(T);
    bool vec = reinterpret_cast<uintptr_t>(out) % al == 0 && reinterpret_cast<uintptr_t>(in) % al == 0;
    dropout_kernel<T><<<grid_for((n + 3) / 4), 256, 0, s>>>(static_cast<T *>(out), static_cast<const T *>(in), n,
                                                            seed, base, threshold, drop_all, scale, vec);
    return static_cast<int>(cudaGetLastError());
}

// ---- the creators ----

// The next value below h in a sign-magnitude 16-bit float format (bf16, f16).
__device__ __forceinline__ uint16_t half_bits_below(uint16_t h)
{
    if ((h & 0x7fffu) == 0) return 0x8001u;
    return (h & 0x8000u) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h - 1);
}

// Stores v in dtype dt, moved down to the largest stored value below hi when
// rounding lands on or above it (the CPU's below_hi followed by its store).
__device__ __forceinline__ void store_below(void *p, int dt, int64_t i, double v, double hi)
{
    switch (dt) {
    case DT_F64: static_cast<double *>(p)[i] = v < hi ? v : ::nextafter(hi, -HUGE_VAL); break;
    case DT_F32: {
        float f = __double2float_rn(v);
        while (static_cast<double>(f) >= hi) f = ::nextafterf(f, -HUGE_VALF);
        static_cast<float *>(p)[i] = f;
        break;
    }
    case DT_BF16: {
        uint16_t h = __bfloat16_as_ushort(__float2bfloat16_rn(__double2float_rn(v)));
        while (static_cast<double>(__bfloat162float(__ushort_as_bfloat16(h))) >= hi) h = half_bits_below(h);
        static_cast<uint16_t *>(p)[i] = h;
        break;
    }
    default: {
        uint16_t h = __half_as_ushort(__float2half_rn(__double2float_rn(v)));
        while (static_cast<double>(__half2float(__ushort_as_half(h))) >= hi) h = half_bits_below(h);
        static_cast<uint16_t *>(p)[i] = h;
        break;
    }
    }
}

// One thread per 4-word block; element i uses word i % 4 of block base + i / 4
// (normals: elements 2m, 2m + 1 share words 2m, 2m + 1, like the CPU).
__global__ void draw_kernel(void *out, int dt, int kind, uint64_t seed, uint64_t base, int64_t n, double a, double b,
                            int64_t ilo, uint64_t span)
{
    const double two_pi = 2.0 * 3.14159265358979323846; // 2.0 * M_PI (an exact doubling), as on the CPU
    int64_t groups = (n + 3) / 4;
    FGK_GRID_STRIDE(g, groups) {
        uint4 w = philox_block(seed, base + static_cast<uint64_t>(g));
        int64_t i0 = g * 4;
        if (kind == FG_K_DRAW_NORMAL) {
#pragma unroll
            for (int k = 0; k < 4; k += 2) {
                int64_t i = i0 + k;
                if (i >= n) break;
                float u = u32_to_uniform(word_of(w, k)), v = u32_to_uniform(word_of(w, k + 1));
                double r = sqrt(__dmul_rn(-2.0, log(static_cast<double>(u))));
                double th = __dmul_rn(two_pi, static_cast<double>(v));
                double br = __dmul_rn(b, r);
                store_f(out, dt, i, __dadd_rn(a, __dmul_rn(br, sin(th))));
                if (i + 1 < n) store_f(out, dt, i + 1, __dadd_rn(a, __dmul_rn(br, cos(th))));
            }
        } else {
#pragma unroll
            for (int k = 0; k < 4; k++) {
                int64_t i = i0 + k;
                if (i >= n) break;
                uint32_t x = word_of(w, k);
                if (kind == FG_K_DRAW_UNIFORM) {
                    double u = __dsub_rn(1.0, static_cast<double>(u32_to_uniform(x))); // [0, 1)
                    double v = __dadd_rn(a, __dmul_rn(__dsub_rn(b, a), u));
                    if (a < b)
                        store_below(out, dt, i, v, b);
                    else
                        store_f(out, dt, i, v);
                } else {
                    int64_t r = static_cast<int64_t>(static_cast<uint64_t>(ilo) + static_cast<uint64_t>(x) % span);
                    if (dt == DT_I32)
                        static_cast<int32_t *>(out)[i] = static_cast<int32_t>(r); // the range was checked to fit
                    else
                        static_cast<int64_t *>(out)[i] = r;
                }
            }
        }
    }
}

} // namespace

extern "C" int fg_k_dropout(void *out, const void *in, int dtype, int64_t n, uint64_t seed, uint64_t base,
                            uint32_t threshold, int drop_all, double scale, void *stream)
{
    if (n <= 0) return 0;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    switch (dtype) {
    case DT_F32: return launch_dropout<float>(out, in, n, seed, base, threshold, drop_all != 0, scale, s);
    case DT_F64: return launch_dropout<double>(out, in, n, seed, base, threshold, drop_all != 0, scale, s);
    case DT_BF16: return launch_dropout<__nv_bfloat16>(out, in, n, seed, base, threshold, drop_all != 0, scale, s);
    case DT_F16: return launch_dropout<__half>(out, in, n, seed, base, threshold, drop_all != 0, scale, s);
    default: return static_cast<int>(cudaErrorInvalidValue);
    }
}

extern "C" int fg_k_draw(void *out, int dtype, int kind, uint64_t seed, uint64_t base, int64_t n, double a, double b,
                         int64_t ilo, uint64_t span, void *stream)
{
    if (n <= 0) return 0;
    bool ok = kind == FG_K_DRAW_INT ? (dtype == DT_I32 || dtype == DT_I64) && span > 0
                                    : (kind == FG_K_DRAW_UNIFORM || kind == FG_K_DRAW_NORMAL) && dtype >= DT_F32 &&
                                          dtype <= DT_F16;
    if (!ok) return static_cast<int>(cudaErrorInvalidValue);
    draw_kernel<<<grid_for((n + 3) / 4), 256, 0, static_cast<cudaStream_t>(stream)>>>(out, dtype, kind, seed, base, n,
                                                                                      a, b, ilo, span);
    return static_cast<int>(cudaGetLastError());
}
