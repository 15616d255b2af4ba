/*
 * The AVX-512 kernel set (AVX-512F with VPOPCNTDQ: Ice Lake, Zen 4 and later).
 *
 * Binary GEMM: a block of 8 output channels is one 512-bit vector of the
 * repacked weights (internal.h), so the activation word is broadcast to 8
 * lanes, XORed and counted with VPOPCNTQ straight into 64-bit lanes: three
 * operations per 512 bits, no byte accumulators and no flushes. A compare
 * into a mask register gives the block's output byte directly. Up to 8
 * output pixels share each weight load (AVX-512 has 32 vector registers).
 *
 * The 8-bit GEMM and the thresholds are the AVX2 kernels.
 */
#include "../internal.h"

#ifdef BNN_X86

#include <immintrin.h>

#define AVX512_TARGET __attribute__((target("avx512f,avx512vpopcntdq,avx2,popcnt")))
#define INLINE inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

/* P output pixels starting at p0 against block b of 8 channels. */
AVX512_TARGET static INLINE void bgemm_block(const struct bnn_bgemm_job *j, const uint64_t *wb, uint32_t p0,
                                             uint32_t b, const int P)
{
    const uint64_t *base[8];
    __m512i acc[8];
    UNROLL
    for (int q = 0; q < P; q++) {
        base[q] = bnn_pixel_base(j, p0 + (uint32_t)q);
        acc[q] = _mm512_setzero_si512();
    }
    for (uint32_t r = 0; r < j->n_rows; r++) {
        const uint64_t *w = wb + (size_t)r * j->row_words * BNN_BLOCK;
        const size_t at = r * j->row_stride;
        for (uint32_t i = 0; i < j->row_words; i++, w += BNN_BLOCK) {
            const __m512i wv = _mm512_load_si512((const void *)w);
            UNROLL
            for (int q = 0; q < P; q++) {
                const __m512i x = _mm512_set1_epi64((long long)base[q][at + i]);
                acc[q] = _mm512_add_epi64(acc[q], _mm512_popcnt_epi64(_mm512_xor_si512(x, wv)));
            }
        }
    }
    if (j->scores) {
        UNROLL
        for (int q = 0; q < P; q++) {
            uint64_t m64[8];
            uint32_t m[8];
            _mm512_storeu_si512((void *)m64, acc[q]);
            for (int c = 0; c < 8; c++)
                m[c] = (uint32_t)m64[c];
            bnn_bgemm_finish(j, p0 + (uint32_t)q, b, m);
        }
        return;
    }
    /* bit = mismatches <= limit: the compare mask is the output byte. */
    const __m512i lim = _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(const void *)(j->limit + b * 8)));
    UNROLL
    for (int q = 0; q < P; q++)
        j->out[(size_t)(p0 + (uint32_t)q) * j->out_pixel_bytes + b] = (uint8_t)_mm512_cmple_epi64_mask(acc[q], lim);
}

AVX512_TARGET static void bgemm_avx512(const struct bnn_bgemm_job *j)
{
    const size_t window = (size_t)j->n_rows * j->row_words;
    const uint32_t n_pix = j->out_h * j->out_w;
    for (uint32_t b = 0; b < j->n_blocks; b++) {
        const uint64_t *wb = j->weights + (size_t)b * window * BNN_BLOCK;
        uint32_t p = 0;
        for (; p + 8 <= n_pix; p += 8)
            bgemm_block(j, wb, p, b, 8);
        for (; p < n_pix; p++)
            bgemm_block(j, wb, p, b, 1);
    }
}

const struct bnn_kernels bnn_kernels_avx512 = {
    .name = "avx512",
    .bgemm = bgemm_avx512,
    .i8gemm = bnn_i8gemm_avx2,
    .threshold_bits = bnn_threshold_bits_avx2,
};

#endif
