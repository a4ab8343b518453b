/* Checkpoints as safetensors files (include/flashgrad/checkpoint.h): the file
 * I/O, atomic saving, and loading by name into existing tensors. The JSON
 * header is ckpt_header.c's, the metadata ckpt_meta.c's.
 *
 * POSIX I/O (open/pread/write/fsync/rename) rather than stdio: positioned reads
 * need no shared file position, and fsync + rename is what makes a save
 * atomic. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "ckpt_internal.h"

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

/* Device transfers and disk writes go in chunks of this size, so a large
 * tensor on the GPU never needs a host copy of its whole size. */
#define CHUNK ((size_t)8 << 20)

struct fg_ckpt_file {
    char *path;
    int fd;
    uint64_t header_len, data_len;
    fg_ckpt_entry *e; /* in data order */
    int64_t n;
    const fg_ckpt_entry **by_name; /* sorted by name, for lookups */
    fg_ckpt_meta meta;
};

/* The format is little-endian; so is every platform flashgrad targets, but say
 * so rather than write byte-swapped files. */
static fg_status check_endian(const char *op)
{
    const uint16_t one = 1;
    unsigned char b[2];
    memcpy(b, &one, 2);
    return b[0] == 1 ? FG_OK : fg__err(FG_ERR_UNSUPPORTED, "%s: big-endian hosts are not supported", op);
}

static void shape_str(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < ndim && n < len; i++) n += (size_t)snprintf(buf + n, len - n, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (ndim == 1 && n < len) n += (size_t)snprintf(buf + n, len - n, ",");
    if (n < len) snprintf(buf + n, len - n, ")");
}

/* ---- reading ---- */
/* n bytes at off, retrying short reads; a file that ends first (it shrank
 * since it was validated) is an error too. */
static fg_status pread_full(const char *op, const char *path, int fd, void *buf, size_t n, uint64_t off)
{
    char *p = buf;
    while (n > 0) {
        const ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return fg__err(FG_ERR_IO, "%s: %s: read failed at byte %" PRIu64 ": %s", op, path, off, strerror(errno));
        if (r == 0) return fg__err(FG_ERR_FORMAT, "%s: %s: file ends at byte %" PRIu64 " (truncated while reading)", op, path, off);
        p += r, n -= (size_t)r, off += (uint64_t)r;
    }
    return FG_OK;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const fg_ckpt_entry *const *)a)->name, (*(const fg_ckpt_entry *const *)b)->name);
}

static fg_ckpt_file *open_file(const char *op, const char *path)
{
    if (!path) return fg__err_null(op, "path"), NULL;
    if (check_endian(op) != FG_OK) return NULL;
    fg_ckpt_file *f = calloc(1, sizeof *f);
    char *header = NULL;
    if (!f || !(f->path = fg__ckpt_strdup(path))) {
        free(f);
        return fg__err(FG_ERR_OOM, "%s: %s: out of host memory", op, path), NULL;
    }
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        fg__err(FG_ERR_IO, "%s: cannot open '%s': %s", op, path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(f->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fg__err(FG_ERR_IO, "%s: %s: not a regular file", op, path);
        goto fail;
    }
    const uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        fg__err(FG_ERR_FORMAT, "%s: %s: file is %" PRIu64 " bytes, shorter than the 8-byte header length (truncated?)", op,
                path, size);
        goto fail;
    }
    unsigned char lb[8];
    if (pread_full(op, path, f->fd, lb, 8, 0) != FG_OK) goto fail;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | lb[i];
    if (hl > FG_CKPT_MAX_HEADER) {
        fg__err(FG_ERR_FORMAT, "%s: %s: header length %" PRIu64 " exceeds the safetensors limit of %llu (not a safetensors file?)",
                op, path, hl, FG_CKPT_MAX_HEADER);
        goto fail;
    }
    if (hl > size - 8) {
        fg__err(FG_ERR_FORMAT, "%s: %s: header length %" PRIu64 " runs past the end of the %" PRIu64 "-byte file (truncated?)",
                op, path, hl, size);
        goto fail;
    }
    header = malloc(hl ? hl : 1);
    if (!header) {
        fg__err(FG_ERR_OOM, "%s: %s: out of host memory for a %" PRIu64 "-byte header", op, path, hl);
        goto fail;
    }
    if (pread_full(op, path, f->fd, header, hl, 8) != FG_OK) goto fail;
    if (hl == 0) {
        fg__err(FG_ERR_FORMAT, "%s: %s: header length is 0 (the header must be a JSON object)", op, path);
        goto fail;
    }
    f->header_len = hl;
    f->data_len = size - 8 - hl;
    if (fg__ckpt_parse_header(op, path, header, hl, f->data_len, &f->e, &f->n, &f->meta) != FG_OK) goto fail;
    free(header);
    header = NULL;
    f->by_name = malloc(sizeof *f->by_name * (size_t)(f->n ? f->n : 1));
    if (!f->by_name) {
        fg__err(FG_ERR_OOM, "%s: %s: out of host memory", op, path);
        goto fail;
    }
    for (int64_t i = 0; i < f->n; i++) f->by_name[i] = &f->e[i];
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, by_name);
    return f;
fail:
    free(header);
    fg_ckpt_close(f);
    return NULL;
}

fg_ckpt_file *fg_ckpt_open(const char *path) { return open_file("fg_ckpt_open", path); }

void fg_ckpt_close(fg_ckpt_file *f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    fg__ckpt_entries_free(f->e, f->n);
    free(f->by_name);
    fg_ckpt_meta_clear(&f->meta);
    free(f->meta.key);
    free(f->meta.val);
    free(f->path);
    free(f);
}

int64_t fg_ckpt_count(const fg_ckpt_file *f) { return f ? f->n : 0; }
uint64_t fg_ckpt_header_len(const fg_ckpt_file *f) { return f ? f->header_len : 0; }
uint64_t fg_ckpt_data_len(const fg_ckpt_file *f) { return f ? f->data_len : 0; }
const fg_ckpt_meta *fg_ckpt_metadata(const fg_ckpt_file *f) { return f ? &f->meta : NULL; }

const fg_ckpt_entry *fg_ckpt_entry_at(const fg_ckpt_file *f, int64_t i)
{
    if (!f) return fg__err_null("fg_ckpt_entry_at", "file"), NULL;
    if (i < 0 || i >= f->n) {
        fg__err(FG_ERR_INDEX, "fg_ckpt_entry_at: %s: entry %lld of %lld", f->path, (long long)i, (long long)f->n);
        return NULL;
    }
    return &f->e[i];
}

const fg_ckpt_entry *fg_ckpt_find(const fg_ckpt_file *f, const char *name)
{
    if (!f || !name) return NULL;
    const fg_ckpt_entry key = {.name = name}, *kp = &key;
    const fg_ckpt_entry **hit = bsearch(&kp, f->by_name, (size_t)f->n, sizeof *f->by_name, by_name);
    return hit ? *hit : NULL;
}

/* Entry e's dtype and shape against dst: FG_ERR_DTYPE / FG_ERR_SHAPE naming both. */
static fg_status check_target(const char *op, const fg_ckpt_file *f, const fg_ckpt_entry *e, const fg_tensor *dst)
{
    if (e->dtype != (int)dst->dtype) {
        if (e->dtype < 0)
            return fg__err(FG_ERR_DTYPE, "%s: %s: tensor '%s' is %s, which flashgrad has no dtype for (target is %s)", op,
                           f->path, e->name, e->dtype_name, fg_dtype_name(dst->dtype));
        return fg__err(FG_ERR_DTYPE, "%s: %s: tensor '%s': file has dtype %s (%s), the target is %s", op, f->path, e->name,
                       e->dtype_name, fg_dtype_name((fg_dtype)e->dtype), fg_dtype_name(dst->dtype));
    }
    if (e->ndim != dst->ndim || (e->ndim && memcmp(e->shape, dst->shape, sizeof *e->shape * (size_t)e->ndim))) {
        char a[160], b[160];
        shape_str(e->ndim, e->shape, a, sizeof a);
        return fg__err(FG_ERR_SHAPE, "%s: %s: tensor '%s': file has shape %s, the target has %s", op, f->path, e->name, a,
                       fg_shape_str(dst, b, sizeof b));
    }
    return FG_OK;
}

