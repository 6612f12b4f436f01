"""Input checks, in one place, before any state changes. Every error names the argument,
what was expected and what was given."""
import numbers

import numpy as np

from ._kernels import all_finite


def as_float_array(value, name, dtype):
    """value as a C-contiguous, finite, non-empty array of dtype (copied only if needed)."""
    if hasattr(value, "toarray") and hasattr(value, "nnz"):
        value = value.toarray()  # scipy sparse
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{name}: expected a rectangular array of numbers ({err})") from None
    kind = arr.dtype.kind
    if kind not in "biuf":
        what = {"c": "complex", "O": "object", "U": "string", "S": "bytes", "V": "structured",
                "M": "datetime", "m": "timedelta"}.get(kind, str(arr.dtype))
        raise TypeError(f"{name}: expected an array of real numbers, got dtype {arr.dtype} ({what})")
    if arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=dtype)
    if arr.ndim == 0:  # ascontiguousarray makes a scalar 1-D: report the shape given
        out = out.reshape(())
    if out.dtype.kind == "f" and out.dtype.itemsize in (4, 8) and all_finite(out):
        return out  # the common case, checked in C without an n-sized temporary
    finite = np.isfinite(out)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        original = arr[tuple(bad)]
        why = "overflows " + np.dtype(dtype).name if np.isfinite(original) else "is not finite"
        raise ValueError(f"{name}: expected finite values, but {name}[{', '.join(map(str, bad))}] "
                         f"= {original!r} {why} ({int((~finite).sum())} such values)")
    return out


def samples(x, name, dtype, sample_shape=None, rank=None):
    """x as an (n, *sample_shape) array. rank is the per-sample rank the model's first
    layer needs (1: features, 2: steps x channels); an (n, steps) array fed to a model
    that needs (steps, channels) is read as one channel."""
    out = as_float_array(x, name, dtype)
    if rank == 2 and out.ndim == 2:
        out = out.reshape(out.shape + (1,))
    if out.ndim < 2:
        raise ValueError(f"{name}: expected a batch of samples, shape (samples, features) or "
                         f"(samples, steps, channels), got shape {out.shape}")
    if sample_shape is not None and out.shape[1:] != tuple(sample_shape):
        raise ValueError(f"{name}: expected samples of shape {tuple(sample_shape)} (the model's "
                         f"input), got shape {out.shape}")
    if sample_shape is None and rank is not None and out.ndim - 1 != rank:
        want = "(samples, features)" if rank == 1 else "(samples, steps, channels)"
        raise ValueError(f"{name}: expected shape {want} for the model's first layer, "
                         f"got shape {out.shape}")
    return out


def features(x, name, dtype, width=None):
    """x as an (n, width) array for a Dense input."""
    out = as_float_array(x, name, dtype)
    if out.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape (samples, features), "
                         f"got shape {out.shape}")
    if width is not None and out.shape[1] != width:
        raise ValueError(f"{name}: expected {width} features per sample (the model's input), "
                         f"got shape {out.shape}")
    return out


def targets(y, name, dtype, loss_name, width, n, output_shape=None):
    """y as the (n, y_width) array the loss kernel reads: class ids (n, 1) for the sparse
    loss, else (n, width). output_shape: the model's per-sample output shape when it has
    more than one axis (y may then come in that shape)."""
    if loss_name == "sparse_categorical_crossentropy":
        # Checked in float64 first: float32 would round 1 + 1e-9 to a whole number.
        exact = as_float_array(y, name, np.float64)
        whole = exact == np.floor(exact)
        if not whole.all():
            bad = np.argwhere(~whole)[0]
            raise ValueError(f"{name}: expected whole-number class ids, got "
                             f"{name}[{', '.join(map(str, bad))}] = {exact[tuple(bad)]!r}")
    out = as_float_array(y, name, dtype)
    if out.ndim == 0 or out.shape[0] != n:
        raise ValueError(f"{name}: expected {n} samples (as many as x), got shape {out.shape}")
    if output_shape is not None and len(output_shape) > 1:
        if loss_name not in ("mean_squared_error", "binary_crossentropy"):
            raise ValueError(f"loss: {loss_name} needs outputs of shape (samples, classes); the "
                             f"model outputs {tuple(output_shape)} per sample (add Flatten/Dense)")
        if out.shape[1:] == tuple(output_shape):
            out = out.reshape(n, width)
    if out.shape[0] != n:
        raise ValueError(f"{name}: expected {n} samples (as many as x), got shape {out.shape}")
    if loss_name == "sparse_categorical_crossentropy":
        if not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
            raise ValueError(f"{name}: expected class ids of shape ({n},) or ({n}, 1) for "
                             f"sparse categorical cross-entropy, got shape {out.shape}")
        out = out.reshape(n, 1)
        whole = out == np.floor(out)
        if not whole.all():
            bad = np.argwhere(~whole)[0][0]
            raise ValueError(f"{name}: expected whole-number class ids, got {name}[{bad}] = {out[bad, 0]!r}")
        lo, hi = out.min(), out.max()
        if lo < 0 or hi >= width:
            raise ValueError(f"{name}: expected class ids in [0, {width}) (the output has {width} "
                             f"units), got values from {lo:g} to {hi:g}")
        return out
    if out.ndim == 1 and width == 1:
        out = out.reshape(n, 1)
    if out.ndim != 2 or out.shape[1] != width:
        raise ValueError(f"{name}: expected shape ({n}, {width}) to match the model's output "
                         f"for {loss_name}, got shape {out.shape}")
    if loss_name == "binary_crossentropy":
        lo, hi = out.min(), out.max()
        if lo < 0 or hi > 1:
            raise ValueError(f"{name}: expected binary cross-entropy targets in [0, 1], got "
                             f"values from {lo:g} to {hi:g}")
    return out


def integer(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def choice(value, name, options):
    if not any(value is o or (type(value) is type(o) and value == o) for o in options):
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, options))}, got {value!r}")
    return value
