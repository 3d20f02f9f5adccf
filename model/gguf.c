/* gguf.c - parse a GGUF v2/v3 file (mmapped): header, metadata key/values
 * and tensor table, with every count, length and offset checked against the
 * file size so corrupt input yields one clear error line, never a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif

#define GGUF_MAX_ARRAY_DEPTH 8  /* arrays of arrays nested deeper are refused */
#define GGUF_DEFAULT_ALIGNMENT 32
/* A key or tensor name from the file, made printable for a message (needs a
 * `char nbuf[DMS_GGUF_NAME_BUF]` in scope). */
#define NM(s) dms_gguf_str_printable((s), nbuf, sizeof nbuf)

/* A cursor over the mapped bytes; every read checks the remaining length. */
typedef struct {
    const uint8_t *base, *p, *end;
    const char *path;
    dms_err *err;
} rd_t;

static uint64_t rd_off(const rd_t *r) { return (uint64_t)(r->p - r->base); }
static uint64_t rd_left(const rd_t *r) { return (uint64_t)(r->end - r->p); }

static int rd_bytes(rd_t *r, void *out, uint64_t n, const char *what) {
    if (rd_left(r) < n)
        return dms_errf(r->err, "%s: truncated: %s at offset %llu needs %llu bytes, file is %llu bytes",
                        r->path, what, (unsigned long long)rd_off(r), (unsigned long long)n,
                        (unsigned long long)(r->end - r->base));
    if (out) memcpy(out, r->p, n);
    r->p += n;
    return 0;
}

static int rd_u32(rd_t *r, uint32_t *v, const char *what) { return rd_bytes(r, v, 4, what); }
static int rd_u64(rd_t *r, uint64_t *v, const char *what) { return rd_bytes(r, v, 8, what); }

static int rd_str(rd_t *r, dms_gguf_str *s, const char *what) {
    uint64_t len = 0;
    if (rd_u64(r, &len, what) != 0) return -1;
    if (len > rd_left(r))
        return dms_errf(r->err, "%s: %s at offset %llu has length %llu, past end of file (%llu bytes left)",
                        r->path, what, (unsigned long long)(rd_off(r) - 8), (unsigned long long)len,
                        (unsigned long long)rd_left(r));
    s->ptr = (const char *)r->p;
    s->len = len;
    r->p += len;
    return 0;
}

/* Bytes of one scalar of type t; 0 for strings/arrays (variable), -1 unknown. */
static int scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_T_UINT8: case GGUF_T_INT8: case GGUF_T_BOOL: return 1;
    case GGUF_T_UINT16: case GGUF_T_INT16: return 2;
    case GGUF_T_UINT32: case GGUF_T_INT32: case GGUF_T_FLOAT32: return 4;
    case GGUF_T_UINT64: case GGUF_T_INT64: case GGUF_T_FLOAT64: return 8;
    case GGUF_T_STRING: case GGUF_T_ARRAY: return 0;
    default: return -1;
    }
}

static const char *vtype_name(uint32_t t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                  "bool", "string", "array", "u64", "i64", "f64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "?";
}

/* Skips the body of an array (element type already read): count then elements.
 * Validates every nested string and array. */
static int skip_array(rd_t *r, const dms_gguf_str *key, int depth, uint32_t *etype_out,
                      uint64_t *n_out, const uint8_t **data_out) {
    char nbuf[DMS_GGUF_NAME_BUF];
    uint32_t et = 0;
    uint64_t n = 0;
    if (rd_u32(r, &et, "array element type") != 0 || rd_u64(r, &n, "array length") != 0) return -1;
    int es = scalar_size(et);
    if (es < 0)
        return dms_errf(r->err, "%s: key '%s': array has unknown element type %u", r->path,
                        NM(*key), et);
    /* The smallest element: a scalar's size, a string's 8-byte length, an
     * array's 4-byte type + 8-byte count. */
    uint64_t min_el = es > 0 ? (uint64_t)es : (et == GGUF_T_STRING ? 8 : 12);
    if (n > rd_left(r) / min_el)
        return dms_errf(r->err, "%s: key '%s': array of %llu %s elements cannot fit in the %llu bytes left",
                        r->path, NM(*key), (unsigned long long)n, vtype_name(et),
                        (unsigned long long)rd_left(r));
    if (etype_out) *etype_out = et;
    if (n_out) *n_out = n;
    if (data_out) *data_out = r->p;
    if (es > 0) {
        r->p += n * (uint64_t)es;
        return 0;
    }
    if (et == GGUF_T_ARRAY && depth + 1 > GGUF_MAX_ARRAY_DEPTH)
        return dms_errf(r->err, "%s: key '%s': arrays nested more than %d deep", r->path,
                        NM(*key), GGUF_MAX_ARRAY_DEPTH);
    for (uint64_t i = 0; i < n; i++) {
        if (et == GGUF_T_STRING) {
            uint64_t len = 0;
            if (rd_u64(r, &len, "array string length") != 0) return -1;
            if (len > rd_left(r))
                return dms_errf(r->err, "%s: key '%s': string element %llu at offset %llu has length %llu, "
                                "past end of file (%llu bytes left)", r->path, NM(*key),
                                (unsigned long long)i, (unsigned long long)(rd_off(r) - 8),
                                (unsigned long long)len, (unsigned long long)rd_left(r));
            r->p += len;
        } else if (skip_array(r, key, depth + 1, NULL, NULL, NULL) != 0) {
            return -1;
        }
    }
    return 0;
}

