/*
 * CRC-32 with zlib's (and Python zlib.crc32's) parameters: reflected
 * polynomial 0xEDB88320, initial value and final XOR 0xFFFFFFFF. Written here
 * because the engine depends on nothing but libc and pthreads.
 */
#include "internal.h"

/* skip_at: offset of four bytes taken as zero (SIZE_MAX: none). */
uint32_t bnn_crc32(const uint8_t *data, size_t size, size_t skip_at)
{
    /* Building the byte table is 2,048 shifts: cheaper than any once-only
     * synchronisation, and a model is loaded once. */
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int b = 0; b < 8; b++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < size; i++) {
        /* The stored checksum's own four bytes count as zero. */
        uint8_t byte = i >= skip_at && i - skip_at < 4 ? 0 : data[i];
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8);
    }
    return crc ^ 0xFFFFFFFFu;
}
