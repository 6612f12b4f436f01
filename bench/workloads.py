"""The bench's workloads: data with fixed seeds, and each network's layout.

Every peer trains the same architecture, with the same initial weights (glorot uniform,
zero biases, drawn here), the same data and Keras' Adam defaults unless stated. Each
timed run r shuffles with seed r in every peer (the warm-up run uses seed 0), so the
spread of final losses over runs is the noise the "curves equal" check compares with.
"""
from dataclasses import dataclass, field

import numpy as np


def glorot(rng, shape, fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


class _Steps:
    """Step counts of a workload with fields n, batch and epochs (timed epochs)."""

    @property
    def steps_per_epoch(self):
        return -(-self.n // self.batch)

    @property
    def steps(self):
        """Timed steps."""
        return self.epochs * self.steps_per_epoch


@dataclass
class MLPWorkload(_Steps):
    name: str
    description: str
    sizes: tuple            # layer widths, input first
    hidden: str             # hidden activation
    output: str             # "sigmoid" (BCE) or "logits" (sparse CE from logits)
    n: int
    batch: int
    epochs: int             # timed epochs
    warmup_epochs: int = 0  # untimed epochs on the same model before the timed ones
    learning_rate: float = 1e-3
    data: dict = field(default_factory=dict, repr=False)
    kind = "mlp"

    def gemm_shapes(self):
        """(rows, inner, cols, need_dx) of each layer's forward product at full batches."""
        return [(self.batch, a, b, i > 0)
                for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:]))]

    def flops_per_step(self):
        """2 x multiply-adds of the forward (x W), the backward dW and dX (all but the
        first layer): the matrix products no implementation can skip."""
        return sum((3 if need_dx else 2) * 2 * m * k * n
                   for m, k, n, need_dx in self.gemm_shapes())

    def make(self, seed=0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.n, self.sizes[0]), dtype=np.float32)
        if self.output == "sigmoid":
            w = rng.standard_normal(self.sizes[0], dtype=np.float32)
            y = (x @ w > 0).astype(np.float32)
        else:
            classes = self.sizes[-1]
            w = rng.standard_normal((self.sizes[0], classes), dtype=np.float32)
            noise = 0.5 * rng.standard_normal((self.n, classes), dtype=np.float32)
            y = np.argmax(x @ w + noise, axis=1).astype(np.int64)
        weights = []
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            weights += [glorot(rng, (a, b), a, b), np.zeros(b, dtype=np.float32)]
        self.data = {"x": x, "y": y, "weights": weights}
        return self


def same_padding(length, kernel, stride):
    """Keras' padding="same": (output length, left pad, right pad)."""
    out = -(-length // stride)
    total = max((out - 1) * stride + kernel - length, 0)
    return out, total // 2, total - total // 2


@dataclass
class CNNWorkload(_Steps):
    """W3: the MNIST-1D CNN of examples/mnist1d.py (channels last, as Keras)."""
    name: str
    description: str
    length: int
    classes: int
    convs: tuple            # (filters, kernel, stride) per Conv1D, padding "same", ReLU
    n: int
    batch: int
    epochs: int
    warmup_epochs: int = 0
    learning_rate: float = 1e-2
    data: dict = field(default_factory=dict, repr=False)
    kind = "cnn"

    def geometry(self):
        """(steps_in, channels_in, filters, kernel, stride, steps_out, pad_left, pad_right)
        per conv layer."""
        out, length, channels = [], self.length, 1
        for filters, kernel, stride in self.convs:
            steps_out, left, right = same_padding(length, kernel, stride)
            out.append((length, channels, filters, kernel, stride, steps_out, left, right))
            length, channels = steps_out, filters
        return out

    def flat_width(self):
        last = self.geometry()[-1]
        return last[5] * last[2]

    def make(self, seed=0):
        rng = np.random.default_rng(seed)
        x = y = None
        source = "synthetic"
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError:
            make_dataset = None
        if make_dataset is not None:
            data = make_dataset(get_dataset_args())
            x = np.asarray(data["x"], dtype=np.float32)[:self.n]
            y = np.asarray(data["y"]).astype(np.int64)[:self.n]
            source = "mnist1d.make_dataset(get_dataset_args())"
        if x is None or len(x) < self.n or x.shape[1] != self.length:
            x = rng.standard_normal((self.n, self.length), dtype=np.float32)
            y = rng.integers(0, self.classes, self.n).astype(np.int64)
            source = "synthetic"
        weights = []
        for steps_in, channels, filters, kernel, stride, *_ in self.geometry():
            weights += [glorot(rng, (kernel, channels, filters), kernel * channels, kernel * filters),
                        np.zeros(filters, dtype=np.float32)]
        flat = self.flat_width()
        weights += [glorot(rng, (flat, self.classes), flat, self.classes),
                    np.zeros(self.classes, dtype=np.float32)]
        self.data = {"x": np.ascontiguousarray(x[:, :, None]), "y": y, "weights": weights,
                     "source": source}
        return self


def course(epochs=100):
    """W1: the course's network, 400-25-15-1 sigmoid, BCE, Adam, batch 32, 1000 samples."""
    return MLPWorkload("W1", "course net 400-25-15-1 sigmoid, BCE, batch 32",
                       (400, 25, 15, 1), "sigmoid", "sigmoid", 1000, 32, epochs)


def mnist_mlp(epochs=1, n=60000, warmup_epochs=1):
    """W2: MNIST-shaped MLP 784-256-128-10 ReLU, sparse CE from logits, batch 128; the
    timed epoch comes after a warm-up epoch on the same model (and optimizer)."""
    return MLPWorkload("W2", "MNIST-shaped MLP 784-256-128-10 ReLU, batch 128",
                       (784, 256, 128, 10), "relu", "logits", n, 128, epochs, warmup_epochs)


def mnist1d_cnn(epochs=5):
    """W3: the MNIST-1D CNN, 3 x Conv1D(25; k 5, 3, 3; stride 2; same; ReLU), Flatten,
    Dense(10) on logits, Adam lr 1e-2, batch 100, 4000 samples of length 40."""
    return CNNWorkload("W3", "MNIST-1D CNN 3xConv1D(25,s2,same)+Dense(10), batch 100",
                       40, 10, ((25, 5, 2), (25, 3, 2), (25, 3, 2)), 4000, 100, epochs)
