/* test_gguf.c - the GGUF reader: dequantisation of every supported type
 * against gguf-py's own output (committed fixture), metadata lookups, corrupt
 * and truncated files (each must fail with one line naming the file), and the
 * real default model (models/default.gguf or $DMS_DEFAULT_GGUF). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "model/config.h"
#include "model/gguf.h"
#include "tests/check.h"

#define FIXTURE "tests/fixtures/quant/quant.gguf"

/* ---- small helpers ---- */

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(sz > 0 ? (size_t)sz : 1);
    size_t got = fread(buf, 1, (size_t)sz, f);
    fclose(f);
    if (got != (size_t)sz) {
        free(buf);
        return NULL;
    }
    *n = (size_t)sz;
    return buf;
}

/* Writes buf to a fresh /tmp file; returns its fd (path in path_out). */
static int write_tmp(const uint8_t *buf, size_t n, char path_out[64]) {
    strcpy(path_out, "/tmp/dms_test_gguf_XXXXXX");
    int fd = mkstemp(path_out);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, buf + off, n - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    return fd;
}

static int has_newline(const char *s) { return strchr(s, '\n') != NULL; }

/* The error contract: one line, starting with "<path>:". */
static void check_err_msg(const char *what, const char *path, const char *msg, const char *needle) {
    size_t pl = strlen(path);
    CHECK_MSG(strncmp(msg, path, pl) == 0 && msg[pl] == ':', "%s: message does not start with the path: %s",
              what, msg);
    CHECK_MSG(!has_newline(msg), "%s: message has a newline: %s", what, msg);
    if (needle) CHECK_MSG(strstr(msg, needle) != NULL, "%s: expected '%s' in: %s", what, needle, msg);
}

