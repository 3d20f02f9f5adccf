/* checkpoint.c - atomic HDF5 training checkpoints (checkpoint.h): the
 * in-memory state, the temp-file/fsync/rename save with pruning, a CRC32
 * (zlib) of every dataset's bytes checked when a file is opened, discovery
 * of the newest complete checkpoint, and on-demand reads with type and size
 * checks. HDF5's own error printing is off; failures become one line that
 * names the file and the innermost HDF5 (or OS) reason. */
#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/fault_point.h"
#include "core/fs.h"
#include "core/h5util.h"

/* The checksums are taken over the bytes as stored (little-endian). */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint checksums assume a little-endian host"
#endif

typedef enum { ENT_TENSOR, ENT_I64, ENT_STR } ent_kind;

typedef struct {
    char *name;
    ent_kind kind;
    int n_dims;
    int64_t shape[DMS_CKPT_MAX_DIMS];
    size_t n;    /* elements (tensor) */
    float *data; /* tensor */
    int64_t i64;
    char *str;
} ckpt_entry;

struct dms_ckpt {
    /* a state being built */
    ckpt_entry *e;
    size_t n, cap;
    char bad[512]; /* first problem met while adding; reported by save */
    /* an opened file */
    hid_t file;
    char *path;
    int64_t step;
    int verified; /* every dataset matched its stored CRC32 */
};

/* ---------------------------------------------------------------- helpers */

/* Whether every component of a '/'-separated name exists under loc. */
static int h5_exists(hid_t loc, const char *name) {
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s", name) >= (int)sizeof buf || !buf[0]) return 0;
    for (char *p = buf;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (H5Lexists(loc, buf, H5P_DEFAULT) <= 0) return 0;
            if (!c) return 1;
            *p = c;
        }
    }
}

/* zlib's CRC-32 over n bytes (zlib takes at most 4 GiB at a time). */
static uint32_t crc_bytes(uint32_t crc, const void *buf, size_t n) {
    const unsigned char *p = buf;
    while (n > 0) {
        const uInt piece = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, p, piece);
        p += piece;
        n -= piece;
    }
    return crc;
}

/* Stores the CRC-32 of a dataset's bytes as its "crc32" attribute. */
static int write_crc(hid_t d, uint32_t crc) {
    hid_t sp = H5Screate(H5S_SCALAR);
    if (sp < 0) return -1;
    hid_t a = H5Acreate2(d, DMS_CKPT_CRC_ATTR, H5T_STD_U32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, H5T_NATIVE_UINT32, &crc) >= 0 ? 0 : -1;
    if (a >= 0 && H5Aclose(a) < 0) rc = -1;
    H5Sclose(sp);
    return rc;
}

/* ------------------------------------------------------------------ state */

dms_ckpt *dms_ckpt_new(void) {
    dms_ckpt *ck = calloc(1, sizeof *ck);
    if (ck) {
        ck->file = -1;
        ck->step = -1;
    }
    return ck;
}

void dms_ckpt_free(dms_ckpt *ck) {
    if (!ck) return;
    for (size_t i = 0; i < ck->n; i++) {
        free(ck->e[i].name);
        free(ck->e[i].data);
        free(ck->e[i].str);
    }
    free(ck->e);
    if (ck->file >= 0) H5Fclose(ck->file);
    free(ck->path);
    free(ck);
}

static int remember(dms_ckpt *ck, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int remember(dms_ckpt *ck, const char *fmt, ...) {
    if (ck->bad[0]) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ck->bad, sizeof ck->bad, fmt, ap);
    va_end(ap);
    return -1;
}

