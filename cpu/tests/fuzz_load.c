/*
 * libFuzzer target: bnn_model_load_memory on arbitrary bytes. What it accepts
 * is run on one image with every kernel set the CPU has and compared with the
 * naive reference, so the fuzzer also hunts for models the reader lets
 * through but the engine gets wrong (or reads out of bounds on).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bnncpu.h"
#include "internal.h"
#include "naive.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Almost every mutation breaks the checksum or the size field, which the
     * reader checks first. A copy gets both fixed up (except for one size in
     * five, so those checks are fuzzed too) and the fuzzer reaches the shape,
     * type and threshold checks behind them. */
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    if (size >= 64 && size % 5 != 0) {
        for (int i = 0; i < 8; i++)
            copy[16 + i] = (uint8_t)((uint64_t)size >> (8 * i));
        uint32_t crc = bnn_crc32(copy, size, 24);
        for (int i = 0; i < 4; i++)
            copy[24 + i] = (uint8_t)(crc >> (8 * i));
    }
    bnn_model *m = NULL;
    char err[256] = "";
    int st = bnn_model_load_memory(copy, size, &m, err, sizeof(err));
    if (st != BNN_OK) {
        if (m != NULL || err[0] == '\0' || strchr(err, '\n'))
            __builtin_trap();
        free(copy);
        return 0;
    }
    bnn_model_info info;
    bnn_model_get_info(m, &info);
    const size_t image_bytes = (size_t)info.in_c * info.in_h * info.in_w;
    if (info.context_bytes < (64u << 20) && info.binary_macs + info.integer_macs < (1u << 22) &&
        image_bytes < (1u << 20)) {
        uint8_t *image = malloc(image_bytes);
        for (size_t i = 0; i < image_bytes; i++)
            image[i] = (uint8_t)(i * 37 + (i >> 7));
        int32_t ref_cls, *ref = malloc(info.n_classes * 4), *sc = malloc(info.n_classes * 4);
        if (naive_run(copy, size, image, &ref_cls, ref) != 0)
            __builtin_trap();
        const struct bnn_kernels *sets[8];
        size_t n = bnn_available_kernels(sets, 8);
        for (size_t s = 0; s < n; s++) {
            bnn_model_use_kernels(m, sets[s]);
            int32_t cls = -1;
            if (bnn_run(m, image, 1, &cls, sc, 1) != BNN_OK || cls != ref_cls ||
                memcmp(sc, ref, info.n_classes * 4) != 0)
                __builtin_trap();
        }
        free(image), free(ref), free(sc);
    }
    bnn_model_free(m);
    free(copy);
    return 0;
}
