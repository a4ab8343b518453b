/* Suite "tensor": creation, dtypes and conversions, properties, views sharing
 * storage, copies, casts, in-place fills, shape strings and printing. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* open_memstream */
#endif
#include <stdio.h>
#include <string.h>
#include "testutil.h"

#define NVALS(...) ((int64_t)(sizeof((double[]){__VA_ARGS__}) / sizeof(double)))
#define CK_VALUES(t, tol, ...) ck_tensor_values((t), (const double[]){__VA_ARGS__}, NVALS(__VA_ARGS__), (tol))

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

static fg_tensor *iota(int ndim, const int64_t *shape, fg_dtype dt)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    fg_tensor *flat = fg_arange(0, (double)n, 1, dt, FG_CPU);
    fg_tensor *t = fg_reshape(flat, ndim, shape);
    ck_assert_ptr_nonnull(t);
    return t;
}

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---------------------------------------------------------------- creation */
START_TEST(test_empty_props)
{
    fg_tensor *t = fg_empty(FG_SHAPE(2, 3), FG_F32, FG_CPU);
    ck_shape(t, 2, (const int64_t[]){2, 3});
    ck_assert_int_eq(fg_numel(t), 6);
    ck_assert_int_eq(fg_dtype_of(t), FG_F32);
    ck_assert_int_eq(fg_device_of(t), FG_CPU);
    ck_assert(fg_is_contiguous(t));
    ck_assert_int_eq(fg_strides(t)[0], 3);
    ck_assert_int_eq(fg_strides(t)[1], 1);
    ck_assert(!fg_requires_grad(t));
    ck_assert(!fg_has_grad_fn(t));
}
END_TEST

START_TEST(test_zeros_ones_full)
{
    fg_tensor *z = fg_zeros(FG_SHAPE(2, 2), FG_F64, FG_CPU);
    fg_tensor *o = fg_ones(FG_SHAPE(3), FG_I32, FG_CPU);
    fg_tensor *f = fg_full(FG_SHAPE(2, 1, 2), -2.5, FG_F32, FG_CPU);
    fg_tensor *h = fg_full(FG_SHAPE(2), 3.0, FG_BF16, FG_CPU);
    CK_VALUES(z, 0, 0, 0, 0, 0);
    CK_VALUES(o, 0, 1, 1, 1);
    CK_VALUES(f, 0, -2.5, -2.5, -2.5, -2.5);
    CK_VALUES(h, 0, 3, 3);
    ck_assert_int_eq(fg_dtype_of(o), FG_I32);
}
END_TEST

START_TEST(test_scalar)
{
    fg_tensor *s = fg_scalar(2.5, FG_F64, FG_CPU);
    ck_assert_int_eq(fg_ndim(s), 0);
    ck_assert_int_eq(fg_numel(s), 1);
    ck_assert(fg_is_contiguous(s));
    ck_close(fg_item(s), 2.5, 0);
    ck_close(fg_get(s, NULL), 2.5, 0);
    fg_tensor *i = fg_scalar(-7, FG_I64, FG_CPU);
    ck_close(fg_item(i), -7, 0);
}
END_TEST

START_TEST(test_arange)
{
    fg_tensor *a = fg_arange(0, 5, 1, FG_F32, FG_CPU);
    ck_shape(a, 1, (const int64_t[]){5});
    CK_VALUES(a, 0, 0, 1, 2, 3, 4);
    fg_tensor *b = fg_arange(1, 2, 0.25, FG_F64, FG_CPU);
    CK_VALUES(b, 0, 1, 1.25, 1.5, 1.75);
    fg_tensor *c = fg_arange(-3, 3, 2, FG_I64, FG_CPU);
    CK_VALUES(c, 0, -3, -1, 1);
    ck_assert_int_eq(fg_dtype_of(c), FG_I64);
}
END_TEST

START_TEST(test_arange_negative_step)
{
    fg_tensor *a = fg_arange(5, 0, -1.5, FG_F64, FG_CPU);
    ck_shape(a, 1, (const int64_t[]){4});
    CK_VALUES(a, 0, 5, 3.5, 2, 0.5);
    fg_tensor *b = fg_arange(3, -1, -1, FG_I32, FG_CPU);
    CK_VALUES(b, 0, 3, 2, 1, 0);
}
END_TEST

START_TEST(test_arange_empty)
{
    fg_tensor *a = fg_arange(3, 1, 1, FG_F32, FG_CPU);
    ck_assert_ptr_nonnull(a);
    ck_shape(a, 1, (const int64_t[]){0});
    ck_assert_int_eq(fg_numel(a), 0);
    fg_tensor *b = fg_arange(0, 0, 1, FG_F64, FG_CPU);
    ck_assert_int_eq(fg_numel(b), 0);
    fg_tensor *c = fg_arange(0, 5, -1, FG_F64, FG_CPU); /* wrong direction: empty */
    ck_assert_int_eq(fg_numel(c), 0);
    double dummy;
    ck_assert_int_eq(fg_to_f64_array(a, &dummy, 0), FG_OK);
}
END_TEST

START_TEST(test_from_data)
{
    int32_t d[6] = {1, -2, 3, -4, 5, 2147483647};
    fg_tensor *t = fg_from_data(d, FG_SHAPE(2, 3), FG_I32, FG_CPU);
    ck_shape(t, 2, (const int64_t[]){2, 3});
    CK_VALUES(t, 0, 1, -2, 3, -4, 5, 2147483647);
    d[0] = 100; /* the tensor owns a copy */
    ck_close(fg_get(t, (const int64_t[]){0, 0}), 1, 0);
}
END_TEST

START_TEST(test_from_f64_f32)
{
    const double dv[3] = {0.1, -1e10, 3.0};
    fg_tensor *a = fg_from_f64(dv, FG_SHAPE(3), FG_F32, FG_CPU);
    float fa[3];
    ck_assert_int_eq(fg_copy_to_host(a, fa, sizeof fa), FG_OK);
    ck_assert(fa[0] == 0.1f && fa[1] == -1e10f && fa[2] == 3.0f);
    const float fv[2] = {0.1f, -0.5f};
    fg_tensor *b = fg_from_f32(fv, FG_SHAPE(2), FG_F64, FG_CPU);
    double db[2];
    ck_assert_int_eq(fg_copy_to_host(b, db, sizeof db), FG_OK);
    ck_assert(db[0] == (double)0.1f && db[1] == -0.5);
    fg_tensor *c = fg_from_f64(dv, FG_SHAPE(3), FG_I64, FG_CPU);
    CK_VALUES(c, 0, 0, -1e10, 3);
}
END_TEST

