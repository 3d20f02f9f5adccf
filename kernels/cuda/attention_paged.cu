/* attention_paged.cu - attention of a sequence's new queries against its
 * paged, ragged per-KV-head caches (runtime/kv_paged.c), with the DMS
 * visibility rule and the per-key probability sums that TOVA and H2O evict
 * by. Twin of kernels/cpu/attention_paged.c; it exists so that the paged KV
 * runtime (`dms generate` with its policies) can run on the CUDA backend.
 *
 * The runtime keeps its bookkeeping on the host: each lane's block pointer
 * tables (k_blk, v_blk: host arrays of device pointers), pos, flag and score
 * are host arrays; only the blocks themselves, q, q_pos and out are device
 * memory. So every call packs the lanes' metadata into one host staging
 * buffer and uploads it with a single copy into the ctx's scratch (a
 * device-resident block table, kept current by the runtime, is later work):
 *
 *   [k ptrs: NB][v ptrs: NB]            const float *, lane blocks back to back
 *   [off: KV+1][boff: KV+1]             int32 prefix sums of n and of blocks
 *   [pos: N][flag: N]                   int32 (flag 0 when the lane has none)
 *
 * Reference-grade (a fused paged flash kernel comes later): one block per
 * (query, head) writes its scaled, masked scores to a [max_n] row of global
 * scratch, takes a block softmax, turns the row into probabilities and
 * accumulates its output channels over the keys in slot order. When scores
 * are wanted the probability rows are downloaded (synchronously) and added
 * into each lane's host score array in the CPU's order (query, head within
 * the group, slot per lane). The grid runs in chunks of as many blocks as
 * CU_ATT_SCRATCH_BYTES of rows allow. Deterministic: fixed-order block
 * reductions, one writer per output element, no atomics. */
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_internal.cuh"

#define CU_ATT_THREADS 128

/* The uploaded metadata of one call (device pointers into the scratch). */
typedef struct paged_meta {
    const float *const *kp, *const *vp; /* block pointers, lane h's from boff[h] */
    const int32_t *off, *boff;          /* [KV+1] */
    const int32_t *pos, *flag;          /* [N], lane h's from off[h] */
} paged_meta;

__global__ void k_attention_paged(float *out, const float *q, const int32_t *q_pos, paged_meta m, int n_heads,
                                  int group, int head_dim, int block_size, int window, float scale, float *rows,
                                  int row_len, size_t b0) {
    extern __shared__ float qs[]; /* [head_dim]: this block's query */
    const size_t b = b0 + blockIdx.x, i = b / n_heads;
    const int h = (int)(b % n_heads), kh = h / group;
    const int n = m.off[kh + 1] - m.off[kh];
    const int32_t *pos = m.pos + m.off[kh], *flag = m.flag + m.off[kh];
    const float *const *kb = m.kp + m.boff[kh], *const *vb = m.vp + m.boff[kh];
    const float *qi = q + (i * n_heads + h) * (size_t)head_dim;
    float *sc = rows + (size_t)blockIdx.x * row_len;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) qs[d] = qi[d];
    __syncthreads();
    const int qp = q_pos[i];
    float mx = -INFINITY;
    for (int s = threadIdx.x; s < n; s += blockDim.x) {
        const int p = pos[s];
        if (!(p <= qp && (qp - p <= window || !flag[s]))) {
            sc[s] = -INFINITY;
            continue;
        }
        const float *k = kb[s / block_size] + (size_t)(s % block_size) * head_dim;
        float dot = 0.0f;
        for (int d = 0; d < head_dim; d++) dot += qs[d] * k[d];
        sc[s] = dot * scale;
        mx = sc[s] > mx ? sc[s] : mx;
    }
    mx = cu_block_max(mx);
    float sum = 0.0f;
    for (int s = threadIdx.x; s < n; s += blockDim.x) {
        const float e = sc[s] == -INFINITY ? 0.0f : expf(sc[s] - mx); /* no visible key: all 0 */
        sc[s] = e;
        sum += e;
    }
    sum = cu_block_sum(sum);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int s = threadIdx.x; s < n; s += blockDim.x) sc[s] *= inv; /* the row becomes the probabilities */
    __syncthreads();
    float *o = out + (i * n_heads + h) * (size_t)head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < n; s++) {
            const float p = sc[s];
            if (p == 0.0f) continue; /* as the CPU: masked keys are never read */
            acc += p * vb[s / block_size][(size_t)(s % block_size) * head_dim + d];
        }
        o[d] = acc;
    }
}

static size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

