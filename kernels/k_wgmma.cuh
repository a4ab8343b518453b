// Hopper warpgroup tensor-core products (wgmma, sm_90a) for the flash kernels.
//
// A warpgroup (4 consecutive warps, 128 threads) computes a 64 x N tile:
// D (64 x N, f32) += A (64 x 16) B (16 x N), issued asynchronously and waited
// for with commit / wait. Warp w of the group holds rows 16w..16w+15 of D in
// the mma.sync C-fragment layout of k_flash.cuh, one [4] per 8 columns, so the
// softmax code of the mma.sync kernels carries over; a pair of those is the A
// fragment of the next product (A from registers).
//
// Shared-memory operands are tiles of 16-bit elements stored as panels of
// 64 columns (128 bytes a row), rows consecutive, 16-byte chunks swizzled
// (chunk c of row r at c ^ (r % 8): the 128-byte swizzle, in 1024-byte atoms
// of 8 rows, so each panel starts 1024-aligned). One layout serves both ways
// a tile is read:
//  - K-major (the reduction runs along the row, e.g. Q and K in Q K^T): a
//    k16 step is 32 bytes into the row; SBO = 1024 (8 rows).
//  - MN-major (the reduction runs down the rows, e.g. V in P V, transpose flag
//    set): a k16 step is 16 rows (2048 bytes) down; LBO = the panel size
//    (next 64 columns), SBO = 1024.
#ifndef FG_K_WGMMA_CUH
#define FG_K_WGMMA_CUH

#include "k_flash.cuh"

