"""Saving and loading models: `model.save(path)`, `fastnn.load_model(path)`, and the state
behind `pickle` and `copy.deepcopy` of a model.

The file format (format "fastnn", format_version 1)
---------------------------------------------------
A model file is a ZIP archive (members stored uncompressed) of plain data: one JSON
document and NumPy ``.npy`` arrays. Nothing in it is pickled and nothing in it is run:
layer, loss and optimizer types are looked up by name in the fixed registries below
(`LAYERS`, `LOSSES`, `OPTIMIZERS`), arrays are read with
``np.load(..., allow_pickle=False)``. Any file name works (Keras users write
``model.keras``; ``.fastnn`` is a good choice). Its members:

``config.json`` (UTF-8 JSON)::

    {
      "format": "fastnn",                  always this string
      "format_version": 1,                 this layout; a reader refuses other versions
      "fastnn_version": "0.1.0",           the fastnn that wrote it (informative)
      "model": {
        "class_name": "Sequential",
        "name": "sequential",
        "dtype": "float32",                "float32" or "float64": the dtype of every array
        "input_shape": [400],              per-sample input shape (no batch axis), or null
        "built": true,                     whether the model has its weights
        "layers": [                        in model order
          {"class_name": "Dense",          a key of LAYERS
           "config": {"name": "dense", "units": 25, "activation": "sigmoid", ...},
                                           the layer's get_config(); from_config rebuilds it
           "weights": [                    the layer's weights, Keras order; [] when unbuilt
             {"file": "weights/0000.npy", "shape": [400, 25]},     Dense kernel (in, units)
             {"file": "weights/0001.npy", "shape": [25]}]},        Dense bias
          ...
        ]
      },
      "compile": {                         null when the model was never compiled
        "optimizer": {"class_name": "Adam", "config": {"learning_rate": 0.001, ...}},
        "loss": {"class_name": "BinaryCrossentropy", "config": {"name": ..., "from_logits": false}},
                                           or null (compiled without a loss)
        "metrics": ["accuracy"],           the names given to compile
        "optimizer_iterations": 120,       update steps taken (Adam's bias-correction t)
        "optimizer_slots": ["optimizer/slot_0.npy", "optimizer/slot_1.npy"]
                                           or null before the first fit
      }
    }

``weights/NNNN.npy``: one array per weight, numbered in the model's ``get_weights()``
order (the order of the layers, each layer's weights in Keras' order), of the model's dtype,
little-endian, C order, with the shape listed in ``config.json``. Concatenated flat (each
raveled in C order), they are the model's parameters in "weights order".

``optimizer/slot_0.npy``, ``optimizer/slot_1.npy``: the optimizer's two state vectors, 1-D,
as long as the flat parameter buffer (the number of parameters, or 1 for a model without
any), each element the state of the parameter at that place in weights order (whichever
layout the model keeps in memory), of the model's dtype: SGD velocity (and an unused
vector), Adam's m and v, RMSprop's v and momentum. With the iteration count they let training resume exactly where it stopped.

Guarantees: `save_model` writes to a temporary file in the same directory, flushes and
fsyncs it, then renames it onto `path` (`os.replace`): `path` holds the old file or the new
one, never a partial one. It refuses (ValueError) models whose weights or optimizer state
are not finite, so every file it writes loads. `load_model` raises FileNotFoundError for a
missing file and ValueError for anything else wrong with it (not a zip, truncated or
corrupted, another format or version, bad JSON, unknown types, missing or extra members,
arrays whose shape or dtype do not match the config, non-finite numbers); nothing outside
the new model changes, whatever the outcome.

Not saved: callbacks, the last `History`, and custom initializer callables (a layer
saved with one is restored with the default; it only matters for weights not yet created).

Pickling and `copy.deepcopy` go through the same state (`get_state` / `set_state`): the
config dict and the arrays, without the file's finiteness check.
"""
import io
import json
import math
import os
import stat
import tempfile
import zipfile

import numpy as np

from . import config as fnconfig
from .layers import (Activation, Conv1D, Dense, Dropout, Flatten, GlobalAveragePooling1D,
                     Layer, LeakyReLU, MaxPooling1D, _snake_case)
from .losses import (BinaryCrossentropy, CategoricalCrossentropy, MeanSquaredError,
                     SparseCategoricalCrossentropy)
from .models import Sequential
from .optimizers import SGD, Adam, RMSprop

