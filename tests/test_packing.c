/* test_packing.c - the two packings (data/pack.h) from documents to the
 * rows the trainer reads: token ids, segment ids and the first segment's
 * position (pos0) of every row, the overflow that `reference` drops, the
 * tokens each packing keeps (counted for both whichever is written), whole
 * reference rows across shard boundaries, old (version 1) shards still
 * read as documents, the writer's and the dataset's refusals, and `dms
 * prep --packing` on the embedded model (summary numbers and prep.json). */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fs.h"
#include "core/mapped_file.h"
#include "data/pack.h"
#include "data/prep.h"
#include "data/shards.h"
#include "tests/check.h"

#define T 8
#define HASH 0x0123456789abcdefULL
#define VOCAB 5000

static char root[64];

/* Document d has n tokens with ids 100 * d + i. */
static void doc_ids(int d, int n, uint32_t *out) {
    for (int i = 0; i < n; i++) out[i] = (uint32_t)(100 * d + i);
}

/* Packs documents of the given lengths into DIR; returns the stats. */
static int pack(const char *dir, dms_packing mode, const int *lens, int n_docs, int64_t shard_tokens,
                dms_pack_stats *st) {
    dms_err err = {0};
    if (dms_mkdir_p(dir, &err) != 0) return -1;
    const dms_packer_opts o = {.packing = mode, .max_len = T, .shard_tokens = shard_tokens, .dir = dir,
                               .tokenizer_hash = HASH, .vocab_size = VOCAB, .source = "test",
                               .with_loss_mask = 1};
    dms_packer *p = dms_packer_create(&o, &err);
    CHECK_MSG(p != NULL, "%s", err.msg);
    if (!p) return -1;
    uint32_t ids[64];
    uint8_t mask[64];
    for (int d = 0; d < n_docs; d++) {
        doc_ids(d, lens[d], ids);
        for (int i = 0; i < lens[d]; i++) mask[i] = (uint8_t)(i % 2); /* a pattern to follow through */
        if (dms_packer_add(p, ids, mask, (size_t)lens[d], &err) != 0) {
            CHECK_MSG(0, "%s", err.msg);
            dms_packer_abort(p);
            return -1;
        }
    }
    int rc = dms_packer_finish(p, st, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    return rc;
}

/* One expected row: token (doc, index) pairs, segment ids, pos0. */
typedef struct {
    int doc[T], idx[T], seg[T], pos0;
} want_row;

static void check_row(dms_dataset *ds, int64_t r, const want_row *w, const char *what) {
    uint32_t tok[T];
    int32_t seg[T];
    uint8_t mask[T];
    dms_err err = {0};
    CHECK_MSG(dms_dataset_row(ds, r, tok, seg, mask, &err) == 0, "%s", err.msg);
    int ok = 1;
    for (int t = 0; t < T; t++)
        ok &= tok[t] == (uint32_t)(100 * w->doc[t] + w->idx[t]) && seg[t] == w->seg[t] && mask[t] == w->idx[t] % 2;
    CHECK_MSG(ok, "%s row %lld: tokens, segments or mask differ", what, (long long)r);
    if (!ok)
        for (int t = 0; t < T; t++)
            fprintf(stderr, "  t=%d tok %u (want %d) seg %d (want %d)\n", t, tok[t], 100 * w->doc[t] + w->idx[t],
                    seg[t], w->seg[t]);
    CHECK_MSG(dms_dataset_row_pos0(ds, r) == w->pos0, "%s row %lld: pos0 %d, want %d", what, (long long)r,
              dms_dataset_row_pos0(ds, r), w->pos0);
}

static dms_dataset *open_ds(const char *dir) {
    dms_err err = {0};
    dms_dataset *ds = dms_dataset_open(dir, HASH, T, &err);
    CHECK_MSG(ds != NULL, "%s", err.msg);
    return ds;
}

static void test_documents(void) {
    /* 5 + 12 + 3 + 9 = 29 tokens: 3 rows of 8, the last 5 tokens dropped */
    const int lens[] = {5, 12, 3, 9};
    char dir[128];
    snprintf(dir, sizeof dir, "%s/documents", root);
    dms_pack_stats st;
    if (pack(dir, DMS_PACK_DOCUMENTS, lens, 4, 1000, &st) != 0) return;
    CHECK(st.documents == 4 && st.tokens == 29 && st.rows == 3 && st.shards == 1);
    CHECK(st.kept[DMS_PACK_DOCUMENTS] == 24 && st.kept_rows[DMS_PACK_DOCUMENTS] == 3);
    /* reference would keep: [5 + 3 of 12] and [3 + 5 of 9]: 2 rows */
    CHECK(st.kept[DMS_PACK_REFERENCE] == 16 && st.kept_rows[DMS_PACK_REFERENCE] == 2);
    dms_dataset *ds = open_ds(dir);
    if (!ds) return;
    CHECK(dms_dataset_packing(ds) == DMS_PACK_DOCUMENTS && dms_dataset_n_rows(ds) == 3);
    const want_row rows[3] = {
        /* doc 0 whole, then the start of doc 1 */
        {{0, 0, 0, 0, 0, 1, 1, 1}, {0, 1, 2, 3, 4, 0, 1, 2}, {0, 0, 0, 0, 0, 1, 1, 1}, 0},
        /* doc 1 goes on: one segment at its true positions 3..10, never 0 */
        {{1, 1, 1, 1, 1, 1, 1, 1}, {3, 4, 5, 6, 7, 8, 9, 10}, {0, 0, 0, 0, 0, 0, 0, 0}, 3},
        /* the last token of doc 1 (position 11), doc 2, the start of doc 3 */
        {{1, 2, 2, 2, 3, 3, 3, 3}, {11, 0, 1, 2, 0, 1, 2, 3}, {0, 1, 1, 1, 2, 2, 2, 2}, 11},
    };
    for (int r = 0; r < 3; r++) check_row(ds, r, &rows[r], "documents");
    dms_dataset_close(ds);
}

static void test_reference(void) {
    /* row 0: doc 0 (5) + 3 of doc 1 (9 dropped); row 1: doc 2 (3) + 5 of doc 3
     * (4 dropped); row 2: doc 4 fills it exactly; row 3: 8 of doc 5 (20
     * tokens: 12 dropped); doc 6 (4) is an unfinished row: dropped */
    const int lens[] = {5, 12, 3, 9, 8, 20, 4};
    char dir[128];
    snprintf(dir, sizeof dir, "%s/reference", root);
    dms_pack_stats st;
    if (pack(dir, DMS_PACK_REFERENCE, lens, 7, 1000, &st) != 0) return;
    CHECK(st.documents == 7 && st.tokens == 61 && st.rows == 4 && st.shards == 1);
    CHECK(st.kept[DMS_PACK_REFERENCE] == 32 && st.kept_rows[DMS_PACK_REFERENCE] == 4);
    CHECK(st.kept[DMS_PACK_DOCUMENTS] == 56); /* 61 tokens in one shard: 7 rows */
    dms_dataset *ds = open_ds(dir);
    if (!ds) return;
    CHECK(dms_dataset_packing(ds) == DMS_PACK_REFERENCE && dms_dataset_n_rows(ds) == 4);
    const want_row rows[4] = {
        /* one segment per row (no document mask), every row at a document start */
        {{0, 0, 0, 0, 0, 1, 1, 1}, {0, 1, 2, 3, 4, 0, 1, 2}, {0}, 0},
        {{2, 2, 2, 3, 3, 3, 3, 3}, {0, 1, 2, 0, 1, 2, 3, 4}, {0}, 0},
        {{4, 4, 4, 4, 4, 4, 4, 4}, {0, 1, 2, 3, 4, 5, 6, 7}, {0}, 0},
        {{5, 5, 5, 5, 5, 5, 5, 5}, {0, 1, 2, 3, 4, 5, 6, 7}, {0}, 0},
    };
    for (int r = 0; r < 4; r++) check_row(ds, r, &rows[r], "reference");
    dms_dataset_close(ds);

    /* the same documents in documents packing: each mode counts the other the same */
    snprintf(dir, sizeof dir, "%s/reference-as-documents", root);
    dms_pack_stats st2;
    if (pack(dir, DMS_PACK_DOCUMENTS, lens, 7, 1000, &st2) != 0) return;
    CHECK(st2.kept[0] == st.kept[0] && st2.kept[1] == st.kept[1] && st2.rows * T == st2.kept[DMS_PACK_DOCUMENTS]);

    /* small shards: a reference shard always ends at a row end */
    snprintf(dir, sizeof dir, "%s/reference-shards", root);
    if (pack(dir, DMS_PACK_REFERENCE, lens, 7, 10, &st2) != 0) return;
    CHECK(st2.rows == 4 && st2.shards == 2 && st2.kept[DMS_PACK_REFERENCE] == 32);
    ds = open_ds(dir);
    if (!ds) return;
    CHECK(dms_dataset_n_shards(ds) == 2 && dms_dataset_n_rows(ds) == 4);
    for (int r = 0; r < 4; r++) check_row(ds, r, &rows[r], "reference, 2 shards");
    dms_dataset_close(ds);
    /* documents with small shards: each shard's partial row is dropped */
    snprintf(dir, sizeof dir, "%s/documents-shards", root);
    if (pack(dir, DMS_PACK_DOCUMENTS, lens, 7, 10, &st2) != 0) return;
    /* shards close at 10 tokens or more: 5+12, 3+9, 8+20, 4 -> 2 + 1 + 3 + 0 rows */
    CHECK(st2.shards == 4 && st2.rows == 6 && st2.kept[DMS_PACK_DOCUMENTS] == 48);
    CHECK(st2.kept[DMS_PACK_REFERENCE] == 32);
}

/* A documents shard made as version 1 (no packing attribute) is still read,
 * as documents, with pos0 from its offsets. */
static void test_version1(void) {
    const int lens[] = {3, 10};
    char dir[128], path[192];
    snprintf(dir, sizeof dir, "%s/v1", root);
    dms_pack_stats st;
    if (pack(dir, DMS_PACK_DOCUMENTS, lens, 2, 1000, &st) != 0) return;
    snprintf(path, sizeof path, "%s/shard-00000.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(f >= 0);
    int one = 1;
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, H5T_NATIVE_INT, &one) >= 0);
    H5Aclose(a);
    CHECK(H5Adelete(f, "packing") >= 0);
    H5Fclose(f);
    dms_dataset *ds = open_ds(dir);
    if (!ds) return;
    CHECK(dms_dataset_packing(ds) == DMS_PACK_DOCUMENTS && dms_dataset_n_rows(ds) == 1);
    const want_row r0 = {{0, 0, 0, 1, 1, 1, 1, 1}, {0, 1, 2, 0, 1, 2, 3, 4}, {0, 0, 0, 1, 1, 1, 1, 1}, 0};
    check_row(ds, 0, &r0, "version 1");
    dms_dataset_close(ds);
    /* a version 2 shard must say how it was packed */
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    int two = 2;
    a = H5Aopen(f, "format_version", H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT, &two);
    H5Aclose(a);
    H5Fclose(f);
    dms_err err = {0};
    dms_shard *s = dms_shard_open(path, HASH, &err);
    CHECK(s == NULL && strstr(err.msg, "missing 'packing' attribute") != NULL);
    dms_shard_close(s);
}

