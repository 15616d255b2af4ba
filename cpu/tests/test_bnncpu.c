/*
 * bnncpu's tests: every kernel set the CPU has against the naive reference
 * (naive.c) on the real architectures and on random awkward ones, the
 * label-select tie rule, every reader error, thread counts, and the kernel
 * selection under BNNCPU_DISABLE.
 *
 *   test-bnncpu [--quick] [--sanitize] [--digest FILE] [--expect-digest FILE]
 *
 * --digest writes a hash of the engine's outputs on a fixed set of models and
 * images; --expect-digest compares against one (the cross builds must give
 * the x86 digest). --quick and --sanitize run fewer random models.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bnncpu.h"
#include "internal.h"
#include "modelgen.h"
#include "naive.h"

static int g_failures, g_checks;

/* The test binary is linked with -Wl,--wrap for the allocator, so every
 * allocation the library makes passes through here and can be counted. */
void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
int __real_posix_memalign(void **p, size_t align, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
int __wrap_posix_memalign(void **p, size_t align, size_t size);
static long g_allocations;

void *__wrap_malloc(size_t size)
{
    g_allocations++;
    return __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
    g_allocations++;
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size)
{
    g_allocations++;
    return __real_realloc(p, size);
}

int __wrap_posix_memalign(void **p, size_t align, size_t size)
{
    g_allocations++;
    return __real_posix_memalign(p, align, size);
}

static void check(int ok, const char *file, int line, const char *fmt, ...)
{
    g_checks++;
    if (ok)
        return;
    g_failures++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (g_failures > 50) {
        fprintf(stderr, "too many failures\n");
        exit(1);
    }
}
#define CHECK(cond, ...) check(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

static const struct bnn_kernels *g_sets[8];
static size_t g_n_sets;

static uint8_t *random_images(gen_rng *r, size_t n, uint32_t image_bytes, uint32_t max_value)
{
    uint8_t *img = malloc(n * image_bytes);
    for (size_t i = 0; i < n * image_bytes; i++)
        img[i] = (uint8_t)(gen_next(r) % (max_value + 1));
    return img;
}

static bnn_model *load(const uint8_t *file, size_t size, const char *what)
{
    bnn_model *m = NULL;
    char err[256];
    int st = bnn_model_load_memory(file, size, &m, err, sizeof(err));
    CHECK(st == BNN_OK, "%s: load failed (%d): %s", what, st, err);
    return m;
}

/* Runs n images with every kernel set and checks them against the naive
 * reference on the first n_naive (the reference is slow on CNV). */
static void against_naive(const uint8_t *file, size_t size, const uint8_t *images, size_t n, size_t n_naive,
                          const char *what)
{
    bnn_model *m = load(file, size, what);
    if (!m)
        return;
    bnn_model_info info;
    bnn_model_get_info(m, &info);
    const size_t ib = (size_t)info.in_c * info.in_h * info.in_w, nc = info.n_classes;
    int32_t *ref_cls = malloc(n * sizeof(int32_t)), *ref_sc = malloc(n * nc * sizeof(int32_t));
    int32_t *cls = malloc(n * sizeof(int32_t)), *sc = malloc(n * nc * sizeof(int32_t));
    for (size_t i = 0; i < n_naive && i < n; i++)
        CHECK(naive_run(file, size, images + i * ib, &ref_cls[i], ref_sc + i * nc) == 0, "%s: naive ran", what);
    for (size_t s = 0; s < g_n_sets; s++) {
        bnn_model_use_kernels(m, g_sets[s]);
        bnn_context *ctx = bnn_context_new(m);
        CHECK(ctx != NULL, "%s: context", what);
        if (!ctx)
            continue;
        CHECK(bnn_context_run(ctx, images, n, cls, sc) == BNN_OK, "%s: run", what);
        for (size_t i = 0; i < n; i++) {
            if (i >= n_naive) {
                /* Past the naive images, the scalar set is the reference. */
                if (s == 0) {
                    ref_cls[i] = cls[i];
                    memcpy(ref_sc + i * nc, sc + i * nc, nc * sizeof(int32_t));
                }
            }
            int same = cls[i] == ref_cls[i] && !memcmp(sc + i * nc, ref_sc + i * nc, nc * sizeof(int32_t));
            CHECK(same, "%s: kernels %s, image %zu: class %d (reference %d), score[0] %d (reference %d)", what,
                  g_sets[s]->name, i, cls[i], ref_cls[i], sc[i * nc], ref_sc[i * nc]);
            if (!same)
                break;
        }
        bnn_context_free(ctx);
    }
    bnn_model_free(m);
    free(ref_cls), free(ref_sc), free(cls), free(sc);
}

static void test_crc(void)
{
    const char *s = "123456789";
    CHECK(bnn_crc32((const uint8_t *)s, 9, SIZE_MAX) == 0xCBF43926u, "CRC-32 check value");
    /* The library's table-driven CRC with the field skipped equals the
     * generator's bitwise one. */
    gen_rng r = {7};
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)gen_next(&r);
    gen_fix_crc(buf, sizeof(buf));
    CHECK(bnn_crc32(buf, sizeof(buf), 24) == gen_get32(buf + 24), "CRC-32 with the field as zero");
}

/* BNNCPU_DISABLE's parsing, on its own: names, "all", and names it must not
 * mistake for features. */
