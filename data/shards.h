/* shards.h - token shards: the HDF5 files that `dms prep` writes and the
 * trainer reads (DESIGN.md sections 1 and 3). One shard holds documents
 * concatenated into one token stream:
 *   /tokens       uint32 [N]    every document, back to back
 *   /doc_offsets  uint64 [D+1]  document d = tokens[off[d], off[d+1])
 *   /loss_mask    uint8  [N]    optional; 1 = the token counts in the loss
 *   root attributes: format = "dms-tokens", format_version = 2,
 *   tokenizer_hash (uint64, dms_tokenizer_hash), max_len, vocab_size, source,
 *   packing ("documents" or "reference"; version 1 files have none and are
 *   read as "documents").
 * Training rows are cut from the stream: row r of a shard is tokens
 * [r*max_len, (r+1)*max_len) (the last partial row is dropped). How a row
 * is read depends on the packing (data/pack.h, DESIGN.md section 1 "Data"):
 *   documents: every token carries a per-row segment id (documents never
 *     see each other) and positions restart per document; a document cut by
 *     the previous row boundary continues at its true positions (the row's
 *     pos0, derived from /doc_offsets), never at position 0;
 *   reference: the writer started every row at a document start and dropped
 *     the overflow; a row is one segment (no document mask) at positions
 *     0..max_len-1.
 * Rows are read lazily through HDF5 hyperslabs, never whole shards. */
#ifndef DMS_SHARDS_H
#define DMS_SHARDS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define DMS_SHARD_FORMAT "dms-tokens"
#define DMS_SHARD_FORMAT_VERSION 2 /* written; 1 (no packing attribute) is still read */
/* the longest training row dms prep writes, a shard may declare and a
 * training config may ask for (1M tokens): a row is held whole in memory */
#define DMS_SHARD_MAX_LEN (1 << 20)

/* How documents were packed into rows (the shards' `packing` attribute, the
 * training config's `packing` key, `dms prep --packing`). */
typedef enum { DMS_PACK_DOCUMENTS = 0, DMS_PACK_REFERENCE = 1 } dms_packing;
/* "documents" / "reference" */
const char *dms_packing_name(dms_packing p);
/* 0 and *out set for a known name, else -1. */
int dms_packing_from_name(const char *name, dms_packing *out);

/* ---- writing ---- */
typedef struct dms_shard_writer dms_shard_writer;

/* Starts a shard that will be written to `path` (through `path`.tmp, fsync,
 * rename) when closed. with_loss_mask: also store /loss_mask. source: a
 * free-form description (input files), stored as an attribute. */
dms_shard_writer *dms_shard_writer_create(const char *path, uint64_t tokenizer_hash, int max_len,
                                          int vocab_size, const char *source, int with_loss_mask,
                                          dms_err *err);
/* Records how the rows were packed (default DMS_PACK_DOCUMENTS). In a
 * reference shard every row must start at a document start: the writer
 * checks it at close (n_tokens a multiple of max_len, and a document offset
 * at every row start). */
void dms_shard_writer_set_packing(dms_shard_writer *w, dms_packing p);
/* Appends one document of n tokens. mask: n loss-mask bytes (0/1), or NULL
 * for all 1 (ignored when the writer has no loss mask). Token ids must be
 * < vocab_size. */
int dms_shard_writer_add(dms_shard_writer *w, const uint32_t *tokens, const uint8_t *mask, size_t n,
                         dms_err *err);
int64_t dms_shard_writer_n_tokens(const dms_shard_writer *w);
int64_t dms_shard_writer_n_docs(const dms_shard_writer *w);
/* Writes the file (at least one token needed) and frees the writer,
 * whether or not writing succeeded; on failure no file (and no .tmp) is
 * left at `path`. */
int dms_shard_writer_close(dms_shard_writer *w, dms_err *err);
/* Frees the writer without writing anything. */
void dms_shard_writer_abort(dms_shard_writer *w);

/* ---- reading ---- */
typedef struct dms_shard dms_shard;

/* Opens and validates a shard: format tag and version, dataset types and
 * shapes, offsets starting at 0, non-decreasing and ending at N, every token
 * id < vocab_size, loss-mask values 0/1 (tokens and mask are scanned in
 * chunks, not held). expected_tokenizer_hash: the model's
 * dms_tokenizer_hash; a shard made by another tokenizer is refused ("made by
 * tokenizer 0x... but the model's tokenizer is 0x... (re-run dms prep)").
 * 0 accepts any tokenizer (for inspection tools). */
dms_shard *dms_shard_open(const char *path, uint64_t expected_tokenizer_hash, dms_err *err);
void dms_shard_close(dms_shard *s);

const char *dms_shard_path(const dms_shard *s);
int64_t dms_shard_n_tokens(const dms_shard *s);
int64_t dms_shard_n_docs(const dms_shard *s);
int64_t dms_shard_n_rows(const dms_shard *s); /* n_tokens / max_len */
int dms_shard_max_len(const dms_shard *s);
int dms_shard_vocab_size(const dms_shard *s);
uint64_t dms_shard_tokenizer_hash(const dms_shard *s);
int dms_shard_has_loss_mask(const dms_shard *s);
const char *dms_shard_source(const dms_shard *s);
dms_packing dms_shard_packing(const dms_shard *s);
/* Position of row r's first token inside its document: 0 when the row starts
 * at a document start (always, in a reference shard), else how many tokens
 * of that document precede the row. The trainer adds it to the positions of
 * the row's first segment. r must be a valid row. */
int32_t dms_shard_row_pos0(const dms_shard *s, int64_t r);

/* Reads packed row r (0 <= r < n_rows) into max_len-long buffers:
 * tokens: the ids (a caller holding int32_t ids may pass them cast to
 * uint32_t*: ids are < vocab_size < 2^31); seg: per-token document index
 * local to the row, 0, 1, 2, ... (a document cut by the previous row
 * boundary continues as segment 0, at positions from dms_shard_row_pos0);
 * all 0 in a reference shard (one segment: no document mask); mask: the
 * loss mask (all 1 without /loss_mask). seg and mask may be NULL. */
int dms_shard_row(dms_shard *s, int64_t r, uint32_t *tokens, int32_t *seg, uint8_t *mask,
                  dms_err *err);

/* ---- datasets: every *.h5 shard of a folder, sorted by name ---- */
typedef struct dms_dataset dms_dataset;

/* dir: a folder of shards (a single .h5 file is accepted too). Every shard
 * is opened with dms_shard_open and must have been packed for max_len, all
 * with the same packing; the dataset must hold at least one row. */
dms_dataset *dms_dataset_open(const char *dir, uint64_t expected_tokenizer_hash, int max_len,
                              dms_err *err);
void dms_dataset_close(dms_dataset *ds);
int64_t dms_dataset_n_rows(const dms_dataset *ds);
int64_t dms_dataset_n_tokens(const dms_dataset *ds); /* in rows (dropped tails excluded) */
int dms_dataset_n_shards(const dms_dataset *ds);
dms_packing dms_dataset_packing(const dms_dataset *ds);
/* dms_shard_row_pos0 of row global_row (a valid row). */
int32_t dms_dataset_row_pos0(const dms_dataset *ds, int64_t global_row);
dms_shard *dms_dataset_shard(dms_dataset *ds, int i);
/* Row global_row of the concatenation of the shards' rows, in shard order. */
int dms_dataset_row(dms_dataset *ds, int64_t global_row, uint32_t *tokens, int32_t *seg,
                    uint8_t *mask, dms_err *err);

#endif
