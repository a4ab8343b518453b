/* Define-by-run tape: nodes recorded by ops, and the reverse-mode engine. */
#include <stdlib.h>
#include "internal.h"

static _Thread_local bool tl_grad_disabled;
static _Thread_local uint64_t tl_seq;

uint64_t fg__next_seq(void) { return ++tl_seq; }
bool fg_set_grad_enabled(bool enabled)
{
    bool prev = !tl_grad_disabled;
    tl_grad_disabled = !enabled;
    return prev;
}
bool fg_is_grad_enabled(void) { return !tl_grad_disabled; }

fg_status fg_set_requires_grad(fg_tensor *t, bool requires_grad)
{
    if (!t) return fg__err_null("fg_set_requires_grad", "tensor");
    if (requires_grad && !fg_dtype_is_float(t->dtype)) {
        char b[128];
        return fg__err(FG_ERR_DTYPE, "fg_set_requires_grad: only floating-point tensors can require grad (got %s %s)",
                       fg_dtype_name(t->dtype), fg_shape_str(t, b, sizeof b));
    }
    if (t->grad_fn)
        return fg__err(FG_ERR_STATE, "fg_set_requires_grad: '%s' output is not a leaf; use fg_detach first", t->grad_fn->name);
    t->requires_grad = requires_grad;
    return FG_OK;
}

bool fg_requires_grad(const fg_tensor *t) { return t && (t->requires_grad || t->grad_fn); }
bool fg_has_grad_fn(const fg_tensor *t) { return t && t->grad_fn; }
const char *fg_grad_fn_name(const fg_tensor *t) { return t && t->grad_fn ? t->grad_fn->name : NULL; }
fg_tensor *fg_grad(const fg_tensor *t) { return t ? t->grad : NULL; }

fg_status fg_zero_grad(fg_tensor *t)
{
    if (!t) return fg__err_null("fg_zero_grad", "tensor");
    return t->grad ? fg_zero_(t->grad) : FG_OK;
}

void fg_clear_grad(fg_tensor *t)
{
    if (t && t->grad) {
        fg__unref(t->grad);
        t->grad = NULL;
    }
}

fg_tensor *fg_detach(fg_tensor *t)
{
    if (!t) {
        fg__err_null("fg_detach", "tensor");
        return NULL;
    }
    return fg__view(t, t->ndim, t->shape, t->stride, t->offset);
}

bool fg__any_requires_grad(int n, fg_tensor *const *inputs)
{
    if (tl_grad_disabled) return false;
    for (int i = 0; i < n; i++)
        if (inputs[i] && (inputs[i]->requires_grad || inputs[i]->grad_fn)) return true;
    return false;
}

static void node_release_graph(fg_node *n)
{
    for (int i = 0; i < n->n_inputs; i++) {
        if (n->edges[i].node) fg__node_unref(n->edges[i].node);
        if (n->edges[i].leaf) fg__unref(n->edges[i].leaf);
        n->edges[i].node = NULL;
        n->edges[i].leaf = NULL;
    }
    for (int i = 0; i < n->n_saved; i++) fg__unref(n->saved[i]);
    n->n_saved = 0;
    if (n->ctx_free && n->ctx) n->ctx_free(n->ctx);
    n->ctx = NULL;
    n->released = true;
}

void fg__node_unref(fg_node *n)
{
    if (!n || --n->refcount > 0) return;
    /* Freed with an explicit stack, not recursion: a graph can be a chain of a
     * million nodes, and dropping its last reference frees all of them. */
    fg_node *small[64], **stack = small;
    size_t sp = 0, cap = sizeof small / sizeof *small;
    stack[sp++] = n;
    while (sp) {
        fg_node *x = stack[--sp];
        if (!x->released) {
            for (int i = 0; i < x->n_inputs; i++) {
                fg_node *y = x->edges[i].node;
                x->edges[i].node = NULL;
                if (!y || --y->refcount > 0) continue;
                if (sp == cap) {
                    fg_node **grown = stack == small ? malloc(2 * cap * sizeof *grown)
                                                     : realloc(stack, 2 * cap * sizeof *grown);
                    if (!grown) { /* out of memory: fall back to recursion for this one */
                        y->refcount = 1;
                        fg__node_unref(y);
                        continue;
                    }
                    if (stack == small) memcpy(grown, small, sizeof small);
                    stack = grown;
                    cap *= 2;
                }
                stack[sp++] = y;
            }
            node_release_graph(x); /* edges to nodes are already dropped above */
        }
        free(x->edges);
        free(x->saved);
        free(x->out_ndim);
        free(x->out_shape);
        free(x->grad_acc);
        fg__stats_node(-1);
        free(x);
    }
    if (stack != small) free(stack);
}

fg_node *fg__record(const char *name, fg_backward_fn fn, int n_inputs, fg_tensor *const *inputs, int n_outputs,
                    fg_tensor *const *outputs)
{
    fg_node *n = calloc(1, sizeof *n);
    if (!n) goto oom;
    n->refcount = 0;
    n->name = name;
    n->backward = fn;
    n->seq = fg__next_seq();
    n->n_inputs = n_inputs;
    n->n_outputs = n_outputs;
    n->edges = calloc((size_t)(n_inputs ? n_inputs : 1), sizeof *n->edges);
    n->out_ndim = calloc((size_t)n_outputs, sizeof *n->out_ndim);
    n->out_shape = calloc((size_t)n_outputs, sizeof *n->out_shape);
    if (!n->edges || !n->out_ndim || !n->out_shape) {
        free(n->edges);
        free(n->out_ndim);
        free(n->out_shape);
        free(n);
        goto oom;
    }
    fg__stats_node(1);
    for (int i = 0; i < n_inputs; i++) {
        fg_tensor *t = inputs[i];
        fg_edge *e = &n->edges[i];
        if (!t) continue;
        e->ndim = t->ndim;
        memcpy(e->shape, t->shape, sizeof e->shape);
        e->dtype = t->dtype;
        e->device = t->device;
        if (t->grad_fn) {
            e->node = t->grad_fn;
            e->node->refcount++;
            e->out_index = t->out_index;
            e->needs_grad = true;
        } else if (t->requires_grad) {
            e->leaf = fg_retain(t);
            e->needs_grad = true;
        }
    }
    for (int k = 0; k < n_outputs; k++) {
        fg_tensor *o = outputs[k];
        n->out_ndim[k] = o->ndim;
        memcpy(n->out_shape[k], o->shape, sizeof n->out_shape[k]);
        n->out_dtype = o->dtype;
        n->out_device = o->device;
        if (!fg_dtype_is_float(o->dtype)) continue; /* index outputs carry no gradient */
        o->grad_fn = n;
        o->out_index = k;
        o->requires_grad = true;
        n->refcount++;
    }
    if (n->refcount == 0) { /* no differentiable output: nothing holds the node */
        n->refcount = 1;
        fg__node_unref(n);
        return NULL;
    }
    return n;
oom:
    fg__err(FG_ERR_OOM, "%s: out of memory recording the autograd node", name);
    return NULL;
}

int fg__save(fg_node *node, const fg_tensor *t)
{
    fg_tensor **s = realloc(node->saved, (size_t)(node->n_saved + 1) * sizeof *s);
    if (!s) return -1;
    node->saved = s;
    /* A detached alias: shares the data but not the history, so saving an op's
     * own output creates no reference cycle. */
    fg_tensor *alias = fg__view(t, t->ndim, t->shape, t->stride, t->offset);
    if (!alias) return -1;
    fg_keep(alias);
    node->saved[node->n_saved] = alias;
    return node->n_saved++;
}

fg_tensor *fg__reduce_to_edge(fg_node *node, int i, fg_tensor *g)
{
    return fg__sum_to_shape(g, node->edges[i].ndim, node->edges[i].shape);
}

/* ---- engine ---- */
static int cmp_seq_desc(const void *a, const void *b)
{
    const fg_node *x = *(fg_node *const *)a, *y = *(fg_node *const *)b;
    return x->seq < y->seq ? 1 : x->seq > y->seq ? -1 : 0;
}

/* acc <- acc + g (creates tensors in the engine scope). */
static fg_status accumulate(fg_tensor **acc, fg_tensor *g)
{
    if (!*acc) {
        *acc = g;
        return FG_OK;
    }
    fg_tensor *s = fg_add(*acc, g);
    if (!s) return fg_last_status();
    *acc = s;
    return FG_OK;
}

