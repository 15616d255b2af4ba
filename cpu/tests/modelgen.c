#include "modelgen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bnncpu.h"

uint64_t gen_next(gen_rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint32_t gen_below(gen_rng *r, uint32_t n)
{
    return n ? (uint32_t)(gen_next(r) % n) : 0;
}

int32_t gen_range(gen_rng *r, int32_t lo, int32_t hi)
{
    return lo + (int32_t)gen_below(r, (uint32_t)((int64_t)hi - lo + 1));
}

void gen_start(struct gen_model *m, uint32_t c, uint32_t h, uint32_t w, uint32_t order, uint32_t dataset, int flat)
{
    memset(m, 0, sizeof(*m));
    m->in_c = c, m->in_h = h, m->in_w = w, m->input_order = order, m->dataset = dataset;
    if (flat)
        m->h = 1, m->w = 1, m->c = c * h * w;
    else
        m->h = h, m->w = w, m->c = c;
    m->type = BNN_TYPE_UINT8;
}

static struct gen_layer *push(struct gen_model *m, uint32_t kind)
{
    struct gen_layer *L = &m->layers[m->n_layers++];
    memset(L, 0, sizeof(*L));
    L->kind = kind;
    L->in_h = m->h, L->in_w = m->w, L->in_c = m->c, L->in_type = m->type;
    L->kernel = L->stride = L->kernel_w = L->stride_w = 1;
    return L;
}

static void pop(struct gen_model *m, struct gen_layer *L)
{
    m->h = L->out_h, m->w = L->out_w, m->c = L->out_c, m->type = L->out_type;
}

void gen_threshold(struct gen_model *m, uint32_t out_type, uint32_t n_thresholds, int32_t act_val)
{
    struct gen_layer *L = push(m, BNN_LAYER_THRESHOLD);
    L->out_h = L->in_h, L->out_w = L->in_w, L->out_c = L->in_c;
    L->out_type = out_type, L->n_thresholds = n_thresholds, L->act_val = act_val;
    pop(m, L);
}

void gen_threshold_fixed(struct gen_model *m, int32_t threshold)
{
    gen_threshold(m, BNN_TYPE_BITS, 1, 0);
    m->layers[m->n_layers - 1].threshold = threshold;
}

void gen_mvau(struct gen_model *m, uint32_t kernel, uint32_t stride, uint32_t out_c, int scores)
{
    static const uint32_t no_pad[4] = {0, 0, 0, 0};
    gen_conv(m, kernel, kernel, stride, stride, no_pad, out_c, scores);
}

void gen_conv(struct gen_model *m, uint32_t kh, uint32_t kw, uint32_t sh, uint32_t sw, const uint32_t *pad,
              uint32_t out_c, int scores)
{
    struct gen_layer *L = push(m, BNN_LAYER_MVAU);
    L->kernel = kh, L->stride = sh, L->kernel_w = kw, L->stride_w = sw;
    memcpy(L->pad, pad, sizeof(L->pad));
    L->out_h = (L->in_h + pad[0] + pad[2] - kh) / sh + 1;
    L->out_w = (L->in_w + pad[1] + pad[3] - kw) / sw + 1;
    L->out_c = out_c;
    L->out_type = scores ? BNN_TYPE_INT32 : BNN_TYPE_BITS;
    L->n_thresholds = scores ? 0 : 1;
    if (scores)
        m->n_classes = out_c;
    pop(m, L);
}

void gen_fc(struct gen_model *m, uint32_t out_c, int scores)
{
    /* FINN flattens HWC before a fully-connected layer: a window over all of
     * the input (CNV's 3x3x256 after conv6 is really 1x1; a 5x3 input, a 5x3
     * window). */
    static const uint32_t no_pad[4] = {0, 0, 0, 0};
    gen_conv(m, m->h, m->w, 1, 1, no_pad, out_c, scores);
}

void gen_maxpool(struct gen_model *m, uint32_t kernel, uint32_t stride)
{
    gen_maxpool2(m, kernel, kernel, stride, stride);
}

void gen_maxpool2(struct gen_model *m, uint32_t kh, uint32_t kw, uint32_t sh, uint32_t sw)
{
    struct gen_layer *L = push(m, BNN_LAYER_MAXPOOL);
    L->kernel = kh, L->stride = sh, L->kernel_w = kw, L->stride_w = sw;
    L->out_h = (L->in_h - kh) / sh + 1, L->out_w = (L->in_w - kw) / sw + 1, L->out_c = L->in_c;
    L->out_type = BNN_TYPE_BITS;
    pop(m, L);
}

void gen_label_select(struct gen_model *m)
{
    struct gen_layer *L = push(m, BNN_LAYER_LABEL_SELECT);
    L->out_h = L->out_w = L->out_c = 1;
    L->out_type = BNN_TYPE_CLASS;
    pop(m, L);
}

static void mlp(struct gen_model *m, uint32_t c, uint32_t h, uint32_t w, uint32_t dataset, uint32_t width,
                int hidden, uint32_t threshold)
{
    gen_start(m, c, h, w, BNN_ORDER_CHW, dataset, 1);
    gen_threshold_fixed(m, threshold);
    for (int i = 0; i < hidden; i++)
        gen_mvau(m, 1, 1, width, 0);
    gen_mvau(m, 1, 1, 10, 1);
    gen_label_select(m);
}

int gen_arch(struct gen_model *m, const char *name)
{
    if (!strcmp(name, "digits")) {
        mlp(m, 1, 8, 8, BNN_DATASET_DIGITS, 256, 2, 8);
    } else if (!strcmp(name, "tfc")) {
        mlp(m, 1, 28, 28, BNN_DATASET_MNIST, 64, 3, 128);
    } else if (!strcmp(name, "sfc")) {
        mlp(m, 1, 28, 28, BNN_DATASET_MNIST, 256, 3, 128);
    } else if (!strcmp(name, "lfc")) {
        mlp(m, 1, 28, 28, BNN_DATASET_MNIST, 1024, 3, 128);
    } else if (!strcmp(name, "cnv")) {
        gen_start(m, 3, 32, 32, BNN_ORDER_HWC, BNN_DATASET_CIFAR10, 0);
        gen_threshold(m, BNN_TYPE_INT8, 255, -128);
        gen_mvau(m, 3, 1, 64, 0);   /* 30x30x64, int8 input */
        gen_mvau(m, 3, 1, 64, 0);   /* 28x28x64 */
        gen_maxpool(m, 2, 2);       /* 14x14 */
        gen_mvau(m, 3, 1, 128, 0);  /* 12x12x128 */
        gen_mvau(m, 3, 1, 128, 0);  /* 10x10x128 */
        gen_maxpool(m, 2, 2);       /* 5x5 */
        gen_mvau(m, 3, 1, 256, 0);  /* 3x3x256 */
        gen_mvau(m, 3, 1, 256, 0);  /* 1x1x256 */
        gen_mvau(m, 1, 1, 512, 0);
        gen_mvau(m, 1, 1, 512, 0);
        gen_mvau(m, 1, 1, 10, 1);
        gen_label_select(m);
    } else if (!strcmp(name, "lenet")) {
        static const uint32_t same2[4] = {2, 2, 2, 2}, none[4] = {0, 0, 0, 0};
        gen_start(m, 1, 28, 28, BNN_ORDER_HWC, BNN_DATASET_MNIST, 0);
        gen_threshold(m, BNN_TYPE_INT8, 255, -128);
        gen_conv(m, 5, 5, 1, 1, same2, 17, 0); /* 28x28x17, padded int8 input */
        gen_maxpool(m, 2, 2);                  /* 14x14 */
        gen_conv(m, 3, 3, 2, 2, none, 31, 0); /* no pad: 6x6x31, stride 2 */
        gen_conv(m, 2, 2, 1, 1, none, 64, 0);     /* 5x5x64 */
        gen_fc(m, 100, 0);                     /* the flatten of 5x5x64 */
        gen_fc(m, 10, 1);
        gen_label_select(m);
    } else if (!strcmp(name, "conv1d")) {
        static const uint32_t pad1[4] = {0, 2, 0, 2};
        gen_start(m, 1, 1, 125, BNN_ORDER_HWC, BNN_DATASET_NONE, 0);
        gen_threshold(m, BNN_TYPE_BITS, 1, 0);
        gen_conv(m, 1, 5, 1, 1, pad1, 13, 0);  /* 1x125x13, padded bits */
        gen_maxpool2(m, 1, 3, 1, 3);           /* 1x41 */
        gen_conv(m, 1, 7, 1, 2, pad1, 29, 0);  /* 1x20x29, stride (1, 2) */
        gen_fc(m, 2, 1);
        gen_label_select(m);
    } else if (!strcmp(name, "wide")) {
        static const uint32_t pad[4] = {1, 0, 1, 2};
        gen_start(m, 3, 20, 44, BNN_ORDER_HWC, BNN_DATASET_NONE, 0);
        gen_threshold(m, BNN_TYPE_INT8, 255, -128);
        gen_conv(m, 3, 5, 1, 2, pad, 7, 0);    /* 20x21x7 */
        gen_conv(m, 2, 3, 2, 1, pad, 67, 0);   /* 11x21x67 */
        gen_maxpool2(m, 2, 3, 2, 3);           /* 5x7 */
        gen_fc(m, 43, 1);
        gen_label_select(m);
    } else {
        return 0;
    }
    return 1;
}

/* Padding smaller than the window on each side, often none. */
static void random_pad(gen_rng *r, uint32_t kh, uint32_t kw, uint32_t *pad)
{
    memset(pad, 0, 4 * sizeof(*pad));
    if (gen_below(r, 2))
        return;
    pad[0] = gen_below(r, kh), pad[2] = gen_below(r, kh);
    pad[1] = gen_below(r, kw), pad[3] = gen_below(r, kw);
}

void gen_random_arch(struct gen_model *m, gen_rng *r)
{
    static const uint32_t channels[] = {1, 2, 3, 5, 7, 8, 9, 13, 31, 63, 64, 65, 100, 127, 128, 129, 200};
    const uint32_t nch = sizeof(channels) / sizeof(channels[0]);
    uint32_t c = 1 + gen_below(r, 3), h = 1 + gen_below(r, 12), w = h;
    if (gen_below(r, 4) == 0)
        w = 1 + gen_below(r, 12); /* not square */
    if (gen_below(r, 6) == 0)
        h = 1, w = 8 + gen_below(r, 60); /* a 1 x W signal */
    int order = gen_below(r, 2) ? BNN_ORDER_HWC : BNN_ORDER_CHW;
    int flat = order == BNN_ORDER_CHW && c > 1 ? 1 : (int)gen_below(r, 3) == 0;
    gen_start(m, c, h, w, (uint32_t)order, BNN_DATASET_NONE, flat);
    switch (gen_below(r, 4)) {
    case 0: break; /* the MVAU reads uint8 pixels itself */
    case 1: gen_threshold(m, BNN_TYPE_BITS, 1, 0); break;
    case 2: {
        uint32_t n = 1 + gen_below(r, 255);
        gen_threshold(m, BNN_TYPE_INT8, n, gen_range(r, -128, 127 - (int32_t)n));
        break;
    }
    default: gen_threshold(m, BNN_TYPE_INT8, 255, -128); break;
    }
    uint32_t n_hidden = gen_below(r, 4);
    for (uint32_t i = 0; i < n_hidden + 1; i++) {
        uint32_t side = m->h < m->w ? m->h : m->w;
        uint32_t pick = gen_below(r, 5);
        if (i > 0 && m->type == BNN_TYPE_BITS && pick == 0 && side >= 2) {
            uint32_t k = 1 + gen_below(r, side < 3 ? side : 3);
            gen_maxpool(m, k, 1 + gen_below(r, 2));
            continue;
        }
        uint32_t out_c = channels[gen_below(r, nch)];
        if (pick == 2) {
            /* kh x kw with strides sh, sw, padded or not */
            uint32_t kh = 1 + gen_below(r, m->h < 4 ? m->h : 4), kw = 1 + gen_below(r, m->w < 5 ? m->w : 5);
            uint32_t pad[4];
            random_pad(r, kh, kw, pad);
            if ((uint64_t)kh * kw * m->c > 20000)
                kh = kw = 1, memset(pad, 0, sizeof(pad));
            /* One draw per statement: the order of a call's arguments is unspecified. */
            uint32_t sh = 1 + gen_below(r, 2);
            uint32_t sw = 1 + gen_below(r, 3);
            gen_conv(m, kh, kw, sh, sw, pad, out_c, 0);
            continue;
        }
        uint32_t k = pick == 1 ? side : 1 + gen_below(r, side < 4 ? side : 4);
        if ((uint64_t)k * k * m->c > 20000)
            k = 1;
        gen_mvau(m, k, 1 + gen_below(r, 3), out_c, 0);
    }
    uint32_t classes = gen_below(r, 6) == 0 ? 1 : 2 + gen_below(r, 20);
    if ((uint64_t)m->h * m->w * m->c > 20000) /* keep the last window small */
        gen_mvau(m, 1, 1, channels[gen_below(r, nch)], 0);
    gen_fc(m, classes, 1);
    gen_label_select(m);
}

static void put32(uint8_t **p, uint32_t v)
{
    gen_set32(*p, v);
    *p += 4;
}

uint32_t gen_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void gen_set32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void gen_set64(uint8_t *p, uint64_t v)
{
    gen_set32(p, (uint32_t)v);
    gen_set32(p + 4, (uint32_t)(v >> 32));
}

/* The tests' own CRC-32 (zlib's parameters, the four bytes at 24 taken as
 * zero), independent of the library's. */
static uint32_t crc32_model(const uint8_t *d, size_t n)
{
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int b = 0; b < 8; b++)
                c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
            table[i] = c;
        }
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        crc = (crc >> 8) ^ table[(crc ^ ((i >= 24 && i < 28) ? 0 : d[i])) & 0xFF];
    return ~crc;
}

