/* GPU suite "cuda_attention_raw": the raw-pointer entry point
 * (flashgrad/attention_raw.h) on device pointers runs the same kernels as
 * fg_attention's CUDA flash backend, so its out, LSE, dq, dk and dv equal
 * fg_attention + autograd bit for bit (deterministic mode; without it dq's
 * fp32 atomics may sum in another order), for f32 and bf16, dense in mixed
 * layouts and varlen with key padding, with the caller's workspace or the
 * framework's; they match the CPU f64 raw result within the kernels'
 * tolerance; a non-blocking caller stream gives the same bits; empty sizes
 * give zeros; bad calls are clear errors. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <flashgrad.h>
#include <flashgrad/attention.h>
#include <flashgrad/attention_raw.h>
#include <flashgrad/cuda.h>
#include "config.h"
#include "cudatest.h"
#ifdef FG_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

/* a and b bit for bit (NaN where b has none is a mismatch). */
static void ck_exact(const fg_tensor *a, const fg_tensor *b, const char *what, int c)
{
    ck_assert_msg(a && b, "%s (case %d): NULL: %s", what, c, fg_last_error());
    fg_compare_result r;
    ck_assert_msg(fg_compare(a, b, 0, 0, &r) == FG_OK, "%s (case %d): compare: %s", what, c, fg_last_error());
    ck_assert_msg(r.n_mismatch == 0, "%s (case %d): %lld elements differ, max abs err %.3g at %lld", what, c,
                  (long long)r.n_mismatch, r.max_abs_err, (long long)r.worst_index);
}

/* ||a - ref|| / ||ref|| <= tol and no non-finite value where ref is finite. */
static void ck_rel(const fg_tensor *a, const fg_tensor *ref, double tol, const char *what, int c)
{
    ck_assert_msg(a && ref, "%s (case %d): NULL: %s", what, c, fg_last_error());
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(a, ref, DBL_MAX, 0, &r), FG_OK);
    ck_assert_msg(r.n_mismatch == 0, "%s (case %d): %lld non-finite values where the reference is finite", what, c,
                  (long long)r.n_mismatch);
    ck_assert_msg(r.rel_l2_err <= tol, "%s (case %d): rel l2 err %.3g > %g (max abs %.3g at %lld)", what, c,
                  r.rel_l2_err, tol, r.max_abs_err, (long long)r.worst_index);
}

/* Relative l2 tolerances against f64 (as in cuda_attention): f32 runs 3xTF32, bf16 rounds to 8 bits. */
static double tol_of(fg_dtype dt) { return dt == FG_F32 ? 2e-5 : 2.5e-2; }

/* Pointer and (batch, head, row) strides of a logical (B, H, L, D) tensor. */
static void *bhld(fg_tensor *t, int64_t st[3])
{
    ck_assert_msg(t != NULL, "NULL tensor: %s", fg_last_error());
    ck_assert_int_eq(fg_strides(t)[3], 1);
    for (int d = 0; d < 3; d++) st[d] = fg_strides(t)[d];
    return fg_data_ptr(t);
}

/* The same for a packed (total, H, D) tensor (batch stride ignored). */
static void *packed(fg_tensor *t, int64_t st[3])
{
    ck_assert_msg(t != NULL, "NULL tensor: %s", fg_last_error());
    ck_assert_int_eq(fg_strides(t)[2], 1);
    st[0] = 0, st[1] = fg_strides(t)[1], st[2] = fg_strides(t)[0];
    return fg_data_ptr(t);
}

/* x (CPU, logical (B, H, L, D)) as dtype dt on dev, stored (B, H, L, D) or (B, L, H, D) (blhd); no autograd. */
static fg_tensor *as_layout(fg_tensor *x, fg_dtype dt, fg_device dev, bool blhd)
{
    fg_tensor *y = fg_to(blhd ? fg_contiguous(fg_transpose(x, 1, 2)) : x, dev, dt);
    ck_assert_msg(y != NULL, "as_layout: %s", fg_last_error());
    return fg_detach(blhd ? fg_transpose(y, 1, 2) : y);
}

/* An output buffer (B, H, L, D) on the GPU in a layout, filled with NaN (unwritten elements show). */
static fg_tensor *nan4(int64_t B, int64_t H, int64_t L, int64_t D, fg_dtype dt, bool blhd)
{
    fg_tensor *s = blhd ? fg_full(FG_SHAPE(B, L, H, D), NAN, dt, FG_CUDA) : fg_full(FG_SHAPE(B, H, L, D), NAN, dt, FG_CUDA);
    ck_assert_msg(s != NULL, "nan4: %s", fg_last_error());
    return blhd ? fg_transpose(s, 1, 2) : s;
}

