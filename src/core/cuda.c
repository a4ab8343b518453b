/* Host-side CUDA glue: device discovery, memory, transfers, and status mapping.
 * Without a CUDA build every entry reports FG_ERR_DEVICE / false. */
#include <stdio.h>
#include <stdlib.h>
#include "config.h"
#include "internal.h"

#ifdef FG_HAVE_CUDA
#include <pthread.h>
#include <stdatomic.h>
#include <cuda_runtime_api.h>

static fg_status cuda_status(const char *what, cudaError_t e)
{
    if (e == cudaSuccess) return FG_OK;
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError(); /* an OOM is not sticky: clear it so the process goes on */
        return fg__err(FG_ERR_OOM, "%s: CUDA out of memory (%s)", what, cudaGetErrorString(e));
    }
    return fg__err(FG_ERR_CUDA, "%s: CUDA error %d: %s", what, (int)e, cudaGetErrorString(e));
}

bool fg_cuda_compiled(void) { return true; }

int fg_cuda_device_count(void)
{
    static int cached = -1;
    if (cached < 0) {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess) {
            cudaGetLastError();
            n = 0;
        }
        cached = n;
        if (n > 0) atexit(fg_cuda_shutdown); /* runs before the CUDA runtime's own teardown */
    }
    return cached;
}

bool fg_cuda_available(void) { return fg_cuda_device_count() > 0; }

/* Host waits for the device (fg_cuda_memory_stats.n_host_syncs). */
static atomic_llong g_host_syncs = 0;

/* ---- the device-side sticky error record (internal.h) ----
 * Allocated with cudaMalloc (not the caching allocator: it lives until
 * fg_cuda_shutdown). g_rec_used stays false in programs that never ask for it,
 * so their sync points do not read it back. */
static struct {
    pthread_mutex_t mu;
    int64_t *dev;
} g_rec = {PTHREAD_MUTEX_INITIALIZER, NULL};
static atomic_bool g_rec_used = false;

void *fg__cuda_error_record(void)
{
    pthread_mutex_lock(&g_rec.mu);
    if (!g_rec.dev) {
        void *p = NULL;
        cudaError_t e = cudaMalloc(&p, 4 * sizeof(int64_t));
        if (e == cudaSuccess) {
            e = cudaMemset(p, 0, 4 * sizeof(int64_t));
            if (e != cudaSuccess) cudaFree(p);
        }
        if (e != cudaSuccess) {
            pthread_mutex_unlock(&g_rec.mu);
            cuda_status("cuda error record", e);
            return NULL;
        }
        g_rec.dev = p;
        atomic_store(&g_rec_used, true);
    }
    void *p = g_rec.dev;
    pthread_mutex_unlock(&g_rec.mu);
    return p;
}

fg_status fg__cuda_check_error_record(void)
{
    if (!atomic_load(&g_rec_used)) return FG_OK;
    pthread_mutex_lock(&g_rec.mu);
    int64_t r[4] = {0, 0, 0, 0};
    cudaError_t e = g_rec.dev ? cudaMemcpy(r, g_rec.dev, sizeof r, cudaMemcpyDeviceToHost) : cudaSuccess;
    if (e == cudaSuccess && r[0] != 0) e = cudaMemset(g_rec.dev, 0, sizeof r); /* synchronous: reset before return */
    pthread_mutex_unlock(&g_rec.mu);
    if (e != cudaSuccess) return cuda_status("reading the cuda error record", e);
    static const char *tail = "(reported at the next synchronisation; the op's output used zeros there)";
    static const char *tail_skip = "(reported at the next synchronisation; the op left that target unchanged)";
    static const char *tail_ce = "(reported at the next synchronisation; the op skipped that row like an ignored one)";
    switch (r[0]) {
    case 0: return FG_OK;
    case FG_K_ERR_EMBEDDING:
        return fg__err(FG_ERR_INDEX, "embedding: index %lld at flat position %lld is out of range for %lld rows %s",
                       (long long)r[2], (long long)r[1], (long long)r[3], tail);
    case FG_K_ERR_CROSS_ENTROPY:
        return fg__err(FG_ERR_INDEX, "cross_entropy: target %lld at position %lld is out of range for %lld classes %s",
                       (long long)r[2], (long long)r[1], (long long)r[3], tail_ce);
    case FG_K_ERR_GATHER:
    case FG_K_ERR_INDEX_SELECT:
    case FG_K_ERR_SCATTER:
    case FG_K_ERR_SCATTER_ADD:
    case FG_K_ERR_INDEX_ADD: {
        static const char *names[] = {"gather", "scatter", "scatter_add", "index_select", "index_add"};
        bool reads = r[0] == FG_K_ERR_GATHER || r[0] == FG_K_ERR_INDEX_SELECT;
        return fg__err(FG_ERR_INDEX, "%s: index %lld at position %lld is out of range for a dim of size %lld %s",
                       names[r[0] - FG_K_ERR_GATHER], (long long)r[2], (long long)r[1], (long long)r[3],
                       reads ? tail : tail_skip);
    }
    default:
        return fg__err(FG_ERR_INDEX, "a device kernel reported error code %lld (position %lld, value %lld, limit %lld)",
                       (long long)r[0], (long long)r[1], (long long)r[2], (long long)r[3]);
    }
}

