/*
 * The model reader: validates a model file completely (sizes, checksum,
 * shapes, types, thresholds) before it allocates anything, then repacks the
 * canonical weights into the kernels' layout (see internal.h).
 */
/* A model file past the 2 GiB limit must be seen as too large, not fail fstat
 * with EOVERFLOW, on 32-bit ARM too. */
#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define BNNCPU_VERSION "1.1.0" /* 1.1: bnn_layer_info carries kernel_w, stride_w and pad */

const char *bnn_version(void)
{
    return BNNCPU_VERSION;
}

const char *bnn_strerror(int status)
{
    switch (status) {
    case BNN_OK: return "success";
    case BNN_ERR_IO: return "cannot read the file";
    case BNN_ERR_TRUNCATED: return "file truncated";
    case BNN_ERR_TOO_LARGE: return "file or model too large";
    case BNN_ERR_MAGIC: return "not a bnncpu model file";
    case BNN_ERR_VERSION: return "unsupported format version";
    case BNN_ERR_CHECKSUM: return "checksum mismatch";
    case BNN_ERR_SHAPE: return "shapes or types do not chain";
    case BNN_ERR_KIND: return "unknown layer kind";
    case BNN_ERR_NOMEM: return "out of memory";
    case BNN_ERR_ARG: return "bad argument";
    case BNN_ERR_THREAD: return "cannot start a thread";
    case BNN_ERR_BUSY: return "the context is running a batch for another thread";
    default: return "unknown status";
    }
}

void *bnn_alloc(size_t size)
{
    void *p = NULL;
    if (size == 0)
        size = 1;
    if (posix_memalign(&p, BNN_ALIGN, size) != 0)
        return NULL;
    return p;
}

void bnn_free(void *p)
{
    free(p);
}

static const char *kind_name(uint32_t kind)
{
    switch (kind) {
    case BNN_LAYER_THRESHOLD: return "THRESHOLD";
    case BNN_LAYER_MVAU: return "MVAU";
    case BNN_LAYER_MAXPOOL: return "MAXPOOL";
    case BNN_LAYER_LABEL_SELECT: return "LABEL_SELECT";
    default: return "unknown kind";
    }
}

static const char *type_name(uint32_t type)
{
    switch (type) {
    case BNN_TYPE_BITS: return "bits";
    case BNN_TYPE_UINT8: return "uint8";
    case BNN_TYPE_INT8: return "int8";
    case BNN_TYPE_INT32: return "int32";
    case BNN_TYPE_CLASS: return "class";
    default: return "unknown type";
    }
}

static int fail(char *err, size_t errlen, int status, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}

static uint32_t rd16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static uint64_t ceil_div(uint64_t a, uint64_t b)
{
    return (a + b - 1) / b;
}

static uint64_t round_up(uint64_t a, uint64_t b)
{
    return ceil_div(a, b) * b;
}

/* A layer record's header as read from the file, plus where its payload is. */
struct record {
    uint32_t kind, record_bytes, in_h, in_w, in_c, out_h, out_w, out_c, kernel, stride;
    uint32_t in_type, out_type, n_thresholds, reserved0, reserved1;
    int32_t act_val;
    uint32_t minor;           /* the file's format minor version */
    uint32_t kernel_w, stride_w, pad[4]; /* 1.1 fields; a 1.0 file's square, unpadded values */
    uint32_t win_h, win_w;    /* the input with its padding */
    uint64_t offset;          /* of the record in the file */
    uint64_t payload_bytes;   /* without the zero padding */
    uint64_t k;
};

#define LAYER_FMT "layer %u/%u (%s): "
#define LAYER_ARGS(i, n, r) (unsigned)((i) + 1), (unsigned)(n), kind_name((r)->kind)

static int check_dim(char *err, size_t errlen, uint32_t i, uint32_t n, const struct record *r,
                     const char *what, uint32_t v)
{
    if (v == 0)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "%s is 0", LAYER_ARGS(i, n, r), what);
    if (v > BNN_MAX_DIM)
        return fail(err, errlen, BNN_ERR_TOO_LARGE, LAYER_FMT "%s %u is past the limit of %u",
                    LAYER_ARGS(i, n, r), what, v, BNN_MAX_DIM);
    return BNN_OK;
}

static void parse_record(const uint8_t *h, uint32_t minor, struct record *r)
{
    r->kind = rd32(h + 0);
    r->record_bytes = rd32(h + 4);
    r->in_h = rd32(h + 8);
    r->in_w = rd32(h + 12);
    r->in_c = rd32(h + 16);
    r->out_h = rd32(h + 20);
    r->out_w = rd32(h + 24);
    r->out_c = rd32(h + 28);
    r->kernel = rd32(h + 32);
    r->stride = rd32(h + 36);
    r->in_type = rd32(h + 40);
    r->out_type = rd32(h + 44);
    r->n_thresholds = rd32(h + 48);
    r->act_val = (int32_t)rd32(h + 52);
    r->minor = minor;
    if (minor == 0) {
        /* Format 1.0: the window fields are reserved words, zero. */
        r->reserved0 = rd32(h + 56);
        r->reserved1 = rd32(h + 60);
        r->kernel_w = r->kernel;
        r->stride_w = r->stride;
    } else {
        r->kernel_w = rd16(h + 56);
        r->stride_w = rd16(h + 58);
        for (int k = 0; k < 4; k++)
            r->pad[k] = h[60 + k];
    }
    r->win_h = r->in_h + r->pad[0] + r->pad[2];
    r->win_w = r->in_w + r->pad[1] + r->pad[3];
}

/* The kind and the record's extent, before anything is read from its payload. */
static int check_framing(const struct record *r, uint64_t file_bytes, uint32_t i, uint32_t n, char *err,
                         size_t errlen)
{
    if (r->kind < BNN_LAYER_THRESHOLD || r->kind > BNN_LAYER_LABEL_SELECT)
        return fail(err, errlen, BNN_ERR_KIND, "layer %u/%u: unknown layer kind %u", i + 1, n, r->kind);
    if (r->record_bytes < BNN_LAYER_HEADER_BYTES || r->record_bytes % 8 != 0)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "record_bytes %u is not 64 + payload rounded up to 8",
                    LAYER_ARGS(i, n, r), r->record_bytes);
    if (r->offset + r->record_bytes > file_bytes)
        return fail(err, errlen, BNN_ERR_TRUNCATED, LAYER_FMT "its %u-byte record runs past the end of the file",
                    LAYER_ARGS(i, n, r), r->record_bytes);
    if (r->reserved0 || r->reserved1)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "reserved header fields are not zero", LAYER_ARGS(i, n, r));
    return BNN_OK;
}

/* What every kind shares: dimensions in range, known types, act_val on
 * THRESHOLD only. */
