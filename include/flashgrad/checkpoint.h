#ifndef FLASHGRAD_CHECKPOINT_H
#define FLASHGRAD_CHECKPOINT_H

#include <flashgrad/params.h>
#include <flashgrad/random.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Checkpoints are safetensors files, readable by PyTorch's
 * safetensors.torch.load_file and written by its save_file:
 *
 *   8 bytes   N, the header length (unsigned 64-bit little-endian)
 *   N bytes   a UTF-8 JSON object, padded with spaces to a multiple of 8:
 *             {"__metadata__": {"format": "pt", "step": "1000", ...},
 *              "w": {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 48]}, ...}
 *   the rest  the data buffer: each tensor's elements, row-major, little-endian,
 *             at [begin, end) from the buffer's start; the ranges cover the
 *             buffer exactly, without holes or overlaps.
 *
 * dtypes: f32 f64 bf16 f16 i32 i64 <-> "F32" "F64" "BF16" "F16" "I32" "I64".
 * Saving writes tensors of wider elements first (8-, then 4-, then 2-byte, in
 * the caller's order within a width), so every tensor starts at a multiple of
 * its element size from the file's start (as the reference writer does).
 *
 * Saving is atomic: the file is written to "<path>.tmp.<pid>", flushed to disk
 * (fsync) and renamed over `path`; on any failure the temporary file is
 * removed and an existing `path` is untouched.
 *
 * Loading validates the whole file before it writes any tensor: a malformed or
 * truncated file is FG_ERR_FORMAT (the message names the path, the tensor and
 * what is wrong), an unreadable one FG_ERR_IO, a tensor whose dtype or shape
 * differs from the one it is loaded into FG_ERR_DTYPE / FG_ERR_SHAPE, a name
 * missing from the file (or, by default, a tensor in the file that nothing
 * asked for) FG_ERR_INVALID. Only an I/O error while copying data can leave
 * the targets partly loaded. Data is copied bit for bit into the existing
 * tensors in place (CPU or CUDA, any strides).
 *
 * Resuming training bit-identically: save the model's registry, the
 * optimizer's state registry (two registries or one combined registry: names
 * must be unique across them), the generator's (seed, offset) and the step in
 * the metadata; load them back into a freshly built model and optimizer. */

/* ---- metadata: ordered string -> string pairs ("__metadata__") ---- */
typedef struct fg_ckpt_meta fg_ckpt_meta;

fg_ckpt_meta *fg_ckpt_meta_new(void);
void fg_ckpt_meta_free(fg_ckpt_meta *m); /* NULL is fine */
void fg_ckpt_meta_clear(fg_ckpt_meta *m);
/* Sets key to value (both copied; replaces an existing key in place). Keys are
 * non-empty; keys and values must be valid UTF-8 (checked when saving). */
fg_status fg_ckpt_meta_set(fg_ckpt_meta *m, const char *key, const char *value);
/* The value of key, or NULL (no error) when absent. Valid until the key is set
 * again or m is cleared or freed. */
const char *fg_ckpt_meta_get(const fg_ckpt_meta *m, const char *key);
int64_t fg_ckpt_meta_count(const fg_ckpt_meta *m);
/* Pair i (0 <= i < count) in insertion order; FG_ERR_INDEX outside. */
fg_status fg_ckpt_meta_at(const fg_ckpt_meta *m, int64_t i, const char **key, const char **value);

/* Exact typed values as decimal strings. get: FG_ERR_INVALID when the key is
 * absent, FG_ERR_FORMAT when the value is not a number of that type (the whole
 * string must parse; u64: digits only, no sign; f64 is written with 17
 * significant digits, so it reads back to the same double). */
fg_status fg_ckpt_meta_set_u64(fg_ckpt_meta *m, const char *key, uint64_t v);
fg_status fg_ckpt_meta_get_u64(const fg_ckpt_meta *m, const char *key, uint64_t *out);
fg_status fg_ckpt_meta_set_i64(fg_ckpt_meta *m, const char *key, int64_t v);
fg_status fg_ckpt_meta_get_i64(const fg_ckpt_meta *m, const char *key, int64_t *out);
fg_status fg_ckpt_meta_set_f64(fg_ckpt_meta *m, const char *key, double v);
fg_status fg_ckpt_meta_get_f64(const fg_ckpt_meta *m, const char *key, double *out);

