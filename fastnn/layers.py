"""Layers. Each builds and owns its parameters; once its model is built they are views
into the model's one parameter buffer, so the optimizer updates all of them in one pass.

A layer describes itself to the compiled network through `spec()`; it computes nothing in
Python.
"""
import math
import re

import numpy as np

from . import activations, config
from ._kernels import ACTIVATIONS, dense_kernel_transposed


# Sizes reach the C kernels as C ints: a larger one is an impossible setting (it raised
# OverflowError, or MemoryError, only when the model was built).
_MAX_SIZE = 2**31 - 1


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    if value > _MAX_SIZE:
        raise ValueError(f"{name}: expected a positive integer up to 2**31 - 1, got {value!r}")
    return int(value)


def _shape_tuple(shape, name):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{name}: expected a tuple of positive integers, got {shape!r}") from None
    if not shape or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"{name}: expected a tuple of positive integers, got {shape!r}")
    if math.prod(int(d) for d in shape) > _MAX_SIZE:
        raise ValueError(f"{name}: expected at most 2**31 - 1 values per sample, got {shape!r}")
    return tuple(int(d) for d in shape)


# ---- initializers -----------------------------------------------------------------------

def _fans(shape):
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def _glorot_uniform(shape, rng):
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def _glorot_normal(shape, rng):
    fan_in, fan_out = _fans(shape)
    return _truncated_normal(shape, math.sqrt(2.0 / (fan_in + fan_out)), rng)


def _he_uniform(shape, rng):
    limit = math.sqrt(6.0 / _fans(shape)[0])
    return rng.uniform(-limit, limit, size=shape)


def _he_normal(shape, rng):
    return _truncated_normal(shape, math.sqrt(2.0 / _fans(shape)[0]), rng)


def _lecun_normal(shape, rng):
    return _truncated_normal(shape, math.sqrt(1.0 / _fans(shape)[0]), rng)


def _truncated_normal(shape, stddev, rng):
    """Normal draws beyond two standard deviations redrawn, as Keras' variance-scaling
    initializers (whose stddev is corrected for the truncation)."""
    stddev = stddev / 0.87962566103423978
    out = rng.standard_normal(size=shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(size=int(bad.sum()))
        bad = np.abs(out) > 2
    return out * stddev


INITIALIZERS = {
    "glorot_uniform": _glorot_uniform,
    "glorot_normal": _glorot_normal,
    "he_uniform": _he_uniform,
    "he_normal": _he_normal,
    "lecun_normal": _lecun_normal,
    "random_normal": lambda shape, rng: rng.normal(0.0, 0.05, size=shape),
    "random_uniform": lambda shape, rng: rng.uniform(-0.05, 0.05, size=shape),
    "zeros": lambda shape, rng: np.zeros(shape),
    "ones": lambda shape, rng: np.ones(shape),
}


def _initializer(identifier, name):
    if callable(identifier) and not isinstance(identifier, str):
        return identifier
    if identifier in INITIALIZERS:
        return INITIALIZERS[identifier]
    raise ValueError(f"{name}: expected one of {', '.join(INITIALIZERS)} or a callable "
                     f"(shape, rng) -> array, got {identifier!r}")


def _initializer_name(fn):
    """The registered name of an initializer function (None for a custom callable)."""
    return next((name for name, f in INITIALIZERS.items() if f is fn), None)


def _with_initializers(config, layer):
    """config plus the layer's initializer names (custom callables cannot be saved and are
    left out: from_config then uses the defaults)."""
    for key in ("kernel_initializer", "bias_initializer"):
        name = _initializer_name(getattr(layer, key))
        if name is not None:
            config[key] = name
    return config


# ---- layers -----------------------------------------------------------------------------

def _snake_case(name):
    """Keras' default layer names: MaxPooling1D -> max_pooling1d."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


class Layer:
    """Base class: a name, an input/output shape once built, and its parameters."""

    input_rank = None  # per-sample rank the layer needs as a first layer (None: any)
    # scikit-learn's L2 penalty on the kernel, alpha: loss += 0.5 alpha ||W||^2 / batch rows
    # (set by fastnn.sklearn; Keras layers have none)
    l2_per_batch = 0.0

    _counts = {}

    def __init__(self, name=None):
        if name is None:  # as Keras, only an unnamed layer takes a number of its kind
            kind = _snake_case(type(self).__name__)
            Layer._counts[kind] = Layer._counts.get(kind, 0) + 1
            name = kind if Layer._counts[kind] == 1 else f"{kind}_{Layer._counts[kind] - 1}"
        self.name = name
        self.input_shape = None
        self.output_shape = None
        self.params = []  # arrays in Keras' get_weights order

    @property
    def built(self):
        return self.input_shape is not None

    def compute_output_shape(self, input_shape):
        return input_shape

    def build(self, input_shape):
        """Creates the parameters for inputs of per-sample shape input_shape (kept when
        the layer was already built for that shape)."""
        output_shape = self.compute_output_shape(input_shape)
        if self.input_shape != input_shape:
            self.params = [np.asarray(p, dtype=np.float64) for p in self._initial_params(input_shape)]
        self.input_shape, self.output_shape = input_shape, output_shape
        return output_shape

    def _initial_params(self, input_shape):
        return []

    def get_weights(self):
        """Copies of this layer's parameters (Dense: kernel (in, units), bias (units,))."""
        return [np.array(p, order="C") for p in self.params]

    def set_weights(self, weights):
        """Sets this layer's parameters from arrays of the same shapes."""
        weights = list(weights)
        if len(weights) != len(self.params):
            raise ValueError(f"weights: {self.name} expects a list of {len(self.params)} arrays, "
                             f"got {len(weights)}")
        arrays = []
        for i, (w, p) in enumerate(zip(weights, self.params)):
            a = np.asarray(w, dtype=np.float64)
            if a.shape != p.shape:
                raise ValueError(f"weights[{i}]: expected shape {p.shape}, got {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"weights[{i}]: expected finite values")
            arrays.append(a)
        for a, p in zip(arrays, self.params):
            p[...] = a

    def param_shapes(self):
        return [p.shape for p in self.params]

    def choose_storage(self, dtype):
        """Called by the model before it lays the parameters out in its buffer."""

    def storage_view(self, index, flat):
        """Parameter `index` (get_weights order and shape) as a view of `flat`, its
        elements in the model's buffer."""
        return flat.reshape(self.params[index].shape)

    def count_params(self):
        return sum(int(p.size) for p in self.params)

    def spec(self, offsets):
        """The dict the compiled network reads (see fastnn/_network.pxi)."""
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        """A new layer from a get_config() dict, as Keras."""
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}>"


class Input(Layer):
    """Declares the per-sample input shape; holds no parameters and computes nothing."""

    def __init__(self, shape, name=None):
        super().__init__(name)
        self.shape = _shape_tuple(shape, "shape")


    def get_config(self):
        return {"name": self.name, "shape": list(self.shape)}


class Dense(Layer):
    """z = x @ kernel + bias, output activation(z). kernel is (in, units)."""

    input_rank = 1

    def __init__(self, units, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", name=None,
                 input_shape=None, input_dim=None):
        self.units = _positive_int(units, "units")
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializer(kernel_initializer, "kernel_initializer")
        self.bias_initializer = _initializer(bias_initializer, "bias_initializer")
        self.kernel_transposed = False  # the model's buffer layout (choose_storage)
        super().__init__(name)
        if input_dim is not None:
            input_shape = (_positive_int(input_dim, "input_dim"),)
        self.declared_input_shape = None if input_shape is None else _shape_tuple(input_shape, "input_shape")

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{self.name}: Dense expects inputs of shape (batch, features), "
                             f"got per-sample shape {input_shape}; add Flatten() before it")
        return (self.units,)

    def _initial_params(self, input_shape):
        rng = config.rng()
        kernel = self.kernel_initializer((input_shape[0], self.units), rng)
        return [kernel, self.bias_initializer((self.units,), rng)] if self.use_bias else [kernel]

    def choose_storage(self, dtype):
        # Where the forward product is faster over rows of the transposed kernel (e.g.
        # 400 inputs to 25 units), the buffer holds it as (units, in); self.params[0]
        # is still the (in, units) kernel, a transposed view.
        self.kernel_transposed = dense_kernel_transposed(
            self.input_shape[0], self.units, np.dtype(dtype) == np.float64)

    def storage_view(self, index, flat):
        if index == 0 and self.kernel_transposed:
            return flat.reshape(self.units, self.input_shape[0]).T
        return super().storage_view(index, flat)

    def spec(self, offsets):
        return {"kind": "dense", "in_dim": self.input_shape[0], "out_dim": self.units,
                "act": ACTIVATIONS[self.activation], "slope": activations.DEFAULT_LEAKY_SLOPE,
                "rate": 0.0, "w": offsets[0], "b": offsets[1] if self.use_bias else None,
                "l2_per_batch": self.l2_per_batch,
                "w_trans": self.kernel_transposed}


    def get_config(self):
        shape = getattr(self, "declared_input_shape", None)
        return _with_initializers({
            "name": self.name, "units": self.units, "activation": self.activation,
            "use_bias": self.use_bias, "input_shape": None if shape is None else list(shape)},
            self)


class Activation(Layer):
    """Applies an activation to its input."""

    def __init__(self, activation, name=None):
        self.activation = activations.get(activation)
        self.negative_slope = activations.DEFAULT_LEAKY_SLOPE
        super().__init__(name)

    def spec(self, offsets):
        # Softmax normalizes over the last axis: rows are (sample, step) pairs.
        width = math.prod(self.input_shape)
        channels = self.input_shape[-1]
        return {"kind": "activation", "in_dim": width, "out_dim": width,
                "act": ACTIVATIONS[self.activation], "slope": self.negative_slope,
                "rate": 0.0, "w": None, "b": None,
                "steps_in": width // channels, "channels_in": channels}


    def get_config(self):
        return {"name": self.name, "activation": self.activation}


class LeakyReLU(Activation):
    """leaky_relu with a chosen negative slope (default 0.01)."""

    def __init__(self, negative_slope=0.01, name=None):
        super().__init__("leaky_relu", name)
        slope = float(negative_slope)
        if not math.isfinite(slope):
            raise ValueError(f"negative_slope: expected a finite number, got {negative_slope!r}")
        self.negative_slope = slope


    def get_config(self):
        return {"name": self.name, "negative_slope": self.negative_slope}


class Dropout(Layer):
    """During training, zeroes each input with probability rate and scales the rest by
    1/(1 - rate); at inference it passes its input through."""

    def __init__(self, rate, name=None, seed=None):
        rate = float(rate) if isinstance(rate, (int, float, np.floating, np.integer)) and not isinstance(rate, bool) else None
        if rate is None or not 0.0 <= rate < 1.0:
            raise ValueError("rate: expected a number in [0, 1)")
        self.rate = rate
        super().__init__(name)

    def spec(self, offsets):
        width = math.prod(self.input_shape)
        return {"kind": "dropout", "in_dim": width, "out_dim": width, "act": 0,
                "slope": 0.0, "rate": self.rate, "w": None, "b": None}


    def get_config(self):
        return {"name": self.name, "rate": self.rate}


# ---- 1-D layers (channels-last: per-sample shape (steps, channels)) ---------------------

def _padding(value, name="padding"):
    if not isinstance(value, str) or value.lower() not in ("valid", "same"):
        raise ValueError(f"{name}: expected 'valid' or 'same', got {value!r}")
    return value.lower()


def _window_arithmetic(length, window, stride, padding, what):
    """Keras' output length and left padding for a window sliding over `length` steps."""
    if padding == "valid":
        if length < window:
            raise ValueError(f"{what}: input length {length} is shorter than the window "
                             f"{window} with padding='valid'")
        return (length - window) // stride + 1, 0
    steps_out = -(-length // stride)
    total = max((steps_out - 1) * stride + window - length, 0)
    return steps_out, total // 2


def _steps_channels(input_shape, what):
    if len(input_shape) != 2:
        raise ValueError(f"{what}: expects inputs of shape (batch, steps, channels), got "
                         f"per-sample shape {input_shape}")
    return input_shape


class Conv1D(Layer):
    """1-D convolution over steps, channels-last. Kernel (kernel_size, in_channels, filters)."""

    input_rank = 2

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None,
                 use_bias=True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 name=None, input_shape=None):
        self.filters = _positive_int(filters, "filters")
        self.kernel_size = _positive_int(kernel_size[0] if isinstance(kernel_size, (tuple, list)) and len(kernel_size) == 1 else kernel_size, "kernel_size")
        self.strides = _positive_int(strides[0] if isinstance(strides, (tuple, list)) and len(strides) == 1 else strides, "strides")
        self.padding = _padding(padding)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializer(kernel_initializer, "kernel_initializer")
        self.bias_initializer = _initializer(bias_initializer, "bias_initializer")
        super().__init__(name)
        self.declared_input_shape = None if input_shape is None else _shape_tuple(input_shape, "input_shape")

    def _geometry(self, input_shape):
        steps, channels = _steps_channels(input_shape, self.name)
        steps_out, pad_left = _window_arithmetic(steps, self.kernel_size, self.strides,
                                                 self.padding, self.name)
        return steps, channels, steps_out, pad_left

    def compute_output_shape(self, input_shape):
        return (self._geometry(input_shape)[2], self.filters)

    def _initial_params(self, input_shape):
        rng = config.rng()
        kernel = self.kernel_initializer((self.kernel_size, input_shape[1], self.filters), rng)
        return [kernel, self.bias_initializer((self.filters,), rng)] if self.use_bias else [kernel]

    def spec(self, offsets):
        steps, channels, steps_out, pad_left = self._geometry(self.input_shape)
        return {"kind": "conv1d", "in_dim": steps * channels, "out_dim": steps_out * self.filters,
                "act": ACTIVATIONS[self.activation], "slope": activations.DEFAULT_LEAKY_SLOPE,
                "rate": 0.0, "w": offsets[0], "b": offsets[1] if self.use_bias else None,
                "l2_per_batch": self.l2_per_batch,
                "steps_in": steps, "channels_in": channels, "steps_out": steps_out,
                "kernel": self.kernel_size, "stride": self.strides, "pad_left": pad_left}


    def get_config(self):
        shape = getattr(self, "declared_input_shape", None)
        return _with_initializers({
            "name": self.name, "filters": self.filters, "kernel_size": self.kernel_size,
            "strides": self.strides, "padding": self.padding, "activation": self.activation,
            "use_bias": self.use_bias, "input_shape": None if shape is None else list(shape)},
            self)


class MaxPooling1D(Layer):
    """Maximum over windows of pool_size steps, moved by strides (default pool_size)."""

    input_rank = 2

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None):
        self.pool_size = _positive_int(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else _positive_int(strides, "strides")
        self.padding = _padding(padding)
        super().__init__(name)

    def _geometry(self, input_shape):
        steps, channels = _steps_channels(input_shape, self.name)
        steps_out, pad_left = _window_arithmetic(steps, self.pool_size, self.strides,
                                                 self.padding, self.name)
        return steps, channels, steps_out, pad_left

    def compute_output_shape(self, input_shape):
        return (self._geometry(input_shape)[2], input_shape[1])

    def spec(self, offsets):
        steps, channels, steps_out, pad_left = self._geometry(self.input_shape)
        return {"kind": "maxpool1d", "in_dim": steps * channels, "out_dim": steps_out * channels,
                "act": 0, "slope": 0.0, "rate": 0.0, "w": None, "b": None,
                "steps_in": steps, "channels_in": channels, "steps_out": steps_out,
                "kernel": self.pool_size, "stride": self.strides, "pad_left": pad_left}


    def get_config(self):
        return {"name": self.name, "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}


class GlobalAveragePooling1D(Layer):
    """The mean over steps, per channel: (steps, channels) -> (channels,)."""

    input_rank = 2

    def compute_output_shape(self, input_shape):
        return (_steps_channels(input_shape, self.name)[1],)

    def spec(self, offsets):
        steps, channels = self.input_shape
        return {"kind": "global_avgpool1d", "in_dim": steps * channels, "out_dim": channels,
                "act": 0, "slope": 0.0, "rate": 0.0, "w": None, "b": None,
                "steps_in": steps, "channels_in": channels, "steps_out": 1}


class Flatten(Layer):
    """(steps, channels) -> (steps * channels,). A view: a sample's features are already
    contiguous, so the compiled network has no layer for it."""

    def compute_output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def spec(self, offsets):
        return None
