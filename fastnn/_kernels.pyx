# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Thin glue between Python and the C kernels in src_c/.

Typed memoryviews in, one C call with the GIL released, results out. The BLAS gemm comes
from scipy.linalg.cython_blas and is handed to C as a function pointer. Callers (the
Python layer and the tests) pass C-contiguous arrays of one dtype; these functions only
check shapes that would make C read out of bounds.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from scipy.linalg.cython_blas cimport sgemm, dgemm
from cpython.pycapsule cimport PyCapsule_GetPointer
from numpy.random cimport bitgen_t

cnp.import_array()

ctypedef fused real:
    float
    double

cdef extern from "common.h":
    int ACT_LINEAR, ACT_SIGMOID, ACT_RELU, ACT_LEAKY_RELU, ACT_TANH, ACT_SOFTMAX

cdef extern from "activations.h" nogil:
    void activation_forward_f32(float *a, const float *z, int rows, int cols, int act, float slope, int nthreads)
    void activation_forward_f64(double *a, const double *z, int rows, int cols, int act, double slope, int nthreads)
    void activation_backward_f32(float *dz, const float *da, const float *z, const float *a, int rows, int cols, int act, float slope, int nthreads)
    void activation_backward_f64(double *dz, const double *da, const double *z, const double *a, int rows, int cols, int act, double slope, int nthreads)

cdef extern from "dense.h" nogil:
    ctypedef void (*sgemm_fn)(char *, char *, int *, int *, int *, float *, float *, int *, float *, int *, float *, float *, int *)
    ctypedef void (*dgemm_fn)(char *, char *, int *, int *, int *, double *, double *, int *, double *, int *, double *, double *, int *)
    void dense_forward_f32(float *z, float *a, const float *x, const float *w, int w_trans, const float *b, int B, int C, int OC, int act, float slope, sgemm_fn gemm, int nthreads)
    void dense_forward_f64(double *z, double *a, const double *x, const double *w, int w_trans, const double *b, int B, int C, int OC, int act, double slope, dgemm_fn gemm, int nthreads)
    void dense_backward_f32(float *dx, float *dw, float *db, float *dout, const float *z, const float *a, const float *x, const float *w, int w_trans, int B, int C, int OC, int act, float slope, sgemm_fn gemm, int nthreads)
    void dense_backward_f64(double *dx, double *dw, double *db, double *dout, const double *z, const double *a, const double *x, const double *w, int w_trans, int B, int C, int OC, int act, double slope, dgemm_fn gemm, int nthreads)

cdef extern from "gemm.h" nogil:
    int GEMM_AUTO, GEMM_BLAS, GEMM_SMALL
    int gemm_small_available()
    int gemm_dot_pays(int N, int K)
    void gemm_method_f32(int method, float *out, int ldo, const float *a, int lda, int a_trans, const float *b, int ldb, int b_trans, int M, int N, int K, sgemm_fn blas, int nthreads)
    void gemm_method_f64(int method, double *out, int ldo, const double *a, int lda, int a_trans, const double *b, int ldb, int b_trans, int M, int N, int K, dgemm_fn blas, int nthreads)
    int gemm_adam_f32(float *out, int ldo, const float *a, int lda, int a_trans, const float *b, int ldb, int b_trans, int M, int N, int K, float *w, float *m, float *v, float lr_t, float beta1, float beta2, float eps, int nthreads)
    int gemm_adam_f64(double *out, int ldo, const double *a, int lda, int a_trans, const double *b, int ldb, int b_trans, int M, int N, int K, double *w, double *m, double *v, double lr_t, double beta1, double beta2, double eps, int nthreads)

cdef extern from "losses.h" nogil:
    int LOSS_BINARY_CROSSENTROPY, LOSS_MEAN_SQUARED_ERROR, LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, LOSS_CATEGORICAL_CROSSENTROPY
    int METRIC_BINARY_ACCURACY, METRIC_SPARSE_CATEGORICAL_ACCURACY, METRIC_CATEGORICAL_ACCURACY, METRIC_MEAN_ABSOLUTE_ERROR, METRIC_MEAN_SQUARED_ERROR
    double loss_f32(int loss, float *grad, const float *pred, const float *y, const float *weights, int B, int K, int from_logits, int nthreads)
    double loss_f64(int loss, double *grad, const double *pred, const double *y, const double *weights, int B, int K, int from_logits, int nthreads)
    double metric_sum_f32(int metric, const float *pred, const float *y, const float *weights, int B, int K, int from_logits)
    double metric_sum_f64(int metric, const double *pred, const double *y, const double *weights, int B, int K, int from_logits)

cdef extern from "optimizers.h" nogil:
    void sgd_update_f32(float *w, const float *g, float *velocity, ptrdiff_t n, float lr, float momentum, int nesterov, int nthreads)
    void sgd_update_f64(double *w, const double *g, double *velocity, ptrdiff_t n, double lr, double momentum, int nesterov, int nthreads)
    void adam_update_f32(float *w, const float *g, float *m, float *v, ptrdiff_t n, float lr_t, float beta1, float beta2, float eps, int nthreads)
    void adam_update_f64(double *w, const double *g, double *m, double *v, ptrdiff_t n, double lr_t, double beta1, double beta2, double eps, int nthreads)
    void adam_update_sum2_f32(float *w, float *g, const float *g0, const float *g1, int add_l2, float l2, float *m, float *v, ptrdiff_t n, float lr_t, float beta1, float beta2, float eps)
    void adam_update_sum2_f64(double *w, double *g, const double *g0, const double *g1, int add_l2, double l2, double *m, double *v, ptrdiff_t n, double lr_t, double beta1, double beta2, double eps)
    void rmsprop_update_f32(float *w, const float *g, float *v, float *mom, ptrdiff_t n, float lr, float rho, float momentum, float eps, int nthreads)
    void rmsprop_update_f64(double *w, const double *g, double *v, double *mom, ptrdiff_t n, double lr, double rho, double momentum, double eps, int nthreads)
    double adam_corrected_rate(double lr, double beta1, double beta2, long long t)

