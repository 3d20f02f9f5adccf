/* cmd_train.c - `dms train --config FILE [--resume]`: read and validate the
 * JSON config, then run or resume the DMS retrofit (train/run.c). */
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/mapped_file.h"
#include "kernels/registry.h"
#include "train/comm.h"
#include "train/run.h"
#ifdef DMS_HAVE_NCCL
#include "train/nccl/comm_nccl.h"
#endif

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int dms_cmd_train(int argc, char **argv) {
    const char *config = NULL, *backend = NULL;
    int resume = 0, threads = 0;
    const dms_arg args[] = {
        {"--config", ARG_STR, &config, "FILE", "JSON training config (see configs/)"},
        {"--resume", ARG_BOOL, &resume, NULL, "continue from the newest checkpoint in the config's output folder"},
        {"--threads", ARG_INT, &threads, "N", "CPU threads (default: the config's, else all cores)"},
        {"--backend", ARG_STR, &backend, "NAME", "cpu or cuda (default: the config's 'backend', else cpu)"},
    };
    const dms_cmd_spec spec = {
        .name = "train",
        .summary = "dms train - retrofit a model with DMS eviction heads by distillation (DESIGN.md section 1)",
        .usage = "dms train --config FILE [--resume] [--threads N] [--backend cpu|cuda]",
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
    dms_comm comm;
    if (dms_comm_auto(&comm, NULL, NULL, &err) != 0) {
        fprintf(stderr, "dms train: %s\n", err.msg);
        return 1;
    }
    const int multi = comm.size > 1;
    /* Rank 0's config is the run's: it is broadcast, and every rank checks
     * that its own copy of the file hashes the same. */
    char *mine = dms_read_text_file(config, NULL, &err);
    int rc = mine ? 0 : 2; /* 2: bad command line or config */
    uint64_t lens[2] = {mine ? strlen(mine) : 0, mine ? fnv1a(mine) : 0};
    if (multi && comm.bcast(&comm, lens, sizeof lens, 0, &err) != 0) rc = 1;
    char *text = NULL;
    if (rc == 0) {
        text = calloc(lens[0] + 1, 1);
        if (comm.rank == 0) memcpy(text, mine, lens[0]);
        if (multi && comm.bcast(&comm, text, lens[0], 0, &err) != 0) rc = 1;
        if (rc == 0 && fnv1a(mine) != lens[1])
            rc = 2, dms_errf(&err, "rank %d: %s differs from rank 0's copy (hash %016llx vs %016llx)", comm.rank,
                             config, (unsigned long long)fnv1a(mine), (unsigned long long)lens[1]);
    }
    dms_train_config cfg;
    dms_train_config_defaults(&cfg);
    if (rc == 0 && dms_train_config_parse(&cfg, text, config, &err) != 0) rc = 2;
    free(mine);
    free(text);
    if (rc != 0) {
        fprintf(stderr, "dms train: %s\n", err.msg);
        if (multi) comm.abort(&comm, rc);
        return rc;
    }
    if (threads > 0) cfg.threads = threads;
    comm.timeout_s = cfg.rank_timeout_s; /* a hung rank ends the job (docs/reliability.md) */
    if (cfg.threads == 0 && multi) { /* share the node's cores among its ranks */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        cfg.threads = (int)(cores / comm.local_size > 0 ? cores / comm.local_size : 1);
    }
    if (backend) {
        if (strcmp(backend, "cpu") && strcmp(backend, "cuda")) {
            fprintf(stderr, "dms train: unknown backend '%s' (cpu or cuda)\n", backend);
            if (multi) comm.abort(&comm, 2);
            return 2;
        }
        cfg.backend = strcmp(backend, "cuda") ? DMS_BACKEND_CPU : DMS_BACKEND_CUDA;
    }
    if (multi && cfg.backend == DMS_BACKEND_CUDA) { /* gradients live on the GPUs: NCCL sums them */
#ifdef DMS_HAVE_NCCL
        if (dms_comm_nccl_over(&comm, &err) != 0) {
            fprintf(stderr, "dms train: %s\n", err.msg);
            comm.abort(&comm, 1);
            return 1;
        }
#else
        fprintf(stderr, "dms train: %d ranks on the cuda backend need NCCL, and this dms was built without it "
                        "(cmake -DNCCL_ROOT=...; docs/multi_rank.md)\n", comm.size);
        comm.abort(&comm, 2);
        return 2;
#endif
    }
    dms_set_threads(cfg.threads);
    dms_backend be;
    if (dms_backend_open(&be, dms_backend_kind_name(cfg.backend), comm.local_rank, &err) != 0) {
        fprintf(stderr, "dms train: %s\n", err.msg);
        if (multi) comm.abort(&comm, 1);
        return 1;
    }
    /* A write past a file-size limit must fail with EFBIG (and keep the
     * previous checkpoint), not kill the process. */
    signal(SIGXFSZ, SIG_IGN);
    rc = dms_train_run(&cfg, &be, resume, &comm, &err);
    dms_backend_close(&be);
    if (rc != 0) {
        if (comm.rank == 0 && isatty(2)) fputc('\n', stderr); /* end the progress bar's line */
        if (comm.rank == 0 || !strstr(err.msg, "rank 0 failed"))
            fprintf(stderr, "dms train: %s\n", err.msg);
        if (multi) comm.abort(&comm, 1);
        return 1;
    }
    comm.finalize(&comm);
    return 0;
}
