/* embedding.cu - token embedding lookup from an fp32 or bf16 table. Twin
 * of kernels/cpu/embedding.c: one thread per output element (the bf16 ->
 * fp32 widening is exact). */
#include "kernels/cuda/cuda_internal.cuh"

__global__ void k_embedding(float *out, const void *table, int bf16, const int32_t *ids, int n, int dim) {
    CU_FOR(idx, (size_t)n * dim) {
        const size_t t = idx / dim, d = idx % dim;
        const size_t src = (size_t)ids[t] * dim + d;
        out[idx] = bf16 ? __bfloat162float(((const __nv_bfloat16 *)table)[src]) : ((const float *)table)[src];
    }
}

void cu_embedding(void *ctx, float *out, const dms_mat *table, const int32_t *ids, int n) {
    cu_ctx *c = (cu_ctx *)ctx;
    const int dim = table->cols;
    if (n <= 0 || dim <= 0) return;
    k_embedding<<<cu_blocks((size_t)n * dim), CU_THREADS, 0, c->stream>>>(out, table->data, table->dtype == DMS_BF16,
                                                                         ids, n, dim);
    cu_check(c, "embedding");
}
