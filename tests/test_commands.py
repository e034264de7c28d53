"""Only crawls report: Scrapy's other commands, run in a project with the
extension enabled (an operator debugging inside a crawler's container, with
its EXECUTION_ID), send nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scrapy_heartbeat._scrapy import scrapy_command
from tests.conftest import EXECUTION_ID
from tests.servers import HeartbeatServer, SiteServer

SCRAPY = str(Path(sys.executable).parent / "scrapy")

SPIDER = '''
import scrapy

class PagesSpider(scrapy.Spider):
    name = "pages"

    def __init__(self, site="", **kwargs):
        super().__init__(**kwargs)
        self.site = site

    async def start(self):
        for n in range(3):
            yield scrapy.Request(f"{self.site}/page/{n}")

    def parse(self, response):
        """@url SITE/page/9
        @returns items 1 1
        """
        yield {"url": response.url}
'''


COMMAND = """
from scrapy.commands import ScrapyCommand


class Command(ScrapyCommand):
    requires_project = True

    def short_desc(self):
        return "a project's own crawl command"

    def run(self, args, opts):
        self.crawler_process.crawl("pages", site=args[0])
        self.crawler_process.start()
"""


@pytest.fixture
def project(tmp_path: Path, pages_site: SiteServer) -> Path:
    (tmp_path / "scrapy.cfg").write_text("[settings]\ndefault = proj.settings\n")
    package = tmp_path / "proj"
    (package / "spiders").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "spiders" / "__init__.py").write_text("")
    (package / "spiders" / "pages.py").write_text(SPIDER.replace("SITE", pages_site.url))
    (package / "commands").mkdir()
    (package / "commands" / "__init__.py").write_text("")
    (package / "commands" / "crawlall.py").write_text(COMMAND)
    (package / "settings.py").write_text(
        'COMMANDS_MODULE = "proj.commands"\n'
        'SPIDER_MODULES = ["proj.spiders"]\n'
        'EXTENSIONS = {"scrapy_heartbeat.HeartbeatExtension": 500}\n'
        "HEARTBEAT_CLOSE_TIMEOUT = 5\n"
        "TELNETCONSOLE_ENABLED = False\n"
    )
    return tmp_path


def _run(project: Path, server: HeartbeatServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "API_BASE_URL": server.url, "EXECUTION_ID": EXECUTION_ID}
    env.pop("SCRAPY_SETTINGS_MODULE", None)
    return subprocess.run(
        list(args), cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    "command",
    [
        ["fetch", "--nolog", "{site}/page/1"],
        ["parse", "--spider", "pages", "{site}/page/1"],
        ["check", "pages"],
        ["shell", "{site}/page/1", "-c", "response.status"],
        ["bench", "-s", "CLOSESPIDER_TIMEOUT=1", "-s", "LOG_LEVEL=INFO"],
    ],
    ids=lambda command: command[0],
)
def test_other_commands_send_nothing(
    command: list[str], project: Path, pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    args = [arg.replace("{site}", pages_site.url) for arg in command]
    result = _run(project, heartbeat_server, SCRAPY, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert heartbeat_server.bodies() == []


@pytest.mark.parametrize("command", ["fetch", "parse", "crawl"])
def test_a_command_started_from_code_is_known(
    project: Path, pages_site: SiteServer, heartbeat_server: HeartbeatServer, command: str
) -> None:
    """``scrapy.cmdline.execute([...])`` in a script: the interpreter's
    command line says nothing of the command; the call stack does."""
    args = {
        "fetch": ["fetch", "--nolog", f"{pages_site.url}/page/1"],
        "parse": ["parse", "--spider", "pages", f"{pages_site.url}/page/1"],
        "crawl": ["crawl", "pages", "-a", f"site={pages_site.url}"],
    }[command]
    script = f"from scrapy.cmdline import execute; execute({['scrapy', *args]!r})"
    result = _run(project, heartbeat_server, sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr[-3000:]
    if command == "crawl":
        assert heartbeat_server.bodies()[-1]["status"] == "completed"
    else:
        assert heartbeat_server.bodies() == []


@pytest.mark.parametrize("how", ["crawl", "own command"])
def test_a_crawl_reports(
    project: Path, pages_site: SiteServer, heartbeat_server: HeartbeatServer, how: str
) -> None:
    command = ["crawl", "pages", "-a", f"site={pages_site.url}"]
    if how == "own command":  # a project's COMMANDS_MODULE: taken for a crawl
        command = ["crawlall", pages_site.url]
    result = _run(project, heartbeat_server, SCRAPY, *command)
    assert result.returncode == 0, result.stderr[-3000:]
    final = heartbeat_server.bodies()[-1]
    assert (final["status"], final["progress"]["crawled_urls"]) == ("completed", 3)


def test_a_setting_makes_other_commands_report(
    project: Path, pages_site: SiteServer, heartbeat_server: HeartbeatServer
) -> None:
    result = _run(
        project,
        heartbeat_server,
        sys.executable,
        "-m",
        "scrapy.cmdline",
        "fetch",
        "-s",
        "HEARTBEAT_ALL_COMMANDS=True",
        f"{pages_site.url}/page/1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert heartbeat_server.bodies()[-1]["status"] == "completed"


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["python", "/venv/bin/scrapy", "fetch", "http://a"], "fetch"),
        (["python", "-W", "error", "-m", "scrapy.cmdline", "crawl", "s"], "crawl"),
        (["python", "-m", "scrapyd.runner", "crawl", "q"], "crawl"),
        (["python", "-u", "/venv/bin/scrapy", "-h"], None),
        (["python", "-m", "pytest", "fetch"], None),
        (["python", "run.py", "fetch"], None),
        (["python", "-c", "import scrapy"], None),
        ([], None),
    ],
)
def test_the_command_is_read_from_the_interpreter_command_line(
    argv: list[str], command: str | None
) -> None:
    assert scrapy_command(argv) == command
