/* Suite "cuda_smoke": the CUDA storage path (transfers, fills, strided copies,
 * dtype conversion on the device) checked bit for bit against the CPU. Exits
 * 77 (automake SKIP) without a usable GPU. Runs without fork: CUDA contexts do
 * not survive fork(). */
#include <stdio.h>
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
    fg_scope_end(tscope);
}

static size_t host_bytes(const fg_tensor *t) { return (size_t)fg_numel(t) * fg_dtype_size(fg_dtype_of(t)); }

/* Raw element bytes of any tensor (device tensors sync). Caller frees. */
static void *raw(const fg_tensor *t)
{
    size_t n = host_bytes(t);
    void *p = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(p);
    ck_assert_msg(fg_copy_to_host(t, p, n) == FG_OK, "copy to host: %s", fg_last_error());
    return p;
}

static void ck_same_bits(const fg_tensor *a, const fg_tensor *b)
{
    ck_assert_int_eq(fg_dtype_of(a), fg_dtype_of(b));
    ck_assert_int_eq(fg_numel(a), fg_numel(b));
    void *pa = raw(a), *pb = raw(b);
    ck_assert_msg(memcmp(pa, pb, host_bytes(a)) == 0, "%s tensors differ", fg_dtype_name(fg_dtype_of(a)));
    free(pa);
    free(pb);
}

static bool same_bits(const fg_tensor *a, const fg_tensor *b)
{
    if (fg_dtype_of(a) != fg_dtype_of(b) || fg_numel(a) != fg_numel(b)) return false;
    void *pa = raw(a), *pb = raw(b);
    const bool eq = memcmp(pa, pb, host_bytes(a)) == 0;
    free(pa);
    free(pb);
    return eq;
}

START_TEST(test_roundtrip_all_dtypes)
{
    fg_generator *g = fg_generator_new(1);
    const int64_t n = 1027; /* not a multiple of any vector width */
    for (int d = 0; d < FG_NUM_DTYPES; d++) {
        fg_tensor *h = fg_dtype_is_float((fg_dtype)d) ? fg_randn(g, 1, &n, (fg_dtype)d, FG_CPU)
                                                        : fg_randint(g, -1000000, 1000000, 1, &n, (fg_dtype)d, FG_CPU);
        ck_assert_ptr_nonnull(h);
        void *src = raw(h);
        fg_tensor *dev = fg_from_data(src, 1, &n, (fg_dtype)d, FG_CUDA);
        ck_assert_msg(dev != NULL, "%s", fg_last_error());
        ck_assert_int_eq(fg_device_of(dev), FG_CUDA);
        ck_assert_int_eq(fg_dtype_of(dev), d);
        void *back = raw(dev);
        ck_assert_msg(memcmp(src, back, (size_t)n * fg_dtype_size((fg_dtype)d)) == 0, "%s round trip differs",
                      fg_dtype_name((fg_dtype)d));
        /* fg_to there and back is exact too */
        fg_tensor *h2 = fg_to(fg_to(h, FG_CUDA, (fg_dtype)d), FG_CPU, (fg_dtype)d);
        ck_assert_ptr_nonnull(h2);
        ck_same_bits(h, h2);
        free(src);
        free(back);
    }
    fg_generator_free(g);
}
END_TEST

START_TEST(test_fill_on_device)
{
    fg_tensor *z = fg_zeros(FG_SHAPE(3, 5), FG_F32, FG_CUDA);
    fg_tensor *o = fg_ones(FG_SHAPE(7), FG_BF16, FG_CUDA);
    fg_tensor *f = fg_full(FG_SHAPE(2, 2), -3.25, FG_F64, FG_CUDA);
    fg_tensor *i = fg_full(FG_SHAPE(4), 123456789, FG_I64, FG_CUDA);
    fg_tensor *h = fg_full(FG_SHAPE(4), 65504, FG_F16, FG_CUDA);
    ck_assert_msg(z && o && f && i && h, "%s", fg_last_error());
    double v[15];
    ck_assert_int_eq(fg_to_f64_array(z, v, 15), FG_OK);
    for (int k = 0; k < 15; k++) ck_assert(v[k] == 0);
    ck_tensor_values(o, (const double[]){1, 1, 1, 1, 1, 1, 1}, 7, 0);
    ck_tensor_values(f, (const double[]){-3.25, -3.25, -3.25, -3.25}, 4, 0);
    ck_tensor_values(i, (const double[]){123456789, 123456789, 123456789, 123456789}, 4, 0);
    ck_tensor_values(h, (const double[]){65504, 65504, 65504, 65504}, 4, 0);
    /* a strided fill only touches the view */
    fg_tensor *m = fg_zeros(FG_SHAPE(3, 4), FG_F32, FG_CUDA);
    ck_assert_int_eq(fg_fill_(fg_slice(m, 1, 1, 4, 2), 5), FG_OK);
    ck_tensor_values(m, (const double[]){0, 5, 0, 5, 0, 5, 0, 5, 0, 5, 0, 5}, 12, 0);
    ck_assert_int_eq(fg_cuda_synchronize(), FG_OK);
}
END_TEST

