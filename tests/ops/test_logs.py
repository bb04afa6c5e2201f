"""[log] format and user_names, the AUTH failure line, and the session-wide log guard."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Literal

import aiosmtplib
import pytest

from smtpgate.ops import logs
from tests.attacks.subproc import ServeProcess
from tests.e2e.conftest import PASSWORD, ServerFactory
from tests.log_guard import LogGuard, passwords_in_tests

FAILURE: dict[str, Any] = {"session": "s1", "listener": "127.0.0.1:2587", "ip": "192.0.2.7",
           "mechanism": "PLAIN", "reply": 535, "outcome": "invalid"}


def lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if "auth failed" in line]


def test_text_line_has_every_field_in_order(log_stream: io.StringIO, tmp_path: Path) -> None:
    logs.configure("text", "plain", tmp_path, stream=log_stream, level=logging.INFO)
    logs.auth_failure(**FAILURE, login="alice", known=True)
    [line] = lines(log_stream)
    assert line.split(" ", 5)[3:5] == ["INFO", "smtpgate.auth:"]  # date time pid level name
    assert line.endswith(
        "auth failed session=s1 listener=127.0.0.1:2587 ip=192.0.2.7 mechanism=PLAIN "
        "reply=535 outcome=invalid user=alice"
    )


def test_json_line_is_one_object_with_the_fields(log_stream: io.StringIO, tmp_path: Path) -> None:
    logs.configure("json", "plain", tmp_path, stream=log_stream, level=logging.INFO)
    logs.auth_failure(**FAILURE, login="alice", known=True)
    logging.getLogger("smtpgate.server").info("listening on %s", "127.0.0.1:2587")
    first, second = (json.loads(line) for line in log_stream.getvalue().splitlines())
    assert {k: first[k] for k in FAILURE} == FAILURE
    assert first["message"] == "auth failed" and first["user"] == "alice"
    assert first["level"] == "INFO" and first["logger"] == "smtpgate.auth"
    assert first["time"][:4].isdigit() and first["time"][10] == "T"
    assert second["message"] == "listening on 127.0.0.1:2587"


def test_a_name_cannot_forge_a_field(log_stream: io.StringIO, tmp_path: Path) -> None:
    logs.configure("text", "plain", tmp_path, stream=log_stream, level=logging.INFO)
    logs.auth_failure(**FAILURE, login='x ip=10.9.9.9 "\n', known=True)
    [line] = log_stream.getvalue().splitlines()
    assert " ip=192.0.2.7 " in line
    assert line.endswith('user="x\\u0020ip=10.9.9.9\\u0020\\"\\n"')  # no space, no newline


def test_hashed_names_are_stable_per_name_and_key(log_stream: io.StringIO, tmp_path: Path) -> None:
    logs.configure("text", "hashed", tmp_path, stream=log_stream)
    alice = logs.user_field("alice", known=True)
    assert alice is not None and alice.startswith("h:") and "alice" not in alice
    assert logs.user_field("bob", known=True) != alice
    logs.configure("text", "hashed", tmp_path, stream=log_stream)  # a restart: same key file
    assert logs.user_field("alice", known=True) == alice
    assert (tmp_path / logs.KEY_FILE).stat().st_mode & 0o777 == 0o600
    (tmp_path / "other").mkdir()
    logs.configure("text", "hashed", tmp_path / "other", stream=log_stream)
    assert logs.user_field("alice", known=True) != alice  # another installation, another key


def test_omit_and_unknown_names(log_stream: io.StringIO, tmp_path: Path) -> None:
    logs.configure("text", "plain", tmp_path, stream=log_stream)
    unknown = logs.user_field(PASSWORD, known=False)  # a password typed as the user name
    assert unknown is not None and unknown.startswith("unknown:h:") and PASSWORD not in unknown
    logs.configure("text", "omit", tmp_path, stream=log_stream, level=logging.INFO)
    assert logs.user_field("alice", known=True) is None
    logs.auth_failure(**FAILURE, login="alice", known=True)
    assert "user=" not in log_stream.getvalue() and "alice" not in log_stream.getvalue()


async def test_server_logs_one_line_per_failed_auth(
    running: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await running()
    host, port = server.addresses[0]  # STARTTLS: PLAIN and LOGIN need TLS
    caplog.set_level(logging.INFO, logger="smtpgate")
    async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=True,
                               validate_certs=False) as smtp:
        await smtp.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await smtp.auth_plain("alice", "not the password")
    failed = [r for r in caplog.records if r.getMessage().startswith("auth failed")]
    assert len(failed) == 1, [r.getMessage() for r in caplog.records]
    fields = getattr(failed[0], logs.FIELDS)
    assert fields["listener"] == server.config.listeners[0].address
    assert fields["ip"] == "127.0.0.1" and fields["reply"] == 535
    assert fields["user"] == "alice" and fields["mechanism"] == "PLAIN"


# -- threaded: formatting and writing off the calling thread ----------------------------------


class _Probe:
    """An argument that notes the thread that formats it."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def __str__(self) -> str:
        self.threads.append(threading.current_thread().name)
        return "probe"


