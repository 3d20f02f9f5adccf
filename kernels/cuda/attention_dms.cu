/* attention_dms.cu - DMS attention over packed training rows, forward and
 * backward: causal, per document (seg), with the delayed-eviction log-keep
 * bias on keys more than `window` tokens back. Twin of
 * kernels/cpu/attention_dms.c. Head dims that are multiples of 16 up to
 * 128 (every supported model) go to the tensor-core kernels of
 * attention_mma.cu (bf16 products, fp32 softmax), unless the backend was
 * opened with DMS_CUDA_ATTENTION=fp32; then, and for other head dims up to
 * 128 where the device has the shared memory, to the fp32 tiled kernels of
 * attention_flash.cu; the reference kernels below serve the rest:
 *  - forward: one block per (query, head); scaled, masked, biased scores
 *    into a [T] row of global scratch, block softmax, lse, out = P V.
 *  - backward: D = rowsum(dO * O); then two race-free passes that recompute
 *    P from lse: query-major (block per (query, head)) for dq, and key-major
 *    (block per (key, kv head), over the group's heads and the later
 *    queries of the key's document) for dk, dv and dlog_keep.
 * Every output element is written by one thread in a fixed order and the
 * block reductions have a fixed tree: deterministic, no atomics. Keys (or
 * queries) of other documents are skipped by the seg test, so any seg works
 * (not only packed, non-decreasing ones). Grids run in chunks of as many
 * blocks as CU_ATT_SCRATCH_BYTES of score rows allow. */
#include "kernels/cuda/cuda_internal.cuh"

#define CU_ATT_THREADS 128

/* Blocks per launch when each needs per_block floats of scratch. */
static size_t att_chunk(size_t per_block, size_t total) {
    size_t chunk = CU_ATT_SCRATCH_BYTES / (sizeof(float) * per_block);
    if (chunk < 1) chunk = 1;
    return chunk < total ? chunk : total;
}

static __device__ __forceinline__ float dot_hd(const float *a, const float *b, int hd) {
    float s = 0.0f;
    for (int d = 0; d < hd; d++) s += a[d] * b[d];
    return s;
}

__global__ void k_att_dms_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                              const float *log_keep, const int32_t *seg, int T, int n_heads, int n_kv_heads,
                              int head_dim, int window, float scale, float *scr, size_t b0) {
    extern __shared__ float qs[]; /* [head_dim] */
    const size_t b = b0 + blockIdx.x;
    const int i = (int)(b / n_heads), h = (int)(b % n_heads), kh = h / (n_heads / n_kv_heads);
    const size_t qstr = (size_t)n_heads * head_dim, kstr = (size_t)n_kv_heads * head_dim;
    float *scores = scr + (size_t)blockIdx.x * T;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) qs[d] = q[i * qstr + (size_t)h * head_dim + d];
    __syncthreads();
    const int32_t si = seg[i];
    float mx = -INFINITY;
    for (int j = threadIdx.x; j <= i; j += blockDim.x) {
        float s = -INFINITY;
        if (seg[j] == si) {
            s = scale * dot_hd(qs, k + j * kstr + (size_t)kh * head_dim, head_dim);
            if (log_keep && i - j > window) s += log_keep[(size_t)j * n_kv_heads + kh];
        }
        scores[j] = s;
        mx = s > mx ? s : mx;
    }
    mx = cu_block_max(mx);
    float *o = out + i * qstr + (size_t)h * head_dim;
    if (mx == -INFINITY) { /* nothing visible (log_keep = -inf): zero output */
        if (threadIdx.x == 0) lse[(size_t)i * n_heads + h] = -INFINITY;
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) o[d] = 0.0f;
        return;
    }
    float sum = 0.0f;
    for (int j = threadIdx.x; j <= i; j += blockDim.x) {
        const float e = expf(scores[j] - mx);
        scores[j] = e;
        sum += e;
    }
    sum = cu_block_sum(sum);
    if (threadIdx.x == 0) lse[(size_t)i * n_heads + h] = mx + logf(sum);
    const float inv = 1.0f / sum;
    for (int j = threadIdx.x; j <= i; j += blockDim.x) scores[j] *= inv;
    __syncthreads();
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j <= i; j++) {
            const float p = scores[j];
            if (p != 0.0f) acc += p * v[j * kstr + (size_t)kh * head_dim + d];
        }
        o[d] = acc;
    }
}