static void error_record_release(void)
{
    pthread_mutex_lock(&g_rec.mu);
    if (g_rec.dev) cudaFree(g_rec.dev);
    g_rec.dev = NULL;
    atomic_store(&g_rec_used, false);
    pthread_mutex_unlock(&g_rec.mu);
}

fg_status fg_cuda_synchronize(void)
{
    if (!fg_cuda_available()) return fg__err(FG_ERR_DEVICE, "fg_cuda_synchronize: no CUDA device");
    atomic_fetch_add(&g_host_syncs, 1);
    fg_status st = cuda_status("fg_cuda_synchronize", cudaDeviceSynchronize());
    return st == FG_OK ? fg__cuda_check_error_record() : st;
}

const char *fg_cuda_device_description(char *buf, size_t len)
{
    if (!buf || !len) return buf;
    if (!fg_cuda_available()) {
        snprintf(buf, len, "no CUDA device available");
        return buf;
    }
    struct cudaDeviceProp p;
    int dev = 0;
    cudaGetDevice(&dev);
    if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
        snprintf(buf, len, "CUDA device %d (properties unavailable)", dev);
        return buf;
    }
    snprintf(buf, len, "%s (sm_%d%d, %.0f GiB)", p.name, p.major, p.minor, (double)p.totalGlobalMem / (1u << 30));
    return buf;
}

/* ---- caching allocator ----
 * Blocks are rounded up (512 B granules under 1 MiB, 2 MiB granules above) and
 * kept on a free list when released, so a training loop that allocates the same
 * shapes every step stops calling cudaMalloc after its first step. All work runs
 * on one stream, so a block released on the host can be handed out again at
 * once: later kernels are ordered after the ones that used it. FG_CUDA_NO_CACHE=1
 * turns caching off (for compute-sanitizer runs). */
typedef struct {
    void *ptr;
    size_t size;
} cache_block;

static struct {
    pthread_mutex_t mu;
    cache_block *free;
    size_t n_free_blocks, cap;
    int64_t in_use, peak, cached, n_malloc, n_free, n_hits;
    int no_cache; /* -1: not read yet */
} g_alloc = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, 0, 0, 0, 0, 0, 0, -1};

static size_t round_block(size_t n)
{
    const size_t small = 512, large = (size_t)2 << 20;
    if (n == 0) n = 1;
    return n < ((size_t)1 << 20) ? (n + small - 1) / small * small : (n + large - 1) / large * large;
}

static void release_cache_locked(void)
{
    for (size_t i = 0; i < g_alloc.n_free_blocks; i++) {
        cudaFree(g_alloc.free[i].ptr);
        g_alloc.n_free++;
    }
    g_alloc.n_free_blocks = 0;
    g_alloc.cached = 0;
}

fg_status fg__cuda_malloc(void **p, size_t nbytes)
{
    size_t size = round_block(nbytes);
    pthread_mutex_lock(&g_alloc.mu);
    if (g_alloc.no_cache < 0) {
        const char *e = getenv("FG_CUDA_NO_CACHE");
        g_alloc.no_cache = e && *e && strcmp(e, "0") != 0;
    }
    for (size_t i = g_alloc.n_free_blocks; i-- > 0;) {
        if (g_alloc.free[i].size != size) continue;
        *p = g_alloc.free[i].ptr;
        g_alloc.free[i] = g_alloc.free[--g_alloc.n_free_blocks];
        g_alloc.cached -= (int64_t)size;
        g_alloc.n_hits++;
        goto got;
    }
    cudaError_t e = cudaMalloc(p, size);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError(); /* not sticky: clear it, give the cache back, try once more */
        release_cache_locked();
        e = cudaMalloc(p, size);
    }
    if (e != cudaSuccess) {
        int64_t in_use = g_alloc.in_use;
        pthread_mutex_unlock(&g_alloc.mu);
        char what[160];
        snprintf(what, sizeof what, "cuda alloc of %zu bytes (%lld bytes in use by flashgrad)", nbytes,
                 (long long)in_use);
        *p = NULL;
        return cuda_status(what, e);
    }
    g_alloc.n_malloc++;