void cu_attention_paged(void *ctx, float *out, const float *q, const int32_t *q_pos, int n_q,
                        const dms_kv_lane_view *lanes, int n_heads, int n_kv_heads, int head_dim, int block_size,
                        int window, float scale) {
    cu_ctx *c = (cu_ctx *)ctx;
    const char *op = "attention_paged";
    if (n_q <= 0 || n_heads <= 0 || head_dim <= 0) return;
    const size_t total = (size_t)n_q * n_heads;
    if (n_kv_heads <= 0 || n_heads % n_kv_heads || block_size <= 0) {
        cu_fail(c, op, "bad head counts or block size");
        cu_fill_nan(c, out, total * head_dim);
        return;
    }
    for (int h = 0; h < n_kv_heads; h++)
        if (lanes[h].dtype != DMS_F32) { /* no narrow op here: the runtime never hands us a 16-bit cache */
            cu_fail(c, op, "the KV cache must be fp32 on this backend");
            cu_fill_nan(c, out, total * head_dim);
            return;
        }
    const int KV = n_kv_heads, group = n_heads / n_kv_heads;
    const int want_scores = lanes[0].score != NULL;

    /* sizes of the staging sections */
    int max_n = 1;
    size_t N = 0, NB = 0;
    for (int h = 0; h < KV; h++) {
        const int n = lanes[h].n > 0 ? lanes[h].n : 0;
        max_n = n > max_n ? n : max_n;
        N += (size_t)n;
        NB += ((size_t)n + block_size - 1) / block_size;
    }
    if (N > (size_t)INT32_MAX || NB > (size_t)INT32_MAX) {
        cu_fail(c, op, "too many keys");
        cu_fill_nan(c, out, total * head_dim);
        return;
    }
    const size_t o_kp = 0, o_vp = o_kp + sizeof(float *) * NB, o_off = o_vp + sizeof(float *) * NB;
    const size_t o_boff = o_off + sizeof(int32_t) * (KV + 1), o_pos = o_boff + sizeof(int32_t) * (KV + 1);
    const size_t o_flag = o_pos + sizeof(int32_t) * N, meta_bytes = o_flag + sizeof(int32_t) * N;
    const size_t rows_at = align_up(meta_bytes, 256);

    /* score rows: as many blocks per launch as CU_ATT_SCRATCH_BYTES allow */
    const size_t row = (size_t)max_n;
    size_t chunk = CU_ATT_SCRATCH_BYTES / (sizeof(float) * row);
    if (chunk < 1) chunk = 1;
    if (chunk > total) chunk = total;

    unsigned char *stage = (unsigned char *)malloc(meta_bytes);
    float *probs = want_scores ? (float *)malloc(sizeof(float) * row * chunk) : NULL;
    if (!stage || (want_scores && !probs)) {
        free(stage);
        free(probs);
        cu_fail(c, op, "out of host memory");
        cu_fill_nan(c, out, total * head_dim);
        return;
    }
    /* pack */
    const float **kp = (const float **)(stage + o_kp), **vp = (const float **)(stage + o_vp);
    int32_t *off = (int32_t *)(stage + o_off), *boff = (int32_t *)(stage + o_boff);
    int32_t *pos = (int32_t *)(stage + o_pos), *flag = (int32_t *)(stage + o_flag);
    off[0] = boff[0] = 0;
    for (int h = 0; h < KV; h++) {
        const dms_kv_lane_view *ln = &lanes[h];
        const int n = ln->n > 0 ? ln->n : 0, nb = (n + block_size - 1) / block_size;
        for (int j = 0; j < nb; j++) {
            kp[boff[h] + j] = (const float *)ln->k_blk[j];
            vp[boff[h] + j] = (const float *)ln->v_blk[j];
        }
        if (n) memcpy(pos + off[h], ln->pos, sizeof(int32_t) * (size_t)n);
        for (int s = 0; s < n; s++) flag[off[h] + s] = ln->flag ? ln->flag[s] != 0 : 0;
        off[h + 1] = off[h] + n;
        boff[h + 1] = boff[h] + nb;
    }

    unsigned char *dev = (unsigned char *)cu_scratch(c, rows_at + sizeof(float) * row * chunk, op);
    if (!dev) {
        free(stage);
        free(probs);
        cu_fill_nan(c, out, total * head_dim);
        return;
    }
    /* From pageable memory the copy returns once the source has been staged,
     * so the host buffer may be freed right after. */
    const cudaError_t e = cudaMemcpyAsync(dev, stage, meta_bytes, cudaMemcpyHostToDevice, c->stream);
    free(stage);
    if (e != cudaSuccess) {
        cu_check_err(c, op, e);
        free(probs);
        cu_fill_nan(c, out, total * head_dim);
        return;
    }
    paged_meta m;
    m.kp = (const float *const *)(dev + o_kp);
    m.vp = (const float *const *)(dev + o_vp);
    m.off = (const int32_t *)(dev + o_off);
    m.boff = (const int32_t *)(dev + o_boff);
    m.pos = (const int32_t *)(dev + o_pos);
    m.flag = (const int32_t *)(dev + o_flag);
    float *rows = (float *)(dev + rows_at);

    const size_t shmem = sizeof(float) * (size_t)head_dim;
    int scores_ok = want_scores;
    for (size_t b0 = 0; b0 < total; b0 += chunk) {
        const size_t nb = total - b0 < chunk ? total - b0 : chunk;
        k_attention_paged<<<(unsigned)nb, CU_ATT_THREADS, shmem, c->stream>>>(
            out, q, q_pos, m, n_heads, group, head_dim, block_size, window, scale, rows, (int)row, b0);
        const cudaError_t le = cudaGetLastError();
        cu_check_err(c, op, le);
        if (le != cudaSuccess) scores_ok = 0; /* no probabilities to add */
        if (!scores_ok) continue;
        /* this chunk's probabilities, added in the CPU's order: per lane, the
         * (query, head) rows ascending, then slot (chunks go in b order) */
        cudaError_t de = cudaMemcpyAsync(probs, rows, sizeof(float) * row * nb, cudaMemcpyDeviceToHost, c->stream);
        if (de == cudaSuccess) de = cudaStreamSynchronize(c->stream);
        if (de != cudaSuccess) {
            cu_check_err(c, op, de);
            scores_ok = 0;
            continue;
        }
        for (size_t r = 0; r < nb; r++) {
            const dms_kv_lane_view *ln = &lanes[(int)((b0 + r) % n_heads) / group];
            const float *pr = probs + r * row;
            for (int s = 0; ln->score && s < ln->n; s++) ln->score[s] += pr[s];
        }
    }
    free(probs);
}
