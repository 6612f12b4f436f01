"""The Sequential model's public contract (../shared/API.md): construction, build,
compile, fit/predict/evaluate, weights, summary, optimizers' defaults, float64, threads,
seeding and reproducibility, callbacks, verbose output and numerically stable losses.

Conv1D/MaxPooling1D/Flatten, save/load/pickle and fastnn.sklearn are tested elsewhere.
"""
import inspect
import io
import math
import os
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn import Sequential, get_num_threads, num_threads, set_num_threads, set_random_seed
from fastnn._progress import Progress
from fastnn.callbacks import Callback, EarlyStopping, History
from fastnn.layers import Activation, Dense, Dropout, Input
from fastnn.losses import (BinaryCrossentropy, CategoricalCrossentropy, MeanSquaredError,
                           SparseCategoricalCrossentropy)
from fastnn.optimizers import SGD, Adam, RMSprop


# ----------------------------------------------------------------------------- helpers

@pytest.fixture(autouse=True)
def _restore_globals():
    """Every test leaves floatx and the thread setting as it found them."""
    floatx = fastnn.floatx()
    yield
    fastnn.set_floatx(floatx)
    set_num_threads(None)


def np_act(z, name):
    if name == "linear":
        return z
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "softmax":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise AssertionError(name)


def np_forward(weights, acts, x):
    """A stack of Dense layers in NumPy float64, from Keras-ordered weights."""
    a = np.asarray(x, dtype=np.float64)
    for (w, b), act in zip(zip(weights[::2], weights[1::2]), acts):
        a = np_act(a @ w.astype(np.float64) + b.astype(np.float64), act)
    return a


def bce_from_logits(z, y):
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return np.mean(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))), axis=-1))


def sparse_ce_from_logits(z, y):
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return np.mean(lse - z[np.arange(len(y)), np.asarray(y, dtype=int)])


def binary_data(n=64, features=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)
    return x, y


def small_binary_model(features=4, **kw):
    model = Sequential([Dense(8, activation="relu"), Dense(1, activation="sigmoid")], **kw)
    model.build((features,))
    return model


# ----------------------------------------------------------------------------- construction

def test_sequential_constructor_signature_and_add():
    sig = inspect.signature(Sequential)
    assert list(sig.parameters)[:3] == ["layers", "name", "dtype"]
    assert all(sig.parameters[p].default is None for p in ("layers", "name", "dtype"))
    a, b = Dense(3), Dense(1)
    model = Sequential(name="my_model")
    assert model.name == "my_model"
    assert model.layers == []
    model.add(a)
    model.add(b)
    assert model.layers == [a, b]
    other = Sequential([Dense(3), Dense(1)])
    assert len(other.layers) == 2
    assert isinstance(other.name, str) and other.name


def test_input_declares_shape_and_is_not_a_layer():
    model = Sequential([Input(shape=(5,)), Dense(3), Dense(2)])
    assert len(model.layers) == 2
    assert model.input_shape == (None, 5)
    assert model.output_shape == (None, 2)


@pytest.mark.parametrize("shape", [(400,), (None, 400), [400], (32, 400)])
def test_build_with_or_without_batch_axis(shape):
    set_random_seed(0)
    model = Sequential([Dense(25, activation="sigmoid"), Dense(15, activation="sigmoid"),
                        Dense(1, activation="sigmoid")])
    assert not model.built
    model.build(shape)
    assert model.built
    assert model.input_shape == (None, 400)
    assert model.output_shape == (None, 1)
    assert [w.shape for w in model.get_weights()] == [(400, 25), (25,), (25, 15), (15,), (15, 1), (1,)]
    assert model.count_params() == 400 * 25 + 25 + 25 * 15 + 15 + 15 + 1


def test_build_400_and_none_400_give_identical_models():
    set_random_seed(3)
    m1 = Sequential([Dense(4), Dense(2)])
    m1.build((400,))
    set_random_seed(3)
    m2 = Sequential([Dense(4), Dense(2)])
    m2.build((None, 400))
    for w1, w2 in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(w1, w2)


def test_builds_on_first_predict():
    model = Sequential([Dense(3, activation="relu"), Dense(2)])
    assert not model.built
    out = model.predict(np.ones((5, 7), dtype=np.float32))
    assert model.built
    assert out.shape == (5, 2)
    assert [w.shape for w in model.get_weights()] == [(7, 3), (3,), (3, 2), (2,)]


def test_builds_on_first_fit():
    x, y = binary_data(40, 6)
    model = Sequential([Dense(3, activation="relu"), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    assert not model.built
    model.fit(x, y, verbose=0)
    assert model.built
    assert model.input_shape == (None, 6)
    assert [w.shape for w in model.get_weights()] == [(6, 3), (3,), (3, 1), (1,)]


def test_model_with_input_is_built_at_construction_like_keras():
    """Keras builds a Sequential that starts with Input right away: the course calls
    model.summary() and model.get_weights() before any fit."""
    model = Sequential([Input(shape=(400,)), Dense(25, activation="sigmoid"),
                        Dense(15, activation="sigmoid"), Dense(1, activation="sigmoid")])
    assert [w.shape for w in model.get_weights()] == [(400, 25), (25,), (25, 15), (15,), (15, 1), (1,)]
    assert model.count_params() == 10431


def test_dense_input_shape_argument_declares_input():
    model = Sequential([Dense(3, input_shape=(4,)), Dense(1)])
    out = model.predict(np.zeros((2, 4), dtype=np.float32))
    assert out.shape == (2, 1)
    with pytest.raises(ValueError, match=r"\bx\b"):
        model.predict(np.zeros((2, 5), dtype=np.float32))


# ----------------------------------------------------------------------------- compile

@pytest.mark.parametrize("spec, cls", [
    ("sgd", SGD), ("adam", Adam), ("rmsprop", RMSprop), ("Adam", Adam),
    (SGD, SGD), (Adam, Adam), (RMSprop, RMSprop),
])
def test_compile_optimizer_string_or_class(spec, cls):
    model = small_binary_model()
    model.compile(optimizer=spec, loss="binary_crossentropy")
    assert type(model.optimizer) is cls
    default = cls()
    assert model.optimizer.learning_rate == default.learning_rate


def test_compile_optimizer_instance_is_used_as_is():
    opt = Adam(learning_rate=0.123)
    model = small_binary_model()
    model.compile(optimizer=opt, loss="binary_crossentropy")
    assert model.optimizer is opt
    x, y = binary_data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert opt.iterations == 4


def test_compile_default_optimizer_is_rmsprop():
    assert inspect.signature(Sequential.compile).parameters["optimizer"].default == "rmsprop"
    model = small_binary_model()
    model.compile(loss="mse")
    assert type(model.optimizer) is RMSprop


@pytest.mark.parametrize("spec, cls", [
    ("binary_crossentropy", BinaryCrossentropy), ("mse", MeanSquaredError),
    ("mean_squared_error", MeanSquaredError),
    ("sparse_categorical_crossentropy", SparseCategoricalCrossentropy),
    ("categorical_crossentropy", CategoricalCrossentropy),
    (BinaryCrossentropy, BinaryCrossentropy), (MeanSquaredError, MeanSquaredError),
    (SparseCategoricalCrossentropy, SparseCategoricalCrossentropy),
    (CategoricalCrossentropy, CategoricalCrossentropy),
])
def test_compile_loss_string_or_class(spec, cls):
    model = small_binary_model()
    model.compile(optimizer="sgd", loss=spec)
    assert type(model.loss) is cls
    if cls is not MeanSquaredError:
        assert model.loss.from_logits is False


def test_compile_loss_instance_is_used_as_is():
    loss = BinaryCrossentropy(from_logits=True)
    model = small_binary_model()
    model.compile(optimizer="sgd", loss=loss)
    assert model.loss is loss


def _metric_case_binary():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 3)).astype(np.float32)
    y = (rng.random(50) < 0.5).astype(np.float32)
    model = Sequential([Dense(4, activation="tanh"), Dense(1, activation="sigmoid")])
    model.build((3,))
    return model, x, y


@pytest.mark.parametrize("name", ["accuracy", "binary_accuracy"])
def test_binary_accuracy_metric(name):
    set_random_seed(0)
    model, x, y = _metric_case_binary()
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=[name])
    loss, acc = model.evaluate(x, y)
    p = model.predict(x)[:, 0]
    assert acc == pytest.approx(np.mean((p > 0.5) == (y == 1)), abs=1e-6)
    assert loss == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rel=1e-4)