/* Copies entry e's bytes into dst (checked to match) in place, bit for bit. */
static fg_status copy_in(const char *op, fg_ckpt_file *f, const fg_ckpt_entry *e, fg_tensor *dst)
{
    const size_t nbytes = (size_t)(e->end - e->begin);
    const uint64_t at = 8 + f->header_len + e->begin;
    if (nbytes == 0) return FG_OK;
    if (fg_is_contiguous(dst) && dst->device == FG_CPU) return pread_full(op, f->path, f->fd, fg__data(dst), nbytes, at);
    if (fg_is_contiguous(dst)) { /* CUDA: through a bounded host buffer */
        const size_t cap = nbytes < CHUNK ? nbytes : CHUNK;
        char *buf = malloc(cap);
        if (!buf) return fg__err(FG_ERR_OOM, "%s: %s: out of host memory reading '%s'", op, f->path, e->name);
        fg_status st = FG_OK;
        for (size_t off = 0; off < nbytes && st == FG_OK; off += cap) {
            const size_t len = nbytes - off < cap ? nbytes - off : cap;
            st = pread_full(op, f->path, f->fd, buf, len, at + off);
            if (st == FG_OK) st = fg__cuda_memcpy_h2d((char *)fg__data(dst) + off, buf, len);
        }
        free(buf);
        return st;
    }
    /* Strided target: the packed bytes as a host tensor, copied elementwise (raw bits for one dtype). */
    char *buf = malloc(nbytes);
    if (!buf) return fg__err(FG_ERR_OOM, "%s: %s: out of host memory reading '%s'", op, f->path, e->name);
    fg_status st = pread_full(op, f->path, f->fd, buf, nbytes, at);
    if (st == FG_OK) {
        int64_t stride[FG_MAX_DIMS];
        fg__contiguous_strides(dst->ndim, dst->shape, stride);
        fg_tensor *src = fg__tensor_external(op, buf, dst->dtype, FG_CPU, dst->ndim, dst->shape, stride);
        st = src ? fg__copy_elements(dst, src) : fg_last_status();
        fg__unref(src);
    }
    free(buf);
    return st;
}

static const fg_ckpt_entry *find_required(const char *op, const fg_ckpt_file *f, const char *name)
{
    const fg_ckpt_entry *e = fg_ckpt_find(f, name);
    if (!e) fg__err(FG_ERR_INVALID, "%s: %s: no tensor '%s' in the file", op, f->path, name);
    return e;
}

fg_status fg_ckpt_read_into(fg_ckpt_file *f, const char *name, fg_tensor *dst)
{
    static const char *op = "fg_ckpt_read_into";
    if (!f) return fg__err_null(op, "file");
    if (!name) return fg__err_null(op, "name");
    if (!dst) return fg__err_null(op, name);
    const fg_ckpt_entry *e = find_required(op, f, name);
    if (!e || check_target(op, f, e, dst) != FG_OK) return fg_last_status();
    return copy_in(op, f, e, dst);
}

