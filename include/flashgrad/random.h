#ifndef FLASHGRAD_RANDOM_H
#define FLASHGRAD_RANDOM_H

#include <flashgrad/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A counter-based Philox4x32-10 stream: key = seed, counter = offset. Each
 * consumer takes a block of counters and advances the offset, so the same
 * (seed, offset) reproduces the same numbers on any device or tiling. Element
 * i of a draw starting at offset o uses word i % 4 of philox(counter o + i/4),
 * which is what cuRAND's curand_init(seed, 0, 4*o + i) yields on the GPU. */
fg_generator *fg_generator_new(uint64_t seed);
void fg_generator_free(fg_generator *g);
void fg_generator_set_state(fg_generator *g, uint64_t seed, uint64_t offset);
uint64_t fg_generator_seed(const fg_generator *g);
uint64_t fg_generator_offset(const fg_generator *g);
/* Reserves n 32-bit words and returns the starting offset (in 4-word blocks); NULL: the default generator. */
uint64_t fg_generator_advance(fg_generator *g, uint64_t n_words);
/* The library's default generator (seed 0x5eed) used when a NULL generator is passed. */
fg_generator *fg_default_generator(void);

/* One Philox4x32-10 block: out = philox(ctr, key). */
void fg_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Uniform in (0, 1] (cuRAND's curand_uniform convention), scaled to [lo, hi). */
fg_tensor *fg_rand(fg_generator *g, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev);
fg_tensor *fg_uniform(fg_generator *g, double lo, double hi, int ndim, const int64_t *shape,
                      fg_dtype dt, fg_device dev);
/* Normal(mean, std) by Box-Muller on pairs of words. */
fg_tensor *fg_randn(fg_generator *g, int ndim, const int64_t *shape, fg_dtype dt, fg_device dev);
fg_tensor *fg_normal(fg_generator *g, double mean, double std, int ndim, const int64_t *shape,
                     fg_dtype dt, fg_device dev);
/* Integers uniform in [lo, hi) as i64/i32: one word per value, lo + word % (hi - lo),
 * so the modulo bias is below (hi - lo) / 2^32 (negligible for ids and indices). */
fg_tensor *fg_randint(fg_generator *g, int64_t lo, int64_t hi, int ndim, const int64_t *shape,
                      fg_dtype dt, fg_device dev);

#ifdef __cplusplus
}
#endif
#endif
