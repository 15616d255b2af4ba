/*
 * The AVX2 kernel set.
 *
 * Binary GEMM: one activation word is broadcast to the four 64-bit lanes and
 * XORed with the words of 4 output channels (two loads cover a block of 8),
 * so each lane accumulates one channel's mismatches and no horizontal sum is
 * needed. The popcount is the nibble lookup: vpshufb of the low and of the
 * high nibbles into a 16-entry table, added as bytes. A byte lane gains at
 * most 8 per word, so 31 words fit before it could overflow; then vpsadbw
 * sums each lane's 8 bytes into its 64-bit lane (one flush per 31 words, so
 * once per dot product for K <= 1984). Several output pixels share the
 * weight loads (register blocking: P pixels x 8 channels). That is for
 * layers of one output pixel; convolutions use the nibble tables instead
 * (internal.h): the lookup table is the activation's, indexed by the
 * weights' nibbles, so no XOR is left (vpshufb and a byte add per 128 bits).
 * A byte lane gains at most 4 per step of two nibbles, 32 per word; every 7
 * words the bytes are widened into 16-bit sums of the even and of the odd
 * channels (mask and shift), and the two halves (even and odd window
 * nibbles) are added at the end. P = 2 pixels x C = 4 groups of 16 channels
 * per step: 8 byte counters, 2 table and 4 weight loads, 8 lookups.
 *
 * 8-bit GEMM: vpmaddubsw multiplies the unsigned activations (int8 stored as
 * x + 128, see internal.h) by the +-1 weights and adds adjacent pairs into 16
 * signed 16-bit lanes, one per output channel (the pair-interleaved weight
 * layout), so the pair (x[2q], x[2q+1]) is broadcast and accumulated across
 * output channels. |sum| <= 64 pairs x 510 < 2^15 before the 16-bit sums are
 * widened to 32 bits.
 *
 * Thresholds to bits: unsigned x >= t is max(x, t) == x, 32 channels per
 * compare, vpmovmskb packing them into 32 bits.
 */
#include <string.h>

#include "../internal.h"
#include "../mca_markers.h"

#ifdef BNN_X86

#include <immintrin.h>

#define AVX2_TARGET __attribute__((target("avx2,popcnt")))
#define INLINE inline __attribute__((always_inline))
/* The register blocks (pixels x channel vectors) must be unrolled for their
 * accumulators to stay in registers. */
#define UNROLL _Pragma("GCC unroll 8")

/* At most 8 added to a byte lane per word: 31 words stay below 256. */
#define MAX_WORDS_PER_FLUSH 31

AVX2_TARGET static INLINE __m256i popcount_bytes(__m256i x, __m256i table, __m256i low)
{
    const __m256i lo = _mm256_and_si256(x, low);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
}

/* Byte counters -> the 64-bit sums (vpsadbw against zero adds 8 bytes at a
 * time), then cleared: every MAX_WORDS_PER_FLUSH words, and once at the end. */
AVX2_TARGET static INLINE void flush_byte_counts(__m256i bytes[][2], __m256i sums[][2], const int P)
{
    const __m256i zero = _mm256_setzero_si256();
    UNROLL
    for (int q = 0; q < P; q++)
        UNROLL
        for (int h = 0; h < 2; h++) {
            sums[q][h] = _mm256_add_epi64(sums[q][h], _mm256_sad_epu8(bytes[q][h], zero));
            bytes[q][h] = zero;
        }
}

