/* gguf_quant.c - the ggml tensor type table (names, block sizes) and the
 * dequantisation of ggml blocks to fp32, bit-for-bit with ggml's reference
 * (ggml-quants.c dequantize_row_*) so that GGUF weights load exactly. */
#include <stdint.h>
#include <string.h>

#include "core/half.h"
#include "model/gguf.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif

/* Results must match ggml/gguf-py bit for bit, so a*b - c must not be fused
 * into an FMA (GCC does not fuse in -std=c11 mode; clang needs telling). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define QK_K 256

typedef void (*deq_fn)(const uint8_t *src, float *dst, uint64_t nblocks);

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline float rdf16(const uint8_t *p) { return dms_f16_to_f32(rd16(p)); }
static inline uint32_t rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void deq_f32(const uint8_t *x, float *y, uint64_t nb) { memcpy(y, x, nb * 4); }

static void deq_f16(const uint8_t *x, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++) y[i] = dms_f16_to_f32(rd16(x + 2 * i));
}

static void deq_bf16(const uint8_t *x, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++) y[i] = dms_bf16_to_f32(rd16(x + 2 * i));
}

/* Q4_0: {f16 d; u8 qs[16]}: y[j] = (lo(qs[j]) - 8) * d, y[j+16] = (hi(qs[j]) - 8) * d. */
static void deq_q4_0(const uint8_t *x, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, x += 18, y += 32) {
        const float d = rdf16(x);
        const uint8_t *qs = x + 2;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((qs[j] & 0x0F) - 8) * d;
            y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

/* Q4_1: {f16 d; f16 m; u8 qs[16]}: y = q * d + m. */
static void deq_q4_1(const uint8_t *x, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, x += 20, y += 32) {
        const float d = rdf16(x), m = rdf16(x + 2);
        const uint8_t *qs = x + 4;
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(qs[j] & 0x0F) * d + m;
            y[j + 16] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

/* Q5_0: {f16 d; u32 qh; u8 qs[16]}: fifth bit of element j is bit j of qh. */
static void deq_q5_0(const uint8_t *x, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, x += 22, y += 32) {
        const float d = rdf16(x);
        const uint32_t qh = rd32(x + 2);
        const uint8_t *qs = x + 6;
        for (int j = 0; j < 16; j++) {
            const int xh0 = (int)(((qh >> j) << 4) & 0x10);
            const int xh1 = (int)((qh >> (j + 12)) & 0x10);
            y[j] = (float)(((qs[j] & 0x0F) | xh0) - 16) * d;
            y[j + 16] = (float)(((qs[j] >> 4) | xh1) - 16) * d;
        }
    }
}

/* Q5_1: {f16 d; f16 m; u32 qh; u8 qs[16]}: y = q * d + m. */
static void deq_q5_1(const uint8_t *x, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, x += 24, y += 32) {
        const float d = rdf16(x), m = rdf16(x + 2);
        const uint32_t qh = rd32(x + 4);
        const uint8_t *qs = x + 8;
        for (int j = 0; j < 16; j++) {
            const int xh0 = (int)(((qh >> j) << 4) & 0x10);
            const int xh1 = (int)((qh >> (j + 12)) & 0x10);
            y[j] = (float)((qs[j] & 0x0F) | xh0) * d + m;
            y[j + 16] = (float)((qs[j] >> 4) | xh1) * d + m;
        }
    }
}

/* Q8_0: {f16 d; i8 qs[32]}. */
static void deq_q8_0(const uint8_t *x, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, x += 34, y += 32) {
        const float d = rdf16(x);
        for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)x[2 + j] * d;
    }
}

/* Q2_K: {u8 scales[16]; u8 qs[64]; f16 d; f16 dmin}: 16 sub-blocks of 16,
 * each with a 4-bit scale (low nibble) and 4-bit min (high nibble). */
static void deq_q2_k(const uint8_t *x, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, x += 84) {
        const uint8_t *sc = x, *q = x + 16;
        const float d = rdf16(x + 80), dmin = rdf16(x + 82);
        int is = 0;
        for (int n = 0; n < QK_K; n += 128) {
            int shift = 0;
            for (int j = 0; j < 4; j++) {
                uint8_t s = sc[is++];
                float dl = d * (float)(s & 0xF), ml = dmin * (float)(s >> 4);
                for (int l = 0; l < 16; l++) *y++ = dl * (float)((q[l] >> shift) & 3) - ml;
                s = sc[is++];
                dl = d * (float)(s & 0xF);
                ml = dmin * (float)(s >> 4);
                for (int l = 0; l < 16; l++) *y++ = dl * (float)((q[l + 16] >> shift) & 3) - ml;
                shift += 2;
            }
            q += 32;
        }
    }
}