static void test_feature_names(void)
{
    const struct {
        const char *setting;
        unsigned want;
    } cases[] = {
        {NULL, 0},
        {"", 0},
        {"avx512", BNN_CPU_AVX512},
        {"avx2", BNN_CPU_AVX2},
        {"popcnt", BNN_CPU_POPCNT},
        {"neon", BNN_CPU_NEON},
        {"avx2,neon", BNN_CPU_AVX2 | BNN_CPU_NEON},
        {"avx512,avx2,popcnt", BNN_CPU_AVX512 | BNN_CPU_AVX2 | BNN_CPU_POPCNT},
        {"all", ~0u},
        {"neon,all", ~0u},
        {"avx", 0},
        {"avx2x", 0},
        {"sse,,popcnt,", BNN_CPU_POPCNT},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned got = bnn_features_named(cases[i].setting);
        CHECK(got == cases[i].want, "BNNCPU_DISABLE=%s names %#x, expected %#x",
              cases[i].setting ? cases[i].setting : "(unset)", got, cases[i].want);
    }
}

/* Selection and listing against the library's table of kernel sets, so the
 * rules (which features a set needs, which set ranks above which) live there
 * alone. */
static void test_selection(void)
{
    const struct bnn_kernel_set *sets;
    size_t n_sets = bnn_kernel_sets(&sets);
    const char *env = getenv("BNNCPU_DISABLE");
    unsigned have = bnn_detect_features(), on = have & ~bnn_features_named(env);
    const char *expect = NULL;
    size_t n_listed = 0;
    for (size_t s = 0; s < n_sets; s++) {
        if ((sets[s].needs & have) != sets[s].needs)
            continue;
        CHECK(n_listed < g_n_sets && g_sets[n_listed] == sets[s].kernels,
              "available set %zu is not %s, the table's next set this CPU has", n_listed, sets[s].kernels->name);
        n_listed++;
        if ((sets[s].needs & on) == sets[s].needs)
            expect = sets[s].kernels->name;
    }
    CHECK(n_listed == g_n_sets, "%zu sets listed as available, the table gives %zu", g_n_sets, n_listed);
    CHECK(n_sets > 0 && sets[0].needs == 0, "the first (fallback) set needs no feature");
    CHECK(expect && !strcmp(bnn_kernel_name(), expect), "BNNCPU_DISABLE=%s: kernels %s, expected %s",
          env ? env : "", bnn_kernel_name(), expect ? expect : "none");
    CHECK(bnn_cpu_features() == on, "BNNCPU_DISABLE=%s: features %#x reported, expected %#x", env ? env : "",
          bnn_cpu_features(), on);
    printf("kernels: %s (available:", bnn_kernel_name());
    for (size_t s = 0; s < g_n_sets; s++)
        printf(" %s", g_sets[s]->name);
    printf(")\n");
}

static void test_architectures(int quick)
{
    static const char *names[] = {"digits", "tfc", "sfc", "lfc", "cnv"};
    for (size_t a = 0; a < 5; a++) {
        struct gen_model g;
        gen_arch(&g, names[a]);
        size_t size;
        uint8_t *file = gen_write(&g, 1000 + a, &size);
        gen_rng r = {a};
        int cnv = !strcmp(names[a], "cnv");
        size_t n = cnv ? (quick ? 2 : 6) : (quick ? 8 : 32), n_naive = cnv ? 1 : n;
        uint8_t *images = random_images(&r, n, gen_image_bytes(&g), a == 0 ? 16 : 255);
        against_naive(file, size, images, n, n_naive, names[a]);

        bnn_model *m = load(file, size, names[a]);
        if (m) {
            bnn_model_info info;
            bnn_model_get_info(m, &info);
            uint64_t macs = 0, imacs = 0;
            for (uint32_t i = 0; i < g.n_layers; i++) {
                const struct gen_layer *L = &g.layers[i];
                if (L->kind == BNN_LAYER_MVAU) {
                    uint64_t v = (uint64_t)L->out_h * L->out_w * L->out_c * L->kernel * L->kernel * L->in_c;
                    *(L->in_type == BNN_TYPE_BITS ? &macs : &imacs) += v;
                }
            }
            CHECK(info.binary_macs == macs && info.integer_macs == imacs, "%s: MAC counts", names[a]);
            if (!strcmp(names[a], "tfc"))
                CHECK(info.binary_macs == 784 * 64 + 2 * 64 * 64 + 64 * 10, "tfc binary MACs");
            if (cnv)
                CHECK(info.integer_macs == 30 * 30 * 64 * 27, "cnv 8-bit MACs");
            bnn_model_free(m);
        }
        free(images);
        free(file);
    }
}

static void test_random_models(size_t count)
{
    gen_rng r = {42};
    for (size_t t = 0; t < count; t++) {
        struct gen_model g;
        gen_random_arch(&g, &r);
        size_t size;
        uint8_t *file = gen_write(&g, gen_next(&r), &size);
        uint8_t *images = random_images(&r, 3, gen_image_bytes(&g), 255);
        char what[64];
        snprintf(what, sizeof(what), "random model %zu", t);
        against_naive(file, size, images, 3, 3, what);
        free(images);
        free(file);
    }
}

/* Single layers of chosen awkward shapes: K not a multiple of 64, one output,
 * odd channel counts, stride 2, kernel = whole input, stride past the kernel. */
