/* test_train_resume.c - `dms train` killed mid-way (SIGKILL) and resumed
 * with --resume ends with exactly the same trainable tensors and Adam
 * moments as an uninterrupted run; a fresh start in a used folder and a
 * resume that changes the method are refused. Runs the real binary with the
 * embedded model on short synthetic rows. */
#include "tests/train_harness.h"

static pid_t start_train(const char *cfg, int resume) {
    char *argv[] = {DMS_BINARY, "train", "--config", (char *)cfg, resume ? "--resume" : NULL, NULL};
    return spawn(argv);
}

static int run_train(const char *cfg, int resume) { return wait_exit(start_train(cfg, resume)); }

int main(void) {
    char tmpl[] = "/tmp/dms-resume-XXXXXX", data[256];
    char *root = setup_run_root(tmpl, data, sizeof data);
    if (!root) return dms_check_finish();
    char run_a[256], run_b[256], ck_a[300], ck_b[300], ck2[300];
    snprintf(run_a, sizeof run_a, "%s/a", root);
    snprintf(run_b, sizeof run_b, "%s/b", root);
    dms_err err = {0};
    const int steps = 8;
    char cfg_a[300], cfg_b[300], cfg_bad[300];
    snprintf(cfg_a, sizeof cfg_a, "%s/a.json", root);
    snprintf(cfg_b, sizeof cfg_b, "%s/b.json", root);
    snprintf(cfg_bad, sizeof cfg_bad, "%s/bad.json", root);
    write_config(cfg_a, data, run_a, steps, 2, 4);
    write_config(cfg_b, data, run_b, steps, 2, 4);
    write_config(cfg_bad, data, run_b, steps, 2, 8); /* another window */

    /* uninterrupted */
    CHECK_MSG(run_train(cfg_a, 0) == 0, "uninterrupted run failed");

    /* killed after its step-2 checkpoint, then resumed */
    dms_ckpt_path(ck2, sizeof ck2, run_b, 2);
    pid_t pid = start_train(cfg_b, 0);
    int killed = wait_for_file(ck2, pid, 120);
    if (killed) {
        usleep(300 * 1000); /* let it get into step 3 */
        kill(pid, SIGKILL);
    }
    CHECK_MSG(killed && wait_exit(pid) == 128 + SIGKILL, "the run was not killed mid-way");
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
    const double diff = checkpoint_max_rel_diff(ck_a, ck_b);
    CHECK_MSG(diff == 0, "resumed run differs from the uninterrupted one (max rel diff %.3g)", diff);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return dms_check_finish();
}
