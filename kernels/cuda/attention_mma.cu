/* attention_mma.cu - the DMS attention of training on the tensor cores:
 * the op of attention_flash.cu (causal, per document, log-keep bias on keys
 * more than `window` back, GQA), forward and backward, with its matrix
 * products on mma.sync m16n8k16 in bf16 with fp32 accumulation (the
 * FlashAttention-2 scheme; the softmax, the bias and every sum outside the
 * products stay fp32). For head dims that are a multiple of 16 up to
 * MM_MAX_HD; attention_dms.cu picks it (cu_mma_supported) unless the
 * backend was opened with DMS_CUDA_ATTENTION=fp32, which keeps the fp32
 * tiled kernels (the oracle-grade path, and the one for other head dims).
 *
 * Inputs are fp32 in global memory. A first pass (k_mma_prep) rounds q,
 * k, v (and dO in the backward) to bf16 once per call, into scratch: a
 * row-major copy [Tp, heads, hd] and, where a product wants that operand
 * with the tokens along k, a transposed one [heads, hd, Tp] (Tp: T
 * rounded up to 64, zeros past T), so that every tile then moves as
 * 16-byte copies without bounds checks. Shared rows are padded by MM_PAD
 * elements so that the fragment loads of the 32 lanes hit 32 banks.
 * Fragment layouts are those of the PTX ISA for m16n8k16 (.bf16): with
 * g = lane / 4 and t = lane % 4, A registers hold (row g | g+8, cols 2t,
 * 2t+1 | +8), B registers (rows 2t, 2t+1 | +8, col g), C (row g | g+8,
 * cols 2t, 2t+1). A product's C fragments are the next product's A
 * fragments (P V, dS K), so P and dS never leave the registers.
 *  - forward: block per (64 queries, head), a warp per 16 queries; key
 *    tiles of 64; online softmax with per-lane partial row sums.
 *  - dq: block per (64 queries, head); S and dP = dO V^T on the tensor
 *    cores, dS = P (dP - D), dq = scale dS K.
 *  - dk, dv, dlog_keep: block per (64 keys, kv head), a warp per 16 keys,
 *    over the group's heads and query tiles of 32 from the keys on:
 *    S^T = K Q^T, dP^T = V dO^T, dv += P^T dO, dk += dS^T Q. Every
 *    gradient row is owned by one warp: no atomics, deterministic.
 * tests/test_flash_emul.cpp runs these kernels as host C++ with an
 * emulated mma (DMS_CUDA_EMUL); test_ops cuda compares them with the CPU
 * backend at bf16 tolerances. */
#ifndef DMS_CUDA_EMUL
#include "kernels/cuda/cuda_internal.cuh"
#endif

#define MM_WARPS 4
#define MM_BQ 64                  /* queries per block: forward, dq */
#define MM_BK 64                  /* keys per tile: forward, dq; keys per block: dkv */
#define MM_QT 32                  /* queries per tile: dkv */
#define MM_MAX_HD 128
#define MM_KS (MM_MAX_HD / 16)    /* k-steps over the head dim */
#define MM_NT (MM_MAX_HD / 8)     /* n-tiles over the head dim */
#define MM_PAD 8                  /* bf16 elements of padding per shared row */
#define MM_LD(hd) (((hd) + MM_PAD) / 2) /* shared row stride in 32-bit words (bf16 pairs) */
#define MM_LDT(n) (((n) + MM_PAD) / 2)  /* the same for a transposed tile of n tokens */
#define MM_TP(T) (((T) + 63) / 64 * 64) /* tokens of the bf16 copies */

/* 16 bytes from global to shared memory */
#ifdef DMS_CUDA_EMUL
#define MM_COPY16(dst, src) memcpy((dst), (src), 16)
#else
#define MM_COPY16(dst, src) (*(uint4 *)(dst) = *(const uint4 *)(src))
#endif

