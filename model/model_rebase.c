/* model_rebase.c - a DMS model on its base's stored weights: an export of
 * an adapter-variant run (model/export.c) holds the base weights it was
 * trained on, widened and rounded to the export dtype, beside its DMS
 * heads. dms_model_take_base swaps every base tensor of such a model with
 * the base model's own (a GGUF kept as Q4_1 / Q8_0 blocks, say), after
 * checking that each export matrix is that base matrix up to the export's
 * rounding - so the DMS heads run over the same quantised weights as the
 * vanilla model, and a model trained from another base, or with merged
 * LoRA, is refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/dtype.h"
#include "model/model.h"

static void swap_mat(dms_mat *a, dms_mat *b) {
    const dms_mat t = *a;
    *a = *b;
    *b = t;
}
static void swap_vec(float **a, float **b) {
    float *t = *a;
    *a = *b;
    *b = t;
}

/* Widened row r of w into host memory out[w->cols]. */
static void host_row(const dms_backend *be, const dms_mat *w, int r, void *tmp, float *out) {
    const size_t rb = dms_dtype_bytes(w->dtype, (size_t)w->cols);
    be->download(be->ctx, tmp, (const char *)w->data + (size_t)r * rb, rb);
    dms_dtype_to_f32(w->dtype, tmp, out, (size_t)w->cols);
}

/* Elements of the export matrix a further from the base matrix b than a
 * 16-bit export's rounding allows: |a - b| > 2^-8 |b| + 2^-24. */
static long long mismatches(const dms_backend *be, const dms_mat *a, const dms_mat *b, float *ra, float *rb,
                            void *tmp) {
    long long bad = 0;
    for (int r = 0; r < a->rows; r++) {
        host_row(be, a, r, tmp, ra);
        host_row(be, b, r, tmp, rb);
        for (int c = 0; c < a->cols; c++)
            bad += !(fabsf(ra[c] - rb[c]) <= 0x1p-8f * fabsf(rb[c]) + 0x1p-24f);
    }
    return bad;
}

int dms_model_take_base(dms_model *dm, dms_model *base, dms_err *err) {
    const dms_config *c = &dm->cfg, *b = &base->cfg;
    if (!dm->has_heads || !c->dms.separate_alpha)
        return dms_errf(err, "%s: not an adapter-variant DMS model (its base weights cannot be swapped: the neuron "
                             "variant trains q_proj rows)", dm->path);
    if (base->has_heads || dm->lora_rank || base->lora_rank)
        return dms_errf(err, "%s / %s: the base must be a plain model and neither may carry LoRA", dm->path, base->path);
    if (dm->be != base->be) return dms_errf(err, "%s / %s: loaded on different backends", dm->path, base->path);
    if (c->arch != b->arch || c->hidden != b->hidden || c->n_layers != b->n_layers || c->n_heads != b->n_heads ||
        c->n_kv_heads != b->n_kv_heads || c->head_dim != b->head_dim || c->intermediate != b->intermediate ||
        c->vocab != b->vocab || c->tie_embeddings != b->tie_embeddings)
        return dms_errf(err, "%s is not a DMS model of %s: their shapes differ", dm->path, base->path);
    const int L = c->n_layers;
    int widest = c->hidden > c->intermediate ? c->hidden : c->intermediate; /* the longest row */
    if (c->n_heads * c->head_dim > widest) widest = c->n_heads * c->head_dim;
    float *ra = malloc(sizeof(float) * (size_t)widest), *rb = malloc(sizeof(float) * (size_t)widest);
    void *tmp = malloc(sizeof(float) * (size_t)widest);
    if (!ra || !rb || !tmp) {
        free(ra), free(rb), free(tmp);
        return dms_errf(err, "out of memory");
    }
    long long bad = 0;
    const char *worst = NULL;
    for (int l = -1; l < L && !worst; l++) {
        const dms_mat *ma[7], *mb[7];
        int n = 0;
        if (l < 0) {
            ma[n] = &dm->embed, mb[n++] = &base->embed;
            if (!c->tie_embeddings) ma[n] = &dm->lm_head, mb[n++] = &base->lm_head;
        } else {
            const dms_layer *x = &dm->layers[l], *y = &base->layers[l];
            const dms_mat *xs[7] = {&x->wq, &x->wk, &x->wv, &x->wo, &x->w_gate, &x->w_up, &x->w_down};
            const dms_mat *ys[7] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_up, &y->w_down};
            for (int i = 0; i < 7; i++) ma[n] = xs[i], mb[n++] = ys[i];
        }
        for (int i = 0; i < n; i++) {
            if (ma[i]->rows != mb[i]->rows || ma[i]->cols != mb[i]->cols) {
                worst = "a matrix shape";
                break;
            }
            const long long m = mismatches(dm->be, ma[i], mb[i], ra, rb, tmp);
            if (m) worst = "weights", bad += m;
        }
    }
    free(ra), free(rb), free(tmp);
    if (worst)
        return dms_errf(err, "%s was not trained on %s: %s differ (%lld elements past the export's bf16 rounding, in "
                             "the first differing layer) - another base, or merged LoRA", dm->path, base->path, worst,
                        bad);
    swap_mat(&dm->embed, &base->embed);
    if (c->tie_embeddings) {
        dm->lm_head = dm->embed;
        base->lm_head = base->embed;
    } else {
        swap_mat(&dm->lm_head, &base->lm_head);
    }
    swap_vec(&dm->final_norm, &base->final_norm);
    for (int l = 0; l < L; l++) {
        dms_layer *x = &dm->layers[l], *y = &base->layers[l];
        swap_mat(&x->wq, &y->wq), swap_mat(&x->wk, &y->wk), swap_mat(&x->wv, &y->wv), swap_mat(&x->wo, &y->wo);
        swap_mat(&x->w_gate, &y->w_gate), swap_mat(&x->w_up, &y->w_up), swap_mat(&x->w_down, &y->w_down);
        swap_vec(&x->bq, &y->bq), swap_vec(&x->bk, &y->bk), swap_vec(&x->bv, &y->bv);
        swap_vec(&x->q_norm, &y->q_norm), swap_vec(&x->k_norm, &y->k_norm);
        swap_vec(&x->attn_norm, &y->attn_norm), swap_vec(&x->ffn_norm, &y->ffn_norm);
    }
    char types[sizeof dm->weight_types];
    memcpy(types, dm->weight_types, sizeof types);
    memcpy(dm->weight_types, base->weight_types, sizeof types);
    memcpy(base->weight_types, types, sizeof types);
    return 0;
}
