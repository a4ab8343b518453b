/* examples/train_gpt: KV-cache check, text sampling, the gnuplot plot -- see train_gpt.h. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "train_gpt.h"

/* ---- KV cache check ----------------------------------------------------------- */
/* Logits of a held-out row through the cache (the first half as one chunk,
 * then one position at a time) against one full forward; then greedy decoding
 * by fg_gpt_generate against greedy by repeated full forwards. f32, no autocast. */
int tg_check_cache(run *r)
{
    const int64_t T = r->T < 32 ? r->T : 32, V = r->data.vocab_size, P = T / 2 > 0 ? T / 2 : 1;
    fg_generator *g = fg_generator_new(r->c.seed ^ SEED_CHECK);
    fg_scope *s = fg_scope_begin();
    const bool prev = fg_set_grad_enabled(false);
    double *full = malloc((size_t)(T * V) * sizeof *full), *part = malloc((size_t)(T * V) * sizeof *part);
    int64_t *toks = malloc((size_t)T * sizeof *toks), *ref = malloc((size_t)T * sizeof *ref);
    fg_gpt_cache cache = {0};
    double maxdiff = 0, maxabs = 0;
    int64_t n_gen = T - P, same = 0;
    bool ties = false;
    fg_status st = g && s && full && part && toks && ref ? td_batch(&r->data, 1, 1, r->T, g, r->x, r->y) : FG_ERR_OOM;
    if (st == FG_OK) {
        memcpy(toks, r->x, (size_t)T * sizeof *toks);
        fg_tensor *idx = fg_from_data(toks, FG_SHAPE(1, T), FG_I64, r->dev);
        fg_tensor *lg = idx ? fg_gpt_forward(&r->model, idx, NULL, false, NULL, NULL) : NULL;
        st = lg ? fg_to_f64_array(lg, full, T * V) : fg_last_status();
        if (st == FG_OK) st = fg_gpt_cache_init(&cache, &r->model, 1, T);
        for (int64_t t = 0; st == FG_OK && t < T; t += t ? 1 : P) {
            const int64_t n = t ? 1 : P;
            fg_tensor *c = fg_gpt_forward_cached(&r->model, &cache, fg_contiguous(fg_narrow(idx, 1, t, n)));
            if (!c || (st = fg_to_f64_array(c, part + t * V, n * V)) != FG_OK) st = fg_last_status();
        }
        for (int64_t i = 0; st == FG_OK && i < T * V; i++) {
            if (fabs(full[i] - part[i]) > maxdiff) maxdiff = fabs(full[i] - part[i]);
            if (fabs(full[i]) > maxabs) maxabs = fabs(full[i]);
        }
    }
    /* greedy: the reference feeds the whole prefix each time */
    memcpy(ref, toks, (size_t)P * sizeof *ref);
    for (int64_t t = P; st == FG_OK && t < T; t++) {
        fg_tensor *lg = fg_gpt_forward(&r->model, fg_from_data(ref, FG_SHAPE(1, t), FG_I64, r->dev), NULL, false,
                                       NULL, NULL);
        if (!lg || (st = fg_to_f64_array(fg_narrow(lg, 1, t - 1, 1), part, V)) != FG_OK) st = fg_last_status();
        int64_t best = 0;
        for (int64_t j = 1; st == FG_OK && j < V; j++)
            if (part[j] > part[best]) best = j;
        ref[t] = best;
    }
    if (st == FG_OK) {
        fg_tensor *out = fg_gpt_generate(&r->model, fg_from_data(toks, FG_SHAPE(1, P), FG_I64, r->dev), n_gen, 0.0, 0,
                                         g);
        if (!out || (st = fg_copy_to_host(out, toks, (size_t)T * sizeof *toks)) != FG_OK) st = fg_last_status();
        /* a differing token is allowed only where the reference's two best logits tie within rounding */
        for (int64_t t = P; st == FG_OK && t < T && toks[t] == ref[t]; t++) same++;
        ties = same < n_gen;
    }
    if (ties) { /* recompute the reference logits at the first difference */
        fg_tensor *lg = fg_gpt_forward(&r->model, fg_from_data(ref, FG_SHAPE(1, P + same), FG_I64, r->dev), NULL,
                                       false, NULL, NULL);
        if (!lg || fg_to_f64_array(fg_narrow(lg, 1, P + same - 1, 1), part, V) != FG_OK) st = fg_last_status();
        else ties = fabs(part[ref[P + same]] - part[toks[P + same]]) <= 1e-4 * (maxabs > 1 ? maxabs : 1);
        if (!ties) same = -1;
    }
    fg_set_grad_enabled(prev);
    fg_gpt_cache_free(&cache);
    if (s) fg_scope_end(s);
    fg_generator_free(g);
    free(full), free(part), free(toks), free(ref);
    if (st != FG_OK) return tg_fail("KV-cache check");
    const double tol = 1e-4 * (maxabs > 1 ? maxabs : 1);
    const bool ok = maxdiff <= tol && same >= 0;
    printf("kv-cache check: %lld positions (%lld as one chunk, then one at a time): max |cached - full| logit "
           "difference %.3g (max |logit| %.3g, tolerance %.3g); greedy decoding %lld/%lld tokens == full "
           "recomputation%s: %s\n",
           (long long)T, (long long)P, maxdiff, maxabs, tol, (long long)(same < 0 ? 0 : same), (long long)n_gen,
           ties && same >= 0 ? " (then a tie)" : "", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}


/* ---- output ---- */
void tg_plot(const run *r)
{
    const char *png = r->c.plot, *csv = r->c.csv;
    if (!png || !*png || !csv || !*csv) return;
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        printf("plot: skipped, gnuplot is not installed (the curve is in %s)\n", csv);
        return;
    }
    FILE *p = popen("gnuplot", "w");
    if (!p) {
        printf("plot: skipped, could not run gnuplot: %s\n", strerror(errno));
        return;
    }
    const bool task = r->data.kind == TD_TASK;
    fprintf(p,
            "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) { set terminal pngcairo size 960,540 } "
            "else { set terminal png size 960,540 }\n"
            "set output '%s'\nset datafile separator ','\nset key autotitle columnhead\n"
            "set xlabel 'step'\nset ylabel 'loss (log scale)'\nset logscale y\nset grid\nset title 'train\\_gpt %s'\n",
            png, task ? td_task_name(r->data.task) : "(text)");
    if (task) fprintf(p, "set y2label 'exact-match accuracy'\nset y2range [0:1]\nset y2tics\nset ytics nomirror\n");
    fprintf(p, "plot '%s' using 1:2 with linespoints title 'train loss', "
            "'' using 1:3 with linespoints title 'val loss'", csv);
    if (task) fprintf(p, ", '' using 1:4 axes x1y2 with linespoints title 'accuracy'");
    fprintf(p, "\n");
    const int rc = pclose(p);
    if (rc == 0) printf("plot: wrote %s\n", png);
    else printf("plot: gnuplot failed (status %d); the curve is in %s\n", rc, csv);
}


