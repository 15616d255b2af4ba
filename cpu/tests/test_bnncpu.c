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
/* The 3 GiB sparse file of test_file_errors, on 32-bit ARM too. */
#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
    static const char *names[] = {"digits", "tfc", "sfc", "lfc", "cnv", "lenet", "conv1d", "wide"};
    for (size_t a = 0; a < sizeof(names) / sizeof(names[0]); a++) {
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
                    uint64_t v = (uint64_t)L->out_h * L->out_w * L->out_c * L->kernel * L->kernel_w * L->in_c;
                    *(L->in_type == BNN_TYPE_BITS ? &macs : &imacs) += v;
                }
            }
            CHECK(info.binary_macs == macs && info.integer_macs == imacs, "%s: MAC counts", names[a]);
            if (!strcmp(names[a], "tfc"))
                CHECK(info.binary_macs == 784 * 64 + 2 * 64 * 64 + 64 * 10, "tfc binary MACs");
            if (cnv)
                CHECK(info.integer_macs == 30 * 30 * 64 * 27, "cnv 8-bit MACs");
            if (!strcmp(names[a], "lenet")) /* padded 5x5 on 28x28: 28x28 outputs */
                CHECK(info.integer_macs == 28 * 28 * 17 * 25, "lenet 8-bit MACs");
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

/* The first layer of a shape case: 0 none (uint8 into the MVAU), 1 a binary
 * threshold, 2 an int8 threshold with 7 steps, 3 CNV's x - 128. */
