"""Property-based tests (hypothesis) of every compiled kernel against fastnn.reference.

Hypothesis draws the shapes (1s, primes, powers of two), strides, paddings, dtypes, value
ranges (tiny to huge), activations, losses and thread counts; each kernel must match the
float64 NumPy reference within a bound derived from the arithmetic (for sums of products:
a few units in the last place times the number of terms times the sum of absolute terms),
and must give bit-identical results whatever the thread count.

The runs are deterministic (derandomize=True, no example database), so CI sees the same
examples every time, and bounded (max_examples) so the file runs in a few seconds.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

import fastnn
from fastnn import _kernels as K
from fastnn import reference as ref
from fastnn.layers import Conv1D, Dense, Flatten, Input, MaxPooling1D

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
FEW = settings(PROPERTY, max_examples=15)

ACTS = sorted(K.ACTIVATIONS, key=K.ACTIVATIONS.get)
LOSSES = sorted(K.LOSSES, key=K.LOSSES.get)
SPARSE = "sparse_categorical_crossentropy"
DTYPES = st.sampled_from([np.float32, np.float64])
SIZES = st.sampled_from([1, 1, 2, 3, 5, 7, 8, 13, 16, 31])
SMALL = st.sampled_from([1, 2, 3, 5, 7])
SCALES = st.sampled_from([1e-3, 1.0, 30.0, 1e3])
THREADS = st.sampled_from([1, 2, 3, 7])
SLOPE = 0.1


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """fastnn's kernels call BLAS on fixed panels from their own threads (fit and predict
    hold BLAS at one thread); these direct kernel calls do the same."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def eps(dtype):
    return float(np.finfo(dtype).eps)


