/* train_gpt: trains a GPT (flashgrad/gpt.h) on a character-level text file or
 * on a built-in synthetic task, with AdamW, warmup + cosine learning rate,
 * gradient accumulation and clipping, bf16 autocast on CUDA, checkpoints that
 * resume bit for bit, a loss curve (CSV, PNG through gnuplot) and sampling
 * through the KV cache. `train_gpt --help` lists the options.
 *
 *   examples/train_gpt                   reversal task on the CPU; PASS/FAIL on accuracy
 *   examples/train_gpt --task addition   another task
 *   examples/train_gpt --data input.txt --device cuda ...   char-level language model
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <flashgrad.h>
#include "train_gpt.h"

/* Per-task steps, batch and eval interval when not given: enough for the
 * default model to PASS (measured on the CPU: reversal learns in ~40 steps,
 * sorting reaches 95% at ~250, addition at ~750 with batch 64). */
static const struct {
    int64_t steps, batch, eval_interval;
} TASK_DEFAULTS[TD_N_TASKS] = {[TD_REVERSAL] = {100, 32, 20}, [TD_SORTING] = {400, 32, 50},
                               [TD_ADDITION] = {1500, 64, 250}};

static config defaults(void)
{
    return (config){.device = "cpu", .task = "reversal", .layers = 2, .heads = 4, .width = 64, .batch = 32,
                    .accum = 1, .steps = 100, .lr = 3e-3, .warmup = 10, .beta1 = 0.9, .beta2 = 0.99,
                    .weight_decay = 0.1, .grad_clip = 1.0, .eval_interval = 20, .eval_iters = 5,
                    .eval_examples = 500, .seed = 1337, .csv = PROG ".csv", .prompt = "\n",
                    .sample = -1, .temperature = 0.8, .pass_acc = 0.95, .autocast = true, .deterministic = true};
}

