// A small register-tiled matrix product for use INSIDE OpenMP parallel regions, where
// OpenBLAS must not be called (ops/cpu/attention.c's blocks, ops/cpu/taylor_attention.c's
// chunks). Private to ops/cpu.
//
//   c[m,n] = (accumulate ? c : 0) + sum_p a(i,p) b(p,j)
//
// a(i,p) = a[i*a_row + p*a_col]: a transposed operand is a swap of the two strides.
// b and c are row-major with leading dimensions ldb and ldc, so the innermost loop runs
// along contiguous columns and vectorises. Full TILE_ROWS x TILE_COLS tiles keep their
// accumulators in registers (fmaf: -std=c11 alone would not contract a*b+c); the rows
// below the last full tile and the columns right of it take plain loops. (32-column
// tiles under AVX-512 measured no faster inside taylor_attention: ~90 GFLOP/s a core.)
#pragma once
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

enum { TILE_ROWS = 8, TILE_COLS = 16 };

static inline void tile_gemm(int m, int n, int k, const float *restrict a, size_t a_row, size_t a_col,
                             const float *restrict b, size_t ldb, float *restrict c, size_t ldc, bool accumulate) {
    int m_tiles = m - m % TILE_ROWS, n_tiles = n - n % TILE_COLS;
    for (int i = 0; i < m_tiles; i += TILE_ROWS) {
        for (int j = 0; j < n_tiles; j += TILE_COLS) {
            float acc[TILE_ROWS][TILE_COLS];
            for (int r = 0; r < TILE_ROWS; r++)
                for (int x = 0; x < TILE_COLS; x++) acc[r][x] = accumulate ? c[(size_t)(i + r) * ldc + j + x] : 0.0f;
            const float *a_tile = a + (size_t)i * a_row;
            for (int p = 0; p < k; p++) {
                const float *bp = b + (size_t)p * ldb + j;
                const float *ap = a_tile + (size_t)p * a_col;
                for (int r = 0; r < TILE_ROWS; r++) {
                    float ar = ap[(size_t)r * a_row];
                    #pragma omp simd
                    for (int x = 0; x < TILE_COLS; x++) acc[r][x] = fmaf(ar, bp[x], acc[r][x]);
                }
            }
            for (int r = 0; r < TILE_ROWS; r++) memcpy(c + (size_t)(i + r) * ldc + j, acc[r], sizeof acc[r]);
        }
    }
    // Leftovers: rows m_tiles..m over every column, then columns n_tiles..n of the tiled rows.
    for (int part = 0; part < 2; part++) {
        int row_begin = part == 0 ? m_tiles : 0, row_end = part == 0 ? m : m_tiles;
        int col_begin = part == 0 ? 0 : n_tiles;
        if (col_begin >= n) continue;
        for (int i = row_begin; i < row_end; i++) {
            float *ci = c + (size_t)i * ldc;
            if (!accumulate)
                for (int j = col_begin; j < n; j++) ci[j] = 0.0f;
            for (int p = 0; p < k; p++) {
                float ai = a[(size_t)i * a_row + (size_t)p * a_col];
                const float *bp = b + (size_t)p * ldb;
                #pragma omp simd
                for (int j = col_begin; j < n; j++) ci[j] = fmaf(ai, bp[j], ci[j]);
            }
        }
    }
}
