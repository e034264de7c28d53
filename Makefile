# Quick start: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: system-deps demo docs test test-dist bench-full valgrind test-compat test-matrix lint unit bench bench-instructions bench-receiver bench-fleet bench-contention clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m scrapy_heartbeat demo $(DEMO_ARGS)

test: system-deps lint unit

# What the suite needs from Debian: Redis and PostgreSQL servers (the tests
# start their own on free ports) and headless Chromium (the dashboard's
# tests). Installed when missing, as root; otherwise one line says how.
SYSTEM_PACKAGES := redis-server postgresql chromium
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing$$missing (apt-get)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "make test needs$$missing: sudo apt-get install$$missing"; exit 2; \
		fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The documentation, warnings as errors; open docs/_build/html/index.html.
docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	$(PY) -m docutils --halt=warning README.rst /dev/null  # as PyPI renders it

unit: $(STAMP) system-deps
	$(PY) -m pytest -n 2 --dist loadfile

# The oldest declared versions, and every crawl without a Twisted reactor.
test-compat: $(STAMP)
	$(VENV)/bin/tox run -e oldest,reactorless

test-matrix: lint unit test-compat

# The sdist and the wheel as a release builds them (tests/dist_check.py): the
# wheel alone in a fresh virtualenv runs --help, serve with send, the demo and
# crawls with the extension and the add-on; then, with the [test] extra, the
# unpacked sdist's whole suite passes against that wheel, on two workers
# as make test runs it. Most of its time is the suite.
test-dist: $(STAMP) system-deps
	$(PY) tests/dist_check.py

# A quick profile of every benchmark (under 15 minutes here): each figure
# beside its A/A control and its target, saying when it does not resolve.
# Results in bench/results/quick/, never over the full ones.
bench: $(STAMP) valgrind
	$(PY) -m pip install --quiet scrapeops-scrapy spidermon
	$(PY) bench/quick.py

# The full profile, whose figures docs/performance.rst cites: each prints
# its figures and saves them in bench/results/. The peers are installed
# here, not with the package; bench-instructions needs Debian's valgrind
# (installed here when missing).
bench-full: $(STAMP)
	@start=$$(date +%s); \
	$(PY) -m pip install --quiet scrapeops-scrapy spidermon && \
	$(PY) bench/event_cost.py && \
	$(PY) bench/crawl_cost.py && \
	$(PY) bench/stall.py --rounds 10 && \
	$(PY) bench/stall.py --pages 1000 --rounds 15 --delay 0.01 --save stall_quiet && \
	$(PY) bench/soak.py && \
	$(PY) bench/shutdown.py && \
	$(MAKE) --no-print-directory bench-instructions && \
	echo "make bench-full: $$(( $$(date +%s) - start )) s"

valgrind:
	command -v valgrind >/dev/null || apt-get install -y -qq valgrind

bench-instructions: $(STAMP) valgrind
	$(PY) -m pip install --quiet scrapeops-scrapy spidermon
	$(PY) bench/instructions.py --repeat 3

bench-receiver: $(STAMP)
	$(PY) bench/receiver_load.py --backend sqlite
	$(PY) bench/receiver_load.py --backend postgresql

# Scrapy bench beside a CPU-bound process on the crawl's CPU, each
# run side by side with an unmonitored one (beat every 1 s, 10 s runs; every
# 30 s, 60 s runs), the probes that take a beat apart
# (bench/contention_probes.py), the 20,000-page crawl, and the CPU of one
# beat's HTTP exchange: about 2 h here.
bench-contention: $(STAMP)
	$(PY) bench/contention.py --pin --side-by-side --rounds 10 --variants heartbeat \
		--save contention_side_1s
	$(PY) bench/contention.py --pin --side-by-side --rounds 8 --seconds 60 --interval 1 \
		--variants heartbeat --save contention_side_1s_60s
	$(PY) bench/contention.py --pin --side-by-side --rounds 20 --seconds 60 --interval 30 \
		--variants heartbeat --save contention_side_30s_60s
	$(PY) bench/contention.py --pin --side-by-side --rounds 10 \
		--variants loop-http,timer-watchdog,no-http --save contention_side_probes
	$(PY) bench/contention.py --pin --crawl 20000 --rounds 8 --variants heartbeat \
		--save contention_crawl_1s
	$(PY) bench/send_cost.py

# Fleets: instructions per page with the plain-data marker (this tree
# against a baseline commit) and the cost of shared counters in Redis.
bench-fleet: $(STAMP)
	command -v valgrind >/dev/null || apt-get install -y -qq valgrind
	command -v redis-server >/dev/null || apt-get install -y -qq redis-server
	$(PY) bench/fleet.py

clean:
	rm -rf $(VENV) .tox build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache

# Scrapy's own test suite (the tests of its sdist, at the version .venv has),
# run twice: plain, then with scrapy-heartbeat in every crawler of every
# process (compat/hook/sitecustomize.py) reporting to a receiver on
# 127.0.0.1. Fails on a test that passes plain and fails with the extension
# (after one re-run in each mode), or on an execution left without a final
# status that its process being SIGKILLed does not explain. Its own
# virtualenv (.venv-scrapy-tests, pinned to .venv's versions), so that
# pytest-twisted never loads in `make test`. Results in .cache/test-scrapy/.
# About 10 minutes on 2 cores (each full run 4-5).
.PHONY: test-scrapy
test-scrapy: $(STAMP)
	@if [ ! -f .venv-scrapy-tests/.installed-stamp ] || \
	    [ compat/scrapy-tests-requirements.txt -nt .venv-scrapy-tests/.installed-stamp ] || \
	    [ $(STAMP) -nt .venv-scrapy-tests/.installed-stamp ]; then \
		set -e; mkdir -p .cache; \
		$(PY) -m venv .venv-scrapy-tests; \
		$(VENV)/bin/pip freeze --exclude-editable | grep -v '^pytest==' \
			> .cache/scrapy-tests-constraints.txt; \
		.venv-scrapy-tests/bin/pip install --quiet -c .cache/scrapy-tests-constraints.txt \
			-e . -r compat/scrapy-tests-requirements.txt; \
		touch .venv-scrapy-tests/.installed-stamp; \
	fi
	.venv-scrapy-tests/bin/python compat/scrapy_suite.py --receiver-cli $(VENV)/bin/scrapy-heartbeat