static void gen_first_layer(struct gen_model *g, uint32_t first)
{
    if (first == 1)
        gen_threshold(g, BNN_TYPE_BITS, 1, 0);
    else if (first == 2)
        gen_threshold(g, BNN_TYPE_INT8, 7, -3);
    else if (first == 3)
        gen_threshold(g, BNN_TYPE_INT8, 255, -128);
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
        gen_first_layer(&g, cases[i].first);
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

/* Windows of format 1.1, one layer each between a first layer and an FC:
 * kh x kw kernels, separate strides, padding on each side, 1 x W inputs, on
 * bits, int8 (pad byte 128) and uint8 (pad byte 0) inputs; then a 43-class
 * and a 2-class FC over a non-square input. */
/* bnn_model_get_layer reports each layer's window as the file gives it. */
static void check_windows(const uint8_t *file, size_t size, const struct gen_model *g, const char *what)
{
    bnn_model *m = load(file, size, what);
    if (!m)
        return;
    for (uint32_t j = 0; j < g->n_layers; j++) {
        const struct gen_layer *want = &g->layers[j];
        bnn_layer_info L;
        CHECK(bnn_model_get_layer(m, j, &L) == BNN_OK, "%s: layer %u", what, j);
        CHECK(L.kind == want->kind && L.kernel == want->kernel && L.kernel_w == want->kernel_w &&
                  L.stride == want->stride && L.stride_w == want->stride_w &&
                  !memcmp(L.pad, want->pad, sizeof(L.pad)),
              "%s: layer %u window %ux%u/%ux%u pad %u,%u,%u,%u, the file's %ux%u/%ux%u pad %u,%u,%u,%u", what, j,
              L.kernel, L.kernel_w, L.stride, L.stride_w, L.pad[0], L.pad[1], L.pad[2], L.pad[3], want->kernel,
              want->kernel_w, want->stride, want->stride_w, want->pad[0], want->pad[1], want->pad[2], want->pad[3]);
    }
    bnn_model_free(m);
}

static void test_window_shapes(void)
{
    struct {
        uint32_t c, h, w, first, kh, kw, sh, sw, pad[4], out_c, classes;
    } cases[] = {
        {1, 1, 40, 1, 1, 5, 1, 1, {0, 2, 0, 2}, 13, 2},  {1, 1, 33, 2, 1, 7, 1, 2, {0, 3, 0, 3}, 65, 43},
        {2, 1, 17, 0, 1, 3, 1, 3, {0, 1, 0, 0}, 5, 3},   {3, 7, 9, 3, 3, 3, 1, 1, {1, 1, 1, 1}, 64, 10},
        {3, 8, 8, 3, 3, 3, 2, 2, {1, 1, 1, 1}, 17, 43},  {1, 9, 6, 1, 2, 3, 2, 1, {1, 0, 0, 2}, 129, 2},
        {1, 6, 6, 0, 5, 5, 1, 1, {2, 2, 2, 2}, 31, 7},   {1, 5, 12, 1, 5, 1, 1, 1, {4, 0, 4, 0}, 8, 11},
        {3, 11, 4, 2, 4, 2, 3, 1, {3, 1, 0, 1}, 67, 43}, {1, 64, 3, 1, 3, 3, 1, 1, {1, 1, 1, 1}, 200, 2},
        {3, 32, 32, 3, 3, 3, 1, 1, {1, 1, 1, 1}, 64, 10},
        /* windows of 511 words (the most the x86 nibble-split weights take)
         * and of 512 (the plain words then) */
        {448, 1, 76, 1, 1, 73, 1, 1, {0, 0, 0, 0}, 40, 10}, {512, 1, 67, 1, 1, 64, 1, 1, {0, 0, 0, 0}, 40, 10},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct gen_model g;
        gen_start(&g, cases[i].c, cases[i].h, cases[i].w, BNN_ORDER_HWC, BNN_DATASET_NONE, 0);
        gen_first_layer(&g, cases[i].first);
        gen_conv(&g, cases[i].kh, cases[i].kw, cases[i].sh, cases[i].sw, cases[i].pad, cases[i].out_c, 0);
        if (g.w > 3) { /* a padded binary window after it, a (1, 3) one on a 1 x W signal */
            static const uint32_t pad[4] = {0, 1, 0, 1}, pad2[4] = {1, 1, 1, 1};
            if (g.h == 1)
                gen_conv(&g, 1, 3, 1, 1, pad, 9, 0);
            else if (g.h > 2)
                gen_conv(&g, 3, 3, 1, 2, pad2, 9, 0);
        }
        gen_fc(&g, cases[i].classes, 1);
        gen_label_select(&g);
        size_t size;
        uint8_t *file = gen_write(&g, 300 + i, &size);
        gen_rng r = {100 + i};
        uint8_t *images = random_images(&r, 4, gen_image_bytes(&g), 255);
        char what[64];
        snprintf(what, sizeof(what), "window case %zu", i);
        check_windows(file, size, &g, what);
        against_naive(file, size, images, 4, 4, what);
        free(images);
        free(file);
    }
}

/* Layer `layer` (an MVAU of out_c rows of k weights) with every weight 1 (+1)
 * and every threshold t. */
static void saturate_layer(uint8_t *file, size_t size, uint32_t layer, size_t k, uint32_t out_c, int32_t t)
{
    const size_t row_bytes = (k + 63) / 64 * 8;
    uint8_t *w = file + gen_layer_offset(file, layer) + BNN_LAYER_HEADER_BYTES;
    for (uint32_t o = 0; o < out_c; o++) {
        uint8_t *row = w + o * row_bytes;
        memset(row, 0, row_bytes);
        memset(row, 0xFF, k / 8);
        if (k % 8)
            row[k / 8] = (uint8_t)((1u << (k % 8)) - 1);
        gen_set32(w + out_c * row_bytes + 4 * (size_t)o, (uint32_t)t);
    }
    gen_fix_crc(file, size);
}

/* Windows at the extremes of the kernels' narrow counters. Binary: every bit
 * mismatches (weights all ones, input bits all zero, m = K) with a threshold
 * of 1 match. 8-bit: every input 255 and every weight +1, sum = 255 K, with
 * that as the threshold. Either way any miscount flips the output bits. */
static void test_full_windows(void)
{
    static const uint32_t no_pad[4] = {0, 0, 0, 0};
    struct {
        uint32_t c, h, w, kh, kw, bytes;
    } cases[] = {{448, 1, 76, 1, 73, 0}, {512, 1, 67, 1, 64, 0}, {64, 6, 6, 3, 3, 0},  {128, 5, 5, 3, 3, 0},
                 {200, 4, 7, 2, 5, 0},   {128, 3, 3, 1, 1, 1},   {130, 3, 3, 1, 1, 1}, {14, 5, 5, 3, 3, 1},
                 {3, 12, 12, 3, 3, 1},   {5, 9, 9, 5, 5, 1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const uint32_t out_c = 40;
        const size_t k = (size_t)cases[i].kh * cases[i].kw * cases[i].c;
        struct gen_model g;
        gen_start(&g, cases[i].c, cases[i].h, cases[i].w, BNN_ORDER_HWC, BNN_DATASET_NONE, 0);
        if (!cases[i].bytes)
            gen_threshold_fixed(&g, 1);
        gen_conv(&g, cases[i].kh, cases[i].kw, 1, 1, no_pad, out_c, 0);
        gen_fc(&g, 10, 1);
        gen_label_select(&g);
        size_t size;
        uint8_t *file = gen_write(&g, 500 + i, &size);
        saturate_layer(file, size, cases[i].bytes ? 0 : 1, k, out_c, cases[i].bytes ? (int32_t)(255 * k) : 1);
        uint8_t *image = malloc(gen_image_bytes(&g));
        char what[64];
        snprintf(what, sizeof(what), "full window case %zu", i);
        if (image) {
            memset(image, cases[i].bytes ? 255 : 0, gen_image_bytes(&g));
            against_naive(file, size, image, 1, 1, what);
        }
        free(image);
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

/* The valid files the reader's error cases start from. */
enum reader_base {
    DIGITS,         /* the digits architecture: THRESHOLD, 3 MVAUs, LABEL_SELECT */
    ZIP,            /* "PK\3\4": some other format's magic */
    K63,            /* an MVAU with K = 63, so the last bit of each weight row is past K */
    THREE_CHANNELS, /* a 1x1x3 THRESHOLD: 12 bytes of thresholds and 4 of padding */
    HWC_3X4X4,      /* a spatial 3-channel first layer */
    HUGE_K,         /* MVAU 17x17x4096 bits, kernel 17: K = 1,183,744 > 2^20 */
    HUGE_IMAGE,     /* a 64x4096x4096 image (1 GiB) through tiny layers */
    POOL_FIRST,     /* a MAXPOOL straight after THRESHOLD */
    DIGITS_1_0,     /* the digits architecture in format 1.0 (no window fields) */
    PADDED,         /* 1.1: THRESHOLD, padded 3x3 conv, 2x1 MAXPOOL, padded 2x3 conv with strides 1x2, FC */
    N_BASES
};

/* Shapes the generator cannot afford to write, or that break its grammar. */
static uint8_t *raw_base(enum reader_base b, size_t *size)
{
    static const uint32_t huge_k[][14] = {
        {BNN_LAYER_THRESHOLD, 0, 17, 17, 4096, 17, 17, 4096, 1, 1, BNN_TYPE_UINT8, BNN_TYPE_BITS, 1, 0},
        {BNN_LAYER_MVAU, 0, 17, 17, 4096, 1, 1, 10, 17, 1, BNN_TYPE_BITS, BNN_TYPE_INT32, 0, 0},
        {BNN_LAYER_LABEL_SELECT, 0, 1, 1, 10, 1, 1, 1, 1, 1, BNN_TYPE_INT32, BNN_TYPE_CLASS, 0, 0},
    };
    static const uint32_t huge_k_payload[] = {4096 * 4, 0, 0};
    static const uint32_t huge_image[][14] = {
        {BNN_LAYER_THRESHOLD, 0, 4096, 4096, 64, 4096, 4096, 64, 1, 1, BNN_TYPE_UINT8, BNN_TYPE_BITS, 1, 0},
        {BNN_LAYER_MVAU, 0, 4096, 4096, 64, 4096, 4096, 8, 1, 1, BNN_TYPE_BITS, BNN_TYPE_BITS, 1, 0},
        {BNN_LAYER_MAXPOOL, 0, 4096, 4096, 8, 1, 1, 8, 4096, 1, BNN_TYPE_BITS, BNN_TYPE_BITS, 0, 0},
        {BNN_LAYER_MVAU, 0, 1, 1, 8, 1, 1, 10, 1, 1, BNN_TYPE_BITS, BNN_TYPE_INT32, 0, 0},
        {BNN_LAYER_LABEL_SELECT, 0, 1, 1, 10, 1, 1, 1, 1, 1, BNN_TYPE_INT32, BNN_TYPE_CLASS, 0, 0},
    };
    static const uint32_t huge_image_payload[] = {64 * 4, 8 * 8 + 8 * 4, 0, 10 * 8, 0};
    static const uint32_t pool_first[][14] = {
        {BNN_LAYER_THRESHOLD, 0, 2, 2, 1, 2, 2, 1, 1, 1, BNN_TYPE_UINT8, BNN_TYPE_BITS, 1, 0},
        {BNN_LAYER_MAXPOOL, 0, 2, 2, 1, 1, 1, 1, 2, 2, BNN_TYPE_BITS, BNN_TYPE_BITS, 0, 0},
        {BNN_LAYER_MVAU, 0, 1, 1, 1, 1, 1, 2, 1, 1, BNN_TYPE_BITS, BNN_TYPE_INT32, 0, 0},
        {BNN_LAYER_LABEL_SELECT, 0, 1, 1, 2, 1, 1, 1, 1, 1, BNN_TYPE_INT32, BNN_TYPE_CLASS, 0, 0},
    };
    static const uint32_t pool_first_payload[] = {4, 0, 16, 0};
    if (b == HUGE_K)
        return raw_file(4096, 17, 17, BNN_ORDER_HWC, 10, huge_k, 3, huge_k_payload, size);
    if (b == HUGE_IMAGE)
        return raw_file(64, 4096, 4096, BNN_ORDER_HWC, 10, huge_image, 5, huge_image_payload, size);
    return raw_file(1, 2, 2, BNN_ORDER_CHW, 2, pool_first, 4, pool_first_payload, size);
}

static uint8_t *reader_base(enum reader_base b, size_t *size)
{
    struct gen_model g;
    switch (b) {
    case DIGITS:
        gen_arch(&g, "digits");
        return gen_write(&g, 9, size);
    case ZIP: {
        uint8_t *f = malloc(4);
        memcpy(f, "PK\3\4", 4);
        *size = 4;
        return f;
    }
    case K63:
        gen_start(&g, 1, 1, 63, BNN_ORDER_CHW, BNN_DATASET_NONE, 1);
        gen_threshold(&g, BNN_TYPE_BITS, 1, 0);
        gen_mvau(&g, 1, 1, 10, 1);
        break;
    case THREE_CHANNELS:
        gen_start(&g, 3, 1, 1, BNN_ORDER_HWC, BNN_DATASET_NONE, 0);
        gen_threshold(&g, BNN_TYPE_BITS, 1, 0);
        gen_mvau(&g, 1, 1, 2, 1);
        break;
    case HWC_3X4X4:
        gen_start(&g, 3, 4, 4, BNN_ORDER_HWC, BNN_DATASET_NONE, 0);
        gen_threshold(&g, BNN_TYPE_BITS, 1, 0);
        gen_fc(&g, 2, 1);
        break;
    case DIGITS_1_0:
        gen_arch(&g, "digits");
        g.minor = 0, g.minor_set = 1;
        return gen_write(&g, 9, size);
    case PADDED: {
        static const uint32_t pad1[4] = {1, 1, 1, 1}, pad2[4] = {1, 0, 0, 2};
        gen_start(&g, 3, 6, 5, BNN_ORDER_HWC, BNN_DATASET_NONE, 0);
        gen_threshold(&g, BNN_TYPE_INT8, 5, -2);
        gen_conv(&g, 3, 3, 1, 1, pad1, 9, 0); /* 6x5x9 */
        gen_maxpool2(&g, 2, 1, 2, 1);         /* 3x5x9 */
        gen_conv(&g, 2, 3, 1, 2, pad2, 7, 0); /* 3x3x7 */
        gen_fc(&g, 4, 1);
        break;
    }
    default:
        return raw_base(b, size);
    }
    gen_label_select(&g);
    return gen_write(&g, 1, size);
}

/* One change to a file: where (a layer's record, the file header, or counted
 * back from the end) and what. */
enum edit_kind { KEEP, SET8, XOR8, SET32, ADD32, SET64, ADD64, APPEND };
#define HEADER (-1)
#define FROM_END (-2)
struct edit {
    enum edit_kind kind;
    int layer;      /* 0..n-1, HEADER or FROM_END */
    uint32_t at;    /* bytes into the layer's record or the header, or back from the end */
    uint64_t value; /* ADD*: added (wrapping); APPEND: zero bytes added at the end */
};

#define UNCHANGED {{KEEP, HEADER, 0, 0}}
#define FIX_CRC 1
#define AS_IS 0

/* Every file-level error the reader reports: one corruption each, with the
 * status and a word of the message it must give. */
static const struct reader_case {
    const char *what;
    enum reader_base base;
    struct edit edits[2];
    int crc;            /* FIX_CRC: recompute the checksum after the edits */
    int want;
    const char *needle; /* NULL: any one-line message */
} reader_cases[] = {
    {"valid digits", DIGITS, UNCHANGED, AS_IS, BNN_OK, NULL},
    {"magic", DIGITS, {{SET8, HEADER, 0, 'X'}}, AS_IS, BNN_ERR_MAGIC, "magic"},
    {"zip file", ZIP, UNCHANGED, AS_IS, BNN_ERR_MAGIC, NULL},
    {"major 2", DIGITS, {{SET32, HEADER, 8, 2}}, FIX_CRC, BNN_ERR_VERSION, "version"},
    {"minor 2", DIGITS, {{SET32, HEADER, 8, 1 | 2u << 16}}, FIX_CRC, BNN_ERR_VERSION, "version"},
    {"header_bytes 72", DIGITS, {{SET32, HEADER, 12, 72}}, FIX_CRC, BNN_ERR_VERSION, "header_bytes"},
    {"flags", DIGITS, {{SET32, HEADER, 56, 1}}, FIX_CRC, BNN_ERR_VERSION, "flags"},
    {"8 bytes past file_bytes", DIGITS, {{APPEND, HEADER, 0, 8}}, AS_IS, BNN_ERR_TOO_LARGE, "header says"},
    {"8 bytes after the last layer", DIGITS, {{APPEND, HEADER, 0, 8}, {ADD64, HEADER, 16, 8}}, FIX_CRC,
     BNN_ERR_TOO_LARGE, "after the last layer"},
    {"file_bytes past the limit", DIGITS, {{SET64, HEADER, 16, (1ull << 31) + 8}}, AS_IS, BNN_ERR_TOO_LARGE,
     "limit"},
    {"file_bytes past the end", DIGITS, {{ADD64, HEADER, 16, 8}}, AS_IS, BNN_ERR_TRUNCATED, "header says"},
    {"last byte flipped", DIGITS, {{XOR8, FROM_END, 1, 1}}, AS_IS, BNN_ERR_CHECKSUM, "checksum"},
    {"crc field flipped", DIGITS, {{XOR8, HEADER, 25, 0x10}}, AS_IS, BNN_ERR_CHECKSUM, "checksum"},
    {"65 layers", DIGITS, {{SET32, HEADER, 28, 65}}, FIX_CRC, BNN_ERR_TOO_LARGE, "limit"},
    {"0 layers", DIGITS, {{SET32, HEADER, 28, 0}}, FIX_CRC, BNN_ERR_SHAPE, NULL},
    {"one layer more than there is", DIGITS, {{SET32, HEADER, 28, 6}}, FIX_CRC, BNN_ERR_TRUNCATED, "past the end"},
    {"one layer less", DIGITS, {{SET32, HEADER, 28, 4}}, FIX_CRC, BNN_ERR_TOO_LARGE, "after the last layer"},
    {"image width that does not chain", DIGITS, {{SET32, HEADER, 40, 9}}, FIX_CRC, BNN_ERR_SHAPE, "layer 1/5"},
    {"in_c 5000", DIGITS, {{SET32, HEADER, 32, 5000}}, FIX_CRC, BNN_ERR_TOO_LARGE, "limit"},
    {"n_classes 11 for 10 scores", DIGITS, {{SET32, HEADER, 48, 11}}, FIX_CRC, BNN_ERR_SHAPE, "classes"},
    {"input_order 2", DIGITS, {{SET32, HEADER, 44, 2}}, FIX_CRC, BNN_ERR_SHAPE, "input_order"},
    {"dataset 9", DIGITS, {{SET32, HEADER, 52, 9}}, FIX_CRC, BNN_ERR_SHAPE, "dataset"},
    {"kind 9", DIGITS, {{SET32, 1, 0, 9}}, FIX_CRC, BNN_ERR_KIND, "kind 9"},
    {"kind 0", DIGITS, {{SET32, 1, 0, 0}}, FIX_CRC, BNN_ERR_KIND, NULL},
    {"record_bytes not a multiple of 8", DIGITS, {{ADD32, 1, 4, 4}}, FIX_CRC, BNN_ERR_SHAPE, "record_bytes"},
    {"record 8 bytes short", DIGITS, {{ADD32, 1, 4, (uint32_t)-8}}, FIX_CRC, BNN_ERR_TRUNCATED, "layer 2/5"},
    {"record_bytes 32", DIGITS, {{SET32, 1, 4, 32}}, FIX_CRC, BNN_ERR_SHAPE, "record_bytes"},
    {"record_bytes past the end", DIGITS, {{SET32, 1, 4, 0x7FFFFFF8}}, FIX_CRC, BNN_ERR_TRUNCATED, "past the end"},
    {"in_c changes the payload size", DIGITS, {{SET32, 2, 16, 300}}, FIX_CRC, BNN_ERR_TRUNCATED, "payload needs"},
    {"out_c shrinks the payload", DIGITS, {{SET32, 2, 28, 200}}, FIX_CRC, BNN_ERR_TOO_LARGE, "payload needs"},
    {"THRESHOLD with 0 thresholds", DIGITS, {{SET32, 0, 48, 0}}, FIX_CRC, BNN_ERR_SHAPE, "thresholds"},
    {"THRESHOLD with 256 thresholds", DIGITS, {{SET32, 0, 48, 256}}, FIX_CRC, BNN_ERR_SHAPE, "thresholds"},
    {"bits THRESHOLD with act_val 1", DIGITS, {{SET32, 0, 52, 1}}, FIX_CRC, BNN_ERR_SHAPE, "act_val"},
    {"bits THRESHOLD with act_val -1", DIGITS, {{SET32, 0, 52, (uint32_t)-1}}, FIX_CRC, BNN_ERR_SHAPE, "act_val"},
    {"THRESHOLD to int32", DIGITS, {{SET32, 0, 44, BNN_TYPE_INT32}}, FIX_CRC, BNN_ERR_SHAPE, "THRESHOLD"},
    {"MVAU with act_val", DIGITS, {{SET32, 1, 52, 3}}, FIX_CRC, BNN_ERR_SHAPE, "act_val"},
    /* Format 1.0 files load; their window fields are reserved words. */
    {"format 1.0 digits", DIGITS_1_0, UNCHANGED, AS_IS, BNN_OK, NULL},
    {"reserved field of 1.0", DIGITS_1_0, {{SET32, 1, 56, 3}}, FIX_CRC, BNN_ERR_SHAPE, "reserved"},
    {"reserved field of 1.0 (pads)", DIGITS_1_0, {{SET32, 1, 60, 1}}, FIX_CRC, BNN_ERR_SHAPE, "reserved"},
    /* Format 1.1's window fields. */
    {"kernel_w 0", DIGITS, {{SET8, 1, 56, 0}}, FIX_CRC, BNN_ERR_SHAPE, "kernel_w is 0"},
    {"stride_w 0", DIGITS, {{SET8, 1, 58, 0}}, FIX_CRC, BNN_ERR_SHAPE, "stride_w is 0"},
    {"kernel_w 5000", DIGITS, {{SET32, 1, 56, 5000 | 1u << 16}}, FIX_CRC, BNN_ERR_TOO_LARGE, "limit"},
    {"kernel_w 2 on a 1x1 input", DIGITS, {{SET8, 1, 56, 2}}, FIX_CRC, BNN_ERR_SHAPE, "does not fit"},
    {"stride_w 2 on THRESHOLD", DIGITS, {{SET8, 0, 58, 2}}, FIX_CRC, BNN_ERR_SHAPE, "must be 1x1"},
    {"kernel_w 2 on LABEL_SELECT", DIGITS, {{SET8, 4, 56, 2}}, FIX_CRC, BNN_ERR_SHAPE, "must be 1x1"},
    {"padding on THRESHOLD", DIGITS, {{SET8, 0, 60, 1}}, FIX_CRC, BNN_ERR_SHAPE, "only an MVAU"},
    {"padded", PADDED, UNCHANGED, AS_IS, BNN_OK, NULL},
    {"padding on MAXPOOL", PADDED, {{SET8, 2, 61, 1}}, FIX_CRC, BNN_ERR_SHAPE, "only an MVAU"},
    {"pad_top as large as the kernel", PADDED, {{SET8, 1, 60, 3}}, FIX_CRC, BNN_ERR_SHAPE, "not smaller"},
    {"pad_right as large as kernel_w", PADDED, {{SET8, 3, 63, 3}}, FIX_CRC, BNN_ERR_SHAPE, "not smaller"},
    {"padding the stated output does not have", PADDED, {{SET8, 1, 62, 0}}, FIX_CRC, BNN_ERR_SHAPE, "gives"},
    {"stride_w the stated output does not have", PADDED, {{SET8, 3, 58, 1}}, FIX_CRC, BNN_ERR_SHAPE, "gives"},
    {"kernel_w wider than the padded input", PADDED, {{SET8, 3, 56, 9}}, FIX_CRC, BNN_ERR_SHAPE, "does not fit"},
    {"kernel_w changes K and the payload", PADDED, {{SET8, 4, 56, 4}}, FIX_CRC, BNN_ERR_SHAPE, NULL},
    {"kernel 2 on a 1x1 input", DIGITS, {{SET32, 1, 32, 2}}, FIX_CRC, BNN_ERR_SHAPE, "kernel"},
    {"stride 0", DIGITS, {{SET32, 1, 36, 0}}, FIX_CRC, BNN_ERR_SHAPE, "stride"},
    {"out_c 5000", DIGITS, {{SET32, 1, 28, 5000}}, FIX_CRC, BNN_ERR_TOO_LARGE, "limit"},
    {"bits MVAU with 0 thresholds", DIGITS, {{SET32, 1, 48, 0}}, FIX_CRC, BNN_ERR_SHAPE, "thresholds"},
    {"LABEL_SELECT on 2x1", DIGITS, {{SET32, 4, 8, 2}}, FIX_CRC, BNN_ERR_SHAPE, NULL},
    {"LABEL_SELECT input that does not chain", DIGITS, {{SET32, 4, 16, 11}}, FIX_CRC, BNN_ERR_SHAPE,
     "does not match"},
    {"no LABEL_SELECT at the end", DIGITS, {{SET32, 4, 0, BNN_LAYER_MAXPOOL}}, FIX_CRC, BNN_ERR_SHAPE, NULL},
    /* Two layers exchanging places: the grammar. */
    {"THRESHOLD in the middle", DIGITS, {{SET32, 1, 0, BNN_LAYER_THRESHOLD}}, FIX_CRC, BNN_ERR_SHAPE, NULL},
    {"K = 63", K63, UNCHANGED, AS_IS, BNN_OK, NULL},
    /* Bit 63 of row 3. */
    {"weight bit past K", K63, {{XOR8, 1, 64 + 8 * 3 + 7, 0x80}}, FIX_CRC, BNN_ERR_SHAPE, "past K"},
    {"1x1x3", THREE_CHANNELS, UNCHANGED, AS_IS, BNN_OK, NULL},
    {"nonzero padding", THREE_CHANNELS, {{SET8, 0, 64 + 12, 1}}, FIX_CRC, BNN_ERR_SHAPE, "padding"},
    {"HWC 3x4x4", HWC_3X4X4, UNCHANGED, AS_IS, BNN_OK, NULL},
    /* CHW order with a spatial multi-channel first layer has no meaning. */
    {"CHW with a spatial 3-channel first layer", HWC_3X4X4, {{SET32, HEADER, 44, BNN_ORDER_CHW}}, FIX_CRC,
     BNN_ERR_SHAPE, "CHW"},
    {"K past BNN_MAX_K", HUGE_K, UNCHANGED, AS_IS, BNN_ERR_TOO_LARGE, "K ="},
    /* Refused before anything is allocated. */
    {"a 1 GiB image", HUGE_IMAGE, UNCHANGED, AS_IS, BNN_ERR_TOO_LARGE, "limit"},
    {"MAXPOOL after THRESHOLD", POOL_FIRST, UNCHANGED, AS_IS, BNN_ERR_SHAPE, "MVAU must come between"},
};

/* f has room for APPEND's bytes past *size. */
static void apply_edit(uint8_t *f, size_t *size, const struct edit *e)
{
    if (e->kind == APPEND) {
        memset(f + *size, 0, (size_t)e->value);
        *size += (size_t)e->value;
        return;
    }
    size_t at = e->layer == HEADER ? e->at : e->layer == FROM_END ? *size - e->at
                                                                  : gen_layer_offset(f, (uint32_t)e->layer) + e->at;
    uint64_t old64 = e->kind == ADD64 ? gen_get32(f + at) | (uint64_t)gen_get32(f + at + 4) << 32 : 0;
    switch (e->kind) {
    case SET8: f[at] = (uint8_t)e->value; break;
    case XOR8: f[at] ^= (uint8_t)e->value; break;
    case SET32: gen_set32(f + at, (uint32_t)e->value); break;
    case ADD32: gen_set32(f + at, gen_get32(f + at) + (uint32_t)e->value); break;
    case SET64: gen_set64(f + at, e->value); break;
    case ADD64: gen_set64(f + at, old64 + e->value); break;
    default: break;
    }
}

/* The file truncated at every length. */
static void test_truncations(const uint8_t *file, size_t size, const char *what)
{
    for (size_t len = 0; len < size; len++) {
        char msg[96];
        snprintf(msg, sizeof(msg), "%s truncated to %zu bytes", what, len);
        expect_status(file, len, BNN_ERR_TRUNCATED, msg, NULL);
    }
}

/* Every byte (thorough: every bit) of a small model with every layer kind
 * flipped: refused without a fixed-up checksum; with one it may load (a
 * weight or threshold changed), and then the engine must still agree with
 * the naive reference on every kernel set. */
static void test_flips(int thorough)
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
    test_truncations(small, ss, "small model");
    free(flip);
    free(small);
}

/* Errors of the API rather than of a file. */
static void test_argument_errors(const uint8_t *file, size_t size)
{
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
    for (int st = BNN_ERR_IO; st >= BNN_ERR_BUSY; st--)
        CHECK(strcmp(bnn_strerror(st), "unknown status") != 0, "strerror(%d) has no message", st);
}

/* A reader that waits on a FIFO or reads /dev/zero to its end must fail the
 * test, not hang it. */
static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "FAIL: bnn_model_load_file did not return within 20 s\n";
    if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
        _exit(1);
    _exit(1);
}

/* Loads path from disk; checks the status, a word of the message, and that
 * nothing was allocated when the file is refused (nothing read past the
 * header). */
static void expect_file(const char *path, int want, const char *needle, const char *what)
{
    bnn_model *m = (bnn_model *)(uintptr_t)1;
    char err[512] = "";
    long before = g_allocations;
    int st = bnn_model_load_file(path, &m, err, sizeof(err));
    CHECK(st == want, "%s: status %d (%s), expected %d: %s", what, st, bnn_strerror(st), want, err);
    if (st == BNN_OK) {
        bnn_model_free(m);
        return;
    }
    CHECK(m == NULL, "%s: model pointer not NULL after a failure", what);
    CHECK(strstr(err, path) == err && !strchr(err, '\n'), "%s: one line starting with the path: '%s'", what, err);
    CHECK(!needle || strstr(err, needle), "%s: message '%s' does not say '%s'", what, err, needle);
    if (want != BNN_ERR_TRUNCATED)
        CHECK(g_allocations == before, "%s: %ld allocations before refusing it", what, g_allocations - before);
}

static void write_file(const char *path, const uint8_t *data, size_t size, uint64_t sparse_size)
{
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, size, f) == size, "cannot write %s", path);
    if (f && sparse_size)
        CHECK(ftruncate(fileno(f), (off_t)sparse_size) == 0, "cannot extend %s: %s", path, strerror(errno));
    if (f)
        fclose(f);
}

