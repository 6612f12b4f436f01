"""Process-wide settings: the default float type, the random seed and the thread count."""
import contextlib
import functools
import os
import threading

import numpy as np

_state = threading.local()
_floatx = "float32"
_rng = np.random.default_rng()
_num_threads = None  # None: the default, read on use
_blas_lock = threading.Lock()
# The most threads fastnn's kernels are handed: far more than any CPU has, yet far fewer
# than the counts at which the OpenMP runtime fails to create its threads and takes the
# process down with it (set_num_threads(100000) used to crash the interpreter).
MAX_THREADS = 1024
_blas = {"controller": None, "users": 0, "saved": None}


def floatx():
    """The dtype name new models use: "float32" (the default) or "float64"."""
    return _floatx


def set_floatx(value):
    """Sets the dtype new models use when they are given none: "float32" or "float64"."""
    global _floatx
    _floatx = check_dtype(value, "value")


def check_dtype(value, name="dtype"):
    """The dtype name for a user's float32/float64 choice; anything else is an error."""
    try:
        dt = np.dtype(value)
    except TypeError:
        raise TypeError(f"{name}: expected 'float32' or 'float64', got {value!r}") from None
    if dt not in (np.float32, np.float64):
        raise ValueError(f"{name}: expected 'float32' or 'float64', got {value!r}")
    return dt.name


def set_random_seed(seed):
    """Seeds everything fastnn draws: weight initialization, shuffling and dropout of
    fits that are given no seed of their own (as keras.utils.set_random_seed)."""
    global _rng
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    _rng = np.random.default_rng(int(seed))


def rng():
    """The generator behind weight initialization and unseeded fits."""
    return _rng


@functools.lru_cache(maxsize=None)
def _threads_for(env, affinity):
    env = env.split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), MAX_THREADS)
    return min(max(1, affinity), MAX_THREADS)


def _default_threads():
    return _threads_for(os.environ.get("OMP_NUM_THREADS", ""), _affinity())


