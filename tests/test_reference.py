"""Tests of the NumPy reference kernels themselves (gradients, invariants,
hand-computed optimizer steps and metric values)."""

import numpy as np
import pytest

from fastnn import reference as ref

SHAPES = [(1, 1), (1, 3), (4, 1), (3, 5)]
ACTS = ["linear", "sigmoid", "relu", "leaky_relu", "tanh", "softmax"]


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    scale = max(np.linalg.norm(a), np.linalg.norm(b), 1e-8)
    return np.linalg.norm(a - b) / scale


def away_from_zero(rng, shape, margin=0.1):
    """Random values with |value| >= margin (keeps relu kinks out of reach)."""
    return rng.choice([-1.0, 1.0], size=shape) * (margin + np.abs(rng.standard_normal(shape)))


def probs(rng, shape):
    p = rng.uniform(0.1, 1.0, size=shape)
    return p / p.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------- activations

@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_activation_backward_matches_numeric(name, shape):
    rng = np.random.default_rng(0)
    z = away_from_zero(rng, shape)
    r = rng.standard_normal(shape)
    f = lambda zz: np.sum(ref.activation_forward(zz, name, slope=0.2) * r)
    a = ref.activation_forward(z, name, slope=0.2)
    dz = ref.activation_backward(r, z, a, name, slope=0.2)
    assert rel_err(dz, ref.numeric_gradient(f, z)) < 1e-6


def test_activation_values():
    z = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(ref.activation_forward(z, "relu"), [[0.0, 0.0, 3.0]])
    np.testing.assert_allclose(ref.activation_forward(z, "leaky_relu", 0.1), [[-0.2, 0.0, 3.0]])
    np.testing.assert_allclose(ref.activation_forward(z, "sigmoid"),
                               [[1 / (1 + np.exp(2.0)), 0.5, 1 / (1 + np.exp(-3.0))]])
    np.testing.assert_allclose(ref.activation_forward(z, "tanh"), np.tanh(z))
    np.testing.assert_array_equal(ref.activation_forward(z, "linear"), z)
    e = np.exp(z - 3.0)
    np.testing.assert_allclose(ref.activation_forward(z, "softmax"), e / e.sum())


def test_activation_derivative_at_zero():
    z = np.array([0.0, -1.0, 1.0])
    da = np.ones(3)
    np.testing.assert_array_equal(ref.activation_backward(da, z, None, "relu"), [0.0, 0.0, 1.0])
    np.testing.assert_allclose(ref.activation_backward(da, z, None, "leaky_relu", 0.3),
                               [0.3, 0.3, 1.0])


def test_softmax_rows_sum_to_one_and_stable():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((6, 4)) * 50
    z[0] = [1e4, -1e4, 0.0, 1e4]
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        a = ref.activation_forward(z, "softmax")
    np.testing.assert_allclose(a.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a[0], [0.5, 0.0, 0.0, 0.5])


