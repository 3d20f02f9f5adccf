/* shards.c - writing, validating and reading HDF5 token shards, and the
 * dataset view over a folder of them (shards.h). HDF5's own error printing
 * is switched off; failures become one-line messages naming the file, with
 * the innermost HDF5 reason appended. */
#include "data/shards.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/h5util.h"

/* ---------------------------------------------------------------- packing */

static const char *const packing_names[] = {"documents", "reference"};

const char *dms_packing_name(dms_packing p) { return packing_names[p == DMS_PACK_REFERENCE]; }

int dms_packing_from_name(const char *name, dms_packing *out) {
    for (int i = 0; name && i < 2; i++)
        if (!strcmp(name, packing_names[i])) {
            *out = (dms_packing)i;
            return 0;
        }
    return -1;
}

/* ---------------------------------------------------------------- helpers */

static int fsync_parent_dir(const char *path) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    return dms_fsync_path(dirname(buf), 1);
}

static int write_attr_str(hid_t loc, const char *name, const char *text) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    size_t len = strlen(text);
    int rc = -1;
    if (H5Tset_size(t, len + 1) >= 0 && H5Tset_strpad(t, H5T_STR_NULLTERM) >= 0) {
        hid_t sp = H5Screate(H5S_SCALAR);
        hid_t a = sp >= 0 ? H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
        if (a >= 0 && H5Awrite(a, t, text) >= 0) rc = 0;
        if (a >= 0 && H5Aclose(a) < 0) rc = -1;
        if (sp >= 0) H5Sclose(sp);
    }
    H5Tclose(t);
    return rc;
}

static int write_attr_num(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    if (sp < 0) return -1;
    hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, mtype, v) >= 0 ? 0 : -1;
    if (a >= 0 && H5Aclose(a) < 0) rc = -1;
    H5Sclose(sp);
    return rc;
}

/* 0 ok, -1 missing, -2 wrong type/shape. Accepts fixed and variable length
 * strings (h5py writes the latter). */
static int read_attr_str(hid_t loc, const char *name, char *out, size_t cap) {
    out[0] = '\0';
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a);
    hid_t sp = H5Aget_space(a);
    int rc = -2;
    if (t >= 0 && sp >= 0 && H5Tget_class(t) == H5T_STRING && H5Sget_simple_extent_npoints(sp) == 1) {
        if (H5Tis_variable_str(t) > 0) {
            char *s = NULL;
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            if (H5Aread(a, mt, &s) >= 0 && s) {
                snprintf(out, cap, "%s", s);
                rc = 0;
            }
            if (s) H5free_memory(s);
            H5Tclose(mt);
        } else {
            size_t sz = H5Tget_size(t);
            char *buf = calloc(sz + 1, 1);
            hid_t mt = H5Tcopy(t);
            if (buf && H5Aread(a, mt, buf) >= 0) {
                snprintf(out, cap, "%s", buf);
                rc = 0;
            }
            H5Tclose(mt);
            free(buf);
        }
    }
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return rc;
}

/* Integer attribute read as mtype (native int64/uint64). Same codes. */
static int read_attr_int(hid_t loc, const char *name, hid_t mtype, void *out) {
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a);
    hid_t sp = H5Aget_space(a);
    int rc = -2;
    if (t >= 0 && sp >= 0 && H5Tget_class(t) == H5T_INTEGER && H5Sget_simple_extent_npoints(sp) == 1 &&
        H5Aread(a, mtype, out) >= 0)
        rc = 0;
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return rc;
}

static int write_1d(hid_t f, const char *name, hid_t ftype, hid_t mtype, const void *data, size_t n) {
    hsize_t dims = n;
    hid_t sp = H5Screate_simple(1, &dims, NULL);
    if (sp < 0) return -1;
    hid_t d = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = d >= 0 && (n == 0 || H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0) ? 0 : -1;
    if (d >= 0 && H5Dclose(d) < 0) rc = -1;
    H5Sclose(sp);
    return rc;
}

