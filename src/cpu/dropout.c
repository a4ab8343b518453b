/* Dropout on the CPU: the mask comes from Philox words, never stored. */
#include "cpu/cpu_nn.h"

void fg_cpu_dropout(fg_tensor *out, const fg_tensor *in, uint64_t seed, uint64_t base, uint32_t threshold,
                    bool drop_all, double scale)
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t words[4] = {0, 0, 0, 0};
    const char *pi = fg__data(in);
    char *po = fg__data(out);
    for (int64_t i = 0; i < in->numel; i++) {
        if (i % 4 == 0) { /* element i uses word i % 4 of block base + i / 4 */
            uint64_t blk = base + (uint64_t)i / 4;
            const uint32_t ctr[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), 0, 0};
            fg_philox4x32_10(ctr, key, words);
        }
        bool keep = !drop_all && words[i % 4] >= threshold;
        /* Store an explicit 0 for dropped elements (x * 0 would turn inf into NaN). */
        fg__st(po, out->dtype, i, keep ? fg__ld(pi, in->dtype, i) * scale : 0.0);
    }
}
