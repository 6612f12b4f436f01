/* gemm.h: the matrix products of the dense and conv1d layers.
 *
 *   out (M x N, rows ldo apart) = op(a) (M x K) op(b) (K x N), all row-major, where
 *   op(a) = a (M x K, rows lda apart), or a^T when a_trans (a is K x M, rows lda apart);
 *   op(b) = b (K x N, rows ldb apart), or b^T when b_trans (b is N x K, rows ldb apart).
 * out is written, not accumulated into.
 *
 * Two ways to compute it:
 * - GEMM_SMALL: fastnn's own register-blocked kernel (AVX-512, chosen at run time when
 *   the CPU has it). Each output element is one chain of fused multiply-adds over k in
 *   order. On the products of small and medium networks (up to K = 1024) it matches or
 *   beats OpenBLAS, which spends much of such products packing operands;
 *   bench/kernels.py measures both at the shapes of the bench's workloads.
 * - GEMM_BLAS: the Fortran BLAS sgemm/dgemm handed in by the Cython glue (scipy's), for
 *   longer inner dimensions, huge products, outputs narrower than 10 columns (5 doubles),
 *   double weight gradients a^T b of up to 32 columns that leave the last vector partly
 *   empty, and CPUs without AVX-512.
 * A float weight gradient a^T b with few output columns (a layer of 25 units fills 25
 * of the kernel's 32 lanes) is computed under GEMM_AUTO as (b^T a)^T: the kernel then
 * vectorizes over the inputs, and the transpose back costs a few percent. The FMA chains
 * are the same, so are the bits. And a float a b^T whose inner dimension fills the
 * vectors and whose N does not (gemm_dot_pays) runs as dot products over k, summed
 * across the lanes at the end: another order of additions, so other rounding.
 * GEMM_AUTO picks by the sizes alone. Either way the M rows are cut into panels whose
 * boundaries depend only on the sizes, and each panel is computed by one thread (one
 * single-threaded BLAS call, or the kernel), so results are bit-identical whatever the
 * thread count. A BLAS panel may thus run inside fastnn's OpenMP region: the Python
 * layer holds the BLAS' own threads at 1 meanwhile, so threads never nest or
 * oversubscribe, and a multi-threaded BLAS call (whose rounding depends on its thread
 * count) is never made.
 */
#ifndef FASTNN_GEMM_H
#define FASTNN_GEMM_H

#include "common.h"

enum { GEMM_AUTO = 0, GEMM_BLAS = 1, GEMM_SMALL = 2 };

/* Whether this CPU runs the GEMM_SMALL kernel (otherwise GEMM_SMALL means GEMM_BLAS);
 * the environment variable FASTNN_SMALL_GEMM=0, read at first use, turns it off. */
int gemm_small_available(void);

/* Whether a float product a b^T (b: N x K, row-major) runs as dot products over k, by
 * the sizes alone (the same answer on every machine): where k fills the kernel's vectors
 * and N would not. Where the kernel runs, GEMM_AUTO then computes it so. The dense
 * layers store a kernel transposed when its forward product would (dense.h). */
int gemm_dot_pays(int N, int K);

#define FASTNN_DECLARE_GEMM(real, sfx, gemm_t)                                              \
    void gemm_##sfx(real *out, int ldo, const real *a, int lda, int a_trans, const real *b, \
                    int ldb, int b_trans, int M, int N, int K, gemm_t blas, int nthreads);  \
    /* The same product by the given method (GEMM_AUTO, GEMM_BLAS or GEMM_SMALL). */        \
    void gemm_method_##sfx(int method, real *out, int ldo, const real *a, int lda,          \
                           int a_trans, const real *b, int ldb, int b_trans, int M, int N,  \
                           int K, gemm_t blas, int nthreads);                               \
    /* z = op(a) op(b) + bias (bias per column, may be NULL) and act_out = f(z) (rows ldo   \
     * apart, may be z) for f = ACT_LINEAR, ACT_RELU or ACT_LEAKY_RELU(slope), added and    \
     * applied in the kernel's registers before the tile is stored: the same values as     \
     * gemm followed by a bias-and-activation pass. Returns 0, doing nothing, where the     \
     * kernel does not take the product or f is another activation. */                     \
    int gemm_bias_act_##sfx(real *z, real *act_out, int ldo, const real *a, int lda,        \
                            int a_trans, const real *b, int ldb, int b_trans, int M, int N, \
                            int K, const real *bias, int act, real slope, int nthreads);    \
    /* out (cols) = the column sums of m (rows x cols), each summed over the rows in        \
     * order, by the kernel; returns 0, doing nothing, where it does not run. */            \
    int gemm_column_sums_##sfx(real *out, const real *m, int rows, int cols);             \
    /* out = op(a) op(b), as gemm writes it, and then, taking out as the gradient of       \
     * parameters w laid out as out (rows ldo apart) with Adam moments m and v, Adam's      \
     * update of w, m, v (optimizers.h, adam_update with corrected rate lr_t), applied to   \
     * each tile of out while it is in registers: the same bits as gemm then adam_update.  \
     * Returns 0, doing nothing, where gemm would not take the product by this form of     \
     * fastnn's kernel. */                                                                 \
    int gemm_adam_##sfx(real *out, int ldo, const real *a, int lda, int a_trans,            \
                        const real *b, int ldb, int b_trans, int M, int N, int K, real *w,  \
                        real *m, real *v, real lr_t, real beta1, real beta2, real eps,      \
                        int nthreads);                                                     \
    /* Whether gemm (GEMM_AUTO) computes op(a) op(b) of these sizes by fastnn's kernel,   \
     * in any of its forms, rather than by BLAS. */                                         \
    int gemm_by_kernel_##sfx(int a_trans, int b_trans, int M, int N, int K);

FASTNN_DECLARE_GEMM(float, f32, sgemm_fn)
FASTNN_DECLARE_GEMM(double, f64, dgemm_fn)

#endif
