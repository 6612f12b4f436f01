"""python -m bench: fastnn against its peers on the same work, in one run.

Sections (--workloads, all by default):
  W1       the course's network 400-25-15-1 sigmoid, BCE, Adam, batch 32, 1000 samples,
           100 epochs (quick: 5)
  W2       MNIST-shaped MLP 784-256-128-10 ReLU, sparse CE from logits, batch 128, 60000
           samples (quick: 6000): one timed epoch after a warm-up epoch on the same model
  W3       the MNIST-1D CNN of examples/mnist1d.py, 5 epochs (quick: 1)
  LAT      predict of one sample through W1's network (microseconds per call) and of
           10000 samples (samples/s)
  kernels  fastnn's dense kernels against numpy's matmul (GFLOP/s); its softmax-CE and
           Adam kernels against the memory bandwidth measured here (GB/s)
  memory   peak RSS of fit on W2 (in a subprocess) and tracemalloc's Python-heap growth
           of fits of 1 and 5 epochs
  SK       fastnn.sklearn.MLPClassifier against scikit-learn's (bench/sklearn_peer.py):
           breast_cancer and digits to convergence, an MNIST-shaped problem for 20
           epochs

Method: every runner is warmed up once, then fastnn and its peers alternate for --runs
runs (timed run r shuffles with seed r in every peer), each run starting after 0.15 s
idle so that the previous runner's spinning pool threads do not slow it. The tables give medians (min-max),
microseconds per step, the ratio peer time / fastnn time, final training losses and, for
W1 and W2, the lower bound that numpy's matmul rate puts on the same matrix products.
A peer that is not installed is reported as skipped. The targets of the bench's spec are
checked against the measured values at the end. Results go to a JSON file and, with
matplotlib, a PNG chart of the ratios (in --out, bench/results by default).
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

from . import kernels, memory, peers, workloads
from .peers import Skip

SECTIONS = ("W1", "W2", "W3", "LAT", "kernels", "memory", "SK")
ALL_PEERS = ("numpy", "torch", "keras", "sklearn")
KIB = 1024
HEAP_BOUND = 16 * KIB  # bytes: the Python-heap growth a fit may show, whatever its length


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def peer_label(name):
    return f"keras ({peers.keras_backend()})" if name == "keras" else name


# ---- training workloads ---------------------------------------------------------------

def gemm_bound(work, threads, repeats=20):
    """(seconds, GFLOP/s): what numpy's matmul needs for every matrix product of the
    workload's timed training at its batch shapes (forward; dW; dX past the first layer),
    at its best rate over 7 timings (a lower bound for any implementation using it)."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    mats = []
    for m, k, n, need_dx in work.gemm_shapes():
        mats.append((rng.standard_normal((m, k), dtype=np.float32),
                     rng.standard_normal((k, n), dtype=np.float32),
                     rng.standard_normal((m, n), dtype=np.float32), need_dx))

    def step():
        for x, w, dz, need_dx in mats:
            x @ w
            x.T @ dz
            if need_dx:
                dz @ w.T
    with threadpool_limits(threads, user_api="blas"):
        step()
        times = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(repeats):
                step()
            times.append((time.perf_counter() - start) / repeats)
    per_step = min(times)
    return per_step * work.epochs * work.n / work.batch, work.flops_per_step() / per_step / 1e9


def measure(work, runners, runs, skipped):
    """Warm-up (seed 0), then `runs` alternating runs (seeds 1..runs).
    {name: [result dict, ...]}; a peer that fails is reported and dropped."""
    results = {name: [] for name in runners}
    for seed in range(runs + 1):
        for name, run in list(runners.items()):
            kernels.settle()
            try:
                out = run(seed)
            except Exception as err:
                if name == "fastnn":
                    raise
                skipped.append((work.name, peer_label(name), f"failed: {type(err).__name__}: {err}"))
                del runners[name], results[name]
                continue
            if seed:
                results[name].append(out)
        log(f"  {work.name}: {'warm-up' if seed == 0 else f'run {seed}/{runs}'} done")
    return results


