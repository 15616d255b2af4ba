/*
 * The NEON kernel set (ARMv7 NEON on the Pynq-Z2's Cortex-A9, AArch64 ASIMD on
 * the Ultra96's Cortex-A53). On 32-bit ARM only this file is built with
 * -mfpu=neon, and it runs only when the kernel reports HWCAP_NEON.
 *
 * Binary GEMM: the activation word is duplicated into both 64-bit lanes of a
 * q register and XORed with the words of 2 output channels; vcnt counts bits
 * per byte and vpadal (uadalp) adds byte pairs into 16-bit lanes, so each
 * 64-bit lane keeps one channel's mismatches and no horizontal reduction is
 * needed until the end (vpaddl to 64 bits). A 16-bit lane gains at most 16
 * per word, so the sums move to 32 bits every 4,095 words. Two output pixels
 * share each weight load.
 *
 * 8-bit GEMM: vld2 splits a pair-interleaved weight vector into weights 2q and
 * 2q + 1 of 16 channels; both are multiplied by the broadcast activations and
 * accumulated in 16-bit lanes (64 pairs at most) before widening to 32 bits.
 *
 * Thresholds to bits: vcge gives 0xFF per passing channel; ANDed with the bit
 * weights 1, 2, ..., 128 and summed pairwise to 64 bits, each half gives the
 * byte of 8 channels.
 */
#include <string.h>

#include "../internal.h"
#include "../mca_markers.h"

#ifdef BNN_ARM

#include <arm_neon.h>

#define INLINE inline __attribute__((always_inline))
/* The register blocks (pixels x channel vectors) must be unrolled for their
 * accumulators to stay in registers. */
#define UNROLL _Pragma("GCC unroll 8")
#define MAX_WORDS_PER_FLUSH 4095

static INLINE void flush16(uint16x8_t *bytes16, uint32x4_t *sums)
{
    *sums = vpadalq_u16(*sums, *bytes16);
    *bytes16 = vdupq_n_u16(0);
}

static INLINE void bgemm_block(const struct bnn_bgemm_job *j, const uint64_t *wb, uint32_t p0, uint32_t b,
                               const int P)
{
    const uint64_t *base[2];
    uint16x8_t acc[2][4];
    uint32x4_t sums[2][4];
    UNROLL
    for (int q = 0; q < P; q++) {
        base[q] = bnn_pixel_base(j, p0 + (uint32_t)q);
        UNROLL
        for (int c = 0; c < 4; c++) {
            acc[q][c] = vdupq_n_u16(0);
            sums[q][c] = vdupq_n_u32(0);
        }
    }
    uint32_t pending = 0;
    for (uint32_t r = 0; r < j->n_rows; r++) {
        const uint64_t *w = wb + (size_t)r * j->row_words * BNN_BLOCK;
        const size_t at = r * j->row_stride;
        for (uint32_t i = 0; i < j->row_words; i++, w += BNN_BLOCK) {
            if (P == 2)
                BNN_MCA_BEGIN("neon_bgemm_p2");
            else
                BNN_MCA_BEGIN("neon_bgemm_p1");
            uint64x2_t wv[4];
            UNROLL
            for (int c = 0; c < 4; c++)
                wv[c] = vld1q_u64(w + 2 * c);
            UNROLL
            for (int q = 0; q < P; q++) {
                const uint64x2_t x = vld1q_dup_u64(base[q] + at + i);
                UNROLL
                for (int c = 0; c < 4; c++)
                    acc[q][c] = vpadalq_u8(acc[q][c], vcntq_u8(vreinterpretq_u8_u64(veorq_u64(x, wv[c]))));
            }
            if (P == 2)
                BNN_MCA_END("neon_bgemm_p2");
            else
                BNN_MCA_END("neon_bgemm_p1");
            if (++pending == MAX_WORDS_PER_FLUSH) {
                UNROLL
                for (int q = 0; q < P; q++)
                    UNROLL
                    for (int c = 0; c < 4; c++)
                        flush16(&acc[q][c], &sums[q][c]);
                pending = 0;
            }
        }
    }
    UNROLL
    for (int q = 0; q < P; q++) {
        uint32_t m[8];
        UNROLL
        for (int c = 0; c < 4; c++) {
            flush16(&acc[q][c], &sums[q][c]);
            const uint64x2_t s = vpaddlq_u32(sums[q][c]);
            m[2 * c] = (uint32_t)vgetq_lane_u64(s, 0);
            m[2 * c + 1] = (uint32_t)vgetq_lane_u64(s, 1);
        }
        bnn_bgemm_finish(j, p0 + (uint32_t)q, b, m);
    }
}

