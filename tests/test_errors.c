/* Suite "errors": every failure returns a status or NULL (never aborts) and
 * leaves a message naming the op and the shapes; NULL inputs keep the first
 * error of a chain. */
#include <pthread.h>
#include <string.h>
#include "testutil.h"

static fg_scope *tscope;
static void setup(void)
{
    fg_clear_error();
    tscope = fg_scope_begin();
}
static void teardown(void)
{
    ck_assert_int_eq(fg_scope_end(tscope), FG_OK);
}

/* Asserts the last error has status `st` and its message contains every given fragment. */
static void ck_error_(fg_status st, const char *const *frags, int n)
{
    ck_assert_msg(fg_last_status() == st, "status %s, expected %s (message: %s)", fg_status_name(fg_last_status()),
                  fg_status_name(st), fg_last_error());
    for (int i = 0; i < n; i++)
        ck_assert_msg(strstr(fg_last_error(), frags[i]) != NULL, "message \"%s\" lacks \"%s\"", fg_last_error(),
                      frags[i]);
}
#define CK_ERROR(st, ...)                                                                         \
    ck_error_((st), (const char *const[]){__VA_ARGS__},                                          \
              (int)(sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)))

static fg_tensor *mat(int64_t r, int64_t c) { return fg_ones(FG_SHAPE(r, c), FG_F32, FG_CPU); }

/* ------------------------------------------------------------ NULL inputs */
START_TEST(test_null_inputs)
{
    fg_tensor *a = mat(2, 2);
    ck_assert_ptr_null(fg_add(NULL, a));
    CK_ERROR(FG_ERR_NULL, "add", "a is NULL");
    fg_clear_error();
    ck_assert_ptr_null(fg_mul(a, NULL));
    CK_ERROR(FG_ERR_NULL, "mul", "b");
    fg_clear_error();
    ck_assert_ptr_null(fg_exp(NULL));
    CK_ERROR(FG_ERR_NULL, "exp");
    fg_clear_error();
    ck_assert_ptr_null(fg_reshape(NULL, FG_SHAPE(4)));
    CK_ERROR(FG_ERR_NULL, "reshape");
    fg_clear_error();
    ck_assert_ptr_null(fg_sum_all(NULL));
    CK_ERROR(FG_ERR_NULL, "sum");
    fg_clear_error();
    ck_assert_ptr_null(fg_matmul(NULL, a));
    CK_ERROR(FG_ERR_NULL, "matmul");
    fg_clear_error();
    ck_assert_int_eq(fg_fill_(NULL, 1), FG_ERR_NULL);
    fg_clear_error();
    ck_assert_int_eq(fg_copy_(a, NULL), FG_ERR_NULL);
    CK_ERROR(FG_ERR_NULL, "fg_copy_", "src");
    fg_clear_error();
    ck_assert_ptr_null(fg_zeros_like(NULL));
    CK_ERROR(FG_ERR_NULL, "fg_zeros_like");
    fg_clear_error();
    ck_assert_ptr_null(fg_from_data(NULL, FG_SHAPE(2), FG_F32, FG_CPU));
    CK_ERROR(FG_ERR_NULL, "fg_from_data", "data");
    fg_clear_error();
    ck_assert_ptr_nonnull(fg_from_data(NULL, FG_SHAPE(0), FG_F32, FG_CPU)); /* nothing to read */
    ck_assert_ptr_null(fg_zeros(2, NULL, FG_F32, FG_CPU));
    CK_ERROR(FG_ERR_NULL, "shape");
    fg_clear_error();
    ck_assert(isnan(fg_item(NULL)));
    CK_ERROR(FG_ERR_NULL, "fg_item");
    fg_clear_error();
    ck_assert_int_eq(fg_size(NULL, 0), -1);
    CK_ERROR(FG_ERR_NULL, "fg_size");
}
END_TEST

