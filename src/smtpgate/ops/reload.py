"""Which configuration keys SIGHUP reloads, and which need a restart.

Theory of operation
-------------------
On SIGHUP every process reads the configuration file again
(``server/run.py``). A few keys take effect in the running processes; they
are listed in ``RELOADABLE``. Everything else is bound into listening
sockets, the shared connection table, forked workers or objects built once
at start, so a change to it is reported (``restart_needed``) and ignored
until the next start. Users and passwords are not configuration: the store
is read at every AUTH, so changes to them need neither.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from smtpgate.config.schema import Config

# Keys a SIGHUP applies to new connections and new log lines.
RELOADABLE = ("tls.cert", "tls.key", "log.format", "log.user_names")


def flatten(config: Config) -> dict[str, Any]:
    """Every key of ``config`` as ``section.key`` -> value (listeners as one key)."""
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        name = "import" if f.name == "import_" else f.name
        if name == "listeners":
            flat["listener"] = value
        elif dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                flat[f"{name}.{sub.name}"] = getattr(value, sub.name)
        else:
            flat[name] = value
    return flat


def restart_needed(running: Config, new: Config) -> list[str]:
    """The keys that differ between ``running`` and ``new`` and that SIGHUP cannot apply."""
    old_keys, new_keys = flatten(running), flatten(new)
    return [
        key for key in old_keys
        if key not in RELOADABLE and old_keys[key] != new_keys.get(key)
    ]


def restart_keys(config: Config) -> list[str]:
    """Every key of ``config`` that needs a restart to change (for ``check-config``)."""
    return [key for key in flatten(config) if key not in RELOADABLE]


def describe(config: Config) -> list[str]:
    """Two lines for ``check-config``: what SIGHUP reloads, what needs a restart.

    A section whose keys all need a restart is written ``section.*``.
    """
    restart: list[str] = []
    for key in restart_keys(config):
        section = key.partition(".")[0] if "." in key else ""
        whole = section and not any(k.startswith(section + ".") for k in RELOADABLE)
        name = f"{section}.*" if whole else key
        if name not in restart:
            restart.append(name)
    return [
        f"reload (SIGHUP): {', '.join(RELOADABLE)}; users and passwords: at the next AUTH",
        f"restart needed: {', '.join(restart)}",
    ]
