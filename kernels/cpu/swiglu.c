/* swiglu.c - the SwiGLU gate silu(gate) * up and its backward. */
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void dms_cpu_swiglu(void *ctx, float *out, const float *gate, const float *up, size_t n) {
    (void)ctx;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void dms_cpu_swiglu_bwd(void *ctx, float *dgate, float *dup, const float *dout, const float *gate,
                        const float *up, size_t n) {
    (void)ctx;
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        const float g = gate[i], u = up[i], d = dout[i];
        const float sg = 1.0f / (1.0f + expf(-g));
        dup[i] = d * g * sg;
        dgate[i] = d * u * sg * (1.0f + g * (1.0f - sg));
    }
}