START_TEST(test_null_chain_keeps_first_error)
{
    fg_tensor *a = mat(2, 3), *b = mat(4, 5), *c = mat(2, 5);
    fg_tensor *r = fg_add(fg_matmul(a, b), c);
    ck_assert_ptr_null(r);
    CK_ERROR(FG_ERR_SHAPE, "matmul", "(2, 3)", "(4, 5)");
    /* deeper chains too, through unary ops, views and reductions */
    fg_tensor *r2 = fg_sum_all(fg_exp(fg_transpose(fg_mul(fg_matmul(a, b), c), 0, 1)));
    ck_assert_ptr_null(r2);
    CK_ERROR(FG_ERR_SHAPE, "matmul", "(2, 3)", "(4, 5)");
    ck_assert_int_eq(fg_backward(r2), FG_ERR_SHAPE);
    ck_assert_int_eq(fg_copy_(c, r2), FG_ERR_SHAPE);
    CK_ERROR(FG_ERR_SHAPE, "matmul");
}
END_TEST

START_TEST(test_new_error_overwrites_after_clear)
{
    fg_tensor *a = mat(2, 3), *b = mat(4, 5);
    ck_assert_ptr_null(fg_matmul(a, b));
    fg_clear_error();
    ck_assert_ptr_null(fg_exp(NULL));
    CK_ERROR(FG_ERR_NULL, "exp");
    /* a real (non-NULL) failure always overwrites */
    ck_assert_ptr_null(fg_add(a, b));
    CK_ERROR(FG_ERR_SHAPE, "add", "(2, 3)", "(4, 5)");
}
END_TEST

/* ----------------------------------------------------------------- shapes */
START_TEST(test_broadcast_failure_message)
{
    fg_tensor *a = mat(2, 3);
    fg_tensor *b = fg_ones(FG_SHAPE(4), FG_F32, FG_CPU);
    ck_assert_ptr_null(fg_add(a, b));
    CK_ERROR(FG_ERR_SHAPE, "add", "(2, 3", "(4", "broadcast");
    fg_tensor *c = fg_ones(FG_SHAPE(5, 1, 3), FG_F32, FG_CPU);
    fg_tensor *d = fg_ones(FG_SHAPE(7, 2), FG_F32, FG_CPU);
    ck_assert_ptr_null(fg_sub(c, d));
    CK_ERROR(FG_ERR_SHAPE, "sub", "(5, 1, 3", "(7, 2", "broadcast");
    ck_assert_ptr_nonnull(fg_sub(c, fg_ones(FG_SHAPE(7, 1), FG_F32, FG_CPU))); /* (5, 7, 3) is fine */
    ck_assert_ptr_null(fg_where(fg_ones(FG_SHAPE(4), FG_F32, FG_CPU), a, a));
    CK_ERROR(FG_ERR_SHAPE, "where", "(4", "(2, 3");
}
END_TEST

START_TEST(test_matmul_shape_errors)
{
    ck_assert_ptr_null(fg_matmul(mat(3, 4), mat(5, 6)));
    CK_ERROR(FG_ERR_SHAPE, "matmul", "(3, 4)", "(5, 6)");
    fg_tensor *v = fg_ones(FG_SHAPE(3), FG_F32, FG_CPU);
    ck_assert_ptr_null(fg_matmul(v, mat(4, 2)));
    CK_ERROR(FG_ERR_SHAPE, "matmul");
    ck_assert_ptr_null(fg_matmul(fg_scalar(1, FG_F32, FG_CPU), v));
    CK_ERROR(FG_ERR_DIM, "matmul", "0-d");
    fg_tensor *b1 = fg_ones(FG_SHAPE(2, 3, 4), FG_F32, FG_CPU), *b2 = fg_ones(FG_SHAPE(5, 4, 2), FG_F32, FG_CPU);
    ck_assert_ptr_null(fg_matmul(b1, b2));
    CK_ERROR(FG_ERR_SHAPE, "matmul", "batch");
}
END_TEST

START_TEST(test_reshape_errors)
{
    fg_tensor *a = mat(3, 4);
    ck_assert_ptr_null(fg_reshape(a, FG_SHAPE(5, 2)));
    CK_ERROR(FG_ERR_SHAPE, "reshape", "(3, 4)", "12", "10");
    ck_assert_ptr_null(fg_reshape(a, FG_SHAPE(-1, 5)));
    CK_ERROR(FG_ERR_SHAPE, "reshape", "-1", "(3, 4)");
    ck_assert_ptr_null(fg_reshape(a, FG_SHAPE(-1, -1)));
    CK_ERROR(FG_ERR_SHAPE, "reshape", "more than one -1");
    ck_assert_ptr_null(fg_reshape(a, FG_SHAPE(-2, -6)));
    CK_ERROR(FG_ERR_SHAPE, "reshape", "negative");
    ck_assert_ptr_null(fg_view(fg_transpose(a, 0, 1), FG_SHAPE(12)));
    CK_ERROR(FG_ERR_SHAPE, "view", "(4, 3)", "fg_reshape");
    ck_assert_ptr_null(fg_squeeze(a, 0));
    CK_ERROR(FG_ERR_SHAPE, "squeeze", "(3, 4)");
    ck_assert_ptr_null(fg_expand(a, FG_SHAPE(2, 4)));
    CK_ERROR(FG_ERR_SHAPE, "expand", "(3, 4)");
}
END_TEST

