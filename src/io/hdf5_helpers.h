// The HDF5 calls checkpoints (io/checkpoint_*.c) and attention recordings
// (io/attention_record*.c) share: how decon opens a file, and scalar and string
// attributes. Failures are returned, never fatal here: each caller names its own file
// and advice in its one error line.
#pragma once
#include <hdf5.h>
#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>

// Turns off HDF5's printing of its error stack: decon reports one line of its own.
void hdf5_quiet(void);
// The file-access property list: MPI-IO over comm with collective metadata (every rank
// makes the same metadata calls in the same order) unless comm is MPI_COMM_NULL (serial);
// file locking where the file system can; the checksummed format (io/hdf5_format.h).
hid_t hdf5_access_plist(MPI_Comm comm);
// A fixed-length, NUL-terminated string type for `length` characters.
hid_t hdf5_string_type(size_t length);
// Reads the one-element, non-string attribute `name` as mem_type; false when absent or
// unreadable.
bool hdf5_read_scalar(hid_t object, const char *name, hid_t mem_type, void *value);
// The fixed-length string attribute `name` into out (empty when absent or unreadable).
void hdf5_read_string(hid_t object, const char *name, char *out, size_t size);
// Writes attribute `name` (count elements; 0: a scalar), replacing one already there.
bool hdf5_write_attribute(hid_t object, const char *name, hid_t file_type, hid_t mem_type, const void *value,
                          hsize_t count);
bool hdf5_write_string(hid_t object, const char *name, const char *value);
