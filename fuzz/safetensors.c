/* safetensors.c (fuzz target) - the safetensors reader (model/safetensors.c)
 * on arbitrary bytes: the 8-byte header length, the JSON header (dtypes,
 * shapes, data_offsets, __metadata__) and the fp32 conversion of every
 * tensor. Weights are downloaded files: a corrupt or hostile one must give
 * one error line naming it, never a crash or a read outside the file. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_common.h"
#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[PATH_MAX];
    fuzz_write_file("model.safetensors", data, size, path, sizeof path);
    dms_safetensors st;
    dms_err err = {{0}};
    int rc = dms_st_open_file(&st, path, &err);
    fuzz_check_err(rc, &err, path, "dms_st_open_file");
    if (rc) return 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const dms_st_tensor *t = &st.tensors[i];
        fuzz_require(dms_st_find(&st, t->name) == t, "every tensor is found by its name");
        fuzz_require(t->data >= st.files[t->file].data &&
                         t->data + t->nbytes <= st.files[t->file].data + st.files[t->file].size,
                     "tensor data lies inside the file");
        const int64_t n = dms_st_nelem(t);
        fuzz_require(n >= 0 && (size_t)n * dms_st_dtype_size(t->dtype) == t->nbytes, "shape matches the bytes");
        if (n > (1 << 20)) continue;
        float *out = malloc(sizeof(float) * (size_t)(n ? n : 1));
        if (!out) abort();
        dms_err e2 = {{0}};
        rc = dms_st_to_f32(&st, t, out, &e2);
        fuzz_check_err(rc, &e2, path, "dms_st_to_f32");
        free(out);
    }
    dms_st_close(&st);
    return 0;
}