START_TEST(test_zeros_like_ones_like)
{
    fg_tensor *base = fg_full(FG_SHAPE(2, 4, 1), 9, FG_BF16, FG_CPU);
    fg_tensor *z = fg_zeros_like(base), *o = fg_ones_like(base);
    ck_shape(z, 3, (const int64_t[]){2, 4, 1});
    ck_assert_int_eq(fg_dtype_of(z), FG_BF16);
    ck_assert_int_eq(fg_dtype_of(o), FG_BF16);
    ck_assert(!fg_shares_storage(z, base));
    double v[8];
    ck_assert_int_eq(fg_to_f64_array(z, v, 8), FG_OK);
    for (int i = 0; i < 8; i++) ck_assert(v[i] == 0);
    ck_assert_int_eq(fg_to_f64_array(o, v, 8), FG_OK);
    for (int i = 0; i < 8; i++) ck_assert(v[i] == 1);
    /* of a transposed (non-contiguous) tensor: contiguous, same shape */
    fg_tensor *tz = fg_zeros_like(fg_transpose(base, 0, 1));
    ck_shape(tz, 3, (const int64_t[]){4, 2, 1});
    ck_assert(fg_is_contiguous(tz));
}
END_TEST

/* ----------------------------------------------------------------- dtypes */
START_TEST(test_dtype_meta)
{
    static const char *names[] = {"f32", "f64", "bf16", "f16", "i32", "i64"};
    static const size_t sizes[] = {4, 8, 2, 2, 4, 8};
    for (int d = 0; d < FG_NUM_DTYPES; d++) {
        ck_assert_str_eq(fg_dtype_name((fg_dtype)d), names[d]);
        ck_assert_uint_eq(fg_dtype_size((fg_dtype)d), sizes[d]);
        ck_assert(fg_dtype_is_float((fg_dtype)d) == (d <= FG_F16));
    }
    ck_assert_str_eq(fg_device_name(FG_CPU), "cpu");
    ck_assert_str_eq(fg_device_name(FG_CUDA), "cuda");
}
END_TEST

START_TEST(test_roundtrip_all_dtypes)
{
    float f32[4] = {1.5f, -0.0f, 3.4028235e38f, 1e-45f};
    double f64[4] = {0.1, -1e300, 4.9e-324, 12345.678};
    uint16_t bf16[4] = {0x3f80, 0x7fc1, 0x8001, 0xff80}; /* incl. a NaN payload and -inf */
    uint16_t f16[4] = {0x3c00, 0x7c01, 0x0001, 0xfbff};
    int32_t i32[4] = {INT32_MIN, -1, 0, INT32_MAX};
    int64_t i64[4] = {INT64_MIN, -((int64_t)1 << 60) - 1, ((int64_t)1 << 53) + 1, INT64_MAX};
    const void *src[FG_NUM_DTYPES] = {f32, f64, bf16, f16, i32, i64};
    for (int d = 0; d < FG_NUM_DTYPES; d++) {
        fg_tensor *t = fg_from_data(src[d], FG_SHAPE(2, 2), (fg_dtype)d, FG_CPU);
        ck_assert_ptr_nonnull(t);
        ck_assert_int_eq(fg_dtype_of(t), d);
        unsigned char back[40];
        memset(back, 0xAB, sizeof back);
        size_t bytes = 4 * fg_dtype_size((fg_dtype)d);
        ck_assert_int_eq(fg_copy_to_host(t, back, bytes), FG_OK);
        ck_assert_msg(memcmp(back, src[d], bytes) == 0, "dtype %s does not round trip", fg_dtype_name((fg_dtype)d));
        ck_assert_uint_eq(back[bytes], 0xAB); /* nothing written past the tensor */
        /* a strided (transposed) read-back too: element order [0, 2, 1, 3] */
        fg_tensor *tt = fg_transpose(t, 0, 1);
        ck_assert_int_eq(fg_copy_to_host(tt, back, bytes), FG_OK);
        size_t es = fg_dtype_size((fg_dtype)d);
        const unsigned char *s = src[d];
        ck_assert(memcmp(back + 1 * es, s + 2 * es, es) == 0);
        ck_assert(memcmp(back + 2 * es, s + 1 * es, es) == 0);
    }
}
END_TEST