__all__ = ["save_model", "load_model", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "fastnn"
FORMAT_VERSION = 1
CONFIG_MEMBER = "config.json"
_MAX_CONFIG_BYTES = 64 << 20
_NPY_HEADER_SLACK = 1 << 16  # .npy header bytes allowed on top of the array's data

# The only types a file can name: looked up here, never imported or evaluated.
LAYERS = {cls.__name__: cls for cls in (Dense, Activation, LeakyReLU, Dropout, Conv1D,
                                        MaxPooling1D, GlobalAveragePooling1D, Flatten)}
LOSSES = {cls.__name__: cls for cls in (BinaryCrossentropy, MeanSquaredError,
                                        SparseCategoricalCrossentropy, CategoricalCrossentropy)}
OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adam, RMSprop)}


class _Invalid(ValueError):
    """A file or state that does not describe a valid model (reported as ValueError)."""


def _param_shapes(layer, input_shape):
    """The weight shapes a registered layer has for this per-sample input shape."""
    if isinstance(layer, Dense):
        shapes = [(input_shape[0], layer.units)]
        return shapes + [(layer.units,)] if layer.use_bias else shapes
    if isinstance(layer, Conv1D):
        shapes = [(layer.kernel_size, input_shape[1], layer.filters)]
        return shapes + [(layer.filters,)] if layer.use_bias else shapes
    return []


def _registered(registry, obj, what):
    name = type(obj).__name__
    if registry.get(name) is not type(obj):
        raise ValueError(f"{what}: cannot save a {name}; savable types are "
                         f"{', '.join(registry)}")
    return name


# ---- state: model -> (config, arrays) ----------------------------------------------------

def get_state(model):
    """The model as (config dict, {member name: array}): what a file holds. The arrays are
    copies, so the state is independent of the model."""
    dtype = np.dtype(model.dtype)
    built = model._network is not None
    arrays, layer_entries = {}, []
    for layer in model.layers:
        class_name = _registered(LAYERS, layer, "layer")
        weights = []
        if built:
            expected = _param_shapes(layer, layer.input_shape)
            if [tuple(p.shape) for p in layer.params] != expected:
                raise ValueError(f"layer: {layer.name} has weights of shapes "
                                 f"{[p.shape for p in layer.params]}, expected {expected}")
            for p in layer.params:
                member = f"weights/{len(arrays):04d}.npy"
                arrays[member] = np.array(p, dtype=dtype, order="C")
                weights.append({"file": member, "shape": list(p.shape)})
        layer_entries.append({"class_name": class_name, "config": layer.get_config(),
                              "weights": weights})
    compile_entry = None
    if model.compiled and model.optimizer is not None:
        opt = model.optimizer
        slots_entry = None
        if built and opt.slots is not None and opt.slots[0].shape == model._params.shape:
            slots_entry = []
            for k, slot in enumerate(opt.slots):
                member = f"optimizer/slot_{k}.npy"
                arrays[member] = np.array(model._to_weights_order(slot), dtype=dtype, order="C")
                slots_entry.append(member)
        compile_entry = {
            "optimizer": {"class_name": _registered(OPTIMIZERS, opt, "optimizer"),
                          "config": opt.get_config()},
            "loss": None if model.loss is None else
                    {"class_name": _registered(LOSSES, model.loss, "loss"),
                     "config": model.loss.get_config()},
            "metrics": list(model._metric_names),
            "optimizer_iterations": int(opt.iterations),
            "optimizer_slots": slots_entry,
        }
    from . import __version__
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "fastnn_version": __version__,
        "model": {
            "class_name": "Sequential",
            "name": model.name,
            "dtype": dtype.name,
            "input_shape": None if model._input_shape is None else list(model._input_shape),
            "built": built,
            "layers": layer_entries,
        },
        "compile": compile_entry,
    }
    return config, arrays


# ---- state: (config, arrays) -> model ----------------------------------------------------

def _get(mapping, key, types, where):
    if not isinstance(mapping, dict) or key not in mapping:
        raise _Invalid(f"{where}: missing {key!r}")
    value = mapping[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _astuple(types)):
        raise _Invalid(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _astuple(types):
    return types if isinstance(types, tuple) else (types,)


def _shape(value, where):
    if not isinstance(value, list) or not value or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 < d < 2**40 for d in value):
        raise _Invalid(f"{where}: expected a list of positive integers, got {value!r}")
    return tuple(value)


