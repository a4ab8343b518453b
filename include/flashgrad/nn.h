#ifndef FLASHGRAD_NN_H
#define FLASHGRAD_NN_H

#include <flashgrad/tensor.h>
#include <flashgrad/random.h>
#include <flashgrad/params.h>
#include <flashgrad/attention.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Layers. Each layer is a plain struct the caller allocates (on the stack, in
 * another layer, ...) and its functions fill in:
 *
 *   fg_status fg_nn_X_init(X *layer, <sizes/config>, [fg_generator *g,] fg_device dev, fg_dtype dt);
 *   fg_tensor *fg_nn_X_forward(const X *layer, fg_tensor *x, [bool training, fg_generator *gen]);
 *   fg_status fg_nn_X_params(const X *layer, const char *prefix, fg_params *reg);
 *   void fg_nn_X_free(X *layer);
 *
 * Parameters are leaves (requires_grad) of dtype dt on device dev (f32 for
 * training; f64 for gradient checks), initialised from the generator g (NULL:
 * fg_default_generator()), drawn in a fixed order, so the same seed gives the
 * same values on the CPU and on the GPU. They belong to the layer, not to any
 * scope open at init, and live until fg_nn_X_free (the registry holds its own
 * references). On failure init returns the error and leaves the layer zeroed;
 * free is safe on a zeroed or freed layer.
 *
 * forward returns a new tensor owned like any op result (by the innermost
 * open scope, else by the caller); its own intermediates are released before
 * it returns (the autograd graph keeps what the backward needs). training
 * switches dropout on; gen is dropout's stream (NULL: the default generator).
 * Bad inputs give NULL and an error naming the layer and the shapes.
 *
 * params registers the layer's leaves in `reg` under `prefix` + "." + the
 * PyTorch/nanoGPT attribute names ("h.0.attn.c_attn.weight"); prefix NULL or
 * "" gives the bare names. decay is set for 2-D weight matrices of linear
 * maps only (not for biases, norm gains or embeddings).
 *
 * Linear weights are stored (in, out) (x @ W, as fg_linear takes them and as
 * HF GPT-2's Conv1D stores them; transpose for torch.nn.Linear). */

/* ---- Linear: y = x @ weight + bias ---------------------------------------- */
typedef struct {
    fg_tensor *weight; /* (in, out) */
    fg_tensor *bias;   /* (out), or NULL */
    int64_t in_features, out_features;
} fg_nn_linear;
/* PyTorch's default init: weight and bias uniform in +-1/sqrt(in). */
fg_status fg_nn_linear_init(fg_nn_linear *l, int64_t in_features, int64_t out_features, bool bias, fg_generator *g,
                            fg_device dev, fg_dtype dt);
/* x (..., in) -> (..., out) */
fg_tensor *fg_nn_linear_forward(const fg_nn_linear *l, fg_tensor *x);
/* prefix.weight (decay), prefix.bias */
fg_status fg_nn_linear_params(const fg_nn_linear *l, const char *prefix, fg_params *reg);
void fg_nn_linear_free(fg_nn_linear *l);

/* ---- Embedding: rows of a table ------------------------------------------- */
typedef struct {
    fg_tensor *weight; /* (num_embeddings, dim) */
    int64_t num_embeddings, dim;
} fg_nn_embedding;
/* weight ~ N(0, 1) (PyTorch's default). */
fg_status fg_nn_embedding_init(fg_nn_embedding *e, int64_t num_embeddings, int64_t dim, fg_generator *g, fg_device dev,
                               fg_dtype dt);
/* idx (any shape, i32/i64, on the weight's device) -> (*idx.shape, dim) */
fg_tensor *fg_nn_embedding_forward(const fg_nn_embedding *e, fg_tensor *idx);
/* prefix.weight (no decay) */
fg_status fg_nn_embedding_params(const fg_nn_embedding *e, const char *prefix, fg_params *reg);
void fg_nn_embedding_free(fg_nn_embedding *e);

/* ---- LayerNorm / RMSNorm over the last dim -------------------------------- */
typedef enum { FG_NN_LAYERNORM = 0, FG_NN_RMSNORM } fg_nn_norm_kind;
typedef struct {
    fg_nn_norm_kind kind;
    fg_tensor *weight; /* (dim), ones at init */
    fg_tensor *bias;   /* (dim), zeros at init; LayerNorm with bias only */
    int64_t dim;
    double eps;
} fg_nn_norm;
/* eps <= 0: 1e-5. No random draws. */
fg_status fg_nn_layernorm_init(fg_nn_norm *n, int64_t dim, bool bias, double eps, fg_device dev, fg_dtype dt);
fg_status fg_nn_rmsnorm_init(fg_nn_norm *n, int64_t dim, double eps, fg_device dev, fg_dtype dt);
/* x (..., dim) -> (..., dim) */
fg_tensor *fg_nn_norm_forward(const fg_nn_norm *n, fg_tensor *x);
/* prefix.weight, prefix.bias (no decay) */
fg_status fg_nn_norm_params(const fg_nn_norm *n, const char *prefix, fg_params *reg);
void fg_nn_norm_free(fg_nn_norm *n);

/* ---- Dropout --------------------------------------------------------------- */
typedef struct {
    double p; /* in [0, 1) */
} fg_nn_dropout;
fg_status fg_nn_dropout_init(fg_nn_dropout *d, double p);
/* fg_dropout(x, p) when training and p > 0, else a copy of x (never x itself). */
fg_tensor *fg_nn_dropout_forward(const fg_nn_dropout *d, fg_tensor *x, bool training, fg_generator *gen);

/* ---- Initialisation shared by the composite layers ------------------------ */
/* init_std 0: PyTorch defaults (linear weights and biases uniform +-1/sqrt(in)).
 * init_std > 0: GPT-2 style, linear weights N(0, init_std), biases 0, and the
 * output projections that write into the residual stream (attention c_proj,
 * MLP c_proj) N(0, proj_init_std) (0: init_std). */
typedef struct {
    double init_std, proj_init_std;
} fg_nn_init;

/* ---- MLP: c_proj(gelu(c_fc(x))), then dropout ----------------------------- */
/* GELU is the tanh form (GPT-2's; fg_linear_gelu fuses it on CUDA). */
typedef struct {
    fg_nn_linear c_fc;   /* (n_embd, hidden) */
    fg_nn_linear c_proj; /* (hidden, n_embd) */
    double dropout;
} fg_nn_mlp;
/* hidden 0: 4 n_embd. init may be NULL (PyTorch defaults). */
fg_status fg_nn_mlp_init(fg_nn_mlp *m, int64_t n_embd, int64_t hidden, bool bias, double dropout, const fg_nn_init *init,
                         fg_generator *g, fg_device dev, fg_dtype dt);
/* x (..., n_embd) -> (..., n_embd) */
fg_tensor *fg_nn_mlp_forward(const fg_nn_mlp *m, fg_tensor *x, bool training, fg_generator *gen);
/* prefix.c_fc.*, prefix.c_proj.* */
fg_status fg_nn_mlp_params(const fg_nn_mlp *m, const char *prefix, fg_params *reg);
void fg_nn_mlp_free(fg_nn_mlp *m);

/* ---- Multi-head self-attention (MHA, GQA, MQA) ---------------------------- */
typedef struct {
    int64_t n_embd;    /* C */
    int64_t n_head;    /* query heads H; C % H == 0, head dim D = C / H */
    int64_t n_kv_head; /* key/value heads (0: n_head); H % n_kv_head == 0 */
    bool causal;
    bool bias;      /* biases in c_attn and c_proj */
    double dropout; /* on the attention probabilities and on the output */
    fg_nn_init init;
} fg_nn_attention_config;

/* c_attn maps x to [q | k | v] = (H D | Hkv D | Hkv D) columns in one GEMM
 * (nanoGPT's fused c_attn when Hkv = H), c_proj maps the heads back to C. */
typedef struct {
    fg_nn_attention_config cfg; /* n_kv_head filled in */
    int64_t head_dim;
    fg_nn_linear c_attn; /* (C, (H + 2 Hkv) D) */
    fg_nn_linear c_proj; /* (H D, C) */
} fg_nn_attention;
fg_status fg_nn_attention_init(fg_nn_attention *a, const fg_nn_attention_config *cfg, fg_generator *g, fg_device dev,
                               fg_dtype dt);
/* x (B, T, C) -> (B, T, C): fg_attention (AUTO backend) on (B, T, H, D) views,
 * causal as configured, dropout_p = dropout when training. */
fg_tensor *fg_nn_attention_forward(const fg_nn_attention *a, fg_tensor *x, bool training, fg_generator *gen);
/* prefix.c_attn.*, prefix.c_proj.* */
fg_status fg_nn_attention_params(const fg_nn_attention *a, const char *prefix, fg_params *reg);
void fg_nn_attention_free(fg_nn_attention *a);

/* KV cache for incremental decoding of a causal attention layer: keys and
 * values of the positions seen so far, (B, Hkv, max_len, D) on the layer's
 * device (no gradient). */
typedef struct {
    fg_tensor *k, *v; /* (B, Hkv, max_len, D) */
    int64_t batch, max_len;
    int64_t len; /* positions filled */
} fg_nn_kv_cache;
fg_status fg_nn_kv_cache_init(fg_nn_kv_cache *c, const fg_nn_attention *a, int64_t batch, int64_t max_len);
void fg_nn_kv_cache_reset(fg_nn_kv_cache *c); /* len = 0 */
void fg_nn_kv_cache_free(fg_nn_kv_cache *c);
/* x (B, Tn, C): the next Tn positions. Appends their keys and values to the
 * cache and attends from their queries over all len + Tn cached positions
 * (causal, bottom-right aligned: row i sees the first len + i + 1 keys), so
 * the result equals rows [len, len + Tn) of the full causal forward. Records
 * no gradient (inference) and no dropout. Errors: non-causal layer, cache of
 * another shape, len + Tn > max_len. */
fg_tensor *fg_nn_attention_forward_cached(const fg_nn_attention *a, fg_tensor *x, fg_nn_kv_cache *c);

/* ---- Pre-norm transformer block ------------------------------------------- */
/* x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)) */
typedef struct {
    int64_t n_embd, n_head, n_kv_head; /* n_kv_head 0: n_head */
    int64_t mlp_hidden;                /* 0: 4 n_embd */
    bool causal, bias;                 /* bias: linears and LayerNorms */
    double dropout;
    fg_nn_norm_kind norm;              /* LayerNorm (default) or RMSNorm */
    fg_nn_init init;
} fg_nn_block_config;
typedef struct {
    fg_nn_norm ln_1;
    fg_nn_attention attn;
    fg_nn_norm ln_2;
    fg_nn_mlp mlp;
} fg_nn_block;
fg_status fg_nn_block_init(fg_nn_block *b, const fg_nn_block_config *cfg, fg_generator *g, fg_device dev, fg_dtype dt);
/* x (B, T, C) -> (B, T, C) */
fg_tensor *fg_nn_block_forward(const fg_nn_block *b, fg_tensor *x, bool training, fg_generator *gen);
/* The same through the attention's KV cache (inference; see fg_nn_attention_forward_cached). */
fg_tensor *fg_nn_block_forward_cached(const fg_nn_block *b, fg_tensor *x, fg_nn_kv_cache *c);
/* prefix.ln_1.*, prefix.attn.*, prefix.ln_2.*, prefix.mlp.* */
fg_status fg_nn_block_params(const fg_nn_block *b, const char *prefix, fg_params *reg);
void fg_nn_block_free(fg_nn_block *b);

/* ---- GQA cross-attention onto a memory sequence ("expert attention") ------ */
/* Queries from a token sequence (B, Lq, d_query) attend, not causally, over a
 * memory sequence of another length (Lkv != Lq allowed) with fewer key/value
 * heads than query heads (GQA). The memory is either given to forward or, when
 * n_memory > 0, a learned (n_memory, d_memory) parameter of the layer (e.g.
 * one embedding per expert: the MoE layer's attention router, flashgrad/moe.h). */
typedef struct {
    int64_t d_query;       /* width of the query sequence */
    int64_t d_memory;      /* width of the memory (0: d_query) */
    int64_t n_query_heads; /* 0: 12 */
    int64_t n_kv_heads;    /* 0: 4; n_query_heads % n_kv_heads == 0 */
    int64_t head_dim;      /* 0: d_query / n_query_heads (which must divide) */
    int64_t d_out;         /* width of the output (0: d_query) */
    int64_t n_memory;      /* > 0: learned memory slots; 0: forward gets the memory */
    bool bias;             /* biases in the four projections */
    double dropout;        /* on the attention probabilities, when training */
    fg_nn_init init;       /* proj_init_std applies to out_proj; the memory is
                            * N(0, init_std), N(0, 1) when init_std is 0 */
    fg_attn_backend backend; /* fg_attention's backend: FG_ATTN_AUTO (0, the
                              * default), or FLASH / MATH to pin one, e.g. to
                              * compare their gradients. Read by every forward
                              * from the layer's cfg, so it may be changed
                              * between forwards. */
} fg_nn_expert_attention_config;
typedef struct {
    fg_nn_expert_attention_config cfg; /* defaults filled in */
    fg_nn_linear q_proj;   /* (d_query, Hq D) */
    fg_nn_linear k_proj;   /* (d_memory, Hkv D) */
    fg_nn_linear v_proj;   /* (d_memory, Hkv D) */
    fg_nn_linear out_proj; /* (Hq D, d_out) */
    fg_tensor *memory;     /* (n_memory, d_memory) or NULL */
} fg_nn_expert_attention;
fg_status fg_nn_expert_attention_init(fg_nn_expert_attention *l, const fg_nn_expert_attention_config *cfg,
                                      fg_generator *g, fg_device dev, fg_dtype dt);
/* query (B, Lq, d_query); memory (B, Lkv, d_memory), (Lkv, d_memory) shared by
 * the batch, or NULL for the learned memory -> (B, Lq, d_out). */
fg_tensor *fg_nn_expert_attention_forward(const fg_nn_expert_attention *l, fg_tensor *query, fg_tensor *memory,
                                          bool training, fg_generator *gen);
/* prefix.{q_proj, k_proj, v_proj, out_proj}.*, prefix.memory (no decay) */
fg_status fg_nn_expert_attention_params(const fg_nn_expert_attention *l, const char *prefix, fg_params *reg);
void fg_nn_expert_attention_free(fg_nn_expert_attention *l);

#ifdef __cplusplus
}
#endif
#endif
