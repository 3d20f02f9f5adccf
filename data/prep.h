/* prep.h - `dms prep`: JSONL corpora -> HDF5 token shards (DESIGN.md
 * section 1 "Data"). Each line is one document in one of three forms:
 *   {"messages": [{"role": .., "content": ..}, ...]}  rendered with the
 *       model's chat template, encoded with special tokens parsed;
 *   {"prompt": "...", "response": "..."}  a user + assistant chat when the
 *       model has a chat template, else prompt + response as plain text;
 *   {"text": "..."}  plain text; special-token strings written in it
 *       (e.g. "<|im_start|>") become their tokens, as transformers'
 *       tokenizer and llama.cpp parse them, unless literal_special.
 * BOS is prepended when the tokenizer asks for it; EOS is appended after
 * plain-text documents (text, and prompt/response without a template).
 * With mask_prompt the loss mask is 0 on every token up to and including the
 * last assistant header (chat) or the prompt (plain prompt/response). */
#ifndef DMS_PREP_H
#define DMS_PREP_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "data/shards.h"
#include "model/tokenizer.h"

typedef struct dms_prep_opts {
    const char *model;           /* HF folder or .gguf (only config + tokenizer are read) */
    const char *const *inputs;   /* JSONL files */
    int n_inputs;
    const char *output;          /* folder for shard-NNNNN.h5 and prep.json */
    int max_len;                 /* tokens per packed training row (default 2048) */
    dms_packing packing;         /* how documents become rows (data/pack.h; default documents) */
    int mask_prompt;             /* write /loss_mask with prompts masked */
    int64_t shard_tokens;        /* start a new shard past this many tokens (default 50M) */
    int64_t limit;               /* stop after this many documents (0 = all) */
    int skip_bad;                /* count and skip bad lines instead of failing */
    int progress;                /* progress lines on stderr for long inputs */
    int literal_special;         /* "text" documents: special-token strings stay text (default: parsed) */
    int enable_thinking;         /* chat template's enable_thinking: -1 not passed (default), 0 false, 1 true */
} dms_prep_opts;

typedef struct dms_prep_stats {
    int64_t documents, tokens, rows, skipped, shards, lines;
    int64_t kept[2];             /* tokens in full rows under each packing (dms_packing index) */
    uint64_t tokenizer_hash;
    int vocab_size;
    double seconds;
} dms_prep_stats;

void dms_prep_opts_default(dms_prep_opts *o);

/* Runs the whole prep: writes OUTPUT/shard-00000.h5 ... and OUTPUT/prep.json
 * (counts, tokenizer hash, model, max_len), and removes shard files of an
 * earlier run in OUTPUT that this run did not rewrite. A bad line is an error
 * "FILE:LINE: problem" unless skip_bad. */
int dms_prep_run(const dms_prep_opts *o, dms_prep_stats *st, dms_err *err);

/* One tokenized document. */
typedef struct dms_prep_doc {
    uint32_t *ids;
    uint8_t *mask; /* loss mask, 1 = counts */
    size_t n, cap;
} dms_prep_doc;

void dms_prep_doc_free(dms_prep_doc *d);

/* Tokenizes one JSONL line (len bytes, need not be NUL-terminated) into doc
 * (reset first). Returns 0, or -1 with a message that does not name the
 * file (the caller prefixes FILE:LINE). A model without a chat template
 * cannot take "messages": that error sets *fatal (it would hit every line). */
int dms_prep_encode_line(const dms_tokenizer *tok, const char *line, size_t len, int mask_prompt,
                         dms_prep_doc *doc, int *fatal, dms_err *err);

/* The per-line options of dms_prep_opts. */
typedef struct dms_prep_line_opts {
    int mask_prompt, literal_special, enable_thinking;
} dms_prep_line_opts;
/* mask_prompt 0, literal_special 0, enable_thinking -1 */
void dms_prep_line_opts_default(dms_prep_line_opts *lo);
/* dms_prep_encode_line with every per-line option. */
int dms_prep_encode_line_opts(const dms_tokenizer *tok, const char *line, size_t len, const dms_prep_line_opts *lo,
                              dms_prep_doc *doc, int *fatal, dms_err *err);

#endif