static fg_tensor *randn(fg_generator *g, int64_t B, int64_t H, int64_t L, int64_t D)
{
    fg_tensor *t = fg_randn(g, FG_SHAPE(B, H, L, D), FG_F64, FG_CPU);
    ck_assert_ptr_nonnull(t);
    return t;
}

/* A caller workspace of `bytes` device bytes (an f32 tensor holding it). */
static fg_tensor *workspace(size_t bytes)
{
    fg_tensor *w = fg_empty(FG_SHAPE((int64_t)(bytes + 3) / 4), FG_F32, FG_CUDA);
    ck_assert_msg(w != NULL, "workspace: %s", fg_last_error());
    return w;
}

typedef struct {
    int64_t B, Hq, Hkv, Lq, Lk, D;
    bool causal, in_blhd, out_blhd;
    double drop;
} dcase;

static const dcase CASES[] = {
    {2, 4, 2, 77, 77, 64, true, false, true, 0},     {1, 6, 2, 130, 67, 128, false, true, false, 0.1},
    {2, 2, 1, 33, 200, 40, true, true, true, 0.2},   {1, 2, 2, 65, 65, 256, false, false, false, 0},
    {1, 3, 3, 1, 37, 16, true, false, true, 0},      {2, 4, 4, 90, 20, 8, true, true, false, 0}, /* rows without keys */
};