static void usage(FILE *f)
{
    const config d = defaults();
    fprintf(f,
            "usage: " PROG " [--data FILE | --task NAME] [options]\n"
            "Trains a GPT (token + position embeddings, pre-norm blocks, tied head) with AdamW.\n"
            "\n"
            "data (default: --task %s)\n"
            "  --data FILE          character-level text: vocabulary = the bytes FILE uses, first 90%% train,\n"
            "                       last 10%% validation, random windows of --block tokens\n"
            "  --task NAME          a synthetic task; loss on the answer only, exact-match accuracy of greedy\n"
            "                       decoding on held-out examples:\n",
            d.task);
    for (int t = 0; t < TD_N_TASKS; t++)
        fprintf(f, "                         %-9s %s (default --digits %d)\n", td_task_name(t), td_task_help(t),
                td_task_default_digits(t));
    fprintf(f,
            "  --digits N           operand length of the task\n"
            "model\n"
            "  --layers N           transformer blocks (%lld)\n"
            "  --heads N            attention heads (%lld)\n"
            "  --kv-heads N         key/value heads, GQA when < --heads (default: --heads)\n"
            "  --width N            embedding width, a multiple of --heads (%lld)\n"
            "  --block N            context length (text %d; task: the example length - 1)\n"
            "  --bias               biases in the linears and LayerNorms (default: none, as nanoGPT)\n"
            "  --dropout P          dropout on embeddings, attention and residual branches (%g)\n"
            "training\n"
            "  --device cpu|cuda    (%s)\n"
            "  --batch N            sequences per micro-batch (%lld; addition %lld)\n"
            "  --accum N            micro-batches per step, gradient accumulation (%lld)\n"
            "  --steps N            optimizer steps (reversal %lld, sorting %lld, addition %lld; text %d)\n"
            "  --decay-steps N      the cosine reaches --min-lr here (default: --steps)\n"
            "  --lr X               peak learning rate (task %g, text %g)\n"
            "  --min-lr X           final learning rate (default: --lr / 10)\n"
            "  --warmup N           linear warmup steps (task %lld, text %d)\n"
            "  --beta1 X, --beta2 X AdamW betas (%g, %g)\n"
            "  --weight-decay X     AdamW decoupled decay, on weight matrices only (%g)\n"
            "  --grad-clip X        clip the global gradient norm to X; 0: off (%g)\n"
            "  --no-autocast        f32 matmuls on CUDA (default: bf16 autocast on CUDA; the CPU is f32)\n"
            "  --nondeterministic   CUDA: atomics in embedding/attention backward (faster; resume is then\n"
            "                       not bit-identical). Default: deterministic kernels\n"
            "  --seed N             initialisation, batches, dropout (%" PRIu64 ")\n"
            "evaluation and output\n"
            "  --eval-interval N    evaluate, log a line and save every N steps (reversal %lld, sorting %lld,\n"
            "                       addition %lld; text %d)\n"
            "  --eval-iters N       batches per loss estimate, train and val (task %lld, text %d)\n"
            "  --eval-examples N    held-out task examples for the accuracy (%lld)\n"
            "  --pass-acc X         task: PASS when the final accuracy >= X, else FAIL, exit 1 (%g)\n"
            "  --csv FILE           the curve: step, losses, accuracy, lr, ms/step, tok/s (%s; appended on --resume)\n"
            "  --plot FILE.png      loss plot through gnuplot when installed; '' for none (the CSV's name, .png)\n"
            "  --save PATH          checkpoint (safetensors: model, AdamW state, step, generator, config,\n"
            "                       vocabulary), written atomically at every evaluation and at the end\n"
            "  --resume PATH        continue from a checkpoint (architecture, data and seed come from it);\n"
            "                       with the same flags, bit-identical to an uninterrupted run\n"
            "  --sample N           after training: N characters of text from --prompt, or N task examples\n"
            "                       (default: 300 characters / 4 examples; 0: none)\n"
            "  --temperature X      sampling temperature; <= 0 greedy (%g; tasks: greedy unless given)\n"
            "  --top-k N            sample from the N most likely tokens; 0: all\n"
            "  --prompt TEXT        text prompt for --sample (default: a newline)\n"
            "  --check-cache        only check KV-cache decoding against the full forward (of a fresh or\n"
            "                       --resume'd model) and exit; the check also runs before every training\n"
            "  --help\n"
            "\n"
            "With no arguments: a small model learns to reverse 8 digits on the CPU in well under a minute\n"
            "(PASS at >= 95%% exact match).\n"
            "\n"
            "nanoGPT's shakespeare-char configuration (10.65M parameters; on a GPU):\n"
            "  " PROG " --data ../shared/data/tinyshakespeare.txt --layers 6 --heads 6 --width 384 --block 256 \\\n"
            "      --batch 64 --dropout 0.2 --lr 1e-3 --min-lr 1e-4 --warmup 100 --steps 5000 --beta2 0.99 \\\n"
            "      --eval-interval 250 --eval-iters 200 --device cuda\n"
            "\n"
            "Exit status: 0 done (task: PASS), 1 training failed or FAIL, 2 bad arguments or files.\n",
            (long long)d.layers, (long long)d.heads, (long long)d.width, TEXT_BLOCK, d.dropout, d.device,
            (long long)d.batch, (long long)TASK_DEFAULTS[TD_ADDITION].batch, (long long)d.accum,
            (long long)TASK_DEFAULTS[TD_REVERSAL].steps, (long long)TASK_DEFAULTS[TD_SORTING].steps,
            (long long)TASK_DEFAULTS[TD_ADDITION].steps, TEXT_STEPS, d.lr, TEXT_LR, (long long)d.warmup,
            TEXT_WARMUP, d.beta1, d.beta2, d.weight_decay, d.grad_clip, d.seed,
            (long long)TASK_DEFAULTS[TD_REVERSAL].eval_interval, (long long)TASK_DEFAULTS[TD_SORTING].eval_interval,
            (long long)TASK_DEFAULTS[TD_ADDITION].eval_interval, TEXT_EVAL_INTERVAL, (long long)d.eval_iters, TEXT_EVAL_ITERS, (long long)d.eval_examples,
            d.pass_acc, d.csv, d.temperature);
}

static bool parse_i64(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, PROG ": --%s: expected an integer in [%lld, %lld], got '%s'\n", flag, (long long)lo,
                (long long)hi, s);
        return false;
    }
    *out = v;
    return true;
}

static bool parse_f64(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, PROG ": --%s: expected a number in [%g, %g], got '%s'\n", flag, lo, hi, s);
        return false;
    }
    *out = v;
    return true;
}

