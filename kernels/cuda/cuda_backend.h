/* cuda_backend.h - C entry points of the CUDA backend: create an op table
 * bound to one device (its cuBLAS handle and stream live in be->ctx). */
#ifndef DMS_CUDA_BACKEND_H
#define DMS_CUDA_BACKEND_H

#include "core/err.h"
#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills *be with the CUDA op table on `device`; -1 with a message if no
 * usable GPU or cuBLAS fails to start. */
int dms_backend_cuda_create(dms_backend *be, int device, dms_err *err);
void dms_backend_cuda_destroy(dms_backend *be);
/* bf16 GEMM plans (one per shape, kernels/cuda/gemm_lt.cu) the backend has
 * made so far; *fallbacks (may be NULL): how many use cublasGemmEx. */
int dms_backend_cuda_gemm_plans(const dms_backend *be, int *fallbacks);

#ifdef __cplusplus
}
#endif

#endif