START_TEST(test_copy_and_compare_shape_errors)
{
    fg_tensor *a = mat(2, 3);
    ck_assert_int_eq(fg_copy_(a, mat(3, 2)), FG_ERR_SHAPE);
    CK_ERROR(FG_ERR_SHAPE, "fg_copy_");
    ck_assert_int_eq(fg_copy_(a, fg_ones(FG_SHAPE(4, 2, 3), FG_F32, FG_CPU)), FG_ERR_SHAPE);
    CK_ERROR(FG_ERR_SHAPE, "fg_copy_", "(4, 2, 3)", "(2, 3)");
    fg_compare_result r;
    ck_assert_int_eq(fg_compare(a, mat(3, 2), 0, 0, &r), FG_ERR_SHAPE);
    CK_ERROR(FG_ERR_SHAPE, "fg_compare", "(2, 3)", "(3, 2)");
    ck_assert(isnan(fg_item(a)));
    CK_ERROR(FG_ERR_SHAPE, "fg_item", "(2, 3)", "6");
}
END_TEST

/* ----------------------------------------------------------------- dtypes */
START_TEST(test_dtype_mismatch)
{
    fg_tensor *a = fg_ones(FG_SHAPE(2, 2), FG_F32, FG_CPU), *b = fg_ones(FG_SHAPE(2, 2), FG_F64, FG_CPU);
    ck_assert_ptr_null(fg_add(a, b));
    CK_ERROR(FG_ERR_DTYPE, "add", "f32", "f64", "(2, 2)");
    ck_assert_ptr_null(fg_matmul(a, b));
    CK_ERROR(FG_ERR_DTYPE, "matmul", "f32", "f64");
    fg_tensor *h = fg_ones(FG_SHAPE(2), FG_BF16, FG_CPU), *f = fg_ones(FG_SHAPE(2), FG_F16, FG_CPU);
    ck_assert_ptr_null(fg_mul(h, f));
    CK_ERROR(FG_ERR_DTYPE, "mul", "bf16", "f16");
}
END_TEST

START_TEST(test_dtype_unsupported)
{
    fg_tensor *i = fg_ones(FG_SHAPE(3), FG_I32, FG_CPU);
    ck_assert_ptr_null(fg_exp(i));
    CK_ERROR(FG_ERR_DTYPE, "exp", "i32", "(3,)");
    ck_assert_ptr_null(fg_mean_all(fg_ones(FG_SHAPE(2), FG_I64, FG_CPU)));
    CK_ERROR(FG_ERR_DTYPE, "mean", "i64");
    ck_assert_ptr_null(fg_div(i, i));
    CK_ERROR(FG_ERR_DTYPE, "div", "i32");
    ck_assert_ptr_null(fg_matmul(fg_ones(FG_SHAPE(2, 2), FG_I64, FG_CPU), fg_ones(FG_SHAPE(2, 2), FG_I64, FG_CPU)));
    CK_ERROR(FG_ERR_DTYPE, "matmul", "i64");
    ck_assert_ptr_null(fg_zeros(FG_SHAPE(2), (fg_dtype)42, FG_CPU));
    CK_ERROR(FG_ERR_DTYPE, "invalid dtype");
    ck_assert_ptr_null(fg_cast(i, (fg_dtype)-1));
    CK_ERROR(FG_ERR_DTYPE, "to");
    ck_assert_int_eq(fg_set_requires_grad(i, true), FG_ERR_DTYPE);
    CK_ERROR(FG_ERR_DTYPE, "fg_set_requires_grad", "i32");
    /* ops that keep integer dtypes work */
    fg_tensor *s = fg_add(i, i);
    ck_assert_ptr_nonnull(s);
    ck_tensor_values(s, (const double[]){2, 2, 2}, 3, 0);
}
END_TEST

