"""Memory rows.

* Peak resident memory of fit on W2, measured in a fresh subprocess: the process's
  high-water mark (VmHWM) is reset (/proc/self/clear_refs) once the data and the model
  exist, so the peak counts fit alone; where that reset is not possible the delta of
  ru_maxrss is used (an underestimate when making the data peaked higher).
* Python-heap allocations of training: tracemalloc's peak while fit runs on an already
  trained model, per compiled epoch and per fit call, for fits of 1 and of 5 epochs. A
  training step that allocated on the Python heap would make the growth scale with the
  epochs; fastnn's stays a small constant.

    python -m bench.memory --peer fastnn --n 60000     # one peak-RSS measurement (JSON)
"""
import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _status_kb(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


def measure_peak(peer, n, threads):
    """In this process: peak RSS (MB) of one W2 training epoch in `peer`."""
    from . import peers, workloads
    work = workloads.mnist_mlp(epochs=1, n=n, warmup_epochs=0).make()
    run = peers.TRAINERS["mlp"][peer](work, threads)
    gc.collect()
    baseline_kb = _status_kb("VmRSS")
    before_kb = _maxrss_kb()
    reset = _reset_peak() and _status_kb("VmHWM") is not None
    start = time.perf_counter()
    result = run(0)
    seconds = time.perf_counter() - start
    if reset:
        peak_kb, method = _status_kb("VmHWM"), "VmHWM after clear_refs"
    else:
        peak_kb, method = max(_maxrss_kb(), before_kb), "ru_maxrss (high-water mark not resettable)"
        baseline_kb = max(baseline_kb or 0, before_kb)
    data_mb = (work.data["x"].nbytes + work.data["y"].nbytes) / 2**20
    return {"peer": peer, "n": n, "baseline_mb": baseline_kb / 1024, "peak_mb": peak_kb / 1024,
            "fit_delta_mb": (peak_kb - baseline_kb) / 1024, "data_mb": data_mb,
            "method": method, "seconds": seconds, "loss": result["loss"]}


def peak_rss(peer, n, threads, timeout=600):
    """measure_peak in a fresh `python -m bench.memory` (bench importable from ROOT)."""
    cmd = [sys.executable, "-m", "bench.memory", "--peer", peer, "--n", str(n),
           "--threads", str(threads)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"memory subprocess failed ({proc.returncode}): {tail}")
    return json.loads(lines[-1])


def heap_growth(n=6000, epochs=(1, 5), threads=None, seed=0):
    """tracemalloc's peak growth (bytes) while fastnn trains W2's MLP on n samples:
    per compiled epoch (from on_epoch_begin to on_epoch_end, the largest over the epochs)
    and per fit call, after a first 1-epoch fit. {epochs: {...}}."""
    import fastnn
    from fastnn.callbacks import Callback
    from . import peers, workloads

    work = workloads.mnist_mlp(epochs=1, n=n, warmup_epochs=0).make(seed)
    run = peers.fastnn_mlp(work, threads)
    model, x, y = run.model, work.data["x"], work.data["y"]
    if threads:
        fastnn.set_num_threads(threads)
    run(seed)  # compile and fit 1 epoch: workspaces and optimizer state exist from here on

    class EpochPeak(Callback):
        def __init__(self):
            self.growth = []

        def on_epoch_begin(self, epoch, logs=None):
            self.base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()

        def on_epoch_end(self, epoch, logs=None):
            self.growth.append(tracemalloc.get_traced_memory()[1] - self.base)

    out = {}
    for count in epochs:
        probe = EpochPeak()
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            model.fit(x, y, batch_size=work.batch, epochs=count, verbose=0, seed=seed,
                      callbacks=[probe])
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        out[count] = {"epochs": count, "steps": count * work.steps_per_epoch,
                      "fit_peak_growth_bytes": peak - base,
                      "fit_retained_bytes": current - base,
                      "epoch_peak_growth_bytes": max(probe.growth)}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--peer", default="fastnn")
    parser.add_argument("--n", type=int, default=60000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.peer == "keras":
        from .peers import keras_backend
        keras_backend()
    import fastnn
    threads = args.threads or fastnn.get_num_threads()
    fastnn.set_num_threads(threads)
    print(json.dumps(measure_peak(args.peer, args.n, threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
