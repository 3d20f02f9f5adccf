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
 * k, v (and dO in the backward) to bf16 once per call, into scratch:
 * row-major copies [Tp, heads, hd] (Tp: T rounded up to MM_TP_ALIGN,
 * zeros past T), so that every tile moves as 16-byte asynchronous copies
 * (cp.async) without bounds checks, the next tile's while the tensor
 * cores work on this one (two shared buffers, one barrier a tile).
 * Fragments come from shared memory by ldmatrix: plain for operands whose
 * k runs along a row (Q K^T: the head dim), transposed (.trans) where k
 * runs down the tile (P V, dS K, P^T dO, dS^T Q: the tokens), so no
 * transposed copy exists. Shared rows are padded by MM_PAD elements so
 * that the 8 rows of each 8x8 matrix fall in distinct banks. The head dim
 * is a template parameter: every loop over it is unrolled with no guard
 * (a guard per product kept the compiler from overlapping the shared
 * loads with the products). Fragment layouts are those of the PTX ISA for
 * m16n8k16 (.bf16): with g = lane / 4 and t = lane % 4, A registers hold
 * (row g | g+8, cols 2t, 2t+1 | +8), B registers (rows 2t, 2t+1 | +8, col
 * g), C (row g | g+8, cols 2t, 2t+1). A product's C fragments are the
 * next product's A fragments (P V, dS K), so P and dS never leave the
 * registers.
 *  - forward: block per (MM_BQ queries, head), a warp per 16 queries; key
 *    tiles of MM_BK; online softmax with per-lane partial row sums.
 *  - dq: block per (MM_BQ queries, head); S and dP = dO V^T on the tensor
 *    cores, dS = P (dP - D), dq = scale dS K.
 *  - dk, dv, dlog_keep: block per (MM_BKV keys, kv head), a warp per 16
 *    keys, over the group's heads and query tiles of MM_QT from the keys
 *    on: S^T = K Q^T, dP^T = V dO^T, dv += P^T dO, dk += dS^T Q. Every
 *    gradient row is owned by one warp: no atomics, deterministic.
 * tests/test_flash_emul.cpp runs these kernels as host C++ with emulated
 * mma, ldmatrix and cp.async (DMS_CUDA_EMUL); test_ops cuda compares them
 * with the CPU backend at bf16 tolerances. */
#ifndef DMS_CUDA_EMUL
#include "kernels/cuda/cuda_internal.cuh"
#endif

#define MM_WARPS 8
#define MM_THREADS (MM_WARPS * 32) /* dq, dkv: a warp per 16 rows */
#define MM_BQ (16 * MM_WARPS)      /* queries per block: forward, dq */
#define MM_FWD_RW 2                /* forward: row tiles of 16 a warp */
#define MM_FWD_THREADS (MM_BQ / (16 * MM_FWD_RW) * 32)
#define MM_BK 64               /* keys per tile: forward, dq */
#define MM_BKV (16 * MM_WARPS) /* keys per block: dkv */
#define MM_QT 32               /* queries per tile: dkv */
#define MM_MAX_HD 128
#define MM_PAD 8                        /* bf16 elements of padding per shared row */
#define MM_LD(hd) (((hd) + MM_PAD) / 2) /* shared row stride in 32-bit words (bf16 pairs) */
#define MM_TP_ALIGN 128                 /* a multiple of MM_BQ, MM_BK, MM_BKV and MM_QT */
#define MM_TP(T) (((T) + MM_TP_ALIGN - 1) / MM_TP_ALIGN * MM_TP_ALIGN) /* tokens of the bf16 copies */
#define MM_PREP_THREADS 256

/* 16 bytes from global to shared memory, asynchronously (cp.async, in the
 * thread's current group); commit closes the group, wait waits for all of
 * the thread's groups (the kernels keep at most one in flight). */
#ifdef DMS_CUDA_EMUL
#define mm_cp16(dst, src) memcpy((dst), (src), 16)
static inline void mm_cp_commit(void) {}
static inline void mm_cp_wait(void) {}
#else
static __device__ __forceinline__ void mm_cp16(uint32_t *dst, const uint32_t *src) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(src) : "memory");
}
static __device__ __forceinline__ void mm_cp_commit(void) { asm volatile("cp.async.commit_group;" ::: "memory"); }
static __device__ __forceinline__ void mm_cp_wait(void) { asm volatile("cp.async.wait_group 0;" ::: "memory"); }
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
/* Four 8x8 bf16 matrices from shared memory: lane l gives the address of
 * row l % 8 of matrix l / 8; d[m] is this lane's part of matrix m (row
 * g, elements 2t, 2t+1), or with _t of its transpose (rows 2t, 2t+1,
 * column g). */
static __device__ __forceinline__ void mm_ldsm(uint32_t *d, const uint32_t *p) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(s)
                 : "memory");
}
static __device__ __forceinline__ void mm_ldsm_t(uint32_t *d, const uint32_t *p) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(s)
                 : "memory");
}
#endif

/* The bf16 copy rowb [Tp, heads, hd] of x ([T, heads, hd] fp32), zeros
 * past T: 4 words (8 elements) a thread; hd / 2 is a multiple of 4, so a
 * thread's words belong to one token. Grid: cdiv(words / 4, threads). */
__global__ void __launch_bounds__(MM_PREP_THREADS)
    k_mma_prep(uint32_t *rowb, const float *x, int T, int heads, int hd, size_t words) {
    const size_t w = 4 * ((size_t)blockIdx.x * blockDim.x + threadIdx.x);
    if (w >= words) return;
    const size_t row_words = (size_t)heads * hd / 2;
    const int in = w / row_words < (size_t)T;
    uint32_t r[4];
#pragma unroll
    for (int e = 0; e < 4; e++) r[e] = in ? mm_pack(x[2 * (w + e)], x[2 * (w + e) + 1]) : 0u;
#ifdef DMS_CUDA_EMUL
    memcpy(rowb + w, r, 16);
#else
    *(uint4 *)(rowb + w) = make_uint4(r[0], r[1], r[2], r[3]);
#endif
}

/* Rows [r0, r0 + N) of head hh of a bf16 copy xb into the tile s (stride
 * MM_LD(HD) words), asynchronously: 16-byte pieces, spread over the
 * block's NTHR threads. */
template <int HD, int N, int NTHR = MM_THREADS>
static __device__ __forceinline__ void mm_tile(uint32_t *s, const uint32_t *xb, int r0, int heads, int hh) {
    constexpr int cpr = HD / 8, n = N * cpr, LD = MM_LD(HD); /* 16-byte pieces per row, in all */
#pragma unroll
    for (int e = 0; e < (n + NTHR - 1) / NTHR; e++) {
        const int c = e * NTHR + (int)threadIdx.x;
        if (n % NTHR == 0 || c < n) {
            const int r = c / cpr, k = c - r * cpr;
            mm_cp16(s + r * LD + 4 * k, xb + ((size_t)(r0 + r) * heads + hh) * (HD / 2) + 4 * k);
        }
    }
}

/* The lane's row and column (words) in the ldmatrix address patterns:
 * A fragments and transposed B fragments (matrices ordered rows 0-7 /
 * 8-15 first, then columns), and B fragments of a row-major Y in X Y^T
 * (matrices ordered k-halves first, then n-tiles). */
struct mm_lanes {
    int ar, ac, br, bc;
};
static __device__ __forceinline__ mm_lanes mm_lane_offsets(int lane) {
    mm_lanes o;
    o.ar = (lane & 7) + ((lane >> 3) & 1) * 8;
    o.ac = (lane >> 4) * 4;
    o.br = (lane & 7) + (lane >> 4) * 8;
    o.bc = ((lane >> 3) & 1) * 4;
    return o;
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

/* Keys [j0, j0 + n) of kv head kh: documents and log-keep values (none past T) */
static __device__ __forceinline__ void mm_load_key_meta(int32_t *segk, float *lks, const float *log_keep,
                                                        const int32_t *seg, int j0, int n, int T, int KV, int kh) {
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        const int j = j0 + r;
        segk[r] = j < T ? seg[j] : -1;
        lks[r] = j < T && log_keep ? log_keep[(size_t)j * KV + kh] : 0.0f;
    }
}

/* Products over the head dim, RW row tiles of X (rows rw + 16 r ..
 * rw + 16 r + 15) against the NN n-tiles (8 rows each) of Y, both
 * row-major tiles with head dim HD: s[r] = X_r Y^T (Q K^T in the forward);
 * each B fragment serves the RW products. */
template <int HD, int NN, int RW>
static __device__ __forceinline__ void mm_product(float (*s)[NN][4], const uint32_t *X, const uint32_t *Y, int rw,
                                                  mm_lanes o) {
    constexpr int LD = MM_LD(HD);
#pragma unroll
    for (int r = 0; r < RW; r++)
#pragma unroll
        for (int n = 0; n < NN; n++) s[r][n][0] = s[r][n][1] = s[r][n][2] = s[r][n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        uint32_t a[RW][4], b[NN / 2][4]; /* every load of the step issued before its products */
#pragma unroll
        for (int r = 0; r < RW; r++) mm_ldsm(a[r], X + (rw + 16 * r + o.ar) * LD + 8 * kk + o.ac);
#pragma unroll
        for (int n = 0; n < NN; n += 2) mm_ldsm(b[n / 2], Y + (8 * n + o.br) * LD + 8 * kk + o.bc);
#pragma unroll
        for (int n = 0; n < NN; n += 2)
#pragma unroll
            for (int r = 0; r < RW; r++) {
                mm_mma(s[r][n], a[r], b[n / 2]);
                mm_mma(s[r][n + 1], a[r], b[n / 2] + 2);
            }
    }
}

/* The same for two products at once, s = X1 Y1^T and dp = X2 Y2^T: S and
 * dP in dq (Q K^T, dO V^T) and in dkv (K Q^T, V dO^T). */
