/* narrow.c - fp32 values stored as fp16 or bf16, rounded to nearest even
 * (core/half.h): the rows of the runtime's 16-bit KV cache (the narrow op
 * of kernels/backend.h), which attention_paged widens back to fp32. */
#include <string.h>

#include "core/half.h"
#include "kernels/cpu/cpu_ops.h"

void dms_cpu_narrow(void *ctx, void *dst, dms_dtype t, const float *src, size_t n) {
    uint16_t *h = dst;
    switch (t) {
    case DMS_F32:
        if (n) memmove(dst, src, n * sizeof(float));
        return;
    case DMS_F16:
        for (size_t i = 0; i < n; i++) h[i] = dms_f32_to_f16(src[i]);
        return;
    case DMS_BF16:
        for (size_t i = 0; i < n; i++) h[i] = dms_f32_to_bf16(src[i]);
        return;
    default:
        dms_cpu_fail(ctx, "narrow", "the target dtype must be f32, f16 or bf16");
        return;
    }
}
