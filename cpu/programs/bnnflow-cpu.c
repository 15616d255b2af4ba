/*
 * bnnflow-cpu: run and benchmark bnncpu model files.
 *
 *   bnnflow-cpu info MODEL
 *   bnnflow-cpu run MODEL IMAGES [--format idx|cifar10|raw] [--labels FILE] [--limit N]
 *                   [--threads N] [--classes-out FILE] [--scores-out FILE] [--quiet]
 *   bnnflow-cpu bench MODEL [--batch N] [--threads N] [--runs N] [--layers] [--json]
 *
 * Every failure is one line on stderr and a non-zero exit (2 for usage).
 */
/* Image files past 2 GiB on 32-bit ARM too. */
#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bnncpu.h"

#define PROG "bnnflow-cpu"

static const char *usage_text =
    "usage: " PROG " info MODEL\n"
    "       " PROG " run MODEL IMAGES [--format idx|cifar10|raw] [--labels FILE] [--limit N]\n"
    "                   [--threads N] [--classes-out FILE] [--scores-out FILE] [--quiet]\n"
    "       " PROG " bench MODEL [--batch N] [--threads N] [--runs N] [--layers] [--json]\n"
    "\n"
    "IMAGES: MNIST IDX (idx3-ubyte, uncompressed), CIFAR-10 binary batches, or raw\n"
    "uint8 images of the model's shape, back to back (CHW). Without --format the\n"
    "format is decided from the file's size and the model: IDX when its header\n"
    "declares exactly the file's size, CIFAR-10 when the file is whole 3,073-byte\n"
    "records, raw when it is whole images of the model. --format forces one.\n"
    "--labels: IDX labels (idx1-ubyte). --classes-out/--scores-out: raw\n"
    "little-endian int32 (n, n x classes).\n"
    "BNNCPU_DISABLE=avx512,avx2,popcnt,neon,all switches kernels off.\n";

/* One line on stderr, exit 1. */
static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static _Noreturn void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see " PROG " --help)\n", stderr);
    va_end(ap);
    exit(2);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "1,234,567" */
static const char *grouped(uint64_t v, char *buf)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v), o = 0;
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}

