/*
 * The AVX-512 kernel set (AVX-512 F, BW and VPOPCNTDQ: Ice Lake, Zen 4 and
 * later).
 *
 * Binary GEMM: a block of 8 output channels is one 512-bit vector of the
 * repacked weights (internal.h), so the activation word is broadcast to 8
 * lanes, XORed and counted with VPOPCNTQ straight into 64-bit lanes: three
 * operations per 512 bits, no byte accumulators and no flushes. A compare
 * into a mask register gives the block's output byte directly. Up to 8
 * output pixels share each weight load (AVX-512 has 32 vector registers).
 *
 * 8-bit GEMM: the AVX2 scheme (internal.h, avx2.c) two input pairs at a
 * time: the 64 bytes of weights for pairs q and q + 1 of a block are one
 * vector, the low half multiplied by pair q of the activations and the high
 * half by pair q + 1 (one broadcast and one in-lane shuffle), and the halves
 * added at the end. Windows of more than 64 pairs (whose 16-bit sums need
 * widening on the way) use the AVX2 kernel.
 *
 * The thresholds are the AVX2 kernel.
 */
#include <string.h>

#include "../internal.h"
#include "../mca_markers.h"

#ifdef BNN_X86

#include <immintrin.h>

#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,avx2,popcnt")))
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
            if (P == 8)
                BNN_MCA_BEGIN("avx512_bgemm_p8");
            else
                BNN_MCA_BEGIN("avx512_bgemm_p1");
            const __m512i wv = _mm512_load_si512((const void *)w);
            UNROLL
            for (int q = 0; q < P; q++) {
                const __m512i x = _mm512_set1_epi64((long long)base[q][at + i]);
                acc[q] = _mm512_add_epi64(acc[q], _mm512_popcnt_epi64(_mm512_xor_si512(x, wv)));
            }
            if (P == 8)
                BNN_MCA_END("avx512_bgemm_p8");
            else
                BNN_MCA_END("avx512_bgemm_p1");
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
    BNN_REQUIRE_BGEMM(j, 64);
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

#define I8_MAX_ROWS 8

/* P output pixels (rows: their kernel rows' starts) x up to 4 blocks of 16
 * channels: each weight load serves P pixels, each broadcast B blocks. All
 * 16-bit: at most 64 pairs per window, |sum| < 2^15. */