/* Checks the name and appends an entry; NULL (problem remembered) on failure. */
static ckpt_entry *add_entry(dms_ckpt *ck, const char *name, ent_kind kind) {
    if (!ck) return NULL;
    if (ck->file >= 0) {
        remember(ck, "entry '%s' added to a loaded checkpoint", name);
        return NULL;
    }
    if (!name || !name[0] || name[0] == '/' || name[strlen(name) - 1] == '/' || strstr(name, "//") ||
        strlen(name) >= 1000) {
        remember(ck, "bad checkpoint entry name '%s'", name ? name : "(null)");
        return NULL;
    }
    for (const char *p = name; *p;) { /* no "." or ".." components */
        const char *q = strchr(p, '/');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.')) {
            remember(ck, "bad checkpoint entry name '%s'", name);
            return NULL;
        }
        p += len + (q ? 1 : 0);
    }
    const size_t ln = strlen(name);
    for (size_t i = 0; i < ck->n; i++) {
        const char *o = ck->e[i].name;
        const size_t lo = strlen(o);
        if (!strcmp(o, name)) {
            remember(ck, "checkpoint entry '%s' added twice", name);
            return NULL;
        }
        if ((lo < ln && !strncmp(o, name, lo) && name[lo] == '/') ||
            (ln < lo && !strncmp(o, name, ln) && o[ln] == '/')) {
            remember(ck, "checkpoint entry '%s' clashes with a group of the same name", name);
            return NULL;
        }
    }
    if (ck->n == ck->cap) {
        size_t cap = ck->cap ? ck->cap * 2 : 64;
        ckpt_entry *e = realloc(ck->e, sizeof *e * cap);
        if (!e) {
            remember(ck, "out of memory adding '%s'", name);
            return NULL;
        }
        ck->e = e;
        ck->cap = cap;
    }
    ckpt_entry *e = &ck->e[ck->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = strdup(name))) {
        remember(ck, "out of memory adding '%s'", name);
        return NULL;
    }
    e->kind = kind;
    ck->n++;
    return e;
}

static void drop_last(dms_ckpt *ck) {
    ck->n--;
    free(ck->e[ck->n].name);
}

int dms_ckpt_add_tensor(dms_ckpt *ck, const char *name, const float *data, int n_dims, const int64_t *shape) {
    if (!ck) return -1;
    if (n_dims < 0 || n_dims > DMS_CKPT_MAX_DIMS || (n_dims > 0 && !shape))
        return remember(ck, "tensor '%s': bad number of dimensions", name ? name : "(null)");
    size_t n = 1;
    for (int d = 0; d < n_dims; d++) {
        if (shape[d] < 0) return remember(ck, "tensor '%s': negative dimension", name ? name : "(null)");
        n *= (size_t)shape[d];
    }
    if (n && !data) return remember(ck, "tensor '%s': no data", name ? name : "(null)");
    ckpt_entry *e = add_entry(ck, name, ENT_TENSOR);
    if (!e) return -1;
    e->n_dims = n_dims;
    for (int d = 0; d < n_dims; d++) e->shape[d] = shape[d];
    e->n = n;
    if (n) {
        if (!(e->data = malloc(sizeof(float) * n))) {
            drop_last(ck);
            return remember(ck, "out of memory copying tensor '%s'", name);
        }
        memcpy(e->data, data, sizeof(float) * n);
    }
    return 0;
}

int dms_ckpt_add_i64(dms_ckpt *ck, const char *name, int64_t value) {
    ckpt_entry *e = add_entry(ck, name, ENT_I64);
    if (!e) return -1;
    e->i64 = value;
    return 0;
}

int dms_ckpt_add_str(dms_ckpt *ck, const char *name, const char *text) {
    ckpt_entry *e = add_entry(ck, name, ENT_STR);
    if (!e) return -1;
    if (!(e->str = strdup(text ? text : ""))) {
        drop_last(ck);
        return remember(ck, "out of memory copying string '%s'", name);
    }
    return 0;
}

/* ------------------------------------------------------------------- save */

void dms_ckpt_path(char *out, size_t cap, const char *dir, int64_t step) {
    snprintf(out, cap, "%s/ckpt-%08" PRId64 ".h5", dir, step);
}

static int write_str(hid_t loc, const char *name, const char *text, hid_t lcpl, int attr) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    int rc = -1;
    if (H5Tset_size(t, strlen(text) + 1) >= 0 && H5Tset_strpad(t, H5T_STR_NULLTERM) >= 0) {
        hid_t sp = H5Screate(H5S_SCALAR);
        if (sp >= 0) {
            if (attr) {
                hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
                if (a >= 0 && H5Awrite(a, t, text) >= 0) rc = 0;
                if (a >= 0 && H5Aclose(a) < 0) rc = -1;
            } else {
                hid_t d = H5Dcreate2(loc, name, t, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
                if (d >= 0 && H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, text) >= 0 &&
                    write_crc(d, crc_bytes(0, text, strlen(text) + 1)) == 0)
                    rc = 0;
                if (d >= 0 && H5Dclose(d) < 0) rc = -1;
            }
            H5Sclose(sp);
        }
    }
    H5Tclose(t);
    return rc;
}