static int check_fields(const struct record *r, uint32_t i, uint32_t n, char *err, size_t errlen)
{
    int st;
    const struct {
        const char *what;
        uint32_t v;
    } dims[] = {
        {"in_h", r->in_h},   {"in_w", r->in_w},     {"in_c", r->in_c},         {"out_h", r->out_h},
        {"out_w", r->out_w}, {"out_c", r->out_c},   {"kernel", r->kernel},     {"stride", r->stride},
        {"kernel_w", r->kernel_w}, {"stride_w", r->stride_w},
    };
    for (size_t d = 0; d < sizeof(dims) / sizeof(dims[0]); d++)
        if ((st = check_dim(err, errlen, i, n, r, dims[d].what, dims[d].v)) != BNN_OK)
            return st;
    if (r->in_type > BNN_TYPE_CLASS || r->out_type > BNN_TYPE_CLASS)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "unknown tensor type %u -> %u", LAYER_ARGS(i, n, r),
                    r->in_type, r->out_type);
    if (r->kind != BNN_LAYER_THRESHOLD && r->act_val != 0)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "act_val is %d, only THRESHOLD has one",
                    LAYER_ARGS(i, n, r), (int)r->act_val);
    return BNN_OK;
}

/* Windows (MVAU, MAXPOOL) must fit their input and give the stated output;
 * the other kinds map pixels one to one. */
static int check_window(const struct record *r, uint32_t i, uint32_t n, char *err, size_t errlen)
{
    int padded = r->pad[0] || r->pad[1] || r->pad[2] || r->pad[3];
    if (padded && r->kind != BNN_LAYER_MVAU)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "padding %u,%u,%u,%u, only an MVAU has any",
                    LAYER_ARGS(i, n, r), r->pad[0], r->pad[1], r->pad[2], r->pad[3]);
    if (r->kind != BNN_LAYER_MVAU && r->kind != BNN_LAYER_MAXPOOL) {
        if (r->kernel != 1 || r->stride != 1 || r->kernel_w != 1 || r->stride_w != 1)
            return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "kernel %ux%u stride %ux%u, must be 1x1 and 1x1",
                        LAYER_ARGS(i, n, r), r->kernel, r->kernel_w, r->stride, r->stride_w);
        return BNN_OK;
    }
    /* A pad as large as the window would make windows of padding alone. */
    if (r->pad[0] >= r->kernel || r->pad[2] >= r->kernel || r->pad[1] >= r->kernel_w || r->pad[3] >= r->kernel_w)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "padding %u,%u,%u,%u is not smaller than the %ux%u kernel",
                    LAYER_ARGS(i, n, r), r->pad[0], r->pad[1], r->pad[2], r->pad[3], r->kernel, r->kernel_w);
    if (r->kernel > r->win_h || r->kernel_w > r->win_w)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "kernel %ux%u does not fit the %ux%u input (padded %ux%u)",
                    LAYER_ARGS(i, n, r), r->kernel, r->kernel_w, r->in_h, r->in_w, r->win_h, r->win_w);
    uint32_t oh = (r->win_h - r->kernel) / r->stride + 1, ow = (r->win_w - r->kernel_w) / r->stride_w + 1;
    if (r->out_h != oh || r->out_w != ow)
        return fail(err, errlen, BNN_ERR_SHAPE,
                    LAYER_FMT "kernel %ux%u stride %ux%u on %ux%u (padded %ux%u) gives %ux%u, not the stated %ux%u",
                    LAYER_ARGS(i, n, r), r->kernel, r->kernel_w, r->stride, r->stride_w, r->in_h, r->in_w, r->win_h,
                    r->win_w, oh, ow, r->out_h, r->out_w);
    return BNN_OK;
}

static int check_threshold(struct record *r, uint32_t i, uint32_t n, char *err, size_t errlen)
{
    if (r->in_type != BNN_TYPE_UINT8 || (r->out_type != BNN_TYPE_BITS && r->out_type != BNN_TYPE_INT8))
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "%s -> %s, must be uint8 -> bits or int8",
                    LAYER_ARGS(i, n, r), type_name(r->in_type), type_name(r->out_type));
    if (r->out_h != r->in_h || r->out_w != r->in_w || r->out_c != r->in_c)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "output %ux%ux%u differs from input %ux%ux%u",
                    LAYER_ARGS(i, n, r), r->out_h, r->out_w, r->out_c, r->in_h, r->in_w, r->in_c);
    if (r->n_thresholds < 1 || r->n_thresholds > 255)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "%u thresholds per channel, must be 1..255",
                    LAYER_ARGS(i, n, r), r->n_thresholds);
    int64_t lo = r->act_val, hi = (int64_t)r->act_val + r->n_thresholds;
    int64_t min = r->out_type == BNN_TYPE_BITS ? 0 : -128, max = r->out_type == BNN_TYPE_BITS ? 1 : 127;
    if (lo < min || hi > max)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "act_val %d with %u thresholds gives %lld..%lld, outside %s",
                    LAYER_ARGS(i, n, r), (int)r->act_val, r->n_thresholds, (long long)lo, (long long)hi,
                    type_name(r->out_type));
    r->payload_bytes = (uint64_t)r->in_c * r->n_thresholds * 4;
    return BNN_OK;
}

static int check_mvau(struct record *r, uint32_t i, uint32_t n, char *err, size_t errlen)
{
    if (r->in_type != BNN_TYPE_BITS && r->in_type != BNN_TYPE_UINT8 && r->in_type != BNN_TYPE_INT8)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "input %s, must be bits, uint8 or int8",
                    LAYER_ARGS(i, n, r), type_name(r->in_type));
    if (!((r->out_type == BNN_TYPE_BITS && r->n_thresholds == 1) ||
          (r->out_type == BNN_TYPE_INT32 && r->n_thresholds == 0)))
        return fail(err, errlen, BNN_ERR_SHAPE,
                    LAYER_FMT "output %s with %u thresholds, must be bits with 1 or int32 with 0",
                    LAYER_ARGS(i, n, r), type_name(r->out_type), r->n_thresholds);
    r->k = (uint64_t)r->kernel * r->kernel_w * r->in_c;
    if (r->k > BNN_MAX_K)
        return fail(err, errlen, BNN_ERR_TOO_LARGE, LAYER_FMT "K = %ux%ux%u = %llu is past the limit of %u",
                    LAYER_ARGS(i, n, r), r->kernel, r->kernel_w, r->in_c, (unsigned long long)r->k, BNN_MAX_K);
    r->payload_bytes = (uint64_t)r->out_c * ceil_div(r->k, 64) * 8 + (uint64_t)r->n_thresholds * r->out_c * 4;
    return BNN_OK;
}

