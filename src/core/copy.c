/* Moving element data: strided copies, dtype conversion, host <-> device,
 * filling, and reading values back. None of this is recorded by autograd. */
#include <stdlib.h>
#include "internal.h"

void fg__iter_init(fg_iter *it, int ndim, const int64_t *shape, int nops, const int64_t *const *strides)
{
    it->ndim = ndim;
    it->nops = nops;
    for (int d = 0; d < ndim; d++) {
        it->shape[d] = shape[d];
        it->idx[d] = 0;
        for (int k = 0; k < nops; k++) it->stride[k][d] = strides[k][d];
    }
    for (int k = 0; k < nops; k++) it->off[k] = 0;
}

fg_status fg__broadcast_shape(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb, int *nout,
                              int64_t *out)
{
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int64_t a = i < n - na ? 1 : sa[i - (n - na)];
        int64_t b = i < n - nb ? 1 : sb[i - (n - nb)];
        if (a != b && a != 1 && b != 1) {
            char ba[160] = "(", bb[160] = "(";
            for (int j = 0; j < na; j++) snprintf(ba + strlen(ba), sizeof ba - strlen(ba), j ? ", %lld" : "%lld", (long long)sa[j]);
            for (int j = 0; j < nb; j++) snprintf(bb + strlen(bb), sizeof bb - strlen(bb), j ? ", %lld" : "%lld", (long long)sb[j]);
            /* 1-d shapes read "(4,)", as fg_shape_str writes them */
            if (na == 1) strcat(ba, ",");
            if (nb == 1) strcat(bb, ",");
            return fg__err(FG_ERR_SHAPE, "%s: shapes %s) and %s) do not broadcast (dim %d: %lld vs %lld)", op, ba,
                           bb, i, (long long)a, (long long)b);
        }
        out[i] = a == 1 ? b : a;
    }
    *nout = n;
    return FG_OK;
}

void fg__broadcast_strides(const fg_tensor *t, int ndim, const int64_t *shape, int64_t *stride)
{
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        if (i < lead)
            stride[i] = 0;
        else
            stride[i] = (t->shape[i - lead] == 1 && shape[i] != 1) ? 0 : t->stride[i - lead];
    }
}

static void cpu_copy(fg_tensor *dst, const fg_tensor *src)
{
    char *d = fg__data(dst);
    const char *s = fg__data(src);
    if (dst->dtype == src->dtype && fg_is_contiguous(dst) && fg_is_contiguous(src)) {
        memcpy(d, s, (size_t)dst->numel * fg_dtype_size(dst->dtype));
        return;
    }
    /* Same dtype: move the element bits as they are (a trip through double
     * would round i64 beyond 2^53 and rewrite NaN payloads). */
    size_t es = fg_dtype_size(dst->dtype);
    bool raw = dst->dtype == src->dtype;
    /* Iterate in dst's shape; src has the same numel, read in row-major order of its own shape. */
    if (fg__same_shape(dst, src)) {
        const int64_t *st[2] = {dst->stride, src->stride};
        fg_iter it;
        fg__iter_init(&it, dst->ndim, dst->shape, 2, st);
        for (int64_t i = 0; i < dst->numel; i++, fg__iter_next(&it)) {
            if (raw)
                memcpy(d + (size_t)it.off[0] * es, s + (size_t)it.off[1] * es, es);
            else
                fg__st(d, dst->dtype, it.off[0], fg__ld(s, src->dtype, it.off[1]));
        }
        return;
    }
    fg_iter a, b;
    const int64_t *sa[1] = {dst->stride}, *sb[1] = {src->stride};
    fg__iter_init(&a, dst->ndim, dst->shape, 1, sa);
    fg__iter_init(&b, src->ndim, src->shape, 1, sb);
    for (int64_t i = 0; i < dst->numel; i++, fg__iter_next(&a), fg__iter_next(&b)) {
        if (raw)
            memcpy(d + (size_t)a.off[0] * es, s + (size_t)b.off[0] * es, es);
        else
            fg__st(d, dst->dtype, a.off[0], fg__ld(s, src->dtype, b.off[0]));
    }
}

