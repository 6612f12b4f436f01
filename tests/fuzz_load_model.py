"""Fuzzer for fastnn.load_model: mutated model files must raise ValueError (or load as a
valid, working model), never crash, hang, exhaust memory, raise anything else or read
past a buffer (run it on the sanitizer build, `make sanitize`, for the last).

Mutations, drawn by hypothesis from valid files of several kinds of model:
- bytes: truncation, bit flips, overwritten / inserted / deleted / duplicated runs;
- zip members rewritten behind valid CRCs (so the loader's own checks are what stand):
  config.json values replaced anywhere in the tree (wrong format_version, huge or negative
  sizes, wrong types, unknown names), .npy headers claiming other shapes (up to 10^16
  elements), dtypes, byte orders or Fortran order, data too short or too long, members
  dropped, added, duplicated, or deflated with lying sizes (zip bombs).

The test suite runs a few seconds of it (tests/test_load_fuzz.py); run it longer with

    python tests/fuzz_load_model.py --seconds 300

which prints how many inputs it tried and how they ended.
"""
import argparse
import contextlib
import functools
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
import zipfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

import fastnn
from fastnn import Sequential, load_model, set_random_seed
from fastnn.layers import (Activation, Conv1D, Dense, Dropout, Flatten, GlobalAveragePooling1D,
                           Input, Layer, LeakyReLU, MaxPooling1D)
from fastnn.losses import SparseCategoricalCrossentropy
from fastnn.optimizers import SGD, Adam, RMSprop


# ---- valid files to start from --------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def model_files():
    """name -> bytes of a valid file, for models covering every layer, dtype and state.
    Made on first use; fastnn's global random generator and default layer names are left
    as they were."""
    saved_rng, saved_counts = fastnn.config._rng, dict(Layer._counts)
    try:
        return _make_model_files()
    finally:
        fastnn.config._rng = saved_rng
        Layer._counts.clear()
        Layer._counts.update(saved_counts)


def _make_model_files():
    rng = np.random.default_rng(0)
    set_random_seed(0)
    dense = Sequential([Input((6,)), Dense(5, activation="relu"), Dropout(0.2),
                        Dense(4, activation="tanh"), LeakyReLU(0.1),
                        Dense(1, activation="sigmoid")], name="dense")
    dense.compile(optimizer=Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    dense.fit(rng.normal(size=(20, 6)), rng.integers(0, 2, 20), epochs=1, verbose=0, seed=0)
    conv = Sequential([Input((12, 2)), Conv1D(3, 3, strides=2, padding="same",
                                              activation="relu"),
                       MaxPooling1D(2), Conv1D(2, 2, use_bias=False), Flatten(),
                       Dense(3, activation="softmax")], dtype="float64", name="conv")
    conv.compile(optimizer=SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy")
    conv.fit(rng.normal(size=(9, 12, 2)), rng.integers(0, 3, 9), epochs=1, verbose=0, seed=0)
    # weightless layers last: changing their settings still gives a loadable model, so
    # the fuzzer reaches the compiled pooling code with settings it invents
    tail = Sequential([Input((16, 3)), Conv1D(4, 3, padding="same"), Activation("relu"),
                       MaxPooling1D(3, strides=2, padding="same"), GlobalAveragePooling1D()],
                      name="tail")
    tail.compile(optimizer=RMSprop(0.01, momentum=0.5), loss="mse")
    tail.fit(rng.normal(size=(8, 16, 3)), rng.normal(size=(8, 4)), epochs=1, verbose=0, seed=0)
    unbuilt = Sequential([Dense(3), Activation("softmax")], name="unbuilt")
    unbuilt.compile(optimizer="adam", loss=SparseCategoricalCrossentropy())
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in (dense, conv, tail, unbuilt):
            path = os.path.join(tmp, model.name + ".fastnn")
            model.save(path)
            with open(path, "rb") as f:
                files[model.name] = f.read()
    return files


def _members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def _zip(members, compression=zipfile.ZIP_STORED):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are the point
        with zipfile.ZipFile(buf, "w", compression=compression) as zf:
            for name, payload in members:
                zf.writestr(name, payload)
    return buf.getvalue()


# ---- mutations ------------------------------------------------------------------------------

def _json_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _json_paths(v, prefix + (i,))


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(), st.booleans(),
        st.sampled_from([0, 1, 2, 3, 5, -1, 2, 7, 2**31 - 1, 2**31, 2**40, 2**63, -2**63,
                         10**20]),
        st.integers(-3, 40),
        st.sampled_from([0.5, -0.0, 1e-300, 1e308, float("inf"), float("nan"), 1.0, 0.999]),
        st.sampled_from(["", "same", "valid", "causal", "relu", "softmax", "Dense", "Conv1D",
                         "MaxPooling1D", "Flatten", "Sequential", "float16", "float64",
                         "float32", "fastnn", "weights/0000.npy", "optimizer/slot_0.npy",
                         "config.json", "../../etc/passwd", "__import__('os')", "accuracy"]),
    ),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.sampled_from(
                                   ["units", "filters", "kernel_size", "strides", "pool_size",
                                    "padding", "name", "x", "shape", "file"]), children,
                                   max_size=3)),
    max_leaves=6)