static int check_maxpool(struct record *r, uint32_t i, uint32_t n, char *err, size_t errlen)
{
    if (r->in_type != BNN_TYPE_BITS || r->out_type != BNN_TYPE_BITS)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "%s -> %s, must be bits -> bits", LAYER_ARGS(i, n, r),
                    type_name(r->in_type), type_name(r->out_type));
    if (r->out_c != r->in_c)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "%u channels in, %u out", LAYER_ARGS(i, n, r), r->in_c,
                    r->out_c);
    if (r->n_thresholds != 0)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "%u thresholds, must be 0", LAYER_ARGS(i, n, r),
                    r->n_thresholds);
    return BNN_OK;
}

static int check_label_select(struct record *r, uint32_t i, uint32_t n, char *err, size_t errlen)
{
    if (r->in_type != BNN_TYPE_INT32 || r->out_type != BNN_TYPE_CLASS)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "%s -> %s, must be int32 -> class", LAYER_ARGS(i, n, r),
                    type_name(r->in_type), type_name(r->out_type));
    if (r->in_h != 1 || r->in_w != 1 || r->out_h != 1 || r->out_w != 1 || r->out_c != 1)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "%ux%ux%u -> %ux%ux%u, must be 1x1xC -> 1x1x1",
                    LAYER_ARGS(i, n, r), r->in_h, r->in_w, r->in_c, r->out_h, r->out_w, r->out_c);
    if (r->n_thresholds != 0)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "%u thresholds, must be 0", LAYER_ARGS(i, n, r),
                    r->n_thresholds);
    return BNN_OK;
}

/* Types, shapes and the payload size of one kind (check_framing has made sure
 * the kind is one of these). */
static int check_kind(struct record *r, uint32_t i, uint32_t n, char *err, size_t errlen)
{
    switch (r->kind) {
    case BNN_LAYER_THRESHOLD: return check_threshold(r, i, n, err, errlen);
    case BNN_LAYER_MVAU: return check_mvau(r, i, n, err, errlen);
    case BNN_LAYER_MAXPOOL: return check_maxpool(r, i, n, err, errlen);
    default: return check_label_select(r, i, n, err, errlen);
    }
}

/* record_bytes is exactly the payload rounded up to 8, the rounding zero. */
static int check_payload(const uint8_t *h, const struct record *r, uint32_t i, uint32_t n, char *err,
                         size_t errlen)
{
    uint64_t want = round_up(BNN_LAYER_HEADER_BYTES + r->payload_bytes, 8);
    if (r->record_bytes < want)
        return fail(err, errlen, BNN_ERR_TRUNCATED, LAYER_FMT "record is %u bytes, its payload needs %llu",
                    LAYER_ARGS(i, n, r), r->record_bytes, (unsigned long long)want);
    if (r->record_bytes > want)
        return fail(err, errlen, BNN_ERR_TOO_LARGE, LAYER_FMT "record is %u bytes, its payload needs %llu",
                    LAYER_ARGS(i, n, r), r->record_bytes, (unsigned long long)want);
    const uint8_t *pad = h + BNN_LAYER_HEADER_BYTES + r->payload_bytes;
    for (const uint8_t *q = pad; q < h + r->record_bytes; q++)
        if (*q)
            return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "padding after the payload is not zero",
                        LAYER_ARGS(i, n, r));
    return BNN_OK;
}

/* The format promises zero bits past K, so a writer's packing mistake shows
 * up here instead of as a silently different network. */
static int check_weight_tails(const uint8_t *h, const struct record *r, uint32_t i, uint32_t n, char *err,
                              size_t errlen)
{
    if (r->kind != BNN_LAYER_MVAU || r->k % 64 == 0)
        return BNN_OK;
    uint64_t words = ceil_div(r->k, 64), tail_mask = ~0ull << (r->k % 64);
    const uint8_t *w = h + BNN_LAYER_HEADER_BYTES;
    for (uint32_t o = 0; o < r->out_c; o++)
        if (rd64(w + (o * words + words - 1) * 8) & tail_mask)
            return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "weight row %u has bits set past K = %llu",
                        LAYER_ARGS(i, n, r), o, (unsigned long long)r->k);
    return BNN_OK;
}

/* Reads and checks one record's header and its own consistency (not yet how
 * it chains to its neighbours). */
static int read_record(const uint8_t *p, uint64_t file_bytes, uint64_t offset, uint32_t i, uint32_t n,
                       struct record *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->offset = offset;
    if (offset + BNN_LAYER_HEADER_BYTES > file_bytes)
        return fail(err, errlen, BNN_ERR_TRUNCATED,
                    "layer %u/%u: its header runs past the end of the file", i + 1, n);
    const uint8_t *h = p + offset;
    parse_record(h, rd16(p + 10), r);
    int st;
    if ((st = check_framing(r, file_bytes, i, n, err, errlen)) != BNN_OK ||
        (st = check_fields(r, i, n, err, errlen)) != BNN_OK || (st = check_window(r, i, n, err, errlen)) != BNN_OK ||
        (st = check_kind(r, i, n, err, errlen)) != BNN_OK ||
        (st = check_payload(h, r, i, n, err, errlen)) != BNN_OK)
        return st;
    return check_weight_tails(h, r, i, n, err, errlen);
}

/* The grammar THRESHOLD? MVAU (MVAU | MAXPOOL)* LABEL_SELECT and the chaining
 * of shapes and types from the image to the class. */
