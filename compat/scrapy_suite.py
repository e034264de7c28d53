"""Scrapy's own test suite, with and without scrapy-heartbeat in every crawler.

``make test-scrapy`` runs this with the Python of ``.venv-scrapy-tests`` (a
virtualenv with the Scrapy version ``.venv`` pins, this package, and what
Scrapy's tests need). Steps:

1. Scrapy's sdist of that version is downloaded once into ``.cache/`` and its
   ``tests/``, ``conftest.py`` and ``pyproject.toml`` (the pytest
   configuration) extracted beside it; the tests run against the installed
   Scrapy, not the sdist's copy.
2. The suite runs twice with the same options: ``plain``, then
   ``heartbeat``, where ``compat/hook`` is on PYTHONPATH: its
   ``sitecustomize`` adds the extension to ``EXTENSIONS_BASE`` in every Python
   process, the test runner's and every one it spawns, and ``API_BASE_URL``
   points at a receiver (``scrapy-heartbeat serve``) started for the run on
   127.0.0.1.
3. Outcomes are compared per test id. A test that passes plain but fails
   with the extension is run again, once in each mode; those that still pass
   plain and fail with the extension are reported, and the exit status is 1.
4. The receiver's database: every execution whose latest status is not a
   final one (completed, failed, paused) is traced to its process and test
   (see ``classify``); only those not explained by the rule there fail the
   check.

Everything is written under ``.cache/test-scrapy/`` (outcomes, logs, the
trace, the receiver's database, ``report.txt``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
HOOK = ROOT / "compat" / "hook"
PLUGINS = ROOT / "compat" / "plugins"
FINAL = ("completed", "failed", "paused")
BAD = ("failed", "error")

# Options of both modes. requires_internet tests need the Internet (only
# 127.0.0.1 is reachable here). --continue-on-collection-errors: a module
# that cannot be collected is reported, not the end of the run. --timeout: a
# hung test fails instead of eating the budget.
PYTEST_OPTIONS = [
    "-p",
    "no:cacheprovider",
    "-p",
    "suite_outcomes",
    "-m",
    "not requires_internet",
    "--continue-on-collection-errors",
    "--timeout=300",
    "-q",
    "-rfE",
    "--durations=25",
]


def log(message: str) -> None:
    print(f"[test-scrapy {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- 1. Scrapy's tests ---------------------------------------------------------


def scrapy_version() -> str:
    from importlib.metadata import version

    return version("scrapy")


def fetch_suite(version: str) -> Path:
    sdists = CACHE / "scrapy-sdist"
    suite = CACHE / f"scrapy-tests-{version}"
    if (suite / "conftest.py").exists():
        return suite
    tarball = sdists / f"scrapy-{version}.tar.gz"
    if not tarball.exists():
        log(f"downloading Scrapy {version}'s sdist into {sdists.relative_to(ROOT)}/")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", f"scrapy=={version}", "-d", str(sdists)],
            check=True,
        )  # fmt: skip
    top = f"scrapy-{version}/"
    wanted = ("tests/", "conftest.py", "pyproject.toml")
    tmp = suite.with_name(suite.name + ".partial")
    with tarfile.open(tarball) as tar:
        members = [
            m for m in tar.getmembers()
            if m.name.startswith(top) and m.name[len(top):].startswith(wanted)
        ]  # fmt: skip
        for m in members:
            m.name = m.name[len(top) :]
        tar.extractall(tmp, members=members, filter="data")
    tmp.rename(suite)
    return suite


# -- 2. the runs -------------------------------------------------------------------


class Receiver:
    def __init__(self, cli: str, run: Path) -> None:
        self.db = run / "heartbeats.sqlite3"
        port_file = run / "receiver.port"
        self.log = (run / "receiver.log").open("w")
        self.proc = subprocess.Popen(
            [cli, "serve", "--port", "0", "--port-file", str(port_file), "--db", str(self.db),
             "--lost-after", "86400", "--stall-after", "86400", "--keep-days", "0"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the receiver did not start; see {run / 'receiver.log'}")
            time.sleep(0.1)
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run_pytest(
    suite: Path, run: Path, name: str, receiver: Receiver | None, args: list[str]
) -> dict[str, Any]:
    """One pytest run; ``name`` is its mode (``plain``, ``heartbeat``), or
    ``rerun-`` and its mode."""
    mode = name.removeprefix("rerun-")
    env = dict(os.environ)
    for var in ("API_BASE_URL", "SCRAPY_HEARTBEAT_COMPAT", "SCRAPY_HEARTBEAT_COMPAT_TRACE"):
        env.pop(var, None)
    # The suite's directory: Scrapy's tests run scripts in child processes
    # that import `tests` (in Scrapy's own tree that is where Scrapy is).
    paths = [str(PLUGINS), str(suite)]
    if mode == "heartbeat":
        assert receiver is not None
        paths.insert(0, str(HOOK))
        env["SCRAPY_HEARTBEAT_COMPAT"] = "1"
        env["SCRAPY_HEARTBEAT_COMPAT_TRACE"] = str(run / "trace.jsonl")
        env["API_BASE_URL"] = receiver.url
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
    outcomes = run / f"{name}.json"
    env["SUITE_OUTCOMES"] = str(outcomes)
    cmd = [sys.executable, "-m", "pytest", *PYTEST_OPTIONS, *args]
    log(f"{name}: {' '.join(cmd[1:6])} ... ({len(args)} arguments) > {name}.log")
    began = time.monotonic()
    with (run / f"{name}.log").open("w") as out:
        proc = subprocess.run(
            cmd, check=False, cwd=suite, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    rc = proc.returncode
    seconds = time.monotonic() - began
    result = json.loads(outcomes.read_text()) if outcomes.exists() else {"tests": {}}
    counts: dict[str, int] = {}
    for entry in result["tests"].values():
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    log(f"{name}: exit {rc} in {seconds:.0f} s: {format_counts(counts)}")
    return {"rc": rc, "seconds": seconds, "counts": counts, "tests": result["tests"]}


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def differing(plain: dict[str, Any], heartbeat: dict[str, Any]) -> list[str]:
    """Tests that pass plain and fail (or never report) with the extension."""
    out = []
    for nodeid, entry in plain.items():
        if entry["outcome"] != "passed":
            continue
        other = heartbeat.get(nodeid)
        if other is None or other["outcome"] in BAD:
            out.append(nodeid)
    return sorted(out)


# -- 4. the receiver's executions ------------------------------------------------


def load_trace(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def classify(db: Path, trace: list[dict[str, Any]], suite: Path) -> list[dict[str, Any]]:
    """Every execution without a final status, traced to its process and test.

    The rule: an execution left without a final status is *explained* only
    when the process that ran it did not run its exit handlers (no ``exit``
    in the trace: killed by a signal, or left through ``os._exit``) and
    either its parent reaped it with a SIGKILL status (-9), or it was
    killed by a signal while it ran no crawl close (see ``why``). Every
    other one, in particular any in a process that exited normally (the
    extension's exit guard sends the final beat there), is unexplained.
    """
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT execution_id, container_id, status, first_seen, last_seen, beats, progress "
        "FROM executions ORDER BY first_seen"
    ).fetchall()
    con.close()
    starts = {e["pid"]: e for e in trace if e["event"] in ("start", "fork")}
    exits = {e["pid"] for e in trace if e["event"] == "exit"}
    reaped = {e["child"]: e for e in trace if e["event"] == "reaped"}
    tests_by_pid: dict[int, list[dict[str, Any]]] = {}
    for e in trace:
        if e["event"] == "test":
            tests_by_pid.setdefault(e["pid"], []).append(e)
    out = []
    traced = 0
    for execution_id, container, status, first, last, beats, progress in rows:
        m = re.fullmatch(r"pid-(\d+)", container or "")
        pid = int(m.group(1)) if m else None
        item: dict[str, Any] = {
            "execution_id": execution_id,
            "container": container,
            "status": status,
            "beats": beats,
            "first_beat": time.strftime("%H:%M:%S", time.localtime(first)),
            "last_beat": time.strftime("%H:%M:%S", time.localtime(last)),
            "last_progress": json.loads(progress) if progress else None,
            "pid": pid,
        }
        test = None
        for t in tests_by_pid.get(pid or -1, []):  # an in-process crawl of a pytest worker
            if t["start"] - 1 <= first <= t["end"] + 1:
                test = t["nodeid"]
                item["where"] = "in the pytest process"
        start = starts.get(pid or -1)
        if test is None and start is not None:
            test = (start.get("test") or "").rsplit(" (", 1)[0] or None
            item["where"] = "in a child process: " + " ".join(
                (start.get("orig_argv") or start.get("argv") or [])[1:6]
            )
        item["test"] = test
        traced += test is not None
        if status in FINAL:
            continue
        item["exited_normally"] = pid in exits
        child = reaped.get(pid or -1)
        item["returncode"] = child["returncode"] if child else None
        item["explained"], item["why"] = why(item, suite)
        out.append(item)
    log(
        f"receiver: {len(rows)} executions ({traced} traced to the test that ran them), "
        f"{len(out)} without a final status"
    )
    return out


def why(item: dict[str, Any], suite: Path) -> tuple[bool, str]:
    if item["pid"] is None:
        return False, "no process to trace it to (container id is not pid-N)"
    if item["exited_normally"]:
        return False, (
            "its process exited normally (exit handlers ran), yet no final beat arrived: "
            "the extension's exit guard should have sent one"
        )
    rc = item["returncode"]
    if rc == -signal.SIGKILL:
        return True, "its process was SIGKILLed (reaped by its parent with status -9)"
    if rc is not None and rc < 0:
        return False, f"its process was killed by {signal.Signals(-rc).name}, not SIGKILL"
    if rc is not None:
        return False, f"its process exited with {rc} without running its exit handlers (os._exit?)"
    return False, (
        "its process left without running its exit handlers and no parent reaped it "
        "through subprocess (a pytest worker, or a pexpect/multiprocessing child): "
        "not proven SIGKILLed"
    )


# -- the report ----------------------------------------------------------------------


def report_lines(
    version: str,
    *,
    results: dict[str, dict[str, Any]],
    reruns: dict[str, dict[str, Any]],
    diff: list[str],
    still: list[str],
    opened: list[dict[str, Any]],
) -> list[str]:
    open_executions = opened
    lines = [f"Scrapy {version}'s test suite, plain and with scrapy-heartbeat in every crawler", ""]
    for mode, r in results.items():
        counts = format_counts(r["counts"])
        lines.append(f"{mode:>10}: {counts} (exit {r.get('rc')}, {r['seconds']:.0f} s)")
    for mode, r in reruns.items():
        counts = format_counts(r.get("counts", {}))
        lines.append(f"{'re-run ' + mode:>17}: {counts} ({r.get('seconds', 0):.0f} s)")
    lines.append("")
    plain, heartbeat = results["plain"]["tests"], results["heartbeat"]["tests"]
    other = sorted(
        n for n, e in heartbeat.items()
        if e["outcome"] == "passed" and plain.get(n, {}).get("outcome") in BAD
    )  # fmt: skip
    if other:
        lines.append(f"{len(other)} tests fail plain but pass with the extension (not an error):")
        lines += [f"  {n}" for n in other]
        lines.append("")
    lines.append(f"{len(diff)} tests passed plain and failed with the extension in the full runs")
    for n in diff:
        re_p = reruns.get("plain", {}).get("tests", {}).get(n, {}).get("outcome", "-")
        re_h = reruns.get("heartbeat", {}).get("tests", {}).get(n, {}).get("outcome", "-")
        verdict = "DIFFERS" if n in still else "flaky (not confirmed on re-run)"
        lines.append(f"  {verdict}: {n}  [re-run: plain {re_p}, heartbeat {re_h}]")
        h = heartbeat.get(n)
        msg = (reruns.get("heartbeat", {}).get("tests", {}).get(n) or h or {}).get("message", "")
        msg = msg or ("no outcome reported (its worker crashed?)" if h is None else "")
        lines += [f"      {m}" for m in msg.splitlines()[:12]]
    lines.append("")
    unexplained = [e for e in open_executions if not e["explained"]]
    lines.append(
        f"{len(open_executions)} executions without a final status "
        f"({len(unexplained)} unexplained). Rule: explained only if its process was "
        "SIGKILLed (reaped with -9, no exit handlers run)."
    )
    for e in open_executions:
        flag = "explained" if e["explained"] else "UNEXPLAINED"
        prog = e["last_progress"] or {}
        lines += [
            f"  {flag}: {e['execution_id']} {e['container']} status={e['status']} "
            f"beats={e['beats']} first={e['first_beat']} last={e['last_beat']}",
            f"      test: {e['test']} ({e.get('where', '?')})",
            f"      why: {e['why']}",
            f"      last beat: stage={prog.get('current_stage')!r} url={prog.get('current_url')!r}",
        ]
    return lines


def load_run(run: Path, name: str) -> dict[str, Any]:
    summary = run / f"{name}.summary.json"
    return {
        **(json.loads(summary.read_text()) if summary.exists() else {}),
        "tests": json.loads((run / f"{name}.json").read_text())["tests"],
    }


def save_run(run: Path, name: str, result: dict[str, Any]) -> None:
    summary = {k: v for k, v in result.items() if k != "tests"}
    (run / f"{name}.summary.json").write_text(json.dumps(summary))


def run_all(
    opts: argparse.Namespace, suite: Path, run: Path, phases: dict[str, float]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Steps 2 and 3: the full runs, then the re-runs of what differs."""
    if run.exists():
        for f in run.iterdir():
            f.unlink()
    run.mkdir(parents=True, exist_ok=True)
    targets = opts.pytest_args or ["tests"]
    workers = ["-n", opts.workers, "--dist", "load"] if opts.workers != "0" else []
    results: dict[str, dict[str, Any]] = {}
    reruns: dict[str, dict[str, Any]] = {}
    receiver = Receiver(opts.receiver_cli, run)
    try:
        log(f"receiver at {receiver.url}, database {receiver.db.relative_to(ROOT)}")
        for mode in opts.modes.split(","):
            results[mode] = run_pytest(suite, run, mode, receiver, workers + targets)
            phases[mode] = results[mode]["seconds"]
            save_run(run, mode, results[mode])
        if "plain" in results and "heartbeat" in results:
            diff = differing(results["plain"]["tests"], results["heartbeat"]["tests"])
            if diff:
                log(f"{len(diff)} tests pass plain and fail with the extension; running them again")
                n = ["-n", opts.workers] if len(diff) > 8 and opts.workers != "0" else []
                for mode in ("plain", "heartbeat"):
                    name = f"rerun-{mode}"
                    reruns[mode] = run_pytest(suite, run, name, receiver, n + diff)
                    phases[name] = reruns[mode]["seconds"]
                    save_run(run, name, reruns[mode])
    finally:
        receiver.stop()
    return results, reruns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receiver-cli", default=str(ROOT / ".venv" / "bin" / "scrapy-heartbeat"))
    parser.add_argument("--workers", default="2", help="pytest -n (default 2)")
    parser.add_argument("--modes", default="plain,heartbeat", help="full runs (plain,heartbeat)")
    parser.add_argument("--analyze", action="store_true", help="only report the last run again")
    parser.add_argument("pytest_args", nargs="*", help="tests to run (default: tests)")
    opts = parser.parse_args()

    began = time.monotonic()
    version = scrapy_version()
    run = CACHE / "test-scrapy"
    phases: dict[str, float] = {}
    suite = fetch_suite(version)
    phases["fetch"] = time.monotonic() - began
    log(f"Scrapy {version}: tests in {suite.relative_to(ROOT)}")
    if opts.analyze:
        results = {mode: load_run(run, mode) for mode in ("plain", "heartbeat")}
        reruns = {
            mode: load_run(run, f"rerun-{mode}")
            for mode in ("plain", "heartbeat")
            if (run / f"rerun-{mode}.json").exists()
        }
    else:
        results, reruns = run_all(opts, suite, run, phases)
    if "plain" not in results or "heartbeat" not in results:
        return 0
    diff = differing(results["plain"]["tests"], results["heartbeat"]["tests"])
    still = diff
    if reruns:
        still = [
            n for n in diff
            if reruns["plain"]["tests"].get(n, {}).get("outcome") == "passed"
            and reruns["heartbeat"]["tests"].get(n, {}).get("outcome", "error") in BAD
        ]  # fmt: skip
    t = time.monotonic()
    open_executions = classify(run / "heartbeats.sqlite3", load_trace(run / "trace.jsonl"), suite)
    phases["check"] = time.monotonic() - t
    unexplained = [e for e in open_executions if not e["explained"]]
    lines = report_lines(
        version, results=results, reruns=reruns, diff=diff, still=still, opened=open_executions
    )
    lines.append("")
    lines.append("phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()))
    lines.append(f"total: {time.monotonic() - began:.0f} s")
    report = "\n".join(lines)
    (run / "report.txt").write_text(report + "\n")
    (run / "open_executions.json").write_text(json.dumps(open_executions, indent=1))
    print("\n" + report, flush=True)
    failed = bool(still) or bool(unexplained)
    where = run.relative_to(ROOT)
    print(f"\nmake test-scrapy: {'FAILED' if failed else 'passed'}; details in {where}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
