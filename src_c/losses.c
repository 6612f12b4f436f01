/* losses.c: see losses.h. Written once for `real`, compiled for float and double by
 * including itself (real_begin.h explains the pattern). */
#ifndef FASTNN_TEMPLATE
#define FASTNN_TEMPLATE
#include <float.h>
#include <math.h>
#include <string.h>
#include "losses.h"
#include "activations.h"
#include "simd16.h"

/* Keras' epsilon for clipping probabilities. */
#define PROB_EPS 1e-7
/* Row blocks per loss pass, at most 64, their count depending on the sizes only, so that
 * the sum order never depends on the threads. An elementwise loss with one value per row
 * sums a block in the same chain of additions however many rows it holds, so its blocks
 * hold 4096 rows (a small batch is one pass of the row function, not one call per row);
 * with K values per row, a block is a row (up to 64 blocks), which keeps a row's values
 * summed on their own (what weighted rows need: unit weights give the unweighted sum bit
 * for bit). A categorical loss takes its rows one at a time anyway: blocks of 16 rows,
 * which the 16-row softmax (sparse_ce_logits_rows16_f32) takes at once (and its float64
 * form in two groups of 8). */
#define LOSS_BLOCKS 64
static int loss_block_count(int B, int K, int elementwise)
{
    long long blocks = !elementwise ? ((long long)B + 15) / 16
                                    : (K == 1 ? ((long long)B + 4095) / 4096 : B);
    if (blocks > LOSS_BLOCKS) blocks = LOSS_BLOCKS;
    return blocks < 1 ? 1 : (int)blocks;
}

#if FASTNN_SIMD16
/* Categorical cross-entropy of one row of K <= 16 logits z against targets y, in one
 * AVX-512 vector: ce_row's from-logits formulas, with the sums over the row added across
 * the lanes (the loss in double). Called when softmax_row16_available(). */
__attribute__((target("avx512f"))) static double ce_logits_row16_f32(float *g, const float *z,
                                                                    const float *y, int K,
                                                                    float gscale)
{
    __mmask16 lanes = (__mmask16)((1u << K) - 1u);
    float terms[16], zmax;
    float sum = softmax_row16_f32(terms, z, K, &zmax);
    float lse = zmax + logf(sum);
    __m512 yv = _mm512_maskz_loadu_ps(lanes, y), zv = _mm512_maskz_loadu_ps(lanes, z);
    float ysum = _mm512_reduce_add_ps(yv);
    /* sum_j y_j (lse - z_j), in double: finite for any float logits */
    __m512d lse_d = _mm512_set1_pd((double)lse);
    __m512d lo = _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(yv)),
                               _mm512_sub_pd(lse_d, _mm512_cvtps_pd(_mm512_castps512_ps256(zv))));
    __m512d hi = _mm512_mul_pd(
        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(yv), 1))),
        _mm512_sub_pd(lse_d, _mm512_cvtps_pd(
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(zv), 1)))));
    double loss = _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
    if (g) { /* d/dz_j = softmax(z)_j sum(y) - y_j */
        __m512 e = _mm512_maskz_loadu_ps(lanes, terms);
        __m512 grad = _mm512_mul_ps(_mm512_set1_ps(1.0f / sum), e);
        grad = _mm512_sub_ps(_mm512_mul_ps(grad, _mm512_set1_ps(ysum)), yv);
        _mm512_mask_storeu_ps(g, lanes, _mm512_mul_ps(grad, _mm512_set1_ps(gscale)));
    }
    return loss;
}
/* Sparse categorical cross-entropy of logits for rows [0, rows) (rows <= 16) of K <= 16
 * floats (z: row stride K; labels: one per row), the 16 rows at once in class-major
 * vectors (vector j holds class j of every row): sparse_ce_row's from-logits formulas,
 * each row's terms e^(z_j - max) added in class order as its scalar loop adds them.
 * loss[r] = row r's loss (in double); g (NULL: no gradient), row r = (softmax(z_r) -
 * one-hot) * gscale[r]. A label outside [0, K) gives a NaN loss and a zero gradient row,
 * as in sparse_ce_row. Called when softmax_row16_available(); a row at a time, the
 * reductions across a vector's lanes made a row cost ~190 cycles, about 4x this. */
