/* checkpoint.c (fuzz target) - HDF5 training checkpoints (dms_ckpt_load and
 * the readers of train/checkpoint.c, as `dms train --resume` and `dms
 * export` use them): the format tag, version and step attributes, string,
 * integer and float32 tensor entries with their shapes, read into buffers
 * of the size the caller expects. A checkpoint cut by a crash, or one from
 * somewhere else, must give one line naming it; a shape that does not match
 * must never write past the caller's buffer, and a checksummed file is
 * verified whole. The input is a recipe (fuzz/fuzz_h5.h) for the root
 * attributes format, format_version, step, checksum and the entries below
 * (what train/run.c writes and reads), each followed by its crc32
 * attribute, of a well-formed HDF5 file. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_common.h"
#include "fuzz/fuzz_h5.h"
#include "train/checkpoint.h"
#include "train/train_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const attrs[] = {"format", "format_version", "step", "checksum"};
    static const char *const entries[] = {"config", "git_revision", "step", "seed", "samples_seen",
                                          "params/w", "adam_m/w", "adam_v/w", "params/b"};
    char path[PATH_MAX];
    fuzz_rd r = {data, data + size};
    hid_t f = fuzz_h5_create("ckpt-00000001.h5", path, sizeof path);
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) fuzz_h5_attr(f, NULL, attrs[i], &r);
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
        fuzz_h5_dataset(f, entries[i], &r);
        fuzz_h5_attr(f, entries[i], DMS_CKPT_CRC_ATTR, &r);
    }
    fuzz_h5_finish(f, path, &r);
    dms_err err = {{0}};
    dms_ckpt *ck = dms_ckpt_load(path, &err);
    fuzz_check_err(ck ? 0 : -1, &err, path, "dms_ckpt_load");
    if (!ck) return 0;
    dms_ckpt_step(ck);

    static const char *const strs[] = {"config", "git_revision", "params/w"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        dms_err e2 = {{0}};
        char *s = dms_ckpt_read_str(ck, strs[i], &e2);
        fuzz_check_err(s ? 0 : -1, &e2, path, "dms_ckpt_read_str");
        if (s && i == 0) { /* resume parses the stored config */
            dms_train_config c;
            dms_train_config_defaults(&c);
            dms_err e3 = {{0}};
            dms_train_config_parse(&c, s, path, &e3);
        }
        free(s);
    }
    static const char *const ints[] = {"step", "seed", "samples_seen", "config"};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int64_t v;
        dms_err e2 = {{0}};
        fuzz_check_err(dms_ckpt_read_i64(ck, ints[i], &v, &e2), &e2, path, "dms_ckpt_read_i64");
    }
    static const char *const tensors[] = {"params/w", "adam_m/w", "adam_v/w", "params/b", "step"};
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; i++) {
        dms_ckpt_has(ck, tensors[i]);
        /* as the trainer reads it: into a buffer of the size it expects */
        float buf[16];
        dms_err e2 = {{0}};
        fuzz_check_err(dms_ckpt_read_tensor(ck, tensors[i], buf, 16, &e2), &e2, path, "dms_ckpt_read_tensor");
        /* as export reads it: shape first, then a buffer of that size */
        int nd = 0;
        int64_t shape[DMS_CKPT_MAX_DIMS];
        dms_err e3 = {{0}};
        int rc = dms_ckpt_tensor_shape(ck, tensors[i], &nd, shape, &e3);
        fuzz_check_err(rc, &e3, path, "dms_ckpt_tensor_shape");
        if (rc) continue;
        fuzz_require(nd >= 0 && nd <= DMS_CKPT_MAX_DIMS, "tensor rank");
        size_t n = 1;
        int small = 1;
        for (int d = 0; d < nd; d++) {
            fuzz_require(shape[d] >= 0, "tensor dims are not negative");
            if (shape[d] > (1 << 20) || (shape[d] && n > (size_t)(1 << 20) / (size_t)shape[d])) small = 0;
            else n *= (size_t)shape[d];
        }
        if (!small) continue;
        float *t = malloc(sizeof(float) * (n ? n : 1));
        if (!t) abort();
        dms_err e4 = {{0}};
        fuzz_check_err(dms_ckpt_read_tensor(ck, tensors[i], t, n, &e4), &e4, path, "dms_ckpt_read_tensor");
        free(t);
    }
    dms_ckpt_free(ck);
    return 0;
}
