/* test_shards.c - token shards (data/shards.h): hand-made documents written
 * and read back as packed rows (segment ids across row boundaries, loss
 * mask), a dataset over two shards with global rows, and every refusal: a
 * different tokenizer, a wrong max_len, truncated and foreign files, offsets
 * that are not monotonic or do not end at N, out-of-vocabulary ids. Ends
 * with dms prep's library entry on the embedded model (rendering, masks). */
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mapped_file.h"
#include "data/prep.h"
#include "data/shards.h"
#include "kernels/backend.h"
#include "model/model.h"
#include "tests/check.h"

#define HASH 0x1234567890abcdefULL
#define OTHER 0xabcdef0011223344ULL

static char dir[64];

static int one_line(const char *s) { return s[0] && !strchr(s, '\n'); }

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void copy_truncated(const char *src, const char *dst, long keep) {
    FILE *a = fopen(src, "rb"), *b = fopen(dst, "wb");
    for (long i = 0; i < keep; i++) {
        int c = fgetc(a);
        if (c == EOF) break;
        fputc(c, b);
    }
    fclose(a);
    fclose(b);
}

static long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

/* Writes a shard by hand with HDF5 (to make broken ones). */
static void raw_shard(const char *path, const uint32_t *tok, hsize_t n, const uint64_t *off, hsize_t n_off,
                      const char *format, int vocab) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t d = H5Dcreate2(f, "tokens", H5T_STD_U32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, tok);
    H5Dclose(d);
    H5Sclose(sp);
    sp = H5Screate_simple(1, &n_off, NULL);
    d = H5Dcreate2(f, "doc_offsets", H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off);
    H5Dclose(d);
    H5Sclose(sp);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(format) + 1);
    hid_t a = H5Acreate2(f, "format", t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, format);
    H5Aclose(a);
    H5Tclose(t);
    int one = 1, ml = 4;
    uint64_t h = HASH;
    a = H5Acreate2(f, "format_version", H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT, &one);
    H5Aclose(a);
    a = H5Acreate2(f, "tokenizer_hash", H5T_STD_U64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_UINT64, &h);
    H5Aclose(a);
    a = H5Acreate2(f, "max_len", H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT, &ml);
    H5Aclose(a);
    a = H5Acreate2(f, "vocab_size", H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT, &vocab);
    H5Aclose(a);
    H5Sclose(s);
    H5Fclose(f);
}

