"""The per-command path compiled by mypyc (setup.py, docs/performance.md "Compiled"):
built where we ship, and the same source still runs as Python (SMTPGATE_NO_MYPYC=1)."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def compiled_modules() -> list[str]:
    """setup.py's COMPILED list, as module names."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    [paths] = [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and any(isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets)]
    assert isinstance(paths, ast.List)
    return [str(ast.literal_eval(p)).removeprefix("src/").removesuffix(".py").replace("/", ".")
            for p in paths.elts]


def test_the_list_names_real_modules() -> None:
    modules = compiled_modules()
    assert "smtpgate.protocol.session" in modules and "smtpgate.server.connection" in modules
    for module in modules:
        assert (ROOT / "src" / (module.replace(".", "/") + ".py")).is_file(), module


@pytest.mark.skipif(bool(os.environ.get("SMTPGATE_NO_MYPYC")), reason="source asked for")
def test_compiled_where_we_ship() -> None:
    # gcc and mypy are on every machine we build on; a silent fallback halves the speed.
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        pytest.skip("only CI must have built them")
    interpreted = [m for m in compiled_modules()
                   if not str(importlib.import_module(m).__file__).endswith(".so")]
    assert interpreted == [], "not compiled: run `make test-venv` with gcc installed"


def test_no_mypyc_runs_the_source() -> None:
    script = ("import importlib, json, sys\n"
              "print(json.dumps([importlib.import_module(m).__file__ for m in sys.argv[1:]]))")
    env = {**os.environ, "SMTPGATE_NO_MYPYC": "1"}
    done = subprocess.run([sys.executable, "-c", script, *compiled_modules()], env=env,
                          capture_output=True, text=True, check=True, timeout=60)
    files = json.loads(done.stdout)
    assert files and all(str(f).endswith(".py") for f in files), files
