/* network.c: see network.h. The float/double loops are written once for `real` and
 * compiled twice by including this file (real_begin.h explains the pattern). */
#ifndef FASTNN_TEMPLATE
#define FASTNN_TEMPLATE
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "network.h"
#include "activations.h"
#include "dense.h"
#include "losses.h"
#include "optimizers.h"
#include "conv1d.h"

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A uniform double in [0, 1) that depends only on (seed, step, index): dropout masks
 * come out the same whichever thread draws them. */
static double hash_uniform(uint64_t seed, uint64_t step, uint64_t index)
{
    uint64_t state = seed ^ (step * 0xD1B54A32D192ED03ull) ^ (index * 0x8CB92BA72F3D8DD7ull);
    return (double)(splitmix64(&state) >> 11) * (1.0 / 9007199254740992.0);
}

void network_shuffle(int64_t *order, ptrdiff_t n, uint64_t seed)
{
    uint64_t state = seed;
    for (ptrdiff_t i = 0; i < n; i++) order[i] = i;
    for (ptrdiff_t i = n - 1; i > 0; i--) {
        /* Lemire's multiply-shift: an unbiased-enough index in [0, i] for i < 2^32. */
        uint64_t r = splitmix64(&state);
        ptrdiff_t j = (ptrdiff_t)(((r >> 32) * (uint64_t)(i + 1)) >> 32);
        int64_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* Which per-layer buffers a layer needs of its own (the others alias a neighbour). A
 * dense or conv layer keeps z apart from a only when backward needs z: not for linear
 * (a is z), nor for relu, whose derivative reads only the sign of z, and relu(z) > 0
 * exactly when z > 0 (NaN included), so a serves as z: one buffer less to store. */
static int has_kernel(const nn_layer *L) { return L->kind == LAYER_DENSE || L->kind == LAYER_CONV1D; }
static int needs_zbuf(const nn_layer *L) { return has_kernel(L) || L->kind == LAYER_DROPOUT; }
static int needs_abuf(const nn_layer *L)
{
    return !has_kernel(L) || (L->act != ACT_LINEAR && L->act != ACT_RELU);
}

/* Scratch elements per sample (real-sized; argmax int32 fits in one). */
static size_t scratch_per_sample(const nn_layer *L)
{
    if (L->kind == LAYER_CONV1D) return (size_t)L->steps_out * L->kernel * L->channels_in;
    if (L->kind == LAYER_MAXPOOL1D) return (size_t)L->out_dim;
    return 0;
}

#define ALIGN_BYTES 64
static size_t aligned_size(size_t bytes) { return (bytes + ALIGN_BYTES - 1) / ALIGN_BYTES * ALIGN_BYTES; }

nn_workspace *network_workspace_new(const nn_model *m, int batch, int y_width)
{
    size_t elem = m->is_double ? sizeof(double) : sizeof(float);
    int nl = m->n_layers;
    if (batch < 1 || nl < 1) return NULL;
    nn_workspace *ws = calloc(1, sizeof(nn_workspace));
    if (!ws) return NULL;
    ws->batch = batch;
    ws->n_layers = nl;
    ws->zbuf = calloc((size_t)nl, sizeof(void *));
    ws->abuf = calloc((size_t)nl, sizeof(void *));
    ws->dbuf = calloc((size_t)nl, sizeof(void *));
    ws->z = calloc((size_t)nl, sizeof(void *));
    ws->a = calloc((size_t)nl, sizeof(void *));
    ws->sbuf = calloc((size_t)nl, sizeof(void *));
    if (!ws->zbuf || !ws->abuf || !ws->dbuf || !ws->z || !ws->a || !ws->sbuf) {
        network_workspace_free(ws);
        return NULL;
    }
    /* One block, carved into cache-line aligned buffers. */
    size_t total = aligned_size((size_t)batch * m->layers[0].in_dim * elem) +
                   aligned_size((size_t)batch * y_width * elem) +
                   aligned_size((size_t)batch * elem);
    for (int i = 0; i < nl; i++) {
        size_t layer_bytes = aligned_size((size_t)batch * m->layers[i].out_dim * elem);
        total += layer_bytes * (size_t)(1 + needs_zbuf(&m->layers[i]) + needs_abuf(&m->layers[i]));
        total += aligned_size((size_t)batch * scratch_per_sample(&m->layers[i]) * elem);
    }
    ws->block = malloc(total + ALIGN_BYTES);
    if (!ws->block) {
        network_workspace_free(ws);
        return NULL;
    }
    char *p = (char *)(((uintptr_t)ws->block + ALIGN_BYTES - 1) / ALIGN_BYTES * ALIGN_BYTES);
    memset(p, 0, total);
    ws->xb = p;
    p += aligned_size((size_t)batch * m->layers[0].in_dim * elem);
    ws->yb = p;
    p += aligned_size((size_t)batch * y_width * elem);
    ws->wb = p;
    p += aligned_size((size_t)batch * elem);
    for (int i = 0; i < nl; i++) {
        size_t layer_bytes = aligned_size((size_t)batch * m->layers[i].out_dim * elem);
        ws->dbuf[i] = p;
        p += layer_bytes;
        if (needs_zbuf(&m->layers[i])) {
            ws->zbuf[i] = p;
            p += layer_bytes;
        }
        if (needs_abuf(&m->layers[i])) {
            ws->abuf[i] = p;
            p += layer_bytes;
        }
        size_t scratch = (size_t)batch * scratch_per_sample(&m->layers[i]) * elem;
        if (scratch) {
            ws->sbuf[i] = p;
            p += aligned_size(scratch);
        }
    }
    return ws;
}

void network_workspace_free(nn_workspace *ws)
{
    if (!ws) return;
    free(ws->block);
    free(ws->zbuf);
    free(ws->abuf);
    free(ws->dbuf);
    free(ws->z);
    free(ws->a);
    free(ws->sbuf);
    free(ws);
}

#define FASTNN_DOUBLE 0
#include "real_begin.h"
#include "network.c"
#include "real_end.h"
#define FASTNN_DOUBLE 1
#include "real_begin.h"
#include "network.c"
#include "real_end.h"
#undef FASTNN_TEMPLATE
#else

/* Elements of a layer's kernel (its w). */
static ptrdiff_t FN(kernel_size)(const nn_layer *L)
{
    if (L->kind == LAYER_CONV1D) return (ptrdiff_t)L->kernel * L->channels_in * (L->out_dim / L->steps_out);
    return (ptrdiff_t)L->in_dim * L->out_dim;
}

/* Forward through every layer on B rows starting at x; sets ws->z, ws->a. Training mode
 * draws dropout masks from (seed, step). */
static void FN(forward)(const nn_model *m, nn_workspace *ws, const real *x, int B,
                        int training, uint64_t seed, uint64_t step, int nthreads)
{
    const real *in = x;
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *L = &m->layers[i];
        real *z = ws->zbuf[i], *a = ws->abuf[i];
        ptrdiff_t count = (ptrdiff_t)B * L->out_dim;
        switch (L->kind) {
        case LAYER_DENSE:
            if (!a) a = z;
            FN(dense_forward)(z, a, in, L->w, L->b, B, L->in_dim, L->out_dim, L->act,
                              (real)L->slope, (gemm_fn)m->gemm, nthreads);
            break;
        case LAYER_CONV1D:
            if (!a) a = z;
            FN(conv1d_forward)(z, a, ws->sbuf[i], in, L->w, L->b, B, L->steps_in,
                               L->channels_in, L->steps_out, L->out_dim / L->steps_out,
                               L->kernel, L->stride, L->pad_left, L->act, (real)L->slope,
                               (gemm_fn)m->gemm, nthreads);
            break;
        case LAYER_MAXPOOL1D:
            z = NULL;
            FN(maxpool1d_forward)(a, ws->sbuf[i], in, B, L->steps_in, L->channels_in,
                                  L->steps_out, L->kernel, L->stride, L->pad_left, nthreads);
            break;
        case LAYER_GLOBAL_AVGPOOL1D:
            z = NULL;
            FN(global_avgpool1d_forward)(a, in, B, L->steps_in, L->channels_in, nthreads);
            break;
        case LAYER_ACTIVATION:
            z = (real *)in;
            FN(activation_forward)(a, z, B * L->steps_in, L->channels_in, L->act,
                                   (real)L->slope, nthreads);
            break;
        default: /* LAYER_DROPOUT */
            if (!training || L->rate <= 0) {
                z = NULL;
                a = (real *)in;
                break;
            }
            {
                real keep_scale = (real)(1.0 / (1.0 - L->rate));
                uint64_t layer_seed = seed + 0x632BE59BD9B4E019ull * (uint64_t)(i + 1);
                for (ptrdiff_t k = 0; k < count; k++) {
                    z[k] = hash_uniform(layer_seed, step, (uint64_t)k) >= L->rate ? keep_scale
                                                                                  : (real)0;
                    a[k] = in[k] * z[k];
                }
            }
            break;
        }
        ws->z[i] = z;
        ws->a[i] = a;
        in = a;
    }
}

/* The loss of the forward pass just run, on B rows of targets y with their sample
 * weights (NULL: unweighted) that weigh batch_weight in all (B when unweighted); writes
 * dL/d(output) (or dL/dz of the last layer when fused) into the last layer's d buffer if
 * grad. */
static double FN(output_loss)(const nn_model *m, nn_workspace *ws, const real *y,
                              const real *weights, double batch_weight, int B, int grad,
                              int nthreads)
{
    int last = m->n_layers - 1;
    int K = m->layers[last].out_dim;
    const real *pred = m->fused ? ws->z[last] : ws->a[last];
    real *g = grad ? (real *)ws->dbuf[last] : NULL;
    double value = FN(loss)(m->loss, g, pred, y, weights, B, K, m->fused ? 1 : m->from_logits,
                            nthreads);
    if (m->loss_scale != 1.0) {
        value *= m->loss_scale;
        if (g) {
            real scale = (real)m->loss_scale;
            for (ptrdiff_t i = 0; i < (ptrdiff_t)B * K; i++) g[i] *= scale;
        }
    }
    /* scikit-learn's L2 term: 0.5 l2 ||w||^2 / batch_weight per kernel (its _backprop
     * divides by sample_weight.sum(), which is B without weights) */
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *L = &m->layers[i];
        if (L->l2_per_batch <= 0 || !L->w) continue;
        const real *w = L->w;
        ptrdiff_t count = FN(kernel_size)(L);
        double sq = 0;
        for (ptrdiff_t k = 0; k < count; k++) sq += (double)w[k] * w[k];
        value += 0.5 * L->l2_per_batch * sq / batch_weight;
    }
    return value;
}

