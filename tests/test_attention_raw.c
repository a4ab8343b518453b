/* Suite "attention_raw" (CPU): the raw-pointer entry point
 * (flashgrad/attention_raw.h) on host buffers equals fg_attention with the
 * flash backend and its autograd backward, bit for bit: dense in both layouts
 * (and mixed ones) through strides, causal, GQA / MQA, dropout with the same
 * (seed, offset), rows without keys, empty sizes, varlen with zero-length
 * sequences and key padding, every CPU dtype; the LSE comes back; plain
 * malloc'd buffers leave the memory accounting untouched; bad arguments are
 * clear errors that write nothing. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "testutil.h"
#include <flashgrad/attention.h>
#include <flashgrad/attention_raw.h>

/* a and b (same shape) equal within tol (0: bit for bit), NaN / inf matching. */
static void ck_same(const fg_tensor *a, const fg_tensor *b, double tol, const char *what, int c)
{
    ck_assert_msg(a && b, "%s (case %d): NULL: %s", what, c, fg_last_error());
    fg_compare_result r;
    ck_assert_msg(fg_compare(a, b, tol, 0, &r) == FG_OK, "%s (case %d): compare: %s", what, c, fg_last_error());
    ck_assert_msg(r.n_mismatch == 0, "%s (case %d): %lld mismatches, max abs err %.3g at %lld", what, c,
                  (long long)r.n_mismatch, r.max_abs_err, (long long)r.worst_index);
}

/* Pointer and (batch, head, row) strides of a logical (B, H, L, D) tensor. */
static void *bhld(fg_tensor *t, int64_t st[3])
{
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(fg_strides(t)[3], 1);
    for (int d = 0; d < 3; d++) st[d] = fg_strides(t)[d];
    return fg_data_ptr(t);
}

/* The same for a packed (total, H, D) tensor (the batch stride is ignored: 0). */
static void *packed(fg_tensor *t, int64_t st[3])
{
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(fg_strides(t)[2], 1);
    st[0] = 0, st[1] = fg_strides(t)[1], st[2] = fg_strides(t)[0];
    return fg_data_ptr(t);
}

/* A (B, H, L, D) tensor of dtype dt, stored (B, H, L, D) or (B, L, H, D) (blhd). */
static fg_tensor *make4(fg_generator *g, int64_t B, int64_t H, int64_t L, int64_t D, fg_dtype dt, bool blhd)
{
    fg_tensor *s = blhd ? fg_uniform(g, -1, 1, FG_SHAPE(B, L, H, D), dt, FG_CPU) : fg_uniform(g, -1, 1, FG_SHAPE(B, H, L, D), dt, FG_CPU);
    ck_assert_ptr_nonnull(s);
    return blhd ? fg_transpose(s, 1, 2) : s;
}

/* An uninitialised output like make4 (filled with a sentinel: every element must be written). */
static fg_tensor *out4(int64_t B, int64_t H, int64_t L, int64_t D, fg_dtype dt, bool blhd)
{
    fg_tensor *s = blhd ? fg_full(FG_SHAPE(B, L, H, D), 12345.0, dt, FG_CPU) : fg_full(FG_SHAPE(B, H, L, D), 12345.0, dt, FG_CPU);
    ck_assert_ptr_nonnull(s);
    return blhd ? fg_transpose(s, 1, 2) : s;
}

/* A leaf copy of x (same values and layout) requiring grad: what fg_attention gets. */
static fg_tensor *leaf_of(fg_tensor *x)
{
    fg_tensor *t = fg_detach(fg_clone(x));
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(fg_set_requires_grad(t, true), FG_OK);
    return t;
}

static fg_tensor *grad_or_zeros(fg_tensor *t) { return fg_grad(t) ? fg_grad(t) : fg_zeros_like(t); }

typedef struct {
    int64_t B, Hq, Hkv, Lq, Lk, D;
    bool causal, in_blhd, out_blhd;
    double drop;
} dcase;

