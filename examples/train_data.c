/* Data for examples/train_gpt (see train_data.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "train_data.h"

/* ---- tasks ------------------------------------------------------------------
 * Operands are `digits` random decimal digits (leading zeros allowed, so every
 * example of a task has the same length). Tokens 0..9 are the digits.
 *   reversal   3141>1413            the digits, '>', the digits reversed
 *   sorting    3141>1134            the digits, '>', the digits in ascending order
 *   addition   123+459=2850         a, '+', b, '=', a + b with digits + 1 digits,
 *                                   least significant first (123 + 459 = 582 -> "2850")
 * The answer is written least significant digit first, as in the small-transformer
 * arithmetic literature: each answer digit then depends on digits already seen. */
static const struct {
    const char *name, *vocab, *help;
    int default_digits;
} TASKS[TD_N_TASKS] = {
    {"reversal", "0123456789>", "reverse the digits:  3141>1413", 8},
    {"sorting", "0123456789>", "sort the digits:  3141>1134", 8},
    {"addition", "0123456789+=", "add, sum written least significant digit first:  123+459=2850", 3},
};

const char *td_task_name(td_task t) { return (unsigned)t < TD_N_TASKS ? TASKS[t].name : NULL; }
const char *td_task_help(td_task t) { return (unsigned)t < TD_N_TASKS ? TASKS[t].help : NULL; }
int td_task_default_digits(td_task t) { return (unsigned)t < TD_N_TASKS ? TASKS[t].default_digits : 0; }

int td_task_from_name(const char *name)
{
    for (int i = 0; name && i < TD_N_TASKS; i++)
        if (!strcmp(name, TASKS[i].name)) return i;
    return -1;
}

static void set_vocab(td_data *d, const unsigned char *bytes, int n)
{
    d->vocab_size = n;
    memcpy(d->vocab, bytes, (size_t)n);
    for (int i = 0; i < 256; i++) d->tok_of[i] = -1;
    for (int i = 0; i < n; i++) d->tok_of[bytes[i]] = i;
}

/* random words an example needs */
static int64_t words_per_example(const td_data *d) { return d->task == TD_ADDITION ? 2 * d->digits : d->digits; }

/* example tokens from its random digits w */
static void make_example(const td_data *d, const int64_t *w, int64_t *seq)
{
    const int L = d->digits;
    if (d->task == TD_ADDITION) {
        for (int i = 0; i < L; i++) seq[i] = w[i], seq[L + 1 + i] = w[L + i];
        seq[L] = 10;         /* '+' */
        seq[2 * L + 1] = 11; /* '=' */
        int carry = 0;
        for (int i = 0; i < L; i++) { /* from the least significant digit */
            const int s = (int)w[L - 1 - i] + (int)w[2 * L - 1 - i] + carry;
            seq[2 * L + 2 + i] = s % 10;
            carry = s / 10;
        }
        seq[3 * L + 2] = carry;
        return;
    }
    for (int i = 0; i < L; i++) seq[i] = w[i];
    seq[L] = 10; /* '>' */
    if (d->task == TD_REVERSAL) {
        for (int i = 0; i < L; i++) seq[L + 1 + i] = w[L - 1 - i];
    } else { /* sorting: counting sort */
        int count[10] = {0}, k = L + 1;
        for (int i = 0; i < L; i++) count[w[i]]++;
        for (int v = 0; v < 10; v++)
            while (count[v]--) seq[k++] = v;
    }
}

/* FNV-1a of the prompt tokens, never 0 (0 marks an empty slot) */
static uint64_t prompt_key(const td_data *d, const int64_t *seq)
{
    uint64_t h = 1469598103934665603ULL;
    for (int64_t i = 0; i < d->prompt_len; i++) h = (h ^ (uint64_t)seq[i]) * 1099511628211ULL;
    return h ? h : 1;
}

static bool is_held_out(const td_data *d, uint64_t key)
{
    for (size_t i = key & (d->val_cap - 1);; i = (i + 1) & (d->val_cap - 1)) {
        if (d->val_keys[i] == key) return true;
        if (!d->val_keys[i]) return false;
    }
}

static void hold_out(td_data *d, uint64_t key)
{
    size_t i = key & (d->val_cap - 1);
    while (d->val_keys[i] && d->val_keys[i] != key) i = (i + 1) & (d->val_cap - 1);
    d->val_keys[i] = key;
}

/* n integers uniform in [lo, hi) from g, on the host */
static fg_status draw(fg_generator *g, int64_t lo, int64_t hi, int64_t n, int64_t *out)
{
    fg_scope *s = fg_scope_begin();
    if (!s) return fg_last_status();
    fg_tensor *t = fg_randint(g, lo, hi, FG_SHAPE(n), FG_I64, FG_CPU);
    fg_status st = t ? fg_copy_to_host(t, out, (size_t)n * sizeof *out) : fg_last_status();
    fg_scope_end(s);
    return st;
}

