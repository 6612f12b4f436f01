"""fastnn.plot_history: curves of a History to a PNG."""
import numpy as np
import pytest

import fastnn
from fastnn import Sequential
from fastnn.layers import Dense


def small_history():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    model = Sequential([Dense(4, activation="relu"), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model.fit(x, y, epochs=3, validation_split=0.25, verbose=0, seed=0)


def test_plot_history_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = fastnn.plot_history(small_history(), tmp_path / "h.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_history_rejects_empty():
    with pytest.raises(ValueError, match="history"):
        fastnn.plot_history({})