got:
    g_alloc.in_use += (int64_t)size;
    if (g_alloc.in_use > g_alloc.peak) g_alloc.peak = g_alloc.in_use;
    pthread_mutex_unlock(&g_alloc.mu);
    return FG_OK;
}

void fg__cuda_free(void *p, size_t nbytes)
{
    if (!p) return;
    size_t size = round_block(nbytes);
    pthread_mutex_lock(&g_alloc.mu);
    g_alloc.in_use -= (int64_t)size;
    bool cached = false;
    if (g_alloc.no_cache <= 0) {
        if (g_alloc.n_free_blocks == g_alloc.cap) {
            size_t cap = g_alloc.cap ? g_alloc.cap * 2 : 256;
            cache_block *f = realloc(g_alloc.free, cap * sizeof *f);
            if (f) {
                g_alloc.free = f;
                g_alloc.cap = cap;
            }
        }
        if (g_alloc.n_free_blocks < g_alloc.cap) {
            g_alloc.free[g_alloc.n_free_blocks++] = (cache_block){p, size};
            g_alloc.cached += (int64_t)size;
            cached = true;
        }
    }
    if (!cached) {
        cudaFree(p);
        g_alloc.n_free++;
    }
    pthread_mutex_unlock(&g_alloc.mu);
}

fg_status fg_cuda_get_memory_stats(fg_cuda_memory_stats *out)
{
    if (!out) return fg__err_null("fg_cuda_get_memory_stats", "out");
    pthread_mutex_lock(&g_alloc.mu);
    out->in_use_bytes = g_alloc.in_use;
    out->peak_bytes = g_alloc.peak;
    out->cached_bytes = g_alloc.cached;
    out->n_cuda_malloc = g_alloc.n_malloc;
    out->n_cuda_free = g_alloc.n_free;
    out->n_cache_hits = g_alloc.n_hits;
    pthread_mutex_unlock(&g_alloc.mu);
    out->n_host_syncs = (int64_t)atomic_load(&g_host_syncs);
    return FG_OK;
}

fg_status fg_cuda_empty_cache(void)
{
    pthread_mutex_lock(&g_alloc.mu);
    release_cache_locked();
    pthread_mutex_unlock(&g_alloc.mu);
    return FG_OK;
}

void fg_cuda_reset_peak(void)
{
    pthread_mutex_lock(&g_alloc.mu);
    g_alloc.peak = g_alloc.in_use;
    pthread_mutex_unlock(&g_alloc.mu);
}

void *fg__cuda_stream(void) { return NULL; /* the legacy default stream: one stream for all work */ }

fg_status fg__cuda_stream_wait(void *waiter, void *stream)
{
    if (waiter == stream) return FG_OK;
    cudaEvent_t ev;
    cudaError_t e = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    if (e != cudaSuccess) return cuda_status("stream join (event create)", e);
    e = cudaEventRecord(ev, (cudaStream_t)stream);
    if (e == cudaSuccess) e = cudaStreamWaitEvent((cudaStream_t)waiter, ev, 0);
    cudaEventDestroy(ev); /* released once the wait has passed it */
    return cuda_status("stream join", e);
}

fg_status fg__cuda_stream_sync(void *stream)
{
    atomic_fetch_add(&g_host_syncs, 1);
    return cuda_status("stream synchronize", cudaStreamSynchronize((cudaStream_t)stream));
}

fg_status fg__cuda_check(const char *op, int err)
{
    if (err == 0) return FG_OK;
    char what[160];
    snprintf(what, sizeof what, "%s (kernel launch)", op);
    return cuda_status(what, (cudaError_t)err);
}

