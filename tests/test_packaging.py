"""Packaging says what runs: pyproject's dependencies are what src/ imports, the test
extra covers what tests/ imports, and the Makefile's DEB_PACKAGES installs every tool
the tests run (tests/tools.py)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.tools import DEBIAN_PACKAGE

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OURS = {"smtpgate", "tests", "bench", "__future__"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def requirement_names(requirements: list[str]) -> set[str]:
    return {_normal(re.split(r"[\s<>=!~;\[]", text, maxsplit=1)[0]) for text in requirements}


def third_party_imports(folder: Path) -> set[str]:
    """The distributions whose modules any file under ``folder`` imports, at any depth."""
    modules: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    modules -= OURS | set(sys.stdlib_module_names)
    known = packages_distributions()
    # A module of a package that is not installed (atheris, outside `make fuzz`) is
    # taken to be its own distribution's name.
    return {_normal(dist) for module in modules for dist in known.get(module, [module])}


def test_runtime_dependencies_are_exactly_what_src_imports() -> None:
    runtime = requirement_names(PROJECT["dependencies"])
    optional = requirement_names(PROJECT["optional-dependencies"]["uvloop"])
    used = third_party_imports(ROOT / "src")
    assert runtime - used == set(), "declared but never imported by src/"
    assert used - runtime - optional == set(), "imported by src/ but not declared"


def test_scramp_is_for_tests_only() -> None:
    assert "scramp" not in requirement_names(PROJECT["dependencies"])
    assert "scramp" not in third_party_imports(ROOT / "src")
    assert "scramp" in requirement_names(PROJECT["optional-dependencies"]["test"])


def test_test_extra_covers_what_tests_import() -> None:
    extras = PROJECT["optional-dependencies"]
    available = requirement_names(PROJECT["dependencies"]) | requirement_names(extras["test"])
    fuzz = requirement_names(extras["fuzz"])
    tests = ROOT / "tests"
    assert third_party_imports(tests) - fuzz - available == set()
    assert third_party_imports(tests / "fuzz") - available <= fuzz


def test_makefile_installs_every_debian_package_the_tests_name() -> None:
    # `make -s deb-packages` is what the README tells a reader to run.
    done = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "deb-packages"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert set(DEBIAN_PACKAGE.values()) <= set(done.stdout.split())