fg_status fg__copy_elements(fg_tensor *dst, const fg_tensor *src)
{
    if (dst->numel != src->numel)
        return fg__err(FG_ERR_SHAPE, "copy: %lld elements into %lld", (long long)src->numel, (long long)dst->numel);
    if (dst->numel == 0) return FG_OK;
    if (dst->device == FG_CPU && src->device == FG_CPU) {
        cpu_copy(dst, src);
        return FG_OK;
    }
    if (dst->device == FG_CUDA && src->device == FG_CUDA) {
        if (dst->dtype == src->dtype && fg_is_contiguous(dst) && fg_is_contiguous(src))
            return fg__cuda_memcpy_d2d(fg__data(dst), fg__data(src), (size_t)dst->numel * fg_dtype_size(dst->dtype));
        if (!fg__same_shape(dst, src)) {
            /* Shapes differ, element order is row-major in each: pack src, then
             * read the packed buffer through dst's shape. */
            fg_tensor *packed = fg__contig(src);
            if (!packed) return fg_last_status();
            int64_t st[FG_MAX_DIMS];
            fg__contiguous_strides(dst->ndim, dst->shape, st);
            fg_status s = fg__cuda_copy_strided(fg__data(dst), dst->dtype, dst->stride, fg__data(packed),
                                                packed->dtype, st, dst->ndim, dst->shape);
            fg__unref(packed);
            return s;
        }
        return fg__cuda_copy_strided(fg__data(dst), dst->dtype, dst->stride, fg__data(src), src->dtype,
                                     src->stride, dst->ndim, dst->shape);
    }
    fg_status st;
    if (src->device == FG_CUDA) {
        /* device -> host: pack on the device in src's dtype, one transfer, convert on the host. */
        fg_tensor *packed = fg__contig(src);
        if (!packed) return fg_last_status();
        fg_tensor *host = fg__new("copy", src->ndim, src->shape, src->dtype, FG_CPU);
        st = host ? fg__cuda_memcpy_d2h(fg__data(host), fg__data(packed), (size_t)src->numel * fg_dtype_size(src->dtype))
                  : fg_last_status();
        fg__unref(packed);
        if (st == FG_OK) cpu_copy(dst, host);
        if (host) fg_free(host);
        return st;
    }
    /* host -> device: convert on the host to dst's dtype, one transfer, scatter on the device if strided. */
    fg_tensor *host = fg__new("copy", dst->ndim, dst->shape, dst->dtype, FG_CPU);
    if (!host) return fg_last_status();
    cpu_copy(host, src);
    size_t bytes = (size_t)dst->numel * fg_dtype_size(dst->dtype);
    if (fg_is_contiguous(dst)) {
        st = fg__cuda_memcpy_h2d(fg__data(dst), fg__data(host), bytes);
    } else {
        fg_tensor *dev = fg__new("copy", dst->ndim, dst->shape, dst->dtype, FG_CUDA);
        st = dev ? fg__cuda_memcpy_h2d(fg__data(dev), fg__data(host), bytes) : fg_last_status();
        if (st == FG_OK) st = fg__copy_elements(dst, dev);
        if (dev) fg_free(dev);
    }
    fg_free(host);
    return st;
}

fg_tensor *fg__contig(const fg_tensor *t)
{
    if (fg_is_contiguous(t)) {
        fg_tensor *v = fg__view(t, t->ndim, t->shape, t->stride, t->offset);
        if (v) fg_keep(v);
        return v;
    }
    fg_tensor *c = fg__new("contiguous", t->ndim, t->shape, t->dtype, t->device);
    if (!c) return NULL;
    fg_keep(c);
    if (fg__copy_elements(c, t) != FG_OK) {
        fg__unref(c);
        return NULL;
    }
    return c;
}

fg_status fg_copy_(fg_tensor *dst, const fg_tensor *src)
{
    if (!dst) return fg__err_null("fg_copy_", "dst");
    if (!src) return fg__err_null("fg_copy_", "src");
    if (fg__same_shape(dst, src)) return fg__copy_elements(dst, src);
    int64_t stride[FG_MAX_DIMS];
    int n;
    int64_t shape[FG_MAX_DIMS];
    if (fg__broadcast_shape("fg_copy_", dst->ndim, dst->shape, src->ndim, src->shape, &n, shape) != FG_OK)
        return fg_last_status();
    if (n != dst->ndim || memcmp(shape, dst->shape, (size_t)n * sizeof *shape) != 0) {
        char a[128], b[128];
        return fg__err(FG_ERR_SHAPE, "fg_copy_: source %s does not broadcast to destination %s",
                       fg_shape_str(src, a, sizeof a), fg_shape_str(dst, b, sizeof b));
    }
    fg__broadcast_strides(src, n, shape, stride);
    fg_tensor *view = fg__view(src, n, shape, stride, src->offset);
    if (!view) return fg_last_status();
    fg_status st = fg__copy_elements(dst, view);
    fg_free(view);
    return st;
}

fg_status fg_fill_(fg_tensor *t, double value)
{
    if (!t) return fg__err_null("fg_fill_", "tensor");
    if (t->numel == 0) return FG_OK;
    if (t->device == FG_CUDA) {
        if (fg_is_contiguous(t)) return fg__cuda_fill(fg__data(t), t->dtype, t->numel, value);
        fg_tensor *c = fg__new("fg_fill_", t->ndim, t->shape, t->dtype, FG_CUDA);
        fg_status st = c ? fg__cuda_fill(fg__data(c), c->dtype, c->numel, value) : fg_last_status();
        if (st == FG_OK) st = fg__copy_elements(t, c);
        if (c) fg_free(c);
        return st;
    }
    char *d = fg__data(t);
    const int64_t *st[1] = {t->stride};
    fg_iter it;
    fg__iter_init(&it, t->ndim, t->shape, 1, st);
    for (int64_t i = 0; i < t->numel; i++, fg__iter_next(&it)) fg__st(d, t->dtype, it.off[0], value);
    return FG_OK;
}

