/* train_harness.h - shared by the suites that run `dms train` for real
 * (test_train_resume.c, test_mpi_train.c): the embedded model's path, a
 * small shard of synthetic text, config files, starting the binary (fork +
 * exec: OpenMP's thread pool does not survive a bare fork) and comparing
 * the trainable tensors of two checkpoints. */
#ifndef DMS_TRAIN_HARNESS_H
#define DMS_TRAIN_HARNESS_H

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/mapped_file.h"
#include "data/shards.h"
#include "model/model.h"
#include "tests/check.h"
#include "train/checkpoint.h"

static const char *model_path(void) {
    const char *p = getenv("DMS_DEFAULT_GGUF");
    return p && *p ? p : "models/default.gguf";
}

/* A shard of synthetic text made with the model's own tokenizer. */
static int make_data(const char *dir, dms_err *err) {
    dms_model m;
    if (dms_model_load(&m, model_path(), &dms_cpu_ops, DMS_LOAD_TOKENIZER, err) != 0) return -1;
    char path[512];
    snprintf(path, sizeof path, "%s/shard-00000.h5", dir);
    dms_shard_writer *w = dms_shard_writer_create(path, dms_tokenizer_hash(m.tok), 32, m.cfg.vocab, "test", 0, err);
    int rc = w ? 0 : -1;
    for (int d = 0; d < 12 && rc == 0; d++) {
        char text[256];
        snprintf(text, sizeof text, "Document %d: the key-value cache grows with every token, so a model that "
                                    "learns which entries to drop can think for %d times longer.", d, d + 2);
        int32_t *ids;
        size_t n;
        rc = dms_tokenizer_encode(m.tok, text, strlen(text), 0, &ids, &n, err);
        if (rc == 0) rc = dms_shard_writer_add(w, (const uint32_t *)ids, NULL, n, err);
        free(ids);
    }
    if (w && dms_shard_writer_close(w, err) != 0) rc = -1;
    dms_model_free(&m);
    return rc;
}

/* A fresh folder from tmpl (mkdtemp) holding data/ with the synthetic
 * shard; fills data (cap bytes). Returns the folder, NULL (checked) on
 * failure. */
static char *setup_run_root(char *tmpl, char *data, size_t cap) {
    char *root = mkdtemp(tmpl);
    dms_err err = {0};
    CHECK_MSG(root != NULL, "mkdtemp %s failed", tmpl);
    if (!root) return NULL;
    snprintf(data, cap, "%s/data", root);
    int rc = dms_mkdir_p(data, &err) == 0 ? make_data(data, &err) : -1;
    CHECK_MSG(rc == 0, "%s (run scripts/install_deps.sh for the embedded model)", err.msg);
    return rc == 0 ? root : NULL;
}

/* Writes a config file for the synthetic shard. */
/* extra: more keys, each followed by a comma (e.g. "\"lora_rank\": 2, "), or "" */
static void write_config_with(const char *path, const char *data, const char *out, int steps, int batch, int window,
                              const char *extra) {
    FILE *f = fopen(path, "w");
    fprintf(f,
            "{\"model\": \"%s\", \"data\": \"%s\", \"output\": \"%s\", \"steps\": %d, \"max_len\": 32,\n"
            " \"batch_size\": %d, \"window\": %d, \"lr\": 0.001, \"cr_final\": 3, \"steps_per_cr\": 2,\n"
            " %s\"save_every\": 2, \"keep_last\": 10, \"log_every\": 100}\n",
            model_path(), data, out, steps, batch, window, extra);
    fclose(f);
}

static inline void write_config(const char *path, const char *data, const char *out, int steps, int batch,
                                int window) {
    write_config_with(path, data, out, steps, batch, window, "");
}

/* Starts argv[0] (a path) with stderr silenced; returns the child's pid. */
static pid_t spawn(char *const argv[]) {
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 2);
        if (devnull >= 0 && !getenv("DMS_TEST_VERBOSE")) dup2(devnull, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid) {
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Polls for a file while the child runs; 1 when it appears, 0 when the
 * child ended first or the time ran out. */
static int wait_for_file(const char *path, pid_t pid, int seconds) {
    for (int i = 0; i < seconds * 100; i++) {
        if (dms_is_file(path)) return 1;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) return 0;
        usleep(10 * 1000);
    }
    return 0;
}

/* Largest relative difference over every trainable tensor and Adam moment
 * of two adapter checkpoints of the embedded model (30 layers, 3 KV heads,
 * d = 576); -1 if they cannot be compared. */
static double checkpoint_max_rel_diff(const char *a, const char *b) {
    dms_err err = {0};
    dms_ckpt *ca = dms_ckpt_load(a, &err), *cb = dms_ckpt_load(b, &err);
    CHECK_MSG(ca && cb, "%s", err.msg);
    double worst = ca && cb ? 0 : -1;
    const char *groups[3] = {"params", "adam_m", "adam_v"};
    /* the heads, and LoRA where the run has it (in both checkpoints or neither) */
    const char *kinds[10] = {"dms_proj_alpha.weight", "dms_proj_alpha_norm.weight", "q_proj.lora_A.weight",
                             "q_proj.lora_B.weight", "k_proj.lora_A.weight", "k_proj.lora_B.weight",
                             "v_proj.lora_A.weight", "v_proj.lora_B.weight", "o_proj.lora_A.weight",
                             "o_proj.lora_B.weight"};
    for (int l = 0; l < 30 && worst >= 0; l++)
        for (int k = 0; k < 3 && worst >= 0; k++)
            for (int j = 0; j < 10 && worst >= 0; j++) {
                char name[256];
                snprintf(name, sizeof name, "%s/model.layers.%d.self_attn.%s", groups[k], l, kinds[j]);
                const int in_a = dms_ckpt_has(ca, name), in_b = dms_ckpt_has(cb, name);
                CHECK_MSG(in_a == in_b, "%s in one checkpoint only", name);
                if (!in_a || !in_b) {
                    if (in_a != in_b) worst = -1;
                    continue;
                }
                int nd = 0;
                int64_t shape[DMS_CKPT_MAX_DIMS] = {0};
                if (dms_ckpt_tensor_shape(ca, name, &nd, shape, &err) != 0) {
                    CHECK_MSG(0, "%s", err.msg);
                    worst = -1;
                    break;
                }
                size_t n = 1;
                for (int e = 0; e < nd; e++) n *= (size_t)shape[e];
                float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
                if (dms_ckpt_read_tensor(ca, name, x, n, &err) == 0 && dms_ckpt_read_tensor(cb, name, y, n, &err) == 0) {
                    double scale = 0, diff = 0;
                    for (size_t i = 0; i < n; i++) {
                        scale = fmax(scale, fabs((double)y[i]));
                        diff = fmax(diff, fabs((double)x[i] - y[i]));
                    }
                    worst = fmax(worst, scale > 0 ? diff / scale : diff);
                } else {
                    CHECK_MSG(0, "%s", err.msg);
                    worst = -1;
                }
                free(x);
                free(y);
            }
    int64_t sa = -1, sb = -2;
    if (ca && cb) {
        dms_ckpt_read_i64(ca, "step", &sa, &err);
        dms_ckpt_read_i64(cb, "step", &sb, &err);
        CHECK_MSG(sa == sb, "checkpoints of steps %lld and %lld", (long long)sa, (long long)sb);
    }
    dms_ckpt_free(ca);
    dms_ckpt_free(cb);
    return worst;
}

#endif
