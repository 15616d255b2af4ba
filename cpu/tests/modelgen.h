/*
 * Random valid model files for the tests, the fuzz corpus and the benchmarks:
 * the architectures of the real networks (digits, tfc, sfc, lfc, cnv) with
 * random binary weights and thresholds near the middle of each accumulator's
 * range (so activations are neither all 0 nor all 1), and random small
 * architectures with awkward shapes.
 */
#ifndef BNNCPU_MODELGEN_H
#define BNNCPU_MODELGEN_H

#include <stddef.h>
#include <stdint.h>

#define GEN_MAX_LAYERS 64

/* A deterministic generator (splitmix64), so a seed means the same model and
 * the same images on every architecture. */
typedef struct {
    uint64_t state;
} gen_rng;
uint64_t gen_next(gen_rng *r);
uint32_t gen_below(gen_rng *r, uint32_t n); /* 0 .. n-1 */
int32_t gen_range(gen_rng *r, int32_t lo, int32_t hi); /* lo .. hi */

struct gen_layer {
    uint32_t kind, in_h, in_w, in_c, out_h, out_w, out_c, kernel, stride;
    uint32_t kernel_w, stride_w, pad[4]; /* format 1.1: window width, row step, top/left/bottom/right */
    uint32_t in_type, out_type, n_thresholds;
    int32_t act_val;
    int32_t threshold; /* THRESHOLD to bits: this one value for every channel (0: random) */
};

struct gen_model {
    uint32_t in_c, in_h, in_w, input_order, n_classes, dataset;
    uint32_t n_layers;
    uint32_t minor; /* the format minor version gen_write writes: BNN_FORMAT_MINOR unless set to 0 */
    int minor_set;
    struct gen_layer layers[GEN_MAX_LAYERS];
    /* the tensor after the last layer added */
    uint32_t h, w, c, type;
};

/* Building an architecture: each call chains from the previous layer. */
void gen_start(struct gen_model *m, uint32_t c, uint32_t h, uint32_t w, uint32_t order, uint32_t dataset,
               int flat);
void gen_threshold(struct gen_model *m, uint32_t out_type, uint32_t n_thresholds, int32_t act_val);
/* THRESHOLD to bits with one threshold for every channel (TFC: 128). */
void gen_threshold_fixed(struct gen_model *m, int32_t threshold);
void gen_mvau(struct gen_model *m, uint32_t kernel, uint32_t stride, uint32_t out_c, int scores);
/* A kh x kw window with strides sh, sw over the input padded by pad[4] (top,
 * left, bottom, right). */
void gen_conv(struct gen_model *m, uint32_t kh, uint32_t kw, uint32_t sh, uint32_t sw, const uint32_t *pad,
              uint32_t out_c, int scores);
void gen_maxpool2(struct gen_model *m, uint32_t kh, uint32_t kw, uint32_t sh, uint32_t sw);
void gen_fc(struct gen_model *m, uint32_t out_c, int scores); /* a window over the whole input */
void gen_maxpool(struct gen_model *m, uint32_t kernel, uint32_t stride);
void gen_label_select(struct gen_model *m);

/* "digits", "tfc", "sfc", "lfc", "cnv", and the shapes of format 1.1:
 * "lenet" (padded 8-bit conv, stride 2, a flatten of 5x5xC into an FC),
 * "conv1d" (1 x W signal, (1, k) kernels, padding, odd channels, 2 classes),
 * "wide" (non-square input and kernels, prime channels, 43 classes);
 * 0 if the name is unknown. */
int gen_arch(struct gen_model *m, const char *name);
/* A small random architecture with odd channel counts, K not a multiple of
 * 64, stride 2, kernels covering the whole input, 1 output channel,
 * non-square kernels and strides, padded windows, 1 x W inputs, ... */
void gen_random_arch(struct gen_model *m, gen_rng *r);

/* The model file (malloc'ed) with weights and thresholds drawn from seed. */
uint8_t *gen_write(const struct gen_model *m, uint64_t seed, size_t *size);

/* Editing files in the tests. */
uint32_t gen_get32(const uint8_t *p);
void gen_set32(uint8_t *p, uint32_t v);
void gen_set64(uint8_t *p, uint64_t v);
void gen_fix_crc(uint8_t *file, size_t size);
/* Offset of layer i's record (its 64-byte header; the payload follows). */
size_t gen_layer_offset(const uint8_t *file, uint32_t i);

uint32_t gen_image_bytes(const struct gen_model *m);

#endif
