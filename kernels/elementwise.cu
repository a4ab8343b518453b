// CUDA kernels for the elementwise family: binary ops with broadcasting, unary
// ops (and their scalar forms), unary backward, and where. One generic map
// kernel pair serves all of them:
//  - ew_contig: every operand contiguous (after dim coalescing) and aligned:
//    16-byte packs per thread (float4, 8 x bf16, ...), grid-stride loop, scalar tail;
//  - ew_strided: index arithmetic over up to 8 (coalesced) dims, 32-bit when
//    every offset fits, with a division-free branch for one dim.
// The per-element functors compute in float (f32/bf16/f16), double (f64) or
// int64 (i32/i64, exact), and round once on store.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#include <type_traits>
#include "fg_kernels.h"
#include "k_common.cuh"

namespace {

using fgk::TypeTag;
using fgk::dispatch_dtype;

// Op codes: must match fg_binary_op / fg_unary_op in src/cpu/cpu.h.
enum { B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_GT, B_EQ, B_COUNT };
enum {
    U_NEG, U_EXP, U_LOG, U_SQRT, U_RSQRT, U_ABS, U_TANH, U_SIGMOID, U_RELU, U_GELU_TANH, U_GELU_ERF, U_SILU,
    U_ADD_S, U_MUL_S, U_POW_S, U_RSUB_S, U_RDIV_S, U_COUNT
};

using bf16 = __nv_bfloat16;
using f16 = __half;
struct Nil {}; // placeholder type of an unused operand

constexpr int kThreads = 256;

// ---- dtypes: storage type -> compute type, load/store ----
template <typename T> struct Compute { using type = float; };
template <> struct Compute<double> { using type = double; };
template <> struct Compute<int32_t> { using type = int64_t; };
template <> struct Compute<int64_t> { using type = int64_t; };
template <typename T> using C_t = typename Compute<T>::type;

__device__ __forceinline__ float to_c(float v) { return v; }
__device__ __forceinline__ double to_c(double v) { return v; }
__device__ __forceinline__ float to_c(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_c(f16 v) { return __half2float(v); }
__device__ __forceinline__ int64_t to_c(int32_t v) { return v; }
__device__ __forceinline__ int64_t to_c(int64_t v) { return v; }

template <typename T> __device__ __forceinline__ T from_c(C_t<T> v);
template <> __device__ __forceinline__ float from_c<float>(float v) { return v; }
template <> __device__ __forceinline__ double from_c<double>(double v) { return v; }
template <> __device__ __forceinline__ bf16 from_c<bf16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ f16 from_c<f16>(float v) { return __float2half_rn(v); }
// i32 results saturate, as fg__st does on the CPU (int64 holds every i32 sum/product exactly).
template <> __device__ __forceinline__ int32_t from_c<int32_t>(int64_t v)
{
    return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : static_cast<int32_t>(v);
}
template <> __device__ __forceinline__ int64_t from_c<int64_t>(int64_t v) { return v; }

// Runtime op code -> compile-time constant.
template <int N, typename F> int dispatch_op(int op, F &&f)
{
    if constexpr (N == 0) {
        (void)op;
        (void)f;
        return static_cast<int>(cudaErrorInvalidValue);
    } else {
        if (op == N - 1) return f(std::integral_constant<int, N - 1>{});
        return dispatch_op<N - 1>(op, f);
    }
}

// ---- math in the compute type ----
__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_log(float x) { return logf(x); }
__device__ __forceinline__ double m_log(double x) { return log(x); }
__device__ __forceinline__ float m_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double m_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float m_rsqrt(float x) { return rsqrtf(x); } // 2 ulp, no slow path
__device__ __forceinline__ double m_rsqrt(double x) { return 1.0 / sqrt(x); }
__device__ __forceinline__ float m_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double m_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float m_erfc(float x) { return erfcf(x); }
__device__ __forceinline__ double m_erfc(double x) { return erfc(x); }
__device__ __forceinline__ float m_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double m_pow(double x, double y) { return pow(x, y); }
__device__ __forceinline__ float m_fma(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double m_fma(double a, double b, double c) { return fma(a, b, c); }

template <typename C> constexpr C kSqrt2OverPi = C(0.7978845608028654);
template <typename C> constexpr C kInvSqrt2 = C(0.7071067811865476);
template <typename C> constexpr C kInvSqrt2Pi = C(0.3989422804014327);

// s = sigmoid(v) and om = 1 - s, both without cancellation.
template <typename C> __device__ __forceinline__ void sigmoid_pair(C v, C &s, C &om)
{
    if (v >= C(0)) {
        C e = m_exp(-v);
        s = C(1) / (C(1) + e);
        om = e * s;
    } else {
        C e = m_exp(v);
        om = C(1) / (C(1) + e);
        s = e * om;
    }
}
// The CPU's two-branch sigmoid.
template <typename C> __device__ __forceinline__ C sigmoid(C x)
{
    if (x >= C(0)) return C(1) / (C(1) + m_exp(-x));
    C e = m_exp(x);
    return e / (C(1) + e);
}

// Integer arithmetic wraps (two's complement) like the CPU's exact int64 paths.
template <typename C> __device__ __forceinline__ C c_add(C x, C y)
{
    if constexpr (std::is_integral<C>::value) return static_cast<C>(static_cast<uint64_t>(x) + static_cast<uint64_t>(y));
    else return x + y;
}
template <typename C> __device__ __forceinline__ C c_sub(C x, C y)
{
    if constexpr (std::is_integral<C>::value) return static_cast<C>(static_cast<uint64_t>(x) - static_cast<uint64_t>(y));
    else return x - y;
}
template <typename C> __device__ __forceinline__ C c_mul(C x, C y)
{
    if constexpr (std::is_integral<C>::value) return static_cast<C>(static_cast<uint64_t>(x) * static_cast<uint64_t>(y));
    else return x * y;
}

template <int OP> constexpr bool binary_int_ok = OP == B_ADD || OP == B_SUB || OP == B_MUL || OP == B_GT || OP == B_EQ;
template <int OP> constexpr bool unary_int_ok = OP == U_NEG || OP == U_ABS || OP == U_RELU;

template <int OP, typename C> __device__ __forceinline__ C binary_value(C x, C y)
{
    if constexpr (OP == B_ADD) return c_add(x, y);
    else if constexpr (OP == B_SUB) return c_sub(x, y);
    else if constexpr (OP == B_MUL) return c_mul(x, y);
    else if constexpr (OP == B_DIV) return x / y;
    else if constexpr (OP == B_POW) return m_pow(x, y);
    else if constexpr (OP == B_GT) return x > y ? C(1) : C(0);
    else return x == y ? C(1) : C(0);
}

template <int OP, typename C> __device__ __forceinline__ C unary_value(C x, C s)
{
    if constexpr (OP == U_NEG) return c_sub(C(0), x);
    else if constexpr (OP == U_ABS) return x < C(0) ? c_sub(C(0), x) : x;
    else if constexpr (OP == U_RELU) return x > C(0) ? x : C(0);
    else if constexpr (OP == U_EXP) return m_exp(x);
    else if constexpr (OP == U_LOG) return m_log(x);
    else if constexpr (OP == U_SQRT) return m_sqrt(x);
    else if constexpr (OP == U_RSQRT) return m_rsqrt(x);
    else if constexpr (OP == U_TANH) return m_tanh(x);
    else if constexpr (OP == U_SIGMOID) return sigmoid(x);
    else if constexpr (OP == U_GELU_TANH) {
        // 0.5 x (1 + tanh(u)) = x sigmoid(2u): no cancellation for negative x.
        C u = kSqrt2OverPi<C> * m_fma(C(0.044715) * x * x, x, x);
        return x * sigmoid(C(2) * u);
    } else if constexpr (OP == U_GELU_ERF) {
        return C(0.5) * x * m_erfc(-x * kInvSqrt2<C>); // 1 + erf(z) = erfc(-z)
    } else if constexpr (OP == U_SILU) return x * sigmoid(x);
    else if constexpr (OP == U_ADD_S) return x + s;
    else if constexpr (OP == U_MUL_S) return x * s;
    else if constexpr (OP == U_POW_S) return m_pow(x, s);
    else if constexpr (OP == U_RSUB_S) return s - x;
    else return s / x; // U_RDIV_S
}

// Which saved tensor the derivative reads: 0 none, 1 x, 2 y (matches uses_output in src/ops/elementwise.c).
template <int OP> constexpr int grad_reads =
    (OP == U_NEG || OP == U_ADD_S || OP == U_MUL_S || OP == U_RSUB_S) ? 0
    : (OP == U_EXP || OP == U_TANH || OP == U_SIGMOID || OP == U_SQRT || OP == U_RSQRT) ? 2
                                                                                         : 1;

// d op / dx; v is x or y as grad_reads says. Same formulas as fg_unary_deriv,
// rearranged where the float form would cancel.
template <int OP, typename C> __device__ __forceinline__ C unary_deriv(C v, C s)
{
    if constexpr (OP == U_NEG || OP == U_RSUB_S) return C(-1);
    else if constexpr (OP == U_ADD_S) return C(1);
    else if constexpr (OP == U_MUL_S) return s;
    else if constexpr (OP == U_EXP) return v;
    else if constexpr (OP == U_LOG) return C(1) / v;
    else if constexpr (OP == U_SQRT) return C(0.5) / v;
    else if constexpr (OP == U_RSQRT) return C(-0.5) * v * v * v;
    else if constexpr (OP == U_ABS) return v > C(0) ? C(1) : v < C(0) ? C(-1) : C(0);
    else if constexpr (OP == U_TANH) return m_fma(-v, v, C(1)); // 1 - y^2 rounded once
    else if constexpr (OP == U_SIGMOID) return v * (C(1) - v);
    else if constexpr (OP == U_RELU) return v > C(0) ? C(1) : C(0);
    else if constexpr (OP == U_GELU_TANH) {
        // 0.5 (1 + t) + 0.5 x (1 - t^2) du with t = tanh(u): 0.5 (1 + t) = sigmoid(2u) = sg,
        // 1 - t^2 = 4 sg (1 - sg).
        C x = v;
        C u = kSqrt2OverPi<C> * m_fma(C(0.044715) * x * x, x, x);
        C du = kSqrt2OverPi<C> * m_fma(C(3 * 0.044715) * x, x, C(1));
        C sg, om;
        sigmoid_pair(C(2) * u, sg, om);
        return m_fma(C(2) * x * sg * om, du, sg);
    } else if constexpr (OP == U_GELU_ERF) {
        C x = v;
        return m_fma(x * kInvSqrt2Pi<C>, m_exp(C(-0.5) * x * x), C(0.5) * m_erfc(-x * kInvSqrt2<C>));
    } else if constexpr (OP == U_SILU) {
        C sg, om;
        sigmoid_pair(v, sg, om);
        return sg * m_fma(v, om, C(1));
    } else if constexpr (OP == U_POW_S) return s == C(0) ? C(0) : s * m_pow(v, s - C(1));
    else return -s / (v * v); // U_RDIV_S
}

// ---- functors ----
template <int OP, typename T> struct BinaryF {
    __device__ __forceinline__ T operator()(T a, T b) const { return from_c<T>(binary_value<OP>(to_c(a), to_c(b))); }
};
// bf16/f16 results keep 8/11 bits, so for them the sigmoid family uses the
// hardware exp2 and a one-formula sigmoid (about 2^-21 relative, far below the
// storage rounding): no divergent branch and no IEEE division, which made bf16
// gelu arithmetic-bound. f32/f64 keep the accurate formulas above.
__device__ __forceinline__ float fast_sigmoid(float v) { return __frcp_rn(1.0f + __expf(-v)); }
template <int OP, typename T> constexpr bool fast_lowp =
    (std::is_same<T, bf16>::value || std::is_same<T, f16>::value) &&
    (OP == U_SIGMOID || OP == U_SILU || OP == U_GELU_TANH);

template <int OP, typename T> struct GradF {
    C_t<T> s;
    __device__ __forceinline__ T operator()(T gy) const { return from_c<T>(to_c(gy) * unary_deriv<OP>(C_t<T>(0), s)); }
    __device__ __forceinline__ T operator()(T gy, T v) const
    {
        if constexpr (fast_lowp<OP, T>) { // as UnaryF: hardware exp2, one-formula sigmoid
            const float x = to_c(v);
            float d;
            if constexpr (OP == U_SIGMOID) d = x * (1.0f - x);
            else if constexpr (OP == U_SILU) {
                const float sg = fast_sigmoid(x);
                d = sg * fmaf(x, 1.0f - sg, 1.0f);
            } else { // U_GELU_TANH: sg + 2 x sg (1 - sg) du, sg = sigmoid(2u)
                const float u = kSqrt2OverPi<float> * fmaf(0.044715f * x * x, x, x);
                const float du = kSqrt2OverPi<float> * fmaf(3 * 0.044715f * x, x, 1.0f);
                const float sg = fast_sigmoid(2.0f * u);
                d = fmaf(2.0f * x * sg * (1.0f - sg), du, sg);
            }
            return from_c<T>(to_c(gy) * d);
        } else {
            return from_c<T>(to_c(gy) * unary_deriv<OP>(to_c(v), s));
        }
    }
};
template <int OP, typename T> struct UnaryF {
    C_t<T> s;
    __device__ __forceinline__ T operator()(T a) const
    {
        if constexpr (fast_lowp<OP, T>) {
            const float x = to_c(a);
            if constexpr (OP == U_SIGMOID) return from_c<T>(fast_sigmoid(x));
            else if constexpr (OP == U_SILU) return from_c<T>(x * fast_sigmoid(x));
            else return from_c<T>(x * fast_sigmoid(2.0f * kSqrt2OverPi<float> * fmaf(0.044715f * x * x, x, x)));
        } else {
            return from_c<T>(unary_value<OP>(to_c(a), s));
        }
    }
};

template <typename T> __device__ __forceinline__ bool truthy(T c)
{
    if constexpr (std::is_integral<T>::value) return c != 0;
    else return to_c(c) != C_t<T>(0); // NaN is true, as on the CPU
}
template <typename TC, typename V> struct WhereF {
    __device__ __forceinline__ V operator()(TC c, V a, V b) const { return truthy(c) ? a : b; }
};

// ---- the map kernels ----
template <typename T, int N> struct alignas(sizeof(T) * N) Pack {
    T v[N];
};

template <int NIN, typename F, typename A, typename B, typename C>
__device__ __forceinline__ auto apply(const F &f, const A &a, const B &b, const C &c)
{
    if constexpr (NIN == 1) {
        (void)b;
        (void)c;
        return f(a);
    } else if constexpr (NIN == 2) {
        (void)c;
        return f(a, b);
    } else {
        return f(a, b, c);
    }
}

// Every operand contiguous; pointers aligned to their VEC-element packs.
template <int NIN, int VEC, typename F, typename O, typename A, typename B, typename C>
__global__ void __launch_bounds__(kThreads)
    ew_contig(F f, int64_t n, O *__restrict__ out, const A *__restrict__ a, const B *__restrict__ b,
              const C *__restrict__ c)
{
    const int64_t nvec = n / VEC;
    const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
    const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    for (int64_t i = tid; i < nvec; i += step) {
        Pack<A, VEC> pa = reinterpret_cast<const Pack<A, VEC> *>(a)[i];
        Pack<B, VEC> pb{};
        Pack<C, VEC> pc{};
        if constexpr (NIN >= 2) pb = reinterpret_cast<const Pack<B, VEC> *>(b)[i];
        if constexpr (NIN >= 3) pc = reinterpret_cast<const Pack<C, VEC> *>(c)[i];
        Pack<O, VEC> po;
#pragma unroll
        for (int k = 0; k < VEC; k++) po.v[k] = apply<NIN>(f, pa.v[k], pb.v[k], pc.v[k]);
        reinterpret_cast<Pack<O, VEC> *>(out)[i] = po;
    }
    for (int64_t i = nvec * VEC + tid; i < n; i += step) {
        B vb{};
        C vc{};
        if constexpr (NIN >= 2) vb = b[i];
        if constexpr (NIN >= 3) vc = c[i];
        out[i] = apply<NIN>(f, a[i], vb, vc);
    }
}

// Strided operands: 0 is out, 1..NIN the inputs. I is uint32_t when every index
// and offset fits (cheaper division), int64_t otherwise.
template <typename I> struct Geo {
    int ndim;
    I shape[FG_K_MAX_DIMS];
    I stride[4][FG_K_MAX_DIMS];
};

template <int NIN, typename I, typename F, typename O, typename A, typename B, typename C>
__global__ void __launch_bounds__(kThreads)
    ew_strided(F f, I n, Geo<I> g, O *__restrict__ out, const A *__restrict__ a, const B *__restrict__ b,
               const C *__restrict__ c)
{
    const I step = static_cast<I>(gridDim.x) * blockDim.x;
    for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
        I off[NIN + 1];
        if (g.ndim == 1) {
#pragma unroll
            for (int k = 0; k <= NIN; k++) off[k] = i * g.stride[k][0];
        } else {
#pragma unroll
            for (int k = 0; k <= NIN; k++) off[k] = 0;
            I rem = i;
            for (int d = g.ndim - 1; d >= 0; d--) {
                I q = rem / g.shape[d];
                I cd = rem - q * g.shape[d];
                rem = q;
#pragma unroll
                for (int k = 0; k <= NIN; k++) off[k] += cd * g.stride[k][d];
            }
        }
        B vb{};
        C vc{};
        if constexpr (NIN >= 2) vb = b[off[2]];
        if constexpr (NIN >= 3) vc = c[off[3]];
        out[off[0]] = apply<NIN>(f, a[off[1]], vb, vc);
    }
}

// ---- host side ----
// Grid-stride grids: enough blocks to fill every SM (8 x 256 threads each), no more.
unsigned grid_for(int64_t work)
{
    int64_t g = (work + kThreads - 1) / kThreads;
    int64_t cap = static_cast<int64_t>(fgk::sm_count()) * (2048 / kThreads);
    if (g > cap) g = cap;
    return static_cast<unsigned>(g > 0 ? g : 1);
}

template <typename T> bool aligned_to(const void *p, int vec)
{
    return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * static_cast<size_t>(vec)) == 0;
}

template <typename T> constexpr int vec_of() { return static_cast<int>(16 / sizeof(T)) > 0 ? static_cast<int>(16 / sizeof(T)) : 1; }

// Launches out = f(ins...) over out's shape. ins[k] must have out's ndim and shape.
template <int NIN, typename O, typename A, typename B, typename C, typename F>
int launch_map(const F &f, const fg_k_tensor &out, const fg_k_tensor *const *ins, cudaStream_t st)
{
    if (out.ndim < 0 || out.ndim > FG_K_MAX_DIMS) return static_cast<int>(cudaErrorInvalidValue);
    int64_t n = 1;
    for (int d = 0; d < out.ndim; d++) n *= out.shape[d];
    for (int k = 0; k < NIN; k++) {
        if (ins[k]->ndim != out.ndim) return static_cast<int>(cudaErrorInvalidValue);
        for (int d = 0; d < out.ndim; d++)
            if (ins[k]->shape[d] != out.shape[d]) return static_cast<int>(cudaErrorInvalidValue);
    }
    if (n <= 0) return 0;
    const fg_k_tensor *ops[4] = {&out, NIN >= 1 ? ins[0] : &out, NIN >= 2 ? ins[1] : &out, NIN >= 3 ? ins[2] : &out};

    // Coalesce: drop size-1 dims, merge a dim into the one outside it when every
    // operand steps through both as one.
    int nd = 0;
    int64_t sh[FG_K_MAX_DIMS], stv[4][FG_K_MAX_DIMS];
    for (int d = 0; d < out.ndim; d++) {
        int64_t size = out.shape[d];
        if (size == 1) continue;
        bool merge = nd > 0;
        for (int k = 0; k <= NIN && merge; k++) merge = stv[k][nd - 1] == ops[k]->stride[d] * size;
        if (merge) {
            sh[nd - 1] *= size;
            for (int k = 0; k <= NIN; k++) stv[k][nd - 1] = ops[k]->stride[d];
        } else {
            sh[nd] = size;
            for (int k = 0; k <= NIN; k++) stv[k][nd] = ops[k]->stride[d];
            nd++;
        }
    }
    O *po = static_cast<O *>(out.data);
    const A *pa = static_cast<const A *>(ops[1]->data);
    const B *pb = static_cast<const B *>(ops[2]->data);
    const C *pc = static_cast<const C *>(ops[3]->data);

    bool contiguous = nd == 0 || nd == 1;
    for (int k = 0; k <= NIN && nd == 1; k++) contiguous = contiguous && stv[k][0] == 1;
    constexpr int VEC = vec_of<O>();
    if (contiguous && aligned_to<O>(po, VEC) && aligned_to<A>(pa, VEC) && (NIN < 2 || aligned_to<B>(pb, VEC)) &&
        (NIN < 3 || aligned_to<C>(pc, VEC))) {
        ew_contig<NIN, VEC, F, O, A, B, C><<<grid_for(n / VEC > 0 ? n / VEC : n), kThreads, 0, st>>>(f, n, po, pa, pb, pc);
        return static_cast<int>(cudaGetLastError());
    }
    if (nd == 0) { // one element, misaligned
        nd = 1;
        sh[0] = 1;
        for (int k = 0; k <= NIN; k++) stv[k][0] = 0;
    }
    // 32-bit indexing when the element count and every operand's offsets fit.
    bool small = n < (int64_t(1) << 31);
    for (int k = 0; k <= NIN && small; k++) {
        int64_t span = 0;
        for (int d = 0; d < nd; d++) {
            if (stv[k][d] < 0) small = false;
            span += (sh[d] - 1) * stv[k][d];
        }
        if (span >= (int64_t(1) << 31)) small = false;
    }
    if (small) {
        Geo<uint32_t> g;
        g.ndim = nd;
        for (int d = 0; d < nd; d++) {
            g.shape[d] = static_cast<uint32_t>(sh[d]);
            for (int k = 0; k < 4; k++) g.stride[k][d] = k <= NIN ? static_cast<uint32_t>(stv[k][d]) : 0;
        }
        ew_strided<NIN, uint32_t, F, O, A, B, C>
            <<<grid_for(n), kThreads, 0, st>>>(f, static_cast<uint32_t>(n), g, po, pa, pb, pc);
    } else {
        Geo<int64_t> g;
        g.ndim = nd;
        for (int d = 0; d < nd; d++) {
            g.shape[d] = sh[d];
            for (int k = 0; k < 4; k++) g.stride[k][d] = k <= NIN ? stv[k][d] : 0;
        }
        ew_strided<NIN, int64_t, F, O, A, B, C><<<grid_for(n), kThreads, 0, st>>>(f, n, g, po, pa, pb, pc);
    }
    return static_cast<int>(cudaGetLastError());
}

int invalid() { return static_cast<int>(cudaErrorInvalidValue); }

} // namespace