static void test_shapes(void)
{
    struct {
        uint32_t c, h, w, first, k, s, out_c;
    } cases[] = {
        {1, 1, 1, 1, 1, 1, 1},     {1, 8, 8, 1, 3, 2, 65},   {3, 9, 9, 2, 3, 2, 17},  {1, 5, 5, 1, 5, 1, 1},
        {3, 6, 6, 2, 6, 1, 100},   {2, 7, 7, 0, 2, 3, 9},    {1, 28, 28, 1, 1, 1, 63}, {3, 4, 4, 3, 1, 1, 31},
        {1, 12, 12, 1, 4, 4, 129}, {3, 32, 32, 3, 3, 1, 64}, {1, 2, 2, 0, 1, 1, 200},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct gen_model g;
        gen_start(&g, cases[i].c, cases[i].h, cases[i].w, BNN_ORDER_HWC, BNN_DATASET_NONE, 0);
        if (cases[i].first == 1)
            gen_threshold(&g, BNN_TYPE_BITS, 1, 0);
        else if (cases[i].first == 2)
            gen_threshold(&g, BNN_TYPE_INT8, 7, -3);
        else if (cases[i].first == 3)
            gen_threshold(&g, BNN_TYPE_INT8, 255, -128);
        gen_mvau(&g, cases[i].k, cases[i].s, cases[i].out_c, 0);
        if (g.type == BNN_TYPE_BITS && g.h > 1 && g.w > 1) {
            gen_maxpool(&g, 2, 1);
            gen_mvau(&g, 1, 1, 67, 0);
        }
        gen_fc(&g, 10, 1);
        gen_label_select(&g);
        size_t size;
        uint8_t *file = gen_write(&g, 77 + i, &size);
        gen_rng r = {i};
        uint8_t *images = random_images(&r, 4, gen_image_bytes(&g), 255);
        char what[64];
        snprintf(what, sizeof(what), "shape case %zu", i);
        against_naive(file, size, images, 4, 4, what);
        free(images);
        free(file);
    }
}

/* Scores that tie: identical weight rows give identical scores, and the class
 * is the lowest index among the largest. */
static void test_ties(void)
{
    struct gen_model g;
    gen_start(&g, 1, 1, 64, BNN_ORDER_CHW, BNN_DATASET_NONE, 1);
    gen_threshold_fixed(&g, 1);
    gen_mvau(&g, 1, 1, 10, 1);
    gen_label_select(&g);
    size_t size;
    uint8_t *file = gen_write(&g, 5, &size);
    uint8_t *w = file + gen_layer_offset(file, 1) + 64;
    /* Image all ones -> every bit 1; rows of all ones match all 64 bits. */
    const int winners[][3] = {{3, 7, -1}, {0, 9, -1}, {9, -1, -1}, {2, 5, 8}};
    for (size_t t = 0; t < 4; t++) {
        for (int o = 0; o < 10; o++)
            gen_set64(w + 8 * o, 0x00FF00FF00FF00FFull); /* 32 matches */
        for (int i = 0; i < 3 && winners[t][i] >= 0; i++)
            gen_set64(w + 8 * winners[t][i], ~0ull);
        gen_fix_crc(file, size);
        bnn_model *m = load(file, size, "ties");
        if (!m)
            continue;
        uint8_t image[64];
        memset(image, 1, sizeof(image));
        int32_t cls = -1, sc[10];
        CHECK(bnn_run(m, image, 1, &cls, sc, 1) == BNN_OK, "ties: run");
        CHECK(cls == winners[t][0], "tie %zu: class %d, expected the lowest winner %d", t, cls, winners[t][0]);
        CHECK(sc[winners[t][0]] == 64 && sc[1] == (winners[t][1] == 1 ? 64 : 32), "tie %zu: scores", t);
        int32_t ncls;
        int32_t nsc[10];
        naive_run(file, size, image, &ncls, nsc);
        CHECK(ncls == cls, "tie %zu: naive agrees", t);
        bnn_model_free(m);
    }
    /* All equal: class 0. */
    for (int o = 0; o < 10; o++)
        gen_set64(w + 8 * o, 0x0123456789ABCDEFull);
    gen_fix_crc(file, size);
    bnn_model *m = load(file, size, "all tie");
    if (m) {
        uint8_t image[64];
        memset(image, 1, sizeof(image));
        int32_t cls = -1;
        bnn_run(m, image, 1, &cls, NULL, 1);
        CHECK(cls == 0, "all scores equal: class %d, expected 0", cls);
        bnn_model_free(m);
    }
    free(file);
}

static int expect_status(const uint8_t *file, size_t size, int want, const char *what, const char *needle)
{
    bnn_model *m = (bnn_model *)(uintptr_t)1;
    char err[256] = "";
    int st = bnn_model_load_memory(file, size, &m, err, sizeof(err));
    CHECK(st == want, "%s: status %d (%s), expected %d: %s", what, st, bnn_strerror(st), want, err);
    if (st != BNN_OK) {
        CHECK(m == NULL, "%s: model pointer not NULL after a failure", what);
        CHECK(err[0] != '\0' && !strchr(err, '\n'), "%s: one-line message '%s'", what, err);
        if (needle)
            CHECK(strstr(err, needle) != NULL, "%s: message '%s' does not say '%s'", what, err, needle);
    }
    if (st == BNN_OK)
        bnn_model_free(m);
    return st;
}