static const dcase DCASES[] = {
    {2, 4, 2, 7, 11, 5, false, false, true, 0},  {2, 4, 2, 11, 7, 5, true, true, false, 0}, /* rows without keys */
    {1, 6, 2, 19, 19, 8, true, true, true, 0.2}, {3, 3, 1, 16, 33, 3, false, false, false, 0.3},
    {1, 2, 2, 40, 23, 16, true, false, true, 0.1}, {2, 2, 2, 5, 0, 4, false, false, false, 0}, /* no keys */
    {0, 2, 1, 3, 3, 4, false, true, false, 0},   {1, 2, 1, 0, 5, 4, true, false, true, 0},   /* B = 0, Lq = 0 */
};

/* Raw forward + backward vs fg_attention_lse + fg_backward on the same values. */
static void run_dense(fg_generator *g, const dcase *c, fg_dtype dt, int ci)
{
    fg_tensor *q = make4(g, c->B, c->Hq, c->Lq, c->D, dt, c->in_blhd), *k = make4(g, c->B, c->Hkv, c->Lk, c->D, dt, c->in_blhd),
              *v = make4(g, c->B, c->Hkv, c->Lk, c->D, dt, c->in_blhd), *dout = make4(g, c->B, c->Hq, c->Lq, c->D, dt, c->in_blhd);
    /* reference */
    fg_tensor *ql = leaf_of(q), *kl = leaf_of(k), *vl = leaf_of(v);
    fg_generator *gd = fg_generator_new(1000 + (uint64_t)ci);
    fg_generator_set_state(gd, 77 + (uint64_t)ci, 5 + (uint64_t)ci);
    const uint64_t seed = fg_generator_seed(gd), offset = fg_generator_offset(gd);
    fg_attention_opts o = {.causal = c->causal, .backend = FG_ATTN_FLASH, .dropout_p = c->drop, .generator = gd};
    fg_tensor *lref = NULL, *yref = fg_attention_lse(ql, kl, vl, &o, &lref);
    fg_generator_free(gd);
    ck_assert_msg(yref != NULL, "reference (case %d): %s", ci, fg_last_error());
    ck_assert_msg(fg_backward_with_grad(yref, dout) == FG_OK, "reference backward (case %d): %s", ci, fg_last_error());
    /* raw */
    fg_tensor *out = out4(c->B, c->Hq, c->Lq, c->D, dt, c->out_blhd);
    fg_tensor *lse = fg_full(FG_SHAPE(c->B, c->Hq, c->Lq), 12345.0, dt == FG_F64 ? FG_F64 : FG_F32, FG_CPU);
    fg_attention_raw_args a = {.device = FG_CPU, .dtype = dt, .B = c->B, .Hq = c->Hq, .Hkv = c->Hkv, .Lq = c->Lq,
                               .Lk = c->Lk, .D = c->D, .causal = c->causal, .dropout_p = c->drop,
                               .dropout_seed = seed, .dropout_offset = offset};
    a.q = bhld(q, a.q_stride), a.k = bhld(k, a.k_stride), a.v = bhld(v, a.v_stride), a.out = bhld(out, a.out_stride);
    a.lse = fg_data_ptr(lse);
    ck_assert_msg(fg_attention_raw_forward(&a) == FG_OK, "raw forward (case %d): %s", ci, fg_last_error());
    ck_same(out, yref, 0, "out", ci);
    ck_same(lse, lref, 0, "lse", ci);
    fg_attention_raw_grads gr = {0};
    fg_tensor *dq = out4(c->B, c->Hq, c->Lq, c->D, dt, c->out_blhd), *dk = out4(c->B, c->Hkv, c->Lk, c->D, dt, c->out_blhd),
              *dv = out4(c->B, c->Hkv, c->Lk, c->D, dt, !c->out_blhd);
    gr.dout = bhld(dout, gr.dout_stride), gr.dq = bhld(dq, gr.dq_stride), gr.dk = bhld(dk, gr.dk_stride),
    gr.dv = bhld(dv, gr.dv_stride);
    ck_assert_msg(fg_attention_raw_backward(&a, &gr) == FG_OK, "raw backward (case %d): %s", ci, fg_last_error());
    ck_same(dq, grad_or_zeros(ql), 0, "dq", ci);
    ck_same(dk, grad_or_zeros(kl), 0, "dk", ci);
    ck_same(dv, grad_or_zeros(vl), 0, "dv", ci);
    size_t ws = 1;
    ck_assert_int_eq(fg_attention_raw_backward_workspace(&a, &ws), FG_OK);
    ck_assert_int_eq(ws, 0); /* the CPU needs none */
    if (c->drop > 0) { /* the mask is the caller's stream: another offset drops other elements */
        a.dropout_offset = offset + 1;
        ck_assert_int_eq(fg_attention_raw_forward(&a), FG_OK);
        fg_compare_result r;
        ck_assert_int_eq(fg_compare(out, yref, 1e-6, 0, &r), FG_OK);
        ck_assert_msg(r.n_mismatch > 0, "case %d: a different dropout offset gave the same output", ci);
    }
}

