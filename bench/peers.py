"""Configuration the peers need to run beside us in the benchmarks."""

from __future__ import annotations

from spidermon import Monitor, MonitorSuite, monitors


@monitors.name("Item count")
class ItemCountMonitor(Monitor):
    @monitors.name("At least one item scraped")
    def test_items(self) -> None:
        items = getattr(self.data.stats, "item_scraped_count", 0) or 0
        self.assertGreaterEqual(items, 0)  # noqa: PT009 - spidermon monitors are unittest cases


class PeriodicSuite(MonitorSuite):
    """Spidermon's periodic monitoring, every 10 s in the benchmark."""

    monitors = [ItemCountMonitor]
