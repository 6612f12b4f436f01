"""Losses, Keras' classes and names. Each is a mean over the last axis, then over the
batch. The computation happens in the compiled kernels (src_c/losses.c); calling a loss on
arrays uses the NumPy reference."""
import numpy as np

from . import reference


class Loss:
    name = None
    reference_name = None

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def __call__(self, y_true, y_pred):
        args = (np.asarray(y_pred, dtype=np.float64), np.asarray(y_true, dtype=np.float64))
        if self.name == "mean_squared_error":
            return getattr(reference, self.name)(*args)[0]
        return getattr(reference, self.name)(*args, from_logits=self.from_logits)[0]

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}

    @classmethod
    def from_config(cls, config):
        """A new loss from a get_config() dict ("name" is the class's own)."""
        return cls(**{k: v for k, v in config.items() if k != "name"})

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class BinaryCrossentropy(Loss):
    """-y log p - (1 - y) log(1 - p); targets in [0, 1], one column per label."""
    name = "binary_crossentropy"


class MeanSquaredError(Loss):
    """(y - p)^2."""
    name = "mean_squared_error"

    def __init__(self):
        super().__init__(False)

    def __repr__(self):
        return "MeanSquaredError()"

    def get_config(self):
        return {"name": self.name}


class SparseCategoricalCrossentropy(Loss):
    """-log p[y] for integer class ids y."""
    name = "sparse_categorical_crossentropy"


class CategoricalCrossentropy(Loss):
    """-sum_j y_j log p_j for one-hot (or soft) targets."""
    name = "categorical_crossentropy"


ALIASES = {
    "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
}


def get(identifier):
    """A Loss from an instance, a class or a name."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss) and identifier is not Loss:
        return identifier()
    if isinstance(identifier, str) and identifier in ALIASES:
        return ALIASES[identifier]()
    raise ValueError(f"loss: expected a fastnn.losses instance, class or one of "
                     f"{', '.join(ALIASES)}, got {identifier!r}")
