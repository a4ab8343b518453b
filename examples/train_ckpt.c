/* examples/train_gpt: checkpoints (save, resume) -- see train_gpt.h. */
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "train_gpt.h"

/* ---- checkpoint metadata ------------------------------------------------------- */
/* The model and data identity must match on --resume; the training
 * hyperparameters are the command line's (a note when they differ). */
typedef struct {
    const char *key;
    int opt;
    size_t off;
    bool is_f64;
} hparam;
#define HP(k, o, f, d) {k, o, offsetof(config, f), d}
static const hparam HPARAMS[] = {
    HP("train.batch", O_BATCH, batch, 0),          HP("train.accum", O_ACCUM, accum, 0),
    HP("train.steps", O_STEPS, steps, 0),          HP("train.decay_steps", O_DECAY_STEPS, decay_steps, 0),
    HP("train.warmup", O_WARMUP, warmup, 0),       HP("train.lr", O_LR, lr, 1),
    HP("train.min_lr", O_MIN_LR, min_lr, 1),       HP("train.beta1", O_BETA1, beta1, 1),
    HP("train.beta2", O_BETA2, beta2, 1),          HP("train.weight_decay", O_WD, weight_decay, 1),
    HP("train.grad_clip", O_CLIP, grad_clip, 1),   HP("model.dropout", O_DROPOUT, dropout, 1),
};
/* architecture: must match */
static const hparam ARCH[] = {
    HP("model.n_layer", O_LAYERS, layers, 0), HP("model.n_head", O_HEADS, heads, 0),
    HP("model.n_kv_head", O_KV_HEADS, kv_heads, 0), HP("model.n_embd", O_WIDTH, width, 0),
    HP("model.block_size", O_BLOCK, block, 0),
};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- checkpoints ---------------------------------------------------------------- */
/* 64-bit checksum of every tensor's bytes (model, then optimizer state): a
 * safetensors file has none, so a flipped bit in the data would load silently. */
static fg_status state_checksum(run *r, uint64_t *out)
{
    uint64_t h = 1469598103934665603ULL;
    fg_params *regs[2] = {r->params, r->opt_state};
    unsigned char *buf = NULL;
    size_t cap = 0;
    for (int k = 0; k < 2; k++)
        for (int64_t i = 0; i < fg_params_count(regs[k]); i++) {
            const fg_tensor *t = fg_params_at(regs[k], i)->t;
            const size_t n = (size_t)fg_numel(t) * fg_dtype_size(fg_dtype_of(t));
            if (n > cap) {
                free(buf);
                if (!(buf = malloc(cap = n))) return FG_ERR_OOM;
            }
            fg_status st = fg_copy_to_host(t, buf, n);
            if (st != FG_OK) return free(buf), st;
            size_t j = 0;
            for (; j + 8 <= n; j += 8) {
                uint64_t w;
                memcpy(&w, buf + j, 8);
                h = (h ^ w) * 1099511628211ULL;
                h ^= h >> 29;
            }
            for (; j < n; j++) h = (h ^ buf[j]) * 1099511628211ULL;
        }
    free(buf);
    *out = h;
    return FG_OK;
}

fg_status tg_save_checkpoint(run *r, const char *path)
{
    const config *c = &r->c;
    fg_ckpt_meta *m = fg_ckpt_meta_new();
    if (!m) return fg_last_status();
    char vocab[2 * 256 + 1];
    td_vocab_hex(&r->data, vocab);
    uint64_t sum = 0;
    fg_status st = fg_ckpt_meta_set(m, "train_gpt.version", CKPT_VERSION);
    if (st == FG_OK) st = fg_ckpt_meta_set_i64(m, "model.vocab_size", r->data.vocab_size);
    for (size_t i = 0; st == FG_OK && i < NELEM(ARCH); i++)
        st = fg_ckpt_meta_set_i64(m, ARCH[i].key, *(const int64_t *)((const char *)c + ARCH[i].off));
    if (st == FG_OK) st = fg_ckpt_meta_set(m, "model.bias", c->bias ? "true" : "false");
    if (st == FG_OK) st = fg_ckpt_meta_set(m, "data.kind", r->data.kind == TD_TEXT ? "text" : "task");
    if (st == FG_OK && r->data.kind == TD_TEXT) st = fg_ckpt_meta_set(m, "data.path", c->data);
    if (st == FG_OK && r->data.kind == TD_TASK) st = fg_ckpt_meta_set(m, "data.task", td_task_name(r->data.task));
    if (st == FG_OK && r->data.kind == TD_TASK) st = fg_ckpt_meta_set_i64(m, "data.digits", r->data.digits);
    if (st == FG_OK && r->data.kind == TD_TASK) st = fg_ckpt_meta_set_i64(m, "data.eval_examples", c->eval_examples);
    if (st == FG_OK) st = fg_ckpt_meta_set(m, "data.vocab", vocab);
    if (st == FG_OK) st = fg_ckpt_meta_set_u64(m, "train.seed", c->seed);
    for (size_t i = 0; st == FG_OK && i < NELEM(HPARAMS); i++) {
        const void *p = (const char *)c + HPARAMS[i].off;
        st = HPARAMS[i].is_f64 ? fg_ckpt_meta_set_f64(m, HPARAMS[i].key, *(const double *)p)
                               : fg_ckpt_meta_set_i64(m, HPARAMS[i].key, *(const int64_t *)p);
    }
    if (st == FG_OK) st = fg_ckpt_meta_set(m, "train.device", c->device);
    if (st == FG_OK) st = fg_ckpt_meta_set_step(m, (uint64_t)r->step);
    if (st == FG_OK) st = fg_ckpt_meta_set_generator(m, NULL, r->g);
    if (st == FG_OK) st = state_checksum(r, &sum);
    if (st == FG_OK) st = fg_ckpt_meta_set_u64(m, "train_gpt.checksum", sum);
    const fg_params *regs[2] = {r->params, r->opt_state};
    if (st == FG_OK) st = fg_checkpoint_save_multi(path, 2, regs, m);
    fg_ckpt_meta_free(m);
    return st;
}

