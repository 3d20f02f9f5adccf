/* test_safetensors.c - the safetensors reader's refusals and limits
 * (model/safetensors.c, docs/fuzzing.md "Limits"): a header over the
 * format's 100 MB limit is refused before it is parsed (a sparse file, so
 * the test writes almost nothing), shapes must be integers whose product
 * cannot overflow even when a zero dimension makes the tensor empty, data
 * offsets must be integers, and every message is one line naming the file
 * even when the names in the header hold newlines. The reader's happy path
 * is covered by the model suites. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/safetensors.h"
#include "tests/check.h"

static char path[64];

/* Writes an 8-byte header length, the header, then data; with total > 0 the
 * file is extended (sparse) to total bytes. */
static void write_st(uint64_t hlen, const char *header, const void *data, size_t n, off_t total) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    if (fd < 0) return;
    int ok = write(fd, &hlen, 8) == 8 && write(fd, header, strlen(header)) == (ssize_t)strlen(header) &&
             (n == 0 || write(fd, data, n) == (ssize_t)n) && (total == 0 || ftruncate(fd, total) == 0);
    CHECK(ok);
    close(fd);
}

static void expect_fail(const char *what, const char *needle) {
    dms_safetensors st;
    dms_err err = {{0}};
    int rc = dms_st_open_file(&st, path, &err);
    CHECK_MSG(rc == -1, "%s: opened", what);
    if (rc == 0) {
        dms_st_close(&st);
        return;
    }
    CHECK_MSG(strncmp(err.msg, path, strlen(path)) == 0 && !strchr(err.msg, '\n'), "%s: %s", what, err.msg);
    CHECK_MSG(strstr(err.msg, needle) != NULL, "%s: expected '%s' in: %s", what, needle, err.msg);
}

static void expect_ok(const char *what) {
    dms_safetensors st;
    dms_err err = {{0}};
    int rc = dms_st_open_file(&st, path, &err);
    CHECK_MSG(rc == 0, "%s: %s", what, err.msg);
    if (rc == 0) dms_st_close(&st);
}

int main(void) {
    strcpy(path, "/tmp/dms_test_st_XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);

    /* header size: 100 MB + 1 is refused (before parsing: the header here
     * is '{' then zeros, which would otherwise be "not valid JSON") */
    write_st((uint64_t)DMS_ST_MAX_HEADER + 1, "{", NULL, 0, (off_t)DMS_ST_MAX_HEADER + 64);
    expect_fail("header over 100 MB", "over the format's limit of 100000000 bytes");
    /* ... and one that says it is longer than the file is "truncated" */
    write_st((uint64_t)DMS_ST_MAX_HEADER * 4, "{", NULL, 0, 64);
    expect_fail("header past the end", "header length runs past end of file");

    static const float one = 1.0f;
    char h[512];
    /* a small valid file, the baseline for the refusals below */
    snprintf(h, sizeof h, "{\"t\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}");
    write_st(strlen(h), h, &one, 4, 0);
    expect_ok("one tensor");
    /* shapes: a fraction, a negative, and an empty tensor whose other
     * dimensions multiply past 2^62 */
    snprintf(h, sizeof h, "{\"t\": {\"dtype\": \"F32\", \"shape\": [0.5], \"data_offsets\": [0, 4]}}");
    write_st(strlen(h), h, &one, 4, 0);
    expect_fail("fractional dimension", "'t' has an invalid shape");
    snprintf(h, sizeof h, "{\"t\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}");
    write_st(strlen(h), h, &one, 4, 0);
    expect_fail("negative dimension", "'t' has an invalid shape");
    snprintf(h, sizeof h, "{\"t\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904, 4, 0], "
                          "\"data_offsets\": [0, 0]}}");
    write_st(strlen(h), h, NULL, 0, 0);
    expect_fail("empty tensor with an overflowing shape", "'t' has an invalid shape");
    snprintf(h, sizeof h, "{\"t\": {\"dtype\": \"F32\", \"shape\": [9223372036854775808], \"data_offsets\": [0, 0]}}");
    write_st(strlen(h), h, NULL, 0, 0);
    expect_fail("dimension 2^63", "'t' has an invalid shape");
    snprintf(h, sizeof h, "{\"t\": {\"dtype\": \"F32\", \"shape\": [1024, 0], \"data_offsets\": [0, 0]}}");
    write_st(strlen(h), h, NULL, 0, 0);
    expect_ok("an empty tensor");
    /* data offsets must be whole bytes */
    snprintf(h, sizeof h, "{\"t\": {\"dtype\": \"U8\", \"shape\": [3], \"data_offsets\": [0.5, 3.5]}}");
    write_st(strlen(h), h, "abcd", 4, 0);
    expect_fail("fractional offsets", "'t' data");
    /* names with control bytes: the message stays one line */
    snprintf(h, sizeof h, "{\"a\\nb\": {\"dtype\": \"F\\r32\", \"shape\": [1], \"data_offsets\": [0, 4]}}");
    write_st(strlen(h), h, &one, 4, 0);
    expect_fail("newlines in names", "tensor 'a?b' has unknown dtype 'F?32'");

    unlink(path);
    return dms_check_finish();
}
