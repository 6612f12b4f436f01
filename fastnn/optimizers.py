"""Optimizers with Keras 3's formulas and defaults. Each updates the model's whole flat
parameter buffer in one compiled pass (src_c/optimizers.c); these classes hold the
settings and the state (step count, moment buffers)."""
import math

import numpy as np

from ._buffers import aligned_copy, aligned_zeros, is_aligned


def _number(value, name, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    bad = not math.isfinite(value)
    if low is not None:
        bad = bad or value < low or (low_open and value == low)
    if high is not None:
        bad = bad or value >= high
    if bad:
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else f"< {high}"
        raise ValueError(f"{name}: expected a finite number {lo} {hi}".rstrip() + f", got {value!r}")
    return value


class Optimizer:
    kind = None

    def __init__(self, learning_rate):
        self.learning_rate = _number(learning_rate, "learning_rate", 0.0)
        self.iterations = 0
        self.slots = None  # two state arrays, as long as the parameter buffer

    def _state_for(self, n, dtype):
        """The state arrays for a buffer of n parameters, created zeroed on first use."""
        if self.slots is None or self.slots[0].shape != (n,) or self.slots[0].dtype != dtype:
            self.slots = (aligned_zeros(n, dtype), aligned_zeros(n, dtype))
            self.iterations = 0
        elif not all(is_aligned(s) and s.flags.c_contiguous for s in self.slots):
            self.slots = tuple(aligned_copy(s) for s in self.slots)  # e.g. loaded
        return self.slots

    def configure(self, network, n, dtype):
        """Hands settings and state to the compiled network."""
        s1, s2 = self._state_for(n, dtype)
        network.set_optimizer(self.kind, self.learning_rate, getattr(self, "beta_1", 0.0),
                              getattr(self, "beta_2", 0.0), getattr(self, "epsilon", 0.0),
                              getattr(self, "rho", 0.0), getattr(self, "momentum", 0.0),
                              getattr(self, "nesterov", False), self.iterations, s1, s2)

    def get_config(self):
        return {k: v for k, v in vars(self).items() if k not in ("slots", "iterations")}

    @classmethod
    def from_config(cls, config):
        """A new optimizer (fresh state) from a get_config() dict."""
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """w -= lr g; with momentum: v = momentum v - lr g, w += v (nesterov: w += momentum v - lr g)."""
    kind = 0

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        super().__init__(learning_rate)
        self.momentum = _number(momentum, "momentum", 0.0, 1.0)
        self.nesterov = bool(nesterov)


class Adam(Optimizer):
    """Keras' Adam: lr_t = lr sqrt(1 - b2^t)/(1 - b1^t); w -= lr_t m / (sqrt(v) + eps)."""
    kind = 1

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(learning_rate)
        self.beta_1 = _number(beta_1, "beta_1", 0.0, 1.0)
        self.beta_2 = _number(beta_2, "beta_2", 0.0, 1.0)
        self.epsilon = _number(epsilon, "epsilon", 0.0)


class RMSprop(Optimizer):
    """Keras 3's RMSprop: v = rho v + (1 - rho) g^2; w -= lr g / sqrt(v + eps)."""
    kind = 2

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7):
        super().__init__(learning_rate)
        self.rho = _number(rho, "rho", 0.0, 1.0)
        self.momentum = _number(momentum, "momentum", 0.0, 1.0)
        self.epsilon = _number(epsilon, "epsilon", 0.0)


ALIASES = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}


def get(identifier):
    """An Optimizer from an instance, a class or a name."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer) and identifier is not Optimizer:
        return identifier()
    if isinstance(identifier, str) and identifier.lower() in ALIASES:
        return ALIASES[identifier.lower()]()
    raise ValueError(f"optimizer: expected a fastnn.optimizers instance, class or one of "
                     f"{', '.join(ALIASES)}, got {identifier!r}")
