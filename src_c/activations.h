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
 * Arguments below -87.33 (where e^x leaves the normal floats) give 0, NaN gives NaN. */
static inline float exp_nonpositive_f32(float x)
{
    const float shift = 12582912.0f; /* 1.5 * 2^23 */
    /* NaN takes the clamp too, so the conversion to int below stays defined */
    float xc = x > -87.33f ? x : -87.33f;
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
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x > -87.33f ? e * scale : (x != x ? x : 0.0f); /* NaN stays NaN */
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

#endif