def summarize(work, results, bound):
    rows = []
    fast = statistics.median(r["seconds"] for r in results["fastnn"])
    fast_best = min(r["seconds"] for r in results["fastnn"])
    flops = work.flops_per_step() * work.epochs * work.n / work.batch if work.kind == "mlp" else None
    for name, samples in results.items():
        times = [r["seconds"] for r in samples]
        med = statistics.median(times)
        losses = [r["loss"] for r in samples]
        row = {"section": "train", "workload": work.name, "peer": peer_label(name), "peer_key": name,
               "median_s": med, "min_s": min(times), "max_s": max(times), "times_s": times,
               "us_per_step": med / work.steps * 1e6, "ratio_peer_over_fastnn": med / fast,
               "ratio_best_over_best": min(times) / fast_best,
               "gflops": flops / med / 1e9 if flops else None,
               "final_loss": statistics.median(losses), "final_losses": losses}
        if work.warmup_epochs and all(len(r["epochs_s"]) > work.warmup_epochs for r in samples):
            first = [r["epochs_s"][0] for r in samples]
            second = [r["epochs_s"][work.warmup_epochs] for r in samples]
            row.update({"epoch1_s": statistics.median(first), "epoch2_s": statistics.median(second),
                        "epoch2_over_epoch1": statistics.median(b / a for a, b in zip(first, second)),
                        "epoch2_over_epoch1_all": [b / a for a, b in zip(first, second)]})
        if any("subnormal" in r for r in samples):
            row["subnormal_after_epoch1"] = statistics.median(r["subnormal"] for r in samples
                                                              if "subnormal" in r)
        rows.append(row)
    if bound is not None:
        seconds, rate = bound
        rows.append({"section": "train", "workload": work.name, "peer": "GEMM bound (numpy matmul)",
                     "peer_key": "bound", "median_s": seconds, "min_s": seconds, "max_s": seconds,
                     "us_per_step": seconds / work.steps * 1e6,
                     "ratio_peer_over_fastnn": seconds / fast, "gflops": rate,
                     "ratio_best_over_best": seconds / fast_best,
                     "final_loss": None, "flops": flops})
    return rows


def train_section(work, peer_names, threads, runs, skipped):
    runners = {"fastnn": peers.TRAINERS[work.kind]["fastnn"](work, threads)}
    for name in peer_names:
        if (work.kind, name) in peers.NOT_APPLICABLE:
            skipped.append((work.name, name, peers.NOT_APPLICABLE[work.kind, name]))
            continue
        try:
            runners[name] = peers.TRAINERS[work.kind][name](work, threads)
        except Skip as why:
            skipped.append((work.name, peer_label(name), str(why)))
    log(f"{work.name}: {work.description}; {', '.join(runners)}")
    results = measure(work, runners, runs, skipped)
    bound = gemm_bound(work, threads) if work.kind == "mlp" else None
    return summarize(work, results, bound)


# ---- inference ------------------------------------------------------------------------

def latency_section(peer_names, threads, runs, budget, skipped):
    work = workloads.course().make()
    one = np.ascontiguousarray(work.data["x"][:1])
    many = np.random.default_rng(1).standard_normal((10000, work.sizes[0]), dtype=np.float32)
    funcs = {}
    for name in ("fastnn",) + tuple(peer_names):
        try:
            funcs.update(peers.predictors(name, work, threads))
        except Skip as why:
            skipped.append(("LAT", peer_label(name), str(why)))
    reference = funcs["fastnn predict"](many[:100])
    agree = {}
    for label, f in list(funcs.items()):
        try:
            agree[label] = float(np.max(np.abs(np.asarray(f(many[:100])).reshape(-1)[:100]
                                                - reference.reshape(-1))))
        except Exception as err:
            skipped.append(("LAT", label, f"failed: {type(err).__name__}: {err}"))
            del funcs[label]
    log(f"LAT: {', '.join(funcs)}")
    rows = []
    for kind, x in (("latency", one), ("throughput", many)):
        t = kernels.per_call({label: (lambda f=f: f(x)) for label, f in funcs.items()}, runs, budget)
        fast = statistics.median(t["fastnn predict"])
        fast_best = min(t["fastnn predict"])
        for label, times in t.items():
            med = statistics.median(times)
            row = {"section": kind, "workload": "LAT", "peer": label, "samples": len(x),
                   "median_s": med, "min_s": min(times), "max_s": max(times),
                   "ratio_peer_over_fastnn": med / fast, "ratio_best_over_best": min(times) / fast_best,
                   "max_abs_diff_vs_fastnn": agree[label]}
            if kind == "latency":
                row["us_per_call"] = med * 1e6
            else:
                row["samples_per_s"] = len(x) / med
            rows.append(row)
    return rows