START_TEST(test_bf16_round_to_nearest_even)
{
    ck_assert_uint_eq(fg_float_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(fg_float_to_bf16(1.00390625f), 0x3f80);      /* 1 + 2^-8: tie, down to even */
    ck_assert_uint_eq(fg_float_to_bf16(1.01171875f), 0x3f82);      /* 1 + 3*2^-8: tie, up to even */
    ck_assert_uint_eq(fg_float_to_bf16(0x1.010002p0f), 0x3f81);     /* one float ulp above the tie */
    ck_assert_uint_eq(fg_float_to_bf16(-1.00390625f), 0xbf80);
    ck_assert_uint_eq(fg_float_to_bf16(-2.0f), 0xc000);
    ck_assert_uint_eq(fg_float_to_bf16(INFINITY), 0x7f80);
    ck_assert_uint_eq(fg_float_to_bf16(-INFINITY), 0xff80);
    ck_assert_uint_eq(fg_float_to_bf16(3.4028235e38f), 0x7f80);    /* FLT_MAX rounds to inf */
    ck_assert_uint_eq(fg_float_to_bf16(0.0f), 0x0000);
    ck_assert_uint_eq(fg_float_to_bf16(-0.0f), 0x8000);
    uint16_t n = fg_float_to_bf16(NAN);
    ck_assert((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0);
    ck_assert(isnan(fg_bf16_to_float(n)));
    /* a NaN whose payload sits only in the low 16 bits must stay NaN */
    uint32_t u = 0x7f800001;
    float lownan;
    memcpy(&lownan, &u, 4);
    ck_assert(isnan(fg_bf16_to_float(fg_float_to_bf16(lownan))));
    ck_assert(fg_bf16_to_float(0x3f81) == 1.0078125f);
    ck_assert(fg_bf16_to_float(0x4049) == 3.140625f);
    /* every bf16 value converts to float and back unchanged */
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = fg_bf16_to_float((uint16_t)h);
        if (isnan(f)) continue;
        ck_assert_uint_eq(fg_float_to_bf16(f), h);
        ck_assert_uint_eq(f2u(f) >> 16, h);
    }
}
END_TEST

START_TEST(test_f16_conversion)
{
    ck_assert_uint_eq(fg_float_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(fg_float_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(fg_float_to_f16(65519.0f), 0x7bff);         /* below the halfway point */
    ck_assert_uint_eq(fg_float_to_f16(65520.0f), 0x7c00);         /* tie with 2^16: to even = inf */
    ck_assert_uint_eq(fg_float_to_f16(-65520.0f), 0xfc00);
    ck_assert_uint_eq(fg_float_to_f16(1e10f), 0x7c00);
    ck_assert_uint_eq(fg_float_to_f16(-INFINITY), 0xfc00);
    ck_assert_uint_eq(fg_float_to_f16(0x1p-24f), 0x0001);          /* smallest subnormal */
    ck_assert_uint_eq(fg_float_to_f16(0x1p-25f), 0x0000);          /* tie with 0: to even */
    ck_assert_uint_eq(fg_float_to_f16(0x1.8p-24f), 0x0002);        /* 1.5 quanta: tie up to even */
    ck_assert_uint_eq(fg_float_to_f16(0x1.8p-23f), 0x0003);        /* 3 quanta exactly */
    ck_assert_uint_eq(fg_float_to_f16(-0x1p-24f), 0x8001);
    ck_assert_uint_eq(fg_float_to_f16(0x1p-14f), 0x0400);          /* smallest normal */
    ck_assert_uint_eq(fg_float_to_f16(0x1.ff8p-15f), 0x03ff);      /* largest subnormal */
    ck_assert_uint_eq(fg_float_to_f16(0x1.ffcp-15f), 0x0400);      /* 1023.5 quanta: tie, up into the normals */
    ck_assert_uint_eq(fg_float_to_f16(0x1.ff4p-15f), 0x03fe);      /* 1022.5 quanta: tie, down to even */
    ck_assert_uint_eq(fg_float_to_f16(1.0f + 0x1p-11f), 0x3c00);   /* tie, down to even */
    ck_assert_uint_eq(fg_float_to_f16(1.0f + 0x3p-11f), 0x3c02);   /* tie, up to even */
    ck_assert_uint_eq(fg_float_to_f16(-0.0f), 0x8000);
    uint16_t n = fg_float_to_f16(NAN);
    ck_assert((n & 0x7c00) == 0x7c00 && (n & 0x3ff) != 0);
    ck_assert(isnan(fg_f16_to_float(n)));
    ck_assert(fg_f16_to_float(0x0001) == 0x1p-24f);
    ck_assert(fg_f16_to_float(0x7bff) == 65504.0f);
    ck_assert(isinf(fg_f16_to_float(0x7c00)));
    ck_assert(fg_f16_to_float(0xc000) == -2.0f);
    /* every non-NaN f16 converts to float and back unchanged */
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = fg_f16_to_float((uint16_t)h);
        if (isnan(f)) continue;
        ck_assert_msg(fg_float_to_f16(f) == h, "f16 0x%04x -> %g -> 0x%04x", h, f, fg_float_to_f16(f));
    }
}
END_TEST

START_TEST(test_half_tensor_storage)
{
    const double v[4] = {1.00390625, 1.01171875, 65520, 0x1p-24};
    fg_tensor *b = fg_from_f64(v, FG_SHAPE(4), FG_BF16, FG_CPU);
    CK_VALUES(b, 0, 1.0, 1.015625, 65536, 0x1p-24);
    fg_tensor *h = fg_from_f64(v, FG_SHAPE(4), FG_F16, FG_CPU);
    double out[4];
    ck_assert_int_eq(fg_to_f64_array(h, out, 4), FG_OK);
    ck_assert(out[0] == 1.00390625); /* exact in f16 (10 mantissa bits) */
    ck_assert(out[1] == 1.01171875);
    ck_assert(isinf(out[2]) && out[2] > 0);
    ck_assert(out[3] == 0x1p-24);
    uint16_t raw[4];
    ck_assert_int_eq(fg_copy_to_host(h, raw, sizeof raw), FG_OK);
    ck_assert_uint_eq(raw[2], 0x7c00);
    ck_assert_uint_eq(raw[3], 0x0001);
}
END_TEST

START_TEST(test_copy_to_host_errors)
{
    fg_tensor *t = fg_ones(FG_SHAPE(2, 3), FG_F64, FG_CPU);
    double buf[6];
    ck_assert_int_eq(fg_copy_to_host(t, buf, 5 * sizeof(double)), FG_ERR_INVALID);
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "fg_copy_to_host"));
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "(2, 3)"));
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "48"));
    ck_assert_int_eq(fg_to_f64_array(t, buf, 5), FG_ERR_INVALID);
    float fb[6];
    ck_assert_int_eq(fg_to_f32_array(t, fb, 3), FG_ERR_INVALID);
    fg_clear_error();
    ck_assert_int_eq(fg_copy_to_host(t, NULL, 48), FG_ERR_NULL);
    fg_clear_error();
    ck_assert_int_eq(fg_copy_to_host(NULL, buf, 48), FG_ERR_NULL);
    fg_clear_error();
    ck_assert_int_eq(fg_copy_to_host(t, buf, sizeof buf), FG_OK); /* exactly enough */
    for (int i = 0; i < 6; i++) ck_assert(buf[i] == 1.0);
    ck_assert_int_eq(fg_to_f32_array(t, fb, 6), FG_OK);
    ck_assert(fb[5] == 1.0f);
}
END_TEST

