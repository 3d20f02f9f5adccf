/* registry.c - open a backend by name (kernels/registry.h). Built as its
 * own library so that the core library does not depend on the CUDA one. */
#include <string.h>

#include "kernels/backend_check.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/registry.h"
#ifdef DMS_HAVE_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

const char *dms_backend_available(void) {
#ifdef DMS_HAVE_CUDA
    return "cpu, cuda";
#else
    return "cpu";
#endif
}

/* Every backend must run a model: a missing inference op is refused here. */
static int checked(dms_backend *be, int rc, dms_err *err) {
    if (rc == 0 && dms_backend_require(be, 0, err) != 0) {
        dms_backend_close(be);
        return -1;
    }
    return rc;
}

int dms_backend_open(dms_backend *be, const char *name, int device, dms_err *err) {
    memset(be, 0, sizeof *be);
    if (!name || !strcmp(name, "cpu")) return checked(be, dms_backend_cpu_create(be, err), err);
    if (!strcmp(name, "cuda")) {
#ifdef DMS_HAVE_CUDA
        return checked(be, dms_backend_cuda_create(be, device, err), err);
#else
        (void)device;
        return dms_errf(err, "backend 'cuda' is not built into this binary (nvcc was not found when it was "
                             "configured); available: %s", dms_backend_available());
#endif
    }
    return dms_errf(err, "unknown backend '%s' (available: %s)", name, dms_backend_available());
}

void dms_backend_close(dms_backend *be) {
    if (!be->name) return;
#ifdef DMS_HAVE_CUDA
    if (!strcmp(be->name, "cuda")) {
        dms_backend_cuda_destroy(be);
        memset(be, 0, sizeof *be);
        return;
    }
#endif
    dms_backend_cpu_destroy(be);
    memset(be, 0, sizeof *be);
}