def test_accuracy_with_bce_is_per_label_for_multilabel():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((60, 5)).astype(np.float32)
    y = (rng.random((60, 3)) < 0.5).astype(np.float32)
    set_random_seed(1)
    model = Sequential([Dense(6, activation="relu"), Dense(3, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    hist = model.fit(x, y, epochs=2, verbose=0)
    assert set(hist.history) == {"loss", "accuracy"}
    loss, acc = model.evaluate(x, y)
    p = model.predict(x)
    expected = np.mean((p > 0.5) == (y == 1))  # mean over labels and samples
    assert acc == pytest.approx(expected, abs=1e-6)
    # not the categorical accuracy (argmax) that a shape-based choice would give
    assert expected != pytest.approx(np.mean(p.argmax(1) == y.argmax(1)))


def test_accuracy_with_sparse_ce_is_sparse_categorical():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((80, 4)).astype(np.float32)
    y = rng.integers(0, 3, 80)
    set_random_seed(2)
    model = Sequential([Dense(5, activation="relu"), Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", "sparse_categorical_accuracy"])
    loss, acc, acc2 = model.evaluate(x, y)
    p = model.predict(x)
    assert acc == pytest.approx(np.mean(p.argmax(1) == y), abs=1e-6)
    assert acc2 == acc
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(80), y])), rel=1e-4)


def test_accuracy_with_categorical_ce_is_categorical():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((80, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 80)
    y = np.eye(4, dtype=np.float32)[labels]
    set_random_seed(2)
    model = Sequential([Dense(5, activation="relu"), Dense(4, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy",
                  metrics=["accuracy", "categorical_accuracy"])
    loss, acc, acc2 = model.evaluate(x, y)
    p = model.predict(x)
    assert acc == pytest.approx(np.mean(p.argmax(1) == labels), abs=1e-6)
    assert acc2 == acc
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(80), labels])), rel=1e-4)


def test_mae_and_mse_metrics():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((70, 3)).astype(np.float32)
    y = rng.standard_normal((70, 2)).astype(np.float32)
    set_random_seed(4)
    model = Sequential([Dense(4, activation="tanh"), Dense(2)])
    model.compile(optimizer="sgd", loss="mse", metrics=["mae", "mse"])
    loss, mae, mse = model.evaluate(x, y)
    p = model.predict(x).astype(np.float64)
    assert mae == pytest.approx(np.mean(np.abs(p - y)), rel=1e-5)
    assert mse == pytest.approx(np.mean((p - y) ** 2), rel=1e-5)
    assert loss == pytest.approx(mse, rel=1e-6)


def test_binary_accuracy_thresholds_logits_at_zero_when_from_logits():
    # one linear unit z = x: logits in (0, 1) are class 1 (p > 0.5) but below 0.5
    x = np.linspace(-1, 1, 41).astype(np.float32)[:, None]
    x = x[x[:, 0] != 0]
    y = (x[:, 0] > 0).astype(np.float32)
    model = Sequential([Dense(1)])
    model.build((1,))
    model.set_weights([np.ones((1, 1)), np.zeros(1)])
    model.compile(optimizer="sgd", loss=BinaryCrossentropy(from_logits=True),
                  metrics=["accuracy", "binary_accuracy"])
    loss, acc, bacc = model.evaluate(x, y)
    assert acc == pytest.approx(1.0)
    assert bacc == pytest.approx(1.0)
    assert loss == pytest.approx(bce_from_logits(x, y[:, None]), rel=1e-5)


def test_metrics_accept_a_single_string_and_none():
    model = small_binary_model()
    x, y = binary_data()
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=None)
    assert isinstance(model.evaluate(x, y), float)
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics="accuracy")
    assert len(model.evaluate(x, y)) == 2


# ----------------------------------------------------------------------------- fit

def test_fit_signature_defaults_match_keras():
    params = inspect.signature(Sequential.fit).parameters
    expected = {"batch_size": 32, "epochs": 1, "verbose": "auto", "callbacks": None,
                "validation_split": 0.0, "validation_data": None, "shuffle": True,
                "initial_epoch": 0, "seed": None}
    for name, default in expected.items():
        assert params[name].default == default, name
    assert list(params)[1:3] == ["x", "y"]
    ev = inspect.signature(Sequential.evaluate).parameters
    assert ev["batch_size"].default == 32 and ev["verbose"].default == 0
    assert ev["return_dict"].default is False
    pr = inspect.signature(Sequential.predict).parameters
    assert pr["batch_size"].default is None and pr["verbose"].default == 0


def test_fit_defaults_one_epoch_of_batches_of_32():
    x, y = binary_data(100)
    model = small_binary_model()
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    hist = model.fit(x, y, verbose=0)
    assert isinstance(hist, History)
    assert len(hist.history["loss"]) == 1
    assert model.optimizer.iterations == 4  # ceil(100 / 32): the partial batch counts
    model.fit(x, y, batch_size=50, epochs=3, verbose=0)
    assert model.optimizer.iterations == 4 + 6
    assert model.history is not None


def test_fit_epochs_zero_trains_nothing():
    x, y = binary_data(40)
    model = small_binary_model()
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    before = model.get_weights()
    hist = model.fit(x, y, epochs=0, verbose=0)
    assert hist.history == {} or all(len(v) == 0 for v in hist.history.values())
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def _linear_sgd_reference(x, y, w, b, lr, batch):
    """Keras' SGD on a linear unit with MSE, in float64, unshuffled; returns the final
    weights and the epoch loss Keras reports (batch losses weighted by batch size)."""
    total = 0.0
    for r0 in range(0, len(x), batch):
        xb, yb = x[r0:r0 + batch], y[r0:r0 + batch]
        p = xb @ w + b
        err = p - yb
        total += np.mean(err ** 2) * len(xb)
        g = 2 * err / err.size
        w = w - lr * xb.T @ g
        b = b - lr * g.sum(axis=0)
    return w, b, total / len(x)


def test_last_partial_batch_is_trained_on_and_matches_keras_sgd():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, 3))
    y = rng.standard_normal((40, 1))
    w0 = rng.standard_normal((3, 1)) * 0.1
    b0 = np.array([0.05])
    model = Sequential([Dense(1)], dtype="float64")
    model.build((3,))
    model.set_weights([w0, b0])
    model.compile(optimizer=SGD(learning_rate=0.1), loss="mse")
    hist = model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    w, b, loss = _linear_sgd_reference(x, y, w0, b0, 0.1, 32)
    got_w, got_b = model.get_weights()
    np.testing.assert_allclose(got_w, w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_b, b, rtol=1e-10, atol=1e-12)
    assert hist.history["loss"][0] == pytest.approx(loss, rel=1e-10)
    assert model.optimizer.iterations == 2


def test_sample_only_in_last_partial_batch_changes_the_weights():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((33, 3)).astype(np.float32)
    y = rng.standard_normal((33, 1)).astype(np.float32)
    results = []
    for last_y in (0.0, 5.0):
        y2 = y.copy()
        y2[-1] = last_y
        model = Sequential([Dense(1)])
        model.build((3,))
        model.set_weights([np.ones((3, 1)), np.zeros(1)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, y2, batch_size=32, shuffle=False, verbose=0)
        results.append(model.get_weights())
    assert not np.array_equal(results[0][1], results[1][1])


def test_one_adam_step_matches_keras_formula():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((16, 3))
    y = rng.standard_normal((16, 1))
    w0 = rng.standard_normal((3, 1))
    b0 = np.zeros(1)
    model = Sequential([Dense(1)], dtype="float64")
    model.build((3,))
    model.set_weights([w0, b0])
    model.compile(optimizer=Adam(learning_rate=0.01), loss="mse")
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0)
    err = x @ w0 + b0 - y
    g = 2 * err / err.size
    gw, gb = x.T @ g, g.sum(0)
    lr_t = 0.01 * math.sqrt(1 - 0.999) / (1 - 0.9)
    for got, w, gr in zip(model.get_weights(), (w0, b0), (gw, gb)):
        m, v = 0.1 * gr, 0.001 * gr ** 2
        np.testing.assert_allclose(got, w - lr_t * m / (np.sqrt(v) + 1e-7), rtol=1e-9)


def test_one_rmsprop_step_matches_keras3_formula():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((16, 3))
    y = rng.standard_normal((16, 1))
    w0 = rng.standard_normal((3, 1))
    b0 = np.zeros(1)
    model = Sequential([Dense(1)], dtype="float64")
    model.build((3,))
    model.set_weights([w0, b0])
    model.compile(optimizer="rmsprop", loss="mse")
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0)
    err = x @ w0 + b0 - y
    g = 2 * err / err.size
    gw, gb = x.T @ g, g.sum(0)
    for got, w, gr in zip(model.get_weights(), (w0, b0), (gw, gb)):
        v = 0.1 * gr ** 2
        np.testing.assert_allclose(got, w - 0.001 * gr / np.sqrt(v + 1e-7), rtol=1e-9)


