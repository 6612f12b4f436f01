"""Fixtures shared by the kernel test modules."""
import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(scope="module")
def one_blas_thread():
    """BLAS on one thread, as fastnn holds it during its own calls: BLAS threads and the
    kernels' spinning OpenMP threads would fight over few CPUs and slow the direct kernel
    calls of these tests several times (results are unaffected)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture
def run_python(tmp_path):
    """Runs code in a fresh interpreter that imports the fastnn under test. It runs in a
    temporary directory: from the checkout, `python -c` would put the unbuilt source tree
    (no compiled modules in CI, which installs the package) ahead of the installed one."""
    import os
    import subprocess
    import sys

    import fastnn
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))

    def run(code, env=None, timeout=120, text=True):
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = os.pathsep.join([package_dir, env.get("PYTHONPATH", "")])
        return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                              capture_output=True, text=text, timeout=timeout)
    return run
