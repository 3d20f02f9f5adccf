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
/* `dms inspect --plan MODEL`: the memory plan of a training step
 * (cli/inspect_plan.c). tokens: per row, -1 for config_path's max_len;
 * config_path: a training config (variant, LoRA, kd_chunk) or NULL;
 * threads: 0 for all cores. */
int dms_inspect_plan(const char *model_path, int tokens, const char *backend, const char *config_path, int threads,
                     double gpu_gib);

/* The model used when --model is not given: $DMS_MODEL, else the embedded
 * default that the README set-up command installs (models/default.gguf in
 * the source tree). */
const char *dms_default_model(void);
/* Applies --threads (0 = leave the OpenMP/OpenBLAS defaults). */
void dms_set_threads(int n);

#endif
