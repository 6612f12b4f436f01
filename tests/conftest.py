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
