/* fault_seams.c - the strong definitions of the test seams (train/run_testing.h,
 * core/fault_point.h), linked only into the `dms_faults` test binary, so
 * that the fault drills (tests/cli/NAME_faults.sh, docs/reliability.md) hit
 * the real code at deterministic points:
 *   DMS_FAULT_NAN_STEPS="3,4,5"  makes those training steps non-finite;
 *   DMS_FAULT_AT="where:n"       picks one fault point (core/fault_point.h),
 *   DMS_FAULT_ACTION             what happens there:
 *     pause  (default) write the marker, then block until killed;
 *     stop   write the marker, then SIGSTOP this process (a hung rank);
 *     enospc the write in progress fails with ENOSPC (a full disk);
 *   DMS_FAULT_MARKER=FILE        receives this process's pid (written to
 *                                FILE.tmp and renamed: never seen half-made);
 *   DMS_FAULT_RANK=r             only MPI rank r (OMPI_COMM_WORLD_RANK or
 *                                PMIX_RANK) acts. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fault_point.h"
#include "train/run_testing.h"

int dms_test_fault_nonfinite(int step) {
    const char *s = getenv("DMS_FAULT_NAN_STEPS");
    while (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        if (v == step) return 1;
        s = *end == ',' ? end + 1 : end;
    }
    return 0;
}

static void write_marker(void) {
    const char *m = getenv("DMS_FAULT_MARKER");
    if (!m || !*m) return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", m);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fprintf(f, "%ld\n", (long)getpid());
    if (fclose(f) == 0) rename(tmp, m);
}

int dms_fault_point(const char *where, long n) {
    const char *at = getenv("DMS_FAULT_AT");
    const size_t len = strlen(where);
    if (!at || strncmp(at, where, len) != 0 || at[len] != ':') return 0;
    char *end;
    if (strtol(at + len + 1, &end, 10) != n || end == at + len + 1) return 0;
    const char *rank = getenv("DMS_FAULT_RANK");
    if (rank) {
        const char *mine = getenv("OMPI_COMM_WORLD_RANK");
        if (!mine) mine = getenv("PMIX_RANK");
        if (!mine || strcmp(mine, rank) != 0) return 0;
    }
    const char *action = getenv("DMS_FAULT_ACTION");
    if (action && !strcmp(action, "enospc")) return ENOSPC;
    write_marker();
    if (action && !strcmp(action, "stop")) {
        raise(SIGSTOP);
        return 0;
    }
    for (;;) pause(); /* until the drill kills us */
}