fg_status fg_zero_(fg_tensor *t) { return fg_fill_(t, 0.0); }

/* ---- host buffers in and out ---- */
static fg_tensor *from_host(const char *op, const void *data, fg_dtype src_dt, int ndim, const int64_t *shape,
                            fg_dtype dt, fg_device dev)
{
    int64_t numel;
    if (fg__check_shape(op, ndim, shape, &numel) != FG_OK) return NULL;
    if (!data && numel > 0) {
        fg__err_null(op, "data");
        return NULL;
    }
    fg_tensor *t = fg__new(op, ndim, shape, dt, dev);
    if (!t || numel == 0) return t;
    /* A non-owning tensor header around the caller's buffer; never freed by us. */
    fg_storage s = {.refcount = 1, .device = FG_CPU, .data = (void *)data, .nbytes = (size_t)numel * fg_dtype_size(src_dt)};
    fg_tensor src = {.refcount = 1, .dtype = src_dt, .device = FG_CPU, .ndim = ndim, .numel = numel, .storage = &s};
    memcpy(src.shape, shape, (size_t)ndim * sizeof *shape);
    fg__contiguous_strides(ndim, shape, src.stride);
    if (fg__copy_elements(t, &src) != FG_OK) {
        fg_free(t);
        return NULL;
    }
    return t;
}

fg_tensor *fg_from_data(const void *data, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev)
{
    return from_host("fg_from_data", data, dt, ndim, shape, dt, dev);
}
fg_tensor *fg_from_f64(const double *data, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev)
{
    return from_host("fg_from_f64", data, FG_F64, ndim, shape, dt, dev);
}
fg_tensor *fg_from_f32(const float *data, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev)
{
    return from_host("fg_from_f32", data, FG_F32, ndim, shape, dt, dev);
}

static fg_status to_host(const char *op, const fg_tensor *t, void *dst, fg_dtype dst_dt, size_t dst_bytes)
{
    if (!t) return fg__err_null(op, "tensor");
    if (!dst && t->numel > 0) return fg__err_null(op, "dst");
    size_t need = (size_t)t->numel * fg_dtype_size(dst_dt);
    if (dst_bytes < need) {
        char b[128];
        return fg__err(FG_ERR_INVALID, "%s: destination holds %zu bytes, tensor %s %s needs %zu", op, dst_bytes,
                       fg_dtype_name(t->dtype), fg_shape_str(t, b, sizeof b), need);
    }
    if (t->numel == 0) return FG_OK;
    fg_storage s = {.refcount = 1, .device = FG_CPU, .data = dst, .nbytes = need};
    fg_tensor d = {.refcount = 1, .dtype = dst_dt, .device = FG_CPU, .ndim = t->ndim, .numel = t->numel, .storage = &s};
    memcpy(d.shape, t->shape, sizeof d.shape);
    fg__contiguous_strides(t->ndim, t->shape, d.stride);
    return fg__copy_elements(&d, t);
}

fg_status fg_copy_to_host(const fg_tensor *t, void *dst, size_t dst_bytes)
{
    return to_host("fg_copy_to_host", t, dst, t ? t->dtype : FG_F32, dst_bytes);
}
fg_status fg_to_f64_array(const fg_tensor *t, double *dst, int64_t n)
{
    return to_host("fg_to_f64_array", t, dst, FG_F64, n < 0 ? 0 : (size_t)n * sizeof(double));
}
fg_status fg_to_f32_array(const fg_tensor *t, float *dst, int64_t n)
{
    return to_host("fg_to_f32_array", t, dst, FG_F32, n < 0 ? 0 : (size_t)n * sizeof(float));
}

double fg_item(const fg_tensor *t)
{
    if (!t) {
        fg__err_null("fg_item", "tensor");
        return NAN;
    }
    if (t->numel != 1) {
        char b[128];
        fg__err(FG_ERR_SHAPE, "fg_item: tensor %s has %lld elements, needs exactly 1", fg_shape_str(t, b, sizeof b),
                (long long)t->numel);
        return NAN;
    }
    double v;
    return fg_to_f64_array(t, &v, 1) == FG_OK ? v : NAN;
}

double fg_get(const fg_tensor *t, const int64_t *index)
{
    if (!t) {
        fg__err_null("fg_get", "tensor");
        return NAN;
    }
    if (!index && t->ndim > 0) {
        fg__err_null("fg_get", "index");
        return NAN;
    }
    int64_t off = t->offset;
    for (int d = 0; d < t->ndim; d++) {
        if (index[d] < 0 || index[d] >= t->shape[d]) {
            char b[128];
            fg__err(FG_ERR_INDEX, "fg_get: index %lld out of range for dim %d of %s", (long long)index[d], d,
                    fg_shape_str(t, b, sizeof b));
            return NAN;
        }
        off += index[d] * t->stride[d];
    }
    fg_tensor *one = fg__view(t, 0, NULL, NULL, off);
    if (!one) return NAN;
    double v = fg_item(one);
    fg_free(one);
    return v;
}
