/* train_config.c (fuzz target) - the training config (configs/NAME.json,
 * dms_train_config_load, train/train_config.c): the key table, types,
 * ranges, enums, "did you mean" suggestions for unknown keys. An accepted
 * config must give the same resolved JSON after a round trip through
 * dms_train_config_to_json (checkpoints store it and resume compares it),
 * and its schedules must be finite at every step. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_common.h"
#include "train/train_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[PATH_MAX];
    fuzz_write_file("train.json", data, size, path, sizeof path);
    dms_train_config c;
    dms_train_config_defaults(&c); /* the file is read over the defaults, as dms train does */
    dms_err err = {{0}};
    int rc = dms_train_config_load(&c, path, &err);
    fuzz_check_err(rc, &err, path, "dms_train_config_load");
    if (rc) return 0;
    char *j1 = dms_train_config_to_json(&c);
    fuzz_require(j1 != NULL, "resolved JSON");
    dms_train_config c2;
    dms_train_config_defaults(&c2);
    dms_err e2 = {{0}};
    rc = dms_train_config_parse(&c2, j1, "resolved", &e2);
    fuzz_check_err(rc, &e2, NULL, "dms_train_config_parse (round trip)");
    fuzz_require(rc == 0, "the resolved config parses");
    char *j2 = dms_train_config_to_json(&c2);
    fuzz_require(j2 && strcmp(j1, j2) == 0, "the resolved config round-trips unchanged");
    free(j1);
    free(j2);
    const int steps[] = {0, 1, c.warmup_steps - 1, c.warmup_steps, c.steps / 2, c.steps - 1, c.steps};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        const int s = steps[i] < 0 ? 0 : steps[i];
        fuzz_require(isfinite(dms_lr_at(&c, s)) && isfinite(dms_cr_at(&c, s)) && isfinite(dms_tau_at(&c, s)),
                     "schedules are finite");
    }
    return 0;
}