/* Q3_K: {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}: 16 sub-blocks of 16
 * with 6-bit signed scales (offset 32); a clear hmask bit subtracts 4. */
static void deq_q3_k(const uint8_t *x, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, x += 110) {
        const uint8_t *hm = x, *q = x + 32, *s12 = x + 96;
        const float d_all = rdf16(x + 108);
        int scales[16];
        for (int j = 0; j < 16; j++) {
            const int lo = j < 8 ? (s12[j] & 0x0F) : (s12[j - 8] >> 4);
            const int hi = (s12[8 + (j % 4)] >> (2 * (j / 4))) & 3;
            scales[j] = (lo | (hi << 4)) - 32;
        }
        int is = 0;
        uint8_t m = 1;
        for (int n = 0; n < QK_K; n += 128) {
            int shift = 0;
            for (int j = 0; j < 4; j++) {
                float dl = d_all * (float)scales[is++];
                for (int l = 0; l < 16; l++)
                    *y++ = dl * (float)(((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
                dl = d_all * (float)scales[is++];
                for (int l = 0; l < 16; l++)
                    *y++ = dl * (float)(((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
                shift += 2;
                m = (uint8_t)(m << 1);
            }
            q += 32;
        }
    }
}

/* The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block (12 packed bytes). */
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q4_K: {f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}: 8 sub-blocks of 32. */
static void deq_q4_k(const uint8_t *x, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, x += 144) {
        const float d = rdf16(x), dmin = rdf16(x + 2);
        const uint8_t *scales = x + 4, *q = x + 16;
        int is = 0;
        for (int j = 0; j < QK_K; j += 64) {
            uint8_t sc, m;
            scale_min_k4(is, scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            scale_min_k4(is + 1, scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
            q += 32;
            is += 2;
        }
    }
}

/* Q5_K: {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}. */
static void deq_q5_k(const uint8_t *x, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, x += 176) {
        const float d = rdf16(x), dmin = rdf16(x + 2);
        const uint8_t *scales = x + 4, *qh = x + 16, *ql = x + 48;
        int is = 0;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < QK_K; j += 64) {
            uint8_t sc, m;
            scale_min_k4(is, scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            scale_min_k4(is + 1, scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
            ql += 32;
            is += 2;
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
    }
}

/* Q6_K: {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: 16 sub-blocks of 16. */
static void deq_q6_k(const uint8_t *x, float *y, uint64_t nb) {
    for (uint64_t i = 0; i < nb; i++, x += 210) {
        const float d = rdf16(x + 208);
        const uint8_t *ql = x, *qh = x + 128;
        const int8_t *sc = (const int8_t *)(x + 192);
        for (int n = 0; n < QK_K; n += 128) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * (float)sc[is + 0] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

/* Every type ggml defines, so that files holding types we cannot dequantise
 * still open (their sizes are needed to bounds-check the data). */
static const struct {
    int id;
    const char *name;
    uint32_t blck, size;
    deq_fn deq;
} types[] = {
    {0, "F32", 1, 4, deq_f32},          {1, "F16", 1, 2, deq_f16},
    {2, "Q4_0", 32, 18, deq_q4_0},      {3, "Q4_1", 32, 20, deq_q4_1},
    {6, "Q5_0", 32, 22, deq_q5_0},      {7, "Q5_1", 32, 24, deq_q5_1},
    {8, "Q8_0", 32, 34, deq_q8_0},      {9, "Q8_1", 32, 40, NULL},
    {10, "Q2_K", 256, 84, deq_q2_k},    {11, "Q3_K", 256, 110, deq_q3_k},
    {12, "Q4_K", 256, 144, deq_q4_k},   {13, "Q5_K", 256, 176, deq_q5_k},
    {14, "Q6_K", 256, 210, deq_q6_k},   {15, "Q8_K", 256, 292, NULL},
    {16, "IQ2_XXS", 256, 66, NULL},     {17, "IQ2_XS", 256, 74, NULL},
    {18, "IQ3_XXS", 256, 98, NULL},     {19, "IQ1_S", 256, 50, NULL},
    {20, "IQ4_NL", 32, 18, NULL},       {21, "IQ3_S", 256, 110, NULL},
    {22, "IQ2_S", 256, 82, NULL},       {23, "IQ4_XS", 256, 136, NULL},
    {24, "I8", 1, 1, NULL},             {25, "I16", 1, 2, NULL},
    {26, "I32", 1, 4, NULL},            {27, "I64", 1, 8, NULL},
    {28, "F64", 1, 8, NULL},            {29, "IQ1_M", 256, 56, NULL},
    {30, "BF16", 1, 2, deq_bf16},       {34, "TQ1_0", 256, 54, NULL},
    {35, "TQ2_0", 256, 66, NULL},       {39, "MXFP4", 32, 17, NULL},
};
#define N_TYPES (sizeof types / sizeof types[0])

static int type_index(dms_ggml_type t) {
    for (size_t i = 0; i < N_TYPES; i++)
        if (types[i].id == (int)t) return (int)i;
    return -1;
}

const char *dms_ggml_type_name(dms_ggml_type t) {
    int i = type_index(t);
    return i < 0 ? "?" : types[i].name;
}

int dms_ggml_type_supported(dms_ggml_type t) {
    int i = type_index(t);
    return i >= 0 && types[i].deq != NULL;
}

uint64_t dms_ggml_blck_size(dms_ggml_type t) {
    int i = type_index(t);
    return i < 0 ? 0 : types[i].blck;
}

uint64_t dms_ggml_type_size(dms_ggml_type t) {
    int i = type_index(t);
    return i < 0 ? 0 : types[i].size;
}

int dms_ggml_dequantize_blocks(dms_ggml_type t, const void *src, float *dst, uint64_t n) {
    int i = type_index(t);
    if (i < 0 || !types[i].deq || n % types[i].blck != 0) return -1;
    types[i].deq(src, dst, n / types[i].blck);
    return 0;
}

uint64_t dms_gguf_tensor_nelem(const dms_gguf_tensor *t) {
    uint64_t n = 1;
    for (uint32_t i = 0; i < t->n_dims && i < 4; i++) n *= t->ne[i];
    return n;
}

int dms_gguf_dequantize(const dms_gguf *g, const dms_gguf_tensor *t, float *out, dms_err *err) {
    const char *path = g && g->file.path ? g->file.path : "(gguf)";
    char nbuf[DMS_GGUF_NAME_BUF];
    int ti = type_index(t->type);
    if (ti < 0 || !types[ti].deq)
        return dms_errf(err, "%s: tensor '%s': type %s not supported", path,
                        dms_gguf_str_printable(t->name, nbuf, sizeof nbuf), dms_ggml_type_name(t->type));
    const uint64_t blck = types[ti].blck, size = types[ti].size;
    const uint64_t nelem = dms_gguf_tensor_nelem(t);
    /* open() validated these; re-check so a hand-made tensor cannot overrun. */
    if (nelem % blck != 0 || (nelem / blck) * size != t->nbytes || (!t->data && nelem))
        return dms_errf(err, "%s: tensor '%s': %llu %s elements do not match %llu data bytes",
                        path, dms_gguf_str_printable(t->name, nbuf, sizeof nbuf), (unsigned long long)nelem,
                        types[ti].name, (unsigned long long)t->nbytes);
    const uint64_t nb = nelem / blck;
    /* Chunks of whole blocks (a row is whole blocks, so chunks may span
     * rows); big enough that OpenMP overhead is negligible. */
    const uint64_t chunk = blck == 1 ? 16384 : (blck == 32 ? 512 : 64);
    const int64_t nchunks = (int64_t)((nb + chunk - 1) / chunk);
    const deq_fn deq = types[ti].deq;
    const uint8_t *src = t->data;
#pragma omp parallel for schedule(static) if (nchunks > 1)
    for (int64_t c = 0; c < nchunks; c++) {
        const uint64_t b0 = (uint64_t)c * chunk;
        const uint64_t n = nb - b0 < chunk ? nb - b0 : chunk;
        deq(src + b0 * size, out + b0 * blck, n);
    }
    return 0;
}