/* bnn_model_load_file on what is not a model file on disk: a FIFO with no
 * writer, a directory, a device, and regular files refused by their header
 * alone (a 3 GiB one is never read). */
static void test_file_errors(const uint8_t *file, size_t size)
{
    const char *tmp = getenv("TMPDIR");
    char dir[512], path[600];
    snprintf(dir, sizeof(dir), "%s/bnncpu-test-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp %s: %s", dir, strerror(errno));
        return;
    }
    signal(SIGALRM, on_alarm);
    alarm(20);

    snprintf(path, sizeof(path), "%s/fifo.bnn", dir);
    CHECK(mkfifo(path, 0600) == 0, "mkfifo %s: %s", path, strerror(errno));
    expect_file(path, BNN_ERR_IO, "a FIFO, not a regular file", "FIFO without a writer");
    unlink(path);
    expect_file(dir, BNN_ERR_IO, "a directory, not a regular file", "directory");
    if (access("/dev/zero", R_OK) == 0)
        expect_file("/dev/zero", BNN_ERR_IO, "a character device, not a regular file", "/dev/zero");

    snprintf(path, sizeof(path), "%s/model.bnn", dir);
    write_file(path, file, size, 0);
    expect_file(path, BNN_OK, NULL, "valid file");
    write_file(path, file, size, size + 8);
    expect_file(path, BNN_ERR_TOO_LARGE, "header says", "8 bytes past its declared size");
    write_file(path, file, size - 8, 0);
    expect_file(path, BNN_ERR_TRUNCATED, "header says", "8 bytes short of its declared size");
    write_file(path, file, 40, 0);
    expect_file(path, BNN_ERR_TRUNCATED, "shorter than the 64-byte header", "40 bytes");
    write_file(path, file, size, 3ull << 30);
    expect_file(path, BNN_ERR_TOO_LARGE, "limit", "a model file extended to 3 GiB");
    write_file(path, (const uint8_t *)"PK\3\4", 4, 3ull << 30);
    expect_file(path, BNN_ERR_MAGIC, "magic", "a 3 GiB file of another format");
    unlink(path);

    alarm(0);
    signal(SIGALRM, SIG_DFL);
    rmdir(dir);
}

