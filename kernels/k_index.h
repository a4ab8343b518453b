/* Launchers of kernels/index.cu and kernels/embedding.cu (see fg_kernels.h for
 * the conventions). Index tensors are i32 or i64 (dtype codes 4, 5). Kernels
 * check every index value as they read it, and never make the host sync: an
 * index out of range is skipped (gathers write zeros there, scatters and adds
 * leave the target alone) and recorded in the device error record err_rec
 * (fg_kernels.h; NULL: skipped silently), which the host reports at its next
 * synchronisation.
 * Outputs are contiguous tensors allocated by the caller.
 *
 * Launchers that need device scratch have a companion *_scratch query that
 * writes the byte count (possibly 0) for the same arguments; the caller
 * allocates it (the caching allocator) and may release it right after the
 * launch, since all work is ordered on the one stream.
 *
 * Determinism: gather, index_select, scatter and topk are deterministic and
 * equal to the CPU bit for bit. The accumulating launchers (scatter_add,
 * index_add, embedding backward) take `deterministic`: 0 adds floats with
 * atomics (f32 atomicAdd, through an f32 accumulator for bf16/f16; f64 atomics
 * for f64), 1 sorts the destinations with a stable radix sort and sums each in
 * index order in double, one rounding: bit-identical run to run and to the CPU.
 * Integer dtypes always take the sorted path (exact, saturating like the CPU). */
#ifndef FG_K_INDEX_H
#define FG_K_INDEX_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- kernels/index.cu ---- */

/* out[p] = a[p with coordinate `dim` replaced by index[p]] for every position p
 * of out (index has out's shape; stride-0 dims allowed). Raw element copies (out
 * and a share a dtype); a and out may be strided. */
int fg_k_gather(fg_k_tensor out, fg_k_tensor a, int dim, fg_k_tensor index, int64_t *err_rec, void *stream);

/* out (a's shape with dim of length index.numel) = a with index (0-d or 1-d)
 * picking positions along dim. Whole contiguous inner blocks go through
 * fg_k_gather_rows (vectorised) when a's layout allows; otherwise fg_k_gather. */
int fg_k_index_select(fg_k_tensor out, fg_k_tensor a, int dim, fg_k_tensor index, int64_t *err_rec,
                      void *stream);

/* scatter modes */
#define FG_K_SCATTER_SET 0     /* out[t] = src[p]: duplicates resolved as on the CPU (last position wins) */
#define FG_K_SCATTER_ADD 1     /* out[t] += src[p] with atomics (floats) */
#define FG_K_SCATTER_ADD_DET 2 /* out[t] += src[p] sorted, in index order, in double (CPU bit for bit) */

/* out (contiguous, holding the starting values) at [p with dim replaced by
 * index[p]] for every position p of index, from src[p]; index and src any strides. */
int fg_k_scatter_scratch(int mode, int dtype, int64_t n_index, int64_t out_numel, size_t *bytes);
int fg_k_scatter(fg_k_tensor out, int dim, fg_k_tensor index, fg_k_tensor src, int mode, void *scratch,
                 size_t scratch_bytes, int64_t *err_rec, void *stream);

/* out (contiguous, holding the starting values)[.., index[j], ..] += src[.., j, ..]
 * along dim; index 0-d or 1-d, src any strides. dim_size: out.shape[dim]. */
int fg_k_index_add_scratch(int deterministic, int dtype, int64_t index_len, int64_t dim_size, int64_t out_numel,
                           size_t *bytes);
int fg_k_index_add(fg_k_tensor out, int dim, fg_k_tensor index, fg_k_tensor src, int deterministic, void *scratch,
                   size_t scratch_bytes, int64_t *err_rec, void *stream);

/* The k largest (smallest) of each slice of a along dim, in the CPU's order
 * (NaN above every number, ties by lower index first): values (a's dtype) and
 * indices (i64), contiguous, a's shape with dim of size k. Slices of up to 4096
 * elements are sorted by one block each (bitonic, in shared memory); longer
 * slices by a stable segmented sort (cub) in scratch. */
int fg_k_topk_scratch(int64_t rows, int64_t n, size_t *bytes);
int fg_k_topk(fg_k_tensor values, fg_k_tensor indices, fg_k_tensor a, int dim, int64_t k, int largest, void *scratch,
              size_t scratch_bytes, void *stream);

/* ---- kernels/embedding.cu ---- */

/* Row gather (embedding forward, index_select's fast path): out (outer, L,
 * inner) contiguous, out[o, j, :] = a[o * a_outer_stride + index[j * index_stride]
 * * a_row_stride + (0 .. inner-1)], raw copies of elem_size bytes with the
 * widest vector access (16/8/4/2 bytes) alignment allows. Strides in elements.
 * An index outside [0, rows) gives zeros in out and records err_code
 * (FG_K_ERR_EMBEDDING, FG_K_ERR_INDEX_SELECT) with position j in err_rec. */
int fg_k_gather_rows(void *out, const void *a, int elem_size, int64_t outer, int64_t L, int64_t inner,
                     int64_t a_outer_stride, int64_t a_row_stride, const void *index, int index_dtype,
                     int64_t index_stride, int64_t rows, int64_t *err_rec, int err_code, void *stream);
/* Embedding forward for a table with strided columns: out (n, D) contiguous,
 * out[k, j] = a[index[k] * a_row_stride + j * a_col_stride] (elem_size 1, 2, 4
 * or 8 bytes); an index outside [0, rows) gives a zero row and records
 * FG_K_ERR_EMBEDDING in err_rec (which may be NULL). */
int fg_k_embedding_fwd_strided(void *out, const void *a, int elem_size, int64_t n, int64_t D, int64_t a_row_stride,
                               int64_t a_col_stride, const void *index, int index_dtype, int64_t rows,
                               int64_t *err_rec, void *stream);

/* gw (V, D) contiguous, written entirely = the rows of gy (n, D) contiguous
 * added at the n contiguous indices (float dtypes). */
int fg_k_embedding_backward_scratch(int deterministic, int dtype, int64_t n, int64_t V, int64_t D, size_t *bytes);
int fg_k_embedding_backward(void *gw, int dtype, int64_t V, int64_t D, const void *index, int index_dtype, int64_t n,
                            const void *gy, int deterministic, void *scratch, size_t scratch_bytes, void *stream);

#ifdef __cplusplus
}
#endif
#endif