def test_history_keys_without_validation():
    x, y = binary_data(64)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy", "mae"])
    hist = model.fit(x, y, epochs=3, verbose=0)
    assert set(hist.history) == {"loss", "accuracy", "mae"}
    assert all(len(v) == 3 for v in hist.history.values())
    assert all(isinstance(v, float) for v in hist.history["loss"])
    assert list(hist.epoch) == [0, 1, 2]


def test_history_keys_with_validation_split_uses_last_fraction():
    x, y = binary_data(100)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    hist = model.fit(x, y, epochs=2, batch_size=10, validation_split=0.2, verbose=0)
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 for v in hist.history.values())
    assert model.optimizer.iterations == 2 * 8  # trained on the first 80 samples only
    val_loss, val_acc = model.evaluate(x[80:], y[80:])
    assert hist.history["val_loss"][-1] == pytest.approx(val_loss, rel=1e-5)
    assert hist.history["val_accuracy"][-1] == pytest.approx(val_acc, abs=1e-6)


def test_history_keys_with_validation_data():
    x, y = binary_data(64)
    xv, yv = binary_data(30, seed=1)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["binary_accuracy"])
    hist = model.fit(x, y, epochs=2, validation_data=(xv, yv), verbose=0)
    assert set(hist.history) == {"loss", "binary_accuracy", "val_loss", "val_binary_accuracy"}
    assert hist.history["val_loss"][-1] == pytest.approx(model.evaluate(xv, yv)[0], rel=1e-5)
    assert model.optimizer.iterations == 2 * 2


def test_history_loss_is_sample_weighted_mean_of_batch_losses_without_updates():
    # learning rate 0: the epoch's loss is exactly the dataset loss
    x, y = binary_data(70)
    model = small_binary_model()
    model.compile(optimizer=SGD(learning_rate=0.0), loss="binary_crossentropy",
                  metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=32, verbose=0)
    loss, acc = model.evaluate(x, y)
    assert hist.history["loss"][0] == pytest.approx(loss, rel=1e-5)
    assert hist.history["accuracy"][0] == pytest.approx(acc, abs=1e-6)


# ----------------------------------------------------------------------------- predict / evaluate

def test_predict_returns_float_ndarray_of_last_layer_output():
    set_random_seed(5)
    x = np.random.default_rng(10).standard_normal((37, 4)).astype(np.float32)
    model = Sequential([Dense(6, activation="relu"), Dense(3, activation="softmax")])
    out = model.predict(x)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.shape == (37, 3)
    np.testing.assert_allclose(out, np_forward(model.get_weights(), ["relu", "softmax"], x),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(model.predict(x, batch_size=5), out, rtol=1e-6, atol=1e-7)
    one = small_binary_model().predict(x)
    assert one.shape == (37, 1)


def test_evaluate_return_types():
    x, y = binary_data(50)
    model = small_binary_model()
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    loss = model.evaluate(x, y)
    assert isinstance(loss, float)
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy", "mse"])
    res = model.evaluate(x, y)
    assert isinstance(res, list) and len(res) == 3
    assert all(isinstance(v, float) for v in res)
    assert res[0] == pytest.approx(loss)
    d = model.evaluate(x, y, return_dict=True)
    assert isinstance(d, dict)
    assert list(d) == ["loss", "accuracy", "mse"]
    assert d["loss"] == pytest.approx(loss)
    assert d["accuracy"] == pytest.approx(res[1])


def test_evaluate_does_not_depend_on_batch_size():
    x, y = binary_data(77)
    model = small_binary_model()
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    a = model.evaluate(x, y, batch_size=32)
    b = model.evaluate(x, y, batch_size=7)
    c = model.evaluate(x, y, batch_size=1000)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(a, c, rtol=1e-5)


def test_y_as_vector_or_column_is_the_same():
    x, y = binary_data(40)
    model = small_binary_model()
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    assert model.evaluate(x, y) == model.evaluate(x, y[:, None])


# ----------------------------------------------------------------------------- weights

def test_get_set_weights_keras_order_and_shapes():
    model = Sequential([Dense(3, activation="tanh"), Dense(2, use_bias=False), Dense(1)])
    model.build((4,))
    ws = model.get_weights()
    assert [w.shape for w in ws] == [(4, 3), (3,), (3, 2), (2, 1), (1,)]
    assert all(w.dtype == np.float32 for w in ws)
    rng = np.random.default_rng(11)
    new = [rng.standard_normal(w.shape) for w in ws]
    model.set_weights(new)
    for got, want in zip(model.get_weights(), new):
        np.testing.assert_allclose(got, want.astype(np.float32))
    x = rng.standard_normal((6, 4)).astype(np.float32)
    a = np.tanh(x @ new[0] + new[1]) @ new[2] @ new[3] + new[4]
    np.testing.assert_allclose(model.predict(x), a, rtol=1e-5, atol=1e-5)


def test_get_weights_returns_copies():
    model = small_binary_model()
    ws = model.get_weights()
    ws[0][...] = 123.0
    assert not np.any(model.get_weights()[0] == 123.0)


def test_dense_bias_initialized_to_zero_and_kernel_glorot_uniform():
    set_random_seed(0)
    model = Sequential([Dense(200), Dense(300)])
    model.build((100,))
    k1, b1, k2, b2 = model.get_weights()
    assert np.all(b1 == 0) and np.all(b2 == 0)
    limit = math.sqrt(6 / (100 + 200))
    assert np.abs(k1).max() <= limit
    assert np.abs(k1).max() > 0.95 * limit
    assert np.std(k1) == pytest.approx(limit / math.sqrt(3), rel=0.05)


# ----------------------------------------------------------------------------- summary

def test_summary_lists_layers_and_parameter_counts(capsys):
    model = Sequential([Dense(25, activation="sigmoid", name="L1"),
                        Dense(15, activation="sigmoid", name="L2"),
                        Dense(1, activation="sigmoid", name="L3")], name="my_model")
    model.build((400,))
    model.summary()
    out = capsys.readouterr().out
    assert "my_model" in out
    for name in ("L1", "L2", "L3"):
        assert name in out
    assert "Dense" in out
    for count in ("10,025", "390", "16"):
        assert count in out
    assert "Total params: 10,431" in out
    assert "Trainable params: 10,431" in out
    assert "(None, 25)" in out and "(None, 15)" in out and "(None, 1)" in out


def test_summary_print_fn():
    lines = []
    model = small_binary_model()
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert f"Total params: {4 * 8 + 8 + 8 + 1}" in text


def test_summary_counts_dropout_and_activation_as_zero(capsys):
    model = Sequential([Dense(10, name="d"), Dropout(0.5, name="drop"),
                        Activation("relu", name="act"), Dense(2, name="out")])
    model.build((5,))
    model.summary()
    out = capsys.readouterr().out
    assert "drop" in out and "act" in out
    assert "Total params: 82" in out  # 5*10+10 + 10*2+2


_SUMMARY_SCRIPT = """
import numpy as np
{imports}
for optimizer in ["adam", "sgd", SGD(momentum=0.9), RMSprop(), RMSprop(momentum=0.5)]:
    m = Sequential([Input((40,)), Dense(250, name="a_rather_long_layer_name_here_x"),
                    Dense(1), Dense(2, name="averyveryveryveryveryveryveryveryverylongname")])
    m.compile(optimizer=optimizer, loss="mse")
    m.summary()
    m.fit(np.zeros((4, 40), "float32"), np.zeros((4, 2), "float32"), verbose=0)
    m.summary()
"""


def test_summary_is_keras_summary(run_python):
    """The same text as Keras 3's summary (run in a subprocess, torch backend, an
    80-column terminal) for each optimizer: column widths, a long name wrapped and cut
    with an ellipsis, the automatic names, and the optimizer's parameters in the total
    once it has state (after the first fit, not before)."""
    pytest.importorskip("keras")
    pytest.importorskip("torch")
    env = dict(os.environ, KERAS_BACKEND="torch", COLUMNS="80")

    def run(package):
        imports = (f"from {package} import Sequential\n"
                   f"from {package}.layers import Dense, Input\n"
                   f"from {package}.optimizers import SGD, RMSprop")
        done = run_python(_SUMMARY_SCRIPT.format(imports=imports), env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    ours = run("fastnn")
    assert ours == run("keras")
    models = ours.split("Model:")[1:]
    assert len(models) == 10
    assert all(("Optimizer params" in text) == (i % 2 == 1) for i, text in enumerate(models))


def _ascii_stdout(monkeypatch, encoding="ascii"):
    """sys.stdout as on a console or redirect that cannot encode box drawing."""
    out = io.TextIOWrapper(io.BytesIO(), encoding=encoding, write_through=True)
    monkeypatch.setattr(sys, "stdout", out)
    return out


@pytest.mark.parametrize("encoding", ["ascii", "cp1252"])
def test_summary_falls_back_to_ascii_when_stdout_cannot_encode_box_drawing(monkeypatch, encoding):
    out = _ascii_stdout(monkeypatch, encoding)
    model = small_binary_model()
    model.summary()
    text = out.buffer.getvalue().decode(encoding)
    lines = text.splitlines()
    assert "Total params: 49" in text and "Output Shape" in text
    assert lines[1].startswith("+") and lines[2].startswith("|") and lines[3].startswith("+=")
    assert len({len(line) for line in lines[1:-3]}) == 1  # the table stays aligned


def test_summary_of_names_stdout_cannot_encode(monkeypatch):
    out = _ascii_stdout(monkeypatch)
    model = Sequential([Dense(2, name="слой")])
    model.build((3,))
    model.summary()
    assert "| ???? (Dense)" in out.buffer.getvalue().decode("ascii")


def test_summary_print_fn_falls_back_to_ascii_with_stdout(monkeypatch):
    # As Keras: the box characters follow stdout's encoding, print_fn or not.
    _ascii_stdout(monkeypatch)
    lines = []
    small_binary_model().summary(print_fn=lines.append)
    "\n".join(lines).encode("ascii")


def test_summary_keeps_box_drawing_on_streams_without_an_encoding(monkeypatch):
    out = io.StringIO()  # encoding None, takes any str
    monkeypatch.setattr(sys, "stdout", out)
    small_binary_model().summary()
    assert "┏" in out.getvalue() and "━" in out.getvalue()


# ----------------------------------------------------------------------------- optimizers

def test_optimizer_defaults_match_keras():
    sgd = SGD()
    assert sgd.learning_rate == 0.01 and sgd.momentum == 0.0 and sgd.nesterov is False
    adam = Adam()
    assert (adam.learning_rate, adam.beta_1, adam.beta_2, adam.epsilon) == (0.001, 0.9, 0.999, 1e-7)
    rms = RMSprop()
    assert (rms.learning_rate, rms.rho, rms.momentum, rms.epsilon) == (0.001, 0.9, 0.0, 1e-7)
    assert sgd.iterations == adam.iterations == rms.iterations == 0


def test_optimizer_positional_order():
    assert list(inspect.signature(SGD).parameters)[:3] == ["learning_rate", "momentum", "nesterov"]
    assert list(inspect.signature(Adam).parameters)[:4] == ["learning_rate", "beta_1", "beta_2", "epsilon"]
    assert list(inspect.signature(RMSprop).parameters)[:4] == ["learning_rate", "rho", "momentum", "epsilon"]


# ----------------------------------------------------------------------------- float64

def _train_small(model, x, y):
    model.compile(optimizer=Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    hist = model.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=0)
    return hist


def test_float64_model_end_to_end():
    x, y = binary_data(64)
    set_random_seed(0)
    model = Sequential([Dense(8, activation="tanh"), Dense(1, activation="sigmoid")],
                       dtype="float64")
    assert model.dtype == "float64"
    x64 = x.astype(np.float64) + 1e-12  # values float32 cannot represent
    _train_small(model, x64, y)
    assert all(w.dtype == np.float64 for w in model.get_weights())
    out = model.predict(x64)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, np_forward(model.get_weights(), ["tanh", "sigmoid"], x64),
                               rtol=1e-12, atol=1e-14)
    loss = model.evaluate(x64, y)[0]
    p = out[:, 0]
    assert loss == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rel=1e-10)


