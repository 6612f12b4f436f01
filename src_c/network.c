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
#include "gemm.h"
#include "threads.h"

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

/* A uniform index in [0, max], drawn as numpy's legacy random_interval draws it: the
 * generator's next 32 bits (64 above 2^32 - 1) under the smallest all-ones mask that
 * covers max, until one is at most max. */
static uint64_t numpy_interval(const nn_bitgen *gen, uint64_t max)
{
    if (max == 0) return 0;
    uint64_t mask = max, value;
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    mask |= mask >> 16;
    mask |= mask >> 32;
    if (max <= 0xffffffffull) {
        while ((value = (gen->next_uint32(gen->state) & mask)) > max) {
        }
    } else {
        while ((value = (gen->next_uint64(gen->state) & mask)) > max) {
        }
    }
    return value;
}

void network_shuffle_numpy(int64_t *order, ptrdiff_t n, const nn_bitgen *gen)
{
    for (ptrdiff_t i = n - 1; i > 0; i--) {
        ptrdiff_t j = (ptrdiff_t)numpy_interval(gen, (uint64_t)i);
        int64_t t = order[j];
        order[j] = order[i];
        order[i] = t;
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

/* Whether training skips the last layer's activation in the forward pass: a dense layer
 * whose sigmoid or softmax the loss folds in (model->fused) computes it from z again, so
 * a[last] is only filled afterwards, when metrics read it (fused_output_activation). */
static int skips_output_activation(const nn_model *m, int i, int training)
{
    return training && m->fused && i == m->n_layers - 1 && m->layers[i].kind == LAYER_DENSE;
}

/* Whether one-part training applies Adam to the first layer's kernel inside its weight
 * gradient's product (first_layer_backward_update): a dense first layer (which passes no
 * gradient back) under Adam, with no L2 term to add to the gradient after the product.
 * That update otherwise reads the kernel, its gradient and both moments back from
 * memory: the MNIST-shaped MLP's 200k first-layer parameters are 3 MB, which the caches
 * do not keep between steps (its whole Adam measured 175-190 us a step, against 44 us
 * on data in cache). */
/* Whether a batch of this weight takes no step: it has no weighted mean to descend (a
 * step would write NaN into every parameter). Every thread decides alike. */
static int takes_no_step(double batch_weight)
{
    return batch_weight == 0 || isnan(batch_weight);
}

static int fuses_first_update(const nn_model *m, const nn_optimizer *opt)
{
    const nn_layer *L = &m->layers[0];
    return opt->kind == OPT_ADAM && m->n_layers >= 2 && L->kind == LAYER_DENSE &&
           L->l2_per_batch <= 0;
}

/* A barrier of a training region that adds the seconds the calling thread waited at it
 * to *waited (for nn_workspace.wait_fraction). */
static void timed_barrier(double *waited)
{
#ifdef _OPENMP
    double start = omp_get_wtime();
    #pragma omp barrier
    *waited += omp_get_wtime() - start;
#else
    (void)waited;
#endif
}

/* Now, in seconds, for the share of a region's time spent at barriers. */
static double region_clock(void)
{
#ifdef _OPENMP
    return omp_get_wtime();
#else
    return 0;
#endif
}

/* The share of a region's time since `began` that a thread spent at barriers (0 on one
 * thread, which never waits). */
static double waited_share(double began, double waited, int threads)
{
    double span = region_clock() - began;
    return threads > 1 && span > 0 ? waited / span : 0;
}

/* The buffers of each range of a split first layer's units, in ws->unit_bufs. */
enum { UNIT_Z, UNIT_A, UNIT_D, UNIT_BUFS };

#define ALIGN_BYTES 64
static size_t aligned_size(size_t bytes) { return (bytes + ALIGN_BYTES - 1) / ALIGN_BYTES * ALIGN_BYTES; }

/* The multiply-adds of a training step (forward, dW and dX of every kernel), times 2. */
static double step_flops(const nn_model *m, int B)
{
    double flops = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *L = &m->layers[i];
        if (L->kind == LAYER_DENSE)
            flops += 6.0 * B * L->in_dim * L->out_dim;
        else if (L->kind == LAYER_CONV1D)
            flops += 6.0 * B * L->out_dim * L->kernel * L->channels_in;
    }
    return flops;
}

#define PART_MIN_ROWS 32
/* Parts give each thread a copy of the parameters and optimizer state and a gradient
 * buffer per part and step parity (8 buffers as large as the parameters, with 2 parts),
 * and every thread updates all parameters: above this many, a model's products are large
 * enough to split well by themselves (measured: 5.8M parameters trained slower in parts). */
#define PART_MAX_PARAMS 262144

int network_parts(const nn_model *m, int B)
{
    double flops = step_flops(m, B);
    if (B < 2 * PART_MIN_ROWS || flops < 2e6 || flops < 1000.0 * (double)m->n_params ||
        m->n_params > PART_MAX_PARAMS)
        return 1;
    return m->max_parts < 2 ? 1 : 2;
}

/* Below this many multiply-adds (times 2) in the first layer's forward and weight
 * gradient, its halves are too short for two barriers a step to pay. */
#define SPLIT_MIN_FLOPS 5e5

/* Whether units [0, n) of a first layer of C inputs (stored transposed), on batches of
 * at most B rows, are computed by the same kernels whatever the other units: the forward
 * product by the dot-product form, the weight gradient's by fastnn's kernel (on a
 * shorter last batch too: smaller products keep it). Each output of either is then
 * computed from its own operands alone, so a range of units gets the bits it gets within
 * the whole layer. */
static int units_keep_kernels(int n, int C, int B)
{
    return gemm_dot_pays(n, C) && gemm_by_kernel_f32(1, 0, n, C, B);
}

int network_split_units(const nn_model *m, int B)
{
#ifndef _OPENMP
    (void)m, (void)B;
    return 0; /* one thread: nothing to split */
#else
    if (m->n_layers < 2 || m->max_parts < 2 || m->is_double || network_parts(m, B) > 1 ||
        !gemm_small_available())
        return 0;
    const nn_layer *L = &m->layers[0];
    /* softmax normalizes over all the units: it cannot run on a range of them */
    if (L->kind != LAYER_DENSE || !L->w_trans || L->act == ACT_SOFTMAX) return 0;
    int C = L->in_dim, OC = L->out_dim;
    double first = 4.0 * B * C * OC; /* forward and weight gradient: no dx */
    double rest = step_flops(m, B) - 6.0 * B * C * OC;
    if (first < SPLIT_MIN_FLOPS || rest > first / 3 || !units_keep_kernels(OC, C, B))
        return 0;
    /* The split nearest to half the units (the smaller share to thread 0 on a tie), in
     * whole tiles of 4 units of the dot-product kernel, where both ranges keep the whole
     * layer's kernels. Thread 0 also runs the other layers, but thread 1 waits for them
     * anyway; measured on the course's network (25 units, batch 32): 12 units to thread 0
     * gave 14 us a step, 8 units 16-20 us, 4 units 18-20 us (one thread: 20.5 us). */
    int best = 0;
    for (int s = 4; s <= OC - 4; s += 4) {
        if (!units_keep_kernels(s, C, B) || !units_keep_kernels(OC - s, C, B)) continue;
        if (best == 0 || abs(OC - 2 * s) < abs(OC - 2 * best)) best = s;
    }
    return best;
#endif
}

/* Wakes the OpenMP team (threads.h) before a call outside the parts and split-units
 * regions (which wake it themselves) whose passes over `rows` rows may fork threads: a
 * product large enough for the GEMM to cut into panels (gemm.c: 1e6 multiply-adds times
 * 2 at least); not before the small calls that run on the caller alone (one sample's
 * predict). */
static void wake_team_for(const nn_model *m, const nn_workspace *ws, ptrdiff_t rows,
                          int nthreads)
{
    int B = rows < ws->batch ? (int)rows : ws->batch;
    if (nthreads >= 2 && step_flops(m, B) >= 3e6) fastnn_wake_team(nthreads);
}

nn_workspace *network_workspace_new(const nn_model *m, int batch, int y_width, int training)
{
    size_t elem = m->is_double ? sizeof(double) : sizeof(float);
    int nl = m->n_layers;
    if (batch < 1 || nl < 1) return NULL;
    nn_workspace *ws = calloc(1, sizeof(nn_workspace));
    if (!ws) return NULL;
    ws->batch = batch;
    ws->n_layers = nl;
    ws->parts = training ? network_parts(m, batch) : 1;
    ws->split_units = training ? network_split_units(m, batch) : 0;
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
    /* the split first layer's: thread 1's batch rows (two: it gathers the next step's
     * while the current one's are in use) and each thread's z, a and d of its units */
    size_t unit_x_bytes = aligned_size((size_t)batch * m->layers[0].in_dim * elem);
    size_t unit_bytes = aligned_size((size_t)batch * m->layers[0].out_dim * elem);
    if (ws->split_units) total += 2 * unit_x_bytes + 2 * UNIT_BUFS * unit_bytes;
    size_t part_grad_bytes = aligned_size((size_t)m->n_params * elem);
    size_t replica_layer_bytes = aligned_size(sizeof(nn_layer) * (size_t)nl);
    if (ws->parts > 1) {
        total += part_grad_bytes * 2 * (size_t)ws->parts;
        total += (part_grad_bytes * 4 + replica_layer_bytes) * (size_t)(ws->parts - 1);
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
    if (ws->split_units) {
        for (int k = 0; k < 2; k++) {
            ws->unit_x[k] = p;
            p += unit_x_bytes;
        }
        for (int k = 0; k < 2 * UNIT_BUFS; k++) {
            ws->unit_bufs[k] = p;
            p += unit_bytes;
        }
    }
    if (ws->parts > 1) {
        ws->part_grads = p;
        p += part_grad_bytes * 2 * (size_t)ws->parts;
        ws->replicas = p;
        p += part_grad_bytes * 4 * (size_t)(ws->parts - 1);
        ws->replica_layers = (nn_layer *)p;
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

/* The whole batch's z and a buffers of layer i (their first rows), given a[i-1]'s (or
 * the input's, for the first layer): what forward leaves in ws->z[i] and ws->a[i]. */
static void FN(layer_buffers)(const nn_model *m, const nn_workspace *ws, int i,
                              const real *in_base, int training, real **z_out, real **a_out)
{
    const nn_layer *L = &m->layers[i];
    real *z_base = ws->zbuf[i], *a_base = ws->abuf[i];
    switch (L->kind) {
    case LAYER_DENSE:
    case LAYER_CONV1D:
        if (!a_base) a_base = z_base;
        break;
    case LAYER_MAXPOOL1D:
    case LAYER_GLOBAL_AVGPOOL1D:
        z_base = NULL;
        break;
    case LAYER_ACTIVATION:
        z_base = (real *)in_base;
        break;
    default: /* LAYER_DROPOUT */
        if (!training || L->rate <= 0) {
            z_base = NULL;
            a_base = (real *)in_base;
        }
        break;
    }
    *z_out = z_base;
    *a_out = a_base;
}

/* Sets ws->z and ws->a for a forward pass over a batch whose input rows start at x. */
static void FN(set_layer_buffers)(const nn_model *m, nn_workspace *ws, const real *x,
                                  int training)
{
    const real *in_base = x;
    for (int i = 0; i < m->n_layers; i++) {
        real *z_base, *a_base;
        FN(layer_buffers)(m, ws, i, in_base, training, &z_base, &a_base);
        ws->z[i] = z_base;
        ws->a[i] = a_base;
        in_base = a_base;
    }
}

/* Forward through layers [first, n_layers) for rows [r0, r0 + B) of the workspace's
 * batch, whose input rows (the batch's, or a[first - 1]'s) start at in, into the
 * buffers ws->z and ws->a point to (set_layer_buffers). Training mode draws dropout masks
 * from (seed, step), and leaves a fused output layer's a unset (skips_output_activation). */
static void FN(forward_layers)(const nn_model *m, nn_workspace *ws, int first, const real *in,
                               int r0, int B, int training, uint64_t seed, uint64_t step,
                               int nthreads)
{
    for (int i = first; i < m->n_layers; i++) {
        const nn_layer *L = &m->layers[i];
        ptrdiff_t row0 = (ptrdiff_t)r0 * L->out_dim, count = (ptrdiff_t)B * L->out_dim;
        real *z_base = ws->z[i], *a_base = ws->a[i];
        real *z = z_base ? z_base + row0 : NULL, *a = a_base + row0;
        switch (L->kind) {
        case LAYER_DENSE:
            if (skips_output_activation(m, i, training))
                FN(dense_forward)(z, z, in, L->w, L->w_trans, L->b, B, L->in_dim, L->out_dim,
                                  ACT_LINEAR, 0, (gemm_fn)m->gemm, nthreads);
            else
                FN(dense_forward)(z, a, in, L->w, L->w_trans, L->b, B, L->in_dim, L->out_dim,
                                  L->act, (real)L->slope, (gemm_fn)m->gemm, nthreads);
            break;
        case LAYER_CONV1D:
            FN(conv1d_forward)(z, a, (real *)ws->sbuf[i] + (ptrdiff_t)r0 * scratch_per_sample(L),
                               in, L->w, L->b, B, L->steps_in, L->channels_in, L->steps_out,
                               L->out_dim / L->steps_out, L->kernel, L->stride, L->pad_left,
                               L->act, (real)L->slope, (gemm_fn)m->gemm, nthreads);
            break;
        case LAYER_MAXPOOL1D:
            FN(maxpool1d_forward)(a, (int32_t *)ws->sbuf[i] + row0, in, B, L->steps_in,
                                  L->channels_in, L->steps_out, L->kernel, L->stride,
                                  L->pad_left, nthreads);
            break;
        case LAYER_GLOBAL_AVGPOOL1D:
            FN(global_avgpool1d_forward)(a, in, B, L->steps_in, L->channels_in, nthreads);
            break;
        case LAYER_ACTIVATION:
            FN(activation_forward)(a, z, B * L->steps_in, L->channels_in, L->act,
                                   (real)L->slope, nthreads);
            break;
        default: /* LAYER_DROPOUT */
            if (!z) break; /* inference: a is the input */
            {
                real keep_scale = (real)(1.0 / (1.0 - L->rate));
                uint64_t layer_seed = seed + 0x632BE59BD9B4E019ull * (uint64_t)(i + 1);
                for (ptrdiff_t k = 0; k < count; k++) {
                    /* the mask of element k of the whole batch, whichever part runs it */
                    z[k] = hash_uniform(layer_seed, step, (uint64_t)(row0 + k)) >= L->rate
                               ? keep_scale
                               : (real)0;
                    a[k] = in[k] * z[k];
                }
            }
            break;
        }
        in = a;
    }
}

/* Forward through every layer for rows [r0, r0 + B) of the workspace's batch, whose
 * input rows start at x. Unless `parted`, first sets ws->z, ws->a to the whole batch's
 * buffers (their first rows), which this call fills for its rows; the parts of a step
 * run concurrently, so train_in_parts sets them once, before its threads start. */
static void FN(forward)(const nn_model *m, nn_workspace *ws, const real *x, int r0, int B,
                        int training, uint64_t seed, uint64_t step, int parted, int nthreads)
{
    if (!parted) FN(set_layer_buffers)(m, ws, x - (ptrdiff_t)r0 * m->layers[0].in_dim, training);
    FN(forward_layers)(m, ws, 0, x, r0, B, training, seed, step, nthreads);
}

/* The sum of the squares of w[0..n) in double, in 8 interleaved partial sums (added in
 * a fixed order at the end) so that the loop vectorizes. */
FASTNN_VECTORIZED
static double FN(sum_of_squares)(const real *w, ptrdiff_t n)
{
    double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    ptrdiff_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) part[j] += (double)w[k + j] * (double)w[k + j];
    for (; k < n; k++) part[k % 8] += (double)w[k] * (double)w[k];
    double total = 0;
    for (int j = 0; j < 8; j++) total += part[j];
    return total;
}

/* out[0..n) += c * w. */
FASTNN_VECTORIZED
static void FN(add_scaled)(real *out, const real *w, real c, ptrdiff_t n)
{
    for (ptrdiff_t q = 0; q < n; q++) out[q] += c * w[q];
}

/* The L2 term over elements [lo, hi) of layer L's kernel: scikit-learn's
 * 0.5 l2 ||w||^2 / batch_weight (its _backprop divides by sample_weight.sum(), which is
 * B without weights); 0 for a layer without the penalty. */
static double FN(l2_loss)(const nn_layer *L, ptrdiff_t lo, ptrdiff_t hi, double batch_weight)
{
    if (L->l2_per_batch <= 0 || !L->w || lo >= hi) return 0;
    return 0.5 * L->l2_per_batch * FN(sum_of_squares)((const real *)L->w + lo, hi - lo) /
           batch_weight;
}

/* dw (the gradient of layer L's kernel) += the L2 term's gradient, l2 w / batch_weight. */
static void FN(add_l2_gradient)(const nn_layer *L, real *dw, double batch_weight)
{
    if (L->l2_per_batch <= 0 || !L->w) return;
    FN(add_scaled)(dw, L->w, (real)(L->l2_per_batch / batch_weight), FN(kernel_size)(L));
}

/* The loss of rows [r0, r0 + B) of the forward pass just run, as their share of a batch
 * weighing batch_weight (losses.h: loss_share), on their targets y and sample weights
 * (NULL: unweighted); writes their rows of dL/d(output) (or dL/dz of the last layer when
 * fused) into the last layer's d buffer if grad. add_l2: add the L2 term of the
 * parameters (once per batch). */
static double FN(output_loss)(const nn_model *m, nn_workspace *ws, const real *y,
                              const real *weights, double batch_weight, int r0, int B,
                              int grad, int add_l2, int nthreads)
{
    int last = m->n_layers - 1;
    int K = m->layers[last].out_dim;
    ptrdiff_t row0 = (ptrdiff_t)r0 * K;
    const real *pred = (m->fused ? (const real *)ws->z[last] : (const real *)ws->a[last]) + row0;
    real *g = grad ? (real *)ws->dbuf[last] + row0 : NULL;
    int from_logits = m->fused ? 1 : m->from_logits;
    if (from_logits && m->clip_log_loss) from_logits |= LOSS_CLIP_PROBABILITIES;
    double value = FN(loss_share)(m->loss, g, pred, y, weights, B, K, from_logits,
                                  batch_weight, nthreads);
    if (m->loss_scale != 1.0) {
        value *= m->loss_scale;
        if (g) {
            real scale = (real)m->loss_scale;
            for (ptrdiff_t i = 0; i < (ptrdiff_t)B * K; i++) g[i] *= scale;
        }
    }
    if (add_l2)
        for (int i = 0; i < m->n_layers; i++)
            value += FN(l2_loss)(&m->layers[i], 0, FN(kernel_size)(&m->layers[i]), batch_weight);
    return value;
}

/* Adds the metric sums of rows [r0, r0 + B) of a batch of batch_rows rows; weighted,
 * each is its weighted mean times batch_rows, on the footing of the loss (which training
 * adds times the batch's rows), so that the two can be combined. training: the forward
 * pass was a training one, which may have left the output activation to this call
 * (skips_output_activation). */
static void FN(add_metrics)(const nn_model *m, nn_workspace *ws, const real *y,
                            const real *weights, double batch_weight, int r0, int B,
                            int batch_rows, int training, double *metric_sums)
{
    int last = m->n_layers - 1;
    const nn_layer *L = &m->layers[last];
    int K = L->out_dim;
    if (m->n_metrics == 0) return;
    if (skips_output_activation(m, last, training))
        FN(activation_forward_rows)(ws->a[last], ws->z[last], r0, r0 + B, K, L->act,
                                    (real)L->slope);
    const real *pred = (const real *)ws->a[last] + (ptrdiff_t)r0 * K;
    for (int k = 0; k < m->n_metrics; k++) {
        double sum = FN(metric_sum)(m->metrics[k], pred, y, weights, B, K, m->from_logits);
        metric_sums[k] += weights ? sum * (batch_rows / batch_weight) : sum;
    }
}

/* Backward through layers [first, n_layers) for rows [r0, r0 + B) of the batch (input
 * rows at x) from the last layer's d buffer (filled by output_loss) into the model's
 * gradient buffer, or, when grads is not NULL, into the buffer grads laid out as the
 * model's own (model_grads, which the layers' dw and db point into); batch_weight as for
 * output_loss; add_l2: add the L2 term's gradient (once per batch). Layers before the
 * first one with parameters need no backward pass; every layer after it passes dL/da of
 * its input to the layer before (for layer first > 0: into d[first - 1]). */
static void FN(backward_layers)(const nn_model *m, nn_workspace *ws, int first, const real *x,
                                int r0, int B, double batch_weight, real *grads,
                                const real *model_grads, int add_l2, int nthreads)
{
    int first_param = m->n_layers;
    for (int i = 0; i < m->n_layers; i++) {
        if (has_kernel(&m->layers[i])) {
            first_param = i;
            break;
        }
    }
    int stop = first > first_param ? first : first_param;
    for (int i = m->n_layers - 1; i >= stop; i--) {
        const nn_layer *L = &m->layers[i];
        ptrdiff_t row0 = (ptrdiff_t)r0 * L->out_dim, row0_in = (ptrdiff_t)r0 * L->in_dim;
        real *d = (real *)ws->dbuf[i] + row0;
        real *d_in = (i > first_param) ? (real *)ws->dbuf[i - 1] + row0_in : NULL;
        const real *in = (i > 0) ? (const real *)ws->a[i - 1] + row0_in : x;
        real *z = ws->z[i] ? (real *)ws->z[i] + row0 : NULL;
        real *a = (real *)ws->a[i] + row0;
        real *dw = L->dw, *db = L->db;
        if (grads && dw) dw = grads + ((const real *)L->dw - model_grads);
        if (grads && db) db = grads + ((const real *)L->db - model_grads);
        int act = (m->fused && i == m->n_layers - 1) ? ACT_LINEAR : L->act;
        ptrdiff_t count = (ptrdiff_t)B * L->out_dim;
        switch (L->kind) {
        case LAYER_DENSE:
            FN(dense_backward)(d_in, dw, db, d, z, a, in, L->w, L->w_trans, B, L->in_dim,
                               L->out_dim, act, (real)L->slope, (gemm_fn)m->gemm, nthreads);
            break;
        case LAYER_CONV1D: {
            real *cols = (real *)ws->sbuf[i] + (ptrdiff_t)r0 * scratch_per_sample(L);
            FN(conv1d_backward)(d_in, dw, db, d, cols, cols, z, a, L->w, B, L->steps_in,
                                L->channels_in, L->steps_out, L->out_dim / L->steps_out,
                                L->kernel, L->stride, L->pad_left, act, (real)L->slope,
                                (gemm_fn)m->gemm, nthreads);
            break;
        }
        case LAYER_MAXPOOL1D:
            FN(maxpool1d_backward)(d_in, d, (const int32_t *)ws->sbuf[i] + row0, B,
                                   L->steps_in, L->channels_in, L->steps_out, nthreads);
            break;
        case LAYER_GLOBAL_AVGPOOL1D:
            FN(global_avgpool1d_backward)(d_in, d, B, L->steps_in, L->channels_in, nthreads);
            break;
        case LAYER_ACTIVATION:
            FN(activation_backward)(d_in, d, z, a, B * L->steps_in, L->channels_in, act,
                                    (real)L->slope, nthreads);
            break;
        default: /* LAYER_DROPOUT: a = in * mask */
            for (ptrdiff_t k = 0; k < count; k++) d_in[k] = z ? d[k] * z[k] : d[k];
            break;
        }
        if (add_l2) FN(add_l2_gradient)(L, dw, batch_weight);
    }
}

/* Backward through every layer (backward_layers from the first). */
static void FN(backward)(const nn_model *m, nn_workspace *ws, const real *x, int r0, int B,
                         double batch_weight, real *grads, const real *model_grads,
                         int add_l2, int nthreads)
{
    FN(backward_layers)(m, ws, 0, x, r0, B, batch_weight, grads, model_grads, add_l2,
                        nthreads);
}

/* The update of parameters [p0, p1) by the optimizer's rule, as step number t. */
static void FN(optimizer_update)(const nn_optimizer *opt, long long t, ptrdiff_t p0,
                                 ptrdiff_t p1, int nthreads)
{
    real *w = (real *)opt->params + p0;
    const real *g = (const real *)opt->grads + p0;
    real *s1 = (real *)opt->slot1 + p0, *s2 = (real *)opt->slot2 + p0;
    ptrdiff_t n = p1 - p0;
    if (n <= 0) return;
    switch (opt->kind) {
    case OPT_ADAM: {
        double lr_t = adam_corrected_rate(opt->learning_rate, opt->beta1, opt->beta2, t);
        FN(adam_update)(w, g, s1, s2, n, (real)lr_t, (real)opt->beta1, (real)opt->beta2,
                        (real)opt->epsilon, nthreads);
        break;
    }
    case OPT_RMSPROP:
        FN(rmsprop_update)(w, g, s1, s2, n, (real)opt->learning_rate, (real)opt->rho,
                           (real)opt->momentum, (real)opt->epsilon, nthreads);
        break;
    default: /* OPT_SGD */
        FN(sgd_update)(w, g, s1, n, (real)opt->learning_rate, (real)opt->momentum,
                       opt->nesterov, nthreads);
        break;
    }
}

static void FN(optimizer_step)(nn_optimizer *opt, int nthreads)
{
    opt->iterations += 1;
    FN(optimizer_update)(opt, opt->iterations, 0, opt->n_params, nthreads);
}

/* For fuses_first_update: the first layer's backward from dL/da in d[0] (the other
 * layers' backward done) and the step's Adam update, the first layer's kernel updated in
 * the weight-gradient product as it comes out (gemm_adam: the same bits as the product
 * and then the update), the other parameters after it; or, where the kernel does not take
 * that product, the layer's backward and then the whole update. The product reads x and
 * dL/dz only, never the kernel it updates. */
static void FN(first_layer_backward_update)(const nn_model *m, nn_optimizer *opt,
                                            nn_workspace *ws, const real *x, int B,
                                            int nthreads)
{
    const nn_layer *L = &m->layers[0];
    int C = L->in_dim, OC = L->out_dim;
    real *d = ws->dbuf[0], *dw = L->dw, *db = L->db;
    real *params = opt->params, *s1 = opt->slot1, *s2 = opt->slot2;
    ptrdiff_t w0 = (const real *)L->w - params, w1 = w0 + (ptrdiff_t)C * OC;
    long long t = ++opt->iterations;
    /* a = f(z)  =>  dL/dz = dL/da f'(z), in place, as dense_backward computes it */
    FN(activation_backward)(d, d, ws->z[0], ws->a[0], B, OC, L->act, (real)L->slope, nthreads);
    real lr_t = (real)adam_corrected_rate(opt->learning_rate, opt->beta1, opt->beta2, t);
    real b1 = (real)opt->beta1, b2 = (real)opt->beta2, eps = (real)opt->epsilon;
    int fused = L->w_trans /* dw^T = dz^T x, else dw = x^T dz: dense_backward's products */
                    ? FN(gemm_adam)(dw, C, d, OC, 1, x, C, 0, OC, C, B, params + w0, s1 + w0,
                                    s2 + w0, lr_t, b1, b2, eps, nthreads)
                    : FN(gemm_adam)(dw, OC, x, C, 1, d, OC, 0, C, OC, B, params + w0, s1 + w0,
                                    s2 + w0, lr_t, b1, b2, eps, nthreads);
    if (fused) {
        if (db) FN(column_sums)(db, d, B, OC, nthreads);
    } else { /* d holds dL/dz: the rest of dense_backward, as for a linear layer */
        FN(dense_backward)(NULL, dw, db, d, NULL, NULL, x, L->w, L->w_trans, B, C, OC,
                           ACT_LINEAR, 0, (gemm_fn)m->gemm, nthreads);
        FN(optimizer_update)(opt, t, w0, w1, nthreads);
    }
    FN(optimizer_update)(opt, t, 0, w0, nthreads);
    FN(optimizer_update)(opt, t, w1, opt->n_params, nthreads);
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

/* Copies rows [p0, p1) of the step's batch (rows order[r0 + p0 ...] of x, y, weights)
 * into the workspace, and asks the cache for the same part of the next step's rows. */
static void FN(gather_rows)(nn_workspace *ws, int in_dim, const real *x, const real *y,
                            int y_width, const real *weights, const int64_t *order,
                            ptrdiff_t n, ptrdiff_t r0, int p0, int p1)
{
    real *xb = ws->xb, *yb = ws->yb, *wb = ws->wb;
    for (int r = p0; r < p1; r++) {
        int64_t src = order[r0 + r];
        memcpy(xb + (ptrdiff_t)r * in_dim, x + src * in_dim, sizeof(real) * (size_t)in_dim);
        memcpy(yb + (ptrdiff_t)r * y_width, y + src * y_width, sizeof(real) * (size_t)y_width);
        if (weights) wb[r] = weights[src];
    }
    ptrdiff_t next0 = r0 + ws->batch + p0, next1 = r0 + ws->batch + p1;
    if (next1 > n) next1 = n;
    if (next0 < next1) FN(prefetch_rows)(x, in_dim, order + next0, next1 - next0);
}

/* Step `step`'s batch: rows [*r0, *r1) of the epoch's order (the last one may be short);
 * returns their count, 0 or less past the end of the data. */
static int FN(step_rows)(const nn_workspace *ws, ptrdiff_t n, ptrdiff_t step, ptrdiff_t *r0,
                         ptrdiff_t *r1)
{
    *r0 = step * ws->batch;
    *r1 = *r0 + ws->batch < n ? *r0 + ws->batch : n;
    return (int)(*r1 - *r0);
}

/* What a step's batch, rows order[r0..r1) of the data, weighs: losses.h's batch_weight
 * (the same sum, in row order), read through the order so that it needs no gathered
 * rows. */
static double FN(step_weight)(const real *weights, const int64_t *order, ptrdiff_t r0,
                              ptrdiff_t r1)
{
    if (!weights) return (double)(r1 - r0);
    double total = 0;
    for (ptrdiff_t r = r0; r < r1; r++) total += (double)weights[order[r]];
    return total;
}

/* out[0..n) = a + b. */
FASTNN_VECTORIZED
static void FN(add_rows)(real *out, const real *a, const real *b, ptrdiff_t n)
{
    for (ptrdiff_t q = 0; q < n; q++) out[q] = a[q] + b[q];
}

/* The L2 term's share of the loss over parameters [q0, q1) of the buffer params (whose
 * kernels the layers' w point into): 0.5 l2 ||w||^2 / batch_weight over the kernel
 * elements in the range, as output_loss adds it over all of them. */
static double FN(l2_range)(const nn_model *m, const real *params, double batch_weight,
                           ptrdiff_t q0, ptrdiff_t q1)
{
    double value = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *L = &m->layers[i];
        if (!L->w) continue;
        ptrdiff_t w0 = (const real *)L->w - params, w1 = w0 + FN(kernel_size)(L);
        ptrdiff_t lo = w0 > q0 ? w0 : q0, hi = w1 < q1 ? w1 : q1;
        value += FN(l2_loss)(L, lo - w0, hi - w0, batch_weight);
    }
    return value;
}

/* The step's gradient from the parts' (grads + c * apart, c < parts): their sum in part
 * order, plus the L2 term's gradient l2 w / batch_weight on every kernel, as backward
 * adds it. */
static void FN(sum_parts)(const nn_model *m, real *out, const real *grads, ptrdiff_t apart,
                          int parts, const real *params, ptrdiff_t n, double batch_weight)
{
    if (parts > 1)
        FN(add_rows)(out, grads, grads + apart, n);
    else
        memcpy(out, grads, sizeof(real) * (size_t)n);
    for (int c = 2; c < parts; c++) FN(add_rows)(out, out, grads + c * apart, n);
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer *L = &m->layers[i];
        if (L->w) FN(add_l2_gradient)(L, out + ((const real *)L->w - params), batch_weight);
    }
}

/* A step's update of a thread's replica from two parts' gradients (grads + c * apart),
 * under Adam: their sum, the L2 term's gradient and the update in one pass over each
 * range of the buffer (a kernel's with its L2 coefficient, the rest's without), where
 * sum_parts and optimizer_update take three; the same operations, so the same bits.
 * Returns 0, doing nothing, for other optimizers or part counts, or kernels out of
 * buffer order. */
static int FN(sum2_adam)(const nn_model *mt, nn_optimizer *ot, const real *grads,
                         ptrdiff_t apart, int parts, double batch_weight, long long t)
{
    if (ot->kind != OPT_ADAM || parts != 2) return 0;
    real *params = ot->params, *summed = ot->grads, *s1 = ot->slot1, *s2 = ot->slot2;
    const real *g0 = grads, *g1 = grads + apart;
    real lr_t = (real)adam_corrected_rate(ot->learning_rate, ot->beta1, ot->beta2, t);
    real b1 = (real)ot->beta1, b2 = (real)ot->beta2, eps = (real)ot->epsilon;
    ptrdiff_t done = 0;
    for (int pass = 0; pass < 2; pass++) { /* check the order, then update */
        done = 0;
        for (int i = 0; i < mt->n_layers; i++) {
            const nn_layer *L = &mt->layers[i];
            if (!L->w || L->l2_per_batch <= 0) continue;
            ptrdiff_t w0 = (const real *)L->w - params, w1 = w0 + FN(kernel_size)(L);
            if (w0 < done) return 0;
            if (pass) {
                real c = (real)(L->l2_per_batch / batch_weight);
                FN(adam_update_sum2)(params + done, summed + done, g0 + done, g1 + done, 0, 0,
                                     s1 + done, s2 + done, w0 - done, lr_t, b1, b2, eps);
                FN(adam_update_sum2)(params + w0, summed + w0, g0 + w0, g1 + w0, 1, c,
                                     s1 + w0, s2 + w0, w1 - w0, lr_t, b1, b2, eps);
            }
            done = w1;
        }
    }
    FN(adam_update_sum2)(params + done, summed + done, g0 + done, g1 + done, 0, 0,
                         s1 + done, s2 + done, ot->n_params - done, lr_t, b1, b2, eps);
    return 1;
}

/* network_fit_epochs' epochs, as train_in_parts runs them in its one OpenMP region: the
 * shuffle before each, and after each its loss and scikit-learn's no-improvement count
 * (see network_fit_epochs). */
typedef struct {
    int max_epochs;
    const nn_bitgen *gen;
    double loss_correction, tol;
    int n_iter_no_change;
    double *best_loss, *losses;
    int *no_improvement;
    int epochs_run; /* set on return */
} FN(fit_plan);

/* Ends an epoch of a fit plan: its loss from the sums, the count; whether to stop. */
static int FN(end_epoch)(FN(fit_plan) *plan, int epoch, double loss_sum,
                         const double *metric_sums, ptrdiff_t n)
{
    if (plan->loss_correction != 0) loss_sum -= plan->loss_correction * metric_sums[0];
    double loss = loss_sum / (double)n;
    plan->losses[epoch] = loss;
    plan->epochs_run = epoch + 1;
    /* scikit-learn's _update_no_improvement_count (NaN counts as an improvement there) */
    if (loss > *plan->best_loss - plan->tol)
        *plan->no_improvement += 1;
    else
        *plan->no_improvement = 0;
    if (loss < *plan->best_loss) *plan->best_loss = loss;
    return *plan->no_improvement > plan->n_iter_no_change;
}

/* network_train for a workspace whose batches are cut into parts (network_parts): one
 * OpenMP region for all the steps, thread t running parts t, t + T, ... of each step.
 * Every thread keeps a replica of the parameters and the optimizer state (thread 0 the
 * model's own; the others theirs in the workspace, copied from the model's at the
 * start). In each step, part c runs the forward, loss and backward of its rows on its
 * thread's replica into gradient buffer c (of the parity of the steps taken so far: a
 * thread may already write the next step's while another reads this one's), and adds its
 * share of the L2 loss (parameter range c); after one barrier every thread adds the
 * parts' gradients, in part order, and the L2 term's, and updates its whole replica: the
 * same numbers from the same numbers, so the replicas stay equal bit for bit, and equal
 * to what one thread running every part computes. What one core writes and another has
 * read costs a transfer between their caches; here only the gradients cross, once a step
 * (read while their writer has moved on to the other parity's buffers), where updating
 * shared parameters by ranges made every parameter cross twice and an update stall on
 * each (measured slower than one thread on small models). The parts and sums are the
 * same on any number of threads, so the results are too.
 * With a fit plan (else NULL), the region runs the plan's epochs of all the steps
 * (step_begin, step_end and the sums unused): thread 0 shuffles the order before each
 * epoch and ends it after its last step, between barriers, so that a fit's many short
 * epochs (scikit-learn's breast_cancer: 3 steps) pay for the region, the replicas and
 * the caches' warm-up once (measured: 14 us an epoch). */
static void FN(train_in_parts)(const nn_model *m, nn_optimizer *opt, nn_workspace *ws,
                               const real *x, const real *y, int y_width,
                               const real *weights, int64_t *order, ptrdiff_t n,
                               ptrdiff_t step_begin, ptrdiff_t step_end,
                               uint64_t dropout_seed, double *loss_sum, double *metric_sums,
                               FN(fit_plan) *plan, int nthreads)
{
    enum { MAX_PARTS = 2 };
    /* by the parity of the steps taken, as the gradient buffers */
    double part_loss[2][MAX_PARTS], part_metrics[2][MAX_PARTS][NN_MAX_METRICS];
    int in_dim = m->layers[0].in_dim;
    const real *model_params = opt->params, *model_grads = opt->grads;
    ptrdiff_t n_params = opt->n_params;
    /* buffers of n_params values, each starting on a cache line of its own */
    ptrdiff_t apart = (ptrdiff_t)(aligned_size((size_t)n_params * sizeof(real)) / sizeof(real));
    long long start_iterations = opt->iterations, taken = 0;
    int nt = nthreads < ws->parts ? nthreads : ws->parts;
    if (nt < 1) nt = 1;
    int epochs = plan ? plan->max_epochs : 1;
    double epoch_loss = 0, epoch_metrics[NN_MAX_METRICS];
    int stop = 0; /* thread 0 ends the plan's epochs; every thread reads it after a barrier */
    if (plan) {
        step_begin = 0;
        step_end = (n + ws->batch - 1) / ws->batch;
        loss_sum = &epoch_loss;
        metric_sums = epoch_metrics;
        plan->epochs_run = 0;
    }
    FN(set_layer_buffers)(m, ws, ws->xb, 1);
    fastnn_wake_team(nt);
    double wait_fraction = 0;
#ifdef _OPENMP
    #pragma omp parallel num_threads(nt) reduction(max: taken, wait_fraction)
#endif
    {
        unsigned int csr = fastnn_ftz_enter();
        double began = region_clock(), waited = 0;
        int tid = 0, T = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        T = omp_get_num_threads();
#endif
        /* this thread's model and optimizer: the given ones, or a replica */
        const nn_model *mt = m;
        nn_model replica_model;
        nn_optimizer replica_opt, *ot = opt;
        if (tid > 0) {
            real *r = (real *)ws->replicas + (ptrdiff_t)(tid - 1) * 4 * apart;
            nn_layer *layers = ws->replica_layers + (ptrdiff_t)(tid - 1) * m->n_layers;
            memcpy(r, model_params, sizeof(real) * (size_t)n_params);
            memcpy(r + apart, opt->slot1, sizeof(real) * (size_t)n_params);
            memcpy(r + 2 * apart, opt->slot2, sizeof(real) * (size_t)n_params);
            for (int i = 0; i < m->n_layers; i++) {
                layers[i] = m->layers[i];
                if (layers[i].w) layers[i].w = r + ((const real *)m->layers[i].w - model_params);
                if (layers[i].b) layers[i].b = r + ((const real *)m->layers[i].b - model_params);
            }
            replica_model = *m;
            replica_model.layers = layers;
            mt = &replica_model;
            replica_opt = *opt;
            replica_opt.params = r;
            replica_opt.slot1 = r + apart;
            replica_opt.slot2 = r + 2 * apart;
            replica_opt.grads = r + 3 * apart;
            ot = &replica_opt;
        }
        real *params = ot->params, *summed = ot->grads;
        long long t = start_iterations;
        for (int epoch = 0; epoch < epochs; epoch++) {
            if (plan) {
                if (tid == 0) {
                    if (plan->gen) network_shuffle_numpy(order, n, plan->gen);
                    epoch_loss = 0;
                    for (int k = 0; k < NN_MAX_METRICS; k++) epoch_metrics[k] = 0;
                }
                timed_barrier(&waited); /* the epoch's order */
            }
            for (ptrdiff_t step = step_begin; step < step_end; step++) {
                ptrdiff_t r0, r1;
                int B = FN(step_rows)(ws, n, step, &r0, &r1);
                if (B <= 0) break;
                double batch_weight = FN(step_weight)(weights, order, r0, r1);
                if (takes_no_step(batch_weight)) {
                    if (tid == 0) *loss_sum += NAN;
                    continue;
                }
                /* a short last batch is cut too: its rows are fewer, but the other threads
                 * would only wait for them */
                int parts = B < ws->parts ? B : ws->parts;
                /* steps taken alternate: a skipped step has no barrier, so its number's
                 * parity would let a thread reuse buffers another still reads */
                int parity = (int)((t - start_iterations) & 1);
                real *step_grads = (real *)ws->part_grads + (ptrdiff_t)parity * ws->parts * apart;
                for (int c = tid; c < parts; c += T) {
                    int p0 = (int)((long long)B * c / parts), p1 = (int)((long long)B * (c + 1) / parts);
                    const real *xp = (const real *)ws->xb + (ptrdiff_t)p0 * in_dim;
                    const real *yp = (const real *)ws->yb + (ptrdiff_t)p0 * y_width;
                    const real *wp = weights ? (const real *)ws->wb + p0 : NULL;
                    FN(gather_rows)(ws, in_dim, x, y, y_width, weights, order, n, r0, p0, p1);
                    FN(forward)(mt, ws, xp, p0, p1 - p0, 1, dropout_seed, (uint64_t)step, 1, 1);
                    part_loss[parity][c] =
                        FN(output_loss)(mt, ws, yp, wp, batch_weight, p0, p1 - p0, 1, 0, 1) +
                        FN(l2_range)(mt, params, batch_weight, n_params * c / parts,
                                     n_params * (c + 1) / parts);
                    for (int k = 0; k < m->n_metrics; k++) part_metrics[parity][c][k] = 0;
                    FN(add_metrics)(mt, ws, yp, wp, batch_weight, p0, p1 - p0, B, 1,
                                    part_metrics[parity][c]);
                    FN(backward)(mt, ws, xp, p0, p1 - p0, batch_weight, step_grads + c * apart,
                                 model_grads, 0, 1);
                }
                timed_barrier(&waited);
                t += 1;
                if (!FN(sum2_adam)(mt, ot, step_grads, apart, parts, batch_weight, t)) {
                    FN(sum_parts)(mt, summed, step_grads, apart, parts, params, n_params,
                                  batch_weight);
                    FN(optimizer_update)(ot, t, 0, n_params, 1);
                }
                if (tid == 0) {
                    double s = 0;
                    for (int c = 0; c < parts; c++) s += part_loss[parity][c];
                    *loss_sum += s * B;
                    for (int k = 0; k < m->n_metrics; k++)
                        for (int c = 0; c < parts; c++) metric_sums[k] += part_metrics[parity][c][k];
                }
            }
            if (plan) {
                /* every thread has passed the epoch's last step barrier (no thread reads
                 * the order again before the next epoch's), and thread 0 has its sums */
                if (tid == 0) stop = FN(end_epoch)(plan, epoch, epoch_loss, epoch_metrics, n);
                timed_barrier(&waited); /* stop */
                if (stop) break;
            }
        }
        taken = t - start_iterations;
        wait_fraction = waited_share(began, waited, T);
        fastnn_ftz_leave(csr);
    }
    opt->iterations = start_iterations + taken;
    ws->wait_fraction = wait_fraction;
}

/* dst (rows x cols, rows ldd apart) = src (rows lds apart). */
static void FN(copy_block)(real *dst, ptrdiff_t ldd, const real *src, ptrdiff_t lds, int rows,
                           int cols)
{
    for (int r = 0; r < rows; r++)
        memcpy(dst + r * ldd, src + r * lds, sizeof(real) * (size_t)cols);
}

/* Rows order[r0..r1) of x (in_dim values each) into xb, e.g. for a thread that reads its
 * own copy of a batch's rows. */
static void FN(gather_x_rows)(real *xb, const real *x, int in_dim, const int64_t *order,
                              ptrdiff_t r0, ptrdiff_t r1)
{
    for (ptrdiff_t r = r0; r < r1; r++)
        memcpy(xb + (r - r0) * in_dim, x + order[r] * in_dim, sizeof(real) * (size_t)in_dim);
}

/* A thread's buffers for its range of the first layer's units (ws->unit_bufs). */
static real *FN(unit_buf)(const nn_workspace *ws, int range, int which)
{
    return (real *)ws->unit_bufs[UNIT_BUFS * range + which];
}

/* The first layer's forward for its units [u0, u1) (a layer stored transposed: their rows
 * of the kernel are a block), into z and a of their own (B x units). */
static void FN(units_forward)(const nn_layer *L, real *z, real *a, const real *x, int B,
                              int u0, int u1, gemm_fn gemm)
{
    int C = L->in_dim;
    FN(dense_forward)(z, a, x, (const real *)L->w + (ptrdiff_t)u0 * C, 1,
                      L->b ? (const real *)L->b + u0 : NULL, B, C, u1 - u0, L->act,
                      (real)L->slope, gemm, 1);
}

/* Its backward, from dL/da of the units in d (B x units, dL/dz on return), into their
 * rows of the kernel's gradient and their biases', with the L2 term's gradient. */
static void FN(units_backward)(const nn_layer *L, real *d, const real *z, const real *a,
                               const real *x, int B, int u0, int u1, double batch_weight,
                               gemm_fn gemm)
{
    int C = L->in_dim;
    const real *w = (const real *)L->w + (ptrdiff_t)u0 * C;
    real *dw = (real *)L->dw + (ptrdiff_t)u0 * C;
    FN(dense_backward)(NULL, dw, L->db ? (real *)L->db + u0 : NULL, d, z, a, x, w, 1, B, C,
                       u1 - u0, L->act, (real)L->slope, gemm, 1);
    if (L->l2_per_batch > 0)
        FN(add_scaled)(dw, w, (real)(L->l2_per_batch / batch_weight), (ptrdiff_t)(u1 - u0) * C);
}

/* network_train on two threads for a workspace whose first layer's units are split
 * (network_split_units, s of them to thread 0). Each step:
 *   1. both threads run the first layer's forward for their units, into buffers of their
 *      own (thread 0 on the batch rows it gathered, thread 1 on a copy of its own);
 *   2. after a barrier, thread 0 copies both threads' activations into a[0], runs the
 *      other layers' forward, the loss and their backward down to dL/da[0], while
 *      thread 1 gathers the next step's rows;
 *   3. after a second barrier, both run the first layer's backward and update for their
 *      units, thread 0 also the other layers' update.
 * Thread 1 reads rows of its own (ws->unit_x) because thread 0 gathers the next step's
 * batch into ws->xb in step 1 while thread 1 may still be in step 3 of the last one. The
 * threads never write the same parameters (thread 1's are its units' rows of the kernel
 * and their biases): only activations and their gradients (batch x units) cross between
 * the cores. The activation is elementwise and each range of units keeps the whole
 * layer's kernels (network_split_units), each value computed from its own operands alone;
 * the other layers run as in network_train's one-thread loop: so the results are the
 * same bits. */
static void FN(train_split_units)(const nn_model *m, nn_optimizer *opt, nn_workspace *ws,
                                  const real *x, const real *y, int y_width,
                                  const real *weights, const int64_t *order, ptrdiff_t n,
                                  ptrdiff_t step_begin, ptrdiff_t step_end,
                                  uint64_t dropout_seed, double *loss_sum,
                                  double *metric_sums)
{
    const nn_layer *L0 = &m->layers[0];
    int C = L0->in_dim, OC = L0->out_dim, split = ws->split_units;
    gemm_fn gemm = (gemm_fn)m->gemm;
    const real *params = opt->params;
    real *wb = weights ? (real *)ws->wb : NULL;
    /* thread 1's parameters, in buffer order: its units' kernel rows and biases */
    ptrdiff_t own_lo[2], own_hi[2];
    int n_own = 0;
    own_lo[n_own] = ((const real *)L0->w - params) + (ptrdiff_t)split * C;
    own_hi[n_own++] = ((const real *)L0->w - params) + (ptrdiff_t)OC * C;
    if (L0->b) {
        own_lo[n_own] = ((const real *)L0->b - params) + split;
        own_hi[n_own++] = ((const real *)L0->b - params) + OC;
        if (own_lo[1] < own_lo[0]) {
            ptrdiff_t lo = own_lo[0], hi = own_hi[0];
            own_lo[0] = own_lo[1], own_hi[0] = own_hi[1];
            own_lo[1] = lo, own_hi[1] = hi;
        }
    }
    long long start_iterations = opt->iterations, taken = 0;
    FN(set_layer_buffers)(m, ws, ws->xb, 1);
    real *a0 = ws->a[0], *d0 = ws->dbuf[0];
    fastnn_wake_team(2);
    double wait_fraction = 0;
#ifdef _OPENMP
    #pragma omp parallel num_threads(2) reduction(max: taken, wait_fraction)
#endif
    {
        unsigned int csr = fastnn_ftz_enter();
        double began = region_clock(), waited = 0;
        int tid = 0, T = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        T = omp_get_num_threads();
#endif
        long long t = start_iterations;
        int cur = 0;              /* thread 1: unit_x[cur] holds this step's rows */
        ptrdiff_t gathered = -1;  /* the step whose rows unit_x[cur ^ 1] holds */
        for (ptrdiff_t step = step_begin; step < step_end; step++) {
            ptrdiff_t r0, r1;
            int B = FN(step_rows)(ws, n, step, &r0, &r1);
            if (B <= 0) break;
            double batch_weight = FN(step_weight)(weights, order, r0, r1);
            if (takes_no_step(batch_weight)) {
                if (tid == 0) *loss_sum += NAN;
                continue;
            }
            /* the rows each range of units reads; when the region got one thread (a
             * thread limit, a nested region) it runs both ranges on ws->xb */
            const real *xu[2] = {ws->xb, ws->xb};
            if (tid == 0) FN(gather_rows)(ws, C, x, y, y_width, weights, order, n, r0, 0, B);
            if (tid == 1) {
                if (gathered == step)
                    cur ^= 1;
                else /* the first step of the call, or the one after a skipped batch */
                    FN(gather_x_rows)(ws->unit_x[cur], x, C, order, r0, r1);
                xu[1] = ws->unit_x[cur];
            }
            for (int u = tid; u < 2; u += T)
                FN(units_forward)(L0, FN(unit_buf)(ws, u, UNIT_Z), FN(unit_buf)(ws, u, UNIT_A),
                                  xu[u], B, u ? split : 0, u ? OC : split, gemm);
            timed_barrier(&waited);
            if (tid == 0) {
                FN(copy_block)(a0, OC, FN(unit_buf)(ws, 0, UNIT_A), split, B, split);
                FN(copy_block)(a0 + split, OC, FN(unit_buf)(ws, 1, UNIT_A), OC - split, B,
                               OC - split);
                FN(forward_layers)(m, ws, 1, a0, 0, B, 1, dropout_seed, (uint64_t)step, 1);
                *loss_sum += FN(output_loss)(m, ws, ws->yb, wb, batch_weight, 0, B, 1, 1, 1) * B;
                FN(add_metrics)(m, ws, ws->yb, wb, batch_weight, 0, B, B, 1, metric_sums);
                FN(backward_layers)(m, ws, 1, NULL, 0, B, batch_weight, NULL, NULL, 1, 1);
            } else if (step + 1 < step_end && r1 < n) {
                ptrdiff_t next1 = r1 + ws->batch < n ? r1 + ws->batch : n;
                FN(gather_x_rows)(ws->unit_x[cur ^ 1], x, C, order, r1, next1);
                gathered = step + 1;
            }
            timed_barrier(&waited);
            t += 1;
            for (int u = tid; u < 2; u += T) {
                int u0 = u ? split : 0, u1 = u ? OC : split;
                real *du = FN(unit_buf)(ws, u, UNIT_D);
                FN(copy_block)(du, u1 - u0, d0 + u0, OC, B, u1 - u0);
                FN(units_backward)(L0, du, FN(unit_buf)(ws, u, UNIT_Z),
                                   FN(unit_buf)(ws, u, UNIT_A), xu[u], B, u0, u1,
                                   batch_weight, gemm);
            }
            if (T == 1) {
                FN(optimizer_update)(opt, t, 0, opt->n_params, 1);
            } else if (tid == 1) {
                for (int k = 0; k < n_own; k++) FN(optimizer_update)(opt, t, own_lo[k], own_hi[k], 1);
            } else {
                ptrdiff_t lo = 0; /* the ranges between thread 1's */
                for (int k = 0; k < n_own; k++) {
                    FN(optimizer_update)(opt, t, lo, own_lo[k], 1);
                    lo = own_hi[k];
                }
                FN(optimizer_update)(opt, t, lo, opt->n_params, 1);
            }
        }
        taken = t - start_iterations;
        wait_fraction = waited_share(began, waited, T);
        fastnn_ftz_leave(csr);
    }
    opt->iterations = start_iterations + taken;
    ws->wait_fraction = wait_fraction;
}

void FN(network_train)(const nn_model *m, nn_optimizer *opt, nn_workspace *ws,
                       const real *x, const real *y, int y_width, const real *weights,
                       const int64_t *order, ptrdiff_t n, ptrdiff_t step_begin,
                       ptrdiff_t step_end, uint64_t dropout_seed, double *loss_sum,
                       double *metric_sums, int nthreads)
{
    if (ws->parts > 1) {
        /* the parts path reads the order only (it shuffles it under a fit plan) */
        FN(train_in_parts)(m, opt, ws, x, y, y_width, weights, (int64_t *)order, n,
                           step_begin, step_end, dropout_seed, loss_sum, metric_sums, NULL,
                           nthreads);
        return;
    }
    if (ws->split_units && nthreads >= 2) {
        FN(train_split_units)(m, opt, ws, x, y, y_width, weights, order, n, step_begin,
                              step_end, dropout_seed, loss_sum, metric_sums);
        return;
    }
    ws->wait_fraction = 0;
    wake_team_for(m, ws, n, nthreads);
    unsigned int csr = fastnn_ftz_enter();
    int in_dim = m->layers[0].in_dim;
    real *wb = weights ? (real *)ws->wb : NULL;
    for (ptrdiff_t step = step_begin; step < step_end; step++) {
        ptrdiff_t r0, r1;
        int B = FN(step_rows)(ws, n, step, &r0, &r1);
        if (B <= 0) break;
        /* a large batch's rows (W2: 128 rows of 784 from 188 MB) wait on memory: both
         * threads fetch them at once */
        FASTNN_SPLIT_RANGE((ptrdiff_t)B * in_dim, B, nthreads,
                           FN(gather_rows)(ws, in_dim, x, y, y_width, weights, order, n, r0,
                                           (int)begin, (int)end));
        double batch_weight = FN(step_weight)(weights, order, r0, r1);
        if (takes_no_step(batch_weight)) {
            *loss_sum += NAN;
            continue;
        }
        FN(forward)(m, ws, ws->xb, 0, B, 1, dropout_seed, (uint64_t)step, 0, nthreads);
        *loss_sum += FN(output_loss)(m, ws, ws->yb, wb, batch_weight, 0, B, 1, 1, nthreads) * B;
        FN(add_metrics)(m, ws, ws->yb, wb, batch_weight, 0, B, B, 1, metric_sums);
        if (fuses_first_update(m, opt)) {
            FN(backward_layers)(m, ws, 1, NULL, 0, B, batch_weight, NULL, NULL, 1, nthreads);
            FN(first_layer_backward_update)(m, opt, ws, ws->xb, B, nthreads);
        } else {
            FN(backward)(m, ws, ws->xb, 0, B, batch_weight, NULL, NULL, 1, nthreads);
            FN(optimizer_step)(opt, nthreads);
        }
    }
    fastnn_ftz_leave(csr);
}

int FN(network_fit_epochs)(const nn_model *m, nn_optimizer *opt, nn_workspace *ws,
                           const real *x, const real *y, int y_width, int64_t *order,
                           ptrdiff_t n, const nn_bitgen *gen, double loss_correction,
                           double tol, int n_iter_no_change, double *best_loss,
                           int *no_improvement, double *losses, int max_epochs, int nthreads)
{
    FN(fit_plan) plan = {max_epochs, gen, loss_correction, tol, n_iter_no_change, best_loss,
                         losses, no_improvement, 0};
    if (ws->parts > 1) { /* all the epochs in one region */
        FN(train_in_parts)(m, opt, ws, x, y, y_width, NULL, order, n, 0, 0, 0, NULL, NULL,
                           &plan, nthreads);
        return plan.epochs_run;
    }
    ptrdiff_t steps = (n + ws->batch - 1) / ws->batch;
    for (int epoch = 0; epoch < max_epochs; epoch++) {
        if (gen) network_shuffle_numpy(order, n, gen);
        double loss_sum = 0, metric_sums[NN_MAX_METRICS] = {0};
        FN(network_train)(m, opt, ws, x, y, y_width, NULL, order, n, 0, steps, 0, &loss_sum,
                          metric_sums, nthreads);
        if (FN(end_epoch)(&plan, epoch, loss_sum, metric_sums, n)) break;
    }
    return plan.epochs_run;
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
    wake_team_for(m, ws, n, nthreads);
    unsigned int csr = fastnn_ftz_enter();
    int in_dim = m->layers[0].in_dim, out_dim = m->layers[m->n_layers - 1].out_dim;
    for (ptrdiff_t r0 = 0; r0 < n; r0 += ws->batch) {
        int B = (int)(n - r0 < ws->batch ? n - r0 : ws->batch);
        FN(forward)(m, ws, x + r0 * in_dim, 0, B, 0, 0, 0, 0, nthreads);
        memcpy(out + r0 * out_dim, ws->a[m->n_layers - 1],
               sizeof(real) * (size_t)B * (size_t)out_dim);
    }
    fastnn_ftz_leave(csr);
}

void FN(network_evaluate)(const nn_model *m, nn_workspace *ws, const real *x, const real *y,
                          int y_width, ptrdiff_t n, double *loss_sum, double *metric_sums,
                          int nthreads)
{
    wake_team_for(m, ws, n, nthreads);
    unsigned int csr = fastnn_ftz_enter();
    int in_dim = m->layers[0].in_dim;
    for (ptrdiff_t r0 = 0; r0 < n; r0 += ws->batch) {
        int B = (int)(n - r0 < ws->batch ? n - r0 : ws->batch);
        const real *yr = y + r0 * y_width;
        FN(forward)(m, ws, x + r0 * in_dim, 0, B, 0, 0, 0, 0, nthreads);
        *loss_sum += FN(output_loss)(m, ws, yr, NULL, B, 0, B, 0, 1, nthreads) * B;
        FN(add_metrics)(m, ws, yr, NULL, B, 0, B, B, 0, metric_sums);
    }
    fastnn_ftz_leave(csr);
}

double FN(network_loss_grad)(const nn_model *m, nn_workspace *ws, const real *x,
                             const real *y, int y_width, const real *weights, int rows,
                             int nthreads)
{
    (void)y_width;
    wake_team_for(m, ws, rows, nthreads);
    unsigned int csr = fastnn_ftz_enter();
    int B = rows < ws->batch ? rows : ws->batch;
    double batch_weight = FN(batch_weight)(weights, B);
    FN(forward)(m, ws, x, 0, B, 0, 0, 0, 0, nthreads);
    double loss = FN(output_loss)(m, ws, y, weights, batch_weight, 0, B, 1, 1, nthreads);
    FN(backward)(m, ws, x, 0, B, batch_weight, NULL, NULL, 1, nthreads);
    fastnn_ftz_leave(csr);
    return loss;
}

#endif /* FASTNN_TEMPLATE */