static int check_chain(const uint8_t *hdr, const struct record *r, uint32_t n, int *transpose,
                       char *err, size_t errlen)
{
    uint32_t in_c = rd32(hdr + 32), in_h = rd32(hdr + 36), in_w = rd32(hdr + 40);
    uint32_t order = rd32(hdr + 44), n_classes = rd32(hdr + 48);
    uint64_t flat = (uint64_t)in_c * in_h * in_w;
    const struct record *f = &r[0];

    if (f->kind != BNN_LAYER_THRESHOLD && f->kind != BNN_LAYER_MVAU)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "a model starts with THRESHOLD or MVAU",
                    LAYER_ARGS(0, n, f));
    if (f->in_type != BNN_TYPE_UINT8)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "reads the uint8 image but its input is %s",
                    LAYER_ARGS(0, n, f), type_name(f->in_type));
    int reads_flat = f->in_h == 1 && f->in_w == 1 && f->in_c == flat;
    int reads_spatial = f->in_h == in_h && f->in_w == in_w && f->in_c == in_c;
    if (!reads_flat && !reads_spatial)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "input %ux%ux%u is neither the %ux%ux%u image nor 1x1x%llu",
                    LAYER_ARGS(0, n, f), f->in_h, f->in_w, f->in_c, in_h, in_w, in_c, (unsigned long long)flat);
    /* CHW order means "in stored order": only a flat read, or a single
     * channel (where HWC and CHW are the same bytes), has that meaning. */
    if (order == BNN_ORDER_CHW && !reads_flat && in_c != 1)
        return fail(err, errlen, BNN_ERR_SHAPE,
                    LAYER_FMT "input_order CHW with a %ux%ux%u first layer: only a flat or one-channel input reads "
                    "the image in stored order",
                    LAYER_ARGS(0, n, f), f->in_h, f->in_w, f->in_c);
    *transpose = order == BNN_ORDER_HWC && in_c > 1 && !(in_h == 1 && in_w == 1);

    if (n < 2)
        return fail(err, errlen, BNN_ERR_SHAPE, "a model needs at least an MVAU and a LABEL_SELECT, this one has %u layer",
                    n);
    for (uint32_t i = 1; i < n; i++) {
        const struct record *p = &r[i - 1], *c = &r[i];
        if (c->kind == BNN_LAYER_THRESHOLD)
            return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "THRESHOLD can only be the first layer",
                        LAYER_ARGS(i, n, c));
        if (c->kind == BNN_LAYER_MAXPOOL && p->kind == BNN_LAYER_THRESHOLD)
            return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "an MVAU must come between THRESHOLD and MAXPOOL",
                        LAYER_ARGS(i, n, c));
        if (c->kind == BNN_LAYER_LABEL_SELECT && i != n - 1)
            return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "LABEL_SELECT must be the last layer",
                        LAYER_ARGS(i, n, c));
        if (c->in_h != p->out_h || c->in_w != p->out_w || c->in_c != p->out_c || c->in_type != p->out_type)
            return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "input %ux%ux%u %s does not match the %ux%ux%u %s "
                        "before it",
                        LAYER_ARGS(i, n, c), c->in_h, c->in_w, c->in_c, type_name(c->in_type), p->out_h,
                        p->out_w, p->out_c, type_name(p->out_type));
    }
    const struct record *last = &r[n - 1], *scores = &r[n - 2];
    if (last->kind != BNN_LAYER_LABEL_SELECT)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "the last layer must be LABEL_SELECT", LAYER_ARGS(n - 1, n, last));
    if (scores->kind != BNN_LAYER_MVAU || scores->out_type != BNN_TYPE_INT32)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "the layer before LABEL_SELECT must be an MVAU with int32 scores",
                    LAYER_ARGS(n - 2, n, scores));
    if (last->in_c != n_classes)
        return fail(err, errlen, BNN_ERR_SHAPE, LAYER_FMT "%u scores but the header says %u classes",
                    LAYER_ARGS(n - 1, n, last), last->in_c, n_classes);
    return BNN_OK;
}

static int check_header_dim(char *err, size_t errlen, const char *what, uint32_t v)
{
    if (v == 0)
        return fail(err, errlen, BNN_ERR_SHAPE, "header: %s is 0", what);
    if (v > BNN_MAX_DIM)
        return fail(err, errlen, BNN_ERR_TOO_LARGE, "header: %s %u is past the limit of %u", what, v, BNN_MAX_DIM);
    return BNN_OK;
}

/* Layout sizes of the engine, all in 64-bit arithmetic; the caps keep them far
 * from overflowing size_t even on 32-bit ARM. */
struct plan {
    uint64_t arena, act, image, scores, split, pad;
};

static uint64_t bits_tensor_bytes(uint32_t h, uint32_t w, uint32_t c)
{
    return (uint64_t)h * w * ceil_div(c, 64) * 8;
}

static uint64_t tensor_bytes(uint32_t type, uint32_t h, uint32_t w, uint32_t c)
{
    switch (type) {
    case BNN_TYPE_BITS: return bits_tensor_bytes(h, w, c);
    case BNN_TYPE_UINT8:
    case BNN_TYPE_INT8: return (uint64_t)h * w * c;
    default: return 0; /* scores and the class live in their own buffers */
    }
}

/* Bytes each layer's engine arrays take, in the order the arena holds them. */
/* Whether a binary MVAU gets nibble-split weights (see internal.h). */
static int splits_weights(const struct record *r)
{
#ifdef BNN_X86
    /* The AVX2 kernel counts mismatches in 16 bits (a window of at most
     * BNN_NIB_MAX_WORDS words) and makes bits (scores come from one pixel). */
    return r->kind == BNN_LAYER_MVAU && r->in_type == BNN_TYPE_BITS && r->out_type == BNN_TYPE_BITS &&
           (uint64_t)r->out_h * r->out_w >= 4 &&
           (uint64_t)r->kernel * r->kernel_w * ceil_div(r->in_c, 64) <= BNN_NIB_MAX_WORDS;
#else
    (void)r;
    return 0;
#endif
}

static uint64_t layer_arena_bytes(const struct record *r)
{
    uint64_t a = 0;
    if (r->kind == BNN_LAYER_MVAU) {
        uint64_t blocks = ceil_div(r->out_c, BNN_BLOCK), blocks8 = ceil_div(r->out_c, BNN_BLOCK8);
        if (r->in_type == BNN_TYPE_BITS) {
            uint64_t words = (uint64_t)r->kernel * r->kernel_w * ceil_div(r->in_c, 64);
            a += round_up(blocks * BNN_BLOCK * words * 8, BNN_ALIGN);
            a += round_up(blocks * BNN_BLOCK * 4, BNN_ALIGN);
            if (splits_weights(r))
                a += round_up(ceil_div(blocks, BNN_NIB_BLOCKS) * BNN_NIB_CHANNELS * words * 16, BNN_ALIGN);
        } else {
            uint64_t pairs = (uint64_t)r->kernel * ceil_div((uint64_t)r->kernel_w * r->in_c, 2);
            a += round_up(blocks8 * pairs * BNN_BLOCK8 * 2, BNN_ALIGN);
            a += 2 * round_up(blocks8 * BNN_BLOCK8 * 4, BNN_ALIGN);
        }
    } else if (r->kind == BNN_LAYER_THRESHOLD) {
        if (r->out_type == BNN_TYPE_BITS) {
            a += round_up(round_up(r->in_c, 64), BNN_ALIGN);
            a += round_up(ceil_div(r->in_c, 64) * 8, BNN_ALIGN);
        } else {
            a += round_up((uint64_t)r->in_c * 256, BNN_ALIGN);
        }
    }
    return a;
}

