/* The raw-pointer attention API (include/flashgrad/attention_raw.h): checks
 * the caller's sizes, pointers and sequence tables, wraps the buffers in
 * non-owning tensor headers (fg__tensor_external) and runs the flash forward /
 * backward that fg_attention uses (ops/attention.c: the CPU reference or the
 * CUDA kernels). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <flashgrad/attention_raw.h>
#include "ops/attention_impl.h"

static const char *OP = "attention_raw";

/* A checked call. */
typedef struct {
    attn_cfg c;       /* scale, causal, drop, deterministic */
    attn_seq_arg sa;  /* the tables as the runs see them (the caller's pointers) */
    bool varlen;
    int64_t nb;       /* batch extent of the 4-d views: B, or 1 packed */
    int64_t rq, rk;   /* rows of the views: Lq / Lk, or total_q / total_k packed */
    int64_t lse_n;    /* LSE entries */
    fg_dtype lse_dt;
    void *stream;     /* CUDA stream of the launches */
} plan;

static const char *sizes(const fg_attention_raw_args *a, char *buf, size_t n)
{
    snprintf(buf, n, "B = %lld, Hq = %lld, Hkv = %lld, Lq = %lld, Lk = %lld, D = %lld", (long long)a->B,
             (long long)a->Hq, (long long)a->Hkv, (long long)a->Lq, (long long)a->Lk, (long long)a->D);
    return buf;
}

/* *out = x0 x1 x2 x3, false when it leaves the range tensors allow. */
static bool count(int64_t x0, int64_t x1, int64_t x2, int64_t x3, int64_t *out)
{
    int64_t n = x0;
    if (__builtin_mul_overflow(n, x1, &n) || __builtin_mul_overflow(n, x2, &n) || __builtin_mul_overflow(n, x3, &n))
        return false;
    *out = n;
    return n <= (INT64_MAX >> 4);
}

static bool need_ptr(const void *p, int64_t n, const char *name, const fg_attention_raw_args *a)
{
    char b[160];
    if (p || n == 0) return true;
    fg__err(FG_ERR_NULL, "%s: %s is NULL but holds %lld elements (%s)", OP, name, (long long)n, sizes(a, b, sizeof b));
    return false;
}

