"""src_c/network.c through fastnn._kernels.Network and the Sequential model: whole training
steps against the NumPy reference network (fastnn.reference.reference_train_step),
Network.loss_grad against reference gradients and central differences (fastnn.gradcheck),
and thread-count independence."""

import os
import textwrap
import zlib

import numpy as np
import pytest

import fastnn
from fastnn import Sequential
from fastnn import _kernels as K
from fastnn import reference as ref
from fastnn.layers import Activation, Dense, Dropout, LeakyReLU
from fastnn.losses import (BinaryCrossentropy, CategoricalCrossentropy, MeanSquaredError,
                           SparseCategoricalCrossentropy)
from fastnn.optimizers import SGD, Adam, RMSprop

ACTS = sorted(K.ACTIVATIONS, key=K.ACTIVATIONS.get)
SPARSE = "sparse_categorical_crossentropy"
N = 12  # samples in the small problems
TOL = dict(rtol=1e-10, atol=1e-12)
# whether training may split the first layer's units between threads (network_split_units)
SPLITS = K.small_gemm_available() and K.openmp_available()


pytestmark = pytest.mark.usefixtures("one_blas_thread")


def seed_of(*parts):
    return zlib.crc32(repr(parts).encode())


# ---- data and models -------------------------------------------------------------------

def targets(loss, n, k, rng, soft=False):
    """y as the model takes it: (n,) class ids for the sparse loss, else (n, k)."""
    if loss == SPARSE:
        return rng.integers(0, k, size=n)
    if loss == "categorical_crossentropy":
        return rng.dirichlet(np.ones(k), size=n) if soft else np.eye(k)[rng.integers(0, k, size=n)]
    if loss == "binary_crossentropy":
        return rng.uniform(0, 1, size=(n, k)) if soft else rng.integers(0, 2, size=(n, k)) * 1.0
    return rng.standard_normal((n, k))


def loss_object(loss, from_logits):
    return {"binary_crossentropy": BinaryCrossentropy, SPARSE: SparseCategoricalCrossentropy,
            "categorical_crossentropy": CategoricalCrossentropy}.get(
        loss, lambda from_logits: MeanSquaredError())(from_logits=from_logits)


def random_weights(model, rng):
    """Deterministic weights (biases nonzero, so the bias path matters)."""
    return [rng.standard_normal(w.shape) * (0.6 if w.ndim == 2 else 0.2)
            for w in model.get_weights()]


def reference_layers(weights, acts, use_bias, slopes=None):
    """fastnn.reference's network description for dense layers with these weights."""
    layers, k = [], 0
    for i, (act, bias) in enumerate(zip(acts, use_bias)):
        w = weights[k]
        b = weights[k + 1] if bias else None
        k += 2 if bias else 1
        layers.append((w, b, act, 0.01 if slopes is None else slopes[i]))
    return layers


def flat_targets(loss, y):
    """y as the compiled Network reads it: (n, 1) class ids or (n, k)."""
    y = np.asarray(y, dtype=np.float64)
    return y.reshape(len(y), -1)


# ---- whole training steps: fit against reference_train_step ------------------------------

# name: (Dense units/activations/bias, extra layers, loss, from_logits, width, soft targets)
TRAIN_CASES = {
    "sigmoid_bce": ([(6, "tanh", True), (1, "sigmoid", True)], "binary_crossentropy", False, False),
    "sigmoid_bce_multilabel_soft": ([(5, "relu", True), (3, "sigmoid", True)],
                                    "binary_crossentropy", False, True),
    "softmax_sparse_ce": ([(8, "relu", True), (4, "softmax", True)], SPARSE, False, False),
    "relu_linear_mse": ([(7, "relu", True), (2, "linear", True)], "mean_squared_error", False,
                        False),
    "tanh_ce_from_logits": ([(5, "tanh", True), (3, "linear", True)],
                            "categorical_crossentropy", True, False),
    "tanh_out_ce_from_logits": ([(5, "leaky_relu", True), (3, "tanh", True)],
                                "categorical_crossentropy", True, True),
    "nobias_bce_from_logits": ([(6, "leaky_relu", False), (2, "linear", False)],
                               "binary_crossentropy", True, False),
    "sparse_from_logits": ([(6, "sigmoid", True), (5, "linear", True)], SPARSE, True, False),
    "softmax_hidden_sigmoid_mse": ([(4, "softmax", True), (2, "sigmoid", True)],
                                   "mean_squared_error", False, False),
    "deep_softmax_ce": ([(6, "sigmoid", True), (5, "tanh", False), (3, "softmax", True)],
                        "categorical_crossentropy", False, True),
}

OPTIMIZERS = {
    "adam": (lambda: Adam(learning_rate=0.01),
             {"name": "adam", "learning_rate": 0.01}),
    "adam_custom": (lambda: Adam(learning_rate=0.05, beta_1=0.5, beta_2=0.8, epsilon=1e-3),
                    {"name": "adam", "learning_rate": 0.05, "beta_1": 0.5, "beta_2": 0.8,
                     "epsilon": 1e-3}),
    "sgd": (lambda: SGD(learning_rate=0.1), {"name": "sgd", "learning_rate": 0.1}),
    "sgd_momentum": (lambda: SGD(learning_rate=0.1, momentum=0.9),
                     {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9}),
    "sgd_nesterov": (lambda: SGD(learning_rate=0.1, momentum=0.8, nesterov=True),
                     {"name": "sgd", "learning_rate": 0.1, "momentum": 0.8, "nesterov": True}),
    "rmsprop": (lambda: RMSprop(learning_rate=0.01), {"name": "rmsprop", "learning_rate": 0.01}),
    "rmsprop_momentum": (lambda: RMSprop(learning_rate=0.01, rho=0.8, momentum=0.5),
                         {"name": "rmsprop", "learning_rate": 0.01, "rho": 0.8,
                          "momentum": 0.5}),
}


def build_case(case, rng, n=N, features=4):
    spec, loss, from_logits, soft = TRAIN_CASES[case]
    model = Sequential([Dense(u, activation=a, use_bias=b) for u, a, b in spec], dtype="float64")
    model.build((None, features))
    weights = random_weights(model, rng)
    model.set_weights(weights)
    x = rng.standard_normal((n, features))
    y = targets(loss, n, spec[-1][0], rng, soft)
    layers = reference_layers(weights, [a for _, a, _ in spec], [b for _, _, b in spec])
    return model, layers, x, y, loss, from_logits


def assert_weights(model, layers, what):
    got = model.get_weights()
    expected = ref.network_weights(layers)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g.dtype == np.float64 and g.shape == e.shape
        np.testing.assert_allclose(g, e, err_msg=f"{what}: weights[{i}]", **TOL)


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_fit_step_matches_reference(case, opt):
    rng = np.random.default_rng(seed_of(case, opt))
    model, layers, x, y, loss, from_logits = build_case(case, rng)
    make_opt, ref_opt = OPTIMIZERS[opt]
    model.compile(optimizer=make_opt(), loss=loss_object(loss, from_logits))

    hist = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    layers, state, value = ref.reference_train_step(layers, x, y, loss, from_logits, ref_opt)
    assert hist.history["loss"][0] == pytest.approx(value, rel=1e-12)
    assert_weights(model, layers, "after 1 step")

    # two more steps: the optimizer state (moments, velocity, Adam's t) carries over
    hist = model.fit(x, y, batch_size=len(x), epochs=2, shuffle=False, verbose=0)
    for step in range(2):
        layers, state, value = ref.reference_train_step(layers, x, y, loss, from_logits,
                                                        ref_opt, state)
        assert hist.history["loss"][step] == pytest.approx(value, rel=1e-10)
    assert_weights(model, layers, "after 3 steps")
    assert model.optimizer.iterations == state["iterations"] == 3


