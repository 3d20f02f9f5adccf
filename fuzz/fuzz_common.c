/* fuzz_common.c - the helpers of fuzz_common.h. The scratch folder is the
 * only state a target keeps between inputs (a static path, created once):
 * libFuzzer runs inputs one after another in one process, and the parsers
 * under test only take paths. */
#include "fuzz/fuzz_common.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fuzz_split(const uint8_t *data, size_t size, fuzz_part *parts, int max) {
    const size_t sl = sizeof FUZZ_SEP - 1;
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; n < max - 1 && i + sl <= size; i++) {
        if (memcmp(data + i, FUZZ_SEP, sl) == 0) {
            parts[n++] = (fuzz_part){data + start, i - start};
            start = i + sl;
            i = start - 1;
        }
    }
    parts[n++] = (fuzz_part){data + start, size - start};
    return n;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static char tmpdir_path[PATH_MAX];

static void tmpdir_cleanup(void) {
    if (tmpdir_path[0]) nftw(tmpdir_path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_tmpdir(void) {
    if (!tmpdir_path[0]) {
        const char *base = getenv("TMPDIR");
        if (!base || !*base) base = "/tmp";
        fuzz_fmt(tmpdir_path, sizeof tmpdir_path, "%s/dms-fuzz-%ld-XXXXXX", base, (long)getpid());
        if (!mkdtemp(tmpdir_path)) {
            fprintf(stderr, "fuzz: cannot create a scratch folder in %s: %s\n", base, strerror(errno));
            abort();
        }
        atexit(tmpdir_cleanup);
    }
    return tmpdir_path;
}

void fuzz_write_file(const char *name, const void *data, size_t size, char *path, size_t cap) {
    fuzz_fmt(path, cap, "%s/%s", fuzz_tmpdir(), name);
    /* sub-folders of name */
    for (char *s = path + strlen(fuzz_tmpdir()) + 1; (s = strchr(s, '/')); s++) {
        *s = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) abort();
        *s = '/';
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
        abort();
    }
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f) != 0) abort();
}

void fuzz_remove_file(const char *name) {
    char path[PATH_MAX];
    fuzz_fmt(path, sizeof path, "%s/%s", fuzz_tmpdir(), name);
    unlink(path);
}

void fuzz_fmt(char *out, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "fuzz: path too long: %s\n", out);
        abort();
    }
}

char *fuzz_strdup_part(fuzz_part p) {
    char *s = malloc(p.size + 1);
    if (!s) abort();
    if (p.size) memcpy(s, p.data, p.size);
    s[p.size] = '\0';
    return s;
}

void fuzz_check_err(int rc, const dms_err *err, const char *must_name, const char *what) {
    if (getenv("FUZZ_VERBOSE")) fprintf(stderr, "fuzz: %s: %s\n", what, rc ? err->msg : "ok");
    if (rc == 0) return;
    const char *why = NULL;
    if (!err->msg[0]) why = "failed without a message";
    else if (strchr(err->msg, '\n')) why = "message is more than one line";
    else if (must_name && !strstr(err->msg, must_name)) why = "message does not name the file";
    if (!why) return;
    fprintf(stderr, "fuzz: %s: %s: '%s'\n", what, why, err->msg);
    abort();
}

void fuzz_require(int cond, const char *what) {
    if (cond) return;
    fprintf(stderr, "fuzz: invariant violated: %s\n", what);
    abort();
}

const char *fuzz_source_dir(void) { return DMS_SOURCE_DIR; }
