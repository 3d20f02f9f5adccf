/* fs.h - small filesystem helpers shared by the CLI, prep and training. */
#ifndef DMS_FS_H
#define DMS_FS_H

#include <cjson/cJSON.h>

#include "core/err.h"

/* mkdir -p: creates path and its missing parents (mode 0755). */
int dms_mkdir_p(const char *path, dms_err *err);
/* Whether path is an existing directory / regular file. */
int dms_is_dir(const char *path);
int dms_is_file(const char *path);
/* Writes a JSON document (pretty, newline-terminated) atomically: PATH.tmp,
 * then rename; on failure no PATH.tmp is left and err names PATH. */
int dms_write_json(const char *path, const cJSON *doc, dms_err *err);

#endif