@functools.lru_cache(maxsize=None)
def _affinity():
    """The CPUs this process may run on, read once (a per-call system call would cost
    more than a one-sample predict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# GCC's OpenMP runtime cannot start threads in a child process forked after the parent
# ran a team of them: the child's first parallel region waits forever for threads fork
# did not copy (a fit in a multiprocessing.Pool worker, joblib's "multiprocessing"
# backend, a pre-fork server). So a process forked after fastnn may have started threads
# runs fastnn on one thread. Spawned processes (joblib's default loky backend,
# multiprocessing's "spawn" and "forkserver") start fresh and are not limited.
_threads_may_have_started = False
_forked_after_threads = False


def _after_fork_in_child():
    global _forked_after_threads
    if _threads_may_have_started:
        _forked_after_threads = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def get_num_threads():
    """The threads fastnn's kernels and its BLAS calls use: 1 in a process forked after
    fastnn ran on more (see set_num_threads)."""
    global _threads_may_have_started
    scoped = getattr(_state, "threads", None)
    if scoped is not None:
        n = scoped
    else:
        n = _num_threads if _num_threads is not None else _default_threads()
    if n > 1:
        if _forked_after_threads:
            return 1
        _threads_may_have_started = True
    return n


def set_num_threads(n):
    """Sets the threads fastnn's kernels and its BLAS calls use (None: the default,
    OMP_NUM_THREADS when set, else the CPUs this process may run on).

    A process forked (os.fork, multiprocessing's default "fork" start method on Linux)
    after fastnn may have run on several threads stays on one: the OpenMP runtime cannot
    start threads there. Processes started by "spawn" or "forkserver", or joblib's loky
    workers, are not limited."""
    global _num_threads
    _num_threads = None if n is None else _check_threads(n)
    if _forked_after_threads and _num_threads is not None and _num_threads > 1:
        import warnings
        warnings.warn(f"fastnn: this process was forked after fastnn ran on several threads, "
                      f"where the OpenMP runtime cannot start threads: it keeps using 1, not "
                      f"{_num_threads}; start worker processes with 'spawn' or 'forkserver' "
                      f"to use more", RuntimeWarning, stacklevel=2)


def _check_threads(n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"n: expected a positive integer number of threads, at most "
                         f"{MAX_THREADS}, got {n!r}")
    return int(n)


@contextlib.contextmanager
def num_threads(n):
    """`with fastnn.num_threads(n):` uses n threads in this thread's fastnn calls."""
    n = _check_threads(n)
    previous = getattr(_state, "threads", None)
    _state.threads = n
    try:
        yield n
    finally:
        _state.threads = previous


def _blas_controllers():
    """threadpoolctl's handles on the BLAS that scipy.linalg.cython_blas calls (the one
    fastnn uses), or on every BLAS when that one cannot be told apart."""
    if _blas["controller"] is None:
        try:
            import scipy.linalg  # noqa: F401  (loads scipy's BLAS)
            from threadpoolctl import ThreadpoolController
            libs = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
            scipy_libs = [c for c in libs if "scipy" in os.path.basename(os.path.dirname(c.filepath))]
            _blas["controller"] = scipy_libs or libs
        except Exception:  # threadpoolctl missing or failing: leave BLAS as it is
            _blas["controller"] = []
    return _blas["controller"]


@contextlib.contextmanager
def blas_threads(n):
    """Runs the block with fastnn's BLAS limited to n threads and restores its previous
    setting afterwards. fastnn holds it at 1: its own threads call BLAS on fixed panels
    (src_c/dense.c), which keeps results independent of the thread count. Overlapping blocks from several threads share one setting: the
    first sets it, the last restores it."""
    libs = _blas_controllers()
    with _blas_lock:
        if _blas["users"] == 0:
            saved = [lib.num_threads for lib in libs]
            if any(t != n for t in saved):
                for lib in libs:
                    lib.set_num_threads(n)
                _blas["saved"] = saved
            else:
                _blas["saved"] = None
        _blas["users"] += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas["users"] -= 1
            if _blas["users"] == 0 and _blas["saved"] is not None:
                for lib, t in zip(libs, _blas["saved"]):
                    lib.set_num_threads(t)
                _blas["saved"] = None






class ThreadPicker:
    """The thread count for each compiled call of a training loop: the configured count,
    or one thread where that runs faster. A step split between threads waits at a
    barrier for the slowest of them; when another process (or another thread of the
    caller's) holds one of the cores, fastnn's thread there runs in that core's time
    slices and every step waits for it (measured: digits trains in 0.06 s on two
    threads, 0.42 s beside a busy loop on the second core, 0.10 s on one thread).
    Training gives the same bits on any number of threads: the choice changes the time
    only.

    Calls run on the configured count while its threads wait for each other less than
    SUSPECT_WAIT of their time (the compiled loop measures it: Network.wait_fraction,
    0.04-0.25 on a quiet machine, where the course's network has one thread wait while
    the other runs the layers after the first; 0.86-0.99 beside a busy loop). When they
    wait more, the next call runs one unit of work (an epoch) on one thread (after the
    first call, whose threads also wake up, one unit on each count), and the faster per
    unit is kept, one thread only when over MARGIN times faster. On one thread, the
    configured count runs one unit again after reprobe_seconds; each probe that confirms
    the choice doubles the interval before the next, unless the choice then runs over
    SLOWER times slower than the other count did when last measured, which is probed at
    once. Calls are sized to first_call_seconds of work after a change, then to
    call_seconds; calls shorter than TRUSTED_SECONDS (an epoch of a small model) jitter,
    so their times are averaged."""

    SUSPECT_WAIT = 0.5
    SLOWER = 1.5
    MARGIN = 1.1
    TRUSTED_SECONDS = 0.01

    def __init__(self, nthreads, call_seconds=0.1, first_call_seconds=0.02,
                 reprobe_seconds=0.25):
        self.many = nthreads
        self.choice = nthreads
        self.call_seconds, self.first_call_seconds = call_seconds, first_call_seconds
        self.target = first_call_seconds
        self.estimate = {}  # threads -> seconds per unit
        self.plan = []  # probes to run: thread counts, one unit each
        self.reprobe_seconds = reprobe_seconds
        self.since_probe = reprobe_seconds  # seconds on the choice since the last probe
        self.calls = 0  # calls on the choice

    def next_call(self, remaining):
        """(threads, units) for the next call, at most `remaining` units."""
        if self.plan:
            return self.plan[0], 1
        per_unit = self.estimate.get(self.choice)
        units = 1 if per_unit is None else int(self.target / max(per_unit, 1e-7))
        return self.choice, max(1, min(remaining, units, 1000))

    def record(self, threads, seconds, units, wait_fraction=0.0):
        """What the planned call took: `units` units of work in `seconds`, its threads
        waiting for each other wait_fraction of the time."""
        per_unit = seconds / max(units, 1)
        other = 1 if self.choice == self.many else self.many
        if self.plan and self.many > 1:  # a probe
            self.plan.pop(0)
            self.estimate[threads] = per_unit
            if self.plan:
                return
            if other in self.estimate and \
                    self.estimate[other] * self.MARGIN < self.estimate[self.choice]:
                self.choice, self.target = other, self.first_call_seconds
                self.reprobe_seconds = max(self.reprobe_seconds / 2, 0.25)
            else:
                self.reprobe_seconds *= 2  # the probe confirmed the choice
            self.since_probe = 0.0
            return
        # a call on the choice: a long one measures its count; short ones (an epoch of a
        # small model) jitter, so their times are averaged
        old = self.estimate.get(threads)
        trusted = old is None or seconds >= self.TRUSTED_SECONDS
        self.estimate[threads] = per_unit if trusted else 0.8 * old + 0.2 * per_unit
        self.since_probe += seconds
        self.target = self.call_seconds
        self.calls += 1
        if self.many < 2:
            return
        # probe again once the interval has passed, or at once where the choice now runs
        # much slower than the other count did when last measured
        due = self.since_probe >= self.reprobe_seconds or (
            other in self.estimate and
            self.estimate[self.choice] > self.SLOWER * self.estimate[other])
        if not due:
            return
        if self.choice == self.many and wait_fraction > self.SUSPECT_WAIT:
            # the first call also wakes the threads (a wake-up measured 16 ms once): the
            # configured count is measured again before anything is decided
            self.plan = [1, self.many] if self.calls == 1 else [1]
        elif self.choice == 1:
            self.plan = [self.many]
