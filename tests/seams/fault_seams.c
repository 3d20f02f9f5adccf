/* fault_seams.c - the strong definition of the training loop's test seam
 * (train/run_testing.h), linked only into the `dms_faults` test binary:
 * DMS_FAULT_NAN_STEPS="3,4,5" makes those steps non-finite, so that the
 * skip-and-stop logic is tested without a broken model. */
#include <stdlib.h>

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
