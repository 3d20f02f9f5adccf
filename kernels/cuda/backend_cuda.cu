/* backend_cuda.cu - the CUDA backend's context (one device, one stream, one
 * cuBLAS handle), its memory ops, its sticky status and its op table; the
 * numeric ops live one per file beside it, each the twin of kernels/cpu/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_internal.cuh"

/* ---------------- sticky status ---------------- */
void cu_fail(cu_ctx *c, const char *op, const char *what) {
    if (!c->failed) {
        c->failed = 1;
        snprintf(c->msg, sizeof c->msg, "%s: %s", op, what);
    }
}

void cu_check_err(cu_ctx *c, const char *op, cudaError_t e) {
    if (e != cudaSuccess) cu_fail(c, op, cudaGetErrorString(e));
}

void cu_check(cu_ctx *c, const char *op) { cu_check_err(c, op, cudaGetLastError()); }

void cu_check_blas(cu_ctx *c, const char *op, cublasStatus_t s) {
    if (s != CUBLAS_STATUS_SUCCESS) {
        char what[96];
        snprintf(what, sizeof what, "cuBLAS: %s", cublasGetStatusString(s));
        cu_fail(c, op, what);
    }
}

/* The status synchronises the stream, so that a fault in a kernel still in
 * flight is reported by this call rather than by a later one. */
int cu_status(void *ctx, char *msg, size_t cap) {
    cu_ctx *c = (cu_ctx *)ctx;
    cu_check_err(c, "status", cudaStreamSynchronize(c->stream));
    cu_check(c, "status");
    if (!c->failed) return 0;
    if (msg && cap) snprintf(msg, cap, "%s", c->msg);
    c->failed = 0;
    c->msg[0] = '\0';
    return -1;
}

void *cu_scratch(cu_ctx *c, size_t bytes, const char *op) {
    if (bytes == 0) bytes = 1; /* never a NULL "success" */
    if (bytes <= c->scratch_bytes && c->scratch) return c->scratch;
    /* queued kernels may still read the old buffer */
    cu_check_err(c, op, cudaStreamSynchronize(c->stream));
    cudaFree(c->scratch);
    c->scratch = NULL;
    c->scratch_bytes = 0;
    const size_t want = (bytes + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1); /* whole MiB */
    if (cudaMalloc(&c->scratch, want) != cudaSuccess) {
        (void)cudaGetLastError(); /* handled here: keep it out of the next launch check */
        c->scratch = NULL;
        char what[96];
        snprintf(what, sizeof what, "out of device memory (scratch of %zu bytes)", want);
        cu_fail(c, op, what);
        return NULL;
    }
    c->scratch_bytes = want;
    return c->scratch;
}

void cu_smem_opt_in(cu_ctx *c, const void *fn, size_t bytes, const char *op) {
    if (bytes > 48 * 1024)
        cu_check_err(c, op, cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

/* ---------------- memory ---------------- */
void *cu_alloc(void *ctx, size_t bytes) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (bytes == 0) bytes = 64;
    void *p = NULL;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        (void)cudaGetLastError(); /* NULL is the report */
        return NULL;
    }
    /* zero-filled before return, so that other streams (NCCL's) see zeros too */
    if (cudaMemsetAsync(p, 0, bytes, c->stream) != cudaSuccess ||
        cudaStreamSynchronize(c->stream) != cudaSuccess) {
        (void)cudaGetLastError();
        cudaFree(p);
        return NULL;
    }
    return p;
}

void cu_free(void *ctx, void *p) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (p) cu_check_err(c, "free", cudaFree(p));
}

void cu_upload(void *ctx, void *dst, const void *src, size_t bytes) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (!bytes) return;
    cu_check_err(c, "upload", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    cu_check_err(c, "upload", cudaStreamSynchronize(c->stream));
}

void cu_download(void *ctx, void *dst, const void *src, size_t bytes) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (!bytes) return;
    cu_check_err(c, "download", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    cu_check_err(c, "download", cudaStreamSynchronize(c->stream));
}

void cu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    cu_ctx *c = (cu_ctx *)ctx;
    if (!bytes || dst == src) return;
    cu_check_err(c, "copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
}

void cu_sync(void *ctx) {
    cu_ctx *c = (cu_ctx *)ctx;
    cu_check_err(c, "sync", cudaStreamSynchronize(c->stream));
}

static void *cu_queue(void *ctx) { return (void *)((cu_ctx *)ctx)->stream; }

static int cu_device_info(void *ctx, char *name, size_t cap, size_t *used, size_t *total) {
    cu_ctx *c = (cu_ctx *)ctx;
    cudaDeviceProp prop;
    size_t free_b = 0, total_b = 0;
    if (cudaGetDeviceProperties(&prop, c->device) != cudaSuccess || cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    if (name && cap) snprintf(name, cap, "%s", prop.name);
    *used = total_b - free_b;
    *total = total_b;
    return 0;
}

/* ---------------- construction ---------------- */
static void cu_ctx_free(cu_ctx *c) {
    if (c->stream) cudaStreamSynchronize(c->stream);
    cudaFree(c->scratch);
    cudaFree(c->red);
    cu_lt_free(c);
    if (c->blas) cublasDestroy(c->blas);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

extern "C" int dms_backend_cuda_create(dms_backend *be, int device, dms_err *err) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        return dms_errf(err, "cuda: no usable GPU (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    }
    if (device < 0 || device >= count)
        return dms_errf(err, "cuda: device %d does not exist (%d found)", device, count);
    if ((e = cudaSetDevice(device)) != cudaSuccess)
        return dms_errf(err, "cuda: cannot use device %d: %s", device, cudaGetErrorString(e));
    cu_ctx *c = (cu_ctx *)calloc(1, sizeof(cu_ctx));
    if (!c) return dms_errf(err, "cuda: out of memory");
    c->device = device;
    if ((e = cudaStreamCreate(&c->stream)) != cudaSuccess) {
        c->stream = NULL;
        cu_ctx_free(c);
        return dms_errf(err, "cuda: cannot create a stream on device %d: %s", device, cudaGetErrorString(e));
    }
    cublasStatus_t s = cublasCreate(&c->blas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        c->blas = NULL;
        cu_ctx_free(c);
        return dms_errf(err, "cuda: cannot start cuBLAS on device %d: %s", device, cublasGetStatusString(s));
    }
    /* Plain fp32 GEMMs (no TF32): the CPU oracle is fp32. */
    if ((s = cublasSetStream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS ||
        (s = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS) {
        cu_ctx_free(c);
        return dms_errf(err, "cuda: cuBLAS setup on device %d: %s", device, cublasGetStatusString(s));
    }
    int smem = 0;
    if ((e = cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device)) != cudaSuccess) {
        cu_ctx_free(c);
        return dms_errf(err, "cuda: device %d: %s", device, cudaGetErrorString(e));
    }
    c->smem_optin = (size_t)smem;
    if ((e = cudaDeviceGetAttribute(&c->cc_major, cudaDevAttrComputeCapabilityMajor, device)) != cudaSuccess) {
        cu_ctx_free(c);
        return dms_errf(err, "cuda: device %d: %s", device, cudaGetErrorString(e));
    }
    /* the training attention's precision: bf16 tensor cores (default) or fp32 */
    const char *att = getenv("DMS_CUDA_ATTENTION");
    if (att && *att && strcmp(att, "fp32") && strcmp(att, "bf16")) {
        cu_ctx_free(c);
        return dms_errf(err, "cuda: DMS_CUDA_ATTENTION=%s: expected bf16 (tensor cores, the default) or fp32", att);
    }
    c->att_fp32 = att && !strcmp(att, "fp32");
    if ((e = cudaMalloc((void **)&c->red, sizeof(double) * (CU_RED_BLOCKS + 1))) != cudaSuccess) {
        (void)cudaGetLastError();
        c->red = NULL;
        cu_ctx_free(c);
        return dms_errf(err, "cuda: out of device memory on device %d", device);
    }

    memset(be, 0, sizeof *be);
    be->name = "cuda";
    be->ctx = c;
    be->weight_dtype = DMS_BF16;
    be->device_info = cu_device_info;
    be->queue = cu_queue;
    /* Every op of the table, by name: a missing cu_<op> fails to compile. */
#define CU_SET_OP(op) be->op = cu_##op;
    DMS_OPS_INFER(CU_SET_OP)
    DMS_OPS_TRAIN(CU_SET_OP)
    DMS_OPS_RUNTIME(CU_SET_OP)
#undef CU_SET_OP
    return 0;
}

extern "C" int dms_backend_cuda_gemm_plans(const dms_backend *be, int *fallbacks) {
    return cu_gemm_plan_count((const cu_ctx *)be->ctx, fallbacks);
}

extern "C" void dms_backend_cuda_destroy(dms_backend *be) {
    cu_ctx *c = (cu_ctx *)be->ctx;
    if (!c) return;
    cudaSetDevice(c->device);
    cu_ctx_free(c);
    be->ctx = NULL;
}