/* A copy of file with one u32 field changed and the checksum fixed. */
static void patch(const uint8_t *file, size_t size, uint8_t *out, size_t at, uint32_t v)
{
    memcpy(out, file, size);
    gen_set32(out + at, v);
    gen_fix_crc(out, size);
}

/* A model file from raw layer records (used for shapes the generator cannot
 * afford to write, such as a huge K). */
static uint8_t *raw_file(uint32_t c, uint32_t h, uint32_t w, uint32_t order, uint32_t n_classes,
                         const uint32_t (*recs)[14], uint32_t n, const uint32_t *payload_bytes, size_t *size)
{
    size_t total = 64;
    for (uint32_t i = 0; i < n; i++)
        total += (64 + payload_bytes[i] + 7) / 8 * 8;
    uint8_t *f = calloc(1, total);
    memcpy(f, BNN_MAGIC, 8);
    f[8] = 1;
    gen_set32(f + 12, 64);
    gen_set64(f + 16, total);
    gen_set32(f + 28, n);
    gen_set32(f + 32, c), gen_set32(f + 36, h), gen_set32(f + 40, w), gen_set32(f + 44, order);
    gen_set32(f + 48, n_classes);
    size_t off = 64;
    for (uint32_t i = 0; i < n; i++) {
        for (int k = 0; k < 14; k++)
            gen_set32(f + off + 4 * k, recs[i][k]);
        gen_set32(f + off + 4, (uint32_t)((64 + payload_bytes[i] + 7) / 8 * 8));
        off += (64 + payload_bytes[i] + 7) / 8 * 8;
    }
    gen_fix_crc(f, total);
    *size = total;
    return f;
}