def _from_config(registry, entry, where):
    class_name = _get(entry, "class_name", str, where)
    cls = registry.get(class_name)
    if cls is None:
        raise _Invalid(f"{where}: unknown type {class_name!r}; known types are "
                       f"{', '.join(registry)}")
    cfg = _get(entry, "config", dict, where)
    try:
        return cls.from_config(dict(cfg))
    except (TypeError, ValueError) as e:
        raise _Invalid(f"{where}: invalid {class_name} config {cfg!r}: {e}") from None


def _new_layer(entry, where):
    """A layer from its entry, without using up a default layer name (as Keras, a layer
    created with an explicit name does not advance the naming counter)."""
    class_name = _get(entry, "class_name", str, where)
    kind = _snake_case(class_name) if class_name in LAYERS else None
    before = Layer._counts.get(kind)
    try:
        layer = _from_config(LAYERS, entry, where)
    finally:
        if kind is not None:
            if before is None:
                Layer._counts.pop(kind, None)
            else:
                Layer._counts[kind] = before
    if not isinstance(layer.name, str) or not layer.name:
        raise _Invalid(f"{where}: expected a non-empty string name, got {layer.name!r}")
    return layer


def _restore(config, fetch, check_finite):
    """A new Sequential from a config dict; fetch(member, shape, dtype) returns an array
    (already checked for that shape and dtype)."""
    if not isinstance(config, dict):
        raise _Invalid("config.json: expected a JSON object")
    if config.get("format") != FORMAT_NAME:
        raise _Invalid(f"not a fastnn model file (config.json has format "
                       f"{config.get('format')!r}, expected {FORMAT_NAME!r})")
    version = config.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise _Invalid(f"unsupported format_version {version!r}: this fastnn reads "
                       f"format_version {FORMAT_VERSION}")
    m = _get(config, "model", dict, "config.json")
    if _get(m, "class_name", str, "model") != "Sequential":
        raise _Invalid(f"model: unknown model type {m['class_name']!r}; expected 'Sequential'")
    name = _get(m, "name", str, "model")
    dtype_name = _get(m, "dtype", str, "model")
    if dtype_name not in ("float32", "float64"):
        raise _Invalid(f"model: dtype must be 'float32' or 'float64', got {dtype_name!r}")
    dtype = np.dtype(dtype_name)
    input_shape = m.get("input_shape")
    input_shape = None if input_shape is None else _shape(input_shape, "model.input_shape")
    built = _get(m, "built", bool, "model")
    entries = _get(m, "layers", list, "model")
    if built and (input_shape is None or not entries):
        raise _Invalid("model: marked built without an input shape or layers")

    layers, used = [], set()
    shape = input_shape
    for i, entry in enumerate(entries):
        where = f"layer {i}"
        layer = _new_layer(entry, where)
        weights = _get(entry, "weights", list, where)
        if built:
            try:
                out_shape = layer.compute_output_shape(shape)
            except (ValueError, TypeError) as e:
                raise _Invalid(f"{where} ({layer.name}): does not fit input shape {shape}: {e}") from None
            expected = _param_shapes(layer, shape)
            if len(weights) != len(expected):
                raise _Invalid(f"{where} ({layer.name}): expected {len(expected)} weights, "
                               f"got {len(weights)}")
            params = []
            for k, (w, want) in enumerate(zip(weights, expected)):
                member = _get(w, "file", str, f"{where} weight {k}")
                if _shape(_get(w, "shape", list, f"{where} weight {k}"), f"{where} weight {k}") != want:
                    raise _Invalid(f"{where} ({layer.name}) weight {k}: shape {w['shape']} "
                                   f"does not fit the layer, expected {list(want)}")
                if member in used:
                    raise _Invalid(f"{where}: member {member!r} used twice")
                used.add(member)
                arr = fetch(member, want, dtype)
                if check_finite and not np.isfinite(arr).all():
                    raise _Invalid(f"{member}: weights of {layer.name} are not finite")
                params.append(np.array(arr, dtype=np.float64))
            # Built as it was: Layer.build keeps weights already made for this shape.
            layer.input_shape, layer.output_shape, layer.params = shape, out_shape, params
            shape = out_shape
        elif weights:
            raise _Invalid(f"{where}: an unbuilt model has no weights, got {len(weights)}")
        layers.append(layer)

    model = Sequential(name=name, dtype=dtype_name)
    model.layers = layers
    model._input_shape = input_shape
    try:
        if built:
            model._build(input_shape)
        elif input_shape is not None and layers:
            model._output_shape_for(input_shape)
    except (ValueError, TypeError, OverflowError) as e:
        raise _Invalid(f"model: cannot build for input shape {input_shape}: {e}") from None

    comp = config.get("compile")
    if comp is not None:
        if not isinstance(comp, dict):
            raise _Invalid("compile: expected an object or null")
        optimizer = _from_config(OPTIMIZERS, _get(comp, "optimizer", dict, "compile"),
                                 "compile.optimizer")
        loss_entry = comp.get("loss")
        loss = None if loss_entry is None else _from_config(LOSSES, loss_entry, "compile.loss")
        metrics = _get(comp, "metrics", list, "compile")
        if not all(isinstance(name, str) for name in metrics):
            raise _Invalid(f"compile: metrics must be names, got {metrics!r}")
        iterations = _get(comp, "optimizer_iterations", int, "compile")
        if not 0 <= iterations < 2**62:
            raise _Invalid(f"compile: optimizer_iterations out of range: {iterations}")
        try:
            model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
        except (ValueError, TypeError) as e:
            raise _Invalid(f"compile: {e}") from None
        slots = comp.get("optimizer_slots")
        if slots is not None:
            if not built:
                raise _Invalid("compile: optimizer state for an unbuilt model")
            if not isinstance(slots, list) or len(slots) != 2 or not all(isinstance(s, str) for s in slots):
                raise _Invalid(f"compile: optimizer_slots must be two member names, got {slots!r}")
            arrays = []
            for member in slots:
                if member in used:
                    raise _Invalid(f"compile: member {member!r} used twice")
                used.add(member)
                arr = fetch(member, model._params.shape, dtype)
                if check_finite and not np.isfinite(arr).all():
                    raise _Invalid(f"{member}: optimizer state is not finite")
                arrays.append(np.array(model._from_weights_order(arr), dtype=dtype, order="C"))
            optimizer.slots = tuple(arrays)
        optimizer.iterations = iterations
    return model, used