static int read_range(hid_t d, hid_t mtype, int64_t start, int64_t count, void *out) {
    if (count == 0) return 0;
    hid_t fs = H5Dget_space(d);
    if (fs < 0) return -1;
    hsize_t st = (hsize_t)start, cnt = (hsize_t)count;
    hid_t ms = H5Screate_simple(1, &cnt, NULL);
    int rc = ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, &st, NULL, &cnt, NULL) >= 0 &&
                     H5Dread(d, mtype, ms, fs, H5P_DEFAULT, out) >= 0
                 ? 0
                 : -1;
    if (ms >= 0) H5Sclose(ms);
    H5Sclose(fs);
    return rc;
}

/* ----------------------------------------------------------------- writer */

struct dms_shard_writer {
    char *path, *source;
    uint64_t hash;
    int max_len, vocab_size, with_mask;
    dms_packing packing;
    uint32_t *tokens;
    uint8_t *mask;
    size_t n, cap;
    uint64_t *offsets; /* n_docs + 1 */
    size_t n_docs, cap_docs;
};

dms_shard_writer *dms_shard_writer_create(const char *path, uint64_t tokenizer_hash, int max_len,
                                          int vocab_size, const char *source, int with_loss_mask,
                                          dms_err *err) {
    if (max_len <= 0 || vocab_size <= 0) {
        dms_errf(err, "%s: max_len and vocab_size must be positive (got %d, %d)", path, max_len, vocab_size);
        return NULL;
    }
    dms_shard_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path)) || !(w->source = strdup(source ? source : "")) ||
        !(w->offsets = malloc(sizeof(uint64_t) * 16))) {
        dms_shard_writer_abort(w);
        dms_errf(err, "%s: out of memory", path);
        return NULL;
    }
    w->hash = tokenizer_hash;
    w->max_len = max_len;
    w->vocab_size = vocab_size;
    w->with_mask = with_loss_mask ? 1 : 0;
    w->offsets[0] = 0;
    w->cap_docs = 16;
    return w;
}

int dms_shard_writer_add(dms_shard_writer *w, const uint32_t *tokens, const uint8_t *mask, size_t n,
                         dms_err *err) {
    for (size_t i = 0; i < n; i++)
        if (tokens[i] >= (uint32_t)w->vocab_size)
            return dms_errf(err, "%s: document %zu: token id %" PRIu32 " >= vocab size %d", w->path, w->n_docs,
                            tokens[i], w->vocab_size);
    if (w->n + n > w->cap) {
        size_t cap = w->cap ? w->cap : 1 << 16;
        while (cap < w->n + n) cap *= 2;
        uint32_t *t = realloc(w->tokens, sizeof(uint32_t) * cap);
        if (!t) return dms_errf(err, "%s: out of memory for %zu tokens", w->path, cap);
        w->tokens = t;
        if (w->with_mask) {
            uint8_t *m = realloc(w->mask, cap);
            if (!m) return dms_errf(err, "%s: out of memory for %zu tokens", w->path, cap);
            w->mask = m;
        }
        w->cap = cap;
    }
    if (w->n_docs + 2 > w->cap_docs) {
        uint64_t *o = realloc(w->offsets, sizeof(uint64_t) * w->cap_docs * 2);
        if (!o) return dms_errf(err, "%s: out of memory", w->path);
        w->offsets = o;
        w->cap_docs *= 2;
    }
    if (n) memcpy(w->tokens + w->n, tokens, sizeof(uint32_t) * n);
    if (w->with_mask) {
        if (mask)
            for (size_t i = 0; i < n; i++) w->mask[w->n + i] = mask[i] ? 1 : 0;
        else if (n)
            memset(w->mask + w->n, 1, n);
    }
    w->n += n;
    w->offsets[++w->n_docs] = w->n;
    return 0;
}

void dms_shard_writer_set_packing(dms_shard_writer *w, dms_packing p) { w->packing = p; }

int64_t dms_shard_writer_n_tokens(const dms_shard_writer *w) { return (int64_t)w->n; }
int64_t dms_shard_writer_n_docs(const dms_shard_writer *w) { return (int64_t)w->n_docs; }

