/* The JSON header of a safetensors file, through Jansson (libjansson, a
 * maintained library every distribution ships): Jansson does the JSON (UTF-8
 * validation, escapes, duplicate keys, nesting limits); this file checks the
 * safetensors rules on top: "__metadata__" holds strings, every other key a
 * {dtype, shape, data_offsets} whose byte range matches dtype x shape, and the
 * ranges tile the data buffer exactly (no holes, no overlaps, nothing past its
 * end). Unknown fields inside a tensor entry are ignored, as the reference
 * reader does. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include "ckpt_internal.h"

/* Every safetensors dtype of whole bytes, so a file holding ones flashgrad
 * lacks (U8, BOOL, ...) can still be listed and its other tensors loaded. */
static const struct {
    const char *name;
    size_t size;
    int dtype;
} DTYPES[] = {
    {"F32", 4, FG_F32}, {"F64", 8, FG_F64}, {"BF16", 2, FG_BF16}, {"F16", 2, FG_F16},
    {"I32", 4, FG_I32}, {"I64", 8, FG_I64}, {"BOOL", 1, -1},      {"U8", 1, -1},
    {"I8", 1, -1},      {"I16", 2, -1},     {"U16", 2, -1},       {"U32", 4, -1},
    {"U64", 8, -1},     {"F8_E5M2", 1, -1}, {"F8_E4M3", 1, -1},   {"F8_E8M0", 1, -1},
    {"C64", 8, -1},
};

const char *fg__ckpt_dtype_name(fg_dtype dt)
{
    for (size_t i = 0; i < sizeof DTYPES / sizeof *DTYPES; i++)
        if (DTYPES[i].dtype == (int)dt) return DTYPES[i].name;
    return NULL;
}

/* ---- writing ---- */
char *fg__ckpt_build_header(const char *op, const char *path, const fg__ckpt_item *items, int64_t n,
                            const fg_ckpt_meta *meta, size_t *len)
{
    json_t *root = json_object(), *md = json_object();
    char *text = NULL, *out = NULL;
    if (!root || !md) goto oom;
    const bool has_format = meta && fg_ckpt_meta_get(meta, "format");
    if (!has_format && json_object_set_new(md, "format", json_string("pt"))) goto oom;
    for (int64_t i = 0; meta && i < meta->n; i++) {
        json_t *v = json_string(meta->val[i]);
        if (!v) {
            fg__err(FG_ERR_INVALID, "%s: %s: metadata '%s': value is not valid UTF-8", op, path, meta->key[i]);
            goto fail;
        }
        if (json_object_set_new(md, meta->key[i], v)) {
            /* json_object_set_new consumed v; its only failures: OOM or a non-UTF-8 key. */
            fg__err(FG_ERR_INVALID, "%s: %s: metadata key '%s' is not valid UTF-8 (or out of memory)", op, path,
                    meta->key[i]);
            goto fail;
        }
    }
    if (json_object_set_new(root, "__metadata__", md)) {
        md = NULL;
        goto oom;
    }
    md = NULL;
    for (int64_t i = 0; i < n; i++) {
        const fg_tensor *t = items[i].t;
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        bool ok = e && shape && offs;
        for (int d = 0; ok && d < t->ndim; d++) ok = !json_array_append_new(shape, json_integer(t->shape[d]));
        ok = ok && !json_array_append_new(offs, json_integer((json_int_t)items[i].begin)) &&
             !json_array_append_new(offs, json_integer((json_int_t)items[i].end));
        ok = ok && !json_object_set_new(e, "dtype", json_string(fg__ckpt_dtype_name(t->dtype)));
        ok = ok && !json_object_set(e, "shape", shape) && !json_object_set(e, "data_offsets", offs);
        json_decref(shape);
        json_decref(offs);
        if (!ok) {
            json_decref(e);
            goto oom;
        }
        if (json_object_set_new(root, items[i].name, e)) {
            fg__err(FG_ERR_INVALID, "%s: %s: tensor name '%s' is not valid UTF-8 (or out of memory)", op, path,
                    items[i].name);
            goto fail;
        }
    }
    /* Compact, in insertion order: __metadata__ first, then data order. */
    text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) goto oom;
    const size_t raw = strlen(text), padded = (raw + 7) / 8 * 8;
    if (padded > FG_CKPT_MAX_HEADER) {
        fg__err(FG_ERR_INVALID, "%s: %s: header of %zu bytes exceeds the safetensors limit of %llu", op, path, padded,
                FG_CKPT_MAX_HEADER);
        goto fail;
    }
    out = malloc(padded);
    if (!out) goto oom;
    memcpy(out, text, raw);
    memset(out + raw, ' ', padded - raw); /* the spec pads with spaces to 8-byte alignment */
    *len = padded;
    free(text);
    json_decref(root);
    return out;