/* ---- host <-> device transfers through pinned staging ----
 * Pageable memory cannot be DMA'd directly: large transfers go through two
 * pinned 4 MiB buffers in turn, so the host memcpy into one overlaps the DMA of
 * the other. Small ones (and any failure to get pinned memory) use plain
 * cudaMemcpy. Transfers are synchronous for the caller. */
#define STAGE_BYTES ((size_t)4 << 20)
static struct {
    pthread_mutex_t mu;
    void *buf[2];
    cudaEvent_t done[2];
    int state; /* 0: not set up, 1: ready, -1: unavailable */
} g_stage = {PTHREAD_MUTEX_INITIALIZER, {NULL, NULL}, {NULL, NULL}, 0};

static bool stage_ready_locked(void)
{
    if (g_stage.state == 0) {
        g_stage.state = -1;
        if (cudaMallocHost(&g_stage.buf[0], STAGE_BYTES) == cudaSuccess &&
            cudaMallocHost(&g_stage.buf[1], STAGE_BYTES) == cudaSuccess &&
            cudaEventCreateWithFlags(&g_stage.done[0], cudaEventDisableTiming) == cudaSuccess &&
            cudaEventCreateWithFlags(&g_stage.done[1], cudaEventDisableTiming) == cudaSuccess)
            g_stage.state = 1;
        else
            cudaGetLastError(); /* fall back to pageable copies */
    }
    return g_stage.state == 1;
}

static fg_status staged_copy(void *dst, const void *src, size_t n, bool to_device)
{
    atomic_fetch_add(&g_host_syncs, 1);
    const char *what = to_device ? "copy host->device" : "copy device->host";
    cudaStream_t st = (cudaStream_t)fg__cuda_stream();
    pthread_mutex_lock(&g_stage.mu);
    if (n < ((size_t)1 << 20) || !stage_ready_locked()) {
        pthread_mutex_unlock(&g_stage.mu);
        fg_status s = cuda_status(what, cudaMemcpy(dst, src, n, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost));
        return s == FG_OK && !to_device ? fg__cuda_check_error_record() : s;
    }
    cudaError_t e = cudaSuccess;
    if (to_device) {
        for (size_t off = 0, k = 0; off < n && e == cudaSuccess; off += STAGE_BYTES, k ^= 1) {
            size_t len = n - off < STAGE_BYTES ? n - off : STAGE_BYTES;
            e = cudaEventSynchronize(g_stage.done[k]); /* buffer k's previous DMA has finished */
            if (e != cudaSuccess) break;
            memcpy(g_stage.buf[k], (const char *)src + off, len);
            e = cudaMemcpyAsync((char *)dst + off, g_stage.buf[k], len, cudaMemcpyHostToDevice, st);
            if (e == cudaSuccess) e = cudaEventRecord(g_stage.done[k], st);
        }
    } else {
        /* Keep one DMA in flight while the previous chunk is copied out on the host. */
        size_t prev_off = 0, prev_len = 0;
        int prev_k = -1;
        for (size_t off = 0, k = 0; off < n && e == cudaSuccess; off += STAGE_BYTES, k ^= 1) {
            size_t len = n - off < STAGE_BYTES ? n - off : STAGE_BYTES;
            e = cudaMemcpyAsync(g_stage.buf[k], (const char *)src + off, len, cudaMemcpyDeviceToHost, st);
            if (e == cudaSuccess) e = cudaEventRecord(g_stage.done[k], st);
            if (e == cudaSuccess && prev_k >= 0 && (e = cudaEventSynchronize(g_stage.done[prev_k])) == cudaSuccess)
                memcpy((char *)dst + prev_off, g_stage.buf[prev_k], prev_len);
            prev_off = off;
            prev_len = len;
            prev_k = (int)k;
        }
        if (e == cudaSuccess && prev_k >= 0 && (e = cudaEventSynchronize(g_stage.done[prev_k])) == cudaSuccess)
            memcpy((char *)dst + prev_off, g_stage.buf[prev_k], prev_len);
    }
    if (e == cudaSuccess) e = cudaStreamSynchronize(st); /* the caller may reuse src / read dst now */
    pthread_mutex_unlock(&g_stage.mu);
    fg_status s = cuda_status(what, e);
    /* The copy synchronised: surface what kernels recorded (embedding, cross_entropy). */
    return s == FG_OK && !to_device ? fg__cuda_check_error_record() : s;
}