/* One dense case: raw CUDA == fg_attention CUDA (bits), raw CUDA ~ raw CPU f64. */
static void run_dense(fg_generator *gen, const dcase *c, fg_dtype dt, bool det, bool own_ws, int ci)
{
    fg_tensor *q0 = randn(gen, c->B, c->Hq, c->Lq, c->D), *k0 = randn(gen, c->B, c->Hkv, c->Lk, c->D),
              *v0 = randn(gen, c->B, c->Hkv, c->Lk, c->D), *g0 = randn(gen, c->B, c->Hq, c->Lq, c->D);
    fg_tensor *q = as_layout(q0, dt, FG_CUDA, c->in_blhd), *k = as_layout(k0, dt, FG_CUDA, c->in_blhd),
              *v = as_layout(v0, dt, FG_CUDA, c->in_blhd), *dout = as_layout(g0, dt, FG_CUDA, !c->in_blhd);
    /* reference: fg_attention on the same device tensors */
    fg_tensor *ql = fg_detach(q), *kl = fg_detach(k), *vl = fg_detach(v);
    fg_set_requires_grad(ql, true), fg_set_requires_grad(kl, true), fg_set_requires_grad(vl, true);
    fg_generator *gd = fg_generator_new(500 + (uint64_t)ci);
    const uint64_t seed = fg_generator_seed(gd), offset = fg_generator_offset(gd);
    fg_attention_opts o = {.causal = c->causal, .backend = FG_ATTN_FLASH, .dropout_p = c->drop, .deterministic = det,
                           .generator = gd};
    fg_tensor *lref = NULL, *yref = fg_attention_lse(ql, kl, vl, &o, &lref);
    fg_generator_free(gd);
    ck_assert_msg(yref != NULL, "reference (case %d): %s", ci, fg_last_error());
    ck_assert_msg(fg_backward_with_grad(yref, dout) == FG_OK, "reference backward (case %d): %s", ci, fg_last_error());
    /* raw on device pointers */
    fg_tensor *out = nan4(c->B, c->Hq, c->Lq, c->D, dt, c->out_blhd);
    fg_tensor *lse = fg_full(FG_SHAPE(c->B, c->Hq, c->Lq), NAN, FG_F32, FG_CUDA);
    fg_attention_raw_args a = {.device = FG_CUDA, .dtype = dt, .B = c->B, .Hq = c->Hq, .Hkv = c->Hkv, .Lq = c->Lq,
                               .Lk = c->Lk, .D = c->D, .causal = c->causal, .dropout_p = c->drop, .dropout_seed = seed,
                               .dropout_offset = offset, .deterministic = det};
    a.q = bhld(q, a.q_stride), a.k = bhld(k, a.k_stride), a.v = bhld(v, a.v_stride), a.out = bhld(out, a.out_stride);
    a.lse = fg_data_ptr(lse);
    ck_assert_msg(fg_attention_raw_forward(&a) == FG_OK, "raw forward (case %d, %s): %s", ci, fg_dtype_name(dt), fg_last_error());
    fg_tensor *dq = nan4(c->B, c->Hq, c->Lq, c->D, dt, c->out_blhd), *dk = nan4(c->B, c->Hkv, c->Lk, c->D, dt, !c->out_blhd),
              *dv = nan4(c->B, c->Hkv, c->Lk, c->D, dt, c->out_blhd);
    fg_attention_raw_grads g = {0};
    g.dout = bhld(dout, g.dout_stride), g.dq = bhld(dq, g.dq_stride), g.dk = bhld(dk, g.dk_stride), g.dv = bhld(dv, g.dv_stride);
    if (own_ws) {
        ck_assert_int_eq(fg_attention_raw_backward_workspace(&a, &g.workspace_bytes), FG_OK);
        ck_assert_msg(g.workspace_bytes >= 16, "workspace of %zu bytes", g.workspace_bytes);
        g.workspace = fg_data_ptr(workspace(g.workspace_bytes));
    }
    fg_cuda_memory_stats m0, m1;
    ck_assert_int_eq(fg_cuda_get_memory_stats(&m0), FG_OK);
    ck_assert_msg(fg_attention_raw_backward(&a, &g) == FG_OK, "raw backward (case %d, %s): %s", ci, fg_dtype_name(dt),
                  fg_last_error());
    ck_assert_int_eq(fg_cuda_get_memory_stats(&m1), FG_OK);
    ck_assert_int_eq(m1.in_use_bytes, m0.in_use_bytes); /* the scratch went back */
    if (own_ws) ck_assert_int_eq(m1.n_cuda_malloc, m0.n_cuda_malloc);
    ck_assert_msg(fg_cuda_synchronize() == FG_OK, "sync (case %d): %s", ci, fg_last_error());
    ck_exact(out, yref, "out", ci);
    ck_exact(lse, lref, "lse", ci);
    ck_exact(dk, fg_grad(kl), "dk", ci);
    ck_exact(dv, fg_grad(vl), "dv", ci);
    if (det)
        ck_exact(dq, fg_grad(ql), "dq", ci);
    else /* fp32 atomics: the order of the sums may differ run to run */
        ck_rel(dq, fg_grad(ql), dt == FG_F32 ? 1e-5 : 1e-2, "dq (atomics)", ci);

    /* the CPU reference in f64 through the raw API on host buffers holding the same rounded values */
    fg_tensor *q64 = fg_to(q, FG_CPU, FG_F64), *k64 = fg_to(k, FG_CPU, FG_F64), *v64 = fg_to(v, FG_CPU, FG_F64),
              *g64 = fg_to(dout, FG_CPU, FG_F64);
    fg_tensor *o64 = fg_empty(FG_SHAPE(c->B, c->Hq, c->Lq, c->D), FG_F64, FG_CPU), *l64 = fg_empty(FG_SHAPE(c->B, c->Hq, c->Lq), FG_F64, FG_CPU);
    fg_tensor *dq64 = fg_empty(FG_SHAPE(c->B, c->Hq, c->Lq, c->D), FG_F64, FG_CPU),
              *dk64 = fg_empty(FG_SHAPE(c->B, c->Hkv, c->Lk, c->D), FG_F64, FG_CPU),
              *dv64 = fg_empty(FG_SHAPE(c->B, c->Hkv, c->Lk, c->D), FG_F64, FG_CPU);
    fg_attention_raw_args h = a;
    h.device = FG_CPU, h.dtype = FG_F64, h.stream = NULL;
    h.q = bhld(q64, h.q_stride), h.k = bhld(k64, h.k_stride), h.v = bhld(v64, h.v_stride), h.out = bhld(o64, h.out_stride);
    h.lse = fg_data_ptr(l64);
    fg_attention_raw_grads hg = {0};
    hg.dout = bhld(g64, hg.dout_stride), hg.dq = bhld(dq64, hg.dq_stride), hg.dk = bhld(dk64, hg.dk_stride),
    hg.dv = bhld(dv64, hg.dv_stride);
    ck_assert_msg(fg_attention_raw_forward(&h) == FG_OK && fg_attention_raw_backward(&h, &hg) == FG_OK, "cpu raw: %s",
                  fg_last_error());
    const double tol = tol_of(dt);
    ck_rel(out, o64, tol, "out vs cpu f64", ci);
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(lse, l64, dt == FG_F32 ? 1e-4 : 5e-2, dt == FG_F32 ? 1e-5 : 1e-2, &r), FG_OK);
    ck_assert_msg(r.allclose, "lse vs cpu f64 (case %d): max abs err %.3g", ci, r.max_abs_err);
    ck_rel(dq, dq64, 2 * tol, "dq vs cpu f64", ci);
    ck_rel(dk, dk64, 2 * tol, "dk vs cpu f64", ci);
    ck_rel(dv, dv64, 2 * tol, "dv vs cpu f64", ci);
}

