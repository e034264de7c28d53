"""A site whose truth is known, for crawls spread over several workers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tests.servers import SiteServer


@dataclass(frozen=True)
class Truth:
    total_urls: int
    successful_urls: int
    failed_urls: int
    data_items: int
    error_count: int

    def as_progress(self) -> dict[str, int]:
        return {
            "total_urls": self.total_urls,
            "crawled_urls": self.successful_urls + self.failed_urls,
            "successful_urls": self.successful_urls,
            "failed_urls": self.failed_urls,
            "data_items": self.data_items,
            "error_count": self.error_count,
        }


def fleet_site(pages: int = 120, delay: float = 0.02) -> tuple[SiteServer, Truth]:
    """``/n/0`` .. ``/n/<pages - 1>``, a tree (``/n/i`` links to ``3i+1`` ..
    ``3i+3``, back to ``/n/0`` and to its parent: duplicates), and leaves of
    four kinds: ``/missing/i`` (404: failed), ``/flaky/i`` (503, then 200 on
    the retry), ``/moved/i`` (302 to ``/target/i``) and ``/boom/i`` (a
    callback that raises). Each page takes ``delay`` seconds."""
    site = SiteServer()
    missing = [i for i in range(pages) if i % 9 == 4]
    flaky = [i for i in range(pages) if i % 7 == 3]
    moved = [i for i in range(pages) if i % 8 == 2]
    boom = [i for i in range(pages) if i % 50 == 25]

    def node(i: int) -> Any:
        links = [f"/n/{c}" for c in range(3 * i + 1, 3 * i + 4) if c < pages]
        links += ["/n/0", f"/n/{max(0, (i - 1) // 3)}"]
        links += [f"/missing/{i}"] * (i in missing) + [f"/flaky/{i}"] * (i in flaky)
        links += [f"/moved/{i}"] * (i in moved) + [f"/boom/{i}"] * (i in boom)
        body = "".join(f'<a href="{link}">x</a>' for link in links)

        def page(handler: Any, hit: int) -> None:
            time.sleep(delay)
            handler.respond(200, f"<html><body>{body}</body></html>")

        return page

    def leaf(code: int, first: int | None = None, headers: dict[str, str] | None = None) -> Any:
        def page(handler: Any, hit: int) -> None:
            time.sleep(delay)
            status = first if first is not None and hit == 1 else code
            handler.respond(status, "<html><body>leaf</body></html>", headers)

        return page

    for i in range(pages):
        site.pages[f"/n/{i}"] = node(i)
    for i in missing:
        site.pages[f"/missing/{i}"] = leaf(404)
    for i in flaky:
        site.pages[f"/flaky/{i}"] = leaf(200, first=503)
    for i in moved:
        site.pages[f"/moved/{i}"] = leaf(302, headers={"Location": f"/target/{i}"})
        site.pages[f"/target/{i}"] = leaf(200)
    for i in boom:
        site.pages[f"/boom/{i}"] = leaf(200)
    total = pages + len(missing) + len(flaky) + len(moved) + len(boom)
    truth = Truth(
        total_urls=total,
        successful_urls=total - len(missing),
        failed_urls=len(missing),
        data_items=pages + len(flaky) + len(moved),
        error_count=len(boom),
    )
    return site, truth