/* Everything but the sequence tables' values (no data read). */
static bool check_scalars(const fg_attention_raw_args *a, plan *pl)
{
    char b[160];
    if (!a) return fg__err(FG_ERR_NULL, "%s: args is NULL", OP), false;
    if (a->device != FG_CPU && a->device != FG_CUDA)
        return fg__err(FG_ERR_DEVICE, "%s: device %d is neither FG_CPU nor FG_CUDA", OP, (int)a->device), false;
    if (a->device == FG_CUDA && !fg_cuda_compiled())
        return fg__err(FG_ERR_UNSUPPORTED, "%s: device FG_CUDA, but this build of flashgrad has no CUDA backend "
                                           "(configure --with-cuda)", OP), false;
    if (a->device == FG_CUDA && !fg_cuda_available())
        return fg__err(FG_ERR_DEVICE, "%s: device FG_CUDA, but no usable CUDA GPU was found", OP), false;
    const fg_dtype dt = a->dtype;
    if (!(dt == FG_F32 || dt == FG_BF16 || dt == FG_F16 || (dt == FG_F64 && a->device == FG_CPU))) {
        if ((unsigned)dt >= FG_NUM_DTYPES) return fg__err(FG_ERR_DTYPE, "%s: invalid dtype %d", OP, (int)dt), false;
        return fg__err(FG_ERR_DTYPE, "%s: dtype %s is not supported on %s (CUDA: f32, bf16, f16; CPU: also f64)", OP,
                       fg_dtype_name(dt), fg_device_name(a->device)), false;
    }
    if (a->B < 0 || a->Hq < 0 || a->Hkv < 0 || a->Lq < 0 || a->Lk < 0 || a->D < 0)
        return fg__err(FG_ERR_SHAPE, "%s: negative size (%s)", OP, sizes(a, b, sizeof b)), false;
    if (a->Hkv < 1 || a->Hq % a->Hkv != 0)
        return fg__err(FG_ERR_SHAPE, "%s: Hq = %lld is not a multiple of Hkv = %lld (Hkv >= 1)", OP, (long long)a->Hq,
                       (long long)a->Hkv), false;
    if (a->device == FG_CUDA && (a->D < 1 || a->D > 256))
        return fg__err(FG_ERR_UNSUPPORTED, "%s: the CUDA kernels take head dims 1..256; got D = %lld", OP,
                       (long long)a->D), false;
    if (!isfinite(a->scale)) return fg__err(FG_ERR_INVALID, "%s: scale = %g is not finite", OP, a->scale), false;
    if (!(a->dropout_p >= 0 && a->dropout_p < 1))
        return fg__err(FG_ERR_INVALID, "%s: dropout_p = %g is outside [0, 1)", OP, a->dropout_p), false;
    pl->varlen = a->cu_seqlens_q || a->cu_seqlens_k;
    if (pl->varlen && (!a->cu_seqlens_q || !a->cu_seqlens_k))
        return fg__err(FG_ERR_INVALID, "%s: varlen needs both cu_seqlens_q and cu_seqlens_k; %s is NULL", OP,
                       a->cu_seqlens_q ? "cu_seqlens_k" : "cu_seqlens_q"), false;
    if (pl->varlen && (a->total_q < 0 || a->total_k < 0))
        return fg__err(FG_ERR_SHAPE, "%s: negative varlen totals total_q = %lld, total_k = %lld", OP,
                       (long long)a->total_q, (long long)a->total_k), false;
    pl->nb = pl->varlen ? 1 : a->B;
    pl->rq = pl->varlen ? a->total_q : a->Lq;
    pl->rk = pl->varlen ? a->total_k : a->Lk;
    int64_t nq, nk;
    if (!count(pl->nb, a->Hq, pl->rq, a->D, &nq) || !count(pl->nb, a->Hkv, pl->rk, a->D, &nk) ||
        !count(pl->nb, a->Hq, pl->rq, 1, &pl->lse_n) || a->B > INT32_MAX - 1)
        return fg__err(FG_ERR_OVERFLOW, "%s: sizes overflow (%s, total_q = %lld, total_k = %lld)", OP,
                       sizes(a, b, sizeof b), (long long)a->total_q, (long long)a->total_k), false;
    int64_t bh;
    if (a->device == FG_CUDA && (__builtin_mul_overflow(a->B, a->Hq, &bh) || bh > INT32_MAX || a->Hkv > INT32_MAX))
        return fg__err(FG_ERR_UNSUPPORTED, "%s: sizes beyond the CUDA kernels' grid (%s)", OP, sizes(a, b, sizeof b)), false;
    pl->lse_dt = dt == FG_F64 ? FG_F64 : FG_F32;
    pl->c = (attn_cfg){.causal = a->causal, .deterministic = a->deterministic, .dropout_p = a->dropout_p};
    pl->c.scale = a->scale != 0 ? a->scale : 1.0 / sqrt((double)(a->D > 0 ? a->D : 1));
    pl->c.drop = fg__attn_drop_of(a->dropout_p, a->dropout_seed, a->dropout_offset);
    pl->stream = a->device == FG_CUDA ? (a->stream ? a->stream : fg__cuda_stream()) : NULL;
    /* the bounds until the tables are read */
    pl->sa = (attn_seq_arg){pl->varlen, a->key_lengths != NULL, a->B, a->Lq, a->Lk,
                            a->cu_seqlens_q, a->cu_seqlens_k, a->key_lengths};
    return need_ptr(a->q, nq, "q", a) && need_ptr(a->k, nk, "k", a) && need_ptr(a->v, nk, "v", a) &&
           need_ptr(a->out, nq, "out", a) && need_ptr(a->lse, pl->lse_n, "lse", a);
}

/* n int32 of the caller's table p (on a->device) widened into out. */
static bool read_table(const fg_attention_raw_args *a, const int32_t *p, int64_t n, int64_t *out)
{
    int32_t *h = (int32_t *)p;
    if (a->device == FG_CUDA) {
        if (!(h = malloc(sizeof(int32_t) * (size_t)(n + 1))))
            return fg__err(FG_ERR_OOM, "%s: out of memory for %lld sequence lengths", OP, (long long)n), false;
        if (fg__cuda_memcpy_d2h(h, p, sizeof(int32_t) * (size_t)n) != FG_OK) {
            free(h);
            return false;
        }
    }
    for (int64_t i = 0; i < n; i++) out[i] = h[i];
    if (h != p) free(h);
    return true;
}

