"""``SMTPGATE_NO_MYPYC=1``: run the Python source of the modules setup.py compiled with
mypyc. For profiling and debugging (cProfile and tracebacks see every Python frame) and
for testing what a machine without a C compiler runs. Installed by ``smtpgate/__init__``."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType


class SourceFirst(importlib.abc.MetaPathFinder):
    """Finds an smtpgate module's ``.py`` before an extension of the same name."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("smtpgate.") or not path:
            return None
        source = Path(path[0]) / (fullname.rpartition(".")[2] + ".py")
        if not source.is_file():
            return None  # a package, or an extension with no source (_speedups)
        return importlib.util.spec_from_file_location(fullname, source)


def prefer_source() -> None:
    if not any(isinstance(finder, SourceFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, SourceFirst())
