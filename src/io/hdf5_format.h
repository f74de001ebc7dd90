// The HDF5 format decon writes and accepts: metadata with checksums. HDF5 1.10's decoders of
// the older, unchecksummed structures (superblock versions 0 and 1, version-1 object
// headers) trust what they read and run out of bounds on damaged bytes (found by
// tests/fuzz/fuzz_checkpoint). Files created with the 1.8+ format carry a checksum on the
// superblock, every object header, B-tree and heap, so HDF5 rejects damage before decoding
// it. decon writes that format and refuses to hand an unchecksummed file to HDF5.
#pragma once
#include <hdf5.h>

enum { HDF5_CHECKSUMMED_SUPERBLOCK = 2 };

// Sets the library-version bounds of a file-access property list to 1.8 .. latest, so
// every file and object created through it is checksummed.
void hdf5_use_checksummed_format(hid_t fapl);
// The superblock version of the HDF5 file at path (the byte after the signature, which sits
// at 0 or, after a user block, at 512, 1024, 2048, ...); -1 when it has no HDF5 signature
// or cannot be read. Reads the bytes itself: HDF5 never sees the file.
int hdf5_superblock_version(const char *path);