extern "C" int fg_k_binary(int op, fg_k_tensor out, fg_k_tensor a, fg_k_tensor b, void *stream)
{
    if (a.dtype != out.dtype || b.dtype != out.dtype) return invalid();
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    const fg_k_tensor *ins[2] = {&a, &b};
    return dispatch_dtype(out.dtype, [&](auto tag) -> int {
        using T = typename decltype(tag)::type;
        return dispatch_op<B_COUNT>(op, [&](auto opc) -> int {
            constexpr int OP = decltype(opc)::value;
            if constexpr (std::is_integral<T>::value && !binary_int_ok<OP>) return invalid();
            else return launch_map<2, T, T, T, Nil>(BinaryF<OP, T>{}, out, ins, st);
        });
    });
}

extern "C" int fg_k_unary(int op, fg_k_tensor out, fg_k_tensor a, double s, void *stream)
{
    if (a.dtype != out.dtype) return invalid();
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    const fg_k_tensor *ins[1] = {&a};
    return dispatch_dtype(out.dtype, [&](auto tag) -> int {
        using T = typename decltype(tag)::type;
        return dispatch_op<U_COUNT>(op, [&](auto opc) -> int {
            constexpr int OP = decltype(opc)::value;
            if constexpr (std::is_integral<T>::value && !unary_int_ok<OP>) return invalid();
            else return launch_map<1, T, T, Nil, Nil>(UnaryF<OP, T>{static_cast<C_t<T>>(s)}, out, ins, st);
        });
    });
}

