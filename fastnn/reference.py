"""Plain-NumPy reference implementation of every fastnn kernel.

This module is the readable ground truth that the tests use to check the
compiled C kernels.  Everything is computed in float64 with straightforward
NumPy code: clarity matters here, speed does not.  The formulas follow
Keras 3 (activations, losses with their clipping conventions, metrics and
the SGD / Adam / RMSprop update rules).

Conventions
-----------
* Batches are the first axis; dense inputs are ``(B, C)``, weights ``(C, OC)``.
* Losses return ``(loss, grad)``: ``loss`` is the batch mean (mean over the
  last axis, then over the batch, as in Keras' default reduction) and
  ``grad = d(loss)/d(pred)`` with the same shape as ``pred``.  With per-sample
  weights (``weighted_loss``) the batch mean becomes scikit-learn's weighted
  mean, ``np.average(per_sample_loss, weights=w)``.
* Optimizer updates return new arrays and never modify their inputs.
"""

import numpy as np

EPSILON = 1e-7  # Keras' backend epsilon, used to clip probabilities.

ACTIVATIONS = ("linear", "sigmoid", "relu", "leaky_relu", "tanh", "softmax")


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _check_activation(name):
    if name is None:
        return "linear"
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")
    return name


def _target_like(y, pred):
    """y as float64 with pred's shape (a (B,) target is accepted for (B, 1))."""
    y = _f64(y)
    if y.shape != pred.shape and y.size == pred.size:
        y = y.reshape(pred.shape)
    if y.shape != pred.shape:
        raise ValueError(f"target shape {y.shape} does not match prediction {pred.shape}")
    return y


def _labels(labels, pred):
    """Integer class ids, shape (B,), from (B,) or (B, 1), ints or whole floats."""
    lab = np.asarray(labels).reshape(-1)
    if lab.dtype.kind == "f":
        if not np.all(lab == np.rint(lab)):
            raise ValueError("sparse labels must hold whole numbers")
        lab = np.rint(lab)
    lab = lab.astype(np.int64)
    if lab.shape[0] != pred.shape[0]:
        raise ValueError(f"{lab.shape[0]} labels for a batch of {pred.shape[0]}")
    if np.any(lab < 0) or np.any(lab >= pred.shape[-1]):
        raise ValueError(f"labels must lie in [0, {pred.shape[-1]})")
    return lab


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------

def sigmoid(z):
    """sigmoid(z) = 1 / (1 + exp(-z)), evaluated with exp(-|z|) so it never overflows."""
    z = _f64(z)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax(z):
    """softmax over the last axis: exp(z - max) / sum(exp(z - max))."""
    z = _f64(z)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def logsumexp(z):
    """log(sum(exp(z))) over the last axis, max-subtracted: m + log(sum(exp(z - m)))."""
    z = _f64(z)
    m = z.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))[..., 0]


def activation_forward(z, name, slope=0.01):
    """a = act(z).

    linear: z; sigmoid: 1/(1+exp(-z)); relu: max(z, 0);
    leaky_relu: z if z > 0 else slope*z; tanh: tanh(z);
    softmax: exp(z - max) / sum(exp(z - max)) over the last axis.
    """
    z = _f64(z)
    name = _check_activation(name)
    if name == "linear":
        return z.copy()
    if name == "sigmoid":
        return sigmoid(z)
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, slope * z)
    if name == "tanh":
        return np.tanh(z)
    return softmax(z)


def activation_backward(da, z, a, name, slope=0.01):
    """dz = dL/dz given da = dL/da, z and a = act(z) (a may be None: recomputed).

    linear: da; sigmoid: da*a*(1-a); tanh: da*(1-a^2);
    relu: da*[z > 0] (derivative 0 at z == 0);
    leaky_relu: da*(1 if z > 0 else slope);
    softmax (full Jacobian per row): a * (da - sum(da*a, axis=-1, keepdims=True)).
    """
    da, z = _f64(da), _f64(z)
    name = _check_activation(name)
    a = activation_forward(z, name, slope) if a is None else _f64(a)
    if name == "linear":
        return da.copy()
    if name == "sigmoid":
        return da * a * (1.0 - a)
    if name == "relu":
        return np.where(z > 0, da, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, da, slope * da)
    if name == "tanh":
        return da * (1.0 - a * a)
    return a * (da - np.sum(da * a, axis=-1, keepdims=True))


