/* quant_x86.h - the body of the x86 dot kernels (kernels/cpu/quant.h), one
 * source for two instruction sets: quant_avx2.c and quant_avx512.c include
 * it after defining
 *   QK_FN(name)   the name of a function in that set (a suffix)
 *   QK_TARGET     the function attribute enabling the set
 *   QK_DOT4(u, s)               int32 x 8: each lane the sum of 4 adjacent
 *                               products u8(u) * s8(s)
 *   QK_DOT4_SC(u, s, lo, hi)    the same times lo in lanes 0-3 and hi in
 *                               lanes 4-7 (bytes 0-15 and 16-31)
 * AVX2 builds those from maddubs (u8 x s8, pairs summed into int16) and
 * madd; VNNI from vpdpbusd. maddubs saturates at 32767, which no block
 * reaches: activations are in [-127, 127] and weights in [0, 63] (nibbles,
 * 6-bit values) or, for Q8_0, |q_w| <= 128 after the sign trick (u = |q_w|,
 * s = q_a * sign(q_w)): 2 * 128 * 127 < 32767.
 * The sums are the ones quant_portable.c spells out; each block's integer
 * sum goes into an fp32 vector accumulator with its scale. The widening
 * kernels at the end give kernels/dtype.c's values exactly. */
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/quant.h"
#include "kernels/dtype.h"

static QK_TARGET inline float QK_FN(hsum)(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static QK_TARGET inline float QK_FN(f16)(const uint8_t *p) {
    return _cvtsh_ss((unsigned short)(p[0] | (p[1] << 8)));
}

/* The 32 nibbles of a Q4_0/Q4_1 block as bytes 0-31 in element order (low
 * nibbles of qs[0..15] are elements 0-15, high nibbles elements 16-31). */
static QK_TARGET inline __m256i QK_FN(nibbles32)(const uint8_t *qs) {
    const __m128i q = _mm_loadu_si128((const __m128i *)qs), m4 = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m4), _mm_and_si128(q, m4));
}

static QK_TARGET float QK_FN(dot_q8_0)(const void *w, const void *a, int nb) {
    const uint8_t *x = w;
    const dms_qa32 *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, x += 34, y++) {
        const __m256i qw = _mm256_loadu_si256((const __m256i *)(x + 2));
        const __m256i qa = _mm256_loadu_si256((const __m256i *)y->q);
        const __m256i p = QK_DOT4(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qa, qw));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(QK_FN(f16)(x) * y->d), acc);
    }
    return QK_FN(hsum)(acc);
}

static QK_TARGET float QK_FN(dot_q4_0)(const void *w, const void *a, int nb) {
    const uint8_t *x = w;
    const dms_qa32 *y = a;
    __m256 acc = _mm256_setzero_ps();
    float off = 0.0f; /* sum of 8 sum(q_a) d_w d_a */
    for (int b = 0; b < nb; b++, x += 18, y++) {
        const float dd = QK_FN(f16)(x) * y->d;
        const __m256i p = QK_DOT4(QK_FN(nibbles32)(x + 2), _mm256_loadu_si256((const __m256i *)y->q));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dd), acc);
        off += (float)(8 * y->sum) * dd;
    }
    return QK_FN(hsum)(acc) - off;
}

static QK_TARGET float QK_FN(dot_q4_1)(const void *w, const void *a, int nb) {
    const uint8_t *x = w;
    const dms_qa32 *y = a;
    __m256 acc = _mm256_setzero_ps();
    float mins = 0.0f; /* sum of m_w d_a sum(q_a) */
    for (int b = 0; b < nb; b++, x += 20, y++) {
        const __m256i p = QK_DOT4(QK_FN(nibbles32)(x + 4), _mm256_loadu_si256((const __m256i *)y->q));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(QK_FN(f16)(x) * y->d), acc);
        mins += QK_FN(f16)(x + 2) * y->d * (float)y->sum;
    }
    return QK_FN(hsum)(acc) + mins;
}

