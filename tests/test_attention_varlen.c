/* Suite "attention_varlen" (CPU): packed variable-length batches
 * (cu_seqlens) and key padding (key_lengths). Every sequence of a varlen call
 * equals the dense call on that sequence alone (out, LSE, dq, dk, dv; zero-
 * length sequences included), flash and math agree with dropout, GQA, causal
 * and padding combined, the flash backward passes finite differences, padded
 * keys are never read (NaN there changes nothing) and get zero gradients, and
 * bad sequence tables are clear errors. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "testutil.h"
#include <flashgrad/attention.h>

typedef struct {
    int n;
    int64_t lq[6], lk[6];
    int64_t Hq, Hkv, D;
} vcase;

static int64_t total(const int64_t *len, int n)
{
    int64_t t = 0;
    for (int b = 0; b < n; b++) t += len[b];
    return t;
}

/* Offsets (n + 1) of the lengths as a 1-d tensor of dtype dt. */
static fg_tensor *offsets(const int64_t *len, int n, fg_dtype dt)
{
    double cu[8] = {0};
    for (int b = 0; b < n; b++) cu[b + 1] = cu[b] + (double)len[b];
    fg_tensor *t = fg_from_f64(cu, FG_SHAPE(n + 1), dt, FG_CPU);
    ck_assert_ptr_nonnull(t);
    return t;
}

static fg_tensor *leaf(fg_tensor *t)
{
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(fg_set_requires_grad(t, true), FG_OK);
    return t;
}

/* a and b equal within tol (same numel; compared as flat values). */
static void ck_close_t(fg_tensor *a, fg_tensor *b, double tol, const char *what, int seq)
{
    ck_assert_msg(a && b, "%s: %s", what, fg_last_error());
    fg_compare_result r;
    fg_tensor *fa = fg_reshape(fg_contiguous(a), FG_SHAPE(fg_numel(a))), *fb = fg_reshape(fg_contiguous(b), FG_SHAPE(fg_numel(b)));
    ck_assert_int_eq(fg_compare(fa, fb, tol, tol, &r), FG_OK);
    ck_assert_msg(r.allclose && r.n_mismatch == 0, "%s (sequence %d): max abs err %.3g", what, seq, r.max_abs_err);
}

static void ck_zero(fg_tensor *t, const char *what, int seq)
{
    ck_close_t(t, fg_zeros_like(t), 0, what, seq);
}

/* Packed rows [r0, r0 + n) of x (total, H, D) as a dense (1, H, n, D) leaf. */
static fg_tensor *alone(fg_tensor *x, int64_t r0, int64_t n)
{
    bool prev = fg_set_grad_enabled(false);
    fg_tensor *t = fg_contiguous(fg_unsqueeze(fg_transpose(fg_narrow(x, 0, r0, n), 0, 1), 0));
    fg_set_grad_enabled(prev);
    return leaf(t);
}

/* (1, H, n, D) -> (n, H, D), to compare with packed rows. */
static fg_tensor *packed_rows(fg_tensor *t) { return fg_transpose(fg_squeeze(t, 0), 0, 1); }

static fg_tensor *grad_of(fg_tensor *t)
{
    fg_tensor *g = fg_grad(t);
    return g ? fg_clone(g) : fg_zeros_like(t);
}

