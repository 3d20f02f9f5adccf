/* fuzz_common.h - what every libFuzzer target in fuzz/ shares: a scratch
 * folder for parsers that only take a path, the split of one input into
 * several files, and the error contract checked on every rejected input.
 * The targets drive the project's public functions; nothing here parses. */
#ifndef DMS_FUZZ_COMMON_H
#define DMS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* The entry point libFuzzer (or the regression runner of
 * tests/test_fuzz_regressions.c) calls with each input. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The parts of an input that holds several files, separated by this line. */
#define FUZZ_SEP "\n--8<--\n"
#define FUZZ_MAX_PARTS 8

typedef struct {
    const uint8_t *data;
    size_t size;
} fuzz_part;

/* Splits data at each FUZZ_SEP into at most max parts (the last part keeps
 * the rest, separators included); returns the number of parts (>= 1). */
int fuzz_split(const uint8_t *data, size_t size, fuzz_part *parts, int max);

/* This process's scratch folder, /tmp/dms-fuzz-<pid>-XXXXXX (created on the
 * first call, removed at exit with everything in it). */
const char *fuzz_tmpdir(void);

/* Writes data to <scratch>/<name> (sub-folders of name are created) and puts
 * the full path in path[cap]. A failure of the harness itself aborts. */
void fuzz_write_file(const char *name, const void *data, size_t size, char *path, size_t cap);
/* Removes <scratch>/<name> if it exists. */
void fuzz_remove_file(const char *name);

/* snprintf into out[cap] that aborts on truncation (paths of the harness). */
void fuzz_fmt(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A NUL-terminated malloc'd copy of a part (embedded NULs kept). */
char *fuzz_strdup_part(fuzz_part p);

/* The error contract of the parsers: a call that failed (rc != 0) left a
 * one-line message, and when `must_name` is not NULL the message names it
 * (the file or folder read). A violation prints the message and aborts, so
 * that libFuzzer reports the input. With FUZZ_VERBOSE set in the
 * environment every result is printed (to see what a seed reaches). */
void fuzz_check_err(int rc, const dms_err *err, const char *must_name, const char *what);

/* Aborts with a message when cond is false (an invariant of a parsed
 * result that the parser promises). */
void fuzz_require(int cond, const char *what);

/* The repository root (compiled in), for fixtures used as fixed inputs. */
const char *fuzz_source_dir(void);

#endif