AVX512_TARGET static INLINE void i8gemm_blocks(const struct bnn_i8gemm_job *j, const uint8_t *const (*rows)[I8_MAX_ROWS],
                                               uint32_t p0, uint32_t b0, const int P, const int B)
{
    const uint32_t rp = j->run_pairs;
    const size_t block_bytes = (size_t)j->kernel * rp * BNN_BLOCK8 * 2;
    /* From x[2q..2q+3] replicated in every 32-bit lane: bytes 0, 1 (pair q)
     * across the low 256 bits, bytes 2, 3 (pair q + 1) across the high. */
    const __m512i pick = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(0x0100)),
                                            _mm256_set1_epi16(0x0302), 1);
    __m512i acc[2][4];
    __m256i odd[2][4];
    UNROLL
    for (int q = 0; q < P; q++)
        UNROLL
        for (int bb = 0; bb < B; bb++) {
            acc[q][bb] = _mm512_setzero_si512();
            odd[q][bb] = _mm256_setzero_si256();
        }
    const int8_t *w = j->weights + b0 * block_bytes;
    for (uint32_t r = 0; r < j->kernel; r++, w += (size_t)rp * 32) {
        uint32_t t = 0;
        for (; t + 2 <= rp; t += 2) {
            if (P == 2 && B == 4)
                BNN_MCA_BEGIN("avx512_i8gemm_p2b4");
            else if (P == 2)
                BNN_MCA_BEGIN("avx512_i8gemm_p2b1");
            else if (B == 4)
                BNN_MCA_BEGIN("avx512_i8gemm_p1b4");
            else
                BNN_MCA_BEGIN("avx512_i8gemm_p1b1");
            __m512i xv[2];
            UNROLL
            for (int q = 0; q < P; q++) {
                int32_t quad;
                memcpy(&quad, rows[q][r] + 2 * t, 4);
                xv[q] = _mm512_shuffle_epi8(_mm512_set1_epi32(quad), pick);
            }
            UNROLL
            for (int bb = 0; bb < B; bb++) {
                /* rows of an odd number of pairs start 32 bytes off a 64-byte line */
                const __m512i wv = _mm512_loadu_si512((const void *)(w + bb * block_bytes + t * 32));
                UNROLL
                for (int q = 0; q < P; q++)
                    acc[q][bb] = _mm512_add_epi16(acc[q][bb], _mm512_maddubs_epi16(xv[q], wv));
            }
            if (P == 2 && B == 4)
                BNN_MCA_END("avx512_i8gemm_p2b4");
            else if (P == 2)
                BNN_MCA_END("avx512_i8gemm_p2b1");
            else if (B == 4)
                BNN_MCA_END("avx512_i8gemm_p1b4");
            else
                BNN_MCA_END("avx512_i8gemm_p1b1");
        }
        if (t < rp) { /* an odd pair left in this row */
            __m256i xv[2];
            UNROLL
            for (int q = 0; q < P; q++) {
                int16_t pair;
                memcpy(&pair, rows[q][r] + 2 * t, 2);
                xv[q] = _mm256_set1_epi16(pair);
            }
            UNROLL
            for (int bb = 0; bb < B; bb++) {
                const __m256i wv = _mm256_load_si256((const __m256i *)(const void *)(w + bb * block_bytes + t * 32));
                UNROLL
                for (int q = 0; q < P; q++)
                    odd[q][bb] = _mm256_add_epi16(odd[q][bb], _mm256_maddubs_epi16(xv[q], wv));
            }
        }
    }
    UNROLL
    for (int q = 0; q < P; q++)
        UNROLL
        for (int bb = 0; bb < B; bb++) {
            const uint32_t b = b0 + (uint32_t)bb, p = p0 + (uint32_t)q;
            const __m256i s16 = _mm256_add_epi16(
                _mm256_add_epi16(_mm512_castsi512_si256(acc[q][bb]), _mm512_extracti64x4_epi64(acc[q][bb], 1)),
                odd[q][bb]);
            const __m512i s32 = _mm512_cvtepi16_epi32(s16);
            if (j->scores) {
                int32_t s[16];
                _mm512_storeu_si512((void *)s, s32);
                bnn_i8gemm_finish(j, p, b, s);
                continue;
            }
            /* bit = sum >= limit: the compare mask is the block's 16 bits. */
            const __m512i lim = _mm512_loadu_si512((const void *)(j->limit + b * 16));
            const uint16_t bits = (uint16_t)_mm512_cmpge_epi32_mask(s32, lim);
            memcpy(j->out + (size_t)p * j->out_pixel_bytes + 2 * (size_t)b, &bits, 2);
        }
}

AVX512_TARGET static INLINE void i8gemm_pixels(const struct bnn_i8gemm_job *j, uint32_t p0, const int P)
{
    const uint8_t *rows[2][I8_MAX_ROWS];
    UNROLL
    for (int q = 0; q < P; q++)
        for (uint32_t r = 0; r < j->kernel; r++)
            rows[q][r] = bnn_i8_row(j, p0 + (uint32_t)q, r);
    uint32_t b = 0;
    for (; b + 4 <= j->n_blocks; b += 4)
        i8gemm_blocks(j, (const uint8_t *const(*)[I8_MAX_ROWS])rows, p0, b, P, 4);
    for (; b < j->n_blocks; b++)
        i8gemm_blocks(j, (const uint8_t *const(*)[I8_MAX_ROWS])rows, p0, b, P, 1);
}

AVX512_TARGET static void i8gemm_avx512(const struct bnn_i8gemm_job *j)
{
    BNN_REQUIRE_I8GEMM(j, 32);
    if ((uint64_t)j->kernel * j->run_pairs > 64 || j->kernel > I8_MAX_ROWS) {
        bnn_i8gemm_avx2(j);
        return;
    }
    const uint32_t n_pix = j->out_h * j->out_w;
    uint32_t p = 0;
    for (; p + 2 <= n_pix; p += 2)
        i8gemm_pixels(j, p, 2);
    for (; p < n_pix; p++)
        i8gemm_pixels(j, p, 1);
}

const struct bnn_kernels bnn_kernels_avx512 = {
    .name = "avx512",
    .bgemm = bgemm_avx512,
    .i8gemm = i8gemm_avx512,
    .threshold_bits = bnn_threshold_bits_avx2,
};

#endif