START_TEST(test_raw_dense_f64)
{
    BEGIN;
    for (size_t i = 0; i < sizeof DCASES / sizeof *DCASES; i++) {
        fg_scope *sc = fg_scope_begin();
        run_dense(gen, &DCASES[i], FG_F64, (int)i);
        ck_assert_int_eq(fg_scope_end(sc), FG_OK);
    }
    END;
}
END_TEST

START_TEST(test_raw_dense_low_precision)
{
    BEGIN;
    static const fg_dtype dts[] = {FG_F32, FG_BF16, FG_F16};
    for (int d = 0; d < 3; d++)
        for (size_t i = 0; i < sizeof DCASES / sizeof *DCASES; i += 2) {
            fg_scope *sc = fg_scope_begin();
            run_dense(gen, &DCASES[i + (size_t)d % 2], dts[d], (int)i);
            ck_assert_int_eq(fg_scope_end(sc), FG_OK);
        }
    END;
}
END_TEST

/* Dense key padding: keys past key_lengths hold NaN and are never read. */
START_TEST(test_raw_key_padding)
{
    BEGIN;
    const int64_t B = 3, Hq = 4, Hkv = 2, Lq = 6, Lk = 9, D = 4;
    const int32_t kl[3] = {9, 4, 0};
    for (int causal = 0; causal < 2; causal++) {
        fg_tensor *q = make4(gen, B, Hq, Lq, D, FG_F64, false), *dout = make4(gen, B, Hq, Lq, D, FG_F64, false);
        fg_tensor *kv[2];
        for (int t = 0; t < 2; t++) {
            double h[3 * 2 * 9 * 4];
            read_f64(fg_uniform(gen, -1, 1, FG_SHAPE(B, Hkv, Lk, D), FG_F64, FG_CPU), h, B * Hkv * Lk * D);
            for (int64_t b = 0; b < B; b++)
                for (int64_t x = 0; x < Hkv; x++)
                    for (int64_t j = kl[b]; j < Lk; j++)
                        for (int64_t d = 0; d < D; d++) h[((b * Hkv + x) * Lk + j) * D + d] = NAN;
            kv[t] = t64(h, 4, (const int64_t[]){B, Hkv, Lk, D});
        }
        fg_tensor *ql = leaf_of(q), *kl_ = leaf_of(kv[0]), *vl = leaf_of(kv[1]);
        const double kld[3] = {kl[0], kl[1], kl[2]};
        fg_attention_opts o = {.causal = causal, .backend = FG_ATTN_FLASH,
                               .key_lengths = fg_from_f64(kld, FG_SHAPE(3), FG_I32, FG_CPU)};
        fg_tensor *lref = NULL, *yref = fg_attention_lse(ql, kl_, vl, &o, &lref);
        ck_assert_msg(yref != NULL, "%s", fg_last_error());
        ck_assert_int_eq(fg_backward_with_grad(yref, dout), FG_OK);
        fg_tensor *out = out4(B, Hq, Lq, D, FG_F64, true), *lse = fg_empty(FG_SHAPE(B, Hq, Lq), FG_F64, FG_CPU);
        fg_tensor *dq = out4(B, Hq, Lq, D, FG_F64, false), *dk = out4(B, Hkv, Lk, D, FG_F64, true), *dv = out4(B, Hkv, Lk, D, FG_F64, false);
        fg_attention_raw_args a = {.device = FG_CPU, .dtype = FG_F64, .B = B, .Hq = Hq, .Hkv = Hkv, .Lq = Lq, .Lk = Lk,
                                   .D = D, .causal = causal, .key_lengths = kl};
        a.q = bhld(q, a.q_stride), a.k = bhld(kv[0], a.k_stride), a.v = bhld(kv[1], a.v_stride);
        a.out = bhld(out, a.out_stride), a.lse = fg_data_ptr(lse);
        fg_attention_raw_grads g = {0};
        g.dout = bhld(dout, g.dout_stride), g.dq = bhld(dq, g.dq_stride), g.dk = bhld(dk, g.dk_stride), g.dv = bhld(dv, g.dv_stride);
        ck_assert_msg(fg_attention_raw_forward(&a) == FG_OK && fg_attention_raw_backward(&a, &g) == FG_OK, "%s", fg_last_error());
        ck_same(out, yref, 0, "padded out", causal);
        ck_same(lse, lref, 0, "padded lse", causal);
        ck_same(dq, fg_grad(ql), 0, "padded dq", causal);
        ck_same(dk, fg_grad(kl_), 0, "padded dk", causal);
        ck_same(dv, fg_grad(vl), 0, "padded dv", causal);
        ck_same(fg_narrow(dk, 0, 2, 1), fg_zeros(FG_SHAPE(1, Hkv, Lk, D), FG_F64, FG_CPU), 0, "dk without keys", causal);
    }
    END;
}
END_TEST

