"""What monitoring costs a crawl, counted in instructions: a figure this
machine's noise cannot move.

    python bench/instructions.py [--pages 1000] [--project-pages 20000]

CPU time on a shared 2-core VM moves by several percent between identical
crawls (crawl_cost.py's A/A control), more than the 2 % this has to resolve.
Here each crawl runs under ``valgrind --tool=callgrind`` (Debian's
``valgrind`` package), which counts the instructions the crawl process
executes: the same work gives nearly the same count, however busy the
machine is. Under valgrind a crawl runs ~40 times slower, so a periodic cost
(a beat, a monitor suite, a stats post) would weigh 40 times more than in a
real crawl. So the cost is split into parts, each measured:

* fixed: a 1-page crawl (imports, set-up, start and final beats);
* per page: an N-page crawl minus the fixed part, with the periodic work
  made rare (every 60 s for scrapy-heartbeat, its longest; 600 s for peers);
* per period: the same N-page crawl with the periodic work every second,
  minus the rare one, divided by the number of extra periods.

The ratio then projected for the crawl_cost.py crawl (``--project-pages``
pages at the unmonitored crawl's native pages/s, so many beats or periods at
each interval) is ``(fixed + pages * per_page + periods * per_period)`` over
the unmonitored crawl's ``fixed + pages * per_page``. ``none-again`` repeats
the unmonitored N-page crawl: how far two identical counts differ.

Three more N-page runs beat every second against an API that hangs, answers
after 5 s, or refuses connections: their counts against the healthy API's
say what a misbehaving API costs the crawl in work (with beats ~40 times
denser per page than in a real crawl, an upper bound).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, receiver, run_crawl_process, save, site_server
from tests.servers import HeartbeatServer, free_port

RARE, OFTEN = 600, 1  # peers' periods, seconds
#: The runs ``--repeat`` counts more than once: the per-page parts.
REPEATED = ("none/N", "none-again/N", "heartbeat/N", "scrapeops/N", "spidermon/N")
HEARTBEAT_RARE = 60  # scrapy-heartbeat's longest interval (the spec's 60 s)
COLLECTED = re.compile(r"Collected : (\d+)")
REFUSED = f"http://127.0.0.1:{free_port()}"


@dataclass
class Run:
    name: str
    variant: str
    site: str  # "one", "many" or "many-often" (scrapeops' stub period is set by the site)
    period: float | None  # seconds between periodic runs, None: no periodic work
    api: str = "receiver"  # or a fault: "hang", "slow:5", "refused"
    ablate: str = ""  # parts of scrapy-heartbeat taken out (bench/ablate.py)


#: What ``--quick`` counts.
MEASURED = ("none", "none-again", "heartbeat")


def plan() -> list[Run]:
    return [
        Run("none/1", "none", "one", None),
        Run("none/N", "none", "many", None),
        Run("none-again/N", "none", "many", None),
        Run("heartbeat/1", f"heartbeat-{HEARTBEAT_RARE}s", "one", HEARTBEAT_RARE),
        Run("heartbeat/N", f"heartbeat-{HEARTBEAT_RARE}s", "many", HEARTBEAT_RARE),
        Run("heartbeat/N often", f"heartbeat-{OFTEN}s", "many", OFTEN),
        Run("scrapeops/1", "scrapeops", "one", RARE),
        Run("scrapeops/N", "scrapeops", "many", RARE),
        Run("scrapeops/N often", "scrapeops", "many-often", OFTEN),
        Run("spidermon/1", f"spidermon-{RARE}s", "one", RARE),
        Run("spidermon/N", f"spidermon-{RARE}s", "many", RARE),
        Run("spidermon/N often", f"spidermon-{OFTEN}s", "many", OFTEN),
        # The API misbehaving, beats every second: what a fault costs the crawl.
        Run("heartbeat/N hang", f"heartbeat-{OFTEN}s", "many", OFTEN, "hang"),
        Run("heartbeat/N slow", f"heartbeat-{OFTEN}s", "many", OFTEN, "slow:5"),
        Run("heartbeat/N refused", f"heartbeat-{OFTEN}s", "many", OFTEN, "refused"),
    ]


def count(run: Run, site: str, api: str, out: Path) -> dict[str, Any]:
    """One crawl under callgrind: its instruction count and its own report."""
    target = site if run.variant == "scrapeops" else api
    report, stderr = run_crawl_process(
        run.variant,
        site,
        target,
        # A short close timeout for the fault runs (the close is not counted).
        extra={"HEARTBEAT_CLOSE_TIMEOUT": 2},
        prefix=("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
        # A fixed hash seed: the same dict and set layouts in every run.
        env={"PYTHONHASHSEED": "0", "BENCH_ABLATE": run.ablate},
    )
    found = COLLECTED.search(stderr)
    if not found:
        raise SystemExit(f"{run.name}: no instruction count from valgrind:\n{stderr[-3000:]}")
    report["instructions"] = int(found.group(1))
    if run.period is None:
        report["periods"] = 0
    elif run.variant.startswith("heartbeat"):
        report["periods"] = report["heartbeat_ok"] + report["heartbeat_failed"]
    else:  # a peer's periodic task: one per period of the crawl
        report["periods"] = int(report["crawl_seconds"] // run.period)
    return report


def pages_of(results: dict[str, dict[str, Any]]) -> int:
    """Pages in an N-page run beyond the 1-page run's."""
    return int(results["none/N"]["items"] - results["none/1"]["items"])


