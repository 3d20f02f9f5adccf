/* safetensors.c - parse and validate safetensors headers (cJSON), map the
 * data, and resolve sharded checkpoints through the index file. */
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/half.h"

static const struct { const char *name; dms_st_dtype t; size_t size; } st_dtypes[] = {
    {"F32", DMS_ST_F32, 4},     {"F16", DMS_ST_F16, 2},         {"BF16", DMS_ST_BF16, 2},
    {"F64", DMS_ST_F64, 8},     {"I64", DMS_ST_I64, 8},         {"I32", DMS_ST_I32, 4},
    {"I16", DMS_ST_I16, 2},     {"I8", DMS_ST_I8, 1},           {"U8", DMS_ST_U8, 1},
    {"BOOL", DMS_ST_BOOL, 1},   {"F8_E4M3", DMS_ST_F8_E4M3, 1}, {"F8_E5M2", DMS_ST_F8_E5M2, 1},
    {"U32", DMS_ST_U32, 4},     {"U64", DMS_ST_U64, 8},         {"U16", DMS_ST_U16, 2},
};
#define N_ST_DTYPES (sizeof st_dtypes / sizeof st_dtypes[0])

const char *dms_st_dtype_name(dms_st_dtype t) {
    for (size_t i = 0; i < N_ST_DTYPES; i++)
        if (st_dtypes[i].t == t) return st_dtypes[i].name;
    return "?";
}

size_t dms_st_dtype_size(dms_st_dtype t) {
    for (size_t i = 0; i < N_ST_DTYPES; i++)
        if (st_dtypes[i].t == t) return st_dtypes[i].size;
    return 0;
}

int64_t dms_st_nelem(const dms_st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->shape[i];
    return n;
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const dms_st_tensor *)a)->name, ((const dms_st_tensor *)b)->name);
}

/* Parses one file's header and appends its tensors to st. */
static int st_add_file(dms_safetensors *st, const char *path, dms_err *err) {
    dms_mapped_file f;
    if (dms_map_file(&f, path, err) != 0) return -1;
    const char *why = NULL;
    char whybuf[160];
    if (f.size < 8) {
        why = "file too short for a safetensors header";
    }
    uint64_t hlen = 0;
    if (!why) {
        for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f.data[i];
        if (hlen > f.size - 8) {
            why = "header length runs past end of file (truncated or not safetensors)";
        } else if (hlen > DMS_ST_MAX_HEADER) {
            snprintf(whybuf, sizeof whybuf, "header of %llu bytes is over the format's limit of %d bytes (corrupt?)",
                     (unsigned long long)hlen, DMS_ST_MAX_HEADER);
            why = whybuf;
        } else if (hlen < 2 || f.data[8] != '{') {
            why = "header is not a JSON object";
        }
    }
    if (why) {
        dms_errf(err, "%s: %s", path, why);
        dms_unmap_file(&f);
        return -1;
    }
    cJSON *root = cJSON_ParseWithLength((const char *)f.data + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        dms_errf(err, "%s: header is not valid JSON", path);
        dms_unmap_file(&f);
        return -1;
    }
    const uint8_t *base = f.data + 8 + hlen;
    const size_t data_size = f.size - 8 - (size_t)hlen;
    const int file_idx = st->n_files;
    int count = 0;
    for (cJSON *e = root->child; e; e = e->next) count += strcmp(e->string, "__metadata__") != 0;
    dms_st_tensor *grown = realloc(st->tensors, sizeof(dms_st_tensor) * (size_t)(st->n_tensors + count));
    dms_mapped_file *grown_files = realloc(st->files, sizeof(dms_mapped_file) * (size_t)(st->n_files + 1));
    if (!grown || !grown_files) {
        if (grown) st->tensors = grown;
        if (grown_files) st->files = grown_files;
        cJSON_Delete(root);
        dms_unmap_file(&f);
        return dms_errf(err, "%s: out of memory reading header", path);
    }
    st->tensors = grown;
    st->files = grown_files;
    st->files[st->n_files++] = f;
    int rc = 0;
    for (cJSON *e = root->child; e && rc == 0; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        dms_st_tensor t = {0};
        t.file = file_idx;
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) ||
            cJSON_GetArraySize(off) != 2) {
            rc = dms_errf(err, "%s: tensor '%s' has a malformed header entry", path, e->string);
            break;
        }
        size_t i;
        for (i = 0; i < N_ST_DTYPES; i++)
            if (strcmp(dt->valuestring, st_dtypes[i].name) == 0) break;
        if (i == N_ST_DTYPES) {
            rc = dms_errf(err, "%s: tensor '%s' has unknown dtype '%s'", path, e->string, dt->valuestring);
            break;
        }
        t.dtype = st_dtypes[i].t;
        t.n_dims = cJSON_GetArraySize(sh);
        if (t.n_dims > DMS_ST_MAX_DIMS) {
            rc = dms_errf(err, "%s: tensor '%s' has %d dims (max %d)", path, e->string, t.n_dims, DMS_ST_MAX_DIMS);
            break;
        }
        /* dimensions: integers; the product of the non-zero ones at most
         * 2^62 (an empty tensor may not hide an overflowing product) */
        double nelem = 1, nonzero = 1;
        int d = 0;
        for (cJSON *s = sh->child; s; s = s->next, d++) {
            if (!cJSON_IsNumber(s) || s->valuedouble < 0 || s->valuedouble != floor(s->valuedouble) ||
                (s->valuedouble > 0 && (nonzero *= s->valuedouble) > 4611686018427387904.0)) {
                rc = dms_errf(err, "%s: tensor '%s' has an invalid shape", path, e->string);
                break;
            }
            t.shape[d] = (int64_t)s->valuedouble;
            nelem *= s->valuedouble;
        }
        if (rc) break;
        double b0 = cJSON_GetArrayItem(off, 0)->valuedouble, b1 = cJSON_GetArrayItem(off, 1)->valuedouble;
        if (!cJSON_IsNumber(cJSON_GetArrayItem(off, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(off, 1)) ||
            b0 < 0 || b1 < b0 || b1 > (double)data_size || b0 != floor(b0) || b1 != floor(b1)) {
            rc = dms_errf(err, "%s: tensor '%s' data [%.0f, %.0f) runs past end of file (%zu data bytes)",
                          path, e->string, b0, b1, data_size);
            break;
        }
        t.nbytes = (size_t)(b1 - b0);
        if ((double)t.nbytes != nelem * (double)st_dtypes[i].size) {
            rc = dms_errf(err, "%s: tensor '%s' holds %zu bytes but shape x %s needs %.0f", path,
                          e->string, t.nbytes, st_dtypes[i].name, nelem * (double)st_dtypes[i].size);
            break;
        }
        t.data = base + (size_t)b0;
        t.name = strdup(e->string);
        st->tensors[st->n_tensors++] = t;
    }
    cJSON_Delete(root);
    return rc;
}

