// Hyperslab selections of checkpoint tensors (checkpoint_internal.h). A rank transfers a
// run [first, last) of a tensor's row-major local slice: the whole slice, or the part its
// moment range covers.
#include "io/checkpoint_internal.h"

void checkpoint_covered_run(const param_info *info, size_t begin, size_t end, size_t *first, size_t *last) {
    size_t lo = begin > info->offset ? begin : info->offset;
    size_t hi = end < info->offset + info->local_count ? end : info->offset + info->local_count;
    *first = lo < hi ? lo - info->offset : 0;
    *last = lo < hi ? hi - info->offset : 0;
}

static void add_block(hid_t file_space, H5S_seloper_t *op, hsize_t row, hsize_t col, hsize_t rows, hsize_t cols) {
    hsize_t start[2] = {row, col}, count[2] = {rows, cols};
    H5Sselect_hyperslab(file_space, *op, start, NULL, count, NULL);
    *op = H5S_SELECT_OR;
}

void checkpoint_select_run(hid_t file_space, const param_info *info, size_t first, size_t last) {
    if (first == last) {
        H5Sselect_none(file_space);
        return;
    }
    H5S_seloper_t op = H5S_SELECT_SET;
    hsize_t row0 = (hsize_t)info->local_start[0], col0 = (hsize_t)info->local_start[1];
    if (info->ndim == 1) {
        hsize_t start = row0 + first, count = last - first;
        H5Sselect_hyperslab(file_space, op, &start, NULL, &count, NULL);
        return;
    }
    hsize_t width = (hsize_t)info->local_shape[1];
    hsize_t first_row = first / width, first_col = first % width;
    hsize_t last_row = (last - 1) / width, last_end = (last - 1) % width + 1;  // last row: columns [0, last_end)
    if (first_row == last_row) {
        add_block(file_space, &op, row0 + first_row, col0 + first_col, 1, last_end - first_col);
        return;
    }
    hsize_t whole_from = first_row, whole_to = last_row + 1;  // whole rows [whole_from, whole_to)
    if (first_col > 0) {
        add_block(file_space, &op, row0 + first_row, col0 + first_col, 1, width - first_col);
        whole_from++;
    }
    if (last_end < width) whole_to--;
    if (whole_to > whole_from) add_block(file_space, &op, row0 + whole_from, col0, whole_to - whole_from, width);
    if (last_end < width) add_block(file_space, &op, row0 + last_row, col0, 1, last_end);
}

hid_t checkpoint_run_memory_space(size_t elements) {
    hsize_t n = elements ? (hsize_t)elements : 1;
    hid_t space = H5Screate_simple(1, &n, NULL);
    if (!elements) H5Sselect_none(space);
    return space;
}

float checkpoint_no_data;