int tg_sample_text(run *r, int64_t n)
{
    const size_t plen = strlen(r->c.prompt);
    int64_t *p = malloc((plen ? plen : 1) * sizeof *p);
    if (!p) return tg_fail("sampling");
    int64_t np = 0;
    for (size_t i = 0; i < plen; i++) p[np++] = r->data.tok_of[(unsigned char)r->c.prompt[i]];
    if (!np) p[np++] = 0; /* an empty prompt: the first token of the vocabulary */
    fg_generator *g = fg_generator_new(r->c.seed ^ SEED_SAMPLE);
    fg_scope *s = fg_scope_begin();
    int rc = 0;
    int64_t *out = malloc((size_t)(np + n) * sizeof *out);
    fg_tensor *t = NULL;
    if (g && s && out && tg_autocast_on(r) == FG_OK) {
        t = fg_gpt_generate(&r->model, fg_from_data(p, FG_SHAPE(1, np), FG_I64, r->dev), n, r->c.temperature,
                            r->c.top_k, g);
        tg_autocast_off(r);
    }
    if (!t || fg_copy_to_host(t, out, (size_t)(np + n) * sizeof *out) != FG_OK) {
        rc = tg_fail("sampling");
    } else {
        printf("---- sample (%lld tokens, temperature %g, top-k %lld) ----\n", (long long)n, r->c.temperature,
               (long long)r->c.top_k);
        for (int64_t i = 0; i < np + n; i++) putchar(r->data.vocab[out[i]]);
        printf("\n----\n");
    }
    if (s) fg_scope_end(s);
    fg_generator_free(g);
    free(p);
    free(out);
    return rc;
}

