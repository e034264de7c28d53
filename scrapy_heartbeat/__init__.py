"""Report a Scrapy crawl's progress to a control platform's heartbeat API."""

from scrapy_heartbeat.addon import HeartbeatAddon
from scrapy_heartbeat.client import HeartbeatClient, HeartbeatResult
from scrapy_heartbeat.extension import HeartbeatExtension
from scrapy_heartbeat.middleware import HeartbeatDownloaderMiddleware, HeartbeatSpiderMiddleware
from scrapy_heartbeat.tokens import execution_token

__version__ = "0.4.0.dev0"

__all__ = [
    "HeartbeatAddon",
    "HeartbeatClient",
    "HeartbeatDownloaderMiddleware",
    "HeartbeatExtension",
    "HeartbeatResult",
    "HeartbeatSpiderMiddleware",
    "__version__",
    "execution_token",
]
