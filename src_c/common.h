/* common.h: what every fastnn kernel family shares.
 *
 * - Matrices are row-major and contiguous: a (rows x cols) matrix has element (i, j)
 *   at [i * cols + j].
 * - Matrix products go through the Fortran BLAS that scipy ships
 *   (scipy.linalg.cython_blas). The Cython glue hands its sgemm/dgemm to the kernels as
 *   function pointers, so no BLAS header is included and nothing is linked at build time.
 * - Each kernel takes an explicit thread count, last. OpenMP loops split the work by
 *   output (a thread owns whole rows or whole columns), so no sum is ever split across
 *   threads and results do not depend on the thread count.
 * - Kernels are written once for a generic `real` and compiled twice (float: _f32,
 *   double: _f64): each family's .c file includes itself with FASTNN_REAL defined.
 */
#ifndef FASTNN_COMMON_H
#define FASTNN_COMMON_H

#include <stddef.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__SSE__) || defined(_M_X64) || defined(__x86_64__)
#include <xmmintrin.h>
#define FASTNN_HAVE_MXCSR 1
#endif

typedef void (*sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                         float *alpha, float *a, int *lda, float *b, int *ldb,
                         float *beta, float *c, int *ldc);
typedef void (*dgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                         double *alpha, double *a, int *lda, double *b, int *ldb,
                         double *beta, double *c, int *ldc);

/* Hot elementwise kernels are compiled for AVX-512, AVX2 and baseline x86-64, and the
 * loader picks the best the CPU has (GCC function multiversioning), so a wheel built
 * without -march=native still runs at full width on new CPUs and runs at all on old ones. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(FASTNN_NO_CLONES)
#define FASTNN_VECTORIZED __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTNN_VECTORIZED
#endif

/* Element counts below this run on one thread: an OpenMP fork/join costs a few
 * microseconds, which only pays off once a pass touches this many elements. */
#define FASTNN_PARALLEL_MIN 32768

/* Activation codes, shared by the Cython glue (fastnn/_kernels.pyx). */
enum {
    ACT_LINEAR = 0,
    ACT_SIGMOID = 1,
    ACT_RELU = 2,
    ACT_LEAKY_RELU = 3,
    ACT_TANH = 4,
    ACT_SOFTMAX = 5
};

/* Subnormal floats (Adam moments of dead ReLU units decay into them) make x86 arithmetic
 * many times slower. Inside fastnn's own compiled work every thread flushes them to zero
 * (FTZ) and reads them as zero (DAZ), then restores the caller's mode on the way out. */
static inline unsigned int fastnn_ftz_enter(void)
{
#ifdef FASTNN_HAVE_MXCSR
    unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
    return saved;
#else
    return 0;
#endif
}

static inline void fastnn_ftz_leave(unsigned int saved)
{
#ifdef FASTNN_HAVE_MXCSR
    _mm_setcsr(saved);
#else
    (void)saved;
#endif
}

/* Whether a pass over `work` elements should fork threads (FASTNN_SPLIT_RANGE below runs
 * the pass directly on the caller when it should not: an OpenMP region, even one whose
 * `if` clause is false, sets up a team on every entry, about half a microsecond with
 * libgomp, and a small network enters dozens of regions per step). */
static inline int fastnn_threads_for(ptrdiff_t work, int nthreads)
{
    return (nthreads > 1 && work >= FASTNN_PARALLEL_MIN) ? nthreads : 1;
}

/* The part [*begin, *end) of n items that the calling OpenMP thread owns: contiguous
 * blocks, so each output is written by exactly one thread. */
static inline void fastnn_thread_range(ptrdiff_t n, ptrdiff_t *begin, ptrdiff_t *end)
{
    int tid = 0, nth = 1;
#ifdef _OPENMP
    tid = omp_get_thread_num();
    nth = omp_get_num_threads();
#endif
    *begin = n * tid / nth;
    *end = n * (tid + 1) / nth;
}

#ifdef _OPENMP
#define FASTNN_OMP_PARALLEL_NT _Pragma("omp parallel num_threads(fastnn_nt_)")
#else
#define FASTNN_OMP_PARALLEL_NT /* without OpenMP the block runs once, over [0, n) */
#endif

/* Runs the call (an expression using `begin` and `end`) over [0, n) cut into contiguous
 * parts, one per thread, each thread with FTZ/DAZ set; `work` (elements touched) decides
 * the threads (fastnn_threads_for); with one, the call runs directly on the caller. */
#define FASTNN_SPLIT_RANGE(work, n, nthreads, ...)                                         \
    do {                                                                                   \
        int fastnn_nt_ = fastnn_threads_for((work), (nthreads));                           \
        ptrdiff_t fastnn_n_ = (n);                                                         \
        if (fastnn_nt_ == 1) {                                                             \
            unsigned int fastnn_csr_ = fastnn_ftz_enter();                                 \
            ptrdiff_t begin = 0, end = fastnn_n_;                                          \
            __VA_ARGS__;                                                                   \
            fastnn_ftz_leave(fastnn_csr_);                                                 \
        } else {                                                                           \
            FASTNN_OMP_PARALLEL_NT                                                         \
            {                                                                              \
                unsigned int fastnn_csr_ = fastnn_ftz_enter();                             \
                ptrdiff_t begin, end;                                                      \
                fastnn_thread_range(fastnn_n_, &begin, &end);                              \
                __VA_ARGS__;                                                               \
                fastnn_ftz_leave(fastnn_csr_);                                             \
            }                                                                              \
        }                                                                                  \
    } while (0)

#endif
