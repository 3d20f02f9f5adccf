/* cmd_train.c - `dms train --config FILE [--resume]`: read and validate the
 * JSON config, then run or resume the DMS retrofit (train/run.c). */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "train/run.h"

int dms_cmd_train(int argc, char **argv) {
    const char *config = NULL;
    int resume = 0, threads = 0;
    const dms_arg args[] = {
        {"--config", ARG_STR, &config, "FILE", "JSON training config (see configs/)"},
        {"--resume", ARG_BOOL, &resume, NULL, "continue from the newest checkpoint in the config's output folder"},
        {"--threads", ARG_INT, &threads, "N", "CPU threads (default: the config's, else all cores)"},
    };
    const dms_cmd_spec spec = {
        .name = "train",
        .summary = "dms train - retrofit a model with DMS eviction heads by distillation (DESIGN.md section 1)",
        .usage = "dms train --config FILE [--resume] [--threads N]",
        .args = args,
        .n_args = (int)(sizeof args / sizeof args[0]),
        .epilog = "The run folder (config key 'output') receives config.json, metrics.jsonl and\n"
                  "ckpt-<step>.h5 checkpoints; plot it with 'dms inspect RUN'. Every config key is\n"
                  "listed in docs/training.md.\n\nexample:\n  dms train --config configs/demo.json",
    };
    int pr = dms_args_parse(&spec, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (!config) {
        fprintf(stderr, "dms train: --config is required (see 'dms train --help')\n");
        return 2;
    }
    dms_err err = {0};
    dms_train_config cfg;
    dms_train_config_defaults(&cfg);
    if (dms_train_config_load(&cfg, config, &err) != 0) {
        fprintf(stderr, "dms train: %s\n", err.msg);
        return 2;
    }
    if (threads > 0) cfg.threads = threads;
    dms_set_threads(cfg.threads);
    /* A write past a file-size limit must fail with EFBIG (and keep the
     * previous checkpoint), not kill the process. */
    signal(SIGXFSZ, SIG_IGN);
    if (dms_train_run(&cfg, resume, &err) != 0) {
        if (isatty(2)) fputc('\n', stderr); /* end the progress bar's line */
        fprintf(stderr, "dms train: %s\n", err.msg);
        return 1;
    }
    return 0;
}
