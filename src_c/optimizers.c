/* optimizers.c: see optimizers.h. Written once for `real`, compiled for float and double
 * by including itself (real_begin.h explains the pattern). */
#ifndef FASTNN_TEMPLATE
#define FASTNN_TEMPLATE
#include <math.h>
#include "optimizers.h"

double adam_corrected_rate(double lr, double beta1, double beta2, long long t)
{
    return lr * sqrt(1.0 - pow(beta2, (double)t)) / (1.0 - pow(beta1, (double)t));
}

#define FASTNN_DOUBLE 0
#include "real_begin.h"
#include "optimizers.c"
#include "real_end.h"
#define FASTNN_DOUBLE 1
#include "real_begin.h"
#include "optimizers.c"
#include "real_end.h"
#undef FASTNN_TEMPLATE
#else

/* The updates of elements [i0, i1), on the calling thread. */
FASTNN_VECTORIZED
static void FN(sgd_range)(real *w, const real *g, real *velocity, ptrdiff_t i0, ptrdiff_t i1,
                          real lr, real momentum, int nesterov)
{
    if (momentum == 0) {
        for (ptrdiff_t i = i0; i < i1; i++) w[i] -= lr * g[i];
    } else if (nesterov) {
        for (ptrdiff_t i = i0; i < i1; i++) {
            real vel = momentum * velocity[i] - lr * g[i];
            velocity[i] = vel;
            w[i] += momentum * vel - lr * g[i];
        }
    } else {
        for (ptrdiff_t i = i0; i < i1; i++) {
            real vel = momentum * velocity[i] - lr * g[i];
            velocity[i] = vel;
            w[i] += vel;
        }
    }
}

FASTNN_VECTORIZED
static void FN(adam_range)(real *w, const real *g, real *m, real *v, ptrdiff_t i0,
                           ptrdiff_t i1, real lr_t, real beta1, real beta2, real eps)
{
    real one_minus_b1 = (real)1 - beta1, one_minus_b2 = (real)1 - beta2;
    for (ptrdiff_t i = i0; i < i1; i++) {
        real gi = g[i];
        real mi = m[i] + (gi - m[i]) * one_minus_b1;
        real vi = v[i] + (gi * gi - v[i]) * one_minus_b2;
        m[i] = mi;
        v[i] = vi;
        w[i] -= lr_t * mi / (SQRT(vi) + eps);
    }
}

FASTNN_VECTORIZED
static void FN(rmsprop_range)(real *w, const real *g, real *v, real *mom, ptrdiff_t i0,
                              ptrdiff_t i1, real lr, real rho, real momentum, real eps)
{
    real one_minus_rho = (real)1 - rho;
    for (ptrdiff_t i = i0; i < i1; i++) {
        real gi = g[i];
        real vi = rho * v[i] + one_minus_rho * gi * gi;
        v[i] = vi;
        real inc = lr * gi / SQRT(vi + eps);
        if (momentum > 0) {
            mom[i] = momentum * mom[i] + inc;
            w[i] -= mom[i];
        } else {
            w[i] -= inc;
        }
    }
}

FASTNN_VECTORIZED
void FN(adam_update_sum2)(real *restrict w, real *restrict g, const real *restrict g0,
                          const real *restrict g1, int add_l2, real l2, real *restrict m,
                          real *restrict v, ptrdiff_t n, real lr_t, real beta1, real beta2,
                          real eps)
{
    real one_minus_b1 = (real)1 - beta1, one_minus_b2 = (real)1 - beta2;
    /* restrict: six buffers are more than the vectorizer checks for overlap at run time
     * (without it, the loop ran scalar, 7x slower) */
#define ADAM_SUM2_BODY(GRADIENT)                                                           \
    for (ptrdiff_t i = 0; i < n; i++) {                                                    \
        real gi = GRADIENT;                                                                \
        g[i] = gi;                                                                         \
        real mi = m[i] + (gi - m[i]) * one_minus_b1;                                       \
        real vi = v[i] + (gi * gi - v[i]) * one_minus_b2;                                  \
        m[i] = mi;                                                                         \
        v[i] = vi;                                                                         \
        w[i] -= lr_t * mi / (SQRT(vi) + eps);                                              \
    }
    if (add_l2)
        ADAM_SUM2_BODY((g0[i] + g1[i]) + l2 * w[i])
    else
        ADAM_SUM2_BODY(g0[i] + g1[i])
#undef ADAM_SUM2_BODY
}

void FN(sgd_update)(real *w, const real *g, real *velocity, ptrdiff_t n, real lr,
                    real momentum, int nesterov, int nthreads)
{
    FASTNN_SPLIT_RANGE(n, n, nthreads,
                       FN(sgd_range)(w, g, velocity, begin, end, lr, momentum, nesterov));
}

void FN(adam_update)(real *w, const real *g, real *m, real *v, ptrdiff_t n, real lr_t,
                     real beta1, real beta2, real eps, int nthreads)
{
    FASTNN_SPLIT_RANGE(n, n, nthreads,
                       FN(adam_range)(w, g, m, v, begin, end, lr_t, beta1, beta2, eps));
}

void FN(rmsprop_update)(real *w, const real *g, real *v, real *mom, ptrdiff_t n, real lr,
                        real rho, real momentum, real eps, int nthreads)
{
    FASTNN_SPLIT_RANGE(n, n, nthreads,
                       FN(rmsprop_range)(w, g, v, mom, begin, end, lr, rho, momentum, eps));
}

#endif /* FASTNN_TEMPLATE */
