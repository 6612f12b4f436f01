"""Each peer trains a workload with its own idiomatic code.

A trainer factory `<peer>_<kind>(work, threads)` builds the model once and returns
`run(seed)`, which resets the weights and the optimizer, trains warmup_epochs +
epochs epochs shuffling with `seed`, and returns a dict:

    seconds     the timed part: the whole training call when there is no warm-up,
                else the epochs after the warm-up ones (timed epoch by epoch)
    loss        the last epoch's mean training loss, as the peer reports it
    epochs_s    seconds of each epoch (when the peer lets one time them)
    subnormal   for workloads with a warm-up epoch: the fraction of the Adam moments
                (first and second) that are float32 subnormals after epoch 1

A peer whose package is missing raises Skip; it is reported as skipped, never faked.
"""
import os
import time

import numpy as np

perf = time.perf_counter


class Skip(Exception):
    pass


def subnormal_fraction(arrays):
    """Fraction of the entries that are subnormal (nonzero, below the smallest normal)."""
    total = count = 0
    for a in arrays:
        a = np.asarray(a).ravel()
        tiny = np.finfo(a.dtype).tiny
        total += a.size
        count += int(np.count_nonzero((a != 0) & (np.abs(a) < tiny)))
    return count / max(total, 1)


def _result(work, total, epochs_s, loss, subnormal=None):
    if work.warmup_epochs and epochs_s:
        seconds = sum(epochs_s[work.warmup_epochs:])
    else:
        seconds = total
    out = {"seconds": seconds, "loss": float(loss), "epochs_s": list(epochs_s or [])}
    if subnormal is not None:
        out["subnormal"] = subnormal
    return out


# ---- fastnn ---------------------------------------------------------------------------

def _fastnn_trainer(work, model, loss):
    from fastnn.callbacks import Callback
    from fastnn.optimizers import Adam

    x, y = work.data["x"], work.data["y"]
    epochs = work.warmup_epochs + work.epochs

    class EpochTimer(Callback):
        def __init__(self):
            self.times, self.subnormal = [], None

        def on_epoch_begin(self, epoch, logs=None):
            self.start = perf()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(perf() - self.start)
            if epoch == 0 and work.warmup_epochs:  # outside the timed epochs
                self.subnormal = subnormal_fraction(self.model.optimizer.slots)

    def run(seed):
        model.set_weights(work.data["weights"])
        model.compile(optimizer=Adam(learning_rate=work.learning_rate), loss=loss)
        timer = EpochTimer()
        start = perf()
        history = model.fit(x, y, batch_size=work.batch, epochs=epochs, verbose=0, seed=seed,
                            callbacks=[timer])
        total = perf() - start
        return _result(work, total, timer.times, history.history["loss"][-1], timer.subnormal)
    run.model = model
    return run


def fastnn_mlp(work, threads):
    from fastnn import Sequential
    from fastnn.layers import Dense
    from fastnn.losses import BinaryCrossentropy, SparseCategoricalCrossentropy

    layers = [Dense(b, activation=work.hidden) for b in work.sizes[1:-1]]
    if work.output == "sigmoid":
        layers.append(Dense(work.sizes[-1], activation="sigmoid"))
        loss = BinaryCrossentropy()
    else:
        layers.append(Dense(work.sizes[-1]))
        loss = SparseCategoricalCrossentropy(from_logits=True)
    model = Sequential(layers)
    model.build((work.sizes[0],))
    return _fastnn_trainer(work, model, loss)


def fastnn_cnn(work, threads):
    from fastnn import Sequential
    from fastnn.layers import Conv1D, Dense, Flatten
    from fastnn.losses import SparseCategoricalCrossentropy

    model = Sequential(
        [Conv1D(f, k, strides=s, padding="same", activation="relu") for f, k, s in work.convs]
        + [Flatten(), Dense(work.classes)])
    model.build((work.length, 1))
    return _fastnn_trainer(work, model, SparseCategoricalCrossentropy(from_logits=True))


# ---- NumPy by hand --------------------------------------------------------------------