/* ---------------------------------------------------------------- devices */
START_TEST(test_device_unavailable)
{
    if (fg_cuda_available()) return; /* the CPU-only behaviour is what this checks */
    ck_assert_ptr_null(fg_zeros(FG_SHAPE(2, 2), FG_F32, FG_CUDA));
    CK_ERROR(FG_ERR_DEVICE, "fg_full", "CUDA");
    ck_assert_ptr_null(fg_empty(FG_SHAPE(2), FG_F32, FG_CUDA));
    CK_ERROR(FG_ERR_DEVICE, "fg_empty");
    ck_assert_ptr_null(fg_to(mat(2, 2), FG_CUDA, FG_F32));
    CK_ERROR(FG_ERR_DEVICE, "CUDA");
    ck_assert_ptr_null(fg_zeros(FG_SHAPE(2), FG_F32, (fg_device)7));
    CK_ERROR(FG_ERR_DEVICE, "invalid device");
    ck_assert_int_eq(fg_cuda_synchronize(), FG_ERR_DEVICE);
    ck_assert_int_eq(fg_cuda_device_count(), 0);
    char buf[128];
    ck_assert_ptr_eq(fg_cuda_device_description(buf, sizeof buf), buf);
    ck_assert_uint_gt(strlen(buf), 0);
}
END_TEST

/* ------------------------------------------------------------------- dims */
START_TEST(test_bad_dims)
{
    fg_tensor *a = mat(2, 3);
    ck_assert_ptr_null(fg_transpose(a, -3, 0));
    CK_ERROR(FG_ERR_DIM, "transpose", "-3", "2-d", "(2, 3)");
    ck_assert_ptr_null(fg_sum(a, FG_DIMS(2), false));
    CK_ERROR(FG_ERR_DIM, "sum", "2");
    ck_assert_ptr_null(fg_sum(a, FG_DIMS(0, -2), false));
    CK_ERROR(FG_ERR_DIM, "sum", "twice");
    ck_assert_ptr_null(fg_narrow(a, 5, 0, 1));
    CK_ERROR(FG_ERR_DIM, "narrow", "5");
    ck_assert_ptr_null(fg_slice(a, -3, 0, 1, 1));
    CK_ERROR(FG_ERR_DIM, "slice", "-3");
    ck_assert_ptr_null(fg_unsqueeze(a, 4));
    CK_ERROR(FG_ERR_DIM, "unsqueeze", "4");
    ck_assert_ptr_null(fg_permute(a, FG_DIMS(0, 1, 2)));
    CK_ERROR(FG_ERR_DIM, "permute", "3 dims", "(2, 3)");
    ck_assert_ptr_null(fg_max(a, 2, false, NULL));
    CK_ERROR(FG_ERR_DIM, "max");
    ck_assert_int_eq(fg_size(a, -3), -1);
    CK_ERROR(FG_ERR_DIM, "fg_size", "-3");
    ck_assert_ptr_null(fg_slice(fg_scalar(1, FG_F32, FG_CPU), 0, 0, 1, 1));
    CK_ERROR(FG_ERR_DIM, "slice", "0-d");
}
END_TEST

START_TEST(test_index_out_of_range)
{
    fg_tensor *a = mat(2, 3);
    ck_assert_ptr_null(fg_narrow(a, 1, 2, 2));
    CK_ERROR(FG_ERR_INDEX, "narrow", "(2, 3)");
    ck_assert_ptr_null(fg_narrow(a, 0, -1, 1));
    CK_ERROR(FG_ERR_INDEX, "narrow");
    ck_assert(isnan(fg_get(a, (const int64_t[]){0, 3})));
    CK_ERROR(FG_ERR_INDEX, "fg_get", "3", "(2, 3)");
}
END_TEST