/* varlen: packed rows, zero-length sequences, key padding, causal, GQA, dropout. */
typedef struct {
    int n;
    int32_t lq[6], lk[6], kl[6]; /* kl < 0: no key padding */
    int64_t Hq, Hkv, D;
    bool causal;
    double drop;
} vcase;

static const vcase VCASES[] = {
    {5, {5, 0, 13, 1, 7}, {7, 3, 13, 0, 2}, {-1}, 4, 2, 8, false, 0},
    {5, {5, 0, 13, 1, 7}, {7, 3, 13, 0, 2}, {-1}, 4, 2, 8, true, 0.25},
    {4, {6, 0, 11, 3}, {9, 5, 11, 1}, {4, 5, 0, 1}, 4, 2, 6, true, 0},
    {4, {6, 0, 11, 3}, {9, 5, 11, 1}, {4, 5, 0, 1}, 3, 1, 5, false, 0.2},
    {2, {0, 0}, {4, 0}, {-1}, 2, 1, 3, false, 0}, /* no rows at all */
    {1, {17}, {33}, {20}, 2, 2, 16, true, 0.1},
};

static void run_varlen(fg_generator *g, const vcase *c, fg_dtype dt, int ci)
{
    int32_t cq[7] = {0}, ck[7] = {0}, kl[6];
    double cqd[7] = {0}, ckd[7] = {0}, kld[6];
    int32_t mq = 0, mk = 0;
    const bool padded = c->kl[0] >= 0;
    for (int b = 0; b < c->n; b++) {
        cq[b + 1] = cq[b] + c->lq[b], ck[b + 1] = ck[b] + c->lk[b], kl[b] = c->kl[b];
        cqd[b + 1] = cq[b + 1], ckd[b + 1] = ck[b + 1], kld[b] = kl[b];
        if (c->lq[b] > mq) mq = c->lq[b];
        if (c->lk[b] > mk) mk = c->lk[b];
    }
    const int64_t tq = cq[c->n], tk = ck[c->n];
    fg_tensor *q = fg_uniform(g, -1, 1, FG_SHAPE(tq, c->Hq, c->D), dt, FG_CPU);
    fg_tensor *dout = fg_uniform(g, -1, 1, FG_SHAPE(tq, c->Hq, c->D), dt, FG_CPU);
    /* k stored head-major (Hkv, total_k, D): a packed view with other strides */
    fg_tensor *k = fg_transpose(fg_uniform(g, -1, 1, FG_SHAPE(c->Hkv, tk, c->D), dt, FG_CPU), 0, 1);
    fg_tensor *v = fg_uniform(g, -1, 1, FG_SHAPE(tk, c->Hkv, c->D), dt, FG_CPU);
    fg_tensor *ql = leaf_of(q), *kl_ = leaf_of(k), *vl = leaf_of(v);
    fg_generator *gd = fg_generator_new(99);
    const uint64_t seed = fg_generator_seed(gd), offset = fg_generator_offset(gd);
    fg_attention_opts o = {.causal = c->causal, .backend = FG_ATTN_FLASH, .dropout_p = c->drop, .generator = gd,
                           .cu_seqlens_q = fg_from_f64(cqd, FG_SHAPE(c->n + 1), FG_I32, FG_CPU),
                           .cu_seqlens_k = fg_from_f64(ckd, FG_SHAPE(c->n + 1), FG_I32, FG_CPU),
                           .key_lengths = padded ? fg_from_f64(kld, FG_SHAPE(c->n), FG_I32, FG_CPU) : NULL};
    fg_tensor *lref = NULL, *yref = fg_attention_lse(ql, kl_, vl, &o, &lref);
    fg_generator_free(gd);
    ck_assert_msg(yref != NULL, "reference (case %d): %s", ci, fg_last_error());
    ck_assert_msg(fg_backward_with_grad(yref, dout) == FG_OK, "reference backward: %s", fg_last_error());
    const fg_dtype ldt = dt == FG_F64 ? FG_F64 : FG_F32;
    fg_tensor *out = fg_full(FG_SHAPE(tq, c->Hq, c->D), 12345.0, dt, FG_CPU), *lse = fg_full(FG_SHAPE(c->Hq, tq), 12345.0, ldt, FG_CPU);
    fg_tensor *dq = fg_full(FG_SHAPE(tq, c->Hq, c->D), 12345.0, dt, FG_CPU);
    fg_tensor *dk = fg_transpose(fg_full(FG_SHAPE(c->Hkv, tk, c->D), 12345.0, dt, FG_CPU), 0, 1);
    fg_tensor *dv = fg_full(FG_SHAPE(tk, c->Hkv, c->D), 12345.0, dt, FG_CPU);
    /* B sequences; Lq / Lk bounds above the longest lengths are fine */
    fg_attention_raw_args a = {.device = FG_CPU, .dtype = dt, .B = c->n, .Hq = c->Hq, .Hkv = c->Hkv, .Lq = mq + (ci % 2),
                               .Lk = mk + 3, .D = c->D, .cu_seqlens_q = cq, .cu_seqlens_k = ck, .total_q = tq,
                               .total_k = tk, .key_lengths = padded ? kl : NULL, .causal = c->causal,
                               .dropout_p = c->drop, .dropout_seed = seed, .dropout_offset = offset};
    a.q = packed(q, a.q_stride), a.k = packed(k, a.k_stride), a.v = packed(v, a.v_stride), a.out = packed(out, a.out_stride);
    a.lse = fg_data_ptr(lse);
    a.q_stride[0] = 12345; /* ignored when varlen */
    fg_attention_raw_grads gr = {0};
    gr.dout = packed(dout, gr.dout_stride), gr.dq = packed(dq, gr.dq_stride), gr.dk = packed(dk, gr.dk_stride),
    gr.dv = packed(dv, gr.dv_stride);
    ck_assert_msg(fg_attention_raw_forward(&a) == FG_OK, "raw varlen forward (case %d): %s", ci, fg_last_error());
    ck_assert_msg(fg_attention_raw_backward(&a, &gr) == FG_OK, "raw varlen backward (case %d): %s", ci, fg_last_error());
    ck_same(out, yref, 0, "varlen out", ci);
    ck_same(lse, lref, 0, "varlen lse", ci);
    ck_same(dq, grad_or_zeros(ql), 0, "varlen dq", ci);
    ck_same(dk, grad_or_zeros(kl_), 0, "varlen dk", ci);
    ck_same(dv, grad_or_zeros(vl), 0, "varlen dv", ci);
}

