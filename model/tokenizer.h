/* tokenizer.h - byte-level BPE tokenizer (GPT-2 / Llama 3 / Qwen / SmolLM
 * family) loaded from a Hugging Face tokenizer.json or from GGUF metadata.
 * Pre-tokenisation regexes run through PCRE2 (UTF + Unicode properties),
 * normalisation (NFC/NFKC) through utf8proc, merges are applied by rank, and
 * added/special tokens are matched before BPE. */
#ifndef DMS_TOKENIZER_H
#define DMS_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "model/chat_template.h" /* chat rendering (model/jinja.h: the engine) */
#include "model/gguf.h"
#include "model/jinja.h"

typedef struct dms_tokenizer dms_tokenizer;

/* tokenizer_json: path to tokenizer.json. tokenizer_config: path to
 * tokenizer_config.json or NULL (it supplies chat_template, bos/eos). */
dms_tokenizer *dms_tokenizer_from_json(const char *tokenizer_json, const char *tokenizer_config,
                                       dms_err *err);
dms_tokenizer *dms_tokenizer_from_gguf(const dms_gguf *g, dms_err *err);
void dms_tokenizer_free(dms_tokenizer *t);

/* Encodes UTF-8 text. If parse_special, added/special tokens written in the
 * text (e.g. "<|im_start|>") become their ids; otherwise they are plain text.
 * *ids is malloc'd; the caller frees it. */
int dms_tokenizer_encode(const dms_tokenizer *t, const char *text, size_t len, int parse_special,
                         int32_t **ids, size_t *n_ids, dms_err *err);

/* Decodes ids to a malloc'd NUL-terminated UTF-8 string. Special tokens are
 * dropped if skip_special. Invalid UTF-8 produced by partial byte tokens is
 * passed through as raw bytes (as `tokenizers` would give U+FFFD, see
 * dms_tokenizer_decode_lossy). */
char *dms_tokenizer_decode(const dms_tokenizer *t, const int32_t *ids, size_t n, int skip_special);
/* As dms_tokenizer_decode, but invalid UTF-8 becomes U+FFFD (one per maximal
 * invalid subpart, as Rust's from_utf8_lossy and `tokenizers` do). */
char *dms_tokenizer_decode_lossy(const dms_tokenizer *t, const int32_t *ids, size_t n,
                                 int skip_special);

/* The raw bytes one token stands for (after byte-level unmapping); for
 * streaming output. Returns a pointer valid for the tokenizer's lifetime. */
const char *dms_tokenizer_token_bytes(const dms_tokenizer *t, int32_t id, size_t *len);
/* The token's string as stored in the vocabulary (byte-level form). */
const char *dms_tokenizer_token_str(const dms_tokenizer *t, int32_t id);
/* Token id of an exact vocabulary string, or -1. */
int32_t dms_tokenizer_lookup(const dms_tokenizer *t, const char *s);

int dms_tokenizer_vocab_size(const dms_tokenizer *t);
int32_t dms_tokenizer_bos(const dms_tokenizer *t); /* -1 if none */
int32_t dms_tokenizer_eos(const dms_tokenizer *t); /* -1 if none */
/* Whether id ends a generation: eos, or an end-of-turn token such as
 * <|im_end|> or <|eot_id|> / <|end_of_text|>. */
int dms_tokenizer_is_stop(const dms_tokenizer *t, int32_t id);
int dms_tokenizer_is_special(const dms_tokenizer *t, int32_t id);
/* Whether the model's metadata asks for BOS at the start of an encode
 * (tokenizer_config.json add_bos_token, else a TemplateProcessing post-
 * processor that starts with a special token; GGUF tokenizer.ggml.add_bos_token,
 * default on for Llama 3 pre-tokenizers). dms_tokenizer_encode never adds BOS
 * itself: callers prepend dms_tokenizer_bos() when this is set. */
int dms_tokenizer_add_bos(const dms_tokenizer *t);
/* Puts BOS in front of ids[n] (realloc'd) when the tokenizer asks for one
 * and it is not there yet; -1 with a message when out of memory. */