static int plan_model(const struct record *r, uint32_t n, uint64_t image_bytes, struct plan *pl, char *err,
                      size_t errlen)
{
    memset(pl, 0, sizeof(*pl));
    pl->image = image_bytes;
    for (uint32_t i = 0; i < n; i++) {
        pl->arena += layer_arena_bytes(&r[i]);
        uint64_t t = tensor_bytes(r[i].out_type, r[i].out_h, r[i].out_w, r[i].out_c);
        if (t > pl->act)
            pl->act = t;
        if (r[i].kind == BNN_LAYER_MVAU && r[i].out_type == BNN_TYPE_INT32)
            pl->scores = round_up(r[i].out_c, BNN_BLOCK8);
        /* The input's nibble tables: 16 x 16 bytes per 8-byte word. */
        if (splits_weights(&r[i]) && 32 * bits_tensor_bytes(r[i].win_h, r[i].win_w, r[i].in_c) > pl->split)
            pl->split = 32 * bits_tensor_bytes(r[i].win_h, r[i].win_w, r[i].in_c);
        if (r[i].win_h != r[i].in_h || r[i].win_w != r[i].in_w) {
            uint64_t pad = tensor_bytes(r[i].in_type, r[i].win_h, r[i].win_w, r[i].in_c);
            if (pad > pl->pad)
                pl->pad = pad;
        }
        if (pl->arena > BNN_ENGINE_MAX_BYTES || pl->act > BNN_ENGINE_MAX_BYTES / 4 || pl->pad > BNN_ENGINE_MAX_BYTES / 4)
            return fail(err, errlen, BNN_ERR_TOO_LARGE,
                        LAYER_FMT "the engine would need more than %llu MiB for the weights or %llu MiB for one "
                        "tensor",
                        LAYER_ARGS(i, n, &r[i]), BNN_ENGINE_MAX_BYTES >> 20, BNN_ENGINE_MAX_BYTES >> 22);
    }
    if (image_bytes > BNN_ENGINE_MAX_BYTES / 4)
        return fail(err, errlen, BNN_ERR_TOO_LARGE, "header: a %llu-byte image is past the engine's limit",
                    (unsigned long long)image_bytes);
    return BNN_OK;
}

static void *take(uint8_t **cursor, uint64_t bytes)
{
    void *p = *cursor;
    *cursor += round_up(bytes, BNN_ALIGN);
    return p;
}

static int weight_bit(const uint8_t *row, uint64_t j)
{
    return (row[j / 8] >> (j % 8)) & 1;
}

/* Bits out: one threshold per channel (act_val 0), x >= t for uint8 x. A
 * threshold <= 0 always fires (t8 = 0); one past 255 never does, which uint8
 * cannot say, so those channels are masked off. */
static void build_threshold_bits(struct bnn_layer *L, const struct record *r, const uint8_t *t, uint8_t **cursor)
{
    L->t8 = take(cursor, round_up(r->in_c, 64));
    L->never = take(cursor, L->in_wpp * 8);
    memset(L->t8, 255, round_up(r->in_c, 64));
    memset(L->never, 0, L->in_wpp * 8);
    for (uint32_t c = 0; c < r->in_c; c++) {
        int32_t v = (int32_t)rd32(t + 4 * (uint64_t)c);
        L->t8[c] = v <= 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
        if (v > 255) {
            L->never[c / 64] |= 1ull << (c % 64);
            L->has_never = 1;
        }
    }
}

/* int8 out: several thresholds (not necessarily sorted), so a 256-entry table
 * per channel of act_val + the number of thresholds <= x, plus 128. */
static void build_threshold_lut(struct bnn_layer *L, const struct record *r, const uint8_t *t, uint8_t **cursor)
{
    L->lut = take(cursor, (uint64_t)r->in_c * 256);
    for (uint32_t c = 0; c < r->in_c; c++) {
        const uint8_t *tc = t + 4 * (uint64_t)c * r->n_thresholds;
        for (int x = 0; x < 256; x++) {
            int count = 0;
            for (uint32_t j = 0; j < r->n_thresholds; j++)
                count += x >= (int32_t)rd32(tc + 4 * j);
            L->lut[(uint64_t)c * 256 + x] = (uint8_t)(r->act_val + count + 128);
        }
    }
}

/* The canonical rows into blocks of BNN_BLOCK channels, every window pixel
 * padded to whole words. */
static void pack_binary_weights(struct bnn_layer *L, const struct record *r, const uint8_t *payload, uint64_t window)
{
    const uint64_t row_bytes = ceil_div(r->k, 64) * 8;
    memset(L->bw, 0, (uint64_t)L->n_blocks * BNN_BLOCK * window * 8);
    for (uint32_t o = 0; o < r->out_c; o++) {
        const uint8_t *row = payload + o * row_bytes;
        uint64_t *dst = L->bw + (uint64_t)(o / BNN_BLOCK) * window * BNN_BLOCK + o % BNN_BLOCK;
        /* Input j of the canonical row is (pixel j / in_c of the window,
         * channel j % in_c); the engine pads every pixel to whole words. */
        for (uint64_t j = 0; j < r->k; j++)
            if (weight_bit(row, j)) {
                uint64_t pix = j / r->in_c, ch = j % r->in_c;
                dst[(pix * L->in_wpp + ch / 64) * BNN_BLOCK] |= 1ull << (ch % 64);
            }
    }
}

/* The weights' nibbles one byte each, [group][window nibble][BNN_NIB_CHANNELS]
 * (internal.h); pad channels up to whole groups are zero. */
static void split_nibbles(struct bnn_layer *L, uint64_t window, uint8_t **cursor)
{
    const uint64_t groups = ceil_div(L->n_blocks, BNN_NIB_BLOCKS), bytes = groups * BNN_NIB_CHANNELS * window * 16;
    L->bw_split = take(cursor, bytes);
    memset(L->bw_split, 0, bytes);
    for (uint64_t o = 0; o < (uint64_t)L->n_blocks * BNN_BLOCK; o++) {
        const uint64_t *src = L->bw + o / BNN_BLOCK * window * BNN_BLOCK + o % BNN_BLOCK;
        uint8_t *dst = L->bw_split + o / BNN_NIB_CHANNELS * window * 16 * BNN_NIB_CHANNELS + o % BNN_NIB_CHANNELS;
        for (uint64_t w = 0; w < window; w++)
            for (unsigned n = 0; n < 16; n++)
                dst[(w * 16 + n) * BNN_NIB_CHANNELS] = (uint8_t)(src[w * BNN_BLOCK] >> (4 * n) & 0x0F);
    }
}

/* MVAU on bits: packed weights, their nibble split if asked, and limits on the
 * mismatch count. */
static void build_mvau_bits(struct bnn_layer *L, const struct record *r, const uint8_t *payload, uint8_t **cursor,
                            int split)
{
    const uint8_t *thr = payload + (uint64_t)r->out_c * ceil_div(r->k, 64) * 8;
    uint32_t window = r->kernel * r->kernel_w * L->in_wpp;
    L->n_blocks = (uint32_t)ceil_div(r->out_c, BNN_BLOCK);
    /* A window as wide as the (padded) input has its rows back to back in
     * memory: one run instead of kh runs. */
    if (r->kernel_w == r->win_w) {
        L->n_rows = 1;
        L->row_words = window;
    } else {
        L->n_rows = r->kernel;
        L->row_words = r->kernel_w * L->in_wpp;
    }
    L->bw = take(cursor, (uint64_t)L->n_blocks * BNN_BLOCK * window * 8);
    L->limit = take(cursor, (uint64_t)L->n_blocks * BNN_BLOCK * 4);
    pack_binary_weights(L, r, payload, window);
    if (split)
        split_nibbles(L, window, cursor);
    for (uint32_t o = 0; o < L->n_blocks * BNN_BLOCK; o++) {
        int64_t lim = -1;
        if (o < r->out_c && r->n_thresholds == 1) {
            /* acc = K - m >= t  <=>  m <= K - t, clamped to -1 (never) .. K (always). */
            int64_t t = (int32_t)rd32(thr + 4 * (uint64_t)o);
            lim = (int64_t)r->k - t;
            lim = lim < -1 ? -1 : lim > (int64_t)r->k ? (int64_t)r->k : lim;
        }
        L->limit[o] = (int32_t)lim;
    }
}

