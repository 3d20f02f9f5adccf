/* fault_point.c - the production definition of the fault-drill seam
 * (core/fault_point.h): a weak no-op, so that `dms` carries no test hook;
 * the `dms_faults` test binary overrides it (tests/seams/fault_seams.c). */
#include "core/fault_point.h"

__attribute__((weak)) int dms_fault_point(const char *where, long n) {
    (void)where, (void)n;
    return 0;
}
