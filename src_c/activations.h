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

#include "common.h"

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
