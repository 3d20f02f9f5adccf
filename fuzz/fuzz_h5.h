/* fuzz_h5.h - the HDF5 files of the shard and checkpoint targets, built
 * from the fuzz input with the HDF5 API rather than taken as raw bytes.
 * libhdf5 itself crashes inside its own code on some corrupt object headers
 * (docs/fuzzing.md, "Third-party findings"), which no check of ours can
 * prevent; what these targets test is our readers on everything a
 * well-formed HDF5 file can hold: any attribute or dataset missing or of
 * any type (integers of every width and byte order, floats, fixed and
 * variable strings), scalar or up to 3-D, values of every size, declared
 * sizes far beyond the data the file really stores (chunked, never
 * written), and files cut short.
 *
 * The input is a recipe read byte by byte (missing bytes read as 0), one
 * object spec per name the target asks for, in order:
 *   kind    (byte % 15) 0 absent; 1-8 int8/uint8/int16/uint16/int32/uint32/
 *           int64/uint64 LE; 9/10 float32/float64 LE; 11 fixed string;
 *           12 variable string; 13 int32 BE; 14 uint64 BE
 *   rank    (byte % 4) 0 scalar, else that many dims, each one byte b:
 *           b < 0xF0 is the size b, else 2^(16 + 2 (b - 0xF0)) (2^16 .. 2^46)
 *   flags   (datasets only) bit 0 chunked, bits 2-3 value mode
 *   string  (kinds 11, 12) length: a byte L < 255, or 255 and two bytes
 *           (little-endian); then that many bytes: every element's value
 *   values  (numbers) by mode: 0 raw little-endian bytes of each element,
 *           1 one byte per element, 2 running sum of one byte per element
 *           (non-decreasing offsets), 3 one byte for every element
 * Attributes hold at most 256 elements (else scalar); datasets are written
 * when they hold at most 65536 elements and 16 MB, else they are chunked
 * and left unwritten (their fill value, 0, is what a read sees). After the
 * objects, one byte t: t > 0 cuts the file to size * t / 256 bytes. */
#ifndef DMS_FUZZ_H5_H
#define DMS_FUZZ_H5_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const uint8_t *p, *end;
} fuzz_rd;

uint8_t fuzz_rd_u8(fuzz_rd *r);

/* Creates <scratch>/<name> (HDF5 error printing off); path[cap] receives
 * its path. Returns the open file. */
hid_t fuzz_h5_create(const char *name, char *path, size_t cap);
/* One attribute of object obj (NULL: the root group; nothing when obj was
 * not created) / one dataset (name may hold groups, created as needed), as
 * the next spec of the recipe says. */
void fuzz_h5_attr(hid_t file, const char *obj, const char *name, fuzz_rd *r);
void fuzz_h5_dataset(hid_t file, const char *name, fuzz_rd *r);
/* Closes the file and applies the recipe's cut. */
void fuzz_h5_finish(hid_t file, const char *path, fuzz_rd *r);

#endif