def message(line: str, fmt: str) -> str:
    """The message of a text or JSON line (an event's fields follow its name in text)."""
    if fmt == "json":
        data = json.loads(line)
        return str(data["message"]) + (f" user={data['user']}" if "user" in data else "")
    return line.split(": ", 1)[1]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_threaded_lines_are_formatted_in_the_listener_and_flushed_by_stop(
    log_stream: io.StringIO, tmp_path: Path, fmt: Literal["text", "json"]
) -> None:
    logs.configure(fmt, "plain", tmp_path, stream=log_stream, level=logging.INFO,
                   threaded=True)
    probe = _Probe()
    logging.getLogger("smtpgate.test").info("first %s", probe)
    logs.auth_failure(**FAILURE, login="alice", known=True)
    for n in range(200):
        logging.getLogger("smtpgate.test").info("line %d", n)
    logs.stop_thread()  # every queued line is written before it returns
    out = log_stream.getvalue().splitlines()
    assert len(out) == 202
    assert message(out[0], fmt) == "first probe"
    assert message(out[1], fmt).startswith("auth failed")
    assert message(out[1], fmt).endswith("user=alice")
    assert message(out[-1], fmt) == "line 199"
    # The guard (tests/conftest.py) formats it here too; the handler did it in its thread.
    assert [t for t in probe.threads if t != threading.current_thread().name]
    logging.getLogger("smtpgate.test").info("after the stop")  # written directly now
    assert message(log_stream.getvalue().splitlines()[-1], fmt) == "after the stop"


def test_reconfigure_keeps_threaded_mode_and_loses_nothing(
    log_stream: io.StringIO, tmp_path: Path
) -> None:
    logs.configure("text", "plain", tmp_path, stream=log_stream, level=logging.INFO,
                   threaded=True)
    logging.getLogger("smtpgate.test").info("before the reload")
    logs.configure("json", "plain", tmp_path, stream=log_stream, level=logging.INFO)  # SIGHUP
    assert logs._Thread.listener is not None  # still threaded
    logging.getLogger("smtpgate.test").info("after the reload")
    logs.stop_thread()
    first, second = log_stream.getvalue().splitlines()
    assert first.endswith("before the reload")
    assert json.loads(second)["message"] == "after the reload"


def test_the_text_line_is_the_standard_formatter_s_line() -> None:
    """``TextFormatter.format`` builds the line in one f-string: the same text as
    logging's own ``Formatter`` with ``TEXT_FORMAT``, for every form of arguments."""
    standard, ours = logging.Formatter(logs.TEXT_FORMAT), logs.TextFormatter()
    cases: list[tuple[object, Any]] = [
        ("session=%s connect from %s", ("abc", "[127.0.0.1]:4000")),
        ("no arguments, a %% stays", ()),
        ("%(who)s by name", ({"who": "alice"},)),
        (ValueError("not a string"), ()),
    ]
    for msg, args in cases:
        made = logs._LeanRecord("smtpgate.x", logging.WARNING, "f", 1, msg, args, None)
        assert ours.format(made) == standard.format(made)
        plain = logging.LogRecord("smtpgate.x", logging.INFO, "f", 1, msg, args, None)
        assert ours.format(plain) == standard.format(plain)


def test_lean_records_carry_what_standard_records_carry() -> None:
    args = ("a", 1)
    lean = logs._LeanRecord("smtpgate.x", logging.INFO, "f", 7, "x %s %d", args, None, "fn")
    plain = logging.LogRecord("smtpgate.x", logging.INFO, "f", 7, "x %s %d", args, None, "fn")
    assert set(vars(plain)) <= set(vars(lean))
    for name in ("name", "msg", "args", "levelname", "levelno", "lineno", "funcName",
                 "exc_info", "exc_text", "stack_info", "process"):
        assert getattr(lean, name) == getattr(plain, name), name
    assert abs(lean.created - plain.created) < 1 and lean.getMessage() == "x a 1"
    assert lean.msecs == int((lean.created - int(lean.created)) * 1000)


def test_a_lean_record_made_in_a_forked_child_names_the_child() -> None:
    """The process id is kept per process: a worker is a fork of the supervisor."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        made = logs._LeanRecord("smtpgate.x", logging.INFO, "f", 1, "m", (), None)
        os.write(writer, f"{made.process} {os.getpid()}".encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        logged, actual = pipe.read().split()
    os.waitpid(pid, 0)
    assert logged == actual == str(pid)


# -- the guard of tests/conftest.py ---------------------------------------------------------


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("smtpgate.x", logging.INFO, __file__, 1, message, args, None)


def test_guard_finds_passwords_their_base64_and_hashes() -> None:
    guard = LogGuard({"hunter2-hunter2"})
    guard.handle(record("user=alice ok"))
    assert guard.leaks == []
    guard.handle(record("got %s", "hunter2-hunter2"))
    guard.handle(record("line " + base64.b64encode(b"hunter2-hunter2").decode()))
    guard.handle(record("hash $argon2id$v=19$m=65536"))
    assert len(guard.leaks) == 3


def test_guard_knows_the_suite_passwords_and_is_installed() -> None:
    assert {PASSWORD, "not the password"} <= passwords_in_tests()
    guards = [h for h in logging.getLogger().handlers if isinstance(h, LogGuard)]
    assert len(guards) == 1
    seen = guards[0].records
    logging.getLogger("smtpgate.test").debug("a record the guard must see")
    assert guards[0].records == seen + 1


# -- a real server: the last lines are written before a worker exits ------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_keeps_the_final_log_line_of_every_worker(tmp_path: Path, workers: int) -> None:
    """Workers log through a queue and a thread (ops/logs.py); a worker ends with
    ``os._exit``, which would drop what is still queued unless the thread is drained."""
    limits = "[limits]\nmax_connections_per_ip = 500\n"
    serve = ServeProcess(tmp_path, workers=workers, extra_toml=limits)
    serve.start()
    clients: list[socket.socket] = []
    try:
        pids = serve.workers(workers) if workers > 1 else [serve.pid]

        def lines_of(pid: int) -> list[str]:  # "date time pid level logger: message"
            return [line for line in serve.output().splitlines()
                    if line.split(" ", 3)[2:3] == [str(pid)]]

        deadline = time.monotonic() + 20
        while not all(any("listening on" in line for line in lines_of(pid)) for pid in pids):
            assert time.monotonic() < deadline, serve.output()
            time.sleep(0.05)
        # Idle clients: each is told 421 and logged at the stop, a burst of lines just
        # before the worker exits.
        clients = [socket.create_connection(serve.address, timeout=10) for _ in range(150)]
        for sock in clients:
            assert sock.recv(512).startswith(b"220 ")
    finally:
        code = serve.stop()
        for sock in clients:
            sock.close()
    assert code == 0, serve.output()
    for pid in pids:
        assert lines_of(pid)[-1].endswith("INFO smtpgate: stopped"), serve.output()
