"""Turn a bench/results/<stamp>.json into the markdown report (stdlib only).

    python3 bench/report.py bench/results/20261127-190000.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

UNITS = {
    "W0": "server CPU-ms per cold AUTH (lower is better)",
    "W1": "msgs / server CPU-s",
    "W2": "handshakes / server CPU-s",
    "W3": "KiB per idle conn (lower is better)",
    "W4": "MB/s wall (10^6 B)",
    "W5": "accepted msgs / server CPU-s",
}
WALL_UNITS = {"W1": "msgs/s wall", "W2": "handshakes/s wall", "W4": "MB/s wall",
              "W5": "accepted msgs/s wall"}
LOADGEN_LIMIT = 50.0
NOISE_LIMIT = 0.25


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:,.{max(digits, 1)}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}x"


def wall_rate(wname: str, rec: dict[str, Any]) -> float | None:
    lg = rec.get("loadgen")
    if not lg or rec.get("error") or not lg.get("wall_s"):
        return None
    if wname in ("W1", "W5"):
        return lg["messages"] / lg["wall_s"]
    if wname == "W2":
        return lg["handshakes"] / lg["wall_s"]
    if wname == "W4":
        return lg["bytes"] / lg["wall_s"] / 1e6
    return None


def collect(doc: dict[str, Any]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """server -> workload -> {value, wall, cpu, lg_pct} lists over repetitions."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for run in doc["runs"]:
        per = out.setdefault(run["server"], {})
        if run.get("peak_rss_kb"):
            per.setdefault("_server", {}).setdefault("peak_rss_kb", []).append(
                run["peak_rss_kb"])
        if run.get("rss_start_kb"):
            per.setdefault("_server", {}).setdefault("rss_start_kb", []).append(
                run["rss_start_kb"])
        for wname, rec in run.get("workloads", {}).items():
            slot = per.setdefault(wname, {})
            if rec.get("value") is not None:
                slot.setdefault("value", []).append(rec["value"])
            w = wall_rate(wname, rec)
            if w is not None:
                slot.setdefault("wall", []).append(w)
            if rec.get("server_cpu_s") is not None and not rec.get("error"):
                slot.setdefault("cpu", []).append(rec["server_cpu_s"])
                if wname == "W4" and rec.get("loadgen") and rec["server_cpu_s"] > 0:
                    slot.setdefault("mb_per_cpu", []).append(
                        rec["loadgen"]["bytes"] / rec["server_cpu_s"] / 1e6)
            if rec.get("delivered_per_s") is not None and not rec.get("error"):
                slot.setdefault("delivered", []).append(rec["delivered_per_s"])
                slot.setdefault("relayed_per_cpu", []).append(
                    rec["loadgen"]["messages"] / rec["server_cpu_drained_s"])
            lg = rec.get("loadgen") or {}
            if lg.get("cpu_pct_of_wall") is not None:
                slot.setdefault("lg_pct", []).append(lg["cpu_pct_of_wall"])
            if rec.get("other_load_cores") is not None:
                slot.setdefault("other", []).append(rec["other_load_cores"])
    return out


def _errors(doc: dict[str, Any]) -> list[str]:
    errs = []
    for run in doc["runs"]:
        if run.get("error"):
            errs.append(f"- {run['server']} rep {run['rep']}: {run['error']}")
        for wname, rec in run.get("workloads", {}).items():
            if rec.get("error"):
                errs.append(f"- {run['server']} rep {run['rep']} {wname}: {rec['error']}")
    return errs


def _get(data: dict[str, Any], server: str, wname: str, key: str) -> float | None:
    return _median(data.get(server, {}).get(wname, {}).get(key, []))


def _variant_lines(doc: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """The variants table; W5 is compared with W1 of Maildir and discard mode."""
    lines: list[str] = []
    variants = [v for v in doc.get("variants", []) if v in data]
    if variants:
        lines += ["", "## Variants", "",
                  "| variant | workload | per-CPU value | wall rate | vs smtpgate (same unit) "
                  "| note |",
                  "|---|---|---:|---:|---:|---|"]
        for v in variants:
            note = doc["servers"][v].get("note", "")
            base = "aiosmtpd" if v.startswith("aiosmtpd") else "smtpgate"
            if v == "smtpgate-w2-unpinned":
                base = "smtpgate-w1-unpinned"
            for wname in doc["servers"][v]["workloads"]:
                val = _get(data, v, wname, "value")
                wall = _get(data, v, wname, "wall")
                key = "wall" if v.endswith("unpinned") and wname != "W0" else "value"
                cmp = _ratio(_get(data, v, wname, key), _get(data, base, wname, key))
                versus = f"{cmp} vs {base} ({key})"
                if wname == "W5" or (v, wname) == ("smtpgate-queue", "W1"):  # vs Maildir, discard
                    versus = "; ".join(f"{_ratio(val, _get(data, b, 'W1', 'value'))} vs {b} W1"
                                       for b in ("smtpgate-maildir", "smtpgate"))
                lines.append(f"| {v} | {wname} ({UNITS[wname]}) | {_fmt(val)} | {_fmt(wall)} "
                             f"| {versus} | {note} |")
                if wname == "W5":
                    lines.append(
                        f"| {v} | W5 end to end | "
                        f"{_fmt(_get(data, v, wname, 'relayed_per_cpu'))} accepted and relayed "
                        f"msgs / server CPU-s | {_fmt(_get(data, v, wname, 'delivered'))} "
                        "delivered msgs/s wall | | queue empty, from the load's start |")
    return lines


def render(doc: dict[str, Any]) -> str:
    data = collect(doc)
    m = doc["machine"]
    main = doc["main"]
    others = [s for s in main if s != "aiosmtpd"]
    vs_node = "smtpgate" in main and "node" in main
    lines = [
        f"# smtpgate bench — {m['date']}",
        "",
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, Linux {m['kernel']}; "
        f"server on CPU {m['server_cpus']}, load generator on CPU {m['loadgen_cpus']}. "
        f"Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}.",
        "",
        f"Median of {doc['reps']} repetition(s)"
        f"{' (QUICK smoke run: small counts)' if doc['quick'] else ''}; "
        "ratios are to aiosmtpd, and smtpgate's to node "
        "(higher is better except W0 and W3).",
        "",
        "| workload | unit | " + " | ".join(main) + " | "
        + " | ".join(f"{s}/aiosmtpd" for s in others)
        + (" | smtpgate/node" if vs_node else "") + " |",
        "|---|---|" + "---:|" * (len(main) + len(others) + vs_node),
    ]

    def ratios(vals: dict[str, float | None]) -> str:
        cells = [_ratio(vals[s], vals.get("aiosmtpd")) for s in others]
        if vs_node:
            cells.append(_ratio(vals["smtpgate"], vals["node"]))
        return " | ".join(cells)

    for wname, unit in UNITS.items():
        vals = {s: _get(data, s, wname, "value") for s in main}
        digits = 1 if wname in ("W0", "W3") else 0
        lines.append(
            f"| {wname} | {unit} | " + " | ".join(_fmt(vals[s], digits) for s in main) + " | "
            + ratios(vals) + " |")
    for wname, unit in WALL_UNITS.items():
        if wname == "W4":
            continue
        vals = {s: _get(data, s, wname, "wall") for s in main}
        lines.append(
            f"| {wname} | {unit} | " + " | ".join(_fmt(vals[s]) for s in main) + " | "
            + ratios(vals) + " |")
    vals = {s: _get(data, s, "W4", "mb_per_cpu") for s in main}
    lines.append(
        "| W4 | MB / server CPU-s | " + " | ".join(_fmt(vals[s]) for s in main) + " | "
        + ratios(vals) + " |")
    lines += ["", "Workloads:", ""]
    lines += [f"- {k}: {w['title']}" for k, w in doc["workloads"].items()]

    lines += ["", "## Server CPU seconds and memory (medians)", "",
              "| server | W0 CPU-s | W1 CPU-s | W2 CPU-s | W3 CPU-s | W4 CPU-s "
              "| RSS at start MiB | peak RSS (VmHWM) MiB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in [*main, *doc.get("variants", [])]:
        if s not in data:
            continue
        cpu = [_fmt(_get(data, s, w, "cpu"), 2) for w in ("W0", "W1", "W2", "W3", "W4")]
        start = _get(data, s, "_server", "rss_start_kb")
        hwm = _get(data, s, "_server", "peak_rss_kb")
        lines.append(f"| {s} | " + " | ".join(cpu) + f" | {_fmt(start and start / 1024, 1)} "
                     f"| {_fmt(hwm and hwm / 1024, 1)} |")

    lines += _variant_lines(doc, data)

    lines += ["", "## Load generator check", "",
              f"Highest load-generator CPU share of wall time per workload "
              f"(must stay under {LOADGEN_LIMIT:.0f}%):", ""]
    for wname in UNITS:
        pcts = [p for s in data for p in data[s].get(wname, {}).get("lg_pct", [])]
        if pcts:
            flag = "" if max(pcts) < LOADGEN_LIMIT else "  **over the limit: numbers are suspect**"
            lines.append(f"- {wname}: {max(pcts):.1f}%{flag}")
    others_load = [o for s in data for w in data[s].values() for o in w.get("other", [])]
    if others_load:
        busy = sum(1 for o in others_load if o > NOISE_LIMIT)
        lines += ["", f"Other load on the machine during the workloads (CPU used by neither the "
                  f"server nor the load generator, in cores): median "
                  f"{statistics.median(others_load):.2f}, max {max(others_load):.2f}; "
                  f"{busy} of {len(others_load)} workload runs above {NOISE_LIMIT} cores"
                  + (" — wall-clock figures (W4, wall rates) are noisy; the per-CPU ones "
                     "much less so." if busy else ".")]
    errs = _errors(doc)
    if errs:
        lines += ["", "## Errors", "", *errs]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip())
        return 2
    doc = json.loads(Path(argv[1]).read_text())
    print(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
