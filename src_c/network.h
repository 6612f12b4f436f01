/* network.h: a Sequential network's training and inference loops, in C.
 *
 * The Python layer describes each layer (nn_layer) with pointers into the model's one
 * parameter buffer and one gradient buffer; the optimizer (nn_optimizer) updates both
 * whole buffers in one pass. A workspace (nn_workspace) holds every per-batch buffer for
 * one batch size; it is allocated once and reused by every step.
 *
 * Per layer i (rows = samples of the batch, out_dim columns):
 *   dense:      z = a[i-1] w + b, a = f(z)            (a aliases z for linear and relu)
 *   activation: z aliases a[i-1], a = f(z)
 *   dropout:    z holds the scaled keep-mask, a = a[i-1] * z   (inference: a = a[i-1])
 *   conv1d:     z = im2col(a[i-1]) w + b, a = f(z); the layer's scratch holds im2col
 *   maxpool1d:  a = window maxima; the scratch holds their argmax steps (int32)
 *   global_avgpool1d: a = mean over steps
 * A sample's features are contiguous, so (steps x channels) is also a flat vector:
 * Flatten needs no layer here.
 *   d[i] holds dL/da[i] and, after the layer's backward, dL/dz[i].
 * When the last layer's activation is sigmoid (binary cross-entropy) or softmax
 * (categorical cross-entropies) and the loss takes probabilities, the loss is computed
 * from z by its logits form, and the backward starts from dL/dz = p - y (model->fused).
 *
 * Training splits an epoch into steps; network_train_* runs steps [step_begin, step_end)
 * so Python can report progress between calls. A step's batch may be cut into row
 * parts run in parallel (network_parts), or its first layer's units split between two
 * threads (network_split_units).
 * Sample weights (optional, one per row of x) are gathered with the batch rows; the loss
 * is then the batch's weighted mean (losses.h), and the batch's weight, the sum of its
 * rows' weights, takes the place of its row count in the L2 term, as in scikit-learn. Results depend only on the seeds, never on
 * the thread count: every kernel splits its work by output.
 */
#ifndef FASTNN_NETWORK_H
#define FASTNN_NETWORK_H

#include <stdint.h>
#include "common.h"

enum {
    LAYER_DENSE = 0,
    LAYER_ACTIVATION = 1,
    LAYER_DROPOUT = 2,
    LAYER_CONV1D = 3,
    LAYER_MAXPOOL1D = 4,
    LAYER_GLOBAL_AVGPOOL1D = 5
};
enum { OPT_SGD = 0, OPT_ADAM = 1, OPT_RMSPROP = 2 };
#define NN_MAX_METRICS 8

typedef struct {
    int kind;           /* LAYER_* */
    int in_dim, out_dim;/* features per sample */
    int act;            /* ACT_* */
    double slope;       /* leaky_relu negative slope */
    double rate;        /* dropout rate */
    int steps_in, channels_in, steps_out; /* 1-D layers: in_dim = steps_in * channels_in */
    int kernel, stride, pad_left;         /* conv kernel size or pool size, its stride */
    double l2_per_batch; /* L2 penalty on the kernel, scikit-learn's form: the loss gains
                            0.5 l2 ||w||^2 / B and dw gains l2 w / B (B: batch rows, or
                            the sum of the batch's sample weights when weighted) */
    int w_trans;        /* dense: w (and dw) stored transposed, out_dim x in_dim (dense.h) */
    void *w, *b;        /* parameters (b NULL without bias), views into the model buffer */
    void *dw, *db;      /* their gradients, views into the gradient buffer */
} nn_layer;

typedef struct {
    int is_double;      /* 0: float32, 1: float64 */
    int n_layers;
    nn_layer *layers;
    int loss;           /* LOSS_* */
    int from_logits;    /* as the loss was configured */
    int fused;          /* the last layer's sigmoid/softmax is folded into the loss */
    double loss_scale;  /* the loss (and its gradient) times this: 0.5 gives
                           scikit-learn's half squared error */
    int clip_log_loss;  /* the loss's value (not its gradient) as scikit-learn's log-loss,
                           from clipped probabilities (LOSS_CLIP_PROBABILITIES) */
    int n_metrics;
    int metrics[NN_MAX_METRICS]; /* METRIC_* */
    void *gemm;         /* sgemm_fn or dgemm_fn */
    ptrdiff_t n_params; /* elements of the parameter (and gradient) buffer */
    int max_parts;      /* at most this many parts per training step (network_parts) */
} nn_model;