/* varlen call == each sequence alone, for the flash and the math backend. */
static void check_alone(fg_generator *g, const vcase *c, bool causal, fg_attn_backend be, fg_dtype cu_dt)
{
    const int64_t tq = total(c->lq, c->n), tk = total(c->lk, c->n);
    fg_tensor *q = leaf(fg_uniform(g, -1, 1, FG_SHAPE(tq, c->Hq, c->D), FG_F64, FG_CPU));
    fg_tensor *k = leaf(fg_uniform(g, -1, 1, FG_SHAPE(tk, c->Hkv, c->D), FG_F64, FG_CPU));
    fg_tensor *v = leaf(fg_uniform(g, -1, 1, FG_SHAPE(tk, c->Hkv, c->D), FG_F64, FG_CPU));
    fg_tensor *dout = fg_uniform(g, -1, 1, FG_SHAPE(tq, c->Hq, c->D), FG_F64, FG_CPU);
    fg_attention_opts o = {.causal = causal, .backend = be, .cu_seqlens_q = offsets(c->lq, c->n, cu_dt),
                           .cu_seqlens_k = offsets(c->lk, c->n, cu_dt)};
    fg_tensor *lse = NULL, *out = fg_attention_lse(q, k, v, &o, &lse);
    ck_assert_msg(out != NULL, "varlen: %s", fg_last_error());
    ck_shape(out, 3, (const int64_t[]){tq, c->Hq, c->D});
    ck_shape(lse, 2, (const int64_t[]){c->Hq, tq});
    ck_assert_msg(fg_backward_with_grad(out, dout) == FG_OK, "varlen backward: %s", fg_last_error());
    fg_tensor *dq = grad_of(q), *dk = grad_of(k), *dv = grad_of(v);
    int64_t q0 = 0, k0 = 0;
    for (int b = 0; b < c->n; b++) {
        const int64_t lq = c->lq[b], lk = c->lk[b];
        if (lq == 0) { /* no query reads these keys */
            ck_zero(fg_narrow(dk, 0, k0, lk), "dk of a sequence without queries", b);
            ck_zero(fg_narrow(dv, 0, k0, lk), "dv of a sequence without queries", b);
        } else {
            fg_tensor *qb = alone(q, q0, lq), *kb = alone(k, k0, lk), *vb = alone(v, k0, lk);
            fg_attention_opts ob = {.causal = causal, .backend = be};
            fg_tensor *lb = NULL, *ob_out = fg_attention_lse(qb, kb, vb, &ob, &lb);
            ck_assert_msg(ob_out != NULL, "alone: %s", fg_last_error());
            bool prev = fg_set_grad_enabled(false);
            fg_tensor *gb = fg_contiguous(fg_unsqueeze(fg_transpose(fg_narrow(dout, 0, q0, lq), 0, 1), 0));
            fg_set_grad_enabled(prev);
            ck_assert_msg(fg_backward_with_grad(ob_out, gb) == FG_OK, "alone backward: %s", fg_last_error());
            ck_close_t(fg_narrow(out, 0, q0, lq), packed_rows(ob_out), 1e-12, "out", b);
            ck_close_t(fg_narrow(lse, 1, q0, lq), fg_squeeze(lb, 0), 1e-12, "lse", b);
            ck_close_t(fg_narrow(dq, 0, q0, lq), packed_rows(grad_of(qb)), 1e-12, "dq", b);
            ck_close_t(fg_narrow(dk, 0, k0, lk), packed_rows(grad_of(kb)), 1e-12, "dk", b);
            ck_close_t(fg_narrow(dv, 0, k0, lk), packed_rows(grad_of(vb)), 1e-12, "dv", b);
        }
        q0 += lq, k0 += lk;
    }
}

static const vcase vcases[] = {
    {5, {5, 0, 13, 1, 7}, {7, 3, 13, 0, 2}, 4, 2, 8}, /* empty query and key sequences, Lq < Lk and Lq > Lk */
    {3, {17, 16, 1}, {17, 16, 33}, 3, 1, 5},        /* MQA, tiles crossed, odd head dim */
    {1, {9}, {9}, 2, 2, 16},
    {2, {0, 0}, {4, 0}, 2, 1, 3}, /* no rows at all */
};

START_TEST(test_varlen_equals_alone)
{
    BEGIN;
    for (size_t i = 0; i < sizeof vcases / sizeof *vcases; i++)
        for (int causal = 0; causal < 2; causal++)
            for (int be = 0; be < 2; be++) {
                fg_scope *sc = fg_scope_begin();
                check_alone(gen, &vcases[i], causal, be ? FG_ATTN_MATH : FG_ATTN_FLASH, (i + be) % 2 ? FG_I64 : FG_I32);
                ck_assert_int_eq(fg_scope_end(sc), FG_OK);
            }
    END;
}
END_TEST

typedef struct {
    fg_attention_opts o;
    uint64_t seed; /* dropout: every call draws the same mask from a fresh generator */
} vctx;

static fg_tensor *varlen_fn(fg_tensor *const *in, void *ctx)
{
    vctx *c = ctx;
    fg_generator *g = fg_generator_new(c->seed);
    fg_attention_opts o = c->o;
    o.generator = g;
    fg_tensor *out = fg_attention(in[0], in[1], in[2], &o);
    fg_generator_free(g);
    return out;
}

/* Flash and math on the same varlen + key-padded problem with dropout. */
START_TEST(test_varlen_flash_matches_math)
{
    BEGIN;
    const vcase c = {4, {6, 0, 11, 3}, {9, 5, 11, 1}, 4, 2, 6};
    const double kl[4] = {4, 5, 0, 1};
    for (int causal = 0; causal < 2; causal++) {
        const int64_t tq = total(c.lq, c.n), tk = total(c.lk, c.n);
        fg_tensor *in[3] = {leaf(fg_uniform(gen, -1, 1, FG_SHAPE(tq, c.Hq, c.D), FG_F64, FG_CPU)),
                            leaf(fg_uniform(gen, -1, 1, FG_SHAPE(tk, c.Hkv, c.D), FG_F64, FG_CPU)),
                            leaf(fg_uniform(gen, -1, 1, FG_SHAPE(tk, c.Hkv, c.D), FG_F64, FG_CPU))};
        fg_tensor *dout = fg_uniform(gen, -1, 1, FG_SHAPE(tq, c.Hq, c.D), FG_F64, FG_CPU);
        vctx x = {.o = {.causal = causal, .dropout_p = 0.25, .cu_seqlens_q = offsets(c.lq, c.n, FG_I32),
                        .cu_seqlens_k = offsets(c.lk, c.n, FG_I32),
                        .key_lengths = fg_from_f64(kl, FG_SHAPE(4), FG_I64, FG_CPU)},
                  .seed = 7};
        fg_tensor *out[2], *gr[2][3];
        for (int m = 0; m < 2; m++) {
            x.o.backend = m ? FG_ATTN_MATH : FG_ATTN_FLASH;
            out[m] = varlen_fn(in, &x);
            ck_assert_msg(out[m] != NULL, "%s: %s", m ? "math" : "flash", fg_last_error());
            ck_assert_int_eq(fg_backward_with_grad(out[m], dout), FG_OK);
            for (int i = 0; i < 3; i++) {
                gr[m][i] = grad_of(in[i]);
                ck_assert_int_eq(fg_zero_grad(in[i]), FG_OK);
            }
        }
        ck_close_t(out[0], out[1], 1e-12, "out flash vs math", -1);
        for (int i = 0; i < 3; i++) ck_close_t(gr[0][i], gr[1][i], 1e-12, i == 0 ? "dq" : i == 1 ? "dk" : "dv", -1);
        /* dropout did drop: without it the output differs */
        x.o.dropout_p = 0;
        fg_tensor *nd = varlen_fn(in, &x);
        fg_compare_result r;
        ck_assert_int_eq(fg_compare(out[0], nd, 1e-3, 1e-3, &r), FG_OK);
        ck_assert(!r.allclose);
        /* keys past key_lengths get no gradient: sequence 0 keeps 4 of 9 */
        ck_zero(fg_narrow(gr[0][1], 0, 4, 5), "dk of padded keys", 0);
        ck_zero(fg_narrow(gr[0][2], 0, 4, 5), "dv of padded keys", 0);
        /* finite differences through the flash backward (the same mask every call) */
        x.o.dropout_p = 0.25;
        x.o.backend = FG_ATTN_FLASH;
        ck_gradcheck(varlen_fn, &x, 3, in);
    }
    END;
}
END_TEST

