"""scikit-learn estimators trained by fastnn's compiled network.

`MLPClassifier` and `MLPRegressor` are drop-in replacements for scikit-learn's (1.9)
estimators of the same names: the same parameters, defaults and positional order, the
same fitted attributes (`coefs_`, `intercepts_`, `loss_curve_`, `n_iter_`, `t_`,
`best_loss_`, `validation_scores_`, ...), `fit(X, y, sample_weight=None)`,
`partial_fit` (classes on the first call for the classifier), `predict`,
`predict_proba`, `score`, multi-label targets and scipy sparse X. scikit-learn must be
installed (`pip install scikit-learn`); the rest of fastnn does not need it.

    from fastnn.sklearn import MLPClassifier          # instead of sklearn.neural_network
    clf = MLPClassifier(hidden_layer_sizes=(100,), random_state=0).fit(X, y)

Numerics follow scikit-learn's, so the same settings give the same accuracy:

- initialization: scikit-learn's draws from `check_random_state(random_state)`, in its
  order (each layer's kernel, then its bias, uniform in +-sqrt(6 / (fan_in + fan_out)),
  2 instead of 6 for logistic), so a given `random_state` starts from scikit-learn's
  very weights; each epoch's shuffle and the early-stopping split are drawn from the
  same generator in the same order as scikit-learn does;
- output and loss: logistic units with binary log-loss (summed over the labels) for
  binary and multi-label targets, softmax with log-loss for multiclass, identity with
  half squared error for regression; plus `0.5 * alpha * ||W||^2 / batch_rows` over the
  kernels (not the biases); `loss_` is the epoch's row-weighted mean of the batch losses,
  the L2 term included, as in scikit-learn;
- `sample_weight` (fit and partial_fit), as scikit-learn's `_backprop` applies it: a
  batch's loss is the weighted mean `sum(w_i l_i) / sum(w_i)` (its losses'
  `np.average(..., weights=w)`), the L2 term is `0.5 * alpha * ||W||^2 / sum(w_i)`, so
  every gradient is divided by the batch's weight instead of its rows, and `loss_` still
  averages the batch losses by rows. Zero-weight samples stay in their batches (they
  count in `batch_size`, `t_` and `loss_`'s row average, and contribute nothing to the
  loss); negative weights are accepted, as scikit-learn accepts them; the early-stopping
  split carries the weights, and validation scores are weighted. Weights of 1 reproduce
  the unweighted fit bit for bit;
- solvers "sgd" (momentum, Nesterov, learning-rate schedules "constant", "invscaling",
  "adaptive" applied between epochs) and "adam" (epsilon 1e-8); `tol`,
  `n_iter_no_change`, `early_stopping` with `validation_fraction`, `warm_start`,
  `max_iter` as scikit-learn applies them;
- float32 when X is float32, float64 otherwise.

What runs differently: every epoch runs in fastnn's C kernels (one call per epoch, the
GIL released), and prediction too. Sparse X is densified (in row chunks for
prediction). Not supported yet: `solver="lbfgs"` and `MLPRegressor(loss="poisson")`
(both raise ValueError in `fit`). `sample_weight` is checked before anything else, so a
bad one (wrong length or shape, NaN or inf, all zero) raises a ValueError naming it and
leaves the estimator as it was. A batch whose weights sum to zero (e.g. only zero-weight
samples) has no weighted mean: scikit-learn stops there with ZeroDivisionError, fastnn
raises a ValueError naming `sample_weight` before that epoch.

Model selection. The estimators clone, pickle and work in `Pipeline`,
`cross_val_score` and `GridSearchCV(n_jobs=...)`: joblib's default (loky) backend runs
the fits in worker processes, where fastnn takes its thread count from the
`OMP_NUM_THREADS` that joblib sets for them. The same search runs on a cluster through
joblib's backends, unchanged:

    import joblib
    from dask.distributed import Client        # pip install "dask[distributed]"
    client = Client("tcp://scheduler:8786")    # or Client() for a local cluster
    search = GridSearchCV(MLPClassifier(), {"alpha": [1e-4, 1e-3]}, n_jobs=-1)
    with joblib.parallel_backend("dask"):
        search.fit(X, y)

    from ray.util.joblib import register_ray   # pip install "ray[default]"
    register_ray()
    with joblib.parallel_backend("ray"):
        search.fit(X, y)

Each worker needs fastnn (and scikit-learn) installed; set `OMP_NUM_THREADS` (or call
`fastnn.set_num_threads` in the workers) to the cores each task may use.
"""
import contextlib
import copy
import time
import warnings
from numbers import Integral, Real

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state, column_or_1d
    from sklearn.utils._param_validation import Interval, Options, StrOptions
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import (_check_partial_fit_first_call, type_of_target,
                                          unique_labels)
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
except ImportError as err:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("fastnn.sklearn needs scikit-learn >= 1.6 "
                      "(pip install scikit-learn)") from err