/* Output channel o's row as +-1 bytes in the pair-interleaved blocks; returns
 * the sum of its weights. */
static int64_t pack_byte_weights(struct bnn_layer *L, const struct record *r, const uint8_t *row, uint32_t o)
{
    const uint64_t run = (uint64_t)r->kernel_w * r->in_c, n_pairs = (uint64_t)r->kernel * L->run_pairs;
    int64_t sumw = 0;
    for (uint64_t j = 0; j < r->k; j++) {
        int w = weight_bit(row, j) ? 1 : -1;
        sumw += w;
        /* Input j is byte j % run of kernel row j / run; rows start on whole
         * pairs. */
        uint64_t jp = j / run * L->run_pairs * 2 + j % run;
        L->w8[(((uint64_t)(o / BNN_BLOCK8) * n_pairs + jp / 2) * BNN_BLOCK8 + o % BNN_BLOCK8) * 2 + jp % 2] = (int8_t)w;
    }
    return sumw;
}

/* MVAU on 8-bit input: +-1 byte weights, limits and score offsets that fold in
 * int8's +128 (see internal.h). */
static void build_mvau_bytes(struct bnn_layer *L, const struct record *r, const uint8_t *payload, uint8_t **cursor)
{
    const uint64_t row_bytes = ceil_div(r->k, 64) * 8;
    const uint8_t *thr = payload + (uint64_t)r->out_c * row_bytes;
    L->n_blocks8 = (uint32_t)ceil_div(r->out_c, BNN_BLOCK8);
    L->run_pairs = (uint32_t)ceil_div((uint64_t)r->kernel_w * r->in_c, 2);
    uint64_t wbytes = (uint64_t)L->n_blocks8 * r->kernel * L->run_pairs * BNN_BLOCK8 * 2;
    L->w8 = take(cursor, wbytes);
    L->limit8 = take(cursor, (uint64_t)L->n_blocks8 * BNN_BLOCK8 * 4);
    L->offset8 = take(cursor, (uint64_t)L->n_blocks8 * BNN_BLOCK8 * 4);
    memset(L->w8, 0, wbytes);
    int64_t off = r->in_type == BNN_TYPE_INT8 ? 128 : 0;
    /* |sum(u * w)| <= 255 K < 2^28: limits clamped to +-2^30 keep their meaning. */
    const int64_t big = (int64_t)1 << 30;
    for (uint32_t o = 0; o < L->n_blocks8 * BNN_BLOCK8; o++) {
        int64_t sumw = o < r->out_c ? pack_byte_weights(L, r, payload + o * row_bytes, o) : 0;
        int64_t lim = big;
        if (o < r->out_c && r->n_thresholds == 1) {
            /* sum((u - off) w) >= t  <=>  sum(u w) >= t + off * sum(w). */
            lim = (int64_t)(int32_t)rd32(thr + 4 * (uint64_t)o) + off * sumw;
            lim = lim < -big ? -big : lim > big ? big : lim;
        }
        L->limit8[o] = (int32_t)lim;
        L->offset8[o] = (int32_t)(off * sumw);
    }
}

/* Repacks one validated record into the engine's layout (see internal.h);
 * MAXPOOL and LABEL_SELECT have no arrays. */
static void build_layer(struct bnn_layer *L, const struct record *r, const uint8_t *payload, uint8_t **cursor,
                        int split)
{
    L->kind = r->kind;
    L->in_h = r->in_h, L->in_w = r->in_w, L->in_c = r->in_c;
    L->out_h = r->out_h, L->out_w = r->out_w, L->out_c = r->out_c;
    L->kernel = r->kernel, L->stride = r->stride;
    L->kernel_w = r->kernel_w, L->stride_w = r->stride_w;
    memcpy(L->pad, r->pad, sizeof(L->pad));
    L->win_h = r->win_h, L->win_w = r->win_w;
    L->padded = r->win_h != r->in_h || r->win_w != r->in_w;
    L->pad_byte = r->in_type == BNN_TYPE_INT8 ? 128 : 0;
    L->in_type = r->in_type, L->out_type = r->out_type;
    L->n_thresholds = r->n_thresholds, L->act_val = r->act_val;
    L->in_wpp = (uint32_t)ceil_div(r->in_c, 64);
    L->out_wpp = (uint32_t)ceil_div(r->out_c, 64);
    L->k = r->k;
    L->out_bytes = (size_t)tensor_bytes(r->out_type, r->out_h, r->out_w, r->out_c);
    L->weight_bytes = r->payload_bytes;

    if (r->kind == BNN_LAYER_THRESHOLD) {
        if (r->out_type == BNN_TYPE_BITS)
            build_threshold_bits(L, r, payload, cursor);
        else
            build_threshold_lut(L, r, payload, cursor);
    } else if (r->kind == BNN_LAYER_MVAU) {
        uint64_t macs = (uint64_t)r->out_h * r->out_w * r->out_c * r->k;
        if (r->in_type == BNN_TYPE_BITS) {
            L->binary_macs = macs;
            build_mvau_bits(L, r, payload, cursor, split);
        } else {
            L->integer_macs = macs;
            build_mvau_bytes(L, r, payload, cursor);
        }
    }
}

/* The header's layer count, image, order, dataset and (zero) flags. */
static int check_image_header(const uint8_t *p, uint32_t major, uint32_t minor, char *err, size_t errlen)
{
    uint32_t n = rd32(p + 28);
    if (n == 0)
        return fail(err, errlen, BNN_ERR_SHAPE, "header: no layers");
    if (n > BNN_MAX_LAYERS)
        return fail(err, errlen, BNN_ERR_TOO_LARGE, "header: %u layers, past the limit of %u", n, BNN_MAX_LAYERS);
    int st;
    if ((st = check_header_dim(err, errlen, "in_c", rd32(p + 32))) != BNN_OK ||
        (st = check_header_dim(err, errlen, "in_h", rd32(p + 36))) != BNN_OK ||
        (st = check_header_dim(err, errlen, "in_w", rd32(p + 40))) != BNN_OK ||
        (st = check_header_dim(err, errlen, "n_classes", rd32(p + 48))) != BNN_OK)
        return st;
    uint32_t order = rd32(p + 44), dataset = rd32(p + 52);
    if (order != BNN_ORDER_CHW && order != BNN_ORDER_HWC)
        return fail(err, errlen, BNN_ERR_SHAPE, "header: unknown input_order %u", order);
    if (dataset > BNN_DATASET_DIGITS)
        return fail(err, errlen, BNN_ERR_SHAPE, "header: unknown dataset %u", dataset);
    if (rd32(p + 56) != 0 || rd32(p + 60) != 0)
        return fail(err, errlen, BNN_ERR_VERSION,
                    "header: flags or reserved fields set that format %u.%u does not have", major, minor);
    return BNN_OK;
}

