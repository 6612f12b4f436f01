"""Hardening beyond tests/test_validation.py: inputs and settings that used to crash the
interpreter, raise the wrong exception or leave the model changed; numerics at the edges
(logits up to the float range, diverging runs, NaN/inf reaching the kernels); subnormal
floats (FTZ/DAZ inside fastnn, the caller's mode restored, every thread alike); and
bit-identical results whatever the thread count.

Each bad input is rejected with ValueError/TypeError naming the argument before any state
changes (checked with a snapshot of weights, optimizer state and compile settings).
"""
import math
import re
import textwrap
import time

import numpy as np
import pytest

import fastnn
from fastnn import Sequential, _kernels as K, set_random_seed
from fastnn.callbacks import EarlyStopping, TerminateOnNaN
from fastnn.layers import (Conv1D, Dense, Dropout, Flatten, GlobalAveragePooling1D, Input,
                           MaxPooling1D)
from fastnn.losses import (BinaryCrossentropy, CategoricalCrossentropy,
                           SparseCategoricalCrossentropy)
from fastnn.optimizers import SGD, Adam, RMSprop

N, F = 24, 4


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    fastnn.set_num_threads(None)


def data(seed=0, n=N):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, F)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.float32)


def dense_model(train=True):
    set_random_seed(0)
    model = Sequential([Dense(5, activation="relu"), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    if train:
        x, y = data()
        model.fit(x, y, batch_size=8, verbose=0, seed=0)
    return model


def conv_model():
    set_random_seed(0)
    model = Sequential([Conv1D(4, 3, activation="relu"), MaxPooling1D(2), Flatten(), Dense(3)])
    model.compile(optimizer="adam", loss=SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(1)
    model.fit(rng.standard_normal((N, 10, 2)), np.arange(N) % 3, verbose=0, seed=0)
    return model


def snapshot(model):
    opt = model.optimizer
    return (model.built, model.input_shape,
            [w.copy() for w in model.get_weights()] if model.built else None,
            opt, None if opt is None else opt.iterations,
            None if opt is None or opt.slots is None else [s.copy() for s in opt.slots],
            model.loss, list(model._metric_names), repr(opt))


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after[0] == before[0] and after[1] == before[1]
    if before[2] is not None:
        assert all(np.array_equal(a, b) for a, b in zip(after[2], before[2]))
    assert after[3] is before[3] and after[4] == before[4]
    if before[5] is not None:
        assert all(np.array_equal(a, b) for a, b in zip(after[5], before[5]))
    assert after[6] is before[6] and after[7] == before[7] and after[8] == before[8]


def rejected(call, name, model=None, contains=()):
    """call() raises ValueError/TypeError naming `name` and leaves `model` unchanged."""
    before = None if model is None else snapshot(model)
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    message = str(info.value)
    assert re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message), message
    for fragment in contains:
        assert fragment in message, message
    if model is not None:
        assert_unchanged(model, before)
    return message


# ---- bad inputs and settings -------------------------------------------------------------

def _bad_x_cases():
    x, _ = data()
    return {
        "scalar": (np.float32(1.0), ("shape ()",)),
        "python scalar": (3.0, ("shape ()",)),
        "structured": (np.zeros(N, dtype=[("a", "f4"), ("b", "f4"), ("c", "f4"), ("d", "f4")]),
                       ("structured",)),
        "datetime": (np.zeros((N, F), dtype="M8[s]"), ("datetime",)),
        "timedelta": (np.zeros((N, F), dtype="m8[s]"), ("timedelta",)),
        "bytes": (np.array([[b"1"] * F] * N), ("bytes",)),
        "None": (None, ()),
        "dict": ({"x": x}, ("object",)),
        "zero width": (np.zeros((N, 0), np.float32), ("(24, 0)",)),
        "longdouble overflow": (np.full((N, F), np.finfo(np.longdouble).max, np.longdouble),
                                ("overflows float32",)),
        "float16 inf": (np.full((N, F), np.inf, np.float16), ("not finite",)),
        "nan in last element": (np.where(np.arange(N * F).reshape(N, F) == N * F - 1, np.nan, x),
                                ("x[23, 3]",)),
    }


@pytest.mark.parametrize("case", list(_bad_x_cases()))
@pytest.mark.parametrize("method", ["fit", "predict", "evaluate"])
def test_more_bad_x_is_rejected_before_any_change(case, method):
    xb, contains = _bad_x_cases()[case]
    model = dense_model()
    y = np.zeros(N, np.float32)
    call = {"fit": lambda: model.fit(xb, y, verbose=0), "predict": lambda: model.predict(xb),
            "evaluate": lambda: model.evaluate(xb, y)}[method]
    rejected(call, "x", model, contains)


def _bad_conv_x_cases():
    x = np.random.default_rng(1).standard_normal((N, 10, 2))
    nan = x.copy()
    nan[3, 4, 1] = np.nan
    return {"steps": x[:, :9], "channels": x[:, :, :1], "one channel 2-D": x[:, :, 0],
            "rank 4": x[..., None], "rank 1": x[:, 0, 0], "nan": nan,
            "complex": x.astype(np.complex64)}


@pytest.mark.parametrize("case", list(_bad_conv_x_cases()))
def test_bad_conv_input_is_rejected(case):
    model = conv_model()
    xb = _bad_conv_x_cases()[case]
    rejected(lambda: model.predict(xb), "x", model)
    rejected(lambda: model.fit(xb, np.arange(len(xb)) % 3, verbose=0), "x", model)


@pytest.mark.parametrize("labels,what", [
    (np.full(N, 2.0000001), "whole-number"), (np.full(N, -1, np.int8), "[0, 3)"),
    (np.full(N, 3, np.uint64), "[0, 3)"), (np.full(N, 2**62, np.int64), "[0, 3)"),
    (np.full(N, np.inf), "finite"), (np.full(N, 1e300), "1e+300"),
    (np.arange(N).astype(np.complex128), "complex"), (np.full(N, "1"), "string"),
])
def test_bad_sparse_labels_on_a_conv_model(labels, what):
    model = conv_model()
    x = np.random.default_rng(1).standard_normal((N, 10, 2))
    rejected(lambda: model.fit(x, labels, verbose=0), "y", model, (what,))
    rejected(lambda: model.evaluate(x, labels), "y", model, (what,))
    rejected(lambda: model.fit(x, np.arange(N) % 3, validation_data=(x, labels), verbose=0),
             "validation_data[1]", model)


@pytest.mark.parametrize("targets", [np.full((N, 1), 1.0 + 1e-6), np.full((N, 1), -1e-30),
                                     np.full((N, 1), 255, np.uint8)])
def test_bce_targets_just_outside_unit_interval(targets):
    model = dense_model()
    rejected(lambda: model.fit(data()[0], targets, verbose=0), "y", model, ("[0, 1]",))


@pytest.mark.parametrize("size", [2**31 - 1, 2**31, 2**40, 10**30])
def test_huge_batch_size_is_one_batch_of_everything(size):
    """batch_size beyond the data (and beyond a C int) used to raise OverflowError after
    the model had started changing; it is one batch of all samples, as in Keras."""
    x, y = data()
    results = []
    for batch in (N, size):
        model = dense_model(train=False)
        hist = model.fit(x, y, batch_size=batch, epochs=2, verbose=0, seed=1,
                         validation_split=0.25)
        results.append((model.get_weights(), hist.history, model.predict(x, batch_size=batch),
                        model.evaluate(x, y, batch_size=batch)))
    (w1, h1, p1, e1), (w2, h2, p2, e2) = results
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert h1 == h2 and np.array_equal(p1, p2) and e1 == e2


@pytest.mark.parametrize("n", [1025, 10**5, 2**31, 2**40])
def test_absurd_thread_counts_are_rejected(n):
    """set_num_threads(100000) used to be accepted and then kill the interpreter inside
    the OpenMP runtime (segmentation fault) at the next fit."""
    fastnn.set_num_threads(2)
    rejected(lambda: fastnn.set_num_threads(n), "n", contains=(str(n), "1024"))
    assert fastnn.get_num_threads() == 2
    with pytest.raises(ValueError):
        with fastnn.num_threads(n):
            pass
    assert fastnn.get_num_threads() == 2


def test_huge_omp_num_threads_is_capped(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "100000")
    assert fastnn.get_num_threads() == fastnn.config.MAX_THREADS


def test_max_threads_trains_and_predicts():
    """The largest allowed count runs (the kernels use fewer where the work is small)."""
    x, y = data()
    model = dense_model()
    expected = model.predict(x)
    with fastnn.num_threads(fastnn.config.MAX_THREADS):
        assert np.array_equal(model.predict(x), expected)


@pytest.mark.parametrize("make,name", [
    (lambda: Dense(2**31), "units"), (lambda: Dense(10**12), "units"),
    (lambda: Conv1D(2**31, 3), "filters"), (lambda: Conv1D(2, 2**40), "kernel_size"),
    (lambda: Conv1D(2, 3, strides=2**40), "strides"), (lambda: MaxPooling1D(2**33), "pool_size"),
    (lambda: Input((2**31,)), "shape"), (lambda: Input((2**16, 2**16)), "shape"),
    (lambda: Dense(3, input_shape=(2**40,)), "input_shape"),
])
def test_sizes_beyond_a_c_int_are_rejected_at_construction(make, name):
    rejected(make, name, contains=("2**31 - 1",))


def test_set_weights_not_a_list_names_weights():
    model = dense_model()
    rejected(lambda: model.set_weights(None), "weights", model)
    rejected(lambda: model.set_weights(5), "weights", model)
    rejected(lambda: model.set_weights(np.float32(1.0)), "weights", model)
    w = model.get_weights()
    rejected(lambda: model.set_weights([w[0][None]] + w[1:]), "weights[0]", model, ("(1, 4, 5)",))
    rejected(lambda: model.set_weights(w[:1] + [np.float32(0)] + w[2:]), "weights[1]", model,
             ("()",))
    nan = [a.copy() for a in w]
    nan[2][0, 0] = np.nan
    rejected(lambda: model.set_weights(nan), "weights[2]", model, ("finite",))


def test_a_single_callback_without_a_list_is_accepted():
    x, y = data()
    model = dense_model()
    stop = EarlyStopping(monitor="loss", patience=0)
    hist = model.fit(x, y, epochs=3, verbose=0, callbacks=stop)
    assert len(hist.history["loss"]) >= 1
    rejected(lambda: model.fit(x, y, verbose=0, callbacks=5), "callbacks", model)


def test_valid_but_unusual_inputs_are_read_as_their_values():
    """Byte-swapped, masked, memory-mapped, bool and read-only inputs on the fast predict
    path give the values of the plain float32 array (never a misread buffer)."""
    x, y = data()
    model = dense_model()
    expected = model.predict(x)
    swapped = x.astype(">f4")
    ro = x.copy()
    ro.setflags(write=False)
    masked = np.ma.masked_array(x, mask=np.zeros_like(x, bool))
    for variant in (swapped, ro, masked, x.astype(np.float64), x.T.copy().T, x[::-1][::-1]):
        assert np.array_equal(model.predict(variant), expected)
    b = x > 0
    assert np.array_equal(model.predict(b), model.predict(b.astype(np.float32)))


# ---- numerics ----------------------------------------------------------------------------

def bce_exact(z, y):
    z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


@pytest.mark.parametrize("dtype,big", [("float32", 1e4), ("float32", 1e30), ("float32", 3e38),
                                       ("float64", 1e4), ("float64", 1e300)])
def test_fused_losses_exact_for_logits_up_to_the_float_range(dtype, big):
    """A sigmoid or softmax output trained with BCE or (sparse) categorical CE reports the
    exact loss for logits up to the largest the dtype holds (float32 sums in double
    now: lse - z used to overflow to inf beyond 1.7e38)."""
    x = np.array([[1.0], [-1.0], [1.0], [-1.0], [0.5]], dtype=dtype)
    yb = np.array([1, 1, 0, 0, 1], dtype=dtype)
    model = Sequential([Dense(1, activation="sigmoid")], dtype=dtype)
    model.build((1,))
    model.set_weights([np.full((1, 1), big), np.zeros(1)])
    model.compile(optimizer=SGD(0.0), loss=BinaryCrossentropy())
    z = (x.astype(np.float64) * np.float64(np.array(big, dtype)))
    assert model.evaluate(x, yb) == pytest.approx(bce_exact(z, yb[:, None]), rel=1e-6)

    labels = np.array([1, 0, 1, 0, 1])
    kernel = np.array([[big, -big]], dtype=dtype)
    for loss, y in ((SparseCategoricalCrossentropy(), labels),
                    (CategoricalCrossentropy(), np.eye(2)[labels]),
                    (SparseCategoricalCrossentropy(from_logits=True), labels)):
        act = None if getattr(loss, "from_logits", False) else "softmax"
        model = Sequential([Dense(2, activation=act)], dtype=dtype)
        model.build((1,))
        model.set_weights([kernel, np.zeros(2)])
        model.compile(optimizer=SGD(0.0), loss=loss)
        zz = x.astype(np.float64) @ kernel.astype(np.float64)
        exact = np.mean(np.logaddexp(zz[:, 0], zz[:, 1]) - zz[np.arange(5), labels])
        value = model.evaluate(x, y)
        assert math.isfinite(value) and value == pytest.approx(exact, rel=1e-6), (loss, value)
        hist = model.fit(x, y, verbose=0, batch_size=5)
        assert hist.history["loss"][0] == pytest.approx(exact, rel=1e-6)
        assert all(np.isfinite(w).all() for w in model.get_weights())


def test_mse_of_huge_float32_predictions_is_finite():
    """(p - y)^2 is squared in double: 1e30 predictions give 1e60, not inf."""
    x = np.ones((4, 1), np.float32)
    model = Sequential([Dense(1)])
    model.build((1,))
    model.set_weights([np.full((1, 1), 1e30, np.float32), np.zeros(1, np.float32)])
    model.compile(optimizer=SGD(0.0), loss="mse")
    assert model.evaluate(x, np.zeros(4)) == pytest.approx(1e60, rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(K.LOSSES))
@pytest.mark.parametrize("from_logits", [False, True])
def test_loss_kernels_on_inf_and_nan_predictions_report_without_crashing(name, from_logits,
                                                                          dtype):
    """What a diverged network feeds the loss: NaN predictions give a NaN loss, +-inf
    logits a NaN or inf one; never a crash or an out-of-range read. (Probabilities are
    normalized and clipped to [1e-7, 1 - 1e-7] as Keras does, so an inf "probability" may
    give a finite loss there, as it does in Keras.)"""
    B, Kc = 64, 3
    rng = np.random.default_rng(0)
    for bad in (np.inf, -np.inf, np.nan):
        pred = rng.uniform(0.1, 0.9, size=(B, Kc)).astype(dtype)
        pred[5, 1] = bad
        y = (rng.integers(0, Kc, (B, 1)) if name == "sparse_categorical_crossentropy"
             else np.eye(Kc)[rng.integers(0, Kc, B)]).astype(dtype)
        for nthreads in (1, 2):
            value, grad = K.loss(K.LOSSES[name], pred, y, from_logits=from_logits,
                                 nthreads=nthreads)
            assert grad.shape == pred.shape
            # (a -inf logit is a zero probability: finite and exact unless it is the target's)
            if np.isnan(bad) or name == "mean_squared_error" or (from_logits and bad > 0):
                assert not math.isfinite(value), (bad, value)
        labels = rng.integers(0, Kc, (B, 1)).astype(dtype)
        onehot = np.eye(Kc, dtype=dtype)[labels[:, 0].astype(int)]
        for metric, code in K.METRICS.items():
            total = K.metric_sum(code, pred, labels if metric.startswith("sparse") else onehot)
            assert 0 <= total <= B or not math.isfinite(total) or "error" in metric


@pytest.mark.parametrize("optimizer", [lambda: SGD(1e3), lambda: SGD(1e3, momentum=0.9),
                                       lambda: Adam(1e3), lambda: RMSprop(1e3)])
@pytest.mark.parametrize("loss,last", [("mse", None), ("binary_crossentropy", "sigmoid"),
                                       ("sparse_categorical_crossentropy", "softmax")])
def test_diverging_run_is_reported_not_crashed(optimizer, loss, last, capsys, tmp_path):
    """Learning rate 1e3: the run ends (TerminateOnNaN stops it at the first NaN/inf
    epoch), the NaN/inf loss is in the History, nothing raises or warns."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)).astype(np.float32) * 10
    y = x @ rng.standard_normal((5, 1)).astype(np.float32) * 100
    units = 1
    if loss == "binary_crossentropy":
        y = (y > 0).astype(np.float32)
    elif loss.startswith("sparse"):
        y, units = (y[:, 0] > 0).astype(int), 2
    set_random_seed(0)
    model = Sequential([Dense(16, activation="relu"), Dense(16, activation="relu"),
                        Dense(units, activation=last)])
    model.compile(optimizer=optimizer(), loss=loss)
    with np.errstate(all="raise"):
        hist = model.fit(x, y, epochs=30, batch_size=16, verbose=2, callbacks=[TerminateOnNaN()])
    losses = hist.history["loss"]
    out = capsys.readouterr().out
    if all(math.isfinite(v) for v in losses):
        assert len(losses) == 30  # ran to the end: it never went NaN
        return
    first_bad = next(i for i, v in enumerate(losses) if not math.isfinite(v))
    assert len(losses) == first_bad + 1, losses  # stopped right after the bad epoch
    assert f"Epoch {first_bad + 1}: Invalid loss, terminating training" in out
    assert "nan" in out or "inf" in out  # the progress line shows it
    model.predict(x)  # NaN weights still predict (NaN), evaluate and summarize
    model.evaluate(x, y)
    if not all(np.isfinite(w).all() for w in model.get_weights()):
        with pytest.raises(ValueError, match="NaN or inf"):  # refused, not written
            model.save(tmp_path / "diverged.fastnn")
        assert not (tmp_path / "diverged.fastnn").exists()


def test_plain_sgd_at_lr_1e3_goes_nan_and_terminate_on_nan_stops_it():
    """The issue's example: SGD(1e3) on a regression diverges to NaN in the first epoch;
    without the callback all epochs run with NaN losses (no crash), with it one does."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    y = x @ rng.standard_normal((5, 1)).astype(np.float32)
    runs = []
    for callbacks in ([], [TerminateOnNaN()]):
        set_random_seed(0)
        model = Sequential([Dense(16, activation="relu"), Dense(1)])
        model.compile(optimizer=SGD(1e3), loss="mse", metrics=["mae"])
        runs.append(model.fit(x, y, epochs=5, verbose=0, callbacks=callbacks).history)
    assert len(runs[0]["loss"]) == 5 and all(math.isnan(v) for v in runs[0]["loss"])
    assert len(runs[1]["loss"]) == 1 and math.isnan(runs[1]["loss"][0])
    assert math.isnan(runs[1]["mae"][0])


def test_terminate_on_nan_keras_semantics():
    class Model:
        stop_training = False
    cb = TerminateOnNaN()
    cb.set_model(Model())
    cb.on_epoch_end(0, {"loss": 1.0})
    assert not cb.model.stop_training
    cb.on_batch_end(3, {"loss": float("inf")})
    assert cb.model.stop_training
    cb.model.stop_training = False
    cb.on_epoch_end(1, {"loss": np.float32("nan")})
    assert cb.model.stop_training
    cb.model.stop_training = False
    cb.on_epoch_end(2, {})  # no loss: nothing to judge
    assert not cb.model.stop_training
    assert "TerminateOnNaN" in dir(fastnn.callbacks)


# ---- subnormals ---------------------------------------------------------------------------

TINY32 = np.float32(1e-38)  # normal; half of it is subnormal


def _subnormals_work():
    return (TINY32 * np.float32(0.5)) != 0 and (np.float64(1e-308) * 0.5) != 0


def test_callers_floating_point_mode_is_restored_after_fastnn_calls():
    """fastnn sets flush-to-zero and denormals-are-zero inside its compiled work only:
    afterwards the caller's arithmetic still produces subnormals."""
    assert _subnormals_work()
    x, y = data(n=512)
    model = dense_model()
    model.fit(x, y, epochs=2, verbose=0)
    assert _subnormals_work()
    model.predict(x)
    model.evaluate(x, y)
    assert _subnormals_work()
    with fastnn.num_threads(2):
        model.fit(np.repeat(x, 100, axis=0), np.repeat(y, 100), batch_size=4096, verbose=0)
    assert _subnormals_work()
    for nt in (1, 2):
        K.adam_update(np.ones(40000, np.float32), np.ones(40000, np.float32),
                      np.zeros(40000, np.float32), np.zeros(40000, np.float32), 1, 0.1, 0.9,
                      0.999, 1e-7, nthreads=nt)
    assert _subnormals_work()


@pytest.mark.parametrize("dtype,sub", [(np.float32, 1e-40), (np.float64, 1e-310)])
def test_adam_state_full_of_subnormals_is_flushed(dtype, sub):
    """Dead units' Adam moments decay into subnormals; the kernel reads them as zero
    (DAZ) and writes none (FTZ), so the arithmetic never meets one (x86: the slow path)."""
    n = 1000
    w = np.ones(n, dtype)
    g = np.full(n, sub, dtype)
    m, v = np.full(n, sub, dtype), np.full(n, sub, dtype)
    assert m[0] != 0
    K.adam_update(w, g, m, v, 10, 1e-3, 0.9, 0.999, 1e-7)
    assert np.all(m == 0) and np.all(v == 0) and np.all(w == 1)


def test_subnormal_adam_runs_as_fast_as_normal():
    """The measurement behind the FTZ/DAZ design: Adam on subnormal-filled state takes
    no longer than on normal state. Medians of interleaved runs; a generous bound (1.5x)
    and a retry, since other processes share the machine."""
    n = 1 << 18
    rng = np.random.default_rng(0)

    def case(fill):
        w = rng.standard_normal(n).astype(np.float32)
        arrays = [np.full(n, fill, np.float32) for _ in range(3)]
        return lambda: K.adam_update(w, arrays[0], arrays[1], arrays[2], 10, 1e-3, 0.9,
                                     0.999, 1e-7, nthreads=1)

    normal, subnormal = case(1e-3), case(1e-40)
    for attempt in range(3):
        times = {"normal": [], "subnormal": []}
        for _ in range(15):
            for name, fn in (("normal", normal), ("subnormal", subnormal)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        ratio = np.median(times["subnormal"]) / np.median(times["normal"])
        if ratio < 1.5:
            return
    pytest.fail(f"subnormal Adam state is {ratio:.2f}x slower than normal state")


SUBNORMAL_THREADS_SCRIPT = textwrap.dedent("""
    import numpy as np, fastnn
    from fastnn import _kernels as K
    from fastnn.layers import Dense, Input, MaxPooling1D
    # Start the OpenMP worker threads from a context without FTZ/DAZ (a direct kernel
    # call): they keep that mode, as threads inherit it from their creator.
    K.activation_forward(np.ones((1000, 100)), 1, nthreads=2)
    K.dense_forward(np.ones((256, 64), np.float32), np.ones((64, 512), np.float32), None, 0,
                    nthreads=2)
    dense = fastnn.Sequential([Input((64,)), Dense(512, kernel_initializer="ones",
                               activation="relu"), Dense(1, kernel_initializer="ones")])
    x = np.full((256, 64), 0.9e-38, np.float32)      # subnormal; 64 of them sum to a normal
    pool = fastnn.Sequential([Input((128, 4)), MaxPooling1D(2)])
    xp = np.zeros((256, 128, 4), np.float32)
    xp[:, 1::2] = 1e-41                              # window maxima tie at 0 under DAZ
    for nt in (1, 2):
        with fastnn.num_threads(nt):
            out = dense.predict(x, batch_size=256)
            pooled = pool.predict(xp, batch_size=256)
        print(nt, np.unique(out).tolist(), np.unique(pooled).tolist())
""")


def test_subnormals_are_flushed_alike_in_every_thread(run_python):
    """Found by this hardening: the GEMM panels and max pooling ran on OpenMP workers
    without FTZ/DAZ when those workers had been started outside fastnn's compiled work,
    so rows computed by a worker kept subnormals that rows of the calling thread flushed:
    results depended on the thread count and the process's history. In a fresh process
    (so the worker threads' mode is known), 1 and 2 threads must agree."""
    result = run_python(SUBNORMAL_THREADS_SCRIPT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    one, two = (line.split(" ", 1)[1] for line in lines)
    assert one == two, lines
    assert one == "[0.0] [0.0]", lines  # inputs read as zero (DAZ) everywhere


# ---- reproducibility across thread counts ------------------------------------------------------

def _conv_fit(threads, seed=11):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((256, 64, 8)).astype(np.float32)
    y = rng.integers(0, 5, size=256)
    set_random_seed(3)
    model = Sequential([Conv1D(32, 5, strides=2, padding="same", activation="relu"),
                        Dropout(0.2), MaxPooling1D(2), Conv1D(16, 3, activation="tanh"),
                        GlobalAveragePooling1D(), Dense(5, activation="softmax")])
    model.compile(optimizer=Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    with fastnn.num_threads(threads):
        hist = model.fit(x, y, batch_size=128, epochs=2, verbose=0, seed=seed)
        pred = model.predict(x)
    return model.get_weights(), hist.history, pred


def test_conv_model_bit_identical_for_any_thread_count():
    """Same seed and data: identical weights, losses and predictions with 1, 2, 3 and 8
    threads (8 > this machine's CPUs). Every kernel splits work by output and GEMMs are
    cut into panels fixed by the sizes, so no sum's order depends on the thread count."""
    w1, h1, p1 = _conv_fit(1)
    for threads in (2, 3, 8):
        w, h, p = _conv_fit(threads)
        assert all(np.array_equal(a, b) for a, b in zip(w1, w)), threads
        assert h == h1 and np.array_equal(p, p1), threads
    w2, _, _ = _conv_fit(2)  # and run after run
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