def within(actual, expected, bound, what=""):
    """|actual - expected| <= bound elementwise (bound: an array or a number)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, what
    assert np.all(np.isfinite(actual)), what
    err = np.abs(actual - expected)
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), err.shape)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else None
    assert np.all(err <= bound), (f"{what}: |{actual[worst]} - {expected[worst]}| = {err[worst]} "
                                  f"> {bound[worst]} at {worst}")


def act_bound(a_ref, z, act, dtype):
    """Rounding bound of the kernels' a = f(z): a few ulps of a; softmax also rounds
    z - max(z) (an absolute error of ulps of |z|, relative in exp) and sums a row."""
    a_ref = np.abs(np.asarray(a_ref, dtype=np.float64))
    width = a_ref.shape[-1]
    rel = (4 + width) * eps(dtype)
    if act == "softmax":
        zmag = np.abs(np.asarray(z, dtype=np.float64)).max(axis=-1, keepdims=True)
        rel = rel + 4 * eps(dtype) * zmag
    return rel * a_ref + np.finfo(dtype).tiny


def array(rng, shape, dtype, scale):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ---- activations --------------------------------------------------------------------------

@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), dtype=DTYPES, rows=SIZES, cols=SIZES,
       act=st.sampled_from(ACTS), scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
       nthreads=THREADS)
def test_activation_forward_backward(seed, dtype, rows, cols, act, scale, nthreads):
    rng = np.random.default_rng(seed)
    code = K.ACTIVATIONS[act]
    z = array(rng, (rows, cols), dtype, scale)
    a = K.activation_forward(z, code, SLOPE)
    assert a.dtype == dtype
    e = eps(dtype)
    a_ref = ref.activation_forward(z, act, SLOPE)
    # Elementwise functions: a few ulps of the result; softmax sums `cols` exponentials.
    within(a, a_ref, act_bound(a_ref, z, act, dtype), act)
    if act == "softmax":
        assert np.all(a >= 0) and np.all(a <= 1)
    da = array(rng, (rows, cols), dtype, 1.0)
    dz = K.activation_backward(da, z, a, code, SLOPE)
    dz_ref = ref.activation_backward(da, z, a, act, SLOPE)
    magnitude = np.abs(da) * (1 + np.abs(a)) ** 2
    if act == "softmax":
        magnitude = magnitude + np.abs(a) * np.sum(np.abs(da * a), axis=1, keepdims=True)
    within(dz, dz_ref, (8 + cols) * e * magnitude + np.finfo(dtype).tiny, act + " backward")
    assert np.array_equal(K.activation_forward(z, code, SLOPE, nthreads=nthreads), a)
    assert np.array_equal(K.activation_backward(da, z, a, code, SLOPE, nthreads=nthreads), dz)


# ---- dense ------------------------------------------------------------------------------

def gemm_bound(n_terms, abs_product, dtype):
    """Error bound of a float sum of n products: gamma_n * sum |terms| (Higham), padded."""
    return 2.0 * (n_terms + 2) * eps(dtype) * abs_product + np.finfo(dtype).tiny


def dz_error(da, a, width, dtype):
    """Bound on the rounding of the kernels' dz = da f'(z) (a float32 1 - a^2 near a = 1
    keeps only an absolute accuracy; softmax sums `width` products)."""
    return (8 + width) * eps(dtype) * np.abs(da.astype(np.float64)) * (1 + np.abs(a)) ** 2 \
        * (1 + width * np.abs(a))


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), dtype=DTYPES, B=SIZES, C=SIZES, OC=SIZES,
       act=st.sampled_from(ACTS), bias=st.booleans(), scale=SCALES, nthreads=THREADS)
def test_dense_forward_backward(seed, dtype, B, C, OC, act, bias, scale, nthreads):
    rng = np.random.default_rng(seed)
    code = K.ACTIVATIONS[act]
    x = array(rng, (B, C), dtype, scale)
    w = array(rng, (C, OC), dtype, 1.0 / np.sqrt(C))
    b = array(rng, OC, dtype, 1.0) if bias else None
    z, a = K.dense_forward(x, w, b, code, SLOPE)
    z_ref, _ = ref.dense_forward(x, w, b, "linear")
    abs_z = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64))
    if bias:
        abs_z = abs_z + np.abs(b.astype(np.float64))
    within(z, z_ref, gemm_bound(C + 1, abs_z, dtype), "z")
    # a = f(z) of the kernel's own z (isolates the activation from the GEMM rounding)
    a_of_z = ref.activation_forward(z, act, SLOPE)
    within(a, a_of_z, act_bound(a_of_z, z, act, dtype), "a")

    da = array(rng, (B, OC), dtype, 1.0)
    dx, dw, db = K.dense_backward(da, z, a, x, w, code, SLOPE, need_dx=True, has_bias=bias)
    dz = ref.activation_backward(da, z, a, act, SLOPE)
    # the kernel's dz differs from the float64 one by a few roundings of da * f'(z)
    dz_err = dz_error(da, a, OC, dtype)
    ax, aw, adz = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64)), np.abs(dz)
    within(dw, x.astype(np.float64).T @ dz, ax.T @ dz_err + gemm_bound(B, ax.T @ adz, dtype), "dw")
    within(dx, dz @ w.astype(np.float64).T, dz_err @ aw.T + gemm_bound(OC, adz @ aw.T, dtype), "dx")
    if bias:
        within(db, dz.sum(axis=0), dz_err.sum(axis=0) + gemm_bound(B, adz.sum(axis=0), dtype), "db")
    else:
        assert db is None

    z2, a2 = K.dense_forward(x, w, b, code, SLOPE, nthreads=nthreads)
    assert np.array_equal(z2, z) and np.array_equal(a2, a)
    dx2, dw2, db2 = K.dense_backward(da, z, a, x, w, code, SLOPE, need_dx=True,
                                     has_bias=bias, nthreads=nthreads)
    assert np.array_equal(dx2, dx) and np.array_equal(dw2, dw)
    assert (db is None and db2 is None) or np.array_equal(db2, db)


@FEW
@given(seed=st.integers(0, 2**32 - 1), dtype=DTYPES,
       B=st.sampled_from([64, 97, 128, 257]), C=st.sampled_from([31, 64, 101]),
       OC=st.sampled_from([97, 128, 263]), nthreads=st.sampled_from([2, 3, 5]))
def test_dense_large_enough_for_threads_is_thread_count_independent(seed, dtype, B, C, OC,
                                                                    nthreads):
    """Shapes past the kernels' thresholds for panels and OpenMP: bit-identical results
    with 1 thread and with several."""
    rng = np.random.default_rng(seed)
    x, w, b = array(rng, (B, C), dtype, 1.0), array(rng, (C, OC), dtype, 0.2), array(rng, OC, dtype, 1)
    code = K.ACTIVATIONS["tanh"]
    z1, a1 = K.dense_forward(x, w, b, code, nthreads=1)
    zn, an = K.dense_forward(x, w, b, code, nthreads=nthreads)
    assert np.array_equal(z1, zn) and np.array_equal(a1, an)
    da = array(rng, (B, OC), dtype, 1.0)
    g1 = K.dense_backward(da, z1, a1, x, w, code, nthreads=1)
    gn = K.dense_backward(da, z1, a1, x, w, code, nthreads=nthreads)
    for u, v in zip(g1, gn):
        assert np.array_equal(u, v)


# ---- losses and metrics --------------------------------------------------------------------

def loss_data(rng, name, from_logits, B, Kc, dtype, scale):
    if from_logits or name == "mean_squared_error":
        # clipped to 3e38: every logit a float32 can hold
        pred = np.clip(rng.standard_normal((B, Kc)) * scale, -3e38, 3e38)
    elif name == "binary_crossentropy":
        pred = rng.uniform(1e-4, 1 - 1e-4, size=(B, Kc))
    else:  # probabilities of rows (not clipped: away from 0 and 1)
        pred = ref.softmax(rng.standard_normal((B, Kc)))
    if name == SPARSE:
        y = rng.integers(0, Kc, size=(B, 1)).astype(np.float64)
    elif name == "categorical_crossentropy":
        y = rng.dirichlet(np.ones(Kc), size=B) if rng.random() < 0.5 else np.eye(Kc)[rng.integers(0, Kc, B)]
    elif name == "binary_crossentropy":
        y = rng.uniform(0, 1, size=(B, Kc)) if rng.random() < 0.5 else rng.integers(0, 2, (B, Kc)) * 1.0
    else:
        y = rng.standard_normal((B, Kc)) * scale
    return pred.astype(dtype), y.astype(dtype)


def reference_loss(name, pred, y, from_logits):
    if name == "mean_squared_error":
        return ref.mean_squared_error(pred, y)
    return getattr(ref, name)(pred, y, from_logits=from_logits)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), dtype=DTYPES, B=SIZES, Kc=SIZES,
       name=st.sampled_from(LOSSES), from_logits=st.booleans(),
       scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4, 1e30, 1e38]), nthreads=THREADS)
def test_loss_value_and_gradient(seed, dtype, B, Kc, name, from_logits, scale, nthreads):
    """Logits from 1e-3 to 3e38 (all float32 can hold): the value and gradient are finite
    and exact to a few ulps of the magnitudes involved."""
    if name == "mean_squared_error" and scale > 1e30:
        scale = 1e30  # a mean of (3e38)^2 overflows float64 too
    rng = np.random.default_rng(seed)
    pred, y = loss_data(rng, name, from_logits, B, Kc, dtype, scale)
    value, grad = K.loss(K.LOSSES[name], pred, y, from_logits=from_logits)
    value_ref, grad_ref = reference_loss(name, pred, y, from_logits)
    assert np.isfinite(value) and np.all(np.isfinite(grad)), (value, grad)
    e = eps(dtype)
    p64, y64 = pred.astype(np.float64), y.astype(np.float64)
    if name == "mean_squared_error":
        terms = (p64 - y64) ** 2
        value_tol = 4 * e * terms.mean() + 1e-300
        grad_tol = 4 * e * np.abs(p64 - y64) / pred.size + 1e-300
    elif from_logits:
        # per element: a few roundings of max(|z|, log terms) (z y - z cancels in BCE)
        mag = np.abs(p64) + 1.0
        value_tol = 8 * (Kc + 2) * e * mag.max(axis=1).mean() * (1 if name != "binary_crossentropy" else 1)
        grad_tol = 4 * (Kc + 2) * e / (B if name != "binary_crossentropy" else B * Kc)
    else:
        value_tol = 8 * (Kc + 2) * e * (abs(value_ref) + 1)
        grad_tol = 8 * (Kc + 2) * e * (np.abs(grad_ref) + np.abs(grad_ref).max() / Kc)
    within(value, value_ref, value_tol, f"{name} value")
    within(grad, grad_ref, grad_tol, f"{name} grad")
    v2, g2 = K.loss(K.LOSSES[name], pred, y, from_logits=from_logits, nthreads=nthreads)
    assert v2 == value and np.array_equal(g2, grad)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), dtype=DTYPES, B=SIZES, Kc=SIZES,
       name=st.sampled_from(sorted(K.METRICS)), from_logits=st.booleans(),
       ties=st.booleans())
def test_metric_sums(seed, dtype, B, Kc, name, from_logits, ties):
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal((B, Kc))
    if ties:  # few distinct values: argmax ties, values on the threshold
        pred = np.round(pred * 2) / 4 + (0 if from_logits else 0.5)
    if name == "sparse_categorical_accuracy":
        y = rng.integers(0, Kc, size=(B, 1)) * 1.0
    elif name == "categorical_accuracy":
        y = np.eye(Kc)[rng.integers(0, Kc, size=B)]
    elif name == "binary_accuracy":
        y = rng.integers(0, 2, size=(B, Kc)) * 1.0
    else:
        y = rng.standard_normal((B, Kc))
    pred, y = pred.astype(dtype), y.astype(dtype)
    total = K.metric_sum(K.METRICS[name], pred, y, from_logits=from_logits)
    if name == "binary_accuracy":
        expected = ref.binary_accuracy(pred, y, from_logits=from_logits) * B
    elif name == "mean_squared_error":
        expected = ref.mean_squared_error_metric(pred, y) * B
    else:
        expected = getattr(ref, name)(pred, y) * B
    if "accuracy" in name:  # counts: exact up to the per-row mean over labels
        assert total == pytest.approx(expected, rel=1e-12, abs=1e-12)
    else:
        assert total == pytest.approx(expected, rel=(4 + Kc) * eps(dtype) * 4, abs=1e-300)


# ---- optimizers -----------------------------------------------------------------------------

@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), dtype=DTYPES,
       n=st.sampled_from([1, 2, 3, 7, 13, 64, 1021, 40009]),
       kind=st.sampled_from(["sgd", "sgd_momentum", "nesterov", "adam", "rmsprop",
                             "rmsprop_momentum"]),
       gscale=st.sampled_from([1e-39, 1e-6, 1.0, 1e6]), lr=st.sampled_from([1e-4, 0.01, 1.0]),
       steps=st.integers(1, 4), nthreads=THREADS)
def test_optimizer_steps(seed, dtype, n, kind, gscale, lr, steps, nthreads):
    """Several steps from random weights; gradients down to subnormals (flushed to zero in
    the kernels, kept by the reference: the difference is below any tolerance)."""
    rng = np.random.default_rng(seed)
    h = lambda v: float(dtype(v))  # noqa: E731  the hyperparameters as the kernel holds them
    w0 = rng.standard_normal(n).astype(dtype)
    grads = [(rng.standard_normal(n) * gscale).astype(dtype) for _ in range(steps)]

    def reference(grads):
        rw, r1, r2 = w0.astype(np.float64), np.zeros(n), np.zeros(n)
        for t, g in enumerate(grads, start=1):
            if kind.startswith("sgd") or kind == "nesterov":
                mom = 0.0 if kind == "sgd" else 0.9
                rw, r1 = ref.sgd_update(rw, g, r1, h(lr), h(mom), kind == "nesterov")
            elif kind == "adam":
                rw, r1, r2 = ref.adam_update(rw, g, r1, r2, t, lr, h(0.9), h(0.999), h(1e-7))
            else:
                mom = 0.5 if kind == "rmsprop_momentum" else 0.0
                rw, r1, r2 = ref.rmsprop_update(rw, g, r1, r2, h(lr), h(0.9), h(mom), h(1e-7))
        return rw, r1, r2

    states = {}
    for nt in (1, nthreads):
        w, s1, s2 = w0.copy(), np.zeros(n, dtype), np.zeros(n, dtype)
        for t, g in enumerate(grads, start=1):
            if kind.startswith("sgd") or kind == "nesterov":
                mom = 0.0 if kind == "sgd" else 0.9
                K.sgd_update(w, g, s1, lr, mom, kind == "nesterov", nthreads=nt)
            elif kind == "adam":
                K.adam_update(w, g, s1, s2, t, lr, 0.9, 0.999, 1e-7, nthreads=nt)
            else:
                mom = 0.5 if kind == "rmsprop_momentum" else 0.0
                K.rmsprop_update(w, g, s1, s2, lr, 0.9, mom, 1e-7, nthreads=nt)
        states[nt] = (w, s1, s2)
    expected = reference(grads)
    # The same recurrences on |g| (-|g| for SGD's velocity) add magnitudes where the real
    # ones may cancel: the size of the terms that were rounded.
    magnitude = reference([-np.abs(g) if kind in ("sgd", "sgd_momentum", "nesterov")
                           else np.abs(g) for g in grads])
    e = eps(dtype)
    tiny = 1e-30 if dtype == np.float32 else 1e-300  # subnormals flushed (FTZ/DAZ)
    w, s1, s2 = states[1]
    moved = np.abs(magnitude[0] - w0)
    within(w, expected[0], 16 * steps * e * (np.abs(expected[0]) + moved) + lr * tiny, f"{kind} w")
    for k, (got, exp, mag) in enumerate(zip((s1, s2), expected[1:], magnitude[1:])):
        if k == 1 and not (kind == "adam" or kind.startswith("rmsprop")):
            continue
        within(got, exp, 16 * steps * e * np.abs(mag) + tiny, f"{kind} slot {k}")
    for a, b in zip(states[1], states[nthreads]):
        assert np.array_equal(a, b)


# ---- conv1d and pooling ----------------------------------------------------------------------

@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), dtype=DTYPES, B=SMALL,
       L=st.sampled_from([1, 2, 3, 5, 8, 13, 17, 32]), C=SMALL, F=SMALL,
       Kw=st.sampled_from([1, 2, 3, 5, 7]), stride=st.sampled_from([1, 2, 3, 5]),
       padding=st.sampled_from(["valid", "same"]), act=st.sampled_from(ACTS),
       bias=st.booleans(), scale=SCALES, nthreads=THREADS)
def test_conv1d_forward_backward(seed, dtype, B, L, C, F, Kw, stride, padding, act, bias,
                                 scale, nthreads):
    if padding == "valid" and Kw > L:
        Kw = L  # a window longer than the input is rejected by the layer
    rng = np.random.default_rng(seed)
    code = K.ACTIVATIONS[act]
    x = array(rng, (B, L, C), dtype, scale)
    w = array(rng, (Kw, C, F), dtype, 1.0 / np.sqrt(Kw * C))
    b = array(rng, F, dtype, 1.0) if bias else None
    steps_out, pad_left = ref.conv1d_output_length(L, Kw, stride, padding)
    z, a = K.conv1d_forward(x, w, b, stride, pad_left, steps_out, code, SLOPE)
    z_ref, _ = ref.conv1d_forward(x, w, b, stride, padding, "linear")
    abs_z, _ = ref.conv1d_forward(np.abs(x), np.abs(w), None if b is None else np.abs(b),
                                  stride, padding, "linear")
    within(z, z_ref, gemm_bound(Kw * C + 1, abs_z, dtype), "conv z")
    a_of_z = ref.activation_forward(z, act, SLOPE)
    within(a, a_of_z, act_bound(a_of_z, z, act, dtype), "conv a")

    da = array(rng, z.shape, dtype, 1.0)
    dx, dw, db = K.conv1d_backward(da, z, a, x, w, stride, pad_left, code, SLOPE,
                                   need_dx=True, has_bias=bias)
    dz = ref.activation_backward(da, z, a, act, SLOPE)
    dz_err = dz_error(da, a, F, dtype)
    dx_ref, dw_ref, db_ref = ref.conv1d_backward(dz, x, w, z, a, stride, padding, "linear")
    dx_abs, dw_abs, db_abs = ref.conv1d_backward(np.abs(dz), np.abs(x), np.abs(w), z, a,
                                                 stride, padding, "linear")
    dx_e, dw_e, db_e = ref.conv1d_backward(dz_err, np.abs(x), np.abs(w), z, a, stride,
                                           padding, "linear")
    within(dw, dw_ref, dw_e + gemm_bound(B * steps_out, dw_abs, dtype), "conv dw")
    within(dx, dx_ref, dx_e + gemm_bound(F * Kw, dx_abs, dtype), "conv dx")
    if bias:
        within(db, db_ref, db_e + gemm_bound(B * steps_out, db_abs, dtype), "conv db")

    z2, a2 = K.conv1d_forward(x, w, b, stride, pad_left, steps_out, code, SLOPE, nthreads=nthreads)
    assert np.array_equal(z2, z) and np.array_equal(a2, a)
    g2 = K.conv1d_backward(da, z, a, x, w, stride, pad_left, code, SLOPE, need_dx=True,
                           has_bias=bias, nthreads=nthreads)
    for u, v in zip((dx, dw, db), g2):
        assert (u is None and v is None) or np.array_equal(u, v)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), dtype=DTYPES, B=SMALL,
       L=st.sampled_from([1, 2, 3, 5, 8, 13, 17, 32]), C=SMALL,
       pool=st.sampled_from([1, 2, 3, 5]), stride=st.sampled_from([None, 1, 2, 3]),
       padding=st.sampled_from(["valid", "same"]), ties=st.booleans(), nthreads=THREADS)
def test_maxpool1d(seed, dtype, B, L, C, pool, stride, padding, ties, nthreads):
    if padding == "valid" and pool > L:
        pool = L
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, L, C))
    if ties:
        x = np.round(x)  # many equal values: the first maximum wins, as the reference
    x = x.astype(dtype)
    s = pool if stride is None else stride
    steps_out, pad_left = ref.conv1d_output_length(L, pool, s, padding)
    out, arg = K.maxpool1d_forward(x, pool, s, pad_left, steps_out)
    out_ref, arg_ref = ref.maxpool1d_forward(x, pool, s, padding)
    assert np.array_equal(out, out_ref.astype(dtype)) and np.array_equal(arg, arg_ref)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = K.maxpool1d_backward(dout, arg, L)
    # overlapping windows add up: at most ceil(pool / stride) terms per input step
    within(dx, ref.maxpool1d_backward(dout, arg_ref, L), 4 * pool * eps(dtype) * np.abs(dout).max())
    out2, arg2 = K.maxpool1d_forward(x, pool, s, pad_left, steps_out, nthreads=nthreads)
    assert np.array_equal(out2, out) and np.array_equal(arg2, arg)
    assert np.array_equal(K.maxpool1d_backward(dout, arg, L, nthreads=nthreads), dx)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), dtype=DTYPES, B=SMALL,
       L=st.sampled_from([1, 2, 3, 7, 31, 64]), C=SMALL, scale=SCALES, nthreads=THREADS)
def test_global_average_pooling(seed, dtype, B, L, C, scale, nthreads):
    rng = np.random.default_rng(seed)
    x = array(rng, (B, L, C), dtype, scale)
    out = K.global_avgpool1d_forward(x)
    within(out, ref.global_avgpool1d_forward(x),
           gemm_bound(L, np.abs(x.astype(np.float64)).mean(axis=1), dtype))
    dout = array(rng, (B, C), dtype, 1.0)
    dx = K.global_avgpool1d_backward(dout, L)
    within(dx, ref.global_avgpool1d_backward(dout, L), 4 * eps(dtype) * np.abs(dout).max() / L)
    assert np.array_equal(K.global_avgpool1d_forward(x, nthreads=nthreads), out)
    assert np.array_equal(K.global_avgpool1d_backward(dout, L, nthreads=nthreads), dx)


@PROPERTY
@given(n=st.integers(0, 300), seed=st.integers(0, 2**64 - 1))
def test_shuffle_is_a_seeded_permutation(n, seed):
    a = np.empty(n, dtype=np.int64)
    b = np.empty(n, dtype=np.int64)
    K.shuffle(a, seed)
    K.shuffle(b, seed)
    assert np.array_equal(a, b)
    assert np.array_equal(np.sort(a), np.arange(n))


# ---- the whole network ------------------------------------------------------------------------

@FEW
@given(seed=st.integers(0, 2**32 - 1),
       widths=st.lists(st.sampled_from([1, 2, 3, 5, 7, 16]), min_size=1, max_size=3),
       acts=st.lists(st.sampled_from(ACTS), min_size=3, max_size=3),
       loss=st.sampled_from(LOSSES), from_logits=st.booleans(),
       n=st.sampled_from([1, 2, 7, 13]), features=st.sampled_from([1, 3, 5]))
def test_network_training_step_matches_reference(seed, widths, acts, loss, from_logits, n,
                                                 features):
    """One full-batch SGD step of a random float64 dense stack, against the reference."""
    rng = np.random.default_rng(seed)
    out = widths[-1]
    if loss in (SPARSE, "categorical_crossentropy") and out < 2:
        widths = widths[:-1] + [2]
        out = 2
    last = acts[len(widths) - 1]
    if not from_logits and loss != "mean_squared_error":
        last = "sigmoid" if loss == "binary_crossentropy" else "softmax"  # probabilities
    layer_acts = list(acts[:len(widths) - 1]) + [last]
    model = fastnn.Sequential([Dense(u, activation=a) for u, a in zip(widths, layer_acts)],
                              dtype="float64")
    model.build((features,))
    weights = [rng.standard_normal(w.shape) * 0.5 for w in model.get_weights()]
    model.set_weights(weights)
    losses = {"binary_crossentropy": fastnn.losses.BinaryCrossentropy,
              SPARSE: fastnn.losses.SparseCategoricalCrossentropy,
              "categorical_crossentropy": fastnn.losses.CategoricalCrossentropy}
    loss_obj = losses[loss](from_logits=from_logits) if loss in losses else "mse"
    model.compile(optimizer=fastnn.optimizers.SGD(0.1), loss=loss_obj)
    x = rng.standard_normal((n, features))
    if loss == SPARSE:
        y = rng.integers(0, out, size=n)
    elif loss == "categorical_crossentropy":
        y = np.eye(out)[rng.integers(0, out, size=n)]
    elif loss == "binary_crossentropy":
        y = rng.integers(0, 2, size=(n, out)) * 1.0
    else:
        y = rng.standard_normal((n, out))
    hist = model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0, seed=0)
    layers = [(weights[2 * i], weights[2 * i + 1], a) for i, a in enumerate(layer_acts)]
    y_ref = np.asarray(y, dtype=np.float64).reshape(n, -1)
    new_layers, _, value = ref.reference_train_step(layers, x, y_ref, loss, from_logits,
                                                    {"name": "sgd", "learning_rate": 0.1})
    assert hist.history["loss"][0] == pytest.approx(value, rel=1e-9, abs=1e-12)
    for got, exp in zip(model.get_weights(), ref.network_weights(new_layers)):
        np.testing.assert_allclose(got, exp, rtol=1e-9, atol=1e-11)


@FEW
@given(seed=st.integers(0, 2**32 - 1), dtype=DTYPES,
       steps=st.sampled_from([5, 8, 13, 16]), channels=st.sampled_from([1, 2, 3]),
       view=st.sampled_from(["strided", "fortran", "readonly", "byteswapped", "float16",
                             "list", "int"]))
def test_any_input_layout_is_read_as_its_values(seed, dtype, steps, channels, view):
    """Non-contiguous, read-only, byte-swapped, other-dtype inputs are copied or converted,
    never misread: the predictions equal those of the plain contiguous array."""
    rng = np.random.default_rng(seed)
    fastnn.set_random_seed(seed % 1000)
    model = fastnn.Sequential([Input((steps, channels)), Conv1D(3, 2, padding="same",
                                                               activation="relu"),
                               MaxPooling1D(2, padding="same"), Flatten(), Dense(2)],
                              dtype=np.dtype(dtype).name)
    x = rng.standard_normal((6, steps, channels))
    if view in ("float16", "int"):
        x = np.round(x * 4) / 4  # exactly representable in the other dtype
    x = x.astype(dtype)
    if view == "strided":
        wide = np.zeros((12, steps, 2 * channels), dtype)
        wide[::2, :, ::2] = x
        xv = wide[::2, :, ::2]
    elif view == "fortran":
        xv = np.asfortranarray(x)
    elif view == "readonly":
        xv = x.copy()
        xv.setflags(write=False)
    elif view == "byteswapped":
        xv = x.astype(x.dtype.newbyteorder(">"))
    elif view == "float16":
        xv = x.astype(np.float16)
    elif view == "list":
        xv = x.tolist()
    else:
        xv = (x * 4).astype(np.int32)
        x = xv.astype(dtype)
    expected = model.predict(np.ascontiguousarray(x))
    assert np.array_equal(model.predict(xv), expected)
