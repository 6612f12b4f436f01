/* conv1d.c: see conv1d.h. Written once for `real`, compiled for float and double by
 * including itself (real_begin.h explains the pattern). */
#ifndef FASTNN_TEMPLATE
#define FASTNN_TEMPLATE
#include <math.h>
#include <string.h>
#include "conv1d.h"
#include "activations.h"
#include "dense.h"
#define FASTNN_DOUBLE 0
#include "real_begin.h"
#include "conv1d.c"
#include "real_end.h"
#define FASTNN_DOUBLE 1
#include "real_begin.h"
#include "conv1d.c"
#include "real_end.h"
#undef FASTNN_TEMPLATE
#else

/* A window's steps are contiguous in x, so each row of cols is one copy of K*C values,
 * with zeros for the steps that fall outside the input ("same" padding). Short rows (a
 * first layer's window of a few values) are copied by a plain loop: a library call per
 * row costs more than the copy (GCC would turn the loop back into memcpy calls, hence
 * the attribute). */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void FN(conv1d_im2col_range)(real *cols, const real *x, int L, int C, int Lout,
                                    int K, int stride, int pad_left, ptrdiff_t b0,
                                    ptrdiff_t b1)
{
    ptrdiff_t row_len = (ptrdiff_t)K * C;
    for (ptrdiff_t bi = b0; bi < b1; bi++) {
        const real *xs = x + bi * L * C;
        for (int t = 0; t < Lout; t++) {
            real *row = cols + (bi * Lout + t) * row_len;
            int start = t * stride - pad_left;
            int lo = start < 0 ? 0 : start;              /* first step inside x */
            int hi = start + K > L ? L : start + K;      /* one past the last */
            ptrdiff_t before = (ptrdiff_t)(lo - start) * C, inside = (ptrdiff_t)(hi - lo) * C;
            const real *src = xs + (ptrdiff_t)lo * C;
            if (row_len <= 32) {
                ptrdiff_t i = 0;
                for (; i < before; i++) row[i] = 0;
                for (; i < before + inside; i++) row[i] = src[i - before];
                for (; i < row_len; i++) row[i] = 0;
                continue;
            }
            memset(row, 0, sizeof(real) * (size_t)before);
            memcpy(row + before, src, sizeof(real) * (size_t)inside);
            memset(row + before + inside, 0, sizeof(real) * (size_t)(row_len - before - inside));
        }
    }
}

void FN(conv1d_im2col)(real *cols, const real *x, int B, int L, int C, int Lout, int K,
                       int stride, int pad_left, int nthreads)
{
    FASTNN_SPLIT_RANGE((ptrdiff_t)B * Lout * K * C, B, nthreads,
                       FN(conv1d_im2col_range)(cols, x, L, C, Lout, K, stride, pad_left,
                                               begin, end));
}

FASTNN_VECTORIZED
static void FN(conv1d_col2im_range)(real *dx, const real *dcols, int L, int C, int Lout,
                                    int K, int stride, int pad_left, ptrdiff_t b0,
                                    ptrdiff_t b1)
{
    ptrdiff_t row_len = (ptrdiff_t)K * C;
    for (ptrdiff_t bi = b0; bi < b1; bi++) {
        real *dxs = dx + bi * L * C;
        memset(dxs, 0, sizeof(real) * (size_t)L * (size_t)C);
        /* Each output step adds its window's gradient back, in a fixed order. */
        for (int t = 0; t < Lout; t++) {
            int start = t * stride - pad_left;
            int lo = start < 0 ? 0 : start, hi = start + K > L ? L : start + K;
            const real *src = dcols + (bi * Lout + t) * row_len + (ptrdiff_t)(lo - start) * C;
            real *dst = dxs + (ptrdiff_t)lo * C;
            ptrdiff_t count = (ptrdiff_t)(hi - lo) * C;
            for (ptrdiff_t i = 0; i < count; i++) dst[i] += src[i];
        }
    }
}

void FN(conv1d_col2im)(real *dx, const real *dcols, int B, int L, int C, int Lout, int K,
                       int stride, int pad_left, int nthreads)
{
    FASTNN_SPLIT_RANGE((ptrdiff_t)B * Lout * K * C, B, nthreads,
                       FN(conv1d_col2im_range)(dx, dcols, L, C, Lout, K, stride, pad_left,
                                               begin, end));
}

void FN(conv1d_forward)(real *z, real *a, real *cols, const real *x, const real *w,
                        const real *b, int B, int L, int C, int Lout, int F, int K, int stride,
                        int pad_left, int act, real slope, gemm_fn gemm, int nthreads)
{
    if (B <= 0 || Lout <= 0) return;
    FN(conv1d_im2col)(cols, x, B, L, C, Lout, K, stride, pad_left, nthreads);
    /* z = cols w + b: a dense layer over B*Lout rows of K*C inputs. */
    FN(dense_forward)(z, a, cols, w, 0, b, B * Lout, K * C, F, act, slope, gemm, nthreads);
}

