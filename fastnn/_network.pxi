# The C view of a built Sequential model (src_c/network.h), included by _kernels.pyx.

cdef void *_data(arr, dtype, shape, name) except NULL:
    """The data pointer of a C-contiguous array of this dtype and shape (checked with
    NumPy's C macros: this runs on every predict request)."""
    if not cnp.PyArray_Check(arr):
        raise TypeError(f"{name}: expected a C-contiguous {dtype} ndarray")
    cdef cnp.ndarray a = <cnp.ndarray>arr
    cdef int want = cnp.NPY_FLOAT64 if dtype == np.float64 else (
        cnp.NPY_FLOAT32 if dtype == np.float32 else cnp.NPY_INT64)
    if cnp.PyArray_TYPE(a) != want or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise TypeError(f"{name}: expected a C-contiguous {dtype} ndarray")
    cdef int nd = cnp.PyArray_NDIM(a)
    if shape is not None:
        if nd != len(shape) or any(cnp.PyArray_DIM(a, i) != shape[i] for i in range(nd)):
            raise ValueError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    if cnp.PyArray_SIZE(a) == 0:
        raise ValueError(f"{name}: expected a non-empty array")
    return cnp.PyArray_DATA(a)


cdef int _targets_width(y) except -1:
    """Targets per row of a 2-D y (a 1-D y would be read past its shape)."""
    if not cnp.PyArray_Check(y) or cnp.PyArray_NDIM(<cnp.ndarray>y) != 2:
        raise ValueError("y: expected a 2-D array (rows x targets)")
    return cnp.PyArray_DIM(<cnp.ndarray>y, 1)