START_TEST(test_strided_copy_matches_cpu)
{
    fg_generator *g = fg_generator_new(2);
    fg_tensor *cpu = fg_randn(g, FG_SHAPE(5, 6, 7), FG_F32, FG_CPU);
    fg_tensor *dev = fg_to(cpu, FG_CUDA, FG_F32);
    ck_assert_ptr_nonnull(dev);
    /* transpose + contiguous on each device */
    fg_tensor *dc = fg_contiguous(fg_transpose(dev, 0, 2));
    fg_tensor *cc = fg_contiguous(fg_transpose(cpu, 0, 2));
    ck_assert_int_eq(fg_device_of(dc), FG_CUDA);
    ck_assert(fg_is_contiguous(dc));
    ck_same_bits(dc, cc);
    /* a permuted, sliced view read straight back to the host */
    fg_tensor *dv = fg_slice(fg_permute(dev, FG_DIMS(1, 2, 0)), 1, 1, 7, 3);
    fg_tensor *cv = fg_slice(fg_permute(cpu, FG_DIMS(1, 2, 0)), 1, 1, 7, 3);
    ck_same_bits(dv, cv);
    /* a broadcast copy into a strided device destination */
    fg_tensor *dst = fg_zeros(FG_SHAPE(6, 5), FG_F64, FG_CUDA);
    fg_tensor *row = fg_arange(0, 6, 1, FG_F64, FG_CPU);
    ck_assert_int_eq(fg_copy_(fg_transpose(dst, 0, 1), row), FG_OK);
    double v[30];
    ck_assert_int_eq(fg_to_f64_array(dst, v, 30), FG_OK);
    for (int r = 0; r < 6; r++)
        for (int c = 0; c < 5; c++) ck_assert(v[r * 5 + c] == r);
    fg_generator_free(g);
}
END_TEST

START_TEST(test_device_cast_matches_cpu)
{
    fg_generator *g = fg_generator_new(3);
    fg_tensor *x = fg_normal(g, 0, 1000, FG_SHAPE(4099), FG_F32, FG_CPU);
    /* include rounding ties and specials */
    const float special[8] = {1.00390625f, 1.01171875f, 65520.0f, 0x1p-24f, -0.0f, INFINITY, NAN, 3.4e38f};
    fg_tensor *s = fg_from_f32(special, FG_SHAPE(8), FG_F32, FG_CPU);
    fg_tensor *inputs[2] = {x, s};
    for (int k = 0; k < 2; k++) {
        fg_tensor *dev = fg_to(inputs[k], FG_CUDA, FG_F32);
        for (int d = 0; d < FG_NUM_DTYPES; d++) {
            if (d == FG_I32 || d == FG_I64) {
                if (k == 1) continue; /* float -> int of inf/NaN is undefined */
            }
            fg_tensor *dd = fg_to(dev, FG_CUDA, (fg_dtype)d);
            ck_assert_msg(dd != NULL, "%s", fg_last_error());
            fg_tensor *back = fg_to(dd, FG_CPU, (fg_dtype)d);
            fg_tensor *ref = fg_cast(inputs[k], (fg_dtype)d);
            if (d == FG_BF16 || d == FG_F16 || d == FG_F32 || d == FG_F64) {
                /* NaN payloads may differ; compare everything else bit for bit */
                fg_compare_result r;
                ck_assert_int_eq(fg_compare(back, ref, 0, 0, &r), FG_OK);
                ck_assert_msg(r.n_mismatch == 0, "%s: %lld mismatches", fg_dtype_name((fg_dtype)d),
                              (long long)r.n_mismatch);
                if (k == 0) ck_same_bits(back, ref);
            } else {
                ck_same_bits(back, ref);
            }
        }
    }
    fg_generator_free(g);
}
END_TEST