# ---------------------------------------------------------------------------
# Dense layer
# ---------------------------------------------------------------------------

def gemm(a, b, a_trans=False, b_trans=False):
    """op(a) @ op(b), the product of src_c/gemm.c (op transposes when asked)."""
    a, b = _f64(a), _f64(b)
    return (a.T if a_trans else a) @ (b.T if b_trans else b)


def dense_forward(x, w, b, activation="linear", slope=0.01):
    """z = x @ w + b (b may be None), a = act(z). Returns (z, a).

    x: (B, C), w: (C, OC), b: (OC,) or None.
    """
    x, w = _f64(x), _f64(w)
    z = x @ w
    if b is not None:
        z = z + _f64(b)
    return z, activation_forward(z, activation, slope)


def dense_backward(da, x, w, z, a, activation="linear", slope=0.01):
    """Gradients of a dense layer. Returns (dx, dw, db).

    dz = activation_backward(da, z, a); dw = x.T @ dz; db = dz.sum(0); dx = dz @ w.T.
    """
    x, w = _f64(x), _f64(w)
    dz = activation_backward(da, z, a, activation, slope)
    return dz @ w.T, x.T @ dz, dz.sum(axis=0)


# ---------------------------------------------------------------------------
# Losses: each returns (batch-mean loss, d loss / d pred)
# ---------------------------------------------------------------------------

def binary_crossentropy(pred, y, from_logits=False):
    """Binary cross-entropy, mean over all elements (last axis, then batch).

    From logits z: l = max(z, 0) - z*y + log1p(exp(-|z|));
        grad = (sigmoid(z) - y) / N, N = B*K.
    From probabilities (Keras): p = clip(pred, eps, 1-eps), eps = 1e-7;
        l = -y log p - (1-y) log(1-p);
        grad = (p - y) / (p (1-p)) / N where eps < pred < 1-eps, else 0.
    """
    pred = _f64(pred)
    y = _target_like(y, pred)
    n = pred.size
    if from_logits:
        z = pred
        per = np.maximum(z, 0.0) - z * y + np.log1p(np.exp(-np.abs(z)))
        return float(per.mean()), (sigmoid(z) - y) / n
    p = np.clip(pred, EPSILON, 1.0 - EPSILON)
    per = -y * np.log(p) - (1.0 - y) * np.log(1.0 - p)
    inside = (pred > EPSILON) & (pred < 1.0 - EPSILON)
    grad = np.where(inside, (p - y) / (p * (1.0 - p)), 0.0) / n
    return float(per.mean()), grad


def mean_squared_error(pred, y):
    """MSE: mean((pred - y)^2); grad = 2 (pred - y) / N, N = B*K."""
    pred = _f64(pred)
    diff = pred - _target_like(y, pred)
    return float(np.mean(diff * diff)), 2.0 * diff / pred.size


def sparse_categorical_crossentropy(pred, labels, from_logits=False):
    """Cross-entropy with integer class ids (B,) or (B, 1); mean over the batch.

    From logits z: l_i = logsumexp(z_i) - z_i[y_i];
        grad = (softmax(z) - onehot(y)) / B.
    From probabilities (Keras): s = sum(pred, -1); q = pred / s;
        l_i = -log clip(q_i[y_i], eps, 1-eps);
        grad_ij = (1/s_i - [j == y_i] / pred_i[y_i]) / B when q_i[y_i] is not
        clipped (eps < q < 1-eps), else the whole row is 0.
    """
    pred = _f64(pred)
    lab = _labels(labels, pred)
    bsz = pred.shape[0]
    rows = np.arange(bsz)
    onehot = np.zeros_like(pred)
    onehot[rows, lab] = 1.0
    if from_logits:
        per = logsumexp(pred) - pred[rows, lab]
        return float(per.mean()), (softmax(pred) - onehot) / bsz
    s = pred.sum(axis=-1, keepdims=True)
    q_y = pred[rows, lab] / s[:, 0]
    per = -np.log(np.clip(q_y, EPSILON, 1.0 - EPSILON))
    inside = ((q_y > EPSILON) & (q_y < 1.0 - EPSILON))[:, None]
    p_y = np.where(inside[:, 0], pred[rows, lab], 1.0)[:, None]
    grad = np.where(inside, 1.0 / s - onehot / p_y, 0.0) / bsz
    return float(per.mean()), grad