def set_state(model, state):
    """Makes `model` (a fresh instance, as pickle and deepcopy create) the model that
    get_state described."""
    if not isinstance(state, tuple) or len(state) != 2:
        raise ValueError("state: expected (config, arrays) as made by get_state")
    config, arrays = state

    def fetch(member, shape, dtype):
        arr = arrays.get(member) if isinstance(arrays, dict) else None
        if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape) or arr.dtype != dtype:
            raise _Invalid(f"{member}: missing or not a {dtype.name} array of shape {tuple(shape)}")
        return arr

    try:
        restored, _ = _restore(config, fetch, check_finite=False)
    except _Invalid as e:
        raise ValueError(f"state: {e}") from None
    model.__dict__.clear()
    model.__dict__.update(restored.__dict__)


# ---- files -------------------------------------------------------------------------------

def _default_mode(path):
    """The permissions a plain open(path, "w") would give (or the replaced file's)."""
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


def _write_zip(fileobj, config, arrays):
    text = json.dumps(config, indent=1, allow_nan=False).encode("utf-8")
    with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo(CONFIG_MEMBER, date_time=(1980, 1, 1, 0, 0, 0)), text)
        for member, arr in arrays.items():
            info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=arr.nbytes > (1 << 30)) as f:
                np.lib.format.write_array(f, arr.astype(arr.dtype.newbyteorder("<"), copy=False),
                                          allow_pickle=False)


