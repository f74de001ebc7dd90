#include "io/hdf5_helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "io/hdf5_format.h"

void hdf5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

hid_t hdf5_access_plist(MPI_Comm comm) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (comm != MPI_COMM_NULL) {
        H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
        // Metadata is read by one rank and broadcast, and written collectively.
        H5Pset_all_coll_metadata_ops(fapl, 1);
        H5Pset_coll_metadata_write(fapl, 1);
    }
#if H5_VERSION_GE(1, 10, 7)
    H5Pset_file_locking(fapl, 1, 1);  // lock where the file system can, go on where it cannot
#endif
    hdf5_use_checksummed_format(fapl);
    return fapl;
}

hid_t hdf5_string_type(size_t length) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, length + 1);
    H5Tset_strpad(type, H5T_STR_NULLTERM);
    return type;
}

bool hdf5_read_scalar(hid_t object, const char *name, hid_t mem_type, void *value) {
    if (H5Aexists(object, name) <= 0) return false;
    hid_t attribute = H5Aopen(object, name, H5P_DEFAULT);
    if (attribute < 0) return false;
    hid_t space = H5Aget_space(attribute), type = H5Aget_type(attribute);
    bool ok = space >= 0 && type >= 0 && H5Sget_simple_extent_npoints(space) == 1 && H5Tget_class(type) != H5T_STRING &&
              H5Aread(attribute, mem_type, value) >= 0;
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    H5Aclose(attribute);
    return ok;
}

void hdf5_read_string(hid_t object, const char *name, char *out, size_t size) {
    out[0] = '\0';
    if (H5Aexists(object, name) <= 0) return;
    hid_t attribute = H5Aopen(object, name, H5P_DEFAULT);
    hid_t type = attribute < 0 ? -1 : H5Aget_type(attribute);
    if (type >= 0 && H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) == 0) {
        size_t length = H5Tget_size(type);
        char *buffer = xcalloc(length + 1, 1);
        hid_t mem_type = hdf5_string_type(length);
        if (H5Aread(attribute, mem_type, buffer) >= 0) snprintf(out, size, "%s", buffer);
        H5Tclose(mem_type);
        free(buffer);
    }
    if (type >= 0) H5Tclose(type);
    if (attribute >= 0) H5Aclose(attribute);
}

bool hdf5_write_attribute(hid_t object, const char *name, hid_t file_type, hid_t mem_type, const void *value,
                          hsize_t count) {
    hid_t space = count ? H5Screate_simple(1, &count, NULL) : H5Screate(H5S_SCALAR);
    if (H5Aexists(object, name) > 0) H5Adelete(object, name);
    hid_t attribute = H5Acreate2(object, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    bool ok = attribute >= 0 && H5Awrite(attribute, mem_type, value) >= 0;
    if (attribute >= 0) H5Aclose(attribute);
    H5Sclose(space);
    return ok;
}

bool hdf5_write_string(hid_t object, const char *name, const char *value) {
    hid_t type = hdf5_string_type(strlen(value));
    bool ok = hdf5_write_attribute(object, name, type, type, value, 0);
    H5Tclose(type);
    return ok;
}