void dms_shard_writer_abort(dms_shard_writer *w) {
    if (!w) return;
    free(w->path);
    free(w->source);
    free(w->tokens);
    free(w->mask);
    free(w->offsets);
    free(w);
}

static int write_shard_file(const dms_shard_writer *w, const char *tmp) {
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return -1;
    int version = DMS_SHARD_FORMAT_VERSION;
    int rc = write_1d(f, "tokens", H5T_STD_U32LE, H5T_NATIVE_UINT32, w->tokens, w->n);
    if (!rc) rc = write_1d(f, "doc_offsets", H5T_STD_U64LE, H5T_NATIVE_UINT64, w->offsets, w->n_docs + 1);
    if (!rc && w->with_mask) rc = write_1d(f, "loss_mask", H5T_STD_U8LE, H5T_NATIVE_UINT8, w->mask, w->n);
    if (!rc) rc = write_attr_str(f, "format", DMS_SHARD_FORMAT);
    if (!rc) rc = write_attr_num(f, "format_version", H5T_STD_I32LE, H5T_NATIVE_INT, &version);
    if (!rc) rc = write_attr_num(f, "tokenizer_hash", H5T_STD_U64LE, H5T_NATIVE_UINT64, &w->hash);
    if (!rc) rc = write_attr_num(f, "max_len", H5T_STD_I32LE, H5T_NATIVE_INT, &w->max_len);
    if (!rc) rc = write_attr_num(f, "vocab_size", H5T_STD_I32LE, H5T_NATIVE_INT, &w->vocab_size);
    if (!rc) rc = write_attr_str(f, "source", w->source);
    if (!rc) rc = write_attr_str(f, "packing", dms_packing_name(w->packing));
    if (!rc && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) rc = -1;
    if (H5Fclose(f) < 0) rc = -1;
    return rc;
}

int dms_shard_writer_close(dms_shard_writer *w, dms_err *err) {
    dms_h5_quiet();
    if (w->n_docs == 0 || w->n == 0) {
        dms_errf(err, "%s: no tokens to write", w->path);
        dms_shard_writer_abort(w);
        return -1;
    }
    if (w->packing == DMS_PACK_REFERENCE) { /* every row starts at a document start */
        int ok = w->n % (size_t)w->max_len == 0;
        for (size_t d = 0, r = 0; ok && r < w->n; r += (size_t)w->max_len) {
            while (d < w->n_docs && w->offsets[d] < r) d++;
            ok = d < w->n_docs && w->offsets[d] == r;
        }
        if (!ok) {
            dms_errf(err, "%s: reference packing needs whole rows of %d tokens, each starting a document", w->path,
                     w->max_len);
            dms_shard_writer_abort(w);
            return -1;
        }
    }
    char tmp[PATH_MAX], why[256];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", w->path) >= (int)sizeof tmp) {
        dms_errf(err, "%s: path too long", w->path);
        dms_shard_writer_abort(w);
        return -1;
    }
    int rc = 0;
    if (write_shard_file(w, tmp) != 0) {
        rc = dms_errf(err, "%s: cannot write: %s", tmp, dms_h5_reason(why));
    } else if (dms_fsync_path(tmp, 0) != 0) {
        rc = dms_errf(err, "%s: fsync failed: %s", tmp, strerror(errno));
    } else if (rename(tmp, w->path) != 0) {
        rc = dms_errf(err, "%s: cannot rename to %s: %s", tmp, w->path, strerror(errno));
    } else {
        fsync_parent_dir(w->path);
    }
    if (rc) unlink(tmp);
    dms_shard_writer_abort(w);
    return rc;
}

/* ----------------------------------------------------------------- reader */

struct dms_shard {
    char *path;
    hid_t file, d_tokens, d_mask; /* d_mask < 0 without /loss_mask */
    int64_t n_tokens, n_docs;
    uint64_t *offsets;
    int max_len, vocab_size;
    dms_packing packing;
    uint64_t hash;
    char source[1024];
    uint32_t *scratch; /* validation chunk */
};

