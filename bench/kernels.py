"""Kernel rows: fastnn's compiled kernels against the machine.

* GEMM: fastnn._kernels.dense_forward / dense_backward (BLAS held at one thread, as
  fastnn holds it in fit; nthreads = fastnn.get_num_threads()) against numpy's own
  matmul of the same shapes (x @ w; x.T @ dz and dz @ w.T), in GFLOP/s.
* Small-product kernel: src_c/gemm.c's own kernel against the single-threaded BLAS sgemm
  on the same product (fastnn._kernels.gemm, method "small" vs "blas", one thread), at
  the shapes of W1-W3 and LAT: the evidence for using it instead of BLAS at those sizes.
* Streaming: the softmax cross-entropy from logits (fastnn._kernels.loss) and the Adam
  update (fastnn._kernels.adam_update) in GB/s, against this machine's memory bandwidth
  measured in the same run (a large numpy copy, best of several, read + write bytes).
"""
import contextlib
import statistics
import time

import numpy as np

perf = time.perf_counter


SETTLE = 0.15  # seconds of idle before each timed run (see settle(); --quick: 0.1)


def settle():
    """Sleeps SETTLE seconds: the worker threads of the previous runner's thread pools
    (OpenBLAS, OpenMP, TensorFlow) spin for up to ~0.1 s after their last task, and on a
    machine with few cores they would slow whichever runner came next."""
    time.sleep(SETTLE)


def per_call(funcs, runs, budget):
    """{name: [seconds per call, one per run]}: each func warmed up and its repetitions
    sized to about `budget` seconds per run; runs alternate between the funcs, each after
    settle(). A value may be a pair (func, context factory): each run of it is made
    inside that context."""
    funcs = {name: f if isinstance(f, tuple) else (f, contextlib.nullcontext)
             for name, f in funcs.items()}
    reps = {}
    for name, (f, ctx) in funcs.items():
        with ctx():
            f()
            start, k = perf(), 0
            while k < 1 or perf() - start < budget / 10:
                f()
                k += 1
            reps[name] = max(1, int(budget / ((perf() - start) / k)))
    out = {name: [] for name in funcs}
    for _ in range(runs):
        for name, (f, ctx) in funcs.items():
            n = reps[name]
            settle()
            with ctx():
                start = perf()
                for _ in range(n):
                    f()
                out[name].append((perf() - start) / n)
    return out


def memory_bandwidth(mbytes=400, repeats=7, threads=1):
    """GB/s of np.copyto between two mbytes-sized float32 arrays, best of `repeats`,
    counting the bytes read and the bytes written: {threads used: GB/s} for one thread
    and, when threads > 1, for `threads` Python threads copying one slice each (numpy
    releases the GIL while it copies)."""
    from concurrent.futures import ThreadPoolExecutor
    n = mbytes * 2**20 // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.zeros(n, dtype=np.float32)
    np.copyto(dst, src)
    out = {1: 2 * src.nbytes / min(_timed(lambda: np.copyto(dst, src)) for _ in range(repeats)) / 1e9}
    if threads > 1:
        bounds = np.linspace(0, n, threads + 1).astype(int)
        parts = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        with ThreadPoolExecutor(threads) as pool:
            def copy_all():
                list(pool.map(lambda p: np.copyto(*p), parts))
            copy_all()
            out[threads] = 2 * src.nbytes / min(_timed(copy_all) for _ in range(repeats)) / 1e9
    return out


def _timed(f):
    start = perf()
    f()
    return perf() - start


