/*
 * The POPCNT kernel set: the portable binary GEMM with the hardware popcount
 * (three integer operations per 64-bit word: XOR, POPCNT, ADD). The 8-bit
 * and threshold kernels are the portable ones.
 */
#include "../internal.h"

#ifdef BNN_X86

#define POPCNT_TARGET __attribute__((target("popcnt")))

/* Same loops as the scalar twin; the 8 channel sums of a block live in
 * registers and every activation word is loaded once per block. */
POPCNT_TARGET static void bgemm_popcnt(const struct bnn_bgemm_job *j)
{
    const size_t window = (size_t)j->n_rows * j->row_words;
    const uint32_t n_pix = j->out_h * j->out_w;
    for (uint32_t b = 0; b < j->n_blocks; b++) {
        const uint64_t *wb = j->weights + (size_t)b * window * BNN_BLOCK;
        for (uint32_t p = 0; p < n_pix; p++) {
            const uint64_t *base = bnn_pixel_base(j, p);
            uint64_t m0 = 0, m1 = 0, m2 = 0, m3 = 0, m4 = 0, m5 = 0, m6 = 0, m7 = 0;
            for (uint32_t r = 0; r < j->n_rows; r++) {
                const uint64_t *a = base + r * j->row_stride;
                const uint64_t *w = wb + (size_t)r * j->row_words * BNN_BLOCK;
                for (uint32_t i = 0; i < j->row_words; i++, w += BNN_BLOCK) {
                    const uint64_t x = a[i];
                    m0 += (uint64_t)__builtin_popcountll(x ^ w[0]);
                    m1 += (uint64_t)__builtin_popcountll(x ^ w[1]);
                    m2 += (uint64_t)__builtin_popcountll(x ^ w[2]);
                    m3 += (uint64_t)__builtin_popcountll(x ^ w[3]);
                    m4 += (uint64_t)__builtin_popcountll(x ^ w[4]);
                    m5 += (uint64_t)__builtin_popcountll(x ^ w[5]);
                    m6 += (uint64_t)__builtin_popcountll(x ^ w[6]);
                    m7 += (uint64_t)__builtin_popcountll(x ^ w[7]);
                }
            }
            const uint32_t m[BNN_BLOCK] = {(uint32_t)m0, (uint32_t)m1, (uint32_t)m2, (uint32_t)m3,
                                           (uint32_t)m4, (uint32_t)m5, (uint32_t)m6, (uint32_t)m7};
            bnn_bgemm_finish(j, p, b, m);
        }
    }
}

const struct bnn_kernels bnn_kernels_popcnt = {
    .name = "popcnt",
    .bgemm = bgemm_popcnt,
    .i8gemm = bnn_i8gemm_scalar,
    .threshold_bits = bnn_threshold_bits_scalar,
};

#endif
