/*
 * CPU feature detection and kernel selection, each done once per process.
 *
 * x86: CPUID for POPCNT, AVX2, AVX-512F and VPOPCNTDQ, and XGETBV for whether
 * the OS saves the YMM (and opmask and ZMM) registers: AVX code must not run
 * otherwise. ARMv7: the kernel's HWCAP_NEON
 * bit; AArch64: ASIMD is part of the base architecture.
 *
 * BNNCPU_DISABLE ("avx512", "avx2", "popcnt", "neon", "all", comma-separated) removes
 * features before the kernels are chosen, so one machine runs every kernel
 * set: the tests rerun themselves under each setting.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#ifdef BNN_X86
#include <cpuid.h>
#endif
#if defined(__arm__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_NEON
#define HWCAP_NEON (1 << 12) /* asm/hwcap.h on 32-bit ARM Linux */
#endif
#endif

#ifdef BNN_X86
static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}
#endif

unsigned bnn_detect_features(void)
{
    unsigned f = 0;
#ifdef BNN_X86
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        if (c & (1u << 23))
            f |= BNN_CPU_POPCNT;
        int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
        /* XCR0 bits 1, 2: the OS saves XMM and YMM state; 5, 6, 7: opmask and
         * the ZMM registers. */
        uint64_t xcr0 = osxsave && avx ? read_xcr0() : 0;
        if ((xcr0 & 6) == 6 && __get_cpuid_count(7, 0, &a, &b, &c, &d)) {
            if (b & (1u << 5))
                f |= BNN_CPU_AVX2;
            /* leaf 7: EBX bits 16 AVX512F and 30 AVX512BW, ECX bit 14 VPOPCNTDQ */
            if ((xcr0 & 0xE6) == 0xE6 && (b & (1u << 16)) && (b & (1u << 30)) && (c & (1u << 14)))
                f |= BNN_CPU_AVX512;
        }
    }
#elif defined(__aarch64__)
    f |= BNN_CPU_NEON;
#elif defined(__arm__) && defined(__linux__)
    if (getauxval(AT_HWCAP) & HWCAP_NEON)
        f |= BNN_CPU_NEON;
#endif
    return f;
}

/* The names BNNCPU_DISABLE knows ("all" aside). */
static const struct {
    const char *name;
    unsigned feature;
} g_feature_names[] = {
    {"avx512", BNN_CPU_AVX512},
    {"avx2", BNN_CPU_AVX2},
    {"popcnt", BNN_CPU_POPCNT},
    {"neon", BNN_CPU_NEON},
};

/* Unknown names are ignored so that one setting serves every architecture. */
unsigned bnn_features_named(const char *s)
{
    unsigned mask = 0;
    while (s && *s) {
        size_t len = strcspn(s, ",");
        if (len == 3 && !strncmp(s, "all", 3))
            mask |= ~0u;
        for (size_t i = 0; i < sizeof(g_feature_names) / sizeof(g_feature_names[0]); i++)
            if (len == strlen(g_feature_names[i].name) && !strncmp(s, g_feature_names[i].name, len))
                mask |= g_feature_names[i].feature;
        s += len;
        if (*s == ',')
            s++;
    }
    return mask;
}

/* Worst first: selection takes the last set whose features the CPU has, so a
 * set's place here is its rank. */
static const struct bnn_kernel_set g_kernel_sets[] = {
    {&bnn_kernels_scalar, 0},
#ifdef BNN_X86
    {&bnn_kernels_popcnt, BNN_CPU_POPCNT},
    /* Built for target("avx2,popcnt"): the compiler may use POPCNT anywhere in it. */
    {&bnn_kernels_avx2, BNN_CPU_POPCNT | BNN_CPU_AVX2},
    /* The AVX-512 set reuses the AVX2 8-bit and threshold kernels. */
    {&bnn_kernels_avx512, BNN_CPU_POPCNT | BNN_CPU_AVX2 | BNN_CPU_AVX512},
#endif
#ifdef BNN_ARM
    {&bnn_kernels_neon, BNN_CPU_NEON},
#endif
};

size_t bnn_kernel_sets(const struct bnn_kernel_set **sets)
{
    *sets = g_kernel_sets;
    return sizeof(g_kernel_sets) / sizeof(g_kernel_sets[0]);
}

static int runs_on(const struct bnn_kernel_set *set, unsigned features)
{
    return (set->needs & features) == set->needs;
}

static unsigned g_features;
static const struct bnn_kernels *g_kernels;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_once(void)
{
    g_features = bnn_detect_features() & ~bnn_features_named(getenv("BNNCPU_DISABLE"));
    for (size_t i = 0; i < sizeof(g_kernel_sets) / sizeof(g_kernel_sets[0]); i++)
        if (runs_on(&g_kernel_sets[i], g_features))
            g_kernels = g_kernel_sets[i].kernels;
}

unsigned bnn_cpu_features(void)
{
    pthread_once(&g_once, init_once);
    return g_features;
}

const struct bnn_kernels *bnn_select_kernels(void)
{
    pthread_once(&g_once, init_once);
    return g_kernels;
}

const char *bnn_kernel_name(void)
{
    return bnn_select_kernels()->name;
}

size_t bnn_available_kernels(const struct bnn_kernels **out, size_t max)
{
    unsigned f = bnn_detect_features();
    size_t n = 0;
    for (size_t i = 0; i < sizeof(g_kernel_sets) / sizeof(g_kernel_sets[0]) && n < max; i++)
        if (runs_on(&g_kernel_sets[i], f))
            out[n++] = g_kernel_sets[i].kernels;
    return n;
}