/* Before building anything: the checkpoint's architecture, data and seed into
 * the config (conflicts with the command line are errors). */
int tg_resume_config(config *c, const char *path)
{
    fg_ckpt_file *f = fg_ckpt_open(path);
    if (!f) {
        fprintf(stderr, PROG ": --resume: %s\n", fg_last_error());
        return 2;
    }
    const fg_ckpt_meta *m = fg_ckpt_metadata(f);
    int rc = 0;
    const char *v = fg_ckpt_meta_get(m, "train_gpt.version"), *kind = fg_ckpt_meta_get(m, "data.kind");
    if (!v || strcmp(v, CKPT_VERSION) || !kind) {
        fprintf(stderr, PROG ": --resume: %s is not a train_gpt checkpoint (metadata train_gpt.version %s)\n", path,
                v ? v : "missing");
        rc = 2;
    }
    for (size_t i = 0; !rc && i < NELEM(ARCH); i++) {
        int64_t val, *cur = (int64_t *)((char *)c + ARCH[i].off);
        if (fg_ckpt_meta_get_i64(m, ARCH[i].key, &val) != FG_OK) {
            fprintf(stderr, PROG ": --resume: %s: metadata %s: %s\n", path, ARCH[i].key, fg_last_error());
            rc = 2;
        } else if (GIVEN(c, ARCH[i].opt) && *cur != val) {
            fprintf(stderr, PROG ": --resume: %s was trained with %s = %lld, the command line says %lld\n", path,
                    ARCH[i].key, (long long)val, (long long)*cur);
            rc = 2;
        } else {
            *cur = val;
        }
    }
    const char *bias = fg_ckpt_meta_get(m, "model.bias");
    if (!rc && GIVEN(c, O_BIAS) && bias && strcmp(bias, "true")) {
        fprintf(stderr, PROG ": --resume: %s has no biases, the command line says --bias\n", path);
        rc = 2;
    }
    if (!rc) c->bias = bias && !strcmp(bias, "true");
    if (!rc && !strcmp(kind, "text")) {
        const char *p = fg_ckpt_meta_get(m, "data.path");
        if (GIVEN(c, O_TASK)) {
            fprintf(stderr, PROG ": --resume: %s was trained on text (%s), not on --task %s\n", path, p ? p : "?",
                    c->task);
            rc = 2;
        } else if (!c->data) { /* the same file, unless another is given (its vocabulary must match) */
            static char keep[4096];
            snprintf(keep, sizeof keep, "%s", p ? p : "");
            c->data = keep;
        }
        c->task = NULL;
    } else if (!rc) {
        const char *t = fg_ckpt_meta_get(m, "data.task");
        int64_t digits = 0, n_val = 0;
        if (c->data || !t || td_task_from_name(t) < 0 || fg_ckpt_meta_get_i64(m, "data.digits", &digits) != FG_OK ||
            fg_ckpt_meta_get_i64(m, "data.eval_examples", &n_val) != FG_OK) {
            fprintf(stderr, PROG ": --resume: %s was trained on task %s, not on %s\n", path, t ? t : "?",
                    c->data ? c->data : "this task");
            rc = 2;
        } else if ((GIVEN(c, O_TASK) && strcmp(c->task, t)) || (GIVEN(c, O_DIGITS) && c->digits != digits) ||
                   (GIVEN(c, O_EVAL_EXAMPLES) && c->eval_examples != n_val)) {
            fprintf(stderr, PROG ": --resume: %s was trained on --task %s --digits %lld --eval-examples %lld; the "
                    "command line differs\n", path, t, (long long)digits, (long long)n_val);
            rc = 2;
        } else { /* the names live in TASKS, not in the file */
            c->task = td_task_name(td_task_from_name(t));
            c->digits = digits;
            c->eval_examples = n_val;
        }
    }
    uint64_t seed;
    if (!rc && fg_ckpt_meta_get_u64(m, "train.seed", &seed) != FG_OK) {
        fprintf(stderr, PROG ": --resume: %s: metadata train.seed: %s\n", path, fg_last_error());
        rc = 2;
    } else if (!rc && GIVEN(c, O_SEED) && seed != c->seed) {
        fprintf(stderr, PROG ": --resume: %s was trained with --seed %" PRIu64 ", the command line says %" PRIu64 "\n",
                path, seed, c->seed);
        rc = 2;
    } else if (!rc) {
        c->seed = seed;
    }
    fg_ckpt_close(f);
    return rc;
}