/* ---------------------------------------------------- sizes and overflow */
START_TEST(test_overflow)
{
    ck_assert_ptr_null(fg_zeros(FG_SHAPE(1LL << 40, 1LL << 40), FG_F32, FG_CPU));
    CK_ERROR(FG_ERR_OVERFLOW, "fg_full", "overflow");
    ck_assert_ptr_null(fg_empty(FG_SHAPE(INT64_MAX, 2), FG_F64, FG_CPU));
    CK_ERROR(FG_ERR_OVERFLOW, "fg_empty");
    ck_assert_ptr_null(fg_rand(NULL, FG_SHAPE(1LL << 31, 1LL << 31, 1LL << 31), FG_F32, FG_CPU));
    CK_ERROR(FG_ERR_OVERFLOW, "fg_rand");
    /* a size-0 dim makes any shape empty, not an overflow */
    fg_tensor *e = fg_zeros(FG_SHAPE(0, 1LL << 40, 1LL << 40), FG_F32, FG_CPU);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(fg_numel(e), 0);
}
END_TEST

START_TEST(test_negative_size)
{
    ck_assert_ptr_null(fg_zeros(FG_SHAPE(2, -1), FG_F32, FG_CPU));
    CK_ERROR(FG_ERR_SHAPE, "fg_full", "negative", "-1", "dim 1");
    ck_assert_ptr_null(fg_from_f64((const double[]){1}, FG_SHAPE(-3), FG_F64, FG_CPU));
    CK_ERROR(FG_ERR_SHAPE, "fg_from_f64", "negative");
    ck_assert_ptr_null(fg_expand(mat(1, 3), FG_SHAPE(-5, 3)));
    CK_ERROR(FG_ERR_SHAPE, "expand");
}
END_TEST

START_TEST(test_too_many_dims)
{
    const int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    ck_assert_ptr_null(fg_zeros(9, nine, FG_F32, FG_CPU));
    CK_ERROR(FG_ERR_DIM, "fg_full", "9", "8");
    ck_assert_ptr_null(fg_zeros(-1, nine, FG_F32, FG_CPU));
    CK_ERROR(FG_ERR_DIM, "-1");
    fg_tensor *eight = fg_zeros(8, nine, FG_F32, FG_CPU);
    ck_assert_ptr_nonnull(eight);
    ck_assert_ptr_null(fg_unsqueeze(eight, 0));
    CK_ERROR(FG_ERR_DIM, "unsqueeze", "8");
    ck_assert_ptr_null(fg_reshape(eight, 9, nine));
    CK_ERROR(FG_ERR_DIM, "reshape");
}
END_TEST

static fg_tensor *gc_exp(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return fg_exp(in[0]);
}

START_TEST(test_invalid_values)
{
    ck_assert_ptr_null(fg_arange(0, 10, 0, FG_F32, FG_CPU));
    CK_ERROR(FG_ERR_INVALID, "fg_arange", "step");
    ck_assert_ptr_null(fg_arange(0, INFINITY, 1, FG_F32, FG_CPU));
    CK_ERROR(FG_ERR_INVALID, "fg_arange");
    ck_assert_ptr_null(fg_arange(0, 1e18, 1, FG_F32, FG_CPU));
    CK_ERROR(FG_ERR_OVERFLOW, "fg_arange");
    ck_assert_ptr_null(fg_slice(mat(2, 2), 0, 0, 2, 0));
    CK_ERROR(FG_ERR_INVALID, "slice", "step");
    double buf[3];
    ck_assert_int_eq(fg_to_f64_array(mat(2, 2), buf, 3), FG_ERR_INVALID);
    CK_ERROR(FG_ERR_INVALID, "fg_to_f64_array", "(2, 2)", "32");
    fg_gradcheck_result r;
    fg_tensor *x = fg_zeros(FG_SHAPE(2), FG_F64, FG_CPU);
    ck_assert_int_eq(fg_gradcheck(gc_exp, NULL, FG_GRADCHECK_MAX_INPUTS + 1, &x, NULL, &r),
                     FG_ERR_INVALID);
    CK_ERROR(FG_ERR_INVALID, "fg_gradcheck", "17");
}
END_TEST