fg_tensor *fg_ckpt_read(fg_ckpt_file *f, const char *name, fg_device dev)
{
    static const char *op = "fg_ckpt_read";
    if (!f) return fg__err_null(op, "file"), NULL;
    if (!name) return fg__err_null(op, "name"), NULL;
    const fg_ckpt_entry *e = find_required(op, f, name);
    if (!e) return NULL;
    if (e->dtype < 0) {
        fg__err(FG_ERR_DTYPE, "%s: %s: tensor '%s' is %s, which flashgrad has no dtype for", op, f->path, name, e->dtype_name);
        return NULL;
    }
    if (e->ndim > FG_MAX_DIMS) {
        fg__err(FG_ERR_UNSUPPORTED, "%s: %s: tensor '%s' has %d dims (flashgrad tensors have at most %d)", op, f->path, name,
                e->ndim, FG_MAX_DIMS);
        return NULL;
    }
    fg_tensor *t = fg_empty(e->ndim, e->shape, (fg_dtype)e->dtype, dev);
    if (t && copy_in(op, f, e, t) != FG_OK) {
        fg_free(t);
        return NULL;
    }
    return t;
}

/* ---- loading into targets ---- */
typedef struct {
    const char *name;
    fg_tensor *t;
} target;

/* Validates every target and the file's extra tensors first, then copies: a
 * mismatch anywhere leaves every target as it was. */
static fg_status load_targets(const char *op, const char *path, int64_t n, const target *tg, fg_ckpt_meta *meta_out,
                              unsigned flags)
{
    if (!path) return fg__err_null(op, "path");
    for (int64_t i = 0; i < n; i++) {
        if (!tg[i].name) return fg__err_null(op, "name");
        if (!tg[i].t) return fg__err_null(op, tg[i].name);
        for (int64_t j = 0; j < i; j++)
            if (!strcmp(tg[i].name, tg[j].name))
                return fg__err(FG_ERR_INVALID, "%s: %s: target name '%s' given twice", op, path, tg[i].name);
    }
    fg_ckpt_file *f = open_file(op, path);
    if (!f) return fg_last_status();
    const fg_ckpt_entry **match = calloc((size_t)(n ? n : 1), sizeof *match);
    bool *used = calloc((size_t)(f->n ? f->n : 1), sizeof *used);
    fg_status st = FG_OK;
    if (!match || !used) st = fg__err(FG_ERR_OOM, "%s: %s: out of host memory", op, path);
    for (int64_t i = 0; i < n && st == FG_OK; i++) {
        match[i] = fg_ckpt_find(f, tg[i].name);
        if (!match[i]) {
            if (!(flags & FG_CKPT_ALLOW_MISSING))
                st = fg__err(FG_ERR_INVALID, "%s: %s: no tensor '%s' in the file (it holds %lld; FG_CKPT_ALLOW_MISSING keeps "
                             "targets it lacks)", op, path, tg[i].name, (long long)f->n);
            continue;
        }
        used[match[i] - f->e] = true;
        st = check_target(op, f, match[i], tg[i].t);
    }
    if (st == FG_OK && !(flags & FG_CKPT_ALLOW_UNEXPECTED)) {
        int64_t extra = 0, first = -1;
        for (int64_t i = 0; i < f->n; i++)
            if (!used[i]) extra++, first = first < 0 ? i : first;
        if (extra)
            st = fg__err(FG_ERR_INVALID, "%s: %s: tensor '%s' in the file is not a target (%lld such; "
                         "FG_CKPT_ALLOW_UNEXPECTED skips them)", op, path, f->e[first].name, (long long)extra);
    }
    for (int64_t i = 0; i < n && st == FG_OK; i++)
        if (match[i]) st = copy_in(op, f, match[i], tg[i].t);
    if (st == FG_OK && meta_out) {
        fg_ckpt_meta_clear(meta_out);
        for (int64_t i = 0; i < f->meta.n && st == FG_OK; i++) st = fg_ckpt_meta_set(meta_out, f->meta.key[i], f->meta.val[i]);
    }
    free(match);
    free(used);
    fg_ckpt_close(f);
    return st;
}