__attribute__((target("avx512f"))) static void
sparse_ce_logits_rows16_f32(float *g, const float *z, const float *labels, int K, int rows,
                            const float *gscale, double *loss)
{
    __mmask16 lanes = (__mmask16)((1u << K) - 1u);
    __m512 v[16];
    for (int r = 0; r < 16; r++)
        v[r] = r < rows ? _mm512_maskz_loadu_ps(lanes, z + (ptrdiff_t)r * K) : _mm512_setzero_ps();
    transpose_16x16_f32(v);
    __m512 zmax = v[0], sum = _mm512_setzero_ps();
    for (int j = 1; j < K; j++) zmax = _mm512_max_ps(zmax, v[j]);
    for (int j = 0; j < K; j++) {
        v[j] = exp_nonpositive_x16(_mm512_sub_ps(v[j], zmax));
        sum = _mm512_add_ps(sum, v[j]);
    }
    float maxes[16], sums[16];
    int32_t label[16];
    _mm512_storeu_ps(maxes, zmax);
    _mm512_storeu_ps(sums, sum);
    for (int r = 0; r < 16; r++) {
        float c = r < rows ? labels[r] : -1.0f;
        label[r] = (c >= 0 && c < (float)K && (float)(int32_t)c == c) ? (int32_t)c : -1;
        if (r >= rows) continue;
        if (label[r] < 0) {
            loss[r] = NAN;
            continue;
        }
        float lse = maxes[r] + logf(sums[r]);
        loss[r] = (double)lse - (double)z[(ptrdiff_t)r * K + label[r]];
    }
    if (!g) return;
    __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), sum);
    __m512 scale = _mm512_maskz_loadu_ps((__mmask16)((1u << rows) - 1u), gscale);
    __m512i labels_v = _mm512_loadu_si512(label);
    for (int j = 0; j < 16; j++) {
        if (j >= K) {
            v[j] = _mm512_setzero_ps();
            continue;
        }
        __m512 gj = _mm512_mul_ps(_mm512_mul_ps(v[j], inv), scale);
        __mmask16 own = _mm512_cmpeq_epi32_mask(labels_v, _mm512_set1_epi32(j));
        v[j] = _mm512_mask_sub_ps(gj, own, gj, scale);
    }
    transpose_16x16_f32(v);
    for (int r = 0; r < rows; r++) {
        if (label[r] < 0) v[r] = _mm512_setzero_ps();
        _mm512_mask_storeu_ps(g + (ptrdiff_t)r * K, lanes, v[r]);
    }
}

/* sparse_ce_logits_rows16_f32 for doubles, 8 rows at a time (rows <= 8, K <= 16): vector
 * j holds class j of the 8 rows, each term e^(z_j - max) is exp_nonpositive_f64's (the
 * row path's) and each row's terms are added in class order, so every row's loss and
 * gradient have the row path's bits. */
__attribute__((target("avx512f"))) static void
sparse_ce_logits_rows8_f64(double *g, const double *z, const double *labels, int K, int rows,
                           const double *gscale, double *loss)
{
    __m512d v[16];
    double column[8];
    for (int j = 0; j < K; j++) {
        for (int r = 0; r < 8; r++) column[r] = r < rows ? z[(ptrdiff_t)r * K + j] : 0.0;
        v[j] = _mm512_loadu_pd(column);
    }
    /* each row's largest logit (a NaN logit makes its row's sum NaN either way) */
    __m512d zmax = _mm512_set1_pd(-INFINITY), sum = _mm512_setzero_pd();
    for (int j = 0; j < K; j++) zmax = _mm512_max_pd(zmax, v[j]);
    for (int j = 0; j < K; j++) {
        v[j] = exp_nonpositive_x8(_mm512_sub_pd(v[j], zmax));
        sum = _mm512_add_pd(sum, v[j]);
    }
    double maxes[8], sums[8];
    int64_t label[8];
    _mm512_storeu_pd(maxes, zmax);
    _mm512_storeu_pd(sums, sum);
    for (int r = 0; r < 8; r++) {
        double c = r < rows ? labels[r] : -1.0;
        label[r] = (c >= 0 && c < (double)K && (double)(int64_t)c == c) ? (int64_t)c : -1;
        if (r >= rows) continue;
        if (label[r] < 0) {
            loss[r] = NAN;
            continue;
        }
        double lse = maxes[r] + log(sums[r]);
        loss[r] = lse - z[(ptrdiff_t)r * K + label[r]];
    }
    if (!g) return;
    __m512d inv = _mm512_div_pd(_mm512_set1_pd(1.0), sum);
    __m512d scale = _mm512_maskz_loadu_pd((__mmask8)((1u << rows) - 1u), gscale);
    __m512i labels_v = _mm512_loadu_si512(label);
    for (int j = 0; j < K; j++) {
        __m512d gj = _mm512_mul_pd(_mm512_mul_pd(v[j], inv), scale);
        __mmask8 own = _mm512_cmpeq_epi64_mask(labels_v, _mm512_set1_epi64(j));
        _mm512_storeu_pd(column, _mm512_mask_sub_pd(gj, own, gj, scale));
        for (int r = 0; r < rows; r++)
            g[(ptrdiff_t)r * K + j] = label[r] < 0 ? 0.0 : column[r];
    }
}
#endif

