"""The reference receiver, the platform side of the heartbeat spec
(``scrapy-heartbeat serve``). The crawl side never imports it."""

from scrapy_heartbeat.server.backends import open_store
from scrapy_heartbeat.server.liveness import LivenessRules
from scrapy_heartbeat.server.resource import HeartbeatReceiver
from scrapy_heartbeat.server.store import HeartbeatStore, StoreUnavailable
from scrapy_heartbeat.server.transport import listen
from scrapy_heartbeat.server.validation import validate_body

__all__ = [
    "HeartbeatReceiver",
    "HeartbeatStore",
    "LivenessRules",
    "StoreUnavailable",
    "listen",
    "open_store",
    "validate_body",
]
