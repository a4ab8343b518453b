// Building blocks of the flash-attention kernels (attention_fwd.cu,
// attention_bwd.cu): warp-level tensor-core products on 16x16 fragments,
// asynchronous tile copies into shared memory, the causal bound and the
// dropout mask. CUDA C++ only.
//
// Fragments follow mma.sync m16n8k16: lane l holds, with g = l / 4 and
// t = l % 4, A elements (g | g + 8, 2t | 2t + 1 | 2t + 8 | 2t + 9), B elements
// (k = 2t | 2t + 1 | 2t + 8 | 2t + 9, n = g) and C elements (g | g + 8,
// 2t | 2t + 1). bf16/f16 use one m16n8k16 per product and ldmatrix loads.
// f32 uses the same element sets, each split into tf32 hi and lo halves as a
// fragment is loaded, and per k16 step two m16n8k8 tf32 products done three
// times over (hi*lo + lo*hi + hi*hi, the "3xTF32" split), close to f32
// accuracy on the tensor cores: the tf32 k slot
// t of half h is column 8h + 2t and slot t + 4 is 8h + 2t + 1, which lines its
// fragments up with the 16-bit ones. A C fragment pair therefore is an A
// fragment (the probabilities go from one product into the next in registers).
#ifndef FG_K_FLASH_CUH
#define FG_K_FLASH_CUH

#include <type_traits>
#include <curand_philox4x32_x.h>
#include "k_common.cuh"
#include "fg_kernels.h"

namespace fgk {
namespace flash {

constexpr int NT = 128; // threads per block: 4 warps
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

__device__ __forceinline__ uint32_t smem_u32(const void *p)
{
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ float ex2(float x) // 2^x, ex2(-inf) = 0
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ void cp16(void *s, const void *g)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(s)), "l"(g));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

template <typename T> __device__ __forceinline__ T from_f(float v)
{
    T r;
    put(r, v);
    return r;
}

// Shared-memory row stride of a tile DP wide: one 16-byte chunk of padding
// keeps ldmatrix's eight row reads in distinct banks.
template <typename T, int DP> struct Tile {
    static constexpr int CH = 16 / static_cast<int>(sizeof(T)); // elements per 16-byte chunk
    static constexpr int ST = DP + CH;
};

// Rows [row0, row0 + ROWS) of an (L, D) slice with row stride ld (elements) into
// s (row stride Tile::ST) by the block's NTH threads: zeros outside [0, nrows)
// x [0, D), so that padding never feeds NaN into a product. vec: 16-byte
// copies are aligned.
template <typename T, int ROWS, int DP, int NTH = NT>
__device__ __forceinline__ void load_tile(T *s, const T *g, int64_t ld, int row0, int nrows, int D, bool vec)
{
    constexpr int CH = Tile<T, DP>::CH, NCH = DP / CH, ST = Tile<T, DP>::ST;
    for (int idx = threadIdx.x; idx < ROWS * NCH; idx += NTH) {
        const int r = idx / NCH, c = (idx % NCH) * CH, row = row0 + r;
        T *dst = s + r * ST + c;
        if (row < nrows && c < D) {
            const T *src = g + row * ld + c;
            if (vec && c + CH <= D) {
                cp16(dst, src);
            } else {
                for (int e = 0; e < CH; e++) dst[e] = c + e < D ? src[e] : from_f<T>(0.f);
            }
        } else {
            *reinterpret_cast<uint4 *>(dst) = make_uint4(0, 0, 0, 0);
        }
    }
}

// The 16 rows at s (row stride Tile::ST) to rows [row0, row0 + 16) of an (L, D)
// slice, by one warp; rows >= nrows and columns >= D are not written.
template <typename T, int DP>
__device__ __forceinline__ void store_rows16(const T *s, T *g, int64_t ld, int row0, int nrows, int D, bool vec)
{
    constexpr int CH = Tile<T, DP>::CH, NCH = DP / CH, ST = Tile<T, DP>::ST;
    for (int idx = threadIdx.x & 31; idx < 16 * NCH; idx += 32) {
        const int r = idx / NCH, c = (idx % NCH) * CH, row = row0 + r;
        if (row >= nrows || c >= D) continue;
        const T *src = s + r * ST + c;
        T *dst = g + row * ld + c;
        if (vec && c + CH <= D)
            *reinterpret_cast<uint4 *>(dst) = *reinterpret_cast<const uint4 *>(src);
        else
            for (int e = 0; e < CH && c + e < D; e++) dst[e] = src[e];
    }
}

// C-fragment pairs (rows g and g + 8 of a 16 x 8 tile) into shared memory.
__device__ __forceinline__ void st_pair(float *p, float a, float b) { *reinterpret_cast<float2 *>(p) = make_float2(a, b); }
__device__ __forceinline__ void st_pair(bf16 *p, float a, float b)
{
    *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(a, b);
}
__device__ __forceinline__ void st_pair(f16 *p, float a, float b) { *reinterpret_cast<__half2 *>(p) = __floats2half2_rn(a, b); }

template <typename T>
__device__ __forceinline__ void st_cfrag(T *s, int st, int r0, int c0, const float (&c)[4])
{
    const int l = threadIdx.x & 31, g = l >> 2, t = l & 3;
    st_pair(s + (r0 + g) * st + c0 + 2 * t, c[0], c[1]);
    st_pair(s + (r0 + g + 8) * st + c0 + 2 * t, c[2], c[3]);
}

// An f32 tile split into tf32 halves once, ahead of the products that read it
// (split_tile): hi in place of the floats, lo beside it with the same row stride.
struct SplitTile {
    const float *hi, *lo;
};

template <typename T, bool HALF = (sizeof(T) == 2)> struct Mma;

// bf16 / f16: one m16n8k16 per product, fragments by ldmatrix.
template <typename T> struct Mma<T, true> {
    struct A { uint32_t x[4]; };
    struct B { uint32_t x[2]; };

    // A (16 x 16) at (r0, c0) of a row-major s[r][c].
    static __device__ __forceinline__ void ldA(A &a, const T *s, int st, int r0, int c0)
    {
        const int l = threadIdx.x & 31;
        const T *p = s + (r0 + (l & 7) + ((l >> 3) & 1) * 8) * st + c0 + (l >> 4) * 8;
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(a.x[0]), "=r"(a.x[1]), "=r"(a.x[2]), "=r"(a.x[3])
                     : "r"(smem_u32(p)));
    }
    // A (16 x 16) at (r0, c0) where s holds A transposed, s[c][r].
    static __device__ __forceinline__ void ldAt(A &a, const T *s, int st, int r0, int c0)
    {
        const int l = threadIdx.x & 31;
        const T *p = s + (c0 + (l & 7) + (l >> 4) * 8) * st + r0 + ((l >> 3) & 1) * 8;
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(a.x[0]), "=r"(a.x[1]), "=r"(a.x[2]), "=r"(a.x[3])
                     : "r"(smem_u32(p)));
    }
    // B tiles n0..n0+7 and n0+8..n0+15, k0..k0+15, from s stored as s[n][k].
    static __device__ __forceinline__ void ldB2(B &b0, B &b1, const T *s, int st, int n0, int k0)
    {
        const int l = threadIdx.x & 31;
        const T *p = s + (n0 + (l & 7) + (l >> 4) * 8) * st + k0 + ((l >> 3) & 1) * 8;
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(b0.x[0]), "=r"(b0.x[1]), "=r"(b1.x[0]), "=r"(b1.x[1])
                     : "r"(smem_u32(p)));
    }
    // The same from s stored as s[k][n].
    static __device__ __forceinline__ void ldB2t(B &b0, B &b1, const T *s, int st, int n0, int k0)
    {
        const int l = threadIdx.x & 31;
        const T *p = s + (k0 + (l & 7) + ((l >> 3) & 1) * 8) * st + n0 + (l >> 4) * 8;
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(b0.x[0]), "=r"(b0.x[1]), "=r"(b1.x[0]), "=r"(b1.x[1])
                     : "r"(smem_u32(p)));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) { return pack2<T>(lo, hi); }
    // Two C tiles (columns 0-7 and 8-15) as the A fragment of a k16 step.
    static __device__ __forceinline__ A from_c(const float (&c0)[4], const float (&c1)[4])
    {
        return A{{pack(c0[0], c0[1]), pack(c0[2], c0[3]), pack(c1[0], c1[1]), pack(c1[2], c1[3])}};
    }
    static __device__ __forceinline__ void mma(float (&c)[4], const A &a, const B &b)
    {
        if constexpr (__is_same(T, bf16))
            asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                "{%0,%1,%2,%3};\n"
                : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]));
        else
            asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                "{%0,%1,%2,%3};\n"
                : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]));
    }
};