void gen_fix_crc(uint8_t *file, size_t size)
{
    if (size >= 28)
        gen_set32(file + 24, crc32_model(file, size));
}

size_t gen_layer_offset(const uint8_t *file, uint32_t i)
{
    size_t off = 64;
    for (uint32_t k = 0; k < i; k++)
        off += gen_get32(file + off + 4);
    return off;
}

uint32_t gen_image_bytes(const struct gen_model *m)
{
    return m->in_c * m->in_h * m->in_w;
}

static uint64_t payload_bytes(const struct gen_layer *L)
{
    if (L->kind == BNN_LAYER_THRESHOLD)
        return (uint64_t)L->in_c * L->n_thresholds * 4;
    if (L->kind == BNN_LAYER_MVAU) {
        uint64_t k = (uint64_t)L->kernel * L->kernel_w * L->in_c;
        return (uint64_t)L->out_c * ((k + 63) / 64) * 8 + (uint64_t)L->n_thresholds * L->out_c * 4;
    }
    return 0;
}

/* A threshold near the middle of the accumulator's spread, now and then one
 * at or past either end (always or never firing). */
static int32_t mvau_threshold(gen_rng *r, const struct gen_layer *L, uint64_t k)
{
    uint32_t pick = gen_below(r, 40);
    if (L->in_type == BNN_TYPE_BITS) {
        if (pick == 0)
            return gen_range(r, -3, 0);
        if (pick == 1)
            return (int32_t)k + gen_range(r, 0, 3);
        int32_t spread = (int32_t)sqrt((double)k) + 1;
        return (int32_t)(k / 2) + gen_range(r, -spread, spread);
    }
    /* 8-bit inputs: |sum| grows like 128 sqrt(K) (int8) or 255 sqrt(K) (uint8). */
    if (pick == 0)
        return gen_below(r, 2) ? INT32_MIN : INT32_MAX;
    int32_t spread = (int32_t)(100 * sqrt((double)k)) + 1;
    return gen_range(r, -spread, spread);
}

