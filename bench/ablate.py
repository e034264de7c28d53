"""Where scrapy-heartbeat's per-page cost goes: the instruction count of the
same crawl with parts of the extension taken out.

    python bench/ablate.py [--pages 1000]

Each run is a ``--pages`` crawl with scrapy-heartbeat beating every 60 s
(so beats hardly count), under callgrind as in ``instructions.py``, all
runs side by side so each sees the same load (the count moves a little with
how fast the site answers relative to the crawl). Parts: the observation of
the engine's ``_handle_downloader_output`` (outcomes); the observation of
the scheduler's ``enqueue_request`` (no tokens then, so what the engine's
observation does is cut short too). The saving per page says what each
costs.

Read the sum, not the split: instruction counts move with how many loop
iterations a crawl takes, which depends on timing (the README quotes a run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import receiver, save, site_server
from bench.instructions import HEARTBEAT_RARE, Run, count

PARTS = ["", "engine", "scheduler", "engine,scheduler"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=1000)
    args = parser.parse_args()
    variant = f"heartbeat-{HEARTBEAT_RARE}s"
    runs = [Run(part or "whole", variant, "many", HEARTBEAT_RARE, ablate=part) for part in PARTS]
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        site = stack.enter_context(site_server(args.pages)).url
        api = stack.enter_context(receiver()).url
        with ThreadPoolExecutor(len(runs)) as pool:
            reports = list(
                pool.map(lambda r: count(r, site, api, Path(tmp, f"{r.name}.out")), runs)
            )
    whole = reports[0]["instructions"]
    pages = reports[0]["items"]
    print(f"\n{pages} pages, all runs side by side; saving per page when taken out")
    results = {}
    for run, report in zip(runs, reports, strict=True):
        saving = (whole - report["instructions"]) / pages
        results[run.name] = {"instructions": report["instructions"], "saving_per_page": saving}
        print(f"{run.name:28} {report['instructions'] / 1e9:8.3f} G, {saving / 1e3:+7.1f} k/page")
    save("ablate", {"pages": args.pages, "parts": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