# ---- the sklearn wrapper's own comparison (bench/sklearn_peer.py, when present) ----------

def sklearn_wrapper_section(quick, runs, threads):
    """Rows of bench/sklearn_peer.compare_all(): fastnn.sklearn.MLPClassifier against
    scikit-learn's on the same data and settings, given the bench's runs."""
    from .sklearn_peer import compare_all
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise Skip("scikit-learn is not installed") from None
    return [dict(r, section="sklearn_wrapper") for r in compare_all(runs=runs, quick=quick)]


# ---- targets --------------------------------------------------------------------------

def losses_agree(a, b):
    """(difference of mean final losses, noise): noise is 3 standard errors of that
    difference over the runs' seeds, at least 1% of the losses (rounding across
    implementations). None when a side has fewer than 2 runs."""
    if len(a) < 2 or len(b) < 2:
        return None
    diff = abs(statistics.mean(a) - statistics.mean(b))
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    noise = max(3 * se, 0.01 * max(abs(statistics.mean(a)), abs(statistics.mean(b))))
    return diff, noise


def targets(rows, heap):
    def find(section, workload, key):
        for r in rows:
            if r.get("section") == section and r.get("workload") == workload and r.get("peer_key", r.get("peer")) == key:
                return r
        return None

    out = []

    def add(name, measured, threshold, op, unit="x", note="", best=None):
        met = None if measured is None else (measured >= threshold if op == ">=" else measured <= threshold)
        out.append({"target": name, "measured": measured, "op": op, "threshold": threshold,
                    "unit": unit, "met": met, "note": note, "measured_best_runs": best})

    def ratio(workload, key, threshold, label):
        r = find("train", workload, key)
        add(f"{workload} {label} time / fastnn time", r and r["ratio_peer_over_fastnn"],
            threshold, ">=", note="" if r else "not run", best=r and r["ratio_best_over_best"])

    ratio("W1", "torch", 30, "PyTorch")
    ratio("W1", "keras", 100, f"Keras ({peers.keras_backend()})")
    ratio("W1", "sklearn", 15, "sklearn MLPClassifier")
    for workload, limit in (("W1", 2.0), ("W2", 1.5)):
        b = find("train", workload, "bound")
        add(f"{workload} fastnn time / numpy-GEMM bound", b and 1 / b["ratio_peer_over_fastnn"],
            limit, "<=", note="" if b else "not run", best=b and 1 / b["ratio_best_over_best"])
    ratio("W2", "torch", 2, "PyTorch")
    ratio("W3", "torch", 10, "PyTorch")
    lat = [r for r in rows if r["section"] == "latency" and r["peer"] == "torch no_grad"]
    add("LAT torch no_grad / fastnn predict, 1 sample", lat[0]["ratio_peer_over_fastnn"] if lat else None,
        5, ">=", note="" if lat else "not run", best=lat[0]["ratio_best_over_best"] if lat else None)
    for workload in ("W1", "W2", "W3"):
        f, t = find("train", workload, "fastnn"), find("train", workload, "torch")
        check = losses_agree(f["final_losses"], t["final_losses"]) if f and t else None
        note = ("not run" if not (f and t) else "needs >= 2 runs" if check is None else
                f"fastnn {statistics.mean(f['final_losses']):.4f} vs torch "
                f"{statistics.mean(t['final_losses']):.4f}; noise {check[1]:.4f}")
        add(f"{workload} final loss |fastnn - torch| / noise", check and check[0] / check[1], 1.0,
            "<=", unit="", note=note)
    f = find("train", "W2", "fastnn")
    ok = f is not None and "epoch2_over_epoch1" in f
    sub = f.get("subnormal_after_epoch1") if ok else None
    add("W2 fastnn epoch 2 / epoch 1 (subnormal moments)", f["epoch2_over_epoch1"] if ok else None,
        1.15, "<=", unit="", note=(f"{100 * sub:.2f}% of fastnn's Adam moments subnormal after "
                                   f"epoch 1" if sub is not None else "not run"))
    for r in rows:
        if r.get("section") == "sklearn_wrapper" and "ratio" in r:
            add(f"SK sklearn MLPClassifier / fastnn.sklearn, {r['dataset']} "
                f"{r.get('dtype', 'float32')}", r["ratio"], 10,
                ">=", note=f"accuracy fastnn {r['fastnn_accuracy']:.4f}, scikit-learn "
                           f"{r['sklearn_accuracy']:.4f}; fastnn "
                           f"{_f(r.get('fastnn_gflops'), '.0f', 1)} GFLOP/s; ceiling "
                           f"{_f(r.get('ceiling_ratio'), '.1f', 1)}x (the same products at "
                           f"{_f(r.get('peak_gflops'), '.0f', 1)} GFLOP/s)")
    subn = [r for r in rows if r["section"] == "subnormal" and r["peer"] == "fastnn"]
    if subn:
        others = ", ".join(f"{r['peer']} {r['subnormal_over_normal']:.2f}x" for r in rows
                           if r["section"] == "subnormal" and r["peer"] != "fastnn")
        add("fastnn Adam step, subnormal / normal moments", subn[0]["subnormal_over_normal"], 1.15,
            "<=", unit="", note=others)
    if heap:
        one, five = heap[min(heap)], heap[max(heap)]
        grow = max(five["fit_peak_growth_bytes"] - one["fit_peak_growth_bytes"],
                   five["epoch_peak_growth_bytes"], one["epoch_peak_growth_bytes"])
        add(f"Python-heap growth of fit, {one['epochs']} vs {five['epochs']} epochs (bytes)",
            grow, HEAP_BOUND, "<=", unit=" B",
            note=f"fit peaks {one['fit_peak_growth_bytes']} B and {five['fit_peak_growth_bytes']} B; "
                 f"per epoch at most {max(one['epoch_peak_growth_bytes'], five['epoch_peak_growth_bytes'])} B")
    return out


