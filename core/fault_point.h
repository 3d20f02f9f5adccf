/* fault_point.h - named points inside the long writes of dms (a checkpoint
 * being written, an export between two shards, an eval item just logged,
 * a training step starting) where a fault drill can interrupt the program
 * at a deterministic place. This file exists so that the reliability drills
 * (docs/reliability.md) kill, stop or fail the real code path at a chosen
 * point instead of racing it with sleeps.
 *
 * In `dms` the function is a weak no-op (core/fault_point.c) that always
 * returns 0: no test hook, no environment read. The `dms_faults` test binary
 * links a strong definition (tests/seams/fault_seams.c) driven by its
 * environment. Points used today (where, n):
 *   "ckpt_write", step   - half of a checkpoint's bytes are in its .tmp file
 *   "train_step", step   - a training step is about to start
 *   "export_shard", k    - shard k (1-based) of an export is written
 *   "eval_item", k       - the k-th new item of an eval run is in the JSONL */
#ifndef DMS_FAULT_POINT_H
#define DMS_FAULT_POINT_H

/* Returns 0 to go on, or an errno value (e.g. ENOSPC) that the caller treats
 * as the failure of the write in progress. May also never return (the test
 * binary blocks there until it is killed) or stop the process (SIGSTOP). */
int dms_fault_point(const char *where, long n);

#endif
