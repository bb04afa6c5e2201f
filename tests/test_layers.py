"""Dependencies flow one way (ARCHITECTURE.md practice 12), and the session stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "smtpgate"

# What each package may import from smtpgate (besides itself).
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "sasl": set(),
    "policy": set(),
    "credentials": {"sasl"},
    "config": {"sasl"},
    "auth": {"sasl", "credentials", "policy", "protocol"},
    "delivery": {"config", "protocol"},
    "relay": {"config", "delivery", "protocol"},
    "server": {"auth", "config", "credentials", "delivery", "policy", "protocol", "sasl"},
    "cli": {"auth", "config", "credentials", "delivery", "policy", "protocol", "sasl", "server",
            "relay"},
}
# The sans-I/O core never touches these (practice 1).
PURE_MODULES = ["protocol", "sasl", "policy/mechanisms.py"]
IMPURE = {"asyncio", "ssl", "socket", "os", "time", "selectors", "threading"}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_lower_layers(package: str) -> None:
    for path in (SRC / package).rglob("*.py"):
        for name in imports(path):
            parts = name.split(".")
            if parts[0] != "smtpgate" or len(parts) < 2 or parts[1] == package:
                continue
            assert parts[1] in ALLOWED[package], f"{path.relative_to(SRC)} imports {name}"


def test_every_package_is_listed() -> None:
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)


@pytest.mark.parametrize("where", PURE_MODULES)
def test_pure_core_does_no_io(where: str) -> None:
    target = SRC / where
    paths = [target] if target.is_file() else list(target.rglob("*.py"))
    for path in paths:
        bad = {name.split(".")[0] for name in imports(path)} & IMPURE
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"
