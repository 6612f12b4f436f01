"""fastnn.sklearn: MLPClassifier / MLPRegressor as drop-in replacements for scikit-learn's
(../shared/API.md, "scikit-learn"): scikit-learn's estimator checks, the same numerics
as scikit-learn's own MLP (same random_state -> same initial weights, shuffles and
early-stopping split, so loss curves agree to rounding), the options of issue 5, and use
in Pipeline, cross_val_score, GridSearchCV(n_jobs=2) and pickle."""
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

import scipy.sparse as sp  # noqa: E402
from sklearn import neural_network as skl  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import (load_breast_cancer, load_diabetes, load_digits,  # noqa: E402
                              make_classification,
                              make_friedman1, make_multilabel_classification)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import (GridSearchCV, cross_val_score,  # noqa: E402
                                     train_test_split)
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_convergence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _scaled(loader):
    X, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def assert_same_training(ours, theirs, rtol=1e-7, atol=1e-9, weights_atol=1e-7,
                         weights_rtol=1e-5):
    """Same epochs, loss curve and weights as scikit-learn's own MLP."""
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol, atol=atol)
    assert len(ours.coefs_) == len(theirs.coefs_)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=weights_rtol, atol=weights_atol)


# ---- scikit-learn's estimator checks ------------------------------------------------------

@parametrize_with_checks([MLPClassifier(), MLPRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_signature_and_defaults_match_sklearn():
    import inspect
    for ours, theirs in ((MLPClassifier, skl.MLPClassifier), (MLPRegressor, skl.MLPRegressor)):
        a = inspect.signature(ours.__init__).parameters
        b = inspect.signature(theirs.__init__).parameters
        assert list(a) == list(b)
        for name in a:
            assert a[name].default == b[name].default, name
            assert a[name].kind == b[name].kind, name
    assert MLPRegressor("squared_error", (5,)).hidden_layer_sizes == (5,)
    assert MLPClassifier((7,), "tanh").activation == "tanh"


# ---- the same numerics as scikit-learn ---------------------------------------------------

def test_digits_matches_sklearn():
    X, y = _scaled(load_digits)
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0, stratify=y)
    ours = MLPClassifier(random_state=0, max_iter=40).fit(Xtr, ytr)
    theirs = skl.MLPClassifier(random_state=0, max_iter=40).fit(Xtr, ytr)
    assert_same_training(ours, theirs)
    assert ours.out_activation_ == "softmax" and ours.n_outputs_ == 10
    assert ours.score(Xte, yte) == pytest.approx(theirs.score(Xte, yte), abs=0.005)
    assert ours.score(Xte, yte) > 0.95
    np.testing.assert_allclose(ours.predict_proba(Xte), theirs.predict_proba(Xte), atol=1e-6)


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_saturated_log_loss_is_clipped_as_sklearn_clips_it(classes, dtype):
    """On unscaled data the outputs saturate: scikit-learn's loss_curve_ comes from
    probabilities clipped to [eps, 1 - eps] (fastnn's exact loss was 4-20x larger there,
    and its tol / n_iter_no_change stops came at other epochs)."""
    X, y = make_classification(300, 10, n_informative=4, n_classes=classes, random_state=1)
    X = (X * 300).astype(dtype)
    kw = dict(random_state=1, max_iter=25, n_iter_no_change=2)
    ours = MLPClassifier(**kw).fit(X, y)
    theirs = skl.MLPClassifier(**kw).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    # binary: scikit-learn's -log(1 - p) of a p rounded near 1 carries its own error there
    # (up to ~1e-3 at logits of 30), which fastnn's loss from the logits does not copy
    rtol = 1e-3 if classes == 2 else (1e-12 if dtype == np.float64 else 1e-4)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
    assert max(ours.loss_curve_) > 5  # saturated, and far from the exact loss's values


def test_breast_cancer_sgd_matches_sklearn():
    X, y = _scaled(load_breast_cancer)
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0, stratify=y)
    kw = dict(solver="sgd", learning_rate_init=0.01, max_iter=60, random_state=3)
    ours = MLPClassifier(**kw).fit(Xtr, ytr)
    theirs = skl.MLPClassifier(**kw).fit(Xtr, ytr)
    assert_same_training(ours, theirs)
    assert ours.out_activation_ == "logistic" and ours.n_outputs_ == 1
    assert ours.predict_proba(Xte).shape == (len(yte), 2)
    assert ours.score(Xte, yte) == pytest.approx(theirs.score(Xte, yte), abs=0.01)
    assert ours.score(Xte, yte) > 0.93


