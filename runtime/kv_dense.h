/* kv_dense.h - the plain KV cache: per layer, K and V as contiguous
 * [max_seq, KV*hd] buffers, nothing ever evicted (the "full" baseline and
 * the cache of a model without DMS). An attention strategy for the model's
 * forward pass (dms_kv_cache in model/model.h). */
#ifndef DMS_KV_DENSE_H
#define DMS_KV_DENSE_H

#include "kernels/arena.h"
#include "model/model.h"

typedef struct dms_kv_dense {
    dms_kv_cache base; /* first: a dms_kv_dense is a dms_kv_cache */
    int n_layers;
    size_t row;        /* floats per token per layer (KV * hd) */
    dms_arena arena;
    float **k, **v;
} dms_kv_dense;

int dms_kv_dense_init(dms_kv_dense *c, const dms_model *m, int max_seq, dms_err *err);
void dms_kv_dense_free(dms_kv_dense *c);
/* Bytes held for the tokens stored, and reserved for max_seq. */
size_t dms_kv_dense_bytes_used(const dms_kv_dense *c);
size_t dms_kv_dense_bytes_reserved(const dms_kv_dense *c);

#endif
