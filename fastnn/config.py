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


def get_num_threads():
    """The threads fastnn's kernels and its BLAS calls use."""
    scoped = getattr(_state, "threads", None)
    if scoped is not None:
        return scoped
    return _num_threads if _num_threads is not None else _default_threads()


def set_num_threads(n):
    """Sets the threads fastnn's kernels and its BLAS calls use (None: the default,
    OMP_NUM_THREADS when set, else the CPUs this process may run on)."""
    global _num_threads
    _num_threads = None if n is None else _check_threads(n)


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
    or one thread where measured calls show that one runs faster. A step cut between
    threads waits at a barrier for the slowest of them; when another process (or another
    thread of the caller's) holds one of the cores, fastnn's thread there runs in that
    core's time slices and every step waits for it (measured: digits trains in 0.06 s on
    two threads, 0.42 s beside a busy loop on the second core, 0.10 s on one thread; an
    epoch took 0.4 ms on two threads when quiet, 30-40 ms beside the busy loop). Training
    gives the same bits on any number of threads: the choice changes the time only.

    The first call runs one unit of work (an epoch) on one thread, unmeasured (buffers are
    created, caches are cold). Then the configured count and one thread run one unit each,
    and the configured count one more (stopping early when it ran over twice as slow);
    the faster is chosen, the configured count's estimate being its faster probe. A call
    on the chosen count measures it again (a probe that fell into the other process's
    pause is optimistic), so a wrong choice lasts one short call: the first call after a
    choice is sized to first_call_seconds of work, the next ones to call_seconds. Calls
    shorter than TRUSTED_SECONDS (an epoch of a small model) jitter: their times are
    averaged; and the other count takes over only when over MARGIN times faster. After
    reprobe_seconds on the choice the other count runs one unit again; the interval
    doubles each time that confirms the choice."""

    MARGIN = 1.1
    TRUSTED_SECONDS = 0.01

    def __init__(self, nthreads, call_seconds=0.1, first_call_seconds=0.02,
                 reprobe_seconds=0.25):
        self.many = nthreads
        self.choice = nthreads
        self.call_seconds, self.first_call_seconds = call_seconds, first_call_seconds
        self.target = first_call_seconds
        self.estimate = {}  # threads -> seconds per unit
        self.plan = [1, nthreads, 1, nthreads] if nthreads > 1 else []
        self.warm = False
        self.reprobe_seconds = reprobe_seconds
        self.since_probe = 0.0  # seconds of calls on the choice since the last probe
        self.reprobing = False

    def next_call(self, remaining):
        """(threads, units) for the next call, at most `remaining` units."""
        if self.plan:
            return self.plan[0], 1
        per_unit = self.estimate.get(self.choice)
        units = 1 if per_unit is None else int(self.target / max(per_unit, 1e-7))
        return self.choice, max(1, min(remaining, units, 1000))

    def record(self, threads, seconds, units):
        """What the planned call took: `units` units of work in `seconds`."""
        per_unit = seconds / max(units, 1)
        if not self.plan:  # a call on the choice
            # a long call measures it; short ones (one epoch of a small model) jitter, so
            # their times are averaged
            old = self.estimate.get(threads)
            trusted = old is None or seconds >= self.TRUSTED_SECONDS
            self.estimate[threads] = per_unit if trusted else 0.8 * old + 0.2 * per_unit
            self.since_probe += seconds
            self.target = self.call_seconds
        else:
            self.plan.pop(0)
            if self.warm:
                best = self.estimate.get(threads)
                first_probe = self.reprobing or best is None or len(self.plan) >= 1
                self.estimate[threads] = per_unit if first_probe else min(best, per_unit)
            self.warm = True
        if self.many < 2 or len(self.estimate) < 2:
            return
        many, one = self.estimate[self.many], self.estimate[1]
        if self.plan and many > 2 * one:
            self.plan = []  # clearly slower: no need to confirm it
        if self.plan:
            return
        # the other count must be clearly faster to take over
        choice = self.choice
        if self.choice == 1 and many * self.MARGIN < one:
            choice = self.many
        elif self.choice == self.many and one * self.MARGIN < many:
            choice = 1
        if choice != self.choice:
            self.choice, self.target = choice, self.first_call_seconds
            self.reprobe_seconds = max(self.reprobe_seconds / 2, 0.25)
            self.since_probe = 0.0
        elif self.reprobing:
            self.reprobe_seconds *= 2  # the probe confirmed the choice
        self.reprobing = False
        if self.since_probe >= self.reprobe_seconds:
            self.plan = [1 if self.choice == self.many else self.many]
            self.reprobing = True
            self.since_probe = 0.0