def test_set_floatx_float64_makes_new_models_float64():
    assert fastnn.floatx() == "float32"
    fastnn.set_floatx("float64")
    try:
        assert fastnn.floatx() == "float64"
        model = Sequential([Dense(3), Dense(1, activation="sigmoid")])
        assert model.dtype == "float64"
        x, y = binary_data(32)
        _train_small(model, x, y)
        assert all(w.dtype == np.float64 for w in model.get_weights())
        assert model.predict(x).dtype == np.float64
    finally:
        fastnn.set_floatx("float32")
    assert Sequential([Dense(1)]).dtype == "float32"


def test_float32_and_float64_models_agree():
    x, y = binary_data(64)
    outs = []
    for dtype in ("float32", "float64"):
        set_random_seed(1)
        model = Sequential([Dense(8, activation="tanh"), Dense(1, activation="sigmoid")], dtype=dtype)
        model.compile(optimizer=SGD(0.1), loss="binary_crossentropy")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=3)
        outs.append(model.predict(x).astype(np.float64))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- threads

def test_num_threads_settings(monkeypatch):
    set_num_threads(3)
    assert get_num_threads() == 3
    with num_threads(1):
        assert get_num_threads() == 1
        with num_threads(2):
            assert get_num_threads() == 2
        assert get_num_threads() == 1
    assert get_num_threads() == 3
    set_num_threads(None)
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert get_num_threads() == 5
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert get_num_threads() == len(os.sched_getaffinity(0))
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises((ValueError, TypeError)):
            set_num_threads(bad)
    with pytest.raises((ValueError, TypeError)):
        with num_threads(0):
            pass


def test_num_threads_context_restores_on_error():
    set_num_threads(2)
    with pytest.raises(RuntimeError):
        with num_threads(1):
            raise RuntimeError("boom")
    assert get_num_threads() == 2


# ----------------------------------------------------------------------------- seeding

def test_set_random_seed_makes_initialization_reproducible():
    def init(seed):
        set_random_seed(seed)
        m = Sequential([Dense(16, activation="relu"), Dense(3)])
        m.build((10,))
        return m.get_weights()
    a, b, c = init(42), init(42), init(43)
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a[0], c[0])


def test_set_random_seed_makes_unseeded_fit_reproducible():
    x, y = binary_data(100)

    def run():
        set_random_seed(7)
        m = Sequential([Dense(8, activation="relu"), Dropout(0.3), Dense(1, activation="sigmoid")])
        m.compile(optimizer="adam", loss="binary_crossentropy")
        m.fit(x, y, epochs=3, batch_size=16, verbose=0)
        return m.get_weights()
    for wa, wb in zip(run(), run()):
        np.testing.assert_array_equal(wa, wb)