class _NumpyAdam:
    """Keras' Adam as a course would write it in NumPy (float32 throughout)."""

    def __init__(self, params, lr):
        self.params, self.lr, self.t = params, lr, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads):
        self.t += 1
        lr_t = np.float32(self.lr * np.sqrt(1 - 0.999 ** self.t) / (1 - 0.9 ** self.t))
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m += (g - m) * np.float32(0.1)
            v += (g * g - v) * np.float32(0.001)
            p -= lr_t * m / (np.sqrt(v) + np.float32(1e-7))


def _numpy_loss(work_output, z, yb):
    """(mean loss, dL/dz) of BCE on logits (sigmoid output) or sparse CE from logits."""
    bsz = z.shape[0]
    if work_output == "sigmoid":
        p = 1 / (1 + np.exp(-z))
        value = float(np.mean(np.maximum(z, 0) - z * yb + np.log1p(np.exp(-np.abs(z)))))
        return value, (p - yb) / np.float32(bsz)
    zmax = z.max(axis=1, keepdims=True)
    e = np.exp(z - zmax)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(bsz)
    value = float(np.mean(np.log(s[:, 0]) + zmax[:, 0] - z[rows, yb]))
    dz = e / s
    dz[rows, yb] -= 1
    return value, dz / np.float32(bsz)


def _numpy_loop(work, step, params, opt):
    """The shared epoch loop of the NumPy trainers; step(idx) -> (loss, grads)."""
    def run(seed):
        for p, w in zip(params, work.data["weights"]):
            p[...] = w
        opt.__init__(params, work.learning_rate)
        rng = np.random.default_rng(seed)
        times, subnormal = [], None
        start = perf()
        for epoch in range(work.warmup_epochs + work.epochs):
            t0 = perf()
            order = rng.permutation(work.n)
            total = 0.0
            for s in range(0, work.n, work.batch):
                idx = order[s:s + work.batch]
                value, grads = step(idx)
                opt.step(grads)
                total += value * len(idx)
            times.append(perf() - t0)
            if epoch == 0 and work.warmup_epochs:
                subnormal = subnormal_fraction(opt.m + opt.v)
        return _result(work, perf() - start, times, total / work.n, subnormal)
    return run


def numpy_mlp(work, threads):
    """The course's way without a framework: NumPy forward, backward and Keras' Adam."""
    x_all, y_all = work.data["x"], work.data["y"]
    targets = y_all.reshape(-1, 1).astype(np.float32) if work.output == "sigmoid" else y_all
    params = [w.copy() for w in work.data["weights"]]
    opt = _NumpyAdam(params, work.learning_rate)
    sigmoid_hidden = work.hidden == "sigmoid"

    def step(idx):
        xb, yb = x_all[idx], targets[idx]
        acts = [xb]
        for i in range(0, len(params), 2):
            z = acts[-1] @ params[i] + params[i + 1]
            if i < len(params) - 2:
                z = 1 / (1 + np.exp(-z)) if sigmoid_hidden else np.maximum(z, 0)
            acts.append(z)
        value, dz = _numpy_loss(work.output, acts[-1], yb)
        grads = [None] * len(params)
        for i in range(len(params) - 2, -1, -2):
            a_in = acts[i // 2]
            grads[i] = a_in.T @ dz
            grads[i + 1] = dz.sum(axis=0)
            if i > 0:
                da = dz @ params[i].T
                dz = da * a_in * (1 - a_in) if sigmoid_hidden else da * (a_in > 0)
        return value, grads
    return _numpy_loop(work, step, params, opt)


def numpy_cnn(work, threads):
    """The CNN by hand in NumPy: im2col windows, one matmul per conv layer and pass."""
    x_all, y_all = work.data["x"], work.data["y"]
    params = [w.copy() for w in work.data["weights"]]
    opt = _NumpyAdam(params, work.learning_rate)
    geometry = work.geometry()
    windows = [np.arange(out)[:, None] * stride + np.arange(kernel)[None, :]
               for _, _, _, kernel, stride, out, _, _ in geometry]

    def step(idx):
        a = x_all[idx]
        bsz = a.shape[0]
        saved = []
        for layer, (steps, ch, filt, kernel, stride, out, left, right) in enumerate(geometry):
            w, b = params[2 * layer], params[2 * layer + 1]
            padded = np.pad(a, ((0, 0), (left, right), (0, 0)))
            cols = padded[:, windows[layer], :].reshape(bsz * out, kernel * ch)
            z = (cols @ w.reshape(kernel * ch, filt) + b).reshape(bsz, out, filt)
            a = np.maximum(z, 0)
            saved.append((cols, padded.shape, a))
        flat = a.reshape(bsz, -1)
        wd, bd = params[-2], params[-1]
        value, dz = _numpy_loss("logits", flat @ wd + bd, y_all[idx])
        grads = [None] * len(params)
        grads[-2], grads[-1] = flat.T @ dz, dz.sum(axis=0)
        da = (dz @ wd.T).reshape(a.shape)
        for layer in range(len(geometry) - 1, -1, -1):
            steps, ch, filt, kernel, stride, out, left, right = geometry[layer]
            cols, padded_shape, act = saved[layer]
            dz = (da * (act > 0)).reshape(bsz * out, filt)
            w = params[2 * layer]
            grads[2 * layer] = (cols.T @ dz).reshape(w.shape)
            grads[2 * layer + 1] = dz.sum(axis=0)
            if layer:
                dcols = (dz @ w.reshape(kernel * ch, filt).T).reshape(bsz, out, kernel, ch)
                dpad = np.zeros(padded_shape, dtype=np.float32)
                for j in range(kernel):
                    dpad[:, j:j + stride * out:stride, :] += dcols[:, :, j, :]
                da = dpad[:, left:left + steps, :]
        return value, grads
    return _numpy_loop(work, step, params, opt)


# ---- PyTorch --------------------------------------------------------------------------

def _torch(threads):
    try:
        import torch
    except ImportError:
        raise Skip("torch not installed") from None
    torch.set_num_threads(threads)
    return torch


def _torch_trainer(work, torch, model, x, y, loss_fn):
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def run(seed):
        model.load_state_dict(initial)
        opt = torch.optim.Adam(model.parameters(), lr=work.learning_rate, eps=1e-7)
        gen = torch.Generator().manual_seed(seed)
        times, subnormal = [], None
        start = perf()
        for epoch in range(work.warmup_epochs + work.epochs):
            t0 = perf()
            order = torch.randperm(work.n, generator=gen)
            total = 0.0
            for s in range(0, work.n, work.batch):
                idx = order[s:s + work.batch]
                opt.zero_grad()
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            times.append(perf() - t0)
            if epoch == 0 and work.warmup_epochs:
                subnormal = subnormal_fraction(
                    [st[k].numpy() for st in opt.state.values() for k in ("exp_avg", "exp_avg_sq")])
        return _result(work, perf() - start, times, total / work.n, subnormal)
    run.model = model
    return run


def torch_mlp_model(torch, work, final_sigmoid=False):
    """The MLP as torch.nn.Sequential with the workload's initial weights."""
    layers = []
    for i, (a, b) in enumerate(zip(work.sizes[:-1], work.sizes[1:])):
        lin = torch.nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(work.data["weights"][2 * i].T.copy()))
            lin.bias.copy_(torch.from_numpy(work.data["weights"][2 * i + 1]))
        layers.append(lin)
        if i < len(work.sizes) - 2:
            layers.append(torch.nn.Sigmoid() if work.hidden == "sigmoid" else torch.nn.ReLU())
    if final_sigmoid:
        layers.append(torch.nn.Sigmoid())
    return torch.nn.Sequential(*layers)


def torch_mlp(work, threads):
    torch = _torch(threads)
    model = torch_mlp_model(torch, work)
    x = torch.from_numpy(work.data["x"])
    if work.output == "sigmoid":
        y = torch.from_numpy(work.data["y"].reshape(-1, 1).astype(np.float32))
        loss_fn = torch.nn.BCEWithLogitsLoss()
    else:
        y = torch.from_numpy(work.data["y"])
        loss_fn = torch.nn.CrossEntropyLoss()
    return _torch_trainer(work, torch, model, x, y, loss_fn)