@pytest.mark.parametrize("kw", [dict(), dict(activation="tanh", alpha=0.01, batch_size=64),
                                dict(activation="logistic", solver="sgd",
                                     learning_rate_init=0.01, nesterovs_momentum=False),
                                dict(activation="identity", shuffle=False)])
def test_regressor_matches_sklearn(kw):
    X, y = make_friedman1(n_samples=600, random_state=0)
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    ours = MLPRegressor(random_state=1, max_iter=40, **kw).fit(Xtr, ytr)
    theirs = skl.MLPRegressor(random_state=1, max_iter=40, **kw).fit(Xtr, ytr)
    assert_same_training(ours, theirs)
    assert ours.out_activation_ == "identity"
    assert ours.predict(Xte).shape == (len(yte),)
    assert ours.score(Xte, yte) == pytest.approx(theirs.score(Xte, yte), abs=1e-4)


def test_diabetes_regression_accuracy():
    X, y = _scaled(load_diabetes)
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    kw = dict(hidden_layer_sizes=(50,), learning_rate_init=0.01, max_iter=300,
              early_stopping=True, random_state=0)
    ours = MLPRegressor(**kw).fit(Xtr, ytr)
    theirs = skl.MLPRegressor(**kw).fit(Xtr, ytr)
    assert ours.n_iter_ == theirs.n_iter_ < 300
    assert ours.score(Xte, yte) == pytest.approx(theirs.score(Xte, yte), abs=1e-3)
    assert ours.score(Xte, yte) > 0.25  # a linear model scores about 0.35 on this split


def test_multioutput_regression_matches_sklearn():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 8))
    Y = np.column_stack([X[:, 0] * X[:, 1], np.sin(X[:, 2]), X[:, 3] - X[:, 4]])
    ours = MLPRegressor(random_state=0, max_iter=30, alpha=0.01).fit(X, Y)
    theirs = skl.MLPRegressor(random_state=0, max_iter=30, alpha=0.01).fit(X, Y)
    assert_same_training(ours, theirs)
    assert ours.predict(X).shape == (300, 3) and ours.n_outputs_ == 3


def test_multilabel():
    X, Y = make_multilabel_classification(n_samples=300, n_classes=4, random_state=0)
    X = StandardScaler().fit_transform(X)
    ours = MLPClassifier(random_state=1, max_iter=30).fit(X, Y)
    theirs = skl.MLPClassifier(random_state=1, max_iter=30).fit(X, Y)
    assert_same_training(ours, theirs)  # loss summed over the labels, as scikit-learn's
    assert ours.out_activation_ == "logistic" and ours.n_outputs_ == 4
    np.testing.assert_array_equal(ours.classes_, np.arange(4))
    pred = ours.predict(X)
    assert pred.shape == Y.shape and set(np.unique(pred)) <= {0, 1}
    np.testing.assert_array_equal(pred, theirs.predict(X))
    proba = ours.predict_proba(X)
    assert proba.shape == Y.shape and ((proba >= 0) & (proba <= 1)).all()
    assert ours.score(X, Y) > 0.5


def test_string_labels():
    X, y = _scaled(load_breast_cancer)
    labels = np.array(["benign", "malignant"])[y]
    clf = MLPClassifier(random_state=0, max_iter=20).fit(X, labels)
    assert set(clf.predict(X)) <= set(labels)
    np.testing.assert_array_equal(clf.classes_, ["benign", "malignant"])


@pytest.mark.parametrize("labels", [
    np.array([0, 1, 1, 0, 1]), np.array([3, -2, 3, 3, -2]), np.array(["b", "a", "b", "a", "a"]),
    np.array([2, 0, 1, 2, 5, 0, 1]), np.array(["dog", "cat", "eel", "cat", "dog"], dtype=object),
    np.array([0.0, 1.0, 2.0, 0.0, 2.0]), np.array([True, False, True, True, False])])
def test_indicator_targets_equal_label_binarizer(labels):
    """The training targets computed directly equal LabelBinarizer's transform (as bools),
    which they replace for one column of labels."""
    from sklearn.preprocessing import LabelBinarizer
    clf = MLPClassifier()
    clf._label_binarizer = LabelBinarizer().fit(labels)
    got = clf._indicator_targets(labels)
    want = clf._label_binarizer.transform(labels).astype(bool)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    subset = labels[labels != labels[0]]  # a later partial_fit may see fewer classes
    np.testing.assert_array_equal(clf._indicator_targets(subset),
                                  clf._label_binarizer.transform(subset).astype(bool))


# ---- training options --------------------------------------------------------------------

def test_partial_fit_matches_sklearn():
    X, y = _scaled(load_digits)
    ours = MLPClassifier(solver="sgd", random_state=0)
    theirs = skl.MLPClassifier(solver="sgd", random_state=0)
    classes = np.unique(y)
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier().partial_fit(X[:10], y[:10])
    for i in range(4):
        rows = slice(i * 300, (i + 1) * 300)
        ours.partial_fit(X[rows], y[rows], classes=classes if i == 0 else None)
        theirs.partial_fit(X[rows], y[rows], classes=classes if i == 0 else None)
        assert ours.n_iter_ == 1
    assert ours.t_ == 1200
    assert_same_training(ours, theirs)
    # regressor: partial_fit(X, y, sample_weight=None)
    Xr, yr = make_friedman1(n_samples=200, random_state=0)
    reg = MLPRegressor(random_state=0)
    for _ in range(3):
        reg.partial_fit(Xr, yr)
    assert len(reg.loss_curve_) == 3 and reg.loss_curve_[-1] < reg.loss_curve_[0]
    with pytest.raises(ValueError, match="early_stopping"):
        MLPRegressor(early_stopping=True).partial_fit(Xr, yr)


def test_warm_start_matches_sklearn():
    X, y = _scaled(load_breast_cancer)
    ours = MLPClassifier(random_state=0, max_iter=5, warm_start=True)
    theirs = skl.MLPClassifier(random_state=0, max_iter=5, warm_start=True)
    for _ in range(3):
        ours.fit(X, y)
        theirs.fit(X, y)
    assert len(ours.loss_curve_) == 15 and ours.n_iter_ == 5
    assert_same_training(ours, theirs)
    with pytest.raises(ValueError, match="warm_start can only be used"):
        ours.fit(X, (y + 1) % 3 + (y == 0))  # other classes
    cold = MLPClassifier(random_state=0, max_iter=5).fit(X, y)
    cold.fit(X, y)
    assert len(cold.loss_curve_) == 5  # without warm_start, fit starts over


def test_early_stopping_matches_sklearn():
    X, y = _scaled(load_digits)
    kw = dict(early_stopping=True, validation_fraction=0.2, n_iter_no_change=3,
              random_state=0, max_iter=200)
    ours = MLPClassifier(**kw).fit(X, y)
    theirs = skl.MLPClassifier(**kw).fit(X, y)
    assert ours.n_iter_ < 200  # stopped early
    assert ours.best_loss_ is None and len(ours.validation_scores_) == ours.n_iter_
    assert ours.best_validation_score_ == max(ours.validation_scores_)
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
    assert_same_training(ours, theirs)  # coefs_: the best epoch's, restored
    reg = MLPRegressor(early_stopping=True, random_state=0, max_iter=50)
    Xr, yr = make_friedman1(n_samples=300, random_state=0)
    reg.fit(Xr, yr)
    assert reg.validation_scores_ and reg.best_validation_score_ == max(reg.validation_scores_)
    without = MLPClassifier(random_state=0, max_iter=3).fit(X, y)
    assert without.validation_scores_ is None and without.best_validation_score_ is None


@pytest.mark.parametrize("schedule", ["invscaling", "adaptive"])
def test_sgd_schedules_match_sklearn(schedule):
    X, y = _scaled(load_breast_cancer)
    kw = dict(solver="sgd", learning_rate=schedule, learning_rate_init=0.05, power_t=0.3,
              momentum=0.5, tol=1e-2, n_iter_no_change=2, max_iter=80, random_state=0)
    ours = MLPClassifier(**kw).fit(X, y)
    theirs = skl.MLPClassifier(**kw).fit(X, y)
    assert_same_training(ours, theirs)
    if schedule == "adaptive":  # the rate was divided by 5 until <= 1e-6, then it stopped
        assert ours.n_iter_ < 80
        assert ours._schedule.learning_rate == pytest.approx(theirs._optimizer.learning_rate)


@pytest.mark.parametrize("case", [
    dict(est="clf"), dict(est="clf", shuffle=False),
    dict(est="clf", solver="sgd", learning_rate="adaptive", learning_rate_init=0.05,
         tol=1e-2, n_iter_no_change=2, max_iter=80),
    dict(est="reg", batch_size=50), dict(est="clf", random_state="instance")])
def test_whole_epochs_equal_epoch_by_epoch(case, capsys):
    """Epochs run many to a compiled call (Network.fit_epochs: the shuffle from the
    RandomState's own generator, the steps and the no-improvement count) train exactly as
    epochs run one by one with Python between them (verbose=True takes that path): the
    same loss curve, stopping epoch and weights, and the same draws from a RandomState
    passed as random_state."""
    case = dict(case)
    est = case.pop("est")
    if est == "clf":
        X, y = _scaled(load_digits)
        make = MLPClassifier
    else:  # multi-output: the reported loss averages the outputs' (a metric corrects it)
        X, y = make_friedman1(n_samples=300, random_state=0)
        y = np.stack([y, -0.5 * y], axis=1)
        make = MLPRegressor
    case.setdefault("max_iter", 25)
    fits = []
    for verbose in (False, True):
        kw = dict(case, random_state=0, verbose=verbose)
        if case.get("random_state") == "instance":
            kw["random_state"] = np.random.RandomState(4)
        fits.append((make(**kw).fit(X, y), kw["random_state"]))
    assert "Iteration 1, loss" in capsys.readouterr().out
    (whole, rs_whole), (by_epoch, rs_by_epoch) = fits
    assert whole.n_iter_ == by_epoch.n_iter_ and whole.t_ == by_epoch.t_
    assert whole.loss_curve_ == by_epoch.loss_curve_
    assert whole.best_loss_ == by_epoch.best_loss_
    assert whole._no_improvement_count == by_epoch._no_improvement_count
    for a, b in zip(whole.coefs_ + whole.intercepts_, by_epoch.coefs_ + by_epoch.intercepts_):
        np.testing.assert_array_equal(a, b)
    if isinstance(rs_whole, np.random.RandomState):
        assert rs_whole.randint(2**31) == rs_by_epoch.randint(2**31)
    if case.get("learning_rate") == "adaptive":
        assert whole.n_iter_ < 80 and whole._schedule.learning_rate < 0.05


def test_thread_counts_per_call_change_no_bits(monkeypatch):
    """Whole-epoch calls may each run on another thread count (config.ThreadPicker): the
    fit is the one-thread fit, bit for bit."""
    import fastnn
    X, y = _scaled(load_digits)
    counts = iter([2, 1, 2, 2, 1] * 50)

    class Alternating(fastnn.config.ThreadPicker):
        def next_call(self, remaining):
            return next(counts), min(remaining, 3)

    with fastnn.num_threads(1):
        one = MLPClassifier(random_state=0, max_iter=30).fit(X, y)
    monkeypatch.setattr(fastnn.config, "ThreadPicker", Alternating)
    with fastnn.num_threads(2):
        mixed = MLPClassifier(random_state=0, max_iter=30).fit(X, y)
    assert mixed.loss_curve_ == one.loss_curve_
    for a, b in zip(mixed.coefs_ + mixed.intercepts_, one.coefs_ + one.intercepts_):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("patience", [np.inf, 2**31, 3])
def test_n_iter_no_change_inf_or_huge(patience):
    """n_iter_no_change may be np.inf (scikit-learn's constraint allows it) or beyond a C
    int: training then runs to max_iter, as scikit-learn's."""
    X, y = _scaled(load_breast_cancer)
    kw = dict(max_iter=12, random_state=0, n_iter_no_change=patience, tol=0.5)
    ours, theirs = MLPClassifier(**kw).fit(X, y), skl.MLPClassifier(**kw).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    assert (ours.n_iter_ == 12) == (patience != 3)


