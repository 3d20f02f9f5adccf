/* backend_check.h - run-time checks on an op table: the ops a command needs
 * are present (kernels/backend.c). */
#ifndef DMS_BACKEND_CHECK_H
#define DMS_BACKEND_CHECK_H

#include "core/err.h"
#include "kernels/backend.h"

/* 0 if `be` implements every inference op (and, if need_train, every
 * training op); else -1 with "backend 'x' does not implement ...: op, op". */
int dms_backend_require(const dms_backend *be, int need_train, dms_err *err);
/* 0 if `be` implements the paged KV cache's ops (DMS_OPS_RUNTIME). */
int dms_backend_require_runtime(const dms_backend *be, dms_err *err);
/* How many ops of the table are implemented (and how many exist). */
int dms_backend_count_ops(const dms_backend *be, int *n_total);

#endif
