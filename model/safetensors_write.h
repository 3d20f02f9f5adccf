/* safetensors_write.h - the writer half of safetensors, for `dms export`:
 * one file = 8-byte little-endian header length, a JSON header (cJSON) with
 * "__metadata__": {"format": "pt"} and every tensor's dtype, shape and
 * data_offsets, padded with spaces so that the data section starts on an
 * 8-byte boundary, then the tensors back to back (the format allows no
 * holes between them, so each tensor is aligned to its element size).
 * Values are produced in fp32 by a callback and converted to F32, F16 or
 * BF16 (round to nearest even) on the way out; files are fsynced. The reader
 * is model/safetensors.h. */
#ifndef DMS_SAFETENSORS_WRITE_H
#define DMS_SAFETENSORS_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/half.h"
#include "model/safetensors.h"

/* One tensor to write. dtype: DMS_ST_F32, DMS_ST_F16 or DMS_ST_BF16. */
typedef struct dms_st_out_tensor {
    const char *name;
    int n_dims;
    int64_t shape[DMS_ST_MAX_DIMS];
    dms_st_dtype dtype;
} dms_st_out_tensor;

/* Fills out[nelem] with the fp32 values of tensor `index` (the index in the
 * array given to dms_st_write). Returns 0, or -1 with err set. */
typedef int (*dms_st_fill_fn)(void *ctx, int index, float *out, dms_err *err);

int64_t dms_st_out_nelem(const dms_st_out_tensor *t);
/* Bytes of the tensor's data in the file. */
size_t dms_st_out_nbytes(const dms_st_out_tensor *t);

/* Writes tensors t[0..n) (in that order) to `path`, creating or truncating
 * it, then fsyncs it. Tensor names must be unique. On failure returns -1
 * with a one-line message naming the file and removes the partial file. */
int dms_st_write(const char *path, const dms_st_out_tensor *t, int n, dms_st_fill_fn fill, void *ctx,
                 dms_err *err);

/* dms_f32_to_f16 (fp32 -> IEEE half): core/half.h. */

/* Writes n bytes to path (created or truncated, mode 0644) and fsyncs it;
 * a failure removes the file and names it in err. */
int dms_write_file_synced(const char *path, const void *data, size_t n, dms_err *err);
/* A cJSON tree as the JSON files of a Hugging Face folder look: two-space
 * indentation, "key": value, a final newline (malloc'd; NULL on failure). */
struct cJSON;
char *dms_json_print(const struct cJSON *root);
/* fsync of a folder (its entries), after files were created or renamed in it. */
int dms_fsync_dir(const char *dir, dms_err *err);

#endif