START_TEST(test_item_get)
{
    fg_tensor *one = fg_full(FG_SHAPE(1, 1), 4.25, FG_F32, FG_CPU);
    ck_close(fg_item(one), 4.25, 0);
    fg_tensor *t = iota(FG_SHAPE(2, 3), FG_F64);
    ck_assert(isnan(fg_item(t)));
    ck_assert_int_eq(fg_last_status(), FG_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "fg_item"));
    fg_clear_error();
    ck_close(fg_get(t, (const int64_t[]){1, 2}), 5, 0);
    ck_close(fg_get(t, (const int64_t[]){0, 1}), 1, 0);
    ck_assert_int_eq(fg_last_status(), FG_OK);
    ck_assert(isnan(fg_get(t, (const int64_t[]){2, 0})));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INDEX);
    ck_assert(isnan(fg_get(t, (const int64_t[]){0, -1})));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INDEX);
    /* fg_get through a view's strides and offset */
    fg_tensor *v = fg_slice(fg_transpose(t, 0, 1), 0, 1, 3, 1); /* (2, 2): [[1,4],[2,5]] */
    ck_close(fg_get(v, (const int64_t[]){0, 1}), 4, 0);
    ck_close(fg_get(v, (const int64_t[]){1, 0}), 2, 0);
}
END_TEST

/* ------------------------------------------------------------- properties */
START_TEST(test_properties)
{
    fg_tensor *t = fg_zeros(FG_SHAPE(2, 3, 4), FG_F32, FG_CPU);
    ck_assert_int_eq(fg_ndim(t), 3);
    ck_assert_int_eq(fg_numel(t), 24);
    ck_assert_int_eq(fg_size(t, 0), 2);
    ck_assert_int_eq(fg_size(t, 2), 4);
    ck_assert_int_eq(fg_size(t, -1), 4);
    ck_assert_int_eq(fg_size(t, -3), 2);
    ck_assert_int_eq(fg_last_status(), FG_OK);
    ck_assert_int_eq(fg_size(t, 3), -1);
    ck_assert_int_eq(fg_last_status(), FG_ERR_DIM);
    fg_clear_error();
    ck_assert_int_eq(fg_size(t, -4), -1);
    ck_assert_int_eq(fg_last_status(), FG_ERR_DIM);
    const int64_t *st = fg_strides(t);
    ck_assert_int_eq(st[0], 12);
    ck_assert_int_eq(st[1], 4);
    ck_assert_int_eq(st[2], 1);
    ck_assert(fg_is_contiguous(t));
    ck_assert(!fg_is_contiguous(fg_transpose(t, 0, 2)));
    ck_assert(fg_is_contiguous(fg_narrow(t, 0, 1, 1))); /* a leading slice stays contiguous */
    ck_assert(!fg_is_contiguous(fg_narrow(t, 2, 1, 2)));
    ck_assert_int_eq(fg_ndim(NULL), -1);
    ck_assert_int_eq(fg_numel(NULL), -1);
}
END_TEST

START_TEST(test_zero_size_dims)
{
    fg_tensor *t = fg_zeros(FG_SHAPE(3, 0, 2), FG_F32, FG_CPU);
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(fg_numel(t), 0);
    ck_assert(fg_is_contiguous(t));
    ck_assert_int_eq(fg_fill_(t, 1), FG_OK);
    fg_tensor *r = fg_reshape(t, FG_SHAPE(0, 6));
    ck_shape(r, 2, (const int64_t[]){0, 6});
    fg_tensor *r2 = fg_reshape(t, FG_SHAPE(2, -1, 3)); /* -1 inferred as 0 */
    ck_shape(r2, 3, (const int64_t[]){2, 0, 3});
    ck_assert_ptr_null(fg_reshape(t, FG_SHAPE(0, -1))); /* ambiguous: any size fits */
    ck_assert_int_eq(fg_last_status(), FG_ERR_SHAPE);
    fg_clear_error();
    ck_assert_int_eq(fg_copy_to_host(t, NULL, 0), FG_OK);
}
END_TEST

/* ------------------------------------------------------------------ views */
START_TEST(test_reshape_view)
{
    fg_tensor *a = fg_arange(0, 12, 1, FG_F32, FG_CPU);
    fg_tensor *r = fg_reshape(a, FG_SHAPE(3, 4));
    ck_shape(r, 2, (const int64_t[]){3, 4});
    ck_assert(fg_shares_storage(a, r));
    ck_close(fg_get(r, (const int64_t[]){2, 1}), 9, 0);
    fg_tensor *r2 = fg_reshape(r, FG_SHAPE(2, -1, 3));
    ck_shape(r2, 3, (const int64_t[]){2, 2, 3});
    ck_assert(fg_shares_storage(a, r2));
    ck_close(fg_get(r2, (const int64_t[]){1, 0, 2}), 8, 0);
    fg_tensor *r3 = fg_reshape(r2, FG_SHAPE(-1));
    CK_VALUES(r3, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);
    /* writes through a view show in the base */
    ck_assert_int_eq(fg_fill_(fg_narrow(r, 0, 1, 1), -1), FG_OK);
    CK_VALUES(a, 0, 0, 1, 2, 3, -1, -1, -1, -1, 8, 9, 10, 11);
}
END_TEST

START_TEST(test_reshape_copies_when_needed)
{
    fg_tensor *a = iota(FG_SHAPE(3, 4), FG_F64);
    fg_tensor *t = fg_transpose(a, 0, 1); /* (4, 3) */
    fg_tensor *r = fg_reshape(t, FG_SHAPE(12));
    ck_assert_ptr_nonnull(r);
    ck_assert(!fg_shares_storage(a, r));
    ck_assert(fg_is_contiguous(r));
    CK_VALUES(r, 0, 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11);
    /* a reshape that only splits a dim of the transposed tensor stays a view */
    fg_tensor *s = fg_reshape(t, FG_SHAPE(2, 2, 3));
    ck_assert(fg_shares_storage(a, s));
    ck_close(fg_get(s, (const int64_t[]){1, 0, 2}), 10, 0);
    /* a uniformly strided slice flattens without a copy */
    fg_tensor *b = iota(FG_SHAPE(4, 6), FG_F64);
    fg_tensor *sl = fg_slice(b, 1, 0, 6, 2); /* (4, 3), strides (6, 2) */
    fg_tensor *f = fg_reshape(sl, FG_SHAPE(12));
    ck_assert(fg_shares_storage(b, f));
    CK_VALUES(f, 0, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22);
}
END_TEST

START_TEST(test_view_fails_on_transposed)
{
    fg_tensor *a = iota(FG_SHAPE(3, 4), FG_F32);
    fg_tensor *t = fg_transpose(a, 0, 1);
    fg_tensor *v = fg_view(t, FG_SHAPE(12));
    ck_assert_ptr_null(v);
    ck_assert_int_eq(fg_last_status(), FG_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "view"));
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "(4, 3)"));
    fg_clear_error();
    fg_tensor *ok = fg_view(a, FG_SHAPE(2, 6));
    ck_assert(fg_shares_storage(a, ok));
    ck_assert_ptr_null(fg_reshape(a, FG_SHAPE(5, -1)));
    ck_assert_int_eq(fg_last_status(), FG_ERR_SHAPE);
    ck_assert_ptr_null(fg_reshape(a, FG_SHAPE(-1, -1)));
    ck_assert_int_eq(fg_last_status(), FG_ERR_SHAPE);
    ck_assert_ptr_null(fg_reshape(a, FG_SHAPE(5, 2)));
    ck_assert_int_eq(fg_last_status(), FG_ERR_SHAPE);
}
END_TEST

START_TEST(test_transpose)
{
    fg_tensor *a = iota(FG_SHAPE(2, 3), FG_F32);
    fg_tensor *t = fg_transpose(a, 0, -1);
    ck_shape(t, 2, (const int64_t[]){3, 2});
    ck_assert(fg_shares_storage(a, t));
    ck_assert_int_eq(fg_strides(t)[0], 1);
    ck_assert_int_eq(fg_strides(t)[1], 3);
    ck_assert(!fg_is_contiguous(t));
    CK_VALUES(t, 0, 0, 3, 1, 4, 2, 5);
    fg_tensor *tt = fg_transpose(t, 1, 0);
    ck_assert(fg_is_contiguous(tt));
    CK_VALUES(tt, 0, 0, 1, 2, 3, 4, 5);
}
END_TEST

START_TEST(test_permute)
{
    fg_tensor *a = iota(FG_SHAPE(2, 3, 4), FG_F64);
    fg_tensor *p = fg_permute(a, FG_DIMS(2, 0, 1));
    ck_shape(p, 3, (const int64_t[]){4, 2, 3});
    ck_assert(fg_shares_storage(a, p));
    ck_assert_int_eq(fg_strides(p)[0], 1);
    ck_assert_int_eq(fg_strides(p)[1], 12);
    ck_assert_int_eq(fg_strides(p)[2], 4);
    /* p[k][i][j] = a[i][j][k] = 12 i + 4 j + k */
    ck_close(fg_get(p, (const int64_t[]){3, 1, 2}), 12 + 8 + 3, 0);
    ck_close(fg_get(p, (const int64_t[]){1, 0, 1}), 4 + 1, 0);
    fg_tensor *c = fg_contiguous(p);
    double v[24];
    ck_assert_int_eq(fg_to_f64_array(c, v, 24), FG_OK);
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++) ck_assert(v[k * 6 + i * 3 + j] == 12 * i + 4 * j + k);
    fg_tensor *neg = fg_permute(a, FG_DIMS(-1, -2, -3));
    ck_shape(neg, 3, (const int64_t[]){4, 3, 2});
    ck_assert_ptr_null(fg_permute(a, FG_DIMS(0, 0, 1)));
    ck_assert_int_eq(fg_last_status(), FG_ERR_DIM);
}
END_TEST

START_TEST(test_narrow)
{
    fg_tensor *a = iota(FG_SHAPE(4, 5), FG_F32);
    fg_tensor *n = fg_narrow(a, 1, 1, 3);
    ck_shape(n, 2, (const int64_t[]){4, 3});
    ck_assert(fg_shares_storage(a, n));
    CK_VALUES(n, 0, 1, 2, 3, 6, 7, 8, 11, 12, 13, 16, 17, 18);
    fg_tensor *n0 = fg_narrow(a, -2, 2, 2);
    CK_VALUES(n0, 0, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19);
    fg_tensor *e = fg_narrow(a, 0, 4, 0); /* empty at the end is fine */
    ck_assert_int_eq(fg_numel(e), 0);
    ck_assert_ptr_null(fg_narrow(a, 1, 3, 3));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INDEX);
}
END_TEST

START_TEST(test_slice_step_and_negative)
{
    fg_tensor *a = fg_arange(0, 10, 1, FG_F64, FG_CPU);
    fg_tensor *s = fg_slice(a, 0, 1, 8, 3);
    ck_assert(fg_shares_storage(a, s));
    ck_assert_int_eq(fg_strides(s)[0], 3);
    CK_VALUES(s, 0, 1, 4, 7);
    CK_VALUES(fg_slice(a, 0, -4, -1, 1), 0, 6, 7, 8);
    CK_VALUES(fg_slice(a, -1, -3, 100, 1), 0, 7, 8, 9);  /* end clamps */
    CK_VALUES(fg_slice(a, 0, -100, 3, 2), 0, 0, 2);       /* start clamps */
    ck_assert_int_eq(fg_numel(fg_slice(a, 0, 7, 2, 1)), 0); /* end before start: empty */
    CK_VALUES(fg_slice(a, 0, 0, 10, 4), 0, 0, 4, 8);
    fg_tensor *m = iota(FG_SHAPE(4, 3), FG_F64);
    fg_tensor *rows = fg_slice(m, 0, 1, 4, 2); /* rows 1 and 3 */
    CK_VALUES(rows, 0, 3, 4, 5, 9, 10, 11);
    ck_assert_ptr_null(fg_slice(a, 0, 0, 5, 0));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
    ck_assert_ptr_null(fg_slice(a, 0, 0, 5, -1));
    ck_assert_int_eq(fg_last_status(), FG_ERR_INVALID);
}
END_TEST

