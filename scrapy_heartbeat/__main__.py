import sys

from scrapy_heartbeat.cli import main

sys.exit(main())
