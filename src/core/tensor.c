/* Tensor objects: lifetime (reference counts + scopes), creation, properties. */
#include <stdio.h>
#include <stdlib.h>
#include "internal.h"

/* ---- scopes ---- */
struct fg_scope {
    fg_tensor **items;
    size_t n, cap;
    fg_scope *parent;
};

static _Thread_local fg_scope *tl_scope;

fg_scope *fg_scope_begin(void)
{
    fg_scope *s = calloc(1, sizeof *s);
    if (!s) {
        fg__err(FG_ERR_OOM, "fg_scope_begin: out of memory");
        return NULL;
    }
    s->parent = tl_scope;
    tl_scope = s;
    return s;
}

fg_status fg_scope_end(fg_scope *s)
{
    if (!s) return fg__err_null("fg_scope_end", "scope");
    if (s != tl_scope)
        return fg__err(FG_ERR_STATE, "fg_scope_end: scope %p is not the innermost open scope "
                                     "(scopes must end in reverse order of fg_scope_begin)", (void *)s);
    tl_scope = s->parent;
    for (size_t i = 0; i < s->n; i++) {
        fg_tensor *t = s->items[i];
        if (!t) continue;
        t->scope = NULL;
        fg__unref(t);
    }
    free(s->items);
    free(s);
    return FG_OK;
}

static bool scope_add(fg_tensor *t)
{
    fg_scope *s = tl_scope;
    if (!s) return true;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        fg_tensor **items = realloc(s->items, cap * sizeof *items);
        if (!items) return false;
        s->items = items;
        s->cap = cap;
    }
    t->scope = s;
    t->scope_slot = s->n;
    s->items[s->n++] = t;
    return true;
}

static void scope_remove(fg_tensor *t)
{
    if (!t->scope) return;
    t->scope->items[t->scope_slot] = NULL;
    t->scope = NULL;
}

fg_tensor *fg_keep(fg_tensor *t)
{
    if (t) scope_remove(t);
    return t;
}

fg_tensor *fg__adopt(fg_tensor *t)
{
    if (t && !t->scope && !scope_add(t)) {
        fg_free(t);
        fg__err(FG_ERR_OOM, "out of memory registering a tensor in its scope");
        return NULL;
    }
    return t;
}

fg_tensor *fg_retain(fg_tensor *t)
{
    if (t) t->refcount++;
    return t;
}

void fg_free(fg_tensor *t)
{
    if (!t) return;
    scope_remove(t); /* a scope-owned tensor: this releases the scope's reference early */
    fg__unref(t);
}

void fg__unref(fg_tensor *t)
{
    if (!t || --t->refcount > 0) return;
    if (t->scope) scope_remove(t);
    if (t->grad) fg__unref(t->grad);
    if (t->grad_fn) fg__node_unref(t->grad_fn);
    fg__storage_unref(t->storage);
    fg__stats_tensor(-1);
    free(t);
}

/* ---- creation ---- */
fg_status fg__check_shape(const char *op, int ndim, const int64_t *shape, int64_t *numel)
{
    if (ndim < 0 || ndim > FG_MAX_DIMS)
        return fg__err(FG_ERR_DIM, "%s: ndim %d outside 0..%d", op, ndim, FG_MAX_DIMS);
    if (ndim > 0 && !shape) return fg__err_null(op, "shape");
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return fg__err(FG_ERR_SHAPE, "%s: negative size %lld at dim %d", op, (long long)shape[i], i);
        if (__builtin_mul_overflow(n, shape[i], &n) || n > (INT64_MAX >> 4))
            return fg__err(FG_ERR_OVERFLOW, "%s: element count of the %d-d shape overflows 64 bits", op, ndim);
    }
    *numel = n;
    return FG_OK;
}

void fg__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

/* in_scope: registered in the current scope (every tensor but fg__tensor_external's). */
static fg_tensor *tensor_header(const char *op, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev, bool in_scope)
{
    fg_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        fg__err(FG_ERR_OOM, "%s: out of host memory", op);
        return NULL;
    }
    t->refcount = 1;
    t->dtype = dt;
    t->device = dev;
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= shape[i];
    }
    if (in_scope && !scope_add(t)) {
        free(t);
        fg__err(FG_ERR_OOM, "%s: out of host memory (scope)", op);
        return NULL;
    }
    fg__stats_tensor(1);
    return t;
}

