/* fs.c - filesystem helpers (fs.h). */
#include "core/fs.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int dms_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int dms_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int dms_mkdir_p(const char *path, dms_err *err) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return dms_errf(err, "%s: path too long", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return dms_errf(err, "%s: cannot create: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return dms_errf(err, "%s: cannot create: %s", buf, strerror(errno));
    if (!dms_is_dir(buf)) return dms_errf(err, "%s: exists and is not a folder", buf);
    return 0;
}

int dms_write_json(const char *path, const cJSON *doc, dms_err *err) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return dms_errf(err, "%s: path too long", path);
    char *text = cJSON_Print(doc);
    if (!text) return dms_errf(err, "out of memory");
    FILE *f = fopen(tmp, "w");
    int rc = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF ? 0 : -1;
    if (f && fclose(f) != 0) rc = -1;
    free(text);
    if (rc == 0 && rename(tmp, path) != 0) rc = -1;
    if (rc != 0) {
        const int e = errno ? errno : EIO;
        unlink(tmp);
        return dms_errf(err, "%s: cannot write: %s", path, strerror(e));
    }
    return 0;
}
