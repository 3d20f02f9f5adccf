/* gemm_lt.cu - the bf16 GEMM of the frozen model's products (forward and
 * input gradient, matmul.cu) on cuBLASLt: bf16 x bf16 with fp32
 * accumulation into fp32, the tensor-core path. A training step calls the
 * same few shapes thousands of times, so each shape gets its plan once (the
 * matmul descriptor, the three layouts and the algorithm cuBLASLt's
 * heuristic ranks first for it, within a fixed workspace) and keeps it for
 * the life of the context; a call is then one cublasLtMatmul. A shape the
 * heuristic has no algorithm for falls back to cublasGemmEx, recorded in
 * its plan. The key holds everything the algorithm depends on: the
 * operations, m, n, k, the leading dimensions, whether C is read (beta) and
 * each pointer's alignment (up to 16 bytes). */
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_internal.cuh"

/* Workspace offered to cuBLASLt (the size NVIDIA recommends for Hopper). */
#define CU_LT_WORKSPACE ((size_t)32 << 20)

typedef struct {
    int ta, tb, m, n, k, lda, ldb, ldc, beta_nz, align_a, align_b, align_c;
} lt_key;

struct cu_lt_plan {
    lt_key key;
    int fallback; /* no cuBLASLt algorithm: cublasGemmEx */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, cd;
    cublasLtMatmulAlgo_t algo;
    size_t workspace;
};

static int align_of(const void *p) {
    const uintptr_t u = (uintptr_t)p;
    int a = 1;
    while (a < 16 && !(u & (uintptr_t)a)) a <<= 1;
    return a;
}

static void plan_release(cu_lt_plan *p) {
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->cd) cublasLtMatrixLayoutDestroy(p->cd);
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
}

void cu_lt_free(cu_ctx *c) {
    for (int i = 0; i < c->n_lt; i++) plan_release(&c->lt_plans[i]);
    free(c->lt_plans);
    cudaFree(c->lt_ws);
    if (c->lt) cublasLtDestroy(c->lt);
    c->lt_plans = NULL, c->n_lt = c->cap_lt = 0, c->lt_ws = NULL, c->lt = NULL;
}

/* The heuristic's first algorithm for the plan's shape, or fallback = 1. */
static cublasStatus_t plan_make(cublasLtHandle_t lt, cu_lt_plan *p) {
    const lt_key *k = &p->key;
    const cublasOperation_t ta = (cublasOperation_t)k->ta, tb = (cublasOperation_t)k->tb;
    cublasStatus_t s = cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    /* column-major storage: op(A) is m x k, op(B) k x n, C and D m x n */
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, ta == CUBLAS_OP_N ? k->m : k->k,
                                       ta == CUBLAS_OP_N ? k->k : k->m, k->lda);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, tb == CUBLAS_OP_N ? k->k : k->n,
                                       tb == CUBLAS_OP_N ? k->n : k->k, k->ldb);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&p->cd, CUDA_R_32F, k->m, k->n, k->ldc);
    if (s != CUBLAS_STATUS_SUCCESS) return s;

    cublasLtMatmulPreference_t pref = NULL;
    s = cublasLtMatmulPreferenceCreate(&pref);
    const uint64_t ws = CU_LT_WORKSPACE;
    /* the pointers' alignments: A, B, then C and D (the same buffer) */
    static const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    const uint32_t al[4] = {(uint32_t)k->align_a, (uint32_t)k->align_b, (uint32_t)k->align_c, (uint32_t)k->align_c};
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    for (int i = 0; i < 4 && s == CUBLAS_STATUS_SUCCESS; i++)
        s = cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &al[i], sizeof al[i]);
    cublasLtMatmulHeuristicResult_t best;
    int found = 0;
    if (s == CUBLAS_STATUS_SUCCESS) {
        /* no algorithm for this shape is not an error: GemmEx takes it */
        s = cublasLtMatmulAlgoGetHeuristic(lt, p->desc, p->a, p->b, p->cd, p->cd, pref, 1, &best, &found);
        if (s == CUBLAS_STATUS_NOT_SUPPORTED) s = CUBLAS_STATUS_SUCCESS, found = 0;
    }
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    p->fallback = found < 1 || best.state != CUBLAS_STATUS_SUCCESS;
    if (!p->fallback) p->algo = best.algo, p->workspace = best.workspaceSize;
    return CUBLAS_STATUS_SUCCESS;
}

/* The plan for key, made on first use; NULL with a recorded failure. */
static cu_lt_plan *plan_get(cu_ctx *c, const lt_key *key, const char *op) {
    for (int i = 0; i < c->n_lt; i++)
        if (!memcmp(&c->lt_plans[i].key, key, sizeof *key)) return &c->lt_plans[i];
    if (!c->lt) {
        const cublasStatus_t s = cublasLtCreate(&c->lt);
        if (s != CUBLAS_STATUS_SUCCESS) {
            c->lt = NULL;
            cu_check_blas(c, op, s);
            return NULL;
        }
    }
    if (!c->lt_ws && cudaMalloc(&c->lt_ws, CU_LT_WORKSPACE) != cudaSuccess) {
        (void)cudaGetLastError(); /* handled here: keep it out of the next launch check */
        c->lt_ws = NULL;
        cu_fail(c, op, "out of device memory (cuBLASLt workspace)");
        return NULL;
    }
    if (c->n_lt == c->cap_lt) {
        const int cap = c->cap_lt ? 2 * c->cap_lt : 32;
        cu_lt_plan *np = (cu_lt_plan *)realloc(c->lt_plans, sizeof *np * (size_t)cap);
        if (!np) {
            cu_fail(c, op, "out of host memory (GEMM plans)");
            return NULL;
        }
        c->lt_plans = np, c->cap_lt = cap;
    }
    cu_lt_plan *p = &c->lt_plans[c->n_lt];
    memset(p, 0, sizeof *p);
    p->key = *key;
    const cublasStatus_t s = plan_make(c->lt, p);
    if (s != CUBLAS_STATUS_SUCCESS) {
        plan_release(p);
        cu_check_blas(c, op, s);
        return NULL;
    }
    c->n_lt++;
    return p;
}

void cu_gemm_bf16(cu_ctx *c, const char *op, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                  const void *A, int lda, const void *B, int ldb, float *C, int ldc, float beta) {
    if (k == 0) { /* an empty sum: C = beta C */
        if (beta == 0.0f)
            cu_check_err(c, op,
                         cudaMemset2DAsync(C, sizeof(float) * (size_t)ldc, 0, sizeof(float) * (size_t)m, (size_t)n,
                                           c->stream));
        return;
    }
    const lt_key key = {(int)ta, (int)tb, m, n, k, lda, ldb, ldc, beta != 0.0f, align_of(A), align_of(B),
                        align_of(C)};
    const cu_lt_plan *p = plan_get(c, &key, op);
    if (!p) {
        cu_fill_nan(c, C, (size_t)ldc * n);
        return;
    }
    const float one = 1.0f;
    if (p->fallback) {
        cu_check_blas(c, op,
                      cublasGemmEx(c->blas, ta, tb, m, n, k, &one, A, CUDA_R_16BF, lda, B, CUDA_R_16BF, ldb, &beta, C,
                                   CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        return;
    }
    cu_check_blas(c, op,
                  cublasLtMatmul(c->lt, p->desc, &one, A, p->a, B, p->b, &beta, C, p->cd, C, p->cd, &p->algo,
                                 c->lt_ws, p->workspace, c->stream));
}

int cu_gemm_plan_count(const cu_ctx *c, int *fallbacks) {
    int f = 0;
    for (int i = 0; i < c->n_lt; i++) f += c->lt_plans[i].fallback;
    if (fallbacks) *fallbacks = f;
    return c->n_lt;
}
