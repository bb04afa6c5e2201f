"""Layering (README.md, Design): dependencies flow one way between packages and
never in a cycle inside one; the sans-I/O core stays pure and imports alone."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
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
    "ops": {"config"},
    "auth": {"sasl", "credentials", "policy", "protocol", "ops"},
    "delivery": {"config", "protocol"},
    "relay": {"config", "delivery", "ops", "protocol"},
    "state": {"config", "policy"},
    "admin": {"auth", "config", "credentials", "delivery", "policy", "protocol", "relay", "sasl"},
    "server": {"admin", "auth", "config", "credentials", "delivery", "ops", "policy", "protocol",
               "relay", "sasl", "state"},
    "cli": {"admin", "auth", "config", "credentials", "delivery", "ops", "policy", "protocol",
            "sasl", "server", "relay"},
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


# --- no import cycle between the modules of one package --------------------------------------

def module_name(path: Path) -> str:
    parts = ["smtpgate", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` imports anywhere: at the top, inside a
    function or under TYPE_CHECKING alike (each is a dependency of the design)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return (found & known) - {here}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_cycle_inside_package(package: str) -> None:
    paths = sorted((SRC / package).rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): imported_modules(p, modules) for p in paths}
    assert cycles(graph) == []


# --- the sans-I/O core imports alone ---------------------------------------------------------

# Third-party and heavy modules the core must never load: hashing, TLS, storage.
FORBIDDEN = ["argon2", "OpenSSL", "cryptography", "sqlite3", "_sqlite3", "bcrypt", "passlib",
             "scramp", "ssl", "asyncio"]
ISOLATED = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    class Forbid:  # the forbidden modules cannot be imported, installed or not
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                raise ImportError(f"{name} may not be imported by the core")
            return None

    sys.meta_path.insert(0, Forbid())
    sys.path.insert(0, SRC_PARENT)
    before = set(sys.modules)
    package = importlib.import_module(PACKAGE)
    for info in pkgutil.walk_packages(package.__path__, PACKAGE + "."):
        importlib.import_module(info.name)
    loaded = sorted(set(sys.modules) - before)
    print(json.dumps(loaded))
    """
)


def import_isolated(package: str, src: Path = SRC) -> subprocess.CompletedProcess[str]:
    """Import every module of ``package`` in a fresh interpreter with FORBIDDEN blocked."""
    script = (f"FORBIDDEN = {FORBIDDEN!r}\nSRC_PARENT = {str(src.parent)!r}\n"
              f"PACKAGE = {package!r}\n{ISOLATED}")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False, timeout=60)


@pytest.mark.parametrize("package", ["smtpgate.protocol", "smtpgate.sasl"])
def test_core_imports_alone(package: str) -> None:
    """Every module of the package imports with the heavy dependencies made
    unimportable, and loads only the standard library and its own package."""
    done = import_isolated(package)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert package in loaded
    own = ("smtpgate", package, "smtpgate__mypyc")  # the last: mypyc's code for smtpgate
    foreign = [name for name in loaded if name not in own
               and not name.startswith(package + ".")
               and name.split(".")[0] not in sys.stdlib_module_names]
    assert foreign == [], foreign
    assert not [name for name in loaded if name.split(".")[0] in FORBIDDEN]


def test_forbidding_works() -> None:
    """The check above can fail: the server package needs what the core may not load."""
    done = import_isolated("smtpgate.server")
    assert done.returncode != 0
    assert "may not be imported by the core" in done.stderr
