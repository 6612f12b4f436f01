"""Conv1D / MaxPooling1D / GlobalAveragePooling1D / Flatten at the model level: Keras'
shape arithmetic, weights in Keras' layout, predictions against the NumPy reference,
gradcheck through whole stacks, input checks, and a small learning task."""

import re

import numpy as np
import pytest

import fastnn
from fastnn import Sequential
from fastnn import reference as ref
from fastnn.layers import (Conv1D, Dense, Flatten, GlobalAveragePooling1D, Input,
                           MaxPooling1D)


pytestmark = pytest.mark.usefixtures("one_blas_thread")


def names(err, argument):
    """The error message names `argument` as a word ("x: ...", "... x ...")."""
    return re.search(rf"(?<![\w.]){re.escape(argument)}(?![\w])", str(err.value)) is not None


def summary_lines(model):
    lines = []
    model.summary(print_fn=lines.append)
    return lines


# ---- shapes ------------------------------------------------------------------------------

@pytest.mark.parametrize("L,kernel,stride,padding,expected", [
    (40, 5, 2, "same", 20), (40, 5, 2, "valid", 18), (40, 5, 1, "same", 40),
    (40, 5, 1, "valid", 36), (41, 4, 3, "same", 14), (41, 4, 3, "valid", 13),
    (10, 3, 3, "valid", 3), (10, 3, 3, "same", 4), (3, 7, 1, "same", 3), (7, 7, 2, "valid", 1),
])
def test_conv_output_length_is_keras(L, kernel, stride, padding, expected):
    model = Sequential([Input((L, 2)), Conv1D(6, kernel, strides=stride, padding=padding)])
    assert model.output_shape == (None, expected, 6)
    assert ref.conv1d_output_length(L, kernel, stride, padding)[0] == expected
    assert any(f"(None, {expected}, 6)" in line for line in summary_lines(model))


