"""Sphinx configuration: ``make docs`` builds these pages with warnings as errors."""

from __future__ import annotations

import scrapy_heartbeat

project = "scrapy-heartbeat"
author = "the scrapy-heartbeat developers"
copyright = "2026, the scrapy-heartbeat developers"
release = scrapy_heartbeat.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"scrapy-heartbeat {release}"