/* 0: parsed, 1: --help printed, 2: error (message printed) */
static int parse_args(int argc, char **argv, config *c)
{
    static const struct option opts[] = {
        {"device", 1, 0, O_DEVICE}, {"data", 1, 0, O_DATA}, {"task", 1, 0, O_TASK}, {"digits", 1, 0, O_DIGITS},
        {"layers", 1, 0, O_LAYERS}, {"heads", 1, 0, O_HEADS}, {"kv-heads", 1, 0, O_KV_HEADS},
        {"width", 1, 0, O_WIDTH}, {"block", 1, 0, O_BLOCK}, {"bias", 0, 0, O_BIAS}, {"dropout", 1, 0, O_DROPOUT},
        {"batch", 1, 0, O_BATCH}, {"accum", 1, 0, O_ACCUM}, {"steps", 1, 0, O_STEPS},
        {"decay-steps", 1, 0, O_DECAY_STEPS}, {"lr", 1, 0, O_LR}, {"min-lr", 1, 0, O_MIN_LR},
        {"warmup", 1, 0, O_WARMUP}, {"beta1", 1, 0, O_BETA1}, {"beta2", 1, 0, O_BETA2},
        {"weight-decay", 1, 0, O_WD}, {"grad-clip", 1, 0, O_CLIP}, {"eval-interval", 1, 0, O_EVAL_INTERVAL},
        {"eval-iters", 1, 0, O_EVAL_ITERS}, {"eval-examples", 1, 0, O_EVAL_EXAMPLES}, {"seed", 1, 0, O_SEED},
        {"save", 1, 0, O_SAVE}, {"resume", 1, 0, O_RESUME}, {"csv", 1, 0, O_CSV}, {"plot", 1, 0, O_PLOT},
        {"sample", 1, 0, O_SAMPLE}, {"temperature", 1, 0, O_TEMP}, {"top-k", 1, 0, O_TOPK},
        {"prompt", 1, 0, O_PROMPT}, {"no-autocast", 0, 0, O_NO_AUTOCAST}, {"nondeterministic", 0, 0, O_NONDET},
        {"check-cache", 0, 0, O_CHECK_CACHE}, {"pass-acc", 1, 0, O_PASS_ACC}, {"help", 0, 0, O_HELP},
        {0, 0, 0, 0}};
    const int64_t BIG = INT64_C(1) << 40;
    int ch, li;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", opts, &li)) != -1) {
        const char *a = optarg, *n = NULL;
        for (const struct option *o = opts; o->name; o++)
            if (o->val == ch) n = o->name;
        bool ok = true;
        int64_t i64;
        if (ch >= O_DEVICE && ch < O_END) c->given[ch - O_DEVICE] = true;
        switch (ch) {
        case O_DEVICE: c->device = a; break;
        case O_DATA: c->data = a; break;
        case O_TASK: c->task = a; break;
        case O_DIGITS: ok = parse_i64(n, a, 1, 64, &c->digits); break;
        case O_LAYERS: ok = parse_i64(n, a, 1, 1024, &c->layers); break;
        case O_HEADS: ok = parse_i64(n, a, 1, 1024, &c->heads); break;
        case O_KV_HEADS: ok = parse_i64(n, a, 1, 1024, &c->kv_heads); break;
        case O_WIDTH: ok = parse_i64(n, a, 1, 1 << 16, &c->width); break;
        case O_BLOCK: ok = parse_i64(n, a, 1, 1 << 20, &c->block); break;
        case O_BIAS: c->bias = true; break;
        case O_DROPOUT: ok = parse_f64(n, a, 0, 0.99, &c->dropout); break;
        case O_BATCH: ok = parse_i64(n, a, 1, 1 << 20, &c->batch); break;
        case O_ACCUM: ok = parse_i64(n, a, 1, 1 << 20, &c->accum); break;
        case O_STEPS: ok = parse_i64(n, a, 0, BIG, &c->steps); break;
        case O_DECAY_STEPS: ok = parse_i64(n, a, 0, BIG, &c->decay_steps); break;
        case O_LR: ok = parse_f64(n, a, 0, 10, &c->lr); break;
        case O_MIN_LR: ok = parse_f64(n, a, 0, 10, &c->min_lr); break;
        case O_WARMUP: ok = parse_i64(n, a, 0, BIG, &c->warmup); break;
        case O_BETA1: ok = parse_f64(n, a, 0, 0.999999, &c->beta1); break;
        case O_BETA2: ok = parse_f64(n, a, 0, 0.999999, &c->beta2); break;
        case O_WD: ok = parse_f64(n, a, 0, 10, &c->weight_decay); break;
        case O_CLIP: ok = parse_f64(n, a, 0, 1e30, &c->grad_clip); break;
        case O_EVAL_INTERVAL: ok = parse_i64(n, a, 1, BIG, &c->eval_interval); break;
        case O_EVAL_ITERS: ok = parse_i64(n, a, 1, 1 << 20, &c->eval_iters); break;
        case O_EVAL_EXAMPLES: ok = parse_i64(n, a, 1, 1 << 20, &c->eval_examples); break;
        case O_SEED: ok = parse_i64(n, a, 0, INT64_MAX, &i64), c->seed = (uint64_t)i64; break;
        case O_SAVE: c->save = a; break;
        case O_RESUME: c->resume = a; break;
        case O_CSV: c->csv = a; break;
        case O_PLOT: c->plot = a; break;
        case O_SAMPLE: ok = parse_i64(n, a, 0, 1 << 24, &c->sample); break;
        case O_TEMP: ok = parse_f64(n, a, -1e30, 1e30, &c->temperature); break;
        case O_TOPK: ok = parse_i64(n, a, 0, 1 << 20, &c->top_k); break;
        case O_PROMPT: c->prompt = a; break;
        case O_NO_AUTOCAST: c->autocast = false; break;
        case O_NONDET: c->deterministic = false; break;
        case O_CHECK_CACHE: c->check_cache_only = true; break;
        case O_PASS_ACC: ok = parse_f64(n, a, 0, 1, &c->pass_acc); break;
        case O_HELP: case 'h': usage(stdout); return 1;
        default:
            if (optopt >= O_DEVICE && optopt < O_END)
                fprintf(stderr, PROG ": option '%s' needs a value\n", argv[optind - 1]);
            else
                fprintf(stderr, PROG ": unknown option '%s'\n", argv[optind - 1]);
            fprintf(stderr, "Try '" PROG " --help'.\n");
            return 2;
        }
        if (!ok) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s'\nTry '" PROG " --help'.\n", argv[optind]);
        return 2;
    }
    if (strcmp(c->device, "cpu") && strcmp(c->device, "cuda")) {
        fprintf(stderr, PROG ": --device: '%s' is not cpu or cuda\n", c->device);
        return 2;
    }
    if (GIVEN(c, O_DATA) && GIVEN(c, O_TASK)) {
        fprintf(stderr, PROG ": --data and --task exclude each other\n");
        return 2;
    }
    if (GIVEN(c, O_DATA)) c->task = NULL;
    if (c->task && td_task_from_name(c->task) < 0) {
        fprintf(stderr, PROG ": --task: unknown task '%s' (", c->task);
        for (int t = 0; t < TD_N_TASKS; t++) fprintf(stderr, "%s%s", t ? ", " : "", td_task_name(t));
        fprintf(stderr, ")\n");
        return 2;
    }
    return 0;
}



