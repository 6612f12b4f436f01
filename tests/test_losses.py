"""src_c/losses.c through fastnn._kernels.loss / metric_sum, against the NumPy reference
(fastnn.reference): every loss in both from_logits modes, every metric, float64 and
float32, stability at huge logits, thread-count independence and bad class ids."""

import zlib

import numpy as np
import pytest

from fastnn import _kernels as K
from fastnn import reference as ref

LOSSES = sorted(K.LOSSES, key=K.LOSSES.get)
METRICS = sorted(K.METRICS, key=K.METRICS.get)
SPARSE = "sparse_categorical_crossentropy"
# 1x1, batch 1, odd/prime sizes, and B*K above FASTNN_PARALLEL_MIN (32768) so the
# OpenMP path runs with nthreads=2.
SHAPES = [(1, 1), (1, 6), (5, 1), (7, 13), (64, 3), (300, 257), (40000, 1)]
DTYPES = [np.float64, np.float32]


def seed_of(*parts):
    return zlib.crc32(repr(parts).encode())


def make_data(name, from_logits, shape, dtype, rng, soft=False):
    """(pred, y) in the loss kernel's layout: y is (B, 1) class ids for the sparse loss."""
    B, Kc = shape
    if from_logits or name == "mean_squared_error":
        pred = rng.standard_normal(shape) * 3
    elif name == "binary_crossentropy":
        pred = rng.uniform(0.01, 0.99, size=shape)
    else:  # positive scores, not normalized: the kernel divides by the row sum as Keras
        pred = rng.uniform(0.05, 1.0, size=shape)
    if name == SPARSE:
        y = rng.integers(0, Kc, size=(B, 1)).astype(np.float64)
    elif name == "categorical_crossentropy":
        y = np.eye(Kc)[rng.integers(0, Kc, size=B)]
        if soft:
            y = rng.dirichlet(np.ones(Kc), size=B)
    elif name == "binary_crossentropy":
        y = rng.uniform(0, 1, size=shape) if soft else rng.integers(0, 2, size=shape) * 1.0
    else:
        y = rng.standard_normal(shape)
    return pred.astype(dtype), y.astype(dtype)


def reference_loss(name, pred, y, from_logits):
    return ref.loss_function(name, pred, y, from_logits=from_logits)


def check_loss(name, pred, y, from_logits, nthreads=2):
    dtype = pred.dtype.type
    value, grad = K.loss(K.LOSSES[name], pred, y, from_logits=from_logits, nthreads=nthreads)
    value_ref, grad_ref = reference_loss(name, pred, y, from_logits)
    assert grad.dtype == dtype and grad.shape == pred.shape
    assert isinstance(value, float)
    if dtype == np.float64:
        rtol, atol = 1e-10, 1e-14
    else:
        rtol, atol = 1e-5, 1e-6
    assert value == pytest.approx(value_ref, rel=rtol, abs=atol)
    scale = max(float(np.max(np.abs(grad_ref))), 1e-300)
    np.testing.assert_allclose(grad.astype(np.float64), grad_ref, rtol=rtol, atol=atol * scale)
    return value, grad


def test_codes_cover_every_loss_and_metric():
    assert set(K.LOSSES) == set(ref.LOSS_NAMES)
    assert len(set(K.LOSSES.values())) == len(K.LOSSES)
    assert len(set(K.METRICS.values())) == len(K.METRICS) == 5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("name", LOSSES)
def test_loss_matches_reference(name, from_logits, shape, dtype):
    rng = np.random.default_rng(seed_of(name, from_logits, shape))
    pred, y = make_data(name, from_logits, shape, dtype, rng)
    pred_copy, y_copy = pred.copy(), y.copy()
    check_loss(name, pred, y, from_logits)
    np.testing.assert_array_equal(pred, pred_copy)
    np.testing.assert_array_equal(y, y_copy)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("name", ["binary_crossentropy", "categorical_crossentropy"])
