/* test_train_config.c - the training config: defaults, parsing, type and
 * range errors naming the file and key, "did you mean" suggestions, the
 * resolved JSON round trip, the CR and LR schedules, and every shipped
 * config in configs/ loading as it is. */
#include <glob.h>
#include <stdlib.h>

#include "tests/check.h"
#include "train/train_config.h"

static int parse(dms_train_config *c, const char *json, dms_err *err) {
    dms_train_config_defaults(c);
    return dms_train_config_parse(c, json, "cfg.json", err);
}

int main(void) {
    dms_train_config c;
    dms_err err = {0};
    /* defaults follow DESIGN.md / NVIDIA's recipe */
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\"}", &err) == 0);
    CHECK_CLOSE(c.lr, 3e-5, 1e-6, 0);
    CHECK_CLOSE(c.beta2, 0.95, 1e-6, 0);
    CHECK_CLOSE(c.tau, 0.1, 1e-6, 0);
    CHECK(c.variant == DMS_VARIANT_ADAPTER && c.alpha_per == DMS_ALPHA_PER_HEAD);
    CHECK_CLOSE(c.alpha_scale, 100, 0, 0);
    CHECK_CLOSE(c.alpha_offset, 5, 0, 0);

    /* errors */
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"windw\": 4}", &err) != 0);
    CHECK_STR(err.msg, "cfg.json: unknown key 'windw' (did you mean 'window'?)");
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"steps\": 2.5}", &err) != 0);
    CHECK(strstr(err.msg, "cfg.json: 'steps' must be an integer") != NULL);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"tau\": -1}", &err) != 0);
    CHECK(strstr(err.msg, "'tau' = -1 is outside") != NULL);
    CHECK(parse(&c, "{\"model\": 3, \"data\": \"d\"}", &err) != 0);
    CHECK(strstr(err.msg, "'model' must be a string") != NULL);
    CHECK(parse(&c, "{\"data\": \"d\"}", &err) != 0);
    CHECK(strstr(err.msg, "'model' is required") != NULL);
    CHECK(parse(&c, "[1, 2]", &err) != 0);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"_comment\": \"ignored\"}", &err) == 0);
    CHECK(dms_edit_distance("kitten", "sitting") == 3);

    /* resolved JSON round trip */
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"variant\": \"neuron\", \"alpha_per\": \"layer\", "
                    "\"lr_schedule\": \"cosine\", \"seed\": 77, \"lora_rank\": 4}", &err) == 0);
    char *json = dms_train_config_to_json(&c);
    dms_train_config back;
    dms_train_config_defaults(&back);
    CHECK(dms_train_config_parse(&back, json, "resolved", &err) == 0);
    CHECK(memcmp(&back, &c, sizeof c) == 0);
    free(json);

    /* CR: linear from 1, +1 every steps_per_cr steps, held at cr_final */
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"cr_final\": 8, \"steps_per_cr\": 34}", &err) == 0);
    CHECK_CLOSE(dms_cr_at(&c, 0), 1.0, 1e-6, 0);
    CHECK_CLOSE(dms_cr_at(&c, 17), 1.5, 1e-6, 0);
    CHECK_CLOSE(dms_cr_at(&c, 34 * 7), 8.0, 1e-6, 0);
    CHECK_CLOSE(dms_cr_at(&c, 10000), 8.0, 1e-6, 0);

    /* tau: constant by default; with tau_start, linear to tau over tau_steps */
    CHECK_CLOSE(dms_tau_at(&c, 0), 0.1, 1e-7, 0);
    CHECK_CLOSE(dms_tau_at(&c, 5000), 0.1, 1e-7, 0);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"tau_start\": 1.0, \"tau_steps\": 50, "
                    "\"compression_per\": \"head\"}", &err) == 0);
    CHECK(c.compression_per == DMS_COMP_PER_HEAD);
    CHECK_CLOSE(dms_tau_at(&c, 0), 1.0, 1e-6, 0);
    CHECK_CLOSE(dms_tau_at(&c, 25), 0.55, 1e-6, 0);
    CHECK_CLOSE(dms_tau_at(&c, 50), 0.1, 1e-7, 0);
    CHECK_CLOSE(dms_tau_at(&c, 51), 0.1, 1e-7, 0);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"compression_per\": \"layer\"}", &err) != 0);
    CHECK_MSG(strstr(err.msg, "compression_per") != NULL, "%s", err.msg);

    /* attention guidance: off by default; on, linear from guide_weight to 0 at guide_steps */
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\"}", &err) == 0);
    CHECK(c.guide_weight == 0.0f && dms_guide_at(&c, 0) == 0.0f);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"guide_weight\": 2, \"guide_steps\": 40}", &err) == 0);
    CHECK_CLOSE(dms_guide_at(&c, 0), 2.0, 1e-7, 0);
    CHECK_CLOSE(dms_guide_at(&c, 10), 1.5, 1e-6, 0);
    CHECK_CLOSE(dms_guide_at(&c, 40), 0.0, 0, 0);
    CHECK_CLOSE(dms_guide_at(&c, 400), 0.0, 0, 0);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"guide_weight\": -1}", &err) != 0);
    CHECK_MSG(strstr(err.msg, "guide_weight") != NULL, "%s", err.msg);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\"}", &err) == 0 && c.guide_rank == DMS_GUIDE_PER_LAYER);
    CHECK(c.guide_score == DMS_GUIDE_ATTENTION && c.guide_reduce == DMS_GUIDE_MAX);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"guide_rank\": \"row\"}", &err) == 0);
    CHECK(c.guide_rank == DMS_GUIDE_PER_ROW);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"guide_rank\": \"lane\"}", &err) == 0);
    CHECK(c.guide_rank == DMS_GUIDE_PER_LANE);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"guide_rank\": \"head\"}", &err) != 0);
    CHECK_MSG(strstr(err.msg, "guide_rank") != NULL, "%s", err.msg);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"guide_score\": \"attention_value\"}", &err) == 0);
    CHECK(c.guide_score == DMS_GUIDE_ATTENTION_VALUE);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"guide_score\": \"value\"}", &err) != 0);
    CHECK_MSG(strstr(err.msg, "guide_score") != NULL, "%s", err.msg);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"guide_reduce\": \"mean\"}", &err) == 0);
    CHECK(c.guide_reduce == DMS_GUIDE_MEAN);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"guide_reduce\": \"sum\"}", &err) != 0);
    CHECK_MSG(strstr(err.msg, "guide_reduce") != NULL, "%s", err.msg);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\"}", &err) == 0 && c.backward_attention == DMS_ATT_KEEP);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"backward_attention\": \"recompute\"}", &err) == 0);
    CHECK(c.backward_attention == DMS_ATT_RECOMPUTE);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"backward_attention\": \"save\"}", &err) != 0);
    CHECK_MSG(strstr(err.msg, "backward_attention") != NULL, "%s", err.msg);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"guide_steps\": 0}", &err) != 0);
    CHECK_MSG(strstr(err.msg, "guide_steps") != NULL, "%s", err.msg);

    /* kd: reverse (NVIDIA's KL(s||t)) unless asked */
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\"}", &err) == 0);
    CHECK(c.kd == DMS_KD_REVERSE);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"kd\": \"forward\"}", &err) == 0);
    CHECK(c.kd == DMS_KD_FORWARD);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"kd\": \"jsd\"}", &err) != 0);
    CHECK_MSG(strstr(err.msg, "'kd' must be one of: reverse, forward") != NULL, "%s", err.msg);

    /* LR: warm-up, then constant / cosine / linear to min_lr_ratio */
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"lr\": 1, \"steps\": 110, \"warmup_steps\": 10, "
                    "\"lr_schedule\": \"cosine\", \"min_lr_ratio\": 0.1}", &err) == 0);
    CHECK_CLOSE(dms_lr_at(&c, 0), 0.1, 1e-6, 0);
    CHECK_CLOSE(dms_lr_at(&c, 9), 1.0, 1e-6, 0);
    CHECK_CLOSE(dms_lr_at(&c, 10), 1.0, 1e-6, 0);
    CHECK_CLOSE(dms_lr_at(&c, 60), 0.55, 1e-5, 0);
    CHECK_CLOSE(dms_lr_at(&c, 110), 0.1, 1e-5, 0);
    c.lr_schedule = DMS_LR_LINEAR;
    CHECK_CLOSE(dms_lr_at(&c, 60), 0.55, 1e-5, 0);
    CHECK_CLOSE(dms_lr_at(&c, 85), 0.325, 1e-5, 0);
    c.lr_schedule = DMS_LR_CONSTANT;
    CHECK_CLOSE(dms_lr_at(&c, 85), 1.0, 1e-6, 0);
    /* decay_steps: constant after warm-up, the decay over the last N steps */
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"lr\": 1, \"steps\": 110, \"warmup_steps\": 10, "
                    "\"lr_schedule\": \"linear\", \"min_lr_ratio\": 0.1, \"decay_steps\": 40}", &err) == 0);
    CHECK_CLOSE(dms_lr_at(&c, 5), 0.6, 1e-6, 0);
    CHECK_CLOSE(dms_lr_at(&c, 60), 1.0, 1e-6, 0);
    CHECK_CLOSE(dms_lr_at(&c, 70), 1.0, 1e-6, 0);
    CHECK_CLOSE(dms_lr_at(&c, 90), 0.55, 1e-5, 0);
    CHECK_CLOSE(dms_lr_at(&c, 110), 0.1, 1e-5, 0);
    c.lr_schedule = DMS_LR_COSINE;
    CHECK_CLOSE(dms_lr_at(&c, 70), 1.0, 1e-6, 0);
    CHECK_CLOSE(dms_lr_at(&c, 90), 0.55, 1e-5, 0);
    CHECK(parse(&c, "{\"model\": \"m\", \"data\": \"d\", \"steps\": 110, \"warmup_steps\": 10, "
                    "\"decay_steps\": 101}", &err) != 0);
    CHECK_MSG(strstr(err.msg, "decay_steps (101) exceeds the steps after warm-up (100)") != NULL, "%s", err.msg);

    /* the shipped recipes load (a renamed key would otherwise surface only
     * when a user runs them) */
    glob_t g;
    CHECK(glob("configs/*.json", 0, NULL, &g) == 0 && g.gl_pathc >= 4);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        dms_train_config_defaults(&c);
        CHECK_MSG(dms_train_config_load(&c, g.gl_pathv[i], &err) == 0, "%s", err.msg);
    }
    globfree(&g);
    return dms_check_finish();
}