/* The copy kernel's paths (memcpy, typed kernels with and without 16-byte
 * vectors, 32-bit indexing, the generic converter) for every dtype pair on
 * layouts that pick each: contiguous of odd and even lengths, a head transpose
 * (B, L, H, D) -> (B, H, L, D) with a vectorisable and an odd D, a view starting
 * off 16-byte alignment and a broadcast (stride 0) source; bit for bit equal to
 * the CPU. */
START_TEST(test_copy_paths_all_dtype_pairs)
{
    fg_generator *g = fg_generator_new(11);
    for (int sd = 0; sd < FG_NUM_DTYPES; sd++) {
        const fg_dtype st = (fg_dtype)sd;
        fg_tensor *cpu[6];
        cpu[0] = fg_arange(0, 1027, 1, st, FG_CPU);
        cpu[1] = fg_permute(fg_cast(fg_randint(g, -300, 300, FG_SHAPE(3, 5, 4, 16), FG_I64, FG_CPU), st), FG_DIMS(0, 2, 1, 3));
        cpu[2] = fg_permute(fg_cast(fg_randint(g, -300, 300, FG_SHAPE(2, 9, 3, 7), FG_I64, FG_CPU), st), FG_DIMS(0, 2, 1, 3));
        cpu[3] = fg_narrow(fg_cast(fg_randint(g, -300, 300, FG_SHAPE(6, 33), FG_I64, FG_CPU), st), 1, 1, 32);
        cpu[4] = fg_expand(fg_cast(fg_randint(g, -300, 300, FG_SHAPE(1, 24), FG_I64, FG_CPU), st), FG_SHAPE(10, 24));
        cpu[5] = fg_cast(fg_randint(g, -300, 300, FG_SHAPE(4096), FG_I64, FG_CPU), st);
        if (fg_dtype_is_float(st)) /* fractions too, so float conversions round */
            for (int k = 1; k < 6; k++) cpu[k] = fg_div(cpu[k], fg_full(FG_SHAPE(1), 7, st, FG_CPU));
        for (int k = 0; k < 6; k++) {
            ck_assert_msg(cpu[k] != NULL, "%s", fg_last_error());
            /* the same view on the device, over a device copy of its base */
            fg_tensor *dview;
            switch (k) {
            case 1: {
                fg_tensor *b = fg_to(fg_contiguous(fg_permute(cpu[1], FG_DIMS(0, 2, 1, 3))), FG_CUDA, st);
                dview = fg_permute(b, FG_DIMS(0, 2, 1, 3));
                break;
            }
            case 2: {
                fg_tensor *b = fg_to(fg_contiguous(fg_permute(cpu[2], FG_DIMS(0, 2, 1, 3))), FG_CUDA, st);
                dview = fg_permute(b, FG_DIMS(0, 2, 1, 3));
                break;
            }
            case 3: {
                fg_tensor *b = fg_zeros(FG_SHAPE(6, 33), st, FG_CUDA);
                ck_assert_int_eq(fg_copy_(fg_narrow(b, 1, 1, 32), fg_to(cpu[3], FG_CUDA, st)), FG_OK);
                dview = fg_narrow(b, 1, 1, 32);
                break;
            }
            case 4: dview = fg_expand(fg_to(fg_narrow(cpu[4], 0, 0, 1), FG_CUDA, st), FG_SHAPE(10, 24)); break;
            default: dview = fg_to(cpu[k], FG_CUDA, st); break;
            }
            ck_assert_msg(dview != NULL, "%s", fg_last_error());
            ck_assert(k == 0 || k == 5 || !fg_is_contiguous(dview));
            for (int dd = 0; dd < FG_NUM_DTYPES; dd++) {
                fg_tensor *got = fg_to(fg_to(dview, FG_CUDA, (fg_dtype)dd), FG_CPU, (fg_dtype)dd);
                fg_tensor *ref = fg_contiguous(fg_to(cpu[k], FG_CPU, (fg_dtype)dd));
                ck_assert_msg(got && ref, "%s", fg_last_error());
                ck_assert_msg(same_bits(got, ref), "layout %d: %s -> %s differs", k, fg_dtype_name(st),
                              fg_dtype_name((fg_dtype)dd));
            }
        }
        /* fills: +0 (memset), -0 and a value (typed), on an unaligned view */
        fg_tensor *m = fg_full(FG_SHAPE(37), 9, st, FG_CUDA);
        const double vals[3] = {0.0, -0.0, -2.5};
        for (int v = 0; v < 3; v++) {
            ck_assert_int_eq(fg_fill_(fg_narrow(m, 0, 1, 35), vals[v]), FG_OK);
            fg_tensor *ref = fg_full(FG_SHAPE(37), 9, st, FG_CPU);
            ck_assert_int_eq(fg_fill_(fg_narrow(ref, 0, 1, 35), vals[v]), FG_OK);
            ck_assert_msg(same_bits(fg_to(m, FG_CPU, st), ref), "fill %g of %s differs", vals[v],
                          fg_dtype_name(st));
        }
    }
    fg_generator_free(g);
}
END_TEST

