/* test_cr_schedule.c - the `cr_schedule` key: NVIDIA's schedule (Model-
 * Optimizer's dms_schedule with configs/qwen3_8b.yaml: CR linear from 1 to
 * 16 over 510 steps, then held) at chosen steps, the step where the run
 * stops (the target reaching cr_final: 238 for CR 8, the checkpoint
 * NVIDIA's extract example uses), our default schedule left as it was,
 * and the parsing of the key and of `packing`. */
#include <stdlib.h>

#include "tests/check.h"
#include "train/train_config.h"

static int parse(dms_train_config *c, const char *extra, dms_err *err) {
    char json[512];
    snprintf(json, sizeof json, "{\"model\": \"m\", \"data\": \"d\"%s%s}", extra[0] ? ", " : "", extra);
    dms_train_config_defaults(c);
    return dms_train_config_parse(c, json, "cfg.json", err);
}

/* NVIDIA's formula, written out on its own: cr = 1 + (16 - 1) * min(step / 510, 1) */
static double nvidia_cr(int step) {
    double progress = (double)step / 510.0;
    if (progress > 1) progress = 1;
    return 1.0 + 15.0 * progress;
}

int main(void) {
    dms_train_config c;
    dms_err err = {0};

    /* defaults: our linear schedule, documents packing */
    CHECK(parse(&c, "", &err) == 0);
    CHECK(c.cr_schedule == DMS_CR_LINEAR && c.packing == DMS_PACK_DOCUMENTS);
    CHECK_CLOSE(dms_cr_at(&c, 0), 1.0, 0, 1e-6);
    CHECK_CLOSE(dms_cr_at(&c, 250), 3.5, 0, 1e-6);  /* 1 + 250 / 100 */
    CHECK_CLOSE(dms_cr_at(&c, 5000), 8.0, 0, 1e-6); /* held at cr_final */
    CHECK(dms_train_steps(&c) == c.steps);          /* runs all its steps */

    /* nvidia */
    CHECK(parse(&c, "\"cr_schedule\": \"nvidia\", \"cr_final\": 8, \"steps\": 1000", &err) == 0);
    CHECK(c.cr_schedule == DMS_CR_NVIDIA);
    const int steps[] = {0, 1, 34, 100, 237, 238, 255, 509, 510, 544, 5000};
    const double want[] = {1.0, 1.0 + 15.0 / 510, 2.0, 1.0 + 1500.0 / 510, 1.0 + 15.0 * 237 / 510, 8.0, 8.5,
                           1.0 + 15.0 * 509 / 510, 16.0, 16.0, 16.0};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        CHECK_CLOSE(dms_cr_at(&c, steps[i]), want[i], 1e-6, 0);
        CHECK_CLOSE(dms_cr_at(&c, steps[i]), nvidia_cr(steps[i]), 1e-6, 0);
    }
    /* the schedule does not depend on cr_final: only the stop step does */
    CHECK(dms_train_steps(&c) == 238);
    CHECK(dms_cr_at(&c, 237) < 8.0f && dms_cr_at(&c, 238) >= 8.0f - 1e-6f);
    c.cr_final = 16;
    CHECK(dms_train_steps(&c) == 510);
    c.cr_final = 4;
    CHECK(dms_train_steps(&c) == 102);
    c.cr_final = 3.3f; /* not on a step: the first step at or past it */
    const int s = dms_train_steps(&c);
    CHECK(s == 79);
    CHECK(dms_cr_at(&c, s) >= 3.3f && dms_cr_at(&c, s - 1) < 3.3f);
    c.cr_final = 8;
    c.steps = 100; /* a shorter run ends first */
    CHECK(dms_train_steps(&c) == 100);
    c.steps = 1000;
    c.cr_final = 1; /* nothing to ramp: one step still runs */
    CHECK(dms_train_steps(&c) == 1);

    /* the key round-trips through the resolved JSON (checkpoints store it) */
    CHECK(parse(&c, "\"cr_schedule\": \"nvidia\", \"packing\": \"reference\"", &err) == 0);
    char *j = dms_train_config_to_json(&c);
    CHECK(j && strstr(j, "\"cr_schedule\":\t\"nvidia\"") && strstr(j, "\"packing\":\t\"reference\""));
    dms_train_config c2;
    dms_train_config_defaults(&c2);
    CHECK(j && dms_train_config_parse(&c2, j, "resolved", &err) == 0);
    CHECK(c2.cr_schedule == DMS_CR_NVIDIA && c2.packing == DMS_PACK_REFERENCE);
    free(j);

    /* errors */
    CHECK(parse(&c, "\"cr_schedule\": \"cosine\"", &err) != 0);
    CHECK(strstr(err.msg, "'cr_schedule' must be one of: linear, nvidia") != NULL);
    CHECK(parse(&c, "\"cr_schedule\": \"nvidia\", \"cr_final\": 20", &err) != 0);
    CHECK(strstr(err.msg, "beyond the nvidia schedule's final CR 16") != NULL);
    CHECK(parse(&c, "\"packing\": \"concat\"", &err) != 0);
    CHECK(strstr(err.msg, "'packing' must be one of: documents, reference") != NULL);
    return dms_check_finish();
}