START_TEST(test_expand)
{
    fg_tensor *a = fg_arange(1, 4, 1, FG_F32, FG_CPU);
    fg_tensor *c = fg_reshape(a, FG_SHAPE(3, 1));
    fg_tensor *e = fg_expand(c, FG_SHAPE(2, 3, 4));
    ck_shape(e, 3, (const int64_t[]){2, 3, 4});
    ck_assert(fg_shares_storage(a, e));
    ck_assert_int_eq(fg_strides(e)[0], 0);
    ck_assert_int_eq(fg_strides(e)[1], 1);
    ck_assert_int_eq(fg_strides(e)[2], 0);
    ck_assert(!fg_is_contiguous(e));
    double v[24];
    ck_assert_int_eq(fg_to_f64_array(e, v, 24), FG_OK);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++) ck_assert(v[i * 12 + j * 4 + k] == j + 1);
    fg_tensor *e2 = fg_expand(c, FG_SHAPE(-1, 5));
    ck_shape(e2, 2, (const int64_t[]){3, 5});
    ck_assert_ptr_null(fg_expand(c, FG_SHAPE(4, 2)));
    ck_assert_int_eq(fg_last_status(), FG_ERR_SHAPE);
    /* an expanded tensor materialises with contiguous() */
    fg_tensor *m = fg_contiguous(e2);
    ck_assert(!fg_shares_storage(m, a));
    CK_VALUES(fg_narrow(m, 1, 0, 1), 0, 1, 2, 3);
}
END_TEST

START_TEST(test_squeeze_unsqueeze)
{
    fg_tensor *a = iota(FG_SHAPE(2, 1, 3), FG_F32);
    fg_tensor *s = fg_squeeze(a, 1);
    ck_shape(s, 2, (const int64_t[]){2, 3});
    ck_assert(fg_shares_storage(a, s));
    CK_VALUES(s, 0, 0, 1, 2, 3, 4, 5);
    fg_tensor *u = fg_unsqueeze(s, -1);
    ck_shape(u, 3, (const int64_t[]){2, 3, 1});
    fg_tensor *u0 = fg_unsqueeze(s, 0);
    ck_shape(u0, 3, (const int64_t[]){1, 2, 3});
    fg_tensor *um = fg_unsqueeze(s, 1);
    ck_shape(um, 3, (const int64_t[]){2, 1, 3});
    ck_assert(fg_shares_storage(a, um));
    fg_tensor *sn = fg_squeeze(a, -2);
    ck_shape(sn, 2, (const int64_t[]){2, 3});
    ck_assert_ptr_null(fg_squeeze(a, 0));
    ck_assert_int_eq(fg_last_status(), FG_ERR_SHAPE);
    /* unsqueeze of a transposed tensor is still a view */
    fg_tensor *t = fg_transpose(s, 0, 1);
    fg_tensor *ut = fg_unsqueeze(t, 1);
    ck_assert(fg_shares_storage(a, ut));
    CK_VALUES(ut, 0, 0, 3, 1, 4, 2, 5);
}
END_TEST

START_TEST(test_flatten)
{
    fg_tensor *a = iota(FG_SHAPE(2, 3, 2), FG_F64);
    fg_tensor *f = fg_flatten(a);
    ck_shape(f, 1, (const int64_t[]){12});
    ck_assert(fg_shares_storage(a, f));
    fg_tensor *ft = fg_flatten(fg_transpose(a, 0, 2)); /* (2, 3, 2) transposed: copy */
    ck_shape(ft, 1, (const int64_t[]){12});
    ck_assert(!fg_shares_storage(a, ft));
    CK_VALUES(ft, 0, 0, 6, 2, 8, 4, 10, 1, 7, 3, 9, 5, 11);
    fg_tensor *s = fg_flatten(fg_scalar(3, FG_F32, FG_CPU));
    ck_shape(s, 1, (const int64_t[]){1});
}
END_TEST

START_TEST(test_contiguous)
{
    fg_tensor *a = iota(FG_SHAPE(2, 3), FG_F32);
    fg_tensor *c0 = fg_contiguous(a);
    ck_assert(fg_shares_storage(a, c0)); /* already contiguous: no copy */
    fg_tensor *t = fg_transpose(a, 0, 1);
    fg_tensor *c = fg_contiguous(t);
    ck_assert(fg_is_contiguous(c));
    ck_assert(!fg_shares_storage(a, c));
    ck_assert_int_eq(fg_strides(c)[0], 2);
    CK_VALUES(c, 0, 0, 3, 1, 4, 2, 5);
}
END_TEST

START_TEST(test_clone_independent)
{
    fg_tensor *a = iota(FG_SHAPE(2, 2), FG_F64);
    fg_tensor *c = fg_clone(a);
    ck_assert(!fg_shares_storage(a, c));
    CK_VALUES(c, 0, 0, 1, 2, 3);
    ck_assert_int_eq(fg_fill_(c, 9), FG_OK);
    CK_VALUES(c, 0, 9, 9, 9, 9);
    CK_VALUES(a, 0, 0, 1, 2, 3);
    fg_tensor *ct = fg_clone(fg_transpose(a, 0, 1));
    ck_assert(fg_is_contiguous(ct));
    CK_VALUES(ct, 0, 0, 2, 1, 3);
}
END_TEST

START_TEST(test_to_and_cast)
{
    const double v[4] = {1.7, -1.7, 2.5, 1.00390625};
    fg_tensor *a = fg_from_f64(v, FG_SHAPE(4), FG_F64, FG_CPU);
    fg_tensor *i = fg_cast(a, FG_I32);
    ck_assert_int_eq(fg_dtype_of(i), FG_I32);
    CK_VALUES(i, 0, 1, -1, 2, 1); /* truncation toward zero */
    fg_tensor *b = fg_to(a, FG_CPU, FG_BF16);
    ck_assert_int_eq(fg_dtype_of(b), FG_BF16);
    CK_VALUES(b, 0, 1.703125, -1.703125, 2.5, 1.0);
    fg_tensor *f = fg_cast(b, FG_F32);
    CK_VALUES(f, 0, 1.703125, -1.703125, 2.5, 1.0);
    fg_tensor *same = fg_to(a, FG_CPU, FG_F64);
    ck_assert(!fg_shares_storage(a, same)); /* always a copy */
    CK_VALUES(same, 0, 1.7, -1.7, 2.5, 1.00390625);
    int64_t big[2] = {((int64_t)1 << 40) + 3, -5};
    fg_tensor *l = fg_from_data(big, FG_SHAPE(2), FG_I64, FG_CPU);
    CK_VALUES(fg_cast(l, FG_F64), 0, 1099511627779.0, -5);
    /* cast of a strided view */
    fg_tensor *m = iota(FG_SHAPE(2, 3), FG_I64);
    CK_VALUES(fg_cast(fg_transpose(m, 0, 1), FG_F16), 0, 0, 3, 1, 4, 2, 5);
}
END_TEST