void cu_attention_dms_fwd(void *ctx, float *out, float *lse, const float *q, const float *k, const float *v,
                          const float *log_keep, const int32_t *seg, int T, int n_heads, int n_kv_heads,
                          int head_dim, int window, float scale) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (T <= 0 || n_heads <= 0 || head_dim <= 0) return;
    if (cu_mma_supported(c, head_dim)) {
        cu_mma_dms_fwd(c, out, lse, q, k, v, log_keep, seg, T, n_heads, n_kv_heads, head_dim, window, scale);
        return;
    }
    if (cu_flash_supported(c, head_dim)) {
        cu_flash_dms_fwd(c, out, lse, q, k, v, log_keep, seg, T, n_heads, n_kv_heads, head_dim, window, scale);
        return;
    }
    const size_t total = (size_t)T * n_heads, chunk = att_chunk((size_t)T, total);
    float *scr = (float *)cu_scratch(c, sizeof(float) * (size_t)T * chunk, "attention_dms_fwd");
    if (!scr) {
        cu_fill_nan(c, out, total * head_dim);
        cu_fill_nan(c, lse, total);
        return;
    }
    const size_t shmem = sizeof(float) * (size_t)head_dim;
    for (size_t b0 = 0; b0 < total; b0 += chunk) {
        const size_t nb = total - b0 < chunk ? total - b0 : chunk;
        k_att_dms_fwd<<<(unsigned)nb, CU_ATT_THREADS, shmem, c->stream>>>(
            out, lse, q, k, v, log_keep, seg, T, n_heads, n_kv_heads, head_dim, window, scale, scr, b0);
        cu_check(c, "attention_dms_fwd");
    }
}

/* D[i, h] = dO_i . O_i, one thread per (i, h), in channel order like the CPU */
__global__ void k_att_dms_D(float *D, const float *dout, const float *out, size_t n, int head_dim) {
    CU_FOR(ih, n) {
        const float *oi = out + ih * head_dim, *di = dout + ih * head_dim;
        float s = 0.0f;
        for (int d = 0; d < head_dim; d++) s += di[d] * oi[d];
        D[ih] = s;
    }
}

/* Pass A, one block per (query i, head h): dS_ij = P_ij (dO_i . V_j - D_i)
 * into a [T] scratch row, then dq_i = scale sum_j dS_ij K_j. */
__global__ void k_att_dms_dq(float *dq, const float *dout, const float *lse, const float *D, const float *q,
                             const float *k, const float *v, const float *log_keep, const int32_t *seg, int T,
                             int n_heads, int n_kv_heads, int head_dim, int window, float scale, float *scr,
                             size_t b0) {
    extern __shared__ float sh[]; /* q_i, dO_i: [2 * head_dim] */
    float *qs = sh, *dos = sh + head_dim;
    const size_t b = b0 + blockIdx.x;
    const int i = (int)(b / n_heads), h = (int)(b % n_heads), kh = h / (n_heads / n_kv_heads);
    const size_t qstr = (size_t)n_heads * head_dim, kstr = (size_t)n_kv_heads * head_dim;
    const size_t qoff = i * qstr + (size_t)h * head_dim;
    float *dS = scr + (size_t)blockIdx.x * T;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        qs[d] = q[qoff + d];
        dos[d] = dout[qoff + d];
    }
    __syncthreads();
    const int32_t si = seg[i];
    const float li = lse[(size_t)i * n_heads + h], Di = D[(size_t)i * n_heads + h];
    for (int j = threadIdx.x; j <= i; j += blockDim.x) {
        float g = 0.0f;
        if (seg[j] == si && li != -INFINITY) {
            float s = scale * dot_hd(qs, k + j * kstr + (size_t)kh * head_dim, head_dim);
            if (log_keep && i - j > window) s += log_keep[(size_t)j * n_kv_heads + kh];
            if (s != -INFINITY) {
                const float p = expf(s - li);
                g = p * (dot_hd(dos, v + j * kstr + (size_t)kh * head_dim, head_dim) - Di);
            }
        }
        dS[j] = g;
    }
    __syncthreads();
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j <= i; j++) {
            const float g = dS[j];
            if (g != 0.0f) acc += g * k[j * kstr + (size_t)kh * head_dim + d];
        }
        dq[qoff + d] = scale * acc;
    }
}

/* Pass B, one block per (key j, kv head kh): for each head of the group, P
 * and dS of the queries i >= j into two [T] scratch rows, then
 * dk_j += scale sum_i dS_ij Q_i and dv_j += sum_i P_ij dO_i (this block owns
 * both rows); dlog_keep_j = sum of dS_ij over the biased entries. */
__global__ void k_att_dms_dkv(float *dk, float *dv, float *dlog_keep, const float *dout, const float *lse,
                              const float *D, const float *q, const float *k, const float *v,
                              const float *log_keep, const int32_t *seg, int T, int n_heads, int n_kv_heads,
                              int head_dim, int window, float scale, float *scr, size_t b0) {
    extern __shared__ float sh[]; /* k_j, v_j: [2 * head_dim] */
    float *ks = sh, *vs = sh + head_dim;
    const size_t b = b0 + blockIdx.x;
    const int j = (int)(b / n_kv_heads), kh = (int)(b % n_kv_heads), group = n_heads / n_kv_heads;
    const size_t qstr = (size_t)n_heads * head_dim, kstr = (size_t)n_kv_heads * head_dim;
    const size_t koff = j * kstr + (size_t)kh * head_dim;
    float *P = scr + (size_t)blockIdx.x * 2 * T, *dS = P + T;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        ks[d] = k[koff + d];
        vs[d] = v[koff + d];
    }
    __syncthreads();
    const int32_t sj = seg[j];
    const float lk = log_keep ? log_keep[(size_t)j * n_kv_heads + kh] : 0.0f;
    float dlk = 0.0f; /* this thread's queries, every head of the group */
    for (int hh = 0; hh < group; hh++) {
        const int h = kh * group + hh;
        for (int i = j + threadIdx.x; i < T; i += blockDim.x) {
            float p = 0.0f, g = 0.0f;
            const float li = lse[(size_t)i * n_heads + h];
            if (seg[i] == sj && li != -INFINITY) {
                const int biased = i - j > window;
                const size_t qoff = i * qstr + (size_t)h * head_dim;
                const float s = scale * dot_hd(ks, q + qoff, head_dim) + (biased ? lk : 0.0f);
                if (s != -INFINITY) p = expf(s - li);
                g = p * (dot_hd(vs, dout + qoff, head_dim) - D[(size_t)i * n_heads + h]);
                if (biased) dlk += g;
            }
            P[i] = p;
            dS[i] = g;
        }
        __syncthreads();
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
            float ak = 0.0f, av = 0.0f;
            for (int i = j; i < T; i++) {
                if (P[i] == 0.0f) continue; /* masked or underflowed: dS is 0 too */
                const size_t qoff = i * qstr + (size_t)h * head_dim + d;
                ak += dS[i] * q[qoff];
                av += P[i] * dout[qoff];
            }
            dk[koff + d] = (hh ? dk[koff + d] : 0.0f) + scale * ak;
            dv[koff + d] = (hh ? dv[koff + d] : 0.0f) + av;
        }
        __syncthreads(); /* before the next head overwrites P, dS */
    }
    dlk = cu_block_sum(dlk);
    if (dlog_keep && threadIdx.x == 0) dlog_keep[(size_t)j * n_kv_heads + kh] = dlk;
}

void cu_attention_dms_bwd(void *ctx, float *dq, float *dk, float *dv, float *dlog_keep, const float *dout,
                          const float *out, const float *lse, const float *q, const float *k, const float *v,
                          const float *log_keep, const int32_t *seg, int T, int n_heads, int n_kv_heads,
                          int head_dim, int window, float scale) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (T <= 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0) return;
    const size_t nq = (size_t)T * n_heads, nk = (size_t)T * n_kv_heads;
    const size_t D_floats = (nq + 63) / 64 * 64; /* keeps the score rows 256-byte aligned */
    const int mma = cu_mma_supported(c, head_dim), flash = mma || cu_flash_supported(c, head_dim);
    /* one scratch: D, then the tensor-core kernels' bf16 copies, or
     * (reference kernels) the score rows of pass B (2T per block), reused by
     * pass A (T per block, twice as many blocks) */
    const size_t chunk_b = flash ? 0 : att_chunk(2 * (size_t)T, nk);
    const size_t extra = mma ? cu_mma_bwd_scratch(T, n_heads, n_kv_heads, head_dim)
                             : sizeof(float) * 2 * (size_t)T * chunk_b;
    float *D = (float *)cu_scratch(c, sizeof(float) * D_floats + extra, "attention_dms_bwd");
    if (!D) {
        cu_fill_nan(c, dq, nq * head_dim);
        cu_fill_nan(c, dk, nk * head_dim);
        cu_fill_nan(c, dv, nk * head_dim);
        cu_fill_nan(c, dlog_keep, nk);
        return;
    }
    float *scr = D + D_floats;
    k_att_dms_D<<<cu_blocks(nq), CU_THREADS, 0, c->stream>>>(D, dout, out, nq, head_dim);
    cu_check(c, "attention_dms_bwd");
    if (mma) {
        cu_mma_dms_bwd(c, scr, dq, dk, dv, dlog_keep, dout, lse, D, q, k, v, log_keep, seg, T, n_heads, n_kv_heads,
                       head_dim, window, scale);
        return;
    }
    if (flash) {
        cu_flash_dms_bwd(c, dq, dk, dv, dlog_keep, dout, lse, D, q, k, v, log_keep, seg, T, n_heads, n_kv_heads,
                         head_dim, window, scale);
        return;
    }
    const size_t shmem = 2 * sizeof(float) * (size_t)head_dim;
    const size_t chunk_a = 2 * chunk_b < nq ? 2 * chunk_b : nq;
    for (size_t b0 = 0; b0 < nq; b0 += chunk_a) {
        const size_t nb = nq - b0 < chunk_a ? nq - b0 : chunk_a;
        k_att_dms_dq<<<(unsigned)nb, CU_ATT_THREADS, shmem, c->stream>>>(dq, dout, lse, D, q, k, v, log_keep, seg, T,
                                                                        n_heads, n_kv_heads, head_dim, window, scale,
                                                                        scr, b0);
        cu_check(c, "attention_dms_bwd");
    }
    for (size_t b0 = 0; b0 < nk; b0 += chunk_b) {
        const size_t nb = nk - b0 < chunk_b ? nk - b0 : chunk_b;
        k_att_dms_dkv<<<(unsigned)nb, CU_ATT_THREADS, shmem, c->stream>>>(dk, dv, dlog_keep, dout, lse, D, q, k, v,
                                                                         log_keep, seg, T, n_heads, n_kv_heads,
                                                                         head_dim, window, scale, scr, b0);
        cu_check(c, "attention_dms_bwd");
    }
}