/* Adds the batch's metric sums; weighted, each is its weighted mean times B, on the
 * footing of the loss (which training adds times B), so that the two can be combined. */
static void FN(add_metrics)(const nn_model *m, nn_workspace *ws, const real *y,
                            const real *weights, double batch_weight, int B,
                            double *metric_sums)
{
    int last = m->n_layers - 1;
    int K = m->layers[last].out_dim;
    for (int k = 0; k < m->n_metrics; k++) {
        double sum = FN(metric_sum)(m->metrics[k], ws->a[last], y, weights, B, K,
                                    m->from_logits);
        metric_sums[k] += weights ? sum * (B / batch_weight) : sum;
    }
}

/* Backward from the last layer's d buffer (filled by output_loss) into the gradient
 * buffer; batch_weight as for output_loss. Layers before the first one with parameters
 * need no backward pass. */
static void FN(backward)(const nn_model *m, nn_workspace *ws, const real *x, int B,
                         double batch_weight, int nthreads)
{
    int first_param = m->n_layers;
    for (int i = 0; i < m->n_layers; i++) {
        if (has_kernel(&m->layers[i])) {
            first_param = i;
            break;
        }
    }
    for (int i = m->n_layers - 1; i >= first_param; i--) {
        const nn_layer *L = &m->layers[i];
        real *d = ws->dbuf[i];
        real *d_in = (i > first_param) ? (real *)ws->dbuf[i - 1] : NULL;
        const real *in = (i > 0) ? (const real *)ws->a[i - 1] : x;
        int act = (m->fused && i == m->n_layers - 1) ? ACT_LINEAR : L->act;
        ptrdiff_t count = (ptrdiff_t)B * L->out_dim;
        switch (L->kind) {
        case LAYER_DENSE:
            FN(dense_backward)(d_in, L->dw, L->db, d, ws->z[i], ws->a[i], in, L->w, B,
                               L->in_dim, L->out_dim, act, (real)L->slope, (gemm_fn)m->gemm,
                               nthreads);
            break;
        case LAYER_CONV1D:
            FN(conv1d_backward)(d_in, L->dw, L->db, d, ws->sbuf[i], ws->sbuf[i], ws->z[i],
                                ws->a[i], L->w, B, L->steps_in, L->channels_in, L->steps_out,
                                L->out_dim / L->steps_out, L->kernel, L->stride, L->pad_left,
                                act, (real)L->slope, (gemm_fn)m->gemm, nthreads);
            break;
        case LAYER_MAXPOOL1D:
            FN(maxpool1d_backward)(d_in, d, ws->sbuf[i], B, L->steps_in, L->channels_in,
                                   L->steps_out, nthreads);
            break;
        case LAYER_GLOBAL_AVGPOOL1D:
            FN(global_avgpool1d_backward)(d_in, d, B, L->steps_in, L->channels_in, nthreads);
            break;
        case LAYER_ACTIVATION:
            FN(activation_backward)(d_in, d, ws->z[i], ws->a[i], B * L->steps_in,
                                    L->channels_in, act, (real)L->slope, nthreads);
            break;
        default: { /* LAYER_DROPOUT: a = in * mask */
            const real *mask = ws->z[i];
            for (ptrdiff_t k = 0; k < count; k++) d_in[k] = mask ? d[k] * mask[k] : d[k];
            break;
        }
        }
        if (L->l2_per_batch > 0 && L->w) {
            /* + 0.5 l2 ||w||^2 / batch_weight  =>  dw += l2 w / batch_weight */
            real c = (real)(L->l2_per_batch / batch_weight);
            real *dw = L->dw;
            const real *w = L->w;
            ptrdiff_t n = FN(kernel_size)(L);
            for (ptrdiff_t k = 0; k < n; k++) dw[k] += c * w[k];
        }
    }
}

