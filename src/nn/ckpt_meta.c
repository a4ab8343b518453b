/* Checkpoint metadata (include/flashgrad/checkpoint.h): ordered string pairs,
 * and exact decimal encodings of the numbers a resume needs (step, generator
 * seed and offset). Linear lookups: a checkpoint has a handful of keys. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include "ckpt_internal.h"

static const char *OP = "checkpoint metadata";

char *fg__ckpt_strdup(const char *s)
{
    const size_t len = strlen(s) + 1;
    char *c = malloc(len);
    if (c) memcpy(c, s, len);
    return c;
}

fg_ckpt_meta *fg_ckpt_meta_new(void)
{
    fg_ckpt_meta *m = calloc(1, sizeof *m);
    if (!m) fg__err(FG_ERR_OOM, "%s: out of host memory", OP);
    return m;
}

void fg_ckpt_meta_clear(fg_ckpt_meta *m)
{
    if (!m) return;
    for (int64_t i = 0; i < m->n; i++) {
        free(m->key[i]);
        free(m->val[i]);
    }
    m->n = 0;
}

void fg_ckpt_meta_free(fg_ckpt_meta *m)
{
    if (!m) return;
    fg_ckpt_meta_clear(m);
    free(m->key);
    free(m->val);
    free(m);
}

static int64_t find(const fg_ckpt_meta *m, const char *key)
{
    for (int64_t i = 0; i < m->n; i++)
        if (!strcmp(m->key[i], key)) return i;
    return -1;
}

fg_status fg_ckpt_meta_set(fg_ckpt_meta *m, const char *key, const char *value)
{
    if (!m) return fg__err_null(OP, "metadata");
    if (!key) return fg__err_null(OP, "key");
    if (!value) return fg__err_null(OP, "value");
    if (!*key) return fg__err(FG_ERR_INVALID, "%s: empty key", OP);
    char *v = fg__ckpt_strdup(value);
    if (!v) return fg__err(FG_ERR_OOM, "%s: out of host memory setting '%s'", OP, key);
    const int64_t i = find(m, key);
    if (i >= 0) {
        free(m->val[i]);
        m->val[i] = v;
        return FG_OK;
    }
    if (m->n == m->cap) {
        const int64_t cap = m->cap ? 2 * m->cap : 8;
        char **k = realloc(m->key, sizeof *k * (size_t)cap);
        if (k) m->key = k;
        char **vv = k ? realloc(m->val, sizeof *vv * (size_t)cap) : NULL;
        if (!vv) {
            free(v);
            return fg__err(FG_ERR_OOM, "%s: out of host memory setting '%s'", OP, key);
        }
        m->val = vv;
        m->cap = cap;
    }
    char *k = fg__ckpt_strdup(key);
    if (!k) {
        free(v);
        return fg__err(FG_ERR_OOM, "%s: out of host memory setting '%s'", OP, key);
    }
    m->key[m->n] = k;
    m->val[m->n++] = v;
    return FG_OK;
}

const char *fg_ckpt_meta_get(const fg_ckpt_meta *m, const char *key)
{
    if (!m || !key) return NULL;
    const int64_t i = find(m, key);
    return i >= 0 ? m->val[i] : NULL;
}

int64_t fg_ckpt_meta_count(const fg_ckpt_meta *m) { return m ? m->n : 0; }

fg_status fg_ckpt_meta_at(const fg_ckpt_meta *m, int64_t i, const char **key, const char **value)
{
    if (!m) return fg__err_null(OP, "metadata");
    if (i < 0 || i >= m->n) return fg__err(FG_ERR_INDEX, "%s: pair %lld of %lld", OP, (long long)i, (long long)m->n);
    if (key) *key = m->key[i];
    if (value) *value = m->val[i];
    return FG_OK;
}

/* ---- typed values ---- */
static fg_status lookup(const fg_ckpt_meta *m, const char *key, const char **v)
{
    if (!m) return fg__err_null(OP, "metadata");
    if (!key) return fg__err_null(OP, "key");
    *v = fg_ckpt_meta_get(m, key);
    if (!*v) return fg__err(FG_ERR_INVALID, "%s: no key '%s'", OP, key);
    return FG_OK;
}

static fg_status bad_number(const char *key, const char *v, const char *what)
{
    return fg__err(FG_ERR_FORMAT, "%s: '%s' = \"%.64s\" is not %s", OP, key, v, what);
}

fg_status fg_ckpt_meta_set_u64(fg_ckpt_meta *m, const char *key, uint64_t v)
{
    char b[32];
    snprintf(b, sizeof b, "%" PRIu64, v);
    return fg_ckpt_meta_set(m, key, b);
}

