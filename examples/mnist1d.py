"""MNIST-1D (Greydanus, 2020): the paper's small CNN, trained with fastnn.

    pip install ".[examples]"      # pulls the mnist1d package (offline data generator)
    python examples/mnist1d.py                # 8 seeds, 150 epochs, prints test accuracy
    python examples/mnist1d.py --torch        # also the same model in PyTorch, timed

The data come from mnist1d's own generator, make_dataset(get_dataset_args()): 4000
training and 1000 test sequences of length 40, 10 classes. The model: three Conv1D of 25
filters (kernel 5, 3, 3; stride 2; padding "same"; ReLU), then Dense(10) on logits; Adam
with learning rate 1e-2, batch 100, 150 epochs. The paper reports about 94% test accuracy
for this CNN (68% for an MLP).
"""
import argparse
import os
import statistics
import sys
import time

# This file shares its name with the mnist1d package: keep its folder off the import path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import numpy as np

import fastnn
from fastnn import Sequential
from fastnn.layers import Conv1D, Dense, Flatten
from fastnn.losses import SparseCategoricalCrossentropy
from fastnn.optimizers import Adam


def load():
    from mnist1d.data import get_dataset_args, make_dataset
    data = make_dataset(get_dataset_args())
    as_f32 = lambda a: np.asarray(a, dtype=np.float32)
    return as_f32(data["x"]), np.asarray(data["y"]), as_f32(data["x_test"]), np.asarray(data["y_test"])


def cnn():
    return Sequential([
        Conv1D(25, 5, strides=2, padding="same", activation="relu"),
        Conv1D(25, 3, strides=2, padding="same", activation="relu"),
        Conv1D(25, 3, strides=2, padding="same", activation="relu"),
        Flatten(),
        Dense(10),
    ])


def train_fastnn(x, y, x_test, y_test, seed, epochs):
    fastnn.set_random_seed(seed)
    model = cnn()
    model.compile(optimizer=Adam(learning_rate=1e-2),
                  loss=SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(x[:, :, None], y, batch_size=100, epochs=epochs, verbose=0, seed=seed)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test[:, :, None], y_test)
    return accuracy, seconds, history.history["loss"][-1]


def train_torch(x, y, x_test, y_test, seed, epochs):
    """The same model and training in PyTorch's idiomatic loop (Keras-default init aside)."""
    import torch
    torch.manual_seed(seed)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv1d(1, 25, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(25 * 5, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-7)
    xt, yt = torch.from_numpy(x[:, None, :]), torch.from_numpy(y).long()
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for s in range(0, len(xt), 100):
            idx = order[s:s + 100]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        pred = model(torch.from_numpy(x_test[:, None, :])).argmax(1).numpy()
    return float((pred == y_test).mean()), seconds, float(loss.detach())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--torch", action="store_true", help="also train PyTorch's version")
    args = parser.parse_args()
    x, y, x_test, y_test = load()
    print(f"MNIST-1D: {len(x)} train, {len(x_test)} test, length {x.shape[1]}; "
          f"{fastnn.get_num_threads()} threads")
    runners = [("fastnn", train_fastnn)]
    if args.torch:
        import torch
        torch.set_num_threads(fastnn.get_num_threads())
        runners.append(("torch", train_torch))
    for name, train in runners:
        accs, times = [], []
        for seed in range(args.seeds):
            acc, seconds, loss = train(x, y, x_test, y_test, seed, args.epochs)
            accs.append(acc)
            times.append(seconds)
            print(f"{name:>6} seed {seed}: test accuracy {acc:.3f}, final train loss {loss:.4f}, "
                  f"{seconds:.2f} s")
        print(f"{name:>6}: mean test accuracy {statistics.mean(accs):.4f} "
              f"(min {min(accs):.3f}, max {max(accs):.3f}) over {args.seeds} seeds; "
              f"median training time {statistics.median(times):.2f} s\n")


if __name__ == "__main__":
    main()
