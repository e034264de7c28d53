"""``make test-dist``: the sdist and the wheel as a release builds them, each
used as its users use it.

``python -m build`` makes the sdist, then the wheel from the unpacked sdist
(so a missing file fails the build or the checks below). The wheel goes into
a fresh virtualenv with its dependencies and nothing else; from a directory
outside the source tree, that virtualenv runs ``--help``, ``serve`` (its API
and dashboard) with ``send``, the ``demo``, and crawls with the extension
and with the add-on against a local site. Then the same virtualenv gets the
``[test]`` extra and runs the unpacked sdist's whole test suite from the
sdist's directory, as Debian and conda-forge run it, but on two workers as
``make test`` does (a run one test at a time takes twice as long): every
test it collects must pass, none skipped.

The tests must exercise the wheel, not the sources beside them. Unpacked
whole, the sdist's ``scrapy_heartbeat/`` would come first on ``sys.path``
(pytest puts the directory above ``tests/`` there, and each
``python -m scrapy_heartbeat`` child the directory it starts in), so it is
left out of the unpacked tree, as a distribution's build directory holds the
tests beside the installed package only; pytest's header line (``tests/
conftest.py``) then has to name the virtualenv's copy.

Usage: ``python tests/dist_check.py [--keep] [TEST ...]``: the sdist's tests
given (paths or node ids, for a quick look), by default all of them; exit 0
when everything passed, else 1 with the step that failed and its output."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "scrapy_heartbeat"
#: The sdist's whole suite, on two workers as ``make test`` runs it.
SUITE_TIMEOUT = 45 * 60
EXECUTIONS = "/api/v1/monitoring/executions"
#: The crawls' site: three pages, each an item (no link back to the start
#: URL, which Scrapy would fetch again: start requests skip the dupefilter).
SITE = {
    "index.html": "<a href='a.html'>a</a> <a href='b.html'>b</a>",
    "a.html": "<a href='b.html'>b</a>",
    "b.html": "<a href='a.html'>a</a>",
}
SPIDER = """
import scrapy


class TinySpider(scrapy.Spider):
    name = "tiny"

    def __init__(self, site, **kwargs):
        super().__init__(**kwargs)
        self.start_urls = [site + "/index.html"]

    def parse(self, response):
        yield {"url": response.url}
        yield from response.follow_all(response.css("a::attr(href)").getall())
