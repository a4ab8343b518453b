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
 * or f16); lse (B, Hq, Lq) and dsum are contiguous f32. D in 1..256.
 * vec != 0 promises that every pointer is 16-byte aligned and every stride a
 * multiple of 16 bytes (16-byte copies); otherwise the kernels copy elements. */
typedef struct {
    const void *q, *k, *v, *dout;
    void *o; /* written by the forward, read by the backward */
    void *dq, *dk, *dv;
    float *lse;
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
 * deterministic, the fp32 dq accumulator. */
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