static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int tg_fail(const char *what)
{
    fprintf(stderr, PROG ": %s: %s\n", what, fg_last_error());
    return 1;
}

/* x, y of a batch as tensors on the device */
static fg_status batch_tensors(run *r, int split, fg_generator *g, fg_tensor **xi, fg_tensor **yi)
{
    const int64_t B = r->c.batch, T = r->T;
    fg_status st = td_batch(&r->data, split, B, T, g, r->x, r->y);
    if (st != FG_OK) return st;
    *xi = fg_from_data(r->x, FG_SHAPE(B, T), FG_I64, r->dev);
    *yi = fg_from_data(r->y, FG_SHAPE(B, T), FG_I64, r->dev);
    return *xi && *yi ? FG_OK : fg_last_status();
}

fg_status tg_autocast_on(const run *r) { return r->ac ? fg_autocast_begin(FG_BF16) : FG_OK; }
void tg_autocast_off(const run *r)
{
    if (r->ac) fg_autocast_end();
}

/* nanoGPT's estimate_loss: the mean eval-mode loss of eval_iters batches of a
 * split, drawn from a stream of their own (the same batches at every eval). */
static fg_status estimate_loss(run *r, int split, double *out)
{
    fg_generator *g = fg_generator_new(r->c.seed ^ (split ? SEED_EVAL_VAL : SEED_EVAL_TRAIN));
    if (!g) return fg_last_status();
    const bool prev = fg_set_grad_enabled(false);
    fg_status st = FG_OK;
    double sum = 0;
    for (int64_t k = 0; st == FG_OK && k < r->c.eval_iters; k++) {
        fg_scope *s = fg_scope_begin();
        fg_tensor *xi = NULL, *yi = NULL, *loss = NULL;
        st = s ? batch_tensors(r, split, g, &xi, &yi) : fg_last_status();
        if (st == FG_OK && (st = tg_autocast_on(r)) == FG_OK) {
            fg_gpt_forward(&r->model, xi, yi, false, NULL, &loss);
            tg_autocast_off(r);
            if (!loss) st = fg_last_status();
        }
        if (st == FG_OK) sum += fg_item(loss);
        if (s) fg_scope_end(s);
    }
    fg_set_grad_enabled(prev);
    fg_generator_free(g);
    *out = sum / (double)r->c.eval_iters;
    return st;
}

