"""The documentation is kept true by running it: every setting documented
with the default ``DEFAULTS`` has, and every code example in ``README.rst``
and ``docs/`` run against a real receiver (settings blocks as real crawls,
``>>>`` blocks as doctests, shell lines as commands, JSON as beats the
receiver's own validation accepts)."""

from __future__ import annotations

import ast
import doctest
import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from scrapy_heartbeat.server import validate_body
from scrapy_heartbeat.settings import DEFAULTS
from tests.crawl import run_crawl
from tests.server.serving import EXECUTIONS, Serve
from tests.servers import SiteServer

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.rst", *sorted((ROOT / "docs").glob("*.rst"))]
#: The addresses the examples use, replaced by the test's own servers.
PLATFORM = "http://data-platform-api:8000"
REDIS = "redis://redis:6379/0"
DIRECTIVE = re.compile(r"^(?P<indent> *)\.\. code-block:: (?P<language>\w+)\s*$")


def code_blocks(language: str) -> list[tuple[str, str]]:
    """``(where, code)`` of every ``.. code-block:: <language>``."""
    found = []
    for document in DOCUMENTS:
        lines = document.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            match = DIRECTIVE.match(line)
            if not match or match["language"] != language:
                continue
            indent = len(match["indent"])
            body = []
            for following in lines[number + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                body.append(following)
            code = textwrap.dedent("\n".join(body)).strip("\n")
            assert code, f"{document.name}:{number + 1}: an empty code block"
            found.append((f"{document.name}:{number + 1}", code + "\n"))
    return found


def settings_blocks() -> list[tuple[str, str]]:
    return [(where, code) for where, code in code_blocks("python") if ">>>" not in code]


def doctest_blocks() -> list[tuple[str, str]]:
    return [(where, code) for where, code in code_blocks("python") if ">>>" in code]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[str]:
    """A receiver's URL, for the examples' platform."""
    running = Serve.start(tmp_path)
    yield running.url
    running.stop()


def executions(url: str) -> list[dict[str, Any]]:
    reply = requests.get(url + EXECUTIONS, timeout=10)
    reply.raise_for_status()
    return list(reply.json()["executions"])


# -- settings ---------------------------------------------------------------


def documented_settings() -> dict[str, dict[str, str]]:
    """Each ``HEARTBEAT_*`` section of ``docs/settings.rst``: its fields."""
    text = (ROOT / "docs" / "settings.rst").read_text(encoding="utf-8")
    sections = re.split(r"^(HEARTBEAT_[A-Z_]+)\n-+\n", text, flags=re.MULTILINE)
    found: dict[str, dict[str, str]] = {}
    for name, body in zip(sections[1::2], sections[2::2], strict=True):
        assert name not in found, f"{name} is documented twice"
        found[name] = dict(re.findall(r"^:(\w+): (.+)$", body, flags=re.MULTILINE))
    return found


def test_every_setting_is_documented_with_its_default() -> None:
    documented = documented_settings()
    assert sorted(documented) == sorted(DEFAULTS), (
        f"missing from docs/settings.rst: {sorted(set(DEFAULTS) - set(documented))}; "
        f"not in DEFAULTS: {sorted(set(documented) - set(DEFAULTS))}"
    )
    for name, fields in documented.items():
        assert fields.get("Type"), f"{name} has no :Type:"
        literal = re.match(r"``(.+?)``", fields.get("Default", ""))
        assert literal, f"{name}'s :Default: does not start with a ``literal``"
        value = ast.literal_eval(literal[1])
        assert value == DEFAULTS[name] and type(value) is type(DEFAULTS[name]), (
            f"{name}: documented default {value!r}, DEFAULTS has {DEFAULTS[name]!r}"
        )


def test_the_readme_settings_table_names_every_setting_and_its_plain_defaults() -> None:
    text = (ROOT / "README.rst").read_text(encoding="utf-8")
    table = text.split("\nSettings\n========\n", 1)[1].split("\nWhat is sent\n", 1)[0]
    rows = re.findall(r"^   \* - (.+)\n     - (.+)\n     - ", table, flags=re.MULTILINE)
    named = [n for first, _ in rows for n in re.findall(r"``(HEARTBEAT_[A-Z_]+)``", first)]
    assert sorted(named) == sorted(DEFAULTS)
    checked = 0
    for first, default in rows:
        names = re.findall(r"``(HEARTBEAT_[A-Z_]+)``", first)
        defaults = re.fullmatch(r"``([^`]+)``(?:, ``([^`]+)``)*", default.strip())
        literals = re.findall(r"``([^`]+)``", default)
        if defaults and len(literals) == len(names):
            for name, literal in zip(names, literals, strict=True):
                assert ast.literal_eval(literal) == DEFAULTS[name], name
                checked += 1
    assert checked >= 10  # the rows whose defaults are plain values


# -- examples ---------------------------------------------------------------


@pytest.mark.parametrize(("where", "code"), settings_blocks(), ids=lambda v: v[:40])
def test_a_settings_example_reports_a_real_crawl(
    where: str,
    code: str,
    receiver: str,
    pages_site: SiteServer,
    request: pytest.FixtureRequest,
) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(code, where, "exec"), namespace)
    settings = {k: v for k, v in namespace.items() if k.isupper()}
    assert settings.get("HEARTBEAT_API_BASE_URL") == PLATFORM, where
    settings["HEARTBEAT_API_BASE_URL"] = receiver
    if settings.get("REDIS_URL") == REDIS:
        settings["REDIS_URL"] = request.getfixturevalue("redis_server").url
    result = run_crawl(
        "tests.spiders.PagesSpider", settings, args={"site": pages_site.url, "pages": "5"}
    )
    assert result.returncode == 0, result.log[-3000:]
    assert result.reason == "finished"
    [execution] = executions(receiver)
    assert execution["status"] == "completed", execution
    progress = execution["progress"]
    assert progress["crawled_urls"] == progress["total_urls"] == 5
    assert progress["data_items"] == 5
    if "REDIS_URL" in settings:
        assert "execution-wide counters in Redis" in result.log


