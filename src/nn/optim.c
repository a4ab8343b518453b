/* Optimizers over a parameter registry (include/flashgrad/optim.h): SGD with
 * momentum / Nesterov and AdamW. The object holds its own copy of the
 * registry's entries (name, retained tensor, decay flag) and their state
 * tensors; a step updates CPU entries with the reference loops of
 * src/cpu/optim.c and all CUDA entries with one multi-tensor kernel launch
 * (kernels/optim.cu) over a chunk table cached on the device. */
#include <stdio.h>
#include <stdlib.h>
#include "internal.h"
#include "cpu/cpu_optim.h"
#include "nn/multi_tensor.h"

typedef enum { OPT_SGD, OPT_ADAMW } opt_kind;

typedef struct {
    char *name;
    fg_tensor *p;     /* retained */
    bool decay;       /* weight decay applies (decay flag or decay_all) */
    fg_tensor *s[2];  /* owned state: AdamW exp_avg, exp_avg_sq; SGD momentum (NULL without) */
} opt_entry;

struct fg_optimizer {
    opt_kind kind;
    const char *name; /* "sgd" / "adamw" */
    double lr;
    fg_sgd_opts sgd;
    fg_adamw_opts adamw;
    int64_t step;
    opt_entry *e;
    int64_t n;
    fg__mt_table tbl; /* CUDA entries' chunks */
};

fg_sgd_opts fg_sgd_defaults(void)
{
    return (fg_sgd_opts){.lr = 1e-3, .momentum = 0.0, .nesterov = false, .weight_decay = 0.0, .decay_all = false};
}

fg_adamw_opts fg_adamw_defaults(void)
{
    return (fg_adamw_opts){.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 1e-2,
                           .decay_all = false};
}

/* ---- argument checks ---- */

static fg_status check_nonneg(const char *opt, const char *field, double x)
{
    if (x >= 0 && isfinite(x)) return FG_OK;
    return fg__err(FG_ERR_INVALID, "%s: %s = %g; it must be >= 0 and finite", opt, field, x);
}

static fg_status check_beta(const char *opt, const char *field, double x)
{
    if (x >= 0 && x < 1) return FG_OK;
    return fg__err(FG_ERR_INVALID, "%s: %s = %g is outside [0, 1)", opt, field, x);
}

static fg_status check_sgd_opts(const fg_sgd_opts *o)
{
    if (check_nonneg("sgd", "lr", o->lr) || check_nonneg("sgd", "momentum", o->momentum) ||
        check_nonneg("sgd", "weight_decay", o->weight_decay))
        return fg_last_status();
    if (o->nesterov && o->momentum <= 0)
        return fg__err(FG_ERR_INVALID, "sgd: nesterov needs momentum > 0 (momentum = %g)", o->momentum);
    return FG_OK;
}

static fg_status check_adamw_opts(const fg_adamw_opts *o)
{
    if (check_nonneg("adamw", "lr", o->lr) || check_beta("adamw", "beta1", o->beta1) ||
        check_beta("adamw", "beta2", o->beta2) || check_nonneg("adamw", "weight_decay", o->weight_decay))
        return fg_last_status();
    if (!(o->eps > 0) || !isfinite(o->eps))
        return fg__err(FG_ERR_INVALID, "adamw: eps = %g; it must be > 0 and finite", o->eps);
    return FG_OK;
}

/* What the update loops and kernels take: f32 anywhere, f64 on the CPU, contiguous. */
static fg_status check_param(const char *opt, const char *name, const fg_tensor *t)
{
    if (t->dtype != FG_F32 && t->dtype != FG_F64)
        return fg__err(FG_ERR_DTYPE, "%s: parameter '%s' is %s; the optimizer updates f32 parameters (f64 on the CPU): "
                       "keep fp32 master weights (autocast casts them for the matmuls)",
                       opt, name, fg_dtype_name(t->dtype));
    if (t->dtype == FG_F64 && t->device == FG_CUDA)
        return fg__err(FG_ERR_UNSUPPORTED, "%s: parameter '%s' is f64 on cuda; the fused CUDA update takes f32", opt,
                       name);
    if (!fg_is_contiguous(t)) {
        char s[128];
        return fg__err(FG_ERR_UNSUPPORTED, "%s: parameter '%s' %s is not contiguous", opt, name,
                       fg_shape_str(t, s, sizeof s));
    }
    return FG_OK;
}

/* The gradient a step reads: made by fg_backward, so these only fail if
 * someone wrote around the framework. */
static fg_status check_grad(const char *op, const opt_entry *e, const fg_tensor *g)
{
    const fg_tensor *p = e->p;
    if (g->dtype != p->dtype || g->device != p->device || !fg__same_shape(g, p) || !fg_is_contiguous(g)) {
        char a[128], b[128];
        return fg__err(FG_ERR_STATE, "%s: gradient of '%s' is %s %s on %s%s; the parameter is %s %s on %s", op, e->name,
                       fg_dtype_name(g->dtype), fg_shape_str(g, a, sizeof a), fg_device_name(g->device),
                       fg_is_contiguous(g) ? "" : " (not contiguous)", fg_dtype_name(p->dtype),
                       fg_shape_str(p, b, sizeof b), fg_device_name(p->device));
    }
    return FG_OK;
}

