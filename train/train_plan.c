/* train_plan.c - the memory plan of train_plan.h: the model and the trainer
 * are built on the measuring backend, their allocations counted, and the
 * trainer's memory split into its parts. The parts follow the buffers that
 * train/trainer.c allocates (alloc_activations) and model/layer.c's
 * dms_layer_acts_init (measured directly); whatever the split misses shows
 * up as `other`, which the tests hold at 0. */
#include "train/train_plan.h"

#include <math.h>
#include <string.h>

#include "kernels/arena.h"
#include "kernels/measure.h"
#include "model/layer.h"
#include "model/model_random.h"
#include "train/trainer.h"

/* CPU attention (kernels/cpu/attention_dms.c): per thread two score tiles of
 * ATT_TILE queries x T keys in the backward, plus D [T, H] and the document
 * bounds. CUDA (kernels/cuda): one scratch buffer, as large as the largest
 * op's need: the bf16 copy of a matmul's fp32 operand (the input forward,
 * the output gradient backward: [T, max(d, ff, H*hd)], or [kd chunk, V]
 * for the LM head's input gradient), or the attention backward's D [T, H]
 * and beside it what its kernels use: the tensor-core kernels (head dims
 * that are multiples of 16 up to 128, attention_mma.cu) bf16 copies of q
 * and dO [Tp, H, hd] and of k and v [Tp, KV, hd] (Tp: T rounded up to
 * CU_MMA_TP_ALIGN); the fp32 tiled kernels (other head dims up to 128)
 * nothing; the reference kernels (wider heads) CU_ATT_SCRATCH_BYTES of
 * score rows; rounded up to whole MiB; and cuBLASLt's workspace. Values
 * copied from those files' constants. */
#define CPU_ATT_TILE 128.0
#define CU_ATT_SCRATCH 134217728.0 /* 128 MiB */
#define CU_MMA_TP_ALIGN 128.0      /* MM_TP_ALIGN, kernels/cuda/attention_mma.cu */
#define CU_LT_WORKSPACE 33554432.0 /* 32 MiB, kernels/cuda/gemm_lt.cu */
#define MIB 1048576.0

static double workspace(const dms_config *c, double T, double chunk, dms_backend_kind backend, int threads) {
    const double H = c->n_heads, f32 = 4;
    if (backend == DMS_BACKEND_CPU)
        return T * H * f32 + (threads > 0 ? threads : 1) * 2.0 * CPU_ATT_TILE * T * f32 + 2.0 * T * 4;
    double widest = c->hidden;
    if (c->intermediate > widest) widest = c->intermediate;
    if ((double)c->n_heads * c->head_dim > widest) widest = (double)c->n_heads * c->head_dim;
    double need = T * widest * 2; /* bf16 */
    if (chunk * c->vocab * 2 > need) need = chunk * c->vocab * 2;
    const int hd = c->head_dim;
    const double Tp = ceil(T / CU_MMA_TP_ALIGN) * CU_MMA_TP_ALIGN, bf16 = 2;
    const double kernels = hd % 16 == 0 && hd <= 128 ? 2 * Tp * (H + c->n_kv_heads) * hd * bf16
                           : hd <= 128                ? 0
                                                      : CU_ATT_SCRATCH;
    const double att = (double)(((size_t)(T * H) + 63) / 64 * 64) * f32 + kernels;
    if (att > need) need = att;
    return (double)(size_t)((need + MIB - 1) / MIB) * MIB + CU_LT_WORKSPACE;
}

int dms_train_plan_compute(const char *model_path, const dms_train_config *cfg, dms_backend_kind backend,
                           int threads, dms_train_plan *p, dms_err *err) {
    memset(p, 0, sizeof *p);
    dms_measure ms;
    if (dms_measure_init(&ms, backend == DMS_BACKEND_CUDA ? DMS_BF16 : DMS_F32, dms_backend_kind_name(backend),
                         err) != 0)
        return -1;
    dms_model m;
    if (dms_model_init_random(&m, model_path, &ms.be, 0, 0, 0, err) != 0) {
        dms_measure_free(&ms);
        return -1;
    }
    p->frozen = (double)ms.live;
    dms_trainer *tr = dms_trainer_create(&m, cfg, err);
    int rc = tr ? 0 : -1;
    if (rc == 0) {
        const dms_config *c = &m.cfg;
        const double T = cfg->max_len, L = c->n_layers, d = c->hidden, KV = c->n_kv_heads,
                     qd = (double)c->n_heads * c->head_dim, kvd = KV * c->head_dim, ff = c->intermediate,
                     V = c->vocab, r = m.lora_rank, f32 = 4, i32 = 4, f64 = 8;
        const double chunk = cfg->kd_chunk < cfg->max_len ? cfg->kd_chunk : cfg->max_len;
        double n_train = 0;
        for (int i = 0; i < dms_trainer_n_params(tr); i++) n_train += (double)dms_trainer_param(tr, i)->n;
        p->tokens = cfg->max_len;
        p->layers = c->n_layers;
        p->threads = threads;
        p->backend = backend;
        p->trainable = n_train * f32;
        p->grads = n_train * f32;
        p->adam = 2 * n_train * f32;
        if (cfg->variant == DMS_VARIANT_NEURON && c->qkv_bias) /* the decision rows' frozen q bias */
            p->frozen += L * KV * f32;
        p->arena = (double)ms.live - p->frozen - p->trainable;
        { /* one layer's activations: measured, as the trainer allocates them */
            dms_arena a;
            dms_layer_acts acts;
            dms_arena_init(&a, &ms.be);
            dms_layer_acts_init(&acts, &a, &m, cfg->max_len, 1);
            p->layer_acts = (double)a.bytes;
            dms_arena_free(&a);
        }
        p->layer_input = T * d * f32;
        p->inputs_kept = (L + 1) * p->layer_input;
        p->att_kept = cfg->backward_attention == DMS_ATT_KEEP ? L * T * (qd + c->n_heads) * f32 : 0;
        p->hidden = 2 * T * d * f32;
        p->backward = (3 * T * d + 2 * T * ff + 2 * T * qd + 2 * T * kvd + 3 * T * KV + T * r) * f32;
        p->kd_chunk = (2 * chunk * V + chunk) * f32;
        p->decisions = 2 * T * i32 + (T + T * KV + L * T * KV + 3 * T * KV + L * KV + KV * T * KV) * f32 +
                       (4 + 2 * L + 2 * L * KV) * f64;
        if (cfg->guide_weight > 0) p->decisions += 2 * L * T * KV * f32; /* guidance: maxima and targets */
        p->other = p->arena - (p->grads + p->adam + p->layer_acts + p->inputs_kept + p->att_kept + p->hidden +
                               p->backward + p->kd_chunk + p->decisions);
        p->workspace = workspace(c, T, chunk, backend, threads);
        p->total = p->frozen + p->trainable + p->arena + p->workspace;
    }
    dms_trainer_free(tr);
    dms_model_free(&m);
    dms_measure_free(&ms);
    return rc;
}