uint8_t *gen_write(const struct gen_model *m, uint64_t seed, size_t *size)
{
    gen_rng r = {seed};
    uint64_t total = 64;
    for (uint32_t i = 0; i < m->n_layers; i++)
        total += (64 + payload_bytes(&m->layers[i]) + 7) / 8 * 8;
    uint8_t *f = calloc(1, (size_t)total);
    if (!f)
        return NULL;
    memcpy(f, BNN_MAGIC, 8);
    f[8] = BNN_FORMAT_MAJOR;
    f[10] = (uint8_t)(m->minor_set ? m->minor : BNN_FORMAT_MINOR);
    gen_set32(f + 12, 64);
    gen_set64(f + 16, total);
    gen_set32(f + 28, m->n_layers);
    gen_set32(f + 32, m->in_c);
    gen_set32(f + 36, m->in_h);
    gen_set32(f + 40, m->in_w);
    gen_set32(f + 44, m->input_order);
    gen_set32(f + 48, m->n_classes);
    gen_set32(f + 52, m->dataset);
    uint8_t *p = f + 64;
    for (uint32_t i = 0; i < m->n_layers; i++) {
        const struct gen_layer *L = &m->layers[i];
        uint64_t payload = payload_bytes(L), record = (64 + payload + 7) / 8 * 8;
        uint8_t *rec = p;
        put32(&p, L->kind);
        put32(&p, (uint32_t)record);
        put32(&p, L->in_h), put32(&p, L->in_w), put32(&p, L->in_c);
        put32(&p, L->out_h), put32(&p, L->out_w), put32(&p, L->out_c);
        put32(&p, L->kernel), put32(&p, L->stride);
        put32(&p, L->in_type), put32(&p, L->out_type);
        put32(&p, L->n_thresholds), put32(&p, (uint32_t)L->act_val);
        if (f[10] >= 1) {
            /* 1.1: kernel_w, stride_w (u16) and the four pads (u8) */
            p[0] = (uint8_t)L->kernel_w, p[1] = (uint8_t)(L->kernel_w >> 8);
            p[2] = (uint8_t)L->stride_w, p[3] = (uint8_t)(L->stride_w >> 8);
            for (int k = 0; k < 4; k++)
                p[4 + k] = (uint8_t)L->pad[k];
        }
        p = rec + 64;
        if (L->kind == BNN_LAYER_THRESHOLD) {
            int cnv_input = L->n_thresholds == 255 && L->act_val == -128;
            for (uint32_t c = 0; c < L->in_c; c++)
                for (uint32_t t = 0; t < L->n_thresholds; t++) {
                    int32_t v;
                    if (L->threshold)
                        v = L->threshold;
                    else if (cnv_input)
                        v = (int32_t)t + 1; /* x - 128 as int8, as CNV's input quantizer */
                    else if (L->out_type == BNN_TYPE_BITS)
                        v = gen_below(&r, 20) == 0 ? gen_range(&r, -2, 258) : gen_range(&r, 1, 255);
                    else
                        v = gen_range(&r, -3, 258);
                    put32(&p, (uint32_t)v);
                }
        } else if (L->kind == BNN_LAYER_MVAU) {
            uint64_t k = (uint64_t)L->kernel * L->kernel_w * L->in_c, words = (k + 63) / 64;
            for (uint32_t o = 0; o < L->out_c; o++)
                for (uint64_t wi = 0; wi < words; wi++) {
                    uint64_t v = gen_next(&r);
                    if (wi == words - 1 && k % 64)
                        v &= ~(~0ull << (k % 64));
                    gen_set64(p, v);
                    p += 8;
                }
            for (uint32_t o = 0; o < L->out_c * L->n_thresholds; o++)
                put32(&p, (uint32_t)mvau_threshold(&r, L, k));
        }
        p = rec + record;
    }
    gen_fix_crc(f, (size_t)total);
    *size = (size_t)total;
    return f;
}
