/* chat_template.h - conversations rendered by the model's own chat template
 * (the Jinja text of tokenizer_config.json's `chat_template` or the GGUF's
 * `tokenizer.chat_template`), run by the Jinja engine of model/jinja.h with
 * the variables transformers' apply_chat_template passes: messages,
 * add_generation_prompt, bos_token / eos_token, tools = None, documents =
 * None, and enable_thinking / date_string only when the caller sets them.
 * The result is the text transformers renders, byte for byte; special
 * tokens are in it as text (encode it with parse_special = 1). */
#ifndef DMS_CHAT_TEMPLATE_H
#define DMS_CHAT_TEMPLATE_H

#include <stddef.h>
#include <time.h>

#include "core/err.h"

typedef struct dms_tokenizer dms_tokenizer;

/* One message; a NULL field is left out of the message (as transformers
 * drops None values), so the template sees it undefined.
 * reasoning_content: an assistant turn's reasoning kept apart from its
 * content, as chat datasets and Qwen3's template name it (the template
 * puts it in the <think> block of the turns it keeps reasoning for). */
typedef struct {
    const char *role;
    const char *content;
    const char *reasoning_content;
} dms_chat_msg;

typedef struct dms_chat_opts {
    int add_generation_prompt;
    int enable_thinking;     /* -1: not passed (the template's default), 0: false, 1: true */
    const char *date_string; /* NULL: not passed (Llama 3.x: its default or strftime_now) */
    const char *bos_token;   /* NULL: undefined in the template */
    const char *eos_token;   /* NULL: undefined in the template */
    time_t now;              /* the clock of strftime_now(); 0 = the time of the call */
} dms_chat_opts;

/* add_generation_prompt 0, enable_thinking -1, the rest NULL / 0. */
void dms_chat_opts_default(dms_chat_opts *o);

/* Renders messages with a template string. Returns malloc'd text, or NULL
 * with "chat template: ..." (a syntax error or unsupported construct with
 * its line, or the template's raise_exception message). */
char *dms_chat_render_str(const char *template_src, const dms_chat_msg *msgs, size_t n, const dms_chat_opts *o,
                          dms_err *err);

/* As dms_chat_render_str with only add_generation_prompt set (no special
 * tokens defined). */
char *dms_chat_render_tpl(const char *template_src, const dms_chat_msg *msgs, size_t n, int add_generation_prompt,
                          dms_err *err);

/* Renders with the tokenizer's template and its bos / eos token strings
 * (o->bos_token / o->eos_token are ignored). The text starts with BOS when
 * the template writes bos_token (Llama 3, DeepSeek-R1-Distill), as
 * transformers' does; dms_tokenizer_prepend_bos() then adds none. Error if
 * the model has no template. */
char *dms_tokenizer_chat_render(const dms_tokenizer *t, const dms_chat_msg *msgs, size_t n, const dms_chat_opts *o,
                                dms_err *err);

/* A label for `dms inspect`, from the template text: "chatml", "llama3",
 * "deepseek", "other" (a template of another format) or "none" (NULL).
 * Rendering never depends on it. */
typedef enum { DMS_CHAT_NONE = 0, DMS_CHAT_CHATML, DMS_CHAT_LLAMA3, DMS_CHAT_DEEPSEEK, DMS_CHAT_OTHER } dms_chat_kind;
dms_chat_kind dms_chat_detect(const char *template_src);
const char *dms_chat_kind_name(dms_chat_kind k);

#endif