void dms_shard_close(dms_shard *s) {
    if (!s) return;
    if (s->d_mask >= 0) H5Dclose(s->d_mask);
    if (s->d_tokens >= 0) H5Dclose(s->d_tokens);
    if (s->file >= 0) H5Fclose(s->file);
    free(s->offsets);
    free(s->scratch);
    free(s->path);
    free(s);
}

/* How many times its file size a shard's datasets may declare: HDF5 filters
 * compress token streams far less than this (gzip's ceiling is ~1032:1). */
#define DMS_SHARD_MAX_EXPANSION 1024

/* Opens a 1-D integer dataset; returns its length in *n, or -1 with err. */
static hid_t open_1d(dms_shard *s, const char *name, int max_size, int need_unsigned, int64_t *n, dms_err *err) {
    if (H5Lexists(s->file, name, H5P_DEFAULT) <= 0) {
        dms_errf(err, "%s: no /%s dataset (not a token shard from dms prep)", s->path, name);
        return -1;
    }
    hid_t d = H5Dopen2(s->file, name, H5P_DEFAULT);
    if (d < 0) {
        char why[256];
        dms_errf(err, "%s: cannot open /%s: %s", s->path, name, dms_h5_reason(why));
        return -1;
    }
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    int ok = t >= 0 && sp >= 0 && H5Tget_class(t) == H5T_INTEGER && (int)H5Tget_size(t) <= max_size &&
             (!need_unsigned || H5Tget_sign(t) == H5T_SGN_NONE) && H5Sget_simple_extent_ndims(sp) == 1;
    hsize_t dims = 0, fsize = 0;
    const size_t esize = ok ? H5Tget_size(t) : 0;
    if (ok) {
        H5Sget_simple_extent_dims(sp, &dims, NULL);
        *n = (int64_t)dims;
    }
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (!ok) {
        H5Dclose(d);
        dms_errf(err, "%s: /%s must be a 1-D %sinteger dataset of at most %d bytes per element", s->path, name,
                 need_unsigned ? "unsigned " : "", max_size);
        return -1;
    }
    /* The declared length is read (scanned, or held for doc_offsets) before
     * any row: it must be data the file can really hold, not the fill values
     * of a chunked dataset never written (a few-KB file declaring 2^40
     * tokens). DMS_SHARD_MAX_EXPANSION allows for HDF5 compression. */
    if (H5Fget_filesize(s->file, &fsize) < 0 || esize == 0 ||
        (uint64_t)dims > (uint64_t)fsize * DMS_SHARD_MAX_EXPANSION / esize) {
        H5Dclose(d);
        dms_errf(err, "%s: /%s declares %llu entries of %zu bytes, more than a file of %llu bytes can hold "
                 "(at most %d times its size; corrupt?)", s->path, name, (unsigned long long)dims, esize,
                 (unsigned long long)fsize, DMS_SHARD_MAX_EXPANSION);
        return -1;
    }
    return d;
}

