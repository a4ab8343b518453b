#ifndef FLASHGRAD_DETERMINISTIC_H
#define FLASHGRAD_DETERMINISTIC_H

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Deterministic mode for the CUDA backend (process-wide, off by default).
 *
 * Off: the accumulating kernels (embedding backward, scatter_add, index_add,
 * and so the backward of gather and index_select) add floating-point values
 * with atomics, in whatever order the threads arrive: fast, but the low bits of
 * a sum that has repeated indices can change from run to run.
 * On: those kernels sort the indices (a stable sort) and sum each destination in
 * index order, in double, rounding once: results are bit-identical run to run,
 * and equal to the CPU reference bit for bit.
 *
 * The attention layers (flashgrad/nn.h, flashgrad/moe.h) also ask fg_attention
 * for its deterministic backward (dQ without atomics) while the mode is on;
 * a direct fg_attention call chooses with its opts.deterministic.
 *
 * CPU kernels are always deterministic, and so are the other CUDA kernels
 * (scatter resolves duplicate indices like the CPU in both modes: the last
 * position in row-major order wins). Integer accumulation is always exact. */
void fg_set_deterministic(bool on);
bool fg_deterministic(void);

#ifdef __cplusplus
}
#endif
#endif