def _mnist_like(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return x, y


def _fit_big(x, y, dropout, seed, threads, shuffle=True):
    set_random_seed(11)
    layers = [Dense(256, activation="relu")]
    if dropout:
        layers.append(Dropout(0.2))
    layers += [Dense(128, activation="relu")]
    if dropout:
        layers.append(Dropout(0.2))
    layers.append(Dense(10))
    model = Sequential(layers)
    model.compile(optimizer="adam", loss=SparseCategoricalCrossentropy(from_logits=True))
    with num_threads(threads):
        hist = model.fit(x, y, batch_size=128, epochs=2, verbose=0, seed=seed, shuffle=shuffle)
    return model.get_weights(), hist.history["loss"]


@pytest.mark.parametrize("dropout", [False, True])
def test_fit_seed_bit_identical_run_after_run(dropout):
    x, y = _mnist_like()
    for threads in (1, 2):
        wa, la = _fit_big(x, y, dropout, seed=123, threads=threads)
        wb, lb = _fit_big(x, y, dropout, seed=123, threads=threads)
        for a, b in zip(wa, wb):
            np.testing.assert_array_equal(a, b)
        assert la == lb
    w3, _ = _fit_big(x, y, dropout, seed=124, threads=2)
    assert not np.array_equal(wa[0], w3[0])


@pytest.mark.parametrize("dropout", [False, True])
def test_fit_seed_bit_identical_across_thread_counts(dropout):
    """API: "the same seed and the same data give bit-identical weights, whatever the
    thread count" -- on a model big enough for the kernels and BLAS to use threads."""
    x, y = _mnist_like()
    w1, l1 = _fit_big(x, y, dropout, seed=123, threads=1)
    w2, l2 = _fit_big(x, y, dropout, seed=123, threads=2)
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    assert l1 == l2


def test_dropout_only_in_training():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = rng.standard_normal((64, 1)).astype(np.float32)
    set_random_seed(3)
    with_drop = Sequential([Dense(32, activation="relu"), Dropout(0.5), Dense(1)])
    with_drop.build((6,))
    plain = Sequential([Dense(32, activation="relu"), Dense(1)])
    plain.build((6,))
    plain.set_weights(with_drop.get_weights())
    np.testing.assert_array_equal(with_drop.predict(x), plain.predict(x))
    for m in (with_drop, plain):
        m.compile(optimizer=SGD(0.0), loss="mse")
    assert with_drop.evaluate(x, y) == pytest.approx(plain.evaluate(x, y), rel=1e-6)
    h_drop = with_drop.fit(x, y, verbose=0, seed=0).history["loss"][0]
    h_plain = plain.fit(x, y, verbose=0, seed=0).history["loss"][0]
    assert h_plain == pytest.approx(plain.evaluate(x, y), rel=1e-5)
    assert h_drop != pytest.approx(h_plain, rel=1e-3)


def test_fit_seed_fixes_shuffling_small_model():
    x, y = binary_data(100)
    results = []
    for seed in (5, 5, 6):
        set_random_seed(0)
        m = small_binary_model()
        m.compile(optimizer=SGD(0.1), loss="binary_crossentropy")
        m.fit(x, y, epochs=2, batch_size=10, verbose=0, seed=seed)
        results.append(m.get_weights())
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert not np.array_equal(results[0][0], results[2][0])


def test_shuffle_false_is_order_dependent_and_deterministic():
    x, y = binary_data(100)
    results = []
    for seed in (1, 2):
        set_random_seed(0)
        m = small_binary_model()
        m.compile(optimizer=SGD(0.1), loss="binary_crossentropy")
        m.fit(x, y, epochs=2, batch_size=10, verbose=0, seed=seed, shuffle=False)
        results.append(m.get_weights())
    np.testing.assert_array_equal(results[0][0], results[1][0])


# ----------------------------------------------------------------------------- callbacks

class WeightRecorder:
    """A plain object (no Callback base class) with on_epoch_end only."""

    def __init__(self):
        self.epochs, self.logs, self.weights = [], [], []

    def on_epoch_end(self, epoch, logs):
        self.epochs.append(epoch)
        self.logs.append(dict(logs))
        self.weights.append(self.model.get_weights())


def test_plain_object_callback():
    x, y = binary_data(64)
    xv, yv = binary_data(20, seed=2)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    rec = WeightRecorder()
    model.fit(x, y, epochs=3, validation_data=(xv, yv), callbacks=[rec], verbose=0)
    assert rec.epochs == [0, 1, 2]
    assert set(rec.logs[0]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for a, b in zip(rec.weights[-1], model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_minimal_object_with_only_on_epoch_end():
    seen = []

    class Minimal:
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, sorted(logs)))
    x, y = binary_data(32)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x, y, epochs=2, callbacks=[Minimal()], verbose=0)
    assert seen == [(0, ["loss"]), (1, ["loss"])]


def test_initial_epoch():
    x, y = binary_data(32)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    rec = WeightRecorder()
    hist = model.fit(x, y, epochs=5, initial_epoch=3, callbacks=[rec], verbose=0)
    assert rec.epochs == [3, 4]
    assert len(hist.history["loss"]) == 2


def test_callback_can_stop_training():
    class Stopper(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True
    x, y = binary_data(32)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    hist = model.fit(x, y, epochs=10, callbacks=[Stopper()], verbose=0)
    assert len(hist.history["loss"]) == 2


def _diverging_validation():
    """Training labels learnable; validation labels are their opposite, so val_loss rises
    as the model learns."""
    x, y = binary_data(128)
    return x, y, x[:64], 1 - y[:64]


def _fit_diverging(callbacks, epochs):
    """A fit on _diverging_validation's data with these callbacks: (model, history)."""
    x, y, xv, yv = _diverging_validation()
    set_random_seed(0)
    model = small_binary_model()
    model.compile(optimizer=Adam(0.05), loss="binary_crossentropy")
    hist = model.fit(x, y, epochs=epochs, batch_size=16, validation_data=(xv, yv),
                     callbacks=callbacks, verbose=0, seed=0)
    return model, hist


@pytest.mark.parametrize("restore", [False, True])
def test_early_stopping_patience_and_restore_best_weights(restore):
    rec = WeightRecorder()
    stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=restore)
    model, hist = _fit_diverging([rec, stopper], epochs=30)
    vals = hist.history["val_loss"]
    assert len(vals) < 30
    best = int(np.argmin(vals))
    assert len(vals) == best + 2 + 1  # stopped after `patience` epochs without improvement
    final = model.get_weights()
    expected = rec.weights[best] if restore else rec.weights[-1]
    for a, b in zip(final, expected):
        np.testing.assert_array_equal(a, b)
    if restore and best != len(vals) - 1:
        assert not np.array_equal(final[0], rec.weights[-1][0])


def test_early_stopping_defaults_match_keras():
    params = inspect.signature(EarlyStopping).parameters
    assert params["monitor"].default == "val_loss"
    assert params["patience"].default == 0
    assert params["min_delta"].default == 0
    assert params["mode"].default == "auto"
    assert params["restore_best_weights"].default is False


def test_early_stopping_on_a_scripted_metric():
    class FakeModel:
        stop_training = False

        def get_weights(self):
            return []

        def set_weights(self, w):
            pass
    # Keras: `wait` counts epochs since the best one; stop once wait >= patience
    stopper = EarlyStopping(monitor="loss", patience=2)
    stopper.set_model(FakeModel())
    stopper.on_train_begin({})
    values = [1.0, 0.5, 0.6, 0.4, 0.45, 0.5, 0.3]
    stopped = None
    for epoch, v in enumerate(values):
        stopper.on_epoch_end(epoch, {"loss": v})
        if stopper.model.stop_training:
            stopped = epoch
            break
    assert stopped == 5
    stopper = EarlyStopping(monitor="val_accuracy", patience=0)  # mode auto: max
    stopper.set_model(FakeModel())
    stopper.on_train_begin({})
    for epoch, v in enumerate([0.5, 0.6, 0.55]):
        stopper.on_epoch_end(epoch, {"val_accuracy": v})
    assert stopper.model.stop_training


def test_early_stopping_restores_best_weights_when_training_runs_to_the_end():
    # Keras 3 restores in on_train_end whenever it holds best weights, stopped or not
    rec = WeightRecorder()
    stopper = EarlyStopping(monitor="val_loss", patience=100, restore_best_weights=True)
    model, hist = _fit_diverging([rec, stopper], epochs=6)
    vals = hist.history["val_loss"]
    assert len(vals) == 6 and stopper.stopped_epoch == 0
    best = int(np.argmin(vals))
    assert best != 5
    for a, b in zip(model.get_weights(), rec.weights[best]):
        np.testing.assert_array_equal(a, b)


