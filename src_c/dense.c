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

/* Matrix products are cut into panels of whole output rows, and each panel is one
 * single-threaded BLAS call made by the OpenMP thread that owns it. The cut depends only
 * on the sizes, never on the thread count, so every output element is computed by the
 * same call whatever the threads: results are bit-identical with 1 thread or many (a
 * multi-threaded BLAS rounds differently from a single-threaded one). The Python layer
 * holds the BLAS at one thread around fastnn's work, so the threads never oversubscribe. */
#define GEMM_PANEL_MIN_FLOPS 1000000.0

/* Panel count: 1 for products too small to share; otherwise an even count (so two
 * threads split evenly), more for larger products, each panel at least 32 rows. */
static int FN(gemm_panels)(int rows, double flops)
{
    if (flops < GEMM_PANEL_MIN_FLOPS || rows < 64) return 1;
    int pairs = flops < 64e6 ? 1 : (flops < 256e6 ? 2 : 4);
    if (pairs > rows / 64) pairs = rows / 64;
    return 2 * pairs;
}

/* Row-major out (M x N) = a (M x K) b, where a's rows are `lda` apart and b is given as
 * the column-major operand `bmat` with its transpose flag (see the callers). The M rows
 * are cut into panels. */
/* Panel p of a product cut into `panels` row panels: one single-threaded BLAS call. */
static void FN(gemm_panel)(int p, int panels, real *out, int ldo, const real *a, int lda,
                           char transa_cm, const real *bmat, int ldb, char transb_cm, int M,
                           int N, int K, gemm_fn gemm)
{
    int r0 = (int)((long long)M * p / panels), r1 = (int)((long long)M * (p + 1) / panels);
    int rows = r1 - r0;
    if (rows <= 0) return;
    real one = 1, zero = 0;
    char ta = transb_cm, tb = transa_cm;
    int n_ = N, k_ = K, ldb_ = ldb, lda_ = lda, ldo_ = ldo;
    /* Column-major: out^T (N x rows) = op(bmat) (N x K) op(a panel) (K x rows). */
    const real *ap = (transa_cm == 'N') ? a + (ptrdiff_t)r0 * lda : a + r0;
    gemm(&ta, &tb, &n_, &rows, &k_, &one, (real *)bmat, &ldb_, (real *)ap, &lda_, &zero,
         out + (ptrdiff_t)r0 * ldo, &ldo_);
}

/* Row-major out (M x N) = a (M x K) b, where a's rows are `lda` apart and b is given as
 * the column-major operand `bmat` with its transpose flag (see the callers). The M rows
 * are cut into panels. */
static void FN(gemm_row_panels)(real *out, int ldo, const real *a, int lda, char transa_cm,
                                const real *bmat, int ldb, char transb_cm, int M, int N,
                                int K, gemm_fn gemm, int nthreads)
{
    int panels = FN(gemm_panels)(M, 2.0 * M * N * K);
    int nt = nthreads < panels ? nthreads : panels;
    if (nt <= 1) {
        unsigned int csr = fastnn_ftz_enter();
        for (int p = 0; p < panels; p++) {
            FN(gemm_panel)(p, panels, out, ldo, a, lda, transa_cm, bmat, ldb, transb_cm, M, N,
                           K, gemm);
        }
        fastnn_ftz_leave(csr);
        return;
    }
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int p = 0; p < panels; p++) {
        /* FTZ/DAZ in whichever thread runs the panel (OpenMP workers keep the mode of the
         * thread that created them), so every panel rounds subnormals alike. */
        unsigned int csr = fastnn_ftz_enter();
        FN(gemm_panel)(p, panels, out, ldo, a, lda, transa_cm, bmat, ldb, transb_cm, M, N, K,
                       gemm);
        fastnn_ftz_leave(csr);
    }
}

/* Bias then activation on rows [r0, r1), in blocks of rows small enough to stay in cache. */
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

void FN(dense_forward)(real *z, real *a, const real *x, const real *w, const real *b,
                       int B, int C, int OC, int act, real slope, gemm_fn gemm, int nthreads)
{
    if (B <= 0 || OC <= 0) return;
    if (C > 0) {
        /* z = x w: column-major z^T (OC x B) = w^T x^T, cut over the rows of z */
        FN(gemm_row_panels)(z, OC, x, C, 'N', w, OC, 'N', B, OC, C, gemm, nthreads);
    } else {
        for (ptrdiff_t i = 0; i < (ptrdiff_t)B * OC; i++) z[i] = 0;
    }

    int nt = fastnn_threads_for((ptrdiff_t)B * OC, nthreads);
    if (nt == 1) {
        unsigned int csr = fastnn_ftz_enter();
        FN(bias_activation_rows)(z, a, b, 0, B, OC, act, slope);
        fastnn_ftz_leave(csr);
        return;
    }
    #pragma omp parallel num_threads(nt)
    {
        unsigned int csr = fastnn_ftz_enter();
        ptrdiff_t r0, r1;
        fastnn_thread_range(B, &r0, &r1);
        FN(bias_activation_rows)(z, a, b, r0, r1, OC, act, slope);
        fastnn_ftz_leave(csr);
    }
}

/* Columns [c0, c1) of the column sums, row by row, so the inner loop runs over contiguous
 * columns and each sum keeps the same order whatever the thread count. */
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
    int nt = fastnn_threads_for((ptrdiff_t)rows * cols, nthreads);
    if (nt == 1) {
        unsigned int csr = fastnn_ftz_enter();
        FN(column_sums_range)(out, m, rows, cols, 0, cols);
        fastnn_ftz_leave(csr);
        return;
    }
    #pragma omp parallel num_threads(nt)
    {
        unsigned int csr = fastnn_ftz_enter();
        ptrdiff_t c0, c1;
        fastnn_thread_range(cols, &c0, &c1);
        FN(column_sums_range)(out, m, rows, cols, c0, c1);
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

    if (C > 0) {
        /* z = x w  =>  dw (C x OC) = x^T dz: column-major dw^T = dz^T x, cut over the
         * rows of dw (columns of x) */
        FN(gemm_row_panels)(dw, OC, x, C, 'T', dz, OC, 'N', C, OC, B, gemm, nthreads);
    }
    /* z = x w + b  =>  db = sum over rows of dz */
    if (db) FN(column_sums)(db, dz, B, OC, nthreads);
    /* z = x w  =>  dx (B x C) = dz w^T: column-major dx^T = w dz^T, cut over rows of dx */
    if (dx && C > 0) {
        FN(gemm_row_panels)(dx, C, dz, OC, 'N', w, OC, 'T', B, C, OC, gemm, nthreads);
    }
}

#endif /* FASTNN_TEMPLATE */