START_TEST(test_raw_varlen)
{
    BEGIN;
    for (size_t i = 0; i < sizeof VCASES / sizeof *VCASES; i++) {
        fg_scope *sc = fg_scope_begin();
        run_varlen(gen, &VCASES[i], FG_F64, (int)i);
        run_varlen(gen, &VCASES[i], i % 2 ? FG_BF16 : FG_F32, (int)i);
        ck_assert_int_eq(fg_scope_end(sc), FG_OK);
    }
    END;
}
END_TEST

/* Plain malloc'd host buffers: no framework memory is used, the memory
 * accounting does not move, and the results equal fg_attention's. */
START_TEST(test_raw_host_buffers)
{
    BEGIN;
    enum { B = 2, H = 3, L = 10, D = 6, N = B * H * L * D };
    float *x[4], *out = malloc(sizeof(float) * N), *lse = malloc(sizeof(float) * B * H * L), *dx[3];
    for (int t = 0; t < 4; t++) {
        x[t] = malloc(sizeof(float) * N);
        for (int i = 0; i < N; i++) x[t][i] = (float)sin(0.37 * i + t);
    }
    for (int t = 0; t < 3; t++) dx[t] = malloc(sizeof(float) * N);
    const int64_t st[3] = {H * L * D, L * D, D};
    fg_attention_raw_args a = {.device = FG_CPU, .dtype = FG_F32, .B = B, .Hq = H, .Hkv = H, .Lq = L, .Lk = L, .D = D,
                               .q = x[0], .k = x[1], .v = x[2], .out = out, .lse = lse, .causal = true, .scale = 0.3};
    memcpy(a.q_stride, st, sizeof st), memcpy(a.k_stride, st, sizeof st), memcpy(a.v_stride, st, sizeof st);
    memcpy(a.out_stride, st, sizeof st);
    fg_attention_raw_grads g = {.dout = x[3], .dq = dx[0], .dk = dx[1], .dv = dx[2]};
    memcpy(g.dout_stride, st, sizeof st), memcpy(g.dq_stride, st, sizeof st), memcpy(g.dk_stride, st, sizeof st);
    memcpy(g.dv_stride, st, sizeof st);
    fg_memory_stats m0, m1;
    fg_get_memory_stats(&m0);
    ck_assert_int_eq(fg_attention_raw_forward(&a), FG_OK);
    ck_assert_int_eq(fg_attention_raw_backward(&a, &g), FG_OK);
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_tensors, m0.live_tensors);
    ck_assert_int_eq(m1.live_storages, m0.live_storages);
    ck_assert_int_eq(m1.live_bytes[FG_CPU], m0.live_bytes[FG_CPU]);
    ck_assert_int_eq(m1.peak_bytes[FG_CPU], m0.peak_bytes[FG_CPU]);
    /* the reference */
    fg_tensor *in[4];
    for (int t = 0; t < 4; t++) in[t] = fg_from_f32(x[t], FG_SHAPE(B, H, L, D), FG_F32, FG_CPU);
    for (int t = 0; t < 3; t++) fg_set_requires_grad(in[t], true);
    fg_attention_opts o = {.causal = true, .scale = 0.3, .backend = FG_ATTN_FLASH};
    fg_tensor *lref = NULL, *yref = fg_attention_lse(in[0], in[1], in[2], &o, &lref);
    ck_assert_int_eq(fg_backward_with_grad(yref, in[3]), FG_OK);
    ck_same(fg_from_f32(out, FG_SHAPE(B, H, L, D), FG_F32, FG_CPU), yref, 0, "host out", 0);
    ck_same(fg_from_f32(lse, FG_SHAPE(B, H, L), FG_F32, FG_CPU), lref, 0, "host lse", 0);
    for (int t = 0; t < 3; t++) ck_same(fg_from_f32(dx[t], FG_SHAPE(B, H, L, D), FG_F32, FG_CPU), fg_grad(in[t]), 0, "host grad", t);
    for (int t = 0; t < 4; t++) free(x[t]);
    for (int t = 0; t < 3; t++) free(dx[t]);
    free(out);
    free(lse);
    END;
}
END_TEST

