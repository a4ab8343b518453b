/* moe_gqa: a Mixture-of-Experts model whose router is GQA expert attention
 * (12 query heads over 4 key/value heads, from the token sequence onto a
 * learned "expert memory" of another length), trained end to end on a task
 * where routing matters.
 *
 * The task (a mixture of linear teachers, the setting MoE was invented for).
 * Every sequence belongs to one of D hidden domains (D = the number of
 * experts); domain d is a random linear teacher A_d (K x P). A value token is
 * a vector u ~ N(0, I_P) and its target is the class argmax_k (A_d u)_k of its
 * sequence's teacher. The domain shows in one token of the sequence, a marker
 * (one per domain, at a random position, target ignored); the value tokens
 * say nothing about it. The same u gets different classes in different
 * domains, so a model must combine each token with its sequence's domain:
 * the best prediction without the domain (the class most teachers give u) is
 * printed as the "domain-blind ceiling" (~40% for 4 domains and 8 classes).
 * An expert per domain only has to learn one linear map; one expert for all
 * domains would need the product of u and the domain.
 *
 * The model (one pre-norm block with the MoE in place of the MLP):
 *   x = in_proj(u) + wte(token kind)                (B, T, C); kind: value, or marker d
 *   x = x + pool(probe; ln_1(x))                    attention pooling: a learned query over
 *                                                   the sequence, the same context for every
 *                                                   token (the MoE routes each token on its
 *                                                   own, so this is how it sees the domain)
 *   x = x + moe(ln_2(x))                            router: fg_nn_expert_attention, queries
 *                                                   from the T tokens (Lq = T), keys and
 *                                                   values from M learned memory slots
 *                                                   (Lkv = M != T), projected to E logits;
 *                                                   top-1/2, capacity, load-balancing loss
 *   logits = head(ln_f(x))                          (B T, K)
 * loss = cross-entropy over the value tokens + aux_weight * aux (AdamW,
 * warmup + cosine, clipping at 1). Without the MoE the model is additive in
 * (u, domain) and cannot follow a domain's teacher (the "MoE off" ablation).
 * Batches are stratified (B / D sequences of each domain, shuffled), so
 * routing by domain is exactly balanced and the load-balancing loss pulls
 * towards it. aux_weight defaults to 0.1, not Switch's 0.01: with 0.01 two
 * domains that start on one expert tend to stay there (8 experts, 600 steps:
 * 7 and 6 of 8 domains on distinct experts for seeds 4 and 42, which then
 * fail the 90% threshold); with 0.1 every domain got its own expert on each
 * of seeds 1, 2, 3, 4, 42.
 *
 * Per interval it prints the training loss, the held-out loss and accuracy,
 * the experts' loads (slots processed over the interval, and dropped slots)
 * and, per domain, the expert that takes most of its tokens and its share
 * (how concentrated the routing is). At the end two ablations say what the
 * routing is worth: the router's expert columns rotated by one (every token
 * goes to an expert trained for another domain) and the MoE switched off.
 *
 * Before training it checks the layer's gradients: (1) at a tiny size in f64
 * on the CPU, ln_2 + MoE with the attention router against central finite
 * differences, with the router's attention on the FLASH backend and on MATH,
 * and the two backends' gradients against each other; (2) the training model
 * at the run's width and sequence length, on its device in f32, one batch (up
 * to 8 sequences) forward + backward with the router on FLASH and on MATH,
 * every parameter's gradient compared. It prints
 *   gradient check: flash vs math max err X, finite differences max err Y: PASS
 * (X: the larger of the two comparisons, relative to each parameter's largest
 * gradient; Y: the largest absolute error against finite differences) and
 * exits 1 on failure.
 *
 *   examples/moe_gqa                  CPU preset (C 48, 4 experts, 32x16 tokens, 1200 steps):
 *                                     ~25 s on 2 cores; PASS at >= 90% held-out accuracy
 *   examples/moe_gqa --device cuda    full preset (C 384, 8 experts of hidden 256, 64x128
 *                                     tokens, 16 memory slots, 3000 steps), bf16 autocast
 *   examples/moe_gqa --help
 * Exit status: 0 PASS, 1 a check failed (or an error), 2 bad flags or no GPU.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <flashgrad.h>

#define PROG "moe_gqa"
#define IGNORE (-100)

/* ------------------------------------------------------------------ options */

typedef struct {
    const char *device;
    int64_t steps, batch, seq, dim, experts, expert_hidden, top_k, q_heads, kv_heads, memory, features, classes,
        eval_interval, eval_batch;
    double capacity, aux_weight, lr, min_accuracy;
    unsigned long long seed;
} options;

static const options PRESET_CPU = {.steps = 1200, .batch = 32, .seq = 16, .dim = 48, .experts = 4,
                                   .expert_hidden = 32, .top_k = 1, .q_heads = 12, .kv_heads = 4, .memory = 8,
                                   .features = 16, .classes = 8, .eval_interval = 200, .eval_batch = 256,
                                   .capacity = 1.25, .aux_weight = 0.1, .lr = 3e-3};
static const options PRESET_CUDA = {.steps = 3000, .batch = 64, .seq = 128, .dim = 384, .experts = 8,
                                    .expert_hidden = 256, .top_k = 1, .q_heads = 12, .kv_heads = 4, .memory = 16,
                                    .features = 32, .classes = 16, .eval_interval = 250, .eval_batch = 512,
                                    .capacity = 1.25, .aux_weight = 0.1, .lr = 1e-3};

#define ROW(flag, text, field) \
    "  " flag text "cpu %lld, cuda %lld\n", (long long)PRESET_CPU.field, (long long)PRESET_CUDA.field

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " [options]\n"
               "Trains a model whose MoE layer routes tokens with GQA expert attention (query heads over fewer KV\n"
               "heads, from the tokens onto a learned expert memory) on a task where the right expert depends on a\n"
               "hidden per-sequence domain. Checks the layer's gradients first (flash vs math backend, finite\n"
               "differences); PASS when the held-out accuracy reaches --min-accuracy. Defaults per device:\n\n"
               "  --device cpu|cuda    cpu (default): the small preset, f32; cuda: the full preset, bf16 autocast\n");
    fprintf(f, ROW("--steps N            ", "training steps                          ", steps));
    fprintf(f, ROW("--batch N            ", "sequences a step                        ", batch));
    fprintf(f, ROW("--seq N              ", "tokens a sequence (the router's Lq)     ", seq));
    fprintf(f, ROW("--dim N              ", "model width C, a multiple of --q-heads  ", dim));
    fprintf(f, ROW("--experts N          ", "experts = hidden domains, 2..64         ", experts));
    fprintf(f, ROW("--expert-hidden N    ", "hidden width of each expert's MLP       ", expert_hidden));
    fprintf(f, ROW("--top-k 1|2          ", "experts a token                         ", top_k));
    fprintf(f, "  --capacity F         capacity factor, 0: no limit            %g\n", PRESET_CPU.capacity);
    fprintf(f, "  --aux-weight F       load-balancing loss weight              %g\n", PRESET_CPU.aux_weight);
    fprintf(f, "  --lr F               peak AdamW learning rate                cpu %g, cuda %g\n", PRESET_CPU.lr,
            PRESET_CUDA.lr);
    fprintf(f, "  --seed N             parameters and data                     42\n");
    fprintf(f, ROW("--eval-interval N    ", "steps between reports                   ", eval_interval));
    fprintf(f, ROW("--q-heads N          ", "query heads (router and pooling)        ", q_heads));
    fprintf(f, ROW("--kv-heads N         ", "key/value heads, dividing --q-heads     ", kv_heads));
    fprintf(f, ROW("--memory-slots N     ", "expert memory slots (the router's Lkv)  ", memory));
    fprintf(f, ROW("--features N         ", "size of a value token's vector          ", features));
    fprintf(f, ROW("--classes N          ", "target classes, >= 2                    ", classes));
    fprintf(f, ROW("--eval-batch N       ", "held-out sequences                      ", eval_batch));
    fprintf(f, "  --min-accuracy F     PASS threshold on the held-out accuracy, 0..1 (0: none)  0.9\n"
               "  --help\n");
}
#undef ROW

static int bad_flag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (--help lists the options)\n");
    va_end(ap);
    return 2;
}

static bool parse_int(const char *s, int64_t lo, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo) return false;
    *out = v;
    return true;
}

static bool parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return false;
    *out = v;
    return true;
}

/* 0: ok, 1: --help printed, 2: bad flags (message printed). */
static int parse_options(int argc, char **argv, options *o)
{
    enum { O_STEPS = 256, O_BATCH, O_SEQ, O_DIM, O_EXPERTS, O_HID, O_TOPK, O_CAP, O_AUX, O_LR, O_SEED, O_EVAL, O_QH,
           O_KVH, O_MEM, O_FEAT, O_CLS, O_EVALB, O_MINACC };
    static const struct option lo[] = {{"device", required_argument, 0, 'd'},
                                       {"steps", required_argument, 0, O_STEPS},
                                       {"batch", required_argument, 0, O_BATCH},
                                       {"seq", required_argument, 0, O_SEQ},
                                       {"dim", required_argument, 0, O_DIM},
                                       {"experts", required_argument, 0, O_EXPERTS},
                                       {"expert-hidden", required_argument, 0, O_HID},
                                       {"top-k", required_argument, 0, O_TOPK},
                                       {"capacity", required_argument, 0, O_CAP},
                                       {"aux-weight", required_argument, 0, O_AUX},
                                       {"lr", required_argument, 0, O_LR},
                                       {"seed", required_argument, 0, O_SEED},
                                       {"eval-interval", required_argument, 0, O_EVAL},
                                       {"q-heads", required_argument, 0, O_QH},
                                       {"kv-heads", required_argument, 0, O_KVH},
                                       {"memory-slots", required_argument, 0, O_MEM},
                                       {"features", required_argument, 0, O_FEAT},
                                       {"classes", required_argument, 0, O_CLS},
                                       {"eval-batch", required_argument, 0, O_EVALB},
                                       {"min-accuracy", required_argument, 0, O_MINACC},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    /* The flags go into `set` (-1 / NaN: not given), then over the device's preset. */
    options set = {.device = "cpu", .steps = -1, .batch = -1, .seq = -1, .dim = -1, .experts = -1,
                   .expert_hidden = -1, .top_k = -1, .q_heads = -1, .kv_heads = -1, .memory = -1, .features = -1,
                   .classes = -1, .eval_interval = -1, .eval_batch = -1, .capacity = NAN, .aux_weight = NAN,
                   .lr = NAN, .min_accuracy = 0.9, .seed = 42};
    int ch, idx = 0;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":h", lo, &idx)) != -1) {
        int64_t *iv = NULL, imin = 1;
        double *dv = NULL, dmin = 0, dmax = 1e30;
        switch (ch) {
        case 'h': usage(stdout); return 1;
        case 'd': set.device = optarg; break;
        case O_STEPS: iv = &set.steps; break;
        case O_BATCH: iv = &set.batch; break;
        case O_SEQ: iv = &set.seq, imin = 2; break;
        case O_DIM: iv = &set.dim; break;
        case O_EXPERTS: iv = &set.experts, imin = 2; break;
        case O_HID: iv = &set.expert_hidden; break;
        case O_TOPK: iv = &set.top_k; break;
        case O_QH: iv = &set.q_heads; break;
        case O_KVH: iv = &set.kv_heads; break;
        case O_MEM: iv = &set.memory; break;
        case O_FEAT: iv = &set.features; break;
        case O_CLS: iv = &set.classes, imin = 2; break;
        case O_EVAL: iv = &set.eval_interval; break;
        case O_EVALB: iv = &set.eval_batch; break;
        case O_CAP: dv = &set.capacity; break;
        case O_AUX: dv = &set.aux_weight; break;
        case O_LR: dv = &set.lr, dmin = 1e-9, dmax = 10; break;
        case O_MINACC: dv = &set.min_accuracy, dmax = 1; break;
        case O_SEED: {
            int64_t v;
            if (!parse_int(optarg, 0, &v)) return bad_flag("--seed: '%s' is not a non-negative integer", optarg);
            set.seed = (unsigned long long)v;
            break;
        }
        case ':': return bad_flag("%s needs a value", argv[optind - 1]);
        default: return bad_flag("unknown option '%s'", argv[optind - 1]);
        }
        if (iv && !parse_int(optarg, imin, iv))
            return bad_flag("--%s: '%s' is not an integer >= %lld", lo[idx].name, optarg, (long long)imin);
        if (dv && !parse_double(optarg, dmin, dmax, dv)) {
            if (dmax >= 1e30) return bad_flag("--%s: '%s' is not a number >= %g", lo[idx].name, optarg, dmin);
            return bad_flag("--%s: '%s' is not a number in [%g, %g]", lo[idx].name, optarg, dmin, dmax);
        }
    }
    if (optind < argc) return bad_flag("unexpected argument '%s'", argv[optind]);
    const options *p;
    if (strcmp(set.device, "cpu") == 0)
        p = &PRESET_CPU;
    else if (strcmp(set.device, "cuda") == 0)
        p = &PRESET_CUDA;
    else
        return bad_flag("--device: '%s' (cpu or cuda)", set.device);
    *o = *p;
    o->device = set.device, o->seed = set.seed, o->min_accuracy = set.min_accuracy;
    int64_t *const dst[] = {&o->steps, &o->batch, &o->seq, &o->dim, &o->experts, &o->expert_hidden, &o->top_k,
                            &o->q_heads, &o->kv_heads, &o->memory, &o->features, &o->classes, &o->eval_interval,
                            &o->eval_batch};
    const int64_t src[] = {set.steps, set.batch, set.seq, set.dim, set.experts, set.expert_hidden, set.top_k,
                           set.q_heads, set.kv_heads, set.memory, set.features, set.classes, set.eval_interval,
                           set.eval_batch};
    for (size_t i = 0; i < sizeof src / sizeof *src; i++)
        if (src[i] >= 0) *dst[i] = src[i];
    if (!isnan(set.capacity)) o->capacity = set.capacity;
    if (!isnan(set.aux_weight)) o->aux_weight = set.aux_weight;
    if (!isnan(set.lr)) o->lr = set.lr;
    if (o->top_k != 1 && o->top_k != 2) return bad_flag("--top-k: %lld (1 or 2)", (long long)o->top_k);
    if (o->experts > 64) return bad_flag("--experts: %lld (at most 64)", (long long)o->experts);
    if (o->top_k > o->experts)
        return bad_flag("--top-k %lld > --experts %lld", (long long)o->top_k, (long long)o->experts);
    if (o->q_heads % o->kv_heads)
        return bad_flag("--q-heads %lld is not a multiple of --kv-heads %lld", (long long)o->q_heads,
                        (long long)o->kv_heads);
    if (o->dim % o->q_heads)
        return bad_flag("--dim %lld is not a multiple of --q-heads %lld (head dim = dim / q-heads)", (long long)o->dim,
                        (long long)o->q_heads);
    const int64_t lim = (int64_t)1 << 24;
    if (o->batch > lim / o->seq || o->eval_batch > lim / o->seq || o->features > 4096 || o->classes > 4096)
        return bad_flag("sizes too large (at most 2^24 tokens a batch, 4096 features or classes)");
    return 0;
}

/* --------------------------------------------------------------------- data */

/* splitmix64: the data's host stream (the parameters come from a Philox fg_generator). */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static int64_t rng_below(uint64_t *s, int64_t n) { return (int64_t)(rng_next(s) % (uint64_t)n); }
static double rng_normal(uint64_t *s) /* Box-Muller */
{
    const double u1 = ((double)(rng_next(s) >> 11) + 1) * 0x1p-53, u2 = (double)(rng_next(s) >> 11) * 0x1p-53;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* D domains; domain d's teacher is a (K, P) matrix A_d. */
typedef struct {
    int64_t D, P, K, T;
    double *A; /* (D, K, P) */
} task;

static bool task_init(task *t, const options *o)
{
    t->D = o->experts, t->P = o->features, t->K = o->classes, t->T = o->seq;
    t->A = malloc((size_t)(t->D * t->K * t->P) * sizeof *t->A);
    if (!t->A) return false;
    uint64_t s = o->seed ^ 0x7a5c0ffeull;
    for (int64_t i = 0; i < t->D * t->K * t->P; i++) t->A[i] = rng_normal(&s);
    return true;
}

/* argmax_k (A_d u)_k */
static int64_t teacher(const task *t, int64_t d, const float *u)
{
    int64_t best = 0;
    double bv = -INFINITY;
    for (int64_t k = 0; k < t->K; k++) {
        const double *a = t->A + (d * t->K + k) * t->P;
        double v = 0;
        for (int64_t p = 0; p < t->P; p++) v += a[p] * u[p];
        if (v > bv) bv = v, best = k;
    }
    return best;
}

/* One batch on the host: u (B, T, P) (zeros at the marker), id (B, T) (0 for
 * a value token, 1 + d for the marker of domain d), tgt (B T) (IGNORE at the
 * marker), dom (B). */
typedef struct {
    int64_t B;
    float *u;
    int64_t *id, *tgt, *dom;
} batch;

static bool batch_alloc(batch *b, const task *t, int64_t B)
{
    b->B = B;
    b->u = malloc((size_t)(B * t->T * t->P) * sizeof *b->u);
    b->id = malloc((size_t)(B * t->T) * sizeof *b->id);
    b->tgt = malloc((size_t)(B * t->T) * sizeof *b->tgt);
    b->dom = malloc((size_t)B * sizeof *b->dom);
    return b->u && b->id && b->tgt && b->dom;
}

static void batch_free(batch *b)
{
    free(b->u), free(b->id), free(b->tgt), free(b->dom);
    memset(b, 0, sizeof *b);
}

/* Stratified: the D domains take turns (from a random one), then the order
 * is shuffled, so a batch holds B / D sequences of each domain (+-1). */
static void make_batch(const task *t, uint64_t *s, batch *b)
{
    const int64_t first = rng_below(s, t->D);
    for (int64_t i = 0; i < b->B; i++) b->dom[i] = (first + i) % t->D;
    for (int64_t i = b->B - 1; i > 0; i--) {
        const int64_t j = rng_below(s, i + 1), tmp = b->dom[i];
        b->dom[i] = b->dom[j], b->dom[j] = tmp;
    }
    for (int64_t i = 0; i < b->B; i++) {
        const int64_t d = b->dom[i], at = rng_below(s, t->T);
        for (int64_t j = 0; j < t->T; j++) {
            const int64_t n = i * t->T + j;
            float *u = b->u + n * t->P;
            for (int64_t p = 0; p < t->P; p++) u[p] = j == at ? 0.0f : (float)rng_normal(s);
            b->id[n] = j == at ? 1 + d : 0;
            b->tgt[n] = j == at ? IGNORE : teacher(t, d, u);
        }
    }
}

/* The accuracy of the best prediction without the domain (the class most of
 * the D teachers give u, which is right for that many of the equally likely
 * domains), averaged over b's value tokens. */
static double domain_blind_ceiling(const task *t, const batch *b)
{
    int64_t cnt[4096], n = 0;
    double acc = 0;
    for (int64_t i = 0; i < b->B * t->T; i++) {
        if (b->tgt[i] == IGNORE) continue;
        memset(cnt, 0, (size_t)t->K * sizeof *cnt);
        int64_t best = 0;
        for (int64_t d = 0; d < t->D; d++) {
            const int64_t c = ++cnt[teacher(t, d, b->u + i * t->P)];
            if (c > best) best = c;
        }
        acc += (double)best / (double)t->D, n++;
    }
    return acc / (double)n;
}

/* The batch on the device. */
typedef struct {
    fg_tensor *u, *id, *tgt;
} dbatch;

static bool to_device(const task *t, const batch *b, fg_device dev, dbatch *out)
{
    out->u = fg_from_f32(b->u, FG_SHAPE(b->B, t->T, t->P), FG_F32, dev);
    out->id = fg_from_data(b->id, FG_SHAPE(b->B, t->T), FG_I64, dev);
    out->tgt = fg_from_data(b->tgt, FG_SHAPE(b->B * t->T), FG_I64, dev);
    return out->u && out->id && out->tgt;
}

/* -------------------------------------------------------------------- model */

typedef struct {
    fg_nn_linear in_proj;        /* (P, C): value tokens */
    fg_nn_embedding wte;         /* (1 + D, C): row 0 value tokens, 1 + d the markers */
    fg_nn_norm ln_1, ln_2, ln_f;
    fg_tensor *probe;            /* (1, 1, C): the pooling query */
    fg_nn_expert_attention pool; /* probe over the sequence -> (B, 1, C) context */
    fg_nn_moe moe;
    fg_nn_linear head; /* (C, K) */
    fg_params *reg;
} model;

static void model_free(model *m)
{
    fg_params_free(m->reg);
    fg_nn_linear_free(&m->in_proj);
    fg_nn_embedding_free(&m->wte);
    fg_nn_norm_free(&m->ln_1);
    fg_free(m->probe);
    fg_nn_expert_attention_free(&m->pool);
    fg_nn_norm_free(&m->ln_2);
    fg_nn_moe_free(&m->moe);
    fg_nn_norm_free(&m->ln_f);
    fg_nn_linear_free(&m->head);
    memset(m, 0, sizeof *m);
}

static fg_nn_moe_config moe_config(const options *o, int64_t C, int64_t E, int64_t hidden, int64_t memory)
{
    return (fg_nn_moe_config){.n_embd = C,
                              .n_expert = E,
                              .top_k = o->top_k,
                              .expert_hidden = hidden,
                              .capacity_factor = o->capacity,
                              .bias = true,
                              .router = FG_MOE_ROUTER_ATTENTION,
                              .router_q_heads = o->q_heads,
                              .router_kv_heads = o->kv_heads,
                              .router_memory = memory,
                              .router_backend = FG_ATTN_AUTO};
}

static fg_status model_init(model *m, const options *o, fg_generator *g, fg_device dev)
{
    memset(m, 0, sizeof *m);
    const int64_t C = o->dim;
    const fg_nn_expert_attention_config pc = {.d_query = C, .n_query_heads = o->q_heads, .n_kv_heads = o->kv_heads};
    const fg_nn_moe_config mc = moe_config(o, C, o->experts, o->expert_hidden, o->memory);
    fg_status st = fg_nn_linear_init(&m->in_proj, o->features, C, true, g, dev, FG_F32);
    if (st == FG_OK) st = fg_nn_embedding_init(&m->wte, 1 + o->experts, C, g, dev, FG_F32);
    if (st == FG_OK) st = fg_nn_layernorm_init(&m->ln_1, C, true, 0, dev, FG_F32);
    if (st == FG_OK && !(m->probe = fg_randn(g, FG_SHAPE(1, 1, C), FG_F32, dev))) st = fg_last_status();
    if (st == FG_OK) st = fg_set_requires_grad(m->probe, true);
    if (st == FG_OK) st = fg_nn_expert_attention_init(&m->pool, &pc, g, dev, FG_F32);
    if (st == FG_OK) st = fg_nn_layernorm_init(&m->ln_2, C, true, 0, dev, FG_F32);
    if (st == FG_OK) st = fg_nn_moe_init(&m->moe, &mc, g, dev, FG_F32);
    if (st == FG_OK) st = fg_nn_layernorm_init(&m->ln_f, C, true, 0, dev, FG_F32);
    if (st == FG_OK) st = fg_nn_linear_init(&m->head, C, o->classes, true, g, dev, FG_F32);
    if (st == FG_OK && !(m->reg = fg_params_new())) st = fg_last_status();
    if (st == FG_OK) st = fg_nn_linear_params(&m->in_proj, "in_proj", m->reg);
    if (st == FG_OK) st = fg_nn_embedding_params(&m->wte, "wte", m->reg);
    if (st == FG_OK) st = fg_nn_norm_params(&m->ln_1, "h.ln_1", m->reg);
    if (st == FG_OK) st = fg_params_add(m->reg, "h.pool.probe", m->probe, false);
    if (st == FG_OK) st = fg_nn_expert_attention_params(&m->pool, "h.pool", m->reg);
    if (st == FG_OK) st = fg_nn_norm_params(&m->ln_2, "h.ln_2", m->reg);
    if (st == FG_OK) st = fg_nn_moe_params(&m->moe, "h.moe", m->reg);
    if (st == FG_OK) st = fg_nn_norm_params(&m->ln_f, "ln_f", m->reg);
    if (st == FG_OK) st = fg_nn_linear_params(&m->head, "head", m->reg);
    if (st != FG_OK) model_free(m);
    return st;
}

/* a + b with b cast to a's dtype (autocast returns the linear maps' results in bf16). */
static fg_tensor *residual(fg_tensor *a, fg_tensor *b)
{
    if (a && b && fg_dtype_of(b) != fg_dtype_of(a)) b = fg_cast(b, fg_dtype_of(a));
    return fg_add(a, b);
}

/* -> logits (B T, K) in f32; *out gets the MoE's outputs. */
static fg_tensor *model_forward(model *m, const dbatch *b, bool training, fg_generator *gen, bool bf16,
                                fg_nn_moe_output *out)
{
    if (bf16) fg_autocast_begin(FG_BF16);
    const int64_t B = fg_size(b->id, 0), C = m->pool.cfg.d_query;
    fg_tensor *x = residual(fg_nn_embedding_forward(&m->wte, b->id), fg_nn_linear_forward(&m->in_proj, b->u));
    fg_tensor *ctx = fg_nn_expert_attention_forward(&m->pool, fg_expand(m->probe, FG_SHAPE(B, 1, C)),
                                                    fg_nn_norm_forward(&m->ln_1, x), training, gen); /* (B, 1, C) */
    x = residual(x, ctx); /* broadcast over the tokens */
    x = residual(x, fg_nn_moe_forward(&m->moe, fg_nn_norm_forward(&m->ln_2, x), training, gen, out));
    fg_tensor *logits = fg_nn_linear_forward(&m->head, fg_nn_norm_forward(&m->ln_f, x));
    if (bf16) fg_autocast_end();
    if (logits && fg_dtype_of(logits) != FG_F32) logits = fg_cast(logits, FG_F32);
    return fg_reshape(logits, FG_SHAPE(-1, m->head.out_features));
}

/* cross-entropy + aux_weight * aux; *ce_out (may be NULL) the cross-entropy alone. */
static fg_tensor *model_loss(model *m, const options *o, const dbatch *b, bool training, fg_generator *gen,
                             bool bf16, fg_nn_moe_output *mo, fg_tensor **ce_out)
{
    fg_tensor *logits = model_forward(m, b, training, gen, bf16, mo);
    fg_tensor *ce = fg_cross_entropy(logits, b->tgt, IGNORE, FG_REDUCE_MEAN);
    if (ce_out) *ce_out = ce;
    return ce && mo->aux_loss ? fg_add(ce, fg_mul_scalar(mo->aux_loss, o->aux_weight)) : NULL;
}

/* --------------------------------------------------------- gradient checks */

static double elapsed(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

/* Copies of the gradients of every entry of reg (zeros where a parameter got
 * none, e.g. an expert without tokens); the gradients are then cleared. */
static bool take_grads(fg_params *reg, fg_tensor **grads)
{
    for (int64_t i = 0; i < fg_params_count(reg); i++) {
        fg_tensor *t = fg_params_at(reg, i)->t;
        grads[i] = fg_grad(t) ? fg_clone(fg_grad(t)) : fg_zeros_like(t);
        if (!grads[i]) return false;
    }
    return fg_params_zero_grad(reg) == FG_OK;
}

/* Largest |a - b| over the gradients, and the largest of |a - b| / max|b| per
 * parameter (the error relative to that parameter's largest gradient). */
static bool compare_grads(fg_params *reg, fg_tensor **a, fg_tensor **b, double *max_abs, double *max_rel,
                          const char **worst)
{
    *max_abs = 0, *max_rel = 0, *worst = "";
    for (int64_t i = 0; i < fg_params_count(reg); i++) {
        fg_compare_result r;
        if (fg_compare(a[i], b[i], 0, 0, &r) != FG_OK) return false;
        const double scale = fg_item(fg_max_all(fg_abs(b[i])));
        const double rel = scale > 0 ? r.max_abs_err / scale : (r.max_abs_err > 0 ? INFINITY : 0);
        if (r.max_abs_err > *max_abs) *max_abs = r.max_abs_err;
        if (rel > *max_rel) *max_rel = rel, *worst = fg_params_at(reg, i)->name;
        if (isnan(r.max_abs_err)) *max_abs = *max_rel = NAN;
    }
    return true;
}

/* The tiny f64 layer: y = x + moe(ln(x)), with the aux loss appended. */
typedef struct {
    fg_nn_norm ln;
    fg_nn_moe moe;
    fg_tensor *x;
} tiny;

static fg_tensor *tiny_fn(fg_tensor *const *inputs, void *ctx)
{
    (void)inputs; /* the inputs are the layer's own tensors and x, perturbed in place */
    tiny *t = ctx;
    fg_nn_moe_output o;
    fg_tensor *y = fg_add(t->x, fg_nn_moe_forward(&t->moe, fg_nn_norm_forward(&t->ln, t->x), false, NULL, &o));
    fg_tensor *parts[2] = {fg_reshape(y, FG_SHAPE(-1)), fg_reshape(o.aux_loss, FG_SHAPE(1))};
    return fg_concat(2, parts, 0);
}

/* True when every token's top-k probabilities are apart by more than `gap`
 * (and the k-th from the next), so a finite-difference step cannot change the routing. */
static bool routing_margins(tiny *t, double gap)
{
    fg_scope *s = fg_scope_begin();
    fg_nn_moe_output o;
    bool ok = fg_nn_moe_forward(&t->moe, fg_nn_norm_forward(&t->ln, t->x), false, NULL, &o) != NULL;
    const int64_t E = t->moe.cfg.n_expert, k = t->moe.cfg.top_k, N = ok ? fg_size(o.probs, 0) : 0;
    double *p = malloc((size_t)(N * E + 1) * sizeof *p);
    ok = ok && p && fg_to_f64_array(o.probs, p, N * E) == FG_OK;
    for (int64_t n = 0; ok && n < N; n++) {
        double *r = p + n * E;
        for (int64_t i = 0; i < E; i++) /* sort descending */
            for (int64_t j = i + 1; j < E; j++)
                if (r[j] > r[i]) {
                    double tmp = r[i];
                    r[i] = r[j], r[j] = tmp;
                }
        for (int64_t i = 0; i < k && i + 1 < E; i++) ok = ok && r[i] - r[i + 1] > gap;
    }
    free(p);
    fg_scope_end(s);
    return ok;
}

/* (1): f64 on the CPU, C = 2 q_heads, 3 experts, 5 memory slots, 2 sequences
 * of 3 tokens. Finite differences for every tensor (x, ln, router, experts)
 * with the router on FLASH and on MATH, and FLASH vs MATH gradients. */
static bool check_tiny(const options *o, fg_generator *g, double *fd_err, double *fm_rel, char *line, size_t len)
{
    const int64_t C = 2 * o->q_heads, E = 3, B = 2, T = 3, M = 5;
    tiny t;
    memset(&t, 0, sizeof t);
    fg_params *reg = fg_params_new();
    fg_nn_moe_config mc = moe_config(o, C, E, 8, M);
    bool ok = reg && fg_nn_layernorm_init(&t.ln, C, true, 0, FG_CPU, FG_F64) == FG_OK &&
              fg_nn_moe_init(&t.moe, &mc, g, FG_CPU, FG_F64) == FG_OK &&
              fg_nn_norm_params(&t.ln, "ln_2", reg) == FG_OK && fg_nn_moe_params(&t.moe, "moe", reg) == FG_OK;
    fg_scope *s = fg_scope_begin();
    if (ok) { /* spread the router's probabilities (and the LayerNorm's affine part away from 1, 0) */
        bool prev = fg_set_grad_enabled(false);
        fg_tensor *w = t.moe.router_attn.out_proj.weight;
        ok = fg_copy_(w, fg_mul_scalar(w, 8.0)) == FG_OK &&
             fg_copy_(t.ln.weight, fg_uniform(g, 0.5, 1.5, FG_SHAPE(C), FG_F64, FG_CPU)) == FG_OK &&
             fg_copy_(t.ln.bias, fg_uniform(g, -0.5, 0.5, FG_SHAPE(C), FG_F64, FG_CPU)) == FG_OK;
        fg_set_grad_enabled(prev);
    }
    for (int tries = 0; ok && tries < 100; tries++) { /* an input whose routing no step can flip */
        t.x = fg_randn(g, FG_SHAPE(B, T, C), FG_F64, FG_CPU);
        ok = t.x && fg_set_requires_grad(t.x, true) == FG_OK;
        if (ok && routing_margins(&t, 1e-4)) break;
        if (tries == 99) {
            snprintf(line, len, "no input with well-separated routing in 100 draws");
            ok = false;
        }
    }
    /* every tensor: x, then the registry */
    const int64_t n = fg_params_count(reg) + 1;
    fg_tensor **all = calloc((size_t)n, sizeof *all), **gf = calloc((size_t)n, sizeof *gf),
              **gm = calloc((size_t)n, sizeof *gm);
    ok = ok && all && gf && gm;
    for (int64_t i = 0; ok && i < n; i++) all[i] = i ? fg_params_at(reg, i - 1)->t : t.x;
    *fd_err = 0;
    int64_t n_elems = 0;
    bool fd_pass = true;
    for (int b = 0; ok && b < 2; b++) {
        t.moe.router_attn.cfg.backend = b == 0 ? FG_ATTN_FLASH : FG_ATTN_MATH;
        /* the analytic gradients for the backend comparison: the projection R of fg_gradcheck is
         * internal, so use sum(f * 1) here */
        for (int64_t i = 0; i < n; i++) fg_zero_grad(all[i]); /* fg_gradcheck's backward accumulates there too */
        fg_tensor *y = tiny_fn(NULL, &t);
        ok = y && fg_backward(fg_sum_all(y)) == FG_OK;
        for (int64_t i = 0; ok && i < n; i++) {
            fg_tensor *gr = fg_grad(all[i]);
            (b == 0 ? gf : gm)[i] = gr ? fg_clone(gr) : fg_zeros_like(all[i]);
            fg_zero_grad(all[i]);
        }
        /* finite differences, FG_GRADCHECK_MAX_INPUTS tensors at a time (the others held) */
        for (int64_t i0 = 0; ok && i0 < n; i0 += FG_GRADCHECK_MAX_INPUTS) {
            const int k = (int)(n - i0 < FG_GRADCHECK_MAX_INPUTS ? n - i0 : FG_GRADCHECK_MAX_INPUTS);
            for (int64_t i = 0; i < n; i++) fg_set_requires_grad(all[i], i >= i0 && i < i0 + k);
            fg_gradcheck_opts go = {.eps = 1e-6, .atol = 1e-6, .rtol = 1e-4, .seed = o->seed};
            fg_gradcheck_result r;
            ok = fg_gradcheck(tiny_fn, &t, k, all + i0, &go, &r) == FG_OK;
            for (int i = 0; ok && i < k; i++) {
                if (r.max_abs_err[i] > *fd_err || isnan(r.max_abs_err[i])) *fd_err = r.max_abs_err[i];
                if (b == 0) n_elems += fg_numel(all[i0 + i]);
            }
            fd_pass = fd_pass && ok && r.passed;
        }
        for (int64_t i = 0; i < n; i++) fg_set_requires_grad(all[i], true);
    }
    *fm_rel = INFINITY;
    if (ok) {
        double fm_abs = 0;
        *fm_rel = 0;
        for (int64_t i = 0; i < n; i++) {
            fg_compare_result r;
            ok = ok && fg_compare(gf[i], gm[i], 0, 0, &r) == FG_OK;
            const double scale = ok ? fg_item(fg_max_all(fg_abs(gm[i]))) : 0;
            if (ok && r.max_abs_err > fm_abs) fm_abs = r.max_abs_err;
            if (ok && scale > 0 && r.max_abs_err / scale > *fm_rel) *fm_rel = r.max_abs_err / scale;
        }
        snprintf(line, len,
                 "f64, CPU, C=%lld (%lld/%lld heads) E=%d top-%lld, %lldx%lld tokens onto %d memory slots, "
                 "%d dropped: finite differences max abs err %.2e over %lld elements of %lld tensors (flash and "
                 "math); flash vs math max abs err %.2e (relative %.2e)",
                 (long long)C, (long long)o->q_heads, (long long)o->kv_heads, (int)E, (long long)o->top_k,
                 (long long)B, (long long)T, (int)M, (int)t.moe.n_dropped, *fd_err, (long long)n_elems, (long long)n,
                 fm_abs, *fm_rel);
    } else if (!line[0]) {
        snprintf(line, len, "error: %s", fg_last_error());
    }
    ok = ok && fd_pass && *fm_rel < 1e-10;
    free(all), free(gf), free(gm);
    fg_scope_end(s); /* x, the gradients' copies */
    fg_params_free(reg);
    fg_nn_norm_free(&t.ln);
    fg_nn_moe_free(&t.moe);
    return ok;
}

/* (2): the training model on the run's device, f32 (autocast off): loss
 * forward + backward on one batch with the router's attention on FLASH,
 * then on MATH; every parameter's gradient compared. 0: compared, 1: error,
 * 2: the routing differed (a near tie flipped by rounding: try another batch). */
static int check_model(model *m, const options *o, const dbatch *b, double *max_abs, double *max_rel,
                       const char **worst)
{
    const int64_t n = fg_params_count(m->reg), N = fg_numel(b->id), k = o->top_k;
    fg_tensor **g[2] = {calloc((size_t)n, sizeof(fg_tensor *)), calloc((size_t)n, sizeof(fg_tensor *))};
    int64_t *choice[2] = {malloc((size_t)(N * k) * sizeof(int64_t)), malloc((size_t)(N * k) * sizeof(int64_t))};
    int rc = g[0] && g[1] && choice[0] && choice[1] ? 0 : 1;
    fg_scope *s = fg_scope_begin();
    for (int i = 0; rc == 0 && i < 2; i++) {
        m->moe.router_attn.cfg.backend = i == 0 ? FG_ATTN_FLASH : FG_ATTN_MATH;
        fg_nn_moe_output mo;
        fg_tensor *loss = model_loss(m, o, b, false, NULL, false, &mo, NULL);
        if (!loss || fg_backward(loss) != FG_OK || !take_grads(m->reg, g[i]) ||
            fg_copy_to_host(mo.experts, choice[i], (size_t)(N * k) * sizeof(int64_t)) != FG_OK)
            rc = 1;
    }
    m->moe.router_attn.cfg.backend = FG_ATTN_AUTO;
    if (rc == 0 && memcmp(choice[0], choice[1], (size_t)(N * k) * sizeof(int64_t)) != 0) rc = 2;
    if (rc == 0 && !compare_grads(m->reg, g[0], g[1], max_abs, max_rel, worst)) rc = 1;
    fg_scope_end(s);
    free(g[0]), free(g[1]), free(choice[0]), free(choice[1]);
    return rc;
}

/* ---------------------------------------------------------------- evaluation */

typedef struct {
    double loss, acc;
    int64_t load[64], dropped, capacity, slots;
    int64_t route[64 * 64]; /* (domain, expert): value tokens whose first choice is the expert */
} eval_result;

/* The held-out set (hb on the host, db on the device), no gradient, no dropout. */
static bool evaluate(model *m, const task *t, const batch *hb, const dbatch *db, bool bf16, eval_result *r)
{
    const int64_t N = hb->B * t->T, E = m->moe.cfg.n_expert, k = m->moe.cfg.top_k;
    memset(r, 0, sizeof *r);
    bool prev = fg_set_grad_enabled(false);
    fg_scope *s = fg_scope_begin();
    fg_nn_moe_output mo;
    fg_tensor *logits = model_forward(m, db, false, NULL, bf16, &mo);
    fg_tensor *ce = fg_cross_entropy(logits, db->tgt, IGNORE, FG_REDUCE_MEAN);
    int64_t *pred = malloc((size_t)N * sizeof *pred), *ch = malloc((size_t)(N * k) * sizeof *ch);
    bool ok = ce && pred && ch &&
              fg_copy_to_host(fg_argmax(logits, -1, false), pred, (size_t)N * sizeof *pred) == FG_OK &&
              fg_copy_to_host(mo.experts, ch, (size_t)(N * k) * sizeof *ch) == FG_OK;
    if (ok) {
        r->loss = fg_item(ce);
        int64_t right = 0, counted = 0;
        for (int64_t i = 0; i < N; i++) {
            if (hb->tgt[i] == IGNORE) continue;
            counted++;
            right += pred[i] == hb->tgt[i];
            r->route[hb->dom[i / t->T] * E + ch[i * k]]++;
        }
        r->acc = (double)right / (double)counted;
        memcpy(r->load, m->moe.load, (size_t)E * sizeof *r->load);
        r->dropped = m->moe.n_dropped, r->capacity = m->moe.capacity, r->slots = N * k;
    }
    free(pred), free(ch);
    fg_scope_end(s);
    fg_set_grad_enabled(prev);
    return ok;
}

/* Per domain: its most-used expert and that expert's share of the domain's
 * value tokens (first choices). Returns the mean share. */
static double print_routing(const eval_result *r, int64_t D, int64_t E)
{
    double mean = 0;
    bool used[64] = {0};
    int distinct = 0;
    printf("          routing (eval, first choices):");
    for (int64_t d = 0; d < D; d++) {
        int64_t best = 0, tot = 0;
        for (int64_t e = 0; e < E; e++) {
            tot += r->route[d * E + e];
            if (r->route[d * E + e] > r->route[d * E + best]) best = e;
        }
        const double share = tot ? (double)r->route[d * E + best] / (double)tot : 0;
        mean += share / (double)D;
        distinct += !used[best];
        used[best] = true;
        printf(" d%lld->e%lld %.0f%%", (long long)d, (long long)best, 100 * share);
    }
    printf("; mean %.1f%%, %d of %lld domains on distinct experts\n", 100 * mean, distinct, (long long)D);
    return mean;
}

static void print_load(const char *what, const int64_t *load, int64_t E, int64_t dropped, int64_t slots)
{
    int64_t tot = 0;
    for (int64_t e = 0; e < E; e++) tot += load[e];
    printf("          load (%s):", what);
    for (int64_t e = 0; e < E; e++)
        printf(" e%lld %lld (%.1f%%)", (long long)e, (long long)load[e],
               tot ? 100.0 * (double)load[e] / (double)tot : 0);
    printf("; dropped %lld (%.2f%%)\n", (long long)dropped, slots ? 100.0 * (double)dropped / (double)slots : 0);
}

/* Every token's expert choices moved by one (the router's output columns
 * rotated), evaluated, then the weights restored. */
static bool evaluate_rotated(model *m, const task *t, const batch *hb, const dbatch *db, bool bf16, eval_result *r)
{
    fg_tensor *w = m->moe.router_attn.out_proj.weight; /* (Hq D, E) */
    const int64_t R = fg_size(w, 0), E = fg_size(w, 1);
    float *a = malloc((size_t)(R * E) * sizeof *a), *b = malloc((size_t)(R * E) * sizeof *b);
    fg_scope *s = fg_scope_begin();
    bool prev = fg_set_grad_enabled(false);
    bool ok = a && b && fg_to_f32_array(w, a, R * E) == FG_OK;
    for (int64_t i = 0; ok && i < R; i++)
        for (int64_t e = 0; e < E; e++) b[i * E + e] = a[i * E + (e + 1) % E];
    ok = ok && fg_copy_(w, fg_from_f32(b, FG_SHAPE(R, E), FG_F32, fg_device_of(w))) == FG_OK;
    ok = ok && evaluate(m, t, hb, db, bf16, r);
    ok = a && fg_copy_(w, fg_from_f32(a, FG_SHAPE(R, E), FG_F32, fg_device_of(w))) == FG_OK && ok;
    fg_set_grad_enabled(prev);
    fg_scope_end(s);
    free(a), free(b);
    return ok;
}

/* The MoE layer switched off: a capacity of one slot per expert drops all but
 * E tokens, which then pass through the residual connection unchanged. */
static bool evaluate_moe_off(model *m, const task *t, const batch *hb, const dbatch *db, bool bf16, eval_result *r)
{
    const double cf = m->moe.cfg.capacity_factor;
    m->moe.cfg.capacity_factor = 1e-300;
    bool ok = evaluate(m, t, hb, db, bf16, r);
    m->moe.cfg.capacity_factor = cf;
    return ok;
}

/* Gradient buffers alive (tensors, bytes): a parameter gets one at its first
 * gradient, e.g. an expert at its first tokens. */
static void grad_buffers(fg_params *reg, int64_t *n, int64_t *bytes)
{
    *n = *bytes = 0;
    for (int64_t i = 0; i < fg_params_count(reg); i++) {
        fg_tensor *gr = fg_grad(fg_params_at(reg, i)->t);
        if (gr) (*n)++, *bytes += fg_numel(gr) * (int64_t)fg_dtype_size(fg_dtype_of(gr));
    }
}

/* ---------------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    options o = {.device = "cpu"};
    int rc = parse_options(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : 2;
    const bool cuda = strcmp(o.device, "cuda") == 0;
    const fg_device dev = cuda ? FG_CUDA : FG_CPU;
    char desc[256] = "CPU";
    if (cuda && !fg_cuda_available()) { /* no GPU, or a CPU-only build */
        fprintf(stderr, PROG ": --device cuda: %s\n", fg_cuda_device_description(desc, sizeof desc));
        return 2;
    }
    if (cuda) fg_cuda_device_description(desc, sizeof desc);
    const bool bf16 = cuda; /* autocast for the matmuls on the GPU (it leaves CPU tensors alone) */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    task tk = {0};
    batch hb = {0}, eb = {0};
    model m = {0};
    fg_optimizer *opt = NULL;
    dbatch ev = {0};
    fg_generator *g = fg_generator_new(o.seed);
    bool ok = g && task_init(&tk, &o) && batch_alloc(&hb, &tk, o.batch) && batch_alloc(&eb, &tk, o.eval_batch);
    if (!ok) {
        fprintf(stderr, PROG ": out of memory\n");
        goto done;
    }
    if (model_init(&m, &o, g, dev) != FG_OK) {
        fprintf(stderr, PROG ": model: %s\n", fg_last_error());
        ok = false;
        goto done;
    }
    uint64_t data_rng = o.seed * 0x2545f4914f6cdd1dull + 1, eval_rng = ~o.seed;
    make_batch(&tk, &eval_rng, &eb);
    const int64_t E = o.experts, D = o.experts, T = o.seq, C = o.dim;
    const double ceiling = domain_blind_ceiling(&tk, &eb);
    printf(PROG " on %s (%s)\n", desc, bf16 ? "f32 master weights, bf16 autocast for the matmuls" : "f32");
    printf("task: %lld hidden domains, each a random linear teacher argmax(A_d u) from %lld features to %lld "
           "classes; %lld tokens a sequence, one the domain's marker; domain-blind ceiling %.1f%%\n",
           (long long)D, (long long)o.features, (long long)o.classes, (long long)T, 100 * ceiling);
    printf("model: C=%lld; attention pooling for the context, then a MoE whose router is GQA expert attention (%lld "
           "query heads over %lld KV heads, head dim %lld, Lq=%lld tokens onto Lkv=%lld memory slots); %lld experts "
           "(hidden %lld), top-%lld, capacity factor %g, aux weight %g; %lld parameters\n",
           (long long)C, (long long)o.q_heads, (long long)o.kv_heads, (long long)(C / o.q_heads), (long long)T,
           (long long)o.memory, (long long)E, (long long)o.expert_hidden, (long long)o.top_k, o.capacity,
           o.aux_weight, (long long)fg_params_numel(m.reg));
    if (o.memory == T) printf("note: --memory-slots equals --seq (Lkv = Lq)\n");

    /* ---- gradient checks ---- */
    double fd_err = INFINITY, fm_tiny = INFINITY, fm_abs = INFINITY, fm_rel = INFINITY;
    char line[512] = "";
    const bool tiny_ok = check_tiny(&o, g, &fd_err, &fm_tiny, line, sizeof line);
    printf("gradient check 1 (ln_2 + MoE layer): %s: %s\n", line, tiny_ok ? "ok" : "FAIL");
    const char *worst = "";
    int cm = 2;
    /* at most 8 sequences: the fewer the tokens, the less likely a near tie routes one differently */
    batch cb = {0};
    const int64_t cB = o.batch < 8 ? o.batch : 8;
    if (!batch_alloc(&cb, &tk, cB)) cm = 1;
    for (int tries = 0; cm == 2 && tries < 5; tries++) {
        uint64_t r = data_rng + 0x1234567ull * (uint64_t)(tries + 1);
        make_batch(&tk, &r, &cb);
        fg_scope *s = fg_scope_begin();
        dbatch b;
        cm = to_device(&tk, &cb, dev, &b) ? check_model(&m, &o, &b, &fm_abs, &fm_rel, &worst) : 1;
        fg_scope_end(s);
    }
    batch_free(&cb);
    /* f32: the two backends round differently (on the GPU flash runs 3xTF32
     * tensor-core matmuls); a wrong gradient is off by the order of the gradient. */
    const double f32_tol = 1e-3;
    const bool model_ok = cm == 0 && fm_rel <= f32_tol;
    if (cm == 0)
        printf("gradient check 2 (the training model, f32, %s, %lldx%lld tokens, every parameter): flash vs math "
               "max abs err %.2e, relative to each parameter's largest gradient %.2e (%s; tolerance %g): %s\n",
               cuda ? "cuda" : "cpu", (long long)cB, (long long)T, fm_abs, fm_rel, worst, f32_tol,
               model_ok ? "ok" : "FAIL");
    else if (cm == 1)
        printf("gradient check 2: error: %s\n", fg_last_error());
    else
        printf("gradient check 2: the routing differed between the backends on 5 batches (near ties): FAIL\n");
    const double fm_max = fm_tiny > fm_rel ? fm_tiny : fm_rel;
    ok = tiny_ok && model_ok;
    printf("gradient check: flash vs math max err %.2e, finite differences max err %.2e: %s\n", fm_max, fd_err,
           ok ? "PASS" : "FAIL");
    if (!ok) goto done;
    printf("gradient checks took %.1f s\n", elapsed(&t0));

    /* ---- training ---- */
    fg_adamw_opts ao = fg_adamw_defaults();
    ao.lr = o.lr;
    opt = fg_adamw_new(m.reg, &ao);
    if (!opt || !to_device(&tk, &eb, dev, &ev)) {
        fprintf(stderr, PROG ": setup: %s\n", fg_last_error());
        ok = false;
        goto done;
    }
    const int64_t warmup = o.steps / 20, N = o.batch * T;
    printf("training: %lld steps of %lld sequences, AdamW lr %g (warmup %lld, cosine to %g), clip 1.0; eval on "
           "%lld held-out sequences every %lld steps\n",
           (long long)o.steps, (long long)o.batch, o.lr, (long long)warmup, o.lr / 10, (long long)o.eval_batch,
           (long long)o.eval_interval);
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sum_ce = 0, sum_aux = 0;
    int64_t n_int = 0, load[64] = {0}, dropped = 0, slots = 0;
    fg_memory_stats mem1 = {0}, mem2 = {0};
    int64_t g1 = 0, gb1 = 0, g2 = 0, gb2 = 0;
    eval_result er = {0};
    for (int64_t step = 0; ok && step < o.steps; step++) {
        fg_scope *s = fg_scope_begin();
        make_batch(&tk, &data_rng, &hb);
        fg_nn_moe_output mo;
        fg_tensor *ce = NULL, *loss = NULL;
        dbatch b;
        double norm = 0;
        ok = fg_optimizer_set_lr(opt, fg_lr_warmup_cosine(step, o.lr, o.lr / 10, warmup, o.steps)) == FG_OK &&
             to_device(&tk, &hb, dev, &b);
        if (ok) loss = model_loss(&m, &o, &b, true, g, bf16, &mo, &ce);
        ok = loss && fg_backward(loss) == FG_OK;
        if (ok && fg_clip_grad_norm(m.reg, 1.0, &norm) != FG_OK) { /* NaN/inf norm: say so, skip the step */
            fprintf(stderr, PROG ": step %lld: %s (step skipped)\n", (long long)step + 1, fg_last_error());
            fg_clear_error();
        } else if (ok) {
            ok = fg_optimizer_step(opt) == FG_OK;
        }
        ok = ok && fg_optimizer_zero_grad(opt) == FG_OK;
        if (ok) {
            sum_ce += fg_item(ce), sum_aux += fg_item(mo.aux_loss), n_int++;
            for (int64_t e = 0; e < E; e++) load[e] += m.moe.load[e];
            dropped += m.moe.n_dropped, slots += N * o.top_k;
        }
        fg_scope_end(s);
        if (!ok) {
            fprintf(stderr, PROG ": step %lld: %s\n", (long long)step + 1, fg_last_error());
            break;
        }
        if (step == 0) fg_get_memory_stats(&mem1), grad_buffers(m.reg, &g1, &gb1);
        if ((step + 1) % o.eval_interval == 0 || step + 1 == o.steps) {
            if (!(ok = evaluate(&m, &tk, &eb, &ev, bf16, &er))) {
                fprintf(stderr, PROG ": eval: %s\n", fg_last_error());
                break;
            }
            printf("step %5lld  train loss %.4f (aux %.3f)  eval loss %.4f  acc %5.1f%%  [%.1f s]\n",
                   (long long)(step + 1), sum_ce / (double)n_int, sum_aux / (double)n_int, er.loss, 100 * er.acc,
                   elapsed(&t1));
            char what[64];
            snprintf(what, sizeof what, "train, last %lld steps", (long long)n_int);
            print_load(what, load, E, dropped, slots);
            print_routing(&er, D, E);
            fflush(stdout);
            sum_ce = sum_aux = 0, n_int = 0, dropped = 0, slots = 0;
            memset(load, 0, sizeof load);
        }
    }
    if (!ok) goto done;
    fg_get_memory_stats(&mem2), grad_buffers(m.reg, &g2, &gb2);
    const double train_s = elapsed(&t1);
    print_load("eval", er.load, E, er.dropped, er.slots);
    eval_result rot, off;
    ok = evaluate_rotated(&m, &tk, &eb, &ev, bf16, &rot) && evaluate_moe_off(&m, &tk, &eb, &ev, bf16, &off);
    if (!ok) {
        fprintf(stderr, PROG ": ablations: %s\n", fg_last_error());
        goto done;
    }
    printf("ablations: eval accuracy %.1f%% as trained; %.1f%% with the router's expert columns rotated by one "
           "(every token sent to another expert); %.1f%% with the MoE layer off (%lld of %lld tokens dropped)\n",
           100 * er.acc, 100 * rot.acc, 100 * off.acc, (long long)off.dropped, (long long)off.slots);
    /* flat: what is alive after the last step is what was alive after the first, apart from
     * the gradient buffers of parameters that got their first gradient later */
    const fg_device other = dev == FG_CPU ? FG_CUDA : FG_CPU;
    const bool flat = mem2.live_tensors - g2 == mem1.live_tensors - g1 && mem2.live_nodes == mem1.live_nodes &&
                      mem2.live_bytes[dev] - gb2 == mem1.live_bytes[dev] - gb1 &&
                      mem2.live_bytes[other] == mem1.live_bytes[other];
    printf("memory: after step 1 %lld tensors, %lld bytes (%lld gradient buffers); after step %lld %lld tensors, "
           "%lld bytes (%lld gradient buffers): %s\n",
           (long long)mem1.live_tensors, (long long)mem1.live_bytes[dev], (long long)g1, (long long)o.steps,
           (long long)mem2.live_tensors, (long long)mem2.live_bytes[dev], (long long)g2, flat ? "flat" : "GREW");
    const bool acc_ok = er.acc >= o.min_accuracy;
    ok = flat && acc_ok;
    printf("training took %.1f s (%.1f ms a step), %.1f s in all\n", train_s, 1e3 * train_s / (double)o.steps,
           elapsed(&t0));
    if (o.min_accuracy > 0)
        printf("final eval accuracy %.1f%% (threshold %.0f%%, domain-blind ceiling %.1f%%): %s\n", 100 * er.acc,
               100 * o.min_accuracy, 100 * ceiling, ok ? "PASS" : "FAIL");
    else
        printf("final eval accuracy %.1f%% (no threshold; domain-blind ceiling %.1f%%): %s\n", 100 * er.acc,
               100 * ceiling, ok ? "PASS" : "FAIL");
done:
    fg_free(ev.u), fg_free(ev.id), fg_free(ev.tgt);
    fg_optimizer_free(opt);
    model_free(&m);
    fg_generator_free(g);
    batch_free(&hb), batch_free(&eb);
    free(tk.A);
    return ok ? 0 : 1;
}
