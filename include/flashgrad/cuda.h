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

#ifdef __cplusplus
}
#endif
#endif