# ---- output ---------------------------------------------------------------------------

def _f(value, fmt, width):
    return f"{'' if value is None else format(value, fmt):>{width}}"


def print_report(report):
    rows, skipped = report["rows"], report["skipped"]
    train = [r for r in rows if r["section"] == "train"]
    if train:
        head = (f"{'work':<4} {'peer':<27} {'median s':>9} {'min-max s':>17} {'us/step':>9} "
                f"{'GFLOP/s':>7} {'peer/fastnn':>11} {'(min/min)':>9} {'loss':>7} {'ep2/ep1':>7} {'subn%':>6}")
        print(head)
        print("-" * len(head))
        for r in train:
            sub = r.get("subnormal_after_epoch1")
            print(f"{r['workload']:<4} {r['peer']:<27} {r['median_s']:>9.4f} "
                  f"{r['min_s']:>8.4f}-{r['max_s']:<8.4f} {r['us_per_step']:>9.1f} "
                  f"{_f(r.get('gflops'), '.2f', 7)} {r['ratio_peer_over_fastnn']:>10.2f}x "
                  f"{r['ratio_best_over_best']:>8.2f}x "
                  f"{_f(r.get('final_loss'), '.4f', 7)} {_f(r.get('epoch2_over_epoch1'), '.2f', 7)} "
                  f"{_f(None if sub is None else 100 * sub, '.2f', 6)}")
        print()
    lat = [r for r in rows if r["section"] in ("latency", "throughput")]
    if lat:
        head = (f"{'LAT':<10} {'peer':<30} {'per call':>10} {'min-max us':>21} {'samples/s':>11} "
                f"{'peer/fastnn':>11} {'(min/min)':>9}")
        print(head)
        print("-" * len(head))
        for r in lat:
            per = r["median_s"] * 1e6
            print(f"{r['section']:<10} {r['peer']:<30} {per:>8.1f}us "
                  f"{r['min_s'] * 1e6:>10.1f}-{r['max_s'] * 1e6:<10.1f} "
                  f"{len_samples(r) / r['median_s']:>11.0f} {r['ratio_peer_over_fastnn']:>10.2f}x "
                  f"{r['ratio_best_over_best']:>8.2f}x")
        print()
    kern = [r for r in rows if r["section"] == "kernel"]
    if kern:
        copies = ", ".join(f"{v:.2f} GB/s with {k} thread{'s' if k != '1' else ''}"
                           for k, v in report["bandwidth_by_threads_gbs"].items())
        print(f"memory bandwidth (numpy copy of {report['bandwidth_copy_mb']} MB, read+write bytes, "
              f"best of 7): {copies}; "
              f"the best is the reference")
        head = f"{'kernel':<30} {'shape':<28} {'fastnn us':>10} {'fastnn':>13} {'numpy / bandwidth':>18} {'ratio':>7}"
        print(head)
        print("-" * len(head))
        for r in kern:
            if "fastnn_gflops" in r:
                print(f"{r['kernel']:<30} {r['shape']:<28} {r['fastnn_us']:>10.1f} "
                      f"{r['fastnn_gflops']:>7.2f} GF/s {r['numpy_gflops']:>13.2f} GF/s "
                      f"{r['fastnn_over_numpy']:>6.2f}x")
            else:
                print(f"{r['kernel']:<30} {r['shape']:<28} {r['fastnn_us']:>10.1f} "
                      f"{r['fastnn_gbs']:>7.2f} GB/s {r['bandwidth_gbs']:>13.2f} GB/s "
                      f"{r['fraction_of_bandwidth']:>6.2f}x")
        print()
    small = [r for r in rows if r["section"] == "small_gemm"]
    if small:
        head = (f"{'small-product kernel vs BLAS (1 thread)':<44} {'kernel us':>10} {'GF/s':>7} "
                f"{'BLAS us':>10} {'GF/s':>7} {'BLAS/kernel':>12}")
        print(head)
        print("-" * len(head))
        for r in small:
            print(f"{r['shape']:<44} {r['small_us']:>10.1f} {r['small_gflops']:>7.1f} "
                  f"{r['blas_us']:>10.1f} {r['blas_gflops']:>7.1f} {r['blas_over_small']:>11.2f}x")
        print()
    subn = [r for r in rows if r["section"] == "subnormal"]
    if subn:
        head = (f"{'Adam step, ' + format(100 * subn[0]['subnormal_fraction'], '.0f') + '% subnormal moments':<36} "
                f"{'normal us':>10} {'subnormal us':>13} {'subnormal/normal':>17}")
        print(head)
        print("-" * len(head))
        for r in subn:
            print(f"{r['peer'] + ' (' + str(r['params']) + ' params)':<36} {r['normal_us']:>10.1f} "
                  f"{r['subnormal_us']:>13.1f} {r['subnormal_over_normal']:>16.2f}x")
        print()
    mem = [r for r in rows if r["section"] == "memory"]
    if mem or report.get("heap"):
        print("memory")
        print("------")
        for r in mem:
            print(f"peak RSS of fit, W2 n={r['n']}, {r['peer']:<8}: peak {r['peak_mb']:.1f} MB, "
                  f"before fit {r['baseline_mb']:.1f} MB (data {r['data_mb']:.1f} MB), fit adds "
                  f"{r['fit_delta_mb']:.1f} MB  [{r['method']}]")
        for h in (report.get("heap") or {}).values():
            print(f"Python heap (tracemalloc), fastnn fit of {h['epochs']} epoch(s) = {h['steps']} steps "
                  f"after a first fit: peak growth {h['fit_peak_growth_bytes']} B per fit call, "
                  f"{h['epoch_peak_growth_bytes']} B per compiled epoch, retained "
                  f"{h['fit_retained_bytes']} B")
        print()
    wrap = [r for r in rows if r["section"] == "sklearn_wrapper"]
    if wrap:
        print("fastnn.sklearn (bench/sklearn_peer.compare)")
        print("-------------------------------------------")
        for r in wrap:
            if {"fastnn_s", "sklearn_s", "ratio"} <= r.keys():
                times = {k: r.get(f"{k}_times") or [r[f"{k}_s"]] for k in ("fastnn", "sklearn")}
                print(f"MLPClassifier, {r.get('dataset', '')} {r.get('dtype', '')} "
                      f"n={r.get('n_samples', '?')}, settings {r.get('settings', {})}, fastnn "
                      f"{_f(r.get('fastnn_gflops'), '.1f', 1)} GFLOP/s")
                for k in ("fastnn", "sklearn"):
                    print(f"  {k:<8} median {r[f'{k}_s']:.4f} s ({min(times[k]):.4f}-"
                          f"{max(times[k]):.4f}), test accuracy "
                          f"{_f(r.get(f'{k}_accuracy'), '.4f', 6)}, train loss "
                          f"{_f(r.get(f'{k}_train_loss'), '.4f', 6)}, {r.get(f'{k}_n_iter', '?')} iterations")
                print(f"  sklearn / fastnn: {r['ratio']:.2f}x; ceiling "
                      f"{_f(r.get('ceiling_ratio'), '.2f', 1)}x: scikit-learn's median over the "
                      f"fit's matrix products at {_f(r.get('peak_gflops'), '.0f', 1)} GFLOP/s "
                      f"(numpy matmul, 2048 x 2048), the most any implementation could reach")
            else:
                print("  " + ", ".join(f"{k}={_short(v)}" for k, v in r.items() if k != "section"))
        print()
    if skipped:
        for s in skipped:
            print(f"{s['workload']:<7} {s['peer']:<27} skipped: {s['why']}")
        print()
    head = f"{'target (measured: medians; min/min: best runs)':<56} {'measured':>10} {'goal':>10}  met  {'min/min':>8}"
    print(head)
    print("-" * len(head))
    for t in report["targets"]:
        measured = "-" if t["measured"] is None else f"{t['measured']:.2f}{t['unit']}"
        goal = f"{t['op']} {t['threshold']:g}{t['unit']}"
        met = {True: "yes", False: "NO", None: "n/a"}[t["met"]]
        best = "" if t.get("measured_best_runs") is None else f"{t['measured_best_runs']:.2f}{t['unit']}"
        print(f"{t['target']:<56} {measured:>10} {goal:>10}  {met:<4} {best:>8}  {t['note']}")


def noise_warning(report):
    """A line saying which fastnn timings varied by more than 1.5x over the runs (the
    machine was busy), or None."""
    noisy = [f"{r['workload']} {r['section']} {r['max_s'] / r['min_s']:.1f}x"
             for r in report["rows"] if r.get("peer") in ("fastnn", "fastnn predict")
             and r.get("min_s") and r["max_s"] / r["min_s"] > 1.5]
    if not noisy:
        return None
    return (f"warning: fastnn's runs varied by more than 1.5x (max/min: {', '.join(noisy)}); "
            f"load average {report['load_average_start'][0]:.2f} at the start, "
            f"{report['load_average_end'][0]:.2f} at the end on {report['cpus']} CPUs: "
            f"the machine was busy, rerun for stable numbers")


def len_samples(r):
    return r.get("samples", 1)


def _short(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def plot(rows, tgts, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    shown = [r for r in rows if r["section"] in ("train", "latency", "throughput")
             and r["peer"] not in ("fastnn", "fastnn predict")]
    if not shown:
        return None
    goals = {("W1", "torch"): 30, ("W1", "keras"): 100, ("W1", "sklearn"): 15, ("W2", "torch"): 2,
             ("W3", "torch"): 10, ("latency", "torch no_grad"): 5}
    labels, values, colors, goals_shown = [], [], [], []
    for r in shown:
        key = (r["workload"], r.get("peer_key")) if r["section"] == "train" else (r["section"], r["peer"])
        goal = goals.get(key)
        if r.get("peer_key") == "bound":
            goal = {"W1": 0.5, "W2": 1 / 1.5}.get(r["workload"])  # fastnn within 2x / 1.5x
        name = r["workload"] if r["section"] == "train" else r["section"]
        labels.append(f"{name} {r['peer']}")
        values.append(r["ratio_peer_over_fastnn"])
        goals_shown.append(goal)
        colors.append("tab:gray" if goal is None else
                      "tab:green" if r["ratio_peer_over_fastnn"] >= goal else "tab:red")
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(shown) + 1.6))
    ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    for y, goal in enumerate(goals_shown[::-1]):
        if goal is not None:
            ax.plot([goal], [y], marker="|", color="k", markersize=16)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("peer time / fastnn time (higher: fastnn faster); | target, green/red: met/missed")
    met = sum(t["met"] is True for t in tgts)
    ax.set_title(f"fastnn bench: {met}/{len(tgts)} targets met")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return cpu


