"""Memory: repeated fit / predict / evaluate / save / load / pickle cycles keep the
resident memory flat. Each cycle allocates C workspaces of about a megabyte (a batch of 256
rows through 256-wide layers) and builds, saves and reloads whole models, so a leak of any
of them per cycle would add hundreds of megabytes over the run.

Run with `pytest -s tests/test_leaks.py` to see the memory curve."""
import gc
import os
import pickle
import sys

import numpy as np
import pytest

from fastnn import Sequential, load_model, set_random_seed
from fastnn.callbacks import EarlyStopping
from fastnn.layers import Conv1D, Dense, Dropout, Flatten, MaxPooling1D

CYCLES = 200
WARMUP = 40
SAMPLE_EVERY = 20
# Allowed growth of the resident memory's levels between the halves of the run after
# warm-up: one leaked workspace per cycle would be about 1 MB x 80 cycles.
BOUND_MB = 12

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm") or
                                 os.environ.get("FASTNN_SANITIZED") == "1",
                                 reason="needs /proc (Linux) and an unsanitized build")


def _trim_heap():
    """Hands the allocator's free memory back to the system (glibc's malloc_trim) where
    there is such a call, so that resident memory counts what is in use rather than
    where freed blocks happened to fall."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_mb():
    _trim_heap()
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_repeated_cycles_keep_resident_memory_flat(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=512)
    xc = rng.standard_normal((256, 32, 2)).astype(np.float32)
    path = tmp_path / "model.fastnn"

    def cycle(i):
        set_random_seed(i % 7)
        model = Sequential([Dense(256, activation="relu"), Dropout(0.1),
                            Dense(256, activation="tanh"), Dense(10, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(x, y, batch_size=256, epochs=1, verbose=0, seed=i, validation_split=0.25,
                  callbacks=[EarlyStopping(monitor="val_loss")])
        model.predict(x)
        model.predict(x[:7], batch_size=3)
        model.evaluate(x, y, batch_size=128)
        with pytest.raises(ValueError):
            model.predict(x[:, :5])  # a rejected input allocates nothing that stays
        model.save(path)
        loaded = load_model(path)
        loaded.fit(x[:64], y[:64], batch_size=64, verbose=0, seed=i)
        pickle.loads(pickle.dumps(loaded)).predict(x[:10])
        conv = Sequential([Conv1D(8, 3, activation="relu"), MaxPooling1D(2), Flatten(),
                           Dense(3)])
        conv.compile(optimizer="sgd", loss="mse")
        conv.fit(xc, np.zeros((256, 3)), batch_size=128, verbose=0, seed=i)
        conv.predict(xc)

    curve = []
    for i in range(CYCLES):
        cycle(i)
        if i % SAMPLE_EVERY == SAMPLE_EVERY - 1 or i == 0:
            gc.collect()
            curve.append((i + 1, round(rss_mb(), 1)))
    after_warmup = [mb for n, mb in curve if n >= WARMUP]
    report = "RSS (MB) after cycles: " + ", ".join(f"{n}: {mb}" for n, mb in curve)
    # Resident memory is sampled after handing the allocator's free memory back
    # (_trim_heap); without that, glibc kept freed blocks and samples moved between levels
    # tens of megabytes apart, whichever cycle they landed on. A leak lifts both the last
    # sample and the floor of the run's second half.
    first, second = after_warmup[:len(after_warmup) // 2], after_warmup[len(after_warmup) // 2:]
    low, growth = min(second) - min(first), after_warmup[-1] - after_warmup[0]
    print(f"\n{report}\nafter {WARMUP} cycles of warm-up: grew {growth:.1f} MB, the second "
          f"half's lowest sample {low:.1f} MB", file=sys.stderr)
    assert growth < BOUND_MB, report
    assert low < BOUND_MB, report