def test_sigmoid_no_overflow():
    z = np.array([-1e4, -800.0, 0.0, 800.0, 1e4])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        a = ref.activation_forward(z, "sigmoid")
    np.testing.assert_array_equal(a, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_unknown_activation():
    with pytest.raises(ValueError):
        ref.activation_forward(np.zeros((1, 1)), "gelu")


# ---------------------------------------------------------------- dense

@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("bsz,c,oc", [(1, 1, 1), (1, 3, 2), (4, 2, 1), (3, 4, 5)])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_backward_matches_numeric(name, bsz, c, oc, use_bias):
    rng = np.random.default_rng(2)
    while True:  # draw until no pre-activation sits near the relu kink
        x = rng.standard_normal((bsz, c))
        w = rng.standard_normal((c, oc))
        b = rng.standard_normal(oc) if use_bias else None
        z, a = ref.dense_forward(x, w, b, name, slope=0.2)
        if np.min(np.abs(z)) > 1e-2:
            break
    r = rng.standard_normal((bsz, oc))
    dx, dw, db = ref.dense_backward(r, x, w, z, a, name, slope=0.2)

    def loss(xx, ww, bb):
        return np.sum(ref.dense_forward(xx, ww, bb, name, slope=0.2)[1] * r)

    assert rel_err(dx, ref.numeric_gradient(lambda t: loss(t, w, b), x)) < 1e-6
    assert rel_err(dw, ref.numeric_gradient(lambda t: loss(x, t, b), w)) < 1e-6
    if use_bias:
        assert rel_err(db, ref.numeric_gradient(lambda t: loss(x, w, t), b)) < 1e-6
    else:
        np.testing.assert_allclose(db, ref.activation_backward(r, z, a, name, 0.2).sum(0))


def test_dense_forward_values():
    x = np.array([[1.0, 2.0]])
    w = np.array([[1.0, -1.0, 0.0], [0.5, 2.0, -3.0]])
    b = np.array([0.0, -4.0, 1.0])
    z, a = ref.dense_forward(x, w, b, "relu")
    np.testing.assert_array_equal(z, [[2.0, -1.0, -5.0]])
    np.testing.assert_array_equal(a, [[2.0, 0.0, 0.0]])


# ---------------------------------------------------------------- losses

def check_loss_grad(fn, pred, *args, **kw):
    loss, grad = fn(pred, *args, **kw)
    assert isinstance(loss, float) and np.isfinite(loss)
    assert grad.shape == pred.shape
    num = ref.numeric_gradient(lambda p: fn(p, *args, **kw)[0], pred)
    assert rel_err(grad, num) < 1e-6


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [True, False])
def test_bce_grad(shape, from_logits):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=shape).astype(float)
    pred = rng.standard_normal(shape) * 3 if from_logits else rng.uniform(0.05, 0.95, shape)
    check_loss_grad(ref.binary_crossentropy, pred, y, from_logits=from_logits)
    soft = rng.uniform(0, 1, size=shape)
    check_loss_grad(ref.binary_crossentropy, pred, soft, from_logits=from_logits)


@pytest.mark.parametrize("shape", SHAPES)
def test_mse_grad(shape):
    rng = np.random.default_rng(4)
    check_loss_grad(ref.mean_squared_error, rng.standard_normal(shape), rng.standard_normal(shape))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [True, False])
def test_sparse_cce_grad(shape, from_logits):
    rng = np.random.default_rng(5)
    labels = rng.integers(0, shape[1], size=shape[0])
    pred = rng.standard_normal(shape) * 3 if from_logits else rng.uniform(0.1, 1.0, shape)
    check_loss_grad(ref.sparse_categorical_crossentropy, pred, labels, from_logits=from_logits)
    # (B, 1) float labels give the same result
    a = ref.sparse_categorical_crossentropy(pred, labels, from_logits)
    b = ref.sparse_categorical_crossentropy(pred, labels.astype(float)[:, None], from_logits)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("from_logits", [True, False])
def test_cce_grad(shape, from_logits):
    rng = np.random.default_rng(6)
    onehot = np.eye(shape[1])[rng.integers(0, shape[1], size=shape[0])]
    soft = probs(rng, shape)
    pred = rng.standard_normal(shape) * 3 if from_logits else rng.uniform(0.1, 1.0, shape)
    check_loss_grad(ref.categorical_crossentropy, pred, onehot, from_logits=from_logits)
    check_loss_grad(ref.categorical_crossentropy, pred, soft, from_logits=from_logits)
    # unnormalised soft targets exercise the sum_k y_k factor
    check_loss_grad(ref.categorical_crossentropy, pred, 2.5 * soft, from_logits=from_logits)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("loss", ["binary_crossentropy", "mean_squared_error",
                                  "sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_weighted_loss(loss, from_logits):
    """scikit-learn's np.average(l_i, weights=w): its gradient by central differences,
    equal weights giving the unweighted mean, and a value computed by hand."""
    rng = np.random.default_rng(10)
    shape = (5, 3)
    pred = rng.standard_normal(shape) * 2 if from_logits else rng.uniform(0.1, 0.9, shape)
    if loss == "sparse_categorical_crossentropy":
        y = rng.integers(0, 3, size=5)
    elif loss == "categorical_crossentropy":
        y = probs(rng, shape)
    else:
        y = rng.uniform(0, 1, size=shape)
    weights = np.array([0.5, 0.0, 2.0, -0.3, 1.2])
    check_loss_grad(lambda p: ref.weighted_loss(loss, p, y, weights, from_logits), pred)
    plain = ref.loss_function(loss, pred, y, from_logits)
    equal = ref.weighted_loss(loss, pred, y, np.full(5, 0.7), from_logits)
    assert equal[0] == pytest.approx(plain[0], rel=1e-14)
    np.testing.assert_allclose(equal[1], plain[1], rtol=1e-14)
    rows = [ref.loss_function(loss, pred[i:i + 1], y[i:i + 1], from_logits)[0] for i in range(5)]
    by_hand = (0.5 * rows[0] + 2.0 * rows[2] - 0.3 * rows[3] + 1.2 * rows[4]) / 3.4
    assert ref.weighted_loss(loss, pred, y, weights, from_logits)[0] == pytest.approx(
        by_hand, rel=1e-14)


def test_cce_logits_grad_rows_sum_to_zero():
    rng = np.random.default_rng(7)
    z = rng.standard_normal((5, 4)) * 4
    onehot = np.eye(4)[[0, 3, 1, 1, 2]]
    _, g = ref.categorical_crossentropy(z, onehot, from_logits=True)
    np.testing.assert_allclose(g.sum(axis=-1), 0.0, atol=1e-15)
    _, g = ref.sparse_categorical_crossentropy(z, [0, 3, 1, 1, 2], from_logits=True)
    np.testing.assert_allclose(g.sum(axis=-1), 0.0, atol=1e-15)


def test_cce_sparse_and_dense_agree():
    rng = np.random.default_rng(8)
    labels = np.array([2, 0, 1])
    onehot = np.eye(3)[labels]
    for pred, fl in [(rng.standard_normal((3, 3)), True), (probs(rng, (3, 3)), False)]:
        a = ref.categorical_crossentropy(pred, onehot, fl)
        b = ref.sparse_categorical_crossentropy(pred, labels, fl)
        assert a[0] == pytest.approx(b[0], rel=1e-14)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-12, atol=1e-15)


def test_logits_and_probability_forms_agree():
    rng = np.random.default_rng(9)
    z = rng.standard_normal((4, 3))
    y = np.eye(3)[[0, 1, 2, 1]]
    lg = ref.categorical_crossentropy(z, y, True)[0]
    pr = ref.categorical_crossentropy(ref.softmax(z), y, False)[0]
    assert lg == pytest.approx(pr, rel=1e-12)
    yb = rng.integers(0, 2, size=(4, 3)).astype(float)
    lg = ref.binary_crossentropy(z, yb, True)[0]
    pr = ref.binary_crossentropy(ref.sigmoid(z), yb, False)[0]
    assert lg == pytest.approx(pr, rel=1e-12)


def test_losses_exact_at_huge_logits():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert ref.binary_crossentropy([[1e4]], [[0.0]], True)[0] == 1e4
        assert ref.binary_crossentropy([[1e4]], [[1.0]], True)[0] == 0.0
        assert ref.binary_crossentropy([[-1e4]], [[1.0]], True)[0] == 1e4
        loss, g = ref.binary_crossentropy([[-1e4, 1e4]], [[0.0, 1.0]], True)
        assert loss == 0.0
        np.testing.assert_array_equal(g, [[0.0, 0.0]])
        z = np.array([[1e4, -1e4]])
        assert ref.categorical_crossentropy(z, [[1.0, 0.0]], True)[0] == 0.0
        assert ref.categorical_crossentropy(z, [[0.0, 1.0]], True)[0] == 2e4
        assert ref.sparse_categorical_crossentropy(z, [1], True)[0] == 2e4
        loss, g = ref.sparse_categorical_crossentropy(z, [1], True)
        np.testing.assert_array_equal(g, [[1.0, -1.0]])


def test_loss_values_by_hand():
    # BCE on probabilities: -(log 0.8 + log 0.6) / 2
    loss, _ = ref.binary_crossentropy([[0.8, 0.4]], [[1.0, 0.0]])
    assert loss == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2, rel=1e-14)
    # MSE: ((1-0)^2 + (2-4)^2) / 2 = 2.5, grad 2*(pred-y)/2
    loss, g = ref.mean_squared_error([[1.0, 2.0]], [[0.0, 4.0]])
    assert loss == 2.5
    np.testing.assert_array_equal(g, [[1.0, -2.0]])
    # CCE on unnormalised probabilities: q = [0.2, 0.8] -> -log 0.8
    loss, _ = ref.categorical_crossentropy([[1.0, 4.0]], [[0.0, 1.0]])
    assert loss == pytest.approx(-np.log(0.8), rel=1e-14)
    loss, _ = ref.sparse_categorical_crossentropy([[1.0, 4.0], [3.0, 1.0]], [1, 0])
    assert loss == pytest.approx(-(np.log(0.8) + np.log(0.75)) / 2, rel=1e-14)