static int read_kv(rd_t *r, dms_gguf_kv *kv, uint64_t idx) {
    char nbuf[DMS_GGUF_NAME_BUF];
    if (rd_str(r, &kv->key, "key") != 0) return -1;
    if (kv->key.len > DMS_GGUF_MAX_KEY)
        return dms_errf(r->err, "%s: key %llu '%s' is %llu bytes long (GGUF keys are at most %d)", r->path,
                        (unsigned long long)idx, NM(kv->key), (unsigned long long)kv->key.len, DMS_GGUF_MAX_KEY);
    uint32_t t = 0;
    if (rd_u32(r, &t, "value type") != 0) return -1;
    int sz = scalar_size(t);
    if (sz < 0)
        return dms_errf(r->err, "%s: key %llu '%s' has unknown value type %u", r->path,
                        (unsigned long long)idx, NM(kv->key), t);
    kv->type = (dms_gguf_vtype)t;
    kv->path = r->path;
    uint8_t b[8] = {0};
    if (sz > 0) {
        if (rd_bytes(r, b, (uint64_t)sz, "value") != 0) return -1;
    }
    switch (t) {
    case GGUF_T_UINT8: kv->v.u = b[0]; break;
    case GGUF_T_INT8: kv->v.i = (int8_t)b[0]; break;
    case GGUF_T_UINT16: { uint16_t x; memcpy(&x, b, 2); kv->v.u = x; break; }
    case GGUF_T_INT16: { int16_t x; memcpy(&x, b, 2); kv->v.i = x; break; }
    case GGUF_T_UINT32: { uint32_t x; memcpy(&x, b, 4); kv->v.u = x; break; }
    case GGUF_T_INT32: { int32_t x; memcpy(&x, b, 4); kv->v.i = x; break; }
    case GGUF_T_UINT64: { uint64_t x; memcpy(&x, b, 8); kv->v.u = x; break; }
    case GGUF_T_INT64: { int64_t x; memcpy(&x, b, 8); kv->v.i = x; break; }
    case GGUF_T_FLOAT32: { float x; memcpy(&x, b, 4); kv->v.f = x; break; }
    case GGUF_T_FLOAT64: { double x; memcpy(&x, b, 8); kv->v.f = x; break; }
    case GGUF_T_BOOL: kv->v.b = b[0] != 0; break;
    case GGUF_T_STRING:
        if (rd_str(r, &kv->v.s, "string value") != 0) return -1;
        break;
    case GGUF_T_ARRAY: {
        uint32_t et = 0;
        if (skip_array(r, &kv->key, 0, &et, &kv->arr_len, &kv->arr_data) != 0) return -1;
        kv->arr_type = (dms_gguf_vtype)et;
        kv->arr_end = r->p;
        break;
    }
    }
    return 0;
}