def gemm_rows(shapes, threads, runs, budget):
    """One row per (label, rows, inner, cols) and pass (forward, backward)."""
    from fastnn import _kernels, config
    from threadpoolctl import threadpool_limits

    linear = _kernels.ACTIVATIONS["linear"]
    rng = np.random.default_rng(0)
    rows = []
    for label, m, k, n in shapes:
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((k, n), dtype=np.float32)
        dz = rng.standard_normal((m, n), dtype=np.float32)
        z, a = _kernels.dense_forward(x, w, None, linear, nthreads=threads)

        def fast_forward():
            _kernels.dense_forward(x, w, None, linear, nthreads=threads)

        def fast_backward():
            _kernels.dense_backward(dz, z, a, x, w, linear, need_dx=True, has_bias=False,
                                    nthreads=threads)

        def held():  # fastnn's BLAS at one thread for a whole run, as in fit
            return config.blas_threads(1)

        def numpy_forward():
            x @ w

        def numpy_backward():
            x.T @ dz
            dz @ w.T

        with threadpool_limits(threads, user_api="blas"):
            for name, fast, ref, flops in (
                    ("forward", fast_forward, numpy_forward, 2 * m * k * n),
                    ("backward dW+dX", fast_backward, numpy_backward, 4 * m * k * n)):
                t = per_call({"fastnn": (fast, held), "numpy": ref}, runs, budget)
                fast_s, ref_s = statistics.median(t["fastnn"]), statistics.median(t["numpy"])
                rows.append({
                    "kernel": f"dense {name}", "shape": f"{label} ({m}x{k})@({k}x{n})",
                    "fastnn_us": fast_s * 1e6, "numpy_us": ref_s * 1e6,
                    "fastnn_gflops": flops / fast_s / 1e9, "numpy_gflops": flops / ref_s / 1e9,
                    "fastnn_over_numpy": ref_s / fast_s,
                    "fastnn_min_max_us": [min(t["fastnn"]) * 1e6, max(t["fastnn"]) * 1e6],
                    "numpy_min_max_us": [min(t["numpy"]) * 1e6, max(t["numpy"]) * 1e6]})
    return rows


# (label, rows, cols, inner, a transposed, b transposed) of the products fit and predict
# run: forward x w, backward x^T dz and dz w^T.
SMALL_GEMM_SHAPES = [
    ("LAT layer 1 x w", 1, 25, 400, False, False),
    ("W1 layer 1 x w", 32, 25, 400, False, False),
    ("W1 layer 1 x^T dz", 400, 25, 32, True, False),
    ("W2 layer 1 x w", 128, 256, 784, False, False),
    ("W2 layer 1 x^T dz", 784, 256, 128, True, False),
    ("W2 layer 2 dz w^T", 128, 256, 128, False, True),
    ("W2 layer 3 x w", 128, 10, 128, False, False),
    ("W3 conv 2 cols w", 1000, 25, 75, False, False),
    ("W3 conv 2 cols^T dz", 75, 25, 1000, True, False),
    ("W3 conv 2 dz w^T", 1000, 75, 25, False, True),
]