static void FN(optimizer_step)(nn_optimizer *opt, int nthreads)
{
    real *w = opt->params;
    const real *g = opt->grads;
    opt->iterations += 1;
    switch (opt->kind) {
    case OPT_ADAM: {
        double lr_t = adam_corrected_rate(opt->learning_rate, opt->beta1, opt->beta2,
                                          opt->iterations);
        FN(adam_update)(w, g, opt->slot1, opt->slot2, opt->n_params, (real)lr_t,
                        (real)opt->beta1, (real)opt->beta2, (real)opt->epsilon, nthreads);
        break;
    }
    case OPT_RMSPROP:
        FN(rmsprop_update)(w, g, opt->slot1, opt->slot2, opt->n_params,
                           (real)opt->learning_rate, (real)opt->rho, (real)opt->momentum,
                           (real)opt->epsilon, nthreads);
        break;
    default: /* OPT_SGD */
        FN(sgd_update)(w, g, opt->slot1, opt->n_params, (real)opt->learning_rate,
                       (real)opt->momentum, opt->nesterov, nthreads);
        break;
    }
}

/* Asks the cache for the rows of x that the next step gathers. The rows are scattered
 * over x (shuffled), so the hardware prefetcher cannot guess them, and the gather would
 * otherwise wait on memory for each one; requested a step ahead, they arrive while this
 * step computes. */