static int validate_attrs(dms_shard *s, uint64_t expected, dms_err *err) {
    char fmt[64];
    int r = read_attr_str(s->file, "format", fmt, sizeof fmt);
    if (r == -1) return dms_errf(err, "%s: no 'format' attribute (not a token shard from dms prep)", s->path);
    if (r < 0 || strcmp(fmt, DMS_SHARD_FORMAT) != 0)
        return dms_errf(err, "%s: format is '%s', expected '%s' (not a token shard from dms prep)", s->path, fmt,
                        DMS_SHARD_FORMAT);
    int64_t version = 0, max_len = 0, vocab = 0;
    if (read_attr_int(s->file, "format_version", H5T_NATIVE_INT64, &version) != 0)
        return dms_errf(err, "%s: missing or non-integer 'format_version' attribute", s->path);
    if (version != 1 && version != DMS_SHARD_FORMAT_VERSION)
        return dms_errf(err, "%s: format_version %" PRId64 " is not supported (this dms reads versions 1 to %d)",
                        s->path, version, DMS_SHARD_FORMAT_VERSION);
    s->packing = DMS_PACK_DOCUMENTS; /* version 1: documents back to back */
    if (version >= 2) {
        char packing[32];
        int pr = read_attr_str(s->file, "packing", packing, sizeof packing);
        if (pr != 0 || dms_packing_from_name(packing, &s->packing) != 0)
            return dms_errf(err, "%s: %s 'packing' attribute (expected \"documents\" or \"reference\")", s->path,
                            pr == -1 ? "missing" : "invalid");
    }
    if (read_attr_int(s->file, "tokenizer_hash", H5T_NATIVE_UINT64, &s->hash) != 0)
        return dms_errf(err, "%s: missing or non-integer 'tokenizer_hash' attribute", s->path);
    if (read_attr_int(s->file, "max_len", H5T_NATIVE_INT64, &max_len) != 0 || max_len <= 0)
        return dms_errf(err, "%s: missing or invalid 'max_len' attribute", s->path);
    if (max_len > DMS_SHARD_MAX_LEN)
        return dms_errf(err, "%s: max_len %" PRId64 " is over the %d tokens a training row may hold", s->path,
                        max_len, DMS_SHARD_MAX_LEN);
    if (read_attr_int(s->file, "vocab_size", H5T_NATIVE_INT64, &vocab) != 0 || vocab <= 0 || vocab > INT32_MAX)
        return dms_errf(err, "%s: missing or invalid 'vocab_size' attribute", s->path);
    s->max_len = (int)max_len;
    s->vocab_size = (int)vocab;
    if (read_attr_str(s->file, "source", s->source, sizeof s->source) == -2)
        return dms_errf(err, "%s: 'source' attribute is not a string", s->path);
    if (expected && s->hash != expected)
        return dms_errf(err,
                        "%s: made by tokenizer 0x%016" PRIx64 " but the model's tokenizer is 0x%016" PRIx64
                        " (re-run dms prep)",
                        s->path, s->hash, expected);
    return 0;
}

#define SCAN_CHUNK ((int64_t)1 << 20)

static int validate_data(dms_shard *s, dms_err *err) {
    /* offsets: start at 0, non-decreasing, end at N */
    if (s->offsets[0] != 0) return dms_errf(err, "%s: doc_offsets[0] is %" PRIu64 ", must be 0", s->path, s->offsets[0]);
    for (int64_t d = 0; d < s->n_docs; d++)
        if (s->offsets[d + 1] < s->offsets[d])
            return dms_errf(err, "%s: doc_offsets not monotonic at document %" PRId64 " (%" PRIu64 " after %" PRIu64 ")",
                            s->path, d, s->offsets[d + 1], s->offsets[d]);
    if (s->offsets[s->n_docs] != (uint64_t)s->n_tokens)
        return dms_errf(err, "%s: doc_offsets end at %" PRIu64 " but /tokens holds %" PRId64 " tokens", s->path,
                        s->offsets[s->n_docs], s->n_tokens);
    for (int64_t d = 0; d < s->n_docs; d++) /* positions inside a document are int32 */
        if (s->offsets[d + 1] - s->offsets[d] > (uint64_t)INT32_MAX)
            return dms_errf(err, "%s: document %" PRId64 " has %" PRIu64 " tokens (at most %d)", s->path, d,
                            s->offsets[d + 1] - s->offsets[d], INT32_MAX);
    if (s->packing == DMS_PACK_REFERENCE)
        for (int64_t r = 0; r < dms_shard_n_rows(s); r++)
            if (dms_shard_row_pos0(s, r) != 0)
                return dms_errf(err, "%s: reference packing, but row %" PRId64 " does not start at a document start",
                                s->path, r);
    /* token ids and mask values, chunk by chunk */
    s->scratch = malloc(sizeof(uint32_t) * SCAN_CHUNK);
    if (!s->scratch) return dms_errf(err, "%s: out of memory", s->path);
    char why[256];
    for (int64_t at = 0; at < s->n_tokens; at += SCAN_CHUNK) {
        int64_t n = s->n_tokens - at < SCAN_CHUNK ? s->n_tokens - at : SCAN_CHUNK;
        if (read_range(s->d_tokens, H5T_NATIVE_UINT32, at, n, s->scratch) != 0)
            return dms_errf(err, "%s: cannot read /tokens: %s", s->path, dms_h5_reason(why));
        for (int64_t i = 0; i < n; i++)
            if (s->scratch[i] >= (uint32_t)s->vocab_size)
                return dms_errf(err, "%s: token %" PRId64 " has id %" PRIu32 " >= vocab_size %d", s->path, at + i,
                                s->scratch[i], s->vocab_size);
        if (s->d_mask >= 0) {
            uint8_t *m = (uint8_t *)s->scratch;
            if (read_range(s->d_mask, H5T_NATIVE_UINT8, at, n, m) != 0)
                return dms_errf(err, "%s: cannot read /loss_mask: %s", s->path, dms_h5_reason(why));
            for (int64_t i = 0; i < n; i++)
                if (m[i] > 1)
                    return dms_errf(err, "%s: loss_mask[%" PRId64 "] is %d, must be 0 or 1", s->path, at + i, m[i]);
        }
    }
    free(s->scratch);
    s->scratch = NULL;
    return 0;
}

