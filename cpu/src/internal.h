/*
 * bnncpu internals: the loaded model in the engine's layout, and the kernel
 * interface shared by the portable, x86 and ARM kernel sets.
 *
 * Packed layouts (all kernels read the same ones, so one loaded model runs
 * with any kernel set):
 *
 * - A bits tensor of h x w x c is pixel-major (HWC), each pixel padded to
 *   wpp = ceil(c / 64) whole u64 words, channel j of a pixel at bit j % 64 of
 *   word j / 64, pad bits zero. A row of a kh x kw window is then kw
 *   consecutive pixels, kw * wpp consecutive words, read in place without an
 *   im2col copy.
 *
 * - A padded window (the file's pad fields) reads a padded copy of its input,
 *   made once per layer and image by the runner: the input with pad_top rows
 *   above, pad_left columns on the left and so on, each padded pixel all 0
 *   bits (FINN's 0 bit, -1) or the byte of the integer 0 (0 for uint8, 128 for
 *   int8 stored as x + 128). The kernels then see an unpadded window on the
 *   larger input and never test for borders; only padded layers pay the copy.
 *   As bytes (little-endian), channel j sits in bit j % 8 of byte j / 8, so a
 *   kernel that makes 8 output channels at once stores one byte.
 *
 * - Binary weights are repacked at load into blocks of BNN_BLOCK (8) output
 *   channels: w[block][word][8], where word runs over the window in (kernel
 *   row, kernel column, channel word) order with each pixel padded like the
 *   activations. A kernel broadcasts one activation word and XORs it against
 *   the 8 channels' words in one or two vector loads, so every vector lane
 *   belongs to one output channel and no horizontal sum is ever needed; pad
 *   words are zero in both operands and never count. Pad channels (out_c up
 *   to a multiple of 8) have zero weights and a limit of -1 (never fire).
 *
 * - Convolutions (layers with several output pixels, windows of at most
 *   BNN_NIB_MAX_WORDS words) also keep their weights split into nibbles on
 *   x86, one byte each: ws[group][window nibble][16], a group being 16 output
 *   channels (2 blocks) and window nibble n of word w holding bits 4n .. 4n+3
 *   of the window's word w (16 per word). The AVX2 kernel turns each nibble
 *   of the layer's input into a 16-byte table, t[v] = popcount(v ^ nibble),
 *   once per layer (256 bytes per word, tables in nibble order); then one
 *   vpshufb of a pixel's two tables (window nibbles 2m and 2m + 1, one per
 *   128-bit half) by the group's 32 weight bytes of those nibbles counts 16
 *   channels' mismatches in 8 window bits, and one byte add accumulates them:
 *   2 vector operations per 128 bits, against 3 for XOR, lookup and add.
 *   Layers with one output pixel use each weight once per image and keep the
 *   plain words (the nibble copy would be 16 times the bytes to stream).
 *
 * - The engine counts mismatches m = popcount(a XOR w) instead of FINN's
 *   matches: acc = K - m, so acc >= t becomes m <= K - t (the "limit").
 *
 * - Byte tensors (uint8 or int8 activations) are h x w x c bytes, int8 values
 *   stored as x + 128 so every 8-bit kernel multiplies unsigned activations by
 *   +-1 (vpmaddubsw takes its first operand unsigned); the offset is folded
 *   into the limits and scores: sum((u - 128) w) = sum(u w) - 128 sum(w).
 *
 * - 8-bit weights are int8 +-1 in blocks of BNN_BLOCK8 (16) output channels,
 *   interleaved by pairs of inputs: w8[block][pair][16][2], so one 32-byte
 *   load holds weights 2p and 2p+1 of 16 channels, next to each other as
 *   vpmaddubsw multiplies and adds them. The pairs run over the window's
 *   kernel rows, each row's run of kernel * in_c bytes padded to whole pairs
 *   (run_pairs), so no pair straddles two rows and the kernels read the pairs
 *   in place from the HWC activations, without gathering the window. The pad
 *   byte of an odd run (the next pixel's first byte, or the zeroed slack
 *   after the tensor) meets a zero weight.
 */
#ifndef BNNCPU_INTERNAL_H
#define BNNCPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "bnncpu.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bnncpu views packed u64 words as bytes and needs a little-endian CPU"
#endif

#if defined(__x86_64__) || defined(__i386__)
#define BNN_X86 1
#endif
#if defined(__arm__) || defined(__aarch64__)
#define BNN_ARM 1
#endif

