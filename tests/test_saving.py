"""Persistence: model.save / fastnn.load_model (the format in fastnn/saving.py), pickling
and copy.deepcopy. A saved model comes back with its architecture, weights, dtype, compile
settings and optimizer state, so training resumes bit-identically; writes are atomic; a
damaged or foreign file raises ValueError (a missing one FileNotFoundError) and never runs
code, crashes or hangs."""
import contextlib
import copy
import io
import json
import os
import pickle
import random
import signal
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import Sequential, load_model, saving, set_random_seed
from fastnn import config as fnconfig
from fastnn.callbacks import Callback, ModelCheckpoint
from fastnn.layers import (Activation, Conv1D, Dense, Dropout, Flatten, GlobalAveragePooling1D,
                           Input, Layer, LeakyReLU, MaxPooling1D)
from fastnn.losses import (BinaryCrossentropy, CategoricalCrossentropy, MeanSquaredError,
                           SparseCategoricalCrossentropy)
from fastnn.optimizers import SGD, Adam, RMSprop


@pytest.fixture(autouse=True)
def _restore_globals():
    floatx = fastnn.floatx()
    yield
    fastnn.set_floatx(floatx)
    fastnn.set_num_threads(None)


# ---- helpers ----------------------------------------------------------------------------

def dense_data(n=120, features=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(np.float64)
    return x, y


def conv_data(n=90, steps=20, channels=3, classes=4, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, steps, channels))
    y = rng.integers(0, classes, size=n)
    return x, y


OPTIMIZERS = {
    "sgd": lambda: SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
    "adam": lambda: Adam(learning_rate=0.01),
    "rmsprop": lambda: RMSprop(learning_rate=0.005, momentum=0.5),
}


def dense_model(dtype="float32", optimizer="adam", seed=0):
    set_random_seed(seed)
    model = Sequential([Input((6,)), Dense(16, activation="relu"), Dropout(0.25),
                        Dense(8, activation="tanh", kernel_initializer="he_normal"),
                        LeakyReLU(0.1), Dense(1, activation="sigmoid")],
                       name="dense_net", dtype=dtype)
    model.compile(optimizer=OPTIMIZERS[optimizer](), loss="binary_crossentropy",
                  metrics=["accuracy", "mse"])
    return model


def conv_model(dtype="float32", optimizer="adam", seed=0, padding="same"):
    set_random_seed(seed)
    model = Sequential([Input((20, 3)),
                        Conv1D(8, 3, strides=2, padding=padding, activation="relu"),
                        MaxPooling1D(2),
                        Conv1D(6, 2, activation="leaky_relu", use_bias=False),
                        Activation("tanh"), Dropout(0.1), Flatten(),
                        Dense(4, activation="softmax")], dtype=dtype)
    model.compile(optimizer=OPTIMIZERS[optimizer](), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y) for x, y in zip(wa, wb))


def layer_configs(model):
    return [(type(layer).__name__, layer.get_config()) for layer in model.layers]


def assert_same_model(a, b):
    """Everything a save must restore."""
    assert type(b) is Sequential
    assert b.name == a.name and b.dtype == a.dtype
    assert b.input_shape == a.input_shape and b.built == a.built
    assert layer_configs(b) == layer_configs(a)
    assert [layer.name for layer in b.layers] == [layer.name for layer in a.layers]
    assert same_weights(a, b)
    assert b.compiled == a.compiled
    if a.compiled:
        assert type(b.optimizer) is type(a.optimizer)
        assert b.optimizer.get_config() == a.optimizer.get_config()
        assert b.optimizer.iterations == a.optimizer.iterations
        if a.optimizer.slots is None:
            assert b.optimizer.slots is None
        else:
            for sa, sb in zip(a.optimizer.slots, b.optimizer.slots):
                assert sb.dtype == sa.dtype and np.array_equal(sa, sb)
                assert not np.shares_memory(sa, sb)
        assert type(b.loss) is type(a.loss)
        if a.loss is not None:
            assert b.loss.get_config() == a.loss.get_config()
        assert b._metric_names == a._metric_names
    for pa, pb in zip(a.weights, b.weights):
        assert not np.shares_memory(pa, pb)


@contextlib.contextmanager
def time_limit(seconds):
    """Turns a hang into a test failure (SIGALRM, main thread on POSIX)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def members_of(path):
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def write_members(path, members):
    """A well-formed zip (valid CRCs) holding these members: damage the checks see."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def npy_bytes(arr, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


@pytest.fixture
def trained(tmp_path):
    """A trained dense model, its file, and data."""
    model = dense_model()
    x, y = dense_data()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=3)
    path = tmp_path / "model.fastnn"
    model.save(path)
    return model, path, x, y


def check_loaded_is_valid(model):
    """A model that loaded from a damaged file must still be a working model."""
    assert isinstance(model, Sequential)
    for w in model.get_weights():
        assert np.isfinite(w).all()
    if model.built:
        shape = model.input_shape[1:]
        out = model.predict(np.random.default_rng(0).normal(size=(3,) + shape))
        assert out.shape[0] == 3


