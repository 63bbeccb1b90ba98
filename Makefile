# The two commands of the README:  `make run`  (the backend on :9090)  and  `make test`.
# Both set up everything they need on a fresh machine (python3 with venv + pip reaching PyPI).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 9090
PYTEST_ARGS ?=

.PHONY: install install-dev label-studio browser-deps postgres-deps run lint test test-browser test-fast test-quick eval bench clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# this repository itself, editable, for the `camcut` command in $(VENV)/bin (dependencies come from requirements.txt)
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt requirements-cvat.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	# cvat-sdk / cvat-cli / nuclio-sdk: the CVAT routes (cvat/) and their tests
	$(PY) -m pip install -q -r requirements-cvat.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# A real Label Studio 1.23.2 in its own virtualenv (.venv-ls) for the end-to-end tests.
label-studio:
	bash scripts/install_label_studio.sh

# Headless Chromium + chromedriver (Debian packages) and Selenium (pinned) for the real-browser
# test (tests/e2e/test_browser_ux.py) and scripts/screenshot_label_studio.py. apt-get runs
# only when either binary is missing (it needs root, as on a fresh CI machine).
browser-deps: install-dev
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		apt-get update && apt-get install -y chromium chromium-driver; fi
	$(PY) -m pip install -q -r requirements-screenshot.txt

# PostgreSQL's server binaries (initdb, pg_ctl) for the store's tests on PostgreSQL
# (tests/pgserver.py starts a server on loopback; as root it runs it as the postgres user).
# Debian's package puts them in /usr/lib/postgresql/<version>/bin, where the tests look too.
postgres-deps:
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		apt-get update && apt-get install -y postgresql; fi

run: install
	PORT=$(PORT) $(VENV)/bin/camcut serve

test: install-dev label-studio browser-deps postgres-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# The real-browser tests alone: Data Manager sorted by score, the worst task's masks, the smart tools; README screenshots.
test-browser: label-studio browser-deps
	$(PY) -m pytest tests/e2e/test_browser_ux.py tests/e2e/test_browser_smart.py $(PYTEST_ARGS)

# Everything but the end-to-end Label Studio tests.
test-fast: install-dev postgres-deps
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

# The edit-run loop: neither the end-to-end tests nor those marked slow (> ~15 s each).
test-quick: install-dev postgres-deps
	$(PY) -m pytest -m "not e2e and not slow" $(PYTEST_ARGS)

# The packages mypy checks; camcut/ joins as soon as it exists.
MYPY_PATHS = $(wildcard model backend evaluator bench camcut cvat)

# Lint, format and types, with the versions pinned in requirements-dev.txt (settings in pyproject.toml).
lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(MYPY_PATHS)

# The full sweep of the report's techniques on ../shared/voc2012 (see README "Results").
eval: install
	$(PY) -m evaluator --voc ../shared/voc2012/VOC2012 --out runs/reference

# Speed, memory and quality of reference vs default side by side (see README "Speed").
bench: install
	$(PY) -m bench --voc ../shared/voc2012/VOC2012 --configs reference,default,featcut --soak-configs featcut --out runs/bench

clean:
	rm -rf $(VENV) .venv-ls .cache runs out .pytest_cache .mypy_cache .ruff_cache
