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
#include "model/gguf.h"

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
/* Whether the model's metadata asks for BOS at the start of an encode. */
int dms_tokenizer_add_bos(const dms_tokenizer *t);
/* The model's chat template source (Jinja text) or NULL. */
const char *dms_tokenizer_chat_template(const dms_tokenizer *t);
/* Short description for `dms inspect`: "byte-level BPE, 49152 tokens, pre=smollm". */
const char *dms_tokenizer_describe(const dms_tokenizer *t);
/* FNV-1a 64 hash over vocabulary, merges and pre-tokenizer: identifies a
 * tokenizer in token shards. */
uint64_t dms_tokenizer_hash(const dms_tokenizer *t);

/* ---- chat templates ---- */
typedef enum { DMS_CHAT_NONE = 0, DMS_CHAT_CHATML, DMS_CHAT_LLAMA3 } dms_chat_kind;
typedef struct { const char *role; const char *content; } dms_chat_msg;

/* Chooses the chat format from the template text (NULL -> NONE). */
dms_chat_kind dms_chat_detect(const char *template_src);
const char *dms_chat_kind_name(dms_chat_kind k);
/* Renders messages as the model's template does, ending with the assistant
 * header if add_generation_prompt. Returns malloc'd text (special tokens
 * written literally; encode it with parse_special=1). */
char *dms_chat_render(dms_chat_kind k, const dms_chat_msg *msgs, size_t n, int add_generation_prompt,
                      dms_err *err);

/* Detects the kind from the template text and renders as the template
 * would, including a default system message that the template inserts when
 * the conversation has none (SmolLM2, Qwen2.5). */
char *dms_chat_render_tpl(const char *template_src, const dms_chat_msg *msgs, size_t n,
                          int add_generation_prompt, dms_err *err);

#endif