/* Reads and checks the sequence tables (varlen, key padding): pl->sa gets the
 * real longest lengths. Dense without padding reads nothing. */
static bool check_seqs(const fg_attention_raw_args *a, plan *pl)
{
    attn_seqs s = {.varlen = pl->varlen, .padded = a->key_lengths != NULL};
    if (s.varlen || s.padded) {
        /* the caller may have written the tables on its own stream: wait for it (the copies wait for ours) */
        if (a->device == FG_CUDA && pl->stream != fg__cuda_stream() && fg__cuda_stream_sync(pl->stream) != FG_OK)
            return false;
        if (!fg__attn_seqs_alloc(OP, &s, a->B)) return false;
        bool ok = true;
        if (s.varlen)
            ok = read_table(a, a->cu_seqlens_q, a->B + 1, s.cu_q) && read_table(a, a->cu_seqlens_k, a->B + 1, s.cu_k);
        else /* dense: the offsets only give the lengths */
            for (int64_t b = 0; b <= a->B; b++) s.cu_q[b] = b * a->Lq, s.cu_k[b] = b * a->Lk;
        static const char *const totals[2] = {"total_q =", "total_k ="};
        ok = ok && (!s.padded || read_table(a, a->key_lengths, a->B, s.k_len)) &&
             fg__attn_check_seqs(OP, &s, s.varlen ? a->total_q : 0, s.varlen ? a->total_k : 0, totals);
        if (ok && (s.max_q > a->Lq || s.max_k > a->Lk)) {
            fg__err(FG_ERR_INVALID, "%s: the sequences reach %lld query rows / %lld keys, over the bounds Lq = %lld / "
                    "Lk = %lld", OP, (long long)s.max_q, (long long)s.max_k, (long long)a->Lq, (long long)a->Lk);
            ok = false;
        }
        pl->sa.max_q = s.max_q, pl->sa.max_k = s.max_k;
        fg__attn_seqs_free(&s);
        if (!ok) return false;
    }
    if (a->device == FG_CUDA && (pl->sa.max_q > FG_ATTN_MAX_ROWS || pl->sa.max_k > FG_ATTN_MAX_ROWS)) {
        fg__err(FG_ERR_UNSUPPORTED, "%s: sequences of %lld rows / %lld keys are beyond the CUDA kernels' grid (at most "
                "%d)", OP, (long long)pl->sa.max_q, (long long)pl->sa.max_k, FG_ATTN_MAX_ROWS);
        return false;
    }
    return true;
}

/* The (nb, H, rows, D) header of a caller buffer (batch stride 0 when packed). */
static fg_tensor *view(const fg_attention_raw_args *a, const plan *pl, const void *p, const int64_t st[3], bool kv)
{
    const int64_t sh[4] = {pl->nb, kv ? a->Hkv : a->Hq, kv ? pl->rk : pl->rq, a->D};
    const int64_t stride[4] = {pl->varlen ? 0 : st[0], st[1], st[2], 1};
    return fg__tensor_external(OP, (void *)p, a->dtype, a->device, 4, sh, stride);
}

static void unref_all(int n, fg_tensor **t)
{
    for (int i = 0; i < n; i++) fg__unref(t[i]);
}

/* Headers of q k v out [dout dq dk dv] (n = 4 or 8) and of the LSE; false on OOM (all released). */
static bool headers(const fg_attention_raw_args *a, const fg_attention_raw_grads *g, const plan *pl, int n,
                    fg_tensor **w, fg_tensor **lse)
{
    const void *ptr[8] = {a->q, a->k, a->v, a->out, g ? g->dout : NULL, g ? g->dq : NULL, g ? g->dk : NULL, g ? g->dv : NULL};
    const int64_t *st[8] = {a->q_stride, a->k_stride, a->v_stride, a->out_stride, g ? g->dout_stride : a->q_stride,
                            g ? g->dq_stride : a->q_stride, g ? g->dk_stride : a->k_stride, g ? g->dv_stride : a->v_stride};
    static const bool kv[8] = {false, true, true, false, false, false, true, true};
    bool ok = true;
    for (int i = 0; i < 8; i++) w[i] = NULL;
    for (int i = 0; i < n && ok; i++) ok = (w[i] = view(a, pl, ptr[i], st[i], kv[i])) != NULL;
    *lse = ok ? fg__tensor_external(OP, a->lse, pl->lse_dt, a->device, 1, &pl->lse_n, (const int64_t[]){1}) : NULL;
    if (*lse) return true;
    unref_all(n, w);
    return false;
}