@st.composite
def config_mutation(draw, data):
    members = _members(data)
    config = json.loads(dict(members)["config.json"])
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_json_paths(config))[1:]
        path = draw(st.sampled_from(paths))
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "wrap"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "wrap":
            parent[path[-1]] = [parent[path[-1]]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    text = json.dumps(config, allow_nan=True).encode()
    return _zip([(n, text if n == "config.json" else p) for n, p in members])


def _npy_header(shape, descr, fortran):
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": shape}
    try:
        np.lib.format.write_array_header_1_0(buf, header)
    except Exception:  # noqa: BLE001  a header numpy will not even write: hand-made
        text = repr(header).encode() + b" " * 8 + b"\n"
        buf = io.BytesIO(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text)
    return buf.getvalue()


@st.composite
def npy_mutation(draw, data):
    members = _members(data)
    arrays = [i for i, (n, _) in enumerate(members) if n.endswith(".npy")]
    if not arrays:
        return data
    i = draw(st.sampled_from(arrays))
    name, payload = members[i]
    arr = np.load(io.BytesIO(payload))
    shape = draw(st.one_of(
        st.just(arr.shape),
        st.lists(st.sampled_from([0, 1, 2, 3, 5, 16, 10**4, 10**8, 10**16]), max_size=3)
        .map(tuple)))
    descr = draw(st.sampled_from([arr.dtype.str, "<f4", "<f8", ">f4", ">f8", "<f2", "<i4",
                                  "|u1", "<c8", "|O", "|V8", "<U3", "|b1"]))
    fortran = draw(st.booleans())
    body_len = draw(st.one_of(st.just(arr.nbytes), st.integers(0, arr.nbytes + 64)))
    body = (arr.tobytes() * 2 + bytes(64))[:body_len]
    if draw(st.booleans()):
        body = bytes(draw(st.binary(min_size=0, max_size=64))) + body
    members[i] = (name, _npy_header(shape, descr, fortran) + body)
    return _zip(members)


@st.composite
def member_mutation(draw, data):
    members = _members(data)
    action = draw(st.sampled_from(["drop", "add", "duplicate", "rename", "deflate_bomb"]))
    i = draw(st.integers(0, len(members) - 1))
    if action == "drop":
        del members[i]
    elif action == "add":
        members.append((draw(st.sampled_from(["weights/9999.npy", "x.pkl", "config.json",
                                              "optimizer/slot_2.npy"])),
                        draw(st.binary(max_size=64))))
    elif action == "duplicate":
        members.insert(draw(st.integers(0, len(members))), members[i])
    elif action == "rename":
        members[i] = (draw(st.sampled_from(["weights/0000.npy", "weights/0001.npy",
                                            "config.json", "CONFIG.JSON", "/abs.npy"])),
                      members[i][1])
    else:
        # a deflated member that expands to 64 MiB, its header claiming a few bytes
        bomb = io.BytesIO()
        with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, payload in members:
                zf.writestr(name, bytes(64 << 20) if name == members[i][0] else payload)
        raw = bytearray(bomb.getvalue())
        claimed = draw(st.sampled_from([10, 1000, 2**31]))
        # patch the uncompressed size in the local and central headers of that member
        target = members[i][0].encode()
        pos = 0
        while True:
            pos = raw.find(target, pos)
            if pos < 0:
                break
            if raw[pos - 30:pos - 26] == b"PK\x03\x04":
                raw[pos - 8:pos - 4] = (claimed % 2**32).to_bytes(4, "little")
            elif raw[pos - 46:pos - 42] == b"PK\x01\x02":
                raw[pos - 22:pos - 18] = (claimed % 2**32).to_bytes(4, "little")
            pos += 1
        return bytes(raw)
    return _zip(members)


@st.composite
def byte_mutation(draw, data):
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            break
        kind = draw(st.sampled_from(["truncate", "flip", "flip", "overwrite", "insert",
                                     "delete", "duplicate"]))
        pos = draw(st.integers(0, len(buf) - 1))
        if kind == "truncate":
            del buf[pos:]
        elif kind == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=32))
            buf[pos:pos + len(chunk)] = chunk
        elif kind == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "delete":
            del buf[pos:pos + draw(st.integers(1, 32))]
        else:
            buf[pos:pos] = buf[pos:pos + draw(st.integers(1, 256))]
    return bytes(buf)


