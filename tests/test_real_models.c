/* test_real_models.c - the model families at their real shapes, from the
 * published config.json files in bench/models (sources in its README):
 *   configs: every field that shapes the model, against the published
 *     architecture, and the published parameter counts (sized on the
 *     measuring backend, nothing allocated);
 *   rope: Llama 3.x frequency scaling against the inverse frequencies
 *     transformers computes for the same configs (recorded by
 *     tests/reference/make_rope_fixtures.py in tests/fixtures/rope);
 *   plan: the memory plan of a tiny config worked out by hand, on both
 *     backends, and every bench model's plan fully attributed (other = 0);
 *   steps: one training step on random weights at the real shapes, a few
 *     tokens on the CPU: the whole model for the small ones (<= 1.7B), the
 *     first layer only (real width, embeddings and LM head) for the 7-8B
 *     ones, whose fp32 weights would not fit a 24 GB machine.
 * Usage: test_real_models [configs|small|big|all] (ctest runs the parts as
 * separate entries, labelled real_shapes). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/fs.h"
#include "core/mapped_file.h"
#include "kernels/measure.h"
#include "model/model_random.h"
#include "tests/check.h"
#include "train/train_plan.h"
#include "train/trainer.h"

typedef struct {
    const char *dir;
    dms_arch arch;
    int layers, hidden, heads, kv, head_dim, ff, vocab;
    double theta;
    dms_rope_kind rope;
    double factor; /* llama3: factor, low 1, high 4, original 8192 */
    int tie, qkv_bias, qk_norm, eos;
    double params; /* parameter count (tied embeddings once): the published totals (Qwen3-0.6B
                    * 596,049,920, Llama-3.1-8B 8.03 B, ...), worked out from the architecture */
    int small;     /* the whole model trains a step in the normal suite */
} model_spec;

static const model_spec specs[] = {
    {"qwen3_0.6b", DMS_ARCH_QWEN3, 28, 1024, 16, 8, 128, 3072, 151936, 1e6, DMS_ROPE_DEFAULT, 0, 1, 0, 1, 151645,
     596049920.0, 1},
    {"qwen3_1.7b", DMS_ARCH_QWEN3, 28, 2048, 16, 8, 128, 6144, 151936, 1e6, DMS_ROPE_DEFAULT, 0, 1, 0, 1, 151645,
     1720574976.0, 1},
    {"qwen3_8b", DMS_ARCH_QWEN3, 36, 4096, 32, 8, 128, 12288, 151936, 1e6, DMS_ROPE_DEFAULT, 0, 0, 0, 1, 151645,
     8190735360.0, 0},
    {"qwen2.5_7b", DMS_ARCH_QWEN2, 28, 3584, 28, 4, 128, 18944, 152064, 1e6, DMS_ROPE_DEFAULT, 0, 0, 1, 0, 151643,
     7615616512.0, 0},
    {"r1_distill_qwen_1.5b", DMS_ARCH_QWEN2, 28, 1536, 12, 2, 128, 8960, 151936, 1e4, DMS_ROPE_DEFAULT, 0, 0, 1, 0,
     151643, 1777088000.0, 1},
    {"r1_distill_qwen_7b", DMS_ARCH_QWEN2, 28, 3584, 28, 4, 128, 18944, 152064, 1e4, DMS_ROPE_DEFAULT, 0, 0, 1, 0,
     151643, 7615616512.0, 0},
    {"llama3.2_1b", DMS_ARCH_LLAMA, 16, 2048, 32, 8, 64, 8192, 128256, 5e5, DMS_ROPE_LLAMA3, 32, 1, 0, 0, 128001,
     1235814400.0, 1},
    {"llama3.1_8b", DMS_ARCH_LLAMA, 32, 4096, 32, 8, 128, 14336, 128256, 5e5, DMS_ROPE_LLAMA3, 8, 0, 0, 0, 128001,
     8030261248.0, 0},
};
#define N_SPECS (int)(sizeof specs / sizeof specs[0])

static void path_of(char *out, size_t cap, const model_spec *s) { snprintf(out, cap, "bench/models/%s", s->dir); }

/* ------------------------------------------------------------ configs */

