"""A log guard for the whole test session: no password, hash or AUTH payload in a log.

``tests/conftest.py`` installs one ``LogGuard`` handler on the root logger when
the session starts and lets every ``smtpgate`` record through (level DEBUG),
whatever a test sets. Each record's message, arguments and traceback are
searched for the passwords the tests use (string constants that the test
sources assign to a name containing PASSWORD or SECRET, or pass as a
``password=`` argument), their base64 forms, and the markers of stored
hashes. A hit fails the session, naming the test and the logger.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import logging
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
MIN_LENGTH = 8  # shorter constants ("wrong", "x") would match ordinary words
MAX_LEAKS = 20  # reported; the search goes on but memory stays bounded
HASH_MARKERS = ("$argon2id$", "$argon2i$", "$2b$", "$6$rounds=", "SCRAM-SHA-256$", "SCRAM-SHA-1$")
_NAME = re.compile(r"PASSWORD|SECRET", re.IGNORECASE)
_KEYWORDS = {"password", "new_password"}


def passwords_in_tests(root: Path = TESTS) -> set[str]:
    """Every password-like string constant of the test sources under ``root``."""
    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            value: ast.expr | None = None
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and _NAME.search(t.id) for t in targets):
                    value = node.value
            elif isinstance(node, ast.keyword) and node.arg in _KEYWORDS:
                value = node.value
            if (isinstance(value, ast.Constant) and isinstance(value.value, str)
                    and len(value.value) >= MIN_LENGTH):
                found.add(value.value)
    return found


def needles(passwords: set[str]) -> list[str]:
    """What must never appear: each password, its base64 (LOGIN sends it so), hash markers."""
    out = [*HASH_MARKERS]
    for password in passwords:
        out.append(password)
        out.append(base64.b64encode(password.encode()).decode().rstrip("="))
    return out


class LogGuard(logging.Handler):
    def __init__(self, passwords: set[str]) -> None:
        super().__init__(logging.DEBUG)
        self.needles = needles(passwords)
        self.leaks: list[str] = []
        self.records = 0
        self.current = "(outside a test)"

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        parts = [str(record.msg), repr(record.args)]
        with contextlib.suppress(TypeError, ValueError):  # a bad format string
            parts.append(record.getMessage())
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        text = "\n".join(parts)
        for needle in self.needles:
            if needle in text and len(self.leaks) < MAX_LEAKS:
                self.leaks.append(f"{self.current}: {record.name}: contains {needle[:4]}...")
