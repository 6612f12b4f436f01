/* dense.c: see dense.h. Written once for `real`, compiled for float and double by
 * including itself (real_begin.h explains the pattern). */
#ifndef FASTNN_TEMPLATE
#define FASTNN_TEMPLATE
#include <math.h>
#include "dense.h"
#include "activations.h"
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

void FN(dense_forward)(real *z, real *a, const real *x, const real *w, const real *b,
                       int B, int C, int OC, int act, real slope, gemm_fn gemm, int nthreads)
{
    if (B <= 0 || OC <= 0) return;
    /* Row-major z (B x OC) = x w  <=>  column-major z^T (OC x B) = w^T x^T. */
    char no = 'N';
    real one = 1, zero = 0;
    int ldw = OC, ldx = C > 0 ? C : 1, ldz = OC;
    if (C > 0) {
        gemm(&no, &no, &OC, &B, &C, &one, (real *)w, &ldw, (real *)x, &ldx, &zero, z, &ldz);
    } else {
        for (ptrdiff_t i = 0; i < (ptrdiff_t)B * OC; i++) z[i] = 0;
    }

    int nt = fastnn_threads_for((ptrdiff_t)B * OC, nthreads);
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        unsigned int csr = fastnn_ftz_enter();
        ptrdiff_t r0, r1;
        fastnn_thread_range(B, &r0, &r1);
        for (ptrdiff_t r = r0; r < r1; r++) {
            real *zr = z + r * OC;
            if (b) {
                for (int j = 0; j < OC; j++) zr[j] += b[j];
            }
            FN(activation_forward_rows)(a, z, r, r + 1, OC, act, slope);
        }
        fastnn_ftz_leave(csr);
    }
}

void FN(column_sums)(real *out, const real *m, int rows, int cols, int nthreads)
{
    int nt = fastnn_threads_for((ptrdiff_t)rows * cols, nthreads);
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
        unsigned int csr = fastnn_ftz_enter();
        ptrdiff_t c0, c1;
        fastnn_thread_range(cols, &c0, &c1);
        for (ptrdiff_t j = c0; j < c1; j++) out[j] = 0;
        /* Row by row, so the inner loop runs over contiguous columns and each sum keeps
         * the same order whatever the thread count. */
        for (ptrdiff_t r = 0; r < rows; r++) {
            const real *mr = m + r * cols;
            for (ptrdiff_t j = c0; j < c1; j++) out[j] += mr[j];
        }
        fastnn_ftz_leave(csr);
    }
}

void FN(dense_backward)(real *dx, real *dw, real *db, real *dout, const real *z,
                        const real *a, const real *x, const real *w, int B, int C, int OC,
                        int act, real slope, gemm_fn gemm, int nthreads)
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

    char no = 'N', tr = 'T';
    real one = 1, zero = 0;
    int ldz = OC, ldx = C > 0 ? C : 1, ldw = OC;
    if (C > 0) {
        /* z = x w  =>  dw = x^T dz; column-major dw^T (OC x C) = dz^T x */
        gemm(&no, &tr, &OC, &C, &B, &one, (real *)dz, &ldz, (real *)x, &ldx, &zero, dw, &ldw);
    }
    /* z = x w + b  =>  db = sum over rows of dz */
    if (db) FN(column_sums)(db, dz, B, OC, nthreads);
    /* z = x w  =>  dx = dz w^T; column-major dx^T (C x B) = w dz^T */
    if (dx && C > 0) {
        gemm(&tr, &no, &C, &B, &OC, &one, (real *)w, &ldw, (real *)dz, &ldz, &zero, dx, &ldx);
    }
}

#endif /* FASTNN_TEMPLATE */