bool td_make_task(td_data *d, td_task task, int digits, int64_t n_val, uint64_t val_seed, char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
    if ((unsigned)task >= TD_N_TASKS) return snprintf(err, errlen, "unknown task %d", (int)task), false;
    d->kind = TD_TASK;
    d->task = task;
    d->digits = digits;
    set_vocab(d, (const unsigned char *)TASKS[task].vocab, (int)strlen(TASKS[task].vocab));
    d->prompt_len = task == TD_ADDITION ? 2 * digits + 2 : digits + 1;
    d->seq_len = task == TD_ADDITION ? 3 * digits + 3 : 2 * digits + 1;
    /* the held-out set must leave most examples for training: 10^words >= 20 n_val */
    const int64_t W = words_per_example(d);
    double space = 1;
    for (int64_t i = 0; i < W && space < 1e18; i++) space *= 10;
    if (space < 20.0 * (double)n_val) {
        snprintf(err, errlen, "%s with %d digits has only %.0f distinct examples, too few to hold out %lld "
                 "(use more --digits or fewer --eval-examples)", TASKS[task].name, digits, space, (long long)n_val);
        return false;
    }
    d->n_val = n_val;
    d->val_cap = 16;
    while (d->val_cap < 2 * (size_t)n_val) d->val_cap *= 2;
    d->val = malloc((size_t)(n_val * d->seq_len) * sizeof *d->val);
    d->val_keys = calloc(d->val_cap, sizeof *d->val_keys);
    int64_t *w = malloc((size_t)(n_val * W) * sizeof *w);
    fg_generator *g = fg_generator_new(val_seed);
    fg_status st = d->val && d->val_keys && w && g ? draw(g, 0, 10, n_val * W, w) : FG_ERR_OOM;
    for (int64_t i = 0; st == FG_OK && i < n_val; i++) {
        make_example(d, w + i * W, d->val + i * d->seq_len);
        hold_out(d, prompt_key(d, d->val + i * d->seq_len));
    }
    free(w);
    fg_generator_free(g);
    if (st != FG_OK) {
        snprintf(err, errlen, "making the held-out set: %s", fg_last_error());
        td_free(d);
        return false;
    }
    return true;
}

bool td_load_text(td_data *d, const char *path, int64_t block, char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
    d->kind = TD_TEXT;
    FILE *f = fopen(path, "rb");
    if (!f) return snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno)), false;
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap) {
            unsigned char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    const bool rd_err = ferror(f);
    fclose(f);
    if (!buf) return snprintf(err, errlen, "%s: out of memory", path), false;
    if (rd_err) {
        free(buf);
        return snprintf(err, errlen, "reading %s failed", path), false;
    }
    /* the bytes the file uses, in byte order (nanoGPT: sorted(set(text))) */
    bool used[256] = {false};
    for (size_t i = 0; i < n; i++) used[buf[i]] = true;
    unsigned char v[256];
    int nv = 0;
    for (int c = 0; c < 256; c++)
        if (used[c]) v[nv++] = (unsigned char)c;
    set_vocab(d, v, nv);
    const int64_t n_train = (int64_t)((double)n * 0.9); /* nanoGPT: int(n * 0.9) */
    if (n_train < block + 1 || (int64_t)n - n_train < block + 1) {
        free(buf);
        snprintf(err, errlen, "%s has %zu bytes: its 90/10 train/val split needs at least %lld in each part for "
                 "--block %lld", path, n, (long long)(block + 1), (long long)block);
        return false;
    }
    if (!(d->tokens = malloc(n * sizeof *d->tokens))) {
        free(buf);
        return snprintf(err, errlen, "%s: out of memory", path), false;
    }
    for (size_t i = 0; i < n; i++) d->tokens[i] = d->tok_of[buf[i]];
    free(buf);
    d->n_tokens = (int64_t)n;
    d->n_train = n_train;
    return true;
}

void td_free(td_data *d)
{
    if (!d) return;
    free(d->tokens);
    free(d->val);
    free(d->val_keys);
    memset(d, 0, sizeof *d);
}

int64_t td_row_len(const td_data *d, int64_t block) { return d->kind == TD_TEXT ? block : d->seq_len - 1; }

fg_status td_batch(const td_data *d, int split, int64_t B, int64_t T, fg_generator *g, int64_t *x, int64_t *y)
{
    fg_status st = FG_OK;
    if (d->kind == TD_TEXT) {
        const int64_t base = split ? d->n_train : 0, len = split ? d->n_tokens - d->n_train : d->n_train;
        int64_t *off = malloc((size_t)B * sizeof *off);
        if (!off) return FG_ERR_OOM;
        st = draw(g, 0, len - T, B, off); /* windows [o, o + T] inside the split */
        for (int64_t b = 0; st == FG_OK && b < B; b++)
            for (int64_t t = 0; t < T; t++) {
                x[b * T + t] = d->tokens[base + off[b] + t];
                y[b * T + t] = d->tokens[base + off[b] + t + 1];
            }
        free(off);
        return st;
    }
    const int64_t L = d->seq_len, W = words_per_example(d);
    int64_t *seq = malloc((size_t)(B * L) * sizeof *seq), *w = malloc((size_t)(B * W) * sizeof *w);
    if (!seq || !w) st = FG_ERR_OOM;
    if (st == FG_OK && split) { /* held-out examples */
        st = draw(g, 0, d->n_val, B, w);
        for (int64_t b = 0; st == FG_OK && b < B; b++) memcpy(seq + b * L, d->val + w[b] * L, (size_t)L * sizeof *seq);
    } else if (st == FG_OK) { /* fresh examples, redrawn while held out */
        st = draw(g, 0, 10, B * W, w);
        for (int64_t b = 0; st == FG_OK && b < B; b++) {
            make_example(d, w + b * W, seq + b * L);
            while (st == FG_OK && is_held_out(d, prompt_key(d, seq + b * L)))
                if ((st = draw(g, 0, 10, W, w + b * W)) == FG_OK) make_example(d, w + b * W, seq + b * L);
        }
    }
    for (int64_t b = 0; st == FG_OK && b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            x[b * T + t] = seq[b * L + t];
            y[b * T + t] = t + 1 >= d->prompt_len ? seq[b * L + t + 1] : -1; /* loss on the answer only */
        }
    free(seq);
    free(w);
    return st;
}

