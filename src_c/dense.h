/* dense.h: fully connected layer, z = x w + b, a = f(z).
 *
 * Layout (row-major, contiguous): x (B x C), w (C x OC), b (OC), z and a (B x OC); with
 * w_trans, w and dw are stored transposed, (OC x C): the products then run over rows of
 * the kernel (z = x w as dot products, dw^T = dz^T x directly), which fills the vectors
 * where OC is a poor fit and C a good one (network.h: nn_layer.w_trans).
 * The matrix products go through gemm.h (fastnn's small-product kernel or the BLAS gemm
 * passed in).
 * forward:  z = x w + b (bias added in the same pass that applies the activation);
 *           a = f(z); `a` may equal `z` (in place, e.g. linear layers or inference).
 *           b may be NULL (use_bias=False).
 * backward: `dout` holds dL/da on entry and dL/dz on exit (activation derivative applied
 *           in place); then dw = x^T dz, db = column sums of dz, dx = dz w^T
 *           (with w_trans: dw^T = dz^T x and dx = dz w^T, w^T being what w holds).
 *           Gradients are written, not accumulated: in a sequential network each
 *           parameter is used once per step, so nothing needs zeroing first.
 *           db and dx may be NULL (no bias; first layer needs no dx).
 * Threads: the elementwise passes split rows, the bias gradient splits columns, the
 * products split rows (gemm.h).
 */
#ifndef FASTNN_DENSE_H
#define FASTNN_DENSE_H

#include "common.h"

#define FASTNN_DECLARE_DENSE(real, sfx, gemm_t)                                            \
    void dense_forward_##sfx(real *z, real *a, const real *x, const real *w, int w_trans,  \
                             const real *b, int B, int C, int OC, int act, real slope,     \
                             gemm_t gemm, int nthreads);                                   \
    void dense_backward_##sfx(real *dx, real *dw, real *db, real *dout, const real *z,     \
                              const real *a, const real *x, const real *w, int w_trans,    \
                              int B, int C, int OC, int act, real slope, gemm_t gemm,      \
                              int nthreads);                                               \
    void column_sums_##sfx(real *out, const real *m, int rows, int cols, int nthreads);

FASTNN_DECLARE_DENSE(float, f32, sgemm_fn)
FASTNN_DECLARE_DENSE(double, f64, dgemm_fn)

#endif