static void stage_release(void)
{
    pthread_mutex_lock(&g_stage.mu);
    if (g_stage.state == 1) {
        for (int k = 0; k < 2; k++) {
            cudaFreeHost(g_stage.buf[k]);
            cudaEventDestroy(g_stage.done[k]);
            g_stage.buf[k] = NULL;
        }
    }
    g_stage.state = 0;
    pthread_mutex_unlock(&g_stage.mu);
}

void fg_cuda_shutdown(void)
{
    if (fg_cuda_device_count() == 0) return;
    cudaDeviceSynchronize();
    fg__cublas_shutdown();
    stage_release();
    error_record_release();
    fg_cuda_empty_cache();
}

fg_status fg__cuda_memcpy_h2d(void *dst, const void *src, size_t n) { return staged_copy(dst, src, n, true); }
fg_status fg__cuda_memcpy_d2h(void *dst, const void *src, size_t n) { return staged_copy(dst, src, n, false); }

fg_status fg__cuda_memcpy_d2d(void *dst, const void *src, size_t n)
{
    return cuda_status("copy device->device", cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, (cudaStream_t)fg__cuda_stream()));
}

fg_status fg__cuda_fill(void *p, fg_dtype dt, int64_t n, double value)
{
    return cuda_status("fill kernel", (cudaError_t)fg_k_fill(p, (int)dt, n, value, NULL));
}

fg_status fg__cuda_copy_strided(void *dst, fg_dtype dst_dt, const int64_t *dst_stride, const void *src,
                                fg_dtype src_dt, const int64_t *src_stride, int ndim, const int64_t *shape)
{
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) numel *= shape[d];
    return cuda_status("strided copy kernel", (cudaError_t)fg_k_copy_strided(dst, (int)dst_dt, dst_stride, src,
                                                                             (int)src_dt, src_stride, ndim, shape,
                                                                             numel, NULL));
}

#else /* !FG_HAVE_CUDA */

static fg_status no_cuda(const char *what)
{
    return fg__err(FG_ERR_DEVICE, "%s: this build of flashgrad has no CUDA backend (configure --with-cuda)", what);
}

bool fg_cuda_compiled(void) { return false; }
int fg_cuda_device_count(void) { return 0; }
bool fg_cuda_available(void) { return false; }
fg_status fg_cuda_synchronize(void) { return no_cuda("fg_cuda_synchronize"); }
const char *fg_cuda_device_description(char *buf, size_t len)
{
    if (buf && len) snprintf(buf, len, "CUDA backend not compiled in");
    return buf;
}
fg_status fg__cuda_malloc(void **p, size_t nbytes) { *p = NULL; return no_cuda("cuda alloc"); }
void fg__cuda_free(void *p, size_t nbytes) { (void)p; }
fg_status fg_cuda_get_memory_stats(fg_cuda_memory_stats *out)
{
    if (out) memset(out, 0, sizeof *out);
    return no_cuda("fg_cuda_get_memory_stats");
}
fg_status fg_cuda_empty_cache(void) { return FG_OK; }
void fg_cuda_shutdown(void) {}
void fg_cuda_reset_peak(void) {}
void *fg__cuda_stream(void) { return NULL; }
fg_status fg__cuda_check(const char *op, int err) { return no_cuda(op); }
fg_status fg__cuda_stream_wait(void *waiter, void *stream) { (void)waiter, (void)stream; return no_cuda("stream join"); }
fg_status fg__cuda_stream_sync(void *stream) { (void)stream; return no_cuda("stream synchronize"); }
void *fg__cuda_error_record(void)
{
    no_cuda("cuda error record");
    return NULL;
}
fg_status fg__cuda_check_error_record(void) { return FG_OK; }
fg_status fg__cuda_memcpy_h2d(void *d, const void *s, size_t n) { return no_cuda("copy host->device"); }
fg_status fg__cuda_memcpy_d2h(void *d, const void *s, size_t n) { return no_cuda("copy device->host"); }
fg_status fg__cuda_memcpy_d2d(void *d, const void *s, size_t n) { return no_cuda("copy device->device"); }
fg_status fg__cuda_fill(void *p, fg_dtype dt, int64_t n, double v) { return no_cuda("fill"); }
fg_status fg__cuda_copy_strided(void *dst, fg_dtype ddt, const int64_t *ds, const void *src, fg_dtype sdt,
                                const int64_t *ss, int ndim, const int64_t *shape)
{
    return no_cuda("strided copy");
}
#endif