static void bgemm_neon(const struct bnn_bgemm_job *j)
{
    BNN_REQUIRE_BGEMM(j, 8);
    const size_t window = (size_t)j->n_rows * j->row_words;
    const uint32_t n_pix = j->out_h * j->out_w;
    for (uint32_t b = 0; b < j->n_blocks; b++) {
        const uint64_t *wb = j->weights + (size_t)b * window * BNN_BLOCK;
        uint32_t p = 0;
        for (; p + 2 <= n_pix; p += 2)
            bgemm_block(j, wb, p, b, 2);
        for (; p < n_pix; p++)
            bgemm_block(j, wb, p, b, 1);
    }
}

static INLINE void widen(int16x8_t *lo, int16x8_t *hi, int32x4_t *acc32)
{
    acc32[0] = vaddw_s16(acc32[0], vget_low_s16(*lo));
    acc32[1] = vaddw_s16(acc32[1], vget_high_s16(*lo));
    acc32[2] = vaddw_s16(acc32[2], vget_low_s16(*hi));
    acc32[3] = vaddw_s16(acc32[3], vget_high_s16(*hi));
    *lo = *hi = vdupq_n_s16(0);
}

static void i8gemm_neon(const struct bnn_i8gemm_job *j)
{
    BNN_REQUIRE_I8GEMM(j, 1);
    const uint32_t n_pix = j->out_h * j->out_w;
    const size_t block_bytes = (size_t)j->kernel * j->run_pairs * BNN_BLOCK8 * 2;
    for (uint32_t p = 0; p < n_pix; p++) {
        for (uint32_t b = 0; b < j->n_blocks; b++) {
            const int8_t *w = j->weights + b * block_bytes;
            int32x4_t acc32[4];
            UNROLL
            for (int c = 0; c < 4; c++)
                acc32[c] = vdupq_n_s32(0);
            int16x8_t lo = vdupq_n_s16(0), hi = vdupq_n_s16(0);
            uint32_t pending = 0;
            for (uint32_t r = 0; r < j->kernel; r++) {
                const uint8_t *x = bnn_i8_row(j, p, r);
                for (uint32_t q = 0; q < j->run_pairs; q++, w += BNN_BLOCK8 * 2) {
                    BNN_MCA_BEGIN("neon_i8gemm");
                    const int8x16x2_t wv = vld2q_s8(w);
                    const int16_t x0 = x[2 * q], x1 = x[2 * q + 1];
                    lo = vmlaq_n_s16(lo, vmovl_s8(vget_low_s8(wv.val[0])), x0);
                    lo = vmlaq_n_s16(lo, vmovl_s8(vget_low_s8(wv.val[1])), x1);
                    hi = vmlaq_n_s16(hi, vmovl_s8(vget_high_s8(wv.val[0])), x0);
                    hi = vmlaq_n_s16(hi, vmovl_s8(vget_high_s8(wv.val[1])), x1);
                    BNN_MCA_END("neon_i8gemm");
                    if (++pending == 64) {
                        widen(&lo, &hi, acc32);
                        pending = 0;
                    }
                }
            }
            widen(&lo, &hi, acc32);
            int32_t s[16];
            UNROLL
            for (int c = 0; c < 4; c++)
                vst1q_s32(s + 4 * c, acc32[c]);
            bnn_i8gemm_finish(j, p, b, s);
        }
    }
}

static INLINE uint32_t ge_mask16(const uint8_t *x, const uint8_t *t)
{
    static const uint8_t bit_weights[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t ge = vcgeq_u8(vld1q_u8(x), vld1q_u8(t));
    const uint64x2_t s = vpaddlq_u32(vpaddlq_u16(vpaddlq_u8(vandq_u8(ge, vld1q_u8(bit_weights)))));
    return (uint32_t)vgetq_lane_u64(s, 0) | (uint32_t)vgetq_lane_u64(s, 1) << 8;
}

static void threshold_bits_neon(const uint8_t *x, const uint8_t *t, size_t n, uint64_t *out)
{
    BNN_REQUIRE_THRESHOLD_BITS(x, t, n, out);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        BNN_MCA_BEGIN("neon_threshold");
        uint64_t word = 0;
        UNROLL
        for (int c = 0; c < 4; c++)
            word |= (uint64_t)ge_mask16(x + i + 16 * c, t + i + 16 * c) << (16 * c);
        out[i / 64] = word;
        BNN_MCA_END("neon_threshold");
    }
    if (i < n) {
        uint8_t tail[64] = {0};
        memcpy(tail, x + i, n - i);
        uint64_t word = 0;
        UNROLL
        for (int c = 0; c < 4; c++)
            word |= (uint64_t)ge_mask16(tail + 16 * c, t + i + 16 * c) << (16 * c);
        out[i / 64] = word & (~0ull >> (64 - (n - i)));
    }
}

const struct bnn_kernels bnn_kernels_neon = {
    .name = "neon",
    .bgemm = bgemm_neon,
    .i8gemm = i8gemm_neon,
    .threshold_bits = threshold_bits_neon,
};

#endif