oom:
    fg__err(FG_ERR_OOM, "%s: %s: out of host memory building the header", op, path);
fail:
    free(text);
    json_decref(md);
    json_decref(root);
    return NULL;
}

/* ---- reading ---- */
void fg__ckpt_entries_free(fg_ckpt_entry *e, int64_t n)
{
    if (!e) return;
    for (int64_t i = 0; i < n; i++) {
        free((char *)e[i].name);
        free((int64_t *)e[i].shape);
    }
    free(e);
}

/* Reads a non-negative JSON integer; false when it is not one. */
static bool get_uint(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

#define FMT_ERR(...) (fg__err(FG_ERR_FORMAT, __VA_ARGS__), false)

/* One tensor entry: dtype, shape, offsets, sizes consistent. */
static bool parse_entry(const char *op, const char *path, const char *name, const json_t *v, uint64_t data_len,
                        fg_ckpt_entry *e)
{
    if (!json_is_object(v)) return FMT_ERR("%s: %s: tensor '%s': entry is not a JSON object", op, path, name);
    const json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
                 *jo = json_object_get(v, "data_offsets");
    if (!jd) return FMT_ERR("%s: %s: tensor '%s': missing \"dtype\"", op, path, name);
    if (!json_is_string(jd)) return FMT_ERR("%s: %s: tensor '%s': \"dtype\" is not a string", op, path, name);
    const char *ds = json_string_value(jd);
    e->dtype_name = NULL;
    for (size_t i = 0; i < sizeof DTYPES / sizeof *DTYPES; i++)
        if (!strcmp(ds, DTYPES[i].name)) {
            e->dtype_name = DTYPES[i].name;
            e->elem_size = DTYPES[i].size;
            e->dtype = DTYPES[i].dtype;
        }
    if (!e->dtype_name) return FMT_ERR("%s: %s: tensor '%s': unknown dtype \"%.32s\"", op, path, name, ds);
    if (!js) return FMT_ERR("%s: %s: tensor '%s': missing \"shape\"", op, path, name);
    if (!json_is_array(js)) return FMT_ERR("%s: %s: tensor '%s': \"shape\" is not an array", op, path, name);
    const size_t nd = json_array_size(js);
    if (nd > 1024) return FMT_ERR("%s: %s: tensor '%s': shape has %zu dims", op, path, name, nd);
    int64_t *shape = malloc((nd ? nd : 1) * sizeof *shape);
    if (!shape) return fg__err(FG_ERR_OOM, "%s: %s: out of host memory", op, path), false;
    e->shape = shape; /* owned by e from here (freed with the entries) */
    e->ndim = (int)nd;
    uint64_t numel = 1;
    bool overflow = false;
    for (size_t d = 0; d < nd; d++) {
        const json_t *x = json_array_get(js, d);
        if (!json_is_integer(x)) return FMT_ERR("%s: %s: tensor '%s': shape[%zu] is not an integer", op, path, name, d);
        const json_int_t s = json_integer_value(x);
        if (s < 0) return FMT_ERR("%s: %s: tensor '%s': shape[%zu] = %lld is negative", op, path, name, d, (long long)s);
        shape[d] = s;
        if (s && numel > INT64_MAX / (uint64_t)s) overflow = true;
        numel *= (uint64_t)s;
    }
    if (overflow || numel > (uint64_t)INT64_MAX / e->elem_size)
        return FMT_ERR("%s: %s: tensor '%s': element count of its shape overflows", op, path, name);
    e->numel = (int64_t)numel;
    uint64_t b, en;
    if (!jo) return FMT_ERR("%s: %s: tensor '%s': missing \"data_offsets\"", op, path, name);
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return FMT_ERR("%s: %s: tensor '%s': \"data_offsets\" is not an array of two integers", op, path, name);
    if (!get_uint(json_array_get(jo, 0), &b) || !get_uint(json_array_get(jo, 1), &en))
        return FMT_ERR("%s: %s: tensor '%s': \"data_offsets\" are not non-negative integers", op, path, name);
    if (en < b) return FMT_ERR("%s: %s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
                               op, path, name, b, en);
    if (en > data_len)
        return FMT_ERR("%s: %s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] run past the data buffer of %" PRIu64
                       " bytes (file truncated?)", op, path, name, b, en, data_len);
    const uint64_t need = numel * e->elem_size;
    if (en - b != need)
        return FMT_ERR("%s: %s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64 " bytes, but %s of %"
                       PRIu64 " elements needs %" PRIu64, op, path, name, b, en, en - b, e->dtype_name, numel, need);
    e->begin = b;
    e->end = en;
    return true;
}

static int by_offset(const void *a, const void *b)
{
    const fg_ckpt_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

fg_status fg__ckpt_parse_header(const char *op, const char *path, const char *buf, size_t len, uint64_t data_len,
                                fg_ckpt_entry **entries, int64_t *n_out, fg_ckpt_meta *meta)
{
    json_error_t jerr;
    /* Duplicate names would make "which tensor" ambiguous (the spec forbids them). */
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (strstr(jerr.text, "duplicate"))
            return fg__err(FG_ERR_FORMAT, "%s: %s: header has a duplicate name (%s, at byte %d of the header)", op, path,
                           jerr.text, jerr.position);
        return fg__err(FG_ERR_FORMAT, "%s: %s: header is not valid JSON: %s (at byte %d of the header)", op, path,
                       jerr.text, jerr.position);
    }
    fg_ckpt_entry *e = NULL;
    int64_t n = 0;
    if (!json_is_object(root)) {
        fg__err(FG_ERR_FORMAT, "%s: %s: header is not a JSON object", op, path);
        goto fail;
    }
    if (buf[0] != '{') {
        fg__err(FG_ERR_FORMAT, "%s: %s: header must begin with '{' (found byte 0x%02x)", op, path, (unsigned char)buf[0]);
        goto fail;
    }
    const size_t cap = json_object_size(root);
    e = calloc(cap ? cap : 1, sizeof *e);
    if (!e) {
        fg__err(FG_ERR_OOM, "%s: %s: out of host memory for %zu entries", op, path, cap);
        goto fail;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) {
                fg__err(FG_ERR_FORMAT, "%s: %s: \"__metadata__\" is not a JSON object", op, path);
                goto fail;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    fg__err(FG_ERR_FORMAT, "%s: %s: metadata '%s' is not a string (safetensors metadata maps strings to strings)",
                            op, path, mk);
                    goto fail;
                }
                if (fg_ckpt_meta_set(meta, mk, json_string_value(mv)) != FG_OK) goto fail;
            }
            continue;
        }
        e[n].name = fg__ckpt_strdup(key);
        if (!e[n].name) {
            fg__err(FG_ERR_OOM, "%s: %s: out of host memory", op, path);
            goto fail;
        }
        n++;
        if (!parse_entry(op, path, key, v, data_len, &e[n - 1])) goto fail;
    }
    /* The ranges, in offset order, must tile [0, data_len) exactly. */
    qsort(e, (size_t)n, sizeof *e, by_offset);
    uint64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        if (e[i].begin > at) {
            fg__err(FG_ERR_FORMAT, "%s: %s: tensor '%s': hole of %" PRIu64 " unused bytes before its data_offsets [%" PRIu64
                    ", %" PRIu64 "] (the data buffer must be covered exactly)", op, path, e[i].name, e[i].begin - at,
                    e[i].begin, e[i].end);
            goto fail;
        }
        if (e[i].begin < at) {
            fg__err(FG_ERR_FORMAT, "%s: %s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] overlap tensor '%s'", op,
                    path, e[i].name, e[i].begin, e[i].end, e[i - 1].name);
            goto fail;
        }
        at = e[i].end;
    }
    if (at != data_len) {
        fg__err(FG_ERR_FORMAT, "%s: %s: %" PRIu64 " trailing bytes after the last tensor's data (data buffer %" PRIu64
                " bytes, tensors cover %" PRIu64 "; the buffer must be covered exactly)", op, path, data_len - at, data_len, at);
        goto fail;
    }
    json_decref(root);
    *entries = e;
    *n_out = n;
    return FG_OK;
fail:
    fg__ckpt_entries_free(e, n);
    fg_ckpt_meta_clear(meta);
    json_decref(root);
    return fg_last_status();
}
