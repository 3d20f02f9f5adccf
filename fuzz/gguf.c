/* gguf.c (fuzz target) - the GGUF reader (model/gguf.c) and everything that
 * reads GGUF metadata: header, key/values (nested arrays, strings), the
 * tensor table and its offsets, the model config (dms_config_from_gguf), the
 * tokenizer (dms_tokenizer_from_gguf) and dequantisation of every tensor
 * type. A GGUF is a single downloaded file of many GB whose counts and
 * lengths are read before anything else: they must be checked against the
 * file, never trusted. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_common.h"
#include "kernels/backend.h"
#include "model/config.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/tokenizer.h"

static void exercise_tokenizer(const dms_tokenizer *tok) {
    static const char text[] = "Hello <|im_start|>world 123 \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80!";
    int32_t *ids = NULL;
    size_t n = 0;
    dms_err err = {{0}};
    if (dms_tokenizer_encode(tok, text, sizeof text - 1, 1, &ids, &n, &err) == 0) {
        for (size_t i = 0; i < n; i++)
            fuzz_require(ids[i] >= 0 && ids[i] < dms_tokenizer_vocab_size(tok), "encoded ids are in the vocabulary");
        free(dms_tokenizer_decode_lossy(tok, ids, n, 0));
        free(ids);
    } else {
        fuzz_check_err(-1, &err, NULL, "dms_tokenizer_encode");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[PATH_MAX];
    fuzz_write_file("model.gguf", data, size, path, sizeof path);
    dms_gguf g;
    dms_err err = {{0}};
    int rc = dms_gguf_open(&g, path, &err);
    fuzz_check_err(rc, &err, path, "dms_gguf_open");
    if (rc) return 0;

    for (uint64_t i = 0; i < g.n_kv; i++) {
        const dms_gguf_kv *kv = &g.kv[i];
        char buf[DMS_GGUF_NAME_BUF];
        dms_gguf_str_printable(kv->key, buf, sizeof buf);
        if (kv->type == GGUF_T_ARRAY && kv->arr_type == GGUF_T_STRING) {
            dms_gguf_str *s = malloc(sizeof *s * (size_t)(kv->arr_len ? kv->arr_len : 1));
            if (!s) abort();
            dms_err e2 = {{0}};
            rc = dms_gguf_array_strs(kv, s, &e2);
            fuzz_check_err(rc, &e2, path, "dms_gguf_array_strs");
            for (uint64_t k = 0; rc == 0 && k < kv->arr_len; k++)
                fuzz_require((const uint8_t *)s[k].ptr >= g.file.data &&
                                 (const uint8_t *)s[k].ptr + s[k].len <= g.file.data + g.file.size,
                             "array strings lie inside the file");
            free(s);
        }
    }
    char *arch = dms_gguf_get_str(&g, "general.architecture");
    free(arch);

    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const dms_gguf_tensor *t = &g.tensors[i];
        fuzz_require(t->data >= g.file.data && t->nbytes <= (uint64_t)(g.file.data + g.file.size - t->data),
                     "tensor data lies inside the file");
        const uint64_t n = dms_gguf_tensor_nelem(t);
        if (!dms_ggml_type_supported(t->type) || n > (1u << 20)) continue;
        float *out = malloc(sizeof(float) * (size_t)(n ? n : 1));
        if (!out) abort();
        dms_err e2 = {{0}};
        rc = dms_gguf_dequantize(&g, t, out, &e2);
        fuzz_check_err(rc, &e2, path, "dms_gguf_dequantize");
        free(out);
    }

    dms_config c;
    dms_err e3 = {{0}};
    rc = dms_config_from_gguf(&c, &g, &e3);
    fuzz_check_err(rc, &e3, path, "dms_config_from_gguf");

    if (dms_gguf_find_kv(&g, "tokenizer.ggml.tokens")) {
        dms_err e4 = {{0}};
        dms_tokenizer *tok = dms_tokenizer_from_gguf(&g, &e4);
        fuzz_check_err(tok ? 0 : -1, &e4, path, "dms_tokenizer_from_gguf");
        if (tok) {
            exercise_tokenizer(tok);
            dms_tokenizer_free(tok);
        }
    }
    dms_gguf_close(&g);

    /* the whole model, as dms generate / train load it (only when the config
     * was accepted: the loader reads it first) */
    if (rc == 0) {
        dms_model m;
        dms_err e5 = {{0}};
        rc = dms_model_load(&m, path, &dms_cpu_ops, DMS_LOAD_WEIGHTS | DMS_LOAD_TOKENIZER_IF_PRESENT, &e5);
        fuzz_check_err(rc, &e5, path, "dms_model_load");
        if (rc == 0) dms_model_free(&m);
    }
    return 0;
}