static void test_reader_errors(int thorough)
{
    struct gen_model g;
    gen_arch(&g, "digits");
    size_t size;
    uint8_t *file = gen_write(&g, 9, &size);
    uint8_t *bad = malloc(size + 64);
    expect_status(file, size, BNN_OK, "valid digits", NULL);

    /* Truncated at every length. */
    for (size_t len = 0; len < size; len++) {
        char what[64];
        snprintf(what, sizeof(what), "truncated to %zu bytes", len);
        expect_status(file, len, BNN_ERR_TRUNCATED, what, NULL);
    }
    /* Every byte (thorough: every bit) of a small model with every layer kind
     * flipped: refused without a fixed-up checksum; with one it may load (a
     * weight or threshold changed), and then the engine must still agree with
     * the naive reference on every kernel set. */
    {
        struct gen_model gs;
        gen_start(&gs, 3, 6, 6, BNN_ORDER_HWC, BNN_DATASET_NONE, 0);
        gen_threshold(&gs, BNN_TYPE_INT8, 5, -2);
        gen_mvau(&gs, 3, 1, 9, 0);  /* 8-bit conv: 4x4x9 bits */
        gen_mvau(&gs, 2, 1, 17, 0); /* 3x3x17 */
        gen_maxpool(&gs, 2, 1);     /* 2x2x17 */
        gen_fc(&gs, 5, 1);
        gen_label_select(&gs);
        size_t ss;
        uint8_t *small = gen_write(&gs, 11, &ss);
        uint8_t *flip = malloc(ss);
        gen_rng r = {3};
        uint8_t image[108];
        for (size_t i = 0; i < sizeof(image); i++)
            image[i] = (uint8_t)gen_next(&r);
        size_t loaded = 0, tried = 0;
        for (size_t at = 0; at < ss; at++)
            for (int bit = 0; bit < 8; bit++) {
                if (!thorough && bit != (int)(at % 8))
                    continue;
                memcpy(flip, small, ss);
                flip[at] ^= (uint8_t)(1u << bit);
                tried++;
                bnn_model *m = NULL;
                int st = bnn_model_load_memory(flip, ss, &m, NULL, 0);
                CHECK(st != BNN_OK, "byte %zu bit %d flipped without a checksum fix: loaded", at, bit);
                bnn_model_free(m);
                gen_fix_crc(flip, ss);
                m = NULL;
                char err[256];
                st = bnn_model_load_memory(flip, ss, &m, err, sizeof(err));
                if (st == BNN_OK) {
                    bnn_model_free(m);
                    loaded++;
                    char what[64];
                    snprintf(what, sizeof(what), "byte %zu bit %d flipped, checksum fixed", at, bit);
                    against_naive(flip, ss, image, 1, 1, what);
                } else {
                    CHECK(err[0] && !strchr(err, '\n'), "byte %zu: one-line message", at);
                }
            }
        /* Most of the file is weights and thresholds, where any value is valid. */
        CHECK(loaded > tried / 4, "flips in weights and thresholds load: %zu of %zu", loaded, tried);
        for (size_t len = 0; len < ss; len++)
            expect_status(small, len, BNN_ERR_TRUNCATED, "small model truncated", NULL);
        free(flip);
        free(small);
    }

    memcpy(bad, file, size);
    bad[0] = 'X';
    expect_status(bad, size, BNN_ERR_MAGIC, "magic", "magic");
    expect_status((const uint8_t *)"PK\3\4", 4, BNN_ERR_MAGIC, "zip file", NULL);
    patch(file, size, bad, 8, 2);
    expect_status(bad, size, BNN_ERR_VERSION, "major 2", "version");
    patch(file, size, bad, 8, 1 | 1u << 16);
    expect_status(bad, size, BNN_ERR_VERSION, "minor 1", "version");
    patch(file, size, bad, 12, 72);
    expect_status(bad, size, BNN_ERR_VERSION, "header_bytes 72", "header_bytes");
    patch(file, size, bad, 56, 1);
    expect_status(bad, size, BNN_ERR_VERSION, "flags", "flags");

    memcpy(bad, file, size);
    memset(bad + size, 0, 8);
    expect_status(bad, size + 8, BNN_ERR_TOO_LARGE, "8 bytes past file_bytes", "header says");
    memcpy(bad, file, size);
    memset(bad + size, 0, 8);
    gen_set64(bad + 16, size + 8);
    gen_fix_crc(bad, size + 8);
    expect_status(bad, size + 8, BNN_ERR_TOO_LARGE, "8 bytes after the last layer", "after the last layer");
    memcpy(bad, file, size);
    gen_set64(bad + 16, (1ull << 31) + 8);
    expect_status(bad, size, BNN_ERR_TOO_LARGE, "file_bytes past the limit", "limit");
    memcpy(bad, file, size);
    gen_set64(bad + 16, size + 8);
    expect_status(bad, size, BNN_ERR_TRUNCATED, "file_bytes past the end", "header says");

    memcpy(bad, file, size);
    bad[size - 1] ^= 1;
    expect_status(bad, size, BNN_ERR_CHECKSUM, "last byte flipped", "checksum");
    memcpy(bad, file, size);
    bad[25] ^= 0x10;
    expect_status(bad, size, BNN_ERR_CHECKSUM, "crc field flipped", "checksum");

    patch(file, size, bad, 28, 65);
    expect_status(bad, size, BNN_ERR_TOO_LARGE, "65 layers", "limit");
    patch(file, size, bad, 28, 0);
    expect_status(bad, size, BNN_ERR_SHAPE, "0 layers", NULL);
    patch(file, size, bad, 28, 6);
    expect_status(bad, size, BNN_ERR_TRUNCATED, "one layer more than there is", "past the end");
    patch(file, size, bad, 28, 4);
    expect_status(bad, size, BNN_ERR_TOO_LARGE, "one layer less", "after the last layer");
    patch(file, size, bad, 40, 9);
    expect_status(bad, size, BNN_ERR_SHAPE, "image width that does not chain", "layer 1/5");
    patch(file, size, bad, 32, 5000);
    expect_status(bad, size, BNN_ERR_TOO_LARGE, "in_c 5000", "limit");
    patch(file, size, bad, 48, 11);
    expect_status(bad, size, BNN_ERR_SHAPE, "n_classes 11 for 10 scores", "classes");
    patch(file, size, bad, 44, 2);
    expect_status(bad, size, BNN_ERR_SHAPE, "input_order 2", "input_order");
    patch(file, size, bad, 52, 9);
    expect_status(bad, size, BNN_ERR_SHAPE, "dataset 9", "dataset");

    size_t l0 = gen_layer_offset(file, 0), l1 = gen_layer_offset(file, 1), l2 = gen_layer_offset(file, 2);
    size_t l4 = gen_layer_offset(file, 4);
    patch(file, size, bad, l1, 9);
    expect_status(bad, size, BNN_ERR_KIND, "kind 9", "kind 9");
    patch(file, size, bad, l1, 0);
    expect_status(bad, size, BNN_ERR_KIND, "kind 0", NULL);
    patch(file, size, bad, l1 + 4, gen_get32(file + l1 + 4) + 4);
    expect_status(bad, size, BNN_ERR_SHAPE, "record_bytes not a multiple of 8", "record_bytes");
    patch(file, size, bad, l1 + 4, gen_get32(file + l1 + 4) - 8);
    expect_status(bad, size, BNN_ERR_TRUNCATED, "record 8 bytes short", "layer 2/5");
    patch(file, size, bad, l1 + 4, 32);
    expect_status(bad, size, BNN_ERR_SHAPE, "record_bytes 32", "record_bytes");
    patch(file, size, bad, l1 + 4, 0x7FFFFFF8);
    expect_status(bad, size, BNN_ERR_TRUNCATED, "record_bytes past the end", "past the end");
    patch(file, size, bad, l2 + 16, 300);
    expect_status(bad, size, BNN_ERR_TRUNCATED, "in_c changes the payload size", "payload needs");
    patch(file, size, bad, l2 + 28, 200);
    expect_status(bad, size, BNN_ERR_TOO_LARGE, "out_c shrinks the payload", "payload needs");
    patch(file, size, bad, l0 + 48, 0);
    expect_status(bad, size, BNN_ERR_SHAPE, "THRESHOLD with 0 thresholds", "thresholds");
    patch(file, size, bad, l0 + 48, 256);
    expect_status(bad, size, BNN_ERR_SHAPE, "THRESHOLD with 256 thresholds", "thresholds");
    patch(file, size, bad, l0 + 52, 1);
    expect_status(bad, size, BNN_ERR_SHAPE, "bits THRESHOLD with act_val 1", "act_val");
    patch(file, size, bad, l0 + 52, (uint32_t)-1);
    expect_status(bad, size, BNN_ERR_SHAPE, "bits THRESHOLD with act_val -1", "act_val");
    patch(file, size, bad, l0 + 44, BNN_TYPE_INT32);
    expect_status(bad, size, BNN_ERR_SHAPE, "THRESHOLD to int32", "THRESHOLD");
    patch(file, size, bad, l1 + 52, 3);
    expect_status(bad, size, BNN_ERR_SHAPE, "MVAU with act_val", "act_val");
    patch(file, size, bad, l1 + 56, 3);
    expect_status(bad, size, BNN_ERR_SHAPE, "reserved field", "reserved");
    patch(file, size, bad, l1 + 32, 2);
    expect_status(bad, size, BNN_ERR_SHAPE, "kernel 2 on a 1x1 input", "kernel");
    patch(file, size, bad, l1 + 36, 0);
    expect_status(bad, size, BNN_ERR_SHAPE, "stride 0", "stride");
    patch(file, size, bad, l1 + 28, 5000);
    expect_status(bad, size, BNN_ERR_TOO_LARGE, "out_c 5000", "limit");
    patch(file, size, bad, l1 + 48, 0);
    expect_status(bad, size, BNN_ERR_SHAPE, "bits MVAU with 0 thresholds", "thresholds");
    patch(file, size, bad, l4 + 8, 2);
    expect_status(bad, size, BNN_ERR_SHAPE, "LABEL_SELECT on 2x1", NULL);
    patch(file, size, bad, l4 + 16, 11);
    expect_status(bad, size, BNN_ERR_SHAPE, "LABEL_SELECT input that does not chain", "does not match");
    patch(file, size, bad, l4, BNN_LAYER_MAXPOOL);
    expect_status(bad, size, BNN_ERR_SHAPE, "no LABEL_SELECT at the end", NULL);
    /* Two layers exchanging places: the grammar. */
    patch(file, size, bad, l1, BNN_LAYER_THRESHOLD);
    expect_status(bad, size, BNN_ERR_SHAPE, "THRESHOLD in the middle", NULL);

    /* Weight bits past K (64 -> 256 has K = 64: make the 1/5 layer K 63 by
     * editing a 1x1 model instead). */
    {
        struct gen_model g2;
        gen_start(&g2, 1, 1, 63, BNN_ORDER_CHW, BNN_DATASET_NONE, 1);
        gen_threshold(&g2, BNN_TYPE_BITS, 1, 0);
        gen_mvau(&g2, 1, 1, 10, 1);
        gen_label_select(&g2);
        size_t s2;
        uint8_t *f2 = gen_write(&g2, 1, &s2);
        expect_status(f2, s2, BNN_OK, "K = 63", NULL);
        size_t w = gen_layer_offset(f2, 1) + 64 + 8 * 3;
        f2[w + 7] |= 0x80; /* bit 63 of row 3 */
        gen_fix_crc(f2, s2);
        expect_status(f2, s2, BNN_ERR_SHAPE, "weight bit past K", "past K");
        free(f2);
    }
    /* Nonzero padding after a payload that is not a multiple of 8: a 1x1x3
     * THRESHOLD has 12 bytes of thresholds and 4 of padding. */
    {
        struct gen_model g3;
        gen_start(&g3, 3, 1, 1, BNN_ORDER_HWC, BNN_DATASET_NONE, 0);
        gen_threshold(&g3, BNN_TYPE_BITS, 1, 0);
        gen_mvau(&g3, 1, 1, 2, 1);
        gen_label_select(&g3);
        size_t s3;
        uint8_t *f3 = gen_write(&g3, 1, &s3);
        expect_status(f3, s3, BNN_OK, "1x1x3", NULL);
        f3[64 + 64 + 12] = 1;
        gen_fix_crc(f3, s3);
        expect_status(f3, s3, BNN_ERR_SHAPE, "nonzero padding", "padding");
        free(f3);
    }
    /* CHW order with a spatial multi-channel first layer has no meaning. */
    {
        struct gen_model g4;
        gen_start(&g4, 3, 4, 4, BNN_ORDER_HWC, BNN_DATASET_NONE, 0);
        gen_threshold(&g4, BNN_TYPE_BITS, 1, 0);
        gen_fc(&g4, 2, 1);
        gen_label_select(&g4);
        size_t s4;
        uint8_t *f4 = gen_write(&g4, 1, &s4);
        expect_status(f4, s4, BNN_OK, "HWC 3x4x4", NULL);
        gen_set32(f4 + 44, BNN_ORDER_CHW);
        gen_fix_crc(f4, s4);
        expect_status(f4, s4, BNN_ERR_SHAPE, "CHW with a spatial 3-channel first layer", "CHW");
        free(f4);
    }
    /* Shapes the generator cannot afford to write. */
    {
        /* MVAU 17x17x4096 bits, kernel 17: K = 1,183,744 > 2^20. */
        const uint32_t recs[][14] = {
            {BNN_LAYER_THRESHOLD, 0, 17, 17, 4096, 17, 17, 4096, 1, 1, BNN_TYPE_UINT8, BNN_TYPE_BITS, 1, 0},
            {BNN_LAYER_MVAU, 0, 17, 17, 4096, 1, 1, 10, 17, 1, BNN_TYPE_BITS, BNN_TYPE_INT32, 0, 0},
            {BNN_LAYER_LABEL_SELECT, 0, 1, 1, 10, 1, 1, 1, 1, 1, BNN_TYPE_INT32, BNN_TYPE_CLASS, 0, 0},
        };
        const uint32_t payload[] = {4096 * 4, 0, 0};
        size_t s5;
        uint8_t *f5 = raw_file(4096, 17, 17, BNN_ORDER_HWC, 10, recs, 3, payload, &s5);
        expect_status(f5, s5, BNN_ERR_TOO_LARGE, "K past BNN_MAX_K", "K =");
        free(f5);
    }
    {
        /* A 64x4096x4096 image (1 GiB) through tiny layers: refused before
         * anything is allocated. */
        const uint32_t recs[][14] = {
            {BNN_LAYER_THRESHOLD, 0, 4096, 4096, 64, 4096, 4096, 64, 1, 1, BNN_TYPE_UINT8, BNN_TYPE_BITS, 1, 0},
            {BNN_LAYER_MVAU, 0, 4096, 4096, 64, 4096, 4096, 8, 1, 1, BNN_TYPE_BITS, BNN_TYPE_BITS, 1, 0},
            {BNN_LAYER_MAXPOOL, 0, 4096, 4096, 8, 1, 1, 8, 4096, 1, BNN_TYPE_BITS, BNN_TYPE_BITS, 0, 0},
            {BNN_LAYER_MVAU, 0, 1, 1, 8, 1, 1, 10, 1, 1, BNN_TYPE_BITS, BNN_TYPE_INT32, 0, 0},
            {BNN_LAYER_LABEL_SELECT, 0, 1, 1, 10, 1, 1, 1, 1, 1, BNN_TYPE_INT32, BNN_TYPE_CLASS, 0, 0},
        };
        const uint32_t payload[] = {64 * 4, 8 * 8 + 8 * 4, 0, 10 * 8, 0};
        size_t s6;
        uint8_t *f6 = raw_file(64, 4096, 4096, BNN_ORDER_HWC, 10, recs, 5, payload, &s6);
        expect_status(f6, s6, BNN_ERR_TOO_LARGE, "a 1 GiB image", "limit");
        free(f6);
    }
    {
        /* A MAXPOOL straight after THRESHOLD breaks the grammar. */
        const uint32_t recs[][14] = {
            {BNN_LAYER_THRESHOLD, 0, 2, 2, 1, 2, 2, 1, 1, 1, BNN_TYPE_UINT8, BNN_TYPE_BITS, 1, 0},
            {BNN_LAYER_MAXPOOL, 0, 2, 2, 1, 1, 1, 1, 2, 2, BNN_TYPE_BITS, BNN_TYPE_BITS, 0, 0},
            {BNN_LAYER_MVAU, 0, 1, 1, 1, 1, 1, 2, 1, 1, BNN_TYPE_BITS, BNN_TYPE_INT32, 0, 0},
            {BNN_LAYER_LABEL_SELECT, 0, 1, 1, 2, 1, 1, 1, 1, 1, BNN_TYPE_INT32, BNN_TYPE_CLASS, 0, 0},
        };
        const uint32_t payload[] = {4, 0, 16, 0};
        size_t s7;
        uint8_t *f7 = raw_file(1, 2, 2, BNN_ORDER_CHW, 2, recs, 4, payload, &s7);
        expect_status(f7, s7, BNN_ERR_SHAPE, "MAXPOOL after THRESHOLD", "MVAU must come between");
        /* The same with the MAXPOOL's output size wrong. */
        free(f7);
    }

    bnn_model *m = NULL;
    char err[256];
    CHECK(bnn_model_load_file("/nonexistent/model.bnn", &m, err, sizeof(err)) == BNN_ERR_IO && m == NULL,
          "missing file");
    CHECK(strstr(err, "/nonexistent/model.bnn") != NULL, "missing file message names the path: %s", err);
    CHECK(bnn_model_load_memory(NULL, 10, &m, NULL, 0) == BNN_ERR_ARG, "NULL data");
    CHECK(bnn_model_load_memory(file, size, NULL, NULL, 0) == BNN_ERR_ARG, "NULL out");
    CHECK(bnn_run(NULL, NULL, 0, NULL, NULL, 1) == BNN_ERR_ARG, "bnn_run without a model");
    CHECK(bnn_context_run(NULL, NULL, 0, NULL, NULL) == BNN_ERR_ARG, "bnn_context_run without a context");
    CHECK(!strcmp(bnn_strerror(BNN_ERR_CHECKSUM), "checksum mismatch"), "strerror");
    free(bad);
    free(file);
}

