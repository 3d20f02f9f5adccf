/* chat_template.c - renders conversations with the model's own chat
 * template text through the Jinja engine (model/jinja.h), passing what
 * transformers' apply_chat_template passes; no per-family renderer. Checked
 * byte for byte against transformers on the published templates of Qwen3,
 * Qwen2.5, DeepSeek-R1-Distill, Llama 3.1 / 3.2 and SmolLM2
 * (tests/test_chat_template.c, tests/fixtures/chat_templates/). */
#include "model/chat_template.h"

#include <stdlib.h>
#include <string.h>

#include "model/jinja.h"
#include "model/tokenizer.h"

void dms_chat_opts_default(dms_chat_opts *o) {
    memset(o, 0, sizeof *o);
    o->enable_thinking = -1;
}

static dms_jval *str_or_null(dms_jinja_env *e, const char *s) { return s ? dms_jinja_str(e, s, strlen(s)) : NULL; }

/* The variables of apply_chat_template (transformers' render_jinja_template). */
static int build_vars(dms_jinja_env *e, const dms_chat_msg *msgs, size_t n, const dms_chat_opts *o) {
    dms_jval *list = dms_jinja_list(e);
    if (!list) return -1;
    for (size_t i = 0; i < n; i++) {
        dms_jval *m = dms_jinja_dict(e);
        if (!m) return -1;
        /* None values are dropped (_normalize_chat_messages) */
        if (msgs[i].role && dms_jinja_dict_set(e, m, "role", str_or_null(e, msgs[i].role))) return -1;
        if (msgs[i].content && dms_jinja_dict_set(e, m, "content", str_or_null(e, msgs[i].content))) return -1;
        if (msgs[i].reasoning_content &&
            dms_jinja_dict_set(e, m, "reasoning_content", str_or_null(e, msgs[i].reasoning_content)))
            return -1;
        if (dms_jinja_list_add(e, list, m)) return -1;
    }
    if (dms_jinja_set(e, "messages", list) || dms_jinja_set(e, "tools", dms_jinja_none(e)) ||
        dms_jinja_set(e, "documents", dms_jinja_none(e)) ||
        dms_jinja_set(e, "add_generation_prompt", dms_jinja_bool(e, o->add_generation_prompt)))
        return -1;
    if (o->bos_token && dms_jinja_set(e, "bos_token", str_or_null(e, o->bos_token))) return -1;
    if (o->eos_token && dms_jinja_set(e, "eos_token", str_or_null(e, o->eos_token))) return -1;
    if (o->enable_thinking >= 0 && dms_jinja_set(e, "enable_thinking", dms_jinja_bool(e, o->enable_thinking)))
        return -1;
    if (o->date_string && dms_jinja_set(e, "date_string", str_or_null(e, o->date_string))) return -1;
    if (o->now) dms_jinja_set_time(e, o->now);
    return 0;
}

static char *render_parsed(const dms_jinja *t, const dms_chat_msg *msgs, size_t n, const dms_chat_opts *o,
                           dms_err *err) {
    dms_chat_opts dflt;
    if (!o) {
        dms_chat_opts_default(&dflt);
        o = &dflt;
    }
    dms_jinja_env *e = dms_jinja_env_new();
    char *out = NULL;
    if (!e || build_vars(e, msgs, n, o)) dms_errf(err, "out of memory");
    else out = dms_jinja_render(t, e, NULL, err);
    if (!out) dms_err_prefix(err, "chat template");
    dms_jinja_env_free(e);
    return out;
}

char *dms_chat_render_str(const char *template_src, const dms_chat_msg *msgs, size_t n, const dms_chat_opts *o,
                          dms_err *err) {
    if (!template_src) {
        dms_errf(err, "chat template: the model has no chat template");
        return NULL;
    }
    dms_jinja *t = dms_jinja_parse(template_src, err);
    if (!t) {
        dms_err_prefix(err, "chat template");
        return NULL;
    }
    char *out = render_parsed(t, msgs, n, o, err);
    dms_jinja_free(t);
    return out;
}

char *dms_chat_render_tpl(const char *template_src, const dms_chat_msg *msgs, size_t n, int add_generation_prompt,
                          dms_err *err) {
    dms_chat_opts o;
    dms_chat_opts_default(&o);
    o.add_generation_prompt = add_generation_prompt;
    return dms_chat_render_str(template_src, msgs, n, &o, err);
}

char *dms_tokenizer_chat_render(const dms_tokenizer *t, const dms_chat_msg *msgs, size_t n, const dms_chat_opts *o,
                                dms_err *err) {
    dms_chat_opts w;
    if (o) w = *o;
    else dms_chat_opts_default(&w);
    w.bos_token = dms_tokenizer_bos_token(t);
    w.eos_token = dms_tokenizer_eos_token(t);
    const char *perr;
    const dms_jinja *j = dms_tokenizer_chat_jinja(t, &perr); /* parsed once, at load */
    if (!j) {
        if (perr) dms_errf(err, "chat template: %s", perr);
        else dms_errf(err, "chat template: the model has no chat template");
        return NULL;
    }
    return render_parsed(j, msgs, n, &w, err);
}

dms_chat_kind dms_chat_detect(const char *src) {
    if (!src) return DMS_CHAT_NONE;
    if (strstr(src, "<|im_start|>")) return DMS_CHAT_CHATML;
    if (strstr(src, "<|start_header_id|>")) return DMS_CHAT_LLAMA3;
    if (strstr(src, "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>")) return DMS_CHAT_DEEPSEEK; /* <｜Assistant｜> */
    return DMS_CHAT_OTHER;
}

const char *dms_chat_kind_name(dms_chat_kind k) {
    switch (k) {
    case DMS_CHAT_CHATML: return "chatml";
    case DMS_CHAT_LLAMA3: return "llama3";
    case DMS_CHAT_DEEPSEEK: return "deepseek";
    case DMS_CHAT_OTHER: return "other";
    default: return "none";
    }
}