def torch_cnn(work, threads):
    """examples/mnist1d.py's torch model; Keras' "same" padding with stride 2 pads one more
    step on the right than on the left, which torch's padding= cannot say, so each conv is
    preceded by the same ZeroPad1d (the model is then the same function as fastnn's)."""
    torch = _torch(threads)
    nn = torch.nn
    mods = []
    for steps, ch, filt, kernel, stride, out, left, right in work.geometry():
        mods += [nn.ZeroPad1d((left, right)), nn.Conv1d(ch, filt, kernel, stride=stride), nn.ReLU()]
    last = work.geometry()[-1]
    mods += [nn.Flatten(), nn.Linear(work.flat_width(), work.classes)]
    model = nn.Sequential(*mods)
    convs = [m for m in mods if isinstance(m, nn.Conv1d)]
    w = work.data["weights"]
    with torch.no_grad():
        for i, conv in enumerate(convs):  # (kernel, in, out) -> (out, in, kernel)
            conv.weight.copy_(torch.from_numpy(w[2 * i].transpose(2, 1, 0).copy()))
            conv.bias.copy_(torch.from_numpy(w[2 * i + 1]))
        # fastnn flattens (steps, channels); torch (channels, steps)
        dense = w[-2].reshape(last[5], last[2], work.classes).transpose(1, 0, 2)
        mods[-1].weight.copy_(torch.from_numpy(dense.reshape(-1, work.classes).T.copy()))
        mods[-1].bias.copy_(torch.from_numpy(w[-1]))
    x = torch.from_numpy(np.ascontiguousarray(work.data["x"].transpose(0, 2, 1)))
    y = torch.from_numpy(work.data["y"])
    return _torch_trainer(work, torch, model, x, y, nn.CrossEntropyLoss())


# ---- scikit-learn ---------------------------------------------------------------------

def sklearn_mlp(work, threads):
    try:
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        raise Skip("scikit-learn not installed") from None
    import warnings
    x, y = work.data["x"], work.data["y"]
    classes = np.unique(y)

    def run(seed):
        clf = MLPClassifier(hidden_layer_sizes=work.sizes[1:-1],
                            activation="logistic" if work.hidden == "sigmoid" else "relu",
                            solver="adam", alpha=0.0, batch_size=work.batch,
                            learning_rate_init=work.learning_rate, epsilon=1e-7,
                            max_iter=work.epochs, shuffle=True, random_state=seed, tol=0.0,
                            n_iter_no_change=10**9)
        times, subnormal = [], None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = perf()
            if not work.warmup_epochs:  # the idiomatic call: fit for max_iter epochs
                clf.fit(x, y)
            else:  # epoch by epoch, keeping the optimizer's state
                for epoch in range(work.warmup_epochs + work.epochs):
                    t0 = perf()
                    clf.partial_fit(x, y, classes=classes)
                    times.append(perf() - t0)
                    if epoch == 0:
                        subnormal = subnormal_fraction(clf._optimizer.ms + clf._optimizer.vs)
            total = perf() - start
        return _result(work, total, times, clf.loss_curve_[-1], subnormal)
    return run


# ---- Keras 3 --------------------------------------------------------------------------

def keras_backend():
    """Keras' backend for this run: TensorFlow when installed, else PyTorch (set before
    keras is first imported; an explicit KERAS_BACKEND wins)."""
    if "KERAS_BACKEND" not in os.environ:
        import importlib.util
        os.environ["KERAS_BACKEND"] = ("tensorflow" if importlib.util.find_spec("tensorflow")
                                       else "torch")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return os.environ["KERAS_BACKEND"]


def _keras(threads):
    backend = keras_backend()
    try:
        import keras
    except ImportError:
        raise Skip("keras not installed") from None
    except Exception as err:  # e.g. its backend is missing
        raise Skip(f"keras failed to import: {err}") from None
    if backend == "tensorflow":
        import tensorflow as tf
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialized by an earlier workload
            pass
    elif backend == "torch":
        import torch
        torch.set_num_threads(threads)
    return keras


def _keras_trainer(work, keras, model, loss):
    x, y = work.data["x"], work.data["y"]
    epochs = work.warmup_epochs + work.epochs
    model.compile(optimizer=keras.optimizers.Adam(work.learning_rate), loss=loss)

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times, self.subnormal = [], None

        def on_epoch_begin(self, epoch, logs=None):
            self.start = perf()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(perf() - self.start)
            if epoch == 0 and work.warmup_epochs:
                self.subnormal = subnormal_fraction(
                    [np.asarray(v) for v in model.optimizer.variables
                     if v.path.endswith(("_momentum", "_velocity"))])

    def run(seed):
        # Fresh weights and optimizer state without compile(), which would make Keras
        # trace its train function again (the warm-up run pays that once).
        model.set_weights(work.data["weights"])
        for v in model.optimizer.variables:
            if not v.path.endswith("learning_rate"):
                v.assign(np.zeros(v.shape, dtype=v.dtype))
        keras.utils.set_random_seed(seed)
        timer = EpochTimer()
        start = perf()
        history = model.fit(x, y, batch_size=work.batch, epochs=epochs, verbose=0,
                            callbacks=[timer])
        total = perf() - start
        return _result(work, total, timer.times, history.history["loss"][-1], timer.subnormal)
    run.model = model
    return run


def keras_mlp_model(keras, work, final_sigmoid=True):
    layers = [keras.Input((work.sizes[0],))]
    layers += [keras.layers.Dense(b, activation=work.hidden) for b in work.sizes[1:-1]]
    layers.append(keras.layers.Dense(work.sizes[-1],
                                     activation="sigmoid" if final_sigmoid else None))
    model = keras.Sequential(layers)
    model.set_weights(work.data["weights"])
    return model


def keras_mlp(work, threads):
    keras = _keras(threads)
    sigmoid = work.output == "sigmoid"
    model = keras_mlp_model(keras, work, final_sigmoid=sigmoid)
    loss = (keras.losses.BinaryCrossentropy() if sigmoid
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return _keras_trainer(work, keras, model, loss)


def keras_cnn(work, threads):
    keras = _keras(threads)
    layers = [keras.Input((work.length, 1))]
    layers += [keras.layers.Conv1D(f, k, strides=s, padding="same", activation="relu")
               for f, k, s in work.convs]
    layers += [keras.layers.Flatten(), keras.layers.Dense(work.classes)]
    model = keras.Sequential(layers)
    return _keras_trainer(work, keras, model,
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))


TRAINERS = {
    "mlp": {"fastnn": fastnn_mlp, "numpy": numpy_mlp, "torch": torch_mlp,
            "sklearn": sklearn_mlp, "keras": keras_mlp},
    "cnn": {"fastnn": fastnn_cnn, "numpy": numpy_cnn, "torch": torch_cnn,
            "keras": keras_cnn},
}
NOT_APPLICABLE = {("cnn", "sklearn"): "MLPClassifier has no convolution layers"}


# ---- inference: one sample (latency) and 10000 samples (throughput) --------------------

def predictors(name, work, threads):
    """{label: predict(x) -> probabilities} for W1's network in peer `name`, each the
    peer's idiomatic inference call on a NumPy array (converted in and out)."""
    weights = work.data["weights"]
    if name == "fastnn":
        from fastnn import Sequential
        from fastnn.layers import Dense
        model = Sequential([Dense(b, activation="sigmoid") for b in work.sizes[1:]])
        model.build((work.sizes[0],))
        model.set_weights(weights)
        return {"fastnn predict": model.predict}
    if name == "numpy":
        def forward(x):
            for i in range(0, len(weights), 2):
                x = 1 / (1 + np.exp(-(x @ weights[i] + weights[i + 1])))
            return x
        return {"numpy forward": forward}
    if name == "torch":
        torch = _torch(threads)
        model = torch_mlp_model(torch, work, final_sigmoid=True).eval()

        def forward(x):
            with torch.no_grad():
                return model(torch.from_numpy(x)).numpy()
        return {"torch no_grad": forward}
    if name == "keras":
        keras = _keras(threads)
        model = keras_mlp_model(keras, work)
        return {f"keras ({keras_backend()}) predict": lambda x: model.predict(x, verbose=0),
                f"keras ({keras_backend()}) __call__":
                    lambda x: keras.ops.convert_to_numpy(model(x))}
    if name == "sklearn":
        try:
            from sklearn.neural_network import MLPClassifier
        except ImportError:
            raise Skip("scikit-learn not installed") from None
        import warnings
        clf = MLPClassifier(hidden_layer_sizes=work.sizes[1:-1], activation="logistic",
                            max_iter=1, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(work.data["x"][:64], work.data["y"][:64])
        clf.coefs_ = [w.astype(np.float32) for w in weights[0::2]]
        clf.intercepts_ = [b.astype(np.float32) for b in weights[1::2]]
        return {"sklearn predict_proba": clf.predict_proba}
    raise Skip(f"unknown peer {name!r}")