/* The mismatch sums of P pixels x 8 channels -> output bytes or scores. */
AVX2_TARGET static INLINE void finish_block(const struct bnn_bgemm_job *j, __m256i sums[][2], uint32_t p0,
                                            uint32_t b, const int P)
{
    if (j->scores) {
        UNROLL
        for (int q = 0; q < P; q++) {
            uint64_t m64[8];
            uint32_t m[8];
            _mm256_storeu_si256((__m256i *)(void *)m64, sums[q][0]);
            _mm256_storeu_si256((__m256i *)(void *)(m64 + 4), sums[q][1]);
            for (int c = 0; c < 8; c++)
                m[c] = (uint32_t)m64[c];
            bnn_bgemm_finish(j, p0 + (uint32_t)q, b, m);
        }
        return;
    }
    /* bit = m <= limit, i.e. not (m > limit), four 64-bit lanes at a time. */
    const __m256i lim0 = _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(const void *)(j->limit + b * 8)));
    const __m256i lim1 =
        _mm256_cvtepi32_epi64(_mm_loadu_si128((const __m128i *)(const void *)(j->limit + b * 8 + 4)));
    UNROLL
    for (int q = 0; q < P; q++) {
        const int gt0 = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(sums[q][0], lim0)));
        const int gt1 = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(sums[q][1], lim1)));
        j->out[(size_t)(p0 + (uint32_t)q) * j->out_pixel_bytes + b] = (uint8_t)~(gt0 | gt1 << 4);
    }
}

/* P output pixels starting at p0 against block b of 8 channels. */
AVX2_TARGET static INLINE void bgemm_block(const struct bnn_bgemm_job *j, const uint64_t *wb, uint32_t p0,
                                           uint32_t b, const int P)
{
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3,
                                           1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0F);
    const __m256i zero = _mm256_setzero_si256();
    const uint64_t *base[4];
    __m256i bytes[4][2], sums[4][2];
    UNROLL
    for (int q = 0; q < P; q++) {
        base[q] = bnn_pixel_base(j, p0 + (uint32_t)q);
        bytes[q][0] = bytes[q][1] = sums[q][0] = sums[q][1] = zero;
    }
    uint32_t pending = 0;
    for (uint32_t r = 0; r < j->n_rows; r++) {
        const uint64_t *w = wb + (size_t)r * j->row_words * BNN_BLOCK;
        const size_t at = r * j->row_stride;
        for (uint32_t i = 0; i < j->row_words; i++, w += BNN_BLOCK) {
            if (P == 4)
                BNN_MCA_BEGIN("avx2_bgemm_p4");
            else
                BNN_MCA_BEGIN("avx2_bgemm_p1");
            const __m256i w0 = _mm256_load_si256((const __m256i *)(const void *)w);
            const __m256i w1 = _mm256_load_si256((const __m256i *)(const void *)(w + 4));
            UNROLL
            for (int q = 0; q < P; q++) {
                const __m256i x = _mm256_set1_epi64x((long long)base[q][at + i]);
                bytes[q][0] = _mm256_add_epi8(bytes[q][0], popcount_bytes(_mm256_xor_si256(x, w0), table, low));
                bytes[q][1] = _mm256_add_epi8(bytes[q][1], popcount_bytes(_mm256_xor_si256(x, w1), table, low));
            }
            if (P == 4)
                BNN_MCA_END("avx2_bgemm_p4");
            else
                BNN_MCA_END("avx2_bgemm_p1");
            if (++pending == MAX_WORDS_PER_FLUSH) {
                flush_byte_counts(bytes, sums, P);
                pending = 0;
            }
        }
    }
    flush_byte_counts(bytes, sums, P);

    finish_block(j, sums, p0, b, P);
}

/* Table n of input word a: popcount(v ^ nibble n of a) for v = 0 .. 15,
 * 16 tables of 16 bytes per word, two made per 256-bit operation. */