static int write_i64(hid_t loc, const char *name, int64_t v, hid_t lcpl, int attr) {
    hid_t sp = H5Screate(H5S_SCALAR);
    if (sp < 0) return -1;
    int rc = -1;
    if (attr) {
        hid_t a = H5Acreate2(loc, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        if (a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0) rc = 0;
        if (a >= 0 && H5Aclose(a) < 0) rc = -1;
    } else {
        hid_t d = H5Dcreate2(loc, name, H5T_STD_I64LE, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
        if (d >= 0 && H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) >= 0 &&
            write_crc(d, crc_bytes(0, &v, sizeof v)) == 0)
            rc = 0;
        if (d >= 0 && H5Dclose(d) < 0) rc = -1;
    }
    H5Sclose(sp);
    return rc;
}

static int write_tensor(hid_t f, const ckpt_entry *e, hid_t lcpl) {
    hsize_t dims[DMS_CKPT_MAX_DIMS];
    for (int d = 0; d < e->n_dims; d++) dims[d] = (hsize_t)e->shape[d];
    hid_t sp = e->n_dims ? H5Screate_simple(e->n_dims, dims, NULL) : H5Screate(H5S_SCALAR);
    if (sp < 0) return -1;
    /* native float32 in memory, IEEE float32 little-endian on disk: on
     * x86/ARM little-endian hosts HDF5 copies the bits unchanged. */
    hid_t d = H5Dcreate2(f, e->name, H5T_IEEE_F32LE, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    int rc = d >= 0 && (e->n == 0 || H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, e->data) >= 0) &&
                     write_crc(d, e->n ? crc_bytes(0, e->data, sizeof(float) * e->n) : 0) == 0
                 ? 0
                 : -1;
    if (d >= 0 && H5Dclose(d) < 0) rc = -1;
    H5Sclose(sp);
    return rc;
}

/* The checkpoint is built as an HDF5 image in memory (core driver, no
 * backing store) and written to disk with plain write(2): an I/O error such
 * as a full disk then surfaces as an errno here, and HDF5 is never left
 * holding a half-written file (whose flush at exit would crash). */
static int write_image(const char *tmp, const void *buf, size_t n, int64_t step, const char **what) {
    *what = "create";
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    *what = "write";
    const char *p = buf;
    const size_t half = n / 2;
    size_t done = 0;
    while (done < n) {
        /* the fault drills' point: half of the bytes are in the .tmp file */
        int fault = done == half ? dms_fault_point("ckpt_write", (long)step) : 0;
        ssize_t w = fault ? -1 : write(fd, p + done, (done < half ? half : n) - done);
        if (w < 0 && !fault && errno == EINTR) continue;
        if (w <= 0) {
            int e = fault ? fault : w < 0 ? errno : EIO;
            close(fd);
            errno = e;
            return -1;
        }
        done += (size_t)w;
    }
    return close(fd);
}

/* Builds the whole file in memory and writes it to tmp; -1 on the first
 * failure, with errno set for I/O errors. */
static int write_file(const char *tmp, const dms_ckpt *ck, int64_t step, const char **what) {
    *what = "create";
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fapl_core(fapl, 1 << 20, 0) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        return -1;
    }
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) return -1;
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    int rc = lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) >= 0 ? 0 : -1;
    int version = DMS_CKPT_FORMAT_VERSION;
    *what = "write";
    if (!rc) rc = write_str(f, "format", DMS_CKPT_FORMAT, H5P_DEFAULT, 1);
    if (!rc) rc = write_str(f, "checksum", DMS_CKPT_CHECKSUM, H5P_DEFAULT, 1);
    if (!rc) {
        hid_t sp = H5Screate(H5S_SCALAR);
        hid_t a = sp >= 0 ? H5Acreate2(f, "format_version", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
        rc = a >= 0 && H5Awrite(a, H5T_NATIVE_INT, &version) >= 0 ? 0 : -1;
        if (a >= 0 && H5Aclose(a) < 0) rc = -1;
        if (sp >= 0) H5Sclose(sp);
    }
    if (!rc) rc = write_i64(f, "step", step, H5P_DEFAULT, 1);
    for (size_t i = 0; !rc && i < ck->n; i++) {
        const ckpt_entry *e = &ck->e[i];
        if (e->kind == ENT_TENSOR) rc = write_tensor(f, e, lcpl);
        else if (e->kind == ENT_I64) rc = write_i64(f, e->name, e->i64, lcpl, 0);
        else rc = write_str(f, e->name, e->str, lcpl, 0);
    }
    if (lcpl >= 0) H5Pclose(lcpl);
    void *image = NULL;
    ssize_t size = -1;
    if (!rc) {
        *what = "flush";
        if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) rc = -1;
    }
    if (!rc) {
        *what = "build";
        size = H5Fget_file_image(f, NULL, 0);
        image = size > 0 ? malloc((size_t)size) : NULL;
        if (!image || H5Fget_file_image(f, image, (size_t)size) != size) rc = -1;
    }
    if (H5Fclose(f) < 0 && !rc) {
        *what = "close";
        rc = -1;
    }
    errno = 0;
    if (!rc) rc = write_image(tmp, image, (size_t)size, step, what);
    free(image);
    return rc;
}

