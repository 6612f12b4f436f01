"""Activation functions, by name or as these callables (`activation=fastnn.activations.relu`).

The compiled kernels compute them inside layers; calling one of these on an array uses the
NumPy reference, for convenience and inspection.
"""
import numpy as np

from . import reference

NAMES = ("linear", "sigmoid", "relu", "leaky_relu", "tanh", "softmax")
DEFAULT_LEAKY_SLOPE = 0.01  # the course's and PyTorch's slope (Keras' own default is 0.2)


def _make(name):
    def activation(x):
        return reference.activation_forward(np.asarray(x, dtype=np.float64), name)
    activation.__name__ = activation.__qualname__ = name
    activation.__doc__ = f"The {name} activation (NumPy reference)."
    return activation


linear = _make("linear")
sigmoid = _make("sigmoid")
relu = _make("relu")
leaky_relu = _make("leaky_relu")
tanh = _make("tanh")
softmax = _make("softmax")


def get(identifier):
    """The activation name for a string, one of this module's callables, or None."""
    if identifier is None:
        return "linear"
    if isinstance(identifier, str):
        if identifier in NAMES:
            return identifier
        raise ValueError(f"activation: expected one of {', '.join(NAMES)} or None, got {identifier!r}")
    name = getattr(identifier, "__name__", None)
    if callable(identifier) and name in NAMES:
        return name
    raise ValueError(f"activation: expected one of {', '.join(NAMES)}, None or "
                     f"fastnn.activations.<name>, got {identifier!r}")
