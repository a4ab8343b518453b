// Multi-tensor optimizer kernels (kernels/k_optim.h): fused AdamW and SGD over
// every parameter of a model in one launch, and gradient clipping by global
// norm without a host round trip. One block per chunk record (<= FG_K_MT_CHUNK
// elements of one tensor); inside a chunk, threads stride over 16-byte float4
// packs when all of the chunk's pointers are 16-byte aligned (the caching
// allocator's blocks are, and chunk offsets are multiples of FG_K_MT_CHUNK),
// then a scalar tail. fp32 math throughout; the norm sums in double.
#include <cuda_runtime.h>
#include <stdint.h>
#include "fg_kernels.h"

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// One element of torch.optim.AdamW (see fg_k_adamw_hyper). IEEE sqrt and
// division (no fast-math), so the CPU reference agrees to an ulp or two.
__device__ __forceinline__ void adamw_elem(const fg_k_adamw_hyper &h, bool decay, float &p, float g, float &m,
                                           float &v)
{
    if (decay) p *= h.decay_mul;
    m = fmaf(h.beta1, m, h.one_minus_beta1 * g);
    v = fmaf(h.beta2, v, h.one_minus_beta2 * g * g);
    const float denom = sqrtf(v) / h.bc2_sqrt + h.eps;
    p -= h.step_size * (m / denom);
}

// One element of torch.optim.SGD with dampening 0 (see fg_k_sgd_hyper).
template <bool MOM>
__device__ __forceinline__ void sgd_elem(const fg_k_sgd_hyper &h, bool decay, float &p, float g, float &m)
{
    float d = decay ? fmaf(h.weight_decay, p, g) : g;
    if (MOM) {
        m = fmaf(h.momentum, m, d);
        d = h.nesterov ? fmaf(h.momentum, m, d) : m;
    }
    p -= h.lr * d;
}

__global__ void __launch_bounds__(kThreads) adamw_kernel(const fg_k_mt_chunk *__restrict__ chunks, fg_k_adamw_hyper h)
{
    const fg_k_mt_chunk c = chunks[blockIdx.x];
    const bool decay = c.decay != 0;
    int64_t start = 0;
    if (aligned16(c.p) && aligned16(c.g) && aligned16(c.m) && aligned16(c.v)) {
        float4 *P = reinterpret_cast<float4 *>(c.p), *M = reinterpret_cast<float4 *>(c.m),
               *V = reinterpret_cast<float4 *>(c.v);
        const float4 *G = reinterpret_cast<const float4 *>(c.g);
        const int64_t n4 = c.n / 4;
        for (int64_t i = threadIdx.x; i < n4; i += kThreads) {
            float4 p = P[i], m = M[i], v = V[i];
            const float4 g = G[i];
            adamw_elem(h, decay, p.x, g.x, m.x, v.x);
            adamw_elem(h, decay, p.y, g.y, m.y, v.y);
            adamw_elem(h, decay, p.z, g.z, m.z, v.z);
            adamw_elem(h, decay, p.w, g.w, m.w, v.w);
            P[i] = p;
            M[i] = m;
            V[i] = v;
        }
        start = n4 * 4;
    }
    for (int64_t i = start + threadIdx.x; i < c.n; i += kThreads) {
        float p = c.p[i], m = c.m[i], v = c.v[i];
        adamw_elem(h, decay, p, c.g[i], m, v);
        c.p[i] = p;
        c.m[i] = m;
        c.v[i] = v;
    }
}

template <bool MOM>
__global__ void __launch_bounds__(kThreads) sgd_kernel(const fg_k_mt_chunk *__restrict__ chunks, fg_k_sgd_hyper h)
{
    const fg_k_mt_chunk c = chunks[blockIdx.x];
    const bool decay = c.decay != 0;
    int64_t start = 0;
    if (aligned16(c.p) && aligned16(c.g) && (!MOM || aligned16(c.m))) {
        float4 *P = reinterpret_cast<float4 *>(c.p), *M = reinterpret_cast<float4 *>(c.m);
        const float4 *G = reinterpret_cast<const float4 *>(c.g);
        const int64_t n4 = c.n / 4;
        for (int64_t i = threadIdx.x; i < n4; i += kThreads) {
            float4 p = P[i], m = MOM ? M[i] : make_float4(0.f, 0.f, 0.f, 0.f);
            const float4 g = G[i];
            sgd_elem<MOM>(h, decay, p.x, g.x, m.x);
            sgd_elem<MOM>(h, decay, p.y, g.y, m.y);
            sgd_elem<MOM>(h, decay, p.z, g.z, m.z);
            sgd_elem<MOM>(h, decay, p.w, g.w, m.w);
            P[i] = p;
            if (MOM) M[i] = m;
        }
        start = n4 * 4;
    }
    for (int64_t i = start + threadIdx.x; i < c.n; i += kThreads) {
        float p = c.p[i], m = MOM ? c.m[i] : 0.f;
        sgd_elem<MOM>(h, decay, p, c.g[i], m);
        c.p[i] = p;
        if (MOM) c.m[i] = m;
    }
}

