"""``make bench``: a quick profile of every benchmark, under 15 minutes on
the project's 2-core machine, then one table: each figure beside its A/A
control (the same measurement of no monitoring, taken again) and its
target, and a verdict: ``met``, ``NOT MET``, or ``does not resolve`` when the
A/A control alone moves further than the target allows (for a median of 8
or more ratios: when the interval for the A/A median does).

    python bench/quick.py

Fewer pages, rounds and events than ``make bench-full`` (the figures the
docs cite), so the spreads are wider: a quick run tells a regression from
an improvement when it is large, and says so when it cannot. Its results go
to ``bench/results/quick/`` (``BENCH_RESULTS``), never over the full ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median_interval, summary

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "bench" / "results" / "quick"

#: (script and its quick arguments); each saves its figures in QUICK.
STEPS = [
    ["event_cost.py", "--events", "200000"],
    [
        "crawl_cost.py",
        "--pages",
        "5000",
        "--rounds",
        "3",
        "--variants",
        "none,heartbeat-10s,heartbeat-1s,none-again",
    ],
    ["stall.py", "--pages", "400", "--rounds", "3", "--no-peers", "--delay", "0.01"],
    ["shutdown.py", "--rounds", "5"],
    ["soak.py", "--beats", "120"],
    ["instructions.py", "--quick", "--pages", "500", "--repeat", "2"],
    ["receiver_load.py", "--seconds", "15", "--save", "receiver_load"],
    [
        "contention.py",
        "--pin",
        "--side-by-side",
        "--rounds",
        "4",
        "--variants",
        "heartbeat",
        "--save",
        "contention",
    ],
]


@dataclass
class Figure:
    what: str
    value: float
    unit: str
    target: str
    met: bool
    control: str = "–"  # the A/A control's median and spread, when there is one
    resolves: bool = True

    @property
    def verdict(self) -> str:
        if not self.resolves:
            return "does not resolve"
        return "met" if self.met else "NOT MET"


def load(name: str) -> Any:
    return json.loads((QUICK / f"{name}.json").read_text())


def ratio_figure(
    what: str, ratios: list[float], control: list[float], limit: float, at_least: bool = False
) -> Figure:
    """A ratio to no monitoring (1.0), at most ``limit`` (or at least); the
    A/A control's ratios say how far identical crawls differ here: the
    figure resolves when the interval for the A/A median (the whole range
    with fewer than 8 values, see ``median_interval``) stays closer to 1.0
    than ``limit`` is."""
    value = statistics.median(ratios)
    low, high, _ = median_interval(control)
    return Figure(
        what,
        value,
        "×",
        f"{'≥' if at_least else '≤'} {limit:g}",
        value >= limit if at_least else value <= limit,
        summary(control),
        resolves=max(abs(low - 1), abs(high - 1)) < abs(limit - 1),
    )


def figures() -> list[Figure]:
    found: list[Figure] = []
    events = load("event_cost")
    ours, scrapy = events["ns"]["heartbeat"]["per_event"], events["ns"]["scrapy"]["per_event"]
    found.append(
        Figure(
            "per event, ns (Scrapy's own stats handlers: the bound)",
            ours,
            "ns",
            f"≤ {scrapy:,.0f}",
            ours <= scrapy,
        )
    )
    growth = events["memory"]["growth_bytes"]
    found.append(
        Figure("memory growth, 10 k → 200 k URLs", growth, "B", "< 65,536", growth < 65536)
    )

    instructions = load("instructions")
    for label, row in instructions["projected"].items():
        found.append(
            Figure(
                f"instructions, projected 20,000 pages, {label}",
                row["ratio"],
                "×",
                "≤ 1.02",
                row["ratio"] <= 1.02,
                f"{instructions['aa_control']:.4f} (2 counts each)",
                resolves=instructions["noise_margin"] < 0.02,
            )
        )
    runs = instructions["runs"]
    pages = runs["heartbeat/N"]["items"] - runs["heartbeat/1"]["items"]
    per_page = instructions["projected"]["heartbeat, 10 s"]["per_page"]
    none_page = instructions["none"]["per_page"]
    extra = per_page - none_page
    # Two counts of each N-page crawl: how far one count moves, here and now.
    # The figure is a difference of two per-page parts, so twice that.
    moved = max(
        max(r["instructions_each"]) - min(r["instructions_each"])
        for name, r in runs.items()
        if name.endswith("/N")
    )
    aa = abs(instructions["aa_control"] - 1) * runs["none/N"]["instructions"]
    noise = 2 * max(moved, aa) / pages
    found.append(
        Figure(
            "instructions per page, more than none",
            extra,
            "",
            "≤ 16,400",
            extra <= 16_400,
            f"± {noise:,.0f} (2 counts each)",
            resolves=abs(extra - 16_400) > noise,
        )
    )

    cost = load("crawl_cost")["variants"]
    control = cost["none-again"]["cpu_ratio"]
    for variant in ("heartbeat-10s", "heartbeat-1s"):
        found.append(
            ratio_figure(
                f"CPU time, 5,000-page crawl, {variant}", cost[variant]["cpu_ratio"], control, 1.02
            )
        )

    stall = load("stall")["runs"]
    for figure, field in (
        ("largest loop stall", "stall_extra_ms"),
        ("largest loop stall outside GC", "stall_outside_gc_extra_ms"),
    ):
        aa = stall["none-again None"][field]
        low, high, _ = median_interval(aa)
        for key, run in stall.items():
            if not key.startswith("heartbeat"):
                continue
            value = statistics.median(run[field])
            found.append(
                Figure(
                    f"{figure}, more than none, API {key.split(' ', 1)[1]}",
                    value,
                    "ms",
                    "≤ 5",
                    value <= 5,
                    summary(aa, 1),
                    resolves=max(abs(low), abs(high)) < 5,
                )
            )

    shutdown = load("shutdown")["variants"]
    aa = shutdown["none-again"]["extra_ms"]
    for variant in ("heartbeat-10s", "heartbeat-1s"):
        value = shutdown[variant]["extra_ms_median"]
        found.append(
            Figure(
                f"exit after the close, more than none, {variant}",
                value,
                "ms",
                "≤ 50",
                value <= 50,
                summary(aa, 1),
                resolves=max(abs(a) for a in aa) < 50,
            )
        )

    soak = load("soak")
    extra_mib = statistics.median(soak["extra_mib"])
    found.append(
        Figure("soak: RSS growth, more than none", extra_mib, "MiB", "≤ 1", extra_mib <= 1)
    )

    load_report = load("receiver_load")
    p99 = load_report["latency_ms"]["p99"]
    stored = load_report["every_accepted_beat_stored"] and load_report["achieved_rate"] >= 990
    found.append(
        Figure(
            "receiver (SQLite), 1,000 beats/s, p99, every beat stored",
            p99,
            "ms",
            "< 100, all stored",
            p99 < 100 and bool(stored),
        )
    )

    contention = load("contention")["variants"]
    found.append(
        ratio_figure(
            "pages beside a CPU-bound process, 1 s (pinned, side by side)",
            contention["heartbeat"]["pages_ratio"],
            contention["none-again"]["pages_ratio"],
            0.98,
            at_least=True,
        )
    )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--table-only", action="store_true", help="only print the table of the last quick run"
    )
    args = parser.parse_args()
    QUICK.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BENCH_RESULTS": str(QUICK)}
    started = time.monotonic()
    for step in [] if args.table_only else STEPS:
        began = time.monotonic()
        print(f"\n== bench/{' '.join(step)}", flush=True)
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / step[0]), *step[1:]], env=env, check=True
        )
        print(f"== {step[0]}: {time.monotonic() - began:.0f} s", flush=True)
    if not args.table_only:
        print(f"\nquick profile, {time.monotonic() - started:.0f} s in all; results in {QUICK}\n")
    rows = figures()
    width = max(len(f.what) for f in rows)
    print(f"{'figure':{width}}  {'value':>12}  {'A/A control':24}  {'target':20}  verdict")
    for f in rows:
        value = f"{f.value:,.4g} {f.unit}".strip()
        print(f"{f.what:{width}}  {value:>12}  {f.control:24}  {f.target:20}  {f.verdict}")
    unresolved = [f.what for f in rows if not f.resolves]
    if unresolved:
        print(
            f"\n{len(unresolved)} figure(s) this quick run cannot resolve (the A/A control moves "
            "further than the target allows); make bench-full measures them with more rounds."
        )
    return 1 if any(f.resolves and not f.met for f in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
