"""fastnn.plot_history: curves of a History to a PNG."""
import os
import textwrap

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


def test_plot_history_leaves_the_callers_backend_and_pyplot_alone(run_python, tmp_path):
    # In a fresh interpreter: this one's backend may already be Agg, which would hide a switch.
    pytest.importorskip("matplotlib")
    code = textwrap.dedent("""
        import sys
        import matplotlib
        matplotlib.use("svg")
        import fastnn
        path = fastnn.plot_history({"loss": [1.0, 0.5, 0.2], "val_loss": [1.2, 0.7, 0.4],
                                    "accuracy": [0.5, 0.7, 0.9]}, "h.png", title="t")
        print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules, path)
    """)
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    done = run_python(code, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["svg", "False", "h.png"]
    with open(tmp_path / "h.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread
    assert imread(tmp_path / "h.png").shape[:2] == (350, 900)  # 2 panels of 4.5 x 3.5 in at 100 dpi
