/* Storage blocks (CPU: 64-byte aligned heap; CUDA: device memory) and the
 * process-wide memory accounting behind fg_get_memory_stats. */
#include <stdatomic.h>
#include <stdlib.h>
#include "internal.h"

static _Atomic int64_t g_live_tensors, g_live_storages, g_live_nodes;
static _Atomic int64_t g_live_bytes[2], g_peak_bytes[2];

void fg__stats_tensor(int delta) { atomic_fetch_add(&g_live_tensors, delta); }
void fg__stats_node(int delta) { atomic_fetch_add(&g_live_nodes, delta); }

void fg__stats_storage(fg_device dev, int64_t bytes, int delta)
{
    atomic_fetch_add(&g_live_storages, delta);
    int64_t now = atomic_fetch_add(&g_live_bytes[dev], bytes * delta) + bytes * delta;
    int64_t peak = atomic_load(&g_peak_bytes[dev]);
    while (now > peak && !atomic_compare_exchange_weak(&g_peak_bytes[dev], &peak, now)) {
    }
}

void fg_get_memory_stats(fg_memory_stats *out)
{
    if (!out) return;
    out->live_tensors = atomic_load(&g_live_tensors);
    out->live_storages = atomic_load(&g_live_storages);
    out->live_nodes = atomic_load(&g_live_nodes);
    for (int d = 0; d < 2; d++) {
        out->live_bytes[d] = atomic_load(&g_live_bytes[d]);
        out->peak_bytes[d] = atomic_load(&g_peak_bytes[d]);
    }
}

fg_storage *fg__storage_new(fg_device dev, size_t nbytes)
{
    fg_storage *s = malloc(sizeof *s);
    if (!s) {
        fg__err(FG_ERR_OOM, "storage: out of host memory for the storage header");
        return NULL;
    }
    s->refcount = 1;
    s->device = dev;
    s->nbytes = nbytes;
    s->data = NULL;
    s->external = false;
    if (dev == FG_CPU) {
        /* Round up so aligned_alloc's size is a multiple of the alignment; never 0. */
        size_t alloc = (nbytes + 63) / 64 * 64;
        if (alloc == 0) alloc = 64;
        s->data = aligned_alloc(64, alloc);
        if (!s->data) {
            free(s);
            fg__err(FG_ERR_OOM, "storage: cannot allocate %zu bytes of host memory", nbytes);
            return NULL;
        }
    } else {
        if (fg__cuda_malloc(&s->data, nbytes ? nbytes : 1) != FG_OK) {
            free(s);
            return NULL;
        }
    }
    fg__stats_storage(dev, (int64_t)nbytes, 1);
    return s;
}

fg_storage *fg__storage_external(fg_device dev, void *data, size_t nbytes)
{
    fg_storage *s = malloc(sizeof *s);
    if (!s) {
        fg__err(FG_ERR_OOM, "storage: out of host memory for the storage header");
        return NULL;
    }
    *s = (fg_storage){.refcount = 1, .device = dev, .data = data, .nbytes = nbytes, .external = true};
    return s;
}

void fg__storage_unref(fg_storage *s)
{
    if (!s || --s->refcount > 0) return;
    if (s->external) { /* the owner frees the data; it was never counted */
        free(s);
        return;
    }
    fg__stats_storage(s->device, (int64_t)s->nbytes, -1);
    if (s->device == FG_CPU)
        free(s->data);
    else
        fg__cuda_free(s->data, s->nbytes ? s->nbytes : 1);
    free(s);
}
