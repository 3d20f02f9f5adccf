/* prep_jsonl.c (fuzz target) - the JSONL corpora of `dms prep`
 * (cli/cmd_prep.c -> dms_prep_run -> dms_prep_encode_line, data/prep.c):
 * lines split as prep reads them (blank lines skipped), each one a
 * {"messages"}, {"prompt","response"} or {"text"} document, rendered with
 * the chat template and tokenized, with and without --mask-prompt.
 * Training corpora are large files from anywhere; a bad line must be one
 * message (prep adds FILE:LINE), and an accepted one a document whose ids
 * are in the vocabulary and whose loss mask is 0/1. The first input byte
 * picks the tokenizer (tests/fixtures/tokenizer: Qwen2 with its ChatML
 * template, Llama 3 with its template, Qwen2 without any template) and
 * --mask-prompt. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/prep.h"
#include "fuzz/fuzz_common.h"
#include "model/tokenizer.h"

static dms_tokenizer *load(const char *name, int with_config) {
    char tj[PATH_MAX], tc[PATH_MAX];
    fuzz_fmt(tj, sizeof tj, "%s/tests/fixtures/tokenizer/%s/tokenizer.json", fuzz_source_dir(), name);
    fuzz_fmt(tc, sizeof tc, "%s/tests/fixtures/tokenizer/%s/tokenizer_config.json", fuzz_source_dir(), name);
    dms_err err = {{0}};
    dms_tokenizer *t = dms_tokenizer_from_json(tj, with_config ? tc : NULL, &err);
    if (!t) {
        fprintf(stderr, "fuzz: cannot load the fixture tokenizer: %s\n", err.msg);
        abort();
    }
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static dms_tokenizer *toks[3];
    if (!toks[0]) {
        toks[0] = load("tiny_qwen2", 1);
        toks[1] = load("tiny_llama3", 1);
        toks[2] = load("tiny_qwen2", 0);
    }
    if (size < 1) return 0;
    const dms_tokenizer *tok = toks[data[0] % 3];
    const int mask_prompt = (data[0] >> 2) & 1;
    const int V = dms_tokenizer_vocab_size(tok);
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    dms_prep_doc doc = {0};
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        const size_t end = nl ? (size_t)(nl - text) + 1 : len; /* the line keeps its newline, as getline's */
        char *line = malloc(end - at + 1);
        if (!line) abort();
        memcpy(line, text + at, end - at);
        line[end - at] = '\0';
        const size_t n = end - at;
        at = end;
        size_t i = 0;
        while (i < n && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n')) i++;
        if (i < n) {
            int fatal = 0;
            dms_err err = {{0}};
            int rc = dms_prep_encode_line(tok, line, n, mask_prompt, &doc, &fatal, &err);
            fuzz_check_err(rc, &err, NULL, "dms_prep_encode_line");
            if (rc == 0) {
                fuzz_require(doc.n > 0, "an accepted document has tokens");
                for (size_t k = 0; k < doc.n; k++)
                    fuzz_require(doc.ids[k] < (uint32_t)V && doc.mask[k] <= 1, "ids in the vocabulary, mask 0/1");
            }
        }
        free(line);
    }
    dms_prep_doc_free(&doc);
    return 0;
}
