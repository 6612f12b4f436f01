"""src_c/gemm.c through fastnn._kernels.gemm: fastnn's small-product kernel and the BLAS
path, against the NumPy reference (fastnn.reference.gemm)."""
import itertools
import os
import textwrap
import zlib

import numpy as np
import pytest

from fastnn import _kernels as K
from fastnn import reference as ref

pytestmark = pytest.mark.usefixtures("one_blas_thread")

needs_small = pytest.mark.skipif(not K.small_gemm_available(),
                                 reason="the CPU lacks AVX-512: every product goes to BLAS")

# Rows around the kernel's tiles (12, 8, 6, 4, 1 rows), columns around its vectors (16
# floats, 8 doubles) and blocks of 4 vectors, inner sizes from empty to long.
ROWS = [1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 25, 32, 100]
COLS = [1, 7, 8, 9, 15, 16, 17, 25, 31, 33, 48, 63, 64, 65, 75, 130]
INNER = [0, 1, 2, 5, 25, 400]
SHAPES = [(m, n, k) for m, n, k in itertools.product(ROWS, COLS, INNER)
          if zlib.crc32(repr((m, n, k)).encode()) % 5 == 0] + [(32, 25, 400), (400, 25, 32),
                                                              (1000, 75, 25), (1, 25, 400)]
# float64: sums of up to 400 products, a few ulps of the magnitude; float32: FMA chains
# against a float64 reference.
TOL = {np.float64: 1e-12, np.float32: 2e-6}


def operands(rng, m, n, k, a_trans, b_trans, dtype):
    a = rng.standard_normal((k, m) if a_trans else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if b_trans else (k, n)).astype(dtype)
    return a, b


