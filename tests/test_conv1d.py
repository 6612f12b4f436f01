"""src_c/conv1d.c through fastnn._kernels (conv1d_forward/backward, maxpool1d_forward/
backward, global_avgpool1d_forward/backward) against the NumPy reference in
fastnn.reference, and the reference itself against central differences and a brute-force
reading of the definition."""

import itertools
import zlib

import numpy as np
import pytest

from fastnn import _kernels as K
from fastnn import reference as ref

ACTS = sorted(K.ACTIVATIONS, key=K.ACTIVATIONS.get)
PADDINGS = ("valid", "same")
SLOPE = 0.1  # a leaky_relu slope unlike the default, so a dropped slope shows
# float64: short sums of products, exact to a few ulps of the magnitude;
# float32: GEMM results to ~1e-4 of the magnitude; pooling is a max (exact) or a mean.
TOL = {np.float64: dict(rtol=1e-10, atol=1e-13), np.float32: dict(rtol=1e-4, atol=1e-5)}
POOL_TOL = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=1e-6, atol=1e-6)}


pytestmark = pytest.mark.usefixtures("one_blas_thread")


def seed_of(*parts):
    return zlib.crc32(repr(parts).encode())


def close(actual, expected, dtype, what="", tol=TOL):
    expected = np.asarray(expected, dtype=np.float64)
    assert actual is not None, what
    assert actual.dtype == dtype, what
    assert actual.shape == expected.shape, what
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1.0)
    t = tol[dtype]
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=t["rtol"],
                               atol=t["atol"] * scale, err_msg=what)


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    scale = max(np.linalg.norm(a), np.linalg.norm(b), 1e-8)
    return np.linalg.norm(a - b) / scale


def conv_problem(rng, B, L, C, F, Kw, dtype, use_bias=True):
    x = rng.standard_normal((B, L, C)).astype(dtype)
    w = (rng.standard_normal((Kw, C, F)) / np.sqrt(Kw * C)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype) if use_bias else None
    return x, w, b


def run_conv(x, w, b, stride, padding, act, dtype, need_dx=True, nthreads=1, da=None,
             rng=None):
    """Compiled forward and backward; returns (z, a, da, dx, dw, db)."""
    steps_out, pad_left = ref.conv1d_output_length(x.shape[1], w.shape[0], stride, padding)
    code = K.ACTIVATIONS[act]
    z, a = K.conv1d_forward(x, w, b, stride, pad_left, steps_out, code, slope=SLOPE,
                            nthreads=nthreads)
    if da is None:
        da = rng.standard_normal(z.shape).astype(dtype)
    da_copy = da.copy()
    dx, dw, db = K.conv1d_backward(da, z, a, x, w, stride, pad_left, code, slope=SLOPE,
                                   need_dx=need_dx, has_bias=b is not None, nthreads=nthreads)
    np.testing.assert_array_equal(da, da_copy)  # the binding works on a copy
    return z, a, da, dx, dw, db


def check_conv(x, w, b, stride, padding, act, dtype, rng, need_dx=True, nthreads=1):
    z, a, da, dx, dw, db = run_conv(x, w, b, stride, padding, act, dtype, need_dx,
                                    nthreads, rng=rng)
    z_ref, a_ref = ref.conv1d_forward(x, w, b, stride, padding, act, SLOPE)
    close(z, z_ref, dtype, "z")
    close(a, a_ref, dtype, "a")
    # The backward from the kernel's own z, a (as in training), against the reference.
    dx_ref, dw_ref, db_ref = ref.conv1d_backward(da, x, w, z, a, stride, padding, act, SLOPE)
    close(dw, dw_ref, dtype, "dw")
    if b is None:
        assert db is None
    else:
        close(db, db_ref, dtype, "db")
    if need_dx:
        close(dx, dx_ref, dtype, "dx")
    else:
        assert dx is None


# ---- geometry: kernel 1..7, stride 1..3, both paddings, uneven lengths ---------------