/* A valid small dense f32 call on static buffers, for the error cases. */
/* (sized for the varlen variant too: q (7, 4, 8), k (5, 2, 8), LSE (4, 7)) */
static float Q[256], K[2 * 2 * 5 * 8], O[256], LSE[32], G[256], DQ[256], DK[2 * 2 * 5 * 8];
static fg_attention_raw_args good(void)
{
    fg_attention_raw_args a = {.device = FG_CPU, .dtype = FG_F32, .B = 2, .Hq = 4, .Hkv = 2, .Lq = 3, .Lk = 5, .D = 8,
                               .q = Q, .k = K, .v = K, .out = O, .lse = LSE,
                               .q_stride = {96, 24, 8}, .k_stride = {80, 40, 8}, .v_stride = {80, 40, 8},
                               .out_stride = {96, 24, 8}};
    return a;
}

static void ck_fails(const fg_attention_raw_args *a, fg_status want, const char *n1, const char *n2)
{
    for (int i = 0; i < (int)(sizeof O / sizeof *O); i++) O[i] = 7.0f;
    fg_clear_error();
    ck_assert_int_eq(fg_attention_raw_forward(a), want);
    ck_err(want, "attention_raw", n1);
    if (n2) ck_err(want, n2, NULL);
    for (int i = 0; i < (int)(sizeof O / sizeof *O); i++) ck_assert_msg(O[i] == 7.0f, "out written by a failing call");
}