/* Dense batch with key_lengths: keys past the length hold NaN and must never be read. */
START_TEST(test_key_padding)
{
    BEGIN;
    const int64_t B = 3, Hq = 2, Hkv = 1, Lq = 6, Lk = 9, D = 4;
    const int64_t kl[3] = {9, 4, 0};
    double kv[2][3 * 9 * 4];
    for (int t = 0; t < 2; t++)
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < Lk; j++)
                for (int64_t d = 0; d < D; d++)
                    kv[t][(b * Lk + j) * D + d] = j < kl[b] ? sin(1.7 * (double)(b * 97 + j * 13 + d * 5 + t)) : NAN;
    for (int causal = 0; causal < 2; causal++)
        for (int be = 0; be < 2; be++) {
            fg_tensor *q = leaf(fg_uniform(gen, -1, 1, FG_SHAPE(B, Hq, Lq, D), FG_F64, FG_CPU));
            fg_tensor *k = leaf(fg_from_f64(kv[0], FG_SHAPE(B, Hkv, Lk, D), FG_F64, FG_CPU));
            fg_tensor *v = leaf(fg_from_f64(kv[1], FG_SHAPE(B, Hkv, Lk, D), FG_F64, FG_CPU));
            fg_tensor *dout = fg_uniform(gen, -1, 1, FG_SHAPE(B, Hq, Lq, D), FG_F64, FG_CPU);
            const double kld[3] = {(double)kl[0], (double)kl[1], (double)kl[2]};
            fg_attention_opts o = {.causal = causal, .backend = be ? FG_ATTN_MATH : FG_ATTN_FLASH,
                                   .key_lengths = fg_from_f64(kld, FG_SHAPE(3), be ? FG_I32 : FG_I64, FG_CPU)};
            fg_tensor *lse = NULL, *out = fg_attention_lse(q, k, v, &o, &lse);
            ck_assert_msg(out != NULL, "%s", fg_last_error());
            ck_assert_int_eq(fg_backward_with_grad(out, dout), FG_OK);
            fg_tensor *dq = grad_of(q), *dk = grad_of(k), *dv = grad_of(v);
            for (int64_t b = 0; b < B; b++) {
                bool prev = fg_set_grad_enabled(false);
                fg_tensor *qb = fg_contiguous(fg_narrow(q, 0, b, 1));
                fg_tensor *kb = fg_contiguous(fg_narrow(fg_narrow(k, 0, b, 1), 2, 0, kl[b]));
                fg_tensor *vb = fg_contiguous(fg_narrow(fg_narrow(v, 0, b, 1), 2, 0, kl[b]));
                fg_tensor *gb = fg_contiguous(fg_narrow(dout, 0, b, 1));
                fg_set_grad_enabled(prev);
                leaf(qb);
                leaf(kb);
                leaf(vb);
                fg_attention_opts ob = {.causal = causal, .backend = FG_ATTN_FLASH};
                fg_tensor *lb = NULL, *ref = fg_attention_lse(qb, kb, vb, &ob, &lb);
                ck_assert_msg(ref != NULL, "%s", fg_last_error());
                ck_assert_int_eq(fg_backward_with_grad(ref, gb), FG_OK);
                ck_close_t(fg_narrow(out, 0, b, 1), ref, 1e-12, "out", (int)b);
                ck_close_t(fg_narrow(lse, 0, b, 1), lb, 1e-12, "lse", (int)b);
                ck_close_t(fg_narrow(dq, 0, b, 1), grad_of(qb), 1e-12, "dq", (int)b);
                ck_close_t(fg_narrow(fg_narrow(dk, 0, b, 1), 2, 0, kl[b]), grad_of(kb), 1e-12, "dk", (int)b);
                ck_close_t(fg_narrow(fg_narrow(dv, 0, b, 1), 2, 0, kl[b]), grad_of(vb), 1e-12, "dv", (int)b);
                ck_zero(fg_narrow(fg_narrow(dk, 0, b, 1), 2, kl[b], Lk - kl[b]), "dk of padded keys", (int)b);
                ck_zero(fg_narrow(fg_narrow(dv, 0, b, 1), 2, kl[b], Lk - kl[b]), "dv of padded keys", (int)b);
            }
            double lv[2 * 6];
            read_f64(fg_narrow(lse, 0, 2, 1), lv, Hq * Lq); /* no key at all: LSE +inf, output 0 */
            for (int i = 0; i < Hq * Lq; i++) ck_assert(lv[i] == INFINITY);
        }
    END;
}
END_TEST