def test_soft_targets(name, from_logits, dtype):
    rng = np.random.default_rng(seed_of(name, from_logits, "soft"))
    for shape in [(1, 4), (9, 5), (300, 257)]:
        pred, y = make_data(name, from_logits, shape, dtype, rng, soft=True)
        check_loss(name, pred, y, from_logits)


def test_clipped_probabilities_float64():
    """Probabilities beyond [1e-7, 1 - 1e-7] are clipped (Keras) with zero gradient there."""
    pred = np.array([[0.0, 1e-9, 0.3, 1.0 - 1e-9, 1.0, 0.5, 1e-3]])
    y = np.array([[1.0, 0.0, 1.0, 1.0, 0.0, 0.2, 0.0]])
    value, grad = check_loss("binary_crossentropy", pred, y, False)
    assert np.isfinite(value)
    assert np.all(grad[0, [0, 1, 3, 4]] == 0) and np.all(grad[0, [2, 5, 6]] != 0)
    # categorical: a row whose true class is (nearly) absent, and one that is certain
    pred = np.array([[1e-12, 0.5, 0.5], [1.0, 1e-12, 1e-12], [0.2, 0.3, 0.5]])
    onehot = np.eye(3)[[0, 0, 2]]
    check_loss("categorical_crossentropy", pred, onehot, False)
    value, grad = check_loss(SPARSE, pred, np.array([[0.0], [0.0], [2.0]]), False)
    assert np.all(grad[:2] == 0) and np.all(grad[2] != 0)


def test_mse_ignores_from_logits():
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        pred, y = make_data("mean_squared_error", False, (7, 13), dtype, rng)
        v0, g0 = K.loss(K.LOSSES["mean_squared_error"], pred, y, from_logits=False)
        v1, g1 = K.loss(K.LOSSES["mean_squared_error"], pred, y, from_logits=True)
        assert v0 == v1 and np.array_equal(g0, g1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", [SPARSE, "categorical_crossentropy"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 13), (300, 257)])
def test_logits_gradient_rows_sum_to_zero(shape, name, dtype):
    rng = np.random.default_rng(seed_of(name, shape, "rows"))
    pred, y = make_data(name, True, shape, dtype, rng)
    _, grad = K.loss(K.LOSSES[name], pred, y, from_logits=True, nthreads=2)
    # each row is (softmax - onehot) / B: its sum is 0 up to the rounding of K terms of
    # size <= 1/B (the softmax itself sums to 1 within ~K ulps)
    bound = 2 * shape[1] * np.finfo(dtype).eps / shape[0]
    assert np.max(np.abs(grad.astype(np.float64).sum(axis=1))) <= bound


def huge_cases(big):
    """(name, logits, y, exact loss, exact gradient) at logits of +-big."""
    z = np.array([[big, -big, 0.0]])
    zz = np.array([[big, -big, 0.0], [-big, big, 0.0], [0.0, -big, big]])
    cases = []
    y = np.array([[1.0, 0.0, 1.0]])
    # BCE from logits: max(z, 0) - z y + log1p(exp(-|z|))
    cases.append(("binary_crossentropy", z, y, (0.0 + 0.0 + np.log(2.0)) / 3,
                  (np.array([[1.0, 0.0, 0.5]]) - y) / 3))
    y = np.array([[0.0, 1.0, 0.25]])
    cases.append(("binary_crossentropy", z, y, (big + big + np.log(2.0)) / 3,
                  (np.array([[1.0, 0.0, 0.5]]) - y) / 3))
    labels = np.array([[1.0], [1.0], [0.0]])
    soft = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])[[1, 1, 0]]
    exact = (2 * big + 0.0 + big) / 3
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    cases.append((SPARSE, zz, labels, exact, (probs - soft) / 3))
    cases.append(("categorical_crossentropy", zz, soft, exact, (probs - soft) / 3))
    return cases


@pytest.mark.parametrize("dtype,big", [(np.float64, 1e4), (np.float64, 1e150),
                                       (np.float32, 1e4), (np.float32, 1e30)])