def lengths_for(kernel, stride, padding):
    """Input lengths: the kernel itself, one more, and a longer one that the stride does
    not divide evenly; 'same' also takes inputs shorter than the kernel."""
    out = {kernel, kernel + 1, 2 * kernel + stride + 2}
    if padding == "same":
        out |= {1, max(kernel - 2, 1)}
    return sorted(out)


GEOMETRIES = [(k, s, p, L) for k in range(1, 8) for s in (1, 2, 3) for p in PADDINGS
              for L in lengths_for(k, s, p)]
# (batch, in channels, filters): one channel/one filter at batch 1, and many of each.
CHANNELS = [(1, 1, 1), (3, 4, 5)]


def test_geometries_include_uneven_strides():
    uneven = [g for g in GEOMETRIES if g[1] > 1 and (
        (g[2] == "valid" and (g[3] - g[0]) % g[1]) or (g[2] == "same" and g[3] % g[1]))]
    assert len(uneven) > 40


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bcf", CHANNELS)
@pytest.mark.parametrize("kernel,stride,padding,L", GEOMETRIES)
def test_conv_geometry_matches_reference(kernel, stride, padding, L, bcf, dtype):
    B, C, F = bcf
    rng = np.random.default_rng(seed_of(kernel, stride, padding, L, bcf))
    x, w, b = conv_problem(rng, B, L, C, F, kernel, dtype)
    check_conv(x, w, b, stride, padding, "linear", dtype, rng)


# ---- every activation fused, with and without bias, need_dx off ----------------------

# (B, L, C, F, kernel, stride, padding)
ACT_SHAPES = [(1, 9, 1, 1, 3, 2, "same"), (2, 11, 3, 4, 4, 3, "valid"),
              (3, 10, 2, 7, 5, 1, "same"), (1, 8, 5, 3, 2, 2, "valid")]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("use_bias,need_dx", [(True, True), (False, True), (True, False),
                                              (False, False)])
@pytest.mark.parametrize("shape", ACT_SHAPES)
@pytest.mark.parametrize("act", ACTS)
def test_conv_activations_match_reference(act, shape, use_bias, need_dx, dtype):
    B, L, C, F, kernel, stride, padding = shape
    rng = np.random.default_rng(seed_of(act, shape, use_bias, need_dx))
    x, w, b = conv_problem(rng, B, L, C, F, kernel, dtype, use_bias)
    check_conv(x, w, b, stride, padding, act, dtype, rng, need_dx=need_dx)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_exact_on_small_integers(dtype):
    """Small integers make every product and sum exact: the kernel must be exact too."""
    rng = np.random.default_rng(5)
    for stride, padding in itertools.product((1, 2, 3), PADDINGS):
        x = rng.integers(-3, 4, size=(2, 13, 3)).astype(dtype)
        w = rng.integers(-3, 4, size=(4, 3, 2)).astype(dtype)
        b = rng.integers(-3, 4, size=2).astype(dtype)
        da = rng.integers(-3, 4, size=(2,) + ref.conv1d_forward(x, w, b, stride, padding)[0].shape[1:]).astype(dtype)
        z, a, _, dx, dw, db = run_conv(x, w, b, stride, padding, "linear", dtype, da=da)
        z_ref, _ = ref.conv1d_forward(x, w, b, stride, padding)
        dx_ref, dw_ref, db_ref = ref.conv1d_backward(da, x, w, z_ref, z_ref, stride, padding)
        np.testing.assert_array_equal(z, z_ref)
        np.testing.assert_array_equal(a, z_ref)
        np.testing.assert_array_equal(dx, dx_ref)
        np.testing.assert_array_equal(dw, dw_ref)
        np.testing.assert_array_equal(db, db_ref)