def categorical_crossentropy(pred, y, from_logits=False):
    """Cross-entropy with one-hot or soft targets y (B, K); mean over the batch.

    From logits z: l_i = sum_j y_ij (logsumexp(z_i) - z_ij);
        grad_ij = (softmax(z)_ij * sum_k y_ik - y_ij) / B.
    From probabilities (Keras): s_i = sum_j pred_ij; q = pred / s;
        u_ij = [eps < q_ij < 1-eps] (entry not clipped);
        l_i = -sum_j y_ij log clip(q_ij, eps, 1-eps);
        grad_ij = (-y_ij u_ij / pred_ij + sum_k y_ik u_ik / s_i) / B.
    The probability gradient is the chain rule through q_k = pred_k / s with
    dq_k/dpred_j = [j == k]/s - pred_k/s^2 and dl/dq_k = -y_k u_k / q_k.
    """
    pred = _f64(pred)
    y = _target_like(y, pred)
    bsz = pred.shape[0]
    if from_logits:
        lse = logsumexp(pred)[..., None]
        per = np.sum(y * (lse - pred), axis=-1)
        ysum = y.sum(axis=-1, keepdims=True)
        return float(per.mean()), (softmax(pred) * ysum - y) / bsz
    s = pred.sum(axis=-1, keepdims=True)
    q = pred / s
    per = -np.sum(y * np.log(np.clip(q, EPSILON, 1.0 - EPSILON)), axis=-1)
    inside = (q > EPSILON) & (q < 1.0 - EPSILON)
    y_in = np.where(inside, y, 0.0)
    safe_pred = np.where(inside, pred, 1.0)
    grad = (-y_in / safe_pred + y_in.sum(axis=-1, keepdims=True) / s) / bsz
    return float(per.mean()), grad


def weighted_loss(loss, pred, y, weights, from_logits=False):
    """scikit-learn's weighted batch loss (its MLP's np.average(..., weights=w)).

    l_i = the named loss of row i alone (a batch of that one row);
    loss = sum_i w_i l_i / sum_i w_i;
    grad row i = w_i dl_i/dpred_i / sum_i w_i.
    Weights may be negative; weights summing to 0 have no weighted mean: (nan, zeros).
    With all weights equal this is the unweighted batch mean.
    """
    pred, w = _f64(pred), _f64(weights)
    y = np.asarray(y)
    if w.shape != (pred.shape[0],):
        raise ValueError(f"weights: expected shape ({pred.shape[0]},), got {w.shape}")
    per_row = [loss_function(loss, pred[i:i + 1], y[i:i + 1], from_logits)
               for i in range(pred.shape[0])]
    row_loss = np.array([value for value, _ in per_row])
    row_grad = np.concatenate([g for _, g in per_row]).reshape(pred.shape)
    total = w.sum()
    if total == 0:
        return float("nan"), np.zeros_like(pred)
    return float(np.sum(w * row_loss) / total), row_grad * (w / total)[:, None]


# ---------------------------------------------------------------------------
# Metrics: each returns the batch-mean value as a float
# ---------------------------------------------------------------------------

def binary_accuracy(pred, y, from_logits=False, threshold=0.5):
    """mean(y == [pred > threshold]) over the last axis, then the batch.

    For logits the threshold is moved to logit space, log(t / (1-t)),
    which is 0 for the default t = 0.5 (i.e. predict 1 when z > 0).
    """
    pred = _f64(pred)
    y = _target_like(y, pred)
    if from_logits:
        threshold = np.log(threshold / (1.0 - threshold))
    hit = (pred > threshold).astype(np.float64) == y
    return float(np.mean(hit))


def sparse_categorical_accuracy(pred, labels):
    """mean(argmax(pred, -1) == label)."""
    pred = _f64(pred)
    return float(np.mean(np.argmax(pred, axis=-1) == _labels(labels, pred)))


def categorical_accuracy(pred, y):
    """mean(argmax(pred, -1) == argmax(y, -1))."""
    pred = _f64(pred)
    y = _target_like(y, pred)
    return float(np.mean(np.argmax(pred, axis=-1) == np.argmax(y, axis=-1)))


def mean_absolute_error(pred, y):
    """mean(|pred - y|) over the last axis, then the batch."""
    pred = _f64(pred)
    return float(np.mean(np.abs(pred - _target_like(y, pred))))


def mean_squared_error_metric(pred, y):
    """mean((pred - y)^2) over the last axis, then the batch."""
    return mean_squared_error(pred, y)[0]