int dms_tokenizer_prepend_bos(const dms_tokenizer *t, int32_t **ids, size_t *n, dms_err *err);
/* The model's chat template source (Jinja text) or NULL. */
const char *dms_tokenizer_chat_template(const dms_tokenizer *t);
/* Short description for `dms inspect`: "byte-level BPE, 49152 tokens, pre=smollm". */
const char *dms_tokenizer_describe(const dms_tokenizer *t);
/* FNV-1a 64 hash over vocabulary, merges and pre-tokenizer: identifies a
 * tokenizer in token shards. Covers token strings with their added/special
 * flags, merges in rank order, normaliser + split regexes in canonical form,
 * and ignore_merges; the same tokenizer gives the same hash from GGUF and from
 * tokenizer.json (checked for SmolLM2). */
uint64_t dms_tokenizer_hash(const dms_tokenizer *t);

/* The bos_token / eos_token strings a chat template sees (transformers'
 * special_tokens_map: tokenizer_config.json's values; from a GGUF the
 * tokens' text), NULL when the model has none. */
const char *dms_tokenizer_bos_token(const dms_tokenizer *t);
const char *dms_tokenizer_eos_token(const dms_tokenizer *t);
/* The chat template parsed at load (model/jinja.h), NULL when the model has
 * none or it did not parse; then *parse_err (if asked) is the parser's
 * message, or NULL for no template. */
const dms_jinja *dms_tokenizer_chat_jinja(const dms_tokenizer *t, const char **parse_err);

/* ---- pre-tokenizer (model/tokenizer_pretok.c; used by tokenizer.c) ----
 * A normaliser (NFC/NFD/NFKC/NFKD, applied in order) followed by split
 * steps, each applied to every piece of the previous one, as `tokenizers`
 * Sequence pre-tokenizers do. The final byte-level mapping and BPE are the
 * tokenizer's. */
typedef struct dms_pretok dms_pretok;
typedef enum {
    DMS_NORM_NFC = 1, DMS_NORM_NFD, DMS_NORM_NFKC, DMS_NORM_NFKD
} dms_norm_form;
typedef enum {
    DMS_SPLIT_REMOVED = 0, DMS_SPLIT_ISOLATED, DMS_SPLIT_MERGED_WITH_PREVIOUS,
    DMS_SPLIT_MERGED_WITH_NEXT, DMS_SPLIT_CONTIGUOUS
} dms_split_behavior;
typedef struct { const char *ptr; size_t len; } dms_piece;
/* Output of one run: pieces point into the input or into owned buffers
 * (normalised text, prefix-spaced pieces) that live until the next run or
 * dms_pretok_out_free. */
typedef struct dms_pretok_out {
    dms_piece *pieces;
    size_t n, cap;
    void *priv; /* scratch owned by the out object */
} dms_pretok_out;

extern const char *const DMS_REGEX_GPT2, *const DMS_REGEX_LLAMA3, *const DMS_REGEX_QWEN2;

dms_pretok *dms_pretok_new(void);
void dms_pretok_free(dms_pretok *p);
int dms_pretok_add_norm(dms_pretok *p, dms_norm_form f);
/* pattern is a regex (PCRE2, UTF + UCP), or a literal string if literal.
 * where names the source in error messages. */
int dms_pretok_add_split(dms_pretok *p, const char *pattern, int literal, dms_split_behavior b,
                         int invert, const char *where, dms_err *err);
/* ByteLevel add_prefix_space: prepend ' ' to each piece not starting with one. */
int dms_pretok_add_prefix_space(dms_pretok *p);
/* A canonical description of the steps, for hashing ("NFC|split:1:0:<re>|..."). */
const char *dms_pretok_signature(const dms_pretok *p);
/* Short name for describe(): known regexes by name, joined by '+'. */
const char *dms_pretok_short_name(const dms_pretok *p);
/* Normalises and splits valid UTF-8 text into out (reset first). */
int dms_pretok_run(const dms_pretok *p, const char *text, size_t len, dms_pretok_out *out,
                   dms_err *err);
void dms_pretok_out_free(dms_pretok_out *out);

#endif
