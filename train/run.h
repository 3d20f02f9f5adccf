/* run.h - `dms train`'s engine: one call runs (or resumes) a whole DMS
 * retrofit from a resolved config: data order, steps, metrics, checkpoints. */
#ifndef DMS_RUN_H
#define DMS_RUN_H

#include "core/err.h"
#include "kernels/backend.h"
#include "train/comm.h"
#include "train/train_config.h"

/* resume: continue bit-exactly from the newest checkpoint in cfg->output.
 * comm: the ranks of this job (dms_comm_single for one process). Rank r of
 * size n trains on samples [r*b, (r+1)*b) of each global batch of n*b; only
 * rank 0 writes the run folder. All ranks read the same shards and
 * checkpoints (a shared filesystem across nodes). be: the opened backend
 * the step runs on (cfg->backend names the one the caller should open). */
int dms_train_run(const dms_train_config *cfg, const dms_backend *be, int resume, dms_comm *comm, dms_err *err);

#endif
