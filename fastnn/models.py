"""Sequential: the Keras model API over fastnn's compiled network.

The model owns one flat parameter buffer and one gradient buffer; every layer's weights
are views into them. `fit`, `predict` and `evaluate` check their inputs in Python, then
run whole epochs (or all batches) in compiled code with the GIL released.
"""
import contextlib
import math
import numbers
import sys
import threading
import time

import numpy as np

from . import _validation as check
from . import config
from . import losses as losses_module
from . import optimizers as optimizers_module
from ._buffers import aligned_zeros
from ._kernels import LOSSES, METRICS, MAX_METRICS, Network
from ._progress import Output, Progress
from .callbacks import Callback, History
from .layers import Input, Layer

_MASK64 = (1 << 64) - 1


@contextlib.contextmanager
def _flushed(out):
    """Writes out's pending lines when the block ends, however it ends."""
    try:
        yield out
    finally:
        out.flush()


def _summary_widths():
    """Keras' summary column widths (padding included) for this terminal: a table
    min(88, columns - 4) wide, split at 45% and 80%, each column given 2 of padding, then
    narrowed evenly to fit the 4 borders, as rich (which draws Keras' table) narrows
    columns of fixed width."""
    import shutil
    line_length = max(40, min(88, shutil.get_terminal_size().columns - 4))
    widths, current = [], 0
    for pos in (0.45, 0.80, 1.0):
        width = int(pos * line_length) - current
        widths.append(width + 2)
        current += width
    excess, parts = sum(widths) - (line_length - 4), len(widths)
    for i in range(len(widths)):
        cut = round(excess / parts)
        widths[i] -= cut
        excess -= cut
        parts -= 1
    return widths


def _wrap(text, width):
    """text in lines of at most width characters, as rich fits a cell of Keras' summary:
    broken at spaces, a word too long for a line cut short with an ellipsis."""
    lines = []
    for word in text.split():
        if len(word) > width:
            word = word[:width - 1] + "…"
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _memory_size(nbytes):
    """Keras' readable_memory_size."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if nbytes / 1024 < 1:
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.2f} PB"


# Rows per compiled inference pass when the caller names none: as many as keep the
# per-call buffers near this many values (larger passes make larger, faster products).
_PREDICT_VALUES = 1 << 20

_METRIC_ALIASES = {
    "binary_accuracy": "binary_accuracy",
    "sparse_categorical_accuracy": "sparse_categorical_accuracy",
    "categorical_accuracy": "categorical_accuracy",
    "mae": "mean_absolute_error", "mean_absolute_error": "mean_absolute_error",
    "mse": "mean_squared_error", "mean_squared_error": "mean_squared_error",
}


def _resolve_metric(name, loss):
    """The kernel metric behind a metric name; "accuracy" follows the loss as in Keras."""
    if not isinstance(name, str):
        raise ValueError(f"metrics: expected metric names (strings), got {name!r}")
    if name in ("accuracy", "acc"):
        return {"binary_crossentropy": "binary_accuracy",
                "sparse_categorical_crossentropy": "sparse_categorical_accuracy",
                "categorical_crossentropy": "categorical_accuracy"}.get(getattr(loss, "name", None))
    if name in _METRIC_ALIASES:
        return _METRIC_ALIASES[name]
    raise ValueError(f"metrics: expected names among accuracy, {', '.join(_METRIC_ALIASES)}; "
                     f"got {name!r}")


class Sequential:
    """A linear stack of layers, with Keras' compile/fit/predict/evaluate."""

    _count = 0

    def __init__(self, layers=None, name=None, dtype=None):
        self.dtype = config.check_dtype(dtype if dtype is not None else config.floatx())
        if name is None:
            name = "sequential" if Sequential._count == 0 else f"sequential_{Sequential._count}"
            Sequential._count += 1
        self.name = name
        self.layers = []
        self._input_shape = None  # per-sample shape, from Input or build
        self._params = self._grads = self._network = None
        self._weights_order = None
        self.optimizer = self.loss = None
        self._metric_names = []
        self.compiled = False
        self._loss_scale = 1.0  # 0.5: scikit-learn's half squared error (fastnn.sklearn)
        self._clip_log_loss = False  # scikit-learn's log-loss value (fastnn.sklearn)
        self.stop_training = False
        self.history = None
        for layer in layers or []:
            self.add(layer)

    # ---- structure ---------------------------------------------------------------------

    def add(self, layer):
        """Appends a layer (an Input only declares the input shape)."""
        if isinstance(layer, Input):
            if self.layers:
                raise ValueError("layer: an Input must come before any other layer")
            self._input_shape = layer.shape
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected a fastnn.layers layer, got {type(layer).__name__}")
        if any(layer is other for other in self.layers):
            raise ValueError(f"layer: {layer.name} is already in this model")
        self.layers.append(layer)
        self._network = None  # rebuilt, keeping the weights of built layers
        declared = self._declared_input_shape()
        if declared is not None:  # as Keras: a model that knows its input builds at once
            try:
                self._output_shape_for(declared)
            except ValueError:
                self.layers.pop()
                raise
            self._build(declared)

    @property
    def built(self):
        return self._network is not None

    def _declared_input_shape(self):
        if self._input_shape is not None:
            return self._input_shape
        return getattr(self.layers[0], "declared_input_shape", None) if self.layers else None

    def _input_rank(self):
        """Per-sample rank the first layer needs: 1 (features), 2 (steps, channels) or None."""
        for layer in self.layers:
            if layer.input_rank is not None:
                return layer.input_rank
            if layer.count_params() or type(layer).__name__ == "Flatten":
                break
        return None

    def _per_sample(self, input_shape):
        """input_shape without its batch axis: a leading None, or one axis more than the
        first layer takes ((None, 400) and (400,) mean the same)."""
        shape = tuple(input_shape)
        rank = self._input_rank()
        if len(shape) >= 1 and shape[0] is None:
            shape = shape[1:]
        elif rank is not None and len(shape) == rank + 1:
            shape = shape[1:]
        return shape

    def _output_shape_for(self, input_shape):
        """Per-sample output shape of the stack, without building (raises on a mismatch)."""
        if not self.layers:
            raise ValueError("model: has no layers; add some before building")
        shape = input_shape
        for layer in self.layers:
            shape = layer.compute_output_shape(shape)
        return shape

    def build(self, input_shape=None):
        """Creates the parameters for inputs of this shape (with or without batch axis)."""
        if input_shape is None:
            input_shape = self._declared_input_shape()
            if input_shape is None:
                raise ValueError("input_shape: the model has no Input; pass input_shape")
        else:
            try:
                input_shape = self._per_sample(input_shape)
            except TypeError:
                raise TypeError(f"input_shape: expected a tuple, got {input_shape!r}") from None
            if not input_shape or not all(isinstance(d, (int, np.integer)) and d > 0 for d in input_shape):
                raise ValueError(f"input_shape: expected positive sizes, got {input_shape!r}")
            input_shape = tuple(int(d) for d in input_shape)
        self._output_shape_for(input_shape)
        self._build(input_shape)

    def _build(self, input_shape):
        shapes, shape = [], input_shape
        for layer in self.layers:
            shape = layer.build(shape)
            shapes.append(layer.param_shapes())
        sizes = [[math.prod(s) for s in layer_shapes] for layer_shapes in shapes]
        total = sum(sum(s) for s in sizes)
        params = aligned_zeros(max(total, 1), self.dtype)
        grads = aligned_zeros(max(total, 1), self.dtype)
        # Buffer position of each parameter element, in get_weights order: a layer may
        # store an array in another layout (Dense.choose_storage), and files keep this
        # order (_to_weights_order).
        positions = np.arange(params.size)
        order = []
        specs, offset = [], 0
        for layer, layer_sizes in zip(self.layers, sizes):
            layer.choose_storage(self.dtype)
            offsets, views = [], []
            for index, (p, size) in enumerate(zip(layer.params, layer_sizes)):
                view = layer.storage_view(index, params[offset:offset + size])
                view[...] = p
                offsets.append(offset)
                views.append(view)
                order.append(layer.storage_view(index, positions[offset:offset + size]).ravel())
                offset += size
            layer.params = views
            spec = layer.spec(offsets)
            if spec is not None:  # Flatten is a view: no compiled layer
                specs.append(spec)
        if not specs:  # only views (e.g. a lone Flatten): copy the input through
            width = math.prod(input_shape)
            specs.append({"kind": "activation", "in_dim": width, "out_dim": width, "act": 0,
                          "slope": 0.0, "rate": 0.0, "w": None, "b": None})
        self._input_shape = input_shape
        self._output_shape = tuple(self._output_shape_for(input_shape))
        self._params, self._grads = params, grads
        order = np.concatenate(order) if order else positions[:0]
        self._weights_order = None if np.array_equal(order, positions[:order.size]) else order
        # Buffer values per sample row of a forward pass (sizes predict's batches).
        self._values_per_row = math.prod(input_shape) + sum(s["out_dim"] for s in specs)
        # The largest matrix product per sample row, to tell when BLAS could use threads.
        self._widest_product = max([s["in_dim"] * s["out_dim"] for s in specs if s["w"] is not None] or [0])
        self._specs = specs
        self._network = Network(specs, params, grads)
        self._configure_loss()
        if self.optimizer is not None and self.optimizer.slots is not None \
                and self.optimizer.slots[0].shape != params.shape:
            self.optimizer.slots = None  # the parameters changed: fresh optimizer state

    @property
    def input_shape(self):
        return None if self._input_shape is None else (None,) + tuple(self._input_shape)

    @property
    def output_shape(self):
        if self._input_shape is None:
            return None
        return (None,) + tuple(self._output_shape_for(self._input_shape))

    def count_params(self):
        return sum(layer.count_params() for layer in self.layers)

    # ---- compile -----------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """Sets the optimizer, the loss and the metrics (see fastnn's API page)."""
        optimizer = optimizers_module.get(optimizer)
        loss = None if loss is None else losses_module.get(loss)
        if metrics is None:
            metrics = []
        elif isinstance(metrics, str):
            metrics = [metrics]
        metrics = list(metrics)
        if len(metrics) > MAX_METRICS:
            raise ValueError(f"metrics: at most {MAX_METRICS} metrics, got {len(metrics)}")
        for name in metrics:
            _resolve_metric(name, loss)  # rejects unknown names now
        self.optimizer, self.loss = optimizer, loss
        self._metric_names = metrics
        self.compiled = True
        if self._network is not None:
            self._configure_loss()

    def _metric_kernels(self):
        out_width = self._output_shape_for(self._input_shape)[-1] if self._network is not None else 1
        codes = []
        for name in self._metric_names:
            kernel = _resolve_metric(name, self.loss)
            if kernel is None:  # "accuracy" with MSE: by the output width, as Keras
                kernel = "binary_accuracy" if out_width == 1 else "categorical_accuracy"
            codes.append(METRICS[kernel])
        return codes

    def _fused(self):
        """Whether the last layer's sigmoid/softmax folds into the loss (logits path)."""
        last_act = getattr(self.layers[-1], "activation", None) if self.layers else None
        if self.loss is None or self.loss.from_logits:
            return False
        if self.loss.name == "binary_crossentropy":
            return last_act == "sigmoid"
        if self.loss.name in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
            return last_act == "softmax"
        return False

    def _configure_loss(self):
        if self._network is not None:
            self._configure_loss_of(self._network)

    def _configure_loss_of(self, network):
        """Hands the loss and metrics to a compiled network built from this model."""
        if self.loss is not None:
            network.set_loss(LOSSES[self.loss.name], self.loss.from_logits, self._fused(),
                             self._metric_kernels(), self._loss_scale,
                             getattr(self, "_clip_log_loss", False))

    def _require_compiled(self, what):
        if self.loss is None:
            raise ValueError(f"{what}: the model must be compiled with a loss first "
                             f"(model.compile(optimizer=..., loss=...))")

    # ---- data --------------------------------------------------------------------------

    def _prepare_x(self, x, name="x"):
        """x checked and converted to the (n, features) layout the compiled network reads
        (a sample's steps x channels are contiguous, so this is a free reshape). Checks
        that the model can be built from it, without building."""
        if self._network is not None:
            arr = check.samples(x, name, self.dtype, self._input_shape, self._input_rank())
        else:
            arr = check.samples(x, name, self.dtype, self._declared_input_shape(),
                                self._input_rank())
            try:
                self._output_shape_for(arr.shape[1:])
            except ValueError as err:
                raise ValueError(f"{name}: samples of shape {arr.shape[1:]} do not fit the "
                                 f"model: {err}") from None
        return arr.reshape(arr.shape[0], -1), tuple(arr.shape[1:])

    def _prepare_xy(self, x, y, xname="x", yname="y"):
        xa, sample_shape = self._prepare_x(x, xname)
        out_shape = self._output_shape_for(sample_shape)
        ya = check.targets(y, yname, self.dtype, self.loss.name, math.prod(out_shape),
                           xa.shape[0], out_shape)
        return xa, ya, sample_shape

    # ---- training ----------------------------------------------------------------------

    def fit(self, x=None, y=None, batch_size=32, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0,
            seed=None):
        """Trains for `epochs` epochs; returns a History. See fastnn's API page. A model
        trains in one thread at a time: fit while another thread's fit of this model runs
        raises RuntimeError, before changing anything."""
        # setdefault is one atomic dict operation, so two threads get the same lock
        lock = self.__dict__.get("_fit_lock") or self.__dict__.setdefault(
            "_fit_lock", threading.Lock())
        if not lock.acquire(blocking=False):
            raise RuntimeError("fit: this model is already training (in another thread, or "
                               "in the fit whose callback called this); a model trains in "
                               "one thread at a time")
        try:
            return self._fit(x, y, batch_size, epochs, verbose, callbacks, validation_split,
                             validation_data, shuffle, initial_epoch, seed)
        finally:
            lock.release()

    def _fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split,
             validation_data, shuffle, initial_epoch, seed):
        self._require_compiled("fit")
        batch_size = check.integer(32 if batch_size is None else batch_size, "batch_size", 1)
        epochs = check.integer(epochs, "epochs", 0)
        initial_epoch = check.integer(initial_epoch, "initial_epoch", 0)
        verbose = check.choice(verbose, "verbose", ("auto", 0, 1, 2))
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 0
        if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
                or not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split: expected a number in [0, 1), got {validation_split!r}")
        if seed is not None:
            seed = check.integer(seed, "seed", 0)
        if hasattr(callbacks, "on_epoch_end"):  # one callback, not in a list (Keras 3 takes it)
            callbacks = [callbacks]
        try:
            callbacks = list(callbacks or [])
        except TypeError:
            raise TypeError(f"callbacks: expected a list of callbacks, got {callbacks!r}") from None
        for cb in callbacks:
            if not hasattr(cb, "on_epoch_end"):
                raise TypeError(f"callbacks: expected objects with on_epoch_end(epoch, logs), got {cb!r}")
        if x is None or y is None:
            raise ValueError("x, y: fit needs both inputs and targets")

        xa, ya, sample_shape = self._prepare_xy(x, y)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data: expected a tuple (x_val, y_val)")
            # Keras' (x_val, y_val, sample_weight) with no weights is the plain pair
            if len(validation_data) == 3 and validation_data[2] is not None:
                raise ValueError("validation_data: validation sample weights (a third element, "
                                 "Keras' (x_val, y_val, sample_weight)) are not supported, as "
                                 "fit has no sample_weight; pass (x_val, y_val)")
            xv, yv, val_shape = self._prepare_xy(validation_data[0], validation_data[1],
                                                 "validation_data[0]", "validation_data[1]")
            if val_shape != sample_shape:
                raise ValueError(f"validation_data[0]: expected samples of shape {sample_shape} "
                                 f"(as x), got {val_shape}")
            val = (xv, yv)
        elif validation_split > 0:
            split = int(xa.shape[0] * (1.0 - validation_split))
            if split < 1 or split >= xa.shape[0]:
                raise ValueError(f"validation_split: {validation_split} of {xa.shape[0]} samples "
                                 f"leaves no training or no validation samples")
            val = (xa[split:], ya[split:])
            xa, ya = np.ascontiguousarray(xa[:split]), np.ascontiguousarray(ya[:split])

        # Checks done: from here on the model changes.
        if self._network is None:
            self._build(sample_shape)
        if seed is None:
            seed = int(config.rng().integers(0, 2**63))
        nthreads = config.get_num_threads()
        network, n = self._network, xa.shape[0]
        self.optimizer.configure(network, self._params.shape[0], self._params.dtype)
        steps = -(-n // batch_size)
        order = np.arange(n, dtype=np.int64)

        history = History()
        history.params = {"verbose": verbose, "epochs": epochs, "steps": steps}
        all_callbacks = [history] + callbacks
        for cb in all_callbacks:
            if hasattr(cb, "set_model"):
                cb.set_model(self)
            else:
                cb.model = self
        self.history = history
        self.stop_training = False
        for cb in all_callbacks:
            getattr(cb, "on_train_begin", lambda logs=None: None)({})
        training_logs = {}
        metric_names = list(self._metric_names)
        chunk = 1  # compiled steps per return to Python with a progress bar (see _run_epoch)
        # Each epoch on the thread count that runs it faster: one thread where another
        # process holds a core and the threads wait for each other (config.ThreadPicker)
        picker = config.ThreadPicker(nthreads) if nthreads > 1 else None
        out = Output()
        epoch_seconds = float("inf")  # the last epoch's
        # a callback besides History may print: fastnn's lines go out before it runs
        others_print = bool(callbacks)

        with config.blas_threads(1), _flushed(out):  # fastnn's threads call BLAS on panels
            for epoch in range(initial_epoch, epochs):
                for cb in all_callbacks:
                    getattr(cb, "on_epoch_begin", lambda e, logs=None: None)(epoch, {})
                epoch_seed = (seed + (epoch + 1) * 0x9E3779B97F4A7C15) & _MASK64
                if shuffle:
                    from ._kernels import shuffle as shuffle_rows
                    shuffle_rows(order, epoch_seed)
                progress = Progress(verbose, epoch, epochs, steps, chunk=chunk, out=out,
                                    slow=epoch_seconds >= Progress.REFRESH)
                epoch_threads = picker.next_call(1)[0] if picker else nthreads
                start = time.perf_counter()
                loss_sum, metric_sums = self._run_epoch(network, xa, ya, order, steps,
                                                        batch_size, epoch_seed ^ 0x5DEECE66D,
                                                        epoch_threads, progress, n,
                                                        metric_names)
                epoch_seconds = time.perf_counter() - start
                if picker:
                    picker.record(epoch_threads, epoch_seconds, 1, network.wait_fraction)
                self.optimizer.iterations = network.iterations
                logs = {"loss": loss_sum / n}
                logs.update({name: s / n for name, s in zip(metric_names, metric_sums)})
                if val is not None:
                    vloss, vmetrics = self._evaluate_arrays(val[0], val[1], batch_size, nthreads)
                    logs["val_loss"] = vloss
                    logs.update({f"val_{name}": v for name, v in zip(metric_names, vmetrics)})
                chunk = progress.chunk
                progress.end(logs)
                if others_print:
                    out.flush()
                for cb in all_callbacks:
                    cb.on_epoch_end(epoch, dict(logs) if cb is not history else logs)
                training_logs = logs
                if self.stop_training:
                    break
        # As Keras: the last epoch's logs, and no on_train_end after an exception (a
        # KeyboardInterrupt included), so EarlyStopping restores nothing then.
        for cb in all_callbacks:
            getattr(cb, "on_train_end", lambda logs=None: None)(dict(training_logs))
        return history

    def _run_epoch(self, network, xa, ya, order, steps, batch_size, dropout_seed, nthreads,
                   progress, n, metric_names):
        """One epoch of compiled steps; with a progress bar, in chunks between redraws."""
        # A batch larger than the data is one batch of all of it (the same steps, the same
        # numbers), and the kernels take the size as a C int and size their buffers by it.
        batch_size = min(batch_size, n)
        if progress.verbose != 1:
            return network.train(xa, ya, order, 0, steps, batch_size, dropout_seed, nthreads)
        # Steps per return to Python: learned on the first epoch and kept for the next ones,
        # so a fast epoch is one or two compiled calls, not a ramp of small ones.
        loss_sum, sums, done = 0.0, [0.0] * len(metric_names), 0
        chunk = progress.chunk
        while done < steps:
            end = min(steps, done + chunk)
            t0 = time.perf_counter()
            chunk_loss, chunk_sums = network.train(xa, ya, order, done, end, batch_size,
                                                   dropout_seed, nthreads)
            elapsed = time.perf_counter() - t0
            loss_sum += chunk_loss
            sums = [a + b for a, b in zip(sums, chunk_sums)]
            seen = min(end * batch_size, n)
            done = end
            logs = {"loss": loss_sum / seen}
            logs.update({name: s / seen for name, s in zip(metric_names, sums)})
            progress.update(done, logs)
            if elapsed < progress.REFRESH / 4:  # too short to be worth a return to Python
                chunk *= 2
        progress.chunk = chunk
        return loss_sum, sums

    # ---- inference ---------------------------------------------------------------------

    def predict(self, x, batch_size=None, verbose=0):
        """The last layer's output for x, as an (n, outputs) array of the model's dtype."""
        if batch_size is not None:
            batch_size = check.integer(batch_size, "batch_size", 1)
        batch = batch_size  # None: sized in _predict_into
        net = self._network
        if (net is not None and type(x) is np.ndarray and x.dtype == self.dtype and x.ndim == 2
                and x.shape[1] == net.in_dim and len(self._input_shape) == 1 and x.shape[0]
                and x.flags.c_contiguous):
            # Already in the network's layout: the per-request path of an app (no copy; the
            # finiteness check runs in C).
            out = np.empty((x.shape[0],) + self._output_shape, dtype=self.dtype)
            if self._predict_into(x, out.reshape(x.shape[0], -1), batch, check_finite=True):
                return out
        xa, sample_shape = self._prepare_x(x)
        if self._network is None:
            self._build(sample_shape)
        out = np.empty((xa.shape[0],) + self._output_shape, dtype=self.dtype)
        self._predict_into(xa, out.reshape(xa.shape[0], -1), batch)
        return out

    def _predict_into(self, xa, flat, batch, check_finite=False):
        if batch is None:
            batch = max(32, _PREDICT_VALUES // self._values_per_row)
        # Below 32768 buffer values no kernel forks threads (src_c/common.h), so a small
        # request skips looking the thread count up.
        small = xa.shape[0] * self._values_per_row < 32768
        nthreads = 1 if small else config.get_num_threads()
        batch = min(batch, xa.shape[0])  # as in _run_epoch
        if min(batch, xa.shape[0]) * self._widest_product < 65536:
            # Products this small never use BLAS threads: skip the cost of pinning them.
            return self._network.predict(xa, flat, batch, nthreads, check_finite)
        with config.blas_threads(1):
            return self._network.predict(xa, flat, batch, nthreads, check_finite)

    def __call__(self, x):
        return self.predict(x)

    def _evaluate_arrays(self, xa, ya, batch_size, nthreads):
        batch_size = min(batch_size, xa.shape[0])  # as in _run_epoch
        loss_sum, sums = self._network.evaluate(xa, ya, batch_size, nthreads)
        n = xa.shape[0]
        return loss_sum / n, [s / n for s in sums]

    def evaluate(self, x=None, y=None, batch_size=32, verbose=0, return_dict=False):
        """The loss (and metrics) on x, y: a float, a list [loss, *metrics], or a dict."""
        self._require_compiled("evaluate")
        batch_size = check.integer(32 if batch_size is None else batch_size, "batch_size", 1)
        xa, ya, sample_shape = self._prepare_xy(x, y)
        if self._network is None:
            self._build(sample_shape)
        nthreads = config.get_num_threads()
        with config.blas_threads(1):
            loss, metrics = self._evaluate_arrays(xa, ya, batch_size, nthreads)
        if verbose:
            parts = [f"loss: {loss:.4f}"] + [f"{k}: {v:.4f}" for k, v in zip(self._metric_names, metrics)]
            print(" - ".join(parts))
        if return_dict:
            return dict(zip(["loss"] + self._metric_names, [loss] + metrics))
        return [loss] + metrics if metrics else loss

    # ---- weights -----------------------------------------------------------------------

    @property
    def weights(self):
        return [p for layer in self.layers for p in layer.params]

    def _to_weights_order(self, flat):
        """A copy of an array laid out as the parameter buffer (optimizer state), its
        elements in get_weights order: each array's raveled in C order, one after another,
        whatever layout the buffer keeps them in."""
        flat = np.asarray(flat)
        return np.array(flat if self._weights_order is None else flat[self._weights_order])

    def _from_weights_order(self, flat):
        """The inverse of _to_weights_order: a new array laid out as the parameter buffer."""
        flat = np.asarray(flat)
        if self._weights_order is None:
            return np.array(flat)
        out = np.empty_like(flat)
        out[self._weights_order] = flat
        return out

    def get_weights(self):
        """Copies of every parameter array, in Keras' order and shapes."""
        return [np.array(p, dtype=self.dtype, order="C") for p in self.weights]

    def set_weights(self, weights):
        """Sets every parameter from a list in get_weights' order and shapes."""
        current = self.weights
        if not self.layers or (self._network is None and not all(l.built for l in self.layers)):
            raise ValueError("weights: the model must be built (call build, fit or predict) first")
        try:
            weights = list(weights)
        except TypeError:
            raise TypeError(f"weights: expected a list of {len(current)} arrays, got "
                            f"{type(weights).__name__}") from None
        if len(weights) != len(current):
            raise ValueError(f"weights: expected a list of {len(current)} arrays, got {len(weights)}")
        arrays = []
        for i, (w, p) in enumerate(zip(weights, current)):
            a = check.as_float_array(w, f"weights[{i}]", self.dtype)
            if a.shape != p.shape:
                raise ValueError(f"weights[{i}]: expected shape {p.shape}, got {a.shape}")
            arrays.append(a)
        for a, p in zip(arrays, current):
            p[...] = a

    def get_layer(self, name=None, index=None):
        """A layer by name or by index, as Keras."""
        if index is not None:
            if not isinstance(index, (int, np.integer)) or not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"index: expected an integer in [0, {len(self.layers)}), got {index!r}")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"name: no layer named {name!r}; layers are "
                         f"{', '.join(layer.name for layer in self.layers)}")

    # ---- display -----------------------------------------------------------------------

    def summary(self, print_fn=None):
        """Prints the layers, their output shapes and parameter counts (Keras' layout)."""
        print_fn = print_fn or print
        rows = [("Layer (type)", "Output Shape", "Param #")]
        shape = self._input_shape
        for layer in self.layers:
            if shape is not None:
                shape = layer.compute_output_shape(shape)
                out = str((None,) + tuple(shape))
                count = f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"
            else:
                out, count = "?", "0 (unbuilt)"
            rows.append((f"{layer.name} ({type(layer).__name__})", out, count))
        widths = _summary_widths()

        def line(left, mid, right, fill):
            return left + mid.join(fill * w for w in widths) + right

        def cells(row, sep):
            """The row's lines, a text longer than its column wrapped (_wrap)."""
            wrapped = [_wrap(text, w - 2) for text, w in zip(row, widths)]
            lines = []
            for k in range(max(len(c) for c in wrapped)):
                part = [c[k] if k < len(c) else "" for c in wrapped]
                lines.append(sep + sep.join([f" {part[0]:<{widths[0] - 2}} ",
                                             f" {part[1]:<{widths[1] - 2}} ",
                                             f" {part[2]:>{widths[2] - 2}} "]) + sep)
            return lines

        out = [f'Model: "{self.name}"', line("┏", "┳", "┓", "━"), *cells(rows[0], "┃"),
               line("┡", "╇", "┩", "━")]
        for i, row in enumerate(rows[1:]):
            out.extend(cells(row, "│"))
            out.append(line("├", "┼", "┤", "─") if i < len(rows) - 2 else line("└", "┴", "┘", "─"))
        if len(rows) == 1:
            out.append(line("└", "┴", "┘", "─"))
        itemsize = np.dtype(self.dtype).itemsize
        trainable = self.count_params()
        # As Keras, once the optimizer has state (after the first fit, or loaded): its
        # per-parameter slots, its iteration count and learning rate, all counted in the
        # total
        opt_count = opt_bytes = 0
        opt = self.optimizer
        if opt is not None and getattr(opt, "slots", None) is not None:
            per_param = {"SGD": 1 if getattr(opt, "momentum", 0) > 0 else 0, "Adam": 2,
                         "RMSprop": 2 if getattr(opt, "momentum", 0) > 0 else 1}
            slots = per_param.get(type(opt).__name__, len(opt.slots)) * trainable
            # Keras' iteration count is an int32 (its torch backend's), its rate a float
            opt_count, opt_bytes = slots + 2, slots * itemsize + 4 + itemsize
        total = trainable + opt_count
        out += [f" Total params: {total:,} ({_memory_size(trainable * itemsize + opt_bytes)})",
                f" Trainable params: {trainable:,} ({_memory_size(trainable * itemsize)})",
                " Non-trainable params: 0 (0.00 B)"]
        if opt_count:
            out.append(f" Optimizer params: {opt_count:,} ({_memory_size(opt_bytes)})")
        # A console or redirect that cannot encode box drawing would raise mid-table; draw
        # the grid in ASCII there. As in Keras (rich), stdout decides, print_fn or not.
        from ._progress import can_encode
        box = "┏┳┓┃┡╇┩│├┼┤└┴┘━─…"
        if not can_encode(sys.stdout, box):
            ascii_box = str.maketrans(box, "+++|+++|++++++=-.")
            out = [text.translate(ascii_box) for text in out]
            # and a name in characters it lacks (Cyrillic on an ASCII console) as "?"
            encoding = sys.stdout.encoding
            out = [text.encode(encoding, "replace").decode(encoding) for text in out]
        for text in out:
            print_fn(text)

    def __repr__(self):
        return f"<Sequential name={self.name!r} layers={len(self.layers)} dtype={self.dtype}>"

    # ---- saving (the format: fastnn/saving.py) -----------------------------------------

    def save(self, path):
        """Writes architecture, weights, compile settings and optimizer state to `path`
        (a zip of JSON and .npy; no pickle), atomically. `fastnn.load_model` reads it."""
        from . import saving
        saving.save_model(self, path)

    def __getstate__(self):
        """Pickle and deepcopy use the saved file's contents: (config, arrays)."""
        from . import saving
        return saving.get_state(self)

    def __setstate__(self, state):
        from . import saving
        saving.set_state(self, state)