/* ---- creation ---- */

void fg_optimizer_free(fg_optimizer *o)
{
    if (!o) return;
    for (int64_t i = 0; i < o->n; i++) {
        free(o->e[i].name);
        fg__unref(o->e[i].p); /* our reference only (see fg_params_free) */
        fg__unref(o->e[i].s[0]);
        fg__unref(o->e[i].s[1]);
    }
    free(o->e);
    fg__mt_release(&o->tbl);
    free(o);
}

/* A zeroed state tensor like p, owned by the optimizer (out of any open scope). */
static fg_tensor *new_state(const fg_tensor *p)
{
    fg_tensor *z = fg_zeros(p->ndim, p->shape, p->dtype, p->device);
    return z ? fg_keep(z) : NULL;
}

static fg_optimizer *opt_new(opt_kind kind, fg_params *params, bool decay_all, int n_state)
{
    const char *name = kind == OPT_ADAMW ? "adamw" : "sgd";
    const int64_t n = fg_params_count(params);
    fg_optimizer *o = calloc(1, sizeof *o);
    if (!o || !(o->e = calloc((size_t)(n ? n : 1), sizeof *o->e))) {
        free(o);
        fg__err(FG_ERR_OOM, "%s: out of host memory for %lld parameters", name, (long long)n);
        return NULL;
    }
    o->kind = kind;
    o->name = name;
    for (int64_t i = 0; i < n; i++) {
        const fg_param *pe = fg_params_at(params, i);
        if (!pe || check_param(name, pe->name, pe->t) != FG_OK) goto fail;
        opt_entry *e = &o->e[o->n];
        const size_t len = strlen(pe->name) + 1;
        if (!(e->name = malloc(len))) {
            fg__err(FG_ERR_OOM, "%s: out of host memory for the name '%s'", name, pe->name);
            goto fail;
        }
        memcpy(e->name, pe->name, len);
        e->p = fg_retain(pe->t);
        e->decay = decay_all || pe->decay;
        o->n++; /* from here fg_optimizer_free releases the entry */
        for (int k = 0; k < n_state; k++)
            if (!(e->s[k] = new_state(pe->t))) goto fail;
    }
    return o;
fail:
    fg_optimizer_free(o);
    return NULL;
}

fg_optimizer *fg_sgd_new(fg_params *params, const fg_sgd_opts *opts)
{
    if (!params) return fg__err_null("sgd", "parameter registry"), NULL;
    const fg_sgd_opts so = opts ? *opts : fg_sgd_defaults();
    if (check_sgd_opts(&so) != FG_OK) return NULL;
    fg_optimizer *o = opt_new(OPT_SGD, params, so.decay_all, so.momentum > 0 ? 1 : 0);
    if (!o) return NULL;
    o->sgd = so;
    o->lr = so.lr;
    return o;
}

fg_optimizer *fg_adamw_new(fg_params *params, const fg_adamw_opts *opts)
{
    if (!params) return fg__err_null("adamw", "parameter registry"), NULL;
    const fg_adamw_opts ao = opts ? *opts : fg_adamw_defaults();
    if (check_adamw_opts(&ao) != FG_OK) return NULL;
    fg_optimizer *o = opt_new(OPT_ADAMW, params, ao.decay_all, 2);
    if (!o) return NULL;
    o->adamw = ao;
    o->lr = ao.lr;
    return o;
}

const char *fg_optimizer_name(const fg_optimizer *o) { return o ? o->name : ""; }

/* ---- the step ---- */

static void *data_or_null(const fg_tensor *t) { return t ? fg__data(t) : NULL; }

/* All CUDA entries with a gradient in one launch. */
static fg_status step_cuda(fg_optimizer *o, const char *op, const fg_cpu_adamw_hyper *ah, const fg_cpu_sgd_hyper *sh)
{
    fg__mt_reset(&o->tbl);
    for (int64_t i = 0; i < o->n; i++) {
        opt_entry *e = &o->e[i];
        if (e->p->device != FG_CUDA || !e->p->grad || e->p->numel == 0) continue;
        if (fg__mt_add(&o->tbl, op, fg__data(e->p), fg__data(e->p->grad), data_or_null(e->s[0]), data_or_null(e->s[1]),
                       e->p->numel, e->decay) != FG_OK)
            return fg_last_status();
    }
    if (o->tbl.n == 0) return FG_OK;
#ifdef FG_HAVE_CUDA
    const fg_k_mt_chunk *dev = NULL;
    if (fg__mt_upload(&o->tbl, op, &dev) != FG_OK) return fg_last_status();
    if (o->kind == OPT_ADAMW) {
        const fg_k_adamw_hyper kh = {(float)ah->beta1, (float)(1.0 - ah->beta1), (float)ah->beta2,
                                     (float)(1.0 - ah->beta2), (float)ah->eps, (float)ah->step_size,
                                     (float)ah->bc2_sqrt, (float)ah->decay_mul};
        return FG_CUDA_CALL(op, fg_k_adamw(dev, o->tbl.n, kh, fg__cuda_stream()));
    }
    const fg_k_sgd_hyper kh = {(float)sh->lr, (float)sh->momentum, (float)sh->weight_decay, sh->nesterov};
    return FG_CUDA_CALL(op, fg_k_sgd(dev, o->tbl.n, kh, fg__cuda_stream()));
#else
    (void)ah, (void)sh;
    return FG_CUDA_CALL(op, 0);
#endif
}