static int read_tensor_info(rd_t *r, dms_gguf_tensor *t, uint64_t idx) {
    if (rd_str(r, &t->name, "tensor name") != 0) return -1;
    char nbuf[DMS_GGUF_NAME_BUF];
    if (rd_u32(r, &t->n_dims, "tensor n_dims") != 0) return -1;
    if (t->n_dims < 1 || t->n_dims > 4)
        return dms_errf(r->err, "%s: tensor %llu '%s' has %u dimensions (must be 1 to 4)", r->path,
                        (unsigned long long)idx, NM(t->name), t->n_dims);
    uint64_t nelem = 1;
    for (uint32_t d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (rd_u64(r, &t->ne[d], "tensor shape") != 0) return -1;
        if (t->ne[d] > (uint64_t)INT64_MAX ||
            (t->ne[d] != 0 && nelem > (uint64_t)INT64_MAX / t->ne[d]))
            return dms_errf(r->err, "%s: tensor '%s' shape overflows (dimension %u is %llu)", r->path,
                            NM(t->name), d, (unsigned long long)t->ne[d]);
        nelem *= t->ne[d];
    }
    uint32_t type = 0;
    if (rd_u32(r, &type, "tensor type") != 0 || rd_u64(r, &t->offset, "tensor offset") != 0) return -1;
    t->type = (dms_ggml_type)type;
    const uint64_t blck = dms_ggml_blck_size(t->type), size = dms_ggml_type_size(t->type);
    if (!blck)
        return dms_errf(r->err, "%s: tensor '%s' has unknown ggml type %u", r->path, NM(t->name), type);
    if (t->ne[0] % blck != 0)
        return dms_errf(r->err, "%s: tensor '%s' row length %llu is not a multiple of the %s block size %llu",
                        r->path, NM(t->name), (unsigned long long)t->ne[0],
                        dms_ggml_type_name(t->type), (unsigned long long)blck);
    if (nelem / blck > UINT64_MAX / size)
        return dms_errf(r->err, "%s: tensor '%s' byte size overflows", r->path, NM(t->name));
    t->nbytes = nelem / blck * size;
    return 0;
}

static int cmp_tensor_name(const void *a, const void *b) {
    const dms_gguf_tensor *x = *(const dms_gguf_tensor *const *)a, *y = *(const dms_gguf_tensor *const *)b;
    uint64_t n = x->name.len < y->name.len ? x->name.len : y->name.len;
    int c = n ? memcmp(x->name.ptr, y->name.ptr, n) : 0;
    if (c) return c;
    return x->name.len < y->name.len ? -1 : x->name.len > y->name.len;
}

static int str_eq(dms_gguf_str s, const char *z) {
    size_t n = strlen(z);
    return s.len == n && (n == 0 || memcmp(s.ptr, z, n) == 0);
}