def test_probability_losses_clipped_entries():
    # p = 0 and p = 1 are clipped: finite loss, zero gradient there
    loss, g = ref.binary_crossentropy([[0.0, 1.0, 0.5]], [[1.0, 1.0, 1.0]])
    eps = 1e-7
    assert loss == pytest.approx((-np.log(eps) - np.log(1 - eps) + np.log(2)) / 3, rel=1e-12)
    np.testing.assert_array_equal(g[0, :2], [0.0, 0.0])
    assert g[0, 2] == pytest.approx((0.5 - 1) / 0.25 / 3)
    # a row whose target probability is clipped gets no gradient
    loss, g = ref.sparse_categorical_crossentropy([[0.0, 2.0], [1.0, 1.0]], [0, 0])
    assert loss == pytest.approx((-np.log(eps) + np.log(2)) / 2, rel=1e-12)
    np.testing.assert_array_equal(g[0], [0.0, 0.0])
    np.testing.assert_allclose(g[1], [(0.5 - 1.0) / 2, 0.5 / 2])
    loss, g = ref.categorical_crossentropy([[0.0, 2.0]], [[1.0, 0.0]])
    assert loss == pytest.approx(-np.log(eps), rel=1e-12)
    np.testing.assert_array_equal(g, [[0.0, 0.0]])


# ---------------------------------------------------------------- metrics

def test_binary_accuracy():
    pred = np.array([[0.9, 0.2], [0.4, 0.6], [0.5, 0.7]])
    y = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    # per row: 1, 0.5, 1 (0.5 is not > 0.5 so predicts 0) -> 2.5 / 3
    assert ref.binary_accuracy(pred, y) == pytest.approx(2.5 / 3)
    assert ref.binary_accuracy(pred, y, threshold=0.65) == pytest.approx(2.0 / 3)
    logits = np.array([[2.0], [-1.0], [0.0], [0.5]])
    assert ref.binary_accuracy(logits, [1, 1, 0, 0], from_logits=True) == 0.5


def test_categorical_accuracies():
    pred = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
    labels = [1, 0, 1, 2]
    assert ref.sparse_categorical_accuracy(pred, labels) == 0.5
    assert ref.sparse_categorical_accuracy(pred, np.array(labels, float)[:, None]) == 0.5
    assert ref.categorical_accuracy(pred, np.eye(3)[labels]) == 0.5


def test_regression_metrics():
    pred = np.array([[1.0, 2.0], [3.0, 5.0]])
    y = np.array([[0.0, 2.0], [5.0, 4.0]])
    assert ref.mean_absolute_error(pred, y) == 1.0  # (1 + 0 + 2 + 1) / 4
    assert ref.mean_squared_error_metric(pred, y) == 1.5  # (1 + 0 + 4 + 1) / 4


# ---------------------------------------------------------------- optimizers

