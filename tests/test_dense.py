"""src_c/dense.c through fastnn._kernels.dense_forward / dense_backward, against the NumPy
reference (fastnn.reference.dense_forward / dense_backward)."""

import zlib

import numpy as np
import pytest

from fastnn import _kernels as K
from fastnn import reference as ref

ACTS = sorted(K.ACTIVATIONS, key=K.ACTIVATIONS.get)
# (B, C, OC): 1x1, batch 1, odd/prime sizes, and outputs above FASTNN_PARALLEL_MIN
# (B * OC >= 32768) so the OpenMP passes run with nthreads=2.
SIZES = [(1, 1, 1), (1, 5, 3), (6, 1, 1), (7, 13, 11), (13, 7, 1), (2, 3, 17), (300, 65, 257),
         (40, 3, 1000)]
LARGE = [(300, 65, 257), (40000, 2, 1)]
# float64: products of short sums, exact to a few ulps of the magnitude;
# float32: GEMM results to ~1e-4 of the magnitude.
TOL = {np.float64: dict(rtol=1e-10, atol=1e-13), np.float32: dict(rtol=1e-4, atol=1e-5)}


pytestmark = pytest.mark.usefixtures("one_blas_thread")


def seed_of(*parts):
    return zlib.crc32(repr(parts).encode())


def close(actual, expected, dtype, what=""):
    expected = np.asarray(expected, dtype=np.float64)
    assert actual is not None, what
    assert actual.dtype == dtype, what
    assert actual.shape == expected.shape, what
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1.0)
    tol = TOL[dtype]
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=tol["rtol"],
                               atol=tol["atol"] * scale, err_msg=what)


def problem(rng, B, C, OC, dtype, use_bias=True):
    x = rng.standard_normal((B, C)).astype(dtype)
    w = (rng.standard_normal((C, OC)) / np.sqrt(C)).astype(dtype)
    b = rng.standard_normal(OC).astype(dtype) if use_bias else None
    return x, w, b


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("size,use_bias", [(s, u) for s in SIZES for u in (True, False)])
@pytest.mark.parametrize("name", ACTS)
def test_forward_matches_reference(name, size, use_bias, dtype):
    rng = np.random.default_rng(seed_of(name, size, use_bias))
    x, w, b = problem(rng, *size, dtype, use_bias)
    z, a = K.dense_forward(x, w, b, K.ACTIVATIONS[name], slope=0.1, nthreads=2)
    z_ref, a_ref = ref.dense_forward(x, w, b, name, slope=0.1)
    close(z, z_ref, dtype, "z")
    close(a, a_ref, dtype, "a")


# Every bias / need_dx combination on the small sizes; the large ones (slow in the NumPy
# reference) with bias and dx, and once without either.
BACKWARD_CASES = [(size, use_bias, need_dx) for size in SIZES
                  for use_bias in (True, False) for need_dx in (True, False)
                  if size[0] * size[2] < 32768 or use_bias == need_dx]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("size,use_bias,need_dx", BACKWARD_CASES)
