"""A Scrapy project with scrapy-heartbeat enabled: these two lines are all it takes."""

BOT_NAME = "bookshop"
SPIDER_MODULES = ["bookshop.spiders"]

EXTENSIONS = {"scrapy_heartbeat.HeartbeatExtension": 500}
# HEARTBEAT_API_BASE_URL = "http://data-platform-api:8000"
# Unset here: the API_BASE_URL environment variable supplies it, as in a container.

ROBOTSTXT_OBEY = True
CONCURRENT_REQUESTS = 4
DOWNLOAD_DELAY = 0.05
TELNETCONSOLE_ENABLED = False