static void test_configs(void) {
    for (int i = 0; i < N_SPECS; i++) {
        const model_spec *s = &specs[i];
        char dir[128], path[160];
        path_of(dir, sizeof dir, s);
        snprintf(path, sizeof path, "%s/config.json", dir);
        dms_config c;
        dms_err err = {0};
        if (dms_config_from_hf(&c, path, NULL, &err) != 0) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        CHECK_MSG(c.arch == s->arch && c.n_layers == s->layers && c.hidden == s->hidden && c.n_heads == s->heads &&
                      c.n_kv_heads == s->kv && c.head_dim == s->head_dim && c.intermediate == s->ff &&
                      c.vocab == s->vocab,
                  "%s: shapes", s->dir);
        CHECK_MSG(fabs(c.rope_theta - s->theta) <= 1e-6 * s->theta && c.rope_kind == s->rope, "%s: rope", s->dir);
        if (s->rope == DMS_ROPE_LLAMA3)
            CHECK_MSG(c.rope_factor == (float)s->factor && c.rope_low_freq == 1.0f && c.rope_high_freq == 4.0f &&
                          c.rope_orig_max_pos == 8192,
                      "%s: llama3 rope scaling", s->dir);
        CHECK_MSG(c.tie_embeddings == s->tie && c.qkv_bias == s->qkv_bias && c.qk_norm == s->qk_norm, "%s: flags",
                  s->dir);
        CHECK_MSG(c.eos_id == s->eos, "%s: eos %d, want %d", s->dir, c.eos_id, s->eos);
        CHECK_MSG(!c.dms.present, "%s: a base model has no dms_* fields", s->dir);
        /* the whole model sized on the measuring backend: the published count */
        dms_measure ms;
        dms_model m;
        if (dms_measure_init(&ms, DMS_BF16, "measure", &err) != 0) continue;
        if (dms_model_init_random(&m, dir, &ms.be, 0, 0, 0, &err) == 0) {
            CHECK_MSG((double)m.n_params == s->params, "%s: %zu parameters, published %.0f", s->dir, m.n_params,
                      s->params);
            dms_model_free(&m);
            CHECK(ms.live == 0); /* and every byte given back */
        } else {
            CHECK_MSG(0, "%s", err.msg);
        }
        dms_measure_free(&ms);
    }
}

/* Qwen2.5's long-context opt-in (README: add rope_scaling yarn) is refused
 * with a message, never silently run as plain RoPE; null is no scaling. */
static void test_rope_variants(void) {
    char dir[96], path[128];
    snprintf(dir, sizeof dir, "/tmp/dms_test_rope_XXXXXX");
    if (!mkdtemp(dir)) return;
    snprintf(path, sizeof path, "%s/config.json", dir);
    const char *base = "{\"model_type\": \"qwen2\", \"num_hidden_layers\": 2, \"hidden_size\": 64, "
                       "\"intermediate_size\": 128, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                       "\"vocab_size\": 100, \"rope_scaling\": %s}";
    const char *variants[2] = {"null", "{\"factor\": 4.0, \"original_max_position_embeddings\": 32768, "
                                       "\"type\": \"yarn\"}"};
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(path, "w");
        fprintf(f, base, variants[k]);
        fclose(f);
        dms_config c;
        dms_err err = {0};
        const int rc = dms_config_from_hf(&c, path, NULL, &err);
        if (k == 0) CHECK_MSG(rc == 0 && c.rope_kind == DMS_ROPE_DEFAULT, "%s", err.msg);
        else CHECK_MSG(rc != 0 && strstr(err.msg, "rope scaling type 'yarn' not supported"), "%s", err.msg);
    }
    unlink(path);
    rmdir(dir);
}

/* transformers' inverse frequencies for bench/models/NAME, from the
 * recorded fixture; returns how many were read (0 if none). */
static int rope_fixture(const char *name, double *out, int cap) {
    size_t len = 0;
    dms_err err = {0};
    char *text = dms_read_text_file("tests/fixtures/rope/inv_freq.json", &len, &err);
    if (!text) {
        CHECK_MSG(0, "%s", err.msg);
        return 0;
    }
    cJSON *doc = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "models"), name);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(m, "inv_freq");
    int n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, f) if (n < cap && cJSON_IsNumber(v)) out[n++] = v->valuedouble;
    cJSON_Delete(doc);
    return n;
}

