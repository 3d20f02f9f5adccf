/* fuzz_h5.c - builds the HDF5 files of fuzz_h5.h from a recipe. */
#include "fuzz/fuzz_h5.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz/fuzz_common.h"

#define ATTR_MAX_ELEMS 256
#define WRITE_MAX_ELEMS 65536
/* and at most 16 MB: 65536 fixed strings of 64 KB would be 4 GB, which this
 * builder once allocated (libFuzzer's malloc limit, in CI) */
#define WRITE_MAX_BYTES ((uint64_t)16 << 20)

uint8_t fuzz_rd_u8(fuzz_rd *r) { return r->p < r->end ? *r->p++ : 0; }

static hid_t num_type(int kind) {
    switch (kind) {
    case 1: return H5T_STD_I8LE;
    case 2: return H5T_STD_U8LE;
    case 3: return H5T_STD_I16LE;
    case 4: return H5T_STD_U16LE;
    case 5: return H5T_STD_I32LE;
    case 6: return H5T_STD_U32LE;
    case 7: return H5T_STD_I64LE;
    case 8: return H5T_STD_U64LE;
    case 9: return H5T_IEEE_F32LE;
    case 10: return H5T_IEEE_F64LE;
    case 13: return H5T_STD_I32BE;
    default: return H5T_STD_U64BE;
    }
}

typedef struct {
    int kind, rank;
    hsize_t dims[3];
    uint64_t n; /* elements (saturating) */
    int chunked, mode, written; /* datasets: written holds the values, else fill only */
    char *str; /* strings: the value of every element */
    size_t len;
} spec;

static void read_spec(fuzz_rd *r, spec *s, int dataset) {
    memset(s, 0, sizeof *s);
    s->kind = fuzz_rd_u8(r) % 15;
    if (!s->kind) return;
    s->rank = fuzz_rd_u8(r) % 4;
    s->n = 1;
    for (int d = 0; d < s->rank; d++) {
        const uint8_t b = fuzz_rd_u8(r);
        s->dims[d] = b < 0xF0 ? b : (hsize_t)1 << (16 + 2 * (b - 0xF0));
        s->n = s->n > (UINT64_C(1) << 62) / (s->dims[d] + 1) ? UINT64_C(1) << 62 : s->n * s->dims[d];
    }
    if (dataset) {
        const uint8_t f = fuzz_rd_u8(r);
        s->chunked = f & 1;
        s->mode = (f >> 2) & 3;
    } else if (s->n > ATTR_MAX_ELEMS) {
        s->rank = 0;
        s->n = 1;
    }
    if (s->kind == 11 || s->kind == 12) { /* length: one byte, or 255 then two more */
        s->len = fuzz_rd_u8(r);
        if (s->len == 255) s->len = fuzz_rd_u8(r) | (size_t)fuzz_rd_u8(r) << 8;
        s->str = calloc(s->len + 1, 1);
        if (!s->str) abort();
        for (size_t i = 0; i < s->len; i++) s->str[i] = (char)fuzz_rd_u8(r);
    }
    const uint64_t esize = s->kind == 11 ? (uint64_t)s->len + 1 : 8;
    s->written = s->n <= WRITE_MAX_ELEMS && s->n * esize <= WRITE_MAX_BYTES;
    if (!s->written) s->chunked = 1;
}

static hid_t make_space(const spec *s) {
    if (s->rank == 0) return H5Screate(H5S_SCALAR);
    return H5Screate_simple(s->rank, s->dims, NULL);
}

/* The element values in native little-endian form of the file type's size
 * (HDF5 converts to the file's byte order on write). */
static void *make_values(fuzz_rd *r, const spec *s, size_t esize) {
    uint8_t *v = calloc((size_t)s->n ? (size_t)s->n : 1, esize);
    if (!v) abort();
    uint64_t acc = 0;
    const uint8_t same = s->mode == 3 ? fuzz_rd_u8(r) : 0;
    for (uint64_t i = 0; i < s->n; i++) {
        uint8_t *e = v + i * esize;
        if (s->mode == 0) {
            for (size_t k = 0; k < esize; k++) e[k] = fuzz_rd_u8(r);
        } else {
            uint64_t x = s->mode == 1 ? fuzz_rd_u8(r) : s->mode == 2 ? (acc += fuzz_rd_u8(r)) : same;
            if (s->kind == 9) {
                float f = (float)x;
                memcpy(e, &f, 4);
            } else if (s->kind == 10) {
                double f = (double)x;
                memcpy(e, &f, 8);
            } else {
                memcpy(e, &x, esize < 8 ? esize : 8); /* little-endian host */
            }
        }
    }
    return v;
}