dms_shard *dms_shard_open(const char *path, uint64_t expected_tokenizer_hash, dms_err *err) {
    dms_h5_quiet();
    struct stat st;
    if (stat(path, &st) != 0) {
        dms_errf(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        dms_errf(err, "%s: not a regular file", path);
        return NULL;
    }
    dms_shard *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        dms_errf(err, "%s: out of memory", path);
        return NULL;
    }
    s->file = s->d_tokens = s->d_mask = -1;
    char why[256];
    if (H5Fis_hdf5(path) <= 0) {
        dms_h5_reason(why);
        dms_errf(err, "%s: not an HDF5 file (truncated or not a token shard)", path);
        goto fail;
    }
    s->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (s->file < 0) {
        dms_errf(err, "%s: cannot open as HDF5 (truncated or corrupt?): %s", path, dms_h5_reason(why));
        goto fail;
    }
    if (validate_attrs(s, expected_tokenizer_hash, err) != 0) goto fail;
    int64_t n_off = 0, n_mask = 0;
    if ((s->d_tokens = open_1d(s, "tokens", 4, 1, &s->n_tokens, err)) < 0) goto fail;
    hid_t d_off = open_1d(s, "doc_offsets", 8, 0, &n_off, err);
    if (d_off < 0) goto fail;
    if (n_off < 2) {
        H5Dclose(d_off);
        dms_errf(err, "%s: /doc_offsets has %" PRId64 " entries, needs at least 2 (one document)", path, n_off);
        goto fail;
    }
    s->n_docs = n_off - 1;
    s->offsets = malloc(sizeof(uint64_t) * (size_t)n_off);
    int rd = s->offsets ? read_range(d_off, H5T_NATIVE_UINT64, 0, n_off, s->offsets) : -1;
    H5Dclose(d_off);
    if (rd != 0) {
        dms_errf(err, "%s: cannot read /doc_offsets: %s", path, s->offsets ? dms_h5_reason(why) : "out of memory");
        goto fail;
    }
    if (H5Lexists(s->file, "loss_mask", H5P_DEFAULT) > 0) {
        if ((s->d_mask = open_1d(s, "loss_mask", 1, 0, &n_mask, err)) < 0) goto fail;
        if (n_mask != s->n_tokens) {
            dms_errf(err, "%s: /loss_mask has %" PRId64 " entries but /tokens has %" PRId64, path, n_mask,
                     s->n_tokens);
            goto fail;
        }
    }
    if (validate_data(s, err) != 0) goto fail;
    return s;
fail:
    H5Eclear2(H5E_DEFAULT);
    dms_shard_close(s);
    return NULL;
}

const char *dms_shard_path(const dms_shard *s) { return s->path; }
int64_t dms_shard_n_tokens(const dms_shard *s) { return s->n_tokens; }
int64_t dms_shard_n_docs(const dms_shard *s) { return s->n_docs; }
int64_t dms_shard_n_rows(const dms_shard *s) { return s->n_tokens / s->max_len; }
int dms_shard_max_len(const dms_shard *s) { return s->max_len; }
int dms_shard_vocab_size(const dms_shard *s) { return s->vocab_size; }
uint64_t dms_shard_tokenizer_hash(const dms_shard *s) { return s->hash; }
int dms_shard_has_loss_mask(const dms_shard *s) { return s->d_mask >= 0; }
const char *dms_shard_source(const dms_shard *s) { return s->source; }
dms_packing dms_shard_packing(const dms_shard *s) { return s->packing; }