static void FN(prefetch_rows)(const real *x, int in_dim, const int64_t *rows, ptrdiff_t count)
{
#if defined(__GNUC__) || defined(__clang__)
    const ptrdiff_t per_line = 64 / (ptrdiff_t)sizeof(real);
    for (ptrdiff_t r = 0; r < count; r++) {
        const real *row = x + rows[r] * in_dim;
        for (ptrdiff_t k = 0; k < in_dim; k += per_line) __builtin_prefetch(row + k, 0, 2);
    }
#else
    (void)x, (void)in_dim, (void)rows, (void)count;
#endif
}

void FN(network_train)(const nn_model *m, nn_optimizer *opt, nn_workspace *ws,
                       const real *x, const real *y, int y_width, const real *weights,
                       const int64_t *order, ptrdiff_t n, ptrdiff_t step_begin,
                       ptrdiff_t step_end, uint64_t dropout_seed, double *loss_sum,
                       double *metric_sums, int nthreads)
{
    unsigned int csr = fastnn_ftz_enter();
    int in_dim = m->layers[0].in_dim;
    real *xb = ws->xb, *yb = ws->yb;
    real *wb = weights ? (real *)ws->wb : NULL;
    for (ptrdiff_t step = step_begin; step < step_end; step++) {
        ptrdiff_t r0 = step * ws->batch;
        ptrdiff_t r1 = r0 + ws->batch < n ? r0 + ws->batch : n;
        int B = (int)(r1 - r0);
        if (B <= 0) break;
        for (int r = 0; r < B; r++) {
            int64_t src = order[r0 + r];
            memcpy(xb + (ptrdiff_t)r * in_dim, x + src * in_dim, sizeof(real) * (size_t)in_dim);
            memcpy(yb + (ptrdiff_t)r * y_width, y + src * y_width, sizeof(real) * (size_t)y_width);
            if (wb) wb[r] = weights[src];
        }
        double batch_weight = FN(batch_weight)(wb, B);
        if (batch_weight == 0 || isnan(batch_weight)) {
            /* no weighted mean to descend: a step would write NaN into every parameter */
            *loss_sum += NAN;
            continue;
        }
        FN(prefetch_rows)(x, in_dim, order + r1, (r1 + ws->batch < n ? r1 + ws->batch : n) - r1);
        FN(forward)(m, ws, xb, B, 1, dropout_seed, (uint64_t)step, nthreads);
        *loss_sum += FN(output_loss)(m, ws, yb, wb, batch_weight, B, 1, nthreads) * B;
        FN(add_metrics)(m, ws, yb, wb, batch_weight, B, metric_sums);
        FN(backward)(m, ws, xb, B, batch_weight, nthreads);
        FN(optimizer_step)(opt, nthreads);
    }
    fastnn_ftz_leave(csr);
}

