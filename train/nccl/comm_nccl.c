/* comm_nccl.c - dms_comm over NCCL (comm_nccl.h). */
#include "train/nccl/comm_nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef DMS_HAVE_MPI
#include <mpi.h>
#endif

typedef struct {
    dms_comm host; /* MPI (or single) for host-side collectives */
    ncclComm_t nccl;
    cudaStream_t stream; /* NCCL's own: the sums run beside the backend's kernels */
    cudaEvent_t ready;   /* recorded on the backend's queue: what a sum must wait for */
    int device;
} nccl_impl;

/* Waits for every sum queued on NCCL's stream, polling with the comm's
 * deadline as the MPI collectives do (a rank that never joins must not
 * hang the others forever: the caller aborts the job). */
static int nccl_wait_all(dms_comm *c, dms_err *err) {
    nccl_impl *im = c->impl;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        cudaError_t e = cudaStreamQuery(im->stream);
        if (e == cudaSuccess) return 0;
        if (e != cudaErrorNotReady)
            return dms_errf(err, "rank %d: all-reduce stream: %s", c->rank, cudaGetErrorString(e));
        clock_gettime(CLOCK_MONOTONIC, &now);
        const double waited = (double)(now.tv_sec - t0.tv_sec) + 1e-9 * (double)(now.tv_nsec - t0.tv_nsec);
        if (c->timeout_s > 0 && waited > c->timeout_s)
            return dms_errf(err,
                            "rank %d: ncclAllReduce waited %.0f s for the other ranks (rank_timeout_s = %g): a rank "
                            "is hung, stopped or far behind; aborting the job",
                            c->rank, waited, c->timeout_s);
        if (waited > 1e-3) nanosleep(&(struct timespec){0, 200 * 1000}, NULL);
    }
}

static int nccl_iallreduce_f32(dms_comm *c, float *buf, size_t n, void *queue, dms_err *err) {
    nccl_impl *im = c->impl;
    cudaError_t e = cudaSuccess;
    if (queue && ((e = cudaEventRecord(im->ready, (cudaStream_t)queue)) != cudaSuccess ||
                  (e = cudaStreamWaitEvent(im->stream, im->ready, 0)) != cudaSuccess))
        return dms_errf(err, "rank %d: ordering the all-reduce after the backward: %s", c->rank,
                        cudaGetErrorString(e));
    ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, im->nccl, im->stream);
    if (r != ncclSuccess) return dms_errf(err, "rank %d: ncclAllReduce failed: %s", c->rank, ncclGetErrorString(r));
    return 0;
}

static int nccl_allreduce_f32(dms_comm *c, float *buf, size_t n, dms_err *err) {
    if (nccl_iallreduce_f32(c, buf, n, NULL, err) != 0) return -1;
    return nccl_wait_all(c, err);
}

static int nccl_allreduce_f64(dms_comm *c, double *buf, size_t n, dms_err *err) {
    nccl_impl *im = c->impl;
    return im->host.allreduce_f64(&im->host, buf, n, err);
}

static int nccl_bcast(dms_comm *c, void *buf, size_t n, int root, dms_err *err) {
    nccl_impl *im = c->impl;
    return im->host.bcast(&im->host, buf, n, root, err);
}

static void nccl_barrier(dms_comm *c) {
    nccl_impl *im = c->impl;
    im->host.barrier(&im->host);
}

static void nccl_finalize(dms_comm *c) {
    nccl_impl *im = c->impl;
    if (!im) return;
    ncclCommDestroy(im->nccl);
    cudaEventDestroy(im->ready);
    cudaStreamDestroy(im->stream);
    im->host.finalize(&im->host);
    free(im);
    c->impl = NULL;
}

static void nccl_abort(dms_comm *c, int code) {
    nccl_impl *im = c->impl;
    ncclCommAbort(im->nccl);
    im->host.abort(&im->host, code);
}

int dms_comm_nccl_over(dms_comm *c, dms_err *err) {
    nccl_impl *im = calloc(1, sizeof *im);
    if (!im) return dms_errf(err, "rank %d: out of memory", c->rank);
    im->host = *c;
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev == 0) {
        dms_errf(err, "rank %d: no GPU visible for NCCL (%s); check CUDA_VISIBLE_DEVICES", im->host.rank,
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        free(im);
        return -1;
    }
    im->device = im->host.local_rank % n_dev;
    if ((e = cudaSetDevice(im->device)) != cudaSuccess || (e = cudaStreamCreate(&im->stream)) != cudaSuccess) {
        dms_errf(err, "rank %d: GPU %d: %s", im->host.rank, im->device, cudaGetErrorString(e));
        free(im);
        return -1;
    }
    if ((e = cudaEventCreateWithFlags(&im->ready, cudaEventDisableTiming)) != cudaSuccess) {
        dms_errf(err, "rank %d: GPU %d: %s", im->host.rank, im->device, cudaGetErrorString(e));
        cudaStreamDestroy(im->stream);
        free(im);
        return -1;
    }
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (im->host.rank == 0) ncclGetUniqueId(&id);
    if (im->host.bcast(&im->host, &id, sizeof id, 0, err) != 0) {
        cudaEventDestroy(im->ready);
        cudaStreamDestroy(im->stream);
        free(im);
        return -1;
    }
    ncclResult_t r = ncclCommInitRank(&im->nccl, im->host.size, id, im->host.rank);
    if (r != ncclSuccess) {
        dms_errf(err, "rank %d: ncclCommInitRank failed: %s", im->host.rank, ncclGetErrorString(r));
        cudaEventDestroy(im->ready);
        cudaStreamDestroy(im->stream);
        free(im);
        return -1;
    }
    c->kind = "nccl";
    c->impl = im;
    c->allreduce_f32 = nccl_allreduce_f32;
    c->iallreduce_f32 = nccl_iallreduce_f32;
    c->wait_all = nccl_wait_all;
    c->allreduce_f64 = nccl_allreduce_f64;
    c->bcast = nccl_bcast;
    c->barrier = nccl_barrier;
    c->finalize = nccl_finalize;
    c->abort = nccl_abort;
    return 0;
}

int dms_comm_nccl(dms_comm *c, int *argc, char ***argv, dms_err *err) {
    if (dms_comm_auto(c, argc, argv, err) != 0) return -1;
    dms_comm host = *c;
    if (dms_comm_nccl_over(c, err) != 0) {
        host.finalize(&host);
        return -1;
    }
    return 0;
}
