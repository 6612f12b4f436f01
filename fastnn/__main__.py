"""python -m fastnn: the course's lessons, trained for real on a dataset made here.

1. A network whose layers are all linear is still one linear map: on 3-class spirals it
   does no better than logistic regression.
2. ReLU hidden layers bend the decision boundary and separate the spirals.
3. Softmax multiclass trained from logits (SparseCategoricalCrossentropy(from_logits=True)).
4. The course's binary network (sigmoid layers, BinaryCrossentropy), 400-25-15-1.
"""
import time

import numpy as np

import fastnn
from fastnn import Sequential
from fastnn.layers import Dense
from fastnn.losses import BinaryCrossentropy, SparseCategoricalCrossentropy
from fastnn.optimizers import Adam


def spirals(points_per_class=300, classes=3, noise=0.2, seed=0):
    """Interleaved 2-D spirals, one arm per class (the CS231n toy set)."""
    rng = np.random.default_rng(seed)
    x, y = [], []
    for c in range(classes):
        r = np.linspace(0.0, 1.0, points_per_class)
        t = np.linspace(c * 4.0, (c + 1) * 4.0, points_per_class) + rng.normal(0, noise, points_per_class)
        x.append(np.column_stack([r * np.sin(t), r * np.cos(t)]))
        y.append(np.full(points_per_class, c))
    return np.concatenate(x).astype(np.float32), np.concatenate(y)


def train(title, layers, x, y, loss, epochs, show_losses=False, metrics=("accuracy",),
          plot=None):
    model = Sequential(layers)
    model.compile(optimizer=Adam(learning_rate=0.01), loss=loss, metrics=list(metrics))
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, seed=0)
    seconds = time.perf_counter() - start
    loss_value, accuracy = model.evaluate(x, y)
    steps = epochs * -(-len(x) // 32)
    print(f"{title:<46} accuracy {accuracy:6.1%}  loss {loss_value:.4f}  "
          f"{epochs} epochs in {seconds:.2f} s ({seconds / steps * 1e6:.0f} us/step)")
    if plot:
        try:
            print(f"    loss and accuracy curves: {fastnn.plot_history(history, plot, title)}")
        except ImportError:
            pass  # matplotlib is optional
    if show_losses:
        losses = history.history["loss"]
        for first in range(0, epochs, 10):
            row = " ".join(f"{v:.3f}" for v in losses[first:first + 10])
            print(f"    loss, epochs {first + 1:>3}-{min(first + 10, epochs):>3}: {row}")
    return accuracy


def main():
    fastnn.set_random_seed(0)
    print(f"fastnn {fastnn.__version__}: {fastnn.get_num_threads()} threads\n")
    x, y = spirals()
    print(f"3-class spirals: {len(x)} points, 2 features\n")
    logits = SparseCategoricalCrossentropy(from_logits=True)

    logistic = train("logistic regression (Dense(3))", [Dense(3)], x, y, logits, 100)
    linear = train("linear layers only (2-64-64-3, no activation)",
                   [Dense(64), Dense(64), Dense(3)], x, y, logits, 100)
    relu = train("ReLU hidden layers (2-64-64-3, from logits)",
                 [Dense(64, activation="relu"), Dense(64, activation="relu"), Dense(3)],
                 x, y, logits, 100, show_losses=True, plot="fastnn_spirals_history.png")
    softmax = train("ReLU + softmax output (from_logits=False)",
                    [Dense(64, activation="relu"), Dense(64, activation="relu"),
                     Dense(3, activation="softmax")], x, y, "sparse_categorical_crossentropy", 100)
    print(f"\nLesson: stacking linear layers gives {linear:.1%}, no better than logistic "
          f"regression's {logistic:.1%}; ReLU hidden layers reach {relu:.1%} "
          f"(softmax output: {softmax:.1%}).\n")

    rng = np.random.default_rng(1)
    xb = rng.standard_normal((1000, 400)).astype(np.float32)
    yb = (xb @ rng.standard_normal(400) > 0).astype(np.float32)
    print("The course's network: 400-25-15-1 sigmoid, BinaryCrossentropy, 1000 samples")
    train("sigmoid 400-25-15-1, batch 32", [Dense(25, activation="sigmoid"),
          Dense(15, activation="sigmoid"), Dense(1, activation="sigmoid")],
          xb, yb, BinaryCrossentropy(), 100)


if __name__ == "__main__":
    main()