def native_pages_per_second() -> float:
    """The unmonitored crawl's speed in the last crawl_cost.py run, else ~620."""
    try:
        runs = json.loads((RESULTS / "crawl_cost.json").read_text())["variants"]["none"]["runs"]
        rates = sorted(r["pages_per_second"] for r in runs)
        return float(rates[len(rates) // 2])
    except (OSError, KeyError, ValueError):
        return 620.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--project-pages", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--repeat", type=int, default=1, help="count each N-page run this many times (medians)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="scrapy-heartbeat and no monitoring only: no peers, no faulty APIs",
    )
    return parser.parse_args()


def runs_to_count(quick: bool, repeat: int) -> list[Run]:
    """The plan (``quick``: its healthy runs of ``MEASURED``), with the
    ``REPEATED`` runs ``repeat`` times, as ``<name> #2`` and so on."""
    runs = plan()
    if quick:
        runs = [r for r in runs if r.api == "receiver" and r.name.split("/")[0] in MEASURED]
    return runs + [
        replace(run, name=f"{run.name} #{n}")
        for n in range(2, repeat + 1)
        for run in runs
        if run.name in REPEATED
    ]


def count_all(runs: list[Run], pages: int, jobs: int) -> dict[str, dict[str, Any]]:
    """Every run's report, by name, ``jobs`` of them at once."""
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        sites = {
            "one": stack.enter_context(site_server(1, scrapeops_period=RARE)).url,
            "many": stack.enter_context(site_server(pages, scrapeops_period=RARE)).url,
            "many-often": stack.enter_context(site_server(pages, scrapeops_period=OFTEN)).url,
        }
        apis = {"receiver": stack.enter_context(receiver()).url, "refused": REFUSED}
        for fault in ("hang", "slow:5"):
            server = HeartbeatServer(behaviour=fault)
            stack.callback(server.stop)
            apis[fault] = server.url

        def one(run: Run) -> tuple[str, dict[str, Any]]:
            out = Path(tmp, re.sub(r"\W+", "-", run.name) + ".out")
            report = count(run, sites[run.site], apis[run.api], out)
            print(
                f"{run.name:20} {report['instructions'] / 1e9:8.3f} G instructions, "
                f"{report['items']} pages, {report['periods']} periods, "
                f"{report['crawl_seconds']:.0f} s under valgrind",
                flush=True,
            )
            return run.name, report

        with ThreadPoolExecutor(jobs) as pool:
            return dict(pool.map(one, runs))


def keep_medians(results: dict[str, dict[str, Any]], repeat: int) -> None:
    """Folds each repeated run's counts into its first: the median count
    stands for the run, all of them are kept beside it."""
    for name in [n for n in REPEATED if n in results]:
        counts = [results.pop(f"{name} #{n}")["instructions"] for n in range(2, repeat + 1)]
        counts.append(results[name]["instructions"])
        results[name]["instructions_each"] = sorted(counts)
        results[name]["instructions"] = statistics.median(counts)


def parts(results: dict[str, dict[str, Any]], name: str) -> dict[str, float]:
    """``name``'s instructions split into fixed, per page and per period."""
    small, big = results[f"{name}/1"], results[f"{name}/N"]
    often = results.get(f"{name}/N often")
    per_period = 0.0
    if often is not None and often["periods"] > big["periods"]:
        per_period = (often["instructions"] - big["instructions"]) / (
            often["periods"] - big["periods"]
        )
    fixed = small["instructions"] - small["periods"] * per_period
    pages = big["items"] - small["items"]
    per_page = (big["instructions"] - big["periods"] * per_period - fixed) / pages
    return {"fixed": fixed, "per_page": per_page, "per_period": per_period}


def show_parts(split: dict[str, dict[str, float]]) -> None:
    base = split["none"]
    print(
        f"\nparts, instructions (unmonitored per page: {base['per_page'] / 1e6:.2f} M, "
        f"fixed {base['fixed'] / 1e9:.2f} G)"
    )
    for name in [n for n in split if n != "none"]:
        p = split[name]
        print(
            f"{name:10} fixed +{(p['fixed'] - base['fixed']) / 1e6:8.1f} M, per page "
            f"+{(p['per_page'] - base['per_page']) / 1e3:7.1f} k "
            f"(+{(p['per_page'] / base['per_page'] - 1) * 100:.2f} %), per period "
            f"{p['per_period'] / 1e6:.2f} M"
        )


def project(
    split: dict[str, dict[str, float]], pages: int, rate: float, base_total: float
) -> dict[str, dict[str, float]]:
    """Each monitored row's ratio to no monitoring, projected for a crawl of
    ``pages`` at ``rate`` pages/s; printed, and returned by row."""
    seconds = pages / rate
    # (name, parts of, periods in the projected crawl). Heartbeat's start and
    # final beats are counted as periods in every run, so they are added back
    # here; the peers' calls at start and close stay in their fixed part.
    projected = [
        ("heartbeat, 10 s", "heartbeat", seconds // 10 + 2),
        ("heartbeat, 1 s", "heartbeat", seconds // 1 + 2),
        ("scrapeops, 10 s", "scrapeops", seconds // 10),
        ("spidermon, 10 s", "spidermon", seconds // 10),
    ]
    print(
        f"\nprojected for {pages} pages at {rate:.0f} pages/s ({seconds:.0f} s): "
        "instruction ratio to no monitoring"
    )
    rows: dict[str, dict[str, float]] = {}
    for label, name, periods in [row for row in projected if row[1] in split]:
        p = split[name]
        total = p["fixed"] + pages * p["per_page"] + periods * p["per_period"]
        rows[label] = {**p, "periods": periods, "ratio": total / base_total}
        print(f"{label:18} {total / base_total:.4f}  ({periods:.0f} periods)")
    return rows


def fault_costs(results: dict[str, dict[str, Any]], pages: int) -> dict[str, dict[str, float]]:
    """Each misbehaving API's count over the healthy API's and over none's."""
    healthy = results["heartbeat/N often"]["instructions"]
    faults: dict[str, dict[str, float]] = {}
    print(f"\nthe API misbehaving, {pages} pages, a beat every second under valgrind:")
    for fault in [f for f in ("hang", "slow", "refused") if f"heartbeat/N {f}" in results]:
        r = results[f"heartbeat/N {fault}"]
        faults[fault] = {
            "vs_healthy": r["instructions"] / healthy,
            "vs_none": r["instructions"] / results["none/N"]["instructions"],
        }
        print(
            f"{fault:8} {faults[fault]['vs_healthy']:.4f} of the healthy API's count, "
            f"{faults[fault]['vs_none']:.4f} of no monitoring's "
            f"({r['periods']} beats with an outcome)"
        )
    return faults


def compare(rows: dict[str, dict[str, float]], margin: float) -> dict[str, str]:
    """Each scrapy-heartbeat row against each peer's: below, above or a tie
    (closer than ``margin``); printed, and returned by pair."""
    ours = {k: v["ratio"] for k, v in rows.items() if k.startswith("heartbeat")}
    peers = {k: v["ratio"] for k, v in rows.items() if not k.startswith("heartbeat")}
    verdicts = {}
    for mine, ratio in ours.items():
        for peer, theirs in peers.items():
            verdict = "tie"
            if ratio < theirs - margin:
                verdict = "below"
            elif ratio > theirs + margin:
                verdict = "above"
            verdicts[f"{mine} vs {peer}"] = verdict
            print(f"{mine} vs {peer}: {verdict} ({ratio:.4f} vs {theirs:.4f})")
    ok = max(ours.values()) <= 1.02 and all(v == "below" for v in verdicts.values())
    print(
        "targets (ratio <= 1.02 and below every peer, beyond the noise):",
        "PASS" if ok else "MISSED",
    )
    return verdicts


def main() -> int:
    args = parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found: install it (apt-get install valgrind)")
    results = count_all(runs_to_count(args.quick, args.repeat), args.pages, args.jobs)
    keep_medians(results, args.repeat)
    rate = native_pages_per_second()
    split = {
        name: parts(results, name)
        for name in ("none", "heartbeat", "scrapeops", "spidermon")
        if f"{name}/1" in results
    }
    base = split["none"]
    base_total = base["fixed"] + args.project_pages * base["per_page"]
    show_parts(split)
    rows = project(split, args.project_pages, rate, base_total)
    faults = fault_costs(results, args.pages)
    control = results["none-again/N"]["instructions"] / results["none/N"]["instructions"]
    print(f"A/A control (none again / none, {args.pages} pages): {control:.4f}")
    # How far a projected ratio can move when one N-page count moves as far
    # as the A/A control's: two ratios closer than this are not told apart.
    noise = abs(control - 1) * results["none/N"]["instructions"] / (pages_of(results) or 1)
    margin = noise * args.project_pages / base_total
    print(f"projected ratios closer than {margin:.4f} are within this run's noise")
    verdicts = compare(rows, margin)
    path = save(
        "instructions",
        {
            "pages": args.pages,
            "project_pages": args.project_pages,
            "native_pages_per_second": rate,
            "runs": results,
            "none": base,
            "projected": rows,
            "faults": faults,
            "aa_control": control,
            "repeat": args.repeat,
            "noise_margin": margin,
            "verdicts": verdicts,
        },
    )
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
