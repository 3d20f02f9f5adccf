/* shard.c (fuzz target) - HDF5 token shards (dms_shard_open, dms_shard_row,
 * dms_dataset_open, data/shards.c): attributes (format, version, tokenizer
 * hash, max_len, vocab_size, source), dataset types and sizes, document
 * offsets, token ids below vocab_size, the loss mask, and packed rows with
 * their segment ids. Shards are files that training trusts for hours; a
 * damaged or foreign one must be refused at open with one line naming it.
 * The input is a recipe (fuzz/fuzz_h5.h) for the attributes format,
 * format_version, packing, tokenizer_hash, max_len, vocab_size, source and
 * the datasets tokens, doc_offsets, loss_mask of a well-formed HDF5 file. */
#include <limits.h>
#include <stdlib.h>

#include "data/shards.h"
#include "fuzz/fuzz_common.h"
#include "fuzz/fuzz_h5.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[PATH_MAX];
    fuzz_rd r = {data, data + size};
    hid_t f = fuzz_h5_create("shard.h5", path, sizeof path);
    static const char *const attrs[] = {"format", "format_version", "packing", "tokenizer_hash",
                                        "max_len", "vocab_size", "source"};
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) fuzz_h5_attr(f, NULL, attrs[i], &r);
    fuzz_h5_dataset(f, "tokens", &r);
    fuzz_h5_dataset(f, "doc_offsets", &r);
    fuzz_h5_dataset(f, "loss_mask", &r);
    fuzz_h5_finish(f, path, &r);
    dms_err err = {{0}};
    dms_shard *s = dms_shard_open(path, 0, &err);
    fuzz_check_err(s ? 0 : -1, &err, path, "dms_shard_open");
    if (!s) return 0;
    const int L = dms_shard_max_len(s), V = dms_shard_vocab_size(s);
    const int64_t rows = dms_shard_n_rows(s);
    fuzz_require(L > 0 && V > 0 && rows >= 0 && rows * L <= dms_shard_n_tokens(s), "shard sizes");
    if (rows > 0) {
        uint32_t *tok = malloc(sizeof(uint32_t) * (size_t)L);
        int32_t *seg = malloc(sizeof(int32_t) * (size_t)L);
        uint8_t *mask = malloc((size_t)L);
        if (!tok || !seg || !mask) abort();
        for (int64_t r = 0; r < rows && r < 16; r++) {
            dms_err e2 = {{0}};
            int rc = dms_shard_row(s, r, tok, seg, mask, &e2);
            fuzz_check_err(rc, &e2, path, "dms_shard_row");
            for (int t = 0; rc == 0 && t < L; t++)
                fuzz_require(tok[t] < (uint32_t)V && mask[t] <= 1 && seg[t] >= 0 && (t == 0 || seg[t] >= seg[t - 1]),
                             "row ids in the vocabulary, mask 0/1, segments non-decreasing");
        }
        free(tok);
        free(seg);
        free(mask);
    }
    dms_shard_close(s);

    /* the same file as a one-shard dataset, as dms train opens --data */
    dms_err e3 = {{0}};
    dms_dataset *ds = dms_dataset_open(path, 0, L, &e3);
    fuzz_check_err(ds ? 0 : -1, &e3, path, "dms_dataset_open");
    fuzz_require(ds != NULL || rows == 0, "a shard with rows opens as a dataset");
    if (ds) {
        uint32_t *tok = malloc(sizeof(uint32_t) * (size_t)L);
        int32_t *seg = malloc(sizeof(int32_t) * (size_t)L);
        if (!tok || !seg) abort();
        for (int64_t r2 = 0; r2 < dms_dataset_n_rows(ds) && r2 < 4; r2++) {
            dms_err e4 = {{0}};
            fuzz_check_err(dms_dataset_row(ds, r2, tok, seg, NULL, &e4), &e4, path, "dms_dataset_row");
        }
        free(tok);
        free(seg);
    }
    dms_dataset_close(ds);
    return 0;
}