static void test_threads(void)
{
    static const char *names[] = {"tfc", "cnv"};
    for (int a = 0; a < 2; a++) {
        struct gen_model g;
        gen_arch(&g, names[a]);
        size_t size;
        uint8_t *file = gen_write(&g, 31, &size);
        bnn_model *m = load(file, size, names[a]);
        size_t n = a ? 7 : 37;
        gen_rng r = {8};
        uint8_t *images = random_images(&r, n, gen_image_bytes(&g), 255);
        int32_t *c1 = malloc(n * 4), *s1 = malloc(n * 40), *c2 = malloc(n * 4), *s2 = malloc(n * 40);
        bnn_context *ctx = bnn_context_new(m);
        bnn_context_run(ctx, images, n, c1, s1);
        bnn_context_free(ctx);
        for (int t = 0; t <= 5; t++) {
            memset(c2, 0xFF, n * 4);
            CHECK(bnn_run(m, images, n, c2, s2, t) == BNN_OK, "%s: bnn_run with %d threads", names[a], t);
            CHECK(!memcmp(c1, c2, n * 4) && !memcmp(s1, s2, n * 40), "%s: %d threads differ from one context",
                  names[a], t);
        }
        CHECK(bnn_run(m, images, n, c2, NULL, 64) == BNN_OK && !memcmp(c1, c2, n * 4), "more threads than images");
        CHECK(bnn_run(m, images, n, c2, s2, -1) == BNN_ERR_ARG, "negative thread count");
        uint64_t ns[64] = {0};
        ctx = bnn_context_new(m);
        CHECK(bnn_context_run_timed(ctx, images, 1, c2, NULL, ns) == BNN_OK && c2[0] == c1[0], "timed run");
        bnn_context_free(ctx);
        free(c1), free(s1), free(c2), free(s2), free(images), free(file);
        bnn_model_free(m);
    }
}

