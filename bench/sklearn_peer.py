"""fastnn.sklearn.MLPClassifier against scikit-learn's MLPClassifier: the same settings,
the same data, timed alternately.

    from bench.sklearn_peer import compare, compare_all
    compare(n_samples=10000)          # dict: medians, ratio, accuracies
    compare_all()                     # the bench's rows: the problems below

The bench compares on these problems at scikit-learn's default settings (hidden layer
of 100 ReLU units, Adam, batch min(200, n), tol 1e-4), each checked against the >= 10x
goal:
- "breast_cancer" and "digits": scikit-learn's own datasets (569 x 30, 2 classes; 1797 x
  64, 10 classes; standardized), the size of problem most MLPClassifier users fit, trained
  to convergence (max_iter=200). scikit-learn spends its time running many small steps in
  Python, which is what fastnn compiles away.
- "synthetic", MNIST-shaped (10000 x 784, 10 classes), 20 epochs: each step is large
  matrix products that scikit-learn already hands to a multi-threaded BLAS, so both sides
  are close to the matrix-product bound and no implementation can be many times faster.
- breast_cancer and digits again with float64 data, as StandardScaler returns it: both
  estimators then compute in float64 (scikit-learn keeps the dtype of X), whose matrix
  products take twice float32's time on these cores.
Each row reports fastnn's GFLOP/s over the fit's matrix products, and a ceiling: the ratio
an implementation would reach if it did those products at the rate numpy's matmul gets on
large matrices and nothing else. Where the ceiling is under 10, no implementation doing
scikit-learn's arithmetic can train 10x faster on this machine.
"""
import statistics
import time
import warnings

import numpy as np


def make_data(n_samples, n_features=784, n_classes=10, seed=0, dtype="float32"):
    """A synthetic MNIST-shaped problem: 10 Gaussian classes in 784 standardized
    features, their centers close enough that a network needs most features (about 97%
    test accuracy after 20 epochs of scikit-learn's default MLP)."""
    rng = np.random.default_rng(seed)
    centers = 0.15 * rng.standard_normal((n_classes, n_features))
    y = rng.integers(0, n_classes, n_samples)
    x = centers[y] + rng.standard_normal((n_samples, n_features))
    return x.astype(dtype), y


