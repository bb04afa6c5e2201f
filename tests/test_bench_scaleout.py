"""bench/scaleout.py writes smtpgate configs that smtpgate's own loader accepts.

The bench only reports what it measured; these checks keep its generated
instance configs in step with the config schema (docs/scaling.md), so a renamed
key fails here rather than mid-benchmark.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from smtpgate.config.load import load_config

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_scaleout() -> ModuleType:
    if "bench_scaleout" in sys.modules:
        return sys.modules["bench_scaleout"]
    sys.path.insert(0, str(BENCH))  # scaleout imports runner, its neighbour
    spec = importlib.util.spec_from_file_location("bench_scaleout", BENCH / "scaleout.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_scaleout"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_instance_behind_haproxy_takes_proxy_header_and_shares_state(tmp_path: Path) -> None:
    scaleout = load_scaleout()
    path = tmp_path / "a.toml"
    path.write_text(scaleout.instance_config(
        tmp_path / "data", 2525, "postgresql://smtpgate@127.0.0.1:5432/postgres",
        "redis://127.0.0.1:6379/0"))
    config = load_config(path)
    listener = config.listeners[0]
    assert (listener.port, listener.proxy_protocol) == (2525, True)
    assert listener.trusted_proxies == ("127.0.0.0/8",)
    assert config.state.url == "redis://127.0.0.1:6379/0"
    assert config.store.url == "postgresql://smtpgate@127.0.0.1:5432/postgres"


def test_direct_instance_has_no_proxy_header_and_no_shared_state(tmp_path: Path) -> None:
    scaleout = load_scaleout()
    path = tmp_path / "direct.toml"
    path.write_text(scaleout.instance_config(tmp_path / "data", 2526,
                                             f"sqlite:///{tmp_path}/users.db", None))
    config = load_config(path)
    assert config.listeners[0].proxy_protocol is False
    assert not config.state.url
    assert config.store.url == f"sqlite:///{tmp_path}/users.db"


def test_report_names_every_share_and_failed_rows() -> None:
    scaleout = load_scaleout()
    rec = {"wall_rate": 100.0, "per_smtpgate_cpu_s": 2000.0, "per_server_side_cpu_s": 1000.0,
           "share": {"smtpgate": 0.5, "haproxy": 0.25, "redis": 0.15, "postgresql": 0.1}}
    doc = {"runs": [{"topology": "ha2", "results": {"W2": rec}},
                    {"topology": "ha2-pg", "results": {}, "error": "initdb: no space"}]}
    lines = scaleout.render(doc).splitlines()
    assert lines[2] == "| ha2 | W2 | 100 | 2000 | 1000 | 50% | 25% | 15% | 10% |"
    assert "error: initdb: no space" in lines[3]
