/* optimizers.h: one fused pass of an optimizer over a flat parameter buffer.
 *
 * The model keeps all parameters in one contiguous buffer w[n] and their gradients in
 * g[n]; the optimizer's state buffers have the same length. Formulas are Keras 3's:
 * SGD:     momentum 0: w -= lr g
 *          else v = momentum v - lr g;  w += v  (nesterov: w += momentum v - lr g)
 * Adam:    m += (g - m)(1 - beta1);  v += (g^2 - v)(1 - beta2);
 *          w -= lr_t m / (sqrt(v) + eps), lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t)
 *          (the caller computes lr_t; eps is added to the uncorrected root, as Keras)
 * RMSprop: v = rho v + (1 - rho) g^2;  inc = lr g / sqrt(v + eps);
 *          momentum 0: w -= inc, else mom = momentum mom + inc; w -= mom
 * Threads: contiguous blocks of the buffer, one per thread.
 */
#ifndef FASTNN_OPTIMIZERS_H
#define FASTNN_OPTIMIZERS_H

#include "common.h"

#define FASTNN_DECLARE_OPTIMIZERS(real, sfx)                                               \
    void sgd_update_##sfx(real *w, const real *g, real *velocity, ptrdiff_t n, real lr,    \
                          real momentum, int nesterov, int nthreads);                      \
    void adam_update_##sfx(real *w, const real *g, real *m, real *v, ptrdiff_t n,         \
                           real lr_t, real beta1, real beta2, real eps, int nthreads);     \
    void rmsprop_update_##sfx(real *w, const real *g, real *v, real *mom, ptrdiff_t n,    \
                              real lr, real rho, real momentum, real eps, int nthreads);   \
    /* Adam on one thread with the gradient g = g0 + g1, plus l2 w when add_l2, computed  \
     * in the same pass and stored into g: the same bits as adding the two gradients,     \
     * then the L2 term, then adam_update, in three passes. The six buffers must not       \
     * overlap. */                                                                         \
    void adam_update_sum2_##sfx(real *w, real *g, const real *g0, const real *g1,          \
                                int add_l2, real l2, real *m, real *v, ptrdiff_t n,        \
                                real lr_t, real beta1, real beta2, real eps);

FASTNN_DECLARE_OPTIMIZERS(float, f32)
FASTNN_DECLARE_OPTIMIZERS(double, f64)

/* Adam's bias-corrected rate for step t (1-based). */
double adam_corrected_rate(double lr, double beta1, double beta2, long long t);

#endif