/* Parses "ckpt-<digits>.h5" (tmp = 0) or "ckpt-<digits>.h5.tmp" (tmp = 1). */
static int parse_name(const char *s, int64_t *step, int *tmp) {
    if (strncmp(s, "ckpt-", 5) != 0) return 0;
    const char *p = s + 5, *q = p;
    while (*q >= '0' && *q <= '9') q++;
    if (q == p || q - p > 18) return 0;
    if (!strcmp(q, ".h5")) *tmp = 0;
    else if (!strcmp(q, ".h5.tmp")) *tmp = 1;
    else return 0;
    *step = strtoll(p, NULL, 10);
    return 1;
}

typedef struct {
    int64_t *steps;
    size_t n;
} step_list;

/* The steps of the complete checkpoints in dir (tmp leftovers removed when
 * remove_tmp). -1 with err if dir cannot be listed; ENOENT gives an empty list. */
static int list_ckpts(const char *dir, step_list *out, int remove_tmp, dms_err *err) {
    out->steps = NULL;
    out->n = 0;
    DIR *dp = opendir(dir);
    if (!dp) {
        if (errno == ENOENT) return 0;
        return dms_errf(err, "%s: cannot list checkpoints: %s", dir, strerror(errno));
    }
    size_t cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(dp))) {
        int64_t step;
        int tmp;
        if (!parse_name(de->d_name, &step, &tmp)) continue;
        char full[PATH_MAX];
        if (snprintf(full, sizeof full, "%s/%s", dir, de->d_name) >= (int)sizeof full) continue;
        if (tmp) {
            if (remove_tmp) unlink(full);
            continue;
        }
        if (!dms_is_file(full)) continue;
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *s = realloc(out->steps, sizeof(int64_t) * cap);
            if (!s) {
                rc = dms_errf(err, "%s: out of memory", dir);
                break;
            }
            out->steps = s;
        }
        out->steps[out->n++] = step;
    }
    closedir(dp);
    return rc;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void prune(const char *dir, int64_t keep_step, int keep_last) {
    if (keep_last <= 0) return;
    step_list l;
    if (list_ckpts(dir, &l, 0, NULL) != 0) return;
    qsort(l.steps, l.n, sizeof(int64_t), cmp_i64);
    size_t others = 0;
    for (size_t i = 0; i < l.n; i++) others += l.steps[i] != keep_step;
    size_t excess = others > (size_t)(keep_last - 1) ? others - (size_t)(keep_last - 1) : 0;
    int removed = 0;
    for (size_t i = 0; i < l.n && excess; i++) {
        if (l.steps[i] == keep_step) continue;
        char p[PATH_MAX];
        dms_ckpt_path(p, sizeof p, dir, l.steps[i]);
        if (unlink(p) == 0) removed = 1;
        excess--;
    }
    if (removed) dms_fsync_path(dir, 1);
    free(l.steps);
}

