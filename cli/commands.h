/* commands.h - the subcommands of the dms binary, one file each. */
#ifndef DMS_COMMANDS_H
#define DMS_COMMANDS_H

int dms_cmd_generate(int argc, char **argv);
int dms_cmd_inspect(int argc, char **argv);
int dms_cmd_prep(int argc, char **argv);
int dms_cmd_train(int argc, char **argv);
int dms_cmd_export(int argc, char **argv);
int dms_cmd_bench(int argc, char **argv);
int dms_cmd_eval(int argc, char **argv);
/* `dms inspect RUN`: plots of a training run's metrics.jsonl. */
int dms_inspect_run(const char *dir);

/* The model used when --model is not given: $DMS_MODEL, else the embedded
 * default that the README set-up command installs (models/default.gguf in
 * the source tree). */
const char *dms_default_model(void);
/* Applies --threads (0 = leave the OpenMP/OpenBLAS defaults). */
void dms_set_threads(int n);

#endif
