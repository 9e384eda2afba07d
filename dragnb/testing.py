"""Run code as on a machine without some packages: the tests and the bench's torch-free child processes.

``UNIMPORTABLE_SRC`` defines ``make_unimportable(*names)``: top-level packages ``names`` look absent from then on
(every meta-path finder answers None, so import raises ModuleNotFoundError). It is kept as source text so that a
child started with ``python -c``, which may not import dragnb, runs this same code. This module imports nothing
beyond the standard library.
"""

from __future__ import annotations

UNIMPORTABLE_SRC = """
import sys

def make_unimportable(*names):
    class Absent:
        def __init__(self, inner):
            self.inner = inner

        def find_spec(self, name, path=None, target=None):
            return None if name.split(".")[0] in names else self.inner.find_spec(name, path, target)

        def __getattr__(self, attr):
            return getattr(self.inner, attr)

    sys.meta_path[:] = [Absent(f) for f in sys.meta_path]
"""


def make_unimportable(*names: str) -> None:
    """Make the top-level packages ``names`` look absent in this process (see ``UNIMPORTABLE_SRC``)."""
    ns: dict = {}
    exec(UNIMPORTABLE_SRC, ns)
    ns["make_unimportable"](*names)
