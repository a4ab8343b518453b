/* Suite "memory": ownership rules (scopes, fg_keep, fg_free, fg_retain) and a
 * long training loop whose live tensor / node / byte counts must stay flat.
 * FG_TEST_QUICK=1 shortens the loop (for valgrind). */
#include <string.h>
#include "testutil.h"

static fg_memory_stats stats(void)
{
    fg_memory_stats m;
    fg_get_memory_stats(&m);
    return m;
}

static void ck_same_stats(const fg_memory_stats *a, const fg_memory_stats *b)
{
    ck_assert_int_eq(a->live_tensors, b->live_tensors);
    ck_assert_int_eq(a->live_storages, b->live_storages);
    ck_assert_int_eq(a->live_nodes, b->live_nodes);
    ck_assert_int_eq(a->live_bytes[FG_CPU], b->live_bytes[FG_CPU]);
    ck_assert_int_eq(a->live_bytes[FG_CUDA], b->live_bytes[FG_CUDA]);
}

static void setup(void) { fg_clear_error(); }

/* ----------------------------------------------------------- training */
START_TEST(test_training_loop_flat_memory)
{
    const int steps = getenv("FG_TEST_QUICK") ? 2000 : 10000;
    const int check_at = 100;
    const fg_memory_stats base = stats();

    /* Data and parameters live outside every scope (caller owned). */
    fg_generator *g = fg_generator_new(2718);
    fg_tensor *X = fg_uniform(g, -1, 1, FG_SHAPE(64, 3), FG_F32, FG_CPU);
    fg_tensor *w_true = fg_from_f64((const double[]){1.5, -2.0, 0.5}, FG_SHAPE(3, 1), FG_F32, FG_CPU);
    fg_tensor *Y;
    {
        fg_scope *s = fg_scope_begin();
        Y = fg_keep(fg_add_scalar(fg_matmul(X, w_true), 0.3));
        ck_assert_int_eq(fg_scope_end(s), FG_OK);
    }
    fg_tensor *W = fg_zeros(FG_SHAPE(3, 1), FG_F32, FG_CPU);
    fg_tensor *b = fg_zeros(FG_SHAPE(1), FG_F32, FG_CPU);
    ck_assert_int_eq(fg_set_requires_grad(W, true), FG_OK);
    ck_assert_int_eq(fg_set_requires_grad(b, true), FG_OK);
    const double lr = 0.1;

    double first_loss = NAN, last_loss = NAN;
    fg_memory_stats at_check = {0}, at_end;
    for (int step = 0; step < steps; step++) {
        fg_scope *s = fg_scope_begin();
        ck_assert_ptr_nonnull(s);
        fg_tensor *pred = fg_add(fg_matmul(X, W), b);
        fg_tensor *diff = fg_sub(pred, Y);
        fg_tensor *loss = fg_mean_all(fg_mul(diff, diff));
        ck_assert_ptr_nonnull(loss);
        ck_assert_int_eq(fg_backward(loss), FG_OK);
        bool prev = fg_set_grad_enabled(false);
        ck_assert_int_eq(fg_copy_(W, fg_sub(W, fg_mul_scalar(fg_grad(W), lr))), FG_OK);
        ck_assert_int_eq(fg_copy_(b, fg_sub(b, fg_mul_scalar(fg_grad(b), lr))), FG_OK);
        fg_set_grad_enabled(prev);
        ck_assert_int_eq(fg_zero_grad(W), FG_OK);
        ck_assert_int_eq(fg_zero_grad(b), FG_OK);
        if (step == 0) first_loss = fg_item(loss);
        if (step == steps - 1) last_loss = fg_item(loss);
        ck_assert_int_eq(fg_scope_end(s), FG_OK);
        if (step == check_at) at_check = stats();
    }
    at_end = stats();
    ck_same_stats(&at_check, &at_end);
    /* parameters, data and the two gradient buffers: nothing else survives a step */
    ck_assert_int_eq(at_end.live_tensors, base.live_tensors + 7);
    ck_assert_int_eq(at_end.live_nodes, base.live_nodes);
    ck_assert_int_eq(at_end.live_bytes[FG_CPU],
                     base.live_bytes[FG_CPU] + (64 * 3 + 3 + 64 + 3 + 1 + 3 + 1) * (int64_t)sizeof(float));
    ck_assert_int_eq(fg_last_status(), FG_OK);

    /* it learned: y = x w_true + 0.3 */
    ck_assert_msg(first_loss > 0.5, "first loss %g", first_loss);
    ck_assert_msg(last_loss < 1e-4 * first_loss, "loss %g -> %g", first_loss, last_loss);
    ck_tensor_values(W, (const double[]){1.5, -2.0, 0.5}, 3, 1e-3);
    ck_tensor_values(b, (const double[]){0.3}, 1, 1e-3);

    fg_free(X);
    fg_free(w_true);
    fg_free(Y);
    fg_free(W);
    fg_free(b);
    fg_generator_free(g);
    at_end = stats();
    ck_same_stats(&base, &at_end);
}
END_TEST

