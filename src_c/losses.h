/* losses.h: losses and metrics, each loss computing its value and gradient in one pass.
 *
 * Layout: pred (B x K) row-major. Targets y are (B x K) for binary cross-entropy, MSE
 * and categorical cross-entropy, and (B) class ids (whole numbers stored as real) for
 * sparse categorical cross-entropy.
 * Each *_loss returns the batch-mean loss (mean over the last axis, then over the batch,
 * Keras' default reduction, accumulated in double) and, when grad is not NULL, writes
 * grad = d(mean loss)/d(pred) (B x K).
 * Per-row weights (B values, or NULL for none) make it the weighted mean
 *     sum_i w_i l_i / sum_i w_i   (l_i: row i's loss, a mean over its last axis),
 * scikit-learn's np.average(..., weights=w), so grad row i is w_i dl_i/dpred_i / sum_i w_i.
 * NULL weights give the unweighted mean bit for bit, and so do weights that are all 1.
 * Weights may be negative (scikit-learn allows them); weights that sum to 0 (or to NaN)
 * have no weighted mean: the loss is NaN and the gradient zero.
 * from_logits: pred holds logits; the loss uses the log-sum-exp forms, exact and finite
 * for any logit. Otherwise pred holds probabilities, clipped to [1e-7, 1 - 1e-7] as Keras
 * does (the gradient is zero where clipping bit). A sigmoid or softmax output layer with
 * from_logits=False is trained by passing its logits here with from_logits=1.
 * A class id outside [0, K) (the Python layer rejects those first) gives a NaN loss and
 * never an out-of-bounds read.
 * Threads: the batch is cut into at most 64 row blocks, their count depending on the
 * sizes only; block sums are added in order, so the result does not depend
 * on the thread count.
 */
#ifndef FASTNN_LOSSES_H
#define FASTNN_LOSSES_H

#include "common.h"

enum {
    LOSS_BINARY_CROSSENTROPY = 0,
    LOSS_MEAN_SQUARED_ERROR = 1,
    LOSS_SPARSE_CATEGORICAL_CROSSENTROPY = 2,
    LOSS_CATEGORICAL_CROSSENTROPY = 3
};

/* Or'd into from_logits (with it set): each term's loss value (not its gradient) as
 * scikit-learn's log-loss computes it, from a probability clipped to [eps, 1 - eps] (eps:
 * the type's machine epsilon), that is clamped to [-log(1 - eps), -log(eps)]; for the
 * cross-entropies only (fastnn.sklearn's classifier). */
enum { LOSS_CLIP_PROBABILITIES = 2 };

enum {
    METRIC_BINARY_ACCURACY = 0,
    METRIC_SPARSE_CATEGORICAL_ACCURACY = 1,
    METRIC_CATEGORICAL_ACCURACY = 2,
    METRIC_MEAN_ABSOLUTE_ERROR = 3,
    METRIC_MEAN_SQUARED_ERROR = 4
};

#define FASTNN_DECLARE_LOSSES(real, sfx)                                                    \
    double binary_crossentropy_loss_##sfx(real *grad, const real *pred, const real *y,      \
                                          const real *weights, int B, int K,                \
                                          int from_logits, int nthreads);                   \
    double mean_squared_error_loss_##sfx(real *grad, const real *pred, const real *y,       \
                                         const real *weights, int B, int K, int nthreads);  \
    double sparse_categorical_crossentropy_loss_##sfx(real *grad, const real *pred,         \
                                                      const real *labels,                   \
                                                      const real *weights, int B, int K,    \
                                                      int from_logits, int nthreads);       \
    double categorical_crossentropy_loss_##sfx(real *grad, const real *pred, const real *y, \
                                               const real *weights, int B, int K,           \
                                               int from_logits, int nthreads);              \
    /* One of the LOSS_* codes; y is labels for the sparse loss. */                         \
    double loss_##sfx(int loss, real *grad, const real *pred, const real *y,                \
                      const real *weights, int B, int K, int from_logits, int nthreads);    \
    /* The loss of B rows that are part of a batch weighing batch_weight (>= 0, from     \
     * batch_weight_* over the whole batch): their weighted loss sum over batch_weight    \
     * (times the terms per row), and its gradient. The shares of a batch's parts add up  \
     * to the batch's loss (up to rounding), and their gradients are its gradient rows.   \
     * loss_* is the share of the whole batch. */                                          \
    double loss_share_##sfx(int loss, real *grad, const real *pred, const real *y,         \
                            const real *weights, int B, int K, int from_logits,            \
                            double batch_weight, int nthreads);                            \
    /* What a batch of B rows weighs: B without weights, else the sum of the B weights      \
     * (in double, in row order). The losses normalize by this; network.c scales its L2     \
     * term by the same value. */                                                           \
    double batch_weight_##sfx(const real *weights, int B);                                  \
    /* Sum over the batch of the per-sample metric (each sample's value is a mean over the  \
     * last axis), each times its weight when weights is not NULL; from_logits makes        \
     * binary accuracy threshold at 0 instead of 0.5. */                                    \
    double metric_sum_##sfx(int metric, const real *pred, const real *y,                    \
                            const real *weights, int B, int K, int from_logits);

FASTNN_DECLARE_LOSSES(float, f32)
FASTNN_DECLARE_LOSSES(double, f64)

#endif