/* ------------------------------------------------------ autograd states */
START_TEST(test_autograd_state_errors)
{
    fg_tensor *x = fg_ones(FG_SHAPE(2), FG_F32, FG_CPU);
    ck_assert_int_eq(fg_backward(fg_sum_all(x)), FG_ERR_STATE);
    CK_ERROR(FG_ERR_STATE, "fg_backward", "does not require grad");
    fg_set_requires_grad(x, true);
    fg_tensor *y = fg_mul(x, x);
    ck_assert_int_eq(fg_backward(y), FG_ERR_SHAPE);
    CK_ERROR(FG_ERR_SHAPE, "fg_backward", "(2,)", "2 elements");
    ck_assert_int_eq(fg_set_requires_grad(y, false), FG_ERR_STATE);
    CK_ERROR(FG_ERR_STATE, "mul", "not a leaf");
    fg_tensor *l = fg_sum_all(y);
    ck_assert_int_eq(fg_backward(l), FG_OK);
    ck_assert_int_eq(fg_backward(l), FG_ERR_STATE);
    CK_ERROR(FG_ERR_STATE, "fg_backward", "sum", "already freed");
}
END_TEST

/* ----------------------------------------------------------------- scopes */
START_TEST(test_scope_end_out_of_order)
{
    fg_scope *outer = fg_scope_begin();
    fg_tensor *a = fg_ones(FG_SHAPE(2), FG_F32, FG_CPU);
    fg_scope *inner = fg_scope_begin();
    fg_tensor *b = fg_ones(FG_SHAPE(3), FG_F32, FG_CPU);
    ck_assert_int_eq(fg_scope_end(outer), FG_ERR_STATE);
    CK_ERROR(FG_ERR_STATE, "fg_scope_end", "innermost");
    /* nothing was released: both tensors are still usable */
    ck_tensor_values(a, (const double[]){1, 1}, 2, 0);
    ck_tensor_values(b, (const double[]){1, 1, 1}, 3, 0);
    ck_assert_int_eq(fg_scope_end(inner), FG_OK);
    ck_assert_int_eq(fg_scope_end(outer), FG_OK);
    fg_clear_error();
    ck_assert_int_eq(fg_scope_end(NULL), FG_ERR_NULL);
    CK_ERROR(FG_ERR_NULL, "fg_scope_end");
    /* ending the fixture's scope while a newer one is open is refused too */
    fg_scope *s = fg_scope_begin();
    ck_assert_int_eq(fg_scope_end(tscope), FG_ERR_STATE);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
}
END_TEST

/* ------------------------------------------------ status names and reset */
START_TEST(test_clear_error)
{
    ck_assert_int_eq(fg_last_status(), FG_OK);
    ck_assert_str_eq(fg_last_error(), "");
    ck_assert_ptr_null(fg_add(mat(2, 2), mat(3, 3)));
    ck_assert_int_eq(fg_last_status(), FG_ERR_SHAPE);
    ck_assert_uint_gt(strlen(fg_last_error()), 10);
    fg_clear_error();
    ck_assert_int_eq(fg_last_status(), FG_OK);
    ck_assert_str_eq(fg_last_error(), "");
    /* successful calls do not clear an earlier error */
    ck_assert_ptr_null(fg_exp(fg_ones(FG_SHAPE(1), FG_I32, FG_CPU)));
    ck_assert_ptr_nonnull(fg_add(mat(2, 2), mat(2, 2)));
    ck_assert_int_eq(fg_last_status(), FG_ERR_DTYPE);
}
END_TEST

START_TEST(test_status_names)
{
    static const struct { fg_status s; const char *name; } names[] = {
        {FG_OK, "FG_OK"}, {FG_ERR_NULL, "FG_ERR_NULL"}, {FG_ERR_INVALID, "FG_ERR_INVALID"},
        {FG_ERR_SHAPE, "FG_ERR_SHAPE"}, {FG_ERR_DTYPE, "FG_ERR_DTYPE"}, {FG_ERR_DEVICE, "FG_ERR_DEVICE"},
        {FG_ERR_DIM, "FG_ERR_DIM"}, {FG_ERR_INDEX, "FG_ERR_INDEX"}, {FG_ERR_OVERFLOW, "FG_ERR_OVERFLOW"},
        {FG_ERR_OOM, "FG_ERR_OOM"}, {FG_ERR_STATE, "FG_ERR_STATE"}, {FG_ERR_UNSUPPORTED, "FG_ERR_UNSUPPORTED"},
        {FG_ERR_CUDA, "FG_ERR_CUDA"}, {FG_ERR_IO, "FG_ERR_IO"}, {FG_ERR_FORMAT, "FG_ERR_FORMAT"},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) ck_assert_str_eq(fg_status_name(names[i].s), names[i].name);
    ck_assert_str_eq(fg_status_name((fg_status)999), "FG_ERR_UNKNOWN");
    ck_assert_str_eq(fg_status_name((fg_status)-1), "FG_ERR_UNKNOWN");
    ck_assert_str_eq(fg_dtype_name((fg_dtype)99), "invalid");
    ck_assert_str_eq(fg_device_name((fg_device)5), "invalid");
}
END_TEST

