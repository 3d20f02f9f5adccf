/* comm.c - single-process and MPI implementations of dms_comm (comm.h).
 * MPI_Init happens only when the process was started by an MPI launcher,
 * so a plain `dms train` never needs an MPI runtime. Every MPI collective
 * is started nonblocking and waited on with the comm's deadline, so that a
 * hung rank ends the job with a message instead of a silent wait. */
#include "train/comm.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef DMS_HAVE_MPI
#include <mpi.h>
#endif

int dms_comm_launched_by_mpi(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", NULL};
    for (int i = 0; vars[i]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

static int single_allreduce_f32(dms_comm *c, float *buf, size_t n, dms_err *err) {
    (void)c, (void)buf, (void)n, (void)err;
    return 0;
}
static int single_allreduce_f64(dms_comm *c, double *buf, size_t n, dms_err *err) {
    (void)c, (void)buf, (void)n, (void)err;
    return 0;
}
static int single_bcast(dms_comm *c, void *buf, size_t n, int root, dms_err *err) {
    (void)c, (void)buf, (void)n, (void)root, (void)err;
    return 0;
}
static void single_barrier(dms_comm *c) { (void)c; }
static void single_finalize(dms_comm *c) { (void)c; }
static void single_abort(dms_comm *c, int code) {
    (void)c;
    exit(code);
}

void dms_comm_single(dms_comm *c) {
    memset(c, 0, sizeof *c);
    c->kind = "single";
    c->size = c->local_size = 1;
    c->allreduce_f32 = single_allreduce_f32;
    c->allreduce_f64 = single_allreduce_f64;
    c->bcast = single_bcast;
    c->barrier = single_barrier;
    c->finalize = single_finalize;
    c->abort = single_abort;
}

#ifdef DMS_HAVE_MPI
/* MPI counts are int: large buffers go in pieces. */
#define MPI_PIECE ((size_t)1 << 30)

static int mpi_fail(dms_comm *c, int code, const char *what, dms_err *err) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, msg, &len);
    return dms_errf(err, "rank %d: %s failed: %s", c->rank, what, msg);
}

/* Completes a started collective, polling it (MPI_Test) until it is done
 * or c->timeout_s seconds have passed: the first millisecond spins, then
 * the rank sleeps 200 us between polls (a waiting rank leaves its core to
 * the others). A timeout is an error: the request stays pending, and the
 * caller must abort the job. */
static int mpi_wait(dms_comm *c, MPI_Request *req, int started, const char *what, dms_err *err) {
    if (started != MPI_SUCCESS) return mpi_fail(c, started, what, err);
    if (!(c->timeout_s > 0)) {
        int rc = MPI_Wait(req, MPI_STATUS_IGNORE);
        return rc == MPI_SUCCESS ? 0 : mpi_fail(c, rc, what, err);
    }
    const double t0 = MPI_Wtime();
    for (;;) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(c, rc, what, err);
        if (done) return 0;
        const double waited = MPI_Wtime() - t0;
        if (waited > c->timeout_s)
            return dms_errf(err,
                            "rank %d: %s waited %.0f s for the other ranks (rank_timeout_s = %g): a rank is hung, "
                            "stopped or far behind; aborting the job",
                            c->rank, what, waited, c->timeout_s);
        if (waited > 1e-3) nanosleep(&(struct timespec){0, 200 * 1000}, NULL);
    }
}

static int mpi_allreduce_f32(dms_comm *c, float *buf, size_t n, dms_err *err) {
    for (size_t off = 0; off < n; off += MPI_PIECE) {
        int cnt = (int)(n - off < MPI_PIECE ? n - off : MPI_PIECE);
        MPI_Request req;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, buf + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
        if (mpi_wait(c, &req, rc, "MPI_Allreduce", err) != 0) return -1;
    }
    return 0;
}

/* The sums iallreduce_f32 started and wait_all has not waited for. */
typedef struct {
    MPI_Request *req;
    size_t n, cap;
} mpi_pending;

