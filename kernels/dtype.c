/* dtype.c - weight dtype names and the conversion of every weight dtype to
 * fp32 on the host. The block formats are ggml's, as the GGUF spec and the
 * ggml documentation describe them (little-endian, f16 = IEEE half):
 *
 *   Q4_0 (32 elements, 18 bytes): f16 d; u8 qs[16]. Element j < 16 is the
 *        low nibble of qs[j], element j + 16 its high nibble; x = (q - 8) d.
 *   Q4_1 (32, 20): f16 d; f16 m; u8 qs[16] (nibbles as Q4_0); x = q d + m.
 *   Q8_0 (32, 34): f16 d; i8 qs[32]; x = q d.
 *   Q4_K (256, 144): f16 d; f16 dmin; u8 scales[12]; u8 qs[128]. Eight
 *        sub-blocks of 32 with a 6-bit scale sc and min mn each (packing:
 *        dms_q4k_scale_min in dtype.h); x = d sc q - dmin mn. Sub-blocks 2c and 2c+1
 *        are the low and the high nibbles of qs[32c .. 32c+31].
 *   Q6_K (256, 210): u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d. Sixteen
 *        sub-blocks of 16 (element e uses scales[e / 16]); x = d sc (q - 32)
 *        with q 6 bits: in each half h (128 elements; ql + 64h, qh + 32h),
 *        for l < 32, element l takes the low nibble of ql[l] and bits 0-1
 *        of qh[l], element l+32 the low nibble of ql[l+32] and bits 2-3,
 *        element l+64 the high nibble of ql[l] and bits 4-5, element l+96
 *        the high nibble of ql[l+32] and bits 6-7 (as bits 4-5 of q).
 *
 * The arithmetic is written so that every value is the one ggml's
 * reference dequantisation gives (model/gguf_quant.c, tests/test_quant.c
 * checks them bit for bit), hence no FMA contraction. */
#include "kernels/dtype.h"

#include <stdint.h>
#include <string.h>

#include "core/half.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

const char *dms_dtype_name(dms_dtype t) {
    static const char *const names[DMS_DTYPE_COUNT] = {"f32", "bf16", "f16", "Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K"};
    return (int)t >= 0 && t < DMS_DTYPE_COUNT ? names[t] : "?";
}

static float f16_at(const uint8_t *p) { return dms_f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

static void q4_0_to_f32(const uint8_t *x, float *y, size_t nb) {
    for (size_t b = 0; b < nb; b++, x += 18, y += 32) {
        const float d = f16_at(x);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((x[2 + j] & 0x0F) - 8) * d;
            y[j + 16] = (float)((x[2 + j] >> 4) - 8) * d;
        }
    }
}

static void q4_1_to_f32(const uint8_t *x, float *y, size_t nb) {
    for (size_t b = 0; b < nb; b++, x += 20, y += 32) {
        const float d = f16_at(x), m = f16_at(x + 2);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(x[4 + j] & 0x0F) * d + m;
            y[j + 16] = (float)(x[4 + j] >> 4) * d + m;
        }
    }
}

static void q8_0_to_f32(const uint8_t *x, float *y, size_t nb) {
    for (size_t b = 0; b < nb; b++, x += 34, y += 32) {
        const float d = f16_at(x);
        for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)x[2 + j] * d;
    }
}

static void q4_k_to_f32(const uint8_t *x, float *y, size_t nb) {
    for (size_t b = 0; b < nb; b++, x += 144) {
        const float d = f16_at(x), dmin = f16_at(x + 2);
        uint8_t sc[8], mn[8];
        dms_q4k_scale_min(x + 4, sc, mn);
        const uint8_t *qs = x + 16;
        for (int c = 0; c < 4; c++, qs += 32) {
            const float d1 = d * (float)sc[2 * c], m1 = dmin * (float)mn[2 * c];
            const float d2 = d * (float)sc[2 * c + 1], m2 = dmin * (float)mn[2 * c + 1];
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(qs[l] & 0x0F) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(qs[l] >> 4) - m2;
        }
    }
}

static void q6_k_to_f32(const uint8_t *x, float *y, size_t nb) {
    for (size_t b = 0; b < nb; b++, x += 210, y += 256) {
        const float d = f16_at(x + 208);
        const int8_t *sc = (const int8_t *)(x + 192);
        int8_t q[256];
        dms_q6k_unpack(x, q);
        for (int e = 0; e < 256; e++) y[e] = d * (float)sc[e / 16] * (float)q[e];
    }
}

void dms_dtype_to_f32(dms_dtype t, const void *src, float *dst, size_t n) {
    const uint8_t *s = src;
    const size_t nb = n / (size_t)dms_dtype_block(t);
    switch (t) {
    case DMS_F32: memcpy(dst, src, n * sizeof(float)); break;
    case DMS_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = dms_bf16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
        break;
    case DMS_F16:
        for (size_t i = 0; i < n; i++) dst[i] = f16_at(s + 2 * i);
        break;
    case DMS_Q4_0: q4_0_to_f32(s, dst, nb); break;
    case DMS_Q4_1: q4_1_to_f32(s, dst, nb); break;
    case DMS_Q8_0: q8_0_to_f32(s, dst, nb); break;
    case DMS_Q4_K: q4_k_to_f32(s, dst, nb); break;
    case DMS_Q6_K: q6_k_to_f32(s, dst, nb); break;
    default: break;
    }
}
