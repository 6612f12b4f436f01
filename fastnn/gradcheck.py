"""gradcheck: backpropagated gradients against central differences of the compiled loss."""
import numpy as np

from . import _validation as check
from ._kernels import Network


def gradcheck(model, x, y, eps=None, max_params=None, seed=0):
    """The largest relative error |g_bp - g_fd| / max(|g_bp| + |g_fd|, 1e-12) between the
    backpropagated gradient of the model's loss on (x, y) and central differences, over
    every parameter (or max_params sampled ones). Runs on a float64 copy of the model's
    network (dropout off); the model itself is untouched."""
    model._require_compiled("gradcheck")
    xa, ya, sample_shape = model._prepare_xy(x, y)
    if not model.built:
        model._build(sample_shape)
    xa, ya = xa.astype(np.float64), ya.astype(np.float64)
    if max_params is not None:
        max_params = check.integer(max_params, "max_params", 1)
    # 1e-5: central differences' rounding error (~1e-16 |loss| / eps) stays far below
    # the gradients of interest, while the truncation error (~eps^2) is still tiny.
    eps = 1e-5 if eps is None else float(eps)

    params = model._params.astype(np.float64)
    grads = np.zeros_like(params)
    net = Network(model._specs, params, grads)
    model._configure_loss_of(net)
    n = xa.shape[0]
    net.loss_grad(xa, ya, 1)
    backprop = grads.copy()

    n_params = model.count_params()
    indices = np.arange(n_params)
    if max_params is not None and max_params < n_params:
        indices = np.sort(np.random.default_rng(seed).choice(n_params, max_params, replace=False))
    worst = 0.0
    for i in indices:
        saved = params[i]
        params[i] = saved + eps
        plus = net.evaluate(xa, ya, n, 1)[0] / n
        params[i] = saved - eps
        minus = net.evaluate(xa, ya, n, 1)[0] / n
        params[i] = saved
        numeric = (plus - minus) / (2 * eps)
        err = abs(backprop[i] - numeric) / max(abs(backprop[i]) + abs(numeric), 1e-12)
        worst = max(worst, err)
    return worst
