"""Each peer trains a workload with its own idiomatic code and reports the time of the
training loop alone (data and model made beforehand) and the final epoch's mean loss.

A peer whose package is missing raises Skip; it is reported as skipped, never faked.
"""
import time

import numpy as np


class Skip(Exception):
    pass


# ---- fastnn ---------------------------------------------------------------------------

def fastnn_mlp(work):
    import fastnn
    from fastnn import Sequential
    from fastnn.layers import Dense
    from fastnn.losses import BinaryCrossentropy, SparseCategoricalCrossentropy
    from fastnn.optimizers import Adam

    layers = [Dense(b, activation=work.hidden) for b in work.sizes[1:-1]]
    if work.output == "sigmoid":
        layers.append(Dense(work.sizes[-1], activation="sigmoid"))
        loss = BinaryCrossentropy()
    else:
        layers.append(Dense(work.sizes[-1]))
        loss = SparseCategoricalCrossentropy(from_logits=True)
    model = Sequential(layers)
    model.build((work.sizes[0],))
    model.set_weights(work.data["weights"])
    model.compile(optimizer=Adam(learning_rate=work.learning_rate), loss=loss)
    x, y = work.data["x"], work.data["y"]

    def run():
        model.set_weights(work.data["weights"])
        model.compile(optimizer=Adam(learning_rate=work.learning_rate), loss=loss)
        start = time.perf_counter()
        history = model.fit(x, y, batch_size=work.batch, epochs=work.epochs, verbose=0, seed=0)
        return time.perf_counter() - start, history.history["loss"][-1]
    run.model = model
    del fastnn
    return run


# ---- NumPy by hand --------------------------------------------------------------------

def numpy_mlp(work):
    """The course's way without a framework: NumPy forward, backward and Keras' Adam."""
    x_all, y_all = work.data["x"], work.data["y"]
    if work.output == "sigmoid":
        targets = y_all.reshape(-1, 1).astype(np.float32)
    else:
        targets = y_all

    def run():
        params = [p.copy() for p in work.data["weights"]]
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        rng = np.random.default_rng(0)
        t = 0
        start = time.perf_counter()
        for _ in range(work.epochs):
            order = rng.permutation(work.n)
            total = 0.0
            for s in range(0, work.n, work.batch):
                idx = order[s:s + work.batch]
                xb, yb = x_all[idx], targets[idx]
                acts = [xb]
                for i in range(0, len(params), 2):
                    z = acts[-1] @ params[i] + params[i + 1]
                    last = i == len(params) - 2
                    if not last:
                        z = 1 / (1 + np.exp(-z)) if work.hidden == "sigmoid" else np.maximum(z, 0)
                    acts.append(z)
                z = acts[-1]
                bsz = len(idx)
                if work.output == "sigmoid":
                    p = 1 / (1 + np.exp(-z))
                    total += float(np.mean(np.maximum(z, 0) - z * yb + np.log1p(np.exp(-np.abs(z))))) * bsz
                    dz = (p - yb) / bsz
                else:
                    zmax = z.max(axis=1, keepdims=True)
                    e = np.exp(z - zmax)
                    s_ = e.sum(axis=1, keepdims=True)
                    total += float(np.mean(np.log(s_[:, 0]) + zmax[:, 0] - z[np.arange(bsz), yb])) * bsz
                    dz = e / s_
                    dz[np.arange(bsz), yb] -= 1
                    dz /= bsz
                grads = [None] * len(params)
                for i in range(len(params) - 2, -1, -2):
                    a_in = acts[i // 2]
                    grads[i] = a_in.T @ dz
                    grads[i + 1] = dz.sum(axis=0)
                    if i > 0:
                        da = dz @ params[i].T
                        dz = da * a_in * (1 - a_in) if work.hidden == "sigmoid" else da * (a_in > 0)
                t += 1
                lr_t = work.learning_rate * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
                for p, g, mi, vi in zip(params, grads, m, v):
                    mi += (g - mi) * 0.1
                    vi += (g * g - vi) * 0.001
                    p -= (lr_t * mi / (np.sqrt(vi) + 1e-7)).astype(np.float32)
        return time.perf_counter() - start, total / work.n
    return run


# ---- PyTorch --------------------------------------------------------------------------

def torch_mlp(work, threads):
    try:
        import torch
    except ImportError:
        raise Skip("torch not installed") from None
    torch.set_num_threads(threads)
    layers = []
    for i, (a, b) in enumerate(zip(work.sizes[:-1], work.sizes[1:])):
        lin = torch.nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(work.data["weights"][2 * i].T.copy()))
            lin.bias.copy_(torch.from_numpy(work.data["weights"][2 * i + 1]))
        layers.append(lin)
        if i < len(work.sizes) - 2:
            layers.append(torch.nn.Sigmoid() if work.hidden == "sigmoid" else torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.from_numpy(work.data["x"])
    if work.output == "sigmoid":
        y = torch.from_numpy(work.data["y"].reshape(-1, 1).astype(np.float32))
        loss_fn = torch.nn.BCEWithLogitsLoss()
    else:
        y = torch.from_numpy(work.data["y"])
        loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        model.load_state_dict(initial)
        opt = torch.optim.Adam(model.parameters(), lr=work.learning_rate, eps=1e-7)
        gen = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        for _ in range(work.epochs):
            order = torch.randperm(work.n, generator=gen)
            total = 0.0
            for s in range(0, work.n, work.batch):
                idx = order[s:s + work.batch]
                opt.zero_grad()
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
        return time.perf_counter() - start, total / work.n
    return run


# ---- scikit-learn ---------------------------------------------------------------------

def sklearn_mlp(work):
    try:
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        raise Skip("scikit-learn not installed") from None
    import warnings
    x, y = work.data["x"], work.data["y"]

    def run():
        clf = MLPClassifier(hidden_layer_sizes=work.sizes[1:-1], activation="logistic"
                            if work.hidden == "sigmoid" else "relu", solver="adam",
                            alpha=0.0, batch_size=work.batch, learning_rate_init=work.learning_rate,
                            max_iter=work.epochs, shuffle=True, random_state=0, tol=0.0,
                            n_iter_no_change=10**9)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(x, y)
        return time.perf_counter() - start, clf.loss_curve_[-1]
    return run


# ---- Keras 3 --------------------------------------------------------------------------

def keras_mlp(work):
    try:
        import keras
    except ImportError:
        raise Skip("keras not installed") from None
    layers = [keras.Input((work.sizes[0],))]
    layers += [keras.layers.Dense(b, activation=work.hidden) for b in work.sizes[1:-1]]
    if work.output == "sigmoid":
        layers.append(keras.layers.Dense(work.sizes[-1], activation="sigmoid"))
        loss = keras.losses.BinaryCrossentropy()
    else:
        layers.append(keras.layers.Dense(work.sizes[-1]))
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = keras.Sequential(layers)
    x, y = work.data["x"], work.data["y"]

    def run():
        model.set_weights(work.data["weights"])
        model.compile(optimizer=keras.optimizers.Adam(work.learning_rate), loss=loss)
        start = time.perf_counter()
        history = model.fit(x, y, batch_size=work.batch, epochs=work.epochs, verbose=0)
        return time.perf_counter() - start, history.history["loss"][-1]
    return run