def small_gemm_rows(runs, budget, quick=False):
    """fastnn's small-product kernel against BLAS (both on one thread) on the same product;
    empty when the CPU lacks AVX-512 (then fastnn uses BLAS everywhere)."""
    from fastnn import _kernels, config

    if not _kernels.small_gemm_available():
        return []
    rng = np.random.default_rng(0)
    rows = []
    for label, m, n, k, a_trans, b_trans in (SMALL_GEMM_SHAPES[:4] if quick else SMALL_GEMM_SHAPES):
        a = rng.standard_normal((k, m) if a_trans else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if b_trans else (k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        funcs = {method: ((lambda method=method: _kernels.gemm(a, b, a_trans, b_trans, method,
                                                               1, out)),
                          lambda: config.blas_threads(1))
                 for method in ("small", "blas")}
        t = per_call(funcs, runs, budget)
        small, blas = statistics.median(t["small"]), statistics.median(t["blas"])
        flops = 2 * m * n * k
        rows.append({"kernel": "small-product kernel vs BLAS", "shape": f"{label} {m}x{n}x{k}",
                     "small_us": small * 1e6, "blas_us": blas * 1e6,
                     "small_gflops": flops / small / 1e9, "blas_gflops": flops / blas / 1e9,
                     "blas_over_small": blas / small})
    return rows


def streaming_rows(threads, bandwidth, runs, budget, quick=False):
    """Softmax-CE and Adam kernels in GB/s and as a fraction of the measured bandwidth."""
    from fastnn import _kernels

    rng = np.random.default_rng(0)
    rows = []
    b, k = (2**18 if quick else 2**20), 10
    logits = rng.standard_normal((b, k), dtype=np.float32)
    labels = rng.integers(0, k, (b, 1)).astype(np.float32)
    code = _kernels.LOSSES["sparse_categorical_crossentropy"]
    ce_bytes = logits.nbytes + labels.nbytes + logits.nbytes  # read logits, labels; write grad

    n = 2**22 if quick else 2**24
    w, g, m, v = (rng.standard_normal(n, dtype=np.float32) * 1e-2 for _ in range(4))
    v = np.abs(v)
    adam_bytes = 7 * 4 * n  # read w, g, m, v; write w, m, v

    t = per_call({
        "ce": lambda: _kernels.loss(code, logits, labels, True, nthreads=threads),
        "adam": lambda: _kernels.adam_update(w, g, m, v, 10, 1e-3, 0.9, 0.999, 1e-7,
                                             nthreads=threads),
    }, runs, budget)
    for key, label, shape, nbytes in (
            ("ce", "softmax-CE from logits (loss)", f"({b}x{k}) logits", ce_bytes),
            ("adam", "Adam update (adam_update)", f"{n} params", adam_bytes)):
        s = statistics.median(t[key])
        gbs = nbytes / s / 1e9
        rows.append({"kernel": label, "shape": shape, "fastnn_us": s * 1e6, "bytes": nbytes,
                     "fastnn_gbs": gbs, "bandwidth_gbs": bandwidth,
                     "fraction_of_bandwidth": gbs / bandwidth,
                     "fastnn_min_max_us": [min(t[key]) * 1e6, max(t[key]) * 1e6]})
    return rows


def subnormal_rows(threads, runs, budget, peer_names, quick=False, fraction=0.37):
    """One Adam step on n parameters whose moments are normal floats, then on moments of
    which `fraction` are float32 subnormals (the state dead ReLU units leave: their
    gradients are tiny or zero and the moments decay), per peer: fastnn's adam_update,
    the NumPy Adam of the bench's NumPy peer and torch.optim.Adam. The gradient of the
    subnormal entries is itself subnormal, so the moments stay subnormal from step to
    step. x86 computes on subnormals in microcode unless it flushes them (fastnn's
    kernels set FTZ/DAZ)."""
    from fastnn import _kernels
    from . import peers

    n = 2**20 if quick else 2**22
    rng = np.random.default_rng(0)
    dead = rng.random(n) < fraction
    tiny = np.float32(2e-39)  # below float32's smallest normal, 1.18e-38
    states = {}
    for case in ("normal", "subnormal"):
        g = (rng.standard_normal(n, dtype=np.float32) * 1e-3)
        m = g * np.float32(0.5)
        v = g * g + np.float32(1e-8)
        if case == "subnormal":
            g[dead], m[dead], v[dead] = tiny, tiny, tiny
        states[case] = (g, m, v)

    funcs, frac = {}, {}
    for case, (g, m, v) in states.items():
        frac[case] = peers.subnormal_fraction([m, v])
        w = rng.standard_normal(n, dtype=np.float32)
        fm, fv = m.copy(), v.copy()
        funcs[("fastnn", case)] = (lambda w=w, g=g, fm=fm, fv=fv: _kernels.adam_update(
            w, g, fm, fv, 100, 1e-3, 0.9, 0.999, 1e-7, nthreads=threads))
        if "numpy" in peer_names:
            opt = peers._NumpyAdam([w.copy()], 1e-3)
            opt.m[0][...], opt.v[0][...], opt.t = m, v, 99
            funcs[("numpy", case)] = lambda opt=opt, g=g: opt.step([g])
        if "torch" in peer_names:
            try:
                torch = peers._torch(threads)
            except peers.Skip:
                continue
            p = torch.nn.Parameter(torch.from_numpy(w.copy()))
            p.grad = torch.from_numpy(g.copy())
            opt = torch.optim.Adam([p], lr=1e-3, eps=1e-7)
            opt.step()
            opt.state[p]["exp_avg"].copy_(torch.from_numpy(m))
            opt.state[p]["exp_avg_sq"].copy_(torch.from_numpy(v))
            funcs[("torch", case)] = opt.step
    t = per_call({f"{peer} {case}": f for (peer, case), f in funcs.items()}, runs, budget)
    rows = []
    for peer in dict.fromkeys(peer for peer, _ in funcs):
        normal, sub = t[f"{peer} normal"], t[f"{peer} subnormal"]
        rows.append({"kernel": "Adam step, subnormal moments", "peer": peer, "params": n,
                     "subnormal_fraction": frac["subnormal"],
                     "normal_us": statistics.median(normal) * 1e6,
                     "subnormal_us": statistics.median(sub) * 1e6,
                     "subnormal_over_normal": statistics.median(sub) / statistics.median(normal)})
    return rows