/* bnn_context_run allocates nothing: the context holds every buffer. */
static void test_no_allocation(void)
{
    static const char *names[] = {"tfc", "cnv", "digits"};
    for (int a = 0; a < 3; a++) {
        struct gen_model g;
        gen_arch(&g, names[a]);
        size_t size;
        uint8_t *file = gen_write(&g, 3, &size);
        long before = g_allocations;
        bnn_model *m = load(file, size, names[a]);
        CHECK(g_allocations > before, "%s: the allocator wrapper counts the library's allocations", names[a]);
        gen_rng r = {4};
        uint8_t *images = random_images(&r, 4, gen_image_bytes(&g), 255);
        int32_t cls[4], sc[40];
        for (size_t s = 0; s < g_n_sets; s++) {
            bnn_model_use_kernels(m, g_sets[s]);
            bnn_context *ctx = bnn_context_new(m);
            before = g_allocations;
            bnn_context_run(ctx, images, 1, cls, NULL);
            bnn_context_run(ctx, images, 4, cls, sc);
            CHECK(g_allocations == before, "%s, %s kernels: bnn_context_run allocated %ld times", names[a],
                  g_sets[s]->name, g_allocations - before);
            bnn_context_free(ctx);
        }
        bnn_model_free(m);
        free(images);
        free(file);
    }
}