def test_callbacks_after_early_stopping_see_the_stop_epochs_weights():
    before, after = WeightRecorder(), WeightRecorder()
    stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    model, _ = _fit_diverging([before, stopper, after], epochs=30)
    assert stopper.stopped_epoch > 0 and after.epochs[-1] == stopper.stopped_epoch
    for a, b in zip(after.weights[-1], before.weights[-1]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(after.weights[-1][0], before.weights[stopper.best_epoch][0])
    for a, b in zip(model.get_weights(), before.weights[stopper.best_epoch]):
        np.testing.assert_array_equal(a, b)


class _MarkedModel:
    """Stands in for a model whose weights are the number of the epoch that made them."""
    stop_training = False

    def __init__(self):
        self.epoch, self.restored = None, None

    def get_weights(self):
        return [self.epoch]

    def set_weights(self, weights):
        self.restored = weights[0]


def _script_early_stopping(values, **kw):
    """(last epoch run, the epoch whose weights were restored or None) for a scripted run."""
    stopper = EarlyStopping(monitor="loss", restore_best_weights=True, **kw)
    model = _MarkedModel()
    stopper.set_model(model)
    stopper.on_train_begin({})
    for epoch, value in enumerate(values):
        model.epoch = epoch
        stopper.on_epoch_end(epoch, {"loss": value})
        if model.stop_training:
            break
    assert model.restored is None  # never inside on_epoch_end
    stopper.on_train_end({})
    return epoch, model.restored


def test_early_stopping_best_weights_with_baseline_and_start_from_epoch():
    # Each expectation is what keras.callbacks.EarlyStopping (3.15) does with these values.
    # A baseline never beaten: stop after `patience` epochs, restore the best of them.
    assert _script_early_stopping([0.5, 0.4, 0.45, 0.6], patience=2, baseline=0.1) == (2, 1)
    # Beating the baseline resets the wait as usual
    assert _script_early_stopping([0.5, 0.05, 0.06, 0.07, 0.08], patience=2,
                                  baseline=0.1) == (3, 1)
    # Epochs before start_from_epoch are neither best nor restored, even when lower...
    assert _script_early_stopping([0.1, 0.2, 0.9, 0.8, 0.85], patience=5,
                                  start_from_epoch=2) == (4, 3)
    # ...and a run that ends before it restores nothing.
    assert _script_early_stopping([0.1, 0.2], start_from_epoch=2) == (1, None)
    # The first monitored value is the best so far whatever it is, as Keras' best starts
    # at None: a NaN at epoch 0 is kept as best and nothing improves on it.
    assert _script_early_stopping([np.nan, 0.5, 0.4], patience=0) == (1, 0)
    assert _script_early_stopping([np.inf, 0.5, 0.6], patience=0) == (2, 1)


def test_early_stopping_verbose_messages(capsys):
    x, y, xv, yv = _diverging_validation()
    set_random_seed(0)
    model = small_binary_model()
    model.compile(optimizer=Adam(0.05), loss="binary_crossentropy")
    stopper = EarlyStopping(patience=2, restore_best_weights=True, verbose=1)
    model.fit(x, y, epochs=30, batch_size=16, validation_data=(xv, yv), callbacks=[stopper],
              verbose=0, seed=0)
    assert capsys.readouterr().out == (
        f"Epoch {stopper.stopped_epoch + 1}: early stopping\n"
        f"Restoring model weights from the end of the best epoch: {stopper.best_epoch + 1}.\n")
    stopper = EarlyStopping(patience=100, restore_best_weights=True, verbose=1)
    model.fit(x, y, epochs=3, batch_size=16, validation_data=(xv, yv), callbacks=[stopper],
              verbose=0, seed=0)
    assert capsys.readouterr().out == (
        f"Restoring model weights from the end of the best epoch: {stopper.best_epoch + 1}.\n")


def test_early_stopping_warns_when_the_monitor_is_missing():
    x, y = binary_data(32)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    with pytest.warns(UserWarning) as record:
        model.fit(x, y, epochs=2, callbacks=[EarlyStopping(start_from_epoch=5)], verbose=0)
    messages = [str(w.message) for w in record]
    assert messages == ["Early stopping conditioned on metric `val_loss` which is not "
                        "available. Available metrics are: loss,accuracy"] * 2
    # Attributed to the callback's caller, as Keras' stacklevel=2
    assert all(w.filename.endswith(os.path.join("fastnn", "callbacks.py")) for w in record)


class _TrainHooks(Callback):
    def __init__(self, stop_at=None, interrupt_at=None):
        self.stop_at, self.interrupt_at, self.calls = stop_at, interrupt_at, []

    def on_train_begin(self, logs=None):
        self.calls.append(("begin", logs))

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.interrupt_at:
            raise KeyboardInterrupt
        if epoch == self.stop_at:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.calls.append(("end", logs))


def test_every_callback_sees_train_begin_and_end_with_the_last_epochs_logs():
    x, y = binary_data(32)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    stopper, other = _TrainHooks(stop_at=1), _TrainHooks()
    hist = model.fit(x, y, epochs=5, callbacks=[stopper, other], verbose=0)
    last = {"loss": hist.history["loss"][-1]}
    assert stopper.calls == other.calls == [("begin", {}), ("end", last)]
    hooks = _TrainHooks()
    model.fit(x, y, epochs=0, callbacks=[hooks], verbose=0)
    assert hooks.calls == [("begin", {}), ("end", {})]


def test_keyboard_interrupt_skips_on_train_end_as_keras():
    x, y, xv, yv = _diverging_validation()
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    hooks = _TrainHooks(interrupt_at=2)
    stopper = EarlyStopping(patience=100, restore_best_weights=True)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=5, validation_data=(xv, yv), callbacks=[stopper, hooks],
                  verbose=0)
    assert hooks.calls == [("begin", {})]
    before = model.get_weights()
    model.fit(x, y, epochs=1, verbose=0)  # the model is free to train again
    assert not np.array_equal(before[0], model.get_weights()[0])


def test_validation_data_with_a_none_sample_weight_is_the_plain_pair():
    x, y = binary_data(64)
    xv, yv = binary_data(20, seed=2)
    hists = []
    for vd in [(xv, yv), (xv, yv, None), [xv, yv, None]]:
        set_random_seed(0)
        model = small_binary_model()
        model.compile(optimizer="adam", loss="binary_crossentropy")
        hists.append(model.fit(x, y, epochs=2, validation_data=vd, verbose=0, seed=0).history)
    assert hists[0] == hists[1] == hists[2]


# ----------------------------------------------------------------------------- verbose

def _fit_verbose(verbose, capsys, **kw):
    x, y = binary_data(64)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    capsys.readouterr()
    model.fit(x, y, epochs=2, batch_size=16, verbose=verbose, **kw)
    return capsys.readouterr().out


def test_verbose_0_prints_nothing(capsys):
    assert _fit_verbose(0, capsys) == ""


def test_verbose_auto_prints_nothing_when_not_a_terminal(capsys):
    assert _fit_verbose("auto", capsys) == ""


def test_verbose_1_progress_bar(capsys):
    out = _fit_verbose(1, capsys)
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert "4/4" in out
    assert "━" in out
    assert "loss:" in out and "accuracy:" in out


def test_verbose_2_one_line_per_epoch(capsys):
    out = _fit_verbose(2, capsys, validation_split=0.25)
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0] == "Epoch 1/2"
    assert lines[2] == "Epoch 2/2"
    assert len(lines) == 4
    for line in (lines[1], lines[3]):
        assert line.startswith("3/3")
        assert "loss:" in line and "accuracy:" in line and "val_loss:" in line
        assert "\r" not in line and "━" not in line


class _CountingStream(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, text):
        self.writes += 1
        return super().write(text)


@pytest.mark.parametrize("verbose", [1, 2])
def test_fast_epochs_lines_go_out_together_in_order(monkeypatch, verbose):
    """Lines of fast epochs are written a few times a second, not two writes an epoch
    (each ~20 us on a terminal: 9% of the course's network's fit); all of them, in order,
    and before what a callback prints."""
    out = _CountingStream()
    monkeypatch.setattr(sys, "stdout", out)
    x, y = binary_data(64)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x, y, epochs=40, batch_size=16, verbose=verbose)
    lines = [line for line in _screen(out.getvalue()) if line]
    assert [line for line in lines if line.startswith("Epoch")] == [
        f"Epoch {e}/40" for e in range(1, 41)]
    assert len(lines) == 80 and out.writes < 20

    class Says(Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(f"callback {epoch + 1}")

    out = _CountingStream()
    monkeypatch.setattr(sys, "stdout", out)
    model.fit(x, y, epochs=3, batch_size=16, verbose=verbose, callbacks=[Says()])
    lines = [line for line in _screen(out.getvalue()) if line]
    assert [line.split()[0] for line in lines] == ["Epoch", "4/4", "callback"] * 3


def test_slow_epochs_header_goes_out_when_the_epoch_starts(monkeypatch):
    """After an epoch of a refresh or more, the next epoch's header is written at once,
    not with its result line (verbose=2 writes nothing else in between)."""
    from fastnn import _progress
    monkeypatch.setattr(_progress.Progress, "REFRESH", 0.0)  # every epoch counts as slow
    chunks = []

    class Recording(io.StringIO):
        def write(self, text):
            chunks.append(text)
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", Recording())
    x, y = binary_data(64)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x, y, epochs=3, batch_size=16, verbose=2)
    for k in (2, 3):
        chunk = next(c for c in chunks if f"Epoch {k}/3" in c)
        assert chunk.endswith(f"Epoch {k}/3\n")


@pytest.mark.parametrize("encoding", ["ascii", "cp1252"])
def test_verbose_1_falls_back_to_ascii_when_stdout_cannot_encode_the_bar(monkeypatch, encoding):
    out = _ascii_stdout(monkeypatch, encoding)
    x, y = binary_data(64)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=16, verbose=1)
    text = out.buffer.getvalue().decode(encoding)
    assert "Epoch 2/2" in text and "4/4 ====================" in text and "loss:" in text


def test_verbose_1_keeps_box_drawing_on_streams_without_an_encoding():
    out = io.StringIO()
    progress = Progress(1, 0, 1, 4, stream=out)
    progress.end({"loss": 0.5})
    assert "━" * 20 in out.getvalue()


def _screen(text):
    """What a terminal shows for text with carriage returns: each one rewinds the line."""
    lines = []
    for line in text.split("\n"):
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part):]
        lines.append(shown)
    return lines