int dms_ckpt_save(const char *dir, int64_t step, const dms_ckpt *ck, int keep_last, dms_err *err) {
    dms_h5_quiet();
    if (!ck) return dms_errf(err, "%s: no checkpoint state (out of memory?)", dir);
    if (ck->file >= 0) return dms_errf(err, "%s: cannot save an opened checkpoint (%s)", dir, ck->path);
    if (ck->bad[0]) return dms_errf(err, "%s: %s", dir, ck->bad);
    if (step < 0) return dms_errf(err, "%s: negative step %" PRId64, dir, step);
    if (dms_mkdir_p(dir, err) != 0) return -1;
    char path[PATH_MAX], tmp[PATH_MAX + 8], why[256];
    dms_ckpt_path(path, sizeof path, dir, step);
    if (strlen(path) >= sizeof path - 1) return dms_errf(err, "%s: path too long", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    const char *what = "write";
    int rc = 0;
    if (write_file(tmp, ck, step, &what) != 0) {
        const int e = errno;
        rc = dms_errf(err, "%s: cannot %s checkpoint: %s", tmp, what, e ? strerror(e) : dms_h5_reason(why));
    }
    else if (dms_fsync_path(tmp, 0) != 0)
        rc = dms_errf(err, "%s: fsync failed: %s", tmp, strerror(errno));
    else if (rename(tmp, path) != 0)
        rc = dms_errf(err, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (rc) {
        unlink(tmp);
        return rc;
    }
    dms_fsync_path(dir, 1);
    prune(dir, step, keep_last);
    return 0;
}

/* The newest complete checkpoint of a step below `below` (tmp leftovers
 * removed when remove_tmp). */
static int latest_below(const char *dir, int64_t below, int remove_tmp, char *path_out, size_t cap, int64_t *step_out,
                        dms_err *err) {
    if (cap) path_out[0] = '\0';
    step_list l;
    if (list_ckpts(dir, &l, remove_tmp, err) != 0) return -1;
    int64_t best = -1;
    for (size_t i = 0; i < l.n; i++)
        if (l.steps[i] < below && l.steps[i] > best) best = l.steps[i];
    free(l.steps);
    if (best < 0) return 0;
    if (step_out) *step_out = best;
    char p[PATH_MAX];
    dms_ckpt_path(p, sizeof p, dir, best);
    if (strlen(p) >= cap) return dms_errf(err, "%s: path too long", p);
    memcpy(path_out, p, strlen(p) + 1);
    return 1;
}

int dms_ckpt_latest(const char *dir, char *path_out, size_t cap, dms_err *err) {
    return latest_below(dir, INT64_MAX, 1, path_out, cap, NULL, err);
}

int dms_ckpt_latest_before(const char *dir, int64_t below, char *path_out, size_t cap, int64_t *step_out,
                           dms_err *err) {
    return latest_below(dir, below, 0, path_out, cap, step_out, err);
}

/* ------------------------------------------------------------------- load */

/* Whether an attribute holds exactly one element (reading a bigger one into
 * a scalar would write past it). */
static int attr_is_scalar(hid_t a) {
    hid_t sp = H5Aget_space(a);
    const hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (sp >= 0) H5Sclose(sp);
    return n == 1;
}

/* Whether a dataset's declared size (its dimensions x element bytes,
 * overflow-checked) fits in the file: dms_ckpt_save stores every entry
 * uncompressed, so anything bigger is a corrupt or foreign file whose read
 * would be huge (the fill values of a chunked dataset never written). */
static int entry_fits(hid_t d) {
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d), file = H5Iget_file_id(d);
    hsize_t fsize = 0, dims[H5S_MAX_RANK];
    const int nd = sp >= 0 ? H5Sget_simple_extent_dims(sp, dims, NULL) : -1;
    uint64_t bytes = t >= 0 ? (uint64_t)H5Tget_size(t) : 0;
    int ok = nd >= 0 && bytes > 0 && file >= 0 && H5Fget_filesize(file, &fsize) >= 0;
    for (int i = 0; ok && i < nd; i++) {
        if (dims[i] && bytes > (uint64_t)fsize / dims[i]) ok = 0;
        else bytes *= dims[i];
    }
    if (file >= 0) H5Fclose(file);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    return ok && bytes <= (uint64_t)fsize;
}

typedef struct {
    const char *path;
    dms_err *err;
    int failed;
} verify_ctx;

/* Reads a dataset's stored bytes (its own file type as the memory type: no
 * conversion) and compares their CRC-32 with its "crc32" attribute. */
static int verify_dataset(hid_t d, const char *name, verify_ctx *v) {
    char why[256];
    if (H5Aexists(d, DMS_CKPT_CRC_ATTR) <= 0)
        return dms_errf(v->err, "%s: dataset '%s' has no checksum although the file has them (corrupt)", v->path, name);
    uint32_t stored = 0;
    hid_t a = H5Aopen(d, DMS_CKPT_CRC_ATTR, H5P_DEFAULT);
    int ok = a >= 0 && attr_is_scalar(a) && H5Aread(a, H5T_NATIVE_UINT32, &stored) >= 0;
    if (a >= 0) H5Aclose(a);
    if (!ok) return dms_errf(v->err, "%s: cannot read the checksum of '%s': %s", v->path, name, dms_h5_reason(why));
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    const hssize_t npts = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    const size_t tsize = t >= 0 ? H5Tget_size(t) : 0;
    int rc = 0;
    uint32_t crc = 0;
    if (npts < 0 || tsize == 0) {
        rc = dms_errf(v->err, "%s: cannot inspect dataset '%s': %s", v->path, name, dms_h5_reason(why));
    } else if (H5Tis_variable_str(t) != 0 || H5Tdetect_class(t, H5T_VLEN) != 0) {
        /* read as stored, HDF5 would allocate every element (and the bytes
         * summed would be pointers); dms writes fixed-size data only */
        rc = dms_errf(v->err, "%s: dataset '%s' holds variable-length data, which dms never writes (corrupt or not a "
                      "dms checkpoint)", v->path, name);
    } else if (!entry_fits(d)) {
        rc = dms_errf(v->err, "%s: dataset '%s' declares more data than the whole file holds (corrupt)", v->path, name);
    } else if (npts > 0) {
        const size_t bytes = (size_t)npts * tsize;
        void *buf = malloc(bytes);
        if (!buf) rc = dms_errf(v->err, "%s: out of memory checking '%s'", v->path, name);
        else if (H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
            rc = dms_errf(v->err, "%s: cannot read '%s' (truncated or corrupt?): %s", v->path, name, dms_h5_reason(why));
        else crc = crc_bytes(0, buf, bytes);
        free(buf);
    }
    if (rc == 0 && crc != stored)
        rc = dms_errf(v->err, "%s: checksum mismatch in '%s' (crc32 %08x, stored %08x): the checkpoint is corrupt",
                      v->path, name, (unsigned)crc, (unsigned)stored);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    return rc;
}

static herr_t verify_link(hid_t g, const char *name, const H5L_info_t *info, void *op) {
    verify_ctx *v = op;
    if (info->type != H5L_TYPE_HARD) return 0;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) {
        char why[256];
        dms_errf(v->err, "%s: cannot open '%s' (truncated or corrupt?): %s", v->path, name, dms_h5_reason(why));
        v->failed = 1;
        return -1;
    }
    int rc = H5Iget_type(o) == H5I_DATASET ? verify_dataset(o, name, v) : 0;
    H5Oclose(o);
    if (rc != 0) {
        v->failed = 1;
        return -1;
    }
    return 0;
}

/* Every dataset of an opened file against its stored CRC-32; 0 when all
 * match, -1 with err on the first that does not (or cannot be read). */
static int verify_all(const dms_ckpt *ck, dms_err *err) {
    verify_ctx v = {ck->path, err, 0};
    herr_t r = H5Lvisit(ck->file, H5_INDEX_NAME, H5_ITER_INC, verify_link, &v);
    if (r < 0 && !v.failed) {
        char why[256];
        return dms_errf(err, "%s: cannot list the checkpoint's datasets (truncated or corrupt?): %s", ck->path,
                        dms_h5_reason(why));
    }
    return v.failed ? -1 : 0;
}

dms_ckpt *dms_ckpt_load(const char *path, dms_err *err) {
    dms_h5_quiet();
    char why[256];
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        dms_errf(err, "%s: cannot open checkpoint: %s", path,
                 S_ISDIR(st.st_mode) ? "is a folder" : strerror(errno));
        return NULL;
    }
    if (H5Fis_hdf5(path) <= 0) {
        dms_h5_reason(why);
        dms_errf(err, "%s: not an HDF5 checkpoint (truncated or another kind of file)", path);
        return NULL;
    }
    dms_ckpt *ck = dms_ckpt_new();
    if (!ck || !(ck->path = strdup(path))) {
        dms_ckpt_free(ck);
        dms_errf(err, "%s: out of memory", path);
        return NULL;
    }
    ck->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (ck->file < 0) {
        dms_errf(err, "%s: cannot open checkpoint (truncated or corrupt?): %s", path, dms_h5_reason(why));
        goto fail;
    }
    /* format tag */
    char fmt[64] = "";
    int ok = 0;
    if (H5Aexists(ck->file, "format") > 0) {
        hid_t a = H5Aopen(ck->file, "format", H5P_DEFAULT);
        hid_t t = a >= 0 ? H5Aget_type(a) : -1;
        if (t >= 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0 && H5Tget_size(t) < sizeof fmt &&
            attr_is_scalar(a) && H5Aread(a, t, fmt) >= 0)
            ok = !strcmp(fmt, DMS_CKPT_FORMAT);
        if (t >= 0) H5Tclose(t);
        if (a >= 0) H5Aclose(a);
    }
    if (!ok) {
        dms_errf(err, "%s: not a dms checkpoint (no format = \"%s\" attribute)", path, DMS_CKPT_FORMAT);
        goto fail;
    }
    int64_t version = 0;
    hid_t a = H5Aexists(ck->file, "format_version") > 0 ? H5Aopen(ck->file, "format_version", H5P_DEFAULT) : -1;
    ok = a >= 0 && attr_is_scalar(a) && H5Aread(a, H5T_NATIVE_INT64, &version) >= 0;
    if (a >= 0) H5Aclose(a);
    if (!ok || version != DMS_CKPT_FORMAT_VERSION) {
        dms_errf(err, "%s: checkpoint format_version %" PRId64 " is not supported (this dms reads version %d)", path,
                 version, DMS_CKPT_FORMAT_VERSION);
        goto fail;
    }
    a = H5Aexists(ck->file, "step") > 0 ? H5Aopen(ck->file, "step", H5P_DEFAULT) : -1;
    ok = a >= 0 && attr_is_scalar(a) && H5Aread(a, H5T_NATIVE_INT64, &ck->step) >= 0;
    if (a >= 0) H5Aclose(a);
    if (!ok) {
        dms_errf(err, "%s: checkpoint has no step attribute", path);
        goto fail;
    }
    /* files written before checksums existed have no "checksum" attribute:
     * they load unverified (dms_ckpt_verified says so) */
    if (H5Aexists(ck->file, "checksum") > 0) {
        char algo[32] = "";
        a = H5Aopen(ck->file, "checksum", H5P_DEFAULT);
        hid_t t = a >= 0 ? H5Aget_type(a) : -1;
        ok = t >= 0 && H5Tget_class(t) == H5T_STRING && H5Tis_variable_str(t) == 0 && H5Tget_size(t) < sizeof algo &&
             attr_is_scalar(a) && H5Aread(a, t, algo) >= 0;
        if (t >= 0) H5Tclose(t);
        if (a >= 0) H5Aclose(a);
        if (!ok || strcmp(algo, DMS_CKPT_CHECKSUM) != 0) {
            dms_errf(err, "%s: unknown checkpoint checksum '%s' (this dms checks %s)", path, algo, DMS_CKPT_CHECKSUM);
            goto fail;
        }
        if (verify_all(ck, err) != 0) goto fail;
        ck->verified = 1;
    }
    return ck;
fail:
    H5Eclear2(H5E_DEFAULT);
    dms_ckpt_free(ck);
    return NULL;
}