AVX2_TARGET static void nibble_tables(const uint64_t *in, size_t n_words, uint8_t *tables)
{
    const __m256i pop = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1,
                                         2, 2, 3, 2, 3, 3, 4);
    const __m256i iota = _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6,
                                          7, 8, 9, 10, 11, 12, 13, 14, 15);
    /* Picks nibble 2k into the low 16 bytes and 2k + 1 into the high. */
    const __m256i first = _mm256_setr_m128i(_mm_setzero_si128(), _mm_set1_epi8(1));
    const __m256i two = _mm256_set1_epi8(2);
    const __m128i low = _mm_set1_epi8(0x0F);
    for (size_t i = 0; i < n_words; i++) {
        const __m128i a = _mm_loadl_epi64((const __m128i *)(const void *)(in + i));
        /* Byte n = nibble n: low and high nibbles of each byte interleaved. */
        const __m128i nib = _mm_unpacklo_epi8(_mm_and_si128(a, low), _mm_and_si128(_mm_srli_epi16(a, 4), low));
        const __m256i nib2 = _mm256_broadcastsi128_si256(nib);
        __m256i pick = first;
        uint8_t *t = tables + i * 256;
        UNROLL
        for (int k = 0; k < 8; k++, pick = _mm256_add_epi8(pick, two)) {
            const __m256i v = _mm256_xor_si256(_mm256_shuffle_epi8(nib2, pick), iota);
            _mm256_store_si256((__m256i *)(void *)(t + 32 * k), _mm256_shuffle_epi8(pop, v));
        }
    }
}

/* Byte counts (at most 4 per step, 8 steps per word) -> 16-bit sums of the
 * even and the odd channels, then cleared. The sums live in memory: the
 * byte counts of a block take 8 of the 16 registers, the weights and tables
 * the rest. */
#define NIB_WORDS_PER_FLUSH 7
AVX2_TARGET static INLINE void nib_flush(__m256i acc[][4], __m256i (*sums)[4][2], const int P, const int C)
{
    const __m256i low = _mm256_set1_epi16(0x00FF);
    UNROLL
    for (int q = 0; q < P; q++)
        UNROLL
        for (int c = 0; c < C; c++) {
            sums[q][c][0] = _mm256_add_epi16(sums[q][c][0], _mm256_and_si256(acc[q][c], low));
            sums[q][c][1] = _mm256_add_epi16(sums[q][c][1], _mm256_srli_epi16(acc[q][c], 8));
            acc[q][c] = _mm256_setzero_si256();
        }
    /* Keeps the compiler from holding the sums in registers across the loop. */
    __asm__ volatile("" : : "r"(sums) : "memory");
}

/* A group's limits as 16-bit lanes of its even and its odd channels. */
struct nib_limits {
    __m128i even, odd;
};

/* Channels past the layer's blocks never fire (-1). */
AVX2_TARGET static struct nib_limits nib_group_limits(const struct bnn_bgemm_job *j, uint32_t g)
{
    int16_t v[2][8];
    for (uint32_t c = 0; c < BNN_NIB_CHANNELS; c++) {
        const uint32_t o = g * BNN_NIB_CHANNELS + c;
        v[c % 2][c / 2] = o < j->n_blocks * BNN_BLOCK ? (int16_t)j->limit[o] : -1;
    }
    struct nib_limits lim = {_mm_loadu_si128((const __m128i *)(const void *)v[0]),
                             _mm_loadu_si128((const __m128i *)(const void *)v[1])};
    return lim;
}

/* The sums of pixel p, group g (the two halves: even window nibbles, odd
 * ones) -> 2 output bytes. */
AVX2_TARGET static INLINE void nib_finish(const struct bnn_bgemm_job *j, const __m256i sums[2],
                                          const struct nib_limits *lim, uint32_t p, uint32_t g)
{
    const __m128i even = _mm_add_epi16(_mm256_castsi256_si128(sums[0]), _mm256_extracti128_si256(sums[0], 1));
    const __m128i odd = _mm_add_epi16(_mm256_castsi256_si128(sums[1]), _mm256_extracti128_si256(sums[1], 1));
    /* bit = m <= limit, i.e. not (m > limit): the even channels' compare in
     * the low byte of each 16-bit lane, the odd ones' in the high byte. */
    const __m128i gt_e = _mm_cmpgt_epi16(even, lim->even), gt_o = _mm_cmpgt_epi16(odd, lim->odd);
    const __m128i gt = _mm_blendv_epi8(gt_e, gt_o, _mm_set1_epi16((short)0xFF00));
    const uint16_t bits = (uint16_t)~_mm_movemask_epi8(gt);
    memcpy(j->out + (size_t)p * j->out_pixel_bytes + 2 * (size_t)g, &bits, 2);
}