def test_sgd_by_hand():
    w, g, vel = np.array([1.0, 2.0]), np.array([0.5, -1.0]), np.array([0.1, 0.0])
    w1, v1 = ref.sgd_update(w, g, vel, lr=0.1)
    np.testing.assert_allclose(w1, [0.95, 2.1], rtol=1e-15)
    np.testing.assert_array_equal(v1, [0.1, 0.0])
    # velocity = 0.9*[0.1, 0] - 0.1*[0.5, -1] = [0.04, 0.1]
    w1, v1 = ref.sgd_update(w, g, vel, lr=0.1, momentum=0.9)
    np.testing.assert_allclose(v1, [0.04, 0.1], rtol=1e-14)
    np.testing.assert_allclose(w1, [1.04, 2.1], rtol=1e-14)
    # nesterov: w + 0.9*[0.04, 0.1] - 0.1*[0.5, -1] = [0.986, 2.19]
    w1, v1 = ref.sgd_update(w, g, vel, lr=0.1, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(w1, [0.986, 2.19], rtol=1e-14)
    np.testing.assert_array_equal([w, g, vel], [[1.0, 2.0], [0.5, -1.0], [0.1, 0.0]])


def test_adam_by_hand():
    w, g, z = np.array([0.5, -0.5]), np.array([1.0, -2.0]), np.zeros(2)
    # eps = 0: m = 0.1 g, v = 0.001 g^2, lr_t = 0.001 sqrt(0.001)/0.1,
    # so the step is exactly lr * sign(g)
    w1, m1, v1 = ref.adam_update(w, g, z, z, 1, eps=0.0)
    np.testing.assert_allclose(m1, [0.1, -0.2], rtol=1e-15)
    np.testing.assert_allclose(v1, [0.001, 0.004], rtol=1e-15)
    np.testing.assert_allclose(w1, [0.499, -0.499], rtol=1e-13)
    # step 2 with the same gradient: m = [0.19, -0.38], v = [0.001999, 0.007996],
    # still exactly lr * sign(g) when eps = 0
    w2, m2, v2 = ref.adam_update(w1, g, m1, v1, 2, eps=0.0)
    np.testing.assert_allclose(m2, [0.19, -0.38], rtol=1e-14)
    np.testing.assert_allclose(v2, [0.001999, 0.007996], rtol=1e-14)
    np.testing.assert_allclose(w2, [0.498, -0.498], rtol=1e-13)
    # default eps = 1e-7: step = 0.001 sqrt(v)/(sqrt(v) + 1e-7)
    #   sqrt(0.001) = 0.0316227766..., sqrt(0.004) = 0.0632455532...
    w1, _, _ = ref.adam_update(w, g, z, z, 1)
    np.testing.assert_allclose(w1, [0.5 - 0.00099999683773234, -0.5 + 0.00099999841886367],
                               rtol=1e-13)


def test_rmsprop_by_hand():
    w, g = np.array([1.0, -1.0]), np.array([2.0, -4.0])
    v0, mom0 = np.zeros(2), np.array([0.1, 0.1])
    # rho = 0.75: v = 0.25 g^2 = [1, 4]; inc = 0.01 g / sqrt(v) = [0.02, -0.02]
    w1, v1, m1 = ref.rmsprop_update(w, g, v0, mom0, lr=0.01, rho=0.75, eps=0.0)
    np.testing.assert_array_equal(v1, [1.0, 4.0])
    np.testing.assert_allclose(w1, [0.98, -0.98], rtol=1e-15)
    np.testing.assert_array_equal(m1, mom0)
    # momentum 0.5: mom = 0.5*[0.1, 0.1] + [0.02, -0.02] = [0.07, 0.03]
    w1, v1, m1 = ref.rmsprop_update(w, g, v0, mom0, lr=0.01, rho=0.75, momentum=0.5, eps=0.0)
    np.testing.assert_allclose(m1, [0.07, 0.03], rtol=1e-14)
    np.testing.assert_allclose(w1, [0.93, -1.03], rtol=1e-14)
    # default eps: inc = 0.02 / sqrt(1 + 1e-7) = 0.019999999000000075 for the first entry
    w1, _, _ = ref.rmsprop_update(w, g, v0, mom0, lr=0.01, rho=0.75)
    assert w1[0] == pytest.approx(1.0 - 0.019999999000000075, rel=1e-14)


# ---------------------------------------------------------------- dropout and helper

def test_dropout():
    x = np.array([[1.0, -2.0, 3.0]])
    mask = np.array([[0.0, 2.0, 2.0]])
    np.testing.assert_array_equal(ref.dropout_forward(x, mask), [[0.0, -4.0, 6.0]])
    np.testing.assert_array_equal(ref.dropout_backward(x, mask), [[0.0, -4.0, 6.0]])


def test_numeric_gradient_helper():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    g = ref.numeric_gradient(lambda t: np.sum(t ** 3), x)
    np.testing.assert_allclose(g, 3 * x ** 2, rtol=1e-9)
    np.testing.assert_array_equal(x, [[1.0, -2.0], [0.5, 3.0]])  # input untouched