# ---- round trips ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_save_load_restores_architecture_weights_compile_and_optimizer(tmp_path, dtype, optimizer):
    model = dense_model(dtype, optimizer)
    x, y = dense_data()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=5)
    path = tmp_path / "m.fastnn"
    model.save(path)
    loaded = load_model(path)
    assert_same_model(model, loaded)
    assert loaded.predict(x).dtype == np.dtype(dtype)
    assert np.array_equal(model.predict(x), loaded.predict(x))
    assert model.evaluate(x, y, return_dict=True) == loaded.evaluate(x, y, return_dict=True)
    load_model(str(path))  # str and PathLike both work


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_fit_save_load_fit_is_bit_identical_to_uninterrupted(tmp_path, dtype, optimizer):
    """fit(2 epochs, seed=s1); save; load; fit(2 epochs, seed=s2) gives the very weights and
    optimizer state of the same two fit calls on one model (fit derives each epoch's
    shuffling and dropout seed from the call's seed and the epoch number)."""
    x, y = dense_data()
    reference = dense_model(dtype, optimizer)
    reference.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=11)
    reference.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=12)

    resumed = dense_model(dtype, optimizer)
    resumed.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=11)
    resumed.save(tmp_path / "m.fastnn")
    del resumed
    resumed = load_model(tmp_path / "m.fastnn")
    history = resumed.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=12)

    assert same_weights(reference, resumed)
    assert resumed.optimizer.iterations == reference.optimizer.iterations == 4 * 8
    for a, b in zip(reference.optimizer.slots, resumed.optimizer.slots):
        assert np.array_equal(a, b)
    assert np.isfinite(history.history["loss"]).all()


def test_resume_with_initial_epoch_matches_one_four_epoch_fit(tmp_path):
    """Keras-style resumption: fit(epochs=4, initial_epoch=2, seed=s) after a reload continues
    a fit(epochs=2, seed=s) exactly as fit(epochs=4, seed=s) would (without shuffling, whose
    order carries over from epoch to epoch within one call)."""
    x, y = dense_data()
    reference = dense_model(optimizer="adam")
    reference.fit(x, y, epochs=4, batch_size=16, verbose=0, seed=7, shuffle=False)

    first = dense_model(optimizer="adam")
    first.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=7, shuffle=False)
    first.save(tmp_path / "ckpt.fastnn")
    resumed = load_model(tmp_path / "ckpt.fastnn")
    resumed.fit(x, y, epochs=4, initial_epoch=2, batch_size=16, verbose=0, seed=7, shuffle=False)
    assert same_weights(reference, resumed)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conv1d_model_round_trip_and_resume(tmp_path, padding, dtype):
    x, y = conv_data()
    reference = conv_model(dtype, "rmsprop", padding=padding)
    reference.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=1)
    reference.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=2)

    model = conv_model(dtype, "rmsprop", padding=padding)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=1)
    model.save(tmp_path / "conv.keras")
    loaded = load_model(tmp_path / "conv.keras")
    assert_same_model(model, loaded)
    assert loaded.layers[0].get_weights()[0].shape == (3, 3, 8)  # Keras' kernel layout
    assert np.array_equal(model.predict(x), loaded.predict(x))
    loaded.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=2)
    assert same_weights(reference, loaded)


def test_conv1d_global_average_pooling_round_trip(tmp_path):
    set_random_seed(4)
    model = Sequential([Conv1D(5, 4, activation="relu", input_shape=(12, 2)),
                        GlobalAveragePooling1D(), Dense(3)])
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(10, 12, 2))
    model.fit(x, np.zeros((10, 3)), epochs=1, verbose=0, seed=0)
    model.save(tmp_path / "g.fastnn")
    loaded = load_model(tmp_path / "g.fastnn")
    assert_same_model(model, loaded)
    assert np.array_equal(model.predict(x), loaded.predict(x))


def test_compile_settings_round_trip(tmp_path):
    set_random_seed(0)
    model = Sequential([Input((5,)), Dense(3)])
    model.compile(optimizer=SGD(learning_rate=0.3, momentum=0.25, nesterov=True),
                  loss=CategoricalCrossentropy(from_logits=True),
                  metrics=["categorical_accuracy", "mae"])
    model.save(tmp_path / "c.fastnn")
    loaded = load_model(tmp_path / "c.fastnn")
    assert loaded.loss.from_logits is True and isinstance(loaded.loss, CategoricalCrossentropy)
    assert loaded.optimizer.get_config() == {"learning_rate": 0.3, "momentum": 0.25,
                                             "nesterov": True}
    assert loaded._metric_names == ["categorical_accuracy", "mae"]
    assert loaded.optimizer.slots is None and loaded.optimizer.iterations == 0
    x = np.random.default_rng(1).normal(size=(20, 5))
    y = np.eye(3)[np.arange(20) % 3]
    model.fit(x, y, epochs=2, verbose=0, seed=9)
    loaded.fit(x, y, epochs=2, verbose=0, seed=9)
    assert same_weights(model, loaded)


def test_compiled_without_loss_round_trips(tmp_path):
    model = Sequential([Input((3,)), Dense(2)])
    model.compile(optimizer="adam")
    model.save(tmp_path / "a.fastnn")
    loaded = load_model(tmp_path / "a.fastnn")
    assert loaded.compiled and loaded.loss is None and isinstance(loaded.optimizer, Adam)


@pytest.mark.parametrize("how", ["file", "pickle", "deepcopy"])
def test_unbuilt_uncompiled_model_round_trips(tmp_path, how):
    model = Sequential([Dense(4, activation="relu"), Dropout(0.5), Dense(2)], name="later")
    restored = roundtrip(model, how, tmp_path)
    assert not restored.built and not restored.compiled and restored.input_shape is None
    assert layer_configs(restored) == layer_configs(model)
    # It builds on first use as any new model does.
    restored.compile("adam", "mse")
    restored.fit(np.ones((8, 7)), np.zeros((8, 2)), epochs=1, verbose=0, seed=0)
    assert restored.built and restored.input_shape == (None, 7)


