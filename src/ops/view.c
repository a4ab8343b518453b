/* View ops (share storage) and copies/conversions, each with its backward. */
#include <stdlib.h>
#include "cpu/cpu.h"

/* ---- reshape family: backward reshapes the gradient to the input's shape ---- */
static fg_status reshape_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    gi[0] = fg_reshape(go[0], n->edges[0].ndim, n->edges[0].shape);
    return gi[0] ? FG_OK : fg_last_status();
}

/* Strides for viewing (shape, stride) as new_shape without a copy; false when impossible. */
static bool view_strides(const fg_tensor *t, int nd, const int64_t *ns, int64_t *out)
{
    if (t->numel == 0 || t->numel == 1 || fg_is_contiguous(t)) {
        fg__contiguous_strides(nd, ns, out);
        return true;
    }
    int view_d = nd - 1;
    int64_t chunk = t->stride[t->ndim - 1], tn = 1, vn = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        tn *= t->shape[d];
        if (d == 0 || (t->shape[d - 1] != 1 && t->stride[d - 1] != tn * chunk)) {
            while (view_d >= 0 && (vn < tn || ns[view_d] == 1)) {
                out[view_d] = vn * chunk;
                vn *= ns[view_d];
                view_d--;
            }
            if (vn != tn) return false;
            if (d > 0) {
                chunk = t->stride[d - 1];
                tn = 1;
                vn = 1;
            }
        }
    }
    return view_d == -1;
}

static fg_tensor *record_view(const char *op, fg_tensor *in, fg_tensor *out, fg_backward_fn fn)
{
    if (!out || !fg__any_requires_grad(1, &in)) return out;
    if (!fg__record(op, fn, 1, &in, 1, &out) && fg_last_status() == FG_ERR_OOM) {
        fg_free(out);
        return NULL;
    }
    return out;
}

static fg_tensor *reshape_impl(const char *op, fg_tensor *t, int ndim, const int64_t *shape, bool allow_copy)
{
    if (!t) { fg__err_null(op, "input"); return NULL; }
    if (ndim < 0 || ndim > FG_MAX_DIMS || (ndim > 0 && !shape)) {
        fg__err(FG_ERR_DIM, "%s: invalid target ndim %d", op, ndim);
        return NULL;
    }
    int64_t ns[FG_MAX_DIMS], known = 1;
    int infer = -1;
    char b[128];
    for (int i = 0; i < ndim; i++) {
        ns[i] = shape[i];
        if (shape[i] == -1) {
            if (infer >= 0) {
                fg__err(FG_ERR_SHAPE, "%s: more than one -1 in the target shape for %s", op, fg_shape_str(t, b, sizeof b));
                return NULL;
            }
            infer = i;
        } else if (shape[i] < 0) {
            fg__err(FG_ERR_SHAPE, "%s: negative size %lld in the target shape", op, (long long)shape[i]);
            return NULL;
        } else if (__builtin_mul_overflow(known, shape[i], &known)) {
            fg__err(FG_ERR_OVERFLOW, "%s: target shape overflows", op);
            return NULL;
        }
    }
    if (infer >= 0) {
        if (known == 0 || t->numel % known != 0) {
            fg__err(FG_ERR_SHAPE, "%s: cannot infer -1 reshaping %s (%lld elements)", op, fg_shape_str(t, b, sizeof b),
                    (long long)t->numel);
            return NULL;
        }
        ns[infer] = t->numel / known;
        known = t->numel;
    }
    if (known != t->numel) {
        fg__err(FG_ERR_SHAPE, "%s: cannot reshape %s (%lld elements) into a shape of %lld elements", op,
                fg_shape_str(t, b, sizeof b), (long long)t->numel, (long long)known);
        return NULL;
    }
    int64_t st[FG_MAX_DIMS];
    fg_tensor *out;
    if (view_strides(t, ndim, ns, st)) {
        out = fg__view(t, ndim, ns, st, t->offset);
    } else if (!allow_copy) {
        fg__err(FG_ERR_SHAPE, "%s: the strides of %s do not allow a view of this shape; use fg_reshape (copies)", op,
                fg_shape_str(t, b, sizeof b));
        return NULL;
    } else {
        out = fg__new(op, ndim, ns, t->dtype, t->device);
        if (out && fg__copy_elements(out, t) != FG_OK) {
            fg_free(out);
            return NULL;
        }
    }
    return record_view(op, t, out, reshape_backward);
}

