/* activations.c: see activations.h. Written once for `real`, compiled for float and
 * double by including itself (real_begin.h explains the pattern). */
#ifndef FASTNN_TEMPLATE
#define FASTNN_TEMPLATE
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "activations.h"
#include "simd16.h"
#if FASTNN_SIMD16

int softmax_row16_available(void)
{
    return __builtin_cpu_supports("avx512f");
}

__attribute__((target("avx512f"))) float softmax_row16_f32(float *e, const float *z, int K,
                                                          float *zmax)
{
    __mmask16 lanes = (__mmask16)((1u << K) - 1u);
    __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), lanes, z);
    /* the largest value, or NaN if the row has one (the scalar loop's max skips NaN
     * after the first value, but a NaN term makes the sum NaN either way) */
    float m = _mm512_reduce_max_ps(v);
    __m512 terms = exp_nonpositive_x16(_mm512_sub_ps(v, _mm512_set1_ps(m)));
    terms = _mm512_maskz_mov_ps(lanes, terms);
    _mm512_mask_storeu_ps(e, lanes, terms);
    *zmax = m;
    return _mm512_reduce_add_ps(terms);
}
#else
int softmax_row16_available(void) { return 0; }
float softmax_row16_f32(float *e, const float *z, int K, float *zmax)
{
    (void)e, (void)z, (void)K, (void)zmax;
    return NAN;
}
#endif

#define FASTNN_DOUBLE 0
#include "real_begin.h"
#include "activations.c"
#include "real_end.h"
#define FASTNN_DOUBLE 1
#include "real_begin.h"
#include "activations.c"
#include "real_end.h"
#undef FASTNN_TEMPLATE
#else

/* Never forms exp of a large positive number, so it is exact and finite for any z. */
real FN(sigmoid)(real z)
{
    if (z >= 0) {
        return (real)1 / ((real)1 + EXP(-z));
    }
    real e = EXP(z);
    return e / ((real)1 + e);
}

#if !FASTNN_DOUBLE
/* sigmoid over a block, vectorized: e = e^-|z|, sigmoid = 1/(1+e) or e/(1+e). */
FASTNN_VECTORIZED
static void sigmoid_block_f32(float *a, const float *z, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        float zi = z[i];
        float e = exp_nonpositive_f32(zi > 0 ? -zi : zi);
        float s = 1.0f / (1.0f + e);
        a[i] = zi >= 0 ? s : e * s;
    }
}
#endif

static void FN(softmax_row)(real *a, const real *z, int cols)
{
#if !FASTNN_DOUBLE
    if (cols <= 16 && softmax_row16_available()) {
        float zmax, sum = softmax_row16_f32(a, z, cols, &zmax);
        float inv = 1.0f / sum;
        for (int j = 0; j < cols; j++) a[j] *= inv;
        return;
    }
#endif
    real zmax = z[0];
    for (int j = 1; j < cols; j++) {
        if (z[j] > zmax) zmax = z[j];
    }
    real sum = 0;
    for (int j = 0; j < cols; j++) {
        a[j] = EXP(z[j] - zmax);
        sum += a[j];
    }
    real inv = (real)1 / sum;
    for (int j = 0; j < cols; j++) a[j] *= inv;
}

FASTNN_VECTORIZED
void FN(activation_forward_rows)(real *a, const real *z, ptrdiff_t r0, ptrdiff_t r1, int cols,
                                 int act, real slope)
{
    ptrdiff_t begin = (ptrdiff_t)r0 * cols, end = (ptrdiff_t)r1 * cols;
    switch (act) {
    case ACT_SIGMOID:
#if FASTNN_DOUBLE
        for (ptrdiff_t i = begin; i < end; i++) a[i] = FN(sigmoid)(z[i]);
#else
        sigmoid_block_f32(a + begin, z + begin, end - begin);
#endif
        break;
    case ACT_RELU:
        for (ptrdiff_t i = begin; i < end; i++) a[i] = z[i] > 0 ? z[i] : (real)0;
        break;
    case ACT_LEAKY_RELU:
        for (ptrdiff_t i = begin; i < end; i++) a[i] = z[i] > 0 ? z[i] : slope * z[i];
        break;
    case ACT_TANH:
        for (ptrdiff_t i = begin; i < end; i++) a[i] = TANH(z[i]);
        break;
    case ACT_SOFTMAX:
        for (ptrdiff_t r = r0; r < r1; r++) {
            FN(softmax_row)(a + (ptrdiff_t)r * cols, z + (ptrdiff_t)r * cols, cols);
        }
        break;
    default: /* ACT_LINEAR */
        if (a != z) {
            for (ptrdiff_t i = begin; i < end; i++) a[i] = z[i];
        }
        break;
    }
}

void FN(activation_forward)(real *a, const real *z, int rows, int cols, int act,
                            real slope, int nthreads)
{
    FASTNN_SPLIT_RANGE((ptrdiff_t)rows * cols, rows, nthreads,
                       FN(activation_forward_rows)(a, z, begin, end, cols, act, slope));
}

FASTNN_VECTORIZED
void FN(activation_backward_rows)(real *dz, const real *da, const real *z, const real *a,
                                  ptrdiff_t r0, ptrdiff_t r1, int cols, int act, real slope)
{
    ptrdiff_t begin = (ptrdiff_t)r0 * cols, end = (ptrdiff_t)r1 * cols;
    switch (act) {
    case ACT_SIGMOID: /* a = 1/(1+e^-z)  =>  da/dz = a (1 - a) */
        for (ptrdiff_t i = begin; i < end; i++) dz[i] = da[i] * a[i] * ((real)1 - a[i]);
        break;
    case ACT_RELU: /* a = max(z, 0) */
        for (ptrdiff_t i = begin; i < end; i++) {
            real g = da[i]; /* loaded unconditionally, so the select vectorizes */
            dz[i] = z[i] > 0 ? g : (real)0;
        }
        break;
    case ACT_LEAKY_RELU: /* a = z > 0 ? z : slope z */
        for (ptrdiff_t i = begin; i < end; i++) {
            real factor = z[i] > 0 ? (real)1 : slope;
            dz[i] = da[i] * factor;
        }
        break;
    case ACT_TANH: /* a = tanh z  =>  da/dz = 1 - a^2 */
        for (ptrdiff_t i = begin; i < end; i++) dz[i] = da[i] * ((real)1 - a[i] * a[i]);
        break;
    case ACT_SOFTMAX: /* a_j = e^z_j / sum e^z  =>  dz_j = a_j (da_j - sum_k da_k a_k) */
        for (ptrdiff_t r = r0; r < r1; r++) {
            const real *ar = a + (ptrdiff_t)r * cols, *dar = da + (ptrdiff_t)r * cols;
            real *dzr = dz + (ptrdiff_t)r * cols;
            real dot = 0;
            for (int j = 0; j < cols; j++) dot += dar[j] * ar[j];
            for (int j = 0; j < cols; j++) dzr[j] = ar[j] * (dar[j] - dot);
        }
        break;
    default: /* ACT_LINEAR */
        if (dz != da) {
            for (ptrdiff_t i = begin; i < end; i++) dz[i] = da[i];
        }
        break;
    }
}

void FN(activation_backward)(real *dz, const real *da, const real *z, const real *a,
                             int rows, int cols, int act, real slope, int nthreads)
{
    FASTNN_SPLIT_RANGE((ptrdiff_t)rows * cols, rows, nthreads,
                       FN(activation_backward_rows)(dz, da, z, a, begin, end, cols, act,
                                                    slope));
}

#endif /* FASTNN_TEMPLATE */
