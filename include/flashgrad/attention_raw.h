#ifndef FLASHGRAD_ATTENTION_RAW_H
#define FLASHGRAD_ATTENTION_RAW_H

#include <flashgrad/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Flash attention on raw pointers: the kernels behind fg_attention's FLASH
 * backend (the CUDA kernels, or the CPU reference) run on memory the caller
 * owns, with no tensor objects and no autograd, so other frameworks can call
 * them. Forward and backward are separate calls; the forward returns the
 * per-row log-sum-exp (LSE) that the backward needs. With the same inputs and
 * dropout stream the results are bit for bit those of fg_attention /
 * fg_attention_lse with backend FG_ATTN_FLASH and of its backward. The math
 * (causal alignment, GQA, dropout mask, varlen, key padding, rows that see no
 * key) is documented in flashgrad/attention.h.
 *
 * Layouts. q, out, dout, dq are (B, Hq, Lq, D) and k, v, dk, dv (B, Hkv, Lk, D)
 * in elements of `dtype`, addressed through strides in ELEMENTS:
 * element (b, h, i, d) of q is q[b q_stride[0] + h q_stride[1] + i q_stride[2]
 * + d]. The head dim is always contiguous (stride 1): a layout with another
 * inner stride cannot be expressed (copy it first). Other strides are free
 * (0 too for inputs, e.g. k and v shared by the batch); outputs must not
 * overlap themselves. 16-byte aligned pointers and strides that are multiples
 * of 16 bytes let the CUDA kernels use 16-byte loads (faster, same results).
 * Common cases, for a tensor with H heads and L rows:
 *   (B, H, L, D) contiguous: {H L D, L D, D}
 *   (B, L, H, D) contiguous: {L H D, D, H D}
 *   packed varlen (total, H, D): {0, D, H D} (the batch stride is ignored)
 *
 * Variable-length batches (varlen): cu_seqlens_q and cu_seqlens_k both set
 * (int32, B + 1 entries each, in `device` memory). The rows of the B
 * sequences are packed: q / out / dout / dq have total_q rows, k / v / dk / dv
 * total_k rows, and sequence b is rows [cu_seqlens_q[b], cu_seqlens_q[b + 1])
 * and keys [cu_seqlens_k[b], cu_seqlens_k[b + 1]). Offsets start at 0, never
 * decrease and end at total_q / total_k; zero-length sequences are fine. Lq
 * and Lk are then bounds on the sequence lengths (e.g. the max lengths); each
 * sequence is computed as if alone. Both NULL: dense (total_q / total_k
 * unused).
 *
 * Key padding: key_lengths (int32, B entries, in `device` memory; optional,
 * dense or varlen) keeps the first key_lengths[b] keys (0 .. the keys of
 * sequence b) of sequence b: the others are never read (they may hold
 * anything, even NaN) and get zero gradients.
 *
 * The tables are checked on every call (offsets as above, lengths within the
 * bounds): on CUDA this waits for `stream` and copies them to the host (a host
 * synchronisation; small copies), as fg_attention does. Dense calls without
 * key_lengths never synchronise.
 *
 * LSE (lse, allocated by the caller, contiguous): dense (B, Hq, Lq), element
 * (b, h, i) at (b Hq + h) Lq + i; varlen (Hq, total_q), element (h, row) at
 * h total_q + row. It holds float (f32), except for f64 data (CPU only) where
 * it holds double. A row that sees no key gets LSE = +inf and out = 0.
 *
 * Dropout: dropout_p in [0, 1) with the caller's Philox stream (dropout_seed,
 * dropout_offset), FlashAttention style: element (b, h, i, j) is kept when
 * word j % 4 of Philox4x32-10 at counter {j / 4, i, 2^31 | (b Hq + h),
 * lo32(dropout_offset)}, key dropout_seed, is >= floor(dropout_p 2^32) (i, j
 * count within the sequence, b is the sequence index); kept values are scaled
 * by 1 / (1 - dropout_p). Pass the same (seed, offset) to the backward. To
 * reproduce a fg_attention call that used generator g: seed =
 * fg_generator_seed(g), offset = fg_generator_offset(g) read just before it
 * (that call reserves one block: fg_generator_advance(g, 4)). The caller owns
 * the stream: nothing here advances a generator.
 *
 * Devices and streams. device FG_CPU: host pointers, the plain-C reference
 * (any dtype below, math in double), synchronous; `stream` is ignored.
 * device FG_CUDA: device pointers on the current device, the tensor-core
 * kernels (head dims 1..256, at most 65535 * 64 rows per sequence), launched
 * on `stream` (a cudaStream_t; NULL: the framework's stream, see
 * fg_cuda_synchronize), asynchronous (no host sync, except to check the
 * sequence tables). The caller keeps every buffer alive until that work is done.
 * A build without CUDA answers FG_ERR_UNSUPPORTED to FG_CUDA.
 *
 * Errors: FG_OK, or a status with the thread's error message (fg_last_error)
 * naming "attention_raw" and the offending field or sizes. A call that fails
 * its checks writes nothing. Nothing allocated by a call outlives it. */