"""


class CheckFailed(Exception):
    """A step that did not do what it should; the message says which."""


class Steps:
    """Prints each step that passed, with the seconds since the start."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def ok(self, what: str) -> None:
        print(f"ok  {what}  ({time.monotonic() - self.started:.0f} s)", flush=True)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def run(cmd: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    """``cmd``'s output (stdout and stderr); CheckFailed unless it exits 0."""
    done = subprocess.run(
        cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise CheckFailed(f"{' '.join(cmd)}: exit code {done.returncode}\n{output[-6000:]}")
    return output


def clean_env() -> dict[str, str]:
    """This environment without what would point a child at the source tree,
    or at a platform, or at this script's virtualenv."""
    dropped = {"PYTHONPATH", "VIRTUAL_ENV", "API_BASE_URL", "EXECUTION_ID", "PYTHONHOME"}
    return {
        k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("HEARTBEAT_")
    }


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


def build(out: Path) -> tuple[Path, Path]:
    """The sdist, and the wheel built from it."""
    run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=ROOT)
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    expect(len(sdists) == 1 and len(wheels) == 1, f"build made {sdists + wheels}")
    return sdists[0], wheels[0]


def make_venv(path: Path, wheel: Path) -> Path:
    """A virtualenv with only ``wheel`` and its dependencies; its bin/."""
    run([sys.executable, "-m", "venv", str(path)], cwd=path.parent)
    bin_dir = path / "bin"
    run([str(bin_dir / "pip"), "install", "--quiet", str(wheel)], cwd=path.parent)
    return bin_dir


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.load(reply)


@contextlib.contextmanager
def receiver(bin_dir: Path, work: Path) -> Iterator[str]:
    """``scrapy-heartbeat serve`` from the wheel, on a free port; its URL."""
    port_file, db = work / "port", work / "hb.sqlite3"
    process = subprocess.Popen(
        [str(bin_dir / "scrapy-heartbeat"), "serve", "--port", "0",
         "--port-file", str(port_file), "--db", str(db)],
        cwd=work, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                _, err = process.communicate()
                raise CheckFailed(f"serve did not start (exit {process.returncode}):\n{err}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{int(port_file.read_text())}"
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


@contextlib.contextmanager
def site(directory: Path) -> Iterator[str]:
    """A three-page site on 127.0.0.1 (a thread of this process); its URL."""
    directory.mkdir()
    for name, body in SITE.items():
        (directory / name).write_text(f"<html><body>{body}</body></html>")
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def check_installed_alone(bin_dir: Path, work: Path) -> None:
    """The package imports from the virtualenv, not from a source tree."""
    where = run([str(bin_dir / "python"), "-c", "import scrapy_heartbeat as m; print(m.__file__)"],
                cwd=work).strip()  # fmt: skip
    expect(
        Path(where).resolve().is_relative_to(bin_dir.parent.resolve()),
        f"scrapy_heartbeat imported from {where}, outside the virtualenv",
    )
    for args in (["--help"], ["serve", "--help"], ["send", "--help"], ["demo", "--help"]):
        out = run([str(bin_dir / "scrapy-heartbeat"), *args], cwd=work)
        expect("usage: scrapy-heartbeat" in out, f"scrapy-heartbeat {' '.join(args)}: {out}")


def check_demo(bin_dir: Path, work: Path) -> None:
    out = run([str(bin_dir / "scrapy-heartbeat"), "demo"], cwd=work, timeout=180)
    expect(
        "completed, 44/44 URLs (41 ok, 3 failed), 36 items, 0 errors" in out,
        f"the demo's summary is not the bookshop's whole crawl:\n{out}",
    )


def check_serve_and_send(bin_dir: Path, api: str, work: Path) -> None:
    execution_id = str(uuid.uuid4())
    run([str(bin_dir / "scrapy-heartbeat"), "send", "--api-base-url", api,
         "--execution-id", execution_id, "--status", "running",
         "--crawled-urls", "3", "--total-urls", "5"], cwd=work)  # fmt: skip
    stored = get_json(f"{api}{EXECUTIONS}/{execution_id}")
    expect(stored["status"] == "running", f"send's beat stored as {stored}")
    expect(
        stored["progress"] == {"total_urls": 5, "crawled_urls": 3},
        f"send's beat stored as {stored}",
    )
    with urllib.request.urlopen(api + "/", timeout=10) as reply:
        page = reply.read().decode()
    expect(reply.status == 200 and "<html" in page.lower(), "the dashboard page is missing")


def check_crawl(bin_dir: Path, api: str, site_url: str, work: Path, component: str) -> None:
    """``scrapy runspider`` with the extension (``EXTENSIONS``) or the add-on
    (``ADDONS``) reports the whole crawl, completed."""
    execution_id = str(uuid.uuid4())
    setting = (
        {"ADDONS": {"scrapy_heartbeat.HeartbeatAddon": 0}}
        if component == "add-on"
        else {"EXTENSIONS": {"scrapy_heartbeat.HeartbeatExtension": 500}}
    )
    ((name, value),) = setting.items()
    run([str(bin_dir / "scrapy"), "runspider", str(work / "tiny.py"), "-a", f"site={site_url}",
         "-s", f"{name}={json.dumps(value)}", "-s", f"HEARTBEAT_API_BASE_URL={api}",
         "-s", f"HEARTBEAT_EXECUTION_ID={execution_id}", "-s", "LOG_LEVEL=INFO"],
        cwd=work, timeout=120)  # fmt: skip
    stored = get_json(f"{api}{EXECUTIONS}/{execution_id}")
    progress = stored["progress"]
    expect(
        stored["status"] == "completed"
        and progress["crawled_urls"] == progress["total_urls"] == 3
        and progress["data_items"] == 3,
        f"the crawl with the {component} was stored as {stored}",
    )


def check_wheel(bin_dir: Path, tmp: Path, steps: Steps) -> None:
    work = tmp / "run"  # outside the source tree: nothing there to import
    work.mkdir()
    (work / "tiny.py").write_text(SPIDER)
    check_installed_alone(bin_dir, work)
    steps.ok("wheel: --help of each command")
    check_demo(bin_dir, work)
    steps.ok("wheel: demo")
    with receiver(bin_dir, work) as api, site(tmp / "site") as site_url:
        check_serve_and_send(bin_dir, api, work)
        steps.ok("wheel: serve + send, read API and dashboard")
        for component in ("extension", "add-on"):
            check_crawl(bin_dir, api, site_url, work, component)
            steps.ok(f"wheel: scrapy runspider with the {component}")


def unpack_tests(sdist: Path, into: Path) -> Path:
    """The sdist unpacked but for the package's sources (the module
    docstring says why); the tree's directory."""
    with tarfile.open(sdist) as archive:
        kept = [m for m in archive.getmembers() if Path(m.name).parts[1:2] != (PACKAGE,)]
        expect(len(kept) < len(archive.getmembers()), f"{sdist.name} has no {PACKAGE}/")
        # "data": no links out of the directory, no odd modes (3.10.12+)
        archive.extractall(into, members=kept, filter="data")
    (tree,) = into.iterdir()
    return tree


def imported_from(output: str) -> Path:
    """The package's directory that pytest's header names (tests/conftest.py)."""
    found = re.search(rf"^{PACKAGE} \S+ imported from (.+)$", output, re.MULTILINE)
    if found is None:
        where = f"pytest's header does not say where {PACKAGE} came from"
        raise CheckFailed(f"{where}:\n{output[:3000]}")
    return Path(found[1])


def run_tests(pytest: list[str], tree: Path, bin_dir: Path, timeout: float = 300) -> str:
    """pytest's closing line, run in ``tree``, once its header has shown
    that the package came from the virtualenv of ``bin_dir``."""
    output = run(pytest, cwd=tree, timeout=timeout)
    where = imported_from(output)
    expect(
        where.is_relative_to(bin_dir.parent.resolve()),
        f"the sdist's tests imported {PACKAGE} from {where}, not from the virtualenv",
    )
    return output.strip().splitlines()[-1].strip("= ")


def outcomes(summary: str) -> dict[str, int]:
    """pytest's closing line as counts: ``{"passed": 675}``."""
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary.partition(" in ")[0])}


def check_sdist(
    sdist: Path, wheel: Path, bin_dir: Path, tmp: Path, tests: list[str], *, steps: Steps
) -> None:
    """The unpacked sdist's tests, with the ``[test]`` extra installed: the
    ones collected all pass, against the virtualenv's copy of the package."""
    tree = unpack_tests(sdist, tmp / "sdist")
    run([str(bin_dir / "pip"), "install", "--quiet", f"{wheel}[test]"], cwd=tmp)
    steps.ok("sdist: unpacked without its package, [test] extra installed")
    pytest = [str(bin_dir / "python"), "-m", "pytest", "-p", "no:cacheprovider", *tests]
    collected = run_tests([*pytest, "--collect-only"], tree, bin_dir)
    count = re.fullmatch(r"(\d+) tests? collected in .*", collected)
    if count is None:
        raise CheckFailed(f"collection: {collected}")
    steps.ok(f"sdist: {collected}, {PACKAGE} from the wheel")
    workers = ["-n", "2", "--dist", "loadfile"]  # as make test runs it
    summary = run_tests([*pytest, *workers], tree, bin_dir, timeout=SUITE_TIMEOUT)
    expect(
        outcomes(summary) == {"passed": int(count[1])},
        f"the sdist's tests did not all pass ({collected}): {summary}",
    )
    steps.ok(f"sdist: {summary}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("tests", nargs="*", metavar="TEST",
                        help="the sdist's tests to run (default: all)")  # fmt: skip
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="scrapy-heartbeat-dist-"))
    steps = Steps()
    try:
        sdist, wheel = build(tmp / "dist")
        steps.ok(f"built {sdist.name} and {wheel.name}")
        bin_dir = make_venv(tmp / "venv", wheel)
        steps.ok("wheel: installed alone in a fresh virtualenv")
        check_wheel(bin_dir, tmp, steps)
        check_sdist(sdist, wheel, bin_dir, tmp, args.tests, steps=steps)
    except (CheckFailed, subprocess.TimeoutExpired) as failure:
        print(f"FAILED  {failure}\n(files in {tmp})", file=sys.stderr)
        return 1
    if args.keep:
        print(f"files in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
