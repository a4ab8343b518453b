/* Launchers of kernels/reduce*.cu (see fg_kernels.h for the conventions). */
#ifndef FG_K_REDUCE_H
#define FG_K_REDUCE_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif
