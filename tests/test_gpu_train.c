/* test_gpu_train.c - a whole DMS training step, and a 50-step run, on a
 * backend (argument: cuda, the default; or cpu) against the CPU oracle.
 * Both sides build the tiny Qwen3 shape (tests/fixtures/models/tiny_qwen3)
 * with the same random bf16 weights (the CPU backend reads bf16 weights as
 * they are), the same LoRA and heads, rows and counter-RNG noise, so the
 * only difference left is the backend's arithmetic. The CUDA GEMMs against
 * the bf16 weights round their fp32 operand (the activation forward, the
 * output gradient backward) to bf16 for the tensor cores (relative error
 * 2^-9 an element, about 1e-3 a product) where the CPU keeps fp32, so
 * the tolerances are bf16 ones, an order above that and far below what a
 * wrong kernel gives:
 *  - step, at step 30 (attention guidance on, docs/training.md) and at
 *    step 45 (after its 40 steps: off): KD, compression and guidance loss
 *    to 1e-2 relative, decision and KV fractions to 1e-3 (zero heads:
 *    decided by the shared noise alone), grad norm to 2e-2, every
 *    trainable tensor's gradient to 3e-2 of its largest element;
 *  - run: 50 AdamW steps of both; the mean KD of every 10 steps within 8%
 *    of the oracle's and the run's within 2.5%, the trained values within
 *    10% in l2 (test_run says why a free run cannot be held to a step's
 *    tolerances, and what an H100 measured);
 *  - forced: 25 more steps of the oracle, the backend stepping from the
 *    oracle's weights and moments at each: KD to 1e-2, grad norm to 2e-2,
 *    at most one flipped decision (of 256) at every step.
 * Then the step checks again on the tiny Llama shape
 * (tests/fixtures/models/tiny_llama: tied embeddings, llama3 RoPE, no q/k
 * norm), the path of the embedded model.
 * The attention runs on the backend's default path (CUDA: bf16 tensor
 * cores, attention_mma.cu); DMS_CUDA_ATTENTION=fp32 in the environment
 * runs the same checks on the fp32 kernels.
 * `test_gpu_train cpu` runs the same harness CPU against CPU, where
 * everything must agree bit for bit (label cpu: the harness itself is
 * checked on every machine). `step` as a second argument runs the step part
 * only (for compute-sanitizer). Label gpu for cuda: it needs the device. */
#include <stdlib.h>
#include <string.h>

#include "kernels/registry.h"
#include "model/model.h"
#include "model/model_random.h"
#include "tests/check.h"
#include "train/trainer.h"

#define T_ROW 64
#define RUN_STEPS 50
#define FORCED_STEPS 25
#define TINY "tests/fixtures/models/tiny_qwen3"
/* the step checks again on the Llama shape: tied embeddings (the LM head
 * reads the embedding table), llama3 RoPE scaling, no q/k norm, head_dim
 * 16 - the path of the embedded SmolLM2 model that scripts/gpu_quality.sh
 * trains on the device */
#define TINY_LLAMA "tests/fixtures/models/tiny_llama"

typedef struct side {
    dms_backend be;
    dms_model m;
    dms_trainer *tr;
    int ok;
} side;

static void side_config(dms_train_config *cfg, const char *model) {
    dms_train_config_defaults(cfg);
    snprintf(cfg->model, sizeof cfg->model, "%s", model);
    snprintf(cfg->data, sizeof cfg->data, "-");
    cfg->max_len = T_ROW;
    cfg->window = 8;       /* eviction acts inside the row */
    cfg->sinks = 2;
    cfg->alpha_offset = 0; /* zero heads: decisions of either sign, the eviction bias in play */
    cfg->tau = 0.5f;
    cfg->kd_chunk = 24;    /* several chunks, the last one partial */
    cfg->lora_rank = 4;
    cfg->lr = 1e-3f;
    cfg->cr_final = 4;
    cfg->steps_per_cr = 10;
    cfg->compression_weight = 2;
    cfg->guide_weight = 1;  /* attention guidance on to step 40 (weight 0.25 at the step test's step 30) */
    cfg->guide_steps = 40;
}