static void test_rope(void) {
    for (int i = 0; i < N_SPECS; i++) {
        if (specs[i].rope != DMS_ROPE_LLAMA3) continue;
        char path[160];
        snprintf(path, sizeof path, "bench/models/%s/config.json", specs[i].dir);
        dms_config c;
        dms_err err = {0};
        if (dms_config_from_hf(&c, path, NULL, &err) != 0) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        float got[128];
        double want[128];
        dms_config_rope_inv_freq(&c, got);
        const int n_want = rope_fixture(specs[i].dir, want, 128);
        CHECK_MSG(n_want == c.head_dim / 2, "%s: %d recorded frequencies for head_dim %d", specs[i].dir, n_want,
                  c.head_dim);
        if (n_want != c.head_dim / 2) continue;
        int kept = 0, scaled = 0, mixed = 0;
        double worst = 0;
        for (int k = 0; k < c.head_dim / 2; k++) {
            const double base = 1.0 / pow(c.rope_theta, (double)(2 * k) / c.head_dim);
            worst = fmax(worst, fabs(got[k] - want[k]) / want[k]);
            kept += fabs(want[k] - base) <= 1e-6 * base; /* transformers works in fp32 */
            scaled += fabs(want[k] - base / c.rope_factor) <= 1e-6 * base;
        }
        mixed = c.head_dim / 2 - kept - scaled;
        CHECK_MSG(worst < 2e-6, "%s: inv_freq off by %g (relative)", specs[i].dir, worst);
        /* all three bands are exercised: the test cannot pass by accident */
        CHECK_MSG(kept > 0 && scaled > 0 && mixed > 0, "%s: bands kept %d scaled %d mixed %d", specs[i].dir, kept,
                  scaled, mixed);
        CHECK(got[0] == 1.0f); /* the fastest pair is never scaled */
        /* without the scaling the frequencies differ: the loader applies it */
        c.rope_kind = DMS_ROPE_DEFAULT;
        float plain[128];
        dms_config_rope_inv_freq(&c, plain);
        CHECK(plain[c.head_dim / 2 - 1] > 2 * got[c.head_dim / 2 - 1]);
    }
}

/* --------------------------------------------------------------- plan */

static char tiny_dir[64];