static void test_refusals(void) {
    dms_err err = {0};
    char path[192];
    /* a reference shard whose second row starts inside a document */
    snprintf(path, sizeof path, "%s/bad-reference.h5", root);
    dms_shard_writer *w = dms_shard_writer_create(path, HASH, T, VOCAB, "test", 0, &err);
    CHECK(w != NULL);
    if (w) {
        dms_shard_writer_set_packing(w, DMS_PACK_REFERENCE);
        uint32_t ids[16];
        doc_ids(0, 16, ids);
        CHECK(dms_shard_writer_add(w, ids, NULL, 4, &err) == 0);
        CHECK(dms_shard_writer_add(w, ids, NULL, 12, &err) == 0);
        CHECK(dms_shard_writer_close(w, &err) != 0);
        CHECK(strstr(err.msg, "reference packing needs whole rows of 8 tokens, each starting a document") != NULL);
        CHECK(access(path, F_OK) != 0);
    }
    /* one dataset, one packing */
    char mixed[128], cmd[1024];
    snprintf(mixed, sizeof mixed, "%s/mixed", root);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s/documents/shard-00000.h5 %s/a.h5 && cp %s/reference/shard-00000.h5 %s/b.h5",
             mixed, root, mixed, root, mixed);
    CHECK(system(cmd) == 0);
    dms_dataset *ds = dms_dataset_open(mixed, HASH, T, &err);
    CHECK(ds == NULL && strstr(err.msg, "packed as reference but") && strstr(err.msg, "was packed as documents"));
    dms_dataset_close(ds);
    dms_packing p;
    CHECK(dms_packing_from_name("reference", &p) == 0 && p == DMS_PACK_REFERENCE);
    CHECK(dms_packing_from_name("documents", &p) == 0 && p == DMS_PACK_DOCUMENTS);
    CHECK(dms_packing_from_name("stream", &p) != 0);
}

