/* Launchers of kernels/elementwise*.cu (see fg_kernels.h for the conventions). */
#ifndef FG_K_ELEMENTWISE_H
#define FG_K_ELEMENTWISE_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif
