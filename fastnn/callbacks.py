"""Callbacks: History (returned by fit), EarlyStopping, ModelCheckpoint, TerminateOnNaN,
and any object with on_epoch_end(epoch, logs)."""
import os
import warnings

import numpy as np


class Callback:
    """Base class; every hook is optional. `self.model` is set before training."""

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class History(Callback):
    """history: dict of per-epoch lists (loss, metrics, val_*); epoch: the epoch numbers."""

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.params = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"<History epochs={len(self.epoch)} keys={list(self.history)}>"


class TerminateOnNaN(Callback):
    """Stops training when the loss is NaN or infinite (Keras' TerminateOnNaN). A diverging
    run (too large a learning rate) then ends after the epoch whose loss went bad, with
    that NaN or inf in the History, instead of training on. fastnn runs whole epochs in
    compiled code, so the check happens at the end of each epoch (and at the end of each
    batch for callers that report batches)."""

    def _check(self, where, logs):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            print(f"{where}: Invalid loss, terminating training")
            self.model.stop_training = True

    def on_batch_end(self, batch, logs=None):
        self._check(f"Batch {batch}", logs)

    def on_epoch_end(self, epoch, logs=None):
        self._check(f"Epoch {epoch + 1}", logs)


def _better(mode, monitor):
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
    return mode


class EarlyStopping(Callback):
    """Stops training when `monitor` has not improved by more than min_delta for
    `patience` epochs; optionally restores the best epoch's weights when training ends,
    stopped early or not (as Keras 3)."""

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"patience: expected an integer >= 0, got {patience!r}")
        self.monitor = monitor
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.verbose = verbose
        self.mode = _better(mode, monitor)
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        # None, not inf: as in Keras, the first monitored value always counts as the best
        # so far, even a NaN or inf one.
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def _improved(self, value, reference):
        if reference is None:
            return True
        # As Keras: min_delta moves the value, not the reference (they round differently
        # when the change is exactly min_delta)
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def get_monitor_value(self, logs):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(f"Early stopping conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join(logs)}", stacklevel=2)
        return value

    def on_epoch_end(self, epoch, logs=None):
        value = self.get_monitor_value(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._improved(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improved(value, self.baseline):
                self.wait = 0
            return
        # Weights are restored in on_train_end, not here: callbacks after this one still
        # see the weights of the epoch they are told about.
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Saves the model to filepath (formatted with epoch and logs) after each epoch, or
    only when `monitor` improved (save_best_only); creates filepath's directory if needed,
    as Keras does."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
        if save_freq != "epoch":
            raise ValueError(f"save_freq: only 'epoch' is supported, got {save_freq!r}")
        self.filepath = str(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.mode = _better(mode, monitor)
        # None: the first value is an improvement (Keras 3's initial_value_threshold)
        self.best = initial_value_threshold

    def _print(self, text):
        print(f"\n{text}")  # Keras' io_utils.print_msg of "\nEpoch ..."

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                # Keras 3 then saves every epoch, as without save_best_only
                warnings.warn(f"Can save best model only with {self.monitor} available.",
                              stacklevel=2)
            else:
                best = "None" if self.best is None else f"{self.best:.5f}"
                better = self.best is None or (value < self.best if self.mode == "min"
                                               else value > self.best)
                if not better:
                    if self.verbose > 0:
                        self._print(f"Epoch {epoch + 1}: {self.monitor} did not improve "
                                    f"from {best}")
                    return
                if self.verbose > 0:
                    self._print(f"Epoch {epoch + 1}: {self.monitor} improved from {best} to "
                                f"{value:.5f}, saving model to {path}")
                self.best = value
        elif self.verbose > 0:
            self._print(f"Epoch {epoch + 1}: saving model to {path}")
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self.model.save(path)
        if self.verbose > 0:
            self._print(f"Epoch {epoch + 1}: finished saving model to {path}")