static fg_status task_accuracy(run *r, double *acc)
{
    fg_generator *g = fg_generator_new(r->c.seed ^ SEED_ACC);
    int64_t right = 0, n = r->c.eval_examples < r->data.n_val ? r->c.eval_examples : r->data.n_val;
    fg_status st = g ? tg_autocast_on(r) : fg_last_status();
    if (st == FG_OK) {
        st = td_accuracy(&r->data, &r->model, n, 500, g, &right);
        tg_autocast_off(r);
    }
    fg_generator_free(g);
    *acc = (double)right / (double)n;
    return st;
}

/* the rate of step `step` (0-based): nanoGPT's warmup + cosine */
static double scheduled_lr(const config *c, int64_t step)
{
    return fg_lr_warmup_cosine(step, c->lr, c->min_lr, c->warmup, c->decay_steps);
}

/* One training step: accum micro-batches, clipping, AdamW at the scheduled rate. */
static fg_status train_step(run *r)
{
    const config *c = &r->c;
    fg_status st = fg_optimizer_set_lr(r->opt, scheduled_lr(c, r->step));
    if (st == FG_OK) st = fg_optimizer_zero_grad(r->opt);
    for (int64_t a = 0; st == FG_OK && a < c->accum; a++) {
        fg_scope *s = fg_scope_begin(); /* everything of the micro-batch is freed at its end */
        fg_tensor *xi = NULL, *yi = NULL, *loss = NULL;
        st = s ? batch_tensors(r, 0, r->g, &xi, &yi) : fg_last_status();
        if (st == FG_OK && (st = tg_autocast_on(r)) == FG_OK) {
            fg_gpt_forward(&r->model, xi, yi, true, r->g, &loss);
            tg_autocast_off(r);
            if (!loss) st = fg_last_status();
        }
        if (st == FG_OK) st = fg_backward(c->accum > 1 ? fg_mul_scalar(loss, 1.0 / (double)c->accum) : loss);
        if (s) fg_scope_end(s);
    }
    if (st == FG_OK && c->grad_clip > 0) {
        double norm;
        if ((st = fg_clip_grad_norm(r->params, c->grad_clip, &norm)) != FG_OK)
            fprintf(stderr, PROG ": step %lld: gradient norm %g\n", (long long)r->step + 1, norm);
    }
    if (st == FG_OK) st = fg_optimizer_step(r->opt);
    if (st == FG_OK) r->step++;
    return st;
}