static void test_plan(void) {
    snprintf(tiny_dir, sizeof tiny_dir, "/tmp/dms_test_real_models_XXXXXX");
    if (!mkdtemp(tiny_dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    char path[128];
    snprintf(path, sizeof path, "%s/config.json", tiny_dir);
    FILE *f = fopen(path, "w");
    fputs("{\"model_type\": \"llama\", \"num_hidden_layers\": 2, \"hidden_size\": 8, \"intermediate_size\": 16,\n"
          " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 32}\n",
          f);
    fclose(f);
    dms_train_config cfg;
    dms_train_config_defaults(&cfg);
    cfg.max_len = 16;
    cfg.kd_chunk = 4;
    dms_train_plan p;
    dms_err err = {0};
    /* By hand (L 2, d 8, H 2, KV 1, hd 4, ff 16, V 32, T 16, chunk 4), bytes:
     * weights: embed 256 + lm_head 256 + norm 8 + 2 x (norms 16 + q 64 + k 32
     *   + v 32 + o 64 + MLP 384) + inv_freq 2 = 1706 floats;
     * heads: 2 x (W_a 8 + norm 8) = 32 floats;
     * one layer: pos 16 ints + n1, a, q, qpre, att, xmid, n2 (7 x 128) + k,
     *   kpre, v (3 x 64) + zraw 16 + lse 32 + g, up, hb (3 x 256) = 1904 floats;
     * kept inputs 3 x 128; hidden 2 x 128; backward 3 x 128 + 2 x 256 + 2 x 128
     *   + 2 x 64 + 3 x 16 = 1328; KD 2 x 4 x 32 + 4 = 260; decisions: ids,
     *   seg 32 ints, kd_w 16, kv_w 16, noise 32, u/logkeep/hard 48, dhard 2,
     *   head_sel 16 floats, 12 doubles of statistics; backward_attention keep:
 *   each layer's attention output and log-sum-exp, 2 x 16 x (8 + 2) = 320
 *   floats (recompute: none). */
    CHECK_MSG(dms_train_plan_compute(tiny_dir, &cfg, DMS_BACKEND_CPU, 2, &p, &err) == 0, "%s", err.msg);
    CHECK_CLOSE(p.frozen, 1706 * 4, 0, 0);
    CHECK_CLOSE(p.trainable, 32 * 4, 0, 0);
    CHECK_CLOSE(p.grads, 128, 0, 0);
    CHECK_CLOSE(p.adam, 256, 0, 0);
    CHECK_CLOSE(p.layer_acts, 16 * 4 + 1904 * 4, 0, 0);
    CHECK_CLOSE(p.layer_input, 512, 0, 0);
    CHECK_CLOSE(p.inputs_kept, 1536, 0, 0);
    CHECK_CLOSE(p.hidden, 1024, 0, 0);
    CHECK_CLOSE(p.backward, 1328 * 4, 0, 0);
    CHECK_CLOSE(p.kd_chunk, 260 * 4, 0, 0);
    CHECK_CLOSE(p.decisions, 32 * 4 + 130 * 4 + 12 * 8, 0, 0);
    CHECK_CLOSE(p.att_kept, 320 * 4, 0, 0);
    CHECK_CLOSE(p.other, 0, 0, 0);
    CHECK_CLOSE(p.arena, 19000, 0, 0);
    /* CPU attention backward: D [T, H], two 128 x T tiles per thread, bounds */
    CHECK_CLOSE(p.workspace, 16 * 2 * 4 + 2 * 2 * 128 * 16 * 4 + 2 * 16 * 4, 0, 0);
    CHECK_CLOSE(p.total, 6824 + 128 + 19000 + 33024, 0, 0);
    cfg.backward_attention = DMS_ATT_RECOMPUTE;
    CHECK_MSG(dms_train_plan_compute(tiny_dir, &cfg, DMS_BACKEND_CPU, 2, &p, &err) == 0, "%s", err.msg);
    CHECK_CLOSE(p.att_kept, 0, 0, 0);
    CHECK_CLOSE(p.arena, 17720, 0, 0);
    CHECK_CLOSE(p.other, 0, 0, 0);
    cfg.backward_attention = DMS_ATT_KEEP;
    /* CUDA: bf16 matrices (1664 elements), fp32 vectors (42); the same arena;
     * head dim 4 takes the fp32 tiled attention, whose backward needs only D:
     * the scratch is the widest bf16 copy (16 x 16), rounded to 1 MiB, and
     * cuBLASLt's 32 MiB workspace */
    CHECK_MSG(dms_train_plan_compute(tiny_dir, &cfg, DMS_BACKEND_CUDA, 2, &p, &err) == 0, "%s", err.msg);
    CHECK_CLOSE(p.frozen, 1664 * 2 + 42 * 4, 0, 0);
    CHECK_CLOSE(p.arena, 19000, 0, 0);
    CHECK_CLOSE(p.workspace, (1.0 + 32) * 1048576, 0, 0);
    /* attention guidance: the maxima and targets, 2 x [L, T, KV] = 64 floats */
    cfg.guide_weight = 1;
    CHECK_MSG(dms_train_plan_compute(tiny_dir, &cfg, DMS_BACKEND_CPU, 2, &p, &err) == 0, "%s", err.msg);
    CHECK_CLOSE(p.decisions, 32 * 4 + 130 * 4 + 12 * 8 + 64 * 4, 0, 0);
    CHECK_CLOSE(p.arena, 19000 + 64 * 4, 0, 0);
    CHECK_CLOSE(p.other, 0, 0, 0);
    cfg.guide_weight = 0;
    /* LoRA adds its tensors to trainable, grads, Adam and the activations */
    cfg.lora_rank = 2;
    CHECK_MSG(dms_train_plan_compute(tiny_dir, &cfg, DMS_BACKEND_CPU, 2, &p, &err) == 0, "%s", err.msg);
    /* per layer: q (A 2x8 + B 8x2), k (16 + B 4x2), v (16 + 8), o (A 2x8 + B 8x2) = 112 */
    CHECK_CLOSE(p.trainable, (32 + 2 * 112) * 4, 0, 0);
    CHECK_CLOSE(p.other, 0, 0, 0);

    /* CUDA with head dim 128 (the tensor-core attention): beside D [T, H],
     * the bf16 copies of q, dO [Tp, H, hd] and k, v [Tp, KV, hd]: 4096 x 2
     * x 4 + 2 x 4096 x 3 x 128 x 2 = 6324224 bytes, above the widest matmul
     * copy (4096 x 512 x 2), so 7 MiB, and cuBLASLt's 32 MiB */
    f = fopen(path, "w");
    fputs("{\"model_type\": \"llama\", \"num_hidden_layers\": 2, \"hidden_size\": 256, \"intermediate_size\": 512,\n"
          " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 32}\n",
          f);
    fclose(f);
    dms_train_config_defaults(&cfg);
    cfg.max_len = 4096;
    cfg.kd_chunk = 4;
    CHECK_MSG(dms_train_plan_compute(tiny_dir, &cfg, DMS_BACKEND_CUDA, 2, &p, &err) == 0, "%s", err.msg);
    CHECK_CLOSE(p.workspace, (7.0 + 32) * 1048576, 0, 0);
    CHECK_CLOSE(p.other, 0, 0, 0);

    /* every bench model at 32K tokens: fully attributed; the frozen weights
     * are the published parameters in bf16 (vectors fp32) */
    dms_train_config_defaults(&cfg);
    cfg.max_len = 32768;
    for (int i = 0; i < N_SPECS; i++) {
        char dir[128];
        path_of(dir, sizeof dir, &specs[i]);
        if (dms_train_plan_compute(dir, &cfg, DMS_BACKEND_CUDA, 16, &p, &err) != 0) {
            CHECK_MSG(0, "%s", err.msg);
            continue;
        }
        CHECK_MSG(p.other == 0, "%s: %.0f bytes not attributed", specs[i].dir, p.other);
        CHECK_MSG(p.frozen > 2 * specs[i].params * 0.999 && p.frozen < 2 * specs[i].params * 1.001, "%s: frozen %.0f",
                  specs[i].dir, p.frozen);
        CHECK_MSG(p.total < 80.0 * 1073741824.0, "%s: %.1f GiB at 32K tokens", specs[i].dir, p.total / 1073741824.0);
    }
}

/* -------------------------------------------------------------- steps */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One step of a few tokens; layers = 0: the whole model. */
static void one_step(const model_spec *s, int layers) {
    char dir[128];
    path_of(dir, sizeof dir, s);
    const double t0 = now_s();
    dms_model m;
    dms_err err = {0};
    if (dms_model_init_random(&m, dir, &dms_cpu_ops, 11, layers, 1, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    const double t_init = now_s() - t0;
    dms_train_config cfg;
    dms_train_config_defaults(&cfg);
    enum { N = 8 };
    cfg.max_len = N;
    cfg.window = 2;        /* eviction acts inside the row */
    cfg.alpha_offset = 0;  /* decisions of either sign from zero heads */
    dms_trainer *tr = dms_trainer_create(&m, &cfg, &err);
    CHECK_MSG(tr != NULL, "%s: %s", s->dir, err.msg);
    if (tr) {
        int32_t ids[N], seg[N];
        for (int t = 0; t < N; t++) ids[t] = (int32_t)((t * 7919 + 17) % (s->vocab - 1)), seg[t] = t < 5 ? 0 : 1;
        const dms_row row = {ids, seg, NULL, 0, 3};
        dms_step_stats st;
        const int rc = dms_trainer_grads(tr, &row, 1, 500, dms_trainer_row_kd_tokens(tr, &row), 1, &st, &err);
        CHECK_MSG(rc == 0, "%s: %s", s->dir, err.msg);
        if (rc == 0) {
            CHECK_MSG(st.finite && st.grad_norm > 0 && st.kd > 0 && st.comp > 0, "%s: loss %g kd %g grad %g",
                      s->dir, st.loss, st.kd, st.grad_norm);
            dms_param *p = dms_trainer_param(tr, 0); /* layer 0's W_a: zero before the step */
            dms_trainer_apply(tr, 500, &st);
            float w[64];
            dms_download_f32(&dms_cpu_ops, w, p->p, p->n < 64 ? p->n : 64);
            double moved = 0;
            for (size_t i = 0; i < (p->n < 64 ? p->n : 64); i++) moved += fabs(w[i]);
            CHECK_MSG(moved > 0, "%s: %s did not move", s->dir, p->name);
        }
        printf("%-22s %s: %d layer(s), %.2f B parameters built in %.1f s, step of %d tokens in %.1f s\n", s->dir,
               layers ? "truncated" : "whole", m.cfg.n_layers, m.n_params / 1e9, t_init, N, now_s() - t0 - t_init);
        fflush(stdout);
    }
    dms_trainer_free(tr);
    dms_model_free(&m);
}

int main(int argc, char **argv) {
    const char *part = argc > 1 ? argv[1] : "all";
    const int all = !strcmp(part, "all");
    if (!all && strcmp(part, "configs") && strcmp(part, "small") && strcmp(part, "big")) {
        fprintf(stderr, "usage: %s [configs|small|big|all]\n", argv[0]);
        return 2;
    }
    if (all || !strcmp(part, "configs")) {
        test_configs();
        test_rope_variants();
        test_rope();
        test_plan();
        if (tiny_dir[0]) {
            char cmd[128];
            snprintf(cmd, sizeof cmd, "rm -rf %s", tiny_dir);
            if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tiny_dir);
        }
    }
    for (int i = 0; i < N_SPECS; i++) {
        if ((all || !strcmp(part, "small")) && specs[i].small) one_step(&specs[i], 0);
        if ((all || !strcmp(part, "big")) && !specs[i].small) one_step(&specs[i], 1);
    }
    return dms_check_finish();
}