@pytest.mark.parametrize("how", ["file", "pickle", "deepcopy"])
def test_unbuilt_compiled_and_input_only_models_round_trip(tmp_path, how):
    model = Sequential([Dense(3)])
    model.compile(RMSprop(learning_rate=0.01), "mse", metrics=["mae"])
    restored = roundtrip(model, how, tmp_path)
    assert not restored.built and restored.compiled
    assert restored.optimizer.get_config() == model.optimizer.get_config()
    empty = Sequential([Input((4, 2))])
    restored = roundtrip(empty, how, tmp_path)
    assert restored.layers == [] and restored.input_shape == (None, 4, 2)
    restored.add(Flatten())
    restored.add(Dense(1))
    assert restored.built and restored.output_shape == (None, 1)


@pytest.mark.parametrize("how", ["file", "pickle", "deepcopy"])
def test_built_uncompiled_model_round_trips(tmp_path, how):
    set_random_seed(2)
    model = Sequential([Input((4,)), Dense(3, activation="softmax")])
    restored = roundtrip(model, how, tmp_path)
    assert_same_model(model, restored)
    assert not restored.compiled
    x = np.random.default_rng(0).normal(size=(5, 4))
    assert np.array_equal(model.predict(x), restored.predict(x))


def roundtrip(model, how, tmp_path):
    if how == "file":
        model.save(tmp_path / "r.fastnn")
        return load_model(tmp_path / "r.fastnn")
    if how == "pickle":
        return pickle.loads(pickle.dumps(model))
    return copy.deepcopy(model)


# ---- pickle and deepcopy ----------------------------------------------------------------

@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_pickle_and_deepcopy_give_an_equal_independent_model(how, kind):
    if kind == "dense":
        model, (x, y) = dense_model("float64", "sgd"), dense_data()
    else:
        model, (x, y) = conv_model("float32", "adam"), conv_data()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=1)
    twin = {"pickle": lambda m: pickle.loads(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL)),
            "deepcopy": copy.deepcopy, "copy": copy.copy}[how](model)
    assert twin is not model
    assert_same_model(model, twin)
    assert np.array_equal(model.predict(x), twin.predict(x))

    # Independent: training one leaves the other's weights and optimizer state alone.
    before_w = twin.get_weights()
    before_slots = [s.copy() for s in twin.optimizer.slots]
    before_it = twin.optimizer.iterations
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(before_w, twin.get_weights()))
    assert all(np.array_equal(a, b) for a, b in zip(before_slots, twin.optimizer.slots))
    assert twin.optimizer.iterations == before_it

    # And it continues training identically.
    twin.fit(x, y, epochs=1, batch_size=16, verbose=0, seed=2)
    assert same_weights(model, twin)
    assert twin.optimizer.iterations == model.optimizer.iterations


def test_pickle_contains_no_fastnn_objects_but_the_model():
    """The pickle holds the saved state (JSON-able config and arrays), not layer objects."""
    model, (x, y) = dense_model(), dense_data()
    state = model.__getstate__()
    config, arrays = state
    json.dumps(config)  # plain data
    assert all(isinstance(a, np.ndarray) for a in arrays.values())


def test_deepcopy_in_a_container_and_pickle_of_nonfinite_weights():
    set_random_seed(0)
    model = Sequential([Input((2,)), Dense(1)])
    copies = copy.deepcopy({"a": model, "b": [model]})
    assert copies["a"] is copies["b"][0] and copies["a"] is not model
    # Pickling is a process's own business: it keeps even non-finite weights.
    model.weights[0][...] = np.nan  # as a diverged fit leaves them (set_weights refuses)
    restored = pickle.loads(pickle.dumps(model))
    assert np.isnan(restored.get_weights()[0]).all()


def test_loading_uses_no_random_numbers_nor_default_layer_names(tmp_path, trained):
    model, path, x, y = trained
    rng_state = fnconfig.rng().bit_generator.state
    counts = dict(Layer._counts)
    load_model(path)
    pickle.loads(pickle.dumps(model))
    copy.deepcopy(model)
    assert fnconfig.rng().bit_generator.state == rng_state
    assert Layer._counts == counts


# ---- the file format --------------------------------------------------------------------

def test_file_is_a_zip_of_json_and_npy_as_documented(trained):
    model, path, x, y = trained
    assert zipfile.is_zipfile(path)
    members = members_of(path)
    config = json.loads(members["config.json"].decode("utf-8"))
    assert config["format"] == "fastnn" and config["format_version"] == 1
    assert config["fastnn_version"] == fastnn.__version__
    m = config["model"]
    assert m["class_name"] == "Sequential" and m["name"] == "dense_net"
    assert m["dtype"] == "float32" and m["input_shape"] == [6] and m["built"] is True
    assert [entry["class_name"] for entry in m["layers"]] == [
        "Dense", "Dropout", "Dense", "LeakyReLU", "Dense"]
    assert m["layers"][0]["config"] == {
        "name": model.layers[0].name, "units": 16, "activation": "relu", "use_bias": True,
        "input_shape": None, "kernel_initializer": "glorot_uniform", "bias_initializer": "zeros"}
    comp = config["compile"]
    assert comp["optimizer"] == {"class_name": "Adam", "config": model.optimizer.get_config()}
    assert comp["loss"] == {"class_name": "BinaryCrossentropy",
                            "config": {"name": "binary_crossentropy", "from_logits": False}}
    assert comp["metrics"] == ["accuracy", "mse"]
    assert comp["optimizer_iterations"] == model.optimizer.iterations == 16

    files = [w["file"] for entry in m["layers"] for w in entry["weights"]]
    assert set(members) == {"config.json", *files, *comp["optimizer_slots"]}
    weights = []
    for name, want in zip(files, model.get_weights()):
        arr = np.load(io.BytesIO(members[name]), allow_pickle=False)
        assert arr.dtype == np.float32 and np.array_equal(arr, want)
        weights.append(arr.ravel())
    # The weights, concatenated, are the flat parameter buffer; slots are as long.
    assert np.array_equal(np.concatenate(weights), model._params)
    for name, slot in zip(comp["optimizer_slots"], model.optimizer.slots):
        arr = np.load(io.BytesIO(members[name]), allow_pickle=False)
        assert arr.shape == model._params.shape and np.array_equal(arr, slot)
    assert b"pickle" not in members["config.json"]


