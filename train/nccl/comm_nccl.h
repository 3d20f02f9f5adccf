/* comm_nccl.h - the NCCL implementation of dms_comm (train/comm.h) for
 * device buffers: rank 0 makes the NCCL id and MPI_Bcast sends it; each
 * rank drives GPU (local rank mod visible GPUs); gradients are summed with
 * ncclAllReduce on the rank's stream. Host-side collectives (losses, token
 * counts, config) stay on MPI. A single process without mpirun gets a
 * one-rank communicator. `dms train --backend cuda` under mpirun uses it
 * (cli/cmd_train.c); the all-reduce runs after the backward pass, not yet
 * overlapped with it. */
#ifndef DMS_COMM_NCCL_H
#define DMS_COMM_NCCL_H

#include "train/comm.h"

/* dms_comm_auto, then NCCL over it. */
int dms_comm_nccl(dms_comm *c, int *argc, char ***argv, dms_err *err);
/* Turns c, an open host communicator (MPI or single), into the NCCL one in
 * place: gradients on device buffers go through NCCL, the rest stays on
 * c's host collectives. On failure c is left as it was (still usable, to
 * abort the job). `dms train --backend cuda` under mpirun does this. */
int dms_comm_nccl_over(dms_comm *c, dms_err *err);

#endif