/* The entries of n registries as targets (malloc'd; NULL with the error set). */
static target *registry_targets(const char *op, int n, const fg_params *const *regs, int64_t *count)
{
    if (n < 0) return fg__err(FG_ERR_INVALID, "%s: %d registries", op, n), NULL;
    if (n > 0 && !regs) return fg__err_null(op, "registries"), NULL;
    int64_t total = 0;
    for (int r = 0; r < n; r++) {
        if (!regs[r]) return fg__err_null(op, "registry"), NULL;
        total += fg_params_count(regs[r]);
    }
    target *tg = malloc(sizeof *tg * (size_t)(total ? total : 1));
    if (!tg) return fg__err(FG_ERR_OOM, "%s: out of host memory", op), NULL;
    int64_t k = 0;
    for (int r = 0; r < n; r++)
        for (int64_t i = 0; i < fg_params_count(regs[r]); i++) {
            const fg_param *p = fg_params_at(regs[r], i);
            tg[k++] = (target){p->name, p->t};
        }
    *count = total;
    return tg;
}

fg_status fg_checkpoint_load_tensors(const char *path, int64_t n, const char *const *names, fg_tensor *const *tensors,
                                     fg_ckpt_meta *meta_out, unsigned flags)
{
    static const char *op = "fg_checkpoint_load";
    if (n < 0) return fg__err(FG_ERR_INVALID, "%s: %lld tensors", op, (long long)n);
    if (n > 0 && (!names || !tensors)) return fg__err_null(op, names ? "tensors" : "names");
    target *tg = malloc(sizeof *tg * (size_t)(n ? n : 1));
    if (!tg) return fg__err(FG_ERR_OOM, "%s: out of host memory", op);
    for (int64_t i = 0; i < n; i++) tg[i] = (target){names[i], tensors[i]};
    fg_status st = load_targets(op, path, n, tg, meta_out, flags);
    free(tg);
    return st;
}

fg_status fg_checkpoint_load_multi(const char *path, int n, fg_params *const *regs, fg_ckpt_meta *meta_out, unsigned flags)
{
    static const char *op = "fg_checkpoint_load";
    int64_t count = 0;
    target *tg = registry_targets(op, n, (const fg_params *const *)regs, &count);
    if (!tg) return fg_last_status();
    fg_status st = load_targets(op, path, count, tg, meta_out, flags);
    free(tg);
    return st;
}

fg_status fg_checkpoint_load(const char *path, fg_params *into, fg_ckpt_meta *meta_out, unsigned flags)
{
    if (!into) return fg__err_null("fg_checkpoint_load", "registry");
    return fg_checkpoint_load_multi(path, 1, &into, meta_out, flags);
}

/* ---- saving ---- */
/* A write buffer, so many small tensors cost few system calls. */
typedef struct {
    int fd;
    char *buf;
    size_t len;
    const char *op, *tmp;
} writer;

static fg_status w_flush(writer *w)
{
    size_t off = 0;
    while (off < w->len) {
        const ssize_t r = write(w->fd, w->buf + off, w->len - off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return fg__err(FG_ERR_IO, "%s: writing '%s' failed: %s", w->op, w->tmp, strerror(errno));
        off += (size_t)r;
    }
    w->len = 0;
    return FG_OK;
}

static fg_status w_put(writer *w, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        const size_t take = n < CHUNK - w->len ? n : CHUNK - w->len;
        memcpy(w->buf + w->len, p, take);
        w->len += take, p += take, n -= take;
        if (w->len == CHUNK && w_flush(w) != FG_OK) return fg_last_status();
    }
    return FG_OK;
}

/* Tensor t's bytes, row-major: straight from host memory, through the chunk
 * buffer from device memory, through one packed copy when strided. */
