/* Launchers of kernels/nn*.cu (see fg_kernels.h for the conventions). */
#ifndef FG_K_NN_H
#define FG_K_NN_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif
