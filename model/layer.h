/* layer.h - the one transformer layer of dms: RMSNorm -> q/k/v (+bias,
 * +LoRA) -> DMS decision logits -> q/k norm -> RoPE -> attention (supplied
 * by the caller) -> o_proj -> residual -> RMSNorm -> SwiGLU MLP ->
 * residual. The teacher, the student's training forward, its recompute in
 * the backward pass, generation and the runtime all call this function;
 * they differ only in the attention strategy they hand it. */
#ifndef DMS_LAYER_H
#define DMS_LAYER_H

#include "kernels/arena.h"
#include "model/model.h"

/* One layer's activations over up to `cap` tokens (backend memory). The
 * training backward reads them; generation overwrites them chunk by chunk. */
typedef struct dms_layer_acts {
    int cap;
    int32_t *pos;                  /* [cap] positions (RoPE); set by the caller */
    float *n1;                     /* [cap, d] RMSNorm(x_in) */
    float *a;                      /* [cap, d] adapter RMSNorm(x_in) */
    float *qpre, *kpre;            /* [cap, H*hd], [cap, KV*hd] before q/k norm (alias q, k when not kept) */
    float *q, *k, *v;              /* after norm and RoPE */
    float *zraw;                   /* [cap, KV] decision logits before scale and offset */
    float *att;                    /* [cap, H*hd] attention output */
    float *lse;                    /* [cap, H] attention log-sum-exp (training strategies) */
    float *xmid;                   /* [cap, d] x_in + o_proj(att) */
    float *n2, *g, *up, *hb;       /* MLP: [cap, d], [cap, ff] x 3 */
    float *lora_xa[DMS_LORA_N];    /* [cap, r]: A x of each target (when the model has LoRA) */
    float *lora_tmp;               /* [cap, max(H*hd, d)] */
} dms_layer_acts;

/* training = 1 keeps q/k before their norm apart (the backward needs
 * them). Views come from the arena; check it with dms_arena_check. */
void dms_layer_acts_init(dms_layer_acts *a, dms_arena *ar, const dms_model *m, int cap, int training);

/* Layer l over n tokens: x_out = layer(x_in) (x_out may alias x_in).
 * `attend` receives the strategy as its first argument. x_out NULL: stop
 * after the MLP's gate and up products, the last activations the training
 * backward reads (its recompute: the layer's output is already kept, so
 * the SwiGLU, the down product and the residual would be thrown away). */
void dms_layer_forward(const dms_model *m, int l, const float *x_in, float *x_out, dms_layer_acts *a, int n,
                       dms_attn *attn);

#endif