/* Writes buf to a temp file, expects dms_gguf_open to fail mentioning needle. */
static void expect_open_fail(const uint8_t *buf, size_t n, const char *what, const char *needle) {
    char path[64];
    int fd = write_tmp(buf, n, path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    dms_gguf g;
    dms_err err = {{0}};
    int rc = dms_gguf_open(&g, path, &err);
    CHECK_MSG(rc == -1, "%s: open unexpectedly succeeded", what);
    if (rc == 0) dms_gguf_close(&g);
    else check_err_msg(what, path, err.msg, needle);
    if (getenv("DMS_TEST_VERBOSE")) printf("  %-28s -> %s\n", what, err.msg);
    unlink(path);
}

static int open_buf_ok(const uint8_t *buf, size_t n, const char *what) {
    char path[64];
    int fd = write_tmp(buf, n, path);
    if (fd < 0) return 0;
    close(fd);
    dms_gguf g;
    dms_err err = {{0}};
    int rc = dms_gguf_open(&g, path, &err);
    CHECK_MSG(rc == 0, "%s: %s", what, err.msg);
    if (rc == 0) dms_gguf_close(&g);
    unlink(path);
    return rc == 0;
}

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* Offset of the bytes right after the length-prefixed string s (a key or a
 * tensor name) in the header, or 0 if absent. */
static size_t after_str(const uint8_t *buf, size_t n, const char *s) {
    size_t l = strlen(s);
    for (size_t i = 8; i + l <= n; i++) {
        uint64_t len;
        memcpy(&len, buf + i - 8, 8);
        if (len == l && memcmp(buf + i, s, l) == 0) return i + l;
    }
    return 0;
}

/* ---- a minimal GGUF writer for hand-built files ---- */

typedef struct { uint8_t *p; size_t n, cap; } wbuf;

static void wb_put(wbuf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void wb_u32(wbuf *b, uint32_t v) { wb_put(b, &v, 4); }
static void wb_u64(wbuf *b, uint64_t v) { wb_put(b, &v, 8); }
static void wb_str(wbuf *b, const char *s) {
    wb_u64(b, strlen(s));
    wb_put(b, s, strlen(s));
}
static void wb_header(wbuf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    wb_put(b, "GGUF", 4);
    wb_u32(b, version);
    wb_u64(b, n_tensors);
    wb_u64(b, n_kv);
}
static void wb_tensor(wbuf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                      uint64_t offset) {
    wb_str(b, name);
    wb_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) wb_u64(b, ne[i]);
    wb_u32(b, type);
    wb_u64(b, offset);
}
static void wb_pad(wbuf *b, size_t align) {
    static const uint8_t zeros[64] = {0};
    while (b->n % align) wb_put(b, zeros, 1);
}

/* ---- 1. dequantisation against gguf-py ---- */

static void test_fixture_dequant(const dms_gguf *g) {
    int n_checked = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const dms_gguf_tensor *t = &g->tensors[i];
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        if (strstr(name, ".expected")) continue;
        char ename[160];
        snprintf(ename, sizeof ename, "%s.expected", name);
        const dms_gguf_tensor *e = dms_gguf_find_tensor(g, ename);
        CHECK_MSG(e != NULL, "no %s", ename);
        if (!e) continue;
        CHECK(e->type == GGML_F32);
        CHECK(t->n_dims == e->n_dims);
        for (int d = 0; d < 4; d++) CHECK(t->ne[d] == e->ne[d]);
        CHECK_MSG(dms_ggml_type_supported(t->type), "%s", dms_ggml_type_name(t->type));
        uint64_t n = dms_gguf_tensor_nelem(t);
        CHECK(n == dms_gguf_tensor_nelem(e));
        CHECK(t->nbytes == n / dms_ggml_blck_size(t->type) * dms_ggml_type_size(t->type));
        float *got = malloc(n * sizeof *got), *want = malloc(n * sizeof *want);
        dms_err err = {{0}};
        int rc = dms_gguf_dequantize(g, t, got, &err);
        CHECK_MSG(rc == 0, "%s: %s", name, err.msg);
        CHECK(dms_gguf_dequantize(g, e, want, &err) == 0);
        /* The single-threaded block API must agree with the parallel path. */
        float *got1 = malloc(n * sizeof *got1);
        CHECK(dms_ggml_dequantize_blocks(t->type, t->data, got1, n) == 0);
        uint64_t bad = 0, first = 0, nz = 0;
        for (uint64_t j = 0; j < n; j++) {
            double a = got[j], b = want[j];
            if (!(fabs(a - b) <= 1e-6 * fabs(b)) || memcmp(&got[j], &got1[j], 4) != 0) {
                if (!bad) first = j;
                bad++;
            }
            if (b != 0) nz++;
        }
        CHECK_MSG(bad == 0, "%s (%s): %llu of %llu values differ, first at %llu: %.9g vs %.9g", name,
                  dms_ggml_type_name(t->type), (unsigned long long)bad, (unsigned long long)n,
                  (unsigned long long)first, got[first], want[first]);
        CHECK_MSG(nz > n / 2, "%s: expected values mostly zero (fixture broken?)", name);
        if (strcmp(name, "f16") == 0) {
            /* fp16 subnormal 1e-6 and -0.0 survive */
            CHECK(want[0] > 0 && want[0] < 6.1e-5f);
            CHECK(got[3] == 0 && signbit(got[3]));
        }
        free(got);
        free(want);
        free(got1);
        n_checked++;
    }
    CHECK_MSG(n_checked == 14, "checked %d tensors, expected 14", n_checked);

    const dms_gguf_tensor *t3 = dms_gguf_find_tensor(g, "f32_3d");
    CHECK(t3 && t3->n_dims == 3 && t3->ne[0] == 32 && t3->ne[1] == 3 && t3->ne[2] == 2 && t3->ne[3] == 1);
    CHECK(dms_gguf_find_tensor(g, "nope") == NULL);
    CHECK(dms_gguf_find_tensor(g, "f3") == NULL);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        CHECK(g->tensors[i].offset % g->alignment == 0);
        CHECK((size_t)(g->tensors[i].data - g->file.data) % g->alignment == 0);
    }
}

