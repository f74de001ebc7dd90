"""Damaged copies of a good HDF5 file for the bad-input tests: variant() copies it and
applies one change in place (so the copy keeps decon's checksummed format)."""
import shutil

import h5py


def variant(good, path, change):
    shutil.copy(good, path)
    with h5py.File(path, "r+") as f:
        change(f)


def replace(f, name, value):
    del f[name]
    f[name] = value