cdef extern from "conv1d.h" nogil:
    void conv1d_forward_f32(float *z, float *a, float *cols, const float *x, const float *w, const float *b, int B, int L, int C, int Lout, int F, int K, int stride, int pad_left, int act, float slope, sgemm_fn gemm, int nthreads)
    void conv1d_forward_f64(double *z, double *a, double *cols, const double *x, const double *w, const double *b, int B, int L, int C, int Lout, int F, int K, int stride, int pad_left, int act, double slope, dgemm_fn gemm, int nthreads)
    void conv1d_backward_f32(float *dx, float *dw, float *db, float *dout, float *cols, float *dcols, const float *z, const float *a, const float *w, int B, int L, int C, int Lout, int F, int K, int stride, int pad_left, int act, float slope, sgemm_fn gemm, int nthreads)
    void conv1d_backward_f64(double *dx, double *dw, double *db, double *dout, double *cols, double *dcols, const double *z, const double *a, const double *w, int B, int L, int C, int Lout, int F, int K, int stride, int pad_left, int act, double slope, dgemm_fn gemm, int nthreads)
    void conv1d_im2col_f32(float *cols, const float *x, int B, int L, int C, int Lout, int K, int stride, int pad_left, int nthreads)
    void conv1d_im2col_f64(double *cols, const double *x, int B, int L, int C, int Lout, int K, int stride, int pad_left, int nthreads)
    void maxpool1d_forward_f32(float *out, int32_t *argmax, const float *x, int B, int L, int C, int Lout, int pool, int stride, int pad_left, int nthreads)
    void maxpool1d_forward_f64(double *out, int32_t *argmax, const double *x, int B, int L, int C, int Lout, int pool, int stride, int pad_left, int nthreads)
    void maxpool1d_backward_f32(float *dx, const float *dout, const int32_t *argmax, int B, int L, int C, int Lout, int nthreads)
    void maxpool1d_backward_f64(double *dx, const double *dout, const int32_t *argmax, int B, int L, int C, int Lout, int nthreads)
    void global_avgpool1d_forward_f32(float *out, const float *x, int B, int L, int C, int nthreads)
    void global_avgpool1d_forward_f64(double *out, const double *x, int B, int L, int C, int nthreads)
    void global_avgpool1d_backward_f32(float *dx, const float *dout, int B, int L, int C, int nthreads)
    void global_avgpool1d_backward_f64(double *dx, const double *dout, int B, int L, int C, int nthreads)

cdef extern from "network.h" nogil:
    int LAYER_DENSE, LAYER_ACTIVATION, LAYER_DROPOUT, LAYER_CONV1D, LAYER_MAXPOOL1D, LAYER_GLOBAL_AVGPOOL1D
    int OPT_SGD, OPT_ADAM, OPT_RMSPROP
    int NN_MAX_METRICS
    ctypedef struct nn_layer:
        int kind
        int in_dim, out_dim
        int act
        double slope
        double rate
        int steps_in, channels_in, steps_out
        int kernel, stride, pad_left
        double l2_per_batch
        int w_trans
        void *w
        void *b
        void *dw
        void *db
    ctypedef struct nn_model:
        int is_double
        int n_layers
        nn_layer *layers
        int loss
        int from_logits
        int fused
        double loss_scale
        int clip_log_loss
        int n_metrics
        int metrics[8]
        void *gemm
        ptrdiff_t n_params
        int max_parts
    ctypedef struct nn_optimizer:
        int kind
        double learning_rate, beta1, beta2, epsilon, rho, momentum
        int nesterov
        long long iterations
        void *params
        void *grads
        void *slot1
        void *slot2
        ptrdiff_t n_params
    ctypedef struct nn_workspace:
        int batch
        double wait_fraction
    nn_workspace *network_workspace_new(const nn_model *m, int batch, int y_width, int training)
    void network_workspace_free(nn_workspace *ws)
    int network_parts(const nn_model *m, int B)
    int network_split_units(const nn_model *m, int B)
    void network_shuffle(int64_t *order, ptrdiff_t n, uint64_t seed)
    ctypedef struct nn_bitgen:
        void *state
        uint32_t (*next_uint32)(void *state) nogil
        uint64_t (*next_uint64)(void *state) nogil
    void network_shuffle_numpy(int64_t *order, ptrdiff_t n, const nn_bitgen *gen)
    int network_fit_epochs_f32(const nn_model *m, nn_optimizer *opt, nn_workspace *ws, const float *x, const float *y, int y_width, int64_t *order, ptrdiff_t n, const nn_bitgen *gen, double loss_correction, double tol, int n_iter_no_change, double *best_loss, int *no_improvement, double *losses, int max_epochs, int nthreads)
    int network_fit_epochs_f64(const nn_model *m, nn_optimizer *opt, nn_workspace *ws, const double *x, const double *y, int y_width, int64_t *order, ptrdiff_t n, const nn_bitgen *gen, double loss_correction, double tol, int n_iter_no_change, double *best_loss, int *no_improvement, double *losses, int max_epochs, int nthreads)
    void network_train_f32(const nn_model *m, nn_optimizer *opt, nn_workspace *ws, const float *x, const float *y, int y_width, const float *weights, const int64_t *order, ptrdiff_t n, ptrdiff_t step_begin, ptrdiff_t step_end, uint64_t dropout_seed, double *loss_sum, double *metric_sums, int nthreads)
    void network_train_f64(const nn_model *m, nn_optimizer *opt, nn_workspace *ws, const double *x, const double *y, int y_width, const double *weights, const int64_t *order, ptrdiff_t n, ptrdiff_t step_begin, ptrdiff_t step_end, uint64_t dropout_seed, double *loss_sum, double *metric_sums, int nthreads)
    int all_finite_f32(const float *x, ptrdiff_t n)
    int all_finite_f64(const double *x, ptrdiff_t n)
    void network_predict_f32(const nn_model *m, nn_workspace *ws, float *out, const float *x, ptrdiff_t n, int nthreads)
    void network_predict_f64(const nn_model *m, nn_workspace *ws, double *out, const double *x, ptrdiff_t n, int nthreads)
    void network_evaluate_f32(const nn_model *m, nn_workspace *ws, const float *x, const float *y, int y_width, ptrdiff_t n, double *loss_sum, double *metric_sums, int nthreads)
    void network_evaluate_f64(const nn_model *m, nn_workspace *ws, const double *x, const double *y, int y_width, ptrdiff_t n, double *loss_sum, double *metric_sums, int nthreads)
    double network_loss_grad_f32(const nn_model *m, nn_workspace *ws, const float *x, const float *y, int y_width, const float *weights, int rows, int nthreads)
    double network_loss_grad_f64(const nn_model *m, nn_workspace *ws, const double *x, const double *y, int y_width, const double *weights, int rows, int nthreads)

ACTIVATIONS = {"linear": ACT_LINEAR, "sigmoid": ACT_SIGMOID, "relu": ACT_RELU,
               "leaky_relu": ACT_LEAKY_RELU, "tanh": ACT_TANH, "softmax": ACT_SOFTMAX}
LOSSES = {"binary_crossentropy": LOSS_BINARY_CROSSENTROPY,
          "mean_squared_error": LOSS_MEAN_SQUARED_ERROR,
          "sparse_categorical_crossentropy": LOSS_SPARSE_CATEGORICAL_CROSSENTROPY,
          "categorical_crossentropy": LOSS_CATEGORICAL_CROSSENTROPY}
METRICS = {"binary_accuracy": METRIC_BINARY_ACCURACY,
           "sparse_categorical_accuracy": METRIC_SPARSE_CATEGORICAL_ACCURACY,
           "categorical_accuracy": METRIC_CATEGORICAL_ACCURACY,
           "mean_absolute_error": METRIC_MEAN_ABSOLUTE_ERROR,
           "mean_squared_error": METRIC_MEAN_SQUARED_ERROR}
LAYER_KINDS = {"dense": LAYER_DENSE, "activation": LAYER_ACTIVATION, "dropout": LAYER_DROPOUT,
               "conv1d": LAYER_CONV1D, "maxpool1d": LAYER_MAXPOOL1D,
               "global_avgpool1d": LAYER_GLOBAL_AVGPOOL1D}
OPTIMIZERS = {"sgd": OPT_SGD, "adam": OPT_ADAM, "rmsprop": OPT_RMSPROP}
MAX_METRICS = NN_MAX_METRICS


cdef void *gemm_for(bint is_double) noexcept nogil:
    return <void *>dgemm if is_double else <void *>sgemm


def _dims(name, arr, shape):
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(arr.shape)}")


# ---- per-kernel bindings (used by the tests and by fastnn.gradcheck) -------------------

def activation_forward(real[:, ::1] z, int act, double slope=0.01, int nthreads=1):
    """a = f(z) for a (rows, cols) array."""
    out = np.empty_like(np.asarray(z))
    cdef real[:, ::1] a = out
    cdef int rows = z.shape[0], cols = z.shape[1]
    with nogil:
        if real is float:
            activation_forward_f32(&a[0, 0] if rows * cols else NULL, &z[0, 0] if rows * cols else NULL, rows, cols, act, <float>slope, nthreads)
        else:
            activation_forward_f64(&a[0, 0] if rows * cols else NULL, &z[0, 0] if rows * cols else NULL, rows, cols, act, slope, nthreads)
    return out


def activation_backward(real[:, ::1] da, real[:, ::1] z, real[:, ::1] a, int act,
                        double slope=0.01, int nthreads=1):
    """dz = da * f'(z)."""
    _dims("z", np.asarray(z), (da.shape[0], da.shape[1]))
    _dims("a", np.asarray(a), (da.shape[0], da.shape[1]))
    out = np.empty_like(np.asarray(da))
    cdef real[:, ::1] dz = out
    cdef int rows = da.shape[0], cols = da.shape[1]
    if rows * cols == 0:
        return out
    with nogil:
        if real is float:
            activation_backward_f32(&dz[0, 0], &da[0, 0], &z[0, 0], &a[0, 0], rows, cols, act, <float>slope, nthreads)
        else:
            activation_backward_f64(&dz[0, 0], &da[0, 0], &z[0, 0], &a[0, 0], rows, cols, act, slope, nthreads)
    return out


GEMM_METHODS = {"auto": GEMM_AUTO, "blas": GEMM_BLAS, "small": GEMM_SMALL}
# Reads the CPU and FASTNN_SMALL_GEMM once, at import, before any thread can ask.
gemm_small_available()


cdef extern from "threads.h" nogil:
    void fastnn_wake_team(int nthreads)
    int fastnn_current_cpu()
    int fastnn_leave_cpu(int cpu)


def wake_team(int nthreads):
    """Wakes fastnn's OpenMP team of nthreads threads as training does before its work
    (src_c/threads.h)."""
    with nogil:
        fastnn_wake_team(nthreads)


def leave_current_cpu():
    """Moves the calling thread off the core it runs on, as a worker woken on its
    caller's core is moved, restoring its affinity; returns (core before, core after),
    -1 where the system does not say."""
    cdef int before, after
    with nogil:
        before = fastnn_current_cpu()
        after = fastnn_leave_cpu(before)
    return before, after


cdef extern from *:
    """
    #ifdef _OPENMP
    static const int fastnn_built_with_openmp = 1;
    #else
    static const int fastnn_built_with_openmp = 0;
    #endif
    """
    const int fastnn_built_with_openmp


def openmp_available():
    """Whether this build runs its kernels on several threads (compiled with OpenMP)."""
    return bool(fastnn_built_with_openmp)


def small_gemm_available():
    """Whether this CPU runs fastnn's own small-product kernel (AVX-512)."""
    return bool(gemm_small_available())


def dense_kernel_transposed(int inputs, int units, bint is_double):
    """Whether a Dense layer of these sizes stores its kernel transposed, (units, inputs):
    for float32 where its forward product runs faster as dot products over the inputs
    (src_c/gemm.h, gemm_dot_pays). Sizes only, so every machine lays a model out alike."""
    return (not is_double) and bool(gemm_dot_pays(units, inputs))


def gemm(real[:, ::1] a, real[:, ::1] b, bint a_trans=False, bint b_trans=False,
         method="auto", int nthreads=1, out=None):
    """op(a) op(b) by the given method ("auto", "blas" or "small"; see src_c/gemm.h),
    into `out` (C-contiguous, written) when given."""
    cdef int M = a.shape[1] if a_trans else a.shape[0]
    cdef int K = a.shape[0] if a_trans else a.shape[1]
    cdef int N = b.shape[0] if b_trans else b.shape[1]
    cdef int kb = b.shape[1] if b_trans else b.shape[0]
    if method not in GEMM_METHODS:
        raise ValueError(f"method: expected one of {sorted(GEMM_METHODS)}, got {method!r}")
    cdef int m = GEMM_METHODS[method]
    if kb != K:
        raise ValueError(f"b: inner dimension {kb} does not match a's {K}")
    if out is None:
        out = np.empty((M, N), dtype=np.asarray(a).dtype)
    _dims("out", out, (M, N))
    cdef real[:, ::1] o = out
    if M * N == 0:
        return out
    cdef real *ap = &a[0, 0] if a.shape[0] * a.shape[1] else NULL
    cdef real *bp = &b[0, 0] if b.shape[0] * b.shape[1] else NULL
    with nogil:
        if real is float:
            gemm_method_f32(m, &o[0, 0], N, ap, a.shape[1], a_trans, bp, b.shape[1], b_trans, M, N, K, <sgemm_fn>gemm_for(False), nthreads)
        else:
            gemm_method_f64(m, &o[0, 0], N, ap, a.shape[1], a_trans, bp, b.shape[1], b_trans, M, N, K, <dgemm_fn>gemm_for(True), nthreads)
    return out


def gemm_adam(real[:, ::1] a, real[:, ::1] b, real[:, ::1] w, real[:, ::1] m, real[:, ::1] v,
              long long t, double lr, double beta1, double beta2, double eps,
              bint a_trans=False, bint b_trans=False, int nthreads=1):
    """g = op(a) op(b) as gemm computes it, and Adam's step t on w, m, v (shaped as g) with
    g as their gradient, inside the product (src_c/gemm.h: gemm_adam). Returns g, or None
    (nothing done) where fastnn's kernel does not take the product that way."""
    cdef int M = a.shape[1] if a_trans else a.shape[0]
    cdef int K = a.shape[0] if a_trans else a.shape[1]
    cdef int N = b.shape[0] if b_trans else b.shape[1]
    cdef int kb = b.shape[1] if b_trans else b.shape[0]
    if kb != K:
        raise ValueError(f"b: inner dimension {kb} does not match a's {K}")
    for name, arr in (("w", w), ("m", m), ("v", v)):
        _dims(name, arr, (M, N))
    if M * N * K == 0:
        return None
    out = np.empty((M, N), dtype=np.asarray(a).dtype)
    cdef real[:, ::1] o = out
    cdef double lr_t = adam_corrected_rate(lr, beta1, beta2, t)
    cdef int done
    with nogil:
        if real is float:
            done = gemm_adam_f32(&o[0, 0], N, &a[0, 0], a.shape[1], a_trans, &b[0, 0], b.shape[1], b_trans, M, N, K, &w[0, 0], &m[0, 0], &v[0, 0], <float>lr_t, <float>beta1, <float>beta2, <float>eps, nthreads)
        else:
            done = gemm_adam_f64(&o[0, 0], N, &a[0, 0], a.shape[1], a_trans, &b[0, 0], b.shape[1], b_trans, M, N, K, &w[0, 0], &m[0, 0], &v[0, 0], lr_t, beta1, beta2, eps, nthreads)
    return out if done else None