START_TEST(test_raw_errors)
{
    BEGIN;
    fg_attention_raw_args a = good();
    ck_assert_int_eq(fg_attention_raw_forward(&a), FG_OK);
    ck_fails(NULL, FG_ERR_NULL, "args", NULL);
    a.device = (fg_device)5;
    ck_fails(&a, FG_ERR_DEVICE, "device 5", NULL);
    a = good(), a.device = FG_CUDA;
    if (!fg_cuda_compiled())
        ck_fails(&a, FG_ERR_UNSUPPORTED, "no CUDA backend", NULL);
    else if (!fg_cuda_available())
        ck_fails(&a, FG_ERR_DEVICE, "no usable CUDA GPU", NULL);
    else { /* a GPU: check the CUDA-only limits instead */
        a.D = 300;
        ck_fails(&a, FG_ERR_UNSUPPORTED, "1..256", "D = 300");
        a.D = 8, a.dtype = FG_F64;
        ck_fails(&a, FG_ERR_DTYPE, "f64", NULL);
    }
    a = good(), a.dtype = FG_I32;
    ck_fails(&a, FG_ERR_DTYPE, "i32", NULL);
    a.dtype = (fg_dtype)99;
    ck_fails(&a, FG_ERR_DTYPE, "99", NULL);
    a = good(), a.Lk = -1;
    ck_fails(&a, FG_ERR_SHAPE, "negative", "Lk = -1");
    a = good(), a.Hq = 6, a.Hkv = 4;
    ck_fails(&a, FG_ERR_SHAPE, "Hq = 6", "Hkv = 4");
    a.Hkv = 0;
    ck_fails(&a, FG_ERR_SHAPE, "Hkv = 0", NULL);
    a = good(), a.B = (int64_t)1 << 40, a.Lq = (int64_t)1 << 30;
    ck_fails(&a, FG_ERR_OVERFLOW, "overflow", NULL);
    a = good(), a.dropout_p = 1.0;
    ck_fails(&a, FG_ERR_INVALID, "dropout_p = 1", NULL);
    a.dropout_p = NAN;
    ck_fails(&a, FG_ERR_INVALID, "dropout_p", NULL);
    a.dropout_p = -0.1;
    ck_fails(&a, FG_ERR_INVALID, "dropout_p", NULL);
    a = good(), a.scale = INFINITY;
    ck_fails(&a, FG_ERR_INVALID, "scale", NULL);
    a = good(), a.q = NULL;
    ck_fails(&a, FG_ERR_NULL, "q is NULL", "B = 2");
    a = good(), a.lse = NULL;
    ck_fails(&a, FG_ERR_NULL, "lse is NULL", NULL);
    a = good(), a.B = 0; /* NULL buffers are fine when empty */
    a.q = a.k = a.v = NULL, a.out = a.lse = NULL;
    ck_assert_int_eq(fg_attention_raw_forward(&a), FG_OK);
    /* varlen tables: q (7, 4, 8) packed, k (5, 2, 8) */
    int32_t cq[3] = {0, 3, 7}, ck[3] = {0, 5, 5};
    a = good(), a.cu_seqlens_q = cq, a.cu_seqlens_k = ck, a.total_q = 7, a.total_k = 5, a.Lq = 4;
    a.q_stride[0] = a.k_stride[0] = a.v_stride[0] = a.out_stride[0] = 0;
    a.q_stride[1] = a.out_stride[1] = 8, a.q_stride[2] = a.out_stride[2] = 32, a.k_stride[1] = a.v_stride[1] = 8,
    a.k_stride[2] = a.v_stride[2] = 16;
    ck_assert_msg(fg_attention_raw_forward(&a) == FG_OK, "good varlen: %s", fg_last_error());
    fg_attention_raw_args b = a;
    b.cu_seqlens_k = NULL;
    ck_fails(&b, FG_ERR_INVALID, "cu_seqlens_k", NULL);
    b = a, b.total_q = -1;
    ck_fails(&b, FG_ERR_SHAPE, "total_q = -1", NULL);
    const int32_t bad[][3] = {{1, 3, 7}, {0, 4, 3}, {0, 3, 6}};
    const char *why[] = {"start at 0", "never decrease", "total_q = 7"};
    for (int i = 0; i < 3; i++) {
        b = a, b.cu_seqlens_q = bad[i];
        ck_fails(&b, FG_ERR_INVALID, "cu_seqlens_q", why[i]);
    }
    b = a, b.Lq = 3; /* the second sequence has 4 rows */
    ck_fails(&b, FG_ERR_INVALID, "Lq = 3", "4 query rows");
    const int32_t kl_bad[2] = {6, 0}; /* sequence 0 has 5 keys */
    b = a, b.key_lengths = kl_bad;
    ck_fails(&b, FG_ERR_INVALID, "key_lengths[0] = 6", "[0, 5]");
    const int32_t kl_neg[2] = {5, -1};
    b = good(), b.key_lengths = kl_neg;
    ck_fails(&b, FG_ERR_INVALID, "key_lengths[1] = -1", NULL);
    /* backward */
    a = good();
    fg_attention_raw_grads g = {.dout = G, .dq = DQ, .dk = DK, .dv = DK, .dout_stride = {96, 24, 8}, .dq_stride = {96, 24, 8},
                                .dk_stride = {80, 40, 8}, .dv_stride = {80, 40, 8}};
    ck_assert_msg(fg_attention_raw_backward(&a, &g) == FG_OK, "good backward: %s", fg_last_error());
    ck_assert_int_eq(fg_attention_raw_backward(&a, NULL), FG_ERR_NULL);
    ck_err(FG_ERR_NULL, "attention_raw", "grads");
    g.dq = NULL;
    ck_assert_int_eq(fg_attention_raw_backward(&a, &g), FG_ERR_NULL);
    ck_err(FG_ERR_NULL, "attention_raw", "dq is NULL");
    a.Hq = 3;
    ck_assert_int_eq(fg_attention_raw_backward(&a, &g), FG_ERR_SHAPE);
    ck_err(FG_ERR_SHAPE, "attention_raw", "Hq = 3");
    ck_assert_int_eq(fg_attention_raw_backward_workspace(&a, NULL), FG_ERR_NULL);
    ck_err(FG_ERR_NULL, "attention_raw", "bytes");
    size_t ws = 5;
    ck_assert_int_eq(fg_attention_raw_backward_workspace(&a, &ws), FG_ERR_SHAPE);
    ck_assert_int_eq(ws, 0);
    END;
}
END_TEST

static Suite *raw_suite(void)
{
    Suite *s = suite_create("attention_raw");
    TCase *tc = tcase_create("attention_raw");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_raw_dense_f64);
    tcase_add_test(tc, test_raw_dense_low_precision);
    tcase_add_test(tc, test_raw_key_padding);
    tcase_add_test(tc, test_raw_varlen);
    tcase_add_test(tc, test_raw_host_buffers);
    tcase_add_test(tc, test_raw_errors);
    suite_add_tcase(s, tc);
    return s;
}

FG_TEST_MAIN(raw_suite)