/* ---- output --------------------------------------------------------------------- */
static void fmt_duration(char *b, size_t n, double s)
{
    if (!isfinite(s) || s < 0) s = 0;
    const long t = lround(s);
    if (t >= 3600) snprintf(b, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(b, n, "%ld:%02ld", t / 60, t % 60);
}

static volatile sig_atomic_t interrupted = 0;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* ---- main ----------------------------------------------------------------------- */
int main(int argc, char **argv)
{
    const double t_start = now_s();
    run R = {.c = defaults()}, *r = &R;
    config *c = &r->c;
    int rc = parse_args(argc, argv, c);
    if (rc) return rc == 1 ? 0 : 2;
    if (c->resume && (rc = tg_resume_config(c, c->resume))) return rc;

    /* the config, completed */
    if (!c->task && !c->data) c->task = defaults().task;
    if (c->data) {
        if (!GIVEN(c, O_STEPS)) c->steps = TEXT_STEPS;
        if (!GIVEN(c, O_LR)) c->lr = TEXT_LR;
        if (!GIVEN(c, O_WARMUP)) c->warmup = TEXT_WARMUP;
        if (!GIVEN(c, O_EVAL_INTERVAL)) c->eval_interval = TEXT_EVAL_INTERVAL;
        if (!GIVEN(c, O_EVAL_ITERS)) c->eval_iters = TEXT_EVAL_ITERS;
    }
    if (c->task) {
        const int t = td_task_from_name(c->task);
        if (!c->digits) c->digits = td_task_default_digits(t);
        if (!GIVEN(c, O_STEPS)) c->steps = TASK_DEFAULTS[t].steps;
        if (!GIVEN(c, O_BATCH)) c->batch = TASK_DEFAULTS[t].batch;
        if (!GIVEN(c, O_EVAL_INTERVAL)) c->eval_interval = TASK_DEFAULTS[t].eval_interval;
    }
    if (!c->kv_heads) c->kv_heads = c->heads;
    if (!GIVEN(c, O_MIN_LR)) c->min_lr = c->lr / 10;
    if (!GIVEN(c, O_DECAY_STEPS) && !c->decay_steps) c->decay_steps = c->steps;
    if (c->task && !GIVEN(c, O_TEMP)) c->temperature = 0;
    if (c->width % c->heads || c->heads % c->kv_heads) {
        fprintf(stderr, PROG ": --width %lld must be a multiple of --heads %lld, and --heads of --kv-heads %lld\n",
                (long long)c->width, (long long)c->heads, (long long)c->kv_heads);
        return 2;
    }
    static char plot_path[4096]; /* default: the CSV's name with .png */
    if (!GIVEN(c, O_PLOT) && c->csv && *c->csv) {
        const char *dot = strrchr(c->csv, '.'), *slash = strrchr(c->csv, '/');
        const int keep = dot && (!slash || dot > slash) ? (int)(dot - c->csv) : (int)strlen(c->csv);
        snprintf(plot_path, sizeof plot_path, "%.*s.png", keep, c->csv);
        c->plot = plot_path;
    }
    if (c->resume) tg_resume_notes(c, c->resume);
    if (c->save) { /* fail now, not at the first evaluation */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", c->save);
        char *slash = strrchr(dir, '/');
        if (slash) *(slash == dir ? slash + 1 : slash) = 0;
        else snprintf(dir, sizeof dir, ".");
        if (!*c->save || access(dir, W_OK) != 0) {
            fprintf(stderr, PROG ": --save %s: cannot write to directory %s: %s\n", c->save, dir,
                    *c->save ? strerror(errno) : "empty path");
            return 2;
        }
    }
    r->dev = strcmp(c->device, "cuda") ? FG_CPU : FG_CUDA;
    if (r->dev == FG_CUDA && !fg_cuda_available()) {
        char desc[256];
        fprintf(stderr, PROG ": --device cuda: %s\n", fg_cuda_device_description(desc, sizeof desc));
        return 2;
    }
    r->ac = r->dev == FG_CUDA && c->autocast;
    if (r->dev == FG_CUDA) fg_set_deterministic(c->deterministic);

    char err[512];
    if (c->data) {
        if (!c->block) c->block = TEXT_BLOCK;
        if (!td_load_text(&r->data, c->data, c->block, err, sizeof err)) {
            fprintf(stderr, PROG ": --data: %s\n", err);
            return 2;
        }
        for (const char *q = c->prompt; *q; q++)
            if (r->data.tok_of[(unsigned char)*q] < 0) {
                fprintf(stderr, PROG ": --prompt: byte 0x%02x is not in the vocabulary of %s\n", (unsigned char)*q,
                        c->data);
                td_free(&r->data);
                return 2;
            }
    } else if (!td_make_task(&r->data, td_task_from_name(c->task), (int)c->digits, c->eval_examples,
                             c->seed ^ SEED_VAL_SET, err, sizeof err)) {
        fprintf(stderr, PROG ": --task: %s\n", err);
        return 2;
    } else if (!c->block) {
        c->block = r->data.seq_len - 1;
    } else if (c->block < r->data.seq_len - 1) {
        fprintf(stderr, PROG ": --block %lld is shorter than the task's %lld-token rows\n", (long long)c->block,
                (long long)(r->data.seq_len - 1));
        td_free(&r->data);
        return 2;
    }
    r->T = td_row_len(&r->data, c->block);

    /* model, registry, optimizer, generator; every failure below goes to done */
    rc = 1;
    const fg_gpt_config mc = {.vocab_size = r->data.vocab_size, .block_size = c->block, .n_layer = c->layers,
                              .n_head = c->heads, .n_kv_head = c->kv_heads, .n_embd = c->width,
                              .dropout = c->dropout, .bias = c->bias};
    const fg_adamw_opts ao = {.lr = c->lr, .beta1 = c->beta1, .beta2 = c->beta2, .eps = 1e-8,
                              .weight_decay = c->weight_decay};
    r->x = malloc((size_t)(c->batch * r->T) * sizeof *r->x);
    r->y = malloc((size_t)(c->batch * r->T) * sizeof *r->y);
    if (!r->x || !r->y) {
        fprintf(stderr, PROG ": out of memory for a batch of %lld x %lld\n", (long long)c->batch, (long long)r->T);
        goto done;
    }
    if (!(r->g = fg_generator_new(c->seed))) { rc = tg_fail("generator"); goto done; }
    if (fg_gpt_init(&r->model, &mc, r->g, r->dev, FG_F32) != FG_OK) { rc = tg_fail("model"); goto done; }
    r->model_ok = true;
    if (!(r->params = fg_params_new()) || fg_gpt_params(&r->model, NULL, r->params) != FG_OK ||
        !(r->opt = fg_adamw_new(r->params, &ao)) || !(r->opt_state = fg_params_new()) ||
        fg_optimizer_state(r->opt, r->opt_state) != FG_OK) {
        rc = tg_fail("optimizer");
        goto done;
    }
    if (c->resume && (rc = tg_resume_state(r, c->resume))) goto done;
    rc = 1;

    /* banner */
    if (r->data.kind == TD_TEXT)
        printf("data: %s, %lld characters, vocabulary %d, %lld train / %lld val\n", c->data,
               (long long)r->data.n_tokens, r->data.vocab_size, (long long)r->data.n_train,
               (long long)(r->data.n_tokens - r->data.n_train));
    else
        printf("task: %s, %lld digits: %s; %lld-token examples, loss on the %lld answer tokens, %lld held out\n",
               c->task, (long long)c->digits, td_task_help(r->data.task), (long long)r->data.seq_len,
               (long long)(r->data.seq_len - r->data.prompt_len), (long long)r->data.n_val);
    char desc[256] = "cpu";
    if (r->dev == FG_CUDA) fg_cuda_device_description(desc, sizeof desc);
    printf("model: %lld layers, %lld heads (%lld kv), width %lld, block %lld, vocab %d, %s, %.2fM parameters; "
           "%s, %s%s\n",
           (long long)c->layers, (long long)c->heads, (long long)c->kv_heads, (long long)c->width, (long long)c->block,
           r->data.vocab_size, c->bias ? "biases" : "no biases", (double)fg_gpt_num_params(&r->model, true) / 1e6,
           desc, r->ac ? "bf16 autocast" : "f32", r->dev == FG_CUDA && c->deterministic ? ", deterministic" : "");
    printf("training: steps %lld of %lld x %lld x %lld tokens, AdamW lr %g -> %g (warmup %lld, cosine to step %lld), "
           "betas %g %g, weight decay %g, clip %g, dropout %g, seed %" PRIu64 "\n",
           (long long)c->steps, (long long)c->accum, (long long)c->batch, (long long)r->T, c->lr, c->min_lr,
           (long long)c->warmup, (long long)c->decay_steps, c->beta1, c->beta2, c->weight_decay, c->grad_clip,
           c->dropout, c->seed);
    if (c->resume) printf("resumed from %s at step %lld\n", c->resume, (long long)r->step);
    fflush(stdout);

    if ((rc = tg_check_cache(r)) || c->check_cache_only) goto done;
    rc = 1;

    if (c->csv && *c->csv) {
        struct stat sb;
        const bool append = c->resume && stat(c->csv, &sb) == 0 && sb.st_size > 0;
        if (!(r->csv = fopen(c->csv, append ? "a" : "w"))) {
            fprintf(stderr, PROG ": --csv %s: %s\n", c->csv, strerror(errno));
            rc = 2;
            goto done;
        }
        if (!append) fprintf(r->csv, "step,train_loss,val_loss,accuracy,lr,ms_per_step,tok_per_s,elapsed_s\n");
    }
    struct sigaction sa = {.sa_handler = on_sigint, .sa_flags = SA_RESETHAND};
    sigaction(SIGINT, &sa, NULL);

    const int64_t start = r->step, tok_per_step = c->accum * c->batch * r->T;
    double t_mark = now_s(), t_train = 0, ms = NAN, last_acc = NAN, best_val = INFINITY;
    const double t_loop = t_mark;
    int64_t best_step = -1;
    int64_t step_mark = start;
    fg_memory_stats ms0 = {0};
    for (;;) {
        const bool last = r->step >= c->steps || interrupted;
        /* at the start (not when resuming: the checkpoint's run logged it), every
         * eval_interval steps, and at the end */
        const bool eval = last || (r->step == start ? !c->resume : r->step % c->eval_interval == 0);
        if (eval) {
            if (r->dev == FG_CUDA && fg_cuda_synchronize() != FG_OK) { rc = tg_fail("cuda"); goto done; }
            const double t_now = now_s();
            if (r->step > step_mark) {
                t_train += t_now - t_mark;
                ms = 1e3 * (t_now - t_mark) / (double)(r->step - step_mark);
            }
            double tl, vl, acc = NAN;
            if (estimate_loss(r, 0, &tl) != FG_OK || estimate_loss(r, 1, &vl) != FG_OK) {
                rc = tg_fail("eval");
                goto done;
            }
            if (r->data.kind == TD_TASK && task_accuracy(r, &acc) != FG_OK) { rc = tg_fail("accuracy"); goto done; }
            if (vl < best_val) best_val = vl, best_step = r->step;
            last_acc = acc;
            const double lr = r->step > start ? fg_optimizer_get_lr(r->opt) : scheduled_lr(c, r->step);
            char eta[32], accs[32] = "";
            fmt_duration(eta, sizeof eta, (double)(c->steps - r->step) * ms / 1e3);
            if (!isnan(acc)) snprintf(accs, sizeof accs, " | acc %5.1f%%", 100 * acc);
            printf("step %*lld/%lld | train %.4f | val %.4f%s | lr %.2e | ", (int)snprintf(NULL, 0, "%lld",
                   (long long)c->steps), (long long)r->step, (long long)c->steps, tl, vl, accs, lr);
            if (isnan(ms)) printf("     - ms/step |        - tok/s | ETA     -\n");
            else printf("%6.1f ms/step | %8.0f tok/s | ETA %s\n", ms, (double)tok_per_step / ms * 1e3, eta);
            fflush(stdout);
            if (r->csv) {
                fprintf(r->csv, "%lld,%.6f,%.6f,", (long long)r->step, tl, vl);
                if (!isnan(acc)) fprintf(r->csv, "%.6f", acc);
                fprintf(r->csv, ",%.6e,", lr);
                if (!isnan(ms)) fprintf(r->csv, "%.3f,%.1f", ms, (double)tok_per_step / ms * 1e3);
                else fprintf(r->csv, ",");
                fprintf(r->csv, ",%.3f\n", t_train);
                fflush(r->csv);
            }
            if (c->save && r->step > start && tg_save_checkpoint(r, c->save) != FG_OK) {
                rc = tg_fail("--save");
                goto done;
            }
            t_mark = now_s();
            step_mark = r->step;
        }
        if (last) break;
        if (train_step(r) != FG_OK) { rc = tg_fail("training step"); goto done; }
        if (r->step == start + 1) fg_get_memory_stats(&ms0);
    }
    if (interrupted) printf("interrupted at step %lld%s\n", (long long)r->step, c->save ? " (saved)" : "");
    if (r->step > start) {
        fg_memory_stats ms1;
        fg_get_memory_stats(&ms1);
        printf("trained steps %lld..%lld in %.1f s (%.1f ms/step); live tensors after the first step %lld, at the "
               "end %lld\n", (long long)start, (long long)r->step, t_train, 1e3 * t_train / (double)(r->step - start),
               (long long)ms0.live_tensors, (long long)ms1.live_tensors);
        const double wall = now_s() - t_loop;
        printf("best val loss %.4f (step %lld); wall time %.1f s (%.1f s training, %.1f s evaluation%s)\n", best_val,
               (long long)best_step, wall, t_train, wall - t_train, c->save ? " and checkpoints" : "");
    }
    if (c->save && r->step > start) printf("checkpoint: %s (step %lld)\n", c->save, (long long)r->step);
    if (r->csv) {
        fclose(r->csv);
        r->csv = NULL;
        tg_plot(r);
    }
    const int64_t n_sample = c->sample >= 0 ? c->sample : r->data.kind == TD_TEXT ? 300 : 4;
    if (n_sample > 0 && r->data.kind == TD_TEXT && (rc = tg_sample_text(r, n_sample))) goto done;
    if (n_sample > 0 && r->data.kind == TD_TASK) {
        fg_generator *g = fg_generator_new(c->seed ^ SEED_SAMPLE);
        printf("held-out examples (%s):\n", c->temperature > 0 ? "sampled" : "greedy");
        fg_status st = g ? tg_autocast_on(r) : fg_last_status();
        if (st == FG_OK) {
            st = td_show_examples(&r->data, &r->model, n_sample, c->temperature, c->top_k, g, stdout);
            tg_autocast_off(r);
        }
        fg_generator_free(g);
        if (st != FG_OK) { rc = tg_fail("examples"); goto done; }
    }
    rc = interrupted ? 130 : 0;
    if (r->data.kind == TD_TASK) {
        const bool pass = last_acc >= c->pass_acc;
        printf("final exact-match accuracy %.1f%% on %lld held-out examples after %lld steps (%.1f s in all): %s "
               "(threshold %.0f%%)\n",
               100 * last_acc, (long long)(c->eval_examples < r->data.n_val ? c->eval_examples : r->data.n_val),
               (long long)r->step, now_s() - t_start, pass ? "PASS" : "FAIL", 100 * c->pass_acc);
        if (!pass && !rc) rc = 1;
    }
done:
    if (r->csv) fclose(r->csv);
    fg_optimizer_free(r->opt);
    fg_params_free(r->opt_state);
    fg_params_free(r->params);
    if (r->model_ok) fg_gpt_free(&r->model);
    fg_generator_free(r->g);
    td_free(&r->data);
    free(r->x);
    free(r->y);
    return rc;
}

