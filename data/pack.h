/* pack.h - how tokenized documents become training rows of max_len tokens
 * in token shards (DESIGN.md section 1 "Data"; the row layouts are read
 * back by data/shards.h). Two packings:
 *   documents: documents back to back in one stream, a row every max_len
 *     tokens (a shard's partial last row is dropped); in training,
 *     attention never crosses a document and positions restart per
 *     document; a document cut by a row boundary goes on in the next row at
 *     its true positions (never at position 0).
 *   reference: NVIDIA Model-Optimizer's recipe (concat_always_start_new):
 *     every row starts at a document start; documents are appended until
 *     the row is full, the part of the last one that does not fit is
 *     dropped, and the next row starts with the next document; in
 *     training a row is one sequence (no document mask, positions
 *     0..max_len-1). An unfinished last row is dropped.
 * The packer writes the shards of one packing and counts, for the same
 * documents, the tokens that each packing keeps (what `dms prep` reports). */
#ifndef DMS_PACK_H
#define DMS_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "data/shards.h"

typedef struct dms_packer_opts {
    dms_packing packing;
    int max_len;            /* tokens per row */
    int64_t shard_tokens;   /* start a new shard past this many tokens */
    const char *dir;        /* shards go to DIR/shard-NNNNN.h5 */
    uint64_t tokenizer_hash;
    int vocab_size;
    const char *source;     /* stored in every shard */
    int with_loss_mask;
} dms_packer_opts;

typedef struct dms_pack_stats {
    int64_t documents, tokens; /* offered */
    int64_t rows, shards;      /* written (full rows in the shards) */
    /* Tokens in full rows and full rows, indexed by dms_packing: what each
     * packing keeps of the same documents (the packing written included:
     * kept[packing] == rows * max_len). */
    int64_t kept[2], kept_rows[2];
} dms_pack_stats;

typedef struct dms_packer dms_packer;

dms_packer *dms_packer_create(const dms_packer_opts *o, dms_err *err);
/* Appends one document of n >= 1 tokens (mask: n loss-mask bytes or NULL). */
int dms_packer_add(dms_packer *p, const uint32_t *ids, const uint8_t *mask, size_t n, dms_err *err);
/* The counts so far (shards: written so far, plus the open one). */
void dms_packer_stats(const dms_packer *p, dms_pack_stats *st);
/* Writes the last shard, fills st and frees the packer (also on failure). */
int dms_packer_finish(dms_packer *p, dms_pack_stats *st, dms_err *err);
/* Frees the packer, writing nothing more. */
void dms_packer_abort(dms_packer *p);
/* DIR/shard-NNNNN.h5 */
void dms_pack_shard_name(char *out, size_t cap, const char *dir, int64_t index);

#endif
