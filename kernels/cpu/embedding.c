/* embedding.c - token embedding lookup from an fp32 or bf16 table. */
#include <string.h>

#include "core/half.h"
#include "kernels/cpu/cpu_ops.h"

void dms_cpu_embedding(void *ctx, float *out, const dms_mat *table, const int32_t *ids, int n) {
    (void)ctx;
    const int dim = table->cols;
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * dim;
        if (table->dtype == DMS_F32) {
            memcpy(o, (const float *)table->data + (size_t)ids[i] * dim, sizeof(float) * dim);
        } else {
            const uint16_t *row = (const uint16_t *)table->data + (size_t)ids[i] * dim;
            for (int d = 0; d < dim; d++) o[d] = dms_bf16_to_f32(row[d]);
        }
    }
}