static fg_tensor *tensor_struct(const char *op, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev)
{
    return tensor_header(op, ndim, shape, dt, dev, true);
}

static bool check_dtype_device(const char *op, fg_dtype dt, fg_device dev)
{
    if ((unsigned)dt >= FG_NUM_DTYPES) {
        fg__err(FG_ERR_DTYPE, "%s: invalid dtype %d", op, (int)dt);
        return false;
    }
    if (dev != FG_CPU && dev != FG_CUDA) {
        fg__err(FG_ERR_DEVICE, "%s: invalid device %d", op, (int)dev);
        return false;
    }
    if (dev == FG_CUDA && !fg_cuda_available()) {
        fg__err(FG_ERR_DEVICE, "%s: CUDA device requested but %s", op,
                fg_cuda_compiled() ? "no usable CUDA GPU was found" : "this build has no CUDA backend");
        return false;
    }
    return true;
}

fg_tensor *fg__new(const char *op, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev)
{
    int64_t numel;
    if (!check_dtype_device(op, dt, dev)) return NULL;
    if (fg__check_shape(op, ndim, shape, &numel) != FG_OK) return NULL;
    size_t bytes;
    if (__builtin_mul_overflow((size_t)numel, fg_dtype_size(dt), &bytes)) {
        fg__err(FG_ERR_OVERFLOW, "%s: byte size overflows", op);
        return NULL;
    }
    fg_storage *s = fg__storage_new(dev, bytes);
    if (!s) return NULL;
    fg_tensor *t = tensor_struct(op, ndim, shape, dt, dev);
    if (!t) {
        fg__storage_unref(s);
        return NULL;
    }
    t->storage = s;
    fg__contiguous_strides(ndim, shape, t->stride);
    return t;
}

fg_tensor *fg__new_like(const char *op, const fg_tensor *like)
{
    return fg__new(op, like->ndim, like->shape, like->dtype, like->device);
}

fg_tensor *fg__new_dense_like(const char *op, const fg_tensor *like)
{
    const int nd = like->ndim;
    int perm[FG_MAX_DIMS]; /* dims by decreasing stride; ties keep their order */
    for (int d = 0; d < nd; d++) perm[d] = d;
    for (int a = 1; a < nd; a++)
        for (int b = a; b > 0 && like->stride[perm[b - 1]] < like->stride[perm[b]]; b--) {
            const int t = perm[b];
            perm[b] = perm[b - 1];
            perm[b - 1] = t;
        }
    bool identity = true;
    for (int d = 0; d < nd; d++) identity &= perm[d] == d;
    if (identity) return fg__new(op, nd, like->shape, like->dtype, like->device);
    int64_t pshape[FG_MAX_DIMS], pstride[FG_MAX_DIMS], stride[FG_MAX_DIMS];
    for (int d = 0; d < nd; d++) pshape[d] = like->shape[perm[d]];
    fg__contiguous_strides(nd, pshape, pstride);
    for (int d = 0; d < nd; d++) stride[perm[d]] = pstride[d];
    fg_tensor *base = fg__new(op, nd, pshape, like->dtype, like->device);
    if (!base) return NULL;
    fg_tensor *t = fg__view(base, nd, like->shape, stride, 0);
    fg_free(base); /* the view holds the storage */
    return t;
}

fg_tensor *fg__view(const fg_tensor *base, int ndim, const int64_t *shape, const int64_t *stride, int64_t offset)
{
    fg_tensor *t = tensor_struct("view", ndim, shape, base->dtype, base->device);
    if (!t) return NULL;
    if (ndim > 0) memcpy(t->stride, stride, (size_t)ndim * sizeof *stride);
    t->offset = offset;
    t->storage = base->storage;
    t->storage->refcount++;
    return t;
}

fg_tensor *fg__tensor_external(const char *op, void *data, fg_dtype dt, fg_device dev, int ndim, const int64_t *shape,
                               const int64_t *stride)
{
    fg_storage *s = fg__storage_external(dev, data, 0);
    fg_tensor *t = s ? tensor_header(op, ndim, shape, dt, dev, false) : NULL;
    if (!t) {
        fg__storage_unref(s);
        return NULL;
    }
    if (ndim > 0) memcpy(t->stride, stride, (size_t)ndim * sizeof *stride);
    t->storage = s;
    return t;
}