// f32: the same element sets, split into tf32 hi + lo halves when a fragment
// is loaded, so that a fragment feeding several products is split once
// (3xTF32: hi*lo + lo*hi + hi*hi). hi is x rounded to nearest (cvt.rna); lo =
// x - hi is exact in f32 and then truncated to tf32 by masking (|lo| <= 2^-11
// |x|, so this costs at most 2^-21 |x|, against 2^-22 rounded) with one
// integer op instead of a second conversion. Each half's four tf32 k slots
// are stored in mma order: (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4).
template <> struct Mma<float, false> {
    struct A { uint32_t h[8], l[8]; }; // [4 half + slot]
    struct B { uint32_t h[4], l[4]; }; // [2 half + slot]

    static __device__ __forceinline__ void split(float v, uint32_t &hi, uint32_t &lo)
    {
        asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(hi) : "f"(v));
        lo = __float_as_uint(v - __uint_as_float(hi)) & 0xffffe000u;
    }
    // x: the 16-bit layout's A elements (g,2t) (g,2t+1) (g+8,2t) (g+8,2t+1)
    // (g,2t+8) (g,2t+9) (g+8,2t+8) (g+8,2t+9)
    static __device__ __forceinline__ A splitA(const float (&x)[8])
    {
        A a;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const float v[4] = {x[4 * h], x[4 * h + 2], x[4 * h + 1], x[4 * h + 3]};
#pragma unroll
            for (int i = 0; i < 4; i++) split(v[i], a.h[4 * h + i], a.l[4 * h + i]);
        }
        return a;
    }
    // x: k = 2t, 2t + 1, 2t + 8, 2t + 9 at n = g
    static __device__ __forceinline__ B splitB(const float (&x)[4])
    {
        B b;
#pragma unroll
        for (int i = 0; i < 4; i++) split(x[i], b.h[i], b.l[i]);
        return b;
    }

    static __device__ __forceinline__ void ldA(A &a, const float *s, int st, int r0, int c0)
    {
        const int l = threadIdx.x & 31, g = l >> 2, t = l & 3;
        const float *p = s + (r0 + g) * st + c0 + 2 * t;
        const float2 v0 = *reinterpret_cast<const float2 *>(p), v1 = *reinterpret_cast<const float2 *>(p + 8 * st);
        const float2 v2 = *reinterpret_cast<const float2 *>(p + 8), v3 = *reinterpret_cast<const float2 *>(p + 8 * st + 8);
        a = splitA({v0.x, v0.y, v1.x, v1.y, v2.x, v2.y, v3.x, v3.y});
    }
    static __device__ __forceinline__ void ldAt(A &a, const float *s, int st, int r0, int c0)
    {
        const int l = threadIdx.x & 31, g = l >> 2, t = l & 3;
        const float *p = s + (c0 + 2 * t) * st + r0 + g; // element (r, c) at s[(c0 + c) st + r0 + r]
        a = splitA({p[0], p[st], p[8], p[st + 8], p[8 * st], p[9 * st], p[8 * st + 8], p[9 * st + 8]});
    }
    // The B elements (k = k0 + 2t, + 1, + 8, + 9) as stored, floats or one
    // half of a SplitTile: of two fragments (n = n0 + g, n0 + 8 + g) from
    // Bs[n][k] (gatherB2); of one, n = g, from Bs[k][n] at p = &Bs[k0 + 2t][n0 + g]
    // (gatherBt, bt_off).
    template <typename E>
    static __device__ __forceinline__ void gatherB2(E (&u)[4], E (&w)[4], const E *s, int st, int n0, int k0)
    {
        using V2 = typename std::conditional<std::is_same<E, float>::value, float2, uint2>::type;
        const int l = threadIdx.x & 31, g = l >> 2, t = l & 3;
        const E *p = s + (n0 + g) * st + k0 + 2 * t, *q = p + 8 * st;
        const V2 u0 = *reinterpret_cast<const V2 *>(p), u1 = *reinterpret_cast<const V2 *>(p + 8);
        const V2 w0 = *reinterpret_cast<const V2 *>(q), w1 = *reinterpret_cast<const V2 *>(q + 8);
        u[0] = u0.x, u[1] = u0.y, u[2] = u1.x, u[3] = u1.y;
        w[0] = w0.x, w[1] = w0.y, w[2] = w1.x, w[3] = w1.y;
    }
    template <typename E> static __device__ __forceinline__ void gatherBt(E (&u)[4], const E *p, int st)
    {
        u[0] = p[0], u[1] = p[st], u[2] = p[8 * st], u[3] = p[9 * st];
    }
    static __device__ __forceinline__ int bt_off(int st, int n0, int k0)
    {
        const int l = threadIdx.x & 31, g = l >> 2, t = l & 3;
        return (k0 + 2 * t) * st + n0 + g;
    }
    static __device__ __forceinline__ void ldB2(B &b0, B &b1, const float *s, int st, int n0, int k0)
    {
        float u[4], w[4];
        gatherB2(u, w, s, st, n0, k0);
        b0 = splitB(u);
        b1 = splitB(w);
    }
    static __device__ __forceinline__ void ldB2t(B &b0, B &b1, const float *s, int st, int n0, int k0)
    {
        const float *p = s + bt_off(st, n0, k0);
        float u[4];
        gatherBt(u, p, st);
        b0 = splitB(u);
        gatherBt(u, p + 8, st);
        b1 = splitB(u);
    }
    // the same from a split tile: no conversion
    static __device__ __forceinline__ void ldB2(B &b0, B &b1, SplitTile s, int st, int n0, int k0)
    {
        gatherB2(b0.h, b1.h, reinterpret_cast<const uint32_t *>(s.hi), st, n0, k0);
        gatherB2(b0.l, b1.l, reinterpret_cast<const uint32_t *>(s.lo), st, n0, k0);
    }
    static __device__ __forceinline__ void ldB2t(B &b0, B &b1, SplitTile s, int st, int n0, int k0)
    {
        const int o = bt_off(st, n0, k0);
        const uint32_t *h = reinterpret_cast<const uint32_t *>(s.hi) + o, *w = reinterpret_cast<const uint32_t *>(s.lo) + o;
        gatherBt(b0.h, h, st);
        gatherBt(b0.l, w, st);
        gatherBt(b1.h, h + 8, st);
        gatherBt(b1.l, w + 8, st);
    }
    static __device__ __forceinline__ A from_c(const float (&c0)[4], const float (&c1)[4])
    {
        return splitA({c0[0], c0[1], c0[2], c0[3], c1[0], c1[1], c1[2], c1[3]});
    }
    static __device__ __forceinline__ void mma8(float (&c)[4], const uint32_t *a, const uint32_t *b)
    {
        asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
    static __device__ __forceinline__ void mma(float (&c)[4], const A &a, const B &b)
    {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            mma8(c, a.l + 4 * h, b.h + 2 * h);
            mma8(c, a.h + 4 * h, b.l + 2 * h);
            mma8(c, a.h + 4 * h, b.h + 2 * h);
        }
    }
};

