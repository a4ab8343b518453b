/* Checkpoint interoperability with PyTorch's safetensors (driven by
 * bench/check_safetensors.py, which has the same tensors and metadata):
 *
 *   ckpt_interop write PATH             writes the reference tensors with fg_checkpoint_save_tensors
 *   ckpt_interop check PATH [--partial] reads a file (e.g. from safetensors.torch.save_file) and
 *                                       checks every reference tensor bit for bit, and the metadata
 *
 * The values are exact in every dtype (quarter steps within +-2.75, integer
 * extremes), so both sides compute them without rounding questions. --partial
 * accepts files that lack some tensors (numpy has no bf16). Exit status 0 when
 * everything matches. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <flashgrad.h>

typedef struct {
    const char *name;
    fg_dtype dtype;
    int ndim;
    int64_t shape[3];
} spec;

static const spec SPECS[] = {
    {"f32.mat", FG_F32, 2, {3, 5}},
    {"f64.vec", FG_F64, 1, {7}},
    {"bf16.w", FG_BF16, 2, {4, 6}},
    {"f16.w", FG_F16, 3, {2, 3, 4}},
    {"i32.ids", FG_I32, 1, {9}},
    {"i64.big", FG_I64, 1, {5}},
    {"scalar", FG_F32, 0, {0}},
    {"empty", FG_F32, 2, {0, 4}},
    {"layers.0.attn.wq.weight", FG_F32, 2, {6, 4}}, /* written from a transposed view */
};
enum { NSPEC = sizeof SPECS / sizeof *SPECS };

static const char *const META[][2] = {
    {"step", "123456789012345678"},
    {"rng.seed", "42"},
    {"rng.offset", "18446744073709551615"},
    {"note", "h\xc3\xa9llo \xe2\x9c\x93"},
};
enum { NMETA = sizeof META / sizeof *META };

static int64_t numel_of(const spec *s)
{
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++) n *= s->shape[d];
    return n;
}

/* Element i of a tensor of dtype dt (the same recipe as the Python side). */
static double float_value(fg_dtype dt, int64_t i)
{
    if (i == 0 && (dt == FG_F32 || dt == FG_F64)) return 0.1;
    return (double)((i * 37) % 23 - 11) * 0.25;
}
static int64_t int_value(fg_dtype dt, int64_t i, int64_t n)
{
    if (dt == FG_I32) return i == 0 ? INT32_MIN : i == n - 1 ? INT32_MAX : (i * 7919) % 100003 - 50000;
    return i == 0 ? INT64_MIN : i == 1 ? ((int64_t)1 << 53) + 1 : (i - 2) * ((int64_t)1 << 40) + i;
}

/* The expected bytes of spec s (malloc'd). */
static void *expected_bytes(const spec *s, size_t *nbytes)
{
    const int64_t n = numel_of(s);
    *nbytes = (size_t)n * fg_dtype_size(s->dtype);
    unsigned char *b = malloc(*nbytes ? *nbytes : 1);
    for (int64_t i = 0; b && i < n; i++) {
        switch (s->dtype) {
        case FG_F32: ((float *)b)[i] = (float)float_value(s->dtype, i); break;
        case FG_F64: ((double *)b)[i] = float_value(s->dtype, i); break;
        case FG_BF16: ((uint16_t *)b)[i] = fg_float_to_bf16((float)float_value(s->dtype, i)); break;
        case FG_F16: ((uint16_t *)b)[i] = fg_float_to_f16((float)float_value(s->dtype, i)); break;
        case FG_I32: ((int32_t *)b)[i] = (int32_t)int_value(s->dtype, i, n); break;
        case FG_I64: ((int64_t *)b)[i] = int_value(s->dtype, i, n); break;
        default: break;
        }
    }
    return b;
}

static int do_write(const char *path)
{
    fg_tensor *t[NSPEC];
    const char *names[NSPEC];
    for (int k = 0; k < NSPEC; k++) {
        const spec *s = &SPECS[k];
        size_t nb;
        void *b = expected_bytes(s, &nb);
        names[k] = s->name;
        if (!strcmp(s->name, "layers.0.attn.wq.weight")) {
            /* Stored transposed: the file gets the (6, 4) view's elements in row-major order. */
            fg_tensor *c = fg_from_data(b, FG_SHAPE(6, 4), FG_F32, FG_CPU);
            fg_tensor *ct = fg_transpose(c, 0, 1);
            fg_tensor *base = fg_contiguous(ct); /* (4, 6): c transposed, packed */
            t[k] = fg_transpose(base, 0, 1);     /* (6, 4) = c, strided */
            fg_free(c);
            fg_free(ct);
            fg_free(base);
        } else {
            t[k] = fg_from_data(b, s->ndim, s->shape, s->dtype, FG_CPU);
        }
        free(b);
        if (!t[k]) {
            fprintf(stderr, "write: %s\n", fg_last_error());
            return 1;
        }
    }
    fg_ckpt_meta *m = fg_ckpt_meta_new();
    for (int i = 0; i < NMETA; i++) fg_ckpt_meta_set(m, META[i][0], META[i][1]);
    fg_status st = fg_checkpoint_save_tensors(path, NSPEC, names, (const fg_tensor *const *)t, m);
    fg_ckpt_meta_free(m);
    for (int k = 0; k < NSPEC; k++) fg_free(t[k]);
    if (st != FG_OK) {
        fprintf(stderr, "write: %s\n", fg_last_error());
        return 1;
    }
    printf("wrote %s (%d tensors)\n", path, NSPEC);
    return 0;
}

static int do_check(const char *path, bool partial)
{
    fg_ckpt_file *f = fg_ckpt_open(path);
    if (!f) {
        printf("FAIL open: %s\n", fg_last_error());
        return 1;
    }
    int bad = 0, checked = 0;
    for (int k = 0; k < NSPEC; k++) {
        const spec *s = &SPECS[k];
        if (!fg_ckpt_find(f, s->name)) {
            printf("%s %s: not in the file\n", partial ? "skip" : "FAIL", s->name);
            bad += !partial;
            continue;
        }
        fg_tensor *t = fg_empty(s->ndim, s->shape, s->dtype, FG_CPU);
        size_t nb;
        void *want = expected_bytes(s, &nb);
        void *got = malloc(nb ? nb : 1);
        if (!t || fg_ckpt_read_into(f, s->name, t) != FG_OK || fg_copy_to_host(t, got, nb) != FG_OK) {
            printf("FAIL %s: %s\n", s->name, fg_last_error());
            bad++;
        } else if (nb && memcmp(want, got, nb)) {
            printf("FAIL %s: values differ\n", s->name);
            bad++;
        } else {
            printf("ok   %s %s\n", s->name, fg_dtype_name(s->dtype));
            checked++;
        }
        free(want);
        free(got);
        fg_free(t);
    }
    const fg_ckpt_meta *m = fg_ckpt_metadata(f);
    for (int i = 0; i < NMETA; i++) {
        const char *v = fg_ckpt_meta_get(m, META[i][0]);
        if (!v || strcmp(v, META[i][1])) {
            printf("FAIL metadata %s: %s\n", META[i][0], v ? v : "(absent)");
            bad++;
        }
    }
    fg_ckpt_close(f);
    printf("%s: %d tensors match, %d failures\n", path, checked, bad);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "write")) return do_write(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "check")) return do_check(argv[2], argc > 3 && !strcmp(argv[3], "--partial"));
    fprintf(stderr, "usage: %s write PATH | check PATH [--partial]\n", argv[0]);
    return 2;
}
