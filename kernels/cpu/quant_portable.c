/* quant_portable.c - the dot kernels of kernels/cpu/quant.h in plain C, for
 * any CPU: one weight row of blocks (layouts in kernels/dtype.c) against one
 * quantised activation row (quant_act.c). Per block, the integer sum of
 * q_w * q_a is exact; the block's scales turn it into fp32:
 *   Q8_0: d_w d_a sum(q_w q_a)
 *   Q4_0: d_w d_a (sum(q_w q_a) - 8 sum(q_a))
 *   Q4_1: d_w d_a sum(q_w q_a) + m_w d_a sum(q_a)
 *   Q4_K: d_a (d sum_s sc_s sum_s(q_w q_a) - dmin sum_s mn_s sum_s(q_a))
 *   Q6_K: d_a d sum_g sc_g sum_g((q_w - 32) q_a)
 * F16/BF16 rows are widened and dotted with the fp32 row. The x86 kernels
 * (quant_x86.h) compute the same sums in another order. Widening to fp32
 * is kernels/dtype.c's. */
#include "core/half.h"
#include "kernels/cpu/quant.h"
#include "kernels/dtype.h"

static float f16_at(const uint8_t *p) { return dms_f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

static float dot_q8_0(const void *w, const void *a, int nb) {
    const uint8_t *x = w;
    const dms_qa32 *y = a;
    float s = 0.0f;
    for (int b = 0; b < nb; b++, x += 34, y++) {
        const int8_t *q = (const int8_t *)(x + 2);
        int32_t acc = 0;
        for (int j = 0; j < 32; j++) acc += q[j] * y->q[j];
        s += (float)acc * (f16_at(x) * y->d);
    }
    return s;
}

/* sum over a block of 32 of nibble * q_a (nibbles as Q4_0/Q4_1 store them) */
static int32_t nibble_dot(const uint8_t *qs, const int8_t *qa) {
    int32_t acc = 0;
    for (int j = 0; j < 16; j++) acc += (qs[j] & 0x0F) * qa[j] + (qs[j] >> 4) * qa[j + 16];
    return acc;
}

static float dot_q4_0(const void *w, const void *a, int nb) {
    const uint8_t *x = w;
    const dms_qa32 *y = a;
    float s = 0.0f;
    for (int b = 0; b < nb; b++, x += 18, y++)
        s += (float)(nibble_dot(x + 2, y->q) - 8 * y->sum) * (f16_at(x) * y->d);
    return s;
}

static float dot_q4_1(const void *w, const void *a, int nb) {
    const uint8_t *x = w;
    const dms_qa32 *y = a;
    float s = 0.0f;
    for (int b = 0; b < nb; b++, x += 20, y++)
        s += (float)nibble_dot(x + 4, y->q) * (f16_at(x) * y->d) + f16_at(x + 2) * y->d * (float)y->sum;
    return s;
}

static float dot_q4_k(const void *w, const void *a, int nb) {
    const uint8_t *x = w;
    const dms_qa256 *y = a;
    float s = 0.0f;
    for (int b = 0; b < nb; b++, x += 144, y++) {
        uint8_t sc[8], mn[8];
        dms_q4k_scale_min(x + 4, sc, mn);
        const uint8_t *qs = x + 16;
        int32_t sumi = 0, summ = 0;
        for (int c = 0; c < 4; c++, qs += 32) {
            int32_t lo = 0, hi = 0;
            for (int l = 0; l < 32; l++) {
                lo += (qs[l] & 0x0F) * y->q[64 * c + l];
                hi += (qs[l] >> 4) * y->q[64 * c + 32 + l];
            }
            sumi += sc[2 * c] * lo + sc[2 * c + 1] * hi;
            summ += mn[2 * c] * (y->bsum[4 * c] + y->bsum[4 * c + 1]) +
                    mn[2 * c + 1] * (y->bsum[4 * c + 2] + y->bsum[4 * c + 3]);
        }
        s += y->d * (f16_at(x) * (float)sumi - f16_at(x + 2) * (float)summ);
    }
    return s;
}

static float dot_q6_k(const void *w, const void *a, int nb) {
    const uint8_t *x = w;
    const dms_qa256 *y = a;
    float s = 0.0f;
    for (int b = 0; b < nb; b++, x += 210, y++) {
        int8_t q[256];
        dms_q6k_unpack(x, q);
        const int8_t *sc = (const int8_t *)(x + 192);
        int32_t sumi = 0;
        for (int g = 0; g < 16; g++) {
            int32_t acc = 0;
            for (int j = 0; j < 16; j++) acc += q[16 * g + j] * y->q[16 * g + j];
            sumi += sc[g] * acc;
        }
        s += (float)sumi * (f16_at(x + 208) * y->d);
    }
    return s;
}

static float dot_f16(const void *w, const void *a, int n) {
    const uint8_t *x = w;
    const float *y = a;
    float s = 0.0f;
    for (int j = 0; j < n; j++) s += f16_at(x + 2 * j) * y[j];
    return s;
}

static float dot_bf16(const void *w, const void *a, int n) {
    const uint8_t *x = w;
    const float *y = a;
    float s = 0.0f;
    for (int j = 0; j < n; j++) s += dms_bf16_to_f32((uint16_t)(x[2 * j] | (x[2 * j + 1] << 8))) * y[j];
    return s;
}

/* widening: kernels/dtype.c itself */
#define WIDEN(name, type)                                                                                            \
    static void name(const void *w, float *y, int nb) {                                                              \
        dms_dtype_to_f32(type, w, y, (size_t)nb * (size_t)dms_dtype_block(type));                                   \
    }
WIDEN(widen_bf16, DMS_BF16)
WIDEN(widen_f16, DMS_F16)
WIDEN(widen_q4_0, DMS_Q4_0)
WIDEN(widen_q4_1, DMS_Q4_1)
WIDEN(widen_q8_0, DMS_Q8_0)
WIDEN(widen_q4_k, DMS_Q4_K)
WIDEN(widen_q6_k, DMS_Q6_K)
#undef WIDEN

void dms_cpu_kernels_portable(dms_cpu_kernels *k) {
    for (int t = 0; t < DMS_DTYPE_COUNT; t++) k->dot[t] = NULL, k->widen[t] = NULL;
    k->dot[DMS_BF16] = dot_bf16;
    k->dot[DMS_F16] = dot_f16;
    k->dot[DMS_Q4_0] = dot_q4_0;
    k->dot[DMS_Q4_1] = dot_q4_1;
    k->dot[DMS_Q8_0] = dot_q8_0;
    k->dot[DMS_Q4_K] = dot_q4_k;
    k->dot[DMS_Q6_K] = dot_q6_k;
    k->widen[DMS_BF16] = widen_bf16;
    k->widen[DMS_F16] = widen_f16;
    k->widen[DMS_Q4_0] = widen_q4_0;
    k->widen[DMS_Q4_1] = widen_q4_1;
    k->widen[DMS_Q8_0] = widen_q8_0;
    k->widen[DMS_Q4_K] = widen_q4_k;
    k->widen[DMS_Q6_K] = widen_q6_k;
}