static void test_write_read(void) {
    dms_err err = {0};
    char p1[128], p2[128], tmp[140];
    snprintf(p1, sizeof p1, "%s/shards/shard-00000.h5", dir);
    snprintf(p2, sizeof p2, "%s/shards/shard-00001.h5", dir);
    char sd[100];
    snprintf(sd, sizeof sd, "%s/shards", dir);
    mkdir(sd, 0755);

    /* shard 1: documents A B C (empty) D E with a loss mask */
    dms_shard_writer *w = dms_shard_writer_create(p1, HASH, 4, 100, "test docs", 1, &err);
    CHECK(w != NULL);
    const uint32_t A[] = {1, 2, 3}, B[] = {4, 5, 6, 7, 8}, C[] = {9, 10}, D[] = {11, 12, 13, 14, 15, 16}, E[] = {17, 18};
    const uint8_t mA[] = {0, 1, 1}, mC[] = {0, 0};
    CHECK(dms_shard_writer_add(w, A, mA, 3, &err) == 0);
    CHECK(dms_shard_writer_add(w, B, NULL, 5, &err) == 0);
    CHECK(dms_shard_writer_add(w, C, mC, 2, &err) == 0);
    CHECK(dms_shard_writer_add(w, NULL, NULL, 0, &err) == 0); /* empty document */
    CHECK(dms_shard_writer_add(w, D, NULL, 6, &err) == 0);
    CHECK(dms_shard_writer_add(w, E, NULL, 2, &err) == 0);
    const uint32_t bad[] = {5, 100};
    CHECK(dms_shard_writer_add(w, bad, NULL, 2, &err) == -1);
    CHECK_MSG(strstr(err.msg, "token id 100 >= vocab size 100") != NULL, "%s", err.msg);
    CHECK(dms_shard_writer_n_tokens(w) == 18);
    CHECK(dms_shard_writer_n_docs(w) == 6);
    CHECK_MSG(dms_shard_writer_close(w, &err) == 0, "%s", err.msg);
    snprintf(tmp, sizeof tmp, "%s.tmp", p1);
    CHECK(file_exists(p1) && !file_exists(tmp));

    /* shard 2: no loss mask */
    w = dms_shard_writer_create(p2, HASH, 4, 100, "more", 0, &err);
    uint32_t F[10];
    for (int i = 0; i < 10; i++) F[i] = 20 + (uint32_t)i;
    CHECK(dms_shard_writer_add(w, F, NULL, 10, &err) == 0);
    CHECK_MSG(dms_shard_writer_close(w, &err) == 0, "%s", err.msg);

    /* an empty writer refuses to write */
    char p3[140];
    snprintf(p3, sizeof p3, "%s/empty.h5", dir);
    w = dms_shard_writer_create(p3, HASH, 4, 100, "", 0, &err);
    CHECK(dms_shard_writer_close(w, &err) == -1 && !file_exists(p3));

    dms_shard *s = dms_shard_open(p1, HASH, &err);
    CHECK_MSG(s != NULL, "%s", err.msg);
    if (!s) return;
    CHECK(dms_shard_n_tokens(s) == 18);
    CHECK(dms_shard_n_docs(s) == 6);
    CHECK(dms_shard_n_rows(s) == 4);
    CHECK(dms_shard_max_len(s) == 4);
    CHECK(dms_shard_vocab_size(s) == 100);
    CHECK(dms_shard_tokenizer_hash(s) == HASH);
    CHECK(dms_shard_has_loss_mask(s));
    CHECK_STR(dms_shard_source(s), "test docs");

    uint32_t t[4];
    int32_t sg[4];
    uint8_t m[4];
    const uint32_t et[4][4] = {{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}, {13, 14, 15, 16}};
    const int32_t es[4][4] = {{0, 0, 0, 1}, {0, 0, 0, 0}, {0, 0, 1, 1}, {0, 0, 0, 0}};
    const uint8_t em[4][4] = {{0, 1, 1, 1}, {1, 1, 1, 1}, {0, 0, 1, 1}, {1, 1, 1, 1}};
    for (int r = 0; r < 4; r++) {
        CHECK_MSG(dms_shard_row(s, r, t, sg, m, &err) == 0, "%s", err.msg);
        CHECK_MSG(!memcmp(t, et[r], sizeof t), "row %d tokens %u %u %u %u", r, t[0], t[1], t[2], t[3]);
        CHECK_MSG(!memcmp(sg, es[r], sizeof sg), "row %d seg %d %d %d %d", r, sg[0], sg[1], sg[2], sg[3]);
        CHECK_MSG(!memcmp(m, em[r], sizeof m), "row %d mask %d %d %d %d", r, m[0], m[1], m[2], m[3]);
    }
    CHECK(dms_shard_row(s, 4, t, sg, m, &err) == -1); /* the partial tail is dropped */
    CHECK(strstr(err.msg, "out of range") && strstr(err.msg, p1));
    CHECK(dms_shard_row(s, 1, t, NULL, NULL, &err) == 0 && t[0] == 5);
    dms_shard_close(s);

    /* no /loss_mask: all ones */
    s = dms_shard_open(p2, HASH, &err);
    CHECK_MSG(s != NULL, "%s", err.msg);
    if (s) {
        memset(m, 7, sizeof m);
        CHECK(!dms_shard_has_loss_mask(s));
        CHECK(dms_shard_row(s, 1, t, sg, m, &err) == 0);
        CHECK(t[0] == 24 && t[3] == 27 && sg[0] == 0 && sg[3] == 0 && m[0] == 1 && m[3] == 1);
        dms_shard_close(s);
    }

    /* dataset over both, global rows in name order */
    dms_dataset *ds = dms_dataset_open(sd, HASH, 4, &err);
    CHECK_MSG(ds != NULL, "%s", err.msg);
    if (ds) {
        CHECK(dms_dataset_n_shards(ds) == 2);
        CHECK(dms_dataset_n_rows(ds) == 6);
        CHECK(dms_dataset_n_tokens(ds) == 24);
        CHECK(dms_dataset_row(ds, 2, t, sg, m, &err) == 0 && t[0] == 9 && sg[2] == 1 && m[1] == 0);
        CHECK(dms_dataset_row(ds, 4, t, sg, m, &err) == 0 && t[0] == 20 && t[3] == 23 && m[0] == 1);
        CHECK(dms_dataset_row(ds, 5, t, sg, m, &err) == 0 && t[0] == 24);
        CHECK(dms_dataset_row(ds, 6, t, sg, m, &err) == -1);
        CHECK(dms_dataset_row(ds, -1, t, sg, m, &err) == -1);
        dms_dataset_close(ds);
    }
    /* a single file is a dataset too */
    ds = dms_dataset_open(p2, HASH, 4, &err);
    CHECK(ds && dms_dataset_n_rows(ds) == 2);
    dms_dataset_close(ds);

    /* another tokenizer is refused, naming both hashes */
    s = dms_shard_open(p1, OTHER, &err);
    CHECK(s == NULL);
    CHECK_MSG(strstr(err.msg, p1) && strstr(err.msg, "made by tokenizer 0x1234567890abcdef") &&
                  strstr(err.msg, "model's tokenizer is 0xabcdef0011223344") && strstr(err.msg, "re-run dms prep") &&
                  one_line(err.msg),
              "%s", err.msg);
    ds = dms_dataset_open(sd, OTHER, 4, &err);
    CHECK(ds == NULL && strstr(err.msg, "made by tokenizer"));
    /* hash 0 accepts any */
    s = dms_shard_open(p1, 0, &err);
    CHECK(s != NULL);
    dms_shard_close(s);
    /* a run with another max_len is refused */
    ds = dms_dataset_open(sd, HASH, 8, &err);
    CHECK_MSG(ds == NULL && strstr(err.msg, "max_len 4") && strstr(err.msg, "--max-len 8") && one_line(err.msg), "%s",
              err.msg);
    /* too few tokens for one row */
    char p4[140];
    snprintf(p4, sizeof p4, "%s/tiny.h5", dir);
    w = dms_shard_writer_create(p4, HASH, 4, 100, "", 0, &err);
    CHECK(dms_shard_writer_add(w, A, NULL, 3, &err) == 0);
    CHECK(dms_shard_writer_close(w, &err) == 0);
    ds = dms_dataset_open(p4, HASH, 4, &err);
    CHECK_MSG(ds == NULL && strstr(err.msg, "no full row of 4 tokens"), "%s", err.msg);

    /* truncated copy and a foreign file */
    char pt[140], pg[140];
    snprintf(pt, sizeof pt, "%s/trunc.h5", dir);
    copy_truncated(p1, pt, file_size(p1) / 2);
    s = dms_shard_open(pt, HASH, &err);
    CHECK_MSG(s == NULL && strstr(err.msg, pt) && one_line(err.msg), "%s", err.msg);
    printf("truncated: %s\n", err.msg);
    copy_truncated(p1, pt, 100);
    s = dms_shard_open(pt, HASH, &err);
    CHECK_MSG(s == NULL && strstr(err.msg, pt) && one_line(err.msg), "%s", err.msg);
    snprintf(pg, sizeof pg, "%s/garbage.h5", dir);
    FILE *g = fopen(pg, "w");
    fputs("{\"text\": \"not hdf5\"}\n", g);
    fclose(g);
    s = dms_shard_open(pg, HASH, &err);
    CHECK_MSG(s == NULL && strstr(err.msg, pg) && strstr(err.msg, "not an HDF5 file") && one_line(err.msg), "%s",
              err.msg);
    snprintf(pg, sizeof pg, "%s/missing.h5", dir);
    s = dms_shard_open(pg, HASH, &err);
    CHECK_MSG(s == NULL && strstr(err.msg, pg) && strstr(err.msg, "No such file"), "%s", err.msg);
    /* an empty folder */
    char ed[100];
    snprintf(ed, sizeof ed, "%s/none", dir);
    mkdir(ed, 0755);
    ds = dms_dataset_open(ed, HASH, 4, &err);
    CHECK_MSG(ds == NULL && strstr(err.msg, "no *.h5 token shards"), "%s", err.msg);
}

