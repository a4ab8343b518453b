/* Checkpoints (flashgrad/checkpoint.h): safetensors round trips of every
 * dtype, the byte layout against the spec, files as the reference writer makes
 * them, metadata and generator/step, a table of malformed files, mismatched
 * targets, atomic saving under a failing write, and a bit-identical resume. */
#include <signal.h>
#include <sys/resource.h>
#include "ckpttest.h"

/* ---- round trips ---- */
#define NT 9
static const char *const NAMES[NT] = {"f32", "f64", "bf16", "f16", "i32", "i64", "scalar", "empty", "empty_i64"};

static void make_all(fg_generator *gen, fg_tensor **t)
{
    t[0] = fg_randn(gen, FG_SHAPE(2, 3), FG_F32, FG_CPU);
    t[1] = fg_randn(gen, FG_SHAPE(4), FG_F64, FG_CPU);
    /* bit patterns a trip through float would change: NaN payload, -0, denormal, -inf */
    const uint16_t bf[6] = {0x3f80, 0x7fc1, 0x8000, 0x0001, 0xff80, 0x4049};
    t[2] = fg_from_data(bf, FG_SHAPE(3, 2), FG_BF16, FG_CPU);
    const uint16_t hf[5] = {0x3c00, 0x7e01, 0x8000, 0x0001, 0xfc00};
    t[3] = fg_from_data(hf, FG_SHAPE(5), FG_F16, FG_CPU);
    const int32_t i32[4] = {INT32_MIN, -1, 7, INT32_MAX};
    t[4] = fg_from_data(i32, FG_SHAPE(2, 2), FG_I32, FG_CPU);
    const int64_t i64[3] = {INT64_MIN, (int64_t)1 << 53 | 1, INT64_MAX};
    t[5] = fg_from_data(i64, FG_SHAPE(3), FG_I64, FG_CPU);
    t[6] = fg_scalar(2.5, FG_F32, FG_CPU);
    t[7] = fg_zeros(FG_SHAPE(0, 3), FG_F32, FG_CPU);
    t[8] = fg_zeros(FG_SHAPE(0), FG_I64, FG_CPU);
    for (int i = 0; i < NT; i++) ck_assert_ptr_nonnull(t[i]);
}

START_TEST(test_roundtrip_every_dtype)
{
    BEGIN;
    tmpdir d;
    tmp_make(&d);
    fg_tensor *src[NT], *dst[NT];
    make_all(gen, src);
    ck_assert_msg(fg_checkpoint_save_tensors(d.path, NT, NAMES, (const fg_tensor *const *)src, NULL) == FG_OK, "%s",
                  fg_last_error());
    for (int i = 0; i < NT; i++) {
        dst[i] = fg_zeros(fg_ndim(src[i]), fg_shape(src[i]), fg_dtype_of(src[i]), FG_CPU);
        ck_assert_ptr_nonnull(dst[i]);
    }
    fg_ckpt_meta *m = fg_ckpt_meta_new();
    ck_assert_msg(fg_checkpoint_load_tensors(d.path, NT, NAMES, dst, m, FG_CKPT_STRICT) == FG_OK, "%s", fg_last_error());
    for (int i = 0; i < NT; i++) ck_same_bits(dst[i], src[i]);
    ck_assert_str_eq(fg_ckpt_meta_get(m, "format"), "pt");
    ck_assert_int_eq(fg_ckpt_meta_count(m), 1);

    /* The reader makes new tensors of the file's dtype and shape. */
    fg_ckpt_file *f = fg_ckpt_open(d.path);
    ck_assert_msg(f != NULL, "%s", fg_last_error());
    ck_assert_int_eq(fg_ckpt_count(f), NT);
    for (int i = 0; i < NT; i++) {
        const fg_ckpt_entry *e = fg_ckpt_find(f, NAMES[i]);
        ck_assert_ptr_nonnull(e);
        ck_assert_int_eq(e->dtype, fg_dtype_of(src[i]));
        ck_assert_int_eq(e->ndim, fg_ndim(src[i]));
        fg_tensor *r = fg_ckpt_read(f, NAMES[i], FG_CPU);
        ck_assert_msg(r != NULL, "%s", fg_last_error());
        ck_same_bits(r, src[i]);
    }
    ck_assert_str_eq(fg_ckpt_find(f, "bf16")->dtype_name, "BF16");
    ck_assert_str_eq(fg_ckpt_find(f, "i64")->dtype_name, "I64");
    ck_assert_int_eq(fg_ckpt_find(f, "scalar")->ndim, 0);
    ck_assert_int_eq(fg_ckpt_find(f, "empty")->numel, 0);
    ck_assert_ptr_null(fg_ckpt_find(f, "nope"));
    fg_ckpt_close(f);
    fg_ckpt_meta_free(m);
    tmp_remove(&d);
    END;
}
END_TEST

