/* conv1d.h: 1-D convolution and pooling, channels-last as Keras.
 *
 * Layout (row-major, contiguous): x (B x L x C) = B samples of L steps of C channels;
 * conv kernel w (K x C x F) as Keras' get_weights() gives it; bias b (F);
 * z and a (B x Lout x F). Output step t reads input steps t*stride - pad_left + k,
 * k = 0..K-1; steps outside [0, L) read zero (padding="same").
 * Keras' arithmetic: valid: Lout = (L - K) / stride + 1;
 *                    same:  Lout = ceil(L / stride), pad_left = max((Lout-1)*stride + K - L, 0) / 2.
 *
 * Algorithm: im2col + one GEMM. cols (B*Lout x K*C) gathers each output step's receptive
 * field, so z = cols w + b is a single matrix product over the whole batch (w viewed as
 * (K*C x F)). Backward: dw = cols^T dz, db = column sums of dz, dcols = dz w^T, and dx is
 * dcols scattered back (col2im). dcols may be the same buffer as cols (cols is dead by then).
 * As in dense.h, `dout` holds dL/da on entry and dL/dz on exit; gradients are written,
 * not accumulated; db and dx may be NULL.
 *
 * Pooling: max over windows of `pool` steps, moved by `stride`; "same" padding ignores
 * steps outside the input (as -inf). The forward keeps the argmax step of every output
 * for the backward, which routes each gradient to that step only.
 * Global average pooling: the mean over steps, per channel.
 *
 * Threads: im2col, col2im and pooling split the batch (each thread owns whole samples);
 * BLAS runs outside any OpenMP region.
 */
#ifndef FASTNN_CONV1D_H
#define FASTNN_CONV1D_H

#include <stdint.h>
#include "common.h"

#define FASTNN_DECLARE_CONV1D(real, sfx, gemm_t)                                           \
    void conv1d_im2col_##sfx(real *cols, const real *x, int B, int L, int C, int Lout,    \
                             int K, int stride, int pad_left, int nthreads);               \
    void conv1d_col2im_##sfx(real *dx, const real *dcols, int B, int L, int C, int Lout,  \
                             int K, int stride, int pad_left, int nthreads);               \
    void conv1d_forward_##sfx(real *z, real *a, real *cols, const real *x, const real *w, \
                              const real *b, int B, int L, int C, int Lout, int F, int K,  \
                              int stride, int pad_left, int act, real slope, gemm_t gemm,  \
                              int nthreads);                                               \
    void conv1d_backward_##sfx(real *dx, real *dw, real *db, real *dout, real *cols,      \
                               real *dcols, const real *z, const real *a, const real *w,  \
                               int B, int L, int C, int Lout, int F, int K, int stride,   \
                               int pad_left, int act, real slope, gemm_t gemm,            \
                               int nthreads);                                              \
    void maxpool1d_forward_##sfx(real *out, int32_t *argmax, const real *x, int B, int L, \
                                 int C, int Lout, int pool, int stride, int pad_left,     \
                                 int nthreads);                                            \
    void maxpool1d_backward_##sfx(real *dx, const real *dout, const int32_t *argmax,      \
                                  int B, int L, int C, int Lout, int nthreads);            \
    void global_avgpool1d_forward_##sfx(real *out, const real *x, int B, int L, int C,    \
                                        int nthreads);                                     \
    void global_avgpool1d_backward_##sfx(real *dx, const real *dout, int B, int L, int C, \
                                         int nthreads);

FASTNN_DECLARE_CONV1D(float, f32, sgemm_fn)
FASTNN_DECLARE_CONV1D(double, f64, dgemm_fn)

#endif
