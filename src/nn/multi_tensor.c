/* Chunk tables of the multi-tensor kernels (src/nn/multi_tensor.h). */
#include <stdlib.h>
#include "nn/multi_tensor.h"

void fg__mt_reset(fg__mt_table *t) { t->n = 0; }

fg_status fg__mt_add(fg__mt_table *t, const char *op, float *p, float *g, float *m, float *v, int64_t numel,
                     bool decay)
{
    const int64_t k = (numel + FG_K_MT_CHUNK - 1) / FG_K_MT_CHUNK;
    if (t->n + k > t->cap) {
        int64_t cap = t->cap ? t->cap : 64;
        while (cap < t->n + k) cap *= 2;
        fg_k_mt_chunk *h = realloc(t->host, sizeof *h * (size_t)cap);
        if (!h) return fg__err(FG_ERR_OOM, "%s: out of host memory for a table of %lld chunks", op, (long long)cap);
        t->host = h, t->cap = cap;
    }
    for (int64_t c = 0, off = 0; c < k; c++, off += FG_K_MT_CHUNK) {
        fg_k_mt_chunk *r = &t->host[t->n++];
        memset(r, 0, sizeof *r); /* the padding too: tables are compared bytewise */
        r->p = p ? p + off : NULL;
        r->g = g ? g + off : NULL;
        r->m = m ? m + off : NULL;
        r->v = v ? v + off : NULL;
        r->n = numel - off < FG_K_MT_CHUNK ? numel - off : FG_K_MT_CHUNK;
        r->decay = decay;
    }
    return FG_OK;
}

fg_status fg__mt_upload(fg__mt_table *t, const char *op, const fg_k_mt_chunk **dev)
{
    const size_t bytes = sizeof(fg_k_mt_chunk) * (size_t)t->n;
    *dev = t->dev;
    if (t->n == t->sent_n && (bytes == 0 || !memcmp(t->host, t->sent, bytes))) return FG_OK;
    if (t->n > t->sent_cap) {
        fg_k_mt_chunk *s = realloc(t->sent, bytes);
        if (!s) return fg__err(FG_ERR_OOM, "%s: out of host memory for a table of %lld chunks", op, (long long)t->n);
        t->sent = s, t->sent_cap = t->n;
    }
    if (bytes > t->dev_bytes) {
        /* One stream: a block freed here may be reused at once (later work is ordered after). */
        if (t->dev) fg__cuda_free(t->dev, t->dev_bytes);
        t->dev = NULL, t->dev_bytes = 0, t->sent_n = 0;
        if (fg__cuda_malloc(&t->dev, bytes) != FG_OK) return fg_last_status();
        t->dev_bytes = bytes;
    }
    t->sent_n = 0; /* invalid until the copy succeeds */
    if (bytes && fg__cuda_memcpy_h2d(t->dev, t->host, bytes) != FG_OK) return fg_last_status();
    if (bytes) memcpy(t->sent, t->host, bytes);
    t->sent_n = t->n;
    *dev = t->dev;
    return FG_OK;
}

void fg__mt_release(fg__mt_table *t)
{
    if (!t) return;
    if (t->dev) fg__cuda_free(t->dev, t->dev_bytes);
    free(t->host);
    free(t->sent);
    memset(t, 0, sizeof *t);
}
