/* run.h - `dms train`'s engine: one call runs (or resumes) a whole DMS
 * retrofit from a resolved config: data order, steps, metrics, checkpoints. */
#ifndef DMS_RUN_H
#define DMS_RUN_H

#include "core/err.h"
#include "train/train_config.h"

/* resume: continue bit-exactly from the newest checkpoint in cfg->output. */
int dms_train_run(const dms_train_config *cfg, int resume, dms_err *err);

#endif
