# Developer targets. CI runs .ci/run (pip install + pytest); these are extra checks.
#
#   make build      the extension in place (what the tests import from a clone)
#   make test       the whole test suite
#   make sanitize   a separate build of the C kernels with AddressSanitizer and
#                   UndefinedBehaviorSanitizer (build/sanitize, the in-place build is left
#                   alone), then the kernel, model, property and concurrency tests against
#                   it. Any out-of-bounds access, use-after-free or undefined behaviour in
#                   src_c/ aborts the run with a report. Leak detection is off: CPython
#                   itself keeps memory until exit by design (tests/test_leaks.py checks
#                   fastnn for leaks by resident memory instead).
#   make fuzz       the standalone load_model fuzzer (tests/fuzz_load_model.py), 5 minutes

PYTHON ?= python
SAN_DIR := build/sanitize
SAN_FLAGS := -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=all -g
# The flags go in CC, so that setup.py's OpenMP probe (compiled and linked as a program)
# sees them too; CFLAGS/LDFLAGS would miss its link and turn OpenMP off.
# The tests that run compiled code (tests/test_leaks.py skips itself there: it measures
# resident memory, which the sanitizers' shadow memory inflates on purpose).
SAN_TESTS := tests/test_activations.py tests/test_dense.py tests/test_losses.py \
	tests/test_optimizers.py tests/test_conv1d.py tests/test_gemm.py tests/test_network.py \
	tests/test_models.py tests/test_conv_models.py tests/test_validation.py \
	tests/test_training.py tests/test_saving.py tests/test_properties.py \
	tests/test_concurrency.py tests/test_robustness.py tests/test_load_fuzz.py
FUZZ_SECONDS ?= 300

.PHONY: build test sanitize fuzz clean-sanitize

build:
	$(PYTHON) setup.py build_ext --inplace

test: build
	$(PYTHON) -m pytest -q

sanitize:
	rm -rf $(SAN_DIR) build/sanitize-temp
	CC="gcc $(SAN_FLAGS)" \
		$(PYTHON) setup.py build_py --build-lib $(SAN_DIR) \
		build_ext --build-lib $(SAN_DIR) --build-temp build/sanitize-temp --force \
		> build/sanitize.log 2>&1 || (tail -30 build/sanitize.log; exit 1)
	@if grep -q "OpenMP not available" build/sanitize.log; then \
		echo "sanitize: the build lost OpenMP; see build/sanitize.log"; exit 1; fi
	@grep -q -- "-fsanitize=address" build/sanitize.log || \
		(echo "sanitize: the sanitizer flags did not reach the compiler"; exit 1)
	@ldd $(SAN_DIR)/fastnn/_kernels*.so | grep -q libasan || \
		(echo "sanitize: the extension is not linked with libasan"; exit 1)
	cd $(SAN_DIR) && \
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	FASTNN_SANITIZED=1 PYTHONPATH=. \
		$(PYTHON) -c "import fastnn, os; assert os.path.abspath(fastnn.__file__).startswith(os.getcwd()), fastnn.__file__; print('sanitize: testing', fastnn._kernels.__file__)" && \
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	FASTNN_SANITIZED=1 PYTHONPATH=. \
		$(PYTHON) -m pytest -q -p no:cacheprovider --rootdir=$(CURDIR) \
		$(addprefix $(CURDIR)/,$(SAN_TESTS))

fuzz: build
	$(PYTHON) tests/fuzz_load_model.py --seconds $(FUZZ_SECONDS)

clean-sanitize:
	rm -rf $(SAN_DIR) build/sanitize-temp build/sanitize.log