fg_status fg_ckpt_meta_get_u64(const fg_ckpt_meta *m, const char *key, uint64_t *out)
{
    const char *v;
    if (lookup(m, key, &v) != FG_OK) return fg_last_status();
    if (!out) return fg__err_null(OP, "out");
    /* Digits only: strtoull would accept blanks, a sign and wrap "-1". */
    uint64_t x = 0;
    if (!*v) return bad_number(key, v, "an unsigned 64-bit integer");
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9') return bad_number(key, v, "an unsigned 64-bit integer");
        const uint64_t d = (uint64_t)(*p - '0');
        if (x > (UINT64_MAX - d) / 10) return bad_number(key, v, "an unsigned 64-bit integer (overflow)");
        x = 10 * x + d;
    }
    *out = x;
    return FG_OK;
}

fg_status fg_ckpt_meta_set_i64(fg_ckpt_meta *m, const char *key, int64_t v)
{
    char b[32];
    snprintf(b, sizeof b, "%" PRId64, v);
    return fg_ckpt_meta_set(m, key, b);
}

fg_status fg_ckpt_meta_get_i64(const fg_ckpt_meta *m, const char *key, int64_t *out)
{
    const char *v;
    if (lookup(m, key, &v) != FG_OK) return fg_last_status();
    if (!out) return fg__err_null(OP, "out");
    const char *p = v + (*v == '-');
    if (*p < '0' || *p > '9') return bad_number(key, v, "a signed 64-bit integer");
    errno = 0;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (*end) return bad_number(key, v, "a signed 64-bit integer");
    if (errno == ERANGE) return bad_number(key, v, "a signed 64-bit integer (overflow)");
    *out = x;
    return FG_OK;
}

fg_status fg_ckpt_meta_set_f64(fg_ckpt_meta *m, const char *key, double v)
{
    char b[40];
    snprintf(b, sizeof b, "%.17g", v); /* 17 digits: every double reads back exactly */
    return fg_ckpt_meta_set(m, key, b);
}

fg_status fg_ckpt_meta_get_f64(const fg_ckpt_meta *m, const char *key, double *out)
{
    const char *v;
    if (lookup(m, key, &v) != FG_OK) return fg_last_status();
    if (!out) return fg__err_null(OP, "out");
    if (!*v || *v == ' ' || *v == '\t' || *v == '\n') return bad_number(key, v, "a number");
    char *end;
    const double x = strtod(v, &end);
    if (*end) return bad_number(key, v, "a number");
    *out = x;
    return FG_OK;
}

fg_status fg_ckpt_meta_set_step(fg_ckpt_meta *m, uint64_t step) { return fg_ckpt_meta_set_u64(m, FG_CKPT_STEP_KEY, step); }
fg_status fg_ckpt_meta_get_step(const fg_ckpt_meta *m, uint64_t *step)
{
    return fg_ckpt_meta_get_u64(m, FG_CKPT_STEP_KEY, step);
}

static fg_status gen_keys(const char *prefix, char *seed, char *offset, size_t len)
{
    if (!prefix) prefix = "rng";
    if (!*prefix) return fg__err(FG_ERR_INVALID, "%s: empty generator prefix", OP);
    if ((size_t)snprintf(seed, len, "%s.seed", prefix) >= len || (size_t)snprintf(offset, len, "%s.offset", prefix) >= len)
        return fg__err(FG_ERR_INVALID, "%s: generator prefix '%.40s...' longer than %zu bytes", OP, prefix, len - 8);
    return FG_OK;
}

fg_status fg_ckpt_meta_set_generator(fg_ckpt_meta *m, const char *prefix, const fg_generator *g)
{
    if (!m) return fg__err_null(OP, "metadata");
    if (!g) return fg__err_null(OP, "generator");
    char ks[256], ko[256];
    if (gen_keys(prefix, ks, ko, sizeof ks) != FG_OK) return fg_last_status();
    if (fg_ckpt_meta_set_u64(m, ks, fg_generator_seed(g)) != FG_OK) return fg_last_status();
    return fg_ckpt_meta_set_u64(m, ko, fg_generator_offset(g));
}

fg_status fg_ckpt_meta_get_generator(const fg_ckpt_meta *m, const char *prefix, fg_generator *g)
{
    if (!m) return fg__err_null(OP, "metadata");
    if (!g) return fg__err_null(OP, "generator");
    char ks[256], ko[256];
    uint64_t seed, offset;
    if (gen_keys(prefix, ks, ko, sizeof ks) != FG_OK || fg_ckpt_meta_get_u64(m, ks, &seed) != FG_OK ||
        fg_ckpt_meta_get_u64(m, ko, &offset) != FG_OK)
        return fg_last_status();
    fg_generator_set_state(g, seed, offset);
    return FG_OK;
}