int64_t dms_ckpt_step(const dms_ckpt *ck) { return ck->step; }

int dms_ckpt_verified(const dms_ckpt *ck) { return ck->verified; }

int dms_ckpt_has(const dms_ckpt *ck, const char *name) {
    dms_h5_quiet();
    if (ck->file < 0) {
        for (size_t i = 0; i < ck->n; i++)
            if (!strcmp(ck->e[i].name, name)) return 1;
        return 0;
    }
    int r = h5_exists(ck->file, name);
    H5Eclear2(H5E_DEFAULT);
    return r;
}

/* Opens a dataset of the loaded file; on failure -1 with err. */
static hid_t open_entry(const dms_ckpt *ck, const char *name, const char *kind, dms_err *err) {
    dms_h5_quiet();
    if (ck->file < 0) {
        dms_errf(err, "checkpoint: %s '%s' read from a state that was not loaded from a file", kind, name);
        return -1;
    }
    if (!h5_exists(ck->file, name)) {
        H5Eclear2(H5E_DEFAULT);
        dms_errf(err, "%s: checkpoint has no %s '%s'", ck->path, kind, name);
        return -1;
    }
    hid_t d = H5Dopen2(ck->file, name, H5P_DEFAULT);
    if (d < 0) {
        char why[256];
        dms_errf(err, "%s: cannot open %s '%s': %s", ck->path, kind, name, dms_h5_reason(why));
    } else if (!entry_fits(d)) {
        H5Dclose(d);
        H5Eclear2(H5E_DEFAULT);
        dms_errf(err, "%s: %s '%s' declares more data than the whole file holds (corrupt)", ck->path, kind, name);
        return -1;
    }
    return d;
}

