/* Launchers of the flash-attention kernels (kernels/attention_fwd.cu,
 * kernels/attention_bwd.cu; see fg_kernels.h for the conventions). Plain C:
 * this is also the raw-pointer entry point behind fg_attention_raw. */
#ifndef FG_K_ATTENTION_H
#define FG_K_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One attention problem. q (B, Hq, Lq, D), k and v (B, Hkv, Lk, D), out and
 * dout like q, dq/dk/dv like q/k/k. *_s[3] are the batch, head and row strides
 * in elements; the last dim is contiguous. All tensors share dtype (f32, bf16
 * or f16); lse is f32, element (b, h, i) at b lse_s[0] + h lse_s[1] + i. D in
 * 1..256. vec != 0 promises that every pointer is 16-byte aligned and every
 * stride a multiple of 16 bytes (16-byte copies); otherwise the kernels copy
 * elements.
 *
 * Sequences. Dense: sequence b is batch entry b, Lq rows and Lk keys.
 * varlen (cu_q and cu_k set, device int32, B + 1 entries each): the rows are
 * packed, batch strides are 0 and sequence b is rows [cu_q[b], cu_q[b + 1]) of
 * q / out (and of lse) and keys [cu_k[b], cu_k[b + 1]) of k / v; Lq and Lk
 * are then the longest lengths (the grid's size). k_len (device int32, B;
 * optional, dense or varlen) shortens sequence b to its first k_len[b] keys
 * (key padding): the keys past it are never read and get zero gradients.
 * Each sequence is computed as if alone (causal aligned to its own lengths). */
typedef struct {
    const void *q, *k, *v, *dout;
    void *o; /* written by the forward, read by the backward */
    void *dq, *dk, *dv;
    float *lse;
    const int *cu_q, *cu_k, *k_len;
    int64_t lse_s[2];
    int64_t lse_n; /* entries of lse (B Hq Lq dense, Hq total_q varlen) */
    int64_t q_s[3], k_s[3], v_s[3], o_s[3], do_s[3], dq_s[3], dk_s[3], dv_s[3];
    int B, Hq, Hkv, Lq, Lk, D;
    float scale;
    int causal; /* bottom-right aligned */
    /* dropout: element kept when its Philox word >= drop_threshold (0: no
     * dropout); kept values scaled by drop_scale = 1 / (1 - p). */
    uint32_t drop_threshold;
    float drop_scale;
    uint64_t seed, rng_offset;
    int vec;
} fg_k_attn;

/* Forward: writes o and lse. */
int fg_k_flash_fwd(const fg_k_attn *p, int dtype, void *stream);
/* Backward scratch in bytes: the fp32 row sums D = rowsum(dO o) and, unless
 * deterministic, the fp32 dq accumulator (both laid out like lse). */
size_t fg_k_flash_bwd_scratch(const fg_k_attn *p, int deterministic);
/* Backward: reads q, k, v, o, lse, dout; writes dq, dk, dv. deterministic:
 * dq by its own kernel (no atomics; bit-identical run to run) instead of
 * fp32 atomics from the dK/dV kernel. dK/dV never use atomics (each block owns
 * a key block and sums the GQA group itself). */
int fg_k_flash_bwd(const fg_k_attn *p, int dtype, int deterministic, void *scratch, size_t scratch_bytes,
                   void *stream);

#ifdef __cplusplus
}
#endif
#endif
