"""Flat buffers for the compiled kernels, aligned to cache lines.

NumPy aligns its allocations to 16 bytes only. The kernels load 64-byte vectors (AVX-512)
from the parameter, gradient and optimizer-state buffers: from a buffer that starts
mid-line, every such load spans two cache lines (measured: the thread that trained on the
model's own parameters ran each digits step about 5 us slower than the thread holding an
aligned copy, its Adam update a third slower)."""
import numpy as np

ALIGN_BYTES = 64


def is_aligned(array):
    return array.ctypes.data % ALIGN_BYTES == 0


def aligned_zeros(n, dtype):
    """n zeros of dtype, starting on an ALIGN_BYTES boundary (a view into a slightly
    larger array, which it keeps alive)."""
    dtype = np.dtype(dtype)
    raw = np.zeros(n + ALIGN_BYTES // dtype.itemsize, dtype=dtype)
    start = (-raw.ctypes.data % ALIGN_BYTES) // dtype.itemsize
    return raw[start:start + n]


def aligned_copy(array):
    """A contiguous copy of a 1-D array, starting on an ALIGN_BYTES boundary."""
    out = aligned_zeros(array.shape[0], array.dtype)
    out[...] = array
    return out