START_TEST(test_varlen_errors)
{
    BEGIN;
    fg_tensor *q = fg_zeros(FG_SHAPE(7, 4, 8), FG_F32, FG_CPU), *k = fg_zeros(FG_SHAPE(5, 2, 8), FG_F32, FG_CPU);
    const double good_q[3] = {0, 3, 7}, good_k[3] = {0, 5, 5};
    fg_tensor *cq = fg_from_f64(good_q, FG_SHAPE(3), FG_I32, FG_CPU), *ck = fg_from_f64(good_k, FG_SHAPE(3), FG_I32, FG_CPU);
    fg_attention_opts o = {.cu_seqlens_q = cq, .cu_seqlens_k = ck};
    ck_assert_ptr_nonnull(fg_attention(q, k, k, &o)); /* the good table works */
    o.cu_seqlens_k = NULL;
    ck_assert_ptr_null(fg_attention(q, k, k, &o));
    ck_err(FG_ERR_INVALID, "attention", "cu_seqlens_k");
    o.cu_seqlens_k = ck;
    ck_assert_ptr_null(fg_attention(fg_zeros(FG_SHAPE(1, 4, 7, 8), FG_F32, FG_CPU), k, k, &o));
    ck_err(FG_ERR_DIM, "varlen", "(1, 4, 7, 8)");
    const double bad[][3] = {{1, 3, 7}, {0, 4, 3}, {0, 3, 6}};
    const char *why[] = {"start at 0", "never decrease", "7 rows"};
    for (int i = 0; i < 3; i++) {
        o.cu_seqlens_q = fg_from_f64(bad[i], FG_SHAPE(3), FG_I64, FG_CPU);
        ck_assert_ptr_null(fg_attention(q, k, k, &o));
        ck_err(FG_ERR_INVALID, "cu_seqlens_q", why[i]);
    }
    o.cu_seqlens_q = fg_from_f64(good_q, FG_SHAPE(3), FG_F32, FG_CPU);
    ck_assert_ptr_null(fg_attention(q, k, k, &o));
    ck_err(FG_ERR_SHAPE, "cu_seqlens_q", "f32");
    o.cu_seqlens_q = cq;
    o.cu_seqlens_k = fg_from_f64(good_k, FG_SHAPE(1, 3), FG_I32, FG_CPU);
    ck_assert_ptr_null(fg_attention(q, k, k, &o));
    ck_err(FG_ERR_SHAPE, "cu_seqlens_k", "(1, 3)");
    o.cu_seqlens_k = fg_from_f64((const double[]){0, 5}, FG_SHAPE(2), FG_I32, FG_CPU); /* B differs */
    ck_assert_ptr_null(fg_attention(q, k, k, &o));
    ck_err(FG_ERR_SHAPE, "cu_seqlens_k", "3 entries");
    o.cu_seqlens_k = ck;
    o.max_seqlen_q = 3; /* the second sequence has 4 rows */
    ck_assert_ptr_null(fg_attention(q, k, k, &o));
    ck_err(FG_ERR_INVALID, "max_seqlen_q", "4");
    o.max_seqlen_q = 4;
    ck_assert_ptr_nonnull(fg_attention(q, k, k, &o));
    o.key_lengths = fg_from_f64((const double[]){6, 0}, FG_SHAPE(2), FG_I32, FG_CPU); /* sequence 0 has 5 keys */
    ck_assert_ptr_null(fg_attention(q, k, k, &o));
    ck_err(FG_ERR_INVALID, "key_lengths[0] = 6", "[0, 5]");
    /* dense key padding */
    fg_tensor *qd = fg_zeros(FG_SHAPE(2, 4, 3, 8), FG_F32, FG_CPU), *kd = fg_zeros(FG_SHAPE(2, 2, 5, 8), FG_F32, FG_CPU);
    fg_attention_opts od = {.key_lengths = fg_from_f64((const double[]){5, -1}, FG_SHAPE(2), FG_I32, FG_CPU)};
    ck_assert_ptr_null(fg_attention(qd, kd, kd, &od));
    ck_err(FG_ERR_INVALID, "key_lengths[1] = -1", NULL);
    od.key_lengths = fg_from_f64((const double[]){5, 1, 1}, FG_SHAPE(3), FG_I32, FG_CPU);
    ck_assert_ptr_null(fg_attention(qd, kd, kd, &od));
    ck_err(FG_ERR_SHAPE, "key_lengths", "2 entries");
    END;
}
END_TEST

static Suite *varlen_suite(void)
{
    Suite *s = suite_create("attention_varlen");
    TCase *tc = tcase_create("attention_varlen");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_varlen_equals_alone);
    tcase_add_test(tc, test_varlen_flash_matches_math);
    tcase_add_test(tc, test_key_padding);
    tcase_add_test(tc, test_varlen_errors);
    suite_add_tcase(s, tc);
    return s;
}

FG_TEST_MAIN(varlen_suite)
