/* chat_template.c (fuzz target) - chat templates (model/chat_template.c on
 * the Jinja engine of model/jinja.h): the template text comes from a
 * downloaded tokenizer_config.json or GGUF and is parsed and run by our
 * own code, with roles and contents from a JSONL corpus. Any template must
 * render or fail with one message, in bounded time and memory, never
 * crash. Input: the template, then up to 7 FUZZ_SEP-separated strings taken
 * as role, content, role, content, ... (an odd last one is a message
 * without content). */
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_common.h"
#include "model/chat_template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_part p[FUZZ_MAX_PARTS];
    const int np = fuzz_split(data, size, p, FUZZ_MAX_PARTS);
    char *tpl = fuzz_strdup_part(p[0]);
    char *s[FUZZ_MAX_PARTS] = {0};
    dms_chat_msg msgs[FUZZ_MAX_PARTS];
    size_t n = 0;
    for (int i = 1; i < np; i++) s[i] = fuzz_strdup_part(p[i]);
    for (int i = 1; i + 1 < np; i += 2) msgs[n++] = (dms_chat_msg){s[i], s[i + 1], NULL};
    if (np % 2 == 0) msgs[n++] = (dms_chat_msg){s[np - 1], NULL, NULL};

    fuzz_require(dms_chat_kind_name(dms_chat_detect(tpl)) != NULL, "kind name");
    dms_err err = {{0}};
    char *r = dms_chat_render_tpl(tpl, msgs, n, 0, &err);
    fuzz_check_err(r ? 0 : -1, &err, NULL, "dms_chat_render_tpl");
    free(r);

    dms_chat_opts o;
    dms_chat_opts_default(&o);
    o.add_generation_prompt = 1;
    o.enable_thinking = 0;
    o.date_string = "26 Jul 2024";
    o.bos_token = "<|begin_of_text|>";
    o.eos_token = "<|im_end|>";
    o.now = 1721952000; /* fixed: the same input renders the same way */
    dms_err e2 = {{0}};
    r = dms_chat_render_str(tpl, msgs, n, &o, &e2);
    fuzz_check_err(r ? 0 : -1, &e2, NULL, "dms_chat_render_str");
    free(r);

    for (int i = 0; i < np; i++) free(s[i]);
    free(tpl);
    return 0;
}