/* P output pixels from p0 x C groups of 16 channels from g0. A step is two
 * window nibbles: each table load (the pixel's two tables) serves C groups,
 * each weight load (the group's nibbles) P pixels. */
AVX2_TARGET static INLINE void nib_block(const struct bnn_bgemm_job *j, const uint8_t *wg, size_t group_bytes,
                                         const struct nib_limits *lim, uint32_t p0, uint32_t g0, const int P,
                                         const int C)
{
    const uint8_t *base[2];
    __m256i acc[2][4], sums[2][4][2];
    UNROLL
    for (int q = 0; q < P; q++) {
        base[q] = j->split + (size_t)(bnn_pixel_base(j, p0 + (uint32_t)q) - j->in) * 256;
        UNROLL
        for (int c = 0; c < C; c++)
            acc[q][c] = sums[q][c][0] = sums[q][c][1] = _mm256_setzero_si256();
    }
    uint32_t pending = 0;
    const uint8_t *w = wg;
    for (uint32_t r = 0; r < j->n_rows; r++) {
        const size_t at = r * j->row_stride * 256;
        for (uint32_t i = 0; i < j->row_words; i++, w += 8 * 32) {
            UNROLL
            for (int m = 0; m < 8; m++) {
                if (P == 2 && C == 4)
                    BNN_MCA_BEGIN("avx2_bgemm_nib_p2c4");
                else if (P == 2)
                    BNN_MCA_BEGIN("avx2_bgemm_nib_p2c1");
                else if (C == 4)
                    BNN_MCA_BEGIN("avx2_bgemm_nib_p1c4");
                else
                    BNN_MCA_BEGIN("avx2_bgemm_nib_p1c1");
                __m256i t[2];
                UNROLL
                for (int q = 0; q < P; q++)
                    t[q] = _mm256_load_si256((const __m256i *)(const void *)(base[q] + at + (size_t)i * 256 + m * 32));
                UNROLL
                for (int c = 0; c < C; c++) {
                    __m256i wv = _mm256_load_si256((const __m256i *)(const void *)(w + c * group_bytes + m * 32));
                    if (P > 1) /* loaded once for the P pixels, not once each */
                        __asm__("" : "+x"(wv));
                    UNROLL
                    for (int q = 0; q < P; q++) {
                        acc[q][c] = _mm256_add_epi8(acc[q][c], _mm256_shuffle_epi8(t[q], wv));
                        /* Keeps each count in its register step by step: GCC
                         * otherwise reassociates the unrolled sums into trees
                         * of lookups that no longer fit the registers. */
                        __asm__("" : "+x"(acc[q][c]));
                    }
                }
                if (P == 2 && C == 4)
                    BNN_MCA_END("avx2_bgemm_nib_p2c4");
                else if (P == 2)
                    BNN_MCA_END("avx2_bgemm_nib_p2c1");
                else if (C == 4)
                    BNN_MCA_END("avx2_bgemm_nib_p1c4");
                else
                    BNN_MCA_END("avx2_bgemm_nib_p1c1");
            }
            if (++pending == NIB_WORDS_PER_FLUSH) {
                nib_flush(acc, sums, P, C);
                pending = 0;
            }
        }
    }
    nib_flush(acc, sums, P, C);
    UNROLL
    for (int q = 0; q < P; q++)
        UNROLL
        for (int c = 0; c < C; c++)
            nib_finish(j, sums[q][c], &lim[c], p0 + (uint32_t)q, g0 + (uint32_t)c);
}