START_TEST(test_raw_cuda_dense)
{
    BEGIN;
    static const fg_dtype dts[] = {FG_F32, FG_BF16};
    int n = 0;
    for (int d = 0; d < 2; d++)
        for (size_t c = 0; c < sizeof CASES / sizeof *CASES; c++, n++) {
            fg_scope *sc = fg_scope_begin();
            run_dense(gen, &CASES[c], dts[d], n % 3 != 2, n % 2 == 0, (int)c);
            ck_assert_int_eq(fg_scope_end(sc), FG_OK);
        }
    END;
}
END_TEST

/* varlen + key padding, tables in device memory, NaN in the padded keys. */
static void run_varlen(fg_generator *gen, int64_t D, fg_dtype dt, bool causal, double drop, int ci)
{
    enum { N = 6 };
    const int32_t lq[N] = {0, 100, 1, 257, 64, 33}, nk[N] = {5, 130, 0, 300, 64, 20}, kl[N] = {5, 77, 0, 300, 1, 0};
    const int64_t Hq = 4, Hkv = 2;
    double cq[N + 1] = {0}, ckk[N + 1] = {0}, kld[N];
    for (int b = 0; b < N; b++) cq[b + 1] = cq[b] + lq[b], ckk[b + 1] = ckk[b] + nk[b], kld[b] = kl[b];
    const int64_t tq = (int64_t)cq[N], tk = (int64_t)ckk[N];
    fg_tensor *kv64[2];
    for (int t = 0; t < 2; t++) {
        double *h = malloc(sizeof(double) * (size_t)(tk * Hkv * D));
        read_f64(fg_randn(gen, FG_SHAPE(tk, Hkv, D), FG_F64, FG_CPU), h, tk * Hkv * D);
        for (int b = 0; b < N; b++)
            for (int64_t j = kl[b]; j < nk[b]; j++)
                for (int64_t x = 0; x < Hkv * D; x++) h[((int64_t)ckk[b] + j) * Hkv * D + x] = NAN;
        kv64[t] = fg_from_f64(h, FG_SHAPE(tk, Hkv, D), FG_F64, FG_CPU);
        free(h);
    }
    fg_tensor *q = fg_to(fg_randn(gen, FG_SHAPE(tq, Hq, D), FG_F64, FG_CPU), FG_CUDA, dt);
    fg_tensor *dout = fg_to(fg_randn(gen, FG_SHAPE(tq, Hq, D), FG_F64, FG_CPU), FG_CUDA, dt);
    fg_tensor *k = fg_to(kv64[0], FG_CUDA, dt), *v = fg_to(kv64[1], FG_CUDA, dt);
    fg_tensor *cu_q = fg_from_f64(cq, FG_SHAPE(N + 1), FG_I32, FG_CUDA), *cu_k = fg_from_f64(ckk, FG_SHAPE(N + 1), FG_I32, FG_CUDA),
              *klen = fg_from_f64(kld, FG_SHAPE(N), FG_I32, FG_CUDA);
    ck_assert_msg(q && dout && k && v && cu_q && cu_k && klen, "inputs: %s", fg_last_error());
    /* reference */
    fg_tensor *ql = fg_detach(q), *kl_ = fg_detach(k), *vl = fg_detach(v);
    fg_set_requires_grad(ql, true), fg_set_requires_grad(kl_, true), fg_set_requires_grad(vl, true);
    fg_generator *gd = fg_generator_new(3);
    const uint64_t seed = fg_generator_seed(gd), offset = fg_generator_offset(gd);
    fg_attention_opts o = {.causal = causal, .backend = FG_ATTN_FLASH, .deterministic = true, .dropout_p = drop,
                           .generator = gd, .cu_seqlens_q = cu_q, .cu_seqlens_k = cu_k, .key_lengths = klen};
    fg_tensor *lref = NULL, *yref = fg_attention_lse(ql, kl_, vl, &o, &lref);
    fg_generator_free(gd);
    ck_assert_msg(yref != NULL, "varlen reference: %s", fg_last_error());
    ck_assert_msg(fg_backward_with_grad(yref, dout) == FG_OK, "varlen reference backward: %s", fg_last_error());
    /* raw */
    fg_tensor *out = fg_full(FG_SHAPE(tq, Hq, D), NAN, dt, FG_CUDA), *lse = fg_full(FG_SHAPE(Hq, tq), NAN, FG_F32, FG_CUDA);
    fg_tensor *dq = fg_full(FG_SHAPE(tq, Hq, D), NAN, dt, FG_CUDA), *dk = fg_full(FG_SHAPE(tk, Hkv, D), NAN, dt, FG_CUDA);
    fg_tensor *dv = fg_transpose(fg_full(FG_SHAPE(Hkv, tk, D), NAN, dt, FG_CUDA), 0, 1); /* head-major packed */
    fg_attention_raw_args a = {.device = FG_CUDA, .dtype = dt, .B = N, .Hq = Hq, .Hkv = Hkv, .Lq = 257, .Lk = 300,
                               .D = D, .cu_seqlens_q = fg_data_ptr(cu_q), .cu_seqlens_k = fg_data_ptr(cu_k),
                               .total_q = tq, .total_k = tk, .key_lengths = fg_data_ptr(klen), .causal = causal,
                               .dropout_p = drop, .dropout_seed = seed, .dropout_offset = offset, .deterministic = true};
    a.q = packed(q, a.q_stride), a.k = packed(k, a.k_stride), a.v = packed(v, a.v_stride), a.out = packed(out, a.out_stride);
    a.lse = fg_data_ptr(lse);
    fg_attention_raw_grads g = {0};
    g.dout = packed(dout, g.dout_stride), g.dq = packed(dq, g.dq_stride), g.dk = packed(dk, g.dk_stride), g.dv = packed(dv, g.dv_stride);
    ck_assert_msg(fg_attention_raw_forward(&a) == FG_OK, "raw varlen forward: %s", fg_last_error());
    ck_assert_msg(fg_attention_raw_backward(&a, &g) == FG_OK, "raw varlen backward: %s", fg_last_error());
    ck_assert_msg(fg_cuda_synchronize() == FG_OK, "sync: %s", fg_last_error());
    ck_exact(out, yref, "varlen out", ci);
    ck_exact(lse, lref, "varlen lse", ci);
    ck_exact(dq, fg_grad(ql), "varlen dq", ci);
    ck_exact(dk, fg_grad(kl_), "varlen dk", ci);
    ck_exact(dv, fg_grad(vl), "varlen dv", ci);
    /* the CPU f64 raw result on host copies (tables in host memory) */
    int32_t hq[N + 1], hk[N + 1];
    for (int b = 0; b <= N; b++) hq[b] = (int32_t)cq[b], hk[b] = (int32_t)ckk[b];
    fg_tensor *q64 = fg_to(q, FG_CPU, FG_F64), *k64 = fg_to(k, FG_CPU, FG_F64), *v64 = fg_to(v, FG_CPU, FG_F64),
              *g64 = fg_to(dout, FG_CPU, FG_F64);
    fg_tensor *o64 = fg_empty(FG_SHAPE(tq, Hq, D), FG_F64, FG_CPU), *l64 = fg_empty(FG_SHAPE(Hq, tq), FG_F64, FG_CPU),
              *dq64 = fg_empty(FG_SHAPE(tq, Hq, D), FG_F64, FG_CPU), *dk64 = fg_empty(FG_SHAPE(tk, Hkv, D), FG_F64, FG_CPU),
              *dv64 = fg_empty(FG_SHAPE(tk, Hkv, D), FG_F64, FG_CPU);
    fg_attention_raw_args h = a;
    h.device = FG_CPU, h.dtype = FG_F64, h.cu_seqlens_q = hq, h.cu_seqlens_k = hk, h.key_lengths = kl;
    h.q = packed(q64, h.q_stride), h.k = packed(k64, h.k_stride), h.v = packed(v64, h.v_stride), h.out = packed(o64, h.out_stride);
    h.lse = fg_data_ptr(l64);
    fg_attention_raw_grads hg = {0};
    hg.dout = packed(g64, hg.dout_stride), hg.dq = packed(dq64, hg.dq_stride), hg.dk = packed(dk64, hg.dk_stride),
    hg.dv = packed(dv64, hg.dv_stride);
    ck_assert_msg(fg_attention_raw_forward(&h) == FG_OK && fg_attention_raw_backward(&h, &hg) == FG_OK, "cpu raw varlen: %s",
                  fg_last_error());
    const double tol = tol_of(dt);
    ck_rel(out, o64, tol, "varlen out vs cpu f64", ci);
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(lse, l64, dt == FG_F32 ? 1e-4 : 5e-2, dt == FG_F32 ? 1e-5 : 1e-2, &r), FG_OK);
    ck_assert_msg(r.allclose, "varlen lse vs cpu f64 (case %d): max abs err %.3g", ci, r.max_abs_err);
    ck_rel(dq, dq64, 2 * tol, "varlen dq vs cpu f64", ci);
    ck_rel(dk, dk64, 2 * tol, "varlen dk vs cpu f64", ci);
    ck_rel(dv, dv64, 2 * tol, "varlen dv vs cpu f64", ci);
}

