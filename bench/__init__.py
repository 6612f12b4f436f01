"""fastnn's bench suite: fastnn against the tools its users would otherwise pick, on the
same work in the same run. Run `python -m bench --help` from the repository's root.

`python -m bench` puts the repository's root first on sys.path, so `import fastnn` would
find the source folder fastnn/ even where it was never built in place (a clone that was
`pip install`ed). Then the root is taken off the path again (this package is imported
already) and the installed fastnn is used; a folder built in place is used as it is.
"""
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _use_installed_fastnn_unless_built_here():
    built = glob.glob(os.path.join(ROOT, "fastnn", "_kernels*.so")) + \
        glob.glob(os.path.join(ROOT, "fastnn", "_kernels*.pyd"))
    if built or "fastnn" in sys.modules:
        return
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != ROOT]


_use_installed_fastnn_unless_built_here()
