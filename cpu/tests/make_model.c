/*
 * make-model: writes random valid model files for tests and benchmarks.
 *
 *   make-model ARCH OUT [--seed N]   ARCH: digits, tfc, sfc, lfc, cnv, random
 *   make-model --corpus DIR          a fuzzing seed corpus of small models
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modelgen.h"

static int write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        fprintf(stderr, "make-model: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

static int corpus(const char *dir)
{
    /* The format 1.1 shapes too: padded 8-bit and binary windows, stride 2,
     * (1, k) kernels on 1 x W, non-square windows and inputs, 43 classes. */
    static const char *names[] = {"digits", "tfc", "lenet", "conv1d", "wide"};
    char path[4096];
    int rc = 0;
    for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++) {
        struct gen_model g;
        gen_arch(&g, names[i]);
        size_t size;
        uint8_t *f = gen_write(&g, (uint64_t)i, &size);
        snprintf(path, sizeof(path), "%s/%s.bnn", dir, names[i]);
        rc |= write_file(path, f, size);
        free(f);
    }
    gen_rng r = {99};
    for (int i = 0; i < 40; i++) {
        struct gen_model g;
        gen_random_arch(&g, &r);
        size_t size;
        uint8_t *f = gen_write(&g, gen_next(&r), &size);
        if (size <= 65536) {
            snprintf(path, sizeof(path), "%s/random-%02d.bnn", dir, i);
            rc |= write_file(path, f, size);
        }
        free(f);
    }
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--corpus"))
        return corpus(argv[2]);
    uint64_t seed = 1;
    if (argc == 5 && !strcmp(argv[3], "--seed"))
        seed = strtoull(argv[4], NULL, 10);
    else if (argc != 3) {
        fprintf(stderr, "usage: make-model ARCH OUT [--seed N] | make-model --corpus DIR\n"
                        "ARCH: digits, tfc, sfc, lfc, cnv, random\n");
        return 2;
    }
    struct gen_model g;
    if (!strcmp(argv[1], "random")) {
        gen_rng r = {seed};
        gen_random_arch(&g, &r);
    } else if (!gen_arch(&g, argv[1])) {
        fprintf(stderr, "make-model: unknown architecture '%s'\n", argv[1]);
        return 2;
    }
    size_t size;
    uint8_t *f = gen_write(&g, seed, &size);
    if (!f) {
        fprintf(stderr, "make-model: out of memory\n");
        return 1;
    }
    int rc = write_file(argv[2], f, size);
    free(f);
    return rc;
}
