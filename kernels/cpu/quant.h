/* quant.h - the CPU kernels for weights kept in their file dtype (F16, BF16
 * and ggml's blocks, kernels/dtype.c): y = x W^T with W read as it is.
 *
 * Decode (up to 8 rows of x) runs matrix-vector products of dot kernels:
 * each fp32 activation row is first quantised to int8 blocks with one fp32
 * scale each (quant_act.c: blocks of 32 for Q4_0/Q4_1/Q8_0, of 256 with
 * 16-element sums for Q4_K/Q6_K), so that each weight block meets its
 * activation block in an integer dot product; F16/BF16 rows are dotted
 * with the fp32 row (one row of x only). Prefill (more rows) widens tiles
 * of W to fp32 exactly and runs OpenBLAS sgemm on them (matmul_quant.c
 * says why).
 *
 * The dot and widening kernels exist once per instruction set
 * (quant_portable.c: plain C, always; quant_avx2.c and quant_avx512.c: x86
 * intrinsics, from one body quant_x86.h). The backend picks the best set
 * the CPU has from CPUID when it is created (cpu_isa.c) and keeps the table
 * in its context; tests pass a table of their choice to
 * dms_cpu_matmul_kept. */
#ifndef DMS_CPU_QUANT_H
#define DMS_CPU_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

typedef enum {
    DMS_CPU_ISA_PORTABLE = 0, /* plain C */
    DMS_CPU_ISA_AVX2 = 1,     /* AVX2 + FMA + F16C */
    DMS_CPU_ISA_AVX512 = 2,   /* the AVX2 set with AVX-512 VNNI integer dot products (256-bit, VL) */
    DMS_CPU_ISA_COUNT
} dms_cpu_isa;

/* An activation block of 32: x ~ d * q, sum = the sum of q (for the offsets
 * and mins of Q4_0 and Q4_1). */
typedef struct {
    float d;
    int32_t sum;
    int8_t q[32];
} dms_qa32;

/* An activation block of 256 (K-quants): x ~ d * q, bsum[g] = the sum of
 * q[16g .. 16g+15]. */
typedef struct {
    float d;
    int16_t bsum[16];
    int8_t q[256];
} dms_qa256;

/* One weight row of nb blocks (F16/BF16: nb elements) against one
 * activation row in the form dms_cpu_act_quantize gives for that dtype
 * (F16/BF16: the fp32 row itself). */
typedef float (*dms_cpu_dot_fn)(const void *w, const void *a, int nb);
/* nb blocks (F16/BF16: nb elements) of a weight widened to fp32 at y: the
 * values of kernels/dtype.c, bit for bit. */
typedef void (*dms_cpu_widen_fn)(const void *w, float *y, int nb);

/* The kernels of one instruction set for every kept dtype t (NULL for F32,
 * which goes to OpenBLAS as it is). */
typedef struct dms_cpu_kernels {
    dms_cpu_isa isa;
    dms_cpu_dot_fn dot[DMS_DTYPE_COUNT];
    dms_cpu_widen_fn widen[DMS_DTYPE_COUNT];
} dms_cpu_kernels;

/* cpu_isa.c */
const char *dms_cpu_isa_name(dms_cpu_isa isa);
/* Whether this CPU runs isa and this build has its kernels. */
int dms_cpu_isa_available(dms_cpu_isa isa);
/* The fastest available one. */
dms_cpu_isa dms_cpu_isa_best(void);
/* Fills k with isa's kernels; -1 if isa is not available here. */
int dms_cpu_kernels_init(dms_cpu_kernels *k, dms_cpu_isa isa);

/* The tables of each set (quant_portable.c, quant_avx2.c, quant_avx512.c);
 * the x86 ones return -1 in a build for another architecture. */
void dms_cpu_kernels_portable(dms_cpu_kernels *k);
int dms_cpu_kernels_avx2(dms_cpu_kernels *k);
int dms_cpu_kernels_avx512(dms_cpu_kernels *k);

/* quant_act.c: the activation side of dtype t's dot. Bytes of one row of k
 * elements (k a multiple of t's block), and the row x[k] in that form at a
 * (F16/BF16: a copy of x). */
size_t dms_cpu_act_bytes(dms_dtype t, int k);
void dms_cpu_act_quantize(dms_dtype t, const float *x, void *a, int k);

/* matmul_quant.c: out[n, w->rows] = x[n, w->cols] @ W^T for a weight of a
 * kept dtype (not F32), with the kernels k (threads: OpenMP over the rows
 * of W; OpenBLAS runs outside any parallel region). path: AUTO is the
 * backend's rule (dots for few rows of x, else widen); DOTS and WIDEN force
 * one (tests, measurements). Failures (out of memory) go to ctx's sticky
 * status and fill out with NaN. */
typedef enum { DMS_CPU_KEPT_AUTO = 0, DMS_CPU_KEPT_DOTS = 1, DMS_CPU_KEPT_WIDEN = 2 } dms_cpu_kept_path;
void dms_cpu_matmul_kept(const dms_cpu_kernels *k, void *ctx, float *out, const float *x, const dms_mat *w, int n,
                         dms_cpu_kept_path path);
/* Rows r0 .. r0+rows-1 of w (not F32) widened to fp32 into dst[rows,
 * w->cols] with the kernels k (OpenMP over rows; call it outside a
 * parallel region). */
void dms_cpu_widen_rows(const dms_cpu_kernels *k, const dms_mat *w, int r0, int rows, float *dst);

#endif
