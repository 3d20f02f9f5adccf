/* mapped_file.h - read-only mmap of a whole file. Weight files (safetensors,
 * GGUF) are mapped rather than read so that multi-GB checkpoints cost no
 * copy until a tensor is actually converted. */
#ifndef DMS_MAPPED_FILE_H
#define DMS_MAPPED_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct dms_mapped_file {
    char *path;          /* owned copy of the path, for error messages */
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
} dms_mapped_file;

int dms_map_file(dms_mapped_file *f, const char *path, dms_err *err);
void dms_unmap_file(dms_mapped_file *f);

/* Reads a whole (small) text file into a NUL-terminated malloc'd buffer. */
char *dms_read_text_file(const char *path, size_t *len_out, dms_err *err);

#endif