static fg_status w_tensor(writer *w, const fg_tensor *t)
{
    const size_t nbytes = (size_t)t->numel * fg_dtype_size(t->dtype);
    if (nbytes == 0) return FG_OK;
    if (fg_is_contiguous(t) && t->device == FG_CPU) return w_put(w, fg__data(t), nbytes);
    if (fg_is_contiguous(t)) {
        for (size_t off = 0; off < nbytes;) {
            if (w->len == CHUNK && w_flush(w) != FG_OK) return fg_last_status();
            const size_t len = nbytes - off < CHUNK - w->len ? nbytes - off : CHUNK - w->len;
            if (fg__cuda_memcpy_d2h(w->buf + w->len, (const char *)fg__data(t) + off, len) != FG_OK) return fg_last_status();
            w->len += len, off += len;
        }
        return FG_OK;
    }
    char *buf = malloc(nbytes);
    if (!buf) return fg__err(FG_ERR_OOM, "%s: out of host memory (%zu bytes) packing a strided tensor", w->op, nbytes);
    fg_status st = fg_copy_to_host(t, buf, nbytes);
    if (st == FG_OK) st = w_put(w, buf, nbytes);
    free(buf);
    return st;
}

static int by_item_name(const void *a, const void *b)
{
    return strcmp(((const fg__ckpt_item *)a)->name, ((const fg__ckpt_item *)b)->name);
}

/* Best effort: makes the rename itself durable. Some file systems refuse to
 * fsync a directory; the file's own data is already on disk then. */
static void sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = fg__ckpt_strdup(slash ? path : ".");
    if (!dir) return;
    if (slash) dir[slash == path ? 1 : slash - path] = '\0';
    const int fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