fg_status fg_attention_raw_forward(const fg_attention_raw_args *a)
{
    plan pl;
    fg_tensor *w[8], *lse;
    if (!check_scalars(a, &pl) || !check_seqs(a, &pl) || !headers(a, NULL, &pl, 4, w, &lse)) return fg_last_status();
    const fg_status st = fg__attn_flash_fwd(OP, w, lse, &pl.c, &pl.sa, pl.stream);
    unref_all(4, w);
    fg__unref(lse);
    return st;
}

fg_status fg_attention_raw_backward(const fg_attention_raw_args *a, const fg_attention_raw_grads *g)
{
    plan pl;
    fg_tensor *w[8], *lse;
    if (!check_scalars(a, &pl)) return fg_last_status();
    if (!g) return fg__err(FG_ERR_NULL, "%s backward: grads is NULL", OP);
    const int64_t nq = pl.lse_n * a->D, nk = pl.nb * a->Hkv * pl.rk * a->D;
    if (!need_ptr(g->dout, nq, "dout", a) || !need_ptr(g->dq, nq, "dq", a) || !need_ptr(g->dk, nk, "dk", a) ||
        !need_ptr(g->dv, nk, "dv", a))
        return fg_last_status();
    if (g->workspace && a->device == FG_CUDA) { /* checked before any sync */
        size_t bytes = 0;
        if (fg_attention_raw_backward_workspace(a, &bytes) != FG_OK) return fg_last_status();
        if (g->workspace_bytes < bytes)
            return fg__err(FG_ERR_INVALID, "%s backward: workspace_bytes = %zu, the call needs %zu "
                           "(fg_attention_raw_backward_workspace)", OP, g->workspace_bytes, bytes);
    }
    if (!check_seqs(a, &pl) || !headers(a, g, &pl, 8, w, &lse)) return fg_last_status();
    const fg_status st = fg__attn_flash_bwd(OP, w, lse, &pl.c, &pl.sa, pl.stream, g->workspace, g->workspace_bytes);
    unref_all(8, w);
    fg__unref(lse);
    return st;
}

fg_status fg_attention_raw_backward_workspace(const fg_attention_raw_args *a, size_t *bytes)
{
    if (!bytes) return fg__err(FG_ERR_NULL, "%s: bytes is NULL", OP);
    *bytes = 0;
    plan pl;
    fg_tensor *w[8], *lse;
    /* sizing only: the pointers are never read, so NULL ones are fine here */
    fg_attention_raw_args x = a ? *a : (fg_attention_raw_args){0};
    char one = 0;
    if (a) x.q = x.k = x.v = x.out = x.lse = &one;
    if (!check_scalars(a ? &x : NULL, &pl)) return fg_last_status();
    if (a->device == FG_CPU) return FG_OK;
    /* the size depends on the LSE entries and D only; keep the bounds within what the kernels take */
    if (pl.sa.max_q > FG_ATTN_MAX_ROWS) pl.sa.max_q = FG_ATTN_MAX_ROWS;
    if (pl.sa.max_k > FG_ATTN_MAX_ROWS) pl.sa.max_k = FG_ATTN_MAX_ROWS;
    if (!headers(&x, NULL, &pl, 4, w, &lse)) return fg_last_status();
    fg_tensor *w8[8] = {w[0], w[1], w[2], w[3], w[0], w[0], w[1], w[2]}; /* dout, dq, dk, dv shaped like q, q, k, v */
    *bytes = fg__attn_flash_bwd_scratch(w8, &pl.c, &pl.sa);
    unref_all(4, w);
    fg__unref(lse);
    return FG_OK;
}
