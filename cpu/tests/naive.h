/*
 * An independent reference written straight from bnncpu.h's definitions:
 * its own parser, unpacked int arrays, weights as +1/-1 read one bit at a
 * time, windows walked by loops, no packing and no bit tricks. Slow on
 * purpose; the engine is checked against it.
 */
#ifndef BNNCPU_NAIVE_H
#define BNNCPU_NAIVE_H

#include <stddef.h>
#include <stdint.h>

/* Runs a model file (that the engine accepted) on one CHW image: the class,
 * and the n_classes scores into scores. Returns 0, or -1 if out of memory. */
int naive_run(const uint8_t *file, size_t size, const uint8_t *image, int32_t *cls, int32_t *scores);

#endif
