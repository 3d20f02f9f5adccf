/* bench_host.h - the host facts a benchmark record carries (cli/bench_host.c). */
#ifndef DMS_BENCH_HOST_H
#define DMS_BENCH_HOST_H

#include <stddef.h>

/* The value after "key:" on the first line of path starting with key (key
 * NULL: the first line); "unknown" if there is none. */
void dms_bench_read_line(const char *path, const char *key, char *out, size_t cap);
/* The source tree's revision now ("-dirty" with uncommitted changes), or
 * $DMS_SOURCE_REVISION where set (a binary built from another tree). */
void dms_bench_source_revision(char *out, size_t cap);

#endif
