"""The bench's workloads: synthetic data with fixed seeds, and each network's layout.

Every peer trains the same architecture, with the same initial weights (glorot uniform,
zero biases, drawn here), the same batches and Keras' Adam defaults unless stated.
"""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class MLPWorkload:
    name: str
    description: str
    sizes: tuple            # layer widths, input first
    hidden: str             # hidden activation
    output: str             # "sigmoid" (BCE) or "logits" (sparse CE from logits)
    n: int
    batch: int
    epochs: int
    learning_rate: float = 1e-3
    data: dict = field(default_factory=dict, repr=False)

    @property
    def steps(self):
        return self.epochs * -(-self.n // self.batch)

    def flops_per_epoch(self):
        """Multiply-adds x 2 of forward (x W), backward dW and dX (all but the first layer)."""
        total = 0
        for i, (a, b) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            passes = 3 if i > 0 else 2
            total += passes * 2 * self.n * a * b
        return total

    def make(self, seed=0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.n, self.sizes[0])).astype(np.float32)
        if self.output == "sigmoid":
            w = rng.standard_normal(self.sizes[0])
            y = (x @ w > 0).astype(np.float32)
        else:
            classes = self.sizes[-1]
            w = rng.standard_normal((self.sizes[0], classes))
            y = np.argmax(x @ w + 0.5 * rng.standard_normal((self.n, classes)), axis=1).astype(np.int64)
        self.data = {"x": x, "y": y, "weights": self.initial_weights(rng)}
        return self

    def initial_weights(self, rng):
        weights = []
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            limit = np.sqrt(6.0 / (a + b))
            weights += [rng.uniform(-limit, limit, (a, b)).astype(np.float32),
                        np.zeros(b, dtype=np.float32)]
        return weights


def course(epochs=100):
    """W1: the course's network, 400-25-15-1 sigmoid, BCE, Adam, batch 32, 1000 samples."""
    return MLPWorkload("W1", "course net 400-25-15-1 sigmoid, BCE, batch 32",
                       (400, 25, 15, 1), "sigmoid", "sigmoid", 1000, 32, epochs)


def mnist_mlp(epochs=1, n=60000):
    """W2: MNIST-shaped MLP 784-256-128-10 ReLU, sparse CE from logits, batch 128."""
    return MLPWorkload("W2", "MNIST-shaped MLP 784-256-128-10 ReLU, batch 128",
                       (784, 256, 128, 10), "relu", "logits", n, 128, epochs)