fg_tensor *fg_reshape(fg_tensor *t, int ndim, const int64_t *shape) { return reshape_impl("reshape", t, ndim, shape, true); }
fg_tensor *fg_view(fg_tensor *t, int ndim, const int64_t *shape) { return reshape_impl("view", t, ndim, shape, false); }

fg_tensor *fg_flatten(fg_tensor *t)
{
    int64_t n = -1;
    return reshape_impl("flatten", t, 1, &n, true);
}

fg_tensor *fg_squeeze(fg_tensor *t, int d)
{
    if (!t) { fg__err_null("squeeze", "input"); return NULL; }
    int r;
    if (fg__norm_dim("squeeze", t, d, 0, &r) != FG_OK) return NULL;
    if (t->ndim == 0) return reshape_impl("squeeze", t, 0, NULL, false);
    if (t->shape[r] != 1) {
        char b[128];
        fg__err(FG_ERR_SHAPE, "squeeze: dim %d of %s has size %lld, not 1", d, fg_shape_str(t, b, sizeof b),
                (long long)t->shape[r]);
        return NULL;
    }
    int64_t ns[FG_MAX_DIMS];
    for (int i = 0, k = 0; i < t->ndim; i++)
        if (i != r) ns[k++] = t->shape[i];
    return reshape_impl("squeeze", t, t->ndim - 1, ns, false);
}

fg_tensor *fg_unsqueeze(fg_tensor *t, int d)
{
    if (!t) { fg__err_null("unsqueeze", "input"); return NULL; }
    int r;
    if (fg__norm_dim("unsqueeze", t, d, 1, &r) != FG_OK) return NULL;
    if (t->ndim >= FG_MAX_DIMS) {
        fg__err(FG_ERR_DIM, "unsqueeze: a tensor already has the maximum %d dims", FG_MAX_DIMS);
        return NULL;
    }
    int64_t ns[FG_MAX_DIMS];
    for (int i = 0, k = 0; i <= t->ndim; i++) ns[i] = i == r ? 1 : t->shape[k++];
    return reshape_impl("unsqueeze", t, t->ndim + 1, ns, false);
}

/* ---- permute / transpose ---- */
static fg_status permute_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    int inv[FG_MAX_DIMS];
    for (int i = 0; i < n->edges[0].ndim; i++) inv[n->i[i]] = i;
    gi[0] = fg_permute(go[0], n->edges[0].ndim, inv);
    return gi[0] ? FG_OK : fg_last_status();
}

fg_tensor *fg_permute(fg_tensor *t, int ndim, const int *dims)
{
    if (!t) { fg__err_null("permute", "input"); return NULL; }
    if (!dims && ndim > 0) { fg__err_null("permute", "dims"); return NULL; }
    char b[128];
    if (ndim != t->ndim) {
        fg__err(FG_ERR_DIM, "permute: %d dims given for %s", ndim, fg_shape_str(t, b, sizeof b));
        return NULL;
    }
    int64_t ns[FG_MAX_DIMS], st[FG_MAX_DIMS];
    int norm[FG_MAX_DIMS];
    bool seen[FG_MAX_DIMS] = {false};
    for (int i = 0; i < ndim; i++) {
        if (fg__norm_dim("permute", t, dims[i], 0, &norm[i]) != FG_OK) return NULL;
        if (seen[norm[i]]) {
            fg__err(FG_ERR_DIM, "permute: dim %d repeated for %s", dims[i], fg_shape_str(t, b, sizeof b));
            return NULL;
        }
        seen[norm[i]] = true;
        ns[i] = t->shape[norm[i]];
        st[i] = t->stride[norm[i]];
    }
    fg_tensor *out = fg__view(t, ndim, ns, st, t->offset);
    if (!out || !fg__any_requires_grad(1, &t)) return out;
    fg_node *node = fg__record("permute", permute_backward, 1, &t, 1, &out);
    if (node)
        for (int i = 0; i < ndim; i++) node->i[i] = norm[i];
    else if (fg_last_status() == FG_ERR_OOM) {
        fg_free(out);
        return NULL;
    }
    return out;
}

