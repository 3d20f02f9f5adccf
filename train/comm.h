/* comm.h - the one communication interface of multi-rank training
 * (DESIGN.md section 2, "Multi-rank"): rank and size, broadcast, and
 * sum all-reduce of the trainable gradients. Implementations:
 *   single  - one process, no MPI (dms train without mpirun);
 *   mpi     - MPI_Allreduce on host buffers (the CPU backend);
 *   nccl    - ncclAllReduce on device buffers (comm_nccl.c, built with
 *             CUDA + NCCL; ids travel by MPI_Bcast, local rank -> GPU).
 * Only trainable tensors are reduced: base weights are frozen and
 * replicated on every rank, so there is no FSDP.
 * A rank that hangs (SIGSTOP, a stuck filesystem) must not make the others
 * wait forever: the MPI collectives are nonblocking ones waited on with a
 * deadline of timeout_s seconds (config key rank_timeout_s); past it they
 * fail with a message and the caller aborts the job (docs/reliability.md). */
#ifndef DMS_COMM_H
#define DMS_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Seconds a collective waits for the other ranks before it fails (the
 * default of the config key rank_timeout_s). */
#define DMS_COMM_DEFAULT_TIMEOUT_S 600

typedef struct dms_comm {
    const char *kind; /* "single", "mpi", "nccl" */
    int rank, size, local_rank, local_size;
    /* seconds a collective may wait for the other ranks (0: forever); past
     * it the call fails with a message naming it, and the job must be
     * aborted (the collective is still pending: the comm is unusable) */
    double timeout_s;
    /* in-place sum over ranks of n floats in the buffers the backend uses */
    int (*allreduce_f32)(struct dms_comm *c, float *buf, size_t n, dms_err *err);
    /* Optional (NULL: only the blocking allreduce_f32): starts an in-place
     * sum over ranks of n floats in the backend's buffers and returns
     * without waiting for it, so that the gradient of one layer is summed
     * while the backward computes the next; the sum is in buf once
     * wait_all has returned. queue: the backend's queue whose queued ops
     * write buf (dms_backend.queue; NULL: buf is ready now): the sum starts
     * after them. Every rank starts the same pieces in the same order, and
     * buf is not touched again before wait_all. */
    int (*iallreduce_f32)(struct dms_comm *c, float *buf, size_t n, void *queue, dms_err *err);
    /* waits for every sum iallreduce_f32 started (with the deadline) */
    int (*wait_all)(struct dms_comm *c, dms_err *err);
    /* in-place sum of n doubles in host memory (losses, token counts) */
    int (*allreduce_f64)(struct dms_comm *c, double *buf, size_t n, dms_err *err);
    /* bytes from root to every rank (host memory) */
    int (*bcast)(struct dms_comm *c, void *buf, size_t n, int root, dms_err *err);
    void (*barrier)(struct dms_comm *c);
    void (*finalize)(struct dms_comm *c);
    /* ends every rank of the job with `code` (a rank that failed alone) */
    void (*abort)(struct dms_comm *c, int code);
    void *impl;
} dms_comm;

/* Whether this process was started by mpirun/srun (MPI environment set). */
int dms_comm_launched_by_mpi(void);
/* One process. */
void dms_comm_single(dms_comm *c);
/* MPI_Init and the host all-reduce; -1 if MPI support is not built in. */
int dms_comm_mpi(dms_comm *c, int *argc, char ***argv, dms_err *err);
/* The right one for this process: mpi when launched by mpirun, else single. */
int dms_comm_auto(dms_comm *c, int *argc, char ***argv, dms_err *err);

#endif
