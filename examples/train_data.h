/* Data for examples/train_gpt: a character-level text corpus (vocabulary of
 * the bytes the file uses, 90/10 train/val split, random windows) or a
 * built-in synthetic task (fixed-length examples "prompt, separator, answer"
 * with the loss on the answer only and exact-match accuracy on held-out
 * examples by greedy decoding). All randomness comes from fg_generator
 * streams, so a batch is a function of the generator's (seed, offset). */
#ifndef TRAIN_DATA_H
#define TRAIN_DATA_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <flashgrad.h>

typedef enum { TD_TEXT = 0, TD_TASK } td_kind;
typedef enum { TD_REVERSAL = 0, TD_SORTING, TD_ADDITION, TD_N_TASKS } td_task;

typedef struct {
    td_kind kind;
    /* vocabulary: token i is the byte vocab[i]; tok_of[byte] is its token or -1 */
    int vocab_size;
    unsigned char vocab[256];
    int tok_of[256];
    /* text: the file as tokens, [0, n_train) training, [n_train, n_tokens) validation */
    int32_t *tokens;
    int64_t n_tokens, n_train;
    /* task: examples of seq_len tokens, the first prompt_len of them (operands
     * and separator) given, the rest the answer */
    td_task task;
    int digits;
    int64_t seq_len, prompt_len;
    int64_t n_val;       /* held-out examples (never drawn for training) */
    int64_t *val;        /* n_val * seq_len tokens */
    uint64_t *val_keys;  /* open-addressing set of the held-out prompts' hashes (0: empty) */
    size_t val_cap;
} td_data;

/* Names: "reversal", "sorting", "addition"; NULL for an unknown one. */
const char *td_task_name(td_task t);
int td_task_from_name(const char *name); /* -1 when unknown */
/* One line describing the task's format, e.g. for --help and the banner. */
const char *td_task_help(td_task t);
/* The default operand length of a task. */
int td_task_default_digits(td_task t);

/* Loads a text file (fails with a message in err when it cannot be read, is
 * empty, or a split has fewer than block + 1 tokens). */
bool td_load_text(td_data *d, const char *path, int64_t block, char *err, size_t errlen);
/* A synthetic task with `digits`-long operands and n_val held-out examples
 * drawn from a generator seeded with val_seed. */
bool td_make_task(td_data *d, td_task task, int digits, int64_t n_val, uint64_t val_seed, char *err, size_t errlen);
void td_free(td_data *d);

/* Tokens per training row: the block for text, seq_len - 1 for a task. */
int64_t td_row_len(const td_data *d, int64_t block);

/* A batch of B rows of T tokens into host arrays x, y (B * T each): targets are
 * the next tokens; for a task, -1 (ignored by the loss) except at the positions
 * that predict the answer. split 0 draws fresh training data (for a task:
 * random examples that are not held out), split 1 validation data (text: the
 * last 10%; task: random held-out examples). */
fg_status td_batch(const td_data *d, int split, int64_t B, int64_t T, fg_generator *g, int64_t *x, int64_t *y);

/* Exact-match accuracy of greedy decoding (fg_gpt_generate, KV cache) on the
 * first n (<= n_val) held-out examples, in batches of at most B. Returns the
 * number right in *correct. Runs under the caller's autocast state. */
fg_status td_accuracy(const td_data *d, const fg_gpt *m, int64_t n, int64_t B, fg_generator *gen, int64_t *correct);

/* Prints (to f) up to n held-out examples with the model's answer decoded
 * with temperature / top_k (temperature <= 0: greedy). */
fg_status td_show_examples(const td_data *d, const fg_gpt *m, int64_t n, double temperature, int64_t top_k,
                           fg_generator *gen, FILE *f);

/* The vocabulary as lowercase hex into out (2 * vocab_size + 1 bytes). */
void td_vocab_hex(const td_data *d, char *out);

#endif
