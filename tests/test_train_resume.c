/* test_train_resume.c - `dms train` killed mid-way (SIGKILL) and resumed
 * with --resume ends with exactly the same trainable tensors and Adam
 * moments as an uninterrupted run; a fresh start in a used folder and a
 * resume that changes the method are refused. Runs the real binary (fork +
 * exec: OpenMP's thread pool does not survive a bare fork) with the
 * embedded model on short synthetic rows. */
#include <fcntl.h>
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
    if (dms_model_load(&m, model_path(), &dms_backend_cpu, DMS_LOAD_TOKENIZER, err) != 0) return -1;
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

/* Writes a config file; `extra` is spliced in as more JSON keys. */
static void write_config(const char *path, const char *data, const char *out, int steps, const char *extra) {
    FILE *f = fopen(path, "w");
    fprintf(f,
            "{\"model\": \"%s\", \"data\": \"%s\", \"output\": \"%s\", \"steps\": %d, \"max_len\": 32,\n"
            " \"batch_size\": 2, \"window\": %s, \"lr\": 0.001, \"cr_final\": 3, \"steps_per_cr\": 2,\n"
            " \"save_every\": 2, \"keep_last\": 10, \"log_every\": 100}\n",
            model_path(), data, out, steps, extra);
    fclose(f);
}

/* Starts `dms train --config cfg [--resume]`; returns the child's pid. */
static pid_t start_train(const char *cfg, int resume) {
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 2);
        if (resume) execl(DMS_BINARY, "dms", "train", "--config", cfg, "--resume", (char *)NULL);
        else execl(DMS_BINARY, "dms", "train", "--config", cfg, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int run_train(const char *cfg, int resume) {
    int status = 0;
    waitpid(start_train(cfg, resume), &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Every entry of two checkpoints, compared bit for bit. */
static void same_checkpoints(const char *a, const char *b) {
    dms_err err = {0};
    dms_ckpt *ca = dms_ckpt_load(a, &err), *cb = dms_ckpt_load(b, &err);
    CHECK_MSG(ca && cb, "%s", err.msg);
    if (!ca || !cb) return;
    int compared = 0, differ = 0;
    const char *groups[3] = {"params", "adam_m", "adam_v"};
    for (int l = 0; l < 30; l++)
        for (int k = 0; k < 3; k++) {
            const char *kinds[2] = {"dms_proj_alpha.weight", "dms_proj_alpha_norm.weight"};
            for (int j = 0; j < 2; j++) {
                char name[256];
                snprintf(name, sizeof name, "%s/model.layers.%d.self_attn.%s", groups[k], l, kinds[j]);
                const size_t n = j == 0 ? 3 * 576 : 576;
                float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
                if (dms_ckpt_read_tensor(ca, name, x, n, &err) == 0 && dms_ckpt_read_tensor(cb, name, y, n, &err) == 0) {
                    compared++;
                    differ += memcmp(x, y, n * sizeof(float)) != 0;
                } else {
                    CHECK_MSG(0, "%s", err.msg);
                }
                free(x);
                free(y);
            }
        }
    CHECK_MSG(compared == 180 && differ == 0, "%d of %d tensors differ", differ, compared);
    int64_t sa = -1, sb = -2;
    dms_ckpt_read_i64(ca, "step", &sa, &err);
    dms_ckpt_read_i64(cb, "step", &sb, &err);
    CHECK(sa == sb);
    dms_ckpt_free(ca);
    dms_ckpt_free(cb);
}

int main(void) {
    char tmpl[] = "/tmp/dms-resume-XXXXXX";
    char *root = mkdtemp(tmpl);
    char data[256], run_a[256], run_b[256], ck_a[300], ck_b[300], ck2[300];
    snprintf(data, sizeof data, "%s/data", root);
    snprintf(run_a, sizeof run_a, "%s/a", root);
    snprintf(run_b, sizeof run_b, "%s/b", root);
    dms_err err = {0};
    dms_mkdir_p(data, &err);
    int rc = make_data(data, &err);
    CHECK_MSG(rc == 0, "%s (run scripts/install_deps.sh for the embedded model)", err.msg);
    if (rc) return dms_check_finish();
    const int steps = 8;
    char cfg_a[300], cfg_b[300], cfg_bad[300];
    snprintf(cfg_a, sizeof cfg_a, "%s/a.json", root);
    snprintf(cfg_b, sizeof cfg_b, "%s/b.json", root);
    snprintf(cfg_bad, sizeof cfg_bad, "%s/bad.json", root);
    write_config(cfg_a, data, run_a, steps, "4");
    write_config(cfg_b, data, run_b, steps, "4");
    write_config(cfg_bad, data, run_b, steps, "8"); /* another window */

    /* uninterrupted */
    CHECK_MSG(run_train(cfg_a, 0) == 0, "uninterrupted run failed");

    /* killed after its step-2 checkpoint, then resumed */
    dms_ckpt_path(ck2, sizeof ck2, run_b, 2);
    pid_t pid = start_train(cfg_b, 0);
    int killed = 0, status = 0;
    for (int i = 0; i < 12000 && !killed; i++) {
        if (dms_is_file(ck2)) {
            usleep(300 * 1000); /* let it get into step 3 */
            kill(pid, SIGKILL);
            killed = 1;
        } else if (waitpid(pid, &status, WNOHANG) == pid) {
            break; /* it ended on its own: a failure, reported below */
        } else {
            usleep(10 * 1000);
        }
    }
    if (killed) waitpid(pid, &status, 0);
    CHECK_MSG(killed && WIFSIGNALED(status), "the run was not killed mid-way");
    char latest[512];
    CHECK(dms_ckpt_latest(run_b, latest, sizeof latest, &err) == 1);
    dms_ckpt_path(ck_b, sizeof ck_b, run_b, steps);
    CHECK_MSG(!dms_is_file(ck_b), "the killed run got to the end");
    CHECK_MSG(run_train(cfg_b, 0) == 1, "a fresh start in a folder with checkpoints must be refused");
    CHECK_MSG(run_train(cfg_bad, 1) == 1, "a resume with another window must be refused");
    CHECK_MSG(run_train(cfg_b, 1) == 0, "resume failed");
    /* it continued from step 2 rather than starting over: step 0 ran once */
    char metrics[300];
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", run_b);
    char *text = dms_read_text_file(metrics, NULL, &err);
    int step0 = 0, step7 = 0;
    for (char *p = text; p && (p = strstr(p, "\"step\":")); p++) {
        step0 += strncmp(p, "\"step\":0,", 9) == 0;
        step7 += strncmp(p, "\"step\":7,", 9) == 0;
    }
    CHECK_MSG(step0 == 1 && step7 == 1, "metrics: step 0 logged %d times, step 7 %d times", step0, step7);
    free(text);

    dms_ckpt_path(ck_a, sizeof ck_a, run_a, steps);
    same_checkpoints(ck_a, ck_b);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return dms_check_finish();
}
