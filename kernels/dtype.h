/* dtype.h - the weight dtypes of kernels/backend.h on the host: their
 * names and their conversion to fp32 (the reference every kernel that
 * reads a kept weight is tested against, and what code outside the
 * kernels uses to read one row of a weight back). Layouts: dtype.c. */
#ifndef DMS_DTYPE_H
#define DMS_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

/* "f32", "bf16", "f16", "Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K"; "?" otherwise. */
const char *dms_dtype_name(dms_dtype t);
/* Converts n elements of dtype t (whole blocks: n a multiple of
 * dms_dtype_block(t)) at src (host memory) to fp32, single-threaded. */
void dms_dtype_to_f32(dms_dtype t, const void *src, float *dst, size_t n);

/* Block parts shared by the conversion and the CPU dot kernels. */

/* The 6-bit scales sc[8] and mins mn[8] of a Q4_K block's 12 scale bytes:
 * sub-blocks 0-3 keep theirs in the low 6 bits of bytes 0-3 (scales) and
 * 4-7 (mins); sub-blocks 4-7 in the nibbles of bytes 8-11 (scale low, min
 * high) with their top 2 bits in the top bits of bytes 0-3 (scales) and
 * 4-7 (mins). */
static inline void dms_q4k_scale_min(const uint8_t *s, uint8_t sc[8], uint8_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (uint8_t)((s[j + 8] & 0x0F) | ((s[j] >> 6) << 4));
        mn[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
}

/* The 256 values q - 32 (in -32..31) of a Q6_K block (layout in dtype.c). */
static inline void dms_q6k_unpack(const uint8_t *blk, int8_t q[256]) {
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = blk + 64 * h, *qh = blk + 128 + 32 * h;
        int8_t *o = q + 128 * h;
        for (int l = 0; l < 32; l++) {
            o[l] = (int8_t)(((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32);
            o[l + 32] = (int8_t)(((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32);
            o[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            o[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}

#endif