@pytest.mark.parametrize("case", ["softmax_sparse_ce", "relu_linear_mse", "sigmoid_bce"])
def test_minibatches_with_short_last_batch(case):
    """batch_size 5 on 12 rows: steps of 5, 5 and 2 rows, in order (shuffle=False)."""
    rng = np.random.default_rng(seed_of(case, "minibatch"))
    model, layers, x, y, loss, from_logits = build_case(case, rng)
    make_opt, ref_opt = OPTIMIZERS["adam"]
    model.compile(optimizer=make_opt(), loss=loss_object(loss, from_logits))
    hist = model.fit(x, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
    state = None
    for epoch in range(2):
        total = 0.0
        for r0 in range(0, N, 5):
            layers, state, value = ref.reference_train_step(
                layers, x[r0:r0 + 5], y[r0:r0 + 5], loss, from_logits, ref_opt, state)
            total += value * len(x[r0:r0 + 5])
        assert hist.history["loss"][epoch] == pytest.approx(total / N, rel=1e-10)
    assert_weights(model, layers, "after 2 epochs of 3 steps")
    assert model.optimizer.iterations == 6


def test_activation_leaky_relu_and_zero_dropout_layers_train_like_dense():
    """Dense + Activation(a) trains as Dense(activation=a); LeakyReLU(s) as leaky_relu with
    slope s; Dropout(0.0) passes through; a final Activation("softmax") is fused."""
    rng = np.random.default_rng(21)
    model = Sequential([Dense(6), LeakyReLU(negative_slope=0.2), Dropout(0.0), Dense(5),
                        Activation("tanh"), Dense(3), Activation("softmax")], dtype="float64")
    model.build((None, 4))
    weights = random_weights(model, rng)
    model.set_weights(weights)
    layers = reference_layers(weights, ["leaky_relu", "tanh", "softmax"], [True] * 3,
                              slopes=[0.2, 0.01, 0.01])
    x = rng.standard_normal((N, 4))
    y = targets(SPARSE, N, 3, rng)
    model.compile(optimizer=RMSprop(learning_rate=0.01, momentum=0.3), loss=SPARSE)
    ref_opt = {"name": "rmsprop", "learning_rate": 0.01, "momentum": 0.3}
    model.fit(x, y, batch_size=N, epochs=3, shuffle=False, verbose=0)
    state = None
    for _ in range(3):
        layers, state, _ = ref.reference_train_step(layers, x, y, SPARSE, False, ref_opt, state)
    assert_weights(model, layers, "after 3 steps")
    # predict / evaluate agree with the reference forward pass and loss
    out = ref.network_forward(layers, x)[-1][2]
    np.testing.assert_allclose(model.predict(x, batch_size=5), out, **TOL)
    value = ref.network_loss_and_grads(layers, x, y, SPARSE)[0]
    assert model.evaluate(x, y, batch_size=5) == pytest.approx(value, rel=1e-10)


# ---- predict / evaluate / metrics ------------------------------------------------------

METRIC_CASES = [("sigmoid_bce", ["accuracy", "mae", "mse"]),
                ("nobias_bce_from_logits", ["accuracy", "binary_accuracy"]),
                ("softmax_sparse_ce", ["accuracy", "sparse_categorical_accuracy"]),
                ("tanh_ce_from_logits", ["accuracy", "categorical_accuracy", "mse"]),
                ("relu_linear_mse", ["mae", "mse"])]


@pytest.mark.parametrize("case,metrics", METRIC_CASES)
def test_predict_and_evaluate_match_reference(case, metrics):
    rng = np.random.default_rng(seed_of(case, "evaluate"))
    model, layers, x, y, loss, from_logits = build_case(case, rng, n=23)
    model.compile(optimizer="sgd", loss=loss_object(loss, from_logits), metrics=metrics)
    out = ref.network_forward(layers, x)[-1][2]
    for batch in (None, 1, 5, 23, 100):
        np.testing.assert_allclose(model.predict(x, batch_size=batch), out, **TOL)
    value = ref.network_loss_and_grads(layers, x, y, loss, from_logits)[0]
    yf = flat_targets(loss, y)
    metric_fns = {"mae": lambda: ref.mean_absolute_error(out, yf),
                  "mse": lambda: ref.mean_squared_error_metric(out, yf),
                  "binary_accuracy": lambda: ref.binary_accuracy(out, yf, from_logits=from_logits),
                  "sparse_categorical_accuracy": lambda: ref.sparse_categorical_accuracy(out, yf),
                  "categorical_accuracy": lambda: ref.categorical_accuracy(out, yf)}
    metric_fns["accuracy"] = metric_fns[{"binary_crossentropy": "binary_accuracy",
                                         SPARSE: "sparse_categorical_accuracy",
                                         "categorical_crossentropy": "categorical_accuracy"}
                                        .get(loss, "mae")]
    expected = {name: metric_fns[name]() for name in metrics}
    for batch in (1, 5, 32):
        got = model.evaluate(x, y, batch_size=batch, return_dict=True)
        assert got["loss"] == pytest.approx(value, rel=1e-10)
        for name in metrics:
            assert got[name] == pytest.approx(expected[name], rel=1e-10, abs=1e-12), name


# ---- Network.loss_grad: reference gradients and gradcheck, every activation x loss -------

LOSS_MODES = [("binary_crossentropy", False), ("binary_crossentropy", True),
              ("mean_squared_error", False), (SPARSE, False), (SPARSE, True),
              ("categorical_crossentropy", False), ("categorical_crossentropy", True)]


def output_activation(act, loss, from_logits):
    """The activation under test on the output too, wherever the loss accepts its range:
    probabilities must lie in (0, 1) for binary cross-entropy and be positive for the
    categorical ones; otherwise a sigmoid / softmax head (fused) follows the hidden one."""
    if from_logits or loss == "mean_squared_error" or act in ("sigmoid", "softmax"):
        return act
    return "sigmoid" if loss == "binary_crossentropy" else "softmax"


def network_from_layers(layers, dtype=np.float64, dropout=None, l2=0.0):
    """A compiled Network (specs as documented in fastnn/_network.pxi) holding these dense
    layers' weights in one flat buffer, with its gradient buffer. dropout=(i, rate) puts
    a Dropout layer after dense layer i; l2: scikit-learn's L2 penalty on every kernel."""
    specs, chunks, offset = [], [], 0
    for i, (w, b, act, slope) in enumerate(layers):
        if dropout is not None and dropout[0] == i - 1:
            width = w.shape[0]
            specs.append({"kind": "dropout", "in_dim": width, "out_dim": width, "act": 0,
                          "slope": 0.0, "rate": dropout[1], "w": None, "b": None})
        spec = {"kind": "dense", "in_dim": w.shape[0], "out_dim": w.shape[1],
                "act": K.ACTIVATIONS[act], "slope": slope, "rate": 0.0, "w": offset, "b": None,
                "l2_per_batch": l2}
        chunks.append(w.ravel())
        offset += w.size
        if b is not None:
            spec["b"] = offset
            chunks.append(b)
            offset += b.size
        specs.append(spec)
    params = np.ascontiguousarray(np.concatenate(chunks), dtype=dtype)
    grads = np.zeros_like(params)
    return K.Network(specs, params, grads), params, grads


def unflatten(flat, layers):
    out, k = [], 0
    for w in ref.network_weights(layers):
        out.append(flat[k:k + w.size].reshape(w.shape))
        k += w.size
    return out


def gradcheck_problem(act, loss, from_logits, rng):
    hidden_act, out_act = act, output_activation(act, loss, from_logits)
    k = 2 if loss in ("binary_crossentropy", "mean_squared_error") else 3
    model = Sequential([Dense(4, activation=hidden_act), Dense(k, activation=out_act)],
                       dtype="float64")
    model.build((None, 3))
    weights = random_weights(model, rng)
    model.set_weights(weights)
    model.compile(optimizer="sgd", loss=loss_object(loss, from_logits))
    x = rng.standard_normal((6, 3))
    y = targets(loss, 6, k, rng, soft=loss != SPARSE)
    return model, reference_layers(weights, [hidden_act, out_act], [True, True]), x, y


@pytest.mark.parametrize("loss,from_logits", LOSS_MODES)
@pytest.mark.parametrize("act", ACTS)
def test_loss_grad_matches_reference(act, loss, from_logits):
    rng = np.random.default_rng(seed_of(act, loss, from_logits))
    _, layers, x, y = gradcheck_problem(act, loss, from_logits, rng)
    net, params, grads = network_from_layers(layers)
    fused = ref.is_fused(loss, from_logits, layers[-1][2])
    net.set_loss(K.LOSSES[loss], from_logits, fused)
    before = params.copy()
    value = net.loss_grad(x, flat_targets(loss, y))
    value_ref, grads_ref = ref.network_loss_and_grads(layers, x, y, loss, from_logits)
    assert value == pytest.approx(value_ref, rel=1e-12)
    for i, (g, e) in enumerate(zip(unflatten(grads, layers), grads_ref)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-13, err_msg=f"gradient {i}")
    np.testing.assert_array_equal(params, before)  # nothing updated


# Central differences with eps = 1e-5: the rounding error of a loss difference,
# ~1e-16 / eps, stays well below 1e-6 of the smallest gradients (~1e-5) of these random
# networks, and the truncation error eps^2 is ~1e-10. (eps = 1e-6, the default, gives
# errors up to ~5e-6 on the smallest gradients from rounding alone.) A wrong backward
# pass gives errors of order 1.
GC_EPS = 1e-5


@pytest.mark.parametrize("loss,from_logits", LOSS_MODES)
@pytest.mark.parametrize("act", ACTS)
def test_gradcheck_every_activation_and_loss(act, loss, from_logits):
    rng = np.random.default_rng(seed_of(act, loss, from_logits))
    model, _, x, y = gradcheck_problem(act, loss, from_logits, rng)
    before = model.get_weights()
    err = fastnn.gradcheck(model, x, y, eps=GC_EPS)
    assert err < 1e-6, f"{act} -> {loss} (from_logits={from_logits}): {err:.3g}"
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("act", ACTS)
def test_gradcheck_activation_layers_and_dropout(act):
    """Activation layers (each activation), a LeakyReLU with its own slope and a Dropout,
    which gradcheck runs in inference mode (off)."""
    rng = np.random.default_rng(seed_of(act, "layers"))
    model = Sequential([Dense(5), Activation(act), Dropout(0.5), Dense(4),
                        LeakyReLU(negative_slope=0.3), Dense(3), Activation("softmax")],
                       dtype="float64")
    model.build((None, 3))
    model.set_weights(random_weights(model, rng))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.standard_normal((7, 3))
    y = rng.integers(0, 3, size=7)
    assert fastnn.gradcheck(model, x, y, eps=GC_EPS) < 1e-6


def test_gradcheck_float32_model():
    """gradcheck runs on a float64 copy: a float32 model checks as well."""
    rng = np.random.default_rng(31)
    model = Sequential([Dense(5, activation="tanh"), Dense(2, activation="sigmoid")])
    model.build((None, 3))
    model.set_weights(random_weights(model, rng))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    x = rng.standard_normal((8, 3))
    y = rng.integers(0, 2, size=(8, 2))
    assert fastnn.gradcheck(model, x, y, eps=GC_EPS) < 1e-6


# ---- thread-count independence of whole training steps -------------------------------

def big_problem(rng, features=128, hidden=257, classes=3, n=300):
    """B x hidden above FASTNN_PARALLEL_MIN, and more than 32768 parameters, so every
    kernel of the step (dense, activations, loss, optimizer) forks threads."""
    layers = [(rng.standard_normal((features, hidden)) / np.sqrt(features),
               rng.standard_normal(hidden) * 0.1, "relu", 0.01),
              (rng.standard_normal((hidden, classes)) / np.sqrt(hidden),
               rng.standard_normal(classes) * 0.1, "softmax", 0.01)]
    x = rng.standard_normal((n, features))
    y = rng.integers(0, classes, size=(n, 1)).astype(np.float64)
    return layers, x, y


@pytest.mark.parametrize("opt", ["sgd_momentum", "adam", "rmsprop_momentum"])
def test_network_train_threads_bit_identical(opt):
    """Two training steps (dropout on) through Network.train with nthreads 1 and 2 (BLAS
    held at one thread by the fixture): bit-identical loss, parameters and state."""
    rng = np.random.default_rng(seed_of(opt, "threads"))
    layers, x, y = big_problem(rng)
    kind = {"sgd_momentum": (0, 0.1, 0, 0, 0, 0, 0.9), "adam": (1, 0.01, 0.9, 0.999, 1e-7, 0, 0),
            "rmsprop_momentum": (2, 0.01, 0, 0, 1e-7, 0.9, 0.5)}[opt]
    results = {}
    for nt in (1, 2):
        net, params, grads = network_from_layers(layers, dropout=(0, 0.25))
        assert params.size > 32768
        net.set_loss(K.LOSSES[SPARSE], False, True, [K.METRICS["sparse_categorical_accuracy"]])
        slot1, slot2 = np.zeros_like(params), np.zeros_like(params)
        code, lr, b1, b2, eps, rho, mom = kind
        net.set_optimizer(code, lr, b1, b2, eps, rho, mom, False, 0, slot1, slot2)
        order = np.arange(len(x), dtype=np.int64)
        loss_sum, metric_sums = net.train(x, y, order, 0, 1, len(x), 7, nt)
        loss_sum2, _ = net.train(x, y, order, 0, 1, len(x), 8, nt)
        results[nt] = (params.copy(), slot1.copy(), slot2.copy(), loss_sum, loss_sum2,
                       metric_sums)
    # the first step's loss and gradient do not involve the optimizer
    assert results[1][3] == results[2][3] and results[1][5] == results[2][5]
    for name, a, b in zip(("params", "slot1", "slot2"), results[1][:3], results[2][:3]):
        diff = np.flatnonzero(a != b)
        assert diff.size == 0, (f"{opt}: {name} after 2 steps differs between nthreads=1 and "
                                f"2 at {diff.size} of {a.size} elements, first {diff[:5].tolist()}")
    assert results[1][4] == results[2][4]


def test_network_loss_grad_threads_bit_identical():
    rng = np.random.default_rng(41)
    layers, x, y = big_problem(rng)
    out = {}
    for nt in (1, 2):
        net, params, grads = network_from_layers(layers)
        net.set_loss(K.LOSSES[SPARSE], False, True)
        out[nt] = (net.loss_grad(x, y, nt), grads.copy())
    assert out[1][0] == out[2][0]
    assert np.array_equal(out[1][1], out[2][1])
    # and it is the reference gradient
    value, grads_ref = ref.network_loss_and_grads(layers, x, y, SPARSE)
    assert out[1][0] == pytest.approx(value, rel=1e-12)
    for g, e in zip(unflatten(out[1][1], layers), grads_ref):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12 * np.max(np.abs(e)))