/* Decodes the answers of held-out examples [i0, i0 + n) into ans (n * answer length). */
static fg_status decode(const td_data *d, const fg_gpt *m, int64_t i0, int64_t n, double temperature, int64_t top_k,
                        fg_generator *gen, int64_t *ans)
{
    const int64_t P = d->prompt_len, A = d->seq_len - P;
    int64_t *p = malloc((size_t)(n * P) * sizeof *p), *out = malloc((size_t)(n * d->seq_len) * sizeof *out);
    fg_scope *s = p && out ? fg_scope_begin() : NULL;
    fg_status st = s ? FG_OK : FG_ERR_OOM;
    if (st == FG_OK) {
        for (int64_t i = 0; i < n; i++) memcpy(p + i * P, d->val + (i0 + i) * d->seq_len, (size_t)P * sizeof *p);
        fg_tensor *prompt = fg_from_data(p, FG_SHAPE(n, P), FG_I64, fg_device_of(m->wte.weight));
        fg_tensor *gen_out = prompt ? fg_gpt_generate(m, prompt, A, temperature, top_k, gen) : NULL;
        st = gen_out ? fg_copy_to_host(gen_out, out, (size_t)(n * d->seq_len) * sizeof *out) : fg_last_status();
        for (int64_t i = 0; st == FG_OK && i < n; i++)
            memcpy(ans + i * A, out + i * d->seq_len + P, (size_t)A * sizeof *ans);
    }
    if (s) fg_scope_end(s);
    free(p);
    free(out);
    return st;
}

fg_status td_accuracy(const td_data *d, const fg_gpt *m, int64_t n, int64_t B, fg_generator *gen, int64_t *correct)
{
    *correct = 0;
    if (n > d->n_val) n = d->n_val;
    const int64_t P = d->prompt_len, A = d->seq_len - P;
    int64_t *ans = malloc((size_t)(B * A) * sizeof *ans);
    fg_status st = ans ? FG_OK : FG_ERR_OOM;
    for (int64_t i0 = 0; st == FG_OK && i0 < n; i0 += B) {
        const int64_t nb = n - i0 < B ? n - i0 : B;
        if ((st = decode(d, m, i0, nb, 0.0, 0, gen, ans)) != FG_OK) break;
        for (int64_t i = 0; i < nb; i++)
            *correct += !memcmp(ans + i * A, d->val + (i0 + i) * d->seq_len + P, (size_t)A * sizeof *ans);
    }
    free(ans);
    return st;
}

static void put_tokens(const td_data *d, const int64_t *t, int64_t n, FILE *f)
{
    for (int64_t i = 0; i < n; i++) fputc(t[i] >= 0 && t[i] < d->vocab_size ? d->vocab[t[i]] : '?', f);
}

fg_status td_show_examples(const td_data *d, const fg_gpt *m, int64_t n, double temperature, int64_t top_k,
                           fg_generator *gen, FILE *f)
{
    if (n > d->n_val) n = d->n_val;
    if (n <= 0) return FG_OK;
    const int64_t P = d->prompt_len, A = d->seq_len - P;
    int64_t *ans = malloc((size_t)(n * A) * sizeof *ans);
    fg_status st = ans ? decode(d, m, 0, n, temperature, top_k, gen, ans) : FG_ERR_OOM;
    for (int64_t i = 0; st == FG_OK && i < n; i++) {
        const int64_t *ex = d->val + i * d->seq_len;
        fputs("  ", f);
        put_tokens(d, ex, P, f);
        put_tokens(d, ans + i * A, A, f);
        const bool ok = !memcmp(ans + i * A, ex + P, (size_t)A * sizeof *ans);
        fputs(ok ? "   ok" : "   WRONG, expected ", f);
        if (!ok) put_tokens(d, ex + P, A, f);
        fputc('\n', f);
    }
    free(ans);
    return st;
}

void td_vocab_hex(const td_data *d, char *out)
{
    for (int i = 0; i < d->vocab_size; i++) sprintf(out + 2 * i, "%02x", d->vocab[i]);
    out[2 * d->vocab_size] = 0;
}