def test_conv_softmax_rows_sum_to_one():
    rng = np.random.default_rng(6)
    x, w, b = conv_problem(rng, 4, 30, 3, 6, 5, np.float64)
    steps_out, pad_left = ref.conv1d_output_length(30, 5, 2, "same")
    _, a = K.conv1d_forward(x, 10 * w, b, 2, pad_left, steps_out, K.ACTIVATIONS["softmax"])
    np.testing.assert_allclose(a.sum(axis=-1), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_binding_shape_checks(dtype):
    x = np.zeros((2, 10, 3), dtype)
    w = np.zeros((4, 3, 2), dtype)
    with pytest.raises(ValueError):  # channels of w differ from x
        K.conv1d_forward(x, np.zeros((4, 2, 2), dtype), None, 1, 0, 7, 0)
    with pytest.raises(ValueError):  # bias of the wrong length
        K.conv1d_forward(x, w, np.zeros(3, dtype), 1, 0, 7, 0)
    with pytest.raises(ValueError):  # more output steps than the input holds
        K.conv1d_forward(x, w, None, 1, 0, 11, 0)
    with pytest.raises(ValueError):  # padding as long as the kernel
        K.conv1d_forward(x, w, None, 1, 4, 7, 0)
    z = np.zeros((2, 7, 2), dtype)
    with pytest.raises(ValueError):  # da of the wrong shape
        K.conv1d_backward(np.zeros((2, 6, 2), dtype), z, z, x, w, 1, 0, 0)


# ---- max pooling -----------------------------------------------------------------------

POOL_GEOMETRIES = [(p, s, pad, L) for p in (1, 2, 3, 4) for s in (1, 2, 3) for pad in PADDINGS
                   for L in sorted({p, p + 1, 2 * p + s + 2} | ({1, 2} if pad == "same" else set()))]


def run_pool(x, pool, stride, padding, nthreads=1):
    steps_out, pad_left = ref.conv1d_output_length(x.shape[1], pool, stride, padding)
    return K.maxpool1d_forward(x, pool, stride, pad_left, steps_out, nthreads=nthreads)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bc", [(1, 1), (3, 4)])
@pytest.mark.parametrize("pool,stride,padding,L", POOL_GEOMETRIES)
def test_maxpool_matches_reference(pool, stride, padding, L, bc, dtype):
    B, C = bc
    rng = np.random.default_rng(seed_of(pool, stride, padding, L, bc))
    x = rng.standard_normal((B, L, C)).astype(dtype)
    out, arg = run_pool(x, pool, stride, padding)
    out_ref, arg_ref = ref.maxpool1d_forward(x, pool, stride, padding)
    assert out.dtype == dtype and arg.dtype == np.int32
    np.testing.assert_array_equal(out, out_ref.astype(dtype))  # a max is exact
    np.testing.assert_array_equal(arg, arg_ref)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = K.maxpool1d_backward(dout, arg, L)
    close(dx, ref.maxpool1d_backward(dout, arg_ref, L), dtype, "dx", POOL_TOL)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("pool,stride", [(2, 1), (3, 1), (3, 2), (4, 3), (2, 3), (1, 2)])
def test_maxpool_ties_take_the_first_step(pool, stride, padding, dtype):
    rng = np.random.default_rng(seed_of(pool, stride, padding, "ties"))
    x = rng.integers(-1, 2, size=(3, 17, 5)).astype(dtype)  # ties in nearly every window
    x[0] = 0.0  # every window one long tie
    out, arg = run_pool(x, pool, stride, padding)
    out_ref, arg_ref = ref.maxpool1d_forward(x, pool, stride, padding)
    np.testing.assert_array_equal(out, out_ref.astype(dtype))
    np.testing.assert_array_equal(arg, arg_ref)
    # In the all-zero sample every argmax is the window's first real step.
    steps_out, pad_left = ref.conv1d_output_length(17, pool, stride, padding)
    first = np.maximum(np.arange(steps_out) * stride - pad_left, 0)
    np.testing.assert_array_equal(arg[0], np.broadcast_to(first[:, None], (steps_out, 5)))
    dout = rng.standard_normal(out.shape).astype(dtype)
    close(K.maxpool1d_backward(dout, arg, 17), ref.maxpool1d_backward(dout, arg_ref, 17),
          dtype, "dx", POOL_TOL)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pool,stride,L", [(2, 2, 7), (3, 2, 8), (4, 1, 5), (4, 3, 10), (3, 3, 1)])
def test_maxpool_same_ignores_padding(pool, stride, L, dtype):
    """'same' windows that hang over the ends take the max of their real steps: with all
    inputs negative, a zero-padded max would show as 0."""
    rng = np.random.default_rng(seed_of(pool, stride, L, "neg"))
    x = (-1.0 - rng.random((2, L, 3))).astype(dtype)
    out, arg = run_pool(x, pool, stride, "same")
    assert (out < 0).all()
    assert ((arg >= 0) & (arg < L)).all()
    out_ref, arg_ref = ref.maxpool1d_forward(x, pool, stride, "same")
    np.testing.assert_array_equal(out, out_ref.astype(dtype))
    np.testing.assert_array_equal(arg, arg_ref)


def test_maxpool_binding_checks():
    x = np.zeros((2, 10, 3))
    with pytest.raises(ValueError):
        K.maxpool1d_forward(x, 2, 2, 0, 6)  # one output step too many
    with pytest.raises(ValueError):
        K.maxpool1d_forward(x, 2, 2, 2, 5)  # padding as long as the pool
    with pytest.raises(ValueError):
        K.maxpool1d_backward(np.zeros((2, 5, 3)), np.full((2, 5, 3), 10, np.int32), 10)
    with pytest.raises(ValueError):
        K.maxpool1d_backward(np.zeros((2, 5, 3)), np.zeros((2, 4, 3), np.int32), 10)


# ---- global average pooling --------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 7, 1), (3, 1, 4), (4, 13, 6), (2, 50, 3)])
def test_global_avgpool_matches_reference(shape, dtype):
    rng = np.random.default_rng(seed_of(shape, "gap"))
    x = rng.standard_normal(shape).astype(dtype)
    out = K.global_avgpool1d_forward(x)
    close(out, ref.global_avgpool1d_forward(x), dtype, "out", POOL_TOL)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = K.global_avgpool1d_backward(dout, shape[1])
    close(dx, ref.global_avgpool1d_backward(dout, shape[1]), dtype, "dx", POOL_TOL)


# ---- threads: bit-identical results whatever the thread count ---------------------------

# (B, L, C, F, kernel, stride, padding): im2col work B*Lout*K*C and outputs B*Lout*F above
# FASTNN_PARALLEL_MIN (32768), so the OpenMP passes fork; B = 1 gives one thread all the work.
BIG_CONV = [(64, 100, 8, 16, 5, 1, "same"), (37, 203, 6, 9, 7, 3, "valid"),
            (1, 20000, 2, 3, 4, 2, "same")]


def test_big_conv_cases_fork():
    for B, L, C, F, kernel, stride, padding in BIG_CONV:
        steps_out, _ = ref.conv1d_output_length(L, kernel, stride, padding)
        assert B * steps_out * kernel * C >= 32768


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("act", ["linear", "relu", "softmax", "tanh"])
@pytest.mark.parametrize("shape", BIG_CONV)
def test_conv_threads_bit_identical(shape, act, dtype):
    B, L, C, F, kernel, stride, padding = shape
    rng = np.random.default_rng(seed_of(shape, act, "threads"))
    x, w, b = conv_problem(rng, B, L, C, F, kernel, dtype)
    da = None
    results = []
    for nthreads in (1, 2, 3):
        res = run_conv(x, w, b, stride, padding, act, dtype, nthreads=nthreads, da=da, rng=rng)
        da = res[2]
        results.append(res)
    for other in results[1:]:
        for u, v in zip(results[0], other):
            assert np.array_equal(u, v)
    if B * L <= 6500:  # and right, on the ones the reference does quickly
        z_ref, a_ref = ref.conv1d_forward(x, w, b, stride, padding, act, SLOPE)
        close(results[1][1], a_ref, dtype, "a")


BIG_POOL = [(64, 101, 16, 3, 2, "same"), (50, 160, 9, 4, 4, "valid"), (1, 70000, 1, 2, 1, "same")]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", BIG_POOL)
def test_pool_threads_bit_identical(shape, dtype):
    B, L, C, pool, stride, padding = shape
    steps_out, _ = ref.conv1d_output_length(L, pool, stride, padding)
    assert B * steps_out * C * pool >= 32768 and B * L * C >= 32768
    rng = np.random.default_rng(seed_of(shape, "pool threads"))
    x = rng.standard_normal((B, L, C)).astype(dtype)
    fwd = [run_pool(x, pool, stride, padding, nthreads=n) for n in (1, 2, 3)]
    dout = rng.standard_normal(fwd[0][0].shape).astype(dtype)
    bwd = [K.maxpool1d_backward(dout, fwd[0][1], L, nthreads=n) for n in (1, 2, 3)]
    gap = [K.global_avgpool1d_forward(x, nthreads=n) for n in (1, 2, 3)]
    gdout = rng.standard_normal(gap[0].shape).astype(dtype)
    gback = [K.global_avgpool1d_backward(gdout, L, nthreads=n) for n in (1, 2, 3)]
    for series in (fwd, bwd, gap, gback):
        for other in series[1:]:
            first = series[0]
            if isinstance(first, tuple):
                assert all(np.array_equal(u, v) for u, v in zip(first, other))
            else:
                assert np.array_equal(first, other)
    if steps_out > 5000:  # the reference loops over output steps in Python
        return
    out_ref, arg_ref = ref.maxpool1d_forward(x, pool, stride, padding)
    np.testing.assert_array_equal(fwd[1][0], out_ref.astype(dtype))
    np.testing.assert_array_equal(fwd[1][1], arg_ref)
    close(gap[1], ref.global_avgpool1d_forward(x), dtype, "gap", POOL_TOL)


# ---- the reference itself ----------------------------------------------------------------

@pytest.mark.parametrize("L,kernel,stride,padding,expected", [
    (40, 5, 2, "same", (20, 1)), (40, 5, 2, "valid", (18, 0)), (40, 5, 1, "same", (40, 2)),
    (10, 3, 3, "valid", (3, 0)), (10, 3, 3, "same", (4, 1)), (7, 4, 2, "same", (4, 1)),
    (5, 7, 1, "same", (5, 3)), (6, 2, 1, "same", (6, 0)), (9, 1, 3, "same", (3, 0)),
    (4, 4, 5, "valid", (1, 0)), (1, 3, 2, "same", (1, 1)), (11, 2, 2, "same", (6, 0)),
])
def test_output_length_is_keras_arithmetic(L, kernel, stride, padding, expected):
    assert ref.conv1d_output_length(L, kernel, stride, padding) == expected


def test_output_length_rejects_bad_input():
    with pytest.raises(ValueError):
        ref.conv1d_output_length(3, 4, 1, "valid")
    with pytest.raises(ValueError):
        ref.conv1d_output_length(5, 2, 1, "causal")


def brute_force_conv(x, w, b, stride, padding):
    """z[n, t, f] = b[f] + sum_{k, c} x[n, t*s - pad_left + k, c] w[k, c, f], with steps
    outside [0, L) left out: the definition read literally."""
    B, L, C = x.shape
    kernel, _, F = w.shape
    steps_out, pad_left = ref.conv1d_output_length(L, kernel, stride, padding)
    z = np.zeros((B, steps_out, F))
    for n in range(B):
        for t in range(steps_out):
            for f in range(F):
                acc = 0.0 if b is None else b[f]
                for k in range(kernel):
                    step = t * stride - pad_left + k
                    if 0 <= step < L:
                        acc += sum(x[n, step, c] * w[k, c, f] for c in range(C))
                z[n, t, f] = acc
    return z


@pytest.mark.parametrize("kernel,stride,padding,L", [g for g in GEOMETRIES if g[0] in (1, 2, 5, 6)])
def test_reference_forward_is_the_definition(kernel, stride, padding, L):
    rng = np.random.default_rng(seed_of(kernel, stride, padding, L, "brute"))
    x, w, b = conv_problem(rng, 2, L, 2, 3, kernel, np.float64)
    z, _ = ref.conv1d_forward(x, w, b, stride, padding)
    np.testing.assert_allclose(z, brute_force_conv(x, w, b, stride, padding), rtol=1e-12, atol=1e-14)
    z, _ = ref.conv1d_forward(x, w, None, stride, padding)
    np.testing.assert_allclose(z, brute_force_conv(x, w, None, stride, padding), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kernel", [1, 2, 3, 5, 7])
def test_reference_matches_numpy_correlate(kernel):
    """One channel, one filter, stride 1: Keras' Conv1D is np.correlate ('same' for odd
    kernels, where both center the window)."""
    rng = np.random.default_rng(kernel)
    x = rng.standard_normal(20)
    w = rng.standard_normal(kernel)
    z, _ = ref.conv1d_forward(x[None, :, None], w[:, None, None], None, 1, "valid")
    np.testing.assert_allclose(z[0, :, 0], np.correlate(x, w, "valid"), rtol=1e-12)
    if kernel % 2:
        z, _ = ref.conv1d_forward(x[None, :, None], w[:, None, None], None, 1, "same")
        np.testing.assert_allclose(z[0, :, 0], np.correlate(x, w, "same"), rtol=1e-12)


# (B, L, C, F, kernel, stride, padding)
GRAD_SHAPES = [(1, 5, 1, 1, 3, 1, "valid"), (2, 7, 2, 3, 3, 2, "same"),
               (1, 8, 3, 2, 4, 3, "same"), (2, 6, 2, 2, 6, 1, "valid"),
               (1, 4, 2, 3, 5, 2, "same")]


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("shape", GRAD_SHAPES)
@pytest.mark.parametrize("act", ACTS)
def test_reference_conv_backward_matches_numeric(act, shape, use_bias):
    B, L, C, F, kernel, stride, padding = shape
    rng = np.random.default_rng(seed_of(act, shape, use_bias, "numeric"))
    x, w, b = conv_problem(rng, B, L, C, F, kernel, np.float64, use_bias)
    z, a = ref.conv1d_forward(x, w, b, stride, padding, act, SLOPE)
    da = rng.standard_normal(z.shape)

    def loss(xx, ww, bb):
        return np.sum(da * ref.conv1d_forward(xx, ww, bb, stride, padding, act, SLOPE)[1])

    dx, dw, db = ref.conv1d_backward(da, x, w, z, a, stride, padding, act, SLOPE)
    assert rel_err(dx, ref.numeric_gradient(lambda t: loss(t, w, b), x)) < 1e-6
    assert rel_err(dw, ref.numeric_gradient(lambda t: loss(x, t, b), w)) < 1e-6
    if use_bias:
        assert rel_err(db, ref.numeric_gradient(lambda t: loss(x, w, t), b)) < 1e-6


@pytest.mark.parametrize("pool,stride,padding", [(2, 2, "valid"), (3, 1, "same"), (3, 2, "same"),
                                                 (4, 3, "valid"), (2, 3, "same")])
def test_reference_maxpool_backward_matches_numeric(pool, stride, padding):
    rng = np.random.default_rng(seed_of(pool, stride, padding, "pool numeric"))
    # distinct values well apart, so a nudge never changes a window's argmax
    x = rng.permutation(2 * 11 * 3).reshape(2, 11, 3) * 0.1
    out, arg = ref.maxpool1d_forward(x, pool, stride, padding)
    dout = rng.standard_normal(out.shape)
    dx = ref.maxpool1d_backward(dout, arg, 11)
    num = ref.numeric_gradient(lambda t: np.sum(dout * ref.maxpool1d_forward(t, pool, stride, padding)[0]), x)
    assert rel_err(dx, num) < 1e-8


def test_reference_global_avgpool_backward_matches_numeric():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 7, 4))
    dout = rng.standard_normal((3, 4))
    num = ref.numeric_gradient(lambda t: np.sum(dout * ref.global_avgpool1d_forward(t)), x)
    assert rel_err(ref.global_avgpool1d_backward(dout, 7), num) < 1e-8
