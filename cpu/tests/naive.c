#include "naive.h"

#include <stdlib.h>
#include <string.h>

#include "bnncpu.h"

static uint32_t u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* "bit j of word i of row n is weight (64 i + j, n), 1 for +1 and 0 for -1",
 * words little-endian: weight idx is bit idx % 8 of byte idx / 8 of the row. */
static int weight(const uint8_t *row, uint64_t idx)
{
    return (row[idx / 8] >> (idx % 8)) & 1 ? 1 : -1;
}

int naive_run(const uint8_t *file, size_t size, const uint8_t *image, int32_t *cls, int32_t *scores)
{
    (void)size;
    uint32_t n_layers = u32(file + 28);
    uint32_t C = u32(file + 32), H = u32(file + 36), W = u32(file + 40), order = u32(file + 44);
    uint32_t minor = (uint32_t)file[10] | (uint32_t)file[11] << 8;
    const uint8_t *rec = file + 64;

    /* The first layer's input tensor (height x width x channels, channel
     * fastest) from the CHW image. */
    uint32_t h = u32(rec + 8), w = u32(rec + 12), c = u32(rec + 16);
    int64_t *t = malloc(sizeof(int64_t) * (size_t)C * H * W);
    if (!t)
        return -1;
    for (uint32_t ch = 0; ch < C; ch++)
        for (uint32_t y = 0; y < H; y++)
            for (uint32_t x = 0; x < W; x++) {
                size_t chw = ((size_t)ch * H + y) * W + x;
                size_t hwc = ((size_t)y * W + x) * C + ch;
                t[order == BNN_ORDER_HWC ? hwc : chw] = image[chw];
            }
    (void)h, (void)w, (void)c;

    for (uint32_t li = 0; li < n_layers; li++) {
        uint32_t kind = u32(rec), record = u32(rec + 4);
        uint32_t ih = u32(rec + 8), iw = u32(rec + 12), ic = u32(rec + 16);
        uint32_t oh = u32(rec + 20), ow = u32(rec + 24), oc = u32(rec + 28);
        uint32_t k = u32(rec + 32), s = u32(rec + 36), in_type = u32(rec + 40), out_type = u32(rec + 44);
        uint32_t n_thr = u32(rec + 48);
        int32_t act_val = (int32_t)u32(rec + 52);
        /* Format 1.1: window width, row step and padding; a 1.0 file's
         * windows are square and unpadded. */
        uint32_t kw = k, sw = s, pt = 0, pl = 0;
        if (minor >= 1) {
            kw = (uint32_t)rec[56] | (uint32_t)rec[57] << 8;
            sw = (uint32_t)rec[58] | (uint32_t)rec[59] << 8;
            pt = rec[60], pl = rec[61];
        }
        const uint8_t *payload = rec + 64;
        int64_t *o = malloc(sizeof(int64_t) * ((size_t)oh * ow * oc + 1));
        if (!o) {
            free(t);
            return -1;
        }
        if (kind == BNN_LAYER_THRESHOLD) {
            for (size_t p = 0; p < (size_t)ih * iw; p++)
                for (uint32_t ch = 0; ch < ic; ch++) {
                    int64_t v = act_val;
                    for (uint32_t i = 0; i < n_thr; i++)
                        v += t[p * ic + ch] >= (int32_t)u32(payload + 4 * ((size_t)ch * n_thr + i));
                    o[p * ic + ch] = v;
                }
        } else if (kind == BNN_LAYER_MVAU) {
            uint64_t K = (uint64_t)k * kw * ic, row_bytes = (K + 63) / 64 * 8;
            const uint8_t *thr = payload + oc * row_bytes;
            for (uint32_t oy = 0; oy < oh; oy++)
                for (uint32_t ox = 0; ox < ow; ox++)
                    for (uint32_t n = 0; n < oc; n++) {
                        const uint8_t *row = payload + n * row_bytes;
                        int64_t acc = 0;
                        uint64_t idx = 0;
                        for (uint32_t ky = 0; ky < k; ky++)
                            for (uint32_t kx = 0; kx < kw; kx++)
                                for (uint32_t ch = 0; ch < ic; ch++, idx++) {
                                    /* Window position in the unpadded input; a padded
                                     * position holds the value 0 (a 0 bit, or the integer 0). */
                                    int64_t y = (int64_t)oy * s + ky - pt, xx = (int64_t)ox * sw + kx - pl;
                                    int64_t x = 0;
                                    if (y >= 0 && y < ih && xx >= 0 && xx < iw)
                                        x = t[((size_t)y * iw + (size_t)xx) * ic + ch];
                                    int wt = weight(row, idx);
                                    if (in_type == BNN_TYPE_BITS)
                                        acc += (x == 1) == (wt == 1); /* XNOR: the bits agree */
                                    else
                                        acc += x * wt;
                                }
                        int64_t v = acc;
                        if (out_type == BNN_TYPE_BITS)
                            v = acc >= (int32_t)u32(thr + 4 * n);
                        o[((size_t)oy * ow + ox) * oc + n] = v;
                    }
        } else if (kind == BNN_LAYER_MAXPOOL) {
            for (uint32_t oy = 0; oy < oh; oy++)
                for (uint32_t ox = 0; ox < ow; ox++)
                    for (uint32_t ch = 0; ch < oc; ch++) {
                        int64_t best = 0;
                        for (uint32_t ky = 0; ky < k; ky++)
                            for (uint32_t kx = 0; kx < kw; kx++) {
                                int64_t x = t[((size_t)(oy * s + ky) * iw + ox * sw + kx) * ic + ch];
                                if (x > best)
                                    best = x;
                            }
                        o[((size_t)oy * ow + ox) * oc + ch] = best;
                    }
        } else { /* LABEL_SELECT: the first index holding the largest score */
            uint32_t best = 0;
            for (uint32_t i = 0; i < ic; i++) {
                scores[i] = (int32_t)t[i];
                if (t[i] > t[best])
                    best = i;
            }
            o[0] = best;
            *cls = (int32_t)best;
        }
        free(t);
        t = o;
        rec += record;
    }
    free(t);
    return 0;
}
