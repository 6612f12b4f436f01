"""Build of fastnn's compiled core: one extension, fastnn._kernels, made of the Cython glue
(fastnn/_kernels.pyx) and the C99 kernels in src_c/.

Flags: -O3 -fno-math-errno -ffp-contract=off, plus OpenMP where the compiler has it (checked by compiling a probe; without
it the kernels run on one thread). No -ffast-math, ever. FASTNN_NATIVE=1 in the
environment adds -march=native for a build that only runs on this CPU.
"""
import os
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNEL_SOURCES = ["activations", "gemm", "dense", "losses", "optimizers", "conv1d", "network",
                  "threads"]


def compiler_accepts(compiler, flags, link_flags=()):
    """Whether the compiler builds and links a small OpenMP program with these flags."""
    probe = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(probe)
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=list(flags))
            compiler.link_executable(objs, os.path.join(tmp, "probe"),
                                     extra_postargs=list(link_flags))
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    """Chooses optimization and OpenMP flags per compiler."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        if ctype == "msvc":
            compile_flags, openmp_flags, link_flags = ["/O2"], ["/openmp"], []
        else:
            # -fno-math-errno lets sqrt vectorize; it changes no result (errno is unread).
            # -ffp-contract=off: no fused multiply-adds, so a vectorized loop body and its
            # scalar tail round alike and results do not depend on where threads split.
            compile_flags = ["-O3", "-fno-math-errno", "-ffp-contract=off"]
            openmp_flags, link_flags = ["-fopenmp"], ["-fopenmp"]
            if os.environ.get("FASTNN_NATIVE") == "1":
                compile_flags.append("-march=native")
        if os.environ.get("FASTNN_NO_OPENMP") != "1" and compiler_accepts(
                self.compiler, openmp_flags, link_flags):
            compile_flags += openmp_flags
        else:
            link_flags = []
            print("fastnn: OpenMP not available, building single-threaded kernels",
                  file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags + list(ext.extra_compile_args)
            ext.extra_link_args = link_flags + list(ext.extra_link_args)
        super().build_extensions()


extensions = [
    Extension(
        "fastnn._kernels",
        sources=["fastnn/_kernels.pyx"] + [f"src_c/{name}.c" for name in KERNEL_SOURCES],
        include_dirs=["src_c", np.get_include()],
        depends=[f"src_c/{name}.h" for name in KERNEL_SOURCES]
        + ["src_c/common.h", "src_c/simd16.h", "src_c/real_begin.h", "src_c/real_end.h",
           "fastnn/_network.pxi"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(extensions, language_level=3),
    cmdclass={"build_ext": BuildExt},
)