static fg_status save_items(const char *op, const char *path, int64_t n, const fg__ckpt_item *in, const fg_ckpt_meta *meta)
{
    if (!path) return fg__err_null(op, "path");
    if (!*path) return fg__err(FG_ERR_INVALID, "%s: empty path", op);
    if (check_endian(op) != FG_OK) return fg_last_status();
    for (int64_t i = 0; i < n; i++) {
        if (!in[i].name) return fg__err_null(op, "name");
        if (!in[i].t) return fg__err_null(op, in[i].name);
        if (!*in[i].name || !strcmp(in[i].name, "__metadata__"))
            return fg__err(FG_ERR_INVALID, "%s: %s: tensor name '%s' is reserved or empty", op, path, in[i].name);
        if (!fg__ckpt_dtype_name(in[i].t->dtype))
            return fg__err(FG_ERR_DTYPE, "%s: %s: tensor '%s' has an invalid dtype", op, path, in[i].name);
    }
    /* Widest elements first (stable within a width): every tensor starts at a
     * multiple of its element size, given the 8-byte aligned header. */
    fg__ckpt_item *items = malloc(sizeof *items * (size_t)(n ? n : 1) * 2);
    if (!items) return fg__err(FG_ERR_OOM, "%s: out of host memory", op);
    fg__ckpt_item *sorted = items + n;
    int64_t k = 0;
    uint64_t at = 0;
    for (size_t width = 8; width >= 1; width /= 2)
        for (int64_t i = 0; i < n; i++)
            if (fg_dtype_size(in[i].t->dtype) == width) {
                const uint64_t nb = (uint64_t)in[i].t->numel * width;
                items[k] = in[i];
                items[k].begin = at;
                items[k++].end = at += nb;
            }
    memcpy(sorted, items, sizeof *items * (size_t)n);
    qsort(sorted, (size_t)n, sizeof *sorted, by_item_name);
    for (int64_t i = 1; i < n; i++)
        if (!strcmp(sorted[i].name, sorted[i - 1].name)) {
            fg__err(FG_ERR_INVALID, "%s: %s: tensor name '%s' appears twice", op, path, sorted[i].name);
            free(items);
            return FG_ERR_INVALID;
        }
    size_t hlen = 0;
    char *header = fg__ckpt_build_header(op, path, items, n, meta, &hlen);
    char *tmp = malloc(strlen(path) + 32);
    writer w = {.fd = -1, .buf = malloc(CHUNK), .op = op};
    fg_status st = FG_OK;
    if (!header) st = fg_last_status();
    else if (!tmp || !w.buf) st = fg__err(FG_ERR_OOM, "%s: out of host memory", op);
    if (st == FG_OK) {
        snprintf(tmp, strlen(path) + 32, "%s.tmp.%ld", path, (long)getpid());
        w.tmp = tmp;
        w.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (w.fd < 0) st = fg__err(FG_ERR_IO, "%s: cannot create '%s': %s", op, tmp, strerror(errno));
    }
    if (st == FG_OK) {
        unsigned char lb[8];
        for (int i = 0; i < 8; i++) lb[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
        st = w_put(&w, lb, 8);
        if (st == FG_OK) st = w_put(&w, header, hlen);
        for (int64_t i = 0; i < n && st == FG_OK; i++) st = w_tensor(&w, items[i].t);
        if (st == FG_OK) st = w_flush(&w);
        /* On disk before the rename: a crash never leaves a short file under `path`. */
        if (st == FG_OK && fsync(w.fd) != 0) st = fg__err(FG_ERR_IO, "%s: fsync '%s' failed: %s", op, tmp, strerror(errno));
        const int fd = w.fd;
        w.fd = -1;
        if (close(fd) != 0 && st == FG_OK) st = fg__err(FG_ERR_IO, "%s: closing '%s' failed: %s", op, tmp, strerror(errno));
        if (st == FG_OK && rename(tmp, path) != 0)
            st = fg__err(FG_ERR_IO, "%s: renaming '%s' to '%s' failed: %s", op, tmp, path, strerror(errno));
        if (st != FG_OK) unlink(tmp);
        else sync_dir(path);
    }
    free(w.buf);
    free(tmp);
    free(header);
    free(items);
    return st;
}

fg_status fg_checkpoint_save_tensors(const char *path, int64_t n, const char *const *names, const fg_tensor *const *tensors,
                                     const fg_ckpt_meta *meta)
{
    static const char *op = "fg_checkpoint_save";
    if (n < 0) return fg__err(FG_ERR_INVALID, "%s: %lld tensors", op, (long long)n);
    if (n > 0 && (!names || !tensors)) return fg__err_null(op, names ? "tensors" : "names");
    fg__ckpt_item *items = malloc(sizeof *items * (size_t)(n ? n : 1));
    if (!items) return fg__err(FG_ERR_OOM, "%s: out of host memory", op);
    for (int64_t i = 0; i < n; i++) items[i] = (fg__ckpt_item){names[i], tensors[i], 0, 0};
    fg_status st = save_items(op, path, n, items, meta);
    free(items);
    return st;
}

fg_status fg_checkpoint_save_multi(const char *path, int n, const fg_params *const *regs, const fg_ckpt_meta *meta)
{
    static const char *op = "fg_checkpoint_save";
    int64_t count = 0;
    target *tg = registry_targets(op, n, regs, &count);
    if (!tg) return fg_last_status();
    fg__ckpt_item *items = malloc(sizeof *items * (size_t)(count ? count : 1));
    fg_status st;
    if (items) {
        for (int64_t i = 0; i < count; i++) items[i] = (fg__ckpt_item){tg[i].name, tg[i].t, 0, 0};
        st = save_items(op, path, count, items, meta);
    } else {
        st = fg__err(FG_ERR_OOM, "%s: out of host memory", op);
    }
    free(items);
    free(tg);
    return st;
}

fg_status fg_checkpoint_save(const char *path, const fg_params *tensors, const fg_ckpt_meta *meta)
{
    if (!tensors) return fg__err_null("fg_checkpoint_save", "registry");
    return fg_checkpoint_save_multi(path, 1, &tensors, meta);
}