// Sum of x over the block (kThreads threads), valid in thread 0. Fixed
// shuffle tree: the same inputs give the same bits.
__device__ __forceinline__ double block_sum(double x)
{
    __shared__ double warp_sums[kThreads / 32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) warp_sums[w] = x;
    __syncthreads();
    if (w == 0) {
        x = lane < kThreads / 32 ? warp_sums[lane] : 0.0;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
    }
    return x;
}

__global__ void __launch_bounds__(kThreads) sq_norm_kernel(const fg_k_mt_chunk *__restrict__ chunks,
                                                           double *__restrict__ partials)
{
    const fg_k_mt_chunk c = chunks[blockIdx.x];
    double acc = 0.0;
    int64_t start = 0;
    if (aligned16(c.g)) {
        const float4 *G = reinterpret_cast<const float4 *>(c.g);
        const int64_t n4 = c.n / 4;
        for (int64_t i = threadIdx.x; i < n4; i += kThreads) {
            const float4 g = G[i];
            // squares in double: an f32 square of 1e20 would overflow to inf
            acc += static_cast<double>(g.x) * g.x + static_cast<double>(g.y) * g.y + static_cast<double>(g.z) * g.z +
                   static_cast<double>(g.w) * g.w;
        }
        start = n4 * 4;
    }
    for (int64_t i = start + threadIdx.x; i < c.n; i += kThreads) acc += static_cast<double>(c.g[i]) * c.g[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void __launch_bounds__(kThreads) clip_coef_kernel(const double *__restrict__ partials, int64_t n,
                                                             double host_sq, double max_norm, double *__restrict__ out)
{
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) acc += partials[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) {
        const double norm = sqrt(acc + host_sq);
        const double coef = max_norm / (norm + 1e-6);
        out[0] = norm;
        out[1] = isfinite(norm) && coef < 1.0 ? coef : 1.0;
    }
}

__global__ void __launch_bounds__(kThreads) scale_kernel(const fg_k_mt_chunk *__restrict__ chunks,
                                                         const double *__restrict__ out)
{
    const double coef = out[1];
    if (coef == 1.0) return; // below max_norm (or non-finite norm): leave the gradients alone
    const float s = static_cast<float>(coef);
    const fg_k_mt_chunk c = chunks[blockIdx.x];
    int64_t start = 0;
    if (aligned16(c.g)) {
        float4 *G = reinterpret_cast<float4 *>(c.g);
        const int64_t n4 = c.n / 4;
        for (int64_t i = threadIdx.x; i < n4; i += kThreads) {
            float4 g = G[i];
            g.x *= s, g.y *= s, g.z *= s, g.w *= s;
            G[i] = g;
        }
        start = n4 * 4;
    }
    for (int64_t i = start + threadIdx.x; i < c.n; i += kThreads) c.g[i] *= s;
}

bool bad_grid(int64_t n_chunks) { return n_chunks < 0 || n_chunks > INT32_MAX; }

} // namespace

extern "C" int fg_k_adamw(const fg_k_mt_chunk *chunks, int64_t n_chunks, fg_k_adamw_hyper h, void *stream)
{
    if (bad_grid(n_chunks)) return static_cast<int>(cudaErrorInvalidValue);
    if (n_chunks == 0) return 0;
    adamw_kernel<<<static_cast<unsigned>(n_chunks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(chunks, h);
    return static_cast<int>(cudaGetLastError());
}

extern "C" int fg_k_sgd(const fg_k_mt_chunk *chunks, int64_t n_chunks, fg_k_sgd_hyper h, void *stream)
{
    if (bad_grid(n_chunks)) return static_cast<int>(cudaErrorInvalidValue);
    if (n_chunks == 0) return 0;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (h.momentum != 0.f)
        sgd_kernel<true><<<static_cast<unsigned>(n_chunks), kThreads, 0, s>>>(chunks, h);
    else
        sgd_kernel<false><<<static_cast<unsigned>(n_chunks), kThreads, 0, s>>>(chunks, h);
    return static_cast<int>(cudaGetLastError());
}

extern "C" int fg_k_sq_norm(const fg_k_mt_chunk *chunks, int64_t n_chunks, double *partials, void *stream)
{
    if (bad_grid(n_chunks)) return static_cast<int>(cudaErrorInvalidValue);
    if (n_chunks == 0) return 0;
    sq_norm_kernel<<<static_cast<unsigned>(n_chunks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(chunks,
                                                                                                         partials);
    return static_cast<int>(cudaGetLastError());
}

extern "C" int fg_k_clip_coef(const double *partials, int64_t n, double host_sq, double max_norm, double *out,
                              void *stream)
{
    if (n < 0) return static_cast<int>(cudaErrorInvalidValue);
    clip_coef_kernel<<<1, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(partials, n, host_sq, max_norm, out);
    return static_cast<int>(cudaGetLastError());
}

extern "C" int fg_k_scale_grads(const fg_k_mt_chunk *chunks, int64_t n_chunks, const double *out, void *stream)
{
    if (bad_grid(n_chunks)) return static_cast<int>(cudaErrorInvalidValue);
    if (n_chunks == 0) return 0;
    scale_kernel<<<static_cast<unsigned>(n_chunks), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(chunks, out);
    return static_cast<int>(cudaGetLastError());
}