def versions():
    import importlib.metadata as md
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("torch", "keras", "tensorflow", "scikit-learn", "matplotlib", "mnist1d"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


# ---- main -----------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, 3 runs, shorter timings: under a minute")
    parser.add_argument("--runs", type=int, default=None,
                        help="timed runs per runner after the warm-up (default 5; quick 3)")
    parser.add_argument("--workloads", default=",".join(SECTIONS),
                        help=f"comma-separated sections among {','.join(SECTIONS)}")
    parser.add_argument("--peers", default=",".join(ALL_PEERS),
                        help="comma-separated peers among numpy,torch,keras,sklearn")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for fastnn and every peer (default fastnn.get_num_threads())")
    parser.add_argument("--out", default=os.path.join("bench", "results"),
                        help="folder for the JSON and the PNG")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.workloads.split(",") if s.strip()]
    peer_names = [p.strip() for p in args.peers.split(",") if p.strip()]
    for s in sections:
        if s not in SECTIONS:
            parser.error(f"--workloads: unknown section {s!r}; expected among {', '.join(SECTIONS)}")
    for p in peer_names:
        if p not in ALL_PEERS:
            parser.error(f"--peers: unknown peer {p!r}; expected among {', '.join(ALL_PEERS)}")
    if args.runs is not None and args.runs < 1:
        parser.error("--runs: expected a positive number")
    if "keras" in peer_names:
        peers.keras_backend()  # chooses the backend before keras is imported

    import fastnn
    from threadpoolctl import threadpool_limits
    threads = args.threads or fastnn.get_num_threads()
    fastnn.set_num_threads(threads)
    blas = threadpool_limits(threads, user_api="blas")  # numpy and sklearn: the same threads
    runs = args.runs or (3 if args.quick else 5)
    quick = args.quick
    if quick:
        kernels.SETTLE = 0.1
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": quick, "threads": threads,
              "runs": runs, "machine": machine(), "cpus": os.cpu_count(),
              "fastnn": {"version": fastnn.__version__, "path": os.path.dirname(fastnn.__file__)},
              "versions": versions(), "peers": peer_names, "sections": sections,
              "load_average_start": os.getloadavg(), "rows": [], "skipped": []}
    print(f"fastnn bench{' (quick)' if quick else ''}: {threads} threads, {runs} runs, "
          f"{report['machine']}, {os.cpu_count()} CPUs, load {report['load_average_start'][0]:.2f}\n"
          f"fastnn {fastnn.__version__} from {report['fastnn']['path']}; "
          + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + "\n")
    skipped, rows, heap = [], report["rows"], None
    started = time.perf_counter()

    chosen = {
        "W1": lambda: workloads.course(epochs=5 if quick else 100),
        "W2": lambda: workloads.mnist_mlp(epochs=1, n=6000 if quick else 60000),
        "W3": lambda: workloads.mnist1d_cnn(epochs=1 if quick else 5),
    }
    budget = 0.05 if quick else 0.25  # seconds per timed run of a kernel or predict

    def run_section(key):
        nonlocal heap
        if key in chosen:
            work = chosen[key]().make()
            if work.kind == "cnn":
                report["w3_data"] = work.data["source"]
            rows.extend(train_section(work, peer_names, threads, runs, skipped))
        elif key == "LAT":
            rows.extend(latency_section(peer_names, threads, runs, budget, skipped))
        elif key == "kernels":
            log("kernels: bandwidth, GEMM, softmax-CE, Adam")
            report["bandwidth_copy_mb"] = 100 if quick else 400
            copies = kernels.memory_bandwidth(report["bandwidth_copy_mb"], threads=threads)
            report["bandwidth_by_threads_gbs"] = {str(k): v for k, v in copies.items()}
            bandwidth = report["bandwidth_gbs"] = max(copies.values())
            shapes = [("W1 layer 1", 32, 400, 25), ("W2 layer 1", 128, 784, 256),
                      ("W2 layer 2", 128, 256, 128), ("W2 layer 3", 128, 128, 10)]
            if quick:
                shapes = shapes[:2]
            for r in kernels.gemm_rows(shapes, threads, runs, budget) + \
                    kernels.streaming_rows(threads, bandwidth, runs, budget, quick):
                rows.append(dict(r, section="kernel"))
            log("kernels: small-product kernel against BLAS")
            for r in kernels.small_gemm_rows(runs, budget, quick):
                rows.append(dict(r, section="small_gemm"))
            log("kernels: Adam on subnormal moments")
            for r in kernels.subnormal_rows(threads, runs, budget, peer_names, quick):
                rows.append(dict(r, section="subnormal"))
        elif key == "memory":
            n = 6000 if quick else 60000
            # torch's peak too, except in quick mode (its import alone takes seconds)
            for peer in ["fastnn"] + [p for p in ("torch",) if p in peer_names and not quick]:
                log(f"memory: peak RSS of fit on W2 ({peer}, subprocess)")
                try:
                    rows.append(dict(memory.peak_rss(peer, n, threads), section="memory"))
                except Exception as err:
                    skipped.append(("memory", peer, f"failed: {err}"))
            log("memory: Python-heap growth (tracemalloc)")
            heap = memory.heap_growth(n=2000 if quick else 12000, epochs=(1, 5), threads=threads)
            report["heap"] = {str(k): v for k, v in heap.items()}
        elif key == "SK":
            log("SK: bench/sklearn_peer.compare_all()")
            try:
                rows.extend(sklearn_wrapper_section(quick, runs, threads))
            except Skip as why:
                skipped.append(("SK", "fastnn.sklearn", str(why)))
            except ImportError as err:
                skipped.append(("SK", "fastnn.sklearn", f"{err.name or err} not installed"))
            except Exception as err:
                skipped.append(("SK", "fastnn.sklearn", f"failed: {type(err).__name__}: {err}"))

    report["section_seconds"] = {}
    for key in sections:
        section_start = time.perf_counter()
        run_section(key)
        report["section_seconds"][key] = time.perf_counter() - section_start
        log(f"{key}: {report['section_seconds'][key]:.1f} s")
    blas.restore_original_limits()

    report["skipped"] = [{"workload": w, "peer": p, "why": y} for w, p, y in skipped]
    report["targets"] = targets(rows, heap)
    report["seconds"] = time.perf_counter() - started
    report["load_average_end"] = os.getloadavg()
    report["noise_warning"] = noise_warning(report)
    print_report(report)
    if report["noise_warning"]:
        print("\n" + report["noise_warning"])
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = os.path.join(args.out, f"bench-{stamp}{'-quick' if quick else ''}.json")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1, default=float)
    png = plot(rows, report["targets"], json_path[:-5] + ".png")
    print(f"\n{report['seconds']:.0f} s; load average {report['load_average_end'][0]:.2f} at the end; "
          f"wrote {json_path}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