static QK_TARGET float QK_FN(dot_q4_k)(const void *w, const void *a, int nb) {
    const uint8_t *x = w;
    const dms_qa256 *y = a;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps();
    float mins = 0.0f; /* sum of dmin d_a sum_s mn_s sum_s(q_a) */
    for (int b = 0; b < nb; b++, x += 144, y++) {
        uint8_t sc[8], mn[8];
        dms_q4k_scale_min(x + 4, sc, mn);
        __m256i sumi = _mm256_setzero_si256();
        int32_t summ = 0;
        for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(x + 16 + 32 * c));
            const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            const __m256i a0 = _mm256_loadu_si256((const __m256i *)(y->q + 64 * c));
            const __m256i a1 = _mm256_loadu_si256((const __m256i *)(y->q + 64 * c + 32));
            sumi = _mm256_add_epi32(sumi, QK_DOT4_SC(lo, a0, sc[2 * c], sc[2 * c]));
            sumi = _mm256_add_epi32(sumi, QK_DOT4_SC(hi, a1, sc[2 * c + 1], sc[2 * c + 1]));
            summ += mn[2 * c] * (y->bsum[4 * c] + y->bsum[4 * c + 1]) +
                    mn[2 * c + 1] * (y->bsum[4 * c + 2] + y->bsum[4 * c + 3]);
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(QK_FN(f16)(x) * y->d), acc);
        mins += QK_FN(f16)(x + 2) * y->d * (float)summ;
    }
    return QK_FN(hsum)(acc) - mins;
}

static QK_TARGET float QK_FN(dot_q6_k)(const void *w, const void *a, int nb) {
    const uint8_t *x = w;
    const dms_qa256 *y = a;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30);
    __m256 acc = _mm256_setzero_ps();
    float offs = 0.0f; /* sum of d_w d_a sum_g sc_g 32 sum_g(q_a): the -32 offset */
    for (int b = 0; b < nb; b++, x += 210, y++) {
        const int8_t *sc = (const int8_t *)(x + 192);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(x + 64 * h));
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(x + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(x + 128 + 32 * h));
            /* the unsigned 6-bit values of elements 0-31, 32-63, 64-95, 96-127 of the half */
            const __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2)),
                _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(qh, m2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2)),
            };
            for (int i = 0; i < 4; i++) {
                const int g = 8 * h + 2 * i; /* the sub-blocks of 16 in this vector: g, g + 1 */
                const __m256i qa = _mm256_loadu_si256((const __m256i *)(y->q + 16 * g));
                sumi = _mm256_add_epi32(sumi, QK_DOT4_SC(q[i], qa, sc[g], sc[g + 1]));
            }
        }
        int32_t off = 0;
        for (int g = 0; g < 16; g++) off += sc[g] * y->bsum[g];
        const float dd = QK_FN(f16)(x + 208) * y->d;
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(dd), acc);
        offs += (float)(32 * off) * dd;
    }
    return QK_FN(hsum)(acc) - offs;
}

static QK_TARGET float QK_FN(dot_f16)(const void *w, const void *a, int n) {
    const uint8_t *x = w;
    const float *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        const __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + 2 * j)));
        const __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + 2 * j + 16)));
        acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(y + j), acc0);
        acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(y + j + 8), acc1);
    }
    float s = QK_FN(hsum)(_mm256_add_ps(acc0, acc1));
    for (; j < n; j++) s += QK_FN(f16)(x + 2 * j) * y[j];
    return s;
}

static QK_TARGET inline __m256 QK_FN(bf16x8)(const uint8_t *p) {
    const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}

static QK_TARGET float QK_FN(dot_bf16)(const void *w, const void *a, int n) {
    const uint8_t *x = w;
    const float *y = a;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        acc0 = _mm256_fmadd_ps(QK_FN(bf16x8)(x + 2 * j), _mm256_loadu_ps(y + j), acc0);
        acc1 = _mm256_fmadd_ps(QK_FN(bf16x8)(x + 2 * j + 16), _mm256_loadu_ps(y + j + 8), acc1);
    }
    float s = QK_FN(hsum)(_mm256_add_ps(acc0, acc1));
    for (; j < n; j++) {
        uint32_t u = (uint32_t)(x[2 * j] | (x[2 * j + 1] << 8)) << 16;
        float f;
        memcpy(&f, &u, 4);
        s += f * y[j];
    }
    return s;
}