/* Attention guidance's statistic, one block per (key j, kv head kh): the
 * largest exp(scale q_i.k_j - lse_ih) over the group's heads and the
 * queries of j's document more than `window` after it, block max (fixed
 * tree), or with mean their mean (block sums of the probabilities and of
 * the count, fixed tree); times the l1 norm of v_j when v is given (block
 * sum, fixed tree). No scratch: nothing is kept per query. */
__global__ void k_att_future_max(float *imp, const float *q, const float *k, const float *v, const float *lse,
                                 const int32_t *seg, int T, int n_heads, int n_kv_heads, int head_dim, int window,
                                 float scale, int mean) {
    extern __shared__ float ks[]; /* k_j: [head_dim] */
    const size_t b = blockIdx.x;
    const int j = (int)(b / n_kv_heads), kh = (int)(b % n_kv_heads), group = n_heads / n_kv_heads;
    const size_t qstr = (size_t)n_heads * head_dim, kstr = (size_t)n_kv_heads * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) ks[d] = k[j * kstr + (size_t)kh * head_dim + d];
    __syncthreads();
    const int32_t sj = seg[j];
    float mx = 0.0f, sum = 0.0f, cnt = 0.0f;
    for (int i = j + window + 1 + threadIdx.x; i < T; i += blockDim.x) {
        if (seg[i] != sj) continue;
        for (int h = kh * group; h < (kh + 1) * group; h++) {
            const float li = lse[(size_t)i * n_heads + h];
            if (li == -INFINITY) continue;
            const float p = expf(scale * dot_hd(ks, q + i * qstr + (size_t)h * head_dim, head_dim) - li);
            mx = p > mx ? p : mx;
            sum += p;
            cnt += 1.0f;
        }
    }
    if (mean) { /* uniform across the block: the block sums' barriers hold */
        sum = cu_block_sum(sum);
        cnt = cu_block_sum(cnt);
        mx = cnt > 0.0f ? sum / cnt : 0.0f;
    } else {
        mx = cu_block_max(mx);
    }
    if (v) { /* every thread takes the branch: the block sum's barriers hold */
        float a = 0.0f;
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) a += fabsf(v[j * kstr + (size_t)kh * head_dim + d]);
        mx *= cu_block_sum(a);
    }
    if (threadIdx.x == 0) imp[(size_t)j * n_kv_heads + kh] = mx;
}

void cu_attention_future_max(void *ctx, float *imp, const float *q, const float *k, const float *v, const float *lse,
                             const int32_t *seg, int T, int n_heads, int n_kv_heads, int head_dim, int window,
                             float scale, int mean) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (T <= 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0) return;
    const size_t nk = (size_t)T * n_kv_heads;
    k_att_future_max<<<(unsigned)nk, CU_ATT_THREADS, sizeof(float) * (size_t)head_dim, c->stream>>>(
        imp, q, k, v, lse, seg, T, n_heads, n_kv_heads, head_dim, window, scale, mean);
    cu_check(c, "attention_future_max");
}