static uint64_t parse_count(const char *opt, const char *s, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
        usage_error("%s needs a whole number from %" PRIu64 " to %" PRIu64 ", not '%s'", opt, min, max, s);
    return v;
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

/* The whole of a regular file. Anything else is refused at once: a FIFO
 * (opened without waiting for a writer), a device or a directory has no size
 * to check a format against, and reading one may never end. */
static uint8_t *read_all(const char *path, size_t *size, const char *what)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        die("%s %s: %s", what, path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        die("%s %s: %s", what, path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        die("%s %s: %s, not a regular file", what, path, file_kind(sb.st_mode));
    if (sb.st_size < 0 || (uint64_t)sb.st_size >= SIZE_MAX)
        die("%s %s: %lld bytes do not fit in memory", what, path, (long long)sb.st_size);
    size_t len = (size_t)sb.st_size, got = 0;
    uint8_t *buf = malloc(len + 1);
    if (!buf)
        die("%s %s: out of memory for %zu bytes", what, path, len);
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("%s %s: %s", what, path, strerror(errno));
        if (r == 0)
            die("%s %s: %zu bytes, not the %zu it had when opened", what, path, got, len);
        got += (size_t)r;
    }
    close(fd);
    *size = len;
    return buf;
}

static bnn_model *load_model(const char *path)
{
    bnn_model *m = NULL;
    char err[512];
    if (bnn_model_load_file(path, &m, err, sizeof(err)) != BNN_OK)
        die("%s", err);
    return m;
}

static const char *dataset_name(uint32_t d)
{
    switch (d) {
    case BNN_DATASET_MNIST: return "mnist";
    case BNN_DATASET_CIFAR10: return "cifar10";
    case BNN_DATASET_DIGITS: return "digits";
    default: return "no dataset";
    }
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

struct images {
    uint8_t *data;       /* n images, CHW, back to back */
    size_t n;
    int32_t *labels;     /* NULL when not known */
    const char *format;
};

enum image_format { FORMAT_AUTO, FORMAT_IDX, FORMAT_CIFAR10, FORMAT_RAW };

enum { CIFAR_RECORD = 3073, CIFAR_IMAGE = 3072 };

/* IDX images (idx3-ubyte) whose header declares exactly the file's size. */
static int idx_fits(const uint8_t *buf, size_t size, uint64_t *n, uint64_t *r, uint64_t *c)
{
    if (size < 16 || be32(buf) != 0x00000803)
        return 0;
    *n = be32(buf + 4), *r = be32(buf + 8), *c = be32(buf + 12);
    /* n * r * c can pass 2^64: compare by division. */
    uint64_t image = *r * *c, body = size - 16;
    if (*n == 0 || image == 0)
        return body == 0;
    return image <= body / *n && *n * image == body;
}

/* IDX labels (idx1-ubyte) whose header declares exactly the file's size. */
static int idx_labels_fit(const uint8_t *buf, size_t size)
{
    return size >= 8 && be32(buf) == 0x00000801 && size - 8 == be32(buf + 4);
}

/* Whole CIFAR-10 records: a label byte 0..9, then a 3x32x32 image. */
static int cifar_fits(const uint8_t *buf, size_t size)
{
    if (size == 0 || size % CIFAR_RECORD != 0)
        return 0;
    for (size_t i = 0; i < size; i += CIFAR_RECORD)
        if (buf[i] >= 10)
            return 0;
    return 1;
}

static int is_gzip(const uint8_t *buf, size_t size)
{
    /* Magic and the deflate method: the only compression gzip has. */
    return size >= 3 && buf[0] == 0x1F && buf[1] == 0x8B && buf[2] == 8;
}

/* The format an image file is taken for: forced, or decided from its size and
 * the model, so raw images that happen to start like an IDX header are still
 * raw. IDX only when its header declares exactly the file's size; a CIFAR-10
 * batch only when the file is whole records (and not also whole images of a
 * model that is not CIFAR-shaped); otherwise raw when the file is whole images
 * of the model. What fits nothing gets the most specific message. */
static enum image_format detect_format(const char *path, const uint8_t *buf, size_t size, size_t want,
                                       const char *shape)
{
    uint64_t n = 0, r = 0, c = 0;
    if (idx_fits(buf, size, &n, &r, &c))
        return FORMAT_IDX;
    if (idx_labels_fit(buf, size))
        die("images %s: an IDX label file (idx1-ubyte), not images", path);
    /* A compressed stream is never images, whatever its size. */
    if (is_gzip(buf, size))
        die("images %s: gzip-compressed; gunzip it first", path);
    int raw = size && size % want == 0;
    if (cifar_fits(buf, size) && (want == CIFAR_IMAGE || !raw))
        return FORMAT_CIFAR10;
    if (raw)
        return FORMAT_RAW;
    if (size >= 4 && buf[0] == 0 && buf[1] == 0 && buf[2] == 0x08 && buf[3] == 3) {
        if (size < 16)
            die("images %s: truncated IDX header", path);
        die("images %s: IDX header says %" PRIu64 " images of %" PRIu64 "x%" PRIu64 " but the file has %zu bytes",
            path, n, r, c, size);
    }
    die("images %s: %zu bytes is not an IDX file, a CIFAR-10 batch or whole %s images (%zu bytes each)", path, size,
        shape, want);
}

/* Reads the image file in the given (or detected) format and checks the image
 * shape against the model. */
static struct images load_images(const char *path, const bnn_model_info *mi, enum image_format format)
{
    size_t size;
    uint8_t *buf = read_all(path, &size, "images");
    const size_t want = (size_t)mi->in_c * mi->in_h * mi->in_w;
    struct images im = {0};
    char shape[64];
    snprintf(shape, sizeof(shape), "%ux%ux%u (%s)", mi->in_c, mi->in_h, mi->in_w, dataset_name(mi->dataset));
    if (format == FORMAT_AUTO)
        format = detect_format(path, buf, size, want, shape);

    if (format == FORMAT_IDX) {
        uint64_t n = 0, r = 0, c = 0;
        if (!idx_fits(buf, size, &n, &r, &c)) {
            if (idx_labels_fit(buf, size))
                die("images %s: an IDX label file (idx1-ubyte), not images", path);
            if (size < 4 || be32(buf) != 0x00000803)
                die("images %s: not an IDX image file (no idx3-ubyte header)", path);
            if (size < 16)
                die("images %s: truncated IDX header", path);
            die("images %s: IDX header says %" PRIu64 " images of %" PRIu64 "x%" PRIu64
                " but the file has %zu bytes", path, n, r, c, size);
        }
        if (mi->in_c != 1 || mi->in_h != r || mi->in_w != c)
            die("images are 1x%" PRIu64 "x%" PRIu64 " but the model expects %s", r, c, shape);
        /* The pixels follow the 16-byte header: move them to the start. */
        memmove(buf, buf + 16, size - 16);
        im.data = buf;
        im.n = (size_t)n;
        im.format = "MNIST IDX";
    } else if (format == FORMAT_CIFAR10) {
        if (size == 0 || size % CIFAR_RECORD != 0)
            die("images %s: %zu bytes is not whole CIFAR-10 records (3,073 bytes each)", path, size);
        for (size_t i = 0; i < size; i += CIFAR_RECORD)
            if (buf[i] >= 10)
                die("images %s: CIFAR-10 record %zu has label %u, not 0..9", path, i / CIFAR_RECORD,
                    (unsigned)buf[i]);
        if (mi->in_c != 3 || mi->in_h != 32 || mi->in_w != 32)
            die("images are 3x32x32 (a CIFAR-10 batch) but the model expects %s", shape);
        im.n = size / CIFAR_RECORD;
        im.labels = malloc(im.n * sizeof(int32_t));
        if (!im.labels)
            die("images %s: out of memory for %zu labels", path, im.n);
        /* Each record's image moves down over the label bytes before it. */
        for (size_t i = 0; i < im.n; i++) {
            im.labels[i] = buf[i * CIFAR_RECORD];
            memmove(buf + i * CIFAR_IMAGE, buf + i * CIFAR_RECORD + 1, CIFAR_IMAGE);
        }
        im.data = buf;
        im.format = "CIFAR-10 binary";
    } else {
        if (size == 0 || size % want != 0)
            die("images %s: %zu bytes is not whole %s images (%zu bytes each)", path, size, shape, want);
        im.data = buf;
        im.n = size / want;
        im.format = "raw uint8";
    }
    return im;
}

static int32_t *load_labels(const char *path, size_t n_images)
{
    size_t size;
    uint8_t *buf = read_all(path, &size, "labels");
    if (size >= 2 && buf[0] == 0x1F && buf[1] == 0x8B)
        die("labels %s: gzip-compressed; gunzip it first", path);
    if (size < 8 || be32(buf) != 0x00000801)
        die("labels %s: not an IDX label file (idx1-ubyte)", path);
    uint64_t n = be32(buf + 4);
    if (size != 8 + n)
        die("labels %s: header says %" PRIu64 " labels but the file has %zu bytes", path, n, size);
    if (n != n_images)
        die("labels %s: %" PRIu64 " labels for %zu images", path, n, n_images);
    int32_t *labels = malloc(n * sizeof(int32_t) + 1);
    for (uint64_t i = 0; i < n; i++)
        labels[i] = buf[8 + i];
    free(buf);
    return labels;
}

/* Temp file next to the target, then rename: a reader never sees half a file.
 * The temp file is made with open(..., 0666) and O_EXCL rather than mkstemp,
 * so the result gets the mode (umask, default ACLs) any new file would, not
 * mkstemp's 0600. Everything is freed before die: LeakSanitizer checks the
 * failure paths too. */
static void write_atomic(const char *path, const void *data, size_t size)
{
    size_t cap = strlen(path) + 64;
    char *tmp = malloc(cap);
    if (!tmp)
        die("cannot write %s: out of memory", path);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int fd = -1, e = 0;
    for (unsigned i = 0; fd < 0 && i < 100; i++) {
        snprintf(tmp, cap, "%s.tmp.%ld.%lx", path, (long)getpid(), (unsigned long)ts.tv_nsec + i);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOCTTY | O_CLOEXEC, 0666);
        e = errno;
        if (fd < 0 && e != EEXIST)
            break;
    }
    if (fd < 0) {
        free(tmp);
        die("cannot write %s: %s", path, strerror(e));
    }
    const uint8_t *p = data;
    size_t done = 0;
    errno = 0;
    while (done < size) {
        ssize_t w = write(fd, p + done, size - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    e = done < size ? (errno ? errno : EIO) : 0;
    if (!e && fsync(fd) != 0)
        e = errno;
    if (close(fd) != 0 && !e)
        e = errno;
    if (!e && rename(tmp, path) != 0)
        e = errno;
    if (e) {
        unlink(tmp);
        free(tmp);
        die("cannot write %s: %s", path, strerror(e));
    }
    free(tmp);
}

static void print_shape(char *buf, size_t n, uint32_t h, uint32_t w, uint32_t c, uint32_t type)
{
    snprintf(buf, n, "%ux%ux%u %s", h, w, c, bnn_type_name(type));
}

/* The window columns of info: kernel KHxKW, stride SHxSW and padding T,L,B,R
 * ("-" where there is none, and all three "-" for a layer without a window). */
static void print_window(const bnn_layer_info *L, char *kernel, char *stride, char *pad, size_t n)
{
    if (L->kind != BNN_LAYER_MVAU && L->kind != BNN_LAYER_MAXPOOL) {
        snprintf(kernel, n, "-"), snprintf(stride, n, "-"), snprintf(pad, n, "-");
        return;
    }
    snprintf(kernel, n, "%ux%u", L->kernel, L->kernel_w);
    snprintf(stride, n, "%ux%u", L->stride, L->stride_w);
    if (L->pad[0] | L->pad[1] | L->pad[2] | L->pad[3])
        snprintf(pad, n, "%u,%u,%u,%u", L->pad[0], L->pad[1], L->pad[2], L->pad[3]);
    else
        snprintf(pad, n, "-");
}

static void features_text(char *buf, size_t n)
{
    unsigned f = bnn_cpu_features();
    snprintf(buf, n, "%s%s%s%s", f & BNN_CPU_POPCNT ? " popcnt" : "", f & BNN_CPU_AVX2 ? " avx2" : "",
             f & BNN_CPU_AVX512 ? " avx512" : "", f & BNN_CPU_NEON ? " neon" : "");
    if (!buf[0])
        snprintf(buf, n, " none");
}

static int cmd_info(int argc, char **argv)
{
    if (argc != 1)
        usage_error("info takes one MODEL");
    bnn_model *m = load_model(argv[0]);
    bnn_model_info mi;
    bnn_model_get_info(m, &mi);
    char a[32], b[32], c[32], feat[64];
    printf("model      %s\n", argv[0]);
    printf("image      %ux%ux%u uint8, %s\n", mi.in_c, mi.in_h, mi.in_w, dataset_name(mi.dataset));
    printf("classes    %u\n", mi.n_classes);
    printf("layers     %u\n", mi.n_layers);
    printf("  #  %-12s  %-20s  %-20s  %-7s  %-7s  %-11s  %4s  %15s  %10s\n", "kind", "input", "output", "kernel",
           "stride", "pad", "thr", "MACs", "bytes");
    for (uint32_t i = 0; i < mi.n_layers; i++) {
        bnn_layer_info L;
        bnn_model_get_layer(m, i, &L);
        char in[40], out[40], kernel[48], stride[48], pad[48];
        print_shape(in, sizeof(in), L.in_h, L.in_w, L.in_c, L.input_type);
        print_shape(out, sizeof(out), L.out_h, L.out_w, L.out_c, L.output_type);
        print_window(&L, kernel, stride, pad, sizeof(kernel));
        printf("%3u  %-12s  %-20s  %-20s  %-7s  %-7s  %-11s  %4u  %15s  %10s\n", i + 1, bnn_layer_kind_name(L.kind),
               in, out, kernel, stride, pad, L.n_thresholds, grouped(L.binary_macs + L.integer_macs, a),
               grouped(L.weight_bytes, b));
    }
    printf("MACs       %s binary + %s 8-bit per image\n", grouped(mi.binary_macs, a), grouped(mi.integer_macs, b));
    printf("memory     model %s bytes (engine layout), context %s bytes\n", grouped(mi.model_bytes, a),
           grouped(mi.context_bytes, c));
    features_text(feat, sizeof(feat));
    printf("kernels    %s (cpu:%s)\n", bnn_kernel_name(), feat);
    printf("engine     bnncpu %s\n", bnn_version());
    bnn_model_free(m);
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    const char *model_path = NULL, *images_path = NULL, *labels_path = NULL, *classes_out = NULL,
               *scores_out = NULL;
    uint64_t limit = 0, threads = 0;
    int quiet = 0;
    enum image_format format = FORMAT_AUTO;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--quiet"))
            quiet = 1;
        else if (a[0] == '-' && a[1] == '-') {
            if (i + 1 >= argc)
                usage_error("%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--labels"))
                labels_path = v;
            else if (!strcmp(a, "--limit"))
                limit = parse_count(a, v, 1, UINT32_MAX);
            else if (!strcmp(a, "--threads"))
                threads = parse_count(a, v, 0, 256);
            else if (!strcmp(a, "--classes-out"))
                classes_out = v;
            else if (!strcmp(a, "--scores-out"))
                scores_out = v;
            else if (!strcmp(a, "--format")) {
                if (!strcmp(v, "idx"))
                    format = FORMAT_IDX;
                else if (!strcmp(v, "cifar10"))
                    format = FORMAT_CIFAR10;
                else if (!strcmp(v, "raw"))
                    format = FORMAT_RAW;
                else
                    usage_error("--format needs idx, cifar10 or raw, not '%s'", v);
            }
            else
                usage_error("unknown option %s", a);
        } else if (!model_path)
            model_path = a;
        else if (!images_path)
            images_path = a;
        else
            usage_error("unexpected argument '%s'", a);
    }
    if (!model_path || !images_path)
        usage_error("run needs MODEL and IMAGES");
    bnn_model *m = load_model(model_path);
    bnn_model_info mi;
    bnn_model_get_info(m, &mi);
    struct images im = load_images(images_path, &mi, format);
    if (labels_path) {
        free(im.labels);
        im.labels = load_labels(labels_path, im.n);
    }
    size_t n = limit && limit < im.n ? (size_t)limit : im.n;
    if (n == 0)
        die("images %s: no images", images_path);
    int32_t *classes = malloc(n * sizeof(int32_t));
    int32_t *scores = malloc(n * mi.n_classes * sizeof(int32_t));
    if (!classes || !scores)
        die("out of memory for %zu results", n);
    double t0 = now_s();
    int st = bnn_run(m, im.data, n, classes, scores, (int)threads);
    double dt = now_s() - t0;
    if (st != BNN_OK)
        die("run failed: %s", bnn_strerror(st));
    if (classes_out)
        write_atomic(classes_out, classes, n * sizeof(int32_t));
    if (scores_out)
        write_atomic(scores_out, scores, n * mi.n_classes * sizeof(int32_t));
    size_t correct = 0;
    for (size_t i = 0; i < n; i++) {
        if (im.labels)
            correct += classes[i] == im.labels[i];
        if (quiet)
            continue;
        if (im.labels)
            printf("%zu\t%d\t%d\t%s\n", i, classes[i], im.labels[i], classes[i] == im.labels[i] ? "ok" : "wrong");
        else
            printf("%zu\t%d\n", i, classes[i]);
    }
    char a[32];
    printf("%zu images (%s) in %.3f s, %s images/s, %s kernels", n, im.format, dt,
           grouped((uint64_t)(n / (dt > 0 ? dt : 1e-9)), a), bnn_kernel_name());
    if (im.labels)
        printf("; accuracy %.2f%% (%zu/%zu)", 100.0 * (double)correct / (double)n, correct, n);
    printf("\n");
    free(classes), free(scores), free(im.data), free(im.labels);
    bnn_model_free(m);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct throughput {
    int threads;
    double images_per_s;     /* wall clock */
    double images_per_cpu_s; /* per second of process CPU time: what a machine shared
                                with other work still measures */
};

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Images per second for batches of n on `threads` threads: one context (its
 * worker threads started by the warm-up call), then repeat for at least min_s
 * seconds. */
static struct throughput measure_batch(const bnn_model *m, const uint8_t *batch, size_t n, int threads,
                                       double min_s)
{
    int32_t *classes = malloc(n * sizeof(int32_t));
    bnn_context *ctx = bnn_context_new(m);
    if (!classes || !ctx)
        die("out of memory for a batch of %zu", n);
    if (bnn_context_run_threads(ctx, batch, n, classes, NULL, threads) != BNN_OK)
        die("run failed");
    size_t done = 0;
    double t0 = now_s(), c0 = cpu_s(), dt;
    do {
        if (bnn_context_run_threads(ctx, batch, n, classes, NULL, threads) != BNN_OK)
            die("run failed");
        done += n;
        dt = now_s() - t0;
    } while (dt < min_s || done < 3 * n);
    double dc = cpu_s() - c0;
    bnn_context_free(ctx);
    free(classes);
    return (struct throughput){threads, (double)done / dt, (double)done / (dc > 0 ? dc : 1e-9)};
}

static int cmd_bench(int argc, char **argv)
{
    const char *model_path = NULL;
    uint64_t batch = 0, threads = 0, runs = 1000;
    int json = 0, layers = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json"))
            json = 1;
        else if (!strcmp(a, "--layers"))
            layers = 1;
        else if (a[0] == '-' && a[1] == '-') {
            if (i + 1 >= argc)
                usage_error("%s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--batch"))
                batch = parse_count(a, v, 1, 1u << 20);
            else if (!strcmp(a, "--threads"))
                threads = parse_count(a, v, 0, 256);
            else if (!strcmp(a, "--runs"))
                runs = parse_count(a, v, 1000, 100000000);
            else
                usage_error("unknown option %s", a);
        } else if (!model_path)
            model_path = a;
        else
            usage_error("unexpected argument '%s'", a);
    }
    if (!model_path)
        usage_error("bench needs MODEL");
    bnn_model *m = load_model(model_path);
    bnn_model_info mi;
    bnn_model_get_info(m, &mi);
    const size_t ib = (size_t)mi.in_c * mi.in_h * mi.in_w;
    if (threads == 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        threads = online > 0 ? (uint64_t)online : 1;
    }

    /* A pool of random images (digits pixels are 0..16), reused round robin. */
    enum { POOL = 64 };
    uint8_t *pool = malloc(POOL * ib);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < POOL * ib; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        pool[i] = (uint8_t)(mi.dataset == BNN_DATASET_DIGITS ? s % 17 : s >> 56);
    }

    /* Batch-1 latency on one context: warm-up, then every run timed. */
    bnn_context *ctx = bnn_context_new(m);
    if (!ctx)
        die("out of memory for a context");
    int32_t cls;
    for (int i = 0; i < 200; i++)
        bnn_context_run(ctx, pool + (size_t)(i % POOL) * ib, 1, &cls, NULL);
    double *lat = malloc(runs * sizeof(double));
    for (uint64_t i = 0; i < runs; i++) {
        double t0 = now_s();
        bnn_context_run(ctx, pool + (size_t)(i % POOL) * ib, 1, &cls, NULL);
        lat[i] = now_s() - t0;
    }
    qsort(lat, runs, sizeof(double), cmp_double);
    double lat_min = lat[0], lat_med = lat[runs / 2], lat_p99 = lat[(size_t)((double)runs * 0.99)];

    /* Per layer: the minimum and the median over the runs (the machine may be
     * shared; the minimum is the uncontended time). */
    double *layer_min = NULL, *layer_med = NULL;
    if (layers) {
        uint64_t *ns = calloc((size_t)runs * mi.n_layers, sizeof(uint64_t));
        double *col = malloc(runs * sizeof(double));
        layer_min = calloc(mi.n_layers, sizeof(double));
        layer_med = calloc(mi.n_layers, sizeof(double));
        for (uint64_t i = 0; i < runs; i++)
            bnn_context_run_timed(ctx, pool + (size_t)(i % POOL) * ib, 1, &cls, NULL, ns + i * mi.n_layers);
        for (uint32_t l = 0; l < mi.n_layers; l++) {
            for (uint64_t i = 0; i < runs; i++)
                col[i] = (double)ns[i * mi.n_layers + l] * 1e-9;
            qsort(col, runs, sizeof(double), cmp_double);
            layer_min[l] = col[0];
            layer_med[l] = col[runs / 2];
        }
        free(ns), free(col);
    }
    bnn_context_free(ctx);

    /* Throughput: a batch big enough for about 50 ms on one thread. */
    if (batch == 0) {
        double b = 0.05 / lat_med;
        batch = b < 64 ? 64 : b > 65536 ? 65536 : (uint64_t)b;
        batch = (batch + threads - 1) / threads * threads;
    }
    uint8_t *images = malloc(batch * ib);
    for (uint64_t i = 0; i < batch; i++)
        memcpy(images + i * ib, pool + (i % POOL) * ib, ib);
    struct throughput one = measure_batch(m, images, batch, 1, 0.5);
    struct throughput all = measure_batch(m, images, batch, (int)threads, 0.5);
    const double macs = (double)mi.binary_macs, imacs = (double)mi.integer_macs;

    if (json) {
        printf("{\"model\": \"%s\", \"kernels\": \"%s\", \"binary_macs\": %" PRIu64 ", \"integer_macs\": %" PRIu64
               ", \"runs\": %" PRIu64 ", \"latency_us\": {\"min\": %.3f, \"median\": %.3f, \"p99\": %.3f}, "
               "\"batch\": %" PRIu64 ", \"throughput\": [",
               model_path, bnn_kernel_name(), mi.binary_macs, mi.integer_macs, runs, lat_min * 1e6, lat_med * 1e6,
               lat_p99 * 1e6, batch);
        struct throughput t[2] = {one, all};
        for (int i = 0; i < 2; i++)
            printf("%s{\"threads\": %d, \"images_per_s\": %.1f, \"binary_gmacs\": %.2f, "
                   "\"images_per_cpu_s\": %.1f}",
                   i ? ", " : "", t[i].threads, t[i].images_per_s, t[i].images_per_s * macs * 1e-9,
                   t[i].images_per_cpu_s);
        printf("]");
        if (layer_min) {
            printf(", \"layers\": [");
            for (uint32_t i = 0; i < mi.n_layers; i++) {
                bnn_layer_info L;
                bnn_model_get_layer(m, i, &L);
                printf("%s{\"kind\": \"%s\", \"binary_macs\": %" PRIu64 ", \"integer_macs\": %" PRIu64
                       ", \"min_us\": %.3f, \"median_us\": %.3f}",
                       i ? ", " : "", bnn_layer_kind_name(L.kind), L.binary_macs, L.integer_macs,
                       layer_min[i] * 1e6, layer_med[i] * 1e6);
            }
            printf("]");
        }
        printf("}\n");
    } else {
        char a[32], b[32];
        printf("model       %s: %s binary + %s 8-bit MACs per image, %s kernels\n", model_path,
               grouped(mi.binary_macs, a), grouped((uint64_t)imacs, b), bnn_kernel_name());
        printf("latency     batch 1, 1 thread, %" PRIu64 " runs: min %.2f us, median %.2f us, p99 %.2f us "
               "(%s images/s at the median)\n",
               runs, lat_min * 1e6, lat_med * 1e6, lat_p99 * 1e6, grouped((uint64_t)(1.0 / lat_med), a));
        struct throughput t[2] = {one, all};
        for (int i = 0; i < 2; i++)
            printf("throughput  batch %" PRIu64 ", %d thread%s: %s images/s, %.1f G binary-MAC/s "
                   "(%s images per CPU-second)\n",
                   batch, t[i].threads, t[i].threads == 1 ? "" : "s", grouped((uint64_t)t[i].images_per_s, a),
                   t[i].images_per_s * macs * 1e-9, grouped((uint64_t)t[i].images_per_cpu_s, b));
        if (layer_min) {
            printf("layers      batch 1, %" PRIu64 " runs (timer overhead included):\n", runs);
            printf("   # kind          input         output            min us  median us  G-MAC/s at min\n");
            for (uint32_t i = 0; i < mi.n_layers; i++) {
                bnn_layer_info L;
                bnn_model_get_layer(m, i, &L);
                double lm = (double)(L.binary_macs + L.integer_macs), us = layer_min[i] * 1e6;
                char in[24], out[24];
                snprintf(in, sizeof(in), "%ux%ux%u", L.in_h, L.in_w, L.in_c);
                snprintf(out, sizeof(out), "%ux%ux%u", L.out_h, L.out_w, L.out_c);
                printf("  %2u %-12s  %-12s  %-12s  %9.2f  %9.2f", i + 1, bnn_layer_kind_name(L.kind), in, out, us,
                       layer_med[i] * 1e6);
                if (lm > 0 && us > 0)
                    printf("  %7.1f %s", lm / (us * 1e3), L.binary_macs ? "binary" : "8-bit");
                printf("\n");
            }
        }
    }
    free(layer_min), free(layer_med), free(lat), free(images), free(pool);
    bnn_model_free(m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage_error("no command");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf(PROG " (bnncpu %s, model format %d.%d)\n", bnn_version(), BNN_FORMAT_MAJOR, BNN_FORMAT_MINOR);
        return 0;
    }
    if (!strcmp(cmd, "info"))
        return cmd_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 2, argv + 2);
    usage_error("unknown command '%s'", cmd);
}
