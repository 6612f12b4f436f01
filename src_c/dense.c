/* dense.c: see dense.h. Written once for `real`, compiled for float and double by
 * including itself (real_begin.h explains the pattern). */
#ifndef FASTNN_TEMPLATE
#define FASTNN_TEMPLATE
#include <math.h>
#include "dense.h"
#include "activations.h"
#include "gemm.h"
#define FASTNN_DOUBLE 0
#include "real_begin.h"
#include "dense.c"
#include "real_end.h"
#define FASTNN_DOUBLE 1
#include "real_begin.h"
#include "dense.c"
#include "real_end.h"
#undef FASTNN_TEMPLATE
#else

/* Bias then activation on rows [r0, r1), in blocks of rows small enough to stay in cache. */
FASTNN_VECTORIZED
static void FN(bias_activation_rows)(real *z, real *a, const real *b, ptrdiff_t r0,
                                     ptrdiff_t r1, int OC, int act, real slope)
{
    for (ptrdiff_t c0 = r0; c0 < r1; c0 += 16) {
        ptrdiff_t c1 = c0 + 16 < r1 ? c0 + 16 : r1;
        if (b) {
            for (ptrdiff_t r = c0; r < c1; r++) {
                real *zr = z + r * OC;
                for (int j = 0; j < OC; j++) zr[j] += b[j];
            }
        }
        FN(activation_forward_rows)(a, z, c0, c1, OC, act, slope);
    }
}

void FN(dense_forward)(real *z, real *a, const real *x, const real *w, int w_trans,
                       const real *b, int B, int C, int OC, int act, real slope, gemm_fn gemm,
                       int nthreads)
{
    if (B <= 0 || OC <= 0) return;
    /* w is (C x OC), rows OC apart, or its transpose, rows C apart */
    int ldw = w_trans ? C : OC;
    /* z = x w + b and a = f(z) in one pass where the product kernel can apply f */
    if (C > 0 && FN(gemm_bias_act)(z, a, OC, x, C, 0, w, ldw, w_trans, B, OC, C, b, act,
                                   slope, nthreads)) {
        return;
    }
    if (C > 0) {
        FN(gemm)(z, OC, x, C, 0, w, ldw, w_trans, B, OC, C, gemm, nthreads); /* z = x w */
    } else {
        for (ptrdiff_t i = 0; i < (ptrdiff_t)B * OC; i++) z[i] = 0;
    }

    FASTNN_SPLIT_RANGE((ptrdiff_t)B * OC, B, nthreads,
                       FN(bias_activation_rows)(z, a, b, begin, end, OC, act, slope));
}

/* Columns [c0, c1) of the column sums, row by row, so the inner loop runs over contiguous
 * columns and each sum keeps the same order whatever the thread count. */
FASTNN_VECTORIZED
static void FN(column_sums_range)(real *out, const real *m, ptrdiff_t rows, ptrdiff_t cols,
                                  ptrdiff_t c0, ptrdiff_t c1)
{
    for (ptrdiff_t j = c0; j < c1; j++) out[j] = 0;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const real *mr = m + r * cols;
        for (ptrdiff_t j = c0; j < c1; j++) out[j] += mr[j];
    }
}

void FN(column_sums)(real *out, const real *m, int rows, int cols, int nthreads)
{
    if (FN(gemm_column_sums)(out, m, rows, cols)) return; /* the same sums, vectorized */
    FASTNN_SPLIT_RANGE((ptrdiff_t)rows * cols, cols, nthreads,
                       FN(column_sums_range)(out, m, rows, cols, begin, end));
}

void FN(dense_backward)(real *dx, real *dw, real *db, real *dout, const real *z,
                        const real *a, const real *x, const real *w, int w_trans, int B,
                        int C, int OC, int act, real slope, gemm_fn gemm, int nthreads)
{
    if (OC <= 0) return;
    if (B <= 0) {
        for (ptrdiff_t i = 0; i < (ptrdiff_t)C * OC; i++) dw[i] = 0;
        if (db) for (int j = 0; j < OC; j++) db[j] = 0;
        return;
    }
    /* a = f(z)  =>  dL/dz = dL/da * f'(z), in place */
    FN(activation_backward)(dout, dout, z, a, B, OC, act, slope, nthreads);
    const real *dz = dout;

    if (C > 0) {
        if (w_trans) /* z = x w  =>  dw^T (OC x C) = dz^T x */
            FN(gemm)(dw, C, dz, OC, 1, x, C, 0, OC, C, B, gemm, nthreads);
        else /* z = x w  =>  dw (C x OC) = x^T dz */
            FN(gemm)(dw, OC, x, C, 1, dz, OC, 0, C, OC, B, gemm, nthreads);
    }
    /* z = x w + b  =>  db = sum over rows of dz */
    if (db) FN(column_sums)(db, dz, B, OC, nthreads);
    /* z = x w  =>  dx (B x C) = dz w^T (w^T is what w holds when w_trans) */
    if (dx && C > 0) {
        if (w_trans)
            FN(gemm)(dx, C, dz, OC, 0, w, C, 0, B, C, OC, gemm, nthreads);
        else
            FN(gemm)(dx, C, dz, OC, 0, w, OC, 1, B, C, OC, gemm, nthreads);
    }
}

#endif /* FASTNN_TEMPLATE */