/* Two floats as a bf16 pair, lo in the low half; round to nearest even. */
#ifdef DMS_CUDA_EMUL
static inline uint32_t mm_bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u; /* NaN */
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
static inline uint32_t mm_pack(float lo, float hi) { return mm_bf16_bits(lo) | (mm_bf16_bits(hi) << 16); }
#else
static __device__ __forceinline__ uint32_t mm_pack(float lo, float hi) {
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
/* d += a b on the tensor cores: A 16x16, B 16x8 (bf16), C/D 16x8 (fp32) */
static __device__ __forceinline__ void mm_mma(float *d, const uint32_t *a, const uint32_t *b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

/* The bf16 copies of x ([T, heads, hd] fp32): rowb [Tp, heads, hd] and
 * colb [heads, hd, Tp] (either may be NULL), zeros past T. Grid (Tp / 64,
 * heads), MM_WARPS * 32 threads; shared: a [64][hd + 1] fp32 tile. */
__global__ void __launch_bounds__(MM_WARPS * 32)
    k_mma_prep(uint32_t *rowb, uint32_t *colb, const float *x, int T, int heads, int hd) {
    extern __shared__ float sm[];
    const int t0 = blockIdx.x * 64, hh = blockIdx.y, ld = hd + 1, Tp = gridDim.x * 64, hp = hd / 2;
    for (int e = threadIdx.x; e < 64 * hd; e += blockDim.x) {
        const int r = e / hd, d = e - r * hd, t = t0 + r;
        sm[r * ld + d] = t < T ? x[((size_t)t * heads + hh) * hd + d] : 0.0f;
    }
    __syncthreads();
    if (rowb)
        for (int e = threadIdx.x; e < 64 * hp; e += blockDim.x) {
            const int r = e / hp, d = e - r * hp;
            rowb[((size_t)(t0 + r) * heads + hh) * hp + d] = mm_pack(sm[r * ld + 2 * d], sm[r * ld + 2 * d + 1]);
        }
    if (colb)
        for (int e = threadIdx.x; e < 32 * hd; e += blockDim.x) {
            const int d = e >> 5, r = e & 31;
            colb[(((size_t)hh * hd + d) * Tp + t0) / 2 + r] = mm_pack(sm[2 * r * ld + d], sm[(2 * r + 1) * ld + d]);
        }
}

/* rows [r0, r0 + n) of a row-major copy xb (head hh) into s, stride ld words */
static __device__ __forceinline__ void mm_tile_rows(uint32_t *s, int ld, const uint32_t *xb, int r0, int n,
                                                    int heads, int hh, int hd) {
    const int cpr = hd / 8; /* 16-byte chunks per row */
    for (int c = threadIdx.x; c < n * cpr; c += blockDim.x) {
        const int r = c / cpr, k = c - r * cpr;
        MM_COPY16(s + r * ld + 4 * k, xb + ((size_t)(r0 + r) * heads + hh) * (hd / 2) + 4 * k);
    }
}
/* tokens [c0, c0 + n) of a transposed copy xt (head hh): s[d][0..n), stride ldt words */
static __device__ __forceinline__ void mm_tile_cols(uint32_t *s, int ldt, const uint32_t *xt, int c0, int n,
                                                    int Tp, int hh, int hd) {
    const int cpr = n / 8;
    for (int c = threadIdx.x; c < hd * cpr; c += blockDim.x) {
        const int d = c / cpr, k = c - d * cpr;
        MM_COPY16(s + d * ldt + 4 * k, xt + (((size_t)hh * hd + d) * Tp + c0) / 2 + 4 * k);
    }
}

/* A fragment of rows r0..r0+15, k-step kk, from a bf16 tile (stride ld words) */
static __device__ __forceinline__ void mm_frag_a(uint32_t *a, const uint32_t *s, int ld, int r0, int kk, int g,
                                                 int t) {
    a[0] = s[(r0 + g) * ld + 8 * kk + t];
    a[1] = s[(r0 + g + 8) * ld + 8 * kk + t];
    a[2] = s[(r0 + g) * ld + 8 * kk + 4 + t];
    a[3] = s[(r0 + g + 8) * ld + 8 * kk + 4 + t];
}
/* B fragment with k along a tile row (k-step kk) and n = rows n0..n0+7: the
 * transposed tile, as in Q K^T (rows: keys, k: head dim) */
static __device__ __forceinline__ void mm_frag_bt(uint32_t *b, const uint32_t *s, int ld, int n0, int kk, int g,
                                                  int t) {
    b[0] = s[(n0 + g) * ld + 8 * kk + t];
    b[1] = s[(n0 + g) * ld + 8 * kk + 4 + t];
}
/* The C fragments of n-tiles 2kk and 2kk+1 as the A fragment of k-step kk */
static __device__ __forceinline__ void mm_c_to_a(uint32_t *a, const float *c0, const float *c1) {
    a[0] = mm_pack(c0[0], c0[1]);
    a[1] = mm_pack(c0[2], c0[3]);
    a[2] = mm_pack(c1[0], c1[1]);
    a[3] = mm_pack(c1[2], c1[3]);
}
/* sum and max over the 4 lanes of a quad (one row of a C fragment) */
static __device__ __forceinline__ float mm_quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
static __device__ __forceinline__ float mm_quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

/* Key tile j0 (MM_BK keys) of kv head kh: documents and log-keep values */
static __device__ __forceinline__ void mm_load_key_meta(int32_t *segk, float *lks, const float *log_keep,
                                                        const int32_t *seg, int j0, int T, int KV, int kh) {
    for (int r = threadIdx.x; r < MM_BK; r += blockDim.x) {
        const int j = j0 + r;
        segk[r] = j < T ? seg[j] : -1;
        lks[r] = j < T && log_keep ? log_keep[(size_t)j * KV + kh] : 0.0f;
    }
}

/* Two products over the head dim at once, for n-tiles 0..nn-1 (nn at most
 * MM_BK / 8): s[n] = X1 Y1^T and dp[n] = X2 Y2^T, with A fragments from
 * rows rw..rw+15 of X1 and X2 and B fragments from rows 8n..8n+7 of Y1 and
 * Y2 (all tiles with stride ld): S and dP in dq (Q K^T, dO V^T) and in dkv
 * (K Q^T, V dO^T). */
static __device__ __forceinline__ void mm_two_products(float (*s)[4], float (*dp)[4], int nn, const uint32_t *X1,
                                                       const uint32_t *X2, const uint32_t *Y1, const uint32_t *Y2,
                                                       int ld, int rw, int ks, int g, int t) {
#pragma unroll
    for (int n = 0; n < MM_BK / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            if (n < nn) s[n][e] = dp[n][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < MM_KS; kk++) {
        if (kk < ks) {
            uint32_t a1[4], a2[4];
            mm_frag_a(a1, X1, ld, rw, kk, g, t);
            mm_frag_a(a2, X2, ld, rw, kk, g, t);
#pragma unroll
            for (int n = 0; n < MM_BK / 8; n++) {
                if (n < nn) {
                    uint32_t b[2];
                    mm_frag_bt(b, Y1, ld, 8 * n, kk, g, t);
                    mm_mma(s[n], a1, b);
                    mm_frag_bt(b, Y2, ld, 8 * n, kk, g, t);
                    mm_mma(dp[n], a2, b);
                }
            }
        }
    }
}

/* acc[n] += C Y for the head dim's n-tiles (nt of them): C is this warp's
 * 16 rows by kn * 16 columns as C fragments (c[0..2 kn)), turned into A
 * fragments in registers; Y is a transposed tile (stride ldt) whose row
 * 8n + g holds head-dim channel 8n + g along the columns: P V, dS K,
 * P^T dO and dS^T Q. */
static __device__ __forceinline__ void mm_accumulate(float (*acc)[4], float (*c)[4], int kn, const uint32_t *Y,
                                                     int ldt, int nt, int g, int t) {
#pragma unroll
    for (int kk = 0; kk < MM_BK / 16; kk++) {
        if (kk < kn) {
            uint32_t a[4];
            mm_c_to_a(a, c[2 * kk], c[2 * kk + 1]);
#pragma unroll
            for (int n = 0; n < MM_NT; n++) {
                if (n < nt) {
                    uint32_t b[2];
                    mm_frag_bt(b, Y, ldt, 8 * n, kk, g, t);
                    mm_mma(acc[n], a, b);
                }
            }
        }
    }
}

#define MM_LOG2E 1.4426950408889634f
#define MM_LN2 0.6931471805599453f

/* Queries [i0, i0 + n) of head h for the backward: documents, lse (in
 * log2 units) and D; past T: no document, lse -inf */
static __device__ __forceinline__ void mm_load_query_meta(int32_t *segq, float *lseq, float *Dq, const int32_t *seg,
                                                          const float *lse, const float *D, int i0, int n, int T,
                                                          int H, int h) {
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        const int i = i0 + r;
        segq[r] = i < T ? seg[i] : -2;
        lseq[r] = i < T ? MM_LOG2E * lse[(size_t)i * H + h] : -INFINITY;
        Dq[r] = i < T ? D[(size_t)i * H + h] : 0.0f;
    }
}

/* A warp's 16 rows against a tile of columns, when every pair is visible
 * (same document, column causally before every row): which pairs carry
 * the log-keep bias. MM_MASKED: not every pair is visible; each is tested. */
enum { MM_MASKED, MM_NEAR, MM_FAR, MM_MIXED };
/* q_lo..q_lo+15 queries against keys k_lo..k_lo+nk-1 (rows queries: the
 * forward and dq) or keys against queries (dkv): lo/hi of the queries and
 * keys, and whether every key and query shares one document (`same`,
 * agreed by the whole warp). */
static __device__ __forceinline__ int mm_class(int q_lo, int q_hi, int k_lo, int k_hi, int T, int same, int window) {
    const int full = __all_sync(0xffffffffu, same) && q_hi < T && k_hi <= q_lo;
    if (!full) return MM_MASKED;
    if (q_lo - k_hi > window) return MM_FAR;
    if (q_hi - k_lo <= window) return MM_NEAR;
    return MM_MIXED;
}

/* The biased, masked score (log2 units) of query i and key j0 + jl in a
 * query-major tile; -inf where the pair is not visible. */
static __device__ __forceinline__ float mm_score(float s, int cls, int i, int T, int segi, int jl, int j0,
                                                 const int32_t *segk, const float *lks, int has_lk, int window,
                                                 float scale2) {
    const int j = j0 + jl;
    if (cls == MM_MASKED && (i >= T || j > i || segk[jl] != segi)) return -INFINITY;
    float x = scale2 * s;
    if (has_lk && cls != MM_NEAR && (cls == MM_FAR || i - j > window)) x += MM_LOG2E * lks[jl];
    return x;
}

/* Forward: grid (ceil(T / 64), H), MM_WARPS * 32 threads. qb, kb: the
 * row-major bf16 copies; vt: V transposed. */
__global__ void __launch_bounds__(MM_WARPS * 32)
    k_mma_fwd(float *out, float *lse, const uint32_t *qb, const uint32_t *kb, const uint32_t *vt,
              const float *log_keep, const int32_t *seg, int T, int H, int KV, int hd, int window, float scale) {
    extern __shared__ float sm[];
    const int ld = MM_LD(hd), lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int i0 = blockIdx.x * MM_BQ, h = blockIdx.y, kh = h / (H / KV), ks = hd / 16, nt = hd / 8;
    const float scale2 = scale * MM_LOG2E; /* scores in log2 units: exp2 */
    const int ldt = MM_LDT(MM_BK), Tp = MM_TP(T);
    uint32_t *Qs = (uint32_t *)sm, *Ks = Qs + MM_BQ * ld, *Vt = Ks + MM_BK * ld;
    float *lks = (float *)(Vt + hd * ldt);
    int32_t *segk = (int32_t *)(lks + MM_BK), *segq = segk + MM_BK;
    mm_tile_rows(Qs, ld, qb, i0, MM_BQ, H, h, hd);
    for (int r = threadIdx.x; r < MM_BQ; r += blockDim.x) segq[r] = i0 + r < T ? seg[i0 + r] : -2;
    const int rw = w * 16, ia = i0 + rw + g, ib = ia + 8; /* this lane's two query rows */
    float o[MM_NT][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < MM_NT; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    const int j_end = min(i0 + MM_BQ, T);
    for (int j0 = 0; j0 < j_end; j0 += MM_BK) {
        __syncthreads(); /* the previous tile's readers are done (and Qs, segq are in) */
        mm_tile_rows(Ks, ld, kb, j0, MM_BK, KV, kh, hd);
        mm_tile_cols(Vt, ldt, vt, j0, MM_BK, Tp, kh, hd);
        mm_load_key_meta(segk, lks, log_keep, seg, j0, T, KV, kh);
        __syncthreads();
        const int sa = segq[rw + g], sb = segq[rw + g + 8], s0 = segq[rw];
        const int cls = mm_class(i0 + rw, i0 + rw + 15, j0, j0 + MM_BK - 1, T,
                                 segk[lane] == s0 && segk[lane + 32] == s0 && segq[rw + (lane & 15)] == s0, window);
        if (cls == MM_MASKED) {
            int any = 0; /* does any of this warp's rows see a key of the tile? */
            for (int jl = t; jl < MM_BK; jl += 4) {
                const int j = j0 + jl;
                any |= (j <= ia && ia < T && segk[jl] == sa) || (j <= ib && ib < T && segk[jl] == sb);
            }
            if (!__any_sync(0xffffffffu, any)) continue; /* warp-uniform */
        }
        float s[MM_BK / 8][4];
#pragma unroll
        for (int n = 0; n < MM_BK / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < MM_KS; kk++) {
            if (kk < ks) {
                uint32_t a[4];
                mm_frag_a(a, Qs, ld, rw, kk, g, t);
#pragma unroll
                for (int n = 0; n < MM_BK / 8; n++) {
                    uint32_t b[2];
                    mm_frag_bt(b, Ks, ld, 8 * n, kk, g, t);
                    mm_mma(s[n], a, b);
                }
            }
        }
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < MM_BK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1, jl = 8 * n + 2 * t + (e & 1);
                s[n][e] = mm_score(s[n][e], cls, r ? ib : ia, T, r ? sb : sa, jl, j0, segk, lks, log_keep != 0,
                                   window, scale2);
                mx[r] = fmaxf(mx[r], s[n][e]);
            }
        float corr[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const float mn = fmaxf(m[r], mm_quad_max(mx[r]));
            corr[r] = mn == -INFINITY ? 1.0f : exp2f(m[r] - mn); /* 0 while m was -inf */
            m[r] = mn;
        }
        float ps[2] = {0.0f, 0.0f};
#pragma unroll
        for (int n = 0; n < MM_BK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1;
                const float p = s[n][e] == -INFINITY ? 0.0f : exp2f(s[n][e] - m[r]);
                s[n][e] = p;
                ps[r] += p;
            }
        l[0] = l[0] * corr[0] + ps[0];
        l[1] = l[1] * corr[1] + ps[1];
#pragma unroll
        for (int n = 0; n < MM_NT; n++) {
            o[n][0] *= corr[0], o[n][1] *= corr[0];
            o[n][2] *= corr[1], o[n][3] *= corr[1];
        }
        mm_accumulate(o, s, MM_BK / 16, Vt, ldt, nt, g, t); /* O += P V */
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = r ? ib : ia;
        const float lt = mm_quad_sum(l[r]); /* every lane takes part */
        if (i >= T) continue;
        const float inv = lt > 0.0f ? 1.0f / lt : 0.0f; /* nothing visible: zero output */
        float *orow = out + ((size_t)i * H + h) * hd;
#pragma unroll
        for (int n = 0; n < MM_NT; n++) {
            if (n < nt) {
                orow[8 * n + 2 * t] = o[n][2 * r] * inv;
                orow[8 * n + 2 * t + 1] = o[n][2 * r + 1] * inv;
            }
        }
        if (t == 0) lse[(size_t)i * H + h] = lt > 0.0f ? MM_LN2 * m[r] + logf(lt) : -INFINITY;
    }
}

/* dq: grid (ceil(T / 64), H). qb, dob, kb, vb: row-major bf16 copies; kt:
 * K transposed. */
__global__ void __launch_bounds__(MM_WARPS * 32)
    k_mma_dq(float *dq, const uint32_t *dob, const float *lse, const float *D, const uint32_t *qb,
             const uint32_t *kb, const uint32_t *vb, const uint32_t *kt, const float *log_keep, const int32_t *seg,
             int T, int H, int KV, int hd, int window, float scale) {
    extern __shared__ float sm[];
    const int ld = MM_LD(hd), lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int i0 = blockIdx.x * MM_BQ, h = blockIdx.y, kh = h / (H / KV), ks = hd / 16, nt = hd / 8;
    const float scale2 = scale * MM_LOG2E;
    const int ldt = MM_LDT(MM_BK), Tp = MM_TP(T);
    uint32_t *Qs = (uint32_t *)sm, *dOs = Qs + MM_BQ * ld, *Ks = dOs + MM_BQ * ld, *Vs = Ks + MM_BK * ld;
    uint32_t *Kt = Vs + MM_BK * ld;
    float *lks = (float *)(Kt + hd * ldt), *lseq = lks + MM_BK, *Dq = lseq + MM_BQ;
    int32_t *segk = (int32_t *)(Dq + MM_BQ), *segq = segk + MM_BK;
    mm_tile_rows(Qs, ld, qb, i0, MM_BQ, H, h, hd);
    mm_tile_rows(dOs, ld, dob, i0, MM_BQ, H, h, hd);
    mm_load_query_meta(segq, lseq, Dq, seg, lse, D, i0, MM_BQ, T, H, h);
    const int rw = w * 16, ia = i0 + rw + g, ib = ia + 8;
    float acc[MM_NT][4];
#pragma unroll
    for (int n = 0; n < MM_NT; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    const int j_end = min(i0 + MM_BQ, T);
    for (int j0 = 0; j0 < j_end; j0 += MM_BK) {
        __syncthreads();
        mm_tile_rows(Ks, ld, kb, j0, MM_BK, KV, kh, hd);
        mm_tile_rows(Vs, ld, vb, j0, MM_BK, KV, kh, hd);
        mm_tile_cols(Kt, ldt, kt, j0, MM_BK, Tp, kh, hd);
        mm_load_key_meta(segk, lks, log_keep, seg, j0, T, KV, kh);
        __syncthreads();
        const int sa = segq[rw + g], sb = segq[rw + g + 8], s0 = segq[rw];
        const float la = lseq[rw + g], lb = lseq[rw + g + 8], Da = Dq[rw + g], Db = Dq[rw + g + 8];
        /* a full tile's rows all see their diagonal key: finite lse */
        const int cls = mm_class(i0 + rw, i0 + rw + 15, j0, j0 + MM_BK - 1, T,
                                 segk[lane] == s0 && segk[lane + 32] == s0 && segq[rw + (lane & 15)] == s0, window);
        if (cls == MM_MASKED) {
            int any = 0;
            for (int jl = t; jl < MM_BK; jl += 4) {
                const int j = j0 + jl;
                any |= (j <= ia && ia < T && segk[jl] == sa && la != -INFINITY) ||
                       (j <= ib && ib < T && segk[jl] == sb && lb != -INFINITY);
            }
            if (!__any_sync(0xffffffffu, any)) continue;
        }
        float s[MM_BK / 8][4], dp[MM_BK / 8][4];
        mm_two_products(s, dp, MM_BK / 8, Qs, dOs, Ks, Vs, ld, rw, ks, g, t); /* S = Q K^T, dP = dO V^T */
#pragma unroll
        for (int n = 0; n < MM_BK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1, jl = 8 * n + 2 * t + (e & 1);
                const float L = r ? lb : la;
                const float x = L == -INFINITY ? -INFINITY
                                               : mm_score(s[n][e], cls, r ? ib : ia, T, r ? sb : sa, jl, j0, segk,
                                                          lks, log_keep != 0, window, scale2);
                s[n][e] = x == -INFINITY ? 0.0f : exp2f(x - L) * (dp[n][e] - (r ? Db : Da));
            }
        mm_accumulate(acc, s, MM_BK / 16, Kt, ldt, nt, g, t); /* dQ += dS K */
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = r ? ib : ia;
        if (i >= T) continue;
        float *o = dq + ((size_t)i * H + h) * hd;
#pragma unroll
        for (int n = 0; n < MM_NT; n++) {
            if (n < nt) {
                o[8 * n + 2 * t] = scale * acc[n][2 * r];
                o[8 * n + 2 * t + 1] = scale * acc[n][2 * r + 1];
            }
        }
    }
}

/* dk, dv, dlog_keep: grid (ceil(T / 64), KV). kb, vb, qb, dob: row-major
 * bf16 copies; qt, dot: Q and dO transposed. */
__global__ void __launch_bounds__(MM_WARPS * 32)
    k_mma_dkv(float *dk, float *dv, float *dlog_keep, const uint32_t *dob, const uint32_t *dot, const float *lse,
              const float *D, const uint32_t *qb, const uint32_t *qt, const uint32_t *kb, const uint32_t *vb,
              const float *log_keep, const int32_t *seg, int T, int H, int KV, int hd, int window, float scale) {
    extern __shared__ float sm[];
    const int ld = MM_LD(hd), lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int j0 = blockIdx.x * MM_BK, kh = blockIdx.y, group = H / KV, ks = hd / 16, nt = hd / 8;
    const float scale2 = scale * MM_LOG2E;
    const int ldt = MM_LDT(MM_QT), Tp = MM_TP(T);
    uint32_t *Ks = (uint32_t *)sm, *Vs = Ks + MM_BK * ld, *Qs = Vs + MM_BK * ld, *dOs = Qs + MM_QT * ld;
    uint32_t *Qt = dOs + MM_QT * ld, *dOt = Qt + hd * ldt;
    float *lks = (float *)(dOt + hd * ldt), *lseq = lks + MM_BK, *Dq = lseq + MM_QT;
    int32_t *segk = (int32_t *)(Dq + MM_QT), *segq = segk + MM_BK;
    mm_tile_rows(Ks, ld, kb, j0, MM_BK, KV, kh, hd);
    mm_tile_rows(Vs, ld, vb, j0, MM_BK, KV, kh, hd);
    for (int r = threadIdx.x; r < MM_BK; r += blockDim.x) {
        const int j = j0 + r;
        segk[r] = j < T ? seg[j] : -1;
        lks[r] = j < T && log_keep ? log_keep[(size_t)j * KV + kh] : 0.0f;
    }
    const int rw = w * 16, ja = j0 + rw + g, jb = ja + 8; /* this lane's two key rows */
    float gk[MM_NT][4], gv[MM_NT][4], glk[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < MM_NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) gk[n][e] = gv[n][e] = 0.0f;
    __syncthreads();
    const int sa = segk[rw + g], sb = segk[rw + g + 8];
    const float lka = lks[rw + g], lkb = lks[rw + g + 8];
    for (int hh = 0; hh < group; hh++) {
        const int h = kh * group + hh;
        for (int i0 = j0; i0 < T; i0 += MM_QT) { /* queries before the block's keys see none of them */
            __syncthreads();
            mm_tile_rows(Qs, ld, qb, i0, MM_QT, H, h, hd);
            mm_tile_rows(dOs, ld, dob, i0, MM_QT, H, h, hd);
            mm_tile_cols(Qt, ldt, qt, i0, MM_QT, Tp, h, hd);
            mm_tile_cols(dOt, ldt, dot, i0, MM_QT, Tp, h, hd);
            mm_load_query_meta(segq, lseq, Dq, seg, lse, D, i0, MM_QT, T, H, h);
            __syncthreads();
            const int s0 = segk[rw];
            const int cls = mm_class(i0, i0 + MM_QT - 1, j0 + rw, j0 + rw + 15, T,
                                     segq[lane] == s0 && segk[rw + (lane & 15)] == s0, window);
            if (cls == MM_MASKED) {
                int any = 0;
                for (int il = t; il < MM_QT; il += 4) {
                    const int i = i0 + il;
                    const int qok = i < T && lseq[il] != -INFINITY;
                    any |= qok && ((ja < T && ja <= i && segq[il] == sa) || (jb < T && jb <= i && segq[il] == sb));
                }
                if (!__any_sync(0xffffffffu, any)) continue;
            }
            float s[MM_QT / 8][4], dp[MM_QT / 8][4];
            mm_two_products(s, dp, MM_QT / 8, Ks, Vs, Qs, dOs, ld, rw, ks, g, t); /* S^T = K Q^T, dP^T = V dO^T */
            /* s becomes P^T, dp becomes dS^T (row: key, column: query) */
#pragma unroll
            for (int n = 0; n < MM_QT / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int r = e >> 1, il = 8 * n + 2 * t + (e & 1), i = i0 + il, j = r ? jb : ja;
                    float p = 0.0f, gs = 0.0f;
                    if (cls != MM_MASKED ||
                        (i < T && j < T && j <= i && segq[il] == (r ? sb : sa) && lseq[il] != -INFINITY)) {
                        /* biased: its gradient, also where log_keep is NULL (0) */
                        const int biased = cls != MM_NEAR && (cls == MM_FAR || i - j > window);
                        const float x = scale2 * s[n][e] + (biased && log_keep ? MM_LOG2E * (r ? lkb : lka) : 0.0f);
                        if (x != -INFINITY) p = exp2f(x - lseq[il]);
                        gs = p * (dp[n][e] - Dq[il]);
                        if (biased) glk[r] += gs;
                    }
                    s[n][e] = p;
                    dp[n][e] = gs;
                }
            mm_accumulate(gv, s, MM_QT / 16, dOt, ldt, nt, g, t);  /* dV += P^T dO */
            mm_accumulate(gk, dp, MM_QT / 16, Qt, ldt, nt, g, t); /* dK += dS^T Q */
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int j = r ? jb : ja;
        const float lk_sum = mm_quad_sum(glk[r]); /* every lane takes part */
        if (j >= T) continue;
        float *gko = dk + ((size_t)j * KV + kh) * hd, *gvo = dv + ((size_t)j * KV + kh) * hd;
#pragma unroll
        for (int n = 0; n < MM_NT; n++) {
            if (n < nt) {
                gko[8 * n + 2 * t] = scale * gk[n][2 * r];
                gko[8 * n + 2 * t + 1] = scale * gk[n][2 * r + 1];
                gvo[8 * n + 2 * t] = gv[n][2 * r];
                gvo[8 * n + 2 * t + 1] = gv[n][2 * r + 1];
            }
        }
        if (dlog_keep && t == 0) dlog_keep[(size_t)j * KV + kh] = lk_sum;
    }
}

/* Shared bytes of each kernel (the emulation test checks the kernels stay
 * inside them), and the scratch of the bf16 copies. */
static size_t mm_prep_smem(int hd) { return sizeof(float) * (size_t)64 * (hd + 1); }
static size_t mm_fwd_smem(int hd) {
    return sizeof(uint32_t) * ((size_t)(MM_BQ + MM_BK) * MM_LD(hd) + (size_t)hd * MM_LDT(MM_BK)) +
           sizeof(float) * MM_BK + sizeof(int32_t) * (MM_BK + MM_BQ);
}
static size_t mm_dq_smem(int hd) {
    return sizeof(uint32_t) * ((size_t)(2 * MM_BQ + 2 * MM_BK) * MM_LD(hd) + (size_t)hd * MM_LDT(MM_BK)) +
           sizeof(float) * (MM_BK + 2 * MM_BQ) + sizeof(int32_t) * (MM_BK + MM_BQ);
}
static size_t mm_dkv_smem(int hd) {
    return sizeof(uint32_t) * ((size_t)(2 * MM_BK + 2 * MM_QT) * MM_LD(hd) + (size_t)2 * hd * MM_LDT(MM_QT)) +
           sizeof(float) * (MM_BK + 2 * MM_QT) + sizeof(int32_t) * (MM_BK + MM_QT);
}
/* 32-bit words of one bf16 copy of [T, heads, hd] (either layout) */
static size_t mm_copy_words(int T, int heads, int hd) { return (size_t)MM_TP(T) * heads * hd / 2; }
#ifndef DMS_CUDA_EMUL
int cu_mma_supported(const cu_ctx *c, int head_dim) {
    if (c->att_fp32 || c->cc_major < 8 || head_dim < 16 || head_dim > MM_MAX_HD || head_dim % 16) return 0;
    return mm_dq_smem(head_dim) <= c->smem_optin; /* the largest of them */
}
size_t cu_mma_bwd_scratch(int T, int H, int KV, int hd) {
    return sizeof(uint32_t) * (4 * mm_copy_words(T, H, hd) + 3 * mm_copy_words(T, KV, hd));
}
static void mm_prep(cu_ctx *c, uint32_t *rowb, uint32_t *colb, const float *x, int T, int heads, int hd,
                    const char *op) {
    const dim3 grid((unsigned)(MM_TP(T) / 64), (unsigned)heads);
    cu_smem_opt_in(c, (const void *)k_mma_prep, mm_prep_smem(hd), op);
    k_mma_prep<<<grid, MM_WARPS * 32, mm_prep_smem(hd), c->stream>>>(rowb, colb, x, T, heads, hd);
    cu_check(c, op);
}

void cu_mma_dms_fwd(cu_ctx *c, float *out, float *lse, const float *q, const float *k, const float *v,
                    const float *log_keep, const int32_t *seg, int T, int H, int KV, int hd, int window, float scale) {
    const size_t wq = mm_copy_words(T, H, hd), wk = mm_copy_words(T, KV, hd);
    uint32_t *qb = (uint32_t *)cu_scratch(c, sizeof(uint32_t) * (wq + 2 * wk), "attention_dms_fwd");
    if (!qb) {
        cu_fill_nan(c, out, (size_t)T * H * hd);
        cu_fill_nan(c, lse, (size_t)T * H);
        return;
    }
    uint32_t *kb = qb + wq, *vt = kb + wk;
    mm_prep(c, qb, NULL, q, T, H, hd, "attention_dms_fwd");
    mm_prep(c, kb, NULL, k, T, KV, hd, "attention_dms_fwd");
    mm_prep(c, NULL, vt, v, T, KV, hd, "attention_dms_fwd");
    const size_t smem = mm_fwd_smem(hd);
    cu_smem_opt_in(c, (const void *)k_mma_fwd, smem, "attention_dms_fwd");
    const dim3 grid((unsigned)((T + MM_BQ - 1) / MM_BQ), (unsigned)H);
    k_mma_fwd<<<grid, MM_WARPS * 32, smem, c->stream>>>(out, lse, qb, kb, vt, log_keep, seg, T, H, KV, hd, window,
                                                       scale);
    cu_check(c, "attention_dms_fwd");
}

void cu_mma_dms_bwd(cu_ctx *c, void *scratch, float *dq, float *dk, float *dv, float *dlog_keep, const float *dout,
                    const float *lse, const float *D, const float *q, const float *k, const float *v,
                    const float *log_keep, const int32_t *seg, int T, int H, int KV, int hd, int window,
                    float scale) {
    const size_t wq = mm_copy_words(T, H, hd), wk = mm_copy_words(T, KV, hd);
    uint32_t *qb = (uint32_t *)scratch, *qt = qb + wq, *dob = qt + wq, *dot = dob + wq;
    uint32_t *kb = dot + wq, *vb = kb + wk, *kt = vb + wk;
    const char *op = "attention_dms_bwd";
    mm_prep(c, qb, qt, q, T, H, hd, op);
    mm_prep(c, dob, dot, dout, T, H, hd, op);
    mm_prep(c, kb, kt, k, T, KV, hd, op);
    mm_prep(c, vb, NULL, v, T, KV, hd, op);
    const size_t s_dq = mm_dq_smem(hd), s_dkv = mm_dkv_smem(hd);
    cu_smem_opt_in(c, (const void *)k_mma_dq, s_dq, op);
    cu_smem_opt_in(c, (const void *)k_mma_dkv, s_dkv, op);
    const dim3 gq((unsigned)((T + MM_BQ - 1) / MM_BQ), (unsigned)H);
    k_mma_dq<<<gq, MM_WARPS * 32, s_dq, c->stream>>>(dq, dob, lse, D, qb, kb, vb, kt, log_keep, seg, T, H, KV, hd,
                                                    window, scale);
    cu_check(c, op);
    const dim3 gk((unsigned)((T + MM_BK - 1) / MM_BK), (unsigned)KV);
    k_mma_dkv<<<gk, MM_WARPS * 32, s_dkv, c->stream>>>(dk, dv, dlog_keep, dob, dot, lse, D, qb, qt, kb, vb, log_keep,
                                                      seg, T, H, KV, hd, window, scale);
    cu_check(c, op);
}
#endif /* DMS_CUDA_EMUL */
