/* Suite "cuda_checkpoint": checkpoints of device tensors. Saving CUDA tensors
 * writes the same bytes as saving their CPU copies (a 12 MB tensor crosses the
 * 8 MB transfer chunks; a strided view is packed); loading into CUDA tensors,
 * contiguous or strided, restores them bit for bit; resuming training on the
 * GPU is bit-identical. Exits 77 (automake SKIP) without a GPU. */
#include "ckpttest.h"
#include "cudatest.h"

#define NC 9
static const char *const CNAMES[NC] = {"big", "f64", "bf16", "f16", "i32", "i64", "scalar", "empty", "wt"};

static void make_cpu(fg_generator *gen, fg_tensor **t)
{
    t[0] = fg_randn(gen, FG_SHAPE(3, 1 << 20), FG_F32, FG_CPU); /* 12 MB */
    t[1] = fg_randn(gen, FG_SHAPE(7), FG_F64, FG_CPU);
    t[2] = fg_randn(gen, FG_SHAPE(5, 7), FG_BF16, FG_CPU);
    t[3] = fg_randn(gen, FG_SHAPE(2, 3, 4), FG_F16, FG_CPU);
    t[4] = fg_randint(gen, -1000000, 1000000, FG_SHAPE(9), FG_I32, FG_CPU);
    const int64_t big[3] = {INT64_MIN, ((int64_t)1 << 53) + 1, INT64_MAX};
    t[5] = fg_from_data(big, FG_SHAPE(3), FG_I64, FG_CPU);
    t[6] = fg_scalar(-1.5, FG_F32, FG_CPU);
    t[7] = fg_zeros(FG_SHAPE(0, 4), FG_BF16, FG_CPU);
    t[8] = fg_contiguous(fg_transpose(fg_randn(gen, FG_SHAPE(6, 5), FG_F32, FG_CPU), 0, 1)); /* (5, 6) */
    for (int i = 0; i < NC; i++) ck_assert_msg(t[i] != NULL, "%s", fg_last_error());
}

START_TEST(test_cuda_save_load)
{
    BEGIN;
    tmpdir d;
    tmp_make(&d);
    char cpu_path[200], gpu_path[200];
    snprintf(cpu_path, sizeof cpu_path, "%s/cpu.safetensors", d.dir);
    snprintf(gpu_path, sizeof gpu_path, "%s/gpu.safetensors", d.dir);
    fg_tensor *cpu[NC], *gpu[NC];
    make_cpu(gen, cpu);
    for (int i = 0; i < NC; i++) gpu[i] = to_cuda(cpu[i], false);
    /* "wt" from the device as a strided view (the transpose of a packed (6, 5)). */
    gpu[8] = fg_transpose(fg_contiguous(fg_transpose(gpu[8], 0, 1)), 0, 1);
    ck_assert(!fg_is_contiguous(gpu[8]));
    ck_assert_msg(fg_checkpoint_save_tensors(cpu_path, NC, CNAMES, (const fg_tensor *const *)cpu, NULL) == FG_OK, "%s",
                  fg_last_error());
    ck_assert_msg(fg_checkpoint_save_tensors(gpu_path, NC, CNAMES, (const fg_tensor *const *)gpu, NULL) == FG_OK, "%s",
                  fg_last_error());
    size_t na, nb;
    unsigned char *a = read_all(cpu_path, &na), *b = read_all(gpu_path, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert_msg(memcmp(a, b, na) == 0, "saving device tensors wrote other bytes than their CPU copies");
    free(a);
    free(b);

    /* Into fresh contiguous device tensors. */
    fg_tensor *dst[NC];
    for (int i = 0; i < NC; i++) {
        dst[i] = fg_full(fg_ndim(cpu[i]), fg_shape(cpu[i]), 3, fg_dtype_of(cpu[i]), FG_CUDA);
        ck_assert_ptr_nonnull(dst[i]);
    }
    ck_assert_msg(fg_checkpoint_load_tensors(gpu_path, NC, CNAMES, dst, NULL, 0) == FG_OK, "%s", fg_last_error());
    for (int i = 0; i < NC; i++) ck_same_bits(dst[i], cpu[i]);

    /* Into a strided device target, and as new device tensors. */
    fg_ckpt_file *f = fg_ckpt_open(cpu_path);
    ck_assert_ptr_nonnull(f);
    fg_tensor *buf = fg_zeros(FG_SHAPE(6, 5), FG_F32, FG_CUDA);
    fg_tensor *view = fg_transpose(buf, 0, 1); /* (5, 6) */
    ck_assert_msg(fg_ckpt_read_into(f, "wt", view) == FG_OK, "%s", fg_last_error());
    ck_same_bits(view, cpu[8]);
    for (int i = 0; i < NC; i++) {
        fg_tensor *r = fg_ckpt_read(f, CNAMES[i], FG_CUDA);
        ck_assert_msg(r != NULL && fg_device_of(r) == FG_CUDA, "%s", fg_last_error());
        ck_same_bits(r, cpu[i]);
    }
    fg_ckpt_close(f);
    tmp_remove(&d);
    END;
}
END_TEST

START_TEST(test_cuda_resume_bit_identical)
{
    BEGIN;
    tmpdir d;
    tmp_make(&d);
    check_resume(FG_CUDA, d.path);
    tmp_remove(&d);
    END;
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("cuda_checkpoint");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cuda_save_load);
    tcase_add_test(tc, test_cuda_resume_bit_identical);
    suite_add_tcase(s, tc);
    return s;
}

FG_CUDA_TEST_MAIN(make_suite, "cuda_checkpoint")
