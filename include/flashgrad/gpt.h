#ifndef FLASHGRAD_GPT_H
#define FLASHGRAD_GPT_H

#include <flashgrad/nn.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A GPT (nanoGPT's model): token + learned position embeddings, n_layer
 * pre-norm blocks (causal self-attention, GQA when n_kv_head < n_head, GELU
 * MLP), a final LayerNorm and an output head tied to the token embedding
 * (logits = x @ wte^T). Conventions of flashgrad/nn.h (init, ownership,
 * errors). */
typedef struct {
    int64_t vocab_size;
    int64_t block_size; /* longest sequence (rows of wpe) */
    int64_t n_layer, n_head;
    int64_t n_kv_head;  /* 0: n_head */
    int64_t n_embd;
    double dropout;     /* embeddings, attention probabilities, residual branches */
    bool bias;          /* biases in the linears and LayerNorms */
} fg_gpt_config;

typedef struct {
    fg_gpt_config cfg; /* n_kv_head filled in */
    fg_nn_embedding wte; /* (vocab_size, n_embd); also the output head */
    fg_nn_embedding wpe; /* (block_size, n_embd) */
    fg_nn_block *h;      /* n_layer blocks */
    fg_nn_norm ln_f;
} fg_gpt;

/* GPT-2 init: linear weights and both embeddings N(0, 0.02), the residual
 * projections (attn.c_proj, mlp.c_proj) N(0, 0.02 / sqrt(2 n_layer)), biases
 * 0, LayerNorm gains 1. Draw order: wte, wpe, then per block c_attn, c_proj,
 * c_fc, c_proj. Errors: sizes < 1, n_embd % n_head, n_head % n_kv_head,
 * dropout outside [0, 1), a non-float dtype. */
fg_status fg_gpt_init(fg_gpt *m, const fg_gpt_config *cfg, fg_generator *g, fg_device dev, fg_dtype dt);
void fg_gpt_free(fg_gpt *m);

/* idx (B, T) i32/i64 token ids, 1 <= T <= block_size -> logits (B, T, vocab)
 * in the parameters' dtype. With targets (B, T) (i32/i64; -1 = ignore) and
 * loss non-NULL, *loss receives the mean cross-entropy (0-d). training turns
 * dropout on (gen: its stream, NULL the default generator). */
fg_tensor *fg_gpt_forward(const fg_gpt *m, fg_tensor *idx, fg_tensor *targets, bool training, fg_generator *gen,
                          fg_tensor **loss);

/* Registers (nanoGPT's named_parameters order and names, under prefix):
 *   transformer.wte.weight, transformer.wpe.weight,
 *   transformer.h.<i>.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}.{weight, bias},
 *   transformer.ln_f.{weight, bias}
 * The output head is wte (tied), so there is no lm_head entry; a PyTorch
 * state_dict lists the same tensor again as lm_head.weight. Linear weights
 * are (in, out) (transpose for torch.nn.Linear). */
fg_status fg_gpt_params(const fg_gpt *m, const char *prefix, fg_params *reg);
/* Parameter count (the tied head once); non_embedding subtracts wpe, as
 * nanoGPT's get_num_params (6 layers, 384 wide, vocab 65, block 256, no
 * bias: 10,646,784, "10.65M"). -1 for an uninitialised model. */
int64_t fg_gpt_num_params(const fg_gpt *m, bool non_embedding);

/* ---- incremental decoding ---- */
/* One fg_nn_kv_cache per block, and the number of positions filled. */
typedef struct {
    fg_nn_kv_cache *layer; /* n_layer */
    int64_t n_layer, batch, max_len;
    int64_t len;
} fg_gpt_cache;
/* max_len 0: block_size (at most block_size: positions need wpe rows). */
fg_status fg_gpt_cache_init(fg_gpt_cache *c, const fg_gpt *m, int64_t batch, int64_t max_len);
void fg_gpt_cache_reset(fg_gpt_cache *c);
void fg_gpt_cache_free(fg_gpt_cache *c);
/* idx (B, Tn): the tokens at positions [len, len + Tn). Returns their logits
 * (B, Tn, vocab), equal to those rows of fg_gpt_forward on the whole prefix
 * (eval mode), and appends the positions to the cache. No gradient. */
fg_tensor *fg_gpt_forward_cached(const fg_gpt *m, fg_gpt_cache *c, fg_tensor *idx);

/* Appends max_new_tokens sampled tokens to idx (B, T0), T0 >= 1, and returns
 * (B, T0 + max_new_tokens) i64 on the model's device. Each step: the last
 * position's logits / temperature, only the top_k largest kept (top_k <= 0 or
 * >= vocab: all), softmax, one draw per row from gen (NULL: the default
 * generator); temperature <= 0 is greedy (argmax). The context is the last
 * block_size tokens, as nanoGPT's sample: through a KV cache, one position a
 * step; once the sequence outgrows block_size the cache is refilled with the
 * last block_size tokens each step (position embeddings are absolute). Runs
 * without gradient; reads logits on the host each step. */
fg_tensor *fg_gpt_generate(const fg_gpt *m, fg_tensor *idx, int64_t max_new_tokens, double temperature, int64_t top_k,
                           fg_generator *gen);

#ifdef __cplusplus
}
#endif
#endif