START_TEST(test_copy_broadcast)
{
    fg_tensor *dst = fg_zeros(FG_SHAPE(2, 3), FG_F32, FG_CPU);
    fg_tensor *row = fg_arange(1, 4, 1, FG_F32, FG_CPU);
    ck_assert_int_eq(fg_copy_(dst, row), FG_OK);
    CK_VALUES(dst, 0, 1, 2, 3, 1, 2, 3);
    fg_tensor *col = fg_from_f64((const double[]){7, 8}, FG_SHAPE(2, 1), FG_F64, FG_CPU);
    ck_assert_int_eq(fg_copy_(dst, col), FG_OK); /* broadcast and convert f64 -> f32 */
    CK_VALUES(dst, 0, 7, 7, 7, 8, 8, 8);
    ck_assert_int_eq(fg_copy_(dst, fg_scalar(-1, FG_I32, FG_CPU)), FG_OK);
    CK_VALUES(dst, 0, -1, -1, -1, -1, -1, -1);
    /* into a transposed destination */
    fg_tensor *base = fg_zeros(FG_SHAPE(3, 2), FG_F64, FG_CPU);
    ck_assert_int_eq(fg_copy_(fg_transpose(base, 0, 1), iota(FG_SHAPE(2, 3), FG_F64)), FG_OK);
    CK_VALUES(base, 0, 0, 3, 1, 4, 2, 5);
    ck_assert_int_eq(fg_copy_(dst, fg_zeros(FG_SHAPE(4), FG_F32, FG_CPU)), FG_ERR_SHAPE);
    ck_assert_int_eq(fg_copy_(dst, fg_zeros(FG_SHAPE(2, 2, 3), FG_F32, FG_CPU)), FG_ERR_SHAPE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "fg_copy_"));
    CK_VALUES(dst, 0, -1, -1, -1, -1, -1, -1); /* untouched by the failed copies */
}
END_TEST

START_TEST(test_fill_strided_view)
{
    fg_tensor *x = fg_zeros(FG_SHAPE(3, 4), FG_F64, FG_CPU);
    fg_tensor *cols = fg_slice(x, 1, 0, 4, 2); /* columns 0 and 2 */
    ck_assert_int_eq(fg_fill_(cols, 7), FG_OK);
    CK_VALUES(x, 0, 7, 0, 7, 0, 7, 0, 7, 0, 7, 0, 7, 0);
    fg_tensor *blk = fg_narrow(fg_narrow(fg_transpose(x, 0, 1), 0, 1, 2), 1, 1, 2); /* x[1:3, 1:3]^T */
    ck_assert_int_eq(fg_fill_(blk, -1), FG_OK);
    CK_VALUES(x, 0, 7, 0, 7, 0, 7, -1, -1, 0, 7, -1, -1, 0);
    ck_assert_int_eq(fg_zero_(cols), FG_OK);
    CK_VALUES(x, 0, 0, 0, 0, 0, 0, -1, 0, 0, 0, -1, 0, 0);
    fg_tensor *h = fg_zeros(FG_SHAPE(4), FG_F16, FG_CPU);
    ck_assert_int_eq(fg_fill_(fg_slice(h, 0, 1, 4, 2), 65504), FG_OK);
    CK_VALUES(h, 0, 0, 65504, 0, 65504);
}
END_TEST

START_TEST(test_shape_str)
{
    char buf[64];
    ck_assert_str_eq(fg_shape_str(fg_zeros(FG_SHAPE(2, 3), FG_F32, FG_CPU), buf, sizeof buf), "(2, 3)");
    ck_assert_str_eq(fg_shape_str(fg_zeros(FG_SHAPE(4), FG_F32, FG_CPU), buf, sizeof buf), "(4,)");
    ck_assert_str_eq(fg_shape_str(fg_scalar(1, FG_F32, FG_CPU), buf, sizeof buf), "()");
    ck_assert_str_eq(fg_shape_str(fg_zeros(FG_SHAPE(1, 0, 7), FG_F32, FG_CPU), buf, sizeof buf), "(1, 0, 7)");
    ck_assert_str_eq(fg_shape_str(NULL, buf, sizeof buf), "(null)");
    /* a short buffer truncates without overflowing */
    char small[8];
    memset(small, 'x', sizeof small);
    fg_tensor *big = fg_expand(fg_zeros(FG_SHAPE(1, 1, 1), FG_F32, FG_CPU), FG_SHAPE(1000, 2000, 3000));
    fg_shape_str(big, small, 6);
    ck_assert_uint_eq(strlen(small), 5);
    ck_assert(small[6] == 'x' && small[7] == 'x');
    ck_assert_int_eq(strncmp(small, "(1000", 5), 0);
}
END_TEST

static char *print_to_string(const fg_tensor *t)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    fg_print(t, f);
    fclose(f);
    return buf;
}

START_TEST(test_print)
{
    fg_tensor *t = fg_from_f64((const double[]){1.5, -2, 3.25, 42}, FG_SHAPE(2, 2), FG_F32, FG_CPU);
    char *s = print_to_string(t);
    ck_assert_ptr_nonnull(strstr(s, "(2, 2)"));
    ck_assert_ptr_nonnull(strstr(s, "f32"));
    ck_assert_ptr_nonnull(strstr(s, "cpu"));
    ck_assert_ptr_nonnull(strstr(s, "1.5"));
    ck_assert_ptr_nonnull(strstr(s, "-2"));
    ck_assert_ptr_nonnull(strstr(s, "3.25"));
    ck_assert_ptr_nonnull(strstr(s, "42"));
    ck_assert_ptr_null(strstr(s, "requires_grad"));
    free(s);
    fg_set_requires_grad(t, true);
    s = print_to_string(fg_transpose(t, 0, 1));
    ck_assert_ptr_nonnull(strstr(s, "grad_fn=permute"));
    /* transposed order: 1.5 then 3.25 */
    char *p1 = strstr(s, "1.5"), *p2 = strstr(s, "3.25"), *p3 = strstr(s, "-2");
    ck_assert(p1 && p2 && p3 && p1 < p2 && p2 < p3);
    free(s);
    s = print_to_string(fg_scalar(0.125, FG_F64, FG_CPU));
    ck_assert_ptr_nonnull(strstr(s, "()"));
    ck_assert_ptr_nonnull(strstr(s, "0.125"));
    free(s);
    s = print_to_string(NULL);
    ck_assert_ptr_nonnull(strstr(s, "NULL"));
    free(s);
}
END_TEST