def dense_forward(real[:, ::1] x, real[:, ::1] w, b, int act, double slope=0.01,
                  int nthreads=1, bint w_trans=False):
    """(z, a) with z = x w + b, a = f(z); b may be None. w_trans: w is given (and stored)
    transposed, (units, inputs)."""
    cdef int B = x.shape[0], C = x.shape[1], OC = w.shape[0] if w_trans else w.shape[1]
    _dims("w", np.asarray(w), (OC, C) if w_trans else (C, OC))
    dtype = np.asarray(x).dtype
    z_arr = np.zeros((B, OC), dtype=dtype)
    a_arr = np.zeros((B, OC), dtype=dtype)
    cdef real[::1] bias
    cdef real *bp = NULL
    if b is not None:
        bias = np.ascontiguousarray(b, dtype=dtype)
        _dims("b", np.asarray(bias), (OC,))
        if OC:
            bp = &bias[0]
    if B * OC == 0:
        return z_arr, a_arr
    cdef real[:, ::1] z = z_arr, a = a_arr
    cdef real *xp = &x[0, 0] if B * C else NULL
    cdef real *wp = &w[0, 0] if C * OC else NULL
    with nogil:
        if real is float:
            dense_forward_f32(&z[0, 0], &a[0, 0], xp, wp, w_trans, bp, B, C, OC, act, <float>slope, <sgemm_fn>gemm_for(False), nthreads)
        else:
            dense_forward_f64(&z[0, 0], &a[0, 0], xp, wp, w_trans, bp, B, C, OC, act, slope, <dgemm_fn>gemm_for(True), nthreads)
    return z_arr, a_arr


def dense_backward(real[:, ::1] da, real[:, ::1] z, real[:, ::1] a, real[:, ::1] x,
                   real[:, ::1] w, int act, double slope=0.01, bint need_dx=True,
                   bint has_bias=True, int nthreads=1, bint w_trans=False):
    """(dx, dw, db) for dL/da; dx is None unless need_dx, db None unless has_bias. w_trans:
    w is given transposed, (units, inputs), and so is dw."""
    cdef int B = x.shape[0], C = x.shape[1], OC = w.shape[0] if w_trans else w.shape[1]
    _dims("w", np.asarray(w), (OC, C) if w_trans else (C, OC))
    for name, arr in (("da", da), ("z", z), ("a", a)):
        _dims(name, np.asarray(arr), (B, OC))
    dtype = np.asarray(x).dtype
    dout_arr = np.array(da, dtype=dtype, copy=True)
    dw_arr = np.zeros((OC, C) if w_trans else (C, OC), dtype=dtype)
    db_arr = np.zeros(OC, dtype=dtype) if has_bias else None
    dx_arr = np.zeros((B, C), dtype=dtype) if need_dx else None
    if B * OC * C == 0:
        return dx_arr, dw_arr, db_arr
    cdef real[:, ::1] dout = dout_arr, dw = dw_arr, dx
    cdef real[::1] db
    cdef real *dxp = NULL
    cdef real *dbp = NULL
    if need_dx:
        dx = dx_arr
        dxp = &dx[0, 0]
    if has_bias:
        db = db_arr
        dbp = &db[0]
    with nogil:
        if real is float:
            dense_backward_f32(dxp, &dw[0, 0], dbp, &dout[0, 0], &z[0, 0], &a[0, 0], &x[0, 0], &w[0, 0], w_trans, B, C, OC, act, <float>slope, <sgemm_fn>gemm_for(False), nthreads)
        else:
            dense_backward_f64(dxp, &dw[0, 0], dbp, &dout[0, 0], &z[0, 0], &a[0, 0], &x[0, 0], &w[0, 0], w_trans, B, C, OC, act, slope, <dgemm_fn>gemm_for(True), nthreads)
    return dx_arr, dw_arr, db_arr


def loss(int code, real[:, ::1] pred, real[:, ::1] y, bint from_logits=False,
         int nthreads=1, weights=None):
    """(mean loss, d loss / d pred). y is (B, K), or (B, 1) class ids for the sparse loss;
    weights: None, or (B,) per-row weights of pred's dtype (the weighted mean, losses.h)."""
    cdef int B = pred.shape[0], K = pred.shape[1]
    ywidth = 1 if code == LOSS_SPARSE_CATEGORICAL_CROSSENTROPY else K
    _dims("y", np.asarray(y), (B, ywidth))
    cdef real[::1] w
    cdef real *wp = NULL
    if weights is not None:
        _dims("weights", np.asarray(weights), (B,))
        w = weights
        wp = &w[0] if B else NULL
    grad_arr = np.zeros((B, K), dtype=np.asarray(pred).dtype)
    if B * K == 0:
        return 0.0, grad_arr
    cdef real[:, ::1] grad = grad_arr
    cdef double value
    with nogil:
        if real is float:
            value = loss_f32(code, &grad[0, 0], &pred[0, 0], &y[0, 0], wp, B, K, from_logits, nthreads)
        else:
            value = loss_f64(code, &grad[0, 0], &pred[0, 0], &y[0, 0], wp, B, K, from_logits, nthreads)
    return value, grad_arr


def metric_sum(int code, real[:, ::1] pred, real[:, ::1] y, bint from_logits=False,
               weights=None):
    """Sum over rows of the per-sample metric, each times its weight when weights (B,) of
    pred's dtype are given."""
    cdef int B = pred.shape[0], K = pred.shape[1]
    ywidth = 1 if code == METRIC_SPARSE_CATEGORICAL_ACCURACY else K
    _dims("y", np.asarray(y), (B, ywidth))
    cdef real[::1] w
    cdef real *wp = NULL
    if weights is not None:
        _dims("weights", np.asarray(weights), (B,))
        w = weights
        wp = &w[0] if B else NULL
    if B * K == 0:
        return 0.0
    if real is float:
        return metric_sum_f32(code, &pred[0, 0], &y[0, 0], wp, B, K, from_logits)
    else:
        return metric_sum_f64(code, &pred[0, 0], &y[0, 0], wp, B, K, from_logits)


def sgd_update(real[::1] w, real[::1] g, real[::1] velocity, double lr, double momentum,
               bint nesterov, int nthreads=1):
    """In place on w and velocity."""
    cdef ptrdiff_t n = w.shape[0]
    if g.shape[0] != n or velocity.shape[0] != n:
        raise ValueError("sgd_update: w, g and velocity must have the same length")
    if n == 0:
        return
    with nogil:
        if real is float:
            sgd_update_f32(&w[0], &g[0], &velocity[0], n, <float>lr, <float>momentum, nesterov, nthreads)
        else:
            sgd_update_f64(&w[0], &g[0], &velocity[0], n, lr, momentum, nesterov, nthreads)


def adam_update(real[::1] w, real[::1] g, real[::1] m, real[::1] v, long long t, double lr,
                double beta1, double beta2, double eps, int nthreads=1):
    """In place on w, m, v; t is the 1-based step number."""
    cdef ptrdiff_t n = w.shape[0]
    if g.shape[0] != n or m.shape[0] != n or v.shape[0] != n:
        raise ValueError("adam_update: w, g, m and v must have the same length")
    if n == 0:
        return
    cdef double lr_t = adam_corrected_rate(lr, beta1, beta2, t)
    with nogil:
        if real is float:
            adam_update_f32(&w[0], &g[0], &m[0], &v[0], n, <float>lr_t, <float>beta1, <float>beta2, <float>eps, nthreads)
        else:
            adam_update_f64(&w[0], &g[0], &m[0], &v[0], n, lr_t, beta1, beta2, eps, nthreads)


def adam_update_sum2(real[::1] w, real[::1] g, real[::1] g0, real[::1] g1, l2,
                     real[::1] m, real[::1] v, long long t, double lr, double beta1,
                     double beta2, double eps):
    """adam_update with the gradient g = g0 + g1 (+ l2 w unless l2 is None), written to g,
    in one pass (src_c/optimizers.h: adam_update_sum2); in place on w, g, m, v."""
    cdef ptrdiff_t n = w.shape[0]
    if g.shape[0] != n or g0.shape[0] != n or g1.shape[0] != n or m.shape[0] != n or v.shape[0] != n:
        raise ValueError("adam_update_sum2: w, g, g0, g1, m and v must have the same length")
    if n == 0:
        return
    arrays = [np.asarray(w), np.asarray(g), np.asarray(g0), np.asarray(g1), np.asarray(m),
              np.asarray(v)]
    if any(np.may_share_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:]):
        raise ValueError("adam_update_sum2: w, g, g0, g1, m and v must not overlap")
    cdef double lr_t = adam_corrected_rate(lr, beta1, beta2, t)
    cdef int add_l2 = l2 is not None
    cdef double c = l2 if add_l2 else 0.0
    with nogil:
        if real is float:
            adam_update_sum2_f32(&w[0], &g[0], &g0[0], &g1[0], add_l2, <float>c, &m[0], &v[0], n, <float>lr_t, <float>beta1, <float>beta2, <float>eps)
        else:
            adam_update_sum2_f64(&w[0], &g[0], &g0[0], &g1[0], add_l2, c, &m[0], &v[0], n, lr_t, beta1, beta2, eps)


def rmsprop_update(real[::1] w, real[::1] g, real[::1] v, real[::1] mom, double lr,
                   double rho, double momentum, double eps, int nthreads=1):
    """In place on w, v, mom."""
    cdef ptrdiff_t n = w.shape[0]
    if g.shape[0] != n or v.shape[0] != n or mom.shape[0] != n:
        raise ValueError("rmsprop_update: w, g, v and mom must have the same length")
    if n == 0:
        return
    with nogil:
        if real is float:
            rmsprop_update_f32(&w[0], &g[0], &v[0], &mom[0], n, <float>lr, <float>rho, <float>momentum, <float>eps, nthreads)
        else:
            rmsprop_update_f64(&w[0], &g[0], &v[0], &mom[0], n, lr, rho, momentum, eps, nthreads)


def all_finite(arr):
    """Whether a C-contiguous float32/float64 array holds no NaN or inf (one compiled pass,
    no temporary array)."""
    cdef const float[::1] f
    cdef const double[::1] d
    cdef bint ok
    flat = arr.reshape(-1)
    if flat.dtype == np.float32:
        f = flat
        with nogil:
            ok = all_finite_f32(&f[0], f.shape[0]) if f.shape[0] else True
    elif flat.dtype == np.float64:
        d = flat
        with nogil:
            ok = all_finite_f64(&d[0], d.shape[0]) if d.shape[0] else True
    else:
        raise TypeError(f"all_finite: expected float32 or float64, got {flat.dtype}")
    return ok


def shuffle(int64_t[::1] order, uint64_t seed):
    """order = a permutation of range(len(order)) drawn from seed."""
    with nogil:
        network_shuffle(&order[0] if order.shape[0] else NULL, order.shape[0], seed)


def shuffle_numpy(int64_t[::1] order, bit_generator):
    """Shuffles order in place as numpy.random.RandomState(bit_generator).shuffle(order)
    would, drawing from bit_generator (a numpy BitGenerator, e.g. a RandomState's
    _bit_generator) under its lock."""
    cdef bitgen_t *source = <bitgen_t *>PyCapsule_GetPointer(bit_generator.capsule,
                                                             "BitGenerator")
    cdef nn_bitgen gen
    gen.state = source.state
    gen.next_uint32 = source.next_uint32
    gen.next_uint64 = source.next_uint64
    with bit_generator.lock:
        with nogil:
            network_shuffle_numpy(&order[0] if order.shape[0] else NULL, order.shape[0], &gen)


def conv1d_forward(real[:, :, ::1] x, real[:, :, ::1] w, b, int stride, int pad_left,
                   int steps_out, int act, double slope=0.01, int nthreads=1):
    """(z, a) of shape (B, steps_out, F) for x (B, L, C) and kernel w (K, C, F)."""
    cdef int B = x.shape[0], L = x.shape[1], C = x.shape[2]
    cdef int K = w.shape[0], F = w.shape[2]
    _conv_check(L, C, K, w.shape[1], stride, pad_left, steps_out)
    dtype = np.asarray(x).dtype
    z_arr = np.zeros((B, steps_out, F), dtype=dtype)
    a_arr = np.zeros((B, steps_out, F), dtype=dtype)
    cols_arr = np.zeros((B * steps_out, K * C), dtype=dtype)
    cdef real[::1] bias
    cdef real *bp = NULL
    if b is not None:
        bias = np.ascontiguousarray(b, dtype=dtype)
        _dims("b", np.asarray(bias), (F,))
        bp = &bias[0]
    if B == 0:
        return z_arr, a_arr
    cdef real[:, :, ::1] z = z_arr, a = a_arr
    cdef real[:, ::1] cols = cols_arr
    with nogil:
        if real is float:
            conv1d_forward_f32(&z[0, 0, 0], &a[0, 0, 0], &cols[0, 0], &x[0, 0, 0], &w[0, 0, 0], bp, B, L, C, steps_out, F, K, stride, pad_left, act, <float>slope, <sgemm_fn>gemm_for(False), nthreads)
        else:
            conv1d_forward_f64(&z[0, 0, 0], &a[0, 0, 0], &cols[0, 0], &x[0, 0, 0], &w[0, 0, 0], bp, B, L, C, steps_out, F, K, stride, pad_left, act, slope, <dgemm_fn>gemm_for(True), nthreads)
    return z_arr, a_arr


def _conv_check(int L, int C, int K, int wC, int stride, int pad_left, int steps_out):
    if wC != C:
        raise ValueError(f"w: expected {C} input channels, got {wC}")
    if K < 1 or stride < 1 or pad_left < 0 or steps_out < 1:
        raise ValueError("kernel size, stride and steps_out must be positive, pad_left >= 0")
    if (steps_out - 1) * stride - pad_left >= L or pad_left >= K:
        raise ValueError("steps_out/pad_left do not fit the input length")


def conv1d_backward(real[:, :, ::1] da, real[:, :, ::1] z, real[:, :, ::1] a,
                    real[:, :, ::1] x, real[:, :, ::1] w, int stride, int pad_left, int act,
                    double slope=0.01, bint need_dx=True, bint has_bias=True, int nthreads=1):
    """(dx, dw, db) for dL/da of shape (B, steps_out, F)."""
    cdef int B = x.shape[0], L = x.shape[1], C = x.shape[2]
    cdef int K = w.shape[0], F = w.shape[2], Lout = da.shape[1]
    _conv_check(L, C, K, w.shape[1], stride, pad_left, Lout)
    for name, arr in (("da", da), ("z", z), ("a", a)):
        _dims(name, np.asarray(arr), (B, Lout, F))
    dtype = np.asarray(x).dtype
    dout_arr = np.array(da, dtype=dtype, copy=True)
    dw_arr = np.zeros((K, C, F), dtype=dtype)
    db_arr = np.zeros(F, dtype=dtype) if has_bias else None
    dx_arr = np.zeros((B, L, C), dtype=dtype) if need_dx else None
    cols_arr = np.zeros((B * Lout, K * C), dtype=dtype)
    if B == 0:
        return dx_arr, dw_arr, db_arr
    cdef real[:, :, ::1] dout = dout_arr, dw = dw_arr, dx
    cdef real[:, ::1] cols = cols_arr
    cdef real[::1] db
    cdef real *dxp = NULL
    cdef real *dbp = NULL
    if need_dx:
        dx = dx_arr
        dxp = &dx[0, 0, 0]
    if has_bias:
        db = db_arr
        dbp = &db[0]
    with nogil:
        if real is float:
            conv1d_im2col_f32(&cols[0, 0], &x[0, 0, 0], B, L, C, Lout, K, stride, pad_left, nthreads)
            conv1d_backward_f32(dxp, &dw[0, 0, 0], dbp, &dout[0, 0, 0], &cols[0, 0], &cols[0, 0], &z[0, 0, 0], &a[0, 0, 0], &w[0, 0, 0], B, L, C, Lout, F, K, stride, pad_left, act, <float>slope, <sgemm_fn>gemm_for(False), nthreads)
        else:
            conv1d_im2col_f64(&cols[0, 0], &x[0, 0, 0], B, L, C, Lout, K, stride, pad_left, nthreads)
            conv1d_backward_f64(dxp, &dw[0, 0, 0], dbp, &dout[0, 0, 0], &cols[0, 0], &cols[0, 0], &z[0, 0, 0], &a[0, 0, 0], &w[0, 0, 0], B, L, C, Lout, F, K, stride, pad_left, act, slope, <dgemm_fn>gemm_for(True), nthreads)
    return dx_arr, dw_arr, db_arr


def maxpool1d_forward(real[:, :, ::1] x, int pool, int stride, int pad_left, int steps_out,
                      int nthreads=1):
    """(out, argmax) of shape (B, steps_out, C); argmax holds input steps (int32)."""
    cdef int B = x.shape[0], L = x.shape[1], C = x.shape[2]
    if pool < 1 or stride < 1 or pad_left < 0 or pad_left >= pool or steps_out < 1 \
            or (steps_out - 1) * stride - pad_left >= L:
        raise ValueError("pool/stride/pad_left/steps_out do not fit the input")
    out_arr = np.zeros((B, steps_out, C), dtype=np.asarray(x).dtype)
    arg_arr = np.zeros((B, steps_out, C), dtype=np.int32)
    if B * C == 0:
        return out_arr, arg_arr
    cdef real[:, :, ::1] out = out_arr
    cdef int32_t[:, :, ::1] arg = arg_arr
    with nogil:
        if real is float:
            maxpool1d_forward_f32(&out[0, 0, 0], &arg[0, 0, 0], &x[0, 0, 0], B, L, C, steps_out, pool, stride, pad_left, nthreads)
        else:
            maxpool1d_forward_f64(&out[0, 0, 0], &arg[0, 0, 0], &x[0, 0, 0], B, L, C, steps_out, pool, stride, pad_left, nthreads)
    return out_arr, arg_arr


def maxpool1d_backward(real[:, :, ::1] dout, int32_t[:, :, ::1] argmax, int steps_in,
                       int nthreads=1):
    """dx of shape (B, steps_in, C)."""
    cdef int B = dout.shape[0], Lout = dout.shape[1], C = dout.shape[2]
    _dims("argmax", np.asarray(argmax), (B, Lout, C))
    arr = np.asarray(argmax)
    if arr.size and (arr.min() < 0 or arr.max() >= steps_in):
        raise ValueError("argmax: steps outside the input")
    dx_arr = np.zeros((B, steps_in, C), dtype=np.asarray(dout).dtype)
    if B * C * Lout == 0:
        return dx_arr
    cdef real[:, :, ::1] dx = dx_arr
    with nogil:
        if real is float:
            maxpool1d_backward_f32(&dx[0, 0, 0], &dout[0, 0, 0], &argmax[0, 0, 0], B, steps_in, C, Lout, nthreads)
        else:
            maxpool1d_backward_f64(&dx[0, 0, 0], &dout[0, 0, 0], &argmax[0, 0, 0], B, steps_in, C, Lout, nthreads)
    return dx_arr


def global_avgpool1d_forward(real[:, :, ::1] x, int nthreads=1):
    cdef int B = x.shape[0], L = x.shape[1], C = x.shape[2]
    out_arr = np.zeros((B, C), dtype=np.asarray(x).dtype)
    if B * L * C == 0:
        return out_arr
    cdef real[:, ::1] out = out_arr
    with nogil:
        if real is float:
            global_avgpool1d_forward_f32(&out[0, 0], &x[0, 0, 0], B, L, C, nthreads)
        else:
            global_avgpool1d_forward_f64(&out[0, 0], &x[0, 0, 0], B, L, C, nthreads)
    return out_arr


def global_avgpool1d_backward(real[:, ::1] dout, int steps_in, int nthreads=1):
    cdef int B = dout.shape[0], C = dout.shape[1]
    dx_arr = np.zeros((B, steps_in, C), dtype=np.asarray(dout).dtype)
    if B * C * steps_in == 0:
        return dx_arr
    cdef real[:, :, ::1] dx = dx_arr
    with nogil:
        if real is float:
            global_avgpool1d_backward_f32(&dx[0, 0, 0], &dout[0, 0], B, steps_in, C, nthreads)
        else:
            global_avgpool1d_backward_f64(&dx[0, 0, 0], &dout[0, 0], B, steps_in, C, nthreads)
    return dx_arr


include "_network.pxi"
