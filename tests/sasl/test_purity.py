"""The sasl package stays pure: stdlib plus itself, no I/O, no logging."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import smtpgate.sasl

PACKAGE = Path(smtpgate.sasl.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
ALLOWED_STDLIB = {
    "__future__",
    "base64",
    "binascii",
    "collections",
    "dataclasses",
    "enum",
    "hashlib",
    "hmac",
    "math",
    "re",
    "secrets",
    "stringprep",
    "struct",
    "time",
    "typing",
    "unicodedata",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_modules_found() -> None:
    assert {p.name for p in MODULES} >= {"base.py", "plain.py", "scram.py", "registry.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_only_stdlib_and_sasl(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        if top == "smtpgate":
            assert name.startswith("smtpgate.sasl"), name
        else:
            assert top in ALLOWED_STDLIB, name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_clock_read_only_in_cram_md5(path: Path) -> None:
    if path.name != "cram_md5.py":
        assert "time" not in _imports(path)