static void test_broken(void) {
    dms_err err = {0};
    char p[140];
    const uint32_t tok[6] = {1, 2, 3, 4, 5, 6};
    struct {
        const char *name;
        uint64_t off[4];
        hsize_t n_off;
        const char *format;
        int vocab;
        const char *expect;
    } cases[] = {
        {"nonmono", {0, 4, 2, 6}, 4, "dms-tokens", 100, "doc_offsets not monotonic at document 1"},
        {"short", {0, 2, 5, 0}, 3, "dms-tokens", 100, "doc_offsets end at 5 but /tokens holds 6 tokens"},
        {"start", {1, 2, 6, 0}, 3, "dms-tokens", 100, "doc_offsets[0] is 1"},
        {"oneoff", {0, 0, 0, 0}, 1, "dms-tokens", 100, "needs at least 2"},
        {"vocab", {0, 3, 6, 0}, 3, "dms-tokens", 5, "token 4 has id 5 >= vocab_size 5"},
        {"format", {0, 3, 6, 0}, 3, "something-else", 100, "format is 'something-else'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(p, sizeof p, "%s/%s.h5", dir, cases[i].name);
        raw_shard(p, tok, 6, cases[i].off, cases[i].n_off, cases[i].format, cases[i].vocab);
        dms_shard *s = dms_shard_open(p, HASH, &err);
        CHECK_MSG(s == NULL && strstr(err.msg, p) && strstr(err.msg, cases[i].expect) && one_line(err.msg),
                  "%s: %s", cases[i].name, err.msg);
        dms_shard_close(s);
    }
    /* the same writer by hand, but valid, opens */
    snprintf(p, sizeof p, "%s/ok.h5", dir);
    const uint64_t off[3] = {0, 3, 6};
    raw_shard(p, tok, 6, off, 3, "dms-tokens", 100);
    dms_shard *s = dms_shard_open(p, HASH, &err);
    CHECK_MSG(s != NULL, "%s", err.msg);
    dms_shard_close(s);
}

/* A shard whose /tokens (n_tok) and /doc_offsets (n_off) are declared with
 * those lengths; a dataset longer than 4096 is chunked and never written
 * (what a read then sees are fill values: nothing of it is in the file).
 * Its rows are max_len tokens. */
static void declared_shard(const char *path, hsize_t n_tok, hsize_t n_off, int max_len) {
    static const uint32_t tok[6] = {1, 2, 3, 4, 5, 6};
    static const uint64_t off[2] = {0, 6};
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const char *names[2] = {"tokens", "doc_offsets"};
    const hsize_t n[2] = {n_tok, n_off};
    const hid_t ft[2] = {H5T_STD_U32LE, H5T_STD_U64LE}, mt[2] = {H5T_NATIVE_UINT32, H5T_NATIVE_UINT64};
    const void *data[2] = {tok, off};
    for (int i = 0; i < 2; i++) {
        hid_t sp = H5Screate_simple(1, &n[i], NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
        hsize_t chunk = 1024;
        if (n[i] > 4096) H5Pset_chunk(dcpl, 1, &chunk);
        hid_t d = H5Dcreate2(f, names[i], ft[i], sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (n[i] <= 4096) H5Dwrite(d, mt[i], H5S_ALL, H5S_ALL, H5P_DEFAULT, data[i]);
        H5Dclose(d);
        H5Pclose(dcpl);
        H5Sclose(sp);
    }
    hid_t s = H5Screate(H5S_SCALAR), t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(DMS_SHARD_FORMAT) + 1);
    hid_t a = H5Acreate2(f, "format", t, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, DMS_SHARD_FORMAT);
    H5Aclose(a);
    H5Tclose(t);
    const int one = 1, ml = max_len, vocab = 100;
    const uint64_t h = HASH;
    const char *ints[3] = {"format_version", "max_len", "vocab_size"};
    const int *iv[3] = {&one, &ml, &vocab};
    for (int i = 0; i < 3; i++) {
        a = H5Acreate2(f, ints[i], H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, H5T_NATIVE_INT, iv[i]);
        H5Aclose(a);
    }
    a = H5Acreate2(f, "tokenizer_hash", H5T_STD_U64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_UINT64, &h);
    H5Aclose(a);
    H5Sclose(s);
    H5Fclose(f);
}

/* The limits of docs/fuzzing.md: a dataset may declare at most 1024 times
 * the file's size (a few-KB file declaring 2^32 tokens was scanned for
 * minutes; one declaring 2^24 document offsets was read whole into memory),
 * and token ids must be below the model's vocabulary when a run reads them
 * (a shard whose own vocab_size is larger, under the model's tokenizer hash,
 * is stopped by the trainer). */
static void test_limits(void) {
    dms_err err = {0};
    char p[200];
    snprintf(p, sizeof p, "%s/declared.h5", dir);
    declared_shard(p, 6, 2, 4);
    dms_shard *s = dms_shard_open(p, HASH, &err);
    CHECK_MSG(s != NULL, "baseline: %s", err.msg);
    dms_shard_close(s);
    declared_shard(p, (hsize_t)1 << 32, 2, 4);
    s = dms_shard_open(p, HASH, &err);
    CHECK_MSG(s == NULL && strstr(err.msg, p) && strstr(err.msg, "/tokens declares 4294967296 entries of 4 bytes") &&
                  one_line(err.msg), "2^32 tokens: %s", err.msg);
    dms_shard_close(s);
    declared_shard(p, 6, (hsize_t)1 << 24, 4);
    s = dms_shard_open(p, HASH, &err);
    CHECK_MSG(s == NULL && strstr(err.msg, "/doc_offsets declares 16777216 entries of 8 bytes"), "2^24 offsets: %s",
              err.msg);
    dms_shard_close(s);

    /* a row longer than DMS_SHARD_MAX_LEN is refused before anything holds
     * it (fuzzing: max_len 1036288000 over a sparse 2^30-entry /tokens made
     * every reader allocate 4 GB for one row) */
    declared_shard(p, 6, 2, DMS_SHARD_MAX_LEN + 1);
    s = dms_shard_open(p, HASH, &err);
    char want_len[96];
    snprintf(want_len, sizeof want_len, "max_len %d is over the %d tokens", DMS_SHARD_MAX_LEN + 1, DMS_SHARD_MAX_LEN);
    CHECK_MSG(s == NULL && strstr(err.msg, p) && strstr(err.msg, want_len) && one_line(err.msg), "max_len: %s",
              err.msg);
    dms_shard_close(s);
    declared_shard(p, 6, 2, 2); /* the same file with rows of 2 tokens opens */
    s = dms_shard_open(p, HASH, &err);
    CHECK_MSG(s != NULL && dms_shard_n_rows(s) == 3, "max_len 2: %s", err.msg);
    dms_shard_close(s);

    /* ids from a shard beyond the model's vocabulary stop `dms train` */
    const char *model = "tests/fixtures/export/tiny_llama.gguf";
    dms_model m;
    if (dms_model_load(&m, model, &dms_cpu_ops, DMS_LOAD_TOKENIZER, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    char data[128], cfg[160], out[160], log[160];
    snprintf(data, sizeof data, "%s/bigvocab", dir);
    snprintf(cfg, sizeof cfg, "%s/bigvocab.json", dir);
    snprintf(out, sizeof out, "%s/bigvocab-run", dir);
    snprintf(log, sizeof log, "%s/bigvocab.log", dir);
    mkdir(data, 0755);
    snprintf(p, sizeof p, "%s/shard-00000.h5", data);
    const int V = m.cfg.vocab;
    dms_shard_writer *w = dms_shard_writer_create(p, dms_tokenizer_hash(m.tok), 32, V + 100, "big vocab", 0, &err);
    CHECK_MSG(w != NULL, "%s", err.msg);
    uint32_t ids[64];
    for (int i = 0; i < 64; i++) ids[i] = (uint32_t)(i * 7 % V);
    ids[40] = (uint32_t)V + 5; /* in row 1 */
    CHECK_MSG(w && dms_shard_writer_add(w, ids, NULL, 64, &err) == 0 && dms_shard_writer_close(w, &err) == 0, "%s",
              err.msg);
    dms_model_free(&m);
    FILE *f = fopen(cfg, "w");
    if (f) {
        fprintf(f, "{\"model\": \"%s\", \"data\": \"%s\", \"output\": \"%s\", \"steps\": 2, \"batch_size\": 2, "
                   "\"max_len\": 32, \"window\": 4, \"threads\": 1}\n", model, data, out);
        fclose(f);
    }
    char cmd[800];
    snprintf(cmd, sizeof cmd, "'%s' train --config '%s' >/dev/null 2>'%s'", DMS_BINARY, cfg, log);
    const int rc = system(cmd);
    size_t n = 0;
    char *text = dms_read_text_file(log, &n, &err);
    char want[64], want2[64];
    snprintf(want, sizeof want, "token id %d at position", V + 5);
    snprintf(want2, sizeof want2, "is outside the vocabulary (%d)", V);
    CHECK_MSG(rc != 0 && text && strstr(text, want) && strstr(text, want2),
              "train on ids beyond the vocabulary: rc %d: %s", rc, text ? text : err.msg);
    free(text);
}

/* dms prep's library entry on the embedded model: the three line kinds,
 * BOS/EOS, and --mask-prompt stopping right after the assistant header. */
static void test_prep(void) {
    const char *model = "models/default.gguf";
    if (!file_exists(model)) {
        CHECK_MSG(0, "%s missing: run scripts/install_deps.sh", model);
        return;
    }
    dms_err err = {0};
    dms_model m;
    if (dms_model_load(&m, model, &dms_cpu_ops, DMS_LOAD_TOKENIZER, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    const dms_tokenizer *tok = m.tok;
    dms_prep_doc d = {0};
    int fatal = 0;
    const int32_t eos = dms_tokenizer_eos(tok);

    const char *l1 = "{\"text\": \"Hello world\"}";
    CHECK_MSG(dms_prep_encode_line(tok, l1, strlen(l1), 1, &d, &fatal, &err) == 0, "%s", err.msg);
    char *s = dms_tokenizer_decode(tok, (const int32_t *)d.ids, d.n, 0);
    CHECK_MSG(d.n >= 3 && (int32_t)d.ids[d.n - 1] == eos && strstr(s, "Hello world"), "%s", s);
    free(s);
    for (size_t i = 0; i < d.n; i++) CHECK(d.mask[i] == 1);

    const char *l2 = "{\"messages\": [{\"role\": \"user\", \"content\": \"What is 2+2?\"}, "
                     "{\"role\": \"assistant\", \"content\": \"4\"}, {\"role\": \"user\", \"content\": \"And 3+3?\"}, "
                     "{\"role\": \"assistant\", \"content\": \"6, since 3+3=6.\"}]}";
    CHECK_MSG(dms_prep_encode_line(tok, l2, strlen(l2), 1, &d, &fatal, &err) == 0, "%s", err.msg);
    size_t k = 0;
    while (k < d.n && d.mask[k] == 0) k++;
    for (size_t i = k; i < d.n; i++) CHECK(d.mask[i] == 1);
    char *prompt = dms_tokenizer_decode(tok, (const int32_t *)d.ids, k, 0);
    char *answer = dms_tokenizer_decode(tok, (const int32_t *)d.ids + k, d.n - k, 0);
    size_t pl = strlen(prompt);
    const char *hdr = "<|im_start|>assistant\n";
    CHECK_MSG(pl >= strlen(hdr) && !strcmp(prompt + pl - strlen(hdr), hdr) && strstr(prompt, "And 3+3?"),
              "prompt part: [%s]", prompt);
    CHECK_MSG(!strncmp(answer, "6, since 3+3=6.<|im_end|>", 24), "answer part: [%s]", answer);
    free(prompt);
    free(answer);

    const char *l3 = "{\"prompt\": \"Name a colour.\", \"response\": \"Blue.\"}";
    CHECK_MSG(dms_prep_encode_line(tok, l3, strlen(l3), 0, &d, &fatal, &err) == 0, "%s", err.msg);
    for (size_t i = 0; i < d.n; i++) CHECK(d.mask[i] == 1);
    s = dms_tokenizer_decode(tok, (const int32_t *)d.ids, d.n, 0);
    CHECK_MSG(strstr(s, "<|im_start|>user\nName a colour.<|im_end|>") &&
                  strstr(s, "<|im_start|>assistant\nBlue.<|im_end|>"),
              "%s", s);
    free(s);

    const char *bad[][2] = {
        {"{\"text\": 5}", "'text' must be a string"},
        {"{not json", "not valid JSON"},
        {"{\"text\": \"a\"} {\"text\": \"b\"}", "text after the value"},
        {"[1, 2]", "expected a JSON object"},
        {"{\"title\": \"x\"}", "no 'messages'"},
        {"{\"prompt\": \"x\"}", "'prompt' and 'response' must both be strings"},
        {"{\"messages\": []}", "non-empty array"},
        {"{\"messages\": [{\"role\": \"user\"}]}", "messages[0]"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", "no assistant message"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = dms_prep_encode_line(tok, bad[i][0], strlen(bad[i][0]), 1, &d, &fatal, &err);
        CHECK_MSG(rc == -1 && strstr(err.msg, bad[i][1]) && !fatal && one_line(err.msg), "%s -> %s", bad[i][0],
                  err.msg);
    }
    dms_prep_doc_free(&d);

    /* the whole run: shards readable with the model's hash, counts right */
    char in[140], out[140];
    snprintf(in, sizeof in, "%s/in.jsonl", dir);
    snprintf(out, sizeof out, "%s/prep", dir);
    FILE *f = fopen(in, "w");
    fprintf(f, "%s\n\n%s\n%s\n{\"text\": 5}\n", l1, l2, l3);
    fclose(f);
    const char *inputs[1] = {in};
    dms_prep_opts o;
    dms_prep_opts_default(&o);
    o.model = model;
    o.inputs = inputs;
    o.n_inputs = 1;
    o.output = out;
    o.max_len = 8;
    o.mask_prompt = 1;
    o.shard_tokens = 20; /* forces several shards */
    dms_prep_stats st;
    CHECK(dms_prep_run(&o, &st, &err) == -1);
    CHECK_MSG(strstr(err.msg, "in.jsonl:5: 'text' must be a string") && one_line(err.msg), "%s", err.msg);
    o.skip_bad = 1;
    CHECK_MSG(dms_prep_run(&o, &st, &err) == 0, "%s", err.msg);
    CHECK(st.documents == 3 && st.skipped == 1 && st.lines == 5 && st.shards >= 2);
    CHECK(st.tokenizer_hash == dms_tokenizer_hash(tok));
    dms_dataset *ds = dms_dataset_open(out, dms_tokenizer_hash(tok), 8, &err);
    CHECK_MSG(ds != NULL, "%s", err.msg);
    if (ds) {
        CHECK(dms_dataset_n_rows(ds) == st.rows);
        CHECK(dms_dataset_n_shards(ds) == st.shards);
        int64_t total = 0;
        for (int i = 0; i < dms_dataset_n_shards(ds); i++) total += dms_shard_n_tokens(dms_dataset_shard(ds, i));
        CHECK(total == st.tokens);
        CHECK(dms_shard_has_loss_mask(dms_dataset_shard(ds, 0)));
        dms_dataset_close(ds);
    }
    char pj[160];
    snprintf(pj, sizeof pj, "%s/prep.json", out);
    CHECK(file_exists(pj));
    /* a rerun with fewer shards removes the stale ones */
    o.shard_tokens = 1000000;
    CHECK_MSG(dms_prep_run(&o, &st, &err) == 0, "%s", err.msg);
    CHECK(st.shards == 1);
    char p1[160];
    snprintf(p1, sizeof p1, "%s/shard-00001.h5", out);
    CHECK(!file_exists(p1));
    /* the limit */
    o.limit = 1;
    CHECK(dms_prep_run(&o, &st, &err) == 0 && st.documents == 1);
    dms_model_free(&m);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/dms-shards-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_write_read();
    test_broken();
    test_limits();
    test_prep();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return dms_check_finish();
}
