/* safetensors_write.c - writes safetensors files for `dms export`
 * (safetensors_write.h): header built with cJSON (integers as raw text, so
 * offsets past 2^31 print exactly), space padding to an 8-byte data start,
 * fp32 -> F32/F16/BF16 conversion, fsync. */
#include "model/safetensors_write.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/half.h"

int64_t dms_st_out_nelem(const dms_st_out_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= t->shape[d];
    return n;
}

size_t dms_st_out_nbytes(const dms_st_out_tensor *t) {
    return (size_t)dms_st_out_nelem(t) * dms_st_dtype_size(t->dtype);
}

static cJSON *raw_int(int64_t v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return cJSON_CreateRaw(buf);
}

/* The JSON header for t[0..n), unpadded (malloc'd), or NULL. */
static char *build_header(const dms_st_out_tensor *t, int n, const char *path, dms_err *err) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_CreateObject();
    int ok = root && meta && cJSON_AddStringToObject(meta, "format", "pt") != NULL;
    if (ok) {
        cJSON_AddItemToObject(root, "__metadata__", meta);
        meta = NULL;
    }
    int64_t off = 0;
    for (int i = 0; ok && i < n; i++) {
        if (t[i].dtype != DMS_ST_F32 && t[i].dtype != DMS_ST_F16 && t[i].dtype != DMS_ST_BF16) {
            cJSON_Delete(root);
            cJSON_Delete(meta);
            dms_errf(err, "%s: tensor '%s': dtype %s cannot be written (F32, F16, BF16)", path, t[i].name,
                     dms_st_dtype_name(t[i].dtype));
            return NULL;
        }
        if (cJSON_GetObjectItemCaseSensitive(root, t[i].name)) {
            cJSON_Delete(root);
            cJSON_Delete(meta);
            dms_errf(err, "%s: tensor '%s' given twice", path, t[i].name);
            return NULL;
        }
        cJSON *e = cJSON_CreateObject(), *shape = cJSON_CreateArray(), *offs = cJSON_CreateArray();
        ok = e && shape && offs && cJSON_AddStringToObject(e, "dtype", dms_st_dtype_name(t[i].dtype)) != NULL;
        for (int d = 0; ok && d < t[i].n_dims; d++) ok = cJSON_AddItemToArray(shape, raw_int(t[i].shape[d]));
        const int64_t end = off + (int64_t)dms_st_out_nbytes(&t[i]);
        ok = ok && cJSON_AddItemToArray(offs, raw_int(off)) && cJSON_AddItemToArray(offs, raw_int(end));
        if (ok) {
            cJSON_AddItemToObject(e, "shape", shape);
            cJSON_AddItemToObject(e, "data_offsets", offs);
            ok = cJSON_AddItemToObject(root, t[i].name, e);
        } else {
            cJSON_Delete(e);
            cJSON_Delete(shape);
            cJSON_Delete(offs);
        }
        off = end;
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    cJSON_Delete(meta);
    if (!text) dms_errf(err, "%s: out of memory building the header", path);
    return text;
}

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int dms_st_write(const char *path, const dms_st_out_tensor *t, int n, dms_st_fill_fn fill, void *ctx,
                 dms_err *err) {
    char *header = build_header(t, n, path, err);
    if (!header) return -1;
    size_t hlen = strlen(header);
    const size_t padded = (hlen + 7) & ~(size_t)7; /* 8 + padded is a multiple of 8 */
    char *hbuf = malloc(8 + padded);
    int64_t max_n = 1;
    for (int i = 0; i < n; i++)
        if (dms_st_out_nelem(&t[i]) > max_n) max_n = dms_st_out_nelem(&t[i]);
    float *buf = malloc(sizeof(float) * (size_t)max_n);
    if (!hbuf || !buf) {
        free(header);
        free(hbuf);
        free(buf);
        return dms_errf(err, "%s: out of memory", path);
    }
    for (int b = 0; b < 8; b++) hbuf[b] = (char)(((uint64_t)padded >> (8 * b)) & 0xff);
    memcpy(hbuf + 8, header, hlen);
    memset(hbuf + 8 + hlen, ' ', padded - hlen);
    free(header);
    int rc = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) rc = dms_errf(err, "%s: cannot create: %s", path, strerror(errno));
    if (rc == 0 && write_all(fd, hbuf, 8 + padded) != 0) rc = dms_errf(err, "%s: cannot write: %s", path, strerror(errno));
    for (int i = 0; rc == 0 && i < n; i++) {
        const size_t ne = (size_t)dms_st_out_nelem(&t[i]);
        if (fill(ctx, i, buf, err) != 0) {
            rc = -1;
            break;
        }
        if (t[i].dtype != DMS_ST_F32) { /* narrowing front to back never overwrites an unread float */
            uint16_t *h = (uint16_t *)buf;
            if (t[i].dtype == DMS_ST_BF16)
                for (size_t k = 0; k < ne; k++) h[k] = dms_f32_to_bf16(buf[k]);
            else
                for (size_t k = 0; k < ne; k++) h[k] = dms_f32_to_f16(buf[k]);
        }
        if (write_all(fd, buf, dms_st_out_nbytes(&t[i])) != 0)
            rc = dms_errf(err, "%s: cannot write tensor '%s': %s", path, t[i].name, strerror(errno));
    }
    if (rc == 0 && fsync(fd) != 0) rc = dms_errf(err, "%s: fsync failed: %s", path, strerror(errno));
    if (fd >= 0 && close(fd) != 0 && rc == 0) rc = dms_errf(err, "%s: cannot close: %s", path, strerror(errno));
    if (rc != 0 && fd >= 0) unlink(path);
    free(hbuf);
    free(buf);
    return rc;
}

int dms_write_file_synced(const char *path, const void *data, size_t n, dms_err *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return dms_errf(err, "%s: cannot create: %s", path, strerror(errno));
    int rc = 0;
    if (write_all(fd, data, n) != 0) rc = dms_errf(err, "%s: cannot write: %s", path, strerror(errno));
    else if (fsync(fd) != 0) rc = dms_errf(err, "%s: fsync failed: %s", path, strerror(errno));
    if (close(fd) != 0 && rc == 0) rc = dms_errf(err, "%s: cannot close: %s", path, strerror(errno));
    if (rc != 0) unlink(path);
    return rc;
}

char *dms_json_print(const cJSON *root) {
    char *t = cJSON_Print(root);
    if (!t) return NULL;
    size_t tabs = 0, n = 0;
    for (; t[n]; n++) tabs += t[n] == '\t';
    char *o = malloc(n + tabs + 2), *w = o;
    if (!o) {
        free(t);
        return NULL;
    }
    /* cJSON escapes tabs inside strings, so every raw tab is layout: an
     * indentation level at a line start, or the separator after a colon */
    int line_start = 1;
    for (size_t i = 0; i < n; i++) {
        if (t[i] == '\t') {
            if (line_start) {
                *w++ = ' ';
                *w++ = ' ';
            } else {
                *w++ = ' ';
            }
            continue;
        }
        line_start = t[i] == '\n';
        *w++ = t[i];
    }
    *w++ = '\n';
    *w = '\0';
    free(t);
    return o;
}

int dms_fsync_dir(const char *dir, dms_err *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return dms_errf(err, "%s: cannot open folder: %s", dir, strerror(errno));
    int rc = fsync(fd) == 0 ? 0 : dms_errf(err, "%s: fsync failed: %s", dir, strerror(errno));
    close(fd);
    return rc;
}
