/* tokenizer_export.h - a Hugging Face tokenizer from GGUF metadata, for
 * `dms export` of a model that came as a .gguf file: writes tokenizer.json
 * (byte-level BPE: vocabulary from tokenizer.ggml.tokens, merges from
 * tokenizer.ggml.merges, added tokens from the control / user-defined token
 * types, the split regexes that match tokenizer.ggml.pre exactly as our own
 * tokenizer (model/tokenizer.c) uses them, ByteLevel decoder) and
 * tokenizer_config.json (chat template, bos/eos strings, add_bos_token,
 * model_max_length, tokenizer_class PreTrainedTokenizerFast), so that
 * `transformers` and our own loader open the exported folder and encode
 * exactly as the GGUF tokenizer does. */
#ifndef DMS_TOKENIZER_EXPORT_H
#define DMS_TOKENIZER_EXPORT_H

#include "core/err.h"
#include "model/gguf.h"

/* Writes dir/tokenizer.json and dir/tokenizer_config.json (fsynced).
 * model_max_length: the model's context length (tokenizer_config.json).
 * Errors (not byte-level BPE, an unknown pre-tokenizer name, malformed
 * arrays, I/O) name the GGUF file or the file being written. */
int dms_tokenizer_export_gguf(const dms_gguf *g, const char *dir, int model_max_length, dms_err *err);

#endif