/* dms prep's library entry on the embedded model, both packings. */
static void test_prep(void) {
    const char *model = getenv("DMS_DEFAULT_GGUF");
    if (!model || !*model) model = "models/default.gguf";
    char in[128], out[2][128];
    snprintf(in, sizeof in, "%s/corpus.jsonl", root);
    FILE *f = fopen(in, "w");
    for (int i = 0; i < 40; i++)
        fprintf(f, "{\"text\": \"Document %d. %s\"}\n", i,
                i % 3 ? "Short." : "A longer one, that goes on for a while so that it crosses a row boundary or two.");
    fclose(f);
    dms_prep_stats st[2];
    for (int k = 0; k < 2; k++) {
        dms_prep_opts o;
        dms_prep_opts_default(&o);
        snprintf(out[k], sizeof out[k], "%s/prep-%d", root, k);
        const char *inputs[1] = {in};
        o.model = model;
        o.inputs = inputs;
        o.n_inputs = 1;
        o.output = out[k];
        o.max_len = 16;
        o.packing = (dms_packing)k;
        dms_err err = {0};
        CHECK_MSG(dms_prep_run(&o, &st[k], &err) == 0, "%s (the embedded model: scripts/install_deps.sh)", err.msg);
    }
    CHECK(st[0].tokens == st[1].tokens && st[0].tokens > 16 * 10);
    /* both runs count both packings the same, and each keeps what it counts */
    CHECK(st[0].kept[0] == st[1].kept[0] && st[0].kept[1] == st[1].kept[1]);
    CHECK(st[0].rows * 16 == st[0].kept[DMS_PACK_DOCUMENTS] && st[1].rows * 16 == st[1].kept[DMS_PACK_REFERENCE]);
    CHECK(st[1].kept[DMS_PACK_REFERENCE] < st[0].kept[DMS_PACK_DOCUMENTS]); /* reference drops overflow */
    char pj[192];
    snprintf(pj, sizeof pj, "%s/prep.json", out[1]);
    dms_err err = {0};
    char *text = dms_read_text_file(pj, NULL, &err);
    CHECK_MSG(text != NULL, "%s", err.msg);
    if (text) {
        char want[128];
        CHECK(strstr(text, "\"packing\":\t\"reference\"") != NULL);
        snprintf(want, sizeof want, "\"reference\":\t%lld", (long long)st[1].kept[DMS_PACK_REFERENCE]);
        CHECK_MSG(strstr(text, want) != NULL, "%s not in prep.json", want);
        snprintf(want, sizeof want, "\"documents\":\t%lld", (long long)st[1].kept[DMS_PACK_DOCUMENTS]);
        CHECK_MSG(strstr(text, want) != NULL, "%s not in prep.json", want);
        free(text);
    }
    dms_dataset *ds = dms_dataset_open(out[1], 0, 16, &err);
    CHECK_MSG(ds && dms_dataset_packing(ds) == DMS_PACK_REFERENCE && dms_dataset_n_rows(ds) == st[1].rows, "%s",
              ds ? "wrong dataset" : err.msg);
    dms_dataset_close(ds);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/dms_test_packing_XXXXXX");
    if (!mkdtemp(root)) {
        fprintf(stderr, "mkdtemp failed\n");
        return 1;
    }
    test_documents();
    test_reference();
    test_version1();
    test_refusals();
    test_prep();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", root);
    return dms_check_finish();
}