/* The document holding stream position p (offsets[d] <= p < offsets[d+1];
 * empty documents are skipped: the last one starting at or before p). */
static int64_t doc_at(const dms_shard *s, uint64_t p) {
    int64_t lo = 0, hi = s->n_docs; /* offsets[lo] <= p < offsets[hi] */
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (s->offsets[mid] <= p)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

int32_t dms_shard_row_pos0(const dms_shard *s, int64_t r) {
    const uint64_t start = (uint64_t)r * (uint64_t)s->max_len;
    return (int32_t)(start - s->offsets[doc_at(s, start)]); /* documents are < 2^31 tokens (validated) */
}

int dms_shard_row(dms_shard *s, int64_t r, uint32_t *tokens, int32_t *seg, uint8_t *mask, dms_err *err) {
    dms_h5_quiet();
    int64_t n_rows = dms_shard_n_rows(s);
    if (r < 0 || r >= n_rows)
        return dms_errf(err, "%s: row %" PRId64 " out of range (shard has %" PRId64 " rows)", s->path, r, n_rows);
    const int64_t L = s->max_len, start = r * L;
    char why[256];
    if (read_range(s->d_tokens, H5T_NATIVE_UINT32, start, L, tokens) != 0)
        return dms_errf(err, "%s: cannot read row %" PRId64 " of /tokens: %s", s->path, r, dms_h5_reason(why));
    for (int64_t t = 0; t < L; t++)
        if (tokens[t] >= (uint32_t)s->vocab_size) /* the file changed since it was validated */
            return dms_errf(err, "%s: token %" PRId64 " has id %" PRIu32 " >= vocab_size %d", s->path, start + t,
                            tokens[t], s->vocab_size);
    if (mask) {
        if (s->d_mask >= 0) {
            if (read_range(s->d_mask, H5T_NATIVE_UINT8, start, L, mask) != 0)
                return dms_errf(err, "%s: cannot read row %" PRId64 " of /loss_mask: %s", s->path, r, dms_h5_reason(why));
        } else {
            memset(mask, 1, (size_t)L);
        }
    }
    if (seg && s->packing == DMS_PACK_REFERENCE) {
        memset(seg, 0, sizeof(int32_t) * (size_t)L); /* one segment: no document mask */
    } else if (seg) {
        /* d: the last document whose offset is <= start (the one holding it) */
        const int64_t lo = doc_at(s, (uint64_t)start);
        int64_t d = lo, prev = lo;
        int32_t sid = 0;
        for (int64_t t = 0; t < L; t++) {
            const uint64_t p = (uint64_t)(start + t);
            while (s->offsets[d + 1] <= p) d++;
            if (d != prev) {
                sid++;
                prev = d;
            }
            seg[t] = sid;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- dataset */

struct dms_dataset {
    dms_shard **shards;
    int64_t *row_start; /* n + 1 cumulative row counts */
    int n;
};

void dms_dataset_close(dms_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->n; i++) dms_shard_close(ds->shards[i]);
    free(ds->shards);
    free(ds->row_start);
    free(ds);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

dms_dataset *dms_dataset_open(const char *dir, uint64_t expected_tokenizer_hash, int max_len, dms_err *err) {
    struct stat st;
    if (stat(dir, &st) != 0) {
        dms_errf(err, "%s: cannot open: %s", dir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    int n = 0, cap = 0;
    if (S_ISDIR(st.st_mode)) {
        DIR *dp = opendir(dir);
        if (!dp) {
            dms_errf(err, "%s: cannot list: %s", dir, strerror(errno));
            return NULL;
        }
        struct dirent *e;
        while ((e = readdir(dp))) {
            if (e->d_name[0] == '.' || !ends_with(e->d_name, ".h5")) continue;
            char full[PATH_MAX];
            if (snprintf(full, sizeof full, "%s/%s", dir, e->d_name) >= (int)sizeof full) continue;
            struct stat fs;
            if (stat(full, &fs) != 0 || !S_ISREG(fs.st_mode)) continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                char **nn = realloc(names, sizeof(char *) * (size_t)cap);
                if (!nn) break;
                names = nn;
            }
            if (!(names[n] = strdup(full))) break;
            n++;
        }
        closedir(dp);
        if (n > 1) qsort(names, (size_t)n, sizeof(char *), cmp_str);
    } else {
        names = malloc(sizeof(char *));
        if (names && (names[0] = strdup(dir))) n = 1;
    }
    dms_dataset *ds = NULL;
    if (n == 0) {
        dms_errf(err, "%s: no *.h5 token shards (make them with dms prep)", dir);
        goto done;
    }
    ds = calloc(1, sizeof *ds);
    if (!ds || !(ds->shards = calloc((size_t)n, sizeof(dms_shard *))) ||
        !(ds->row_start = calloc((size_t)n + 1, sizeof(int64_t)))) {
        dms_errf(err, "%s: out of memory", dir);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        dms_shard *s = dms_shard_open(names[i], expected_tokenizer_hash, err);
        if (!s) goto fail;
        ds->shards[ds->n++] = s;
        if (s->max_len != max_len) {
            dms_errf(err, "%s: packed for max_len %d but the run uses max_len %d (re-run dms prep --max-len %d)",
                     s->path, s->max_len, max_len, max_len);
            goto fail;
        }
        if (s->packing != ds->shards[0]->packing) {
            dms_errf(err, "%s: packed as %s but %s was packed as %s (one packing per dataset)", s->path,
                     dms_packing_name(s->packing), ds->shards[0]->path, dms_packing_name(ds->shards[0]->packing));
            goto fail;
        }
        ds->row_start[i + 1] = ds->row_start[i] + dms_shard_n_rows(s);
    }
    if (ds->row_start[n] == 0) {
        dms_errf(err, "%s: the shards hold no full row of %d tokens", dir, max_len);
        goto fail;
    }
    goto done;
fail:
    dms_dataset_close(ds);
    ds = NULL;
done:
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return ds;
}

int64_t dms_dataset_n_rows(const dms_dataset *ds) { return ds->row_start[ds->n]; }
int64_t dms_dataset_n_tokens(const dms_dataset *ds) {
    return ds->row_start[ds->n] * (int64_t)ds->shards[0]->max_len;
}
int dms_dataset_n_shards(const dms_dataset *ds) { return ds->n; }
dms_packing dms_dataset_packing(const dms_dataset *ds) { return ds->shards[0]->packing; }
dms_shard *dms_dataset_shard(dms_dataset *ds, int i) { return i >= 0 && i < ds->n ? ds->shards[i] : NULL; }

/* The shard holding global row `row` (0 <= row < n_rows). */
static int shard_of_row(const dms_dataset *ds, int64_t row) {
    int lo = 0, hi = ds->n; /* row_start[lo] <= row < row_start[hi] */
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (ds->row_start[mid] <= row)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

int dms_dataset_row(dms_dataset *ds, int64_t global_row, uint32_t *tokens, int32_t *seg, uint8_t *mask,
                    dms_err *err) {
    if (global_row < 0 || global_row >= dms_dataset_n_rows(ds))
        return dms_errf(err, "%s: row %" PRId64 " out of range (dataset has %" PRId64 " rows)", ds->shards[0]->path,
                        global_row, dms_dataset_n_rows(ds));
    const int i = shard_of_row(ds, global_row);
    return dms_shard_row(ds->shards[i], global_row - ds->row_start[i], tokens, seg, mask, err);
}

int32_t dms_dataset_row_pos0(const dms_dataset *ds, int64_t global_row) {
    const int i = shard_of_row(ds, global_row);
    return dms_shard_row_pos0(ds->shards[i], global_row - ds->row_start[i]);
}
