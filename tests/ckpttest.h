/* Helpers shared by the checkpoint suites (CPU checkpoint, GPU cuda_checkpoint):
 * temporary directories, raw file bytes, bit comparisons, and a tiny trainer
 * (two parameters, SGD with momentum, dropout from a generator) for the
 * bit-identical resume check. */
#ifndef FG_CKPTTEST_H
#define FG_CKPTTEST_H

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include "testutil.h"

/* ---- files ---- */
typedef struct {
    char dir[64];
    char path[128];
} tmpdir;

static inline void tmp_make(tmpdir *d)
{
    snprintf(d->dir, sizeof d->dir, "/tmp/fg_ckpt_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(d->dir));
    snprintf(d->path, sizeof d->path, "%s/model.safetensors", d->dir);
}

/* Number of entries in the directory whose name contains `part`. */
static inline int dir_count(const char *dir, const char *part)
{
    DIR *dp = opendir(dir);
    ck_assert_ptr_nonnull(dp);
    int n = 0;
    for (struct dirent *e; (e = readdir(dp));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strstr(e->d_name, part)) n++;
    closedir(dp);
    return n;
}

static inline void tmp_remove(tmpdir *d)
{
    DIR *dp = opendir(d->dir);
    ck_assert_ptr_nonnull(dp);
    char p[512];
    for (struct dirent *e; (e = readdir(dp));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", d->dir, e->d_name);
        struct stat sb;
        if (stat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            rmdir(p);
        else
            unlink(p);
    }
    closedir(dp);
    ck_assert_int_eq(rmdir(d->dir), 0);
}

static inline unsigned char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    ck_assert_uint_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static inline void write_all(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* A safetensors file with header length field `hl` (UINT64_MAX: the header's
 * own length), the header text and then `data_len` data bytes 0, 1, 2, ... */
static inline void write_st(const char *path, uint64_t hl, const char *header, size_t data_len)
{
    const size_t h = strlen(header);
    if (hl == UINT64_MAX) hl = h;
    unsigned char *b = malloc(8 + h + data_len);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hl >> (8 * i));
    memcpy(b + 8, header, h);
    for (size_t i = 0; i < data_len; i++) b[8 + h + i] = (unsigned char)i;
    write_all(path, b, 8 + h + data_len);
    free(b);
}

static inline uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* The tensor's elements as bytes (caller frees). */
static inline unsigned char *bytes_of(const fg_tensor *t, size_t *n)
{
    *n = (size_t)fg_numel(t) * fg_dtype_size(fg_dtype_of(t));
    unsigned char *b = malloc(*n ? *n : 1);
    ck_assert_int_eq(fg_copy_to_host(t, b, *n), FG_OK);
    return b;
}

static inline void ck_same_bits(const fg_tensor *a, const fg_tensor *b)
{
    ck_assert_int_eq(fg_dtype_of(a), fg_dtype_of(b));
    ck_shape(a, fg_ndim(b), fg_shape(b));
    size_t na, nb;
    unsigned char *x = bytes_of(a, &na), *y = bytes_of(b, &nb);
    ck_assert_uint_eq(na, nb);
    ck_assert_msg(na == 0 || memcmp(x, y, na) == 0, "tensor bytes differ");
    free(x);
    free(y);
}

/* ---- resume: 2N steps == N steps, save, fresh load, N steps ---- */
typedef struct {
    fg_tensor *w, *b, *mw, *mb; /* parameters and SGD momentum buffers */
    fg_params *model, *opt;
    fg_generator *g;
    uint64_t step;
    fg_device dev;
} trainer;

static inline void trainer_init(trainer *t, fg_device dev, uint64_t seed, bool random_init)
{
    t->dev = dev;
    t->g = fg_generator_new(seed);
    fg_generator *init = fg_generator_new(seed ^ 0x55);
    t->w = random_init ? fg_randn(init, FG_SHAPE(4, 3), FG_F32, dev) : fg_zeros(FG_SHAPE(4, 3), FG_F32, dev);
    t->b = fg_zeros(FG_SHAPE(3), FG_F32, dev);
    t->mw = fg_full(FG_SHAPE(4, 3), random_init ? 0 : 9, FG_F32, dev);
    t->mb = fg_full(FG_SHAPE(3), random_init ? 0 : 9, FG_F32, dev);
    fg_generator_free(init);
    fg_set_requires_grad(t->w, true);
    fg_set_requires_grad(t->b, true);
    t->model = fg_params_new();
    t->opt = fg_params_new();
    ck_assert_int_eq(fg_params_add(t->model, "w", t->w, true), FG_OK);
    ck_assert_int_eq(fg_params_add(t->model, "b", t->b, false), FG_OK);
    ck_assert_int_eq(fg_params_add(t->opt, "opt.w.momentum", t->mw, false), FG_OK);
    ck_assert_int_eq(fg_params_add(t->opt, "opt.b.momentum", t->mb, false), FG_OK);
    t->step = 0;
}

static inline void trainer_free(trainer *t)
{
    fg_params_free(t->model);
    fg_params_free(t->opt);
    fg_generator_free(t->g);
}

/* One step: a batch and a dropout mask from the generator, MSE to a target
 * that depends on the step, SGD with momentum whose rate decays with the step. */
static inline void trainer_step(trainer *t)
{
    fg_scope *s = fg_scope_begin();
    fg_tensor *x = fg_randn(t->g, FG_SHAPE(8, 4), FG_F32, t->dev);
    fg_tensor *y = fg_dropout(fg_add(fg_matmul(x, t->w), t->b), 0.25, true, t->g);
    fg_tensor *target = fg_full(FG_SHAPE(8, 3), 0.01 * (double)(t->step % 7), FG_F32, t->dev);
    fg_tensor *d = fg_sub(y, target);
    fg_tensor *loss = fg_mean_all(fg_mul(d, d));
    ck_assert_msg(loss != NULL, "%s", fg_last_error());
    ck_assert_int_eq(fg_backward(loss), FG_OK);
    const bool prev = fg_set_grad_enabled(false);
    const double lr = 0.1 / (1.0 + 0.05 * (double)t->step);
    fg_tensor *ps[2] = {t->w, t->b}, *ms[2] = {t->mw, t->mb};
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(fg_copy_(ms[i], fg_add(fg_mul_scalar(ms[i], 0.9), fg_grad(ps[i]))), FG_OK);
        ck_assert_int_eq(fg_copy_(ps[i], fg_sub(ps[i], fg_mul_scalar(ms[i], lr))), FG_OK);
        fg_zero_grad(ps[i]);
    }
    fg_set_grad_enabled(prev);
    ck_assert_int_eq(fg_scope_end(s), FG_OK);
    t->step++;
}

/* Trains 2N steps straight, and N steps + save + load into a fresh trainer
 * (other initial values, seed and step) + N steps, on `dev`: identical bits. */
static inline void check_resume(fg_device dev, const char *path)
{
    enum { N = 6 };
    trainer full, first, resumed;
    trainer_init(&full, dev, 2024, true);
    for (int i = 0; i < 2 * N; i++) trainer_step(&full);

    trainer_init(&first, dev, 2024, true);
    for (int i = 0; i < N; i++) trainer_step(&first);
    fg_ckpt_meta *m = fg_ckpt_meta_new();
    ck_assert_int_eq(fg_ckpt_meta_set_step(m, first.step), FG_OK);
    ck_assert_int_eq(fg_ckpt_meta_set_generator(m, NULL, first.g), FG_OK);
    const fg_params *regs[2] = {first.model, first.opt};
    ck_assert_int_eq(fg_checkpoint_save_multi(path, 2, regs, m), FG_OK);
    fg_ckpt_meta_free(m);

    /* A fresh process's view: other initial values, another seed, step 0. */
    trainer_init(&resumed, dev, 777, false);
    fg_params *into[2] = {resumed.model, resumed.opt};
    m = fg_ckpt_meta_new();
    ck_assert_msg(fg_checkpoint_load_multi(path, 2, into, m, FG_CKPT_STRICT) == FG_OK, "%s", fg_last_error());
    ck_assert_int_eq(fg_ckpt_meta_get_step(m, &resumed.step), FG_OK);
    ck_assert_int_eq(fg_ckpt_meta_get_generator(m, NULL, resumed.g), FG_OK);
    fg_ckpt_meta_free(m);
    ck_assert(resumed.step == N);
    for (int i = 0; i < N; i++) trainer_step(&resumed);

    ck_assert(resumed.step == full.step);
    ck_same_bits(resumed.w, full.w);
    ck_same_bits(resumed.b, full.b);
    ck_same_bits(resumed.mw, full.mw);
    ck_same_bits(resumed.mb, full.mb);
    ck_assert(fg_generator_offset(resumed.g) == fg_generator_offset(full.g));
    /* The test can tell: without the optimizer state the run differs. */
    first.step = N;
    ck_assert_int_eq(fg_zero_(first.mw), FG_OK);
    for (int i = 0; i < N; i++) trainer_step(&first);
    size_t n1, n2;
    unsigned char *a = bytes_of(first.w, &n1), *b = bytes_of(full.w, &n2);
    ck_assert(memcmp(a, b, n1) != 0);
    free(a);
    free(b);
    trainer_free(&full);
    trainer_free(&first);
    trainer_free(&resumed);
}

#endif
