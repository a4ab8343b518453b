/* The parameter registry (include/flashgrad/params.h): a growable array of
 * (name, tensor, decay) entries, names owned, tensors retained. Lookups are
 * linear: models have hundreds of entries, looked up when loading. */
#include <stdlib.h>
#include <string.h>
#include "internal.h"

struct fg_params {
    fg_param *e;
    int64_t n, cap;
};

static const char *OP = "params";

fg_params *fg_params_new(void)
{
    fg_params *p = calloc(1, sizeof *p);
    if (!p) fg__err(FG_ERR_OOM, "%s: out of host memory for a registry", OP);
    return p;
}

void fg_params_free(fg_params *p)
{
    if (!p) return;
    for (int64_t i = 0; i < p->n; i++) {
        free((char *)p->e[i].name);
        /* The registry's own reference (fg_retain): fg_free would drop the
         * owning scope's reference instead and leak the tensor. */
        fg__unref(p->e[i].t);
    }
    free(p->e);
    free(p);
}

fg_status fg_params_add(fg_params *p, const char *name, fg_tensor *t, bool decay)
{
    if (!p) return fg__err_null(OP, "registry");
    if (!name) return fg__err_null(OP, "name");
    if (!t) return fg__err_null(OP, name);
    if (!*name) return fg__err(FG_ERR_INVALID, "%s: empty parameter name", OP);
    if (!fg_dtype_is_float(t->dtype))
        return fg__err(FG_ERR_DTYPE, "%s: '%s' is %s; parameters are floating point", OP, name, fg_dtype_name(t->dtype));
    for (int64_t i = 0; i < p->n; i++) {
        if (!strcmp(p->e[i].name, name)) return fg__err(FG_ERR_INVALID, "%s: '%s' is registered twice", OP, name);
        if (p->e[i].t == t)
            return fg__err(FG_ERR_INVALID, "%s: '%s' is the tensor already registered as '%s' (tied weights: register once)",
                           OP, name, p->e[i].name);
    }
    if (p->n == p->cap) {
        const int64_t cap = p->cap ? 2 * p->cap : 16;
        fg_param *e = realloc(p->e, sizeof *e * (size_t)cap);
        if (!e) return fg__err(FG_ERR_OOM, "%s: out of host memory adding '%s'", OP, name);
        p->e = e, p->cap = cap;
    }
    const size_t len = strlen(name) + 1;
    char *nm = malloc(len);
    if (!nm) return fg__err(FG_ERR_OOM, "%s: out of host memory adding '%s'", OP, name);
    memcpy(nm, name, len);
    p->e[p->n++] = (fg_param){nm, fg_retain(t), decay};
    return FG_OK;
}

int64_t fg_params_count(const fg_params *p) { return p ? p->n : 0; }

const fg_param *fg_params_at(const fg_params *p, int64_t i)
{
    if (!p) return fg__err_null(OP, "registry"), NULL;
    if (i < 0 || i >= p->n) {
        fg__err(FG_ERR_INDEX, "%s: entry %lld of %lld", OP, (long long)i, (long long)p->n);
        return NULL;
    }
    return &p->e[i];
}

const fg_param *fg_params_find(const fg_params *p, const char *name)
{
    if (!p || !name) return NULL;
    for (int64_t i = 0; i < p->n; i++)
        if (!strcmp(p->e[i].name, name)) return &p->e[i];
    return NULL;
}

int64_t fg_params_numel(const fg_params *p)
{
    int64_t n = 0;
    for (int64_t i = 0; p && i < p->n; i++) n += p->e[i].t->numel;
    return n;
}

fg_status fg_params_zero_grad(fg_params *p)
{
    if (!p) return fg__err_null(OP, "registry");
    for (int64_t i = 0; i < p->n; i++) {
        fg_status st = fg_zero_grad(p->e[i].t);
        if (st != FG_OK) return st;
    }
    return FG_OK;
}
