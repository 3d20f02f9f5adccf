/* test_train_resume.c - `dms train` killed mid-way (SIGKILL) and resumed
 * with --resume ends with exactly the same trainable tensors and Adam
 * moments as an uninterrupted run; a fresh start in a used folder and a
 * resume that changes the method are refused; and a shorter run of the
 * same config is the longer run's first steps (constant lr; the ramp,
 * anneal and guidance count from step 0), which docs/quality.md relies on
 * when it reads a recipe's shorter cut off a longer run's checkpoint. Runs
 * the real binary with the embedded model on short synthetic rows. */
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

    /* the recipe's extensions on (LoRA, anneal, per-lane value-weighted
     * guidance): a 2-step run ends where a 4-step run was at step 2 */
    const char *recipe = "\"lora_rank\": 2, \"lora_alpha\": 4, \"tau_start\": 1.0, \"tau_steps\": 4, "
                         "\"guide_weight\": 1, \"guide_steps\": 12, \"guide_rank\": \"lane\", "
                         "\"guide_score\": \"attention_value\", ";
    char run_long[256], run_short[256], cfg_long[300], cfg_short[300], ck_long[300], ck_short[300];
    snprintf(run_long, sizeof run_long, "%s/long", root);
    snprintf(run_short, sizeof run_short, "%s/short", root);
    snprintf(cfg_long, sizeof cfg_long, "%s/long.json", root);
    snprintf(cfg_short, sizeof cfg_short, "%s/short.json", root);
    const int longer = 4, shorter = 2;
    write_config_with(cfg_long, data, run_long, longer, 2, 4, recipe);
    write_config_with(cfg_short, data, run_short, shorter, 2, 4, recipe);
    CHECK_MSG(run_train(cfg_long, 0) == 0 && run_train(cfg_short, 0) == 0, "the long or the short run failed");
    dms_ckpt_path(ck_long, sizeof ck_long, run_long, shorter);
    dms_ckpt_path(ck_short, sizeof ck_short, run_short, shorter);
    const double cut = checkpoint_max_rel_diff(ck_long, ck_short);
    CHECK_MSG(cut == 0, "a %d-step run differs from a %d-step run at its step %d (max rel diff %.3g)", shorter,
              longer, shorter, cut);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return dms_check_finish();
}
