/* comm_nccl.c - dms_comm over NCCL (comm_nccl.h). */
#include "train/nccl/comm_nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#ifdef DMS_HAVE_MPI
#include <mpi.h>
#endif

typedef struct {
    dms_comm host; /* MPI (or single) for host-side collectives */
    ncclComm_t nccl;
    cudaStream_t stream;
    int device;
} nccl_impl;

static int nccl_allreduce_f32(dms_comm *c, float *buf, size_t n, dms_err *err) {
    nccl_impl *im = c->impl;
    ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, im->nccl, im->stream);
    if (r != ncclSuccess) return dms_errf(err, "rank %d: ncclAllReduce failed: %s", c->rank, ncclGetErrorString(r));
    cudaError_t e = cudaStreamSynchronize(im->stream);
    if (e != cudaSuccess) return dms_errf(err, "rank %d: all-reduce stream: %s", c->rank, cudaGetErrorString(e));
    return 0;
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
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (im->host.rank == 0) ncclGetUniqueId(&id);
    if (im->host.bcast(&im->host, &id, sizeof id, 0, err) != 0) {
        cudaStreamDestroy(im->stream);
        free(im);
        return -1;
    }
    ncclResult_t r = ncclCommInitRank(&im->nccl, im->host.size, id, im->host.rank);
    if (r != ncclSuccess) {
        dms_errf(err, "rank %d: ncclCommInitRank failed: %s", im->host.rank, ncclGetErrorString(r));
        cudaStreamDestroy(im->stream);
        free(im);
        return -1;
    }
    c->kind = "nccl";
    c->impl = im;
    c->allreduce_f32 = nccl_allreduce_f32;
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