fg_tensor *fg_transpose(fg_tensor *t, int d0, int d1)
{
    if (!t) { fg__err_null("transpose", "input"); return NULL; }
    int a, b;
    if (fg__norm_dim("transpose", t, d0, 0, &a) != FG_OK || fg__norm_dim("transpose", t, d1, 0, &b) != FG_OK) return NULL;
    int dims[FG_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) dims[i] = i;
    dims[a] = b;
    dims[b] = a;
    return fg_permute(t, t->ndim, dims);
}

/* ---- slicing: backward writes the gradient into a zero tensor's slice ---- */
static fg_status slice_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    fg_edge *e = &n->edges[0];
    fg_tensor *z = fg_zeros(e->ndim, e->shape, go[0]->dtype, go[0]->device);
    if (!z) return fg_last_status();
    int d = (int)n->i[0];
    int64_t st[FG_MAX_DIMS];
    memcpy(st, z->stride, sizeof st);
    st[d] *= n->i[2];
    fg_tensor *win = fg__view(z, go[0]->ndim, go[0]->shape, st, n->i[1] * z->stride[d]);
    if (!win) return fg_last_status();
    fg_status s = fg__copy_elements(win, go[0]);
    gi[0] = z;
    return s;
}

fg_tensor *fg_slice(fg_tensor *t, int d, int64_t start, int64_t end, int64_t step)
{
    if (!t) { fg__err_null("slice", "input"); return NULL; }
    int r;
    char b[128];
    if (t->ndim == 0) {
        fg__err(FG_ERR_DIM, "slice: cannot slice a 0-d tensor");
        return NULL;
    }
    if (fg__norm_dim("slice", t, d, 0, &r) != FG_OK) return NULL;
    if (step <= 0) {
        fg__err(FG_ERR_INVALID, "slice: step must be positive, got %lld", (long long)step);
        return NULL;
    }
    int64_t n = t->shape[r];
    if (start < 0) start += n;
    if (end < 0) end += n;
    start = start < 0 ? 0 : start > n ? n : start;
    end = end < start ? start : end > n ? n : end;
    int64_t len = (end - start + step - 1) / step;
    int64_t ns[FG_MAX_DIMS], st[FG_MAX_DIMS];
    memcpy(ns, t->shape, sizeof ns);
    memcpy(st, t->stride, sizeof st);
    ns[r] = len;
    st[r] = t->stride[r] * step;
    fg_tensor *out = fg__view(t, t->ndim, ns, st, t->offset + start * t->stride[r]);
    (void)b;
    if (!out || !fg__any_requires_grad(1, &t)) return out;
    fg_node *node = fg__record("slice", slice_backward, 1, &t, 1, &out);
    if (node) {
        node->i[0] = r;
        node->i[1] = start;
        node->i[2] = step;
    } else if (fg_last_status() == FG_ERR_OOM) {
        fg_free(out);
        return NULL;
    }
    return out;
}

fg_tensor *fg_narrow(fg_tensor *t, int d, int64_t start, int64_t length)
{
    if (!t) { fg__err_null("narrow", "input"); return NULL; }
    int r;
    if (t->ndim == 0) {
        fg__err(FG_ERR_DIM, "narrow: cannot narrow a 0-d tensor");
        return NULL;
    }
    if (fg__norm_dim("narrow", t, d, 0, &r) != FG_OK) return NULL;
    if (start < 0 || length < 0 || start > t->shape[r] || length > t->shape[r] - start) {
        char b[128];
        fg__err(FG_ERR_INDEX, "narrow: [%lld, %lld) out of range for dim %d of %s", (long long)start,
                (long long)(start + length), d, fg_shape_str(t, b, sizeof b));
        return NULL;
    }
    return fg_slice(t, r, start, start + length, 1);
}