#define BNN_BLOCK 8    /* output channels per block of the binary kernels */
#define BNN_BLOCK8 16  /* output channels per block of the 8-bit kernels */
#define BNN_ALIGN 64   /* every buffer and weight array starts on a cache line */
/* The nibble-split weights (see above): groups of 16 output channels (2
 * blocks), windows of at most 511 words (mismatch counts fit 15 bits). */
#define BNN_NIB_CHANNELS 16
#define BNN_NIB_BLOCKS 2
#define BNN_NIB_MAX_WORDS 511

/* What the engine may hold on top of the file's limits, so that a small file
 * with huge shapes cannot make it allocate without bound. */
#define BNN_ENGINE_MAX_BYTES (1ull << 30)

/*
 * One binary MVAU layer (or any part of a batch of FC layers): output pixels
 * in raster order, each a window of n_rows runs of row_words words, run r of
 * pixel (oy, ox) starting at
 * in + oy * row_step + ox * col_step + r * row_stride, i.e.
 * in + (oy * stride_h * in_w + ox * stride_w) * in_wpp + r * row_stride.
 * A padded layer's in, in_w and in_words are those of its padded copy.
 */
struct bnn_bgemm_job {
    const uint64_t *in;
    uint32_t in_w, in_wpp;       /* input width in pixels, words per pixel */
    uint32_t out_h, out_w, stride_h;
    uint32_t n_rows, row_words;  /* window: n_rows runs of row_words words */
    size_t row_stride;           /* words from one window run to the next */
    const uint64_t *weights;     /* [n_blocks][n_rows * row_words][BNN_BLOCK] */
    uint32_t n_blocks;
    int32_t k;                   /* K, for scores = K - mismatches */
    const int32_t *limit;        /* [n_blocks * 8]: bit = mismatches <= limit */
    uint8_t *out;                /* bits out: block b of pixel p at out[p * out_pixel_bytes + b] */
    size_t out_pixel_bytes;
    int32_t *scores;             /* if not NULL: scores out, [pixel][n_blocks * 8] */
    const uint8_t *weights_split; /* or NULL: [group][window nibble][BNN_NIB_CHANNELS], see above */
    uint8_t *split;              /* scratch for the input's nibble tables: 256 bytes per word */
    size_t in_words;             /* words of the input tensor */
    uint32_t stride_w;           /* the window's step along a row (stride_h: down the rows) */
    /* Words from one output row's windows to the next's (stride_h * in_w *
     * in_wpp) and from one output column's to the next's (stride_w * in_wpp):
     * computed once per layer, so finding a window costs two multiplies. */
    size_t row_step, col_step;
};

/* One 8-bit-input MVAU layer: the window of pixel (oy, ox) is kernel (the
 * window's height kh) runs of run_pairs byte pairs (kw * in_c bytes and, if
 * that is odd, one more, which meets a zero weight; the input has slack after
 * its end for it). A padded layer's in and in_w are those of its padded copy. */
struct bnn_i8gemm_job {
    const uint8_t *in;
    uint32_t in_w, in_c;
    uint32_t out_h, out_w, kernel, stride_h; /* the window: kernel (kh) rows of kernel_w pixels */
    const int8_t *weights;       /* [n_blocks][kernel * run_pairs][BNN_BLOCK8][2] */
    uint32_t n_blocks, run_pairs;
    const int32_t *limit;        /* [n_blocks * 16]: bit = sum(u * w) >= limit */
    const int32_t *offset;       /* scores = sum(u * w) - offset */
    uint8_t *out;                /* bits out: 16 channels = 2 bytes per block */
    size_t out_pixel_bytes;
    int32_t *scores;             /* if not NULL: scores out, [pixel][n_blocks * 16] */
    uint32_t kernel_w, stride_w;
    size_t row_step, col_step;   /* bytes: stride_h * in_w * in_c and stride_w * in_c */
};

struct bnn_kernels {
    const char *name;
    void (*bgemm)(const struct bnn_bgemm_job *job);
    void (*i8gemm)(const struct bnn_i8gemm_job *job);
    /* n uint8 values of one pixel against thresholds t (n rounded up to 64
     * readable entries) -> ceil(n / 64) words, bits past n zero. */
    void (*threshold_bits)(const uint8_t *x, const uint8_t *t, size_t n, uint64_t *out);
};

/*
 * Contracts: what a kernel assumes of its job (pointers, sizes, the alignment
 * of its vector loads, a window inside its input) and what the runner assumes
 * of its buffers and thread slices. The sanitizer and fuzz builds define
 * BNN_CONTRACTS, so a broken assumption stops where it is made instead of
 * surfacing as a wrong bit or a stray read deep inside a SIMD loop; other
 * builds compile the checks out, so the hot path pays nothing.
 */