def save_model(model, path):
    """Writes `model` to `path` atomically (see this module's docstring for the format)."""
    if not isinstance(model, Sequential):
        raise TypeError(f"model: expected a fastnn Sequential, got {type(model).__name__}")
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"path: expected a file path, got {path!r}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    config, arrays = get_state(model)
    for member, arr in arrays.items():
        if not np.isfinite(arr).all():
            what = "optimizer state" if member.startswith("optimizer/") else "weights"
            raise ValueError(f"model: its {what} contain NaN or inf ({member}); "
                             f"refusing to save a model that could not be loaded")
    # through a symbolic link to its target, as open(path, "w") writes (the link stays);
    # any other path as the system reads it ("sub/../m" needs "sub", "m/" is no file)
    if os.path.islink(path):
        path = os.path.realpath(path)
    directory = os.path.dirname(path) or os.curdir
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"path: directory {directory!r} does not exist")
    mode = _default_mode(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path)[:64] + ".",
                               suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_zip(f, config, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _read_member(zf, members, member, shape, dtype):
    """The array in `member`, checked against the expected shape and dtype before its
    data is read (so a corrupted header cannot ask for a huge allocation)."""
    info = members.get(member)
    if info is None:
        raise _Invalid(f"missing member {member!r}")
    nbytes = math.prod(shape) * dtype.itemsize
    if info.file_size > nbytes + _NPY_HEADER_SLACK:
        raise _Invalid(f"{member}: {info.file_size} bytes, too large for an array of shape "
                       f"{tuple(shape)}")
    raw = zf.read(info)  # checks the CRC
    buf = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            file_shape, fortran, file_dtype = np.lib.format.read_array_header_1_0(buf)
        elif version == (2, 0):
            file_shape, fortran, file_dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise _Invalid(f"{member}: unsupported .npy version {version}")
    except _Invalid:
        raise
    except Exception as e:
        raise _Invalid(f"{member}: not a valid .npy array ({e})") from None
    if file_dtype != dtype or file_dtype.hasobject:
        raise _Invalid(f"{member}: dtype {file_dtype}, expected {dtype.name}")
    if tuple(file_shape) != tuple(shape) or fortran:
        raise _Invalid(f"{member}: shape {tuple(file_shape)}"
                       f"{' (Fortran order)' if fortran else ''}, expected {tuple(shape)}")
    if len(raw) - buf.tell() != nbytes:
        raise _Invalid(f"{member}: {len(raw) - buf.tell()} bytes of data, expected {nbytes}")
    arr = np.load(io.BytesIO(raw), allow_pickle=False)
    if arr.shape != tuple(shape) or arr.dtype != dtype:
        raise _Invalid(f"{member}: read shape {arr.shape} dtype {arr.dtype}")
    return arr


def _load_file(f):
    if f.read(2) != b"PK":
        raise _Invalid("not a fastnn model file (not a zip archive)")
    f.seek(0)
    try:
        zf = zipfile.ZipFile(f)
    except zipfile.BadZipFile as e:
        raise _Invalid(f"not a valid zip archive ({e}); the file is truncated or corrupted") from None
    with zf:
        infos = zf.infolist()
        members = {}
        for info in infos:
            if info.filename in members:
                raise _Invalid(f"duplicate member {info.filename!r}")
            members[info.filename] = info
        info = members.get(CONFIG_MEMBER)
        if info is None:
            raise _Invalid(f"not a fastnn model file (no {CONFIG_MEMBER})")
        if info.file_size > _MAX_CONFIG_BYTES:
            raise _Invalid(f"{CONFIG_MEMBER}: too large ({info.file_size} bytes)")
        try:
            config = json.loads(zf.read(info).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _Invalid(f"{CONFIG_MEMBER}: not valid JSON ({e})") from None
        model, used = _restore(config, lambda m, s, d: _read_member(zf, members, m, s, d),
                               check_finite=True)
        extra = sorted(set(members) - used - {CONFIG_MEMBER})
        if extra:
            raise _Invalid(f"unexpected members {extra[:5]}")
    return model


def load_model(path):
    """The model saved at `path` by `model.save` (see this module's docstring).

    Raises FileNotFoundError when there is no such file, ValueError when the file is not a
    valid fastnn model file of a supported format version."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"path: expected a file path, got {path!r}") from None
    # before opening it: opening a FIFO would wait for a writer
    if not stat.S_ISREG(os.stat(path).st_mode):
        what = "a directory" if os.path.isdir(path) else "not a regular file"
        raise ValueError(f"{os.fsdecode(path)}: {what}, not a fastnn model file")
    # the zip is read in place (its directory from the end, then each member as checked),
    # never whole: a huge file that is not a model, or a device, costs no memory
    with open(path, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"{os.fsdecode(path)}: not a regular file, so not a fastnn "
                             f"model file")
        try:
            return _load_file(f)
        except _Invalid as e:
            raise ValueError(f"{os.fsdecode(path)}: {e}") from None
        except MemoryError:
            raise
        except Exception as e:  # zip-level damage (bad CRC, truncation, flipped header bits...)
            raise ValueError(f"{os.fsdecode(path)}: corrupted fastnn model file "
                             f"({type(e).__name__}: {e})") from None
