"""Threads: fastnn releases the GIL in training and inference, so one model's predict may
run from many threads at once and separate models may train in parallel threads. No race
may show: concurrent results equal the sequential ones bit for bit. Changing the thread
count between fits changes nothing either (results never depend on it)."""
import os
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastnn
from fastnn import Sequential, set_random_seed
from fastnn.layers import Conv1D, Dense, Dropout, Flatten, MaxPooling1D
from fastnn.losses import SparseCategoricalCrossentropy
from fastnn.optimizers import Adam


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    fastnn.set_num_threads(None)


def run_threads(targets):
    """Runs each callable in its own thread, all released at once; returns their results
    (re-raising the first exception)."""
    results, errors = [None] * len(targets), []
    barrier = threading.Barrier(len(targets))

    def work(i, fn):
        try:
            barrier.wait()
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001  reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, fn)) for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def dense_problem(n=2000, features=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = rng.integers(0, 4, size=n)
    return x, y


def dense_model(seed=0):
    set_random_seed(seed)
    model = Sequential([Dense(128, activation="relu"), Dropout(0.1), Dense(64, activation="tanh"),
                        Dense(4, activation="softmax")])
    model.compile(optimizer=Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def conv_problem(n=600, steps=40, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, steps, 3)).astype(np.float32), rng.integers(0, 5, size=n)


def conv_model(seed=0):
    set_random_seed(seed)
    model = Sequential([Conv1D(16, 5, strides=2, padding="same", activation="relu"),
                        MaxPooling1D(2), Conv1D(8, 3, activation="relu"), Flatten(), Dense(5)])
    model.compile(optimizer=Adam(1e-2), loss=SparseCategoricalCrossentropy(from_logits=True))
    return model


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("kind", ["dense", "conv"])
@pytest.mark.parametrize("threads_each", [1, 2])
def test_predict_from_8_threads_equals_sequential(kind, threads_each):
    x, y = dense_problem() if kind == "dense" else conv_problem()
    model = dense_model() if kind == "dense" else conv_model()
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    chunks = [x[i::8] for i in range(8)]
    with fastnn.num_threads(threads_each):
        expected = [model.predict(c) for c in chunks] + [model.predict(x, batch_size=97)]

    def job(i):
        def run():
            with fastnn.num_threads(threads_each):
                outs = []
                for _ in range(5):  # overlapping calls on one model's weights
                    outs.append(model.predict(chunks[i]) if i < 8 else model.predict(x, batch_size=97))
                return outs
        return run

    results = run_threads([job(i) for i in range(9)])
    for i, outs in enumerate(results):
        for out in outs:
            assert np.array_equal(out, expected[i]), i


def test_evaluate_from_many_threads_equals_sequential():
    x, y = dense_problem()
    model = dense_model()
    model.fit(x, y, epochs=1, verbose=0, seed=0)
    expected = model.evaluate(x, y, return_dict=True)
    results = run_threads([lambda: model.evaluate(x, y, return_dict=True) for _ in range(6)])
    assert all(r == expected for r in results)


@pytest.mark.parametrize("threads_each", [1, 2])
def test_fit_two_models_in_two_threads_equals_sequential_fits(threads_each):
    """A dense and a conv model (different kernels, workspaces and batch sizes) trained at
    the same time in two Python threads, against the same fits one after the other."""
    (xd, yd), (xc, yc) = dense_problem(), conv_problem()

    def fit_dense():
        model = dense_model(seed=1)
        with fastnn.num_threads(threads_each):
            hist = model.fit(xd, yd, batch_size=64, epochs=3, verbose=0, seed=5,
                             validation_split=0.1)
        return model.get_weights(), hist.history, model.optimizer.slots

    def fit_conv():
        model = conv_model(seed=2)
        with fastnn.num_threads(threads_each):
            hist = model.fit(xc, yc, batch_size=50, epochs=3, verbose=0, seed=6)
        return model.get_weights(), hist.history, model.optimizer.slots

    # The global generator behind weight initialization is process-wide: build (and so
    # initialize) both models first, then train them in parallel.
    d_model = dense_model(seed=1)
    d_model.build((xd.shape[1],))
    c_model = conv_model(seed=2)
    c_model.build(xc.shape[1:])
    sequential = [fit_dense(), fit_conv()]

    def train(model, x, y, **kw):
        def run():
            with fastnn.num_threads(threads_each):
                hist = model.fit(x, y, verbose=0, **kw)
            return model.get_weights(), hist.history, model.optimizer.slots
        return run

    parallel = run_threads([
        train(d_model, xd, yd, batch_size=64, epochs=3, seed=5, validation_split=0.1),
        train(c_model, xc, yc, batch_size=50, epochs=3, seed=6)])
    for (w_s, h_s, s_s), (w_p, h_p, s_p) in zip(sequential, parallel):
        assert same(w_s, w_p) and h_s == h_p and same(s_s, s_p)


def test_many_models_fit_in_parallel_threads():
    x, y = dense_problem(n=500, features=10)
    models = []
    for seed in range(6):
        set_random_seed(seed)
        m = Sequential([Dense(32, activation="relu"), Dense(4, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        m.build((10,))
        models.append(m)
    initial = [m.get_weights() for m in models]
    results = run_threads([lambda m=m, s=s: (m.fit(x, y, epochs=2, verbose=0, seed=s),
                                             m.get_weights())[1]
                           for s, m in enumerate(models)])
    for s, (w0, got) in enumerate(zip(initial, results)):
        ref_model = Sequential([Dense(32, activation="relu"), Dense(4, activation="softmax")])
        ref_model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        ref_model.build((10,))
        ref_model.set_weights(w0)
        ref_model.fit(x, y, epochs=2, verbose=0, seed=s)
        assert same(ref_model.get_weights(), got), s


def test_set_num_threads_changed_between_fits_changes_nothing():
    x, y = dense_problem()
    runs = []
    for schedule in ([1, 1, 1], [1, 2, 3], [2, 1, 4], [4, 4, 1]):
        model = dense_model(seed=3)
        losses = []
        for epoch, n in enumerate(schedule):
            fastnn.set_num_threads(n)
            hist = model.fit(x, y, batch_size=128, epochs=epoch + 1, initial_epoch=epoch,
                             verbose=0, seed=11)
            losses += hist.history["loss"]
        fastnn.set_num_threads(None)
        runs.append((model.get_weights(), losses, model.predict(x)))
    for w, losses, pred in runs[1:]:
        assert same(w, runs[0][0]) and losses == runs[0][1] and np.array_equal(pred, runs[0][2])


def test_thread_count_scopes_are_per_thread():
    """`with num_threads(n)` in one thread does not change another thread's count."""
    fastnn.set_num_threads(3)
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def scoped():
        with fastnn.num_threads(1):
            inside.set()
            release.wait(10)
            seen["scoped"] = fastnn.get_num_threads()

    t = threading.Thread(target=scoped)
    t.start()
    inside.wait(10)
    seen["other"] = fastnn.get_num_threads()
    release.set()
    t.join()
    assert seen == {"scoped": 1, "other": 3}


def test_gil_is_released_during_a_long_fit():
    """A Python thread keeps running while fit runs whole epochs in compiled code: the
    longest pause between its ticks is a small fraction of an epoch."""
    x, y = dense_problem(n=40000, features=100)
    model = dense_model()
    model.build((100,))
    with fastnn.num_threads(1):
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, seed=0)
        epoch = time.perf_counter() - t0
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.02)
    with fastnn.num_threads(1):
        start = time.perf_counter()
        model.fit(x, y, batch_size=32, epochs=2, verbose=0, seed=1)
        end = time.perf_counter()
    stop.set()
    t.join()
    during = [s for s in ticks if start <= s <= end]
    gaps = np.diff([start] + during + [end])
    # With the GIL held the ticker would stall for a whole epoch (one compiled call).
    assert epoch > 0.1, epoch  # long enough to tell
    assert len(during) > 10 and gaps.max() < epoch / 3, (epoch, gaps.max(), len(during))


def test_fit_of_a_model_already_training_in_another_thread_raises():
    """A model trains in one thread at a time: a second fit (or a change to what the
    running one uses) raises RuntimeError instead of freeing buffers under it; the first
    fit finishes normally and the model trains again afterwards."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((100000, 64)).astype(np.float32)
    y = (x.sum(axis=1) > 0).astype(np.float32)
    model = Sequential([Dense(64, activation="relu"), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x[:64], y[:64], verbose=0)
    done = []
    # one epoch of 25000 steps: a single compiled call of a few hundred milliseconds
    worker = threading.Thread(
        target=lambda: done.append(model.fit(x, y, batch_size=4, epochs=1, verbose=0)))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not model._network.busy and time.monotonic() < deadline:
            time.sleep(0.0005)
        assert model._network.busy
        with pytest.raises(RuntimeError, match="another thread"):
            model.fit(x, y, batch_size=200, epochs=1, verbose=0)
        with pytest.raises(RuntimeError, match="another thread"):
            model._network.max_parts = 1
    finally:
        worker.join()
    assert len(done) == 1 and np.isfinite(done[0].history["loss"]).all()
    assert not model._network.busy
    history = model.fit(x[:2000], y[:2000], batch_size=200, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_fit_guard_holds_between_epochs():
    """The guard covers the whole fit, callbacks and the Python work between epochs
    included, not only the compiled steps."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((256, 16)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    model = Sequential([Dense(8, activation="relu"), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    started, release = threading.Event(), threading.Event()

    class Pause:
        def on_epoch_end(self, epoch, logs=None):
            started.set()
            release.wait(30)

    worker = threading.Thread(target=lambda: model.fit(x, y, epochs=2, verbose=0,
                                                       callbacks=[Pause()]))
    worker.start()
    try:
        assert started.wait(30)
        weights = [w.copy() for w in model.get_weights()]
        with pytest.raises(RuntimeError, match="another thread"):
            model.fit(x, y, epochs=1, verbose=0)
        assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))
    finally:
        release.set()
        worker.join()
    model.fit(x, y, epochs=1, verbose=0)  # free again