def test_ctrl_c_keeps_the_bookkeeping_of_the_epochs_run(monkeypatch):
    """A Ctrl-C during a compiled call of many epochs raises as soon as the call returns:
    the epochs it ran are still counted (n_iter_, loss_curve_, t_), as the weights and
    the shuffles already took them."""
    import fastnn.sklearn as fs
    X, y = _scaled(load_digits)

    class Interrupted:
        """The network, raising KeyboardInterrupt on return from its second call."""
        def __init__(self, network):
            object.__setattr__(self, "network", network)
            object.__setattr__(self, "calls", 0)

        def __getattr__(self, name):
            return getattr(self.network, name)

        def fit_epochs(self, *args):
            result = self.network.fit_epochs(*args)
            object.__setattr__(self, "calls", self.calls + 1)
            if self.calls == 2:
                raise KeyboardInterrupt
            return result

    prepare = fs._BaseMLP._prepare_training

    def interrupting(self, model, l2):
        prepare(self, model, l2)
        model._network = Interrupted(model._network)

    monkeypatch.setattr(fs._BaseMLP, "_prepare_training", interrupting)
    with pytest.warns(UserWarning, match="interrupted"):
        clf = MLPClassifier(random_state=0, max_iter=200).fit(X, y)
    steps = -(-len(X) // 200)
    assert clf.n_iter_ > 1 and clf.n_iter_ == len(clf.loss_curve_)
    assert clf._optimizer.iterations == clf.n_iter_ * steps and clf.t_ == clf.n_iter_ * len(X)


def test_pickled_estimator_holds_its_optimizer_state_once():
    X, y = _scaled(load_digits)
    clf = MLPClassifier(hidden_layer_sizes=(256,), random_state=0, max_iter=2).fit(X, y)
    one_copy = sum(a.nbytes for a in clf.coefs_ + clf.intercepts_)
    # the weights, scikit-learn's _best_coefs (its initial weights, as scikit-learn keeps
    # them) and Adam's two moments: four copies of the parameters (a stale reference to
    # the moments once made it six)
    assert len(pickle.dumps(clf)) < 4.3 * one_copy


def test_tol_stops_training():
    X, y = _scaled(load_breast_cancer)
    kw = dict(tol=0.5, n_iter_no_change=2, random_state=0, max_iter=200)
    clf = MLPClassifier(**kw).fit(X, y)
    # stops once n_iter_no_change + 1 epochs in a row improve by less than tol
    assert clf.n_iter_ == 4 == skl.MLPClassifier(**kw).fit(X, y).n_iter_
    assert clf.best_loss_ == min(clf.loss_curve_)


def test_unsupported_options_raise_clearly():
    X, y = _scaled(load_breast_cancer)
    with pytest.raises(ValueError, match="lbfgs.*not supported"):
        MLPClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="lbfgs.*not supported"):
        MLPRegressor(solver="lbfgs").fit(X, y.astype(float))
    with pytest.raises(AttributeError, match="partial_fit"):
        MLPClassifier(solver="lbfgs").partial_fit
    with pytest.raises(ValueError, match="poisson.*not supported"):
        MLPRegressor(loss="poisson").fit(X, y.astype(float))
    with pytest.raises(ValueError):  # scikit-learn's parameter validation
        MLPClassifier(activation="softplus").fit(X, y)
    MLPClassifier(max_fun=100, max_iter=2).fit(X, y)  # accepted (used by lbfgs only)


# ---- sample_weight: scikit-learn's weighted loss ------------------------------------------
# Per batch, scikit-learn's _backprop takes np.average(l_i, weights=w) (its _base.py losses)
# plus 0.5 alpha ||W||^2 / sum(w), so every gradient is divided by sum(w); loss_ is the
# row-weighted mean of those batch losses. The same random_state gives the same fit.

# tolerances for float64: both sides round differently, by ~1e-16 per operation
EXACT = dict(rtol=1e-12, atol=1e-14, weights_atol=1e-12, weights_rtol=1e-10)


def _weighting_data(kind):
    """(estimator class, scikit-learn's, X, y, sample_weight) for one kind of target."""
    rng = np.random.default_rng(7)
    if kind == "regression" or kind == "multioutput":
        X, y = make_friedman1(n_samples=150, random_state=0)
        if kind == "multioutput":
            y = np.column_stack([y, np.sin(X[:, 0]) * 3])
        ours, theirs = MLPRegressor, skl.MLPRegressor
    else:
        if kind == "multilabel":
            X, y = make_multilabel_classification(n_samples=150, n_classes=3, random_state=0)
        else:
            X, y = _scaled(load_digits)
            X, y = X[:150], (y[:150] % 2 if kind == "binary" else y[:150] % 4)
        X = StandardScaler().fit_transform(X)
        ours, theirs = MLPClassifier, skl.MLPClassifier
    sw = rng.uniform(0, 3, len(X))
    sw[::6] = 0.0   # zero-weight samples stay in their batches, as in scikit-learn
    sw[1] = -0.5    # scikit-learn accepts negative weights
    return ours, theirs, X, y, sw


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel", "regression",
                                  "multioutput"])
def test_sample_weight_matches_sklearn(kind, solver, early_stopping):
    ours, theirs, X, y, sw = _weighting_data(kind)
    kw = dict(hidden_layer_sizes=(12,), solver=solver, early_stopping=early_stopping,
              batch_size=32, max_iter=6, alpha=0.05, random_state=0, learning_rate_init=0.01)
    sw_copy = sw.copy()
    a, b = ours(**kw).fit(X, y, sample_weight=sw), theirs(**kw).fit(X, y, sample_weight=sw)
    assert_same_training(a, b, **EXACT)
    np.testing.assert_array_equal(sw, sw_copy)
    if early_stopping:  # the split carries the weights; validation scores are weighted
        np.testing.assert_allclose(a.validation_scores_, b.validation_scores_, rtol=1e-12)
    # and the weights matter: unweighted, the fit is another one
    plain = ours(**kw).fit(X, y)
    assert abs(plain.loss_curve_[-1] - a.loss_curve_[-1]) > 1e-6


@pytest.mark.parametrize("kind", ["binary", "multioutput"])
def test_sample_weight_float32_matches_sklearn(kind):
    ours, theirs, X, y, sw = _weighting_data(kind)
    X = X.astype(np.float32)
    for solver in ("sgd", "adam"):
        kw = dict(hidden_layer_sizes=(12,), solver=solver, batch_size=32, max_iter=6,
                  alpha=0.05, random_state=0, learning_rate_init=0.01)
        a, b = ours(**kw).fit(X, y, sample_weight=sw), theirs(**kw).fit(X, y, sample_weight=sw)
        assert all(c.dtype == np.float32 for c in a.coefs_ + a.intercepts_)
        assert_same_training(a, b, rtol=1e-4, atol=1e-5, weights_atol=1e-4)


def test_sample_weight_partial_fit_matches_sklearn():
    ours_cls, theirs_cls, X, y, sw = _weighting_data("multiclass")
    ours = ours_cls(hidden_layer_sizes=(12,), solver="sgd", random_state=0, batch_size=20)
    theirs = theirs_cls(hidden_layer_sizes=(12,), solver="sgd", random_state=0, batch_size=20)
    classes = np.unique(y)
    for i in range(3):
        rows = slice(i * 50, (i + 1) * 50)
        ours.partial_fit(X[rows], y[rows], sample_weight=sw[rows], classes=classes)
        theirs.partial_fit(X[rows], y[rows], sample_weight=sw[rows], classes=classes)
    assert_same_training(ours, theirs, **EXACT)
    ours_cls, theirs_cls, X, y, sw = _weighting_data("regression")
    ours, theirs = ours_cls(random_state=0, batch_size=40), theirs_cls(random_state=0,
                                                                       batch_size=40)
    for _ in range(3):
        ours.partial_fit(X, y, sample_weight=sw)
        theirs.partial_fit(X, y, sample_weight=sw)
    assert_same_training(ours, theirs, **EXACT)


def test_uniform_and_unit_sample_weights():
    X, y = _scaled(load_breast_cancer)
    X, y = X[:300], y[:300]
    kw = dict(random_state=0, max_iter=5, alpha=0.1, hidden_layer_sizes=(16,))
    sw = np.full(len(y), 2.5)
    ours = MLPClassifier(**kw).fit(X, y, sample_weight=sw)
    assert_same_training(ours, skl.MLPClassifier(**kw).fit(X, y, sample_weight=sw), **EXACT)
    # weights of 1 take the weighted path and reproduce the unweighted fit bit for bit
    for est, target in ((MLPClassifier(**kw), y),
                        (MLPRegressor(**kw), np.column_stack([X[:, 0], X[:, 1] * y]))):
        plain = clone(est).fit(X, target)
        unit = clone(est).fit(X, target, sample_weight=np.ones(len(y)))
        assert unit.loss_curve_ == plain.loss_curve_
        for a, b in zip(unit.coefs_ + unit.intercepts_, plain.coefs_ + plain.intercepts_):
            np.testing.assert_array_equal(a, b)


def test_zero_weights_in_one_batch_are_removed_samples():
    """One batch (n <= 200): zero-weight samples change neither the loss nor its gradient."""
    X, y = _scaled(load_breast_cancer)
    kw = dict(random_state=0, max_iter=10, alpha=0.1, hidden_layer_sizes=(16,))
    sw = np.ones(150)
    sw[::3] = 0
    ours = MLPClassifier(**kw).fit(X[:150], y[:150], sample_weight=sw)
    removed = MLPClassifier(**kw).fit(X[:150][sw > 0], y[:150][sw > 0])
    np.testing.assert_allclose(ours.loss_curve_, removed.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(ours.predict_proba(X), removed.predict_proba(X), atol=1e-12)


BAD_WEIGHTS = {"short": (np.ones(9), "shape"), "long": (np.ones(11), "shape"),
               "2-D": (np.ones((10, 1)), "1D"), "NaN": (np.r_[np.ones(9), np.nan], "NaN"),
               "inf": (np.r_[np.inf, np.ones(9)], "infinity"),
               "all zero": (np.zeros(10), "zero"), "text": (["a"] * 10, "")}


@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_bad_sample_weight_raises_before_any_state_change(case):
    bad, words = BAD_WEIGHTS[case]
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((10, 4)), np.arange(10) % 3
    X_old = rng.standard_normal((12, 5))
    for est, target in ((MLPClassifier(max_iter=2, random_state=0), y),
                        (MLPRegressor(max_iter=2, random_state=0), X[:, 0])):
        fresh = clone(est)
        with pytest.raises(ValueError, match=f"sample_weight.*{words}"):
            fresh.fit(X, target, sample_weight=bad)
        with pytest.raises(ValueError, match="sample_weight"):
            fresh.partial_fit(X, target, sample_weight=bad,
                              **({"classes": [0, 1, 2]} if target is y else {}))
        assert not hasattr(fresh, "n_features_in_") and not hasattr(fresh, "classes_")
        fitted = clone(est).set_params(warm_start=True).fit(X_old, target[:10].tolist() + [0, 1])
        state = {k: (v.copy() if isinstance(v, np.ndarray) else v)
                 for k, v in vars(fitted).items() if k != "_model"}
        coefs = [c.copy() for c in fitted.coefs_]
        for call in (lambda: fitted.fit(X, target, sample_weight=bad),
                     lambda: fitted.partial_fit(X, target, sample_weight=bad)):
            with pytest.raises(ValueError, match="sample_weight"):
                call()
        assert fitted.n_features_in_ == 5 and len(fitted.loss_curve_) == state["n_iter_"]
        assert all(np.array_equal(a, b) for a, b in zip(fitted.coefs_, coefs))


def test_zero_weight_batch_raises_as_sklearn_cannot_average_it():
    """A batch whose weights sum to zero has no weighted mean: scikit-learn's np.average
    stops with ZeroDivisionError; fastnn raises a ValueError naming sample_weight."""
    X, y = make_friedman1(n_samples=40, random_state=0)
    sw = np.ones(40)
    sw[:10] = 0.0
    kw = dict(batch_size=10, shuffle=False, max_iter=2, random_state=0)
    with pytest.raises(ValueError, match="sample_weight.*sum to zero"):
        MLPRegressor(**kw).fit(X, y, sample_weight=sw)
    with pytest.raises(ZeroDivisionError):
        skl.MLPRegressor(**kw).fit(X, y, sample_weight=sw)
    MLPRegressor(**dict(kw, batch_size=20)).fit(X, y, sample_weight=sw)  # 10 + 10: fine


def test_sparse_X():
    X, y = _scaled(load_breast_cancer)
    X = np.where(np.abs(X) > 0.8, X, 0.0)
    dense = MLPClassifier(random_state=0, max_iter=10).fit(X, y)
    for fmt in (sp.csr_matrix, sp.csc_matrix, sp.csr_array, sp.coo_matrix):
        est = MLPClassifier(random_state=0, max_iter=10).fit(fmt(X), y)
        np.testing.assert_array_equal(est.loss_curve_, dense.loss_curve_)
        np.testing.assert_allclose(est.predict_proba(fmt(X)), dense.predict_proba(X))
    theirs = skl.MLPClassifier(random_state=0, max_iter=10).fit(sp.csr_matrix(X), y)
    assert_same_training(dense, theirs)
    reg = MLPRegressor(random_state=0, max_iter=5).fit(sp.csr_matrix(X), y.astype(float))
    assert reg.predict(sp.csr_matrix(X)).shape == (len(y),)


def test_dtypes():
    X, y = _scaled(load_breast_cancer)
    f32 = MLPClassifier(random_state=0, max_iter=10).fit(X.astype(np.float32), y)
    assert all(c.dtype == np.float32 for c in f32.coefs_ + f32.intercepts_)
    assert f32.predict_proba(X).dtype == np.float32
    theirs = skl.MLPClassifier(random_state=0, max_iter=10).fit(X.astype(np.float32), y)
    assert_same_training(f32, theirs, rtol=1e-4, atol=1e-5, weights_atol=1e-4)
    f64 = MLPClassifier(random_state=0, max_iter=2).fit(X, y)
    assert all(c.dtype == np.float64 for c in f64.coefs_ + f64.intercepts_)
    ints = MLPClassifier(random_state=0, max_iter=2).fit((X * 10).astype(np.int64), y)
    assert ints.coefs_[0].dtype == np.float64
    reg = MLPRegressor(random_state=0, max_iter=2).fit(X.astype(np.float32), y)
    assert reg.predict(X).dtype == np.float32


def test_coefs_are_the_network_weights():
    X, y = _scaled(load_breast_cancer)
    clf = MLPClassifier(hidden_layer_sizes=(20, 10), activation="tanh", random_state=0,
                        max_iter=10).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(30, 20), (20, 10), (10, 1)]
    assert [b.shape for b in clf.intercepts_] == [(20,), (10,), (1,)]
    assert clf.n_layers_ == 4 and clf.n_features_in_ == 30

    def forward(coefs, intercepts):
        a = X
        for i, (w, b) in enumerate(zip(coefs, intercepts)):
            a = a @ w + b
            a = np.tanh(a) if i < len(coefs) - 1 else 1 / (1 + np.exp(-a))
        return a.ravel()
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1], forward(clf.coefs_, clf.intercepts_),
                               rtol=1e-10)
    clf.coefs_[0] *= 0.5  # in place: the network follows
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1], forward(clf.coefs_, clf.intercepts_),
                               rtol=1e-10)
    clf.coefs_ = [np.zeros_like(c) for c in clf.coefs_]  # replaced: the network follows too
    np.testing.assert_allclose(clf.predict_proba(X)[:, 1], forward(clf.coefs_, clf.intercepts_),
                               rtol=1e-10)


