/* checkpoint.h - training checkpoints (DESIGN.md section 3): one HDF5 file
 * per save, DIR/ckpt-<step:08d>.h5, written to a .tmp name, flushed,
 * fsynced and renamed, so a crash or a full disk never leaves a half
 * checkpoint where a complete one is expected. The module is generic: the
 * trainer puts in whatever resume needs (trainable tensors, Adam moments,
 * step, RNG and data cursor, resolved config, git revision) by name; group
 * paths are allowed ("params/model.layers.0.self_attn.dms_proj_alpha.weight",
 * "adam_m/...", "rng/counter"). Floats are stored as native float32 and read
 * back without conversion, so resume is bit-exact.
 * File layout: one dataset per entry (float32 tensors with their shape,
 * int64 scalars, fixed-length strings), each with a "crc32" attribute (the
 * zlib CRC-32 of its stored bytes); root attributes format =
 * "dms-checkpoint", format_version = 1, step, checksum = "crc32". Files
 * written before checksums existed (no "checksum" attribute) still load,
 * unverified. */
#ifndef DMS_CHECKPOINT_H
#define DMS_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define DMS_CKPT_FORMAT "dms-checkpoint"
#define DMS_CKPT_FORMAT_VERSION 1
#define DMS_CKPT_MAX_DIMS 8
#define DMS_CKPT_CHECKSUM "crc32" /* the root "checksum" attribute */
#define DMS_CKPT_CRC_ATTR "crc32" /* each dataset's checksum attribute */

/* A checkpoint: either a state being built for dms_ckpt_save (dms_ckpt_new)
 * or an opened file (dms_ckpt_load). dms_ckpt_free releases both. */
typedef struct dms_ckpt dms_ckpt;

/* ---- building and saving ---- */
dms_ckpt *dms_ckpt_new(void);
void dms_ckpt_free(dms_ckpt *ck);

/* Add entries; the data is copied. A name may contain '/' (groups). Adding
 * never reports failure itself: a bad name (empty, duplicate, or clashing
 * with a group), a bad shape or an allocation failure is remembered and
 * makes dms_ckpt_save fail with that message. Return 0, or -1 after such a
 * failure (for callers who want to stop early). */
int dms_ckpt_add_tensor(dms_ckpt *ck, const char *name, const float *data, int n_dims,
                        const int64_t *shape);
int dms_ckpt_add_i64(dms_ckpt *ck, const char *name, int64_t value);
int dms_ckpt_add_str(dms_ckpt *ck, const char *name, const char *text);

/* Writes DIR/ckpt-<step:08d>.h5 (creating DIR if needed) through a .tmp
 * file, H5Fflush + fsync, rename, fsync of DIR; then deletes the oldest
 * complete checkpoints so that at most keep_last remain (keep_last <= 0:
 * keep all; the new one is never deleted). On any failure (disk full, I/O
 * error) returns -1 with a one-line message, removes the .tmp and leaves
 * every existing checkpoint untouched. */
int dms_ckpt_save(const char *dir, int64_t step, const dms_ckpt *ck, int keep_last, dms_err *err);
/* The file name dms_ckpt_save uses for a step: DIR/ckpt-<step:08d>.h5. */
void dms_ckpt_path(char *out, size_t cap, const char *dir, int64_t step);

/* Finds the newest complete checkpoint in dir (highest step among
 * ckpt-<digits>.h5; *.tmp leftovers of interrupted saves are ignored and
 * removed). Returns 1 and writes its path, 0 if there is none (or dir does
 * not exist), -1 on error. */
int dms_ckpt_latest(const char *dir, char *path_out, size_t cap, dms_err *err);
/* The newest complete checkpoint of a step below `below` (what a resume
 * falls back to when the newest one is corrupt): 1 with its path and step
 * (step_out may be NULL), 0 if there is none, -1 on error. */
int dms_ckpt_latest_before(const char *dir, int64_t below, char *path_out, size_t cap, int64_t *step_out,
                           dms_err *err);

/* ---- loading ---- */
/* Opens a checkpoint file, checks its format tag and, when it carries
 * checksums, reads every dataset once and checks its CRC-32; entries are
 * then read on demand. A truncated, bit-flipped or foreign file gives a
 * one-line error naming it (and the corrupt dataset). */
dms_ckpt *dms_ckpt_load(const char *path, dms_err *err);
/* 1 when every dataset of a loaded checkpoint matched its checksum; 0 for a
 * file written before checksums existed (loaded unverified). */
int dms_ckpt_verified(const dms_ckpt *ck);
/* The step attribute of a loaded checkpoint (-1 for a state being built). */
int64_t dms_ckpt_step(const dms_ckpt *ck);
/* Whether a loaded checkpoint holds an entry of that name. */
int dms_ckpt_has(const dms_ckpt *ck, const char *name);
/* Reads a float32 tensor into out, which holds n_elems floats; a missing
 * entry, a non-float32 entry or a size mismatch is an error naming the file
 * and the tensor. */
int dms_ckpt_read_tensor(const dms_ckpt *ck, const char *name, float *out, size_t n_elems,
                         dms_err *err);
/* The stored shape of a tensor: *n_dims and shape[0..n_dims) (at most
 * DMS_CKPT_MAX_DIMS). */
int dms_ckpt_tensor_shape(const dms_ckpt *ck, const char *name, int *n_dims, int64_t *shape,
                          dms_err *err);
int dms_ckpt_read_i64(const dms_ckpt *ck, const char *name, int64_t *out, dms_err *err);
/* Returns a malloc'd NUL-terminated copy, or NULL with err. */
char *dms_ckpt_read_str(const dms_ckpt *ck, const char *name, dms_err *err);

#endif