@st.composite
def mutated_file(draw):
    files = model_files()
    source = draw(st.sampled_from(sorted(files)))
    data = files[source]
    mutation = draw(st.sampled_from([byte_mutation, config_mutation, npy_mutation,
                                     member_mutation]))
    return source, mutation.__name__, draw(mutation(data))


# ---- the check ------------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.tried = 0
        self.outcomes = {}      # ValueError / loaded
        self.by_mutation = {}   # (mutation, outcome) -> count
        self.mutation = None

    def count(self, outcome):
        self.tried += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        key = f"{self.mutation}:{outcome}"
        self.by_mutation[key] = self.by_mutation.get(key, 0) + 1


@contextlib.contextmanager
def time_limit(seconds):
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"load_model took longer than {seconds} s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_file(data, path, stats):
    """load_model on these bytes: ValueError naming the path, or a valid working model."""
    with open(path, "wb") as f:
        f.write(data)
    with time_limit(20):
        try:
            model = load_model(path)
        except ValueError as e:
            assert str(path) in str(e), e
            stats.count("ValueError")
            return
    stats.count("loaded")
    assert isinstance(model, Sequential)
    assert model.dtype in ("float32", "float64")
    for w in model.get_weights():
        assert np.isfinite(w).all()
    if model.built:
        shape = model.input_shape[1:]
        rng = np.random.default_rng(0)
        x = rng.normal(size=(3,) + tuple(shape))
        out = model.predict(x)
        assert out.shape[0] == 3
        if model.loss is not None and model.optimizer is not None:
            y = np.zeros((3,) + tuple(model.output_shape[1:]))
            try:
                model.fit(x, y, epochs=1, verbose=0, seed=0)
            except ValueError:
                pass  # targets that this loss rejects (class ids, ...): checked, not run
    if all(np.isfinite(w).all() for w in model.get_weights()):
        model.save(path)  # what loaded saves again, and loads back the same
        again = load_model(path)
        assert all(np.array_equal(a, b) for a, b in zip(again.get_weights(), model.get_weights()))


def run(max_examples, stats, path, seed=None):
    """One hypothesis run of max_examples mutated files."""
    @settings(max_examples=max_examples, deadline=None, database=None,
              derandomize=seed is None, suppress_health_check=list(HealthCheck))
    @given(mutated_file())
    def fuzz(case):
        source, mutation, data = case
        stats.mutation = mutation
        check_file(data, path, stats)

    if seed is not None:
        fuzz = hypothesis_seed(seed)(fuzz)
    fuzz()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--batch", type=int, default=500, help="examples per hypothesis run")
    args = parser.parse_args(argv)
    stats = Stats()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzzed.fastnn")
        seed = 0
        while time.perf_counter() - start < args.seconds:
            run(args.batch, stats, path, seed=seed)
            seed += 1
            elapsed = time.perf_counter() - start
            print(f"{elapsed:7.1f} s: {stats.tried} inputs, {stats.outcomes}", flush=True)
    print(f"done: {stats.tried} mutated files in {time.perf_counter() - start:.0f} s; "
          f"outcomes {stats.outcomes}; no crash, hang or unexpected exception")
    print("by mutation:", dict(sorted(stats.by_mutation.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
