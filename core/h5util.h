/* h5util.h - what every HDF5 user here needs: HDF5's own error printing
 * turned off (we report one line per failure), the innermost HDF5 error as
 * a short reason, and fsync of files and folders for atomic writes. */
#ifndef DMS_H5UTIL_H
#define DMS_H5UTIL_H

/* Silences HDF5's automatic error-stack printing. */
void dms_h5_quiet(void);
/* The innermost message on HDF5's error stack as one short line (the OS
 * reason when HDF5 quotes one, e.g. "File too large"); clears the stack. */
const char *dms_h5_reason(char buf[256]);
/* fsync of a file (dir = 0) or a folder (dir = 1); 0 on success. */
int dms_fsync_path(const char *path, int dir);

#endif