START_TEST(test_long_message_truncated_safely)
{
    /* an 8-d shape on both sides of a failing op: the message is bounded and terminated */
    fg_tensor *a = fg_ones(FG_SHAPE(2, 3, 2, 3, 2, 3, 2, 3), FG_F32, FG_CPU);
    fg_tensor *b = fg_ones(FG_SHAPE(3, 2, 3, 2, 3, 2, 3, 2), FG_F32, FG_CPU);
    ck_assert_ptr_null(fg_add(a, b));
    CK_ERROR(FG_ERR_SHAPE, "add", "(2, 3, 2, 3, 2, 3, 2, 3", "(3, 2, 3, 2, 3, 2, 3, 2");
    ck_assert_uint_lt(strlen(fg_last_error()), 512);
}
END_TEST

START_TEST(test_errors_never_abort)
{
    /* a long run of failures of every kind, then ordinary work */
    fg_tensor *a = mat(2, 3);
    for (int i = 0; i < 100; i++) {
        fg_clear_error();
        ck_assert_ptr_null(fg_matmul(a, a));
        ck_assert_ptr_null(fg_add(a, NULL));
        ck_assert_ptr_null(fg_reshape(a, FG_SHAPE(7)));
        ck_assert_ptr_null(fg_transpose(a, 0, 5));
        ck_assert_ptr_null(fg_zeros(FG_SHAPE(-1), FG_F32, FG_CPU));
        ck_assert_ptr_null(fg_exp(fg_ones(FG_SHAPE(2), FG_I32, FG_CPU)));
        ck_assert_int_eq(fg_backward(a), FG_ERR_STATE);
        double one;
        ck_assert_int_eq(fg_copy_to_host(a, &one, sizeof one), FG_ERR_INVALID);
        ck_assert(isnan(fg_item(a)));
    }
    fg_clear_error();
    fg_tensor *x = fg_from_f64((const double[]){1, 2, 3, 4, 5, 6}, FG_SHAPE(2, 3), FG_F32, FG_CPU);
    fg_tensor *y = fg_matmul(x, fg_transpose(x, 0, 1));
    ck_tensor_values(y, (const double[]){14, 32, 32, 77}, 4, 1e-5);
    ck_assert_int_eq(fg_last_status(), FG_OK);
}
END_TEST

START_TEST(test_failed_calls_leak_nothing)
{
    fg_memory_stats m0, m1;
    fg_tensor *a = mat(2, 3), *b = mat(4, 5);
    fg_get_memory_stats(&m0);
    ck_assert_ptr_null(fg_matmul(a, b));
    ck_assert_ptr_null(fg_add(a, b));
    ck_assert_ptr_null(fg_reshape(a, FG_SHAPE(5)));
    ck_assert_ptr_null(fg_view(fg_transpose(a, 0, 1), FG_SHAPE(6))); /* the transpose itself is kept */
    ck_assert_ptr_null(fg_zeros(FG_SHAPE(1LL << 40, 1LL << 40), FG_F32, FG_CPU));
    ck_assert_ptr_null(fg_from_data(NULL, FG_SHAPE(3), FG_F32, FG_CPU));
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_tensors, m0.live_tensors + 1);
    ck_assert_int_eq(m1.live_storages, m0.live_storages);
    ck_assert_int_eq(m1.live_bytes[FG_CPU], m0.live_bytes[FG_CPU]);
}
END_TEST

START_TEST(test_empty_reductions)
{
    fg_tensor *e = fg_zeros(FG_SHAPE(0, 3), FG_F32, FG_CPU);
    ck_assert_ptr_null(fg_max(e, 0, false, NULL));
    CK_ERROR(FG_ERR_SHAPE, "max", "empty", "(0, 3)");
    ck_assert_ptr_null(fg_max_all(e));
    CK_ERROR(FG_ERR_SHAPE, "max", "empty");
    fg_tensor *idx = (fg_tensor *)1;
    ck_assert_ptr_null(fg_max(e, 0, true, &idx));
    ck_assert_ptr_null(idx); /* the optional output is cleared on failure */
    /* the sum of an empty tensor is fine: 0 */
    fg_tensor *s = fg_sum(e, FG_DIMS(0), false);
    ck_tensor_values(s, (const double[]){0, 0, 0}, 3, 0);
}
END_TEST