#define FASTNN_DOUBLE 0
#include "real_begin.h"
#include "losses.c"
#include "real_end.h"
#define FASTNN_DOUBLE 1
#include "real_begin.h"
#include "losses.c"
#include "real_end.h"
#undef FASTNN_TEMPLATE
#else

/* What one row of a loss computes: returns the row's summed loss, writes the row's
 * gradient (times gscale) when g is not NULL. */
typedef double (*FN(row_loss_fn))(real *g, const real *p, const real *y, int K,
                                  int from_logits, real gscale);
static double FN(sparse_ce_row)(real *g, const real *p, const real *y, int K,
                                int from_logits, real gscale);

/* A term's loss as scikit-learn's log-loss has it (LOSS_CLIP_PROBABILITIES): -log of a
 * probability clipped to [eps, 1 - eps]. */
static double FN(clip_term)(double loss)
{
    const double eps = FASTNN_DOUBLE ? DBL_EPSILON : FLT_EPSILON;
    const double lo = -log1p(-eps), hi = -log(eps);
    return loss < lo ? lo : (loss > hi ? hi : loss); /* NaN stays NaN */
}

/* Row blocks [blk0, blk1) of batch_loss: each block's sum into block_sum. */
static void FN(loss_blocks)(FN(row_loss_fn) row_loss, int elementwise, real *grad,
                            const real *pred, const real *y, int y_stride,
                            const real *weights, int B, int K, int from_logits,
                            double gscale, int blocks, int blk0, int blk1, double *block_sum)
{
    real row_gscale = (real)gscale;
    for (int blk = blk0; blk < blk1; blk++) {
        ptrdiff_t r0 = (ptrdiff_t)B * blk / blocks;
        ptrdiff_t r1 = (ptrdiff_t)B * (blk + 1) / blocks;
        double s = 0;
        if (elementwise && !weights) {
            /* An elementwise loss (targets laid out as pred) over the block's rows is
             * the same loss over their values in one run: passed in chunks of a fixed
             * size, so the row function's loops run long enough to vectorize. */
            const ptrdiff_t chunk = 4096;
            ptrdiff_t begin = r0 * K, end = r1 * K;
            for (ptrdiff_t i = begin; i < end; i += chunk) {
                int n = (int)(end - i < chunk ? end - i : chunk);
                s += row_loss(grad ? grad + i : NULL, pred + i, y + i, n, from_logits,
                              row_gscale);
            }
            block_sum[blk] = s;
            continue;
        }
#if FASTNN_SIMD16
        if (row_loss == FN(sparse_ce_row) && from_logits && K <= 16 &&
            softmax_row16_available()) {
            /* the same rows, a vector's worth at a time (16 floats or 8 doubles:
             * sparse_ce_logits_rows16_f32, sparse_ce_logits_rows8_f64) */
            enum { GROUP = FASTNN_DOUBLE ? 8 : 16 };
            for (ptrdiff_t q = r0; q < r1; q += GROUP) {
                int rows = (int)(r1 - q < GROUP ? r1 - q : GROUP);
                real scales[GROUP];
                double losses[GROUP];
                for (int i = 0; i < rows; i++)
                    scales[i] = weights ? (real)((double)weights[q + i] * gscale) : row_gscale;
#if FASTNN_DOUBLE
                sparse_ce_logits_rows8_f64(grad ? grad + q * K : NULL, pred + q * K, y + q, K,
                                           rows, scales, losses);
#else
                sparse_ce_logits_rows16_f32(grad ? grad + q * K : NULL, pred + q * K, y + q,
                                            K, rows, scales, losses);
#endif
                if (from_logits & LOSS_CLIP_PROBABILITIES)
                    for (int i = 0; i < rows; i++) losses[i] = FN(clip_term)(losses[i]);
                for (int i = 0; i < rows; i++)
                    s += weights ? (double)weights[q + i] * losses[i] : losses[i];
            }
            block_sum[blk] = s;
            continue;
        }
#endif
        for (ptrdiff_t r = r0; r < r1; r++) {
            real *g = grad ? grad + r * K : NULL;
            if (weights) { /* the row's scale is rounded once, from the exact w / norm */
                double w = (double)weights[r];
                s += w * row_loss(g, pred + r * K, y + r * y_stride, K, from_logits,
                                  (real)(w * gscale));
            } else {
                s += row_loss(g, pred + r * K, y + r * y_stride, K, from_logits, row_gscale);
            }
        }
        block_sum[blk] = s;
    }
}

/* Runs a row loss over the batch and returns the sum of the row losses, each times its
 * weight when weights is not NULL; y advances by y_stride per row. Each row's gradient
 * is scaled by gscale times its weight, rounded to real once per row. */
static double FN(batch_loss)(FN(row_loss_fn) row_loss, int elementwise, real *grad,
                             const real *pred, const real *y, int y_stride,
                             const real *weights, int B, int K, int from_logits,
                             double gscale, int nthreads)
{
    double block_sum[LOSS_BLOCKS];
    int blocks = loss_block_count(B, K, elementwise);
    int nt = fastnn_threads_for((ptrdiff_t)B * K, nthreads);
    if (nt == 1) {
        unsigned int csr = fastnn_ftz_enter();
        FN(loss_blocks)(row_loss, elementwise, grad, pred, y, y_stride, weights, B, K,
                        from_logits, gscale, blocks, 0, blocks, block_sum);
        fastnn_ftz_leave(csr);
    } else {
        #pragma omp parallel for schedule(static) num_threads(nt)
        for (int blk = 0; blk < blocks; blk++) {
            unsigned int csr = fastnn_ftz_enter();
            FN(loss_blocks)(row_loss, elementwise, grad, pred, y, y_stride, weights, B, K,
                            from_logits, gscale, blocks, blk, blk + 1, block_sum);
            fastnn_ftz_leave(csr);
        }
    }
    double total = 0;
    for (int blk = 0; blk < blocks; blk++) total += block_sum[blk];
    return total;
}

double FN(batch_weight)(const real *weights, int B)
{
    if (!weights) return (double)B;
    double total = 0;
    for (int r = 0; r < B; r++) total += (double)weights[r];
    return total;
}

/* The batch-mean loss of a row loss: the (weighted) sum of the rows' losses over
 * total_weight * per_row_terms, where per_row_terms is how many terms a row's loss sums
 * (K for the elementwise losses, 1 for the categorical ones), and total_weight is what
 * the batch weighs: these B rows' batch_weight, or the weight of a batch of which these
 * rows are a part (loss_share; sample weights may be negative, and so may their sum). */
static double FN(mean_loss)(FN(row_loss_fn) row_loss, int elementwise, real *grad,
                            const real *pred, const real *y, int y_stride,
                            const real *weights, int B, int K, int per_row_terms,
                            int from_logits, double total_weight, int nthreads)
{
    if (B <= 0 || K <= 0) return 0;
    if (total_weight == 0 || isnan(total_weight)) {
        if (grad) memset(grad, 0, sizeof(real) * (size_t)B * (size_t)K);
        return NAN;
    }
    double norm = total_weight * per_row_terms;
    return FN(batch_loss)(row_loss, elementwise, grad, pred, y, y_stride, weights, B, K,
                          from_logits, 1.0 / norm, nthreads) / norm;
}

/* e^x for x <= 0: the polynomials of activations.h (no library call; about 1e-7 relative
 * in float, 1 ulp in double). */
#if FASTNN_DOUBLE
#define EXP_NONPOSITIVE exp_nonpositive_f64
#else
#define EXP_NONPOSITIVE exp_nonpositive_f32
#endif

static real FN(clip_prob)(real p)
{
    const real lo = (real)PROB_EPS, hi = (real)1 - (real)PROB_EPS;
    return p < lo ? lo : (p > hi ? hi : p);
}

/* log(1 + e) for e in [0, 1]: the polynomial of activations.h in float, the library's
 * log1p in double. */
#if FASTNN_DOUBLE
#define LOG1P_UNIT log1p
#else
#define LOG1P_UNIT log1p_unit_f32
#endif

/* Binary cross-entropy of logits z against targets t over K values:
 *   -t log sig(z) - (1-t) log(1-sig(z)) = max(z,0) - z t + log(1 + e^-|z|),
 * sig(z) = 1 / (1 + e^-|z|) for z >= 0 and e^-|z| / (1 + e^-|z|) below, so one
 * exponential serves the loss and the gradient. The values go through a buffer in
 * pieces: the loop that computes them vectorizes, the double sum keeps its order. */
FASTNN_VECTORIZED
static double FN(bce_logits)(real *g, const real *p, const real *y, int K, real gscale,
                             int clip)
{
    real term[256];
    double s = 0;
    for (int j0 = 0; j0 < K; j0 += 256) {
        int n = K - j0 < 256 ? K - j0 : 256;
        const real *z = p + j0, *t = y + j0;
        if (g) {
            real *gj = g + j0;
            for (int j = 0; j < n; j++) {
                real e = EXP_NONPOSITIVE(-FABS(z[j]));
                real inv = (real)1 / ((real)1 + e);
                term[j] = (z[j] > 0 ? z[j] : (real)0) - z[j] * t[j] + LOG1P_UNIT(e);
                gj[j] = ((z[j] >= 0 ? inv : e * inv) - t[j]) * gscale;
            }
        } else {
            for (int j = 0; j < n; j++) {
                real e = EXP_NONPOSITIVE(-FABS(z[j]));
                term[j] = (z[j] > 0 ? z[j] : (real)0) - z[j] * t[j] + LOG1P_UNIT(e);
            }
        }
        if (clip)
            for (int j = 0; j < n; j++) s += FN(clip_term)((double)term[j]);
        else
            for (int j = 0; j < n; j++) s += (double)term[j];
    }
    return s;
}

static double FN(bce_row)(real *g, const real *p, const real *y, int K, int from_logits,
                          real gscale)
{
    if (from_logits)
        return FN(bce_logits)(g, p, y, K, gscale, from_logits & LOSS_CLIP_PROBABILITIES);
    double s = 0;
    for (int j = 0; j < K; j++) {
        real t = y[j];
        real pc = FN(clip_prob)(p[j]);
        s += -(double)(t * LOG(pc) + ((real)1 - t) * LOG((real)1 - pc));
        if (g) g[j] = (pc == p[j]) ? (pc - t) / (pc * ((real)1 - pc)) * gscale : (real)0;
    }
    return s;
}

double FN(binary_crossentropy_loss)(real *grad, const real *pred, const real *y,
                                    const real *weights, int B, int K, int from_logits,
                                    int nthreads)
{
    return FN(mean_loss)(FN(bce_row), 1, grad, pred, y, K, weights, B, K, K, from_logits,
                         FN(batch_weight)(weights, B), nthreads);
}

static double FN(mse_row)(real *g, const real *p, const real *y, int K, int from_logits,
                          real gscale)
{
    (void)from_logits;
    double s = 0;
    for (int j = 0; j < K; j++) {
        real d = p[j] - y[j];
        s += (double)d * (double)d; /* squared in double: finite for any finite float d */
        if (g) g[j] = (real)2 * d * gscale; /* d/dp (p - y)^2 */
    }
    return s;
}

double FN(mean_squared_error_loss)(real *grad, const real *pred, const real *y,
                                   const real *weights, int B, int K, int nthreads)
{
    return FN(mean_loss)(FN(mse_row), 1, grad, pred, y, K, weights, B, K, K, 0,
                         FN(batch_weight)(weights, B), nthreads);
}

/* log sum_j e^z_j, max-subtracted so it is finite for any logits. Also returns the sum
 * of e^(z_j - max), and writes those terms to e when it is not NULL (the softmax that
 * the gradient needs). */
static real FN(log_sum_exp)(const real *z, int K, real *e, real *sum_out)
{
#if !FASTNN_DOUBLE
    if (K <= 16 && softmax_row16_available()) {
        float terms[16], zmax;
        float sum = softmax_row16_f32(e ? e : terms, z, K, &zmax);
        *sum_out = sum;
        return zmax + LOG(sum);
    }
#endif
    real zmax = z[0];
    for (int j = 1; j < K; j++) {
        if (z[j] > zmax) zmax = z[j];
    }
    real sum = 0;
    for (int j = 0; j < K; j++) {
        real ej = EXP_NONPOSITIVE(z[j] - zmax);
        if (e) e[j] = ej;
        sum += ej;
    }
    *sum_out = sum;
    return zmax + LOG(sum);
}

/* A stored class id as an index, or -1 when it is not one of 0..K-1. */
static int FN(class_index)(real label, int K)
{
    if (!(label >= 0 && label < (real)K)) return -1; /* also catches NaN */
    int c = (int)label;
    return ((real)c == label) ? c : -1;
}

static double FN(sparse_ce_row)(real *g, const real *p, const real *y, int K,
                                int from_logits, real gscale)
{
    int c = FN(class_index)(y[0], K);
    if (c < 0) {
        if (g) for (int j = 0; j < K; j++) g[j] = 0;
        return NAN;
    }
    if (from_logits) {
        /* -log softmax(z)_c = logsumexp(z) - z_c;  d/dz_j = softmax(z)_j - [j == c] */
        real sum;
        real lse = FN(log_sum_exp)(p, K, g, &sum);
        if (g) { /* g holds e^(z_j - max) */
            real inv = (real)1 / sum;
            for (int j = 0; j < K; j++) g[j] = g[j] * inv * gscale;
            g[c] -= gscale;
        }
        double loss = (double)lse - (double)p[c]; /* in double: finite for any float logits */
        return (from_logits & LOSS_CLIP_PROBABILITIES) ? FN(clip_term)(loss) : loss;
    }
    /* Keras: q = p / sum(p), loss -log clip(q_c);  d/dp_j = 1/sum - [j == c] / p_c */
    real sum = 0;
    for (int j = 0; j < K; j++) sum += p[j];
    real q = p[c] / sum, qc = FN(clip_prob)(q);
    if (g) {
        int live = (qc == q);
        for (int j = 0; j < K; j++) g[j] = live ? gscale / sum : (real)0;
        if (live) g[c] -= gscale / p[c];
    }
    return -(double)LOG(qc);
}

double FN(sparse_categorical_crossentropy_loss)(real *grad, const real *pred,
                                                const real *labels, const real *weights,
                                                int B, int K, int from_logits, int nthreads)
{
    return FN(mean_loss)(FN(sparse_ce_row), 0, grad, pred, labels, 1, weights, B, K, 1,
                         from_logits, FN(batch_weight)(weights, B), nthreads);
}

static double FN(ce_row)(real *g, const real *p, const real *y, int K, int from_logits,
                         real gscale)
{
    int clip = from_logits & LOSS_CLIP_PROBABILITIES;
#if FASTNN_SIMD16 && !FASTNN_DOUBLE
    if (from_logits && !clip && K <= 16 && softmax_row16_available())
        return ce_logits_row16_f32(g, p, y, K, gscale);
#endif
    if (from_logits) {
        /* sum_j y_j (logsumexp(z) - z_j);  d/dz_j = softmax(z)_j sum(y) - y_j */
        real sum;
        real lse = FN(log_sum_exp)(p, K, g, &sum); /* g: e^(z_j - max) */
        real ysum = 0;
        double loss = 0; /* in double: finite for any float logits */
        for (int j = 0; j < K; j++) {
            ysum += y[j];
            double term = (double)lse - (double)p[j];
            loss += (double)y[j] * (clip ? FN(clip_term)(term) : term);
        }
        if (g) {
            real inv = (real)1 / sum;
            for (int j = 0; j < K; j++) g[j] = (g[j] * inv * ysum - y[j]) * gscale;
        }
        return loss;
    }
    /* Keras: q = p / sum(p), loss -sum_j y_j log clip(q_j);
     * d/dp_k = -y_k / p_k [q_k unclipped] + (sum_j y_j [q_j unclipped]) / sum(p) */
    real sum = 0;
    for (int j = 0; j < K; j++) sum += p[j];
    double loss = 0;
    real live_ysum = 0;
    for (int j = 0; j < K; j++) {
        real q = p[j] / sum, qc = FN(clip_prob)(q);
        loss -= (double)(y[j] * LOG(qc));
        if (qc == q) live_ysum += y[j];
    }
    if (g) {
        for (int j = 0; j < K; j++) {
            real q = p[j] / sum;
            real own = (FN(clip_prob)(q) == q) ? y[j] / p[j] : (real)0;
            g[j] = (live_ysum / sum - own) * gscale;
        }
    }
    return loss;
}

