"""Fault containment for asyncio callbacks: a bug ends one client, not the server.

An exception escaping a Protocol callback would reach asyncio's default
handler, which logs a traceback (with whatever client data the exception
carries) and drops the socket without a reply. ``guarded`` hands it to the
owner's ``crash`` instead, which answers and logs as it sees fit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Crashable(Protocol):
    def crash(self, exc: BaseException) -> None: ...


C = TypeVar("C", bound=Crashable)


def guarded(method: Callable[Concatenate[C, P], T]) -> Callable[Concatenate[C, P], T | None]:
    """Wrap a method so that an ``Exception`` it raises goes to ``self.crash``."""

    def run(self: C, /, *args: P.args, **kwargs: P.kwargs) -> T | None:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            self.crash(exc)
            return None

    return run
