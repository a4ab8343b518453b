/* Host-side CUDA glue: device discovery, memory, transfers, and status mapping.
 * Without a CUDA build every entry reports FG_ERR_DEVICE / false. */
#include <stdio.h>
#include "config.h"
#include "internal.h"

#ifdef FG_HAVE_CUDA
#include <cuda_runtime_api.h>
#include "../../kernels/fg_kernels.h"

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
    }
    return cached;
}

bool fg_cuda_available(void) { return fg_cuda_device_count() > 0; }

fg_status fg_cuda_synchronize(void)
{
    if (!fg_cuda_available()) return fg__err(FG_ERR_DEVICE, "fg_cuda_synchronize: no CUDA device");
    return cuda_status("fg_cuda_synchronize", cudaDeviceSynchronize());
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

fg_status fg__cuda_malloc(void **p, size_t nbytes)
{
    char what[96];
    snprintf(what, sizeof what, "cuda alloc of %zu bytes", nbytes);
    return cuda_status(what, cudaMalloc(p, nbytes));
}

void fg__cuda_free(void *p)
{
    if (p) cudaFree(p);
}

fg_status fg__cuda_memcpy_h2d(void *dst, const void *src, size_t n)
{
    return cuda_status("copy host->device", cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice));
}
fg_status fg__cuda_memcpy_d2h(void *dst, const void *src, size_t n)
{
    return cuda_status("copy device->host", cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost));
}
fg_status fg__cuda_memcpy_d2d(void *dst, const void *src, size_t n)
{
    return cuda_status("copy device->device", cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, 0));
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
void fg__cuda_free(void *p) { (void)p; }
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
