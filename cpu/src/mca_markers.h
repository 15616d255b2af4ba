/*
 * Region markers for LLVM's llvm-mca (benchmarks/arm_estimate.py): only a
 * build that defines BNN_MCA_MARKERS emits them, as assembler comments around
 * a kernel's inner-loop body; every other build compiles them to nothing, so
 * its generated code is unchanged.
 */
#ifndef BNNCPU_MCA_MARKERS_H
#define BNNCPU_MCA_MARKERS_H

#ifdef BNN_MCA_MARKERS
#if defined(__aarch64__)
#define BNN_MCA_COMMENT "#" /* what llvm-mca reads as a comment here */
#elif defined(__arm__)
#define BNN_MCA_COMMENT "@"
#else
#define BNN_MCA_COMMENT "#"
#endif
#define BNN_MCA_BEGIN(name) __asm__ volatile(BNN_MCA_COMMENT " LLVM-MCA-BEGIN " name)
#define BNN_MCA_END(name) __asm__ volatile(BNN_MCA_COMMENT " LLVM-MCA-END " name)
#else
#define BNN_MCA_BEGIN(name) ((void)0)
#define BNN_MCA_END(name) ((void)0)
#endif

#endif
