/* Launchers of kernels/random*.cu (see fg_kernels.h for the conventions).
 *
 * Every random number on the device comes from cuRAND's Philox4x32-10 block
 * function with the CPU's counter layout (src/core/rng.c): element i of a draw
 * that starts at counter block `base` uses word i % 4 of
 * philox(ctr = {lo(base + i/4), hi(base + i/4), 0, 0}, key = {lo(seed), hi(seed)}).
 * The raw words are therefore bit-identical to the CPU's, and so are everything
 * computed from them with correctly rounded operations only: dropout masks,
 * randint values and uniform values. Normals go through log/sin/cos, whose
 * device versions are not correctly rounded: they agree with the CPU to about
 * 1e-15 (relative) in double, and bit equality is not claimed for them. */
#ifndef FG_K_RANDOM_H
#define FG_K_RANDOM_H

#ifdef __cplusplus
extern "C" {
#endif

/* out[i] = keep_i ? in[i] * scale : 0 (the product in double, rounded once to
 * dtype), keep_i = !drop_all && word_i >= threshold. in and out are
 * contiguous, of the same float dtype, n elements. The backward is the same
 * call on the gradient. */
int fg_k_dropout(void *out, const void *in, int dtype, int64_t n, uint64_t seed, uint64_t base, uint32_t threshold,
                 int drop_all, double scale, void *stream);

/* What fg_k_draw makes. */
#define FG_K_DRAW_UNIFORM 0 /* a + (b - a) * (1 - curand_uniform(word)), kept below b in dtype when a < b */
#define FG_K_DRAW_NORMAL 1  /* a + b * Box-Muller(words 2m, 2m + 1) (sin for even i, cos for odd) */
#define FG_K_DRAW_INT 2     /* ilo + word % span (exact, wrapping like the CPU); dtype i32 or i64 */

/* Fills the contiguous out (n elements of dtype) with draw `kind` starting at
 * counter block `base`; the caller advances the generator as the CPU does
 * (n words, or n rounded up to even for normals). */
int fg_k_draw(void *out, int dtype, int kind, uint64_t seed, uint64_t base, int64_t n, double a, double b, int64_t ilo,
              uint64_t span, void *stream);

#ifdef __cplusplus
}
#endif
#endif
