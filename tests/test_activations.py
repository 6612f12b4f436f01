"""src_c/activations.c through fastnn._kernels.activation_forward / activation_backward,
against the NumPy reference (fastnn.reference)."""

import zlib

import numpy as np
import pytest

from fastnn import _kernels as K
from fastnn import reference as ref

ACTS = sorted(K.ACTIVATIONS, key=K.ACTIVATIONS.get)
# 1x1, batch 1, odd/prime sizes, and sizes above FASTNN_PARALLEL_MIN (32768 elements)
# so that the OpenMP path runs with nthreads=2.
SHAPES = [(1, 1), (1, 7), (5, 1), (7, 13), (31, 3), (64, 33), (300, 257), (2, 20000)]
LARGE = [(300, 257), (2, 20000), (40000, 1)]
TOL = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=1e-5, atol=1e-6)}


def close(actual, expected, dtype, scale=None):
    """Elementwise close, the absolute part relative to the result's magnitude."""
    actual, expected = np.asarray(actual), np.asarray(expected, dtype=np.float64)
    assert actual.dtype == dtype
    assert actual.shape == expected.shape
    if scale is None:
        scale = max(float(np.max(np.abs(expected), initial=0.0)), 1.0)
    tol = TOL[dtype]
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=tol["rtol"],
                               atol=tol["atol"] * scale)


def seed_of(*parts):
    """A fixed seed from test parameters (str hashes vary between runs)."""
    return zlib.crc32(repr(parts).encode())


def inputs(rng, shape, dtype, spread=3.0):
    return (rng.standard_normal(shape) * spread).astype(dtype)


def test_codes_cover_every_reference_activation():
    assert set(K.ACTIVATIONS) == set(ref.ACTIVATIONS)
    assert len(set(K.ACTIVATIONS.values())) == len(K.ACTIVATIONS)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ACTS)
def test_forward_matches_reference(name, shape, dtype):
    rng = np.random.default_rng(seed_of(name, shape))
    z = inputs(rng, shape, dtype)
    slope = 0.2 if name == "leaky_relu" else 0.01
    a = K.activation_forward(z, K.ACTIVATIONS[name], slope=slope, nthreads=2)
    close(a, ref.activation_forward(z, name, slope=slope), dtype)
    np.testing.assert_array_equal(z, inputs(np.random.default_rng(seed_of(name, shape)),
                                            shape, dtype))  # input untouched


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ACTS)
def test_backward_matches_reference(name, shape, dtype):
    rng = np.random.default_rng(seed_of(name, shape, 1))
    z = inputs(rng, shape, dtype)
    da = inputs(rng, shape, dtype, spread=1.0)
    slope = 0.3 if name == "leaky_relu" else 0.01
    a = ref.activation_forward(z, name, slope).astype(dtype)
    dz = K.activation_backward(da, z, a, K.ACTIVATIONS[name], slope=slope, nthreads=2)
    expected = ref.activation_backward(da, z, a, name, slope)
    # softmax's backward subtracts a row dot product: measure against |da| * |a|
    scale = max(float(np.max(np.abs(da))) * float(np.max(np.abs(a))), 1e-300)
    close(dz, expected, dtype, scale=scale if name == "softmax" else None)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_leaky_relu_slope_and_relu_kink(dtype):
    z = np.array([[-2.0, -0.0, 0.0, 1e-30, 3.0]], dtype=dtype)
    da = np.full_like(z, 2.0)
    for slope in (0.01, 0.2, 1.5, 0.0):
        a = K.activation_forward(z, K.ACTIVATIONS["leaky_relu"], slope=slope)
        expected = ref.activation_forward(z, "leaky_relu", slope).astype(dtype)
        np.testing.assert_array_equal(a, expected)
        dz = K.activation_backward(da, z, a, K.ACTIVATIONS["leaky_relu"], slope=slope)
        np.testing.assert_array_equal(dz, np.array([[2 * slope] * 3 + [2.0, 2.0]], dtype=dtype))
    a = K.activation_forward(z, K.ACTIVATIONS["relu"])
    np.testing.assert_array_equal(a, [[0.0, 0.0, 0.0, dtype(1e-30), 3.0]])
    dz = K.activation_backward(da, z, a, K.ACTIVATIONS["relu"])
    np.testing.assert_array_equal(dz, [[0.0, 0.0, 0.0, 2.0, 2.0]])  # derivative 0 at 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (7, 13), (300, 257)])
def test_softmax_rows_sum_to_one(shape, dtype):
    rng = np.random.default_rng(3)
    z = inputs(rng, shape, dtype, spread=20.0)
    a = K.activation_forward(z, K.ACTIVATIONS["softmax"], nthreads=2)
    assert np.all(a >= 0) and np.all(a <= 1)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(a.astype(np.float64).sum(axis=1), 1.0, rtol=0, atol=tol)
    # a row's gradient through softmax sums to 0 (the Jacobian's rows sum to 0)
    da = inputs(rng, shape, dtype)
    dz = K.activation_backward(da, z, a, K.ACTIVATIONS["softmax"], nthreads=2)
    row_scale = np.abs(da).max(axis=1)
    assert np.all(np.abs(dz.astype(np.float64).sum(axis=1)) <= 10 * tol * (1 + row_scale))


@pytest.mark.parametrize("dtype,big", [(np.float64, 1e4), (np.float64, 1e300),
                                       (np.float32, 1e4), (np.float32, 1e30)])
def test_extreme_inputs_are_exact_and_finite(dtype, big):
    z = np.array([[big, -big, 0.0, big], [-big, -big, -big, -big]], dtype=dtype)
    with np.errstate(all="raise"):
        sig = K.activation_forward(z, K.ACTIVATIONS["sigmoid"])
        soft = K.activation_forward(z, K.ACTIVATIONS["softmax"])
        th = K.activation_forward(z, K.ACTIVATIONS["tanh"])
    np.testing.assert_array_equal(sig, [[1, 0, 0.5, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(soft, [[0.5, 0, 0, 0.5], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_array_equal(th, [[1, -1, 0, 1], [-1, -1, -1, -1]])
    ones = np.ones_like(z)
    for name, a in (("sigmoid", sig), ("tanh", th), ("softmax", soft)):
        dz = K.activation_backward(ones, z, a, K.ACTIVATIONS[name])
        assert np.all(np.isfinite(dz)), name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", LARGE)
@pytest.mark.parametrize("name", ACTS)
def test_threads_bit_identical(name, shape, dtype):
    rng = np.random.default_rng(4)
    z = inputs(rng, shape, dtype)
    da = inputs(rng, shape, dtype)
    code = K.ACTIVATIONS[name]
    a1 = K.activation_forward(z, code, nthreads=1)
    a2 = K.activation_forward(z, code, nthreads=2)
    a3 = K.activation_forward(z, code, nthreads=3)
    assert np.array_equal(a1, a2) and np.array_equal(a1, a3)
    d1 = K.activation_backward(da, z, a1, code, nthreads=1)
    d2 = K.activation_backward(da, z, a1, code, nthreads=2)
    assert np.array_equal(d1, d2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty_and_shape_checks(dtype):
    z = np.zeros((0, 4), dtype=dtype)
    assert K.activation_forward(z, K.ACTIVATIONS["softmax"]).shape == (0, 4)
    assert K.activation_backward(z, z, z, K.ACTIVATIONS["softmax"]).shape == (0, 4)
    with pytest.raises(ValueError):
        K.activation_backward(np.zeros((2, 3), dtype), np.zeros((3, 2), dtype),
                              np.zeros((2, 3), dtype), K.ACTIVATIONS["tanh"])