START_TEST(test_raw_cuda_varlen)
{
    BEGIN;
    static const int64_t dims[] = {64, 128, 40};
    int ci = 0;
    for (int d = 0; d < 3; d++)
        for (int causal = 0; causal < 2; causal++, ci++) {
            fg_scope *sc = fg_scope_begin();
            run_varlen(gen, dims[d], FG_F32, causal, ci == 3 ? 0.2 : 0.0, ci);
            run_varlen(gen, dims[d], FG_BF16, causal, ci == 4 ? 0.1 : 0.0, ci);
            ck_assert_int_eq(fg_scope_end(sc), FG_OK);
        }
    END;
}
END_TEST

/* No rows or no keys: outputs zero (out, the other side's gradients), LSE +inf, strided outputs included. */
START_TEST(test_raw_cuda_empty)
{
    BEGIN;
    const int64_t sizes[3][2] = {{9, 0}, {0, 9}, {0, 0}}; /* (Lq, Lk) */
    for (int s = 0; s < 3; s++) {
        const int64_t B = 2, Hq = 4, Hkv = 2, Lq = sizes[s][0], Lk = sizes[s][1], D = 24;
        fg_tensor *q = as_layout(randn(gen, B, Hq, Lq, D), FG_BF16, FG_CUDA, true);
        fg_tensor *k = as_layout(randn(gen, B, Hkv, Lk, D), FG_BF16, FG_CUDA, false);
        fg_tensor *dout = as_layout(randn(gen, B, Hq, Lq, D), FG_BF16, FG_CUDA, false);
        fg_tensor *out = nan4(B, Hq, Lq, D, FG_BF16, true), *lse = fg_full(FG_SHAPE(B, Hq, Lq), NAN, FG_F32, FG_CUDA);
        fg_tensor *dq = nan4(B, Hq, Lq, D, FG_BF16, true), *dk = nan4(B, Hkv, Lk, D, FG_BF16, true),
                  *dv = nan4(B, Hkv, Lk, D, FG_BF16, false);
        fg_attention_raw_args a = {.device = FG_CUDA, .dtype = FG_BF16, .B = B, .Hq = Hq, .Hkv = Hkv, .Lq = Lq, .Lk = Lk,
                                   .D = D, .causal = s == 0};
        a.q = bhld(q, a.q_stride), a.k = bhld(k, a.k_stride), a.v = bhld(k, a.v_stride), a.out = bhld(out, a.out_stride);
        a.lse = fg_data_ptr(lse);
        fg_attention_raw_grads g = {0};
        g.dout = bhld(dout, g.dout_stride), g.dq = bhld(dq, g.dq_stride), g.dk = bhld(dk, g.dk_stride), g.dv = bhld(dv, g.dv_stride);
        ck_assert_msg(fg_attention_raw_forward(&a) == FG_OK, "empty forward %d: %s", s, fg_last_error());
        ck_assert_msg(fg_attention_raw_backward(&a, &g) == FG_OK, "empty backward %d: %s", s, fg_last_error());
        ck_exact(out, fg_zeros(FG_SHAPE(B, Hq, Lq, D), FG_F32, FG_CPU), "empty out", s);
        ck_exact(lse, fg_full(FG_SHAPE(B, Hq, Lq), INFINITY, FG_F32, FG_CPU), "empty lse", s);
        ck_exact(dq, fg_zeros(FG_SHAPE(B, Hq, Lq, D), FG_F32, FG_CPU), "empty dq", s);
        ck_exact(dk, fg_zeros(FG_SHAPE(B, Hkv, Lk, D), FG_F32, FG_CPU), "empty dk", s);
        ck_exact(dv, fg_zeros(FG_SHAPE(B, Hkv, Lk, D), FG_F32, FG_CPU), "empty dv", s);
    }
    END;
}
END_TEST