def test_huge_logits_finite_and_exact(dtype, big):
    big = float(dtype(big))  # the value the kernel sees
    for name, z, y, exact, exact_grad in huge_cases(big):
        value, grad = K.loss(K.LOSSES[name], z.astype(dtype), y.astype(dtype), from_logits=True)
        assert np.isfinite(value), name
        assert value == pytest.approx(exact, rel=1e-12 if dtype == np.float64 else 1e-6), name
        np.testing.assert_allclose(grad, exact_grad.astype(dtype), rtol=1e-6, atol=0, err_msg=name)
        value_ref, grad_ref = reference_loss(name, z.astype(dtype), y.astype(dtype), True)
        assert value == pytest.approx(value_ref, rel=1e-12 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("dtype,big", [(np.float64, 1e4), (np.float32, 1e30)])
@pytest.mark.parametrize("name", ["binary_crossentropy", SPARSE, "categorical_crossentropy"])
def test_fused_paths_finite_for_any_logit(name, dtype, big):
    """Random logits scaled up to +-big: the loss stays finite and matches the reference."""
    rng = np.random.default_rng(seed_of(name, big))
    pred, y = make_data(name, True, (33, 5), dtype, rng)
    pred = (np.sign(pred) * big * rng.uniform(0.5, 1.0, size=pred.shape)).astype(dtype)
    value, grad = K.loss(K.LOSSES[name], pred, y, from_logits=True)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    value_ref, grad_ref = reference_loss(name, pred, y, True)
    assert value == pytest.approx(value_ref, rel=1e-10 if dtype == np.float64 else 1e-6)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-6, atol=1e-7 * np.max(np.abs(grad_ref)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("name", LOSSES)
def test_threads_bit_identical(name, from_logits, dtype):
    rng = np.random.default_rng(seed_of(name, from_logits, "threads"))
    for shape in [(300, 257), (40000, 1), (100003, 1)]:
        pred, y = make_data(name, from_logits, shape, dtype, rng)
        v1, g1 = K.loss(K.LOSSES[name], pred, y, from_logits=from_logits, nthreads=1)
        for nt in (2, 3):
            v2, g2 = K.loss(K.LOSSES[name], pred, y, from_logits=from_logits, nthreads=nt)
            assert v1 == v2
            assert np.array_equal(g1, g2)


BAD_LABELS = [-1.0, 3.0, 4.0, 2.5, -0.5, 1e9, -1e9, np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("bad", BAD_LABELS)
def test_sparse_label_out_of_range_gives_nan(bad, from_logits, dtype):
    rng = np.random.default_rng(8)
    pred, y = make_data(SPARSE, from_logits, (5, 3), dtype, rng)
    y[2, 0] = bad
    value, grad = K.loss(K.LOSSES[SPARSE], pred, y, from_logits=from_logits)
    assert np.isnan(value)
    assert np.all(np.isfinite(grad))
    # the other rows' gradients are untouched by the bad one
    keep = [0, 1, 3, 4]
    _, grad_ref = reference_loss(SPARSE, pred[keep], y[keep], from_logits)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(grad[keep] * 5 / 4, grad_ref, rtol=tol, atol=tol)
    # never counted as a hit by the accuracy
    hits = K.metric_sum(K.METRICS["sparse_categorical_accuracy"], pred, y)
    assert hits == ref.sparse_categorical_accuracy(pred[keep], y[keep]) * 4


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_label_out_of_range_large_batch(dtype):
    """A bad class id in a batch big enough for threads: NaN, no crash, either mode."""
    rng = np.random.default_rng(9)
    for from_logits in (False, True):
        pred, y = make_data(SPARSE, from_logits, (1000, 40), dtype, rng)
        y[::97, 0] = 1e6
        y[5, 0] = -3
        for nt in (1, 2):
            value, grad = K.loss(K.LOSSES[SPARSE], pred, y, from_logits=from_logits, nthreads=nt)
            assert np.isnan(value) and np.all(np.isfinite(grad))


def metric_data(name, from_logits, shape, dtype, rng):
    B, Kc = shape
    if name == "binary_accuracy":
        pred = rng.standard_normal(shape) if from_logits else rng.uniform(0, 1, size=shape)
        y = rng.integers(0, 2, size=shape) * 1.0
    elif name == "sparse_categorical_accuracy":
        pred = rng.uniform(0, 1, size=shape)
        y = rng.integers(0, Kc, size=(B, 1)) * 1.0
    elif name == "categorical_accuracy":
        pred = rng.uniform(0, 1, size=shape)
        y = np.eye(Kc)[rng.integers(0, Kc, size=B)]
    else:
        pred, y = rng.standard_normal(shape), rng.standard_normal(shape)
    return pred.astype(dtype), y.astype(dtype)


def reference_metric(name, pred, y, from_logits):
    if name == "binary_accuracy":
        return ref.binary_accuracy(pred, y, from_logits=from_logits)
    if name == "mean_squared_error":
        return ref.mean_squared_error_metric(pred, y)
    return getattr(ref, name)(pred, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (5, 1), (7, 13), (300, 257)])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("name", METRICS)
def test_metric_matches_reference(name, from_logits, shape, dtype):
    rng = np.random.default_rng(seed_of(name, from_logits, shape))
    pred, y = metric_data(name, from_logits, shape, dtype, rng)
    total = K.metric_sum(K.METRICS[name], pred, y, from_logits=from_logits)
    expected = reference_metric(name, pred, y, from_logits) * shape[0]
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    assert total == pytest.approx(expected, rel=rtol, abs=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_accuracy_thresholds(dtype):
    pred = np.array([[0.5, 0.51, 0.49, -0.1, 0.0, 0.2]], dtype=dtype)
    y = np.array([[1.0, 1.0, 0.0, 0.0, 0.0, 1.0]], dtype=dtype)
    code = K.METRICS["binary_accuracy"]
    # probabilities: 1 when p > 0.5 -> predictions [0, 1, 0, 0, 0, 0]
    assert K.metric_sum(code, pred, y, from_logits=False) == pytest.approx(4 / 6)
    # logits: 1 when z > 0 -> predictions [1, 1, 1, 0, 0, 1]
    assert K.metric_sum(code, pred, y, from_logits=True) == pytest.approx(5 / 6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_shape_checks(dtype):
    pred = np.zeros((4, 3), dtype)
    with pytest.raises(ValueError):
        K.loss(K.LOSSES[SPARSE], pred, np.zeros((4, 3), dtype))
    with pytest.raises(ValueError):
        K.loss(K.LOSSES["categorical_crossentropy"], pred, np.zeros((4, 1), dtype))
    with pytest.raises(ValueError):
        K.metric_sum(K.METRICS["mean_absolute_error"], pred, np.zeros((3, 3), dtype))


# ---- per-sample weights: scikit-learn's weighted mean, sum_i w_i l_i / sum_i w_i ----------

WEIGHTED_SHAPES = [(1, 1), (1, 6), (5, 1), (7, 13), (300, 17)]


def make_weights(B, dtype, rng, negative=False):
    """Weights in [0, 3), some exactly 0 (scikit-learn keeps zero-weight samples in their
    batch); with negative, a few below 0 too (scikit-learn accepts them)."""
    w = rng.uniform(0, 3, size=B)
    w[::4] = 0.0
    if negative and B > 2:
        w[1::5] = -rng.uniform(0.1, 0.5, size=w[1::5].shape)
    if B == 1 or w.sum() == 0:
        w[0] = 1.7
    return w.astype(dtype)


def check_weighted_loss(name, pred, y, weights, from_logits, nthreads=2):
    dtype = pred.dtype.type
    value, grad = K.loss(K.LOSSES[name], pred, y, from_logits=from_logits, nthreads=nthreads,
                         weights=weights)
    value_ref, grad_ref = ref.weighted_loss(name, pred, y, weights, from_logits)
    assert grad.dtype == dtype and grad.shape == pred.shape
    rtol, atol = (1e-10, 1e-14) if dtype == np.float64 else (1e-5, 1e-6)
    assert value == pytest.approx(value_ref, rel=rtol, abs=atol)
    scale = max(float(np.max(np.abs(grad_ref))), 1e-300)
    np.testing.assert_allclose(grad.astype(np.float64), grad_ref, rtol=rtol, atol=atol * scale)
    return value, grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", WEIGHTED_SHAPES)
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("name", LOSSES)
def test_weighted_loss_matches_reference(name, from_logits, shape, dtype):
    rng = np.random.default_rng(seed_of(name, from_logits, shape, "weighted"))
    pred, y = make_data(name, from_logits, shape, dtype, rng)
    weights = make_weights(shape[0], dtype, rng, negative=shape[0] > 5)
    weights_copy = weights.copy()
    check_weighted_loss(name, pred, y, weights, from_logits)
    np.testing.assert_array_equal(weights, weights_copy)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("name", LOSSES)
def test_weighted_loss_central_differences(name, from_logits):
    """The kernel's weighted gradient is the derivative of its own weighted loss."""
    rng = np.random.default_rng(seed_of(name, from_logits, "weighted-fd"))
    pred, y = make_data(name, from_logits, (6, 4), np.float64, rng)
    weights = make_weights(6, np.float64, rng, negative=True)
    code = K.LOSSES[name]
    _, grad = K.loss(code, pred, y, from_logits=from_logits, weights=weights)
    numeric = ref.numeric_gradient(
        lambda p: K.loss(code, p, y, from_logits=from_logits, weights=weights)[0], pred,
        eps=1e-6)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("name", LOSSES)
def test_unit_weights_are_the_unweighted_loss_bit_for_bit(name, from_logits, dtype):
    rng = np.random.default_rng(seed_of(name, from_logits, "unit-weights"))
    for shape in [(7, 13), (40000, 1)]:
        pred, y = make_data(name, from_logits, shape, dtype, rng)
        plain = K.loss(K.LOSSES[name], pred, y, from_logits=from_logits, nthreads=2)
        unit = K.loss(K.LOSSES[name], pred, y, from_logits=from_logits, nthreads=2,
                      weights=np.ones(shape[0], dtype))
        assert plain[0] == unit[0]
        assert np.array_equal(plain[1], unit[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LOSSES)
def test_weighted_threads_bit_identical(name, dtype):
    rng = np.random.default_rng(seed_of(name, "weighted-threads"))
    for shape in [(300, 257), (100003, 1)]:
        pred, y = make_data(name, True, shape, dtype, rng)
        weights = make_weights(shape[0], dtype, rng, negative=True)
        v1, g1 = K.loss(K.LOSSES[name], pred, y, from_logits=True, nthreads=1, weights=weights)
        for nt in (2, 3):
            v2, g2 = K.loss(K.LOSSES[name], pred, y, from_logits=True, nthreads=nt,
                            weights=weights)
            assert v1 == v2 and np.array_equal(g1, g2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LOSSES)
def test_weights_summing_to_zero_give_nan_and_zero_gradient(name, dtype):
    rng = np.random.default_rng(seed_of(name, "zero-sum"))
    pred, y = make_data(name, True, (4, 3), dtype, rng)
    for weights in ([0, 0, 0, 0], [1, -1, 0, 0], [2.5, 0, -2.5, 0]):
        value, grad = K.loss(K.LOSSES[name], pred, y, from_logits=True,
                             weights=np.array(weights, dtype))
        assert np.isnan(value) and np.array_equal(grad, np.zeros_like(grad))
        assert np.isnan(ref.weighted_loss(name, pred, y, weights, True)[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", METRICS)
def test_weighted_metric_sum(name, dtype):
    """Each sample's metric times its weight: the reference's per-sample value, weighted."""
    rng = np.random.default_rng(seed_of(name, "weighted-metric"))
    pred, y = metric_data(name, False, (9, 4), dtype, rng)
    weights = make_weights(9, dtype, rng, negative=True)
    total = K.metric_sum(K.METRICS[name], pred, y, weights=weights)
    per_sample = [reference_metric(name, pred[i:i + 1], y[i:i + 1], False) for i in range(9)]
    expected = float(np.dot(weights.astype(np.float64), per_sample))
    assert total == pytest.approx(expected, rel=1e-12 if dtype == np.float64 else 1e-6,
                                  abs=1e-12)
    assert K.metric_sum(K.METRICS[name], pred, y, weights=np.ones(9, dtype)) == \
        K.metric_sum(K.METRICS[name], pred, y)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_shape_and_dtype_checks(dtype):
    pred, y = np.zeros((4, 3), dtype), np.zeros((4, 3), dtype)
    code = K.LOSSES["mean_squared_error"]
    other = np.float32 if dtype == np.float64 else np.float64
    for bad in (np.ones(3, dtype), np.ones(5, dtype), np.ones((4, 1), dtype)):
        with pytest.raises(ValueError, match="weights"):
            K.loss(code, pred, y, weights=bad)
    with pytest.raises((ValueError, TypeError)):
        K.loss(code, pred, y, weights=np.ones(4, other))
    with pytest.raises(ValueError, match="weights"):
        K.metric_sum(K.METRICS["mean_squared_error"], pred, y, weights=np.ones(5, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 7, 8, 9, 15, 16, 17, 37, 200])
@pytest.mark.parametrize("k", [1, 2, 10, 16])
def test_sparse_logits_rows_at_once(rows, k, dtype):
    """Sparse cross-entropy from logits with K <= 16 runs 16 float32 rows (8 float64 rows)
    at a time in class-major vectors (src_c/losses.c): the reference's loss and gradient,
    weighted and not, unit weights giving the unweighted bits, and a bad class id or a NaN
    logit spoiling only its own row's gradient, wherever the row sits in its group."""
    rng = np.random.default_rng(seed_of("rows16", rows, k))
    pred, y = make_data(SPARSE, True, (rows, k), dtype, rng)
    check_loss(SPARSE, pred, y, True)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    w = rng.uniform(0.1, 2.0, size=rows).astype(dtype)
    value, grad = K.loss(K.LOSSES[SPARSE], pred, y, from_logits=True, weights=w)
    value_ref, grad_ref = ref.weighted_loss(SPARSE, pred, y, w, from_logits=True)
    assert value == pytest.approx(value_ref, rel=tol)
    np.testing.assert_allclose(grad, grad_ref, rtol=tol, atol=tol / 10 * np.abs(grad_ref).max())
    ones = np.ones(rows, dtype=dtype)
    v1, g1 = K.loss(K.LOSSES[SPARSE], pred, y, from_logits=True, weights=ones)
    v0, g0 = K.loss(K.LOSSES[SPARSE], pred, y, from_logits=True)
    assert v1 == v0 and np.array_equal(g1, g0)
    if rows > 2:
        bad_row, nan_row = rows - 1, rows // 2
        y[bad_row, 0] = k + 0.5
        pred[nan_row, 0] = np.nan
        value, grad = K.loss(K.LOSSES[SPARSE], pred, y, from_logits=True)
        assert np.isnan(value)
        assert np.array_equal(grad[bad_row], np.zeros(k, np.float32))
        assert np.isnan(grad[nan_row]).all()
        keep = [r for r in range(rows) if r not in (bad_row, nan_row)]
        _, grad_ref = reference_loss(SPARSE, pred[keep], y[keep], True)
        np.testing.assert_allclose(grad[keep] * rows / len(keep), grad_ref, rtol=tol,
                                   atol=tol / 10)


@pytest.mark.parametrize("rows", [1, 8, 16, 64])
@pytest.mark.parametrize("k", [2, 10, 16, 17])
def test_float64_sparse_rows_match_the_row_path(rows, k):
    """float64: the 8-row sparse path's loss has the one-hot loss's bits (whose rows go
    one at a time through the scalar exp_nonpositive_f64), and so has its gradient where
    the batch's scale 1/B is a power of two (the two losses scale in another order); K =
    17 is the row path on both sides. Also e^x itself: within 3 ulp of NumPy's exp."""
    rng = np.random.default_rng(seed_of("rows8", rows, k))
    pred = rng.standard_normal((rows, k)) * 4
    labels = rng.integers(0, k, size=rows)
    sparse = K.loss(K.LOSSES[SPARSE], pred, labels.reshape(-1, 1).astype(np.float64),
                    from_logits=True)
    onehot = K.loss(K.LOSSES["categorical_crossentropy"], pred, np.eye(k)[labels],
                    from_logits=True)
    assert sparse[0] == onehot[0]
    assert np.array_equal(sparse[1], onehot[1])
    # rows of two logits [0, x], class 0: the gradient's second term is e^x / (1 + e^x) / B,
    # here against the same arithmetic on NumPy's exp (x above -650: below, it is subnormal)
    x = np.concatenate([-np.geomspace(1e-12, 650, 20000), [0.0]])
    z = np.stack([np.zeros_like(x), x], axis=1)
    _, grad = K.loss(K.LOSSES[SPARSE], z, np.zeros((len(x), 1)), from_logits=True)
    e = np.exp(x)
    np.testing.assert_allclose(grad[:, 1], e * (1.0 / (1.0 + e)) * (1.0 / len(x)), rtol=6.7e-16,
                               atol=0)


def _clipped_evaluate(z, y, loss, dtype):
    """The loss of logits z as the network reports it with scikit-learn's clipping
    (LOSS_CLIP_PROBABILITIES), through an identity layer."""
    from fastnn import Sequential
    from fastnn.layers import Dense
    K_ = z.shape[1]
    model = Sequential([Dense(K_, use_bias=False)], dtype=dtype)
    model.build((K_,))
    model.set_weights([np.eye(K_, dtype=dtype)])
    model._clip_log_loss = True
    model.compile(optimizer="sgd", loss=loss)
    return model.evaluate(z.astype(dtype), y, batch_size=len(z), verbose=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipped_log_loss_is_each_term_clamped(dtype):
    """fastnn.sklearn's classifier reports scikit-learn's log-loss: each term from a
    probability clipped to [eps, 1 - eps]. Rows near both ends, where lse rounds at large
    logits too (z = [1000, 986] in float32 computes a loss of 0, clipped to -log(1 - eps);
    16 logits near 2^25 compute 16, above -log(eps))."""
    from fastnn.losses import BinaryCrossentropy, SparseCategoricalCrossentropy
    eps = np.finfo(dtype).eps
    lo, hi = -np.log1p(-eps), -np.log(eps)
    rng = np.random.default_rng(5)
    z = rng.standard_normal((50, 4)) * 30  # beyond both ends in either type
    labels = rng.integers(0, 4, 50)
    zr = z.astype(dtype).astype(np.float64)  # the logits as the network holds them
    lse = np.log(np.exp(zr - zr.max(1, keepdims=True)).sum(1)) + zr.max(1)
    terms = lse - zr[np.arange(len(zr)), labels]
    assert terms.max() > hi and terms.min() < lo
    sparse = SparseCategoricalCrossentropy(from_logits=True)
    value = _clipped_evaluate(z, labels, sparse, dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert value == pytest.approx(np.clip(terms, lo, hi).mean(), rel=tol)
    # rows whose loss the network computes outside the bounds only through rounding
    if dtype == np.float32:
        assert _clipped_evaluate(np.array([[1000.0, 986.0]]), np.array([0]), sparse,
                                 dtype) == pytest.approx(lo, rel=1e-6)
        big = np.array([[2.0 ** 25] + [2.0 ** 25 + 12] * 15])
        assert _clipped_evaluate(big, np.array([0]), sparse, dtype) == pytest.approx(hi, rel=1e-6)
    else:
        assert _clipped_evaluate(np.array([[1e6, 1e6 - 30]]), np.array([0]), sparse,
                                 dtype) == pytest.approx(lo, rel=1e-6)
    zb = rng.standard_normal((40, 3)) * 40
    yb = rng.integers(0, 2, (40, 3)).astype(dtype)
    softplus = np.logaddexp(0, np.where(yb > 0, -zb, zb).astype(dtype).astype(np.float64))
    value = _clipped_evaluate(zb, yb, BinaryCrossentropy(from_logits=True), dtype)
    assert value == pytest.approx(np.clip(softplus, lo, hi).mean(), rel=tol)
