/* Launchers of kernels/index*.cu (see fg_kernels.h for the conventions). */
#ifndef FG_K_INDEX_H
#define FG_K_INDEX_H

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif
#endif
