/* Philox4x32-10 (Salmon et al., SC'11) in plain C and the random tensor
 * creators. The word layout follows cuRAND's device API so the CUDA backend
 * can reproduce every number bit for bit (see random.h). */
#include <stdlib.h>
#include "internal.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

struct fg_generator {
    uint64_t seed;
    uint64_t offset; /* in 4-word counter blocks */
};

void fg_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

fg_generator *fg_generator_new(uint64_t seed)
{
    fg_generator *g = malloc(sizeof *g);
    if (!g) {
        fg__err(FG_ERR_OOM, "fg_generator_new: out of memory");
        return NULL;
    }
    g->seed = seed;
    g->offset = 0;
    return g;
}

void fg_generator_free(fg_generator *g) { free(g); }

void fg_generator_set_state(fg_generator *g, uint64_t seed, uint64_t offset)
{
    if (!g) return;
    g->seed = seed;
    g->offset = offset;
}

uint64_t fg_generator_seed(const fg_generator *g) { return g ? g->seed : 0; }
uint64_t fg_generator_offset(const fg_generator *g) { return g ? g->offset : 0; }

uint64_t fg_generator_advance(fg_generator *g, uint64_t n_words)
{
    if (!g) g = fg_default_generator();
    uint64_t start = g->offset;
    g->offset += (n_words + 3) / 4;
    return start;
}

static _Thread_local fg_generator tl_default = {0x5eed, 0};
fg_generator *fg_default_generator(void) { return &tl_default; }

/* Word i of a draw that starts at counter block `base`. Blocks are generated
 * once per 4 words by the callers below. */
static void philox_block(uint64_t seed, uint64_t block, uint32_t out[4])
{
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), 0, 0};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    fg_philox4x32_10(ctr, key, out);
}

/* cuRAND's curand_uniform: (0, 1], never 0, so log() in Box-Muller is finite. */
static inline float u32_to_uniform(uint32_t x) { return (float)x * 2.3283064e-10f + 2.3283064e-10f / 2.0f; }

typedef enum { DRAW_UNIFORM, DRAW_NORMAL, DRAW_INT } draw_kind;

/* The next value below h in a sign-magnitude 16-bit float format (bf16, f16). */
static uint16_t half_bits_below(uint16_t h)
{
    if ((h & 0x7fffu) == 0) return 0x8001u;
    return (h & 0x8000u) ? (uint16_t)(h + 1) : (uint16_t)(h - 1);
}

/* v as stored in dtype dt (a float dtype), moved down to the largest stored
 * value below hi when rounding lands on or above it: [lo, hi) must hold for
 * what the tensor holds, not only for the double (1 - 2^-33 is 1.0 in f32). */
static double below_hi(double v, double hi, fg_dtype dt)
{
    switch (dt) {
    case FG_F64:
        return v < hi ? v : nextafter(hi, -INFINITY);
    case FG_F32: {
        float f = (float)v;
        while ((double)f >= hi) f = nextafterf(f, -INFINITY);
        return f;
    }
    case FG_BF16: {
        uint16_t h = fg_float_to_bf16((float)v);
        while ((double)fg_bf16_to_float(h) >= hi) h = half_bits_below(h);
        return fg_bf16_to_float(h);
    }
    case FG_F16: {
        uint16_t h = fg_float_to_f16((float)v);
        while ((double)fg_f16_to_float(h) >= hi) h = half_bits_below(h);
        return fg_f16_to_float(h);
    }
    default:
        return v;
    }
}

/* Float draws pass a, b (uniform: [a, b); normal: mean a, std b); integer
 * draws pass ilo and span (values ilo + word % span, computed exactly). */
static fg_tensor *draw(const char *op, draw_kind kind, fg_generator *g, double a, double b, int64_t ilo,
                       uint64_t span, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev)
{
    int64_t n;
    if (fg__check_shape(op, ndim, shape, &n) != FG_OK) return NULL;
    if (kind != DRAW_INT && !fg_dtype_is_float(dt)) {
        fg__err(FG_ERR_DTYPE, "%s: needs a floating-point dtype, got %s", op, fg_dtype_name(dt));
        return NULL;
    }
    if (kind == DRAW_INT && dt != FG_I32 && dt != FG_I64) {
        fg__err(FG_ERR_DTYPE, "%s: needs i32 or i64, got %s", op, fg_dtype_name(dt));
        return NULL;
    }
    /* Device problems are found before the generator advances: a failed draw consumes nothing. */
    if (dev != FG_CPU && (dev != FG_CUDA || !fg_cuda_available())) {
        fg__err(FG_ERR_DEVICE, "%s: device %s is not available", op, fg_device_name(dev));
        return NULL;
    }
    if (!g) g = fg_default_generator();
    /* Normals use two words per element (Box-Muller pairs), like curand_normal2. */
    uint64_t n_words = kind == DRAW_NORMAL ? (uint64_t)((n + 1) / 2) * 2 : (uint64_t)n;
    if (dev == FG_CUDA) {
        /* Generated on the device with the same counter layout (kernels/random.cu):
         * the generator advances exactly as on the CPU, and only once the tensor
         * exists and the kernel is queued, so a failed draw consumes nothing. */
        fg_tensor *t = fg__new(op, ndim, shape, dt, FG_CUDA);
        if (!t) return NULL;
        if (n > 0 && FG_CUDA_CALL(op, fg_k_draw(fg__data(t), (int)dt,
                                                kind == DRAW_UNIFORM  ? FG_K_DRAW_UNIFORM
                                                : kind == DRAW_NORMAL ? FG_K_DRAW_NORMAL
                                                                      : FG_K_DRAW_INT,
                                                g->seed, g->offset, n, a, b, ilo, span, fg__cuda_stream())) != FG_OK) {
            fg_free(t);
            return NULL;
        }
        fg_generator_advance(g, n_words);
        return t;
    }
    size_t esz = kind == DRAW_INT ? sizeof(int64_t) : sizeof(double);
    void *mem = malloc((size_t)(n ? n : 1) * esz);
    if (!mem) {
        fg__err(FG_ERR_OOM, "%s: out of memory for %lld elements", op, (long long)n);
        return NULL;
    }
    double *buf = mem;
    int64_t *ibuf = mem;
    uint64_t base = fg_generator_advance(g, n_words);
    uint32_t blk[4];
    uint64_t cur = UINT64_MAX;
    for (int64_t i = 0; i < n; i++) {
        if (kind == DRAW_NORMAL) {
            if (i & 1) continue;
            uint64_t w = (uint64_t)i; /* words i, i+1 sit in one block since i is even */
            if (w / 4 != cur) philox_block(g->seed, base + (cur = w / 4), blk);
            float u = u32_to_uniform(blk[w % 4]);
            float v = u32_to_uniform(blk[w % 4 + 1]);
            double r = sqrt(-2.0 * log((double)u)), th = 2.0 * M_PI * (double)v;
            buf[i] = a + b * r * sin(th);
            if (i + 1 < n) buf[i + 1] = a + b * r * cos(th);
        } else {
            uint64_t w = (uint64_t)i;
            if (w / 4 != cur) philox_block(g->seed, base + (cur = w / 4), blk);
            uint32_t x = blk[w % 4];
            if (kind == DRAW_UNIFORM) {
                double u = 1.0 - (double)u32_to_uniform(x); /* [0, 1) */
                buf[i] = a + (b - a) * u;
                if (a < b) buf[i] = below_hi(buf[i], b, dt);
            } else {
                ibuf[i] = (int64_t)((uint64_t)ilo + (uint64_t)x % span); /* wraps like the exact sum */
            }
        }
    }
    fg_tensor *t;
    if (kind == DRAW_INT && dt == FG_I32) { /* the range was checked to fit i32 */
        int32_t *i32 = malloc((size_t)(n ? n : 1) * sizeof *i32);
        if (!i32) {
            free(mem);
            fg__err(FG_ERR_OOM, "%s: out of memory for %lld elements", op, (long long)n);
            return NULL;
        }
        for (int64_t i = 0; i < n; i++) i32[i] = (int32_t)ibuf[i];
        t = fg_from_data(i32, ndim, shape, FG_I32, dev);
        free(i32);
    } else if (kind == DRAW_INT) {
        t = fg_from_data(mem, ndim, shape, FG_I64, dev);
    } else {
        t = fg_from_f64(buf, ndim, shape, dt, dev);
    }
    free(mem);
    return t;
}

fg_tensor *fg_rand(fg_generator *g, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev)
{
    return draw("fg_rand", DRAW_UNIFORM, g, 0.0, 1.0, 0, 0, ndim, shape, dt, dev);
}

fg_tensor *fg_uniform(fg_generator *g, double lo, double hi, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev)
{
    if (!(lo <= hi) || !isfinite(lo) || !isfinite(hi)) {
        fg__err(FG_ERR_INVALID, "fg_uniform: need finite lo <= hi, got [%g, %g)", lo, hi);
        return NULL;
    }
    return draw("fg_uniform", DRAW_UNIFORM, g, lo, hi, 0, 0, ndim, shape, dt, dev);
}

fg_tensor *fg_randn(fg_generator *g, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev)
{
    return draw("fg_randn", DRAW_NORMAL, g, 0.0, 1.0, 0, 0, ndim, shape, dt, dev);
}

fg_tensor *fg_normal(fg_generator *g, double mean, double std, int ndim, const int64_t *shape, fg_dtype dt,
                     fg_device dev)
{
    if (!(std >= 0) || !isfinite(mean) || !isfinite(std)) {
        fg__err(FG_ERR_INVALID, "fg_normal: need finite mean and std >= 0, got %g, %g", mean, std);
        return NULL;
    }
    return draw("fg_normal", DRAW_NORMAL, g, mean, std, 0, 0, ndim, shape, dt, dev);
}

fg_tensor *fg_randint(fg_generator *g, int64_t lo, int64_t hi, int ndim, const int64_t *shape, fg_dtype dt,
                      fg_device dev)
{
    /* Unsigned difference: hi - lo may not fit int64. */
    uint64_t span = (uint64_t)hi - (uint64_t)lo;
    if (hi <= lo || span > ((uint64_t)1 << 32)) {
        fg__err(FG_ERR_INVALID, "fg_randint: need lo < hi with hi - lo <= 2^32, got [%lld, %lld)", (long long)lo,
                (long long)hi);
        return NULL;
    }
    if (dt == FG_I32 && (lo < INT32_MIN || hi - 1 > INT32_MAX)) {
        fg__err(FG_ERR_INVALID, "fg_randint: range [%lld, %lld) does not fit i32", (long long)lo, (long long)hi);
        return NULL;
    }
    return draw("fg_randint", DRAW_INT, g, 0.0, 0.0, lo, span, ndim, shape, dt, dev);
}
