/* safetensors.h - reader for Hugging Face safetensors weights: a single
 * file, or a sharded set through model.safetensors.index.json. Files are
 * mmapped; header offsets, dtypes and shapes are validated against the file
 * so that a truncated or corrupt file is an error naming it, never a crash. */
#ifndef DMS_SAFETENSORS_H
#define DMS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/mapped_file.h"

typedef enum {
    DMS_ST_F32, DMS_ST_F16, DMS_ST_BF16, DMS_ST_F64, DMS_ST_I64, DMS_ST_I32, DMS_ST_I16,
    DMS_ST_I8, DMS_ST_U8, DMS_ST_BOOL, DMS_ST_F8_E4M3, DMS_ST_F8_E5M2, DMS_ST_U32, DMS_ST_U64,
    DMS_ST_U16
} dms_st_dtype;

#define DMS_ST_MAX_DIMS 8
/* The largest JSON header read (bytes): the format's own limit (the
 * reference `safetensors` library refuses bigger ones), checked before the
 * header is parsed. */
#define DMS_ST_MAX_HEADER 100000000

typedef struct dms_st_tensor {
    char *name;
    dms_st_dtype dtype;
    int n_dims;
    int64_t shape[DMS_ST_MAX_DIMS];
    const uint8_t *data;
    size_t nbytes;
    int file; /* index into dms_safetensors.files */
} dms_st_tensor;

typedef struct dms_safetensors {
    int n_files;
    dms_mapped_file *files;
    int n_tensors;
    dms_st_tensor *tensors; /* sorted by name */
} dms_safetensors;

/* Opens one .safetensors file. */
int dms_st_open_file(dms_safetensors *st, const char *path, dms_err *err);
/* Opens a model folder: model.safetensors.index.json if present (every shard
 * it names), else model.safetensors. */
int dms_st_open_dir(dms_safetensors *st, const char *dir, dms_err *err);
void dms_st_close(dms_safetensors *st);

const dms_st_tensor *dms_st_find(const dms_safetensors *st, const char *name);
const char *dms_st_dtype_name(dms_st_dtype t);
size_t dms_st_dtype_size(dms_st_dtype t);
int64_t dms_st_nelem(const dms_st_tensor *t);
/* Converts an F32/F16/BF16 tensor to fp32 (out holds nelem floats). */
int dms_st_to_f32(const dms_safetensors *st, const dms_st_tensor *t, float *out, dms_err *err);

#endif