@pytest.mark.parametrize(("where", "code"), doctest_blocks(), ids=lambda v: v[:40])
def test_a_doctest_example_holds_against_the_receiver(where: str, code: str, receiver: str) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(code.replace(PLATFORM, receiver), {}, where, where, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    output: list[str] = []
    runner.run(test, out=output.append)
    assert runner.failures == 0, "".join(output)
    assert runner.tries >= 3
    assert executions(receiver)  # the beat really reached it


@pytest.mark.parametrize(("where", "code"), code_blocks("shell"), ids=lambda v: v[:40])
def test_a_shell_example_runs(where: str, code: str, receiver: str) -> None:
    for line in code.splitlines():
        if line.startswith("pip install "):
            continue  # installs from PyPI: what the suite runs in is installed so
        assert line.startswith("scrapy-heartbeat send "), f"{where}: no test runs {line!r}"
        execution_id = str(uuid.uuid4())
        env = {**os.environ, "API_BASE_URL": receiver, "EXECUTION_ID": execution_id}
        command = [sys.executable, "-m", "scrapy_heartbeat", *line.split()[1:]]
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        [execution] = [e for e in executions(receiver) if e["execution_id"] == execution_id]
        status = line.split("--status ", 1)[1].split()[0]
        assert execution["status"] == status


@pytest.mark.parametrize(("where", "code"), code_blocks("json"), ids=lambda v: v[:40])
def test_a_payload_example_is_a_valid_beat(where: str, code: str) -> None:
    body = json.loads(code)
    assert validate_body(body) is None, where
    progress = body["progress"]
    assert progress["percentage"] == round(
        progress["crawled_urls"] / progress["total_urls"] * 100, 2
    )
    assert progress["crawled_urls"] == progress["successful_urls"] + progress["failed_urls"]


def test_there_are_examples_of_each_kind() -> None:
    # A parser that found nothing would pass every test above.
    assert len(settings_blocks()) >= 4
    assert len(doctest_blocks()) >= 2
    assert len(code_blocks("shell")) >= 3
    assert len(code_blocks("json")) >= 2


# -- wording ----------------------------------------------------------------

#: The tracker's numbers (a hash or the word "issue" before a number):
#: history, which docs never cite.
ISSUE_NUMBER = re.compile(r"#\d|\bissues? \d", re.IGNORECASE)
#: A calendar date (year, month and day, dashed), as lab notes carry.
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def test_the_docs_cite_no_issue_numbers() -> None:
    for document in [*DOCUMENTS, ROOT / "CHANGELOG.rst"]:
        lines = document.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            assert not ISSUE_NUMBER.search(line), f"{document.name}:{number}: {line.strip()}"


def test_the_readme_performance_table_reads_as_a_reference() -> None:
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    section = readme.split("\nPerformance\n===========\n", 1)[1].split("\nDevelopment\n", 1)[0]
    assert ".. list-table::" in section
    assert "A/A" not in section, "the README's table says what was measured, not the method"
    assert not DATE.search(section)