/* ---- widening to fp32 (the prefill path's tiles): the values of
 * kernels/dtype.c bit for bit, so products and sums are separate
 * instructions (no FMA), in the reference's order ---- */

/* 8 int32 lanes of bytes 8i .. 8i+7 of v (signed or unsigned), as floats */
static QK_TARGET inline __m256 QK_FN(s8x8)(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

static QK_TARGET void QK_FN(widen_q8_0)(const void *src, float *y, int nb) {
    const uint8_t *x = src;
    for (int b = 0; b < nb; b++, x += 34, y += 32) {
        const __m256 d = _mm256_set1_ps(QK_FN(f16)(x));
        const __m256i q = _mm256_loadu_si256((const __m256i *)(x + 2));
        const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        _mm256_storeu_ps(y, _mm256_mul_ps(QK_FN(s8x8)(lo), d));
        _mm256_storeu_ps(y + 8, _mm256_mul_ps(QK_FN(s8x8)(_mm_srli_si128(lo, 8)), d));
        _mm256_storeu_ps(y + 16, _mm256_mul_ps(QK_FN(s8x8)(hi), d));
        _mm256_storeu_ps(y + 24, _mm256_mul_ps(QK_FN(s8x8)(_mm_srli_si128(hi, 8)), d));
    }
}

/* Q4_0 (m = NULL: q - 8, times d) and Q4_1 (q d + m) */
static QK_TARGET inline void QK_FN(widen_nibbles)(const uint8_t *qs, float d, const float *m, float *y) {
    const __m128i q = _mm_loadu_si128((const __m128i *)qs), m4 = _mm_set1_epi8(0x0F);
    __m128i v[2] = {_mm_and_si128(q, m4), _mm_and_si128(_mm_srli_epi16(q, 4), m4)};
    if (!m) {
        v[0] = _mm_sub_epi8(v[0], _mm_set1_epi8(8));
        v[1] = _mm_sub_epi8(v[1], _mm_set1_epi8(8));
    }
    const __m256 dv = _mm256_set1_ps(d);
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 2; i++) {
            __m256 f = _mm256_mul_ps(QK_FN(s8x8)(i ? _mm_srli_si128(v[h], 8) : v[h]), dv);
            if (m) f = _mm256_add_ps(f, _mm256_set1_ps(*m));
            _mm256_storeu_ps(y + 16 * h + 8 * i, f);
        }
}

static QK_TARGET void QK_FN(widen_q4_0)(const void *src, float *y, int nb) {
    const uint8_t *x = src;
    for (int b = 0; b < nb; b++, x += 18, y += 32) QK_FN(widen_nibbles)(x + 2, QK_FN(f16)(x), NULL, y);
}

static QK_TARGET void QK_FN(widen_q4_1)(const void *src, float *y, int nb) {
    const uint8_t *x = src;
    for (int b = 0; b < nb; b++, x += 20, y += 32) {
        const float m = QK_FN(f16)(x + 2);
        QK_FN(widen_nibbles)(x + 4, QK_FN(f16)(x), &m, y);
    }
}

/* 32 bytes (values 0..63 or signed) times d, minus mn (mn NULL: none) */
static QK_TARGET inline void QK_FN(widen32)(__m256i q, float d, const float *mn, float *y) {
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int i = 0; i < 4; i++) {
        __m256 f = _mm256_mul_ps(_mm256_set1_ps(d), QK_FN(s8x8)(part[i]));
        if (mn) f = _mm256_sub_ps(f, _mm256_set1_ps(*mn));
        _mm256_storeu_ps(y + 8 * i, f);
    }
}