/* C groups from g x every pixel, 2 at a time (the last one alone). */
AVX2_TARGET static INLINE void nib_groups(const struct bnn_bgemm_job *j, uint32_t g, const int C)
{
    const size_t group_bytes = (size_t)j->n_rows * j->row_words * 16 * BNN_NIB_CHANNELS;
    const uint8_t *wg = j->weights_split + g * group_bytes;
    const uint32_t n_pix = j->out_h * j->out_w;
    struct nib_limits lim[4];
    for (int c = 0; c < C; c++)
        lim[c] = nib_group_limits(j, g + (uint32_t)c);
    uint32_t p = 0;
    for (; p + 2 <= n_pix; p += 2)
        nib_block(j, wg, group_bytes, lim, p, g, 2, C);
    if (p < n_pix)
        nib_block(j, wg, group_bytes, lim, p, g, 1, C);
}

/* Pixel groups of 4 share each weight load; the last 1-3 pixels go one by
 * one. Channel blocks outermost: a block's weights stay in L1. */
AVX2_TARGET static void bgemm_avx2(const struct bnn_bgemm_job *j)
{
    BNN_REQUIRE_BGEMM(j, 32);
    const size_t window = (size_t)j->n_rows * j->row_words;
    const uint32_t n_pix = j->out_h * j->out_w;
    /* Layers that make scores have one output pixel: no split weights (model.c). */
    if (j->weights_split && !j->scores) {
        nibble_tables(j->in, j->in_words, j->split);
        const uint32_t n_groups = (j->n_blocks + BNN_NIB_BLOCKS - 1) / BNN_NIB_BLOCKS;
        uint32_t g = 0;
        for (; g + 4 <= n_groups; g += 4)
            nib_groups(j, g, 4);
        for (; g < n_groups; g++)
            nib_groups(j, g, 1);
        return;
    }
    for (uint32_t b = 0; b < j->n_blocks; b++) {
        const uint64_t *wb = j->weights + (size_t)b * window * BNN_BLOCK;
        uint32_t p = 0;
        for (; p + 4 <= n_pix; p += 4)
            bgemm_block(j, wb, p, b, 4);
        for (; p < n_pix; p++)
            bgemm_block(j, wb, p, b, 1);
    }
}

/* Pairs q0 .. q1 of one kernel row, added into the 16-bit sums of B blocks. */
AVX2_TARGET static INLINE void i8gemm_pairs(const uint8_t *x, const int8_t *w, size_t block_bytes, uint32_t q0,
                                            uint32_t q1, __m256i *acc, const int B)
{
    for (uint32_t q = q0; q < q1; q++) {
        if (B == 4)
            BNN_MCA_BEGIN("avx2_i8gemm_b4");
        else
            BNN_MCA_BEGIN("avx2_i8gemm_b1");
        int16_t pair;
        memcpy(&pair, x + 2 * q, 2);
        const __m256i xv = _mm256_set1_epi16(pair);
        UNROLL
        for (int bb = 0; bb < B; bb++) {
            const __m256i wv =
                _mm256_load_si256((const __m256i *)(const void *)(w + bb * block_bytes + (size_t)q * 32));
            acc[bb] = _mm256_add_epi16(acc[bb], _mm256_maddubs_epi16(xv, wv));
        }
        if (B == 4)
            BNN_MCA_END("avx2_i8gemm_b4");
        else
            BNN_MCA_END("avx2_i8gemm_b1");
    }
}

AVX2_TARGET static INLINE void i8gemm_widen(__m256i *acc, __m256i *lo, __m256i *hi, const int B)
{
    UNROLL
    for (int bb = 0; bb < B; bb++) {
        lo[bb] = _mm256_add_epi32(lo[bb], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc[bb])));
        hi[bb] = _mm256_add_epi32(hi[bb], _mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc[bb], 1)));
        acc[bb] = _mm256_setzero_si256();
    }
}