def test_fit_threads_bit_identical():
    """The public contract: the same seed and data give bit-identical weights whatever the
    thread count (here with shuffling and dropout on, over several steps)."""
    rng = np.random.default_rng(51)
    x = rng.standard_normal((600, 64))
    y = rng.integers(0, 2, size=(600, 1))
    init = None
    results = []
    for nt in (1, 2):
        model = Sequential([Dense(600, activation="relu"), Dropout(0.3),
                            Dense(1, activation="sigmoid")], dtype="float64")
        model.build((None, 64))
        if init is None:
            init = random_weights(model, rng)
        model.set_weights(init)
        model.compile(optimizer=Adam(learning_rate=0.01), loss="binary_crossentropy")
        with fastnn.num_threads(nt):
            model.fit(x, y, batch_size=200, epochs=2, seed=3, verbose=0)
        results.append(model.get_weights())
    for i, (a, b) in enumerate(zip(*results)):
        diff = np.flatnonzero(a != b)
        assert diff.size == 0, (
            f"weights[{i}] differ between fastnn.num_threads(1) and (2) at {diff.size} of "
            f"{a.size} elements (fit runs BLAS with fastnn's thread count, and OpenBLAS' "
            f"dgemm rounds differently on 1 and 2 threads)")


def assert_float32_fit_threads_bit_identical(layers, rows, seed, epochs=2, metrics=()):
    """Fits of Sequential(layers()) (float32, Adam, binary cross-entropy, batch 32) on 1 and
    2 threads give the same weights and history, bit for bit; returns the last model."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 400)).astype(np.float32)
    y = (rng.random((rows, 1)) < 0.5).astype(np.float32)
    results = []
    for nt in (1, 2):
        fastnn.set_random_seed(seed)
        model = Sequential(layers())
        model.compile(optimizer="adam", loss="binary_crossentropy", metrics=list(metrics))
        with fastnn.num_threads(nt):
            history = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
        results.append((model.get_weights(), history.history))
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_array_equal(a, b)
    assert results[0][1] == results[1][1]
    return model


def test_fit_softmax_first_layer_threads_bit_identical():
    """A first layer whose softmax normalizes over all its units is never split (a range
    of units would normalize over itself): 1 and 2 threads give the same bits."""
    model = assert_float32_fit_threads_bit_identical(
        lambda: [Dense(25, activation="softmax"), Dense(1, activation="sigmoid")], 256, 53)
    assert model._network.split_units(32) == 0


def test_split_units_on_one_thread_of_the_region(run_python):
    """When OpenMP gives the split's region one thread (OMP_THREAD_LIMIT=1; a nested
    region), that thread runs both ranges of units: the same bits as the one-thread loop."""
    code = textwrap.dedent("""
        import hashlib, numpy as np, fastnn
        from fastnn import Sequential
        from fastnn.layers import Dense
        rng = np.random.default_rng(54)
        x = rng.standard_normal((200, 400)).astype(np.float32)
        y = (rng.random((200, 1)) < 0.5).astype(np.float32)
        out = []
        for nt in (1, 2):
            fastnn.set_random_seed(11)
            model = Sequential([Dense(25, activation="tanh"), Dense(1, activation="sigmoid")])
            model.compile(optimizer="adam", loss="binary_crossentropy")
            with fastnn.num_threads(nt):
                model.fit(x, y, batch_size=32, epochs=2, verbose=0)
            out.append(hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest())
        print(model._network.split_units(32), out[0] == out[1])
    """)
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    env.pop("OMP_NUM_THREADS", None)
    done = run_python(code, env=env)
    assert done.returncode == 0, done.stderr
    split, same = done.stdout.split()
    assert same == "True"
    assert split == ("12" if SPLITS else "0")


def test_fit_course_network_threads_bit_identical():
    """The course's network (float32, batch 32), whose first layer's units two threads
    split where fastnn's kernel runs: the same bits on 1 and 2 threads."""
    model = assert_float32_fit_threads_bit_identical(
        lambda: [Dense(25, activation="sigmoid"), Dense(15, activation="sigmoid"),
                 Dense(1, activation="sigmoid")], 1000, 52, epochs=3, metrics=["accuracy"])
    assert model._network.split_units(32) == (12 if SPLITS else 0)


