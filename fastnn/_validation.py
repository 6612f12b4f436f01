"""Input checks, in one place, before any state changes. Every error names the argument,
what was expected and what was given."""
import numbers

import numpy as np


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
        what = {"c": "complex", "O": "object", "U": "string", "S": "bytes"}.get(kind, str(arr.dtype))
        raise TypeError(f"{name}: expected an array of real numbers, got dtype {arr.dtype} ({what})")
    if arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=dtype)
    finite = np.isfinite(out)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        original = arr[tuple(bad)]
        why = "overflows " + np.dtype(dtype).name if np.isfinite(original) else "is not finite"
        raise ValueError(f"{name}: expected finite values, but {name}[{', '.join(map(str, bad))}] "
                         f"= {original!r} {why} ({int((~finite).sum())} such values)")
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


def targets(y, name, dtype, loss_name, width, n):
    """y as the (n, y_width) array the loss kernel reads: class ids (n, 1) for the sparse
    loss, else (n, width)."""
    out = as_float_array(y, name, dtype)
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
