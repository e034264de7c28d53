"""Makes the README's dashboard screenshots: a receiver on a database with
half an hour of history of a simulated three-container execution (one of
them killed ten minutes ago) and a few others, shot by headless Chromium
(Debian's ``chromium``).

    python examples/dashboard_screenshot.py   # writes examples/dashboard-*.png
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scrapy_heartbeat.demo import spawn_receiver  # noqa: E402
from scrapy_heartbeat.server import open_store  # noqa: E402


def beat(eid: str, container: str, status: str, crawled: int, total: int, *, at: float) -> dict:
    return {
        "execution_id": eid,
        "container_id": container,
        "timestamp": int(at),
        "status": status,
        "progress": {
            "total_urls": total,
            "crawled_urls": crawled,
            "successful_urls": crawled - crawled // 40,
            "failed_urls": crawled // 40,
            "data_items": crawled * 3,
            "error_count": crawled // 200,
            "percentage": round(crawled / total * 100, 2) if total else 0,
            "current_stage": f"爬取中 ({crawled}/{total})",
            "current_url": f"https://books.example/catalogue/page-{crawled}.html",
        },
    }


def fill(db: str) -> str:
    store = open_store(db)
    now = time.time()
    main = str(uuid.uuid4())
    for i in range(60):  # 30 min at 30 s, three containers, shared counters
        at = now - 1800 + 30 * i
        crawled = 40 * i + i * i // 6
        for n, container in enumerate(("books-worker-a", "books-worker-b", "books-worker-c")):
            if container == "books-worker-c" and at > now - 600:
                continue  # killed ten minutes ago
            store.add(beat(main, container, "running", crawled, 3000, at=at + n), at + n)
    done, stuck = str(uuid.uuid4()), str(uuid.uuid4())
    for i in range(20):
        at = now - 3000 + 30 * i
        store.add(beat(done, "quotes-1", "running", 30 * i, 600, at=at), at + 0.05)
        at = now - 900 + 45 * i
        store.add(beat(stuck, "news-1", "running", 120, 900, at=at), at + 0.05)
    store.add(beat(done, "quotes-1", "completed", 600, 600, at=now - 2390), now - 2389.95)
    store.close()
    return main


def shoot(chromium: str, url: str, out: Path, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size=1280,{height}",
             "--virtual-time-budget=4000", f"--screenshot={out}", url],
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip


def main() -> int:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Debian's chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp, "hb.sqlite3"))
        main_id = fill(db)
        process, url = spawn_receiver(db, "--stall-after", "600")
        try:
            shoot(chromium, url + "/", ROOT / "examples" / "dashboard-list.png", 420)
            shoot(
                chromium,
                f"{url}/?execution={main_id}",
                ROOT / "examples" / "dashboard-execution.png",
                520,
            )
        finally:
            process.terminate()
            process.wait(10)
            assert process.stdout is not None
            process.stdout.close()
    print("wrote examples/dashboard-list.png and examples/dashboard-execution.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