/* Up to 4 blocks of 16 channels share each broadcast input pair. A window of
 * at most 64 pairs (CNV's conv1 has 15) stays in 16-bit sums throughout;
 * longer ones widen every 64 pairs of a row. */
AVX2_TARGET static INLINE void i8gemm_blocks(const struct bnn_i8gemm_job *j, uint32_t p, uint32_t b0, const int B)
{
    const uint32_t rp = j->run_pairs;
    const size_t block_bytes = (size_t)j->kernel * rp * BNN_BLOCK8 * 2;
    const int8_t *w = j->weights + b0 * block_bytes;
    __m256i lo[4], hi[4], acc[4];
    UNROLL
    for (int bb = 0; bb < B; bb++)
        lo[bb] = hi[bb] = acc[bb] = _mm256_setzero_si256();
    if ((uint64_t)j->kernel * rp <= 64) {
        for (uint32_t r = 0; r < j->kernel; r++)
            i8gemm_pairs(bnn_i8_row(j, p, r), w + (size_t)r * rp * 32, block_bytes, 0, rp, acc, B);
    } else {
        for (uint32_t r = 0; r < j->kernel; r++)
            for (uint32_t q0 = 0; q0 < rp; q0 += 64) {
                i8gemm_pairs(bnn_i8_row(j, p, r), w + (size_t)r * rp * 32, block_bytes, q0,
                             rp - q0 < 64 ? rp : q0 + 64, acc, B);
                i8gemm_widen(acc, lo, hi, B);
            }
    }
    i8gemm_widen(acc, lo, hi, B);
    UNROLL
    for (int bb = 0; bb < B; bb++) {
        const uint32_t b = b0 + (uint32_t)bb;
        if (j->scores) {
            int32_t s[16];
            _mm256_storeu_si256((__m256i *)(void *)s, lo[bb]);
            _mm256_storeu_si256((__m256i *)(void *)(s + 8), hi[bb]);
            bnn_i8gemm_finish(j, p, b, s);
            continue;
        }
        /* bit = sum >= limit = not (limit > sum). */
        const __m256i l0 = _mm256_loadu_si256((const __m256i *)(const void *)(j->limit + b * 16));
        const __m256i l1 = _mm256_loadu_si256((const __m256i *)(const void *)(j->limit + b * 16 + 8));
        const int m0 = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(l0, lo[bb])));
        const int m1 = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(l1, hi[bb])));
        uint8_t *o = j->out + (size_t)p * j->out_pixel_bytes + 2 * (size_t)b;
        o[0] = (uint8_t)~m0;
        o[1] = (uint8_t)~m1;
    }
}

/* Windows of at most 64 pairs (CNV's conv1 has 15) never widen: their sums
 * stay 16-bit to the end and meet 16-bit limits. Blocks outermost, so a
 * group's limits are narrowed once per layer; then P = 2 pixels x B = 4
 * blocks share each weight load and each broadcast pair (8 of the 16
 * registers accumulate). */
#define I8_SHORT_PAIRS 64

/* The limits of block b as 16 lanes of int16 in channel order: vpackssdw
 * saturates, which keeps each limit's meaning (|sum| < 2^15, see above). */
AVX2_TARGET static INLINE __m256i i8_limits16(const struct bnn_i8gemm_job *j, uint32_t b)
{
    const __m256i l0 = _mm256_loadu_si256((const __m256i *)(const void *)(j->limit + b * 16));
    const __m256i l1 = _mm256_loadu_si256((const __m256i *)(const void *)(j->limit + b * 16 + 8));
    return _mm256_permute4x64_epi64(_mm256_packs_epi32(l0, l1), 0xD8);
}

/* Block b's 16-bit sums at pixel p -> 16 scores (when asked for scores). */
AVX2_TARGET static INLINE void i8_short_scores(const struct bnn_i8gemm_job *j, __m256i acc, uint32_t p, uint32_t b)
{
    int32_t s[16];
    _mm256_storeu_si256((__m256i *)(void *)s, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc)));
    _mm256_storeu_si256((__m256i *)(void *)(s + 8), _mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc, 1)));
    bnn_i8gemm_finish(j, p, b, s);
}

