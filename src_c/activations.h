/* activations.h: elementwise activations and row-wise softmax, forward and backward.
 *
 * Layout: z, a, da, dz are (rows x cols) row-major; softmax normalizes each row.
 * forward:  a = f(z). `a` may be the same buffer as `z` (in place).
 * backward: dz = da * f'(z), written (not accumulated); `dz` may be the same buffer as
 *           `da`. The derivative reads z or a, whichever is cheaper and exact.
 * leaky_relu(z) = z for z > 0, slope * z otherwise.
 * Threads: rows are split between threads; each element is computed by one thread.
 */
#ifndef FASTNN_ACTIVATIONS_H
#define FASTNN_ACTIVATIONS_H

#include <stdint.h>
#include <string.h>
#include "common.h"

/* e^x for x <= 0 in float, written so that a loop of it vectorizes: round x / ln 2 to an
 * integer n with the 1.5 * 2^23 trick, reduce r = x - n ln 2 (ln 2 split in two parts so
 * the product is exact), evaluate a degree-6 minimax polynomial for e^r on
 * |r| <= ln2 / 2 (relative error about 1e-7), and scale by 2^n through the exponent bits.
 * Arguments below -87.33 (where e^x leaves the normal floats) give 0, NaN gives NaN.
 * Meant for x <= 0 (larger x would overflow the exponent bits). */
static inline float exp_nonpositive_f32(float x)
{
    const float shift = 12582912.0f; /* 1.5 * 2^23 */
    float xc = x < -87.33f ? -87.33f : x; /* NaN stays NaN through the polynomial */
    float n = (xc * 1.44269504088896341f + shift) - shift;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * r * r + r + 1.0f;
    float n_defined = n == n ? n : 0.0f; /* keeps the conversion to int defined for NaN */
    int32_t bits = ((int32_t)n_defined + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.33f ? 0.0f : e * scale;
}

/* e^x for x <= 0 in double, written so that a loop of it vectorizes (the library's exp
 * is a call per element, about 28 cycles; the softmax-CE of a 10-class layer spent 7% of
 * a float64 training step in it): n = x / ln 2 rounded with the 1.5 * 2^52 trick,
 * r = x - n ln 2 (ln 2 in two parts, the first with 21 trailing zero bits so that n times
 * it is exact), e^r by its Taylor polynomial of degree 13 on |r| <= ln2 / 2 (truncation
 * 5e-18 relative, so the result is within about 1 ulp), scaled by 2^n through the exponent
 * bits. Arguments below -708.39 (where e^x leaves the normal doubles) give 0, NaN gives
 * NaN. Meant for x <= 0. exp_nonpositive_x8 (simd16.h) repeats it on 8 lanes. */
static inline double exp_nonpositive_f64(double x)
{
    const double shift = 6755399441055744.0; /* 1.5 * 2^52 */
    double xc = x < -708.39 ? -708.39 : x; /* NaN stays NaN through the polynomial */
    double t = xc * 1.4426950408889634 + shift;
    double n = t - shift;
    double r = xc - n * 6.93147180369123816490e-01;
    r = r - n * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0; /* 1 / 13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    double e = p * r * r + r + 1.0;
    /* t = 1.5 * 2^52 + n exactly, so its bits are shift's plus n: 2^n's exponent bits by
     * integer arithmetic, which vectorizes where a conversion to int64 would not (it
     * needs AVX-512DQ); a NaN x's e is NaN whatever they hold */
    uint64_t t_bits, shift_bits;
    memcpy(&t_bits, &t, sizeof t_bits);
    memcpy(&shift_bits, &shift, sizeof shift_bits);
    uint64_t bits = (t_bits - shift_bits + 1023u) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -708.39 ? 0.0 : e * scale;
}

/* log(1 + e) for e in [0, 1] in float, written so that a loop of it vectorizes (the
 * library's log1pf is a call per element): u = 1 + e rounded, c = e - (u - 1) its
 * rounding error (exact), u = 2^k m with m in [sqrt(1/2), sqrt(2)], and
 * log(1 + e) = k ln 2 + log(m) + c / u, log(m) = log(1 + f) by a degree-8 minimax
 * polynomial in f = m - 1 (relative error about 1e-7, as for exp_nonpositive_f32). For
 * e below 2^-24, u = 1 and the result is e itself; NaN gives NaN. */
static inline float log1p_unit_f32(float e)
{
    float u = 1.0f + e;
    float c = e - (u - 1.0f);
    /* k = 1 above sqrt(2), else 0, as a float and a multiplier (not a branch), so that
     * a loop of it and exp_nonpositive_f32 together still vectorizes */
    float k = u > 1.41421356f ? 1.0f : 0.0f;
    float m = u * (1.0f - 0.5f * k);
    float f = m - 1.0f;
    float z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float y = f * z * p - 0.5f * z + c / u;
    y += k * -2.12194440e-4f;
    return (f + y) + k * 0.693359375f;
}

#define FASTNN_DECLARE_ACTIVATIONS(real, sfx)                                              \
    void activation_forward_##sfx(real *a, const real *z, int rows, int cols, int act,    \
                                  real slope, int nthreads);                               \
    void activation_backward_##sfx(real *dz, const real *da, const real *z, const real *a, \
                                   int rows, int cols, int act, real slope, int nthreads); \
    /* The same on rows [r0, r1) only, on the calling thread (for fused passes). */      \
    void activation_forward_rows_##sfx(real *a, const real *z, ptrdiff_t r0, ptrdiff_t r1, \
                                       int cols, int act, real slope);                     \
    void activation_backward_rows_##sfx(real *dz, const real *da, const real *z,           \
                                        const real *a, ptrdiff_t r0, ptrdiff_t r1,         \
                                        int cols, int act, real slope);                    \
    real sigmoid_##sfx(real z);

FASTNN_DECLARE_ACTIVATIONS(float, f32)
FASTNN_DECLARE_ACTIVATIONS(double, f64)

/* The softmax terms of one row of K <= 16 floats, in one AVX-512 vector: e_j =
 * e^(z_j - max z), each exactly as exp_nonpositive_f32 computes it, written to e
 * (K values); returns their sum (added across the lanes) and sets *zmax. Rows of
 * classifier outputs (10 classes) otherwise cost a scalar pass per value. Only for
 * CPUs with AVX-512 (softmax_row16_available). */
int softmax_row16_available(void);
float softmax_row16_f32(float *e, const float *z, int K, float *zmax);

#endif