START_TEST(test_print_large_truncates)
{
    fg_tensor *t = fg_arange(0, 1000, 1, FG_I32, FG_CPU);
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    fg_print(t, f);
    long size = ftell(f);
    rewind(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    ck_assert_int_lt(size, 2000); /* bounded, not 1000 numbers */
    ck_assert_ptr_nonnull(strstr(buf, "i32"));
    ck_assert_ptr_nonnull(strstr(buf, "63"));
    ck_assert_ptr_nonnull(strstr(buf, "..."));
    ck_assert_ptr_null(strstr(buf, "999"));
}
END_TEST

START_TEST(test_shares_storage)
{
    fg_tensor *a = fg_zeros(FG_SHAPE(4), FG_F32, FG_CPU);
    fg_tensor *b = fg_zeros(FG_SHAPE(4), FG_F32, FG_CPU);
    ck_assert(!fg_shares_storage(a, b));
    ck_assert(fg_shares_storage(a, a));
    ck_assert(fg_shares_storage(fg_slice(a, 0, 0, 2, 1), fg_slice(a, 0, 2, 4, 1)));
    ck_assert(!fg_shares_storage(a, NULL));
    ck_assert(!fg_shares_storage(NULL, NULL));
    fg_tensor *d = fg_detach(a);
    ck_assert(fg_shares_storage(a, d));
}
END_TEST

START_TEST(test_view_chain_values)
{
    /* a chain of views, read through fg_to_f64_array and fg_get */
    fg_tensor *a = iota(FG_SHAPE(4, 6), FG_F32);
    fg_tensor *v = fg_slice(fg_transpose(fg_reshape(a, FG_SHAPE(2, 2, 6)), 1, 2), 1, 1, 6, 2); /* (2, 3, 2) */
    ck_shape(v, 3, (const int64_t[]){2, 3, 2});
    ck_assert(fg_shares_storage(a, v));
    /* v[i][j][k] = a3[i][k][1 + 2j] = 12 i + 6 k + 1 + 2 j */
    double out[12];
    ck_assert_int_eq(fg_to_f64_array(v, out, 12), FG_OK);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 2; k++) ck_assert(out[i * 6 + j * 2 + k] == 12 * i + 6 * k + 1 + 2 * j);
    ck_close(fg_get(v, (const int64_t[]){1, 2, 1}), 12 + 6 + 5, 0);
}
END_TEST

START_TEST(test_free_owned_outside_scope)
{
    /* tensors created with no scope open belong to the caller */
    ck_assert_int_eq(fg_scope_end(tscope), FG_OK);
    fg_memory_stats m0, m1;
    fg_get_memory_stats(&m0);
    fg_tensor *a = fg_ones(FG_SHAPE(8), FG_F32, FG_CPU);
    fg_tensor *v = fg_reshape(a, FG_SHAPE(2, 4));
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_tensors, m0.live_tensors + 2);
    ck_assert_int_eq(m1.live_storages, m0.live_storages + 1);
    ck_assert_int_eq(m1.live_bytes[FG_CPU], m0.live_bytes[FG_CPU] + 32);
    fg_free(a); /* the view keeps the storage alive */
    CK_VALUES(v, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    fg_free(v);
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_tensors, m0.live_tensors);
    ck_assert_int_eq(m1.live_storages, m0.live_storages);
    ck_assert_int_eq(m1.live_bytes[FG_CPU], m0.live_bytes[FG_CPU]);
    tscope = fg_scope_begin();
}
END_TEST

static Suite *tensor_suite(void)
{
    Suite *s = suite_create("tensor");
    TCase *c = tcase_create("creation");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, test_empty_props);
    tcase_add_test(c, test_zeros_ones_full);
    tcase_add_test(c, test_scalar);
    tcase_add_test(c, test_arange);
    tcase_add_test(c, test_arange_negative_step);
    tcase_add_test(c, test_arange_empty);
    tcase_add_test(c, test_from_data);
    tcase_add_test(c, test_from_f64_f32);
    tcase_add_test(c, test_zeros_like_ones_like);
    suite_add_tcase(s, c);

    c = tcase_create("dtypes");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, test_dtype_meta);
    tcase_add_test(c, test_roundtrip_all_dtypes);
    tcase_add_test(c, test_bf16_round_to_nearest_even);
    tcase_add_test(c, test_f16_conversion);
    tcase_add_test(c, test_half_tensor_storage);
    tcase_add_test(c, test_copy_to_host_errors);
    tcase_add_test(c, test_item_get);
    suite_add_tcase(s, c);

    c = tcase_create("properties");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, test_properties);
    tcase_add_test(c, test_zero_size_dims);
    tcase_add_test(c, test_shape_str);
    tcase_add_test(c, test_print);
    tcase_add_test(c, test_print_large_truncates);
    tcase_add_test(c, test_shares_storage);
    tcase_add_test(c, test_free_owned_outside_scope);
    suite_add_tcase(s, c);

    c = tcase_create("views");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, test_reshape_view);
    tcase_add_test(c, test_reshape_copies_when_needed);
    tcase_add_test(c, test_view_fails_on_transposed);
    tcase_add_test(c, test_transpose);
    tcase_add_test(c, test_permute);
    tcase_add_test(c, test_narrow);
    tcase_add_test(c, test_slice_step_and_negative);
    tcase_add_test(c, test_expand);
    tcase_add_test(c, test_squeeze_unsqueeze);
    tcase_add_test(c, test_flatten);
    tcase_add_test(c, test_contiguous);
    tcase_add_test(c, test_view_chain_values);
    suite_add_tcase(s, c);

    c = tcase_create("copies");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_add_test(c, test_clone_independent);
    tcase_add_test(c, test_to_and_cast);
    tcase_add_test(c, test_copy_broadcast);
    tcase_add_test(c, test_fill_strided_view);
    suite_add_tcase(s, c);
    return s;
}

FG_TEST_MAIN(tensor_suite)