START_TEST(test_strided_sources_and_targets)
{
    BEGIN;
    tmpdir d;
    tmp_make(&d);
    fg_tensor *base = fg_arange(0, 24, 1, FG_F32, FG_CPU);
    fg_tensor *m = fg_reshape(base, FG_SHAPE(4, 6));
    fg_tensor *tr = fg_transpose(m, 0, 1);                                   /* (6, 4), strides (1, 6) */
    fg_tensor *sl = fg_slice(m, 1, 1, 6, 2);                                 /* (4, 3), step 2 */
    fg_tensor *ex = fg_expand(fg_reshape(fg_arange(0, 3, 1, FG_I64, FG_CPU), FG_SHAPE(1, 3)), FG_SHAPE(2, 3)); /* stride 0 */
    const char *names[3] = {"tr", "sl", "ex"};
    const fg_tensor *src[3] = {tr, sl, ex};
    ck_assert_msg(fg_checkpoint_save_tensors(d.path, 3, names, src, NULL) == FG_OK, "%s", fg_last_error());
    fg_ckpt_file *f = fg_ckpt_open(d.path);
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 3; i++) {
        fg_tensor *r = fg_ckpt_read(f, names[i], FG_CPU);
        ck_assert_msg(r != NULL, "%s", fg_last_error());
        ck_assert(fg_is_contiguous(r));
        ck_same_bits(r, fg_contiguous((fg_tensor *)src[i]));
    }
    /* Into a strided target: a transposed view of a (4, 6) buffer receives "tr". */
    fg_tensor *buf = fg_zeros(FG_SHAPE(4, 6), FG_F32, FG_CPU);
    fg_tensor *view = fg_transpose(buf, 0, 1);
    ck_assert_int_eq(fg_ckpt_read_into(f, "tr", view), FG_OK);
    ck_same_bits(buf, m);
    fg_ckpt_close(f);
    tmp_remove(&d);
    END;
}
END_TEST