@pytest.mark.parametrize("name", ACTS)
def test_backward_matches_reference(name, size, use_bias, need_dx, dtype):
    rng = np.random.default_rng(seed_of(name, size, use_bias, 7))
    x, w, b = problem(rng, *size, dtype, use_bias)
    z, a = (t.astype(dtype) for t in ref.dense_forward(x, w, b, name, slope=0.1))
    da = rng.standard_normal(z.shape).astype(dtype)
    da_copy = da.copy()
    dx, dw, db = K.dense_backward(da, z, a, x, w, K.ACTIVATIONS[name], slope=0.1,
                                  need_dx=need_dx, has_bias=use_bias, nthreads=2)
    dx_ref, dw_ref, db_ref = ref.dense_backward(da, x, w, z, a, name, slope=0.1)
    close(dw, dw_ref, dtype, "dw")
    if use_bias:
        close(db, db_ref, dtype, "db")
    else:
        assert db is None
    if need_dx:
        close(dx, dx_ref, dtype, "dx")
    else:
        assert dx is None
    np.testing.assert_array_equal(da, da_copy)  # the binding works on a copy


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_is_xw_plus_b_exactly_on_integers(dtype):
    """Small integers make every product and sum exact: the kernel must be exact too."""
    rng = np.random.default_rng(11)
    x = rng.integers(-4, 5, size=(9, 5)).astype(dtype)
    w = rng.integers(-4, 5, size=(5, 3)).astype(dtype)
    b = rng.integers(-4, 5, size=3).astype(dtype)
    z, a = K.dense_forward(x, w, b, K.ACTIVATIONS["relu"])
    np.testing.assert_array_equal(z, x @ w + b)
    np.testing.assert_array_equal(a, np.maximum(x @ w + b, 0))
    z, a = K.dense_forward(x, w, None, K.ACTIVATIONS["linear"])
    np.testing.assert_array_equal(z, x @ w)
    np.testing.assert_array_equal(a, x @ w)
    da = rng.integers(-3, 4, size=(9, 3)).astype(dtype)
    dx, dw, db = K.dense_backward(da, z, a, x, w, K.ACTIVATIONS["linear"])
    np.testing.assert_array_equal(dw, x.T @ da)
    np.testing.assert_array_equal(db, da.sum(axis=0))
    np.testing.assert_array_equal(dx, da @ w.T)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_layer_rows_sum_to_one(dtype):
    rng = np.random.default_rng(12)
    x, w, b = problem(rng, 300, 65, 257, dtype)
    _, a = K.dense_forward(x, w * 10, b, K.ACTIVATIONS["softmax"], nthreads=2)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(a.astype(np.float64).sum(axis=1), 1.0, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("size", LARGE)
@pytest.mark.parametrize("name", ACTS)
def test_threads_bit_identical(name, size, dtype):
    rng = np.random.default_rng(seed_of(name, size, 13))
    x, w, b = problem(rng, *size, dtype)
    code = K.ACTIVATIONS[name]
    z1, a1 = K.dense_forward(x, w, b, code, nthreads=1)
    z2, a2 = K.dense_forward(x, w, b, code, nthreads=2)
    assert np.array_equal(z1, z2) and np.array_equal(a1, a2)
    da = rng.standard_normal(z1.shape).astype(dtype)
    g1 = K.dense_backward(da, z1, a1, x, w, code, nthreads=1)
    g2 = K.dense_backward(da, z1, a1, x, w, code, nthreads=2)
    for u, v in zip(g1, g2):
        assert np.array_equal(u, v)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_shape_checks(dtype):
    x = np.zeros((3, 4), dtype)
    with pytest.raises(ValueError):
        K.dense_forward(x, np.zeros((5, 2), dtype), None, 0)
    with pytest.raises(ValueError):
        K.dense_forward(x, np.zeros((4, 2), dtype), np.zeros(3, dtype), 0)
    z = np.zeros((3, 2), dtype)
    with pytest.raises(ValueError):
        K.dense_backward(np.zeros((3, 3), dtype), z, z, x, np.zeros((4, 2), dtype), 0)


# (B, C, OC): shapes whose transposed kernel takes the dot-product forward (400 -> 25,
# 64 -> 1, 128 -> 17) and ones that do not (13 -> 11, 3 -> 1000).
TRANSPOSED_SIZES = [(32, 400, 25), (7, 64, 1), (5, 128, 17), (7, 13, 11), (40, 3, 1000)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("size", TRANSPOSED_SIZES)
@pytest.mark.parametrize("name", ["sigmoid", "relu", "softmax"])
def test_transposed_kernel_matches_reference(name, size, dtype):
    """w_trans: the kernel given (and its gradient returned) as (units, inputs); the same
    layer as the reference's with w = its transpose."""
    rng = np.random.default_rng(seed_of(name, size, "trans"))
    x, w, b = problem(rng, *size, dtype)
    wt = np.ascontiguousarray(w.T)
    z, a = K.dense_forward(x, wt, b, K.ACTIVATIONS[name], nthreads=2, w_trans=True)
    z_ref, a_ref = ref.dense_forward(x, w, b, name)
    close(z, z_ref, dtype, "z")
    close(a, a_ref, dtype, "a")
    z, a = (t.astype(dtype) for t in (z_ref, a_ref))
    da = rng.standard_normal(z.shape).astype(dtype)
    dx, dwt, db = K.dense_backward(da, z, a, x, wt, K.ACTIVATIONS[name], nthreads=2,
                                   w_trans=True)
    dx_ref, dw_ref, db_ref = ref.dense_backward(da, x, w, z, a, name)
    assert dwt.shape == wt.shape
    close(dwt.T, dw_ref, dtype, "dw")
    close(db, db_ref, dtype, "db")
    close(dx, dx_ref, dtype, "dx")
    with pytest.raises(ValueError, match="w"):
        K.dense_forward(x, w, b, K.ACTIVATIONS[name], w_trans=True)  # (in, units) given
