/* eval_prompt.c - the ids an evaluation feeds the model (eval.h): a user
 * message through the model's chat template with the generation prompt
 * (as `dms generate` does; no "enable_thinking = false" block is ever
 * added, so thinking templates keep thinking on), the tokenizer's BOS when
 * it asks for one, and plain text for the teacher-forced KL. */
#include "runtime/eval.h"

#include <stdlib.h>
#include <string.h>

int dms_eval_encode_user(const dms_tokenizer *tok, const char *user, int32_t **ids, int *n, dms_err *err) {
    *ids = NULL;
    *n = 0;
    if (!tok) return dms_errf(err, "the model has no tokenizer");
    const char *tpl = dms_tokenizer_chat_template(tok);
    char *text = NULL;
    if (tpl) {
        const dms_chat_msg msg = {"user", user, NULL};
        dms_chat_opts co;
        dms_chat_opts_default(&co);
        co.add_generation_prompt = 1;
        text = dms_tokenizer_chat_render(tok, &msg, 1, &co, err);
        if (!text) return -1;
    }
    size_t got = 0;
    const char *src = text ? text : user;
    int rc = dms_tokenizer_encode(tok, src, strlen(src), text != NULL, ids, &got, err);
    free(text);
    if (rc == 0) rc = dms_tokenizer_prepend_bos(tok, ids, &got, err);
    if (rc != 0) {
        free(*ids);
        *ids = NULL;
        return -1;
    }
    *n = (int)got;
    return 0;
}

int dms_eval_encode_plain(const dms_tokenizer *tok, const char *text, size_t len, int32_t **ids, int *n,
                          dms_err *err) {
    *ids = NULL;
    *n = 0;
    if (!tok) return dms_errf(err, "the model has no tokenizer");
    size_t got = 0;
    if (dms_tokenizer_encode(tok, text, len, 0, ids, &got, err) != 0) return -1;
    *n = (int)got;
    return 0;
}
