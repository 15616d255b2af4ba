/*
 * The portable kernels: the reference every other kernel set is tested
 * against, and the fallback on any CPU. Popcount is the classic SWAR bit
 * trick, so this file uses no instruction a compiler flag would have to allow.
 */
#include <string.h>

#include "internal.h"

static inline uint32_t popcount64(uint64_t x)
{
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return (uint32_t)((x * 0x0101010101010101ull) >> 56);
}

/* Loop order: channel block outermost, so one block's weights (8 rows of the
 * window) stay in L1 while every output pixel streams past them. */
static void bgemm_scalar(const struct bnn_bgemm_job *j)
{
    BNN_REQUIRE_BGEMM(j, 8);
    const size_t window = (size_t)j->n_rows * j->row_words;
    const uint32_t n_pix = j->out_h * j->out_w;
    for (uint32_t b = 0; b < j->n_blocks; b++) {
        const uint64_t *wb = j->weights + (size_t)b * window * BNN_BLOCK;
        for (uint32_t p = 0; p < n_pix; p++) {
            const uint64_t *base = bnn_pixel_base(j, p);
            uint32_t m[BNN_BLOCK] = {0};
            for (uint32_t r = 0; r < j->n_rows; r++) {
                const uint64_t *a = base + r * j->row_stride;
                const uint64_t *w = wb + (size_t)r * j->row_words * BNN_BLOCK;
                for (uint32_t i = 0; i < j->row_words; i++)
                    for (int c = 0; c < BNN_BLOCK; c++)
                        m[c] += popcount64(a[i] ^ w[(size_t)i * BNN_BLOCK + c]);
            }
            bnn_bgemm_finish(j, p, b, m);
        }
    }
}

/* One output pixel at a time; the window is read in place, kernel row by
 * kernel row, as byte pairs (see internal.h). */
void bnn_i8gemm_scalar(const struct bnn_i8gemm_job *j)
{
    BNN_REQUIRE_I8GEMM(j, 1);
    const uint32_t n_pix = j->out_h * j->out_w;
    const size_t block_bytes = (size_t)j->kernel * j->run_pairs * BNN_BLOCK8 * 2;
    for (uint32_t p = 0; p < n_pix; p++) {
        for (uint32_t b = 0; b < j->n_blocks; b++) {
            const int8_t *w = j->weights + b * block_bytes;
            int32_t acc[BNN_BLOCK8] = {0};
            for (uint32_t r = 0; r < j->kernel; r++) {
                const uint8_t *x = bnn_i8_row(j, p, r);
                for (uint32_t q = 0; q < j->run_pairs; q++, w += BNN_BLOCK8 * 2)
                    for (int c = 0; c < BNN_BLOCK8; c++)
                        acc[c] += x[2 * q] * w[2 * c] + x[2 * q + 1] * w[2 * c + 1];
            }
            bnn_i8gemm_finish(j, p, b, acc);
        }
    }
}

void bnn_threshold_bits_scalar(const uint8_t *x, const uint8_t *t, size_t n, uint64_t *out)
{
    BNN_REQUIRE_THRESHOLD_BITS(x, t, n, out);
    for (size_t w = 0; w * 64 < n; w++) {
        size_t end = n - w * 64 < 64 ? n - w * 64 : 64;
        uint64_t word = 0;
        for (size_t j = 0; j < end; j++)
            word |= (uint64_t)(x[w * 64 + j] >= t[w * 64 + j]) << j;
        out[w] = word;
    }
}

const struct bnn_kernels bnn_kernels_scalar = {
    .name = "scalar",
    .bgemm = bgemm_scalar,
    .i8gemm = bnn_i8gemm_scalar,
    .threshold_bits = bnn_threshold_bits_scalar,
};

void bnn_pad_input(const struct bnn_layer *L, const uint8_t *x, uint8_t *out)
{
    /* Bits: whole words per pixel, a padded pixel all 0 bits (FINN's BINARY 0,
     * the -1 of the XNOR product). Bytes: the byte that stores the integer 0. */
    const size_t pix = L->in_type == BNN_TYPE_BITS ? (size_t)L->in_wpp * 8 : L->in_c;
    const int fill = L->in_type == BNN_TYPE_BITS ? 0 : L->pad_byte;
    const size_t in_row = (size_t)L->in_w * pix, out_row = (size_t)L->win_w * pix;
    const size_t left = (size_t)L->pad[1] * pix, right = (size_t)L->pad[3] * pix;
    memset(out, fill, (size_t)L->pad[0] * out_row);
    uint8_t *o = out + (size_t)L->pad[0] * out_row;
    for (uint32_t y = 0; y < L->in_h; y++, o += out_row) {
        memset(o, fill, left);
        memcpy(o + left, x + (size_t)y * in_row, in_row);
        memset(o + left + in_row, fill, right);
    }
    memset(o, fill, (size_t)L->pad[2] * out_row);
}