/* A non-blocking caller stream (no implicit ordering with the framework's):
 * the same bits, with the framework's scratch and with a workspace. */
START_TEST(test_raw_cuda_stream)
{
#ifdef FG_HAVE_CUDA
    BEGIN;
    cudaStream_t st;
    ck_assert_int_eq(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), cudaSuccess);
    const int64_t B = 2, Hq = 8, Hkv = 2, L = 300, D = 64;
    fg_tensor *q = as_layout(randn(gen, B, Hq, L, D), FG_BF16, FG_CUDA, true),
              *k = as_layout(randn(gen, B, Hkv, L, D), FG_BF16, FG_CUDA, true),
              *v = as_layout(randn(gen, B, Hkv, L, D), FG_BF16, FG_CUDA, true),
              *dout = as_layout(randn(gen, B, Hq, L, D), FG_BF16, FG_CUDA, true);
    /* varlen tables too: the check reads them after waiting for the stream */
    const double cq[3] = {0, 250, 300}, ck[3] = {0, 100, 300};
    fg_tensor *cu_q = fg_from_f64(cq, FG_SHAPE(3), FG_I32, FG_CUDA), *cu_k = fg_from_f64(ck, FG_SHAPE(3), FG_I32, FG_CUDA);
    ck_assert_int_eq(fg_cuda_synchronize(), FG_OK); /* inputs made on the framework's stream */
    fg_tensor *res[3][2][5]; /* run, dense / varlen, out lse dq dk dv */
    for (int run = 0; run < 3; run++) { /* 0: framework stream; 1: st, framework scratch; 2: st, workspace */
        for (int vl = 0; vl < 2; vl++) {
            fg_attention_raw_args a = {.device = FG_CUDA, .dtype = FG_BF16, .B = B, .Hq = Hq, .Hkv = Hkv, .Lq = L, .Lk = L,
                                       .D = D, .causal = true, .dropout_p = 0.1, .dropout_seed = 5, .dropout_offset = 9,
                                       .deterministic = true, .stream = run ? (void *)st : NULL};
            fg_tensor *out = nan4(B, Hq, L, D, FG_BF16, false), *lse = fg_full(FG_SHAPE(B, Hq, L), NAN, FG_F32, FG_CUDA);
            fg_tensor *dq = nan4(B, Hq, L, D, FG_BF16, false), *dk = nan4(B, Hkv, L, D, FG_BF16, false),
                      *dv = nan4(B, Hkv, L, D, FG_BF16, false);
            a.q = bhld(q, a.q_stride), a.k = bhld(k, a.k_stride), a.v = bhld(v, a.v_stride), a.out = bhld(out, a.out_stride);
            a.lse = fg_data_ptr(lse);
            fg_attention_raw_grads g = {0};
            g.dout = bhld(dout, g.dout_stride), g.dq = bhld(dq, g.dq_stride), g.dk = bhld(dk, g.dk_stride),
            g.dv = bhld(dv, g.dv_stride);
            if (vl) { /* batch entry 0's rows as two packed sequences (the batch strides are ignored) */
                a.cu_seqlens_q = fg_data_ptr(cu_q), a.cu_seqlens_k = fg_data_ptr(cu_k), a.total_q = L, a.total_k = L;
            }
            if (run == 2) {
                ck_assert_int_eq(fg_attention_raw_backward_workspace(&a, &g.workspace_bytes), FG_OK);
                g.workspace = fg_data_ptr(workspace(g.workspace_bytes));
            }
            /* the buffers were filled on the framework's stream, which st does not wait for */
            ck_assert_int_eq(fg_cuda_synchronize(), FG_OK);
            ck_assert_msg(fg_attention_raw_forward(&a) == FG_OK, "stream forward %d: %s", run, fg_last_error());
            ck_assert_msg(fg_attention_raw_backward(&a, &g) == FG_OK, "stream backward %d: %s", run, fg_last_error());
            ck_assert_int_eq(cudaStreamSynchronize(st), cudaSuccess);
            ck_assert_int_eq(fg_cuda_synchronize(), FG_OK);
            fg_tensor *r[5] = {out, lse, dq, dk, dv};
            memcpy(res[run][vl], r, sizeof r);
        }
    }
    static const char *names[2][5] = {{"out", "lse", "dq", "dk", "dv"},
                                      {"varlen out", "varlen lse", "varlen dq", "varlen dk", "varlen dv"}};
    for (int run = 1; run < 3; run++)
        for (int vl = 0; vl < 2; vl++)
            for (int i = 0; i < 5; i++) ck_exact(res[run][vl][i], res[0][vl][i], names[vl][i], run);
    ck_assert_int_eq(cudaStreamDestroy(st), cudaSuccess);
    END;
