/* safetensors_index.c (fuzz target) - model.safetensors.index.json of a
 * sharded checkpoint (dms_st_open_dir, model/safetensors.c): the weight_map
 * names shard files that are opened from the model folder, so its entries
 * (odd names, "..", the index itself, missing or repeated shards, tensors
 * not where the index says) must be refused with one line naming the index
 * or the shard, never a crash. The folder holds the three real shards of
 * tests/fixtures/models/tiny_qwen2 (links made once) and the fuzzed index. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fuzz/fuzz_common.h"
#include "model/safetensors.h"

static const char *model_dir(void) {
    static char dir[PATH_MAX];
    if (!dir[0]) {
        char path[PATH_MAX];
        fuzz_write_file("m/.keep", "", 0, path, sizeof path);
        fuzz_fmt(dir, sizeof dir, "%s/m", fuzz_tmpdir());
        for (int i = 1; i <= 3; i++) {
            char src[PATH_MAX], dst[PATH_MAX];
            fuzz_fmt(src, sizeof src, "%s/tests/fixtures/models/tiny_qwen2/model-0000%d-of-00003.safetensors",
                     fuzz_source_dir(), i);
            fuzz_fmt(dst, sizeof dst, "%s/model-0000%d-of-00003.safetensors", dir, i);
            if (symlink(src, dst) != 0) abort();
        }
    }
    return dir;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = model_dir();
    char path[PATH_MAX];
    fuzz_write_file("m/model.safetensors.index.json", data, size, path, sizeof path);
    dms_safetensors st;
    dms_err err = {{0}};
    int rc = dms_st_open_dir(&st, dir, &err);
    fuzz_check_err(rc, &err, dir, "dms_st_open_dir");
    if (rc) return 0;
    for (int i = 0; i < st.n_tensors; i++)
        fuzz_require(dms_st_find(&st, st.tensors[i].name) == &st.tensors[i], "every tensor is found by its name");
    dms_st_close(&st);
    return 0;
}