static int side_open(side *s, const char *backend, const char *model) {
    dms_err err = {0};
    memset(s, 0, sizeof *s);
    if (dms_backend_open(&s->be, backend, 0, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        return -1;
    }
    s->be.weight_dtype = DMS_BF16; /* both sides hold the same bf16 weights */
    if (dms_model_init_random(&s->m, model, &s->be, 3, 0, 1, &err) != 0) {
        CHECK_MSG(0, "%s: %s", backend, err.msg);
        dms_backend_close(&s->be);
        return -1;
    }
    dms_train_config cfg;
    side_config(&cfg, model);
    if (!(s->tr = dms_trainer_create(&s->m, &cfg, &err))) {
        CHECK_MSG(0, "%s: %s", backend, err.msg);
        dms_model_free(&s->m);
        dms_backend_close(&s->be);
        return -1;
    }
    s->ok = 1;
    return 0;
}

static void side_close(side *s) {
    if (!s->ok) return;
    dms_trainer_free(s->tr);
    dms_model_free(&s->m);
    dms_backend_close(&s->be);
}

/* Row r of the test: random ids, two documents (the second starts at 23 + r % 7). */
static void make_row(int r, int32_t *ids, int32_t *seg, int vocab) {
    uint64_t x = 0x2545f4914f6cdd1dull ^ (uint64_t)(r + 1) * 0x9e3779b97f4a7c15ull;
    for (int t = 0; t < T_ROW; t++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[t] = (int32_t)(x % (uint64_t)vocab);
        seg[t] = t >= 23 + r % 7;
    }
}

static int grads(side *s, int64_t step, int r, dms_step_stats *st) {
    int32_t ids[T_ROW], seg[T_ROW];
    make_row(r, ids, seg, s->m.cfg.vocab);
    const dms_row row = {ids, seg, NULL, (int64_t)r * T_ROW, 0};
    dms_err err = {0};
    const int rc = dms_trainer_grads(s->tr, &row, 1, step, dms_trainer_row_kd_tokens(s->tr, &row), 1, st, &err);
    CHECK_MSG(rc == 0, "%s step %lld: %s", s->be.name, (long long)step, err.msg);
    return rc;
}

/* The largest relative error over the trainable tensors of (gradient: 1;
 * value: 0) between the sides; names the worst one. l2: the relative error
 * ||a - b|| / ||b|| over every trainable value together instead. */
static double tensors_rel_err(side *a, side *b, int gradient, char *worst, size_t cap, double *l2) {
    double mx = 0, num = 0, den = 0;
    for (int i = 0; i < dms_trainer_n_params(a->tr); i++) {
        dms_param *pa = dms_trainer_param(a->tr, i), *pb = dms_trainer_param(b->tr, i);
        float *ha = malloc(sizeof(float) * pa->n), *hb = malloc(sizeof(float) * pb->n);
        CHECK(ha && hb && pa->n == pb->n);
        if (ha && hb && pa->n == pb->n) {
            dms_download_f32(&a->be, ha, gradient ? pa->g : pa->p, pa->n);
            dms_download_f32(&b->be, hb, gradient ? pb->g : pb->p, pb->n);
            const double e = dms_rel_err(ha, hb, pa->n);
            if (e > mx || i == 0) snprintf(worst, cap, "%s", pa->name);
            mx = e > mx ? e : mx;
            for (size_t x = 0; x < pa->n; x++) {
                num += ((double)ha[x] - hb[x]) * ((double)ha[x] - hb[x]);
                den += (double)hb[x] * hb[x];
            }
        }
        free(ha);
        free(hb);
    }
    if (l2) *l2 = sqrt(num / (den > 0 ? den : 1));
    return mx;
}

static double rel(double a, double b) { return fabs(a - b) / (fabs(b) > 1e-30 ? fabs(b) : 1e-30); }

/* One step's gradients at `step` (30: guidance on, weight 0.25; 45: after
 * guide_steps, guidance off), from the sides' current weights. */
static void test_step(side *x, side *cpu, int exact, int step) {
    dms_step_stats sx, sc;
    if (grads(x, step, 0, &sx) || grads(cpu, step, 0, &sc)) return; /* target CR 4: above the decisions */
    const double loss_tol = exact ? 0 : 1e-2, frac_tol = exact ? 0 : 1e-3, norm_tol = exact ? 0 : 2e-2;
    const int guided = step < 40;
    CHECK_MSG(rel(sx.kd, sc.kd) <= loss_tol, "step %d: kd %.9g vs oracle %.9g", step, sx.kd, sc.kd);
    CHECK_MSG(rel(sx.comp, sc.comp) <= loss_tol, "step %d: compression %.9g vs %.9g", step, sx.comp, sc.comp);
    CHECK_MSG(guided ? rel(sx.guide, sc.guide) <= loss_tol : sx.guide == 0 && sc.guide == 0,
              "step %d: guidance loss %.9g vs %.9g", step, sx.guide, sc.guide);
    CHECK_MSG(fabs(sx.frac - sc.frac) <= frac_tol, "step %d: decisions %.9g vs %.9g", step, sx.frac, sc.frac);
    CHECK_MSG(fabs(sx.kv_frac - sc.kv_frac) <= frac_tol, "step %d: kv fraction %.9g vs %.9g", step, sx.kv_frac,
              sc.kv_frac);
    CHECK_MSG(rel(sx.grad_norm, sc.grad_norm) <= norm_tol, "step %d: grad norm %.9g vs %.9g", step, sx.grad_norm,
              sc.grad_norm);
    /* the step must exercise what it compares: losses, evictions, gradients */
    CHECK_MSG(sc.kd > 0 && sc.comp > 0 && (sc.guide > 0) == guided && sc.frac > 0.05 && sc.frac < 0.95 &&
                  sc.grad_norm > 0,
              "oracle step %d: kd %g comp %g guide %g frac %g grad %g", step, sc.kd, sc.comp, sc.guide, sc.frac,
              sc.grad_norm);
    char worst[128] = "";
    const double e = tensors_rel_err(x, cpu, 1, worst, sizeof worst, NULL);
    CHECK_MSG(exact ? e == 0 : e <= 3e-2, "step %d: gradients: %.3g relative error (worst: %s)", step, e, worst);
    printf("step %d: kd %.6f vs %.6f, grad norm %.6f vs %.6f, worst gradient %s at %.2e\n", step, sx.kd, sc.kd,
           sx.grad_norm, sc.grad_norm, worst, e);
}

/* 50 AdamW steps of both sides from the same start. Adam turns a
 * gradient's sign into a step of the learning rate's size, so elements
 * whose gradient is near zero take steps of either sign on the two sides
 * and the runs drift apart the way two runs with different seeds' noise
 * do (on an H100, 2026-11-27: single steps up to 47% apart by step 49,
 * the largest element of a tensor 46% of its range, while every step
 * compared from the same weights agrees to 2e-2). What must hold is that
 * the losses track: the mean KD of each 10-step window within 8% of the
 * oracle's, the whole run's mean within 2.5%, and the trained values
 * within 10% in l2 over all of them (measured there: 3.9%, 1.05% and 1.8%
 * with the tensor-core attention, 2.4%, 0.8% and 0.7% with the fp32 one;
 * an optimizer with a wrong sign, scale or state lands at 100% or more). */
static void test_run(side *x, side *cpu, int exact) {
    double worst = 0, mean_x = 0, mean_c = 0, win_x = 0, win_c = 0, step_worst = 0;
    int worst_win = 0;
    for (int s = 0; s < RUN_STEPS; s++) {
        dms_step_stats sx, sc;
        if (grads(x, s, s % 5, &sx) || grads(cpu, s, s % 5, &sc)) return;
        dms_trainer_apply(x->tr, s, &sx);
        dms_trainer_apply(cpu->tr, s, &sc);
        mean_x += sx.kd / RUN_STEPS;
        mean_c += sc.kd / RUN_STEPS;
        win_x += sx.kd, win_c += sc.kd;
        step_worst = fmax(step_worst, rel(sx.kd, sc.kd));
        if (s % 10 == 9) {
            const double e = rel(win_x, win_c);
            printf("run steps %2d-%2d: mean KD %.6f vs %.6f (%.2e)\n", s - 9, s, win_x / 10, win_c / 10, e);
            if (e > worst) worst = e, worst_win = s - 9;
            win_x = win_c = 0;
        }
    }
    CHECK_MSG(exact ? worst == 0 : worst <= 0.08, "run: steps %d-%d's mean KD %.3g off the oracle's", worst_win,
              worst_win + 9, worst);
    CHECK_MSG(exact ? mean_x == mean_c : rel(mean_x, mean_c) <= 0.025, "run: mean KD %.6f vs %.6f", mean_x, mean_c);
    char name[128] = "";
    double l2 = 0;
    const double e = tensors_rel_err(x, cpu, 0, name, sizeof name, &l2);
    CHECK_MSG(exact ? e == 0 && l2 == 0 : l2 <= 0.1, "run: final weights %.3g off in l2 (largest element error %.3g "
              "of its tensor, %s)", l2, e, name);
    printf("run of %d steps: mean KD %.6f vs %.6f, worst 10-step window %d at %.2e (worst single step %.2e), "
           "final weights %.2e in l2, %.2e of the largest element (%s)\n",
           RUN_STEPS, mean_x, mean_c, worst_win, worst, step_worst, l2, e, name);
}

/* The backend's weights and AdamW moments set to the oracle's. */
static void copy_state(side *to, side *from) {
    for (int i = 0; i < dms_trainer_n_params(from->tr); i++) {
        dms_param *pf = dms_trainer_param(from->tr, i), *pt = dms_trainer_param(to->tr, i);
        float *h = malloc(sizeof(float) * pf->n);
        CHECK(h && pf->n == pt->n);
        if (h && pf->n == pt->n) {
            float *const src[3] = {pf->p, pf->m, pf->v}, *const dst[3] = {pt->p, pt->m, pt->v};
            for (int k = 0; k < 3; k++) {
                dms_download_f32(&from->be, h, src[k], pf->n);
                dms_upload_f32(&to->be, dst[k], h, pf->n);
            }
        }
        free(h);
    }
}

/* The oracle's own trajectory: FORCED_STEPS AdamW steps of the oracle,
 * and at each one the backend's step from the oracle's weights and
 * moments (copied over), held to the step test's tolerances. So the
 * trained state the free run drifts into is checked step by step too,
 * without the drift (test_run). */
static void test_forced(side *x, side *cpu, int exact) {
    double worst_kd = 0, worst_norm = 0, worst_frac = 0;
    for (int s = 0; s < FORCED_STEPS; s++) {
        copy_state(x, cpu);
        dms_step_stats sx, sc;
        if (grads(x, s, s % 5, &sx) || grads(cpu, s, s % 5, &sc)) return;
        worst_kd = fmax(worst_kd, rel(sx.kd, sc.kd));
        worst_norm = fmax(worst_norm, rel(sx.grad_norm, sc.grad_norm));
        worst_frac = fmax(worst_frac, fabs(sx.frac - sc.frac));
        dms_trainer_apply(cpu->tr, s, &sc);
    }
    CHECK_MSG(exact ? worst_kd == 0 : worst_kd <= 1e-2, "forced: KD %.3g off the oracle's", worst_kd);
    CHECK_MSG(exact ? worst_norm == 0 : worst_norm <= 2e-2, "forced: grad norm %.3g off", worst_norm);
    /* one decision of the row's L x KV x T may flip: a logit within bf16 rounding of the threshold
     * (an H200 saw one flip in 25 x 256 decisions, on both attention paths); a wrong kernel flips many */
    const double one = 1.0 / ((double)x->m.cfg.n_layers * x->m.cfg.n_kv_heads * T_ROW);
    CHECK_MSG(exact ? worst_frac == 0 : worst_frac <= 1.5 * one, "forced: decisions %.3g off (%.1f of %d)",
              worst_frac, worst_frac / one, (int)(1.0 / one + 0.5));
    printf("forced %d steps from the oracle's weights: worst KD %.2e, grad norm %.2e, decisions %.2e\n",
           FORCED_STEPS, worst_kd, worst_norm, worst_frac);
}

int main(int argc, char **argv) {
    const char *backend = argc > 1 ? argv[1] : "cuda";
    const int step_only = argc > 2 && !strcmp(argv[2], "step");
    const int exact = !strcmp(backend, "cpu");
    side x = {0}, cpu = {0};
    if (side_open(&x, backend, TINY) == 0 && side_open(&cpu, "cpu", TINY) == 0) {
        test_step(&x, &cpu, exact, 30);
        test_step(&x, &cpu, exact, 45);
        if (!step_only) test_run(&x, &cpu, exact);
        if (!step_only) test_forced(&x, &cpu, exact);
    }
    side_close(&x);
    side_close(&cpu);
    side y = {0}, cpu_y = {0};
    printf("%s: the step checks\n", TINY_LLAMA);
    if (side_open(&y, backend, TINY_LLAMA) == 0 && side_open(&cpu_y, "cpu", TINY_LLAMA) == 0) {
        test_step(&y, &cpu_y, exact, 30);
        test_step(&y, &cpu_y, exact, 45);
    }
    side_close(&y);
    side_close(&cpu_y);
    return dms_check_finish();
}