/* FNV-1a over the engine's outputs on fixed models and images: the same on
 * every CPU and kernel set. */
static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001B3ull;
    return h;
}

static uint64_t output_digest(void)
{
    uint64_t h = 0xCBF29CE484222325ull;
    static const char *names[] = {"digits", "tfc", "sfc", "lfc", "cnv"};
    gen_rng r = {2024};
    for (int t = 0; t < 5 + 40; t++) {
        struct gen_model g;
        if (t < 5)
            gen_arch(&g, names[t]);
        else
            gen_random_arch(&g, &r);
        size_t size;
        uint8_t *file = gen_write(&g, 500 + (uint64_t)t, &size);
        size_t n = t == 4 ? 2 : 4;
        uint8_t *images = random_images(&r, n, gen_image_bytes(&g), t == 0 ? 16 : 255);
        bnn_model *m = load(file, size, "digest model");
        int32_t *cls = malloc(n * 4), *sc = malloc(n * g.n_classes * 4);
        if (m && bnn_run(m, images, n, cls, sc, 1) == BNN_OK) {
            h = fnv(h, cls, n * 4);
            h = fnv(h, sc, n * g.n_classes * 4);
        }
        bnn_model_free(m);
        free(cls), free(sc), free(images), free(file);
    }
    return h;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double lap(const char *what, double t0)
{
    double t = seconds();
    printf("  %-24s %6.2f s\n", what, t - t0);
    return t;
}

int main(int argc, char **argv)
{
    int quick = 0, sanitize = 0;
    const char *digest_out = NULL, *digest_expect = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--sanitize"))
            sanitize = 1;
        else if (!strcmp(argv[i], "--digest") && i + 1 < argc)
            digest_out = argv[++i];
        else if (!strcmp(argv[i], "--expect-digest") && i + 1 < argc)
            digest_expect = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--quick] [--sanitize] [--digest FILE] [--expect-digest FILE]\n", argv[0]);
            return 2;
        }
    }
    g_n_sets = bnn_available_kernels(g_sets, 8);
    double t0 = seconds();
    test_crc();
    test_feature_names();
    test_selection();
    test_ties();
    test_shapes();
    t0 = lap("selection, ties, shapes", t0);
    test_threads();
    test_no_allocation();
    t0 = lap("threads, allocation", t0);
    test_reader_errors(!quick);
    t0 = lap("reader errors", t0);
    test_architectures(quick);
    t0 = lap("architectures", t0);
    test_random_models(quick ? 40 : sanitize ? 100 : 300);
    t0 = lap("random models", t0);

    uint64_t d = output_digest();
    lap("digest", t0);
    printf("digest: %016llx\n", (unsigned long long)d);
    if (digest_out) {
        FILE *f = fopen(digest_out, "w");
        CHECK(f != NULL, "cannot write %s", digest_out);
        if (f) {
            fprintf(f, "%016llx\n", (unsigned long long)d);
            fclose(f);
        }
    }
    if (digest_expect) {
        FILE *f = fopen(digest_expect, "r");
        unsigned long long want = 0;
        CHECK(f && fscanf(f, "%llx", &want) == 1, "cannot read %s", digest_expect);
        if (f)
            fclose(f);
        CHECK(want == d, "digest %016llx differs from %016llx in %s", (unsigned long long)d, want, digest_expect);
    }
    printf("%d checks, %d failed (kernels in use: %s)\n", g_checks, g_failures, bnn_kernel_name());
    return g_failures ? 1 : 0;
}