typedef struct {
    fg_device device; /* FG_CPU (host pointers) or FG_CUDA (device pointers) */
    fg_dtype dtype;   /* of q, k, v, out, dout, dq, dk, dv: FG_F32, FG_BF16, FG_F16; FG_F64 on the CPU */
    int64_t B;        /* batch entries, or sequences when varlen */
    int64_t Hq, Hkv;  /* query / key-value heads, Hq % Hkv == 0 (GQA, MQA) */
    int64_t Lq, Lk;   /* rows of q / keys (dense), bounds on the sequence lengths (varlen) */
    int64_t D;        /* head dim (CUDA: 1..256) */
    const void *q, *k, *v;
    int64_t q_stride[3], k_stride[3], v_stride[3]; /* batch, head, row strides in elements */
    void *out; /* written by the forward, read by the backward */
    int64_t out_stride[3];
    void *lse; /* written by the forward, read by the backward; layout and type above */
    /* varlen (both or neither) */
    const int32_t *cu_seqlens_q, *cu_seqlens_k;
    int64_t total_q, total_k; /* packed rows of q and of k / v (varlen only) */
    const int32_t *key_lengths; /* key padding (optional) */
    bool causal;      /* bottom-right aligned: row i sees keys j <= i + Lk - Lq (per sequence) */
    double scale;     /* 0: 1 / sqrt(D) */
    double dropout_p; /* 0: no dropout */
    uint64_t dropout_seed, dropout_offset;
    bool deterministic; /* CUDA backward: dq without atomics, bit-identical run to run */
    void *stream;       /* CUDA: a cudaStream_t, NULL for the framework's */
} fg_attention_raw_args;

/* The backward's own buffers. dout like q (read); dq like q, dk and dv like k
 * (written in full: zeros where nothing flows). workspace: CUDA device
 * scratch of at least fg_attention_raw_backward_workspace bytes, reused
 * freely between calls on one stream; NULL: the backward takes it from the
 * framework's caching allocator (and orders its reuse after `stream` with an
 * event, no host sync). The CPU needs none (its fp64 accumulators come from
 * malloc). */
typedef struct {
    const void *dout;
    int64_t dout_stride[3];
    void *dq, *dk, *dv;
    int64_t dq_stride[3], dk_stride[3], dv_stride[3];
    void *workspace;
    size_t workspace_bytes;
} fg_attention_raw_grads;

/* out and lse from q, k, v. */
fg_status fg_attention_raw_forward(const fg_attention_raw_args *a);
/* dq, dk, dv from q, k, v, out, lse (the forward's, same arguments) and
 * g->dout. */
fg_status fg_attention_raw_backward(const fg_attention_raw_args *a, const fg_attention_raw_grads *g);
/* Bytes of device workspace the backward of `a` needs (0 on the CPU). Reads
 * only the sizes and flags of a (no data, no sync). */
fg_status fg_attention_raw_backward_workspace(const fg_attention_raw_args *a, size_t *bytes);

#ifdef __cplusplus
}
#endif
#endif