# ---------------------------------------------------------------------------
# Optimizers (Keras 3 update rules); inputs are never modified
# ---------------------------------------------------------------------------

def sgd_update(w, g, velocity, lr=0.01, momentum=0.0, nesterov=False):
    """One SGD step. Returns (w, velocity).

    momentum == 0: w - lr*g (velocity returned unchanged).
    otherwise:     velocity = momentum*velocity - lr*g;
                   w + momentum*velocity - lr*g if nesterov else w + velocity.
    """
    w, g = _f64(w), _f64(g)
    velocity = _f64(velocity).copy()
    if momentum == 0:
        return w - lr * g, velocity
    velocity = momentum * velocity - lr * g
    if nesterov:
        return w + momentum * velocity - lr * g, velocity
    return w + velocity, velocity


def adam_update(w, g, m, v, t, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7):
    """One Adam step at 1-based step number t. Returns (w, m, v).

    m = m + (g - m)(1 - beta1); v = v + (g^2 - v)(1 - beta2);
    lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t);
    w = w - lr_t m / (sqrt(v) + eps).
    """
    w, g, m, v = _f64(w), _f64(g), _f64(m), _f64(v)
    m = m + (g - m) * (1.0 - beta1)
    v = v + (g * g - v) * (1.0 - beta2)
    lr_t = lr * np.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
    return w - lr_t * m / (np.sqrt(v) + eps), m, v


def rmsprop_update(w, g, v, mom, lr=0.001, rho=0.9, momentum=0.0, eps=1e-7):
    """One (uncentered) RMSprop step. Returns (w, v, mom).

    v = rho v + (1 - rho) g^2; inc = lr g / sqrt(v + eps);
    momentum > 0: mom = momentum*mom + inc; w = w - mom.
    otherwise:    w = w - inc (mom returned unchanged).
    """
    w, g, v = _f64(w), _f64(g), _f64(v)
    mom = _f64(mom).copy()
    v = rho * v + (1.0 - rho) * g * g
    inc = lr * g / np.sqrt(v + eps)
    if momentum > 0:
        mom = momentum * mom + inc
        return w - mom, v, mom
    return w - inc, v, mom


# ---------------------------------------------------------------------------
# Dropout and test helpers
# ---------------------------------------------------------------------------

def dropout_forward(x, mask):
    """y = x * mask, where mask holds 0 or 1/(1 - rate)."""
    return _f64(x) * _f64(mask)


def dropout_backward(dy, mask):
    """dx = dy * mask (same mask as the forward pass)."""
    return _f64(dy) * _f64(mask)


def numeric_gradient(f, x, eps=1e-6):
    """Central differences of a scalar function f at x:
    grad_i = (f(x + eps e_i) - f(x - eps e_i)) / (2 eps). Returns x's shape.
    """
    x = _f64(x).copy()
    grad = np.zeros_like(x)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        orig = flat_x[i]
        flat_x[i] = orig + eps
        up = float(f(x))
        flat_x[i] = orig - eps
        down = float(f(x))
        flat_x[i] = orig
        flat_g[i] = (up - down) / (2.0 * eps)
    return grad


# ---------------------------------------------------------------------------
# A small reference network: forward, loss, backward and one optimizer step
# ---------------------------------------------------------------------------
#
# A network is a list of dense layers, each a tuple (W, b, activation) or
# (W, b, activation, slope): W is (C, OC), b is (OC,) or None (no bias), the
# activation a name from ACTIVATIONS and slope leaky_relu's negative slope
# (0.01 when omitted).  Parameters are listed in Keras' get_weights() order:
# W0, b0, W1, b1, ... (a layer without bias contributes only its W).

LOSS_NAMES = ("binary_crossentropy", "mean_squared_error",
              "sparse_categorical_crossentropy", "categorical_crossentropy")


def _unpack_layer(layer):
    w, b, act = layer[0], layer[1], _check_activation(layer[2])
    slope = layer[3] if len(layer) > 3 else 0.01
    return _f64(w), (None if b is None else _f64(b)), act, float(slope)


def network_weights(layers):
    """The parameters of a list of layers, in Keras' get_weights() order."""
    out = []
    for layer in layers:
        w, b, _, _ = _unpack_layer(layer)
        out.append(w)
        if b is not None:
            out.append(b)
    return out


def network_with_weights(layers, weights):
    """The same layers (activations, slopes, bias or not) holding new weights given
    in get_weights() order."""
    weights, out, k = list(weights), [], 0
    for layer in layers:
        _, b, act, slope = _unpack_layer(layer)
        w_new = _f64(weights[k])
        k += 1
        b_new = None
        if b is not None:
            b_new = _f64(weights[k])
            k += 1
        out.append((w_new, b_new, act, slope))
    if k != len(weights):
        raise ValueError(f"{len(weights)} weights for layers that hold {k}")
    return out


def network_forward(layers, x):
    """Forward pass. Returns [(input, z, a) per layer]; the output is the last a."""
    cache, a = [], _f64(x)
    for layer in layers:
        w, b, act, slope = _unpack_layer(layer)
        z, a_next = dense_forward(a, w, b, act, slope)
        cache.append((a, z, a_next))
        a = a_next
    return cache


def is_fused(loss, from_logits, last_activation):
    """Whether fastnn folds the output activation into the loss: a sigmoid output with
    binary cross-entropy, or a softmax output with a categorical cross-entropy, when the
    loss takes probabilities. The loss is then taken from the logits z (same value, a
    stable form) and the backward pass starts from dL/dz."""
    if from_logits:
        return False
    if loss == "binary_crossentropy":
        return last_activation == "sigmoid"
    if loss in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
        return last_activation == "softmax"
    return False


def loss_function(loss, pred, y, from_logits=False):
    """(batch-mean loss, d loss / d pred) of the named loss."""
    if loss not in LOSS_NAMES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSS_NAMES}")
    if loss == "mean_squared_error":
        return mean_squared_error(pred, y)
    return globals()[loss](pred, y, from_logits=from_logits)


def network_loss_and_grads(layers, x, y, loss, from_logits=False, weights=None, l2=0.0):
    """(loss, [gradients in get_weights() order]) of the batch-mean loss on (x, y).

    weights: per-sample weights, making the loss weighted_loss's weighted mean.
    l2: scikit-learn's L2 penalty on the kernels (not the biases),
        0.5 * l2 * sum ||W||^2 / batch_weight, and dW += l2 * W / batch_weight,
        where batch_weight is the number of rows, or sum(weights) when weighted.
    """
    cache = network_forward(layers, x)
    last_act = _unpack_layer(layers[-1])[2]
    fused = is_fused(loss, from_logits, last_act)
    _, z_last, a_last = cache[-1]
    # fused: the loss from the logits, so its gradient is dL/dz of the last layer
    pred, pred_from_logits = (z_last, True) if fused else (a_last, from_logits)
    if weights is None:
        value, d = loss_function(loss, pred, y, from_logits=pred_from_logits)
        batch_weight = float(np.shape(x)[0])
    else:
        value, d = weighted_loss(loss, pred, y, weights, from_logits=pred_from_logits)
        batch_weight = float(np.sum(_f64(weights)))
    grads = []
    for i in range(len(layers) - 1, -1, -1):
        w, b, act, slope = _unpack_layer(layers[i])
        x_in, z, a = cache[i]
        if fused and i == len(layers) - 1:
            act = "linear"  # d already holds dL/dz
        d, dw, db = dense_backward(d, x_in, w, z, a, act, slope)
        if l2:
            value += 0.5 * l2 * np.sum(w * w) / batch_weight
            dw = dw + l2 * w / batch_weight
        grads.append([dw] if b is None else [dw, db])
    return value, [g for layer_grads in reversed(grads) for g in layer_grads]


def optimizer_step(weights, grads, optimizer, state=None):
    """One optimizer step on every parameter. Returns (new weights, new state).

    optimizer: a dict {"name": "sgd" | "adam" | "rmsprop", settings...} with Keras'
    names and defaults (learning_rate, momentum, nesterov; beta_1, beta_2, epsilon; rho).
    state: None before the first step, else what the previous step returned:
    {"iterations": steps taken, "slots": [(slot1, slot2) per parameter]} (SGD: velocity;
    Adam: m, v; RMSprop: v, momentum).
    """
    opt = dict(optimizer)
    name = opt.pop("name")
    if state is None:
        state = {"iterations": 0,
                 "slots": [(np.zeros_like(_f64(w)), np.zeros_like(_f64(w))) for w in weights]}
    t = state["iterations"] + 1
    new_weights, new_slots = [], []
    for w, g, (s1, s2) in zip(weights, grads, state["slots"]):
        if name == "sgd":
            w, s1 = sgd_update(w, g, s1, lr=opt.get("learning_rate", 0.01),
                               momentum=opt.get("momentum", 0.0),
                               nesterov=opt.get("nesterov", False))
        elif name == "adam":
            w, s1, s2 = adam_update(w, g, s1, s2, t, lr=opt.get("learning_rate", 0.001),
                                    beta1=opt.get("beta_1", 0.9), beta2=opt.get("beta_2", 0.999),
                                    eps=opt.get("epsilon", 1e-7))
        elif name == "rmsprop":
            w, s1, s2 = rmsprop_update(w, g, s1, s2, lr=opt.get("learning_rate", 0.001),
                                       rho=opt.get("rho", 0.9), momentum=opt.get("momentum", 0.0),
                                       eps=opt.get("epsilon", 1e-7))
        else:
            raise ValueError(f"unknown optimizer {name!r}; expected sgd, adam or rmsprop")
        new_weights.append(w)
        new_slots.append((s1, s2))
    return new_weights, {"iterations": t, "slots": new_slots}


def reference_train_step(layers, x, y, loss, from_logits=False, optimizer=None, state=None):
    """One full-batch training step, as fastnn's compiled Network takes it.

    Forward through the dense layers, the loss (fused into its logits form for a
    sigmoid/softmax output, as fastnn does), backward with dense_backward, then one
    optimizer step (see optimizer_step; default {"name": "sgd"}).
    Returns (new layers, new optimizer state, the loss before the step).
    """
    if optimizer is None:
        optimizer = {"name": "sgd"}
    value, grads = network_loss_and_grads(layers, x, y, loss, from_logits)
    weights, state = optimizer_step(network_weights(layers), grads, optimizer, state)
    return network_with_weights(layers, weights), state, value


# ---------------------------------------------------------------------------
# 1-D convolution and pooling (channels-last, as Keras)
# ---------------------------------------------------------------------------
#
# Layout: x is (B, L, C): B samples of L steps of C channels.  A Conv1D kernel w
# is (K, C, F) as Keras' get_weights() gives it, the bias b is (F,), and z, a are
# (B, Lout, F).  Output step t reads input steps t*stride - pad_left + k for
# k = 0..K-1; steps outside [0, L) read zero (padding="same").