static void test_reader_errors(int thorough)
{
    uint8_t *bases[N_BASES];
    size_t sizes[N_BASES];
    for (int b = 0; b < N_BASES; b++)
        bases[b] = reader_base((enum reader_base)b, &sizes[b]);
    for (size_t i = 0; i < sizeof(reader_cases) / sizeof(reader_cases[0]); i++) {
        const struct reader_case *c = &reader_cases[i];
        size_t size = sizes[c->base];
        uint8_t *f = malloc(size + 64);
        memcpy(f, bases[c->base], size);
        for (int e = 0; e < 2 && c->edits[e].kind != KEEP; e++)
            apply_edit(f, &size, &c->edits[e]);
        if (c->crc == FIX_CRC)
            gen_fix_crc(f, size);
        expect_status(f, size, c->want, c->what, c->needle);
        free(f);
    }
    test_truncations(bases[DIGITS], sizes[DIGITS], "digits");
    test_flips(thorough);
    test_argument_errors(bases[DIGITS], sizes[DIGITS]);
    test_file_errors(bases[DIGITS], sizes[DIGITS]);
    for (int b = 0; b < N_BASES; b++)
        free(bases[b]);
}

/* Threads of this process, from /proc (-1 where there is none). */
static int task_count(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* task_count once threads that have been joined are gone from /proc: a joined
 * thread can still be listed for a moment (pthread_join returns when the
 * thread has released its stack, before the kernel reaps it; under qemu-user
 * much later), so wait up to 2 s for `want` (or, with want < 0, for the count
 * to stay the same over 200 ms). */
static int settled_task_count(int want)
{
    const struct timespec pause = {0, 5 * 1000 * 1000};
    int last = task_count(), same = 0;
    for (int i = 0; i < 400 && last >= 0; i++) {
        if (want >= 0 ? last == want : same >= 40)
            break;
        nanosleep(&pause, NULL);
        const int now = task_count();
        same = now == last ? same + 1 : 0;
        last = now;
    }
    return last;
}

/* Every kernel set and thread count gives the single-context results, with
 * the batch split (forced: bnn_context_set_split_ns 0) and not. */
static void threads_match(bnn_model *m, const char *name, const uint8_t *images, size_t n, const int32_t *c1,
                          const int32_t *s1, int32_t *c2, int32_t *s2)
{
    static const int counts[] = {0, 1, 2, 3, 5, 64};
    for (size_t k = 0; k < g_n_sets; k++) {
        bnn_model_use_kernels(m, g_sets[k]);
        bnn_context *ctx = bnn_context_new(m);
        for (int forced = 0; forced < 2; forced++) {
            bnn_context_set_split_ns(ctx, forced ? 0 : 100000);
            for (size_t t = 0; t < sizeof(counts) / sizeof(counts[0]); t++)
                for (size_t len = 1; len <= n; len = len == n ? n + 1 : len < 4 ? len + 1 : len + 9 < n ? len + 9 : n) {
                    memset(c2, 0xFF, len * 4);
                    memset(s2, 0xFF, len * 40);
                    int st = bnn_context_run_threads(ctx, images, len, c2, s2, counts[t]);
                    CHECK(st == BNN_OK && !memcmp(c1, c2, len * 4) && !memcmp(s1, s2, len * 40),
                          "%s, %s kernels: %zu images on %d threads (split %s) differ from one context", name,
                          g_sets[k]->name, len, counts[t], forced ? "forced" : "when it pays");
                }
        }
        bnn_context_free(ctx);
    }
    bnn_model_use_kernels(m, bnn_select_kernels());
}

/* The pool: threads start once per context, not per call, and are joined by bnn_context_free. */
static void pool_is_persistent(bnn_model *m, const uint8_t *images, size_t n, const int32_t *c1, int32_t *c2)
{
    const int tasks0 = settled_task_count(-1);
    const unsigned started0 = bnn_threads_started();
    bnn_context *ctx = bnn_context_new(m);
    bnn_context_set_split_ns(ctx, 0);
    CHECK(bnn_context_run_threads(ctx, images, n, c2, NULL, 3) == BNN_OK, "pool: first run");
    const unsigned started1 = bnn_threads_started();
    CHECK(started1 == started0 + 2, "pool: 3 threads started %u workers, not 2", started1 - started0);
    CHECK(tasks0 < 0 || settled_task_count(tasks0 + 2) == tasks0 + 2, "pool: %d threads in /proc/self/task, not %d",
          task_count(), tasks0 + 2);
    long allocations = g_allocations;
    int same = 1;
    for (int i = 0; i < 300; i++) {
        size_t len = 1 + (size_t)i % n;
        same &= bnn_context_run_threads(ctx, images, len, c2, NULL, 1 + i % 3) == BNN_OK;
        same &= !memcmp(c1, c2, len * 4);
    }
    CHECK(same, "pool: 300 runs on the pool's threads differ from one context");
    CHECK(bnn_threads_started() == started1, "pool: 300 runs started %u threads", bnn_threads_started() - started1);
    CHECK(g_allocations == allocations, "pool: 300 runs allocated %ld times", g_allocations - allocations);
    CHECK(tasks0 < 0 || settled_task_count(tasks0 + 2) == tasks0 + 2, "pool: %d threads after 300 runs",
          task_count());
    CHECK(bnn_context_run_threads(ctx, images, n, c2, NULL, 4) == BNN_OK && !memcmp(c1, c2, n * 4),
          "pool: grown to 4 threads");
    CHECK(bnn_threads_started() == started1 + 1, "pool: growing to 4 threads started %u",
          bnn_threads_started() - started1);
    bnn_context_free(ctx);
    CHECK(tasks0 < 0 || settled_task_count(tasks0) == tasks0, "pool: %d threads left after bnn_context_free, not %d",
          task_count(), tasks0);
    /* Where there is a /proc, this test must have seen it (the CI machines are Linux). */
#ifdef __linux__
    CHECK(tasks0 > 0, "pool: /proc/self/task unreadable");
#endif
}

struct hammer {
    bnn_context *ctx;
    const uint8_t *images;
    size_t n;
    const int32_t *expect;
    int ok, busy, wrong;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    int32_t cls[64];
    for (int i = 0; i < 400; i++) {
        int st = bnn_context_run_threads(h->ctx, h->images, h->n, cls, NULL, 2);
        if (st == BNN_ERR_BUSY)
            h->busy++;
        else if (st == BNN_OK && !memcmp(cls, h->expect, h->n * 4))
            h->ok++;
        else
            h->wrong++;
    }
    return NULL;
}

/* Two threads on one context: each call either runs correctly or is refused with BNN_ERR_BUSY. */
static void busy_context(bnn_model *m, const uint8_t *images, size_t n, const int32_t *c1)
{
    bnn_context *ctx = bnn_context_new(m);
    bnn_context_set_split_ns(ctx, 0);
    struct hammer h[2] = {{ctx, images, n, c1, 0, 0, 0}, {ctx, images, n, c1, 0, 0, 0}};
    pthread_t t;
    int started = pthread_create(&t, NULL, hammer_main, &h[1]) == 0;
    hammer_main(&h[0]);
    if (started)
        pthread_join(t, NULL);
    CHECK(started, "busy: cannot start a thread");
    CHECK(!h[0].wrong && !h[1].wrong, "busy: %d wrong results from a shared context", h[0].wrong + h[1].wrong);
    CHECK(h[0].ok + h[1].ok + h[0].busy + h[1].busy == 800 && h[0].ok + h[1].ok > 0, "busy: %d ok, %d refused",
          h[0].ok + h[1].ok, h[0].busy + h[1].busy);
    bnn_context_free(ctx);
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
        threads_match(m, names[a], images, n, c1, s1, c2, s2);
        if (a == 0) {
            pool_is_persistent(m, images, n, c1, c2);
            busy_context(m, images, n, c1);
        }
        uint64_t ns[64] = {0};
        ctx = bnn_context_new(m);
        CHECK(bnn_context_run_timed(ctx, images, 1, c2, NULL, ns) == BNN_OK && c2[0] == c1[0], "timed run");
        CHECK(bnn_context_run_threads(ctx, images, n, c2, NULL, -1) == BNN_ERR_ARG, "negative thread count");
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
    test_window_shapes();
    test_full_windows();
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
