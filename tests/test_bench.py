"""The bench suite as CI runs it (a smoke run, no timing assertions), and fastnn's promise
that training allocates nothing on the Python heap per step."""
import gc
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np

from fastnn import Sequential
from fastnn.callbacks import Callback
from fastnn.layers import Dense
from fastnn.losses import SparseCategoricalCrossentropy
from fastnn.optimizers import Adam

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAP_BOUND = 16 * 1024  # bytes, whatever the number of steps or epochs


def test_bench_quick_smoke(tmp_path):
    """`python -m bench --quick` from the repository's root, with the NumPy peer only and
    one run: exits 0 and writes its JSON report."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--runs", "1", "--peers", "numpy",
         "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + "\n" + proc.stderr[-4000:]
    reports = sorted(out.glob("bench-*.json"))
    assert len(reports) == 1, proc.stdout[-2000:]
    report = json.loads(reports[0].read_text())
    trained = {(r["workload"], r["peer"]) for r in report["rows"] if r["section"] == "train"}
    for work in ("W1", "W2", "W3"):
        assert (work, "fastnn") in trained and (work, "numpy") in trained
    sections = {r["section"] for r in report["rows"]}
    assert {"latency", "throughput", "kernel", "memory"} <= sections
    assert report["targets"] and all("met" in t for t in report["targets"])
    assert "target" in proc.stdout and str(reports[0].name) in proc.stdout


class EpochPeak(Callback):
    """tracemalloc's peak growth from each epoch's start to its end."""

    def __init__(self):
        self.growth = []

    def on_epoch_begin(self, epoch, logs=None):
        self.base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()

    def on_epoch_end(self, epoch, logs=None):
        self.growth.append(tracemalloc.get_traced_memory()[1] - self.base)


def _traced_fit(model, x, y, epochs):
    """(peak growth of the fit call, largest peak growth of one epoch, retained bytes)."""
    probe = EpochPeak()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, seed=1, callbacks=[probe])
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base, max(probe.growth), current - base


def _w2_model(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model = Sequential([Dense(256, activation="relu"), Dense(128, activation="relu"), Dense(10)])
    model.compile(optimizer=Adam(), loss=SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=128, epochs=1, verbose=0, seed=0)  # workspaces, Adam state
    return model, x, y


def test_training_steps_allocate_nothing_on_the_python_heap():
    """After a first epoch, fit's compiled epochs allocate no Python-heap memory per step:
    the traced peak growth of a fit is the same small amount for 1 and for 5 epochs, and
    an epoch of 64 steps grows the heap no more than one of 8 steps."""
    model, x, y = _w2_model(8192)
    fit1, epoch1, kept1 = _traced_fit(model, x, y, 1)
    fit5, epoch5, kept5 = _traced_fit(model, x, y, 5)
    assert abs(fit5 - fit1) <= HEAP_BOUND, (fit1, fit5)
    assert max(epoch1, epoch5) <= HEAP_BOUND, (epoch1, epoch5)
    assert kept5 - kept1 <= HEAP_BOUND, (kept1, kept5)  # History's records only

    short, xs, ys = _w2_model(1024)
    _, epoch_short, _ = _traced_fit(short, xs, ys, 3)
    assert abs(max(epoch1, epoch5) - epoch_short) <= 4096, (epoch_short, epoch1, epoch5)
