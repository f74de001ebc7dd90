// What the output writers of decon-analyze share (output_write_all in results.h is the
// interface): output.c stages the files and holds the field descriptions,
// output_csv.c, output_json.c and output_h5.c write one format each. Rank 0 only.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "analysis/results.h"
#include "analysis/why.h"
#include "core/errors.h"

// What each field means, for the JSON definitions and the HDF5 descriptions.
extern const char *const head_field_descriptions[HEAD_FIELDS];
extern const char *const layer_field_descriptions[LAYER_FIELDS];
extern const char *const svd_field_descriptions[SVD_FIELDS];

// Opens "<path>.tmp" (its name in tmp) for writing; NULL with why filled on failure.
FILE *output_open_tmp(const char *path, char *tmp, size_t tmp_size, char *why, size_t size);
// Stages a complete tmp for path: output_write_all renames the whole set at the end.
void output_stage(const char *tmp, const char *path);
// Closes f and stages tmp for path; false with why filled (and tmp removed) when the
// writes or the close failed.
bool output_close_staged(FILE *f, const char *tmp, const char *path, char *why, size_t size);

// <out>/<run>.layers.csv, .heads.csv, .spectra.csv, .json and <out>/analysis.h5, each
// written to its temporary name and staged; false with why filled on failure.
bool output_layers_csv(const char *out, const run_results *r, const analysis_options *o, char *why, size_t size);
bool output_heads_csv(const char *out, const run_results *r, const analysis_options *o, char *why, size_t size);
bool output_spectra_csv(const char *out, const run_results *r, const analysis_options *o, char *why, size_t size);
bool output_json(const char *out, const run_results *r, const normalisation_table *norm, const analysis_options *o,
                 char *why, size_t size);
bool output_h5(const char *out, const run_results *runs, int run_count, const normalisation_table *norm,
               const analysis_options *o, char *why, size_t size);