/* ------------------------------------------------------- ownership */
START_TEST(test_scope_releases_everything)
{
    const fg_memory_stats base = stats();
    fg_scope *s = fg_scope_begin();
    fg_tensor *x = fg_ones(FG_SHAPE(4, 5), FG_F64, FG_CPU);
    fg_set_requires_grad(x, true);
    fg_tensor *y = fg_sum_all(fg_exp(fg_transpose(fg_mul(x, x), 0, 1)));
    fg_tensor *v = fg_slice(fg_reshape(x, FG_SHAPE(20)), 0, 0, 20, 3);
    ck_assert_ptr_nonnull(v);
    fg_tensor *c = fg_contiguous(fg_expand(fg_unsqueeze(v, 0), FG_SHAPE(8, 7)));
    ck_assert_ptr_nonnull(c);
    fg_memory_stats mid = stats();
    ck_assert_int_gt(mid.live_tensors, base.live_tensors + 8);
    ck_assert_int_gt(mid.live_nodes, base.live_nodes + 3);
    ck_assert_int_gt(mid.live_bytes[FG_CPU], base.live_bytes[FG_CPU] + 160);
    ck_assert_int_ge(mid.peak_bytes[FG_CPU], mid.live_bytes[FG_CPU]);
    ck_assert_int_eq(fg_backward(y), FG_OK);
    ck_assert_ptr_nonnull(fg_grad(x));
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    const fg_memory_stats end = stats();
    ck_same_stats(&base, &end); /* x's gradient went with x */
}
END_TEST