/* bit = sum >= limit = not (limit > sum); two blocks' compares packed to
 * bytes (in 128-bit halves, so the quads are put back in order) and their 32
 * bits stored, or one block's 16. */
AVX2_TARGET static INLINE void i8_short_bits(const struct bnn_i8gemm_job *j, __m256i acc_a, __m256i acc_b,
                                             __m256i lim_a, __m256i lim_b, uint32_t p, uint32_t b, int two)
{
    const __m256i gt = _mm256_packs_epi16(_mm256_cmpgt_epi16(lim_a, acc_a), _mm256_cmpgt_epi16(lim_b, acc_b));
    const uint32_t bits = ~(uint32_t)_mm256_movemask_epi8(_mm256_permute4x64_epi64(gt, 0xD8));
    memcpy(j->out + (size_t)p * j->out_pixel_bytes + 2 * (size_t)b, &bits, two ? 4 : 2);
}

/* P pixels from p0 x B blocks from b0; rows[q]: where pixel q's window starts. */
AVX2_TARGET static INLINE void i8_short_block(const struct bnn_i8gemm_job *j, const uint8_t *const rows[2],
                                              const __m256i *lim, uint32_t p0, uint32_t b0, const int P, const int B)
{
    const uint32_t rp = j->run_pairs;
    const size_t block_bytes = (size_t)j->kernel * rp * BNN_BLOCK8 * 2, row_bytes = (size_t)j->in_w * j->in_c;
    const int8_t *w = j->weights + b0 * block_bytes;
    __m256i acc[2][4];
    UNROLL
    for (int q = 0; q < P; q++)
        UNROLL
        for (int bb = 0; bb < B; bb++)
            acc[q][bb] = _mm256_setzero_si256();
    for (uint32_t r = 0; r < j->kernel; r++, w += (size_t)rp * 32) {
        for (uint32_t t = 0; t < rp; t++) {
            if (P == 2 && B == 4)
                BNN_MCA_BEGIN("avx2_i8gemm_short_p2b4");
            else if (P == 2)
                BNN_MCA_BEGIN("avx2_i8gemm_short_p2b1");
            else if (B == 4)
                BNN_MCA_BEGIN("avx2_i8gemm_short_p1b4");
            else
                BNN_MCA_BEGIN("avx2_i8gemm_short_p1b1");
            __m256i xv[2];
            UNROLL
            for (int q = 0; q < P; q++) {
                int16_t pair;
                memcpy(&pair, rows[q] + r * row_bytes + 2 * t, 2);
                xv[q] = _mm256_set1_epi16(pair);
            }
            UNROLL
            for (int bb = 0; bb < B; bb++) {
                const __m256i wv = _mm256_load_si256((const __m256i *)(const void *)(w + bb * block_bytes + t * 32));
                UNROLL
                for (int q = 0; q < P; q++)
                    acc[q][bb] = _mm256_add_epi16(acc[q][bb], _mm256_maddubs_epi16(xv[q], wv));
            }
            if (P == 2 && B == 4)
                BNN_MCA_END("avx2_i8gemm_short_p2b4");
            else if (P == 2)
                BNN_MCA_END("avx2_i8gemm_short_p2b1");
            else if (B == 4)
                BNN_MCA_END("avx2_i8gemm_short_p1b4");
            else
                BNN_MCA_END("avx2_i8gemm_short_p1b1");
        }
    }
    UNROLL
    for (int q = 0; q < P; q++) {
        const uint32_t p = p0 + (uint32_t)q;
        if (j->scores) {
            UNROLL
            for (int bb = 0; bb < B; bb++)
                i8_short_scores(j, acc[q][bb], p, b0 + (uint32_t)bb);
            continue;
        }
        UNROLL
        for (int bb = 0; bb < B; bb += 2) {
            if (bb + 1 < B)
                i8_short_bits(j, acc[q][bb], acc[q][bb + 1], lim[bb], lim[bb + 1], p, b0 + (uint32_t)bb, 1);
            else
                i8_short_bits(j, acc[q][bb], acc[q][bb], lim[bb], lim[bb], p, b0 + (uint32_t)bb, 0);
        }
    }
}