fg_status fg_optimizer_step(fg_optimizer *o)
{
    if (!o) return fg__err_null("optimizer step", "optimizer");
    const char *op = o->kind == OPT_ADAMW ? "adamw step" : "sgd step";
    bool any_cuda = false;
    for (int64_t i = 0; i < o->n; i++) {
        const fg_tensor *g = o->e[i].p->grad;
        if (!g) continue;
        if (check_grad(op, &o->e[i], g) != FG_OK) return fg_last_status();
        any_cuda |= g->device == FG_CUDA;
    }
    const int64_t t = o->step + 1;
    fg_cpu_adamw_hyper ah = {0};
    fg_cpu_sgd_hyper sh = {0};
    if (o->kind == OPT_ADAMW) {
        const fg_adamw_opts *a = &o->adamw;
        ah = (fg_cpu_adamw_hyper){.beta1 = a->beta1,
                                  .beta2 = a->beta2,
                                  .eps = a->eps,
                                  .step_size = o->lr / (1.0 - pow(a->beta1, (double)t)),
                                  .bc2_sqrt = sqrt(1.0 - pow(a->beta2, (double)t)),
                                  .decay_mul = 1.0 - o->lr * a->weight_decay};
    } else {
        sh = (fg_cpu_sgd_hyper){.lr = o->lr, .momentum = o->sgd.momentum, .weight_decay = o->sgd.weight_decay,
                                .nesterov = o->sgd.nesterov};
    }
    /* CUDA first: its failures (table memory, launch) come before any update;
     * the CPU loops cannot fail. */
    if (any_cuda && step_cuda(o, op, &ah, &sh) != FG_OK) return fg_last_status();
    for (int64_t i = 0; i < o->n; i++) {
        opt_entry *e = &o->e[i];
        fg_tensor *p = e->p;
        if (p->device != FG_CPU || !p->grad) continue;
        if (o->kind == OPT_ADAMW)
            fg_cpu_adamw(p->dtype, fg__data(p), fg__data(p->grad), fg__data(e->s[0]), fg__data(e->s[1]), p->numel,
                         e->decay, &ah);
        else
            fg_cpu_sgd(p->dtype, fg__data(p), fg__data(p->grad), data_or_null(e->s[0]), p->numel, e->decay, &sh);
    }
    o->step = t;
    return FG_OK;
}

fg_status fg_optimizer_zero_grad(fg_optimizer *o)
{
    if (!o) return fg__err_null("optimizer zero_grad", "optimizer");
    for (int64_t i = 0; i < o->n; i++) {
        fg_status st = fg_zero_grad(o->e[i].p);
        if (st != FG_OK) return st;
    }
    return FG_OK;
}

/* ---- hyperparameters and state ---- */

fg_status fg_optimizer_set_lr(fg_optimizer *o, double lr)
{
    if (!o) return fg__err_null("optimizer set_lr", "optimizer");
    if (check_nonneg(o->name, "lr", lr) != FG_OK) return fg_last_status();
    o->lr = lr;
    return FG_OK;
}

double fg_optimizer_get_lr(const fg_optimizer *o) { return o ? o->lr : NAN; }

int64_t fg_optimizer_step_count(const fg_optimizer *o) { return o ? o->step : -1; }

fg_status fg_optimizer_set_step_count(fg_optimizer *o, int64_t step)
{
    if (!o) return fg__err_null("optimizer set_step_count", "optimizer");
    if (step < 0) return fg__err(FG_ERR_INVALID, "%s: step count %lld; it must be >= 0", o->name, (long long)step);
    o->step = step;
    return FG_OK;
}

fg_status fg_optimizer_state(fg_optimizer *o, fg_params *out)
{
    if (!o) return fg__err_null("optimizer state", "optimizer");
    if (!out) return fg__err_null(o->name, "state registry");
    const char *kinds[2] = {o->kind == OPT_ADAMW ? "exp_avg" : "momentum", "exp_avg_sq"};
    for (int64_t i = 0; i < o->n; i++) {
        for (int k = 0; k < 2; k++) {
            if (!o->e[i].s[k]) continue;
            const size_t len = strlen("optim.") + strlen(kinds[k]) + 1 + strlen(o->e[i].name) + 1;
            char *nm = malloc(len);
            if (!nm) return fg__err(FG_ERR_OOM, "%s: out of host memory for a state name", o->name);
            snprintf(nm, len, "optim.%s.%s", kinds[k], o->e[i].name);
            fg_status st = fg_params_add(out, nm, o->e[i].s[k], false);
            free(nm);
            if (st != FG_OK) return st;
        }
    }
    return FG_OK;
}