template <int HD, int NN>
static __device__ __forceinline__ void mm_two_products(float (*s)[4], float (*dp)[4], const uint32_t *X1,
                                                       const uint32_t *X2, const uint32_t *Y1, const uint32_t *Y2,
                                                       int rw, mm_lanes o) {
    constexpr int LD = MM_LD(HD);
#pragma unroll
    for (int n = 0; n < NN; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[n][e] = dp[n][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        uint32_t a1[4], a2[4], b1[NN / 2][4], b2[NN / 2][4];
        mm_ldsm(a1, X1 + (rw + o.ar) * LD + 8 * kk + o.ac);
        mm_ldsm(a2, X2 + (rw + o.ar) * LD + 8 * kk + o.ac);
#pragma unroll
        for (int n = 0; n < NN; n += 2) {
            mm_ldsm(b1[n / 2], Y1 + (8 * n + o.br) * LD + 8 * kk + o.bc);
            mm_ldsm(b2[n / 2], Y2 + (8 * n + o.br) * LD + 8 * kk + o.bc);
        }
#pragma unroll
        for (int n = 0; n < NN; n += 2) {
            mm_mma(s[n], a1, b1[n / 2]);
            mm_mma(s[n + 1], a1, b1[n / 2] + 2);
            mm_mma(dp[n], a2, b2[n / 2]);
            mm_mma(dp[n + 1], a2, b2[n / 2] + 2);
        }
    }
}

/* acc[r][n] += C_r Y over the head dim's HD / 8 n-tiles, for RW row
 * tiles: C_r is a warp's 16 rows by KN * 16 columns as C fragments
 * (c[r][0..2 KN)), turned into A fragments in registers; Y is a row-major
 * tile (rows: those KN * 16 tokens, head dim HD) read transposed, each B
 * fragment serving the RW products: P V, dS K, P^T dO and dS^T Q. */
template <int HD, int KN, int RW>
static __device__ __forceinline__ void mm_accumulate(float (*acc)[HD / 8][4], float (*c)[2 * KN][4],
                                                     const uint32_t *Y, mm_lanes o) {
    constexpr int LD = MM_LD(HD);
#pragma unroll
    for (int kk = 0; kk < KN; kk++) {
        uint32_t a[RW][4];
#pragma unroll
        for (int r = 0; r < RW; r++) mm_c_to_a(a[r], c[r][2 * kk], c[r][2 * kk + 1]);
#pragma unroll
        for (int n0 = 0; n0 < HD / 8; n0 += 8) { /* up to four loads in flight, then their products */
            uint32_t b[4][4];
#pragma unroll
            for (int n = n0; n < n0 + 8 && n < HD / 8; n += 2)
                mm_ldsm_t(b[(n - n0) / 2], Y + (16 * kk + o.ar) * LD + 4 * n + o.ac);
#pragma unroll
            for (int n = n0; n < n0 + 8 && n < HD / 8; n += 2)
#pragma unroll
                for (int r = 0; r < RW; r++) {
                    mm_mma(acc[r][n], a[r], b[(n - n0) / 2]);
                    mm_mma(acc[r][n + 1], a[r], b[(n - n0) / 2] + 2);
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
/* q_lo..q_hi queries against keys k_lo..k_hi (rows queries: the forward
 * and dq) or keys against queries (dkv), and whether every key and query
 * shares one document (`same`, agreed by the whole warp). */
static __device__ __forceinline__ int mm_class(int q_lo, int q_hi, int k_lo, int k_hi, int T, int same, int window) {
    const int full = __all_sync(0xffffffffu, same) && q_hi < T && k_hi <= q_lo;
    if (!full) return MM_MASKED;
    if (q_lo - k_hi > window) return MM_FAR;
    if (q_hi - k_lo <= window) return MM_NEAR;
    return MM_MIXED;
}

/* A warp's tile of scores S (rows: its queries ia, ib = ia + 8 of
 * documents sa, sb; columns: keys j0 + 8n + 2t (+1)) made biased (log-keep
 * past the window) and masked, in log2 units; -inf where a pair is not
 * visible. Only a masked tile (the diagonal, document edges) tests each
 * pair; the others (cls warp-uniform) are branch-free. */
template <int NN>
static __device__ __forceinline__ void mm_scores(float (*s)[4], int cls, int ia, int ib, int sa, int sb, int j0,
                                                 int t, int T, const int32_t *segk, const float *lks, int has_lk,
                                                 int window, float scale2) {
    if (cls == MM_MASKED) {
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int jl = 8 * n + 2 * t + (e & 1), j = j0 + jl, i = e >> 1 ? ib : ia;
                if (i >= T || j > i || segk[jl] != (e >> 1 ? sb : sa)) s[n][e] = -INFINITY;
                else s[n][e] = scale2 * s[n][e] + (has_lk && i - j > window ? MM_LOG2E * lks[jl] : 0.0f);
            }
        return;
    }
    const int lk = has_lk && cls != MM_NEAR;
#pragma unroll
    for (int n = 0; n < NN; n++) {
        const int jl = 8 * n + 2 * t;
        const float b0 = lk ? MM_LOG2E * lks[jl] : 0.0f, b1 = lk ? MM_LOG2E * lks[jl + 1] : 0.0f;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int j = j0 + jl + (e & 1), i = e >> 1 ? ib : ia;
            const int biased = cls == MM_FAR || i - j > window;
            s[n][e] = scale2 * s[n][e] + (biased ? (e & 1 ? b1 : b0) : 0.0f);
        }
    }
}

/* Key tile j0 of kv head kh into buffer b (0, 1) of the query-major
 * kernels: K and V asynchronously, closing the thread's copy group; the
 * keys' documents and log-keep values by plain stores. */
template <int HD, int NTHR = MM_THREADS>
static __device__ __forceinline__ void mm_key_tile(uint32_t *KV0, int32_t *sk0, float *lk0, int b, const uint32_t *kb,
                                                   const uint32_t *vb, const float *log_keep, const int32_t *seg,
                                                   int j0, int T, int KV, int kh) {
    uint32_t *k = KV0 + 2 * b * MM_BK * MM_LD(HD);
    mm_tile<HD, MM_BK, NTHR>(k, kb, j0, KV, kh);
    mm_tile<HD, MM_BK, NTHR>(k + MM_BK * MM_LD(HD), vb, j0, KV, kh);
    mm_cp_commit();
    mm_load_key_meta(sk0 + b * MM_BK, lk0 + b * MM_BK, log_keep, seg, j0, MM_BK, T, KV, kh);
}
/* The class of the warp's 16 queries (block rows rw.., from i0) against
 * the key tile j0 with documents segk */
static __device__ __forceinline__ int mm_query_class(const int32_t *segq, const int32_t *segk, int i0, int rw, int j0,
                                                     int T, int window, int lane) {
    const int s0 = segq[rw];
    return mm_class(i0 + rw, i0 + rw + 15, j0, j0 + MM_BK - 1, T,
                    segk[lane] == s0 && segk[lane + 32] == s0 && segq[rw + (lane & 15)] == s0, window);
}

/* Shared memory of the query-major kernels: the block's query tiles (nq
 * of MM_BQ rows: Q; Q and dO), then two buffers of nk key tiles (MM_BK
 * rows: K, V), then per buffer the key tile's documents and log-keep
 * values, then the queries' metadata (nm arrays of MM_BQ). In words. */
static size_t mm_qmajor_words(int hd, int nq, int nk, int nm) {
    return (size_t)(nq * MM_BQ + 2 * nk * MM_BK) * MM_LD(hd) + 2 * 2 * MM_BK + (size_t)nm * MM_BQ;
}
static size_t mm_fwd_smem(int hd) { return sizeof(uint32_t) * mm_qmajor_words(hd, 1, 2, 1); }
static size_t mm_dq_smem(int hd) { return sizeof(uint32_t) * mm_qmajor_words(hd, 2, 2, 3); }
/* dkv: K and V (MM_BKV rows), two buffers of Q and dO tiles (MM_QT rows),
 * the keys' metadata (2 x MM_BKV), per buffer the queries' (3 x MM_QT) */
static size_t mm_dkv_smem(int hd) {
    return sizeof(uint32_t) * ((size_t)(2 * MM_BKV + 2 * 2 * MM_QT) * MM_LD(hd) + 2 * MM_BKV + 2 * 3 * MM_QT);
}

/* Forward: grid (ceil(T / MM_BQ), H), MM_FWD_THREADS threads: a warp per
 * 32 queries, two row tiles of 16 that share every K and V fragment. qb,
 * kb, vb: the row-major bf16 copies. */
template <int HD>
__global__ void __launch_bounds__(MM_FWD_THREADS)
    k_mma_fwd(float *out, float *lse, const uint32_t *qb, const uint32_t *kb, const uint32_t *vb,
              const float *log_keep, const int32_t *seg, int T, int H, int KV, int window, float scale) {
    extern __shared__ float sm[];
    constexpr int LD = MM_LD(HD), NT = HD / 8, RW = MM_FWD_RW;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int i0 = (gridDim.x - 1 - blockIdx.x) * MM_BQ, h = blockIdx.y, kh = h / (H / KV); /* longest first */
    const float scale2 = scale * MM_LOG2E; /* scores in log2 units: exp2 */
    const mm_lanes o = mm_lane_offsets(lane);
    uint32_t *Qs = (uint32_t *)sm, *KV0 = Qs + MM_BQ * LD; /* buffer b: K at KV0 + 2b MM_BK LD, V after it */
    float *lk0 = (float *)(KV0 + 4 * MM_BK * LD);
    int32_t *sk0 = (int32_t *)(lk0 + 2 * MM_BK), *segq = sk0 + 2 * MM_BK;
    const int j_end = min(i0 + MM_BQ, T);
    mm_tile<HD, MM_BQ, MM_FWD_THREADS>(Qs, qb, i0, H, h);
    mm_key_tile<HD, MM_FWD_THREADS>(KV0, sk0, lk0, 0, kb, vb, log_keep, seg, 0, T, KV, kh); /* one group with Q */
    for (int r = threadIdx.x; r < MM_BQ; r += blockDim.x) segq[r] = i0 + r < T ? seg[i0 + r] : -2;
    const int rw = w * 16 * RW; /* the warp's first row; this lane's rows: rw + 16 r + g (+ 8) */
    float acc[RW][NT][4], m[RW][2], l[RW][2];
#pragma unroll
    for (int r = 0; r < RW; r++) {
        m[r][0] = m[r][1] = -INFINITY;
        l[r][0] = l[r][1] = 0.0f;
#pragma unroll
        for (int n = 0; n < NT; n++) acc[r][n][0] = acc[r][n][1] = acc[r][n][2] = acc[r][n][3] = 0.0f;
    }
    for (int j0 = 0, b = 0; j0 < j_end; j0 += MM_BK, b ^= 1) {
        mm_cp_wait();
        __syncthreads(); /* tile b is in for everyone, and everyone is done with buffer b ^ 1 */
        if (j0 + MM_BK < j_end) /* the next tile, while this one is computed */
            mm_key_tile<HD, MM_FWD_THREADS>(KV0, sk0, lk0, b ^ 1, kb, vb, log_keep, seg, j0 + MM_BK, T, KV, kh);
        const uint32_t *Ks = KV0 + 2 * b * MM_BK * LD, *Vs = Ks + MM_BK * LD;
        const int32_t *segk = sk0 + b * MM_BK;
        const float *lks = lk0 + b * MM_BK;
        int cls[RW], any = 0; /* does any of this warp's rows see a key of the tile? */
#pragma unroll
        for (int r = 0; r < RW; r++) {
            cls[r] = mm_query_class(segq, segk, i0, rw + 16 * r, j0, T, window, lane);
            const int ia = i0 + rw + 16 * r + g, ib = ia + 8, sa = segq[ia - i0], sb = segq[ib - i0];
            if (cls[r] != MM_MASKED) any = 1;
            else
                for (int jl = t; jl < MM_BK; jl += 4) {
                    const int j = j0 + jl;
                    any |= (j <= ia && ia < T && segk[jl] == sa) || (j <= ib && ib < T && segk[jl] == sb);
                }
        }
        if (!__any_sync(0xffffffffu, any)) continue; /* warp-uniform */
        float s[RW][MM_BK / 8][4];
        mm_product<HD, MM_BK / 8, RW>(s, Qs, Ks, rw, o); /* S = Q K^T */
#pragma unroll
        for (int r = 0; r < RW; r++) {
            const int ia = i0 + rw + 16 * r + g, ib = ia + 8;
            mm_scores<MM_BK / 8>(s[r], cls[r], ia, ib, segq[ia - i0], segq[ib - i0], j0, t, T, segk, lks,
                                 log_keep != 0, window, scale2);
            float mx[2] = {-INFINITY, -INFINITY}, corr[2], ps[2] = {0.0f, 0.0f};
#pragma unroll
            for (int n = 0; n < MM_BK / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[r][n][e]);
#pragma unroll
            for (int q = 0; q < 2; q++) {
                const float mn = fmaxf(m[r][q], mm_quad_max(mx[q]));
                corr[q] = mn == -INFINITY ? 1.0f : exp2f(m[r][q] - mn); /* 0 while m was -inf */
                m[r][q] = mn;
            }
#pragma unroll
            for (int n = 0; n < MM_BK / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float p = s[r][n][e] == -INFINITY ? 0.0f : exp2f(s[r][n][e] - m[r][e >> 1]);
                    s[r][n][e] = p;
                    ps[e >> 1] += p;
                }
            l[r][0] = l[r][0] * corr[0] + ps[0];
            l[r][1] = l[r][1] * corr[1] + ps[1];
#pragma unroll
            for (int n = 0; n < NT; n++) {
                acc[r][n][0] *= corr[0], acc[r][n][1] *= corr[0];
                acc[r][n][2] *= corr[1], acc[r][n][3] *= corr[1];
            }
        }
        mm_accumulate<HD, MM_BK / 16, RW>(acc, s, Vs, o); /* O += P V */
    }
#pragma unroll
    for (int r = 0; r < RW; r++)
#pragma unroll
        for (int q = 0; q < 2; q++) {
            const int i = i0 + rw + 16 * r + g + 8 * q;
            const float lt = mm_quad_sum(l[r][q]); /* every lane takes part */
            if (i >= T) continue;
            const float inv = lt > 0.0f ? 1.0f / lt : 0.0f; /* nothing visible: zero output */
            float *orow = out + ((size_t)i * H + h) * HD;
#pragma unroll
            for (int n = 0; n < NT; n++) {
                orow[8 * n + 2 * t] = acc[r][n][2 * q] * inv;
                orow[8 * n + 2 * t + 1] = acc[r][n][2 * q + 1] * inv;
            }
            if (t == 0) lse[(size_t)i * H + h] = lt > 0.0f ? MM_LN2 * m[r][q] + logf(lt) : -INFINITY;
        }
}

/* dq: grid (ceil(T / MM_BQ), H). qb, dob, kb, vb: row-major bf16 copies. */
template <int HD>
__global__ void __launch_bounds__(MM_THREADS)
    k_mma_dq(float *dq, const uint32_t *dob, const float *lse, const float *D, const uint32_t *qb,
             const uint32_t *kb, const uint32_t *vb, const float *log_keep, const int32_t *seg, int T, int H, int KV,
             int window, float scale) {
    extern __shared__ float sm[];
    constexpr int LD = MM_LD(HD), NT = HD / 8;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int i0 = (gridDim.x - 1 - blockIdx.x) * MM_BQ, h = blockIdx.y, kh = h / (H / KV); /* longest first */
    const float scale2 = scale * MM_LOG2E;
    const mm_lanes o = mm_lane_offsets(lane);
    uint32_t *Qs = (uint32_t *)sm, *dOs = Qs + MM_BQ * LD, *KV0 = dOs + MM_BQ * LD;
    float *lk0 = (float *)(KV0 + 4 * MM_BK * LD);
    int32_t *sk0 = (int32_t *)(lk0 + 2 * MM_BK), *segq = sk0 + 2 * MM_BK;
    float *lseq = (float *)(segq + MM_BQ), *Dq = lseq + MM_BQ;
    const int j_end = min(i0 + MM_BQ, T);
    mm_tile<HD, MM_BQ>(Qs, qb, i0, H, h);
    mm_tile<HD, MM_BQ>(dOs, dob, i0, H, h);
    mm_key_tile<HD>(KV0, sk0, lk0, 0, kb, vb, log_keep, seg, 0, T, KV, kh); /* one group with Q and dO */
    mm_load_query_meta(segq, lseq, Dq, seg, lse, D, i0, MM_BQ, T, H, h);
    const int rw = w * 16, ia = i0 + rw + g, ib = ia + 8;
    float acc[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    for (int j0 = 0, b = 0; j0 < j_end; j0 += MM_BK, b ^= 1) {
        mm_cp_wait();
        __syncthreads();
        if (j0 + MM_BK < j_end) mm_key_tile<HD>(KV0, sk0, lk0, b ^ 1, kb, vb, log_keep, seg, j0 + MM_BK, T, KV, kh);
        const uint32_t *Ks = KV0 + 2 * b * MM_BK * LD, *Vs = Ks + MM_BK * LD;
        const int32_t *segk = sk0 + b * MM_BK;
        const float *lks = lk0 + b * MM_BK;
        const int sa = segq[rw + g], sb = segq[rw + g + 8];
        const float la = lseq[rw + g], lb = lseq[rw + g + 8], Da = Dq[rw + g], Db = Dq[rw + g + 8];
        /* a full tile's rows all see their diagonal key: finite lse */
        const int cls = mm_query_class(segq, segk, i0, rw, j0, T, window, lane);
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
        mm_two_products<HD, MM_BK / 8>(s, dp, Qs, dOs, Ks, Vs, rw, o); /* S = Q K^T, dP = dO V^T */
        mm_scores<MM_BK / 8>(s, cls, ia, ib, sa, sb, j0, t, T, segk, lks, log_keep != 0, window, scale2);
#pragma unroll
        for (int n = 0; n < MM_BK / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = e >> 1;
                const float L = r ? lb : la; /* -inf: the row sees nothing */
                s[n][e] = s[n][e] == -INFINITY || L == -INFINITY ? 0.0f
                                                                 : exp2f(s[n][e] - L) * (dp[n][e] - (r ? Db : Da));
            }
        mm_accumulate<HD, MM_BK / 16, 1>(&acc, &s, Ks, o); /* dQ += dS K */
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = r ? ib : ia;
        if (i >= T) continue;
        float *out = dq + ((size_t)i * H + h) * HD;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            out[8 * n + 2 * t] = scale * acc[n][2 * r];
            out[8 * n + 2 * t + 1] = scale * acc[n][2 * r + 1];
        }
    }
}

/* dk, dv, dlog_keep: grid (ceil(T / MM_BKV), KV). kb, vb, qb, dob:
 * row-major bf16 copies. The block walks the group's heads and, for each,
 * the query tiles from its first key on, as one sequence of tiles (the
 * next one loading while this one is computed). */
template <int HD>
__global__ void __launch_bounds__(MM_THREADS)
    k_mma_dkv(float *dk, float *dv, float *dlog_keep, const uint32_t *dob, const float *lse, const float *D,
              const uint32_t *qb, const uint32_t *kb, const uint32_t *vb, const float *log_keep, const int32_t *seg,
              int T, int H, int KV, int window, float scale) {
    extern __shared__ float sm[];
    constexpr int LD = MM_LD(HD), NT = HD / 8;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int j0 = blockIdx.x * MM_BKV, kh = blockIdx.y, group = H / KV;
    const float scale2 = scale * MM_LOG2E;
    const mm_lanes o = mm_lane_offsets(lane);
    uint32_t *Ks = (uint32_t *)sm, *Vs = Ks + MM_BKV * LD, *QD0 = Vs + MM_BKV * LD; /* buffer b: Q, then dO */
    float *lks = (float *)(QD0 + 4 * MM_QT * LD);
    int32_t *segk = (int32_t *)(lks + MM_BKV), *sq0 = segk + MM_BKV; /* per buffer: segq, lseq, Dq */
    const int nq = (T - j0 + MM_QT - 1) / MM_QT, tiles = group * nq; /* query tiles a head, in all */
    mm_tile<HD, MM_BKV>(Ks, kb, j0, KV, kh);
    mm_tile<HD, MM_BKV>(Vs, vb, j0, KV, kh);
    mm_tile<HD, MM_QT>(QD0, qb, j0, H, kh * group);
    mm_tile<HD, MM_QT>(QD0 + MM_QT * LD, dob, j0, H, kh * group);
    mm_cp_commit();
    mm_load_key_meta(segk, lks, log_keep, seg, j0, MM_BKV, T, KV, kh);
    mm_load_query_meta(sq0, (float *)sq0 + MM_QT, (float *)sq0 + 2 * MM_QT, seg, lse, D, j0, MM_QT, T, H,
                       kh * group);
    const int rw = w * 16, ja = j0 + rw + g, jb = ja + 8; /* this lane's two key rows */
    float gk[NT][4], gv[NT][4], glk[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < NT; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) gk[n][e] = gv[n][e] = 0.0f;
    for (int it = 0, b = 0; it < tiles; it++, b ^= 1) {
        const int i0 = j0 + (it % nq) * MM_QT;
        mm_cp_wait();
        __syncthreads(); /* tile b (and, at first, K and V) is in; buffer b ^ 1 is free */
        if (it + 1 < tiles) {
            const int h1 = kh * group + (it + 1) / nq, i1 = j0 + ((it + 1) % nq) * MM_QT;
            uint32_t *nx = QD0 + 2 * (b ^ 1) * MM_QT * LD;
            int32_t *sq = sq0 + 3 * (b ^ 1) * MM_QT;
            mm_tile<HD, MM_QT>(nx, qb, i1, H, h1);
            mm_tile<HD, MM_QT>(nx + MM_QT * LD, dob, i1, H, h1);
            mm_cp_commit();
            mm_load_query_meta(sq, (float *)sq + MM_QT, (float *)sq + 2 * MM_QT, seg, lse, D, i1, MM_QT, T, H, h1);
        }
        const uint32_t *Qs = QD0 + 2 * b * MM_QT * LD, *dOs = Qs + MM_QT * LD;
        const int32_t *segq = sq0 + 3 * b * MM_QT;
        const float *lseq = (const float *)segq + MM_QT, *Dq = lseq + MM_QT;
        const int sa = segk[rw + g], sb = segk[rw + g + 8], s0 = segk[rw];
        const float lka = lks[rw + g], lkb = lks[rw + g + 8];
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
        mm_two_products<HD, MM_QT / 8>(s, dp, Ks, Vs, Qs, dOs, rw, o); /* S^T = K Q^T, dP^T = V dO^T */
        /* s becomes P^T, dp becomes dS^T (row: key, column: query) */
        if (cls == MM_MASKED) { /* each pair tested */
#pragma unroll
            for (int n = 0; n < MM_QT / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int r = e >> 1, il = 8 * n + 2 * t + (e & 1), i = i0 + il, j = r ? jb : ja;
                    float p = 0.0f, gs = 0.0f;
                    if (i < T && j < T && j <= i && segq[il] == (r ? sb : sa) && lseq[il] != -INFINITY) {
                        /* biased: its gradient, also where log_keep is NULL (0) */
                        const int biased = i - j > window;
                        const float x = scale2 * s[n][e] + (biased && log_keep ? MM_LOG2E * (r ? lkb : lka) : 0.0f);
                        if (x != -INFINITY) p = exp2f(x - lseq[il]);
                        gs = p * (dp[n][e] - Dq[il]);
                        if (biased) glk[r] += gs;
                    }
                    s[n][e] = p;
                    dp[n][e] = gs;
                }
        } else { /* every pair visible, every lse finite: branch-free */
            const float ba = log_keep ? MM_LOG2E * lka : 0.0f, bb = log_keep ? MM_LOG2E * lkb : 0.0f;
#pragma unroll
            for (int n = 0; n < MM_QT / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int r = e >> 1, il = 8 * n + 2 * t + (e & 1);
                    const int biased = cls != MM_NEAR && (cls == MM_FAR || i0 + il - (r ? jb : ja) > window);
                    const float p = exp2f(scale2 * s[n][e] + (biased ? (r ? bb : ba) : 0.0f) - lseq[il]);
                    const float gs = p * (dp[n][e] - Dq[il]);
                    glk[r] += biased ? gs : 0.0f;
                    s[n][e] = p;
                    dp[n][e] = gs;
                }
        }
        mm_accumulate<HD, MM_QT / 16, 1>(&gv, &s, dOs, o); /* dV += P^T dO */
        mm_accumulate<HD, MM_QT / 16, 1>(&gk, &dp, Qs, o); /* dK += dS^T Q */
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int j = r ? jb : ja;
        const float lk_sum = mm_quad_sum(glk[r]); /* every lane takes part */
        if (j >= T) continue;
        float *gko = dk + ((size_t)j * KV + kh) * HD, *gvo = dv + ((size_t)j * KV + kh) * HD;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            gko[8 * n + 2 * t] = scale * gk[n][2 * r];
            gko[8 * n + 2 * t + 1] = scale * gk[n][2 * r + 1];
            gvo[8 * n + 2 * t] = gv[n][2 * r];
            gvo[8 * n + 2 * t + 1] = gv[n][2 * r + 1];
        }
        if (dlog_keep && t == 0) dlog_keep[(size_t)j * KV + kh] = lk_sum;
    }
}

/* The instance of a kernel for a head dim (a multiple of 16 up to MM_MAX_HD) */
#define MM_FOR_HD(kernel, hd)                                                                                   \
    ((hd) == 16    ? kernel<16>                                                                                 \
     : (hd) == 32  ? kernel<32>                                                                                 \
     : (hd) == 48  ? kernel<48>                                                                                 \
     : (hd) == 64  ? kernel<64>                                                                                 \
     : (hd) == 80  ? kernel<80>                                                                                 \
     : (hd) == 96  ? kernel<96>                                                                                 \
     : (hd) == 112 ? kernel<112>                                                                                \
                   : kernel<128>)

/* 32-bit words of one bf16 copy of [T, heads, hd] */
static size_t mm_copy_words(int T, int heads, int hd) { return (size_t)MM_TP(T) * heads * hd / 2; }
/* blocks of k_mma_prep for a copy of that many words */
static unsigned mm_prep_blocks(size_t words) {
    return (unsigned)((words / 4 + MM_PREP_THREADS - 1) / MM_PREP_THREADS);
}
#ifndef DMS_CUDA_EMUL
int cu_mma_supported(const cu_ctx *c, int head_dim) {
    if (c->att_fp32 || c->cc_major < 8 || head_dim < 16 || head_dim > MM_MAX_HD || head_dim % 16) return 0;
    return mm_dq_smem(head_dim) <= c->smem_optin; /* the largest of them */
}
size_t cu_mma_bwd_scratch(int T, int H, int KV, int hd) {
    return sizeof(uint32_t) * (2 * mm_copy_words(T, H, hd) + 2 * mm_copy_words(T, KV, hd));
}
static void mm_prep(cu_ctx *c, uint32_t *rowb, const float *x, int T, int heads, int hd, const char *op) {
    const size_t words = mm_copy_words(T, heads, hd);
    k_mma_prep<<<mm_prep_blocks(words), MM_PREP_THREADS, 0, c->stream>>>(rowb, x, T, heads, hd, words);
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
    uint32_t *kb = qb + wq, *vb = kb + wk;
    mm_prep(c, qb, q, T, H, hd, "attention_dms_fwd");
    mm_prep(c, kb, k, T, KV, hd, "attention_dms_fwd");
    mm_prep(c, vb, v, T, KV, hd, "attention_dms_fwd");
    const size_t smem = mm_fwd_smem(hd);
    void (*f)(float *, float *, const uint32_t *, const uint32_t *, const uint32_t *, const float *, const int32_t *,
              int, int, int, int, float) = MM_FOR_HD(k_mma_fwd, hd);
    cu_smem_opt_in(c, (const void *)f, smem, "attention_dms_fwd");
    const dim3 grid((unsigned)((T + MM_BQ - 1) / MM_BQ), (unsigned)H);
    f<<<grid, MM_FWD_THREADS, smem, c->stream>>>(out, lse, qb, kb, vb, log_keep, seg, T, H, KV, window, scale);
    cu_check(c, "attention_dms_fwd");
}

void cu_mma_dms_bwd(cu_ctx *c, void *scratch, float *dq, float *dk, float *dv, float *dlog_keep, const float *dout,
                    const float *lse, const float *D, const float *q, const float *k, const float *v,
                    const float *log_keep, const int32_t *seg, int T, int H, int KV, int hd, int window,
                    float scale) {
    const size_t wq = mm_copy_words(T, H, hd), wk = mm_copy_words(T, KV, hd);
    uint32_t *qb = (uint32_t *)scratch, *dob = qb + wq, *kb = dob + wq, *vb = kb + wk;
    const char *op = "attention_dms_bwd";
    mm_prep(c, qb, q, T, H, hd, op);
    mm_prep(c, dob, dout, T, H, hd, op);
    mm_prep(c, kb, k, T, KV, hd, op);
    mm_prep(c, vb, v, T, KV, hd, op);
    const size_t s_dq = mm_dq_smem(hd), s_dkv = mm_dkv_smem(hd);
    void (*fq)(float *, const uint32_t *, const float *, const float *, const uint32_t *, const uint32_t *,
               const uint32_t *, const float *, const int32_t *, int, int, int, int, float) = MM_FOR_HD(k_mma_dq, hd);
    void (*fk)(float *, float *, float *, const uint32_t *, const float *, const float *, const uint32_t *,
               const uint32_t *, const uint32_t *, const float *, const int32_t *, int, int, int, int, float) =
        MM_FOR_HD(k_mma_dkv, hd);
    cu_smem_opt_in(c, (const void *)fq, s_dq, op);
    cu_smem_opt_in(c, (const void *)fk, s_dkv, op);
    const dim3 gq((unsigned)((T + MM_BQ - 1) / MM_BQ), (unsigned)H);
    fq<<<gq, MM_THREADS, s_dq, c->stream>>>(dq, dob, lse, D, qb, kb, vb, log_keep, seg, T, H, KV, window, scale);
    cu_check(c, op);
    const dim3 gk((unsigned)((T + MM_BKV - 1) / MM_BKV), (unsigned)KV);
    fk<<<gk, MM_THREADS, s_dkv, c->stream>>>(dk, dv, dlog_keep, dob, lse, D, qb, kb, vb, log_keep, seg, T, H, KV,
                                            window, scale);
    cu_check(c, op);
}
#endif /* DMS_CUDA_EMUL */