/* ---- expand: backward sums over the broadcast dims ---- */
static fg_status expand_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    gi[0] = fg__reduce_to_edge(n, 0, go[0]);
    return gi[0] ? FG_OK : fg_last_status();
}

fg_tensor *fg_expand(fg_tensor *t, int ndim, const int64_t *shape)
{
    if (!t) { fg__err_null("expand", "input"); return NULL; }
    if (ndim < t->ndim || ndim > FG_MAX_DIMS || (ndim > 0 && !shape)) {
        fg__err(FG_ERR_DIM, "expand: cannot expand a %d-d tensor to %d dims", t->ndim, ndim);
        return NULL;
    }
    int64_t ns[FG_MAX_DIMS], st[FG_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int64_t cur = i < lead ? 1 : t->shape[i - lead];
        int64_t want = shape[i] == -1 ? cur : shape[i];
        if (shape[i] == -1 && i < lead) want = -1;
        if (want < 0 || (cur != 1 && want != cur)) {
            char b[128];
            fg__err(FG_ERR_SHAPE, "expand: %s cannot be expanded to size %lld at dim %d", fg_shape_str(t, b, sizeof b),
                    (long long)shape[i], i);
            return NULL;
        }
        ns[i] = want;
        st[i] = i < lead ? 0 : (cur == 1 && want != 1 ? 0 : t->stride[i - lead]);
    }
    fg_tensor *out = fg__view(t, ndim, ns, st, t->offset);
    return record_view("expand", t, out, expand_backward);
}

/* ---- copies and conversions ---- */
static fg_status identity_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    gi[0] = go[0];
    return FG_OK;
}

static fg_status to_backward(fg_node *n, fg_tensor *const *go, fg_tensor **gi)
{
    gi[0] = fg_to(go[0], n->edges[0].device, n->edges[0].dtype);
    return gi[0] ? FG_OK : fg_last_status();
}

static fg_tensor *copy_as(const char *op, fg_tensor *t, fg_device dev, fg_dtype dt)
{
    fg_tensor *out = fg__new(op, t->ndim, t->shape, dt, dev);
    if (out && fg__copy_elements(out, t) != FG_OK) {
        fg_free(out);
        return NULL;
    }
    return out;
}

fg_tensor *fg_contiguous(fg_tensor *t)
{
    if (!t) { fg__err_null("contiguous", "input"); return NULL; }
    if (fg_is_contiguous(t)) {
        fg_tensor *v = fg__view(t, t->ndim, t->shape, t->stride, t->offset);
        return record_view("contiguous", t, v, identity_backward);
    }
    return record_view("contiguous", t, copy_as("contiguous", t, t->device, t->dtype), identity_backward);
}

fg_tensor *fg_clone(fg_tensor *t)
{
    if (!t) { fg__err_null("clone", "input"); return NULL; }
    return record_view("clone", t, copy_as("clone", t, t->device, t->dtype), identity_backward);
}

fg_tensor *fg_to(fg_tensor *t, fg_device dev, fg_dtype dt)
{
    if (!t) { fg__err_null("to", "input"); return NULL; }
    if ((unsigned)dt >= FG_NUM_DTYPES) {
        fg__err(FG_ERR_DTYPE, "to: invalid dtype %d", (int)dt);
        return NULL;
    }
    fg_tensor *out = copy_as("to", t, dev, dt);
    if (!out || !fg_dtype_is_float(dt) || !fg_dtype_is_float(t->dtype)) return out;
    return record_view("to", t, out, to_backward);
}

fg_tensor *fg_cast(fg_tensor *t, fg_dtype dt)
{
    if (!t) { fg__err_null("cast", "input"); return NULL; }
    return fg_to(t, t->device, dt);
}
