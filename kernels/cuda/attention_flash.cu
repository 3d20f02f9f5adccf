/* attention_flash.cu - the tiled (flash) DMS attention, forward and
 * backward, for head dims up to FL_MAX_HD: the same op as the reference
 * kernels of attention_dms.cu (causal, per document, log-keep bias on keys
 * more than `window` back, GQA), without a score row in global memory.
 * attention_dms.cu runs these where the head dim and the device's shared
 * memory allow (hd 128 needs 106 KiB a block: Ampere and Hopper) and keeps
 * its reference kernels for the rest.
 *
 * Layout: a block of FL_WARPS warps; a warp owns FL_ROWS rows (queries in
 * the forward and dq, keys in dk/dv) and its 32 lanes are the 32 columns
 * of a tile (keys, or queries in dk/dv). Tiles sit in shared memory with a
 * row stride of hd + 1, so that lanes reading one column each of 32 rows
 * hit 32 banks, and lanes reading 32 channels of one row do too. Each lane
 * keeps FL_MAX_HD / 32 output channels per row in registers.
 *  - forward: block per (64 queries, head); online softmax over key tiles
 *    of 32; out and lse.
 *  - dq: block per (64 queries, head); P from lse, dS = P (dO.V - D),
 *    dq = scale sum dS K.
 *  - dk, dv, dlog_keep: block per (32 keys, kv head), over the group's
 *    heads and the query tiles from the keys on; every gradient row is
 *    owned by one warp, so no atomics.
 * Every sum runs in a fixed order: deterministic. D = rowsum(dO * O) comes
 * from attention_dms.cu's kernel. */
#ifndef DMS_CUDA_EMUL /* tests/test_flash_emul.cpp runs the kernels as host C++ */
#include "kernels/cuda/cuda_internal.cuh"
#endif

#define FL_WARPS 4
#define FL_ROWS 16                      /* query rows per warp (forward, dq) */
#define FL_KROWS 8                      /* key rows per warp (dk, dv) */
#define FL_BQ (FL_WARPS * FL_ROWS)      /* 64 queries per block */
#define FL_BK (FL_WARPS * FL_KROWS)     /* 32 keys per block of the dk/dv pass */
#define FL_CH 4                         /* channels per lane */
#define FL_MAX_HD (32 * FL_CH)          /* 128 */
#define FL_FULL 0xffffffffu

/* rows [r0, r0 + n) of x ([T, heads, hd], head hh) into s[n][ld]; rows
 * past T are zeros */
static __device__ __forceinline__ void fl_load(float *s, int ld, const float *x, int r0, int n, int T, int heads,
                                               int hh, int hd) {
    for (int e = threadIdx.x; e < n * hd; e += blockDim.x) {
        const int r = e / hd, d = e % hd, t = r0 + r;
        s[r * ld + d] = t < T ? x[((size_t)t * heads + hh) * hd + d] : 0.0f;
    }
}

/* Key tile j0 of kv head kh for the query-major kernels: K and V rows,
 * their documents and log-keep values (0 where there is none). */
static __device__ __forceinline__ void fl_load_keys(float *Ks, float *Vs, int32_t *segk, float *lks, int ld,
                                                    const float *k, const float *v, const float *log_keep,
                                                    const int32_t *seg, int j0, int T, int KV, int kh, int hd) {
    fl_load(Ks, ld, k, j0, 32, T, KV, kh, hd);
    fl_load(Vs, ld, v, j0, 32, T, KV, kh, hd);
    if (threadIdx.x < 32) {
        const int j = j0 + threadIdx.x;
        segk[threadIdx.x] = j < T ? seg[j] : 0;
        lks[threadIdx.x] = j < T && log_keep ? log_keep[(size_t)j * KV + kh] : 0.0f;
    }
}

/* acc[r][c] += sum over the tile's 32 columns x of W[r][x] X[x][lane + 32c]
 * (W: this warp's [FL_ROWS][32] weights in shared memory, X: a tile with
 * row stride ld): P V in the forward, dS K in dq. */
static __device__ __forceinline__ void fl_accumulate(float (*acc)[FL_CH], const float *W, const float *X, int ld,
                                                     int hd, int lane) {
    for (int x = 0; x < 32; x++) {
        float xv[FL_CH];
#pragma unroll
        for (int c = 0; c < FL_CH; c++) {
            const int ch = lane + 32 * c;
            xv[c] = ch < hd ? X[x * ld + ch] : 0.0f;
        }
#pragma unroll
        for (int rr = 0; rr < FL_ROWS; rr++) {
            const float w = W[rr * 32 + x];
#pragma unroll
            for (int c = 0; c < FL_CH; c++) acc[rr][c] += w * xv[c];
        }
    }
}

/* Forward: grid (ceil(T / 64), H). */
__global__ void k_flash_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                            const float *log_keep, const int32_t *seg, int T, int H, int KV, int hd, int window,
                            float scale) {
    extern __shared__ float sm[];
    const int ld = hd + 1, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int i0 = blockIdx.x * FL_BQ, h = blockIdx.y, kh = h / (H / KV);
    float *Qs = sm, *Ks = Qs + FL_BQ * ld, *Vs = Ks + 32 * ld, *Ps = Vs + 32 * ld + w * FL_ROWS * 32;
    float *lks = Vs + 32 * ld + FL_WARPS * FL_ROWS * 32;
    int32_t *segk = (int32_t *)(lks + 32), *segq = segk + 32;
    fl_load(Qs, ld, q, i0, FL_BQ, T, H, h, hd);
    for (int r = threadIdx.x; r < FL_BQ; r += blockDim.x) segq[r] = i0 + r < T ? seg[i0 + r] : 0;
    float m[FL_ROWS], l[FL_ROWS], acc[FL_ROWS][FL_CH];
#pragma unroll
    for (int rr = 0; rr < FL_ROWS; rr++) {
        m[rr] = -INFINITY;
        l[rr] = 0.0f;
#pragma unroll
        for (int c = 0; c < FL_CH; c++) acc[rr][c] = 0.0f;
    }
    const int rw = w * FL_ROWS; /* this warp's first row in the tile */
    const int j_end = min(i0 + FL_BQ, T);
    for (int j0 = 0; j0 < j_end; j0 += 32) {
        __syncthreads(); /* the previous tile's readers are done (and Qs, segq are in) */
        fl_load_keys(Ks, Vs, segk, lks, ld, k, v, log_keep, seg, j0, T, KV, kh, hd);
        __syncthreads();
        const int j = j0 + lane;
        int any = 0;
#pragma unroll
        for (int rr = 0; rr < FL_ROWS; rr++) {
            const int i = i0 + rw + rr;
            any |= i < T && j <= i && segk[lane] == segq[rw + rr];
        }
        if (!__any_sync(FL_FULL, any)) continue; /* warp-uniform: no key of this tile is visible */
        float s[FL_ROWS];
#pragma unroll
        for (int rr = 0; rr < FL_ROWS; rr++) s[rr] = 0.0f;
        for (int d = 0; d < hd; d++) {
            const float kd = Ks[lane * ld + d];
#pragma unroll
            for (int rr = 0; rr < FL_ROWS; rr++) s[rr] += Qs[(rw + rr) * ld + d] * kd;
        }
#pragma unroll
        for (int rr = 0; rr < FL_ROWS; rr++) {
            const int i = i0 + rw + rr;
            float x = -INFINITY;
            if (i < T && j <= i && segk[lane] == segq[rw + rr]) {
                x = scale * s[rr];
                if (log_keep && i - j > window) x += lks[lane];
            }
            const float mnew = fmaxf(m[rr], cu_warp_max(x));
            float p = 0.0f;
            if (mnew != -INFINITY) { /* warp-uniform */
                const float corr = expf(m[rr] - mnew); /* 0 while m was -inf */
                p = expf(x - mnew);
                l[rr] = l[rr] * corr + cu_warp_sum(p);
#pragma unroll
                for (int c = 0; c < FL_CH; c++) acc[rr][c] *= corr;
                m[rr] = mnew;
            }
            Ps[rr * 32 + lane] = p;
        }
        __syncwarp();
        fl_accumulate(acc, Ps, Vs, ld, hd, lane);
        __syncwarp(); /* Ps is rewritten by the next tile */
    }
#pragma unroll
    for (int rr = 0; rr < FL_ROWS; rr++) {
        const int i = i0 + rw + rr;
        if (i >= T) break;
        float *o = out + ((size_t)i * H + h) * hd;
        const float inv = l[rr] > 0.0f ? 1.0f / l[rr] : 0.0f; /* nothing visible: zero output */
#pragma unroll
        for (int c = 0; c < FL_CH; c++) {
            const int ch = lane + 32 * c;
            if (ch < hd) o[ch] = acc[rr][c] * inv;
        }
        if (lane == 0) lse[(size_t)i * H + h] = l[rr] > 0.0f ? m[rr] + logf(l[rr]) : -INFINITY;
    }
}

/* dq: grid (ceil(T / 64), H). */
__global__ void k_flash_dq(float *dq, const float *dout, const float *lse, const float *D, const float *q,
                           const float *k, const float *v, const float *log_keep, const int32_t *seg, int T, int H,
                           int KV, int hd, int window, float scale) {
    extern __shared__ float sm[];
    const int ld = hd + 1, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int i0 = blockIdx.x * FL_BQ, h = blockIdx.y, kh = h / (H / KV);
    float *Qs = sm, *dOs = Qs + FL_BQ * ld, *Ks = dOs + FL_BQ * ld, *Vs = Ks + 32 * ld;
    float *Ss = Vs + 32 * ld + w * FL_ROWS * 32;
    float *lks = Vs + 32 * ld + FL_WARPS * FL_ROWS * 32, *lseq = lks + 32, *Dq = lseq + FL_BQ;
    int32_t *segk = (int32_t *)(Dq + FL_BQ), *segq = segk + 32;
    fl_load(Qs, ld, q, i0, FL_BQ, T, H, h, hd);
    fl_load(dOs, ld, dout, i0, FL_BQ, T, H, h, hd);
    for (int r = threadIdx.x; r < FL_BQ; r += blockDim.x) {
        const int i = i0 + r;
        segq[r] = i < T ? seg[i] : 0;
        lseq[r] = i < T ? lse[(size_t)i * H + h] : -INFINITY;
        Dq[r] = i < T ? D[(size_t)i * H + h] : 0.0f;
    }
    float acc[FL_ROWS][FL_CH];
#pragma unroll
    for (int rr = 0; rr < FL_ROWS; rr++) {
#pragma unroll
        for (int c = 0; c < FL_CH; c++) acc[rr][c] = 0.0f;
    }
    const int rw = w * FL_ROWS;
    const int j_end = min(i0 + FL_BQ, T);
    for (int j0 = 0; j0 < j_end; j0 += 32) {
        __syncthreads();
        fl_load_keys(Ks, Vs, segk, lks, ld, k, v, log_keep, seg, j0, T, KV, kh, hd);
        __syncthreads();
        const int j = j0 + lane;
        int any = 0;
#pragma unroll
        for (int rr = 0; rr < FL_ROWS; rr++) {
            const int i = i0 + rw + rr;
            any |= i < T && j <= i && segk[lane] == segq[rw + rr] && lseq[rw + rr] != -INFINITY;
        }
        if (!__any_sync(FL_FULL, any)) continue;
        float s[FL_ROWS], dp[FL_ROWS];
#pragma unroll
        for (int rr = 0; rr < FL_ROWS; rr++) s[rr] = dp[rr] = 0.0f;
        for (int d = 0; d < hd; d++) {
            const float kd = Ks[lane * ld + d], vd = Vs[lane * ld + d];
#pragma unroll
            for (int rr = 0; rr < FL_ROWS; rr++) {
                s[rr] += Qs[(rw + rr) * ld + d] * kd;
                dp[rr] += dOs[(rw + rr) * ld + d] * vd;
            }
        }
#pragma unroll
        for (int rr = 0; rr < FL_ROWS; rr++) {
            const int i = i0 + rw + rr;
            float g = 0.0f;
            if (i < T && j <= i && segk[lane] == segq[rw + rr] && lseq[rw + rr] != -INFINITY) {
                float x = scale * s[rr];
                if (log_keep && i - j > window) x += lks[lane];
                if (x != -INFINITY) g = expf(x - lseq[rw + rr]) * (dp[rr] - Dq[rw + rr]);
            }
            Ss[rr * 32 + lane] = g;
        }
        __syncwarp();
        fl_accumulate(acc, Ss, Ks, ld, hd, lane);
        __syncwarp();
    }
#pragma unroll
    for (int rr = 0; rr < FL_ROWS; rr++) {
        const int i = i0 + rw + rr;
        if (i >= T) break;
        float *o = dq + ((size_t)i * H + h) * hd;
#pragma unroll
        for (int c = 0; c < FL_CH; c++) {
            const int ch = lane + 32 * c;
            if (ch < hd) o[ch] = scale * acc[rr][c];
        }
    }
}

/* dk, dv, dlog_keep: grid (ceil(T / 32), KV). */
__global__ void k_flash_dkv(float *dk, float *dv, float *dlog_keep, const float *dout, const float *lse,
                            const float *D, const float *q, const float *k, const float *v, const float *log_keep,
                            const int32_t *seg, int T, int H, int KV, int hd, int window, float scale) {
    extern __shared__ float sm[];
    const int ld = hd + 1, lane = threadIdx.x & 31, w = threadIdx.x >> 5, group = H / KV;
    const int j0 = blockIdx.x * FL_BK, kh = blockIdx.y;
    float *Ks = sm, *Vs = Ks + FL_BK * ld, *Qs = Vs + FL_BK * ld, *dOs = Qs + 32 * ld;
    float *Ps = dOs + 32 * ld + w * FL_KROWS * 32, *Gs = Ps + FL_WARPS * FL_KROWS * 32;
    float *lks = dOs + 32 * ld + 2 * FL_WARPS * FL_KROWS * 32, *lseq = lks + FL_BK, *Dq = lseq + 32;
    int32_t *segk = (int32_t *)(Dq + 32), *segq = segk + FL_BK;
    fl_load(Ks, ld, k, j0, FL_BK, T, KV, kh, hd);
    fl_load(Vs, ld, v, j0, FL_BK, T, KV, kh, hd);
    for (int r = threadIdx.x; r < FL_BK; r += blockDim.x) {
        const int j = j0 + r;
        segk[r] = j < T ? seg[j] : 0;
        lks[r] = j < T && log_keep ? log_keep[(size_t)j * KV + kh] : 0.0f;
    }
    const int rw = w * FL_KROWS; /* this warp's first key in the tile */
    float gk[FL_KROWS][FL_CH], gv[FL_KROWS][FL_CH], glk[FL_KROWS];
#pragma unroll
    for (int rr = 0; rr < FL_KROWS; rr++) {
        glk[rr] = 0.0f;
#pragma unroll
        for (int c = 0; c < FL_CH; c++) gk[rr][c] = gv[rr][c] = 0.0f;
    }
    for (int hh = 0; hh < group; hh++) {
        const int h = kh * group + hh;
        for (int i0 = j0; i0 < T; i0 += 32) { /* queries before the tile see none of its keys */
            __syncthreads();
            fl_load(Qs, ld, q, i0, 32, T, H, h, hd);
            fl_load(dOs, ld, dout, i0, 32, T, H, h, hd);
            if (threadIdx.x < 32) {
                const int i = i0 + threadIdx.x;
                segq[threadIdx.x] = i < T ? seg[i] : 0;
                lseq[threadIdx.x] = i < T ? lse[(size_t)i * H + h] : -INFINITY;
                Dq[threadIdx.x] = i < T ? D[(size_t)i * H + h] : 0.0f;
            }
            __syncthreads();
            const int i = i0 + lane;
            const int qok = i < T && lseq[lane] != -INFINITY;
            int any = 0;
#pragma unroll
            for (int rr = 0; rr < FL_KROWS; rr++) {
                const int j = j0 + rw + rr;
                any |= qok && j < T && j <= i && segq[lane] == segk[rw + rr];
            }
            if (!__any_sync(FL_FULL, any)) continue;
            float s[FL_KROWS], dp[FL_KROWS];
#pragma unroll
            for (int rr = 0; rr < FL_KROWS; rr++) s[rr] = dp[rr] = 0.0f;
            for (int d = 0; d < hd; d++) {
                const float qd = Qs[lane * ld + d], dod = dOs[lane * ld + d];
#pragma unroll
                for (int rr = 0; rr < FL_KROWS; rr++) {
                    s[rr] += Ks[(rw + rr) * ld + d] * qd;
                    dp[rr] += Vs[(rw + rr) * ld + d] * dod;
                }
            }
#pragma unroll
            for (int rr = 0; rr < FL_KROWS; rr++) {
                const int j = j0 + rw + rr;
                float p = 0.0f, g = 0.0f;
                if (qok && j < T && j <= i && segq[lane] == segk[rw + rr]) {
                    const int biased = i - j > window;
                    const float x = scale * s[rr] + (biased ? lks[rw + rr] : 0.0f);
                    if (x != -INFINITY) p = expf(x - lseq[lane]);
                    g = p * (dp[rr] - Dq[lane]);
                    if (biased) glk[rr] += g;
                }
                Ps[rr * 32 + lane] = p;
                Gs[rr * 32 + lane] = g;
            }
            __syncwarp();
            for (int ii = 0; ii < 32; ii++) {
                float qq[FL_CH], oo[FL_CH];
#pragma unroll
                for (int c = 0; c < FL_CH; c++) {
                    const int ch = lane + 32 * c;
                    qq[c] = ch < hd ? Qs[ii * ld + ch] : 0.0f;
                    oo[c] = ch < hd ? dOs[ii * ld + ch] : 0.0f;
                }
#pragma unroll
                for (int rr = 0; rr < FL_KROWS; rr++) {
                    const float g = Gs[rr * 32 + ii], p = Ps[rr * 32 + ii];
#pragma unroll
                    for (int c = 0; c < FL_CH; c++) {
                        gk[rr][c] += g * qq[c];
                        gv[rr][c] += p * oo[c];
                    }
                }
            }
            __syncwarp();
        }
    }
#pragma unroll
    for (int rr = 0; rr < FL_KROWS; rr++) {
        const int j = j0 + rw + rr;
        const float lk_sum = cu_warp_sum(glk[rr]); /* every lane takes part */
        if (j >= T) continue;
        float *gko = dk + ((size_t)j * KV + kh) * hd, *gvo = dv + ((size_t)j * KV + kh) * hd;
#pragma unroll
        for (int c = 0; c < FL_CH; c++) {
            const int ch = lane + 32 * c;
            if (ch < hd) {
                gko[ch] = scale * gk[rr][c];
                gvo[ch] = gv[rr][c];
            }
        }
        if (dlog_keep && lane == 0) dlog_keep[(size_t)j * KV + kh] = lk_sum;
    }
}

/* Shared bytes of each kernel (the emulation test checks the kernels stay
 * inside them), and the opt-in above the default 48 KiB. */
static size_t fl_fwd_smem(int hd) {
    return sizeof(float) * ((size_t)(FL_BQ + 64) * (hd + 1) + FL_WARPS * FL_ROWS * 32 + 32) +
           sizeof(int32_t) * (32 + FL_BQ);
}
static size_t fl_dq_smem(int hd) {
    return sizeof(float) * ((size_t)(2 * FL_BQ + 64) * (hd + 1) + FL_WARPS * FL_ROWS * 32 + 32 + 2 * FL_BQ) +
           sizeof(int32_t) * (32 + FL_BQ);
}
static size_t fl_dkv_smem(int hd) {
    return sizeof(float) * ((size_t)(2 * FL_BK + 64) * (hd + 1) + 2 * FL_WARPS * FL_KROWS * 32 + FL_BK + 64) +
           sizeof(int32_t) * (FL_BK + 32);
}
#ifndef DMS_CUDA_EMUL
int cu_flash_supported(const cu_ctx *c, int head_dim) {
    if (head_dim < 1 || head_dim > FL_MAX_HD) return 0;
    const size_t most = fl_dq_smem(head_dim); /* the largest of the three */
    return most <= 48 * 1024 || most <= c->smem_optin;
}

void cu_flash_dms_fwd(cu_ctx *c, float *out, float *lse, const float *q, const float *k, const float *v,
                      const float *log_keep, const int32_t *seg, int T, int H, int KV, int hd, int window,
                      float scale) {
    const size_t smem = fl_fwd_smem(hd);
    cu_smem_opt_in(c, (const void *)k_flash_fwd, smem, "attention_dms_fwd");
    const dim3 grid((unsigned)((T + FL_BQ - 1) / FL_BQ), (unsigned)H);
    k_flash_fwd<<<grid, FL_WARPS * 32, smem, c->stream>>>(out, lse, q, k, v, log_keep, seg, T, H, KV, hd, window,
                                                         scale);
    cu_check(c, "attention_dms_fwd");
}

void cu_flash_dms_bwd(cu_ctx *c, float *dq, float *dk, float *dv, float *dlog_keep, const float *dout,
                      const float *lse, const float *D, const float *q, const float *k, const float *v,
                      const float *log_keep, const int32_t *seg, int T, int H, int KV, int hd, int window,
                      float scale) {
    const size_t s_dq = fl_dq_smem(hd), s_dkv = fl_dkv_smem(hd);
    cu_smem_opt_in(c, (const void *)k_flash_dq, s_dq, "attention_dms_bwd");
    cu_smem_opt_in(c, (const void *)k_flash_dkv, s_dkv, "attention_dms_bwd");
    const dim3 gq((unsigned)((T + FL_BQ - 1) / FL_BQ), (unsigned)H);
    k_flash_dq<<<gq, FL_WARPS * 32, s_dq, c->stream>>>(dq, dout, lse, D, q, k, v, log_keep, seg, T, H, KV, hd,
                                                      window, scale);
    cu_check(c, "attention_dms_bwd");
    const dim3 gk((unsigned)((T + FL_BK - 1) / FL_BK), (unsigned)KV);
    k_flash_dkv<<<gk, FL_WARPS * 32, s_dkv, c->stream>>>(dk, dv, dlog_keep, dout, lse, D, q, k, v, log_keep, seg,
                                                        T, H, KV, hd, window, scale);
    cu_check(c, "attention_dms_bwd");
}
#endif /* DMS_CUDA_EMUL */