static fg_tensor *gc_bad_shapes(fg_tensor *const *in, void *ctx)
{
    (void)ctx;
    return fg_add(in[0], fg_ones(FG_SHAPE(5), FG_F64, FG_CPU));
}

START_TEST(test_gradcheck_reports_function_error)
{
    fg_tensor *x = fg_zeros(FG_SHAPE(3), FG_F64, FG_CPU);
    fg_set_requires_grad(x, true);
    fg_gradcheck_result r;
    ck_assert_int_eq(fg_gradcheck(gc_bad_shapes, NULL, 1, &x, NULL, &r), FG_ERR_SHAPE);
    CK_ERROR(FG_ERR_SHAPE, "add", "(3,", "(5,");
    ck_assert(!r.passed);
    fg_compare_result cr;
    fg_clear_error();
    ck_assert_int_eq(fg_compare(NULL, x, 0, 0, &cr), FG_ERR_NULL);
    CK_ERROR(FG_ERR_NULL, "fg_compare");
    fg_clear_error();
    ck_assert_int_eq(fg_compare(x, x, 0, 0, NULL), FG_ERR_NULL);
    CK_ERROR(FG_ERR_NULL, "fg_compare", "result");
}
END_TEST

static void *thread_fail(void *arg)
{
    (void)arg;
    fg_exp(NULL);
    ck_assert_int_eq(fg_last_status(), FG_ERR_NULL); /* a fresh thread starts without an error */
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "exp"));
    return (void *)(intptr_t)fg_last_status();
}

START_TEST(test_errors_are_thread_local)
{
    ck_assert_ptr_null(fg_add(mat(2, 2), mat(3, 3)));
    ck_assert_int_eq(fg_last_status(), FG_ERR_SHAPE);
    pthread_t th;
    void *ret = NULL;
    ck_assert_int_eq(pthread_create(&th, NULL, thread_fail, NULL), 0);
    ck_assert_int_eq(pthread_join(th, &ret), 0);
    ck_assert_int_eq((int)(intptr_t)ret, FG_ERR_NULL);
    CK_ERROR(FG_ERR_SHAPE, "add", "(2, 2)", "(3, 3)"); /* this thread's error is untouched */
}
END_TEST

static Suite *errors_suite(void)
{
    Suite *s = suite_create("errors");
    TCase *c = tcase_create("errors");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, test_null_inputs);
    tcase_add_test(c, test_null_chain_keeps_first_error);
    tcase_add_test(c, test_new_error_overwrites_after_clear);
    tcase_add_test(c, test_broadcast_failure_message);
    tcase_add_test(c, test_matmul_shape_errors);
    tcase_add_test(c, test_reshape_errors);
    tcase_add_test(c, test_copy_and_compare_shape_errors);
    tcase_add_test(c, test_dtype_mismatch);
    tcase_add_test(c, test_dtype_unsupported);
    tcase_add_test(c, test_device_unavailable);
    tcase_add_test(c, test_bad_dims);
    tcase_add_test(c, test_index_out_of_range);
    tcase_add_test(c, test_overflow);
    tcase_add_test(c, test_negative_size);
    tcase_add_test(c, test_too_many_dims);
    tcase_add_test(c, test_invalid_values);
    tcase_add_test(c, test_autograd_state_errors);
    tcase_add_test(c, test_scope_end_out_of_order);
    tcase_add_test(c, test_clear_error);
    tcase_add_test(c, test_status_names);
    tcase_add_test(c, test_long_message_truncated_safely);
    tcase_add_test(c, test_errors_never_abort);
    tcase_add_test(c, test_failed_calls_leak_nothing);
    tcase_add_test(c, test_empty_reductions);
    tcase_add_test(c, test_gradcheck_reports_function_error);
    tcase_add_test(c, test_errors_are_thread_local);
    suite_add_tcase(s, c);
    return s;
}

FG_TEST_MAIN(errors_suite)