// Splits the (ROWS, DP) f32 tile s (row stride Tile::ST) in place into its
// tf32 hi halves, the lo halves into lo: by the block's NTH threads, who must
// sync before reading it as a SplitTile.
template <int ROWS, int DP, int NTH>
__device__ __forceinline__ void split_tile(float *s, float *lo)
{
    constexpr int ST = Tile<float, DP>::ST, C4 = DP / 4;
    for (int idx = threadIdx.x; idx < ROWS * C4; idx += NTH) {
        const int o = (idx / C4) * ST + (idx % C4) * 4;
        const float4 v = *reinterpret_cast<const float4 *>(s + o);
        uint4 h, l;
        Mma<float>::split(v.x, h.x, l.x);
        Mma<float>::split(v.y, h.y, l.y);
        Mma<float>::split(v.z, h.z, l.z);
        Mma<float>::split(v.w, h.w, l.w);
        *reinterpret_cast<uint4 *>(s + o) = h;
        *reinterpret_cast<uint4 *>(lo + o) = l;
    }
}

// What a product reads a B operand from: the tile, or with SPLIT (f32) the
// tile split by split_tile with its lo halves at lo.
template <bool SPLIT, typename T> __device__ __forceinline__ auto b_source(const T *s, const float *lo)
{
    if constexpr (SPLIT)
        return SplitTile{s, lo};
    else
        return s;
}

template <int N> __device__ __forceinline__ void zero(float (&c)[N][4])
{
#pragma unroll
    for (int n = 0; n < N; n++) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.f;
}

// c (16 MT x 16 NB) += A B: A is rows r0..r0+16 MT-1, columns 0..16 KB of the
// row-major As; B (16 KB x 16 NB) is stored as Bs[n][k] (BT: as Bs[k][n],
// columns from n0; for f32 Bs may be a SplitTile). Each B fragment loaded
// feeds MT products (more rows per warp: less shared-memory traffic).
template <typename T, int MT, int KB, int NB, bool BT = false, typename BP = const T *>
__device__ __forceinline__ void mma_ss(float (&c)[MT][2 * NB][4], const T *As, int ast, int r0, BP Bs, int bst,
                                       int n0 = 0)
{
    using M = Mma<T>;
#pragma unroll
    for (int kk = 0; kk < KB; kk++) {
        typename M::A a[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) M::ldA(a[m], As, ast, r0 + 16 * m, kk * 16);
#pragma unroll
        for (int nn = 0; nn < NB; nn++) {
            typename M::B b0, b1;
            if constexpr (BT)
                M::ldB2t(b0, b1, Bs, bst, n0 + nn * 16, kk * 16);
            else
                M::ldB2(b0, b1, Bs, bst, n0 + nn * 16, kk * 16);
#pragma unroll
            for (int m = 0; m < MT; m++) {
                M::mma(c[m][2 * nn], a[m], b0);
                M::mma(c[m][2 * nn + 1], a[m], b1);
            }
        }
    }
}
template <typename T, int KB, int NB>
__device__ __forceinline__ void mma_ss(float (&c)[2 * NB][4], const T *As, int ast, int r0, const T *Bs, int bst)
{
    mma_ss<T, 1, KB, NB>(reinterpret_cast<float(&)[1][2 * NB][4]>(c), As, ast, r0, Bs, bst);
}

// c (16 MT x 16 NB) += P B: P (16 MT x 16 KB) is in registers as C tiles (a
// pair per k16 step); B is stored as Bs[k][n], columns from n0.
template <typename T, int MT, int KB, int NB, typename BP = const T *>
__device__ __forceinline__ void mma_rs(float (&c)[MT][2 * NB][4], const float (&pc)[MT][2 * KB][4], BP Bs, int bst,
                                       int n0 = 0)
{
    using M = Mma<T>;
#pragma unroll
    for (int kk = 0; kk < KB; kk++) {
        typename M::A a[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) a[m] = M::from_c(pc[m][2 * kk], pc[m][2 * kk + 1]);
#pragma unroll
        for (int nn = 0; nn < NB; nn++) {
            typename M::B b0, b1;
            M::ldB2t(b0, b1, Bs, bst, n0 + nn * 16, kk * 16);
#pragma unroll
            for (int m = 0; m < MT; m++) {
                M::mma(c[m][2 * nn], a[m], b0);
                M::mma(c[m][2 * nn + 1], a[m], b1);
            }
        }
    }
}
template <typename T, int KB, int NB>
__device__ __forceinline__ void mma_rs(float (&c)[2 * NB][4], const float (&pc)[2 * KB][4], const T *Bs, int bst,
                                       int n0 = 0)
{
    mma_rs<T, 1, KB, NB>(reinterpret_cast<float(&)[1][2 * NB][4]>(c),
                         reinterpret_cast<const float(&)[1][2 * KB][4]>(pc), Bs, bst, n0);
}

// mma_ss with B stored as Bs[k][n], columns from n0 (e.g. dV += P^T dO with
// P^T in shared memory).
template <typename T, int MT, int KB, int NB>
__device__ __forceinline__ void mma_ss_bt(float (&c)[MT][2 * NB][4], const T *As, int ast, int r0, const T *Bs,
                                          int bst, int n0)
{
    mma_ss<T, MT, KB, NB, true>(c, As, ast, r0, Bs, bst, n0);
}

// A 16 x 8 N accumulator tile (rows row0 + g, + 8; columns col0 + 8n + 2t, + 1)
// times sc straight to global memory: rows >= nrows and columns >= D skipped.
template <typename T, int N>
__device__ __forceinline__ void store_frag(const float (&acc)[N][4], float sc, T *g, int64_t ld, int row0, int col0,
                                           int nrows, int D)
{
    const int l = threadIdx.x & 31, gr = l >> 2, t = l & 3;
#pragma unroll
    for (int n = 0; n < N; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int row = row0 + gr + (e < 2 ? 0 : 8), col = col0 + n * 8 + 2 * t + (e & 1);
            if (row < nrows && col < D) put(g[row * ld + col], acc[n][e] * sc);
        }
}