FASTNN_VECTORIZED
int FN(all_finite)(const real *x, ptrdiff_t n)
{
    /* A value is NaN or inf exactly when its exponent bits are all ones; an integer OR
     * over that test vectorizes (a floating-point sum would not, without reassociation). */
#if FASTNN_DOUBLE
    const uint64_t exponent = 0x7ff0000000000000ull;
    uint64_t bits;
#else
    const uint32_t exponent = 0x7f800000u;
    uint32_t bits;
#endif
    int bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        memcpy(&bits, &x[i], sizeof bits);
        bad |= (bits & exponent) == exponent;
    }
    return !bad;
}

void FN(network_predict)(const nn_model *m, nn_workspace *ws, real *out, const real *x,
                         ptrdiff_t n, int nthreads)
{
    unsigned int csr = fastnn_ftz_enter();
    int in_dim = m->layers[0].in_dim, out_dim = m->layers[m->n_layers - 1].out_dim;
    for (ptrdiff_t r0 = 0; r0 < n; r0 += ws->batch) {
        int B = (int)(n - r0 < ws->batch ? n - r0 : ws->batch);
        FN(forward)(m, ws, x + r0 * in_dim, B, 0, 0, 0, nthreads);
        memcpy(out + r0 * out_dim, ws->a[m->n_layers - 1],
               sizeof(real) * (size_t)B * (size_t)out_dim);
    }
    fastnn_ftz_leave(csr);
}

void FN(network_evaluate)(const nn_model *m, nn_workspace *ws, const real *x, const real *y,
                          int y_width, ptrdiff_t n, double *loss_sum, double *metric_sums,
                          int nthreads)
{
    unsigned int csr = fastnn_ftz_enter();
    int in_dim = m->layers[0].in_dim;
    for (ptrdiff_t r0 = 0; r0 < n; r0 += ws->batch) {
        int B = (int)(n - r0 < ws->batch ? n - r0 : ws->batch);
        const real *yr = y + r0 * y_width;
        FN(forward)(m, ws, x + r0 * in_dim, B, 0, 0, 0, nthreads);
        *loss_sum += FN(output_loss)(m, ws, yr, NULL, B, B, 0, nthreads) * B;
        FN(add_metrics)(m, ws, yr, NULL, B, B, metric_sums);
    }
    fastnn_ftz_leave(csr);
}

double FN(network_loss_grad)(const nn_model *m, nn_workspace *ws, const real *x,
                             const real *y, int y_width, const real *weights, int rows,
                             int nthreads)
{
    (void)y_width;
    unsigned int csr = fastnn_ftz_enter();
    int B = rows < ws->batch ? rows : ws->batch;
    double batch_weight = FN(batch_weight)(weights, B);
    FN(forward)(m, ws, x, B, 0, 0, 0, nthreads);
    double loss = FN(output_loss)(m, ws, y, weights, batch_weight, B, 1, nthreads);
    FN(backward)(m, ws, x, B, batch_weight, nthreads);
    fastnn_ftz_leave(csr);
    return loss;
}

#endif /* FASTNN_TEMPLATE */