static int mpi_iallreduce_f32(dms_comm *c, float *buf, size_t n, void *queue, dms_err *err) {
    (void)queue; /* host buffers: ready when the CPU backend's op returned */
    mpi_pending *pd = c->impl;
    for (size_t off = 0; off < n; off += MPI_PIECE) {
        if (pd->n == pd->cap) {
            const size_t cap = pd->cap ? 2 * pd->cap : 64;
            MPI_Request *r = realloc(pd->req, cap * sizeof *r);
            if (!r) return dms_errf(err, "rank %d: out of memory", c->rank);
            pd->req = r, pd->cap = cap;
        }
        int cnt = (int)(n - off < MPI_PIECE ? n - off : MPI_PIECE);
        int rc = MPI_Iallreduce(MPI_IN_PLACE, buf + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &pd->req[pd->n]);
        if (rc != MPI_SUCCESS) return mpi_fail(c, rc, "MPI_Iallreduce", err);
        pd->n++;
    }
    return 0;
}

static int mpi_wait_all(dms_comm *c, dms_err *err) {
    mpi_pending *pd = c->impl;
    for (size_t i = 0; i < pd->n; i++)
        if (mpi_wait(c, &pd->req[i], MPI_SUCCESS, "MPI_Allreduce (overlapped)", err) != 0) return -1;
    pd->n = 0;
    return 0;
}

static int mpi_allreduce_f64(dms_comm *c, double *buf, size_t n, dms_err *err) {
    MPI_Request req;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &req);
    return mpi_wait(c, &req, rc, "MPI_Allreduce", err);
}

static int mpi_bcast(dms_comm *c, void *buf, size_t n, int root, dms_err *err) {
    MPI_Request req;
    int rc = MPI_Ibcast(buf, (int)n, MPI_BYTE, root, MPI_COMM_WORLD, &req);
    return mpi_wait(c, &req, rc, "MPI_Bcast", err);
}

static void mpi_barrier(dms_comm *c) {
    (void)c;
    MPI_Barrier(MPI_COMM_WORLD);
}

static void mpi_finalize(dms_comm *c) {
    mpi_pending *pd = c->impl;
    if (pd) free(pd->req);
    free(pd);
    c->impl = NULL;
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
}

static void mpi_abort(dms_comm *c, int code) {
    (void)c;
    MPI_Abort(MPI_COMM_WORLD, code);
}

int dms_comm_mpi(dms_comm *c, int *argc, char ***argv, dms_err *err) {
    memset(c, 0, sizeof *c);
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init(argc, argv) != MPI_SUCCESS) return dms_errf(err, "MPI_Init failed");
    /* errors come back as codes: we print one line and exit non-zero */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &c->local_rank);
    MPI_Comm_size(local, &c->local_size);
    MPI_Comm_free(&local);
    c->kind = "mpi";
    c->timeout_s = DMS_COMM_DEFAULT_TIMEOUT_S;
    if (!(c->impl = calloc(1, sizeof(mpi_pending)))) return dms_errf(err, "rank %d: out of memory", c->rank);
    c->allreduce_f32 = mpi_allreduce_f32;
    c->iallreduce_f32 = mpi_iallreduce_f32;
    c->wait_all = mpi_wait_all;
    c->allreduce_f64 = mpi_allreduce_f64;
    c->bcast = mpi_bcast;
    c->barrier = mpi_barrier;
    c->finalize = mpi_finalize;
    c->abort = mpi_abort;
    return 0;
}
#else
int dms_comm_mpi(dms_comm *c, int *argc, char ***argv, dms_err *err) {
    (void)argc, (void)argv;
    dms_comm_single(c);
    return dms_errf(err, "launched by mpirun, but this dms was built without MPI (install libopenmpi-dev and rebuild)");
}
#endif

int dms_comm_auto(dms_comm *c, int *argc, char ***argv, dms_err *err) {
    if (dms_comm_launched_by_mpi()) return dms_comm_mpi(c, argc, argv, err);
    dms_comm_single(c);
    return 0;
}