def check(out, expected, k, dtype, what):
    assert out.dtype == dtype and out.shape == expected.shape, what
    # an inner product of k terms: errors grow with sqrt(k) times the terms' size
    scale = max(np.sqrt(max(k, 1)), 1.0)
    np.testing.assert_allclose(out.astype(np.float64), expected, rtol=0,
                               atol=TOL[dtype] * scale * 4, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("a_trans,b_trans", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("method", ["small", "blas", "auto"])
def test_matches_reference(method, a_trans, b_trans, dtype):
    if method == "small" and not K.small_gemm_available():
        pytest.skip("no AVX-512: 'small' runs BLAS")
    rng = np.random.default_rng(zlib.crc32(repr((method, a_trans, b_trans)).encode()))
    for m, n, k in SHAPES:
        a, b = operands(rng, m, n, k, a_trans, b_trans, dtype)
        out = K.gemm(a, b, a_trans, b_trans, method)
        check(out, ref.gemm(a, b, a_trans, b_trans), k, dtype,
              f"{method} {m}x{n}x{k} a_trans={a_trans} b_trans={b_trans}")


@needs_small
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_small_rows_do_not_depend_on_the_batch(dtype):
    # Each output is one chain of FMAs over k in order, whatever tile its row lands in:
    # a sample's result is the same alone or inside any batch (predict(x[:1]) equals
    # predict(x)[:1] bit for bit).
    rng = np.random.default_rng(1)
    a, b = operands(rng, 37, 25, 400, False, False, dtype)
    full = K.gemm(a, b, method="small")
    for rows in [1, 4, 5, 12, 13, 36]:
        np.testing.assert_array_equal(K.gemm(a[:rows], b, method="small"), full[:rows])
        np.testing.assert_array_equal(K.gemm(a[-rows:], b, method="small"), full[-rows:])


@pytest.mark.parametrize("method", ["small", "blas"])
@pytest.mark.parametrize("a_trans,b_trans", [(False, False), (True, False), (False, True)])
def test_threads_give_identical_bits(method, a_trans, b_trans):
    rng = np.random.default_rng(2)
    # large enough to be cut into panels (src_c/gemm.c: gemm_panels)
    a, b = operands(rng, 1000, 75, 100, a_trans, b_trans, np.float32)
    one = K.gemm(a, b, a_trans, b_trans, method, nthreads=1)
    for nthreads in (2, 3, 8):
        np.testing.assert_array_equal(
            K.gemm(a, b, a_trans, b_trans, method, nthreads=nthreads), one)


@pytest.mark.parametrize("method", ["small", "blas"])
def test_nonfinite_inputs_propagate(method):
    a = np.ones((13, 20), np.float32)
    b = np.ones((20, 33), np.float32)
    a[3, 7] = np.nan
    a[5, 2] = np.inf
    out = K.gemm(a, b, method=method)
    assert np.isnan(out[3]).all()
    assert np.isposinf(out[5]).all()
    rest = np.delete(out, [3, 5], axis=0)
    np.testing.assert_array_equal(rest, 20.0)


@pytest.mark.parametrize("method", ["small", "blas", "auto"])
def test_empty_sizes(method):
    out = K.gemm(np.ones((3, 0), np.float32), np.ones((0, 5), np.float32), method=method,
                 out=np.full((3, 5), 7.0, np.float32))
    np.testing.assert_array_equal(out, 0.0)  # an empty sum is written as zero
    assert K.gemm(np.ones((0, 4)), np.ones((4, 5)), method=method).shape == (0, 5)
    assert K.gemm(np.ones((3, 4)), np.ones((4, 0)), method=method).shape == (3, 0)


@needs_small
def test_long_transposed_inner_dimension_falls_back_to_blas():
    # b^T is packed in blocks on the stack; an inner dimension too long for one vector of
    # columns goes to BLAS even when the kernel is asked for.
    rng = np.random.default_rng(3)
    for dtype, k in [(np.float32, 600), (np.float64, 600)]:
        a, b = operands(rng, 9, 20, k, False, True, dtype)
        check(K.gemm(a, b, False, True, "small"), ref.gemm(a, b, False, True), k, dtype, str(k))


def test_bad_arguments():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="inner dimension"):
        K.gemm(a, np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match="method"):
        K.gemm(a, np.ones((4, 2), np.float32), method="fast")
    with pytest.raises(ValueError, match="out"):
        K.gemm(a, np.ones((4, 2), np.float32), out=np.empty((2, 3), np.float32))


@needs_small
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("act,slope", [("linear", 0.0), ("relu", 0.0), ("leaky_relu", 0.1),
                                       ("leaky_relu", -0.5)])
@pytest.mark.parametrize("use_bias", [True, False])
def test_bias_activation_in_the_kernel_equals_a_separate_pass(act, slope, use_bias, dtype):
    # dense_forward adds the bias and applies linear / relu / leaky relu in the kernel's
    # registers (gemm_bias_act): bit for bit the kernel's product, then z + b, then f(z),
    # NaN and infinities included.
    rng = np.random.default_rng(zlib.crc32(repr((act, slope, use_bias)).encode()))
    for m, n, k in [(1, 1, 1), (13, 25, 7), (32, 25, 400), (100, 75, 25), (7, 130, 3)]:
        x = rng.standard_normal((m, k)).astype(dtype)
        w = rng.standard_normal((k, n)).astype(dtype)
        b = rng.standard_normal(n).astype(dtype) if use_bias else None
        if m > 3:
            x[1, 0], x[2, 0] = np.nan, np.inf
        z, a = K.dense_forward(x, w, b, K.ACTIVATIONS[act], slope=slope)
        z_sep = K.gemm(x, w, method="small")
        if use_bias:
            z_sep = z_sep + b
        with np.errstate(invalid="ignore"):
            a_sep = {"linear": z_sep,
                     "relu": np.where(z_sep > 0, z_sep, dtype(0)),
                     "leaky_relu": np.where(z_sep > 0, z_sep, dtype(slope) * z_sep)}[act]
        np.testing.assert_array_equal(z, z_sep)
        np.testing.assert_array_equal(a, a_sep)


@needs_small
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bias_gradient_sums_rows_in_order(dtype):
    # db is computed by the kernel as ones @ dz: the same additions, row after row, as a
    # plain loop, so it equals that loop bit for bit.
    rng = np.random.default_rng(5)
    for rows, cols in [(1, 1), (2000, 25), (37, 70), (128, 256)]:
        x = rng.standard_normal((rows, 3)).astype(dtype)
        w = rng.standard_normal((3, cols)).astype(dtype)
        dz = (rng.standard_normal((rows, cols)) * 10.0 ** rng.integers(-3, 4, (rows, 1)))
        dz = dz.astype(dtype)
        z, a = K.dense_forward(x, w, np.zeros(cols, dtype), K.ACTIVATIONS["linear"])
        _, _, db = K.dense_backward(dz, z, a, x, w, K.ACTIVATIONS["linear"], need_dx=False)
        expected = np.zeros(cols, dtype)
        for row in dz:
            expected = expected + row
        np.testing.assert_array_equal(db, expected)


def test_blas_path_when_the_kernel_is_turned_off(run_python):
    # FASTNN_SMALL_GEMM=0 (or a CPU without AVX-512) sends every product to BLAS: dense
    # layers and a whole fit still agree with the reference there.
    script = textwrap.dedent("""
        import numpy as np, fastnn
        from fastnn import _kernels as K, reference as ref
        assert not K.small_gemm_available()
        rng = np.random.default_rng(0)
        x, w, b = rng.standard_normal((32, 40)), rng.standard_normal((40, 25)), rng.standard_normal(25)
        z, a = K.dense_forward(x, w, b, K.ACTIVATIONS["relu"])
        z_ref, a_ref = ref.dense_forward(x, w, b, "relu")
        np.testing.assert_allclose(a, a_ref, rtol=1e-10, atol=1e-12)
        x = rng.standard_normal((200, 4)).astype(np.float32)
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)  # separable: any init learns it
        fastnn.set_random_seed(0)
        model = fastnn.Sequential([fastnn.layers.Input((4,)),
                                   fastnn.layers.Dense(16, activation="relu"),
                                   fastnn.layers.Dense(1, activation="sigmoid")])
        model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
        h = model.fit(x, y, epochs=40, batch_size=16, verbose=0, seed=0)
        assert h.history["accuracy"][-1] > 0.95, h.history["accuracy"][-1]
        print("ok")
    """)
    done = run_python(script, env=dict(os.environ, FASTNN_SMALL_GEMM="0"))
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


@needs_small
def test_flipped_weight_gradients_have_the_kernels_bits():
    """x^T dz with few output columns is computed as (dz^T x)^T and transposed in 16 x 16
    blocks (src_c/gemm.c: small_flipped_f32) under "auto": the same FMA chains, so the
    same bits as the kernel's direct product ("small"), for shapes around the transpose
    blocks; NaN stays in its row."""
    rng = np.random.default_rng(11)
    for m, n, k in [(400, 25, 32), (75, 25, 1000), (75, 25, 500), (125, 10, 100),
                    (16, 2, 3), (17, 5, 1), (31, 15, 7), (33, 17, 64), (47, 30, 9),
                    (640, 20, 5), (1, 3, 4), (200, 40, 2)]:
        x, dz = operands(rng, m, n, k, True, False, np.float32)
        direct = K.gemm(x, dz, True, False, "small")
        auto = K.gemm(x, dz, True, False, "auto")
        np.testing.assert_array_equal(auto, direct, err_msg=f"{m}x{n}x{k}")
        check(auto, ref.gemm(x, dz, True, False), k, np.float32, f"{m}x{n}x{k}")
    nan = np.ones((8, 40), np.float32)
    nan[2, 5] = np.nan
    out = K.gemm(nan, np.ones((8, 3), np.float32), True, False, "auto")
    assert np.isnan(out[5]).all() and np.isfinite(np.delete(out, 5, axis=0)).all()


# (M, N, K) whose a b^T takes the dot-product form: inner sizes that fill the vectors, or
# nearly (127, 255: a masked last chunk), output widths that do not (1-4 column tails).
DOT_SHAPES = [(32, 25, 400), (7, 25, 400), (33, 1, 64), (5, 3, 127), (100, 10, 784),
              (4, 17, 128), (1, 2, 400), (13, 9, 255), (6, 7, 64)]


@needs_small
@pytest.mark.parametrize("m,n,k", DOT_SHAPES)
def test_dot_product_form_matches_reference(m, n, k):
    assert K.dense_kernel_transposed(k, n, False)  # these shapes take the dot products
    assert not K.dense_kernel_transposed(k, n, True)  # (float only)
    rng = np.random.default_rng(zlib.crc32(repr(("dot", m, n, k)).encode()))
    a, b = operands(rng, m, n, k, False, True, np.float32)
    out = K.gemm(a, b, False, True)
    check(out, ref.gemm(a, b, False, True), k, np.float32, f"dot {m}x{n}x{k}")
    np.testing.assert_allclose(out, K.gemm(a, b, False, True, "blas"), rtol=1e-4, atol=1e-4)


@needs_small
def test_dot_product_form_propagates_nan_and_splits_alike_on_threads():
    rng = np.random.default_rng(5)
    a, b = operands(rng, 2000, 25, 400, False, True, np.float32)
    a[3, 17] = np.nan
    b[24, 399] = np.inf
    one, two = K.gemm(a, b, False, True, nthreads=1), K.gemm(a, b, False, True, nthreads=2)
    assert np.array_equal(one, two, equal_nan=True)
    assert np.isnan(one[3]).all()
    assert not np.isfinite(one[:, 24]).any()
    assert np.isfinite(np.delete(np.delete(one, 3, axis=0), 24, axis=1)).all()


def test_dot_product_choice_depends_on_sizes_only():
    # 400 inputs fill 25 vectors; 25 units fill 25 of 32 lanes: dot products pay
    assert K.dense_kernel_transposed(400, 25, False)
    # 100 units fill 100 of 112 lanes, 64 inputs all of 64: not enough to pay
    assert not K.dense_kernel_transposed(64, 100, False)
    # short or poorly fitting inner sizes never
    assert not K.dense_kernel_transposed(32, 1, False)
    assert not K.dense_kernel_transposed(65, 1, False)
    # full output vectors never
    assert not K.dense_kernel_transposed(784, 256, False)


@needs_small
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("a_trans,b_trans", list(itertools.product([False, True], repeat=2)))
def test_adam_in_the_product_equals_the_product_then_adam(dtype, a_trans, b_trans):
    """gemm_adam: the product's bits, and Adam's step on w, m, v (laid out as the product)
    with the product as gradient, bit for bit as gemm then adam_update; on 1 and 2 threads,
    over shapes around the kernel's tiles and vectors; None (nothing written) where the
    kernel does not take the product that way."""
    rng = np.random.default_rng(zlib.crc32(repr(("gemm-adam", dtype, a_trans, b_trans)).encode()))
    taken = 0
    for m, n, k in [(784, 256, 128), (13, 33, 7), (6, 65, 50), (25, 400, 32), (100, 17, 3),
                    (1, 16, 1), (300, 9, 20), (64, 130, 2000)]:
        a, b = operands(rng, m, n, k, a_trans, b_trans, dtype)
        w = rng.standard_normal((m, n)).astype(dtype)
        mom = rng.standard_normal((m, n)).astype(dtype) * 0.1
        var = rng.random((m, n)).astype(dtype) * 0.01
        g = K.gemm(a, b, a_trans=a_trans, b_trans=b_trans)
        want = [x.copy() for x in (w, mom, var)]
        K.adam_update(*(x.ravel() for x in (want[0], g, want[1], want[2])), 7, 0.01, 0.9,
                      0.999, 1e-7)
        for nthreads in (1, 2):
            got = [x.copy() for x in (w, mom, var)]
            out = K.gemm_adam(a, b, *got, 7, 0.01, 0.9, 0.999, 1e-7, a_trans=a_trans,
                              b_trans=b_trans, nthreads=nthreads)
            if out is None:  # BLAS (too few columns, or too long inner size), or another form
                for x, x0 in zip(got, (w, mom, var)):
                    np.testing.assert_array_equal(x, x0)
                continue
            taken += 1
            np.testing.assert_array_equal(out, g)
            for x, x0 in zip(got, want):
                np.testing.assert_array_equal(x, x0)
    assert taken >= 8
    with pytest.raises(ValueError, match="w"):
        K.gemm_adam(a, b, np.zeros((m + 1, n), dtype), mom, var, 1, 0.01, 0.9, 0.999, 1e-7,
                    a_trans=a_trans, b_trans=b_trans)
