/* model_load.c (fuzz target) - loading a Hugging Face model folder
 * (dms_model_load, model/model_load.c; also what `dms export --model` and
 * every command that takes a model go through): config.json and
 * model.safetensors together, so that sizes from the config meet tensor
 * shapes, dtypes and the DMS head tensors from the weights, plus an
 * optional tokenizer.json whose vocabulary must fit the config's. Input:
 * config.json FUZZ_SEP model.safetensors [FUZZ_SEP tokenizer.json], written
 * into a scratch folder. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz/fuzz_common.h"
#include "kernels/backend.h"
#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_part p[3];
    const int np = fuzz_split(data, size, p, 3);
    char path[PATH_MAX], dir[PATH_MAX];
    fuzz_write_file("hf/config.json", p[0].data, p[0].size, path, sizeof path);
    if (np > 1) fuzz_write_file("hf/model.safetensors", p[1].data, p[1].size, path, sizeof path);
    else fuzz_remove_file("hf/model.safetensors");
    if (np > 2) fuzz_write_file("hf/tokenizer.json", p[2].data, p[2].size, path, sizeof path);
    else fuzz_remove_file("hf/tokenizer.json");
    fuzz_fmt(dir, sizeof dir, "%s/hf", fuzz_tmpdir());
    dms_model m;
    dms_err err = {{0}};
    int rc = dms_model_load(&m, dir, &dms_cpu_ops, DMS_LOAD_WEIGHTS | DMS_LOAD_TOKENIZER_IF_PRESENT, &err);
    fuzz_check_err(rc, &err, dir, "dms_model_load");
    if (rc) return 0;
    fuzz_require(m.embed.data && m.lm_head.data && m.final_norm && m.layers, "a loaded model has its weights");
    fuzz_require(!m.tok || dms_tokenizer_vocab_size(m.tok) <= m.cfg.vocab, "the tokenizer fits the vocabulary");
    dms_model_free(&m);
    return 0;
}
