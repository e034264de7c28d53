"""The operator examples under ``examples/`` (a Grafana dashboard, Prometheus
alert rules) name only metrics and labels that ``serve``'s ``/metrics``
really exports: scraped here from a real receiver."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.server.beats import beat
from tests.server.serving import Serve

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
METRIC = re.compile(r"\bheartbeat_[a-z_]+")
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def exported(receiver: Serve) -> tuple[set[str], set[str]]:
    """Sample names, and label names, of one scrape."""
    text = receiver.get("/metrics").text
    names, labels = set(), set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.add(sample.name)
            labels.update(sample.labels)
    return names, labels


def test_examples_use_only_exported_metrics(tmp_path: Path) -> None:
    receiver = Serve.start(tmp_path)
    try:
        body = beat(execution_id=str(uuid.uuid4()))
        body["progress"]["percentage"] = 45.0
        assert receiver.post(body).status_code == 200
        assert receiver.post({"bad": 1}).status_code == 400
        names, labels = exported(receiver)
    finally:
        receiver.stop()
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = (EXAMPLES / "prometheus-alerts.yml").read_text()
    rule_exprs = re.findall(r"expr: (?:>-\n)?((?:.+\n)+?)\s+(?:for|labels):", rules)
    assert len(exprs) >= 8 and len(rule_exprs) == 4
    used = set()
    for expr in exprs + rule_exprs:
        used.update(METRIC.findall(expr))
        for label in re.findall(r"(?:by \(|\{)([a-z_, ]+)[)=]", expr):
            for name in label.split(","):
                assert name.strip() in labels | {"le"}, (name, expr)
    assert used, "no metric found in the examples"
    for name in used:
        assert name in names or any(name + s in names for s in SUFFIXES), name
    assert {"heartbeat_execution_liveness", "heartbeat_receiver_reply_seconds_bucket"} <= used