START_TEST(test_nested_scopes)
{
    const fg_memory_stats base = stats();
    fg_scope *outer = fg_scope_begin();
    fg_tensor *a = fg_full(FG_SHAPE(10), 2, FG_F32, FG_CPU);
    fg_memory_stats after_a = stats();
    fg_scope *inner = fg_scope_begin();
    fg_tensor *b = fg_mul(a, a);
    fg_tensor *kept = fg_keep(fg_add(a, b)); /* leaves the inner scope for the caller */
    (void)fg_zeros(FG_SHAPE(100), FG_F64, FG_CPU);
    ck_assert_int_eq(fg_scope_end(inner), FG_OK);
    fg_memory_stats m = stats();
    ck_assert_int_eq(m.live_tensors, after_a.live_tensors + 1);
    ck_assert_int_eq(m.live_bytes[FG_CPU], after_a.live_bytes[FG_CPU] + 40);
    ck_tensor_values(a, (const double[]){2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, 10, 0);
    ck_tensor_values(kept, (const double[]){6, 6, 6, 6, 6, 6, 6, 6, 6, 6}, 10, 0);
    ck_assert_int_eq(fg_scope_end(outer), FG_OK);
    m = stats();
    ck_assert_int_eq(m.live_tensors, base.live_tensors + 1); /* only the kept one */
    ck_tensor_values(kept, (const double[]){6, 6, 6, 6, 6, 6, 6, 6, 6, 6}, 10, 0);
    fg_free(kept);
    m = stats();
    ck_same_stats(&base, &m);
}
END_TEST

START_TEST(test_keep_moves_out)
{
    const fg_memory_stats base = stats();
    fg_scope *s = fg_scope_begin();
    fg_tensor *t = fg_arange(0, 6, 1, FG_F32, FG_CPU);
    fg_tensor *view = fg_reshape(t, FG_SHAPE(2, 3));
    ck_assert_ptr_eq(fg_keep(view), view);
    ck_assert_ptr_eq(fg_keep(view), view); /* keeping twice is harmless */
    ck_assert_ptr_null(fg_keep(NULL));
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    /* the view outlives both its scope and its base, and keeps the storage */
    fg_memory_stats m = stats();
    ck_assert_int_eq(m.live_tensors, base.live_tensors + 1);
    ck_assert_int_eq(m.live_storages, base.live_storages + 1);
    ck_tensor_values(view, (const double[]){0, 1, 2, 3, 4, 5}, 6, 0);
    ck_assert_int_eq(fg_fill_(view, 3), FG_OK);
    fg_free(view);
    m = stats();
    ck_same_stats(&base, &m);
}
END_TEST

START_TEST(test_free_scope_owned_early)
{
    const fg_memory_stats base = stats();
    fg_scope *s = fg_scope_begin();
    fg_tensor *a = fg_ones(FG_SHAPE(1000), FG_F64, FG_CPU);
    fg_tensor *v = fg_narrow(a, 0, 10, 5);
    fg_tensor *big = fg_zeros(FG_SHAPE(2000), FG_F64, FG_CPU);
    fg_memory_stats m = stats();
    ck_assert_int_eq(m.live_bytes[FG_CPU], base.live_bytes[FG_CPU] + 24000);
    fg_free(big); /* released now, not at scope end */
    m = stats();
    ck_assert_int_eq(m.live_bytes[FG_CPU], base.live_bytes[FG_CPU] + 8000);
    ck_assert_int_eq(m.live_tensors, base.live_tensors + 2);
    fg_free(a); /* the view still holds the storage */
    m = stats();
    ck_assert_int_eq(m.live_tensors, base.live_tensors + 1);
    ck_assert_int_eq(m.live_bytes[FG_CPU], base.live_bytes[FG_CPU] + 8000);
    ck_tensor_values(v, (const double[]){1, 1, 1, 1, 1}, 5, 0);
    fg_free(NULL);
    ck_assert_int_eq(fg_scope_end(s), FG_OK); /* skips the freed entries */
    m = stats();
    ck_same_stats(&base, &m);
}
END_TEST

START_TEST(test_retain_free_pairing)
{
    const fg_memory_stats base = stats();
    /* caller owned: each retain needs one more free */
    fg_tensor *t = fg_ones(FG_SHAPE(3), FG_F32, FG_CPU);
    ck_assert_ptr_eq(fg_retain(t), t);
    ck_assert_ptr_eq(fg_retain(t), t);
    fg_free(t);
    fg_free(t);
    fg_memory_stats m = stats();
    ck_assert_int_eq(m.live_tensors, base.live_tensors + 1);
    ck_tensor_values(t, (const double[]){1, 1, 1}, 3, 0);
    fg_free(t);
    m = stats();
    ck_same_stats(&base, &m);
    ck_assert_ptr_null(fg_retain(NULL));
    /* scope owned: a retained tensor outlives its scope until the matching free */
    fg_scope *s = fg_scope_begin();
    fg_tensor *u = fg_full(FG_SHAPE(4), 7, FG_F64, FG_CPU);
    fg_retain(u);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    m = stats();
    ck_assert_int_eq(m.live_tensors, base.live_tensors + 1);
    ck_tensor_values(u, (const double[]){7, 7, 7, 7}, 4, 0);
    fg_free(u);
    m = stats();
    ck_same_stats(&base, &m);
}
END_TEST

START_TEST(test_graph_keeps_freed_leaf_alive)
{
    /* a leaf released by its owner stays alive while a pending graph uses it */
    const fg_memory_stats base = stats();
    fg_scope *s = fg_scope_begin();
    fg_tensor *x = fg_full(FG_SHAPE(3), 0.5, FG_F64, FG_CPU);
    fg_set_requires_grad(x, true);
    fg_tensor *loss = fg_keep(fg_sum_all(fg_mul(fg_exp(x), x)));
    fg_free(x);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    ck_close(fg_item(loss), 3 * 0.5 * exp(0.5), 1e-12);
    ck_assert_int_eq(fg_backward(loss), FG_OK); /* writes x.grad into the orphaned leaf */
    fg_free(loss);
    fg_memory_stats m = stats();
    ck_same_stats(&base, &m);
}
END_TEST

START_TEST(test_parameter_free_releases_grad)
{
    const fg_memory_stats base = stats();
    fg_tensor *p = fg_ones(FG_SHAPE(16), FG_F32, FG_CPU);
    fg_set_requires_grad(p, true);
    fg_scope *s = fg_scope_begin();
    ck_assert_int_eq(fg_backward(fg_sum_all(fg_mul_scalar(p, 2))), FG_OK);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    fg_memory_stats m = stats();
    ck_assert_int_eq(m.live_tensors, base.live_tensors + 2);
    ck_assert_int_eq(m.live_bytes[FG_CPU], base.live_bytes[FG_CPU] + 128);
    fg_clear_grad(p);
    m = stats();
    ck_assert_int_eq(m.live_bytes[FG_CPU], base.live_bytes[FG_CPU] + 64);
    s = fg_scope_begin();
    ck_assert_int_eq(fg_backward(fg_sum_all(p)), FG_OK);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    fg_free(p); /* takes its gradient with it */
    m = stats();
    ck_same_stats(&base, &m);
}
END_TEST

START_TEST(test_peak_bytes_tracks_high_water)
{
    const fg_memory_stats base = stats();
    fg_scope *s = fg_scope_begin();
    fg_tensor *t = fg_empty(FG_SHAPE(1 << 20), FG_F64, FG_CPU); /* 8 MiB */
    ck_assert_ptr_nonnull(t);
    fg_memory_stats m = stats();
    ck_assert_int_ge(m.peak_bytes[FG_CPU], base.live_bytes[FG_CPU] + (8 << 20));
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    fg_memory_stats after = stats();
    ck_assert_int_eq(after.live_bytes[FG_CPU], base.live_bytes[FG_CPU]);
    ck_assert_int_ge(after.peak_bytes[FG_CPU], base.live_bytes[FG_CPU] + (8 << 20)); /* a high-water mark */
    ck_assert_int_eq(after.live_bytes[FG_CUDA], base.live_bytes[FG_CUDA]);
}
END_TEST

static Suite *memory_suite(void)
{
    Suite *s = suite_create("memory");
    TCase *c = tcase_create("training");
    tcase_add_checked_fixture(c, setup, NULL);
    tcase_set_timeout(c, 600);
    tcase_add_test(c, test_training_loop_flat_memory);
    suite_add_tcase(s, c);

    c = tcase_create("ownership");
    tcase_add_checked_fixture(c, setup, NULL);
    tcase_add_test(c, test_scope_releases_everything);
    tcase_add_test(c, test_nested_scopes);
    tcase_add_test(c, test_keep_moves_out);
    tcase_add_test(c, test_free_scope_owned_early);
    tcase_add_test(c, test_retain_free_pairing);
    tcase_add_test(c, test_graph_keeps_freed_leaf_alive);
    tcase_add_test(c, test_parameter_free_releases_grad);
    tcase_add_test(c, test_peak_bytes_tracks_high_water);
    suite_add_tcase(s, c);
    return s;
}

FG_TEST_MAIN(memory_suite)
