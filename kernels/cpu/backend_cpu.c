/* backend_cpu.c - the CPU backend: its op table, its memory (64-byte
 * aligned host memory so that vector loads and OpenBLAS see aligned rows),
 * its sticky status and the kept-dtype kernels chosen from CPUID. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/quant.h"

typedef struct cpu_ctx {
    int failed;
    char msg[256];
    dms_cpu_kernels kern; /* of the best instruction set this CPU has */
} cpu_ctx;

const dms_cpu_kernels *dms_cpu_ctx_kernels(void *ctx) { return ctx ? &((cpu_ctx *)ctx)->kern : NULL; }

int dms_cpu_supports_dtype(void *ctx, dms_dtype t) {
    (void)ctx;
    return (int)t >= 0 && t < DMS_DTYPE_COUNT;
}

void dms_cpu_fail(void *ctx, const char *op, const char *what) {
    cpu_ctx *c = ctx;
#pragma omp critical(dms_cpu_status)
    {
        if (!c) fprintf(stderr, "dms cpu: %s: %s\n", op, what);
        else if (!c->failed) {
            c->failed = 1;
            snprintf(c->msg, sizeof c->msg, "%s: %s", op, what);
        }
    }
}

int dms_cpu_status(void *ctx, char *msg, size_t cap) {
    cpu_ctx *c = ctx;
    if (!c || !c->failed) return 0;
    if (msg && cap) snprintf(msg, cap, "%s", c->msg);
    c->failed = 0;
    return -1;
}

void dms_cpu_fill_nan(float *x, size_t n) {
    if (x)
        for (size_t i = 0; i < n; i++) x[i] = __builtin_nanf("");
}

void *dms_cpu_alloc(void *ctx, size_t bytes) {
    (void)ctx;
    if (bytes == 0) bytes = 64;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded);
    if (p) memset(p, 0, rounded);
    return p;
}

void dms_cpu_free(void *ctx, void *p) {
    (void)ctx;
    free(p);
}

void dms_cpu_memcpy(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    if (bytes) memmove(dst, src, bytes);
}

void dms_cpu_sync(void *ctx) { (void)ctx; }

const dms_backend dms_cpu_ops = {
    .name = "cpu",
    .weight_dtype = DMS_F32,
    .supports_dtype = dms_cpu_supports_dtype,
    .narrow = dms_cpu_narrow,
    .alloc = dms_cpu_alloc,
    .free = dms_cpu_free,
    .upload = dms_cpu_memcpy,
    .download = dms_cpu_memcpy,
    .copy = dms_cpu_memcpy,
    .sync = dms_cpu_sync,
    .status = dms_cpu_status,
    .zero = dms_cpu_zero,
    .zero_f64 = dms_cpu_zero_f64,
    .scale = dms_cpu_scale,
    .add = dms_cpu_add,
    .axpy = dms_cpu_axpy,
    .matmul = dms_cpu_matmul,
    .matmul_multi = dms_cpu_matmul_multi,
    .rmsnorm = dms_cpu_rmsnorm,
    .rope = dms_cpu_rope,
    .attention = dms_cpu_attention,
    .attention_paged = dms_cpu_attention_paged,
    .swiglu = dms_cpu_swiglu,
    .embedding = dms_cpu_embedding,
    .attention_dms_fwd = dms_cpu_attention_dms_fwd,
    .attention_dms_bwd = dms_cpu_attention_dms_bwd,
    .matmul_bwd_x = dms_cpu_matmul_bwd_x,
    .matmul_bwd_w = dms_cpu_matmul_bwd_w,
    .rmsnorm_bwd = dms_cpu_rmsnorm_bwd,
    .rope_bwd = dms_cpu_rope_bwd,
    .swiglu_bwd = dms_cpu_swiglu_bwd,
    .kd_chunk = dms_cpu_kd_chunk,
    .adamw = dms_cpu_adamw,
    .sumsq = dms_cpu_sumsq,
    .sum_acc = dms_cpu_sum_acc,
    .dms_noise = dms_cpu_dms_noise,
    .dms_decide = dms_cpu_dms_decide,
    .dms_decide_bwd = dms_cpu_dms_decide_bwd,
    .dms_comp_grad = dms_cpu_dms_comp_grad,
    .attention_future_max = dms_cpu_attention_future_max,
    .dms_guide_grad = dms_cpu_dms_guide_grad,
    .dms_neuron_take = dms_cpu_dms_neuron_take,
    .dms_neuron_put = dms_cpu_dms_neuron_put,
};

int dms_backend_cpu_create(dms_backend *be, dms_err *err) {
    *be = dms_cpu_ops;
    cpu_ctx *c = calloc(1, sizeof(cpu_ctx));
    if (!c) return dms_errf(err, "cpu backend: out of memory");
    dms_cpu_kernels_init(&c->kern, dms_cpu_isa_best());
    be->ctx = c;
    return 0;
}

void dms_backend_cpu_destroy(dms_backend *be) {
    free(be->ctx);
    be->ctx = NULL;
}
