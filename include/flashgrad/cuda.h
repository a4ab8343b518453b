#ifndef FLASHGRAD_CUDA_H
#define FLASHGRAD_CUDA_H

#include <flashgrad/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* True when this build has the CUDA backend compiled in. */
bool fg_cuda_compiled(void);
/* Number of usable CUDA devices (0 without a GPU, driver or CUDA build). */
int fg_cuda_device_count(void);
/* True when a CUDA device can be used right now. */
bool fg_cuda_available(void);
/* Blocks until all queued device work is done. */
fg_status fg_cuda_synchronize(void);
/* Fills buf with "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" or a reason it is unavailable. */
const char *fg_cuda_device_description(char *buf, size_t len);

/* The CUDA caching allocator. Freed blocks are kept for reuse (no cudaMalloc
 * in a steady training loop); FG_CUDA_NO_CACHE=1 in the environment disables it. */
typedef struct {
    int64_t in_use_bytes;  /* held by live tensors (rounded block sizes) */
    int64_t peak_bytes;    /* high-water mark of in_use_bytes */
    int64_t cached_bytes;  /* free blocks kept for reuse */
    int64_t n_cuda_malloc; /* cudaMalloc calls so far */
    int64_t n_cuda_free;
    int64_t n_cache_hits;  /* allocations served from the cache */
    int64_t n_host_syncs;  /* times the host waited for the GPU: copies to or from
                              host memory (fg_item, fg_to, ...) and fg_cuda_synchronize;
                              a training step that reads nothing back adds none */
} fg_cuda_memory_stats;
fg_status fg_cuda_get_memory_stats(fg_cuda_memory_stats *out);
/* Returns every cached block to the driver. */
fg_status fg_cuda_empty_cache(void);
void fg_cuda_reset_peak(void);
/* Releases the process-wide CUDA resources (cuBLAS handle and workspace, pinned
 * staging buffers, cached blocks). Registered with atexit on first CUDA use;
 * safe to call earlier (they are recreated on demand). Live tensors stay valid. */
void fg_cuda_shutdown(void);

#ifdef __cplusplus
}
#endif
#endif