# ---- float32 networks, shuffling, bad labels at the C level ------------------------------

def test_float32_network_matches_reference():
    """The float32 branch of Network.loss_grad / predict / evaluate / train."""
    rng = np.random.default_rng(61)
    def f32(a):  # values a float32 network holds exactly
        return a.astype(np.float32).astype(np.float64)

    layers = [(f32(rng.standard_normal((9, 17)) / 3), f32(rng.standard_normal(17) * 0.1),
               "tanh", 0.01),
              (f32(rng.standard_normal((17, 4)) / 4), f32(rng.standard_normal(4) * 0.1),
               "softmax", 0.01)]
    x = rng.standard_normal((31, 9)).astype(np.float32)
    y = rng.integers(0, 4, size=(31, 1)).astype(np.float32)
    net, params, grads = network_from_layers(layers, np.float32)
    assert params.dtype == np.float32
    net.set_loss(K.LOSSES[SPARSE], False, True, [K.METRICS["sparse_categorical_accuracy"]])
    value = net.loss_grad(x, y)
    value_ref, grads_ref = ref.network_loss_and_grads(layers, x, y, SPARSE)
    assert value == pytest.approx(value_ref, rel=1e-5)
    for g, e in zip(unflatten(grads, layers), grads_ref):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.max(np.abs(e)))
    out = np.empty((31, 4), np.float32)
    assert net.predict(x, out, 8, 1)
    np.testing.assert_allclose(out, ref.network_forward(layers, x)[-1][2], rtol=1e-5, atol=1e-6)
    loss_sum, (hits,) = net.evaluate(x, y, 8, 1)
    assert loss_sum / 31 == pytest.approx(value_ref, rel=1e-5)
    assert hits == ref.sparse_categorical_accuracy(out, y) * 31
    slot1, slot2 = np.zeros_like(params), np.zeros_like(params)
    net.set_optimizer(0, 0.1, 0, 0, 0, 0, 0.9, False, 0, slot1, slot2)
    order = np.arange(31, dtype=np.int64)
    net.train(x, y, order, 0, 1, 31, 0, 1)
    expected, _, _ = ref.reference_train_step(layers, x, y, SPARSE, False,
                                              {"name": "sgd", "learning_rate": 0.1,
                                               "momentum": 0.9})
    for p, e in zip(unflatten(params, layers), ref.network_weights(expected)):
        np.testing.assert_allclose(p, e, rtol=1e-5, atol=1e-6)
    assert net.iterations == 1


def test_sparse_label_out_of_range_in_network_gives_nan():
    """The Python layer rejects bad class ids; the compiled Network itself must still give
    a NaN loss rather than read out of bounds."""
    rng = np.random.default_rng(71)
    layers = [(rng.standard_normal((3, 4)), rng.standard_normal(4), "softmax", 0.01)]
    x = rng.standard_normal((5, 3))
    for dtype in (np.float64, np.float32):
        for bad in (4.0, -1.0, 1e9, 0.5, np.nan):
            for fused, from_logits in ((True, False), (False, True)):
                net, params, grads = network_from_layers(layers, dtype)
                net.set_loss(K.LOSSES[SPARSE], from_logits, fused)
                y = np.array([[0], [1], [bad], [3], [2]], dtype=dtype)
                assert np.isnan(net.loss_grad(x.astype(dtype), y))
                assert np.all(np.isfinite(grads))
                assert np.isnan(net.evaluate(x.astype(dtype), y, 2, 1)[0])


# ---- per-sample weights (scikit-learn's weighted loss and L2 term) ------------------------

WEIGHTED_MODES = [("mean_squared_error", "linear", False), (SPARSE, "softmax", True),
                  ("binary_crossentropy", "sigmoid", True)]


def weighted_problem(loss, out_act, rng, n=N):
    """Two dense layers, their targets, and weights with zeros and a negative one."""
    k = 3
    layers = [(rng.standard_normal((5, 6)) * 0.5, rng.standard_normal(6) * 0.2, "tanh", 0.01),
              (rng.standard_normal((6, k)) * 0.5, rng.standard_normal(k) * 0.2, out_act, 0.01)]
    x = rng.standard_normal((n, 5))
    y = flat_targets(loss, targets(loss, n, k, rng))
    weights = rng.uniform(0.2, 3.0, size=n)
    weights[::4] = 0.0
    weights[1] = -0.4
    return layers, x, y, weights


