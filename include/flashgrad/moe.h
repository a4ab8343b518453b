#ifndef FLASHGRAD_MOE_H
#define FLASHGRAD_MOE_H

#include <flashgrad/nn.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Mixture-of-Experts feed-forward layer (Switch / GShard style), conventions
 * of flashgrad/nn.h.
 *
 * Per token x_t (N = B T tokens):
 *   logits_t = router(x_t)                    (E)  linear (C -> E, no bias), or
 *                                                  GQA expert attention: x_t's
 *                                                  queries over E learned expert
 *                                                  embeddings, projected to E
 *   p_t = softmax(logits_t)
 *   e_t1, e_t2 = the top_k (1 or 2) experts by p_t (first index on ties)
 *   gates: top_k 1: g_t1 = p_t[e_t1] (Switch; renormalising one gate would make
 *          it 1 and cut the router off from the task loss);
 *          top_k 2: g_ti = p_t[e_ti] / (p_t[e_t1] + p_t[e_t2]) (they sum to 1)
 *   y_t = sum over the KEPT slots i of g_ti * MLP_{e_ti}(x_t)
 *
 * Capacity: each expert takes at most capacity = min(N, ceil(capacity_factor
 * N top_k / E)) slots (capacity_factor <= 0: no limit, i.e. N). Slots are granted in priority
 * order: every token's first choice in token order, then every token's second
 * choice in token order. A slot beyond its expert's capacity is dropped
 * (overflow): it contributes nothing, and the gates of the token's other slot
 * are not renormalised. A token whose slots are all dropped gets y_t = 0, so
 * with the residual connection around the layer (x + moe(norm(x))) it passes
 * through unchanged.
 *
 * Load-balancing loss (Switch Transformer): aux = E sum_e f_e P_e, with f_e
 * the fraction of tokens whose first choice is e (before capacity; constant)
 * and P_e the mean of p_t[e] over the tokens (differentiable: its gradient
 * reaches the router). 1 when routing is uniform; add alpha * aux (alpha
 * ~0.01) to the loss.
 *
 * Autograd reaches x, the router and every expert that got tokens: the
 * tokens are gathered per expert (fg_index_select), each expert runs once on
 * its rows, and the gated rows are added back (fg_index_add). The routing
 * decision reads the top-k indices on the host (one device sync a call). */
typedef enum { FG_MOE_ROUTER_LINEAR = 0, FG_MOE_ROUTER_ATTENTION } fg_moe_router_kind;

typedef struct {
    int64_t n_embd;          /* C */
    int64_t n_expert;        /* E >= top_k */
    int64_t top_k;           /* 1 or 2 */
    int64_t expert_hidden;   /* 0: 4 n_embd */
    double capacity_factor;  /* <= 0: no capacity limit */
    bool bias;               /* biases in the expert MLPs */
    double dropout;          /* at the expert MLPs' outputs, when training */
    fg_moe_router_kind router;
    /* attention router (fg_nn_expert_attention with n_memory learned expert
     * embeddings, d_out = E): */
    int64_t router_q_heads;  /* 0: 12 */
    int64_t router_kv_heads; /* 0: 4 */
    int64_t router_memory;   /* memory slots, 0: n_expert */
    fg_attn_backend router_backend; /* attention backend (0: AUTO); the layer's
                                     * router_attn.cfg.backend after init */
    fg_nn_init init;         /* experts' and router's linears (flashgrad/nn.h) */
} fg_nn_moe_config;

typedef struct {
    fg_nn_moe_config cfg;
    fg_nn_linear router;                 /* (C, E), no bias; linear router */
    fg_nn_expert_attention router_attn;  /* attention router */
    fg_nn_mlp *experts;                  /* E */
    /* Routing of the last forward (host, for logging "expert load"): */
    int64_t n_tokens, capacity, n_dropped;
    int64_t *load;                       /* (E) slots each expert processed */
    int64_t *top1;                       /* (E) tokens whose first choice was e */
} fg_nn_moe;

/* Optional outputs of a forward (each a new tensor, owned like op results): */
typedef struct {
    fg_tensor *aux_loss; /* 0-d, differentiable */
    fg_tensor *probs;    /* (N, E) router probabilities, differentiable */
    fg_tensor *gates;    /* (N, top_k) gates (before dropping), differentiable */
    fg_tensor *experts;  /* (N, top_k) i64 chosen experts, best first */
    fg_tensor *kept;     /* (N, top_k) i64 1 = processed, 0 = dropped (overflow) */
} fg_nn_moe_output;

/* Errors: n_embd / n_expert < 1, top_k not 1 or 2, top_k > n_expert, capacity
 * factor NaN or infinite, dropout outside [0, 1), attention-router head
 * counts that do not divide (see fg_nn_expert_attention_config). */
fg_status fg_nn_moe_init(fg_nn_moe *m, const fg_nn_moe_config *cfg, fg_generator *g, fg_device dev, fg_dtype dt);
/* x (B, T, C) or (N, C) -> same shape; updates the routing statistics in m.
 * out may be NULL. */
fg_tensor *fg_nn_moe_forward(fg_nn_moe *m, fg_tensor *x, bool training, fg_generator *gen, fg_nn_moe_output *out);
/* prefix.router.weight (linear router) or prefix.router_attn.* (attention
 * router), then prefix.experts.<e>.c_fc.*, prefix.experts.<e>.c_proj.* */
fg_status fg_nn_moe_params(const fg_nn_moe *m, const char *prefix, fg_params *reg);
void fg_nn_moe_free(fg_nn_moe *m);

#ifdef __cplusplus
}
#endif
#endif