/* B blocks from b0 x every pixel, two at a time. */
AVX2_TARGET static INLINE void i8_short_blocks(const struct bnn_i8gemm_job *j, uint32_t b0, const int B)
{
    __m256i lim[4];
    UNROLL
    for (int bb = 0; bb < B; bb++)
        lim[bb] = j->scores ? _mm256_setzero_si256() : i8_limits16(j, b0 + (uint32_t)bb);
    const uint32_t n_pix = j->out_h * j->out_w;
    uint32_t p = 0;
    for (; p + 2 <= n_pix; p += 2) {
        const uint8_t *rows[2] = {bnn_i8_row(j, p, 0), bnn_i8_row(j, p + 1, 0)};
        i8_short_block(j, rows, lim, p, b0, 2, B);
    }
    if (p < n_pix) {
        const uint8_t *rows[2] = {bnn_i8_row(j, p, 0), NULL};
        i8_short_block(j, rows, lim, p, b0, 1, B);
    }
}

AVX2_TARGET void bnn_i8gemm_avx2(const struct bnn_i8gemm_job *j)
{
    BNN_REQUIRE_I8GEMM(j, 32);
    if ((uint64_t)j->kernel * j->run_pairs <= I8_SHORT_PAIRS) {
        uint32_t b = 0;
        for (; b + 4 <= j->n_blocks; b += 4)
            i8_short_blocks(j, b, 4);
        for (; b < j->n_blocks; b++)
            i8_short_blocks(j, b, 1);
        return;
    }
    const uint32_t n_pix = j->out_h * j->out_w;
    for (uint32_t p = 0; p < n_pix; p++) {
        uint32_t b = 0;
        for (; b + 4 <= j->n_blocks; b += 4)
            i8gemm_blocks(j, p, b, 4);
        for (; b < j->n_blocks; b++)
            i8gemm_blocks(j, p, b, 1);
    }
}

AVX2_TARGET static INLINE uint32_t ge_mask32(const uint8_t *x, const uint8_t *t)
{
    const __m256i xv = _mm256_loadu_si256((const __m256i *)(const void *)x);
    const __m256i tv = _mm256_loadu_si256((const __m256i *)(const void *)t);
    return (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_max_epu8(xv, tv), xv));
}

AVX2_TARGET void bnn_threshold_bits_avx2(const uint8_t *x, const uint8_t *t, size_t n, uint64_t *out)
{
    BNN_REQUIRE_THRESHOLD_BITS(x, t, n, out);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        BNN_MCA_BEGIN("avx2_threshold");
        out[i / 64] = (uint64_t)ge_mask32(x + i, t + i) | (uint64_t)ge_mask32(x + i + 32, t + i + 32) << 32;
        BNN_MCA_END("avx2_threshold");
    }
    if (i < n) {
        /* The input ends here: compare a zero-padded copy, keep n - i bits. */
        uint8_t tail[64] = {0};
        memcpy(tail, x + i, n - i);
        uint64_t word = (uint64_t)ge_mask32(tail, t + i) | (uint64_t)ge_mask32(tail + 32, t + i + 32) << 32;
        out[i / 64] = word & (~0ull >> (64 - (n - i)));
    }
}

const struct bnn_kernels bnn_kernels_avx2 = {
    .name = "avx2",
    .bgemm = bgemm_avx2,
    .i8gemm = bnn_i8gemm_avx2,
    .threshold_bits = bnn_threshold_bits_avx2,
};

#endif