START_TEST(test_ops_unsupported_on_device)
{
    fg_tensor *a = fg_ones(FG_SHAPE(2, 3), FG_F32, FG_CUDA);
    ck_assert_ptr_nonnull(a);
    fg_clear_error();
    fg_tensor *r = fg_add(a, a);
    if (r == NULL) {
        ck_assert_int_eq(fg_last_status(), FG_ERR_UNSUPPORTED);
        ck_assert_ptr_nonnull(strstr(fg_last_error(), "add"));
        ck_assert_ptr_nonnull(strstr(fg_last_error(), "cuda"));
    } else { /* a CUDA kernel for add exists now: then it must be right */
        ck_assert_int_eq(fg_device_of(r), FG_CUDA);
        ck_tensor_values(r, (const double[]){2, 2, 2, 2, 2, 2}, 6, 0);
    }
    /* mixing devices is a device error */
    fg_tensor *c = fg_ones(FG_SHAPE(2, 3), FG_F32, FG_CPU);
    ck_assert_ptr_null(fg_add(a, c));
    ck_assert_int_eq(fg_last_status(), FG_ERR_DEVICE);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "cuda"));
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "cpu"));
}
END_TEST

START_TEST(test_memory_stats_count_device_bytes)
{
    fg_memory_stats m0, m1;
    fg_get_memory_stats(&m0);
    fg_scope *s = fg_scope_begin();
    fg_tensor *t = fg_empty(FG_SHAPE(1000, 10), FG_F64, FG_CUDA);
    ck_assert_ptr_nonnull(t);
    fg_tensor *v = fg_transpose(t, 0, 1); /* a view: no new bytes */
    ck_assert_ptr_nonnull(v);
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_bytes[FG_CUDA], m0.live_bytes[FG_CUDA] + 80000);
    ck_assert_int_eq(m1.live_bytes[FG_CPU], m0.live_bytes[FG_CPU]);
    ck_assert_int_ge(m1.peak_bytes[FG_CUDA], m1.live_bytes[FG_CUDA]);
    ck_assert_int_eq(m1.live_storages, m0.live_storages + 1);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    fg_get_memory_stats(&m1);
    ck_assert_int_eq(m1.live_bytes[FG_CUDA], m0.live_bytes[FG_CUDA]);
    ck_assert_int_eq(m1.live_storages, m0.live_storages);
    ck_assert_int_eq(m1.live_tensors, m0.live_tensors);
}
END_TEST

START_TEST(test_large_transfers_through_staging)
{
    /* 9,000,001 floats: several 4 MiB staging chunks plus an odd tail, both directions. */
    int64_t n = 9000001;
    float *h = malloc((size_t)n * sizeof *h), *back = malloc((size_t)n * sizeof *back);
    ck_assert_ptr_nonnull(h);
    ck_assert_ptr_nonnull(back);
    for (int64_t i = 0; i < n; i++) h[i] = (float)(i % 1000003) * 0.5f - 7.0f;
    fg_tensor *d = fg_from_data(h, 1, &n, FG_F32, FG_CUDA);
    ck_assert_msg(d != NULL, "%s", fg_last_error());
    ck_assert_int_eq(fg_copy_to_host(d, back, (size_t)n * sizeof *back), FG_OK);
    ck_assert_int_eq(memcmp(h, back, (size_t)n * sizeof *h), 0);
    /* A strided view read back: packed on the device, then staged. */
    fg_tensor *v = fg_slice(d, 0, 1, n, 3);
    int64_t m = fg_numel(v);
    ck_assert_int_eq(m, (n - 1 + 2) / 3);
    ck_assert_int_eq(fg_copy_to_host(v, back, (size_t)m * sizeof *back), FG_OK);
    for (int64_t i = 0; i < m; i++) ck_assert_msg(back[i] == h[1 + 3 * i], "element %lld", (long long)i);
    free(h);
    free(back);
}
END_TEST

