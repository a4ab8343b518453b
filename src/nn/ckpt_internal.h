/* Shared by the checkpoint files: checkpoint.c (file I/O, save, load),
 * ckpt_header.c (the JSON header through Jansson), ckpt_meta.c (metadata). */
#ifndef FG_CKPT_INTERNAL_H
#define FG_CKPT_INTERNAL_H

#include <flashgrad/checkpoint.h>
#include "internal.h"

/* The reference implementation's cap: a larger header is not a checkpoint. */
#define FG_CKPT_MAX_HEADER 100000000ull

struct fg_ckpt_meta {
    int64_t n, cap;
    char **key, **val;
};

/* One tensor to write: its range in the data buffer is [begin, end). */
typedef struct {
    const char *name;
    const fg_tensor *t;
    uint64_t begin, end;
} fg__ckpt_item;

/* The safetensors dtype name of an fg_dtype. */
const char *fg__ckpt_dtype_name(fg_dtype dt);

/* The header for `items` (in data order) and meta: JSON padded with spaces to
 * a multiple of 8 bytes, in a malloc'd buffer of *len bytes (not
 * NUL-terminated). NULL, error set, on failure (invalid UTF-8 in a name or
 * metadata, OOM, header over the cap). */
char *fg__ckpt_build_header(const char *op, const char *path, const fg__ckpt_item *items, int64_t n,
                            const fg_ckpt_meta *meta, size_t *len);

/* Parses and validates a header of len bytes against a data buffer of
 * data_len bytes: writes the entries (sorted by data offset; free with
 * fg__ckpt_entries_free) and fills meta (which must be empty). FG_ERR_FORMAT
 * (or OOM) with a message naming path and tensor on any problem; nothing to
 * free then. */
fg_status fg__ckpt_parse_header(const char *op, const char *path, const char *buf, size_t len, uint64_t data_len,
                                fg_ckpt_entry **entries, int64_t *n, fg_ckpt_meta *meta);
void fg__ckpt_entries_free(fg_ckpt_entry *e, int64_t n);

/* Copies a string into malloc'd memory (NULL on OOM; C11 has no strdup). */
char *fg__ckpt_strdup(const char *s);

#endif
