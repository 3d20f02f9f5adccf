/* quant_act.c - the activation side of the dot kernels (kernels/cpu/quant.h):
 * an fp32 row quantised per block to int8 with one fp32 scale,
 * d = max|x| / 127 and q = round-to-nearest-even(x / d), so that
 * |x - d q| <= d / 2 for every element (the bound tests/test_quant.c holds
 * the kernels to). A block holding a NaN or an infinity gets d = NaN, so
 * that the products it meets are NaN, as in fp32. One implementation for
 * every instruction set: each set's integer sums are then the same. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/quant.h"

/* d and q[n] of one block of n elements; returns the sum of q. */
static int32_t quantize_block(const float *x, int n, float *d, int8_t *q) {
    float amax = 0.0f;
    int finite = 1;
    for (int j = 0; j < n; j++) {
        const float a = fabsf(x[j]);
        finite &= a <= FLT_MAX; /* false for NaN and infinities */
        amax = a > amax ? a : amax;
    }
    if (!finite) {
        *d = NAN;
        memset(q, 0, (size_t)n);
        return 0;
    }
    *d = amax / 127.0f;
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    int32_t sum = 0;
    for (int j = 0; j < n; j++) {
        long v = lrintf(x[j] * id);
        v = v > 127 ? 127 : v < -127 ? -127 : v;
        q[j] = (int8_t)v;
        sum += (int32_t)v;
    }
    return sum;
}

size_t dms_cpu_act_bytes(dms_dtype t, int k) {
    switch (t) {
    case DMS_Q4_0: case DMS_Q4_1: case DMS_Q8_0: return sizeof(dms_qa32) * (size_t)(k / 32);
    case DMS_Q4_K: case DMS_Q6_K: return sizeof(dms_qa256) * (size_t)(k / 256);
    default: return sizeof(float) * (size_t)k;
    }
}

void dms_cpu_act_quantize(dms_dtype t, const float *x, void *a, int k) {
    switch (t) {
    case DMS_Q4_0: case DMS_Q4_1: case DMS_Q8_0: {
        dms_qa32 *b = a;
        for (int i = 0; i < k / 32; i++) b[i].sum = quantize_block(x + 32 * i, 32, &b[i].d, b[i].q);
        break;
    }
    case DMS_Q4_K: case DMS_Q6_K: {
        dms_qa256 *b = a;
        for (int i = 0; i < k / 256; i++) {
            quantize_block(x + 256 * i, 256, &b[i].d, b[i].q);
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int j = 0; j < 16; j++) s += b[i].q[16 * g + j];
                b[i].bsum[g] = (int16_t)s;
            }
        }
        break;
    }
    default: memcpy(a, x, sizeof(float) * (size_t)k); break;
    }
}
