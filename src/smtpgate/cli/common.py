"""What every ``smtpgate`` command module shares: exit codes, CliError, the store.

``cli/main.py`` and ``cli/device.py`` both import this module (never each other).
``with_store`` opens the credential store named by ``[store] url``, runs one
action and closes it, turning every error a user can fix into one ``CliError``.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from smtpgate.config.schema import KNOWN_MECHANISMS, Config

if TYPE_CHECKING:
    from smtpgate.credentials.base import CredentialStore

T = TypeVar("T")

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def mechanism_order(names: frozenset[str]) -> list[str]:
    known = [m for m in KNOWN_MECHANISMS if m in names]
    return known + sorted(names - set(known))


def cram_md5_enabled(config: Config) -> bool:
    """Keep a CRAM-MD5 secret: enabled in [auth], or offered by a device listener."""
    return "CRAM-MD5" in config.auth.mechanisms or any(
        listener.offer_cram_md5 for listener in config.listeners
    )


def warn_disabled(mechanisms: list[str] | None, config: Config) -> None:
    for name in mechanisms or ():
        upper = name.upper()
        if upper in KNOWN_MECHANISMS and upper not in config.auth.mechanisms:
            print(f"smtpgate: warning: {upper} is not in auth.mechanisms", file=sys.stderr)


def with_store(
    config: Config, action: Callable[[CredentialStore], Awaitable[T]], *, kind: str = "user"
) -> T:
    """Open the store, run ``action``, close it; store and input errors -> CliError
    (``kind`` names the account in them: "user", "admin")."""
    import asyncio

    from smtpgate.credentials.base import StoreUnavailable, UnknownUser, UserExists
    from smtpgate.credentials.open import open_store

    async def run() -> T:
        store = open_store(config.store.url, config.data_dir)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except UnknownUser as exc:
        raise CliError(f"unknown {kind} {exc}") from None
    except UserExists as exc:
        raise CliError(f"{kind} {exc} already exists; nothing changed") from None
    except StoreUnavailable as exc:
        raise CliError(f"{kind} store unavailable: {exc}") from None
    except ValueError as exc:  # bad name, mechanism, identity; PasswdFileError
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{exc.filename or 'store'}: {exc.strerror or exc}") from None
