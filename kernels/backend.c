/* backend.c - what every backend shares: the check that a backend
 * implements the ops a command needs, so that a missing op is an error at
 * start naming the op, never a NULL call in the middle of a run. */
#include "kernels/backend_check.h"

#include <stdio.h>
#include <string.h>

int dms_backend_require_runtime(const dms_backend *be, dms_err *err) {
    if (be->attention_paged) return 0;
    return dms_errf(err, "backend '%s' does not implement the op needed by the paged KV cache: attention_paged",
                    be->name);
}

int dms_backend_require(const dms_backend *be, int need_train, dms_err *err) {
    char missing[512] = "";
#define DMS_CHECK_OP(op)                                                                                  \
    if (!be->op) snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%s", *missing ? ", " : "", #op);
    DMS_OPS_INFER(DMS_CHECK_OP)
    if (need_train) {
        DMS_OPS_TRAIN(DMS_CHECK_OP)
    }
#undef DMS_CHECK_OP
    if (!*missing) return 0;
    return dms_errf(err, "backend '%s' does not implement %s needed %s: %s", be->name,
                    strchr(missing, ',') ? "the ops" : "the op", need_train ? "for training" : "to run a model",
                    missing);
}

int dms_backend_count_ops(const dms_backend *be, int *n_total) {
    int n = 0, total = 0;
#define DMS_COUNT_OP(op) total++, n += be->op != NULL;
    DMS_OPS_INFER(DMS_COUNT_OP)
    DMS_OPS_TRAIN(DMS_COUNT_OP)
    DMS_OPS_RUNTIME(DMS_COUNT_OP)
#undef DMS_COUNT_OP
    if (n_total) *n_total = total;
    return n;
}
