/* tokenizer.c (fuzz target) - tokenizer.json and tokenizer_config.json
 * (dms_tokenizer_from_json, model/tokenizer.c): vocabulary ids, added
 * tokens, merges in both spellings, normalizers, pre-tokenizer regexes
 * (compiled by PCRE2 from the file), decoders, post-processor BOS, special
 * token names and the chat template; then the loaded tokenizer encodes and
 * decodes the input's third part. Input: tokenizer.json, optionally
 * FUZZ_SEP tokenizer_config.json, optionally FUZZ_SEP text. Both files come
 * with every downloaded model. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_common.h"
#include "model/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_part p[3];
    const int np = fuzz_split(data, size, p, 3);
    char tj[PATH_MAX], tc[PATH_MAX];
    fuzz_write_file("tok/tokenizer.json", p[0].data, p[0].size, tj, sizeof tj);
    if (np > 1) fuzz_write_file("tok/tokenizer_config.json", p[1].data, p[1].size, tc, sizeof tc);
    dms_err err = {{0}};
    dms_tokenizer *tok = dms_tokenizer_from_json(tj, np > 1 ? tc : NULL, &err);
    /* the message names whichever of the two files is at fault */
    fuzz_check_err(tok ? 0 : -1, &err, fuzz_tmpdir(), "dms_tokenizer_from_json");
    if (!tok) return 0;

    const int V = dms_tokenizer_vocab_size(tok);
    fuzz_require(V > 0, "a loaded tokenizer has tokens");
    const int32_t bos = dms_tokenizer_bos(tok), eos = dms_tokenizer_eos(tok);
    fuzz_require(bos >= -1 && bos < V && eos >= -1 && eos < V, "bos/eos are -1 or in the vocabulary");
    for (int32_t id = 0; id < V && id < 4096; id++) {
        size_t len = 0;
        const char *b = dms_tokenizer_token_bytes(tok, id, &len);
        fuzz_require(b != NULL || len == 0, "token bytes");
        dms_tokenizer_is_special(tok, id);
        dms_tokenizer_is_stop(tok, id);
    }
    static const char fallback[] = "Hello, world! 12345 <|im_start|>user\n\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80  x";
    char *text = np > 2 ? fuzz_strdup_part(p[2]) : strdup(fallback);
    const size_t tlen = np > 2 ? p[2].size : strlen(fallback);
    for (int special = 0; special <= 1; special++) {
        int32_t *ids = NULL;
        size_t n = 0;
        dms_err e2 = {{0}};
        int rc = dms_tokenizer_encode(tok, text, tlen, special, &ids, &n, &e2);
        fuzz_check_err(rc, &e2, NULL, "dms_tokenizer_encode");
        if (rc) continue;
        for (size_t i = 0; i < n; i++) fuzz_require(ids[i] >= 0 && ids[i] < V, "encoded ids are in the vocabulary");
        if (dms_tokenizer_prepend_bos(tok, &ids, &n, &e2) == 0) {
            free(dms_tokenizer_decode(tok, ids, n, special));
            free(dms_tokenizer_decode_lossy(tok, ids, n, !special));
        }
        free(ids);
    }
    free(text);
    const char *tpl = dms_tokenizer_chat_template(tok);
    if (tpl) {
        const dms_chat_msg msgs[] = {{"user", "hi", NULL}, {"assistant", " there ", NULL}};
        dms_err e3 = {{0}};
        char *r = dms_chat_render_tpl(tpl, msgs, 2, 1, &e3);
        fuzz_check_err(r ? 0 : -1, &e3, NULL, "dms_chat_render_tpl");
        free(r);
    }
    dms_tokenizer_free(tok);
    return 0;
}