def test_coefs_of_a_kernel_stored_transposed():
    """float32, 64 inputs to 25 units: the network keeps that kernel as (25, 64); coefs_[0]
    is still the (64, 25) kernel, a view the network follows."""
    X, y = _scaled(load_digits)
    X = X.astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(25,), random_state=0, max_iter=5).fit(X, y)
    assert clf._model.layers[0].kernel_transposed
    assert [c.shape for c in clf.coefs_] == [(64, 25), (25, 10)]

    def forward(coefs, intercepts):
        a = np.maximum(X.astype(np.float64) @ coefs[0] + intercepts[0], 0) @ coefs[1] + intercepts[1]
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(X), forward(clf.coefs_, clf.intercepts_),
                               rtol=1e-4, atol=1e-6)
    clf.coefs_[0][:5] = 0  # in place: the network follows
    np.testing.assert_allclose(clf.predict_proba(X), forward(clf.coefs_, clf.intercepts_),
                               rtol=1e-4, atol=1e-6)
    ours = clf.fit(X, y).score(X, y)
    theirs = skl.MLPClassifier(hidden_layer_sizes=(25,), random_state=0, max_iter=5).fit(X, y).score(X, y)
    assert abs(ours - theirs) < 0.02


def test_pickle_keeps_optimizer_state_of_a_transposed_kernel():
    """A pickled estimator whose network keeps a kernel transposed (float32, 64 -> 25)
    holds its Adam moments in get_weights order, and partial_fit continues from the
    unpickled copy exactly as from the original."""
    X, y = _scaled(load_digits)
    X = X.astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(25,), random_state=0)
    for _ in range(3):
        clf.partial_fit(X, y, classes=np.unique(y))
    model = clf._model
    assert model.layers[0].kernel_transposed
    state = clf.__getstate__()
    for pickled, live in zip(state["_optimizer"].slots, clf._optimizer.slots):
        np.testing.assert_array_equal(pickled, model._to_weights_order(live))
    copy_ = pickle.loads(pickle.dumps(clf))
    clf.partial_fit(X, y)
    copy_.partial_fit(X, y)
    for a, b in zip(clf.coefs_ + clf.intercepts_, copy_.coefs_ + copy_.intercepts_):
        np.testing.assert_array_equal(a, b)


# ---- model selection, pickle -------------------------------------------------------------

def test_pickle_and_clone():
    X, y = _scaled(load_digits)
    clf = MLPClassifier(solver="sgd", random_state=0)
    clf.partial_fit(X[:900], y[:900], classes=np.unique(y))
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    # the optimizer state travels too: training continues identically
    clf.partial_fit(X[900:], y[900:])
    restored.partial_fit(X[900:], y[900:])
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    fresh = clone(clf)
    assert fresh.get_params() == clf.get_params() and not hasattr(fresh, "coefs_")
    reg = MLPRegressor(random_state=0, max_iter=3).fit(X, y.astype(float))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(X), reg.predict(X))


def test_pipeline_and_cross_val_score():
    X, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(random_state=0, max_iter=30))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.93


def test_grid_search_n_jobs_2_loky():
    X, y = _scaled(load_breast_cancer)
    search = GridSearchCV(MLPClassifier(max_iter=20, random_state=0),
                          {"alpha": [1e-4, 1e-1], "hidden_layer_sizes": [(10,), (30,)]},
                          cv=3, n_jobs=2)  # joblib's default backend: loky processes
    search.fit(X, y)
    assert search.best_score_ > 0.9
    assert len(search.cv_results_["params"]) == 4
    serial = GridSearchCV(MLPClassifier(max_iter=20, random_state=0),
                          {"alpha": [1e-4, 1e-1], "hidden_layer_sizes": [(10,), (30,)]},
                          cv=3, n_jobs=1).fit(X, y)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"],
                               serial.cv_results_["mean_test_score"])