@pytest.mark.parametrize("loss,out_act,fused", WEIGHTED_MODES)
def test_weighted_loss_grad_with_l2_matches_reference(loss, out_act, fused):
    """The loss and the L2 term divided by the batch's weight, sum(w), not its rows, as
    scikit-learn's _backprop does; its gradient against central differences too."""
    rng = np.random.default_rng(seed_of(loss, "weighted-l2"))
    layers, x, y, weights = weighted_problem(loss, out_act, rng)
    l2 = 0.3
    net, params, grads = network_from_layers(layers, l2=l2)
    net.set_loss(K.LOSSES[loss], False, fused)
    value = net.loss_grad(x, y, 1, weights=weights)
    value_ref, grads_ref = ref.network_loss_and_grads(layers, x, y, loss, weights=weights,
                                                      l2=l2)
    assert value == pytest.approx(value_ref, rel=1e-12)
    for i, (g, e) in enumerate(zip(unflatten(grads, layers), grads_ref)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-13, err_msg=f"gradient {i}")
    backprop = grads.copy()

    def loss_at(flat):
        params[:] = flat
        return net.loss_grad(x, y, 1, weights=weights)
    numeric = ref.numeric_gradient(loss_at, params.copy(), eps=GC_EPS)
    np.testing.assert_allclose(backprop, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weighted_train_gathers_weights_by_order(dtype):
    """SGD over a permuted order in batches of 5, 5 and 2 rows: each batch's weights are
    those of its rows, and loss_sum adds each batch's weighted mean times its rows."""
    rng = np.random.default_rng(seed_of("weighted-train", np.dtype(dtype).name))
    layers, x, y, weights = weighted_problem(SPARSE, "softmax", rng)
    if dtype == np.float32:  # values the float32 network holds exactly
        layers = [(w.astype(dtype).astype(float), b.astype(dtype).astype(float), a, s)
                  for w, b, a, s in layers]
        x, weights = x.astype(dtype).astype(float), weights.astype(dtype).astype(float)
    l2, lr = 0.2, 0.1
    net, params, grads = network_from_layers(layers, dtype, l2=l2)
    net.set_loss(K.LOSSES[SPARSE], False, True)
    net.set_optimizer(0, lr, 0, 0, 0, 0, 0.0, False, 0, np.zeros_like(params),
                      np.zeros_like(params))
    order = rng.permutation(N).astype(np.int64)
    loss_sum, _ = net.train(x.astype(dtype), y.astype(dtype), order, 0, 3, 5, 0, 1,
                            weights=weights.astype(dtype))
    expected_sum = 0.0
    for r0 in range(0, N, 5):
        rows = order[r0:r0 + 5]
        value, grads_ref = ref.network_loss_and_grads(layers, x[rows], y[rows], SPARSE,
                                                      weights=weights[rows], l2=l2)
        expected_sum += value * len(rows)
        stepped = [w - lr * g for w, g in zip(ref.network_weights(layers), grads_ref)]
        layers = ref.network_with_weights(layers, stepped)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert loss_sum == pytest.approx(expected_sum, rel=rtol)
    for p, e in zip(unflatten(params, layers), ref.network_weights(layers)):
        np.testing.assert_allclose(p, e, rtol=rtol * 100, atol=rtol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unit_weights_train_bit_identical_to_unweighted(dtype):
    """Weights of 1 take the weighted path (gather, sum, per-row scale, weighted metrics)
    and must give the unweighted training's bits: loss, metrics, parameters, moments."""
    rng = np.random.default_rng(seed_of("unit-weights-train"))
    layers, x, y, _ = weighted_problem("mean_squared_error", "linear", rng, n=300)
    x, y = x.astype(dtype), y.astype(dtype)
    order = rng.permutation(300).astype(np.int64)
    results = []
    for weights in (None, np.ones(300, dtype)):
        net, params, grads = network_from_layers(layers, dtype, l2=0.1)
        net.set_loss(K.LOSSES["mean_squared_error"], False, False,
                     [K.METRICS["mean_squared_error"], K.METRICS["mean_absolute_error"]], 1.5)
        slot1, slot2 = np.zeros_like(params), np.zeros_like(params)
        net.set_optimizer(1, 0.01, 0.9, 0.999, 1e-8, 0, 0, False, 0, slot1, slot2)
        sums = net.train(x, y, order, 0, 7, 45, 0, 2, weights=weights)
        results.append((sums, params.copy(), slot1.copy(), slot2.copy()))
    (plain_sums, *plain), (unit_sums, *unit) = results
    assert plain_sums == unit_sums
    assert all(np.array_equal(a, b) for a, b in zip(plain, unit))


def test_weighted_train_thread_count_independent():
    rng = np.random.default_rng(seed_of("weighted-threads-train"))
    layers, x, y = big_problem(rng)
    weights = rng.uniform(0, 2, size=len(x))
    out = {}
    for nt in (1, 2):
        net, params, grads = network_from_layers(layers, l2=0.01)
        net.set_loss(K.LOSSES[SPARSE], False, True, [K.METRICS["sparse_categorical_accuracy"]])
        net.set_optimizer(0, 0.1, 0, 0, 0, 0, 0.9, False, 0, np.zeros_like(params),
                          np.zeros_like(params))
        order = np.arange(len(x), dtype=np.int64)
        out[nt] = (net.train(x, y, order, 0, 2, 150, 0, nt, weights=weights), params.copy())
    assert out[1][0] == out[2][0] and np.array_equal(out[1][1], out[2][1])


def test_weights_checked_by_network_and_zero_weight_batch_takes_no_step():
    rng = np.random.default_rng(83)
    layers, x, y, _ = weighted_problem(SPARSE, "softmax", rng)
    net, params, grads = network_from_layers(layers)
    net.set_loss(K.LOSSES[SPARSE], False, True)
    net.set_optimizer(0, 0.1, 0, 0, 0, 0, 0.0, False, 0, np.zeros_like(params),
                      np.zeros_like(params))
    order = np.arange(N, dtype=np.int64)
    before = params.copy()
    for bad, error in ((np.ones(N - 1), ValueError), (np.ones((N, 1)), ValueError),
                       (np.ones(N, np.float32), TypeError), (np.ones(N)[::-1], TypeError)):
        with pytest.raises(error, match="weights"):
            net.train(x, y, order, 0, 1, N, 0, 1, weights=bad)
    for value in (np.nan, np.inf):
        bad = np.ones(N)
        bad[3] = value
        with pytest.raises(ValueError, match="weights.*finite"):
            net.train(x, y, order, 0, 1, N, 0, 1, weights=bad)
        with pytest.raises(ValueError, match="weights.*finite"):
            net.loss_grad(x, y, 1, weights=bad)
    np.testing.assert_array_equal(params, before)
    assert net.iterations == 0
    # batches of 4: the second weighs 0 in all, has no weighted mean, and is skipped
    weights = np.ones(N)
    weights[4:8] = 0.0
    loss_sum, _ = net.train(x, y, order, 0, 3, 4, 0, 1, weights=weights)
    assert np.isnan(loss_sum) and net.iterations == 2 and np.all(np.isfinite(params))


def test_shuffle_is_a_seeded_permutation():
    for n in (1, 2, 7, 1000):
        a = np.empty(n, dtype=np.int64)
        b = np.empty(n, dtype=np.int64)
        K.shuffle(a, 12345)
        K.shuffle(b, 12345)
        assert np.array_equal(np.sort(a), np.arange(n))
        assert np.array_equal(a, b)
    c = np.empty(1000, dtype=np.int64)
    K.shuffle(c, 12346)
    assert not np.array_equal(a, c)
    K.shuffle(np.empty(0, dtype=np.int64), 1)  # empty: no crash



def test_shuffle_numpy_draws_as_randomstate():
    """K.shuffle_numpy (network_shuffle_numpy) takes RandomState.shuffle's draws from the
    same generator: the same permutation, and the generator left in the same state."""
    for n in (0, 1, 2, 3, 17, 1437, 100003):
        for seed in (0, 5):
            a = np.arange(n, dtype=np.int64) * 3
            b = a.copy()
            ra, rb = np.random.RandomState(seed), np.random.RandomState(seed)
            for _ in range(2):
                ra.shuffle(a)
                K.shuffle_numpy(b, rb._bit_generator)
                assert np.array_equal(a, b)
            assert ra.randint(2**31, size=4).tolist() == rb.randint(2**31, size=4).tolist()


@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_fit_epochs_is_train_over_shuffled_epochs(shuffle, nthreads, parts):
    """Network.fit_epochs (network_fit_epochs) against the same epochs as Network.train
    calls over RandomState.shuffle's orders: the same losses and parameters bit for bit,
    and scikit-learn's count of epochs without improvement, returning where it passes
    n_iter_no_change; with batches cut into parts (all the epochs in one region:
    train_in_parts under a fit plan) and without."""
    rng = np.random.default_rng(seed_of("fit_epochs", shuffle, nthreads, parts))
    if parts == 1:
        layers, x, y = big_problem(rng, n=203)
        batch = 100
    else:  # digits-shaped: 64 -> 100 -> 10, batches of 200
        layers, x, y = big_problem(rng, features=64, hidden=100, classes=10, n=450)
        batch = 200
    nets = []
    for _ in range(2):
        net, params, _ = network_from_layers(layers, l2=0.01)
        net.set_loss(K.LOSSES[SPARSE], False, True, [K.METRICS["sparse_categorical_accuracy"]])
        net.set_optimizer(1, 0.01, 0.9, 0.999, 1e-8, 0, 0, False, 0, np.zeros_like(params),
                          np.zeros_like(params))
        nets.append((net, params))
    assert nets[0][0].parts(batch) == parts
    (ours, our_params), (theirs, their_params) = nets
    our_order = np.arange(len(x), dtype=np.int64)
    their_order = our_order.copy()
    our_rs, their_rs = np.random.RandomState(3), np.random.RandomState(3)
    tol, patience = 0.02, 1
    expected, best, count = [], np.inf, 0
    for _ in range(40):  # scikit-learn's loop, as fastnn.sklearn runs it epoch by epoch
        if shuffle:
            their_rs.shuffle(their_order)
        loss_sum, metrics = theirs.train(x, y, their_order, 0, 3, batch, 0, nthreads)
        loss = (loss_sum - 0.25 * metrics[0]) / len(x)
        expected.append(loss)
        count = count + 1 if loss > best - tol else 0
        best = min(best, loss)
        if count > patience:
            break
    assert 3 <= len(expected) < 40  # it stopped on the count
    losses, got_count, got_best = ours.fit_epochs(
        x, y, our_order, batch, our_rs._bit_generator if shuffle else None, 0.25, tol,
        patience, np.inf, 0, 40, nthreads)
    assert losses.tolist() == expected
    assert (got_count, got_best) == (count, best)
    assert np.array_equal(our_order, their_order) and np.array_equal(our_params, their_params)
    assert ours.iterations == theirs.iterations == 3 * len(expected)
    # max_epochs bounds a call; the count and best loss carry over between calls
    losses, got_count, got_best = ours.fit_epochs(x, y, our_order, batch, None, 0.0, 10.0,
                                                  10**6, got_best, got_count, 2, nthreads)
    assert len(losses) == 2 and got_count == count + 2  # tol 10: no epoch improves on it
    with pytest.raises(ValueError, match="order"):
        ours.fit_epochs(x, y, our_order + 1, batch, None, 0.0, tol, 1, np.inf, 0, 1, nthreads)


# ---- training steps cut into row parts (network.h: network_parts) ----------------------

PART_OPTIMIZERS = {"sgd_momentum": ((0, 0.1, 0, 0, 0, 0, 0.9), {"name": "sgd", "learning_rate": 0.1,
                                                           "momentum": 0.9}),
              "adam": ((1, 0.01, 0.9, 0.999, 1e-7, 0, 0), {"name": "adam", "learning_rate": 0.01}),
              "rmsprop_momentum": ((2, 0.01, 0, 0, 1e-7, 0.9, 0.5),
                                   {"name": "rmsprop", "learning_rate": 0.01, "rho": 0.9,
                                    "momentum": 0.5})}


def test_parts_policy():
    rng = np.random.default_rng(5)
    layers, x, y = big_problem(rng)
    net, params, _ = network_from_layers(layers)
    # 6 * 300 * 33667 multiply-adds against 33667 parameters: cut in 2
    assert net.parts(300) == 2 and net.parts(150) == 1 and net.parts(63) == 1
    small, _, _ = network_from_layers([(rng.standard_normal((4, 3)), None, "linear", 0.0)])
    assert small.parts(1000) == 1  # below 2 MFLOP a step
    # above 262144 parameters the products split by themselves (each part would cost
    # the threads a copy of every parameter and optimizer moment)
    wide = [(np.zeros((600, 440)), None, "relu", 0.0), (np.zeros((440, 4)), None, "linear", 0.0)]
    big, big_params, _ = network_from_layers(wide)
    assert big_params.size > 262144 and big.parts(4096) == 1
    narrow = [(np.zeros((500, 440)), None, "relu", 0.0), (np.zeros((440, 4)), None, "linear", 0.0)]
    assert network_from_layers(narrow)[0].parts(4096) == 2
    with pytest.raises(ValueError, match="batch"):
        net.parts(0)


@pytest.mark.parametrize("opt", sorted(PART_OPTIMIZERS))
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_parts_steps_match_reference(opt, weighted, l2):
    """Two full-batch steps, each cut into 2 parts (gradients summed, L2 once): the
    reference's whole-batch loss, metric and parameters, on 1 and 2 threads."""
    rng = np.random.default_rng(seed_of(opt, weighted, l2, "parts"))
    layers, x, y = big_problem(rng)
    weights = rng.uniform(0, 2, size=len(x)) if weighted else None
    code, spec = PART_OPTIMIZERS[opt]
    expected, state, cur = [], None, layers
    for _ in range(2):
        value, grads = ref.network_loss_and_grads(cur, x, y.ravel().astype(int), SPARSE,
                                                  weights=weights, l2=l2)
        new_weights, state = ref.optimizer_step(ref.network_weights(cur), grads, spec, state)
        cur = ref.network_with_weights(cur, new_weights)
        expected.append(value)
    pred = ref.network_forward(layers, x)[-1][2]
    hits = (np.argmax(pred, axis=1) == y.ravel()).astype(float)
    accuracy = np.sum(hits * weights) / np.sum(weights) * len(x) if weighted else hits.sum()
    for nt in (1, 2):
        net, params, grads = network_from_layers(layers, l2=l2)
        assert net.parts(len(x)) == 2
        net.set_loss(K.LOSSES[SPARSE], False, True, [K.METRICS["sparse_categorical_accuracy"]])
        net.set_optimizer(*code, False, 0, np.zeros_like(params), np.zeros_like(params))
        order = np.arange(len(x), dtype=np.int64)
        for step in range(2):
            loss_sum, metric_sums = net.train(x, y, order, 0, 1, len(x), 0, nt, weights=weights)
            assert loss_sum / len(x) == pytest.approx(expected[step], rel=1e-12)
            if step == 0:
                assert metric_sums[0] == pytest.approx(accuracy, rel=1e-12)
        assert net.iterations == 2
        for got, want in zip(unflatten(params, layers), ref.network_weights(cur)):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_parts_float32_match_reference():
    rng = np.random.default_rng(seed_of("parts-f32"))
    layers, x, y = big_problem(rng)
    value, grads = ref.network_loss_and_grads(layers, x, y.ravel().astype(int), SPARSE)
    net, params, _ = network_from_layers(layers, dtype=np.float32)
    net.set_loss(K.LOSSES[SPARSE], False, True)
    net.set_optimizer(0, 1.0, 0, 0, 0, 0, 0.0, False, 0, np.zeros_like(params),
                      np.zeros_like(params))
    before = params.astype(np.float64)
    loss_sum, _ = net.train(x.astype(np.float32), y.astype(np.float32),
                            np.arange(len(x), dtype=np.int64), 0, 1, len(x), 0, 2)
    assert loss_sum / len(x) == pytest.approx(value, rel=1e-5)
    got = before - params.astype(np.float64)  # SGD with learning rate 1: the gradient
    want = np.concatenate([g.ravel() for g in grads])
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-5 * np.max(np.abs(want)))


def test_parts_zero_weight_batch_takes_no_step():
    rng = np.random.default_rng(seed_of("parts-zero"))
    layers, x, y = big_problem(rng, n=600)
    weights = np.ones(len(x))
    weights[300:] = 0.0  # the second batch of 300 weighs nothing
    for nt in (1, 2):
        net, params, _ = network_from_layers(layers)
        net.set_loss(K.LOSSES[SPARSE], False, True)
        net.set_optimizer(1, 0.01, 0.9, 0.999, 1e-7, 0, 0, False, 0, np.zeros_like(params),
                          np.zeros_like(params))
        order = np.arange(len(x), dtype=np.int64)
        loss_sum, _ = net.train(x, y, order, 0, 2, 300, 0, nt, weights=weights)
        assert np.isnan(loss_sum) and net.iterations == 1 and np.all(np.isfinite(params))


def test_parts_steps_around_a_skipped_batch_match_one_thread():
    """Steps of 2 parts before and after a zero-weight batch (which takes no step, and so
    no barrier): on 2 threads the same bits as on 1, over many steps, and the 3 steps
    taken equal the reference's, so no thread reused a gradient buffer still being read."""
    rng = np.random.default_rng(seed_of("parts-skip"))
    layers, x, y = big_problem(rng, n=1200, features=64, hidden=129)
    weights = np.ones(len(x))
    weights[300:600] = 0.0
    results = {}
    for nt in (1, 2):
        net, params, _ = network_from_layers(layers)
        assert net.parts(300) == 2
        net.set_loss(K.LOSSES[SPARSE], False, True)
        net.set_optimizer(1, 0.01, 0.9, 0.999, 1e-7, 0, 0, False, 0, np.zeros_like(params),
                          np.zeros_like(params))
        order = np.arange(len(x), dtype=np.int64)
        for _ in range(20):
            net.train(x, y, order, 0, 4, 300, 0, nt, weights=weights)
        results[nt] = params.copy()
        assert net.iterations == 60
    np.testing.assert_array_equal(results[1], results[2])
    # the first call's three steps against the reference
    net, params, _ = network_from_layers(layers)
    net.set_loss(K.LOSSES[SPARSE], False, True)
    net.set_optimizer(1, 0.01, 0.9, 0.999, 1e-7, 0, 0, False, 0, np.zeros_like(params),
                      np.zeros_like(params))
    net.train(x, y, np.arange(len(x), dtype=np.int64), 0, 4, 300, 0, 2, weights=weights)
    state, cur = None, layers
    for batch in (slice(0, 300), slice(600, 900), slice(900, 1200)):
        _, grads = ref.network_loss_and_grads(cur, x[batch], y[batch].ravel().astype(int),
                                              SPARSE, weights=weights[batch])
        new_weights, state = ref.optimizer_step(ref.network_weights(cur), grads,
                                                PART_OPTIMIZERS["adam"][1], state)
        cur = ref.network_with_weights(cur, new_weights)
    for got, want in zip(unflatten(params, layers), ref.network_weights(cur)):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dropout", [None, (0, 0.3)])
def test_parts_match_one_part(dropout):
    """Cut in 2 parts, a batch gives the gradient of the same batch in one part (the
    network's max_parts set to 1), up to rounding, dropout masks included: each mask is
    drawn per element of the whole batch, whichever part computes it."""
    rng = np.random.default_rng(seed_of("parts-vs-one", dropout))
    layers, x, y = big_problem(rng)
    deltas, losses = {}, {}
    for max_parts in (1, 2):
        net, params, _ = network_from_layers(layers, dropout=dropout)
        net.max_parts = max_parts
        assert net.parts(300) == max_parts
        net.set_loss(K.LOSSES[SPARSE], False, True)
        net.set_optimizer(0, 1.0, 0, 0, 0, 0, 0.0, False, 0, np.zeros_like(params),
                          np.zeros_like(params))
        before = params.copy()
        losses[max_parts], _ = net.train(x, y, np.arange(300, dtype=np.int64), 0, 1, 300, 11, 2)
        deltas[max_parts] = before - params  # SGD with learning rate 1: the gradient
    assert losses[2] == pytest.approx(losses[1], rel=1e-13)
    np.testing.assert_allclose(deltas[2], deltas[1], rtol=1e-10,
                               atol=1e-13 * np.max(np.abs(deltas[1])))
    with pytest.raises(ValueError, match="max_parts"):
        net.max_parts = 0


def test_parts_with_negative_batch_weight_match_one_part():
    """Sample weights may be negative (scikit-learn allows them), and so may a batch's
    sum: each part's loss and gradient are still shares of the whole batch's weight."""
    rng = np.random.default_rng(seed_of("parts-negative-weights"))
    layers, x, y = big_problem(rng)
    weights = rng.uniform(-1.5, 1.0, size=len(x))
    assert weights.sum() < 0 and weights[:150].sum() != weights.sum()
    out = {}
    for max_parts in (1, 2):
        net, params, _ = network_from_layers(layers)
        net.max_parts = max_parts
        net.set_loss(K.LOSSES[SPARSE], False, True)
        net.set_optimizer(0, 0.01, 0, 0, 0, 0, 0.0, False, 0, np.zeros_like(params),
                          np.zeros_like(params))
        loss_sum, _ = net.train(x, y, np.arange(len(x), dtype=np.int64), 0, 1, len(x), 0, 2,
                                weights=weights)
        out[max_parts] = (loss_sum, params.copy())
    value, _ = ref.network_loss_and_grads(layers, x, y.ravel().astype(int), SPARSE,
                                          weights=weights)
    assert out[1][0] / len(x) == pytest.approx(value, rel=1e-12)
    assert out[2][0] == pytest.approx(out[1][0], rel=1e-12)
    np.testing.assert_allclose(out[2][1], out[1][1], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("loss,act,k", [("binary_crossentropy", "sigmoid", 3),
                                        (SPARSE, "softmax", 4),
                                        ("categorical_crossentropy", "softmax", 4)])
@pytest.mark.parametrize("batch", [N, 256])
def test_fused_training_metrics_use_the_output_activation(loss, act, k, batch):
    """A training forward pass leaves a fused sigmoid/softmax output to the loss; the
    step's metrics must still see the probabilities: a step's accuracy and MAE equal
    those of predict() before the step (both batches: one part, and two parts).
    (MAE against sparse class ids is not a probability metric; only accuracy there.)"""
    rng = np.random.default_rng(seed_of(loss, act, batch, "fused-metrics"))
    n = batch
    x = rng.standard_normal((n, 40))
    y = targets(loss, n, k, rng)
    model = Sequential([Dense(64, activation="relu"), Dense(k, activation=act)], dtype="float64")
    metrics = ["accuracy"] if loss == SPARSE else ["accuracy", "mae"]
    model.compile(optimizer=SGD(0.1), loss=loss_object(loss, False), metrics=metrics)
    model.build((None, 40))
    model.set_weights(random_weights(model, rng))
    if batch == 256:
        assert model._network.parts(batch) == 2
    prob = model.predict(x, batch_size=n, verbose=0)
    assert np.allclose(prob.sum(axis=1), 1) if act == "softmax" else True
    mae = None
    if loss == SPARSE:
        accuracy = np.mean(np.argmax(prob, axis=1) == y)
    elif act == "softmax":
        accuracy = np.mean(np.argmax(prob, axis=1) == np.argmax(y, axis=1))
        mae = np.mean(np.abs(prob - y))
    else:
        accuracy = np.mean((prob > 0.5) == (y > 0.5))
        mae = np.mean(np.abs(prob - y))
    history = model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
    assert history.history["accuracy"][0] == pytest.approx(accuracy, rel=1e-12)
    if mae is not None:
        assert history.history["mae"][0] == pytest.approx(mae, rel=1e-12)


def course_network(rng, act="sigmoid", dropout=False, l2=0.0, use_bias=True):
    """The course's 400-25-15-1 network (float32) with its first kernel stored transposed,
    as Dense stores it (units x inputs), built from specs; dropout puts a Dropout layer
    after the first layer, l2 scikit-learn's penalty on every kernel. Returns the network,
    its parameters and the layers in the reference's form."""
    w1 = rng.standard_normal((400, 25)) * 0.1
    b1 = rng.standard_normal(25) * 0.1 if use_bias else None
    w2, b2 = rng.standard_normal((25, 15)) * 0.3, rng.standard_normal(15) * 0.1
    w3, b3 = rng.standard_normal((15, 1)) * 0.3, rng.standard_normal(1) * 0.1
    specs = [{"kind": "dense", "in_dim": 400, "out_dim": 25, "act": K.ACTIVATIONS[act],
              "slope": 0.1, "rate": 0.0, "w": 0, "b": 10000 if use_bias else None,
              "w_trans": True, "l2_per_batch": l2}]
    if dropout:
        specs.append({"kind": "dropout", "in_dim": 25, "out_dim": 25, "act": 0, "slope": 0.0,
                      "rate": 0.25, "w": None, "b": None})
    offset = 10025 if use_bias else 10000
    specs.append({"kind": "dense", "in_dim": 25, "out_dim": 15, "act": K.ACTIVATIONS["sigmoid"],
                  "slope": 0.0, "rate": 0.0, "w": offset, "b": offset + 375, "l2_per_batch": l2})
    specs.append({"kind": "dense", "in_dim": 15, "out_dim": 1, "act": K.ACTIVATIONS["sigmoid"],
                  "slope": 0.0, "rate": 0.0, "w": offset + 390, "b": offset + 405,
                  "l2_per_batch": l2})
    chunks = [w1.T.ravel()] + ([b1] if use_bias else []) + [w2.ravel(), b2, w3.ravel(), b3]
    params = np.concatenate(chunks).astype(np.float32)
    net = K.Network(specs, params, np.zeros_like(params))
    layers = [(w1, b1, act, 0.1), (w2, b2, "sigmoid", 0.0), (w3, b3, "sigmoid", 0.0)]
    return net, params, layers


@pytest.mark.skipif(not SPLITS, reason="needs fastnn's kernel (AVX-512) and OpenMP")
def test_split_units_policy():
    """The first layer's units are split where it does most of a step's work and the batch
    is not cut into parts, at whole tiles of 4 units where both halves keep the
    dot-product kernel."""
    rng = np.random.default_rng(seed_of("split-policy"))
    net, _, _ = course_network(rng)
    assert [net.split_units(b) for b in (8, 16, 32, 128)] == [0, 12, 12, 12]
    s = net.split_units(32)
    assert s % 4 == 0
    assert K.dense_kernel_transposed(400, s, False)
    assert K.dense_kernel_transposed(400, 25 - s, False)
    net.max_parts = 1  # no splitting of steps across threads
    assert net.split_units(32) == 0
    net.max_parts = 2
    # float64 keeps its kernels plain
    layers = [(np.zeros((400, 25)), None, "sigmoid", 0.0), (np.zeros((25, 1)), None, "linear", 0.0)]
    assert network_from_layers(layers)[0].split_units(32) == 0
    # a first layer stored plainly
    plain, _, _ = network_from_layers(layers, dtype=np.float32)
    assert plain.split_units(32) == 0
    # a batch cut into parts instead
    assert net.parts(1000) == 2 and net.split_units(1000) == 0
    # the other layers do too much of the work
    specs = [{"kind": "dense", "in_dim": 400, "out_dim": 25, "act": 0, "slope": 0.0,
              "rate": 0.0, "w": 0, "b": None, "w_trans": True},
             {"kind": "dense", "in_dim": 25, "out_dim": 200, "act": 0, "slope": 0.0,
              "rate": 0.0, "w": 10000, "b": None},
             {"kind": "dense", "in_dim": 200, "out_dim": 1, "act": 0, "slope": 0.0,
              "rate": 0.0, "w": 15000, "b": None}]
    params = np.zeros(15200, np.float32)
    wide = K.Network(specs, params, np.zeros_like(params))
    assert wide.split_units(32) == 0

    def first_layer(inputs, units, act="sigmoid"):
        specs = [{"kind": "dense", "in_dim": inputs, "out_dim": units,
                  "act": K.ACTIVATIONS[act], "slope": 0.0, "rate": 0.0, "w": 0, "b": None,
                  "w_trans": True},
                 {"kind": "dense", "in_dim": units, "out_dim": 1, "act": 0, "slope": 0.0,
                  "rate": 0.0, "w": inputs * units, "b": None}]
        params = np.zeros(inputs * units + units, np.float32)
        return K.Network(specs, params, np.zeros_like(params))

    assert first_layer(400, 25).split_units(32) == 12
    # softmax normalizes over all the units, not a range of them
    assert first_layer(400, 25, "softmax").split_units(32) == 0
    # stored transposed, but 32 units fill the vectors: the whole layer's forward product
    # is not computed as dot products, while a range of 12 or 20 units would be
    assert not K.dense_kernel_transposed(400, 32, False)
    assert first_layer(400, 32).split_units(32) == 0
    # the whole layer's weight gradient would go to BLAS (over 1e9 FLOP, or over 1024
    # batch rows), where each range's would not, or might round otherwise
    huge = first_layer(20000, 25)
    assert huge.split_units(512) == 12 and huge.split_units(1024) == 0
    assert first_layer(400, 25).split_units(1025) == 0
    with pytest.raises(ValueError, match="batch"):
        net.split_units(0)


SPLIT_CASES = [dict(), dict(act="relu"), dict(act="tanh", dropout=True),
               dict(act="leaky_relu", use_bias=False), dict(l2=0.01, weighted=True),
               dict(opt="sgd_momentum", weighted=True), dict(opt="rmsprop_momentum", l2=0.02)]


@pytest.mark.skipif(not SPLITS, reason="needs fastnn's kernel (AVX-512) and OpenMP")
@pytest.mark.parametrize("case", SPLIT_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "plain")
def test_split_units_bit_identical_to_one_thread(case):
    """Training with the first layer's units split between 2 threads gives the bits of
    the same steps on 1 thread and of the same network with max_parts 1 (never split):
    parameters, optimizer state, loss, metrics and step count, over epochs of a shuffled
    order whose last batch is short, in step ranges of several calls, with dropout, L2,
    sample weights and a batch that weighs nothing (no step)."""
    case = dict(case)
    opt, weighted = case.pop("opt", "adam"), case.pop("weighted", False)
    n, batch = 1000, 32
    rng = np.random.default_rng(seed_of("split-bits", opt, weighted, sorted(case.items())))
    x = rng.standard_normal((n, 400)).astype(np.float32)
    y = (rng.random((n, 1)) < 0.5).astype(np.float32)
    weights = rng.uniform(0, 2, n).astype(np.float32) if weighted else None
    orders = [rng.permutation(n).astype(np.int64) for _ in range(3)]
    if weighted:
        weights[orders[1][64:96]] = 0  # epoch 2's third batch takes no step
    results = {}
    for nt, max_parts in ((1, 2), (2, 2), (2, 1)):
        net, params, _ = course_network(np.random.default_rng(7), **case)
        net.max_parts = max_parts
        assert net.split_units(batch) == (12 if max_parts == 2 else 0)
        net.set_loss(K.LOSSES["binary_crossentropy"], False, True,
                     [K.METRICS["binary_accuracy"], K.METRICS["mean_absolute_error"]])
        slots = (np.zeros_like(params), np.zeros_like(params))
        net.set_optimizer(*PART_OPTIMIZERS[opt][0], False, 0, *slots)
        history = []
        for epoch, order in enumerate(orders):
            for begin, end in ((0, 5), (5, 6), (6, 32)):  # 32 steps: the last of 8 rows
                history.append(net.train(x, y, order, begin, end, batch, 100 + epoch, nt,
                                         weights=weights))
        results[nt, max_parts] = (params.copy(), slots[0].copy(), slots[1].copy(),
                                  history, net.iterations)
    assert results[2, 2][4] == (95 if weighted else 96)
    for key in ((1, 2), (2, 1)):
        for got, want in zip(results[2, 2][:3], results[key][:3]):
            np.testing.assert_array_equal(got, want)
        assert repr(results[2, 2][3:]) == repr(results[key][3:])
    assert np.isnan(results[2, 2][3][3][0]) == weighted  # epoch 2, first call: the NaN


@pytest.mark.skipif(not SPLITS, reason="needs fastnn's kernel (AVX-512) and OpenMP")
def test_split_units_steps_match_reference():
    """Three split steps (weighted, with L2) against the reference's float64 steps."""
    rng = np.random.default_rng(seed_of("split-reference"))
    net, params, layers = course_network(rng, act="relu", l2=0.01)
    x = rng.standard_normal((96, 400))
    y = (rng.random((96, 1)) < 0.5).astype(float)
    weights = rng.uniform(0.5, 2, 96)
    net.set_loss(K.LOSSES["binary_crossentropy"], False, True)
    net.set_optimizer(1, 0.01, 0.9, 0.999, 1e-7, 0, 0, False, 0, np.zeros_like(params),
                      np.zeros_like(params))
    assert net.split_units(32) == 12
    loss_sum, _ = net.train(x.astype(np.float32), y.astype(np.float32),
                            np.arange(96, dtype=np.int64), 0, 3, 32, 0, 2,
                            weights=weights.astype(np.float32))
    state, cur, total = None, layers, 0.0
    for batch in (slice(0, 32), slice(32, 64), slice(64, 96)):
        value, grads = ref.network_loss_and_grads(cur, x[batch], y[batch],
                                                  "binary_crossentropy",
                                                  weights=weights[batch], l2=0.01)
        total += value * 32
        new_weights, state = ref.optimizer_step(ref.network_weights(cur), grads,
                                                PART_OPTIMIZERS["adam"][1], state)
        cur = ref.network_with_weights(cur, new_weights)
    assert loss_sum == pytest.approx(total, rel=1e-5)
    want = ref.network_weights(cur)
    want[0] = want[0].T  # stored transposed
    np.testing.assert_allclose(params, np.concatenate([w.ravel() for w in want]),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype,w_trans,units", [(np.float32, False, 64), (np.float64, False, 64),
                                                 (np.float32, True, 25), (np.float32, False, 4)])
def test_first_layer_adam_in_its_gradient_product(dtype, w_trans, units):
    """One-part training under Adam updates the first layer's kernel inside its weight
    gradient's product (gemm_adam; with 4 units the product goes to BLAS and the update
    runs after it): each step gives the bits of loss_grad (the same forward, loss and
    backward) followed by adam_update on the whole buffer."""
    rng = np.random.default_rng(seed_of("adam-in-product", dtype, w_trans, units))
    C, B = 300, 48
    x = rng.standard_normal((3 * B, C)).astype(dtype)
    y = rng.integers(0, 10, (3 * B, 1)).astype(dtype)
    w1 = rng.standard_normal((units, C) if w_trans else (C, units)) * 0.1
    specs = [{"kind": "dense", "in_dim": C, "out_dim": units, "act": K.ACTIVATIONS["relu"],
              "slope": 0.0, "rate": 0.0, "w": 0, "b": w1.size, "w_trans": w_trans},
             {"kind": "dense", "in_dim": units, "out_dim": 10, "act": 0, "slope": 0.0,
              "rate": 0.0, "w": w1.size + units, "b": w1.size + units + units * 10}]
    params = np.concatenate([w1.ravel(), rng.standard_normal(units) * 0.1,
                             rng.standard_normal(units * 10) * 0.3,
                             rng.standard_normal(10) * 0.1]).astype(dtype)
    trained, separate = params.copy(), params.copy()
    net = K.Network(specs, trained, np.zeros_like(trained))
    net.max_parts = 1  # the one-part loop (a transposed kernel would be split otherwise)
    net.set_loss(K.LOSSES[SPARSE], True, False)
    slots = (np.zeros_like(params), np.zeros_like(params))
    net.set_optimizer(1, 0.01, 0.9, 0.999, 1e-7, 0, 0, False, 0, *slots)
    grads = np.zeros_like(params)
    ref_net = K.Network(specs, separate, grads)
    ref_net.set_loss(K.LOSSES[SPARSE], True, False)
    m, v = np.zeros_like(params), np.zeros_like(params)
    order = np.arange(3 * B, dtype=np.int64)
    for step in range(3):
        net.train(x, y, order, step, step + 1, B, 0, 2)
        rows = slice(step * B, (step + 1) * B)
        ref_net.loss_grad(x[rows], y[rows], nthreads=2)
        K.adam_update(separate, grads, m, v, step + 1, 0.01, 0.9, 0.999, 1e-7, nthreads=2)
        np.testing.assert_array_equal(trained, separate)
        np.testing.assert_array_equal(slots[0], m)
        np.testing.assert_array_equal(slots[1], v)