cdef class Network:
    """A Sequential model's layers, loss and optimizer as C structs, plus the training
    workspace for the last batch size used. Parameter and gradient pointers are views into
    the flat arrays given here, which this object keeps alive."""
    cdef nn_model model
    cdef nn_optimizer opt
    cdef nn_workspace *ws
    cdef nn_workspace *spare_ws   # a predict workspace kept for the next call
    cdef int ws_y_width
    cdef bint training            # a train call is running (without the GIL)
    cdef object params, grads, slots, dtype
    cdef object fit_result        # fit_epochs' last result, until take_fit_result
    cdef readonly int in_dim, out_dim

    def __cinit__(self, specs, params, grads):
        self.model.layers = NULL
        self.ws = NULL
        self.spare_ws = NULL
        self.training = False

    def __init__(self, specs, cnp.ndarray params, cnp.ndarray grads):
        """specs: per layer a dict with kind, in_dim, out_dim, act, slope, rate and the
        offsets (in elements) of w and b in params (None when absent)."""
        if params.dtype not in (np.float32, np.float64) or grads.dtype != params.dtype:
            raise TypeError("params and grads must be float32 or float64 of one dtype")
        if not params.flags.c_contiguous or not grads.flags.c_contiguous or params.shape[0] != grads.shape[0]:
            raise ValueError("params and grads must be contiguous and of equal length")
        if not specs:
            raise ValueError("a network needs at least one layer")
        self.params, self.grads, self.dtype = params, grads, params.dtype
        self.model.is_double = params.dtype == np.float64
        self.model.gemm = gemm_for(self.model.is_double)
        self.model.n_params = params.shape[0]
        self.model.max_parts = 2
        self.model.n_layers = len(specs)
        self.model.layers = <nn_layer *>malloc(sizeof(nn_layer) * len(specs))
        if self.model.layers == NULL:
            raise MemoryError()
        cdef char *pbase = <char *>cnp.PyArray_DATA(params)
        cdef char *gbase = <char *>cnp.PyArray_DATA(grads)
        cdef size_t item = params.itemsize
        cdef nn_layer *L
        cdef ptrdiff_t offset
        for i, s in enumerate(specs):
            L = &self.model.layers[i]
            L.kind = LAYER_KINDS[s["kind"]]
            L.in_dim, L.out_dim = s["in_dim"], s["out_dim"]
            L.act, L.slope, L.rate = s["act"], s["slope"], s["rate"]
            L.steps_in, L.channels_in = s.get("steps_in", 1), s.get("channels_in", s["in_dim"])
            L.steps_out = s.get("steps_out", 1)
            L.kernel, L.stride, L.pad_left = s.get("kernel", 1), s.get("stride", 1), s.get("pad_left", 0)
            L.l2_per_batch = s.get("l2_per_batch", 0.0)
            L.w_trans = bool(s.get("w_trans", False))
            L.w = L.dw = L.b = L.db = NULL
            if s.get("w") is not None:
                offset = s["w"]
                L.w, L.dw = pbase + item * offset, gbase + item * offset
            if s.get("b") is not None:
                offset = s["b"]
                L.b, L.db = pbase + item * offset, gbase + item * offset
        self.in_dim = specs[0]["in_dim"]
        self.out_dim = specs[len(specs) - 1]["out_dim"]
        self.model.loss = -1
        self.model.loss_scale = 1.0
        self.model.clip_log_loss = 0
        self.model.n_metrics = 0
        self.opt.kind = -1

    def __dealloc__(self):
        network_workspace_free(self.ws)
        network_workspace_free(self.spare_ws)
        free(self.model.layers)

    cdef _check_idle(self, what):
        """Training runs without the GIL on this object's workspace, optimizer state and
        settings: while it runs, another thread may not train it or change them (that
        would free buffers under it)."""
        if self.training:
            raise RuntimeError(f"{what}: this model is training in another thread; a model "
                               "trains in one thread at a time")

    @property
    def busy(self):
        """Whether a train call is running on this network (in another thread)."""
        return self.training

    def set_loss(self, int loss, bint from_logits, bint fused, metrics=(), double scale=1.0,
                 bint clip_log_loss=False):
        """The loss (times scale, e.g. 0.5 for scikit-learn's half squared error) and the
        metric codes to accumulate; clip_log_loss: its value from probabilities clipped as
        scikit-learn's log-loss clips them (src_c/losses.h: LOSS_CLIP_PROBABILITIES)."""
        self._check_idle("set_loss")
        if len(metrics) > NN_MAX_METRICS:
            raise ValueError(f"at most {NN_MAX_METRICS} metrics are supported")
        self.model.loss, self.model.from_logits, self.model.fused = loss, from_logits, fused
        self.model.loss_scale = scale
        self.model.clip_log_loss = clip_log_loss
        self.model.n_metrics = len(metrics)
        for k, code in enumerate(metrics):
            self.model.metrics[k] = code

    def set_optimizer(self, int kind, double learning_rate, double beta1, double beta2,
                      double epsilon, double rho, double momentum, bint nesterov,
                      long long iterations, cnp.ndarray slot1, cnp.ndarray slot2):
        self._check_idle("set_optimizer")
        n = self.params.shape[0]
        self.opt.kind = kind
        self.opt.learning_rate, self.opt.beta1, self.opt.beta2 = learning_rate, beta1, beta2
        self.opt.epsilon, self.opt.rho, self.opt.momentum = epsilon, rho, momentum
        self.opt.nesterov, self.opt.iterations = nesterov, iterations
        self.opt.n_params = n
        self.opt.params = cnp.PyArray_DATA(self.params)
        self.opt.grads = cnp.PyArray_DATA(self.grads)
        self.opt.slot1 = _data(slot1, self.dtype, (n,), "slot1")
        self.opt.slot2 = _data(slot2, self.dtype, (n,), "slot2")
        self.slots = (slot1, slot2)

    @property
    def max_parts(self):
        """At most this many row parts per training step (1: never cut a batch)."""
        return self.model.max_parts

    @max_parts.setter
    def max_parts(self, int value):
        if value < 1:
            raise ValueError(f"max_parts: expected a positive count, got {value}")
        self._check_idle("max_parts")
        self.model.max_parts = value
        network_workspace_free(self.ws)  # its parts and buffers follow the setting
        self.ws = NULL

    def parts(self, int batch):
        """How many row parts a training step cuts a batch of this size into
        (src_c/network.h: network_parts)."""
        if batch < 1:
            raise ValueError(f"batch: expected a positive size, got {batch}")
        return network_parts(&self.model, batch)

    def split_units(self, int batch):
        """The first layer's units thread 0 takes when two threads split them in training
        at this batch size, 0 for no split (src_c/network.h: network_split_units)."""
        if batch < 1:
            raise ValueError(f"batch: expected a positive size, got {batch}")
        return network_split_units(&self.model, batch)

    @property
    def iterations(self):
        return self.opt.iterations

    @property
    def wait_fraction(self):
        """Of the last train or fit_epochs call, if threads split its steps, the largest
        share of its time a thread spent waiting for the others at barriers; else 0
        (src_c/network.h: nn_workspace)."""
        return self.ws.wait_fraction if self.ws != NULL else 0.0

    cdef nn_workspace *_train_workspace(self, int batch, int y_width) except NULL:
        if self.ws == NULL or self.ws.batch != batch or self.ws_y_width != y_width:
            network_workspace_free(self.ws)
            self.ws = network_workspace_new(&self.model, batch, y_width, 1)
            self.ws_y_width = y_width
            if self.ws == NULL:
                raise MemoryError(f"cannot allocate buffers for batch size {batch}")
        return self.ws

    cdef void *_weights(self, weights, ptrdiff_t n) except? NULL:
        """The data pointer of per-row sample weights, or NULL for None."""
        if weights is None:
            return NULL
        cdef void *wp = _data(weights, self.dtype, (n,), "weights")
        cdef bint finite
        with nogil:
            if self.model.is_double:
                finite = all_finite_f64(<double *>wp, n)
            else:
                finite = all_finite_f32(<float *>wp, n)
        if not finite:
            raise ValueError("weights: expected finite values (no NaN or inf)")
        return wp

    def train(self, x, y, cnp.ndarray order, ptrdiff_t step_begin, ptrdiff_t step_end,
              int batch, uint64_t seed, int nthreads, weights=None):
        """Steps [step_begin, step_end) of an epoch; returns (loss_sum, metric_sums).
        weights: None, or one finite sample weight per row of x, of the model's dtype
        (each batch's loss and metrics are then weighted means, network.h)."""
        if self.model.loss < 0 or self.opt.kind < 0:
            raise RuntimeError("set_loss and set_optimizer must come before train")
        cdef ptrdiff_t n = x.shape[0]
        cdef int y_width = _targets_width(y)
        cdef void *xp = _data(x, self.dtype, (n, self.in_dim), "x")
        cdef void *yp = _data(y, self.dtype, (n, y_width), "y")
        cdef int64_t *op = <int64_t *>_data(order, np.int64, (n,), "order")
        cdef void *wp = self._weights(weights, n)
        if step_begin < 0 or step_end * <ptrdiff_t>batch > n + batch - 1 or batch < 1:
            raise ValueError("steps out of range")
        self._check_idle("train")
        cdef nn_workspace *ws = self._train_workspace(batch, y_width)
        cdef double loss_sum = 0
        cdef double sums[8]
        for k in range(8):
            sums[k] = 0
        self.training = True
        try:
            with nogil:
                if self.model.is_double:
                    network_train_f64(&self.model, &self.opt, ws, <double *>xp, <double *>yp, y_width, <double *>wp, op, n, step_begin, step_end, seed, &loss_sum, sums, nthreads)
                else:
                    network_train_f32(&self.model, &self.opt, ws, <float *>xp, <float *>yp, y_width, <float *>wp, op, n, step_begin, step_end, seed, &loss_sum, sums, nthreads)
        finally:
            self.training = False
        return loss_sum, [sums[k] for k in range(self.model.n_metrics)]

    def fit_epochs(self, x, y, cnp.ndarray order, int batch, bit_generator,
                   double loss_correction, double tol, int n_iter_no_change, double best_loss,
                   int no_improvement, int max_epochs, int nthreads):
        """Up to max_epochs epochs of scikit-learn's stochastic solver in one call
        (src_c/network.h: network_fit_epochs): each shuffles order in place with
        bit_generator's draws as RandomState.shuffle would (None: no shuffle) and steps
        through all of it in batches of batch rows. Returns (losses, no_improvement,
        best_loss): the loss of each epoch run, and scikit-learn's count of epochs without
        improvement and best loss after the last; fewer epochs than max_epochs when that
        count passes n_iter_no_change. The caller holds bit_generator.lock."""
        if self.model.loss < 0 or self.opt.kind < 0:
            raise RuntimeError("set_loss and set_optimizer must come before fit_epochs")
        cdef ptrdiff_t n = x.shape[0]
        cdef int y_width = _targets_width(y)
        cdef void *xp = _data(x, self.dtype, (n, self.in_dim), "x")
        cdef void *yp = _data(y, self.dtype, (n, y_width), "y")
        cdef int64_t *op = <int64_t *>_data(order, np.int64, (n,), "order")
        if batch < 1 or max_epochs < 1:
            raise ValueError("batch and max_epochs: expected positive counts")
        if order.min() < 0 or order.max() >= n:  # it only permutes them: checked once
            raise ValueError(f"order: expected row indices in [0, {n})")
        cdef nn_bitgen gen
        cdef nn_bitgen *genp = NULL
        cdef bitgen_t *source
        if bit_generator is not None:
            source = <bitgen_t *>PyCapsule_GetPointer(bit_generator.capsule, "BitGenerator")
            gen.state = source.state
            gen.next_uint32 = source.next_uint32
            gen.next_uint64 = source.next_uint64
            genp = &gen
        self._check_idle("fit_epochs")
        cdef nn_workspace *ws = self._train_workspace(batch, y_width)
        cdef cnp.ndarray losses = np.empty(max_epochs, dtype=np.float64)
        cdef double *lp = <double *>cnp.PyArray_DATA(losses)
        cdef int run = 0
        self.training = True
        try:
            with nogil:
                if self.model.is_double:
                    run = network_fit_epochs_f64(&self.model, &self.opt, ws, <double *>xp, <double *>yp, y_width, op, n, genp, loss_correction, tol, n_iter_no_change, &best_loss, &no_improvement, lp, max_epochs, nthreads)
                else:
                    run = network_fit_epochs_f32(&self.model, &self.opt, ws, <float *>xp, <float *>yp, y_width, op, n, genp, loss_correction, tol, n_iter_no_change, &best_loss, &no_improvement, lp, max_epochs, nthreads)
        finally:
            self.training = False
        # kept here too: a Ctrl-C during the call raises as soon as it returns, before the
        # caller has taken the result, which the epochs run have already applied
        self.fit_result = (losses[:run], no_improvement, best_loss)
        return self.fit_result

    def take_fit_result(self):
        """fit_epochs' last result, once (None when it was already taken)."""
        result, self.fit_result = self.fit_result, None
        return result

    def predict(self, x, cnp.ndarray out, int batch, int nthreads, bint check_finite=False):
        """out[:] = the network's output for x (inference mode); with check_finite, returns
        False without computing when x holds NaN or inf. Safe from many threads: each call
        has its own workspace: a call takes the spare one (or makes one) while it holds the
        GIL, and gives it back afterwards, so no two calls ever share buffers."""
        cdef ptrdiff_t n = x.shape[0]
        cdef void *xp = _data(x, self.dtype, (n, self.in_dim), "x")
        cdef void *outp = _data(out, self.dtype, (n, self.out_dim), "out")
        cdef nn_workspace *ws = NULL
        cdef bint finite = True
        batch = max(1, min(batch, n))
        if check_finite:
            with nogil:
                if self.model.is_double:
                    finite = all_finite_f64(<double *>xp, n * self.in_dim)
                else:
                    finite = all_finite_f32(<float *>xp, n * self.in_dim)
            if not finite:
                return False
        if self.spare_ws != NULL and self.spare_ws.batch == batch:
            ws, self.spare_ws = self.spare_ws, NULL
        with nogil:
            if ws == NULL:
                ws = network_workspace_new(&self.model, batch, 1, 0)
            if ws != NULL:
                if self.model.is_double:
                    network_predict_f64(&self.model, ws, <double *>outp, <double *>xp, n, nthreads)
                else:
                    network_predict_f32(&self.model, ws, <float *>outp, <float *>xp, n, nthreads)
        if ws == NULL:
            raise MemoryError(f"cannot allocate buffers for batch size {batch}")
        if self.spare_ws == NULL and batch <= 4096:
            self.spare_ws = ws   # small enough to keep for the next request
        else:
            network_workspace_free(ws)
        return True

    def evaluate(self, x, y, int batch, int nthreads):
        """(loss_sum, metric_sums) over all rows, inference mode."""
        if self.model.loss < 0:
            raise RuntimeError("set_loss must come before evaluate")
        cdef ptrdiff_t n = x.shape[0]
        cdef int y_width = _targets_width(y)
        cdef void *xp = _data(x, self.dtype, (n, self.in_dim), "x")
        cdef void *yp = _data(y, self.dtype, (n, y_width), "y")
        cdef nn_workspace *ws
        cdef double loss_sum = 0
        cdef double sums[8]
        for k in range(8):
            sums[k] = 0
        batch = max(1, min(batch, n))
        with nogil:
            ws = network_workspace_new(&self.model, batch, y_width, 0)
            if ws != NULL:
                if self.model.is_double:
                    network_evaluate_f64(&self.model, ws, <double *>xp, <double *>yp, y_width, n, &loss_sum, sums, nthreads)
                else:
                    network_evaluate_f32(&self.model, ws, <float *>xp, <float *>yp, y_width, n, &loss_sum, sums, nthreads)
                network_workspace_free(ws)
        if ws == NULL:
            raise MemoryError(f"cannot allocate buffers for batch size {batch}")
        return loss_sum, [sums[k] for k in range(self.model.n_metrics)]

    def loss_grad(self, x, y, int nthreads=1, weights=None):
        """Mean loss over all rows of x (no dropout), weighted as in train when weights are
        given; its gradient goes to the grads array."""
        if self.model.loss < 0:
            raise RuntimeError("set_loss must come before loss_grad")
        cdef ptrdiff_t n = x.shape[0]
        cdef int y_width = _targets_width(y)
        cdef void *xp = _data(x, self.dtype, (n, self.in_dim), "x")
        cdef void *yp = _data(y, self.dtype, (n, y_width), "y")
        cdef void *wp = self._weights(weights, n)
        cdef nn_workspace *ws
        cdef double value = 0
        with nogil:
            ws = network_workspace_new(&self.model, <int>n, y_width, 0)
            if ws != NULL:
                if self.model.is_double:
                    value = network_loss_grad_f64(&self.model, ws, <double *>xp, <double *>yp, y_width, <double *>wp, <int>n, nthreads)
                else:
                    value = network_loss_grad_f32(&self.model, ws, <float *>xp, <float *>yp, y_width, <float *>wp, <int>n, nthreads)
                network_workspace_free(ws)
        if ws == NULL:
            raise MemoryError(f"cannot allocate buffers for {n} rows")
        return value
