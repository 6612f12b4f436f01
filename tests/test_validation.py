"""Bad input raises ValueError/TypeError naming the argument, before any state changes
(API.md, "Data"); unusual but valid input (non-contiguous, read-only, float16, int,
lists of lists) is converted and gives the same results as a clean float32 array."""
import re

import numpy as np
import pytest

import fastnn
from fastnn import Sequential, set_random_seed
from fastnn.layers import Activation, Dense, Dropout, Input
from fastnn.losses import BinaryCrossentropy
from fastnn.optimizers import SGD, Adam, RMSprop

N, F = 20, 4


# ----------------------------------------------------------------------------- helpers

def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, F)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    return x, y


def _binary_model(train=True):
    set_random_seed(0)
    model = Sequential([Dense(5, activation="relu"), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    if train:
        x, y = _data()
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=0)
    return model


def _sparse_model():
    set_random_seed(0)
    model = Sequential([Dense(5, activation="relu"), Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, _ = _data()
    model.fit(x, np.arange(N) % 3, batch_size=8, verbose=0, seed=0)
    return model


def _snapshot(model):
    opt = model.optimizer
    slots = None if getattr(opt, "slots", None) is None else [np.array(s) for s in opt.slots]
    return {
        "built": model.built,
        "weights": model.get_weights() if model.built else None,
        "optimizer": opt,
        "iterations": opt.iterations if opt is not None else None,
        "slots": slots,
        "optimizer_config": repr(opt),
        "loss": model.loss,
        "loss_config": repr(model.loss),
        "input_shape": model.input_shape,
    }


def _assert_unchanged(model, snap):
    after = _snapshot(model)
    assert after["built"] == snap["built"]
    assert after["input_shape"] == snap["input_shape"]
    assert after["optimizer"] is snap["optimizer"]
    assert after["loss"] is snap["loss"]
    assert after["optimizer_config"] == snap["optimizer_config"]
    assert after["loss_config"] == snap["loss_config"]
    assert after["iterations"] == snap["iterations"]
    if snap["weights"] is not None:
        assert len(after["weights"]) == len(snap["weights"])
        for a, b in zip(after["weights"], snap["weights"]):
            np.testing.assert_array_equal(a, b)
    if snap["slots"] is not None:
        for a, b in zip(after["slots"], snap["slots"]):
            np.testing.assert_array_equal(a, b)


def _names(message, arg):
    """Whether the message names the argument as a word (x, y, batch_size, ...)."""
    return re.search(rf"(?<![\w.]){re.escape(arg)}(?!\w)", message) is not None


def _raises_naming(call, *args, contains=()):
    """call() raises ValueError/TypeError whose message names one of args."""
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    message = str(info.value)
    assert any(_names(message, a) for a in args), f"{args} not named in: {message}"
    for fragment in contains:
        assert fragment in message, f"{fragment!r} not in: {message}"
    return message


def _check_rejected(model, call, *args, contains=()):
    snap = _snapshot(model)
    message = _raises_naming(call, *args, contains=contains)
    _assert_unchanged(model, snap)
    return message


# ----------------------------------------------------------------------------- bad x

def _bad_x():
    x, _ = _data()
    nan = x.copy()
    nan[3, 1] = np.nan
    inf = x.copy()
    inf[5, 2] = np.inf
    ninf = x.copy()
    ninf[0, 0] = -np.inf
    overflow = x.astype(np.float64)
    overflow[2, 2] = 1e39  # finite in float64, inf as float32
    return {
        "nan": (nan, ()),
        "inf": (inf, ()),
        "-inf": (ninf, ()),
        "overflow_float32": (overflow, ()),
        "rank1": (x[:, 0].copy(), ((N,).__repr__(),)),
        "rank3": (x[:, :, None].copy(), ("(20, 4, 1)",)),
        "narrow": (x[:, :3].copy(), ("(20, 3)",)),
        "wide": (np.zeros((N, 5), np.float32), ("(20, 5)",)),
        "strings": (np.array([["a", "b", "c", "d"]] * N), ()),
        "object": (x.astype(object), ()),
        "complex": (x.astype(np.complex64), ("complex",)),
        "ragged": ([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]], ()),
    }


BAD_X = list(_bad_x())


@pytest.mark.parametrize("case", BAD_X)
def test_fit_rejects_bad_x(case):
    xb, contains = _bad_x()[case]
    model = _binary_model()
    y = np.zeros(len(xb) if hasattr(xb, "__len__") else N, np.float32)
    _check_rejected(model, lambda: model.fit(xb, y, verbose=0), "x", contains=contains)


@pytest.mark.parametrize("case", BAD_X)
def test_evaluate_rejects_bad_x(case):
    xb, contains = _bad_x()[case]
    model = _binary_model()
    y = np.zeros(len(xb), np.float32)
    _check_rejected(model, lambda: model.evaluate(xb, y), "x", contains=contains)


@pytest.mark.parametrize("case", BAD_X)
def test_predict_rejects_bad_x(case):
    xb, contains = _bad_x()[case]
    model = _binary_model()
    _check_rejected(model, lambda: model.predict(xb), "x", contains=contains)


@pytest.mark.parametrize("case", ["nan", "inf", "strings", "object", "complex", "ragged", "rank3"])
def test_unbuilt_model_stays_unbuilt_after_bad_x(case):
    xb, _ = _bad_x()[case]
    model = _binary_model(train=False)
    assert not model.built
    y = np.zeros(len(xb), np.float32)
    _check_rejected(model, lambda: model.fit(xb, y, verbose=0), "x")
    assert not model.built
    assert model.optimizer.iterations == 0
    _check_rejected(model, lambda: model.predict(xb), "x")
    assert not model.built


# ----------------------------------------------------------------------------- bad y

def _bad_binary_y():
    _, y = _data()
    nan = y.copy()
    nan[4] = np.nan
    inf = y.copy()
    inf[7] = np.inf
    above = y.copy()
    above[1] = 2.0
    below = y.copy()
    below[2] = -0.5
    return {
        "nan": (nan, ()),
        "inf": (inf, ()),
        "short": (y[:-1], ("(19,)",)),
        "long": (np.concatenate([y, y[:1]]), ("(21,)",)),
        "wide": (np.zeros((N, 2), np.float32), ("(20, 2)",)),
        "rank3": (y[:, None, None], ("(20, 1, 1)",)),
        "above_one": (above, ()),
        "below_zero": (below, ()),
        "strings": (np.array(["1"] * N), ()),
        "object": (y.astype(object), ()),
        "complex": (y.astype(np.complex128), ()),
        "empty": (np.zeros((0,), np.float32), ()),
    }


BAD_BINARY_Y = list(_bad_binary_y())


@pytest.mark.parametrize("case", BAD_BINARY_Y)
def test_fit_rejects_bad_binary_targets(case):
    yb, contains = _bad_binary_y()[case]
    x, _ = _data()
    model = _binary_model()
    _check_rejected(model, lambda: model.fit(x, yb, verbose=0), "y", contains=contains)


@pytest.mark.parametrize("case", BAD_BINARY_Y)
def test_evaluate_rejects_bad_binary_targets(case):
    yb, contains = _bad_binary_y()[case]
    x, _ = _data()
    model = _binary_model()
    _check_rejected(model, lambda: model.evaluate(x, yb), "y", contains=contains)


def test_bce_soft_labels_inside_unit_interval_are_fine():
    x, y = _data()
    soft = np.where(y > 0, 0.9, 0.1).astype(np.float32)
    soft[0] = 0.0
    soft[1] = 1.0
    soft[2] = 0.37
    model = _binary_model()
    hist = model.fit(x, soft, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert np.isfinite(model.evaluate(x, soft)[0])


def test_multilabel_bce_targets_out_of_range():
    x, _ = _data()
    set_random_seed(0)
    model = Sequential([Dense(3, activation="sigmoid")])
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    y = np.zeros((N, 3), np.float32)
    model.fit(x, y, verbose=0)
    y[3, 2] = 1.5
    _check_rejected(model, lambda: model.fit(x, y, verbose=0), "y")


def test_x_and_y_of_different_lengths():
    x, y = _data()
    model = _binary_model()
    _check_rejected(model, lambda: model.fit(x[:15], y, verbose=0), "x", "y")
    _check_rejected(model, lambda: model.fit(x, y[:15], verbose=0), "x", "y")
    _check_rejected(model, lambda: model.evaluate(x[:15], y), "x", "y")


def test_empty_x_and_y():
    model = _binary_model()
    x = np.zeros((0, F), np.float32)
    y = np.zeros((0,), np.float32)
    _check_rejected(model, lambda: model.fit(x, y, verbose=0), "x", "y")
    _check_rejected(model, lambda: model.evaluate(x, y), "x", "y")
    _check_rejected(model, lambda: model.predict(x), "x")
    _check_rejected(model, lambda: model.fit([], [], verbose=0), "x", "y")


def _sparse_bad_y():
    y = (np.arange(N) % 3).astype(np.float64)
    half = y.copy()
    half[5] = 1.5
    tiny = y.copy()
    tiny[5] = 1.0 + 1e-9  # not whole, though float32 would round it to 1
    three = y.copy()
    three[0] = 3
    neg = y.copy()
    neg[1] = -1
    return {
        "half": (half, ()),
        "nearly_whole": (tiny, ()),
        "equal_to_classes": (three, ()),
        "negative": (neg, ()),
        "int_out_of_range": (np.full(N, 7, dtype=np.int64), ()),
        "one_hot_shape": (np.eye(3)[np.arange(N) % 3], ("(20, 3)",)),
        "nan": (np.where(np.arange(N) == 2, np.nan, y), ()),
    }


@pytest.mark.parametrize("case", list(_sparse_bad_y()))
def test_sparse_labels_must_be_whole_and_in_range(case):
    yb, contains = _sparse_bad_y()[case]
    x, _ = _data()
    model = _sparse_model()
    _check_rejected(model, lambda: model.fit(x, yb, verbose=0), "y", contains=contains)
    _check_rejected(model, lambda: model.evaluate(x, yb), "y", contains=contains)


def test_sparse_labels_int_float_column_all_accepted():
    x, _ = _data()
    labels = np.arange(N) % 3
    model = _sparse_model()
    results = [model.evaluate(x, y) for y in
               (labels, labels.astype(np.float32), labels[:, None], labels.astype(np.uint8),
                labels.tolist())]
    for r in results[1:]:
        assert r == results[0]


def test_categorical_targets_wrong_width():
    x, _ = _data()
    set_random_seed(0)
    model = Sequential([Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    model.fit(x, np.eye(3)[np.arange(N) % 3], verbose=0)
    _check_rejected(model, lambda: model.fit(x, np.eye(4)[np.arange(N) % 4], verbose=0), "y",
                    contains=("(20, 4)",))
    _check_rejected(model, lambda: model.fit(x, np.arange(N) % 3, verbose=0), "y")


def test_mse_targets_wrong_width():
    x, _ = _data()
    set_random_seed(0)
    model = Sequential([Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, np.zeros((N, 2)), verbose=0)
    _check_rejected(model, lambda: model.fit(x, np.zeros((N, 3)), verbose=0), "y")
    _check_rejected(model, lambda: model.fit(x, np.zeros(N), verbose=0), "y")


# ----------------------------------------------------------------------------- validation data

def test_bad_validation_data():
    x, y = _data()
    model = _binary_model()
    xn = x.copy()
    xn[0, 0] = np.nan
    for vd in [(xn, y), (x, y + 3), (x[:, :3], y), (x, y[:5]), (x,), x, (x, y, y)]:
        _check_rejected(model, lambda: model.fit(x, y, validation_data=vd, verbose=0),
                        "validation_data", "validation_data[0]", "validation_data[1]")


def test_validation_sample_weights_are_rejected_clearly():
    # Keras weights val_loss by them; fastnn's fit has no sample_weight at all
    x, y = _data()
    model = _binary_model()
    for weights in (np.ones(N), [1.0] * N):
        message = _check_rejected(
            model, lambda: model.fit(x, y, validation_data=(x, y, weights), verbose=0),
            "validation_data", contains=("sample_weight", "not supported"))
        assert "(x_val, y_val)" in message


# ----------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("value", [0, -1, 2.5, "32"])
def test_batch_size_must_be_positive_integer(value):
    x, y = _data()
    model = _binary_model()
    _check_rejected(model, lambda: model.fit(x, y, batch_size=value, verbose=0), "batch_size")
    _check_rejected(model, lambda: model.evaluate(x, y, batch_size=value), "batch_size")
    _check_rejected(model, lambda: model.predict(x, batch_size=value), "batch_size")


@pytest.mark.parametrize("value", [-1, -10, 1.5, "3"])
def test_epochs_must_be_non_negative_integer(value):
    x, y = _data()
    model = _binary_model()
    _check_rejected(model, lambda: model.fit(x, y, epochs=value, verbose=0), "epochs")


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "0.2"])
def test_validation_split_in_unit_interval(value):
    x, y = _data()
    model = _binary_model()
    _check_rejected(model, lambda: model.fit(x, y, validation_split=value, verbose=0),
                    "validation_split")


def test_validation_split_leaving_no_samples():
    x, y = _data()
    model = _binary_model()
    # one sample cannot be split into a training and a validation part (Keras raises too)
    _check_rejected(model, lambda: model.fit(x[:1], y[:1], validation_split=0.1, verbose=0),
                    "validation_split")
    hist = model.fit(x[:2], y[:2], validation_split=0.1, verbose=0)  # 1 + 1 is fine
    assert len(hist.history["val_loss"]) == 1


def test_other_fit_arguments():
    x, y = _data()
    model = _binary_model()
    _check_rejected(model, lambda: model.fit(x, y, verbose=3), "verbose")
    _check_rejected(model, lambda: model.fit(x, y, initial_epoch=-1, verbose=0), "initial_epoch")
    _check_rejected(model, lambda: model.fit(x, y, seed=-1, verbose=0), "seed")
    _check_rejected(model, lambda: model.fit(x, y, callbacks=[object()], verbose=0), "callbacks")


# ----------------------------------------------------------------------------- layers

@pytest.mark.parametrize("units", [0, -1, -5, 2.5, "3", None, True])
def test_dense_units_must_be_positive(units):
    _raises_naming(lambda: Dense(units), "units")


def test_impossible_layer_settings():
    _raises_naming(lambda: Dense(3, activation="relux"), "activation")
    _raises_naming(lambda: Dense(3, activation="Softmax2"), "activation")
    _raises_naming(lambda: Activation("foo"), "activation")
    _raises_naming(lambda: Dense(3, kernel_initializer="nope"), "kernel_initializer")
    _raises_naming(lambda: Dense(3, bias_initializer="nope"), "bias_initializer")
    for rate in (1.0, 1.5, -0.1, "0.5"):
        _raises_naming(lambda: Dropout(rate), "rate")
    for shape in ((0,), (-1,), (), ("a",)):
        _raises_naming(lambda: Input(shape=shape), "shape")


def test_impossible_optimizer_settings():
    _raises_naming(lambda: SGD(learning_rate=-0.1), "learning_rate")
    _raises_naming(lambda: SGD(learning_rate=float("nan")), "learning_rate")
    _raises_naming(lambda: SGD(momentum=1.5), "momentum")
    _raises_naming(lambda: Adam(beta_1=1.0), "beta_1")
    _raises_naming(lambda: Adam(beta_2=-0.1), "beta_2")
    _raises_naming(lambda: RMSprop(rho=2.0), "rho")
    _raises_naming(lambda: Adam(learning_rate="fast"), "learning_rate")


def test_model_dtype_must_be_float32_or_float64():
    _raises_naming(lambda: Sequential([Dense(1)], dtype="float16"), "dtype")
    _raises_naming(lambda: Sequential([Dense(1)], dtype="int32"), "dtype")
    _raises_naming(lambda: fastnn.set_floatx("float16"), "value", "floatx")
    assert fastnn.floatx() == "float32"


def test_build_bad_input_shape():
    model = Sequential([Dense(2)])
    _raises_naming(lambda: model.build((0,)), "input_shape")
    _raises_naming(lambda: model.build((None, -3)), "input_shape")
    assert not model.built


# ----------------------------------------------------------------------------- unknown names

def test_unknown_names_at_compile_leave_settings_unchanged():
    x, y = _data()
    model = _binary_model()
    before = model.evaluate(x, y, return_dict=True)
    _check_rejected(model, lambda: model.compile(optimizer="adamw", loss="binary_crossentropy"),
                    "optimizer")
    _check_rejected(model, lambda: model.compile(optimizer="sgd", loss="hinge"), "loss")
    _check_rejected(model, lambda: model.compile(optimizer="sgd", loss="binary_crossentropy",
                                                 metrics=["accuracy", "auc"]),
                    "metrics", "metric")
    _check_rejected(model, lambda: model.compile(optimizer=42, loss="binary_crossentropy"),
                    "optimizer")
    _check_rejected(model, lambda: model.compile(optimizer="sgd", loss=42), "loss")
    after = model.evaluate(x, y, return_dict=True)
    assert after == before  # same loss and the same metrics as compiled before


def test_fit_or_evaluate_before_compile():
    x, y = _data()
    model = Sequential([Dense(1, activation="sigmoid")])
    with pytest.raises((ValueError, RuntimeError)):
        model.fit(x, y, verbose=0)
    with pytest.raises((ValueError, RuntimeError)):
        model.evaluate(x, y)
    assert not model.built


# ----------------------------------------------------------------------------- set_weights

def test_set_weights_wrong_count():
    model = _binary_model()
    w = model.get_weights()
    _check_rejected(model, lambda: model.set_weights(w[:-1]), "weights")
    _check_rejected(model, lambda: model.set_weights(w + [np.zeros(1)]), "weights")
    _check_rejected(model, lambda: model.set_weights([]), "weights")


def test_set_weights_wrong_shapes_apply_nothing():
    model = _binary_model()
    w = model.get_weights()
    new = [a + 1 for a in w]
    bad_kernel = [new[0].T] + new[1:]
    bad_last_bias = new[:-1] + [np.zeros(2)]  # earlier arrays valid: none may be applied
    bad_scalar = new[:1] + [np.float32(0)] + new[2:]
    for bad in (bad_kernel, bad_last_bias, bad_scalar):
        msg = _check_rejected(model, lambda: model.set_weights(bad), "weights", "weights[0]",
                              "weights[1]", "weights[3]")
        assert re.search(r"\(\d+(, \d+)?,?\)", msg)  # names the shapes


def test_set_weights_non_numeric():
    model = _binary_model()
    w = model.get_weights()
    bad = [w[0].astype(str)] + w[1:]
    _check_rejected(model, lambda: model.set_weights(bad), "weights", "weights[0]")


def test_set_weights_accepts_lists_and_other_float_dtypes():
    model = _binary_model()
    w = model.get_weights()
    model.set_weights([a.astype(np.float64).tolist() for a in w])
    for a, b in zip(model.get_weights(), w):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- valid, unusual x

def _fit_from(x, y, **kw):
    model = _binary_model(train=False)
    model.build((F,))
    set_random_seed(1)
    init = Sequential([Dense(5), Dense(1)])
    init.build((F,))
    model.set_weights(init.get_weights())
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=3, **kw)
    return model


def _same_results(x_variant, y_variant, x_ref, y_ref):
    m_ref = _fit_from(x_ref, y_ref)
    m_var = _fit_from(x_variant, y_variant)
    for a, b in zip(m_ref.get_weights(), m_var.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(m_ref.predict(x_ref), m_var.predict(x_variant))
    assert m_ref.evaluate(x_ref, y_ref) == m_var.evaluate(x_variant, y_variant)


def test_non_contiguous_x_strided():
    x, y = _data()
    wide = np.zeros((N, 2 * F), np.float32)
    wide[:, ::2] = x
    view = wide[:, ::2]
    assert not view.flags.c_contiguous
    _same_results(view, y, x, y)


def test_non_contiguous_x_fortran_order_and_row_stride():
    x, y = _data()
    fortran = np.asfortranarray(x)
    assert not fortran.flags.c_contiguous
    _same_results(fortran, y, x, y)
    tall = np.repeat(x, 2, axis=0)[::2]
    assert not tall.flags.c_contiguous
    ytall = np.repeat(y, 2)[::2]
    _same_results(tall, ytall, x, y)


def test_read_only_x_and_y():
    x, y = _data()
    xr, yr = x.copy(), y.copy()
    xr.setflags(write=False)
    yr.setflags(write=False)
    _same_results(xr, yr, x, y)


def test_fit_does_not_modify_inputs():
    x, y = _data()
    x0, y0 = x.copy(), y.copy()
    _fit_from(x, y)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


def test_float16_x_is_converted():
    x, y = _data()
    x16 = x.astype(np.float16)
    _same_results(x16, y, x16.astype(np.float32), y)


def test_float64_x_into_float32_model_is_converted():
    x, y = _data()
    _same_results(x.astype(np.float64), y.astype(np.float64), x, y)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.int8])
def test_int_x_is_converted(dtype):
    rng = np.random.default_rng(3)
    xi = rng.integers(0, 5, size=(N, F)).astype(dtype)
    y = (xi[:, 0] > 2).astype(np.float32)
    _same_results(xi, y, xi.astype(np.float32), y)


def test_int_and_bool_binary_targets():
    x, y = _data()
    _same_results(x, y.astype(np.int64), x, y)
    _same_results(x, y.astype(bool), x, y)


def test_lists_of_lists():
    x, y = _data()
    _same_results(x.tolist(), y.tolist(), x, y)
    _same_results(x.tolist(), [[v] for v in y.tolist()], x, y)


def test_float64_model_keeps_float64_precision_of_inputs():
    x, y = _data()
    x64 = x.astype(np.float64) + 1e-9
    model = Sequential([Dense(1)], dtype="float64")
    model.build((F,))
    w = [np.ones((F, 1)), np.zeros(1)]
    model.set_weights(w)
    np.testing.assert_allclose(model.predict(x64)[:, 0], x64.sum(1), rtol=0, atol=1e-13)
    model.compile(optimizer="sgd", loss="mse")
    xn = x64.copy()
    xn[0, 0] = np.nan
    _check_rejected(model, lambda: model.predict(xn), "x")


def test_numpy_scalar_arguments_are_accepted():
    """Arguments computed with NumPy (np.int64 batch sizes, np.float32 fractions) are
    ordinary numbers to Keras."""
    x, y = _data()
    model = _binary_model()
    hist = model.fit(x, y, batch_size=np.int64(8), epochs=np.int32(2), verbose=0)
    assert len(hist.history["loss"]) == 2
    Dense(np.int64(3))
    Dropout(np.float32(0.25))
    hist = model.fit(x, y, validation_split=np.float64(0.25), verbose=0)
    assert "val_loss" in hist.history
    hist = model.fit(x, y, validation_split=np.float32(0.25), verbose=0)
    assert "val_loss" in hist.history
