"""``smtpgate serve`` with ``workers = 2`` as a real process, shaped like a Server for tests.

``Cluster`` writes the test's configuration (the dict of ``conftest.config_data``)
to a TOML file, runs the ``smtpgate serve`` command on it -- a supervisor and
two forked workers sharing each port -- and offers what the end-to-end tests
read from an in-process ``Server``: ``config``, ``addresses`` and ``store``
(the same SQLite file, opened from the test process).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from smtpgate.config.load import load_config
from smtpgate.credentials.open import open_store

START_TIMEOUT = 20.0
# The smtpgate command of the interpreter running the tests.
SMTPGATE = [sys.executable, "-c", "import sys; from smtpgate.cli.main import main; "
            "sys.exit(main(sys.argv[1:]))"]


def to_toml(data: dict[str, Any]) -> str:
    """The few TOML shapes a test configuration uses: scalars, tables, arrays of tables."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((f"[{key}]", value))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            tables += [(f"[[{key}]]", item) for item in value]
        else:
            lines.append(f"{key} = {_value(value)}")
    for header, table in tables:
        lines.append(header)
        lines += [f"{key} = {_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(value)  # numbers, and strings as TOML basic strings


class Cluster:
    def __init__(self, root: Path, data: dict[str, Any], *, workers: int = 2) -> None:
        number = len(list(root.glob("cluster-*.toml")))
        self.path = root / f"cluster-{number}.toml"
        self.path.write_text(to_toml({**data, "server": {"workers": workers}}))
        self.config = load_config(self.path)
        self.addresses = [(lst.host, lst.port) for lst in self.config.listeners]
        self.store = open_store(self.config.store.url, self.config.data_dir)
        self.log = root / f"cluster-{number}.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "SMTPGATE_LOG_LEVEL": "WARNING"}
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen([*SMTPGATE, "--config", str(self.path), "serve"],
                                         stderr=err, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        for address in self.addresses:
            while not _accepts(address):
                assert self.proc.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, "smtpgate serve did not start listening"
                time.sleep(0.05)

    async def stop(self, grace: float = 1.0) -> None:
        await self.store.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        assert self.proc.returncode == 0, self.log.read_text()


def _accepts(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False
