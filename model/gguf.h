/* gguf.h - GGUF v2/v3 reader: metadata key/values, the tensor table, and
 * dequantisation of tensor data to fp32. The file is mmapped; nothing is
 * copied until a tensor is dequantised. Every offset and count read from the
 * file is bounds-checked, so a truncated or corrupt file yields an error
 * naming the file, never a crash. */
#ifndef DMS_GGUF_H
#define DMS_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/mapped_file.h"

/* GGUF metadata value types (gguf spec numbering). */
typedef enum {
    GGUF_T_UINT8 = 0, GGUF_T_INT8 = 1, GGUF_T_UINT16 = 2, GGUF_T_INT16 = 3,
    GGUF_T_UINT32 = 4, GGUF_T_INT32 = 5, GGUF_T_FLOAT32 = 6, GGUF_T_BOOL = 7,
    GGUF_T_STRING = 8, GGUF_T_ARRAY = 9, GGUF_T_UINT64 = 10, GGUF_T_INT64 = 11,
    GGUF_T_FLOAT64 = 12
} dms_gguf_vtype;

/* ggml tensor types (ggml numbering). */
typedef enum {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6,
    GGML_Q5_1 = 7, GGML_Q8_0 = 8, GGML_Q8_1 = 9, GGML_Q2_K = 10, GGML_Q3_K = 11,
    GGML_Q4_K = 12, GGML_Q5_K = 13, GGML_Q6_K = 14, GGML_Q8_K = 15,
    GGML_BF16 = 30
} dms_ggml_type;

typedef struct { const char *ptr; uint64_t len; } dms_gguf_str; /* not NUL-terminated */

/* Limits checked at open, besides every count, length and offset against
 * the file's size: metadata keys at most 65535 bytes (the GGUF spec's
 * limit), arrays nested at most 8 deep. */
#define DMS_GGUF_MAX_KEY 65535

typedef struct dms_gguf_kv {
    dms_gguf_str key;
    dms_gguf_vtype type;
    /* scalars */
    union { uint64_t u; int64_t i; double f; int b; dms_gguf_str s; } v;
    /* arrays: element type, count and pointer to the first element's bytes in
     * the mapped file (strings in an array are length-prefixed, see
     * dms_gguf_array_str). */
    dms_gguf_vtype arr_type;
    uint64_t arr_len;
    const uint8_t *arr_data;
    const uint8_t *arr_end;  /* one past the array's last byte (validated at open) */
    const char *path;        /* the file's path (owned by dms_gguf), for messages */
} dms_gguf_kv;

typedef struct dms_gguf_tensor {
    dms_gguf_str name;
    uint32_t n_dims;
    uint64_t ne[4];        /* ne[0] is the innermost (contiguous) dimension */
    dms_ggml_type type;
    uint64_t offset;       /* relative to the data section */
    const uint8_t *data;   /* absolute pointer into the map, bounds-checked */
    uint64_t nbytes;
} dms_gguf_tensor;

typedef struct dms_gguf {
    dms_mapped_file file;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    dms_gguf_kv *kv;
    dms_gguf_tensor *tensors;
    uint64_t alignment;
    const uint8_t *data_section;
} dms_gguf;

int dms_gguf_open(dms_gguf *g, const char *path, dms_err *err);
void dms_gguf_close(dms_gguf *g);

/* Lookup helpers; return NULL / -1 when missing or of the wrong type. */
const dms_gguf_kv *dms_gguf_find_kv(const dms_gguf *g, const char *key);
const dms_gguf_tensor *dms_gguf_find_tensor(const dms_gguf *g, const char *name);
/* Integer or float scalar (any numeric type) -> out; -1 if missing/not numeric. */
int dms_gguf_get_u64(const dms_gguf *g, const char *key, uint64_t *out);
int dms_gguf_get_f64(const dms_gguf *g, const char *key, double *out);
/* String scalar -> malloc'd NUL-terminated copy, NULL if missing. */
char *dms_gguf_get_str(const dms_gguf *g, const char *key);
/* Element i of a string array (kv->arr_type == GGUF_T_STRING). The walk is
 * linear, so use dms_gguf_array_strs to fetch all at once. */
int dms_gguf_array_strs(const dms_gguf_kv *kv, dms_gguf_str *out, dms_err *err);
/* tokenizer.ggml.token_type of the n tokens into types[n]: 1 if present, 0
 * if the file has none (types untouched), -1 with a message if it is not an
 * int32 array of n entries. */
int dms_gguf_token_types(const dms_gguf *g, int n, int32_t *types, dms_err *err);

/* Copies a name from the file into buf for an error message: control bytes
 * become '?', and a name longer than the buffer is cut with "...". */
#define DMS_GGUF_NAME_BUF 160
const char *dms_gguf_str_printable(dms_gguf_str s, char *buf, size_t cap);

/* Human-readable type name ("Q4_1", "F32", ...) or "?" */
const char *dms_ggml_type_name(dms_ggml_type t);
/* Whether dms_gguf_dequantize supports type t. */
int dms_ggml_type_supported(dms_ggml_type t);
/* Elements in the tensor (product of ne). */
uint64_t dms_gguf_tensor_nelem(const dms_gguf_tensor *t);
/* Dequantises the whole tensor to fp32 into out (nelem floats). */
int dms_gguf_dequantize(const dms_gguf *g, const dms_gguf_tensor *t, float *out, dms_err *err);

/* Elements per block and bytes per block of ggml type t (every type ggml
 * defines, supported for dequantisation or not); 0 for an unknown type. */
uint64_t dms_ggml_blck_size(dms_ggml_type t);
uint64_t dms_ggml_type_size(dms_ggml_type t);
/* Dequantises n elements (a multiple of the block size) of type t from src
 * into dst, single-threaded; -1 if t is not supported. */
int dms_ggml_dequantize_blocks(dms_ggml_type t, const void *src, float *dst, uint64_t n);

#endif