typedef struct {
    int kind;           /* OPT_* */
    double learning_rate, beta1, beta2, epsilon, rho, momentum;
    int nesterov;
    long long iterations; /* steps taken so far (Adam's t) */
    void *params, *grads; /* the model's flat buffers */
    void *slot1, *slot2;  /* Adam m, v; RMSprop v, momentum; SGD velocity */
    ptrdiff_t n_params;
} nn_optimizer;

typedef struct {
    int batch;          /* rows the buffers hold */
    int n_layers;
    void *block;        /* one allocation that holds all buffers below */
    void *xb, *yb, *wb; /* the gathered batch: rows, targets, sample weights */
    void **zbuf, **abuf, **dbuf; /* per-layer storage (NULL where a layer aliases) */
    void **sbuf;        /* per-layer scratch: im2col (conv1d), argmax (maxpool1d) */
    void **z, **a;      /* per-layer pointers used by the last forward pass */
    int parts;          /* training: row parts of a full batch (network_parts) */
    void *part_grads;   /* gradient buffers of the parts, two each (steps alternate) */
    void *replicas;     /* threads 1.. of the parts: parameters, optimizer slots and summed
                           gradient of their own (network.c: train_in_parts) */
    nn_layer *replica_layers; /* their layers, pointing into their parameters */
    int split_units;    /* training: the first layer's units thread 0 takes when two
                           threads split them (network_split_units), 0: no split */
    void *unit_x[2];    /* thread 1's batch rows, this step's and the next's */
    void *unit_bufs[6]; /* z, a, d of each thread's range of units (batch x out_dim of the
                           first layer, of which a range uses batch x its units) */
    double wait_fraction; /* of the last training call split between threads (parts or
                             units), the largest share of its time a thread spent waiting
                             at barriers for the others; 0 for other calls */
} nn_workspace;

/* NULL when out of memory. y_width: targets per sample (1 for sparse labels); training:
 * whether the workspace will train (it then holds the buffers of the parts or of the
 * split first layer, if the sizes call for them). */
nn_workspace *network_workspace_new(const nn_model *m, int batch, int y_width, int training);

/* How many parts a training step cuts a batch of B rows into. Each part (a contiguous
 * range of rows) runs its forward, loss and backward on one thread into a gradient
 * buffer of its own; the buffers are then added in part order and every thread updates
 * its own copy of the parameters (network.c: train_in_parts): one fork per call and one
 * barrier per step, where splitting each product instead forks and joins a dozen times
 * per step. The count
 * depends on the sizes only, never on the threads, so the results do not either: 2 for
 * steps of 2 MFLOP or more whose work is large beside the parameter count (the gradient
 * sum costs one pass over the parameters per extra part), 1 otherwise (one part: every
 * kernel splits its own work), never for models of more than 262144 parameters (whose
 * products split well by themselves), and never more than m->max_parts. */
int network_parts(const nn_model *m, int B);

/* Whether training on two or more threads splits the first layer's units between two of
 * them, and where: thread 0 takes units [0, s), thread 1 [s, out_dim), of the layer's
 * forward, backward and update, and thread 0 runs the other layers and the loss between
 * (network.c: train_split_units). Returns s, or 0 for no split. For a float first layer
 * stored transposed (units x inputs: a range of units is a block of its rows, of its
 * gradient's and of the optimizer's slots) with an elementwise activation (not softmax)
 * that does at least 3/4 of a step's work, 0.5 MFLOP or more, in a batch that is not cut
 * into parts, in a build with OpenMP on a CPU that runs fastnn's kernel: the course's
 * 400-25-15-1 network at batch 32, where each layer's products are too small to split by
 * themselves and the second core would otherwise idle. Each range of units must keep the
 * kernels the whole layer's products take (dot products forward, fastnn's kernel for the
 * weight gradient), each of whose outputs depends on its own operands alone: the results
 * are then the same bits as on one thread. */
int network_split_units(const nn_model *m, int B);
void network_workspace_free(nn_workspace *ws);

/* order[0..n) = a permutation of 0..n-1 drawn from seed (Fisher-Yates, splitmix64). */
void network_shuffle(int64_t *order, ptrdiff_t n, uint64_t seed);