def _fit_in_child(queue):
    """A forked child's fit: its weights, its thread count and its warnings to the queue."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, y = dense_problem()
        model = dense_model(seed=5)
        model.fit(x, y, batch_size=256, epochs=2, verbose=0, seed=3)
        fastnn.set_num_threads(2)  # asks for more: a warning, still one thread
        threads = fastnn.get_num_threads()
    queue.put((model.get_weights(), threads, [str(w.message) for w in caught]))


@pytest.mark.skipif(not hasattr(__import__("os"), "register_at_fork"), reason="no fork")
def test_fit_in_a_process_forked_after_threads_ran():
    """The OpenMP runtime cannot start threads in a child forked after the parent ran a
    team: the child's fit used to wait forever at its first barrier (a multiprocessing
    Pool worker, joblib's "multiprocessing" backend). There fastnn runs on one thread,
    with the bits of any thread count."""
    import multiprocessing
    x, y = dense_problem()
    fastnn.set_num_threads(2)
    model = dense_model(seed=5)
    model.fit(x, y, batch_size=256, epochs=2, verbose=0, seed=3)  # the parent's threads
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_fit_in_child, args=(queue,))
    child.start()
    try:
        weights, threads, warned = queue.get(timeout=120)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    assert threads == 1
    assert any("forked" in w for w in warned)
    assert same(weights, model.get_weights())


def _allowed_cpus_by_thread():
    """Each thread of this process: the CPUs it may run on, as Linux lists them."""
    allowed = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list:"):
                        allowed[tid] = line.split()[1]
        except FileNotFoundError:  # a thread that has just ended
            pass
    return allowed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux thread affinity")
def test_leaving_a_core_moves_the_thread_and_keeps_its_affinity():
    """The move of a worker that woke on its caller's core (src_c/threads.c), on this
    thread: it runs on another core afterwards, and may run where it could before."""
    from fastnn import _kernels
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("one core: nowhere to move")
    for _ in range(5):
        before, after = _kernels.leave_current_cpu()
        assert before in allowed and after in allowed and after != before
        assert os.sched_getaffinity(0) == allowed
    os.sched_setaffinity(0, {before})  # pinned there: the thread stays
    try:
        assert _kernels.leave_current_cpu() == (before, before)
    finally:
        os.sched_setaffinity(0, allowed)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux thread affinity")
def test_waking_the_team_leaves_every_threads_affinity_as_it_was():
    """Before its compiled work fastnn moves an OpenMP worker that woke on the caller's
    core to another core by narrowing the worker's affinity for a moment (src_c/threads.c).
    Afterwards every thread may run wherever it could before."""
    before = _allowed_cpus_by_thread()
    main = before[str(threading.get_native_id())]
    x, y = dense_problem()
    fastnn.set_num_threads(2)
    for pause in (0.0, 0.05, 0.2):  # idle long enough for the workers to sleep
        time.sleep(pause)
        fastnn._kernels.wake_team(2)
        model = dense_model(seed=1)
        model.fit(x, y, batch_size=256, epochs=1, verbose=0, seed=3)
        model.predict(x, batch_size=2000)
    after = _allowed_cpus_by_thread()
    assert all(cpus == before.get(tid, main) for tid, cpus in after.items()), (before, after)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux thread affinity")
def test_two_threads_on_a_process_pinned_to_one_core(run_python):
    """A process confined to one core (taskset): there is no other core for a worker to
    move to; two threads share it and train to the bits of one thread."""
    code = textwrap.dedent("""
        import os, numpy as np, fastnn
        from fastnn.layers import Dense
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2000, 40)).astype(np.float32)
        y = rng.integers(0, 4, size=2000)
        weights = []
        for threads in (1, 2):
            fastnn.set_random_seed(0)
            model = fastnn.Sequential([Dense(128, activation="relu"), Dense(4)])
            model.compile("adam", fastnn.losses.SparseCategoricalCrossentropy(from_logits=True))
            with fastnn.num_threads(threads):
                model.fit(x, y, batch_size=256, epochs=2, verbose=0, seed=3)
            weights.append(model.get_weights())
        assert all(np.array_equal(a, b) for a, b in zip(*weights))
        assert os.sched_getaffinity(0) == {cpu}
        print("ok")
    """)
    done = run_python(code)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