// A warp's 16 x DP accumulator, rows g scaled by sa and rows g + 8 by sb,
// staged through the warp's own 16 rows s (row stride Tile::ST) and stored to
// rows [row0, row0 + 16) of g (see store_rows16).
template <typename T, int DP>
__device__ __forceinline__ void store_acc16(const float (&acc)[DP / 8][4], float sa, float sb, T *s, T *g, int64_t ld,
                                            int row0, int nrows, int D, bool vec)
{
    __syncwarp();
#pragma unroll
    for (int n = 0; n < DP / 8; n++) {
        const float v[4] = {acc[n][0] * sa, acc[n][1] * sa, acc[n][2] * sb, acc[n][3] * sb};
        st_cfrag(s, Tile<T, DP>::ST, 0, n * 8, v);
    }
    __syncwarp();
    store_rows16<T, DP>(s, g, ld, row0, nrows, D, vec);
}

// One step of the double-buffered key/value stream (BC rows per block, nkb
// blocks, block 0 already issued; keys past lk read as zeros): prefetches block jb + 1 into the other
// buffer, waits for block jb and returns its buffer index.
template <typename T, int BC, int DP>
__device__ __forceinline__ int kv_step(T *Ks, T *Vs, const T *kg, const T *vg, const fg_k_attn &p, int lk, int jb,
                                       int nkb)
{
    constexpr int ST = Tile<T, DP>::ST;
    const int buf = jb & 1;
    if (jb + 1 < nkb) {
        load_tile<T, BC, DP>(Ks + (buf ^ 1) * BC * ST, kg, p.k_s[2], (jb + 1) * BC, lk, p.D, p.vec);
        load_tile<T, BC, DP>(Vs + (buf ^ 1) * BC * ST, vg, p.v_s[2], (jb + 1) * BC, lk, p.D, p.vec);
        cp_commit();
        cp_wait<1>();
    } else {
        cp_wait<0>();
    }
    __syncthreads();
    return buf;
}

// Sequence b of a problem (see k_attention.h): its lengths and where its rows
// start, dense or varlen, with the key padding applied.
struct Seq {
    int lq, lk, nk; // query rows, keys seen, key rows owned (dK/dV written: zeros past lk)
    int64_t q0, k0; // first row in q / out / lse and in k / v
    bool causal;
    __device__ __forceinline__ Seq(const fg_k_attn &p, int b) : causal(p.causal != 0)
    {
        if (p.cu_q) {
            q0 = p.cu_q[b], k0 = p.cu_k[b];
            lq = p.cu_q[b + 1] - p.cu_q[b], nk = p.cu_k[b + 1] - p.cu_k[b];
        } else {
            q0 = 0, k0 = 0, lq = p.Lq, nk = p.Lk;
        }
        lk = p.k_len ? min(nk, max(p.k_len[b], 0)) : nk;
    }
    // Keys a query row sees: [0, key_end). Causal is aligned bottom-right (row
    // i sees j <= i + lk - lq); may be <= 0 (the row sees nothing).
    __device__ __forceinline__ int key_end(int row) const { return causal ? min(lk, row + lk - lq + 1) : lk; }
    // lse / dsum index of row 0 of head h (dq_acc: times D).
    __device__ __forceinline__ int64_t lse0(const fg_k_attn &p, int b, int h) const
    {
        return b * p.lse_s[0] + h * p.lse_s[1] + q0;
    }
};

// The query blocks (BQ rows each) a dK/dV block whose keys start at j0 steps
// over: for every head of the GQA group of KV head hk, the blocks with a row
// that can see key j0 (causal: i >= j0 - (lk - lq)); none when j0 is past lk.
// Step it is head head(it), rows row0(it)...
template <int BQ> struct QBlocks {
    int hk, G, ib0, nib, total;
    __device__ __forceinline__ QBlocks(const fg_k_attn &p, const Seq &sq, int hk_, int j0) : hk(hk_), G(p.Hq / p.Hkv)
    {
        const int istart = sq.causal ? min(max(j0 - (sq.lk - sq.lq), 0), sq.lq) : 0;
        ib0 = istart / BQ;
        nib = (sq.lq + BQ - 1) / BQ - ib0;
        total = j0 < sq.lk ? G * nib : 0;
    }
    __device__ __forceinline__ int head(int it) const { return hk * G + it / nib; }
    __device__ __forceinline__ int row0(int it) const { return (ib0 + it % nib) * BQ; }
};