double FN(categorical_crossentropy_loss)(real *grad, const real *pred, const real *y,
                                         const real *weights, int B, int K, int from_logits,
                                         int nthreads)
{
    return FN(mean_loss)(FN(ce_row), 0, grad, pred, y, K, weights, B, K, 1, from_logits,
                         FN(batch_weight)(weights, B), nthreads);
}

double FN(loss_share)(int loss, real *grad, const real *pred, const real *y,
                      const real *weights, int B, int K, int from_logits,
                      double batch_weight, int nthreads)
{
    switch (loss) {
    case LOSS_BINARY_CROSSENTROPY:
        return FN(mean_loss)(FN(bce_row), 1, grad, pred, y, K, weights, B, K, K, from_logits,
                             batch_weight, nthreads);
    case LOSS_MEAN_SQUARED_ERROR:
        return FN(mean_loss)(FN(mse_row), 1, grad, pred, y, K, weights, B, K, K, 0,
                             batch_weight, nthreads);
    case LOSS_SPARSE_CATEGORICAL_CROSSENTROPY:
        return FN(mean_loss)(FN(sparse_ce_row), 0, grad, pred, y, 1, weights, B, K, 1,
                             from_logits, batch_weight, nthreads);
    case LOSS_CATEGORICAL_CROSSENTROPY:
        return FN(mean_loss)(FN(ce_row), 0, grad, pred, y, K, weights, B, K, 1, from_logits,
                             batch_weight, nthreads);
    default:
        return NAN;
    }
}

double FN(loss)(int loss, real *grad, const real *pred, const real *y, const real *weights,
                int B, int K, int from_logits, int nthreads)
{
    return FN(loss_share)(loss, grad, pred, y, weights, B, K, from_logits,
                          FN(batch_weight)(weights, B), nthreads);
}

static int FN(argmax)(const real *v, int K)
{
    int best = 0;
    for (int j = 1; j < K; j++) {
        if (v[j] > v[best]) best = j;
    }
    return best;
}

double FN(metric_sum)(int metric, const real *pred, const real *y, const real *weights,
                      int B, int K, int from_logits)
{
    double total = 0;
    for (ptrdiff_t r = 0; r < B; r++) {
        const real *p = pred + r * K;
        double v = 0;
        switch (metric) {
        case METRIC_BINARY_ACCURACY: {
            const real *t = y + r * K;
            real threshold = from_logits ? (real)0 : (real)0.5;
            for (int j = 0; j < K; j++) v += (t[j] == (p[j] > threshold ? (real)1 : (real)0));
            v /= K;
            break;
        }
        case METRIC_SPARSE_CATEGORICAL_ACCURACY:
            v = (FN(class_index)(y[r], K) == FN(argmax)(p, K));
            break;
        case METRIC_CATEGORICAL_ACCURACY:
            v = (FN(argmax)(y + r * K, K) == FN(argmax)(p, K));
            break;
        case METRIC_MEAN_ABSOLUTE_ERROR:
            for (int j = 0; j < K; j++) v += FABS(p[j] - y[r * K + j]);
            v /= K;
            break;
        case METRIC_MEAN_SQUARED_ERROR:
            for (int j = 0; j < K; j++) {
                real d = p[j] - y[r * K + j];
                v += (double)(d * d);
            }
            v /= K;
            break;
        default:
            return NAN;
        }
        total += weights ? (double)weights[r] * v : v;
    }
    return total;
}

#undef EXP_NONPOSITIVE
#undef LOG1P_UNIT
#endif /* FASTNN_TEMPLATE */