/* The fixed part of the header against the file's size: magic, version,
 * header size, declared size. p holds the first min(size, 64) bytes, so a file
 * on disk is judged before anything past its header is read. */
static int check_fixed_header(const uint8_t *p, uint64_t size, char *err, size_t errlen)
{
    size_t m = size < 8 ? (size_t)size : 8;
    if (memcmp(p, BNN_MAGIC, m) != 0)
        return fail(err, errlen, BNN_ERR_MAGIC, "not a bnncpu model file (no BNNCPU magic)");
    if (size < BNN_HEADER_BYTES)
        return fail(err, errlen, BNN_ERR_TRUNCATED, "file is %llu bytes, shorter than the 64-byte header",
                    (unsigned long long)size);
    uint32_t major = rd16(p + 8), minor = rd16(p + 10);
    if (major != BNN_FORMAT_MAJOR || minor > BNN_FORMAT_MINOR)
        return fail(err, errlen, BNN_ERR_VERSION, "format version %u.%u, this reader reads %u.0 to %u.%u", major,
                    minor, BNN_FORMAT_MAJOR, BNN_FORMAT_MAJOR, BNN_FORMAT_MINOR);
    uint32_t header_bytes = rd32(p + 12);
    if (header_bytes != BNN_HEADER_BYTES)
        return fail(err, errlen, BNN_ERR_VERSION, "header_bytes is %u, format %u.%u has 64", header_bytes, major,
                    minor);
    uint64_t file_bytes = rd64(p + 16);
    if (file_bytes > BNN_MAX_FILE_BYTES || size > BNN_MAX_FILE_BYTES)
        return fail(err, errlen, BNN_ERR_TOO_LARGE, "file is %llu bytes, past the limit of %llu",
                    (unsigned long long)(file_bytes > size ? file_bytes : size), BNN_MAX_FILE_BYTES);
    if (size < file_bytes)
        return fail(err, errlen, BNN_ERR_TRUNCATED, "file is %llu bytes but its header says %llu",
                    (unsigned long long)size, (unsigned long long)file_bytes);
    if (size > file_bytes)
        return fail(err, errlen, BNN_ERR_TOO_LARGE, "file is %llu bytes but its header says %llu",
                    (unsigned long long)size, (unsigned long long)file_bytes);
    return BNN_OK;
}

/* The whole 64-byte file header: the fixed part, the checksum, then the image
 * and layer count. */
static int check_file_header(const uint8_t *p, size_t size, char *err, size_t errlen)
{
    int st;
    if ((st = check_fixed_header(p, size, err, errlen)) != BNN_OK)
        return st;
    uint32_t stored = rd32(p + 24), actual = bnn_crc32(p, size, 24);
    if (stored != actual)
        return fail(err, errlen, BNN_ERR_CHECKSUM, "checksum mismatch: the header says %08x, the content gives %08x",
                    stored, actual);
    return check_image_header(p, rd16(p + 8), rd16(p + 10), err, errlen);
}

/* Every record in turn, then nothing after the last. */
static int read_records(const uint8_t *p, uint64_t file_bytes, uint32_t n, struct record *rec, char *err,
                        size_t errlen)
{
    int st;
    uint64_t offset = BNN_HEADER_BYTES;
    for (uint32_t i = 0; i < n; i++) {
        if ((st = read_record(p, file_bytes, offset, i, n, &rec[i], err, errlen)) != BNN_OK)
            return st;
        offset += rec[i].record_bytes;
    }
    if (offset != file_bytes)
        return fail(err, errlen, BNN_ERR_TOO_LARGE, "%llu bytes after the last layer",
                    (unsigned long long)(file_bytes - offset));
    return BNN_OK;
}

/* Allocates the model for a fully checked file and repacks every layer. */
static int new_model(const uint8_t *p, const struct record *rec, uint32_t n, int transpose, const struct plan *pl,
                     bnn_model **out, char *err, size_t errlen)
{
    bnn_model *model = calloc(1, sizeof(*model));
    struct bnn_layer *layers = calloc(n, sizeof(*layers));
    void *arena = bnn_alloc((size_t)pl->arena);
    if (!model || !layers || !arena) {
        free(model);
        free(layers);
        bnn_free(arena);
        return fail(err, errlen, BNN_ERR_NOMEM, "out of memory for a %llu-byte model",
                    (unsigned long long)pl->arena);
    }
    model->in_c = rd32(p + 32);
    model->in_h = rd32(p + 36);
    model->in_w = rd32(p + 40);
    model->input_order = rd32(p + 44);
    model->n_classes = rd32(p + 48);
    model->dataset = rd32(p + 52);
    model->n_layers = n;
    model->transpose_input = transpose;
    /* An MVAU reading the image's bytes itself reads one byte past an odd run:
     * give it a copy with slack instead of the caller's buffer. */
    model->copy_input = !transpose && rec[0].kind == BNN_LAYER_MVAU;
    model->layers = layers;
    model->arena = arena;
    model->kernels = bnn_select_kernels();
    uint8_t *cursor = arena;
    for (uint32_t i = 0; i < n; i++) {
        build_layer(&layers[i], &rec[i], p + rec[i].offset + BNN_LAYER_HEADER_BYTES, &cursor,
                    splits_weights(&rec[i]));
        model->binary_macs += layers[i].binary_macs;
        model->integer_macs += layers[i].integer_macs;
    }
    model->act_bytes = (size_t)round_up(pl->act + BNN_SLACK, BNN_ALIGN);
    model->image_bytes = (size_t)pl->image;
    model->score_count = (size_t)pl->scores;
    model->split_bytes = (size_t)round_up(pl->split, BNN_ALIGN);
    model->pad_bytes = pl->pad ? (size_t)round_up(pl->pad + BNN_SLACK, BNN_ALIGN) : 0;
    model->model_bytes = pl->arena + sizeof(*model) + (uint64_t)n * sizeof(*layers);
    model->context_bytes = 2 * (uint64_t)model->act_bytes + round_up(pl->image + BNN_SLACK, BNN_ALIGN) +
                           round_up(pl->scores * 4, BNN_ALIGN) + model->split_bytes + model->pad_bytes;
    *out = model;
    return BNN_OK;
}

