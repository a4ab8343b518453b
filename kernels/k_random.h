/* Launchers of kernels/random*.cu (see fg_kernels.h for the conventions). */
#ifndef FG_K_RANDOM_H
#define FG_K_RANDOM_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif
