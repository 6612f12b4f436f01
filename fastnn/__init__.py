"""fastnn: train small and medium neural networks fast on the CPU, with the Keras API.

    from fastnn import Sequential
    from fastnn.layers import Dense
    model = Sequential([Dense(25, activation="sigmoid"), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(X, y, epochs=100)

The numeric work runs in C kernels (src_c/) called with the GIL released.
"""
from . import activations, callbacks, layers, losses, optimizers, reference
from .config import (floatx, get_num_threads, num_threads, set_floatx, set_num_threads,
                     set_random_seed)
from .gradcheck import gradcheck
from .models import Sequential
from .plotting import plot_history
from .saving import load_model

__version__ = "0.1.0"

__all__ = [
    "Sequential", "load_model", "plot_history", "gradcheck", "set_num_threads", "get_num_threads", "num_threads",
    "set_random_seed", "set_floatx", "floatx", "activations", "callbacks", "layers",
    "losses", "optimizers", "reference",
]
