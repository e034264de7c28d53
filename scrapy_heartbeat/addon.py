"""``ADDONS = {"scrapy_heartbeat.HeartbeatAddon": 0}``: the second way in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy_heartbeat.extension import HeartbeatExtension
from scrapy_heartbeat.middleware import COMPANIONS

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

EXTENSION_ORDER = 500


class HeartbeatAddon:
    """Enables the extension and its middlewares, unless already configured."""

    def update_settings(self, settings: BaseSettings) -> None:
        settings.setdefault_in_component_priority_dict(
            "EXTENSIONS", HeartbeatExtension, EXTENSION_ORDER
        )
        for setting, component, order in COMPANIONS:
            settings.setdefault_in_component_priority_dict(setting, component, order)
