/* test_packing_train.c - the trainer consumes both packings: a reference row
 * (one segment, positions 0..T-1) trains one step with attention across its
 * documents (its KD differs from the same tokens split into two documents),
 * a continued document's true positions (the row's pos0) reach the step (with
 * sinks, only a document's first tokens are sinks: a fragment at position
 * 100 has none), and whole runs: `dms train` on reference-packed shards, the
 * refusal of shards packed otherwise than the config says, and the nvidia CR
 * schedule stopping the run at the step where the target reaches cr_final. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/mapped_file.h"
#include "data/pack.h"
#include "model/model_random.h"
#include "tests/check.h"
#include "train/run.h"
#include "train/trainer.h"

#define TT 16

static char root[64];

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* A small Llama-shaped model with random weights. */
static int tiny_model(dms_model *m) {
    char dir[128], path[192];
    dms_err err = {0};
    snprintf(dir, sizeof dir, "%s/tiny", root);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!dms_is_dir(dir)) {
        CHECK(dms_mkdir_p(dir, &err) == 0);
        write_file(path, "{\"model_type\": \"llama\", \"num_hidden_layers\": 2, \"hidden_size\": 32,\n"
                         " \"intermediate_size\": 64, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,\n"
                         " \"vocab_size\": 64, \"eos_token_id\": 63, \"rms_norm_eps\": 1e-5}\n");
    }
    int rc = dms_model_init_random(m, dir, &dms_cpu_ops, 7, 0, 1, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    return rc;
}

static void tiny_config(dms_train_config *c) {
    dms_train_config_defaults(c);
    c->max_len = TT;
    c->window = 2;         /* the eviction bias acts inside the row */
    c->alpha_offset = 0;   /* zero heads give decisions of either sign */
    c->kd_chunk = 8;
    c->lr = 1e-2f;
}