def load(dataset, n_samples, seed, dtype):
    if dataset == "breast_cancer":  # scikit-learn's own tabular data, 569 x 30, 2 classes
        from sklearn.datasets import load_breast_cancer
        from sklearn.preprocessing import StandardScaler
        x, y = load_breast_cancer(return_X_y=True)
        return StandardScaler().fit_transform(x).astype(dtype), y
    if dataset == "digits":
        from sklearn.datasets import load_digits
        from sklearn.preprocessing import StandardScaler
        x, y = load_digits(return_X_y=True)
        x = StandardScaler().fit_transform(x)
        if n_samples and n_samples > x.shape[0]:  # tile with jitter to reach n_samples
            rng = np.random.default_rng(seed)
            reps = -(-n_samples // x.shape[0])
            x = np.tile(x, (reps, 1))[:n_samples]
            x = x + 0.1 * rng.standard_normal(x.shape)
            y = np.tile(y, reps)[:n_samples]
        return x.astype(dtype), y
    return make_data(n_samples, seed=seed, dtype=dtype)


_PEAK_GFLOPS = {}  # dtype name -> the best rate measured in this process


def matmul_peak_gflops(dtype, n=2048):
    """GFLOP/s of numpy's matmul of two n x n matrices of dtype on fastnn's thread count:
    the best of this call's 7 timings and every earlier call's, so that a moment of load
    on this shared machine does not lower the rate (and the ceiling) it stands for."""
    from threadpoolctl import threadpool_limits

    import fastnn
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    with threadpool_limits(fastnn.get_num_threads(), user_api="blas"):
        a @ b
        best = float("inf")
        for _ in range(7):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    name = np.dtype(dtype).name
    _PEAK_GFLOPS[name] = max(_PEAK_GFLOPS.get(name, 0.0), 2 * n ** 3 / best / 1e9)
    return _PEAK_GFLOPS[name]


def compare(n_samples=10000, seed=0, dataset="synthetic", dtype="float32", runs=5,
            test_fraction=0.2, **params):
    """Fits fastnn.sklearn.MLPClassifier and sklearn.neural_network.MLPClassifier with
    identical settings (scikit-learn's defaults, random_state=seed, max_iter=20, plus
    **params) on the same data; returns a dict with the median fit seconds of each, their
    ratio (sklearn / fastnn), the spread, each side's test accuracy, final training loss
    and iterations, fastnn's rate over the fit's matrix products, and the ceiling:
    scikit-learn's time over those products' time at the cores' peak matmul rate."""
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as SklearnMLP

    from fastnn.sklearn import MLPClassifier as FastnnMLP

    x, y = load(dataset, n_samples, seed, dtype)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    settings = dict(random_state=seed, max_iter=20)
    settings.update(params)
    makers = {"fastnn": lambda: FastnnMLP(**settings),
              "sklearn": lambda: SklearnMLP(**settings)}

    def fit(name):
        est = makers[name]()
        # Idle first, as the bench does before every timed run (bench/kernels.settle):
        # the other side's BLAS or OpenMP worker threads spin for up to ~0.1 s after its
        # fit and would take a core from this one.
        time.sleep(0.15)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
            start = time.perf_counter()
            est.fit(x_train, y_train)
            elapsed = time.perf_counter() - start
        return elapsed, est

    for name in makers:  # warm-up: imports, BLAS and thread pools
        fit(name)
    times = {name: [] for name in makers}
    fitted = {}
    for _ in range(runs):
        for name in makers:
            elapsed, est = fit(name)
            times[name].append(elapsed)
            fitted[name] = est
    out = {"n_samples": int(x.shape[0]), "n_features": int(x.shape[1]), "dataset": dataset,
           "dtype": dtype, "runs": runs, "settings": settings}
    for name, est in fitted.items():
        out[f"{name}_s"] = statistics.median(times[name])
        out[f"{name}_times"] = times[name]
        out[f"{name}_accuracy"] = float(est.score(x_test, y_test))
        out[f"{name}_train_loss"] = float(est.loss_)
        out[f"{name}_n_iter"] = int(est.n_iter_)
    # the fit's matrix products (forward and weight gradient of every layer, the input
    # gradient of all but the first), as fastnn's rate over the fit: how near the cores'
    # peak the remaining time is
    units = [x_train.shape[1], *np.atleast_1d(fitted["fastnn"].hidden_layer_sizes).tolist(),
             fitted["fastnn"].n_outputs_]
    per_row = sum((4 if i == 0 else 6) * a * b for i, (a, b) in enumerate(zip(units, units[1:])))
    out["fastnn_gflops"] = (per_row * x_train.shape[0] * out["fastnn_n_iter"] /
                            out["fastnn_s"] / 1e9)
    # The ceiling: scikit-learn's time over the time those same products would take at the
    # cores' peak (a large square matmul's rate): no implementation doing this fit's
    # arithmetic can be more than this many times faster than scikit-learn here.
    out["peak_gflops"] = matmul_peak_gflops(dtype)
    out["ceiling_ratio"] = (out["sklearn_s"] * out["peak_gflops"] * 1e9 /
                            (per_row * x_train.shape[0] * out["fastnn_n_iter"]))
    out["ratio"] = out["sklearn_s"] / out["fastnn_s"]
    out["accuracy_diff"] = out["fastnn_accuracy"] - out["sklearn_accuracy"]
    return out


# (dataset, n_samples, dtype, extra settings). float64 data (what StandardScaler returns)
# keeps both estimators in float64, as scikit-learn computes in the dtype of X: twice the
# matrix-product time of float32 on these cores (8 lanes of 64 bits a vector, not 16).
PROBLEMS = [("breast_cancer", 0, "float32", {"max_iter": 200}),
            ("digits", 0, "float32", {"max_iter": 200}),
            ("synthetic", 10000, "float32", {"max_iter": 20}),
            ("breast_cancer", 0, "float64", {"max_iter": 200}),
            ("digits", 0, "float64", {"max_iter": 200})]


def compare_all(runs=5, quick=False):
    """compare() on each of PROBLEMS (quick: the two small float32 ones, 3 runs)."""
    return [compare(n_samples=n, dataset=dataset, dtype=dtype, runs=3 if quick else runs,
                    **settings)
            for dataset, n, dtype, settings in (PROBLEMS[:2] if quick else PROBLEMS)]


if __name__ == "__main__":
    import json
    import sys
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    print(json.dumps(compare(n_samples=n), indent=1))