static int st_finish(dms_safetensors *st, const char *what, dms_err *err) {
    if (st->n_tensors > 1) qsort(st->tensors, (size_t)st->n_tensors, sizeof(dms_st_tensor), cmp_tensor);
    for (int i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, st->tensors[i - 1].name) == 0)
            return dms_errf(err, "%s: tensor '%s' appears twice", what, st->tensors[i].name);
    return 0;
}

int dms_st_open_file(dms_safetensors *st, const char *path, dms_err *err) {
    memset(st, 0, sizeof *st);
    if (st_add_file(st, path, err) != 0 || st_finish(st, path, err) != 0) {
        dms_st_close(st);
        return -1;
    }
    return 0;
}

static int has_string(char **list, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0) return 1;
    return 0;
}

int dms_st_open_dir(dms_safetensors *st, const char *dir, dms_err *err) {
    memset(st, 0, sizeof *st);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) != 0) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (access(path, F_OK) != 0)
            return dms_errf(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
        return dms_st_open_file(st, path, err);
    }
    char *text = dms_read_text_file(path, NULL, err);
    if (!text) return -1;
    cJSON *root = cJSON_Parse(text);
    free(text);
    cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(root);
        return dms_errf(err, "%s: not a safetensors index (no weight_map object)", path);
    }
    /* Distinct shard names, in first-seen order. */
    int n_shards = 0, rc = 0;
    char **shards = calloc((size_t)cJSON_GetArraySize(map) + 1, sizeof(char *));
    for (cJSON *e = map->child; e; e = e->next) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/')) {
            rc = dms_errf(err, "%s: weight_map entry '%s' is not a plain file name", path, e->string);
            break;
        }
        if (!has_string(shards, n_shards, e->valuestring)) shards[n_shards++] = e->valuestring;
    }
    for (int i = 0; i < n_shards && rc == 0; i++) {
        char shard[PATH_MAX];
        snprintf(shard, sizeof shard, "%s/%s", dir, shards[i]);
        rc = st_add_file(st, shard, err);
    }
    if (rc == 0) rc = st_finish(st, path, err);
    /* Every tensor the index names must be in the shard it names. */
    for (cJSON *e = map->child; e && rc == 0; e = e->next) {
        const dms_st_tensor *t = dms_st_find(st, e->string);
        if (!t) {
            rc = dms_errf(err, "%s: tensor '%s' listed in the index is missing from %s", path, e->string,
                          e->valuestring);
        }
    }
    free(shards);
    cJSON_Delete(root);
    if (rc) dms_st_close(st);
    return rc;
}

void dms_st_close(dms_safetensors *st) {
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    for (int i = 0; i < st->n_files; i++) dms_unmap_file(&st->files[i]);
    free(st->tensors);
    free(st->files);
    memset(st, 0, sizeof *st);
}

const dms_st_tensor *dms_st_find(const dms_safetensors *st, const char *name) {
    dms_st_tensor key = {.name = (char *)name};
    if (st->n_tensors == 0) return NULL; /* (tensors may be NULL) */
    return bsearch(&key, st->tensors, (size_t)st->n_tensors, sizeof(dms_st_tensor), cmp_tensor);
}

int dms_st_to_f32(const dms_safetensors *st, const dms_st_tensor *t, float *out, dms_err *err) {
    const int64_t n = dms_st_nelem(t);
    switch (t->dtype) {
    case DMS_ST_F32:
        memcpy(out, t->data, (size_t)n * 4);
        return 0;
    case DMS_ST_F16:
    case DMS_ST_BF16: {
        const int bf = t->dtype == DMS_ST_BF16;
#pragma omp parallel for if (n > 65536)
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            out[i] = bf ? dms_bf16_to_f32(h) : dms_f16_to_f32(h);
        }
        return 0;
    }
    default:
        return dms_errf(err, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16",
                        st->files[t->file].path, t->name, dms_st_dtype_name(t->dtype));
    }
}