def test_verbose_1_redraw_pads_over_a_longer_previous_line():
    out = io.StringIO()
    progress = Progress(1, 0, 1, 4, stream=out)
    progress.REFRESH = 0.0
    progress.update(1, {"loss": 12.3456})
    progress.update(2, {"loss": 1.2345})
    assert _screen(out.getvalue())[-1].rstrip().endswith("loss: 1.2345")
    progress.end({"loss": 0.1234})
    assert _screen(out.getvalue())[-2].rstrip().endswith("loss: 0.1234")


def test_verbose_1_under_an_ascii_stdout_in_a_fresh_interpreter(run_python):
    code = textwrap.dedent("""
        import numpy as np
        from fastnn import Sequential
        from fastnn.layers import Dense
        x = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
        model = Sequential([Dense(4, activation="relu"), Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy")
        model.build((3,))
        model.summary()
        model.fit(x, (x[:, 0] > 0).astype(np.float32), epochs=1, verbose=1)
    """)
    done = run_python(code, env=dict(os.environ, PYTHONIOENCODING="ascii"), text=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert b"Total params" in done.stdout and b"2/2 ====" in done.stdout


def test_predict_and_evaluate_are_silent_by_default(capsys):
    x, y = binary_data(20)
    model = small_binary_model()
    model.compile(optimizer="adam", loss="binary_crossentropy")
    capsys.readouterr()
    model.predict(x)
    model.evaluate(x, y)
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- stable losses

HUGE = 1e4


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("split_activation", [False, True])
def test_sigmoid_output_bce_finite_for_huge_logits(dtype, split_activation):
    x = np.array([[1.0], [-1.0], [1.0], [-1.0], [0.5]], dtype=dtype)
    y = np.array([1, 1, 0, 0, 1], dtype=dtype)
    if split_activation:
        model = Sequential([Dense(1), Activation("sigmoid")], dtype=dtype)
    else:
        model = Sequential([Dense(1, activation="sigmoid")], dtype=dtype)
    model.build((1,))
    model.set_weights([np.full((1, 1), HUGE), np.zeros(1)])
    model.compile(optimizer=SGD(0.0), loss=BinaryCrossentropy(), metrics=["accuracy"])
    z = x * HUGE
    expected = bce_from_logits(z, y[:, None])
    loss, acc = model.evaluate(x, y)
    assert math.isfinite(loss)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert acc == pytest.approx(3 / 5)
    hist = model.fit(x, y, verbose=0)
    assert hist.history["loss"][0] == pytest.approx(expected, rel=1e-5)
    out = model.predict(x)[:, 0]
    np.testing.assert_allclose(out, [1, 0, 1, 0, 1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_output_sparse_ce_finite_for_huge_logits(dtype):
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]], dtype=dtype)
    y = np.array([1, 0, 2, 2])
    kernel = np.array([[HUGE, -HUGE, 0.5 * HUGE], [0.0, HUGE, -HUGE]])
    model = Sequential([Dense(3, activation="softmax")], dtype=dtype)
    model.build((2,))
    model.set_weights([kernel, np.zeros(3)])
    model.compile(optimizer=SGD(0.0), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    z = x.astype(np.float64) @ kernel
    expected = sparse_ce_from_logits(z, y)
    loss, acc = model.evaluate(x, y)
    assert math.isfinite(loss)
    assert loss == pytest.approx(expected, rel=1e-5)
    hist = model.fit(x, y, verbose=0)
    assert hist.history["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_softmax_output_categorical_ce_finite_for_huge_logits():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]], dtype=np.float32)
    y = np.array([1, 0, 2, 2])
    kernel = np.array([[HUGE, -HUGE, 0.5 * HUGE], [0.0, HUGE, -HUGE]])
    model = Sequential([Dense(3, activation="softmax")])
    model.build((2,))
    model.set_weights([kernel, np.zeros(3)])
    model.compile(optimizer=SGD(0.0), loss=CategoricalCrossentropy())
    loss = model.evaluate(x, np.eye(3)[y])
    assert loss == pytest.approx(sparse_ce_from_logits(x.astype(np.float64) @ kernel, y), rel=1e-5)


def test_training_through_huge_logits_keeps_weights_finite():
    x = np.array([[1.0], [-1.0], [1.0], [-1.0]], dtype=np.float32)
    y = np.array([1, 1, 0, 0], dtype=np.float32)
    model = Sequential([Dense(1, activation="sigmoid")])
    model.build((1,))
    model.set_weights([np.full((1, 1), HUGE), np.zeros(1)])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    hist = model.fit(x, y, epochs=3, verbose=0)
    assert all(math.isfinite(v) for v in hist.history["loss"])
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_from_logits_loss_matches_formula_for_huge_logits():
    x = np.array([[1.0], [-1.0], [1.0], [-1.0]], dtype=np.float32)
    y = np.array([1, 1, 0, 0], dtype=np.float32)
    model = Sequential([Dense(1)])
    model.build((1,))
    model.set_weights([np.full((1, 1), HUGE), np.zeros(1)])
    model.compile(optimizer="sgd", loss=BinaryCrossentropy(from_logits=True))
    assert model.evaluate(x, y) == pytest.approx(bce_from_logits(x * HUGE, y[:, None]), rel=1e-5)


# ---- kernels stored transposed ------------------------------------------------------------

def course_model(transposed=True, monkeypatch=None):
    """The course's 400-25-15-1 float32 network; transposed=False forces every kernel into
    the (in, units) layout for comparison."""
    if not transposed:
        monkeypatch.setattr(fastnn.layers, "dense_kernel_transposed", lambda *a: False)
    set_random_seed(4)
    model = Sequential([Dense(25, activation="sigmoid"), Dense(15, activation="sigmoid"),
                        Dense(1, activation="sigmoid")])
    model.compile(optimizer=Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    model.build((None, 400))
    return model


def test_transposed_kernel_is_an_ordinary_weight(monkeypatch):
    """A Dense layer that stores its kernel as (units, in) (400 inputs to 25 units, float32)
    shows it as Keras does, (in, units), through get_weights, set_weights, the layer's
    params and predict; training equals the same model laid out plainly, to rounding."""
    model = course_model()
    assert [layer.kernel_transposed for layer in model.layers] == [True, False, False]
    kernel = model.layers[0].params[0]
    assert kernel.shape == (400, 25) and not kernel.flags.c_contiguous
    assert np.shares_memory(kernel, model._params)
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(400, 25), (25,), (25, 15), (15,), (15, 1), (1,)]
    assert all(w.flags.c_contiguous for w in weights + model.layers[0].get_weights())
    rng = np.random.default_rng(8)
    new = [rng.standard_normal(w.shape) * 0.1 for w in weights]
    model.set_weights(new)
    for got, want in zip(model.get_weights(), new):
        np.testing.assert_array_equal(got, want.astype(np.float32))
    # the buffer holds the kernel transposed
    np.testing.assert_array_equal(model._params[:10000].reshape(25, 400),
                                  new[0].astype(np.float32).T)
    x = rng.standard_normal((64, 400)).astype(np.float32)
    y = (rng.random((64, 1)) < 0.5).astype(np.float32)
    a = x.astype(np.float64)
    for w, b in zip(new[::2], new[1::2]):
        a = 1 / (1 + np.exp(-(a @ w.astype(np.float32) + b.astype(np.float32))))
    np.testing.assert_allclose(model.predict(x, verbose=0), a, rtol=1e-5, atol=1e-6)

    plain = course_model(transposed=False, monkeypatch=monkeypatch)
    assert not any(layer.kernel_transposed for layer in plain.layers)
    plain.set_weights(new)
    h1 = model.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=2)
    h2 = plain.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=2)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-5)
    for got, want in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # optimizer state in get_weights order is the same state whichever the layout
    for s1, s2 in zip(model.optimizer.slots, plain.optimizer.slots):
        np.testing.assert_allclose(model._to_weights_order(s1), s2, rtol=1e-3, atol=1e-9)
        np.testing.assert_array_equal(model._from_weights_order(model._to_weights_order(s1)), s1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parameter_gradient_and_optimizer_buffers_start_on_cache_lines(tmp_path, dtype):
    """The kernels' 64-byte vector loads from the model's flat buffers do not straddle
    cache lines (fastnn/_buffers.py): the parameters, their gradients and the optimizer
    state start on 64-byte boundaries after build, fit, load and pickle, and state set
    from outside is realigned with its values kept."""
    import pickle

    def starts_on_lines(model):
        arrays = [model._params, model._grads, *model.optimizer.slots]
        return all(a.ctypes.data % 64 == 0 for a in arrays)

    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((64, 7)), rng.standard_normal((64, 1))
    model = Sequential([Input((7,)), Dense(9, activation="relu"), Dense(1)], dtype=dtype)
    model.compile(optimizer=Adam(), loss="mse")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert starts_on_lines(model)
    model.save(tmp_path / "m.fastnn")
    for copy in (fastnn.load_model(tmp_path / "m.fastnn"), pickle.loads(pickle.dumps(model))):
        copy.fit(x, y, epochs=1, batch_size=16, verbose=0)
        assert starts_on_lines(copy)
    raw = np.zeros(model._params.size + 1, dtype=dtype)[1:]  # 8 or 4 bytes past a line
    values = rng.standard_normal(model._params.size)
    moments = np.abs(values)
    raw[...] = values
    model.optimizer.slots = (raw, moments.astype(dtype))
    model.optimizer.configure(model._network, model._params.size, model._params.dtype)
    assert starts_on_lines(model)
    np.testing.assert_array_equal(model.optimizer.slots[0], values.astype(dtype))
    np.testing.assert_array_equal(model.optimizer.slots[1], moments.astype(dtype))


# ---- the thread count per call (config.ThreadPicker) --------------------------------------

def _run_picker(picker, seconds_per_unit, wait=lambda t, i: 0.04, units_total=10**6,
                calls=200):
    """Drives a ThreadPicker with per-unit times seconds_per_unit(threads, call index) and
    barrier-wait fractions wait(threads, call index); returns the (threads, units) of
    each call."""
    out, done = [], 0
    for i in range(calls):
        threads, units = picker.next_call(units_total - done)
        out.append((threads, units))
        picker.record(threads, seconds_per_unit(threads, i) * units, units,
                      wait(threads, i) if threads > 1 else 0.0)
        done += units
    return out


def test_thread_picker_stays_on_the_configured_count_while_its_threads_do_not_wait():
    from fastnn.config import ThreadPicker
    # quiet: two threads 0.4 ms an epoch, waiting 4% of the time; never a one-thread call
    calls = _run_picker(ThreadPicker(2), lambda t, i: 4e-4 if t == 2 else 6e-4)
    assert {t for t, _ in calls} == {2}
    assert calls[0] == (2, 1) and calls[1] == (2, 250)  # then calls of 0.1 s
    # one thread configured: nothing to pick, calls still sized to 0.1 s
    calls = _run_picker(ThreadPicker(1), lambda t, i: 6e-4, calls=5)
    assert calls == [(1, 1)] + [(1, 166)] * 4


def test_thread_picker_goes_to_one_thread_where_the_threads_wait():
    from fastnn.config import ThreadPicker
    # beside a busy loop: two threads 30 ms an epoch, waiting 60% of the time
    calls = _run_picker(ThreadPicker(2), lambda t, i: 3e-2 if t == 2 else 6e-4,
                        wait=lambda t, i: 0.6, calls=60)
    # probes of one epoch on each count, then calls of 0.02 s, then 0.1 s
    assert calls[:4] == [(2, 1), (1, 1), (2, 1), (1, 33)]
    assert calls[4] == (1, 166)
    twos = [i for i, (t, _) in enumerate(calls) if t == 2]
    # the configured count is probed again, one epoch, after 0.25 s, 0.5 s, 1 s, ... of
    # one-thread calls
    assert twos[0] == 0 and [calls[i][1] for i in twos] == [1] * len(twos)
    gaps = np.diff(twos[1:])
    assert len(twos) >= 3 and (gaps[1:] >= gaps[:-1]).all()
    # the busy loop ends: back to two threads at the next probe
    calls = _run_picker(ThreadPicker(2), lambda t, i: (3e-2 if i < 20 else 4e-4) if t == 2
                        else 6e-4, wait=lambda t, i: 0.6 if i < 20 else 0.04, calls=60)
    assert calls[-1][0] == 2


def test_thread_picker_keeps_two_threads_that_wait_but_still_win():
    from fastnn.config import ThreadPicker
    # noisy: the threads wait 60% of the time, but two are still faster than one; the
    # probes back off (0.25 s, 0.5 s, 1 s, ... of calls between them)
    calls = _run_picker(ThreadPicker(2), lambda t, i: 4e-4 if t == 2 else 6e-4,
                        wait=lambda t, i: 0.6, calls=200)
    ones = [i for i, (t, _) in enumerate(calls) if t == 1]
    assert all(calls[i][1] == 1 for i in ones) and 2 <= len(ones) <= 8
    assert calls[-1][0] == 2
    # short calls (one epoch each, as Sequential.fit makes them) jitter: one slow epoch
    # in ten, waiting, does not hand the fit to one thread
    picker, used = ThreadPicker(2), []
    for i in range(100):
        threads, units = picker.next_call(1)
        slow = threads == 2 and i % 10 == 9
        picker.record(threads, (9e-4 if slow else 4e-4) if threads == 2 else 6e-4, units,
                      0.5 if slow else 0.04)
        used.append(threads)
    assert used.count(1) <= 3 and used[-1] == 2
    # the first call alone was slow (its threads woke up): two threads stay
    calls = _run_picker(ThreadPicker(2), lambda t, i: (3e-2 if i == 0 else 4e-4) if t == 2
                        else 6e-4, wait=lambda t, i: 0.99 if i == 0 else 0.2, calls=30)
    assert calls[:4] == [(2, 1), (1, 1), (2, 1), (2, 250)]
    assert [t for t, _ in calls[3:]] == [2] * 27
    # a busy loop starts after a probe confirmed two threads: the next slow call, far
    # slower than one thread was, is probed at once, not after the doubled interval
    calls = _run_picker(ThreadPicker(2), lambda t, i: (4e-4 if i < 30 else 3e-2) if t == 2
                        else 6e-4, wait=lambda t, i: 0.6, calls=40)
    first_slow = next(i for i, (t, _) in enumerate(calls) if i >= 30 and t == 2)
    assert calls[first_slow + 1] == (1, 1)


@pytest.mark.parametrize("shape", ["split_units", "parts"])
def test_thread_count_changing_between_calls_changes_no_bits(monkeypatch, shape):
    """Each call of a fit may run on another thread count (config.ThreadPicker): the
    weights and losses are those of a fit on one thread, bit for bit, for a model whose
    first layer splits its units between threads and one whose batches split into parts."""
    rng = np.random.default_rng(77)
    if shape == "split_units":  # the course's network
        x = rng.standard_normal((96, 400)).astype(np.float32)
        y = (rng.random((96, 1)) < 0.5).astype(np.float32)
        layers, loss, batch = lambda: [Dense(25, activation="sigmoid"),
                                       Dense(1, activation="sigmoid")], "binary_crossentropy", 32
    else:
        x = rng.standard_normal((600, 64)).astype(np.float32)
        y = rng.integers(0, 10, (600, 1)).astype(np.float32)
        layers, loss, batch = lambda: [Dense(100, activation="relu"),
                                       Dense(10, activation="softmax")], \
            "sparse_categorical_crossentropy", 200
    counts = iter([2, 1] * 100)

    class Alternating(fastnn.config.ThreadPicker):
        def next_call(self, remaining):
            return next(counts), 1

    results = []
    for picker, threads in ((Alternating, 2), (fastnn.config.ThreadPicker, 1)):
        monkeypatch.setattr(fastnn.config, "ThreadPicker", picker)
        set_random_seed(5)
        model = Sequential(layers())
        model.compile(optimizer=Adam(1e-3), loss=loss)
        with fastnn.num_threads(threads):
            history = model.fit(x, y, batch_size=batch, epochs=24, verbose=0, seed=3)
        results.append((model.get_weights(), history.history["loss"]))
    (w_alt, l_alt), (w_one, l_one) = results
    for a, b in zip(w_alt, w_one):
        np.testing.assert_array_equal(a, b)
    assert l_alt == l_one


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("units", [10, 12, 20, 25, 100])
def test_a_samples_prediction_is_the_same_alone_or_in_any_batch(dtype, units):
    """As the README says: where fastnn's kernel takes every forward product (each output
    one chain of fused multiply-adds; outputs of 10 or more float32 columns, 5 doubles)
    no row depends on the batch around it."""
    from fastnn._kernels import small_gemm_available
    if not small_gemm_available():
        pytest.skip("BLAS computes the forward products on this CPU")
    rng = np.random.default_rng(units)
    model = Sequential([Dense(units, activation="relu"), Dense(units), Dense(16)], dtype=dtype)
    model.build((30,))
    x = rng.standard_normal((257, 30)).astype(dtype)
    whole = model.predict(x)
    for batch_size in (1, 7, 64):
        assert np.array_equal(model.predict(x, batch_size=batch_size), whole)
