/* registry.h - backends chosen at run time by name (`--backend cpu|cuda`,
 * the `backend` config key). The CUDA backend is linked in whenever it was
 * built (nvcc found at configure time); this is the only place that knows. */
#ifndef DMS_REGISTRY_H
#define DMS_REGISTRY_H

#include "core/err.h"
#include "kernels/backend.h"

/* Opens backend `name` ("cpu", "cuda"; device: the GPU index for cuda).
 * -1 with a message for an unknown name, a backend not built into this
 * binary, or a device that cannot start. */
int dms_backend_open(dms_backend *be, const char *name, int device, dms_err *err);
void dms_backend_close(dms_backend *be);
/* The backends built into this binary, e.g. "cpu, cuda". */
const char *dms_backend_available(void);

#endif