// Row row0 of head h of batch entry b of a tensor with strides s.
template <typename T> __device__ __forceinline__ T *rows_of(const void *base, const int64_t (&s)[3], int b, int h, int64_t row0)
{
    return const_cast<T *>(static_cast<const T *>(base)) + b * s[0] + h * s[1] + row0 * s[2];
}

// The dropout mask: element (row i, key j) of head bh is kept when word j % 4
// of philox(ctr = {j / 4, i, 2^31 | bh, offset}, key = seed) is >= threshold
// (src/cpu/attention.c draws the same words). Counters depend on global
// coordinates only, so any tiling regenerates the same mask. The kernels
// multiply by the 0/1 mask where P enters a bf16 product and apply the
// 1 / (1 - p) scale in fp32 (scaling P first would round it to 8 bits twice).
struct Dropout {
    uint2 key;
    uint32_t c2, c3, thr;
    float scale; // 1 / (1 - p); 1 without dropout
    bool on;
    __device__ __forceinline__ Dropout(const fg_k_attn &p, int bh)
        : key(make_uint2(static_cast<uint32_t>(p.seed), static_cast<uint32_t>(p.seed >> 32))),
          c2(0x80000000u | static_cast<uint32_t>(bh)), c3(static_cast<uint32_t>(p.rng_offset)),
          thr(p.drop_threshold), scale(p.drop_threshold ? p.drop_scale : 1.f), on(p.drop_threshold != 0)
    {
    }
    __device__ __forceinline__ uint4 words(int row, int col) const
    {
        return curand_Philox4x32_10(make_uint4(static_cast<uint32_t>(col) >> 2, static_cast<uint32_t>(row), c2, c3),
                                    key);
    }
    __device__ __forceinline__ float keep(uint32_t w) const { return w >= thr ? 1.f : 0.f; }
    static __device__ __forceinline__ uint32_t pick(const uint4 &w, int k)
    {
        return k == 0 ? w.x : k == 1 ? w.y : k == 2 ? w.z : w.w;
    }
    // The 0/1 of (ra, col), (ra, col + 1), (rb, col), (rb, col + 1) for a C
    // fragment (col = 8n + 2t from a multiple of 4, whole warp): lanes t and
    // t ^ 1 need the same two Philox blocks, so each draws one (the even lane
    // row ra's, the odd lane rb's) and they swap the halves the other needs.
    __device__ __forceinline__ void pair2(int ra, int rb, int col, float2 &za, float2 &zb) const
    {
        const bool odd = threadIdx.x & 1;
        const uint4 w = words(odd ? rb : ra, col);
        const uint32_t r0 = __shfl_xor_sync(0xffffffffu, odd ? w.x : w.z, 1);
        const uint32_t r1 = __shfl_xor_sync(0xffffffffu, odd ? w.y : w.w, 1);
        za = odd ? make_float2(keep(r0), keep(r1)) : make_float2(keep(w.x), keep(w.y));
        zb = odd ? make_float2(keep(w.z), keep(w.w)) : make_float2(keep(r0), keep(r1));
    }
    // z[e] = 0/1 of (query q + (e & 1), key e < 2 ? ka : kb) for a transposed
    // C fragment (keys ka = base + g, kb = ka + 8, base a multiple of 4; whole
    // warp): the four lanes g = 4u..4u+3 of one t need word g % 4 of the same
    // four blocks, so each draws one block and four shuffles hand the words round.
    __device__ __forceinline__ void quad(int q, int ka, int kb, float (&z)[4]) const
    {
        const int lane = threadIdx.x & 31, x = (lane >> 2) & 3;
        const uint4 w = words(q + (x & 1), x >> 1 ? kb : ka); // block of element x
        uint32_t got[4];
#pragma unroll
        for (int r = 0; r < 4; r++) // from the lane that drew element (x + r) % 4: its word x
            got[r] = __shfl_sync(0xffffffffu, pick(w, (x - r) & 3), (lane & ~12) | (((x + r) & 3) << 2));
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int r = (e - x) & 3;
            z[e] = keep(r == 0 ? got[0] : r == 1 ? got[1] : r == 2 ? got[2] : got[3]);
        }
    }
};

