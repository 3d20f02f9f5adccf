/* err.h - error reporting without exit(): every fallible function takes a
 * dms_err* and returns -1 (or NULL) after writing a one-line message that
 * names the file and the problem. Only main() decides to exit. */
#ifndef DMS_ERR_H
#define DMS_ERR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dms_err {
    char msg[1024];
} dms_err;

/* Writes a printf-style message into err (if err is not NULL); returns -1
 * so that callers can `return dms_errf(err, "...")`. */
int dms_errf(dms_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes the existing message with "prefix: " (used to add context such as
 * a file name as an error travels up). Returns -1. */
int dms_err_prefix(dms_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif
