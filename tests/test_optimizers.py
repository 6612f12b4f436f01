"""src_c/optimizers.c through fastnn._kernels.sgd_update / adam_update / rmsprop_update,
against the NumPy reference (fastnn.reference): every branch, float64 and float32, several
steps, and thread-count independence."""

import numpy as np
import pytest

from fastnn import _kernels as K
from fastnn import reference as ref

# 1 element, odd/prime sizes, and sizes above FASTNN_PARALLEL_MIN (32768) for OpenMP.
SIZES = [1, 2, 7, 13, 1000, 32768, 77101]
DTYPES = [np.float64, np.float32]
TOL = {np.float64: dict(rtol=1e-12, atol=1e-15), np.float32: dict(rtol=1e-5, atol=1e-7)}

SGD_CASES = [dict(lr=0.01, momentum=0.0, nesterov=False),
             dict(lr=0.1, momentum=0.0, nesterov=True),   # nesterov without momentum: plain
             dict(lr=0.05, momentum=0.9, nesterov=False),
             dict(lr=0.05, momentum=0.9, nesterov=True),
             dict(lr=0.3, momentum=0.5, nesterov=True)]
ADAM_CASES = [dict(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-7),
              dict(lr=0.05, beta1=0.5, beta2=0.9, eps=1e-3),
              dict(lr=0.01, beta1=0.0, beta2=0.5, eps=1e-8)]
RMS_CASES = [dict(lr=0.001, rho=0.9, momentum=0.0, eps=1e-7),
             dict(lr=0.01, rho=0.5, momentum=0.9, eps=1e-7),
             dict(lr=0.1, rho=0.99, momentum=0.3, eps=1e-3)]


def close(actual, expected, dtype, what):
    assert actual.dtype == dtype, what
    tol = TOL[dtype]
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=tol["rtol"],
                               atol=tol["atol"] * scale, err_msg=what)


def start(rng, n, dtype, n_slots):
    w = rng.standard_normal(n).astype(dtype)
    slots = [np.zeros(n, dtype) for _ in range(n_slots)]
    return w, slots


def grads(rng, n, dtype, steps):
    return [(rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 1, n)).astype(dtype)
            for _ in range(steps)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", range(len(SGD_CASES)))
def test_sgd_matches_reference(case, n, dtype):
    p = SGD_CASES[case]
    rng = np.random.default_rng(100 * case + n)
    w, (vel,) = start(rng, n, dtype, 1)
    w_ref, vel_ref = w.astype(np.float64), vel.astype(np.float64)
    for t, g in enumerate(grads(rng, n, dtype, 4)):
        K.sgd_update(w, g, vel, p["lr"], p["momentum"], p["nesterov"], nthreads=2)
        # the kernel's dtype holds lr and momentum: so does the reference's input
        lr, mom = float(dtype(p["lr"])), float(dtype(p["momentum"]))
        w_ref, vel_ref = ref.sgd_update(w_ref, g, vel_ref, lr, mom, p["nesterov"])
        close(w, w_ref, dtype, f"w after step {t + 1}")
        close(vel, vel_ref, dtype, f"velocity after step {t + 1}")
    if p["momentum"] == 0:
        assert np.all(vel == 0)  # untouched


def adam_expected(w, g, m, v, t, p, dtype):
    """The reference Adam step at the kernel's precision: the moments use beta1, beta2
    and eps rounded to the kernel's dtype (float32 1 - 0.999 is not 0.001), while the
    bias-corrected rate lr_t is computed in double from the given betas
    (adam_corrected_rate) and then rounded."""
    b1, b2, eps = (float(dtype(p[k])) for k in ("beta1", "beta2", "eps"))
    _, m_new, v_new = ref.adam_update(w, g, m, v, t, p["lr"], b1, b2, eps)
    lr_t = float(dtype(p["lr"] * np.sqrt(1.0 - p["beta2"] ** t) / (1.0 - p["beta1"] ** t)))
    w_new = np.asarray(w, dtype=np.float64) - lr_t * m_new / (np.sqrt(v_new) + eps)
    if dtype == np.float64:  # the plain reference: same formula, same constants
        np.testing.assert_allclose(w_new, ref.adam_update(w, g, m, v, t, p["lr"], p["beta1"],
                                                          p["beta2"], p["eps"])[0], rtol=1e-14)
    return w_new, m_new, v_new


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", range(len(ADAM_CASES)))
def test_adam_matches_reference_over_steps(case, n, dtype):
    p = ADAM_CASES[case]
    rng = np.random.default_rng(200 * case + n)
    w, (m, v) = start(rng, n, dtype, 2)
    w_ref, m_ref, v_ref = (a.astype(np.float64) for a in (w, m, v))
    for t, g in enumerate(grads(rng, n, dtype, 5), start=1):
        K.adam_update(w, g, m, v, t, p["lr"], p["beta1"], p["beta2"], p["eps"], nthreads=2)
        w_ref, m_ref, v_ref = adam_expected(w_ref, g, m_ref, v_ref, t, p, dtype)
        close(m, m_ref, dtype, f"m at t={t}")
        close(v, v_ref, dtype, f"v at t={t}")
        close(w, w_ref, dtype, f"w at t={t}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_late_step_and_restart(dtype):
    """Adam at a large step number t (bias correction ~1) continues from given moments."""
    rng = np.random.default_rng(3)
    n = 101
    w = rng.standard_normal(n).astype(dtype)
    m = (rng.standard_normal(n) * 0.1).astype(dtype)
    v = rng.uniform(0, 0.1, n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    for t in (1, 2, 10, 1000, 10 ** 6):
        w1, m1, v1 = w.copy(), m.copy(), v.copy()
        K.adam_update(w1, g, m1, v1, t, 0.01, 0.9, 0.999, 1e-7)
        w_ref, m_ref, v_ref = adam_expected(w, g, m, v, t, ADAM_CASES[0] | {"lr": 0.01}, dtype)
        close(w1, w_ref, dtype, f"w at t={t}")
        close(m1, m_ref, dtype, f"m at t={t}")
        close(v1, v_ref, dtype, f"v at t={t}")


def test_adam_first_step_is_lr_sign_of_gradient():
    """Keras' Adam: the first step moves every weight by ~lr against its gradient."""
    g = np.array([3.0, -0.5, 1e-3, -200.0])
    w, m, v = np.zeros(4), np.zeros(4), np.zeros(4)
    K.adam_update(w, g, m, v, 1, 0.01, 0.9, 0.999, 1e-12)
    # exact up to eps against sqrt(v) = sqrt(1 - beta2) |g| (3e-8 relative for g = 1e-3)
    np.testing.assert_allclose(w, -0.01 * np.sign(g), rtol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", range(len(RMS_CASES)))
def test_rmsprop_matches_reference_over_steps(case, n, dtype):
    p = RMS_CASES[case]
    rng = np.random.default_rng(300 * case + n)
    w, (v, mom) = start(rng, n, dtype, 2)
    w_ref, v_ref, mom_ref = (a.astype(np.float64) for a in (w, v, mom))
    for t, g in enumerate(grads(rng, n, dtype, 4), start=1):
        K.rmsprop_update(w, g, v, mom, p["lr"], p["rho"], p["momentum"], p["eps"], nthreads=2)
        cast = (lambda x: float(dtype(x)))
        w_ref, v_ref, mom_ref = ref.rmsprop_update(w_ref, g, v_ref, mom_ref, cast(p["lr"]),
                                                   cast(p["rho"]), cast(p["momentum"]),
                                                   cast(p["eps"]))
        close(v, v_ref, dtype, f"v at step {t}")
        close(w, w_ref, dtype, f"w at step {t}")
        if p["momentum"] > 0:
            close(mom, mom_ref, dtype, f"momentum at step {t}")
        else:
            assert np.all(mom == 0)  # untouched


def _run(kind, dtype, n, nthreads, steps=3):
    rng = np.random.default_rng(11)
    w = rng.standard_normal(n).astype(dtype)
    s1, s2 = np.zeros(n, dtype), np.zeros(n, dtype)
    for t in range(1, steps + 1):
        g = rng.standard_normal(n).astype(dtype)
        if kind == "sgd":
            K.sgd_update(w, g, s1, 0.1, 0.9, False, nthreads=nthreads)
        elif kind == "nesterov":
            K.sgd_update(w, g, s1, 0.1, 0.9, True, nthreads=nthreads)
        elif kind == "adam":
            K.adam_update(w, g, s1, s2, t, 0.01, 0.9, 0.999, 1e-7, nthreads=nthreads)
        elif kind == "rmsprop":
            K.rmsprop_update(w, g, s1, s2, 0.01, 0.9, 0.0, 1e-7, nthreads=nthreads)
        else:
            K.rmsprop_update(w, g, s1, s2, 0.01, 0.9, 0.5, 1e-7, nthreads=nthreads)
    return w, s1, s2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["sgd", "nesterov", "adam", "rmsprop", "rmsprop_momentum"])
def test_threads_bit_identical(kind, dtype):
    """The same update whatever the thread count (each thread owns a block of elements,
    and an element's arithmetic must not depend on where its block starts)."""
    for n in (32768, 77101, 100003):
        one = _run(kind, dtype, n, 1)
        for nt in (2, 3):
            other = _run(kind, dtype, n, nt)
            for name, a, b in zip(("w", "slot1", "slot2"), one, other):
                diff = np.flatnonzero(a != b)
                assert diff.size == 0, (
                    f"{kind} {np.dtype(dtype).name} n={n}: {name} differs between nthreads=1 "
                    f"and nthreads={nt} at {diff.size} elements, first {diff[:5].tolist()}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_length_checks_and_empty(dtype):
    w, g = np.zeros(4, dtype), np.zeros(3, dtype)
    with pytest.raises(ValueError):
        K.sgd_update(w, g, np.zeros(4, dtype), 0.1, 0.0, False)
    with pytest.raises(ValueError):
        K.adam_update(w, np.zeros(4, dtype), np.zeros(4, dtype), np.zeros(5, dtype), 1,
                      0.1, 0.9, 0.999, 1e-7)
    with pytest.raises(ValueError):
        K.rmsprop_update(w, np.zeros(4, dtype), np.zeros(3, dtype), np.zeros(4, dtype),
                         0.1, 0.9, 0.0, 1e-7)
    e = np.zeros(0, dtype)
    K.sgd_update(e, e, e, 0.1, 0.9, True)
    K.adam_update(e, e, e, e, 1, 0.1, 0.9, 0.999, 1e-7)
    K.rmsprop_update(e, e, e, e, 0.1, 0.9, 0.5, 1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("l2", [None, 0.0, 0.37])
def test_adam_sum2_is_the_sum_then_the_l2_term_then_adam(dtype, l2):
    """adam_update_sum2 (the parts' update in one pass, network.c: sum2_adam) gives the
    bits of its three passes: g = g0 + g1, g += l2 w, adam_update; non-finite values
    included (with l2 None, 0 * inf is never added)."""
    rng = np.random.default_rng(41)
    n = 1037
    w = rng.standard_normal(n).astype(dtype)
    w[[3, 500]] = [np.inf, np.nan]
    g0, g1 = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    m = (0.1 * rng.standard_normal(n)).astype(dtype)
    v = np.abs(0.1 * rng.standard_normal(n)).astype(dtype)
    a = [w.copy(), np.zeros(n, dtype), m.copy(), v.copy()]
    K.adam_update_sum2(a[0], a[1], g0, g1, l2, a[2], a[3], 7, 1e-3, 0.9, 0.999, 1e-8)
    b = [w.copy(), g0 + g1, m.copy(), v.copy()]
    if l2 is not None:
        with np.errstate(invalid="ignore"):  # 0 * inf
            b[1] = b[1] + dtype(l2) * b[0]
    K.adam_update(b[0], b[1], b[2], b[3], 7, 1e-3, 0.9, 0.999, 1e-8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert np.isfinite(a[1][3]) == (l2 is None)  # g0 + g1 + l2 * inf: inf, or NaN for 0
    with pytest.raises(ValueError, match="overlap"):
        K.adam_update_sum2(a[0], a[1], g0, g0, l2, a[2], a[3], 8, 1e-3, 0.9, 0.999, 1e-8)