def test_save_is_deterministic(tmp_path, trained):
    model, path, x, y = trained
    model.save(tmp_path / "again.fastnn")
    assert (tmp_path / "again.fastnn").read_bytes() == path.read_bytes()


def test_layer_loss_optimizer_configs_round_trip():
    objects = [Dense(3, activation="tanh", use_bias=False, kernel_initializer="he_uniform",
                     bias_initializer="ones", input_shape=(7,)),
               Activation("softmax"), LeakyReLU(negative_slope=0.2), Dropout(0.3),
               Conv1D(4, 5, strides=2, padding="same", activation="sigmoid", use_bias=False,
                      kernel_initializer="lecun_normal"),
               MaxPooling1D(3, strides=1, padding="same"), GlobalAveragePooling1D(), Flatten()]
    for obj in objects:
        config = obj.get_config()
        json.dumps(config)
        again = type(obj).from_config(config)
        assert again.get_config() == config and again.name == obj.name
    assert LeakyReLU.from_config(LeakyReLU(0.3).get_config()).negative_slope == 0.3
    for loss in [BinaryCrossentropy(from_logits=True), MeanSquaredError(),
                 SparseCategoricalCrossentropy(from_logits=True), CategoricalCrossentropy()]:
        again = type(loss).from_config(loss.get_config())
        assert again.get_config() == loss.get_config()
    for opt in [SGD(0.1, 0.5, True), Adam(0.002, 0.8, 0.99, 1e-6), RMSprop(0.01, 0.8, 0.1, 1e-5)]:
        again = type(opt).from_config(opt.get_config())
        assert again.get_config() == opt.get_config() and again.slots is None


def test_custom_initializer_is_not_saved_but_weights_are(tmp_path):
    def constant(shape, rng):
        return np.full(shape, 0.5)
    model = Sequential([Input((3,)), Dense(2, kernel_initializer=constant)])
    model.save(tmp_path / "c.fastnn")
    loaded = load_model(tmp_path / "c.fastnn")
    assert same_weights(model, loaded)
    saved = _config(members_of(tmp_path / "c.fastnn"))["model"]["layers"][0]["config"]
    assert "kernel_initializer" not in saved and saved["bias_initializer"] == "zeros"
    assert loaded.layers[0].get_config()["kernel_initializer"] == "glorot_uniform"  # the default


def test_unsavable_layer_type_raises_and_writes_nothing(tmp_path):
    class MyDense(Dense):
        pass
    model = Sequential([Input((3,)), MyDense(2)])
    with pytest.raises(ValueError, match="MyDense"):
        model.save(tmp_path / "x.fastnn")
    assert os.listdir(tmp_path) == []


# ---- atomic writes ----------------------------------------------------------------------

def test_save_replaces_through_a_synced_temporary_file(tmp_path, monkeypatch, trained):
    model, path, x, y = trained
    calls = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", a, b)),
                                                     real_replace(a, b))[1])
    target = tmp_path / "sub.fastnn"
    model.save(target)
    assert calls[0] == "fsync"
    replace = [c for c in calls if isinstance(c, tuple)]
    assert len(replace) == 1
    assert os.path.dirname(replace[0][1]) == str(tmp_path) and replace[0][2] == str(target)
    assert sorted(os.listdir(tmp_path)) == ["model.fastnn", "sub.fastnn"]  # no temporaries
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert (target.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


@pytest.mark.parametrize("existing", [True, False])
def test_failed_save_leaves_path_untouched(tmp_path, monkeypatch, existing, trained):
    model, path, x, y = trained
    target = tmp_path / "target.fastnn"
    if existing:
        target.write_bytes(path.read_bytes())
    before = target.read_bytes() if existing else None
    real_write = saving._write_zip

    def failing_write(fileobj, config, arrays):
        real_write(fileobj, config, arrays)  # a whole file was written to the temporary...
        fileobj.write(b"garbage")
        raise OSError(28, "No space left on device")  # ...then the disk fills up
    monkeypatch.setattr(saving, "_write_zip", failing_write)
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    with pytest.raises(OSError, match="No space"):
        model.save(target)
    if existing:
        assert target.read_bytes() == before
        assert same_weights(load_model(target), load_model(path))
    else:
        assert not target.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(["model.fastnn"] + (["target.fastnn"] if existing else []))


def test_interrupted_save_leaves_path_untouched(tmp_path, monkeypatch, trained):
    model, path, x, y = trained
    before = path.read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.fastnn"]


def test_save_refuses_nonfinite_weights_and_keeps_old_file(tmp_path, trained):
    model, path, x, y = trained
    before = path.read_bytes()
    model.weights[0][0, 0] = np.inf  # as a diverged fit leaves it
    with pytest.raises(ValueError, match="NaN or inf"):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.fastnn"]


def test_save_to_a_missing_directory_or_onto_a_directory_fails_cleanly(tmp_path, trained):
    model, path, x, y = trained
    with pytest.raises(FileNotFoundError):
        model.save(tmp_path / "no" / "such" / "dir.fastnn")
    (tmp_path / "adir").mkdir()
    with pytest.raises(OSError):
        model.save(tmp_path / "adir")
    assert sorted(os.listdir(tmp_path)) == ["adir", "model.fastnn"]
    assert os.listdir(tmp_path / "adir") == []
    with pytest.raises(FileNotFoundError, match="such"):  # names the user's directory
        model.save(tmp_path / "no" / "such" / "dir.fastnn")


def test_save_paths_as_the_system_reads_them(tmp_path, trained, monkeypatch):
    """Where open(path, "w") fails, save does, writing nothing ("sub/../m" needs a
    directory "sub"; "m/" names a directory)."""
    model, path, x, y = trained
    monkeypatch.chdir(tmp_path)
    for bad in ("sub/../rel.fastnn", "newdir/"):
        with pytest.raises(FileNotFoundError):
            model.save(bad)
    assert sorted(os.listdir(tmp_path)) == ["model.fastnn"]
    model.save("here.fastnn")  # a bare name: the current directory
    assert same_weights(model, load_model(tmp_path / "here.fastnn"))


def test_save_through_a_symbolic_link_writes_its_target(tmp_path, trained):
    model, path, x, y = trained
    target = tmp_path / "real.fastnn"
    link = tmp_path / "link.fastnn"
    link.symlink_to(target)
    model.save(link)
    assert link.is_symlink() and target.is_file()
    assert same_weights(model, load_model(target))


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_load_reads_no_more_of_a_file_than_it_checks(tmp_path):
    """A directory, a device or a huge file that is not a model raises ValueError without
    being read whole (load_model('/dev/zero') used to read until memory ran out)."""
    import tracemalloc
    with pytest.raises(ValueError, match="directory"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="regular file"):
        load_model("/dev/zero")
    if hasattr(os, "mkfifo"):  # opening a FIFO would wait for a writer forever
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(ValueError, match="regular file"):
            load_model(tmp_path / "fifo")
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB of zeros on no disk
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="not a zip"):
            load_model(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# ---- ModelCheckpoint --------------------------------------------------------------------

class Recorder(Callback):
    def __init__(self):
        self.weights, self.val_loss = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())
        self.val_loss.append(logs["val_loss"])


def test_model_checkpoint_save_best_only_writes_a_loadable_best_model(tmp_path):
    x, y = dense_data(200)
    xv, yv = dense_data(60, seed=5)
    model = dense_model(optimizer="sgd")
    path = tmp_path / "best.fastnn"
    recorder = Recorder()
    model.fit(x, y, epochs=8, batch_size=16, verbose=0, seed=4, validation_data=(xv, yv),
              callbacks=[ModelCheckpoint(path, monitor="val_loss", save_best_only=True), recorder])
    best = load_model(path)
    best_epoch = int(np.argmin(recorder.val_loss))
    assert all(np.array_equal(a, b) for a, b in zip(best.get_weights(), recorder.weights[best_epoch]))
    assert best.optimizer.iterations == (best_epoch + 1) * 13
    assert np.isclose(best.evaluate(xv, yv)[0], recorder.val_loss[best_epoch], rtol=1e-6)
    assert os.listdir(tmp_path) == ["best.fastnn"]


def test_model_checkpoint_decisions_and_messages_are_keras(tmp_path, capsys):
    """The saves and the verbose messages of keras.callbacks.ModelCheckpoint (3.15, whose
    output this is) on scripted logs: best starts at None, a missing monitor warns and
    saves, NaN is no improvement, initial_value_threshold is the first best."""
    seq = [{"val_loss": 0.5}, {"val_loss": 0.6}, {"val_loss": 0.4}, {},
           {"val_loss": float("nan")}, {"val_loss": 0.3}]

    class Model:
        def __init__(self):
            self.saved = []

        def save(self, path):
            self.saved.append(os.path.basename(path))

    def drive(**kw):
        cb = ModelCheckpoint(str(tmp_path / "m_{epoch}.fastnn"), verbose=1, **kw)
        cb.model = Model()
        with pytest.warns(UserWarning, match="Can save best model only with val_loss"):
            for epoch, logs in enumerate(seq):
                cb.on_epoch_end(epoch, dict(logs))
        return cb.model.saved, capsys.readouterr().out.replace(str(tmp_path) + os.sep, "")

    saved, out = drive(save_best_only=True)
    assert saved == ["m_1.fastnn", "m_3.fastnn", "m_4.fastnn", "m_6.fastnn"]
    assert out == (
        "\nEpoch 1: val_loss improved from None to 0.50000, saving model to m_1.fastnn\n"
        "\nEpoch 1: finished saving model to m_1.fastnn\n"
        "\nEpoch 2: val_loss did not improve from 0.50000\n"
        "\nEpoch 3: val_loss improved from 0.50000 to 0.40000, saving model to m_3.fastnn\n"
        "\nEpoch 3: finished saving model to m_3.fastnn\n"
        "\nEpoch 4: finished saving model to m_4.fastnn\n"
        "\nEpoch 5: val_loss did not improve from 0.40000\n"
        "\nEpoch 6: val_loss improved from 0.40000 to 0.30000, saving model to m_6.fastnn\n"
        "\nEpoch 6: finished saving model to m_6.fastnn\n")
    saved, out = drive(save_best_only=True, initial_value_threshold=0.45)
    assert saved == ["m_3.fastnn", "m_4.fastnn", "m_6.fastnn"]
    assert out.startswith("\nEpoch 1: val_loss did not improve from 0.45000\n")


def test_model_checkpoint_with_epoch_in_the_name(tmp_path):
    x, y = conv_data()
    model = conv_model()
    model.fit(x, y, epochs=3, verbose=0, seed=0,
              callbacks=[ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.fastnn"),
                                         monitor="loss")])
    assert sorted(os.listdir(tmp_path)) == [f"ckpt-{e:02d}.fastnn" for e in (1, 2, 3)]
    last = load_model(tmp_path / "ckpt-03.fastnn")
    assert same_weights(model, last)


def test_model_checkpoint_creates_its_directory(tmp_path):
    x, y = dense_data()
    model = dense_model()
    model.fit(x, y, epochs=2, verbose=0, seed=0,
              callbacks=[ModelCheckpoint(tmp_path / "runs" / "a" / "model.fastnn", monitor="loss"),
                         ModelCheckpoint(str(tmp_path / "ep{epoch}" / "m.fastnn"))])
    assert os.listdir(tmp_path / "runs" / "a") == ["model.fastnn"]
    assert sorted(os.listdir(tmp_path)) == ["ep1", "ep2", "runs"]
    assert same_weights(model, load_model(tmp_path / "runs" / "a" / "model.fastnn"))


def test_model_checkpoint_warns_and_saves_when_the_best_only_monitor_is_missing(tmp_path):
    # Keras 3.15 warns and then saves as without save_best_only (older Keras skipped)
    x, y = dense_data()
    model = dense_model()
    path = tmp_path / "ckpt-{epoch}.fastnn"
    with pytest.warns(UserWarning) as record:
        model.fit(x, y, epochs=2, verbose=0, seed=0,
                  callbacks=[ModelCheckpoint(path, monitor="val_loss", save_best_only=True)])
    assert [str(w.message) for w in record] == [
        "Can save best model only with val_loss available."] * 2
    assert sorted(os.listdir(tmp_path)) == ["ckpt-1.fastnn", "ckpt-2.fastnn"]


# ---- bad files --------------------------------------------------------------------------

def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nothing.fastnn")


def test_load_model_is_exported():
    assert fastnn.load_model is saving.load_model and "load_model" in fastnn.__all__


def huge_npy():
    """A small .npy whose header claims an enormous array."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 10**4)})
    return buf.getvalue() + bytes(64)


def _config(members):
    return json.loads(members["config.json"])


def _set_config(members, config):
    members["config.json"] = json.dumps(config).encode()


def _corrupt(kind):
    """Functions (members dict -> members dict or raw bytes) making one kind of bad file."""
    def edit_config(fn):
        def apply(members):
            config = _config(members)
            fn(config)
            _set_config(members, config)
            return members
        return apply

    def replace_member(name, data):
        def apply(members):
            members[name] = data(members) if callable(data) else data
            return members
        return apply

    first_weights = "weights/0000.npy"
    table = {
        "empty file": lambda m: b"",
        "not a zip": lambda m: b"\x89HDF\r\n\x1a\n" + bytes(200),
        "pickle file": lambda m: pickle.dumps({"model": 1}),
        "zip without config": lambda m: {k: v for k, v in m.items() if k != "config.json"},
        "keras-like config": replace_member("config.json", json.dumps(
            {"module": "keras", "class_name": "Sequential", "config": {}}).encode()),
        "bad json": replace_member("config.json", b'{"format": "fastnn", '),
        "json not an object": replace_member("config.json", b"[1, 2, 3]"),
        "json not utf8": replace_member("config.json", b'{"format": "\xff\xfe"}'),
        "format_version 2": edit_config(lambda c: c.update(format_version=2)),
        "format_version string": edit_config(lambda c: c.update(format_version="1")),
        "format_version true": edit_config(lambda c: c.update(format_version=True)),
        "other format": edit_config(lambda c: c.update(format="keras")),
        "unknown model class": edit_config(lambda c: c["model"].update(class_name="Functional")),
        "bad dtype": edit_config(lambda c: c["model"].update(dtype="float16")),
        "dtype differs from arrays": edit_config(lambda c: c["model"].update(dtype="float64")),
        "unknown layer type": edit_config(
            lambda c: c["model"]["layers"][1].update(class_name="os.system")),
        "code as layer type": edit_config(
            lambda c: c["model"]["layers"][1].update(class_name="__import__('os').system('x')")),
        "unknown layer argument": edit_config(
            lambda c: c["model"]["layers"][0]["config"].update(evil="print(1)")),
        "invalid layer setting": edit_config(
            lambda c: c["model"]["layers"][0]["config"].update(units=0)),
        "units do not fit weights": edit_config(
            lambda c: c["model"]["layers"][0]["config"].update(units=17)),
        "input shape does not fit weights": edit_config(
            lambda c: c["model"].update(input_shape=[7])),
        "input shape invalid": edit_config(lambda c: c["model"].update(input_shape=[-1])),
        "layers not a list": edit_config(lambda c: c["model"].update(layers={"a": 1})),
        "missing weight entry": edit_config(lambda c: c["model"]["layers"][0]["weights"].pop()),
        "listed shape wrong": edit_config(
            lambda c: c["model"]["layers"][0]["weights"][0].update(shape=[16, 6])),
        "weight member renamed": edit_config(
            lambda c: c["model"]["layers"][0]["weights"][0].update(file="weights/9999.npy")),
        "weight member reused": edit_config(
            lambda c: c["model"]["layers"][0]["weights"][1].update(file=first_weights)),
        "unbuilt with weights": edit_config(lambda c: c["model"].update(built=False)),
        "missing weights member": lambda m: {k: v for k, v in m.items() if k != first_weights},
        "extra member": replace_member("payload.pkl", pickle.dumps(1)),
        "wrong array shape": replace_member(first_weights, npy_bytes(np.zeros((6, 15), np.float32))),
        "wrong array dtype": replace_member(first_weights, npy_bytes(np.zeros((6, 16), np.float64))),
        "big-endian array": replace_member(first_weights, npy_bytes(np.zeros((6, 16), ">f4"))),
        "fortran array": replace_member(first_weights, npy_bytes(np.asfortranarray(np.zeros((6, 16), np.float32)))),
        "pickled object array": replace_member(first_weights, npy_bytes(
            np.array([[{"x": 1}] * 16] * 6, dtype=object), allow_pickle=True)),
        "truncated array": replace_member(first_weights, lambda m: m[first_weights][:-5]),
        "array with trailing bytes": replace_member(first_weights, lambda m: m[first_weights] + b"\0" * 8),
        "not an npy": replace_member(first_weights, b"hello world" * 50),
        "huge shape in header": replace_member(first_weights, huge_npy()),
        "nan weights": replace_member(first_weights, npy_bytes(np.full((6, 16), np.nan, np.float32))),
        "inf bias": replace_member("weights/0001.npy", npy_bytes(np.full(16, -np.inf, np.float32))),
        "inf optimizer slot": replace_member("optimizer/slot_1.npy", lambda m: npy_bytes(
            np.full_like(np.load(io.BytesIO(m["optimizer/slot_1.npy"])), np.inf))),
        "slot of wrong length": replace_member("optimizer/slot_0.npy", npy_bytes(np.zeros(3, np.float32))),
        "one slot": edit_config(lambda c: c["compile"]["optimizer_slots"].pop()),
        "unknown optimizer": edit_config(
            lambda c: c["compile"]["optimizer"].update(class_name="Adagrad")),
        "invalid optimizer setting": edit_config(
            lambda c: c["compile"]["optimizer"]["config"].update(beta_1=1.5)),
        "unknown loss": edit_config(lambda c: c["compile"]["loss"].update(class_name="Hinge")),
        "unknown metric": edit_config(lambda c: c["compile"].update(metrics=["auc"])),
        "metric not a name": edit_config(lambda c: c["compile"].update(metrics=[{"a": 1}])),
        "negative iterations": edit_config(lambda c: c["compile"].update(optimizer_iterations=-1)),
        "float iterations": edit_config(lambda c: c["compile"].update(optimizer_iterations=1.5)),
        "bool iterations": edit_config(lambda c: c["compile"].update(optimizer_iterations=True)),
        "compile not an object": edit_config(lambda c: c.update(compile=[1])),
    }
    return table[kind]


BAD_FILES = ["empty file", "not a zip", "pickle file", "zip without config", "keras-like config",
             "bad json", "json not an object", "json not utf8", "format_version 2",
             "format_version string", "format_version true", "other format",
             "unknown model class", "bad dtype", "dtype differs from arrays",
             "unknown layer type", "code as layer type", "unknown layer argument",
             "invalid layer setting", "units do not fit weights",
             "input shape does not fit weights", "input shape invalid", "layers not a list",
             "missing weight entry", "listed shape wrong", "weight member renamed",
             "weight member reused", "unbuilt with weights", "missing weights member",
             "extra member", "wrong array shape", "wrong array dtype", "big-endian array",
             "fortran array", "pickled object array", "truncated array",
             "array with trailing bytes", "not an npy", "huge shape in header", "nan weights",
             "inf bias", "inf optimizer slot", "slot of wrong length", "one slot",
             "unknown optimizer", "invalid optimizer setting", "unknown loss", "unknown metric",
             "metric not a name", "negative iterations", "float iterations", "bool iterations",
             "compile not an object"]


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_file_raises_value_error(tmp_path, kind, trained):
    model, path, x, y = trained
    result = _corrupt(kind)(members_of(path))
    bad = tmp_path / "bad.fastnn"
    if isinstance(result, bytes):
        bad.write_bytes(result)
    else:
        write_members(bad, result)
    with time_limit(20), pytest.raises(ValueError) as info:
        load_model(bad)
    assert str(bad) in str(info.value)
    if kind == "format_version 2":
        assert "format_version" in str(info.value)
    if "layer type" in kind:
        assert "unknown type" in str(info.value)


def test_unbuilt_file_with_a_declared_input_shape_that_does_not_fit(tmp_path):
    model = Sequential([Dense(2)])
    model.save(tmp_path / "u.fastnn")
    members = members_of(tmp_path / "u.fastnn")
    config = _config(members)
    config["model"]["layers"] = [{"class_name": "Conv1D",
                                  "config": {"name": "c", "filters": 2, "kernel_size": 9},
                                  "weights": []}]
    config["model"]["input_shape"] = [4, 1]
    _set_config(members, config)
    write_members(tmp_path / "u.fastnn", members)
    with pytest.raises(ValueError, match="input shape"):
        load_model(tmp_path / "u.fastnn")


def test_setstate_rejects_a_foreign_state():
    model = Sequential.__new__(Sequential)
    with pytest.raises(ValueError):
        model.__setstate__({"not": "a state"})
    config, arrays = Sequential([Input((2,)), Dense(1)]).__getstate__()
    with pytest.raises(ValueError):
        model.__setstate__((config, {}))


def _fuzz_cases(data, rng, n_truncations, n_flips, n_overwrites):
    cases = []
    for cut in rng.sample(range(len(data)), n_truncations):
        cases.append(("truncated", data[:cut]))
    for _ in range(n_flips):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(buf))
            buf[pos] ^= 1 << rng.randrange(8)
        cases.append(("bit flip", bytes(buf)))
    for _ in range(n_overwrites):
        buf = bytearray(data)
        start = rng.randrange(len(buf))
        length = rng.randint(1, 64)
        buf[start:start + length] = bytes(rng.randrange(256) for _ in range(min(length, len(buf) - start)))
        cases.append(("overwrite", bytes(buf)))
    return cases


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_random_corruptions_raise_value_error_or_load_a_valid_model(tmp_path, kind):
    if kind == "dense":
        model, (x, y) = dense_model(), dense_data()
    else:
        model, (x, y) = conv_model("float64", "sgd"), conv_data()
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    path = tmp_path / "good.fastnn"
    model.save(path)
    data = path.read_bytes()
    rng = random.Random(1234 if kind == "dense" else 4321)
    cases = _fuzz_cases(data, rng, n_truncations=120, n_flips=200, n_overwrites=60)
    bad = tmp_path / "bad.fastnn"
    outcomes = {"ValueError": 0, "loaded": 0}
    for what, corrupted in cases:
        bad.write_bytes(corrupted)
        with time_limit(20):
            try:
                loaded = load_model(bad)
            except ValueError:
                outcomes["ValueError"] += 1
                continue
        outcomes["loaded"] += 1
        check_loaded_is_valid(loaded)
    assert outcomes["ValueError"] >= len(cases) // 2, outcomes
    # Every truncation is caught (the zip's directory sits at the end).
    for what, corrupted in cases[:120]:
        bad.write_bytes(corrupted)
        with pytest.raises(ValueError):
            load_model(bad)


def test_random_config_mutations_raise_value_error_or_load_a_valid_model(tmp_path, trained):
    """Damage behind valid CRCs: the loader's own checks must hold."""
    model, path, x, y = trained
    members = members_of(path)
    text = members["config.json"].decode()
    rng = random.Random(99)
    alphabet = '0123456789-.eE[]{}",:truefalsnul xyzDenseConv1D'
    bad = tmp_path / "bad.fastnn"
    outcomes = {"ValueError": 0, "loaded": 0}
    for _ in range(300):
        chars = list(text)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(chars))
            op = rng.randrange(3)
            if op == 0:
                chars[pos] = rng.choice(alphabet)
            elif op == 1:
                del chars[pos]
            else:
                chars.insert(pos, rng.choice(alphabet))
        members["config.json"] = "".join(chars).encode()
        write_members(bad, members)
        with time_limit(20):
            try:
                loaded = load_model(bad)
            except ValueError:
                outcomes["ValueError"] += 1
                continue
        outcomes["loaded"] += 1
        check_loaded_is_valid(loaded)
    assert outcomes["ValueError"] > 0 and outcomes["loaded"] > 0, outcomes


def test_a_failed_load_changes_nothing(tmp_path, trained):
    model, path, x, y = trained
    members = members_of(path)
    config = _config(members)
    config["compile"]["optimizer"]["class_name"] = "Nope"
    _set_config(members, config)
    write_members(tmp_path / "bad.fastnn", members)
    rng_state = fnconfig.rng().bit_generator.state
    counts = dict(Layer._counts)
    with pytest.raises(ValueError):
        load_model(tmp_path / "bad.fastnn")
    assert fnconfig.rng().bit_generator.state == rng_state and Layer._counts == counts


def test_transposed_kernel_model_resumes_exactly_and_files_keep_weights_order(tmp_path):
    """A float32 400 -> 25 Dense layer keeps its kernel as (units, in) in memory; its file
    holds the kernel and the optimizer state in get_weights order (the documented layout),
    and fit, save, load, fit equals the uninterrupted fits bit for bit."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((96, 400)).astype(np.float32)
    y = (rng.random((96, 1)) < 0.5).astype(np.float32)

    def model():
        set_random_seed(1)
        m = Sequential([Dense(25, activation="sigmoid"), Dense(1, activation="sigmoid")])
        m.compile(optimizer=Adam(0.01), loss="binary_crossentropy")
        return m

    reference = model()
    reference.fit(x, y, epochs=2, batch_size=32, verbose=0, seed=11)
    reference.fit(x, y, epochs=2, batch_size=32, verbose=0, seed=12)
    resumed = model()
    resumed.fit(x, y, epochs=2, batch_size=32, verbose=0, seed=11)
    assert resumed.layers[0].kernel_transposed
    path = tmp_path / "m.fastnn"
    resumed.save(path)
    with zipfile.ZipFile(path) as z:
        m = np.load(io.BytesIO(z.read("optimizer/slot_0.npy")))
        kernel = np.load(io.BytesIO(z.read("weights/0000.npy")))
    np.testing.assert_array_equal(kernel, resumed.get_weights()[0])
    # the first 10000 state values are the kernel's, raveled as the (400, 25) kernel
    m_kernel = np.asarray(resumed.layers[0].storage_view(0, resumed.optimizer.slots[0][:10000]))
    np.testing.assert_array_equal(m[:10000], m_kernel.ravel())
    resumed = load_model(path)
    resumed.fit(x, y, epochs=2, batch_size=32, verbose=0, seed=12)
    assert same_weights(reference, resumed)
    for a, b in zip(reference.optimizer.slots, resumed.optimizer.slots):
        assert np.array_equal(a, b)
