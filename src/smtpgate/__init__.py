"""smtpgate: an authenticated SMTP submission server and embeddable library.

    from smtpgate import Server, load_config
    async with Server(load_config(path)) as server: ...

``Server`` and ``load_config`` are loaded on first use (PEP 562 module
``__getattr__``), so that importing the sans-I/O core alone
(``smtpgate.protocol``, ``smtpgate.sasl``) loads neither the server, TLS nor
the password-hashing libraries (tests/test_layers.py checks it).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if os.environ.get("SMTPGATE_NO_MYPYC"):  # the compiled modules' source instead (setup.py)
    from smtpgate.interpreted import prefer_source

    prefer_source()

if TYPE_CHECKING:
    from smtpgate.config.load import load_config
    from smtpgate.server.app import Server

__all__ = ["Server", "__version__", "load_config"]
__version__ = "0.1.0"

_LAZY = {"Server": "smtpgate.server.app", "load_config": "smtpgate.config.load"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