/* Writes s (type and values from r) through writer: an attribute or a
 * dataset already created with `type` and `space`. */
static void write_object(hid_t obj, int is_attr, hid_t type, const spec *s, fuzz_rd *r) {
    if (s->kind == 11 || s->kind == 12) {
        const char *str = s->str;
        const size_t len = s->len, n = (size_t)s->n;
        if (s->kind == 11) {
            const size_t sz = H5Tget_size(type);
            char *all = calloc(n ? n : 1, sz);
            if (!all) abort();
            for (size_t i = 0; i < n; i++) memcpy(all + i * sz, str, len < sz ? len : sz);
            if (is_attr) H5Awrite(obj, type, all);
            else H5Dwrite(obj, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, all);
            free(all);
        } else {
            const char **all = malloc(sizeof(char *) * (n ? n : 1));
            if (!all) abort();
            for (size_t i = 0; i < n; i++) all[i] = str;
            if (is_attr) H5Awrite(obj, type, all);
            else H5Dwrite(obj, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, all);
            free(all);
        }
        return;
    }
    const size_t esize = H5Tget_size(type);
    void *v = make_values(r, s, esize);
    /* memory type: the same width and sign, native order */
    hid_t mt = H5Tcopy(type);
    H5Tset_order(mt, H5T_ORDER_LE);
    if (is_attr) H5Awrite(obj, mt, v);
    else H5Dwrite(obj, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Tclose(mt);
    free(v);
}

static hid_t make_type(const spec *s) {
    if (s->kind == 11) {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, s->len + 1);
        return t;
    }
    if (s->kind == 12) {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        return t;
    }
    return H5Tcopy(num_type(s->kind));
}

hid_t fuzz_h5_create(const char *name, char *path, size_t cap) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    fuzz_write_file(name, "", 0, path, cap);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) abort();
    return f;
}

void fuzz_h5_attr(hid_t file, const char *obj, const char *name, fuzz_rd *r) {
    spec s;
    read_spec(r, &s, 0);
    if (!s.kind) return;
    hid_t sp = make_space(&s), t = make_type(&s);
    hid_t a = H5Acreate_by_name(file, obj ? obj : ".", name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        write_object(a, 1, t, &s, r);
        H5Aclose(a);
    }
    H5Tclose(t);
    H5Sclose(sp);
    free(s.str);
}

void fuzz_h5_dataset(hid_t file, const char *name, fuzz_rd *r) {
    spec s;
    read_spec(r, &s, 1);
    if (!s.kind) return;
    hid_t sp = make_space(&s), t = make_type(&s);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    if (s.chunked && s.rank > 0) {
        hsize_t chunk[3];
        for (int d = 0; d < s.rank; d++) chunk[d] = s.dims[d] == 0 ? 1 : s.dims[d] < 64 ? s.dims[d] : 64;
        H5Pset_chunk(dcpl, s.rank, chunk);
    }
    hid_t d = H5Dcreate2(file, name, t, sp, lcpl, dcpl, H5P_DEFAULT);
    if (d >= 0) {
        if (s.written) write_object(d, 0, t, &s, r);
        H5Dclose(d);
    }
    H5Pclose(dcpl);
    H5Pclose(lcpl);
    H5Tclose(t);
    H5Sclose(sp);
    free(s.str);
}

void fuzz_h5_finish(hid_t file, const char *path, fuzz_rd *r) {
    if (H5Fclose(file) < 0) abort();
    const uint8_t cut = fuzz_rd_u8(r);
    if (cut) {
        struct stat st;
        if (stat(path, &st) != 0) abort();
        if (truncate(path, (off_t)((uint64_t)st.st_size * cut / 256)) != 0) abort();
    }
}
