/* swiglu.cu - the SwiGLU gate silu(gate) * up and its backward. Twin of
 * kernels/cpu/swiglu.c: one thread per element, each reading its inputs
 * before writing (outputs may alias inputs). */
#include "kernels/cuda/cuda_internal.cuh"

__global__ void k_swiglu(float *out, const float *gate, const float *up, size_t n) {
    CU_FOR(i, n) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void cu_swiglu(void *ctx, float *out, const float *gate, const float *up, size_t n) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (!n) return;
    k_swiglu<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(out, gate, up, n);
    cu_check(c, "swiglu");
}

__global__ void k_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                             size_t n) {
    CU_FOR(i, n) {
        const float g = gate[i], u = up[i], d = dout[i];
        const float sg = 1.0f / (1.0f + expf(-g));
        dup[i] = d * g * sg;
        dgate[i] = d * u * sg * (1.0f + g * (1.0f - sg));
    }
}

void cu_swiglu_bwd(void *ctx, float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                   size_t n) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (!n) return;
    k_swiglu_bwd<<<cu_blocks(n), CU_THREADS, 0, c->stream>>>(dgate, dup, dout, gate, up, n);
    cu_check(c, "swiglu_bwd");
}