/* The training step under the key "step". */
#define FG_CKPT_STEP_KEY "step"
fg_status fg_ckpt_meta_set_step(fg_ckpt_meta *m, uint64_t step);
fg_status fg_ckpt_meta_get_step(const fg_ckpt_meta *m, uint64_t *step);
/* A generator's (seed, offset) under "<prefix>.seed" and "<prefix>.offset"
 * (prefix NULL: "rng"). get restores g with fg_generator_set_state; g is left
 * alone when either key is absent or malformed. */
fg_status fg_ckpt_meta_set_generator(fg_ckpt_meta *m, const char *prefix, const fg_generator *g);
fg_status fg_ckpt_meta_get_generator(const fg_ckpt_meta *m, const char *prefix, fg_generator *g);

/* ---- saving ---- */
/* Every entry of `tensors` under its name; meta may be NULL. The file's
 * metadata is meta's pairs, with "format": "pt" first unless meta sets
 * "format" (Hugging Face loaders look for it). */
fg_status fg_checkpoint_save(const char *path, const fg_params *tensors, const fg_ckpt_meta *meta);
/* The entries of n registries in one file (e.g. the model and the optimizer
 * state); a name in two registries is FG_ERR_INVALID. */
fg_status fg_checkpoint_save_multi(const char *path, int n, const fg_params *const *regs, const fg_ckpt_meta *meta);
/* n named tensors of any of the six dtypes (registries hold float tensors
 * only; this takes integer tensors too). */
fg_status fg_checkpoint_save_tensors(const char *path, int64_t n, const char *const *names,
                                     const fg_tensor *const *tensors, const fg_ckpt_meta *meta);

/* ---- loading ---- */
enum {
    FG_CKPT_STRICT = 0,               /* every target in the file, every file tensor a target */
    FG_CKPT_ALLOW_MISSING = 1 << 0,   /* targets absent from the file keep their values */
    FG_CKPT_ALLOW_UNEXPECTED = 1 << 1 /* tensors in the file that no target names are skipped */
};
/* Fills each entry of `into` from the tensor of the same name (dtype and shape
 * must match exactly). meta_out (may be NULL) is cleared and receives the
 * file's metadata. */
fg_status fg_checkpoint_load(const char *path, fg_params *into, fg_ckpt_meta *meta_out, unsigned flags);
fg_status fg_checkpoint_load_multi(const char *path, int n, fg_params *const *regs, fg_ckpt_meta *meta_out,
                                   unsigned flags);
fg_status fg_checkpoint_load_tensors(const char *path, int64_t n, const char *const *names, fg_tensor *const *tensors,
                                     fg_ckpt_meta *meta_out, unsigned flags);

/* ---- reading any safetensors file (tools, tests, error messages) ---- */
typedef struct fg_ckpt_file fg_ckpt_file;
typedef struct {
    const char *name;
    const char *dtype_name; /* as in the file: "F32", ..., or another safetensors dtype ("U8", "BOOL", ...) */
    int dtype;              /* the fg_dtype, or -1 when flashgrad has no such dtype */
    size_t elem_size;       /* bytes per element */
    int ndim;
    const int64_t *shape;   /* ndim sizes (any rank) */
    int64_t numel;
    uint64_t begin, end;    /* byte range in the data buffer */
} fg_ckpt_entry;

/* Opens and validates the whole header against the file (NULL, error set, on
 * any problem). Entries are in data order. */
fg_ckpt_file *fg_ckpt_open(const char *path);
void fg_ckpt_close(fg_ckpt_file *f); /* NULL is fine */
int64_t fg_ckpt_count(const fg_ckpt_file *f);
const fg_ckpt_entry *fg_ckpt_entry_at(const fg_ckpt_file *f, int64_t i); /* NULL (error set) outside */
const fg_ckpt_entry *fg_ckpt_find(const fg_ckpt_file *f, const char *name); /* NULL (no error) when absent */
const fg_ckpt_meta *fg_ckpt_metadata(const fg_ckpt_file *f);
/* Header length N and the data buffer's size in bytes. */
uint64_t fg_ckpt_header_len(const fg_ckpt_file *f);
uint64_t fg_ckpt_data_len(const fg_ckpt_file *f);
/* Copies tensor `name` into dst (same dtype and shape, any device/strides). */
fg_status fg_ckpt_read_into(fg_ckpt_file *f, const char *name, fg_tensor *dst);
/* Tensor `name` as a new contiguous tensor on `dev` (caller- or scope-owned). */
fg_tensor *fg_ckpt_read(fg_ckpt_file *f, const char *name, fg_device dev);

#ifdef __cplusplus
}
#endif
#endif