static void test_type_table(void) {
    static const struct { dms_ggml_type t; const char *name; uint64_t blck, size; int sup; } want[] = {
        {GGML_F32, "F32", 1, 4, 1},      {GGML_F16, "F16", 1, 2, 1},       {GGML_BF16, "BF16", 1, 2, 1},
        {GGML_Q4_0, "Q4_0", 32, 18, 1},  {GGML_Q4_1, "Q4_1", 32, 20, 1},   {GGML_Q5_0, "Q5_0", 32, 22, 1},
        {GGML_Q5_1, "Q5_1", 32, 24, 1},  {GGML_Q8_0, "Q8_0", 32, 34, 1},   {GGML_Q2_K, "Q2_K", 256, 84, 1},
        {GGML_Q3_K, "Q3_K", 256, 110, 1}, {GGML_Q4_K, "Q4_K", 256, 144, 1}, {GGML_Q5_K, "Q5_K", 256, 176, 1},
        {GGML_Q6_K, "Q6_K", 256, 210, 1}, {GGML_Q8_K, "Q8_K", 256, 292, 0}, {GGML_Q8_1, "Q8_1", 32, 40, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK_STR(dms_ggml_type_name(want[i].t), want[i].name);
        CHECK(dms_ggml_blck_size(want[i].t) == want[i].blck);
        CHECK(dms_ggml_type_size(want[i].t) == want[i].size);
        CHECK(dms_ggml_type_supported(want[i].t) == want[i].sup);
    }
    CHECK_STR(dms_ggml_type_name((dms_ggml_type)77), "?");
    CHECK(dms_ggml_blck_size((dms_ggml_type)77) == 0);
    CHECK(!dms_ggml_type_supported((dms_ggml_type)77));
    float y[32];
    CHECK(dms_ggml_dequantize_blocks(GGML_Q4_0, y, y, 16) == -1); /* not a whole block */
}

/* Blocks written by hand, expected values from the block formulas: a check
 * that does not depend on gguf-py at all. */
static void test_hand_blocks(void) {
    uint8_t q40[18], q80[34], q41[20];
    q40[0] = 0x00, q40[1] = 0x38; /* d = 0.5 */
    for (int j = 0; j < 16; j++) q40[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    float y[32];
    CHECK(dms_ggml_dequantize_blocks(GGML_Q4_0, q40, y, 32) == 0);
    int ok = 1;
    for (int j = 0; j < 16; j++) ok &= y[j] == (j - 8) * 0.5f && y[j + 16] == (7 - j) * 0.5f;
    CHECK(ok);

    q80[0] = 0x00, q80[1] = 0x3c; /* d = 1.0 */
    for (int j = 0; j < 32; j++) q80[2 + j] = (uint8_t)(int8_t)(j * 8 - 128);
    CHECK(dms_ggml_dequantize_blocks(GGML_Q8_0, q80, y, 32) == 0);
    ok = 1;
    for (int j = 0; j < 32; j++) ok &= y[j] == (float)(j * 8 - 128);
    CHECK(ok);

    q41[0] = 0x00, q41[1] = 0x40; /* d = 2.0 */
    q41[2] = 0x00, q41[3] = 0xbc; /* m = -1.0 */
    for (int j = 0; j < 16; j++) q41[4 + j] = (uint8_t)(j | (j << 4));
    CHECK(dms_ggml_dequantize_blocks(GGML_Q4_1, q41, y, 32) == 0);
    ok = 1;
    for (int j = 0; j < 16; j++) ok &= y[j] == 2.0f * j - 1.0f && y[j + 16] == 2.0f * j - 1.0f;
    CHECK(ok);

    uint16_t bf[2] = {0x3f80, 0xc040}; /* 1.0, -3.0 */
    CHECK(dms_ggml_dequantize_blocks(GGML_BF16, bf, y, 2) == 0);
    CHECK(y[0] == 1.0f && y[1] == -3.0f);
}

/* ---- 2. metadata ---- */

static void test_metadata(const dms_gguf *g) {
    uint64_t u = 0;
    double f = 0;
    CHECK(g->version == 3);
    CHECK(g->n_kv == 19);
    CHECK(g->n_tensors == 28);
    CHECK(g->alignment == 64);
    CHECK((size_t)(g->data_section - g->file.data) % 64 == 0);
    CHECK(dms_gguf_get_u64(g, "general.alignment", &u) == 0 && u == 64);
    CHECK(dms_gguf_get_u64(g, "test.u8", &u) == 0 && u == 200);
    CHECK(dms_gguf_get_u64(g, "test.i8", &u) == -1); /* negative */
    CHECK(dms_gguf_get_f64(g, "test.i8", &f) == 0 && f == -100);
    CHECK(dms_gguf_get_u64(g, "test.u16", &u) == 0 && u == 60000);
    CHECK(dms_gguf_get_f64(g, "test.i16", &f) == 0 && f == -30000);
    CHECK(dms_gguf_get_u64(g, "test.u32", &u) == 0 && u == 4000000000u);
    CHECK(dms_gguf_get_f64(g, "test.i32", &f) == 0 && f == -2000000000.0);
    CHECK(dms_gguf_get_f64(g, "test.f32", &f) == 0 && f == 1.5);
    CHECK(dms_gguf_get_u64(g, "test.f32", &u) == -1); /* not an integer */
    CHECK(dms_gguf_get_u64(g, "test.u64", &u) == 0 && u == 18000000000000000000ull);
    CHECK(dms_gguf_get_f64(g, "test.i64", &f) == 0 && f == -9e18);
    CHECK(dms_gguf_get_f64(g, "test.f64", &f) == 0 && f == 2.718281828459045);
    CHECK(dms_gguf_get_u64(g, "test.bool", &u) == 0 && u == 1);
    CHECK(dms_gguf_get_u64(g, "llama.block_count", &u) == 0 && u == 3); /* after the nested arrays */
    CHECK(dms_gguf_get_u64(g, "missing.key", &u) == -1);
    CHECK(dms_gguf_get_u64(g, "test.str", &u) == -1);
    CHECK(dms_gguf_get_f64(g, "test.strs", &f) == -1);
    const dms_gguf_kv *kv = dms_gguf_find_kv(g, "test.i64");
    CHECK(kv && kv->type == GGUF_T_INT64 && kv->v.i == -9000000000000000000ll);

    char *s = dms_gguf_get_str(g, "test.str");
    CHECK(s && strcmp(s, "hello gguf \xc3\xa9") == 0);
    free(s);
    s = dms_gguf_get_str(g, "general.architecture");
    CHECK(s && strcmp(s, "testarch") == 0);
    free(s);
    CHECK(dms_gguf_get_str(g, "test.u8") == NULL);
    CHECK(dms_gguf_get_str(g, "missing.key") == NULL);

    kv = dms_gguf_find_kv(g, "test.strs");
    CHECK(kv && kv->type == GGUF_T_ARRAY && kv->arr_type == GGUF_T_STRING && kv->arr_len == 3);
    if (kv && kv->arr_len == 3) {
        dms_gguf_str strs[3];
        dms_err err = {{0}};
        CHECK(dms_gguf_array_strs(kv, strs, &err) == 0);
        CHECK(strs[0].len == 5 && memcmp(strs[0].ptr, "alpha", 5) == 0);
        CHECK(strs[1].len == 0);
        CHECK(strs[2].len == 8 && memcmp(strs[2].ptr, "gamma \xce\xb3", 8) == 0);
    }
    kv = dms_gguf_find_kv(g, "test.ints");
    CHECK(kv && kv->arr_type == GGUF_T_INT32 && kv->arr_len == 4);
    if (kv) {
        int32_t v[4];
        memcpy(v, kv->arr_data, sizeof v);
        CHECK(v[0] == 1 && v[1] == 2 && v[2] == 3 && v[3] == 4);
        CHECK(kv->arr_end == kv->arr_data + 16);
        dms_gguf_str dummy[4];
        dms_err err = {{0}};
        CHECK(dms_gguf_array_strs(kv, dummy, &err) == -1);
        check_err_msg("array_strs on ints", g->file.path, err.msg, "test.ints");
    }
    kv = dms_gguf_find_kv(g, "test.nested");
    CHECK(kv && kv->type == GGUF_T_ARRAY && kv->arr_type == GGUF_T_ARRAY && kv->arr_len == 3);
    kv = dms_gguf_find_kv(g, "test.nested_strs");
    CHECK(kv && kv->arr_type == GGUF_T_ARRAY && kv->arr_len == 2);
}

/* ---- 3. corrupt input ---- */

static void test_truncation(const uint8_t *buf, size_t n, size_t data_off) {
    char path[64];
    int fd = write_tmp(buf, n, path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    /* Every cut in the header region, then a stride through the data;
     * descending so one file can be shrunk in place. */
    size_t *cuts = malloc((n + 1) * sizeof *cuts), nc = 0;
    for (size_t c = n - 1; c > data_off; c -= (c > data_off + 97 ? 97 : c - data_off)) cuts[nc++] = c;
    for (size_t c = data_off + 1; c-- > 0;) cuts[nc++] = c;
    int fails = 0, bad_msgs = 0;
    for (size_t i = 0; i < nc; i++) {
        if (ftruncate(fd, (off_t)cuts[i]) != 0) {
            fails++;
            continue;
        }
        dms_gguf g;
        dms_err err = {{0}};
        int rc = dms_gguf_open(&g, path, &err);
        if (rc == 0) {
            if (!fails) fprintf(stderr, "truncated at %zu: open succeeded\n", cuts[i]);
            fails++;
            dms_gguf_close(&g);
        } else {
            size_t pl = strlen(path);
            if (strncmp(err.msg, path, pl) != 0 || err.msg[pl] != ':' || has_newline(err.msg)) {
                if (!bad_msgs) fprintf(stderr, "truncated at %zu: bad message: %s\n", cuts[i], err.msg);
                bad_msgs++;
            }
        }
    }
    CHECK_MSG(fails == 0, "%d of %zu truncated files opened", fails, nc);
    CHECK_MSG(bad_msgs == 0, "%d of %zu truncation messages malformed", bad_msgs, nc);
    CHECK(nc > data_off);
    free(cuts);
    close(fd);
    unlink(path);
}

static void test_corrupt(const uint8_t *orig, size_t n) {
    uint8_t *b = malloc(n);
#define RESET() memcpy(b, orig, n)

    RESET();
    b[0] = 'X';
    expect_open_fail(b, n, "bad magic", "magic");
    expect_open_fail(b, 0, "empty file", "magic");
    expect_open_fail(orig, 6, "cut in version", "truncated");

    RESET();
    put_u32(b + 4, 1);
    expect_open_fail(b, n, "version 1", "version 1");
    put_u32(b + 4, 4);
    expect_open_fail(b, n, "version 4", "version 4");
    put_u32(b + 4, 0x03000000u);
    expect_open_fail(b, n, "big-endian", "big-endian");
    put_u32(b + 4, 2);
    CHECK(open_buf_ok(b, n, "version 2"));

    RESET();
    put_u64(b + 8, 1ull << 60);
    expect_open_fail(b, n, "absurd tensor count", "tensor count");
    RESET();
    put_u64(b + 16, 1ull << 60);
    expect_open_fail(b, n, "absurd kv count", "metadata count");
    RESET();
    put_u64(b + 16, 0xffffffffffffffffull);
    expect_open_fail(b, n, "kv count -1", "metadata count");

    RESET();
    put_u64(b + 24, 0xfffffffffffffff0ull); /* first key's length */
    expect_open_fail(b, n, "huge key length", "past end of file");

    size_t p = after_str(orig, n, "test.str");
    CHECK(p > 0);
    RESET();
    put_u64(b + p + 4, 1ull << 62);
    expect_open_fail(b, n, "huge string value length", "past end of file");

    p = after_str(orig, n, "test.u8");
    RESET();
    put_u32(b + p, 99);
    expect_open_fail(b, n, "unknown value type", "unknown value type 99");

    p = after_str(orig, n, "test.ints");
    CHECK(p > 0);
    RESET();
    put_u32(b + p + 4, 13);
    expect_open_fail(b, n, "unknown array element type", "unknown element type 13");
    RESET();
    put_u64(b + p + 8, 1ull << 61);
    expect_open_fail(b, n, "huge array length", "cannot fit");

    p = after_str(orig, n, "test.strs"); /* type(4) etype(4) count(8) then first string */
    RESET();
    put_u64(b + p + 16, 1ull << 40);
    expect_open_fail(b, n, "huge string in array", "string element 0");

    p = after_str(orig, n, "general.alignment"); /* type u32, value u32 */
    CHECK(p > 0);
    RESET();
    put_u32(b + p + 4, 0);
    expect_open_fail(b, n, "alignment 0", "alignment");
    put_u32(b + p + 4, 48);
    expect_open_fail(b, n, "alignment 48", "alignment");
    RESET();
    put_u32(b + p, GGUF_T_FLOAT32);
    expect_open_fail(b, n, "alignment float", "alignment");

    /* tensor infos: name, n_dims u32, ne u64[n_dims], type u32, offset u64 */
    p = after_str(orig, n, "f32_3d");
    CHECK(p > 0);
    RESET();
    put_u32(b + p, 5);
    expect_open_fail(b, n, "n_dims 5", "5 dimensions");
    put_u32(b + p, 0);
    expect_open_fail(b, n, "n_dims 0", "0 dimensions");
    RESET();
    put_u64(b + p + 4, 1ull << 40);
    put_u64(b + p + 12, 1ull << 40);
    expect_open_fail(b, n, "ne overflow", "overflow");
    RESET();
    put_u64(b + p + 4, 1ull << 63);
    expect_open_fail(b, n, "ne 2^63", "overflow");
    RESET();
    put_u32(b + p + 4 + 24, 77);
    expect_open_fail(b, n, "unknown tensor type", "unknown ggml type 77");
    RESET();
    put_u32(b + p + 4 + 24, GGML_Q4_0); /* ne[0] = 32 is fine, but now far fewer bytes: opens */
    CHECK(open_buf_ok(b, n, "retyped tensor"));

    p = after_str(orig, n, "q4_0");
    RESET();
    put_u64(b + p + 4, 48);
    expect_open_fail(b, n, "ne[0] not a block multiple", "not a multiple of the Q4_0 block size 32");

    p = after_str(orig, n, "q6_k.expected"); /* the last tensor: 2 dims */
    CHECK(p > 0);
    size_t off_at = p + 4 + 16 + 4;
    RESET();
    put_u64(b + off_at, 1ull << 20);
    expect_open_fail(b, n, "offset past EOF", "runs past end of file");
    put_u64(b + off_at, 0xffffffffffffffc0ull);
    expect_open_fail(b, n, "offset overflow", "runs past end of file");
    RESET();
    uint64_t off;
    memcpy(&off, orig + off_at, 8);
    put_u64(b + off_at, off + 4);
    expect_open_fail(b, n, "misaligned offset", "not a multiple of the alignment");
    RESET();
    expect_open_fail(b, n - 1, "last tensor short by one byte", "q6_k.expected");

    p = after_str(orig, n, "f16");
    RESET();
    memcpy(b + p - 3, "f32", 3);
    expect_open_fail(b, n, "duplicate tensor", "duplicate tensor name 'f32'");

    dms_gguf g;
    dms_err err = {{0}};
    CHECK(dms_gguf_open(&g, "/nonexistent/x.gguf", &err) == -1);
    check_err_msg("missing file", "/nonexistent/x.gguf", err.msg, NULL);
    free(b);
#undef RESET
}

/* Hand-built files: nesting depth, zero tensors, an unsupported type. */
static void test_hand_built(void) {
    /* arrays nested 8 deep are fine, 9 deep refused */
    for (int depth = 8; depth <= 9; depth++) {
        wbuf b = {0};
        wb_header(&b, 3, 0, 2);
        wb_str(&b, "deep");
        wb_u32(&b, GGUF_T_ARRAY);
        for (int d = 0; d < depth; d++) {
            wb_u32(&b, GGUF_T_ARRAY);
            wb_u64(&b, 1);
        }
        wb_u32(&b, GGUF_T_UINT8);
        wb_u64(&b, 1);
        uint8_t one = 1;
        wb_put(&b, &one, 1);
        wb_str(&b, "after");
        wb_u32(&b, GGUF_T_UINT16);
        uint16_t v = 7;
        wb_put(&b, &v, 2);
        if (depth == 8) {
            char path[64];
            int fd = write_tmp(b.p, b.n, path);
            close(fd);
            dms_gguf g;
            dms_err err = {{0}};
            CHECK_MSG(dms_gguf_open(&g, path, &err) == 0, "%s", err.msg);
            uint64_t u = 0;
            CHECK(dms_gguf_get_u64(&g, "after", &u) == 0 && u == 7);
            CHECK(g.n_tensors == 0 && g.alignment == 32);
            dms_gguf_close(&g);
            unlink(path);
        } else {
            expect_open_fail(b.p, b.n, "nested too deep", "nested");
        }
        free(b.p);
    }

    /* names from the file are printed on one line, bounded */
    {
        wbuf b = {0};
        wb_header(&b, 3, 0, 1);
        wb_str(&b, "bad\nkey\x01");
        wb_u32(&b, 99);
        expect_open_fail(b.p, b.n, "control bytes in key", "key 0 'bad?key?' has unknown value type 99");
        free(b.p);
        char longkey[400];
        memset(longkey, 'k', sizeof longkey - 1);
        longkey[sizeof longkey - 1] = '\0';
        b = (wbuf){0};
        wb_header(&b, 3, 0, 1);
        wb_str(&b, longkey);
        wb_u32(&b, 99);
        expect_open_fail(b.p, b.n, "long key", "kkk...' has unknown value type 99");
        free(b.p);
        char buf[8];
        dms_gguf_str s = {"abcdefghij", 10};
        CHECK_STR(dms_gguf_str_printable(s, buf, sizeof buf), "abcd...");
        s.len = 7;
        CHECK_STR(dms_gguf_str_printable(s, buf, sizeof buf), "abcdefg");
    }

    /* an unsupported (but known) type opens; dequantising it errors */
    {
        wbuf b = {0};
        wb_header(&b, 2, 2, 0);
        uint64_t ne[2] = {32, 2};
        wb_tensor(&b, "iq", 2, ne, 20 /* IQ4_NL */, 0);
        wb_tensor(&b, "q8", 1, ne, GGML_Q8_0, 64);
        wb_pad(&b, 32);
        uint8_t blocks[64 + 34] = {0};
        blocks[64 + 1] = 0x3c; /* q8 d = 1.0 */
        for (int j = 0; j < 32; j++) blocks[64 + 2 + j] = (uint8_t)j;
        wb_put(&b, blocks, sizeof blocks);
        char path[64];
        int fd = write_tmp(b.p, b.n, path);
        close(fd);
        dms_gguf g;
        dms_err err = {{0}};
        CHECK_MSG(dms_gguf_open(&g, path, &err) == 0, "%s", err.msg);
        if (g.n_tensors == 2) {
            float out[64];
            CHECK(g.version == 2);
            CHECK(!dms_ggml_type_supported(g.tensors[0].type));
            CHECK(dms_gguf_dequantize(&g, &g.tensors[0], out, &err) == -1);
            check_err_msg("unsupported type", path, err.msg, "type IQ4_NL not supported");
            CHECK(dms_gguf_dequantize(&g, &g.tensors[1], out, &err) == 0);
            int ok = 1;
            for (int j = 0; j < 32; j++) ok &= out[j] == (float)j;
            CHECK(ok);
            dms_gguf_close(&g);
        }
        unlink(path);
        free(b.p);
    }
}

/* The limits of docs/fuzzing.md ("Limits"): a key longer than the GGUF
 * spec's 65535 bytes, model sizes beyond dms_config's limits (a u64 that
 * would have wrapped to a small int), an empty file (nothing mapped). */
static void test_limits(void) {
    for (size_t len = DMS_GGUF_MAX_KEY; len <= DMS_GGUF_MAX_KEY + 1; len++) {
        char *key = malloc(len + 1);
        memset(key, 'k', len);
        key[len] = '\0';
        wbuf b = {0};
        wb_header(&b, 3, 0, 1);
        wb_str(&b, key);
        wb_u32(&b, GGUF_T_UINT8);
        uint8_t one = 1;
        wb_put(&b, &one, 1);
        if (len == DMS_GGUF_MAX_KEY) CHECK(open_buf_ok(b.p, b.n, "key of 65535 bytes"));
        else expect_open_fail(b.p, b.n, "key of 65536 bytes", "is 65536 bytes long (GGUF keys are at most 65535)");
        free(b.p);
        free(key);
    }
    /* block_count 2^32 + 1 must not become 1; a vocabulary over the limit */
    static const struct { const char *key; uint64_t v; const char *needle; } big[] = {
        {"llama.block_count", (1ull << 32) + 1, "beyond the limits (layers 2147483647"},
        {"llama.vocab_size", (1ull << 24) + 1, "beyond the limits"},
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        wbuf b = {0};
        wb_header(&b, 3, 0, 6);
        wb_str(&b, "general.architecture");
        wb_u32(&b, GGUF_T_STRING);
        wb_str(&b, "llama");
        const char *keys[] = {"llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                              "llama.attention.head_count", "llama.vocab_size"};
        const uint64_t vals[] = {1, 8, 16, 2, 32};
        for (int k = 0; k < 5; k++) {
            wb_str(&b, keys[k]);
            wb_u32(&b, GGUF_T_UINT64);
            wb_u64(&b, strcmp(keys[k], big[i].key) ? vals[k] : big[i].v);
        }
        char path[64];
        int fd = write_tmp(b.p, b.n, path);
        close(fd);
        dms_gguf g;
        dms_err err = {{0}};
        CHECK_MSG(dms_gguf_open(&g, path, &err) == 0, "%s", err.msg);
        if (g.file.data) {
            dms_config c;
            CHECK(dms_config_from_gguf(&c, &g, &err) == -1);
            check_err_msg(big[i].key, path, err.msg, big[i].needle);
            dms_gguf_close(&g);
        }
        unlink(path);
        free(b.p);
    }
    expect_open_fail((const uint8_t *)"", 0, "empty file", "not a GGUF file");
}

/* ---- 4. the real default model ---- */

static void test_default_model(void) {
    const char *path = getenv("DMS_DEFAULT_GGUF");
    if (!path || !*path) path = "models/default.gguf";
    if (access(path, R_OK) != 0) {
        CHECK_MSG(0, "%s not found: run the setup (it links the default SmolLM2 GGUF to models/default.gguf) "
                     "or set DMS_DEFAULT_GGUF", path);
        return;
    }
    dms_gguf g;
    dms_err err = {{0}};
    if (dms_gguf_open(&g, path, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    uint64_t u = 0;
    CHECK(dms_gguf_get_u64(&g, "llama.block_count", &u) == 0 && u == 30);
    CHECK(dms_gguf_get_u64(&g, "llama.embedding_length", &u) == 0 && u == 576);
    double f = 0;
    CHECK(dms_gguf_get_f64(&g, "llama.rope.freq_base", &f) == 0 && f == 100000.0);
    char *arch = dms_gguf_get_str(&g, "general.architecture");
    CHECK(arch && strcmp(arch, "llama") == 0);
    free(arch);
    CHECK(g.n_tensors == 272);
    const dms_gguf_kv *kv = dms_gguf_find_kv(&g, "tokenizer.ggml.tokens");
    CHECK(kv && kv->arr_type == GGUF_T_STRING && kv->arr_len == 49152);
    if (kv && kv->arr_len == 49152) {
        dms_gguf_str *toks = malloc(kv->arr_len * sizeof *toks);
        CHECK(dms_gguf_array_strs(kv, toks, &err) == 0);
        CHECK(toks[1].len == 12 && memcmp(toks[1].ptr, "<|im_start|>", 12) == 0);
        CHECK(toks[49151].len == 7 && memcmp(toks[49151].ptr, "ectable", 7) == 0);
        free(toks);
    }
    /* Values and sums from gguf-py: gguf.quants.dequantize(t.data, t.tensor_type). */
    static const struct {
        const char *name;
        int type;
        uint64_t nelem;
        double sum, abs_sum;
        struct { uint64_t i; float v; } at[9];
    } want[] = {
        {"token_embd.weight", GGML_Q8_0, 28311552, -15353.04449415207, 2802153.619805813,
         {{0, -0.106544495f}, {1, 0.0329780579f}, {31, -0.200405121f}, {32, -0.0934867859f},
          {575, 0.0297546387f}, {576, -0.0238037109f}, {12345, 0.0310058594f},
          {14155783, 0.123556137f}, {28311551, -0.0417022705f}}},
        {"blk.0.attn_q.weight", GGML_Q4_1, 331776, 59.22322082519531, 63395.39872741699,
         {{0, -0.0963134766f}, {1, 0.157348633f}, {31, -0.0963134766f}, {32, -0.346191406f},
          {575, 0.123535156f}, {576, -0.11730957f}, {12345, 0.12109375f}, {165895, 0.171875f},
          {331775, -0.255859375f}}},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        const dms_gguf_tensor *t = dms_gguf_find_tensor(&g, want[k].name);
        CHECK_MSG(t != NULL, "%s missing", want[k].name);
        if (!t) continue;
        CHECK((int)t->type == want[k].type);
        uint64_t n = dms_gguf_tensor_nelem(t);
        CHECK(n == want[k].nelem);
        if (n != want[k].nelem) continue;
        float *out = malloc(n * sizeof *out);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = dms_gguf_dequantize(&g, t, out, &err);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        CHECK_MSG(rc == 0, "%s", err.msg);
        if (n > 1000000)
            printf("dequantised %s (%llu elements) in %.1f ms\n", want[k].name, (unsigned long long)n,
                   (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6);
        for (int j = 0; j < 9; j++) CHECK_CLOSE(out[want[k].at[j].i], want[k].at[j].v, 1e-6, 0);
        double s = 0, sa = 0;
        for (uint64_t j = 0; j < n; j++) {
            s += out[j];
            sa += fabs(out[j]);
        }
        CHECK_CLOSE(s, want[k].sum, 1e-9, 1e-6);
        CHECK_CLOSE(sa, want[k].abs_sum, 1e-9, 0);
        free(out);
    }
    dms_gguf_close(&g);
}

int main(void) {
    test_type_table();
    test_hand_blocks();

    dms_gguf g;
    dms_err err = {{0}};
    if (dms_gguf_open(&g, FIXTURE, &err) != 0) {
        CHECK_MSG(0, "%s (run from the repository root)", err.msg);
    } else {
        test_fixture_dequant(&g);
        test_metadata(&g);
        size_t data_off = (size_t)(g.data_section - g.file.data);
        dms_gguf_close(&g);
        size_t n = 0;
        uint8_t *buf = slurp(FIXTURE, &n);
        CHECK(buf != NULL);
        if (buf) {
            test_truncation(buf, n, data_off);
            test_corrupt(buf, n);
            free(buf);
        }
    }
    test_hand_built();
    test_limits();
    test_default_model();
    return dms_check_finish();
}
