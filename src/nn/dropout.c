/* Dropout layer: fg_dropout with the caller's generator, a copy when inactive. */
#include "nn/nn_impl.h"

fg_status fg_nn_dropout_init(fg_nn_dropout *d, double p)
{
    if (!d) return fg__err(FG_ERR_NULL, "fg_nn_dropout: layer is NULL");
    d->p = 0;
    if (!(p >= 0 && p < 1)) return fg__err(FG_ERR_INVALID, "fg_nn_dropout: p = %g outside [0, 1)", p);
    d->p = p;
    return FG_OK;
}

fg_tensor *fg_nn_dropout_forward(const fg_nn_dropout *d, fg_tensor *x, bool training, fg_generator *gen)
{
    if (!d) return fg__err(FG_ERR_NULL, "fg_nn_dropout: layer is NULL"), NULL;
    if (!x) return fg__err_null("fg_nn_dropout", "input"), NULL;
    if (!(d->p >= 0 && d->p < 1)) return fg__err(FG_ERR_INVALID, "fg_nn_dropout: p = %g outside [0, 1)", d->p), NULL;
    /* p == 0 draws nothing: the generator does not advance. */
    return fg_dropout(x, d->p, training && d->p > 0, gen);
}