/* ---- layout against the spec, from the raw bytes ---- */
START_TEST(test_layout_matches_spec)
{
    BEGIN;
    tmpdir d;
    tmp_make(&d);
    fg_tensor *src[NT];
    make_all(gen, src);
    ck_assert_int_eq(fg_checkpoint_save_tensors(d.path, NT, NAMES, (const fg_tensor *const *)src, NULL), FG_OK);
    size_t n;
    unsigned char *b = read_all(d.path, &n);
    const uint64_t hl = le64(b);
    ck_assert_uint_eq(hl % 8, 0); /* the data buffer starts 8-byte aligned */
    ck_assert_uint_ge(n, 8 + hl);
    ck_assert_int_eq(b[8], '{');
    /* The JSON ends with '}' and only spaces pad it. */
    size_t end = 8 + hl;
    while (end > 8 && b[end - 1] == ' ') end--;
    ck_assert_int_eq(b[end - 1], '}');
    ck_assert_uint_lt(8 + hl - end, 8);
    char *hdr = strndup((const char *)b + 8, hl);
    /* Metadata first, then 8-byte, 4-byte and 2-byte tensors, each in the caller's order. */
    const char *want_order[] = {"\"__metadata__\":{\"format\":\"pt\"}", "\"f64\":", "\"i64\":", "\"empty_i64\":", "\"f32\":",
                                "\"i32\":", "\"scalar\":", "\"empty\":", "\"bf16\":", "\"f16\":"};
    const char *at = hdr;
    for (size_t i = 0; i < sizeof want_order / sizeof *want_order; i++) {
        const char *p = strstr(at, want_order[i]);
        ck_assert_msg(p != NULL, "'%s' missing or out of order in %s", want_order[i], hdr);
        at = p;
    }
    ck_assert_ptr_nonnull(strstr(hdr, "\"f32\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":["));
    ck_assert_ptr_nonnull(strstr(hdr, "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":["));
    ck_assert_ptr_nonnull(strstr(hdr, "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":["));
    ck_assert_ptr_nonnull(strstr(hdr, "\"i64\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[32,56]}"));
    /* Offsets tile the buffer, each aligned to its element size, and the bytes there are the tensor's. */
    fg_ckpt_file *f = fg_ckpt_open(d.path);
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fg_ckpt_header_len(f), hl);
    ck_assert_uint_eq(8 + hl + fg_ckpt_data_len(f), n);
    uint64_t pos = 0;
    for (int64_t i = 0; i < fg_ckpt_count(f); i++) {
        const fg_ckpt_entry *e = fg_ckpt_entry_at(f, i);
        ck_assert_uint_eq(e->begin, pos);
        ck_assert_uint_eq((8 + hl + e->begin) % e->elem_size, 0);
        pos = e->end;
        int k = 0;
        while (strcmp(NAMES[k], e->name)) k++;
        size_t tn;
        unsigned char *tb = bytes_of(src[k], &tn);
        ck_assert_uint_eq(e->end - e->begin, tn);
        ck_assert(tn == 0 || memcmp(b + 8 + hl + e->begin, tb, tn) == 0);
        free(tb);
    }
    ck_assert_uint_eq(pos, n - 8 - hl);
    fg_ckpt_close(f);
    free(hdr);
    free(b);

    /* One tensor: the exact bytes (header, padding, little-endian floats). */
    const float v[6] = {0, 1, 2, 3, 4, 5};
    fg_tensor *a = fg_from_f32(v, FG_SHAPE(1, 2, 3), FG_F32, FG_CPU);
    const char *nm = "attn.0";
    ck_assert_int_eq(fg_checkpoint_save_tensors(d.path, 1, &nm, (const fg_tensor *const *)&a, NULL), FG_OK);
    b = read_all(d.path, &n);
    const char *json = "{\"__metadata__\":{\"format\":\"pt\"},\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
    const size_t jl = strlen(json), padded = (jl + 7) / 8 * 8;
    ck_assert_uint_eq(le64(b), padded);
    ck_assert_uint_eq(n, 8 + padded + 24);
    ck_assert(memcmp(b + 8, json, jl) == 0);
    for (size_t i = 8 + jl; i < 8 + padded; i++) ck_assert_int_eq(b[i], ' ');
    const unsigned char one[4] = {0, 0, 0x80, 0x3f}; /* 1.0f little-endian */
    ck_assert(memcmp(b + 8 + padded + 4, one, 4) == 0);
    free(b);
    tmp_remove(&d);
    END;
}
END_TEST

/* ---- files as other writers make them ---- */
START_TEST(test_reads_reference_writer_files)
{
    BEGIN;
    tmpdir d;
    tmp_make(&d);
    /* The reference serializer's output for {"attn.0": F32 (1, 2, 3) = 0..5},
     * no metadata: a 64-byte header (a multiple of 8, so no padding). */
    static const unsigned char ref[] = {
        64, 0, 0, 0, 0, 0, 0, 0, '{', '"', 'a', 't', 't', 'n', '.', '0', '"', ':', '{', '"', 'd', 't', 'y', 'p', 'e',
        '"', ':', '"', 'F', '3', '2', '"', ',', '"', 's', 'h', 'a', 'p', 'e', '"', ':', '[', '1', ',', '2', ',', '3',
        ']', ',', '"', 'd', 'a', 't', 'a', '_', 'o', 'f', 'f', 's', 'e', 't', 's', '"', ':', '[', '0', ',', '2', '4',
        ']', '}', '}', 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0,
        128, 64, 0, 0, 160, 64};
    write_all(d.path, ref, sizeof ref);
    fg_tensor *a = fg_zeros(FG_SHAPE(1, 2, 3), FG_F32, FG_CPU);
    const char *nm = "attn.0";
    fg_ckpt_meta *m = fg_ckpt_meta_new();
    ck_assert_int_eq(fg_ckpt_meta_set(m, "stale", "x"), FG_OK);
    ck_assert_msg(fg_checkpoint_load_tensors(d.path, 1, &nm, &a, m, 0) == FG_OK, "%s", fg_last_error());
    ck_tensor_values(a, (const double[]){0, 1, 2, 3, 4, 5}, 6, 0);
    ck_assert_int_eq(fg_ckpt_meta_count(m), 0); /* cleared: the file has no metadata */

    /* Unpadded header, tensors listed out of data order, metadata last, a
     * dtype flashgrad lacks (U8) and a 9-d tensor: listable; the F32 loads. */
    const char *h = "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[8,10]},"
                    "\"nine\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[10,14]},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"__metadata__\":{\"k\":\"v\"}}";
    write_st(d.path, UINT64_MAX, h, 14);
    fg_ckpt_file *f = fg_ckpt_open(d.path);
    ck_assert_msg(f != NULL, "%s", fg_last_error());
    ck_assert_int_eq(fg_ckpt_count(f), 3);
    ck_assert_str_eq(fg_ckpt_entry_at(f, 0)->name, "a"); /* data order */
    ck_assert_str_eq(fg_ckpt_entry_at(f, 1)->name, "b");
    ck_assert_int_eq(fg_ckpt_entry_at(f, 1)->dtype, -1);
    ck_assert_str_eq(fg_ckpt_entry_at(f, 1)->dtype_name, "U8");
    ck_assert_int_eq(fg_ckpt_entry_at(f, 2)->ndim, 9);
    ck_assert_str_eq(fg_ckpt_meta_get(fg_ckpt_metadata(f), "k"), "v");
    ck_assert_ptr_null(fg_ckpt_entry_at(f, 3));
    ck_err(FG_ERR_INDEX, "entry 3 of 3", NULL);
    ck_assert_ptr_null(fg_ckpt_read(f, "b", FG_CPU));
    ck_err(FG_ERR_DTYPE, "'b' is U8", "no dtype");
    ck_assert_ptr_null(fg_ckpt_read(f, "nine", FG_CPU));
    ck_err(FG_ERR_UNSUPPORTED, "9 dims", NULL);
    ck_assert_ptr_null(fg_ckpt_read(f, "zzz", FG_CPU));
    ck_err(FG_ERR_INVALID, "no tensor 'zzz'", NULL);
    fg_ckpt_close(f);
    fg_tensor *a2 = fg_zeros(FG_SHAPE(2), FG_F32, FG_CPU);
    nm = "a";
    ck_assert_int_eq(fg_checkpoint_load_tensors(d.path, 1, &nm, &a2, NULL, 0), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "not a target", "2 such");
    ck_assert_msg(fg_checkpoint_load_tensors(d.path, 1, &nm, &a2, NULL, FG_CKPT_ALLOW_UNEXPECTED) == FG_OK, "%s",
                  fg_last_error());
    const unsigned char raw[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    unsigned char got[8];
    ck_assert_int_eq(fg_copy_to_host(a2, got, 8), FG_OK);
    ck_assert(memcmp(raw, got, 8) == 0);
    fg_ckpt_meta_free(m);
    tmp_remove(&d);
    END;
}
END_TEST

/* ---- metadata ---- */
START_TEST(test_metadata)
{
    BEGIN;
    tmpdir d;
    tmp_make(&d);
    fg_ckpt_meta *m = fg_ckpt_meta_new(), *back = fg_ckpt_meta_new();
    ck_assert_int_eq(fg_ckpt_meta_set(m, "model", "{\"layers\": 6, \"width\": 384}"), FG_OK); /* JSON text as a value */
    ck_assert_int_eq(fg_ckpt_meta_set(m, "quote\"back\\slash", "tab\tnewline\n"), FG_OK);
    ck_assert_int_eq(fg_ckpt_meta_set(m, "unicode", "\xc3\xa9t\xc3\xa9 \xe2\x9c\x93"), FG_OK);
    ck_assert_int_eq(fg_ckpt_meta_set(m, "empty", ""), FG_OK);
    ck_assert_int_eq(fg_ckpt_meta_set(m, "model", "gpt"), FG_OK); /* replaces in place */
    ck_assert_int_eq(fg_ckpt_meta_count(m), 4);
    ck_assert_int_eq(fg_checkpoint_save_tensors(d.path, 0, NULL, NULL, m), FG_OK);
    ck_assert_msg(fg_checkpoint_load_tensors(d.path, 0, NULL, NULL, back, 0) == FG_OK, "%s", fg_last_error());
    ck_assert_int_eq(fg_ckpt_meta_count(back), 5);
    const char *k, *v;
    ck_assert_int_eq(fg_ckpt_meta_at(back, 0, &k, &v), FG_OK);
    ck_assert_str_eq(k, "format");
    ck_assert_str_eq(v, "pt");
    for (int64_t i = 0; i < 4; i++) {
        const char *k2, *v2;
        ck_assert_int_eq(fg_ckpt_meta_at(m, i, &k, &v), FG_OK);
        ck_assert_int_eq(fg_ckpt_meta_at(back, i + 1, &k2, &v2), FG_OK);
        ck_assert_str_eq(k, k2);
        ck_assert_str_eq(v, v2);
    }
    ck_assert_int_eq(fg_ckpt_meta_at(back, 5, &k, &v), FG_ERR_INDEX);
    ck_assert_ptr_null(fg_ckpt_meta_get(back, "absent"));
    /* A caller's "format" wins. */
    ck_assert_int_eq(fg_ckpt_meta_set(m, "format", "flashgrad"), FG_OK);
    ck_assert_int_eq(fg_checkpoint_save_tensors(d.path, 0, NULL, NULL, m), FG_OK);
    ck_assert_int_eq(fg_checkpoint_load_tensors(d.path, 0, NULL, NULL, back, 0), FG_OK);
    ck_assert_int_eq(fg_ckpt_meta_count(back), 5);
    ck_assert_str_eq(fg_ckpt_meta_get(back, "format"), "flashgrad");
    /* Invalid UTF-8 cannot go into the header. */
    ck_assert_int_eq(fg_ckpt_meta_set(m, "bad", "\xff\xfe"), FG_OK);
    ck_assert_int_eq(fg_checkpoint_save_tensors(d.path, 0, NULL, NULL, m), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "metadata 'bad'", "UTF-8");
    ck_assert_int_eq(fg_ckpt_meta_set(m, "", "x"), FG_ERR_INVALID);
    fg_clear_error(); /* a NULL argument keeps an earlier error as the root cause */
    ck_assert_int_eq(fg_ckpt_meta_set(NULL, "a", "x"), FG_ERR_NULL);
    ck_assert_int_eq(fg_ckpt_meta_set(m, "a", NULL), FG_ERR_NULL);

    /* Typed values, exactly. */
    fg_ckpt_meta_clear(m);
    ck_assert_int_eq(fg_ckpt_meta_count(m), 0);
    uint64_t u;
    int64_t s;
    double x;
    ck_assert_int_eq(fg_ckpt_meta_set_u64(m, "u", UINT64_MAX), FG_OK);
    ck_assert_str_eq(fg_ckpt_meta_get(m, "u"), "18446744073709551615");
    ck_assert_int_eq(fg_ckpt_meta_get_u64(m, "u", &u), FG_OK);
    ck_assert(u == UINT64_MAX);
    ck_assert_int_eq(fg_ckpt_meta_set_i64(m, "s", INT64_MIN), FG_OK);
    ck_assert_int_eq(fg_ckpt_meta_get_i64(m, "s", &s), FG_OK);
    ck_assert(s == INT64_MIN);
    const double vals[] = {0.1, -0.0, 1e308, 4.9e-324, 1.0 / 3.0, -123456.789e-7};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        ck_assert_int_eq(fg_ckpt_meta_set_f64(m, "x", vals[i]), FG_OK);
        ck_assert_int_eq(fg_ckpt_meta_get_f64(m, "x", &x), FG_OK);
        ck_assert(memcmp(&x, &vals[i], sizeof x) == 0);
    }
    static const struct { const char *v; } bad_u[] = {{""}, {"-1"}, {"+1"}, {" 1"}, {"1 "}, {"12a"}, {"18446744073709551616"}, {"0x10"}};
    for (size_t i = 0; i < sizeof bad_u / sizeof *bad_u; i++) {
        ck_assert_int_eq(fg_ckpt_meta_set(m, "b", bad_u[i].v), FG_OK);
        ck_assert_msg(fg_ckpt_meta_get_u64(m, "b", &u) == FG_ERR_FORMAT, "'%s' accepted", bad_u[i].v);
        ck_err(FG_ERR_FORMAT, "'b'", "unsigned 64-bit");
    }
    ck_assert_int_eq(fg_ckpt_meta_set(m, "b", "9223372036854775808"), FG_OK);
    ck_assert_int_eq(fg_ckpt_meta_get_i64(m, "b", &s), FG_ERR_FORMAT);
    ck_assert_int_eq(fg_ckpt_meta_set(m, "b", "1.5x"), FG_OK);
    ck_assert_int_eq(fg_ckpt_meta_get_f64(m, "b", &x), FG_ERR_FORMAT);
    ck_assert_int_eq(fg_ckpt_meta_get_u64(m, "absent", &u), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "no key 'absent'", NULL);
    fg_ckpt_meta_free(m);
    fg_ckpt_meta_free(back);
    fg_ckpt_meta_free(NULL);
    tmp_remove(&d);
    END;
}
END_TEST

START_TEST(test_generator_and_step)
{
    BEGIN;
    tmpdir d;
    tmp_make(&d);
    fg_generator *g = fg_generator_new(0xfedcba9876543210ull);
    fg_tensor *burn = fg_rand(g, FG_SHAPE(1000), FG_F32, FG_CPU);
    ck_assert_ptr_nonnull(burn);
    fg_generator_set_state(g, 0xfedcba9876543210ull, (1ull << 62) + 12345); /* beyond double's 53 bits */
    fg_ckpt_meta *m = fg_ckpt_meta_new();
    ck_assert_int_eq(fg_ckpt_meta_set_generator(m, NULL, g), FG_OK);
    ck_assert_int_eq(fg_ckpt_meta_set_generator(m, "data_rng", fg_default_generator()), FG_OK);
    ck_assert_int_eq(fg_ckpt_meta_set_step(m, (1ull << 63) + 5), FG_OK);
    ck_assert_int_eq(fg_checkpoint_save_tensors(d.path, 0, NULL, NULL, m), FG_OK);
    fg_ckpt_meta_free(m);

    m = fg_ckpt_meta_new();
    ck_assert_int_eq(fg_checkpoint_load_tensors(d.path, 0, NULL, NULL, m, 0), FG_OK);
    ck_assert_str_eq(fg_ckpt_meta_get(m, "rng.seed"), "18364758544493064720");
    fg_generator *h = fg_generator_new(1);
    ck_assert_int_eq(fg_ckpt_meta_get_generator(m, NULL, h), FG_OK);
    ck_assert(fg_generator_seed(h) == fg_generator_seed(g));
    ck_assert(fg_generator_offset(h) == fg_generator_offset(g));
    ck_same_bits(fg_rand(h, FG_SHAPE(64), FG_F32, FG_CPU), fg_rand(g, FG_SHAPE(64), FG_F32, FG_CPU));
    uint64_t step = 0;
    ck_assert_int_eq(fg_ckpt_meta_get_step(m, &step), FG_OK);
    ck_assert(step == (1ull << 63) + 5);
    /* Absent or malformed: an error, and the generator keeps its state. */
    fg_generator_set_state(h, 7, 9);
    ck_assert_int_eq(fg_ckpt_meta_get_generator(m, "nope", h), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "nope.seed", NULL);
    ck_assert_int_eq(fg_ckpt_meta_set(m, "rng.offset", "12x"), FG_OK);
    ck_assert_int_eq(fg_ckpt_meta_get_generator(m, NULL, h), FG_ERR_FORMAT);
    ck_assert(fg_generator_seed(h) == 7 && fg_generator_offset(h) == 9);
    ck_assert_int_eq(fg_ckpt_meta_get_generator(m, "", h), FG_ERR_INVALID);
    fg_ckpt_meta_free(m);
    fg_generator_free(g);
    fg_generator_free(h);
    tmp_remove(&d);
    END;
}
END_TEST

/* ---- malformed files ---- */
typedef struct {
    const char *what;
    uint64_t hl; /* UINT64_MAX: the header's length */
    const char *header;
    size_t data;
    fg_status st;
    const char *frag;
} bad_case;

#define T8 "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
static const bad_case BAD[] = {
    {"header length past the end", 1000, "{}", 0, FG_ERR_FORMAT, "runs past the end"},
    {"header length absurd", 1ull << 62, "{}", 0, FG_ERR_FORMAT, "exceeds the safetensors limit"},
    {"header length zero", 0, "", 16, FG_ERR_FORMAT, "header length is 0"},
    {"bad JSON", UINT64_MAX, "{\"t\":{\"dtype\":", 0, FG_ERR_FORMAT, "not valid JSON"},
    {"invalid UTF-8", UINT64_MAX, "{\"\xff\":{}}", 0, FG_ERR_FORMAT, "not valid JSON"},
    {"header not an object", UINT64_MAX, "[1, 2]  ", 0, FG_ERR_FORMAT, "not a JSON object"},
    {"leading blank", UINT64_MAX, " {}", 0, FG_ERR_FORMAT, "must begin with '{'"},
    {"duplicate name", UINT64_MAX, "{" T8 "," T8 "}", 8, FG_ERR_FORMAT, "duplicate"},
    {"entry not an object", UINT64_MAX, "{\"t\":[1]}", 0, FG_ERR_FORMAT, "tensor 't': entry is not a JSON object"},
    {"unknown dtype", UINT64_MAX, "{\"t\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, FG_ERR_FORMAT,
     "unknown dtype \"F33\""},
    {"dtype not a string", UINT64_MAX, "{\"t\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, FG_ERR_FORMAT,
     "\"dtype\" is not a string"},
    {"missing dtype", UINT64_MAX, "{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, FG_ERR_FORMAT, "missing \"dtype\""},
    {"missing shape", UINT64_MAX, "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, FG_ERR_FORMAT, "missing \"shape\""},
    {"shape not an array", UINT64_MAX, "{\"t\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, FG_ERR_FORMAT,
     "\"shape\" is not an array"},
    {"negative shape", UINT64_MAX, "{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, FG_ERR_FORMAT,
     "shape[0] = -2 is negative"},
    {"fractional shape", UINT64_MAX, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, FG_ERR_FORMAT,
     "shape[0] is not an integer"},
    {"shape overflow", UINT64_MAX, "{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", 8,
     FG_ERR_FORMAT, "overflows"},
    {"missing offsets", UINT64_MAX, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, FG_ERR_FORMAT, "missing \"data_offsets\""},
    {"offsets arity", UINT64_MAX, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, FG_ERR_FORMAT,
     "array of two integers"},
    {"negative offset", UINT64_MAX, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, FG_ERR_FORMAT,
     "non-negative"},
    {"offsets reversed", UINT64_MAX, "{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, FG_ERR_FORMAT,
     "end before they begin"},
    {"offsets out of range", UINT64_MAX, "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 8, FG_ERR_FORMAT,
     "run past the data buffer"},
    {"size vs shape", UINT64_MAX, "{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, FG_ERR_FORMAT,
     "hold 8 bytes, but F32 of 3 elements needs 12"},
    {"overlap", UINT64_MAX,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, FG_ERR_FORMAT, "overlap tensor 'a'"},
    {"hole", UINT64_MAX,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
     12, FG_ERR_FORMAT, "hole of 4 unused bytes"},
    {"hole at the start", UINT64_MAX, "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, FG_ERR_FORMAT,
     "tensor 't': hole of 4"},
    {"trailing bytes", UINT64_MAX, "{" T8 "}", 12, FG_ERR_FORMAT, "4 trailing bytes"},
    {"metadata not strings", UINT64_MAX, "{\"__metadata__\":{\"step\":5}}", 0, FG_ERR_FORMAT, "metadata 'step' is not a string"},
    {"metadata not an object", UINT64_MAX, "{\"__metadata__\":\"x\"}", 0, FG_ERR_FORMAT, "\"__metadata__\" is not a JSON object"},
};

START_TEST(test_malformed_files)
{
    BEGIN;
    tmpdir d;
    tmp_make(&d);
    fg_tensor *t = fg_zeros(FG_SHAPE(2), FG_F32, FG_CPU);
    const char *nm = "t";
    for (size_t i = 0; i < sizeof BAD / sizeof *BAD; i++) {
        write_st(d.path, BAD[i].hl, BAD[i].header, BAD[i].data);
        fg_clear_error();
        ck_assert_msg(fg_ckpt_open(d.path) == NULL, "%s: accepted", BAD[i].what);
        ck_assert_msg(fg_last_status() == BAD[i].st && strstr(fg_last_error(), BAD[i].frag) &&
                          strstr(fg_last_error(), d.path),
                      "%s: got %s '%s', expected %s '%s'", BAD[i].what, fg_status_name(fg_last_status()), fg_last_error(),
                      fg_status_name(BAD[i].st), BAD[i].frag);
        /* Loading reports the same, and leaves the target alone. */
        ck_assert_int_eq(fg_fill_(t, 3), FG_OK);
        ck_assert_int_eq(fg_checkpoint_load_tensors(d.path, 1, &nm, &t, NULL, FG_CKPT_ALLOW_UNEXPECTED), BAD[i].st);
        ck_assert_msg(strstr(fg_last_error(), BAD[i].frag), "%s: load said '%s'", BAD[i].what, fg_last_error());
        ck_tensor_values(t, (const double[]){3, 3}, 2, 0);
    }

    /* Nesting deeper than Jansson's parser limit: an error, not a stack overflow. */
    enum { DEEP = 100000 };
    char *deep = malloc(2 * DEEP + 8);
    size_t k = 0;
    deep[k++] = '{', deep[k++] = '"', deep[k++] = 't', deep[k++] = '"', deep[k++] = ':';
    for (int i = 0; i < DEEP; i++) deep[k++] = '[';
    for (int i = 0; i < DEEP; i++) deep[k++] = ']';
    deep[k++] = '}', deep[k] = '\0';
    write_st(d.path, UINT64_MAX, deep, 0);
    free(deep);
    ck_assert_ptr_null(fg_ckpt_open(d.path));
    ck_err(FG_ERR_FORMAT, "not valid JSON", NULL);

    /* A valid file cut at every kind of place. */
    fg_tensor *src[NT];
    make_all(gen, src);
    ck_assert_int_eq(fg_checkpoint_save_tensors(d.path, NT, NAMES, (const fg_tensor *const *)src, NULL), FG_OK);
    size_t n;
    unsigned char *b = read_all(d.path, &n);
    const uint64_t hl = le64(b);
    static const struct { const char *frag; } cut_frag[] = {{"shorter than the 8-byte"}, {"runs past the end"}, {"run past the data buffer"}};
    const size_t cuts[][2] = {{0, 0}, {5, 0}, {8, 1}, {8 + hl / 2, 1}, {8 + hl - 1, 1}, {8 + hl + 1, 2}, {n - 1, 2}};
    char cut_path[160];
    snprintf(cut_path, sizeof cut_path, "%s/cut.safetensors", d.dir);
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        write_all(cut_path, b, cuts[i][0]);
        fg_clear_error();
        ck_assert_ptr_null(fg_ckpt_open(cut_path));
        ck_assert_msg(fg_last_status() == FG_ERR_FORMAT && strstr(fg_last_error(), cut_frag[cuts[i][1]].frag),
                      "cut at %zu: %s", cuts[i][0], fg_last_error());
    }
    /* One byte too many is a trailing byte, not silently ignored. */
    unsigned char *longer = malloc(n + 1);
    memcpy(longer, b, n);
    longer[n] = 0;
    write_all(cut_path, longer, n + 1);
    ck_assert_ptr_null(fg_ckpt_open(cut_path));
    ck_err(FG_ERR_FORMAT, "1 trailing bytes", NULL);
    free(longer);
    free(b);

    /* Not a file at all. */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/missing.safetensors", d.dir);
    ck_assert_ptr_null(fg_ckpt_open(missing));
    ck_err(FG_ERR_IO, "cannot open", "missing.safetensors");
    ck_assert_ptr_null(fg_ckpt_open(d.dir));
    ck_err(FG_ERR_IO, "not a regular file", NULL);
    tmp_remove(&d);
    END;
}
END_TEST

/* ---- loading into registries ---- */
START_TEST(test_load_mismatches)
{
    BEGIN;
    tmpdir d;
    tmp_make(&d);
    fg_params *p = fg_params_new();
    fg_tensor *w = fg_randn(gen, FG_SHAPE(2, 3), FG_F32, FG_CPU), *b = fg_randn(gen, FG_SHAPE(3), FG_F32, FG_CPU);
    ck_assert_int_eq(fg_params_add(p, "w", w, true), FG_OK);
    ck_assert_int_eq(fg_params_add(p, "b", b, false), FG_OK);
    ck_assert_int_eq(fg_checkpoint_save(d.path, p, NULL), FG_OK);

    /* Same names, the wrong shape or dtype: a clear error, and nothing loaded. */
    fg_params *q = fg_params_new();
    fg_tensor *b2 = fg_full(FG_SHAPE(3), 7, FG_F32, FG_CPU), *w2 = fg_full(FG_SHAPE(3, 2), 7, FG_F32, FG_CPU);
    ck_assert_int_eq(fg_params_add(q, "b", b2, false), FG_OK); /* b comes first: it must not be loaded either */
    ck_assert_int_eq(fg_params_add(q, "w", w2, true), FG_OK);
    ck_assert_int_eq(fg_checkpoint_load(d.path, q, NULL, 0), FG_ERR_SHAPE);
    ck_err(FG_ERR_SHAPE, "tensor 'w': file has shape (2, 3), the target has (3, 2)", d.path);
    ck_tensor_values(b2, (const double[]){7, 7, 7}, 3, 0);
    fg_params_free(q);

    q = fg_params_new();
    fg_tensor *w3 = fg_zeros(FG_SHAPE(2, 3), FG_F64, FG_CPU);
    ck_assert_int_eq(fg_params_add(q, "w", w3, true), FG_OK);
    ck_assert_int_eq(fg_checkpoint_load(d.path, q, NULL, FG_CKPT_ALLOW_UNEXPECTED), FG_ERR_DTYPE);
    ck_err(FG_ERR_DTYPE, "tensor 'w': file has dtype F32 (f32), the target is f64", NULL);
    fg_params_free(q);

    /* Missing and unexpected names, with and without the flags. */
    q = fg_params_new();
    fg_tensor *w4 = fg_zeros(FG_SHAPE(2, 3), FG_F32, FG_CPU), *c = fg_full(FG_SHAPE(2), 5, FG_F32, FG_CPU);
    ck_assert_int_eq(fg_params_add(q, "w", w4, true), FG_OK);
    ck_assert_int_eq(fg_params_add(q, "c", c, false), FG_OK);
    ck_assert_int_eq(fg_checkpoint_load(d.path, q, NULL, FG_CKPT_ALLOW_UNEXPECTED), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "no tensor 'c' in the file", "FG_CKPT_ALLOW_MISSING");
    ck_assert_int_eq(fg_checkpoint_load(d.path, q, NULL, FG_CKPT_ALLOW_MISSING), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "tensor 'b' in the file is not a target", "FG_CKPT_ALLOW_UNEXPECTED");
    ck_assert_int_eq(fg_checkpoint_load(d.path, q, NULL, FG_CKPT_ALLOW_MISSING | FG_CKPT_ALLOW_UNEXPECTED), FG_OK);
    ck_same_bits(w4, w);
    ck_tensor_values(c, (const double[]){5, 5}, 2, 0);
    fg_params_free(q);

    /* Several registries: one file, names unique across them. */
    fg_params *opt = fg_params_new();
    fg_tensor *mom = fg_randn(gen, FG_SHAPE(2, 3), FG_F32, FG_CPU);
    ck_assert_int_eq(fg_params_add(opt, "opt.w.momentum", mom, false), FG_OK);
    const fg_params *both[2] = {p, opt};
    ck_assert_int_eq(fg_checkpoint_save_multi(d.path, 2, both, NULL), FG_OK);
    fg_params *p2 = fg_params_new(), *o2 = fg_params_new();
    fg_tensor *wl = fg_zeros(FG_SHAPE(2, 3), FG_F32, FG_CPU), *bl = fg_zeros(FG_SHAPE(3), FG_F32, FG_CPU),
              *ml = fg_zeros(FG_SHAPE(2, 3), FG_F32, FG_CPU);
    fg_params_add(p2, "w", wl, true);
    fg_params_add(p2, "b", bl, false);
    fg_params_add(o2, "opt.w.momentum", ml, false);
    ck_assert_int_eq(fg_checkpoint_load(d.path, p2, NULL, 0), FG_ERR_INVALID); /* the momentum is unexpected */
    fg_params *into[2] = {p2, o2};
    ck_assert_msg(fg_checkpoint_load_multi(d.path, 2, into, NULL, 0) == FG_OK, "%s", fg_last_error());
    ck_same_bits(wl, w);
    ck_same_bits(bl, b);
    ck_same_bits(ml, mom);
    const fg_params *dup[2] = {p, p};
    ck_assert_int_eq(fg_checkpoint_save_multi(d.path, 2, dup, NULL), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "appears twice", NULL);
    fg_params *dup_in[2] = {p2, p2};
    ck_assert_int_eq(fg_checkpoint_load_multi(d.path, 2, dup_in, NULL, FG_CKPT_ALLOW_UNEXPECTED), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "'w' given twice", NULL);

    /* Argument errors (a NULL argument keeps an earlier error as the root cause). */
    fg_clear_error();
    ck_assert_int_eq(fg_checkpoint_save(NULL, p, NULL), FG_ERR_NULL);
    ck_assert_int_eq(fg_checkpoint_save(d.path, NULL, NULL), FG_ERR_NULL);
    ck_assert_int_eq(fg_checkpoint_load(NULL, p2, NULL, 0), FG_ERR_NULL);
    ck_assert_int_eq(fg_checkpoint_save("", p, NULL), FG_ERR_INVALID);
    fg_clear_error();
    ck_assert_int_eq(fg_checkpoint_load(d.path, NULL, NULL, 0), FG_ERR_NULL);
    const char *bad_names[2] = {"x", "__metadata__"};
    const fg_tensor *two[2] = {w, b};
    ck_assert_int_eq(fg_checkpoint_save_tensors(d.path, 2, bad_names, two, NULL), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "'__metadata__' is reserved", NULL);
    const char *same[2] = {"x", "x"};
    ck_assert_int_eq(fg_checkpoint_save_tensors(d.path, 2, same, two, NULL), FG_ERR_INVALID);
    fg_clear_error();
    const fg_tensor *with_null[2] = {w, NULL};
    ck_assert_int_eq(fg_checkpoint_save_tensors(d.path, 2, bad_names, with_null, NULL), FG_ERR_NULL);
    const char *utf[1] = {"\xc0\xaf"};
    ck_assert_int_eq(fg_checkpoint_save_tensors(d.path, 1, utf, two, NULL), FG_ERR_INVALID);
    ck_err(FG_ERR_INVALID, "not valid UTF-8", NULL);
    fg_clear_error();
    ck_assert_int_eq(fg_ckpt_read_into(NULL, "w", w), FG_ERR_NULL);
    ck_assert_int_eq(dir_count(d.dir, ".tmp."), 0);
    fg_params_free(p);
    fg_params_free(opt);
    fg_params_free(p2);
    fg_params_free(o2);
    tmp_remove(&d);
    END;
}
END_TEST

/* ---- atomic saving ---- */
START_TEST(test_atomic_save)
{
    BEGIN;
    tmpdir d;
    tmp_make(&d);
    fg_params *p = fg_params_new();
    fg_tensor *w = fg_randn(gen, FG_SHAPE(4, 4), FG_F32, FG_CPU);
    ck_assert_int_eq(fg_params_add(p, "w", w, true), FG_OK);
    ck_assert_int_eq(fg_checkpoint_save(d.path, p, NULL), FG_OK);
    size_t n0;
    unsigned char *old = read_all(d.path, &n0);

    /* A save that fails part-way (the file size limit: write() fails with
     * EFBIG, as on a full disk) leaves the old file and no temporary file. */
    fg_params *big = fg_params_new();
    fg_tensor *huge = fg_randn(gen, FG_SHAPE(64, 1024), FG_F32, FG_CPU); /* 256 KiB */
    ck_assert_int_eq(fg_params_add(big, "w", huge, true), FG_OK);
    struct rlimit saved, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    lim = saved;
    lim.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    const fg_status st = fg_checkpoint_save(d.path, big, NULL);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, prev);
    ck_assert_int_eq(st, FG_ERR_IO);
    ck_err(FG_ERR_IO, "writing", ".tmp.");
    size_t n1;
    unsigned char *now = read_all(d.path, &n1);
    ck_assert_uint_eq(n1, n0);
    ck_assert(memcmp(old, now, n0) == 0);
    free(now);
    ck_assert_int_eq(dir_count(d.dir, ".tmp."), 0);
    ck_assert_int_eq(dir_count(d.dir, ""), 1);

    /* No directory: nothing is created. A directory in the way of the rename:
     * the temporary file is removed. */
    char bad[200];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.safetensors", d.dir);
    ck_assert_int_eq(fg_checkpoint_save(bad, p, NULL), FG_ERR_IO);
    ck_err(FG_ERR_IO, "cannot create", "no/such/dir");
    snprintf(bad, sizeof bad, "%s/subdir", d.dir);
    ck_assert_int_eq(mkdir(bad, 0755), 0);
    char inner[240];
    snprintf(inner, sizeof inner, "%s/keep", bad);
    write_all(inner, "x", 1);
    ck_assert_int_eq(fg_checkpoint_save(bad, p, NULL), FG_ERR_IO);
    ck_err(FG_ERR_IO, "renaming", "subdir");
    ck_assert_int_eq(dir_count(d.dir, ".tmp."), 0);
    unlink(inner);
    rmdir(bad);

    /* A successful save replaces the file whole. */
    ck_assert_int_eq(fg_checkpoint_save(d.path, big, NULL), FG_OK);
    fg_ckpt_file *f = fg_ckpt_open(d.path);
    ck_assert_ptr_nonnull(f);
    ck_same_bits(fg_ckpt_read(f, "w", FG_CPU), huge);
    fg_ckpt_close(f);
    ck_assert_int_eq(dir_count(d.dir, ".tmp."), 0);
    free(old);
    fg_params_free(p);
    fg_params_free(big);
    tmp_remove(&d);
    END;
}
END_TEST

START_TEST(test_resume_bit_identical)
{
    BEGIN;
    tmpdir d;
    tmp_make(&d);
    check_resume(FG_CPU, d.path);
    tmp_remove(&d);
    END;
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_roundtrip_every_dtype);
    tcase_add_test(tc, test_strided_sources_and_targets);
    tcase_add_test(tc, test_layout_matches_spec);
    tcase_add_test(tc, test_reads_reference_writer_files);
    tcase_add_test(tc, test_metadata);
    tcase_add_test(tc, test_generator_and_step);
    tcase_add_test(tc, test_malformed_files);
    tcase_add_test(tc, test_load_mismatches);
    tcase_add_test(tc, test_atomic_save);
    tcase_add_test(tc, test_resume_bit_identical);
    suite_add_tcase(s, tc);
    return s;
}

FG_TEST_MAIN(make_suite)