/* A source of random bits with numpy's bit-generator interface (its bitgen_t: the state
 * and the functions that draw from it). */
typedef struct {
    void *state;
    uint32_t (*next_uint32)(void *state);
    uint64_t (*next_uint64)(void *state);
} nn_bitgen;

/* Shuffles order[0..n) in place as numpy's RandomState.shuffle shuffles a 1-D array with
 * the same generator: Fisher-Yates from the last element, each index drawn by numpy's
 * masked rejection (its legacy random_interval). The permutation and the generator's
 * state afterwards are numpy's, draw for draw. */
void network_shuffle_numpy(int64_t *order, ptrdiff_t n, const nn_bitgen *gen);

#define FASTNN_DECLARE_NETWORK(real, sfx)                                                  \
    /* Steps [step_begin, step_end) of an epoch over rows order[0..n) of x, y. Adds each   \
     * batch's loss times its size to *loss_sum and its metric sums to metric_sums.        \
     * weights: NULL, or one per row of x; then each batch's loss and metrics are its      \
     * weighted means (times its size, as unweighted). A batch whose weights sum to 0 has  \
     * no weighted mean: it adds NaN to *loss_sum and takes no step. */                    \
    void network_train_##sfx(const nn_model *m, nn_optimizer *opt, nn_workspace *ws,       \
                             const real *x, const real *y, int y_width,                    \
                             const real *weights, const int64_t *order, ptrdiff_t n,       \
                             ptrdiff_t step_begin, ptrdiff_t step_end,                     \
                             uint64_t dropout_seed, double *loss_sum, double *metric_sums, \
                             int nthreads);                                                \
    /* Whether all n values are finite (no NaN or inf). */                                 \
    int all_finite_##sfx(const real *x, ptrdiff_t n);                                      \
    /* Inference: out (n x out_dim of the last layer) from x, in batches of ws->batch. */  \
    void network_predict_##sfx(const nn_model *m, nn_workspace *ws, real *out,             \
                               const real *x, ptrdiff_t n, int nthreads);                  \
    /* Inference loss and metrics summed over the rows (loss times batch size). */         \
    void network_evaluate_##sfx(const nn_model *m, nn_workspace *ws, const real *x,        \
                                const real *y, int y_width, ptrdiff_t n, double *loss_sum, \
                                double *metric_sums, int nthreads);                        \
    /* Loss of the first ws->batch rows (no dropout) and its gradient, written into the    \
     * model's gradient buffer; nothing is updated. weights: NULL or one per row, as in    \
     * training. */                                                                        \
    double network_loss_grad_##sfx(const nn_model *m, nn_workspace *ws, const real *x,     \
                                   const real *y, int y_width, const real *weights,        \
                                   int rows, int nthreads);                                \
    /* Up to max_epochs whole epochs of scikit-learn's stochastic solver over rows         \
     * order[0..n) of x, y (batches of ws->batch rows, unweighted, no dropout): each epoch \
     * first shuffles order with gen (network_shuffle_numpy; NULL: no shuffle), runs its   \
     * steps (network_train) and stores its loss, (loss_sum - loss_correction *            \
     * metric_sums[0]) / n, in losses[epoch]; then counts it as scikit-learn counts epochs \
     * without improvement: *no_improvement + 1 when the loss exceeds *best_loss - tol,    \
     * else 0, and *best_loss becomes the lower of the two. Returns the epochs run: fewer  \
     * than max_epochs when the count passes n_iter_no_change, where scikit-learn decides  \
     * whether to stop (its learning-rate schedule may go on instead). Batches cut into    \
     * parts run all the epochs in one OpenMP region (network.c: train_in_parts). */       \
    int network_fit_epochs_##sfx(const nn_model *m, nn_optimizer *opt, nn_workspace *ws,   \
                                 const real *x, const real *y, int y_width, int64_t *order,\
                                 ptrdiff_t n, const nn_bitgen *gen, double loss_correction,\
                                 double tol, int n_iter_no_change, double *best_loss,      \
                                 int *no_improvement, double *losses, int max_epochs,      \
                                 int nthreads);

FASTNN_DECLARE_NETWORK(float, f32)
FASTNN_DECLARE_NETWORK(double, f64)

#endif
