"""End-to-end learning: small problems a correct network must solve (and one a linear
network must not). Everything is seeded (fastnn.set_random_seed and fit(seed=...)), so
the results are deterministic."""
import numpy as np
import pytest

import fastnn
from fastnn import Sequential, set_random_seed
from fastnn.layers import Dense, Dropout, Input
from fastnn.losses import BinaryCrossentropy, MeanSquaredError, SparseCategoricalCrossentropy
from fastnn.optimizers import SGD, Adam


def spirals(points_per_class=100, classes=3, seed=0):
    """CS231n's spirals: classes interleaved arms, not linearly separable."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(classes):
        r = np.linspace(0.0, 1.0, points_per_class)
        t = np.linspace(k * 4.0, (k + 1) * 4.0, points_per_class) + rng.normal(0, 0.2, points_per_class)
        xs.append(np.c_[r * np.sin(t), r * np.cos(t)])
        ys.append(np.full(points_per_class, k))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_xor(dtype):
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
    y = np.array([0, 1, 1, 0], dtype=dtype)
    set_random_seed(1)
    model = Sequential([Dense(8, activation="tanh"), Dense(1, activation="sigmoid")], dtype=dtype)
    model.compile(optimizer=Adam(learning_rate=0.05), loss="binary_crossentropy",
                  metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=4, epochs=500, verbose=0, seed=0)
    loss, acc = model.evaluate(x, y)
    assert acc == 1.0
    assert loss < 0.05
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    np.testing.assert_array_equal((model.predict(x)[:, 0] > 0.5).astype(int), [0, 1, 1, 0])


def test_spirals_relu_network_beats_linear_network():
    x, y = spirals()
    set_random_seed(2)
    model = Sequential([Dense(64, activation="relu"), Dense(64, activation="relu"), Dense(3)])
    model.compile(optimizer=Adam(learning_rate=0.01),
                  loss=SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    hist = model.fit(x, y, batch_size=32, epochs=300, verbose=0, seed=0)
    loss, acc = model.evaluate(x, y)
    assert acc > 0.95, acc
    assert hist.history["accuracy"][-1] > 0.9
    assert np.mean(model.predict(x).argmax(1) == y) == pytest.approx(acc)

    # the same depth without nonlinearities is a linear classifier: about logistic regression
    set_random_seed(2)
    linear = Sequential([Dense(64), Dense(64), Dense(3)])
    linear.compile(optimizer=Adam(learning_rate=0.01),
                   loss=SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    linear.fit(x, y, batch_size=32, epochs=300, verbose=0, seed=0)
    _, linear_acc = linear.evaluate(x, y)
    assert linear_acc < 0.70, linear_acc


def test_spirals_softmax_output_with_probability_loss():
    x, y = spirals(seed=1)
    set_random_seed(3)
    model = Sequential([Dense(64, activation="relu"), Dense(64, activation="relu"),
                        Dense(3, activation="softmax")])
    model.compile(optimizer=Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=300, verbose=0, seed=1)
    _, acc = model.evaluate(x, y)
    assert acc > 0.95, acc
    np.testing.assert_allclose(model.predict(x).sum(1), 1.0, rtol=1e-5)


def test_spirals_one_hot_categorical_crossentropy():
    x, y = spirals(seed=2)
    set_random_seed(4)
    model = Sequential([Dense(64, activation="relu"), Dense(64, activation="relu"),
                        Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, np.eye(3)[y], batch_size=16, epochs=200, verbose=0, seed=2)
    _, acc = model.evaluate(x, np.eye(3)[y])
    assert acc > 0.9, acc


def test_regression_sine():
    x = np.linspace(-3, 3, 200, dtype=np.float32)[:, None]
    y = np.sin(x)
    set_random_seed(5)
    model = Sequential([Dense(32, activation="tanh"), Dense(32, activation="tanh"), Dense(1)])
    model.compile(optimizer=Adam(learning_rate=0.01), loss=MeanSquaredError(), metrics=["mae"])
    hist = model.fit(x, y, batch_size=32, epochs=300, verbose=0, seed=0)
    mse, mae = model.evaluate(x, y)
    assert mse < 0.005, mse
    assert mae < 0.06, mae
    assert hist.history["loss"][-1] < 0.01
    np.testing.assert_allclose(model.predict(x), y, atol=0.2)


def test_regression_relu_multi_output_with_sgd_momentum():
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, size=(300, 3)).astype(np.float32)
    y = np.c_[x[:, 0] * x[:, 1], np.abs(x[:, 2])].astype(np.float32)
    set_random_seed(6)
    model = Sequential([Dense(64, activation="relu"), Dense(2)])
    model.compile(optimizer=SGD(learning_rate=0.05, momentum=0.9), loss="mse")
    first = model.evaluate(x, y)
    model.fit(x, y, batch_size=32, epochs=150, verbose=0, seed=0)
    last = model.evaluate(x, y)
    assert last < 0.01, last
    assert last < first / 5


def test_multi_label_bce():
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, size=(400, 2)).astype(np.float32)
    y = np.c_[x[:, 0] > 0, x[:, 1] > 0, x[:, 0] ** 2 + x[:, 1] ** 2 < 0.5].astype(np.float32)
    set_random_seed(7)
    model = Sequential([Dense(32, activation="relu"), Dense(32, activation="relu"),
                        Dense(3, activation="sigmoid")])
    model.compile(optimizer=Adam(learning_rate=0.01), loss="binary_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=150, verbose=0, seed=0)
    loss, acc = model.evaluate(x, y)
    assert acc > 0.95, acc
    per_label = np.mean((model.predict(x) > 0.5) == (y == 1), axis=0)
    assert per_label.min() > 0.93, per_label
    # several labels on at once are predicted as such
    both = (y[:, 0] == 1) & (y[:, 1] == 1)
    assert np.mean(np.all((model.predict(x[both]) > 0.5)[:, :2], axis=1)) > 0.9


def test_multi_label_bce_from_logits():
    rng = np.random.default_rng(8)
    x = rng.uniform(-1, 1, size=(400, 2)).astype(np.float32)
    y = np.c_[x[:, 0] > 0, x[:, 0] + x[:, 1] > 0].astype(np.float32)
    set_random_seed(8)
    model = Sequential([Dense(16, activation="relu"), Dense(2)])
    model.compile(optimizer=Adam(learning_rate=0.02), loss=BinaryCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=100, verbose=0, seed=0)
    _, acc = model.evaluate(x, y)
    assert acc > 0.95, acc
    assert np.mean((model.predict(x) > 0) == (y == 1)) == pytest.approx(acc)


def _digits_like(n=1000, seed=0):
    """Two 20x20 "digit" templates with pixel noise: separable, like the course's 0/1
    images (1000 samples of 400 pixels in [0, 1])."""
    rng = np.random.default_rng(seed)
    img = np.zeros((2, 20, 20))
    img[0, 4:16, 5:7] = img[0, 4:16, 13:15] = img[0, 4:6, 5:15] = img[0, 14:16, 5:15] = 1  # 0
    img[1, 3:17, 9:11] = 1  # 1
    y = (np.arange(n) % 2).astype(np.float32)
    x = img.reshape(2, 400)[y.astype(int)] + rng.normal(0, 0.35, size=(n, 400))
    return np.clip(x, 0, 1).astype(np.float32), y


def test_course_network_400_25_15_1():
    X, Y = _digits_like()
    Y = Y.reshape(-1, 1)
    set_random_seed(1234)
    model = Sequential([
        Input(shape=(400,)),
        Dense(25, activation="sigmoid"),
        Dense(15, activation="sigmoid"),
        Dense(1, activation="sigmoid"),
    ], name="my_model")
    model.compile(loss=BinaryCrossentropy(), optimizer=Adam(0.001))
    model.fit(X, Y, epochs=100)
    prediction = model.predict(X[:10])
    yhat = (model.predict(X) >= 0.5).astype(int)
    assert np.mean(yhat == Y) > 0.99
    assert prediction.shape == (10, 1)
    assert model.evaluate(X, Y) < 0.05
    X_test, Y_test = _digits_like(200, seed=99)
    assert np.mean((model.predict(X_test) >= 0.5)[:, 0] == Y_test) > 0.98


def test_dropout_network_still_learns():
    x, y = spirals(seed=3)
    set_random_seed(9)
    model = Sequential([Dense(128, activation="relu"), Dropout(0.1),
                        Dense(64, activation="relu"), Dense(3)])
    model.compile(optimizer=Adam(learning_rate=0.01),
                  loss=SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=300, verbose=0, seed=0)
    _, acc = model.evaluate(x, y)
    assert acc > 0.9, acc


def test_training_is_deterministic_with_seeds():
    x, y = spirals(seed=4)

    def run():
        set_random_seed(10)
        m = Sequential([Dense(32, activation="relu"), Dropout(0.2), Dense(3)])
        m.compile(optimizer="adam", loss=SparseCategoricalCrossentropy(from_logits=True))
        h = m.fit(x, y, batch_size=16, epochs=5, verbose=0, seed=4)
        return m.get_weights(), h.history["loss"]
    (wa, la), (wb, lb) = run(), run()
    assert la == lb
    for a, b in zip(wa, wb):
        np.testing.assert_array_equal(a, b)


def test_float64_training_matches_float32_closely():
    x, y = spirals(seed=5)
    results = []
    for dtype in ("float32", "float64"):
        set_random_seed(11)
        m = Sequential([Dense(16, activation="tanh"), Dense(3)], dtype=dtype)
        m.compile(optimizer=SGD(0.05), loss=SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x, y, batch_size=32, epochs=5, verbose=0, seed=0)
        results.append(m.predict(x).astype(np.float64))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-3, atol=1e-4)
