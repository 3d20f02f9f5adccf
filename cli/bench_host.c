/* bench_host.c - what every benchmark record says about where it ran: the
 * source revision and lines of /proc files (CPU model, load). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bench_host.h"

void dms_bench_read_line(const char *path, const char *key, char *out, size_t cap) {
    snprintf(out, cap, "unknown");
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (key && strncmp(line, key, strlen(key)) != 0) continue;
        char *s = key ? strchr(line, ':') : line;
        if (!s) continue;
        s += key ? 1 : 0;
        while (*s == ' ' || *s == '\t') s++;
        s[strcspn(s, "\n")] = 0;
        snprintf(out, cap, "%s", s);
        break;
    }
    fclose(f);
}

/* The source tree's revision now ("-dirty" with uncommitted changes). */
void dms_bench_source_revision(char *out, size_t cap) {
    /* a binary built elsewhere (scripts/gpu_pack.sh) is told its commit: the
     * source tree beside it may be another */
    const char *env = getenv("DMS_SOURCE_REVISION");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return;
    }
    snprintf(out, cap, "unknown");
    FILE *p = popen("git -C '" DMS_SOURCE_DIR "' describe --always --dirty 2>/dev/null", "r");
    char line[96];
    if (p && fgets(line, sizeof line, p) && line[0] && line[0] != '\n') {
        line[strcspn(line, "\n")] = 0;
        snprintf(out, cap, "%s", line);
    }
    if (p) pclose(p);
}