fg_tensor *fg_empty(int ndim, const int64_t *shape, fg_dtype dt, fg_device dev)
{
    return fg__new("fg_empty", ndim, shape, dt, dev);
}

fg_tensor *fg_full(int ndim, const int64_t *shape, double value, fg_dtype dt, fg_device dev)
{
    fg_tensor *t = fg__new("fg_full", ndim, shape, dt, dev);
    if (t && fg_fill_(t, value) != FG_OK) {
        fg_free(t);
        return NULL;
    }
    return t;
}

fg_tensor *fg_zeros(int ndim, const int64_t *shape, fg_dtype dt, fg_device dev) { return fg_full(ndim, shape, 0.0, dt, dev); }
fg_tensor *fg_ones(int ndim, const int64_t *shape, fg_dtype dt, fg_device dev) { return fg_full(ndim, shape, 1.0, dt, dev); }
fg_tensor *fg_scalar(double value, fg_dtype dt, fg_device dev) { return fg_full(0, NULL, value, dt, dev); }

fg_tensor *fg_zeros_like(const fg_tensor *like)
{
    if (!like) { fg__err_null("fg_zeros_like", "tensor"); return NULL; }
    return fg_zeros(like->ndim, like->shape, like->dtype, like->device);
}

fg_tensor *fg_ones_like(const fg_tensor *like)
{
    if (!like) { fg__err_null("fg_ones_like", "tensor"); return NULL; }
    return fg_ones(like->ndim, like->shape, like->dtype, like->device);
}

fg_tensor *fg_arange(double start, double end, double step, fg_dtype dt, fg_device dev)
{
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step)) {
        fg__err(FG_ERR_INVALID, "fg_arange: need finite start/end and a nonzero step (got %g, %g, %g)", start, end, step);
        return NULL;
    }
    double count = ceil((end - start) / step);
    if (count < 0) count = 0;
    if (count > 1e15) {
        fg__err(FG_ERR_OVERFLOW, "fg_arange: %g elements is too many", count);
        return NULL;
    }
    int64_t n = (int64_t)count;
    double *buf = malloc((size_t)(n ? n : 1) * sizeof *buf);
    if (!buf) {
        fg__err(FG_ERR_OOM, "fg_arange: out of memory for %lld elements", (long long)n);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) buf[i] = start + (double)i * step;
    fg_tensor *t = fg_from_f64(buf, 1, &n, dt, dev);
    free(buf);
    return t;
}

/* ---- properties ---- */
void *fg_data_ptr(const fg_tensor *t)
{
    if (!t) {
        fg__err_null("fg_data_ptr", "tensor");
        return NULL;
    }
    return fg__data(t);
}

int fg_ndim(const fg_tensor *t) { return t ? t->ndim : -1; }
const int64_t *fg_shape(const fg_tensor *t) { return t ? t->shape : NULL; }
const int64_t *fg_strides(const fg_tensor *t) { return t ? t->stride : NULL; }
int64_t fg_numel(const fg_tensor *t) { return t ? t->numel : -1; }
fg_dtype fg_dtype_of(const fg_tensor *t) { return t ? t->dtype : FG_NUM_DTYPES; }
fg_device fg_device_of(const fg_tensor *t) { return t ? t->device : FG_CPU; }
bool fg_shares_storage(const fg_tensor *a, const fg_tensor *b) { return a && b && a->storage == b->storage; }

int64_t fg_size(const fg_tensor *t, int d)
{
    if (!t) {
        fg__err_null("fg_size", "tensor");
        return -1;
    }
    int r;
    if (t->ndim == 0 || fg__norm_dim("fg_size", t, d, 0, &r) != FG_OK) {
        if (t->ndim == 0) fg__err(FG_ERR_DIM, "fg_size: a 0-d tensor has no dim %d", d);
        return -1;
    }
    return t->shape[r];
}