void FN(conv1d_backward)(real *dx, real *dw, real *db, real *dout, real *cols, real *dcols,
                         const real *z, const real *a, const real *w, int B, int L, int C,
                         int Lout, int F, int K, int stride, int pad_left, int act,
                         real slope, gemm_fn gemm, int nthreads)
{
    if (B <= 0 || Lout <= 0) return;
    /* The dense backward of z = cols w + b gives dw, db and dcols = dz w^T; dcols is
     * written after dw is done with cols, so the two may share a buffer. */
    FN(dense_backward)(dx ? dcols : NULL, dw, db, dout, z, a, cols, w, 0, B * Lout, K * C, F,
                       act, slope, gemm, nthreads);
    if (dx) FN(conv1d_col2im)(dx, dcols, B, L, C, Lout, K, stride, pad_left, nthreads);
}

static void FN(maxpool1d_forward_range)(real *out, int32_t *argmax, const real *x, int L,
                                        int C, int Lout, int pool, int stride, int pad_left,
                                        ptrdiff_t b0, ptrdiff_t b1)
{
    for (ptrdiff_t bi = b0; bi < b1; bi++) {
        const real *xs = x + bi * L * C;
        for (int t = 0; t < Lout; t++) {
            int first = t * stride - pad_left;
            int lo = first < 0 ? 0 : first;
            int hi = first + pool > L ? L : first + pool;
            real *o = out + (bi * Lout + t) * C;
            int32_t *am = argmax + (bi * Lout + t) * C;
            for (int c = 0; c < C; c++) {
                o[c] = xs[(ptrdiff_t)lo * C + c];
                am[c] = lo;
            }
            for (int s = lo + 1; s < hi; s++) {
                const real *xr = xs + (ptrdiff_t)s * C;
                for (int c = 0; c < C; c++) {
                    if (xr[c] > o[c]) {
                        o[c] = xr[c];
                        am[c] = s;
                    }
                }
            }
        }
    }
}

void FN(maxpool1d_forward)(real *out, int32_t *argmax, const real *x, int B, int L, int C,
                           int Lout, int pool, int stride, int pad_left, int nthreads)
{
    /* FTZ/DAZ on every path: DAZ decides comparisons with subnormals, and every thread
     * must compare alike. */
    FASTNN_SPLIT_RANGE((ptrdiff_t)B * Lout * C * pool, B, nthreads,
                       FN(maxpool1d_forward_range)(out, argmax, x, L, C, Lout, pool, stride,
                                                   pad_left, begin, end));
}

static void FN(maxpool1d_backward_range)(real *dx, const real *dout, const int32_t *argmax,
                                         int L, int C, int Lout, ptrdiff_t b0, ptrdiff_t b1)
{
    for (ptrdiff_t bi = b0; bi < b1; bi++) {
        real *dxs = dx + bi * L * C;
        memset(dxs, 0, sizeof(real) * (size_t)L * (size_t)C);
        /* out = x[argmax]  =>  dx[argmax] += dout (windows may overlap) */
        for (ptrdiff_t t = 0; t < Lout; t++) {
            const real *d = dout + (bi * Lout + t) * C;
            const int32_t *am = argmax + (bi * Lout + t) * C;
            for (int c = 0; c < C; c++) dxs[(ptrdiff_t)am[c] * C + c] += d[c];
        }
    }
}

void FN(maxpool1d_backward)(real *dx, const real *dout, const int32_t *argmax, int B, int L,
                            int C, int Lout, int nthreads)
{
    FASTNN_SPLIT_RANGE((ptrdiff_t)B * L * C, B, nthreads,
                       FN(maxpool1d_backward_range)(dx, dout, argmax, L, C, Lout, begin, end));
}

static void FN(global_avgpool1d_forward_range)(real *out, const real *x, int L, int C,
                                               ptrdiff_t b0, ptrdiff_t b1)
{
    real inv = (real)1 / (real)L;
    for (ptrdiff_t bi = b0; bi < b1; bi++) {
        real *o = out + bi * C;
        for (int c = 0; c < C; c++) o[c] = 0;
        for (ptrdiff_t s = 0; s < L; s++) {
            const real *xr = x + (bi * L + s) * C;
            for (int c = 0; c < C; c++) o[c] += xr[c];
        }
        for (int c = 0; c < C; c++) o[c] *= inv;
    }
}

void FN(global_avgpool1d_forward)(real *out, const real *x, int B, int L, int C, int nthreads)
{
    FASTNN_SPLIT_RANGE((ptrdiff_t)B * L * C, B, nthreads,
                       FN(global_avgpool1d_forward_range)(out, x, L, C, begin, end));
}

static void FN(global_avgpool1d_backward_range)(real *dx, const real *dout, int L, int C,
                                                ptrdiff_t b0, ptrdiff_t b1)
{
    real inv = (real)1 / (real)L;
    /* out = mean over steps of x  =>  dx[s] = dout / L for every step s */
    for (ptrdiff_t bi = b0; bi < b1; bi++) {
        for (ptrdiff_t s = 0; s < L; s++) {
            real *d = dx + (bi * L + s) * C;
            for (int c = 0; c < C; c++) d[c] = dout[bi * C + c] * inv;
        }
    }
}

void FN(global_avgpool1d_backward)(real *dx, const real *dout, int B, int L, int C,
                                   int nthreads)
{
    FASTNN_SPLIT_RANGE((ptrdiff_t)B * L * C, B, nthreads,
                       FN(global_avgpool1d_backward_range)(dx, dout, L, C, begin, end));
}

#endif /* FASTNN_TEMPLATE */