#endif
}
END_TEST

START_TEST(test_raw_cuda_errors)
{
    BEGIN;
    fg_tensor *q = fg_zeros(FG_SHAPE(2, 4, 8, 64), FG_BF16, FG_CUDA), *k = fg_zeros(FG_SHAPE(2, 2, 8, 64), FG_BF16, FG_CUDA);
    fg_tensor *out = fg_zeros(FG_SHAPE(2, 4, 8, 64), FG_BF16, FG_CUDA), *lse = fg_zeros(FG_SHAPE(2, 4, 8), FG_F32, FG_CUDA);
    fg_attention_raw_args good = {.device = FG_CUDA, .dtype = FG_BF16, .B = 2, .Hq = 4, .Hkv = 2, .Lq = 8, .Lk = 8, .D = 64};
    good.q = bhld(q, good.q_stride), good.k = bhld(k, good.k_stride), good.v = bhld(k, good.v_stride);
    good.out = bhld(out, good.out_stride), good.lse = fg_data_ptr(lse);
    ck_assert_msg(fg_attention_raw_forward(&good) == FG_OK, "good: %s", fg_last_error());
    fg_attention_raw_args a = good;
    a.D = 300;
    ck_assert_int_eq(fg_attention_raw_forward(&a), FG_ERR_UNSUPPORTED);
    ck_err(FG_ERR_UNSUPPORTED, "attention_raw", "D = 300");
    a = good, a.dtype = FG_F64;
    ck_assert_int_eq(fg_attention_raw_forward(&a), FG_ERR_DTYPE);
    ck_err(FG_ERR_DTYPE, "attention_raw", "f64");
    a = good, a.Lq = 65535 * 64 + 1, a.q_stride[0] = 0, a.out_stride[0] = 0, a.B = 1; /* rows beyond the grid */
    ck_assert_int_eq(fg_attention_raw_forward(&a), FG_ERR_UNSUPPORTED);
    ck_err(FG_ERR_UNSUPPORTED, "attention_raw", "grid");
    /* a bad device table is found (after a copy to the host) */
    const double bad[3] = {0, 9, 8};
    fg_tensor *cu = fg_from_f64(bad, FG_SHAPE(3), FG_I32, FG_CUDA);
    a = good, a.cu_seqlens_q = fg_data_ptr(cu), a.cu_seqlens_k = fg_data_ptr(cu), a.total_q = 8, a.total_k = 8;
    ck_assert_int_eq(fg_attention_raw_forward(&a), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "cu_seqlens_q[2] = 8", "never decrease");
    /* a workspace below the size asked for */
    fg_attention_raw_grads g = {.dout = good.q, .dq = good.out, .dk = (void *)good.k, .dv = (void *)good.k};
    memcpy(g.dout_stride, good.q_stride, sizeof g.dout_stride), memcpy(g.dq_stride, good.q_stride, sizeof g.dq_stride);
    memcpy(g.dk_stride, good.k_stride, sizeof g.dk_stride), memcpy(g.dv_stride, good.k_stride, sizeof g.dv_stride);
    size_t need = 0;
    ck_assert_int_eq(fg_attention_raw_backward_workspace(&good, &need), FG_OK);
    g.workspace = fg_data_ptr(workspace(need)), g.workspace_bytes = need - 1;
    ck_assert_int_eq(fg_attention_raw_backward(&good, &g), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "attention_raw", "workspace_bytes");
    ck_assert_int_eq(fg_cuda_synchronize(), FG_OK);
    END;
}
END_TEST

static Suite *mk(void)
{
    Suite *s = suite_create("cuda_attention_raw");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_raw_cuda_dense);
    tcase_add_test(tc, test_raw_cuda_varlen);
    tcase_add_test(tc, test_raw_cuda_empty);
    tcase_add_test(tc, test_raw_cuda_stream);
    tcase_add_test(tc, test_raw_cuda_errors);
    suite_add_tcase(s, tc);
    return s;
}

FG_CUDA_TEST_MAIN(mk, "cuda_attention_raw")