static fg_status accumulate_leaf(fg_tensor *leaf, fg_tensor *g)
{
    if (g->dtype != leaf->dtype || g->device != leaf->device || !fg__same_shape(g, leaf)) {
        char a[128], b[128];
        return fg__err(FG_ERR_STATE, "backward: gradient %s %s does not match leaf %s %s", fg_dtype_name(g->dtype),
                       fg_shape_str(g, a, sizeof a), fg_dtype_name(leaf->dtype), fg_shape_str(leaf, b, sizeof b));
    }
    if (leaf->grad) {
        /* In place, so the gradient buffer is stable across steps. */
        fg_tensor *s = fg_add(leaf->grad, g);
        return s ? fg__copy_elements(leaf->grad, s) : fg_last_status();
    }
    fg_tensor *c = fg__new("backward", leaf->ndim, leaf->shape, leaf->dtype, leaf->device);
    if (!c) return fg_last_status();
    fg_keep(c);
    if (fg__copy_elements(c, g) != FG_OK) {
        fg__unref(c);
        return fg_last_status();
    }
    leaf->grad = c;
    return FG_OK;
}

static fg_status collect(fg_node *root, fg_node ***out, size_t *count)
{
    size_t cap = 64, n = 0, sp = 0, scap = 64;
    fg_node **list = malloc(cap * sizeof *list), **stack = malloc(scap * sizeof *stack);
    if (!list || !stack) goto oom;
    uint64_t mark = fg__next_seq(); /* unique per traversal */
    stack[sp++] = root;
    root->mark = mark;
    while (sp) {
        fg_node *x = stack[--sp];
        if (n == cap) {
            fg_node **l = realloc(list, (cap *= 2) * sizeof *l);
            if (!l) goto oom;
            list = l;
        }
        /* The traversal holds a reference on every node it lists: releasing a
         * node's graph during the backward pass drops its edges, which could
         * otherwise free nodes that are still waiting their turn in the list. */
        x->refcount++;
        list[n++] = x;
        for (int i = 0; i < x->n_inputs; i++) {
            fg_node *y = x->edges[i].node;
            if (!y || y->mark == mark) continue;
            y->mark = mark;
            if (sp == scap) {
                fg_node **s = realloc(stack, (scap *= 2) * sizeof *s);
                if (!s) goto oom;
                stack = s;
            }
            stack[sp++] = y;
        }
    }
    free(stack);
    qsort(list, n, sizeof *list, cmp_seq_desc);
    *out = list;
    *count = n;
    return FG_OK;
oom:
    for (size_t k = 0; list && k < n; k++) fg__node_unref(list[k]);
    free(list);
    free(stack);
    return fg__err(FG_ERR_OOM, "backward: out of memory walking the graph");
}