// Max / sum over the four lanes that share a row of a C fragment.
__device__ __forceinline__ float quad_max(float v)
{
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v)
{
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// One key block of the forward's online softmax for a warp's 16 rows (this
// thread's two rows see keys below end[0], end[1]): s (16 x 8 NC scores of
// keys j0..) is masked where edge, scaled into the log2 domain and becomes P;
// the running max m and sum l are updated and alpha is what rescales O.
template <int NC>
__device__ __forceinline__ void softmax_step(float (&s)[NC][4], float (&m)[2], float (&l)[2], float (&alpha)[2], int j0,
                                             bool edge, const int (&end)[2], float sl2)
{
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int n = 0; n < NC; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int col = j0 + n * 8 + 2 * t + (e & 1);
            s[n][e] = edge && col >= end[e >> 1] ? -INFINITY : s[n][e] * sl2;
        }
    float mx[2] = {m[0], m[1]}, mu[2], rs[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < NC; n++) {
        mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = quad_max(mx[r]);
        mu[r] = mx[r] == -INFINITY ? 0.f : mx[r]; // nothing seen yet: keep exp2 finite
        alpha[r] = ex2(m[r] - mu[r]);
        m[r] = mx[r];
    }
#pragma unroll
    for (int n = 0; n < NC; n++) {
        s[n][0] = ex2(s[n][0] - mu[0]);
        s[n][1] = ex2(s[n][1] - mu[0]);
        s[n][2] = ex2(s[n][2] - mu[1]);
        s[n][3] = ex2(s[n][3] - mu[1]);
        rs[0] += s[n][0] + s[n][1];
        rs[1] += s[n][2] + s[n][3];
    }
    l[0] = l[0] * alpha[0] + rs[0];
    l[1] = l[1] * alpha[1] + rs[1];
}
// P (16 x 8 NC, keys j0.., rows ra, rb) times the dropout mask, after
// softmax_step: the sum l is of the undropped probabilities; 1 / (1 - p) comes with 1 / l.
template <int NC> __device__ __forceinline__ void drop_out(float (&s)[NC][4], const Dropout &drop, int ra, int rb, int j0)
{
    if (!drop.on) return;
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int n = 0; n < NC; n++) {
        float2 za, zb;
        drop.pair2(ra, rb, j0 + n * 8 + 2 * t, za, zb);
        s[n][0] *= za.x;
        s[n][1] *= za.y;
        s[n][2] *= zb.x;
        s[n][3] *= zb.y;
    }
}
// O (16 x 8 N) times alpha, row by row.
template <int N> __device__ __forceinline__ void rescale(float (&o)[N][4], const float (&alpha)[2])
{
#pragma unroll
    for (int n = 0; n < N; n++) {
        o[n][0] *= alpha[0];
        o[n][1] *= alpha[0];
        o[n][2] *= alpha[1];
        o[n][3] *= alpha[1];
    }
}

// Sets the dynamic shared-memory limit of kernel once per process.
template <typename K> inline cudaError_t allow_smem(K kernel, size_t bytes)
{
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

// Checks the sizes the kernels take and fills lse_s / lse_n of a dense
// problem left at 0 (contiguous (B, Hq, Lq)) into *out.
inline bool normalize(const fg_k_attn *p, fg_k_attn *out)
{
    *out = *p;
    if (p->D < 1 || p->D > 256 || p->Hkv < 1 || p->Hq % p->Hkv != 0 || p->B < 0 || p->Hq < 0 || p->Lq < 0 ||
        p->Lk < 0 || p->Lq > 65535 * 64 || p->Lk > 65535 * 64 || (!p->cu_q) != (!p->cu_k))
        return false;
    if (p->lse_n == 0 && !p->cu_q) {
        out->lse_s[0] = static_cast<int64_t>(p->Hq) * p->Lq, out->lse_s[1] = p->Lq;
        out->lse_n = static_cast<int64_t>(p->B) * p->Hq * p->Lq;
    }
    return true;
}

// Padded head dim of the kernel instance for D (1..256).
inline int padded_dim(int D) { return D <= 32 ? 32 : D <= 64 ? 64 : D <= 128 ? 128 : 256; }

} // namespace flash
} // namespace fgk
#endif