@pytest.mark.parametrize("L", range(1, 14))
@pytest.mark.parametrize("kernel,stride", [(1, 1), (2, 1), (3, 2), (4, 3), (5, 2), (7, 3)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_layers_agree_with_reference_arithmetic(L, kernel, stride, padding):
    if padding == "valid" and L < kernel:
        with pytest.raises(ValueError):
            Sequential([Input((L, 1)), Conv1D(1, kernel, strides=stride, padding=padding)])
        return
    steps, _ = ref.conv1d_output_length(L, kernel, stride, padding)
    conv = Sequential([Input((L, 1)), Conv1D(2, kernel, strides=stride, padding=padding)])
    assert conv.output_shape == (None, steps, 2)
    pool = Sequential([Input((L, 3)), MaxPooling1D(kernel, strides=stride, padding=padding)])
    assert pool.output_shape == (None, steps, 3)


def test_stack_shapes_and_summary():
    model = Sequential([
        Input((40, 3)),
        Conv1D(8, 5, strides=2, padding="same", activation="relu"),   # (20, 8)
        MaxPooling1D(2),                                              # (10, 8)
        Conv1D(4, 3, padding="valid"),                                # (8, 4)
        MaxPooling1D(3, strides=2, padding="same"),                   # (4, 4)
        Flatten(),                                                    # (16,)
        Dense(5, activation="softmax"),
    ])
    shapes = [(None, 20, 8), (None, 10, 8), (None, 8, 4), (None, 4, 4), (None, 16), (None, 5)]
    params = [5 * 3 * 8 + 8, 0, 3 * 8 * 4 + 4, 0, 0, 16 * 5 + 5]
    assert model.output_shape == shapes[-1]
    assert [layer.count_params() for layer in model.layers] == params
    assert model.count_params() == sum(params)
    lines = summary_lines(model)
    # a row's cells, each joined over the lines a long text wraps onto (as in Keras)
    rows, block = [], []
    for line in lines:
        if line.startswith("│"):
            block.append([cell.strip() for cell in line.strip("│").split("│")])
        elif block:
            rows.append([" ".join(part for part in col if part) for col in zip(*block)])
            block = []
    assert len(rows) == len(model.layers)
    for row, layer, shape, count in zip(rows, model.layers, shapes, params):
        assert row == [f"{layer.name} ({type(layer).__name__})", str(shape), f"{count:,}"]
    assert any(f"Total params: {sum(params):,}" in line for line in lines)


@pytest.mark.parametrize("L,pool,padding,expected", [
    (20, 2, "valid", 10), (20, 2, "same", 10), (21, 2, "valid", 10), (21, 2, "same", 11),
    (22, 3, "valid", 7), (22, 3, "same", 8), (2, 3, "same", 1)])
def test_maxpool_default_stride_is_pool(L, pool, padding, expected):
    model = Sequential([Input((L, 4)), MaxPooling1D(pool, padding=padding)])
    assert model.output_shape == (None, expected, 4)
    assert model.layers[0].strides == pool
    if pool == 2:  # pool_size defaults to 2
        assert Sequential([Input((L, 4)), MaxPooling1D(padding=padding)]).output_shape == (None, expected, 4)


def test_get_weights_keras_layout():
    model = Sequential([Input((30, 3)), Conv1D(7, 4, strides=2), Conv1D(5, 3, use_bias=False),
                        GlobalAveragePooling1D(), Dense(2)])
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(4, 3, 7), (7,), (3, 7, 5), (5, 2), (2,)]  # no-bias conv: kernel only
    assert model.output_shape == (None, 2)
    assert model.layers[2].output_shape == (5,)


def test_flatten_adds_no_parameters():
    with_flatten = Sequential([Input((12, 2)), Conv1D(3, 3), Flatten(), Dense(4)])
    flatten = with_flatten.layers[1]
    assert flatten.count_params() == 0 and flatten.get_weights() == []
    assert with_flatten.count_params() == (3 * 2 * 3 + 3) + (10 * 3 * 4 + 4)
    assert len(with_flatten.get_weights()) == 4
    assert with_flatten.output_shape == (None, 4)


# ---- predictions against the reference --------------------------------------------------

def reference_predict(spec, weights, x):
    """Forward through a list of ("conv", stride, padding, act) / ("pool", pool, stride,
    padding) / ("gap",) / ("flatten",) / ("dense", act) with the reference kernels."""
    a, k = np.asarray(x, np.float64), 0
    for item in spec:
        kind = item[0]
        if kind == "conv":
            _, stride, padding, act, use_bias = item
            w, b = weights[k], (weights[k + 1] if use_bias else None)
            k += 2 if use_bias else 1
            a = ref.conv1d_forward(a, w, b, stride, padding, act)[1]
        elif kind == "pool":
            a = ref.maxpool1d_forward(a, item[1], item[2], item[3])[0]
        elif kind == "gap":
            a = ref.global_avgpool1d_forward(a)
        elif kind == "flatten":
            a = a.reshape(a.shape[0], -1)
        else:
            a = ref.dense_forward(a, weights[k], weights[k + 1], item[1])[1]
            k += 2
    return a


def build_from_spec(spec, filters, dtype):
    layers = []
    for item in spec:
        if item[0] == "conv":
            layers.append(Conv1D(filters.pop(0), filters.pop(0), strides=item[1], padding=item[2],
                                 activation=item[3], use_bias=item[4]))
        elif item[0] == "pool":
            layers.append(MaxPooling1D(item[1], strides=item[2], padding=item[3]))
        elif item[0] == "gap":
            layers.append(GlobalAveragePooling1D())
        elif item[0] == "flatten":
            layers.append(Flatten())
        else:
            layers.append(Dense(filters.pop(0), activation=item[1]))
    return Sequential(layers, dtype=dtype)


STACKS = [
    # (input (L, C), spec, [filters, kernel per conv / units per dense])
    ((40, 3), [("conv", 2, "same", "relu", True), ("pool", 2, 2, "valid"),
               ("conv", 1, "valid", "tanh", True), ("flatten",), ("dense", "softmax")],
     [6, 5, 4, 3, 3]),
    ((23, 1), [("conv", 3, "valid", "leaky_relu", False), ("pool", 3, 1, "same"),
               ("conv", 2, "same", "sigmoid", True), ("flatten",), ("dense", "linear")],
     [4, 4, 2, 2, 2]),
    ((17, 5), [("conv", 1, "same", "linear", True), ("gap",), ("dense", "sigmoid")],
     [3, 7, 1]),
    ((31, 2), [("conv", 2, "same", "softmax", True), ("pool", 4, 3, "same"), ("flatten",),
               ("dense", "tanh")], [5, 2, 3]),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("stack", range(len(STACKS)))
def test_set_weights_then_predict_matches_reference(stack, dtype):
    (L, C), spec, filters = STACKS[stack]
    model = build_from_spec(spec, list(filters), dtype)
    rng = np.random.default_rng(stack)
    x = rng.standard_normal((9, L, C))
    model.build((None, L, C))
    weights = [rng.standard_normal(w.shape) * 0.5 for w in model.get_weights()]
    model.set_weights(weights)  # Keras' layout: kernel (K, C_in, F), bias (F,)
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_allclose(got, want, rtol=1e-7 if dtype == "float32" else 0)
    expected = reference_predict(spec, weights, x.astype(dtype))
    got = model.predict(x)
    assert got.dtype == np.dtype(dtype) and got.shape == expected.shape
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, expected, **tol)
    # other batch sizes give the same answer (to rounding: the GEMMs are blocked differently)
    np.testing.assert_allclose(model.predict(x, batch_size=2), got, **tol)


def test_two_d_input_is_one_channel():
    fastnn.set_random_seed(3)
    model = Sequential([Conv1D(4, 3, activation="tanh"), MaxPooling1D(2), Flatten(), Dense(2)],
                       dtype="float64")
    x = np.random.default_rng(0).standard_normal((6, 20))
    out2 = model.predict(x)  # builds from (n, steps): one channel
    assert model.input_shape == (None, 20, 1)
    assert model.get_weights()[0].shape == (3, 1, 4)
    np.testing.assert_array_equal(model.predict(x[:, :, None]), out2)
    model.compile("sgd", "mse")
    y = np.zeros((6, 2))
    assert fastnn.gradcheck(model, x, y) < 1e-6
    model.fit(x, y, epochs=1, verbose=0)  # fit takes it too


# ---- gradcheck through whole stacks ------------------------------------------------------

# Layers are made fresh for each test (a layer belongs to one model). gradcheck's relative
# error has a rounding floor of about 1e-10 / |gradient| at its default eps = 1e-6, so
# these stacks avoid activations (sigmoid/leaky_relu right before the head) that leave
# parameters with gradients below ~1e-5.
GRAD_STACKS = [
    # valid, stride 1 and 2, softmax output with probabilities (fused path)
    ("sparse_categorical_crossentropy", False, 3, (24, 2),
     lambda: [Conv1D(4, 3, activation="tanh"), MaxPooling1D(2),
              Conv1D(3, 2, strides=2, activation="relu"), Flatten(),
              Dense(3, activation="softmax")]),
    # same padding, stride 3, logits
    ("sparse_categorical_crossentropy", True, 4, (25, 3),
     lambda: [Conv1D(5, 4, strides=3, padding="same", activation="leaky_relu"),
              MaxPooling1D(3, strides=2, padding="same"),
              Conv1D(3, 3, padding="same", activation="tanh"), Flatten(), Dense(4)]),
    # binary from logits, mixed paddings and strides, no-bias conv
    ("binary_crossentropy", True, 1, (19, 1),
     lambda: [Conv1D(3, 5, strides=2, padding="same", use_bias=False, activation="tanh"),
              MaxPooling1D(2, strides=1), Conv1D(2, 3, strides=3, activation="linear"), Flatten(),
              Dense(1)]),
    # binary with a sigmoid output (fused)
    ("binary_crossentropy", False, 1, (16, 2),
     lambda: [Conv1D(4, 2, strides=2, activation="relu"), MaxPooling1D(2, padding="same"),
              Conv1D(2, 2, padding="same", activation="tanh"), Flatten(),
              Dense(1, activation="sigmoid")]),
    # global average pooling, categorical from logits
    ("categorical_crossentropy", True, 3, (21, 3),
     lambda: [Conv1D(6, 3, strides=2, padding="same", activation="tanh"), MaxPooling1D(2),
              Conv1D(4, 2, activation="tanh"), GlobalAveragePooling1D(), Dense(3)]),
    # global average pooling, softmax output with probabilities (fused)
    ("categorical_crossentropy", False, 2, (12, 2),
     lambda: [Conv1D(3, 3, padding="same", activation="sigmoid"), GlobalAveragePooling1D(),
              Dense(2, activation="softmax")]),
    # MSE, stride 3 'valid' leaving input steps unread
    ("mean_squared_error", False, 2, (14, 1),
     lambda: [Conv1D(3, 4, strides=3, padding="valid", activation="tanh"), Flatten(), Dense(2)]),
    # MSE; a softmax conv activation (over the filters) inside the stack
    ("mean_squared_error", False, 1, (10, 2),
     lambda: [Conv1D(3, 3, activation="softmax"), MaxPooling1D(2, strides=3, padding="same"),
              Flatten(), Dense(1, activation="tanh")]),
]


@pytest.mark.parametrize("case", range(len(GRAD_STACKS)))
def test_gradcheck_through_conv_stacks(case):
    loss_name, from_logits, classes, (L, C), make_layers = GRAD_STACKS[case]
    fastnn.set_random_seed(0)
    model = Sequential(make_layers(), dtype="float64")
    rng = np.random.default_rng(0)
    n = 5
    x = rng.standard_normal((n, L, C))
    if loss_name == "sparse_categorical_crossentropy":
        y = rng.integers(0, classes, n)
        loss = fastnn.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    elif loss_name == "categorical_crossentropy":
        y = np.eye(classes)[rng.integers(0, classes, n)]
        loss = fastnn.losses.CategoricalCrossentropy(from_logits=from_logits)
    elif loss_name == "binary_crossentropy":
        y = rng.integers(0, 2, (n, 1)).astype(float)
        loss = fastnn.losses.BinaryCrossentropy(from_logits=from_logits)
    else:
        y = rng.standard_normal((n, classes))
        loss = "mse"
    model.compile("adam", loss)
    model.build((None, L, C))
    before = model.get_weights()
    assert fastnn.gradcheck(model, x, y) < 1e-6
    for u, v in zip(before, model.get_weights()):
        np.testing.assert_array_equal(u, v)  # gradcheck leaves the model alone


def test_gradcheck_float32_model_runs_in_float64():
    fastnn.set_random_seed(7)
    model = Sequential([Conv1D(3, 3, strides=2, padding="same", activation="tanh"),
                        MaxPooling1D(2), Flatten(), Dense(2)])  # float32 default
    model.compile("adam", fastnn.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(1).standard_normal((4, 15, 2))
    assert fastnn.gradcheck(model, x, np.array([0, 1, 1, 0])) < 1e-6


# ---- bad shapes ----------------------------------------------------------------------------

def test_kernel_longer_than_valid_input():
    with pytest.raises(ValueError) as err:
        Sequential([Input((3, 1)), Conv1D(2, 5)])
    assert "5" in str(err.value) and "3" in str(err.value)
    with pytest.raises(ValueError) as err:
        Sequential([Input((4, 1)), MaxPooling1D(6)])
    # 'same' takes it
    assert Sequential([Input((3, 1)), Conv1D(2, 5, padding="same")]).output_shape == (None, 3, 2)


def test_kernel_longer_than_x_names_x():
    """An unbuilt model fed x whose steps are fewer than a 'valid' kernel: x is the
    argument at fault, and the model stays unbuilt."""
    model = Sequential([Conv1D(2, 5), Flatten(), Dense(1)])
    with pytest.raises(ValueError) as err:
        model.predict(np.zeros((4, 3, 1)))
    assert not model.built
    assert "3" in str(err.value) and "5" in str(err.value)
    assert names(err, "x"), str(err.value)


def test_wrong_rank_and_channels():
    model = Sequential([Input((20, 3)), Conv1D(4, 3), Flatten(), Dense(1)])
    model.compile("sgd", "mse")
    weights = model.get_weights()
    cases = [np.zeros((5, 20, 3, 1)),   # 4-D
             np.zeros((5, 20)),         # 2-D: one channel, but the model has 3
             np.zeros((5, 20, 2)),      # other channels than it was built with
             np.zeros((5, 21, 3)),      # other steps
             np.zeros(20)]              # 1-D
    for x in cases:
        with pytest.raises(ValueError) as err:
            model.predict(x)
        assert names(err, "x"), str(err.value)
        assert "(20, 3)" in str(err.value) or x.ndim < 2, str(err.value)
        with pytest.raises(ValueError) as err:
            model.fit(x, np.zeros((5, 1)), verbose=0)
        assert names(err, "x"), str(err.value)
    for u, v in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_unbuilt_conv_model_rejects_wrong_rank():
    model = Sequential([Conv1D(2, 3), Flatten(), Dense(1)])
    with pytest.raises(ValueError) as err:
        model.predict(np.zeros((4, 10, 1, 1)))
    assert names(err, "x")
    assert not model.built
    # a model built from 3 channels then fed 2-D x
    model.predict(np.zeros((4, 10, 3)))
    with pytest.raises(ValueError) as err:
        model.predict(np.zeros((4, 10)))
    assert names(err, "x")


def test_dense_after_conv_needs_flatten():
    with pytest.raises(ValueError) as err:
        Sequential([Input((10, 2)), Conv1D(3, 3), Dense(4)])
    assert "Flatten" in str(err.value)
    model = Sequential([Conv1D(3, 3), Dense(4)])
    with pytest.raises(ValueError) as err:
        model.predict(np.zeros((2, 10, 2)))
    assert "Flatten" in str(err.value)
    assert not model.built


@pytest.mark.parametrize("make,argument", [
    (lambda: Conv1D(0, 3), "filters"),
    (lambda: Conv1D(-2, 3), "filters"),
    (lambda: Conv1D(2, 0), "kernel_size"),
    (lambda: Conv1D(2, 3, strides=0), "strides"),
    (lambda: Conv1D(2, 3, padding="bogus"), "padding"),
    (lambda: Conv1D(2, 3, padding="causal"), "padding"),
    (lambda: Conv1D(2, 3, activation="bogus"), "activation"),
    (lambda: MaxPooling1D(0), "pool_size"),
    (lambda: MaxPooling1D(2, strides=0), "strides"),
    (lambda: MaxPooling1D(2, padding="bogus"), "padding"),
])
def test_bad_settings_at_construction(make, argument):
    with pytest.raises(ValueError) as err:
        make()
    assert names(err, argument), str(err.value)


# ---- learning ------------------------------------------------------------------------------

def waveforms(n, steps, rng):
    """Class 0: sine, class 1: square wave; random frequency, phase, amplitude, noise."""
    t = np.arange(steps)
    freq = rng.uniform(1.5, 4.0, n)[:, None] / steps
    phase = rng.uniform(0, 2 * np.pi, n)[:, None]
    amp = rng.uniform(0.7, 1.3, n)[:, None]
    y = rng.integers(0, 2, n)
    s = np.sin(2 * np.pi * freq * t + phase)
    x = amp * np.where(y[:, None] == 1, np.sign(s), s) + 0.25 * rng.standard_normal((n, steps))
    return x, y


def test_conv_model_learns_sine_vs_square():
    rng = np.random.default_rng(42)
    x, y = waveforms(600, 64, rng)
    x_test, y_test = waveforms(400, 64, rng)
    fastnn.set_random_seed(0)
    model = Sequential([Input((64, 1)), Conv1D(8, 5, activation="relu"), MaxPooling1D(2),
                        Conv1D(8, 3, activation="relu"), GlobalAveragePooling1D(),
                        Dense(1, activation="sigmoid")])
    model.compile(fastnn.optimizers.Adam(learning_rate=0.01), "binary_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=25, batch_size=32, verbose=0, seed=0)
    loss, accuracy = model.evaluate(x_test, y_test)
    assert accuracy > 0.95, (loss, accuracy)


# ---- training steps cut into row parts (src_c/network.h: network_parts) ------------------

def mnist1d_like(dtype, pooling):
    head = [MaxPooling1D(2, padding="same")] if pooling == "max" else []
    tail = [GlobalAveragePooling1D()] if pooling == "average" else [Flatten()]
    return Sequential([Input((40, 1)),
                       Conv1D(25, 5, strides=2, padding="same", activation="relu"), *head,
                       Conv1D(25, 3, strides=2, padding="same", activation="relu"),
                       Conv1D(25, 3, strides=1, padding="valid", activation="tanh"), *tail,
                       Dense(10)], dtype=dtype)


@pytest.mark.parametrize("pooling", ["max", "average", None])
def test_conv_parts_match_one_part_and_threads(pooling):
    """Batches of 100 through a conv stack are cut in 2 parts: the weights after a few
    steps equal those of one-part steps up to rounding, and are the same bits on 1 and 2
    threads."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((400, 40))
    y = rng.integers(0, 10, 400)
    init, results = None, {}
    for max_parts, nt in ((1, 1), (2, 1), (2, 2)):
        model = mnist1d_like("float64", pooling)
        if init is None:
            init = [rng.standard_normal(w.shape) * 0.3 for w in model.get_weights()]
        model.set_weights(init)
        model.compile(optimizer=fastnn.optimizers.SGD(0.05, momentum=0.5),
                      loss=fastnn.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        model._network.max_parts = max_parts
        assert model._network.parts(100) == max_parts
        with fastnn.num_threads(nt):
            history = model.fit(x[:, :, None], y, batch_size=100, epochs=2, seed=1, verbose=0)
        results[max_parts, nt] = (model.get_weights(), history.history)
    for got, want in zip(results[2, 1][0], results[1, 1][0]):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(results[2, 1][1]["loss"], results[1, 1][1]["loss"], rtol=1e-12)
    assert results[2, 1][1]["accuracy"] == results[1, 1][1]["accuracy"]
    assert results[2, 2][1] == results[2, 1][1]
    assert all(np.array_equal(a, b) for a, b in zip(results[2, 2][0], results[2, 1][0]))
