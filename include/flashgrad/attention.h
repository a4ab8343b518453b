#ifndef FLASHGRAD_ATTENTION_H
#define FLASHGRAD_ATTENTION_H

#include <flashgrad/tensor.h>
#include <flashgrad/random.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Scaled dot-product attention, softmax(scale q k^T [+ causal mask]) v, as an
 * autograd op.
 *
 * Shapes: q (B, Hq, Lq, D), k (B, Hkv, Lk, D), v (B, Hkv, Lk, D) -> out
 * (B, Hq, Lq, D). The (B, L, H, D) layout is the same call on transposed
 * views (fg_transpose(x, 1, 2)): only strides differ. Hq % Hkv == 0: query
 * head h reads key/value head h / (Hq / Hkv) (GQA; Hkv = 1 is MQA).
 *
 * Causal with Lq != Lk is aligned bottom-right: query row i sees keys
 * j <= i + Lk - Lq. A row that sees no key outputs zeros, has LSE = +inf and
 * gets zero gradients (never NaN).
 *
 * Backends: FLASH tiles the keys with an online softmax and saves only q, k,
 * v, out and the log-sum-exp per row (fp32); its backward recomputes the
 * probabilities block by block (memory linear in L). On the GPU these are
 * tensor-core kernels (bf16/f16 mma.sync; f32 through 3xTF32, close to f32
 * accuracy) for head dims 1..256. MATH materialises the (Lq, Lk) scores and
 * probabilities with the framework's ops (cuBLAS on the GPU): the reference.
 * AUTO picks FLASH, except for f64 or head dims over 256 on the GPU (MATH).
 *
 * Dropout (dropout_p in [0, 1)) drops probabilities after the softmax and
 * scales the kept ones by 1 / (1 - p); LSE stays that of the undropped
 * softmax. Element (b, h, i, j) is kept when word j % 4 of the Philox4x32-10
 * block at counter {j / 4, i, 2^31 | (b Hq + h), lo(offset)} and key seed is
 * >= p 2^32: (seed, offset) come from the generator (one block reserved per
 * call), so every backend, CPU or GPU, and the backward regenerate the same
 * mask bit for bit; it is never stored.
 *
 * deterministic: the CUDA backward computes dq in its own pass without
 * atomics, so gradients are bit-identical run to run (default: fp32 atomics
 * for dq where that is faster; dk and dv never use atomics). bf16/f16 with
 * head dim 33..64 always take the separate pass, the faster one there, so
 * they are deterministic either way. The CPU backends are always
 * deterministic.
 *
 * flashgrad/attention_raw.h runs the FLASH backend on caller memory (raw
 * pointers and strides, no tensors or autograd). */
typedef enum { FG_ATTN_AUTO = 0, FG_ATTN_FLASH, FG_ATTN_MATH } fg_attn_backend;

/*
 * Variable-length batches (varlen): cu_seqlens_q and cu_seqlens_k set (1-d
 * i32 or i64 tensors of B + 1 entries, on any device) pack B sequences along
 * the rows: q is (total_q, Hq, D), k and v (total_k, Hkv, D) (the last dim
 * contiguous, any other strides), out is (total_q, Hq, D) and the LSE
 * (Hq, total_q). Sequence b is rows [cu_seqlens_q[b], cu_seqlens_q[b + 1]) of
 * q and [cu_seqlens_k[b], cu_seqlens_k[b + 1]) of k / v; both start at 0, never
 * decrease and end at the totals. Zero-length sequences are allowed. Each
 * sequence is computed as if alone (causal aligned to its own lengths);
 * dropout uses b as the batch index and the rows and keys of the sequence.
 * max_seqlen_q / max_seqlen_k: 0, or a bound on the lengths (checked).
 *
 * Key padding: key_lengths (1-d i32/i64, B entries, any device) keeps the
 * first key_lengths[b] keys of sequence b (0..Lk; dense or varlen): the rest
 * are never read (their values may be anything, even NaN) and get zero
 * gradients; the result equals running the sequence with only those keys.
 *
 * Both read the (small) length tensors on the host to check them, one copy
 * from the GPU per call. */
typedef struct {
    bool causal;
    double scale;      /* 0: 1 / sqrt(D) */
    double dropout_p;  /* 0: no dropout */
    fg_attn_backend backend;
    bool deterministic;
    fg_generator *generator; /* dropout's stream; NULL: fg_default_generator() */
    fg_tensor *cu_seqlens_q, *cu_seqlens_k; /* varlen (both or neither) */
    int64_t max_seqlen_q, max_seqlen_k;
    fg_tensor *key_lengths; /* key padding */
} fg_attention_opts;

/* opts may be NULL (non-causal, default scale, no dropout, AUTO). */
fg_tensor *fg_attention(fg_tensor *q, fg_tensor *k, fg_tensor *v, const fg_attention_opts *opts);
/* The same, also returning the per-row log-sum-exp of the scaled scores,
 * (B, Hq, Lq) on q's device, f32 (f64 for f64 inputs; +inf for rows that see
 * no key), in *lse
 * (owned like any new tensor; no gradient). */
fg_tensor *fg_attention_lse(fg_tensor *q, fg_tensor *k, fg_tensor *v, const fg_attention_opts *opts, fg_tensor **lse);

#ifdef __cplusplus
}
#endif
#endif