int dms_ckpt_tensor_shape(const dms_ckpt *ck, const char *name, int *n_dims, int64_t *shape, dms_err *err) {
    hid_t d = open_entry(ck, name, "tensor", err);
    if (d < 0) return -1;
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    int rc = 0;
    if (t < 0 || H5Tget_class(t) != H5T_FLOAT || H5Tget_size(t) != 4) {
        rc = dms_errf(err, "%s: '%s' is not a float32 tensor", ck->path, name);
    } else if (nd < 0 || nd > DMS_CKPT_MAX_DIMS) {
        rc = dms_errf(err, "%s: tensor '%s' has an unsupported rank", ck->path, name);
    } else {
        hsize_t dims[DMS_CKPT_MAX_DIMS];
        H5Sget_simple_extent_dims(sp, dims, NULL);
        *n_dims = nd;
        for (int i = 0; i < nd; i++) shape[i] = (int64_t)dims[i];
    }
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    H5Dclose(d);
    return rc;
}

static void shape_str(char *out, size_t cap, int nd, const int64_t *shape) {
    size_t at = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < nd && at < cap; i++) at += (size_t)snprintf(out + at, cap - at, "%s%" PRId64, i ? "x" : "", shape[i]);
    if (at < cap) snprintf(out + at, cap - at, "]");
}

