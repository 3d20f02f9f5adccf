/* comm_nccl.h - the NCCL implementation of dms_comm (train/comm.h) for
 * device buffers: rank 0 makes the NCCL id and MPI_Bcast sends it; each
 * rank drives GPU (local rank mod visible GPUs); gradients are summed with
 * ncclAllReduce on the rank's stream. Host-side collectives (losses, token
 * counts, config) stay on MPI. A single process without mpirun gets a
 * one-rank communicator. The CUDA training backend plugs in here and
 * overlaps the all-reduce with the backward pass. */
#ifndef DMS_COMM_NCCL_H
#define DMS_COMM_NCCL_H

#include "train/comm.h"

int dms_comm_nccl(dms_comm *c, int *argc, char ***argv, dms_err *err);

#endif