#ifdef BNN_CONTRACTS
void bnn_contract_failed(const char *cond, const char *file, int line);
#define BNN_REQUIRE(cond) ((cond) ? (void)0 : bnn_contract_failed(#cond, __FILE__, __LINE__))
/* align: the alignment the kernel's weight loads need. */
void bnn_require_bgemm(const struct bnn_bgemm_job *j, size_t align);
void bnn_require_i8gemm(const struct bnn_i8gemm_job *j, size_t align);
void bnn_require_threshold_bits(const uint8_t *x, const uint8_t *t, size_t n, const uint64_t *out);
#define BNN_REQUIRE_BGEMM(j, align) bnn_require_bgemm(j, align)
#define BNN_REQUIRE_I8GEMM(j, align) bnn_require_i8gemm(j, align)
#define BNN_REQUIRE_THRESHOLD_BITS(x, t, n, out) bnn_require_threshold_bits(x, t, n, out)
#else
/* sizeof keeps the operands "used" without evaluating them. */
#define BNN_REQUIRE(cond) ((void)sizeof((cond) ? 1 : 0))
#define BNN_REQUIRE_BGEMM(j, align) ((void)0)
#define BNN_REQUIRE_I8GEMM(j, align) ((void)0)
#define BNN_REQUIRE_THRESHOLD_BITS(x, t, n, out) ((void)0)
#endif

extern const struct bnn_kernels bnn_kernels_scalar;
#ifdef BNN_X86
extern const struct bnn_kernels bnn_kernels_popcnt;
extern const struct bnn_kernels bnn_kernels_avx2;
extern const struct bnn_kernels bnn_kernels_avx512;
/* The AVX2 8-bit and threshold kernels, which the AVX-512 set reuses. */
void bnn_i8gemm_avx2(const struct bnn_i8gemm_job *job);
void bnn_threshold_bits_avx2(const uint8_t *x, const uint8_t *t, size_t n, uint64_t *out);
#endif
#ifdef BNN_ARM
extern const struct bnn_kernels bnn_kernels_neon;
#endif

/* Portable parts the other kernel sets reuse. */
void bnn_i8gemm_scalar(const struct bnn_i8gemm_job *job);
void bnn_threshold_bits_scalar(const uint8_t *x, const uint8_t *t, size_t n, uint64_t *out);
/* Where kernel row r of the window of output pixel p (raster order) starts. */
static inline const uint8_t *bnn_i8_row(const struct bnn_i8gemm_job *j, uint32_t p, uint32_t r)
{
    uint32_t oy = p / j->out_w, ox = p % j->out_w;
    return j->in + (size_t)oy * j->row_step + (size_t)ox * j->col_step + (size_t)r * j->in_w * j->in_c;
}

/* Bytes of slack every 8-bit tensor has after its end (zero or finite data). */
#define BNN_SLACK 64

/* Where the window of output pixel p (raster order) starts. */
static inline const uint64_t *bnn_pixel_base(const struct bnn_bgemm_job *j, uint32_t p)
{
    uint32_t oy = p / j->out_w, ox = p % j->out_w;
    return j->in + (size_t)oy * j->row_step + (size_t)ox * j->col_step;
}

/* Mismatch counts m[8] of block b at pixel p -> one output byte, or 8 scores. */
static inline void bnn_bgemm_finish(const struct bnn_bgemm_job *j, uint32_t p, uint32_t b, const uint32_t *m)
{
    if (j->scores) {
        int32_t *s = j->scores + (size_t)p * j->n_blocks * BNN_BLOCK + (size_t)b * BNN_BLOCK;
        for (int c = 0; c < BNN_BLOCK; c++)
            s[c] = j->k - (int32_t)m[c];
    } else {
        const int32_t *lim = j->limit + (size_t)b * BNN_BLOCK;
        unsigned byte = 0;
        for (int c = 0; c < BNN_BLOCK; c++)
            byte |= (unsigned)((int64_t)m[c] <= lim[c]) << c;
        j->out[(size_t)p * j->out_pixel_bytes + b] = (uint8_t)byte;
    }
}

/* Sums sum(u * w)[16] of block b at pixel p -> two output bytes, or 16 scores. */
static inline void bnn_i8gemm_finish(const struct bnn_i8gemm_job *j, uint32_t p, uint32_t b, const int32_t *acc)
{
    if (j->scores) {
        int32_t *s = j->scores + (size_t)p * j->n_blocks * BNN_BLOCK8 + (size_t)b * BNN_BLOCK8;
        for (int c = 0; c < BNN_BLOCK8; c++)
            s[c] = acc[c] - j->offset[b * BNN_BLOCK8 + c];
    } else {
        const int32_t *lim = j->limit + (size_t)b * BNN_BLOCK8;
        unsigned bits = 0;
        for (int c = 0; c < BNN_BLOCK8; c++)
            bits |= (unsigned)(acc[c] >= lim[c]) << c;
        uint8_t *o = j->out + (size_t)p * j->out_pixel_bytes + 2 * (size_t)b;
        o[0] = (uint8_t)bits;
        o[1] = (uint8_t)(bits >> 8);
    }
}