/* One step's statistics for a row (gradients computed, nothing applied). */
static int step_stats(dms_trainer *tr, const int32_t *ids, const int32_t *seg, int32_t pos0, dms_step_stats *st) {
    const dms_row row = {ids, seg, NULL, 0, pos0};
    dms_err err = {0};
    const int rc = dms_trainer_grads(tr, &row, 1, 500, dms_trainer_row_kd_tokens(tr, &row), 1, st, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    return rc;
}

static void test_reference_row(void) {
    dms_model m;
    if (tiny_model(&m) != 0) return;
    dms_train_config cfg;
    tiny_config(&cfg);
    dms_err err = {0};
    dms_trainer *tr = dms_trainer_create(&m, &cfg, &err);
    CHECK_MSG(tr != NULL, "%s", err.msg);
    if (!tr) {
        dms_model_free(&m);
        return;
    }
    int32_t ids[TT], one_seg[TT], two_docs[TT];
    for (int t = 0; t < TT; t++) {
        ids[t] = (t * 7 + 3) % 63;
        one_seg[t] = 0;            /* reference: no document mask */
        two_docs[t] = t < TT / 2 ? 0 : 1;
    }
    dms_step_stats ref, docs;
    if (step_stats(tr, ids, one_seg, 0, &ref) == 0 && step_stats(tr, ids, two_docs, 0, &docs) == 0) {
        CHECK(ref.finite && ref.kd > 0 && ref.comp > 0 && ref.grad_norm > 0);
        /* the second document sees the first only without a document mask */
        CHECK_MSG(fabs(ref.kd - docs.kd) > 1e-3 * fabs(docs.kd), "kd %g vs %g", ref.kd, docs.kd);
        /* one step trains the heads */
        step_stats(tr, ids, one_seg, 0, &ref);
        dms_param *p = dms_trainer_param(tr, 0);
        float before[64], after[64];
        const size_t n = p->n < 64 ? p->n : 64;
        dms_download_f32(&dms_cpu_ops, before, p->p, n);
        dms_trainer_apply(tr, 500, &ref);
        dms_download_f32(&dms_cpu_ops, after, p->p, n);
        double moved = 0;
        for (size_t i = 0; i < n; i++) moved += fabs((double)after[i] - before[i]);
        CHECK_MSG(moved > 0, "%s did not change", p->name);
    }
    dms_trainer_free(tr);
    dms_model_free(&m);
}

static void test_pos0(void) {
    dms_model m;
    if (tiny_model(&m) != 0) return;
    dms_train_config cfg;
    tiny_config(&cfg);
    cfg.sinks = 4; /* decisions about the first 4 positions of a document are void */
    dms_err err = {0};
    dms_trainer *tr = dms_trainer_create(&m, &cfg, &err);
    CHECK_MSG(tr != NULL, "%s", err.msg);
    if (tr) {
        int32_t ids[TT], seg[TT];
        for (int t = 0; t < TT; t++) ids[t] = (t * 5 + 1) % 63, seg[t] = 0;
        dms_step_stats start, fragment;
        if (step_stats(tr, ids, seg, 0, &start) == 0 && step_stats(tr, ids, seg, 100, &fragment) == 0)
            /* a row starting its document has 4 sink keys; a fragment at 100..115 none */
            CHECK_MSG(fragment.frac > start.frac, "flagged %g (pos0 100) vs %g (pos0 0)", fragment.frac,
                      start.frac);
        /* the same with a later document in the row: only the first segment is shifted */
        for (int t = TT / 2; t < TT; t++) seg[t] = 1;
        dms_step_stats two0, two100;
        if (step_stats(tr, ids, seg, 0, &two0) == 0 && step_stats(tr, ids, seg, 100, &two100) == 0) {
            CHECK(two100.frac > two0.frac);
            CHECK(two100.frac < fragment.frac); /* the second document keeps its sinks */
        }
    }
    dms_trainer_free(tr);
    dms_model_free(&m);
}

/* Whole runs on the embedded model (a tokenizer for the shards' hash). */
static int count_lines(const char *path) {
    dms_err err = {0};
    char *text = dms_read_text_file(path, NULL, &err);
    int n = 0;
    for (const char *s = text; s && *s; s++) n += *s == '\n';
    free(text);
    return n;
}

static void test_runs(void) {
    const char *model = getenv("DMS_DEFAULT_GGUF");
    if (!model || !*model) model = "models/default.gguf";
    dms_model m;
    dms_err err = {0};
    if (dms_model_load(&m, model, &dms_cpu_ops, DMS_LOAD_TOKENIZER, &err) != 0) {
        CHECK_MSG(0, "%s (run scripts/install_deps.sh for the embedded model)", err.msg);
        return;
    }
    char data[128];
    snprintf(data, sizeof data, "%s/ref-data", root);
    const dms_packer_opts po = {.packing = DMS_PACK_REFERENCE, .max_len = 32, .shard_tokens = 1 << 20, .dir = data,
                                .tokenizer_hash = dms_tokenizer_hash(m.tok), .vocab_size = m.cfg.vocab,
                                .source = "test"};
    CHECK(dms_mkdir_p(data, &err) == 0);
    dms_packer *pk = dms_packer_create(&po, &err);
    for (int d = 0; pk && d < 12; d++) {
        uint32_t ids[40];
        const int n = 10 + (d * 7) % 30;
        for (int i = 0; i < n; i++) ids[i] = (uint32_t)(1000 + (d * 131 + i * 17) % 20000);
        CHECK(dms_packer_add(pk, ids, NULL, (size_t)n, &err) == 0);
    }
    dms_pack_stats ps;
    CHECK_MSG(pk && dms_packer_finish(pk, &ps, &err) == 0 && ps.rows >= 4, "%s", err.msg);
    dms_model_free(&m);

    dms_train_config cfg;
    dms_train_config_defaults(&cfg);
    snprintf(cfg.model, sizeof cfg.model, "%s", model);
    snprintf(cfg.data, sizeof cfg.data, "%s", data);
    snprintf(cfg.output, sizeof cfg.output, "%s/run-ref", root);
    cfg.max_len = 32;
    cfg.window = 4;
    cfg.steps = 2;
    cfg.packing = DMS_PACK_REFERENCE;
    cfg.log_every = 1000;
    dms_comm comm;
    dms_comm_single(&comm);
    char path[1100];
    CHECK_MSG(dms_train_run(&cfg, &dms_cpu_ops, 0, &comm, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/metrics.jsonl", cfg.output);
    CHECK(count_lines(path) == 2);

    /* shards packed as reference, a config that says documents */
    cfg.packing = DMS_PACK_DOCUMENTS;
    snprintf(cfg.output, sizeof cfg.output, "%s/run-mismatch", root);
    CHECK(dms_train_run(&cfg, &dms_cpu_ops, 0, &comm, &err) != 0);
    CHECK_MSG(strstr(err.msg, "packed with packing reference but the run uses packing documents") != NULL, "%s",
              err.msg);

    /* nvidia schedule: CR 1.1 is reached at step ceil(510 * 0.1 / 15) = 4 of 1000 */
    cfg.packing = DMS_PACK_REFERENCE;
    cfg.cr_schedule = DMS_CR_NVIDIA;
    cfg.cr_final = 1.1f;
    cfg.steps = 1000;
    cfg.save_every = 1000;
    snprintf(cfg.output, sizeof cfg.output, "%s/run-nvidia", root);
    CHECK(dms_train_steps(&cfg) == 4);
    CHECK_MSG(dms_train_run(&cfg, &dms_cpu_ops, 0, &comm, &err) == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/metrics.jsonl", cfg.output);
    CHECK(count_lines(path) == 4);
    snprintf(path, sizeof path, "%s/ckpt-%08d.h5", cfg.output, 4);
    CHECK_MSG(dms_is_file(path), "%s missing: the run must stop and save at step 4", path);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/dms_test_packing_train_XXXXXX");
    if (!mkdtemp(root)) {
        fprintf(stderr, "mkdtemp failed\n");
        return 1;
    }
    test_reference_row();
    test_pos0();
    test_runs();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", root);
    return dms_check_finish();
}