def conv1d_output_length(L, kernel, stride, padding):
    """Keras' output length and left padding of a window of `kernel` steps moved by
    `stride` over L steps. Returns (steps_out, pad_left).

    valid: steps_out = (L - K) // s + 1, pad_left = 0 (needs L >= K);
    same:  steps_out = ceil(L / s), total = max((steps_out - 1) * s + K - L, 0),
           pad_left = total // 2 (the extra step, if any, goes to the right).
    """
    L, kernel, stride = int(L), int(kernel), int(stride)
    if L < 1 or kernel < 1 or stride < 1:
        raise ValueError(f"L, kernel, stride must be positive, got {L}, {kernel}, {stride}")
    if padding == "valid":
        if L < kernel:
            raise ValueError(f"input length {L} is shorter than the window {kernel} "
                             f"with padding='valid'")
        return (L - kernel) // stride + 1, 0
    if padding == "same":
        steps_out = -(-L // stride)
        total = max((steps_out - 1) * stride + kernel - L, 0)
        return steps_out, total // 2
    raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")


def _conv1d_padded(x, kernel, stride, padding):
    """(x zero-padded along steps so every window lies inside, steps_out, pad_left)."""
    L = x.shape[1]
    steps_out, pad_left = conv1d_output_length(L, kernel, stride, padding)
    pad_right = max((steps_out - 1) * stride + kernel - L - pad_left, 0)
    xp = np.pad(x, ((0, 0), (pad_left, pad_right), (0, 0)))
    return xp, steps_out, pad_left


def conv1d_forward(x, w, b, stride=1, padding="valid", activation="linear", slope=0.01):
    """1-D convolution (cross-correlation, as Keras). Returns (z, a), each (B, Lout, F).

    z[n, t, f] = b[f] + sum_{k, c} xpad[n, t*stride + k, c] * w[k, c, f],
    where xpad is x with pad_left zero steps in front (and enough behind);
    a = act(z) (softmax over the filters axis).
    """
    x, w = _f64(x), _f64(w)
    if x.ndim != 3 or w.ndim != 3 or w.shape[1] != x.shape[2]:
        raise ValueError(f"expected x (B, L, C) and w (K, C, F), got {x.shape} and {w.shape}")
    kernel = w.shape[0]
    xp, steps_out, _ = _conv1d_padded(x, kernel, stride, padding)
    span = (steps_out - 1) * stride + 1
    z = np.zeros((x.shape[0], steps_out, w.shape[2]))
    for k in range(kernel):
        # the k-th tap of every window: steps k, k + s, ..., k + (Lout-1) s
        z += xp[:, k:k + span:stride, :] @ w[k]
    if b is not None:
        z = z + _f64(b)
    return z, activation_forward(z, activation, slope)


def conv1d_backward(da, x, w, z, a, stride=1, padding="valid", activation="linear",
                    slope=0.01):
    """Gradients of conv1d_forward given da = dL/da. Returns (dx, dw, db).

    dz = activation_backward(da, z, a);
    dw[k, c, f] = sum_{n, t} xpad[n, t*s + k, c] dz[n, t, f];
    db[f] = sum_{n, t} dz[n, t, f];
    dxpad[n, t*s + k, c] += sum_f dz[n, t, f] w[k, c, f], and dx = dxpad without the
    padded steps (their gradient is dropped).
    """
    x, w = _f64(x), _f64(w)
    kernel = w.shape[0]
    L = x.shape[1]
    xp, steps_out, pad_left = _conv1d_padded(x, kernel, stride, padding)
    dz = activation_backward(da, z, a, activation, slope)
    span = (steps_out - 1) * stride + 1
    dw = np.zeros_like(w)
    dxp = np.zeros_like(xp)
    for k in range(kernel):
        taps = xp[:, k:k + span:stride, :]                 # (B, Lout, C)
        dw[k] = np.einsum("ntc,ntf->cf", taps, dz)
        dxp[:, k:k + span:stride, :] += dz @ w[k].T
    return dxp[:, pad_left:pad_left + L, :], dw, dz.sum(axis=(0, 1))


def maxpool1d_forward(x, pool=2, stride=None, padding="valid"):
    """Max pooling over steps. Returns (out, argmax), each (B, Lout, C).

    Window t covers steps [t*s - pad_left, t*s - pad_left + pool) clipped to [0, L)
    ('same' windows ignore the padded steps, as if they held -inf);
    out[n, t, c] = max over the window of x[n, step, c];
    argmax[n, t, c] = the input step holding it (the first one on ties), int32.
    stride defaults to pool (as Keras).
    """
    x = _f64(x)
    stride = pool if stride is None else stride
    B, L, C = x.shape
    steps_out, pad_left = conv1d_output_length(L, pool, stride, padding)
    out = np.empty((B, steps_out, C))
    argmax = np.empty((B, steps_out, C), dtype=np.int32)
    for t in range(steps_out):
        first = t * stride - pad_left
        lo, hi = max(first, 0), min(first + pool, L)
        window = x[:, lo:hi, :]                            # (B, hi - lo, C)
        idx = np.argmax(window, axis=1)                    # first maximum on ties
        argmax[:, t, :] = lo + idx
        out[:, t, :] = np.take_along_axis(window, idx[:, None, :], axis=1)[:, 0, :]
    return out, argmax


def maxpool1d_backward(dout, argmax, steps_in):
    """dx (B, steps_in, C) of max pooling: each output's gradient goes to its argmax
    step, dx[n, argmax[n, t, c], c] += dout[n, t, c] (overlapping windows add up)."""
    dout = _f64(dout)
    argmax = np.asarray(argmax)
    B, steps_out, C = dout.shape
    dx = np.zeros((B, int(steps_in), C))
    n_idx = np.arange(B)[:, None, None]
    c_idx = np.arange(C)[None, None, :]
    np.add.at(dx, (np.broadcast_to(n_idx, dout.shape), argmax,
                   np.broadcast_to(c_idx, dout.shape)), dout)
    return dx


def global_avgpool1d_forward(x):
    """out[n, c] = (1/L) sum_t x[n, t, c]: (B, L, C) -> (B, C)."""
    return _f64(x).mean(axis=1)


def global_avgpool1d_backward(dout, steps_in):
    """dx[n, t, c] = dout[n, c] / L for every step t: (B, C) -> (B, L, C)."""
    dout = _f64(dout)
    return np.repeat(dout[:, None, :] / steps_in, int(steps_in), axis=1)