/* Notes (stderr) for training hyperparameters that differ from the
 * checkpoint's: allowed, but the run is then not the uninterrupted one. */
void tg_resume_notes(const config *c, const char *path)
{
    fg_ckpt_file *f = fg_ckpt_open(path);
    if (!f) return;
    const fg_ckpt_meta *m = fg_ckpt_metadata(f);
    for (size_t i = 0; i < NELEM(HPARAMS); i++) { /* not --steps: resuming extends runs */
        if (HPARAMS[i].opt == O_STEPS) continue;
        const void *p = (const char *)c + HPARAMS[i].off;
        double a = 0, b = HPARAMS[i].is_f64 ? *(const double *)p : (double)*(const int64_t *)p;
        int64_t ai;
        if (HPARAMS[i].is_f64 ? fg_ckpt_meta_get_f64(m, HPARAMS[i].key, &a) != FG_OK
                              : fg_ckpt_meta_get_i64(m, HPARAMS[i].key, &ai) != FG_OK)
            continue;
        if (!HPARAMS[i].is_f64) a = (double)ai;
        if (a != b) fprintf(stderr, PROG ": note: %s is %g in the checkpoint, %g now\n", HPARAMS[i].key, a, b);
    }
    fg_ckpt_close(f);
}

/* After building the model and optimizer: load the tensors and the state. */
int tg_resume_state(run *r, const char *path)
{
    fg_params *regs[2] = {r->params, r->opt_state};
    fg_ckpt_meta *m = fg_ckpt_meta_new();
    int rc = 0;
    uint64_t step = 0, sum_file = 0, sum_now = 0;
    char vocab[2 * 256 + 1];
    td_vocab_hex(&r->data, vocab);
    /* the vocabulary first: with another one the tensors' shapes differ too, a less telling error */
    fg_ckpt_file *f = fg_ckpt_open(path);
    const char *fv = f ? fg_ckpt_meta_get(fg_ckpt_metadata(f), "data.vocab") : NULL;
    if (f && (!fv || strcmp(fv, vocab))) {
        fprintf(stderr, PROG ": --resume: %s: its vocabulary (%s%zu symbols) is not that of %s (%d symbols)\n", path,
                fv ? "" : "missing, ", fv ? strlen(fv) / 2 : 0, r->c.data ? r->c.data : "the task", r->data.vocab_size);
        rc = 2;
    }
    fg_ckpt_close(f);
    if (rc) {
    } else if (!m || fg_checkpoint_load_multi(path, 2, regs, m, FG_CKPT_STRICT) != FG_OK) {
        fprintf(stderr, PROG ": --resume: %s\n", fg_last_error());
        rc = 2;
    } else if (fg_ckpt_meta_get_step(m, &step) != FG_OK ||
               fg_ckpt_meta_get_u64(m, "train_gpt.checksum", &sum_file) != FG_OK ||
               fg_ckpt_meta_get_generator(m, NULL, r->g) != FG_OK) {
        fprintf(stderr, PROG ": --resume: %s: metadata: %s\n", path, fg_last_error());
        rc = 2;
    } else if (state_checksum(r, &sum_now) != FG_OK || sum_now != sum_file) {
        fprintf(stderr, PROG ": --resume: %s is corrupted: the tensors' checksum is %016" PRIx64 ", the metadata says "
                "%016" PRIx64 "\n", path, sum_now, sum_file);
        rc = 2;
    } else if (fg_optimizer_set_step_count(r->opt, (int64_t)step) != FG_OK) {
        fprintf(stderr, PROG ": --resume: %s\n", fg_last_error());
        rc = 2;
    }
    if (!rc) {
        r->step = (int64_t)step;
        const char *dev = fg_ckpt_meta_get(m, "train.device");
        if (dev && strcmp(dev, r->c.device))
            fprintf(stderr, PROG ": note: the checkpoint was trained on %s; continuing on %s is not bit-identical\n",
                    dev, r->c.device);
    }
    fg_ckpt_meta_free(m);
    return rc;
}