static fg_status run_backward(fg_tensor *root, const fg_tensor *grad_root)
{
    char b1[128], b2[128];
    if (!root->requires_grad && !root->grad_fn)
        return fg__err(FG_ERR_STATE, "fg_backward: tensor %s does not require grad (no parameter reaches it)",
                       fg_shape_str(root, b1, sizeof b1));
    fg_tensor *seed;
    if (grad_root) {
        if (!fg__same_shape(grad_root, root))
            return fg__err(FG_ERR_SHAPE, "fg_backward: gradient %s does not match root %s",
                           fg_shape_str(grad_root, b1, sizeof b1), fg_shape_str(root, b2, sizeof b2));
        seed = fg__new("fg_backward", root->ndim, root->shape, root->dtype, root->device);
        if (!seed || fg__copy_elements(seed, grad_root) != FG_OK) return fg_last_status();
    } else {
        if (root->numel != 1)
            return fg__err(FG_ERR_SHAPE, "fg_backward: root %s has %lld elements; pass a gradient with "
                                         "fg_backward_with_grad or reduce it to a scalar first",
                           fg_shape_str(root, b1, sizeof b1), (long long)root->numel);
        seed = fg_ones(root->ndim, root->shape, root->dtype, root->device);
        if (!seed) return fg_last_status();
    }
    if (!root->grad_fn) return accumulate_leaf(root, seed);
    if (root->grad_fn->released)
        return fg__err(FG_ERR_STATE, "fg_backward: the graph behind '%s' was already freed by an earlier "
                                     "backward", root->grad_fn->name);

    fg_node **order = NULL;
    size_t count = 0;
    fg_status st = collect(root->grad_fn, &order, &count);
    if (st != FG_OK) return st;
    for (size_t k = 0; k < count && st == FG_OK; k++) {
        fg_node *n = order[k];
        if (n->released)
            st = fg__err(FG_ERR_STATE, "fg_backward: node '%s' was freed by an earlier backward "
                                       "(a graph can be back-propagated once)", n->name);
        else if (!n->grad_acc && !(n->grad_acc = calloc((size_t)n->n_outputs, sizeof *n->grad_acc)))
            st = fg__err(FG_ERR_OOM, "fg_backward: out of memory");
    }
    if (st == FG_OK) root->grad_fn->grad_acc[root->out_index] = seed;

    fg_tensor *gin_small[8];
    for (size_t k = 0; k < count && st == FG_OK; k++) {
        fg_node *n = order[k];
        bool any = false;
        for (int o = 0; o < n->n_outputs; o++) any |= n->grad_acc[o] != NULL;
        if (any) {
            for (int o = 0; o < n->n_outputs && st == FG_OK; o++)
                if (!n->grad_acc[o]) {
                    n->grad_acc[o] = fg_zeros(n->out_ndim[o], n->out_shape[o], n->out_dtype, n->out_device);
                    if (!n->grad_acc[o]) st = fg_last_status();
                }
            fg_tensor **gin = n->n_inputs <= 8 ? gin_small : calloc((size_t)n->n_inputs, sizeof *gin);
            if (!gin) st = fg__err(FG_ERR_OOM, "fg_backward: out of memory");
            if (st == FG_OK) {
                memset(gin, 0, (size_t)n->n_inputs * sizeof *gin);
                st = n->backward(n, n->grad_acc, gin);
                if (st != FG_OK && fg_last_status() == FG_OK)
                    st = fg__err(st, "fg_backward: backward of '%s' failed", n->name);
            }
            for (int i = 0; i < n->n_inputs && st == FG_OK; i++) {
                fg_edge *e = &n->edges[i];
                fg_tensor *g = gin[i];
                if (!g || !e->needs_grad) continue;
                if (g->ndim != e->ndim || memcmp(g->shape, e->shape, (size_t)e->ndim * sizeof *e->shape))
                    st = fg__err(FG_ERR_STATE, "fg_backward: '%s' produced a gradient %s for input %d of shape %s",
                                 n->name, fg_shape_str(g, b1, sizeof b1), i,
                                 fg_shape_str(e->leaf ? e->leaf : g, b2, sizeof b2));
                else if (e->node)
                    st = accumulate(&e->node->grad_acc[e->out_index], g);
                else if (e->leaf)
                    st = accumulate_leaf(e->leaf, g);
            }
            if (gin != gin_small) free(gin);
        }
        free(n->grad_acc);
        n->grad_acc = NULL;
        node_release_graph(n);
    }
    for (size_t k = 0; k < count; k++) {
        free(order[k]->grad_acc);
        order[k]->grad_acc = NULL;
        fg__node_unref(order[k]); /* the traversal's reference (see collect) */
    }
    free(order);
    return st;
}

static fg_status backward_entry(fg_tensor *root, const fg_tensor *grad_root)
{
    if (!root) return fg__err_null("fg_backward", "root");
    /* Every temporary of the backward pass lives in this scope; leaf grads are
     * kept by their leaves. Grad mode is off: no graph of the graph. */
    fg_scope *s = fg_scope_begin();
    if (!s) return fg_last_status();
    bool prev = fg_set_grad_enabled(false);
    fg_status st = run_backward(root, grad_root);
    fg_set_grad_enabled(prev);
    fg_scope_end(s);
    return st;
}

fg_status fg_backward(fg_tensor *root) { return backward_entry(root, NULL); }

fg_status fg_backward_with_grad(fg_tensor *root, const fg_tensor *grad_root)
{
    if (!grad_root) return fg__err_null("fg_backward_with_grad", "grad_root");
    return backward_entry(root, grad_root);
}