const char *dms_gguf_str_printable(dms_gguf_str s, char *buf, size_t cap) {
    if (cap == 0) return "";
    size_t o = 0;
    uint64_t i = 0;
    for (; i < s.len && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        buf[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (i < s.len && cap >= 4) { /* cut: mark it */
        memcpy(buf + cap - 4, "...", 3);
        o = cap - 1;
    }
    buf[o] = '\0';
    return buf;
}

static int parse(dms_gguf *g, dms_err *err) {
    const char *path = g->file.path;
    /* (an empty file is not mapped: no pointer arithmetic on it) */
    if (g->file.size < 4 || memcmp(g->file.data, "GGUF", 4) != 0)
        return dms_errf(err, "%s: not a GGUF file (bad magic)", path);
    rd_t r = {g->file.data, g->file.data, g->file.data + g->file.size, path, err};
    r.p += 4;
    if (rd_u32(&r, &g->version, "version") != 0) return -1;
    if (g->version != 2 && g->version != 3) {
        if (g->version == 1)
            return dms_errf(err, "%s: GGUF version 1 is not supported (only versions 2 and 3)", path);
        if ((g->version & 0xffff) == 0)
            return dms_errf(err, "%s: GGUF version %u is not supported (big-endian file?)", path, g->version);
        return dms_errf(err, "%s: GGUF version %u is not supported (only versions 2 and 3)", path,
                        g->version);
    }
    if (rd_u64(&r, &g->n_tensors, "tensor count") != 0 || rd_u64(&r, &g->n_kv, "metadata count") != 0)
        return -1;
    /* Each key/value needs >= 13 bytes (8 key length, 4 type, 1 value) and
     * each tensor info >= 32 (8 name length, 4 n_dims, 8 ne, 4 type, 8 offset). */
    if (g->n_kv > rd_left(&r) / 13)
        return dms_errf(err, "%s: metadata count %llu is more than the %llu bytes left could hold", path,
                        (unsigned long long)g->n_kv, (unsigned long long)rd_left(&r));
    if (g->n_tensors > rd_left(&r) / 32 || g->n_kv * 13 + g->n_tensors * 32 > rd_left(&r))
        return dms_errf(err, "%s: tensor count %llu is more than the %llu bytes left could hold", path,
                        (unsigned long long)g->n_tensors, (unsigned long long)rd_left(&r));
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) return dms_errf(err, "%s: out of memory for the GGUF header", path);

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        dms_gguf_kv *kv = &g->kv[i];
        if (read_kv(&r, kv, i) != 0) return -1;
        if (str_eq(kv->key, "general.alignment")) {
            int is_int = kv->type <= GGUF_T_INT32 || kv->type == GGUF_T_UINT64 || kv->type == GGUF_T_INT64;
            if (!is_int)
                return dms_errf(err, "%s: general.alignment has type %s, expected an integer", path,
                                vtype_name(kv->type));
            uint64_t a = kv->v.u;
            int neg = (kv->type == GGUF_T_INT8 || kv->type == GGUF_T_INT16 || kv->type == GGUF_T_INT32 ||
                       kv->type == GGUF_T_INT64) && kv->v.i < 0;
            if (neg || a == 0 || (a & (a - 1)) != 0 || a > (1u << 30))
                return dms_errf(err, "%s: general.alignment %s%llu is not a power of two in [1, 2^30]", path,
                                neg ? "-" : "", neg ? (unsigned long long)-(kv->v.i + 1) + 1 : (unsigned long long)a);
            g->alignment = a;
        }
    }
    if (g->n_tensors > rd_left(&r) / 32)
        return dms_errf(err, "%s: tensor count %llu is more than the %llu bytes left could hold", path,
                        (unsigned long long)g->n_tensors, (unsigned long long)rd_left(&r));
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (read_tensor_info(&r, &g->tensors[i], i) != 0) return -1;

    /* Data section: the first aligned offset after the tensor infos. */
    uint64_t hdr_end = rd_off(&r);
    uint64_t data_off = (hdr_end + g->alignment - 1) & ~(g->alignment - 1);
    uint64_t fsize = g->file.size;
    if (data_off > fsize) {
        if (g->n_tensors > 0)
            return dms_errf(err, "%s: data section at offset %llu starts past end of file (%llu bytes)",
                            path, (unsigned long long)data_off, (unsigned long long)fsize);
        data_off = fsize;
    }
    g->data_section = g->file.data + data_off;
    const uint64_t data_len = fsize - data_off;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        dms_gguf_tensor *t = &g->tensors[i];
        char nbuf[DMS_GGUF_NAME_BUF];
        if (t->offset % g->alignment != 0)
            return dms_errf(err, "%s: tensor '%s' data offset %llu is not a multiple of the alignment %llu",
                            path, NM(t->name), (unsigned long long)t->offset,
                            (unsigned long long)g->alignment);
        if (t->offset > data_len || t->nbytes > data_len - t->offset) {
            if (t->offset > UINT64_MAX - data_off) /* the absolute offset would wrap */
                return dms_errf(err, "%s: tensor '%s' data [offset %llu past the data section at %llu, %llu "
                                "bytes] runs past end of file (%llu bytes)", path, NM(t->name),
                                (unsigned long long)t->offset, (unsigned long long)data_off,
                                (unsigned long long)t->nbytes, (unsigned long long)fsize);
            return dms_errf(err, "%s: tensor '%s' data [offset %llu, %llu bytes] runs past end of file "
                            "(%llu bytes)", path, NM(t->name), (unsigned long long)(data_off + t->offset),
                            (unsigned long long)t->nbytes, (unsigned long long)fsize);
        }
        t->data = g->data_section + t->offset;
    }

    /* Tensor names must be unique (lookups would be ambiguous otherwise). */
    if (g->n_tensors > 1) {
        const dms_gguf_tensor **idx = malloc(g->n_tensors * sizeof *idx);
        if (!idx) return dms_errf(err, "%s: out of memory", path);
        for (uint64_t i = 0; i < g->n_tensors; i++) idx[i] = &g->tensors[i];
        qsort(idx, g->n_tensors, sizeof *idx, cmp_tensor_name);
        for (uint64_t i = 1; i < g->n_tensors; i++) {
            if (cmp_tensor_name(&idx[i - 1], &idx[i]) == 0) {
                const dms_gguf_tensor *t = idx[i];
                char nbuf[DMS_GGUF_NAME_BUF];
                dms_errf(err, "%s: duplicate tensor name '%s'", path,
                         NM(t->name));
                free(idx);
                return -1;
            }
        }
        free(idx);
    }
    return 0;
}

int dms_gguf_open(dms_gguf *g, const char *path, dms_err *err) {
    memset(g, 0, sizeof *g);
    if (dms_map_file(&g->file, path, err) != 0) return -1;
    if (parse(g, err) != 0) {
        dms_gguf_close(g);
        return -1;
    }
    return 0;
}

void dms_gguf_close(dms_gguf *g) {
    if (!g) return;
    free(g->kv);
    free(g->tensors);
    dms_unmap_file(&g->file);
    memset(g, 0, sizeof *g);
}

