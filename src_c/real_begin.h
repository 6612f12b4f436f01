/* real_begin.h: opens one instantiation of a family's generic kernels.
 * Before including, define FASTNN_DOUBLE as 0 (float, names end in _f32) or 1 (double,
 * _f64); real_end.h closes it. See the top of any family's .c file for the pattern. */
#if FASTNN_DOUBLE
#define real double
#define FN(name) name##_f64
#define gemm_fn dgemm_fn
#define EXP exp
#define LOG log
#define LOG1P log1p
#define TANH tanh
#define SQRT sqrt
#define FABS fabs
#define REAL_MAX 1.79769313486231571e+308
#else
#define real float
#define FN(name) name##_f32
#define gemm_fn sgemm_fn
#define EXP expf
#define LOG logf
#define LOG1P log1pf
#define TANH tanhf
#define SQRT sqrtf
#define FABS fabsf
#define REAL_MAX 3.40282347e+38F
#endif