int bnn_model_load_memory(const void *data, size_t size, bnn_model **out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (out)
        *out = NULL;
    if (!out || (!data && size))
        return fail(err, errlen, BNN_ERR_ARG, "bnn_model_load_memory: NULL argument");
    const uint8_t *p = data;
    int st;
    if ((st = check_file_header(p, size, err, errlen)) != BNN_OK)
        return st;
    uint32_t n = rd32(p + 28);
    struct record rec[BNN_MAX_LAYERS];
    if ((st = read_records(p, rd64(p + 16), n, rec, err, errlen)) != BNN_OK)
        return st;
    int transpose = 0;
    if ((st = check_chain(p, rec, n, &transpose, err, errlen)) != BNN_OK)
        return st;
    uint64_t image_bytes = (uint64_t)rd32(p + 32) * rd32(p + 36) * rd32(p + 40);
    struct plan pl;
    if ((st = plan_model(rec, n, image_bytes, &pl, err, errlen)) != BNN_OK)
        return st;
    /* Everything is checked: now allocate. */
    return new_model(p, rec, n, transpose, &pl, out, err, errlen);
}

/* What fstat says a path is, for the message refusing it. */
static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a regular file";
}

/* Reads up to n bytes, fewer only at the end of the file; -1 on an error. */
static ssize_t read_full(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Checks the header against the file's size, then reads exactly the size it
 * declares, so a huge or endless file is refused after 64 bytes. */
static int read_model_file(int fd, const char *path, uint8_t **out, size_t *out_size, char *err, size_t errlen)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return fail(err, errlen, BNN_ERR_IO, "%s: %s", path, strerror(errno));
    /* A FIFO, a device or a directory has no size to check the header
     * against, and reading one may never end. */
    if (!S_ISREG(sb.st_mode))
        return fail(err, errlen, BNN_ERR_IO, "%s: %s, not a regular file", path, file_kind(sb.st_mode));
    uint8_t header[BNN_HEADER_BYTES];
    ssize_t got = read_full(fd, header, sizeof(header));
    if (got < 0)
        return fail(err, errlen, BNN_ERR_IO, "%s: %s", path, strerror(errno));
    /* A file shorter than fstat said (it shrank, or a /proc file) is judged
     * by the bytes that are there. */
    uint64_t size = (uint64_t)got < sizeof(header) ? (uint64_t)got : (uint64_t)sb.st_size;
    char inner[256];
    int st = check_fixed_header(header, size, inner, sizeof(inner));
    if (st != BNN_OK)
        return fail(err, errlen, st, "%s: %s", path, inner);
    /* Checked above: the size fstat gave, 64 bytes to the 2 GiB limit, which
     * size_t holds on 32-bit too. */
    uint64_t file_bytes = rd64(header + 16);
    uint8_t *buf = malloc((size_t)file_bytes);
    if (!buf)
        return fail(err, errlen, BNN_ERR_NOMEM, "%s: out of memory for %llu bytes", path,
                    (unsigned long long)file_bytes);
    memcpy(buf, header, sizeof(header));
    size_t rest = (size_t)file_bytes - sizeof(header);
    uint8_t extra;
    got = read_full(fd, buf + sizeof(header), rest);
    if (got < 0) {
        st = fail(err, errlen, BNN_ERR_IO, "%s: %s", path, strerror(errno));
    } else if ((size_t)got < rest) {
        st = fail(err, errlen, BNN_ERR_TRUNCATED, "%s: file is %llu bytes but its header says %llu", path,
                  (unsigned long long)(sizeof(header) + (size_t)got), (unsigned long long)file_bytes);
    } else if ((got = read_full(fd, &extra, 1)) != 0) {
        /* It grew after fstat: what is read would not be the file checked. */
        st = got < 0 ? fail(err, errlen, BNN_ERR_IO, "%s: %s", path, strerror(errno))
                     : fail(err, errlen, BNN_ERR_TOO_LARGE, "%s: file is longer than its header says %llu", path,
                            (unsigned long long)file_bytes);
    }
    if (st != BNN_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    *out_size = (size_t)file_bytes;
    return BNN_OK;
}

int bnn_model_load_file(const char *path, bnn_model **out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (out)
        *out = NULL;
    if (!path || !out)
        return fail(err, errlen, BNN_ERR_ARG, "bnn_model_load_file: NULL argument");
    /* O_NONBLOCK: opening a FIFO without a writer would wait for one; it is
     * refused after fstat instead. On a regular file it changes nothing. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, BNN_ERR_IO, "%s: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t size = 0;
    int st = read_model_file(fd, path, &buf, &size, err, errlen);
    close(fd);
    if (st == BNN_OK) {
        char inner[256];
        st = bnn_model_load_memory(buf, size, out, inner, sizeof(inner));
        if (st != BNN_OK)
            fail(err, errlen, st, "%s: %s", path, inner);
    }
    free(buf);
    return st;
}

void bnn_model_free(bnn_model *model)
{
    if (!model)
        return;
    bnn_free(model->arena);
    free(model->layers);
    free(model);
}

void bnn_model_get_info(const bnn_model *model, bnn_model_info *info)
{
    if (!model || !info)
        return;
    memset(info, 0, sizeof(*info));
    info->in_c = model->in_c;
    info->in_h = model->in_h;
    info->in_w = model->in_w;
    info->n_classes = model->n_classes;
    info->n_layers = model->n_layers;
    info->dataset = model->dataset;
    info->binary_macs = model->binary_macs;
    info->integer_macs = model->integer_macs;
    info->model_bytes = model->model_bytes;
    info->context_bytes = model->context_bytes;
}

int bnn_model_get_layer(const bnn_model *model, uint32_t index, bnn_layer_info *info)
{
    if (!model || !info || index >= model->n_layers)
        return BNN_ERR_ARG;
    const struct bnn_layer *L = &model->layers[index];
    memset(info, 0, sizeof(*info));
    info->kind = L->kind;
    info->in_h = L->in_h, info->in_w = L->in_w, info->in_c = L->in_c;
    info->out_h = L->out_h, info->out_w = L->out_w, info->out_c = L->out_c;
    info->kernel = L->kernel, info->stride = L->stride;
    info->kernel_w = L->kernel_w, info->stride_w = L->stride_w;
    memcpy(info->pad, L->pad, sizeof(info->pad));
    info->input_type = L->in_type, info->output_type = L->out_type;
    info->n_thresholds = L->n_thresholds;
    info->act_val = L->act_val;
    info->binary_macs = L->binary_macs;
    info->integer_macs = L->integer_macs;
    info->weight_bytes = L->weight_bytes;
    return BNN_OK;
}

const char *bnn_layer_kind_name(uint32_t kind)
{
    return kind_name(kind);
}

const char *bnn_type_name(uint32_t type)
{
    return type_name(type);
}

void bnn_model_use_kernels(bnn_model *model, const struct bnn_kernels *kernels)
{
    if (model && kernels)
        model->kernels = kernels;
}
