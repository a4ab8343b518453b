/* MLP: c_proj(gelu_tanh(c_fc(x))), then dropout (GPT-2's feed-forward). */
#include <stdio.h>
#include "nn/nn_impl.h"

static const char *OP = "fg_nn_mlp";

fg_status fg_nn_mlp_init(fg_nn_mlp *m, int64_t n_embd, int64_t hidden, bool bias, double dropout, const fg_nn_init *init,
                         fg_generator *g, fg_device dev, fg_dtype dt)
{
    if (!m) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    memset(m, 0, sizeof *m);
    if (hidden == 0 && n_embd > 0 && n_embd <= INT64_MAX / 4) hidden = 4 * n_embd;
    if (n_embd < 1 || hidden < 1)
        return fg__err(FG_ERR_INVALID, "%s: n_embd %lld and hidden %lld must be positive", OP, (long long)n_embd,
                       (long long)hidden);
    if (!(dropout >= 0 && dropout < 1)) return fg__err(FG_ERR_INVALID, "%s: dropout %g outside [0, 1)", OP, dropout);
    const double std = init ? init->init_std : 0.0;
    const double pstd = init && init->proj_init_std > 0 ? init->proj_init_std : std;
    fg_status st = fg__nn_linear_init_std(&m->c_fc, n_embd, hidden, bias, std, g, dev, dt);
    if (st == FG_OK) st = fg__nn_linear_init_std(&m->c_proj, hidden, n_embd, bias, pstd, g, dev, dt);
    if (st != FG_OK) {
        fg_nn_mlp_free(m);
        return st;
    }
    m->dropout = dropout;
    return FG_OK;
}

fg_tensor *fg_nn_mlp_forward(const fg_nn_mlp *m, fg_tensor *x, bool training, fg_generator *gen)
{
    if (!m) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP), NULL;
    char name[96];
    snprintf(name, sizeof name, "%s(%lld -> %lld)", OP, (long long)m->c_fc.in_features,
             (long long)m->c_fc.out_features);
    if (!fg__nn_check_input(name, x, m->c_fc.weight, 1, FG_MAX_DIMS, m->c_fc.in_features)) return NULL;
    fg_scope *s = fg_scope_begin();
    if (!s) return NULL;
    fg_tensor *h = fg_linear_gelu(x, m->c_fc.weight, m->c_fc.bias); /* (..., hidden) */
    fg_tensor *y = fg_linear(h, m->c_proj.weight, m->c_proj.bias);  /* (..., n_embd) */
    return fg__nn_finish(s, fg__nn_dropout(y, m->dropout, training, gen));
}

fg_status fg_nn_mlp_params(const fg_nn_mlp *m, const char *prefix, fg_params *reg)
{
    if (!m) return fg__err(FG_ERR_NULL, "%s: layer is NULL", OP);
    char p[FG_NN_NAME_MAX];
    fg_status st = fg__nn_join(p, sizeof p, OP, prefix, "c_fc");
    if (st == FG_OK) st = fg_nn_linear_params(&m->c_fc, p, reg);
    if (st == FG_OK) st = fg__nn_join(p, sizeof p, OP, prefix, "c_proj");
    return st != FG_OK ? st : fg_nn_linear_params(&m->c_proj, p, reg);
}

void fg_nn_mlp_free(fg_nn_mlp *m)
{
    if (!m) return;
    fg_nn_linear_free(&m->c_fc);
    fg_nn_linear_free(&m->c_proj);
    memset(m, 0, sizeof *m);
}