const dms_gguf_kv *dms_gguf_find_kv(const dms_gguf *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (str_eq(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const dms_gguf_tensor *dms_gguf_find_tensor(const dms_gguf *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (str_eq(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

int dms_gguf_get_u64(const dms_gguf *g, const char *key, uint64_t *out) {
    const dms_gguf_kv *kv = dms_gguf_find_kv(g, key);
    if (!kv) return -1;
    switch (kv->type) {
    case GGUF_T_UINT8: case GGUF_T_UINT16: case GGUF_T_UINT32: case GGUF_T_UINT64:
        *out = kv->v.u;
        return 0;
    case GGUF_T_INT8: case GGUF_T_INT16: case GGUF_T_INT32: case GGUF_T_INT64:
        if (kv->v.i < 0) return -1;
        *out = (uint64_t)kv->v.i;
        return 0;
    case GGUF_T_BOOL:
        *out = (uint64_t)kv->v.b;
        return 0;
    case GGUF_T_FLOAT32: case GGUF_T_FLOAT64: {
        double f = kv->v.f;
        /* only exact non-negative integers (NaN fails every comparison) */
        if (!(f >= 0.0 && f < 18446744073709551616.0) || f != (double)(uint64_t)f) return -1;
        *out = (uint64_t)f;
        return 0;
    }
    default:
        return -1;
    }
}

int dms_gguf_get_f64(const dms_gguf *g, const char *key, double *out) {
    const dms_gguf_kv *kv = dms_gguf_find_kv(g, key);
    if (!kv) return -1;
    switch (kv->type) {
    case GGUF_T_UINT8: case GGUF_T_UINT16: case GGUF_T_UINT32: case GGUF_T_UINT64:
        *out = (double)kv->v.u;
        return 0;
    case GGUF_T_INT8: case GGUF_T_INT16: case GGUF_T_INT32: case GGUF_T_INT64:
        *out = (double)kv->v.i;
        return 0;
    case GGUF_T_BOOL:
        *out = kv->v.b;
        return 0;
    case GGUF_T_FLOAT32: case GGUF_T_FLOAT64:
        *out = kv->v.f;
        return 0;
    default:
        return -1;
    }
}

char *dms_gguf_get_str(const dms_gguf *g, const char *key) {
    const dms_gguf_kv *kv = dms_gguf_find_kv(g, key);
    if (!kv || kv->type != GGUF_T_STRING) return NULL;
    char *s = malloc(kv->v.s.len + 1);
    if (!s) return NULL;
    if (kv->v.s.len) memcpy(s, kv->v.s.ptr, kv->v.s.len);
    s[kv->v.s.len] = '\0';
    return s;
}

int dms_gguf_array_strs(const dms_gguf_kv *kv, dms_gguf_str *out, dms_err *err) {
    const char *path = kv->path ? kv->path : "(gguf)";
    char nbuf[DMS_GGUF_NAME_BUF];
    if (kv->type != GGUF_T_ARRAY || kv->arr_type != GGUF_T_STRING)
        return dms_errf(err, "%s: key '%s' is not an array of strings", path, NM(kv->key));
    const uint8_t *p = kv->arr_data, *end = kv->arr_end;
    for (uint64_t i = 0; i < kv->arr_len; i++) {
        uint64_t len = 0;
        if (!p || !end || end < p || (uint64_t)(end - p) < 8)
            return dms_errf(err, "%s: key '%s': string %llu runs past the array", path,
                            NM(kv->key), (unsigned long long)i);
        memcpy(&len, p, 8);
        p += 8;
        if (len > (uint64_t)(end - p))
            return dms_errf(err, "%s: key '%s': string %llu runs past the array", path,
                            NM(kv->key), (unsigned long long)i);
        out[i].ptr = (const char *)p;
        out[i].len = len;
        p += len;
    }
    return 0;
}

int dms_gguf_token_types(const dms_gguf *g, int n, int32_t *types, dms_err *err) {
    const dms_gguf_kv *tt = dms_gguf_find_kv(g, "tokenizer.ggml.token_type");
    if (!tt) return 0;
    if (tt->type != GGUF_T_ARRAY || (tt->arr_type != GGUF_T_INT32 && tt->arr_type != GGUF_T_UINT32) ||
        tt->arr_len != (uint64_t)n || !tt->arr_data || !tt->arr_end ||
        (uint64_t)(tt->arr_end - tt->arr_data) < tt->arr_len * 4)
        return dms_errf(err, "%s: tokenizer.ggml.token_type is not an int32 array matching the tokens", g->file.path);
    for (int i = 0; i < n; i++) memcpy(&types[i], tt->arr_data + 4 * (size_t)i, 4);
    return 1;
}