extern "C" int fg_k_unary_grad(int op, fg_k_tensor gx, fg_k_tensor x, fg_k_tensor y, fg_k_tensor gy, double s,
                               void *stream)
{
    if (x.dtype != gx.dtype || y.dtype != gx.dtype || gy.dtype != gx.dtype) return invalid();
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    return dispatch_dtype(gx.dtype, [&](auto tag) -> int {
        using T = typename decltype(tag)::type;
        if constexpr (std::is_integral<T>::value) return invalid();
        else
            return dispatch_op<U_COUNT>(op, [&](auto opc) -> int {
                constexpr int OP = decltype(opc)::value;
                GradF<OP, T> f{static_cast<C_t<T>>(s)};
                if constexpr (grad_reads<OP> == 0) {
                    const fg_k_tensor *ins[1] = {&gy};
                    return launch_map<1, T, T, Nil, Nil>(f, gx, ins, st);
                } else {
                    const fg_k_tensor *ins[2] = {&gy, grad_reads<OP> == 2 ? &y : &x};
                    return launch_map<2, T, T, T, Nil>(f, gx, ins, st);
                }
            });
    });
}

extern "C" int fg_k_where(fg_k_tensor out, fg_k_tensor cond, fg_k_tensor a, fg_k_tensor b, void *stream)
{
    if (a.dtype != out.dtype || b.dtype != out.dtype) return invalid();
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    const fg_k_tensor *ins[3] = {&cond, &a, &b};
    // Values are only moved: dispatch them by size.
    int size = out.dtype == 1 || out.dtype == 5 ? 8 : out.dtype == 0 || out.dtype == 4 ? 4 : out.dtype <= 3 ? 2 : 0;
    if (out.dtype < 0 || size == 0) return invalid();
    return dispatch_dtype(cond.dtype, [&](auto tag) -> int {
        using TC = typename decltype(tag)::type;
        switch (size) {
        case 2: return launch_map<3, uint16_t, TC, uint16_t, uint16_t>(WhereF<TC, uint16_t>{}, out, ins, st);
        case 4: return launch_map<3, uint32_t, TC, uint32_t, uint32_t>(WhereF<TC, uint32_t>{}, out, ins, st);
        default: return launch_map<3, uint64_t, TC, uint64_t, uint64_t>(WhereF<TC, uint64_t>{}, out, ins, st);
        }
    });
}
