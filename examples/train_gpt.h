/* Internal to examples/train_gpt: the options, the state of a run, and the
 * functions its files share (train_gpt.c: options and the training loop;
 * train_ckpt.c: checkpoints; train_output.c: KV-cache check, sampling, plot;
 * train_data.c: datasets and tasks). */
#ifndef TRAIN_GPT_H
#define TRAIN_GPT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <flashgrad.h>
#include "train_data.h"

#define PROG "train_gpt"
#define CKPT_VERSION "1"

/* Defaults that differ for text (--data): a language model wants longer runs. */
#define TEXT_STEPS 2000
#define TEXT_LR 1e-3
#define TEXT_WARMUP 100
#define TEXT_EVAL_INTERVAL 200
#define TEXT_EVAL_ITERS 20
#define TEXT_BLOCK 128

/* Streams derived from the seed for evaluation, so evaluating never moves the
 * training generator (a resumed run sees the same batches and dropout masks). */
#define SEED_VAL_SET 0x9e3779b97f4a7c15ULL
#define SEED_EVAL_TRAIN 0x5851f42d4c957f2dULL
#define SEED_EVAL_VAL 0x14057b7ef767814fULL
#define SEED_ACC 0x2545f4914f6cdd1dULL
#define SEED_SAMPLE 0xbf58476d1ce4e5b9ULL
#define SEED_CHECK 0x94d049bb133111ebULL

/* ---- options ----------------------------------------------------------------- */
enum {
    O_DEVICE = 256, O_DATA, O_TASK, O_DIGITS, O_LAYERS, O_HEADS, O_KV_HEADS, O_WIDTH, O_BLOCK, O_BIAS, O_DROPOUT,
    O_BATCH, O_ACCUM, O_STEPS, O_DECAY_STEPS, O_LR, O_MIN_LR, O_WARMUP, O_BETA1, O_BETA2, O_WD, O_CLIP,
    O_EVAL_INTERVAL, O_EVAL_ITERS, O_EVAL_EXAMPLES, O_SEED, O_SAVE, O_RESUME, O_CSV, O_PLOT, O_SAMPLE, O_TEMP,
    O_TOPK, O_PROMPT, O_NO_AUTOCAST, O_NONDET, O_CHECK_CACHE, O_PASS_ACC, O_HELP, O_END
};

typedef struct {
    const char *device, *data, *task;
    int64_t digits;
    int64_t layers, heads, kv_heads, width, block;
    bool bias;
    double dropout;
    int64_t batch, accum, steps, decay_steps, warmup;
    double lr, min_lr, beta1, beta2, weight_decay, grad_clip;
    int64_t eval_interval, eval_iters, eval_examples;
    uint64_t seed;
    const char *save, *resume, *csv, *plot, *prompt;
    int64_t sample, top_k;
    double temperature, pass_acc;
    bool autocast, deterministic, check_cache_only;
    bool given[O_END - O_DEVICE]; /* set on the command line */
} config;
#define GIVEN(c, o) ((c)->given[(o) - O_DEVICE])

/* ---- the run ------------------------------------------------------------------ */
typedef struct {
    config c;
    fg_device dev;
    bool ac; /* bf16 autocast */
    td_data data;
    int64_t T; /* tokens per row */
    fg_gpt model;
    bool model_ok;
    fg_params *params, *opt_state;
    fg_optimizer *opt;
    fg_generator *g;
    int64_t step; /* optimizer steps taken */
    int64_t *x, *y;
    FILE *csv;
} run;

/* prints "train_gpt: what: <the library's last error>", returns 1 */
int tg_fail(const char *what);
/* bf16 autocast around a forward when the run uses it (CUDA) */
fg_status tg_autocast_on(const run *r);
void tg_autocast_off(const run *r);

/* ---- checkpoints (train_ckpt.c) ---- */
/* The model, the AdamW state, and in the metadata the step, the generator,
 * the config, the data identity and a checksum of the tensors; atomic. */
fg_status tg_save_checkpoint(run *r, const char *path);
/* Before building the run: the checkpoint's architecture, data and seed into
 * c; a conflicting flag is an error. Returns 0 or the exit status (2). */
int tg_resume_config(config *c, const char *path);
/* Notes on stderr for training hyperparameters that differ from the checkpoint's. */
void tg_resume_notes(const config *c, const char *path);
/* After building the model and optimizer: tensors, step, generator; checks the
 * vocabulary and the checksum. Returns 0 or the exit status (2). */
int tg_resume_state(run *r, const char *path);

/* ---- output (train_output.c) ---- */
/* KV-cache decoding vs the full forward; prints one line. 0: ok, 1: failed. */
int tg_check_cache(run *r);
/* n characters from the prompt (text data). 0 or 1 on error. */
int tg_sample_text(run *r, int64_t n);
/* The CSV as a PNG through gnuplot, or a line saying why not. */
void tg_plot(const run *r);

#endif