static QK_TARGET void QK_FN(widen_q4_k)(const void *src, float *y, int nb) {
    const uint8_t *x = src;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int b = 0; b < nb; b++, x += 144) {
        const float d = QK_FN(f16)(x), dmin = QK_FN(f16)(x + 2);
        uint8_t sc[8], mn[8];
        dms_q4k_scale_min(x + 4, sc, mn);
        for (int c = 0; c < 4; c++, y += 64) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(x + 16 + 32 * c));
            const float m1 = dmin * (float)mn[2 * c], m2 = dmin * (float)mn[2 * c + 1];
            QK_FN(widen32)(_mm256_and_si256(q, m4), d * (float)sc[2 * c], &m1, y);
            QK_FN(widen32)(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), d * (float)sc[2 * c + 1], &m2, y + 32);
        }
    }
}

static QK_TARGET void QK_FN(widen_q6_k)(const void *src, float *y, int nb) {
    const uint8_t *x = src;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30), off = _mm256_set1_epi8(32);
    for (int b = 0; b < nb; b++, x += 210, y += 256) {
        const float d = QK_FN(f16)(x + 208);
        const int8_t *sc = (const int8_t *)(x + 192);
        for (int h = 0; h < 2; h++) {
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(x + 64 * h));
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(x + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(x + 128 + 32 * h));
            const __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2)),
                _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(qh, m2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2)),
            };
            for (int i = 0; i < 4; i++) {
                const int g = 8 * h + 2 * i; /* sub-blocks g (bytes 0-15) and g + 1 (16-31) */
                const __m256i v = _mm256_sub_epi8(q[i], off);
                const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
                const __m256 s0 = _mm256_set1_ps(d * (float)sc[g]), s1 = _mm256_set1_ps(d * (float)sc[g + 1]);
                float *o = y + 16 * g;
                _mm256_storeu_ps(o, _mm256_mul_ps(s0, QK_FN(s8x8)(lo)));
                _mm256_storeu_ps(o + 8, _mm256_mul_ps(s0, QK_FN(s8x8)(_mm_srli_si128(lo, 8))));
                _mm256_storeu_ps(o + 16, _mm256_mul_ps(s1, QK_FN(s8x8)(hi)));
                _mm256_storeu_ps(o + 24, _mm256_mul_ps(s1, QK_FN(s8x8)(_mm_srli_si128(hi, 8))));
            }
        }
    }
}

static QK_TARGET void QK_FN(widen_f16)(const void *src, float *y, int n) {
    const uint8_t *x = src;
    int j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + 2 * j))));
    for (; j < n; j++) y[j] = QK_FN(f16)(x + 2 * j);
}

static QK_TARGET void QK_FN(widen_bf16)(const void *src, float *y, int n) {
    const uint8_t *x = src;
    int j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, QK_FN(bf16x8)(x + 2 * j));
    for (; j < n; j++) {
        const uint32_t u = (uint32_t)(x[2 * j] | (x[2 * j + 1] << 8)) << 16;
        memcpy(y + j, &u, 4);
    }
}

static void QK_FN(fill)(dms_cpu_kernels *k) {
    for (int t = 0; t < DMS_DTYPE_COUNT; t++) k->dot[t] = NULL, k->widen[t] = NULL;
    k->dot[DMS_BF16] = QK_FN(dot_bf16);
    k->dot[DMS_F16] = QK_FN(dot_f16);
    k->dot[DMS_Q4_0] = QK_FN(dot_q4_0);
    k->dot[DMS_Q4_1] = QK_FN(dot_q4_1);
    k->dot[DMS_Q8_0] = QK_FN(dot_q8_0);
    k->dot[DMS_Q4_K] = QK_FN(dot_q4_k);
    k->dot[DMS_Q6_K] = QK_FN(dot_q6_k);
    k->widen[DMS_BF16] = QK_FN(widen_bf16);
    k->widen[DMS_F16] = QK_FN(widen_f16);
    k->widen[DMS_Q4_0] = QK_FN(widen_q4_0);
    k->widen[DMS_Q4_1] = QK_FN(widen_q4_1);
    k->widen[DMS_Q8_0] = QK_FN(widen_q8_0);
    k->widen[DMS_Q4_K] = QK_FN(widen_q4_k);
    k->widen[DMS_Q6_K] = QK_FN(widen_q6_k);
}
