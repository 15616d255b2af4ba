/*
 * The POPCNT kernel set, for x86-64 CPUs without AVX2: the binary GEMM with
 * the hardware popcount (three integer operations per 64-bit word: XOR,
 * POPCNT, ADD), and SSE2 (part of every x86-64) for the 8-bit GEMM and the
 * thresholds.
 *
 * 8-bit GEMM with SSE2, which has no unsigned-by-signed byte multiply: the
 * pair-interleaved int8 weights of 4 channels are sign-extended to 16 bits,
 * (w[2q][c], w[2q+1][c]) adjacent, and pmaddwd against the broadcast pair
 * (x[2q], x[2q+1]) gives x[2q] w[2q][c] + x[2q+1] w[2q+1][c] in 32-bit lane c.
 */
#include <string.h>

#include "../internal.h"

#ifdef BNN_X86

#include <emmintrin.h>

#define POPCNT_TARGET __attribute__((target("popcnt")))

/* Same loops as the scalar twin; the 8 channel sums of a block live in
 * registers and every activation word is loaded once per block. */
POPCNT_TARGET static void bgemm_popcnt(const struct bnn_bgemm_job *j)
{
    BNN_REQUIRE_BGEMM(j, 8);
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

/* Bytes 0..7 (hi: 8..15) of v as int16. */
static inline __m128i widen_lo(__m128i v)
{
    return _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8);
}

static inline __m128i widen_hi(__m128i v)
{
    return _mm_srai_epi16(_mm_unpackhi_epi8(v, v), 8);
}

static void i8gemm_sse2(const struct bnn_i8gemm_job *j)
{
    BNN_REQUIRE_I8GEMM(j, 16);
    const uint32_t n_pix = j->out_h * j->out_w;
    const size_t block_bytes = (size_t)j->kernel * j->run_pairs * BNN_BLOCK8 * 2;
    for (uint32_t p = 0; p < n_pix; p++) {
        for (uint32_t b = 0; b < j->n_blocks; b++) {
            const int8_t *w = j->weights + b * block_bytes;
            __m128i acc0 = _mm_setzero_si128(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
            for (uint32_t r = 0; r < j->kernel; r++) {
                const uint8_t *x = bnn_i8_row(j, p, r);
                for (uint32_t q = 0; q < j->run_pairs; q++, w += BNN_BLOCK8 * 2) {
                    const __m128i xv = _mm_set1_epi32((int)((uint32_t)x[2 * q] | (uint32_t)x[2 * q + 1] << 16));
                    const __m128i w01 = _mm_load_si128((const __m128i *)(const void *)w);
                    const __m128i w23 = _mm_load_si128((const __m128i *)(const void *)(w + 16));
                    acc0 = _mm_add_epi32(acc0, _mm_madd_epi16(xv, widen_lo(w01)));
                    acc1 = _mm_add_epi32(acc1, _mm_madd_epi16(xv, widen_hi(w01)));
                    acc2 = _mm_add_epi32(acc2, _mm_madd_epi16(xv, widen_lo(w23)));
                    acc3 = _mm_add_epi32(acc3, _mm_madd_epi16(xv, widen_hi(w23)));
                }
            }
            int32_t s[16];
            _mm_storeu_si128((__m128i *)(void *)s, acc0);
            _mm_storeu_si128((__m128i *)(void *)(s + 4), acc1);
            _mm_storeu_si128((__m128i *)(void *)(s + 8), acc2);
            _mm_storeu_si128((__m128i *)(void *)(s + 12), acc3);
            bnn_i8gemm_finish(j, p, b, s);
        }
    }
}

/* Unsigned x >= t is max(x, t) == x, 16 channels per compare. */
static inline uint64_t ge_mask16(const uint8_t *x, const uint8_t *t)
{
    const __m128i xv = _mm_loadu_si128((const __m128i *)(const void *)x);
    const __m128i tv = _mm_loadu_si128((const __m128i *)(const void *)t);
    return (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(xv, tv), xv));
}

static void threshold_bits_sse2(const uint8_t *x, const uint8_t *t, size_t n, uint64_t *out)
{
    BNN_REQUIRE_THRESHOLD_BITS(x, t, n, out);
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        out[i / 64] = ge_mask16(x + i, t + i) | ge_mask16(x + i + 16, t + i + 16) << 16 |
                      ge_mask16(x + i + 32, t + i + 32) << 32 | ge_mask16(x + i + 48, t + i + 48) << 48;
    if (i < n) {
        uint8_t tail[64] = {0};
        memcpy(tail, x + i, n - i);
        uint64_t word = ge_mask16(tail, t + i) | ge_mask16(tail + 16, t + i + 16) << 16 |
                        ge_mask16(tail + 32, t + i + 32) << 32 | ge_mask16(tail + 48, t + i + 48) << 48;
        out[i / 64] = word & (~0ull >> (64 - (n - i)));
    }
}

const struct bnn_kernels bnn_kernels_popcnt = {
    .name = "popcnt",
    .bgemm = bgemm_popcnt,
    .i8gemm = i8gemm_sse2,
    .threshold_bits = threshold_bits_sse2,
};

#endif
