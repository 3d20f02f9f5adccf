/* test_fuzz_regressions.c - replays fuzz inputs in the normal test suite,
 * without libFuzzer: tests/CMakeLists.txt links this main with one fuzz
 * target (fuzz/<target>.c, its LLVMFuzzerTestOneInput) and runs it as
 *   test_fuzz_regressions_<target> fuzz/corpus/<target> tests/fixtures/fuzz_regressions/<target>
 * Every file of the seed corpus (required, at least one file) and of the
 * regression folder (inputs that crashed a parser before it was fixed; the
 * folder exists only for targets that found something) is fed to the
 * target, in name order. The targets abort on a crash, a sanitizer report
 * (asan preset), a broken error contract (no message, several lines, a
 * message not naming the file) or a broken invariant of a parsed result,
 * which fails the test. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mapped_file.h"
#include "fuzz/fuzz_common.h"

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Feeds every regular file of dir to the target; returns the count, -1 if
 * the folder cannot be read. */
static int replay(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    char **names = NULL;
    int n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            names = realloc(names, sizeof(char *) * (size_t)cap);
            if (!names) abort();
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(names, (size_t)n, sizeof(char *), cmp_name);
    int done = 0;
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path) abort();
        dms_mapped_file f;
        dms_err err = {{0}};
        if (dms_map_file(&f, path, &err) == 0) {
            printf("  %s (%zu bytes)\n", path, f.size);
            fflush(stdout);
            LLVMFuzzerTestOneInput(f.data ? f.data : (const uint8_t *)"", f.size);
            dms_unmap_file(&f);
            done++;
        }
        free(names[i]);
    }
    free(names);
    return done;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s CORPUS_DIR REGRESSION_DIR\n", argv[0]);
        return 2;
    }
    const int seeds = replay(argv[1]);
    if (seeds <= 0) {
        fprintf(stderr, "%s: no seed inputs (%s)\n", argv[1], seeds < 0 ? strerror(errno) : "empty folder");
        return 1;
    }
    int regressions = replay(argv[2]);
    if (regressions < 0) {
        if (errno != ENOENT) {
            fprintf(stderr, "%s: %s\n", argv[2], strerror(errno));
            return 1;
        }
        regressions = 0; /* this target never found anything */
    }
    printf("%d seeds and %d regression inputs replayed without a failure\n", seeds, regressions);
    return 0;
}