/* A kernel set and the CPU features it needs. */
struct bnn_kernel_set {
    const struct bnn_kernels *kernels;
    unsigned needs; /* enum bnn_cpu_feature bits */
};
/* Every kernel set of this build, worst first: the one table that selection,
 * listing and the tests read. */
size_t bnn_kernel_sets(const struct bnn_kernel_set **sets);
/* The features the CPU has, before BNNCPU_DISABLE. */
unsigned bnn_detect_features(void);
/* The features a BNNCPU_DISABLE value (NULL for none) switches off. */
unsigned bnn_features_named(const char *setting);
/* The kernel set for this process: the best the CPU has after BNNCPU_DISABLE,
 * chosen once. */
const struct bnn_kernels *bnn_select_kernels(void);
/* Every kernel set this CPU can run (ignoring BNNCPU_DISABLE), scalar first. */
size_t bnn_available_kernels(const struct bnn_kernels **out, size_t max);
/* Runs the model with another kernel set (tests compare them in one process). */
void bnn_model_use_kernels(bnn_model *model, const struct bnn_kernels *kernels);
/* For tests: the least work (ns) a thread's share needs before bnn_context_run_threads
 * splits a batch; 0 splits every batch, one image a chunk, over every thread asked for. */
void bnn_context_set_split_ns(bnn_context *ctx, uint64_t min_ns);

uint32_t bnn_crc32(const uint8_t *data, size_t size, size_t skip_at);

struct bnn_layer {
    /* The record's header (kernel, stride: the window's height and row step). */
    uint32_t kind, in_h, in_w, in_c, out_h, out_w, out_c, kernel, stride;
    uint32_t in_type, out_type, n_thresholds;
    int32_t act_val;
    uint32_t kernel_w, stride_w;
    uint32_t pad[4];              /* top, left, bottom, right */

    /* The input the window slides over: in_h x in_w, or the padded copy's
     * size when padded (see the top of this file). */
    int padded;
    uint32_t win_h, win_w;
    uint8_t pad_byte;             /* 8-bit inputs: the byte of the integer 0 */

    uint32_t in_wpp, out_wpp;     /* words per pixel of bits tensors */
    uint64_t k;                   /* MVAU: inputs per output */
    uint64_t binary_macs, integer_macs, weight_bytes;
    size_t out_bytes;             /* the output tensor in the engine's layout */

    /* MVAU on bits */
    uint64_t *bw;
    uint8_t *bw_split;            /* x86, several output pixels: the nibble-split copy */
    uint32_t n_blocks, n_rows, row_words;
    int32_t *limit;
    /* MVAU on bytes */
    int8_t *w8;
    uint32_t n_blocks8, run_pairs;
    int32_t *limit8, *offset8;
    /* THRESHOLD */
    uint8_t *t8;                  /* bits out: per-channel uint8 threshold */
    uint64_t *never;              /* bits out: channels whose threshold is past 255 */
    int has_never;
    uint8_t *lut;                 /* int8 out: [c][256] output byte (value + 128) */
};

struct bnn_model {
    uint32_t in_c, in_h, in_w, input_order, n_classes, dataset, n_layers;
    int transpose_input;          /* CHW image -> HWC tensor before the first layer */
    int copy_input;               /* the image into the context first (slack for 8-bit pairs) */
    struct bnn_layer *layers;
    const struct bnn_kernels *kernels;
    void *arena;                  /* every weight and threshold array */
    uint64_t model_bytes;
    size_t act_bytes;             /* each of the two activation buffers */
    size_t image_bytes, score_count;
    size_t split_bytes;           /* the nibble tables of the largest split layer's input */
    size_t pad_bytes;             /* the padded copy of the largest padded layer's input, slack included */
    uint64_t context_bytes;
    uint64_t binary_macs, integer_macs;
};

/* Writes layer L's padded input (win_h x win_w pixels) from its input x: the
 * copy a padded window reads (see the top of this file). */
void bnn_pad_input(const struct bnn_layer *L, const uint8_t *x, uint8_t *out);

/* Aligned allocation that works for any size (aligned_alloc needs a multiple
 * of the alignment). */
void *bnn_alloc(size_t size);
void bnn_free(void *p);

#endif /* BNNCPU_INTERNAL_H */
