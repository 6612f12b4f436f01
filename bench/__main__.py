"""python -m bench: fastnn against its peers on the same work, in one run.

Method: each runner is warmed up once, then fastnn and each peer alternate for --runs
runs; the table gives medians (min-max), microseconds per step, the ratio
peer time / fastnn time, and each side's final training loss. For MLP workloads the
"GEMM bound" row is the time numpy's own matmul needs for the same matrix products (the
work no implementation can skip). Results also go to a JSON file and, with matplotlib, a
PNG chart of the ratios.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

from . import peers, workloads

PEERS = {
    "numpy": lambda work, threads: peers.numpy_mlp(work),
    "torch": peers.torch_mlp,
    "sklearn": lambda work, threads: peers.sklearn_mlp(work),
    "keras": lambda work, threads: peers.keras_mlp(work),
}


def gemm_bound(work, repeats=20):
    """Seconds numpy's matmul needs for every matrix product of the workload's training
    (forward, dW, and dX past the first layer), at its batch shapes."""
    rng = np.random.default_rng(0)
    b = work.batch
    mats = []
    for i, (a, c) in enumerate(zip(work.sizes[:-1], work.sizes[1:])):
        x = rng.standard_normal((b, a)).astype(np.float32)
        w = rng.standard_normal((a, c)).astype(np.float32)
        dz = rng.standard_normal((b, c)).astype(np.float32)
        mats.append((x, w, dz, i > 0))
    def step():
        for x, w, dz, need_dx in mats:
            x @ w
            x.T @ dz
            if need_dx:
                dz @ w.T
    step()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        times.append((time.perf_counter() - start) / repeats)
    return statistics.median(times) * work.steps


def measure(runners, runs):
    """Warm-up, then alternating runs; returns {name: [(seconds, loss), ...]}."""
    results = {name: [] for name in runners}
    for run in runners.values():
        run()
    for _ in range(runs):
        for name, run in runners.items():
            results[name].append(run())
    return results


def summarize(work, results, bound):
    rows = []
    fast = statistics.median(t for t, _ in results["fastnn"])
    for name, samples in results.items():
        times = [t for t, _ in samples]
        med = statistics.median(times)
        rows.append({
            "workload": work.name, "peer": name, "median_s": med, "min_s": min(times),
            "max_s": max(times), "us_per_step": med / work.steps * 1e6,
            "ratio_peer_over_fastnn": med / fast, "final_loss": samples[-1][1],
        })
    if bound is not None:
        rows.append({"workload": work.name, "peer": "GEMM bound (numpy matmul)",
                     "median_s": bound, "min_s": bound, "max_s": bound,
                     "us_per_step": bound / work.steps * 1e6,
                     "ratio_peer_over_fastnn": bound / fast, "final_loss": None})
    return rows


def print_table(rows, skipped):
    head = f"{'work':<5} {'peer':<26} {'median s':>9} {'min-max s':>17} {'us/step':>9} {'peer/fastnn':>11} {'loss':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        loss = "" if r["final_loss"] is None else f"{r['final_loss']:.4f}"
        print(f"{r['workload']:<5} {r['peer']:<26} {r['median_s']:>9.4f} "
              f"{r['min_s']:>8.4f}-{r['max_s']:<8.4f} {r['us_per_step']:>9.1f} "
              f"{r['ratio_peer_over_fastnn']:>10.2f}x {loss:>8}")
    for work, name, why in skipped:
        print(f"{work:<5} {name:<26} skipped: {why}")


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    shown = [r for r in rows if r["peer"] != "fastnn"]
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(shown) + 1.5))
    labels = [f"{r['workload']} {r['peer']}" for r in shown]
    ax.barh(labels, [r["ratio_peer_over_fastnn"] for r in shown])
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("peer time / fastnn time (higher: fastnn faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 runs: under a minute")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per runner (default 5)")
    parser.add_argument("--workloads", default="W1,W2", help="comma-separated: W1,W2")
    parser.add_argument("--peers", default="numpy,torch,sklearn,keras")
    parser.add_argument("--threads", type=int, default=None, help="threads for every peer")
    parser.add_argument("--out", default="bench/results", help="folder for JSON and PNG")
    args = parser.parse_args(argv)

    import fastnn
    threads = args.threads or fastnn.get_num_threads()
    fastnn.set_num_threads(threads)
    runs = args.runs or (3 if args.quick else 5)
    chosen = {
        "W1": lambda: workloads.course(epochs=10 if args.quick else 100),
        "W2": lambda: workloads.mnist_mlp(epochs=1, n=6000 if args.quick else 60000),
    }
    rows, skipped = [], []
    print(f"fastnn bench: {threads} threads, {runs} runs, {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}, numpy {np.__version__}\n")
    for key in args.workloads.split(","):
        work = chosen[key.strip()]().make()
        runners = {"fastnn": peers.fastnn_mlp(work)}
        for name in args.peers.split(","):
            name = name.strip()
            if not name:
                continue
            try:
                runners[name] = PEERS[name](work, threads)
            except peers.Skip as why:
                skipped.append((work.name, name, str(why)))
        results = measure(runners, runs)
        rows += summarize(work, results, gemm_bound(work))
    print_table(rows, skipped)
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = {"threads": threads, "runs": runs, "quick": args.quick, "rows": rows,
              "skipped": [{"workload": w, "peer": p, "why": y} for w, p, y in skipped]}
    json_path = os.path.join(args.out, f"bench-{stamp}.json")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    png = plot(rows, os.path.join(args.out, f"bench-{stamp}.png"))
    print(f"\nwrote {json_path}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