START_TEST(test_allocator_reuses_blocks)
{
    fg_cuda_memory_stats s0, s1;
    /* Warm the cache with one block of this size, then allocate it repeatedly. */
    fg_free(fg_keep(fg_empty(FG_SHAPE(1000, 333), FG_F32, FG_CUDA)));
    ck_assert_int_eq(fg_cuda_get_memory_stats(&s0), FG_OK);
    for (int i = 0; i < 50; i++) {
        fg_tensor *t = fg_keep(fg_empty(FG_SHAPE(1000, 333), FG_F32, FG_CUDA));
        ck_assert_ptr_nonnull(t);
        fg_free(t);
    }
    ck_assert_int_eq(fg_cuda_get_memory_stats(&s1), FG_OK);
    const char *nc = getenv("FG_CUDA_NO_CACHE");
    if (nc && *nc && strcmp(nc, "0") != 0) {
        ck_assert_int_eq(s1.n_cuda_malloc, s0.n_cuda_malloc + 50); /* caching is off: every alloc is real */
    } else {
        ck_assert_int_eq(s1.n_cuda_malloc, s0.n_cuda_malloc);
        ck_assert_int_eq(s1.n_cache_hits, s0.n_cache_hits + 50);
        ck_assert_int_ge(s1.cached_bytes, 1000 * 333 * 4);
    }
    ck_assert_int_eq(s1.in_use_bytes, s0.in_use_bytes);
    ck_assert_int_eq(fg_cuda_empty_cache(), FG_OK);
    ck_assert_int_eq(fg_cuda_get_memory_stats(&s1), FG_OK);
    ck_assert_int_eq(s1.cached_bytes, 0);
}
END_TEST

START_TEST(test_oom_is_an_error_and_recoverable)
{
    /* 2^40 floats = 4 TiB: more than any GPU has. */
    fg_tensor *huge = fg_empty(FG_SHAPE((int64_t)1 << 20, (int64_t)1 << 20), FG_F32, FG_CUDA);
    ck_assert_ptr_null(huge);
    ck_assert_int_eq(fg_last_status(), FG_ERR_OOM);
    ck_assert_ptr_nonnull(strstr(fg_last_error(), "out of memory"));
    fg_clear_error();
    fg_tensor *ok = fg_ones(FG_SHAPE(256, 256), FG_F32, FG_CUDA);
    ck_assert_msg(ok != NULL, "allocation after OOM failed: %s", fg_last_error());
    ck_close(fg_get(ok, (const int64_t[]){255, 255}), 1.0, 0);
}
END_TEST

static Suite *cuda_smoke_suite(void)
{
    Suite *s = suite_create("cuda_smoke");
    TCase *c = tcase_create("device");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_set_timeout(c, 120);
    tcase_add_test(c, test_roundtrip_all_dtypes);
    tcase_add_test(c, test_fill_on_device);
    tcase_add_test(c, test_strided_copy_matches_cpu);
    tcase_add_test(c, test_device_cast_matches_cpu);
    tcase_add_test(c, test_copy_paths_all_dtype_pairs);
    tcase_add_test(c, test_ops_unsupported_on_device);
    tcase_add_test(c, test_memory_stats_count_device_bytes);
    tcase_add_test(c, test_large_transfers_through_staging);
    tcase_add_test(c, test_allocator_reuses_blocks);
    tcase_add_test(c, test_oom_is_an_error_and_recoverable);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    char desc[256];
    fg_cuda_device_description(desc, sizeof desc);
    if (!fg_cuda_available()) {
        printf("cuda_smoke: GPU suite skipped (%s%s)\n", desc,
               fg_cuda_compiled() ? "" : "; configure --with-cuda to build the backend");
        return 77;
    }
    printf("cuda_smoke: running on %s\n", desc);
    SRunner *sr = srunner_create(cuda_smoke_suite());
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