bool fg_is_contiguous(const fg_tensor *t)
{
    if (!t) return false;
    if (t->numel == 0) return true; /* no elements: any strides lay them out contiguously */
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

bool fg__same_shape(const fg_tensor *a, const fg_tensor *b)
{
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

char *fg_shape_str(const fg_tensor *t, char *buf, size_t len)
{
    if (!buf || len == 0) return buf;
    if (!t) {
        snprintf(buf, len, "(null)");
        return buf;
    }
    size_t n = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < t->ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (t->ndim == 1 && n < len) n += (size_t)snprintf(buf + n, len - n, ",");
    if (n < len) snprintf(buf + n, len - n, ")");
    return buf;
}

/* ---- argument checks shared by the ops ---- */
bool fg__check_float(const char *op, const fg_tensor *t)
{
    if (fg_dtype_is_float(t->dtype)) return true;
    char b[128];
    fg__err(FG_ERR_DTYPE, "%s: needs a floating-point tensor, got %s %s", op, fg_dtype_name(t->dtype),
            fg_shape_str(t, b, sizeof b));
    return false;
}

bool fg__check_same(const char *op, const fg_tensor *a, const fg_tensor *b)
{
    char ba[128], bb[128];
    if (a->device != b->device) {
        fg__err(FG_ERR_DEVICE, "%s: tensors on different devices: %s %s on %s and %s %s on %s", op,
                fg_dtype_name(a->dtype), fg_shape_str(a, ba, sizeof ba), fg_device_name(a->device),
                fg_dtype_name(b->dtype), fg_shape_str(b, bb, sizeof bb), fg_device_name(b->device));
        return false;
    }
    if (a->dtype != b->dtype) {
        fg__err(FG_ERR_DTYPE, "%s: dtype mismatch: %s %s vs %s %s (cast one with fg_cast)", op,
                fg_dtype_name(a->dtype), fg_shape_str(a, ba, sizeof ba), fg_dtype_name(b->dtype),
                fg_shape_str(b, bb, sizeof bb));
        return false;
    }
    return true;
}

bool fg__check_index_dtype(const char *op, const fg_tensor *idx)
{
    if (idx->dtype == FG_I32 || idx->dtype == FG_I64) return true;
    char b[128];
    fg__err(FG_ERR_DTYPE, "%s: indices must be i32 or i64, got %s %s", op, fg_dtype_name(idx->dtype),
            fg_shape_str(idx, b, sizeof b));
    return false;
}

bool fg__check_cpu(const char *op, const fg_tensor *t)
{
    if (t->device == FG_CPU) return true;
    char b[128];
    fg__err(FG_ERR_UNSUPPORTED, "%s: no CUDA kernel for this op in this build (tensor %s on cuda); "
                                "move it to the CPU with fg_to", op, fg_shape_str(t, b, sizeof b));
    return false;
}

/* ---- printing ---- */
static void print_rec(const fg_tensor *t, const double *v, int d, int64_t *pos, int64_t *printed, FILE *f)
{
    if (t->ndim == 0) {
        fprintf(f, "%.6g", v[0]);
        return;
    }
    fputc('[', f);
    for (int64_t i = 0; i < t->shape[d]; i++) {
        if (*printed >= 64) {
            fputs("...", f);
            break;
        }
        if (i) fputs(d == t->ndim - 1 ? ", " : ",\n ", f);
        if (d == t->ndim - 1) {
            fprintf(f, "%.6g", v[*pos]);
            (*pos)++;
            (*printed)++;
        } else {
            print_rec(t, v, d + 1, pos, printed, f);
        }
    }
    fputc(']', f);
}

void fg_print(const fg_tensor *t, FILE *f)
{
    if (!f) f = stdout;
    if (!t) {
        fprintf(f, "tensor(NULL)\n");
        return;
    }
    char b[160];
    fprintf(f, "tensor%s %s %s%s%s%s\n", fg_shape_str(t, b, sizeof b), fg_dtype_name(t->dtype),
            fg_device_name(t->device), t->requires_grad ? " requires_grad" : "",
            t->grad_fn ? " grad_fn=" : "", t->grad_fn ? t->grad_fn->name : "");
    double *v = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *v);
    if (!v || fg_to_f64_array(t, v, t->numel) != FG_OK) {
        fprintf(f, "  <values unavailable: %s>\n", fg_last_error());
        free(v);
        return;
    }
    int64_t pos = 0, printed = 0;
    print_rec(t, v, 0, &pos, &printed, f);
    fputc('\n', f);
    free(v);
}
