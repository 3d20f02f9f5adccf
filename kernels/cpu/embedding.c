/* embedding.c - token embedding lookup from a table of any weight dtype
 * (fp32 rows copied, the others widened row by row: kernels/dtype.c). */
#include <string.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/dtype.h"

void dms_cpu_embedding(void *ctx, float *out, const dms_mat *table, const int32_t *ids, int n) {
    (void)ctx;
    const int dim = table->cols;
    const size_t rb = dms_dtype_bytes(table->dtype, (size_t)dim);
    for (int i = 0; i < n; i++)
        dms_dtype_to_f32(table->dtype, (const char *)table->data + (size_t)ids[i] * rb, out + (size_t)i * dim,
                         (size_t)dim);
}