from . import config
from .layers import Dense
from .losses import BinaryCrossentropy, MeanSquaredError, SparseCategoricalCrossentropy
from .models import Sequential
from .optimizers import SGD, Adam

__all__ = ["MLPClassifier", "MLPRegressor"]

_STOCHASTIC_SOLVERS = ("sgd", "adam")
# scikit-learn's activation names -> fastnn's
_ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
                "softmax": "softmax"}
_PREDICT_CHUNK = 4096  # rows of a sparse X densified at a time for prediction


def _lbfgs_error():
    return ValueError("solver='lbfgs' is not supported by fastnn.sklearn yet; use "
                      "solver='adam' (the default) or solver='sgd', or scikit-learn's own "
                      "MLP for L-BFGS")


def _slots_fit(opt, model):
    """Whether the optimizer holds moments for this model's parameter buffer."""
    return (opt is not None and opt.slots is not None and model._params is not None
            and opt.slots[0].shape == model._params.shape)


class _Schedule:
    """scikit-learn's per-epoch learning-rate logic (its SGDOptimizer / AdamOptimizer
    iteration_ends and trigger_stopping); the per-batch update runs in C."""

    def __init__(self, solver, learning_rate_init, lr_schedule, power_t):
        self.solver = solver
        self.learning_rate_init = float(learning_rate_init)
        self.learning_rate = float(learning_rate_init)
        self.lr_schedule = lr_schedule
        self.power_t = power_t

    def iteration_ends(self, time_step):
        if self.solver == "sgd" and self.lr_schedule == "invscaling":
            self.learning_rate = self.learning_rate_init / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg, verbose):
        if self.solver != "sgd" or self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share (scikit-learn's BaseMultilayerPerceptron)."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
    }

    def _set_common(self, hidden_layer_sizes, activation, solver, alpha, batch_size,
                    learning_rate, learning_rate_init, power_t, max_iter, shuffle,
                    random_state, tol, verbose, warm_start, momentum, nesterovs_momentum,
                    early_stopping, validation_fraction, beta_1, beta_2, epsilon,
                    n_iter_no_change, max_fun):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun

    # ---- the fastnn network ------------------------------------------------------------

    def _loss_setup(self):
        """(fastnn loss, loss scale, metrics) for this estimator's output."""
        raise NotImplementedError

    def _new_model(self, layer_units, dtype):
        """A built Sequential of Dense layers for layer_units (weights zero)."""
        model = Sequential(dtype=dtype)
        hidden = _ACTIVATIONS[self._hidden_activation]
        for units in layer_units[1:-1]:
            model.add(Dense(int(units), activation=hidden, kernel_initializer="zeros"))
        model.add(Dense(int(layer_units[-1]), activation=_ACTIVATIONS[self.out_activation_],
                        kernel_initializer="zeros"))
        model.build((int(layer_units[0]),))
        return model

    def _get_model(self):
        """The fitted network, its weights equal to coefs_ / intercepts_ (which are views
        of its parameters unless they were replaced since the last fit)."""
        model = self.__dict__.get("_model")
        if model is None:
            dtype = self.coefs_[0].dtype
            dtype = dtype if dtype in (np.float32, np.float64) else np.float64
            model = self._model = self._new_model(self._layer_units, np.dtype(dtype).name)
            self._write_weights(model, self.coefs_, self.intercepts_)
            self._link(model)
            return model
        self._write_weights(model, self.coefs_, self.intercepts_)
        return model

    @staticmethod
    def _write_weights(model, coefs, intercepts):
        """Copies coefs / intercepts into the network where they are not its own views."""
        if len(coefs) != len(model.layers) or len(intercepts) != len(model.layers):
            raise ValueError(f"coefs_, intercepts_: expected {len(model.layers)} arrays each "
                             f"(one per layer), got {len(coefs)} and {len(intercepts)}")
        for i, (layer, c, b) in enumerate(zip(model.layers, coefs, intercepts)):
            w, bias = layer.params
            for name, src, dst in (("coefs_", c, w), ("intercepts_", b, bias)):
                if src is dst:
                    continue
                src = np.asarray(src)
                if src.shape != dst.shape:
                    raise ValueError(f"{name}[{i}]: expected shape {dst.shape}, got {src.shape}")
                dst[...] = src

    def _link(self, model):
        """coefs_ / intercepts_ as views of the network's parameters."""
        self.coefs_ = [layer.params[0] for layer in model.layers]
        self.intercepts_ = [layer.params[1] for layer in model.layers]

    def _prepare_training(self, model, l2):
        """Sets the L2 penalty and loss scale the compiled loss applies (rebuilding the
        network, weights kept, when they change) and compiles the optimizer and loss."""
        loss, scale, metrics = self._loss_setup()
        changed = model._loss_scale != scale
        for layer in model.layers:
            if layer.l2_per_batch != l2:
                layer.l2_per_batch = l2
                changed = True
        if changed:
            model._loss_scale = scale
            model._network = None
            model._build(model._input_shape)
            self._link(model)
        # the reported loss (loss_curve_, and so the tol / n_iter_no_change stopping) from
        # probabilities clipped as scikit-learn's log-loss clips them: it differs from the
        # exact loss where predictions saturate (unscaled data), the gradient does not
        model._clip_log_loss = not isinstance(loss, MeanSquaredError)
        model.compile(optimizer=self._optimizer, loss=loss, metrics=metrics)

    def __getstate__(self):
        state = dict(super().__getstate__())
        # The network is rebuilt from coefs_ / intercepts_ on load (its state would store
        # the weights twice); the optimizer's moments stay in _optimizer, in get_weights
        # order (the network may keep a kernel transposed: Dense.choose_storage).
        model = state.pop("_model", None)
        opt = state.get("_optimizer")
        if model is not None and _slots_fit(opt, model):
            opt = copy.copy(opt)
            opt.slots = tuple(model._to_weights_order(slot) for slot in opt.slots)
            state["_optimizer"] = opt
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "coefs_" in self.__dict__:
            model = self._get_model()
            opt = self.__dict__.get("_optimizer")
            if _slots_fit(opt, model):
                opt.slots = tuple(model._from_weights_order(slot) for slot in opt.slots)

    # ---- fit ---------------------------------------------------------------------------

    def _init_coef(self, fan_in, fan_out, dtype, rs):
        # Glorot et al.'s initialization, drawn as scikit-learn draws it
        factor = 2.0 if self.activation == "logistic" else 6.0
        init_bound = np.sqrt(factor / (fan_in + fan_out))
        coef_init = rs.uniform(-init_bound, init_bound, (fan_in, fan_out))
        intercept_init = rs.uniform(-init_bound, init_bound, fan_out)
        return coef_init.astype(dtype, copy=False), intercept_init.astype(dtype, copy=False)

    def _initialize(self, y, layer_units, dtype, rs):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._output_activation()
        self._hidden_activation = self.activation
        self._layer_units = list(layer_units)
        model = self._model = self._new_model(layer_units, np.dtype(dtype).name)
        coefs, intercepts = [], []
        for i in range(self.n_layers_ - 1):
            c, b = self._init_coef(layer_units[i], layer_units[i + 1], dtype, rs)
            coefs.append(c)
            intercepts.append(b)
        self._write_weights(model, coefs, intercepts)
        self._link(model)
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [b.copy() for b in self.intercepts_]
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    @staticmethod
    def _check_weights(sample_weight, X):
        """sample_weight as a float64 array with one finite weight per row of X, or None:
        scikit-learn's checks (negative weights pass, as there), with errors that name
        sample_weight. fit and partial_fit call it before X, y and the classes are
        validated, so that bad weights leave the estimator as it was."""
        if sample_weight is None:
            return None
        try:
            return _check_sample_weight(sample_weight, X, dtype=np.float64)
        except ValueError as err:
            message = str(err)
            if "sample_weight" not in message:
                message = f"sample_weight: {message}"
            raise ValueError(message) from err

    def _fit(self, X, y, sample_weight=None, incremental=False):
        if self.solver == "lbfgs":
            raise _lbfgs_error()
        self._check_loss()
        hidden_layer_sizes = self.hidden_layer_sizes
        if not hasattr(hidden_layer_sizes, "__iter__"):
            hidden_layer_sizes = [hidden_layer_sizes]
        hidden_layer_sizes = list(hidden_layer_sizes)
        if np.any(np.array(hidden_layer_sizes) <= 0):
            raise ValueError("hidden_layer_sizes must be > 0, got %s." % hidden_layer_sizes)
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)

        sample_weight = self._check_weights(sample_weight, X)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        n_features = X.shape[1]
        layer_units = [n_features] + hidden_layer_sizes + [y.shape[1]]
        if not first_pass and layer_units != self._layer_units:
            raise ValueError(
                f"X, y: warm_start / partial_fit continue the fitted network of layer sizes "
                f"{self._layer_units}; these data and hidden_layer_sizes need "
                f"{layer_units} (fit again with warm_start=False for a new network)")
        self.n_outputs_ = y.shape[1]
        rs = check_random_state(self.random_state)

        if first_pass:
            self._initialize(y, layer_units, X.dtype, rs)
        elif self.activation != self._hidden_activation:
            # as scikit-learn: the next epochs use the new activation on the same weights
            self._get_model()
            self._hidden_activation = self.activation
            old = self._model
            self._model = self._new_model(layer_units, old.dtype)
            self._write_weights(self._model, self.coefs_, self.intercepts_)
            self._link(self._model)
        model = self._get_model()
        dtype = np.dtype(model.dtype)

        # Dense, C-contiguous in the network's dtype (sparse X is densified once here).
        X = X.toarray() if hasattr(X, "toarray") else X
        X = np.ascontiguousarray(X, dtype=dtype)
        if sample_weight is not None:  # the compiled loss reads them in the network's dtype
            sample_weight = sample_weight.astype(dtype, copy=False)
        self._fit_stochastic(model, X, y, sample_weight, rs, incremental, self.alpha)

        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError("Solver produced non-finite parameter weights. The input data "
                             "may contain large values and need to be preprocessed.")
        return self

    def _fit_stochastic(self, model, X, y, sample_weight, rs, incremental, l2):
        if not incremental or not hasattr(self, "_optimizer"):
            if self.solver == "sgd":
                opt = SGD(learning_rate=self.learning_rate_init, momentum=0.0,
                          nesterov=self.nesterovs_momentum)
                opt.momentum = float(self.momentum)  # scikit-learn allows momentum=1
            else:
                opt = Adam(learning_rate=self.learning_rate_init, beta_1=self.beta_1,
                           beta_2=self.beta_2, epsilon=self.epsilon)
            self._optimizer = opt
            self._schedule = _Schedule(self.solver, self.learning_rate_init,
                                       self.learning_rate, self.power_t)
        opt, schedule = self._optimizer, self._schedule

        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        if early_stopping:
            # as scikit-learn: stratified for single-output classification only
            should_stratify = isinstance(self, ClassifierMixin) and self.n_outputs_ == 1
            stratify = y if should_stratify else None
            if sample_weight is None:
                X_train, X_val, y_train, y_val = train_test_split(
                    X, y, random_state=rs, test_size=self.validation_fraction,
                    stratify=stratify)
                sw_train = sw_val = None
            else:
                X_train, X_val, y_train, y_val, sw_train, sw_val = train_test_split(
                    X, y, sample_weight, random_state=rs,
                    test_size=self.validation_fraction, stratify=stratify)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            y_val = self._validation_targets(y_val)
        else:
            X_train, y_train, sw_train = X, y, sample_weight
            X_val = y_val = sw_val = None

        n_samples = X_train.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It "
                              "is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        X_train = np.ascontiguousarray(X_train)
        if sw_train is not None:
            sw_train = np.ascontiguousarray(sw_train)
        targets = self._training_targets(y_train, model.dtype)
        sample_idx = np.arange(n_samples, dtype=np.int64)
        steps = -(-n_samples // batch_size)
        batch_starts = np.arange(0, n_samples, batch_size)

        # Each epoch runs through the compiled network as Sequential.fit runs it (optimizer
        # configured, BLAS held at one thread, one Network.train call for all steps), but
        # over scikit-learn's own permutation, so that its shuffles are reproduced.
        self._prepare_training(model, l2)
        network = model._network
        n_params, params_dtype = model._params.shape[0], model._params.dtype
        n_out = self.n_outputs_
        correct_mse = isinstance(self, RegressorMixin) and n_out > 1
        nthreads = config.get_num_threads()

        # Epochs that need no Python between them (no validation score, printing, sample
        # weights or per-epoch learning rate) run many to a compiled call: the shuffle
        # (RandomState's own draws, from its bit generator), the steps and scikit-learn's
        # count of epochs without improvement; the call returns where that count decides.
        whole_epochs = not (early_stopping or self.verbose or sw_train is not None or
                            incremental or (self.solver == "sgd" and
                                            self.learning_rate == "invscaling"))
        bit_generator = rs._bit_generator if self.shuffle and whole_epochs else None
        loss_correction = 0.5 * (n_out - 1) if correct_mse else 0.0
        # n_iter_no_change may be np.inf; the count never reaches a C int's largest
        patience = int(min(self.n_iter_no_change, 2**31 - 1))
        threads = config.ThreadPicker(nthreads)
        try:
            self.n_iter_ = 0
            with config.blas_threads(1):
                while self.n_iter_ < self.max_iter:
                    opt.learning_rate = schedule.learning_rate
                    opt.configure(network, n_params, params_dtype)
                    if whole_epochs:
                        # calls of about 0.1 s (Ctrl-C and other Python threads get their
                        # turn between them), on the thread count that runs them fastest
                        call_threads, epochs = threads.next_call(self.max_iter - self.n_iter_)
                        start = time.perf_counter()
                        with bit_generator.lock if bit_generator else contextlib.nullcontext():
                            network.fit_epochs(
                                X_train, targets, sample_idx, batch_size, bit_generator,
                                loss_correction, self.tol, patience, self.best_loss_,
                                self._no_improvement_count, epochs, call_threads)
                        run = self._take_epochs(network, opt, n_samples)
                        threads.record(call_threads, time.perf_counter() - start, run,
                                       network.wait_fraction)
                    else:
                        if self.shuffle:
                            # sklearn.utils.shuffle(sample_idx, random_state=rs), without
                            # its overhead: the same draws and swaps, on sample_idx in place
                            rs.shuffle(sample_idx)
                        if sw_train is not None:
                            self._check_batch_weights(sw_train, sample_idx, batch_starts)
                        loss_sum, metric_sums = network.train(X_train, targets, sample_idx, 0,
                                                              steps, batch_size, 0, nthreads,
                                                              weights=sw_train)
                        opt.iterations = network.iterations
                        if correct_mse:
                            # the gradient is scikit-learn's (half squared error summed over
                            # the outputs); its reported loss averages over them (weighted,
                            # the metric is weighted as the loss is)
                            loss_sum -= loss_correction * metric_sums[0]
                        self.n_iter_ += 1
                        self.loss_ = loss_sum / n_samples
                        self.t_ += n_samples
                        self.loss_curve_.append(self.loss_)
                        if self.verbose:
                            print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))

                        self._update_no_improvement_count(early_stopping, X_val, y_val,
                                                          sw_val)
                        schedule.iteration_ends(self.t_)

                    if self._no_improvement_count > self.n_iter_no_change:
                        if early_stopping:
                            msg = ("Validation score did not improve more than tol=%f for %d "
                                   "consecutive epochs." % (self.tol, self.n_iter_no_change))
                        else:
                            msg = ("Training loss did not improve more than tol=%f for %d "
                                   "consecutive epochs." % (self.tol, self.n_iter_no_change))
                        if schedule.trigger_stopping(msg, self.verbose):
                            break
                        self._no_improvement_count = 0

                    if incremental:
                        break
                    if self.n_iter_ == self.max_iter:
                        warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached "
                                      "and the optimization hasn't converged yet."
                                      % self.max_iter, ConvergenceWarning)
        except KeyboardInterrupt:
            if whole_epochs:  # the epochs of the call it cut short of their bookkeeping
                self._take_epochs(network, opt, n_samples)
            warnings.warn("Training interrupted by user.")

        if early_stopping:  # restore the best weights
            self._write_weights(model, self._best_coefs, self._best_intercepts)

    def _take_epochs(self, network, opt, n_samples):
        """The bookkeeping of the epochs network.fit_epochs last ran (none if it was
        already taken): the step count, loss curve and scikit-learn's no-improvement
        count and best loss. Returns how many epochs that was."""
        result = network.take_fit_result()
        if result is None:
            return 0
        losses, self._no_improvement_count, self.best_loss_ = result
        opt.iterations = network.iterations
        for loss in losses.tolist():
            self.n_iter_ += 1
            self.loss_ = loss
            self.t_ += n_samples
            self.loss_curve_.append(loss)
        return len(losses)

    @staticmethod
    def _check_batch_weights(sw_train, sample_idx, batch_starts):
        """A ValueError, before the epoch runs, when one of its batches weighs 0 in all:
        its weighted mean loss (and scikit-learn's, which stops there with
        ZeroDivisionError) is undefined."""
        batch_weights = np.add.reduceat(sw_train[sample_idx], batch_starts, dtype=np.float64)
        if (batch_weights == 0).any():
            raise ValueError("sample_weight: the weights of a batch of this epoch sum to zero "
                             "(e.g. a batch of zero-weight samples), so its weighted mean "
                             "loss is undefined; use a larger batch_size or fewer zero "
                             "weights")

    def _update_no_improvement_count(self, early_stopping, X_val, y_val, sw_val):
        if early_stopping:
            val_score = self._validation_score(X_val, y_val, sw_val)
            self.validation_scores_.append(val_score)
            if self.verbose:
                print("Validation score: %f" % self.validation_scores_[-1])
            last_valid_score = self.validation_scores_[-1]
            if last_valid_score < (self.best_validation_score_ + self.tol):
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last_valid_score > self.best_validation_score_:
                self.best_validation_score_ = last_valid_score
                self._best_coefs = [c.copy() for c in self.coefs_]
                self._best_intercepts = [b.copy() for b in self.intercepts_]
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _validation_score(self, X_val, y_val, sw_val):
        y_pred = self._predict_from_output(self._forward_dense(X_val))
        if np.issubdtype(np.asarray(y_pred).dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return self._score_function(y_val, y_pred, sample_weight=sw_val)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError("partial_fit is only available for stochastic optimizers. "
                                 "%s is not stochastic." % self.solver)
        return True

    def _check_loss(self):
        pass

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fits the model to data matrix X and target(s) y (one fastnn-compiled epoch per
        iteration), each sample's loss weighted by sample_weight (None: all weigh 1)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    # ---- predict -----------------------------------------------------------------------

    def _forward_dense(self, X):
        """The network's output for a dense, validated X (any float dtype)."""
        model = self._get_model()
        X = np.ascontiguousarray(X, dtype=model.dtype)
        return model.predict(X)

    def _forward(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False,
                          dtype=(np.float64, np.float32))
        if not hasattr(X, "toarray"):
            return self._forward_dense(X)
        X = X.tocsr()
        parts = [self._forward_dense(X[i:i + _PREDICT_CHUNK].toarray())
                 for i in range(0, X.shape[0], _PREDICT_CHUNK)]
        return np.concatenate(parts, axis=0)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: scikit-learn's MLPClassifier, trained by
    fastnn's compiled network. Parameters, attributes and methods are scikit-learn's
    (see its documentation and this module's docstring for what differs)."""

    loss = "log_loss"  # as scikit-learn's attribute (not a parameter)

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000):
        self._set_common(hidden_layer_sizes, activation, solver, alpha, batch_size,
                         learning_rate, learning_rate_init, power_t, max_iter, shuffle,
                         random_state, tol, verbose, warm_start, momentum, nesterovs_momentum,
                         early_stopping, validation_fraction, beta_1, beta_2, epsilon,
                         n_iter_no_change, max_fun)

    def _output_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _loss_setup(self):
        if self.out_activation_ == "softmax":
            return SparseCategoricalCrossentropy(), 1.0, []
        # binary log-loss summed over the labels (fastnn's BCE averages them)
        return BinaryCrossentropy(), float(self.n_outputs_), []

    def _training_targets(self, y, dtype):
        if self.out_activation_ == "softmax":
            return np.ascontiguousarray(np.argmax(y, axis=1).reshape(-1, 1), dtype=dtype)
        return np.ascontiguousarray(y, dtype=dtype)

    def _validation_targets(self, y_val):
        return self._label_binarizer.inverse_transform(y_val)

    def _score_function(self, y, y_pred, sample_weight=None):
        return accuracy_score(y, y_pred, sample_weight=sample_weight)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        # scikit-learn's rules for classes_ across fit / warm_start / partial_fit
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same "
                                     "classes as in the previous call to fit. Previously "
                                     f"got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError("`y` has classes not in `self.classes_`. "
                                 f"`self.classes_` has {self.classes_}. 'y' has {classes}.")
        y = self._indicator_targets(y)
        return X, y

    def _indicator_targets(self, y):
        """The fitted LabelBinarizer's transform(y) as bools. For one column of labels from
        two or more classes (all of them in classes_, which _validate_input has checked),
        computed directly: the LabelBinarizer's own transform re-derives the target type
        several times over, about 0.6 ms per fit, a few percent of fitting a small
        dataset."""
        classes = self._label_binarizer.classes_
        if y.ndim != 1 or len(classes) < 2 or getattr(self._label_binarizer, "sparse_input_", False):
            return self._label_binarizer.transform(y).astype(bool)
        index = np.searchsorted(classes, y)
        if len(classes) == 2:
            return (index == 1).reshape(-1, 1)
        indicator = np.zeros((y.shape[0], len(classes)), dtype=bool)
        indicator[np.arange(y.shape[0]), index] = True
        return indicator

    def _predict_from_output(self, y_pred):
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def predict(self, X):
        """Predicted classes (or label indicator rows for multi-label targets)."""
        return self._predict_from_output(self._forward(X))

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over X, y (sample_weight as in fit). classes (all classes, e.g.
        np.unique(y_all)) is required on the first call and may be omitted afterwards."""
        sample_weight = self._check_weights(sample_weight, X)
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def predict_proba(self, X):
        """Class probabilities, columns in the order of classes_."""
        y_pred = self._forward(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: scikit-learn's MLPRegressor, trained by fastnn's
    compiled network (half squared error). Parameters, attributes and methods are
    scikit-learn's; loss="poisson" is not supported yet."""

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000):
        self.loss = loss
        self._set_common(hidden_layer_sizes, activation, solver, alpha, batch_size,
                         learning_rate, learning_rate_init, power_t, max_iter, shuffle,
                         random_state, tol, verbose, warm_start, momentum, nesterovs_momentum,
                         early_stopping, validation_fraction, beta_1, beta_2, epsilon,
                         n_iter_no_change, max_fun)

    def _check_loss(self):
        if self.loss == "poisson":
            raise ValueError("loss='poisson' is not supported by fastnn.sklearn yet; use "
                             "loss='squared_error' (the default) or scikit-learn's own "
                             "MLPRegressor")

    def _output_activation(self):
        return "identity"

    def _loss_setup(self):
        # fastnn's MSE averages over the outputs; scikit-learn's gradient is that of the
        # half squared error summed over them (its loss_ is corrected back in the fit loop)
        metrics = ["mse"] if self.n_outputs_ > 1 else []
        return MeanSquaredError(), 0.5 * self.n_outputs_, metrics

    def _training_targets(self, y, dtype):
        return np.ascontiguousarray(y, dtype=dtype)

    def _validation_targets(self, y_val):
        return y_val

    def _score_function(self, y, y_pred, sample_weight=None):
        return r2_score(y, y_pred, sample_weight=sample_weight)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _predict_from_output(self, y_pred):
        if y_pred.shape[1] == 1:
            return y_pred.ravel()
        return y_pred

    def predict(self, X):
        """Predicted values, shape (n_samples,) or (n_samples, n_outputs)."""
        return self._predict_from_output(self._forward(X))

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X, y (sample_weight as in fit)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)