namespace fgk {
namespace wg {

// Matrix descriptor of a 128-byte-swizzled operand at s (byte offsets lbo, sbo).
__device__ __forceinline__ uint64_t desc(const void *s, uint32_t lbo, uint32_t sbo)
{
    const uint64_t a = flash::smem_u32(s);
    return ((a & 0x3FFFF) >> 4) | (static_cast<uint64_t>(lbo >> 4) << 16) | (static_cast<uint64_t>(sbo >> 4) << 32) |
           (1ull << 62);
}
__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// Ordinary (and cp.async) writes to shared memory made visible to the tensor
// cores' reads: each writing thread, before the barrier.
__device__ __forceinline__ void fence_proxy() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Keeps the compiler from moving accesses of d across an asynchronous product.
template <int N> __device__ __forceinline__ void pin(float (&d)[N][4])
{
#pragma unroll
    for (int n = 0; n < N; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) asm volatile("" : "+f"(d[n][e])::"memory");
}

#include "k_wgmma_ops.inc"

// d (64 x N) (+)= A B, A and B from shared memory; TA / TB: 1 = MN-major.
template <typename T, int N, int TA, int TB>
__device__ __forceinline__ void mma_ss(float (&d)[N / 8][4], uint64_t a, uint64_t b, int acc)
{
    static_assert(N == 32 || N == 64 || N == 128, "wgmma tile width");
    if constexpr (N == 32)
        ss32<TA, TB>(d, a, b, acc, static_cast<T *>(nullptr));
    else if constexpr (N == 64)
        ss64<TA, TB>(d, a, b, acc, static_cast<T *>(nullptr));
    else
        ss128<TA, TB>(d, a, b, acc, static_cast<T *>(nullptr));
}
// d (64 x N) (+)= A B, A (this warp's 16 x 16 fragment) from registers.
template <typename T, int N, int TB>
__device__ __forceinline__ void mma_rs(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t b, int acc)
{
    static_assert(N == 32 || N == 64 || N == 128, "wgmma tile width");
    if constexpr (N == 32)
        rs32<TB>(d, a, b, acc, static_cast<T *>(nullptr));
    else if constexpr (N == 64)
        rs64<TB>(d, a, b, acc, static_cast<T *>(nullptr));
    else
        rs128<TB>(d, a, b, acc, static_cast<T *>(nullptr));
}

// The first 1024-byte boundary at or after p in shared memory: swizzled tiles
// start on a swizzle atom.
template <typename T> __device__ __forceinline__ T *align1024(unsigned char *p)
{
    const uint32_t a = flash::smem_u32(p);
    return reinterpret_cast<T *>(p + ((1024 - (a & 1023)) & 1023));
}
// Element offset of (row r, column c) in a swizzled tile of ROWS rows.
template <int ROWS> __device__ __forceinline__ int sw_off(int r, int c)
{
    return (c >> 6) * ROWS * 64 + r * 64 + ((((c >> 3) & 7) ^ (r & 7)) << 3) + (c & 7);
}
// Descriptor of the k16 step kk of a K-major tile (ROWS rows) from row r0.
template <int ROWS, typename T> __device__ __forceinline__ uint64_t desc_k(const T *s, int r0, int kk)
{
    return desc(s + (kk >> 2) * ROWS * 64 + r0 * 64 + (kk & 3) * 16, 16, 1024);
}
// Descriptor of the k16 step kk (rows 16 kk..) of an MN-major tile of ROWS rows.
template <int ROWS, typename T> __device__ __forceinline__ uint64_t desc_mn(const T *s, int kk)
{
    return desc(s + kk * 16 * 64, ROWS * 64 * sizeof(T), 1024);
}

// The same descriptors as offsets (in the descriptor's 16-byte units) from
// the descriptor of the tile's start, so that a loop adds a constant to a
// descriptor made once (the address field cannot carry: shared memory < 256 KB).
template <int ROWS, typename T> __device__ __forceinline__ constexpr uint64_t k_step(int kk)
{
    return static_cast<uint64_t>(((kk >> 2) * ROWS * 64 + (kk & 3) * 16) * sizeof(T) / 16);
}
template <typename T> __device__ __forceinline__ constexpr uint64_t mn_step(int kk)
{
    return static_cast<uint64_t>(kk * 16 * 64 * sizeof(T) / 16);
}
template <typename T> __device__ __forceinline__ uint64_t desc_k0(const T *s) { return desc(s, 16, 1024); }
template <int ROWS, typename T> __device__ __forceinline__ uint64_t desc_mn0(const T *s)
{
    return desc(s, ROWS * 64 * sizeof(T), 1024);
}

// Rows [row0, row0 + ROWS) of an (L, DP) slice (row stride ld, 16-byte aligned
// rows) into the swizzled tile s by NTH threads (this one is tid); rows >=
// nrows read as zeros.
template <typename T, int ROWS, int DP, int NTH>
__device__ __forceinline__ void load_sw(T *s, const T *g, int64_t ld, int row0, int nrows, int tid)
{
    constexpr int NCH = DP / 8;
    for (int idx = tid; idx < ROWS * NCH; idx += NTH) {
        const int r = idx / NCH, c = (idx % NCH) * 8;
        T *dst = s + sw_off<ROWS>(r, c);
        if (row0 + r < nrows)
            flash::cp16(dst, g + static_cast<int64_t>(row0 + r) * ld + c);
        else
            *reinterpret_cast<uint4 *>(dst) = make_uint4(0, 0, 0, 0);
    }
}

// Shared-memory barriers (mbarrier) between a producer warp and the consumer
// warpgroups. A barrier completes a phase when its count of arrivals is in;
// waiters name the phase parity they wait for.
__device__ __forceinline__ void bar_init(uint64_t *b, int count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(flash::smem_u32(b)), "r"(count));
}
__device__ __forceinline__ void bar_arrive(uint64_t *b)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(flash::smem_u32(b)) : "memory");
}
// Arrives on b once every cp.async this thread issued so far has landed.
__device__ __forceinline__ void bar_arrive_cp(uint64_t *b)
{
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(flash::smem_u32(b)) : "memory");
}
__device__ __forceinline__ void bar_wait(uint64_t *b, int parity)
{
    asm volatile("{\n.reg .pred done;\nWAIT_%=:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra WAIT_%=;\n}\n" ::"r"(flash::smem_u32(b)),
                 "r"(parity)
                 : "memory");
}
// A consumer warp is done with a ring stage: one arrival for the warp on its
// empty barrier once every lane is past its reads.
__device__ __forceinline__ void warp_release(uint64_t *b)
{
    __syncwarp();
    if ((threadIdx.x & 31) == 0) bar_arrive(b);
}
// Moves registers between warpgroups: every warp of a warpgroup runs it, the
// kernel has a register cap at entry (__launch_bounds__(threads, 1)).
template <int R> __device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R)); }
template <int R> __device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R)); }

// Named barrier id among the first n threads of the block (id 0 is
// __syncthreads): the consumer warpgroups sync without the producer.
__device__ __forceinline__ void bar_named(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }

// Bulk asynchronous reduction (the copy engine): adds bytes / 4 floats at s
// (shared, 16-byte aligned, made visible with fence_proxy) to g (global,
// 16-byte aligned), in this thread's bulk group.
__device__ __forceinline__ void bulk_add_f32(float *g, const float *s, uint32_t bytes)
{
    asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(g),
                 "r"(flash::smem_u32(s)), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's bulk groups still read their source.
template <int N> __device__ __forceinline__ void bulk_wait_read() { asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory"); }
// Waits until at most N of this thread's bulk groups are still in flight.
template <int N> __device__ __forceinline__ void bulk_wait() { asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory"); }

// A warp's 16 x DP accumulator (rows g scaled by sa, g + 8 by sb) to rows
// [row0, row0 + 16) of g (row stride ld, 16-byte aligned rows; rows >= nrows
// skipped), staged through rows r0..r0+15 of the swizzled tile s (ROWS rows),
// which only this warp uses by now.
template <typename T, int DP, int ROWS>
__device__ __forceinline__ void store_acc_sw(const float (&acc)[DP / 8][4], float sa, float sb, T *s, int r0, T *g,
                                             int64_t ld, int row0, int nrows)
{
    const int l = threadIdx.x & 31, gr = l >> 2, t = l & 3;
    __syncwarp();
#pragma unroll
    for (int n = 0; n < DP / 8; n++) {
        flash::st_pair(s + sw_off<ROWS>(r0 + gr, n * 8 + 2 * t), acc[n][0] * sa, acc[n][1] * sa);
        flash::st_pair(s + sw_off<ROWS>(r0 + gr + 8, n * 8 + 2 * t), acc[n][2] * sb, acc[n][3] * sb);
    }
    __syncwarp();
    for (int idx = l; idx < 16 * (DP / 8); idx += 32) {
        const int r = idx / (DP / 8), c = (idx % (DP / 8)) * 8;
        if (row0 + r < nrows)
            *reinterpret_cast<uint4 *>(g + static_cast<int64_t>(row0 + r) * ld + c) =
                *reinterpret_cast<const uint4 *>(s + sw_off<ROWS>(r0 + r, c));
    }
}

} // namespace wg
} // namespace fgk

// Host side: whether the wgmma kernels were built (the sm_90a target) and may
// run on the current device (compute capability 9.0). FG_ATTN_NO_WGMMA=1 in
// the environment turns them off (the mma.sync kernels then run everywhere).
bool fg_wgmma_usable();
// The wgmma forward (attention_fwd_wg.cu) when it applies: bf16 / f16, D 64
// or 128, vec, fg_wgmma_usable(). Returns true and the launch status in *err;
// false when the mma.sync kernels are to run instead.
bool fg_k_flash_fwd_wg(const fg_k_attn &p, int dtype, cudaStream_t st, cudaError_t *err);
// The wgmma dK/dV kernel (attention_bwd_wg.cu) for bf16 / f16, D 64 or 128,
// vec, after the dsum pre-pass: writes dk and dv and, when dq_acc is set, adds
// dS K into it (fp32, zeroed here first; rows laid out like lse times D,
// the 16-byte chunks of row r xor-swizzled by r % 8: dq_acc_index below).
// Returns false when it does not apply (the mma.sync kernels run instead).
bool fg_k_flash_bwd_wg(const fg_k_attn &p, int dtype, const float *dsum, float *dq_acc, cudaStream_t st,
                       cudaError_t *err);
// The f32 backward for D 64 on wgmma (attention_bwd_tf32.cu), after the dsum
// pre-pass: writes dk and dv and, when dq_acc is set, adds dS K into it (fp32,
// zeroed here first, rows laid out like lse times D, unswizzled). Returns
// false when it does not apply (D != 64, !vec, no wgmma): the mma.sync kernels run.
bool fg_k_flash_bwd_tf32(const fg_k_attn &p, const float *dsum, float *dq_acc, cudaStream_t st, cudaError_t *err);
// Where element (row r, column d) of a dq accumulator of rows D wide lives
// (D a multiple of 32): its 4-float chunks swizzled by the row, so that the
// kernel's fragment stores into the staging tile are free of bank conflicts.
// dq_col: the column of element d within its row, x = r % 8.
__host__ __device__ __forceinline__ int dq_col(int d, int x) { return (((d >> 2) ^ x) << 2) | (d & 3); }
__host__ __device__ __forceinline__ int64_t dq_acc_index(int64_t r, int d, int D)
{
    return r * D + dq_col(d, static_cast<int>(r & 7));
}

#endif