int dms_ckpt_read_tensor(const dms_ckpt *ck, const char *name, float *out, size_t n_elems, dms_err *err) {
    int nd = 0;
    int64_t shape[DMS_CKPT_MAX_DIMS];
    if (dms_ckpt_tensor_shape(ck, name, &nd, shape, err) != 0) return -1;
    size_t n = 1;
    for (int i = 0; i < nd; i++) n *= (size_t)shape[i];
    if (n != n_elems) {
        char s[160];
        shape_str(s, sizeof s, nd, shape);
        return dms_errf(err, "%s: tensor '%s' has %zu elements %s, expected %zu", ck->path, name, n, s, n_elems);
    }
    if (n == 0) return 0;
    hid_t d = open_entry(ck, name, "tensor", err);
    if (d < 0) return -1;
    char why[256];
    int rc = H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0
                 ? 0
                 : dms_errf(err, "%s: cannot read tensor '%s': %s", ck->path, name, dms_h5_reason(why));
    H5Dclose(d);
    return rc;
}

int dms_ckpt_read_i64(const dms_ckpt *ck, const char *name, int64_t *out, dms_err *err) {
    hid_t d = open_entry(ck, name, "integer", err);
    if (d < 0) return -1;
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    int rc;
    char why[256];
    if (t < 0 || sp < 0 || H5Tget_class(t) != H5T_INTEGER || H5Sget_simple_extent_npoints(sp) != 1)
        rc = dms_errf(err, "%s: '%s' is not an integer scalar", ck->path, name);
    else if (H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        rc = dms_errf(err, "%s: cannot read '%s': %s", ck->path, name, dms_h5_reason(why));
    else
        rc = 0;
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    H5Dclose(d);
    return rc;
}

char *dms_ckpt_read_str(const dms_ckpt *ck, const char *name, dms_err *err) {
    hid_t d = open_entry(ck, name, "string", err);
    if (d < 0) return NULL;
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    char *res = NULL, why[256];
    if (t < 0 || sp < 0 || H5Tget_class(t) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1) {
        dms_errf(err, "%s: '%s' is not a string", ck->path, name);
    } else if (H5Tis_variable_str(t) > 0) {
        char *s = NULL;
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, &s) >= 0 && s) res = strdup(s);
        else dms_errf(err, "%s: cannot read '%s': %s", ck->path, name, dms_h5_reason(why));
        if (s) H5free_memory(s);
        H5Tclose(mt);
    } else {
        size_t sz = H5Tget_size(t);
        res = calloc(sz + 1, 1);
        if (!res) {
            dms_errf(err, "%s: out of memory reading '%s'", ck->path, name);
        } else if (H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, res) < 0) {
            dms_errf(err, "%s: cannot read '%s': %s", ck->path, name, dms_h5_reason(why));
            free(res);
            res = NULL;
        }
    }
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    H5Dclose(d);
    return res;
}
