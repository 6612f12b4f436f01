/* gemm.c: see gemm.h. Written once for `real`, compiled for float and double by
 * including itself (real_begin.h explains the pattern). */
#ifndef FASTNN_TEMPLATE
#define FASTNN_TEMPLATE
#include <stdlib.h>
#include <string.h>
#include "gemm.h"

/* The small-product kernel needs GCC or clang on x86-64 (AVX-512 intrinsics in functions
 * compiled for that target only, picked at run time); elsewhere everything goes to BLAS. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) \
    && !defined(FASTNN_NO_SMALL_GEMM)
#define FASTNN_SMALL_GEMM 1
#include "simd16.h"
#define SMALL_TARGET __attribute__((target("avx512f")))
#define SMALL_INLINE static inline __attribute__((always_inline)) SMALL_TARGET
#else
#define FASTNN_SMALL_GEMM 0
#endif

int gemm_small_available(void)
{
#if FASTNN_SMALL_GEMM
    /* A fact about the CPU and the environment, cached at first use (the Cython module
     * calls this at import, before any thread can). FASTNN_SMALL_GEMM=0 sends every
     * product to BLAS, e.g. to test that path on an AVX-512 machine. */
    static int available = -1;
    if (available < 0) {
        const char *env = getenv("FASTNN_SMALL_GEMM");
        __builtin_cpu_init();
        available = __builtin_cpu_supports("avx512f") && !(env && strcmp(env, "0") == 0);
    }
    return available;
#else
    return 0;
#endif
}

/* Panel count, from the sizes only. A fork/join costs about a microsecond, but the
 * worker threads also keep spinning between forks, and on cores that share execution
 * resources (SMT siblings, virtual CPUs) that spinning slows the serial work around the
 * product: training small networks (hundreds of rows, a few MFLOP per product) measured
 * slower on two threads than on one. So a product is split only when it is large (8
 * MFLOP, ~80 us on one core), or long and medium-sized (256 rows and 1 MFLOP: the
 * convolutions' im2col products); then into an even count of panels, so two threads
 * split evenly, more for larger products. BLAS panels need at least 32 rows each. */
static int gemm_panels(int rows, double flops, int small)
{
    int min_rows = small ? 16 : 32;
    int worth_it = flops >= 8e6 || (flops >= 1e6 && rows >= 256);
    if (!worth_it || rows < 2 * min_rows) return 1;
    int pairs = flops < 64e6 ? 1 : (flops < 256e6 ? 2 : 4);
    if (pairs > rows / (2 * min_rows)) pairs = rows / (2 * min_rows);
    return 2 * pairs;
}

int gemm_dot_pays(int N, int K)
{
    /* k fills the 16 float lanes (at least 64 of it, 90% of the lanes) and the N output
     * columns fill them clearly worse */
    if (K < 64 || N < 1) return 0;
    double over_k = (double)K / ((K + 15) / 16 * 16);
    double over_n = (double)N / ((N + 15) / 16 * 16);
    return over_k >= 0.9 && over_n < 0.85 * over_k;
}

/* The kernel packs b^T in column blocks into a stack buffer of this many bytes. */
#define SMALL_PACK_BYTES 32768

#define FASTNN_DOUBLE 0
#include "real_begin.h"
#include "gemm.c"
#include "real_end.h"
#define FASTNN_DOUBLE 1
#include "real_begin.h"
#include "gemm.c"
#include "real_end.h"
#undef FASTNN_TEMPLATE
#else

/* ---- BLAS path ------------------------------------------------------------------------ */

/* Rows [r0, r1) of the product by one call of the column-major BLAS: a row-major matrix
 * is the column-major transpose, so it computes out^T = op(b)^T op(a)^T. */
static void FN(blas_rows)(real *out, int ldo, const real *a, int lda, int a_trans,
                          const real *b, int ldb, int b_trans, int r0, int r1, int N, int K,
                          gemm_fn blas)
{
    int rows = r1 - r0;
    if (rows <= 0 || N <= 0) return;
    real one = 1, zero = 0;
    char tb = b_trans ? 'T' : 'N', ta = a_trans ? 'T' : 'N';
    int n_ = N, k_ = K, ldb_ = ldb, lda_ = lda, ldo_ = ldo;
    const real *ap = a_trans ? a + r0 : a + (ptrdiff_t)r0 * lda;
    blas(&tb, &ta, &n_, &rows, &k_, &one, (real *)b, &ldb_, (real *)ap, &lda_, &zero,
         out + (ptrdiff_t)r0 * ldo, &ldo_);
}

/* What gemm_bias_act does to a tile before storing it: add bias (per output column, may
 * be NULL), store z, then store act_out = f(z) (rows ldo apart; may equal z) for f linear,
 * relu or leaky relu. Or, when adam_w is set (gemm_adam), store the tile and take it as
 * the gradient of parameters laid out as the output (adam_w, their Adam moments adam_m
 * and adam_v): Adam's update of those parameters, while the tile is in registers. */
typedef struct {
    const real *bias;
    real *act_out;
    int act;
    real slope;
    real *adam_w, *adam_m, *adam_v;
    real lr_t, one_minus_b1, one_minus_b2, eps;
} FN(epilogue);

/* ep for the block of output columns that starts at column j0. */
static FN(epilogue) FN(epilogue_at)(const FN(epilogue) *ep, int j0)
{
    FN(epilogue) at = *ep;
    if (at.bias) at.bias += j0;
    if (at.act_out) at.act_out += j0;
    if (at.adam_w) {
        at.adam_w += j0;
        at.adam_m += j0;
        at.adam_v += j0;
    }
    return at;
}

/* ---- the small-product kernel --------------------------------------------------------- */
#if FASTNN_SMALL_GEMM

#if FASTNN_DOUBLE
#define VEC __m512d
#define VLEN 8
#define VMASK __mmask8
#define VZERO() _mm512_setzero_pd()
#define VLOAD(p) _mm512_loadu_pd(p)
#define VLOAD_MASKED(m, p) _mm512_maskz_loadu_pd((m), (p))
#define VSET1(x) _mm512_set1_pd(x)
#define VFMA(a, b, c) _mm512_fmadd_pd((a), (b), (c))
#define VSTORE(p, v) _mm512_storeu_pd((p), (v))
#define VSTORE_MASKED(p, m, v) _mm512_mask_storeu_pd((p), (m), (v))
#define VADD(a, b) _mm512_add_pd((a), (b))
#define VMUL(a, b) _mm512_mul_pd((a), (b))
#define VMAX(a, b) _mm512_max_pd((a), (b))
#define VGT(a, b) _mm512_cmp_pd_mask((a), (b), _CMP_GT_OQ)
#define VBLEND(m, a, b) _mm512_mask_blend_pd((m), (a), (b)) /* b where m, else a */
#define VSUB(a, b) _mm512_sub_pd((a), (b))
#define VDIV(a, b) _mm512_div_pd((a), (b))
#define VSQRT(a) _mm512_sqrt_pd(a)
#else
#define VEC __m512
#define VLEN 16
#define VMASK __mmask16
#define VZERO() _mm512_setzero_ps()
#define VLOAD(p) _mm512_loadu_ps(p)
#define VLOAD_MASKED(m, p) _mm512_maskz_loadu_ps((m), (p))
#define VSET1(x) _mm512_set1_ps(x)
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VSTORE_MASKED(p, m, v) _mm512_mask_storeu_ps((p), (m), (v))
#define VADD(a, b) _mm512_add_ps((a), (b))
#define VMUL(a, b) _mm512_mul_ps((a), (b))
#define VMAX(a, b) _mm512_max_ps((a), (b))
#define VGT(a, b) _mm512_cmp_ps_mask((a), (b), _CMP_GT_OQ)
#define VBLEND(m, a, b) _mm512_mask_blend_ps((m), (a), (b)) /* b where m, else a */
#define VSUB(a, b) _mm512_sub_ps((a), (b))
#define VDIV(a, b) _mm512_div_ps((a), (b))
#define VSQRT(a) _mm512_sqrt_ps(a)
#endif

/* gemm_adam's epilogue (kept out of small_tile, whose registers its accumulators fill):
 * asks the cache for a tile's parameters and moments, rows ldo apart, which no
 * prefetcher guesses (asked for before k runs, they arrive meanwhile); then applies
 * optimizers.c's adam_range to the tile's elements, the tile's values as their gradient,
 * the same operations in the same order (no fused multiply-adds), so the same bits. */
SMALL_TARGET __attribute__((noinline)) static void
FN(adam_tile_prefetch)(const FN(epilogue) *ep, ptrdiff_t offset, int ldo, int MR, int NV)
{
    for (int r = 0; r < MR; r++) {
        ptrdiff_t o = offset + (ptrdiff_t)r * ldo;
        for (int v = 0; v < NV; v++) {
            __builtin_prefetch(ep->adam_w + o + v * VLEN, 1, 3);
            __builtin_prefetch(ep->adam_m + o + v * VLEN, 1, 3);
            __builtin_prefetch(ep->adam_v + o + v * VLEN, 1, 3);
        }
    }
}

SMALL_TARGET __attribute__((noinline)) static void
FN(adam_tile)(const real *out, const FN(epilogue) *ep, ptrdiff_t offset, int ldo, int MR,
              int NV, VMASK last)
{
    VEC b1 = VSET1(ep->one_minus_b1), b2 = VSET1(ep->one_minus_b2);
    VEC lr = VSET1(ep->lr_t), eps = VSET1(ep->eps);
    for (int r = 0; r < MR; r++) {
        ptrdiff_t o = offset + (ptrdiff_t)r * ldo;
        for (int v = 0; v < NV; v++) {
            real *w = ep->adam_w + o + v * VLEN, *m = ep->adam_m + o + v * VLEN,
                 *s = ep->adam_v + o + v * VLEN;
            VMASK lanes = v == NV - 1 ? last : (VMASK)~(VMASK)0;
            VEC g = VLOAD_MASKED(lanes, out + (ptrdiff_t)r * ldo + v * VLEN);
            VEC mv = VLOAD_MASKED(lanes, m), sv = VLOAD_MASKED(lanes, s);
            mv = VADD(mv, VMUL(VSUB(g, mv), b1));
            sv = VADD(sv, VMUL(VSUB(VMUL(g, g), sv), b2));
            VEC step = VDIV(VMUL(lr, mv), VADD(VSQRT(sv), eps));
            VSTORE_MASKED(m, lanes, mv);
            VSTORE_MASKED(s, lanes, sv);
            VSTORE_MASKED(w, lanes, VSUB(VLOAD_MASKED(lanes, w), step));
        }
    }
}

/* One tile: MR rows by NV vectors of columns (the last vector masked to `last`), held in
 * registers while k runs over the whole inner dimension; op(a)[r, k] is
 * a[r * a_rs + k * a_ks]. MR and NV are constants at every call, so the loops unroll
 * and the accumulators stay in registers. Each output is one FMA chain over k in order,
 * whatever the tile, so the result never depends on how rows were cut. */
SMALL_INLINE void FN(small_tile)(real *out, int ldo, const real *a, ptrdiff_t a_rs,
                                 ptrdiff_t a_ks, const real *b, int ldb, int K, const int MR,
                                 const int NV, VMASK last, const FN(epilogue) *ep,
                                 ptrdiff_t ep_offset)
{
    VEC acc[12][4];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = VZERO();
    if (ep && ep->adam_w) FN(adam_tile_prefetch)(ep, ep_offset, ldo, MR, NV);
    for (int k = 0; k < K; k++) {
        const real *bk = b + (ptrdiff_t)k * ldb;
        const real *ak = a + (ptrdiff_t)k * a_ks;
        VEC bv[4];
        for (int v = 0; v < NV - 1; v++) bv[v] = VLOAD(bk + v * VLEN);
        bv[NV - 1] = VLOAD_MASKED(last, bk + (NV - 1) * VLEN);
        for (int r = 0; r < MR; r++) {
            VEC av = VSET1(ak[r * a_rs]);
            for (int v = 0; v < NV; v++) acc[r][v] = VFMA(av, bv[v], acc[r][v]);
        }
    }
    if (ep && !ep->adam_w) { /* z = acc + bias, stored; then a = f(z), stored (see gemm_bias_act);
                      * the tile's rows of a start at ep->act_out + ep_offset */
        if (ep->bias) {
            VEC bias[4];
            for (int v = 0; v < NV - 1; v++) bias[v] = VLOAD(ep->bias + v * VLEN);
            bias[NV - 1] = VLOAD_MASKED(last, ep->bias + (NV - 1) * VLEN);
            for (int r = 0; r < MR; r++)
                for (int v = 0; v < NV; v++) acc[r][v] = VADD(acc[r][v], bias[v]);
        }
        real *act_out = ep->act_out + ep_offset;
        if (act_out != out) {
            for (int r = 0; r < MR; r++) {
                real *o = out + (ptrdiff_t)r * ldo;
                for (int v = 0; v < NV - 1; v++) VSTORE(o + v * VLEN, acc[r][v]);
                VSTORE_MASKED(o + (NV - 1) * VLEN, last, acc[r][NV - 1]);
            }
            out = act_out;
        }
        if (ep->act != ACT_LINEAR) {
            /* relu: max(z, 0) gives 0 for NaN as z > 0 ? z : 0 does; leaky: the same
             * comparison picks z or slope z */
            VEC zero = VZERO(), slope = VSET1(ep->slope);
            for (int r = 0; r < MR; r++)
                for (int v = 0; v < NV; v++) {
                    if (ep->act == ACT_RELU) acc[r][v] = VMAX(acc[r][v], zero);
                    else acc[r][v] = VBLEND(VGT(acc[r][v], zero), VMUL(acc[r][v], slope),
                                            acc[r][v]);
                }
        }
    }
    for (int r = 0; r < MR; r++) {
        real *o = out + (ptrdiff_t)r * ldo;
        for (int v = 0; v < NV - 1; v++) VSTORE(o + v * VLEN, acc[r][v]);
        VSTORE_MASKED(o + (NV - 1) * VLEN, last, acc[r][NV - 1]);
    }
    /* the stored tile, just written, read back as the gradient (the accumulators stay
     * in registers: handing them to a call would put them in memory for the whole
     * product) */
    if (ep && ep->adam_w) FN(adam_tile)(out, ep, ep_offset, ldo, MR, NV, last);
}

/* Rows [i0, i1) of one block of NV vector columns (out_j, b_j: the block's first column):
 * tiles of MR rows (as many as the registers hold: MR * NV accumulators, NV b vectors and
 * one broadcast within 32), then tiles of 4 and 1 for the rest. */
#define SMALL_TILE(MR_, NV_)                                                               \
    FN(small_tile)(out_j + (ptrdiff_t)i * ldo, ldo, a + i * a_rs, a_rs, a_ks, b_j, ldb, K,   \
                   (MR_), (NV_), last, ep ? &ep_j : NULL, (ptrdiff_t)i * ldo)
#define SMALL_ROWS(NV, MR)                                                                 \
    do {                                                                                   \
        for (; i + (MR) <= i1; i += (MR)) SMALL_TILE(MR, NV);                              \
        for (; i + 4 <= i1; i += 4) SMALL_TILE(4, NV);                                     \
        for (; i < i1; i++) SMALL_TILE(1, NV);                                             \
    } while (0)

/* Rows [i0, i1) of out (N columns) = op(a) b with b row-major (rows ldb apart), in
 * blocks of up to 4 vectors of columns. */
SMALL_TARGET static void FN(small_rows)(real *out, int ldo, const real *a, ptrdiff_t a_rs,
                                         ptrdiff_t a_ks, const real *b, int ldb, int i0,
                                         int i1, int N, int K, const FN(epilogue) *ep)
{
    for (int j0 = 0; j0 < N; j0 += 4 * VLEN) {
        int cols = N - j0 < 4 * VLEN ? N - j0 : 4 * VLEN;
        int nv = (cols + VLEN - 1) / VLEN;
        VMASK last = (VMASK)((1u << (cols - (nv - 1) * VLEN)) - 1u);
        real *out_j = out + j0;
        const real *b_j = b + j0;
        FN(epilogue) ep_j; /* ep for this block of columns, rows at i */
        if (ep) ep_j = FN(epilogue_at)(ep, j0);
        int i = i0;
        switch (nv) {
        case 1: SMALL_ROWS(1, 12); break;
        case 2: SMALL_ROWS(2, 12); break;
        case 3: SMALL_ROWS(3, 8); break;
        default: SMALL_ROWS(4, 6); break;
        }
    }
}
#undef SMALL_ROWS
#undef SMALL_TILE

#if !FASTNN_DOUBLE
/* out (M x N) = a^T b, for a (K x M) and b (K x N) row-major, computed as its transpose
 * t = b^T a (N x M) and then transposed: the kernel vectorizes over t's M columns instead
 * of out's N, which fills its vectors where N is a poor fit (the weight gradient x^T dz
 * of a layer of 25 units fills 25 of 32 lanes; over its 400 inputs, all). Each t[j][i]
 * is the FMA chain over k of b[k][j] a[k][i], the products and additions of out[i][j]
 * in small_rows, so the result has the same bits. t lives on the stack (FLIP_BYTES),
 * and is transposed in blocks of 16 x 16. */
#define FLIP_BYTES 65536
SMALL_TARGET static void small_flipped_f32(float *out, int ldo, const float *a, int lda,
                                           const float *b, int ldb, int M, int N, int K)
{
    int ldt = (M + 15) / 16 * 16;
    float t[FLIP_BYTES / sizeof(float)] __attribute__((aligned(64)));
    small_rows_f32(t, ldt, b, 1, ldb, a, lda, 0, N, M, K, NULL);
    for (int jb = 0; jb < N; jb += 16) {
        int rows = N - jb < 16 ? N - jb : 16;
        __mmask16 lanes = (__mmask16)((1u << rows) - 1u);
        for (int ib = 0; ib < M; ib += 16) {
            __m512 r[16];
            for (int j = 0; j < 16; j++)
                r[j] = j < rows ? _mm512_load_ps(t + (ptrdiff_t)(jb + j) * ldt + ib)
                                : _mm512_setzero_ps();
            transpose_16x16_f32(r);
            int cols = M - ib < 16 ? M - ib : 16;
            for (int i = 0; i < cols; i++)
                _mm512_mask_storeu_ps(out + (ptrdiff_t)(ib + i) * ldo + jb, lanes, r[i]);
        }
    }
}

/* The sums of the lanes of a, b, c, d, in lanes 0-3 (each sum added in a fixed order). */
SMALL_INLINE __m128 sum4_f32(__m512 a, __m512 b, __m512 c, __m512 d)
{
#define HALVES(v)                                   \
    _mm256_add_ps(_mm512_castps512_ps256(v),        \
                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
    __m256 ab = _mm256_hadd_ps(HALVES(a), HALVES(b));
    __m256 cd = _mm256_hadd_ps(HALVES(c), HALVES(d));
#undef HALVES
    __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* One tile of the dot-product form: MR rows of a by NC rows of b (MR, NC <= 4), each
 * output the sum over k of a[r][k] b[c][k], accumulated in 16 lanes (lane l takes k = l
 * mod 16) and then summed across the lanes. */
SMALL_INLINE void dot_tile_f32(float *out, int ldo, const float *a, int lda, const float *b,
                               int ldb, int K, const int MR, const int NC)
{
    __m512 acc[4][4];
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < NC; c++) acc[r][c] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 av[4], bv[4];
        for (int r = 0; r < MR; r++) av[r] = _mm512_loadu_ps(a + (ptrdiff_t)r * lda + k);
        for (int c = 0; c < NC; c++) bv[c] = _mm512_loadu_ps(b + (ptrdiff_t)c * ldb + k);
        for (int r = 0; r < MR; r++)
            for (int c = 0; c < NC; c++) acc[r][c] = _mm512_fmadd_ps(av[r], bv[c], acc[r][c]);
    }
    if (k < K) {
        __mmask16 tail = (__mmask16)((1u << (K - k)) - 1u);
        __m512 av[4], bv[4];
        for (int r = 0; r < MR; r++)
            av[r] = _mm512_maskz_loadu_ps(tail, a + (ptrdiff_t)r * lda + k);
        for (int c = 0; c < NC; c++)
            bv[c] = _mm512_maskz_loadu_ps(tail, b + (ptrdiff_t)c * ldb + k);
        for (int r = 0; r < MR; r++)
            for (int c = 0; c < NC; c++) acc[r][c] = _mm512_fmadd_ps(av[r], bv[c], acc[r][c]);
    }
    for (int r = 0; r < MR; r++) {
        __m512 zero = _mm512_setzero_ps();
        __m128 sums = sum4_f32(acc[r][0], NC > 1 ? acc[r][1] : zero, NC > 2 ? acc[r][2] : zero,
                               NC > 3 ? acc[r][3] : zero);
        if (NC == 4) {
            _mm_storeu_ps(out + (ptrdiff_t)r * ldo, sums);
        } else {
            float lanes[4];
            _mm_storeu_ps(lanes, sums);
            for (int c = 0; c < NC; c++) out[(ptrdiff_t)r * ldo + c] = lanes[c];
        }
    }
}

/* Rows [i0, i1) of out (N columns) = a b^T, a (M x K) and b (N x K) row-major: every
 * output a dot product over the contiguous k of a row of a and a row of b. Where N fills
 * the vectors of small_rows poorly and K fills them well (the forward product of a layer
 * of 25 units over 400 inputs whose kernel is stored as units x inputs), this wastes no
 * lanes; summing across the lanes costs a few operations per output. */
/* MR rows of out = a b^T (rows of a and out at a and out), all N columns, in tiles of 4. */
SMALL_INLINE void dot_rows_f32(float *out, int ldo, const float *a, int lda, const float *b,
                               int ldb, int N, int K, const int MR)
{
    int j = 0;
    for (; j + 4 <= N; j += 4)
        dot_tile_f32(out + j, ldo, a, lda, b + (ptrdiff_t)j * ldb, ldb, K, MR, 4);
    for (; j < N; j++) dot_tile_f32(out + j, ldo, a, lda, b + (ptrdiff_t)j * ldb, ldb, K, MR, 1);
}

SMALL_TARGET static void small_dot_rows_f32(float *out, int ldo, const float *a, int lda,
                                            const float *b, int ldb, int i0, int i1, int N,
                                            int K)
{
    int i = i0;
    for (; i + 4 <= i1; i += 4)
        dot_rows_f32(out + (ptrdiff_t)i * ldo, ldo, a + (ptrdiff_t)i * lda, lda, b, ldb, N, K, 4);
    for (; i < i1; i++)
        dot_rows_f32(out + (ptrdiff_t)i * ldo, ldo, a + (ptrdiff_t)i * lda, lda, b, ldb, N, K, 1);
}
#endif

/* Rows [r0, r1) of the product by the kernel. b^T is first packed, a block of columns at
 * a time, into a row-major buffer on the stack. */
static void FN(small_product_rows)(real *out, int ldo, const real *a, int lda, int a_trans,
                                   const real *b, int ldb, int b_trans, int r0, int r1, int N,
                                   int K, const FN(epilogue) *ep)
{
    if (r1 <= r0 || N <= 0) return;
    ptrdiff_t a_rs = a_trans ? 1 : lda, a_ks = a_trans ? lda : 1;
    if (!b_trans) {
        FN(small_rows)(out, ldo, a, a_rs, a_ks, b, ldb, r0, r1, N, K, ep);
        return;
    }
    real packed[SMALL_PACK_BYTES / sizeof(real)];
    int block = (int)(SMALL_PACK_BYTES / sizeof(real)) / (K > 0 ? K : 1) / VLEN * VLEN;
    for (int j0 = 0; j0 < N; j0 += block) {
        int cols = N - j0 < block ? N - j0 : block;
        for (int j = 0; j < cols; j++) {
            const real *bj = b + (ptrdiff_t)(j0 + j) * ldb;
            for (int k = 0; k < K; k++) packed[(ptrdiff_t)k * block + j] = bj[k];
        }
        FN(epilogue) ep_j; /* the epilogue of this block of columns */
        if (ep) ep_j = FN(epilogue_at)(ep, j0);
        FN(small_rows)(out + j0, ldo, a, a_rs, a_ks, packed, block, r0, r1, cols, K,
                       ep ? &ep_j : NULL);
    }
}

#undef VEC
#undef VLEN
#undef VMASK
#undef VZERO
#undef VLOAD
#undef VLOAD_MASKED
#undef VSET1
#undef VFMA
#undef VSTORE
#undef VSTORE_MASKED
#undef VBLEND
#undef VGT
#undef VMAX
#undef VMUL
#undef VADD
#undef VSUB
#undef VDIV
#undef VSQRT
#endif /* FASTNN_SMALL_GEMM */

/* ---- dispatch ------------------------------------------------------------------------- */

/* Whether the kernel can take the product (b^T must pack at least one vector of
 * columns) and, for GEMM_AUTO, whether it should. Measured on this project's shapes
 * (bench/kernels.py), the kernel matches or beats OpenBLAS's single-threaded sgemm
 * wherever a K x 64 block of b stays in the core's L2 cache (K up to ~2048) and the
 * output has at least 10 columns; it has no cache blocking over K, so longer inner
 * dimensions and huge products go to BLAS. */
static int FN(use_small)(int method, int a_trans, int b_trans, int M, int N, int K)
{
    if (method == GEMM_BLAS || !gemm_small_available()) return 0;
    const int vlen = 64 / (int)sizeof(real);
    const ptrdiff_t pack = (ptrdiff_t)(SMALL_PACK_BYTES / sizeof(real));
    if (b_trans && (ptrdiff_t)K * vlen > pack) return 0;
    if (method == GEMM_SMALL) return 1;
    /* It vectorizes over the output columns: below 5/8 of a vector of them (10 floats,
     * 5 doubles, e.g. a one-unit output layer) most lanes idle and BLAS is 2-4x faster. */
    if (N < vlen * 5 / 8) return 0;
#if FASTNN_DOUBLE
    /* Doubles: up to 4 vectors of columns OpenBLAS's dgemm matched or beat the kernel
     * by 10-40% wherever the last vector is partly filled (N = 10, a 10-class output
     * layer's weight gradient: 5.3 against 9.0 us at 200 x 100). Only for a^T b, a weight
     * gradient: a forward product's rows from OpenBLAS depend on how many rows it has,
     * and the kernel's do not (a sample's prediction is the same alone or in a batch);
     * and not for b^T, which OpenBLAS packs more slowly than the kernel. */
    if (a_trans && !b_trans && N <= 4 * vlen && N % vlen != 0) return 0;
#else
    (void)a_trans;
#endif
    return K <= 1024 && 2.0 * M * N * K <= 1e9;
}

/* The kernel's dot-product form (small_dot_rows), as the `small` argument of product_rows. */
#define SMALL_DOT 2

#if FASTNN_SMALL_GEMM && !FASTNN_DOUBLE
/* Whether out = a b^T (float) is better computed as dot products (small_dot_rows). */
static int dot_pays_f32(int a_trans, int b_trans, int N, int K)
{
    return !a_trans && b_trans && gemm_dot_pays(N, K);
}

#endif

#if FASTNN_SMALL_GEMM && !FASTNN_DOUBLE
/* Whether out = a^T b (float) is better computed flipped (small_flipped): when that fills
 * the kernel's vectors better over M than over N, the product is one panel (one that
 * splits over threads keeps its row panels), and its transpose fits FLIP_BYTES. */
static int flip_pays_f32(int a_trans, int b_trans, int M, int N, int K)
{
    if (!a_trans || b_trans || N < 2) return 0;
    int ldt = (M + 15) / 16 * 16;
    if ((size_t)ldt * (size_t)N * sizeof(float) > FLIP_BYTES) return 0;
    if (gemm_panels(M, 2.0 * M * N * K, 1) > 1) return 0;
    double direct = (double)N / ((N + 15) / 16 * 16);
    double flipped = (double)M / ldt;
    return flipped > 1.1 * direct;
}
#endif

/* Rows [r0, r1) of the product, by the kernel (with the epilogue ep, if any) or by one
 * BLAS call (never given an epilogue). */
static void FN(product_rows)(int small, real *out, int ldo, const real *a, int lda,
                             int a_trans, const real *b, int ldb, int b_trans, int r0, int r1,
                             int N, int K, gemm_fn blas, const FN(epilogue) *ep)
{
#if FASTNN_SMALL_GEMM
#if !FASTNN_DOUBLE
    if (small == SMALL_DOT) {
        small_dot_rows_f32(out, ldo, a, lda, b, ldb, r0, r1, N, K);
        return;
    }
#endif
    if (small) {
        FN(small_product_rows)(out, ldo, a, lda, a_trans, b, ldb, b_trans, r0, r1, N, K, ep);
        return;
    }
#else
    (void)small, (void)ep;
#endif
    FN(blas_rows)(out, ldo, a, lda, a_trans, b, ldb, b_trans, r0, r1, N, K, blas);
}

/* The product (M, N, K > 0) cut into row panels, each run by one thread. */
static void FN(product_panels)(int small, real *out, int ldo, const real *a, int lda,
                               int a_trans, const real *b, int ldb, int b_trans, int M, int N,
                               int K, gemm_fn blas, const FN(epilogue) *ep, int nthreads)
{
    int panels = gemm_panels(M, 2.0 * M * N * K, small);
    int nt = nthreads < panels ? nthreads : panels;
    if (nt <= 1) {
        unsigned int csr = fastnn_ftz_enter();
        for (int p = 0; p < panels; p++) {
            int r0 = (int)((long long)M * p / panels);
            int r1 = (int)((long long)M * (p + 1) / panels);
            FN(product_rows)(small, out, ldo, a, lda, a_trans, b, ldb, b_trans, r0, r1, N, K,
                             blas, ep);
        }
        fastnn_ftz_leave(csr);
        return;
    }
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int p = 0; p < panels; p++) {
        /* FTZ/DAZ in whichever thread runs the panel (OpenMP workers keep the mode of the
         * thread that created them), so every panel rounds subnormals alike. */
        unsigned int csr = fastnn_ftz_enter();
        int r0 = (int)((long long)M * p / panels), r1 = (int)((long long)M * (p + 1) / panels);
        FN(product_rows)(small, out, ldo, a, lda, a_trans, b, ldb, b_trans, r0, r1, N, K,
                         blas, ep);
        fastnn_ftz_leave(csr);
    }
}

void FN(gemm_method)(int method, real *out, int ldo, const real *a, int lda, int a_trans,
                     const real *b, int ldb, int b_trans, int M, int N, int K, gemm_fn blas,
                     int nthreads)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) out[(ptrdiff_t)i * ldo + j] = 0;
        return;
    }
    int small = FN(use_small)(method, a_trans, b_trans, M, N, K);
#if FASTNN_SMALL_GEMM && !FASTNN_DOUBLE
    if (method == GEMM_AUTO && gemm_small_available() && dot_pays_f32(a_trans, b_trans, N, K))
        small = SMALL_DOT;
    if (small == 1 && method == GEMM_AUTO && flip_pays_f32(a_trans, b_trans, M, N, K)) {
        unsigned int csr = fastnn_ftz_enter();
        small_flipped_f32(out, ldo, a, lda, b, ldb, M, N, K);
        fastnn_ftz_leave(csr);
        return;
    }
#endif
    FN(product_panels)(small, out, ldo, a, lda, a_trans, b, ldb, b_trans, M, N, K, blas, NULL,
                       nthreads);
}

int FN(gemm_by_kernel)(int a_trans, int b_trans, int M, int N, int K)
{
    if (M <= 0 || N <= 0 || K <= 0) return 0;
#if FASTNN_SMALL_GEMM && !FASTNN_DOUBLE
    if (gemm_small_available() && dot_pays_f32(a_trans, b_trans, N, K)) return 1;
#else
    (void)a_trans;
#endif
    return FN(use_small)(GEMM_AUTO, a_trans, b_trans, M, N, K);
}

void FN(gemm)(real *out, int ldo, const real *a, int lda, int a_trans, const real *b, int ldb,
              int b_trans, int M, int N, int K, gemm_fn blas, int nthreads)
{
    FN(gemm_method)(GEMM_AUTO, out, ldo, a, lda, a_trans, b, ldb, b_trans, M, N, K, blas,
                    nthreads);
}

int FN(gemm_bias_act)(real *z, real *act_out, int ldo, const real *a, int lda, int a_trans,
                      const real *b, int ldb, int b_trans, int M, int N, int K,
                      const real *bias, int act, real slope, int nthreads)
{
    if (M <= 0 || N <= 0 || K <= 0) return 0;
    if (act != ACT_LINEAR && act != ACT_RELU && act != ACT_LEAKY_RELU) return 0;
    if (!FN(use_small)(GEMM_AUTO, a_trans, b_trans, M, N, K)) return 0;
#if FASTNN_SMALL_GEMM && !FASTNN_DOUBLE
    if (dot_pays_f32(a_trans, b_trans, N, K)) return 0; /* gemm's dot products are faster */
#endif
    FN(epilogue) ep = {bias, act_out, act, slope, NULL, NULL, NULL, 0, 0, 0, 0};
    FN(product_panels)(1, z, ldo, a, lda, a_trans, b, ldb, b_trans, M, N, K, NULL, &ep,
                       nthreads);
    return 1;
}

int FN(gemm_adam)(real *out, int ldo, const real *a, int lda, int a_trans, const real *b,
                  int ldb, int b_trans, int M, int N, int K, real *w, real *m, real *v,
                  real lr_t, real beta1, real beta2, real eps, int nthreads)
{
    if (M <= 0 || N <= 0 || K <= 0) return 0;
    if (!FN(use_small)(GEMM_AUTO, a_trans, b_trans, M, N, K)) return 0;
#if FASTNN_SMALL_GEMM && !FASTNN_DOUBLE
    /* gemm would take these by another form of the kernel */
    if (dot_pays_f32(a_trans, b_trans, N, K) || flip_pays_f32(a_trans, b_trans, M, N, K))
        return 0;
#endif
    FN(epilogue) ep = {NULL, NULL, ACT_LINEAR, 0, w, m, v, lr_t, (real)1 - beta1,
                       (real)1 - beta2, eps};
    FN(product_panels)(1, out, ldo, a, lda, a_trans, b, ldb, b_trans, M, N, K, NULL, &ep,
                       nthreads);
    return 1;
}

int FN(gemm_column_sums)(real *out, const real *m, int rows, int cols)
{
#if FASTNN_SMALL_GEMM
    if (!gemm_small_available() || rows <= 0 || cols <= 0) return 0;
    /* ones (1 x rows) m: each column's sum is one FMA chain 1 * m[r] + sum over the rows
     * in order, the same additions, in the same order, as a plain row-by-row sum */
    const real one = 1;
    unsigned int csr = fastnn_ftz_enter();
    FN(small_rows)(out, cols, &one, 0, 0, m, cols, 0, 1, cols, rows, NULL);
    fastnn_ftz_leave(csr);
    return 1;
#else
    (void)out, (void)m, (void)rows, (void)cols;
    return 0;
#endif
}

#endif /* FASTNN_TEMPLATE */
